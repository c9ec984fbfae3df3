//! The screen console, refreshed about once a second from the CPUs' polling
//! paths (the patching loop between batches, idle CPUs): the rows of
//! `appliance::status_screen` over the live counters, drawn by
//! `kernel::screen::device` (only changed rows are rewritten).

use core::sync::atomic::{AtomicU64, Ordering};

use alloc::vec::Vec;
use appliance::status_screen::{CpuRow, View, rows};
use kernel::arch::percpu;
use kernel::patch::control;
use kernel::patch::stats::STATS;

const PERIOD_NS: u64 = 1_000_000_000;
static NEXT_NS: AtomicU64 = AtomicU64::new(0);
/// Frames drawn (the boot log says when the first one is up).
static FRAMES: AtomicU64 = AtomicU64::new(0);

/// Redraw when a period has passed since the last frame; else return at once.
pub fn refresh() {
    let now = kernel::time::clock::now_ns();
    let next = NEXT_NS.load(Ordering::Relaxed);
    if now < next || NEXT_NS.compare_exchange(next, now + PERIOD_NS, Ordering::Relaxed, Ordering::Relaxed).is_err() {
        return;
    }
    if kernel::screen::device::size().is_none() {
        return;
    }
    let per_cpu: Vec<CpuRow> = percpu::all()
        .iter()
        .filter(|c| c.online.load(Ordering::Relaxed))
        .map(|c| {
            let (events, lost) = crate::events::cpu_totals(c.index());
            CpuRow {
                cpu: c.index(),
                apic_id: c.apic_id(),
                nmis: c.nmis.load(Ordering::Relaxed),
                int3: c.int3_emulated.load(Ordering::Relaxed),
                torn: c.torn.load(Ordering::Relaxed),
                events,
                lost,
            }
        })
        .collect();
    let log = &kernel::nmi::watchdog::NMI_LOG;
    let last = log.len().checked_sub(1).and_then(|i| log.get(i)).and_then(|t| t.lines().next());
    let view = View {
        uptime_s: now / 1_000_000_000,
        brand: kernel::arch::cpu::brand(),
        cpus: per_cpu.len(),
        apic: match kernel::apic::lapic::mode() {
            kernel::apic::lapic::Mode::X2Apic => "x2APIC",
            kernel::apic::lapic::Mode::XApic => "xAPIC",
        },
        watchdog: kernel::nmi::watchdog::source().name(),
        watchdog_hz: kernel::nmi::watchdog::hz(),
        net: crate::net::address(),
        strategy: control::strategy().name(),
        sync: control::sync_mode().name(),
        sites: kernel::patch::site::registry().map_or(0, |r| r.sites.len()),
        patching: STATS.enabled.load(Ordering::Relaxed),
        cycles: STATS.cycles.load(Ordering::Relaxed),
        lockups: kernel::nmi::watchdog::totals().lockups,
        nmi_warnings: kernel::patch::nmi_policy::FTRACE_NMI_WARNINGS.load(Ordering::Relaxed),
        ftrace_off: control::disabled_reason().map(|r| r.text()),
        per_cpu: &per_cpu,
        last_nmi_log: last,
    };
    let r = rows(&view);
    if kernel::screen::device::draw(r.iter().map(|(t, tone)| (t.as_str(), *tone))) && FRAMES.fetch_add(1, Ordering::Relaxed) == 0 {
        log::info!("screen: first frame drawn ({} rows)", r.len());
    }
}
