//! The TSC frequency CPUID enumerates (`kernel::time::reference`), over the
//! CPUID dumps of 88 real processors in `../shared/cpuid-real`, compared with
//! the values an independent decoder wrote into its `index.json`. The data is
//! read at test time and never committed; a missing folder fails the test
//! and says where it is looked for.
//!
//! The dumps are parsed here from their documented text format
//! (`../shared/cpuid-real/README.md`): `CPUID <leaf>: EAX-EBX-ECX-EDX`, the
//! first logical CPU's block only (it ends where leaf 0 comes again).

use std::collections::HashMap;
use std::path::PathBuf;

use kernel::time::reference::{self, Candidate, CpuidLeaves, CrystalFrom, Reference, ppm};
use serde_json::Value;

fn shared() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/cpuid-real")
}

fn hex8(s: &str) -> Option<u32> {
    (s.len() == 8 && s.bytes().all(|b| b.is_ascii_hexdigit())).then(|| u32::from_str_radix(s, 16).ok()).flatten()
}

/// Subleaf-0 values of every leaf in the first logical CPU's block.
fn first_block(text: &str) -> HashMap<u32, [u32; 4]> {
    let mut leaves = HashMap::new();
    let mut rest = text;
    while let Some(i) = rest.find("CPUID ") {
        rest = &rest[i + 6..];
        let Some(leaf) = rest.get(..8).and_then(hex8) else { continue };
        // Then optional blanks and a colon, then the four registers.
        let after = rest[8..].trim_start_matches([' ', '\t', ':']);
        let regs: Vec<u32> = after.get(..35).map(|r| r.split('-').filter_map(hex8).collect()).unwrap_or_default();
        if regs.len() != 4 {
            continue;
        }
        if leaf == 0 && leaves.contains_key(&0) {
            break; // the next logical CPU
        }
        leaves.entry(leaf).or_insert([regs[0], regs[1], regs[2], regs[3]]);
    }
    leaves
}

fn index() -> Vec<Value> {
    let path = shared().join("index.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}: the real-CPU data lives beside the clone in ../shared/cpuid-real", path.display()));
    serde_json::from_str(&text).expect("index.json")
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

#[test]
fn tsc_from_cpuid_over_real_processors() {
    let entries = index();
    assert!(entries.len() >= 88, "index.json lists {} dumps", entries.len());
    let (mut leaf15, mut leaf16, mut model, mut none) = (0, 0, 0, 0);
    let mut problems = Vec::new();
    for e in &entries {
        let file = e["file"].as_str().expect("file");
        let text = std::fs::read(shared().join("dumps").join(file)).unwrap_or_else(|err| panic!("{file}: {err}"));
        let leaves = first_block(&String::from_utf8_lossy(&text));
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
    eprintln!("{} CPUs: crystal from 0x15 {leaf15}, from 0x16 {leaf16}, by model {model}, no CPUID frequency {none}", entries.len());
}

/// The performance-counter watchdog's choice (`kernel::nmi::pmu::offer`) on
/// every real processor, against the decoder's leaf 0xA and AMD facts: the
/// register set, the counter width and how many counters, or no counter.
#[test]
fn pmu_offer_over_real_processors() {
    use kernel::nmi::pmu::{Counter, Offer, offer};
    let (mut intel, mut amd, mut none) = (0, 0, 0);
    let mut problems = Vec::new();
    for e in &index() {
        let file = e["file"].as_str().expect("file");
        let text = std::fs::read(shared().join("dumps").join(file)).unwrap_or_else(|err| panic!("{file}: {err}"));
        let leaves = first_block(&String::from_utf8_lossy(&text));
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
    eprintln!("PMU offers: Intel-architectural {intel}, AMD {amd}, none {none}");
}
