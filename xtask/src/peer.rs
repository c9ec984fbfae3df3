//! The Linux peer of `cargo xtask bench` (issue 17): a Debian kernel and
//! busybox booted under the same accelerator, `-cpu` and `-smp` as the
//! appliance, measured the way the appliance is:
//! - switching the function tracer on for every traceable function, with
//!   the other CPUs idle and with three of them busy, timed in the guest with
//!   CLOCK_MONOTONIC around the write to `current_tracer`
//!   (`xtask/peer/timewrite.c`). A `set_ftrace_filter` of 10,005 names (the
//!   appliance's site count) takes Linux minutes to parse under TCG (every
//!   name is matched against all ~60,000 records), so the figure compared is
//!   the cost per function: Linux's time over its function count against
//!   the appliance's int3 batch over its 10,000 sites;
//! - the traced call: `dd bs=1` on cpu0 with and without the function
//!   tracer, the difference divided by the function events recorded on cpu0
//!   (`per_cpu/cpu0/stats`: entries plus overrun);
//! - an HTTP download of a file the size of the appliance's `/trace.ctf.tar`
//!   from busybox `httpd`, through the same user-mode network and `hostfwd`,
//!   with nothing patching (also a file the size of the appliance's snapshot
//!   with nothing patching, `/small`), then while the function tracer is switched on
//!   and off in a loop (Linux's live patching: every switch rewrites the
//!   call sites of all its functions with the int3 + IPI protocol), fetched
//!   again and again through the loop's whole first cycle. A CGI script
//!   (`/cgi-bin/flip`) starts that loop when the host asks;
//! - the same download while the loop switches and two CPUs call traced
//!   functions, as the appliance's two workers do: a `dd bs=1` loop pinned
//!   to each CPU from cpu2 up (`/cgi-bin/busy`), one read and one write
//!   system call per byte, every one through traced kernel functions;
//!   fetched through a whole cycle of the loop run with them busy.
//!
//! The kernel and busybox-static come from Debian (`apt-get download` into
//! `target/peer/`, unpacked with `dpkg-deb`); the initramfs (cpio "newc")
//! is written here.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::qemu::{self, Accel, Boot, Spec};
use crate::{Result, root};

/// The peer's packages: the kernel is whatever `linux-image-amd64` depends
/// on, unsigned.
const KERNEL_META: &str = "linux-image-amd64";
const BUSYBOX: &str = "busybox-static";

/// Bytes `dd bs=1` copies for the traced-call measurement.
const DD_BYTES: usize = 20_000;
/// Repetitions of the traced-call measurement (the median is reported).
const DD_REPS: usize = 3;
/// Repetitions of switching the function tracer on, with the CPUs idle
/// and with three busy (min, median and max are reported).
const TRACER_REPS: usize = 3;

/// A booted-ready peer: kernel, initramfs.
pub struct Peer {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub version: String,
}

fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// One cpio "newc" entry (header, name, data, each padded to 4 bytes).
fn cpio_entry(out: &mut Vec<u8>, ino: u32, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) {
    let head = format!(
        "070701{ino:08x}{mode:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
        0,
        0,
        1,
        0,
        data.len(),
        0,
        0,
        rdev.0,
        rdev.1,
        name.len() + 1,
        0
    );
    out.extend_from_slice(head.as_bytes());
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    out.resize(out.len().next_multiple_of(4), 0);
    out.extend_from_slice(data);
    out.resize(out.len().next_multiple_of(4), 0);
}

/// The initramfs: busybox, the e1000 module, the timing helper, /init.
/// The CGI script that starts switching the function tracer on and off in
/// a loop, detached from httpd (which waits for the script's output to end).
const FLIP_CGI: &str = r#"#!/bin/sh
echo "Content-Type: text/plain"
echo ""
cd /sys/kernel/tracing
(n=0; while :; do echo function > current_tracer; echo nop > current_tracer; n=$((n + 1)); echo "peer: flipped $n" > /dev/console; done) </dev/null >/dev/null 2>&1 &
echo "peer: flipping" > /dev/console
echo flipping
"#;

/// The CGI script that pins a `dd bs=1` loop to each CPU from cpu2 up
/// (cpu0 and cpu1 are left to the switching loop and httpd, as the
/// appliance leaves its patching and serving CPUs), each printing a line
/// per pass so that the host sees them run.
const BUSY_CGI: &str = r#"#!/bin/sh
echo "Content-Type: text/plain"
echo ""
n=$(nproc)
for c in $(seq 2 $((n - 1))); do
(k=0; while :; do taskset $(printf %x $((1 << c))) dd if=/dev/zero of=/dev/null bs=1 count=20000 2>/dev/null; k=$((k + 1)); echo "peer: busy cpu$c pass $k" > /dev/console; done) </dev/null >/dev/null 2>&1 &
done
echo "peer: busy $((n - 2)) cpus" > /dev/console
echo busy
"#;

fn initramfs(busybox: &[u8], e1000: &[u8], timewrite: &[u8], file_bytes: usize, small_bytes: usize) -> Vec<u8> {
    let init = format!(
        r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tracefs tracefs /sys/kernel/tracing
insmod /e1000.ko
ip link set lo up
ip link set eth0 up
ip addr add 10.0.2.15/24 dev eth0
ip route add default via 10.0.2.2
mkdir -p /www
head -c {file_bytes} /dev/urandom > /www/file
head -c {small_bytes} /dev/urandom > /www/small
httpd -p 80 -h /www
cd /sys/kernel/tracing
echo "peer: filter $(grep -vc '^__ftrace_invalid_address__' available_filter_functions) functions"
for r in $(seq 1 {TRACER_REPS}); do
echo "peer: tracer_on_idle_ns $(/timewrite current_tracer function)"
echo nop > current_tracer
done
# The traced call: dd bs=1 on cpu0 (a read and a write per byte) without
# and with the function tracer; the events it recorded on cpu0 (kept and
# overwritten) count the traced calls. {DD_REPS} repetitions.
for r in $(seq 1 {DD_REPS}); do
off=$(/timewrite --run taskset 1 dd if=/dev/zero of=/dev/null bs=1 count={DD_BYTES} 2>/dev/null)
echo function > current_tracer
echo > trace
on=$(/timewrite --run taskset 1 dd if=/dev/zero of=/dev/null bs=1 count={DD_BYTES} 2>/dev/null)
events=$(awk '/^entries:/ {{e = $2}} /^overrun:/ {{o = $2}} END {{print e + o}}' per_cpu/cpu0/stats)
echo nop > current_tracer
echo "peer: dd_off_ns $off dd_on_ns $on events $events"
done
n=$(nproc)
for i in $(seq 2 $n); do while :; do :; done & done
for r in $(seq 1 {TRACER_REPS}); do
echo "peer: tracer_on_busy_ns $(/timewrite current_tracer function) busy $((n - 1))"
echo nop > current_tracer
done
kill $(jobs -p) 2>/dev/null
echo "peer: ready"
while :; do sleep 3600; done
"#
    );
    let mut out = Vec::new();
    let mut ino = 1;
    let mut add = |out: &mut Vec<u8>, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]| {
        cpio_entry(out, ino, name, mode, rdev, data);
        ino += 1;
    };
    for d in ["bin", "dev", "proc", "sys", "www", "www/cgi-bin"] {
        add(&mut out, d, 0o040755, (0, 0), &[]);
    }
    add(&mut out, "www/cgi-bin/flip", 0o100755, (0, 0), FLIP_CGI.as_bytes());
    add(&mut out, "www/cgi-bin/busy", 0o100755, (0, 0), BUSY_CGI.as_bytes());
    // The console the kernel opens for init before devtmpfs is mounted.
    add(&mut out, "dev/console", 0o020600, (5, 1), &[]);
    add(&mut out, "bin/busybox", 0o100755, (0, 0), busybox);
    add(&mut out, "init", 0o100755, (0, 0), init.as_bytes());
    add(&mut out, "e1000.ko", 0o100644, (0, 0), e1000);
    add(&mut out, "timewrite", 0o100755, (0, 0), timewrite);
    add(&mut out, "TRAILER!!!", 0, (0, 0), &[]);
    out
}

/// Download, unpack and assemble the peer (cached in `target/peer/`).
/// `file_bytes`: the size of the appliance's snapshot while patching;
/// `small_bytes`: with nothing patching (`/small`), so that each download
/// is compared with one of the same size.
pub fn prepare(file_bytes: usize, small_bytes: usize) -> Result<Peer> {
    let dir = root().join("target/peer");
    std::fs::create_dir_all(&dir)?;
    let depends = run(Command::new("apt-cache").args(["depends", KERNEL_META]))?;
    let image = depends
        .lines()
        .find_map(|l| l.trim().strip_prefix("Depends: ").filter(|p| p.starts_with("linux-image-")))
        .ok_or_else(|| format!("`apt-cache depends {KERNEL_META}` names no kernel package"))?
        .to_string();
    let unsigned = format!("{image}-unsigned");
    let version = image.trim_start_matches("linux-image-").to_string();
    for pkg in [unsigned.as_str(), BUSYBOX] {
        let have = std::fs::read_dir(&dir)?.flatten().any(|e| e.file_name().to_string_lossy().starts_with(&format!("{pkg}_")));
        if !have {
            run(Command::new("apt-get").arg("download").arg(pkg).current_dir(&dir))?;
        }
    }
    let unpacked = dir.join("root");
    if !unpacked.join("boot").join(format!("vmlinuz-{version}")).exists() {
        for e in std::fs::read_dir(&dir)?.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.ends_with(".deb") && (n.starts_with(&format!("{unsigned}_")) || n.starts_with(&format!("{BUSYBOX}_"))) {
                run(Command::new("dpkg-deb").arg("-x").arg(e.path()).arg(&unpacked))?;
            }
        }
    }
    let kernel = unpacked.join("boot").join(format!("vmlinuz-{version}"));
    let e1000 = unpacked.join(format!("lib/modules/{version}/kernel/drivers/net/ethernet/intel/e1000/e1000.ko"));
    let timewrite = dir.join("timewrite");
    run(Command::new("gcc").args(["-static", "-O2", "-o"]).arg(&timewrite).arg(root().join("xtask/peer/timewrite.c")))
        .map_err(|e| format!("{e} (the peer's helper needs gcc and libc6-dev)"))?;
    let initrd = dir.join("initramfs.cpio");
    std::fs::write(&initrd, initramfs(&std::fs::read(unpacked.join("bin/busybox"))?, &std::fs::read(&e1000)?, &std::fs::read(&timewrite)?, file_bytes, small_bytes))?;
    Ok(Peer { kernel, initrd, version })
}

/// What one boot of the peer measured.
pub struct Measured {
    /// Each switch-on's time, sorted, with the other CPUs idle and busy.
    pub tracer_on_idle_ns: Vec<u64>,
    pub tracer_on_busy_ns: Vec<u64>,
    pub functions: u64,
    /// `dd bs=1` on cpu0 without and with the function tracer, and the
    /// function events recorded on cpu0 meanwhile.
    pub dd_off_ns: u64,
    pub dd_on_ns: u64,
    pub dd_events: u64,
    /// The traced call's cost in each repetition, sorted (ns).
    pub traced_call_ns: Vec<f64>,
    pub fetch_mb_s: Vec<f64>,
    /// `/small` (the size of the appliance's snapshot with nothing patching), nothing switching.
    pub fetch_small_mb_s: Vec<f64>,
    /// The same fetch while the tracer is switched on and off in a loop.
    pub fetch_flipping_mb_s: Vec<f64>,
    /// Seconds from the loop's start to the fetches' start and end (host
    /// clock); they end after its first on-and-off cycle.
    pub flip_fetch_window_s: (f64, f64),
    /// The same fetch while the loop switches and `busy_cpus` CPUs run
    /// `dd bs=1` loops, through a whole cycle run with them busy.
    pub fetch_flipping_busy_mb_s: Vec<f64>,
    pub busy_cpus: u64,
    /// The switching loop's on-and-off cycles completed before the busy
    /// fetches and after them.
    pub busy_flip_cycles: (u64, u64),
}

/// The numbers that follow `key` on the console's lines, in order (lines
/// where no number follows it are skipped).
fn values<'a>(serial: &'a str, key: &'a str) -> impl Iterator<Item = u64> + 'a {
    serial.lines().filter_map(move |l| l.split(key).nth(1)?.split_whitespace().next()?.parse().ok())
}

/// The switching loop's on-and-off cycles completed, as its console lines
/// (`peer: flipped N`) say.
fn flip_cycles(serial: &str) -> u64 {
    values(serial, "peer: flipped ").max().unwrap_or(0)
}

/// Longest the fetches through a switching cycle may take.
const CYCLE_FETCH_LIMIT: Duration = Duration::from_secs(240);

/// Timed fetches of `/file` until the switching loop has completed `cycles`
/// on-and-off cycles and at least `fetches` were timed, after one untimed
/// fetch (`fetch_rates::fetch_rates_while`): MB/s, sorted.
fn fetch_through_cycle(
    run: &mut qemu::Running,
    serial: &mut String,
    port: u16,
    fetches: usize,
    cycles: u64,
    fetch: &impl Fn(u16, &str) -> std::result::Result<(usize, f64), String>,
) -> std::result::Result<Vec<f64>, String> {
    let start = std::time::Instant::now();
    let more = |timed: usize| {
        // Take the console lines that came meanwhile (a millisecond's wait).
        let _ = run.wait_line(run.started.elapsed() + Duration::from_millis(1), serial, |_| false);
        if timed >= fetches && flip_cycles(serial) >= cycles {
            return Ok(false);
        }
        if start.elapsed() > CYCLE_FETCH_LIMIT {
            return Err(format!("the switching loop did not reach cycle {cycles} in {} s", CYCLE_FETCH_LIMIT.as_secs()));
        }
        Ok(true)
    };
    Ok(crate::fetch_rates::fetch_rates_while(fetch, port, "/file", more)?.0)
}

/// Boot the peer with `cpu`/`smp` under `accel`, take its timings and
/// fetch `/file` `fetches` times with `fetch`.
pub fn measure(
    peer: &Peer,
    accel: Accel,
    smp: &str,
    log: &Path,
    fetches: usize,
    fetch: impl Fn(u16, &str) -> std::result::Result<(usize, f64), String>,
) -> Result<Measured> {
    let mut spec = Spec::new(Boot::Kernel { elf: peer.kernel.clone(), append: "console=ttyS0 quiet".into() });
    spec.accel = accel;
    spec.smp = smp.into();
    spec.extra = vec!["-initrd".into(), peer.initrd.display().to_string()];
    let port = qemu::free_port()?;
    spec.net = Some((port, "e1000".into()));
    let mut run = qemu::spawn(&spec, log, false)?;
    let mut serial = String::new();
    run.wait_line(Duration::from_secs(300), &mut serial, |l| l.contains("peer: ready"))
        .ok_or_else(|| format!("the Linux peer never became ready; see {}", log.display()))?;
    let num = |serial: &str, key: &str| -> Result<u64> {
        values(serial, key).next().ok_or_else(|| format!("the peer printed no `{key}`; see {}", log.display()).into())
    };
    let functions = num(&serial, "peer: filter ")?;
    // Every repetition's value of `key`, sorted; TRACER_REPS of them.
    let all = |key: &str| -> Result<Vec<u64>> {
        let mut v: Vec<u64> = values(&serial, key).collect();
        if v.len() != TRACER_REPS {
            return Err(format!("the peer printed {} `{key}` lines, expected {TRACER_REPS}; see {}", v.len(), log.display()).into());
        }
        v.sort_unstable();
        Ok(v)
    };
    let (idle, busy) = (all("peer: tracer_on_idle_ns ")?, all("peer: tracer_on_busy_ns ")?);
    // Each repetition's (tracer off, tracer on, events); the one with the median cost per call is reported.
    let mut dd: Vec<(u64, u64, u64)> = Vec::new();
    for line in serial.lines().filter(|l| l.starts_with("peer: dd_off_ns ")) {
        let field = |key: &str| -> Result<u64> {
            let mut w = line.split_whitespace();
            w.find(|x| *x == key).and_then(|_| w.next()).and_then(|v| v.parse().ok()).ok_or_else(|| format!("no `{key}` in `{line}`").into())
        };
        dd.push((field("dd_off_ns")?, field("dd_on_ns")?, field("events")?));
    }
    if dd.len() != DD_REPS {
        return Err(format!("the peer printed {} dd lines, expected {DD_REPS}; see {}", dd.len(), log.display()).into());
    }
    let per_call = |&(off, on, ev): &(u64, u64, u64)| on.saturating_sub(off) as f64 / ev.max(1) as f64;
    dd.sort_by(|a, b| per_call(a).total_cmp(&per_call(b)));
    let traced_call_ns = dd.iter().map(per_call).collect::<Vec<f64>>();
    let (dd_off_ns, dd_on_ns, dd_events) = dd[DD_REPS / 2];
    // MB/s of `fetches` fetches of `path`, sorted.
    let rates_of = |path: &str, what: &str| -> Result<Vec<f64>> {
        Ok(crate::fetch_rates::fetch_rates(&fetch, port, path, fetches).map_err(|e| format!("peer {path}{what}: {e}"))?.0)
    };
    let rates = rates_of("/file", "")?;
    let small = rates_of("/small", "")?;
    // Start the switching loop, and see it start on the console before fetching.
    let flip_start = std::time::Instant::now();
    let (_, _) = fetch(port, "/cgi-bin/flip").map_err(|e| format!("peer /cgi-bin/flip: {e}"))?;
    // (wait_line's timeout counts from QEMU's start.)
    run.wait_line(run.started.elapsed() + Duration::from_secs(30), &mut serial, |l| l.contains("peer: flipping"))
        .ok_or_else(|| format!("the peer's tracer switching loop did not start; see {}", log.display()))?;
    // Linux's rate moves with where in the switching a fetch falls (0.3 to
    // 38 MB/s within one run): fetches go on through the loop's whole first
    // on-and-off cycle.
    let fetch_start = flip_start.elapsed().as_secs_f64();
    let flipping = fetch_through_cycle(&mut run, &mut serial, port, fetches, 1, &fetch).map_err(|e| format!("peer /file while flipping: {e}; see {}", log.display()))?;
    let fetch_end = flip_start.elapsed().as_secs_f64();
    // Two CPUs calling traced functions beside the switching loop; each
    // must be seen to finish a pass (the loops started and run).
    let (_, _) = fetch(port, "/cgi-bin/busy").map_err(|e| format!("peer /cgi-bin/busy: {e}"))?;
    run.wait_line(run.started.elapsed() + Duration::from_secs(30), &mut serial, |l| l.contains("peer: busy ") && l.contains(" cpus"))
        .ok_or_else(|| format!("the peer's busy loops did not start; see {}", log.display()))?;
    // (`peer: busy 2 cpus`; a loop's `peer: busy cpu2 pass 1` has no number there.)
    let busy_cpus = num(&serial, "peer: busy ")?;
    // Through a whole cycle run with the CPUs busy: until the one under way
    // when they started and the next have ended.
    let cycles_before = flip_cycles(&serial);
    let flipping_busy = fetch_through_cycle(&mut run, &mut serial, port, fetches, cycles_before + 2, &fetch)
        .map_err(|e| format!("peer /file while flipping, with busy CPUs: {e}; see {}", log.display()))?;
    for c in 2..2 + busy_cpus {
        let pass = format!("peer: busy cpu{c} pass ");
        if serial.contains(&pass) {
            continue;
        }
        run.wait_line(run.started.elapsed() + Duration::from_secs(60), &mut serial, |l| l.contains(&pass))
            .ok_or_else(|| format!("the peer's busy loop on cpu{c} never finished a pass; see {}", log.display()))?;
    }
    let cycles_after = flip_cycles(&serial);
    Ok(Measured {
        tracer_on_idle_ns: idle,
        tracer_on_busy_ns: busy,
        functions,
        dd_off_ns,
        dd_on_ns,
        dd_events,
        traced_call_ns,
        fetch_mb_s: rates,
        fetch_small_mb_s: small,
        fetch_flipping_mb_s: flipping,
        flip_fetch_window_s: (fetch_start, fetch_end),
        fetch_flipping_busy_mb_s: flipping_busy,
        busy_cpus,
        busy_flip_cycles: (cycles_before, cycles_after),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switching_cycles_are_counted_from_the_console() {
        assert_eq!(flip_cycles(""), 0);
        let log = "peer: flipping\npeer: flipped 1\npeer: busy cpu2 pass 1\n[  12.5] peer: flipped 2\npeer: flipped x\n";
        assert_eq!(flip_cycles(log), 2);
        assert_eq!(flip_cycles("peer: flipped 10\npeer: flipped 9\n"), 10);
        // The busy loops' pass lines carry no number after `peer: busy `.
        let busy = "peer: busy cpu2 pass 1\npeer: tracer_on_busy_ns 5 busy 3\npeer: busy 2 cpus\n";
        assert_eq!(values(busy, "peer: busy ").collect::<Vec<_>>(), [2]);
        assert_eq!(values(busy, "peer: tracer_on_busy_ns ").collect::<Vec<_>>(), [5]);
    }

    #[test]
    fn cpio_newc_entries_are_aligned_and_named() {
        let mut out = Vec::new();
        cpio_entry(&mut out, 1, "init", 0o100755, (0, 0), b"#!x");
        assert_eq!(&out[..6], b"070701");
        assert_eq!(out.len() % 4, 0);
        // Header 110 bytes, name "init\0" padded to 116, data 3 bytes padded.
        assert_eq!(&out[110..114], b"init");
        assert_eq!(&out[116..119], b"#!x");
        assert_eq!(out.len(), 120);
        // Mode and file size fields.
        assert_eq!(&out[14..22], b"000081ed");
        assert_eq!(&out[54..62], b"00000003");
        let image = initramfs(b"bb", b"ko", b"tw", 1000, 300);
        let text = String::from_utf8_lossy(&image);
        assert!(text.contains("dev/console") && text.contains("TRAILER!!!") && text.contains("head -c 1000 /dev/urandom > /www/file"));
        assert!(text.contains("head -c 300 /dev/urandom > /www/small") && text.contains("www/cgi-bin/flip"));
        assert!(text.contains("www/cgi-bin/busy") && text.contains("taskset $(printf %x $((1 << c))) dd"));
    }
}
