//! Multiboot1 boot information (Multiboot Specification 0.6.96, §3.3), as left
//! by `qemu -kernel` when it loads our ELF through the a.out kludge.
//!
//! Pure logic over a [`PhysMemory`] reader, so host tests feed recorded bytes.

use super::info::{BootInfo, Loader, RegionKind};

/// Reads physical memory (identity-mapped in the kernel; a buffer in tests).
pub trait PhysMemory {
    fn read(&self, addr: u64, len: usize) -> Option<&[u8]>;
}

// Offsets in the multiboot1 information structure (spec §3.3, "Boot information format").
const FLAGS: usize = 0;
const CMDLINE: usize = 16;
const MMAP_LENGTH: usize = 44;
const MMAP_ADDR: usize = 48;
const LOADER_NAME: usize = 64;
const INFO_SIZE: usize = 68;
/// flags bit 2: `cmdline` is valid.
const FLAG_CMDLINE: u32 = 1 << 2;
/// flags bit 6: `mmap_*` are valid.
const FLAG_MMAP: u32 = 1 << 6;
/// flags bit 9: `boot_loader_name` is valid.
const FLAG_LOADER_NAME: u32 = 1 << 9;
/// mmap entry type 1: available RAM; 3: ACPI reclaimable.
const MMAP_AVAILABLE: u32 = 1;
const MMAP_ACPI: u32 = 3;
/// Longest C string read (command line, loader name).
const MAX_CSTR: usize = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// The information structure itself is not readable.
    Unreadable(u64),
    /// An mmap entry's size field would run past the map.
    BadMemoryMap,
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    u32_at(b, off) as u64 | (u32_at(b, off + 4) as u64) << 32
}

fn cstr(mem: &impl PhysMemory, addr: u64) -> &str {
    // Read byte by byte up to the NUL (the string may end near the end of RAM).
    let mut len = 0;
    while len < MAX_CSTR {
        match mem.read(addr + len as u64, 1) {
            Some([0]) | None => break,
            Some(_) => len += 1,
        }
    }
    mem.read(addr, len).and_then(|b| core::str::from_utf8(b).ok()).unwrap_or("")
}

/// Parse the multiboot1 information at `addr`.
pub fn parse(mem: &impl PhysMemory, addr: u64) -> Result<BootInfo, Error> {
    let b = mem.read(addr, INFO_SIZE).ok_or(Error::Unreadable(addr))?;
    let flags = u32_at(b, FLAGS);
    let mut info = BootInfo::new(Loader::Multiboot1);
    info.info_range = (addr, addr + INFO_SIZE as u64);
    if flags & FLAG_CMDLINE != 0 {
        info.set_cmdline(cstr(mem, u32_at(b, CMDLINE) as u64));
    }
    if flags & FLAG_LOADER_NAME != 0 {
        info.set_loader_name(cstr(mem, u32_at(b, LOADER_NAME) as u64));
    }
    if flags & FLAG_MMAP != 0 {
        let (len, base) = (u32_at(b, MMAP_LENGTH) as u64, u32_at(b, MMAP_ADDR) as u64);
        let map = mem.read(base, len as usize).ok_or(Error::Unreadable(base))?;
        // Each entry: size u32 (of the rest of the entry), base u64, length u64, type u32.
        let mut off = 0usize;
        while off + 4 <= map.len() {
            let size = u32_at(map, off) as usize;
            if size < 20 || off + 4 + size > map.len() {
                return Err(Error::BadMemoryMap);
            }
            let e = &map[off + 4..];
            let kind = match u32_at(e, 16) {
                MMAP_AVAILABLE => RegionKind::Usable,
                MMAP_ACPI => RegionKind::AcpiReclaimable,
                _ => RegionKind::Reserved,
            };
            info.push_region(u64_at(e, 0), u64_at(e, 8), kind);
            off += 4 + size;
        }
    }
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    struct Mem {
        base: u64,
        bytes: Vec<u8>,
    }

    impl PhysMemory for Mem {
        fn read(&self, addr: u64, len: usize) -> Option<&[u8]> {
            let off = addr.checked_sub(self.base)? as usize;
            self.bytes.get(off..off.checked_add(len)?)
        }
    }

    fn put32(b: &mut [u8], off: usize, v: u32) {
        b[off..off + 4].copy_from_slice(&v.to_le_bytes());
    }

    /// A structure like the one QEMU 7-10 builds for `-kernel -append`.
    fn qemu_like(cmdline: &str, entry_size: u32) -> Mem {
        let base = 0x9000u64;
        let mut b = vec![0u8; 0x1000];
        put32(&mut b, FLAGS, FLAG_CMDLINE | FLAG_MMAP | FLAG_LOADER_NAME);
        put32(&mut b, CMDLINE, 0x9200);
        b[0x200..0x200 + cmdline.len()].copy_from_slice(cmdline.as_bytes());
        put32(&mut b, LOADER_NAME, 0x9300);
        b[0x300..0x304].copy_from_slice(b"qemu");
        let entries: [(u64, u64, u32); 3] = [(0, 0x9fc00, 1), (0xf0000, 0x10000, 2), (0x100000, 0x7fe0000, 1)];
        let mut off = 0x400;
        for (start, len, ty) in entries {
            put32(&mut b, off, entry_size);
            b[off + 4..off + 12].copy_from_slice(&start.to_le_bytes());
            b[off + 12..off + 20].copy_from_slice(&len.to_le_bytes());
            put32(&mut b, off + 20, ty);
            off += 4 + entry_size as usize;
        }
        put32(&mut b, MMAP_ADDR, 0x9400);
        put32(&mut b, MMAP_LENGTH, (off - 0x400) as u32);
        Mem { base, bytes: b }
    }

    #[test]
    fn parses_cmdline_loader_and_memory_map() {
        let m = qemu_like("loglevel=debug test_exit", 20);
        let info = parse(&m, 0x9000).unwrap();
        assert_eq!(info.loader, Loader::Multiboot1);
        assert_eq!(info.cmdline.as_str(), "loglevel=debug test_exit");
        assert_eq!(info.loader_name.as_str(), "qemu");
        assert_eq!(info.regions.len(), 3);
        assert_eq!(info.regions[1].kind, RegionKind::Reserved);
        assert_eq!(info.max_usable(), 0x100000 + 0x7fe0000);
        assert_eq!(info.usable_bytes(), 0x9fc00 + 0x7fe0000);
        assert_eq!(info.rsdp, None, "multiboot1 carries no RSDP");
    }

    #[test]
    fn larger_entry_sizes_are_skipped_correctly() {
        // The spec lets `size` exceed 20 (extra fields); entries must still line up.
        let m = qemu_like("", 24);
        let info = parse(&m, 0x9000).unwrap();
        assert_eq!(info.regions.len(), 3);
        assert_eq!(info.regions[2].start, 0x100000);
    }

    #[test]
    fn bad_maps_and_unreadable_info_are_errors() {
        let mut m = qemu_like("", 20);
        put32(&mut m.bytes, 0x400, 200); // first entry claims to run past the map
        assert_eq!(parse(&m, 0x9000), Err(Error::BadMemoryMap));
        assert_eq!(parse(&m, 0x20_0000), Err(Error::Unreadable(0x20_0000)));
    }
}
