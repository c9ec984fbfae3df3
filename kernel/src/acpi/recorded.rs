//! ACPI tables recorded from a machine, as text, and an `AcpiHandler` that
//! serves them as if they were physical memory. The kernel prints this format
//! with `acpi_dump` on its command line; `cargo xtask acpi-dump` saves it under
//! `kernel/tests/data/acpi/` for host tests.
//!
//! Format, one table per line (hex without `0x`):
//! ```text
//! RSDP <address> <bytes>
//! TABLE <signature> <address> <bytes>
//! ```
//! Lines starting with `#` are comments.

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::ptr::NonNull;

use acpi::{AcpiHandler, PhysicalMapping};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub address: u64,
    pub bytes: Vec<u8>,
}

/// Recorded memory: the RSDP and every table, each at its physical address.
#[derive(Debug, Clone)]
pub struct RecordedMemory {
    pub rsdp: u64,
    chunks: Arc<Vec<Chunk>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormatError {
    pub line: usize,
    pub what: &'static str,
}

fn hex_bytes(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

/// Write one line of the format into `out` (used by the kernel's dump).
pub fn format_line(out: &mut impl core::fmt::Write, kind: &str, sig: Option<&str>, address: u64, bytes: &[u8]) -> core::fmt::Result {
    write!(out, "{kind} ")?;
    if let Some(sig) = sig {
        write!(out, "{sig} ")?;
    }
    write!(out, "{address:x} ")?;
    for b in bytes {
        write!(out, "{b:02x}")?;
    }
    Ok(())
}

impl RecordedMemory {
    pub fn parse(text: &str) -> Result<Self, FormatError> {
        let mut rsdp = None;
        let mut chunks = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let err = |what| FormatError { line: i + 1, what };
            if line.starts_with('#') {
                continue;
            }
            let words: Vec<&str> = line.split_ascii_whitespace().collect();
            let (address, bytes) = match words.as_slice() {
                [] => continue,
                ["RSDP", addr, bytes] => {
                    let a = u64::from_str_radix(addr, 16).map_err(|_| err("bad address"))?;
                    rsdp = Some(a);
                    (a, bytes)
                }
                ["TABLE", _sig, addr, bytes] => (u64::from_str_radix(addr, 16).map_err(|_| err("bad address"))?, bytes),
                _ => return Err(err("expected `RSDP addr bytes` or `TABLE sig addr bytes`")),
            };
            let bytes = hex_bytes(bytes).ok_or(err("bad hex bytes"))?;
            chunks.push(Chunk { address, bytes });
        }
        let rsdp = rsdp.ok_or(FormatError { line: 0, what: "no RSDP line" })?;
        Ok(RecordedMemory { rsdp, chunks: Arc::new(chunks) })
    }

    fn find(&self, address: u64, size: usize) -> Option<NonNull<u8>> {
        self.chunks.iter().find_map(|c| {
            let off = address.checked_sub(c.address)? as usize;
            (off.checked_add(size)? <= c.bytes.len()).then(|| NonNull::from(&c.bytes[off]))
        })
    }
}

impl AcpiHandler for RecordedMemory {
    unsafe fn map_physical_region<T>(&self, physical_address: usize, size: usize) -> PhysicalMapping<Self, T> {
        let Some(ptr) = self.find(physical_address as u64, size) else {
            panic!("recorded ACPI memory has no {size} bytes at {physical_address:#x}");
        };
        // SAFETY: `ptr` points at `size` bytes inside a chunk kept alive by the
        // Arc this handler clone holds; ACPI structs are packed (alignment 1).
        unsafe { PhysicalMapping::new(physical_address, ptr.cast(), size, size, self.clone()) }
    }

    fn unmap_physical_region<T>(_region: &PhysicalMapping<Self, T>) {}
}
