//! Trace sites: a 5-byte NOP placed by [`trace_site!`](crate::trace_site) at
//! the top of a traced function, its address recorded in the `.trace_sites`
//! linker section (no hand-kept list), and the trampoline a site calls when
//! it is turned on.
//!
//! A site sits right after the function's frame-pointer prologue (like the
//! old `-pg` mcount call), so the trampoline finds the traced function's
//! frame in RBP and the parent's return address at `[rbp + 8]`.

use core::sync::atomic::{AtomicU8, Ordering};

use alloc::vec::Vec;

use crate::arch::percpu::{Context, this_cpu};

/// Mark a traced function: the first statement of its body. Emits the 5-byte
/// NOP `0f 1f 44 00 00` and records its address in `.trace_sites`. Traced
/// functions should be `#[inline(never)]` (an inlined copy is a site of its
/// caller). The NOP has no effect; as a CALL it reaches [`trace_entry`], which
/// preserves every register and the flags, and no red zone exists (kernel
/// code is built with `-C no-redzone`), so the pushed return address
/// clobbers nothing.
///
/// `trace_site!(nmi)` marks a function on the NMI path: its site is
/// registered apart and patched only with `trace_nmi_path` (the `notrace`
/// default of the 2008 fix).
#[macro_export]
macro_rules! trace_site {
    () => {
        $crate::trace_site!(@in ".trace_sites")
    };
    (nmi) => {
        $crate::trace_site!(@in ".trace_sites_nmi")
    };
    (@in $section:literal) => {
        // SAFETY: a 5-byte NOP (or, when patched, a call to `trace_entry`,
        // which preserves all registers and flags); the asm may use the stack
        // (no `nostack`), which is all the CALL form does.
        unsafe {
            core::arch::asm!(
                "2:",
                ".byte 0x0f, 0x1f, 0x44, 0x00, 0x00",
                concat!(".pushsection ", $section, ", \"a\""),
                ".balign 8",
                ".quad 2b",
                ".popsection",
                options(preserves_flags)
            )
        }
    };
}

/// Requested state of a site, as the engine publishes it (the oracle's epoch).
pub mod state {
    /// Off, and every CPU has synced since: a CALL here is a bug.
    pub const OFF: u8 = 0;
    /// On, settled.
    pub const ON: u8 = 1;
    /// Being modified.
    pub const CHANGING: u8 = 2;
}

/// The registry, sorted by address, with each site's requested state.
pub struct Registry {
    pub sites: Vec<u64>,
    pub states: Vec<AtomicU8>,
    /// The site is on the NMI path (`trace_site!(nmi)`).
    pub nmi_path: Vec<bool>,
    /// The NMI-context warning was logged for this site (once per site).
    pub warned: Vec<core::sync::atomic::AtomicBool>,
    /// Registry entries listed twice (an instance emitted twice by the compiler).
    pub duplicates: usize,
    /// Address to index, for the event path.
    pub index: super::index::SiteIndex,
}

static REGISTRY: spin::Once<Registry> = spin::Once::new();

unsafe extern "C" {
    static __trace_sites_start: u64;
    static __trace_sites_end: u64;
    static __trace_sites_nmi_start: u64;
    static __trace_sites_nmi_end: u64;
}

/// Collect and sort the registry (boot CPU, once, after the heap).
pub fn init() -> &'static Registry {
    REGISTRY.call_once(|| {
        let (s, e) = (&raw const __trace_sites_start, &raw const __trace_sites_end);
        // SAFETY: the linker script delimits `.trace_sites`, an array of u64 addresses.
        let raw = unsafe { core::slice::from_raw_parts(s, (e as usize - s as usize) / 8) };
        let (ns, ne) = (&raw const __trace_sites_nmi_start, &raw const __trace_sites_nmi_end);
        // SAFETY: as above, for `.trace_sites_nmi`.
        let nmi_raw = unsafe { core::slice::from_raw_parts(ns, (ne as usize - ns as usize) / 8) };
        let mut sites: Vec<u64> = raw.iter().chain(nmi_raw.iter()).copied().collect();
        sites.sort_unstable();
        let before = sites.len();
        sites.dedup();
        let states = (0..sites.len()).map(|_| AtomicU8::new(state::OFF)).collect();
        let nmi_path = sites.iter().map(|s| nmi_raw.contains(s)).collect();
        let warned = (0..sites.len()).map(|_| core::sync::atomic::AtomicBool::new(false)).collect();
        let index = super::index::SiteIndex::build(&sites);
        Registry { duplicates: before - sites.len(), sites, states, nmi_path, warned, index }
    })
}

pub fn registry() -> Option<&'static Registry> {
    REGISTRY.get()
}

impl Registry {
    pub fn index_of(&self, site: u64) -> Option<usize> {
        self.index.find(&self.sites, site)
    }

    /// The first site inside `[start, start + len)` (a traced function's own site).
    pub fn site_in(&self, start: u64, len: u64) -> Option<usize> {
        let i = self.sites.partition_point(|&s| s < start);
        (i < self.sites.len() && self.sites[i] < start + len).then_some(i)
    }
}

/// Called by `trace_entry` with the address after the site's CALL and the
/// traced function's frame pointer, with XMM0-XMM15 not saved: it and all
/// it calls (the event sink included) touch no vector register, which
/// `elf_vector_state_is_xmm_only` checks on the built image by following
/// its calls. Returns nonzero when the slow path must run (the NMI warning,
/// which formats text and may use any register the compiler likes).
#[unsafe(no_mangle)]
#[unsafe(link_section = ".text.trace_hot")]
extern "C" fn trace_hook_fast(ret: u64, fp: u64) -> u64 {
    let cpu = this_cpu();
    let ctx = cpu.context();
    bump(&cpu.site_calls[ctx as usize]);
    let site = ret - super::protocol::SITE_LEN;
    let mut slow = 0;
    if let Some(r) = registry()
        && let Some(i) = r.index_of(site)
    {
        if r.states[i].load(Ordering::Acquire) == state::OFF {
            bump(&cpu.traced_while_off);
        }
        // Traced code in NMI context: warn once per site (the 2008 bug), on the slow path.
        if ctx == Context::Nmi && !r.warned[i].swap(true, Ordering::AcqRel) {
            slow = 1;
        }
    }
    // The parent's return address: the traced function's frame holds the
    // caller's RBP at [fp] and its return address at [fp + 8].
    let parent = if fp != 0 && fp.is_multiple_of(8) {
        // SAFETY: with frame pointers, RBP at a site is the traced function's
        // frame on a mapped kernel stack.
        unsafe { ((fp + 8) as *const u64).read() }
    } else {
        0
    };
    crate::events::record_function(site, parent, ctx);
    slow
}

/// Count one on a counter of this CPU that only the hook writes: a plain
/// load and store, no locked instruction (a LOCK XADD costs as much as a
/// fifth of an event on silicon). Other CPUs only read it. Sound because the
/// counter's writers never overlap: `site_calls` is per context and
/// `traced_while_off` is written in any context, but an interrupt or NMI
/// that lands between the load and the store runs its own hook to completion
/// and counts its own call, so at worst one count is lost, never torn.
fn bump(c: &core::sync::atomic::AtomicU64) {
    c.store(c.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
}

/// The slow path, with XMM0-XMM15 saved: the NMI-context warning of a site.
#[unsafe(no_mangle)]
extern "C" fn trace_hook_slow(ret: u64, fp: u64) {
    super::nmi_policy::ftrace_nmi_warning(ret - super::protocol::SITE_LEN, fp);
}

/// General-purpose registers the trampoline saves (the caller-saved ones;
/// the hook preserves the rest as any function does), in the order the
/// check below loads and stores them, with the value each gets.
const CHECKED_GPRS: [(&str, u64); 9] = [
    ("rax", 0x5a5a_0000_0000_a5a5),
    ("rcx", 0x5a5a_0001_0000_a5a6),
    ("rdx", 0x5a5a_0002_0000_a5a7),
    ("rsi", 0x5a5a_0003_0000_a5a8),
    ("rdi", 0x5a5a_0004_0000_a5a9),
    ("r8", 0x5a5a_0005_0000_a5aa),
    ("r9", 0x5a5a_0006_0000_a5ab),
    ("r10", 0x5a5a_0007_0000_a5ac),
    ("r11", 0x5a5a_0008_0000_a5ad),
];

/// RFLAGS' arithmetic flags: CF, PF, AF, ZF, SF, OF (Intel SDM Vol. 1 §3.4.3.1).
const ARITHMETIC_FLAGS: u64 = 1 << 0 | 1 << 2 | 1 << 4 | 1 << 6 | 1 << 7 | 1 << 11;

/// What XMM k holds in the check: GPR (k mod 9)'s value moved in (low
/// qword), then PSHUFD 0x1b for XMM0-7 (dwords reversed: the value rotated
/// into the high qword) or 0x4e for XMM8-15 (qwords swapped): (low, high).
fn xmm_expected(k: usize) -> (u64, u64) {
    let v = CHECKED_GPRS[k % 9].1;
    if k < 8 { (0, v.rotate_left(32)) } else { (0, v) }
}

/// Call the trampoline as a site would, with a distinct value in every
/// caller-saved register, in XMM0-XMM15 (both halves) and every arithmetic
/// flag set, and check that all of them come back unchanged: the contract of a
/// site, which the compiler believes clobbers nothing. Run before tracing
/// starts (the hook's event goes nowhere yet).
pub fn check_trampoline() -> Result<(), alloc::string::String> {
    // 9 GPRs, the carry flag, then 16 XMM registers of two words.
    let mut out = [0u64; 10 + 32];
    // SAFETY: the block keeps the buffer pointer on the stack, loads test
    // values into registers it declares clobbered, calls the trampoline
    // (which returns with the stack as it found it) and writes 42 words
    // into `out`, which it has to itself.
    unsafe {
        core::arch::asm!(
            "push rdi",
            "mov rax, {p0}", "mov rcx, {p1}", "mov rdx, {p2}", "mov rsi, {p3}", "mov rdi, {p4}",
            "mov r8, {p5}", "mov r9, {p6}", "mov r10, {p7}", "mov r11, {p8}",
            "movq xmm0, rax", "movq xmm1, rcx", "movq xmm2, rdx", "movq xmm3, rsi",
            "movq xmm4, rdi", "movq xmm5, r8", "movq xmm6, r9", "movq xmm7, r10",
            "movq xmm8, r11", "movq xmm9, rax", "movq xmm10, rcx", "movq xmm11, rdx",
            "movq xmm12, rsi", "movq xmm13, rdi", "movq xmm14, r8", "movq xmm15, r9",
            ".irp n, 0, 1, 2, 3, 4, 5, 6, 7",
            "pshufd xmm\\n, xmm\\n, 0x1b",
            ".endr",
            ".irp n, 8, 9, 10, 11, 12, 13, 14, 15",
            "pshufd xmm\\n, xmm\\n, 0x4e",
            ".endr",
            // Every arithmetic flag set (CF PF AF ZF SF OF), the rest as they are.
            "pushfq",
            "or qword ptr [rsp], {arith}",
            "popfq",
            "call {entry}",
            // RAX out of the way, then the arithmetic flags into it.
            "push rax",
            "pushfq",
            "pop rax",
            "and eax, {arith}",
            "push rax",
            "mov rax, [rsp + 16]",
            "pop qword ptr [rax + 72]",
            "pop qword ptr [rax]",
            "mov [rax + 8], rcx", "mov [rax + 16], rdx", "mov [rax + 24], rsi", "mov [rax + 32], rdi",
            "mov [rax + 40], r8", "mov [rax + 48], r9", "mov [rax + 56], r10", "mov [rax + 64], r11",
            ".irp n, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15",
            "movdqu [rax + 80 + 16 * \\n], xmm\\n",
            ".endr",
            "pop rdi",
            p0 = const CHECKED_GPRS[0].1, p1 = const CHECKED_GPRS[1].1, p2 = const CHECKED_GPRS[2].1,
            p3 = const CHECKED_GPRS[3].1, p4 = const CHECKED_GPRS[4].1, p5 = const CHECKED_GPRS[5].1,
            p6 = const CHECKED_GPRS[6].1, p7 = const CHECKED_GPRS[7].1, p8 = const CHECKED_GPRS[8].1,
            entry = sym trace_entry,
            arith = const ARITHMETIC_FLAGS,
            inout("rdi") out.as_mut_ptr() => _,
            out("rax") _, out("rcx") _, out("rdx") _, out("rsi") _, out("r8") _, out("r9") _, out("r10") _, out("r11") _,
            out("xmm0") _, out("xmm1") _, out("xmm2") _, out("xmm3") _, out("xmm4") _, out("xmm5") _, out("xmm6") _, out("xmm7") _,
            out("xmm8") _, out("xmm9") _, out("xmm10") _, out("xmm11") _, out("xmm12") _, out("xmm13") _, out("xmm14") _, out("xmm15") _,
        );
    }
    for (i, (name, want)) in CHECKED_GPRS.iter().enumerate() {
        if out[i] != *want {
            return Err(alloc::format!("{name}: {want:#x} came back as {:#x}", out[i]));
        }
    }
    if out[9] != ARITHMETIC_FLAGS {
        return Err(alloc::format!("the arithmetic flags {ARITHMETIC_FLAGS:#x} came back as {:#x}", out[9]));
    }
    for k in 0..16 {
        let (lo, hi) = xmm_expected(k);
        if (out[10 + 2 * k], out[11 + 2 * k]) != (lo, hi) {
            return Err(alloc::format!("xmm{k}: {hi:#018x}{lo:016x} came back as {:#018x}{:016x}", out[11 + 2 * k], out[10 + 2 * k]));
        }
    }
    Ok(())
}

/// The trampoline an enabled site calls. Saves the caller-saved
/// general-purpose registers and the arithmetic flags, keeps a frame pointer
/// for call traces, and calls `trace_hook_fast(return address, traced
/// function's RBP)`; only when that asks for it (the NMI-context warning)
/// does it save XMM0-XMM15 and call `trace_hook_slow`.
///
/// A site sits in code that believes the call clobbers nothing, so every
/// register the hooks may change is restored:
/// - The fast path (every event) leaves the vector registers alone: the
///   hook and the event sink compile to code without a vector instruction,
///   which `elf_vector_state_is_xmm_only` checks on the built image by
///   following their calls. Saving XMM0-XMM15 cost more than half of an
///   event under TCG (450 of about 1,050 ns).
/// - The slow path is ordinary Rust that may use XMM0-XMM15, the only vector
///   state in the image: it holds no x87, MMX or AVX instruction and nothing
///   that writes or reads MXCSR, only the FXSAVE/FXRSTOR pair of the trap
///   entry (the same test fails on any).
/// - The flags are the six arithmetic ones, kept with LAHF/SETO and put back
///   with ADD/SAHF, not PUSHFQ/POPFQ (POPFQ may change IF, TF and AC: slow on
///   silicon, the end of a translation block under TCG). The others need no
///   saving: the hooks change no system flag, and DF is clear at every site
///   (the ABI keeps it clear at calls and the compiler never leaves it set),
///   so the hooks run with DF clear as they must.
///
/// `check_trampoline` proves the contract at boot before tracing starts.
#[unsafe(naked)]
#[unsafe(link_section = ".text.trace_hot")]
pub extern "C" fn trace_entry() {
    crate::trace_trampoline!(trace_hook_fast, trace_hook_slow)
}
