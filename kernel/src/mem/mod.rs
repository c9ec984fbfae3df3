//! Physical and virtual memory.
pub mod frame;
#[cfg(kernel_target)]
pub mod heap;
#[cfg(kernel_target)]
pub mod paging;
