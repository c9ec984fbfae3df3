//! Firmware and clocks: the TSC's time reference on machines without some of them, against the host's clock.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::qemu::{self, Boot, Spec};

/// The TSC's time reference on machines without some of them: (test, QEMU
/// machine from qemu.toml, extra command line, the reference that must be
/// chosen, a line the boot log must have about the others).
pub(super) const CLOCK_CASES: [(&str, &str, &str, &str, &str); 4] = [
    ("clock_without_pit_uses_hpet", "q35-no-pit", "", "hpet", "pit: absent"),
    ("clock_without_hpet_uses_pm_timer", "q35-no-hpet", "", "pm-timer", "hpet: no HPET table"),
    ("clock_pm_timer_only", "q35-pm-timer-only", "", "pm-timer", "pit: absent"),
    ("clock_forced_pit", "q35", "clock=pit", "pit", "hpet "),
];

/// Boot with one set of time references, and check against the host's
/// clock: the hard-lockup selftest reports within its threshold (2 s, by the
/// host), and the guest's uptime follows the host's clock within 2% over 30 s.
pub(super) fn clock_case(elf: &Path, name: &str, machine: &str, append: &str, want: &str, about_others: &str, logs: &Path) -> std::result::Result<String, String> {
    let port = qemu::free_port().map_err(|e| e.to_string())?;
    // No test_exit: the appliance keeps serving after boot (QEMU is killed at the end).
    let mut spec = Spec::new(Boot::Kernel {
        elf: elf.to_path_buf(),
        append: format!("patch=off selftest=lockup watchdog_thresh=2 nmi_watchdog_hz=100 net_cpu=patch ip=10.0.2.15/24 gw=10.0.2.2 {append}"),
    });
    spec.machine = machine.into();
    spec.net = Some((port, "virtio-net-pci".into()));
    let mut run = qemu::spawn(&spec, &logs.join(format!("{name}.log")), false).map_err(|e| e.to_string())?;
    let mut log = String::new();
    run.wait_line(Duration::from_secs(60), &mut log, |l| l.contains("selftest: cpu3 spins with interrupts off")).ok_or("no `selftest: cpu3 spins` line")?;
    let spin = Instant::now();
    run.wait_line(run.started.elapsed() + Duration::from_secs(10), &mut log, |l| l.contains("hard LOCKUP on cpu3 ")).ok_or("no hard LOCKUP report within 10 s")?;
    let lockup_s = spin.elapsed().as_secs_f64();
    if !(1.9..=4.0).contains(&lockup_s) {
        return Err(format!("hard LOCKUP reported {lockup_s:.2} s after the CPU stopped (host clock), threshold 2 s"));
    }
    let line = log.lines().find(|l| l.contains("time: TSC ")).ok_or("no `time: TSC` line")?.to_string();
    if !line.contains(&format!(" from {want} ")) {
        return Err(format!("expected the TSC calibrated from {want}: {line}"));
    }
    let others = log.lines().find(|l| l.contains("time: other references: ")).unwrap_or_default().to_string();
    if !others.contains(about_others) {
        return Err(format!("expected `{about_others}` among the other references: {others}"));
    }
    if !log.contains("net: listening on http://") {
        run.wait_line(run.started.elapsed() + Duration::from_secs(30), &mut log, |l| l.contains("net: listening on http://")).ok_or("the service never listened")?;
    }
    // The guest's uptime against the host's clock, each read taken at the
    // middle of its request.
    let sample = || -> std::result::Result<(f64, f64, appliance::contract::Status), String> {
        let t = Instant::now();
        let st = qemu::status(port)?;
        let host = t.elapsed().as_secs_f64() / 2.0;
        Ok((host, st.uptime_ns as f64 / 1e9, st))
    };
    let origin = Instant::now();
    let (h1, g1, st) = sample()?;
    if st.clock.reference != want || st.cpus_online != 4 {
        return Err(format!("/status: clock {:?}, {} CPUs online", st.clock, st.cpus_online));
    }
    // A 30 s measuring interval (nothing to wait for: the guest keeps running).
    let _ = run.wait_line(run.started.elapsed() + Duration::from_secs(30), &mut log, |l| l.contains("FATAL") || l.contains("panic"));
    let off = origin.elapsed().as_secs_f64();
    let (h2, g2, _) = sample()?;
    let host = off + h2 - h1;
    let ratio = (g2 - g1) / host;
    if (ratio - 1.0).abs() > 0.02 {
        return Err(format!("guest uptime advanced {:.3} s while the host's clock advanced {host:.3} s ({:+.2}%)", g2 - g1, (ratio - 1.0) * 100.0));
    }
    Ok(format!("{want} {:.3} MHz, lockup after {lockup_s:.2} s, guest/host clock {:+.3}%", st.clock.tsc_hz as f64 / 1e6, (ratio - 1.0) * 100.0))
}
