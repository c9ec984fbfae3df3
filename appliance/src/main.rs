//! The trace appliance: the bare-metal binary built on the `kernel` framework.
//!
//! Every CPU comes up through the framework; then one CPU (`patch_cpu=`) runs
//! the patching loop and all others run workers that keep calling traced
//! functions.

#![no_std]
#![no_main]

mod health;
mod traced;

use core::sync::atomic::{AtomicU32, Ordering};

use kernel::arch::percpu::PerCpu;
use kernel::boot::cmdline::Strategy;
use kernel::boot::main::{Kernel, start};
use log::{error, info};

/// `patch_cpu=` from the command line (APs read it once online).
static PATCH_CPU: AtomicU32 = AtomicU32::new(0);

/// The 64-bit entry calls this (see `kernel/src/boot/entry.rs`).
#[unsafe(no_mangle)]
extern "C" fn kmain(magic: u32, info: u32) -> ! {
    start(magic, info, appliance_main, Some(ap_main))
}

fn ap_main(c: &'static PerCpu) -> ! {
    // An AP named by patch_cpu= waits for the BSP to hand it the loop.
    if c.index() as u32 == PATCH_CPU.load(Ordering::Acquire) {
        kernel::boot::main::idle()
    }
    traced::worker()
}

fn appliance_main(k: Kernel) -> ! {
    PATCH_CPU.store(k.options.patch_cpu, Ordering::Release);
    health::report_when_ticking(&k);
    let Some(reg) = k.sites.filter(|_| k.options.patch) else {
        info!("appliance: patching loop off");
        kernel::boot::main::test_exit_success();
        kernel::boot::main::idle()
    };
    if k.options.patch_cpu != 0 {
        error!("appliance: patch_cpu={} is not supported yet; the loop runs on cpu0", k.options.patch_cpu);
    }
    let report = kernel::patch::engine::run_loop(&k.options, reg);
    let t = report.totals;
    let mut problems: heapless::Vec<&str, 4> = heapless::Vec::new();
    if report.wrong_final_bytes != 0 {
        let _ = problems.push("sites not in their last requested state");
    }
    if report.errors != 0 {
        let _ = problems.push("failed batches");
    }
    if k.options.strategy == Strategy::Int3 && t.torn != 0 {
        let _ = problems.push("torn executions under int3");
    }
    if t.traced_while_off != 0 {
        log::warn!("patch: {} calls went through sites that were off (stale code)", t.traced_while_off);
    }
    if problems.is_empty() {
        info!(
            "patch: verdict: ok: {} cycles, final bytes verified on {} sites, torn={}, int3 emulations on {} CPUs",
            report.cycles,
            reg.sites.len(),
            t.torn,
            t.cpus_with_int3
        );
        kernel::boot::main::test_exit_success();
    } else {
        error!("patch: verdict: FAILED: {:?} (wrong final bytes: {}, errors: {})", problems.as_slice(), report.wrong_final_bytes, report.errors);
        kernel::boot::main::test_exit_failure();
    }
    kernel::boot::main::idle()
}
