//! Facts of the kernel image that the entry code (`entry.rs`) and the host
//! build (xtask) share: where it is linked, the multiboot2 relocatable tag it
//! carries, the one relocation kind its entry applies; and finding that tag
//! in a built image (the tests build an image that asks the loader for the
//! highest address instead of the lowest). Pure logic, host-tested.

/// The address the image is linked at (kernel/kernel.ld).
pub const LINK_BASE: u64 = 0x20_0000;
/// The lowest address, and the alignment, the relocatable tag allows (2 MiB:
/// the boot page tables map with 2 MiB pages).
pub const RELOC_MIN: u64 = 0x20_0000;
pub const RELOC_ALIGN: u64 = 0x20_0000;
/// The highest address the tag lets the loader use (the boot page tables map
/// the first 4 GiB; stay below the PCI hole).
pub const RELOC_MAX: u64 = 0xC000_0000;
/// Relocatable tag preference values (Multiboot2 spec §3.1.13).
pub const RELOC_PREFER_LOW: u32 = 1;
pub const RELOC_PREFER_HIGH: u32 = 2;
/// The only relocation the entry applies (System V x86-64 psABI, §4.4:
/// `B + A` at `B + offset`).
pub const R_X86_64_RELATIVE: u32 = 8;

/// Multiboot2 header magic and the relocatable tag's type (spec §3.1.1, §3.1.13).
const MB2_HEADER_MAGIC: u32 = 0xe852_50d6;
const TAG_RELOCATABLE: u16 = 10;
/// The header must lie in the image's first 32 KiB, 8-byte aligned (spec §3.1.1).
const MB2_SEARCH: usize = 32 * 1024;

fn u32_at(b: &[u8], o: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(o..o + 4)?.try_into().ok()?))
}

/// Offset in `image` (the ELF file as loaders read it) of the relocatable
/// tag's preference field: the multiboot2 header is the first 8-aligned
/// magic in the first 32 KiB whose checksum holds; its tags are walked to
/// type 10.
pub fn reloc_preference_offset(image: &[u8]) -> Option<usize> {
    let end = image.len().min(MB2_SEARCH);
    let header = (0..end.saturating_sub(16)).step_by(8).find(|&o| {
        let (Some(m), Some(arch), Some(len), Some(ck)) = (u32_at(image, o), u32_at(image, o + 4), u32_at(image, o + 8), u32_at(image, o + 12)) else { return false };
        m == MB2_HEADER_MAGIC && m.wrapping_add(arch).wrapping_add(len).wrapping_add(ck) == 0
    })?;
    let len = u32_at(image, header + 8)? as usize;
    let mut tag = header + 16;
    while tag + 8 <= header + len {
        let ty = u16::from_le_bytes(image.get(tag..tag + 2)?.try_into().ok()?);
        let size = u32_at(image, tag + 4)? as usize;
        if ty == TAG_RELOCATABLE && size >= 24 {
            return Some(tag + 20);
        }
        if ty == 0 || size < 8 {
            return None;
        }
        tag += size.next_multiple_of(8);
    }
    None
}

/// Ask the loader for `preference` (low or high) in a built image.
pub fn set_reloc_preference(image: &mut [u8], preference: u32) -> Result<(), &'static str> {
    let o = reloc_preference_offset(image).ok_or("no multiboot2 relocatable tag in the image")?;
    image[o..o + 4].copy_from_slice(&preference.to_le_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A multiboot2 header as the entry writes it: an information-request-like
    /// tag first, then the relocatable tag, then the end tag.
    fn header(at: usize) -> std::vec::Vec<u8> {
        let mut h = std::vec::Vec::new();
        let len = 16 + 16 + 24 + 8;
        for w in [MB2_HEADER_MAGIC, 0, len, 0u32.wrapping_sub(MB2_HEADER_MAGIC.wrapping_add(len))] {
            h.extend_from_slice(&w.to_le_bytes());
        }
        h.extend_from_slice(&[1, 0, 0, 0, 12, 0, 0, 0, 6, 0, 0, 0, 0, 0, 0, 0]); // type 1, size 12, padded to 16
        h.extend_from_slice(&[10, 0, 1, 0, 24, 0, 0, 0]);
        for w in [RELOC_MIN as u32, RELOC_MAX as u32, RELOC_ALIGN as u32, RELOC_PREFER_LOW] {
            h.extend_from_slice(&w.to_le_bytes());
        }
        h.extend_from_slice(&[0, 0, 0, 0, 8, 0, 0, 0]);
        let mut image = std::vec![0u8; at];
        image.extend_from_slice(&h);
        image.resize(at + 4096, 0xcc);
        image
    }

    #[test]
    fn the_preference_is_found_and_set() {
        let mut image = header(0x1000);
        let o = reloc_preference_offset(&image).unwrap();
        assert_eq!(o, 0x1000 + 16 + 16 + 20);
        assert_eq!(u32_at(&image, o), Some(RELOC_PREFER_LOW));
        set_reloc_preference(&mut image, RELOC_PREFER_HIGH).unwrap();
        assert_eq!(u32_at(&image, o), Some(RELOC_PREFER_HIGH));
    }

    #[test]
    fn no_header_or_no_tag_is_an_error() {
        assert_eq!(set_reloc_preference(&mut [0u8; 8192], RELOC_PREFER_HIGH), Err("no multiboot2 relocatable tag in the image"));
        // Beyond the first 32 KiB the header does not count.
        assert_eq!(reloc_preference_offset(&header(40 * 1024)), None);
        // A bad checksum is no header.
        let mut bad = header(0x800);
        bad[0x800 + 12] ^= 1;
        assert_eq!(reloc_preference_offset(&bad), None);
    }
}
