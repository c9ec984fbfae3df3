//! `cargo xtask`: build the appliance, make boot images, run QEMU, test.
//!
//! ```text
//! cargo xtask build                 the ELF only (target/appliance/appliance.elf)
//! cargo xtask image                 ELF + hybrid BIOS/UEFI ISO (target/appliance/appliance.iso)
//! cargo xtask run [options]         boot it under QEMU (see `cargo xtask run --help`)
//! cargo xtask clippy                lint host and bare-metal code (warnings are errors)
//! cargo xtask test [--quick]        clippy, host tests + QEMU integration tests
//! cargo xtask acpi-dump [options]   record a QEMU machine's ACPI tables for host tests
//! cargo xtask deps                  install (or name) the host tools the images and QEMU need
//! cargo xtask soak [options]        one run per CPU model, report in target/soak/ (see `soak --help`)
//! ```

mod bench;
mod build;
mod deps;
mod image;
mod qemu;
mod run;
mod soak;
mod test;
mod usb;

use std::path::PathBuf;

pub type Error = Box<dyn std::error::Error + Send + Sync>;
pub type Result<T> = std::result::Result<T, Error>;

/// The workspace root (xtask's parent directory).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").to_path_buf()
}

/// The machine the reports came from: "CPU model name, N cores" (/proc/cpuinfo).
pub fn host_cpu() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let name = info.lines().find_map(|l| l.strip_prefix("model name")).and_then(|l| l.split(':').nth(1)).unwrap_or("unknown CPU").trim();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    format!("{name}, {cores} cores")
}

const USAGE: &str = "usage: cargo xtask <build|image|run|test|acpi-dump|deps> [options]
  build       build target/appliance/appliance.elf
  image       build the ELF and the hybrid BIOS+UEFI ISO target/appliance/appliance.iso
  run         boot under QEMU (cargo xtask run --help)
  clippy      lint host crates and the bare-metal build (warnings are errors)
  test        host tests and QEMU integration tests (--quick: only the -kernel boots)
  acpi-dump   boot a QEMU machine with acpi_dump and save its tables (cargo xtask acpi-dump --help)
  deps        install or name the host tools (QEMU, GRUB, xorriso, mtools, OVMF)
  cpuid-dump  record this machine's CPUID leaves (--name N) into kernel/tests/data/cpuid/ for host tests
  soak        boot once per CPU model with the watchdog and patching loop, report (soak --help)
  usb         write the image to a USB stick (--device /dev/sdX; removable disks only, after confirmation)
  bench       benchmarks: the appliance's (a bench boot, a service boot per NIC, NMI-rate boots) and the
              silicon harness's; JSON in target/bench/ (--seconds N: per silicon strategy)
  silicon     the patching protocol on this machine's CPUs from Linux user space (silicon --help)";

/// `cargo xtask cpuid-dump --name N`: every CPUID leaf of this machine, one
/// `leaf subleaf eax ebx ecx edx` line each (hex), for the PMU host tests.
fn cpuid_dump(args: &[String]) -> Result<()> {
    let name = match args {
        [flag, n] if flag == "--name" => n.clone(),
        _ => return Err("usage: cargo xtask cpuid-dump --name NAME".into()),
    };
    use std::arch::x86_64::__cpuid_count;
    use std::fmt::Write;
    let mut out = String::from("# CPUID of the machine that ran `cargo xtask cpuid-dump`: leaf subleaf eax ebx ecx edx\n");
    // Leaves with subleaves (SDM Vol. 2A, CPUID): dump the first 8 of each.
    let with_sub = [0x4, 0x7, 0xB, 0xD, 0xF, 0x10, 0x12, 0x14, 0x17, 0x18, 0x1D, 0x1E, 0x1F, 0x8000_001D, 0x8000_0020];
    for base in [0u32, 0x4000_0000, 0x8000_0000] {
        let max = __cpuid_count(base, 0).eax;
        if max < base || max - base > 0x100 {
            continue;
        }
        for leaf in base..=max {
            let subs = if with_sub.contains(&leaf) { 8 } else { 1 };
            for sub in 0..subs {
                let r = __cpuid_count(leaf, sub);
                writeln!(out, "{leaf:08x} {sub:x} {:08x} {:08x} {:08x} {:08x}", r.eax, r.ebx, r.ecx, r.edx)?;
            }
        }
    }
    let dir = root().join("kernel/tests/data/cpuid");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("{name}.txt"));
    std::fs::write(&path, out)?;
    println!("{}", path.display());
    Ok(())
}

/// `cargo xtask silicon [args]`: build and run bench/silicon (release).
fn silicon(args: &[String]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let st = std::process::Command::new(cargo)
        .current_dir(root())
        .args(["run", "--quiet", "--release", "-p", "silicon", "--"])
        .args(args)
        .status()?;
    if !st.success() {
        return Err("silicon failed".into());
    }
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("build") => build::build_elf().map(|_| ()),
        Some("clippy") => build::clippy(),
        Some("image") => image::build_image(None).map(|p| println!("{}", p.display())),
        Some("run") => run::main(&args[1..]),
        Some("test") => test::main(&args[1..]),
        Some("acpi-dump") => run::acpi_dump(&args[1..]),
        Some("deps") => deps::ensure_all(),
        Some("silicon") => silicon(&args[1..]),
        Some("bench") => bench::main(&args[1..]),
        Some("usb") => usb::main(&args[1..]),
        Some("soak") => soak::main(&args[1..]),
        Some("cpuid-dump") => cpuid_dump(&args[1..]),
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            Ok(())
        }
        _ => {
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    };
    if let Err(e) = result {
        eprintln!("xtask: error: {e}");
        std::process::exit(1);
    }
}
