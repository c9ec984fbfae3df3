//! The MADT walk (`kernel::acpi::madt`) over the MADTs of 697 real machines
//! (notebooks, desktops, servers up to 96 CPUs, revisions 1 to 6), compared
//! with what an independent decoder read in each (`expected.json`).
//!
//! 658 of them, from the Linux Hardware Project's ACPI collection
//! (CC-BY-4.0), are kept in the repository with their rows
//! (`tests/data/acpi-real/`, attribution in `tests/data/README.md`;
//! `cargo xtask corpora` copies them from `../shared`). The other 39 may not
//! be copied: they are read from `../shared/acpi-real` when it lies beside
//! the clone, and the test says whether it read them.

use std::path::PathBuf;

use kernel::acpi::machine::{MachineInfo, NmiTarget};
use kernel::acpi::madt::{self, Warning};
use serde_json::Value;

fn shared() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/acpi-real")
}

fn committed() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/acpi-real")
}

/// `expected.json`'s tables in `dir`, or None when there is no such file.
fn tables(dir: &std::path::Path) -> Option<serde_json::Map<String, Value>> {
    let text = std::fs::read_to_string(dir.join("expected.json")).ok()?;
    let v: Value = serde_json::from_str(&text).expect("expected.json is JSON");
    Some(v["tables"].as_object().expect("expected.json has tables").clone())
}

fn u64s(v: &Value) -> Vec<u64> {
    v.as_array().map(|a| a.iter().filter_map(Value::as_u64).collect()).unwrap_or_default()
}

fn rows(v: &Value) -> Vec<Vec<Option<u64>>> {
    v.as_array().map(|a| a.iter().map(|r| r.as_array().map(|r| r.iter().map(Value::as_u64).collect()).unwrap_or_default()).collect()).unwrap_or_default()
}

/// Where the walk and the decoder differ on one table, if anywhere.
fn compare(name: &str, bytes: &[u8], want: &Value) -> Vec<String> {
    let m = madt::parse(bytes);
    let mut diffs = Vec::new();
    let mut check = |what: &str, ours: String, theirs: String| {
        if ours != theirs {
            diffs.push(format!("{name}: {what}: ours {ours}, expected {theirs}"));
        }
    };
    let enabled: Vec<u64> = m.enabled().map(|c| c.apic_id as u64).collect();
    check("enabled APIC ids", format!("{enabled:?}"), format!("{:?}", u64s(&want["unique_enabled_apic_ids"])));
    let oc: Vec<u64> = m.cpus.iter().filter(|c| c.online_capable).map(|c| c.apic_id as u64).collect();
    check("online-capable APIC ids", format!("{oc:?}"), format!("{:?}", u64s(&want["online_capable_apic_ids"])));
    check("local APIC address", m.lapic_address.to_string(), want["lapic_address_effective"].to_string());
    check("PC-AT compatible", m.pcat_compat.to_string(), want["pcat_compat"].to_string());
    check("checksum", (!m.warnings.contains(&Warning::Checksum)).to_string(), want["checksum_ok"].to_string());
    let io: Vec<Vec<Option<u64>>> = m.ioapics.iter().map(|i| vec![Some(i.id as u64), Some(i.address as u64), Some(i.gsi_base as u64)]).collect();
    check("IO-APICs", format!("{io:?}"), format!("{:?}", rows(&want["ioapics"])));
    let ov: Vec<Vec<Option<u64>>> = m.overrides.iter().map(|o| vec![Some(o.bus as u64), Some(o.irq as u64), Some(o.gsi as u64), Some(o.flags as u64)]).collect();
    check("overrides", format!("{ov:?}"), format!("{:?}", rows(&want["overrides"])));
    // NMI rows: [entry type, applies to all, uid, LINT, flags]; the type is the decoder's alone.
    let nmis: Vec<Vec<Option<u64>>> = m
        .nmis
        .iter()
        .map(|n| {
            let (all, uid) = match n.target {
                NmiTarget::All => (1, None),
                NmiTarget::Uid(u) => (0, Some(u as u64)),
            };
            vec![Some(all), uid, Some(n.lint as u64), Some(n.flags as u64)]
        })
        .collect();
    let theirs: Vec<Vec<Option<u64>>> = rows(&want["nmis"]).into_iter().map(|r| r.into_iter().skip(1).collect::<Vec<_>>()).map(|r| if r[0] == Some(1) { vec![r[0], None, r[2], r[3]] } else { r }).collect();
    check("NMI entries", format!("{nmis:?}"), format!("{theirs:?}"));
    // The LINT pin that carries NMI to each enabled CPU.
    let info = MachineInfo { cpus: m.cpus.clone(), lapic_nmis: m.nmis.clone(), ..Default::default() };
    let lints: Vec<Vec<Option<u64>>> = info.enabled_cpus().map(|c| vec![Some(c.apic_id as u64), info.nmi_lint_for(c.uid).map(|n| n.lint as u64)]).collect();
    check("NMI LINT per enabled CPU", format!("{lints:?}"), format!("{:?}", rows(&want["nmi_lint_by_enabled_cpu"])));
    // Well-formed real tables walk to their end without a warning other than a checksum.
    if let Some(w) = m.warnings.iter().find(|w| !matches!(w, Warning::Checksum)) {
        diffs.push(format!("{name}: unexpected warning {w:?}"));
    }
    diffs
}

#[test]
fn every_real_madt_agrees_with_the_independent_decoder() {
    let kept = tables(&committed()).expect("tests/data/acpi-real/expected.json is in the repository");
    assert_eq!(kept.len(), 658, "the committed MADTs");
    let mut diffs = Vec::new();
    let mut check = |dir: &std::path::Path, name: &str, want: &Value| {
        let bytes = std::fs::read(dir.join("madt").join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(want["sha1"].is_string(), "{name}: no sha1 in expected.json");
        diffs.extend(compare(name, &bytes, want));
    };
    for (name, want) in &kept {
        check(&committed(), name, want);
    }
    let mut extended = 0;
    match tables(&shared()) {
        Some(all) => {
            assert!(all.len() >= 697, "../shared/acpi-real/expected.json lists {} tables", all.len());
            for (name, want) in all.iter().filter(|(n, _)| !kept.contains_key(*n)) {
                check(&shared(), name, want);
                extended += 1;
            }
            eprintln!("MADTs: {} from the repository, {extended} more from ../shared/acpi-real", kept.len());
        }
        None => eprintln!("MADTs: {} from the repository; the 39 others were not available (../shared/acpi-real is not beside the clone)", kept.len()),
    }
    let n = kept.len() + extended;
    assert!(diffs.is_empty(), "{} of {n} tables disagree:\n{}", diffs.len(), diffs.iter().take(20).cloned().collect::<Vec<_>>().join("\n"));
}
