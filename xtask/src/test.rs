//! `cargo xtask test`: host unit tests (`cargo test`), then integration tests
//! that boot real images under QEMU and check what the kernel prints. Every
//! QEMU run is bounded in time and killed on timeout; the guest gives its
//! verdict through isa-debug-exit (`test_exit` on its command line).
//!
//! Ends with the line `N passed, N failed` (skipped ones counted apart).
//!
//! This file is the harness (what a case is, how its log is checked, the
//! jobs run in parallel) and the list of log-checked cases; the checks and
//! the host-driven cases live by subject in `test/`: boot and SMP
//! (`boot.rs`), the patching engine (`patching.rs`), the NMI watchdog
//! (`nmi.rs`), trace formats (`trace.rs`), the network and NICs (`net.rs`),
//! the screen (`screen.rs`), firmware and clocks (`clocks.rs`), KVM
//! (`kvm.rs`), soaks and remote appliances (`fleet.rs`), and a stuck CPU
//! under load (`faults.rs`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

mod faults;
mod harness;
mod boot;
mod patching;
mod nmi;
mod trace;
mod net;
mod screen;
mod clocks;
mod kvm;
mod fleet;
mod netboot;

use harness::*;
use boot::*;
use patching::*;
use nmi::*;
use trace::*;
pub(crate) use trace::accounting_case;
use net::*;
use screen::*;
use clocks::*;
use kvm::*;
use fleet::*;
use netboot::*;

use crate::qemu::{self, Boot, EXIT_FAILURE, EXIT_SUCCESS, Firmware, Spec};
use crate::{Result, root};

fn cases(elf: &Path, iso: &Path) -> Vec<Case> {
    let ok = |name, spec, ids: &[u32]| Case {
        name,
        spec,
        timeout: Duration::from_secs(60),
        exit: EXIT_SUCCESS,
        expect: healthy(ids),
        forbid: never_on_a_healthy_boot(),
        check: None,
    };
    let fatal = |name, append: &str, expect: &[&str]| Case {
        name,
        spec: kernel_boot(elf, append, "2"),
        timeout: Duration::from_secs(60),
        exit: EXIT_FAILURE,
        expect: expect.iter().map(|s| s.to_string()).collect(),
        forbid: vec![],
        check: None,
    };
    // The patching engine: bounded loops, each ends with a verdict line.
    let patch = |name, append: &str, smp: &str, check: Option<LogCheck>| Case {
        name,
        spec: kernel_boot(elf, &format!("patch=on patch_interval_us=0 status_secs=5 {append}"), smp),
        timeout: Duration::from_secs(300),
        exit: EXIT_SUCCESS,
        expect: vec![
            "patch: the trace trampoline preserves every caller-saved register, the flags and XMM0-XMM15".into(),
            "patch: verdict: ok".into(),
            "patch: done: strategy=".into(),
        ],
        forbid: ["FATAL", "panic", "BOOT FAILED", "sync round failed", "rendezvous failed"].iter().map(|s| s.to_string()).collect(),
        check,
    };
    let mut pc = kernel_boot(elf, "", "2");
    pc.machine = "pc".into();
    let mut bios_cd = Spec::new(Boot::Cdrom(iso.to_path_buf()));
    bios_cd.smp = "2".into();
    let mut uefi_usb = Spec::new(Boot::Usb(iso.to_path_buf()));
    uefi_usb.smp = "3".into();
    uefi_usb.firmware = Firmware::Uefi;
    let mut bios_usb = Spec::new(Boot::Usb(iso.to_path_buf()));
    bios_usb.smp = "2".into();

    let mut v = vec![
        ok("kernel_smp1", kernel_boot(elf, "", "1"), &[0]),
        ok("kernel_smp4", kernel_boot(elf, "", "4"), &[0, 1, 2, 3]),
        ok("kernel_smp3_odd", kernel_boot(elf, "", "3"), &[0, 1, 2]),
        ok("kernel_smp6_sparse_apic_ids", kernel_boot(elf, "", "6,sockets=2,cores=3"), &[0, 1, 2, 4, 5, 6]),
        ok("kernel_i440fx_smp2", pc, &[0, 1]),
        ok("kernel_max_cpus_2_of_4", kernel_boot(elf, "max_cpus=2", "4"), &[0, 1]),
        ok("grub_bios_cdrom", bios_cd, &[0, 1]),
        ok("grub_bios_usb", bios_usb, &[0, 1]),
        ok("grub_uefi_usb", uefi_usb, &[0, 1, 2]),
    ];
    v.last_mut().expect("cases").timeout = Duration::from_secs(180);
    // A NIC behind a PCI Express root port (bus 1): found by following the
    // bridge from bus 0, at a fraction of the reads of walking every bus.
    let mut behind = kernel_boot(elf, "", "2");
    behind.extra = vec!["-device".into(), "pcie-root-port,id=rp1,chassis=1".into()];
    behind.net = Some((qemu::free_port().unwrap_or(0), "e1000e,bus=rp1".into()));
    let mut bridge = ok("pci_nic_behind_a_root_port_found_through_the_bridge", behind, &[0, 1]);
    bridge.expect.push("pci: 01:00.0 8086:10d3 class 02.00".into());
    bridge.expect.push("net: 82574L at 01:00.0 MAC ".into());
    bridge.check = Some(pci_scan_is_cheap);
    v.push(bridge);
    // The command line: unknown words and bad values are reported, the rest applies.
    let mut diag = ok("cmdline_reports_bad_words", kernel_boot(elf, "frobnicate timer_hz=0 loglevel=debug", "2"), &[0, 1]);
    diag.expect.push("cmdline: unknown option `frobnicate` (ignored)".into());
    diag.expect.push("cmdline: bad value in `timer_hz=0`: expected an integer 1..=10000 (default kept)".into());
    diag.forbid.retain(|f| f != "ERROR");
    v.push(diag);
    // A CPU that never acknowledges a cross-CPU call is named by APIC id, and
    // the health check names it too (the guest still exits with success).
    let mut stall = ok("xcall_timeout_names_the_silent_cpu", kernel_boot(elf, "selftest=xcall_timeout", "4"), &[0, 1, 2, 3]);
    stall.expect.pop();
    stall.expect.push("selftest: xcall: cross-CPU call not acknowledged by APIC id(s) 3".into());
    stall.expect.push("health: CPUs with APIC ids [3] take no timer interrupts".into());
    stall.forbid.retain(|f| f != "ERROR");
    v.push(stall);
    // Processors the MADT lists but does not enable (QEMU's hot-plug slots) are reported and not started.
    let mut slots = ok("kernel_smp2_of_maxcpus4", kernel_boot(elf, "", "2,maxcpus=4"), &[0, 1]);
    slots.expect.push("acpi: processor uid 3 APIC id 3 (xAPIC entry)".into());
    v.push(slots);
    // Exceptions: a symbolized register dump and call trace, then the CPU stops.
    v.push(fatal(
        "selftest_exception_dump",
        "selftest=exception",
        &[
            "FATAL: unhandled exception: #UD invalid opcode (vector 6) on CPU 0",
            "RIP: 0008:[<",
            "] kernel::boot::main::run_selftest+0x",
            "RAX: ",
            "CR0: ",
            "Call Trace:",
            "] kmain+0x",
            "---[ end trace: CPU 0 halted ]---",
        ],
    ));
    v.push(fatal(
        "selftest_null_page_fault",
        "selftest=pagefault",
        &["#PF page fault (vector 14)", "page fault address (CR2): 0x0000000000000010, error code 0x0", "] kernel::boot::main::run_selftest+0x"],
    ));
    v.push(fatal(
        "selftest_text_is_read_only",
        "selftest=write_text",
        // Error code 3: present page, write access (SDM Vol. 3A §4.7).
        &["#PF page fault (vector 14)", "error code 0x3", "] kernel::boot::main::run_selftest+0x"],
    ));
    v.push(fatal(
        "selftest_foreign_breakpoint_is_reported",
        "selftest=breakpoint",
        &["FATAL: unhandled exception: #BP breakpoint (vector 3) on CPU 0", "] kernel::boot::main::run_selftest+0x"],
    ));
    let mut default = patch("patch_int3_smp4", "strategy=int3 patch_cycles=2", "4", Some(int3_promise));
    default.forbid.push("WARNING: ftraced code called from NMI context".into());
    default.expect.push("nmi: watchdog source ipi-broadcast at 1000 Hz".into());
    v.push(default);
    // The NMI watchdog (fallback source under TCG, which has no PMU).
    let mut rate = ok("nmi_fallback_ticks_on_every_cpu", kernel_boot(elf, &format!("nmi_watchdog_hz={NMI_TEST_HZ}"), "4"), &[0, 1, 2, 3]);
    rate.expect.push("nmi: watchdog source ipi-broadcast at 100 Hz".into());
    rate.expect.push("because the performance counter does not count".into());
    rate.check = Some(nmi_rates_ok);
    v.push(rate);
    let mut off = ok("nmi_watchdog_off", kernel_boot(elf, "nmi_watchdog=0", "2"), &[0, 1]);
    off.expect.push("nmi: watchdog off (nmi_watchdog=0)".into());
    off.expect.push("nmi: rate: cpu1 apic 1: 0 NMIs/s".into());
    v.push(off);
    // The race a bool "IPI pending" flag lost: CPU 1's handler held for ten
    // watchdog periods; the NMI latched meanwhile is swallowed, none unknown.
    let mut race = ok("nmi_latched_duplicates_are_not_unknown", kernel_boot(elf, "selftest=nmi_race nmi_watchdog_hz=1000", "2"), &[0, 1]);
    race.check = Some(nmi_race_handled);
    v.push(race);
    // A machine whose only NIC has no driver (a Realtek RTL8139): the
    // device is named on the console (and in /status and on the screen) and
    // patching goes on to its verdict.
    let mut rtl = patch("net_unsupported_nic_named_and_patching_goes_on", "patch_cycles=1 patch_sites=200", "2", None);
    rtl.spec.net = Some((0, "rtl8139".into()));
    // USB devices without a network driver are listed too (QEMU's tablet:
    // 0627:0001, HID); the controller comes first on the bus (00:02.0).
    rtl.spec.extra.extend(["-device", "qemu-xhci,id=x", "-device", "usb-tablet,bus=x.0"].map(String::from));
    rtl.expect.push("net: 00:03.0 10ec:8139 Ethernet controller (class 02.00): no driver".into());
    rtl.expect.push("net: usb 00:02.0 port ".into());
    rtl.expect.push(" 0627:0001 class 03.00 HID (high speed): no driver (no CDC-ECM interface)".into());
    rtl.timeout = Duration::from_secs(120);
    v.push(rtl);
    // Interrupts nobody handles (a stray IPI to every CPU, the RTC through
    // the IO-APIC) are acknowledged and counted; every timer keeps ticking.
    let mut irq = ok("irq_unexpected_vectors_acknowledged", kernel_boot(elf, "selftest=irq_hygiene", "4"), &[0, 1, 2, 3]);
    irq.expect.push("irq: interrupt on vector 0x90, which nothing handles: acknowledged and counted".into());
    irq.expect.push("apic: IO-APIC id 0: 24 entries masked".into());
    irq.forbid.push("hard LOCKUP".into());
    irq.check = Some(irq_hygiene_ok);
    v.push(irq);
    let mut lockup = ok("nmi_hard_lockup_reported", kernel_boot(elf, "selftest=lockup watchdog_thresh=2 nmi_watchdog_hz=100", "4"), &[0, 1, 2, 3]);
    lockup.expect = vec![
        "selftest: cpu3 spins with interrupts off".into(),
        "NMI watchdog: hard LOCKUP on cpu3 ".into(),
        "CPU: 3 APIC: 3 <NMI>".into(),
        "] spin_with_interrupts_off+0x".into(),
    ];
    lockup.forbid = vec!["FATAL".into(), "panic".into(), "hard LOCKUP on cpu0".into(), "hard LOCKUP on cpu1".into(), "hard LOCKUP on cpu2".into()];
    lockup.check = Some(lockup_in_time);
    v.push(lockup);
    let mut nmi_path = patch("nmi_path_traced_disables_ftrace", "trace_nmi_path patch_cycles=3", "4", Some(nmi_path_disables));
    nmi_path.expect.extend(
        [
            "WARNING: ftraced code called from NMI context ",
            "Disabling ftraced. Boot with ftrace_keep_on_nmi to not disable.",
            " <NMI> [<",
            "? kernel::nmi::watchdog::on_nmi+0x",
            "ftrace: disabled: ftraced code called from NMI context; every site verified off",
        ]
        .map(String::from),
    );
    v.push(nmi_path);
    let mut keep = patch("nmi_path_traced_keep_on", "trace_nmi_path ftrace_keep_on_nmi patch_cycles=2", "4", Some(nmi_path_keeps_on));
    keep.expect.extend(["WARNING: ftraced code called from NMI context ", "ftrace_keep_on_nmi is set: tracing stays on."].map(String::from));
    v.push(keep);
    v.push(patch("patch_int3_smp2_sync_iret", "strategy=int3 sync=iret patch_cycles=2", "2", Some(int3_promise)));
    // patch_workers=1: cpu1 calls the traced functions, cpu2 and cpu3 idle;
    // the loop still reaches its verdict (what a download is measured against).
    let mut few = patch("patch_workers_limit_the_callers", "patch_workers=1 patch_cycles=1 patch_sites=500", "4", None);
    few.expect.extend(["appliance: cpu2 idles (patch_workers=1)", "appliance: cpu3 idles (patch_workers=1)"].map(String::from));
    few.forbid.push("appliance: cpu1 idles".into());
    v.push(few);
    let mut refused = patch("patch_sync_serialize_refused_without_cpuid_bit", "sync=serialize patch_cycles=1 patch_sites=500", "2", None);
    refused.spec.cpu = Some("qemu64".into());
    refused.expect.push("patch: sync=serialize refused: this CPU does not report SERIALIZE".into());
    refused.expect.push("strategy=int3 sync=cpuid".into());
    v.push(refused);
    let mut on_ap = patch("patch_loop_on_an_ap", "patch_cpu=2 patch_cycles=2", "3", Some(int3_promise));
    on_ap.expect.push("cpu2: patch: loop on cpu2".into());
    on_ap.expect.push("patch: verdict: ok: 2 cycles on cpu2".into());
    v.push(on_ap);
    v.push(patch("patch_stop_machine_smp4", "strategy=stop_machine patch_cycles=2 patch_sites=2000", "4", None));
    let mut naive = patch("patch_naive_oracle_catches_tears", "strategy=naive naive_gap_us=20 patch_cycles=2 patch_sites=300", "2", Some(naive_caught));
    naive.expect.push("patch: torn execution on cpu1".into());
    v.push(naive);
    // The benchmark mode runs to the end; its figures are reported, not
    // asserted, but an int3 batch must take three sync rounds whatever its size.
    let mut bench = ok("bench_mode_reports", kernel_boot(elf, "bench", "4"), &[0, 1, 2, 3]);
    bench.timeout = Duration::from_secs(300);
    bench.expect.extend(
        ["bench: done", "bench: batch_1_int3_sync_rounds 3", "bench: batch_10000_int3_sync_rounds 3", "bench: ipi_round_trip_all_cpus "].map(String::from),
    );
    v.push(bench);
    v.push(fatal(
        "selftest_panic_trace",
        "selftest=panic",
        &["Kernel panic on CPU 0: panicked at kernel/src/boot/main.rs", "selftest panic", "Call Trace:", "] kmain+0x"],
    ));
    // Hundreds of CPUs: every one online, the patching loop verified on all.
    for (name, n) in [("kernel_smp64_patching", 64u32), ("kernel_smp128_patching", 128)] {
        // A slower watchdog: 1,000 NMI IPIs a second to each of 128 CPUs is what cpu0 would do all day.
        let mut c = patch(name, "patch_cycles=1 patch_sites=100 nmi_watchdog_hz=10 status_secs=600", &n.to_string(), Some(many_cpus_trap));
        c.spec.mem_mib = 2048;
        // 128 virtual CPUs on one TCG thread, beside another guest: minutes.
        c.timeout = Duration::from_secs(600);
        c.expect.extend(healthy(&(0..n).collect::<Vec<_>>()));
        v.push(c);
    }
    // An APIC id above 255: online in x2APIC mode; refused by name (never
    // truncated to 0, the BSP's) when the kernel is told to use xAPIC.
    let mut big = patch("kernel_apic_id_256_x2apic", "patch_cycles=1 patch_sites=500", "1,maxcpus=260,sockets=2,cores=130", None);
    big.spec.machine = "q35-apic-id-256".into();
    big.spec.mem_mib = 1024;
    big.expect.extend(["acpi: processor uid 130 APIC id 256 (x2APIC entry, enabled)", "apic: X2Apic mode", "smp: 2 CPUs online (APIC ids: 0 256)"].map(String::from));
    v.push(big);
    // With more than 255 possible CPUs SeaBIOS itself enables x2APIC on the
    // BSP, as real firmware does: x2apic=off must not half-switch it back.
    let mut fw_on = patch("kernel_apic_id_256_firmware_x2apic", "x2apic=off patch_cycles=1 patch_sites=500", "1,maxcpus=260,sockets=2,cores=130", None);
    fw_on.spec.machine = "q35-apic-id-256".into();
    fw_on.spec.mem_mib = 1024;
    fw_on.expect.extend(["apic: the firmware left x2APIC enabled; staying in x2APIC mode", "apic: X2Apic mode", "smp: 2 CPUs online (APIC ids: 0 256)"].map(String::from));
    v.push(fw_on);
    // Firmware that enabled x2APIC (as on machines with more than 255 CPUs):
    // the kernel stays in x2APIC mode although asked for xAPIC, and says so.
    let mut fw = ok("x2apic_left_on_by_firmware", kernel_boot(elf, "x2apic=off x2apic_fw", "4"), &[0, 1, 2, 3]);
    fw.expect.push("apic: the firmware left x2APIC enabled; staying in x2APIC mode".into());
    fw.expect.push("apic: X2Apic mode".into());
    v.push(fw);
    x2apic_matrix(&mut v);
    v
}

/// One QEMU test: `Ok` carries a detail to print, `Err` what was wrong.
struct Job<'a> {
    name: &'static str,
    /// Runs alone (after the others): its check measures host-side deadlines.
    exclusive: bool,
    run: Box<dyn FnOnce() -> std::result::Result<String, String> + Send + 'a>,
}

/// How many QEMU guests at once: `XTASK_QEMU_JOBS`, else the host's cores.
fn qemu_jobs() -> usize {
    std::env::var("XTASK_QEMU_JOBS").ok().and_then(|v| v.parse().ok()).unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())).max(1)
}

/// Run a job; a panic in its check is its failure, not the run's end.
fn catch(run: Box<dyn FnOnce() -> std::result::Result<String, String> + Send + '_>) -> std::result::Result<String, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)).unwrap_or_else(|p| {
        Err(format!("the check panicked: {}", p.downcast_ref::<String>().cloned().or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_default()))
    })
}

/// Run the jobs, `workers` at a time, then the exclusive ones alone; print
/// each result as it comes. Returns (passed, failed).
fn run_jobs(jobs: Vec<Job>, workers: usize) -> (usize, usize) {
    let (exclusive, shared): (Vec<Job>, Vec<Job>) = jobs.into_iter().partition(|j| j.exclusive);
    let passed = std::sync::atomic::AtomicUsize::new(0);
    let failed = std::sync::atomic::AtomicUsize::new(0);
    let report = |name: &str, t: Instant, r: std::result::Result<String, String>| match r {
        Ok(detail) => {
            passed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let detail = if detail.is_empty() { format!("{:.2} s", t.elapsed().as_secs_f64()) } else { detail };
            println!("test qemu::{name} ... ok ({detail})");
        }
        Err(why) => {
            failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            println!("test qemu::{name} ... FAILED: {why}");
        }
    };
    let queue = std::sync::Mutex::new(shared.into_iter());
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                loop {
                    let Some(job) = queue.lock().expect("queue").next() else { break };
                    let t = Instant::now();
                    report(job.name, t, catch(job.run));
                }
            });
        }
    });
    for job in exclusive {
        let t = Instant::now();
        report(job.name, t, catch(job.run));
    }
    (passed.into_inner(), failed.into_inner())
}

/// Check one outcome; `Err` says what was wrong.
fn check(case: &Case, out: &qemu::Outcome) -> std::result::Result<(), String> {
    if out.timed_out {
        return Err(format!("timed out after {} s", case.timeout.as_secs()));
    }
    if out.exit != Some(case.exit) {
        return Err(format!("QEMU exit status {:?}, expected {}", out.exit, case.exit));
    }
    for e in &case.expect {
        if !out.log.contains(e.as_str()) {
            return Err(format!("serial log lacks `{e}`"));
        }
    }
    for f in &case.forbid {
        if let Some(line) = out.log.lines().find(|l| l.contains(f.as_str())) {
            return Err(format!("serial log has `{f}`: {line}"));
        }
    }
    match case.check {
        Some(c) => c(&out.log),
        None => Ok(()),
    }
}

/// When the serial log said `smp: N CPUs online`, from QEMU start.
fn smp_online_at(out: &qemu::Outcome) -> Option<Duration> {
    out.timeline.iter().find(|(_, l)| l.contains("CPUs online (APIC ids:")).map(|(t, _)| *t)
}

/// `cargo xtask test` options.
#[derive(clap::Args, Debug)]
pub struct TestArgs {
    /// Only the QEMU -kernel boots (no images)
    #[arg(long)]
    quick: bool,
    /// Skip clippy and the host tests
    #[arg(long)]
    no_host: bool,
    /// Run only the QEMU cases whose name contains this
    filter: Option<String>,
}

pub fn main(args: &TestArgs) -> Result<()> {
    let quick = args.quick;
    let filter = args.filter.as_ref();
    if !args.no_host {
        eprintln!("== clippy (host and bare-metal)");
        crate::build::clippy()?;
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        eprintln!("== host tests: cargo test");
        let st = Command::new(&cargo).current_dir(root()).args(["test", "--quiet"]).status()?;
        // The appliance's pure library (its binary is bare-metal only).
        let app = Command::new(&cargo).current_dir(root()).args(["test", "--quiet", "-p", "appliance", "--lib"]).status()?;
        if !st.success() || !app.success() {
            return Err("host tests failed".into());
        }
    }
    crate::deps::ensure_all()?;
    eprintln!("== QEMU integration tests (TCG)");
    let elf = crate::build::build_elf()?;
    let iso: PathBuf = crate::build::out_dir().join("test.iso");
    crate::image::make_iso(&elf, "test_exit patch=off", &iso)?;
    // The same image asking GRUB for the highest address it allows, so the
    // kernel runs away from its link address (relocated).
    let high_elf = crate::build::out_dir().join("appliance-high.elf");
    let mut image = std::fs::read(&elf)?;
    kernel::boot::image::set_reloc_preference(&mut image, kernel::boot::image::RELOC_PREFER_HIGH)?;
    std::fs::write(&high_elf, &image)?;
    let high_iso: PathBuf = crate::build::out_dir().join("test-high.iso");
    crate::image::make_iso(&high_elf, RELOCATED_CMDLINE, &high_iso)?;
    let logs = root().join("target/test-logs");
    std::fs::create_dir_all(&logs)?;

    let mut all = cases(&elf, &iso);
    all.push(relocated_case(&high_iso));
    let mut skipped = Vec::new();
    match kvm_cases(&elf) {
        Ok(c) => all.extend(c),
        Err(why) => skipped.push(format!("kvm_*: 3 tests skipped: no hardware-assisted KVM here ({why})")),
    }
    if quick {
        all.retain(|c| matches!(c.spec.boot, Boot::Kernel { .. }));
    }
    if let Some(f) = filter {
        all.retain(|c| c.name.contains(f.as_str()));
    }
    // Every QEMU test is a job; independent ones run `jobs` at a time (each
    // single-threaded TCG guest keeps one host core busy), the ones marked
    // exclusive (their checks measure host-side deadlines) one at a time after.
    let timings: std::sync::Mutex<Vec<(&'static str, Duration)>> = std::sync::Mutex::new(Vec::new());
    let t0 = Instant::now();
    let mut jobs: Vec<Job> = Vec::new();
    for case in &all {
        let (logs, timings) = (&logs, &timings);
        jobs.push(Job {
            name: case.name,
            // The rate checks measure the guest's own rates: alone on the host.
            exclusive: case.name.starts_with("nmi_fallback_ticks") || case.name == "irq_unexpected_vectors_acknowledged",
            run: Box::new(move || {
                let log = logs.join(format!("{}.log", case.name));
                let out = qemu::spawn(&case.spec, &log, false).map_err(|e| e.to_string())?.wait(case.timeout);
                match check(case, &out) {
                    Ok(()) => {
                        let at = smp_online_at(&out);
                        if let Some(d) = at {
                            timings.lock().expect("timings").push((case.name, d));
                        }
                        Ok(format!("{:.2} s{}", out.elapsed.as_secs_f64(), at.map(|d| format!(", smp online at {:.2} s", d.as_secs_f64())).unwrap_or_default()))
                    }
                    Err(why) => {
                        Err(format!("{why} (log: {})\n{}", log.display(), log_tail(&out.log, 25)))
                    }
                }
            }),
        });
    }
    let n_cases = all.len();
    // Cases driven from the host while the guest runs (HTTP, QMP, the soak
    // tool): (name, part of --quick, exclusive, the check; Ok carries a detail).
    type Driven<'a> = (&'static str, bool, bool, Box<dyn FnOnce() -> std::result::Result<String, String> + Send + 'a>);
    let (elf, logs) = (&elf, &logs);
    let mut driven: Vec<Driven> = Vec::new();
    for (name, nic, cpu) in [
        ("net_virtio_status", "virtio-net-pci", None),
        ("net_virtio_status_xapic", "virtio-net-pci", Some("max,-x2apic")),
        ("net_virtio_legacy_status", "virtio-net-pci,disable-modern=on", None),
        ("net_e1000_status", "e1000", None),
        ("net_e1000e_status", "e1000e", None),
        ("net_igb_status", "igb", None),
        ("net_usb_xhci_cdc_ecm_status", "usb-net", None),
    ] {
        driven.push((name, nic == "virtio-net-pci", false, Box::new(move || net_case(elf, nic, cpu, logs).map(|()| String::new()))));
    }
    for (name, boot) in [("screen_vga_text", ScreenBoot::Kernel), ("screen_grub_bios_text", ScreenBoot::GrubBios), ("screen_uefi_framebuffer", ScreenBoot::GrubUefi)] {
        let log = logs.join(format!("{name}.log"));
        driven.push((name, boot == ScreenBoot::Kernel, false, Box::new(move || screen_case(elf, boot, &log).map_err(|e| format!("{e} (log: {})", log.display())))));
    }
    for (name, boot, append, want) in NO_SERIAL_CASES {
        let log = logs.join(format!("{name}.log"));
        driven.push((name, boot == ScreenBoot::Kernel, false, Box::new(move || no_serial_case(elf, boot, append, want, &log))));
    }
    for (name, nic) in [("net_link_flap_virtio", "virtio-net-pci"), ("net_link_flap_e1000", "e1000")] {
        driven.push((name, nic == "virtio-net-pci", false, Box::new(move || link_case(elf, nic, logs))));
    }
    for (name, machine, append, want, about_others) in CLOCK_CASES {
        driven.push((name, false, false, Box::new(move || clock_case(elf, name, machine, append, want, about_others, logs))));
    }
    driven.push(("remote_soak_target_and_fetch", false, false, Box::new(move || remote_case(elf, logs))));
    driven.push(("net_nic_choice_by_kind_and_address", false, false, Box::new(move || nic_choice_case(elf, logs))));
    driven.push(("net_first_link_up_serves", false, false, Box::new(move || first_link_case(elf, logs))));
    driven.push(("live_page_in_headless_chromium", false, false, Box::new(move || live_page_case(elf, logs))));
    driven.push(("trace_dat_read_by_trace_cmd_equals_ctf", true, false, Box::new(move || trace_dat_case(elf, logs))));
    driven.push(("nmi_unknown_reported", false, false, Box::new(move || unknown_nmi_case(elf, logs))));
    driven.push(("elf_vector_state_is_xmm_only", true, false, Box::new(move || elf_vector_state_case(elf))));
    driven.push(("net_static_misconfigured", false, true, Box::new(move || static_misconfig_case(elf, logs))));
    driven.push(("prometheus_rules_fire_and_stay_silent", true, false, Box::new(prometheus_rules_case)));
    for (name, nic, firmware) in [("netboot_bios_ipxe_e1000", "e1000", Firmware::Bios), ("netboot_bios_ipxe_virtio", "virtio-net-pci", Firmware::Bios), ("netboot_uefi_grub_e1000", "e1000", Firmware::Uefi)] {
        driven.push((name, false, false, Box::new(move || netboot_case(elf, name, nic, firmware, logs))));
    }
    driven.push(("prometheus_scrapes_two_appliances", false, false, Box::new(move || prometheus_two_guests_case(elf, logs))));
    for f in faults::FAULTS {
        driven.push((f.name, false, false, Box::new(move || faults::run(elf, f, logs))));
    }
    driven.push(("net_starvation_never_read_and_slowloris", false, true, Box::new(move || starvation_case(elf, logs))));
    for (name, overflow) in [("trace_accounting_overwrite", "overwrite"), ("trace_accounting_drop", "drop")] {
        driven.push((name, overflow == "overwrite", false, Box::new(move || accounting_case(elf, overflow, logs))));
    }
    for (name, crash) in [("soak_two_models_report", false), ("soak_crash_is_a_failed_run", true)] {
        driven.push((name, false, true, Box::new(move || soak_case(&logs.join(name), crash).map(|()| String::new()))));
    }
    for (name, in_quick, exclusive, run) in driven {
        if (quick && !in_quick) || filter.is_some_and(|f| !name.contains(f.as_str())) {
            continue;
        }
        jobs.push(Job { name, exclusive, run });
    }
    let n_jobs = jobs.len();
    let (passed, failed) = run_jobs(jobs, qemu_jobs());
    for s in &skipped {
        println!("test qemu::{s}");
    }
    let mut timings = timings.into_inner().expect("timings");
    timings.sort();
    let report: String = timings.iter().map(|(n, d)| format!("{n} {:.3}\n", d.as_secs_f64())).collect();
    std::fs::write(logs.join("boot-times.txt"), report)?;
    println!("QEMU integration tests: {n_jobs} ({n_cases} boots checked by their log, the rest driven from the host) in {:.1} s", t0.elapsed().as_secs_f64());
    println!("{passed} passed, {failed} failed, {} skipped", if skipped.is_empty() { 0 } else { 3 });
    if failed > 0 {
        return Err(format!("{failed} QEMU test(s) failed").into());
    }
    Ok(())
}
