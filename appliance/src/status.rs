//! The live state as the guest-host contract's `Status`, read from the
//! counters of every subsystem: the one collector behind `/status`,
//! `/metrics` and the screen console.

use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::Ordering;

use appliance::contract::{ClockStatus, CpuStatus, FtraceStatus, PatchingStatus, Status, WatchdogStatus};
use kernel::arch::percpu;

/// The kernel command line, as `/status` reports it.
static CMDLINE: spin::Once<String> = spin::Once::new();

/// Record the command line (boot CPU, once).
pub fn init(cmdline: &str) {
    CMDLINE.call_once(|| String::from(cmdline));
}

/// What the appliance reports now: `/status`, `/metrics` and the screen.
pub fn collect() -> Status {
    use kernel::patch::{control, stats::STATS};
    let cpus: Vec<CpuStatus> = percpu::all()
        .iter()
        .filter(|c| c.online.load(Ordering::Relaxed))
        .map(|c| {
            let acc = crate::events::cpu_accounts(c.index());
            CpuStatus {
                cpu: c.index() as u32,
                apic_id: c.apic_id(),
                watchdog: String::from(kernel::nmi::watchdog::cpu_source(c)),
                nmis: c.nmis.load(Ordering::Relaxed),
                timer_ticks: c.timer_ticks.load(Ordering::Relaxed),
                int3_emulated: c.int3_emulated.load(Ordering::Relaxed),
                torn: c.torn.load(Ordering::Relaxed),
                traced_while_off: c.traced_while_off.load(Ordering::Relaxed),
                missed_while_on: c.missed_while_on.load(Ordering::Relaxed),
                lockups: c.lockups.load(Ordering::Relaxed),
                stalled_xcalls: c.stalled_xcalls.load(Ordering::Relaxed),
                xcall_stalled_ms: match c.xcall_stall_since_ns.load(Ordering::Relaxed) {
                    0 => 0,
                    since => kernel::time::clock::now_ns().saturating_sub(since) / 1_000_000,
                },
                nmi_backtraces: c.backtraces.load(Ordering::Relaxed),
                nmi_site_calls: c.site_calls[2].load(Ordering::Relaxed),
                events: acc.iter().map(|a| a.produced()).sum(),
                lost: acc.iter().map(|a| a.lost()).sum(),
                events_by_context: acc.map(|a| a.produced()),
                lost_by_context: acc.map(|a| a.lost()),
            }
        })
        .collect();
    let n = kernel::nmi::watchdog::totals();
    let log = &kernel::nmi::watchdog::NMI_LOG;
    let heap = kernel::mem::heap::usage();
    Status {
        cpu_brand: String::from(kernel::arch::cpu::brand()),
        apic: String::from(match kernel::apic::lapic::mode() {
            kernel::apic::lapic::Mode::X2Apic => "x2apic",
            kernel::apic::lapic::Mode::XApic => "xapic",
        }),
        cpus_online: cpus.len() as u32,
        cpus,
        watchdog: WatchdogStatus {
            source: String::from(kernel::nmi::watchdog::source().name()),
            hz: kernel::nmi::watchdog::hz(),
            ipi: n.ipi,
            pmu: n.pmu,
            external: n.external,
            swallowed: n.swallowed,
            late_pmi: n.late_pmi,
            unknown: n.unknown,
            ipi_fallback_cpus: n.ipi_fallback_cpus,
            takeover_rounds: kernel::nmi::watchdog::takeover_rounds(),
            lockups: n.lockups,
            nested: n.nested,
            exceptions_in_nmi: n.exceptions_in_nmi,
            ftrace_nmi_warnings: kernel::patch::nmi_policy::FTRACE_NMI_WARNINGS.load(Ordering::Relaxed),
            log_records: log.len() as u64,
            log_dropped: log.dropped() as u64,
        },
        clock: clock_status(),
        patching: PatchingStatus {
            strategy: String::from(control::strategy().name()),
            sync: String::from(control::sync_mode().name()),
            cycles: STATS.cycles.load(Ordering::Relaxed),
            batches: STATS.batches.load(Ordering::Relaxed),
            sync_rounds: STATS.sync_rounds.load(Ordering::Relaxed),
            sync_failures: STATS.sync_failures.load(Ordering::Relaxed),
            sites: kernel::patch::site::registry().map_or(0, |r| r.sites.len() as u64),
            enabled: STATS.enabled.load(Ordering::Relaxed),
        },
        ftrace: FtraceStatus { enabled: control::disabled_reason().is_none(), disabled_reason: control::disabled_reason().map(|r| String::from(r.text())) },
        net: crate::net_state::status(),
        http: crate::net_state::http_status(),
        heap_used: heap.0 as u64,
        heap_free: heap.1 as u64,
        uptime_ns: kernel::time::clock::now_ns(),
        cmdline: CMDLINE.get().cloned().unwrap_or_default(),
    }
}

/// The clock as calibrated at boot.
fn clock_status() -> ClockStatus {
    let c = kernel::time::clock::calibration();
    ClockStatus {
        reference: String::from(c.reference.name()),
        tsc_hz: c.tsc_hz,
        apic_timer_hz: kernel::boot::main::apic_timer_hz(),
        checks: c.checks.iter().map(|s| String::from(s.as_str())).collect(),
    }
}
