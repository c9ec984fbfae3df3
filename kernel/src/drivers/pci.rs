//! PCI: configuration space through the legacy ports (0xCF8/0xCFC, PCI Local
//! Bus Specification 3.0 §3.2.2.3.2) or ECAM from the ACPI MCFG, and bus
//! enumeration, through the `virtio-drivers` crate's PCI root.

use virtio_drivers::transport::pci::bus::{Cam, ConfigurationAccess, DeviceFunction, DeviceFunctionInfo, MmioCam, PciRoot};
use x86_64::instructions::port::Port;

/// CONFIG_ADDRESS and CONFIG_DATA.
const CONFIG_ADDRESS: u16 = 0xCF8;
const CONFIG_DATA: u16 = 0xCFC;
/// CONFIG_ADDRESS bit 31: enable.
const CONFIG_ENABLE: u32 = 1 << 31;

/// Configuration access through the legacy I/O ports (serialized by the
/// caller: PCI setup runs on one CPU at boot).
pub struct PortCam;

impl PortCam {
    fn address(df: DeviceFunction, off: u8) -> u32 {
        CONFIG_ENABLE | (df.bus as u32) << 16 | (df.device as u32) << 11 | (df.function as u32) << 8 | (off as u32 & 0xFC)
    }
}

impl ConfigurationAccess for PortCam {
    fn read_word(&self, df: DeviceFunction, off: u8) -> u32 {
        // SAFETY: the PC's PCI configuration ports; address then data.
        unsafe {
            Port::<u32>::new(CONFIG_ADDRESS).write(Self::address(df, off));
            Port::<u32>::new(CONFIG_DATA).read()
        }
    }

    fn write_word(&mut self, df: DeviceFunction, off: u8, data: u32) {
        // SAFETY: as above; the caller owns the device's configuration.
        unsafe {
            Port::<u32>::new(CONFIG_ADDRESS).write(Self::address(df, off));
            Port::<u32>::new(CONFIG_DATA).write(data);
        }
    }

    unsafe fn unsafe_clone(&self) -> Self {
        PortCam
    }
}

/// One function found on the bus.
#[derive(Clone, Debug)]
pub struct Found {
    pub df: DeviceFunction,
    pub info: DeviceFunctionInfo,
}

/// Enumerate every bus with legacy port access (the machines we boot on
/// decode it; ECAM is used when `ecam` gives a base for segment 0).
pub fn enumerate(ecam: Option<u64>) -> (alloc::vec::Vec<Found>, &'static str) {
    match ecam {
        // SAFETY: the MCFG's ECAM window is identity-mapped MMIO covering buses 0-255.
        Some(base) => (scan(PciRoot::new(unsafe { MmioCam::new(base as *mut u8, Cam::Ecam) })), "ECAM"),
        None => (scan(PciRoot::new(PortCam)), "ports 0xCF8/0xCFC"),
    }
}

fn scan<C: ConfigurationAccess>(root: PciRoot<C>) -> alloc::vec::Vec<Found> {
    let mut out = alloc::vec::Vec::new();
    for bus in 0..=255u8 {
        out.extend(root.enumerate_bus(bus).map(|(df, info)| Found { df, info }));
    }
    out
}
