//! CTF 1.8 (the Common Trace Format specification, diamon.org/ctf/v1.8.3) as
//! Debian's babeltrace2 2.0.4 reads it: the TSDL metadata, one binary stream
//! per CPU (packets carrying `cpu_id` and the running `events_discarded`;
//! `content_size` and `packet_size` count bits), and a ustar archive
//! holding them, so that `tar x` then `babeltrace2 trace/` reads a snapshot.
//! Pure logic, host-tested; the QEMU tests run babeltrace2 on a real snapshot.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write;

use super::ring::{Event, Kind};

/// Packet header magic (CTF 1.8 §5).
pub const MAGIC: u32 = 0xC1FC_1FC1;
/// Events per packet.
pub const EVENTS_PER_PACKET: usize = 1024;
/// Bytes of a packet header + context, and of an event (all fields byte-aligned).
const PACKET_HEAD: usize = 4 + 4 + 8 + 8 + 8 + 8 + 8 + 4;
const EVENT_BYTES: usize = 2 + 8 + 8 + 8 + 8 + 1 + 8 + 8;

/// The TSDL metadata. `events` and `lost` describe the snapshot.
pub fn metadata(hostname: &str, events: u64, lost: u64, produced: u64) -> String {
    let mut m = String::new();
    let _ = write!(
        m,
        r#"/* CTF 1.8 */
typealias integer {{ size = 8; align = 8; signed = false; }} := uint8_t;
typealias integer {{ size = 16; align = 8; signed = false; }} := uint16_t;
typealias integer {{ size = 32; align = 8; signed = false; }} := uint32_t;
typealias integer {{ size = 64; align = 8; signed = false; }} := uint64_t;
typealias integer {{ size = 64; align = 8; signed = false; base = hex; }} := xint64_t;
typealias integer {{ size = 64; align = 8; signed = false; map = clock.monotonic.value; }} := ts_t;

trace {{
    major = 1;
    minor = 8;
    byte_order = le;
    packet.header := struct {{ uint32_t magic; uint32_t stream_id; }};
}};

env {{
    hostname = "{hostname}";
    domain = "kernel";
    tracer_name = "trace-appliance";
    snapshot_events = {events};
    snapshot_lost = {lost};
    snapshot_produced = {produced};
}};

clock {{
    name = monotonic;
    freq = 1000000000;
    offset = 0;
}};

stream {{
    id = 0;
    packet.context := struct {{
        ts_t timestamp_begin;
        ts_t timestamp_end;
        uint64_t content_size;
        uint64_t packet_size;
        uint64_t events_discarded;
        uint32_t cpu_id;
    }};
    event.header := struct {{ uint16_t id; ts_t timestamp; }};
}};
"#
    );
    for k in [Kind::Function, Kind::PatchBatch, Kind::SyncRound, Kind::NmiTick, Kind::Warning] {
        let _ = write!(
            m,
            "\nevent {{\n    id = {};\n    name = \"{}\";\n    stream_id = 0;\n    fields := struct {{ xint64_t ip; xint64_t parent_ip; uint64_t tsc; uint8_t context; uint64_t arg; uint64_t dur_ns; }};\n}};\n",
            k as u8,
            k.name()
        );
    }
    m
}

/// Bytes of a CPU's stream of `n` events: the empty packet that opens it,
/// its packets' heads and its events (an empty CPU still has one packet
/// after the first, carrying its losses).
///
/// babeltrace2 counts the events a tracer discarded as the difference of
/// `events_discarded` between two consecutive packets of a stream, and says
/// only "may have discarded" for a stream's first packet, which has none
/// before it (`src/plugins/ctf/common/msg-iter/msg-iter.c`: the discarded
/// events message carries a count only when a previous packet's value is
/// known). So every stream opens with an empty packet at time 0 with
/// nothing discarded: the events overwritten before the snapshot (older
/// than every event kept) are then counted by babeltrace2 as "Tracer
/// discarded N events between" boot and the first event kept, and the ones
/// dropped by the writer (newer) between the last two packets.
pub fn stream_len(n: usize) -> usize {
    PACKET_HEAD + n.div_ceil(EVENTS_PER_PACKET).max(1) * PACKET_HEAD + n * EVENT_BYTES
}

/// A ustar header (POSIX.1-1988) for a file of `size` bytes.
fn tar_header(name: &str, size: usize, h: &mut [u8; 512]) {
    h.fill(0);
    let n = name.as_bytes();
    h[..n.len().min(100)].copy_from_slice(&n[..n.len().min(100)]);
    h[100..108].copy_from_slice(b"0000644\0");
    h[108..116].copy_from_slice(b"0000000\0");
    h[116..124].copy_from_slice(b"0000000\0");
    octal(size as u64, &mut h[124..135]);
    h[136..148].copy_from_slice(b"00000000000\0");
    h[148..156].copy_from_slice(b"        ");
    h[156] = b'0';
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    let sum: u32 = h.iter().map(|&b| b as u32).sum();
    octal(sum as u64, &mut h[148..154]);
    h[154] = 0;
    h[155] = b' ';
}

/// `v` in octal, zero-padded to the field's width.
fn octal(mut v: u64, field: &mut [u8]) {
    for b in field.iter_mut().rev() {
        *b = b'0' + (v & 7) as u8;
        v >>= 3;
    }
}

/// A packet's header and context (`PACKET_HEAD` bytes).
fn packet_head(cpu: u32, chunk: &[Event], discarded: u64, out: &mut [u8]) {
    let size = ((PACKET_HEAD + chunk.len() * EVENT_BYTES) as u64 * 8).to_le_bytes();
    out[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    out[4..8].copy_from_slice(&0u32.to_le_bytes());
    out[8..16].copy_from_slice(&chunk.first().map_or(0, |e| e.ts_ns).to_le_bytes());
    out[16..24].copy_from_slice(&chunk.last().map_or(0, |e| e.ts_ns).to_le_bytes());
    out[24..32].copy_from_slice(&size);
    out[32..40].copy_from_slice(&size);
    out[40..48].copy_from_slice(&discarded.to_le_bytes());
    out[48..52].copy_from_slice(&cpu.to_le_bytes());
}

/// An event's header and fields (`EVENT_BYTES` bytes).
fn event(e: &Event, out: &mut [u8]) {
    out[0..2].copy_from_slice(&(e.kind as u16).to_le_bytes());
    out[2..10].copy_from_slice(&e.ts_ns.to_le_bytes());
    out[10..18].copy_from_slice(&e.ip.to_le_bytes());
    out[18..26].copy_from_slice(&e.parent.to_le_bytes());
    out[26..34].copy_from_slice(&e.tsc.to_le_bytes());
    out[34] = e.ctx;
    out[35..43].copy_from_slice(&e.arg.to_le_bytes());
    out[43..51].copy_from_slice(&e.dur_ns.to_le_bytes());
}

/// Where a [`TarStream`] is: the next piece it produces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Piece {
    /// File `f`'s tar header (0: the metadata, 1 + N: CPU N's stream).
    Header(usize),
    /// The metadata from this offset.
    Meta(usize),
    /// CPU `.0`'s opening packet: empty, at time 0, nothing discarded.
    Opening(usize),
    /// CPU `.0`'s packet whose first event is `.1`.
    Packet(usize, usize),
    /// CPU `.0`'s event `.1`.
    Event(usize, usize),
    /// The zeros that pad file `.0` to a block, `.1` of them.
    Pad(usize, usize),
    /// Zeros of the end-of-archive blocks still to come.
    End(usize),
    Done,
}

/// Zeros after `len` bytes up to the next 512-byte block.
fn pad(len: usize) -> usize {
    len.next_multiple_of(512) - len
}

/// A snapshot of every CPU's rings as a CTF 1.8 trace in a ustar archive:
/// `trace/metadata` and one `trace/stream_N` per CPU, its events merged over
/// the three contexts by timestamp, with the CPU's lost events (overwritten
/// before this read: older than every event kept, counted from the first
/// packet on; dropped by the writer: newer, counted in the last packet) as
/// the running discarded count. The rings are read once, when it is made;
/// the archive's bytes are then made as they are asked for (`fill`), straight
/// into the caller's buffer, so a download starts at once and the archive is
/// never held whole.
pub struct TarStream {
    archive: Archive,
    len: usize,
    at: Piece,
    /// A piece that did not fit the last buffer, and how much of it went.
    stage: [u8; 512],
    staged: (usize, usize),
}

/// What the archive holds.
struct Archive {
    meta: Vec<u8>,
    cpus: Vec<super::ring::CpuSnapshot>,
}

impl TarStream {
    /// Read every CPU's rings (`rings[cpu]`) now.
    pub fn new(rings: &[super::ring::CpuRings], hostname: &str) -> TarStream {
        TarStream::of(rings.iter().map(|r| r.snapshot()).collect(), hostname)
    }

    /// The archive of these snapshots (`cpus[cpu]`).
    pub fn of(cpus: Vec<super::ring::CpuSnapshot>, hostname: &str) -> TarStream {
        let events = cpus.iter().map(|c| c.events.len() as u64).sum();
        let lost = cpus.iter().map(|c| c.lost_before + c.lost_after).sum();
        let produced = cpus.iter().map(|c| c.produced).sum();
        let meta = metadata(hostname, events, lost, produced).into_bytes();
        let file = |len: usize| 512 + len + pad(len);
        let len = file(meta.len()) + cpus.iter().map(|c| file(stream_len(c.events.len()))).sum::<usize>() + 1024;
        TarStream { archive: Archive { meta, cpus }, len, at: Piece::Header(0), stage: [0; 512], staged: (0, 0) }
    }

    /// The archive's size in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every byte went out.
    pub fn is_done(&self) -> bool {
        self.at == Piece::Done && self.staged.0 == self.staged.1
    }

    /// The archive's next bytes into `out`, as many as fit; how many.
    pub fn fill(&mut self, out: &mut [u8]) -> usize {
        let mut w = 0;
        loop {
            let (from, to) = self.staged;
            if from < to {
                let k = (to - from).min(out.len() - w);
                out[w..w + k].copy_from_slice(&self.stage[from..from + k]);
                w += k;
                self.staged.0 += k;
            }
            if w == out.len() || self.at == Piece::Done {
                return w;
            }
            // Whole pieces (at most a block each) straight into `out`; the
            // last one that does not fit through the stage.
            let at = self.at;
            if let Some(dst) = out.get_mut(w..w + 512) {
                let (n, next) = self.archive.piece(at, dst.try_into().expect("512 bytes"));
                w += n;
                self.at = next;
            } else {
                let (n, next) = self.archive.piece(at, &mut self.stage);
                self.staged = (0, n);
                self.at = next;
            }
        }
    }
}

impl Archive {
    /// Write piece `at` at the start of `buf`: its length, and the piece after it.
    fn piece(&self, at: Piece, buf: &mut [u8; 512]) -> (usize, Piece) {
        let after_file = |f: usize, len: usize| match pad(len) {
            0 if f < self.cpus.len() => Piece::Header(f + 1),
            0 => Piece::End(1024),
            n => Piece::Pad(f, n),
        };
        match at {
            Piece::Header(0) => {
                tar_header("trace/metadata", self.meta.len(), buf);
                (512, if self.meta.is_empty() { after_file(0, 0) } else { Piece::Meta(0) })
            }
            Piece::Header(f) => {
                let mut name = String::new();
                let _ = write!(name, "trace/stream_{}", f - 1);
                tar_header(&name, stream_len(self.cpus[f - 1].events.len()), buf);
                (512, Piece::Opening(f - 1))
            }
            Piece::Opening(c) => {
                packet_head(c as u32, &[], 0, &mut buf[..PACKET_HEAD]);
                (PACKET_HEAD, Piece::Packet(c, 0))
            }
            Piece::Meta(off) => {
                let n = (self.meta.len() - off).min(512);
                buf[..n].copy_from_slice(&self.meta[off..off + n]);
                (n, if off + n < self.meta.len() { Piece::Meta(off + n) } else { after_file(0, self.meta.len()) })
            }
            Piece::Packet(c, first) => {
                let cpu = &self.cpus[c];
                let end = (first + EVENTS_PER_PACKET).min(cpu.events.len());
                let discarded = if end == cpu.events.len() { cpu.lost_before + cpu.lost_after } else { cpu.lost_before };
                packet_head(c as u32, &cpu.events[first..end], discarded, &mut buf[..PACKET_HEAD]);
                (PACKET_HEAD, if first < end { Piece::Event(c, first) } else { after_file(c + 1, stream_len(0)) })
            }
            Piece::Event(c, i) => {
                let events = &self.cpus[c].events;
                event(&events[i], &mut buf[..EVENT_BYTES]);
                let next = match i + 1 {
                    n if n == events.len() => after_file(c + 1, stream_len(n)),
                    n if n % EVENTS_PER_PACKET == 0 => Piece::Packet(c, n),
                    n => Piece::Event(c, n),
                };
                (EVENT_BYTES, next)
            }
            Piece::Pad(f, n) => {
                buf[..n].fill(0);
                // The file now ends on a block.
                (n, after_file(f, 0))
            }
            Piece::End(left) => {
                let n = left.min(512);
                buf[..n].fill(0);
                (n, if left > n { Piece::End(left - n) } else { Piece::Done })
            }
            Piece::Done => (0, Piece::Done),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::ring::CpuSnapshot;
    use std::string::String;
    use std::vec::Vec;

    fn ev(ts: u64, cpu: u16) -> Event {
        Event { ts_ns: ts, tsc: ts * 3, ip: 0x20_0000 + ts, parent: 0x21_0000, kind: Kind::Function, ctx: 2, cpu, arg: 0, dur_ns: 0 }
    }

    /// The whole archive, asked for in pieces of `chunk` bytes.
    fn all(t: &mut TarStream, chunk: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = std::vec![0u8; chunk];
        while !t.is_done() {
            let n = t.fill(&mut buf);
            assert!(n > 0, "a stream not done gives bytes");
            out.extend_from_slice(&buf[..n]);
        }
        assert_eq!(t.fill(&mut buf), 0, "nothing after the end");
        out
    }

    /// A ustar reader (POSIX.1-1988): (name, data) of each file, each header's
    /// checksum checked, up to the end-of-archive blocks.
    fn untar(t: &[u8]) -> Vec<(String, Vec<u8>)> {
        let mut files = Vec::new();
        let mut at = 0;
        while t[at..at + 512].iter().any(|&b| b != 0) {
            let mut h = t[at..at + 512].to_vec();
            assert_eq!(&h[257..263], b"ustar\0");
            let field = |r: core::ops::Range<usize>| u64::from_str_radix(std::str::from_utf8(&h[r]).unwrap().trim_end_matches('\0'), 8).unwrap();
            let (size, stored) = (field(124..135) as usize, field(148..154) as u32);
            h[148..156].copy_from_slice(b"        ");
            assert_eq!(stored, h.iter().map(|&b| b as u32).sum::<u32>(), "checksum: the byte sum with the field as spaces");
            let name = String::from_utf8(h[..100].iter().copied().take_while(|&b| b != 0).collect()).unwrap();
            files.push((name, t[at + 512..at + 512 + size].to_vec()));
            at += 512 + size.next_multiple_of(512);
        }
        assert_eq!(t.len(), at + 1024, "two zero blocks end the archive");
        assert!(t[at..].iter().all(|&b| b == 0));
        files
    }

    fn snap(events: Vec<Event>, lost_before: u64, lost_after: u64) -> CpuSnapshot {
        let produced = events.len() as u64 + lost_before + lost_after;
        CpuSnapshot { events, lost_before, lost_after, produced }
    }

    #[test]
    fn packets_have_the_declared_layout() {
        let evs: Vec<Event> = (0..1500).map(|i| ev(1000 + i, 1)).collect();
        let mut t = TarStream::of(std::vec![snap(Vec::new(), 0, 4), snap(evs, 2, 7)], "h");
        let bytes = all(&mut t, 4096);
        assert_eq!(bytes.len(), t.len());
        let files = untar(&bytes);
        let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["trace/metadata", "trace/stream_0", "trace/stream_1"]);
        let s = &files[2].1;
        assert_eq!(s.len(), 3 * PACKET_HEAD + 1500 * EVENT_BYTES, "the opening packet and two packets");
        let u32_at = |o: usize| u32::from_le_bytes(s[o..o + 4].try_into().unwrap());
        let u64_at = |o: usize| u64::from_le_bytes(s[o..o + 8].try_into().unwrap());
        // The opening packet: empty, at time 0, nothing discarded (so that
        // babeltrace2 counts what the next packet says was discarded).
        assert_eq!(u32_at(0), MAGIC);
        assert_eq!((u64_at(8), u64_at(16)), (0, 0));
        assert_eq!((u64_at(24), u64_at(32)), ((PACKET_HEAD * 8) as u64, (PACKET_HEAD * 8) as u64));
        assert_eq!((u64_at(40), u32_at(48)), (0, 1));
        let p = PACKET_HEAD;
        assert_eq!(u32_at(p), MAGIC);
        assert_eq!((u64_at(p + 8), u64_at(p + 16)), (1000, 1000 + 1023), "timestamps of the first packet");
        assert_eq!(u64_at(p + 24), ((PACKET_HEAD + 1024 * EVENT_BYTES) * 8) as u64, "content size in bits");
        assert_eq!(u64_at(p + 40), 2, "the overwritten events are older than the first packet");
        assert_eq!(u32_at(p + 48), 1, "cpu_id");
        let second = p + PACKET_HEAD + 1024 * EVENT_BYTES;
        assert_eq!(u32_at(second), MAGIC);
        assert_eq!(u64_at(second + 24), ((PACKET_HEAD + 476 * EVENT_BYTES) * 8) as u64);
        assert_eq!(u64_at(second + 40), 9, "the last packet carries every event lost");
        // First event: id, timestamp, ip, parent, tsc, context, arg, duration.
        let e = p + PACKET_HEAD;
        assert_eq!(u16::from_le_bytes([s[e], s[e + 1]]), 0);
        assert_eq!(u64_at(e + 2), 1000);
        assert_eq!(u64_at(e + 10), 0x20_0000 + 1000);
        assert_eq!(u64_at(e + 18), 0x21_0000);
        assert_eq!(u64_at(e + 26), 3000);
        assert_eq!(s[e + 34], 2, "nmi context");
        let empty = &files[1].1;
        assert_eq!(empty.len(), 2 * PACKET_HEAD, "an empty CPU still has a packet after the opening one");
        assert_eq!(u64::from_le_bytes(empty[40..48].try_into().unwrap()), 0);
        assert_eq!(u64::from_le_bytes(empty[PACKET_HEAD + 40..PACKET_HEAD + 48].try_into().unwrap()), 4, "and its losses");
    }

    #[test]
    fn metadata_declares_every_event_kind_and_the_snapshot() {
        let m = metadata("appliance", 42, 5, 47);
        assert!(m.starts_with("/* CTF 1.8 */"));
        for k in ["function", "patch_batch", "sync_round", "nmi_tick", "warning"] {
            assert!(m.contains(&std::format!("name = \"{k}\"")), "{k}");
        }
        assert!(m.contains("snapshot_events = 42;") && m.contains("snapshot_lost = 5;") && m.contains("snapshot_produced = 47;"));
    }

    #[test]
    fn any_buffer_size_gives_the_same_archive() {
        let make = || TarStream::of((0..3).map(|c| snap((0..(c * 700)).map(|i| ev(i as u64, c as u16)).collect(), c as u64, 1)).collect(), "h");
        let whole = all(&mut make(), 1 << 20);
        assert_eq!(whole.len(), make().len());
        assert_eq!(whole.len() % 512, 0);
        for chunk in [1, 7, EVENT_BYTES, PACKET_HEAD, 511, 512, 513, 1460, 4096] {
            assert!(all(&mut make(), chunk) == whole, "{chunk}-byte buffers");
        }
        let files = untar(&whole);
        assert_eq!(String::from_utf8(files[0].1.clone()).unwrap(), metadata("h", 2100, 6, 2106));
        for (c, (_, s)) in files[1..].iter().enumerate() {
            assert_eq!(s.len(), stream_len(c * 700), "stream_{c}");
        }
    }

    #[test]
    fn snapshot_holds_every_cpu_with_its_losses() {
        use crate::trace::ring::{CpuRings, Overflow};
        let rings: Vec<CpuRings> = (0..2).map(|_| CpuRings::new([4, 2, 2], Overflow::Overwrite)).collect();
        for i in 0..6 {
            rings[0].rings[0].push(&ev(100 + i, 0));
        }
        rings[1].rings[2].push(&ev(50, 1));
        let files = untar(&all(&mut TarStream::new(&rings, "h"), 1000));
        let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["trace/metadata", "trace/stream_0", "trace/stream_1"], "metadata and one stream per CPU");
        let text = String::from_utf8(files[0].1.clone()).unwrap();
        // CPU 0 kept the newest 4 of 6 (2 overwritten), CPU 1 its one event.
        assert!(text.contains("snapshot_events = 5;") && text.contains("snapshot_lost = 2;") && text.contains("snapshot_produced = 7;"), "{text}");
        assert_eq!((files[1].1.len(), files[2].1.len()), (stream_len(4), stream_len(1)));
    }
}
