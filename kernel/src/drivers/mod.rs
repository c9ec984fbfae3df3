//! Device drivers.
pub mod qemu;
pub mod serial;
