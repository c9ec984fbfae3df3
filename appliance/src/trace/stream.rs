//! `GET /trace` and `/trace.json`: every CPU's rings (task, irq and nmi
//! context) read from the oldest event kept and merged by timestamp, as
//! ftrace-style lines with `[LOST N EVENTS]` markers or as Chrome/Perfetto
//! trace events; with `follow` the snapshot keeps extending to what was
//! written since, like trace_pipe. Pure logic over the rings, host-tested;
//! the network service sends the lines.

use alloc::string::String;
use alloc::vec::Vec;

use super::encode;
use super::ring::{CpuRings, Event};

/// The function an address is in (the embedded symbol table on the machine).
pub type Symbolizer = fn(u64) -> Option<&'static str>;

/// One ring's place in the merge.
struct Cursor {
    cpu: usize,
    ctx: usize,
    /// Next index to read, and the end of the snapshot.
    pos: u64,
    end: u64,
    /// The event read ahead.
    ahead: Option<Event>,
}

/// A trace download in progress.
pub struct TraceStream<'r> {
    rings: &'r [CpuRings],
    cursors: Vec<Cursor>,
    /// Bytes produced but not sent yet (the service drains it).
    pub pending: Vec<u8>,
    lost_total: u64,
    /// Chrome/Perfetto trace-event JSON instead of text lines.
    json: bool,
    first: bool,
    /// `?follow=1`: keep streaming new events until the client leaves.
    follow: bool,
    symbol: Symbolizer,
}

impl<'r> TraceStream<'r> {
    /// A snapshot of `rings` as they are now, its header already pending.
    pub fn new(rings: &'r [CpuRings], json: bool, follow: bool, symbol: Symbolizer) -> TraceStream<'r> {
        let mut cursors = Vec::new();
        for (cpu, cr) in rings.iter().enumerate() {
            for (ctx, r) in cr.rings.iter().enumerate() {
                let end = r.written();
                cursors.push(Cursor { cpu, ctx, pos: end.saturating_sub(r.capacity()), end, ahead: None });
            }
        }
        let mut pending = Vec::new();
        if json {
            pending.extend_from_slice(b"{\"displayTimeUnit\":\"ns\",\"traceEvents\":[\n");
        } else {
            pending.extend_from_slice(b"# tracer: function (trace appliance)\n#  CPU  CTX     TIMESTAMP  FUNCTION <-PARENT\n");
        }
        TraceStream { rings, cursors, pending, lost_total: 0, json, first: true, follow, symbol }
    }

    /// The stream follows new events (it ends only when the client leaves).
    pub fn follow(&self) -> bool {
        self.follow
    }

    /// The next line (None when the snapshot is exhausted; when following,
    /// the snapshot is extended to what was written since and the next call
    /// goes on).
    pub fn next_line(&mut self) -> Option<String> {
        // Read ahead one event per ring; report overwritten ones as lost.
        for c in self.cursors.iter_mut() {
            while c.ahead.is_none() && c.pos < c.end {
                let mut got = None;
                let st = self.rings[c.cpu].rings[c.ctx].read(c.pos, 1, |_, e| got = Some(e));
                c.pos = st.next.max(c.pos + 1).min(c.end);
                if st.lost > 0 {
                    self.lost_total += st.lost;
                    if !self.json {
                        let mut l = String::new();
                        encode::lost_line(&mut l, c.cpu, st.lost);
                        return Some(l);
                    }
                }
                c.ahead = got;
            }
        }
        let Some(i) = self.cursors.iter().enumerate().filter_map(|(i, c)| c.ahead.map(|e| (i, e.ts_ns))).min_by_key(|&(_, ts)| ts).map(|(i, _)| i) else {
            if self.follow {
                // Everything up to the snapshot is out: extend it to what was written since.
                for c in self.cursors.iter_mut() {
                    c.end = self.rings[c.cpu].rings[c.ctx].written();
                }
            }
            return None;
        };
        let e = self.cursors[i].ahead.take()?;
        let (name, parent) = ((self.symbol)(e.ip), (self.symbol)(e.parent.wrapping_sub(1)));
        let mut line = String::new();
        if self.json {
            // One Chrome trace event: an instant event per traced call, thread = CPU.
            if !self.first {
                line.push_str(",\n");
            }
            self.first = false;
            encode::chrome_event(&mut line, &e, name.unwrap_or("?"), parent.unwrap_or("?"));
        } else {
            encode::ftrace_line(&mut line, &e, name, parent);
        }
        Some(line)
    }

    /// What ends the download: the lost-event total.
    pub fn trailer(&self) -> String {
        if self.json {
            alloc::format!("\n],\"otherData\":{{\"lost_events\":{}}}}}\n", self.lost_total)
        } else {
            alloc::format!("# end of snapshot, {} events lost\n", self.lost_total)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::ring::{Kind, Overflow};

    fn ev(ts: u64, cpu: u16, ctx: u8) -> Event {
        Event { ts_ns: ts, tsc: ts, ip: 0x1000 + ts, parent: 0x2001, kind: Kind::Function, ctx, cpu, arg: 0 }
    }

    fn names(addr: u64) -> Option<&'static str> {
        match addr {
            0x2000 => Some("caller"),
            a if a > 0x1000 && a < 0x2000 => Some("traced"),
            _ => None,
        }
    }

    fn drain(t: &mut TraceStream<'_>) -> String {
        let mut out = String::from_utf8(core::mem::take(&mut t.pending)).unwrap();
        while let Some(l) = t.next_line() {
            out.push_str(&l);
        }
        out + &t.trailer()
    }

    #[test]
    fn lines_merge_every_ring_by_time() {
        let rings: Vec<CpuRings> = (0..2).map(|_| CpuRings::new([8, 4, 4], Overflow::Overwrite)).collect();
        rings[0].rings[0].push(&ev(30, 0, 0));
        rings[1].rings[2].push(&ev(10, 1, 2));
        rings[0].rings[1].push(&ev(20, 0, 1));
        let text = drain(&mut TraceStream::new(&rings, false, false, names));
        let lines: Vec<&str> = text.lines().skip(2).collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(lines[0].starts_with("  [001] nmi") && lines[0].ends_with("traced <-caller"), "{text}");
        assert!(lines[1].starts_with("  [000] irq") && lines[2].starts_with("  [000] task"), "{text}");
        assert_eq!(lines[3], "# end of snapshot, 0 events lost");
    }

    #[test]
    fn json_is_one_document() {
        let rings: Vec<CpuRings> = (0..1).map(|_| CpuRings::new([8, 4, 4], Overflow::Overwrite)).collect();
        rings[0].rings[0].push(&ev(1, 0, 0));
        rings[0].rings[0].push(&ev(2, 0, 0));
        let text = drain(&mut TraceStream::new(&rings, true, false, names));
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["traceEvents"].as_array().unwrap().len(), 2);
        assert_eq!(v["otherData"]["lost_events"], 0);
    }

    #[test]
    fn following_picks_up_what_was_written_since() {
        let rings: Vec<CpuRings> = (0..1).map(|_| CpuRings::new([8, 4, 4], Overflow::Overwrite)).collect();
        rings[0].rings[0].push(&ev(1, 0, 0));
        let mut t = TraceStream::new(&rings, false, true, names);
        assert!(t.next_line().is_some());
        assert!(t.next_line().is_none(), "nothing new yet");
        rings[0].rings[0].push(&ev(2, 0, 0));
        // The poll that finds nothing extends the snapshot; a later one sends the event.
        let line = (0..2).find_map(|_| t.next_line()).expect("the new event is streamed");
        assert!(line.contains("0.000000: traced"), "{line}");
        assert!(t.follow());
    }
}
