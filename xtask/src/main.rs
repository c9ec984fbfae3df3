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
//! ```

mod build;
mod deps;
mod image;
mod qemu;
mod run;
mod test;

use std::path::PathBuf;

pub type Error = Box<dyn std::error::Error + Send + Sync>;
pub type Result<T> = std::result::Result<T, Error>;

/// The workspace root (xtask's parent directory).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").to_path_buf()
}

const USAGE: &str = "usage: cargo xtask <build|image|run|test|acpi-dump|deps> [options]
  build       build target/appliance/appliance.elf
  image       build the ELF and the hybrid BIOS+UEFI ISO target/appliance/appliance.iso
  run         boot under QEMU (cargo xtask run --help)
  clippy      lint host crates and the bare-metal build (warnings are errors)
  test        host tests and QEMU integration tests (--quick: only the -kernel boots)
  acpi-dump   boot a QEMU machine with acpi_dump and save its tables (cargo xtask acpi-dump --help)
  deps        install or name the host tools (QEMU, GRUB, xorriso, mtools, OVMF)
  silicon     the patching protocol on this machine's CPUs from Linux user space (silicon --help)";

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
