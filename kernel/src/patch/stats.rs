//! The engine's counters: engine-wide ones, and totals over every CPU's.

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::arch::percpu;

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
