//! What the screen console shows, as text rows: the machine (CPUs, APIC
//! mode, watchdog source), where to reach the appliance, and the live
//! counters, one row per CPU below. Pure: the binary fills a [`View`] from
//! the counters and hands the rows to `kernel::screen::device`.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

pub use kernel::screen::render::Tone;

/// The network as far as the screen is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Net {
    /// No supported NIC.
    Off,
    /// A NIC, no address yet (DHCP).
    Waiting,
    /// Serving HTTP on this address and port.
    Listening([u8; 4], u16),
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CpuRow {
    pub cpu: usize,
    pub apic_id: u32,
    pub nmis: u64,
    pub int3: u64,
    pub torn: u64,
    pub events: u64,
    pub lost: u64,
    /// How long this CPU has not answered a cross-CPU call (0: it answers).
    pub stalled_ms: u64,
}

#[derive(Clone, Debug)]
pub struct View<'a> {
    pub uptime_s: u64,
    pub brand: &'a str,
    pub cpus: usize,
    pub apic: &'a str,
    pub watchdog: &'a str,
    pub watchdog_hz: u32,
    pub net: Net,
    /// What is wrong with the network (link down, a configuration warning).
    pub net_problem: Option<&'a str>,
    pub strategy: &'a str,
    pub sync: &'a str,
    pub sites: usize,
    pub patching: bool,
    pub cycles: u64,
    pub lockups: u64,
    pub nmi_warnings: u64,
    /// `None`: tracing on; else why it was turned off.
    pub ftrace_off: Option<&'a str>,
    pub per_cpu: &'a [CpuRow],
    /// The first line of the newest NMI log record.
    pub last_nmi_log: Option<&'a str>,
}

/// The URL line: where a browser or curl on the same network reaches us.
pub fn url(net: Net) -> String {
    match net {
        Net::Off => String::from("network: off (no supported NIC)"),
        Net::Waiting => String::from("network: waiting for an address (DHCP)"),
        Net::Listening([a, b, c, d], 80) => format!("URL: http://{a}.{b}.{c}.{d}/status"),
        Net::Listening([a, b, c, d], p) => format!("URL: http://{a}.{b}.{c}.{d}:{p}/status"),
    }
}

/// The rows, top to bottom.
pub fn rows(v: &View) -> Vec<(String, Tone)> {
    let sum = |f: fn(&CpuRow) -> u64| v.per_cpu.iter().map(f).sum::<u64>();
    let (torn, nmis, int3, events, lost) = (sum(|c| c.torn), sum(|c| c.nmis), sum(|c| c.int3), sum(|c| c.events), sum(|c| c.lost));
    let t = v.uptime_s;
    let mut r: Vec<(String, Tone)> = Vec::new();
    r.push((format!(" TRACE APPLIANCE   up {}:{:02}:{:02}", t / 3600, t / 60 % 60, t % 60), Tone::Title));
    r.push((format!("cpu: {}", v.brand), Tone::Normal));
    r.push((format!("CPUs: {} online, {}", v.cpus, v.apic), Tone::Normal));
    r.push((format!("watchdog: {}, {} Hz", v.watchdog, v.watchdog_hz), Tone::Normal));
    r.push((url(v.net), if matches!(v.net, Net::Listening(..)) { Tone::Good } else { Tone::Normal }));
    match v.net_problem {
        Some(p) => r.push((format!("network: {p}"), Tone::Bad)),
        None => r.push((String::new(), Tone::Normal)),
    }
    r.push((
        format!("patching: {} ({}), {} sites, {}", v.strategy, v.sync, v.sites, if v.patching { "running" } else { "stopped" }),
        Tone::Normal,
    ));
    r.push((format!("cycles {}   int3 emulations {}", v.cycles, int3), Tone::Normal));
    r.push((format!("torn executions {torn}"), if torn == 0 { Tone::Good } else { Tone::Bad }));
    r.push((
        format!("NMIs {nmis}   lockups {}   NMI warnings {}", v.lockups, v.nmi_warnings),
        if v.lockups == 0 { Tone::Normal } else { Tone::Bad },
    ));
    for c in v.per_cpu.iter().filter(|c| c.stalled_ms > 0) {
        r.push((
            format!("sync stalled: cpu{} has not answered for {}.{} s", c.cpu, c.stalled_ms / 1000, c.stalled_ms % 1000 / 100),
            Tone::Bad,
        ));
    }
    r.push((format!("events {events}   lost {lost}"), Tone::Normal));
    r.push(match v.ftrace_off {
        None => (String::from("ftrace: on"), Tone::Normal),
        Some(why) => (format!("ftrace: off: {why}"), Tone::Bad),
    });
    r.push((String::new(), Tone::Normal));
    r.push((format!("{:>4} {:>4} {:>10} {:>10} {:>5} {:>11} {:>8}", "cpu", "apic", "NMIs", "int3", "torn", "events", "lost"), Tone::Title));
    for c in v.per_cpu {
        r.push((
            format!("{:>4} {:>4} {:>10} {:>10} {:>5} {:>11} {:>8}", c.cpu, c.apic_id, c.nmis, c.int3, c.torn, c.events, c.lost),
            if c.torn == 0 { Tone::Normal } else { Tone::Bad },
        ));
    }
    if let Some(l) = v.last_nmi_log {
        r.push((String::new(), Tone::Normal));
        r.push((format!("NMI log: {l}"), Tone::Bad));
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view<'a>(cpus: &'a [CpuRow]) -> View<'a> {
        View {
            uptime_s: 3725,
            brand: "AMD EPYC-Milan Processor",
            cpus: cpus.len(),
            apic: "xapic",
            watchdog: "ipi-broadcast",
            watchdog_hz: 1000,
            net: Net::Listening([10, 0, 2, 15], 80),
            net_problem: None,
            strategy: "int3",
            sync: "cpuid",
            sites: 10005,
            patching: true,
            cycles: 12,
            lockups: 0,
            nmi_warnings: 0,
            ftrace_off: None,
            per_cpu: cpus,
            last_nmi_log: None,
        }
    }

    #[test]
    fn rows_name_the_machine_the_url_and_sum_the_cpus() {
        let cpus = [
            CpuRow { cpu: 0, apic_id: 0, nmis: 10, int3: 1, torn: 0, events: 100, lost: 0, stalled_ms: 0 },
            CpuRow { cpu: 1, apic_id: 2, nmis: 11, int3: 2, torn: 0, events: 50, lost: 7, stalled_ms: 0 },
        ];
        let r = rows(&view(&cpus));
        let text: Vec<&str> = r.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(text[0], " TRACE APPLIANCE   up 1:02:05");
        assert!(text.contains(&"CPUs: 2 online, xapic"));
        assert!(text.contains(&"watchdog: ipi-broadcast, 1000 Hz"));
        assert!(text.contains(&"URL: http://10.0.2.15/status"));
        assert!(text.contains(&"NMIs 21   lockups 0   NMI warnings 0"));
        assert!(text.contains(&"events 150   lost 7"));
        assert!(text.contains(&"cycles 12   int3 emulations 3"));
        assert!(r.contains(&(String::from("torn executions 0"), Tone::Good)));
        assert_eq!(text.last().unwrap(), &"   1    2         11          2     0          50        7");
        assert!(text.iter().all(|l| l.len() <= 60), "rows fit 60 columns: {text:?}");
        assert!(!text.iter().any(|l| l.contains("stalled")));
    }

    #[test]
    fn a_cpu_that_does_not_answer_is_shown() {
        let cpus = [CpuRow { cpu: 0, ..Default::default() }, CpuRow { cpu: 2, stalled_ms: 12_345, ..Default::default() }];
        let r = rows(&view(&cpus));
        assert!(r.contains(&(String::from("sync stalled: cpu2 has not answered for 12.3 s"), Tone::Bad)), "{r:?}");
        assert!(r.iter().all(|(l, _)| l.len() <= 60));
    }

    #[test]
    fn trouble_shows_in_red() {
        let cpus = [CpuRow { cpu: 0, torn: 3, ..Default::default() }];
        let mut v = view(&cpus);
        v.lockups = 1;
        v.ftrace_off = Some("ftraced code called from NMI context");
        v.last_nmi_log = Some("WARNING: ftraced code called from NMI context lapic_wd_event+0xd/0x65");
        v.net_problem = Some("link down");
        let r = rows(&v);
        assert_eq!(r.iter().position(|x| x.0 == "network: link down"), Some(5), "the row under the URL");
        for needle in ["torn executions 3", "NMIs 0   lockups 1   NMI warnings 0", "ftrace: off: ftraced code called from NMI context", "network: link down"] {
            assert!(r.contains(&(String::from(needle), Tone::Bad)), "{needle}");
        }
        assert!(r.last().unwrap().0.starts_with("NMI log: WARNING: ftraced code"));
    }

    #[test]
    fn url_line_follows_the_network_state() {
        assert_eq!(url(Net::Off), "network: off (no supported NIC)");
        assert_eq!(url(Net::Waiting), "network: waiting for an address (DHCP)");
        assert_eq!(url(Net::Listening([192, 168, 1, 9], 8080)), "URL: http://192.168.1.9:8080/status");
    }
}
