//! Multiboot1 boot information (Multiboot Specification 0.6.96, §3.3), as left
//! by `qemu -kernel` when it loads our ELF through the a.out kludge.
//!
//! Pure logic over a [`PhysMemory`] reader, so host tests feed recorded bytes.

use super::info::{BootInfo, FbKind, Framebuffer, Loader, RegionKind};

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
const FB_ADDR: usize = 88;
const FB_PITCH: usize = 96;
const FB_WIDTH: usize = 100;
const FB_HEIGHT: usize = 104;
const FB_BPP: usize = 108;
const FB_TYPE: usize = 109;
/// Direct colour: red, green, blue (field position, mask size) byte pairs.
const FB_COLOR_INFO: usize = 110;
const INFO_SIZE: usize = 116;
/// The structure up to `boot_loader_name` (what a loader without framebuffer fields writes).
const INFO_SIZE_NO_FB: usize = 68;
/// flags bit 12: `framebuffer_*` are valid.
const FLAG_FRAMEBUFFER: u32 = 1 << 12;
/// framebuffer_type 1: direct RGB; 2: EGA text.
const FB_TYPE_RGB: u8 = 1;
const FB_TYPE_TEXT: u8 = 2;
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
    let b = mem.read(addr, INFO_SIZE_NO_FB).ok_or(Error::Unreadable(addr))?;
    let flags = u32_at(b, FLAGS);
    let mut info = BootInfo::new(Loader::Multiboot1);
    info.info_range = (addr, addr + INFO_SIZE_NO_FB as u64);
    // Multiboot1 means a BIOS machine: without framebuffer fields the screen
    // is the VGA text buffer the BIOS set up.
    info.framebuffer = Some(Framebuffer::VGA_TEXT);
    if flags & FLAG_FRAMEBUFFER != 0 {
        let f = mem.read(addr, INFO_SIZE).ok_or(Error::Unreadable(addr))?;
        info.info_range.1 = addr + INFO_SIZE as u64;
        let field = |i: usize| (f[FB_COLOR_INFO + 2 * i], f[FB_COLOR_INFO + 2 * i + 1]);
        let kind = match f[FB_TYPE] {
            FB_TYPE_TEXT => Some(FbKind::Text),
            FB_TYPE_RGB => Some(FbKind::Rgb { red: field(0), green: field(1), blue: field(2) }),
            _ => None,
        };
        info.framebuffer = kind.map(|kind| Framebuffer {
            addr: u64_at(f, FB_ADDR),
            pitch: u32_at(f, FB_PITCH),
            width: u32_at(f, FB_WIDTH),
            height: u32_at(f, FB_HEIGHT),
            bpp: f[FB_BPP],
            kind,
        });
        if kind.is_none() {
            info.framebuffer_unusable = Some("indexed-colour framebuffer");
        }
    }
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
    fn vga_text_unless_the_loader_describes_a_framebuffer() {
        let mut m = qemu_like("", 20);
        assert_eq!(parse(&m, 0x9000).unwrap().framebuffer, Some(Framebuffer::VGA_TEXT));
        let flags = u32::from_le_bytes(m.bytes[0..4].try_into().unwrap()) | FLAG_FRAMEBUFFER;
        put32(&mut m.bytes, FLAGS, flags);
        put32(&mut m.bytes, FB_ADDR, 0xfd00_0000);
        put32(&mut m.bytes, FB_PITCH, 4096);
        put32(&mut m.bytes, FB_WIDTH, 1024);
        put32(&mut m.bytes, FB_HEIGHT, 768);
        m.bytes[FB_BPP] = 32;
        m.bytes[FB_TYPE] = FB_TYPE_RGB;
        m.bytes[FB_COLOR_INFO..FB_COLOR_INFO + 6].copy_from_slice(&[16, 8, 8, 8, 0, 8]);
        let info = parse(&m, 0x9000).unwrap();
        assert_eq!(
            info.framebuffer,
            Some(Framebuffer {
                addr: 0xfd00_0000,
                pitch: 4096,
                width: 1024,
                height: 768,
                bpp: 32,
                kind: FbKind::Rgb { red: (16, 8), green: (8, 8), blue: (0, 8) }
            })
        );
        assert_eq!(info.info_range, (0x9000, 0x9000 + INFO_SIZE as u64));
        m.bytes[FB_TYPE] = 0; // indexed colour
        let info = parse(&m, 0x9000).unwrap();
        assert_eq!((info.framebuffer, info.framebuffer_unusable), (None, Some("indexed-colour framebuffer")));
    }

    #[test]
    fn bad_maps_and_unreadable_info_are_errors() {
        let mut m = qemu_like("", 20);
        put32(&mut m.bytes, 0x400, 200); // first entry claims to run past the map
        assert_eq!(parse(&m, 0x9000), Err(Error::BadMemoryMap));
        assert_eq!(parse(&m, 0x20_0000), Err(Error::Unreadable(0x20_0000)));
    }
}
