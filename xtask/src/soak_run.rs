//! What a soak keeps of one run, whether of a guest it booted or of an
//! appliance elsewhere (`remote.rs`): the machine and the counters of each
//! `/status` answer, parsed once, and the run's report.

use std::path::PathBuf;

use appliance::contract::{CpuStatus, Status};
use serde::Serialize;

/// The counters of one `/status` answer that the report compares.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Counters {
    pub uptime_s: f64,
    pub nmis: u64,
    pub patch_cycles: u64,
    pub sync_rounds: u64,
    pub sync_failures: u64,
    pub int3_emulations: u64,
    pub torn: u64,
    pub traced_while_off: u64,
    pub missed_while_on: u64,
    pub lockups: u64,
    pub nested_nmis: u64,
    /// NMIs no source claimed (must stay 0), and latched duplicates of
    /// watchdog IPIs the ledger recognized.
    pub unknown_nmis: u64,
    pub swallowed_nmis: u64,
    pub exceptions_in_nmi: u64,
    pub nmi_warnings: u64,
    pub nmi_site_calls: u64,
    pub events: u64,
    pub lost: u64,
}

/// What a `/status` answer says of the machine (constant over a run).
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Machine {
    pub cpu_brand: String,
    pub cpus: u64,
    pub apic: String,
    pub watchdog: String,
    pub watchdog_hz: u64,
    /// The TSC's time reference and frequency.
    pub clock: String,
    pub tsc_mhz: f64,
    pub strategy: String,
    pub sites: u64,
}

/// Parse a `/status` body into the machine facts and the counters.
pub fn parse_status(body: &str) -> std::result::Result<(Machine, Counters), String> {
    let st: Status = serde_json::from_str(body).map_err(|e| format!("/status is not the appliance's Status: {e}"))?;
    let sum = |f: fn(&CpuStatus) -> u64| st.cpus.iter().map(f).sum::<u64>();
    let m = Machine {
        cpu_brand: st.cpu_brand.clone(),
        cpus: st.cpus_online.into(),
        apic: st.apic.clone(),
        watchdog: st.watchdog.source.clone(),
        watchdog_hz: st.watchdog.hz.into(),
        clock: st.clock.reference.clone(),
        tsc_mhz: st.clock.tsc_hz as f64 / 1e6,
        strategy: st.patching.strategy.clone(),
        sites: st.patching.sites,
    };
    let c = Counters {
        uptime_s: st.uptime_ns as f64 / 1e9,
        nmis: sum(|c| c.nmis),
        patch_cycles: st.patching.cycles,
        sync_rounds: st.patching.sync_rounds,
        sync_failures: st.patching.sync_failures,
        int3_emulations: sum(|c| c.int3_emulated),
        torn: sum(|c| c.torn),
        traced_while_off: sum(|c| c.traced_while_off),
        missed_while_on: sum(|c| c.missed_while_on),
        lockups: st.watchdog.lockups,
        nested_nmis: st.watchdog.nested,
        unknown_nmis: st.watchdog.unknown,
        swallowed_nmis: st.watchdog.swallowed,
        exceptions_in_nmi: st.watchdog.exceptions_in_nmi,
        nmi_warnings: st.watchdog.ftrace_nmi_warnings,
        nmi_site_calls: sum(|c| c.nmi_site_calls),
        events: sum(|c| c.events),
        lost: sum(|c| c.lost),
    };
    Ok((m, c))
}

/// A serial line that means the guest crashed: a panic, a fatal exception
/// (both print `cut here` then a named header), a triple fault QEMU reports,
/// or a QEMU error.
pub fn crash_line(line: &str) -> bool {
    line.contains("Kernel panic on CPU")
        || line.starts_with("FATAL: ")
        || line.contains("---[ end trace")
        || line.starts_with("qemu: ") && (line.contains("error") || line.contains("fatal") || line.contains("Triple fault"))
}

#[derive(Clone, Debug, Serialize)]
pub struct RunReport {
    pub model: String,
    pub passed: bool,
    /// Why the run failed (crash, silence, verdict), if it did.
    pub failure: Option<String>,
    /// The kernel's own verdict line at the end of the patching loop.
    pub kernel_verdict: Option<String>,
    pub machine: Option<Machine>,
    pub last: Option<Counters>,
    /// Every `/status` sample, seconds since QEMU started.
    pub samples: Vec<(f64, Counters)>,
    pub serial_log: PathBuf,
    pub wall_s: f64,
}

impl RunReport {
    pub(crate) fn not_started(model: &str, why: String) -> RunReport {
        RunReport {
            model: model.into(),
            passed: false,
            failure: Some(why),
            kernel_verdict: None,
            machine: None,
            last: None,
            samples: Vec::new(),
            serial_log: PathBuf::new(),
            wall_s: 0.0,
        }
    }
}
