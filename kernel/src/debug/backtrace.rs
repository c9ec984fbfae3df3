//! Symbolized call traces: `[<addr>] func+0xoff/0xlen`, walking the frame
//! pointer chain (the image is built with frame pointers). Lock-free and
//! allocation-free: usable from exception and NMI context.

use core::fmt::{self, Write};
use core::sync::atomic::Ordering;

use crate::arch::percpu::this_cpu;
use crate::debug::symbols::{Error, SymbolTable};

unsafe extern "C" {
    static __ksyms_start: u8;
    static __ksyms_end: u8;
    static boot_stack_bottom: u8;
    static boot_stack_top: u8;
}

/// Bytes reserved in the image for the symbol table; xtask writes the table
/// into this space after linking (so no address moves) and fails the build
/// if it does not fit.
pub const KSYMS_RESERVED: usize = 2 * 1024 * 1024;

#[unsafe(link_section = ".ksyms")]
#[used]
static KSYMS_SPACE: [u8; KSYMS_RESERVED] = [0; KSYMS_RESERVED];

static TABLE: spin::Once<Result<SymbolTable<'static>, Error>> = spin::Once::new();

/// Parse the embedded table. Boot CPU, before any exception handler needs it.
pub fn init() -> Result<usize, Error> {
    let t = TABLE.call_once(|| {
        let (start, end) = (&raw const __ksyms_start, &raw const __ksyms_end);
        // SAFETY: the linker script delimits the .ksyms section with these two
        // symbols; it is read-only data filled by xtask and never written.
        let blob = unsafe { core::slice::from_raw_parts(start, end as usize - start as usize) };
        // The table holds link addresses; the image may run elsewhere.
        SymbolTable::parse(blob).map(|t| t.with_offset(crate::boot::entry::load_delta()))
    });
    t.as_ref().map(|t| t.len()).map_err(|e| *e)
}

/// The symbol table, if `init` succeeded (never blocks).
pub fn table() -> Option<&'static SymbolTable<'static>> {
    TABLE.get().and_then(|r| r.as_ref().ok())
}

/// `name+0xoff/0xlen`, or `?` when the address is in no symbol.
pub fn write_symbol(out: &mut (impl Write + ?Sized), addr: u64) -> fmt::Result {
    match table().and_then(|t| t.lookup(addr)) {
        Some(loc) => write!(out, "{loc}"),
        None => write!(out, "?"),
    }
}

/// Like `write_symbol` for a return address: the call that pushed it may be
/// the last instruction of a function that never returns, so the address is
/// looked up as `ret - 1` (the offset printed is still that of `ret`).
pub fn write_return_symbol(out: &mut impl Write, ret: u64) -> fmt::Result {
    match table().and_then(|t| t.lookup(ret.wrapping_sub(1))) {
        Some(loc) => write!(out, "{}+{:#x}/{:#x}", loc.symbol.name, loc.offset + 1, loc.symbol.len),
        None => write!(out, "?"),
    }
}

/// Where the trapping code ran, for the dump header.
pub fn context_name() -> &'static str {
    if this_cpu().nmi_depth.load(Ordering::Relaxed) > 0 { "<NMI>" } else { "" }
}

/// This CPU's stacks, and the boot stack (the BSP runs on it before its
/// stacks are recorded).
fn on_known_stack(addr: u64) -> bool {
    let boot = (&raw const boot_stack_bottom as u64)..(&raw const boot_stack_top as u64);
    boot.contains(&addr) || this_cpu().stacks().contains(addr)
}

/// Return addresses up the frame-pointer chain from `rbp`, on this CPU's
/// known stacks only. Lock-free; usable from NMI context.
pub fn return_addresses(rbp: u64) -> impl Iterator<Item = u64> {
    let mut fp = rbp;
    core::iter::from_fn(move || {
        if fp == 0 || !fp.is_multiple_of(8) || !on_known_stack(fp) || !on_known_stack(fp + 15) {
            return None;
        }
        // SAFETY: fp and fp+8 lie on one of this CPU's mapped stacks (checked above).
        let (next, ret) = unsafe { (*(fp as *const u64), *((fp + 8) as *const u64)) };
        if ret == 0 {
            return None;
        }
        fp = next;
        Some(ret)
    })
    .take(MAX_FRAMES)
}

/// Most frames printed.
pub const MAX_FRAMES: usize = 32;

/// Write `Call Trace:` with `rip` first, then every return address found by
/// following the frame-pointer chain from `rbp`.
pub fn write_call_trace(out: &mut impl Write, rip: u64, rbp: u64) -> fmt::Result {
    writeln!(out, "Call Trace:")?;
    write_frames(out, rip, return_addresses(rbp))
}

/// ` [<rip>] symbol`, then ` [<ret>] symbol` for each return address.
fn write_frames(out: &mut impl Write, rip: u64, rets: impl Iterator<Item = u64>) -> fmt::Result {
    write!(out, " [<{rip:016x}>] ")?;
    write_symbol(out, rip)?;
    writeln!(out)?;
    for ret in rets {
        write!(out, " [<{ret:016x}>] ")?;
        write_return_symbol(out, ret)?;
        writeln!(out)?;
    }
    Ok(())
}

/// In NMI context: `Call Trace:` with the NMI handler's own frames between
/// `<NMI>` and `</NMI>` (as Linux marks them, `arch/x86/kernel/dumpstack.c`),
/// then the interrupted code's from `rip` and `rbp`.
#[inline(never)]
pub fn write_nmi_call_trace(out: &mut impl Write, rip: u64, rbp: u64) -> fmt::Result {
    writeln!(out, "Call Trace:")?;
    writeln!(out, " <NMI>")?;
    let here: u64;
    // SAFETY: reads rbp (this function's frame, built with frame pointers); no side effects.
    unsafe { core::arch::asm!("mov {}, rbp", out(reg) here, options(nomem, nostack, preserves_flags)) };
    let nmi_stack = this_cpu().stacks().ist[crate::arch::percpu::ist::NMI];
    let mut fp = here;
    for _ in 0..MAX_FRAMES {
        if fp == 0 || !fp.is_multiple_of(8) || !nmi_stack.contains(fp) || !nmi_stack.contains(fp + 15) {
            break;
        }
        // SAFETY: fp and fp+8 lie on this CPU's NMI stack, mapped (checked above).
        let (next, ret) = unsafe { (*(fp as *const u64), *((fp + 8) as *const u64)) };
        if ret == 0 {
            break;
        }
        write!(out, " [<{ret:016x}>] ")?;
        write_return_symbol(out, ret)?;
        writeln!(out)?;
        fp = next;
    }
    writeln!(out, " </NMI>")?;
    write_frames(out, rip, return_addresses(rbp))
}

/// Call trace from the caller of this function.
#[inline(never)]
pub fn write_here(out: &mut impl Write) -> fmt::Result {
    let (rbp, rip): (u64, u64);
    // SAFETY: reads rbp and the current instruction address; no side effects.
    unsafe { core::arch::asm!("mov {}, rbp", "lea {}, [rip]", out(reg) rbp, out(reg) rip, options(nomem, nostack)) };
    write_call_trace(out, rip, rbp)
}
