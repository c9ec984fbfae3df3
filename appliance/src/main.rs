//! The trace appliance: the bare-metal binary built on the `kernel` framework.
//!
//! Today it boots every CPU and reports that the machine is idle and healthy;
//! tracing, patching, the NMI watchdog and the network service build on it.

#![no_std]
#![no_main]

mod health;

use kernel::boot::main::{Kernel, start};

/// The 64-bit entry calls this (see `kernel/src/boot/entry.rs`).
#[unsafe(no_mangle)]
extern "C" fn kmain(magic: u32, info: u32) -> ! {
    start(magic, info, appliance_main, None)
}

fn appliance_main(k: Kernel) -> ! {
    health::report_when_ticking(&k);
    kernel::boot::main::test_exit_success();
    kernel::boot::main::idle()
}
