//! The three ways of changing a batch of sites: the int3 protocol
//! (`protocol::apply_int3`), stop_machine (the 2008 method) and naive writes
//! (to show why the protocol exists), and [`apply`], which runs the one in force.

use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use alloc::vec::Vec;
use log::error;

use super::config::{Code, Strategy, SyncMode};
use super::control::{strategy, sync_mode};
use super::machine::{Machine, serialize, sync_timeout_ns};
use super::protocol::{self, BatchStats, Patch, Platform};
use super::site;
use super::stats::STATS;
use crate::events::EventKind;
use crate::smp::xcall;
use crate::time::clock;

static HOLD: AtomicBool = AtomicBool::new(false);
static ARRIVED: AtomicUsize = AtomicUsize::new(0);

fn hold(mode: usize) {
    ARRIVED.fetch_add(1, Ordering::AcqRel);
    while HOLD.load(Ordering::Acquire) {
        core::hint::spin_loop();
    }
    serialize(SyncMode::from_code(mode as u8));
}

/// The 2008 method: every other CPU spins in an IPI handler with interrupts
/// off while the bytes are written (NMIs still arrive). One rendezvous per batch.
fn apply_stop_machine(m: &mut Machine, batch: &mut [Patch]) -> Result<BatchStats, protocol::Error> {
    protocol::plan(m, batch)?;
    x86_64::instructions::interrupts::without_interrupts(|| {
        HOLD.store(true, Ordering::Release);
        ARRIVED.store(0, Ordering::Release);
        let others = xcall::other_online();
        let pending = xcall::start_others(hold, m.sync.code() as usize);
        STATS.sync_rounds.fetch_add(1, Ordering::Relaxed);
        let deadline = clock::deadline_after_ns(sync_timeout_ns());
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
        let r = pending.wait(sync_timeout_ns());
        if !all_held || r.is_err() {
            STATS.sync_failures.fetch_add(1, Ordering::Relaxed);
            error!("patch: stop_machine rendezvous failed ({} of {others} CPUs held)", ARRIVED.load(Ordering::Acquire));
            return Err(protocol::Error::Sync);
        }
        serialize(m.sync);
        Ok(BatchStats { sites: batch.len(), sync_rounds: 1 })
    })
}

pub(super) static NAIVE_GAP_NS: AtomicU64 = AtomicU64::new(0);


/// Sites whose torn-call target holds int3 (function padding), by registry
/// index: a tear there traps at once and the oracle recovers.
pub(super) static GUARDED: spin::Once<Vec<bool>> = spin::Once::new();

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
        m.write(a1, &p.new[r1]);
        if gap > 0 && guarded(p.site) {
            clock::delay_ns(gap);
        }
        m.write(a2, &p.new[r2]);
    }
    Ok(BatchStats { sites: batch.len(), sync_rounds: 0 })
}

/// Apply one batch with the strategy in force.
pub fn apply(batch: &mut [Patch]) -> Result<BatchStats, protocol::Error> {
    let mut m = Machine::new(sync_mode());
    let t = crate::arch::cpu::rdtsc();
    let r = match strategy() {
        Strategy::Int3 => protocol::apply_int3(&mut m, batch),
        Strategy::StopMachine => apply_stop_machine(&mut m, batch),
        Strategy::Naive => apply_naive(&mut m, batch),
    };
    let ns = clock::ticks_to_ns(crate::arch::cpu::rdtsc() - t);
    STATS.batch_ns_total.fetch_add(ns, Ordering::Relaxed);
    if let Ok(s) = &r {
        STATS.batches.fetch_add(1, Ordering::Relaxed);
        STATS.sites_patched.fetch_add(s.sites as u64, Ordering::Relaxed);
        crate::events::record_span(EventKind::PatchBatch, s.sites as u64, ns);
    }
    r
}

