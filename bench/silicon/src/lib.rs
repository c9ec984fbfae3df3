//! The patching protocol on real silicon, from Linux user space, with the
//! same protocol code the kernel runs (`kernel::patch::protocol`).
//!
//! The platform:
//! - text: a memfd mapped twice, an executable view (where the sites run)
//!   and a writable alias (where the patcher writes);
//! - "sync every CPU": `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE)`
//!   (every thread of the process runs a core-serializing instruction), plus
//!   cpuid on the patching thread;
//! - the trap hook: a SIGTRAP handler that emulates the instruction a site
//!   under modification will hold, on the signal context.
//!
//! Workers, one per online CPU but the patcher's, pinned, call generated
//! functions whose entries are trace sites; torn executions are caught by
//! SIGILL/SIGSEGV/SIGBUS/SIGTRAP handlers (the same oracle rules as the
//! kernel), counted with the bytes seen, and recovered from.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use kernel::patch::protocol::{self, Insn, NOP5, Patch, Platform, SITE_LEN};

pub mod events;

/// Pin the calling thread to `cpu`.
pub fn pin_to(cpu: usize) {
    pin(cpu);
}

/// Bytes per generated function slot (functions are this far apart).
const SLOT: usize = 64;
/// Offset of the site inside a generated function (after push rbp; mov rbp, rsp).
const SITE_OFF: usize = 4;
/// int3 tail after the last function, so every torn-call target is padding.
const GUARD_TAIL: usize = 0x5000;

/// The kernel's strategies, by the same names.
pub use kernel::patch::config::Strategy;

/// One torn execution as the oracle saw it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Torn {
    pub site_index: u64,
    pub signal: i32,
    pub bytes: [u8; 5],
}

/// Batches timed per batch size (odd: the median is one of them).
pub const BATCH_REPETITIONS: usize = 9;

/// What one run measured.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub strategy: &'static str,
    pub seconds: f64,
    pub cpus: usize,
    pub sites: usize,
    pub batch: usize,
    pub cycles: u64,
    pub batches: u64,
    pub sync_rounds: u64,
    /// Mean wall time of one sync round (membarrier + cpuid), ns.
    pub sync_round_ns: u64,
    pub int3_emulations: u64,
    /// SIGTRAPs delivered after their batch was withdrawn, the site already
    /// complete again: re-executed (membarrier does not wait for signal
    /// handlers, unlike the kernel's sync IPI, which waits for the #BP handler).
    pub late_traps: u64,
    pub torn: u64,
    pub torn_samples: Vec<Torn>,
    /// Calls the workers made, and calls that reached the trampoline.
    pub calls: u64,
    pub traced: u64,
    /// Batch timings for 1, 10, ... sites.
    pub batch_timings: Vec<BatchTiming>,
}

/// One batch size: each of `repetitions` batches (switching on and off in
/// turn) timed alone.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BatchTiming {
    pub sites: usize,
    pub min_ns: u64,
    pub median_ns: u64,
    pub max_ns: u64,
    pub repetitions: usize,
}

impl BatchTiming {
    /// The timing of `sites`-site batches from their times (ns, any order; not empty).
    pub fn of(sites: usize, mut ns: Vec<u64>) -> BatchTiming {
        ns.sort_unstable();
        BatchTiming { sites, min_ns: ns[0], median_ns: ns[ns.len() / 2], max_ns: ns[ns.len() - 1], repetitions: ns.len() }
    }
}

// ---- state shared with the signal handlers (atomics only) ----

static EXEC_BASE: AtomicU64 = AtomicU64::new(0);
static NSITES: AtomicU64 = AtomicU64::new(0);
/// The batch the SIGTRAP handler sees (the kernel's #BP handler uses the same type).
static PUBLISHED: protocol::Published = protocol::Published::new();
static INT3_EMULATIONS: AtomicU64 = AtomicU64::new(0);
static LATE_TRAPS: AtomicU64 = AtomicU64::new(0);
static TORN: AtomicU64 = AtomicU64::new(0);
const TORN_KEPT: usize = 16;
static TORN_SITE: [AtomicU64; TORN_KEPT] = [const { AtomicU64::new(0) }; TORN_KEPT];
static TORN_SIG: [AtomicU32; TORN_KEPT] = [const { AtomicU32::new(0) }; TORN_KEPT];
static TORN_BYTES: [AtomicU64; TORN_KEPT] = [const { AtomicU64::new(0) }; TORN_KEPT];
/// Trampoline hits (the trampoline increments it with `lock inc`).
static TRACED: AtomicU64 = AtomicU64::new(0);
// stop_machine: workers park between calls while PARK is set.
static PARK: AtomicBool = AtomicBool::new(false);
static PARKED: AtomicUsize = AtomicUsize::new(0);
static STOP: AtomicBool = AtomicBool::new(false);

fn site_addr(i: u64) -> u64 {
    EXEC_BASE.load(Ordering::Relaxed) + ((i as usize + 1) * SLOT + SITE_OFF) as u64
}

/// The index of the site whose 5 bytes contain `addr`.
fn site_containing(addr: u64) -> Option<u64> {
    let base = EXEC_BASE.load(Ordering::Relaxed);
    let off = addr.checked_sub(base)? as usize;
    let i = (off / SLOT).checked_sub(1)? as u64;
    let site = site_addr(i);
    (i < NSITES.load(Ordering::Relaxed) && addr >= site && addr < site + SITE_LEN).then_some(i)
}

/// The index of the site whose return address is `ret`.
fn site_returning_to(ret: u64) -> Option<u64> {
    let s = ret.checked_sub(SITE_LEN)?;
    site_containing(s).filter(|&i| site_addr(i) == s)
}

fn read_site(i: u64) -> [u8; 5] {
    let a = site_addr(i) as *const u8;
    // SAFETY: the executable view is mapped readable for the whole run.
    std::array::from_fn(|k| unsafe { a.add(k).read_volatile() })
}

fn record_torn(i: u64, sig: i32) {
    let n = TORN.fetch_add(1, Ordering::AcqRel) as usize;
    if n < TORN_KEPT {
        let b = read_site(i);
        TORN_SITE[n].store(i, Ordering::Relaxed);
        TORN_SIG[n].store(sig as u32, Ordering::Relaxed);
        let mut v = [0u8; 8];
        v[..5].copy_from_slice(&b);
        TORN_BYTES[n].store(u64::from_le_bytes(v), Ordering::Release);
    }
}

/// The trap hook and the oracle, on the signal context. Async-signal-safe:
/// atomics and plain memory only.
extern "C" fn on_signal(sig: i32, _info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid ucontext_t for SA_SIGINFO handlers.
    let uc = unsafe { &mut *(ctx as *mut libc::ucontext_t) };
    let g = &mut uc.uc_mcontext.gregs;
    let (rip, rsp) = (g[libc::REG_RIP as usize] as u64, g[libc::REG_RSP as usize] as u64);
    if sig == libc::SIGTRAP {
        // A signal can arrive late (membarrier does not wait for handlers): by
        // now the batch may be withdrawn and the next one on its way. The int3
        // is written after its batch is published, so while the byte reads as
        // int3 the lookup is retried; once it does not, the site is complete.
        let site = site_containing(rip.wrapping_sub(1)).filter(|&i| site_addr(i) == rip - 1);
        let mut found = PUBLISHED.emulate(rip);
        let mut tries = 0;
        while found.is_none() && tries < 100_000 && site.is_some_and(|i| read_site(i)[0] == protocol::INT3) {
            std::hint::spin_loop();
            found = PUBLISHED.emulate(rip);
            tries += 1;
        }
        if let Some(e) = found {
            let mut f = protocol::Frame { rip, rsp };
            // SAFETY: the word below the interrupted RSP at a site is where the
            // CALL would have pushed (generated functions use no red zone there).
            e.apply(&mut f, |a, v| unsafe { (a as *mut u64).write(v) });
            g[libc::REG_RIP as usize] = f.rip as i64;
            g[libc::REG_RSP as usize] = f.rsp as i64;
            INT3_EMULATIONS.fetch_add(1, Ordering::Relaxed);
            return;
        }
        // A protocol int3 whose signal arrived after its batch was withdrawn:
        // the site's first byte is written last, so if it is no longer int3 the
        // instruction there is complete. Run it (like a debugger's removed breakpoint).
        if let Some(i) = site
            && read_site(i)[0] != protocol::INT3
        {
            g[libc::REG_RIP as usize] = (rip - 1) as i64;
            LATE_TRAPS.fetch_add(1, Ordering::Relaxed);
            return;
        }
    }
    // The oracle: a fault inside a site's bytes...
    let at = if sig == libc::SIGTRAP { rip.wrapping_sub(1) } else { rip };
    if let Some(i) = site_containing(at) {
        record_torn(i, sig);
        g[libc::REG_RIP as usize] = (site_addr(i) + SITE_LEN) as i64;
        return;
    }
    // ...or right after a torn CALL from a site (its return address on top of the stack).
    // SAFETY: RSP is the interrupted thread's stack pointer, mapped.
    let top = unsafe { (rsp as *const u64).read() };
    if let Some(i) = site_returning_to(top) {
        record_torn(i, sig);
        g[libc::REG_RSP as usize] = (rsp + 8) as i64;
        g[libc::REG_RIP as usize] = top as i64;
        return;
    }
    // Not ours: restore the default action; the fault repeats and kills us.
    let msg = b"silicon: unrecoverable fault outside the trace sites\n";
    // SAFETY: write(2) and signal(2) are async-signal-safe.
    unsafe {
        libc::write(2, msg.as_ptr().cast(), msg.len());
        libc::signal(sig, libc::SIG_DFL);
    }
}

fn install_handlers() {
    for sig in [libc::SIGTRAP, libc::SIGILL, libc::SIGSEGV, libc::SIGBUS] {
        // SAFETY: a zeroed sigaction with our SA_SIGINFO handler is valid.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as *const () as usize;
            sa.sa_flags = libc::SA_SIGINFO | libc::SA_NODEFER;
            libc::sigemptyset(&mut sa.sa_mask);
            assert_eq!(libc::sigaction(sig, &sa, std::ptr::null_mut()), 0, "sigaction");
        }
    }
}

const MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE: i32 = 1 << 5;
const MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE: i32 = 1 << 6;

fn membarrier(cmd: i32) -> std::io::Result<()> {
    // SAFETY: membarrier(2) takes (cmd, flags, cpu_id) and touches no memory of ours.
    let r = unsafe { libc::syscall(libc::SYS_membarrier, cmd, 0, 0) };
    if r < 0 { Err(std::io::Error::last_os_error()) } else { Ok(()) }
}

fn cpuid_serialize() {
    // cpuid is serializing (SDM Vol. 3A §9.3).
    std::hint::black_box(std::arch::x86_64::__cpuid(0));
}

/// The text: a memfd mapped executable and, again, writable.
struct Text {
    exec: *mut u8,
    alias: *mut u8,
    len: usize,
}

// SAFETY: the mappings are process-wide; the alias is written only by the patcher thread.
unsafe impl Send for Text {}
// SAFETY: as above.
unsafe impl Sync for Text {}

impl Text {
    fn new(nsites: usize) -> std::io::Result<Text> {
        let len = ((nsites + 1) * SLOT + GUARD_TAIL).next_multiple_of(4096);
        // SAFETY: plain syscalls; results are checked.
        unsafe {
            let fd = libc::memfd_create(c"silicon-text".as_ptr(), 0);
            if fd < 0 || libc::ftruncate(fd, len as i64) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let alias = libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, fd, 0);
            let exec = libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_EXEC, libc::MAP_SHARED, fd, 0);
            libc::close(fd);
            if alias == libc::MAP_FAILED || exec == libc::MAP_FAILED {
                return Err(std::io::Error::last_os_error());
            }
            Ok(Text { exec: exec.cast(), alias: alias.cast(), len })
        }
    }

    fn alias_of(&self, addr: u64) -> *mut u8 {
        let off = (addr - self.exec as u64) as usize;
        assert!(off < self.len);
        // SAFETY: in bounds (checked).
        unsafe { self.alias.add(off) }
    }

    /// Lay out the trampoline (slot 0) and `n` functions `fn(x) -> x + 1`
    /// whose entries are sites, int3 everywhere else.
    fn generate(&self, n: usize) {
        // SAFETY: the alias is `len` writable bytes, not executed while we write.
        let t = unsafe { std::slice::from_raw_parts_mut(self.alias, self.len) };
        t.fill(0xcc);
        // Trampoline: pushfq; push rax; movabs rax, &TRACED; lock inc qword [rax]; pop rax; popfq; ret
        let mut tr = vec![0x9c, 0x50, 0x48, 0xb8];
        tr.extend_from_slice(&(&raw const TRACED as u64).to_le_bytes());
        tr.extend_from_slice(&[0xf0, 0x48, 0xff, 0x00, 0x58, 0x9d, 0xc3]);
        t[..tr.len()].copy_from_slice(&tr);
        for i in 0..n {
            let f = &mut t[(i + 1) * SLOT..];
            // push rbp; mov rbp, rsp; nop5; lea rax, [rdi + 1]; pop rbp; ret
            let code = [0x55, 0x48, 0x89, 0xe5, 0x0f, 0x1f, 0x44, 0x00, 0x00, 0x48, 0x8d, 0x47, 0x01, 0x5d, 0xc3];
            f[..code.len()].copy_from_slice(&code);
        }
    }

    fn trampoline(&self) -> u64 {
        self.exec as u64
    }
}

impl Drop for Text {
    fn drop(&mut self) {
        // SAFETY: both mappings were made by `new` with this length.
        unsafe {
            libc::munmap(self.exec.cast(), self.len);
            libc::munmap(self.alias.cast(), self.len);
        }
    }
}

/// The protocol's platform in user space.
struct Linux<'a> {
    text: &'a Text,
    sync_rounds: u64,
    sync_ns: u64,
}

impl Platform for Linux<'_> {
    fn read(&self, site: u64) -> [u8; 5] {
        // SAFETY: sites lie in the executable view, mapped readable.
        std::array::from_fn(|k| unsafe { ((site + k as u64) as *const u8).read_volatile() })
    }

    fn write(&mut self, addr: u64, bytes: &[u8]) {
        // As the kernel's platform writes (`kernel::patch::machine`): a
        // 4-byte tail in one store, anything else byte by byte.
        if let Ok(word) = <[u8; 4]>::try_from(bytes) {
            // SAFETY: the alias maps the text writable; only this thread
            // writes. One (possibly unaligned) 4-byte store.
            unsafe { (self.text.alias_of(addr) as *mut u32).write_unaligned(u32::from_le_bytes(word)) };
            return;
        }
        for (k, b) in bytes.iter().enumerate() {
            // SAFETY: the alias maps the text writable; only this thread writes.
            unsafe { self.text.alias_of(addr + k as u64).write_volatile(*b) };
        }
    }

    fn publish(&mut self, batch: Option<&[Patch]>) {
        PUBLISHED.set(batch);
    }

    fn sync(&mut self) -> Result<(), protocol::Error> {
        let t = Instant::now();
        cpuid_serialize();
        membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE).map_err(|_| protocol::Error::Sync)?;
        self.sync_ns += t.elapsed().as_nanos() as u64;
        self.sync_rounds += 1;
        Ok(())
    }
}

fn apply(p: &mut Linux<'_>, strategy: Strategy, batch: &mut [Patch], workers: usize) -> Result<(), protocol::Error> {
    match strategy {
        Strategy::Int3 => protocol::apply_int3(p, batch).map(|_| ()),
        Strategy::StopMachine => {
            protocol::plan(p, batch)?;
            PARK.store(true, Ordering::SeqCst);
            while PARKED.load(Ordering::Acquire) < workers {
                std::hint::spin_loop();
            }
            for x in batch.iter() {
                p.write(x.site, &x.new);
            }
            let r = p.sync();
            PARK.store(false, Ordering::SeqCst);
            while PARKED.load(Ordering::Acquire) != 0 {
                std::hint::spin_loop();
            }
            r
        }
        Strategy::Naive => {
            protocol::plan(p, batch)?;
            for x in batch.iter() {
                for (a, r) in protocol::naive_stores(x) {
                    p.write(a, &x.new[r]);
                }
            }
            Ok(())
        }
    }
}

fn pin(cpu: usize) {
    // SAFETY: a cpu_set_t with one bit set, for this thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

fn affinity() -> libc::cpu_set_t {
    // SAFETY: reads this thread's affinity mask into a zeroed set.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set);
        set
    }
}

fn set_affinity(set: &libc::cpu_set_t) {
    // SAFETY: applies a mask read by `affinity` to this thread.
    unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), set) };
}

fn online_cpus() -> Vec<usize> {
    // SAFETY: reads this process's affinity mask into a zeroed set.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set);
        (0..libc::CPU_SETSIZE as usize).filter(|&c| libc::CPU_ISSET(c, &set)).collect()
    }
}

/// Options of one run.
#[derive(Clone, Debug)]
pub struct Options {
    pub strategy: Strategy,
    pub duration: Duration,
    pub sites: usize,
    pub batch: usize,
    /// Measure batches of these sizes (capped at `sites`) before the loop.
    pub batch_sizes: Vec<usize>,
}

/// Run one strategy for `opts.duration`. One run at a time per process.
pub fn run(opts: &Options) -> std::io::Result<Report> {
    static RUNNING: AtomicBool = AtomicBool::new(false);
    assert!(!RUNNING.swap(true, Ordering::AcqRel), "one silicon run at a time per process");
    let r = run_inner(opts);
    RUNNING.store(false, Ordering::Release);
    r
}

fn run_inner(opts: &Options) -> std::io::Result<Report> {
    let saved = affinity();
    let r = run_pinned(opts);
    set_affinity(&saved);
    r
}

fn run_pinned(opts: &Options) -> std::io::Result<Report> {
    membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE)
        .map_err(|e| std::io::Error::other(format!("membarrier SYNC_CORE registration failed: {e} (Linux 4.16+ needed)")))?;
    install_handlers();
    let n = opts.sites.max(1);
    let text = Text::new(n)?;
    text.generate(n);
    EXEC_BASE.store(text.exec as u64, Ordering::Release);
    NSITES.store(n as u64, Ordering::Release);
    for c in [&INT3_EMULATIONS, &TORN, &TRACED, &LATE_TRAPS] {
        c.store(0, Ordering::Relaxed);
    }
    STOP.store(false, Ordering::Release);
    let cpus = online_cpus();
    let patch_cpu = cpus[0];
    let worker_cpus: Vec<usize> = if cpus.len() > 1 { cpus[1..].to_vec() } else { cpus.clone() };
    let calls = AtomicU64::new(0);
    let target = text.trampoline();
    let mut report = Report { strategy: opts.strategy.name(), cpus: cpus.len(), sites: n, batch: opts.batch, ..Default::default() };

    std::thread::scope(|s| -> std::io::Result<()> {
        for &cpu in &worker_cpus {
            let calls = &calls;
            let base = text.exec as usize;
            s.spawn(move || {
                pin(cpu);
                let mut acc = 0u64;
                let mut local = 0u64;
                while !STOP.load(Ordering::Relaxed) {
                    for i in 0..n {
                        if PARK.load(Ordering::Relaxed) {
                            PARKED.fetch_add(1, Ordering::AcqRel);
                            while PARK.load(Ordering::Acquire) {
                                std::hint::spin_loop();
                            }
                            cpuid_serialize();
                            PARKED.fetch_sub(1, Ordering::AcqRel);
                        }
                        // SAFETY: slot i+1 of the executable view holds `fn(u64) -> u64`.
                        let f: extern "C" fn(u64) -> u64 = unsafe { std::mem::transmute(base + (i + 1) * SLOT) };
                        acc = f(acc);
                        local += 1;
                    }
                }
                std::hint::black_box(acc);
                calls.fetch_add(local, Ordering::Relaxed);
            });
        }
        pin(patch_cpu);
        let workers = worker_cpus.len();
        let mut plat = Linux { text: &text, sync_rounds: 0, sync_ns: 0 };
        let mut batch: Vec<Patch> = Vec::with_capacity(n);
        let flip = |plat: &mut Linux<'_>, range: std::ops::Range<usize>, on: bool, batch: &mut Vec<Patch>| -> std::io::Result<()> {
            let (from, to) = if on { (Insn::Nop5, Insn::Call { target }) } else { (Insn::Call { target }, Insn::Nop5) };
            batch.clear();
            for i in range {
                batch.push(Patch::new(site_addr(i as u64), from, to).map_err(|e| std::io::Error::other(format!("{e:?}")))?);
            }
            apply(plat, opts.strategy, batch, workers).map_err(|e| std::io::Error::other(format!("{e:?}")))
        };
        // Batch timings: 9 batches of each size (on, off, on, ...), each timed alone.
        for &size in opts.batch_sizes.iter().filter(|&&k| k <= n) {
            let mut ns = Vec::new();
            for rep in 0..BATCH_REPETITIONS {
                let t = Instant::now();
                flip(&mut plat, 0..size, rep % 2 == 0, &mut batch)?;
                ns.push(t.elapsed().as_nanos() as u64);
            }
            // Leave every site off, as the loop below expects.
            if BATCH_REPETITIONS % 2 == 1 {
                flip(&mut plat, 0..size, false, &mut batch)?;
            }
            report.batch_timings.push(BatchTiming::of(size, ns));
        }
        let (rounds0, ns0) = (plat.sync_rounds, plat.sync_ns);
        let start = Instant::now();
        let chunk = opts.batch.clamp(1, n);
        'outer: loop {
            for on in [true, false] {
                let mut i = 0;
                while i < n {
                    let end = (i + chunk).min(n);
                    flip(&mut plat, i..end, on, &mut batch)?;
                    report.batches += 1;
                    i = end;
                }
            }
            report.cycles += 1;
            if start.elapsed() >= opts.duration {
                break 'outer;
            }
        }
        report.seconds = start.elapsed().as_secs_f64();
        STOP.store(true, Ordering::Release);
        report.sync_rounds = plat.sync_rounds - rounds0;
        report.sync_round_ns = (plat.sync_ns - ns0).checked_div(report.sync_rounds).unwrap_or(0);
        // Every site must read as the NOP again.
        let wrong = (0..n as u64).filter(|&i| read_site(i) != NOP5).count();
        if wrong != 0 {
            return Err(std::io::Error::other(format!("{wrong} sites are not NOPs after the last cycle")));
        }
        Ok(())
    })?;
    report.calls = calls.load(Ordering::Relaxed);
    report.traced = TRACED.load(Ordering::Relaxed);
    report.int3_emulations = INT3_EMULATIONS.load(Ordering::Relaxed);
    report.late_traps = LATE_TRAPS.load(Ordering::Relaxed);
    report.torn = TORN.load(Ordering::Relaxed);
    for k in 0..(report.torn as usize).min(TORN_KEPT) {
        let b = TORN_BYTES[k].load(Ordering::Acquire).to_le_bytes();
        report.torn_samples.push(Torn {
            site_index: TORN_SITE[k].load(Ordering::Relaxed),
            signal: TORN_SIG[k].load(Ordering::Relaxed) as i32,
            bytes: [b[0], b[1], b[2], b[3], b[4]],
        });
    }
    EXEC_BASE.store(0, Ordering::Release);
    Ok(report)
}

/// The CPU: brand string and family/model/stepping.
pub fn cpu_model() -> String {
    let c = raw_cpuid::CpuId::new();
    let brand = c.get_processor_brand_string().map(|b| b.as_str().trim().to_string()).unwrap_or_else(|| "unknown".into());
    match c.get_feature_info() {
        Some(f) => format!("{brand} (family {:#x}, model {:#x}, stepping {})", f.family_id(), f.model_id(), f.stepping_id()),
        None => brand,
    }
}

impl Report {
    /// The report as JSON (the harness's `--json` file holds one per strategy).
    pub fn to_json(&self) -> serde_json::Value {
        let torn: Vec<serde_json::Value> =
            self.torn_samples.iter().map(|t| serde_json::json!({"site": t.site_index, "signal": t.signal, "bytes": format!("{:02x?}", t.bytes)})).collect();
        let timings: Vec<serde_json::Value> = self
            .batch_timings
            .iter()
            .map(|t| serde_json::json!({"sites": t.sites, "ns_per_batch": t.median_ns, "min_ns": t.min_ns, "max_ns": t.max_ns, "repetitions": t.repetitions}))
            .collect();
        serde_json::json!({
            "strategy": self.strategy,
            "seconds": (self.seconds * 10.0).round() / 10.0,
            "cpus": self.cpus,
            "sites": self.sites,
            "batch": self.batch,
            "cycles": self.cycles,
            "batches": self.batches,
            "sync_rounds": self.sync_rounds,
            "sync_round_ns": self.sync_round_ns,
            "int3_emulations": self.int3_emulations,
            "late_traps": self.late_traps,
            "torn": self.torn,
            "torn_samples": torn,
            "calls": self.calls,
            "traced": self.traced,
            "batch_timings": timings,
        })
    }
}
