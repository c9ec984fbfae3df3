//! The legacy (virtio 0.9.5, "transitional") PCI transport: registers in I/O
//! BAR0, queues at page-aligned physical page numbers, device-chosen queue
//! sizes (Virtio 1.0 §4.1.4.8 "Legacy Interfaces: A Note on PCI Device
//! Layout"). Implements virtio-drivers' `Transport` for devices without the
//! modern capabilities (QEMU `disable-modern=on`).

use core::mem::size_of;

use virtio_drivers::transport::pci::bus::{BarInfo, Command, DeviceFunction, PciRoot};
use virtio_drivers::transport::{DeviceStatus, DeviceType, InterruptStatus, Transport};
use virtio_drivers::{Error, PhysAddr};
use x86_64::instructions::port::Port;
use zerocopy::{FromBytes, Immutable, IntoBytes};

use crate::drivers::pci::PortCam;

// Register offsets in the legacy I/O BAR.
const DEVICE_FEATURES: u16 = 0;
const GUEST_FEATURES: u16 = 4;
const QUEUE_PFN: u16 = 8;
const QUEUE_SIZE: u16 = 12;
const QUEUE_SELECT: u16 = 14;
const QUEUE_NOTIFY: u16 = 16;
const DEVICE_STATUS: u16 = 18;
const ISR_STATUS: u16 = 19;
/// Device configuration without MSI-X.
const CONFIG: u16 = 20;
/// Legacy queues are addressed by 4 KiB page number.
const PAGE: u64 = 4096;

pub struct LegacyPciTransport {
    io: u16,
    device_type: DeviceType,
}

impl LegacyPciTransport {
    /// A legacy virtio device at `df` (its I/O BAR0 assigned by the firmware).
    pub fn new(df: DeviceFunction, device_type: DeviceType) -> Result<Self, &'static str> {
        let mut root = PciRoot::new(PortCam);
        let io = match root.bar_info(df, 0).map_err(|_| "cannot read BAR0")? {
            Some(BarInfo::IO { address, .. }) if address != 0 && address <= u16::MAX as u32 => address as u16,
            _ => return Err("BAR0 is not an assigned I/O BAR (not a legacy virtio device)"),
        };
        root.set_command(df, Command::IO_SPACE | Command::BUS_MASTER);
        Ok(LegacyPciTransport { io, device_type })
    }

    fn r8(&self, off: u16) -> u8 {
        // SAFETY: the device's legacy I/O BAR; reads have device-defined effects only (ISR clears on read).
        unsafe { Port::<u8>::new(self.io + off).read() }
    }
    fn r16(&self, off: u16) -> u16 {
        // SAFETY: as in `r8`.
        unsafe { Port::<u16>::new(self.io + off).read() }
    }
    fn r32(&self, off: u16) -> u32 {
        // SAFETY: as in `r8`.
        unsafe { Port::<u32>::new(self.io + off).read() }
    }
    fn w8(&mut self, off: u16, v: u8) {
        // SAFETY: as in `r8`; we own the device.
        unsafe { Port::<u8>::new(self.io + off).write(v) }
    }
    fn w16(&mut self, off: u16, v: u16) {
        // SAFETY: as in `w8`.
        unsafe { Port::<u16>::new(self.io + off).write(v) }
    }
    fn w32(&mut self, off: u16, v: u32) {
        // SAFETY: as in `w8`.
        unsafe { Port::<u32>::new(self.io + off).write(v) }
    }
}

impl Transport for LegacyPciTransport {
    fn device_type(&self) -> DeviceType {
        self.device_type
    }

    fn read_device_features(&mut self) -> u64 {
        self.r32(DEVICE_FEATURES) as u64
    }

    fn write_driver_features(&mut self, driver_features: u64) {
        self.w32(GUEST_FEATURES, driver_features as u32);
    }

    fn max_queue_size(&mut self, queue: u16) -> u32 {
        self.w16(QUEUE_SELECT, queue);
        self.r16(QUEUE_SIZE) as u32
    }

    fn notify(&mut self, queue: u16) {
        self.w16(QUEUE_NOTIFY, queue);
    }

    fn get_status(&self) -> DeviceStatus {
        DeviceStatus::from_bits_truncate(self.r8(DEVICE_STATUS) as u32)
    }

    fn set_status(&mut self, status: DeviceStatus) {
        self.w8(DEVICE_STATUS, status.bits() as u8);
    }

    fn set_guest_page_size(&mut self, _guest_page_size: u32) {}

    fn requires_legacy_layout(&self) -> bool {
        true
    }

    fn queue_set(&mut self, queue: u16, size: u32, descriptors: PhysAddr, _driver_area: PhysAddr, _device_area: PhysAddr) {
        self.w16(QUEUE_SELECT, queue);
        // The device fixes the size; the queue was built for exactly it.
        debug_assert_eq!(self.r16(QUEUE_SIZE) as u32, size);
        debug_assert_eq!(descriptors % PAGE, 0);
        self.w32(QUEUE_PFN, (descriptors / PAGE) as u32);
    }

    fn queue_unset(&mut self, queue: u16) {
        self.w16(QUEUE_SELECT, queue);
        self.w32(QUEUE_PFN, 0);
    }

    fn queue_used(&mut self, queue: u16) -> bool {
        self.w16(QUEUE_SELECT, queue);
        self.r32(QUEUE_PFN) != 0
    }

    fn ack_interrupt(&mut self) -> InterruptStatus {
        InterruptStatus::from_bits_truncate(self.r8(ISR_STATUS) as u32)
    }

    fn read_config_generation(&self) -> u32 {
        0
    }

    fn read_config_space<T: FromBytes + IntoBytes>(&self, offset: usize) -> Result<T, Error> {
        let mut v = T::new_zeroed();
        for (i, b) in v.as_mut_bytes().iter_mut().enumerate() {
            *b = self.r8(CONFIG + (offset + i) as u16);
        }
        Ok(v)
    }

    fn write_config_space<T: IntoBytes + Immutable>(&mut self, offset: usize, value: T) -> Result<(), Error> {
        for (i, b) in value.as_bytes().iter().enumerate() {
            self.w8(CONFIG + (offset + i) as u16, *b);
        }
        let _ = size_of::<T>();
        Ok(())
    }
}
