//! Booting over the network, as labs do (`cargo xtask netboot`): BIOS
//! firmware's iPXE (QEMU's NIC option ROMs, Debian's `ipxe-qemu`) runs
//! `boot.ipxe` from the user network's TFTP server and loads the kernel as
//! Multiboot v1; UEFI firmware (OVMF) loads GRUB's `core.efi`, whose
//! `grub.cfg` loads it as Multiboot2. Each boot must reach the patching
//! loop's verdict and answer `/status`, with the loader the way it came.

use std::path::Path;
use std::time::Duration;

use super::harness::seen_or_wait;
use crate::qemu::{self, Boot, Firmware, Spec};

/// Boot `folder` (written by `netboot::write`) from the network with `nic`
/// and `firmware`; the console must name `loader` and reach the verdict.
pub(super) fn netboot_case(elf: &Path, name: &str, nic: &str, firmware: Firmware, logs: &Path) -> std::result::Result<String, String> {
    let folder = logs.join(format!("{name}-tftp"));
    let _ = std::fs::remove_dir_all(&folder);
    crate::netboot::write(&folder, elf, "10.0.2.2", "patch=on patch_cycles=2 patch_interval_us=0").map_err(|e| e.to_string())?;
    let (bootfile, loader) = match firmware {
        Firmware::Bios => (crate::netboot::IPXE_SCRIPT, "loader `iPXE"),
        Firmware::Uefi => (crate::netboot::GRUB_EFI, "loader `GRUB"),
    };
    let port = qemu::free_port().map_err(|e| e.to_string())?;
    let mut spec = Spec::new(Boot::Net { dir: folder.clone(), bootfile: bootfile.into() });
    spec.smp = "2".into();
    spec.firmware = firmware;
    spec.net = Some((port, nic.into()));
    let log_path = logs.join(format!("{name}.log"));
    let mut run = qemu::spawn(&spec, &log_path, false).map_err(|e| e.to_string())?;
    let mut log = String::new();
    let fail = |why: String, log: &str| format!("{why} (log: {}; last lines: {})", log_path.display(), log.lines().rev().take(6).collect::<Vec<_>>().join(" | "));
    let boot_line = run.wait_line(Duration::from_secs(240), &mut log, |l| l.contains(" loader `")).ok_or_else(|| fail("the kernel never started".into(), &log))?;
    if !boot_line.contains(loader) {
        return Err(fail(format!("expected {loader}...: {boot_line}"), &log));
    }
    run.wait_line(run.started.elapsed() + Duration::from_secs(60), &mut log, |l| l.contains("net: listening on http://")).ok_or_else(|| fail("the service never listened".into(), &log))?;
    let st = qemu::status(port)?;
    if st.cpus_online != 2 {
        return Err(format!("/status: {} CPUs online", st.cpus_online));
    }
    // The loop may end before the service listens.
    let until = run.started.elapsed() + Duration::from_secs(240);
    let verdict = seen_or_wait(&mut run, &mut log, until, |l| l.contains("patch: verdict: ")).ok_or_else(|| fail("no verdict".into(), &log))?;
    if !verdict.contains("verdict: ok") {
        return Err(fail(verdict, &log));
    }
    Ok(format!("{} over TFTP, /status answered, verdict ok", boot_line.split(" loader `").nth(1).and_then(|r| r.split('`').next()).unwrap_or("?")))
}
