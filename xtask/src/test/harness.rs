//! What every QEMU case shares: what a case is, the lines a healthy boot
//! prints, a `-kernel` boot, and reading numbers and the verdict from a log.

use std::path::Path;
use std::time::Duration;

use appliance::contract::Verdict;

use crate::qemu::{self, Boot, Spec};

/// A check of a whole serial log: `Err` says what is wrong.
pub(crate) type LogCheck = fn(&str) -> std::result::Result<(), String>;

/// What one test expects.
#[derive(Clone)]
pub(crate) struct Case {
    pub(crate) name: &'static str,
    pub(crate) spec: Spec,
    pub(crate) timeout: Duration,
    pub(crate) exit: i32,
    /// Every one of these must appear in the serial log.
    pub(crate) expect: Vec<String>,
    /// None of these may appear.
    pub(crate) forbid: Vec<String>,
    /// A further check of the whole log.
    pub(crate) check: Option<LogCheck>,
}

/// The patching loop's verdict, as the appliance printed it.
pub(crate) fn verdict(log: &str) -> std::result::Result<Verdict, String> {
    Verdict::find_in(log)
}

/// The number right after the first occurrence of `marker` in the log
/// (`"smp: "` in `smp: 4 CPUs online` gives 4).
pub(crate) fn number_after(log: &str, marker: &str) -> Option<u64> {
    log.lines().find_map(|l| l.split(marker).nth(1)).and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next()).and_then(|n| n.parse().ok())
}

/// Lines every healthy boot prints for CPUs with these APIC ids.
pub(crate) fn healthy(ids: &[u32]) -> Vec<String> {
    let list: String = ids.iter().map(|i| format!(" {i}")).collect();
    vec![
        format!("smp: {} CPUs online (APIC ids:{list})", ids.len()),
        format!("xcall: {} CPUs answered", ids.len() - 1),
        format!("health: ok: {} CPUs online and ticking", ids.len()),
    ]
}

pub(crate) fn never_on_a_healthy_boot() -> Vec<String> {
    ["FATAL", "panic", "BOOT FAILED", "did not come up", "failed to start", "ERROR"].iter().map(|s| s.to_string()).collect()
}

/// A `-kernel` boot that exits with its verdict. The patching loop is off
/// unless `append` turns it on (later words override earlier ones).
pub(crate) fn kernel_boot(elf: &Path, append: &str, smp: &str) -> Spec {
    let mut s = Spec::new(Boot::Kernel { elf: elf.to_path_buf(), append: format!("test_exit patch=off {append}") });
    s.smp = smp.into();
    s
}

/// Boot `spec` and wait (a minute at most) until its network service
/// listens: the guest and the console so far.
pub(crate) fn spawn_serving(spec: &Spec, log_path: &Path) -> std::result::Result<(qemu::Running, String), String> {
    let mut run = qemu::spawn(spec, log_path, false).map_err(|e| e.to_string())?;
    let mut log = String::new();
    run.wait_line(Duration::from_secs(60), &mut log, |l| l.contains("net: listening on http://")).ok_or_else(|| {
        format!("the service never listened; log tail: {}", log.lines().rev().take(5).collect::<Vec<_>>().join(" | "))
    })?;
    Ok((run, log))
}

/// The last `n` lines of a console log, indented under a failure.
pub(crate) fn log_tail(log: &str, n: usize) -> String {
    let tail: Vec<&str> = log.lines().rev().take(n).collect();
    tail.into_iter().rev().map(|l| format!("    | {l}")).collect::<Vec<_>>().join("\n")
}

/// The first line of the log so far that satisfies `pred`, else the next
/// one the console prints before `timeout` (from QEMU's start): a line may
/// have come while the caller waited for another.
pub(crate) fn seen_or_wait(run: &mut qemu::Running, log: &mut String, timeout: Duration, mut pred: impl FnMut(&str) -> bool) -> Option<String> {
    if let Some(l) = log.lines().find(|l| pred(l)) {
        return Some(l.to_string());
    }
    run.wait_line(timeout, log, pred)
}
