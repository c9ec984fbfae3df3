//! Low memory: where the AP start-up trampoline goes. A SIPI starts a
//! processor in real mode at a page below 1 MiB (its vector is the page
//! number, SDM Vol. 3A §9.4.4.1), so the page must be RAM the memory map
//! calls usable, below 1 MiB, and nothing of ours may sit there.
//!
//! The rules follow Linux (`arch/x86/realmode/init.c`, `reserve_real_mode`:
//! a page from usable memory below 1 MiB, taken from the top down;
//! `arch/x86/kernel/setup.c`: the first 64 KiB stay reserved because BIOSes
//! are known to corrupt them, `CONFIG_X86_RESERVE_LOW`), and the 640 KiB
//! line below which PC-compatible RAM ends (the EBDA sits just under it, the
//! legacy video and BIOS areas above; the map says so on most machines,
//! but not on every one).

use crate::boot::info::{MemRegion, RegionKind};

pub const PAGE: u64 = 0x1000;
/// Linux's default `reserve_low`: the first 64 KiB are not used.
pub const LOW_RESERVED: u64 = 0x1_0000;
/// Conventional memory ends at 640 KiB.
pub const CONVENTIONAL_END: u64 = 0xA_0000;

/// The highest page in `[LOW_RESERVED, CONVENTIONAL_END)` that lies wholly in
/// a usable region and overlaps none of `avoid` (half-open byte ranges: the
/// boot information, the kernel image). `Err` says why there is none.
pub fn trampoline_page(map: &[MemRegion], avoid: &[(u64, u64)]) -> Result<u64, &'static str> {
    let usable = |p: u64| map.iter().any(|r| r.kind == RegionKind::Usable && r.start <= p && p + PAGE <= r.end);
    // Another region that overlaps the page (some maps list a reserved
    // range inside a usable one): the reservation wins.
    let claimed = |p: u64| map.iter().any(|r| r.kind != RegionKind::Usable && r.start < p + PAGE && p < r.end);
    let taken = |p: u64| avoid.iter().any(|&(s, e)| s < p + PAGE && p < e);
    let mut p = CONVENTIONAL_END - PAGE;
    let mut any_low = false;
    while p >= LOW_RESERVED {
        if usable(p) {
            any_low = true;
            if !claimed(p) && !taken(p) {
                return Ok(p);
            }
        }
        p -= PAGE;
    }
    Err(if any_low { "every usable page between 64 KiB and 640 KiB is taken" } else { "the memory map lists no usable RAM between 64 KiB and 640 KiB" })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(start: u64, end: u64, usable: bool) -> MemRegion {
        MemRegion { start, end, kind: if usable { RegionKind::Usable } else { RegionKind::Reserved } }
    }

    /// SeaBIOS under QEMU (e820 as it logs it): RAM to 0x9fc00, the EBDA
    /// after it, the BIOS from 0xf0000.
    fn seabios() -> Vec<MemRegion> {
        vec![r(0, 0x9_fc00, true), r(0x9_fc00, 0xa_0000, false), r(0xf_0000, 0x10_0000, false), r(0x10_0000, 0x1ffd_f000, true)]
    }

    #[test]
    fn highest_free_page_below_the_ebda() {
        // 0x9f000-0xa0000 is cut by the EBDA at 0x9fc00: the page below it.
        assert_eq!(trampoline_page(&seabios(), &[]), Ok(0x9_e000));
    }

    #[test]
    fn boot_data_in_low_memory_is_skipped() {
        // GRUB put the multiboot information at 0x9d000-0x9e800.
        assert_eq!(trampoline_page(&seabios(), &[(0x9_d000, 0x9_e800)]), Ok(0x9_c000));
    }

    /// An OVMF-like map after ExitBootServices: low memory split by runtime
    /// and reserved ranges; 0x8000 (the old fixed page) is reserved here.
    #[test]
    fn uefi_map_with_holes_and_0x8000_taken() {
        let map = vec![
            r(0, 0x8000, true),
            r(0x8000, 0x9000, false),
            r(0x9000, 0x5_8000, true),
            r(0x5_8000, 0x5_9000, false),
            r(0x5_9000, 0x8_7000, true),
            r(0x8_7000, 0xa_0000, false),
            r(0x10_0000, 0x80_0000, true),
        ];
        assert_eq!(trampoline_page(&map, &[]), Ok(0x8_6000));
        // The kernel at 2 MiB is far above: no effect.
        assert_eq!(trampoline_page(&map, &[(0x20_0000, 0x70_0000)]), Ok(0x8_6000));
    }

    #[test]
    fn a_reserved_range_inside_a_usable_one_wins() {
        let map = vec![r(0, 0xa_0000, true), r(0x9_f000, 0xa_0000, false)];
        assert_eq!(trampoline_page(&map, &[]), Ok(0x9_e000));
    }

    #[test]
    fn nothing_usable_low_or_all_taken() {
        assert!(trampoline_page(&[r(0x10_0000, 0x4000_0000, true)], &[]).unwrap_err().contains("no usable RAM"));
        // Only the first 64 KiB are usable: Linux keeps them reserved, so do we.
        assert!(trampoline_page(&[r(0, 0x1_0000, true)], &[]).is_err());
        let map = vec![r(0x1_0000, 0x1_2000, true)];
        assert_eq!(trampoline_page(&map, &[]), Ok(0x1_1000));
        assert!(trampoline_page(&map, &[(0x1_0000, 0x1_2000)]).unwrap_err().contains("taken"));
    }
}
