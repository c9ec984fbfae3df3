//! `GET /trace` and `/trace.json`: every CPU's rings (task, irq and nmi
//! context) read from the oldest event kept and merged by timestamp, as
//! ftrace-style lines with `CPU:N [LOST K EVENTS]` markers where the loss
//! happened (overwritten events before the first line of their CPU, events
//! overwritten while reading where they were, dropped ones after the last),
//! or as Chrome/Perfetto trace events; with `follow` the snapshot keeps
//! extending to what was written since, like trace_pipe. The trailer keeps
//! the books: lines kept + events lost = events produced. Pure logic over the
//! rings, host-tested; the network service sends the lines.

use alloc::string::String;
use alloc::vec::Vec;

use super::encode;
use super::ring::{CpuRings, Event, Kind};

/// The function an address is in (the embedded symbol table on the machine).
pub type Symbolizer = fn(u64) -> Option<&'static str>;

/// One ring's place in the merge.
struct Cursor {
    cpu: usize,
    ctx: usize,
    /// Next index to read, and the end of the snapshot.
    pos: u64,
    end: u64,
    /// Events read ahead, oldest first; `next` is the one to merge next.
    ahead: Vec<Event>,
    next: usize,
    /// Events the writer had dropped when they were last accounted.
    dropped: u64,
}

/// Events read from a ring at a time: one ring read serves several lines.
const READ_AHEAD: usize = 16;
/// The timestamp of a cursor with nothing read ahead (the merge skips it).
const NO_EVENT: u64 = u64::MAX;

/// Lines made at a time for `fill`: fewer, larger sends.
const BATCH: usize = 4096;
/// Addresses the symbol cache remembers (a power of two: a slot is the top
/// bits of a multiplicative hash).
const CACHED_SYMBOLS: usize = 1024;
const _: () = assert!(CACHED_SYMBOLS.is_power_of_two());

/// The slot of `key` in a direct-mapped cache of `slots` (a power of two)
/// entries. Fibonacci hashing (Knuth, TAOCP vol. 3 §6.4): the top bits of
/// key * 2^64/phi.
fn slot_of(key: u64, slots: usize) -> usize {
    debug_assert!(slots.is_power_of_two());
    (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - slots.trailing_zeros())) as usize
}

/// The symbolizer's recent answers, direct-mapped by address: a trace names
/// the same few functions and return addresses over and over, and each
/// symbol-table lookup is a binary search over every symbol.
struct SymbolCache {
    slots: Vec<(u64, Option<&'static str>)>,
    symbol: Symbolizer,
}

impl SymbolCache {
    fn new(symbol: Symbolizer) -> SymbolCache {
        // u64::MAX never needs a name: an empty slot.
        SymbolCache { slots: alloc::vec![(u64::MAX, None); CACHED_SYMBOLS], symbol }
    }

    fn name(&mut self, addr: u64) -> Option<&'static str> {
        let slot = &mut self.slots[slot_of(addr, CACHED_SYMBOLS)];
        if slot.0 != addr {
            *slot = (addr, (self.symbol)(addr));
        }
        slot.1
    }
}

/// Parts of lines made last, direct-mapped by a pair of numbers: a trace
/// repeats the same few calls, and a part made once is one copy after that.
/// The text form caches function lines' bodies (`func <-parent` and the
/// newline) by (address, return address); the JSON form the part of a
/// function event before its time by (address, context) and the part after
/// by (return address, CPU).
const CACHED_PARTS: usize = 256;
const _: () = assert!(CACHED_PARTS.is_power_of_two());

struct PartCache {
    slots: Vec<Option<(u64, u64, String)>>,
}

impl PartCache {
    fn new() -> PartCache {
        PartCache { slots: alloc::vec![None; CACHED_PARTS] }
    }

    /// The part for `key`, made by `make` (into an empty string) when not cached.
    fn get(&mut self, key: (u64, u64), make: impl FnOnce(&mut String)) -> &str {
        let slot = &mut self.slots[slot_of(key.0 ^ key.1.rotate_left(32), CACHED_PARTS)];
        if !matches!(slot, Some((a, b, _)) if (*a, *b) == key) {
            let mut t = slot.take().map(|(_, _, t)| t).unwrap_or_default();
            t.clear();
            make(&mut t);
            *slot = Some((key.0, key.1, t));
        }
        slot.as_ref().map_or("", |(_, _, t)| t)
    }
}

/// A trace download in progress.
pub struct TraceStream<'r> {
    rings: &'r [CpuRings],
    cursors: Vec<Cursor>,
    /// Per cursor, the timestamp of its next event (`NO_EVENT`): the merge
    /// picks the smallest from this dense array.
    heads: Vec<u64>,
    /// Cursors whose events read ahead are all merged and whose ring may
    /// hold more: read again before the next pick (the last one first).
    refill: Vec<usize>,
    /// Bytes produced; those from `sent` on are not sent yet.
    pending: Vec<u8>,
    sent: usize,
    lost_total: u64,
    /// Events produced up to the snapshot (extended when following), and event lines sent.
    produced_total: u64,
    kept_total: u64,
    /// Per CPU: dropped events to report after its last line.
    lost_at_end: Vec<u64>,
    /// Chrome/Perfetto trace-event JSON instead of text lines.
    json: bool,
    first: bool,
    /// `?follow=1`: keep streaming new events until the client leaves.
    follow: bool,
    symbols: SymbolCache,
    /// Line parts (`PartCache`): text bodies, or JSON heads and tails.
    parts: PartCache,
    json_tails: PartCache,
    /// The trailer is in `pending`: once that drains, the body is complete.
    ended: bool,
}

impl<'r> TraceStream<'r> {
    /// A snapshot of `rings` as they are now, its header already pending.
    pub fn new(rings: &'r [CpuRings], json: bool, follow: bool, symbol: Symbolizer) -> TraceStream<'r> {
        let mut cursors = Vec::new();
        let (mut lost_at_start, mut lost_at_end) = (alloc::vec![0u64; rings.len()], alloc::vec![0u64; rings.len()]);
        let mut produced_total = 0;
        for (cpu, cr) in rings.iter().enumerate() {
            for (ctx, r) in cr.rings.iter().enumerate() {
                let a = r.account();
                produced_total += a.produced();
                lost_at_start[cpu] += a.overwritten;
                lost_at_end[cpu] += a.dropped;
                cursors.push(Cursor { cpu, ctx, pos: a.written.saturating_sub(r.capacity()), end: a.written, ahead: Vec::new(), next: 0, dropped: a.dropped });
            }
        }
        let mut pending = Vec::new();
        if json {
            pending.extend_from_slice(b"{\"displayTimeUnit\":\"ns\",\"traceEvents\":[\n");
            // Metadata events: the process and one named track per CPU
            // (Chrome trace event format, "M" phase; Perfetto shows the names).
            pending.extend_from_slice(b"{\"name\":\"process_name\",\"ph\":\"M\",\"pid\":0,\"args\":{\"name\":\"trace appliance\"}}");
            for cpu in 0..rings.len() {
                let m = alloc::format!(",\n{{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":0,\"tid\":{cpu},\"args\":{{\"name\":\"cpu {cpu}\"}}}}");
                pending.extend_from_slice(m.as_bytes());
            }
        } else {
            pending.extend_from_slice(b"# tracer: function (trace appliance)\n#  CPU  CTX     TIMESTAMP  FUNCTION <-PARENT\n");
        }
        let (heads, refill) = (alloc::vec![NO_EVENT; cursors.len()], (0..cursors.len()).rev().collect());
        let mut t = TraceStream { rings, cursors, heads, refill, pending, sent: 0, lost_total: 0, produced_total, kept_total: 0, lost_at_end, json, first: !json, follow, symbols: SymbolCache::new(symbol), parts: PartCache::new(), json_tails: PartCache::new(), ended: false };
        for (cpu, n) in lost_at_start.into_iter().enumerate() {
            t.lost(cpu, n);
        }
        t
    }

    /// Count `n` events of `cpu` lost here, with a marker in the text form.
    fn lost(&mut self, cpu: usize, n: u64) {
        if n == 0 {
            return;
        }
        self.lost_total += n;
        if !self.json {
            let mut l = String::new();
            encode::lost_line(&mut l, cpu, n);
            self.pending.extend_from_slice(l.as_bytes());
        }
    }

    /// The stream follows new events (it ends only when the client leaves).
    pub fn follow(&self) -> bool {
        self.follow
    }

    /// The next line(s) (None when the snapshot is exhausted; when following,
    /// the snapshot is extended to what was written since and the next call
    /// goes on). Call it once `pending` has been sent.
    pub fn next_line(&mut self) -> Option<String> {
        let mut line = String::new();
        self.next_into(&mut line).then_some(line)
    }

    /// `next_line`, appended to `out`; false when there was none.
    fn next_into(&mut self, out: &mut String) -> bool {
        // Read ahead where the events read are used up; report overwritten
        // ones as lost where they were (before the events read after them).
        while let Some(&k) = self.refill.last() {
            let c = &mut self.cursors[k];
            if c.next < c.ahead.len() || c.pos >= c.end {
                self.heads[k] = c.ahead.get(c.next).map_or(NO_EVENT, |e| e.ts_ns);
                self.refill.pop();
                continue;
            }
            // At most what is left (a short ring keeps a short buffer).
            let want = READ_AHEAD.min((c.end - c.pos) as usize);
            c.ahead.clear();
            c.ahead.reserve_exact(want);
            c.next = 0;
            let ahead = &mut c.ahead;
            let st = self.rings[c.cpu].rings[c.ctx].read_some(c.pos, c.end, want, |_, e| ahead.push(e));
            c.pos = st.next;
            if st.lost > 0 {
                let cpu = c.cpu;
                self.lost(cpu, st.lost);
                out.push_str(&self.take_pending());
                return true;
            }
        }
        // The oldest event read ahead (the first cursor's on a tie); one at
        // NO_EVENT's own time comes last, found by the search for any left.
        let (mut i, mut oldest) = (usize::MAX, NO_EVENT);
        for (k, &ts) in self.heads.iter().enumerate() {
            if ts < oldest {
                (i, oldest) = (k, ts);
            }
        }
        if i == usize::MAX {
            i = self.cursors.iter().position(|c| c.next < c.ahead.len()).unwrap_or(usize::MAX);
        }
        if i == usize::MAX {
            if self.follow {
                // Everything up to the snapshot is out: extend it to what was
                // written since, and report what was dropped since.
                for k in 0..self.cursors.len() {
                    let c = &mut self.cursors[k];
                    let a = self.rings[c.cpu].rings[c.ctx].account();
                    let dropped = a.dropped - c.dropped;
                    self.produced_total += (a.written - c.end) + dropped;
                    (c.end, c.dropped) = (a.written, a.dropped);
                    let cpu = c.cpu;
                    self.lost(cpu, dropped);
                }
                self.refill.extend((0..self.cursors.len()).rev());
            } else {
                for cpu in 0..self.lost_at_end.len() {
                    let n = core::mem::take(&mut self.lost_at_end[cpu]);
                    self.lost(cpu, n);
                }
            }
            let any = !self.pending.is_empty();
            out.push_str(&self.take_pending());
            return any;
        }
        let c = &mut self.cursors[i];
        let e = c.ahead[c.next];
        c.next += 1;
        match c.ahead.get(c.next) {
            Some(n) => self.heads[i] = n.ts_ns,
            None => {
                self.heads[i] = NO_EVENT;
                self.refill.push(i);
            }
        }
        self.kept_total += 1;
        let symbols = &mut self.symbols;
        if self.json {
            // One Chrome trace event: an instant event per traced call, thread = CPU.
            if !self.first {
                out.push_str(",\n");
            }
            self.first = false;
            // Outside every function: the address, as the text trace shows it.
            let mut name_of = |addr: u64, shown: u64, s: &mut String| match symbols.name(addr) {
                Some(n) => s.push_str(n),
                None => encode::push_hex(s, shown),
            };
            if e.kind == Kind::Function && e.dur_ns == 0 {
                // `chrome_event`'s instant, from its two cached parts.
                out.push_str(self.parts.get((e.ip, e.ctx as u64), |s| {
                    let mut name = String::new();
                    name_of(e.ip, e.ip, &mut name);
                    encode::chrome_function_head(s, &name, e.ctx);
                }));
                encode::push_us(out, e.ts_ns);
                out.push_str(self.json_tails.get((e.parent, e.cpu as u64), |s| {
                    let mut parent = String::new();
                    name_of(e.parent.wrapping_sub(1), e.parent, &mut parent);
                    encode::chrome_function_tail(s, e.cpu, &parent);
                }));
            } else {
                // Other kinds are named by their kind, and have no parent.
                let (mut name, mut parent) = (String::new(), String::new());
                if e.kind == Kind::Function {
                    name_of(e.ip, e.ip, &mut name);
                    name_of(e.parent.wrapping_sub(1), e.parent, &mut parent);
                }
                encode::chrome_event(out, &e, &name, &parent);
            }
        } else if e.kind == Kind::Function {
            encode::ftrace_head(out, &e);
            out.push_str(self.parts.get((e.ip, e.parent), |s| encode::function_tail(s, &e, symbols.name(e.ip), symbols.name(e.parent.wrapping_sub(1)))));
        } else {
            encode::ftrace_line(out, &e, None, None);
        }
        true
    }

    /// Lines produced by the accounting (markers), as one string.
    fn take_pending(&mut self) -> String {
        String::from_utf8(core::mem::take(&mut self.pending)).unwrap_or_default()
    }

    /// Bytes produced and not sent yet.
    pub fn unsent(&self) -> usize {
        self.pending.len() - self.sent
    }

    /// Move up to `budget` bytes into the connection through `send` (which
    /// takes what fits and returns how many bytes it took): lines made
    /// `BATCH` bytes at a time, then the trailer, each only ever taken from
    /// `pending`, so a send buffer that is full when the snapshot ends loses
    /// nothing (the trailer waits like any line). Returns (the body is
    /// complete, bytes taken).
    pub fn fill(&mut self, budget: usize, mut send: impl FnMut(&[u8]) -> usize) -> (bool, usize) {
        let mut accepted = 0;
        while accepted < budget {
            if self.unsent() == 0 {
                self.pending.clear();
                self.sent = 0;
                if self.ended {
                    break;
                }
                self.produce();
                if self.pending.is_empty() {
                    // Following: nothing new yet, try again next poll.
                    break;
                }
            }
            let end = self.pending.len().min(self.sent + budget - accepted);
            let n = send(&self.pending[self.sent..end]);
            accepted += n;
            self.sent += n;
            if self.sent < end {
                break;
            }
        }
        (self.ended && self.unsent() == 0, accepted)
    }

    /// Lines into `pending` up to `BATCH` bytes; the trailer after the last.
    /// (`next_line` leaves its loss markers in `pending`: it is empty here.)
    fn produce(&mut self) {
        // Empty: its allocation is reused.
        let mut out = String::from_utf8(core::mem::take(&mut self.pending)).unwrap_or_default();
        while out.len() < BATCH {
            if !self.next_into(&mut out) {
                if !self.follow {
                    out.push_str(&self.trailer());
                    self.ended = true;
                }
                break;
            }
        }
        self.pending = out.into_bytes();
    }

    /// What ends the download: the books (kept + lost = produced).
    pub fn trailer(&self) -> String {
        if self.json {
            alloc::format!(
                "\n],\"otherData\":{{\"lost_events\":{},\"kept_events\":{},\"produced_events\":{}}}}}\n",
                self.lost_total, self.kept_total, self.produced_total
            )
        } else {
            alloc::format!("# end of snapshot, {} events lost, {} kept, {} produced\n", self.lost_total, self.kept_total, self.produced_total)
        }
    }
}

/// The books of a text download as a client reads them back: event lines,
/// the total of the `[LOST N EVENTS]` markers, and the trailer's figures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TextBooks {
    pub event_lines: u64,
    pub marked_lost: u64,
    pub lost: u64,
    pub kept: u64,
    pub produced: u64,
}

impl TextBooks {
    /// Read a whole `/trace` download (None without its trailer).
    pub fn read(text: &str) -> Option<TextBooks> {
        let event_lines = text.lines().filter(|l| l.starts_with("  [")).count() as u64;
        let marked_lost = text.lines().filter_map(|l| l.split("[LOST ").nth(1)?.split(' ').next()?.parse::<u64>().ok()).sum();
        let t = text.lines().last()?.strip_prefix("# end of snapshot, ")?;
        let n: Vec<u64> = t.split(|c: char| !c.is_ascii_digit()).filter_map(|w| w.parse().ok()).collect();
        let [lost, kept, produced] = n[..] else { return None };
        Some(TextBooks { event_lines, marked_lost, lost, kept, produced })
    }

    /// Every line and marker is in the trailer, and kept + lost = produced.
    pub fn balanced(&self) -> bool {
        self.event_lines == self.kept && self.marked_lost == self.lost && self.kept + self.lost == self.produced
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::ring::{Kind, Overflow};

    fn ev(ts: u64, cpu: u16, ctx: u8) -> Event {
        Event { ts_ns: ts, tsc: ts, ip: 0x1000 + ts, parent: 0x2001, kind: Kind::Function, ctx, cpu, arg: 0, dur_ns: 0 }
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
        assert_eq!(lines[3], "# end of snapshot, 0 events lost, 3 kept, 3 produced");
    }

    /// Many rings, each longer than a read-ahead, with timestamps that
    /// interleave and tie, and more (function, caller) pairs than the line
    /// cache holds: the lines are the events sorted by time (ties in ring
    /// order), each naming its own function and caller.
    #[test]
    fn a_long_merge_is_a_sort_and_every_line_names_its_own_call() {
        fn many(addr: u64) -> Option<&'static str> {
            const NAMES: [&str; 7] = ["f0", "f1", "f2", "f3", "f4", "f5", "f6"];
            (addr < 0x9000).then(|| NAMES[(addr % 7) as usize])
        }
        let rings: Vec<CpuRings> = (0..3).map(|_| CpuRings::new([128, 128, 128], Overflow::Overwrite)).collect();
        let mut all: Vec<(usize, Event)> = Vec::new();
        for (k, cr) in rings.iter().enumerate() {
            for (ctx, r) in cr.rings.iter().enumerate() {
                let (mut ts, step) = (k as u64, 1 + ((k * 3 + ctx) % 5) as u64);
                for _ in 0..(40 + 30 * ctx) {
                    ts += step;
                    // 211 functions and 50 callers, each on every CPU and
                    // in every context; some outside every symbol.
                    let n = all.len() as u64;
                    let (ip, parent) = (0x1000 + n % 211 * 200, n % 50 * 900 + 1);
                    let e = Event { ts_ns: ts * 1000, ip, parent, ..ev(0, k as u16, ctx as u8) };
                    r.push(&e);
                    all.push((k * 3 + ctx, e));
                }
            }
        }
        all.sort_by_key(|&(ring, e)| (e.ts_ns, ring));
        let text = drain(&mut TraceStream::new(&rings, false, false, many));
        let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("  [")).collect();
        assert_eq!(lines.len(), all.len());
        let mut pairs = std::collections::HashSet::new();
        for (l, (_, e)) in lines.iter().zip(&all) {
            let name = many(e.ip).map_or(format!("{:#x}", e.ip), String::from);
            let parent = many(e.parent - 1).map_or(format!("{:#x}", e.parent), String::from);
            let want = format!("  [{:03}] {:<4} {:6}.{:06}: {name} <-{parent}", e.cpu, ["task", "irq", "nmi"][e.ctx as usize], e.ts_ns / 1_000_000_000, e.ts_ns / 1000 % 1_000_000);
            assert_eq!(*l, want);
            pairs.insert((e.ip, e.parent));
        }
        assert!(pairs.len() > CACHED_PARTS, "the line cache is made to evict ({} pairs)", pairs.len());
        // The same in Chrome JSON, read back by a JSON parser.
        let json: serde_json::Value = serde_json::from_str(&drain(&mut TraceStream::new(&rings, true, false, many))).unwrap();
        let events: Vec<&serde_json::Value> = json["traceEvents"].as_array().unwrap().iter().filter(|v| v["ph"] == "i").collect();
        assert_eq!(events.len(), all.len());
        for (v, (_, e)) in events.iter().zip(&all) {
            let name = many(e.ip).map_or(format!("{:#x}", e.ip), String::from);
            let parent = many(e.parent - 1).map_or(format!("{:#x}", e.parent), String::from);
            assert_eq!((v["name"].as_str(), v["args"]["parent"].as_str()), (Some(name.as_str()), Some(parent.as_str())), "{v}");
            assert_eq!((v["tid"].as_u64(), v["cat"].as_str()), (Some(e.cpu as u64), Some(["task", "irq", "nmi"][e.ctx as usize])), "{v}");
            assert_eq!(v["ts"].as_f64(), Some(e.ts_ns as f64 / 1000.0), "{v}");
        }
    }

    #[test]
    fn an_event_at_the_end_of_time_is_still_a_line() {
        let rings: Vec<CpuRings> = (0..2).map(|_| CpuRings::new([8, 4, 4], Overflow::Overwrite)).collect();
        rings[0].rings[0].push(&Event { ts_ns: u64::MAX, ..ev(1, 0, 0) });
        rings[1].rings[0].push(&ev(5, 1, 0));
        let b = TextBooks::read(&drain(&mut TraceStream::new(&rings, false, false, names))).unwrap();
        assert_eq!((b.event_lines, b.kept, b.produced), (2, 2, 2));
    }

    #[test]
    fn json_is_one_document() {
        let rings: Vec<CpuRings> = (0..1).map(|_| CpuRings::new([8, 4, 4], Overflow::Overwrite)).collect();
        rings[0].rings[0].push(&ev(1, 0, 0));
        rings[0].rings[0].push(&ev(2, 0, 0));
        let text = drain(&mut TraceStream::new(&rings, true, false, names));
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        // The process name, one track name per CPU, then the events.
        assert_eq!(v["traceEvents"].as_array().unwrap().len(), 1 + 1 + 2);
        assert_eq!(v["traceEvents"][1]["args"]["name"], "cpu 0");
        assert_eq!(v["traceEvents"][1]["ph"], "M");
        assert_eq!(v["otherData"]["lost_events"], 0);
        assert_eq!(v["otherData"]["produced_events"], 2);
        assert_eq!(v["traceEvents"][2]["args"]["parent"], "caller");
        // A parent outside every function (the symbolizer knows none): its address.
        rings[0].rings[0].push(&Event { parent: 0x9001, ..ev(3, 0, 0) });
        let text = drain(&mut TraceStream::new(&rings, true, false, names));
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["traceEvents"][4]["args"]["parent"], "0x9001");
    }

    #[test]
    fn the_symbol_cache_asks_once_per_address_and_keeps_answers_apart() {
        use core::sync::atomic::{AtomicUsize, Ordering};
        static ASKED: AtomicUsize = AtomicUsize::new(0);
        fn counted(addr: u64) -> Option<&'static str> {
            ASKED.fetch_add(1, Ordering::Relaxed);
            names(addr)
        }
        let mut c = SymbolCache::new(counted);
        for _ in 0..100 {
            assert_eq!(c.name(0x1000), names(0x1000));
            assert_eq!(c.name(0x9001), names(0x9001));
        }
        assert_eq!(ASKED.load(Ordering::Relaxed), 2, "two addresses, two lookups");
        // Addresses that share a slot evict each other but never get each other's name.
        for a in (0..5000u64).map(|i| 0x1000 + i * 0x40) {
            assert_eq!(c.name(a), names(a), "{a:#x}");
        }
        assert_eq!(c.name(u64::MAX), None, "the empty-slot marker, where no symbol is, answers none");
    }

    /// The connection's send buffer is full exactly when the snapshot's last
    /// line has gone: the trailer waits in `pending` and goes once there is
    /// room, and the body is complete only then (a trailer sent into a full
    /// buffer used to be lost, ending /trace.json mid-document).
    #[test]
    fn a_full_send_buffer_at_the_end_loses_no_trailer() {
        let rings: Vec<CpuRings> = (0..2).map(|_| CpuRings::new([8, 4, 4], Overflow::Overwrite)).collect();
        for i in 0..6 {
            rings[(i % 2) as usize].rings[0].push(&ev(10 + i, (i % 2) as u16, 0));
        }
        for json in [true, false] {
            let want = drain(&mut TraceStream::new(&rings, json, false, names));
            let mut t = TraceStream::new(&rings, json, false, names);
            let (mut body, mut polls, mut refused) = (Vec::new(), 0, false);
            loop {
                polls += 1;
                // A send buffer that takes 50 bytes a poll, and none on the
                // first poll after the trailer was queued.
                let full = t.ended && t.unsent() > 0 && !refused;
                refused |= full;
                let mut room = if full { 0 } else { 50 };
                let (done, n) = t.fill(4096, |b| {
                    let k = b.len().min(room);
                    room -= k;
                    body.extend_from_slice(&b[..k]);
                    k
                });
                assert!(n <= 50);
                if done {
                    break;
                }
                assert!(polls < 10_000, "never done");
            }
            assert!(refused, "the buffer was never full with the trailer pending");
            assert_eq!(String::from_utf8(body).unwrap(), want, "json={json}");
            if json {
                serde_json::from_str::<serde_json::Value>(&want).unwrap();
            }
        }
        // A send buffer with no room at all: nothing is lost, nothing is done.
        let mut t = TraceStream::new(&rings, true, false, names);
        for _ in 0..5 {
            assert_eq!(t.fill(4096, |_| 0), (false, 0));
        }
    }

    #[test]
    fn following_picks_up_what_was_written_since() {
        let rings: Vec<CpuRings> = (0..1).map(|_| CpuRings::new([8, 4, 4], Overflow::Overwrite)).collect();
        rings[0].rings[0].push(&ev(1, 0, 0));
        let mut t = TraceStream::new(&rings, false, true, names);
        t.pending.clear(); // the header, which the service sends first
        assert!(t.next_line().is_some());
        assert!(t.next_line().is_none(), "nothing new yet");
        rings[0].rings[0].push(&ev(2, 0, 0));
        // The poll that finds nothing extends the snapshot; a later one sends the event.
        let line = (0..2).find_map(|_| t.next_line()).expect("the new event is streamed");
        assert!(line.contains("0.000000: traced"), "{line}");
        assert!(t.follow());
    }

    #[test]
    fn every_lost_event_is_marked_and_the_books_balance() {
        for mode in [Overflow::Overwrite, Overflow::Drop] {
            let rings: Vec<CpuRings> = (0..2).map(|_| CpuRings::new([4, 2, 2], mode)).collect();
            for n in 0..10 {
                rings[0].rings[0].push(&ev(100 + n, 0, 0));
            }
            for n in 0..5 {
                rings[1].rings[2].push(&ev(50 + n, 1, 2));
            }
            let text = drain(&mut TraceStream::new(&rings, false, false, names));
            let b = TextBooks::read(&text).unwrap();
            assert_eq!(b, TextBooks { event_lines: 6, marked_lost: 9, lost: 9, kept: 6, produced: 15 }, "{mode:?}\n{text}");
            assert!(b.balanced());
            let unmarked: String = text.lines().filter(|l| !l.starts_with("CPU:1 ")).map(|l| format!("{l}\n")).collect();
            assert!(!TextBooks::read(&unmarked).unwrap().balanced(), "a missing marker unbalances the books");
            let first_cpu0 = text.lines().position(|l| l.starts_with("  [000]")).unwrap();
            let marker_cpu0 = text.lines().position(|l| l == "CPU:0 [LOST 6 EVENTS]").unwrap();
            match mode {
                // Overwritten: older than the first line kept; dropped: newer than the last.
                Overflow::Overwrite => assert!(marker_cpu0 < first_cpu0, "{text}"),
                Overflow::Drop => assert!(marker_cpu0 > first_cpu0, "{text}"),
            }
        }
    }

    #[test]
    fn a_concurrent_writer_never_unbalances_the_books() {
        use std::sync::Arc;
        for mode in [Overflow::Overwrite, Overflow::Drop] {
            let rings: Arc<Vec<CpuRings>> = Arc::new((0..1).map(|_| CpuRings::new([16, 4, 4], mode)).collect());
            let w = {
                let rings = rings.clone();
                std::thread::spawn(move || {
                    for n in 0..200_000u64 {
                        rings[0].rings[(n % 3) as usize].push(&ev(n, 0, (n % 3) as u8));
                    }
                })
            };
            let mut downloads = 0;
            while !w.is_finished() || downloads == 0 {
                let text = drain(&mut TraceStream::new(&rings, false, false, names));
                let b = TextBooks::read(&text).unwrap();
                assert!(b.balanced(), "{mode:?}: {b:?}\n{text}");
                downloads += 1;
            }
            w.join().unwrap();
        }
    }
}
