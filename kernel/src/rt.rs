//! What the prebuilt `core`/`alloc`/`compiler_builtins` of the host target
//! need from a freestanding kernel, as `readelf -sW` on their rlibs shows:
//! the C memory functions (`memcpy`, `memset`, `memmove`, `memcmp`, `bcmp`,
//! `strlen`: no libc links in), two unwinding symbols (`_Unwind_Resume`,
//! `rust_eh_personality`: alloc was built with unwinding; we abort), and the
//! panic handler.
//!
//! The memory functions are written with `rep movs`/`rep stos` in inline
//! assembly so the compiler cannot turn them back into calls to themselves.
//! Forward copies and fills move quadwords, then the last 0-7 bytes: as fast
//! as byte strings on silicon with fast strings (SDM Vol. 1 §7.3.9.3), and
//! eight times fewer iterations under QEMU's TCG, which emulates each one.

use core::fmt::Write;
use core::sync::atomic::{AtomicBool, Ordering};

/// # Safety
/// C `memcpy` contract: `dst` and `src` valid for `n` bytes and not overlapping.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memcpy(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // SAFETY: caller's contract; rep movsq copies n / 8 quadwords forward (DF is
    // clear), leaving rdi/rsi past them, and rep movsb the n % 8 bytes left: n in all.
    unsafe {
        core::arch::asm!("rep movsq", "mov rcx, {tail}", "rep movsb", tail = in(reg) n & 7, inout("rcx") n >> 3 => _,
            inout("rdi") dst => _, inout("rsi") src => _, options(nostack, preserves_flags))
    };
    dst
}

/// # Safety
/// C `memmove` contract: `dst` and `src` valid for `n` bytes; they may overlap.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memmove(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    if (dst as usize).wrapping_sub(src as usize) >= n {
        // dst is below src or past its end: a forward copy never reads a byte it wrote.
        // SAFETY: caller's contract, and the forward copy is overlap-safe here.
        unsafe { memcpy(dst, src, n) }
    } else {
        // SAFETY: caller's contract; copying backwards (DF set, restored) from the
        // last byte is overlap-safe when dst is above src.
        unsafe {
            core::arch::asm!("std", "rep movsb", "cld", inout("rcx") n => _, inout("rdi") dst.add(n - 1) => _,
                inout("rsi") src.add(n - 1) => _, options(nostack))
        };
        dst
    }
}

/// # Safety
/// C `memset` contract: `dst` valid for `n` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memset(dst: *mut u8, c: i32, n: usize) -> *mut u8 {
    // SAFETY: caller's contract; rep stosq writes n / 8 quadwords of the byte
    // repeated, rep stosb the n % 8 bytes left: n bytes forward in all.
    unsafe {
        core::arch::asm!("rep stosq", "mov rcx, {tail}", "rep stosb", tail = in(reg) n & 7, inout("rcx") n >> 3 => _,
            inout("rdi") dst => _, in("rax") (c as u8 as u64).wrapping_mul(0x0101_0101_0101_0101), options(nostack, preserves_flags))
    };
    dst
}

/// # Safety
/// C `memcmp` contract: both pointers valid for `n` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    let mut i = 0;
    while i < n {
        // SAFETY: i < n, inside both buffers (caller's contract). Volatile reads
        // keep LLVM from recognizing this loop as a call to memcmp itself.
        let (x, y) = unsafe { (a.add(i).read_volatile(), b.add(i).read_volatile()) };
        if x != y {
            return x as i32 - y as i32;
        }
        i += 1;
    }
    0
}

/// # Safety
/// As `memcmp`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: same contract as memcmp.
    unsafe { memcmp(a, b, n) }
}

/// # Safety
/// `s` must point at a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn strlen(s: *const u8) -> usize {
    let mut n = 0;
    // SAFETY: the string is NUL-terminated (caller's contract), so every byte up to the NUL is readable.
    while unsafe { s.add(n).read_volatile() } != 0 {
        n += 1;
    }
    n
}

/// Referenced by the prebuilt `alloc` (built with unwinding); we build with
/// `panic = "abort"`, so nothing ever unwinds.
#[unsafe(no_mangle)]
pub extern "C" fn _Unwind_Resume() -> ! {
    crate::arch::cpu::halt_forever()
}

/// See `_Unwind_Resume`.
#[unsafe(no_mangle)]
pub extern "C" fn rust_eh_personality() {}

static PANICKING: AtomicBool = AtomicBool::new(false);

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    // SAFETY: cli only masks this CPU's interrupts.
    unsafe { core::arch::asm!("cli", options(nomem, nostack)) };
    let cpu = if crate::arch::percpu::installed() { crate::arch::percpu::this_cpu().index() } else { 0 };
    let first = !PANICKING.swap(true, Ordering::AcqRel);
    {
        let mut con = crate::debug::log::emergency_console();
        let _ = writeln!(con, "\n------------[ cut here ]------------");
        let _ = writeln!(con, "Kernel panic on CPU {cpu}: {info}");
        if first {
            let _ = crate::debug::backtrace::write_here(&mut con);
        }
        let _ = writeln!(con, "---[ end Kernel panic: CPU {cpu} halted ]---");
    }
    if crate::arch::percpu::installed() {
        let c = crate::arch::percpu::this_cpu();
        c.dead.store(true, Ordering::Release);
        c.online.store(false, Ordering::Release);
    }
    crate::arch::trap::run_fatal_hook();
    crate::arch::cpu::halt_forever()
}
