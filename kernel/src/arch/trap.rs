//! Trap dispatch: the Rust side of every vector.
//!
//! Handlers are plain `fn(&mut TrapFrame) -> Disposition` registered per vector
//! in a lock-free table, so dispatch is safe from NMI context. An exception
//! nobody handles prints a register dump and a symbolized call trace, then
//! stops that CPU (the others go on).

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use super::idt::vector;
use super::percpu::{self, ist, this_cpu};

/// Registers as saved by `trap_common` (lowest address first).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct TrapFrame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    pub vector: u64,
    pub error_code: u64,
    // Pushed by the CPU (SDM Vol. 3A §6.14.2, Figure 6-9).
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

/// What a handler decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disposition {
    /// Handled: return to the (possibly modified) frame.
    Resume,
    /// Not mine: try the default (report and stop the CPU for exceptions).
    NotHandled,
}

pub type Handler = fn(&mut TrapFrame) -> Disposition;

static HANDLERS: [AtomicUsize; 256] = [const { AtomicUsize::new(0) }; 256];

/// Register the handler for `vector` (replaces any earlier one).
pub fn register(vector: u8, handler: Handler) {
    HANDLERS[vector as usize].store(handler as usize, Ordering::Release);
}

fn handler(vector: u8) -> Option<Handler> {
    let h = HANDLERS[vector as usize].load(Ordering::Acquire);
    // SAFETY: non-zero values are only ever stored by `register`, from a `Handler`.
    (h != 0).then(|| unsafe { core::mem::transmute::<usize, Handler>(h) })
}

/// Hook run by the fatal path before the CPU stops (the kernel sets it to
/// exit QEMU with a failure code when `test_exit` is on).
static FATAL_HOOK: AtomicUsize = AtomicUsize::new(0);

pub fn set_fatal_hook(f: fn()) {
    FATAL_HOOK.store(f as usize, Ordering::Release);
}

/// Extra lines for the fatal report (the patching engine says which sites were
/// under modification, so a tear the oracle could not recover is still named).
pub type FatalNote = fn(&TrapFrame, &mut dyn Write);

static FATAL_NOTE: AtomicUsize = AtomicUsize::new(0);

pub fn set_fatal_note(f: FatalNote) {
    FATAL_NOTE.store(f as usize, Ordering::Release);
}

fn write_fatal_note(frame: &TrapFrame, out: &mut dyn Write) {
    let h = FATAL_NOTE.load(Ordering::Acquire);
    if h != 0 {
        // SAFETY: only `set_fatal_note` stores here, from a `FatalNote`.
        let f = unsafe { core::mem::transmute::<usize, FatalNote>(h) };
        f(frame, out);
    }
}

pub(crate) fn run_fatal_hook() {
    let h = FATAL_HOOK.load(Ordering::Acquire);
    if h != 0 {
        // SAFETY: only `set_fatal_hook` stores here, from a `fn()`.
        let f = unsafe { core::mem::transmute::<usize, fn()>(h) };
        f();
    }
}

/// Interrupts on vectors nobody registered, by vector (every CPU).
static UNEXPECTED: [AtomicU64; 256] = [const { AtomicU64::new(0) }; 256];
/// How many of each were already reported on the console.
static UNEXPECTED_REPORTED: [AtomicU64; 256] = [const { AtomicU64::new(0) }; 256];

/// An interrupt on a vector nobody handles: a stray one firmware left
/// pending, an IO-APIC entry or MSI left enabled. Acknowledge it if the
/// local APIC has it in service (else it would block every interrupt of its
/// priority class and below, the timer included: a false hard lockup), and
/// count it. Printed later from ordinary context (`report_unexpected`).
fn unexpected_irq(v: u8) {
    this_cpu().spurious.fetch_add(1, Ordering::Relaxed);
    UNEXPECTED[v as usize].fetch_add(1, Ordering::Relaxed);
    if crate::apic::lapic::in_service(v) {
        crate::apic::lapic::eoi();
    }
}

/// Interrupts taken on unregistered vectors, by vector, over every CPU.
pub fn unexpected_counts() -> impl Iterator<Item = (u8, u64)> {
    UNEXPECTED.iter().enumerate().map(|(v, n)| (v as u8, n.load(Ordering::Relaxed))).filter(|(_, n)| *n > 0)
}

/// Say on the console, once per vector, that unregistered interrupts came
/// (and their running count when more came since). Not from interrupt context.
pub fn report_unexpected() {
    for (v, n) in unexpected_counts() {
        let reported = &UNEXPECTED_REPORTED[v as usize];
        let before = reported.load(Ordering::Relaxed);
        if before == 0 {
            log::warn!("irq: interrupt on vector {v:#04x}, which nothing handles: acknowledged and counted");
        } else if n >= 2 * before && n - before >= 100 {
            log::warn!("irq: vector {v:#04x}: {n} unexpected interrupts so far");
        } else {
            continue;
        }
        reported.store(n, Ordering::Relaxed);
    }
}

/// Called by `trap_common` for every vector. Returns 0 to leave with `iretq`,
/// 1 to leave through the no-IRET path (frame.rsp then points at the RFLAGS,
/// RIP pair this function wrote).
#[unsafe(no_mangle)]
extern "C" fn trap_dispatch(frame: &mut TrapFrame) -> u64 {
    let v = frame.vector as u8;
    let cpu = this_cpu();
    let in_nmi = cpu.nmi_depth.load(Ordering::Relaxed) > 0;

    if v == vector::NMI {
        return nmi(frame);
    }
    // A probing rdmsr/wrmsr faulted: skip it (both are 2 bytes, 0f 32 / 0f 30).
    if v == vector::GENERAL_PROTECTION && frame.rip != 0 && frame.rip == cpu.fixup_rip.load(Ordering::Relaxed) {
        cpu.fixup_hit.store(true, Ordering::Relaxed);
        frame.rip += 2;
        return 0;
    }

    let is_irq = v >= vector::FIRST_IRQ;
    if is_irq {
        cpu.irq_depth.fetch_add(1, Ordering::Relaxed);
    }
    let disposition = match handler(v) {
        Some(h) => h(frame),
        None => Disposition::NotHandled,
    };
    if is_irq {
        cpu.irq_depth.fetch_sub(1, Ordering::Relaxed);
    }
    if disposition == Disposition::NotHandled {
        if v < vector::FIRST_IRQ {
            fatal(frame, "unhandled exception");
        } else {
            unexpected_irq(v);
        }
    }
    if in_nmi && v < vector::FIRST_IRQ {
        cpu.nmi_exceptions.fetch_add(1, Ordering::Relaxed);
        // Leave without IRET so NMIs stay blocked until the NMI handler's own
        // iretq. Write [RFLAGS, RIP] just below the target stack pointer.
        let sp = frame.rsp - 16;
        // SAFETY: exceptions inside the NMI handler come from code running on
        // the NMI stack (or a stack it switched to); the two words below its
        // RSP are not live at the trapping instruction (a trace site at
        // function entry, or a faulting instruction the handler resumes past
        // after emulating a call/skip), exactly like the slot a CALL would write.
        unsafe {
            (sp as *mut u64).write(frame.rflags);
            ((sp + 8) as *mut u64).write(frame.rip);
        }
        frame.rsp = sp;
        return 1;
    }
    0
}

/// NMI: nested-NMI-safe by construction (see idt.rs). While it runs, #BP and
/// other exceptions use separate stacks, so an NMI that interrupted a #BP or
/// exception handler cannot overwrite that handler's frame.
fn nmi(frame: &mut TrapFrame) -> u64 {
    let cpu = this_cpu();
    let depth = cpu.nmi_depth.fetch_add(1, Ordering::Relaxed);
    if depth > 0 {
        cpu.nmi_nested.fetch_add(1, Ordering::Relaxed);
    }
    let stacks = cpu.stacks();
    if depth == 0 {
        // SAFETY: we are this CPU's only NMI (NMIs are blocked until our iretq and
        // no exception inside returns with IRET); the BP/EXC stacks we switch to
        // are not in use (only NMI-context exceptions use them).
        unsafe {
            cpu.set_ist(ist::BREAKPOINT, stacks.nmi_breakpoint.top);
            cpu.set_ist(ist::EXCEPTION, stacks.nmi_exception.top);
        }
    }
    cpu.nmis.fetch_add(1, Ordering::Relaxed);
    if let Some(h) = handler(vector::NMI) {
        h(frame);
    }
    if depth == 0 {
        // SAFETY: as above; back to the normal stacks before leaving NMI context.
        unsafe {
            cpu.set_ist(ist::BREAKPOINT, stacks.ist[ist::BREAKPOINT].top);
            cpu.set_ist(ist::EXCEPTION, stacks.ist[ist::EXCEPTION].top);
        }
    }
    cpu.nmi_depth.fetch_sub(1, Ordering::Relaxed);
    0
}

/// Exception names (SDM Vol. 3A Table 6-1).
pub fn exception_name(v: u8) -> &'static str {
    const NAMES: [&str; 32] = [
        "#DE divide error", "#DB debug", "NMI", "#BP breakpoint", "#OF overflow", "#BR bound range",
        "#UD invalid opcode", "#NM device not available", "#DF double fault", "coprocessor overrun",
        "#TS invalid TSS", "#NP segment not present", "#SS stack fault", "#GP general protection",
        "#PF page fault", "reserved 15", "#MF x87 error", "#AC alignment check", "#MC machine check",
        "#XM SIMD error", "#VE virtualization", "#CP control protection", "reserved 22", "reserved 23",
        "reserved 24", "reserved 25", "reserved 26", "reserved 27", "#HV hypervisor injection",
        "#VC VMM communication", "#SX security", "reserved 31",
    ];
    NAMES.get(v as usize).copied().unwrap_or("interrupt")
}

/// Write a register dump of `frame` (Linux-like layout).
pub fn write_dump(out: &mut impl Write, frame: &TrapFrame) -> fmt::Result {
    let cpu = this_cpu();
    writeln!(out, "CPU: {} APIC: {} {}", cpu.index(), cpu.apic_id(), crate::debug::backtrace::context_name())?;
    write!(out, "RIP: {:04x}:[<{:016x}>] ", frame.cs, frame.rip)?;
    crate::debug::backtrace::write_symbol(out, frame.rip)?;
    writeln!(out)?;
    writeln!(out, "RSP: {:04x}:{:016x}  EFLAGS: {:08x}  ERR: {:x}", frame.ss, frame.rsp, frame.rflags, frame.error_code)?;
    writeln!(out, "RAX: {:016x} RBX: {:016x} RCX: {:016x}", frame.rax, frame.rbx, frame.rcx)?;
    writeln!(out, "RDX: {:016x} RSI: {:016x} RDI: {:016x}", frame.rdx, frame.rsi, frame.rdi)?;
    writeln!(out, "RBP: {:016x} R08: {:016x} R09: {:016x}", frame.rbp, frame.r8, frame.r9)?;
    writeln!(out, "R10: {:016x} R11: {:016x} R12: {:016x}", frame.r10, frame.r11, frame.r12)?;
    writeln!(out, "R13: {:016x} R14: {:016x} R15: {:016x}", frame.r13, frame.r14, frame.r15)?;
    use x86_64::registers::control::{Cr0, Cr3, Cr4};
    writeln!(
        out,
        "CR0: {:016x} CR2: {:016x} CR3: {:016x} CR4: {:016x}",
        Cr0::read_raw(),
        super::cpu::cr2(),
        Cr3::read_raw().0.start_address().as_u64(),
        Cr4::read_raw()
    )?;
    if cpu.nmi_depth.load(Ordering::Relaxed) > 0 {
        crate::debug::backtrace::write_nmi_call_trace(out, frame.rip, frame.rbp)
    } else {
        crate::debug::backtrace::write_call_trace(out, frame.rip, frame.rbp)
    }
}

/// Report an exception nobody handled and stop this CPU.
pub fn fatal(frame: &TrapFrame, why: &str) -> ! {
    let cpu = this_cpu();
    cpu.exceptions.fetch_add(1, Ordering::Relaxed);
    let v = frame.vector as u8;
    {
        let mut con = crate::debug::log::emergency_console();
        let _ = writeln!(con, "\n------------[ cut here ]------------");
        let _ = writeln!(con, "FATAL: {why}: {} (vector {v}) on CPU {}", exception_name(v), cpu.index());
        if v == vector::PAGE_FAULT {
            let _ = writeln!(con, "page fault address (CR2): {:#018x}, error code {:#x}", super::cpu::cr2(), frame.error_code);
        }
        let _ = write_dump(&mut con, frame);
        write_fatal_note(frame, &mut con);
        let _ = writeln!(con, "---[ end trace: CPU {} halted ]---", cpu.index());
    }
    cpu.dead.store(true, Ordering::Release);
    cpu.online.store(false, Ordering::Release);
    run_fatal_hook();
    super::cpu::halt_forever()
}

/// All CPUs' per-CPU records (re-exported for reports).
pub fn cpus() -> &'static [percpu::PerCpu] {
    percpu::all()
}
