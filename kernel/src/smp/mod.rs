//! Symmetric multiprocessing: starting the application processors and
//! calling functions on other CPUs.
pub mod boot;
pub mod trampoline;
pub mod xcall;
