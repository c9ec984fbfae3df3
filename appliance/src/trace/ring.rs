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
//! oldest (`Overflow::Overwrite`); the writer never waits. Every event pushed
//! is accounted for exactly ([`Account`]): it is in the ring, or it was
//! dropped (counted by the writer when it drops), or it was overwritten (the
//! writer's index moved past it: in overwrite mode, every index below
//! `written - capacity`). A snapshot ([`Ring::snapshot`]) keeps the same
//! books: what it read, plus what was lost before and during the read, is
//! what had been produced when it started.

use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering, fence};

/// Words of one event.
pub const EVENT_WORDS: usize = 7;

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
    /// A patch batch was applied (arg = sites; `dur_ns` its length).
    PatchBatch = 1,
    /// A sync round ended (arg = 1 when it timed out; `dur_ns` its length).
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
    /// How long the event lasted, ending at `ts_ns` (0: an instant).
    pub dur_ns: u64,
}

impl Event {
    fn to_words(self) -> [u64; EVENT_WORDS] {
        let meta = self.kind as u64 | (self.ctx as u64) << 8 | (self.cpu as u64) << 16;
        [self.ts_ns, self.tsc, self.ip, self.parent, meta, self.arg, self.dur_ns]
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
            dur_ns: w[6],
        })
    }
}

/// One cache line (SDM Vol. 3A §12.1: 64-byte lines on every x86-64), so
/// that a reader of one slot never shares a line with the writer of the next.
#[repr(align(64))]
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

/// A ring's books at one moment: `produced = written + dropped` and
/// `produced = kept + overwritten + dropped`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Account {
    /// Events pushed into the ring (and their slots written).
    pub written: u64,
    /// Events the writer dropped because the ring was full (`Drop` mode).
    pub dropped: u64,
    /// Events overwritten by newer ones (`Overwrite` mode).
    pub overwritten: u64,
}

impl Account {
    /// Every event the tracer produced for this ring.
    pub fn produced(&self) -> u64 {
        self.written + self.dropped
    }

    /// Events no reader can get any more.
    pub fn lost(&self) -> u64 {
        self.dropped + self.overwritten
    }

    /// Events in the ring now.
    pub fn kept(&self) -> u64 {
        self.written - self.overwritten
    }
}

impl core::ops::AddAssign for Account {
    fn add_assign(&mut self, o: Account) {
        self.written += o.written;
        self.dropped += o.dropped;
        self.overwritten += o.overwritten;
    }
}

/// What one snapshot read of a ring found. `read + lost = produced`, exactly.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// The ring's books when the snapshot started.
    pub at_start: Account,
    /// Events handed to the reader.
    pub read: u64,
    /// Events overwritten while the snapshot was being read.
    pub lost_while_reading: u64,
}

impl Snapshot {
    /// Lost before the oldest event read (overwritten; in time order, before it).
    pub fn lost_before(&self) -> u64 {
        self.at_start.overwritten + self.lost_while_reading
    }

    /// Lost after the newest event read (dropped: the ring was full).
    pub fn lost_after(&self) -> u64 {
        self.at_start.dropped
    }

    pub fn lost(&self) -> u64 {
        self.lost_before() + self.lost_after()
    }

    pub fn produced(&self) -> u64 {
        self.at_start.produced()
    }
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

    /// The slot of event `i`: a mask when the capacity is a power of two (the
    /// default sizes are), else a division (slower: a DIV on the event path).
    fn slot(&self, i: u64) -> &Slot {
        let cap = self.capacity();
        let k = if cap.is_power_of_two() { i & (cap - 1) } else { i % cap };
        &self.slots[k as usize]
    }

    /// Events written so far.
    pub fn written(&self) -> u64 {
        self.head.load(Ordering::Acquire)
    }

    /// Events the writer dropped because the ring was full (`Drop` mode).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// The books now (lock-free; from any CPU).
    pub fn account(&self) -> Account {
        let written = self.head.load(Ordering::Acquire);
        let dropped = self.dropped.load(Ordering::Acquire);
        let overwritten = match self.mode {
            Overflow::Overwrite => written.saturating_sub(self.capacity()),
            Overflow::Drop => 0,
        };
        Account { written, dropped, overwritten }
    }

    /// Read every event the ring holds now, oldest first, without stopping
    /// the writer; events the writer overwrites meanwhile are counted, not read.
    pub fn snapshot(&self, f: impl FnMut(u64, Event)) -> Snapshot {
        let at_start = self.account();
        let from = at_start.written.saturating_sub(self.capacity());
        let mut read = 0u64;
        let mut f = f;
        let st = self.read_until(from, at_start.written, |i, e| {
            read += 1;
            f(i, e)
        });
        Snapshot { at_start, read, lost_while_reading: st.lost }
    }

    /// Append (the owning CPU, in the ring's context, only). Never waits;
    /// returns false when the event was dropped.
    pub fn push(&self, ev: &Event) -> bool {
        let i = self.head.load(Ordering::Relaxed);
        if self.mode == Overflow::Drop && i - self.consumed.load(Ordering::Acquire) >= self.capacity() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        let slot = self.slot(i);
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
    pub fn read(&self, from: u64, max: usize, f: impl FnMut(u64, Event)) -> ReadStats {
        self.read_bounded(from, |start| start.saturating_add(max as u64), f)
    }

    /// Read events with index `from..until` (those written by then), without
    /// stopping the writer. Events already overwritten count as lost.
    pub fn read_until(&self, from: u64, until: u64, f: impl FnMut(u64, Event)) -> ReadStats {
        self.read_bounded(from, |_| until, f)
    }

    /// Read at most `max` events with index `from..until`. Events already
    /// overwritten in that range count as lost.
    pub fn read_some(&self, from: u64, until: u64, max: usize, f: impl FnMut(u64, Event)) -> ReadStats {
        self.read_bounded(from, |start| until.min(start.saturating_add(max as u64)), f)
    }

    /// `end(start)`: the index to stop at, given the first one still in the ring.
    fn read_bounded(&self, from: u64, end: impl FnOnce(u64) -> u64, mut f: impl FnMut(u64, Event)) -> ReadStats {
        let head = self.head.load(Ordering::Acquire);
        let oldest = head.saturating_sub(self.capacity());
        let first = from.max(oldest);
        let bound = end(first);
        // Never skip past the bound: what was overwritten beyond it is not this read's.
        let start = first.min(bound.max(from));
        let end = head.min(bound).max(start);
        let mut lost = start - from.min(start);
        for i in start..end {
            let slot = self.slot(i);
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

    /// The books of each context's ring now (task, irq, nmi).
    pub fn accounts(&self) -> [Account; 3] {
        self.rings.each_ref().map(Ring::account)
    }

    /// The books over all contexts now.
    pub fn account(&self) -> Account {
        let mut a = Account::default();
        for r in &self.rings {
            a += r.account();
        }
        a
    }
}

/// One CPU's events over its three contexts, merged by timestamp, with
/// the books of the read (what the CTF and trace.dat snapshots serve).
#[derive(Clone, Debug, Default)]
pub struct CpuSnapshot {
    pub events: Vec<Event>,
    /// Lost before the oldest event kept (overwritten).
    pub lost_before: u64,
    /// Lost after the newest (dropped by the writer: the ring was full).
    pub lost_after: u64,
    /// Produced when the read started.
    pub produced: u64,
}

impl CpuRings {
    /// Read every context's ring (see [`Ring::snapshot`]) and merge them by
    /// timestamp. Each ring is already in time order (one writer, a
    /// monotonic clock), so a linear three-way merge does what a sort would;
    /// on equal timestamps the lower context comes first.
    pub fn snapshot(&self) -> CpuSnapshot {
        let mut s = CpuSnapshot::default();
        let mut per: [Vec<Event>; 3] = Default::default();
        for (r, v) in self.rings.iter().zip(per.iter_mut()) {
            // Room for all it may read, so the copy never moves.
            v.reserve(r.account().written.min(r.capacity()) as usize);
            let st = r.snapshot(|_, e| v.push(e));
            s.lost_before += st.lost_before();
            s.lost_after += st.lost_after();
            s.produced += st.produced();
        }
        s.events = merge_by_time(per);
        s
    }
}

/// Merge time-ordered event lists into one time-ordered list (stable: on
/// equal timestamps, the earlier list's event first). The events go out in
/// runs: once a list's next event is the first, its events follow it for as
/// long as each still comes before every other list's next one, and the run
/// is copied whole. A CPU's task ring holds most of its events, so the runs
/// are long; under TCG a snapshot of 16,000 events spent most of its time
/// merging them one by one.
pub fn merge_by_time<const N: usize>(lists: [Vec<Event>; N]) -> Vec<Event> {
    let mut out = Vec::with_capacity(lists.iter().map(Vec::len).sum());
    let mut at = [0usize; N];
    loop {
        let next = (0..N).filter(|&k| at[k] < lists[k].len()).min_by_key(|&k| (lists[k][at[k]].ts_ns, k));
        let Some(k) = next else { break };
        // Another list's next event comes first if it is earlier, or as
        // early and from an earlier list.
        let head = |j: usize| lists[j].get(at[j]).map(|e| e.ts_ns);
        let before = (0..k).filter_map(head).min();
        let after = (k + 1..N).filter_map(head).min();
        let run = &lists[k][at[k]..];
        let n = run.iter().take_while(|e| before.is_none_or(|t| e.ts_ns < t) && after.is_none_or(|t| e.ts_ns <= t)).count().max(1);
        out.extend_from_slice(&run[..n]);
        at[k] += n;
    }
    out
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
        Event { ts_ns: n, tsc: n * 3, ip: 0x20_0000 + n, parent: n ^ 0xdead_beef, kind: Kind::Function, ctx: (n % 3) as u8, cpu: 7, arg: n, dur_ns: n / 2 }
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
        assert_eq!(cr.account(), Account { written: 10, dropped: 4, overwritten: 0 });
    }

    #[test]
    fn sizing_from_kib() {
        let c = capacity_for_kb(64);
        assert_eq!(c, [512, 256, 256], "64 bytes an event (7 words + the sequence word): one cache line");
        assert_eq!(capacity_for_kb(0), [2, 2, 2]);
        let cr = CpuRings::new([8, 4, 4], Overflow::Drop);
        assert_eq!(cr.rings.each_ref().map(|r| r.capacity()), [8, 4, 4]);
        cr.rings[2].push(&ev(1));
        assert_eq!(cr.account().produced(), 1);
    }

    #[test]
    fn merging_keeps_time_order_and_ties_by_list() {
        let e = |ts: u64, ctx: u8| Event { ts_ns: ts, ctx, ..ev(0) };
        let m = merge_by_time([vec![e(1, 0), e(5, 0), e(9, 0)], vec![e(2, 1), e(5, 1)], vec![e(0, 2), e(10, 2)]]);
        let got: Vec<(u64, u8)> = m.iter().map(|x| (x.ts_ns, x.ctx)).collect();
        assert_eq!(got, vec![(0, 2), (1, 0), (2, 1), (5, 0), (5, 1), (9, 0), (10, 2)]);
        assert!(merge_by_time::<3>(Default::default()).is_empty());
        // The same as a stable sort of the concatenation, on a larger case.
        let lists: [Vec<Event>; 3] = core::array::from_fn(|k| (0..500u64).map(|i| e(i * (k as u64 + 2) % 997 + i * 3, k as u8)).collect::<Vec<_>>());
        let lists = lists.map(|mut l| {
            l.sort_by_key(|x| x.ts_ns);
            l
        });
        let mut flat: Vec<Event> = lists.iter().flatten().copied().collect();
        flat.sort_by_key(|x| x.ts_ns);
        assert_eq!(merge_by_time(lists), flat);
        // Long runs and ties across lists, as a CPU's rings give: a long
        // task list, sparse irq and nmi lists, equal timestamps in every list,
        // and the end of time.
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut rand = |m: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % m
        };
        for round in 0..50 {
            let lens = [rand(400) as usize, rand(20) as usize, rand(5) as usize];
            let step = if round % 2 == 0 { 3 } else { 1 };
            let lists: [Vec<Event>; 3] = core::array::from_fn(|k| {
                let mut l: Vec<Event> = (0..lens[k]).map(|i| Event { arg: i as u64, ..e(rand(200) * step, k as u8) }).collect();
                if round % 5 == 0 && !l.is_empty() {
                    l[0].ts_ns = u64::MAX;
                }
                l.sort_by_key(|x| x.ts_ns);
                l
            });
            let mut flat: Vec<Event> = lists.iter().flatten().copied().collect();
            flat.sort_by_key(|x| x.ts_ns);
            assert_eq!(merge_by_time(lists), flat, "round {round}");
        }
    }

    #[test]
    fn a_read_lapped_by_the_writer_counts_only_its_own_range() {
        let r = Ring::new(4, Overflow::Overwrite);
        for n in 0..20 {
            r.push(&ev(n));
        }
        // Events 2..6 were overwritten long ago: all 4 lost, none read, none past 6.
        let mut got = Vec::new();
        let s = r.read_until(2, 6, |_, e| got.push(e.arg));
        assert_eq!((got.len(), s), (0, ReadStats { next: 6, lost: 4 }));
        let mut got = Vec::new();
        let s = r.read_until(14, 18, |_, e| got.push(e.arg));
        assert_eq!((got, s), (vec![16, 17], ReadStats { next: 18, lost: 2 }));
        let mut got = Vec::new();
        let s = r.read_some(14, 18, 1, |_, e| got.push(e.arg));
        assert_eq!((got, s), (vec![16], ReadStats { next: 17, lost: 2 }));
        let s = r.read_some(2, 6, 1, |_, _| panic!("nothing of 2..6 is left"));
        assert_eq!(s, ReadStats { next: 6, lost: 4 });
    }

    #[test]
    fn the_books_balance_in_both_modes() {
        for mode in [Overflow::Overwrite, Overflow::Drop] {
            let r = Ring::new(4, mode);
            for n in 0..11 {
                r.push(&ev(n));
                let a = r.account();
                assert_eq!(a.produced(), n + 1, "{mode:?}");
                assert_eq!(a.kept() + a.lost(), a.produced(), "{mode:?}");
                assert!(a.kept() <= 4);
            }
            let a = r.account();
            match mode {
                Overflow::Overwrite => assert_eq!(a, Account { written: 11, dropped: 0, overwritten: 7 }),
                Overflow::Drop => assert_eq!(a, Account { written: 4, dropped: 7, overwritten: 0 }),
            }
            let mut got = Vec::new();
            let s = r.snapshot(|_, e| got.push(e.arg));
            assert_eq!(s.read + s.lost(), s.produced(), "{mode:?}");
            assert_eq!(got, if mode == Overflow::Drop { vec![0, 1, 2, 3] } else { vec![7, 8, 9, 10] });
            assert_eq!((s.lost_before(), s.lost_after()), if mode == Overflow::Drop { (0, 7) } else { (7, 0) });
        }
    }

    #[test]
    fn snapshots_under_a_concurrent_writer_balance_exactly() {
        // A writer thread (the CPU, any context) against snapshots (the
        // network service): each snapshot's read + lost is what had been
        // produced when it started, whatever the writer did meanwhile.
        for mode in [Overflow::Overwrite, Overflow::Drop] {
            let r = Arc::new(Ring::new(32, mode));
            const N: u64 = 300_000;
            let w = {
                let r = r.clone();
                std::thread::spawn(move || {
                    for n in 0..N {
                        r.push(&ev(n));
                    }
                })
            };
            let mut snapshots = 0;
            while !w.is_finished() || snapshots == 0 {
                let mut last = None;
                let s = r.snapshot(|i, e| {
                    assert_eq!(e, ev(i), "torn or misplaced event");
                    assert!(last.is_none_or(|l| l < i), "out of order");
                    last = Some(i);
                });
                assert_eq!(s.read + s.lost(), s.produced(), "{mode:?}: {s:?}");
                snapshots += 1;
            }
            w.join().unwrap();
            let a = r.account();
            assert_eq!(a.produced(), N);
            assert_eq!(a.kept() + a.lost(), N);
        }
    }

    #[test]
    fn nested_contexts_keep_separate_exact_books() {
        // Simulated nesting on one CPU: a task write interrupted by irq
        // writes, themselves interrupted by NMI writes, each context in its
        // own ring of a different size, in both modes.
        for mode in [Overflow::Overwrite, Overflow::Drop] {
            let cr = CpuRings::new([8, 4, 2], mode);
            let mut produced = [0u64; 3];
            for round in 0..50u64 {
                cr.rings[0].push(&ev(round));
                produced[0] += 1;
                for k in 0..(round % 3) {
                    cr.rings[1].push(&ev(1000 + k));
                    produced[1] += 1;
                    if k % 2 == 0 {
                        cr.rings[2].push(&ev(2000 + k));
                        produced[2] += 1;
                    }
                }
            }
            for (ctx, a) in cr.accounts().iter().enumerate() {
                assert_eq!(a.produced(), produced[ctx], "{mode:?} ctx {ctx}");
                assert_eq!(a.kept() + a.lost(), produced[ctx], "{mode:?} ctx {ctx}");
                assert_eq!(a.kept(), produced[ctx].min(cr.rings[ctx].capacity()), "{mode:?} ctx {ctx}");
            }
            assert_eq!(cr.account().produced(), produced.iter().sum::<u64>());
        }
    }
}
