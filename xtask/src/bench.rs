//! `cargo xtask bench`: the appliance's benchmarks, reported as a table and as
//! `target/bench/kernel.json`, never asserted.
//!
//! - The `bench` boot: the kernel measures itself (IPI round trips overall and
//!   per CPU, sync rounds per serializing instruction, batches int3 vs
//!   stop_machine, site off/on cost, NMI handler cost) and prints
//!   `bench: KEY VALUE UNIT` lines.
//! - One service boot per NIC (virtio-net, e1000), patching loop running:
//!   kernel entry to `smp: N CPUs online` and to `net: listening`, and the
//!   fetch throughput of `/trace.ctf.tar` over TCP.
//! - NMI-rate boots with the patching loop running, at rising watchdog
//!   rates: the NMIs per second each CPU actually took, read from `/status`.
//!
//! Then the silicon harness (the protocol on this machine's CPUs, then one
//! trace event beside an LTTng-UST tracepoint).

use crate::fetch_rates::fetch_rates;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

use crate::qemu::{self, Accel, Boot, Spec};
use crate::{Result, root};

/// One figure: (name, value, unit, the boot it came from).
#[derive(Clone, Debug, PartialEq)]
pub struct Figure {
    pub name: String,
    pub value: f64,
    pub unit: String,
    pub boot: String,
}

fn fig(name: impl Into<String>, value: f64, unit: &str, boot: &str) -> Figure {
    Figure { name: name.into(), value, unit: unit.into(), boot: boot.into() }
}

/// The `bench:` lines of the kernel's bench boot.
pub fn parse_bench_lines(log: &str, boot: &str) -> Vec<Figure> {
    appliance::contract::BenchFigure::all_in(log).map(|f| fig(f.key, f.value as f64, f.unit, boot)).collect()
}

/// The kernel timestamp (seconds since kernel entry) of the first serial
/// line containing `needle`: `[    0.252265] INFO  cpu0: ...`.
pub fn stamp_of(log: &str, needle: &str) -> Option<f64> {
    log.lines().find(|l| l.contains(needle)).and_then(|l| l.strip_prefix('[')?.split(']').next()?.trim().parse().ok())
}

/// The bench boot (`test_exit bench`), its figures labelled `bench`; then the
/// same with no CPU calling the traced functions (`patch_workers=0`), whose
/// batch and call figures are labelled `bench-no-workers` (the like-for-like
/// of Linux switching its tracer, and timing a traced call, with its other
/// CPUs idle: under single-threaded TCG a busy worker's turns count in the
/// timed CPU's wall time).
fn kernel_bench(accel: Accel, dir: &std::path::Path) -> Result<Vec<Figure>> {
    let elf = crate::build::build_elf()?;
    let mut figs = Vec::new();
    for (label, append, log) in [("bench", "test_exit bench", "kernel.log"), ("bench-no-workers", "test_exit bench patch_workers=0", "kernel-no-workers.log")] {
        let mut spec = Spec::new(Boot::Kernel { elf: elf.clone(), append: append.into() });
        spec.accel = accel;
        let out = qemu::spawn(&spec, &dir.join(log), false)?.wait(Duration::from_secs(600));
        let f = parse_bench_lines(&out.log, label);
        if out.exit != Some(qemu::EXIT_SUCCESS) || f.is_empty() {
            return Err(format!("the benchmark boot failed (exit {:?}); see {}", out.exit, dir.join(log).display()).into());
        }
        figs.extend(f.into_iter().filter(|x| label == "bench" || ["batch_", "event_cost", "call_"].iter().any(|p| x.name.starts_with(p))));
    }
    Ok(figs)
}

/// Boot with the patching loop and a NIC; wait for the network; run `f`.
fn with_service<T>(
    accel: Accel,
    nic: &str,
    append: &str,
    log: &std::path::Path,
    f: impl FnOnce(u16, &mut qemu::Running, &mut String) -> std::result::Result<T, String>,
) -> Result<(T, String)> {
    let elf = crate::build::build_elf()?;
    let mut spec = Spec::new(Boot::Kernel { elf, append: append.into() });
    spec.accel = accel;
    let port = qemu::free_port()?;
    spec.net = Some((port, nic.into()));
    let mut run = qemu::spawn(&spec, log, false)?;
    let mut serial = String::new();
    run.wait_line(Duration::from_secs(120), &mut serial, |l| l.contains("net: listening"))
        .ok_or_else(|| format!("{nic}: the service never listened; see {}", log.display()))?;
    let r = f(port, &mut run, &mut serial).map_err(|e| format!("{nic}: {e}; see {}", log.display()))?;
    Ok((r, serial))
}

/// Fetch `path` once: (bytes, seconds).
fn fetch(port: u16, path: &str) -> std::result::Result<(usize, f64), String> {
    let t = Instant::now();
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(60))).map_err(|e| e.to_string())?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n").map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).map_err(|e| e.to_string())?;
    if !buf.starts_with(b"HTTP/1.1 200") {
        return Err(format!("{path}: {}", String::from_utf8_lossy(&buf[..buf.len().min(80)])));
    }
    Ok((buf.len(), t.elapsed().as_secs_f64()))
}

/// Timed fetches of each path, on the appliance and on the Linux peer alike.
pub(crate) const FETCHES: usize = 7;


/// Min, median and max of sorted, non-empty `v`.
pub(crate) fn spread(v: &[f64]) -> [f64; 3] {
    [v[0], v[v.len() / 2], v[v.len() - 1]]
}

/// `{stem}_min`, `_median`, `_best` and `_repetitions` of sorted, non-empty
/// download rates (MB/s).
fn rate_figs(stem: &str, rates: &[f64], boot: &str) -> [Figure; 4] {
    let [min, median, best] = spread(rates);
    [
        fig(format!("{stem}_min"), min, "MB/s", boot),
        fig(format!("{stem}_median"), median, "MB/s", boot),
        fig(format!("{stem}_best"), best, "MB/s", boot),
        fig(format!("{stem}_repetitions"), rates.len() as f64, "", boot),
    ]
}

/// `{stem}` (the median), `{stem}_min`, `_max` and `_repetitions` of
/// sorted, non-empty timings in `unit`.
fn timing_figs(stem: &str, v: &[f64], unit: &str, boot: &str) -> [Figure; 4] {
    let [min, median, max] = spread(v);
    [
        fig(stem, median, unit, boot),
        fig(format!("{stem}_min"), min, unit, boot),
        fig(format!("{stem}_max"), max, unit, boot),
        fig(format!("{stem}_repetitions"), v.len() as f64, "", boot),
    ]
}

fn status_nmis(port: u16) -> std::result::Result<(f64, Vec<u64>, u64), String> {
    let st = qemu::status(port)?;
    Ok((st.uptime_ns as f64 / 1e9, st.cpus.iter().map(|c| c.nmis).collect(), st.patching.cycles))
}

/// Let the guest run for `secs` of its own time, reading its console (a
/// bounded wait on the guest's clock, not a sleep standing in for an event).
fn run_for(port: u16, run: &mut qemu::Running, serial: &mut String, secs: f64) -> std::result::Result<(), String> {
    let (start, _, _) = status_nmis(port)?;
    loop {
        let _ = run.wait_line(run.started.elapsed() + Duration::from_secs(1), serial, |_| false);
        let (now, _, _) = status_nmis(port)?;
        if now - start >= secs {
            return Ok(());
        }
    }
}

/// Seconds over which the patching loop's pace is taken.
const PACE_SECS: f64 = 4.0;

/// The other downloads, fetched in the boots that name them: their figure
/// names' stem.
const OTHER_DOWNLOADS: [(&str, &str); 3] = [("/trace", "trace_text"), ("/trace.json", "trace_json"), ("/trace.dat", "trace_dat")];

fn service_bench(accel: Accel, dir: &std::path::Path, name: &str, nic: &str, append: &str, others: bool) -> Result<Vec<Figure>> {
    let boot = format!("service-{name}");
    let paths: Vec<(&str, &str)> = std::iter::once(("/trace.ctf.tar", "trace_ctf")).chain(OTHER_DOWNLOADS.into_iter().filter(|_| others)).collect();
    let (got, serial) = with_service(accel, nic, append, &dir.join(format!("{boot}.log")), |port, run, serial| {
        // Full rings first: a few seconds of the patching loop and the workers.
        run_for(port, run, serial, 5.0)?;
        // The patching loop's pace without a client, then while CTF
        // downloads run back to back: batches (every site flipped once) per
        // second of the guest's time.
        let pace = |during: &mut dyn FnMut() -> std::result::Result<(), String>| -> std::result::Result<f64, String> {
            let a = qemu::status(port)?;
            during()?;
            let b = qemu::status(port)?;
            Ok((b.patching.batches - a.patching.batches) as f64 / ((b.uptime_ns - a.uptime_ns) as f64 / 1e9))
        };
        let idle = pace(&mut || run_for(port, run, serial, PACE_SECS))?;
        let fetching = pace(&mut || {
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs_f64(PACE_SECS) {
                fetch(port, "/trace.ctf.tar")?;
            }
            Ok(())
        })?;
        let mut got = Vec::new();
        for (path, stem) in &paths {
            let (rates, size) = fetch_rates(fetch, port, path, FETCHES)?;
            got.push((*stem, rates, size));
        }
        Ok((got, idle, fetching))
    })?;
    let (got, idle, fetching) = got;
    let mut f = Vec::new();
    if let Some(t) = stamp_of(&serial, "CPUs online") {
        f.push(fig("boot_to_smp_online", t * 1e3, "ms", &boot));
    }
    if let Some(t) = stamp_of(&serial, "net: listening") {
        f.push(fig("boot_to_network_ready", t * 1e3, "ms", &boot));
    }
    f.push(fig("patch_batches_per_s_idle", idle, "1/s", &boot));
    f.push(fig("patch_batches_per_s_fetching", fetching, "1/s", &boot));
    for (stem, rates, bytes) in got {
        f.push(fig(format!("{stem}_fetch_bytes"), bytes as f64, "B", &boot));
        f.extend(rate_figs(&format!("{stem}_fetch"), &rates, &boot));
    }
    Ok(f)
}

/// The Linux peer (`peer.rs`) under the same accelerator and `-smp 4`: its
/// function-tracer switch-on for as many functions as the appliance has
/// sites, and its HTTP download of a file the size of the appliance's e1000
/// snapshot, each with its ratio to the appliance's figure of this run.
fn peer_bench(accel: Accel, dir: &std::path::Path, figs: &[Figure]) -> Result<Vec<Figure>> {
    let find = |name: &str, boot: &str| figs.iter().find(|f| f.name == name && f.boot == boot).map(|f| f.value);
    let size = find("trace_ctf_fetch_bytes", "service-e1000").unwrap_or(700_000.0) as usize;
    let small = find("trace_ctf_fetch_bytes", "service-e1000-patch-off").unwrap_or(200_000.0) as usize;
    let peer = crate::peer::prepare(size, small)?;
    let m = crate::peer::measure(&peer, accel, "4", &dir.join("linux-peer.log"), FETCHES, fetch)?;
    let median = |v: &[f64]| spread(v)[1];
    let (fetch_median, small_median) = (median(&m.fetch_mb_s), median(&m.fetch_small_mb_s));
    let (flipping_median, flip_busy_median) = (median(&m.fetch_flipping_mb_s), median(&m.fetch_flipping_busy_mb_s));
    let boot = format!("linux-peer {}", peer.version);
    let ms = |v: &[u64]| v.iter().map(|&x| x as f64 / 1e6).collect::<Vec<f64>>();
    let (idle, busy) = (ms(&m.tracer_on_idle_ns), ms(&m.tracer_on_busy_ns));
    let (idle_ms, busy_ms) = (median(&idle), median(&busy));
    // ns per function of the median switch-on.
    let per_function = |ms: f64| ms * 1e6 / m.functions.max(1) as f64;
    let mut f = vec![
        fig("peer_ftrace_functions", m.functions as f64, "", &boot),
        fig("peer_tracer_on_idle_per_function", per_function(idle_ms), "ns", &boot),
        fig("peer_tracer_on_busy_per_function", per_function(busy_ms), "ns", &boot),
    ];
    f.extend(timing_figs("peer_tracer_on_idle", &idle, "ms", &boot));
    f.extend(timing_figs("peer_tracer_on_busy", &busy, "ms", &boot));
    f.extend([
        fig("peer_dd_bs1_tracer_off", m.dd_off_ns as f64 / 1e6, "ms", &boot),
        fig("peer_dd_bs1_tracer_on", m.dd_on_ns as f64 / 1e6, "ms", &boot),
        fig("peer_dd_bs1_traced_calls", m.dd_events as f64, "", &boot),
    ]);
    f.extend(timing_figs("peer_traced_call", &m.traced_call_ns, "ns", &boot));
    f.push(fig("peer_http_fetch_bytes", size as f64, "B", &boot));
    f.extend(rate_figs("peer_http_fetch", &m.fetch_mb_s, &boot));
    f.push(fig("peer_http_small_fetch_bytes", small as f64, "B", &boot));
    f.extend(rate_figs("peer_http_small_fetch", &m.fetch_small_mb_s, &boot));
    f.extend(rate_figs("peer_http_fetch_flipping", &m.fetch_flipping_mb_s, &boot));
    f.extend(rate_figs("peer_http_fetch_flipping_busy", &m.fetch_flipping_busy_mb_s, &boot));
    f.extend([
        fig("peer_flipping_fetches_start", m.flip_fetch_window_s.0, "s", &boot),
        fig("peer_flipping_fetches_end", m.flip_fetch_window_s.1, "s", &boot),
        fig("peer_flipping_busy_cpus", m.busy_cpus as f64, "", &boot),
        fig("peer_flip_cycles_before_busy_fetches", m.busy_flip_cycles.0 as f64, "", &boot),
        fig("peer_flip_cycles_after_busy_fetches", m.busy_flip_cycles.1 as f64, "", &boot),
    ]);
    // Ratios: appliance / Linux (above 1: the appliance is faster for rates, slower for times).
    if let Some(a) = find("trace_ctf_fetch_median", "service-e1000") {
        f.push(fig("ratio_fetch_appliance_e1000_patching_per_peer_idle", a / fetch_median, "", "ratio"));
        f.push(fig("ratio_fetch_appliance_e1000_patching_per_peer_flipping", a / flipping_median, "", "ratio"));
        // Like for like: two CPUs calling traced functions on each side.
        f.push(fig("ratio_fetch_appliance_e1000_patching_per_peer_flipping_busy", a / flip_busy_median, "", "ratio"));
    }
    for (_, stem) in OTHER_DOWNLOADS {
        if let Some(a) = find(&format!("{stem}_fetch_median"), "service-e1000") {
            f.push(fig(format!("ratio_fetch_{stem}_appliance_e1000_patching_per_peer_flipping"), a / flipping_median, "", "ratio"));
            f.push(fig(format!("ratio_fetch_{stem}_appliance_e1000_patching_per_peer_flipping_busy"), a / flip_busy_median, "", "ratio"));
        }
    }
    if let Some(a) = find("trace_ctf_fetch_median", "service-e1000-patching-no-workers") {
        f.push(fig("ratio_fetch_appliance_e1000_patching_no_workers_per_peer_flipping", a / flipping_median, "", "ratio"));
    }
    for (_, stem) in OTHER_DOWNLOADS {
        if let Some(a) = find(&format!("{stem}_fetch_median"), "service-e1000-patching-no-workers") {
            f.push(fig(format!("ratio_fetch_{stem}_appliance_e1000_patching_no_workers_per_peer_flipping"), a / flipping_median, "", "ratio"));
        }
    }
    if let Some(a) = find("trace_ctf_fetch_median", "service-e1000-patch-off") {
        f.push(fig("ratio_fetch_appliance_e1000_idle_per_peer_idle", a / fetch_median, "", "ratio"));
        f.push(fig("ratio_fetch_appliance_e1000_idle_per_peer_idle_same_size", a / small_median, "", "ratio"));
    }
    let linux_ps = median(&m.traced_call_ns) * 1000.0;
    if let Some(a) = find("event_cost_ps", "bench") {
        f.push(fig("ratio_event_per_peer_traced_call", a / linux_ps, "", "ratio"));
    }
    if let Some(a) = find("event_cost_ps", "bench-no-workers") {
        f.push(fig("ratio_event_no_workers_per_peer_traced_call", a / linux_ps, "", "ratio"));
    }
    if let Some(a) = find("batch_10000_int3_per_site", "bench") {
        f.push(fig("ratio_int3_per_site_busy_per_peer_per_function_busy", a / per_function(busy_ms), "", "ratio"));
        f.push(fig("ratio_int3_per_site_busy_per_peer_per_function_idle", a / per_function(idle_ms), "", "ratio"));
    }
    if let Some(a) = find("batch_10000_int3_per_site", "bench-no-workers") {
        f.push(fig("ratio_int3_per_site_no_workers_per_peer_per_function_idle", a / per_function(idle_ms), "", "ratio"));
    }
    Ok(f)
}

/// NMIs per second per CPU with the patching loop running, at watchdog rate `hz`.
fn nmi_rate(accel: Accel, dir: &std::path::Path, hz: u32) -> Result<Vec<Figure>> {
    let boot = format!("nmi-{hz}hz");
    let append = format!("patch=on nmi_watchdog_hz={hz}");
    let ((per_cpu, cycles), _) = with_service(accel, "virtio-net-pci", &append, &dir.join(format!("{boot}.log")), |port, run, serial| {
        run_for(port, run, serial, 2.0)?;
        let (t0, a, c0) = status_nmis(port)?;
        run_for(port, run, serial, 10.0)?;
        let (t1, b, c1) = status_nmis(port)?;
        let rates: Vec<f64> = a.iter().zip(&b).map(|(x, y)| (y - x) as f64 / (t1 - t0)).collect();
        Ok((rates, c1 - c0))
    })?;
    let mut f: Vec<Figure> = per_cpu.iter().enumerate().map(|(i, r)| fig(format!("nmi_rate_at_{hz}hz_cpu{i}"), r.round(), "1/s", &boot)).collect();
    let min = per_cpu.iter().copied().fold(f64::INFINITY, f64::min);
    f.push(fig(format!("nmi_rate_at_{hz}hz_min_cpu"), min.round(), "1/s", &boot));
    f.push(fig(format!("nmi_rate_at_{hz}hz_patch_cycles_in_10s"), cycles as f64, "", &boot));
    Ok(f)
}

/// Issue 17's aim for `/trace.ctf.tar` over virtio-net under hardware KVM, MB/s.
const KVM_VIRTIO_NET_AIM_MB_S: f64 = 100.0;

/// The virtio-net download against the aim for hardware KVM: met or not
/// under KVM, and under an emulator that the aim does not apply.
fn kvm_download_note(accel: Accel, figs: &[Figure]) -> Option<String> {
    let v = figs.iter().find(|f| f.name == "trace_ctf_fetch_median" && f.boot == "service-virtio-net")?.value;
    Some(match accel {
        Accel::Kvm => format!(
            "virtio-net /trace.ctf.tar under hardware KVM: median {v:.1} MB/s, the aim is {KVM_VIRTIO_NET_AIM_MB_S} MB/s: {}",
            if v >= KVM_VIRTIO_NET_AIM_MB_S { "met" } else { "NOT met" }
        ),
        _ => format!("virtio-net /trace.ctf.tar: median {v:.1} MB/s under an emulator; the aim of {KVM_VIRTIO_NET_AIM_MB_S} MB/s is for hardware KVM, not on this host"),
    })
}

/// `cargo xtask bench` options.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Seconds per strategy for the silicon harness
    #[arg(long, default_value_t = 10)]
    seconds: u32,
    /// Only the service boots: boot to network and `/trace.ctf.tar` fetch
    /// rates, one boot per NIC model (and the Linux peer)
    #[arg(long)]
    nics_only: bool,
    /// Skip the Linux peer (a Debian kernel and busybox under the same QEMU)
    #[arg(long)]
    no_peer: bool,
    /// Only the Linux peer (its figures, without ratios to the appliance's)
    #[arg(long, conflicts_with_all = ["no_peer", "nics_only"])]
    peer_only: bool,
    /// Append this run's figures to bench/history.csv (commit, date, host)
    #[arg(long)]
    record: bool,
    /// Append an earlier run's figures (a folder with its kernel.json) to
    /// bench/history.csv, and run nothing
    #[arg(long, value_name = "DIR")]
    record_from: Vec<std::path::PathBuf>,
}

/// `--record-from`: earlier runs into the history, named by their folders.
fn record_from(dirs: &[std::path::PathBuf]) -> Result<()> {
    let history = root().join("bench/history.csv");
    for d in dirs {
        let k: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(d.join("kernel.json")).map_err(|e| format!("{}: {e}", d.join("kernel.json").display()))?)?;
        let name = d.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let (commit, date) = crate::bench_history::from_folder_name(&name);
        let rows = crate::bench_history::rows(&commit, &date, &name, &k)?;
        crate::bench_history::append(&history, &rows)?;
        println!("{}: {} figures into {}", d.display(), rows.len(), history.display());
    }
    Ok(())
}

/// `--record`: the run just written to `dir` into the history, with this
/// checkout's commit (`-dirty` when it has changes) and today's date.
fn record(dir: &std::path::Path) -> Result<()> {
    let git = |args: &[&str]| std::process::Command::new("git").current_dir(root()).args(args).output().ok().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()).unwrap_or_default();
    let mut commit = git(&["rev-parse", "--short", "HEAD"]);
    if !git(&["status", "--porcelain", "--untracked-files=no"]).is_empty() {
        commit += "-dirty";
    }
    let k: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("kernel.json"))?)?;
    let date = crate::bench_history::today();
    let rows = crate::bench_history::rows(&commit, &date, &format!("bench-{date}-{commit}"), &k)?;
    let history = root().join("bench/history.csv");
    crate::bench_history::append(&history, &rows)?;
    println!("recorded {} figures in {}", rows.len(), history.display());
    Ok(())
}

pub fn main(args: &BenchArgs) -> Result<()> {
    if !args.record_from.is_empty() {
        return record_from(&args.record_from);
    }
    let seconds = args.seconds.to_string();
    crate::deps::ensure_all()?;
    let dir = root().join("target/bench");
    std::fs::create_dir_all(&dir)?;
    let (accel, why) = qemu::choose_accel(Accel::Auto)?;
    println!("== appliance benchmarks ({why}), --smp 4");
    let appliance = !args.peer_only;
    let mut figs = if args.nics_only || !appliance { Vec::new() } else { kernel_bench(accel, &dir)? };
    for (name, nic, append) in [
        ("virtio-net", "virtio-net-pci", "patch=on"),
        ("e1000", "e1000", "patch=on"),
        ("e1000e", "e1000e", "patch=on"),
        ("igb", "igb", "patch=on"),
        ("usb-net", "usb-net", "patch=on"),
        // Patching with no CPU calling the traced functions but the
        // serving one (and interrupt handlers): Linux's switching loop is
        // measured that way.
        ("e1000-patching-no-workers", "e1000", "patch=on patch_workers=0"),
        // Nothing patching: the rings hold NMI ticks and little else.
        ("e1000-patch-off", "e1000", "patch=off"),
    ]
    .into_iter()
    .filter(|_| appliance)
    {
        println!("== service boot with {name} ({append}): boot to network, /trace.ctf.tar fetch");
        // Every download where a peer figure compares with it: e1000 with
        // and without workers.
        figs.extend(service_bench(accel, &dir, name, nic, append, matches!(name, "e1000" | "e1000-patching-no-workers"))?);
    }
    let mut notes: Vec<String> = kvm_download_note(accel, &figs).into_iter().collect();
    if !args.no_peer {
        println!("== the Linux peer: function tracer on for every function, HTTP download from busybox httpd (e1000)");
        match peer_bench(accel, &dir, &figs) {
            Ok(f) => figs.extend(f),
            Err(e) => notes.push(format!("the Linux peer did not run: {e}")),
        }
    }
    let rates: &[u32] = if args.nics_only || !appliance { &[] } else { &[1000, 10_000, 50_000, 100_000] };
    for &hz in rates {
        println!("== NMI rate with the patching loop running, watchdog at {hz} Hz");
        match nmi_rate(accel, &dir, hz) {
            Ok(f) => figs.extend(f),
            // The rate is the experiment: a guest that cannot keep up is a finding, not an error.
            Err(e) => notes.push(format!("watchdog at {hz} Hz not sustained: {e}")),
        }
    }
    if !args.nics_only && appliance {
        let best = figs.iter().filter(|f| f.name.ends_with("hz_min_cpu")).map(|f| f.value).fold(0.0, f64::max);
        figs.push(fig("nmi_rate_highest_sustained_per_cpu", best, "1/s", "nmi-*"));
    }
    for f in &figs {
        println!("{:<48} {:>14} {:<5} {}", f.name, trim(f.value), f.unit, f.boot);
    }
    let json: Vec<serde_json::Value> =
        figs.iter().map(|f| serde_json::json!({"name": f.name, "value": f.value, "unit": f.unit, "boot": f.boot})).collect();
    let commands = boot_commands(&dir, &figs);
    let boots: Vec<serde_json::Value> = commands.iter().map(|(b, c)| serde_json::json!({"boot": b, "command": c})).collect();
    let host = crate::host_cpu();
    std::fs::write(
        dir.join("kernel.json"),
        serde_json::to_string_pretty(&serde_json::json!({"accel": why, "host": host, "results": json, "boots": boots, "notes": notes}))?,
    )?;
    std::fs::write(dir.join("report.md"), report_md(&figs, &why, &host, &notes, &commands))?;
    for n in &notes {
        println!("note: {n}");
    }
    println!("wrote {} and report.md", dir.join("kernel.json").display());
    if args.record {
        record(&dir)?;
    }
    if args.nics_only || !appliance {
        return Ok(());
    }
    let json = dir.join("silicon.json");
    println!("== silicon: the patching protocol on this machine's CPUs, {seconds} s per strategy");
    crate::silicon(&["--seconds".into(), seconds, "--json".into(), json.display().to_string()])?;
    // One event on this CPU: the kernel's trampoline and ring beside an
    // LTTng-UST tracepoint (the harness says what it could not measure).
    if let Err(e) = crate::deps::ensure(crate::deps::BENCH_TOOLS) {
        println!("note: the LTTng-UST comparison needs: {e}");
    }
    let events = dir.join("silicon-events.json");
    println!("== silicon: one trace event (the kernel's trampoline and ring) beside an LTTng-UST tracepoint");
    crate::silicon(&["--events".into(), "--json".into(), events.display().to_string(), "--dir".into(), dir.join("silicon-events").display().to_string()])
}

/// The console log a boot's figures came from, in the bench's directory
/// (None: figures computed from other boots').
fn log_of(boot: &str) -> Option<String> {
    match boot {
        "bench" => Some("kernel.log".into()),
        "bench-no-workers" => Some("kernel-no-workers.log".into()),
        b if b.starts_with("linux-peer") => Some("linux-peer.log".into()),
        b if b.starts_with("service-") || (b.starts_with("nmi-") && b.ends_with("hz")) => Some(format!("{b}.log")),
        _ => None,
    }
}

/// Each boot of `figs` (in order of first appearance) with the QEMU
/// command line its log starts with (`qemu::spawn` writes it there).
fn boot_commands(dir: &std::path::Path, figs: &[Figure]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for f in figs {
        if out.iter().any(|(b, _)| *b == f.boot) {
            continue;
        }
        let Some(log) = log_of(&f.boot) else { continue };
        let first = std::fs::read_to_string(dir.join(&log)).ok().and_then(|t| t.lines().next().map(str::to_string));
        let command = first.and_then(|l| l.strip_prefix("# ").map(str::to_string)).unwrap_or_else(|| format!("(no command line in {log})"));
        out.push((f.boot.clone(), command));
    }
    out
}

/// The figures as a Markdown table (for bench/README.md and the README),
/// ratios to the same boot's raw IPI round trip where they apply, and each
/// boot's command line.
pub fn report_md(figs: &[Figure], accel: &str, host: &str, notes: &[String], commands: &[(String, String)]) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(s, "Made by `cargo xtask bench`. Accelerator: {accel}. Host: {host}. `--smp 4`.\n");
    let _ = writeln!(
        s,
        "Downloads: `GET` over TCP to the guest's forwarded port, one untimed then {FETCHES} timed (min, median, best MB/s); \
         the peer's while its tracer switches, through a whole switching cycle (at least {FETCHES}; `_repetitions` says how many). \
         The peer's figures come from its `/init` and CGI scripts (`xtask/src/peer.rs`); each boot's command line is at the end.\n"
    );
    let _ = writeln!(s, "| figure | value | unit | boot |");
    let _ = writeln!(s, "|---|---|---|---|");
    for f in figs {
        let _ = writeln!(s, "| {} | {} | {} | {} |", f.name, trim(f.value), f.unit, f.boot);
    }
    let get = |n: &str| figs.iter().find(|f| f.name == n).map(|f| f.value);
    if let Some(raw) = get("ipi_round_trip_all_cpus").filter(|r| *r > 0.0) {
        let _ = writeln!(s, "\nRatios to the raw IPI round trip ({} ns) of the same boot:\n", trim(raw));
        let _ = writeln!(s, "| figure | ratio |");
        let _ = writeln!(s, "|---|---|");
        for f in figs.iter().filter(|f| f.boot == "bench" && f.unit == "ns" && f.name != "ipi_round_trip_all_cpus" && !f.name.ends_with("_min") && !f.name.ends_with("_max")) {
            let _ = writeln!(s, "| {} | {:.2} |", f.name, f.value / raw);
        }
    }
    for n in notes {
        let _ = writeln!(s, "\nNote: {n}");
    }
    if !commands.is_empty() {
        let _ = writeln!(s, "\nBoots and their command lines:\n");
        for (boot, command) in commands {
            let _ = writeln!(s, "- {boot}: `{command}`");
        }
    }
    s
}

fn trim(v: f64) -> String {
    if v.fract() == 0.0 { format!("{v:.0}") } else { format!("{v:.3}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_boot_is_reported_with_the_command_line_its_log_starts_with() {
        let dir = std::env::temp_dir().join(format!("xtask-bench-commands-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("kernel.log"), "# qemu-system-x86_64 -kernel a.elf -append test_exit bench\n[ 0.1] x\n").unwrap();
        std::fs::write(dir.join("service-e1000.log"), "# qemu-system-x86_64 -device e1000\n").unwrap();
        std::fs::write(dir.join("linux-peer.log"), "no header\n").unwrap();
        let figs = [
            fig("a", 1.0, "ns", "bench"),
            fig("b", 2.0, "MB/s", "service-e1000"),
            fig("c", 3.0, "ns", "bench"),
            fig("d", 4.0, "", "ratio"),
            fig("e", 5.0, "ns", "linux-peer 6.1.0-57-amd64"),
            fig("f", 6.0, "1/s", "nmi-*"),
        ];
        let got = boot_commands(&dir, &figs);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            got,
            vec![
                ("bench".to_string(), "qemu-system-x86_64 -kernel a.elf -append test_exit bench".to_string()),
                ("service-e1000".to_string(), "qemu-system-x86_64 -device e1000".to_string()),
                ("linux-peer 6.1.0-57-amd64".to_string(), "(no command line in linux-peer.log)".to_string()),
            ]
        );
        assert_eq!(log_of("nmi-1000hz").as_deref(), Some("nmi-1000hz.log"));
        let md = report_md(&figs, "tcg", "host", &[], &got);
        assert!(md.contains("- service-e1000: `qemu-system-x86_64 -device e1000`"), "{md}");
        assert!(md.starts_with("Made by `cargo xtask bench`."), "{md}");
    }

    #[test]
    fn repeated_figures_carry_their_spread_and_count() {
        let r = rate_figs("x_fetch", &[1.0, 2.0, 5.0], "b");
        let got: Vec<(&str, f64)> = r.iter().map(|f| (f.name.as_str(), f.value)).collect();
        assert_eq!(got, [("x_fetch_min", 1.0), ("x_fetch_median", 2.0), ("x_fetch_best", 5.0), ("x_fetch_repetitions", 3.0)]);
        let t = timing_figs("t", &[3.0, 4.0, 9.0, 10.0], "ms", "b");
        let got: Vec<(&str, f64, &str)> = t.iter().map(|f| (f.name.as_str(), f.value, f.unit.as_str())).collect();
        assert_eq!(got, [("t", 9.0, "ms"), ("t_min", 3.0, "ms"), ("t_max", 10.0, "ms"), ("t_repetitions", 4.0, "")]);
    }

    #[test]
    fn the_kvm_download_aim_is_judged_only_under_kvm() {
        let at = |v| vec![fig("trace_ctf_fetch_median", v, "MB/s", "service-e1000"), fig("trace_ctf_fetch_median", v / 2.0, "MB/s", "service-virtio-net")];
        let met = kvm_download_note(Accel::Kvm, &at(240.0)).unwrap();
        assert!(met.contains("120.0 MB/s") && met.ends_with(": met"), "{met}");
        let short = kvm_download_note(Accel::Kvm, &at(150.0)).unwrap();
        assert!(short.contains("75.0 MB/s") && short.ends_with("NOT met"), "{short}");
        let tcg = kvm_download_note(Accel::Tcg, &at(240.0)).unwrap();
        assert!(tcg.contains("not on this host") && !tcg.contains("met"), "{tcg}");
        assert_eq!(kvm_download_note(Accel::Kvm, &[]), None);
    }

    #[test]
    fn bench_lines_and_stamps() {
        let log = "[    0.170000] INFO  cpu0: smp: 4 CPUs online (APIC ids 0 1 2 3)\n\
                   [    1.500000] INFO  cpu0: bench: ipi_round_trip_all_cpus 2380000 ns\n\
                   [    1.600000] INFO  cpu0: bench: cpus 4 \n\
                   [    1.700000] INFO  cpu0: bench: done\n\
                   [    2.252265] INFO  cpu0: net: listening on http://10.0.2.15:80/\n";
        let f = parse_bench_lines(log, "b");
        assert_eq!(f, vec![fig("ipi_round_trip_all_cpus", 2380000.0, "ns", "b"), fig("cpus", 4.0, "", "b")]);
        assert_eq!(stamp_of(log, "CPUs online"), Some(0.17));
        assert_eq!(stamp_of(log, "net: listening"), Some(2.252265));
        assert_eq!(stamp_of(log, "nowhere"), None);
    }
}
