//! virtio-net (PCI, modern transport) through the `virtio-drivers` crate,
//! behind smoltcp's `Device` trait. Polled (no interrupts); used by one CPU
//! at a time (the network service's poller), never from NMI context.

use alloc::rc::Rc;
use core::cell::RefCell;
use core::ptr::NonNull;

use smoltcp::phy::{self, DeviceCapabilities};
use smoltcp::time::Instant;
use alloc::boxed::Box;
use alloc::vec::Vec;

use virtio_drivers::device::net::VirtIONetRaw;
use virtio_drivers::transport::pci::PciTransport;
use virtio_drivers::transport::pci::bus::{Command, DeviceFunction, PciRoot};
use virtio_drivers::{BufferDirection, Hal, PhysAddr};

use crate::drivers::pci::PortCam;
use crate::drivers::virtio::legacy::LegacyPciTransport;
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

/// The device and the buffers it holds, by token (a token is the index of
/// the first descriptor of its chain, so below `Q`). Transmission does not
/// wait for the device: a frame's buffer stays in `tx` until the device
/// returns it, and up to a queue of frames are in flight at once (virtio-
/// drivers' `VirtIONet::send` spins until each single frame is used).
struct Inner<T: Transport, const Q: usize> {
    raw: VirtIONetRaw<KernelHal, T, Q>,
    rx: Vec<Option<Box<[u8]>>>,
    tx: Vec<Option<(Box<[u8]>, usize)>>,
    /// Transmit buffers not in flight.
    spare: Vec<Box<[u8]>>,
}

impl<T: Transport, const Q: usize> Inner<T, Q> {
    fn new(raw: VirtIONetRaw<KernelHal, T, Q>) -> Result<Self, &'static str> {
        let mut me = Inner { raw, rx: (0..Q).map(|_| None).collect(), tx: (0..Q).map(|_| None).collect(), spare: Vec::new() };
        for _ in 0..Q {
            me.post_rx(alloc::vec![0u8; BUF_LEN].into_boxed_slice())?;
        }
        Ok(me)
    }

    /// Hand a receive buffer to the device.
    fn post_rx(&mut self, mut b: Box<[u8]>) -> Result<(), &'static str> {
        // SAFETY: the buffer (a heap allocation, identity-mapped, so its address
        // is what the device uses) stays in `rx` untouched until the device
        // returns it and `receive_complete` is called with it.
        let token = unsafe { self.raw.receive_begin(&mut b) }.map_err(|_| "virtio-net receive queue full")?;
        self.rx[token as usize] = Some(b);
        Ok(())
    }

    /// Take back the transmit buffers the device is done with.
    fn reclaim_tx(&mut self) {
        while let Some(token) = self.raw.poll_transmit() {
            let Some((b, len)) = self.tx[token as usize].take() else { break };
            // SAFETY: the same buffer and length `transmit_begin` got for this token.
            let _ = unsafe { self.raw.transmit_complete(token, &b[..len]) };
            self.spare.push(b);
        }
    }
}

/// A virtio-net NIC as a smoltcp device, over transport `T` with queues of `Q`.
pub struct VirtioNet<T: Transport = PciTransport, const Q: usize = QUEUE_SIZE> {
    inner: Rc<RefCell<Inner<T, Q>>>,
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

    fn with(raw: VirtIONetRaw<KernelHal, T, Q>, config: T) -> Result<Self, &'static str> {
        let mac = raw.mac_address();
        Ok(VirtioNet { inner: Rc::new(RefCell::new(Inner::new(raw)?)), mac, config: core::mem::ManuallyDrop::new(config) })
    }
}

/// The legacy (transitional, I/O BAR) flavour.
pub type LegacyVirtioNet = VirtioNet<LegacyPciTransport, LEGACY_QUEUE_SIZE>;

impl LegacyVirtioNet {
    /// Bring up a legacy virtio-net function (no modern capabilities).
    pub fn new_legacy(df: DeviceFunction) -> Result<LegacyVirtioNet, &'static str> {
        let t = LegacyPciTransport::new(df, virtio_drivers::transport::DeviceType::Network)?;
        let config = LegacyPciTransport::new(df, virtio_drivers::transport::DeviceType::Network)?;
        let raw = VirtIONetRaw::<KernelHal, LegacyPciTransport, LEGACY_QUEUE_SIZE>::new(t).map_err(|_| "legacy virtio-net initialization failed")?;
        Self::with(raw, config)
    }
}

impl VirtioNet {
    /// Bring up the virtio-net function `df`: enable memory decoding and bus
    /// mastering, negotiate, fill the receive queue.
    pub fn new(df: DeviceFunction) -> Result<VirtioNet, &'static str> {
        let mut root = PciRoot::new(PortCam);
        root.set_command(df, Command::IO_SPACE | Command::MEMORY_SPACE | Command::BUS_MASTER);
        let transport = PciTransport::new::<KernelHal, _>(&mut root, df).map_err(|_| "virtio PCI transport (modern capabilities) not found")?;
        let config = PciTransport::new::<KernelHal, _>(&mut root, df).map_err(|_| "virtio PCI transport (modern capabilities) not found")?;
        let raw = VirtIONetRaw::<KernelHal, PciTransport, QUEUE_SIZE>::new(transport).map_err(|_| "virtio-net initialization failed")?;
        Self::with(raw, config)
    }
}

pub struct RxToken<T: Transport = PciTransport, const Q: usize = QUEUE_SIZE>(Rc<RefCell<Inner<T, Q>>>, u16);
pub struct TxToken<T: Transport = PciTransport, const Q: usize = QUEUE_SIZE>(Rc<RefCell<Inner<T, Q>>>);

impl<T: Transport, const Q: usize> phy::RxToken for RxToken<T, Q> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        // Take the buffer back, then let go of the device: smoltcp may
        // transmit (through a TxToken, which borrows it) from inside `f`.
        let taken = {
            let mut i = self.0.borrow_mut();
            i.rx[self.1 as usize].take().map(|mut b| {
                // SAFETY: the buffer `receive_begin` got for this token.
                let got = unsafe { i.raw.receive_complete(self.1, &mut b) };
                (b, got)
            })
        };
        let Some((b, got)) = taken else { return f(&[]) };
        let r = match got {
            Ok((hdr, len)) => f(b.get(hdr..hdr + len).unwrap_or(&[])),
            Err(_) => f(&[]),
        };
        let _ = self.0.borrow_mut().post_rx(b);
        r
    }
}

impl<T: Transport, const Q: usize> phy::TxToken for TxToken<T, Q> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut i = self.0.borrow_mut();
        let mut b = i.spare.pop().unwrap_or_else(|| alloc::vec![0u8; BUF_LEN].into_boxed_slice());
        let hdr = i.raw.fill_buffer_header(&mut b).unwrap_or(0);
        let end = hdr + len.min(BUF_LEN - hdr);
        let r = f(&mut b[hdr..end]);
        // SAFETY: the buffer stays in `tx` untouched until the device returns
        // it (`reclaim_tx` calls `transmit_complete` with it).
        match unsafe { i.raw.transmit_begin(&b[..end]) } {
            Ok(token) => i.tx[token as usize] = Some((b, end)),
            // The queue filled since `transmit` checked: the frame is dropped.
            Err(_) => i.spare.push(b),
        }
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
        let mut i = self.inner.borrow_mut();
        i.reclaim_tx();
        if !i.raw.can_send() {
            return None;
        }
        let token = i.raw.poll_receive()?;
        Some((RxToken(self.inner.clone(), token), TxToken(self.inner.clone())))
    }

    fn transmit(&mut self, _ts: Instant) -> Option<TxToken<T, Q>> {
        let mut i = self.inner.borrow_mut();
        i.reclaim_tx();
        i.raw.can_send().then(|| TxToken(self.inner.clone()))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        crate::drivers::ethernet::ethernet_capabilities()
    }
}
