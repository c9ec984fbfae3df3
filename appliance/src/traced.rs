//! Traced code the appliance runs on every CPU: the generated functions (see
//! `build.rs`) and the worker loop that keeps calling them while the
//! patching loop flips their sites.

#![allow(clippy::unreadable_literal)]

use core::sync::atomic::{AtomicU64, Ordering};

include!(concat!(env!("OUT_DIR"), "/traced_generated.rs"));

/// Calls made by all workers (so the work cannot be optimized away).
pub static WORK: AtomicU64 = AtomicU64::new(0);

/// Call every generated function, forever, with interrupts on (the timer
/// handler's and the cross-CPU call handler's sites are hit too).
pub fn worker() -> ! {
    x86_64::instructions::interrupts::enable();
    let mut acc = kernel::arch::percpu::this_cpu().index() as u64 + 1;
    loop {
        for f in TRACED.iter() {
            acc = f(acc);
        }
        WORK.fetch_add(TRACED.len() as u64, Ordering::Relaxed);
        core::hint::black_box(acc);
    }
}
