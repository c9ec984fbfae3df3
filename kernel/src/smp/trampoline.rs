//! The real-mode AP start-up trampoline.
//!
//! A SIPI starts an AP in real mode at `vector << 12` (SDM Vol. 3A §9.4.4.1,
//! "Typical AP Initialization Sequence"). The code below is assembled here,
//! stored in the read-only `.trampoline` section, and copied before the SIPIs
//! to the page chosen from the memory map ([`addr`]); it is
//! position-independent (every absolute address is computed from CS). It goes real mode -> 32-bit protected mode ->
//! long mode with the kernel's page tables, then jumps to the 64-bit entry
//! given in the parameter block with the stack given there.
//!
//! The parameter block ([`Params`]) sits at [`PARAMS_OFFSET`] in the page; the
//! BSP fills it for one AP at a time.

use core::arch::global_asm;
use core::sync::atomic::{AtomicU64, Ordering};

/// Physical address of the trampoline page (below 1 MiB, page-aligned: the
/// SIPI vector is its page number), chosen at boot from the memory map
/// (`mem::low::trampoline_page`); 0 until then (no AP can be started).
static TRAMPOLINE_ADDR: AtomicU64 = AtomicU64::new(0);

/// Record the page chosen for the trampoline (boot CPU, before paging).
pub fn set_addr(addr: u64) {
    TRAMPOLINE_ADDR.store(addr, Ordering::Relaxed);
}

/// The trampoline page, if one was found.
pub fn addr() -> Option<u64> {
    Some(TRAMPOLINE_ADDR.load(Ordering::Relaxed)).filter(|a| *a != 0)
}

/// SIPI vector for a trampoline page.
pub fn sipi_vector(addr: u64) -> u8 {
    (addr >> 12) as u8
}
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
.set PARAMS, 0xF00
.balign 4096
.global ap_trampoline_start
ap_trampoline_start:
.code16
    cli
    cld
    mov %cs, %ax
    mov %ax, %ds
    # %ebx = the page's linear address (CS = vector << 8): every absolute
    # address below is %ebx plus an offset, so the page may sit anywhere
    # below 1 MiB.
    xor %ebx, %ebx
    mov %cs, %bx
    shl $4, %ebx
    # The GDT pointer's base and the two far-jump targets, made absolute.
    lea (ap_tramp_gdt - ap_trampoline_start)(%ebx), %eax
    mov %eax, (ap_tramp_gdt_ptr - ap_trampoline_start + 2)
    lea (ap_tramp_pm - ap_trampoline_start)(%ebx), %eax
    mov %eax, (ap_tramp_to_pm - ap_trampoline_start)
    lea (ap_tramp_lm - ap_trampoline_start)(%ebx), %eax
    mov %eax, (ap_tramp_to_lm - ap_trampoline_start)
    lgdtl (ap_tramp_gdt_ptr - ap_trampoline_start)
    mov %cr0, %eax
    or $1, %eax
    mov %eax, %cr0
    ljmpl *(ap_tramp_to_pm - ap_trampoline_start)

.code32
ap_tramp_pm:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    mov (PARAMS + 4)(%ebx), %eax
    mov %eax, %cr4
    mov (PARAMS + 0)(%ebx), %eax
    mov %eax, %cr3
    mov $0xC0000080, %ecx
    mov (PARAMS + 8)(%ebx), %eax
    xor %edx, %edx
    wrmsr
    # CR0: clear CD (bit 30), NW (bit 29), TS, EM - INIT leaves CD/NW as
    # firmware had them (SDM Vol. 3A §10.1.1, Table 10-1: CD and NW are set
    # after power-up and unchanged by INIT) - then set PG, WP, NE, MP, PE.
    mov %cr0, %eax
    and $0x9ffffff3, %eax
    or $0x80010023, %eax
    mov %eax, %cr0
    ljmp *(ap_tramp_to_lm - ap_trampoline_start)(%ebx)

.code64
ap_tramp_lm:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    xor %eax, %eax
    mov %ax, %fs
    mov %ax, %gs
    # The upper half of %rbx is undefined after the switch: zero-extend.
    mov %ebx, %ebx
    movl $1, (PARAMS + 12)(%rbx)
    mov (PARAMS + 16)(%rbx), %rsp
    mov (PARAMS + 32)(%rbx), %rdi
    mov (PARAMS + 24)(%rbx), %rax
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
    .long 0
# Far pointers (offset, selector) filled in by the code above.
.balign 4
ap_tramp_to_pm:
    .long 0
    .short 0x18
ap_tramp_to_lm:
    .long 0
    .short 0x08
.global ap_trampoline_end
ap_trampoline_end:
"#,
    options(att_syntax)
);

unsafe extern "C" {
    static ap_trampoline_start: u8;
    static ap_trampoline_end: u8;
}

/// The trampoline's code bytes (to be copied to [`addr`]).
pub fn code() -> &'static [u8] {
    let (s, e) = (&raw const ap_trampoline_start, &raw const ap_trampoline_end);
    // SAFETY: both symbols delimit the assembled trampoline in read-only data.
    unsafe { core::slice::from_raw_parts(s, e as usize - s as usize) }
}
