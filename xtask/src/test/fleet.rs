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
