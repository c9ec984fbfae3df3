//! CPU identification (through raw-cpuid) and small privileged helpers.

use raw_cpuid::CpuId;

/// CPUID.(EAX=7,ECX=0):EDX bit 14: the SERIALIZE instruction.
pub const CPUID7_EDX_SERIALIZE: u32 = 1 << 14;

/// What the kernel asks of the CPU, read once per CPU with raw-cpuid.
#[derive(Clone, Copy, Debug, Default)]
pub struct Features {
    pub x2apic: bool,
    pub tsc_deadline: bool,
    pub invariant_tsc: bool,
    pub nx: bool,
    pub serialize: bool,
    pub hypervisor: bool,
}

pub fn features() -> Features {
    let c = CpuId::new();
    let fi = c.get_feature_info();
    let ext = c.get_extended_processor_and_feature_identifiers();
    let apm = c.get_advanced_power_mgmt_info();
    let ef = c.get_extended_feature_info();
    Features {
        x2apic: fi.as_ref().is_some_and(|f| f.has_x2apic()),
        tsc_deadline: fi.as_ref().is_some_and(|f| f.has_tsc_deadline()),
        hypervisor: fi.as_ref().is_some_and(|f| f.has_hypervisor()),
        nx: ext.as_ref().is_some_and(|e| e.has_execute_disable()),
        invariant_tsc: apm.as_ref().is_some_and(|a| a.has_invariant_tsc()),
        // raw-cpuid 11.6 does not name SERIALIZE: CPUID.(EAX=7,ECX=0):EDX[14]
        // (SDM Vol. 2A, CPUID, Table 3-8).
        serialize: ef.is_some() && raw_cpuid::cpuid!(7, 0).edx & CPUID7_EDX_SERIALIZE != 0,
    }
}

/// The CPUID brand string, or the vendor when there is none: read once (the
/// status endpoint and the screen ask for it again and again; under a
/// hypervisor every CPUID is a VM exit).
pub fn brand() -> &'static str {
    static BRAND: spin::Once<heapless::String<64>> = spin::Once::new();
    BRAND.call_once(|| {
        let c = CpuId::new();
        let mut buf = heapless::String::new();
        if let Some(b) = c.get_processor_brand_string() {
            let _ = buf.push_str(b.as_str().trim());
        } else if let Some(v) = c.get_vendor_info() {
            let _ = buf.push_str(v.as_str());
        }
        buf
    })
}

/// The initial APIC id of this CPU from CPUID (leaf 0xB/0x1F x2APIC id when present, else leaf 1).
pub fn cpuid_apic_id() -> u32 {
    let c = CpuId::new();
    if let Some(mut topo) = c.get_extended_topology_info()
        && let Some(level) = topo.next()
    {
        return level.x2apic_id();
    }
    c.get_feature_info().map(|f| f.initial_local_apic_id() as u32).unwrap_or(0)
}

/// Read the time-stamp counter.
#[inline]
pub fn rdtsc() -> u64 {
    // SAFETY: rdtsc is unprivileged here (CR4.TSD is clear) and has no memory effects.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// PAUSE where this CPU's progress waits on another CPU's (SDM Vol. 2B,
/// PAUSE: a spin-wait hint; tens of cycles on silicon). Under QEMU's
/// single-threaded TCG it also ends this virtual CPU's turn on the one host
/// thread (`helper_pause`, "just let another CPU run",
/// target/i386/tcg/misc_helper.c), so the CPU waited for runs sooner.
#[inline]
pub fn pause_for_others() {
    core::hint::spin_loop();
}

/// Execute CPUID as a serializing instruction (SDM Vol. 3A §9.3 "Serializing Instructions").
#[inline]
pub fn serialize_cpuid() {
    // SAFETY: cpuid only writes the four GPRs declared as outputs; rbx is
    // saved around it because LLVM reserves it.
    unsafe {
        core::arch::asm!("mov {tmp}, rbx", "cpuid", "mov rbx, {tmp}", tmp = out(reg) _,
            inout("eax") 0 => _, inout("ecx") 0 => _, out("edx") _, options(nostack, preserves_flags))
    };
}

/// Stop this CPU for good: interrupts off, halt forever (NMIs still wake it and return here).
pub fn halt_forever() -> ! {
    loop {
        // SAFETY: cli; hlt only stops this CPU.
        unsafe { core::arch::asm!("cli", "hlt", options(nomem, nostack)) };
    }
}

/// Wait for an interrupt with interrupts enabled (the idle loop's step).
#[inline]
pub fn idle_wait() {
    // SAFETY: sti; hlt atomically enables interrupts and waits (the sti shadow
    // covers hlt, so no wake-up is lost).
    unsafe { core::arch::asm!("sti", "hlt", options(nomem, nostack)) };
}

/// Read CR2 (the faulting linear address of the last #PF).
pub fn cr2() -> u64 {
    x86_64::registers::control::Cr2::read_raw()
}
