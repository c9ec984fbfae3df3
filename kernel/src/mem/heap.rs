//! The kernel heap (`#[global_allocator]`): linked_list_allocator over one
//! contiguous run of frames. Never used from NMI context.

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::NonNull;

use linked_list_allocator::Heap;

struct KernelHeap(spin::Mutex<Heap>);

// SAFETY: allocation is delegated to linked_list_allocator under a lock; it
// returns blocks of at least the requested size and alignment, or null.
unsafe impl GlobalAlloc for KernelHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.0.lock().allocate_first_fit(layout).map_or(core::ptr::null_mut(), |p| p.as_ptr())
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if let Some(p) = NonNull::new(ptr) {
            // SAFETY: the caller passes a block this allocator returned, with its layout.
            unsafe { self.0.lock().deallocate(p, layout) };
        }
    }
}

#[global_allocator]
static HEAP: KernelHeap = KernelHeap(spin::Mutex::new(Heap::empty()));

/// Give the heap `[start, start+size)`.
///
/// # Safety
/// The range must be mapped read-write, unused by anything else, forever.
pub unsafe fn init(start: u64, size: usize) {
    // SAFETY: forwarded to the caller.
    unsafe { HEAP.0.lock().init(start as *mut u8, size) };
}

/// (used, free) bytes.
pub fn usage() -> (usize, usize) {
    let h = HEAP.0.lock();
    (h.used(), h.free())
}
