//! Per-CPU data, reached through the GS base (one load: `gs:[0]` is the
//! struct's own address). All fields are either atomics or written only by
//! their own CPU before it comes online.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use x86_64::structures::gdt::GlobalDescriptorTable;
use x86_64::structures::tss::TaskStateSegment;

use super::msr;

/// Most CPUs the kernel runs.
pub const MAX_CPUS: usize = crate::acpi::machine::MAX_CPUS;

/// A stack: `[bottom, top)`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stack {
    pub bottom: u64,
    pub top: u64,
}

impl Stack {
    pub fn contains(&self, addr: u64) -> bool {
        addr >= self.bottom && addr < self.top
    }
}

/// Indices into the TSS interrupt stack table (0-based: index 0 is IST1).
pub mod ist {
    pub const NMI: usize = 0;
    pub const DOUBLE_FAULT: usize = 1;
    pub const MACHINE_CHECK: usize = 2;
    pub const BREAKPOINT: usize = 3;
    /// Every other exception.
    pub const EXCEPTION: usize = 4;
    /// Device interrupts and IPIs (interrupt gates: they do not nest).
    pub const IRQ: usize = 5;
    pub const COUNT: usize = 6;
}

/// Named stacks of one CPU, for call-trace bounds and reports.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stacks {
    pub kernel: Stack,
    pub ist: [Stack; ist::COUNT],
    /// Used for #BP and other exceptions taken inside the NMI handler, so
    /// they never overwrite the frame of a #BP/exception the NMI interrupted.
    pub nmi_breakpoint: Stack,
    pub nmi_exception: Stack,
}

impl Stacks {
    /// Is `addr` on one of these stacks? The one membership check for call
    /// traces, the oracle and fatal reports.
    pub fn contains(&self, addr: u64) -> bool {
        self.kernel.contains(addr) || self.ist.iter().any(|st| st.contains(addr)) || self.nmi_breakpoint.contains(addr) || self.nmi_exception.contains(addr)
    }
}

/// Execution context, for trace events and counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Context {
    Task = 0,
    Irq = 1,
    Nmi = 2,
}

impl Context {
    pub fn name(self) -> &'static str {
        match self {
            Context::Task => "task",
            Context::Irq => "irq",
            Context::Nmi => "nmi",
        }
    }
}

#[repr(C, align(64))]
pub struct PerCpu {
    /// `gs:[0]`: this struct's address.
    self_ptr: UnsafeCell<*const PerCpu>,
    /// Dense CPU number: 0 is the BSP, then MADT order.
    pub index: AtomicU32,
    pub apic_id: AtomicU32,
    pub online: AtomicBool,
    /// Set when this CPU stopped on a fatal exception.
    pub dead: AtomicBool,
    /// > 0 while this CPU runs its NMI handler.
    pub nmi_depth: AtomicU32,
    /// > 0 while this CPU runs an interrupt handler (vector >= 32).
    pub irq_depth: AtomicU32,
    /// Trace-site calls that reached the trace hook, by context (task, irq, nmi).
    pub site_calls: [AtomicU64; 3],
    /// int3 traps on sites under modification that the #BP handler emulated.
    pub int3_emulated: AtomicU64,
    /// The same, by the context the trap interrupted (task, irq, nmi).
    pub int3_by_ctx: [AtomicU64; 3],
    /// Torn executions the oracle caught on this CPU.
    pub torn: AtomicU64,
    /// Site calls whose site was requested off and settled (traced while off).
    pub traced_while_off: AtomicU64,
    /// Calls of a traced function whose site was on and settled that did not
    /// reach the trace hook (missed while on; counted by the workers).
    pub missed_while_on: AtomicU64,
    /// NMI watchdog: NMIs by source, and what the lockup detector keeps.
    /// Watchdog NMI IPIs sent to this CPU (written by the sender before each IPI).
    pub nmi_ipi_sent: AtomicU64,
    /// This CPU's NMI ledger (`nmi::ledger::State`), written only by its NMI handler.
    pub nmi_ledger_seen: AtomicU64,
    pub nmi_ledger_credit: AtomicU64,
    pub nmi_ledger_life: AtomicU64,
    pub nmi_ledger_prev_ipi: AtomicBool,
    /// The instruction the previous NMI interrupted (Linux `last_nmi_rip`):
    /// an NMI at the same one came right after that handler's IRET.
    pub nmi_last_rip: AtomicU64,
    /// The last NMIs' ledger steps (`nmi::ledger::Step`, packed), newest at
    /// `nmi_trail_at - 1`, for the report of an unknown NMI.
    pub nmi_trail: [AtomicU64; crate::nmi::ledger::TRAIL],
    pub nmi_trail_at: AtomicU64,
    /// The performance counter the watchdog armed on this CPU (u32::MAX: none).
    pub wd_pmu_index: AtomicU32,
    /// This CPU's counter never interrupted: CPU 0 sends it watchdog IPIs.
    pub wd_ipi_fallback: AtomicBool,
    /// Why (`nmi::watchdog::fallback_reason`): 0 none.
    pub wd_fallback_why: AtomicU32,
    /// When this CPU last took a counter NMI (ns), and the late ones after it.
    pub wd_last_pmi_ns: AtomicU64,
    pub nmi_late_pmi: AtomicU64,
    /// NMIs of watchdog IPIs already accounted for (latched or late), swallowed.
    pub nmi_swallowed: AtomicU64,
    pub nmi_ipi: AtomicU64,
    pub nmi_pmu: AtomicU64,
    pub nmi_external: AtomicU64,
    pub nmi_unknown: AtomicU64,
    /// NMIs that arrived while this CPU was already in its NMI handler (must stay 0).
    pub nmi_nested: AtomicU64,
    /// Exceptions (#BP on a site under modification) taken inside the NMI
    /// handler and left without IRET, so NMIs stayed blocked.
    pub nmi_exceptions: AtomicU64,
    pub wd_last_ticks: AtomicU64,
    pub wd_last_change_ns: AtomicU64,
    pub wd_reported: AtomicBool,
    pub lockups: AtomicU64,
    /// TSC ticks spent in the watchdog's NMI handler (for its cost per NMI).
    pub nmi_cycles: AtomicU64,
    /// #GP fixup: a #GP at this RIP skips the 2-byte instruction (rdmsr/wrmsr
    /// probes) and sets `fixup_hit`.
    pub fixup_rip: AtomicU64,
    pub fixup_hit: AtomicBool,
    pub timer_ticks: AtomicU64,
    pub nmis: AtomicU64,
    pub xcalls: AtomicU64,
    pub exceptions: AtomicU64,
    pub spurious: AtomicU64,
    /// Last cross-CPU call sequence number this CPU completed.
    pub xcall_done: AtomicU64,
    /// Cross-CPU calls this CPU did not answer in time (`smp::stall`):
    /// stalls (each counted once, however many rounds it lasts), timed-out
    /// rounds of the stall in progress (0: none), and when it began (ns).
    pub stalled_xcalls: AtomicU64,
    pub xcall_stall_rounds: AtomicU64,
    pub xcall_stall_since_ns: AtomicU64,
    /// Another CPU asked this one for its registers and call trace from its
    /// next NMI (`nmi::cpu_backtrace`): how long it had waited (ms), and the
    /// stall's number; 0 when no request is pending.
    pub backtrace_waited_ms: AtomicU64,
    pub backtrace_stall: AtomicU64,
    /// NMI backtraces this CPU wrote on request.
    pub backtraces: AtomicU64,
    pub tss: UnsafeCell<TaskStateSegment>,
    pub gdt: UnsafeCell<GlobalDescriptorTable>,
    pub stacks: UnsafeCell<Stacks>,
}

// SAFETY: the UnsafeCell fields (self_ptr, tss, gdt, stacks) are written only
// by `init_cpu` for a CPU that is not yet running (or by that CPU itself
// before it publishes `online`), and read-only afterwards except for the IST
// swap done by the owning CPU's NMI handler; everything else is atomic.
unsafe impl Sync for PerCpu {}

impl PerCpu {
    const fn new() -> Self {
        PerCpu {
            self_ptr: UnsafeCell::new(core::ptr::null()),
            index: AtomicU32::new(0),
            apic_id: AtomicU32::new(0),
            online: AtomicBool::new(false),
            dead: AtomicBool::new(false),
            nmi_depth: AtomicU32::new(0),
            irq_depth: AtomicU32::new(0),
            site_calls: [const { AtomicU64::new(0) }; 3],
            int3_emulated: AtomicU64::new(0),
            int3_by_ctx: [const { AtomicU64::new(0) }; 3],
            torn: AtomicU64::new(0),
            traced_while_off: AtomicU64::new(0),
            missed_while_on: AtomicU64::new(0),
            nmi_ipi_sent: AtomicU64::new(0),
            nmi_ledger_seen: AtomicU64::new(0),
            nmi_ledger_credit: AtomicU64::new(0),
            nmi_ledger_life: AtomicU64::new(0),
            nmi_ledger_prev_ipi: AtomicBool::new(false),
            nmi_last_rip: AtomicU64::new(0),
            nmi_trail: [const { AtomicU64::new(0) }; crate::nmi::ledger::TRAIL],
            nmi_trail_at: AtomicU64::new(0),
            nmi_swallowed: AtomicU64::new(0),
            wd_pmu_index: AtomicU32::new(u32::MAX),
            wd_ipi_fallback: AtomicBool::new(false),
            wd_fallback_why: AtomicU32::new(0),
            wd_last_pmi_ns: AtomicU64::new(0),
            nmi_late_pmi: AtomicU64::new(0),
            nmi_ipi: AtomicU64::new(0),
            nmi_pmu: AtomicU64::new(0),
            nmi_external: AtomicU64::new(0),
            nmi_unknown: AtomicU64::new(0),
            nmi_nested: AtomicU64::new(0),
            nmi_exceptions: AtomicU64::new(0),
            wd_last_ticks: AtomicU64::new(0),
            wd_last_change_ns: AtomicU64::new(0),
            wd_reported: AtomicBool::new(false),
            lockups: AtomicU64::new(0),
            nmi_cycles: AtomicU64::new(0),
            fixup_rip: AtomicU64::new(0),
            fixup_hit: AtomicBool::new(false),
            timer_ticks: AtomicU64::new(0),
            nmis: AtomicU64::new(0),
            xcalls: AtomicU64::new(0),
            exceptions: AtomicU64::new(0),
            spurious: AtomicU64::new(0),
            xcall_done: AtomicU64::new(0),
            stalled_xcalls: AtomicU64::new(0),
            xcall_stall_rounds: AtomicU64::new(0),
            xcall_stall_since_ns: AtomicU64::new(0),
            backtrace_waited_ms: AtomicU64::new(0),
            backtrace_stall: AtomicU64::new(0),
            backtraces: AtomicU64::new(0),
            tss: UnsafeCell::new(TaskStateSegment::new()),
            gdt: UnsafeCell::new(GlobalDescriptorTable::new()),
            stacks: UnsafeCell::new(Stacks {
                kernel: Stack { bottom: 0, top: 0 },
                ist: [Stack { bottom: 0, top: 0 }; ist::COUNT],
                nmi_breakpoint: Stack { bottom: 0, top: 0 },
                nmi_exception: Stack { bottom: 0, top: 0 },
            }),
        }
    }

    pub fn index(&self) -> usize {
        self.index.load(Ordering::Relaxed) as usize
    }

    /// The context this CPU runs in now.
    pub fn context(&self) -> Context {
        if self.nmi_depth.load(Ordering::Relaxed) > 0 {
            Context::Nmi
        } else if self.irq_depth.load(Ordering::Relaxed) > 0 {
            Context::Irq
        } else {
            Context::Task
        }
    }

    pub fn apic_id(&self) -> u32 {
        self.apic_id.load(Ordering::Relaxed)
    }

    pub fn stacks(&self) -> Stacks {
        // SAFETY: written once before the CPU runs (see the Sync impl); a copy is read.
        unsafe { *self.stacks.get() }
    }

    /// Point this CPU's TSS IST entry `i` at `top`.
    ///
    /// # Safety
    /// Must run on the CPU that owns this struct, and no exception using IST
    /// `i` may be in progress on a stack the change would let be overwritten.
    pub unsafe fn set_ist(&self, i: usize, top: u64) {
        // SAFETY: only the owning CPU touches its TSS after boot (caller's contract).
        unsafe { (*self.tss.get()).interrupt_stack_table[i] = x86_64::VirtAddr::new(top) };
    }
}

static CPUS: [PerCpu; MAX_CPUS] = [const { PerCpu::new() }; MAX_CPUS];
/// How many CPUs have a `PerCpu` assigned (online or being started).
static CPU_COUNT: AtomicU32 = AtomicU32::new(0);

/// The `PerCpu` of CPU `index`.
pub fn cpu(index: usize) -> Option<&'static PerCpu> {
    (index < CPU_COUNT.load(Ordering::Acquire) as usize).then(|| &CPUS[index])
}

/// Every CPU with a `PerCpu` (online or not).
pub fn all() -> &'static [PerCpu] {
    &CPUS[..CPU_COUNT.load(Ordering::Acquire) as usize]
}

pub fn online_count() -> usize {
    all().iter().filter(|c| c.online.load(Ordering::Acquire)).count()
}

/// Reserve the next `PerCpu` for a CPU with this APIC id. Boot-CPU only.
pub fn reserve(apic_id: u32) -> Option<&'static PerCpu> {
    let i = CPU_COUNT.load(Ordering::Relaxed) as usize;
    let c = CPUS.get(i)?;
    c.index.store(i as u32, Ordering::Relaxed);
    c.apic_id.store(apic_id, Ordering::Relaxed);
    // SAFETY: this PerCpu is not yet visible to any other CPU (CPU_COUNT not yet bumped).
    unsafe { *c.self_ptr.get() = c };
    CPU_COUNT.store(i as u32 + 1, Ordering::Release);
    Some(c)
}

/// Record the stacks of a CPU that is not running yet (or is the caller).
///
/// # Safety
/// No other CPU may be reading `c.stacks` or running on `c`'s TSS.
pub unsafe fn set_stacks(c: &PerCpu, s: Stacks) {
    // SAFETY: forwarded to the caller.
    unsafe { *c.stacks.get() = s };
}

/// Make `c` this CPU's per-CPU data (write IA32_GS_BASE).
///
/// # Safety
/// `c` must be reserved for the calling CPU and not used by any other.
pub unsafe fn install(c: &'static PerCpu) {
    // SAFETY: IA32_GS_BASE exists on every x86_64 CPU; the kernel never uses
    // GS for anything else and never runs swapgs.
    unsafe { msr::wrmsr(msr::IA32_GS_BASE, c as *const PerCpu as u64) };
}

/// This CPU's per-CPU data. Valid from the first lines of `kmain`/`ap_main`.
#[inline]
pub fn this_cpu() -> &'static PerCpu {
    let p: *const PerCpu;
    // SAFETY: GS base points at a live, 'static PerCpu whose first field is its
    // own address (set by `reserve` + `install` before any caller runs).
    unsafe {
        core::arch::asm!("mov {}, gs:[0]", out(reg) p, options(nostack, readonly, preserves_flags));
        &*p
    }
}

/// Whether `install` has run on this CPU (GS base non-zero).
pub fn installed() -> bool {
    // SAFETY: reading IA32_GS_BASE has no side effects.
    unsafe { msr::rdmsr(msr::IA32_GS_BASE) != 0 }
}
