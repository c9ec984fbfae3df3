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
        Registry { duplicates: before - sites.len(), sites, states, nmi_path, warned }
    })
}

pub fn registry() -> Option<&'static Registry> {
    REGISTRY.get()
}

impl Registry {
    pub fn index_of(&self, site: u64) -> Option<usize> {
        self.sites.binary_search(&site).ok()
    }

    /// The first site inside `[start, start + len)` (a traced function's own site).
    pub fn site_in(&self, start: u64, len: u64) -> Option<usize> {
        let i = self.sites.partition_point(|&s| s < start);
        (i < self.sites.len() && self.sites[i] < start + len).then_some(i)
    }
}

/// Called by `trace_entry` with the address after the site's CALL and the
/// traced function's frame pointer.
#[unsafe(no_mangle)]
extern "C" fn trace_hook(ret: u64, fp: u64) {
    let cpu = this_cpu();
    let ctx = cpu.context();
    cpu.site_calls[ctx as usize].fetch_add(1, Ordering::Relaxed);
    let site = ret - super::protocol::SITE_LEN;
    if let Some(r) = registry()
        && let Some(i) = r.index_of(site)
    {
        if r.states[i].load(Ordering::Acquire) == state::OFF {
            cpu.traced_while_off.fetch_add(1, Ordering::Relaxed);
        }
        // Traced code in NMI context: warn once per site (the 2008 bug).
        if ctx == Context::Nmi && !r.warned[i].swap(true, Ordering::AcqRel) {
            super::nmi_policy::ftrace_nmi_warning(site, fp);
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
}

/// The trampoline an enabled site calls. Saves the caller-saved registers,
/// the flags and the FPU/SSE state (the hook is Rust), keeps a frame pointer
/// for call traces, and calls `trace_hook(return address, traced function's RBP)`.
#[unsafe(naked)]
pub extern "C" fn trace_entry() {
    core::arch::naked_asm!(
        "push rbp",
        "mov rbp, rsp",
        "pushfq",
        "cld",
        "push rax",
        "push rcx",
        "push rdx",
        "push rsi",
        "push rdi",
        "push r8",
        "push r9",
        "push r10",
        "push r11",
        "mov r11, rsp",
        "sub rsp, 512",
        "and rsp, -64",
        "fxsave64 [rsp]",
        "push r11",
        "sub rsp, 8",
        "mov rdi, [rbp + 8]",
        "mov rsi, [rbp]",
        "call {hook}",
        "add rsp, 8",
        "pop r11",
        "fxrstor64 [rsp]",
        "mov rsp, r11",
        "pop r11",
        "pop r10",
        "pop r9",
        "pop r8",
        "pop rdi",
        "pop rsi",
        "pop rdx",
        "pop rcx",
        "pop rax",
        "popfq",
        "pop rbp",
        "ret",
        hook = sym trace_hook,
    )
}
