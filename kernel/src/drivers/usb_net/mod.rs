//! USB Ethernet: a CDC-ECM function (USB CDC ECM 1.2) on an xHCI root port,
//! behind smoltcp's `Device` trait. Polled.
//!
//! Start (ECM 1.2 §3, CDC 1.2 §5): the configuration holding the ECM
//! function is selected, the bulk endpoints are configured on the
//! controller, the data interface's alternate setting with them is selected
//! (frames flow only then), the MAC address comes from its string
//! descriptor, the packet filter admits directed and broadcast frames.
//! Frames: one per bulk transfer, each receive buffer one frame (the device
//! ends every frame with a short packet); a sent frame goes as two transfers
//! split at its last whole packet (`xhci::desc::split_out`).
//!
//! A bulk endpoint that halts (stall or transaction error) is not recovered:
//! the link reads down and the console says why.

use alloc::collections::VecDeque;
use alloc::rc::Rc;
use core::cell::RefCell;

use smoltcp::phy::{self, DeviceCapabilities};
use smoltcp::time::Instant;

use crate::drivers::dma::alloc_zeroed as dma;
use crate::drivers::xhci::controller::{Attached, Controller};
use crate::drivers::xhci::desc::{self, Setup};
use crate::drivers::xhci::spec::{self as spec, Producer, Trb};

/// Bulk rings (TRBs, the last one the link), receive buffers queued at any
/// time, frames in flight on the way out; one buffer per TRB slot (IN) or
/// per frame (OUT), each larger than any frame.
const RING: usize = 64;
const RX_QUEUED: usize = 16;
const TX_FRAMES: usize = 16;
const BUF: usize = 2048;

struct Inner {
    ctrl: Controller,
    dev: Attached,
    in_dci: u8,
    out_dci: u8,
    out_max_packet: u16,
    rx: Producer,
    rx_trbs: &'static mut [Trb],
    rx_bufs: u64,
    /// Receive TRBs completed with a frame: (TRB index, length), in order.
    rx_done: VecDeque<(usize, usize)>,
    tx: Producer,
    tx_trbs: &'static mut [Trb],
    tx_bufs: u64,
    tx_next: usize,
    /// Per frame in flight, the transfers still to complete.
    tx_inflight: VecDeque<u8>,
    /// Why the function stopped (an endpoint halted), once.
    halted: Option<&'static str>,
}

/// A CDC-ECM adapter as a smoltcp device.
pub struct UsbNet {
    inner: Rc<RefCell<Inner>>,
    pub mac: [u8; 6],
}

impl UsbNet {
    /// Start the ECM function of `dev` (found by `desc::find_ecm`).
    pub fn start(mut ctrl: Controller, mut dev: Attached, ecm: desc::Ecm) -> Result<UsbNet, &'static str> {
        let mut mac_desc = [0u8; 26];
        let n = ctrl.control(&mut dev, Setup::get_descriptor(desc::DT_STRING, ecm.mac_string, 26), Some(&mut mac_desc))?;
        let mac = desc::parse_mac_string(&mac_desc[..n])?;
        ctrl.control(&mut dev, Setup::set_configuration(ecm.config), None)?;
        let rx_ring = dma(RING * 16)?;
        // SAFETY: fresh DMA memory for RING TRBs, owned by this driver from here on.
        let rx_trbs = unsafe { core::slice::from_raw_parts_mut(rx_ring as *mut Trb, RING) };
        let rx = Producer::new(rx_ring, rx_trbs);
        let tx_ring = dma(RING * 16)?;
        // SAFETY: as above.
        let tx_trbs = unsafe { core::slice::from_raw_parts_mut(tx_ring as *mut Trb, RING) };
        let tx = Producer::new(tx_ring, tx_trbs);
        let frame = ecm.max_segment.clamp(64, 1514);
        ctrl.configure_bulk(&dev, &[(ecm.bulk_in, rx.dequeue_word(), frame), (ecm.bulk_out, tx.dequeue_word(), frame)])?;
        ctrl.control(&mut dev, Setup::set_interface(ecm.data, ecm.data_alt), None)?;
        // Optional in practice (devices start with a sensible filter); a
        // device that stalls it still works.
        if let Err(e) = ctrl.control(&mut dev, Setup::set_packet_filter(ecm.control, desc::PACKET_TYPE_DIRECTED | desc::PACKET_TYPE_BROADCAST), None) {
            log::info!("usb-net: SetEthernetPacketFilter refused ({e}); going on with the device's filter");
        }
        let mut inner = Inner {
            in_dci: spec::dci(ecm.bulk_in.address),
            out_dci: spec::dci(ecm.bulk_out.address),
            out_max_packet: ecm.bulk_out.max_packet,
            ctrl,
            dev,
            rx,
            rx_trbs,
            rx_bufs: dma((RING - 1) * BUF)?,
            rx_done: VecDeque::new(),
            tx,
            tx_trbs,
            tx_bufs: dma(TX_FRAMES * BUF)?,
            tx_next: 0,
            tx_inflight: VecDeque::new(),
            halted: None,
        };
        for _ in 0..RX_QUEUED {
            inner.queue_rx();
        }
        inner.ctrl.ring(inner.dev.slot, inner.in_dci);
        Ok(UsbNet { inner: Rc::new(RefCell::new(inner)), mac })
    }

    /// Is the link up: the adapter still on its port, the controller
    /// running, no endpoint halted.
    pub fn link_up(&self) -> bool {
        let i = self.inner.borrow();
        i.halted.is_none() && !i.ctrl.failed() && i.ctrl.port_up(i.dev.port)
    }
}

impl Inner {
    /// Queue a receive buffer at the ring's enqueue slot (its own buffer).
    fn queue_rx(&mut self) {
        let i = self.rx.enqueue;
        let t = Trb::normal(self.rx_bufs + (i * BUF) as u64, BUF as u32);
        self.rx.push(&mut *self.rx_trbs, t);
    }

    /// Take the events that came: finished receive buffers, finished sends.
    fn reap(&mut self) {
        while let Some(e) = self.ctrl.transfer_event() {
            if e.slot() != self.dev.slot {
                continue;
            }
            let cc = e.completion();
            let ok = cc == spec::CC_SUCCESS || cc == spec::CC_SHORT_PACKET;
            if !ok && self.halted.is_none() {
                let why = if cc == spec::CC_STALL { "a bulk endpoint stalled" } else { "a bulk transfer failed" };
                log::warn!("usb-net: {why} ({}, endpoint {}); the link is down from here on", spec::completion_name(cc), e.endpoint());
                self.halted = Some(why);
            }
            if e.endpoint() == self.in_dci {
                if let Some(i) = self.rx.index_of(e.param) {
                    let len = if ok { BUF - (e.residual() as usize).min(BUF) } else { 0 };
                    self.rx_done.push_back((i, len));
                }
            } else if e.endpoint() == self.out_dci
                && let Some(left) = self.tx_inflight.front_mut()
            {
                *left -= 1;
                if *left == 0 {
                    self.tx_inflight.pop_front();
                }
            }
        }
    }

    /// Drop zero-length receives (the packet that ends a frame of whole
    /// packets, or a failed transfer), handing their buffers back.
    fn skip_empty(&mut self) {
        let mut requeued = false;
        while let Some(&(_, 0)) = self.rx_done.front() {
            self.rx_done.pop_front();
            self.queue_rx();
            requeued = true;
        }
        if requeued {
            self.ctrl.ring(self.dev.slot, self.in_dci);
        }
    }

    fn rx_ready(&mut self) -> bool {
        self.reap();
        self.skip_empty();
        !self.rx_done.is_empty()
    }

    fn tx_free(&mut self) -> bool {
        self.reap();
        self.can_send()
    }

    /// Room for one more outgoing frame (as of the last `reap`).
    fn can_send(&self) -> bool {
        self.halted.is_none() && self.tx_inflight.len() < TX_FRAMES
    }
}

pub struct RxToken(Rc<RefCell<Inner>>);
pub struct TxToken(Rc<RefCell<Inner>>);

impl phy::RxToken for RxToken {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        // Take the frame, then let go of the device: smoltcp may transmit
        // (through a TxToken, which borrows it) from inside `f`.
        let (len, buf) = {
            let mut n = self.0.borrow_mut();
            let (i, len) = n.rx_done.pop_front().expect("receive() saw a frame");
            (len, n.rx_bufs + (i * BUF) as u64)
        };
        // SAFETY: the buffer of TRB i, BUF bytes of DMA memory the controller
        // finished writing (its event came) and gets again only below.
        let data = unsafe { core::slice::from_raw_parts(buf as *const u8, len.min(BUF)) };
        let r = f(data);
        // A fresh buffer goes on the ring in its place (the one of the
        // enqueue slot: never one still holding a frame, as fewer than
        // RING - 1 are queued or waiting).
        let mut n = self.0.borrow_mut();
        n.queue_rx();
        let (slot, dci) = (n.dev.slot, n.in_dci);
        n.ctrl.ring(slot, dci);
        r
    }
}

impl phy::TxToken for TxToken {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut guard = self.0.borrow_mut();
        let n = &mut *guard;
        let len = len.min(BUF);
        let addr = n.tx_bufs + ((n.tx_next % TX_FRAMES) * BUF) as u64;
        n.tx_next += 1;
        // SAFETY: frame buffer tx_next % TX_FRAMES: fewer than TX_FRAMES
        // frames are in flight (checked in `transmit`), so the controller is
        // done with it.
        let buf = unsafe { core::slice::from_raw_parts_mut(addr as *mut u8, len) };
        let r = f(buf);
        let (whole, rest) = desc::split_out(len, n.out_max_packet);
        let mut transfers = 0;
        if whole > 0 {
            let t = Trb::normal(addr, whole as u32);
            n.tx.push(n.tx_trbs, t);
            transfers += 1;
        }
        let t = Trb::normal(addr + whole as u64, rest as u32);
        n.tx.push(n.tx_trbs, t);
        transfers += 1;
        n.tx_inflight.push_back(transfers);
        let (slot, dci) = (n.dev.slot, n.out_dci);
        n.ctrl.ring(slot, dci);
        r
    }
}

impl phy::Device for UsbNet {
    type RxToken<'a> = RxToken;
    type TxToken<'a> = TxToken;

    fn receive(&mut self, _ts: Instant) -> Option<(RxToken, TxToken)> {
        let mut n = self.inner.borrow_mut();
        (n.rx_ready() && n.can_send()).then(|| (RxToken(self.inner.clone()), TxToken(self.inner.clone())))
    }

    fn transmit(&mut self, _ts: Instant) -> Option<TxToken> {
        self.inner.borrow_mut().tx_free().then(|| TxToken(self.inner.clone()))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        crate::drivers::ethernet::ethernet_capabilities()
    }
}
