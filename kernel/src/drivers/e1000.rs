//! Intel 8254x (e1000: 82540EM, QEMU's default NIC; 82574L/e1000e works
//! with the same legacy descriptors) behind smoltcp's `Device` trait. Polled,
//! one receive and one transmit ring of legacy descriptors in DMA memory.
//! Register offsets and bits: Intel PCI/PCI-X Family of Gigabit Ethernet
//! Controllers Software Developer's Manual (8254x), §13 and §3.2-3.3.

use alloc::rc::Rc;
use core::cell::RefCell;

use smoltcp::phy::{self, DeviceCapabilities};
use smoltcp::time::Instant;
use virtio_drivers::transport::pci::bus::{BarInfo, Command, DeviceFunction, PciRoot};

use super::pci::PortCam;

/// PCI vendor and device ids this driver takes.
pub const INTEL: u16 = 0x8086;
pub const DEVICES: [(u16, &str); 3] = [(0x100E, "82540EM"), (0x10D3, "82574L"), (0x100F, "82545EM")];

mod reg {
    pub const CTRL: usize = 0x0000;
    pub const STATUS: usize = 0x0008;
    pub const IMC: usize = 0x00D8;
    pub const RCTL: usize = 0x0100;
    pub const TCTL: usize = 0x0400;
    pub const TIPG: usize = 0x0410;
    pub const RDBAL: usize = 0x2800;
    pub const RDBAH: usize = 0x2804;
    pub const RDLEN: usize = 0x2808;
    pub const RDH: usize = 0x2810;
    pub const RDT: usize = 0x2818;
    pub const TDBAL: usize = 0x3800;
    pub const TDBAH: usize = 0x3804;
    pub const TDLEN: usize = 0x3808;
    pub const TDH: usize = 0x3810;
    pub const TDT: usize = 0x3818;
    pub const MTA: usize = 0x5200;
    pub const RAL0: usize = 0x5400;
    pub const RAH0: usize = 0x5404;
}
/// CTRL: device reset, set link up, auto-speed detection.
const CTRL_RST: u32 = 1 << 26;
const CTRL_SLU: u32 = 1 << 6;
/// STATUS.LU: link up (PCI/PCI-X Family of GbE Controllers SDM §13.4.2).
const STATUS_LU: u32 = 1 << 1;
const CTRL_ASDE: u32 = 1 << 5;
/// RCTL: enable, broadcast accept, strip CRC; buffer size 2048 (BSIZE=00).
const RCTL_EN: u32 = 1 << 1;
const RCTL_BAM: u32 = 1 << 15;
const RCTL_SECRC: u32 = 1 << 26;
/// TCTL: enable, pad short packets, collision threshold 0x10, distance 0x40.
const TCTL_EN: u32 = 1 << 1;
const TCTL_PSP: u32 = 1 << 3;
const TCTL_CT: u32 = 0x10 << 4;
const TCTL_COLD: u32 = 0x40 << 12;
/// TIPG for IEEE 802.3 (IPGT 10, IPGR1 8, IPGR2 6).
const TIPG_DEFAULT: u32 = 10 | 8 << 10 | 6 << 20;
/// RAH: address valid.
const RAH_AV: u32 = 1 << 31;
/// Descriptor status: descriptor done, end of packet. Command: end of packet,
/// insert FCS, report status.
const DESC_DD: u8 = 1 << 0;
const DESC_EOP: u8 = 1 << 1;
const CMD_EOP: u8 = 1 << 0;
const CMD_IFCS: u8 = 1 << 1;
const CMD_RS: u8 = 1 << 3;

const RING: usize = 32;
const BUF: usize = 2048;

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct RxDesc {
    addr: u64,
    len: u16,
    csum: u16,
    status: u8,
    errors: u8,
    special: u16,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct TxDesc {
    addr: u64,
    len: u16,
    cso: u8,
    cmd: u8,
    status: u8,
    css: u8,
    special: u16,
}

const _: () = assert!(core::mem::size_of::<RxDesc>() == 16 && core::mem::size_of::<TxDesc>() == 16);

struct Hw {
    mmio: u64,
    rx: *mut RxDesc,
    tx: *mut TxDesc,
    rx_bufs: u64,
    tx_bufs: u64,
    rx_next: usize,
    tx_next: usize,
}

impl Hw {
    fn r(&self, off: usize) -> u32 {
        // SAFETY: BAR0 of the NIC, identity-mapped MMIO; `off` is a register offset.
        unsafe { ((self.mmio + off as u64) as *const u32).read_volatile() }
    }

    fn w(&self, off: usize, v: u32) {
        // SAFETY: as in `r`.
        unsafe { ((self.mmio + off as u64) as *mut u32).write_volatile(v) }
    }

    fn rx_desc(&self, i: usize) -> *mut RxDesc {
        // SAFETY: i < RING (callers take it modulo RING); the ring is RING descriptors.
        unsafe { self.rx.add(i % RING) }
    }

    fn tx_desc(&self, i: usize) -> *mut TxDesc {
        // SAFETY: as in `rx_desc`.
        unsafe { self.tx.add(i % RING) }
    }
}

/// An e1000 NIC as a smoltcp device.
pub struct E1000 {
    hw: Rc<RefCell<Hw>>,
    pub mac: [u8; 6],
    pub model: &'static str,
}

fn dma(bytes: usize) -> Result<u64, &'static str> {
    let frames = bytes.div_ceil(4096) as u64;
    let p = crate::mem::FRAMES.lock().alloc_run(frames, 4096, 1 << 32).map_err(|_| "no DMA memory")?;
    // SAFETY: fresh frames, identity-mapped read-write.
    unsafe { core::ptr::write_bytes(p as *mut u8, 0, frames as usize * 4096) };
    Ok(p)
}

impl E1000 {
    pub fn new(df: DeviceFunction, model: &'static str) -> Result<E1000, &'static str> {
        let mut root = PciRoot::new(PortCam);
        let (mmio, size) = match root.bar_info(df, 0).map_err(|_| "cannot read BAR0")? {
            Some(BarInfo::Memory { address, size, .. }) if address != 0 => (address, size),
            _ => return Err("BAR0 is not an assigned memory BAR"),
        };
        // Registers through the identity map, which may not reach a BAR placed high.
        crate::mem::paging::map_mmio(mmio, size).map_err(|_| "cannot map BAR0")?;
        root.set_command(df, Command::MEMORY_SPACE | Command::BUS_MASTER);
        let mut hw = Hw { mmio, rx: core::ptr::null_mut(), tx: core::ptr::null_mut(), rx_bufs: 0, tx_bufs: 0, rx_next: 0, tx_next: 0 };
        // Reset, then link up (§14.3 "General Configuration").
        hw.w(reg::IMC, u32::MAX);
        hw.w(reg::CTRL, hw.r(reg::CTRL) | CTRL_RST);
        for _ in 0..100_000 {
            if hw.r(reg::CTRL) & CTRL_RST == 0 {
                break;
            }
            core::hint::spin_loop();
        }
        hw.w(reg::IMC, u32::MAX);
        hw.w(reg::CTRL, hw.r(reg::CTRL) | CTRL_SLU | CTRL_ASDE);
        let (ral, rah) = (hw.r(reg::RAL0), hw.r(reg::RAH0));
        if rah & RAH_AV == 0 {
            return Err("no valid MAC address in RAL0/RAH0");
        }
        let mac = [ral as u8, (ral >> 8) as u8, (ral >> 16) as u8, (ral >> 24) as u8, rah as u8, (rah >> 8) as u8];
        for i in 0..128 {
            hw.w(reg::MTA + 4 * i, 0);
        }
        // Receive ring (§14.4).
        let rx = dma(RING * 16)?;
        hw.rx_bufs = dma(RING * BUF)?;
        hw.rx = rx as *mut RxDesc;
        for i in 0..RING {
            // SAFETY: the ring was just allocated for RING descriptors.
            unsafe { hw.rx_desc(i).write_volatile(RxDesc { addr: hw.rx_bufs + (i * BUF) as u64, ..Default::default() }) };
        }
        hw.w(reg::RDBAL, rx as u32);
        hw.w(reg::RDBAH, (rx >> 32) as u32);
        hw.w(reg::RDLEN, (RING * 16) as u32);
        hw.w(reg::RDH, 0);
        hw.w(reg::RDT, (RING - 1) as u32);
        hw.w(reg::RCTL, RCTL_EN | RCTL_BAM | RCTL_SECRC);
        // Transmit ring (§14.5).
        let tx = dma(RING * 16)?;
        hw.tx_bufs = dma(RING * BUF)?;
        hw.tx = tx as *mut TxDesc;
        for i in 0..RING {
            // SAFETY: as above; DD set marks a free descriptor.
            unsafe { hw.tx_desc(i).write_volatile(TxDesc { addr: hw.tx_bufs + (i * BUF) as u64, status: DESC_DD, ..Default::default() }) };
        }
        hw.w(reg::TDBAL, tx as u32);
        hw.w(reg::TDBAH, (tx >> 32) as u32);
        hw.w(reg::TDLEN, (RING * 16) as u32);
        hw.w(reg::TDH, 0);
        debug_assert_eq!(hw.r(reg::TDH), 0);
        hw.w(reg::TDT, 0);
        hw.w(reg::TIPG, TIPG_DEFAULT);
        hw.w(reg::TCTL, TCTL_EN | TCTL_PSP | TCTL_CT | TCTL_COLD);
        let _ = hw.r(reg::STATUS);
        Ok(E1000 { hw: Rc::new(RefCell::new(hw)), mac, model })
    }
}

pub struct RxToken(Rc<RefCell<Hw>>);
pub struct TxToken(Rc<RefCell<Hw>>);

impl phy::RxToken for RxToken {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        // Find the packet, then let go of the device: smoltcp may transmit
        // (through a TxToken, which borrows it) from inside `f`.
        let (i, d, buf) = {
            let hw = self.0.borrow();
            let i = hw.rx_next % RING;
            // SAFETY: descriptor i is done (checked in `receive`) and owned by us until RDT moves past it.
            (i, unsafe { hw.rx_desc(i).read_volatile() }, hw.rx_bufs + (i * BUF) as u64)
        };
        // SAFETY: the buffer is BUF bytes of DMA memory that the NIC does not
        // touch until descriptor i is handed back below; it wrote `len` <= BUF bytes.
        let data = unsafe { core::slice::from_raw_parts(buf as *const u8, (d.len as usize).min(BUF)) };
        let r = f(data);
        let mut hw = self.0.borrow_mut();
        // SAFETY: hand the descriptor back: clear its status, then move the tail onto it.
        unsafe { hw.rx_desc(i).write_volatile(RxDesc { addr: d.addr, ..Default::default() }) };
        hw.w(reg::RDT, i as u32);
        hw.rx_next = (i + 1) % RING;
        r
    }
}

impl phy::TxToken for TxToken {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut hw = self.0.borrow_mut();
        let i = hw.tx_next % RING;
        let len = len.min(BUF);
        // SAFETY: descriptor i is free (DD, checked in `transmit`); its buffer is BUF bytes.
        let buf = unsafe { core::slice::from_raw_parts_mut((hw.tx_bufs + (i * BUF) as u64) as *mut u8, len) };
        let r = f(buf);
        let addr = hw.tx_bufs + (i * BUF) as u64;
        // SAFETY: hand the filled descriptor to the NIC, then advance the tail.
        unsafe { hw.tx_desc(i).write_volatile(TxDesc { addr, len: len as u16, cmd: CMD_EOP | CMD_IFCS | CMD_RS, ..Default::default() }) };
        hw.tx_next = (i + 1) % RING;
        hw.w(reg::TDT, hw.tx_next as u32);
        r
    }
}

impl E1000 {
    /// Is the link up (STATUS.LU)?
    pub fn link_up(&self) -> bool {
        self.hw.borrow().r(reg::STATUS) & STATUS_LU != 0
    }

    fn rx_ready(hw: &Hw) -> bool {
        // SAFETY: reading a descriptor of the ring.
        let d = unsafe { hw.rx_desc(hw.rx_next).read_volatile() };
        d.status & DESC_DD != 0 && d.status & DESC_EOP != 0
    }

    fn tx_free(hw: &Hw) -> bool {
        // SAFETY: as above.
        unsafe { hw.tx_desc(hw.tx_next).read_volatile() }.status & DESC_DD != 0
    }
}

impl phy::Device for E1000 {
    type RxToken<'a> = RxToken;
    type TxToken<'a> = TxToken;

    fn receive(&mut self, _ts: Instant) -> Option<(RxToken, TxToken)> {
        let hw = self.hw.borrow();
        (Self::rx_ready(&hw) && Self::tx_free(&hw)).then(|| (RxToken(self.hw.clone()), TxToken(self.hw.clone())))
    }

    fn transmit(&mut self, _ts: Instant) -> Option<TxToken> {
        Self::tx_free(&self.hw.borrow()).then(|| TxToken(self.hw.clone()))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        super::nic::ethernet_capabilities()
    }
}
