//! NMIs: the local-APIC NMI watchdog (a performance counter where one
//! counts, else NMI IPIs broadcast from a timer), hard-lockup detection, and
//! the NMI-safe warning log. Everything reachable from the NMI handler takes
//! no lock and does not allocate.
pub mod config;
#[cfg(kernel_target)]
pub mod cpu_backtrace;
pub mod ledger;
pub mod log;
#[cfg(kernel_target)]
pub mod lockup_selftest;
pub mod pmu;
pub mod pmu_driver;
pub mod round;
pub mod stall;
#[cfg(kernel_target)]
pub mod watchdog;
