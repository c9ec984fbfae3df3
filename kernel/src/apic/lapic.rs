//! The local APIC, in x2APIC mode when the CPU has it, else xAPIC.
//!
//! Registers are named once by their x2APIC MSR number (SDM Vol. 3A §11.12.1.2,
//! Table 11-6); in xAPIC mode the MMIO offset is `(msr - 0x800) << 4`. The ICR
//! is the exception: one 64-bit MSR in x2APIC mode, two 32-bit registers
//! (0x300 low, 0x310 high) in xAPIC mode.

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::arch::msr::{self, APIC_BASE_ADDR_MASK, APIC_BASE_EN, APIC_BASE_EXTD, IA32_APIC_BASE};

/// Register numbers (x2APIC MSR addresses, SDM Vol. 3A Table 11-6).
pub mod reg {
    pub const ID: u32 = 0x802;
    pub const VERSION: u32 = 0x803;
    pub const TPR: u32 = 0x808;
    pub const EOI: u32 = 0x80B;
    pub const SVR: u32 = 0x80F;
    pub const ESR: u32 = 0x828;
    pub const ICR: u32 = 0x830;
    /// In-service register, 8 x 32 bits (vector v: register ISR0 + v / 32, bit v % 32).
    pub const ISR0: u32 = 0x810;
    /// LVT CMCI (SDM Vol. 3A §11.5.1; present when the version register's
    /// max LVT entry is 6 or more).
    pub const LVT_CMCI: u32 = 0x82F;
    pub const LVT_TIMER: u32 = 0x832;
    pub const LVT_THERMAL: u32 = 0x833;
    pub const LVT_PERF: u32 = 0x834;
    pub const LVT_LINT0: u32 = 0x835;
    pub const LVT_LINT1: u32 = 0x836;
    pub const LVT_ERROR: u32 = 0x837;
    pub const TIMER_INITIAL: u32 = 0x838;
    pub const TIMER_CURRENT: u32 = 0x839;
    pub const TIMER_DIVIDE: u32 = 0x83E;
}

/// xAPIC MMIO offsets of the ICR halves (SDM Vol. 3A §11.6.1, Figure 11-12).
const XAPIC_ICR_LOW: u64 = 0x300;
const XAPIC_ICR_HIGH: u64 = 0x310;

/// SVR bit 8: APIC software enable (SDM Vol. 3A §11.9, Figure 11-23).
pub const SVR_ENABLE: u32 = 1 << 8;
/// LVT bit 16: masked (SDM Vol. 3A §11.5.1, Figure 11-8).
pub const LVT_MASKED: u32 = 1 << 16;
/// LVT timer bits 17-18 = 01: periodic mode.
pub const LVT_TIMER_PERIODIC: u32 = 1 << 17;
/// LVT delivery mode NMI (bits 8-10 = 100).
pub const LVT_DELIVERY_NMI: u32 = 0b100 << 8;
/// Timer divide configuration value for divide-by-16 (SDM Vol. 3A Figure 11-10).
pub const TIMER_DIVIDE_16: u32 = 0b0011;

/// ICR fields (SDM Vol. 3A §11.6.1, Figure 11-12).
pub mod icr {
    pub const DELIVERY_FIXED: u64 = 0b000 << 8;
    pub const DELIVERY_NMI: u64 = 0b100 << 8;
    pub const DELIVERY_INIT: u64 = 0b101 << 8;
    pub const DELIVERY_STARTUP: u64 = 0b110 << 8;
    /// xAPIC only: the previous IPI is still being sent.
    pub const DELIVERY_PENDING: u64 = 1 << 12;
    pub const LEVEL_ASSERT: u64 = 1 << 14;
    pub const TRIGGER_LEVEL: u64 = 1 << 15;
    pub const SHORTHAND_SELF: u64 = 0b01 << 18;
    pub const SHORTHAND_ALL: u64 = 0b10 << 18;
    pub const SHORTHAND_OTHERS: u64 = 0b11 << 18;
}

static X2APIC: AtomicBool = AtomicBool::new(false);
static XAPIC_BASE: AtomicU64 = AtomicU64::new(0);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    XApic,
    X2Apic,
}

pub fn mode() -> Mode {
    if X2APIC.load(Ordering::Relaxed) { Mode::X2Apic } else { Mode::XApic }
}

fn mmio(reg: u32) -> *mut u32 {
    (XAPIC_BASE.load(Ordering::Relaxed) + (((reg - 0x800) as u64) << 4)) as *mut u32
}

pub fn read(reg: u32) -> u32 {
    if X2APIC.load(Ordering::Relaxed) {
        // SAFETY: x2APIC mode is enabled on every CPU before any register access,
        // and `reg` is one of the architectural registers named in `reg`.
        unsafe { msr::rdmsr(reg) as u32 }
    } else {
        // SAFETY: the xAPIC page is identity-mapped (uncached by the MTRRs) and
        // `reg` maps to a register inside it.
        unsafe { mmio(reg).read_volatile() }
    }
}

pub fn write(reg: u32, value: u32) {
    if X2APIC.load(Ordering::Relaxed) {
        // SAFETY: as in `read`; writes to these registers have only APIC effects.
        unsafe { msr::wrmsr(reg, value as u64) }
    } else {
        // SAFETY: as in `read`.
        unsafe { mmio(reg).write_volatile(value) }
    }
}

/// How the boot CPU's mode was chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModeChoice {
    /// As asked (x2APIC when offered and wanted).
    AsAsked,
    /// xAPIC was asked for, but the firmware had already enabled x2APIC:
    /// leaving it takes disabling the APIC altogether (x2APIC -> xAPIC is an
    /// illegal transition, SDM Vol. 3A §11.12.5, Figure 11-27), so we stay.
    FirmwareX2Apic,
}

/// Choose the mode on the boot CPU (x2APIC when offered and wanted, or when
/// the firmware already enabled it) and enable it.
pub fn init_mode(use_x2apic: bool) -> (Mode, ModeChoice) {
    // SAFETY: IA32_APIC_BASE exists on every CPU with an APIC (all x86_64 CPUs).
    let base = unsafe { msr::rdmsr(IA32_APIC_BASE) };
    XAPIC_BASE.store(base & APIC_BASE_ADDR_MASK, Ordering::Relaxed);
    let firmware = base & APIC_BASE_EXTD != 0 && base & APIC_BASE_EN != 0;
    X2APIC.store(use_x2apic || firmware, Ordering::Relaxed);
    enable_mode();
    (mode(), if firmware && !use_x2apic { ModeChoice::FirmwareX2Apic } else { ModeChoice::AsAsked })
}

/// Tests only (`x2apic_fw` on the command line): put this CPU in x2APIC mode
/// before the kernel chooses, as firmware does on machines with more than
/// 255 CPUs. Needs x2APIC in CPUID.
pub fn simulate_firmware_x2apic() {
    // SAFETY: EN then EXTD: the legal xAPIC -> x2APIC transition (SDM Vol. 3A
    // §11.12.5); the caller checked CPUID.01H:ECX.x2APIC.
    unsafe {
        let base = msr::rdmsr(IA32_APIC_BASE) | APIC_BASE_EN;
        msr::wrmsr(IA32_APIC_BASE, base);
        msr::wrmsr(IA32_APIC_BASE, base | APIC_BASE_EXTD);
    }
}

/// Enable the chosen mode on this CPU (xAPIC -> x2APIC is the only legal transition).
fn enable_mode() {
    // SAFETY: as above; setting EN (and EXTD when x2APIC was chosen because CPUID
    // reports it) follows the transitions allowed by SDM Vol. 3A §11.12.5.
    unsafe {
        let mut base = msr::rdmsr(IA32_APIC_BASE) | APIC_BASE_EN;
        msr::wrmsr(IA32_APIC_BASE, base);
        if X2APIC.load(Ordering::Relaxed) {
            base |= APIC_BASE_EXTD;
            msr::wrmsr(IA32_APIC_BASE, base);
        }
    }
}

/// Program this CPU's local APIC: mode, spurious vector, error vector,
/// LINT0 masked, LINT1 as NMI when `nmi_lint1` (from the MADT), timer masked.
pub fn init_cpu(spurious_vector: u8, error_vector: u8, nmi_lint: Option<u8>) {
    enable_mode();
    write(reg::TPR, 0);
    write(reg::LVT_TIMER, LVT_MASKED);
    write(reg::LVT_PERF, LVT_MASKED);
    // Thermal and CMCI exist from max LVT entry 5 and 6 on (SDM Vol. 3A
    // §11.4.8, Figure 11-7; Linux `lapic_get_maxlvt` users): masked, so a
    // firmware-armed machine-check or thermal interrupt cannot land on a
    // vector nobody handles.
    let max_lvt = max_lvt();
    if max_lvt >= 5 {
        write(reg::LVT_THERMAL, LVT_MASKED);
    }
    if max_lvt >= 6 {
        write(reg::LVT_CMCI, LVT_MASKED);
    }
    write(reg::LVT_LINT0, if nmi_lint == Some(0) { LVT_DELIVERY_NMI } else { LVT_MASKED });
    write(reg::LVT_LINT1, if nmi_lint == Some(1) { LVT_DELIVERY_NMI } else { LVT_MASKED });
    write(reg::LVT_ERROR, error_vector as u32);
    write(reg::ESR, 0);
    write(reg::SVR, SVR_ENABLE | spurious_vector as u32);
    eoi();
}

/// The version register's "Max LVT Entry" (bits 16-23): LVT entries minus one.
pub fn max_lvt() -> u32 {
    (read(reg::VERSION) >> 16) & 0xFF
}

/// Is `vector` in service on this CPU (its ISR bit set)?
pub fn in_service(vector: u8) -> bool {
    read(reg::ISR0 + vector as u32 / 32) & (1 << (vector % 32)) != 0
}

/// This CPU's APIC id (32-bit in x2APIC mode, 8-bit in xAPIC mode).
pub fn id() -> u32 {
    let v = read(reg::ID);
    if X2APIC.load(Ordering::Relaxed) { v } else { v >> 24 }
}

#[inline]
pub fn eoi() {
    write(reg::EOI, 0);
}

/// IPI destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dest {
    Apic(u32),
    SelfOnly,
    AllIncludingSelf,
    AllButSelf,
}

/// The largest APIC id xAPIC mode can address (8-bit destination field).
pub const XAPIC_MAX_ID: u32 = 0xFE;

/// Can an IPI reach the CPU with this APIC id in the mode in force? (In
/// xAPIC mode the destination is 8 bits and 0xFF is the broadcast.)
pub fn addressable(id: u32) -> bool {
    X2APIC.load(Ordering::Relaxed) || id <= XAPIC_MAX_ID
}

/// Send an IPI: `command` holds the delivery mode, level/trigger and vector
/// bits. Interrupts are off meanwhile: in xAPIC mode an interrupt handler
/// sending its own IPI between our two ICR writes would change our
/// destination. An id the mode cannot address is refused, never truncated
/// (`false`).
pub fn send_ipi(dest: Dest, command: u64) -> bool {
    if let Dest::Apic(id) = dest
        && !addressable(id)
    {
        return false;
    }
    x86_64::instructions::interrupts::without_interrupts(|| send_ipi_irqs_off(dest, command));
    true
}

fn send_ipi_irqs_off(dest: Dest, command: u64) {
    let (short, id) = match dest {
        Dest::Apic(id) => (0, id),
        Dest::SelfOnly => (icr::SHORTHAND_SELF, 0),
        Dest::AllIncludingSelf => (icr::SHORTHAND_ALL, 0),
        Dest::AllButSelf => (icr::SHORTHAND_OTHERS, 0),
    };
    let low = command | short;
    if X2APIC.load(Ordering::Relaxed) {
        // WRMSR to the x2APIC ICR is not serializing: without a fence the IPI
        // may overtake this CPU's earlier stores (Linux `weak_wrmsr_fence()`,
        // arch/x86/include/asm/barrier.h, before every x2APIC ICR write).
        // SAFETY: fences only.
        unsafe { core::arch::asm!("mfence", "lfence", options(nostack, preserves_flags)) };
        // SAFETY: x2APIC ICR (MSR 0x830): destination in bits 32-63; a write sends the IPI.
        unsafe { msr::wrmsr(reg::ICR, low | ((id as u64) << 32)) };
    } else {
        let base = XAPIC_BASE.load(Ordering::Relaxed);
        // SAFETY: xAPIC ICR halves in the identity-mapped APIC page; writing the
        // low half sends the IPI, so the high half (destination) goes first.
        unsafe {
            let lo = (base + XAPIC_ICR_LOW) as *mut u32;
            let hi = (base + XAPIC_ICR_HIGH) as *mut u32;
            wait_icr_idle(lo);
            hi.write_volatile(id << 24);
            lo.write_volatile(low as u32);
            wait_icr_idle(lo);
        }
    }
}

/// # Safety
/// `lo` must be the xAPIC ICR low register.
unsafe fn wait_icr_idle(lo: *mut u32) {
    for _ in 0..1_000_000 {
        // SAFETY: caller's contract.
        if unsafe { lo.read_volatile() } as u64 & icr::DELIVERY_PENDING == 0 {
            return;
        }
        core::hint::spin_loop();
    }
}

/// Measure the APIC timer's rate (ticks per second at divide-by-16) against
/// the TSC clock: the median of five 10 ms windows (a window stretched by a
/// preempted virtual CPU does not skew it).
pub fn timer_calibrate() -> u64 {
    write(reg::TIMER_DIVIDE, TIMER_DIVIDE_16);
    write(reg::LVT_TIMER, LVT_MASKED);
    let mut samples = [0u64; 5];
    for s in samples.iter_mut() {
        write(reg::TIMER_INITIAL, u32::MAX);
        let t0 = crate::arch::cpu::rdtsc();
        crate::time::clock::delay_ns(10_000_000);
        let elapsed = u32::MAX - read(reg::TIMER_CURRENT);
        let ns = crate::time::clock::ticks_to_ns(crate::arch::cpu::rdtsc() - t0).max(1);
        *s = elapsed as u64 * 1_000_000_000 / ns;
    }
    write(reg::TIMER_INITIAL, 0);
    samples.sort_unstable();
    samples[2]
}

/// Start the periodic timer on this CPU.
pub fn timer_start_periodic(vector: u8, ticks_per_sec: u64, hz: u32) {
    let count = (ticks_per_sec / hz as u64).clamp(1, u32::MAX as u64) as u32;
    write(reg::TIMER_DIVIDE, TIMER_DIVIDE_16);
    write(reg::LVT_TIMER, LVT_TIMER_PERIODIC | vector as u32);
    write(reg::TIMER_INITIAL, count);
}
