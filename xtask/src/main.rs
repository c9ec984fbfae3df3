//! `cargo xtask`: build the appliance, make boot images, run QEMU, test.
//!
//! `cargo xtask --help` lists every command, `cargo xtask CMD --help` its
//! options (clap derive: the [`Cmd`] enum is the one list).

mod bench;
mod build;
mod corpora;
mod deps;
mod fetch_rates;
mod hostfwd;
mod image;
#[cfg(test)]
mod layout;
mod peer;
mod qemu;
mod remote;
mod run;
mod soak;
mod soak_run;
mod stress;
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

/// Build, boot, test and measure the trace appliance.
#[derive(clap::Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Subcommand)]
enum Cmd {
    /// Build the ELF: target/appliance/appliance.elf
    Build,
    /// Build the ELF and the hybrid BIOS+UEFI ISO: target/appliance/appliance.iso
    Image,
    /// Boot the appliance under QEMU (serial on the terminal and in target/qemu-serial.log)
    Run(run::RunArgs),
    /// Lint host crates and the bare-metal build (warnings are errors)
    Clippy,
    /// Clippy, host tests and QEMU integration tests; ends with `N passed, N failed`
    Test(test::TestArgs),
    /// Boot a QEMU machine with acpi_dump and save its tables for the host tests
    AcpiDump(run::AcpiDumpArgs),
    /// Install (as root on Debian) or name the host tools: QEMU, GRUB, xorriso, mtools, OVMF, babeltrace2
    Deps,
    /// Record this machine's CPUID leaves into kernel/tests/data/cpuid/NAME.txt for host tests
    CpuidDump {
        /// File name (without .txt)
        #[arg(long)]
        name: String,
    },
    /// Regenerate what the repository keeps of ../shared's real-hardware corpora (MADTs, CPUID facts)
    Corpora,
    /// Boot once per CPU model with the watchdog and the patching loop; report in target/soak/
    Soak(soak::SoakArgs),
    /// Write the image to a USB stick (removable whole disks only, after confirmation)
    Usb {
        /// The whole disk, e.g. /dev/sdb
        #[arg(long)]
        device: String,
    },
    /// The endpoint under load, slowloris, idle floods, never-read streams and link flaps, and tiny-ring
    /// accounting; report in target/stress/ (not part of `test`)
    Stress(stress::StressArgs),
    /// Download a snapshot (CTF, JSON, text, status, metrics, NMI log) from an appliance by URL
    Fetch(remote::FetchArgs),
    /// Benchmarks: the appliance's (bench boot, a service boot per NIC, NMI-rate boots) and the silicon harness's
    Bench(bench::BenchArgs),
    /// The patching protocol on this machine's CPUs from Linux user space (options: `cargo xtask silicon -- --help`)
    Silicon {
        /// Options passed to bench/silicon
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

/// `cargo xtask cpuid-dump --name N`: every CPUID leaf of this machine, one
/// `leaf subleaf eax ebx ecx edx` line each (hex), for the PMU host tests.
fn cpuid_dump(name: &str) -> Result<()> {
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
    use clap::Parser;
    let result = match Cli::parse().cmd {
        Cmd::Build => build::build_elf().map(|_| ()),
        Cmd::Clippy => build::clippy(),
        Cmd::Image => image::build_image(None).map(|p| println!("{}", p.display())),
        Cmd::Run(a) => run::main(&a),
        Cmd::Test(a) => test::main(&a),
        Cmd::AcpiDump(a) => run::acpi_dump(&a),
        Cmd::Deps => deps::ensure_all(),
        Cmd::Silicon { args } => silicon(&args),
        Cmd::Bench(a) => bench::main(&a),
        Cmd::Usb { device } => usb::main(&device),
        Cmd::Soak(a) => soak::main(&a),
        Cmd::Stress(a) => stress::main(&a),
        Cmd::Fetch(a) => remote::fetch_main(&a),
        Cmd::CpuidDump { name } => cpuid_dump(&name),
        Cmd::Corpora => corpora::main(),
    };
    if let Err(e) = result {
        eprintln!("xtask: error: {e}");
        std::process::exit(1);
    }
}
