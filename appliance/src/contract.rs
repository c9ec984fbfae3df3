//! The guest-host contract: every shape the host reads from a running
//! appliance, defined once. The guest encodes them (`/status` JSON, the
//! verdict line, `bench:` lines) with the no_std encoders here; the host
//! (`xtask`: tests, soak, bench) decodes them with the same types, through
//! serde behind the `host` feature or the parsers here. Renaming a field
//! breaks the build of both sides, and `tests::status_round_trip` checks that
//! the encoder and the decoder agree on every key.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::{self, Write};

use crate::trace::encode::{json_str, label_value, prometheus_counter};

/// `GET /status`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(any(test, feature = "host"), derive(serde::Deserialize))]
pub struct Status {
    pub cpu_brand: String,
    /// `xapic` or `x2apic`.
    pub apic: String,
    pub cpus_online: u32,
    pub cpus: Vec<CpuStatus>,
    pub watchdog: WatchdogStatus,
    pub clock: ClockStatus,
    pub patching: PatchingStatus,
    pub ftrace: FtraceStatus,
    pub net: NetStatus,
    pub http: HttpStatus,
    /// The kernel heap, in bytes.
    pub heap_used: u64,
    pub heap_free: u64,
    pub uptime_ns: u64,
    pub cmdline: String,
}

/// The HTTP service's connections and what its policy did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(any(test, feature = "host"), derive(serde::Deserialize))]
pub struct HttpStatus {
    /// Sockets, those with a client now, and those running a download.
    pub sockets: u64,
    pub busy: u64,
    pub downloads: u64,
    /// Bytes of socket buffers.
    pub buffer_bytes: u64,
    /// Requests answered (any status).
    pub requests: u64,
    /// Clients that did not send a request in time (408).
    pub timeouts: u64,
    /// Downloads refused because long downloads held every socket they may take (503).
    pub refused_busy: u64,
    /// Downloads cut because the client stopped reading.
    pub cut_stalled: u64,
    /// Rounds of network work worker CPUs did while a download ran.
    pub lent_polls: u64,
    /// Rounds of network work done by a CPU standing in for the service's
    /// owner, which had not polled it for 200 ms (stuck).
    pub rescued_polls: u64,
    /// Incomplete requests reset so that a newcomer found a socket (every
    /// socket taken, the oldest half-sent request gave its up).
    pub evicted: u64,
}

/// The network as the service sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(any(test, feature = "host"), derive(serde::Deserialize))]
pub struct NetStatus {
    /// The NIC's model and PCI function, or empty without one.
    pub nic: String,
    /// `up`, `down`, or `unknown` where the device does not say.
    pub link: String,
    /// `A.B.C.D/P` once configured.
    pub address: Option<String>,
    pub gateway: Option<String>,
    /// A static gateway answered ARP (true) or did not after every probe
    /// (false); null while probing, or with DHCP.
    pub gateway_answers: Option<bool>,
    /// The address comes from DHCP, and how many leases were acquired.
    pub dhcp: bool,
    pub dhcp_leases: u64,
    /// Link changes seen since boot.
    pub link_changes: u64,
    /// What the user should know (a gateway off the subnet, no ARP reply...).
    pub warnings: Vec<String>,
}

/// One online CPU's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(any(test, feature = "host"), derive(serde::Deserialize))]
pub struct CpuStatus {
    pub cpu: u32,
    pub apic_id: u32,
    /// This CPU's watchdog NMI source (`ipi-broadcast (fallback: why)` where
    /// its counter could not serve).
    pub watchdog: String,
    pub nmis: u64,
    pub timer_ticks: u64,
    pub int3_emulated: u64,
    pub torn: u64,
    pub traced_while_off: u64,
    pub missed_while_on: u64,
    /// Hard lockups reported on this CPU.
    pub lockups: u64,
    /// Cross-CPU calls (sync rounds) this CPU did not answer in time,
    /// counted once per stall; how long the stall in progress has lasted
    /// (0: none); NMI backtraces it wrote on request.
    pub stalled_xcalls: u64,
    pub xcall_stalled_ms: u64,
    pub nmi_backtraces: u64,
    /// Traced calls made in NMI context.
    pub nmi_site_calls: u64,
    /// Trace events produced on this CPU, and lost (overwritten in a full
    /// ring, or dropped): `events - lost` are in its rings now.
    pub events: u64,
    pub lost: u64,
    /// The same by context: task, irq, nmi.
    pub events_by_context: [u64; 3],
    pub lost_by_context: [u64; 3],
}

/// The NMI watchdog and its log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(any(test, feature = "host"), derive(serde::Deserialize))]
pub struct WatchdogStatus {
    /// `off`, `ipi-broadcast` or the counter's name.
    pub source: String,
    pub hz: u32,
    /// NMIs over every CPU by what they were: watchdog IPIs, counter
    /// overflows, external (port 0x61 SERR#/IOCHK#), latched duplicates of
    /// watchdog IPIs already accounted for, and none of these.
    pub ipi: u64,
    pub pmu: u64,
    pub external: u64,
    pub swallowed: u64,
    /// Counter NMIs that came after their overflow was acknowledged.
    pub late_pmi: u64,
    pub unknown: u64,
    /// CPUs whose counter never raised an NMI, on watchdog IPIs instead.
    pub ipi_fallback_cpus: u64,
    /// Rounds of watchdog IPIs sent by another CPU while CPU 0's had stopped.
    pub takeover_rounds: u64,
    pub lockups: u64,
    pub nested: u64,
    pub exceptions_in_nmi: u64,
    pub ftrace_nmi_warnings: u64,
    pub log_records: u64,
    pub log_dropped: u64,
}

/// Where the time comes from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(any(test, feature = "host"), derive(serde::Deserialize))]
pub struct ClockStatus {
    /// The reference the TSC frequency came from: `cpuid`, `hpet`, `pm-timer` or `pit`.
    pub reference: String,
    pub tsc_hz: u64,
    /// The local-APIC timer's rate at divide-by-16.
    pub apic_timer_hz: u64,
    /// Other references and how far they were from the chosen one, or why
    /// they were not used (`hpet 2400.1 MHz (+0.01%)`, `pit: absent`).
    pub checks: Vec<String>,
}

/// The patching engine.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(any(test, feature = "host"), derive(serde::Deserialize))]
pub struct PatchingStatus {
    pub strategy: String,
    pub sync: String,
    pub cycles: u64,
    pub batches: u64,
    pub sync_rounds: u64,
    pub sync_failures: u64,
    pub sites: u64,
    /// The loop is running.
    pub enabled: bool,
}

/// Whether tracing is on, and why not.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(any(test, feature = "host"), derive(serde::Deserialize))]
pub struct FtraceStatus {
    pub enabled: bool,
    pub disabled_reason: Option<String>,
}

/// A JSON object written key by key.
struct Obj<'a> {
    out: &'a mut String,
    first: bool,
}

impl<'a> Obj<'a> {
    fn open(out: &'a mut String) -> Obj<'a> {
        out.push('{');
        Obj { out, first: true }
    }

    fn key(&mut self, k: &str) -> &mut String {
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
        json_str(self.out, k);
        self.out.push(':');
        self.out
    }

    fn num(&mut self, k: &str, v: impl fmt::Display) -> &mut Self {
        let _ = write!(self.key(k), "{v}");
        self
    }

    fn nums(&mut self, k: &str, v: &[u64]) -> &mut Self {
        let o = self.key(k);
        o.push('[');
        for (i, x) in v.iter().enumerate() {
            if i > 0 {
                o.push(',');
            }
            let _ = write!(o, "{x}");
        }
        o.push(']');
        self
    }

    fn str(&mut self, k: &str, v: &str) -> &mut Self {
        json_str(self.key(k), v);
        self
    }

    fn opt_str(&mut self, k: &str, v: Option<&str>) -> &mut Self {
        match v {
            Some(v) => self.str(k, v),
            None => self.num(k, "null"),
        }
    }

    fn strs(&mut self, k: &str, v: &[String]) -> &mut Self {
        let o = self.key(k);
        o.push('[');
        for (i, x) in v.iter().enumerate() {
            if i > 0 {
                o.push(',');
            }
            json_str(o, x);
        }
        o.push(']');
        self
    }

    fn close(self) {
        self.out.push('}');
    }
}

impl CpuStatus {
    fn write_json(&self, out: &mut String) {
        let mut o = Obj::open(out);
        o.num("cpu", self.cpu)
            .num("apic_id", self.apic_id)
            .str("watchdog", &self.watchdog)
            .num("nmis", self.nmis)
            .num("timer_ticks", self.timer_ticks)
            .num("int3_emulated", self.int3_emulated)
            .num("torn", self.torn)
            .num("traced_while_off", self.traced_while_off)
            .num("missed_while_on", self.missed_while_on)
            .num("lockups", self.lockups)
            .num("stalled_xcalls", self.stalled_xcalls)
            .num("xcall_stalled_ms", self.xcall_stalled_ms)
            .num("nmi_backtraces", self.nmi_backtraces)
            .num("nmi_site_calls", self.nmi_site_calls)
            .num("events", self.events)
            .num("lost", self.lost)
            .nums("events_by_context", &self.events_by_context)
            .nums("lost_by_context", &self.lost_by_context);
        o.close();
    }
}

impl Status {
    /// The `/status` body: one JSON object and a newline.
    pub fn to_json(&self) -> String {
        let mut out = String::with_capacity(512 + 256 * self.cpus.len());
        let mut o = Obj::open(&mut out);
        o.str("cpu_brand", &self.cpu_brand).str("apic", &self.apic).num("cpus_online", self.cpus_online);
        let a = o.key("cpus");
        a.push('[');
        for (i, c) in self.cpus.iter().enumerate() {
            if i > 0 {
                a.push(',');
            }
            c.write_json(a);
        }
        a.push(']');
        let w = &self.watchdog;
        let mut wo = Obj::open(o.key("watchdog"));
        wo.str("source", &w.source)
            .num("hz", w.hz)
            .num("ipi", w.ipi)
            .num("pmu", w.pmu)
            .num("external", w.external)
            .num("swallowed", w.swallowed)
            .num("late_pmi", w.late_pmi)
            .num("unknown", w.unknown)
            .num("ipi_fallback_cpus", w.ipi_fallback_cpus)
            .num("takeover_rounds", w.takeover_rounds)
            .num("lockups", w.lockups)
            .num("nested", w.nested)
            .num("exceptions_in_nmi", w.exceptions_in_nmi)
            .num("ftrace_nmi_warnings", w.ftrace_nmi_warnings)
            .num("log_records", w.log_records)
            .num("log_dropped", w.log_dropped);
        wo.close();
        let c = &self.clock;
        let mut co = Obj::open(o.key("clock"));
        co.str("reference", &c.reference).num("tsc_hz", c.tsc_hz).num("apic_timer_hz", c.apic_timer_hz).strs("checks", &c.checks);
        co.close();
        let p = &self.patching;
        let mut po = Obj::open(o.key("patching"));
        po.str("strategy", &p.strategy)
            .str("sync", &p.sync)
            .num("cycles", p.cycles)
            .num("batches", p.batches)
            .num("sync_rounds", p.sync_rounds)
            .num("sync_failures", p.sync_failures)
            .num("sites", p.sites)
            .num("enabled", p.enabled);
        po.close();
        let mut fo = Obj::open(o.key("ftrace"));
        fo.num("enabled", self.ftrace.enabled).opt_str("disabled_reason", self.ftrace.disabled_reason.as_deref());
        fo.close();
        let n = &self.net;
        let mut no = Obj::open(o.key("net"));
        no.str("nic", &n.nic)
            .str("link", &n.link)
            .opt_str("address", n.address.as_deref())
            .opt_str("gateway", n.gateway.as_deref())
            .num("gateway_answers", match n.gateway_answers {
                Some(true) => "true",
                Some(false) => "false",
                None => "null",
            })
            .num("dhcp", n.dhcp)
            .num("dhcp_leases", n.dhcp_leases)
            .num("link_changes", n.link_changes)
            .strs("warnings", &n.warnings);
        no.close();
        let h = &self.http;
        let mut ho = Obj::open(o.key("http"));
        ho.num("sockets", h.sockets)
            .num("busy", h.busy)
            .num("downloads", h.downloads)
            .num("buffer_bytes", h.buffer_bytes)
            .num("requests", h.requests)
            .num("timeouts", h.timeouts)
            .num("refused_busy", h.refused_busy)
            .num("cut_stalled", h.cut_stalled)
            .num("lent_polls", h.lent_polls)
            .num("rescued_polls", h.rescued_polls)
            .num("evicted", h.evicted);
        ho.close();
        o.num("heap_used", self.heap_used).num("heap_free", self.heap_free).num("uptime_ns", self.uptime_ns).str("cmdline", &self.cmdline);
        o.close();
        out.push('\n');
        out
    }

    /// The counters in Prometheus text exposition format.
    pub fn to_metrics(&self) -> String {
        let mut o = String::with_capacity(4096);
        type PerCpuCounter = (&'static str, &'static str, fn(&CpuStatus) -> u64);
        let per_cpu: [PerCpuCounter; 7] = [
            ("appliance_nmis_total", "NMIs taken", |c| c.nmis),
            ("appliance_timer_ticks_total", "local-APIC timer interrupts", |c| c.timer_ticks),
            ("appliance_int3_emulated_total", "int3 traps on sites under modification, emulated", |c| c.int3_emulated),
            ("appliance_torn_total", "torn executions caught by the oracle", |c| c.torn),
            ("appliance_lockups_total", "hard lockups reported", |c| c.lockups),
            ("appliance_stalled_xcalls_total", "cross-CPU calls not answered in time, once per stall", |c| c.stalled_xcalls),
            ("appliance_nmi_backtraces_total", "NMI backtraces written on another CPU's request", |c| c.nmi_backtraces),
        ];
        for (name, help, f) in per_cpu {
            prometheus_counter(&mut o, name, help, self.cpus.iter().map(|c| (alloc::format!("cpu=\"{}\",apic_id=\"{}\"", c.cpu, c.apic_id), f(c))));
        }
        type PerContext = (&'static str, &'static str, fn(&CpuStatus) -> &[u64; 3]);
        let per_ctx: [PerContext; 2] = [
            ("appliance_trace_events_total", "trace events produced", |c| &c.events_by_context),
            ("appliance_trace_dropped_total", "trace events lost: overwritten in a full ring, or dropped", |c| &c.lost_by_context),
        ];
        for (name, help, f) in per_ctx {
            let samples = self.cpus.iter().flat_map(|c| {
                ["task", "irq", "nmi"].into_iter().zip(f(c)).map(|(ctx, v)| (alloc::format!("cpu=\"{}\",apic_id=\"{}\",context=\"{ctx}\"", c.cpu, c.apic_id), *v))
            });
            prometheus_counter(&mut o, name, help, samples);
        }
        let p = &self.patching;
        for (name, help, v) in [
            ("appliance_patch_cycles_total", "patching cycles (every site switched on and off again)", p.cycles),
            ("appliance_patch_batches_total", "patch batches applied", p.batches),
            ("appliance_patch_sync_rounds_total", "cross-CPU sync rounds (serializing instruction on every CPU)", p.sync_rounds),
            ("appliance_patch_sync_failures_total", "sync rounds some CPU did not answer in time", p.sync_failures),
        ] {
            prometheus_counter(&mut o, name, help, [(String::new(), v)]);
        }
        let w = &self.watchdog;
        prometheus_counter(
            &mut o,
            "appliance_nmis_by_source_total",
            "NMIs over every CPU by source: watchdog IPI, counter overflow, external, latched duplicate, late counter NMI, unknown",
            [("ipi", w.ipi), ("pmu", w.pmu), ("external", w.external), ("swallowed", w.swallowed), ("late_pmi", w.late_pmi), ("unknown", w.unknown)]
                .into_iter()
                .map(|(k, v)| (alloc::format!("source=\"{k}\""), v)),
        );
        let _ = writeln!(o, "# HELP appliance_tsc_hertz the TSC frequency\n# TYPE appliance_tsc_hertz gauge\nappliance_tsc_hertz{{reference=\"{}\"}} {}", self.clock.reference, self.clock.tsc_hz);
        let _ = writeln!(o, "# HELP appliance_xcall_stalled_seconds how long a CPU has not answered a cross-CPU call (0: it answers)\n# TYPE appliance_xcall_stalled_seconds gauge");
        for c in &self.cpus {
            let _ = writeln!(o, "appliance_xcall_stalled_seconds{{cpu=\"{}\",apic_id=\"{}\"}} {}.{:03}", c.cpu, c.apic_id, c.xcall_stalled_ms / 1000, c.xcall_stalled_ms % 1000);
        }
        // Each CPU's watchdog source as an info metric (value 1), so an
        // alert can match a CPU on the IPI fallback where a PMU was expected.
        let _ = writeln!(o, "# HELP appliance_watchdog_info each CPU's NMI watchdog source\n# TYPE appliance_watchdog_info gauge");
        for c in &self.cpus {
            let _ = writeln!(o, "appliance_watchdog_info{{cpu=\"{}\",apic_id=\"{}\",source=\"{}\"}} 1", c.cpu, c.apic_id, label_value(&c.watchdog));
        }
        let _ = writeln!(o, "# HELP appliance_cpus_online CPUs online\n# TYPE appliance_cpus_online gauge\nappliance_cpus_online {}", self.cpus.len());
        let h = &self.http;
        for (name, help, v) in [
            ("appliance_http_requests_total", "HTTP requests answered", h.requests),
            ("appliance_http_timeouts_total", "clients that sent no request in time (408)", h.timeouts),
            ("appliance_http_refused_busy_total", "downloads refused while long downloads held their sockets (503)", h.refused_busy),
            ("appliance_http_cut_stalled_total", "downloads cut because the client stopped reading", h.cut_stalled),
            ("appliance_http_lent_polls_total", "rounds of network work worker CPUs did while a download ran", h.lent_polls),
            ("appliance_http_rescued_polls_total", "rounds of network work done for a stuck owner of the service", h.rescued_polls),
            ("appliance_http_evicted_total", "incomplete requests reset so that a new client found a socket", h.evicted),
            ("appliance_nmi_takeover_rounds_total", "watchdog NMI rounds another CPU sent while CPU 0's had stopped", self.watchdog.takeover_rounds),
        ] {
            prometheus_counter(&mut o, name, help, [(String::new(), v)]);
        }
        let _ = writeln!(
            o,
            "# HELP appliance_heap_bytes kernel heap bytes in use and free\n# TYPE appliance_heap_bytes gauge\nappliance_heap_bytes{{state=\"used\"}} {}\nappliance_heap_bytes{{state=\"free\"}} {}",
            self.heap_used, self.heap_free
        );
        if let Some(up) = match self.net.link.as_str() {
            "up" => Some(1),
            "down" => Some(0),
            _ => None,
        } {
            let _ = writeln!(o, "# HELP appliance_net_link_up the NIC's link is up\n# TYPE appliance_net_link_up gauge\nappliance_net_link_up {up}");
        }
        o
    }
}

/// How the patching loop ended, printed as one console line
/// (`patch: verdict: ok: ...` or `patch: verdict: FAILED: ...`): a sentence
/// for people, then every figure as `key=value` in brackets for the host.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    /// What went wrong; empty when the verdict is ok.
    pub problems: Vec<String>,
    pub cycles: u64,
    /// The CPU that ran the loop.
    pub cpu: u32,
    pub sites: u64,
    /// Sites whose bytes are not what was last requested.
    pub wrong_final_bytes: u64,
    /// Failed batches.
    pub errors: u64,
    pub torn: u64,
    pub int3_emulated: u64,
    pub cpus_with_int3: u64,
    /// Traced calls by context: task, irq, nmi.
    pub calls: [u64; 3],
    pub traced_while_off: u64,
    pub missed_while_on: u64,
    pub nested_nmis: u64,
    /// Tracing was still on at the end (not disabled by an NMI-context call).
    pub ftrace_enabled: bool,
}

/// How many `key=value` figures a verdict line carries.
const VERDICT_FIGURES: u32 = 13;

/// What starts the verdict line on the console.
pub const VERDICT_PREFIX: &str = "patch: verdict: ";

impl Verdict {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }

    /// The verdict in a serial log (its first verdict line), or why there is none.
    pub fn find_in(log: &str) -> Result<Verdict, String> {
        let line = log.lines().find_map(|l| l.split(VERDICT_PREFIX).nth(1)).ok_or_else(|| String::from("no `patch: verdict:` line"))?;
        line.parse()
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.ok() {
            write!(
                f,
                "ok: {} cycles on cpu{}, final bytes verified on {} sites, torn={}, int3 emulations on {} CPUs",
                self.cycles, self.cpu, self.sites, self.torn, self.cpus_with_int3
            )?;
        } else {
            write!(f, "FAILED: {:?} (wrong final bytes: {}, errors: {})", self.problems, self.wrong_final_bytes, self.errors)?;
        }
        write!(
            f,
            " [cycles={} cpu={} sites={} wrong_final_bytes={} errors={} torn={} int3_emulated={} cpus_with_int3={} calls={}/{}/{} traced_while_off={} missed_while_on={} nested_nmis={} ftrace={}]",
            self.cycles,
            self.cpu,
            self.sites,
            self.wrong_final_bytes,
            self.errors,
            self.torn,
            self.int3_emulated,
            self.cpus_with_int3,
            self.calls[0],
            self.calls[1],
            self.calls[2],
            self.traced_while_off,
            self.missed_while_on,
            self.nested_nmis,
            if self.ftrace_enabled { "enabled" } else { "disabled" }
        )
    }
}

impl core::str::FromStr for Verdict {
    type Err = String;

    /// The line after [`VERDICT_PREFIX`].
    fn from_str(s: &str) -> Result<Verdict, String> {
        let (head, rest) = s.rsplit_once(" [").ok_or_else(|| alloc::format!("no [figures] in verdict `{s}`"))?;
        let figures = rest.strip_suffix(']').ok_or_else(|| alloc::format!("unterminated [figures] in verdict `{s}`"))?;
        let mut v = Verdict::default();
        if let Some(list) = head.strip_prefix("FAILED: [") {
            let list = list.split_once(']').map_or("", |(l, _)| l);
            v.problems = list.split(", ").map(|p| String::from(p.trim_matches('"'))).filter(|p| !p.is_empty()).collect();
            if v.problems.is_empty() {
                v.problems.push(String::from("unnamed"));
            }
        } else if !head.starts_with("ok: ") {
            return Err(alloc::format!("verdict is neither ok nor FAILED: `{s}`"));
        }
        let mut seen = 0u32;
        for kv in figures.split_whitespace() {
            let (k, val) = kv.split_once('=').ok_or_else(|| alloc::format!("`{kv}` is not key=value"))?;
            let n = |val: &str| val.parse::<u64>().map_err(|_| alloc::format!("{k}={val} is not a number"));
            match k {
                "cycles" => v.cycles = n(val)?,
                "cpu" => v.cpu = n(val)? as u32,
                "sites" => v.sites = n(val)?,
                "wrong_final_bytes" => v.wrong_final_bytes = n(val)?,
                "errors" => v.errors = n(val)?,
                "torn" => v.torn = n(val)?,
                "int3_emulated" => v.int3_emulated = n(val)?,
                "cpus_with_int3" => v.cpus_with_int3 = n(val)?,
                "calls" => {
                    let mut it = val.split('/');
                    for c in v.calls.iter_mut() {
                        *c = n(it.next().unwrap_or(""))?;
                    }
                }
                "traced_while_off" => v.traced_while_off = n(val)?,
                "missed_while_on" => v.missed_while_on = n(val)?,
                "nested_nmis" => v.nested_nmis = n(val)?,
                "ftrace" => v.ftrace_enabled = val == "enabled",
                _ => return Err(alloc::format!("unknown verdict figure `{k}`")),
            }
            seen += 1;
        }
        if seen != VERDICT_FIGURES {
            return Err(alloc::format!("verdict has {seen} of {VERDICT_FIGURES} figures: `{s}`"));
        }
        Ok(v)
    }
}

/// One benchmark figure of the bench boot: `bench: KEY VALUE UNIT`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BenchFigure<'a> {
    pub key: &'a str,
    pub value: u64,
    /// Empty for plain counts.
    pub unit: &'a str,
}

/// What starts a benchmark line on the console.
pub const BENCH_PREFIX: &str = "bench: ";

impl fmt::Display for BenchFigure<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{BENCH_PREFIX}{} {} {}", self.key, self.value, self.unit)
    }
}

impl<'a> BenchFigure<'a> {
    /// Every benchmark line of a serial log.
    pub fn all_in(log: &'a str) -> impl Iterator<Item = BenchFigure<'a>> {
        log.lines().filter_map(|l| l.split(BENCH_PREFIX).nth(1)).filter_map(|r| {
            let mut w = r.split_whitespace();
            let (key, value) = (w.next()?, w.next()?.parse::<u64>().ok()?);
            Some(BenchFigure { key, value, unit: w.next().unwrap_or("") })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status() -> Status {
        Status {
            cpu_brand: String::from("AMD EPYC \"Genoa\""),
            apic: String::from("x2apic"),
            cpus_online: 2,
            cpus: (0..2)
                .map(|i| CpuStatus {
                    cpu: i,
                    apic_id: i * 2,
                    watchdog: String::from(if i == 0 { "intel-arch-perfmon" } else { "ipi-broadcast (fallback: the counter raised no NMI after arming)" }),
                    nmis: 100 + i as u64,
                    timer_ticks: 1000,
                    int3_emulated: 5,
                    torn: 0,
                    traced_while_off: 0,
                    missed_while_on: 1,
                    lockups: i as u64,
                    stalled_xcalls: i as u64,
                    xcall_stalled_ms: 1500 * i as u64,
                    nmi_backtraces: 2 * i as u64,
                    nmi_site_calls: 7,
                    events: 12345,
                    lost: 9,
                    events_by_context: [12000, 300, 45],
                    lost_by_context: [8, 1, 0],
                })
                .collect(),
            watchdog: WatchdogStatus {
                source: String::from("ipi-broadcast"),
                hz: 1000,
                ipi: 2000,
                pmu: 0,
                external: 1,
                swallowed: 3,
                late_pmi: 0,
                unknown: 0,
                ipi_fallback_cpus: 0,
                takeover_rounds: 6,
                lockups: 1,
                nested: 0,
                exceptions_in_nmi: 3,
                ftrace_nmi_warnings: 2,
                log_records: 4,
                log_dropped: 0,
            },
            clock: ClockStatus {
                reference: String::from("hpet"),
                tsc_hz: 2_400_000_000,
                apic_timer_hz: 62_500_000,
                checks: alloc::vec![String::from("pm-timer 2400.1 MHz (+0.004%)"), String::from("pit: absent")],
            },
            patching: PatchingStatus { strategy: String::from("int3"), sync: String::from("cpuid"), cycles: 9, batches: 90, sync_rounds: 270, sync_failures: 0, sites: 10005, enabled: true },
            ftrace: FtraceStatus { enabled: false, disabled_reason: Some(String::from("ftraced code called from NMI context")) },
            net: NetStatus {
                nic: String::from("e1000 82540EM at 00:03.0"),
                link: String::from("up"),
                address: Some(String::from("192.168.50.10/24")),
                gateway: Some(String::from("10.0.2.2")),
                gateway_answers: Some(false),
                dhcp: false,
                dhcp_leases: 0,
                link_changes: 2,
                warnings: alloc::vec![String::from("gateway 10.0.2.2 is not in the subnet of \"192.168.50.10/24\"")],
            },
            http: HttpStatus { sockets: 64, busy: 3, downloads: 1, buffer_bytes: 64 * 68 * 1024, requests: 1000, timeouts: 7, refused_busy: 2, cut_stalled: 1, lent_polls: 5, rescued_polls: 4, evicted: 3 },
            heap_used: 1 << 20,
            heap_free: 63 << 20,
            uptime_ns: 123_456_789,
            cmdline: String::from("patch_seconds=10 ip=10.0.2.15/24"),
        }
    }

    #[test]
    fn status_round_trip() {
        let s = status();
        let back: Status = serde_json::from_str(&s.to_json()).expect("the decoder reads what the encoder writes");
        assert_eq!(back, s);
        let on = Status { ftrace: FtraceStatus { enabled: true, disabled_reason: None }, net: NetStatus { link: String::from("unknown"), ..NetStatus::default() }, ..status() };
        assert_eq!(serde_json::from_str::<Status>(&on.to_json()).unwrap(), on);
    }

    #[test]
    fn status_is_one_json_line_with_the_documented_keys() {
        let j = status().to_json();
        assert!(j.ends_with("}\n") && !j.trim_end().contains('\n'));
        let v: serde_json::Value = serde_json::from_str(&j).unwrap();
        for p in ["/cpu_brand", "/apic", "/cpus/1/events", "/watchdog/source", "/watchdog/unknown", "/clock/reference", "/patching/sync_rounds", "/ftrace/disabled_reason", "/uptime_ns", "/cmdline"] {
            assert!(v.pointer(p).is_some(), "{p} missing from {j}");
        }
    }

    #[test]
    fn metrics_name_every_cpu() {
        let m = status().to_metrics();
        assert!(m.contains("appliance_nmis_total{cpu=\"1\",apic_id=\"2\"} 101\n"), "{m}");
        assert!(m.contains("appliance_lockups_total{cpu=\"1\",apic_id=\"2\"} 1\n"), "{m}");
        assert!(m.contains("appliance_stalled_xcalls_total{cpu=\"1\",apic_id=\"2\"} 1\n"), "{m}");
        assert!(m.contains("appliance_xcall_stalled_seconds{cpu=\"1\",apic_id=\"2\"} 1.500\n"), "{m}");
        assert!(m.contains("appliance_nmi_takeover_rounds_total 6\n"), "{m}");
        assert!(m.contains("appliance_watchdog_info{cpu=\"1\",apic_id=\"2\",source=\"ipi-broadcast (fallback: the counter raised no NMI after arming)\"} 1\n"), "{m}");
        assert!(m.contains("appliance_patch_sync_rounds_total 270\n"), "{m}");
        assert!(m.contains("appliance_cpus_online 2\n"), "{m}");
        assert!(m.contains("appliance_heap_bytes{state=\"free\"} 66060288\n") && m.contains("appliance_net_link_up 1\n"), "{m}");
        assert!(m.contains("appliance_trace_dropped_total{cpu=\"1\",apic_id=\"2\",context=\"irq\"} 1\n"), "{m}");
        assert!(m.contains("appliance_trace_events_total{cpu=\"0\",apic_id=\"0\",context=\"nmi\"} 45\n"), "{m}");
        assert!(m.contains("appliance_nmis_by_source_total{source=\"swallowed\"} 3\n"), "{m}");
        assert!(m.contains("appliance_tsc_hertz{reference=\"hpet\"} 2400000000\n"), "{m}");
    }

    fn verdict() -> Verdict {
        Verdict {
            problems: Vec::new(),
            cycles: 2,
            cpu: 2,
            sites: 10005,
            wrong_final_bytes: 0,
            errors: 0,
            torn: 0,
            int3_emulated: 4567,
            cpus_with_int3: 3,
            calls: [10, 20, 30],
            traced_while_off: 0,
            missed_while_on: 1,
            nested_nmis: 0,
            ftrace_enabled: true,
        }
    }

    #[test]
    fn verdict_round_trip() {
        let v = verdict();
        let line = alloc::format!("[    1.2] INFO  cpu2: {VERDICT_PREFIX}{v}");
        assert!(line.contains("patch: verdict: ok: 2 cycles on cpu2, final bytes verified on 10005 sites, torn=0, int3 emulations on 3 CPUs"));
        assert_eq!(Verdict::find_in(&line).unwrap(), v);
        let bad = Verdict { problems: alloc::vec![String::from("failed batches"), String::from("torn executions under int3")], errors: 3, ftrace_enabled: false, ..verdict() };
        let text = alloc::format!("{bad}");
        assert!(text.starts_with("FAILED: [\"failed batches\", \"torn executions under int3\"] (wrong final bytes: 0, errors: 3)"), "{text}");
        assert_eq!(text.parse::<Verdict>().unwrap(), bad);
    }

    #[test]
    fn verdict_errors_say_what_is_wrong() {
        assert!(Verdict::find_in("smp: 4 CPUs online").unwrap_err().contains("no `patch: verdict:`"));
        let v = alloc::format!("{}", verdict());
        assert!(v.replace(" nested_nmis=0", "").parse::<Verdict>().unwrap_err().contains("12 of 13"));
        assert!(v.replace(" torn=0 ", " torn=x ").parse::<Verdict>().is_err());
        assert!(v.replace("ok: ", "maybe: ").parse::<Verdict>().unwrap_err().contains("neither"));
    }

    #[test]
    fn bench_lines() {
        let f = BenchFigure { key: "ipi_round_trip_all_cpus", value: 2380, unit: "ns" };
        let log = alloc::format!("[ 0.1] INFO  cpu0: {f}\nnoise\n[ 0.2] INFO  cpu0: bench: cpus 4 \n[ 0.3] bench: broken x ns\n");
        let all: Vec<_> = BenchFigure::all_in(&log).collect();
        assert_eq!(all, [f, BenchFigure { key: "cpus", value: 4, unit: "" }]);
    }
}
