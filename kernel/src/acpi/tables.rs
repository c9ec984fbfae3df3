//! ACPI table access on the machine: an `AcpiHandler` over the identity map,
//! and discovery of the RSDP (multiboot2 copy, else the BIOS area search).

use core::ptr::NonNull;

use acpi::{AcpiError, AcpiHandler, AcpiTables, PhysicalMapping};

use super::machine::{MachineInfo, machine_info};
use super::recorded::format_line;

/// A copy of physical page 0 (real-mode IVT and the BIOS data area, where the
/// EBDA pointer lives at 0x40E), taken before page 0 is unmapped so that null
/// dereferences fault while the RSDP search can still read the BDA.
struct LowPage(core::cell::UnsafeCell<[u8; 4096]>);
// SAFETY: written once by `save_low_page` on the boot CPU before any reader exists, read-only after.
unsafe impl Sync for LowPage {}
static LOW_PAGE: LowPage = LowPage(core::cell::UnsafeCell::new([0; 4096]));

/// Copy physical page 0. Boot CPU, once, while the boot tables still map it.
pub fn save_low_page() {
    // SAFETY: the boot page tables identity-map page 0; the copy is done in
    // assembly (a Rust read through a null pointer would be undefined
    // behaviour); LOW_PAGE has no reader yet.
    unsafe {
        core::arch::asm!("rep movsb", inout("rcx") 4096usize => _, inout("rdi") LOW_PAGE.0.get() as usize => _,
            inout("rsi") 0usize => _, options(nostack, preserves_flags))
    };
}

/// Physical memory is identity-mapped (see `mem::paging`): a mapping is the
/// address itself, except page 0, served from the copy above.
#[derive(Clone, Copy, Debug)]
pub struct IdentityMapped;

impl AcpiHandler for IdentityMapped {
    unsafe fn map_physical_region<T>(&self, physical_address: usize, size: usize) -> PhysicalMapping<Self, T> {
        let virt = if physical_address + size <= 4096 {
            LOW_PAGE.0.get() as usize + physical_address
        } else {
            physical_address
        };
        let ptr = NonNull::new(virt as *mut T).expect("ACPI table at physical address 0");
        // SAFETY: every physical address below the top of the kernel's map is
        // identity-mapped; the acpi crate asks only for table ranges the
        // firmware described, which lie in that map.
        unsafe { PhysicalMapping::new(physical_address, ptr, size, size, *self) }
    }

    fn unmap_physical_region<T>(_region: &PhysicalMapping<Self, T>) {}
}

/// Where the RSDP came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RsdpSource {
    /// The multiboot2 tag's copy.
    BootInfo,
    /// Found by searching the EBDA and 0xE0000-0xFFFFF.
    BiosSearch,
}

/// The tables, what the kernel takes from them, and where the RSDP is.
pub struct Discovered {
    pub tables: AcpiTables<IdentityMapped>,
    pub info: MachineInfo,
    pub rsdp: u64,
    pub source: RsdpSource,
}

/// Find the tables and walk what the kernel needs.
pub fn discover(rsdp: Option<u64>) -> Result<Discovered, AcpiError> {
    let (tables, rsdp, source) = match rsdp {
        // SAFETY: the address is the RSDP copy in the boot information, which
        // stays reserved and identity-mapped.
        Some(a) => (unsafe { AcpiTables::from_rsdp(IdentityMapped, a as usize)? }, a, RsdpSource::BootInfo),
        None => {
            // SAFETY: the legacy BIOS areas (EBDA, 0xE0000-0xFFFFF) are identity-mapped.
            let m = unsafe { acpi::rsdp::Rsdp::search_for_on_bios(IdentityMapped)? };
            let a = m.physical_start() as u64;
            // SAFETY: `search_for_on_bios` validated the RSDP (signature and checksums).
            (unsafe { AcpiTables::from_validated_rsdp(IdentityMapped, m)? }, a, RsdpSource::BiosSearch)
        }
    };
    let info = machine_info(&IdentityMapped, rsdp as usize, &tables)?;
    Ok(Discovered { tables, info, rsdp, source })
}

/// # Safety
/// `addr` must be an identity-mapped, checksummed ACPI table (SDT header at `addr`).
unsafe fn table_bytes(addr: u64) -> (&'static str, &'static [u8]) {
    let p = addr as *const u8;
    // SAFETY: caller's contract: a valid SDT header, whose length (offset 4) covers the table.
    unsafe {
        let len = p.add(4).cast::<u32>().read_unaligned() as usize;
        let sig = core::str::from_utf8(core::slice::from_raw_parts(p, 4)).unwrap_or("????");
        (sig, core::slice::from_raw_parts(p, len))
    }
}

/// Print the RSDP, the RSDT/XSDT and every table it lists in the format
/// `recorded.rs` parses (the `acpi_dump` command-line option), so host tests
/// replay real machines' tables.
pub fn dump(out: &mut impl core::fmt::Write, rsdp: u64) -> core::fmt::Result {
    // RSDP (ACPI 6.5 §5.2.5.3): revision at 15, RSDT address at 16, length at
    // 20 and XSDT address at 24 (revision 2+).
    // SAFETY: the acpi crate validated the RSDP at this identity-mapped address.
    let (rsdp_bytes, root, entry) = unsafe {
        let p = rsdp as *const u8;
        if p.add(15).read() >= 2 {
            let len = p.add(20).cast::<u32>().read_unaligned() as usize;
            (core::slice::from_raw_parts(p, len), p.add(24).cast::<u64>().read_unaligned(), 8)
        } else {
            // Revision 0 has 20 bytes, but the acpi crate maps the 36-byte v2
            // layout whatever the revision: record 36 so replays can serve it.
            (core::slice::from_raw_parts(p, 36), p.add(16).cast::<u32>().read_unaligned() as u64, 4)
        }
    };
    format_line(out, "RSDP", None, rsdp, rsdp_bytes)?;
    writeln!(out)?;
    // SAFETY: the root table was validated by the acpi crate.
    let (sig, bytes) = unsafe { table_bytes(root) };
    format_line(out, "TABLE", Some(sig), root, bytes)?;
    writeln!(out)?;
    // Entries follow the 36-byte SDT header, 4 (RSDT) or 8 (XSDT) bytes each.
    for e in bytes[36..].chunks_exact(entry) {
        let mut a = [0u8; 8];
        a[..entry].copy_from_slice(e);
        let addr = u64::from_le_bytes(a);
        // SAFETY: the firmware lists identity-mapped tables in its root table.
        let (sig, bytes) = unsafe { table_bytes(addr) };
        format_line(out, "TABLE", Some(sig), addr, bytes)?;
        writeln!(out)?;
    }
    Ok(())
}
