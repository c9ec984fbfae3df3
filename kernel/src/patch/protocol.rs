//! The breakpoint protocol for cross-modifying 5-byte trace sites, with no
//! hardware access: a [`Platform`] writes bytes (through a writable alias of
//! the text) and runs sync rounds (every other CPU executes a serializing
//! instruction and acknowledges).
//!
//! For a batch of N sites (sorted by address, as the int3 handler
//! binary-searches it):
//! 1. write `int3` (0xCC) on every site's first byte; sync;
//! 2. write bytes 1..5 of every new instruction; sync;
//! 3. write every new first byte; sync.
//!
//! Three sync rounds per batch whatever N is, as Linux's
//! `smp_text_poke_batch_finish` (arch/x86/kernel/alternative.c) does.
//! Between any two writes, a CPU fetching a site sees either the old
//! instruction, the new one, or `int3` followed by tail bytes: the int3
//! handler then emulates the new instruction ([`emulate`]).

/// The 5-byte NOP of a disabled site (`nopl 0x0(%rax,%rax,1)`).
pub const NOP5: [u8; 5] = [0x0f, 0x1f, 0x44, 0x00, 0x00];
/// `int3`.
pub const INT3: u8 = 0xcc;
/// `call rel32` opcode.
pub const CALL_REL32: u8 = 0xe8;
/// Length of a site.
pub const SITE_LEN: u64 = 5;

/// The two instructions a site can hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Insn {
    Nop5,
    Call { target: u64 },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// `call rel32` cannot reach the target from this site.
    OutOfRange { site: u64, target: u64 },
    /// Two patches in one batch overlap.
    Overlap { site: u64 },
    /// A site does not hold the bytes the patch expects to replace.
    Unexpected { site: u64, found: [u8; 5] },
    /// A sync round was not acknowledged by every CPU.
    Sync,
}

/// Encode `insn` for the site at `site`.
pub fn encode(site: u64, insn: Insn) -> Result<[u8; 5], Error> {
    match insn {
        Insn::Nop5 => Ok(NOP5),
        Insn::Call { target } => {
            let rel = target.wrapping_sub(site + SITE_LEN) as i64;
            let rel32 = i32::try_from(rel).map_err(|_| Error::OutOfRange { site, target })?;
            let r = rel32.to_le_bytes();
            Ok([CALL_REL32, r[0], r[1], r[2], r[3]])
        }
    }
}

/// Decode the bytes of a site (None: neither instruction).
pub fn decode(site: u64, b: [u8; 5]) -> Option<Insn> {
    if b == NOP5 {
        Some(Insn::Nop5)
    } else if b[0] == CALL_REL32 {
        let rel = i32::from_le_bytes([b[1], b[2], b[3], b[4]]) as i64;
        Some(Insn::Call { target: (site + SITE_LEN).wrapping_add(rel as u64) })
    } else {
        None
    }
}

/// One site's change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Patch {
    pub site: u64,
    pub old: [u8; 5],
    pub new: [u8; 5],
}

impl Patch {
    pub fn new(site: u64, from: Insn, to: Insn) -> Result<Patch, Error> {
        Ok(Patch { site, old: encode(site, from)?, new: encode(site, to)? })
    }
}

/// What the protocol needs from a platform.
pub trait Platform {
    /// Read a site's current bytes.
    fn read(&self, site: u64) -> [u8; 5];
    /// Write `bytes` at `addr` (through the writable alias).
    fn write(&mut self, addr: u64, bytes: &[u8]);
    /// Publish the sorted batch for the int3 handler (before the first int3
    /// is written), or withdraw it (`None`, after the last sync; the platform
    /// must then wait until no CPU is still inside the int3 handler).
    fn publish(&mut self, batch: Option<&[Patch]>);
    /// One sync round on every other CPU.
    fn sync(&mut self) -> Result<(), Error>;
    /// Called after each store of a phase of the int3 protocol, when no
    /// other CPU is waited on: the platform may let the other CPUs run.
    /// Nothing by default.
    fn after_store(&mut self) {}
}

/// Counters of one batch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BatchStats {
    pub sites: usize,
    pub sync_rounds: u32,
}

/// Sort and check a batch: no overlaps, and every site holds its `old` bytes.
pub fn plan(platform: &impl Platform, batch: &mut [Patch]) -> Result<(), Error> {
    batch.sort_unstable_by_key(|p| p.site);
    for w in batch.windows(2) {
        if w[1].site < w[0].site + SITE_LEN {
            return Err(Error::Overlap { site: w[1].site });
        }
    }
    for p in batch.iter() {
        let found = platform.read(p.site);
        if found != p.old {
            return Err(Error::Unexpected { site: p.site, found });
        }
    }
    Ok(())
}

/// Apply a batch with the int3 protocol (three sync rounds).
pub fn apply_int3(platform: &mut impl Platform, batch: &mut [Patch]) -> Result<BatchStats, Error> {
    plan(platform, batch)?;
    let mut stats = BatchStats { sites: batch.len(), sync_rounds: 0 };
    if batch.is_empty() {
        return Ok(stats);
    }
    platform.publish(Some(batch));
    // Once the first int3 is written the batch stays published until every
    // site is complete: the int3 handler needs its table for as long as one
    // int3 is in the text. A sync round that fails (a CPU did not answer in
    // time) is tried again until it succeeds, as Linux's text_poke_sync waits
    // for every CPU; the platform reports each failure.
    for p in batch.iter() {
        platform.write(p.site, &[INT3]);
        platform.after_store();
    }
    sync_until_done(platform, &mut stats);
    for p in batch.iter() {
        platform.write(p.site + 1, &p.new[1..]);
        platform.after_store();
    }
    sync_until_done(platform, &mut stats);
    for p in batch.iter() {
        platform.write(p.site, &p.new[..1]);
        platform.after_store();
    }
    sync_until_done(platform, &mut stats);
    platform.publish(None);
    Ok(stats)
}

/// One sync round, repeated until every CPU answered.
fn sync_until_done(platform: &mut impl Platform, stats: &mut BatchStats) {
    loop {
        stats.sync_rounds += 1;
        if platform.sync().is_ok() {
            return;
        }
    }
}

/// The `naive` strategy's two stores for one patch, in order: (address,
/// bytes of `new`). Ordered so that the only torn state is `e8` followed by
/// the NOP's tail (a CALL by 0x441f): NOP->CALL writes the first byte, then
/// the 4-byte tail; CALL->NOP writes the tail, then the first byte.
pub fn naive_stores(p: &Patch) -> [(u64, core::ops::Range<usize>); 2] {
    if p.new[0] == CALL_REL32 {
        [(p.site, 0..1), (p.site + 1, 1..5)]
    } else {
        [(p.site + 1, 1..5), (p.site, 0..1)]
    }
}

/// Where a CALL torn as `e8` + the NOP's tail goes.
pub fn torn_call_target(site: u64) -> u64 {
    site + SITE_LEN + u32::from_le_bytes([NOP5[1], NOP5[2], NOP5[3], NOP5[4]]) as u64
}

/// What the int3 handler does for a trap at `ip` (the address after the int3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Emulation {
    /// Skip the site: continue at `rip`.
    Skip { rip: u64 },
    /// Push `ret` on the interrupted stack and continue at `rip`.
    Call { ret: u64, rip: u64 },
}

/// Look up `ip - 1` among the published batch (sorted) and say how to emulate
/// the instruction that will be there. None: not a site under modification
/// (a real breakpoint). No allocation, no lock: safe in any context.
pub fn emulate(batch: &[Patch], ip: u64) -> Option<Emulation> {
    let site = ip.checked_sub(1)?;
    let i = batch.binary_search_by_key(&site, |p| p.site).ok()?;
    let p = &batch[i];
    match decode(site, p.new)? {
        Insn::Nop5 => Some(Emulation::Skip { rip: site + SITE_LEN }),
        Insn::Call { target } => Some(Emulation::Call { ret: site + SITE_LEN, rip: target }),
    }
}

/// The batch under modification as the int3 handler sees it: published by
/// the patching CPU before its first int3, withdrawn after its last sync.
/// Lock-free on the handler side (any context, NMI included); the patching
/// side does not reuse the batch's memory while any handler may still read it.
pub struct Published {
    ptr: core::sync::atomic::AtomicPtr<Patch>,
    len: core::sync::atomic::AtomicUsize,
    inflight: core::sync::atomic::AtomicU32,
}

impl Published {
    pub const fn new() -> Self {
        Published {
            ptr: core::sync::atomic::AtomicPtr::new(core::ptr::null_mut()),
            len: core::sync::atomic::AtomicUsize::new(0),
            inflight: core::sync::atomic::AtomicU32::new(0),
        }
    }

    /// Publish `batch` (sorted), or withdraw (`None`) and wait until no
    /// handler is inside [`Published::emulate`]. The slice must stay alive and
    /// unchanged until withdrawn.
    pub fn set(&self, batch: Option<&[Patch]>) {
        use core::sync::atomic::Ordering;
        match batch {
            Some(b) => {
                self.ptr.store(b.as_ptr() as *mut Patch, Ordering::Release);
                self.len.store(b.len(), Ordering::Release);
            }
            None => {
                self.len.store(0, Ordering::Release);
                self.ptr.store(core::ptr::null_mut(), Ordering::Release);
                while self.inflight.load(Ordering::Acquire) != 0 {
                    core::hint::spin_loop();
                }
            }
        }
    }

    /// The handler's lookup: how to emulate a trap at `ip` (the address after
    /// the int3), if it is a site of the published batch.
    pub fn emulate(&self, ip: u64) -> Option<Emulation> {
        use core::sync::atomic::Ordering;
        self.inflight.fetch_add(1, Ordering::SeqCst);
        let len = self.len.load(Ordering::Acquire);
        let ptr = self.ptr.load(Ordering::Acquire);
        let e = if len != 0 && !ptr.is_null() {
            // SAFETY: a published slice stays valid and unchanged until `set(None)`
            // has seen `inflight` drop to zero (contract of `set`).
            emulate(unsafe { core::slice::from_raw_parts(ptr, len) }, ip)
        } else {
            None
        };
        self.inflight.fetch_sub(1, Ordering::Release);
        e
    }
}

impl Default for Published {
    fn default() -> Self {
        Self::new()
    }
}

/// The part of an interrupted register frame the emulation changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame {
    pub rip: u64,
    pub rsp: u64,
}

impl Emulation {
    /// Apply to the interrupted frame; `push(addr, value)` writes the return
    /// address of an emulated CALL on the interrupted stack (no red zone: the
    /// word below RSP is free at a site).
    pub fn apply(self, f: &mut Frame, push: impl FnOnce(u64, u64)) {
        match self {
            Emulation::Skip { rip } => f.rip = rip,
            Emulation::Call { ret, rip } => {
                f.rsp -= 8;
                push(f.rsp, ret);
                f.rip = rip;
            }
        }
    }
}

/// How a CPU may find a site's bytes while a batch is applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen {
    Old,
    New,
    /// First byte `int3`: the handler emulates.
    Trap,
    /// Anything else: executing it would run a torn instruction.
    Torn,
}

pub fn classify(p: &Patch, bytes: [u8; 5]) -> Seen {
    if bytes == p.old {
        Seen::Old
    } else if bytes == p.new {
        Seen::New
    } else if bytes[0] == INT3 {
        Seen::Trap
    } else {
        Seen::Torn
    }
}

/// The site whose 5 bytes contain `addr`, in `sites` sorted by address.
pub fn site_containing(sites: &[u64], addr: u64) -> Option<u64> {
    let i = sites.partition_point(|&s| s <= addr).checked_sub(1)?;
    let s = sites[i];
    (addr < s + SITE_LEN).then_some(s)
}

/// What the torn-execution oracle makes of a fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Torn {
    /// The CPU faulted inside a half-written site: resume after the site.
    Inside { site: u64 },
    /// A torn CALL from `site` went somewhere wrong and faulted there: its
    /// return address `site + 5` is on top of the stack; pop it and resume there.
    WildCall { site: u64 },
}

/// The oracle's decision for a fault at `rip` with exception `vector` (3 is
/// #BP, whose RIP is one past the `int3`). `stack_top` reads the word on top
/// of the interrupted stack, when it can be read. `None`: not a torn
/// execution (a real fault or breakpoint).
pub fn classify_fault(sites: &[u64], vector: u8, rip: u64, stack_top: impl FnOnce() -> Option<u64>) -> Option<Torn> {
    // A #BP inside a site is its int3 byte only when its batch is gone: also torn.
    let at = if vector == 3 { rip.wrapping_sub(1) } else { rip };
    if let Some(site) = site_containing(sites, at) {
        return Some(Torn::Inside { site });
    }
    let site = stack_top()?.checked_sub(SITE_LEN)?;
    sites.binary_search(&site).is_ok().then_some(Torn::WildCall { site })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::vec::Vec;

    /// Simulated text: after every single write, every site's bytes are checked.
    struct Sim {
        mem: BTreeMap<u64, u8>,
        watch: Vec<Patch>,
        published: bool,
        syncs: u32,
        writes: u32,
        /// `after_store` calls, and the writes seen by the last of them.
        after_stores: u32,
        writes_at_last_after_store: u32,
        fail_sync_at: Option<u32>,
        /// Check that every sync round runs with the batch published.
        published_during_syncs: bool,
    }

    impl Sim {
        fn new(sites: &[(u64, [u8; 5])]) -> Sim {
            let mut mem = BTreeMap::new();
            for (a, b) in sites {
                for (i, x) in b.iter().enumerate() {
                    mem.insert(a + i as u64, *x);
                }
            }
            Sim { mem, watch: Vec::new(), published: false, syncs: 0, writes: 0, after_stores: 0, writes_at_last_after_store: 0, fail_sync_at: None, published_during_syncs: false }
        }
    }

    impl Platform for Sim {
        fn read(&self, site: u64) -> [u8; 5] {
            core::array::from_fn(|i| self.mem[&(site + i as u64)])
        }
        fn write(&mut self, addr: u64, bytes: &[u8]) {
            assert!(self.published, "a site changed before the batch was published to the int3 handler");
            for (i, b) in bytes.iter().enumerate() {
                self.mem.insert(addr + i as u64, *b);
            }
            self.writes += 1;
            for p in &self.watch {
                let seen = classify(p, self.read(p.site));
                assert_ne!(seen, Seen::Torn, "site {:#x} torn after write {}", p.site, self.writes);
            }
        }
        fn publish(&mut self, batch: Option<&[Patch]>) {
            self.published = batch.is_some();
            if let Some(b) = batch {
                assert!(b.windows(2).all(|w| w[0].site < w[1].site), "published batch is not sorted");
            }
        }
        fn sync(&mut self) -> Result<(), Error> {
            self.syncs += 1;
            if self.published_during_syncs {
                assert!(self.published, "a sync round ran with the batch withdrawn");
            }
            if self.fail_sync_at == Some(self.syncs) { Err(Error::Sync) } else { Ok(()) }
        }
        fn after_store(&mut self) {
            assert_eq!(self.writes, self.writes_at_last_after_store + 1, "after_store once after each store");
            self.after_stores += 1;
            self.writes_at_last_after_store = self.writes;
        }
    }

    const TRAMPOLINE: u64 = 0x20_0000;

    fn sites(n: u64) -> Vec<u64> {
        // Unsorted on purpose.
        (0..n).map(|i| 0x30_0000 + ((i * 7919) % n) * 64).collect()
    }

    #[test]
    fn encode_decode_round_trip_and_range() {
        let site = 0x40_0000;
        let b = encode(site, Insn::Call { target: TRAMPOLINE }).unwrap();
        assert_eq!(b[0], CALL_REL32);
        assert_eq!(decode(site, b), Some(Insn::Call { target: TRAMPOLINE }));
        assert_eq!(decode(site, NOP5), Some(Insn::Nop5));
        assert_eq!(decode(site, [0x90; 5]), None);
        assert_eq!(
            encode(0x1_0000_0000_0000, Insn::Call { target: 0x1000 }),
            Err(Error::OutOfRange { site: 0x1_0000_0000_0000, target: 0x1000 })
        );
    }

    #[test]
    fn three_sync_rounds_whatever_the_batch_size_and_never_torn() {
        for n in [1u64, 10, 100, 300] {
            let s = sites(n);
            let init: Vec<(u64, [u8; 5])> = s.iter().map(|&a| (a, NOP5)).collect();
            let mut sim = Sim::new(&init);
            let mut batch: Vec<Patch> = s.iter().map(|&a| Patch::new(a, Insn::Nop5, Insn::Call { target: TRAMPOLINE }).unwrap()).collect();
            sim.watch = batch.clone();
            let stats = apply_int3(&mut sim, &mut batch).unwrap();
            assert_eq!(stats, BatchStats { sites: n as usize, sync_rounds: 3 });
            assert_eq!(sim.syncs, 3);
            assert_eq!(sim.after_stores, 3 * n as u32, "each store is followed by after_store");
            assert!(!sim.published, "batch withdrawn after the last sync");
            for p in &batch {
                assert_eq!(decode(p.site, sim.read(p.site)), Some(Insn::Call { target: TRAMPOLINE }));
            }
            // And back.
            let mut back: Vec<Patch> = batch.iter().map(|p| Patch { site: p.site, old: p.new, new: p.old }).collect();
            sim.watch = back.clone();
            apply_int3(&mut sim, &mut back).unwrap();
            assert!(back.iter().all(|p| sim.read(p.site) == NOP5));
        }
    }

    #[test]
    fn emulation_of_the_new_instruction() {
        let mut batch = vec![
            Patch::new(0x30_0040, Insn::Call { target: TRAMPOLINE }, Insn::Nop5).unwrap(),
            Patch::new(0x30_0000, Insn::Nop5, Insn::Call { target: TRAMPOLINE }).unwrap(),
        ];
        batch.sort_by_key(|p| p.site);
        assert_eq!(emulate(&batch, 0x30_0001), Some(Emulation::Call { ret: 0x30_0005, rip: TRAMPOLINE }));
        assert_eq!(emulate(&batch, 0x30_0041), Some(Emulation::Skip { rip: 0x30_0045 }));
        assert_eq!(emulate(&batch, 0x30_0002), None, "int3 not on a site's first byte: a real breakpoint");
        assert_eq!(emulate(&batch, 0), None);
        assert_eq!(emulate(&[], 0x30_0001), None);
    }

    #[test]
    fn published_batches_are_found_until_withdrawn() {
        let p = Published::new();
        assert_eq!(p.emulate(0x30_0001), None);
        let batch = [Patch::new(0x30_0000, Insn::Nop5, Insn::Call { target: TRAMPOLINE }).unwrap()];
        p.set(Some(&batch));
        assert_eq!(p.emulate(0x30_0001), Some(Emulation::Call { ret: 0x30_0005, rip: TRAMPOLINE }));
        p.set(None);
        assert_eq!(p.emulate(0x30_0001), None);
    }

    #[test]
    fn emulation_on_a_recorded_frame() {
        // RIP/RSP as a #BP at a generated traced function's site left them
        // (recorded from a QEMU run: site 0x2067f4, trampoline 0x204e40).
        let site = 0x2067f4;
        let trampoline = 0x204e40;
        let on = [Patch::new(site, Insn::Nop5, Insn::Call { target: trampoline }).unwrap()];
        let mut f = Frame { rip: site + 1, rsp: 0x668ee8 };
        let mut pushed = Vec::new();
        emulate(&on, f.rip).unwrap().apply(&mut f, |a, v| pushed.push((a, v)));
        assert_eq!(f, Frame { rip: trampoline, rsp: 0x668ee0 });
        assert_eq!(pushed, [(0x668ee0, site + 5)], "the CALL's return address, where the CPU would have pushed it");
        let off = [Patch::new(site, Insn::Call { target: trampoline }, Insn::Nop5).unwrap()];
        let mut f = Frame { rip: site + 1, rsp: 0x668ee8 };
        emulate(&off, f.rip).unwrap().apply(&mut f, |_, _| panic!("a NOP pushes nothing"));
        assert_eq!(f, Frame { rip: site + 5, rsp: 0x668ee8 });
    }

    #[test]
    fn bad_batches_are_refused_before_any_write() {
        let mut sim = Sim::new(&[(0x1000, NOP5), (0x1003, NOP5)]);
        let mut overlap = vec![
            Patch::new(0x1003, Insn::Nop5, Insn::Call { target: TRAMPOLINE }).unwrap(),
            Patch::new(0x1000, Insn::Nop5, Insn::Call { target: TRAMPOLINE }).unwrap(),
        ];
        assert_eq!(apply_int3(&mut sim, &mut overlap), Err(Error::Overlap { site: 0x1003 }));
        let mut stale = vec![Patch::new(0x1000, Insn::Call { target: TRAMPOLINE }, Insn::Nop5).unwrap()];
        assert!(matches!(apply_int3(&mut sim, &mut stale), Err(Error::Unexpected { site: 0x1000, .. })));
        assert_eq!((sim.writes, sim.syncs), (0, 0));
    }

    /// A sync round that fails (a CPU late to answer) is tried again with
    /// the batch still published; the batch then completes. Withdrawing it
    /// instead left int3 bytes in the text with no table for the handler:
    /// seen as torn executions in a 10 kHz watchdog soak.
    #[test]
    fn a_failed_sync_is_retried_with_the_batch_published() {
        let mut sim = Sim::new(&[(0x1000, NOP5)]);
        sim.fail_sync_at = Some(2);
        sim.published_during_syncs = true;
        let mut b = vec![Patch::new(0x1000, Insn::Nop5, Insn::Call { target: TRAMPOLINE }).unwrap()];
        let s = apply_int3(&mut sim, &mut b).unwrap();
        assert_eq!((s.sync_rounds, sim.syncs), (4, 4), "three rounds and one retry");
        assert!(!sim.published, "withdrawn only once complete");
        assert_eq!(classify(&b[0], sim.read(0x1000)), Seen::New);
    }

    #[test]
    fn naive_store_order_only_tears_into_a_call_through_the_nop_tail() {
        for (from, to) in [(Insn::Nop5, Insn::Call { target: TRAMPOLINE }), (Insn::Call { target: TRAMPOLINE }, Insn::Nop5)] {
            let p = Patch::new(0x30_0000, from, to).unwrap();
            let mut b = p.old;
            let [(a1, r1), (a2, r2)] = naive_stores(&p);
            b[(a1 - p.site) as usize..][..r1.len()].copy_from_slice(&p.new[r1.clone()]);
            assert_eq!(b, [CALL_REL32, 0x1f, 0x44, 0x00, 0x00], "the one intermediate state");
            b[(a2 - p.site) as usize..][..r2.len()].copy_from_slice(&p.new[r2]);
            assert_eq!(b, p.new);
        }
        assert_eq!(torn_call_target(0x30_0004), 0x30_0004 + 5 + 0x441f);
    }

    #[test]
    fn classification() {
        let p = Patch::new(0x1000, Insn::Nop5, Insn::Call { target: TRAMPOLINE }).unwrap();
        assert_eq!(classify(&p, NOP5), Seen::Old);
        assert_eq!(classify(&p, p.new), Seen::New);
        assert_eq!(classify(&p, [INT3, 0x1f, 0x44, 0, 0]), Seen::Trap);
        // The naive strategy's hazard: new first byte over the old tail.
        assert_eq!(classify(&p, [CALL_REL32, 0x1f, 0x44, 0, 0]), Seen::Torn);
    }

    #[test]
    fn oracle_decisions() {
        let sites = [0x1000, 0x2000, 0x2005];
        assert_eq!(site_containing(&sites, 0x0fff), None);
        assert_eq!(site_containing(&sites, 0x1000), Some(0x1000));
        assert_eq!(site_containing(&sites, 0x1004), Some(0x1000));
        assert_eq!(site_containing(&sites, 0x1005), None);
        assert_eq!(site_containing(&sites, 0x2005), Some(0x2005));
        let no_stack = || -> Option<u64> { panic!("the stack is read only when the fault is outside every site") };
        // #UD in the tail of a half-written site.
        assert_eq!(classify_fault(&sites, 6, 0x1002, no_stack), Some(Torn::Inside { site: 0x1000 }));
        // #BP right after a site's int3 byte (its batch withdrawn).
        assert_eq!(classify_fault(&sites, 3, 0x2001, no_stack), Some(Torn::Inside { site: 0x2000 }));
        // #BP one past the end of the last byte: not this site.
        assert_eq!(classify_fault(&sites, 3, 0x1006, || None), None);
        // A wild CALL from 0x2000: its return address 0x2005 on the stack.
        assert_eq!(classify_fault(&sites, 14, 0xdead_0000, || Some(0x2005)), Some(Torn::WildCall { site: 0x2000 }));
        // A return address that is not right after a site, or an unreadable stack.
        assert_eq!(classify_fault(&sites, 14, 0xdead_0000, || Some(0x2004)), None);
        assert_eq!(classify_fault(&sites, 13, 0xdead_0000, || Some(3)), None);
        assert_eq!(classify_fault(&sites, 13, 0xdead_0000, || None), None);
    }
}
