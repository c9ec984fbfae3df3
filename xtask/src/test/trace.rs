//! Trace formats: CTF read by babeltrace2, trace.dat read by trace-cmd, the books of lost events.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::harness::*;
use crate::qemu::{self, http};

/// `GET /trace.ctf.tar`, unpacked into `dir` (`dir/trace/`); returns its
/// size and the seconds the download took.
pub(super) fn fetch_ctf(port: u16, dir: &Path) -> std::result::Result<(usize, f64), String> {
    use std::io::{Read, Write};
    let t = Instant::now();
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(60))).map_err(|e| e.to_string())?;
    s.write_all(b"GET /trace.ctf.tar HTTP/1.1\r\n\r\n").map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).map_err(|e| e.to_string())?;
    let secs = t.elapsed().as_secs_f64();
    let split = buf.windows(4).position(|w| w == b"\r\n\r\n").ok_or("no HTTP head")? + 4;
    if !buf.starts_with(b"HTTP/1.1 200") {
        return Err(format!("/trace.ctf.tar: {:?}", String::from_utf8_lossy(&buf[..split])));
    }
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("trace.tar"), &buf[split..]).map_err(|e| e.to_string())?;
    let tar = Command::new("tar").arg("xf").arg("trace.tar").current_dir(dir).status().map_err(|e| e.to_string())?;
    if !tar.success() {
        return Err("tar x failed on /trace.ctf.tar".into());
    }
    Ok((buf.len() - split, secs))
}

/// babeltrace2's text for the trace in `dir/trace`, and its event count.
pub(super) fn babeltrace(dir: &Path) -> std::result::Result<(String, u64), String> {
    let text = babeltrace_text(dir, &[])?;
    let n = text.lines().filter(|l| l.contains(" trace-appliance ")).count() as u64;
    Ok((text, n))
}

/// `babeltrace2 [args] trace` run in `dir`: its standard output.
pub(super) fn babeltrace_text(dir: &Path, args: &[&str]) -> std::result::Result<String, String> {
    let out = Command::new("babeltrace2").args(args).arg("trace").current_dir(dir).output().map_err(|e| format!("babeltrace2: {e}"))?;
    if !out.status.success() {
        return Err(format!("babeltrace2 failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// What babeltrace2 itself says was discarded, read from its warnings
/// (standard error): the sum of its `Tracer discarded N events between ...`
/// counts, how many such lines, and how many streams it could only say
/// `Tracer may have discarded events` of (no count).
pub(super) fn babeltrace_discarded(dir: &Path) -> std::result::Result<(u64, usize, usize), String> {
    let out = Command::new("babeltrace2").arg("trace").current_dir(dir).output().map_err(|e| format!("babeltrace2: {e}"))?;
    if !out.status.success() {
        return Err(format!("babeltrace2 failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    let err = String::from_utf8_lossy(&out.stderr);
    let counts: Vec<u64> = err.lines().filter_map(|l| l.split("Tracer discarded ").nth(1)?.split(' ').next()?.parse().ok()).collect();
    let uncounted = err.lines().filter(|l| l.contains("Tracer may have discarded")).count();
    Ok((counts.iter().sum(), counts.len(), uncounted))
}

/// `snapshot_*` figures of the snapshot's metadata (`key = N;`).
pub(super) fn ctf_figure(dir: &Path, key: &str) -> std::result::Result<u64, String> {
    let meta = std::fs::read_to_string(dir.join("trace/metadata")).map_err(|e| e.to_string())?;
    meta.lines()
        .find_map(|l| l.trim().strip_prefix(&format!("{key} = ")))
        .and_then(|v| v.trim_end_matches(';').parse().ok())
        .ok_or_else(|| format!("no {key} in the metadata"))
}

/// The `events_discarded` of each stream's last packet (the CPU's lost
/// events at the end of the snapshot), read from the packet contexts as
/// declared in the metadata: magic, stream id, begin, end, content size,
/// packet size (bits), events_discarded, cpu_id.
/// The `events_discarded` of each stream's last packet (the CPU's lost
/// events at the end of the snapshot), read from the packet contexts as
/// declared in the metadata: magic, stream id, begin, end, content size,
/// packet size (bits), events_discarded, cpu_id.
pub(super) fn ctf_discarded(dir: &Path) -> std::result::Result<u64, String> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir.join("trace")).map_err(|e| e.to_string())? {
        let path = entry.map_err(|e| e.to_string())?.path();
        if !path.file_name().is_some_and(|n| n.to_string_lossy().starts_with("stream_")) {
            continue;
        }
        let b = std::fs::read(&path).map_err(|e| e.to_string())?;
        let u64_at = |o: usize| b.get(o..o + 8).map(|x| u64::from_le_bytes(x.try_into().unwrap()));
        let (mut at, mut last) = (0usize, None);
        while at < b.len() {
            let size = u64_at(at + 32).ok_or("truncated packet")? as usize / 8;
            last = u64_at(at + 40);
            if size == 0 {
                return Err(format!("{}: empty packet", path.display()));
            }
            at += size;
        }
        total += last.ok_or_else(|| format!("{}: no packet", path.display()))?;
    }
    Ok(total)
}

/// Fetch the CTF snapshot, unpack it with tar and read it with babeltrace2:
/// the event count must match the snapshot's, with events from every CPU and
/// from NMI context. Prints the fetch throughput (reported, not asserted).
pub(super) fn ctf_check(port: u16, logs: &Path, nic: &str) -> std::result::Result<(), String> {
    let dir = logs.join(format!("ctf-{}", nic.replace([',', '='], "_")));
    let (bytes, secs) = fetch_ctf(port, &dir)?;
    println!("    /trace.ctf.tar over {nic}: {bytes} bytes in {secs:.3} s = {:.2} MB/s", bytes as f64 / secs / 1e6);
    let (text, lines) = babeltrace(&dir)?;
    let want = ctf_figure(&dir, "snapshot_events")?;
    if lines != want || lines == 0 {
        return Err(format!("babeltrace2 printed {lines} events, the snapshot holds {want}"));
    }

    for cpu in 0..4 {
        if !text.contains(&format!("{{ cpu_id = {cpu} }}")) {
            return Err(format!("no event from cpu {cpu} in the CTF trace"));
        }
    }
    if !text.contains("context = 2,") {
        return Err("no event from NMI context in the CTF trace".into());
    }
    for kind in ["trace-appliance function:", "trace-appliance nmi_tick:", "trace-appliance sync_round:", "trace-appliance patch_batch:"] {
        if !text.contains(kind) {
            return Err(format!("no `{kind}` event in the CTF trace"));
        }
    }
    Ok(())
}

/// Tiny trace rings (`trace_buf_kb=4`) under the patching loop, in one
/// overflow mode: events must be lost, and every format keeps exact books.
/// `/trace`: event lines + LOST markers = its trailer's kept + lost =
/// produced. CTF: babeltrace2's count = snapshot_events, the streams' last
/// events_discarded add up to snapshot_lost, and events + lost = produced;
/// babeltrace2's own `Tracer discarded N events` warnings add up to it too.
/// `/status`: per CPU and context, what is kept fits the ring.
pub(crate) fn accounting_case(elf: &Path, overflow: &str, logs: &Path) -> std::result::Result<String, String> {
    let port = qemu::free_port().map_err(|e| e.to_string())?;
    let mut spec = kernel_boot(elf, &format!("patch=on patch_interval_us=1000 trace_buf_kb=4 trace_overflow={overflow}"), "2");
    spec.net = Some((port, "virtio-net-pci".into()));
    let log_path = logs.join(format!("trace_accounting_{overflow}.log"));
    let (mut run, mut log) = spawn_serving(&spec, &log_path)?;
    // The rings must have overflowed on every CPU before the downloads.
    let t0 = Instant::now();
    let st = loop {
        let st = qemu::status(port)?;
        if st.cpus.iter().all(|c| c.lost > 0) {
            break st;
        }
        if t0.elapsed() > Duration::from_secs(60) {
            return Err(format!("no CPU lost events with 4 KiB rings: {st:?}"));
        }
        let _ = run.wait_line(run.started.elapsed() + Duration::from_millis(500), &mut log, |_| false);
    };
    // Per CPU and context: produced = kept + lost, kept fits the ring.
    for c in &st.cpus {
        if c.events != c.events_by_context.iter().sum::<u64>() || c.lost != c.lost_by_context.iter().sum::<u64>() {
            return Err(format!("cpu{}: totals are not the sum of the contexts: {c:?}", c.cpu));
        }
        for (ctx, cap) in appliance::trace::ring::capacity_for_kb(4).into_iter().enumerate() {
            let kept = c.events_by_context[ctx].checked_sub(c.lost_by_context[ctx]).ok_or_else(|| format!("cpu{} ctx {ctx}: more lost than produced", c.cpu))?;
            if kept > cap as u64 {
                return Err(format!("cpu{} ctx {ctx}: {kept} events kept in a ring of {cap}", c.cpu));
            }
        }
    }
    let (code, text) = http(port, "GET /trace HTTP/1.1\r\n\r\n")?;
    let books = appliance::trace::stream::TextBooks::read(&text).ok_or_else(|| format!("/trace ({code}) has no trailer"))?;
    if code != 200 || !books.balanced() || books.lost == 0 {
        return Err(format!("/trace books: {books:?}"));
    }
    let dir = logs.join(format!("ctf-accounting-{overflow}"));
    fetch_ctf(port, &dir)?;
    let (_, read) = babeltrace(&dir)?;
    let (events, lost, produced) = (ctf_figure(&dir, "snapshot_events")?, ctf_figure(&dir, "snapshot_lost")?, ctf_figure(&dir, "snapshot_produced")?);
    let discarded = ctf_discarded(&dir)?;
    if read != events || discarded != lost || events + lost != produced || lost == 0 {
        return Err(format!("CTF books: babeltrace2 read {read}, snapshot_events {events}, snapshot_lost {lost}, discarded in the streams {discarded}, produced {produced}"));
    }
    // babeltrace2 (and so Trace Compass) states the exact number lost, per
    // stream and where in time: never only "may have discarded".
    let (said, said_lines, uncounted) = babeltrace_discarded(&dir)?;
    if said != lost || uncounted != 0 || said_lines == 0 {
        return Err(format!("babeltrace2 said `Tracer discarded` {said} events in {said_lines} warnings and `may have discarded` {uncounted} times; the snapshot lost {lost}"));
    }
    // trace.dat: per CPU, `trace-cmd report` prints as many events as the
    // CPU's statistics say were read; losses show where the mode puts them
    // (overwritten: a `[K EVENTS DROPPED]` marker equal to the overrun;
    // dropped: the `dropped events` statistic).
    let dir = logs.join(format!("dat-accounting-{overflow}"));
    let dat = fetch_dat(port, &dir)?;
    let report = trace_cmd(&dat, &["-R", "-t"])?;
    let stats = trace_cmd_stats(&dat)?;
    let (mut dat_read, mut dat_lost) = (0u64, 0u64);
    for (cpu, st) in stats.iter().enumerate() {
        let printed = dat_events(&report).iter().filter(|e| e.cpu == cpu).count() as u64;
        let marker = report.lines().find_map(|l| l.strip_prefix(&format!("CPU:{cpu} ["))?.strip_suffix(" EVENTS DROPPED]")?.parse::<u64>().ok()).unwrap_or(0);
        let (lost_here, where_) = if overflow == "overwrite" { (st.overrun, marker) } else { (st.dropped, st.dropped) };
        if printed != st.read || where_ != lost_here || (overflow == "overwrite" && st.dropped != 0) || (overflow == "drop" && (st.overrun != 0 || marker != 0)) {
            return Err(format!("trace.dat books, cpu{cpu}: {printed} events printed, marker {marker}, statistics {st:?}"));
        }
        dat_read += st.read;
        dat_lost += lost_here;
    }
    if dat_lost == 0 {
        return Err(format!("trace.dat shows no lost events with 4 KiB rings: {stats:?}"));
    }
    Ok(format!("/trace {} kept + {} lost, CTF {events} + {lost} = {produced} (babeltrace2: discarded {said} in {said_lines} warnings), trace.dat {dat_read} + {dat_lost}", books.kept, books.lost))
}

/// Fetch `/trace.dat` into `dir/trace.dat`.
pub(super) fn fetch_dat(port: u16, dir: &Path) -> std::result::Result<PathBuf, String> {
    let _ = std::fs::remove_dir_all(dir);
    let (file, _) = crate::remote::fetch(&format!("http://127.0.0.1:{port}"), "dat", dir)?;
    Ok(file)
}

/// `trace-cmd report` of a file with extra arguments: its standard output.
pub(super) fn trace_cmd(dat: &Path, args: &[&str]) -> std::result::Result<String, String> {
    let out = Command::new("trace-cmd").arg("report").args(args).arg(dat).output().map_err(|e| format!("trace-cmd: {e}"))?;
    if !out.status.success() {
        return Err(format!("trace-cmd report {args:?} failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// One CPU's statistics as `trace-cmd report --stat` prints them.
#[derive(Debug, Default)]
pub(super) struct DatStat {
    overrun: u64,
    dropped: u64,
    read: u64,
}

pub(super) fn trace_cmd_stats(dat: &Path) -> std::result::Result<Vec<DatStat>, String> {
    let text = trace_cmd(dat, &["--stat"])?;
    let mut stats: Vec<DatStat> = Vec::new();
    for l in text.lines() {
        let num = |p: &str| l.strip_prefix(p).and_then(|v| v.trim().parse::<u64>().ok());
        if l.starts_with("CPU: ") {
            stats.push(DatStat::default());
        } else if let Some(st) = stats.last_mut() {
            if let Some(v) = num("overrun:") {
                st.overrun = v;
            } else if let Some(v) = num("dropped events:") {
                st.dropped = v;
            } else if let Some(v) = num("read events:") {
                st.read = v;
            }
        }
    }
    if stats.is_empty() {
        return Err(format!("trace-cmd report --stat shows no CPU statistics: {text}"));
    }
    Ok(stats)
}

/// One event as a trace reader printed it: what the CTF and trace.dat
/// readings are compared on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct ReadEvent {
    cpu: usize,
    context: u8,
    kind: String,
    ts_ns: u64,
    tsc: u64,
}

/// The events of `trace-cmd report -R -t` (raw fields, nanoseconds):
/// `  nmi-3 [002] 12.345678901: function: ip=... parent_ip=... tsc=0x... context=2`.
pub(super) fn dat_events(report: &str) -> Vec<ReadEvent> {
    report
        .lines()
        .filter_map(|l| {
            let (_, rest) = l.split_once(" [")?;
            let (cpu, rest) = rest.split_once("] ")?;
            let mut words = rest.split_whitespace();
            let (secs, nanos) = words.next()?.strip_suffix(':')?.split_once('.')?;
            let kind = words.next()?.strip_suffix(':')?.to_string();
            let field = |k: &str| rest.split_whitespace().find_map(|w| w.strip_prefix(k));
            let tsc = field("tsc=")?;
            Some(ReadEvent {
                cpu: cpu.trim().parse().ok()?,
                context: field("context=")?.parse().ok()?,
                kind,
                ts_ns: secs.trim().parse::<u64>().ok()? * 1_000_000_000 + nanos.parse::<u64>().ok()?,
                tsc: u64::from_str_radix(tsc.trim_start_matches("0x"), 16).ok()?,
            })
        })
        .collect()
}

/// The events of `babeltrace2 --clock-seconds` on the unpacked CTF:
/// `[12.345678901] (+0.000001000) trace-appliance function: { cpu_id = 2 }, { ip = ..., tsc = 123, context = 2, ... }`.
pub(super) fn ctf_events(dir: &Path) -> std::result::Result<Vec<ReadEvent>, String> {
    let text = babeltrace_text(dir, &["--clock-seconds"])?;
    let field = |l: &str, k: &str| l.split(&format!("{k} = ")).nth(1).and_then(|v| v.split([',', ' ', '}']).next()).and_then(|v| v.parse::<u64>().ok());
    Ok(text
        .lines()
        .filter_map(|l| {
            let (secs, nanos) = l.strip_prefix('[')?.split_once(']')?.0.split_once('.')?;
            let kind = l.split(" trace-appliance ").nth(1)?.split(':').next()?.to_string();
            Some(ReadEvent {
                cpu: field(l, "cpu_id")? as usize,
                context: field(l, "context")? as u8,
                kind,
                ts_ns: secs.parse::<u64>().ok()? * 1_000_000_000 + nanos.parse::<u64>().ok()?,
                tsc: field(l, "tsc")?,
            })
        })
        .collect())
}

/// `/trace.dat` read by `trace-cmd report` against the CTF snapshot taken
/// just after it, in drop mode (rings keep their oldest events, so the
/// later snapshot extends the earlier one): per CPU and context, the
/// trace.dat events are the CTF's first ones, same kinds, timestamps and
/// TSC values, in the same order; functions print with their names, NMI
/// context is marked, and every CPU and every event kind is there.
pub(super) fn trace_dat_case(elf: &Path, logs: &Path) -> std::result::Result<String, String> {
    let port = qemu::free_port().map_err(|e| e.to_string())?;
    let mut spec = kernel_boot(elf, "patch=on patch_interval_us=1000 trace_overflow=drop trace_buf_kb=512 trace_nmi_path ftrace_keep_on_nmi", "4");
    spec.net = Some((port, "virtio-net-pci".into()));
    let (mut run, mut log) = spawn_serving(&spec, &logs.join("trace_dat.log"))?;
    // Events from every CPU, and traced functions in NMI context.
    let t0 = Instant::now();
    loop {
        let st = qemu::status(port)?;
        if st.cpus.iter().all(|c| c.events_by_context[0] > 0 && c.events_by_context[2] > 0) && st.watchdog.log_records > 0 {
            break;
        }
        if t0.elapsed() > Duration::from_secs(60) {
            return Err(format!("not every CPU traced in task and NMI context: {st:?}"));
        }
        let _ = run.wait_line(run.started.elapsed() + Duration::from_millis(500), &mut log, |_| false);
    }
    let dir = logs.join("dat-vs-ctf");
    let dat = fetch_dat(port, &dir)?;
    fetch_ctf(port, &dir.join("ctf"))?;
    let ctf = ctf_events(&dir.join("ctf"))?;
    let raw = trace_cmd(&dat, &["-R", "-t"])?;
    let from_dat = dat_events(&raw);
    let printed = raw.lines().filter(|l| l.contains("] ") && l.contains(": ")).count();
    if from_dat.is_empty() || from_dat.len() != printed {
        return Err(format!("trace-cmd report printed {printed} event lines, {} of them parsed", from_dat.len()));
    }
    let mut compared = 0;
    for cpu in 0..4 {
        for context in 0..3u8 {
            let a: Vec<&ReadEvent> = from_dat.iter().filter(|e| e.cpu == cpu && e.context == context).collect();
            let b: Vec<&ReadEvent> = ctf.iter().filter(|e| e.cpu == cpu && e.context == context).collect();
            if a.len() > b.len() || a.iter().zip(&b).any(|(x, y)| x != y) {
                let first = a.iter().zip(&b).position(|(x, y)| x != y);
                return Err(format!("cpu{cpu} context {context}: trace.dat has {} events, the later CTF {}; first difference at {first:?}: {:?} vs {:?}", a.len(), b.len(), first.map(|i| a[i]), first.map(|i| b[i])));
            }
            compared += a.len();
        }
    }
    for kind in ["function", "nmi_tick", "sync_round", "patch_batch", "warning"] {
        if !from_dat.iter().any(|e| e.kind == kind) {
            return Err(format!("no {kind} event in trace.dat"));
        }
    }
    // The human reading: names through kallsyms, the NMI context marked.
    let text = trace_cmd(&dat, &[])?;
    let nmi_functions = text.lines().filter(|l| l.trim_start().starts_with("nmi-3 ") && l.contains(" function: ") && l.contains(" <-- ") && l.ends_with("ctx=nmi")).count();
    let named = text.lines().filter(|l| l.contains(": appliance::traced::traced_") || l.contains("lapic_wd_event")).count();
    if nmi_functions == 0 || named == 0 || !text.starts_with("cpus=4") {
        return Err(format!("trace-cmd report: {nmi_functions} NMI-context function lines, {named} named functions; head {:?}", text.lines().take(3).collect::<Vec<_>>()));
    }
    Ok(format!("{compared} trace.dat events equal the CTF's, {nmi_functions} traced functions in NMI context"))
}
