//! MSRs that may not exist: reads and writes that come back with `None` or
//! `false` where the CPU raises #GP, through this CPU's #GP fixup (the trap
//! dispatcher skips the faulting instruction it names). The register
//! numbers and plain accessors are `msr.rs`'s.

use super::percpu::this_cpu;

/// Read an MSR that may not exist: `None` if the read raised #GP (handled by
/// the trap dispatcher's fixup for this CPU).
pub fn try_rdmsr(msr: u32) -> Option<u64> {
    let cpu = this_cpu();
    cpu.fixup_hit.store(false, core::sync::atomic::Ordering::Relaxed);
    let fix = cpu.fixup_rip.as_ptr();
    let (lo, hi): (u32, u32);
    // SAFETY: records the rdmsr's own address as this CPU's #GP fixup, so a
    // missing MSR makes the dispatcher skip the instruction instead of
    // stopping the CPU; eax/edx then hold whatever was there (ignored).
    unsafe {
        core::arch::asm!(
            "lea rax, [rip + 2f]",
            "mov [{fix}], rax",
            "2: rdmsr",
            fix = in(reg) fix,
            in("ecx") msr,
            out("eax") lo,
            out("edx") hi,
            options(nostack),
        )
    };
    cpu.fixup_rip.store(0, core::sync::atomic::Ordering::Relaxed);
    (!cpu.fixup_hit.load(core::sync::atomic::Ordering::Relaxed)).then_some((lo as u64) | ((hi as u64) << 32))
}

/// Write an MSR that may not exist: `false` if the write raised #GP.
pub fn try_wrmsr(msr: u32, value: u64) -> bool {
    let cpu = this_cpu();
    cpu.fixup_hit.store(false, core::sync::atomic::Ordering::Relaxed);
    let fix = cpu.fixup_rip.as_ptr();
    // SAFETY: as in `try_rdmsr`; the caller owns the effects of a successful write.
    unsafe {
        core::arch::asm!(
            "lea r11, [rip + 2f]",
            "mov [{fix}], r11",
            "2: wrmsr",
            fix = in(reg) fix,
            in("ecx") msr,
            in("eax") value as u32,
            in("edx") (value >> 32) as u32,
            out("r11") _,
            options(nostack),
        )
    };
    cpu.fixup_rip.store(0, core::sync::atomic::Ordering::Relaxed);
    !cpu.fixup_hit.load(core::sync::atomic::Ordering::Relaxed)
}
