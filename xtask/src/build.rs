//! Building the bare-metal ELF: every kernel-only compiler and linker flag
//! lives here (and only here), so host builds (`cargo test`, xtask itself)
//! stay ordinary. After linking, the symbol table is written into the
//! image's reserved `.ksyms` section (see `kernel/src/debug/backtrace.rs`).

use std::path::{Path, PathBuf};
use std::process::Command;

use object::{Object, ObjectSection, ObjectSymbol, SymbolKind};

use crate::{Result, root};

/// The host triple: no bare-metal target is installed (stable Rust without
/// rust-src cannot build `core` for `x86_64-unknown-none`), so the kernel is a
/// static, freestanding binary for the host target, linked by rust-lld with
/// our script, `relocation-model=static` (else PIE, and the 32-bit boot code
/// does not link) and no red zone.
pub const TARGET: &str = "x86_64-unknown-linux-gnu";

/// Kernel-only rustc flags (passed through RUSTFLAGS with an explicit
/// `--target`, so build scripts and proc-macros do not get them).
pub fn kernel_rustflags(root: &Path) -> Vec<String> {
    let script = root.join("kernel/kernel.ld");
    vec![
        "-C".into(),
        "linker=rust-lld".into(),
        "-C".into(),
        "linker-flavor=ld.lld".into(),
        "-C".into(),
        "relocation-model=pie".into(),
        "-C".into(),
        "no-redzone=yes".into(),
        "-C".into(),
        "force-frame-pointers=yes".into(),
        // 64-byte function alignment, padded with int3 by LLVM: a torn CALL
        // from a small traced function lands in padding and traps (see
        // kernel/src/patch/engine.rs, "guarded" sites).
        "-C".into(),
        "llvm-args=-align-all-functions=6".into(),
        "-C".into(),
        format!("link-arg=-T{}", script.display()),
        "-C".into(),
        "link-arg=-znorelro".into(),
        "-C".into(),
        // A static position-independent executable: its data pointers are
        // R_X86_64_RELATIVE entries the entry applies where the loader put it
        // (kernel/src/boot/entry.rs); the file holds their link-time values too.
        "link-arg=-pie".into(),
        "-C".into(),
        "link-arg=--no-dynamic-linker".into(),
        "-C".into(),
        "link-arg=-znotext".into(),
        "-C".into(),
        "link-arg=--apply-dynamic-relocs".into(),
        "-C".into(),
        "link-arg=--pack-dyn-relocs=none".into(),
        "--cfg".into(),
        "kernel_target".into(),
    ]
}

/// `cargo xtask clippy`: lint the host crates and the bare-metal build (with
/// the kernel flags, so `cfg(kernel_target)` code is linted too). Fails on
/// any warning: the workspace denies undocumented unsafe blocks.
pub fn clippy() -> Result<()> {
    let root = root();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let host = Command::new(&cargo)
        .current_dir(&root)
        .args(["clippy", "--quiet", "--all-targets", "-p", "kernel", "-p", "xtask", "-p", "silicon", "--", "-D", "warnings"])
        .status()?
        .success()
        && Command::new(&cargo)
            .current_dir(&root)
            .args(["clippy", "--quiet", "--lib", "--tests", "-p", "appliance", "--", "-D", "warnings"])
            .status()?
            .success();
    let bare = Command::new(&cargo)
        .current_dir(&root)
        .args(["clippy", "--quiet", "--release", "-p", "appliance", "--target", TARGET, "--target-dir"])
        .arg(root.join("target/kernel"))
        .args(["--", "-D", "warnings"])
        .env("RUSTFLAGS", kernel_rustflags(&root).join(" "))
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .status()?;
    if !host || !bare.success() {
        return Err("clippy found problems (see above)".into());
    }
    Ok(())
}

/// Where the ELF and images go.
pub fn out_dir() -> PathBuf {
    root().join("target/appliance")
}

pub fn elf_path() -> PathBuf {
    out_dir().join("appliance.elf")
}

/// Build `target/appliance/appliance.elf` (release profile) with its symbol table.
pub fn build_elf() -> Result<PathBuf> {
    let root = root();
    let flags = kernel_rustflags(&root);
    // RUSTFLAGS is space-separated; none of our flags contains a space unless the path does.
    if flags.iter().any(|f| f.contains(' ')) {
        return Err(format!("the checkout path contains a space, which RUSTFLAGS cannot carry: {}", root.display()).into());
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(&root)
        .args(["build", "--release", "--package", "appliance", "--target", TARGET, "--target-dir"])
        .arg(root.join("target/kernel"))
        .env("RUSTFLAGS", flags.join(" "))
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .status()?;
    if !status.success() {
        return Err("building the appliance failed (see the compiler output above)".into());
    }
    let built = root.join("target/kernel").join(TARGET).join("release/appliance");
    std::fs::create_dir_all(out_dir())?;
    let mut elf = std::fs::read(&built)?;
    let n = embed_symbols(&mut elf)?;
    let relocs = prepare_relocations(&mut elf)?;
    let out = elf_path();
    std::fs::write(&out, &elf)?;
    eprintln!("xtask: {} ({} KiB, {n} symbols, {relocs} relocations)", out.display(), elf.len() / 1024);
    Ok(out)
}

/// The image's `.rela.dyn`: every entry must be R_X86_64_RELATIVE (the only
/// kind the entry applies, kernel/src/boot/entry.rs); a symbol-based one
/// means code that would read a wrong address once relocated, and fails the
/// build. The section is then typed SHT_PROGBITS: the entry finds it by its
/// linker-script symbols, and GRUB refuses multiboot2 ELF files with
/// SHT_RELA sections ("ELF files with relocs are not supported yet", its
/// `multiboot_elfxx.c`). Returns the number of relocations.
pub fn prepare_relocations(elf: &mut [u8]) -> Result<usize> {
    use object::read::elf::{ElfFile64, FileHeader, SectionHeader};
    const SHT_PROGBITS: u32 = 1;
    const SHT_RELA: u32 = 4;
    const RELA_ENTRY: usize = 24;
    let (index, count, shoff, shentsize) = {
        let file = ElfFile64::<object::Endianness>::parse(&*elf)?;
        let endian = file.endian();
        let header = file.elf_header();
        let sections = header.sections(endian, &*elf)?;
        let Some((index, sec)) = sections.iter().enumerate().find(|(_, s)| sections.section_name(endian, s).ok() == Some(b".rela.dyn".as_slice())) else {
            return Ok(0);
        };
        if sec.sh_type(endian) != SHT_RELA {
            return Err(format!(".rela.dyn has section type {}, expected SHT_RELA", sec.sh_type(endian)).into());
        }
        let data = sec.data(endian, &*elf)?;
        for (i, e) in data.chunks_exact(RELA_ENTRY).enumerate() {
            let info = u64::from_le_bytes(e[8..16].try_into().unwrap());
            if info as u32 != kernel::boot::image::R_X86_64_RELATIVE {
                return Err(format!("relocation {i} of the image has type {} (symbol {}), not R_X86_64_RELATIVE: position-dependent code?", info as u32, info >> 32).into());
            }
        }
        (index, data.len() / RELA_ENTRY, header.e_shoff(endian) as usize, header.e_shentsize(endian) as usize)
    };
    let at = shoff + index * shentsize + 4;
    elf[at..at + 4].copy_from_slice(&SHT_PROGBITS.to_le_bytes());
    Ok(count)
}

/// Collect function and data symbols, encode them, and write them into
/// `.ksyms`. Returns the number of symbols.
pub fn embed_symbols(elf: &mut [u8]) -> Result<usize> {
    let (blob, offset, size) = {
        let file = object::File::parse(&*elf)?;
        let mut names: Vec<(u64, u32, String)> = Vec::new();
        for s in file.symbols() {
            if !matches!(s.kind(), SymbolKind::Text | SymbolKind::Data | SymbolKind::Label | SymbolKind::Unknown) || s.address() == 0 {
                continue;
            }
            let Ok(raw) = s.name() else { continue };
            if raw.is_empty() || raw.starts_with(".L") || raw.starts_with("$") {
                continue;
            }
            let demangled = format!("{:#}", rustc_demangle::demangle(raw));
            let name = kernel::debug::symbols::strip_hash(&demangled).to_string();
            names.push((s.address(), s.size().min(u32::MAX as u64) as u32, name));
        }
        let refs: Vec<(u64, u32, &str)> = names.iter().map(|(a, l, n)| (*a, *l, n.as_str())).collect();
        let blob = kernel::debug::symbols::encode(&refs);
        let sec = file.section_by_name(".ksyms").ok_or("the ELF has no .ksyms section (linker script?)")?;
        let (offset, size) = sec.file_range().ok_or(".ksyms has no file contents")?;
        (blob, offset as usize, size as usize)
    };
    if blob.len() > size {
        return Err(format!(
            "the symbol table ({} bytes) does not fit .ksyms ({size} bytes): raise KSYMS_RESERVED in kernel/src/debug/backtrace.rs",
            blob.len()
        )
        .into());
    }
    let count = kernel::debug::symbols::SymbolTable::parse(&blob).map_err(|e| e.to_string())?.len();
    elf[offset..offset + blob.len()].copy_from_slice(&blob);
    Ok(count)
}
