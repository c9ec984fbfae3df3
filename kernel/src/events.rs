//! Where the kernel's trace events go: the application installs sinks (its
//! trace buffers), and the trace hook (`patch/site.rs`), the patching engine
//! and the NMI watchdog record into them. A neutral module, so that `nmi/`
//! and `patch/` both record events without importing each other.
//!
//! Sinks run in any context, NMI included: they must not lock or allocate.

use core::sync::atomic::{AtomicUsize, Ordering};

use crate::arch::percpu::Context;

/// A traced function ran: `(site, parent return address, context)`.
pub type FunctionSink = fn(site: u64, parent: u64, ctx: Context);

/// The events that are not function calls, with what their argument means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum EventKind {
    /// A patch batch was applied; arg = sites in it, with its duration.
    PatchBatch = 1,
    /// A sync round ended; arg = 1 when a CPU did not answer in time, with its duration.
    SyncRound = 2,
    /// A watchdog NMI; arg = 0 IPI source, 1 performance counter.
    NmiTick = 3,
    /// A record was added to the NMI log; arg = its index.
    Warning = 4,
}

/// A non-function event: `(kind, argument, duration in ns)`, recorded when
/// it ends (the duration is 0 for the instant kinds).
pub type KindSink = fn(kind: EventKind, arg: u64, dur_ns: u64);

static FUNCTION_SINK: AtomicUsize = AtomicUsize::new(0);
static KIND_SINK: AtomicUsize = AtomicUsize::new(0);

/// Install the sink of function events (once, at boot, before tracing starts).
pub fn set_function_sink(f: FunctionSink) {
    FUNCTION_SINK.store(f as usize, Ordering::Release);
}

/// Install the sink of the other kinds.
pub fn set_kind_sink(f: KindSink) {
    KIND_SINK.store(f as usize, Ordering::Release);
}

/// Record a function event (no-op until a sink is installed).
pub fn record_function(site: u64, parent: u64, ctx: Context) {
    let s = FUNCTION_SINK.load(Ordering::Acquire);
    if s != 0 {
        // SAFETY: only `set_function_sink` stores here, from a `FunctionSink`.
        let f = unsafe { core::mem::transmute::<usize, FunctionSink>(s) };
        f(site, parent, ctx);
    }
}

/// Record an instant non-function event (no-op until a sink is installed).
pub fn record(kind: EventKind, arg: u64) {
    record_span(kind, arg, 0);
}

/// Record a non-function event that lasted `dur_ns` and ends now.
pub fn record_span(kind: EventKind, arg: u64, dur_ns: u64) {
    let s = KIND_SINK.load(Ordering::Acquire);
    if s != 0 {
        // SAFETY: only `set_kind_sink` stores here, from a `KindSink`.
        let f = unsafe { core::mem::transmute::<usize, KindSink>(s) };
        f(kind, arg, dur_ns);
    }
}
