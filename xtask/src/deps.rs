//! Host tools the images and QEMU runs need: found, installed (Debian, as
//! root, with apt-get), or named exactly when neither is possible.

use std::path::Path;
use std::process::Command;

use crate::Result;

/// (program or file, Debian package).
const TOOLS: &[(&str, &str)] = &[
    ("grub-mkrescue", "grub-common"),
    ("/usr/lib/grub/i386-pc/modinfo.sh", "grub-pc-bin"),
    ("/usr/lib/grub/x86_64-efi/modinfo.sh", "grub-efi-amd64-bin"),
    ("xorriso", "xorriso"),
    ("mformat", "mtools"),
    ("/usr/share/OVMF/OVMF_CODE_4M.fd", "ovmf"),
    ("babeltrace2", "babeltrace2"),
    // Disassembles the image in a test.
    ("objdump", "binutils"),
    // Reads /trace.dat in a test.
    ("trace-cmd", "trace-cmd"),
    // Prometheus's linter checks /metrics.
    ("promtool", "prometheus"),
    // Renders the live page (`GET /`) in a test.
    ("chromium", "chromium"),
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

/// What only `cargo xtask bench` needs: the silicon harness's LTTng-UST
/// comparison builds a tracepoint provider and records it in a session.
/// What `cargo xtask stress` runs against the service besides its own
/// clients: ApacheBench and slowhttptest (Debian's packages).
pub const STRESS_TOOLS: &[(&str, &str)] = &[("ab", "apache2-utils"), ("slowhttptest", "slowhttptest")];

pub const BENCH_TOOLS: &[(&str, &str)] = &[("cc", "gcc"), ("lttng", "lttng-tools"), ("/usr/include/x86_64-linux-gnu/lttng/tracepoint.h", "liblttng-ust-dev")];

/// Missing tools among `tools` as (tool, package).
fn missing_of(tools: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    tools.iter().copied().filter(|(t, _)| !present(t)).collect()
}

/// The oldest QEMU the tests and runs accept: 10 emulates x2APIC under TCG,
/// more than 255 CPUs, igb, `pit=off`.
pub const QEMU_MAJOR: u32 = 10;

/// The major version of the QEMU on PATH.
pub fn qemu_major() -> Option<u32> {
    let out = Command::new("qemu-system-x86_64").arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split("version ").nth(1)?.split('.').next()?.parse().ok()
}

/// QEMU 10 or later: installed from bookworm-backports by
/// `xtask/scripts/qemu10.sh` (root on Debian bookworm), else named.
fn ensure_qemu() -> Result<()> {
    if qemu_major().is_some_and(|m| m >= QEMU_MAJOR) {
        return Ok(());
    }
    let script = crate::root().join("xtask/scripts/qemu10.sh");
    let ok = Command::new("bash").arg(&script).status().map(|s| s.success()).unwrap_or(false);
    match qemu_major() {
        Some(m) if ok && m >= QEMU_MAJOR => Ok(()),
        found => Err(format!(
            "QEMU {QEMU_MAJOR} or later is needed, found {}: on Debian bookworm run `sudo bash {}` (it adds bookworm-backports and installs qemu-system-x86, qemu-system-common, qemu-system-data and seabios from it)",
            found.map_or("none".to_string(), |m| m.to_string()),
            script.display()
        )
        .into()),
    }
}

/// Make sure every tool is there: install what is missing when we can, else
/// say exactly what to install.
pub fn ensure_all() -> Result<()> {
    ensure_qemu()?;
    ensure(TOOLS)
}

/// Make sure `tools` are there: install what is missing when we can, else
/// say exactly what to install.
pub fn ensure(tools: &[(&'static str, &'static str)]) -> Result<()> {
    let miss = missing_of(tools);
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
        if ok && missing_of(tools).is_empty() {
            return Ok(());
        }
    }
    let names: Vec<&str> = missing_of(tools).iter().map(|(t, _)| *t).collect();
    Err(format!(
        "missing host tools: {}. Install them with: sudo apt-get install {}",
        names.join(", "),
        pkgs.join(" ")
    )
    .into())
}
