//! The MADT ("APIC" table, ACPI 6.5 §5.2.12) walked by our own code over its
//! raw bytes, with the rules real firmware needs (Linux
//! `arch/x86/kernel/acpi/boot.c` is the reference for behaviour):
//!
//! - a Local APIC entry with id 0xFF and a Local x2APIC entry with id
//!   0xFFFFFFFF describe no processor (firmware placeholders);
//! - a Local x2APIC entry with an id below 0xFF is ignored when the table
//!   has Local APIC entries (that processor is described there), and a CPU
//!   listed twice is one CPU;
//! - the online-capable flag (bit 1) means something only from MADT
//!   revision 5 (ACPI 6.3) on, and only for a processor not enabled;
//! - local-APIC NMI entries are kept however many there are;
//! - an entry shorter than its type's layout or running past the table ends
//!   the walk with a warning naming its offset (never a hang);
//! - a bad checksum is a warning, and the table is still used.
//!
//! Pure logic over bytes, host-tested over 697 real machines' tables.

use alloc::vec::Vec;


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

/// Bytes of the MADT before its entries: the SDT header (36), the local
/// APIC address (4) and the flags (4).
pub const HEADER_LEN: usize = 44;

/// Entry types (ACPI 6.5 Table 5.44) and their lengths.
pub mod entry {
    pub const LOCAL_APIC: u8 = 0;
    pub const IO_APIC: u8 = 1;
    pub const SOURCE_OVERRIDE: u8 = 2;
    pub const LOCAL_APIC_NMI: u8 = 4;
    pub const LOCAL_APIC_ADDRESS_OVERRIDE: u8 = 5;
    pub const LOCAL_X2APIC: u8 = 9;
    pub const LOCAL_X2APIC_NMI: u8 = 0xA;

    /// The length the layout of `kind` needs (0: a type we do not read).
    pub fn min_len(kind: u8) -> usize {
        match kind {
            LOCAL_APIC => 8,
            IO_APIC => 12,
            SOURCE_OVERRIDE => 10,
            LOCAL_APIC_NMI => 6,
            LOCAL_APIC_ADDRESS_OVERRIDE => 12,
            LOCAL_X2APIC => 16,
            LOCAL_X2APIC_NMI => 12,
            _ => 0,
        }
    }
}

/// The MADT revision from which the online-capable flag is defined (ACPI 6.3).
pub const ONLINE_CAPABLE_REVISION: u8 = 5;

/// Something wrong with a table that the walk worked around.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Warning {
    /// The bytes do not add up to 0; the table is used anyway.
    Checksum,
    /// The header's length is shorter than the header, or longer than the bytes.
    Length { declared: usize, available: usize },
    /// An entry at this offset is shorter than its layout (or than 2 bytes)
    /// or runs past the table: the walk stopped there.
    Entry { offset: usize, kind: u8, len: usize },
    /// A processor listed again (same APIC id): the first entry stands.
    Duplicate { apic_id: u32 },
}

/// What the walk found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Madt {
    pub revision: u8,
    pub lapic_address: u64,
    pub pcat_compat: bool,
    pub cpus: Vec<Cpu>,
    pub ioapics: Vec<IoApic>,
    pub overrides: Vec<SourceOverride>,
    pub nmis: Vec<LapicNmi>,
    pub warnings: Vec<Warning>,
}

fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

/// Walk a MADT's bytes (starting at its signature).
pub fn parse(bytes: &[u8]) -> Madt {
    let mut m = Madt::default();
    if bytes.len() < HEADER_LEN {
        m.warnings.push(Warning::Length { declared: 0, available: bytes.len() });
        return m;
    }
    let declared = u32_at(bytes, 4) as usize;
    let len = if declared < HEADER_LEN || declared > bytes.len() {
        m.warnings.push(Warning::Length { declared, available: bytes.len() });
        declared.clamp(HEADER_LEN, bytes.len())
    } else {
        declared
    };
    let t = &bytes[..len];
    if t.iter().fold(0u8, |s, x| s.wrapping_add(*x)) != 0 {
        m.warnings.push(Warning::Checksum);
    }
    m.revision = t[8];
    m.lapic_address = u32_at(t, 36) as u64;
    m.pcat_compat = u32_at(t, 40) & MADT_PCAT_COMPAT != 0;
    let has_lapic_entries = entries(t).any(|(_, kind, _)| kind == entry::LOCAL_APIC);
    let mut at = HEADER_LEN;
    while at < len {
        let (kind, elen) = (t[at], t.get(at + 1).copied().unwrap_or(0) as usize);
        if at + 2 > len || elen < 2 || elen < entry::min_len(kind) || at + elen > len {
            m.warnings.push(Warning::Entry { offset: at, kind, len: elen });
            break;
        }
        let e = &t[at..at + elen];
        match kind {
            entry::LOCAL_APIC if e[3] != 0xFF => {
                let flags = u32_at(e, 4);
                m.add_cpu(Cpu { apic_id: e[3] as u32, uid: e[2] as u32, enabled: false, online_capable: false, x2apic_entry: false }, flags);
            }
            entry::LOCAL_X2APIC => {
                let (id, flags, uid) = (u32_at(e, 4), u32_at(e, 8), u32_at(e, 12));
                if id != u32::MAX && !(has_lapic_entries && id < 0xFF) {
                    m.add_cpu(Cpu { apic_id: id, uid, enabled: false, online_capable: false, x2apic_entry: true }, flags);
                }
            }
            entry::IO_APIC => m.ioapics.push(IoApic { id: e[2], address: u32_at(e, 4), gsi_base: u32_at(e, 8) }),
            entry::SOURCE_OVERRIDE => m.overrides.push(SourceOverride { bus: e[2], irq: e[3], gsi: u32_at(e, 4), flags: u16_at(e, 8) }),
            entry::LOCAL_APIC_NMI => {
                let target = if e[2] == 0xFF { NmiTarget::All } else { NmiTarget::Uid(e[2] as u32) };
                m.nmis.push(LapicNmi { target, lint: e[5], flags: u16_at(e, 3) });
            }
            entry::LOCAL_X2APIC_NMI => {
                let uid = u32_at(e, 4);
                let target = if uid == u32::MAX { NmiTarget::All } else { NmiTarget::Uid(uid) };
                m.nmis.push(LapicNmi { target, lint: e[8], flags: u16_at(e, 2) });
            }
            entry::LOCAL_APIC_ADDRESS_OVERRIDE => {
                m.lapic_address = u64::from_le_bytes(e[4..12].try_into().expect("8 bytes"));
            }
            _ => {}
        }
        at += elen;
    }
    m
}

/// `(offset, type, length)` of each well-formed entry, up to the first bad one.
fn entries(t: &[u8]) -> impl Iterator<Item = (usize, u8, usize)> + '_ {
    let mut at = HEADER_LEN;
    core::iter::from_fn(move || {
        let (kind, len) = (*t.get(at)?, *t.get(at + 1)? as usize);
        if len < 2 || at + len > t.len() {
            return None;
        }
        let r = (at, kind, len);
        at += len;
        Some(r)
    })
}

impl Madt {
    fn add_cpu(&mut self, mut cpu: Cpu, flags: u32) {
        cpu.enabled = flags & MADT_CPU_ENABLED != 0;
        cpu.online_capable = !cpu.enabled && self.revision >= ONLINE_CAPABLE_REVISION && flags & MADT_CPU_ONLINE_CAPABLE != 0;
        // Disabled placeholders (firmware often lists them all with id 0)
        // describe no processor to start; only usable ones can repeat one.
        let usable = |c: &Cpu| c.enabled || c.online_capable;
        if usable(&cpu) && self.cpus.iter().any(|c| usable(c) && c.apic_id == cpu.apic_id) {
            self.warnings.push(Warning::Duplicate { apic_id: cpu.apic_id });
            return;
        }
        self.cpus.push(cpu);
    }

    /// Processors that can be started now, in table order.
    pub fn enabled(&self) -> impl Iterator<Item = &Cpu> {
        self.cpus.iter().filter(|c| c.enabled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A MADT of `rev` with these entries, its length and checksum set.
    fn table(rev: u8, entries: &[&[u8]]) -> Vec<u8> {
        let mut t = b"APIC".to_vec();
        t.extend_from_slice(&[0; 4]);
        t.push(rev);
        t.push(0);
        t.extend_from_slice(b"OEMID OEMTABLE");
        t.resize(36, 0);
        t.extend_from_slice(&0xFEE0_0000u32.to_le_bytes());
        t.extend_from_slice(&1u32.to_le_bytes());
        for e in entries {
            t.extend_from_slice(e);
        }
        let len = t.len() as u32;
        t[4..8].copy_from_slice(&len.to_le_bytes());
        let sum = t.iter().fold(0u8, |s, x| s.wrapping_add(*x));
        t[9] = 0u8.wrapping_sub(sum);
        t
    }

    fn lapic(uid: u8, id: u8, flags: u32) -> Vec<u8> {
        let mut e = vec![0, 8, uid, id];
        e.extend_from_slice(&flags.to_le_bytes());
        e
    }

    fn x2apic(id: u32, flags: u32, uid: u32) -> Vec<u8> {
        let mut e = vec![9, 16, 0, 0];
        e.extend_from_slice(&id.to_le_bytes());
        e.extend_from_slice(&flags.to_le_bytes());
        e.extend_from_slice(&uid.to_le_bytes());
        e
    }

    fn nmi(uid: u8, lint: u8) -> Vec<u8> {
        vec![4, 6, uid, 5, 0, lint]
    }

    fn ids(m: &Madt) -> Vec<u32> {
        m.enabled().map(|c| c.apic_id).collect()
    }

    #[test]
    fn placeholder_ids_describe_no_processor() {
        let m = parse(&table(3, &[&lapic(0, 0, 1), &lapic(1, 0xFF, 1), &x2apic(u32::MAX, 1, 7)]));
        assert_eq!(ids(&m), [0]);
        assert_eq!(m.cpus.len(), 1);
        assert!(m.warnings.is_empty());
    }

    #[test]
    fn one_cpu_in_a_type_0_and_a_type_9_entry_is_one_cpu() {
        // The x2APIC entry with an id below 0xFF is ignored where Local APIC entries exist.
        let m = parse(&table(4, &[&lapic(0, 0, 1), &lapic(1, 1, 1), &x2apic(1, 1, 1), &x2apic(300, 1, 300)]));
        assert_eq!(ids(&m), [0, 1, 300]);
        // Without Local APIC entries, x2APIC entries stand for themselves; a repeat is one CPU.
        let m = parse(&table(4, &[&x2apic(0, 1, 0), &x2apic(5, 1, 5), &x2apic(5, 1, 6)]));
        assert_eq!(ids(&m), [0, 5]);
        assert_eq!(m.warnings, [Warning::Duplicate { apic_id: 5 }]);
        let m = parse(&table(4, &[&lapic(0, 0, 1), &lapic(1, 0, 1)]));
        assert_eq!((ids(&m), m.warnings.len()), (vec![0], 1));
        // Disabled placeholders with id 0 before and after the real CPUs are not duplicates.
        let m = parse(&table(4, &[&lapic(9, 0, 0), &lapic(0, 0, 1), &lapic(1, 1, 1), &lapic(10, 0, 0)]));
        assert_eq!((ids(&m), m.cpus.len(), m.warnings.len()), (vec![0, 1], 4, 0));
    }

    #[test]
    fn online_capable_only_from_revision_5_and_only_when_disabled() {
        let entries: [&[u8]; 3] = [&lapic(0, 0, 1), &lapic(1, 1, 0b10), &lapic(2, 2, 0b11)];
        let old = parse(&table(4, &entries));
        assert!(old.cpus.iter().all(|c| !c.online_capable), "bit 1 is reserved before revision 5");
        let new = parse(&table(5, &entries));
        let oc: Vec<u32> = new.cpus.iter().filter(|c| c.online_capable).map(|c| c.apic_id).collect();
        assert_eq!(oc, [1], "enabled wins over online-capable");
        assert_eq!(ids(&new), [0, 2]);
    }

    #[test]
    fn any_number_of_nmi_entries() {
        let nmis: Vec<Vec<u8>> = (0..40).map(|u| nmi(u, 1)).collect();
        let mut entries: Vec<&[u8]> = vec![];
        let cpus: Vec<Vec<u8>> = (0..40).map(|u| lapic(u, u, 1)).collect();
        entries.extend(cpus.iter().map(|v| v.as_slice()));
        entries.extend(nmis.iter().map(|v| v.as_slice()));
        let m = parse(&table(3, &entries));
        assert_eq!((m.cpus.len(), m.nmis.len()), (40, 40));
        assert_eq!(m.nmis[39], LapicNmi { target: NmiTarget::Uid(39), lint: 1, flags: 5 });
    }

    #[test]
    fn a_malformed_entry_ends_the_walk_with_its_offset() {
        // Length 0: the acpi crate's iterator never advanced past it.
        let m = parse(&table(3, &[&lapic(0, 0, 1), &[0x7F, 0, 1, 2], &lapic(1, 1, 1)]));
        assert_eq!(ids(&m), [0]);
        assert_eq!(m.warnings, [Warning::Entry { offset: HEADER_LEN + 8, kind: 0x7F, len: 0 }]);
        // Shorter than its type's layout.
        let m = parse(&table(3, &[&[0, 4, 0, 0]]));
        assert_eq!(m.warnings, [Warning::Entry { offset: HEADER_LEN, kind: 0, len: 4 }]);
        // Running past the table.
        let mut t = table(3, &[&lapic(0, 0, 1)]);
        t[HEADER_LEN + 1] = 200;
        assert!(matches!(parse(&t).warnings[..], [Warning::Checksum, Warning::Entry { offset: 44, len: 200, .. }]));
        // Unknown types of sane length are skipped.
        let m = parse(&table(3, &[&[0x7F, 4, 0, 0], &lapic(0, 0, 1)]));
        assert_eq!((ids(&m), m.warnings.len()), (vec![0], 0));
    }

    #[test]
    fn a_bad_checksum_is_a_warning_and_the_table_is_used() {
        let mut t = table(3, &[&lapic(0, 0, 1), &lapic(1, 1, 1)]);
        t[9] ^= 0x55;
        let m = parse(&t);
        assert_eq!(m.warnings, [Warning::Checksum]);
        assert_eq!(ids(&m), [0, 1]);
        assert_eq!(m.lapic_address, 0xFEE0_0000);
        assert!(m.pcat_compat);
    }

    #[test]
    fn truncated_tables_are_reported() {
        assert_eq!(parse(b"APIC").warnings, [Warning::Length { declared: 0, available: 4 }]);
        let mut t = table(3, &[&lapic(0, 0, 1)]);
        t.truncate(48);
        let m = parse(&t);
        assert!(m.warnings.iter().any(|w| matches!(w, Warning::Length { declared: 52, available: 48 })));
    }

    #[test]
    fn address_override_and_other_entries() {
        let mut ov = vec![5, 12, 0, 0];
        ov.extend_from_slice(&0x1_0000_0000u64.to_le_bytes());
        let io = [1u8, 12, 2, 0, 0, 0, 0xC0, 0xFE, 0, 0, 0, 0];
        let iso = [2u8, 10, 0, 0, 2, 0, 0, 0, 0, 0];
        let m = parse(&table(3, &[&io, &iso, &ov]));
        assert_eq!(m.lapic_address, 0x1_0000_0000);
        assert_eq!(m.ioapics, [IoApic { id: 2, address: 0xFEC0_0000, gsi_base: 0 }]);
        assert_eq!(m.overrides, [SourceOverride { bus: 0, irq: 0, gsi: 2, flags: 0 }]);
    }
}
