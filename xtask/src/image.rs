//! The hybrid BIOS+UEFI boot image: GRUB (multiboot2) and the ELF, made by
//! `grub-mkrescue`, which writes an ISO 9660 image with an MBR and a GPT, an
//! El Torito BIOS entry and an EFI system partition, so the same file boots
//! from a CD and when written raw to a USB stick, under BIOS and UEFI.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::build::{build_elf, out_dir};
use crate::Result;

/// The GRUB configuration: no menu delay, console on serial and screen, the
/// kernel command line as given. The video drivers are loaded so that under
/// UEFI GRUB hands the kernel the GOP framebuffer (BIOS machines stay in VGA text).
pub fn grub_cfg(cmdline: &str) -> String {
    format!(
        "set timeout=0\nset default=0\nserial --unit=0 --speed=115200\nterminal_input serial console\nterminal_output serial console\n\
         insmod all_video\nmenuentry \"trace appliance\" {{\n  multiboot2 /boot/appliance.elf {cmdline}\n  boot\n}}\n"
    )
}

/// Make an ISO of an already built ELF with this command line.
pub fn make_iso(elf: &Path, cmdline: &str, out: &Path) -> Result<()> {
    crate::deps::ensure_all()?;
    let check = Command::new("grub-file").arg("--is-x86-multiboot2").arg(elf).status()?;
    if !check.success() {
        return Err(format!("{} has no valid multiboot2 header (grub-file)", elf.display()).into());
    }
    let dir = crate::qemu::TempDir::new("iso")?;
    std::fs::create_dir_all(dir.0.join("boot/grub"))?;
    std::fs::copy(elf, dir.0.join("boot/appliance.elf"))?;
    std::fs::write(dir.0.join("boot/grub/grub.cfg"), grub_cfg(cmdline))?;
    let output = Command::new("grub-mkrescue").arg("-o").arg(out).arg(&dir.0).output()?;
    if !output.status.success() {
        return Err(format!("grub-mkrescue failed:\n{}", String::from_utf8_lossy(&output.stderr)).into());
    }
    Ok(())
}

/// `cargo xtask image`: build the ELF and `target/appliance/appliance.iso`
/// (with `cmdline` baked into grub.cfg, default none).
pub fn build_image(cmdline: Option<&str>) -> Result<PathBuf> {
    let elf = build_elf()?;
    let out = out_dir().join("appliance.iso");
    make_iso(&elf, cmdline.unwrap_or(""), &out)?;
    eprintln!("xtask: {} ({} KiB): BIOS+UEFI, CD or USB stick", out.display(), std::fs::metadata(&out)?.len() / 1024);
    Ok(out)
}
