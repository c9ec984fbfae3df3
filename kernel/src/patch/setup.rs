//! Setting up the engine on the boot CPU, before the APs start: the site
//! registry checked against the text, the text alias, the guarded sites, the
//! strategy and sync mode, the #BP handler and the oracle.

use core::sync::atomic::Ordering;

use alloc::vec::Vec;
use log::{error, info, warn};

use super::config::{Config, SyncMode};
use super::control::{SERIALIZE_OK, TRACE_NMI_PATH, set_strategy, set_sync_mode};
use super::machine::{TEXT_ALIAS, TEXT_END, TEXT_START, read_site};
use super::protocol::{self, SITE_LEN, torn_call_target};
use super::site::{self, Registry};
use super::strategy::{GUARDED, NAIVE_GAP_NS};

/// Set up the engine (boot CPU, before the APs start): the registry, the
/// text alias, the #BP handler and the oracle. Returns the registry.
/// `listed(function name)` says which sites the boot log names one by one
/// (the application's own choice, e.g. its kernel paths but not its thousands
/// of generated functions).
pub fn init(cfg: &Config, features: &crate::arch::cpu::Features, listed: fn(&str) -> bool) -> Result<&'static Registry, &'static str> {
    let layout = crate::mem::paging::image_layout();
    // Text runs from the start of .text (after .boot) to __text_end.
    let (start, end) = (layout.start, layout.text_end);
    TEXT_START.store(start, Ordering::Relaxed);
    TEXT_END.store(end, Ordering::Relaxed);
    crate::mem::paging::map_alias(start, end, TEXT_ALIAS).map_err(|_| "cannot map the text alias")?;
    let reg = site::init();
    let mut bad = 0;
    for &s in &reg.sites {
        if s < start || s + SITE_LEN > end || read_site(s) != protocol::NOP5 {
            bad += 1;
        }
    }
    if bad > 0 {
        return Err("trace-site registry lists addresses that are not 5-byte NOPs in the text");
    }
    let g: Vec<bool> = reg
        .sites
        .iter()
        .map(|&s| {
            let t = torn_call_target(s);
            // SAFETY: `t` is checked to lie inside the mapped text first.
            t >= start && t < end && unsafe { (t as *const u8).read_volatile() } == 0xcc
        })
        .collect();
    info!("patch: {} of {} sites guarded (their torn-call target is int3 padding)", g.iter().filter(|&&x| x).count(), g.len());
    // Every site must belong to a function of the symbol table.
    if let Some(t) = crate::debug::backtrace::table() {
        let mut unnamed = 0;
        for &s in &reg.sites {
            match t.lookup(s) {
                None => unnamed += 1,
                Some(l) if listed(l.symbol.name) => info!("patch: kernel-path site {s:#x} {l}"),
                Some(_) => {}
            }
        }
        if unnamed > 0 {
            warn!("patch: {unnamed} sites are in no symbol");
        }
    }
    GUARDED.call_once(|| g);
    let mut sync = cfg.sync;
    if sync == SyncMode::Serialize && !features.serialize {
        error!("patch: sync=serialize refused: this CPU does not report SERIALIZE (CPUID.(EAX=7,ECX=0):EDX[14]); using sync=cpuid");
        sync = SyncMode::Cpuid;
    }
    set_sync_mode(sync);
    set_strategy(cfg.strategy);
    SERIALIZE_OK.store(features.serialize, Ordering::Relaxed);
    NAIVE_GAP_NS.store(cfg.naive_gap_us as u64 * 1000, Ordering::Relaxed);
    TRACE_NMI_PATH.store(cfg.trace_nmi_path, Ordering::Relaxed);
    super::nmi_policy::init(cfg.ftrace_keep_on_nmi);
    super::trap_context::install();
    match super::site::check_trampoline() {
        Ok(()) => info!("patch: the trace trampoline preserves every caller-saved register, the flags and XMM0-XMM15"),
        Err(e) => {
            error!("patch: the trace trampoline clobbers a register a site's caller relies on ({e}); tracing stays off");
            return Err("the trace trampoline clobbers registers");
        }
    }
    info!("patch: {} trace sites registered ({} duplicate entries), text alias at {TEXT_ALIAS:#x}", reg.sites.len(), reg.duplicates);
    Ok(reg)
}
