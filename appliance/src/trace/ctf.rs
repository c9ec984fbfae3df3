//! CTF 1.8 (the Common Trace Format specification, diamon.org/ctf/v1.8.3) as
//! Debian's babeltrace2 2.0.4 reads it: the TSDL metadata, one binary stream
//! per CPU (packets carrying `cpu_id` and the running `events_discarded`,
//! which babeltrace2 turns into its "Tracer may have discarded events"
//! warning; `content_size` and `packet_size` count bits), and a ustar archive
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

/// One CPU's stream: its events (time-ordered) in packets of up to
/// `EVENTS_PER_PACKET`; `discarded_before[i]` is the running count of events
/// lost before event i, and the last packet carries `discarded_total`, every
/// event lost up to its end (the packet carries the count at its end).
pub fn stream(cpu: u32, events: &[Event], discarded_before: &[u64], discarded_total: u64) -> Vec<u8> {
    let mut out = Vec::new();
    let chunks: Vec<(usize, &[Event])> = if events.is_empty() {
        alloc::vec![(0, &[][..])]
    } else {
        events.chunks(EVENTS_PER_PACKET).enumerate().map(|(i, c)| (i * EVENTS_PER_PACKET, c)).collect()
    };
    let last = chunks.len() - 1;
    for (k, (start, chunk)) in chunks.into_iter().enumerate() {
        let size = PACKET_HEAD + chunk.len() * EVENT_BYTES;
        let begin = chunk.first().map_or(0, |e| e.ts_ns);
        let end = chunk.last().map_or(0, |e| e.ts_ns);
        let discarded = if k == last { discarded_total } else { discarded_before.get(start + chunk.len().saturating_sub(1)).copied().unwrap_or(0) };
        out.extend_from_slice(&MAGIC.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&begin.to_le_bytes());
        out.extend_from_slice(&end.to_le_bytes());
        out.extend_from_slice(&((size as u64) * 8).to_le_bytes());
        out.extend_from_slice(&((size as u64) * 8).to_le_bytes());
        out.extend_from_slice(&discarded.to_le_bytes());
        out.extend_from_slice(&cpu.to_le_bytes());
        for e in chunk {
            out.extend_from_slice(&(e.kind as u16).to_le_bytes());
            out.extend_from_slice(&e.ts_ns.to_le_bytes());
            out.extend_from_slice(&e.ip.to_le_bytes());
            out.extend_from_slice(&e.parent.to_le_bytes());
            out.extend_from_slice(&e.tsc.to_le_bytes());
            out.push(e.ctx);
            out.extend_from_slice(&e.arg.to_le_bytes());
            out.extend_from_slice(&e.dur_ns.to_le_bytes());
        }
    }
    out
}

/// A ustar archive of `(name, bytes)` files (POSIX.1-1988 tar headers).
pub fn tar(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, data) in files {
        let mut h = [0u8; 512];
        let n = name.as_bytes();
        h[..n.len().min(100)].copy_from_slice(&n[..n.len().min(100)]);
        h[100..108].copy_from_slice(b"0000644\0");
        h[108..116].copy_from_slice(b"0000000\0");
        h[116..124].copy_from_slice(b"0000000\0");
        let size = alloc::format!("{:011o}\0", data.len());
        h[124..136].copy_from_slice(size.as_bytes());
        h[136..148].copy_from_slice(b"00000000000\0");
        h[148..156].copy_from_slice(b"        ");
        h[156] = b'0';
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        let sum: u32 = h.iter().map(|&b| b as u32).sum();
        let ck = alloc::format!("{sum:06o}\0 ");
        h[148..156].copy_from_slice(ck.as_bytes());
        out.extend_from_slice(&h);
        out.extend_from_slice(data);
        out.resize(out.len().next_multiple_of(512), 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

/// A snapshot of every CPU's rings (`rings[cpu]`) as a CTF 1.8 trace in a
/// tar archive: `trace/metadata` and one `trace/stream_N` per CPU, its events
/// merged over the three contexts by timestamp, with the CPU's lost events
/// (dropped by the writer, overwritten before this read) as the running
/// discarded count.
pub fn snapshot_tar(rings: &[super::ring::CpuRings], hostname: &str) -> Vec<u8> {
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    let (mut total, mut lost_total, mut produced_total) = (0u64, 0u64, 0u64);
    for (cpu, cr) in rings.iter().enumerate() {
        let snap = cr.snapshot();
        let (before, after) = (snap.lost_before, snap.lost_after);
        // Overwritten events are older than every event kept: counted from
        // the first packet on; dropped ones are newer: counted at the end.
        let disc: Vec<u64> = snap.events.iter().map(|_| before).collect();
        total += snap.events.len() as u64;
        lost_total += before + after;
        produced_total += snap.produced;
        files.push((alloc::format!("trace/stream_{cpu}"), stream(cpu as u32, &snap.events, &disc, before + after)));
    }
    let meta = metadata(hostname, total, lost_total, produced_total);
    let mut list: Vec<(&str, &[u8])> = alloc::vec![("trace/metadata", meta.as_bytes())];
    list.extend(files.iter().map(|(n, b)| (n.as_str(), b.as_slice())));
    tar(&list)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(ts: u64, cpu: u16) -> Event {
        Event { ts_ns: ts, tsc: ts * 3, ip: 0x20_0000 + ts, parent: 0x21_0000, kind: Kind::Function, ctx: 2, cpu, arg: 0, dur_ns: 0 }
    }

    #[test]
    fn packets_have_the_declared_layout() {
        let evs: std::vec::Vec<Event> = (0..1500).map(|i| ev(1000 + i, 3)).collect();
        let disc: std::vec::Vec<u64> = (0..1500).map(|i| if i >= 1200 { 7 } else { 0 }).collect();
        let s = stream(3, &evs, &disc, 9);
        assert_eq!(s.len(), 2 * PACKET_HEAD + 1500 * EVENT_BYTES, "two packets");
        let u32_at = |o: usize| u32::from_le_bytes(s[o..o + 4].try_into().unwrap());
        let u64_at = |o: usize| u64::from_le_bytes(s[o..o + 8].try_into().unwrap());
        assert_eq!(u32_at(0), MAGIC);
        assert_eq!((u64_at(8), u64_at(16)), (1000, 1000 + 1023), "timestamps of the first packet");
        assert_eq!(u64_at(24), ((PACKET_HEAD + 1024 * EVENT_BYTES) * 8) as u64, "content size in bits");
        assert_eq!(u64_at(40), 0, "nothing discarded in the first packet");
        assert_eq!(u32_at(48), 3, "cpu_id");
        let second = PACKET_HEAD + 1024 * EVENT_BYTES;
        assert_eq!(u32_at(second), MAGIC);
        assert_eq!(u64_at(second + 40), 9, "the last packet carries every event lost");
        // First event: id, timestamp, ip, parent, tsc, context, arg.
        let e = PACKET_HEAD;
        assert_eq!(u16::from_le_bytes([s[e], s[e + 1]]), 0);
        assert_eq!(u64_at(e + 2), 1000);
        assert_eq!(u64_at(e + 10), 0x20_0000 + 1000);
        assert_eq!(s[e + 34], 2, "nmi context");
        let empty = stream(0, &[], &[], 4);
        assert_eq!(empty.len(), PACKET_HEAD, "an empty CPU still has a packet");
        assert_eq!(u64::from_le_bytes(empty[40..48].try_into().unwrap()), 4, "and its losses");
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
    fn tar_headers_checksum_and_pad() {
        let t = tar(&[("trace/metadata", b"abc"), ("trace/stream_0", &[1u8; 600])]);
        assert_eq!(t.len(), 512 + 512 + 512 + 1024 + 1024);
        assert_eq!(&t[257..262], b"ustar");
        // The checksum is the byte sum with the checksum field read as spaces.
        let mut h = t[..512].to_vec();
        let stored = u32::from_str_radix(std::str::from_utf8(&h[148..154]).unwrap(), 8).unwrap();
        h[148..156].copy_from_slice(b"        ");
        assert_eq!(stored, h.iter().map(|&b| b as u32).sum::<u32>());
        assert_eq!(&t[124..135], b"00000000003");
        assert_eq!(&t[512..515], b"abc");
    }

    #[test]
    fn snapshot_holds_every_cpu_with_its_losses() {
        use crate::trace::ring::{CpuRings, Overflow};
        let rings: std::vec::Vec<CpuRings> = (0..2).map(|_| CpuRings::new([4, 2, 2], Overflow::Overwrite)).collect();
        for i in 0..6 {
            rings[0].rings[0].push(&ev(100 + i, 0));
        }
        rings[1].rings[2].push(&ev(50, 1));
        let t = snapshot_tar(&rings, "h");
        // ustar: 512-byte headers; names at offset 0 of each header.
        let names: std::vec::Vec<&str> = ["trace/metadata", "trace/stream_0", "trace/stream_1"].into_iter().filter(|n| t.windows(n.len()).any(|w| w == n.as_bytes())).collect();
        assert_eq!(names.len(), 3, "metadata and one stream per CPU");
        let text = std::string::String::from_utf8_lossy(&t);
        // CPU 0 kept the newest 4 of 6 (2 overwritten), CPU 1 its one event.
        assert!(text.contains("snapshot_events = 5;") && text.contains("snapshot_lost = 2;") && text.contains("snapshot_produced = 7;"), "{}", &text[..700.min(text.len())]);
    }
}
