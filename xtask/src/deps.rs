//! Host tools the images and QEMU runs need: found, installed (Debian, as
//! root, with apt-get), or named exactly when neither is possible.

use std::path::Path;
use std::process::Command;

use crate::Result;

/// (program or file, Debian package).
const TOOLS: &[(&str, &str)] = &[
    ("qemu-system-x86_64", "qemu-system-x86"),
    ("grub-mkrescue", "grub-common"),
    ("/usr/lib/grub/i386-pc/modinfo.sh", "grub-pc-bin"),
    ("/usr/lib/grub/x86_64-efi/modinfo.sh", "grub-efi-amd64-bin"),
    ("xorriso", "xorriso"),
    ("mformat", "mtools"),
    ("/usr/share/OVMF/OVMF_CODE_4M.fd", "ovmf"),
    ("babeltrace2", "babeltrace2"),
    // The soak report's plots draw their text with it.
    ("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", "fonts-dejavu-core"),
];

fn present(tool: &str) -> bool {
    if tool.starts_with('/') {
        return Path::new(tool).exists();
    }
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false)
}

/// Missing tools as (tool, package).
pub fn missing() -> Vec<(&'static str, &'static str)> {
    TOOLS.iter().copied().filter(|(t, _)| !present(t)).collect()
}

/// Make sure every tool is there: install what is missing when we can, else
/// say exactly what to install.
pub fn ensure_all() -> Result<()> {
    let miss = missing();
    if miss.is_empty() {
        return Ok(());
    }
    let mut pkgs: Vec<&str> = miss.iter().map(|(_, p)| *p).collect();
    pkgs.dedup();
    let is_root = Command::new("id").arg("-u").output().map(|o| o.stdout.starts_with(b"0")).unwrap_or(false);
    let has_apt = present("apt-get");
    if is_root && has_apt {
        eprintln!("xtask: installing {}", pkgs.join(" "));
        let ok = Command::new("apt-get").arg("update").arg("-qq").status()?.success()
            && Command::new("apt-get")
                .args(["install", "-y", "-qq", "--no-install-recommends"])
                .args(&pkgs)
                .env("DEBIAN_FRONTEND", "noninteractive")
                .status()?
                .success();
        if ok && missing().is_empty() {
            return Ok(());
        }
    }
    let names: Vec<&str> = missing().iter().map(|(t, _)| *t).collect();
    Err(format!(
        "missing host tools: {}. Install them with: sudo apt-get install {}",
        names.join(", "),
        pkgs.join(" ")
    )
    .into())
}
