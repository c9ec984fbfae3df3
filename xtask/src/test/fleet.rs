//! Soaks and appliances elsewhere: `cargo xtask soak` end to end, `--target URL` and `cargo xtask fetch`.

use std::path::Path;
use std::time::{Duration, Instant};

use super::harness::*;
use crate::qemu::{self, Boot, Spec};

/// `cargo xtask soak` end to end, short: two models in parallel pass with a
/// report, samples and plots; or (`crash`) a guest that panics is a failed
/// run whose serial log the report keeps.
pub(super) fn soak_case(out: &Path, crash: bool) -> std::result::Result<(), String> {
    let _ = std::fs::remove_dir_all(out);
    let out_dir = out.display().to_string();
    let mut args = vec!["--seconds", "20", "--smp", "2", "--out", &out_dir, "--models", if crash { "Haswell-noTSX" } else { "Conroe,EPYC-Milan" }];
    if crash {
        args.extend(["--append", "selftest=panic"]);
    }
    let result = crate::soak::main_with(&args);
    let report = std::fs::read_to_string(out.join("report.json")).map_err(|e| format!("no report.json: {e}"))?;
    let v: serde_json::Value = serde_json::from_str(&report).map_err(|e| e.to_string())?;
    let runs = v["runs"].as_array().ok_or("report.json has no runs")?;
    let md = std::fs::read_to_string(out.join("report.md")).map_err(|e| format!("no report.md: {e}"))?;
    if crash {
        let failure = runs.first().and_then(|r| r["failure"].as_str()).unwrap_or("");
        if result.is_ok() || !failure.starts_with("crash: ") || !md.contains("**FAILED**") || !md.contains("Kernel panic") {
            return Err(format!("a panicking guest was not reported as a crash: {result:?}, failure {failure:?}"));
        }
        return Ok(());
    }
    result.map_err(|e| e.to_string())?;
    if runs.len() != 2 || runs.iter().any(|r| r["passed"] != true || r["samples"].as_array().is_none_or(|s| s.len() < 2)) {
        return Err(format!("expected 2 passed runs with samples: {report}"));
    }
    for png in ["nmi_rate.png", "int3_rate.png", "cycle_rate.png", "event_rate.png"] {
        let b = std::fs::read(out.join(png)).map_err(|e| format!("{png}: {e}"))?;
        if !b.starts_with(b"\x89PNG") {
            return Err(format!("{png} is not a PNG"));
        }
    }
    if !md.contains("2 of 2 runs passed") || !md.contains("| Conroe | Intel Celeron_4x0") || !md.contains("| EPYC-Milan | AMD EPYC-Milan") {
        return Err(format!("report.md:\n{md}"));
    }
    Ok(())
}

/// An appliance addressed by URL, as a physical machine would be: `cargo
/// xtask soak --target URL` gives it a passing row with its CPU from
/// /status, `fetch` downloads CTF (unpacked), JSON and status snapshots,
/// and once it is gone a watch fails with the reason in bounded time.
pub(super) fn remote_case(elf: &Path, logs: &Path) -> std::result::Result<String, String> {
    let scratch = qemu::TempDir::new("remote").map_err(|e| e.to_string())?;
    let port = qemu::free_port().map_err(|e| e.to_string())?;
    let mut spec = Spec::new(Boot::Kernel { elf: elf.to_path_buf(), append: "patch=on patch_interval_us=1000".into() });
    spec.smp = "4".into();
    spec.net = Some((port, "virtio-net-pci".into()));
    let (run, _) = spawn_serving(&spec, &logs.join("remote_target.log"))?;
    let url = format!("http://127.0.0.1:{port}");
    let out = scratch.0.join("soak");
    let out_s = out.display().to_string();
    crate::soak::main_with(&["--target", &url, "--seconds", "20", "--out", &out_s]).map_err(|e| format!("soak --target: {e}"))?;
    let md = std::fs::read_to_string(out.join("report.md")).map_err(|e| e.to_string())?;
    let row = md.lines().find(|l| l.starts_with(&format!("| target {url} |"))).ok_or_else(|| format!("no row for the target in:\n{md}"))?;
    if !row.ends_with("| passed |") || !row.contains("| 4 | x2apic |") {
        return Err(format!("target row: {row}"));
    }
    let dir = scratch.0.join("fetch");
    for format in ["ctf", "dat", "json", "status"] {
        crate::remote::fetch(&url, format, &dir)?;
    }
    if !std::fs::read(dir.join("trace.dat")).is_ok_and(|b| b.starts_with(b"\x17\x08\x44tracing6\0")) {
        return Err("fetch --format dat: no trace.dat of version 6".into());
    }
    if !dir.join("trace/metadata").is_file() {
        return Err("fetch --format ctf: no trace/metadata unpacked".into());
    }
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("trace.json")).map_err(|e| e.to_string())?).map_err(|e| format!("trace.json: {e}"))?;
    if json["traceEvents"].as_array().is_none_or(|a| a.is_empty()) {
        return Err("fetch --format json: no events".into());
    }
    drop(run);
    let t = Instant::now();
    let gone = crate::remote::watch(&url, 60, Duration::from_millis(500), Duration::from_secs(3));
    if gone.passed || !gone.failure.as_deref().is_some_and(|f| f.starts_with("stopped answering")) || t.elapsed() > Duration::from_secs(20) {
        return Err(format!("a vanished target: {:?} after {:?}", gone.failure, t.elapsed()));
    }
    Ok(format!("soak row passed, ctf/dat/json/status fetched, a vanished target failed in {:.1} s", t.elapsed().as_secs_f64()))
}

/// The fleet's Prometheus rules (`deploy/prometheus/`): the configuration
/// and rules check, and `promtool test rules` (every alert with a case
/// that fires and one that stays silent).
pub(super) fn prometheus_rules_case() -> std::result::Result<String, String> {
    let dir = crate::root().join("deploy/prometheus");
    let run = |args: &[&str]| -> std::result::Result<String, String> {
        let out = std::process::Command::new("promtool").args(args).current_dir(&dir).output().map_err(|e| format!("promtool: {e}"))?;
        let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            return Err(format!("promtool {}: {text}", args.join(" ")));
        }
        Ok(text)
    };
    run(&["check", "config", "prometheus.yml"])?;
    let text = run(&["test", "rules", "appliance.rules.test.yml"])?;
    if !text.contains("SUCCESS") {
        return Err(format!("promtool test rules: {text}"));
    }
    Ok("promtool check config and test rules pass".into())
}

/// The real Prometheus server (Debian's package) against two appliance
/// guests for a minute, listed through `file_sd_configs` as a lab would:
/// both targets `up`, and their NMI counters' rates non-zero, asked through
/// Prometheus's HTTP API.
pub(super) fn prometheus_two_guests_case(elf: &Path, logs: &Path) -> std::result::Result<String, String> {
    let mut guests = Vec::new();
    let mut targets = Vec::new();
    for i in 0..2 {
        let port = qemu::free_port().map_err(|e| e.to_string())?;
        let mut spec = kernel_boot(elf, "patch=on ip=10.0.2.15/24 gw=10.0.2.2", "2");
        if let Boot::Kernel { append, .. } = &mut spec.boot {
            // Serve for the minute: no verdict exit.
            *append = append.replace("test_exit ", "");
        }
        spec.net = Some((port, "e1000".into()));
        let (run, _) = spawn_serving(&spec, &logs.join(format!("prometheus_guest_{i}.log")))?;
        guests.push(run);
        targets.push(format!("127.0.0.1:{port}"));
    }
    let dir = qemu::TempDir::new("prometheus").map_err(|e| e.to_string())?;
    std::fs::create_dir_all(dir.0.join("appliances")).map_err(|e| e.to_string())?;
    std::fs::copy(crate::root().join("deploy/prometheus/appliance.rules.yml"), dir.0.join("appliance.rules.yml")).map_err(|e| e.to_string())?;
    // The repository's configuration with a short scrape interval.
    let config = std::fs::read_to_string(crate::root().join("deploy/prometheus/prometheus.yml")).map_err(|e| e.to_string())?;
    std::fs::write(dir.0.join("prometheus.yml"), config.replace("scrape_interval: 15s", "scrape_interval: 2s").replace("refresh_interval: 30s", "refresh_interval: 2s")).map_err(|e| e.to_string())?;
    let list: String = targets.iter().map(|t| format!("    - {t}\n")).collect();
    std::fs::write(dir.0.join("appliances/test.yml"), format!("- targets:\n{list}  labels:\n    expect_pmu: \"false\"\n")).map_err(|e| e.to_string())?;
    let api = qemu::free_port().map_err(|e| e.to_string())?;
    let mut server = std::process::Command::new("prometheus")
        .arg(format!("--config.file={}", dir.0.join("prometheus.yml").display()))
        .arg(format!("--storage.tsdb.path={}", dir.0.join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{api}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(logs.join("prometheus_server.log")).map_err(|e| e.to_string())?)
        .spawn()
        .map_err(|e| format!("prometheus: {e} (Debian's `prometheus` package)"))?;
    let query = |q: &str| -> std::result::Result<serde_json::Value, String> {
        let enc: String = q.bytes().map(|b| if b.is_ascii_alphanumeric() || b"_.-".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") }).collect();
        let (code, body) = qemu::http_at(&format!("127.0.0.1:{api}"), &format!("GET /api/v1/query?query={enc} HTTP/1.1\r\nHost: p\r\nConnection: close\r\n\r\n"))?;
        if code != 200 {
            return Err(format!("{q}: HTTP {code}: {body}"));
        }
        let v: serde_json::Value = serde_json::from_str(&body).map_err(|e| format!("{q}: {e}: {body}"))?;
        Ok(v["data"]["result"].clone())
    };
    // A minute of scraping, watching the guests' consoles meanwhile.
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(60) {
        for g in guests.iter_mut() {
            let mut log = String::new();
            let _ = g.wait_line(g.started.elapsed() + Duration::from_millis(250), &mut log, |_| false);
            if let Some(bad) = log.lines().find(|l| l.contains("FATAL") || l.contains("panicked")) {
                let _ = server.kill();
                return Err(format!("a guest failed: {bad}"));
            }
        }
    }
    let value = |r: &serde_json::Value| r["value"][1].as_str().and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    let up = query("up{job=\"appliance\"}");
    let rates = query("sum by (instance) (rate(appliance_nmis_total[30s]))");
    let cycles = query("instance:appliance_nmis:rate5m");
    let _ = server.kill();
    let _ = server.wait();
    let (up, rates, recorded) = (up?, rates?, cycles?);
    let up_targets: Vec<String> = up.as_array().into_iter().flatten().filter(|r| value(r) == 1.0).filter_map(|r| r["metric"]["instance"].as_str().map(String::from)).collect();
    if targets.iter().any(|t| !up_targets.contains(t)) {
        return Err(format!("targets up: {up_targets:?}, expected {targets:?} (up: {up})"));
    }
    let moving: Vec<(String, f64)> = rates.as_array().into_iter().flatten().filter_map(|r| Some((r["metric"]["instance"].as_str()?.to_string(), value(r)))).collect();
    if moving.len() != 2 || moving.iter().any(|(_, v)| *v <= 0.0) {
        return Err(format!("NMI rates per target: {moving:?}"));
    }
    if recorded.as_array().is_none_or(|a| a.len() != 2) {
        return Err(format!("the recording rule gave {recorded}"));
    }
    Ok(format!("both targets up; NMIs/s {}", moving.iter().map(|(t, v)| format!("{t} {v:.0}")).collect::<Vec<_>>().join(", ")))
}
