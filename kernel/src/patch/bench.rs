//! What `cargo xtask bench` measures of the engine on the machine: sync
//! rounds, raw IPI round trips per CPU, and single batches per strategy.

use core::sync::atomic::Ordering;

use alloc::vec::Vec;

use super::config::{Code, Strategy, SyncMode};
use super::control::set_strategy;
use super::machine::{SYNC_TIMEOUT_NS, serialize, sync_ipi};
use super::protocol;
use super::run::flip;
use super::site::Registry;
use super::stats::STATS;
use crate::smp::xcall;

/// Benchmarks: one sync round with `mode` (local serialize + cross-CPU call),
/// in TSC ticks; `None` for the raw round trip (an empty cross-CPU call).
pub fn sync_round(mode: Option<SyncMode>) -> Result<u64, xcall::Timeout> {
    fn noop(_: usize) {}
    let t = crate::arch::cpu::rdtsc();
    match mode {
        None => xcall::call_others(noop, 0, SYNC_TIMEOUT_NS)?,
        Some(m) => {
            serialize(m);
            xcall::call_others(sync_ipi, m.code() as usize, SYNC_TIMEOUT_NS)?;
        }
    }
    Ok(crate::arch::cpu::rdtsc() - t)
}

/// Benchmarks: one raw IPI round to every other CPU; `each[i]` receives the
/// TSC ticks from sending the IPIs to CPU `i`'s acknowledgement (0 for this
/// CPU and CPUs not online).
pub fn ipi_each(each: &mut [u64]) -> Result<(), xcall::Timeout> {
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
pub fn flip_batch(reg: &Registry, range: core::ops::Range<usize>, on: bool, s: Strategy) -> Result<(u64, u64), protocol::Error> {
    set_strategy(s);
    let mut batch = Vec::with_capacity(range.len());
    let rounds = STATS.sync_rounds.load(Ordering::Relaxed);
    let t = crate::arch::cpu::rdtsc();
    flip(reg, range, on, &mut batch)?;
    Ok((crate::arch::cpu::rdtsc() - t, STATS.sync_rounds.load(Ordering::Relaxed) - rounds))
}

