//! Cross-CPU calls: run a function on every other online CPU through an IPI
//! and wait until each one has acknowledged, with a timeout that names the
//! CPUs that did not answer. The patching engine's sync rounds are built on it.
//!
//! One call is in flight at a time. The request is published as
//! (function, argument, sequence number); each CPU's handler runs the function
//! once per sequence number and then publishes that number in its
//! `xcall_done`. A CPU waiting to start its own call keeps serving requests
//! meanwhile, so two CPUs calling each other cannot deadlock with interrupts off.

use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use heapless::Vec;

use crate::apic::lapic::{self, Dest, icr};
use crate::arch::idt::vector;
use crate::arch::percpu::{self, this_cpu};
use crate::arch::trap::{Disposition, TrapFrame};
use crate::time::clock;

/// A function run on other CPUs: `fn(arg)`, in interrupt context (IF=0).
pub type XcallFn = fn(usize);

static LOCK: AtomicBool = AtomicBool::new(false);
static SEQ: AtomicU64 = AtomicU64::new(0);
static FUNC: AtomicUsize = AtomicUsize::new(0);
static ARG: AtomicUsize = AtomicUsize::new(0);

/// CPUs that did not acknowledge in time, by APIC id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timeout {
    /// The first silent CPUs' APIC ids.
    pub missing: Vec<u32, 16>,
    /// Silent CPUs beyond those listed.
    pub more: usize,
}

impl core::fmt::Display for Timeout {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "cross-CPU call not acknowledged by APIC id(s)")?;
        for id in &self.missing {
            write!(f, " {id}")?;
        }
        if self.more > 0 {
            write!(f, " and {} more", self.more)?;
        }
        Ok(())
    }
}

/// Run the pending request on this CPU if it has not yet (idempotent).
fn serve() {
    let cpu = this_cpu();
    loop {
        let seq = SEQ.load(Ordering::Acquire);
        if seq <= cpu.xcall_done.load(Ordering::Relaxed) {
            return;
        }
        let (f, a) = (FUNC.load(Ordering::Acquire), ARG.load(Ordering::Acquire));
        // A new request may have been published between the loads: retry.
        if SEQ.load(Ordering::Acquire) != seq {
            continue;
        }
        if f != 0 {
            // SAFETY: only `call_others` stores FUNC, from an `XcallFn`.
            let f = unsafe { core::mem::transmute::<usize, XcallFn>(f) };
            f(a);
        }
        cpu.xcalls.fetch_add(1, Ordering::Relaxed);
        cpu.xcall_done.store(seq, Ordering::Release);
        return;
    }
}

fn handler(_frame: &mut TrapFrame) -> Disposition {
    crate::trace_site!();
    serve();
    lapic::eoi();
    // The caller waits for the acknowledgement stored above. A one-site int3
    // batch (three sync rounds) with the workers busy took 4.3-6.3 ms of
    // TCG guest time without this and 1.3-1.4 ms with it (`batch_1_int3`,
    // `cargo xtask bench`).
    crate::arch::cpu::pause_for_others();
    Disposition::Resume
}

/// Install the IPI handler. Boot CPU, before APs start.
pub fn init() {
    crate::arch::trap::register(vector::XCALL, handler);
}

/// Run `f(arg)` on every other online CPU; return when all have run it, or
/// after `timeout_ns` with the APIC ids that did not. Interrupts may be on or
/// off on the caller; never call from NMI context.
pub fn call_others(f: XcallFn, arg: usize, timeout_ns: u64) -> Result<(), Timeout> {
    // Interrupts off while taking the lock and sending: our own IPI handler
    // must not serve a request while the lock loop is serving the same one.
    // The wait runs with the caller's interrupt state, so a caller that had
    // them on keeps taking its timer interrupts while another CPU is slow
    // to answer: its own lockup detector sees it alive, and its timer goes
    // on sending watchdog NMIs (issue 28: a CPU stuck with interrupts off
    // had stopped CPU 0's timer, and with it the watchdog, through the
    // patching loop's sync rounds).
    x86_64::instructions::interrupts::without_interrupts(|| start_others(f, arg)).wait(timeout_ns)
}

/// A call in flight, started by [`start_others`]: the caller holds the
/// cross-CPU call lock until [`Pending::wait`] returns.
pub struct Pending {
    seq: u64,
    me: usize,
}

/// Start `f(arg)` on every other online CPU without waiting (for callers that
/// must do something while the others run `f`, like stop_machine). Call with
/// interrupts off and finish with [`Pending::wait`].
pub fn start_others(f: XcallFn, arg: usize) -> Pending {
    let me = this_cpu();
    while LOCK.compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed).is_err() {
        serve();
        core::hint::spin_loop();
    }
    FUNC.store(f as usize, Ordering::Release);
    ARG.store(arg, Ordering::Release);
    let seq = SEQ.fetch_add(1, Ordering::AcqRel) + 1;
    // We do not run it ourselves.
    me.xcall_done.store(seq, Ordering::Release);
    for c in targets(me.index()) {
        lapic::send_ipi(Dest::Apic(c.apic_id()), icr::DELIVERY_FIXED | vector::XCALL as u64);
    }
    Pending { seq, me: me.index() }
}

fn targets(me: usize) -> impl Iterator<Item = &'static percpu::PerCpu> {
    percpu::all().iter().filter(move |c| c.index() != me && c.online.load(Ordering::Acquire))
}

/// How many other CPUs a call reaches now.
pub fn other_online() -> usize {
    targets(this_cpu().index()).count()
}

/// `c` missed a round that timed out after `timeout_ns`: count its stall,
/// and show it (a console line here, its registers and call trace from an
/// NMI there) on the stall's first timed-out round and then with a back-off
/// (`nmi::stall`), as Linux's CSD-lock debugging does.
fn note_stall(c: &percpu::PerCpu, me: usize, timeout_ns: u64) {
    let now = clock::now_ns();
    let m = crate::nmi::stall::missed(c.xcall_stall_rounds.load(Ordering::Relaxed));
    c.xcall_stall_rounds.store(m.rounds, Ordering::Relaxed);
    if m.new_stall {
        c.stalled_xcalls.fetch_add(1, Ordering::Relaxed);
        c.xcall_stall_since_ns.store(now.saturating_sub(timeout_ns).max(1), Ordering::Relaxed);
    }
    if m.report {
        let waited_ms = now.saturating_sub(c.xcall_stall_since_ns.load(Ordering::Relaxed)) / 1_000_000;
        let stall = c.stalled_xcalls.load(Ordering::Relaxed);
        log::warn!(
            "csd: cpu{me} waited {waited_ms} ms for cpu{} (APIC id {}) to answer a cross-CPU call (stall #{stall}, timed-out round {}): NMI backtrace requested",
            c.index(),
            c.apic_id(),
            m.rounds
        );
        crate::nmi::cpu_backtrace::request(c, waited_ms, stall);
    }
}

impl Pending {
    /// Wait until every target acknowledged, or `timeout_ns`; releases the lock.
    pub fn wait(self, timeout_ns: u64) -> Result<(), Timeout> {
        self.wait_each(timeout_ns, &mut [])
    }

    /// [`Pending::wait`], also noting in `acked[i]` the TSC at which this
    /// caller first saw CPU `i` (dense index) acknowledge (benchmarks: the
    /// round trip to each CPU). Entries of CPUs not reached stay as they are.
    pub fn wait_each(self, timeout_ns: u64, acked: &mut [u64]) -> Result<(), Timeout> {
        let seq = self.seq;
        let deadline = clock::deadline_after_ns(timeout_ns);
        let result = loop {
            let mut all = true;
            for c in targets(self.me) {
                if c.xcall_done.load(Ordering::Acquire) < seq {
                    all = false;
                } else if let Some(t) = acked.get_mut(c.index()).filter(|t| **t == 0) {
                    *t = crate::arch::cpu::rdtsc();
                }
            }
            if all {
                for c in targets(self.me) {
                    if c.xcall_stall_rounds.load(Ordering::Relaxed) != 0 {
                        c.xcall_stall_rounds.store(0, Ordering::Relaxed);
                        c.xcall_stall_since_ns.store(0, Ordering::Relaxed);
                    }
                }
                break Ok(());
            }
            if crate::arch::cpu::rdtsc() >= deadline {
                let mut t = Timeout { missing: Vec::new(), more: 0 };
                for c in targets(self.me).filter(|c| c.xcall_done.load(Ordering::Acquire) < seq) {
                    if t.missing.push(c.apic_id()).is_err() {
                        t.more += 1;
                    }
                    note_stall(c, self.me, timeout_ns);
                }
                break Err(t);
            }
            core::hint::spin_loop();
        };
        LOCK.store(false, Ordering::Release);
        result
    }
}
