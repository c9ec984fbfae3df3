//! One trace event on this machine's CPU, from Linux user space: the
//! kernel's trampoline (the same instructions, `kernel::trace_trampoline!`)
//! and ring (`appliance::trace::ring`, the same code), beside a plain call
//! and a disabled site, and beside an LTTng-UST tracepoint recording to a
//! local session (`lttng/`, run by `lttng_run`).
//!
//! The measured functions are naked, so each is exactly what the kernel
//! emits: a frame-pointer prologue, the 5-byte site (a CALL to the
//! trampoline, a 5-byte NOP, or nothing), the epilogue. The hook does what
//! the kernel's `trace_hook_fast` does with its per-CPU data: count the call
//! (a plain load and store, as the kernel's `bump`),
//! find the site among 10,000 (the kernel's `patch::index`), read its state, read the parent's return address through the
//! frame pointer, take the TSC once, convert it to ns with the kernel's
//! multiply-and-shift, and push the event into the task context's ring.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Instant;

use appliance::trace::ring::{CpuRings, Event, Kind, Overflow};

/// Sites in the table the hook searches (the kernel's count, rounded).
const TABLE_SITES: usize = 10_000;

struct Hook {
    rings: CpuRings,
    sites: Vec<u64>,
    index: kernel::patch::index::SiteIndex,
    states: Vec<AtomicU8>,
    calls: AtomicU64,
    off_calls: AtomicU64,
    tsc_base: u64,
    ns_per_tick_32: u64,
}

static HOOK: OnceLock<Hook> = OnceLock::new();

fn rdtsc() -> u64 {
    // SAFETY: RDTSC has no side effects; user space may run it (CR4.TSD is clear on Linux).
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// The kernel's `trace_hook_fast`, with the harness's data in place of the
/// kernel's per-CPU area and registry.
extern "C" fn hook_fast(ret: u64, fp: u64) -> u64 {
    let Some(h) = HOOK.get() else { return 0 };
    h.calls.store(h.calls.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    let site = ret - kernel::patch::protocol::SITE_LEN;
    if let Some(i) = h.index.find(&h.sites, site)
        && h.states[i].load(Ordering::Acquire) == 0
    {
        h.off_calls.store(h.off_calls.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }
    let parent = if fp != 0 && fp.is_multiple_of(8) {
        // SAFETY: the measured functions keep a frame pointer; fp is the
        // site's function frame on this thread's stack.
        unsafe { ((fp + 8) as *const u64).read() }
    } else {
        0
    };
    let tsc = rdtsc();
    let ts_ns = ((tsc.saturating_sub(h.tsc_base) as u128 * h.ns_per_tick_32 as u128) >> 32) as u64;
    let ev = Event { ts_ns, tsc, ip: site, parent, kind: Kind::Function, ctx: 0, cpu: 0, arg: 0, dur_ns: 0 };
    h.rings.rings[0].push(&ev);
    0
}

extern "C" fn hook_slow(_ret: u64, _fp: u64) {}

#[unsafe(naked)]
extern "C" fn trace_entry() {
    kernel::trace_trampoline!(hook_fast, hook_slow)
}

/// A traced function with its site on: prologue, CALL to the trampoline, epilogue.
#[unsafe(naked)]
extern "C" fn site_on() {
    core::arch::naked_asm!("push rbp", "mov rbp, rsp", "call {entry}", "pop rbp", "ret", entry = sym trace_entry)
}

/// The same with its site off (the kernel's 5-byte NOP).
#[unsafe(naked)]
extern "C" fn site_off() {
    core::arch::naked_asm!("push rbp", "mov rbp, rsp", ".byte 0x0f, 0x1f, 0x44, 0x00, 0x00", "pop rbp", "ret")
}

/// The same body without a site.
#[unsafe(naked)]
extern "C" fn no_site() {
    core::arch::naked_asm!("push rbp", "mov rbp, rsp", "pop rbp", "ret")
}

/// The event's physical floor: what any recorder of a timestamped event
/// must do at least, the TSC read, its conversion to ns and the same ring
/// store, in a plain loop (no trampoline, no site lookup, no parent read),
/// less the loop alone. Nanoseconds per event over `n` events, into `rings`
/// (not the hook's, whose count the event test checks).
fn floor_per_event(rings: &CpuRings, tsc_base: u64, ns_per_tick_32: u64, n: u64) -> f64 {
    let t = Instant::now();
    for i in 0..n {
        let tsc = rdtsc();
        let ts_ns = ((tsc.saturating_sub(tsc_base) as u128 * ns_per_tick_32 as u128) >> 32) as u64;
        let ev = Event { ts_ns, tsc, ip: i, parent: 0, kind: Kind::Function, ctx: 0, cpu: 0, arg: 0, dur_ns: 0 };
        rings.rings[0].push(core::hint::black_box(&ev));
    }
    let with_store = t.elapsed().as_nanos() as f64 / n as f64;
    let t = Instant::now();
    for i in 0..n {
        core::hint::black_box(i);
    }
    with_store - t.elapsed().as_nanos() as f64 / n as f64
}

/// Nanoseconds per call of `f` over `n` calls.
fn per_call(f: extern "C" fn(), n: u64) -> f64 {
    let t = Instant::now();
    for _ in 0..n {
        f();
    }
    t.elapsed().as_nanos() as f64 / n as f64
}

/// min / median / max of a set of figures.
#[derive(Clone, Copy, Debug)]
pub struct Spread {
    pub min: f64,
    pub median: f64,
    pub max: f64,
}

impl Spread {
    pub fn of(mut v: Vec<f64>) -> Spread {
        v.sort_by(f64::total_cmp);
        Spread { min: v[0], median: v[v.len() / 2], max: v[v.len() - 1] }
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({"min": self.min, "median": self.median, "max": self.max})
    }
}

/// What the appliance's event path measured.
pub struct Appliance {
    pub calls_per_rep: u64,
    pub reps: usize,
    pub no_site: Spread,
    pub site_off: Spread,
    pub site_on: Spread,
    /// site on minus no site, per rep.
    pub event: Spread,
    /// site off minus no site, per rep.
    pub disabled: Spread,
    /// The floor: RDTSC and the same ring store with no trampoline, per rep;
    /// and the event's median over the floor's.
    pub floor: Spread,
    pub event_over_floor: f64,
    /// Calls that reached the hook, and events the ring was given.
    pub recorded: u64,
    pub ring_written: u64,
    /// The measured site, and the newest event's traced function and parent.
    pub site: u64,
    pub last_ip: u64,
    pub last_parent: u64,
}

/// Measure on CPU `cpu` (pinned): `reps` repetitions of `calls` calls each.
pub fn appliance(cpu: usize, calls: u64, reps: usize) -> Appliance {
    crate::pin_to(cpu);
    // A sorted site table with the measured site in it, and the TSC's rate
    // against CLOCK_MONOTONIC over 50 ms (as the kernel calibrates against a
    // reference), in the kernel's 32.32 fixed point.
    // The site is after `push rbp` (1 byte) and `mov rbp, rsp` (3).
    let site = site_on as *const () as u64 + 4;
    let mut sites: Vec<u64> = (0..TABLE_SITES as u64 - 1).map(|k| 0x10_0000 + 64 * k).collect();
    sites.push(site);
    sites.sort_unstable();
    let (t0, c0) = (Instant::now(), rdtsc());
    std::thread::sleep(std::time::Duration::from_millis(50));
    let (ns, ticks) = (t0.elapsed().as_nanos() as u64, rdtsc() - c0);
    let hook = Hook {
        rings: CpuRings::new([1 << 16, 2, 2], Overflow::Overwrite),
        states: (0..sites.len()).map(|_| AtomicU8::new(1)).collect(),
        index: kernel::patch::index::SiteIndex::build(&sites),
        sites,
        calls: AtomicU64::new(0),
        off_calls: AtomicU64::new(0),
        tsc_base: c0,
        ns_per_tick_32: (ns << 32) / ticks.max(1),
    };
    let _ = HOOK.set(hook);
    // Warm up every path, then measure the three back to back in each rep.
    for f in [no_site as extern "C" fn(), site_off, site_on] {
        per_call(f, calls / 10);
    }
    let floor_rings = CpuRings::new([1 << 16, 2, 2], Overflow::Overwrite);
    let (tsc_base, ns_per_tick_32) = {
        let h = HOOK.get().expect("the hook was installed above");
        (h.tsc_base, h.ns_per_tick_32)
    };
    floor_per_event(&floor_rings, tsc_base, ns_per_tick_32, calls / 10);
    let (mut a, mut b, mut c, mut ev, mut dis, mut fl) = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..reps {
        fl.push(floor_per_event(&floor_rings, tsc_base, ns_per_tick_32, calls));
        let plain = per_call(no_site, calls);
        let off = per_call(site_off, calls);
        let on = per_call(site_on, calls);
        a.push(plain);
        b.push(off);
        c.push(on);
        ev.push(on - plain);
        dis.push(off - plain);
    }
    let h = HOOK.get().expect("the hook was installed above");
    let recorded = h.calls.load(Ordering::Relaxed);
    let ring = &h.rings.rings[0];
    let ring_written = ring.written();
    let (mut last_ip, mut last_parent) = (0, 0);
    ring.read(ring_written.saturating_sub(1), 1, |_, e| (last_ip, last_parent) = (e.ip, e.parent));
    let (event, floor) = (Spread::of(ev), Spread::of(fl));
    Appliance {
        event_over_floor: event.median / floor.median,
        event,
        floor,
        calls_per_rep: calls,
        reps,
        no_site: Spread::of(a),
        site_off: Spread::of(b),
        site_on: Spread::of(c),
        disabled: Spread::of(dis),
        recorded,
        ring_written,
        site,
        last_ip,
        last_parent,
    }
}

/// What the LTTng-UST helper measured (ns per call), and what the session kept.
pub struct Lttng {
    pub plain: Spread,
    pub tracepoint: Spread,
    pub event: Spread,
    pub recorded: Option<u64>,
    pub version: String,
}

fn run(cmd: &mut std::process::Command) -> Result<String, String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{cmd:?} failed: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Build the LTTng-UST helper (`lttng/`, with the C compiler and
/// liblttng-ust), start a session daemon if none runs, record the helper's
/// tracepoint into a fresh session under `dir`, and read its figures.
pub fn lttng_run(dir: &std::path::Path, cpu: usize, calls: u64, reps: usize) -> Result<Lttng, String> {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("lttng");
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let exe = dir.join("lttng-bench");
    run(std::process::Command::new("cc")
        .args(["-O2", "-Wall", "-o"])
        .arg(&exe)
        .arg("-I")
        .arg(&src)
        .arg(src.join("tp.c"))
        .arg(src.join("bench.c"))
        .args(["-llttng-ust", "-ldl"]))
    .map_err(|e| format!("{e} (install gcc and liblttng-ust-dev)"))?;
    let version = run(std::process::Command::new("lttng").arg("--version")).map_err(|e| format!("{e} (install lttng-tools)"))?.trim().to_string();
    // A root session daemon, started if none answers (it stays for later runs).
    if run(std::process::Command::new("lttng").args(["list"])).is_err() {
        run(std::process::Command::new("lttng-sessiond").arg("--daemonize"))?;
    }
    let session = format!("silicon-{}", std::process::id());
    let out = dir.join("lttng-trace");
    let _ = std::fs::remove_dir_all(&out);
    run(std::process::Command::new("lttng").args(["create", &session, "--output"]).arg(&out))?;
    let result = (|| {
        run(std::process::Command::new("lttng").args(["enable-event", "--userspace", "appliance_bench:call", "--session", &session]))?;
        run(std::process::Command::new("lttng").args(["start", &session]))?;
        let text = run(std::process::Command::new("taskset").arg("-c").arg(cpu.to_string()).arg(&exe).arg(calls.to_string()).arg(reps.to_string()))?;
        run(std::process::Command::new("lttng").args(["stop", &session]))?;
        Ok::<String, String>(text)
    })();
    let _ = run(std::process::Command::new("lttng").args(["destroy", &session]));
    let text = result?;
    // Lines: "plain NS" and "tracepoint NS", one pair per rep.
    let take = |key: &str| text.lines().filter_map(|l| l.strip_prefix(key)).filter_map(|v| v.trim().parse::<f64>().ok()).collect::<Vec<f64>>();
    let (plain, tp) = (take("plain "), take("tracepoint "));
    if plain.len() != reps || tp.len() != reps {
        return Err(format!("the helper printed {} and {} figures, expected {reps} each: {text}", plain.len(), tp.len()));
    }
    let event = plain.iter().zip(&tp).map(|(p, t)| t - p).collect();
    // Events the session kept (the ring buffer discards when full): babeltrace2 counts them.
    let recorded = run(std::process::Command::new("babeltrace2").arg(&out)).ok().map(|t| t.lines().count() as u64);
    Ok(Lttng { plain: Spread::of(plain), tracepoint: Spread::of(tp), event: Spread::of(event), recorded, version })
}
