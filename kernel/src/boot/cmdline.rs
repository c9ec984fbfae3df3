//! Kernel command line: `word word=value ...` parsed into typed [`Options`].
//!
//! Pure logic (host-tested). Every word is either understood, or reported as a
//! [`Diagnostic`] (unknown option, bad value, missing value): nothing is
//! silently ignored. Parsing never fails as a whole; a bad word keeps the
//! default for that option and the rest of the line still applies.

use core::fmt;
use heapless::{String, Vec};

pub use crate::nmi::config::NmiSourceChoice;
pub use crate::patch::config::{Strategy, SyncMode};

/// Most diagnostics kept for one command line; more are counted in `dropped_diagnostics`.
pub const MAX_DIAGNOSTICS: usize = 16;
/// A word longer than this is shortened in its diagnostic.
pub const MAX_WORD: usize = 64;

/// Log verbosity (`loglevel=error|warn|info|debug|trace`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

/// What `selftest=` asks the kernel to do after boot, to prove a mechanism works.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Selftest {
    /// Execute `ud2`: the #UD handler must print a symbolized register dump.
    Exception,
    /// Read an unmapped address: the #PF handler must print CR2 and the dump.
    PageFault,
    /// Write to kernel text: must fault (W^X is enforced by the page tables).
    WriteText,
    /// Panic from Rust code: the panic handler prints the message and a call trace.
    Panic,
    /// Stall the last CPU inside a cross-CPU call: the call must time out
    /// naming its APIC id, and the health check must name it too.
    XcallTimeout,
    /// Execute an int3 that is no trace site: must be reported as a real breakpoint.
    Breakpoint,
    /// Spin one CPU (the last, or `selftest_cpu=`) with interrupts off, for
    /// good or for `secs` seconds (`lockup:SECS`): the NMI watchdog must
    /// report a hard lockup, and the rest must keep working.
    Lockup { secs: u32 },
    /// Hold CPU 1's watchdog NMI handler for ten watchdog periods, 20
    /// times: IPIs sent meanwhile latch one NMI that finds nothing new. The
    /// NMI ledger must swallow it: no unknown NMI.
    NmiRace,
    /// A stray IPI on a vector nobody handles to every CPU, and the RTC's
    /// interrupt routed through the IO-APIC to another: both must be
    /// acknowledged and counted while every CPU's timer keeps ticking.
    IrqHygiene,
}



/// The trace rings' size and overflow policy (`trace_buf_kb=`, `trace_overflow=`).
/// The rings are the application's; the framework's command line parses every
/// word so that none is ignored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceConfig {
    /// Trace ring per CPU, KiB (all three contexts).
    pub buf_kb: u32,
    /// Full trace buffers keep the newest (`overwrite`) or the oldest (`drop`).
    pub overwrite: bool,
}

/// The network service's address and port (`ip=`, `gw=`, `http_port=`,
/// `control_token=`), for the application's service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetConfig {
    /// Static address `ip=A.B.C.D/PREFIX` (else DHCP) and gateway `gw=A.B.C.D`.
    pub ip: Option<([u8; 4], u8)>,
    pub gw: Option<[u8; 4]>,
    /// TCP port of the HTTP service.
    pub http_port: u16,
    /// Bearer token for the control endpoints (none: control is off).
    pub control_token: Option<String<64>>,
    /// Which CPU serves the network (`net_cpu=`).
    pub serve_cpu: ServeCpu,
    /// Which NIC serves (`nic=`).
    pub nic: NicChoice,
}

/// Which NIC serves (`nic=auto|virtio|e1000|usb|BB:DD.F`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NicChoice {
    /// The first supported one in the documented order: virtio-net, then
    /// the e1000 family, each by PCI address, then USB CDC-ECM adapters.
    Auto,
    Virtio,
    E1000,
    /// A USB CDC-ECM adapter (on any xHCI controller).
    Usb,
    /// The function at this PCI address (bus, device, function).
    At(u8, u8, u8),
}

impl NicChoice {
    pub fn parse(v: &str) -> Option<NicChoice> {
        match v {
            "auto" => Some(NicChoice::Auto),
            "virtio" => Some(NicChoice::Virtio),
            "e1000" => Some(NicChoice::E1000),
            "usb" => Some(NicChoice::Usb),
            a => {
                let (bus, rest) = a.split_once(':')?;
                let (dev, func) = rest.split_once('.')?;
                let (b, d, f) = (u8::from_str_radix(bus, 16).ok()?, u8::from_str_radix(dev, 16).ok()?, u8::from_str_radix(func, 16).ok()?);
                (d < 32 && f < 8).then_some(NicChoice::At(b, d, f))
            }
        }
    }
}

/// Which CPU serves the network (`net_cpu=auto|patch|N`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServeCpu {
    /// A CPU of its own (the last one) where at least 4 are online, else the
    /// patching loop between batches.
    Auto,
    /// The patching loop, between batches.
    Patch,
    /// This CPU (dense index), polling without pause.
    Index(u32),
}

/// Typed kernel options. Defaults are what a plain boot should do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    pub loglevel: LogLevel,
    pub selftest: Option<Selftest>,
    /// The CPU `selftest=lockup` stalls (`selftest_cpu=N`; default the last).
    pub selftest_cpu: Option<u32>,
    /// Exit QEMU through isa-debug-exit when boot is complete (or on a fatal
    /// error), so a test gets a verdict from the exit code.
    pub test_exit: bool,
    /// Local-APIC timer interrupts per second on every CPU.
    pub timer_hz: u32,
    /// How long to wait for one application processor to come up.
    pub smp_timeout_ms: u32,
    /// Start at most this many CPUs (the BSP included).
    pub max_cpus: Option<u32>,
    /// Kernel heap size.
    pub heap_mb: Option<u32>,
    /// Use x2APIC when the CPU has it (`x2apic=off` forces xAPIC).
    pub x2apic: bool,
    /// Tests only: enable x2APIC before the kernel chooses its mode, as
    /// firmware does on machines with more than 255 CPUs (`x2apic_fw`).
    pub x2apic_fw: bool,
    /// Print every ACPI table as hex (to record fixtures for host tests).
    pub acpi_dump: bool,
    /// Calibrate the TSC against this reference when it works (`clock=`;
    /// `auto`, the default, takes the first usable in preference order).
    pub clock: Option<crate::time::reference::Reference>,
    /// The patching engine and its loop.
    pub patch: crate::patch::config::Config,
    /// The NMI watchdog.
    pub nmi: crate::nmi::config::Config,
    /// The application's trace rings.
    pub trace: TraceConfig,
    /// The application's network service.
    pub net: NetConfig,
    /// Run the benchmarks instead of the patching loop (`cargo xtask bench`).
    pub bench: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            loglevel: LogLevel::Info,
            selftest: None,
            selftest_cpu: None,
            test_exit: false,
            timer_hz: 100,
            smp_timeout_ms: 1000,
            max_cpus: None,
            heap_mb: None,
            x2apic: true,
            acpi_dump: false,
            clock: None,
            x2apic_fw: false,
            patch: Default::default(),
            nmi: Default::default(),
            trace: TraceConfig { buf_kb: 256, overwrite: true },
            net: NetConfig { ip: None, gw: None, http_port: 80, control_token: None, serve_cpu: ServeCpu::Auto, nic: NicChoice::Auto },
            bench: false,
        }
    }
}

/// What went wrong with one word of the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    UnknownOption,
    /// The option takes `key=value` and got no value.
    MissingValue,
    /// The option takes no value (it is a flag) but got one.
    UnexpectedValue,
    /// The value is not one of the accepted ones; the text says what is.
    BadValue(&'static str),
}

/// One reported word.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub word: String<MAX_WORD>,
    pub problem: Problem,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.problem {
            Problem::UnknownOption => write!(f, "unknown option `{}` (ignored)", self.word),
            Problem::MissingValue => write!(f, "option `{}` needs a value (`{}=...`)", self.word, self.word),
            Problem::UnexpectedValue => write!(f, "option `{}` takes no value", self.word),
            Problem::BadValue(expected) => {
                write!(f, "bad value in `{}`: expected {} (default kept)", self.word, expected)
            }
        }
    }
}

/// The result of parsing: options plus everything that was not understood.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Parsed {
    pub options: Options,
    pub diagnostics: Vec<Diagnostic, MAX_DIAGNOSTICS>,
    pub dropped_diagnostics: usize,
}

fn truncated(word: &str) -> String<MAX_WORD> {
    let mut s = String::new();
    for c in word.chars() {
        if s.push(c).is_err() {
            break;
        }
    }
    s
}

fn parse_u32(v: &str, min: u32, max: u32) -> Option<u32> {
    let n: u32 = v.parse().ok()?;
    (min..=max).contains(&n).then_some(n)
}

fn parse_ipv4(v: &str) -> Option<[u8; 4]> {
    let mut out = [0u8; 4];
    let mut parts = v.split('.');
    for o in out.iter_mut() {
        *o = parts.next()?.parse().ok()?;
    }
    parts.next().is_none().then_some(out)
}

fn parse_cidr(v: &str) -> Option<([u8; 4], u8)> {
    let (a, p) = v.split_once('/')?;
    let prefix: u8 = p.parse().ok()?;
    (prefix <= 32).then_some((parse_ipv4(a)?, prefix))
}

fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "on" | "yes" | "true" => Some(true),
        "0" | "off" | "no" | "false" => Some(false),
        _ => None,
    }
}

impl Parsed {
    fn report(&mut self, word: &str, problem: Problem) {
        let d = Diagnostic { word: truncated(word), problem };
        if self.diagnostics.push(d).is_err() {
            self.dropped_diagnostics += 1;
        }
    }
}

/// Parse a whole command line. Words are separated by ASCII whitespace.
pub fn parse(line: &str) -> Parsed {
    let mut p = Parsed::default();
    let mut words = line.split_ascii_whitespace().peekable();
    // Multiboot1 loaders (QEMU `-kernel`, GRUB's `multiboot`) put the image's
    // path first, as Linux's boot loaders do: skip it.
    if words.peek().is_some_and(|w| w.contains('/') && !w.contains('=')) {
        words.next();
    }
    for word in words {
        let (key, value) = match word.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (word, None),
        };
        apply(&mut p, word, key, value);
    }
    p
}

/// Apply a `key=value` option. `$field = parser(value)` or report `$expected`.
macro_rules! valued {
    ($p:ident, $word:ident, $key:ident, $value:ident, $expected:expr, |$v:ident| $conv:expr, |$o:ident, $x:ident| $set:expr) => {{
        match $value {
            None => $p.report($key, Problem::MissingValue),
            Some($v) => match $conv {
                Some($x) => {
                    let $o = &mut $p.options;
                    $set;
                }
                None => $p.report($word, Problem::BadValue($expected)),
            },
        }
    }};
}

fn apply(p: &mut Parsed, word: &str, key: &str, value: Option<&str>) {
    match key {
        "loglevel" => valued!(p, word, key, value, "error|warn|info|debug|trace", |v| match v {
            "error" => Some(LogLevel::Error),
            "warn" => Some(LogLevel::Warn),
            "info" => Some(LogLevel::Info),
            "debug" => Some(LogLevel::Debug),
            "trace" => Some(LogLevel::Trace),
            _ => None,
        }, |o, x| o.loglevel = x),
        "selftest" => valued!(p, word, key, value, "exception|pagefault|write_text|panic|xcall_timeout|breakpoint|lockup|lockup:SECS|nmi_race|irq_hygiene", |v| match v {
            "exception" => Some(Selftest::Exception),
            "pagefault" => Some(Selftest::PageFault),
            "write_text" => Some(Selftest::WriteText),
            "panic" => Some(Selftest::Panic),
            "xcall_timeout" => Some(Selftest::XcallTimeout),
            "breakpoint" => Some(Selftest::Breakpoint),
            "lockup" => Some(Selftest::Lockup { secs: 0 }),
            "nmi_race" => Some(Selftest::NmiRace),
            "irq_hygiene" => Some(Selftest::IrqHygiene),
            v => v.strip_prefix("lockup:").and_then(|n| parse_u32(n, 1, 3600)).map(|secs| Selftest::Lockup { secs }),
        }, |o, x| o.selftest = Some(x)),
        "selftest_cpu" => valued!(p, word, key, value, "an integer 0..=4095", |v| parse_u32(v, 0, 4095),
            |o, x| o.selftest_cpu = Some(x)),
        "timer_hz" => valued!(p, word, key, value, "an integer 1..=10000", |v| parse_u32(v, 1, 10_000),
            |o, x| o.timer_hz = x),
        "smp_timeout_ms" => valued!(p, word, key, value, "an integer 1..=60000", |v| parse_u32(v, 1, 60_000),
            |o, x| o.smp_timeout_ms = x),
        "max_cpus" => valued!(p, word, key, value, "an integer 1..=4096", |v| parse_u32(v, 1, 4096),
            |o, x| o.max_cpus = Some(x)),
        "heap_mb" => valued!(p, word, key, value, "an integer 4..=4096", |v| parse_u32(v, 4, 4096),
            |o, x| o.heap_mb = Some(x)),
        "x2apic" => valued!(p, word, key, value, "on|off", |v| parse_bool(v), |o, x| o.x2apic = x),
        "clock" => valued!(p, word, key, value, "auto|cpuid|hpet|pm-timer|pit", |v| match v {
            "auto" => Some(None),
            r => crate::time::reference::Reference::parse(r).map(Some),
        }, |o, x| o.clock = x),
        "patch" => valued!(p, word, key, value, "on|off", |v| parse_bool(v), |o, x| o.patch.run = x),
        "strategy" => valued!(p, word, key, value, Strategy::NAMES, |v| Strategy::parse(v), |o, x| o.patch.strategy = x),
        "sync" => valued!(p, word, key, value, SyncMode::NAMES, |v| SyncMode::parse(v), |o, x| o.patch.sync = x),
        "patch_batch" => valued!(p, word, key, value, "an integer 0..=1000000 (0: all sites)", |v| parse_u32(v, 0, 1_000_000),
            |o, x| o.patch.batch = x),
        "patch_interval_us" => valued!(p, word, key, value, "an integer 0..=10000000", |v| parse_u32(v, 0, 10_000_000),
            |o, x| o.patch.interval_us = x),
        "patch_cpu" => valued!(p, word, key, value, "a CPU index 0..=4095", |v| parse_u32(v, 0, 4095),
            |o, x| o.patch.cpu = x),
        "patch_workers" => valued!(p, word, key, value, "an integer 0..=4095 (CPUs calling the traced functions)", |v| parse_u32(v, 0, 4095),
            |o, x| o.patch.workers = Some(x)),
        "patch_cycles" => valued!(p, word, key, value, "an integer 0..=100000000 (0: forever)", |v| parse_u32(v, 0, 100_000_000),
            |o, x| o.patch.cycles = x),
        "nmi_watchdog" => valued!(p, word, key, value, "0|1|on|off", |v| parse_bool(v), |o, x| o.nmi.enabled = x),
        "nmi_watchdog_hz" => valued!(p, word, key, value, "an integer 1..=100000", |v| parse_u32(v, 1, 100_000),
            |o, x| o.nmi.hz = x),
        "nmi_source" => valued!(p, word, key, value, "auto|ipi", |v| match v {
            "auto" => Some(NmiSourceChoice::Auto),
            "ipi" => Some(NmiSourceChoice::Ipi),
            _ => None,
        }, |o, x| o.nmi.source = x),
        "watchdog_thresh" => valued!(p, word, key, value, "seconds 1..=60", |v| parse_u32(v, 1, 60),
            |o, x| o.nmi.thresh_secs = x),
        "trace_buf_kb" => valued!(p, word, key, value, "KiB 4..=65536", |v| parse_u32(v, 4, 65_536), |o, x| o.trace.buf_kb = x),
        "trace_overflow" => valued!(p, word, key, value, "overwrite|drop", |v| match v {
            "overwrite" => Some(true),
            "drop" => Some(false),
            _ => None,
        }, |o, x| o.trace.overwrite = x),
        "ip" => valued!(p, word, key, value, "A.B.C.D/PREFIX", |v| parse_cidr(v), |o, x| o.net.ip = Some(x)),
        "gw" => valued!(p, word, key, value, "A.B.C.D", |v| parse_ipv4(v), |o, x| o.net.gw = Some(x)),
        "control_token" => valued!(p, word, key, value, "1 to 64 printable characters", |v| {
            (!v.is_empty() && v.len() <= 64 && v.bytes().all(|b| b.is_ascii_graphic())).then(|| truncated(v))
        }, |o, x| o.net.control_token = Some(x)),
        "net_cpu" => valued!(p, word, key, value, "auto|patch|a CPU index 0..=4095", |v| match v {
            "auto" => Some(ServeCpu::Auto),
            "patch" => Some(ServeCpu::Patch),
            n => parse_u32(n, 0, 4095).map(ServeCpu::Index),
        }, |o, x| o.net.serve_cpu = x),
        "nic" => valued!(p, word, key, value, "auto|virtio|e1000|usb|a PCI address BB:DD.F", |v| NicChoice::parse(v), |o, x| o.net.nic = x),
        "http_port" => valued!(p, word, key, value, "a TCP port 1..=65535", |v| parse_u32(v, 1, 65_535), |o, x| o.net.http_port = x as u16),
        "patch_seconds" => valued!(p, word, key, value, "an integer 0..=31536000 (0: no limit)", |v| parse_u32(v, 0, 31_536_000),
            |o, x| o.patch.seconds = x),
        "patch_sites" => valued!(p, word, key, value, "an integer 0..=10000000 (0: all)", |v| parse_u32(v, 0, 10_000_000),
            |o, x| o.patch.sites = x),
        "naive_gap_us" => valued!(p, word, key, value, "an integer 0..=1000000", |v| parse_u32(v, 0, 1_000_000),
            |o, x| o.patch.naive_gap_us = x),
        "status_secs" => valued!(p, word, key, value, "an integer 1..=3600", |v| parse_u32(v, 1, 3600),
            |o, x| o.patch.status_secs = x),
        "test_exit" | "acpi_dump" | "x2apic_fw" | "trace_nmi_path" | "ftrace_keep_on_nmi" | "bench" => {
            if value.is_some() {
                p.report(key, Problem::UnexpectedValue);
            } else {
                let o = &mut p.options;
                match key {
                    "test_exit" => o.test_exit = true,
                    "acpi_dump" => o.acpi_dump = true,
                    "x2apic_fw" => o.x2apic_fw = true,
                    "trace_nmi_path" => o.patch.trace_nmi_path = true,
                    "bench" => o.bench = true,
                    _ => o.patch.ftrace_keep_on_nmi = true,
                }
            }
        }
        _ => p.report(word, Problem::UnknownOption),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_line_gives_defaults() {
        let p = parse("   ");
        assert_eq!(p.options, Options::default());
        assert!(p.diagnostics.is_empty());
    }

    #[test]
    fn typed_values() {
        let p = parse("loglevel=debug selftest=pagefault timer_hz=250 max_cpus=3 heap_mb=16 x2apic=off test_exit");
        assert!(p.diagnostics.is_empty(), "{:?}", p.diagnostics);
        let o = p.options;
        assert_eq!(o.loglevel, LogLevel::Debug);
        assert_eq!(o.selftest, Some(Selftest::PageFault));
        assert_eq!(o.timer_hz, 250);
        assert_eq!(o.max_cpus, Some(3));
        assert_eq!(o.heap_mb, Some(16));
        assert!(!o.x2apic);
        assert!(o.test_exit);
        assert_eq!(o.clock, None);
        assert_eq!(parse("clock=pm-timer").options.clock, Some(crate::time::reference::Reference::PmTimer));
        assert_eq!(parse("clock=pit clock=auto").options.clock, None);
        assert_eq!(parse("clock=tsc").diagnostics[0].problem, Problem::BadValue("auto|cpuid|hpet|pm-timer|pit"));
    }

    #[test]
    fn unknown_and_bad_words_are_reported_and_the_rest_applies() {
        let p = parse("frobnicate timer_hz=0 timer_hz=abc loglevel selftest=nope test_exit=1 timer_hz=50");
        assert_eq!(p.options.timer_hz, 50);
        assert_eq!(p.options.selftest, None);
        assert!(!p.options.test_exit);
        let problems: std::vec::Vec<_> = p.diagnostics.iter().map(|d| (d.word.as_str(), d.problem.clone())).collect();
        assert_eq!(
            problems,
            [
                ("frobnicate", Problem::UnknownOption),
                ("timer_hz=0", Problem::BadValue("an integer 1..=10000")),
                ("timer_hz=abc", Problem::BadValue("an integer 1..=10000")),
                ("loglevel", Problem::MissingValue),
                ("selftest=nope", Problem::BadValue("exception|pagefault|write_text|panic|xcall_timeout|breakpoint|lockup|lockup:SECS|nmi_race|irq_hygiene")),
                ("test_exit", Problem::UnexpectedValue),
            ]
        );
        assert_eq!(
            std::format!("{}", p.diagnostics[0]),
            "unknown option `frobnicate` (ignored)"
        );
    }

    #[test]
    fn patching_options() {
        let p = parse("strategy=stop_machine sync=iret patch_batch=0 patch_interval_us=0 patch_cpu=2 patch_cycles=50 patch=off");
        assert!(p.diagnostics.is_empty(), "{:?}", p.diagnostics);
        let o = p.options;
        assert_eq!((o.patch.strategy, o.patch.sync), (Strategy::StopMachine, SyncMode::Iret));
        assert_eq!((o.patch.batch, o.patch.interval_us, o.patch.cpu, o.patch.cycles, o.patch.run), (0, 0, 2, 50, false));
        let d = parse("strategy=fast sync=mfence").diagnostics;
        assert_eq!(d[0].problem, Problem::BadValue("int3|stop_machine|naive"));
        assert_eq!(d[1].problem, Problem::BadValue("cpuid|iret|serialize"));
        assert_eq!(Options::default().patch.strategy, Strategy::Int3);
        assert_eq!(Options::default().patch.sync, SyncMode::Cpuid);
    }

    #[test]
    fn watchdog_options() {
        let o = parse("nmi_watchdog=0").options;
        assert!(!o.nmi.enabled);
        let p = parse("nmi_watchdog_hz=10000 watchdog_thresh=2 trace_nmi_path ftrace_keep_on_nmi nmi_source=ipi selftest=lockup");
        assert!(p.diagnostics.is_empty(), "{:?}", p.diagnostics);
        let o = p.options;
        assert_eq!((o.nmi.hz, o.nmi.thresh_secs, o.nmi.source), (10_000, 2, NmiSourceChoice::Ipi));
        assert!(o.patch.trace_nmi_path && o.patch.ftrace_keep_on_nmi && o.nmi.enabled);
        assert_eq!(o.selftest, Some(Selftest::Lockup { secs: 0 }));
        let p = parse("selftest=lockup:15 selftest_cpu=0");
        assert!(p.diagnostics.is_empty(), "{:?}", p.diagnostics);
        assert_eq!((p.options.selftest, p.options.selftest_cpu), (Some(Selftest::Lockup { secs: 15 }), Some(0)));
        for bad in ["selftest=lockup:0", "selftest=lockup:x", "selftest=lockup:", "selftest_cpu=-1"] {
            assert_eq!(parse(bad).diagnostics.len(), 1, "{bad}");
        }
        let d = parse("nmi_watchdog_hz=0 trace_nmi_path=1").diagnostics;
        assert_eq!(d[0].problem, Problem::BadValue("an integer 1..=100000"));
        assert_eq!(d[1].problem, Problem::UnexpectedValue);
        let o = Options::default();
        assert!(o.nmi.enabled && !o.patch.trace_nmi_path && !o.patch.ftrace_keep_on_nmi);
        assert_eq!((o.nmi.hz, o.nmi.thresh_secs), (1000, 10));
    }

    #[test]
    fn network_options() {
        let o = parse("ip=10.0.2.15/24 gw=10.0.2.2 http_port=8080").options;
        assert_eq!(o.net.ip, Some(([10, 0, 2, 15], 24)));
        assert_eq!(o.net.gw, Some([10, 0, 2, 2]));
        assert_eq!(o.net.http_port, 8080);
        assert_eq!(o.net.serve_cpu, ServeCpu::Auto);
        assert_eq!(parse("net_cpu=patch").options.net.serve_cpu, ServeCpu::Patch);
        assert_eq!(parse("net_cpu=3").options.net.serve_cpu, ServeCpu::Index(3));
        assert_eq!(parse("net_cpu=some").diagnostics.len(), 1);
        assert_eq!(parse("nic=e1000").options.net.nic, NicChoice::E1000);
        assert_eq!(parse("nic=usb").options.net.nic, NicChoice::Usb);
        assert_eq!(parse("").options.patch.workers, None);
        assert_eq!(parse("patch_workers=0").options.patch.workers, Some(0));
        assert_eq!(parse("patch_workers=-1").diagnostics.len(), 1);
        assert_eq!(parse("nic=00:1f.6").options.net.nic, NicChoice::At(0, 0x1f, 6));
        assert_eq!(parse("nic=00:20.0").diagnostics.len(), 1, "device 32 does not exist");
        assert_eq!(parse("nic=wifi").diagnostics.len(), 1);
        let d = parse("ip=10.0.2.15 gw=300.1.1.1 ip=1.2.3.4/33").diagnostics;
        assert_eq!(d.len(), 3);
        assert_eq!(Options::default().net.ip, None, "DHCP by default");
        assert_eq!(parse("control_token=s3cret").options.net.control_token.as_deref(), Some("s3cret"));
        assert_eq!(Options::default().net.control_token, None, "control is off by default");
    }

    #[test]
    fn a_leading_image_path_is_not_an_option() {
        let p = parse("/boot/appliance.elf test_exit");
        assert!(p.diagnostics.is_empty(), "{:?}", p.diagnostics);
        assert!(p.options.test_exit);
        // Only in first position.
        let p = parse("test_exit /boot/appliance.elf");
        assert_eq!(p.diagnostics[0].problem, Problem::UnknownOption);
    }

    #[test]
    fn too_many_diagnostics_are_counted_not_lost_silently() {
        let line: std::string::String = (0..MAX_DIAGNOSTICS + 5).map(|i| std::format!("bogus{i} ")).collect();
        let p = parse(&line);
        assert_eq!(p.diagnostics.len(), MAX_DIAGNOSTICS);
        assert_eq!(p.dropped_diagnostics, 5);
    }

    #[test]
    fn long_words_are_truncated_on_a_char_boundary() {
        let word: std::string::String = "é".repeat(100);
        let p = parse(&word);
        assert_eq!(p.diagnostics.len(), 1);
        assert!(p.diagnostics[0].word.len() <= MAX_WORD);
        assert!(p.diagnostics[0].word.chars().all(|c| c == 'é'));
    }
}
