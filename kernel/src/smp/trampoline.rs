//! The real-mode AP start-up trampoline.
//!
//! A SIPI starts an AP in real mode at `vector << 12` (SDM Vol. 3A §9.4.4.1,
//! "Typical AP Initialization Sequence"). The code below is assembled here,
//! stored in the read-only `.trampoline` section, and copied to
//! [`TRAMPOLINE_ADDR`] before the SIPIs; every absolute address inside it is
//! computed for that location. It goes real mode -> 32-bit protected mode ->
//! long mode with the kernel's page tables, then jumps to the 64-bit entry
//! given in the parameter block with the stack given there.
//!
//! The parameter block ([`Params`]) sits at [`PARAMS_OFFSET`] in the page; the
//! BSP fills it for one AP at a time.

use core::arch::global_asm;

/// Physical address of the trampoline page (below 1 MiB, page-aligned: the
/// SIPI vector is its page number).
pub const TRAMPOLINE_ADDR: u64 = 0x8000;
/// SIPI vector for [`TRAMPOLINE_ADDR`].
pub const SIPI_VECTOR: u8 = (TRAMPOLINE_ADDR >> 12) as u8;
/// Where the parameter block starts inside the page.
pub const PARAMS_OFFSET: u64 = 0xF00;

/// Filled by the BSP before each SIPI; read by the AP's trampoline code.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Params {
    /// PML4 physical address (below 4 GiB: loaded in 32-bit mode).
    pub cr3: u32,
    /// The BSP's CR4 (PAE, PGE, OSFXSR, OSXMMEXCPT).
    pub cr4: u32,
    /// The BSP's EFER (LME, NXE).
    pub efer: u32,
    /// Written 1 by the AP as soon as it runs 64-bit code.
    pub alive: u32,
    pub stack_top: u64,
    /// `extern "C" fn(arg: u64) -> !`
    pub entry: u64,
    pub arg: u64,
}

// Offsets used by the assembly (checked against `Params` below).
const _: () = {
    assert!(core::mem::offset_of!(Params, cr3) == 0);
    assert!(core::mem::offset_of!(Params, cr4) == 4);
    assert!(core::mem::offset_of!(Params, efer) == 8);
    assert!(core::mem::offset_of!(Params, alive) == 12);
    assert!(core::mem::offset_of!(Params, stack_top) == 16);
    assert!(core::mem::offset_of!(Params, entry) == 24);
    assert!(core::mem::offset_of!(Params, arg) == 32);
};

global_asm!(
    r#"
.section .trampoline, "a"
.set TBASE, 0x8000
.set PARAMS, TBASE + 0xF00
.balign 4096
.global ap_trampoline_start
ap_trampoline_start:
.code16
    cli
    cld
    mov %cs, %ax
    mov %ax, %ds
    lgdtl (ap_tramp_gdt_ptr - ap_trampoline_start)
    mov %cr0, %eax
    or $1, %eax
    mov %eax, %cr0
    ljmpl $0x18, $(TBASE + (ap_tramp_pm - ap_trampoline_start))

.code32
ap_tramp_pm:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    mov (PARAMS + 4), %eax
    mov %eax, %cr4
    mov (PARAMS + 0), %eax
    mov %eax, %cr3
    mov $0xC0000080, %ecx
    mov (PARAMS + 8), %eax
    xor %edx, %edx
    wrmsr
    mov %cr0, %eax
    and $0xfffffff3, %eax
    or $0x80010023, %eax
    mov %eax, %cr0
    ljmp $0x08, $(TBASE + (ap_tramp_lm - ap_trampoline_start))

.code64
ap_tramp_lm:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    xor %eax, %eax
    mov %ax, %fs
    mov %ax, %gs
    movl $1, (PARAMS + 12)
    mov (PARAMS + 16), %rsp
    mov (PARAMS + 32), %rdi
    mov (PARAMS + 24), %rax
    xor %ebp, %ebp
    push $0
    jmp *%rax

.balign 8
ap_tramp_gdt:
    .quad 0
    .quad 0x00af9a000000ffff
    .quad 0x00cf92000000ffff
    .quad 0x00cf9a000000ffff
ap_tramp_gdt_ptr:
    .short ap_tramp_gdt_ptr - ap_tramp_gdt - 1
    .long TBASE + (ap_tramp_gdt - ap_trampoline_start)
.global ap_trampoline_end
ap_trampoline_end:
"#,
    options(att_syntax)
);

unsafe extern "C" {
    static ap_trampoline_start: u8;
    static ap_trampoline_end: u8;
}

/// The trampoline's code bytes (to be copied to [`TRAMPOLINE_ADDR`]).
pub fn code() -> &'static [u8] {
    let (s, e) = (&raw const ap_trampoline_start, &raw const ap_trampoline_end);
    // SAFETY: both symbols delimit the assembled trampoline in read-only data.
    unsafe { core::slice::from_raw_parts(s, e as usize - s as usize) }
}
