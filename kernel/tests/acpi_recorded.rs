//! MADT/HPET/MCFG walking over ACPI tables recorded from QEMU machines
//! (`cargo xtask acpi-dump`), through the same code the kernel runs.

use acpi::AcpiTables;
use kernel::acpi::machine::{MachineInfo, NmiTarget, machine_info};
use kernel::acpi::recorded::RecordedMemory;

fn load(text: &str) -> (RecordedMemory, MachineInfo) {
    let mem = RecordedMemory::parse(text).expect("recorded tables parse");
    // SAFETY: the handler serves only recorded bytes; a missing range panics.
    let tables = unsafe { AcpiTables::from_rsdp(mem.clone(), mem.rsdp as usize) }.expect("valid RSDP");
    let info = machine_info(&mem, mem.rsdp as usize, &tables).expect("MADT present");
    (mem, info)
}

fn enabled_ids(m: &MachineInfo) -> Vec<u32> {
    m.enabled_cpus().map(|c| c.apic_id).collect()
}

#[test]
fn q35_with_four_cpus() {
    let (_, m) = load(include_str!("data/acpi/q35-smp4.txt"));
    assert_eq!(enabled_ids(&m), [0, 1, 2, 3]);
    assert!(m.cpus.iter().all(|c| !c.x2apic_entry && c.enabled));
    assert_eq!(m.lapic_address, 0xfee0_0000);
    assert!(m.pcat_compat);
    assert_eq!(m.ioapics.len(), 1);
    assert_eq!((m.ioapics[0].address, m.ioapics[0].gsi_base), (0xfec0_0000, 0));
    // ISA IRQ 0 (PIT) is routed to GSI 2 on every QEMU PC.
    assert!(m.overrides.iter().any(|o| o.irq == 0 && o.gsi == 2));
    // NMI on LINT1 of every processor.
    assert_eq!(m.nmi_lint_for(3).map(|n| n.lint), Some(1));
    assert_eq!(m.lapic_nmis[0].target, NmiTarget::All);
    assert_eq!(m.hpet.map(|h| h.address), Some(0xfed0_0000));
    // QEMU's PM I/O base 0x600, timer at +8, 24 bits wide.
    assert_eq!(m.pm_timer, Some(Ok(kernel::time::reference::PmTimer { port: 0x608, bits: 24 })));
    assert_eq!(m.ecam.len(), 1);
    assert_eq!((m.ecam[0].base, m.ecam[0].bus_start, m.ecam[0].bus_end), (0xb000_0000, 0, 255));
    assert!(m.madt_warnings.is_empty());
}

#[test]
fn i440fx_has_no_mcfg() {
    let (_, m) = load(include_str!("data/acpi/pc-smp2.txt"));
    assert_eq!(enabled_ids(&m), [0, 1]);
    assert!(m.ecam.is_empty(), "the pc machine has no PCIe ECAM");
    assert!(m.hpet.is_some());
    // The same I/O base on the i440FX machine.
    assert_eq!(m.pm_timer.map(|t| t.map(|t| t.port)), Some(Ok(0x608)));
}

#[test]
fn sparse_apic_ids_from_the_topology() {
    // 2 sockets x 3 cores: the core field is 2 bits wide, so ids skip 3.
    let (_, m) = load(include_str!("data/acpi/q35-smp6-sparse.txt"));
    assert_eq!(enabled_ids(&m), [0, 1, 2, 4, 5, 6]);
    let uids: Vec<u32> = m.cpus.iter().map(|c| c.uid).collect();
    assert_eq!(uids, [0, 1, 2, 3, 4, 5]);
}

#[test]
fn single_cpu() {
    let (_, m) = load(include_str!("data/acpi/q35-smp1.txt"));
    assert_eq!(enabled_ids(&m), [0]);
}

/// Append MADT entries to a recorded MADT (fixing its length and checksum),
/// to cover what QEMU's TCG machines here cannot produce: Local x2APIC
/// entries, x2APIC NMI entries and disabled / online-capable processors.
fn with_extra_madt_entries(text: &str, extra: &[u8]) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let w: Vec<&str> = line.split_whitespace().collect();
        if w.len() == 4 && w[0] == "TABLE" && w[1] == "APIC" {
            let mut b: Vec<u8> = (0..w[3].len()).step_by(2).map(|i| u8::from_str_radix(&w[3][i..i + 2], 16).unwrap()).collect();
            b.extend_from_slice(extra);
            let len = b.len() as u32;
            b[4..8].copy_from_slice(&len.to_le_bytes());
            b[9] = 0;
            let sum = b.iter().fold(0u8, |s, x| s.wrapping_add(*x));
            b[9] = 0u8.wrapping_sub(sum);
            let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
            out.push_str(&format!("TABLE APIC {} {hex}\n", w[2]));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

#[test]
fn x2apic_entries_flags_and_nmi_pins() {
    let mut extra = Vec::new();
    // Local x2APIC (type 9, length 16): reserved u16, x2APIC id, flags, UID (ACPI 6.5 §5.2.12.12).
    let x2 = |id: u32, flags: u32, uid: u32| {
        let mut e = vec![9u8, 16, 0, 0];
        e.extend_from_slice(&id.to_le_bytes());
        e.extend_from_slice(&flags.to_le_bytes());
        e.extend_from_slice(&uid.to_le_bytes());
        e
    };
    extra.extend(x2(300, 1, 300));
    extra.extend(x2(301, 0, 301)); // disabled, not online-capable
    extra.extend(x2(302, 2, 302)); // disabled, online-capable
    // Local x2APIC NMI (type 0xA, length 12): flags u16, UID u32, LINT u8, reserved[3].
    let mut nmi = vec![0xA, 12, 0, 0];
    nmi.extend_from_slice(&300u32.to_le_bytes());
    nmi.extend_from_slice(&[0, 0, 0, 0]);
    extra.extend(nmi);
    let text = with_extra_madt_entries(include_str!("data/acpi/q35-smp4.txt"), &extra);
    let (_, m) = load(&text);
    assert_eq!(enabled_ids(&m), [0, 1, 2, 3, 300]);
    let c = |id| m.cpus.iter().find(|c| c.apic_id == id).copied().unwrap();
    assert!(c(300).x2apic_entry && c(300).enabled);
    assert!(!c(301).enabled && !c(301).online_capable);
    // QEMU's MADT is older than revision 5: the online-capable bit is reserved there.
    assert!(m.madt_revision < 5 && !c(302).enabled && !c(302).online_capable);
    // UID 300 has its own entry (LINT0); the others fall back to the all-CPU LINT1 entry.
    assert_eq!(m.nmi_lint_for(300).map(|n| n.lint), Some(0));
    assert_eq!(m.nmi_lint_for(1).map(|n| n.lint), Some(1));
}

#[test]
fn a_broken_checksum_is_a_warning_and_the_madt_is_used() {
    let text = include_str!("data/acpi/q35-smp4.txt").replace("TABLE APIC 1ffe", "TABLE APIC 1ffe");
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let apic = lines.iter_mut().find(|l| l.starts_with("TABLE APIC")).unwrap();
    // Flip one byte near the end of the MADT.
    let n = apic.len();
    let last = &apic[n - 2..];
    let flipped = if last == "00" { "01" } else { "00" };
    apic.replace_range(n - 2.., flipped);
    let mem = RecordedMemory::parse(&lines.join("\n")).unwrap();
    // SAFETY: recorded bytes only.
    let tables = unsafe { AcpiTables::from_rsdp(mem.clone(), mem.rsdp as usize) }.unwrap();
    let m = machine_info(&mem, mem.rsdp as usize, &tables).expect("the MADT is still used");
    assert_eq!(m.madt_warnings, [kernel::acpi::madt::Warning::Checksum]);
    assert_eq!(enabled_ids(&m), [0, 1, 2, 3]);
}

#[test]
fn malformed_recordings_are_reported_with_line_numbers() {
    let e = RecordedMemory::parse("RSDP zz 00").unwrap_err();
    assert_eq!((e.line, e.what), (1, "bad address"));
    let e = RecordedMemory::parse("RSDP 10 0\n").unwrap_err();
    assert_eq!(e.what, "bad hex bytes");
    let e = RecordedMemory::parse("TABLE APIC 10 00\n").unwrap_err();
    assert_eq!(e.what, "no RSDP line");
}
