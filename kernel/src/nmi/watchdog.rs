//! The local-APIC NMI watchdog on every CPU.
//!
//! Source, chosen at boot and reported: a cycles counter overflowing through
//! the LVT performance-counter entry as NMI (Intel architectural perfmon, AMD
//! counters), where it really counts; else NMI IPIs that CPU 0's local-APIC
//! timer broadcasts to every CPU, itself included (the LVT timer entry cannot
//! deliver NMIs, an IPI can). When CPU 0's rounds stop (it is stuck with
//! interrupts off), any other CPU whose timer ticks sends them (`round.rs`):
//! no CPU is a single point of failure. The NMI handler identifies the source (the
//! per-CPU IPI ledger, `ledger.rs`, the counter's overflow, port 0x61's
//! SERR/IOCHK for external NMIs, else unknown), counts it, re-arms the
//! counter, and runs [`lapic_wd_event`], which detects hard lockups: a CPU
//! whose timer-interrupt count has not moved for `watchdog_thresh` seconds.
//!
//! Nothing here that runs in NMI context takes a lock or allocates: reports
//! go into [`NMI_LOG`], which ordinary contexts print ([`drain_to_console`]).

use core::fmt::Write;
use core::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

use log::{info, warn};
use raw_cpuid::CpuId;

use super::ledger;
use super::pmu::{self, Counter, Source};
use super::pmu_driver;
use super::round;
use super::cpu_backtrace;
use crate::apic::lapic::{self, Dest, icr};
use crate::arch::idt::vector;
use crate::arch::msr_probe;
use crate::arch::percpu::{self, PerCpu, this_cpu};
use crate::arch::trap::{self, Disposition, TrapFrame};
use super::config::{Config, NmiSourceChoice};
use crate::events::EventKind;
use crate::time::clock;

pub use super::log::NMI_LOG;

/// Records already printed on the console.
static PRINTED: AtomicUsize = AtomicUsize::new(0);

static SOURCE: spin::Once<Source> = spin::Once::new();
static HZ: AtomicU32 = AtomicU32::new(0);
static THRESH_NS: AtomicU64 = AtomicU64::new(10_000_000_000);
/// Initial counter value (PMU source) and counter width.
static PMU_INITIAL: AtomicU64 = AtomicU64::new(0);
static PMU_WIDTH: AtomicU32 = AtomicU32::new(48);
static PMU_COUNTERS: AtomicU32 = AtomicU32::new(1);
/// The counter period in events, and the most one write can load.
static PMU_PERIOD: AtomicU64 = AtomicU64::new(0);
static PMU_MAX_PERIOD: AtomicU64 = AtomicU64::new(0);
/// `PerCpu::wd_pmu_index` when no counter is armed on that CPU.
const NOT_ARMED: u32 = u32::MAX;

/// PC/AT NMI status and control port (0x61; Linux `asm/mach_traps.h`):
/// bit 7 PCI SERR# seen, bit 6 IOCHK# seen (read); bit 2 clear-and-disable
/// SERR#, bit 3 clear-and-disable IOCHK# (write); bits 0-3 are the writable ones.
const PORT_61: u16 = 0x61;
const PORT_61_SERR: u8 = 1 << 7;
const PORT_61_IOCHK: u8 = 1 << 6;
const PORT_61_CLEAR_SERR: u8 = 1 << 2;
const PORT_61_CLEAR_IOCHK: u8 = 1 << 3;
const PORT_61_WRITABLE: u8 = 0x0F;

/// The source in force (`Off` before `init`).
pub fn source() -> Source {
    SOURCE.get().copied().unwrap_or(Source::Off)
}

pub fn hz() -> u32 {
    HZ.load(Ordering::Relaxed)
}

/// The CPU's PMU registers for [`pmu_driver`]: MSRs through the #GP-safe
/// accessors, the LVT performance-counter entry through the local APIC.
struct CpuRegs;

impl pmu_driver::Regs for CpuRegs {
    fn rdmsr(&mut self, m: u32) -> Option<u64> {
        msr_probe::try_rdmsr(m)
    }
    fn wrmsr(&mut self, m: u32, v: u64) -> bool {
        msr_probe::try_wrmsr(m, v)
    }
    fn arm_lvtpc(&mut self) {
        lapic::write(lapic::reg::LVT_PERF, lapic::LVT_DELIVERY_NMI);
    }
}

/// Does the counter count? Program the first counter firmware does not use
/// without interrupt, burn some cycles, read it back, leave it as found.
fn probe(c: Counter, counters: u8) -> Result<bool, pmu_driver::ArmError> {
    use pmu_driver::ArmError::Fault;
    let n = pmu_driver::free_counter(&mut CpuRegs, c, counters)?;
    let (sel, ctr) = c.msrs_n(n);
    let w = |m: u32, v: u64| if msr_probe::try_wrmsr(m, v) { Ok(()) } else { Err(Fault(m)) };
    w(sel, 0)?;
    w(ctr, 0)?;
    let global = c.global().map(|g| (g, msr_probe::try_rdmsr(g.ctrl).unwrap_or(0)));
    if let Some((g, ctl)) = global {
        w(g.ctrl, ctl | 1 << n)?;
    }
    w(sel, c.evtsel(false))?;
    let before = msr_probe::try_rdmsr(ctr).ok_or(Fault(ctr))?;
    let mut x = 0u64;
    for i in 0..200_000u64 {
        x = core::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
    }
    let after = msr_probe::try_rdmsr(ctr).ok_or(Fault(ctr))?;
    msr_probe::try_wrmsr(sel, 0);
    if let Some((g, ctl)) = global {
        msr_probe::try_wrmsr(g.ctrl, ctl);
    }
    Ok(after != before)
}

/// Choose the source (boot CPU, after TSC calibration, before the timers
/// start), register the NMI handler. Returns the source.
pub fn init(cfg: &Config, cpu_hz: u64) -> Source {
    let src = if !cfg.enabled {
        Source::Off
    } else if cfg.source == NmiSourceChoice::Ipi {
        Source::IpiBroadcast("nmi_source=ipi on the command line")
    } else {
        let offer = pmu::offer(&CpuId::new());
        let (counts, taken) = match offer {
            pmu::Offer::Counter { counter, counters, .. } => match probe(counter, counters) {
                Ok(b) => (Some(b), None),
                Err(e @ pmu_driver::ArmError::AllTaken(_)) => (None, Some(e.text())),
                Err(pmu_driver::ArmError::Fault(_)) => (None, None),
            },
            pmu::Offer::None(_) => (None, None),
        };
        let s = match taken {
            Some(why) => Source::IpiBroadcast(why),
            None => pmu::select(offer, counts),
        };
        if let (Source::PerfCounter(c), pmu::Offer::Counter { width, counters, .. }) = (s, offer) {
            match pmu::period(cpu_hz, cfg.hz, c, width) {
                Ok(p) => {
                    PMU_INITIAL.store(pmu::initial_count(p, width), Ordering::Relaxed);
                    PMU_WIDTH.store(width as u32, Ordering::Relaxed);
                    PMU_COUNTERS.store(counters as u32, Ordering::Relaxed);
                    PMU_PERIOD.store(p, Ordering::Relaxed);
                    PMU_MAX_PERIOD.store(pmu::period(u64::MAX, 1, c, width).unwrap_or(p), Ordering::Relaxed);
                    info!("nmi: {} counter, {width} bits, period {p} cycles for {} Hz", c.name(), cfg.hz);
                    s
                }
                Err(e) => Source::IpiBroadcast(if matches!(e, pmu::PeriodError::Width(_)) { "counter too narrow" } else { "no rate" }),
            }
        } else {
            s
        }
    };
    HZ.store(cfg.hz, Ordering::Relaxed);
    THRESH_NS.store(cfg.thresh_secs as u64 * 1_000_000_000, Ordering::Relaxed);
    SOURCE.call_once(|| src);
    trap::register(vector::NMI, on_nmi);
    match src {
        Source::Off => info!("nmi: watchdog off (nmi_watchdog=0)"),
        Source::PerfCounter(c) => info!("nmi: watchdog source {} at {} Hz on every CPU", c.name(), cfg.hz),
        Source::IpiBroadcast(why) => info!(
            "nmi: watchdog source ipi-broadcast at {} Hz (NMI IPIs from cpu0's local-APIC timer to every CPU), because {why}",
            cfg.hz
        ),
    }
    src
}

/// The local-APIC timer rate for `cpu`: CPU 0 drives the IPI broadcast.
pub fn timer_hz_for(cpu: usize, timer_hz: u32) -> u32 {
    match source() {
        // With a counter, CPU 0 still sends IPIs to any CPU whose counter
        // never interrupted (see `init_cpu`).
        Source::IpiBroadcast(_) | Source::PerfCounter(_) if cpu == 0 => timer_hz.max(hz()),
        _ => timer_hz,
    }
}

/// Arm this CPU's counter (PMU source) and start lockup tracking. Every CPU,
/// once, after its local APIC is set up.
pub fn init_cpu() {
    let cpu = this_cpu();
    cpu.wd_last_ticks.store(cpu.timer_ticks.load(Ordering::Relaxed), Ordering::Relaxed);
    cpu.wd_last_change_ns.store(clock::now_ns(), Ordering::Relaxed);
    if let Source::PerfCounter(c) = source() {
        let width = PMU_WIDTH.load(Ordering::Relaxed) as u8;
        let counters = PMU_COUNTERS.load(Ordering::Relaxed) as u8;
        match pmu_driver::arm(&mut CpuRegs, c, width, counters, PMU_INITIAL.load(Ordering::Relaxed)) {
            Ok((a, skipped)) => {
                cpu.wd_pmu_index.store(a.index as u32, Ordering::Release);
                if skipped > 0 {
                    warn!("nmi: cpu{}: performance counters 0..{} are in use (enabled by firmware); counter {} is the watchdog's", cpu.index(), skipped - 1, a.index);
                }
                // The first NMI must come soon, or this CPU gets IPIs instead.
                let t0 = clock::now_ns();
                let deadline = pmu_driver::first_nmi_deadline_ns(hz());
                let ok = loop {
                    let since = clock::now_ns().saturating_sub(t0);
                    if let Some(ok) = pmu_driver::first_nmi(cpu.nmi_pmu.load(Ordering::Acquire), since, deadline) {
                        break ok;
                    }
                    core::hint::spin_loop();
                };
                if !ok {
                    cpu.wd_pmu_index.store(NOT_ARMED, Ordering::Release);
                    msr_probe::try_wrmsr(c.msrs_n(a.index).0, 0);
                    cpu.wd_fallback_why.store(WHY_NO_PMI, Ordering::Relaxed);
                    cpu.wd_ipi_fallback.store(true, Ordering::Release);
                    warn!(
                        "nmi: cpu{}: the {} counter counts but raised no NMI within {} ms (PMI not delivered): this CPU gets watchdog NMI IPIs instead",
                        cpu.index(),
                        c.name(),
                        deadline / 1_000_000
                    );
                }
            }
            Err(e) => {
                cpu.wd_fallback_why.store(if matches!(e, pmu_driver::ArmError::AllTaken(_)) { WHY_ALL_TAKEN } else { WHY_FAULT }, Ordering::Relaxed);
                cpu.wd_ipi_fallback.store(true, Ordering::Release);
                warn!("nmi: cpu{}: no performance counter ({}): this CPU gets watchdog NMI IPIs instead", cpu.index(), e.text());
            }
        }
    }
    if !matches!(source(), Source::Off) {
        log::debug!("nmi: cpu{} apic {}: watchdog source {}", cpu.index(), cpu.apic_id(), source().name());
    }
}

/// Why a CPU's watchdog fell back from its counter to IPIs (`PerCpu::wd_fallback_why`).
const WHY_NO_PMI: u32 = 1;
const WHY_ALL_TAKEN: u32 = 2;
const WHY_FAULT: u32 = 3;

/// This CPU's watchdog source as `/status` shows it: the source in force,
/// or, where this CPU fell back to IPIs, why.
pub fn cpu_source(c: &PerCpu) -> &'static str {
    match c.wd_fallback_why.load(Ordering::Relaxed) {
        WHY_NO_PMI => "ipi-broadcast (fallback: the counter raised no NMI after arming)",
        WHY_ALL_TAKEN => "ipi-broadcast (fallback: every counter in use by firmware)",
        WHY_FAULT => "ipi-broadcast (fallback: counter MSRs fault)",
        _ => source().name(),
    }
}

/// Bring the counter NMI rate back to the configured one when the core
/// clock runs away from the TSC's (turbo, throttling): `nmis` is the median
/// CPU's counter NMIs over `window_ns`. Every CPU loads the new period at its
/// next overflow. Not from NMI context (it logs).
pub fn correct_rate(nmis: u64, window_ns: u64) {
    let Source::PerfCounter(c) = source() else { return };
    let period = PMU_PERIOD.load(Ordering::Relaxed);
    let Some(p) = pmu_driver::corrected_period(period, nmis, window_ns, hz(), PMU_MAX_PERIOD.load(Ordering::Relaxed)) else { return };
    PMU_PERIOD.store(p, Ordering::Relaxed);
    PMU_INITIAL.store(pmu::initial_count(p, PMU_WIDTH.load(Ordering::Relaxed) as u8), Ordering::Relaxed);
    info!(
        "nmi: {} period corrected from {period} to {p} events: {} NMIs/s measured for {} Hz configured (the core clock is not the TSC's)",
        c.name(),
        nmis * 1_000_000_000 / window_ns.max(1),
        hz()
    );
}

/// When the last round of watchdog IPIs went out (ns), from any CPU.
static LAST_ROUND_NS: AtomicU64 = AtomicU64::new(0);
/// Rounds sent by a CPU other than the primary (CPU 0), because the
/// primary's had stopped.
static TAKEOVER_ROUNDS: AtomicU64 = AtomicU64::new(0);

/// Rounds another CPU sent while CPU 0's had stopped.
pub fn takeover_rounds() -> u64 {
    TAKEOVER_ROUNDS.load(Ordering::Relaxed)
}

/// Called from every CPU's timer interrupt: one round of watchdog NMIs to
/// every online CPU, itself included, on each of CPU 0's ticks, and on
/// another CPU's tick when CPU 0's rounds have stopped (`round.rs`). One
/// IPI per CPU, not the "all" shorthand: a processor not started yet (or
/// parked by a failed start) sits in firmware code, whose handlers an NMI
/// would crash.
pub fn timer_tick(cpu: &PerCpu) {
    let all = match source() {
        Source::IpiBroadcast(_) => true,
        Source::PerfCounter(_) => false,
        Source::Off => return,
    };
    let now = clock::now_ns();
    if cpu.index() == 0 {
        LAST_ROUND_NS.store(now, Ordering::Relaxed);
    } else {
        let last = LAST_ROUND_NS.load(Ordering::Relaxed);
        if !round::due(false, now, last, hz()) || LAST_ROUND_NS.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_err() {
            return;
        }
        TAKEOVER_ROUNDS.fetch_add(1, Ordering::Relaxed);
    }
    for c in percpu::all().iter().filter(|c| c.online.load(Ordering::Relaxed) && (all || c.wd_ipi_fallback.load(Ordering::Relaxed))) {
        // Count before raising: the target's handler reads the count (see `ledger`).
        c.nmi_ipi_sent.fetch_add(1, Ordering::Release);
        // To its own APIC id too: the "self" shorthand with delivery mode NMI
        // is invalid (SDM Vol. 3A §11.6.1, Table 11-4).
        lapic::send_ipi(Dest::Apic(c.apic_id()), icr::DELIVERY_NMI);
    }
}

/// `selftest=nmi_race`: the CPU whose handler is held, how many more times,
/// and for how long.
static RACE_CPU: AtomicUsize = AtomicUsize::new(usize::MAX);
static RACE_LEFT: AtomicU32 = AtomicU32::new(0);
static RACE_NS: AtomicU64 = AtomicU64::new(0);

/// Hold `cpu`'s NMI handler for `ns` at its entry, every other one of its
/// next `2 * times` NMIs (before it reads the IPI count: the window of the
/// race the ledger handles); the NMI after each held one is the latched one.
pub fn selftest_delay_handler(cpu: usize, times: u32, ns: u64) {
    RACE_NS.store(ns, Ordering::Relaxed);
    RACE_CPU.store(cpu, Ordering::Relaxed);
    RACE_LEFT.store(2 * times, Ordering::Release);
}

/// Held handlers still to come.
pub fn selftest_delays_left() -> u32 {
    RACE_LEFT.load(Ordering::Acquire)
}

fn on_nmi(frame: &mut TrapFrame) -> Disposition {
    let t0 = crate::arch::cpu::rdtsc();
    let cpu = this_cpu();
    if cpu.index() == RACE_CPU.load(Ordering::Relaxed)
        && let Ok(left) = RACE_LEFT.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
        && left % 2 == 0
    {
        clock::delay_ns(RACE_NS.load(Ordering::Relaxed));
    }
    // Another CPU waiting for this one asked for its state.
    cpu_backtrace::on_nmi(cpu, frame);
    let mut ours = false;
    // The IPI ledger: counts, so a latched or late duplicate is never "unknown".
    let state = ledger::State {
        seen: cpu.nmi_ledger_seen.load(Ordering::Relaxed),
        credit: cpu.nmi_ledger_credit.load(Ordering::Relaxed),
        life: cpu.nmi_ledger_life.load(Ordering::Relaxed),
        prev_ipi: cpu.nmi_ledger_prev_ipi.load(Ordering::Relaxed),
    };
    let before = state;
    let sent = cpu.nmi_ipi_sent.load(Ordering::Acquire);
    let back_to_back = cpu.nmi_last_rip.swap(frame.rip, Ordering::Relaxed) == frame.rip && !resumes_after_hlt(frame.rip);
    let (verdict, state) = ledger::classify(sent, state, back_to_back);
    cpu.nmi_ledger_seen.store(state.seen, Ordering::Relaxed);
    cpu.nmi_ledger_credit.store(state.credit, Ordering::Relaxed);
    cpu.nmi_ledger_life.store(state.life, Ordering::Relaxed);
    cpu.nmi_ledger_prev_ipi.store(state.prev_ipi, Ordering::Relaxed);
    let at = cpu.nmi_trail_at.fetch_add(1, Ordering::Relaxed);
    cpu.nmi_trail[at as usize % ledger::TRAIL].store(ledger::Step { sent, before, verdict }.pack(), Ordering::Relaxed);
    if let ledger::Verdict::Ipi { .. } = verdict {
        cpu.nmi_ipi.fetch_add(1, Ordering::Relaxed);
        ours = true;
    }
    if let Source::PerfCounter(c) = source() {
        let index = cpu.wd_pmu_index.load(Ordering::Acquire);
        if index != NOT_ARMED {
            let a = pmu_driver::Armed { counter: c, index: index as u8, width: PMU_WIDTH.load(Ordering::Relaxed) as u8, initial: PMU_INITIAL.load(Ordering::Relaxed) };
            if pmu_driver::on_nmi(&mut CpuRegs, &a) {
                cpu.nmi_pmu.fetch_add(1, Ordering::Relaxed);
                cpu.wd_last_pmi_ns.store(clock::now_ns(), Ordering::Relaxed);
                ours = true;
            }
        }
    }
    if ours {
        crate::events::record(EventKind::NmiTick, matches!(source(), Source::PerfCounter(_)) as u64);
        lapic_wd_event(frame);
    } else if verdict == ledger::Verdict::Swallowed {
        cpu.nmi_swallowed.fetch_add(1, Ordering::Relaxed);
    } else if cpu.index() == 0 && external_reason_and_clear() {
        cpu.nmi_external.fetch_add(1, Ordering::Relaxed);
    } else if matches!(source(), Source::PerfCounter(_))
        && pmu_driver::unclaimed(Some(clock::now_ns().saturating_sub(cpu.wd_last_pmi_ns.load(Ordering::Relaxed))).filter(|_| cpu.nmi_pmu.load(Ordering::Relaxed) > 0))
            == pmu_driver::Unclaimed::LatePmi
    {
        cpu.nmi_late_pmi.fetch_add(1, Ordering::Relaxed);
    } else if cpu.nmi_unknown.fetch_add(1, Ordering::Relaxed) < UNKNOWN_REPORTS {
        report_unknown(cpu, frame);
    }
    cpu.nmi_cycles.fetch_add(crate::arch::cpu::rdtsc() - t0, Ordering::Relaxed);
    Disposition::Resume
}

/// HLT (SDM Vol. 2A, "HLT": opcode F4).
const OPCODE_HLT: u8 = 0xF4;

/// Did the interrupted code stop in HLT (its RIP is the next instruction)?
/// An idle CPU takes every NMI at that same RIP, so there "the same RIP as
/// the previous NMI" does not mean back to back.
fn resumes_after_hlt(rip: u64) -> bool {
    let layout = crate::mem::paging::image_layout();
    let (start, end) = (layout.start, layout.text_end);
    // SAFETY: `rip - 1` is checked to lie in the kernel's text, which is
    // mapped readable for the kernel's whole life; one byte is read.
    rip > start && rip <= end && unsafe { ((rip - 1) as *const u8).read_volatile() } == OPCODE_HLT
}

/// Unknown NMIs reported per CPU (the rest are only counted).
const UNKNOWN_REPORTS: u64 = 4;

/// An unknown NMI goes to the NMI log, as Linux's "NMI received for unknown
/// reason" does (`arch/x86/kernel/nmi.c`, `unknown_nmi_error`), with what the
/// IPI ledger saw over this CPU's last NMIs (oldest first) and where the NMI
/// landed. NMI context: the log takes no lock and does not allocate.
fn report_unknown(cpu: &PerCpu, frame: &TrapFrame) {
    let rec = NMI_LOG.push(|r| {
        let _ = writeln!(r, "Uhhuh. NMI received for unknown reason on CPU {} (not a watchdog IPI, counter or external NMI)", cpu.index());
        let at = cpu.nmi_trail_at.load(Ordering::Relaxed);
        let _ = write!(r, "  ledger, last NMIs:");
        for k in (0..ledger::TRAIL as u64).rev().filter(|&k| k < at) {
            if let Some(step) = ledger::Step::unpack(cpu.nmi_trail[((at - 1 - k) % ledger::TRAIL as u64) as usize].load(Ordering::Relaxed)) {
                let _ = write!(r, " | {step}");
            }
        }
        let _ = writeln!(r);
        let _ = trap::write_dump(r, frame);
    });
    if let Some(i) = rec {
        crate::events::record(EventKind::Warning, i as u64);
    }
}

/// Port 0x61 says SERR# or IOCHK#: an external NMI. Clear the latch that said
/// so (pulse the clear bit, as the PC/AT NMI status register wants), else
/// every later unknown NMI would look external too. Only CPU 0 asks: the
/// chipset routes external NMIs to the boot CPU, and the port is one for the
/// whole machine (Linux `arch/x86/kernel/nmi.c`, `default_do_nmi` and
/// `pci_serr_error` / `io_check_error`).
fn external_reason_and_clear() -> bool {
    let mut port = x86_64::instructions::port::Port::<u8>::new(PORT_61);
    // SAFETY: the PC/AT NMI status and control port; reading has no side
    // effect, and only the clear bits are pulsed (the PIT gate and speaker
    // bits are written back as read).
    unsafe {
        let reason = port.read();
        if reason & (PORT_61_SERR | PORT_61_IOCHK) == 0 {
            return false;
        }
        let clear = (if reason & PORT_61_SERR != 0 { PORT_61_CLEAR_SERR } else { 0 }) | (if reason & PORT_61_IOCHK != 0 { PORT_61_CLEAR_IOCHK } else { 0 });
        let keep = reason & PORT_61_WRITABLE;
        port.write(keep | clear);
        port.write(keep & !clear);
    }
    true
}

/// The watchdog's per-tick work on every CPU (the name of the 2008 report).
/// On the NMI path: its site is patched only with `trace_nmi_path`.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn lapic_wd_event(frame: &TrapFrame) {
    crate::trace_site!(nmi);
    wd_check_lockup(frame);
}

/// Hard-lockup check: has this CPU's timer-interrupt count moved within the threshold?
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn wd_check_lockup(frame: &TrapFrame) {
    crate::trace_site!(nmi);
    let cpu = this_cpu();
    let now = clock::now_ns();
    let ticks = cpu.timer_ticks.load(Ordering::Relaxed);
    if ticks != cpu.wd_last_ticks.swap(ticks, Ordering::Relaxed) {
        cpu.wd_last_change_ns.store(now, Ordering::Relaxed);
        cpu.wd_reported.store(false, Ordering::Relaxed);
        return;
    }
    let stuck = now.saturating_sub(cpu.wd_last_change_ns.load(Ordering::Relaxed));
    if stuck >= THRESH_NS.load(Ordering::Relaxed) && !cpu.wd_reported.swap(true, Ordering::Relaxed) {
        cpu.lockups.fetch_add(1, Ordering::Relaxed);
        let rec = NMI_LOG.push(|r| {
            let _ = writeln!(r, "NMI watchdog: hard LOCKUP on cpu{} (no timer interrupt for {} ms)", cpu.index(), stuck / 1_000_000);
            let _ = trap::write_dump(r, frame);
        });
        if let Some(i) = rec {
            crate::events::record(EventKind::Warning, i as u64);
        }
    }
}

/// One CPU drains at a time (others skip: the records are printed once).
static DRAINING: spin::Mutex<()> = spin::Mutex::new(());

/// Print NMI log records not printed yet (not from NMI context: takes the
/// console lock). Any CPU may call it; one that finds another draining
/// returns at once.
pub fn drain_to_console() {
    let Some(_one) = DRAINING.try_lock() else { return };
    trap::report_unexpected();
    let mut printed = PRINTED.load(Ordering::Relaxed);
    while let Some(text) = NMI_LOG.get(printed) {
        let mut c = crate::debug::log::console();
        let _ = write!(c, "{text}");
        drop(c);
        printed += 1;
        PRINTED.store(printed, Ordering::Relaxed);
    }
    let dropped = NMI_LOG.dropped();
    static REPORTED_DROPS: AtomicUsize = AtomicUsize::new(0);
    if dropped > REPORTED_DROPS.swap(dropped, Ordering::Relaxed) {
        warn!("nmi: {dropped} NMI log records dropped (log full)");
    }
}

/// NMIs over every CPU, by what they were.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// Watchdog NMI IPIs.
    pub ipi: u64,
    /// Performance-counter overflows.
    pub pmu: u64,
    /// Port 0x61 said SERR# or IOCHK#.
    pub external: u64,
    /// Latched duplicates of watchdog IPIs already accounted for.
    pub swallowed: u64,
    /// Counter NMIs that came after their overflow was acknowledged.
    pub late_pmi: u64,
    /// CPUs whose counter never interrupted, now on watchdog IPIs.
    pub ipi_fallback_cpus: u64,
    /// None of the above.
    pub unknown: u64,
    /// NMIs that arrived while one was running (the nested-NMI path).
    pub nested: u64,
    /// Exceptions taken inside an NMI handler.
    pub exceptions_in_nmi: u64,
    /// Hard lockups reported.
    pub lockups: u64,
}

/// NMI totals over every CPU.
pub fn totals() -> Totals {
    let mut t = Totals::default();
    for c in percpu::all() {
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        t.ipi += n(&c.nmi_ipi);
        t.pmu += n(&c.nmi_pmu);
        t.external += n(&c.nmi_external);
        t.swallowed += n(&c.nmi_swallowed);
        t.late_pmi += n(&c.nmi_late_pmi);
        t.ipi_fallback_cpus += c.wd_ipi_fallback.load(Ordering::Relaxed) as u64;
        t.unknown += n(&c.nmi_unknown);
        t.nested += n(&c.nmi_nested);
        t.exceptions_in_nmi += n(&c.nmi_exceptions);
        t.lockups += n(&c.lockups);
    }
    t
}
