//! The screen console, refreshed about once a second from the CPUs' polling
//! paths (the patching loop between batches, idle CPUs): the rows of
//! `appliance::status_screen` over the live counters, drawn by
//! `kernel::screen::device` (only changed rows are rewritten).

use core::sync::atomic::{AtomicU64, Ordering};

use alloc::vec::Vec;
use appliance::status_screen::{CpuRow, View, rows};

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
    let st = crate::status::collect();
    let per_cpu: Vec<CpuRow> = st
        .cpus
        .iter()
        .map(|c| CpuRow { cpu: c.cpu as usize, apic_id: c.apic_id, nmis: c.nmis, int3: c.int3_emulated, torn: c.torn, events: c.events, lost: c.lost, stalled_ms: c.xcall_stalled_ms })
        .collect();
    let log = &kernel::nmi::watchdog::NMI_LOG;
    let last = log.len().checked_sub(1).and_then(|i| log.get(i)).and_then(|t| t.lines().next());
    let view = View {
        uptime_s: st.uptime_ns / 1_000_000_000,
        brand: &st.cpu_brand,
        cpus: per_cpu.len(),
        apic: match kernel::apic::lapic::mode() {
            kernel::apic::lapic::Mode::X2Apic => "x2APIC",
            kernel::apic::lapic::Mode::XApic => "xAPIC",
        },
        watchdog: &st.watchdog.source,
        watchdog_hz: st.watchdog.hz,
        net: crate::net_state::address(),
        net_problem: if st.net.link == "down" { Some("link down") } else { st.net.warnings.last().map(|w| w.as_str()) },
        strategy: &st.patching.strategy,
        sync: &st.patching.sync,
        sites: st.patching.sites as usize,
        patching: st.patching.enabled,
        cycles: st.patching.cycles,
        lockups: st.watchdog.lockups,
        nmi_warnings: st.watchdog.ftrace_nmi_warnings,
        ftrace_off: st.ftrace.disabled_reason.as_deref(),
        per_cpu: &per_cpu,
        last_nmi_log: last,
    };
    let r = rows(&view);
    if kernel::screen::device::draw(r.iter().map(|(t, tone)| (t.as_str(), *tone))) && FRAMES.fetch_add(1, Ordering::Relaxed) == 0 {
        log::info!("screen: first frame drawn ({} rows)", r.len());
    }
}
