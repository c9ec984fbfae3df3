//! The NMI watchdog: rates, hard lockups, latched duplicates, the 2008 NMI-path warning, unknown NMIs.

use std::path::Path;
use std::time::Duration;

use appliance::contract::Verdict;

use super::harness::*;
use super::patching::int3_promise;
use crate::qemu::{self, http};

/// The configured watchdog rate of the NMI tests, and the tolerance they state:
/// single-threaded TCG loses some local-APIC timer ticks (about 3% at 100 Hz
/// with 4 CPUs; see bench/README.md for higher rates).
pub(super) const NMI_TEST_HZ: u64 = 100;

pub(super) const NMI_TOLERANCE_PCT: u64 = 20;

/// Every CPU's measured NMI rate within the tolerance of the configured one.
pub(super) fn nmi_rates_ok(log: &str) -> std::result::Result<(), String> {
    let rates: Vec<(String, u64)> = log
        .lines()
        .filter_map(|l| l.split("nmi: rate: ").nth(1))
        .filter_map(|r| {
            let cpu = r.split(' ').next()?.to_string();
            let n = r.split(": ").nth(1)?.split(' ').next()?.parse().ok()?;
            Some((cpu, n))
        })
        .collect();
    if rates.is_empty() {
        return Err("no `nmi: rate:` lines".into());
    }
    let (lo, hi) = (NMI_TEST_HZ * (100 - NMI_TOLERANCE_PCT) / 100, NMI_TEST_HZ * (100 + NMI_TOLERANCE_PCT) / 100);
    for (cpu, n) in &rates {
        if *n < lo || *n > hi {
            return Err(format!("{cpu}: {n} NMIs/s, outside {lo}..={hi}"));
        }
    }
    Ok(())
}

/// The lockup was reported within the threshold (2 s) plus one second of slack.
pub(super) fn lockup_in_time(log: &str) -> std::result::Result<(), String> {
    let ms = number_after(log, "(no timer interrupt for ").ok_or("no lockup report")?;
    if !(2000..=3000).contains(&ms) {
        return Err(format!("lockup reported after {ms} ms, expected 2000..=3000"));
    }
    Ok(())
}

/// `selftest=irq_hygiene`: the stray IPI reached all four CPUs, the RTC's
/// IO-APIC interrupt came, and no CPU's timer stopped. A vector left in
/// service blocks the timer for good (0 ticks); a busy host slows a 100 Hz
/// timer under TCG, so 10 in the second is the bar.
pub(super) fn irq_hygiene_ok(log: &str) -> std::result::Result<(), String> {
    let line = log.lines().find(|l| l.contains("selftest: irq_hygiene: ")).ok_or("no `selftest: irq_hygiene:` line")?;
    let ipi = number_after(line, "vector 0x90 x").ok_or("no count for 0x90")?;
    let rtc = number_after(line, "(IO-APIC pin 8, RTC) x").ok_or("no count for the RTC's vector on pin 8")?;
    let slowest = number_after(line, "took >= ").ok_or("no timer figure")?;
    if ipi < 4 || rtc < 1 || slowest < 10 {
        return Err(format!("expected 0x90 on 4 CPUs, the RTC at least once, >= 10 timer interrupts per CPU: {line}"));
    }
    Ok(())
}

/// `selftest=nmi_race`: held handlers left latched NMIs the ledger swallowed
/// (at least 10 of 20: on a loaded host CPU 0's virtual CPU may send nothing
/// while CPU 1 is held), none unknown.
pub(super) fn nmi_race_handled(log: &str) -> std::result::Result<(), String> {
    let line = log.lines().find(|l| l.contains("selftest: nmi_race: ")).ok_or("no `selftest: nmi_race:` line")?;
    let (left, swallowed, unknown) = (
        number_after(line, "nmi_race: ").ok_or("no count left")?,
        number_after(line, "swallowed=").ok_or("no swallowed=")?,
        number_after(line, "unknown=").ok_or("no unknown=")?,
    );
    if left != 0 || swallowed < 10 || unknown != 0 {
        return Err(format!("expected every held handler done, >= 10 swallowed and 0 unknown: {line}"));
    }
    if number_after(log, "unknown ").is_some_and(|n| n != 0) {
        return Err("an `nmi: rate` line counts unknown NMIs".into());
    }
    Ok(())
}

/// With trace_nmi_path: the warning, then every site off and the loop stopped.
pub(super) fn nmi_path_disables(log: &str) -> std::result::Result<(), String> {
    let v = verdict(log)?;
    if v.torn != 0 {
        return Err("torn executions under int3".into());
    }
    if v.ftrace_enabled {
        return Err("tracing not reported disabled".into());
    }
    nested_zero(&v)
}

pub(super) fn nested_zero(v: &Verdict) -> std::result::Result<(), String> {
    match v.nested_nmis {
        0 => Ok(()),
        n => Err(format!("{n} nested NMIs")),
    }
}

/// With trace_nmi_path ftrace_keep_on_nmi: warned, and patching went on to the end.
pub(super) fn nmi_path_keeps_on(log: &str) -> std::result::Result<(), String> {
    int3_promise(log)?;
    let v = verdict(log)?;
    if v.cycles < 2 {
        return Err("patching stopped before its cycles".into());
    }
    if !v.ftrace_enabled {
        return Err("tracing not reported enabled".into());
    }
    nested_zero(&v)
}

/// An NMI that is no watchdog IPI, counter or external one (QMP
/// `inject-nmi`, which QEMU delivers through LINT1: the boot CPU's is
/// programmed for NMI, the others' masked): reported once in the NMI log as
/// Linux words it, with the ledger's trail of the CPU's last NMIs, and
/// counted as unknown in /status; the watchdog keeps running.
pub(super) fn unknown_nmi_case(elf: &Path, logs: &Path) -> std::result::Result<String, String> {
    let scratch = qemu::TempDir::new("unknown-nmi").map_err(|e| e.to_string())?;
    let port = qemu::free_port().map_err(|e| e.to_string())?;
    let mut spec = kernel_boot(elf, "patch=on patch_interval_us=1000", "2");
    spec.net = Some((port, "virtio-net-pci".into()));
    let qmp_path = scratch.0.join("qmp.sock");
    spec.qmp = Some(qmp_path.clone());
    let (mut run, mut log) = spawn_serving(&spec, &logs.join("nmi_unknown_reported.log"))?;
    let before = qemu::status(port)?;
    if before.watchdog.unknown != 0 {
        return Err(format!("unknown NMIs before the injection: {:?}", before.watchdog));
    }
    let mut qmp = qemu::Qmp::connect(&qmp_path, Duration::from_secs(10))?;
    qmp.execute("inject-nmi", serde_json::json!({}))?;
    let head = "Uhhuh. NMI received for unknown reason on CPU 0";
    run.wait_line(run.started.elapsed() + Duration::from_secs(20), &mut log, |l| l.contains(head)).ok_or("no unknown-NMI report on the console after inject-nmi")?;
    run.wait_line(run.started.elapsed() + Duration::from_secs(5), &mut log, |l| l.contains("ledger, last NMIs: | ipi+")).ok_or("the report has no ledger trail")?;
    let after = qemu::status(port)?;
    let (code, nmi_log) = http(port, "GET /nmi-log HTTP/1.1\r\n\r\n")?;
    if after.watchdog.unknown != 1 || code != 200 || !nmi_log.contains(head) || after.watchdog.ipi <= before.watchdog.ipi {
        return Err(format!("after inject-nmi: {:?}, /nmi-log {code} holds the report: {}", after.watchdog, nmi_log.contains(head)));
    }
    Ok(format!("reported and counted; {} watchdog IPIs since", after.watchdog.ipi - before.watchdog.ipi))
}
