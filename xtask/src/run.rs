//! `cargo xtask run`: boot the appliance under QEMU, serial on the terminal
//! and in `target/qemu-serial.log`. Also `cargo xtask acpi-dump`.

use std::time::Duration;

use crate::qemu::{self, Accel, Boot, Firmware, Spec};
use crate::{Result, root};

pub const RUN_HELP: &str = "usage: cargo xtask run [options]
  --accel auto|kvm|tcg|mttcg  auto: KVM only when /dev/kvm is hardware-assisted, else TCG (default auto);
                         tcg is single-threaded, mttcg multi-threaded (faster, but QEMU 7.2 misses
                         some cross-CPU code changes: see README)
  --smp N                CPUs, or a QEMU -smp value like 6,sockets=2,cores=3 (default 4)
  --cpu MODEL            QEMU -cpu model (default: max under TCG, host,-arch-capabilities under KVM)
  --mem MiB              guest memory (default 512)
  --machine q35|pc       machine from qemu/qemu.toml (default q35)
  --append \"...\"         kernel command line
  --firmware bios|uefi   SeaBIOS or OVMF (default bios)
  --boot cdrom|usb|kernel  the ISO as CD-ROM or USB stick, or QEMU -kernel with the ELF (default cdrom)
  --port P               host 127.0.0.1:P forwarded to guest TCP 80 (default 8080)
  --nic virtio|e1000|e1000e  NIC model (default virtio)
  --duration SECS        stop QEMU after SECS (default: run until QEMU exits)";

/// Options shared by `run` and `acpi-dump`.
#[derive(Clone, Debug)]
pub struct RunOpts {
    pub accel: Accel,
    pub smp: String,
    pub cpu: Option<String>,
    pub mem: u32,
    pub machine: String,
    pub append: String,
    pub firmware: Firmware,
    pub boot: String,
    pub port: u16,
    pub nic: String,
    pub duration: Option<u64>,
}

impl Default for RunOpts {
    fn default() -> Self {
        RunOpts {
            accel: Accel::Auto,
            smp: "4".into(),
            cpu: None,
            mem: 512,
            machine: "q35".into(),
            append: String::new(),
            firmware: Firmware::Bios,
            boot: "cdrom".into(),
            port: 8080,
            nic: "virtio".into(),
            duration: None,
        }
    }
}

pub fn parse_opts(args: &[String]) -> Result<RunOpts> {
    let mut o = RunOpts::default();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || it.next().cloned().ok_or_else(|| format!("{a} needs a value\n{RUN_HELP}"));
        match a.as_str() {
            "--accel" => o.accel = parse_accel(&val()?)?,
            "--smp" => o.smp = val()?,
            "--cpu" => o.cpu = Some(val()?),
            "--mem" => o.mem = val()?.parse().map_err(|_| "--mem takes MiB as an integer")?,
            "--machine" => o.machine = val()?,
            "--append" => o.append = val()?,
            "--firmware" => {
                o.firmware = match val()?.as_str() {
                    "bios" => Firmware::Bios,
                    "uefi" => Firmware::Uefi,
                    v => return Err(format!("--firmware {v}: expected bios or uefi").into()),
                }
            }
            "--boot" => {
                o.boot = val()?;
                if !["cdrom", "usb", "kernel"].contains(&o.boot.as_str()) {
                    return Err(format!("--boot {}: expected cdrom, usb or kernel", o.boot).into());
                }
            }
            "--port" => o.port = val()?.parse().map_err(|_| "--port takes a TCP port number")?,
            "--nic" => o.nic = parse_nic(&val()?)?,
            "--duration" => o.duration = Some(val()?.parse().map_err(|_| "--duration takes seconds as an integer")?),
            "-h" | "--help" => {
                println!("{RUN_HELP}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown option {other}\n{RUN_HELP}").into()),
        }
    }
    Ok(o)
}

pub fn parse_accel(v: &str) -> Result<Accel> {
    Ok(match v {
        "auto" => Accel::Auto,
        "kvm" => Accel::Kvm,
        "tcg" => Accel::Tcg,
        "mttcg" => Accel::Mttcg,
        v => return Err(format!("--accel {v}: expected auto, kvm, tcg or mttcg").into()),
    })
}

pub fn parse_nic(v: &str) -> Result<String> {
    if !["virtio", "e1000", "e1000e"].contains(&v) {
        return Err(format!("--nic {v}: expected virtio, e1000 or e1000e").into());
    }
    Ok(v.to_string())
}

/// The QEMU device for a `--nic` name.
pub fn nic_device(nic: &str) -> String {
    match nic {
        "virtio" => "virtio-net-pci",
        other => other,
    }
    .to_string()
}

/// Build what `o.boot` needs and make the QEMU spec.
pub fn spec_for(o: &RunOpts) -> Result<(Spec, String)> {
    crate::deps::ensure_all()?;
    let (accel, why) = qemu::choose_accel(o.accel)?;
    let boot = match o.boot.as_str() {
        "kernel" => Boot::Kernel { elf: crate::build::build_elf()?, append: o.append.clone() },
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

pub fn main(args: &[String]) -> Result<()> {
    let o = parse_opts(args)?;
    let (spec, why) = spec_for(&o)?;
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

pub const DUMP_HELP: &str = "usage: cargo xtask acpi-dump --name NAME [run options]
  Boots the ELF with `acpi_dump test_exit` (QEMU -kernel, TCG) and writes the
  tables to kernel/tests/data/acpi/NAME.txt for the host tests.";

/// `cargo xtask acpi-dump --name NAME [--machine M --smp S ...]`.
pub fn acpi_dump(args: &[String]) -> Result<()> {
    let mut rest = Vec::new();
    let mut name = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--name" {
            name = it.next().cloned();
        } else {
            rest.push(a.clone());
        }
    }
    let name = name.ok_or(DUMP_HELP)?;
    let mut o = parse_opts(&rest)?;
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
