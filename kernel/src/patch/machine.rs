//! The machine platform of the protocol (`protocol.rs`): the writable,
//! no-execute alias of the kernel text the patching CPU writes through, the
//! serializing instructions, and sync rounds as cross-CPU calls that run one
//! on every other CPU. Also the batch published to the #BP handler.

use core::sync::atomic::{AtomicU64, Ordering};

use log::error;

use super::config::{Code, SyncMode};
use super::protocol::{self, Patch, Platform};
use super::stats::STATS;
use crate::events::EventKind;
use crate::smp::xcall;
use crate::time::clock;

/// Virtual base of the writable, no-execute alias of the kernel text.
pub const TEXT_ALIAS: u64 = 0x0000_4000_0000_0000;
/// How long a sync round or a stop_machine rendezvous may take.
pub(super) const SYNC_TIMEOUT_NS: u64 = 1_000_000_000;
/// ...plus this much for every CPU that must answer: with hundreds of
/// virtual CPUs on few host threads (TCG), a round takes longer than a second
/// without any CPU being stuck. A sync round that gives up leaves the batch
/// half-applied, so it must not give up on a slow machine.
const SYNC_TIMEOUT_PER_CPU_NS: u64 = 100_000_000;

/// How long a sync round or a stop_machine rendezvous may take with this many CPUs online.
pub(super) fn sync_timeout_ns() -> u64 {
    SYNC_TIMEOUT_NS.max(SYNC_TIMEOUT_PER_CPU_NS * crate::arch::percpu::online_count() as u64)
}

pub(super) static TEXT_START: AtomicU64 = AtomicU64::new(0);
pub(super) static TEXT_END: AtomicU64 = AtomicU64::new(0);

/// The batch published to the #BP handler (see `Platform::publish`).
pub(super) static PUBLISHED: protocol::Published = protocol::Published::new();

/// IRET to self: serializing, never exits to a hypervisor (but unmasks NMIs).
fn iret_to_self() {
    // SAFETY: builds an interrupt frame for the next instruction on the
    // current stack (SS, RSP, RFLAGS, CS, RIP) and IRETs to it: execution
    // continues at `2:` with the same stack and flags.
    unsafe {
        core::arch::asm!(
            "mov {tmp:e}, ss",
            "push {tmp}",
            "push rsp",
            "add qword ptr [rsp], 8",
            "pushfq",
            "mov {tmp:e}, cs",
            "push {tmp}",
            "lea {tmp}, [rip + 2f]",
            "push {tmp}",
            "iretq",
            "2:",
            tmp = out(reg) _,
        )
    };
}

/// Run the chosen serializing instruction (SDM Vol. 3A §9.3).
pub fn serialize(mode: SyncMode) {
    match mode {
        SyncMode::Cpuid => crate::arch::cpu::serialize_cpuid(),
        SyncMode::Iret => iret_to_self(),
        // SAFETY: SERIALIZE (0f 01 e8) is only chosen when CPUID reports it (see `init`).
        SyncMode::Serialize => unsafe { core::arch::asm!(".byte 0x0f, 0x01, 0xe8", options(nostack, preserves_flags)) },
    }
}

/// A sync round on another CPU (the cross-CPU call's argument is the mode's code).
pub(super) fn sync_ipi(mode: usize) {
    serialize(SyncMode::from_code(mode as u8));
}

/// A site's current bytes, through the main (executable) mapping.
pub fn read_site(site: u64) -> [u8; 5] {
    // SAFETY: sites are inside the kernel text (checked by `init`), mapped readable.
    core::array::from_fn(|i| unsafe { ((site + i as u64) as *const u8).read_volatile() })
}

/// How long a phase of the int3 protocol stores before it lets the other
/// CPUs run (`Machine::after_store`). Under QEMU's single-threaded TCG a
/// store into text that holds translated code costs about 20 us (QEMU drops
/// the translated block over it and every CPU's jump cache), so a phase of
/// 256 sites held the one host thread for about 5 ms: no other CPU ran into
/// a site under change, and the network waited. Measured with two workers
/// (`bench/README.md`), a PAUSE every 100 us of stores took sites emulated
/// under change from about 700 to 4,400 a second, traced calls from about
/// 420,000 to 750,000 a second and e1000 `/trace.ctf.tar` medians from
/// 24-28 to 32.5-40.5 MB/s; the loop's batches went from 108 to 53 a
/// second. A batch whose stores take less never pauses (on silicon, several
/// thousand sites); one that pauses waits for the other CPUs' turns (the
/// bench's 10,000-site batch with busy workers: 187-201 ms in four runs
/// before, 189-196 ms in two after).
const LET_OTHERS_RUN_NS: u64 = 100_000;
/// Stores between two looks at the clock.
const STORES_PER_CLOCK_READ: u32 = 4;

/// The machine platform of the protocol.
pub struct Machine {
    pub(super) sync: SyncMode,
    /// Stores so far, and the TSC at which the next one lets others run.
    stores: u32,
    let_others_run_at: u64,
}

impl Machine {
    pub(super) fn new(sync: SyncMode) -> Machine {
        Machine { sync, stores: 0, let_others_run_at: clock::deadline_after_ns(LET_OTHERS_RUN_NS) }
    }
}

fn alias(addr: u64) -> *mut u8 {
    let start = TEXT_START.load(Ordering::Relaxed);
    debug_assert!(addr >= start && addr < TEXT_END.load(Ordering::Relaxed));
    (TEXT_ALIAS + (addr - start)) as *mut u8
}

impl Platform for Machine {
    fn read(&self, site: u64) -> [u8; 5] {
        read_site(site)
    }

    /// 1 or 4 bytes with a single store (the naive strategy relies on it),
    /// other lengths byte by byte. A site's 4-byte tail in one store rather
    /// than four also matters under TCG: each store to translated code takes
    /// QEMU's slow path, which looks for translated blocks to drop.
    fn write(&mut self, addr: u64, bytes: &[u8]) {
        match bytes.len() {
            // SAFETY: the alias maps the kernel text writable; only the
            // patching CPU writes through it. One byte store.
            1 => unsafe { alias(addr).write_volatile(bytes[0]) },
            // SAFETY: as above; one (possibly unaligned) 4-byte store.
            4 => unsafe { (alias(addr) as *mut u32).write_unaligned(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])) },
            _ => {
                for (i, b) in bytes.iter().enumerate() {
                    // SAFETY: as above, one byte store at a time.
                    unsafe { alias(addr + i as u64).write_volatile(*b) };
                }
            }
        }
    }

    fn publish(&mut self, batch: Option<&[Patch]>) {
        PUBLISHED.set(batch);
    }

    /// A PAUSE once the phase has stored for `LET_OTHERS_RUN_NS`: under
    /// single-threaded TCG it ends this CPU's turn (`pause_for_others`); on
    /// silicon it is a hint of tens of cycles.
    fn after_store(&mut self) {
        self.stores = self.stores.wrapping_add(1);
        if self.stores.is_multiple_of(STORES_PER_CLOCK_READ) && crate::arch::cpu::rdtsc() >= self.let_others_run_at {
            crate::arch::cpu::pause_for_others();
            self.let_others_run_at = clock::deadline_after_ns(LET_OTHERS_RUN_NS);
        }
    }

    fn sync(&mut self) -> Result<(), protocol::Error> {
        let t0 = crate::arch::cpu::rdtsc();
        serialize(self.sync);
        STATS.sync_rounds.fetch_add(1, Ordering::Relaxed);
        let r = xcall::call_others(sync_ipi, self.sync.code() as usize, sync_timeout_ns());
        crate::events::record_span(EventKind::SyncRound, r.is_err() as u64, clock::ticks_to_ns(crate::arch::cpu::rdtsc() - t0));
        r.map_err(|e| {
            STATS.sync_failures.fetch_add(1, Ordering::Relaxed);
            error!("patch: sync round failed: {e}; the batch stays published and the round is tried again");
            // The round is tried again until every CPU answers, with the
            // batch published (the other CPUs keep emulating its sites).
            // Meanwhile this CPU keeps its other duties: the NMI log (the
            // silent CPU's backtrace) and the services it polls.
            crate::nmi::watchdog::drain_to_console();
            super::poll_hook::poll_hook();
            protocol::Error::Sync
        })
    }
}
