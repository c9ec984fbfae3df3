//! trace-cmd's `trace.dat`, version 6 (trace-cmd.dat.v6(5), as Debian's
//! trace-cmd 3.1.6 reads it), built from a snapshot of the per-CPU rings so
//! that `trace-cmd report` and KernelShark read the appliance's traces:
//!
//! - the initial format (magic, version, endianness, long size, page size);
//! - the header page and header event formats of Linux's ring buffer
//!   (`kernel/trace/ring_buffer.c`: `ring_buffer_print_page_header` and
//!   `ring_buffer_print_entry_header`), describing the pages below;
//! - no ftrace-system events, and one event system of our own, `appliance`,
//!   one format file per event kind (the layout of Linux's
//!   `events/<system>/<event>/format`, the common fields of `struct
//!   trace_entry` first);
//! - kallsyms from the embedded symbol table, so `%ps` prints names;
//! - saved cmdlines naming the "pids" we use: one per execution context
//!   (task, irq, nmi), so the context shows in every line and KernelShark
//!   draws one task per context;
//! - options: the trace clock and one CPU statistics text per CPU (what
//!   `trace-cmd report --stat` prints), with the overrun and dropped counts;
//! - "flyrecord": per CPU, page-aligned ring-buffer pages: a 16-byte page
//!   header (timestamp, commit) and events with 27-bit time deltas,
//!   time-extend records for longer gaps, and the "missed events" flag with
//!   the stored count on the first page of a CPU whose oldest events were
//!   overwritten, which `trace-cmd report` prints as `CPU:N [K EVENTS DROPPED]`.
//!
//! Pure logic, host-tested; the QEMU test reads a served snapshot with
//! `trace-cmd report` and compares it with the CTF snapshot.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write;

use super::encode::{arg_name, ctx_name};
use super::ring::{CpuRings, CpuSnapshot, Event, Kind};

/// The page size the file declares, and of the data pages.
pub const PAGE: usize = 4096;
/// Page header: `u64 timestamp` then `local_t commit` (a long: 8 bytes).
const PAGE_HEADER: usize = 16;
/// Event bytes a page holds.
const PAGE_DATA: usize = PAGE - PAGE_HEADER;
/// Flags in the commit word (Linux `RB_MISSED_EVENTS`, `RB_MISSED_STORED`):
/// events were lost before this page, and their count follows the data.
const MISSED_EVENTS: u64 = 1 << 31;
const MISSED_STORED: u64 = 1 << 30;
/// An event header: `type_len` (5 bits) and `time_delta` (27 bits).
const TS_BITS: u32 = 27;
/// `type_len` of a time-extend record (Linux `RINGBUF_TYPE_TIME_EXTEND`):
/// the delta's high bits follow in the next 4 bytes.
const TYPE_TIME_EXTEND: u32 = 30;
/// `struct trace_entry` flags (Linux `kernel/trace/trace.h`, `enum
/// trace_flag_type`): interrupts off, in a hard interrupt, in an NMI (Linux
/// sets the hard-interrupt flag in NMI context too).
const FLAG_IRQS_OFF: u8 = 0x01;
const FLAG_HARDIRQ: u8 = 0x08;
const FLAG_NMI: u8 = 0x40;
/// Event ids: `FIRST_ID + Kind`.
pub const FIRST_ID: u16 = 1;

/// The record every event kind writes (little-endian; offsets in bytes):
/// the common fields, then ip, parent_ip, tsc, arg, dur_ns, context; padded
/// to a multiple of 4 (the ring buffer's alignment).
const OFF_IP: usize = 8;
const OFF_PARENT: usize = 16;
const OFF_TSC: usize = 24;
const OFF_ARG: usize = 32;
const OFF_DUR: usize = 40;
const OFF_CTX: usize = 48;
const RECORD: usize = 52;
const _: () = assert!(OFF_CTX < RECORD && RECORD.is_multiple_of(4));

const KINDS: [Kind; 5] = [Kind::Function, Kind::PatchBatch, Kind::SyncRound, Kind::NmiTick, Kind::Warning];

/// `events/header_page` of a 64-bit kernel with 4 KiB pages.
fn header_page() -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        "\tfield: u64 timestamp;\toffset:0;\tsize:8;\tsigned:0;\n\
         \tfield: local_t commit;\toffset:8;\tsize:8;\tsigned:1;\n\
         \tfield: int overwrite;\toffset:8;\tsize:1;\tsigned:1;\n\
         \tfield: char data;\toffset:16;\tsize:{PAGE_DATA};\tsigned:1;\n"
    );
    s
}

/// `events/header_event`: the compressed entry header.
const HEADER_EVENT: &str = "# compressed entry header\n\
\ttype_len    :    5 bits\n\
\ttime_delta  :   27 bits\n\
\tarray       :   32 bits\n\
\n\
\tpadding     : type == 29\n\
\ttime_extend : type == 30\n\
\ttime_stamp : type == 31\n\
\tdata max type_len  == 28\n";

/// The context names as `__print_symbolic` pairs.
const CTX_SYMBOLS: &str = "{ 0, \"task\" }, { 1, \"irq\" }, { 2, \"nmi\" }";

/// The format file of one event kind.
pub fn format(kind: Kind) -> String {
    let mut s = String::new();
    let _ = write!(s, "name: {}\nID: {}\nformat:\n", kind.name(), FIRST_ID + kind as u16);
    s.push_str(
        "\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
         \tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;\n\
         \tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;\n\
         \tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;\n\n",
    );
    let field = |s: &mut String, decl: &str, off: usize, size: usize| {
        let _ = writeln!(s, "\tfield:{decl};\toffset:{off};\tsize:{size};\tsigned:0;");
    };
    let arg = arg_name(kind);
    if kind == Kind::Function {
        field(&mut s, "unsigned long ip", OFF_IP, 8);
        field(&mut s, "unsigned long parent_ip", OFF_PARENT, 8);
    }
    field(&mut s, "unsigned long long tsc", OFF_TSC, 8);
    if kind != Kind::Function {
        field(&mut s, &alloc::format!("unsigned long long {arg}"), OFF_ARG, 8);
    }
    if matches!(kind, Kind::PatchBatch | Kind::SyncRound) {
        field(&mut s, "unsigned long long dur_ns", OFF_DUR, 8);
    }
    field(&mut s, "unsigned char context", OFF_CTX, 1);
    let ctx = alloc::format!("__print_symbolic(REC->context, {CTX_SYMBOLS})");
    let _ = match kind {
        Kind::Function => writeln!(s, "\nprint fmt: \"%ps <-- %ps ctx=%s\", (void *)REC->ip, (void *)REC->parent_ip, {ctx}"),
        Kind::PatchBatch | Kind::SyncRound => writeln!(s, "\nprint fmt: \"{arg}=%llu dur_ns=%llu ctx=%s\", REC->{arg}, REC->dur_ns, {ctx}"),
        Kind::NmiTick => writeln!(s, "\nprint fmt: \"source=%s ctx=%s\", __print_symbolic(REC->{arg}, {{ 0, \"ipi\" }}, {{ 1, \"perf_counter\" }}), {ctx}"),
        Kind::Warning => writeln!(s, "\nprint fmt: \"{arg}=%llu ctx=%s\", REC->{arg}, {ctx}"),
    };
    s
}

/// The "pid" of an event: one per context (0 is the idle task to readers).
pub fn pid_of(ctx: u8) -> u32 {
    ctx as u32 + 1
}

/// The record of one event (`RECORD` bytes).
fn record(e: &Event) -> [u8; RECORD] {
    let mut r = [0u8; RECORD];
    r[0..2].copy_from_slice(&(FIRST_ID + e.kind as u16).to_le_bytes());
    r[2] = match e.ctx {
        1 => FLAG_IRQS_OFF | FLAG_HARDIRQ,
        2 => FLAG_IRQS_OFF | FLAG_HARDIRQ | FLAG_NMI,
        _ => 0,
    };
    r[4..8].copy_from_slice(&pid_of(e.ctx).to_le_bytes());
    for (off, v) in [(OFF_IP, e.ip), (OFF_PARENT, e.parent), (OFF_TSC, e.tsc), (OFF_ARG, e.arg), (OFF_DUR, e.dur_ns)] {
        r[off..off + 8].copy_from_slice(&v.to_le_bytes());
    }
    r[OFF_CTX] = e.ctx;
    r
}

/// One CPU's events (time-ordered) as ring-buffer pages; `lost_before`
/// events were lost before the first one (flagged and counted on page one).
pub fn cpu_pages(events: &[Event], lost_before: u64) -> Vec<u8> {
    let mut out = Vec::new();
    let mut page: Vec<u8> = Vec::with_capacity(PAGE_DATA);
    let (mut page_ts, mut last) = (0u64, 0u64);
    let mut missed = lost_before;
    let finish = |out: &mut Vec<u8>, page: &mut Vec<u8>, page_ts: u64, missed: &mut u64| {
        let mut commit = page.len() as u64;
        if *missed > 0 {
            commit |= MISSED_EVENTS | MISSED_STORED;
        }
        out.extend_from_slice(&page_ts.to_le_bytes());
        out.extend_from_slice(&commit.to_le_bytes());
        out.extend_from_slice(page);
        if *missed > 0 {
            out.extend_from_slice(&missed.to_le_bytes());
            *missed = 0;
        }
        out.resize(out.len().next_multiple_of(PAGE), 0);
        page.clear();
    };
    for (i, e) in events.iter().enumerate() {
        let mut delta = e.ts_ns.saturating_sub(last);
        let extend = if delta >> TS_BITS != 0 { 8 } else { 0 };
        // Room for the missed count after the data on the page that carries it.
        let reserve = if missed > 0 { 8 } else { 0 };
        if i == 0 || page.len() + extend + 4 + RECORD + reserve > PAGE_DATA {
            if i > 0 {
                finish(&mut out, &mut page, page_ts, &mut missed);
            }
            page_ts = e.ts_ns;
            delta = 0;
        } else if extend > 0 {
            let lo = (delta & ((1 << TS_BITS) - 1)) as u32;
            page.extend_from_slice(&(TYPE_TIME_EXTEND | lo << 5).to_le_bytes());
            page.extend_from_slice(&((delta >> TS_BITS) as u32).to_le_bytes());
            delta = 0;
        }
        last = e.ts_ns.max(last);
        page.extend_from_slice(&((RECORD as u32 / 4) | (delta as u32) << 5).to_le_bytes());
        page.extend_from_slice(&record(e));
    }
    if !events.is_empty() {
        finish(&mut out, &mut page, page_ts, &mut missed);
    }
    out
}

/// The text `trace-cmd report --stat` prints for a CPU: the fields of
/// Linux's `per_cpu/cpuN/stats`, where `entries` and `bytes` are what is
/// left unread (nothing: the snapshot read it all), `overrun` the events
/// overwritten and `dropped events` those the writer dropped.
fn cpu_stat(cpu: usize, s: &CpuSnapshot) -> String {
    let ts = |t: u64| alloc::format!("{}.{:06}", t / 1_000_000_000, (t / 1000) % 1_000_000);
    let mut o = String::new();
    let _ = write!(
        o,
        "CPU: {cpu}\nentries: 0\noverrun: {}\ncommit overrun: 0\nbytes: 0\noldest event ts: {}\nnow ts: {}\ndropped events: {}\nread events: {}\n",
        s.lost_before,
        ts(s.events.first().map_or(0, |e| e.ts_ns)),
        ts(s.events.last().map_or(0, |e| e.ts_ns)),
        s.lost_after,
        s.events.len()
    );
    o
}

/// Appends little-endian fields.
struct Out(Vec<u8>);

impl Out {
    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn bytes(&mut self, b: &[u8]) {
        self.0.extend_from_slice(b);
    }
    /// A block with its size in a 4- or 8-byte word first.
    fn sized(&mut self, b: &[u8], word: usize) {
        if word == 4 {
            self.u32(b.len() as u32);
        } else {
            self.u64(b.len() as u64);
        }
        self.bytes(b);
    }
    fn option(&mut self, id: u16, data: &[u8]) {
        self.u16(id);
        self.u32(data.len() as u32);
        self.bytes(data);
    }
}

/// trace-cmd option ids (trace-cmd's `enum tracecmd_file_options`).
const OPTION_DONE: u16 = 0;
const OPTION_CPUSTAT: u16 = 2;
const OPTION_TRACECLOCK: u16 = 4;

/// The kallsyms section's text: `symbols` are `(address, length, name)` of
/// the kernel's functions. The same for every download (the service makes
/// it once: 10,000 formatted lines are most of a download's fixed cost).
pub fn kallsyms<'a>(symbols: impl Iterator<Item = (u64, u32, &'a str)>) -> String {
    let (mut kallsyms, mut last_end) = (String::new(), 0u64);
    for (addr, len, name) in symbols {
        // kallsyms lines split on white space: demangled names may hold some.
        let _ = writeln!(kallsyms, "{addr:016x} T {}", name.replace([' ', '\t'], "_"));
        last_end = last_end.max(addr + len as u64);
    }
    // Readers resolve an address to the symbol below it only when another
    // follows: mark where the last function ends.
    if last_end > 0 {
        let _ = writeln!(kallsyms, "{last_end:016x} T __symbols_end");
    }
    kallsyms
}

/// A trace.dat of per-CPU snapshots, with the `kallsyms` section's text.
pub fn file(cpus: &[CpuSnapshot], kallsyms: &str) -> Vec<u8> {
    let mut o = Out(Vec::new());
    o.bytes(&[0x17, 0x08, 0x44]);
    o.bytes(b"tracing6\0");
    o.bytes(&[0, 8]); // little-endian, 8-byte longs
    o.u32(PAGE as u32);
    o.bytes(b"header_page\0");
    o.sized(header_page().as_bytes(), 8);
    o.bytes(b"header_event\0");
    o.sized(HEADER_EVENT.as_bytes(), 8);
    o.u32(0); // no ftrace-system event formats
    o.u32(1); // one event system
    o.bytes(b"appliance\0");
    o.u32(KINDS.len() as u32);
    for k in KINDS {
        o.sized(format(k).as_bytes(), 8);
    }
    o.sized(kallsyms.as_bytes(), 4);
    o.u32(0); // no trace_printk formats
    let mut cmdlines = String::new();
    for ctx in 0..3u8 {
        let _ = writeln!(cmdlines, "{} {}", pid_of(ctx), ctx_name(ctx));
    }
    o.sized(cmdlines.as_bytes(), 8);
    o.u32(cpus.len() as u32);
    o.bytes(b"options  \0");
    // The clock: nanoseconds of the kernel's monotonic clock.
    o.option(OPTION_TRACECLOCK, b"[local] global counter mono\n\0");
    for (cpu, s) in cpus.iter().enumerate() {
        let mut t = cpu_stat(cpu, s).into_bytes();
        t.push(0);
        o.option(OPTION_CPUSTAT, &t);
    }
    o.u16(OPTION_DONE);
    o.bytes(b"flyrecord\0");
    let pages: Vec<Vec<u8>> = cpus.iter().map(|s| cpu_pages(&s.events, s.lost_before)).collect();
    let table_end = o.0.len() + 16 * cpus.len();
    let mut at = table_end.next_multiple_of(PAGE);
    for p in &pages {
        o.u64(at as u64);
        o.u64(p.len() as u64);
        at += p.len();
    }
    o.0.resize(table_end.next_multiple_of(PAGE), 0);
    for p in &pages {
        o.bytes(p);
    }
    o.0
}

/// A snapshot of every CPU's rings as a trace.dat.
pub fn snapshot(rings: &[CpuRings], kallsyms: &str) -> Vec<u8> {
    let cpus: Vec<CpuSnapshot> = rings.iter().map(CpuRings::snapshot).collect();
    file(&cpus, kallsyms)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(ts: u64, ctx: u8, kind: Kind) -> Event {
        Event { ts_ns: ts, tsc: ts * 3, ip: 0x20_1000 + ts, parent: 0x20_2000, kind, ctx, cpu: 0, arg: 7, dur_ns: 0 }
    }

    /// A reader of the page format written from kbuffer's description
    /// (libtraceevent `kbuffer-parse.c`): (timestamp, record) pairs and the
    /// missed count of each page.
    fn read_pages(b: &[u8]) -> (std::vec::Vec<(u64, std::vec::Vec<u8>)>, std::vec::Vec<u64>) {
        let (mut evs, mut missed) = (std::vec::Vec::new(), std::vec::Vec::new());
        for page in b.chunks(PAGE) {
            let mut ts = u64::from_le_bytes(page[0..8].try_into().unwrap());
            let flags = u64::from_le_bytes(page[8..16].try_into().unwrap());
            let size = (flags & ((1 << 27) - 1)) as usize;
            let data = &page[16..];
            missed.push(if flags & (1 << 31) != 0 { u64::from_le_bytes(data[size..size + 8].try_into().unwrap()) } else { 0 });
            let mut at = 0;
            while at < size {
                let h = u32::from_le_bytes(data[at..at + 4].try_into().unwrap());
                let (ty, delta) = (h & 31, (h >> 5) as u64);
                at += 4;
                match ty {
                    30 => {
                        ts += (u32::from_le_bytes(data[at..at + 4].try_into().unwrap()) as u64) << 27 | delta;
                        at += 4;
                    }
                    1..=28 => {
                        ts += delta;
                        evs.push((ts, data[at..at + ty as usize * 4].to_vec()));
                        at += ty as usize * 4;
                    }
                    t => panic!("type_len {t} written"),
                }
            }
        }
        (evs, missed)
    }

    #[test]
    fn pages_carry_every_event_with_its_time() {
        // Gaps below and above the 27-bit delta (134 ms), over several pages.
        let mut t = 1_000_000_000u64;
        let events: std::vec::Vec<Event> = (0..300u64)
            .map(|i| {
                t += if i % 50 == 0 { 5_000_000_000 } else { 1_000 + i };
                ev(t, (i % 3) as u8, if i % 7 == 0 { Kind::SyncRound } else { Kind::Function })
            })
            .collect();
        let b = cpu_pages(&events, 12);
        assert_eq!(b.len() % PAGE, 0);
        assert_eq!(b.len() / PAGE, 300usize.div_ceil(PAGE_DATA / (4 + RECORD + 8)).max(5), "{} pages", b.len() / PAGE);
        let (got, missed) = read_pages(&b);
        assert_eq!(got.len(), 300);
        for (e, (ts, rec)) in events.iter().zip(&got) {
            assert_eq!(*ts, e.ts_ns);
            assert_eq!(rec.len(), RECORD);
            assert_eq!(u16::from_le_bytes([rec[0], rec[1]]), FIRST_ID + e.kind as u16);
            assert_eq!(u64::from_le_bytes(rec[OFF_IP..OFF_IP + 8].try_into().unwrap()), e.ip);
            assert_eq!(rec[OFF_CTX], e.ctx);
            assert_eq!(u32::from_le_bytes(rec[4..8].try_into().unwrap()), e.ctx as u32 + 1, "pid by context");
            assert_eq!(rec[2] & FLAG_NMI != 0, e.ctx == 2, "NMI flag");
        }
        assert_eq!(missed[0], 12, "the overwritten events are flagged on the first page");
        assert!(missed[1..].iter().all(|&m| m == 0));
        assert!(cpu_pages(&[], 5).is_empty(), "no events: no pages");
    }

    #[test]
    fn the_file_has_the_v6_layout() {
        let cpus = [
            CpuSnapshot { events: std::vec![ev(10, 0, Kind::Function), ev(20, 2, Kind::NmiTick)], lost_before: 3, lost_after: 0, produced: 5 },
            CpuSnapshot { events: std::vec![], lost_before: 0, lost_after: 4, produced: 4 },
        ];
        let syms = [(0x20_1000u64, 0x40, "appliance::traced::traced_0"), (0x20_1800, 0x10, "<a as b>::c")];
        let f = file(&cpus, &kallsyms(syms.iter().copied()));
        assert_eq!(&f[..12], b"\x17\x08\x44tracing6\0");
        assert_eq!((f[12], f[13]), (0, 8), "little-endian, 8-byte longs");
        assert_eq!(u32::from_le_bytes(f[14..18].try_into().unwrap()), 4096);
        assert_eq!(&f[18..30], b"header_page\0");
        let text = String::from_utf8_lossy(&f);
        assert!(text.contains("field: char data;\toffset:16;\tsize:4080;"));
        assert!(text.contains("name: function\nID: 1\n") && text.contains("name: warning\nID: 5\n"));
        assert!(text.contains("0000000000201000 T appliance::traced::traced_0\n") && text.contains("T <a_as_b>::c\n"), "kallsyms names hold no spaces");
        assert!(text.contains("0000000000201810 T __symbols_end\n"), "the end of the last function is marked");
        assert!(text.contains("1 task\n2 irq\n3 nmi\n"));
        assert!(text.contains("CPU: 0\nentries: 0\noverrun: 3\n") && text.contains("read events: 2\n"));
        assert!(text.contains("CPU: 1\nentries: 0\noverrun: 0\n") && text.contains("dropped events: 4\n"));
        // The flyrecord table: page-aligned offsets, CPU 1 empty.
        let fly = f.windows(10).position(|w| w == b"flyrecord\0").unwrap() + 10;
        let u64_at = |o: usize| u64::from_le_bytes(f[o..o + 8].try_into().unwrap());
        let (off0, size0, size1) = (u64_at(fly) as usize, u64_at(fly + 8) as usize, u64_at(fly + 24));
        assert_eq!((off0 % PAGE, size0, size1), (0, PAGE, 0));
        assert_eq!(f.len(), off0 + size0);
        let (got, missed) = read_pages(&f[off0..]);
        assert_eq!((got.len(), missed[0]), (2, 3));
    }

    #[test]
    fn formats_declare_the_record_layout() {
        for k in KINDS {
            let f = format(k);
            assert!(f.contains("\tfield:unsigned char context;\toffset:48;\tsize:1;"), "{f}");
            assert!(f.contains("print fmt: \""), "{f}");
        }
        assert!(format(Kind::Function).contains("\tfield:unsigned long parent_ip;\toffset:16;\tsize:8;"));
        assert!(format(Kind::PatchBatch).contains("\tfield:unsigned long long sites;\toffset:32;") && format(Kind::PatchBatch).contains("dur_ns"));
        assert!(!format(Kind::Warning).contains("dur_ns"));
    }
}
