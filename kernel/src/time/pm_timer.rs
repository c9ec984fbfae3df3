//! The ACPI power-management timer (ACPI 6.5 §4.8.3.3): a free-running
//! counter at 3.579545 MHz, 24 or 32 bits wide, read from the I/O port the
//! FADT names. It needs no setup and raises no interrupt here (its enable bit
//! in PM1 is never set).

use super::reference::PmTimer;
use x86_64::instructions::port::Port;

/// Read the counter.
pub fn now(t: PmTimer) -> u64 {
    // SAFETY: the port is the PM_TMR_BLK (or X_PM_TMR_BLK) the FADT lists;
    // reading it has no side effect.
    let v = unsafe { Port::<u32>::new(t.port).read() };
    super::reference::counter_delta(0, v as u64, t.bits)
}
