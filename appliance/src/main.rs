//! The trace appliance: the bare-metal binary built on the `kernel` framework.
//!
//! Every CPU comes up through the framework; then one CPU (`patch_cpu=`) runs
//! the patching loop and all others run workers that keep calling traced
//! functions.

#![no_std]
#![no_main]

extern crate alloc;

mod bench;
mod events;
mod health;
mod net;
mod net_state;
mod screen;
mod status;
mod traced;

use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use appliance::contract::{VERDICT_PREFIX, Verdict};
use kernel::arch::percpu::{self, PerCpu};
use kernel::boot::cmdline::{Options, ServeCpu, Strategy};
use kernel::boot::main::{Boot, Kernel};
use kernel::patch::site::Registry;
use log::{error, info, warn};

/// The CPU that runs the patching loop (APs read it once online).
static PATCH_CPU: AtomicU32 = AtomicU32::new(0);
/// The CPU that serves the network without pause, if one does (else the
/// patching loop polls it between batches).
static NET_CPU: AtomicU32 = AtomicU32::new(u32::MAX);
/// Set by the BSP once boot and the health check are done and `PATCH_CPU`
/// is decided: the APs then take their roles.
static LOOP_GO: AtomicBool = AtomicBool::new(false);
/// What the framework handed over (for the benchmarks' boot figures).
static KERNEL: spin::Once<Kernel> = spin::Once::new();

/// What the patching CPU needs, published with `LOOP_GO`.
static LOOP_ARGS: spin::Once<(Options, Option<&'static Registry>)> = spin::Once::new();

/// The 64-bit entry calls this (see `kernel/src/boot/entry.rs`): the
/// framework's boot phases, with the NMI watchdog and the patching engine
/// installed before the other CPUs start.
#[unsafe(no_mangle)]
extern "C" fn kmain(magic: u32, info: u32) -> ! {
    let mut boot = Boot::early(magic, info);
    boot.memory();
    boot.cpu_tables();
    boot.acpi_apic_clocks();
    kernel::nmi::watchdog::init(&boot.options.nmi, boot.tsc_hz);
    let sites = kernel::patch::setup::init(&boot.options.patch, &boot.features, |name| !name.starts_with("appliance::traced::traced_"))
        .inspect_err(|e| error!("patch: engine disabled: {e}"))
        .ok();
    let k = boot.start_cpus(Some(ap_main));
    appliance_main(k, sites)
}

fn ap_main(c: &'static PerCpu) -> ! {
    // Wait (in hlt, timer ticks wake us) for the BSP to decide who patches.
    let (opts, reg) = loop {
        if LOOP_GO.load(Ordering::Acquire)
            && let Some(args) = LOOP_ARGS.get()
        {
            break args.clone();
        }
        kernel::arch::cpu::idle_wait();
    };
    if c.index() as u32 == PATCH_CPU.load(Ordering::Acquire) {
        patch_loop(&opts, reg)
    }
    if c.index() as u32 == NET_CPU.load(Ordering::Acquire) {
        serve_busy()
    }
    work(c.index() as u32, &opts, reg)
}

/// A CPU that neither patches nor serves: call the traced functions, or
/// idle (serving what comes) when nothing flips the sites (every call would
/// run a NOP) or `patch_workers=` leaves it out. The patching CPU, in
/// `serve_forever` with the loop off, is the one that prints the NMI log.
fn work(index: u32, opts: &Options, reg: Option<&'static Registry>) -> ! {
    if !opts.patch.run {
        serve_idle()
    }
    if let Some(n) = opts.patch.workers.filter(|&n| worker_ordinal(index) >= n) {
        info!("appliance: cpu{index} idles (patch_workers={n})");
        serve_idle()
    }
    traced::worker(reg, worker_help)
}

/// What a worker does every few calls: stall if `selftest=lockup` chose it,
/// lend its time to a download, or stand in for a stuck serving CPU.
fn worker_help() {
    kernel::nmi::lockup_selftest::maybe_stall();
    net::help_downloads();
}

/// A worker CPU's place among the workers (CPUs in index order, without the
/// patching and the network's CPU), for `patch_workers=`.
fn worker_ordinal(index: u32) -> u32 {
    let (patch, net) = (PATCH_CPU.load(Ordering::Acquire), NET_CPU.load(Ordering::Acquire));
    (0..index).filter(|&i| i != patch && i != net).count() as u32
}

fn appliance_main(k: Kernel, sites: Option<&'static Registry>) -> ! {
    events::init(&k.options.trace);
    health::report_when_ticking(&k);
    status::init(&k.boot_info.cmdline);
    let serving = net::init(&k.options.net, k.machine.ecam.iter().find(|e| e.segment == 0));
    let online = percpu::online_count() as u32;
    let mut cpu = k.options.patch.cpu;
    if cpu >= online {
        error!("appliance: patch_cpu={cpu} but only {online} CPUs are online; the loop runs on cpu0");
        cpu = 0;
    }
    PATCH_CPU.store(cpu, Ordering::Release);
    let net_cpu = match k.options.net.serve_cpu {
        _ if !serving => None,
        ServeCpu::Patch => None,
        ServeCpu::Auto => (online >= 4).then(|| if cpu == online - 1 { online - 2 } else { online - 1 }),
        ServeCpu::Index(n) if n >= online || n == cpu => {
            error!("appliance: net_cpu={n} is not an online CPU other than the patching one; the patching loop serves the network");
            None
        }
        ServeCpu::Index(n) => Some(n),
    };
    match net_cpu {
        Some(n) => {
            NET_CPU.store(n, Ordering::Release);
            info!("net: served by cpu{n}, polling without pause");
            // The patching loop still prints the NMI log, and serves when
            // the serving CPU stops polling; the screen is the serving CPU's too.
            kernel::patch::poll_hook::set_poll_hook(net::poll_if_unserved);
        }
        None => kernel::patch::poll_hook::set_poll_hook(poll_services),
    }
    LOOP_ARGS.call_once(|| (k.options.clone(), sites));
    LOOP_GO.store(true, Ordering::Release);
    if let Some(kernel::boot::cmdline::Selftest::Lockup { secs }) = k.options.selftest {
        kernel::nmi::lockup_selftest::arm(k.options.selftest_cpu, secs);
    }
    let k = KERNEL.call_once(|| k);
    if cpu == 0 {
        patch_loop(&k.options, sites)
    }
    if net_cpu == Some(0) {
        serve_busy()
    }
    work(0, &k.options, sites)
}

/// The cooperative services: the network and the screen console. Run by the
/// patching loop between batches and by idle CPUs.
fn poll_services() {
    let _ = net::poll();
    screen::refresh();
}

/// The network's own CPU: poll the service (and the screen) without pause,
/// with interrupts on.
fn serve_busy() -> ! {
    x86_64::instructions::interrupts::enable();
    let mut next_drain = 0;
    loop {
        kernel::nmi::lockup_selftest::maybe_stall();
        poll_services();
        // The patching loop prints the NMI log; so does this CPU, in case
        // the patching CPU is the one stuck (every 100 ms: one CPU at a time).
        if kernel::arch::cpu::rdtsc() >= next_drain {
            kernel::nmi::watchdog::drain_to_console();
            next_drain = kernel::time::clock::deadline_after_ns(100_000_000);
        }
        core::hint::spin_loop();
    }
}

/// A worker CPU with nothing to exercise: serve the network and the screen
/// when their owner is busy, wait for the next interrupt.
fn serve_idle() -> ! {
    x86_64::instructions::interrupts::enable();
    loop {
        kernel::nmi::lockup_selftest::maybe_stall();
        poll_services();
        kernel::nmi::watchdog::drain_to_console();
        kernel::arch::cpu::idle_wait();
    }
}

/// What a CPU with nothing else to do runs: print the NMI log, serve the
/// network and the screen, wait for the next interrupt.
fn serve_forever() -> ! {
    loop {
        kernel::nmi::lockup_selftest::maybe_stall();
        kernel::nmi::watchdog::drain_to_console();
        poll_services();
        kernel::arch::cpu::idle_wait();
    }
}

/// Without the patching loop: keep printing the NMI log. Under `test_exit`,
/// measure the watchdog's NMI rates, wait for the lockup report when
/// `selftest=lockup` asked for one, and end the run with the verdict.
fn watch_only(opts: &Options) -> ! {
    if opts.test_exit {
        health::nmi_rate_report(2_000_000_000);
        if let Some(kernel::boot::cmdline::Selftest::Lockup { .. }) = opts.selftest {
            let deadline = kernel::time::clock::deadline_after_ns((opts.nmi.thresh_secs as u64 + 10) * 1_000_000_000);
            while kernel::nmi::watchdog::totals().lockups == 0 && kernel::arch::cpu::rdtsc() < deadline {
                kernel::nmi::lockup_selftest::maybe_stall();
                poll_services();
                kernel::nmi::watchdog::drain_to_console();
                kernel::arch::cpu::idle_wait();
            }
            kernel::nmi::watchdog::drain_to_console();
            if kernel::nmi::watchdog::totals().lockups == 0 {
                error!("nmi: no hard lockup reported within {} s", opts.nmi.thresh_secs + 10);
                kernel::boot::main::test_exit_failure();
            }
        }
        kernel::nmi::watchdog::drain_to_console();
        kernel::boot::main::test_exit_success();
    }
    serve_forever()
}

/// Run the patching loop here (bounded by `patch_cycles`, else forever), then
/// print the verdict and, under `test_exit`, end the QEMU run with it.
fn patch_loop(opts: &Options, reg: Option<&'static Registry>) -> ! {
    if opts.bench
        && let Some(reg) = reg
    {
        bench::run(KERNEL.get().expect("published at boot"), reg);
        kernel::boot::main::test_exit_success();
        watch_only(opts)
    }
    let Some(reg) = reg.filter(|_| opts.patch.run) else {
        info!("appliance: patching loop off");
        watch_only(opts)
    };
    let report = kernel::patch::run::run_loop(&opts.patch, reg);
    let t = report.totals;
    let mut problems = alloc::vec::Vec::new();
    if report.wrong_final_bytes != 0 {
        problems.push("sites not in their last requested state".into());
    }
    if report.errors != 0 {
        problems.push("failed batches".into());
    }
    if opts.patch.strategy == Strategy::Int3 && t.torn != 0 {
        problems.push("torn executions under int3".into());
    }
    for c in percpu::all().iter().filter(|c| c.online.load(Ordering::Relaxed)) {
        let mut a = appliance::trace::ring::Account::default();
        for x in events::cpu_accounts(c.index()) {
            a += x;
        }
        info!(
            "trace: cpu{}: {} events produced, {} kept, {} lost ({} overwritten, {} dropped)",
            c.index(),
            a.produced(),
            a.kept(),
            a.lost(),
            a.overwritten,
            a.dropped
        );
    }
    if t.traced_while_off != 0 || t.missed_while_on != 0 {
        warn!("patch: {} calls traced while off, {} missed while on (stale code)", t.traced_while_off, t.missed_while_on);
    }
    if let Some(why) = report.disabled {
        info!("ftrace: disabled: {}; every site verified off", why.text());
    }
    let verdict = Verdict {
        problems,
        cycles: report.cycles,
        cpu: percpu::this_cpu().index() as u32,
        sites: reg.sites.len() as u64,
        wrong_final_bytes: report.wrong_final_bytes as u64,
        errors: report.errors,
        torn: t.torn,
        int3_emulated: t.int3_emulated,
        cpus_with_int3: t.cpus_with_int3 as u64,
        calls: t.site_calls,
        traced_while_off: t.traced_while_off,
        missed_while_on: t.missed_while_on,
        nested_nmis: kernel::nmi::watchdog::totals().nested,
        ftrace_enabled: report.disabled.is_none(),
    };
    if verdict.ok() {
        info!("{VERDICT_PREFIX}{verdict}");
        kernel::boot::main::test_exit_success();
    } else {
        error!("{VERDICT_PREFIX}{verdict}");
        kernel::boot::main::test_exit_failure();
    }
    serve_forever()
}
