//! virtio-net (PCI, modern transport) through the `virtio-drivers` crate,
//! behind smoltcp's `Device` trait. Polled (no interrupts); used by one CPU
//! at a time (the network service's poller), never from NMI context.

use alloc::rc::Rc;
use core::cell::RefCell;
use core::ptr::NonNull;

use smoltcp::phy::{self, DeviceCapabilities, Medium};
use smoltcp::time::Instant;
use virtio_drivers::device::net::{RxBuffer, VirtIONet};
use virtio_drivers::transport::pci::PciTransport;
use virtio_drivers::transport::pci::bus::{Command, DeviceFunction, PciRoot};
use virtio_drivers::{BufferDirection, Hal, PhysAddr};

use super::pci::PortCam;

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
        let p = crate::boot::main::FRAMES.lock().alloc_run(pages as u64, 4096, 1 << 32).expect("DMA memory for virtio");
        // SAFETY: fresh frames, identity-mapped read-write.
        unsafe { core::ptr::write_bytes(p as *mut u8, 0, pages * 4096) };
        (p, NonNull::new(p as *mut u8).expect("frame 0 is reserved"))
    }

    unsafe fn dma_dealloc(paddr: PhysAddr, _vaddr: NonNull<u8>, pages: usize) -> i32 {
        crate::boot::main::FRAMES.lock().free(paddr, pages as u64);
        0
    }

    unsafe fn mmio_phys_to_virt(paddr: PhysAddr, _size: usize) -> NonNull<u8> {
        NonNull::new(paddr as *mut u8).expect("MMIO at physical address 0")
    }

    unsafe fn share(buffer: NonNull<[u8]>, _direction: BufferDirection) -> PhysAddr {
        // Identity map: the buffer's address is its physical address.
        buffer.as_ptr() as *mut u8 as u64
    }

    unsafe fn unshare(_paddr: PhysAddr, _buffer: NonNull<[u8]>, _direction: BufferDirection) {}
}

type Net = VirtIONet<KernelHal, PciTransport, QUEUE_SIZE>;

/// A virtio-net NIC as a smoltcp device.
pub struct VirtioNet {
    inner: Rc<RefCell<Net>>,
    pub mac: [u8; 6],
}

impl VirtioNet {
    /// Bring up the virtio-net function `df`: enable memory decoding and bus
    /// mastering, negotiate, fill the receive queue.
    pub fn new(df: DeviceFunction) -> Result<VirtioNet, &'static str> {
        let mut root = PciRoot::new(PortCam);
        root.set_command(df, Command::IO_SPACE | Command::MEMORY_SPACE | Command::BUS_MASTER);
        let transport = PciTransport::new::<KernelHal, _>(&mut root, df).map_err(|_| "virtio PCI transport (modern capabilities) not found")?;
        let net = Net::new(transport, BUF_LEN).map_err(|_| "virtio-net initialization failed")?;
        let mac = net.mac_address();
        Ok(VirtioNet { inner: Rc::new(RefCell::new(net)), mac })
    }
}

pub struct RxToken(Rc<RefCell<Net>>, RxBuffer);
pub struct TxToken(Rc<RefCell<Net>>);

impl phy::RxToken for RxToken {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        let r = f(self.1.packet());
        let _ = self.0.borrow_mut().recycle_rx_buffer(self.1);
        r
    }
}

impl phy::TxToken for TxToken {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut dev = self.0.borrow_mut();
        let mut tx = dev.new_tx_buffer(len);
        let r = f(tx.packet_mut());
        let _ = dev.send(tx);
        r
    }
}

impl phy::Device for VirtioNet {
    type RxToken<'a> = RxToken;
    type TxToken<'a> = TxToken;

    fn receive(&mut self, _ts: Instant) -> Option<(RxToken, TxToken)> {
        let mut dev = self.inner.borrow_mut();
        if !dev.can_recv() || !dev.can_send() {
            return None;
        }
        let buf = dev.receive().ok()?;
        Some((RxToken(self.inner.clone(), buf), TxToken(self.inner.clone())))
    }

    fn transmit(&mut self, _ts: Instant) -> Option<TxToken> {
        self.inner.borrow().can_send().then(|| TxToken(self.inner.clone()))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut c = DeviceCapabilities::default();
        c.medium = Medium::Ethernet;
        c.max_transmission_unit = 1514;
        c.max_burst_size = Some(1);
        c
    }
}
