//! Under hardware KVM when there is one.

use std::path::Path;
use std::time::Duration;

use super::harness::*;
use super::nmi::{NMI_TEST_HZ, nmi_rates_ok};
use super::patching::int3_promise;
use crate::qemu::{self, Accel, EXIT_SUCCESS, Spec};

/// Under hardware KVM when there is one: a boot, the patching loop, and the
/// watchdog (whose source depends on the virtual PMU; the log says which and
/// why). `Err(reason)` when skipped.
pub(super) fn kvm_cases(elf: &Path) -> std::result::Result<Vec<Case>, String> {
    let why = qemu::kvm_hardware()?;
    eprintln!("kvm: {why}");
    let kvm = |mut s: Spec| {
        s.accel = Accel::Kvm;
        s
    };
    let base = |name, spec, expect: Vec<String>, check| Case {
        name,
        spec,
        timeout: Duration::from_secs(120),
        exit: EXIT_SUCCESS,
        expect,
        forbid: never_on_a_healthy_boot(),
        check,
    };
    let mut watchdog = healthy(&[0, 1]);
    watchdog.push("nmi: watchdog source ".into());
    watchdog.push("nmi: rate: cpu1 apic 1: ".into());
    // With `-cpu host,pmu=on` the virtual PMU is the source, on every CPU, at its rate.
    fn pmu_source(log: &str) -> std::result::Result<(), String> {
        let line = log.lines().find(|l| l.contains("nmi: watchdog source ")).ok_or("no watchdog source line")?;
        if line.contains("ipi-broadcast") || log.contains("this CPU gets watchdog NMI IPIs instead") {
            return Err(format!("expected the virtual PMU as the watchdog source on every CPU: {line}"));
        }
        nmi_rates_ok(log)
    }
    Ok(vec![
        base("kvm_kernel_smp2", kvm(kernel_boot(elf, "", "2")), healthy(&[0, 1]), None),
        base("kvm_watchdog_smp2", kvm(kernel_boot(elf, &format!("nmi_watchdog_hz={NMI_TEST_HZ}"), "2")), watchdog, Some(pmu_source)),
        base(
            "kvm_patch_int3_smp2",
            kvm(kernel_boot(elf, "patch=on patch_interval_us=0 patch_cycles=3", "2")),
            vec!["patch: verdict: ok".into()],
            Some(int3_promise),
        ),
    ])
}
