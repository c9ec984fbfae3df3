//! virtio-net (PCI, modern transport) through the `virtio-drivers` crate,
//! behind smoltcp's `Device` trait. Polled (no interrupts); used by one CPU
//! at a time (the network service's poller), never from NMI context.

use alloc::rc::Rc;
use core::cell::RefCell;
use core::ptr::NonNull;

use smoltcp::phy::{self, DeviceCapabilities};
use smoltcp::time::Instant;
use virtio_drivers::device::net::{RxBuffer, VirtIONet};
use virtio_drivers::transport::pci::PciTransport;
use virtio_drivers::transport::pci::bus::{Command, DeviceFunction, PciRoot};
use virtio_drivers::{BufferDirection, Hal, PhysAddr};

use super::pci::PortCam;
use super::virtio_legacy::LegacyPciTransport;
use virtio_drivers::transport::Transport;

/// Queue size of the receive and transmit virtqueues.
const QUEUE_SIZE: usize = 16;
/// Receive buffer length (an Ethernet frame plus the virtio-net header).
const BUF_LEN: usize = 2048;

/// DMA and MMIO for virtio-drivers: memory is identity-mapped, DMA pages come
/// from the frame allocator below 4 GiB.
pub struct KernelHal;

// SAFETY: dma_alloc returns zeroed, identity-mapped frames owned by the
// caller until dma_dealloc; physical and virtual addresses are equal.
unsafe impl Hal for KernelHal {
    fn dma_alloc(pages: usize, _direction: BufferDirection) -> (PhysAddr, NonNull<u8>) {
        let p = crate::mem::FRAMES.lock().alloc_run(pages as u64, 4096, 1 << 32).expect("DMA memory for virtio");
        // SAFETY: fresh frames, identity-mapped read-write.
        unsafe { core::ptr::write_bytes(p as *mut u8, 0, pages * 4096) };
        (p, NonNull::new(p as *mut u8).expect("frame 0 is reserved"))
    }

    unsafe fn dma_dealloc(paddr: PhysAddr, _vaddr: NonNull<u8>, pages: usize) -> i32 {
        crate::mem::FRAMES.lock().free(paddr, pages as u64);
        0
    }

    unsafe fn mmio_phys_to_virt(paddr: PhysAddr, size: usize) -> NonNull<u8> {
        // Identity map; UEFI firmware often puts 64-bit BARs above the initial map.
        if let Err(e) = crate::mem::paging::map_mmio(paddr, size as u64) {
            log::error!("virtio: MMIO {paddr:#x} (+{size:#x}) cannot be mapped: {e:?}");
        }
        NonNull::new(paddr as *mut u8).expect("MMIO at physical address 0")
    }

    unsafe fn share(buffer: NonNull<[u8]>, _direction: BufferDirection) -> PhysAddr {
        // Identity map: the buffer's address is its physical address.
        buffer.as_ptr() as *mut u8 as u64
    }

    unsafe fn unshare(_paddr: PhysAddr, _buffer: NonNull<[u8]>, _direction: BufferDirection) {}
}

/// Legacy devices fix their queue size; QEMU's virtio-net uses 256.
pub const LEGACY_QUEUE_SIZE: usize = 256;

/// A virtio-net NIC as a smoltcp device, over transport `T` with queues of `Q`.
pub struct VirtioNet<T: Transport = PciTransport, const Q: usize = QUEUE_SIZE> {
    inner: Rc<RefCell<VirtIONet<KernelHal, T, Q>>>,
    pub mac: [u8; 6],
    /// A second view of the same transport, only to read the device
    /// configuration (the driver library keeps its own private). Never
    /// dropped: dropping a PCI transport resets the device.
    config: core::mem::ManuallyDrop<T>,
}

/// `virtio_net_config.status` (after the 6-byte MAC) and its LINK_UP bit
/// (Virtio 1.2 §5.1.4 "Device configuration layout"; negotiated through
/// VIRTIO_NET_F_STATUS, which the driver offers).
const CONFIG_STATUS: usize = 6;
const STATUS_LINK_UP: u16 = 1;

impl<T: Transport, const Q: usize> VirtioNet<T, Q> {
    /// Is the link up? None when the configuration cannot be read.
    pub fn link_up(&self) -> Option<bool> {
        self.config.read_config_space::<u16>(CONFIG_STATUS).ok().map(|s| s & STATUS_LINK_UP != 0)
    }
}

/// The legacy (transitional, I/O BAR) flavour.
pub type LegacyVirtioNet = VirtioNet<LegacyPciTransport, LEGACY_QUEUE_SIZE>;

impl LegacyVirtioNet {
    /// Bring up a legacy virtio-net function (no modern capabilities).
    pub fn new_legacy(df: DeviceFunction) -> Result<LegacyVirtioNet, &'static str> {
        let t = LegacyPciTransport::new(df, virtio_drivers::transport::DeviceType::Network)?;
        let config = core::mem::ManuallyDrop::new(LegacyPciTransport::new(df, virtio_drivers::transport::DeviceType::Network)?);
        let net = VirtIONet::<KernelHal, LegacyPciTransport, LEGACY_QUEUE_SIZE>::new(t, BUF_LEN).map_err(|_| "legacy virtio-net initialization failed")?;
        let mac = net.mac_address();
        Ok(VirtioNet { inner: Rc::new(RefCell::new(net)), mac, config })
    }
}

impl VirtioNet {
    /// Bring up the virtio-net function `df`: enable memory decoding and bus
    /// mastering, negotiate, fill the receive queue.
    pub fn new(df: DeviceFunction) -> Result<VirtioNet, &'static str> {
        let mut root = PciRoot::new(PortCam);
        root.set_command(df, Command::IO_SPACE | Command::MEMORY_SPACE | Command::BUS_MASTER);
        let transport = PciTransport::new::<KernelHal, _>(&mut root, df).map_err(|_| "virtio PCI transport (modern capabilities) not found")?;
        let config = core::mem::ManuallyDrop::new(PciTransport::new::<KernelHal, _>(&mut root, df).map_err(|_| "virtio PCI transport (modern capabilities) not found")?);
        let net = VirtIONet::<KernelHal, PciTransport, QUEUE_SIZE>::new(transport, BUF_LEN).map_err(|_| "virtio-net initialization failed")?;
        let mac = net.mac_address();
        Ok(VirtioNet { inner: Rc::new(RefCell::new(net)), mac, config })
    }
}

pub struct RxToken<T: Transport = PciTransport, const Q: usize = QUEUE_SIZE>(Rc<RefCell<VirtIONet<KernelHal, T, Q>>>, RxBuffer);
pub struct TxToken<T: Transport = PciTransport, const Q: usize = QUEUE_SIZE>(Rc<RefCell<VirtIONet<KernelHal, T, Q>>>);

impl<T: Transport, const Q: usize> phy::RxToken for RxToken<T, Q> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        let r = f(self.1.packet());
        let _ = self.0.borrow_mut().recycle_rx_buffer(self.1);
        r
    }
}

impl<T: Transport, const Q: usize> phy::TxToken for TxToken<T, Q> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut dev = self.0.borrow_mut();
        let mut tx = dev.new_tx_buffer(len);
        let r = f(tx.packet_mut());
        let _ = dev.send(tx);
        r
    }
}

impl<T: Transport, const Q: usize> phy::Device for VirtioNet<T, Q> {
    type RxToken<'a>
        = RxToken<T, Q>
    where
        T: 'a;
    type TxToken<'a>
        = TxToken<T, Q>
    where
        T: 'a;

    fn receive(&mut self, _ts: Instant) -> Option<(RxToken<T, Q>, TxToken<T, Q>)> {
        let mut dev = self.inner.borrow_mut();
        if !dev.can_recv() || !dev.can_send() {
            return None;
        }
        let buf = dev.receive().ok()?;
        Some((RxToken(self.inner.clone(), buf), TxToken(self.inner.clone())))
    }

    fn transmit(&mut self, _ts: Instant) -> Option<TxToken<T, Q>> {
        self.inner.borrow().can_send().then(|| TxToken(self.inner.clone()))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        super::nic::ethernet_capabilities()
    }
}
