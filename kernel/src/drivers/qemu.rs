//! QEMU's isa-debug-exit device (`-device isa-debug-exit,iobase=0xf4,iosize=0x04`):
//! writing v makes QEMU exit with status (v << 1) | 1. Tests read the verdict.

use x86_64::instructions::port::Port;

const DEBUG_EXIT_PORT: u16 = 0xf4;

/// Exit codes the kernel uses (QEMU exits with `(code << 1) | 1`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum ExitCode {
    /// Boot (and any selftest that should pass) completed: QEMU exits 33.
    Success = 0x10,
    /// A fatal exception or panic: QEMU exits 35.
    Failure = 0x11,
}

/// Ask QEMU to exit. Returns if the device is absent (real hardware).
pub fn exit(code: ExitCode) {
    // SAFETY: port 0xf4 is the debug-exit device under QEMU and unused on PCs.
    unsafe { Port::new(DEBUG_EXIT_PORT).write(code as u32) };
}
