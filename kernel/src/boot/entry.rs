//! Multiboot headers and the 32-bit entry: from the boot loader's protected
//! mode to 64-bit long mode, then `kmain(magic, info)`.
//!
//! Two headers point at the same entry:
//! - multiboot2 (GRUB): magic 0x36d76289 in EAX, boot information in EBX
//!   (Multiboot2 spec 1.0, §3.1);
//! - multiboot1 with the a.out kludge (flags bit 16), so `qemu -kernel` loads
//!   this ELF64 directly: magic 0x2BADB002 (Multiboot 0.6.96, §3.1.1/§3.2).
//!
//! The multiboot2 header has no framebuffer tag on purpose: GRUB then leaves
//! a BIOS machine in VGA text mode (with the tag it always sets a graphics
//! mode), while under UEFI, which has no text mode, it sets up the GOP
//! framebuffer anyway (grub.cfg loads the video drivers); either way it
//! reports the screen in the boot information, and the screen console draws there.
//!
//! The image is relocatable: the multiboot2 header carries the relocatable
//! tag (Multiboot2 spec §3.1.13: any 2 MiB-aligned address from 2 MiB up to
//! `image::RELOC_MAX`, lowest preferred), so GRUB places it where the firmware
//! left memory free (Xen became relocatable because some machines' EFI boot
//! services sit at 2 MiB, e.g. Dell PowerEdge R820). It is linked as a
//! static position-independent executable at 2 MiB: Rust code addresses
//! everything relative to RIP, and the pointers stored in data (vtables,
//! the trace-site registry, function tables) are listed in `.rela.dyn` as
//! R_X86_64_RELATIVE relocations, which the 64-bit entry applies before any
//! Rust code runs when the image sits elsewhere. The 32-bit entry addresses
//! its data relative to where it finds itself running (a CALL to the next
//! instruction, its stack borrowed from the reserved word of the boot
//! information). `qemu -kernel` (multiboot1) always loads at the link address.
//!
//! The entry identity-maps the first 4 GiB with 2 MiB pages (no 1 GiB pages:
//! TCG's default CPU lacks pdpe1gb), enables PAE, SSE (CR4.OSFXSR/OSXMMEXCPT,
//! CR0.MP, !CR0.EM: prebuilt `core` uses SSE), EFER.LME and EFER.NXE, paging
//! with CR0.WP, and jumps to 64-bit code. `kmain` replaces these tables.

use core::arch::global_asm;

/// Multiboot2 magic the loader leaves in EAX.
pub const MB2_BOOT_MAGIC: u32 = 0x36d7_6289;
/// Multiboot1 magic the loader leaves in EAX.
pub const MB1_BOOT_MAGIC: u32 = 0x2BAD_B002;
pub use super::image::LINK_BASE;
use super::image::{R_X86_64_RELATIVE, RELOC_ALIGN, RELOC_MAX, RELOC_MIN, RELOC_PREFER_LOW};

/// Where the image runs minus where it was linked: set by the 64-bit entry
/// before any Rust code runs (loaders zero `.bss` before they jump to the
/// entry, so the store stays).
#[unsafe(no_mangle)]
static mut KERNEL_LOAD_DELTA: u64 = 0;

/// Where the image runs minus where it was linked (0 when loaded at
/// [`LINK_BASE`]).
pub fn load_delta() -> u64 {
    // SAFETY: written once by the entry code on the boot CPU before kmain;
    // only read afterwards.
    unsafe { (&raw const KERNEL_LOAD_DELTA).read() }
}

global_asm!(
    r#"
.section .multiboot, "a"
.balign 8
.global mb2_header
mb2_header:
    .long 0xe85250d6
    .long 0
    .long mb2_header_end - mb2_header
    .long 0x100000000 - (0xe85250d6 + (mb2_header_end - mb2_header))
    /* Relocatable tag: type 10, optional (flags bit 0: a loader that cannot
       relocate loads at the link address), min, max, align, preference. */
    .balign 8
.global mb2_reloc_tag
mb2_reloc_tag:
    .short 10
    .short 1
    .long 24
    .long {reloc_min}
    .long {reloc_max}
    .long {reloc_align}
    .long {prefer_low}
    .balign 8
    .short 0
    .short 0
    .long 8
mb2_header_end:

.balign 4
.global mb1_header
mb1_header:
    .long 0x1BADB002
    .long 0x00010003
    .long 0x100000000 - (0x1BADB002 + 0x00010003)
    /* The a.out kludge wants link addresses: absolute symbols from the
       linker script (no relocation in a position-independent image). */
    .long __mb1_header_link
    .long __kernel_start_link
    .long __load_end_link
    .long __kernel_end_link
    .long __start_link

.section .boot.text, "ax"
.code32
.global _start
_start:
    cli
    cld
    mov %eax, %edi
    mov %ebx, %esi
    /* Long mode present? (CPUID clobbers EBX: before it holds our base.) */
    mov $0x80000000, %eax
    cpuid
    cmp $0x80000001, %eax
    jb .Lno_long_mode
    mov $0x80000001, %eax
    cpuid
    test $(1 << 29), %edx
    jz .Lno_long_mode
    mov %edx, %ebp
    /* Find where we run: CALL pushes the address of boot_anchor. The stack
       is the boot information's second word (reserved in multiboot2,
       mem_lower in multiboot1: saved and put back). */
    mov 4(%esi), %ecx
    lea 8(%esi), %esp
    call boot_anchor
.global boot_anchor
boot_anchor:
    pop %ebx
    mov %ecx, 4(%esi)
    lea (boot_stack_top - boot_anchor)(%ebx), %esp

    lea (boot_pdpt - boot_anchor)(%ebx), %eax
    or $0x3, %eax
    mov %eax, (boot_pml4 - boot_anchor)(%ebx)
    movl $0, (boot_pml4 + 4 - boot_anchor)(%ebx)
    lea (boot_pdpt - boot_anchor)(%ebx), %edx
    lea (boot_pd - boot_anchor)(%ebx), %eax
    or $0x3, %eax
    xor %ecx, %ecx
1:  mov %eax, (%edx,%ecx,8)
    movl $0, 4(%edx,%ecx,8)
    add $0x1000, %eax
    inc %ecx
    cmp $4, %ecx
    jne 1b

    lea (boot_pd - boot_anchor)(%ebx), %edx
    xor %ecx, %ecx
2:  mov %ecx, %eax
    shl $21, %eax
    or $0x83, %eax
    mov %eax, (%edx,%ecx,8)
    movl $0, 4(%edx,%ecx,8)
    inc %ecx
    cmp $2048, %ecx
    jne 2b

    mov %cr4, %eax
    or $((1 << 5) | (1 << 9) | (1 << 10)), %eax
    mov %eax, %cr4
    lea (boot_pml4 - boot_anchor)(%ebx), %eax
    mov %eax, %cr3

    mov $0xC0000080, %ecx
    rdmsr
    or $(1 << 8), %eax
    test $(1 << 20), %ebp
    jz 3f
    or $(1 << 11), %eax
3:  wrmsr

    mov %cr0, %eax
    and $0xfffffff3, %eax
    or $0x80010003, %eax
    mov %eax, %cr0

    /* The GDT pointer and the far jump take run-time addresses. */
    lea (boot_gdt - boot_anchor)(%ebx), %eax
    mov %eax, (boot_gdt_ptr + 2 - boot_anchor)(%ebx)
    lgdt (boot_gdt_ptr - boot_anchor)(%ebx)
    lea (.Lstart64 - boot_anchor)(%ebx), %eax
    push $0x08
    push %eax
    lret

.Lno_long_mode:
    movl $0x4f4e4f4c, 0xb8000
    movl $0x4f4c4f20, 0xb8004
4:  hlt
    jmp 4b

.code64
.Lstart64:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    xor %eax, %eax
    mov %ax, %fs
    mov %ax, %gs
    lea boot_stack_top(%rip), %rsp
    xor %ebp, %ebp

    /* Relocate: delta = run-time minus link address of boot_anchor; each
       R_X86_64_RELATIVE entry (offset, info, addend) stores addend + delta
       at offset + delta. */
    lea boot_anchor(%rip), %r8
    mov $__boot_anchor_link, %r9d
    sub %r9, %r8
    mov %r8, KERNEL_LOAD_DELTA(%rip)
    test %r8, %r8
    jz .Lrelocated
    lea __rela_start(%rip), %r9
    lea __rela_end(%rip), %r10
5:  cmp %r10, %r9
    jae .Lrelocated
    mov 8(%r9), %r11d
    cmp ${relative}, %r11d
    jne .Lbad_reloc
    mov (%r9), %r11
    add %r8, %r11
    mov 16(%r9), %rax
    add %r8, %rax
    mov %rax, (%r11)
    add $24, %r9
    jmp 5b
.Lrelocated:
    call kmain
6:  cli
    hlt
    jmp 6b
.Lbad_reloc:
    movabs $0x4f4c4f454f524f42, %rax
    mov %rax, 0xb8000
7:  cli
    hlt
    jmp 7b

.balign 8
boot_gdt:
    .quad 0
    .quad 0x00af9a000000ffff
    .quad 0x00cf92000000ffff
boot_gdt_ptr:
    .short boot_gdt_ptr - boot_gdt - 1
    .long 0

.section .bss.boot, "aw", @nobits
.balign 4096
boot_pml4: .skip 4096
boot_pdpt: .skip 4096
boot_pd:   .skip 4 * 4096
.global boot_stack_bottom, boot_stack_top
boot_stack_bottom: .skip 524288
boot_stack_top:
"#,
    reloc_min = const RELOC_MIN,
    reloc_max = const RELOC_MAX,
    reloc_align = const RELOC_ALIGN,
    prefer_low = const RELOC_PREFER_LOW,
    relative = const R_X86_64_RELATIVE,
    options(att_syntax)
);
