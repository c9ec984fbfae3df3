//! What the kernel needs from the ACPI tables, walked through the `acpi`
//! crate: processors (xAPIC and x2APIC MADT entries), IO-APICs, interrupt
//! source overrides, local-APIC NMI pins, HPET and MCFG.
//!
//! Generic over the `AcpiHandler`, so host tests run the same code over table
//! bytes recorded from QEMU machines (see `recorded.rs`).

use acpi::madt::{Madt, MadtEntry};
use acpi::mcfg::Mcfg;
use acpi::{AcpiError, AcpiHandler, AcpiTables, hpet::HpetTable};
use heapless::Vec;

/// Most processors the kernel tracks (x2APIC ids may be sparse; this bounds the count).
pub const MAX_CPUS: usize = 256;

/// MADT processor flags (ACPI 6.5, table 5.45 "Local APIC Flags").
pub const MADT_CPU_ENABLED: u32 = 1 << 0;
pub const MADT_CPU_ONLINE_CAPABLE: u32 = 1 << 1;
/// MADT flags: the system also has dual 8259 PICs (ACPI 6.5, table 5.44).
pub const MADT_PCAT_COMPAT: u32 = 1 << 0;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cpu {
    pub apic_id: u32,
    /// ACPI processor UID (matches the UID in local-APIC NMI entries).
    pub uid: u32,
    /// Usable now.
    pub enabled: bool,
    /// Not enabled, but may be brought online (hot-add).
    pub online_capable: bool,
    /// Described by a Local x2APIC entry (APIC id may exceed 254).
    pub x2apic_entry: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoApic {
    pub id: u8,
    pub address: u32,
    pub gsi_base: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SourceOverride {
    pub bus: u8,
    pub irq: u8,
    pub gsi: u32,
    /// MPS INTI flags: polarity (bits 0-1) and trigger mode (bits 2-3).
    pub flags: u16,
}

/// Which processors a local-APIC NMI entry applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NmiTarget {
    All,
    Uid(u32),
}

/// "NMI is wired to LINTn of these processors" (MADT Local APIC NMI / Local x2APIC NMI).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LapicNmi {
    pub target: NmiTarget,
    /// 0 = LINT0, 1 = LINT1.
    pub lint: u8,
    pub flags: u16,
}

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
    pub cpus: Vec<Cpu, MAX_CPUS>,
    pub ioapics: Vec<IoApic, 16>,
    pub overrides: Vec<SourceOverride, 32>,
    pub lapic_nmis: Vec<LapicNmi, 32>,
    pub hpet: Option<Hpet>,
    pub ecam: Vec<EcamRegion, 8>,
    /// MADT entries that did not fit the vectors above (reported at boot).
    pub dropped_entries: usize,
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

fn push<T, const N: usize>(v: &mut Vec<T, N>, x: T, dropped: &mut usize) {
    if v.push(x).is_err() {
        *dropped += 1;
    }
}

/// Walk MADT (required), HPET and MCFG (optional).
pub fn machine_info<H: AcpiHandler>(tables: &AcpiTables<H>) -> Result<MachineInfo, AcpiError> {
    let mut info = MachineInfo::default();
    let madt = tables.find_table::<Madt>()?;
    let madt = madt.get();
    info.lapic_address = madt.local_apic_address as u64;
    info.pcat_compat = madt.flags & MADT_PCAT_COMPAT != 0;
    let mut dropped = 0;
    for entry in madt.entries() {
        match entry {
            MadtEntry::LocalApic(e) => {
                let flags = e.flags;
                let cpu = Cpu {
                    apic_id: e.apic_id as u32,
                    uid: e.processor_id as u32,
                    enabled: flags & MADT_CPU_ENABLED != 0,
                    online_capable: flags & MADT_CPU_ONLINE_CAPABLE != 0,
                    x2apic_entry: false,
                };
                push(&mut info.cpus, cpu, &mut dropped);
            }
            MadtEntry::LocalX2Apic(e) => {
                let (flags, apic_id, uid) = (e.flags, e.x2apic_id, e.processor_uid);
                let cpu = Cpu {
                    apic_id,
                    uid,
                    enabled: flags & MADT_CPU_ENABLED != 0,
                    online_capable: flags & MADT_CPU_ONLINE_CAPABLE != 0,
                    x2apic_entry: true,
                };
                push(&mut info.cpus, cpu, &mut dropped);
            }
            MadtEntry::IoApic(e) => {
                let io = IoApic { id: e.io_apic_id, address: e.io_apic_address, gsi_base: e.global_system_interrupt_base };
                push(&mut info.ioapics, io, &mut dropped);
            }
            MadtEntry::InterruptSourceOverride(e) => {
                let o = SourceOverride { bus: e.bus, irq: e.irq, gsi: e.global_system_interrupt, flags: e.flags };
                push(&mut info.overrides, o, &mut dropped);
            }
            MadtEntry::LocalApicNmi(e) => {
                let target = if e.processor_id == 0xff { NmiTarget::All } else { NmiTarget::Uid(e.processor_id as u32) };
                push(&mut info.lapic_nmis, LapicNmi { target, lint: e.nmi_line, flags: e.flags }, &mut dropped);
            }
            MadtEntry::X2ApicNmi(e) => {
                let uid = e.processor_uid;
                let target = if uid == u32::MAX { NmiTarget::All } else { NmiTarget::Uid(uid) };
                push(&mut info.lapic_nmis, LapicNmi { target, lint: e.nmi_line, flags: e.flags }, &mut dropped);
            }
            MadtEntry::LocalApicAddressOverride(e) => info.lapic_address = e.local_apic_address,
            _ => {}
        }
    }
    info.dropped_entries = dropped;

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
            push(&mut info.ecam, r, &mut info.dropped_entries);
        }
    }
    Ok(info)
}
