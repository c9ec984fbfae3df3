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
//! The entry identity-maps the first 4 GiB with 2 MiB pages (no 1 GiB pages:
//! TCG's default CPU lacks pdpe1gb), enables PAE, SSE (CR4.OSFXSR/OSXMMEXCPT,
//! CR0.MP, !CR0.EM: prebuilt `core` uses SSE), EFER.LME and EFER.NXE, paging
//! with CR0.WP, and jumps to 64-bit code. `kmain` replaces these tables.

use core::arch::global_asm;

/// Multiboot2 magic the loader leaves in EAX.
pub const MB2_BOOT_MAGIC: u32 = 0x36d7_6289;
/// Multiboot1 magic the loader leaves in EAX.
pub const MB1_BOOT_MAGIC: u32 = 0x2BAD_B002;

global_asm!(
    r#"
.section .multiboot, "a"
.balign 8
mb2_header:
    .long 0xe85250d6
    .long 0
    .long mb2_header_end - mb2_header
    .long 0x100000000 - (0xe85250d6 + (mb2_header_end - mb2_header))
    .balign 8
    .short 0
    .short 0
    .long 8
mb2_header_end:

.balign 4
mb1_header:
    .long 0x1BADB002
    .long 0x00010003
    .long 0x100000000 - (0x1BADB002 + 0x00010003)
    .long mb1_header
    .long __kernel_start
    .long __load_end
    .long __kernel_end
    .long _start

.section .boot.text, "ax"
.code32
.global _start
_start:
    cli
    cld
    mov %eax, %edi
    mov %ebx, %esi
    mov $boot_stack_top, %esp

    mov $0x80000000, %eax
    cpuid
    cmp $0x80000001, %eax
    jb .Lno_long_mode
    mov $0x80000001, %eax
    cpuid
    test $(1 << 29), %edx
    jz .Lno_long_mode
    mov %edx, %ebp

    mov $boot_pdpt, %eax
    or $0x3, %eax
    mov %eax, boot_pml4
    movl $0, boot_pml4 + 4
    mov $boot_pd, %eax
    or $0x3, %eax
    xor %ecx, %ecx
1:  mov %eax, boot_pdpt(,%ecx,8)
    movl $0, boot_pdpt + 4(,%ecx,8)
    add $0x1000, %eax
    inc %ecx
    cmp $4, %ecx
    jne 1b

    xor %ecx, %ecx
2:  mov %ecx, %eax
    shl $21, %eax
    or $0x83, %eax
    mov %eax, boot_pd(,%ecx,8)
    movl $0, boot_pd + 4(,%ecx,8)
    inc %ecx
    cmp $2048, %ecx
    jne 2b

    mov %cr4, %eax
    or $((1 << 5) | (1 << 9) | (1 << 10)), %eax
    mov %eax, %cr4
    mov $boot_pml4, %eax
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

    lgdt boot_gdt_ptr
    ljmp $0x08, $.Lstart64

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
    mov $boot_stack_top, %rsp
    xor %ebp, %ebp
    call kmain
5:  cli
    hlt
    jmp 5b

.balign 8
boot_gdt:
    .quad 0
    .quad 0x00af9a000000ffff
    .quad 0x00cf92000000ffff
boot_gdt_ptr:
    .short boot_gdt_ptr - boot_gdt - 1
    .long boot_gdt

.section .bss.boot, "aw", @nobits
.balign 4096
boot_pml4: .skip 4096
boot_pdpt: .skip 4096
boot_pd:   .skip 4 * 4096
.global boot_stack_bottom, boot_stack_top
boot_stack_bottom: .skip 524288
boot_stack_top:
"#,
    options(att_syntax)
);
