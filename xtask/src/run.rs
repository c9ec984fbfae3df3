//! `cargo xtask run`: boot the appliance under QEMU, serial on the terminal
//! and in `target/qemu-serial.log`. Also `cargo xtask acpi-dump`.

use std::time::Duration;

use crate::qemu::{self, Accel, Boot, Firmware, Spec};
use crate::{Result, root};

/// The NICs `--nic` names.
pub const NICS: [&str; 5] = ["virtio", "e1000", "e1000e", "igb", "usb"];

/// Options of `run`, also taken by `acpi-dump`.
#[derive(clap::Args, Clone, Debug)]
pub struct RunArgs {
    /// auto: KVM only when /dev/kvm is hardware-assisted (-cpu host,-arch-capabilities), else TCG
    /// (-cpu max); tcg is single-threaded, mttcg multi-threaded (faster, but QEMU's MTTCG misses some
    /// cross-CPU code changes: see README)
    #[arg(long, value_enum, default_value_t = Accel::Auto)]
    pub accel: Accel,
    /// CPUs, or a QEMU -smp value like 6,sockets=2,cores=3
    #[arg(long, default_value = "4")]
    pub smp: String,
    /// QEMU -cpu model (default: max under TCG, host,-arch-capabilities under KVM)
    #[arg(long)]
    pub cpu: Option<String>,
    /// Guest memory in MiB
    #[arg(long, default_value_t = 512)]
    pub mem: u32,
    /// Machine from qemu/qemu.toml
    #[arg(long, default_value = "q35")]
    pub machine: String,
    /// Kernel command line
    #[arg(long, default_value = "", allow_hyphen_values = true)]
    pub append: String,
    /// SeaBIOS or OVMF
    #[arg(long, value_enum, default_value_t = Firmware::Bios)]
    pub firmware: Firmware,
    /// The ISO as CD-ROM or USB stick, QEMU -kernel with the ELF (fast path), or the network (iPXE under BIOS, GRUB under UEFI; `cargo xtask netboot`)
    #[arg(long, value_parser = ["cdrom", "usb", "kernel", "net"], default_value = "cdrom")]
    pub boot: String,
    /// Host 127.0.0.1:PORT forwarded to guest TCP 80
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// NIC model
    #[arg(long, value_parser = NICS, default_value = "virtio")]
    pub nic: String,
    /// Stop QEMU after SECS (default: run until QEMU exits)
    #[arg(long, value_name = "SECS")]
    pub duration: Option<u64>,
}

/// The QEMU device for a `--nic` name.
pub fn nic_device(nic: &str) -> String {
    match nic {
        "virtio" => "virtio-net-pci",
        "usb" => "usb-net",
        other => other,
    }
    .to_string()
}

/// Build what `o.boot` needs and make the QEMU spec.
pub fn spec_for(o: &RunArgs) -> Result<(Spec, String)> {
    crate::deps::ensure_all()?;
    let (accel, why) = qemu::choose_accel(o.accel)?;
    let boot = match o.boot.as_str() {
        "kernel" => Boot::Kernel { elf: crate::build::build_elf()?, append: o.append.clone() },
        "net" => {
            let dir = crate::netboot::write(&root().join("target/netboot"), &crate::build::build_elf()?, "10.0.2.2", &o.append)?;
            let bootfile = if o.firmware == crate::qemu::Firmware::Uefi { crate::netboot::GRUB_EFI } else { crate::netboot::IPXE_SCRIPT };
            Boot::Net { dir, bootfile: bootfile.into() }
        }
        kind => {
            let iso = crate::image::build_image(Some(&o.append))?;
            if kind == "usb" { Boot::Usb(iso) } else { Boot::Cdrom(iso) }
        }
    };
    let mut spec = Spec::new(boot);
    spec.accel = accel;
    spec.cpu = o.cpu.clone();
    spec.smp = o.smp.clone();
    spec.mem_mib = o.mem;
    spec.machine = o.machine.clone();
    spec.firmware = o.firmware;
    spec.net = Some((o.port, nic_device(&o.nic)));
    Ok((spec, why))
}

pub fn main(o: &RunArgs) -> Result<()> {
    let (spec, why) = spec_for(o)?;
    let log = root().join("target/qemu-serial.log");
    eprintln!("xtask: accelerator {why}");
    eprintln!("xtask: serial console below and in {}", log.display());
    eprintln!(
        "xtask: endpoint http://127.0.0.1:{}/status (and /nmi-log): host port forwarded to guest TCP 80 over QEMU user \
         networking; it answers once the console says `net: listening`",
        o.port
    );
    let running = qemu::spawn(&spec, &log, true)?;
    let timeout = o.duration.map(Duration::from_secs).unwrap_or(Duration::from_secs(u64::MAX / 4));
    let outcome = running.wait(timeout);
    match outcome.exit {
        Some(qemu::EXIT_SUCCESS) => eprintln!("xtask: the appliance exited with success"),
        Some(qemu::EXIT_FAILURE) => return Err("the appliance reported a fatal error (see the serial log)".into()),
        Some(c) => eprintln!("xtask: QEMU exited with status {c}"),
        None if outcome.timed_out => eprintln!("xtask: stopped after {} s as asked", outcome.elapsed.as_secs()),
        None => {}
    }
    Ok(())
}

/// `cargo xtask acpi-dump`: boots the ELF with `acpi_dump test_exit` (QEMU
/// -kernel, TCG) and writes the tables to kernel/tests/data/acpi/NAME.txt.
#[derive(clap::Args, Debug)]
pub struct AcpiDumpArgs {
    /// File name (without .txt)
    #[arg(long)]
    name: String,
    #[command(flatten)]
    run: RunArgs,
}

/// `cargo xtask acpi-dump --name NAME [--machine M --smp S ...]`.
pub fn acpi_dump(args: &AcpiDumpArgs) -> Result<()> {
    let name = &args.name;
    let mut o = args.run.clone();
    o.boot = "kernel".into();
    o.accel = Accel::Tcg;
    o.append = format!("{} acpi_dump test_exit", o.append);
    let (mut spec, _) = spec_for(&o)?;
    spec.net = None;
    let log = root().join(format!("target/acpi-dump-{name}.log"));
    let out = qemu::spawn(&spec, &log, false)?.wait(Duration::from_secs(60));
    let text: String = out
        .log
        .lines()
        .skip_while(|l| *l != "ACPI-DUMP-BEGIN")
        .skip(1)
        .take_while(|l| *l != "ACPI-DUMP-END")
        .map(|l| format!("{l}\n"))
        .collect();
    if text.is_empty() || out.exit != Some(qemu::EXIT_SUCCESS) {
        return Err(format!("no ACPI dump in the serial log (exit {:?}); see {}", out.exit, log.display()).into());
    }
    let dir = root().join("kernel/tests/data/acpi");
    std::fs::create_dir_all(&dir)?;
    let header = format!("# ACPI tables of `qemu-system-x86_64 -machine {} -smp {}`, recorded by cargo xtask acpi-dump\n", o.machine, o.smp);
    let path = dir.join(format!("{name}.txt"));
    std::fs::write(&path, header + &text)?;
    println!("{}", path.display());
    Ok(())
}
