//! Model-specific registers, each named once with the manual section it comes from
//! (Intel SDM Vol. 4, "Model-Specific Registers", Table 2-2 unless stated).

/// IA32_APIC_BASE: local APIC base and mode (SDM Vol. 3A §11.4.4, §11.12.1).
pub const IA32_APIC_BASE: u32 = 0x1B;
/// IA32_APIC_BASE.BSP: this is the bootstrap processor.
pub const APIC_BASE_BSP: u64 = 1 << 8;
/// IA32_APIC_BASE.EXTD: x2APIC mode enable (SDM Vol. 3A §11.12.1).
pub const APIC_BASE_EXTD: u64 = 1 << 10;
/// IA32_APIC_BASE.EN: xAPIC global enable.
pub const APIC_BASE_EN: u64 = 1 << 11;
/// Bits 12..MAXPHYADDR of IA32_APIC_BASE: the xAPIC MMIO base.
pub const APIC_BASE_ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;

/// IA32_PAT: the page attribute table, eight memory types selected by a
/// mapping's PAT, PCD and PWT bits (SDM Vol. 3A §12.12.2, "IA32_PAT MSR").
pub const IA32_PAT: u32 = 0x277;
/// Our PAT, Linux's layout (`arch/x86/mm/pat/memtype.c`, `pat_bp_init`):
/// 0 WB, 1 WC, 2 UC-, 3 UC, 4 WB, 5 WP, 6 UC-, 7 WT (type codes: UC 0,
/// WC 1, WT 4, WP 5, WB 6, UC- 7; SDM Table 12-10). Entries 0, 2, 3 keep
/// their power-on types, so every mapping made before it keeps its type;
/// PWT alone (entry 1) now means write-combining.
pub const PAT_LINUX: u64 = 0x0407_0506_0007_0106;

/// IA32_EFER (SDM Vol. 3A §2.2.1).
pub const IA32_EFER: u32 = 0xC000_0080;
/// IA32_GS_BASE: GS segment base in 64-bit mode (SDM Vol. 3A §3.4.4); holds our per-CPU pointer.
pub const IA32_GS_BASE: u32 = 0xC000_0101;

/// Read an MSR.
///
/// # Safety
/// `msr` must exist on this CPU (else #GP).
#[inline]
pub unsafe fn rdmsr(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: the caller guarantees the MSR exists; rdmsr has no memory effects.
    unsafe { core::arch::asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags)) };
    (lo as u64) | ((hi as u64) << 32)
}

/// Write an MSR.
///
/// # Safety
/// `msr` must exist and `value` must be valid for it; the caller owns the
/// consequences of the write (mode changes, interrupts).
#[inline]
pub unsafe fn wrmsr(msr: u32, value: u64) {
    // SAFETY: forwarded to the caller.
    unsafe {
        core::arch::asm!("wrmsr", in("ecx") msr, in("eax") value as u32, in("edx") (value >> 32) as u32, options(nostack, preserves_flags))
    };
}

