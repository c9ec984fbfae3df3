//! Everything of the engine that runs in trap context, NMI included: the #BP
//! handler that emulates sites under modification, the torn-execution oracle
//! (#DE, #UD, #GP, #PF and foreign #BP), its lock-free log of torn
//! executions, and the note the fatal report prints. Nothing here takes a lock
//! or allocates; the decisions themselves are pure and host-tested
//! (`protocol::emulate`, `protocol::classify_fault`).

use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use super::control::strategy;
use super::machine::{PUBLISHED, read_site};
use super::protocol::{self, SITE_LEN, Torn};
use super::site;
use super::stats::{STATS, totals};
use crate::arch::idt::vector;
use crate::arch::percpu::this_cpu;
use crate::arch::trap::{self, Disposition, TrapFrame};

/// One torn execution, as the oracle saw it.
#[derive(Clone, Copy, Debug, Default)]
pub struct TornEvent {
    pub cpu: u32,
    pub site: u64,
    pub rip: u64,
    pub vector: u8,
    pub bytes: [u8; 5],
}

/// The first torn executions, kept for the report (lock-free: a slot is
/// claimed with one atomic increment, and published with `TORN_READY`).
const TORN_KEPT: usize = 16;
/// The vectors a torn site can raise besides #BP (SDM Vol. 3A §6.15): #DE
/// (0), #UD (6), #GP (13), #PF (14).
const ORACLE_VECTORS: [u8; 4] = [vector::DIVIDE, vector::INVALID_OPCODE, vector::GENERAL_PROTECTION, vector::PAGE_FAULT];
static TORN_NEXT: AtomicUsize = AtomicUsize::new(0);
static TORN_READY: [AtomicBool; TORN_KEPT] = [const { AtomicBool::new(false) }; TORN_KEPT];
struct TornLog(core::cell::UnsafeCell<[TornEvent; TORN_KEPT]>);
// SAFETY: slot i is written only by the one CPU that claimed it through
// TORN_NEXT, before TORN_READY[i] is set; readers read it only after.
unsafe impl Sync for TornLog {}
static TORN_LOG: TornLog = TornLog(core::cell::UnsafeCell::new([TornEvent { cpu: 0, site: 0, rip: 0, vector: 0, bytes: [0; 5] }; TORN_KEPT]));


/// The kept torn events.
pub fn torn_events() -> impl Iterator<Item = TornEvent> {
    (0..TORN_KEPT.min(TORN_NEXT.load(Ordering::Acquire))).filter(|&i| TORN_READY[i].load(Ordering::Acquire)).map(|i| {
        // SAFETY: slot i is published (TORN_READY) and never written again.
        unsafe { (*TORN_LOG.0.get())[i] }
    })
}


/// #BP: emulate a site under modification; anything else is the oracle's or a
/// real breakpoint.
fn on_breakpoint(frame: &mut TrapFrame) -> Disposition {
    let Some(e) = PUBLISHED.emulate(frame.rip) else { return oracle(frame) };
    let mut f = protocol::Frame { rip: frame.rip, rsp: frame.rsp };
    e.apply(&mut f, |addr, value| {
        // SAFETY: the interrupted code is at a site (function entry, after its
        // prologue); the word below its RSP is free (no red zone), exactly
        // where the CALL would have pushed.
        unsafe { (addr as *mut u64).write(value) }
    });
    (frame.rip, frame.rsp) = (f.rip, f.rsp);
    let cpu = this_cpu();
    cpu.int3_by_ctx[cpu.context() as usize].fetch_add(1, Ordering::Relaxed);
    cpu.int3_emulated.fetch_add(1, Ordering::Relaxed);
    // This CPU hit a site the patching CPU is changing: let it finish. On
    // silicon that adds tens of cycles to an exception that costs about a
    // thousand, only during a batch. Under TCG the window in which every
    // call of a changing site traps closes sooner: with three workers calling
    // the 10,000 sites, an int3 batch took 780-810 ms of guest time without
    // it and 160-183 ms with it (`batch_10000_int3`, `cargo xtask bench`);
    // the workers' calls during a batch slow down by as much.
    crate::arch::cpu::pause_for_others();
    Disposition::Resume
}

fn record_torn(frame: &TrapFrame, site: u64) {
    let cpu = this_cpu();
    cpu.torn.fetch_add(1, Ordering::Relaxed);
    let i = TORN_NEXT.fetch_add(1, Ordering::AcqRel);
    if i < TORN_KEPT {
        let ev = TornEvent { cpu: cpu.index() as u32, site, rip: frame.rip, vector: frame.vector as u8, bytes: read_site(site) };
        // SAFETY: slot i was claimed by this CPU alone (fetch_add above).
        unsafe { (*TORN_LOG.0.get())[i] = ev };
        TORN_READY[i].store(true, Ordering::Release);
    }
}

/// The torn-execution oracle, on #UD, #GP, #PF, #DE and foreign #BP: a fault
/// inside a site's bytes, or right after a wild CALL from a site (its return
/// address on top of the stack), is a torn execution: count it, record it,
/// and resume after the site. Anything else is not ours.
fn oracle(frame: &mut TrapFrame) -> Disposition {
    let Some(r) = site::registry() else { return Disposition::NotHandled };
    let on_stack = on_a_stack_of_this_cpu(frame.rsp) && frame.rsp.is_multiple_of(8);
    // SAFETY: read only when RSP lies on one of this CPU's mapped stacks.
    let top = || on_stack.then(|| unsafe { (frame.rsp as *const u64).read() });
    match protocol::classify_fault(&r.sites, frame.vector as u8, frame.rip, top) {
        Some(Torn::Inside { site }) => {
            record_torn(frame, site);
            frame.rip = site + SITE_LEN;
            Disposition::Resume
        }
        Some(Torn::WildCall { site }) => {
            record_torn(frame, site);
            frame.rsp += 8;
            frame.rip = site + SITE_LEN;
            Disposition::Resume
        }
        None => Disposition::NotHandled,
    }
}

/// Is `rsp` on one of this CPU's stacks (kernel or IST)?
fn on_a_stack_of_this_cpu(rsp: u64) -> bool {
    this_cpu().stacks().contains(rsp)
}

/// For the fatal report: while the loop runs, name the strategy, the batch
/// under modification and the sites near the faulting RIP and on top of the
/// stack, so that a tear the oracle could not recover is still reported.
fn fatal_note(frame: &TrapFrame, out: &mut dyn core::fmt::Write) {
    if !STATS.enabled.load(Ordering::Relaxed) {
        return;
    }
    let Some(r) = site::registry() else { return };
    let _ = writeln!(
        out,
        "patch: this CPU died while the patching loop ran (strategy={}, torn so far: {})",
        strategy().name(),
        totals().torn
    );
    let i = r.sites.partition_point(|&s| s <= frame.rip);
    if let Some(&s) = i.checked_sub(1).and_then(|i| r.sites.get(i)) {
        let _ = write!(out, "patch: nearest site below RIP: {s:#x} ");
        let _ = crate::debug::backtrace::write_symbol(out, s);
        let _ = writeln!(out, " bytes {:02x?} (RIP is {:#x} past it)", read_site(s), frame.rip - s);
    }
    if on_a_stack_of_this_cpu(frame.rsp) {
        // SAFETY: RSP lies on one of this CPU's mapped stacks (checked above).
        let top = unsafe { (frame.rsp as *const u64).read() };
        if let Some(s) = top.checked_sub(SITE_LEN).filter(|&s| r.index_of(s).is_some()) {
            let _ = write!(out, "patch: the stack top is the return address of site {s:#x} ");
            let _ = crate::debug::backtrace::write_symbol(out, s);
            let _ = writeln!(out, " (a CALL from it went astray) bytes {:02x?}", read_site(s));
        }
    }
}

/// Install the #BP handler, the oracle on the vectors a torn site can raise,
/// and the fatal note (boot CPU, before the APs start).
pub(super) fn install() {
    trap::set_fatal_note(fatal_note);
    trap::register(vector::BREAKPOINT, on_breakpoint);
    for v in ORACLE_VECTORS {
        trap::register(v, oracle);
    }
}
