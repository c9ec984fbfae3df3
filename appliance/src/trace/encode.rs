//! Text encoders of the network service: ftrace-style lines, Chrome/Perfetto
//! trace events, JSON strings and Prometheus samples. Pure logic, host-tested.

use alloc::string::String;
use core::fmt::Write;

use super::ring::{Event, Kind};

/// Context names by `Event::ctx`.
pub fn ctx_name(ctx: u8) -> &'static str {
    ["task", "irq", "nmi"].get(ctx as usize).copied().unwrap_or("?")
}

/// Append ASCII bytes to a string, in one copy.
fn push_ascii(out: &mut String, bytes: &[u8]) {
    debug_assert!(bytes.is_ascii());
    // SAFETY: every caller passes ASCII (digits, `0x`, ASCII fill), which
    // is valid UTF-8 on its own: the string stays valid UTF-8.
    unsafe { out.as_mut_vec() }.extend_from_slice(bytes);
}

/// `v` in decimal, right-aligned in `width` columns filled with `fill`
/// (`{:0w}` / `{:w}` of `core::fmt`, without its machinery: a trace
/// download formats several numbers per event). `fill` is ASCII.
pub fn push_dec(out: &mut String, v: u64, width: usize, fill: u8) {
    assert!(fill.is_ascii(), "push_dec fills with ASCII");
    // 20 digits hold u64::MAX; wider columns start with the rest of the fill.
    const COLS: usize = 20;
    for _ in COLS..width {
        push_ascii(out, &[fill]);
    }
    let mut cols = [fill; COLS];
    let (mut n, mut at) = (v, COLS);
    loop {
        at -= 1;
        cols[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    push_ascii(out, &cols[at.min(COLS.saturating_sub(width))..]);
}

/// Lower-case hexadecimal digits.
const HEX: &[u8; 16] = b"0123456789abcdef";

/// `v` as `{:#x}`.
pub fn push_hex(out: &mut String, v: u64) {
    let mut digits = [0u8; 18];
    let (mut n, mut at) = (v, digits.len());
    loop {
        at -= 1;
        digits[at] = HEX[(n & 15) as usize];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    digits[at - 2..at].copy_from_slice(b"0x");
    push_ascii(out, &digits[at - 2..]);
}

/// `  [001] nmi       12.345678: func <-parent` (names, else hex addresses);
/// other kinds: `  [000] task      1.000000: patch_batch sites=256 dur_ns=812000`.
pub fn ftrace_line(out: &mut String, e: &Event, name: Option<&str>, parent: Option<&str>) {
    ftrace_head(out, e);
    if e.kind == Kind::Function {
        function_tail(out, e, name, parent);
        return;
    }
    out.push_str(e.kind.name());
    out.push(' ');
    out.push_str(arg_name(e.kind));
    out.push('=');
    push_dec(out, e.arg, 0, b' ');
    if e.dur_ns > 0 {
        out.push_str(" dur_ns=");
        push_dec(out, e.dur_ns, 0, b' ');
    }
    out.push('\n');
}

/// Where a text line's head has its fields when they fit their columns.
const HEAD: &[u8; 28] = b"  [000] ctx_ ssssss.uuuuuu: ";
const HEAD_CPU: core::ops::Range<usize> = 3..6;
const HEAD_CTX: core::ops::Range<usize> = 8..12;
const HEAD_SECS: core::ops::Range<usize> = 13..19;
const HEAD_MICROS: core::ops::Range<usize> = 20..26;

/// `v` in decimal, right-aligned in `cols` filled with `fill`; false
/// (and `cols` garbage) when it does not fit.
fn dec_in(cols: &mut [u8], mut v: u64, fill: u8) -> bool {
    for i in (0..cols.len()).rev() {
        cols[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            cols[..i].fill(fill);
            return true;
        }
    }
    false
}

/// A text line up to its body: `  [001] nmi       12.345678: `. Built in
/// place in one buffer and appended in one copy (a download formats one per
/// event); a CPU, context or time wider than its column takes the general way.
pub fn ftrace_head(out: &mut String, e: &Event) {
    let mut h = *HEAD;
    let ctx = match e.ctx {
        0 => Some(b"task"),
        1 => Some(b"irq "),
        2 => Some(b"nmi "),
        _ => None,
    };
    if let Some(ctx) = ctx
        && dec_in(&mut h[HEAD_CPU], e.cpu as u64, b'0')
        && dec_in(&mut h[HEAD_SECS], e.ts_ns / 1_000_000_000, b' ')
        && dec_in(&mut h[HEAD_MICROS], (e.ts_ns / 1000) % 1_000_000, b'0')
    {
        h[HEAD_CTX].copy_from_slice(ctx);
        push_ascii(out, &h);
        return;
    }
    out.push_str("  [");
    push_dec(out, e.cpu as u64, 3, b'0');
    out.push_str("] ");
    let ctx = ctx_name(e.ctx);
    out.push_str(ctx);
    for _ in ctx.len()..4 {
        out.push(' ');
    }
    out.push(' ');
    push_dec(out, e.ts_ns / 1_000_000_000, 6, b' ');
    out.push('.');
    push_dec(out, (e.ts_ns / 1000) % 1_000_000, 6, b'0');
    out.push_str(": ");
}

/// A function event's body: `func <-parent` and the newline (names, else
/// hex addresses: the event's `ip`, and its `parent` return address).
pub fn function_tail(out: &mut String, e: &Event, name: Option<&str>, parent: Option<&str>) {
    match name {
        Some(n) => out.push_str(n),
        None => push_hex(out, e.ip),
    }
    out.push_str(" <-");
    match parent {
        Some(n) => out.push_str(n),
        None => push_hex(out, e.parent),
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
    // Runs without a byte to escape go in whole (the escaped bytes are
    // ASCII, so every run ends on a character boundary).
    let mut run = 0;
    for (i, b) in s.bytes().enumerate() {
        if b == b'"' || b == b'\\' || b < 0x20 {
            out.push_str(&s[run..i]);
            match b {
                b'"' => out.push_str("\\\""),
                b'\\' => out.push_str("\\\\"),
                c => {
                    out.push_str("\\u00");
                    out.push(char::from(HEX[(c >> 4) as usize]));
                    out.push(char::from(HEX[(c & 15) as usize]));
                }
            }
            run = i + 1;
        }
    }
    out.push_str(&s[run..]);
    out.push('"');
}

/// One Chrome trace event (thread = CPU, category = context): an instant,
/// or for an event with a duration (patch batches, sync rounds: recorded
/// when they end) a complete event ("X") spanning it, its argument named.
/// A function instant is `chrome_function_head`, the time, then
/// `chrome_function_tail` (a download caches the two parts).
pub fn chrome_event(out: &mut String, e: &Event, name: &str, parent: &str) {
    if e.kind == Kind::Function && e.dur_ns == 0 {
        chrome_function_head(out, name, e.ctx);
        push_us(out, e.ts_ns);
        chrome_function_tail(out, e.cpu, parent);
        return;
    }
    out.push_str("{\"name\":");
    json_str(out, if e.kind == Kind::Function { name } else { e.kind.name() });
    out.push_str(",\"cat\":\"");
    out.push_str(ctx_name(e.ctx));
    out.push('"');
    if e.dur_ns > 0 {
        out.push_str(",\"ph\":\"X\",\"ts\":");
        push_us(out, e.ts_ns.saturating_sub(e.dur_ns));
        out.push_str(",\"dur\":");
        push_us(out, e.dur_ns);
    } else {
        out.push_str(",\"ph\":\"i\",\"s\":\"t\",\"ts\":");
        push_us(out, e.ts_ns);
    }
    out.push_str(",\"pid\":0,\"tid\":");
    push_dec(out, e.cpu as u64, 0, b' ');
    out.push_str(",\"args\":{");
    match e.kind {
        Kind::Function => {
            out.push_str("\"parent\":");
            json_str(out, parent);
        }
        k => {
            out.push('"');
            out.push_str(arg_name(k));
            out.push_str("\":");
            push_dec(out, e.arg, 0, b' ');
        }
    }
    out.push_str("}}");
}

/// Nanoseconds as microseconds with three decimals (Chrome's `ts`).
pub fn push_us(out: &mut String, ns: u64) {
    push_dec(out, ns / 1000, 0, b' ');
    out.push('.');
    push_dec(out, ns % 1000, 3, b'0');
}

/// A function instant's Chrome JSON up to its time:
/// `{"name":"f","cat":"task","ph":"i","s":"t","ts":`.
pub fn chrome_function_head(out: &mut String, name: &str, ctx: u8) {
    out.push_str("{\"name\":");
    json_str(out, name);
    out.push_str(",\"cat\":\"");
    out.push_str(ctx_name(ctx));
    out.push_str("\",\"ph\":\"i\",\"s\":\"t\",\"ts\":");
}

/// A function instant's Chrome JSON after its time:
/// `,"pid":0,"tid":1,"args":{"parent":"g"}}`.
pub fn chrome_function_tail(out: &mut String, cpu: u16, parent: &str) {
    out.push_str(",\"pid\":0,\"tid\":");
    push_dec(out, cpu as u64, 0, b' ');
    out.push_str(",\"args\":{\"parent\":");
    json_str(out, parent);
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

/// A Prometheus label value: backslash, double quote and line feed escaped
/// (the text exposition format).
pub fn label_value(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
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

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label_value("a\\b\"c\nd"), "a\\\\b\\\"c\\nd");
        assert_eq!(label_value("ipi-broadcast (fallback: x)"), "ipi-broadcast (fallback: x)");
    }

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

    /// The head built in place and the general way, at and past the edges
    /// of its columns, read the same as `core::fmt` writes them.
    #[test]
    fn line_heads_as_core_fmt_writes_them() {
        for cpu in [0u16, 7, 999, 1000, 65535] {
            for ctx in 0..4u8 {
                for ts_ns in [0u64, 999, 1_000, 999_999_999, 1_000_000_000, 999_999_999_999_999, 1_000_000_000_000_000, u64::MAX] {
                    let e = Event { cpu, ctx, ts_ns, ..ev() };
                    let mut s = String::new();
                    ftrace_head(&mut s, &e);
                    let want = std::format!("  [{cpu:03}] {:<4} {:6}.{:06}: ", ["task", "irq", "nmi", "?"][ctx as usize], ts_ns / 1_000_000_000, ts_ns / 1000 % 1_000_000);
                    assert_eq!(s, want);
                }
            }
        }
    }

    #[test]
    fn numbers_as_core_fmt_writes_them() {
        for v in [0u64, 1, 9, 10, 999, 1000, 123_456, 9_999_999, u32::MAX as u64, u64::MAX] {
            for (width, fill) in [(0, b' '), (3, b'0'), (6, b' '), (6, b'0'), (20, b'0'), (25, b' '), (25, b'0')] {
                let mut s = String::new();
                push_dec(&mut s, v, width, fill);
                let want = if fill == b'0' { std::format!("{v:0width$}") } else { std::format!("{v:width$}") };
                assert_eq!(s, want, "{v} in {width} filled with {:?}", fill as char);
            }
            let mut s = String::new();
            push_hex(&mut s, v);
            assert_eq!(s, std::format!("{v:#x}"));
        }
        let mut s = String::new();
        ftrace_line(&mut s, &Event { cpu: 1234, ctx: 9, ts_ns: 1_234_567_000_000_001, ..ev() }, Some("f"), Some("g"));
        assert_eq!(s, "  [1234] ?    1234567.000000: f <-g\n", "wider than the columns, an unknown context");
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
    fn json_strings_round_trip() {
        for text in ["", "plain", "é<core::fmt::Write>\u{1f}\"\\end", "\u{7f}ü\n\t"] {
            let mut s = String::new();
            json_str(&mut s, text);
            assert_eq!(serde_json::from_str::<std::string::String>(&s).unwrap(), text, "{s}");
        }
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
