//! NMI backtraces on request: a CPU that waits for another which does not
//! answer sends it an NMI, and the stuck CPU writes its registers and call
//! trace into the NMI log from its NMI handler (Linux:
//! `trigger_single_cpu_backtrace()` and `nmi_cpu_backtrace()`,
//! `lib/nmi_backtrace.c`; used by `csd_lock_wait_toolong()`, `kernel/smp.c`).
//! An NMI is the one interrupt a CPU spinning with interrupts off still takes.
//!
//! The request is counted in the target's watchdog IPI count before the NMI
//! is raised, as a watchdog round's are, so the NMI ledger (`ledger.rs`)
//! accounts for it and it is never an "unknown" NMI. The handler side takes
//! no lock and does not allocate.

use core::fmt::Write;
use core::sync::atomic::Ordering;

use super::log::NMI_LOG;
use crate::apic::lapic::{self, Dest, icr};
use crate::arch::percpu::PerCpu;
use crate::arch::trap::{self, TrapFrame};
use crate::events::EventKind;

/// Ask `target` for its registers and call trace from its next NMI:
/// `waited_ms` is how long the asking CPU has waited for it, `stall` the
/// stall's number on that CPU (`PerCpu::stalled_xcalls`). Not from NMI context.
pub fn request(target: &PerCpu, waited_ms: u64, stall: u64) {
    target.backtrace_stall.store(stall, Ordering::Relaxed);
    // Non-zero marks the request (a wait of 0 ms is shown as 1).
    target.backtrace_waited_ms.store(waited_ms.max(1), Ordering::Release);
    // Count before raising: the target's handler reads the count (see `ledger`).
    target.nmi_ipi_sent.fetch_add(1, Ordering::Release);
    lapic::send_ipi(Dest::Apic(target.apic_id()), icr::DELIVERY_NMI);
}

/// From this CPU's NMI handler: write the backtrace another CPU asked for,
/// if it asked. NMI context: the log takes no lock and does not allocate.
pub fn on_nmi(cpu: &PerCpu, frame: &TrapFrame) {
    let waited_ms = cpu.backtrace_waited_ms.swap(0, Ordering::Acquire);
    if waited_ms == 0 {
        return;
    }
    cpu.backtraces.fetch_add(1, Ordering::Relaxed);
    let stall = cpu.backtrace_stall.load(Ordering::Relaxed);
    let rec = NMI_LOG.push(|r| {
        let _ = writeln!(
            r,
            "NMI backtrace for cpu{} (APIC id {}): a cross-CPU call waited {waited_ms} ms for it (stall #{stall} of this CPU)",
            cpu.index(),
            cpu.apic_id()
        );
        let _ = trap::write_dump(r, frame);
    });
    if let Some(i) = rec {
        crate::events::record(EventKind::Warning, i as u64);
    }
}
