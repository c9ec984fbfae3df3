//! Boot information, the same whatever loaded us: the kernel command line,
//! the physical memory map, where the ACPI RSDP is, and the range the boot
//! information itself occupies (reserved until the kernel has read it).
//!
//! Filled from multiboot2 (GRUB, through the `multiboot2` crate) or multiboot1
//! (`qemu -kernel`, see `mb1.rs`). Pure logic: builds and is tested on the host.

use heapless::{String, Vec};

/// Longest command line kept; longer ones are cut and reported.
pub const MAX_CMDLINE: usize = 1024;
/// Most memory-map entries kept; more are counted in `dropped_regions`.
pub const MAX_REGIONS: usize = 128;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegionKind {
    /// RAM the kernel may use.
    Usable,
    /// ACPI tables (reclaimable after they are read; we keep them).
    AcpiReclaimable,
    /// Anything else: firmware, MMIO, bad memory.
    Reserved,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemRegion {
    pub start: u64,
    pub end: u64,
    pub kind: RegionKind,
}

/// How the pixels (or characters) of a framebuffer are laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FbKind {
    /// EGA/VGA text: `width` x `height` cells of (character, attribute) bytes.
    Text,
    /// Direct colour: (bit position, bit count) of red, green and blue in a pixel.
    Rgb { red: (u8, u8), green: (u8, u8), blue: (u8, u8) },
}

/// A linear framebuffer the loader left us (multiboot2 tag 8, multiboot1
/// flags bit 12), or the VGA text buffer a BIOS leaves behind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Framebuffer {
    pub addr: u64,
    /// Bytes per line (per text row for `Text`).
    pub pitch: u32,
    /// Pixels, or character cells for `Text`.
    pub width: u32,
    pub height: u32,
    pub bpp: u8,
    pub kind: FbKind,
}

impl Framebuffer {
    /// The VGA text buffer a PC BIOS leaves in mode 3 (80x25 at 0xB8000).
    pub const VGA_TEXT: Framebuffer = Framebuffer { addr: 0xB8000, pitch: 160, width: 80, height: 25, bpp: 16, kind: FbKind::Text };

    /// Bytes the framebuffer spans.
    pub fn byte_len(&self) -> u64 {
        self.pitch as u64 * self.height as u64
    }
}

/// Which protocol handed us control.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Loader {
    Multiboot1,
    Multiboot2,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootInfo {
    pub loader: Loader,
    pub cmdline: String<MAX_CMDLINE>,
    /// The command line was longer than `MAX_CMDLINE` and was cut.
    pub cmdline_truncated: bool,
    pub regions: Vec<MemRegion, MAX_REGIONS>,
    pub dropped_regions: usize,
    /// Physical address of an RSDP (multiboot2 keeps a copy in its tags);
    /// `None`: search the BIOS area.
    pub rsdp: Option<u64>,
    /// `[start, end)` of the boot information structure (keep it reserved while used).
    pub info_range: (u64, u64),
    /// The boot loader's name, when it gives one.
    pub loader_name: String<64>,
    /// Where the screen is, when the loader says (or a BIOS implies) one.
    pub framebuffer: Option<Framebuffer>,
    /// Why a framebuffer the loader described is not usable (palette modes).
    pub framebuffer_unusable: Option<&'static str>,
}

impl BootInfo {
    pub fn new(loader: Loader) -> Self {
        BootInfo {
            loader,
            cmdline: String::new(),
            cmdline_truncated: false,
            regions: Vec::new(),
            dropped_regions: 0,
            rsdp: None,
            info_range: (0, 0),
            loader_name: String::new(),
            framebuffer: None,
            framebuffer_unusable: None,
        }
    }

    /// Set the command line, cutting it on a char boundary if too long.
    pub fn set_cmdline(&mut self, s: &str) {
        self.cmdline.clear();
        for c in s.chars() {
            if self.cmdline.push(c).is_err() {
                self.cmdline_truncated = true;
                break;
            }
        }
    }

    pub fn set_loader_name(&mut self, s: &str) {
        self.loader_name.clear();
        for c in s.chars() {
            if self.loader_name.push(c).is_err() {
                break;
            }
        }
    }

    pub fn push_region(&mut self, start: u64, len: u64, kind: RegionKind) {
        let r = MemRegion { start, end: start.saturating_add(len), kind };
        if len != 0 && self.regions.push(r).is_err() {
            self.dropped_regions += 1;
        }
    }

    /// Highest address of usable RAM.
    pub fn max_usable(&self) -> u64 {
        self.regions.iter().filter(|r| r.kind == RegionKind::Usable).map(|r| r.end).max().unwrap_or(0)
    }

    pub fn usable_bytes(&self) -> u64 {
        self.regions.iter().filter(|r| r.kind == RegionKind::Usable).map(|r| r.end - r.start).sum()
    }
}

/// Read the multiboot2 information at `addr`.
///
/// # Safety
/// `addr` must be the multiboot2 information pointer the loader passed in EBX,
/// identity-mapped and untouched since.
pub unsafe fn from_mb2(addr: u64) -> Result<BootInfo, multiboot2::LoadError> {
    use multiboot2::{BootInformation, BootInformationHeader, MemoryAreaType};
    // SAFETY: forwarded to the caller.
    let mbi = unsafe { BootInformation::load(addr as *const BootInformationHeader)? };
    let mut info = BootInfo::new(Loader::Multiboot2);
    info.info_range = (mbi.start_address() as u64, mbi.end_address() as u64);
    if let Some(c) = mbi.command_line_tag() {
        info.set_cmdline(c.cmdline().unwrap_or(""));
    }
    if let Some(n) = mbi.boot_loader_name_tag() {
        info.set_loader_name(n.name().unwrap_or("?"));
    }
    if let Some(mmap) = mbi.memory_map_tag() {
        for a in mmap.memory_areas() {
            let kind = match a.typ() {
                MemoryAreaType::Available => RegionKind::Usable,
                MemoryAreaType::AcpiAvailable => RegionKind::AcpiReclaimable,
                _ => RegionKind::Reserved,
            };
            info.push_region(a.start_address(), a.size(), kind);
        }
    }
    match mbi.framebuffer_tag() {
        Some(Ok(fb)) => {
            let kind = match fb.buffer_type() {
                Ok(multiboot2::FramebufferType::Text) => Some(FbKind::Text),
                Ok(multiboot2::FramebufferType::RGB { red, green, blue }) => Some(FbKind::Rgb {
                    red: (red.position, red.size),
                    green: (green.position, green.size),
                    blue: (blue.position, blue.size),
                }),
                _ => None,
            };
            match kind {
                Some(kind) => {
                    info.framebuffer =
                        Some(Framebuffer { addr: fb.address(), pitch: fb.pitch(), width: fb.width(), height: fb.height(), bpp: fb.bpp(), kind })
                }
                None => info.framebuffer_unusable = Some("indexed-colour framebuffer"),
            }
        }
        Some(Err(_)) => info.framebuffer_unusable = Some("framebuffer of an unknown type"),
        None => {}
    }
    // The tags hold a copy of the RSDP right after their 8-byte tag header
    // (Multiboot2 spec 1.0 §3.6.16/§3.6.17); prefer the ACPI 2.0+ one (XSDT).
    if let Some(t) = mbi.rsdp_v2_tag() {
        info.rsdp = Some(t as *const _ as *const u8 as u64 + 8);
    } else if let Some(t) = mbi.rsdp_v1_tag() {
        info.rsdp = Some(t as *const _ as *const u8 as u64 + 8);
    }
    Ok(info)
}
