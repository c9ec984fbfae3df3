//! Debugging aids: symbol table, call traces, logging.
pub mod symbols;
#[cfg(kernel_target)]
pub mod backtrace;
#[cfg(kernel_target)]
pub mod log;
