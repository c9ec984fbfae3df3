//! Time: the TSC as the clock; its frequency from CPUID or measured against
//! the HPET, the ACPI PM timer or the PIT.
#[cfg(kernel_target)]
pub mod calibrate;
#[cfg(kernel_target)]
pub mod clock;
#[cfg(kernel_target)]
pub mod hpet;
#[cfg(kernel_target)]
pub mod pit;
#[cfg(kernel_target)]
pub mod pm_timer;
pub mod reference;
