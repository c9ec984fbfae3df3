//! The health check printed once boot is complete: every online CPU must take
//! timer interrupts. Tests read the line it prints.

use core::sync::atomic::Ordering;

use kernel::arch::percpu;
use kernel::boot::main::Kernel;
use kernel::time::clock;
use log::{error, info};

/// How long the CPUs get to show timer ticks.
const TICK_WAIT_NS: u64 = 2_000_000_000;

/// Wait (bounded) until every online CPU has taken timer interrupts, then log
/// `health: ok` or name the CPUs that did not tick.
pub fn report_when_ticking(k: &Kernel) {
    let online = || percpu::all().iter().filter(|c| c.online.load(Ordering::Acquire));
    let start: heapless::Vec<u64, { percpu::MAX_CPUS }> = percpu::all().iter().map(|c| c.timer_ticks.load(Ordering::Relaxed)).collect();
    let deadline = clock::deadline_after_ns(TICK_WAIT_NS);
    let ticked = |c: &percpu::PerCpu| c.timer_ticks.load(Ordering::Relaxed) > start[c.index()];
    while !online().all(ticked) && kernel::arch::cpu::rdtsc() < deadline {
        kernel::arch::cpu::idle_wait();
    }
    let (mut ok, mut stuck) = (0usize, heapless::Vec::<u32, { percpu::MAX_CPUS }>::new());
    for c in online() {
        if ticked(c) {
            ok += 1;
        } else {
            let _ = stuck.push(c.apic_id());
        }
    }
    let (used, free) = kernel::mem::heap::usage();
    if stuck.is_empty() {
        info!(
            "health: ok: {ok} CPUs online and ticking, boot took {} ms, heap {} KiB used / {} KiB free",
            k.boot_ns / 1_000_000,
            used / 1024,
            free / 1024
        );
    } else {
        error!("health: CPUs with APIC ids {:?} take no timer interrupts", stuck.as_slice());
    }
    info!("appliance: idle");
}

/// Measure each online CPU's watchdog NMI rate over `window_ns` and log it:
/// `nmi: rate: cpuN apic A: R NMIs/s`.
pub fn nmi_rate_report(window_ns: u64) {
    let online = || percpu::all().iter().filter(|c| c.online.load(Ordering::Acquire));
    let count = |c: &percpu::PerCpu| c.nmi_ipi.load(Ordering::Relaxed) + c.nmi_pmu.load(Ordering::Relaxed);
    let before: heapless::Vec<u64, { percpu::MAX_CPUS }> = percpu::all().iter().map(count).collect();
    let pmu_before: heapless::Vec<u64, { percpu::MAX_CPUS }> = percpu::all().iter().map(|c| c.nmi_pmu.load(Ordering::Relaxed)).collect();
    let t0 = kernel::arch::cpu::rdtsc();
    let deadline = clock::deadline_after_ns(window_ns);
    while kernel::arch::cpu::rdtsc() < deadline {
        kernel::nmi::watchdog::drain_to_console();
        kernel::arch::cpu::idle_wait();
    }
    let ns = clock::ticks_to_ns(kernel::arch::cpu::rdtsc() - t0).max(1);
    let src = kernel::nmi::watchdog::source();
    // The counter's rate follows the core clock: correct its period from the
    // median CPU among those the counter serves.
    let mut pmu: heapless::Vec<u64, { percpu::MAX_CPUS }> =
        online().filter(|c| !c.wd_ipi_fallback.load(Ordering::Relaxed)).map(|c| c.nmi_pmu.load(Ordering::Relaxed) - pmu_before[c.index()]).collect();
    pmu.sort_unstable();
    if let Some(m) = pmu.get(pmu.len() / 2) {
        kernel::nmi::watchdog::correct_rate(*m, ns);
    }
    for c in online() {
        let n = count(c) - before[c.index()];
        info!(
            "nmi: rate: cpu{} apic {}: {} NMIs/s (source {}, configured {} Hz, unknown {}, nested {})",
            c.index(),
            c.apic_id(),
            n * 1_000_000_000 / ns,
            src.name(),
            kernel::nmi::watchdog::hz(),
            c.nmi_unknown.load(Ordering::Relaxed),
            c.nmi_nested.load(Ordering::Relaxed)
        );
    }
}
