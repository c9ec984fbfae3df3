//! Boot and SMP: many CPUs, both APIC modes, a relocated image.

use std::path::Path;
use std::time::Duration;

use super::harness::*;
use super::patching::int3_promise;
use crate::qemu::{Boot, EXIT_SUCCESS, Spec};

/// Many CPUs, a short loop: no tear, and at least half the CPUs took int3 emulations.
pub(super) fn many_cpus_trap(log: &str) -> std::result::Result<(), String> {
    let v = verdict(log)?;
    let online = number_after(log, "smp: ").ok_or("no `smp: N CPUs online` line")?;
    if v.torn != 0 || v.cpus_with_int3 * 2 < online {
        return Err(format!("torn={}, int3 emulations on {} of {online} CPUs", v.torn, v.cpus_with_int3));
    }
    Ok(())
}

/// The cases run in both APIC modes: QEMU 10's `-cpu max` offers x2APIC
/// under TCG (the kernel uses it), and a twin of each on the same model
/// without it (`-x2apic`) runs in xAPIC mode. Each says which mode it saw.
pub(super) const X2APIC_MATRIX: [&str; 10] = [
    "kernel_smp4",
    "kernel_smp6_sparse_apic_ids",
    "patch_int3_smp4",
    "patch_stop_machine_smp4",
    "patch_naive_oracle_catches_tears",
    "nmi_fallback_ticks_on_every_cpu",
    "nmi_hard_lockup_reported",
    "nmi_path_traced_disables_ftrace",
    "nmi_path_traced_keep_on",
    "xcall_timeout_names_the_silent_cpu",
];

pub(super) fn x2apic_matrix(v: &mut Vec<Case>) {
    let mut twins = Vec::new();
    for c in v.iter_mut().filter(|c| X2APIC_MATRIX.contains(&c.name)) {
        let mut t = c.clone();
        t.name = Box::leak(format!("{}_xapic", c.name).into_boxed_str());
        t.spec.cpu = Some(format!("{},-x2apic", c.spec.cpu.as_deref().unwrap_or("max")));
        t.expect.push("apic: XApic mode".into());
        twins.push(t);
        c.expect.push("apic: X2Apic mode".into());
    }
    v.extend(twins);
}

/// The relocated boot's command line: patching with the NMI-path sites, so
/// the trace-site registry (relocated pointers), int3 emulation and the
/// symbol table (the warning names `lapic_wd_event`) all run at the new address.
pub(super) const RELOCATED_CMDLINE: &str = "test_exit patch=on patch_interval_us=0 patch_cycles=3 trace_nmi_path ftrace_keep_on_nmi";

/// GRUB (BIOS, CD) loads the image at the highest address the relocatable
/// tag allows: the kernel reports itself moved, brings up both CPUs (the AP
/// trampoline jumps to the relocated code), patches with a correct verdict,
/// and names NMI-context functions in its warning.
pub(super) fn relocated_case(iso: &Path) -> Case {
    let mut spec = Spec::new(Boot::Cdrom(iso.to_path_buf()));
    spec.smp = "2".into();
    fn moved(log: &str) -> std::result::Result<(), String> {
        let line = log.lines().find(|l| l.contains("mem: ") && l.contains("kernel image ")).ok_or("no kernel image line")?;
        let moved = line.split("(moved +0x").nth(1).and_then(|r| r.split(' ').next()).and_then(|h| u64::from_str_radix(h, 16).ok()).ok_or_else(|| format!("no move in `{line}`"))?;
        if moved == 0 || moved % kernel::boot::image::RELOC_ALIGN != 0 {
            return Err(format!("GRUB did not relocate the image as asked (moved {moved:#x}): `{line}`"));
        }
        int3_promise(log)
    }
    let mut expect = healthy(&[0, 1]);
    expect.extend(["patch: verdict: ok".into(), "WARNING: ftraced code called from NMI context lapic_wd_event+0x".into()]);
    Case {
        name: "grub_bios_relocated_high",
        spec,
        timeout: Duration::from_secs(300),
        exit: EXIT_SUCCESS,
        expect,
        forbid: ["FATAL", "panic", "BOOT FAILED", "did not come up", "failed to start", "sync round failed", "rendezvous failed"].iter().map(|s| s.to_string()).collect(),
        check: Some(moved),
    }
}

/// The PCI scan's cost from its boot line (`pci: N functions found through
/// ECAM on B buses (...), R configuration reads`): bus 0 and the bus behind
/// the root port, far below the 65,536 probes of every bus and function.
pub(super) fn pci_scan_is_cheap(log: &str) -> std::result::Result<(), String> {
    let line = log.lines().find(|l| l.contains("pci: ") && l.contains(" configuration reads")).ok_or("no `pci: ... configuration reads` line")?;
    let buses = number_after(line, " on ").ok_or("no bus count")?;
    let reads = number_after(line, "bridges), ").ok_or("no read count")?;
    if buses != 2 || reads > 200 {
        return Err(format!("expected bus 0 and bus 1 in under 200 reads: {line}"));
    }
    Ok(())
}
