//! The monotonic nanosecond clock: the TSC, calibrated once against the PIT.

use core::sync::atomic::{AtomicU64, Ordering};

use crate::arch::cpu::rdtsc;

static TSC_HZ: AtomicU64 = AtomicU64::new(0);
static TSC_BASE: AtomicU64 = AtomicU64::new(0);
/// Nanoseconds per TSC tick, as a 32.32 fixed-point number.
static NS_PER_TICK_32: AtomicU64 = AtomicU64::new(0);

/// Calibrate: the median of three 10 ms PIT windows. Returns the TSC
/// frequency. The clock counts from `base`, the TSC at kernel entry, so log
/// timestamps are times since the kernel started.
pub fn calibrate(base: u64) -> Result<u64, &'static str> {
    let mut samples = [0u64; 3];
    for s in samples.iter_mut() {
        *s = super::pit::tsc_ticks_over(10).ok_or("PIT channel 2 never reached terminal count")?;
    }
    samples.sort_unstable();
    let hz = samples[1] * 100;
    if hz == 0 {
        return Err("TSC does not advance");
    }
    TSC_BASE.store(base.max(1), Ordering::Relaxed);
    NS_PER_TICK_32.store(((1_000_000_000u128 << 32) / hz as u128) as u64, Ordering::Relaxed);
    TSC_HZ.store(hz, Ordering::Release);
    Ok(hz)
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
    let base = TSC_BASE.load(Ordering::Relaxed);
    if base == 0 {
        return 0;
    }
    ticks_to_ns(rdtsc().saturating_sub(base))
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
