//! The IDT and its entry stubs.
//!
//! Every vector has a 16-byte stub (generated below with `.rept`) that pushes a
//! dummy error code where the CPU pushes none, pushes the vector number and
//! jumps to `trap_common`. `trap_common` saves all general registers (the
//! [`TrapFrame`](super::trap::TrapFrame)) and the FPU/SSE state (`fxsave64`:
//! handlers are Rust and prebuilt `core` uses SSE), calls
//! [`trap_dispatch`](super::trap::trap_dispatch) and returns either
//! - with `iretq` (the normal case), or
//! - without IRET when the dispatcher asks for it (an exception taken inside
//!   the NMI handler): `iretq` would unblock NMIs while the first NMI still
//!   runs on its IST stack. The dispatcher has written RFLAGS and RIP just
//!   below the target stack pointer; the stub switches to that stack, `popfq`
//!   and `ret`. Only used where the words below RSP are dead (trace sites at
//!   function entry; see trap.rs).
//!
//! Every gate uses an IST stack (see `percpu::ist`), so no entry writes on the
//! interrupted stack (whose red zone may be live).

use core::arch::global_asm;

use x86_64::VirtAddr;
use x86_64::structures::idt::InterruptDescriptorTable;

use super::percpu::ist;

/// Exception vectors (SDM Vol. 3A §6.3.1, Table 6-1).
pub mod vector {
    pub const DIVIDE: u8 = 0;
    pub const DEBUG: u8 = 1;
    pub const NMI: u8 = 2;
    pub const BREAKPOINT: u8 = 3;
    pub const INVALID_OPCODE: u8 = 6;
    pub const DOUBLE_FAULT: u8 = 8;
    pub const GENERAL_PROTECTION: u8 = 13;
    pub const PAGE_FAULT: u8 = 14;
    pub const MACHINE_CHECK: u8 = 18;
    /// First vector free for interrupts.
    pub const FIRST_IRQ: u8 = 32;
    /// Local-APIC timer.
    pub const TIMER: u8 = 0x20;
    /// Cross-CPU call IPI.
    pub const XCALL: u8 = 0xF0;
    /// Local-APIC error interrupt.
    pub const APIC_ERROR: u8 = 0xFE;
    /// Local-APIC spurious interrupt (SVR vector; its low 4 bits must be 1 on old CPUs).
    pub const SPURIOUS: u8 = 0xFF;
}

/// Size of one generated stub (each is aligned to it).
const STUB_SIZE: u64 = 16;

global_asm!(
    r#"
.section .text.trap_stubs, "ax"
.balign 16
.global trap_stubs_start
trap_stubs_start:
.set vec, 0
.rept 256
.balign 16
.if (vec == 8) || (vec == 10) || (vec == 11) || (vec == 12) || (vec == 13) || (vec == 14) || (vec == 17) || (vec == 21) || (vec == 29) || (vec == 30)
.else
    pushq $0
.endif
    pushq $vec
    jmp trap_common
.set vec, vec + 1
.endr
.balign 16
.global trap_stubs_end
trap_stubs_end:

.macro restore_gprs_and_drop_vector
    pop %r15
    pop %r14
    pop %r13
    pop %r12
    pop %r11
    pop %r10
    pop %r9
    pop %r8
    pop %rbp
    pop %rdi
    pop %rsi
    pop %rdx
    pop %rcx
    pop %rbx
    pop %rax
    add $16, %rsp
.endm

.balign 16
.global trap_common
trap_common:
    push %rax
    push %rbx
    push %rcx
    push %rdx
    push %rsi
    push %rdi
    push %rbp
    push %r8
    push %r9
    push %r10
    push %r11
    push %r12
    push %r13
    push %r14
    push %r15
    mov %rsp, %rdi
    mov %rsp, %rbx
    sub $512, %rsp
    and $-64, %rsp
    fxsave64 (%rsp)
    cld
    call trap_dispatch
    fxrstor64 (%rsp)
    mov %rbx, %rsp
    test %rax, %rax
    jnz 1f
    restore_gprs_and_drop_vector
    iretq
1:
    restore_gprs_and_drop_vector
    mov 24(%rsp), %rsp
    popfq
    ret
"#,
    options(att_syntax)
);

unsafe extern "C" {
    static trap_stubs_start: u8;
    static trap_stubs_end: u8;
}

struct Idt(core::cell::UnsafeCell<InterruptDescriptorTable>);
// SAFETY: written only by `init` on the boot CPU before any CPU loads it; read-only afterwards.
unsafe impl Sync for Idt {}
static IDT: Idt = Idt(core::cell::UnsafeCell::new(InterruptDescriptorTable::new()));

fn stub(vector: u8) -> VirtAddr {
    let start = &raw const trap_stubs_start as u64;
    VirtAddr::new(start + vector as u64 * STUB_SIZE)
}

/// The IST index used by `vector`.
pub fn ist_for(vector: u8) -> usize {
    match vector {
        vector::NMI => ist::NMI,
        vector::DOUBLE_FAULT => ist::DOUBLE_FAULT,
        vector::MACHINE_CHECK => ist::MACHINE_CHECK,
        vector::BREAKPOINT => ist::BREAKPOINT,
        0..32 => ist::EXCEPTION,
        _ => ist::IRQ,
    }
}

/// Fill the shared IDT. Boot CPU, once, before any `load`.
pub fn init() {
    let (start, end) = (&raw const trap_stubs_start as u64, &raw const trap_stubs_end as u64);
    assert_eq!(end - start, 256 * STUB_SIZE, "trap stubs are not {STUB_SIZE} bytes each");
    // SAFETY: runs once on the boot CPU before any CPU loads the IDT, so
    // nothing else reads or writes IDT concurrently.
    let idt = unsafe { &mut *IDT.0.get() };
    macro_rules! set {
        ($entry:expr, $v:expr) => {{
            // SAFETY: the address is the generated stub for this vector, which
            // saves state and returns with iretq (or the NMI-safe path); the
            // IST index is below 7 and every CPU's TSS fills it.
            unsafe { $entry.set_handler_addr(stub($v)).set_stack_index(ist_for($v) as u16) };
        }};
    }
    set!(idt.double_fault, 8);
    set!(idt.invalid_tss, 10);
    set!(idt.segment_not_present, 11);
    set!(idt.stack_segment_fault, 12);
    set!(idt.general_protection_fault, 13);
    set!(idt.page_fault, 14);
    set!(idt.alignment_check, 17);
    set!(idt.machine_check, 18);
    set!(idt.cp_protection_exception, 21);
    set!(idt.vmm_communication_exception, 29);
    set!(idt.security_exception, 30);
    for v in (0u8..=7).chain([9, 16, 19, 20, 28]).chain(32..=255) {
        set!(idt[v], v);
    }
}

/// Load the IDT on this CPU.
pub fn load() {
    // SAFETY: IDT is 'static and fully initialised by `init` before any CPU
    // calls `load`; it is never written again.
    unsafe { (*IDT.0.get()).load_unsafe() };
}
