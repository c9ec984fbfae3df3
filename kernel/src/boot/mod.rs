//! From the boot loader to `kmain`.
pub mod cmdline;
pub mod image;
pub mod info;
pub mod mb1;
#[cfg(kernel_target)]
pub mod entry;
#[cfg(kernel_target)]
pub mod main;
