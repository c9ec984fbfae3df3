//! DMA memory for the drivers: zeroed, identity-mapped frames below 4 GiB
//! (so that controllers without 64-bit addressing reach them), never freed
//! (drivers are brought up once, at boot).

/// `bytes` rounded up to whole 4 KiB frames, zeroed; its physical (and
/// virtual) address.
pub fn alloc_zeroed(bytes: usize) -> Result<u64, &'static str> {
    let frames = bytes.div_ceil(4096) as u64;
    let p = crate::mem::FRAMES.lock().alloc_run(frames, 4096, 1 << 32).map_err(|_| "no DMA memory")?;
    // SAFETY: fresh frames, identity-mapped read-write, owned by the caller from here on.
    unsafe { core::ptr::write_bytes(p as *mut u8, 0, frames as usize * 4096) };
    Ok(p)
}
