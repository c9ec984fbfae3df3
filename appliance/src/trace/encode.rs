//! Text encoders of the network service: ftrace-style lines, Chrome/Perfetto
//! trace events, JSON strings and Prometheus samples. Pure logic, host-tested.

use alloc::string::String;
use core::fmt::Write;

use super::ring::{Event, Kind};

/// Context names by `Event::ctx`.
pub fn ctx_name(ctx: u8) -> &'static str {
    ["task", "irq", "nmi"].get(ctx as usize).copied().unwrap_or("?")
}

/// `  [001] nmi       12.345678: func <-parent` (names, else hex addresses);
/// other kinds: `  [000] task      1.000000: patch_batch sites=256 dur_ns=812000`.
pub fn ftrace_line(out: &mut String, e: &Event, name: Option<&str>, parent: Option<&str>) {
    let _ = write!(out, "  [{:03}] {:<4} {:6}.{:06}: ", e.cpu, ctx_name(e.ctx), e.ts_ns / 1_000_000_000, (e.ts_ns / 1000) % 1_000_000);
    if e.kind != Kind::Function {
        let _ = write!(out, "{} {}={}", e.kind.name(), arg_name(e.kind), e.arg);
        if e.dur_ns > 0 {
            let _ = write!(out, " dur_ns={}", e.dur_ns);
        }
        out.push('\n');
        return;
    }
    match name {
        Some(n) => out.push_str(n),
        None => {
            let _ = write!(out, "{:#x}", e.ip);
        }
    }
    out.push_str(" <-");
    match parent {
        Some(n) => out.push_str(n),
        None => {
            let _ = write!(out, "{:#x}", e.parent);
        }
    }
    out.push('\n');
}

/// The lost-events marker of the text trace.
pub fn lost_line(out: &mut String, cpu: usize, lost: u64) {
    let _ = writeln!(out, "CPU:{cpu} [LOST {lost} EVENTS]");
}

/// A JSON string literal.
pub fn json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// One Chrome trace event (thread = CPU, category = context): an instant,
/// or for an event with a duration (patch batches, sync rounds: recorded
/// when they end) a complete event ("X") spanning it, its argument named.
pub fn chrome_event(out: &mut String, e: &Event, name: &str, parent: &str) {
    out.push_str("{\"name\":");
    json_str(out, if e.kind == Kind::Function { name } else { e.kind.name() });
    let _ = write!(out, ",\"cat\":\"{}\"", ctx_name(e.ctx));
    if e.dur_ns > 0 {
        let start = e.ts_ns.saturating_sub(e.dur_ns);
        let _ = write!(out, ",\"ph\":\"X\",\"ts\":{}.{:03},\"dur\":{}.{:03}", start / 1000, start % 1000, e.dur_ns / 1000, e.dur_ns % 1000);
    } else {
        let _ = write!(out, ",\"ph\":\"i\",\"s\":\"t\",\"ts\":{}.{:03}", e.ts_ns / 1000, e.ts_ns % 1000);
    }
    let _ = write!(out, ",\"pid\":0,\"tid\":{},\"args\":{{", e.cpu);
    match e.kind {
        Kind::Function => {
            out.push_str("\"parent\":");
            json_str(out, parent);
        }
        k => {
            let _ = write!(out, "\"{}\":{}", arg_name(k), e.arg);
        }
    }
    out.push_str("}}");
}

/// What a non-function event's argument means (`Kind` documents it).
pub fn arg_name(k: Kind) -> &'static str {
    match k {
        Kind::Function => "arg",
        Kind::PatchBatch => "sites",
        Kind::SyncRound => "timed_out",
        Kind::NmiTick => "source",
        Kind::Warning => "record",
    }
}

/// A Prometheus counter family: `# HELP`, `# TYPE`, then one sample per
/// `(labels, value)`; labels are `key="value"` pairs.
pub fn prometheus_counter(out: &mut String, name: &str, help: &str, samples: impl IntoIterator<Item = (String, u64)>) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} counter");
    for (labels, v) in samples {
        if labels.is_empty() {
            let _ = writeln!(out, "{name} {v}");
        } else {
            let _ = writeln!(out, "{name}{{{labels}}} {v}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev() -> Event {
        Event { ts_ns: 12_345_678_901, tsc: 1, ip: 0x21_4d14, parent: 0x20_e533, kind: Kind::Function, ctx: 2, cpu: 1, arg: 0, dur_ns: 0 }
    }

    #[test]
    fn ftrace_lines() {
        let mut s = String::new();
        ftrace_line(&mut s, &ev(), Some("lapic_wd_event"), Some("kernel::nmi::watchdog::on_nmi"));
        assert_eq!(s, "  [001] nmi      12.345678: lapic_wd_event <-kernel::nmi::watchdog::on_nmi\n");
        let mut s = String::new();
        ftrace_line(&mut s, &ev(), None, None);
        assert_eq!(s, "  [001] nmi      12.345678: 0x214d14 <-0x20e533\n");
        let mut s = String::new();
        ftrace_line(&mut s, &Event { kind: Kind::PatchBatch, arg: 256, ctx: 0, dur_ns: 812_000, ..ev() }, None, None);
        assert_eq!(s, "  [001] task     12.345678: patch_batch sites=256 dur_ns=812000\n");
        let mut s = String::new();
        ftrace_line(&mut s, &Event { kind: Kind::NmiTick, arg: 1, ..ev() }, None, None);
        assert_eq!(s, "  [001] nmi      12.345678: nmi_tick source=1\n");
        let mut s = String::new();
        lost_line(&mut s, 3, 1554);
        assert_eq!(s, "CPU:3 [LOST 1554 EVENTS]\n");
    }

    #[test]
    fn chrome_events_are_json() {
        let mut s = String::new();
        chrome_event(&mut s, &ev(), "a\"b", "c\\d\n");
        assert_eq!(
            s,
            r#"{"name":"a\"b","cat":"nmi","ph":"i","s":"t","ts":12345678.901,"pid":0,"tid":1,"args":{"parent":"c\\d\u000a"}}"#
        );
    }

    #[test]
    fn sync_rounds_and_batches_are_complete_events_with_their_length() {
        let mut s = String::new();
        chrome_event(&mut s, &Event { kind: Kind::SyncRound, arg: 0, dur_ns: 45_500, ctx: 0, ..ev() }, "", "");
        assert_eq!(s, r#"{"name":"sync_round","cat":"task","ph":"X","ts":12345633.401,"dur":45.500,"pid":0,"tid":1,"args":{"timed_out":0}}"#);
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["dur"], 45.5);
        let mut s = String::new();
        chrome_event(&mut s, &Event { kind: Kind::PatchBatch, arg: 10_005, dur_ns: 2_000_000, ctx: 0, ..ev() }, "", "");
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!((v["ph"].as_str(), v["dur"].as_f64(), v["args"]["sites"].as_u64()), (Some("X"), Some(2000.0), Some(10_005)));
        // Kinds without a duration stay instants.
        let mut s = String::new();
        chrome_event(&mut s, &Event { kind: Kind::NmiTick, arg: 1, ..ev() }, "", "");
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!((v["ph"].as_str(), v["args"]["source"].as_u64()), (Some("i"), Some(1)));
    }

    #[test]
    fn prometheus_families() {
        let mut s = String::new();
        prometheus_counter(&mut s, "appliance_torn_total", "torn executions.", [(String::from("cpu=\"0\""), 0), (String::from("cpu=\"1\""), 7)]);
        prometheus_counter(&mut s, "appliance_patch_cycles_total", "cycles.", [(String::new(), 42)]);
        assert_eq!(
            s,
            "# HELP appliance_torn_total torn executions.\n# TYPE appliance_torn_total counter\nappliance_torn_total{cpu=\"0\"} 0\nappliance_torn_total{cpu=\"1\"} 7\n\
             # HELP appliance_patch_cycles_total cycles.\n# TYPE appliance_patch_cycles_total counter\nappliance_patch_cycles_total 42\n"
        );
    }
}
