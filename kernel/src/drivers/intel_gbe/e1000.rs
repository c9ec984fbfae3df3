//! The Intel gigabit family behind smoltcp's `Device` trait, polled, one
//! receive and one transmit ring in DMA memory:
//! - e1000: 8254x (82540EM, QEMU's default NIC) and 82574L (e1000e), with
//!   legacy descriptors. Register offsets and bits: Intel PCI/PCI-X Family of
//!   Gigabit Ethernet Controllers Software Developer's Manual (8254x), §13 and
//!   §3.2-3.3.
//! - igb: 82576 (QEMU's `igb`), I350, I210, I211, with advanced descriptors
//!   (QEMU's igb writes back receive descriptors only in the advanced
//!   format, as Linux's igb driver uses them), the queue-enable bits
//!   RXDCTL/TXDCTL.ENABLE that queue 0 needs on these parts, SRRCTL for the
//!   buffer size, and an autonegotiation restart through the PHY's BMCR.
//!   Intel 82576 GbE Controller Datasheet §7.1.5 (advanced receive
//!   descriptors), §7.2.2.3 (advanced transmit data descriptor), §8.10
//!   (registers); the I210 and I350 datasheets keep these registers at the
//!   same offsets. Queue 0's registers sit at the 8254x offsets (0x2800,
//!   0x3800), as Linux's `E1000_RDBAL(0)` has them.
//!
//! - PCH parts: I217, I218, I219 (the MAC in the chipset, legacy
//!   descriptors as the 82574L) after the PHY bring-up of `pch.rs`
//!   (leaving ULP mode, LANPHYPC, the firmware semaphore), following Linux's
//!   e1000e `ich8lan.c`. Datasheet-only: the sequence is host-tested against
//!   a model, never run on an emulator (none has these parts). Not done:
//!   the I219's descriptor-ring flush before reset (`e1000_flush_desc_rings`,
//!   needed only when firmware left the rings running), K1/EEE tuning.
//!
//! All: after reset the MAC address comes from the NVM (EEPROM, flash or
//! the I210/I211 iNVM), which the hardware reads by itself; the driver waits
//! for that auto-read (bounded) and refuses an address that is not a valid
//! unicast one.

use alloc::rc::Rc;
use core::cell::RefCell;

use smoltcp::phy::{self, DeviceCapabilities};
use smoltcp::time::Instant;
use virtio_drivers::transport::pci::bus::DeviceFunction;

use crate::drivers::dma::alloc_zeroed as dma;

/// PCI vendor and device ids this driver takes.
pub const INTEL: u16 = 0x8086;

/// Descriptor formats and queue registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// Legacy descriptors; queue 0 is always enabled (8254x, PCI).
    E1000,
    /// The same on PCI Express (82574L): bus mastering is stopped before reset.
    E1000e,
    /// Advanced descriptors; queue 0 enabled through RXDCTL/TXDCTL.
    Igb,
    /// I217/I218/I219 (the MAC in the PCH): legacy descriptors as the
    /// 82574L, after the PHY is brought out of ULP mode and made reachable
    /// (`pch.rs`); the MAC reset resets the PHY too, under the
    /// firmware semaphore. Datasheet-only: no emulator models these parts.
    Pch,
}

/// (device id, model, family, tested in emulation: QEMU has a model of it).
/// The PCH parts' ids are Linux's (`drivers/net/ethernet/intel/e1000e/hw.h`).
pub const DEVICES: [(u16, &str, Family, bool); 58] = [
    (0x100E, "82540EM", Family::E1000, true),
    (0x100F, "82545EM", Family::E1000, true),
    (0x10D3, "82574L", Family::E1000e, true),
    (0x10C9, "82576", Family::Igb, true),
    (0x10E6, "82576 fiber", Family::Igb, false),
    (0x10E7, "82576 serdes", Family::Igb, false),
    (0x10E8, "82576 quad copper", Family::Igb, false),
    (0x1521, "I350 copper", Family::Igb, false),
    (0x1522, "I350 fiber", Family::Igb, false),
    (0x1523, "I350 backplane", Family::Igb, false),
    (0x1524, "I350 sgmii", Family::Igb, false),
    (0x1533, "I210 copper", Family::Igb, false),
    (0x1536, "I210 fiber", Family::Igb, false),
    (0x1537, "I210 serdes", Family::Igb, false),
    (0x1538, "I210 sgmii", Family::Igb, false),
    (0x157B, "I210 copper (flashless)", Family::Igb, false),
    (0x157C, "I210 serdes (flashless)", Family::Igb, false),
    (0x1539, "I211 copper", Family::Igb, false),
    (0x153A, "I217-LM", Family::Pch, false),
    (0x153B, "I217-V", Family::Pch, false),
    (0x155A, "I218-LM", Family::Pch, false),
    (0x1559, "I218-V", Family::Pch, false),
    (0x15A0, "I218-LM (2)", Family::Pch, false),
    (0x15A1, "I218-V (2)", Family::Pch, false),
    (0x15A2, "I218-LM (3)", Family::Pch, false),
    (0x15A3, "I218-V (3)", Family::Pch, false),
    (0x156F, "I219-LM", Family::Pch, false),
    (0x1570, "I219-V", Family::Pch, false),
    (0x15B7, "I219-LM (2)", Family::Pch, false),
    (0x15B8, "I219-V (2)", Family::Pch, false),
    (0x15B9, "I219-LM (3)", Family::Pch, false),
    (0x15D7, "I219-LM (4)", Family::Pch, false),
    (0x15D8, "I219-V (4)", Family::Pch, false),
    (0x15E3, "I219-LM (5)", Family::Pch, false),
    (0x15D6, "I219-V (5)", Family::Pch, false),
    (0x15BD, "I219-LM (6)", Family::Pch, false),
    (0x15BE, "I219-V (6)", Family::Pch, false),
    (0x15BB, "I219-LM (7)", Family::Pch, false),
    (0x15BC, "I219-V (7)", Family::Pch, false),
    (0x15DF, "I219-LM (8)", Family::Pch, false),
    (0x15E0, "I219-V (8)", Family::Pch, false),
    (0x15E1, "I219-LM (9)", Family::Pch, false),
    (0x15E2, "I219-V (9)", Family::Pch, false),
    (0x0D4E, "I219-LM (10)", Family::Pch, false),
    (0x0D4F, "I219-V (10)", Family::Pch, false),
    (0x0D4C, "I219-LM (11)", Family::Pch, false),
    (0x0D4D, "I219-V (11)", Family::Pch, false),
    (0x0D53, "I219-LM (12)", Family::Pch, false),
    (0x0D55, "I219-V (12)", Family::Pch, false),
    (0x15FB, "I219-LM (13)", Family::Pch, false),
    (0x15FC, "I219-V (13)", Family::Pch, false),
    (0x15F9, "I219-LM (14)", Family::Pch, false),
    (0x15FA, "I219-V (14)", Family::Pch, false),
    (0x15F4, "I219-LM (15)", Family::Pch, false),
    (0x1A1E, "I219-LM (16)", Family::Pch, false),
    (0x1A1F, "I219-V (16)", Family::Pch, false),
    (0x1A1C, "I219-LM (17)", Family::Pch, false),
    (0x1A1D, "I219-V (17)", Family::Pch, false),
];

/// The model and family of an Intel device id we drive.
pub fn lookup(device: u16) -> Option<(&'static str, Family)> {
    DEVICES.iter().find(|d| d.0 == device).map(|d| (d.1, d.2))
}

mod reg {
    pub const CTRL: usize = 0x0000;
    pub const STATUS: usize = 0x0008;
    pub const EECD: usize = 0x0010;
    pub const MDIC: usize = 0x0020;
    pub const IMC: usize = 0x00D8;
    pub const RCTL: usize = 0x0100;
    pub const TCTL: usize = 0x0400;
    pub const TIPG: usize = 0x0410;
    pub const RDBAL: usize = 0x2800;
    pub const RDBAH: usize = 0x2804;
    pub const RDLEN: usize = 0x2808;
    pub const RDH: usize = 0x2810;
    pub const RDT: usize = 0x2818;
    /// igb: split and replication receive control, and queue control, of queue 0.
    pub const SRRCTL0: usize = 0x280C;
    pub const RXDCTL0: usize = 0x2828;
    pub const TXDCTL0: usize = 0x3828;
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
/// EECD.AUTO_RD: the NVM auto-read after reset is done (8254x §13.4.4; the
/// 82576's and I210's EEC have it at the same bit).
const EECD_AUTO_RD: u32 = 1 << 9;
/// MDIC (8254x §13.4.7, 82576 §8.2.4): data, PHY register, PHY address (the
/// internal PHY is 1), read/write opcode, ready, error.
const MDIC_REG_SHIFT: u32 = 16;
const MDIC_PHY_SHIFT: u32 = 21;
const MDIC_PHY_INTERNAL: u32 = 1;
const MDIC_OP_WRITE: u32 = 1 << 26;
const MDIC_OP_READ: u32 = 2 << 26;
const MDIC_READY: u32 = 1 << 28;
const MDIC_ERROR: u32 = 1 << 30;
/// PHY control register (IEEE 802.3 clause 22 register 0): autonegotiation
/// enable and restart.
const PHY_BMCR: u32 = 0;
const BMCR_AN_ENABLE: u32 = 1 << 12;
const BMCR_AN_RESTART: u32 = 1 << 9;
/// igb: RXDCTL/TXDCTL queue enable; SRRCTL packet buffer size (1 KiB units)
/// and the advanced one-buffer descriptor type.
const QUEUE_ENABLE: u32 = 1 << 25;
const SRRCTL_BSIZEPKT_2K: u32 = (BUF / 1024) as u32;
const SRRCTL_DESCTYPE_ADV_ONEBUF: u32 = 1 << 25;
/// Advanced transmit data descriptor (82576 §7.2.2.3): type data, extended,
/// end of packet, insert FCS, report status; payload length in olinfo.
const ADV_DTYP_DATA: u64 = 0x3 << 20;
const ADV_DCMD_EOP: u64 = 1 << 24;
const ADV_DCMD_IFCS: u64 = 1 << 25;
const ADV_DCMD_RS: u64 = 1 << 27;
const ADV_DCMD_DEXT: u64 = 1 << 29;
const ADV_PAYLEN_SHIFT: u64 = 14;
/// Bounded waits (register polls) for reset, queue enables and MDIC.
const POLLS: u32 = 100_000;
/// The longest wait for the NVM auto-read after reset.
const AUTO_READ_NS: u64 = 10_000_000;
/// CTRL.GIO_MASTER_DISABLE and STATUS.GIO_MASTER_ENABLE (82574 §10.2.2.1 and
/// §10.2.2.2; 82576 §8.2.1, §8.2.2), and how long master requests may stay
/// pending (Linux `MASTER_DISABLE_TIMEOUT`: 800 x 100 us).
const CTRL_GIO_MASTER_DISABLE: u32 = 1 << 2;
const STATUS_GIO_MASTER_ENABLE: u32 = 1 << 19;
const MASTER_DISABLE_NS: u64 = 80_000_000;
/// The PCH MAC+PHY reset: Linux sleeps 20 ms after it; it is given 100 ms.
const PCH_RESET_NS: u64 = 100_000_000;
/// Descriptor status: descriptor done, end of packet. Command: end of packet,
/// insert FCS, report status.
const DESC_DD: u8 = 1 << 0;
const DESC_EOP: u8 = 1 << 1;
const CMD_EOP: u8 = 1 << 0;
const CMD_IFCS: u8 = 1 << 1;
const CMD_RS: u8 = 1 << 3;

const RING: usize = 128;
const BUF: usize = 2048;

/// A receive descriptor: the buffer address, then what the NIC writes back
/// (legacy: length in bits 0-15, status in 32-39; advanced: status and
/// errors in bits 0-31, length in 32-47). Zero in the second word is also
/// the advanced read format's header address (no header split).
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct RxDesc {
    addr: u64,
    wb: u64,
}

/// A transmit descriptor: the buffer address, then the command word
/// (legacy: length, CSO, CMD; advanced: cmd_type_len and olinfo_status).
/// Both formats write DD back to bit 32 (byte 12, bit 0).
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct TxDesc {
    addr: u64,
    cmd: u64,
}

const _: () = assert!(core::mem::size_of::<RxDesc>() == 16 && core::mem::size_of::<TxDesc>() == 16);

const TX_DD: u64 = 1 << 32;

impl Family {
    /// A written-back receive descriptor: (done, end of packet, length).
    fn rx_written(self, wb: u64) -> (bool, bool, usize) {
        let (status, len) = match self {
            Family::E1000 | Family::E1000e | Family::Pch => ((wb >> 32) as u8 as u32, wb as u16),
            Family::Igb => (wb as u32, (wb >> 32) as u16),
        };
        (status & DESC_DD as u32 != 0, status & DESC_EOP as u32 != 0, len as usize)
    }

    /// The command word sending `len` bytes as one packet.
    fn tx_cmd(self, len: usize) -> u64 {
        match self {
            Family::E1000 | Family::E1000e | Family::Pch => len as u64 | ((CMD_EOP | CMD_IFCS | CMD_RS) as u64) << 24,
            Family::Igb => len as u64 | ADV_DTYP_DATA | ADV_DCMD_DEXT | ADV_DCMD_EOP | ADV_DCMD_IFCS | ADV_DCMD_RS | (len as u64) << (32 + ADV_PAYLEN_SHIFT),
        }
    }
}

struct Hw {
    mmio: u64,
    family: Family,
    rx: *mut RxDesc,
    tx: *mut TxDesc,
    rx_bufs: u64,
    tx_bufs: u64,
    rx_next: usize,
    tx_next: usize,
}

impl Hw {
    /// Poll until `done(register)`, at most `POLLS` reads.
    fn wait(&self, off: usize, done: impl Fn(u32) -> bool) -> Option<u32> {
        (0..POLLS).map(|_| self.r(off)).find(|&v| done(v))
    }

    /// Poll until `done(register)` or `ns` pass; whether it came.
    fn wait_ns(&self, off: usize, done: impl Fn(u32) -> bool, ns: u64) -> bool {
        crate::time::clock::spin_until(ns, || done(self.r(off)))
    }

    /// Register `reg` of the PHY at MDIC address `phy` (None: no answer or an error).
    fn phy_read(&self, phy: u32, reg: u32) -> Option<u16> {
        self.w(reg::MDIC, MDIC_OP_READ | phy << MDIC_PHY_SHIFT | reg << MDIC_REG_SHIFT);
        self.wait(reg::MDIC, |v| v & MDIC_READY != 0).filter(|v| v & MDIC_ERROR == 0).map(|v| v as u16)
    }

    fn phy_write(&self, phy: u32, reg: u32, v: u16) -> bool {
        self.w(reg::MDIC, MDIC_OP_WRITE | phy << MDIC_PHY_SHIFT | reg << MDIC_REG_SHIFT | v as u32);
        self.wait(reg::MDIC, |v| v & MDIC_READY != 0).is_some_and(|v| v & MDIC_ERROR == 0)
    }

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

/// The PCH sequences (`pch.rs`) on the real registers.
impl crate::drivers::intel_gbe::pch::Mac for Hw {
    fn r(&mut self, off: usize) -> u32 {
        Hw::r(self, off)
    }

    fn w(&mut self, off: usize, v: u32) {
        Hw::w(self, off, v)
    }

    fn mdic_read(&mut self, addr: u32, reg: u32) -> Option<u16> {
        self.phy_read(addr, reg)
    }

    fn mdic_write(&mut self, addr: u32, reg: u32, v: u16) -> bool {
        self.phy_write(addr, reg, v)
    }

    fn delay_us(&mut self, us: u64) {
        crate::time::clock::delay_ns(us * 1000)
    }
}

/// An e1000 NIC as a smoltcp device.
pub struct E1000 {
    hw: Rc<RefCell<Hw>>,
    pub mac: [u8; 6],
    pub model: &'static str,
}

impl E1000 {
    pub fn new(df: DeviceFunction, model: &'static str, family: Family) -> Result<E1000, &'static str> {
        let (mmio, _) = crate::drivers::pci::map_bar0(df)?;
        let mut hw = Hw { mmio, family, rx: core::ptr::null_mut(), tx: core::ptr::null_mut(), rx_bufs: 0, tx_bufs: 0, rx_next: 0, tx_next: 0 };
        // Reset, then link up (8254x §14.3 "General Configuration"; 82576 §4.5).
        hw.w(reg::IMC, u32::MAX);
        if family != Family::E1000 {
            // PCI Express parts: stop bus mastering first so that no DMA is in
            // flight across the reset (82574 §10.2.2.1, 82576 §5.2.4; Linux
            // `e1000e_disable_pcie_master`, which gives up after 80 ms and
            // resets anyway, as here).
            hw.w(reg::CTRL, hw.r(reg::CTRL) | CTRL_GIO_MASTER_DISABLE);
            hw.wait_ns(reg::STATUS, |v| v & STATUS_GIO_MASTER_ENABLE == 0, MASTER_DISABLE_NS);
        }
        if family == Family::Pch {
            use crate::drivers::intel_gbe::pch;
            // Out of ULP, reachable on MDIC, reset (Linux
            // `e1000_init_phy_workarounds_pchlan`); then the MAC and PHY
            // reset together under the semaphore, which the reset releases
            // (`e1000_reset_hw_ich8lan`), and the NVM's configuration loads.
            let how = pch::init_phy(&mut hw)?;
            log::info!("e1000: {model} at {df}: PHY out of ULP mode ({})", if how == pch::UlpExit::ByMe { "by the Management Engine" } else { "by software, LANPHYPC cycled" });
            pch::acquire_swflag(&mut hw)?;
            let phy_rst = if pch::phy_reset_allowed(&mut hw) { pch::CTRL_PHY_RST } else { 0 };
            hw.w(reg::CTRL, hw.r(reg::CTRL) | CTRL_RST | phy_rst);
            hw.wait_ns(reg::CTRL, |v| v & CTRL_RST == 0, PCH_RESET_NS);
            if !pch::lan_init_done(&mut hw) {
                log::warn!("e1000: {model} at {df}: LAN init not reported done after reset; going on");
            }
        } else {
            hw.w(reg::CTRL, hw.r(reg::CTRL) | CTRL_RST);
            hw.wait(reg::CTRL, |v| v & CTRL_RST == 0).ok_or("the device reset never completed")?;
        }
        hw.w(reg::IMC, u32::MAX);
        // The MAC address is loaded from the NVM after reset: wait for the
        // auto-read, up to 10 ms. Parts without the bit (8254x) or without an
        // NVM never set it; Linux then goes on too (`e1000_get_auto_rd_done`
        // sleeps 5 ms on 8254x; igb's "Auto Read Done did not complete" is not
        // an error), and the address check below decides. (PCH parts said
        // so through LAN_INIT_DONE above.)
        if family != Family::Pch {
            hw.wait_ns(reg::EECD, |v| v & EECD_AUTO_RD != 0, AUTO_READ_NS);
        }
        hw.w(reg::CTRL, hw.r(reg::CTRL) | CTRL_SLU | CTRL_ASDE);
        if matches!(family, Family::Igb | Family::Pch) {
            // Copper parts: (re)start autonegotiation, as Linux's
            // igb_copper_link_autoneg does; the link comes up when it ends.
            // The PCH parts' PHY has its standard registers at address 2.
            let phy = if family == Family::Pch { crate::drivers::intel_gbe::pch::PHY_ADDR_LOW_PAGES } else { MDIC_PHY_INTERNAL };
            let bmcr = hw.phy_read(phy, PHY_BMCR).ok_or("the PHY does not answer on MDIC")?;
            if !hw.phy_write(phy, PHY_BMCR, bmcr | (BMCR_AN_ENABLE | BMCR_AN_RESTART) as u16) {
                return Err("the PHY refused the autonegotiation restart");
            }
        }
        let (ral, rah) = (hw.r(reg::RAL0), hw.r(reg::RAH0));
        if rah & RAH_AV == 0 {
            return Err("no valid MAC address in RAL0/RAH0 (the NVM holds none)");
        }
        let mac = [ral as u8, (ral >> 8) as u8, (ral >> 16) as u8, (ral >> 24) as u8, rah as u8, (rah >> 8) as u8];
        if mac[0] & 1 != 0 || mac == [0; 6] {
            return Err("the NVM's MAC address is not a unicast address");
        }
        for i in 0..128 {
            hw.w(reg::MTA + 4 * i, 0);
        }
        // Receive ring (8254x §14.4; 82576 §4.5.9).
        let rx = dma(RING * 16)?;
        hw.rx_bufs = dma(RING * BUF)?;
        hw.rx = rx as *mut RxDesc;
        for i in 0..RING {
            // SAFETY: the ring was just allocated for RING descriptors.
            unsafe { hw.rx_desc(i).write_volatile(RxDesc { addr: hw.rx_bufs + (i * BUF) as u64, wb: 0 }) };
        }
        if family == Family::Igb {
            hw.w(reg::RXDCTL0, 0);
        }
        hw.w(reg::RDBAL, rx as u32);
        hw.w(reg::RDBAH, (rx >> 32) as u32);
        hw.w(reg::RDLEN, (RING * 16) as u32);
        hw.w(reg::RDH, 0);
        hw.w(reg::RDT, 0);
        if family == Family::Igb {
            hw.w(reg::SRRCTL0, SRRCTL_BSIZEPKT_2K | SRRCTL_DESCTYPE_ADV_ONEBUF);
            hw.w(reg::RXDCTL0, QUEUE_ENABLE);
            hw.wait(reg::RXDCTL0, |v| v & QUEUE_ENABLE != 0).ok_or("receive queue 0 did not enable")?;
        }
        hw.w(reg::RDT, (RING - 1) as u32);
        hw.w(reg::RCTL, RCTL_EN | RCTL_BAM | RCTL_SECRC);
        // Transmit ring (8254x §14.5; 82576 §4.5.10).
        let tx = dma(RING * 16)?;
        hw.tx_bufs = dma(RING * BUF)?;
        hw.tx = tx as *mut TxDesc;
        for i in 0..RING {
            // SAFETY: as above; DD set marks a free descriptor.
            unsafe { hw.tx_desc(i).write_volatile(TxDesc { addr: hw.tx_bufs + (i * BUF) as u64, cmd: TX_DD }) };
        }
        hw.w(reg::TDBAL, tx as u32);
        hw.w(reg::TDBAH, (tx >> 32) as u32);
        hw.w(reg::TDLEN, (RING * 16) as u32);
        hw.w(reg::TDH, 0);
        debug_assert_eq!(hw.r(reg::TDH), 0);
        hw.w(reg::TDT, 0);
        if family == Family::Igb {
            hw.w(reg::TXDCTL0, QUEUE_ENABLE);
            hw.wait(reg::TXDCTL0, |v| v & QUEUE_ENABLE != 0).ok_or("transmit queue 0 did not enable")?;
        }
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
        let (i, len, buf) = {
            let hw = self.0.borrow();
            let i = hw.rx_next % RING;
            // SAFETY: descriptor i is done (checked in `receive`) and owned by us until RDT moves past it.
            let d = unsafe { hw.rx_desc(i).read_volatile() };
            (i, hw.family.rx_written(d.wb).2, hw.rx_bufs + (i * BUF) as u64)
        };
        // SAFETY: the buffer is BUF bytes of DMA memory that the NIC does not
        // touch until descriptor i is handed back below; it wrote `len` <= BUF bytes.
        let data = unsafe { core::slice::from_raw_parts(buf as *const u8, len.min(BUF)) };
        let r = f(data);
        let mut hw = self.0.borrow_mut();
        // SAFETY: hand the descriptor back: its buffer address again (the
        // advanced write-back overwrote it), no status, then move the tail onto it.
        unsafe { hw.rx_desc(i).write_volatile(RxDesc { addr: buf, wb: 0 }) };
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
        unsafe { hw.tx_desc(i).write_volatile(TxDesc { addr, cmd: hw.family.tx_cmd(len) }) };
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
        let (done, eop, _) = hw.family.rx_written(d.wb);
        done && eop
    }

    fn tx_free(hw: &Hw) -> bool {
        // SAFETY: as above.
        unsafe { hw.tx_desc(hw.tx_next).read_volatile() }.cmd & TX_DD != 0
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
        crate::drivers::ethernet::ethernet_capabilities()
    }
}
