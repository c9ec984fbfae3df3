//! The patching loop: flip every site on, then off, in batches, with the
//! strategy in force; act on disable requests and run-time control between
//! batches; print status lines; end with every site off and verified.

use core::sync::atomic::Ordering;

use alloc::vec::Vec;
use log::{info, warn};

use super::config::{Config, Strategy};
use super::control::{self, DisableReason, TRACE_NMI_PATH, disabled_reason, strategy, sync_mode};
use super::machine::read_site;
use super::protocol::{self, BatchStats, Insn, Patch};
use super::site::{self, Registry, state};
use super::stats::{STATS, Totals, totals};
use super::strategy::{GUARDED, apply};
use super::poll_hook::poll_hook;
use super::trap_context::torn_events;
use crate::arch::percpu::{self, this_cpu};
use crate::time::clock;

/// Print the kept torn events (not from exception or NMI context).
fn log_torn_events() {
    for ev in torn_events() {
        warn!("patch: torn execution on cpu{} at site {:#x} (rip {:#x}, vector {}) bytes {:02x?}", ev.cpu, ev.site, ev.rip, ev.vector, ev.bytes);
    }
}




/// Turn `sites[range]` on or off as one batch, publishing their states.
/// Under `naive` only guarded sites are flipped: a tear elsewhere sends a CPU
/// into arbitrary code, which the oracle cannot bring back.
pub(super) fn flip(reg: &Registry, range: core::ops::Range<usize>, on: bool, batch: &mut Vec<Patch>) -> Result<BatchStats, protocol::Error> {
    let target = site::trace_entry as *const () as u64;
    let (from, to) = if on { (Insn::Nop5, Insn::Call { target }) } else { (Insn::Call { target }, Insn::Nop5) };
    let only_guarded = strategy() == Strategy::Naive;
    let g = GUARDED.get();
    let nmi_ok = TRACE_NMI_PATH.load(Ordering::Relaxed);
    let skip = |i: usize| (only_guarded && !g.is_some_and(|g| g[i])) || (reg.nmi_path[i] && !nmi_ok);
    batch.clear();
    for i in range.clone() {
        if skip(i) {
            continue;
        }
        batch.push(Patch::new(reg.sites[i], from, to)?);
        reg.states[i].store(state::CHANGING, Ordering::Release);
    }
    let r = apply(batch);
    if r.is_ok() {
        for i in range {
            if skip(i) {
                continue;
            }
            reg.states[i].store(if on { state::ON } else { state::OFF }, Ordering::Release);
        }
    }
    r
}


fn status_line(prefix: &str, sites: usize) {
    let t = totals();
    info!(
        "{prefix}: strategy={} sync={} cycles={} sites={sites} batches={} sync_rounds={} int3_emulated={} torn={} traced_while_off={} missed_while_on={} calls task/irq/nmi={}/{}/{}",
        strategy().name(),
        sync_mode().name(),
        STATS.cycles.load(Ordering::Relaxed),
        STATS.batches.load(Ordering::Relaxed),
        STATS.sync_rounds.load(Ordering::Relaxed),
        t.int3_emulated,
        t.torn,
        t.traced_while_off,
        t.missed_while_on,
        t.site_calls[0],
        t.site_calls[1],
        t.site_calls[2]
    );
    let n = crate::nmi::watchdog::totals();
    info!(
        "{prefix}: nmi source={} hz={} ipi={} pmu={} external={} unknown={} nested={} exceptions_in_nmi={} lockups={} ftrace={}",
        crate::nmi::watchdog::source().name(),
        crate::nmi::watchdog::hz(),
        n.ipi,
        n.pmu,
        n.external,
        n.unknown,
        n.nested,
        n.exceptions_in_nmi,
        n.lockups,
        if disabled_reason().is_some() { "disabled" } else { "enabled" }
    );
    for c in percpu::all().iter().filter(|c| c.online.load(Ordering::Relaxed)) {
        info!(
            "{prefix}: cpu{} apic {}: calls task/irq/nmi={}/{}/{} int3_emulated={} (task/irq/nmi {}/{}/{}) torn={} missed_while_on={} timer_ticks={}",
            c.index(),
            c.apic_id(),
            c.site_calls[0].load(Ordering::Relaxed),
            c.site_calls[1].load(Ordering::Relaxed),
            c.site_calls[2].load(Ordering::Relaxed),
            c.int3_emulated.load(Ordering::Relaxed),
            c.int3_by_ctx[0].load(Ordering::Relaxed),
            c.int3_by_ctx[1].load(Ordering::Relaxed),
            c.int3_by_ctx[2].load(Ordering::Relaxed),
            c.torn.load(Ordering::Relaxed),
            c.missed_while_on.load(Ordering::Relaxed),
            c.timer_ticks.load(Ordering::Relaxed)
        );
    }
}

/// What a bounded loop found.
#[derive(Clone, Copy, Debug)]
pub struct LoopReport {
    pub cycles: u64,
    pub totals: Totals,
    /// Sites whose bytes are not what was last requested (must be 0).
    pub wrong_final_bytes: usize,
    pub errors: u64,
    /// Tracing was turned off on request (and why).
    pub disabled: Option<DisableReason>,
}

/// Turn every site that is on (or changing) off: the response to a disable request.
fn all_off(reg: &Registry, batch: &mut Vec<Patch>) -> Result<usize, protocol::Error> {
    let target = site::trace_entry as *const () as u64;
    let on: Vec<usize> = (0..reg.sites.len()).filter(|&i| read_site(reg.sites[i]) != protocol::NOP5).collect();
    for chunk in on.chunks(256) {
        batch.clear();
        for &i in chunk {
            batch.push(Patch::new(reg.sites[i], Insn::Call { target }, Insn::Nop5)?);
            reg.states[i].store(state::CHANGING, Ordering::Release);
        }
        apply(batch)?;
        for &i in chunk {
            reg.states[i].store(state::OFF, Ordering::Release);
        }
    }
    Ok(on.len())
}

/// The patching loop: flip every site on, then off, in batches of
/// `patch_batch`, forever or for `patch_cycles` cycles; a status line every
/// `status_secs`. Ends with every site off and its bytes verified.
pub fn run_loop(cfg: &Config, reg: &'static Registry) -> LoopReport {
    let n = match cfg.sites {
        0 => reg.sites.len(),
        k => (k as usize).min(reg.sites.len()),
    };
    let mut chunk = if cfg.batch == 0 { n.max(1) } else { cfg.batch as usize };
    let bounded = cfg.cycles != 0 || cfg.seconds != 0;
    let mut batch: Vec<Patch> = Vec::with_capacity(chunk);
    let status_ns = cfg.status_secs as u64 * 1_000_000_000;
    let mut next_status = clock::now_ns() + status_ns;
    let mut errors = 0u64;
    let mut on = true;
    let stop_at = match cfg.seconds {
        0 => u64::MAX,
        s => clock::now_ns() + s as u64 * 1_000_000_000,
    };
    STATS.enabled.store(true, Ordering::Relaxed);
    if strategy() == Strategy::Naive {
        let g = GUARDED.get().map_or(0, |g| g.iter().filter(|&&x| x).count());
        warn!("patch: strategy=naive flips only the {g} guarded sites; the other {} stay off", n - g);
    }
    info!(
        "patch: loop on cpu{}: {n} sites, batches of {chunk}, strategy={} sync={}, every {} us",
        this_cpu().index(),
        strategy().name(),
        sync_mode().name(),
        cfg.interval_us
    );
    loop {
        if let Some(k) = control::take_pending_batch() {
            chunk = k;
            info!("patch: batches of {chunk} from now on");
        }
        let mut i = 0;
        while i < n {
            let end = (i + chunk).min(n);
            if let Err(e) = flip(reg, i..end, on, &mut batch) {
                errors += 1;
                warn!("patch: batch {i}..{end} failed: {e:?}");
            }
            i = end;
            if cfg.interval_us > 0 {
                clock::delay_ns(cfg.interval_us as u64 * 1000);
            }
            crate::nmi::watchdog::drain_to_console();
            poll_hook();
            crate::nmi::lockup_selftest::maybe_stall();
            if control::disable_requested().is_some() {
                break;
            }
            if clock::now_ns() >= next_status {
                next_status += status_ns;
                status_line("patch: status", n);
                log_torn_events();
            }
        }
        if let Some(why) = control::disable_requested() {
            control::set_disabled(why);
            match all_off(reg, &mut batch) {
                Ok(k) => warn!("ftrace: tracing disabled ({}): {k} sites turned off", why.text()),
                Err(e) => {
                    errors += 1;
                    warn!("ftrace: turning sites off failed: {e:?}");
                }
            }
            if bounded {
                break;
            }
            // The engine stays off until re-enabled (control endpoint); keep
            // serving the network and the NMI log meanwhile.
            STATS.enabled.store(false, Ordering::Relaxed);
            while disabled_reason().is_some() {
                crate::nmi::watchdog::drain_to_console();
                poll_hook();
                clock::delay_ns(1_000_000);
            }
            for r in reg.warned.iter() {
                r.store(false, Ordering::Relaxed);
            }
            info!("ftrace: tracing enabled again");
            STATS.enabled.store(true, Ordering::Relaxed);
            on = true;
            continue;
        }
        if !on {
            if let Some(s) = control::take_pending_strategy() {
                control::set_strategy(s);
                info!("patch: strategy={} from now on", strategy().name());
            }
            let c = STATS.cycles.fetch_add(1, Ordering::Relaxed) + 1;
            if (cfg.cycles != 0 && c >= cfg.cycles as u64) || clock::now_ns() >= stop_at {
                break;
            }
        }
        on = !on;
    }
    STATS.enabled.store(false, Ordering::Relaxed);
    // Every site, flipped or not, must read as the NOP again.
    let wrong = reg.sites.iter().filter(|&&s| read_site(s) != protocol::NOP5).count();
    status_line("patch: done", n);
    log_torn_events();
    crate::nmi::watchdog::drain_to_console();
    LoopReport { cycles: STATS.cycles.load(Ordering::Relaxed), totals: totals(), wrong_final_bytes: wrong, errors, disabled: disabled_reason() }
}
