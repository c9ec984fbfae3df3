//! Per-CPU trace ring buffers: NMI-safe, lock-free, with lost events counted.
//!
//! Each CPU has one ring per context (task, irq, nmi), so nested writers
//! never share a ring: an interrupt or NMI that lands in the middle of a
//! write on its CPU writes to its own context's ring (interrupt handlers do
//! not nest, and NMIs are blocked until the NMI handler's IRET). Each ring
//! thus has exactly one writer at a time, the CPU itself, and any number of
//! readers on other CPUs, which never stop the writer.
//!
//! A slot is guarded by a sequence word (a per-slot seqlock): the writer
//! marks it odd (being written) with the event's index, stores the words,
//! then marks it even. A reader reads the sequence, the words, the sequence
//! again, and keeps the event only if both reads show the index it expected
//! completed; else the slot was overwritten meanwhile and the event counts as
//! lost. All fields are atomics, so concurrent reading is defined behaviour.
//!
//! Full rings either drop the new event (`Overflow::Drop`) or overwrite the
//! oldest (`Overflow::Overwrite`); both are counted, and the writer never waits.

use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering, fence};

/// Words of one event.
pub const EVENT_WORDS: usize = 6;

/// What happens when a ring is full (`trace_overflow=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overflow {
    /// Keep the oldest events; count the new ones as lost.
    Drop,
    /// Keep the newest; readers count the overwritten ones as lost.
    Overwrite,
}

/// Event kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// A traced function ran (ip = the function's site, parent = its caller).
    Function = 0,
    /// A patch batch was applied (arg = sites).
    PatchBatch = 1,
    /// A sync round completed (arg = duration in ns).
    SyncRound = 2,
    /// A watchdog NMI tick.
    NmiTick = 3,
    /// A warning went to the NMI log (arg = record index).
    Warning = 4,
}

impl Kind {
    pub fn from_u8(v: u8) -> Option<Kind> {
        Some(match v {
            0 => Kind::Function,
            1 => Kind::PatchBatch,
            2 => Kind::SyncRound,
            3 => Kind::NmiTick,
            4 => Kind::Warning,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Function => "function",
            Kind::PatchBatch => "patch_batch",
            Kind::SyncRound => "sync_round",
            Kind::NmiTick => "nmi_tick",
            Kind::Warning => "warning",
        }
    }
}

/// One trace event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    pub ts_ns: u64,
    pub tsc: u64,
    pub ip: u64,
    pub parent: u64,
    pub kind: Kind,
    /// 0 task, 1 irq, 2 nmi.
    pub ctx: u8,
    pub cpu: u16,
    pub arg: u64,
}

impl Event {
    fn to_words(self) -> [u64; EVENT_WORDS] {
        let meta = self.kind as u64 | (self.ctx as u64) << 8 | (self.cpu as u64) << 16;
        [self.ts_ns, self.tsc, self.ip, self.parent, meta, self.arg]
    }

    fn from_words(w: [u64; EVENT_WORDS]) -> Option<Event> {
        Some(Event {
            ts_ns: w[0],
            tsc: w[1],
            ip: w[2],
            parent: w[3],
            kind: Kind::from_u8(w[4] as u8)?,
            ctx: (w[4] >> 8) as u8,
            cpu: (w[4] >> 16) as u16,
            arg: w[5],
        })
    }
}

struct Slot {
    /// 2 * index + 1 while being written, 2 * index + 2 once complete.
    seq: AtomicU64,
    words: [AtomicU64; EVENT_WORDS],
}

/// One single-writer ring.
pub struct Ring {
    slots: Vec<Slot>,
    mode: Overflow,
    /// Index of the next event to write (events written so far, dropped excluded).
    head: AtomicU64,
    /// `Drop` mode: index up to which a reader consumed.
    consumed: AtomicU64,
    /// Events dropped by the writer (`Drop` mode).
    dropped: AtomicU64,
}

/// What a read returned.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReadStats {
    /// Where the next read should start.
    pub next: u64,
    /// Events between the requested start and `next` that were overwritten
    /// before they could be read.
    pub lost: u64,
}

impl Ring {
    /// A ring of `capacity` events (at least 2). Allocates: boot time only.
    pub fn new(capacity: usize, mode: Overflow) -> Ring {
        let slots = (0..capacity.max(2)).map(|_| Slot { seq: AtomicU64::new(0), words: [const { AtomicU64::new(0) }; EVENT_WORDS] }).collect();
        Ring { slots, mode, head: AtomicU64::new(0), consumed: AtomicU64::new(0), dropped: AtomicU64::new(0) }
    }

    pub fn capacity(&self) -> u64 {
        self.slots.len() as u64
    }

    /// Events written so far.
    pub fn written(&self) -> u64 {
        self.head.load(Ordering::Acquire)
    }

    /// Events the writer dropped because the ring was full (`Drop` mode).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Append (the owning CPU, in the ring's context, only). Never waits;
    /// returns false when the event was dropped.
    pub fn push(&self, ev: &Event) -> bool {
        let i = self.head.load(Ordering::Relaxed);
        if self.mode == Overflow::Drop && i - self.consumed.load(Ordering::Acquire) >= self.capacity() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        let slot = &self.slots[(i % self.capacity()) as usize];
        slot.seq.store(2 * i + 1, Ordering::Relaxed);
        fence(Ordering::Release);
        for (w, v) in slot.words.iter().zip(ev.to_words()) {
            w.store(v, Ordering::Relaxed);
        }
        slot.seq.store(2 * i + 2, Ordering::Release);
        self.head.store(i + 1, Ordering::Release);
        true
    }

    /// Read events with index `from..` (up to `max`), without stopping the
    /// writer. Events already overwritten count as lost.
    pub fn read(&self, from: u64, max: usize, mut f: impl FnMut(u64, Event)) -> ReadStats {
        let head = self.head.load(Ordering::Acquire);
        let oldest = head.saturating_sub(self.capacity());
        let mut lost = oldest.saturating_sub(from);
        let start = from.max(oldest);
        let end = head.min(start.saturating_add(max as u64));
        for i in start..end {
            let slot = &self.slots[(i % self.capacity()) as usize];
            let s1 = slot.seq.load(Ordering::Acquire);
            let words: [u64; EVENT_WORDS] = core::array::from_fn(|k| slot.words[k].load(Ordering::Relaxed));
            fence(Ordering::Acquire);
            let s2 = slot.seq.load(Ordering::Relaxed);
            match (s1 == 2 * i + 2 && s2 == s1).then(|| Event::from_words(words)).flatten() {
                Some(ev) => f(i, ev),
                None => lost += 1,
            }
        }
        ReadStats { next: end, lost }
    }

    /// `Drop` mode: the reader is done with events below `upto`; their
    /// slots may be reused.
    pub fn consume(&self, upto: u64) {
        self.consumed.fetch_max(upto.min(self.head.load(Ordering::Acquire)), Ordering::Release);
    }
}

/// The rings of one CPU: one per context (task, irq, nmi).
pub struct CpuRings {
    pub rings: [Ring; 3],
}

impl CpuRings {
    /// Rings of these capacities for task, irq and nmi context.
    pub fn new(capacities: [usize; 3], mode: Overflow) -> CpuRings {
        CpuRings { rings: core::array::from_fn(|i| Ring::new(capacities[i], mode)) }
    }

    /// Events written, dropped by the writer, over all contexts.
    pub fn totals(&self) -> (u64, u64) {
        self.rings.iter().fold((0, 0), |(w, d), r| (w + r.written(), d + r.dropped()))
    }
}

/// Events per ring for `kb` KiB per CPU (three contexts; task gets half).
pub fn capacity_for_kb(kb: u32) -> [usize; 3] {
    let events = (kb as usize * 1024) / (EVENT_WORDS * 8 + 8);
    [(events / 2).max(2), (events / 4).max(2), (events / 4).max(2)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::vec::Vec;

    fn ev(n: u64) -> Event {
        Event { ts_ns: n, tsc: n * 3, ip: 0x20_0000 + n, parent: n ^ 0xdead_beef, kind: Kind::Function, ctx: (n % 3) as u8, cpu: 7, arg: n }
    }

    fn collect(r: &Ring, from: u64) -> (Vec<u64>, ReadStats) {
        let mut v = Vec::new();
        let s = r.read(from, usize::MAX, |_, e| v.push(e.arg));
        (v, s)
    }

    #[test]
    fn events_round_trip() {
        let r = Ring::new(8, Overflow::Overwrite);
        assert!(r.push(&ev(42)));
        let mut got = None;
        r.read(0, 10, |i, e| got = Some((i, e)));
        assert_eq!(got, Some((0, ev(42))));
    }

    #[test]
    fn overwrite_keeps_the_newest_and_readers_count_the_rest() {
        let r = Ring::new(4, Overflow::Overwrite);
        for n in 0..10 {
            assert!(r.push(&ev(n)));
        }
        let (v, s) = collect(&r, 0);
        assert_eq!(v, [6, 7, 8, 9]);
        assert_eq!(s, ReadStats { next: 10, lost: 6 });
        // Reading on from where we stopped: nothing new, nothing lost.
        assert_eq!(collect(&r, 10), (vec![], ReadStats { next: 10, lost: 0 }));
    }

    #[test]
    fn drop_keeps_the_oldest_and_the_writer_counts() {
        let r = Ring::new(4, Overflow::Drop);
        let kept: Vec<bool> = (0..6).map(|n| r.push(&ev(n))).collect();
        assert_eq!(kept, [true, true, true, true, false, false]);
        assert_eq!(r.dropped(), 2);
        let (v, s) = collect(&r, 0);
        assert_eq!(v, [0, 1, 2, 3]);
        assert_eq!(s.lost, 0);
        // Once consumed, the space is reused.
        r.consume(s.next);
        assert!(r.push(&ev(100)));
        assert_eq!(collect(&r, s.next).0, [100]);
    }

    #[test]
    fn a_concurrent_reader_sees_only_whole_events_and_accounts_for_all() {
        // One writer (as a CPU), one reader (as the network service).
        let r = Arc::new(Ring::new(64, Overflow::Overwrite));
        const N: u64 = 200_000;
        let w = {
            let r = r.clone();
            std::thread::spawn(move || {
                for n in 0..N {
                    r.push(&ev(n));
                }
            })
        };
        let (mut next, mut seen, mut lost) = (0u64, 0u64, 0u64);
        loop {
            let done = w.is_finished();
            let s = r.read(next, 32, |i, e| {
                assert_eq!(e, ev(i), "a torn or misplaced event at {i}");
                seen += 1;
            });
            lost += s.lost;
            next = s.next;
            if done && next == N {
                break;
            }
        }
        w.join().unwrap();
        assert_eq!(seen + lost, N, "every event is either read or counted lost");
    }

    #[test]
    fn nested_writers_use_their_own_rings_and_lose_nothing() {
        // A task write interrupted by an irq write interrupted by an NMI write,
        // as on one CPU: each context has its ring, so no write disturbs another.
        let cr = CpuRings::new([4, 4, 4], Overflow::Drop);
        let mut n = 0;
        for _ in 0..3 {
            // task starts writing, an irq arrives, an NMI arrives inside the irq
            for ctx in [0usize, 1, 2] {
                assert!(cr.rings[ctx].push(&ev(n)));
                n += 1;
            }
        }
        for (ctx, r) in cr.rings.iter().enumerate() {
            let (v, s) = collect(r, 0);
            assert_eq!(v, [ctx as u64, ctx as u64 + 3, ctx as u64 + 6]);
            assert_eq!(s.lost, 0);
        }
        // Overflow of one context's ring counts exactly, and only there.
        for k in 0..5 {
            cr.rings[2].push(&ev(100 + k));
        }
        assert_eq!(cr.rings[2].dropped(), 4, "capacity 4, 3 used: 1 more fits, 4 dropped");
        assert_eq!((cr.rings[0].dropped(), cr.rings[1].dropped()), (0, 0));
        assert_eq!(cr.totals(), (10, 4));
    }

    #[test]
    fn sizing_from_kib() {
        let c = capacity_for_kb(64);
        assert_eq!(c, [585, 292, 292], "56 bytes an event (6 words + the sequence word)");
        assert_eq!(capacity_for_kb(0), [2, 2, 2]);
        let cr = CpuRings::new([8, 4, 4], Overflow::Drop);
        assert_eq!(cr.rings.each_ref().map(|r| r.capacity()), [8, 4, 4]);
        cr.rings[2].push(&ev(1));
        assert_eq!(cr.totals(), (1, 0));
    }
}
