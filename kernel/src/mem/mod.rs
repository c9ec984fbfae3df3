//! Physical and virtual memory: the frame allocator (`frame.rs`, pure and
//! host-tested) and the machine's one instance of it, page tables
//! (`paging.rs`), the heap (`heap.rs`).
pub mod frame;

/// The machine's physical frame allocator: the boot sequence fills it from
/// the memory map; page tables and DMA buffers take from it. Behind a lock;
/// never used from NMI context.
#[cfg(kernel_target)]
pub static FRAMES: spin::Mutex<frame::FrameAllocator> = spin::Mutex::new(frame::FrameAllocator::new());

#[cfg(kernel_target)]
pub mod heap;
#[cfg(kernel_target)]
pub mod paging;
