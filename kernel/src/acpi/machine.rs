//! What the kernel needs from the ACPI tables: processors (xAPIC and x2APIC
//! MADT entries), IO-APICs, interrupt source overrides, local-APIC NMI pins
//! (the MADT walked by our own code in `madt.rs`, found through the root
//! table without rejecting a bad checksum), the FADT's PM timer, HPET and MCFG (through the `acpi`
//! crate).
//!
//! Generic over the `AcpiHandler`, so host tests run the same code over table
//! bytes recorded from QEMU machines (see `recorded.rs`).

use acpi::mcfg::Mcfg;
use acpi::{AcpiError, AcpiHandler, AcpiTables, hpet::HpetTable};
use alloc::vec::Vec;

/// Most processors the kernel starts (enabled ones; disabled entries do not count).
pub const MAX_CPUS: usize = 1024;

// The MADT's record types live with its parser; re-exported here as the
// machine's description is made of them.
pub use super::madt::{Cpu, IoApic, LapicNmi, MADT_CPU_ENABLED, MADT_CPU_ONLINE_CAPABLE, MADT_PCAT_COMPAT, NmiTarget, SourceOverride};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hpet {
    pub address: u64,
    pub min_tick: u16,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EcamRegion {
    pub base: u64,
    pub segment: u16,
    pub bus_start: u8,
    pub bus_end: u8,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MachineInfo {
    pub lapic_address: u64,
    pub pcat_compat: bool,
    pub cpus: Vec<Cpu>,
    pub ioapics: Vec<IoApic>,
    pub overrides: Vec<SourceOverride>,
    pub lapic_nmis: Vec<LapicNmi>,
    pub hpet: Option<Hpet>,
    /// The FADT's ACPI PM timer (`None`: no FADT; `Some(Err)`: why it has none).
    pub pm_timer: Option<Result<crate::time::reference::PmTimer, &'static str>>,
    pub ecam: Vec<EcamRegion>,
    pub madt_revision: u8,
    /// What the MADT walk worked around (reported at boot).
    pub madt_warnings: Vec<super::madt::Warning>,
}

impl MachineInfo {
    /// Processors that can be started now, in MADT order (the firmware lists the BSP first).
    pub fn enabled_cpus(&self) -> impl Iterator<Item = &Cpu> {
        self.cpus.iter().filter(|c| c.enabled)
    }

    /// The LINT pin that carries NMI for the processor with this UID, if the MADT says.
    pub fn nmi_lint_for(&self, uid: u32) -> Option<LapicNmi> {
        self.lapic_nmis
            .iter()
            .copied()
            .find(|n| n.target == NmiTarget::Uid(uid))
            .or_else(|| self.lapic_nmis.iter().copied().find(|n| n.target == NmiTarget::All))
    }
}

/// The raw bytes of the first table with signature `sig` listed by the root
/// table (XSDT from revision 2, else RSDT) of the RSDP at `rsdp`, its
/// checksum not checked (the caller decides what a bad one means).
pub fn raw_table<H: AcpiHandler>(handler: &H, rsdp: usize, sig: &[u8; 4]) -> Option<Vec<u8>> {
    let bytes = |addr: usize, len: usize| -> Vec<u8> {
        // SAFETY: the firmware describes these ranges (RSDP, root table, the
        // tables it lists); the handler maps them for reading.
        let m = unsafe { handler.map_physical_region::<u8>(addr, len) };
        // SAFETY: the mapping covers `len` bytes from its start.
        unsafe { core::slice::from_raw_parts(m.virtual_start().as_ptr(), len) }.to_vec()
    };
    let r = bytes(rsdp, 36);
    let (root, entry) = if r[15] >= 2 { (u64::from_le_bytes(r[24..32].try_into().ok()?) as usize, 8) } else { (u32::from_le_bytes(r[16..20].try_into().ok()?) as usize, 4) };
    let root_len = u32::from_le_bytes(bytes(root, 36)[4..8].try_into().ok()?) as usize;
    let root = bytes(root, root_len.max(36));
    for e in root.get(36..)?.chunks_exact(entry) {
        let mut a = [0u8; 8];
        a[..entry].copy_from_slice(e);
        let addr = u64::from_le_bytes(a) as usize;
        if addr == 0 {
            continue;
        }
        let head = bytes(addr, 36);
        if &head[..4] == sig {
            let len = u32::from_le_bytes(head[4..8].try_into().ok()?) as usize;
            return Some(bytes(addr, len.clamp(36, 1 << 20)));
        }
    }
    None
}

/// Walk MADT (required), HPET and MCFG (optional). `rsdp`: where the RSDP is.
pub fn machine_info<H: AcpiHandler>(handler: &H, rsdp: usize, tables: &AcpiTables<H>) -> Result<MachineInfo, AcpiError> {
    let mut info = MachineInfo::default();
    let madt = super::madt::parse(&raw_table(handler, rsdp, b"APIC").ok_or(AcpiError::TableMissing(acpi::sdt::Signature::MADT))?);
    info.lapic_address = madt.lapic_address;
    info.pcat_compat = madt.pcat_compat;
    info.cpus = madt.cpus;
    info.ioapics = madt.ioapics;
    info.overrides = madt.overrides;
    info.lapic_nmis = madt.nmis;
    info.madt_warnings = madt.warnings;
    info.madt_revision = madt.revision;

    info.pm_timer = raw_table(handler, rsdp, b"FACP").map(|f| crate::time::reference::pm_timer_from_fadt(&f));

    if let Ok(hpet) = tables.find_table::<HpetTable>() {
        // HPET table layout (IA-PC HPET spec 1.0a, table 3): Generic Address
        // Structure at byte 40 (address space id at +0, address at +4), minimum
        // clock tick at byte 53.
        let base = hpet.virtual_start().as_ptr() as *const u8;
        // SAFETY: the mapping covers size_of::<HpetTable>() = 56 bytes, and every
        // offset read below is inside it; reads are unaligned-safe.
        let (space, address, min_tick) = unsafe {
            (
                base.add(40).read(),
                base.add(44).cast::<u64>().read_unaligned(),
                base.add(53).cast::<u16>().read_unaligned(),
            )
        };
        // Address space 0 is system memory; anything else is not usable as MMIO.
        if space == 0 && address != 0 {
            info.hpet = Some(Hpet { address, min_tick });
        }
    }

    if let Ok(mcfg) = tables.find_table::<Mcfg>() {
        for e in mcfg.entries() {
            let r = EcamRegion {
                base: e.base_address,
                segment: e.pci_segment_group,
                bus_start: e.bus_number_start,
                bus_end: e.bus_number_end,
            };
            info.ecam.push(r);
        }
    }
    Ok(info)
}
