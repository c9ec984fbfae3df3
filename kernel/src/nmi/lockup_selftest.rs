//! `selftest=lockup[:SECS]` and `selftest_cpu=N`: one CPU spins with
//! interrupts off, for good or for SECS seconds, so that the NMI watchdog
//! must report its hard lockup and every other mechanism must live with it
//! (the patching loop's sync rounds wait for it, the network is served by
//! another CPU, the watchdog's rounds come from another CPU when it is
//! CPU 0).
//!
//! The stall starts where the CPU holds nothing another needs: its role's
//! loop calls [`maybe_stall`] between two units of work (a batch, a round of
//! traced calls, a network poll). The application arms it ([`arm`]) once
//! every CPU has its role. The default CPU is the last one.

use core::sync::atomic::{AtomicU32, Ordering};

use log::{info, warn};

use crate::arch::percpu::{self, this_cpu};
use crate::time::clock;

const NONE: u32 = u32::MAX;
/// The CPU that stalls (index), `NONE` when nothing is armed or it has begun.
static CPU: AtomicU32 = AtomicU32::new(NONE);
/// How long it spins, in seconds (0: for good).
static SECS: AtomicU32 = AtomicU32::new(0);

/// Arm the stall of `cpu` (None: the last CPU) for `secs` seconds (0: for
/// good). Returns the CPU armed, or None with a warning when it cannot be.
pub fn arm(cpu: Option<u32>, secs: u32) -> Option<u32> {
    let online = percpu::all().iter().filter(|c| c.online.load(Ordering::Acquire)).count() as u32;
    let cpu = cpu.unwrap_or(online.saturating_sub(1));
    if online < 2 {
        warn!("selftest: lockup needs at least 2 CPUs (one must stay to see it)");
        return None;
    }
    if cpu >= online {
        warn!("selftest: selftest_cpu={cpu} but only {online} CPUs are online; no lockup armed");
        return None;
    }
    SECS.store(secs, Ordering::Relaxed);
    CPU.store(cpu, Ordering::Release);
    match secs {
        0 => info!("selftest: cpu{cpu} will spin with interrupts off for good, from its next pause between two units of work"),
        s => info!("selftest: cpu{cpu} will spin with interrupts off for {s} s, from its next pause between two units of work"),
    }
    Some(cpu)
}

/// If this CPU is the armed one, spin with interrupts off now (once).
/// Called by every role's loop between two units of work.
#[inline]
pub fn maybe_stall() {
    let me = this_cpu().index() as u32;
    if CPU.load(Ordering::Relaxed) == me && CPU.compare_exchange(me, NONE, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
        stall(me, SECS.load(Ordering::Relaxed));
    }
}

#[inline(never)]
fn stall(me: u32, secs: u32) {
    info!("selftest: cpu{me} spins with interrupts off");
    let t0 = clock::now_ns();
    x86_64::instructions::interrupts::without_interrupts(|| spin_with_interrupts_off(secs));
    let ms = (clock::now_ns() - t0) / 1_000_000;
    info!("selftest: cpu{me} resumes after {ms} ms with interrupts off");
}

/// The hard lockup itself: named, so that call traces show it.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn spin_with_interrupts_off(secs: u32) {
    let deadline = if secs == 0 { u64::MAX } else { clock::deadline_after_ns(secs as u64 * 1_000_000_000) };
    while crate::arch::cpu::rdtsc() < deadline {
        core::hint::spin_loop();
    }
}
