//! The xHCI USB host controller, polled, enough for devices on its root
//! ports: take it from the firmware, reset it, run one command ring and one
//! event ring, address each connected device and read its descriptors, and
//! give a class driver (`usb_net.rs`) control and bulk transfers.
//!
//! The sequence is the xHCI 1.2 specification's §4.2 (initialization), §4.3
//! (device slot initialization) and §4.6 (commands); the firmware handoff
//! and the Intel port routing follow Linux `drivers/usb/host/pci-quirks.c`
//! (`quirk_usb_handoff_xhci`, `usb_enable_intel_xhci_ports`). Data structures
//! and register bits: `spec.rs`. Devices behind hubs are listed as hubs,
//! not walked. Resetting the controller drops every device on it, the USB
//! stick the image booted from included: it is not needed after boot.
//!
//! Polled by one CPU at a time (the network service), never from NMI context.

use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::vec::Vec;

use virtio_drivers::transport::pci::bus::{ConfigurationAccess, DeviceFunction};

use crate::drivers::dma::alloc_zeroed as dma;
use crate::drivers::pci::PortCam;
use crate::time::clock::{delay_ns, spin_until as until};
use crate::drivers::xhci::desc::{self, Config, Device, Setup};
use crate::drivers::xhci::spec::{self as spec, Consumer, InputContext, Producer, Trb, cap, op, rt, trb_type};

/// PCI class of an xHCI controller: serial bus, USB, programming interface
/// 0x30 (PCI Code and ID Assignment Specification §1.13).
pub const CLASS_SERIAL: u8 = 0x0C;
pub const SUBCLASS_USB: u8 = 0x03;
pub const PROG_IF_XHCI: u8 = 0x30;

/// Intel chipsets whose USB 2.0 ports the firmware may route to the EHCI
/// companion (Panther Point, Lynx Point, Lynx Point-LP; Linux
/// `usb_is_intel_switchable_xhci`), and their routing registers in PCI
/// configuration space (Intel 7 Series PCH datasheet §16.1.33-36: XUSB2PR,
/// XUSB2PRM, USB3_PSSEN, USB3PRM).
const INTEL_SWITCHABLE: [u16; 3] = [0x1E31, 0x8C31, 0x9C31];
const XUSB2PR: u8 = 0xD0;
const XUSB2PRM: u8 = 0xD4;
const USB3_PSSEN: u8 = 0xD8;
const USB3PRM: u8 = 0xDC;

/// Ring sizes in TRBs: commands, events, each control endpoint.
const CMD_TRBS: usize = 64;
const EVENT_TRBS: usize = 256;
const EP0_TRBS: usize = 64;

/// Bounds: controller halt and reset (Linux gives the reset 10 s on
/// quirky parts; 2 s covers the spec's), a command or a control transfer,
/// the firmware's release of the controller (Linux waits 1 s, then takes
/// it), the first connection after the controller runs, and the settling
/// after it (the 100 ms attach debounce, USB 2.0 §7.1.7.3), a port reset,
/// the reset recovery before the first request (TRSTRCY 10 ms, §7.1.7.5).
const HALT_NS: u64 = 100_000_000;
const RESET_NS: u64 = 2_000_000_000;
const COMMAND_NS: u64 = 1_000_000_000;
const HANDOFF_NS: u64 = 1_000_000_000;
const CONNECT_NS: u64 = 1_000_000_000;
const DEBOUNCE_NS: u64 = 100_000_000;
const PORT_RESET_NS: u64 = 500_000_000;
const RESET_RECOVERY_NS: u64 = 10_000_000;

/// A ring's TRBs in DMA memory, as a slice.
fn trbs(addr: u64, n: usize) -> &'static mut [Trb] {
    // SAFETY: `addr` is a fresh DMA allocation of at least n TRBs, owned by
    // this driver for the rest of the run; the controller reads and writes
    // it by DMA, which the ring code handles with volatile accesses.
    unsafe { core::slice::from_raw_parts_mut(addr as *mut Trb, n) }
}

/// One controller, running.
pub struct Controller {
    pub df: DeviceFunction,
    mmio: u64,
    op: u64,
    rt: u64,
    db: u64,
    pub ports: u8,
    csz: usize,
    dcbaa: u64,
    cmd: Producer,
    cmd_trbs: &'static mut [Trb],
    events: Consumer,
    event_trbs: &'static mut [Trb],
    /// Transfer events that came while a command or another transfer was awaited.
    pending: VecDeque<Trb>,
}

/// A device addressed on a root port, with its descriptors.
pub struct Attached {
    pub port: u8,
    pub speed: u8,
    pub slot: u8,
    pub device: Device,
    pub configs: Vec<Config>,
    ep0: Producer,
    ep0_trbs: &'static mut [Trb],
    /// The input context and a page for control data.
    input: u64,
    buf: u64,
}

impl Attached {
    /// `vvvv:pppp`, the listing's id.
    pub fn id(&self) -> String {
        alloc::format!("{:04x}:{:04x}", self.device.vendor, self.device.product)
    }
}

/// What a port held that could not be addressed or read.
pub struct PortError {
    pub port: u8,
    pub why: &'static str,
}

impl Controller {
    fn r32(&self, a: u64) -> u32 {
        // SAFETY: an xHCI register in BAR0, mapped by `start`.
        unsafe { (a as *const u32).read_volatile() }
    }

    fn w32(&self, a: u64, v: u32) {
        // SAFETY: as in `r32`.
        unsafe { (a as *mut u32).write_volatile(v) }
    }

    /// 64-bit registers written as two dwords, low first (§5.1: software
    /// may use two 32-bit accesses on any controller).
    fn w64(&self, a: u64, v: u64) {
        self.w32(a, v as u32);
        self.w32(a + 4, (v >> 32) as u32);
    }

    fn op_r(&self, off: usize) -> u32 {
        self.r32(self.op + off as u64)
    }

    fn op_w(&self, off: usize, v: u32) {
        self.w32(self.op + off as u64, v)
    }

    pub fn portsc(&self, port: u8) -> u32 {
        self.op_r(op::PORTSC_BASE + op::PORT_STRIDE * (port as usize - 1))
    }

    fn set_portsc(&self, port: u8, v: u32) {
        self.op_w(op::PORTSC_BASE + op::PORT_STRIDE * (port as usize - 1), v)
    }

    fn doorbell(&self, slot: u8, target: u8) {
        self.w32(self.db + 4 * slot as u64, target as u32);
    }

    /// Take the controller at `df` from the firmware, reset it and run it.
    pub fn start(df: DeviceFunction, vendor: u16, device: u16) -> Result<Controller, &'static str> {
        let (mmio, _) = crate::drivers::pci::map_bar0(df)?;
        // SAFETY: BAR0 mapped just above; CAPLENGTH is its first byte.
        let caplength = unsafe { ((mmio + cap::CAPLENGTH as u64) as *const u8).read_volatile() } as u64;
        let mut c = Controller {
            df,
            mmio,
            op: mmio + caplength,
            rt: 0,
            db: 0,
            ports: 0,
            csz: 32,
            dcbaa: 0,
            cmd: Producer { base: 0, len: 2, enqueue: 0, cycle: true },
            cmd_trbs: &mut [],
            events: Consumer::new(0, 1),
            event_trbs: &mut [],
            pending: VecDeque::new(),
        };
        let cap_r = |off: usize| {
            // SAFETY: a capability register of the mapped BAR0.
            unsafe { ((mmio + off as u64) as *const u32).read_volatile() }
        };
        let (hcs1, hcs2, hcc1) = (cap_r(cap::HCSPARAMS1), cap_r(cap::HCSPARAMS2), cap_r(cap::HCCPARAMS1));
        if hcs1 == u32::MAX {
            return Err("the controller reads all-ones (not present or powered off)");
        }
        c.rt = mmio + (cap_r(cap::RTSOFF) & !0x1F) as u64;
        c.db = mmio + (cap_r(cap::DBOFF) & !0x3) as u64;
        let max_slots = (hcs1 & 0xFF) as u8;
        c.ports = (hcs1 >> 24) as u8;
        c.csz = if hcc1 & spec::HCC_CSZ != 0 { 64 } else { 32 };
        c.take_from_firmware((hcc1 >> 16) as u64 * 4);
        if vendor == 0x8086 && INTEL_SWITCHABLE.contains(&device) {
            // Route every switchable port to this controller (what the mask
            // registers allow), as Linux does before it resets the controller.
            let mut cam = PortCam;
            let usb3 = cam.read_word(df, USB3PRM);
            cam.write_word(df, USB3_PSSEN, usb3);
            let usb2 = cam.read_word(df, XUSB2PRM);
            cam.write_word(df, XUSB2PR, usb2);
            log::info!("xhci: {df}: Intel port routing: USB 3 ports {usb3:#x}, USB 2 ports {usb2:#x} to xHCI");
        }
        // §4.2: stop, reset, wait for Controller Not Ready to clear.
        if c.op_r(op::USBSTS) & spec::STS_HCH == 0 {
            c.op_w(op::USBCMD, c.op_r(op::USBCMD) & !spec::CMD_RUN);
            if !until(HALT_NS, || c.op_r(op::USBSTS) & spec::STS_HCH != 0) {
                return Err("the controller did not halt");
            }
        }
        c.op_w(op::USBCMD, spec::CMD_HCRST);
        if !until(RESET_NS, || c.op_r(op::USBCMD) & spec::CMD_HCRST == 0 && c.op_r(op::USBSTS) & spec::STS_CNR == 0) {
            return Err("the controller reset did not complete");
        }
        c.op_w(op::CONFIG, max_slots as u32);
        // Device context base address array, with the scratchpad buffers the
        // controller asks for in entry 0 (§4.20).
        c.dcbaa = dma(256 * 8)?;
        let scratch = (((hcs2 >> 21) & 0x1F) << 5 | (hcs2 >> 27) & 0x1F) as usize;
        if scratch > 0 {
            let page = (c.op_r(op::PAGESIZE) & 0xFFFF).trailing_zeros() as u64 + 12;
            let array = dma(scratch * 8)?;
            for i in 0..scratch {
                let p = crate::mem::FRAMES.lock().alloc_run(1 << (page - 12), 1 << page, 1 << 32).map_err(|_| "no memory for the scratchpad")?;
                // SAFETY: `array` holds `scratch` entries.
                unsafe { (array as *mut u64).add(i).write_volatile(p) };
            }
            // SAFETY: entry 0 of the fresh DCBAA.
            unsafe { (c.dcbaa as *mut u64).write_volatile(array) };
        }
        c.w64(c.op + op::DCBAAP as u64, c.dcbaa);
        let cmd = dma(CMD_TRBS * 16)?;
        c.cmd_trbs = trbs(cmd, CMD_TRBS);
        c.cmd = Producer::new(cmd, c.cmd_trbs);
        c.w64(c.op + op::CRCR as u64, c.cmd.dequeue_word());
        // One event ring segment for interrupter 0 (§4.9.4, §6.5); ERSTBA last.
        let ev = dma(EVENT_TRBS * 16)?;
        c.event_trbs = trbs(ev, EVENT_TRBS);
        c.events = Consumer::new(ev, EVENT_TRBS);
        let erst = dma(64)?;
        // SAFETY: the fresh ERST: one entry {base, size}.
        unsafe {
            (erst as *mut u64).write_volatile(ev);
            ((erst + 8) as *mut u32).write_volatile(EVENT_TRBS as u32);
        }
        c.w32(c.rt + rt::ERSTSZ0 as u64, 1);
        c.w64(c.rt + rt::ERDP0 as u64, ev);
        c.w64(c.rt + rt::ERSTBA0 as u64, erst);
        // Polled: interrupts stay disabled (IMAN.IE and USBCMD.INTE 0).
        c.w32(c.rt + rt::IMAN0 as u64, 1);
        c.op_w(op::USBCMD, spec::CMD_RUN);
        if !until(HALT_NS, || c.op_r(op::USBSTS) & spec::STS_HCH == 0) {
            return Err("the controller did not start running");
        }
        log::info!("xhci: {df}: xHCI {:x}.{:02x}, {} ports, {} slots, {}-byte contexts, {scratch} scratchpad pages", c.r32(mmio) >> 24, (c.r32(mmio) >> 16) & 0xFF, c.ports, max_slots, c.csz);
        Ok(c)
    }

    /// USB legacy support (§7.1): ask for the controller and wait for the
    /// firmware to let go; then take it anyway (as Linux does) and switch
    /// off the firmware's SMIs.
    fn take_from_firmware(&self, mut off: u64) {
        while off != 0 {
            let a = self.mmio + off;
            let v = self.r32(a);
            if v as u8 == spec::EXT_CAP_LEGACY {
                if v & spec::LEGSUP_BIOS_OWNED != 0 {
                    self.w32(a, v | spec::LEGSUP_OS_OWNED);
                    if !until(HANDOFF_NS, || self.r32(a) & spec::LEGSUP_BIOS_OWNED == 0) {
                        log::warn!("xhci: {}: the firmware kept the controller for 1 s; taking it", self.df);
                        self.w32(a, (self.r32(a) & !spec::LEGSUP_BIOS_OWNED) | spec::LEGSUP_OS_OWNED);
                    }
                }
                let ctl = self.r32(a + 4);
                self.w32(a + 4, (ctl & !spec::LEGCTL_SMI_ENABLES) | spec::LEGCTL_SMI_STATUS);
                return;
            }
            let next = ((v >> 8) & 0xFF) as u64 * 4;
            off = if next == 0 { 0 } else { off + next };
        }
    }

    /// The next event, with the dequeue pointer handed back.
    fn next_event(&mut self) -> Option<Trb> {
        let e = self.events.pop(self.event_trbs)?;
        self.w64(self.rt + rt::ERDP0 as u64, self.events.erdp());
        Some(e)
    }

    /// Take events until one matches; transfer events that do not are kept
    /// for `transfer_event`, the rest (port changes) are dropped.
    fn wait_event(&mut self, ns: u64, mut want: impl FnMut(&Trb) -> bool) -> Option<Trb> {
        let mut found = None;
        until(ns, || {
            while let Some(e) = self.next_event() {
                if want(&e) {
                    found = Some(e);
                    return true;
                }
                if e.kind() == trb_type::TRANSFER_EVENT {
                    self.pending.push_back(e);
                }
            }
            false
        });
        found
    }

    /// The next transfer event, kept or new; None when there is none now.
    pub fn transfer_event(&mut self) -> Option<Trb> {
        if let Some(e) = self.pending.pop_front() {
            return Some(e);
        }
        while let Some(e) = self.next_event() {
            if e.kind() == trb_type::TRANSFER_EVENT {
                return Some(e);
            }
        }
        None
    }

    /// Run one command; its completion event (success checked).
    fn command(&mut self, t: Trb) -> Result<Trb, &'static str> {
        let i = self.cmd.push(self.cmd_trbs, t);
        let addr = self.cmd.addr(i);
        self.doorbell(0, 0);
        let e = self.wait_event(COMMAND_NS, |e| e.kind() == trb_type::COMMAND_COMPLETION && e.param == addr).ok_or("a command got no completion within 1 s")?;
        if e.completion() != spec::CC_SUCCESS {
            log::warn!("xhci: {}: command type {} failed: {}", self.df, t.kind(), spec::completion_name(e.completion()));
            return Err("a command failed");
        }
        Ok(e)
    }

    /// Root ports with a device, after the devices had time to connect.
    fn connected_ports(&self) -> Vec<u8> {
        let any = || (1..=self.ports).any(|p| self.portsc(p) & spec::PORT_CCS != 0);
        for p in 1..=self.ports {
            if self.portsc(p) & spec::PORT_PP == 0 {
                self.set_portsc(p, spec::port_neutral(self.portsc(p)) | spec::PORT_PP);
            }
        }
        if until(CONNECT_NS, any) {
            delay_ns(DEBOUNCE_NS);
        }
        (1..=self.ports).filter(|&p| self.portsc(p) & spec::PORT_CCS != 0).collect()
    }

    /// Reset a port that is connected but not enabled (USB 2 ports; USB 3
    /// ports enable themselves when their link trains, §4.3.1).
    fn reset_port(&self, p: u8) -> Result<(), &'static str> {
        if self.portsc(p) & spec::PORT_PED != 0 {
            return Ok(());
        }
        self.set_portsc(p, spec::port_neutral(self.portsc(p)) | spec::PORT_PR);
        if !until(PORT_RESET_NS, || self.portsc(p) & spec::PORT_PRC != 0 && self.portsc(p) & spec::PORT_PR == 0) {
            return Err("the port reset did not complete");
        }
        self.set_portsc(p, spec::port_neutral(self.portsc(p)) | spec::PORT_PRC | spec::PORT_CSC);
        if self.portsc(p) & spec::PORT_PED == 0 {
            return Err("the port did not enable after its reset");
        }
        delay_ns(RESET_RECOVERY_NS);
        Ok(())
    }

    /// Address every device on a root port and read its descriptors.
    pub fn attach_all(&mut self) -> Vec<Result<Attached, PortError>> {
        self.connected_ports().into_iter().map(|port| self.attach(port).map_err(|why| PortError { port, why })).collect()
    }

    /// §4.3: reset the port, Enable Slot, Address Device with the default
    /// control endpoint, read the device descriptor (8 bytes, then the
    /// packet size fixed with Evaluate Context where it differs, then 18),
    /// and every configuration.
    fn attach(&mut self, port: u8) -> Result<Attached, &'static str> {
        self.reset_port(port)?;
        let speed = spec::port_speed(self.portsc(port));
        let slot = self.command(Trb::enable_slot())?.slot();
        let out = dma(32 * self.csz)?;
        // SAFETY: DCBAA entry `slot` (slot ids are 1..=MaxSlotsEn <= 255).
        unsafe { (self.dcbaa as *mut u64).add(slot as usize).write_volatile(out) };
        let ep0 = dma(EP0_TRBS * 16)?;
        let ep0_trbs = trbs(ep0, EP0_TRBS);
        let ring = Producer::new(ep0, ep0_trbs);
        let input = dma(InputContext::bytes(self.csz))?;
        let mut dev = Attached { port, speed, slot, device: Device::default(), configs: Vec::new(), ep0: ring, ep0_trbs, input, buf: dma(4096)? };
        {
            let mut ic = self.input_context(&dev);
            ic.add(0b11);
            ic.slot(speed, port, 1);
            ic.endpoint(1, spec::EP_CONTROL, spec::default_max_packet0(speed), dev.ep0.dequeue_word(), 8);
        }
        self.command(Trb::address_device(input, slot))?;
        let mut head = [0u8; 8];
        self.control(&mut dev, Setup::get_descriptor(desc::DT_DEVICE, 0, 8), Some(&mut head))?;
        let mp0 = spec::max_packet0(speed, Device::parse(&head)?.max_packet0);
        if mp0 != spec::default_max_packet0(speed) && mp0 != 0 {
            let mut ic = self.input_context(&dev);
            ic.buf.fill(0);
            ic.add(0b10);
            ic.endpoint(1, spec::EP_CONTROL, mp0, dev.ep0.dequeue_word(), 8);
            self.command(Trb::evaluate_context(input, slot))?;
        }
        let mut full = [0u8; 18];
        let n = self.control(&mut dev, Setup::get_descriptor(desc::DT_DEVICE, 0, 18), Some(&mut full))?;
        dev.device = Device::parse(&full[..n])?;
        for i in 0..dev.device.configurations {
            let mut head = [0u8; 9];
            self.control(&mut dev, Setup::get_descriptor(desc::DT_CONFIG, i, 9), Some(&mut head))?;
            let total = (desc::config_total_length(&head)? as usize).min(4096);
            let mut all = alloc::vec![0u8; total];
            let n = self.control(&mut dev, Setup::get_descriptor(desc::DT_CONFIG, i, total as u16), Some(&mut all))?;
            dev.configs.push(desc::parse_config(&all[..n])?);
        }
        Ok(dev)
    }

    fn input_context<'a>(&self, dev: &'a Attached) -> InputContext<'a> {
        // SAFETY: the device's input context: InputContext::bytes(csz) of DMA
        // memory, read by the controller only during a command we await.
        let buf = unsafe { core::slice::from_raw_parts_mut(dev.input as *mut u32, InputContext::bytes(self.csz) / 4) };
        InputContext { buf, csz: self.csz }
    }

    /// A control transfer on the device's endpoint 0 (§4.11.2.2): Setup,
    /// Data (through the device's page) when there is any, Status. Returns
    /// the bytes moved.
    pub fn control(&mut self, dev: &mut Attached, s: Setup, data: Option<&mut [u8]>) -> Result<usize, &'static str> {
        let len = (s.length as usize).min(4096);
        let has_data = len > 0;
        if let Some(d) = &data
            && !s.is_in()
        {
            // SAFETY: the device's 4 KiB control page; len <= 4096.
            unsafe { core::ptr::copy_nonoverlapping(d.as_ptr(), dev.buf as *mut u8, len.min(d.len())) };
        }
        dev.ep0.push(dev.ep0_trbs, Trb::setup(s));
        let data_trb = has_data.then(|| {
            let mut t = Trb::data(dev.buf, len as u32, s.is_in());
            t.control |= spec::TRB_ISP;
            let i = dev.ep0.push(dev.ep0_trbs, t);
            dev.ep0.addr(i)
        });
        let i = dev.ep0.push(dev.ep0_trbs, Trb::status_stage(s.is_in(), has_data));
        let status = dev.ep0.addr(i);
        self.doorbell(dev.slot, 1);
        let (slot, mut moved) = (dev.slot, len);
        loop {
            let e = self
                .wait_event(COMMAND_NS, |e| e.kind() == trb_type::TRANSFER_EVENT && e.slot() == slot && e.endpoint() == 1)
                .ok_or("a control transfer got no completion within 1 s")?;
            match e.completion() {
                spec::CC_SHORT_PACKET if Some(e.param) == data_trb => moved = len - (e.residual() as usize).min(len),
                spec::CC_SUCCESS if e.param == status => break,
                spec::CC_SUCCESS => {}
                cc => {
                    log::warn!("xhci: {}: port {} control request {:#x} failed: {}", self.df, dev.port, s.request, spec::completion_name(cc));
                    return Err(if cc == spec::CC_STALL { "the device stalled a control request" } else { "a control transfer failed" });
                }
            }
        }
        if let Some(d) = data
            && s.is_in()
        {
            let n = moved.min(d.len());
            // SAFETY: as above; the controller wrote `moved` bytes.
            unsafe { core::ptr::copy_nonoverlapping(dev.buf as *const u8, d.as_mut_ptr(), n) };
            return Ok(n);
        }
        Ok(moved)
    }

    /// Configure bulk endpoints (§4.6.6): each (endpoint, ring dequeue word,
    /// average TRB length) added to the slot's context.
    pub fn configure_bulk(&mut self, dev: &Attached, eps: &[(desc::Endpoint, u64, u16)]) -> Result<(), &'static str> {
        let top = eps.iter().map(|(e, _, _)| spec::dci(e.address)).max().unwrap_or(1);
        let mut ic = self.input_context(dev);
        ic.buf.fill(0);
        ic.add(1);
        ic.slot(dev.speed, dev.port, top);
        for (e, deq, avg) in eps {
            let d = spec::dci(e.address);
            ic.add(1 << d);
            ic.endpoint(d, if e.is_in() { spec::EP_BULK_IN } else { spec::EP_BULK_OUT }, e.max_packet, *deq, *avg);
        }
        self.command(Trb::configure_endpoint(dev.input, dev.slot)).map(|_| ())
    }

    /// Ring a device's doorbell for an endpoint (its DCI).
    pub fn ring(&self, slot: u8, dci: u8) {
        self.doorbell(slot, dci);
    }

    /// Is the device's root port still connected and enabled?
    pub fn port_up(&self, port: u8) -> bool {
        let v = self.portsc(port);
        v & spec::PORT_CCS != 0 && v & spec::PORT_PED != 0
    }

    /// The controller stopped itself (host system error or controller error).
    pub fn failed(&self) -> bool {
        self.op_r(op::USBSTS) & (spec::STS_HSE | spec::STS_HCE) != 0
    }
}

/// Every xHCI controller among the PCI functions.
pub fn is_xhci(info: &virtio_drivers::transport::pci::bus::DeviceFunctionInfo) -> bool {
    info.class == CLASS_SERIAL && info.subclass == SUBCLASS_USB && info.prog_if == PROG_IF_XHCI
}
