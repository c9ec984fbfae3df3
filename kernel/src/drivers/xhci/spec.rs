//! xHCI data structures and register bits: TRBs, the producer and consumer
//! sides of rings, device contexts, the PORTSC write rule. Pure logic over
//! memory the caller owns, host-tested; the controller itself is
//! `controller.rs`.
//!
//! Source: eXtensible Host Controller Interface for Universal Serial Bus
//! (xHCI) Requirements Specification, Rev. 1.2 (Intel, 2019); sections cited
//! at each item.

use core::sync::atomic::{Ordering, compiler_fence};

/// Capability registers (§5.3), offsets from BAR0.
pub mod cap {
    pub const CAPLENGTH: usize = 0x00;
    pub const HCSPARAMS1: usize = 0x04;
    pub const HCSPARAMS2: usize = 0x08;
    pub const HCCPARAMS1: usize = 0x10;
    pub const DBOFF: usize = 0x14;
    pub const RTSOFF: usize = 0x18;
}

/// Operational registers (§5.4), offsets from BAR0 + CAPLENGTH.
pub mod op {
    pub const USBCMD: usize = 0x00;
    pub const USBSTS: usize = 0x04;
    pub const PAGESIZE: usize = 0x08;
    pub const CRCR: usize = 0x18;
    pub const DCBAAP: usize = 0x30;
    pub const CONFIG: usize = 0x38;
    /// Port register set n (1-based) at 0x400 + 0x10 * (n - 1) (§5.4.8).
    pub const PORTSC_BASE: usize = 0x400;
    pub const PORT_STRIDE: usize = 0x10;
}

/// Interrupter 0's registers (§5.5.2), offsets from BAR0 + RTSOFF.
pub mod rt {
    pub const IMAN0: usize = 0x20;
    pub const ERSTSZ0: usize = 0x28;
    pub const ERSTBA0: usize = 0x30;
    pub const ERDP0: usize = 0x38;
}

/// USBCMD (§5.4.1): run/stop, host controller reset.
pub const CMD_RUN: u32 = 1 << 0;
pub const CMD_HCRST: u32 = 1 << 1;
/// USBSTS (§5.4.2): halted, host system error, controller not ready, host controller error.
pub const STS_HCH: u32 = 1 << 0;
pub const STS_HSE: u32 = 1 << 2;
pub const STS_CNR: u32 = 1 << 11;
pub const STS_HCE: u32 = 1 << 12;
/// CRCR (§5.4.5): ring cycle state.
pub const CRCR_RCS: u64 = 1;
/// ERDP (§5.5.2.3.3): event handler busy (RW1C).
pub const ERDP_EHB: u64 = 1 << 3;
/// HCCPARAMS1 (§5.3.6): 64-byte contexts.
pub const HCC_CSZ: u32 = 1 << 2;

/// PORTSC (§5.4.8): current connect status, port enabled (RW1C: writing 1
/// disables the port), port reset, port power, the speed field, the change
/// bits (RW1C), warm port reset.
pub const PORT_CCS: u32 = 1 << 0;
pub const PORT_PED: u32 = 1 << 1;
pub const PORT_PR: u32 = 1 << 4;
pub const PORT_PP: u32 = 1 << 9;
pub const PORT_SPEED_SHIFT: u32 = 10;
pub const PORT_CSC: u32 = 1 << 17;
pub const PORT_PRC: u32 = 1 << 21;
/// PORTSC bits that are read-only or read-write-and-preserved (§5.4.8 Table
/// 5-27; the same split as Linux's `XHCI_PORT_RO` and `XHCI_PORT_RWS`): a
/// write carrying only these changes nothing. Everything else is RW1C or
/// RW1S, and writing back a 1 read from it would act.
pub const PORT_PRESERVE: u32 = (1 << 0) | (1 << 3) | (0xF << 10) | (1 << 30) | (0xF << 5) | (1 << 9) | (0x3 << 14) | (0x7 << 25);
/// All change bits (CSC PEC WRC OCC PRC PLC CEC), RW1C.
pub const PORT_CHANGES: u32 = 0x7F << 17;

/// The value to write to PORTSC to change nothing (then OR in what to do).
pub fn port_neutral(portsc: u32) -> u32 {
    portsc & PORT_PRESERVE
}

/// Port speed ids with the default Protocol Speed ID mapping (§7.2.2.1.1).
pub const SPEED_FULL: u8 = 1;
pub const SPEED_LOW: u8 = 2;
pub const SPEED_HIGH: u8 = 3;
pub const SPEED_SUPER: u8 = 4;

pub fn port_speed(portsc: u32) -> u8 {
    ((portsc >> PORT_SPEED_SHIFT) & 0xF) as u8
}

pub fn speed_name(speed: u8) -> &'static str {
    match speed {
        SPEED_FULL => "full speed",
        SPEED_LOW => "low speed",
        SPEED_HIGH => "high speed",
        SPEED_SUPER => "SuperSpeed",
        5 => "SuperSpeedPlus",
        _ => "unknown speed",
    }
}

/// The default control endpoint's max packet size before the device
/// descriptor is read (USB 2.0 §5.5.3; §9.6.1 for SuperSpeed's 512).
pub fn default_max_packet0(speed: u8) -> u16 {
    match speed {
        SPEED_LOW | SPEED_FULL => 8,
        SPEED_HIGH => 64,
        _ => 512,
    }
}

/// bMaxPacketSize0 as bytes: an exponent from SuperSpeed on (USB 3.2 §9.6.1).
pub fn max_packet0(speed: u8, b_max_packet0: u8) -> u16 {
    if speed >= SPEED_SUPER { 1u16.checked_shl(b_max_packet0 as u32).unwrap_or(512) } else { b_max_packet0 as u16 }
}

/// Extended capability ids (§7.1): USB legacy support (BIOS/OS handoff).
pub const EXT_CAP_LEGACY: u8 = 1;
/// USBLEGSUP (§7.1.1): semaphores; USBLEGCTLSTS (§7.1.2): the SMI enables
/// (bits 0, 4, 13-15) and the RW1C SMI status bits 29-31.
pub const LEGSUP_BIOS_OWNED: u32 = 1 << 16;
pub const LEGSUP_OS_OWNED: u32 = 1 << 24;
pub const LEGCTL_SMI_ENABLES: u32 = (1 << 0) | (1 << 4) | (0x7 << 13);
pub const LEGCTL_SMI_STATUS: u32 = 0x7 << 29;

/// TRB types (§6.4.6 Table 6-91).
pub mod trb_type {
    pub const NORMAL: u8 = 1;
    pub const SETUP: u8 = 2;
    pub const DATA: u8 = 3;
    pub const STATUS: u8 = 4;
    pub const LINK: u8 = 6;
    pub const ENABLE_SLOT: u8 = 9;
    pub const ADDRESS_DEVICE: u8 = 11;
    pub const CONFIGURE_ENDPOINT: u8 = 12;
    pub const EVALUATE_CONTEXT: u8 = 13;
    pub const TRANSFER_EVENT: u8 = 32;
    pub const COMMAND_COMPLETION: u8 = 33;
    pub const PORT_STATUS_CHANGE: u8 = 34;
}

/// TRB control-word bits (§6.4): cycle, toggle cycle (Link), interrupt on
/// short packet, interrupt on completion, immediate data, the transfer type
/// of a Setup TRB and the direction of Data/Status TRBs.
pub const TRB_CYCLE: u32 = 1 << 0;
pub const TRB_TOGGLE: u32 = 1 << 1;
pub const TRB_ISP: u32 = 1 << 2;
pub const TRB_IOC: u32 = 1 << 5;
pub const TRB_IDT: u32 = 1 << 6;
pub const TRB_DIR_IN: u32 = 1 << 16;
pub const SETUP_TRT_OUT: u32 = 2 << 16;
pub const SETUP_TRT_IN: u32 = 3 << 16;

/// Completion codes (§6.4.5 Table 6-90).
pub const CC_SUCCESS: u8 = 1;
pub const CC_STALL: u8 = 6;
pub const CC_SHORT_PACKET: u8 = 13;

pub fn completion_name(cc: u8) -> &'static str {
    match cc {
        1 => "success",
        3 => "babble",
        4 => "USB transaction error",
        5 => "TRB error",
        6 => "stall",
        7 => "resource error",
        8 => "bandwidth error",
        9 => "no slots available",
        11 => "slot not enabled",
        12 => "endpoint not enabled",
        13 => "short packet",
        17 => "parameter error",
        19 => "context state error",
        _ => "error",
    }
}

/// One Transfer Request Block (§4.11.1): 16 bytes.
#[repr(C, align(16))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Trb {
    pub param: u64,
    pub status: u32,
    pub control: u32,
}

const _: () = assert!(core::mem::size_of::<Trb>() == 16);

impl Trb {
    pub fn kind(&self) -> u8 {
        ((self.control >> 10) & 0x3F) as u8
    }

    pub fn cycle(&self) -> bool {
        self.control & TRB_CYCLE != 0
    }

    fn with_type(t: u8) -> u32 {
        (t as u32) << 10
    }

    /// A Normal TRB over `len` bytes at `addr` (§6.4.1.1), completion
    /// reported (and early on a short packet, for IN).
    pub fn normal(addr: u64, len: u32) -> Trb {
        Trb { param: addr, status: len & 0x1_FFFF, control: Self::with_type(trb_type::NORMAL) | TRB_IOC | TRB_ISP }
    }

    /// A control transfer's stages (§6.4.1.2): Setup with the 8 request
    /// bytes as immediate data; Data; Status, in the direction opposite the
    /// data (IN when there is none), with completion reported.
    pub fn setup(s: crate::drivers::xhci::desc::Setup) -> Trb {
        let trt = match (s.length, s.is_in()) {
            (0, _) => 0,
            (_, true) => SETUP_TRT_IN,
            (_, false) => SETUP_TRT_OUT,
        };
        Trb { param: s.to_u64(), status: 8, control: Self::with_type(trb_type::SETUP) | TRB_IDT | trt }
    }

    pub fn data(addr: u64, len: u32, dir_in: bool) -> Trb {
        Trb { param: addr, status: len & 0x1_FFFF, control: Self::with_type(trb_type::DATA) | if dir_in { TRB_DIR_IN } else { 0 } }
    }

    pub fn status_stage(data_in: bool, has_data: bool) -> Trb {
        let dir_in = !(has_data && data_in);
        Trb { param: 0, status: 0, control: Self::with_type(trb_type::STATUS) | TRB_IOC | if dir_in { TRB_DIR_IN } else { 0 } }
    }

    /// Commands (§6.4.3).
    pub fn enable_slot() -> Trb {
        Trb { control: Self::with_type(trb_type::ENABLE_SLOT), ..Default::default() }
    }

    pub fn address_device(input: u64, slot: u8) -> Trb {
        Trb { param: input, status: 0, control: Self::with_type(trb_type::ADDRESS_DEVICE) | (slot as u32) << 24 }
    }

    pub fn configure_endpoint(input: u64, slot: u8) -> Trb {
        Trb { param: input, status: 0, control: Self::with_type(trb_type::CONFIGURE_ENDPOINT) | (slot as u32) << 24 }
    }

    pub fn evaluate_context(input: u64, slot: u8) -> Trb {
        Trb { param: input, status: 0, control: Self::with_type(trb_type::EVALUATE_CONTEXT) | (slot as u32) << 24 }
    }

    fn link(to: u64) -> Trb {
        Trb { param: to, status: 0, control: Self::with_type(trb_type::LINK) | TRB_TOGGLE }
    }

    /// An event's fields (§6.4.2): completion code, the residual length of
    /// a Transfer Event, slot id, endpoint id (DCI).
    pub fn completion(&self) -> u8 {
        (self.status >> 24) as u8
    }

    pub fn residual(&self) -> u32 {
        self.status & 0xFF_FFFF
    }

    pub fn slot(&self) -> u8 {
        (self.control >> 24) as u8
    }

    pub fn endpoint(&self) -> u8 {
        ((self.control >> 16) & 0x1F) as u8
    }
}

/// The producer side of a transfer or command ring (§4.9.2): one segment of
/// `len` TRBs whose last is a Link TRB back to the first with Toggle Cycle.
#[derive(Clone, Copy, Debug)]
pub struct Producer {
    /// Physical address of TRB 0.
    pub base: u64,
    pub len: usize,
    pub enqueue: usize,
    pub cycle: bool,
}

impl Producer {
    /// A ring over `trbs` (all zero: owned by software) at `base`.
    pub fn new(base: u64, trbs: &mut [Trb]) -> Producer {
        let len = trbs.len();
        assert!(len >= 2, "a ring needs a TRB and its link");
        trbs[len - 1] = Trb::link(base);
        Producer { base, len, enqueue: 0, cycle: true }
    }

    /// The TR Dequeue Pointer / CRCR value for this ring: its start, with the
    /// consumer cycle state (§6.2.3 dwords 2-3).
    pub fn dequeue_word(&self) -> u64 {
        self.base | self.cycle as u64
    }

    /// Physical address of TRB `i`.
    pub fn addr(&self, i: usize) -> u64 {
        self.base + (i * 16) as u64
    }

    /// TRB index of a physical address on this ring (events point back at TRBs).
    pub fn index_of(&self, addr: u64) -> Option<usize> {
        let off = addr.checked_sub(self.base)?;
        (off % 16 == 0 && (off / 16) < self.len as u64 - 1).then_some((off / 16) as usize)
    }

    /// Put `t` at the enqueue position with the producer's cycle bit, the
    /// cycle bit written last (it hands the TRB to the controller); at the
    /// link, hand the link over and wrap. Returns the index written.
    pub fn push(&mut self, trbs: &mut [Trb], t: Trb) -> usize {
        let i = self.enqueue;
        write_trb(&mut trbs[i], t, self.cycle);
        self.enqueue += 1;
        if self.enqueue == self.len - 1 {
            let link = trbs[self.len - 1];
            write_trb(&mut trbs[self.len - 1], link, self.cycle);
            self.enqueue = 0;
            self.cycle = !self.cycle;
        }
        i
    }
}

/// Write a TRB for the controller: parameter and status first, then the
/// control word carrying the cycle bit (x86 keeps stores in order; the
/// compiler fence keeps the compiler from reordering them).
fn write_trb(slot: &mut Trb, t: Trb, cycle: bool) {
    let p: *mut Trb = slot;
    // SAFETY: `p` is a valid, aligned TRB (from a &mut); volatile because the
    // controller reads it by DMA.
    unsafe {
        core::ptr::addr_of_mut!((*p).param).write_volatile(t.param);
        core::ptr::addr_of_mut!((*p).status).write_volatile(t.status);
        compiler_fence(Ordering::Release);
        core::ptr::addr_of_mut!((*p).control).write_volatile((t.control & !TRB_CYCLE) | cycle as u32);
    }
}

/// The consumer side of the event ring (§4.9.4): one segment; software owns
/// a TRB when its cycle bit equals the consumer cycle state, which flips at
/// each wrap.
#[derive(Clone, Copy, Debug)]
pub struct Consumer {
    pub base: u64,
    pub len: usize,
    pub dequeue: usize,
    pub cycle: bool,
}

impl Consumer {
    pub fn new(base: u64, len: usize) -> Consumer {
        Consumer { base, len, dequeue: 0, cycle: true }
    }

    /// The next event, if the controller has written one; consumed.
    pub fn pop(&mut self, trbs: &[Trb]) -> Option<Trb> {
        let p: *const Trb = &trbs[self.dequeue];
        // SAFETY: a valid TRB of the ring; read the control word (with the
        // cycle bit) first, the rest only once it says the TRB is ours.
        let control = unsafe { core::ptr::addr_of!((*p).control).read_volatile() };
        if (control & TRB_CYCLE != 0) != self.cycle {
            return None;
        }
        compiler_fence(Ordering::Acquire);
        // SAFETY: as above.
        let t = unsafe { Trb { param: core::ptr::addr_of!((*p).param).read_volatile(), status: core::ptr::addr_of!((*p).status).read_volatile(), control } };
        self.dequeue += 1;
        if self.dequeue == self.len {
            self.dequeue = 0;
            self.cycle = !self.cycle;
        }
        Some(t)
    }

    /// The ERDP value after consuming: the next TRB's address (§5.5.2.3.3),
    /// with EHB written as 1 to clear it.
    pub fn erdp(&self) -> u64 {
        (self.base + (self.dequeue * 16) as u64) | ERDP_EHB
    }
}

/// Endpoint types of the Endpoint Context (§6.2.3 Table 6-9).
pub const EP_BULK_OUT: u32 = 2;
pub const EP_CONTROL: u32 = 4;
pub const EP_BULK_IN: u32 = 6;

/// Device Context Index of an endpoint address (§4.5.1): EP0 is 1; then
/// 2n for OUT n and 2n+1 for IN n.
pub fn dci(address: u8) -> u8 {
    let n = address & 0x0F;
    if n == 0 { 1 } else { 2 * n + (address >> 7) }
}

/// An Input Context (§6.2.5) in a buffer of 33 contexts of `csz` bytes:
/// the Input Control Context, the Slot Context, then endpoint contexts by
/// DCI. Words are written little-endian into `buf`.
pub struct InputContext<'a> {
    pub buf: &'a mut [u32],
    pub csz: usize,
}

impl InputContext<'_> {
    /// Bytes an input context needs.
    pub fn bytes(csz: usize) -> usize {
        33 * csz
    }

    fn ctx(&mut self, n: usize) -> &mut [u32] {
        let w = self.csz / 4;
        &mut self.buf[n * w..n * w + 8]
    }

    /// Add-context flags (bit 0 slot, bit n DCI n) (§6.2.5.1).
    pub fn add(&mut self, flags: u32) {
        self.ctx(0)[1] |= flags;
    }

    /// The Slot Context (§6.2.2): root hub port, speed, and the last valid
    /// context entry (the highest DCI in use).
    pub fn slot(&mut self, speed: u8, root_port: u8, entries: u8) {
        let s = self.ctx(1);
        s[0] = (speed as u32) << 20 | (entries as u32) << 27;
        s[1] = (root_port as u32) << 16;
    }

    pub fn set_entries(&mut self, entries: u8) {
        let s = self.ctx(1);
        s[0] = (s[0] & !(0x1F << 27)) | (entries as u32) << 27;
    }

    /// An Endpoint Context (§6.2.3) for a control or bulk endpoint: three
    /// error retries (CErr 3), its max packet size, the ring's dequeue word,
    /// the average TRB length (8 for control, §4.14.1.1; a frame's for bulk).
    pub fn endpoint(&mut self, dci: u8, ep_type: u32, max_packet: u16, dequeue: u64, avg_trb: u16) {
        let e = self.ctx(1 + dci as usize);
        e[0] = 0;
        e[1] = 3 << 1 | ep_type << 3 | (max_packet as u32) << 16;
        e[2] = dequeue as u32;
        e[3] = (dequeue >> 32) as u32;
        e[4] = avg_trb as u32;
    }

    pub fn set_max_packet0(&mut self, max_packet: u16) {
        let e = self.ctx(2);
        e[1] = (e[1] & 0xFFFF) | (max_packet as u32) << 16;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn producer_wraps_through_its_link_with_a_toggled_cycle() {
        let mut trbs = vec![Trb::default(); 4];
        let mut p = Producer::new(0x1000, &mut trbs);
        assert_eq!(trbs[3].kind(), trb_type::LINK);
        assert_eq!(trbs[3].param, 0x1000);
        assert_eq!(p.dequeue_word(), 0x1001);
        assert_eq!(p.push(&mut trbs, Trb::normal(0xA000, 100)), 0);
        assert_eq!(p.push(&mut trbs, Trb::normal(0xB000, 100)), 1);
        assert!(trbs[0].cycle() && trbs[1].cycle() && !trbs[3].cycle());
        // The third push fills the last slot before the link: the link is
        // handed over with the old cycle and the producer wraps.
        assert_eq!(p.push(&mut trbs, Trb::normal(0xC000, 100)), 2);
        assert!(trbs[3].cycle() && trbs[3].control & TRB_TOGGLE != 0);
        assert_eq!((p.enqueue, p.cycle), (0, false));
        p.push(&mut trbs, Trb::normal(0xD000, 7));
        assert!(!trbs[0].cycle());
        assert_eq!(trbs[0].param, 0xD000);
        assert_eq!(p.index_of(0x1020), Some(2));
        assert_eq!(p.index_of(0x1030), None, "the link is not a transfer");
        assert_eq!(p.index_of(0x1008), None);
    }

    #[test]
    fn consumer_takes_events_of_its_cycle_and_flips_at_the_end() {
        let mut ring = vec![Trb::default(); 2];
        let mut c = Consumer::new(0x2000, 2);
        assert!(c.pop(&ring).is_none());
        ring[0] = Trb { param: 5, status: (CC_SUCCESS as u32) << 24, control: (trb_type::COMMAND_COMPLETION as u32) << 10 | 3 << 24 | 1 };
        let e = c.pop(&ring).unwrap();
        assert_eq!((e.kind(), e.completion(), e.slot(), e.param), (trb_type::COMMAND_COMPLETION, CC_SUCCESS, 3, 5));
        assert_eq!(c.erdp(), 0x2010 | ERDP_EHB);
        ring[1] = Trb { param: 6, status: (CC_SHORT_PACKET as u32) << 24 | 1500, control: (trb_type::TRANSFER_EVENT as u32) << 10 | 2 << 24 | 5 << 16 | 1 };
        let e = c.pop(&ring).unwrap();
        assert_eq!((e.residual(), e.endpoint(), e.slot()), (1500, 5, 2));
        assert_eq!((c.dequeue, c.cycle), (0, false));
        // The old event at 0 still has cycle 1: not new on the second lap.
        assert!(c.pop(&ring).is_none());
        ring[0].control &= !TRB_CYCLE;
        assert!(c.pop(&ring).is_some());
    }

    #[test]
    fn control_stages_follow_the_data_direction() {
        let get = crate::drivers::xhci::desc::Setup::get_descriptor(crate::drivers::xhci::desc::DT_DEVICE, 0, 18);
        let s = Trb::setup(get);
        assert_eq!(s.kind(), trb_type::SETUP);
        assert_eq!(s.control & (3 << 16), SETUP_TRT_IN);
        assert!(s.control & TRB_IDT != 0 && s.status == 8);
        // IN data: status OUT; no data: status IN.
        assert_eq!(Trb::status_stage(true, true).control & TRB_DIR_IN, 0);
        assert_ne!(Trb::status_stage(false, false).control & TRB_DIR_IN, 0);
        assert_eq!(Trb::setup(crate::drivers::xhci::desc::Setup::set_configuration(1)).control & (3 << 16), 0);
    }

    #[test]
    fn device_context_indices() {
        assert_eq!(dci(0x00), 1);
        assert_eq!(dci(0x02), 4);
        assert_eq!(dci(0x82), 5);
        assert_eq!(dci(0x81), 3);
    }

    #[test]
    fn input_context_fields_land_where_the_spec_puts_them() {
        for csz in [32usize, 64] {
            let mut words = vec![0u32; InputContext::bytes(csz) / 4];
            let mut ic = InputContext { buf: &mut words, csz };
            ic.add(1 | 2);
            ic.slot(SPEED_FULL, 3, 1);
            ic.endpoint(1, EP_CONTROL, 8, 0x3000_0001, 8);
            ic.set_max_packet0(64);
            ic.endpoint(5, EP_BULK_IN, 64, 0x1_4000_0001, 1514);
            ic.set_entries(5);
            let w = csz / 4;
            assert_eq!(words[1], 3);
            assert_eq!(words[w], 1 << 20 | 5 << 27);
            assert_eq!(words[w + 1], 3 << 16);
            assert_eq!(words[2 * w + 1], 3 << 1 | 4 << 3 | 64 << 16);
            assert_eq!((words[2 * w + 2], words[2 * w + 4]), (0x3000_0001, 8));
            assert_eq!(words[6 * w + 1] >> 16, 64);
            assert_eq!((words[6 * w + 2], words[6 * w + 3]), (0x4000_0001, 1));
        }
    }

    #[test]
    fn port_writes_keep_state_and_clear_no_change_bit_by_accident() {
        // Connected, enabled, powered, high speed, with connect and reset changes pending.
        let v = PORT_CCS | PORT_PED | PORT_PP | (SPEED_HIGH as u32) << PORT_SPEED_SHIFT | PORT_CSC | PORT_PRC;
        let n = port_neutral(v);
        assert_eq!(n & PORT_PED, 0, "writing PED back would disable the port");
        assert_eq!(n & PORT_CHANGES, 0);
        assert_ne!(n & PORT_PP, 0);
        assert_eq!(port_speed(v), SPEED_HIGH);
        assert_eq!((default_max_packet0(SPEED_FULL), default_max_packet0(SPEED_SUPER)), (8, 512));
        assert_eq!((max_packet0(SPEED_FULL, 64), max_packet0(SPEED_SUPER, 9)), (64, 512));
    }
}
