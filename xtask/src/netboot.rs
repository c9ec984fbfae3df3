//! `cargo xtask netboot`: a TFTP folder that boots the appliance over the
//! network, the way labs boot machines (issue 31):
//! - BIOS machines through iPXE (the PXE ROM of most NICs, or chained): a
//!   `boot.ipxe` script loads `appliance.elf` as a Multiboot v1 kernel with
//!   the command line after its name (iPXE's `src/arch/x86/image/multiboot.c`
//!   loads ELF64 images through the header's a.out-kludge fields, which the
//!   kernel's Multiboot v1 header carries; at most 512 bytes of command line);
//! - UEFI machines through GRUB (`grub-mknetdir`, Debian's
//!   `grub-efi-amd64-bin`): `boot/grub/x86_64-efi/core.efi` is the DHCP boot
//!   file, and its `grub.cfg` loads the kernel with `multiboot2 (tftp)/...`.
//!
//! QEMU's user network serves the folder over TFTP (`-netdev
//! user,tftp=DIR,bootfile=FILE`, `-boot n`); a lab points its DHCP server's
//! boot file at the same names (docs/fleet.md has a dnsmasq example).

use std::path::{Path, PathBuf};

use crate::{Result, root};

/// The iPXE script's name and the kernel's inside the folder.
pub const IPXE_SCRIPT: &str = "boot.ipxe";
pub const KERNEL: &str = "appliance.elf";
/// The UEFI boot file `grub-mknetdir` makes, inside the folder.
pub const GRUB_EFI: &str = "boot/grub/x86_64-efi/core.efi";
/// iPXE passes at most this many bytes of command lines (the image's name
/// included; `multiboot.c`, `MB_MAX_CMDLINE`).
pub const IPXE_CMDLINE_MAX: usize = 512;

/// `cargo xtask netboot` options.
#[derive(clap::Args, Debug)]
pub struct NetbootArgs {
    /// The folder to write (default target/netboot)
    #[arg(long)]
    out: Option<PathBuf>,
    /// Kernel command line
    #[arg(long, default_value = "", allow_hyphen_values = true)]
    append: String,
    /// The TFTP server's address as the booting machine sees it
    #[arg(long, default_value = "10.0.2.2")]
    server: String,
}

/// The iPXE script: fetch and boot the kernel with `append`.
pub fn ipxe_script(server: &str, append: &str) -> std::result::Result<String, String> {
    let line = format!("kernel tftp://{server}/{KERNEL} {append}");
    if line.len() - "kernel ".len() > IPXE_CMDLINE_MAX {
        return Err(format!("iPXE passes at most {IPXE_CMDLINE_MAX} bytes of command line; this one has {}", line.len() - "kernel ".len()));
    }
    Ok(format!("#!ipxe\n# cargo xtask netboot: the trace appliance over TFTP\n{}\nboot\n", line.trim_end()))
}

/// GRUB's configuration for the network boot: the kernel from the TFTP
/// server GRUB was loaded from.
pub fn grub_cfg(append: &str) -> String {
    format!(
        "# cargo xtask netboot: the trace appliance over TFTP (UEFI)\nset timeout=0\ninsmod multiboot2\nmenuentry \"trace appliance\" {{\n    multiboot2 (tftp)/{KERNEL} {append}\n    boot\n}}\n"
    )
}

/// Write the folder: the kernel, the iPXE script, and GRUB's netboot tree
/// with its configuration. Returns the folder.
pub fn write(dir: &Path, elf: &Path, server: &str, append: &str) -> Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    std::fs::copy(elf, dir.join(KERNEL))?;
    std::fs::write(dir.join(IPXE_SCRIPT), ipxe_script(server, append)?)?;
    let out = std::process::Command::new("grub-mknetdir")
        .arg(format!("--net-directory={}", dir.display()))
        .arg("--subdir=boot/grub")
        .args(["-d", "/usr/lib/grub/x86_64-efi"])
        .output()
        .map_err(|e| format!("grub-mknetdir: {e} (Debian: grub-common, grub-efi-amd64-bin)"))?;
    if !out.status.success() {
        return Err(format!("grub-mknetdir failed: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    std::fs::write(dir.join("boot/grub/grub.cfg"), grub_cfg(append))?;
    Ok(dir.to_path_buf())
}

pub fn main(a: &NetbootArgs) -> Result<()> {
    crate::deps::ensure_all()?;
    let elf = crate::build::build_elf()?;
    let dir = a.out.clone().unwrap_or_else(|| root().join("target/netboot"));
    write(&dir, &elf, &a.server, &a.append)?;
    println!("{}: BIOS boot file {IPXE_SCRIPT} (iPXE), UEFI boot file {GRUB_EFI} (GRUB); docs/fleet.md says how to serve it", dir.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ipxe_script_boots_the_kernel_with_its_command_line() {
        let s = ipxe_script("10.0.2.2", "patch_cycles=1 test_exit").unwrap();
        assert_eq!(s.lines().next(), Some("#!ipxe"), "iPXE runs a file as a script only after this line");
        assert!(s.contains("\nkernel tftp://10.0.2.2/appliance.elf patch_cycles=1 test_exit\nboot\n"), "{s}");
        assert!(ipxe_script("10.0.2.2", &"x".repeat(600)).is_err());
    }

    #[test]
    fn grub_loads_the_kernel_from_its_tftp_server() {
        let c = grub_cfg("ip=10.0.2.15/24");
        assert!(c.contains("multiboot2 (tftp)/appliance.elf ip=10.0.2.15/24\n"), "{c}");
    }
}
