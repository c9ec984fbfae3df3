//! The fault matrix (issue 28): one CPU stuck with interrupts off while the
//! patching loop runs, with the default watchdog threshold and a short one,
//! on 2, 3 and 4 CPUs, the stuck CPU being a worker, the serving CPU or
//! CPU 0 (the patching CPU, which also serves below 4 CPUs); one stuck for
//! 15 s that comes back; and the `xcall_timeout` and `nmi_race` selftests
//! with the loop on. Each boot is watched from the host: the console and
//! `/status`, polled throughout from another thread.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::harness::{log_tail, number_after, seen_or_wait};
use crate::qemu::{self, Boot, Spec};

/// One case of the matrix.
#[derive(Clone, Copy, Debug)]
pub struct Fault {
    pub name: &'static str,
    pub smp: u32,
    /// `selftest=` (`lockup`, `lockup:15`, `xcall_timeout`, `nmi_race`).
    pub selftest: &'static str,
    /// `selftest_cpu=` (None: the default, the last CPU).
    pub cpu: Option<u32>,
    /// `watchdog_thresh=` (None: the default, 10 s).
    pub thresh: Option<u32>,
}

/// The watchdog's default threshold (`nmi::config::Config::default`).
const DEFAULT_THRESH: u32 = 10;
/// How late after the threshold a report may come (the bound).
const REPORT_SLACK_MS: u64 = 1500;

pub const FAULTS: [Fault; 9] = [
    // The reproduction: 3 CPUs, the last one (a worker) stuck, defaults.
    Fault { name: "fault_lockup_worker_smp3_default_thresh", smp: 3, selftest: "lockup", cpu: None, thresh: None },
    Fault { name: "fault_lockup_worker_smp2_thresh2", smp: 2, selftest: "lockup", cpu: None, thresh: Some(2) },
    // 4 CPUs: the last one is the serving CPU (`net_cpu=auto`).
    Fault { name: "fault_lockup_serving_cpu_smp4_default_thresh", smp: 4, selftest: "lockup", cpu: None, thresh: None },
    Fault { name: "fault_lockup_serving_cpu_smp4_thresh2", smp: 4, selftest: "lockup", cpu: Some(3), thresh: Some(2) },
    // CPU 0: it patches, sends the watchdog's rounds, and serves below 4 CPUs.
    Fault { name: "fault_lockup_cpu0_smp2_thresh2", smp: 2, selftest: "lockup", cpu: Some(0), thresh: Some(2) },
    Fault { name: "fault_lockup_cpu0_smp3_default_thresh", smp: 3, selftest: "lockup", cpu: Some(0), thresh: None },
    // Stuck for 15 s, then back: the loop finishes its batch and its cycles.
    Fault { name: "fault_lockup_15s_recovers_smp3", smp: 3, selftest: "lockup:15", cpu: None, thresh: None },
    // A CPU stuck for good inside a cross-CPU call's handler, the loop on.
    Fault { name: "fault_xcall_timeout_while_looping_smp3", smp: 3, selftest: "xcall_timeout", cpu: None, thresh: Some(2) },
    // Held NMI handlers with the loop on: no unknown NMI, a clean verdict.
    Fault { name: "fault_nmi_race_while_looping_smp2", smp: 2, selftest: "nmi_race", cpu: None, thresh: None },
];

/// `/status` polls from the host while the fault lasts: (answered, asked, the first failure).
#[derive(Default)]
struct Polls {
    answered: u32,
    asked: u32,
    first_failure: Option<String>,
    last: Option<appliance::contract::Status>,
}

/// Poll `/status` every 250 ms on another thread until `stop`.
fn poll_status(port: u16, stop: Arc<AtomicBool>, polls: Arc<Mutex<Polls>>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            let t = Instant::now();
            let r = qemu::status(port);
            let mut p = polls.lock().expect("polls");
            p.asked += 1;
            match r {
                Ok(st) => {
                    p.answered += 1;
                    p.last = Some(st);
                }
                Err(e) => {
                    if p.first_failure.is_none() {
                        p.first_failure = Some(format!("poll {} after {:.1} s: {e}", p.asked, t.elapsed().as_secs_f64()));
                    }
                }
            }
            drop(p);
            std::thread::sleep(Duration::from_millis(250).saturating_sub(t.elapsed()));
        }
    })
}

/// Boot the case with the loop on and the service up, and check it.
pub fn run(elf: &Path, f: Fault, logs: &Path) -> Result<String, String> {
    let port = qemu::free_port().map_err(|e| e.to_string())?;
    let recovers = f.selftest.starts_with("lockup:");
    let bounded = recovers || f.selftest == "nmi_race";
    let mut append = format!("patch=on ip=10.0.2.15/24 gw=10.0.2.2 selftest={}", f.selftest);
    if let Some(c) = f.cpu {
        append += &format!(" selftest_cpu={c}");
    }
    if let Some(t) = f.thresh {
        append += &format!(" watchdog_thresh={t}");
    }
    if bounded {
        // No test_exit: the appliance keeps serving after its verdict, so
        // no poll meets a QEMU that has exited (it is killed at the end).
        append += " patch_cycles=2 patch_sites=2000";
    }
    let mut spec = Spec::new(Boot::Kernel { elf: elf.to_path_buf(), append });
    spec.smp = f.smp.to_string();
    spec.net = Some((port, "e1000".into()));
    let log_path = logs.join(format!("{}.log", f.name));
    let mut run = qemu::spawn(&spec, &log_path, false).map_err(|e| e.to_string())?;
    let mut log = String::new();
    let fail = |why: String, log: &str| -> String { format!("{why} (log: {})\n{}", log_path.display(), log_tail(log, 30)) };
    seen_or_wait(&mut run, &mut log, Duration::from_secs(90), |l| l.contains("net: listening on http://")).ok_or_else(|| fail("the service never listened".into(), &log))?;
    let stop = Arc::new(AtomicBool::new(false));
    let polls = Arc::new(Mutex::new(Polls::default()));
    let poller = poll_status(port, stop.clone(), polls.clone());
    let result = watch(&mut run, &mut log, f, recovers, bounded);
    stop.store(true, Ordering::Relaxed);
    let _ = poller.join();
    let p = std::mem::take(&mut *polls.lock().expect("polls"));
    let detail = result.map_err(|e| fail(e, &log))?;
    if p.asked == 0 || p.answered < p.asked {
        return Err(fail(format!("/status answered {} of {} polls while the fault lasted: {}", p.answered, p.asked, p.first_failure.unwrap_or_default()), &log));
    }
    let st = p.last.ok_or("no /status")?;
    if f.selftest.starts_with("lockup") || f.selftest == "xcall_timeout" {
        let stuck = stuck_cpu(f);
        let c = st.cpus.iter().find(|c| c.cpu == stuck).ok_or_else(|| format!("/status has no cpu{stuck}"))?;
        if c.lockups == 0 {
            return Err(fail(format!("/status: cpu{stuck} has no lockup: {c:?}"), &log));
        }
        // The patching CPU (0) waits for the others in its sync rounds; a
        // stuck one is a stalled cross-CPU call there.
        if stuck != 0 && c.stalled_xcalls == 0 {
            return Err(fail(format!("/status: cpu{stuck} has no stalled cross-CPU call: {c:?}"), &log));
        }
    }
    Ok(format!("{detail}; /status answered {} of {} polls", p.answered, p.asked))
}

/// The CPU the selftest stalls.
fn stuck_cpu(f: Fault) -> u32 {
    f.cpu.unwrap_or(f.smp - 1)
}

/// Follow the console through the fault.
fn watch(run: &mut qemu::Running, log: &mut String, f: Fault, recovers: bool, bounded: bool) -> Result<String, String> {
    if f.selftest == "nmi_race" {
        let line = seen_or_wait(run, log, Duration::from_secs(240), |l| l.contains("patch: verdict: ")).ok_or("no verdict")?;
        let v = appliance::contract::Verdict::find_in(log)?;
        let race = log.lines().find(|l| l.contains("selftest: nmi_race: ")).ok_or("no `selftest: nmi_race:` line")?;
        let (left, unknown) = (number_after(race, "nmi_race: ").ok_or("no count left")?, number_after(race, "unknown=").ok_or("no unknown count")?);
        if !line.contains("verdict: ok") || v.torn != 0 || left != 0 || unknown != 0 {
            return Err(format!("expected a clean verdict and no unknown NMI: {race}; {line}"));
        }
        return Ok(format!("{left} held handlers left, unknown={unknown}, torn={}", v.torn));
    }
    let stuck = stuck_cpu(f);
    let thresh_ms = f.thresh.unwrap_or(DEFAULT_THRESH) as u64 * 1000;
    if f.selftest.starts_with("lockup") {
        let spins = format!("selftest: cpu{stuck} spins with interrupts off");
        seen_or_wait(run, log, Duration::from_secs(60), |l| l.contains(&spins)).ok_or("the selftest CPU never spun")?;
    }
    // Guest time runs close to the host's under TCG; the bound is checked
    // on the guest's own figure below, the host waits with a margin.
    let report = format!("hard LOCKUP on cpu{stuck} ");
    let line = seen_or_wait(run, log, run.started.elapsed() + Duration::from_millis(thresh_ms + 30_000), |l| l.contains(&report)).ok_or_else(|| format!("no `{report}` report"))?;
    let ms = number_after(&line, "(no timer interrupt for ").ok_or("no duration in the report")?;
    if ms > thresh_ms + REPORT_SLACK_MS {
        return Err(format!("reported after {ms} ms, above the threshold {thresh_ms} ms + {REPORT_SLACK_MS} ms"));
    }
    if let Some(other) = log.lines().find(|l| l.contains("hard LOCKUP on cpu") && !l.contains(&report)) {
        return Err(format!("a CPU that is not stuck was reported: {other}"));
    }
    // The stuck CPU's call trace, from its NMI: the lockup report's dump
    // (and, where another CPU waits for it, the backtrace it asked for).
    let spin = "spin_with_interrupts_off";
    let want_spin = f.selftest.starts_with("lockup");
    let traced = |log: &str| log.split(&report).nth(1).is_some_and(|after| after.contains("Call Trace:") && (!want_spin || after.contains(spin)));
    if !traced(log) {
        run.wait_line(run.started.elapsed() + Duration::from_secs(10), log, |_| false);
    }
    if !traced(log) {
        return Err(format!("the report has no call trace{}", if want_spin { format!(" through {spin}") } else { String::new() }));
    }
    let mut detail = format!("cpu{stuck} reported after {ms} ms");
    if stuck != 0 {
        let bt = format!("NMI backtrace for cpu{stuck} ");
        seen_or_wait(run, log, run.started.elapsed() + Duration::from_secs(15), |l| l.contains(&bt)).ok_or_else(|| format!("no `{bt}` from the CPU waiting for it"))?;
        detail += ", NMI backtrace on request";
    }
    if recovers {
        let back = format!("selftest: cpu{stuck} resumes after ");
        seen_or_wait(run, log, Duration::from_secs(120), |l| l.contains(&back)).ok_or("the stuck CPU never resumed")?;
        let line = seen_or_wait(run, log, Duration::from_secs(300), |l| l.contains("patch: verdict: ")).ok_or("no verdict after the CPU came back")?;
        let v = appliance::contract::Verdict::find_in(log)?;
        if !line.contains("verdict: ok") || v.torn != 0 || v.wrong_final_bytes != 0 {
            return Err(format!("after the CPU came back: {line}"));
        }
        detail += &format!(", resumed, verdict ok with torn={} over {} cycles", v.torn, v.cycles);
    } else if !bounded {
        // Keep serving a little longer with the CPU still stuck.
        run.wait_line(run.started.elapsed() + Duration::from_secs(3), log, |l| l.contains("FATAL") || l.contains("panicked"));
        if let Some(bad) = log.lines().find(|l| l.contains("FATAL") || l.contains("panicked")) {
            return Err(format!("while the CPU was stuck: {bad}"));
        }
    }
    Ok(detail)
}
