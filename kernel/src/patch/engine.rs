//! The patching engine on the machine: the [`Platform`] of `protocol.rs`
//! (writes through a writable alias of the text, sync rounds as cross-CPU
//! calls running a serializing instruction), the #BP handler that emulates
//! sites under modification, the torn-execution oracle, the three strategies
//! and the patching loop.
//!
//! Nothing here that can run in NMI or exception context (the #BP handler,
//! the oracle) takes a lock or allocates.

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use alloc::vec::Vec;
use log::{error, info, warn};

use super::protocol::{self, BatchStats, Insn, Patch, Platform, SITE_LEN, torn_call_target};
use super::site::{self, Registry, state};
use crate::arch::idt::vector;
use crate::arch::percpu::{self, this_cpu};
use crate::arch::trap::{self, Disposition, TrapFrame};
use crate::boot::cmdline::{Options, Strategy, SyncMode};
use crate::smp::xcall;
use crate::time::clock;

/// Virtual base of the writable, no-execute alias of the kernel text.
pub const TEXT_ALIAS: u64 = 0x0000_4000_0000_0000;
/// How long a sync round or a stop_machine rendezvous may take.
const SYNC_TIMEOUT_NS: u64 = 1_000_000_000;

static TEXT_START: AtomicU64 = AtomicU64::new(0);
static TEXT_END: AtomicU64 = AtomicU64::new(0);

/// The batch published to the #BP handler (see `Platform::publish`).
static PUBLISHED: protocol::Published = protocol::Published::new();

/// Engine-wide counters.
pub struct Stats {
    pub cycles: AtomicU64,
    pub batches: AtomicU64,
    pub sites_patched: AtomicU64,
    pub sync_rounds: AtomicU64,
    pub sync_failures: AtomicU64,
    pub batch_ns_total: AtomicU64,
    pub enabled: AtomicBool,
}

pub static STATS: Stats = Stats {
    cycles: AtomicU64::new(0),
    batches: AtomicU64::new(0),
    sites_patched: AtomicU64::new(0),
    sync_rounds: AtomicU64::new(0),
    sync_failures: AtomicU64::new(0),
    batch_ns_total: AtomicU64::new(0),
    enabled: AtomicBool::new(false),
};

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
static TORN_NEXT: AtomicUsize = AtomicUsize::new(0);
static TORN_READY: [AtomicBool; TORN_KEPT] = [const { AtomicBool::new(false) }; TORN_KEPT];
struct TornLog(core::cell::UnsafeCell<[TornEvent; TORN_KEPT]>);
// SAFETY: slot i is written only by the one CPU that claimed it through
// TORN_NEXT, before TORN_READY[i] is set; readers read it only after.
unsafe impl Sync for TornLog {}
static TORN_LOG: TornLog = TornLog(core::cell::UnsafeCell::new([TornEvent { cpu: 0, site: 0, rip: 0, vector: 0, bytes: [0; 5] }; TORN_KEPT]));

/// Print the kept torn events (not from exception or NMI context).
fn log_torn_events() {
    for ev in torn_events() {
        warn!("patch: torn execution on cpu{} at site {:#x} (rip {:#x}, vector {}) bytes {:02x?}", ev.cpu, ev.site, ev.rip, ev.vector, ev.bytes);
    }
}

/// The kept torn events.
pub fn torn_events() -> impl Iterator<Item = TornEvent> {
    (0..TORN_KEPT.min(TORN_NEXT.load(Ordering::Acquire))).filter(|&i| TORN_READY[i].load(Ordering::Acquire)).map(|i| {
        // SAFETY: slot i is published (TORN_READY) and never written again.
        unsafe { (*TORN_LOG.0.get())[i] }
    })
}

/// Called between batches (the network service polls cooperatively here).
static POLL_HOOK: AtomicUsize = AtomicUsize::new(0);

pub fn set_poll_hook(f: fn()) {
    POLL_HOOK.store(f as usize, Ordering::Release);
}

fn poll_hook() {
    let h = POLL_HOOK.load(Ordering::Acquire);
    if h != 0 {
        // SAFETY: only `set_poll_hook` stores here, from a `fn()`.
        let f = unsafe { core::mem::transmute::<usize, fn()>(h) };
        f();
    }
}

/// A request to turn tracing off, from any context (NMI included): 0 none,
/// 1 "ftraced code called from NMI context". The loop acts on it.
static DISABLE_REQ: AtomicU32 = AtomicU32::new(0);
/// Tracing was turned off by such a request (until re-enabled).
pub static FTRACE_DISABLED: AtomicBool = AtomicBool::new(false);
/// NMI-path sites are patched (`trace_nmi_path`).
static TRACE_NMI_PATH: AtomicBool = AtomicBool::new(false);

/// Why tracing is off: 1 traced code ran in NMI context, 2 turned off by control.
static DISABLED_WHY: AtomicU32 = AtomicU32::new(0);
/// A strategy to take effect at the next cycle (0: none; else strategy code + 1).
static PENDING_STRATEGY: AtomicU32 = AtomicU32::new(0);
/// Sites per batch from the next pass on (0: keep).
static PENDING_BATCH: AtomicUsize = AtomicUsize::new(0);
/// The CPU reports SERIALIZE (for `sync=serialize` at run time).
static SERIALIZE_OK: AtomicBool = AtomicBool::new(false);

/// Ask the patching loop to turn every site off, from a safe context.
/// Lock-free: callable from NMI context.
pub fn request_disable(_reason: &'static str) {
    let _ = DISABLE_REQ.compare_exchange(0, 1, Ordering::AcqRel, Ordering::Relaxed);
}

/// Turn tracing off (control endpoint): the loop turns every site off and waits.
pub fn control_disable() {
    let _ = DISABLE_REQ.compare_exchange(0, 2, Ordering::AcqRel, Ordering::Relaxed);
}

/// Turn tracing back on after either kind of disable.
pub fn control_enable() {
    DISABLE_REQ.store(0, Ordering::Release);
    FTRACE_DISABLED.store(false, Ordering::Release);
}

/// Change the strategy (from the next on/off cycle, when every site is off).
pub fn control_strategy(s: Strategy) {
    PENDING_STRATEGY.store(strategy_code(s) + 1, Ordering::Release);
}

/// Change the serializing instruction of sync rounds now.
pub fn control_sync(m: SyncMode) -> Result<(), &'static str> {
    if m == SyncMode::Serialize && !SERIALIZE_OK.load(Ordering::Relaxed) {
        return Err("sync=serialize refused: this CPU does not report SERIALIZE");
    }
    SYNC.store(sync_to(m) as u32, Ordering::Relaxed);
    Ok(())
}

/// Change the batch size from the next pass on.
pub fn control_batch(n: usize) {
    PENDING_BATCH.store(n.max(1), Ordering::Release);
}

fn strategy_code(s: Strategy) -> u32 {
    match s {
        Strategy::Int3 => 0,
        Strategy::StopMachine => 1,
        Strategy::Naive => 2,
    }
}

pub fn disabled_reason() -> Option<&'static str> {
    if !FTRACE_DISABLED.load(Ordering::Acquire) {
        return None;
    }
    Some(match DISABLED_WHY.load(Ordering::Relaxed) {
        2 => "turned off through the control endpoint",
        _ => "ftraced code called from NMI context",
    })
}

/// The strategy and sync mode in force.
static STRATEGY: AtomicU32 = AtomicU32::new(0);
static SYNC: AtomicU32 = AtomicU32::new(0);

pub fn strategy() -> Strategy {
    match STRATEGY.load(Ordering::Relaxed) {
        1 => Strategy::StopMachine,
        2 => Strategy::Naive,
        _ => Strategy::Int3,
    }
}

pub fn sync_mode() -> SyncMode {
    sync_from(SYNC.load(Ordering::Relaxed) as usize)
}

fn sync_from(v: usize) -> SyncMode {
    match v {
        1 => SyncMode::Iret,
        2 => SyncMode::Serialize,
        _ => SyncMode::Cpuid,
    }
}

fn sync_to(m: SyncMode) -> usize {
    match m {
        SyncMode::Cpuid => 0,
        SyncMode::Iret => 1,
        SyncMode::Serialize => 2,
    }
}

/// IRET to self: serializing, never exits to a hypervisor (but unmasks NMIs).
fn iret_to_self() {
    // SAFETY: builds an interrupt frame for the next instruction on the
    // current stack (SS, RSP, RFLAGS, CS, RIP) and IRETs to it: execution
    // continues at `2:` with the same stack and flags.
    unsafe {
        core::arch::asm!(
            "mov {tmp:e}, ss",
            "push {tmp}",
            "push rsp",
            "add qword ptr [rsp], 8",
            "pushfq",
            "mov {tmp:e}, cs",
            "push {tmp}",
            "lea {tmp}, [rip + 2f]",
            "push {tmp}",
            "iretq",
            "2:",
            tmp = out(reg) _,
        )
    };
}

/// Run the chosen serializing instruction (SDM Vol. 3A §9.3).
pub fn serialize(mode: SyncMode) {
    match mode {
        SyncMode::Cpuid => crate::arch::cpu::serialize_cpuid(),
        SyncMode::Iret => iret_to_self(),
        // SAFETY: SERIALIZE (0f 01 e8) is only chosen when CPUID reports it (see `init`).
        SyncMode::Serialize => unsafe { core::arch::asm!(".byte 0x0f, 0x01, 0xe8", options(nostack, preserves_flags)) },
    }
}

fn sync_ipi(mode: usize) {
    serialize(sync_from(mode));
}

/// A site's current bytes, through the main (executable) mapping.
fn read_site(site: u64) -> [u8; 5] {
    // SAFETY: sites are inside the kernel text (checked by `init`), mapped readable.
    core::array::from_fn(|i| unsafe { ((site + i as u64) as *const u8).read_volatile() })
}

/// The machine platform of the protocol.
pub struct Machine {
    sync: SyncMode,
}

fn alias(addr: u64) -> *mut u8 {
    let start = TEXT_START.load(Ordering::Relaxed);
    debug_assert!(addr >= start && addr < TEXT_END.load(Ordering::Relaxed));
    (TEXT_ALIAS + (addr - start)) as *mut u8
}

impl Machine {
    /// Write 1 or 4 bytes with a single store.
    fn write_atomic(&mut self, addr: u64, bytes: &[u8]) {
        match bytes.len() {
            // SAFETY: as in `write`; one byte store.
            1 => unsafe { alias(addr).write_volatile(bytes[0]) },
            // SAFETY: as in `write`; one (possibly unaligned) 4-byte store.
            4 => unsafe { (alias(addr) as *mut u32).write_unaligned(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])) },
            _ => self.write(addr, bytes),
        }
    }
}

impl Platform for Machine {
    fn read(&self, site: u64) -> [u8; 5] {
        read_site(site)
    }

    fn write(&mut self, addr: u64, bytes: &[u8]) {
        for (i, b) in bytes.iter().enumerate() {
            // SAFETY: the alias maps the kernel text writable; only the patching
            // CPU writes through it, one byte store at a time.
            unsafe { alias(addr + i as u64).write_volatile(*b) };
        }
    }

    fn publish(&mut self, batch: Option<&[Patch]>) {
        PUBLISHED.set(batch);
    }

    fn sync(&mut self) -> Result<(), protocol::Error> {
        let t0 = crate::arch::cpu::rdtsc();
        serialize(self.sync);
        STATS.sync_rounds.fetch_add(1, Ordering::Relaxed);
        let r = xcall::call_others(sync_ipi, sync_to(self.sync), SYNC_TIMEOUT_NS);
        site::record_kind(site::kind::SYNC_ROUND, clock::ticks_to_ns(crate::arch::cpu::rdtsc() - t0));
        r.map_err(|e| {
            STATS.sync_failures.fetch_add(1, Ordering::Relaxed);
            error!("patch: sync round failed: {e}");
            protocol::Error::Sync
        })
    }
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
    Disposition::Resume
}

/// The site whose 5 bytes contain `addr`.
fn site_containing(r: &Registry, addr: u64) -> Option<u64> {
    let i = r.sites.partition_point(|&s| s <= addr).checked_sub(1)?;
    let s = r.sites[i];
    (addr < s + SITE_LEN).then_some(s)
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
    // 1. The CPU faulted inside a half-written site (a #BP inside one is the
    //    int3 byte itself only when its batch is gone: also torn).
    let at = if frame.vector as u8 == vector::BREAKPOINT { frame.rip - 1 } else { frame.rip };
    if let Some(site) = site_containing(r, at) {
        record_torn(frame, site);
        frame.rip = site + SITE_LEN;
        return Disposition::Resume;
    }
    // 2. A torn CALL went somewhere wrong and faulted there: its return
    //    address (site + 5) is on top of the stack.
    let stack_ok = this_cpu().stacks().kernel.contains(frame.rsp) || this_cpu().stacks().ist.iter().any(|s| s.contains(frame.rsp));
    if stack_ok && frame.rsp.is_multiple_of(8) {
        // SAFETY: RSP lies on one of this CPU's mapped stacks (checked above).
        let ret = unsafe { (frame.rsp as *const u64).read() };
        if let Some(site) = ret.checked_sub(SITE_LEN)
            && r.index_of(site).is_some()
        {
            record_torn(frame, site);
            frame.rsp += 8;
            frame.rip = ret;
            return Disposition::Resume;
        }
    }
    Disposition::NotHandled
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
    let stacks = this_cpu().stacks();
    if stacks.kernel.contains(frame.rsp) || stacks.ist.iter().any(|st| st.contains(frame.rsp)) {
        // SAFETY: RSP lies on one of this CPU's mapped stacks (checked above).
        let top = unsafe { (frame.rsp as *const u64).read() };
        if let Some(s) = top.checked_sub(SITE_LEN).filter(|&s| r.index_of(s).is_some()) {
            let _ = write!(out, "patch: the stack top is the return address of site {s:#x} ");
            let _ = crate::debug::backtrace::write_symbol(out, s);
            let _ = writeln!(out, " (a CALL from it went astray) bytes {:02x?}", read_site(s));
        }
    }
}

/// Set up the engine (boot CPU, before the APs start): the registry, the
/// text alias, the #BP handler and the oracle. Returns the registry.
pub fn init(opts: &Options, features: &crate::arch::cpu::Features) -> Result<&'static Registry, &'static str> {
    let layout = crate::mem::paging::image_layout();
    // Text runs from the start of .text (after .boot) to __text_end.
    let (start, end) = (layout.start, layout.text_end);
    TEXT_START.store(start, Ordering::Relaxed);
    TEXT_END.store(end, Ordering::Relaxed);
    crate::mem::paging::map_alias(start, end, TEXT_ALIAS).map_err(|_| "cannot map the text alias")?;
    let reg = site::init();
    let mut bad = 0;
    for &s in &reg.sites {
        if s < start || s + SITE_LEN > end || read_site(s) != protocol::NOP5 {
            bad += 1;
        }
    }
    if bad > 0 {
        return Err("trace-site registry lists addresses that are not 5-byte NOPs in the text");
    }
    let g: Vec<bool> = reg
        .sites
        .iter()
        .map(|&s| {
            let t = torn_call_target(s);
            // SAFETY: `t` is checked to lie inside the mapped text first.
            t >= start && t < end && unsafe { (t as *const u8).read_volatile() } == 0xcc
        })
        .collect();
    info!("patch: {} of {} sites guarded (their torn-call target is int3 padding)", g.iter().filter(|&&x| x).count(), g.len());
    // Every site must belong to a function of the symbol table.
    if let Some(t) = crate::debug::backtrace::table() {
        let mut unnamed = 0;
        for &s in &reg.sites {
            match t.lookup(s) {
                None => unnamed += 1,
                Some(l) if !l.symbol.name.starts_with("appliance::traced::traced_") => info!("patch: kernel-path site {s:#x} {l}"),
                Some(_) => {}
            }
        }
        if unnamed > 0 {
            warn!("patch: {unnamed} sites are in no symbol");
        }
    }
    GUARDED.call_once(|| g);
    let mut sync = opts.sync;
    if sync == SyncMode::Serialize && !features.serialize {
        error!("patch: sync=serialize refused: this CPU does not report SERIALIZE (CPUID.(EAX=7,ECX=0):EDX[14]); using sync=cpuid");
        sync = SyncMode::Cpuid;
    }
    SYNC.store(sync_to(sync) as u32, Ordering::Relaxed);
    STRATEGY.store(strategy_code(opts.strategy), Ordering::Relaxed);
    SERIALIZE_OK.store(features.serialize, Ordering::Relaxed);
    NAIVE_GAP_NS.store(opts.naive_gap_us as u64 * 1000, Ordering::Relaxed);
    TRACE_NMI_PATH.store(opts.trace_nmi_path, Ordering::Relaxed);
    trap::set_fatal_note(fatal_note);
    trap::register(vector::BREAKPOINT, on_breakpoint);
    for v in [0u8, 6, 13, 14] {
        trap::register(v, oracle);
    }
    Ok(reg)
}

static HOLD: AtomicBool = AtomicBool::new(false);
static ARRIVED: AtomicUsize = AtomicUsize::new(0);

fn hold(mode: usize) {
    ARRIVED.fetch_add(1, Ordering::AcqRel);
    while HOLD.load(Ordering::Acquire) {
        core::hint::spin_loop();
    }
    serialize(sync_from(mode));
}

/// The 2008 method: every other CPU spins in an IPI handler with interrupts
/// off while the bytes are written (NMIs still arrive). One rendezvous per batch.
fn apply_stop_machine(m: &mut Machine, batch: &mut [Patch]) -> Result<BatchStats, protocol::Error> {
    protocol::plan(m, batch)?;
    x86_64::instructions::interrupts::without_interrupts(|| {
        HOLD.store(true, Ordering::Release);
        ARRIVED.store(0, Ordering::Release);
        let others = xcall::other_online();
        let pending = xcall::start_others(hold, sync_to(m.sync));
        STATS.sync_rounds.fetch_add(1, Ordering::Relaxed);
        let deadline = clock::deadline_after_ns(SYNC_TIMEOUT_NS);
        while ARRIVED.load(Ordering::Acquire) < others && crate::arch::cpu::rdtsc() < deadline {
            core::hint::spin_loop();
        }
        let all_held = ARRIVED.load(Ordering::Acquire) >= others;
        if all_held {
            for p in batch.iter() {
                m.write(p.site, &p.new);
            }
        }
        HOLD.store(false, Ordering::Release);
        let r = pending.wait(SYNC_TIMEOUT_NS);
        if !all_held || r.is_err() {
            STATS.sync_failures.fetch_add(1, Ordering::Relaxed);
            error!("patch: stop_machine rendezvous failed ({} of {others} CPUs held)", ARRIVED.load(Ordering::Acquire));
            return Err(protocol::Error::Sync);
        }
        serialize(m.sync);
        Ok(BatchStats { sites: batch.len(), sync_rounds: 1 })
    })
}

static NAIVE_GAP_NS: AtomicU64 = AtomicU64::new(0);


/// Sites whose torn-call target holds int3 (function padding), by registry
/// index: a tear there traps at once and the oracle recovers.
static GUARDED: spin::Once<Vec<bool>> = spin::Once::new();

fn guarded(site: u64) -> bool {
    match (GUARDED.get(), site::registry().and_then(|r| r.index_of(site))) {
        (Some(g), Some(i)) => g[i],
        _ => false,
    }
}

/// No coordination at all: each site written in place, in two stores. The
/// order is chosen so that the only torn state is `e8 1f 44 00 00` (a CALL
/// through the NOP's tail): NOP->CALL writes the first byte, then the tail;
/// CALL->NOP writes the tail, then the first byte. The tail is one 4-byte
/// store (atomic when it does not cross a cache line, SDM Vol. 3A §9.1.1).
/// On guarded sites `naive_gap_us` separates the two stores.
fn apply_naive(m: &mut Machine, batch: &mut [Patch]) -> Result<BatchStats, protocol::Error> {
    protocol::plan(m, batch)?;
    let gap = NAIVE_GAP_NS.load(Ordering::Relaxed);
    for p in batch.iter() {
        let [(a1, r1), (a2, r2)] = protocol::naive_stores(p);
        m.write_atomic(a1, &p.new[r1]);
        if gap > 0 && guarded(p.site) {
            clock::delay_ns(gap);
        }
        m.write_atomic(a2, &p.new[r2]);
    }
    Ok(BatchStats { sites: batch.len(), sync_rounds: 0 })
}

/// Apply one batch with the strategy in force.
pub fn apply(batch: &mut [Patch]) -> Result<BatchStats, protocol::Error> {
    let mut m = Machine { sync: sync_mode() };
    let t = crate::arch::cpu::rdtsc();
    let r = match strategy() {
        Strategy::Int3 => protocol::apply_int3(&mut m, batch),
        Strategy::StopMachine => apply_stop_machine(&mut m, batch),
        Strategy::Naive => apply_naive(&mut m, batch),
    };
    STATS.batch_ns_total.fetch_add(clock::ticks_to_ns(crate::arch::cpu::rdtsc() - t), Ordering::Relaxed);
    if let Ok(s) = &r {
        STATS.batches.fetch_add(1, Ordering::Relaxed);
        STATS.sites_patched.fetch_add(s.sites as u64, Ordering::Relaxed);
        site::record_kind(site::kind::PATCH_BATCH, s.sites as u64);
    }
    r
}

/// Turn `sites[range]` on or off as one batch, publishing their states.
/// Under `naive` only guarded sites are flipped: a tear elsewhere sends a CPU
/// into arbitrary code, which the oracle cannot bring back.
fn flip(reg: &Registry, range: core::ops::Range<usize>, on: bool, batch: &mut Vec<Patch>) -> Result<BatchStats, protocol::Error> {
    let target = site::trace_entry as *const () as u64;
    let (from, to) = if on { (Insn::Nop5, Insn::Call { target }) } else { (Insn::Call { target }, Insn::Nop5) };
    let only_guarded = strategy() == Strategy::Naive;
    let g = GUARDED.get();
    let nmi_ok = TRACE_NMI_PATH.load(Ordering::Relaxed);
    let skip = |i: usize| (only_guarded && !g.is_some_and(|g| g[i])) || (reg.nmi_path[i] && !nmi_ok);
    batch.clear();
    for i in range.clone() {
        if skip(i) {
            continue;
        }
        batch.push(Patch::new(reg.sites[i], from, to)?);
        reg.states[i].store(state::CHANGING, Ordering::Release);
    }
    let r = apply(batch);
    if r.is_ok() {
        for i in range {
            if skip(i) {
                continue;
            }
            reg.states[i].store(if on { state::ON } else { state::OFF }, Ordering::Release);
        }
    }
    r
}

/// Benchmarks: one sync round with `mode` (local serialize + cross-CPU call),
/// in TSC ticks; `None` for the raw round trip (an empty cross-CPU call).
pub fn bench_sync_round(mode: Option<SyncMode>) -> Result<u64, xcall::Timeout> {
    fn noop(_: usize) {}
    let t = crate::arch::cpu::rdtsc();
    match mode {
        None => xcall::call_others(noop, 0, SYNC_TIMEOUT_NS)?,
        Some(m) => {
            serialize(m);
            xcall::call_others(sync_ipi, sync_to(m), SYNC_TIMEOUT_NS)?;
        }
    }
    Ok(crate::arch::cpu::rdtsc() - t)
}

/// Benchmarks: one raw IPI round to every other CPU; `each[i]` receives the
/// TSC ticks from sending the IPIs to CPU `i`'s acknowledgement (0 for this
/// CPU and CPUs not online).
pub fn bench_ipi_each(each: &mut [u64]) -> Result<(), xcall::Timeout> {
    fn noop(_: usize) {}
    each.iter_mut().for_each(|t| *t = 0);
    x86_64::instructions::interrupts::without_interrupts(|| {
        let t = crate::arch::cpu::rdtsc();
        let r = xcall::start_others(noop, 0).wait_each(SYNC_TIMEOUT_NS, each);
        each.iter_mut().filter(|x| **x != 0).for_each(|x| *x -= t);
        r
    })
}

/// Benchmarks: flip `sites[range]` with `s` (every site of the range in the
/// other state first); returns (TSC ticks, sync rounds) of the batch.
pub fn bench_flip(reg: &Registry, range: core::ops::Range<usize>, on: bool, s: Strategy) -> Result<(u64, u64), protocol::Error> {
    STRATEGY.store(strategy_code(s), Ordering::Relaxed);
    let mut batch = Vec::with_capacity(range.len());
    let rounds = STATS.sync_rounds.load(Ordering::Relaxed);
    let t = crate::arch::cpu::rdtsc();
    flip(reg, range, on, &mut batch)?;
    Ok((crate::arch::cpu::rdtsc() - t, STATS.sync_rounds.load(Ordering::Relaxed) - rounds))
}

/// Totals over every CPU.
#[derive(Clone, Copy, Debug, Default)]
pub struct Totals {
    pub site_calls: [u64; 3],
    pub int3_emulated: u64,
    pub torn: u64,
    pub traced_while_off: u64,
    pub missed_while_on: u64,
    pub cpus_with_int3: usize,
}

pub fn totals() -> Totals {
    let mut t = Totals::default();
    for c in percpu::all() {
        for (i, x) in c.site_calls.iter().enumerate() {
            t.site_calls[i] += x.load(Ordering::Relaxed);
        }
        let e = c.int3_emulated.load(Ordering::Relaxed);
        t.int3_emulated += e;
        t.cpus_with_int3 += (e > 0) as usize;
        t.torn += c.torn.load(Ordering::Relaxed);
        t.traced_while_off += c.traced_while_off.load(Ordering::Relaxed);
        t.missed_while_on += c.missed_while_on.load(Ordering::Relaxed);
    }
    t
}

fn status_line(prefix: &str, sites: usize) {
    let t = totals();
    info!(
        "{prefix}: strategy={} sync={} cycles={} sites={sites} batches={} sync_rounds={} int3_emulated={} torn={} traced_while_off={} missed_while_on={} calls task/irq/nmi={}/{}/{}",
        strategy().name(),
        sync_mode().name(),
        STATS.cycles.load(Ordering::Relaxed),
        STATS.batches.load(Ordering::Relaxed),
        STATS.sync_rounds.load(Ordering::Relaxed),
        t.int3_emulated,
        t.torn,
        t.traced_while_off,
        t.missed_while_on,
        t.site_calls[0],
        t.site_calls[1],
        t.site_calls[2]
    );
    let n = crate::nmi::watchdog::totals();
    info!(
        "{prefix}: nmi source={} hz={} ipi={} pmu={} external={} unknown={} nested={} exceptions_in_nmi={} lockups={} ftrace={}",
        crate::nmi::watchdog::source().name(),
        crate::nmi::watchdog::hz(),
        n[0],
        n[1],
        n[2],
        n[3],
        n[4],
        n[5],
        n[6],
        if FTRACE_DISABLED.load(Ordering::Relaxed) { "disabled" } else { "enabled" }
    );
    for c in percpu::all().iter().filter(|c| c.online.load(Ordering::Relaxed)) {
        info!(
            "{prefix}: cpu{} apic {}: calls task/irq/nmi={}/{}/{} int3_emulated={} (task/irq/nmi {}/{}/{}) torn={} missed_while_on={} timer_ticks={}",
            c.index(),
            c.apic_id(),
            c.site_calls[0].load(Ordering::Relaxed),
            c.site_calls[1].load(Ordering::Relaxed),
            c.site_calls[2].load(Ordering::Relaxed),
            c.int3_emulated.load(Ordering::Relaxed),
            c.int3_by_ctx[0].load(Ordering::Relaxed),
            c.int3_by_ctx[1].load(Ordering::Relaxed),
            c.int3_by_ctx[2].load(Ordering::Relaxed),
            c.torn.load(Ordering::Relaxed),
            c.missed_while_on.load(Ordering::Relaxed),
            c.timer_ticks.load(Ordering::Relaxed)
        );
    }
}

/// What a bounded loop found.
#[derive(Clone, Copy, Debug)]
pub struct LoopReport {
    pub cycles: u64,
    pub totals: Totals,
    /// Sites whose bytes are not what was last requested (must be 0).
    pub wrong_final_bytes: usize,
    pub errors: u64,
    /// Tracing was turned off on request (and why).
    pub disabled: Option<&'static str>,
}

/// Turn every site that is on (or changing) off: the response to a disable request.
fn all_off(reg: &Registry, batch: &mut Vec<Patch>) -> Result<usize, protocol::Error> {
    let target = site::trace_entry as *const () as u64;
    let on: Vec<usize> = (0..reg.sites.len()).filter(|&i| read_site(reg.sites[i]) != protocol::NOP5).collect();
    for chunk in on.chunks(256) {
        batch.clear();
        for &i in chunk {
            batch.push(Patch::new(reg.sites[i], Insn::Call { target }, Insn::Nop5)?);
            reg.states[i].store(state::CHANGING, Ordering::Release);
        }
        apply(batch)?;
        for &i in chunk {
            reg.states[i].store(state::OFF, Ordering::Release);
        }
    }
    Ok(on.len())
}

/// The patching loop: flip every site on, then off, in batches of
/// `patch_batch`, forever or for `patch_cycles` cycles; a status line every
/// `status_secs`. Ends with every site off and its bytes verified.
pub fn run_loop(opts: &Options, reg: &'static Registry) -> LoopReport {
    let n = match opts.patch_sites {
        0 => reg.sites.len(),
        k => (k as usize).min(reg.sites.len()),
    };
    let mut chunk = if opts.patch_batch == 0 { n.max(1) } else { opts.patch_batch as usize };
    let bounded = opts.patch_cycles != 0 || opts.patch_seconds != 0;
    let mut batch: Vec<Patch> = Vec::with_capacity(chunk);
    let status_ns = opts.status_secs as u64 * 1_000_000_000;
    let mut next_status = clock::now_ns() + status_ns;
    let mut errors = 0u64;
    let mut on = true;
    let stop_at = match opts.patch_seconds {
        0 => u64::MAX,
        s => clock::now_ns() + s as u64 * 1_000_000_000,
    };
    STATS.enabled.store(true, Ordering::Relaxed);
    if strategy() == Strategy::Naive {
        let g = GUARDED.get().map_or(0, |g| g.iter().filter(|&&x| x).count());
        warn!("patch: strategy=naive flips only the {g} guarded sites; the other {} stay off", n - g);
    }
    info!(
        "patch: loop on cpu{}: {n} sites, batches of {chunk}, strategy={} sync={}, every {} us",
        this_cpu().index(),
        strategy().name(),
        sync_mode().name(),
        opts.patch_interval_us
    );
    loop {
        if let k @ 1.. = PENDING_BATCH.swap(0, Ordering::AcqRel) {
            chunk = k;
            info!("patch: batches of {chunk} from now on");
        }
        let mut i = 0;
        while i < n {
            let end = (i + chunk).min(n);
            if let Err(e) = flip(reg, i..end, on, &mut batch) {
                errors += 1;
                warn!("patch: batch {i}..{end} failed: {e:?}");
            }
            i = end;
            if opts.patch_interval_us > 0 {
                clock::delay_ns(opts.patch_interval_us as u64 * 1000);
            }
            crate::nmi::watchdog::drain_to_console();
            poll_hook();
            if DISABLE_REQ.load(Ordering::Acquire) != 0 {
                break;
            }
            if clock::now_ns() >= next_status {
                next_status += status_ns;
                status_line("patch: status", n);
                log_torn_events();
            }
        }
        let why = DISABLE_REQ.load(Ordering::Acquire);
        if why != 0 {
            DISABLED_WHY.store(why, Ordering::Relaxed);
            FTRACE_DISABLED.store(true, Ordering::Release);
            match all_off(reg, &mut batch) {
                Ok(k) => warn!("ftrace: tracing disabled ({}): {k} sites turned off", disabled_reason().unwrap_or("?")),
                Err(e) => {
                    errors += 1;
                    warn!("ftrace: turning sites off failed: {e:?}");
                }
            }
            if bounded {
                break;
            }
            // The engine stays off until re-enabled (control endpoint); keep
            // serving the network and the NMI log meanwhile.
            STATS.enabled.store(false, Ordering::Relaxed);
            while FTRACE_DISABLED.load(Ordering::Acquire) {
                crate::nmi::watchdog::drain_to_console();
                poll_hook();
                clock::delay_ns(1_000_000);
            }
            for r in reg.warned.iter() {
                r.store(false, Ordering::Relaxed);
            }
            info!("ftrace: tracing enabled again");
            STATS.enabled.store(true, Ordering::Relaxed);
            on = true;
            continue;
        }
        if !on {
            if let s @ 1.. = PENDING_STRATEGY.swap(0, Ordering::AcqRel) {
                STRATEGY.store(s - 1, Ordering::Relaxed);
                info!("patch: strategy={} from now on", strategy().name());
            }
            let c = STATS.cycles.fetch_add(1, Ordering::Relaxed) + 1;
            if (opts.patch_cycles != 0 && c >= opts.patch_cycles as u64) || clock::now_ns() >= stop_at {
                break;
            }
        }
        on = !on;
    }
    STATS.enabled.store(false, Ordering::Relaxed);
    // Every site, flipped or not, must read as the NOP again.
    let wrong = reg.sites.iter().filter(|&&s| read_site(s) != protocol::NOP5).count();
    status_line("patch: done", n);
    log_torn_events();
    crate::nmi::watchdog::drain_to_console();
    LoopReport { cycles: STATS.cycles.load(Ordering::Relaxed), totals: totals(), wrong_final_bytes: wrong, errors, disabled: disabled_reason() }
}
