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
