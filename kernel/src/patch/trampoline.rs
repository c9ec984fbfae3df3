//! The trace trampoline's code, shared by the kernel (`site.rs`:
//! `trace_entry`, what an enabled site calls) and the silicon harness
//! (`bench/silicon`), which runs the same instructions in Linux user space to
//! measure an event on real CPUs. Its contract and reasoning are on
//! `kernel::patch::site::trace_entry`.

/// The body of a naked `extern "C" fn()` trampoline: saves the caller-saved
/// general-purpose registers and the arithmetic flags, calls
/// `$fast(return address, traced function's RBP) -> u64`, and only when that
/// returns nonzero saves XMM0-XMM15 around `$slow(return address, RBP)`.
#[macro_export]
macro_rules! trace_trampoline {
    ($fast:path, $slow:path) => {
        core::arch::naked_asm!(
            "push rbp",
            "mov rbp, rsp",
            "push rax",
            // The arithmetic flags in AX: SF ZF AF PF CF by LAHF, OF by SETO.
            "lahf",
            "seto al",
            "push rax",
            "push rcx",
            "push rdx",
            "push rsi",
            "push rdi",
            "push r8",
            "push r9",
            "push r10",
            "push r11",
            // The fast path: no vector register is saved (see `trace_hook_fast`).
            "mov r11, rsp",
            "and rsp, -16",
            "push r11",
            "sub rsp, 8",
            "mov rdi, [rbp + 8]",
            "mov rsi, [rbp]",
            "call {fast}",
            "test rax, rax",
            "jz 2f",
            // The slow path: XMM0-XMM15 saved around it.
            "sub rsp, 256",
            ".irp n, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15",
            "movdqa [rsp + 16 * \\n], xmm\\n",
            ".endr",
            "mov rdi, [rbp + 8]",
            "mov rsi, [rbp]",
            "call {slow}",
            ".irp n, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15",
            "movdqa xmm\\n, [rsp + 16 * \\n]",
            ".endr",
            "add rsp, 256",
            "2:",
            "add rsp, 8",
            "pop r11",
            "mov rsp, r11",
            "pop r11",
            "pop r10",
            "pop r9",
            "pop r8",
            "pop rdi",
            "pop rsi",
            "pop rdx",
            "pop rcx",
            // OF from AL (0x7f + 1 overflows, 0x7f + 0 does not), then the
            // rest from AH; nothing after this touches the flags.
            "pop rax",
            "add al, 0x7f",
            "sahf",
            "pop rax",
            "pop rbp",
            "ret",
            fast = sym $fast,
            slow = sym $slow,
        )
    };
}
