//! `cargo xtask soak`: boot the appliance once per CPU model with the NMI
//! watchdog on and the patching loop running, watch it over TCP (`/status`)
//! and on its serial console, and write a report comparing the models
//! (`target/soak/report.md`, `report.json`, PNG plots, kept serial logs).
//!
//! A run passes when the guest never printed a panic or a fatal exception,
//! kept answering `/status`, and its patching loop ended with `patch: verdict:
//! ok` (every site's final bytes verified, no torn execution under `int3`).

use std::collections::VecDeque;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};


use crate::qemu::{self, Accel, Boot, Spec};
use crate::{Result, root};

mod report;

use report::{duration, plot};
pub use report::{ReportHeader, report_md};
pub use crate::soak_run::{Counters, Machine, RunReport, crash_line, parse_status};

/// The default models: Intel and AMD generations from 2006 to 2025 and a
/// Zhaoxin, with and without x2APIC in their CPUID (QEMU 10's TCG emulates
/// it where the model has it), and the host CPU where KVM is
/// hardware-assisted.
pub fn default_models(kvm: bool) -> Vec<String> {
    let mut m: Vec<String> = [
        "Conroe",                    // Intel Core 2, 2006: no x2APIC
        "Nehalem",                   // Intel Core i7, 2008: no x2APIC
        "SandyBridge",               // Intel, 2011: x2APIC
        "Haswell-noTSX",             // Intel, 2013
        "Skylake-Server-noTSX-IBRS", // Intel Xeon, 2017: AVX-512
        "Icelake-Server-noTSX",      // Intel Xeon, 2019
        "Cooperlake",                // Intel Xeon, 2020
        "Opteron_G2",                // AMD, 2006: no x2APIC
        "Opteron_G5",                // AMD, 2012
        "EPYC",                      // AMD Zen, 2017
        "EPYC-Milan",                // AMD Zen 3, 2021
        "SapphireRapids",            // Intel Xeon, 2023 (QEMU 10)
        "GraniteRapids",             // Intel Xeon, 2024 (QEMU 10)
        "SierraForest",              // Intel Xeon E-cores, 2024 (QEMU 10)
        "ClearwaterForest",          // Intel Xeon E-cores, 2025 (QEMU 10)
        "EPYC-Genoa,+x2apic",        // AMD Zen 4, 2022: the model alone has no x2APIC bit
        "YongFeng",                  // Zhaoxin (vendor "  Shanghai  "), QEMU 10
    ]
    .into_iter()
    .map(String::from)
    .collect();
    if kvm {
        m.push("host".into());
    }
    m
}

/// `cargo xtask soak` options.
#[derive(clap::Args, Clone, Debug)]
pub struct SoakArgs {
    /// Comma-separated QEMU -cpu models (default: Intel and AMD generations QEMU knows, old and new,
    /// plus `host` where KVM is hardware-assisted); `default` names that list, `list` prints it and exits
    #[arg(long)]
    models: Option<String>,
    /// Length of each run in minutes
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    minutes: u64,
    /// Length of each run in seconds instead (short checks)
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    seconds: Option<u64>,
    /// auto: KVM only when hardware-assisted (`host` needs KVM)
    #[arg(long, value_enum, default_value_t = Accel::Auto)]
    accel: Accel,
    /// CPUs per guest
    #[arg(long, default_value = "4")]
    smp: String,
    /// Patching strategy
    #[arg(long, value_parser = ["int3", "stop_machine", "naive"], default_value = "int3")]
    strategy: String,
    /// Runs at the same time (default: host cores, at most the number of models)
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    jobs: Option<u64>,
    /// More kernel command-line options (e.g. "trace_nmi_path ftrace_keep_on_nmi")
    #[arg(long, default_value = "", allow_hyphen_values = true)]
    append: String,
    /// NIC the status is polled through
    #[arg(long, value_parser = crate::run::NICS, default_value = "virtio")]
    nic: String,
    /// Report directory (default target/soak)
    #[arg(long)]
    out: Option<PathBuf>,
    /// Also poll an appliance running elsewhere (a machine booted from the USB image, a KVM guest on
    /// another host) by URL, for the same duration, as one more row (repeatable; with --target and no
    /// --models, only the targets)
    #[arg(long)]
    target: Vec<String>,
}

#[derive(Clone, Debug)]
struct Opts {
    models: Vec<String>,
    seconds: u64,
    accel: Accel,
    smp: String,
    strategy: String,
    jobs: usize,
    append: String,
    nic: String,
    out: PathBuf,
    list_only: bool,
    targets: Vec<String>,
}

fn parse(a: &SoakArgs) -> Result<Opts> {
    let models = a.models.clone();
    let mut o = Opts {
        models: Vec::new(),
        seconds: a.seconds.unwrap_or(a.minutes * 60),
        accel: a.accel,
        smp: a.smp.clone(),
        strategy: a.strategy.clone(),
        jobs: a.jobs.unwrap_or(0) as usize,
        append: a.append.clone(),
        nic: a.nic.clone(),
        out: a.out.clone().unwrap_or_else(|| root().join("target/soak")),
        list_only: false,
        targets: a.target.clone(),
    };
    let kvm = qemu::kvm_hardware().is_ok();
    o.models = match models.as_deref() {
        None if !o.targets.is_empty() => Vec::new(),
        None | Some("default") => default_models(kvm),
        Some("list") => {
            o.list_only = true;
            default_models(kvm)
        }
        Some(list) => model_list(list),
    };
    if o.models.is_empty() && o.targets.is_empty() {
        return Err("--models names no model".into());
    }
    Ok(o)
}

/// Seconds allowed from QEMU start to the first `/status` answer.
const BOOT_BUDGET: Duration = Duration::from_secs(180);
/// A guest that answered once and then not for this long has stopped.
const SILENCE: Duration = Duration::from_secs(90);
const POLL: Duration = Duration::from_secs(5);


/// One `/status` poll.
enum Poll {
    Sample(Box<(Machine, Counters)>),
    /// An answer that is not a status: the run fails.
    Bad(String),
    /// No answer (booting, busy, or gone): tolerated until the guest has been silent too long.
    Unanswered(String),
}

fn poll_status(port: u16) -> Poll {
    match qemu::http(port, "GET /status HTTP/1.1\r\nHost: soak\r\nConnection: close\r\n\r\n") {
        Ok((200, body)) => match parse_status(&body) {
            Ok(mc) => Poll::Sample(Box::new(mc)),
            Err(e) => Poll::Bad(e),
        },
        Ok((code, _)) => Poll::Bad(format!("/status answered {code}")),
        Err(e) => Poll::Unanswered(e),
    }
}

fn run_one(o: &Opts, elf: &Path, accel: Accel, model: &str, port: u16, bar: &indicatif::ProgressBar) -> RunReport {
    let dir = o.out.join("logs");
    let log = dir.join(format!("{}.log", model.replace(['/', ','], "_")));
    let secs = o.seconds;
    let append = format!("patch_seconds={secs} strategy={} status_secs=30 {}", o.strategy, o.append);
    let mut spec = Spec::new(Boot::Kernel { elf: elf.to_path_buf(), append });
    spec.accel = accel;
    spec.cpu = Some(model.to_string());
    spec.smp = o.smp.clone();
    spec.net = Some((port, crate::run::nic_device(&o.nic)));
    let mut r = RunReport { serial_log: log.clone(), failure: None, ..RunReport::not_started(model, String::new()) };
    let mut running = match qemu::spawn(&spec, &log, false) {
        Ok(q) => q,
        Err(e) => {
            r.failure = Some(format!("QEMU did not start: {e}"));
            return r;
        }
    };
    let deadline = BOOT_BUDGET + Duration::from_secs(secs) + Duration::from_secs(120);
    let mut serial = String::new();
    let mut last_answer: Option<Instant> = None;
    let mut next_poll = Duration::ZERO;
    loop {
        let elapsed = running.started.elapsed();
        if elapsed >= deadline {
            r.failure = Some(format!("no patching verdict within {} s", deadline.as_secs()));
            break;
        }
        // Read the console until the next poll is due (or something happens).
        let step = next_poll.max(elapsed).min(deadline);
        let hit = running.wait_line(step, &mut serial, |l| crash_line(l) || l.contains("patch: verdict:"));
        match hit {
            Some(l) if l.contains("patch: verdict:") => {
                r.kernel_verdict = Some(l.split("patch: verdict: ").nth(1).unwrap_or(&l).to_string());
                // One last sample after the loop's end: the final totals.
                if let Poll::Sample(mc) = poll_status(port) {
                    let (m, c) = *mc;
                    r.machine = Some(m);
                    r.samples.push((running.started.elapsed().as_secs_f64(), c));
                }
                break;
            }
            Some(l) => {
                // Let the rest of the report reach the log before stopping.
                let _ = running.wait_line(running.started.elapsed() + Duration::from_secs(2), &mut serial, |_| false);
                r.failure = Some(format!("crash: {l}"));
                break;
            }
            None if running.started.elapsed() < step => {
                let said = serial.lines().rev().find(|l| l.starts_with("qemu: ")).map(|l| format!(" ({l})")).unwrap_or_default();
                r.failure = Some(format!("QEMU exited before the patching verdict{said}"));
                break;
            }
            None => {}
        }
        if running.started.elapsed() < next_poll {
            continue;
        }
        next_poll = running.started.elapsed() + POLL;
        match poll_status(port) {
            Poll::Sample(mc) => {
                let (m, c) = *mc;
                last_answer = Some(Instant::now());
                bar.set_position(c.uptime_s as u64);
                bar.set_message(format!(
                    "{} CPUs {} nmi={} cycles={} int3={} torn={}",
                    m.cpus, m.watchdog, c.nmis, c.patch_cycles, c.int3_emulations, c.torn
                ));
                r.machine = Some(m);
                r.samples.push((running.started.elapsed().as_secs_f64(), c));
            }
            Poll::Bad(e) => {
                r.failure = Some(e);
                break;
            }
            Poll::Unanswered(e) => {
                let silent = match last_answer {
                    Some(t) => t.elapsed() > SILENCE,
                    None => running.started.elapsed() > BOOT_BUDGET,
                };
                if silent {
                    r.failure = Some(format!("the guest stopped answering /status ({e})"));
                    break;
                }
            }
        }
    }
    r.wall_s = running.started.elapsed().as_secs_f64();
    drop(running);
    r.last = r.samples.last().map(|(_, c)| c.clone());
    if r.failure.is_none() {
        match &r.kernel_verdict {
            Some(v) if v.starts_with("ok") => r.passed = true,
            Some(v) => r.failure = Some(format!("patching verdict: {v}")),
            None => r.failure = Some("no patching verdict".into()),
        }
    }
    if r.passed && o.strategy == "int3" && r.last.as_ref().is_some_and(|c| c.torn != 0) {
        r.passed = false;
        r.failure = Some("torn executions under int3".into());
    }
    if r.passed && let Some(n) = r.last.as_ref().map(|c| c.unknown_nmis).filter(|n| *n != 0) {
        r.passed = false;
        r.failure = Some(format!("{n} unknown NMIs"));
    }
    r
}

/// `--models A,B,C,+flag,D`: a word starting with `+` or `-` (a CPU flag)
/// belongs to the model before it (`EPYC-Genoa,+x2apic` is one model).
fn model_list(list: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for w in list.split(',').map(str::trim).filter(|w| !w.is_empty()) {
        match out.last_mut() {
            Some(m) if w.starts_with(['+', '-']) => {
                m.push(',');
                m.push_str(w);
            }
            _ => out.push(w.to_string()),
        }
    }
    out
}

/// The models QEMU knows (`-cpu help`), to refuse a typo before booting anything.
fn known_models() -> Result<Vec<String>> {
    let out = std::process::Command::new("qemu-system-x86_64").args(["-cpu", "help"]).output()?;
    Ok(cpu_models(&String::from_utf8_lossy(&out.stdout)))
}

/// The model names of `qemu-system-x86_64 -cpu help`: `x86 NAME ...` lines
/// (QEMU 7) or indented `  NAME ...` lines under `Available CPUs:` (QEMU 10),
/// up to the CPUID flags.
fn cpu_models(help: &str) -> Vec<String> {
    help.lines()
        .take_while(|l| !l.starts_with("Recognized CPUID flags"))
        .filter_map(|l| l.strip_prefix("x86 ").or_else(|| l.strip_prefix("  ")))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// `cargo xtask soak` with arguments as on its command line (the tests' way in).
pub fn main_with(args: &[&str]) -> Result<()> {
    use clap::Parser;
    #[derive(clap::Parser)]
    struct Soak {
        #[command(flatten)]
        args: SoakArgs,
    }
    let a = Soak::try_parse_from(std::iter::once("soak").chain(args.iter().copied()))?;
    main(&a.args)
}

pub fn main(args: &SoakArgs) -> Result<()> {
    let mut o = parse(args)?;
    if o.list_only {
        println!("{}", o.models.join(","));
        return Ok(());
    }
    crate::deps::ensure_all()?;
    let (accel, why) = qemu::choose_accel(o.accel)?;
    let known = known_models()?;
    for m in &o.models {
        let base = m.split(',').next().unwrap_or(m);
        if base == "host" && accel != Accel::Kvm {
            return Err(format!("model `host` needs hardware KVM ({why})").into());
        }
        if base != "host" && !known.iter().any(|k| k == base) {
            return Err(format!("QEMU does not know the CPU model `{base}` (qemu-system-x86_64 -cpu help lists them)").into());
        }
    }
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    if o.jobs == 0 {
        o.jobs = cores;
    }
    o.jobs = o.jobs.min(o.models.len()).max(1);
    // The runs boot a copy kept with the report: the ELF they tested, and
    // safe from rebuilds while later runs wait for their turn.
    std::fs::create_dir_all(o.out.join("logs"))?;
    let elf = o.out.join("appliance.elf");
    std::fs::copy(crate::build::build_elf()?, &elf)?;
    println!(
        "soak: {} models{} x {}, {} at a time, --smp {}, strategy {}, accelerator {why}",
        o.models.len(),
        if o.targets.is_empty() { String::new() } else { format!(" and {} remote targets", o.targets.len()) },
        duration(o.seconds),
        o.jobs,
        o.smp,
        o.strategy
    );
    let multi = indicatif::MultiProgress::new();
    let tty = std::io::stderr().is_terminal();
    let style = indicatif::ProgressStyle::with_template("{prefix:>26} [{bar:30}] {pos:>4}/{len}s {msg}")
        .expect("a valid template")
        .progress_chars("=> ");
    let queue: Mutex<VecDeque<(usize, String)>> = Mutex::new(o.models.iter().cloned().enumerate().collect());
    let results: Mutex<Vec<(usize, RunReport)>> = Mutex::new(Vec::new());
    let started = Instant::now();
    std::thread::scope(|s| {
        // Remote targets: a thread each, beside the QEMU runs (they cost this host nothing).
        for (k, url) in o.targets.iter().enumerate() {
            let (o, results) = (&o, &results);
            s.spawn(move || {
                println!("soak: target {url}: polling /status for {}", duration(o.seconds));
                let r = crate::remote::watch(url, o.seconds, POLL, SILENCE);
                match &r.failure {
                    None => println!("soak: target {url}: passed ({})", r.kernel_verdict.as_deref().unwrap_or("")),
                    Some(f) => println!("soak: target {url}: FAILED: {f}"),
                }
                results.lock().expect("results").push((o.models.len() + k, r));
            });
        }
        for _ in 0..o.jobs {
            s.spawn(|| {
                loop {
                    let Some((i, model)) = queue.lock().expect("queue").pop_front() else { break };
                    let bar = multi.add(indicatif::ProgressBar::new(o.seconds));
                    bar.set_style(style.clone());
                    bar.set_prefix(model.clone());
                    bar.enable_steady_tick(Duration::from_secs(1));
                    if !tty {
                        println!("soak: {model}: started");
                    }
                    let r = match qemu::free_port() {
                        Ok(port) => run_one(&o, &elf, accel, &model, port, &bar),
                        Err(e) => RunReport::not_started(&model, format!("no free TCP port for the host forward: {e}")),
                    };
                    let line = match &r.failure {
                        None => format!("{model}: passed ({})", r.kernel_verdict.as_deref().unwrap_or("")),
                        Some(f) => format!("{model}: FAILED: {f} (serial log {})", r.serial_log.display()),
                    };
                    bar.finish_with_message(line.clone());
                    if !tty {
                        println!("soak: {line}");
                    }
                    results.lock().expect("results").push((i, r));
                }
            });
        }
    });
    let mut results = results.into_inner().expect("results");
    results.sort_by_key(|(i, _)| *i);
    let runs: Vec<RunReport> = results.into_iter().map(|(_, r)| r).collect();
    let header = ReportHeader {
        accel: why,
        seconds: o.seconds,
        smp: o.smp.clone(),
        strategy: o.strategy.clone(),
        append: o.append.clone(),
        jobs: o.jobs,
        host: crate::host_cpu(),
        wall_s: started.elapsed().as_secs_f64(),
    };
    std::fs::write(o.out.join("report.json"), serde_json::to_string_pretty(&serde_json::json!({"soak": header, "runs": runs}))?)?;
    let plots = plot::write_all(&o.out, &runs);
    let md = report_md(&header, &runs, &plots);
    std::fs::write(o.out.join("report.md"), &md)?;
    println!("{md}");
    println!("wrote {} and report.json", o.out.join("report.md").display());
    let failed: Vec<&str> = runs.iter().filter(|r| !r.passed).map(|r| r.model.as_str()).collect();
    if failed.is_empty() { Ok(()) } else { Err(format!("soak failed on: {}", failed.join(", ")).into()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `/status` answer as the appliance encodes it.
    fn status_json() -> String {
        use appliance::contract::{CpuStatus, FtraceStatus, PatchingStatus, Status, WatchdogStatus};
        let cpu = |cpu, nmis, int3_emulated, torn, traced_while_off, nmi_site_calls, events, lost| CpuStatus {
            cpu,
            apic_id: cpu,
            watchdog: "ipi-broadcast".into(),
            nmis,
            timer_ticks: 5,
            int3_emulated,
            torn,
            traced_while_off,
            missed_while_on: 0,
            lockups: 0,
            stalled_xcalls: 0,
            xcall_stalled_ms: 0,
            nmi_backtraces: 0,
            nmi_site_calls,
            events,
            lost,
            events_by_context: [events, 0, 0],
            lost_by_context: [lost, 0, 0],
        };
        Status {
            cpu_brand: "Intel Core Processor (Haswell, no TSX)".into(),
            apic: "xapic".into(),
            cpus_online: 2,
            cpus: vec![cpu(0, 10, 3, 0, 0, 1, 100, 4), cpu(1, 12, 7, 1, 2, 0, 50, 0)],
            watchdog: WatchdogStatus {
                source: "ipi-broadcast".into(),
                hz: 1000,
                ipi: 22,
                pmu: 0,
                external: 0,
                swallowed: 1,
                late_pmi: 0,
                unknown: 0,
                ipi_fallback_cpus: 0,
                takeover_rounds: 0,
                lockups: 0,
                nested: 0,
                exceptions_in_nmi: 3,
                ftrace_nmi_warnings: 2,
                log_records: 2,
                log_dropped: 0,
            },
            clock: appliance::contract::ClockStatus { reference: "hpet".into(), tsc_hz: 2_400_000_000, apic_timer_hz: 62_500_000, checks: vec![] },
            patching: PatchingStatus { strategy: "int3".into(), sync: "cpuid".into(), cycles: 9, batches: 360, sync_rounds: 1080, sync_failures: 0, sites: 10002, enabled: true },
            ftrace: FtraceStatus { enabled: true, disabled_reason: None },
            net: Default::default(),
            http: Default::default(),
            heap_used: 1 << 20,
            heap_free: 63 << 20,
            uptime_ns: 30_000_000_000,
            cmdline: "x".into(),
        }
        .to_json()
    }

    #[test]
    fn status_sums_cpus_and_reads_totals() {
        let (m, c) = parse_status(&status_json()).unwrap();
        assert_eq!(m.cpus, 2);
        assert_eq!(m.apic, "xapic");
        assert_eq!(m.watchdog, "ipi-broadcast");
        assert_eq!(c.nmis, 22);
        assert_eq!(c.int3_emulations, 10);
        assert_eq!(c.torn, 1);
        assert_eq!(c.events, 150);
        assert_eq!(c.lost, 4);
        assert_eq!(c.sync_rounds, 1080);
        assert_eq!(c.nmi_warnings, 2);
        assert_eq!(c.uptime_s, 30.0);
        assert_eq!((c.unknown_nmis, c.swallowed_nmis), (0, 1));
        assert_eq!((m.clock.as_str(), m.tsc_mhz), ("hpet", 2400.0));
    }

    #[test]
    fn status_missing_a_field_is_an_error_naming_it() {
        let broken = status_json().replace("\"sync_rounds\":1080,", "");
        assert_ne!(broken, status_json());
        assert!(parse_status(&broken).unwrap_err().contains("sync_rounds"));
        assert!(parse_status("<html>").unwrap_err().contains("not the appliance's Status"));
    }

    #[test]
    fn model_lists_keep_cpu_flags_with_their_model() {
        assert_eq!(model_list("Conroe, EPYC-Genoa,+x2apic,-pmu,YongFeng,"), ["Conroe", "EPYC-Genoa,+x2apic,-pmu", "YongFeng"]);
    }

    #[test]
    fn cpu_model_lists_of_both_qemu_versions() {
        let q7 = "x86 Conroe                Intel Celeron_4x0 (Conroe/Merom Class Core 2)\nx86 max  Enables all features\n\nRecognized CPUID flags:\n  fpu vme\n";
        let q10 = "Available CPUs:\n  486                   (alias configured by machine type)\n  Conroe-v1             Intel Celeron_4x0\n  EPYC-Genoa            (alias configured by machine type)\n\nRecognized CPUID flags:\n  3dnow 3dnowext\n";
        assert_eq!(cpu_models(q7), ["Conroe", "max"]);
        assert_eq!(cpu_models(q10), ["486", "Conroe-v1", "EPYC-Genoa"]);
    }

    #[test]
    fn crash_lines() {
        assert!(crash_line("Kernel panic on CPU 1: panicked at x.rs:1:1"));
        assert!(crash_line("FATAL: unhandled exception: #GP (vector 13) on CPU 0"));
        assert!(crash_line("---[ end trace: CPU 2 halted ]---"));
        assert!(!crash_line("[    5.1] INFO  cpu0: patch: status: torn=0"));
        assert!(!crash_line("WARNING: ftraced code called from NMI context lapic_wd_event+0xd/0x65"));
        assert!(!crash_line("qemu: warning: TCG doesn't support requested feature: CPUID.01H:ECX.x2apic [bit 21]"));
    }

    #[test]
    fn rates_between_samples() {
        let c = |t: f64, n: u64| Counters { uptime_s: t, nmis: n, ..Default::default() };
        let r = plot::rates(&[(0.0, c(10.0, 100)), (5.0, c(15.0, 600)), (5.0, c(15.0, 600)), (10.0, c(20.0, 700))], |c| c.nmis, 1.0);
        assert_eq!(r, vec![(0.25, 100.0), (20.0 / 60.0, 20.0)]);
    }

    #[test]
    fn report_names_failures_and_keeps_logs() {
        let (m, c) = parse_status(&status_json()).unwrap();
        let ok = RunReport {
            model: "Haswell-noTSX".into(),
            passed: true,
            failure: None,
            kernel_verdict: Some("ok".into()),
            machine: Some(m),
            last: Some(c),
            samples: vec![],
            serial_log: "/nonexistent/a.log".into(),
            wall_s: 1.0,
        };
        let bad = RunReport { model: "Conroe".into(), passed: false, failure: Some("crash: FATAL: #UD".into()), machine: None, last: None, ..ok.clone() };
        let h = ReportHeader {
            accel: "tcg".into(),
            seconds: 60,
            smp: "2".into(),
            strategy: "int3".into(),
            append: String::new(),
            jobs: 2,
            host: "h".into(),
            wall_s: 1.0,
        };
        let md = report_md(&h, &[ok, bad], &[("nmi_rate".into(), Err("no font".into()))]);
        assert!(md.contains("1 of 2 runs passed"));
        assert!(md.contains("| Haswell-noTSX | Intel Core Processor (Haswell, no TSX) | 2 | xapic | hpet 2400.0 MHz | ipi-broadcast | 22 | "), "{md}");
        assert!(md.contains("**FAILED**: crash: FATAL: #UD"));
        assert!(md.contains("### Conroe") && md.contains("/nonexistent/a.log"));
        assert!(md.contains("Plot `nmi_rate` not drawn: no font"));
    }

    #[test]
    fn plots_are_png_files_with_one_line_per_model() {
        let c = |t: f64, n: u64| Counters { uptime_s: t, nmis: n, int3_emulations: n / 2, patch_cycles: n / 100, events: n * 3, ..Default::default() };
        let run = |model: &str, k: u64| RunReport {
            model: model.into(),
            passed: true,
            failure: None,
            kernel_verdict: None,
            machine: None,
            last: None,
            samples: (0..10).map(|i| (i as f64 * 5.0, c(i as f64 * 5.0, i * i * k))).collect(),
            serial_log: PathBuf::new(),
            wall_s: 50.0,
        };
        let dir = std::env::temp_dir().join(format!("soak-plot-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let plots = plot::write_all(&dir, &[run("a", 100), run("b", 300)]);
        assert_eq!(plots.len(), 4);
        for (name, p) in plots {
            let path = p.unwrap_or_else(|e| panic!("{name}: {e} (cargo xtask deps installs the font)"));
            let bytes = std::fs::read(&path).unwrap();
            assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{name}");
            assert!(bytes.len() > 5_000, "{name}: {} bytes, an empty picture?", bytes.len());
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn default_models_cover_both_vendors_and_host_only_with_kvm() {
        let m = default_models(false);
        assert!(m.len() >= 5 && m.iter().any(|x| x.starts_with("EPYC")) && m.iter().any(|x| x == "Conroe"));
        assert!(!m.contains(&"host".to_string()));
        assert!(default_models(true).contains(&"host".to_string()));
        for newer in ["SapphireRapids", "GraniteRapids", "SierraForest", "ClearwaterForest", "EPYC-Genoa,+x2apic", "YongFeng"] {
            assert!(m.iter().any(|x| x == newer), "{newer}");
        }
    }
}
