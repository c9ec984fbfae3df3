//! The monotonic nanosecond clock: the TSC, its frequency taken from CPUID
//! or measured against the HPET, the ACPI PM timer or the PIT (chosen in
//! `reference.rs`, measured in `calibrate.rs`).

use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

use super::reference::Reference;
use crate::arch::cpu::rdtsc;

static TSC_HZ: AtomicU64 = AtomicU64::new(0);
static TSC_BASE: AtomicU64 = AtomicU64::new(0);
/// Nanoseconds per TSC tick, as a 32.32 fixed-point number.
static NS_PER_TICK_32: AtomicU64 = AtomicU64::new(0);

/// What the boot calibration decided.
#[derive(Clone, Debug)]
pub struct Calibration {
    pub reference: Reference,
    pub tsc_hz: u64,
    /// The other references: their frequency and distance, or why none.
    pub checks: Vec<String>,
}

static CALIBRATION: spin::Once<Calibration> = spin::Once::new();

/// Start the clock at `hz`. It counts from `base`, the TSC at kernel entry,
/// so log timestamps are times since the kernel started.
pub fn set(base: u64, c: Calibration) {
    let hz = c.tsc_hz.max(1);
    TSC_BASE.store(base.max(1), Ordering::Relaxed);
    NS_PER_TICK_32.store(((1_000_000_000u128 << 32) / hz as u128) as u64, Ordering::Relaxed);
    TSC_HZ.store(hz, Ordering::Release);
    CALIBRATION.call_once(|| c);
}

/// The boot calibration (a placeholder naming no reference before it).
pub fn calibration() -> Calibration {
    CALIBRATION.get().cloned().unwrap_or(Calibration { reference: Reference::Pit, tsc_hz: 0, checks: Vec::new() })
}

pub fn tsc_hz() -> u64 {
    TSC_HZ.load(Ordering::Acquire)
}

/// TSC ticks to nanoseconds.
pub fn ticks_to_ns(ticks: u64) -> u64 {
    ((ticks as u128 * NS_PER_TICK_32.load(Ordering::Relaxed) as u128) >> 32) as u64
}

/// Nanoseconds since kernel entry (0 before calibration). Lock-free, NMI-safe.
pub fn now_ns() -> u64 {
    ns_at(rdtsc())
}

/// The clock's reading at TSC value `tsc` (0 before calibration): one
/// RDTSC can give an event both its TSC and its time. Lock-free, NMI-safe.
pub fn ns_at(tsc: u64) -> u64 {
    let base = TSC_BASE.load(Ordering::Relaxed);
    if base == 0 {
        return 0;
    }
    ticks_to_ns(tsc.saturating_sub(base))
}

/// TSC value `ns` from now (for deadlines).
pub fn deadline_after_ns(ns: u64) -> u64 {
    rdtsc() + (ns as u128 * tsc_hz() as u128 / 1_000_000_000) as u64
}

/// Busy-wait `ns` nanoseconds.
pub fn delay_ns(ns: u64) {
    let end = deadline_after_ns(ns);
    while rdtsc() < end {
        core::hint::spin_loop();
    }
}

/// Poll `done` until it says yes or `ns` nanoseconds pass; whether it did
/// (the bounded hardware waits of the drivers).
pub fn spin_until(ns: u64, mut done: impl FnMut() -> bool) -> bool {
    let end = deadline_after_ns(ns);
    loop {
        if done() {
            return true;
        }
        if rdtsc() >= end {
            return false;
        }
        core::hint::spin_loop();
    }
}
