//! The TSC frequency CPUID enumerates (`kernel::time::reference`) and the
//! performance-counter watchdog's choice (`kernel::nmi::pmu::offer`) over
//! the CPUID of 88 real processors, compared with what an independent
//! decoder read in each (its `index.json`).
//!
//! The dumps (`../shared/cpuid-real`) ship with no licence, so the
//! repository keeps a table of the facts the tests use, taken from them by
//! `cargo xtask corpora`: per processor the dump's name and sha1, the
//! decoder's fields, and the registers of the leaves the kernel reads
//! (`kernel/tests/data/cpuid-real/facts.json`, see `support/cpuid_dump.rs`).
//! The tests run over the table; where `../shared/cpuid-real` lies beside
//! the clone they also check that the table is what the dumps give, and run
//! over the dumps' whole first blocks (so a leaf the table lacks shows).

#[path = "support/cpuid_dump.rs"]
mod cpuid_dump;

use std::collections::BTreeMap;
use std::path::PathBuf;

use kernel::time::reference::{self, Candidate, CpuidLeaves, CrystalFrom, Reference, ppm};
use serde_json::Value;

fn shared() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/cpuid-real")
}

/// One processor: the dump's name, the decoder's reading, the registers.
struct Cpu {
    file: String,
    index: Value,
    leaves: BTreeMap<u32, [u32; 4]>,
}

/// The committed table's rows.
fn facts() -> Vec<Value> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/cpuid-real/facts.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("facts.json")
}

/// The processors of the committed table.
fn table(rows: &[Value]) -> Vec<Cpu> {
    rows.iter().map(|r| Cpu { file: r["file"].as_str().expect("file").to_string(), index: r["index"].clone(), leaves: cpuid_dump::row_leaves(r) }).collect()
}

/// The dumps themselves, when `../shared/cpuid-real` is there: their whole
/// first blocks. Also checks that the committed table (`committed`) is what
/// they give.
fn dumps(committed: &[Value]) -> Option<Vec<Cpu>> {
    let text = std::fs::read_to_string(shared().join("index.json")).ok()?;
    let index: Vec<Value> = serde_json::from_str(&text).expect("index.json");
    let mut out = Vec::new();
    for e in &index {
        let file = e["file"].as_str().expect("file");
        let dump = String::from_utf8_lossy(&std::fs::read(shared().join("dumps").join(file)).unwrap_or_else(|err| panic!("{file}: {err}"))).to_string();
        let row = cpuid_dump::facts_row(e, &dump);
        let mine = committed.iter().find(|r| r["file"] == file).unwrap_or_else(|| panic!("{file} is not in facts.json: run `cargo xtask corpora`"));
        assert_eq!(&row, mine, "{file}: facts.json is not what the dump gives: run `cargo xtask corpora`");
        out.push(Cpu { file: file.to_string(), index: e.clone(), leaves: cpuid_dump::first_block(&dump) });
    }
    Some(out)
}

/// The table, and the dumps where they are beside the clone.
fn sources() -> Vec<(&'static str, Vec<Cpu>)> {
    let rows = facts();
    let mut v = vec![("facts.json", table(&rows))];
    match dumps(&rows) {
        Some(d) => v.push(("../shared/cpuid-real", d)),
        None => eprintln!("../shared/cpuid-real is not beside the clone: the tests ran over the committed facts table only"),
    }
    v
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

#[test]
fn tsc_from_cpuid_over_real_processors() {
    for (from, cpus) in sources() {
        tsc_from_cpuid(from, &cpus);
    }
}

fn tsc_from_cpuid(from: &str, entries: &[Cpu]) {
    assert!(entries.len() >= 88, "{from} has {} processors", entries.len());
    let (mut leaf15, mut leaf16, mut model, mut none) = (0, 0, 0, 0);
    let mut problems = Vec::new();
    for cpu in entries {
        let (file, e, leaves) = (&cpu.file, &cpu.index, &cpu.leaves);
        let l = CpuidLeaves::read(|leaf, _| leaves.get(&leaf).copied().unwrap_or([0; 4]));
        // The parse agrees with the decoder on what the computation reads.
        let mut check = |what: &str, ours: String, theirs: String| {
            if ours != theirs {
                problems.push(format!("{file}: {what}: ours {ours}, index {theirs}"));
            }
        };
        check("vendor is Intel", l.intel.to_string(), (e["vendor"] == "GenuineIntel").to_string());
        check("family", l.family.to_string(), e["family"].to_string());
        check("model", l.model.to_string(), e["model"].to_string());
        let l15 = &e["leaf_0x15"];
        if !l15.is_null() {
            check("leaf 0x15", format!("{:?}", l.leaf15), format!("{:?}", [u(&l15["eax_denominator"]), u(&l15["ebx_numerator"]), u(&l15["ecx_crystal_hz"])]));
        }
        let l16 = &e["leaf_0x16"];
        if !l16.is_null() {
            check("leaf 0x16 base", l.leaf16[0].to_string(), l16["base_mhz"].to_string());
        }

        let got = reference::tsc_from_cpuid(&l);
        let intel_ratio = e["vendor"] == "GenuineIntel" && !l15.is_null() && u(&l15["eax_denominator"]) != 0 && u(&l15["ebx_numerator"]) != 0;
        match (&got, intel_ratio) {
            (Err(_), false) => none += 1,
            (Ok(_), false) => problems.push(format!("{file}: a frequency without an Intel 0x15 ratio: {got:?}")),
            (Err(why), true) => {
                // Only a ratio with nothing to scale it: crystal 0, no 0x16 base, no model entry.
                let base = if l16.is_null() { 0 } else { u(&l16["base_mhz"]) };
                if u(&l15["ecx_crystal_hz"]) != 0 || base != 0 {
                    problems.push(format!("{file}: no frequency ({why}) although the leaves give one"));
                }
                none += 1;
            }
            (Ok(t), true) => match t.from {
                // The crystal given: exactly the decoder's product.
                CrystalFrom::Leaf15 => {
                    leaf15 += 1;
                    check("TSC Hz from crystal x ratio", t.tsc_hz.to_string(), l15["tsc_hz"].to_string());
                }
                // From 0x16: the base frequency, to the rounding of the ratio.
                CrystalFrom::Leaf16 => {
                    leaf16 += 1;
                    let base = u(&l16["base_mhz"]) * 1_000_000;
                    if ppm(base, t.tsc_hz).abs() > 1000 {
                        problems.push(format!("{file}: {} Hz from the 0x16 base {base} Hz differs by {} ppm", t.tsc_hz, ppm(base, t.tsc_hz)));
                    }
                }
                // Linux's per-model crystal: one of its three known crystals.
                CrystalFrom::Model(_) => {
                    model += 1;
                    if ![19_200_000, 24_000_000, 25_000_000].contains(&t.crystal_hz) {
                        problems.push(format!("{file}: model crystal {}", t.crystal_hz));
                    }
                }
            },
        }

        // The choice over this CPU: with an HPET that agrees to 0.5%, CPUID's
        // enumeration wins where it exists and no warning is raised; a CPU
        // without it takes the HPET.
        let measured = got.as_ref().map_or(2_000_000_000, |t| t.tsc_hz + t.tsc_hz / 200);
        let cands = [
            Candidate { reference: Reference::Cpuid, result: got.map(|t| t.tsc_hz).map_err(String::from) },
            Candidate { reference: Reference::Hpet, result: Ok(measured) },
        ];
        let ch = reference::choose(&cands, None, reference::leaf16_base_hz(&l)).expect("a choice");
        let want = if cands[0].result.is_ok() { Reference::Cpuid } else { Reference::Hpet };
        if ch.reference != want || !ch.warnings.is_empty() {
            problems.push(format!("{file}: chose {:?} with warnings {:?}", ch.reference, ch.warnings));
        }
    }
    assert!(problems.is_empty(), "{} problems:\n{}", problems.len(), problems.join("\n"));
    // The data covers every path (counts from the data, not from this code).
    assert!(leaf15 >= 15 && leaf16 >= 5 && model >= 1 && none >= 40, "crystal from 0x15: {leaf15}, from 0x16: {leaf16}, by model: {model}, none: {none}");
    eprintln!("{from}: {} CPUs: crystal from 0x15 {leaf15}, from 0x16 {leaf16}, by model {model}, no CPUID frequency {none}", entries.len());
}

/// The performance-counter watchdog's choice (`kernel::nmi::pmu::offer`) on
/// every real processor, against the decoder's leaf 0xA and AMD facts: the
/// register set, the counter width and how many counters, or no counter.
#[test]
fn pmu_offer_over_real_processors() {
    for (from, cpus) in sources() {
        pmu_offer(from, &cpus);
    }
}

fn pmu_offer(from: &str, cpus: &[Cpu]) {
    use kernel::nmi::pmu::{Counter, Offer, offer};
    let (mut intel, mut amd, mut none) = (0, 0, 0);
    let mut problems = Vec::new();
    for cpu in cpus {
        let (file, e) = (&cpu.file, &cpu.index);
        let leaves = cpu.leaves.clone();
        let c = raw_cpuid::CpuId::with_cpuid_reader(move |l: u32, _s: u32| {
            let [a, b, c, d] = leaves.get(&l).copied().unwrap_or([0; 4]);
            raw_cpuid::CpuIdResult { eax: a, ebx: b, ecx: c, edx: d }
        });
        let got = offer(&c);
        let vendor = e["vendor"].as_str().unwrap_or("");
        let pm = &e["arch_perfmon"];
        let want = match vendor {
            "GenuineIntel" | "CentaurHauls" | "  Shanghai  " => {
                let version = u(&pm["version"]);
                let unavailable = u64::from_str_radix(pm["events_unavailable_ebx"].as_str().unwrap_or("0x0").trim_start_matches("0x"), 16).unwrap_or(0);
                if pm.is_null() || version == 0 || u(&pm["gp_counters"]) == 0 || unavailable & 1 != 0 {
                    None
                } else {
                    Some((Counter::IntelArch { version: version as u8 }, u(&pm["gp_width"]) as u8, u(&pm["gp_counters"]) as u8))
                }
            }
            "AuthenticAMD" | "HygonGenuine" => {
                let counter = if e["amd_perfmon_v2"] == true {
                    Counter::AmdPerfMonV2
                } else if e["amd_perfctr_ext_core"] == true {
                    Counter::AmdExtCore
                } else {
                    Counter::AmdLegacy
                };
                Some((counter, 48, u(&e["amd_core_counters"]) as u8))
            }
            _ => None,
        };
        match (got, want) {
            (Offer::Counter { counter, width, counters }, Some(w)) if (counter, width, counters) == w => {
                if matches!(counter, Counter::IntelArch { .. }) { intel += 1 } else { amd += 1 }
            }
            (Offer::None(_), None) => none += 1,
            (g, w) => problems.push(format!("{file} ({vendor}): offer {g:?}, index says {w:?}")),
        }
    }
    assert!(problems.is_empty(), "{} problems:\n{}", problems.len(), problems.join("\n"));
    assert!(intel >= 40 && amd >= 15 && none >= 5, "intel {intel}, amd {amd}, none {none}");
    eprintln!("{from}: PMU offers: Intel-architectural {intel}, AMD {amd}, none {none}");
}
