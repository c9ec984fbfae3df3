//! Physical and virtual memory: the frame allocator (`frame.rs`, pure and
//! host-tested) and the machine's one instance of it, where the AP
//! trampoline goes in low memory (`low.rs`, pure), page tables (`paging.rs`),
//! the heap (`heap.rs`).
pub mod frame;
pub mod low;

/// The machine's physical frame allocator: the boot sequence fills it from
/// the memory map; page tables and DMA buffers take from it. Behind a lock;
/// never used from NMI context.
#[cfg(kernel_target)]
pub static FRAMES: spin::Mutex<frame::FrameAllocator> = spin::Mutex::new(frame::FrameAllocator::new());

#[cfg(kernel_target)]
pub mod heap;
#[cfg(kernel_target)]
pub mod paging;

/// The heap's size in MiB: `heap_mb=` when given, else a quarter of the
/// usable memory (the per-CPU stacks and trace rings of hundreds of CPUs
/// live there: about 576 KiB a CPU with the default 256 KiB rings), at least
/// 64 MiB where half the memory allows it, at most 4 GiB.
pub fn heap_mib(usable_bytes: u64, asked: Option<u32>) -> u64 {
    if let Some(mb) = asked {
        return mb as u64;
    }
    let usable = usable_bytes >> 20;
    (usable / 4).max(64.min(usable / 2)).min(4096)
}

#[cfg(test)]
mod tests {
    #[test]
    fn heap_sizes() {
        use super::heap_mib;
        assert_eq!(heap_mib(512 << 20, None), 128);
        assert_eq!(heap_mib(2 << 30, None), 512);
        assert_eq!(heap_mib(128 << 20, None), 64, "at least 64 MiB where half the memory allows");
        assert_eq!(heap_mib(64 << 20, None), 32, "never more than half");
        assert_eq!(heap_mib(1 << 40, None), 4096);
        assert_eq!(heap_mib(512 << 20, Some(16)), 16);
    }
}
