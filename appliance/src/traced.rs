//! Traced code the appliance runs on every CPU: the generated functions (see
//! `build.rs`) and the worker loop that keeps calling them while the
//! patching loop flips their sites.

#![allow(clippy::unreadable_literal)]

extern crate alloc;

use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

use kernel::arch::percpu::{Context, this_cpu};
use kernel::patch::site::{Registry, state};

include!(concat!(env!("OUT_DIR"), "/traced_generated.rs"));

/// Calls made by all workers (so the work cannot be optimized away).
pub static WORK: AtomicU64 = AtomicU64::new(0);

/// Calls between two offers of a worker's time to the network (`worker`).
/// An offer with no download running is one relaxed load. Under TCG with
/// two workers, 16 instead of 256 took the default appliance's
/// `/trace.ctf.tar` from medians of 15-19 to 21.5-23 MB/s (`bench/README.md`).
const CALLS_PER_HELP: usize = 16;

/// Call every generated function, forever, with interrupts on (the timer
/// handler's and the cross-CPU call handler's sites are hit too). Around each
/// call whose site is on and settled, check that the call reached the trace
/// hook (else count it as missed while on); the check is skipped when this CPU
/// served a cross-CPU call meanwhile, since a site can only change state
/// across sync rounds this CPU takes part in. Every `CALLS_PER_HELP` calls,
/// `help()` may lend the CPU to other work (the network's downloads).
pub fn worker(reg: Option<&'static Registry>, help: fn()) -> ! {
    x86_64::instructions::interrupts::enable();
    let cpu = this_cpu();
    // The registry index of each generated function's site.
    let idx: Vec<Option<usize>> = TRACED.iter().map(|f| reg.and_then(|r| r.site_in(*f as usize as u64, 64))).collect();
    let mut acc = cpu.index() as u64 + 1;
    loop {
        for (k, (f, i)) in TRACED.iter().zip(idx.iter()).enumerate() {
            if k % CALLS_PER_HELP == 0 {
                help();
            }
            let Some((r, i)) = reg.zip(*i) else {
                acc = f(acc);
                continue;
            };
            let before = r.states[i].load(Ordering::Acquire);
            let syncs = cpu.xcall_done.load(Ordering::Acquire);
            let calls = cpu.site_calls[Context::Task as usize].load(Ordering::Relaxed);
            acc = f(acc);
            if before == state::ON
                && r.states[i].load(Ordering::Acquire) == state::ON
                && cpu.xcall_done.load(Ordering::Acquire) == syncs
                && cpu.site_calls[Context::Task as usize].load(Ordering::Relaxed) == calls
            {
                cpu.missed_while_on.fetch_add(1, Ordering::Relaxed);
            }
        }
        WORK.fetch_add(TRACED.len() as u64, Ordering::Relaxed);
        core::hint::black_box(acc);
    }
}
