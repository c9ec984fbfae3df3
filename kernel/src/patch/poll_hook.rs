//! The services the patching CPU keeps while it patches: the application
//! sets a function (the network's poll) that the loop runs between batches
//! (`run.rs`) and between the tries of a sync round a CPU did not answer
//! (`machine.rs`).

use core::sync::atomic::{AtomicUsize, Ordering};

static POLL_HOOK: AtomicUsize = AtomicUsize::new(0);

/// Set the function the patching CPU polls its services with.
pub fn set_poll_hook(f: fn()) {
    POLL_HOOK.store(f as usize, Ordering::Release);
}

/// Run the services' poll hook, if one is set.
pub(super) fn poll_hook() {
    let h = POLL_HOOK.load(Ordering::Acquire);
    if h != 0 {
        // SAFETY: only `set_poll_hook` stores here, from a `fn()`.
        let f = unsafe { core::mem::transmute::<usize, fn()>(h) };
        f();
    }
}
