//! The policy for traced code that runs in NMI context, the 2008 bug: a trace
//! site on the NMI path that is turned on (`trace_nmi_path`) is reported once
//! per site with Linux's warning text and a call trace into the NMI log, and,
//! unless `ftrace_keep_on_nmi`, tracing is turned off from a safe context (the
//! patching loop acts on the request). Runs in NMI context: no lock, no
//! allocation.

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::arch::percpu::this_cpu;
use crate::debug::symbols::Location;
use crate::events::EventKind;
use crate::nmi::log::{TraceFrame, format_ftrace_nmi_warning};
use crate::nmi::watchdog::NMI_LOG;

/// Times traced code ran in NMI context (one warning each, whether or not the
/// log still had room for its text).
pub static FTRACE_NMI_WARNINGS: AtomicU64 = AtomicU64::new(0);
/// `ftrace_keep_on_nmi`: warn, but keep tracing.
static KEEP_ON_NMI: AtomicBool = AtomicBool::new(false);

/// Set the policy (boot CPU, before tracing starts).
pub fn init(keep_on_nmi: bool) {
    KEEP_ON_NMI.store(keep_on_nmi, Ordering::Relaxed);
}

/// A trace site ran in NMI context (called once per site by the trace hook):
/// log the 2008 warning and, unless `ftrace_keep_on_nmi`, ask the patching
/// engine to turn tracing off from a safe context.
pub fn ftrace_nmi_warning(site: u64, fp: u64) {
    let cpu = this_cpu();
    FTRACE_NMI_WARNINGS.fetch_add(1, Ordering::Relaxed);
    let keep = KEEP_ON_NMI.load(Ordering::Relaxed);
    let table = crate::debug::backtrace::table();
    let at = table.and_then(|t| t.lookup(site));
    // The site itself, then every return address up the frame-pointer chain.
    let mut frames: heapless::Vec<(u64, Option<Location<'static>>), 24> = heapless::Vec::new();
    let _ = frames.push((site, at));
    for ret in crate::debug::backtrace::return_addresses(fp).take(23) {
        let loc = table.and_then(|t| t.lookup(ret - 1)).map(|l| Location { offset: l.offset + 1, ..l });
        let _ = frames.push((ret, loc));
    }
    struct Unknown;
    impl core::fmt::Display for Unknown {
        fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            f.write_str("?")
        }
    }
    let rec = NMI_LOG.push(|r| {
        let site_name: &dyn core::fmt::Display = match &at {
            Some(l) => l,
            None => &Unknown,
        };
        let mut it = frames.iter().map(|(a, l)| TraceFrame { addr: *a, symbol: l.as_ref().map(|l| l as &dyn core::fmt::Display) });
        let _ = format_ftrace_nmi_warning(r, site_name, keep, cpu.index(), cpu.apic_id(), &mut it);
    });
    if let Some(i) = rec {
        crate::events::record(EventKind::Warning, i as u64);
    }
    if !keep {
        super::control::request_disable(super::control::DisableReason::NmiContext);
    }
}

