//! `cargo xtask`: build the appliance, make boot images, run QEMU, test.
//!
//! `cargo xtask --help` lists every command, `cargo xtask CMD --help` its
//! options (clap derive: the [`Cmd`] enum is the one list).

mod bench;
mod bench_history;
mod build;
mod corpora;
mod deps;
mod fetch_rates;
mod hostfwd;
mod image;
#[cfg(test)]
mod layout;
mod netboot;
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
    /// Write a TFTP folder that boots the appliance over the network (BIOS: iPXE; UEFI: GRUB)
    Netboot(netboot::NetbootArgs),
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
        Cmd::Netboot(a) => netboot::main(&a),
    };
    if let Err(e) = result {
        eprintln!("xtask: error: {e}");
        std::process::exit(1);
    }
}

/// Every `cargo xtask` command the README and the docs show in their shell
/// blocks parses as `cargo xtask` would take it (issue 30).
#[cfg(test)]
mod doc_commands {
    use clap::Parser;

    /// Shell words of `line` up to a comment or the next command (`&&`,
    /// `||`, `;`, `|`), with double- and single-quoted words unquoted.
    pub fn words(line: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut cur: Option<String> = None;
        let mut chars = line.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '"' | '\'' => {
                    let w = cur.get_or_insert_with(String::new);
                    for d in chars.by_ref() {
                        if d == c {
                            break;
                        }
                        w.push(d);
                    }
                }
                '#' if cur.is_none() => break,
                ';' | '|' | '&' => break,
                c if c.is_whitespace() => out.extend(cur.take()),
                c => cur.get_or_insert_with(String::new).push(c),
            }
        }
        out.extend(cur);
        out
    }

    /// (file, line) of every `cargo xtask ...` line in a fenced `sh`,
    /// `bash`, `console` or unlabelled block of the given Markdown files.
    pub fn documented(files: &[std::path::PathBuf]) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for f in files {
            let text = std::fs::read_to_string(f).unwrap_or_default();
            let mut shell = None;
            for l in text.lines() {
                if let Some(lang) = l.trim_start().strip_prefix("```") {
                    shell = match shell {
                        Some(_) => None,
                        None => Some(matches!(lang.trim(), "" | "sh" | "bash" | "console" | "shell")),
                    };
                    continue;
                }
                let cmd = l.trim().trim_start_matches("$ ");
                if shell == Some(true) && cmd.starts_with("cargo xtask ") {
                    out.push((f.display().to_string(), cmd.to_string()));
                }
            }
        }
        out
    }

    #[test]
    fn shell_words_are_split_as_a_shell_would() {
        assert_eq!(words(r#"cargo xtask soak --models "A,B C" --seconds 5 # a comment"#), ["cargo", "xtask", "soak", "--models", "A,B C", "--seconds", "5"]);
        assert_eq!(words("cargo xtask image && ls"), ["cargo", "xtask", "image"]);
    }

    #[test]
    fn every_documented_command_parses() {
        let root = crate::root();
        let mut files = vec![root.join("README.md"), root.join("bench/README.md")];
        files.extend(std::fs::read_dir(root.join("docs")).expect("docs/").flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "md")));
        let cmds = documented(&files);
        assert!(cmds.len() >= 10, "only {} documented commands found", cmds.len());
        let mut bad = Vec::new();
        for (file, line) in &cmds {
            let w = words(line);
            let args = std::iter::once("cargo xtask".to_string()).chain(w.into_iter().skip(2));
            if let Err(e) = super::Cli::try_parse_from(args)
                && !matches!(e.kind(), clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion)
            {
                bad.push(format!("{file}: `{line}`: {}", e.to_string().lines().next().unwrap_or("")));
            }
        }
        assert!(bad.is_empty(), "{} of {} documented commands do not parse:\n{}", bad.len(), cmds.len(), bad.join("\n"));
        eprintln!("{} documented `cargo xtask` commands parse", cmds.len());
    }

    #[test]
    fn a_wrong_option_is_caught() {
        let dir = std::env::temp_dir().join(format!("doc-commands-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let md = dir.join("x.md");
        std::fs::write(&md, "```sh\ncargo xtask run --no-such-option\n```\n```text\ncargo xtask run [options]\n```\n").unwrap();
        let cmds = documented(std::slice::from_ref(&md));
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(cmds.len(), 1, "text blocks are synopses, not commands");
        let args = std::iter::once("cargo xtask".to_string()).chain(words(&cmds[0].1).into_iter().skip(2));
        assert!(super::Cli::try_parse_from(args).is_err());
    }
}
