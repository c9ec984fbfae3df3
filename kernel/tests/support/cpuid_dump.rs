//! CPUID dumps of real processors (`../shared/cpuid-real`, InstLatx64's
//! text format, documented in that folder's README) and the table of facts
//! taken from them that the repository keeps
//! (`kernel/tests/data/cpuid-real/facts.json`): the dumps themselves ship
//! with no licence and stay out. One parser for the host test that reads
//! the table (`tests/cpuid_real.rs`) and the xtask command that writes it
//! (`cargo xtask corpora`), so the table is what the test would read from
//! the dumps.

use std::collections::BTreeMap;

use serde_json::{Value, json};

/// The leaves the kernel's CPUID readers use (subleaf 0): the vendor and
/// limits (0x0, 0x80000000), family/model and feature bits (0x1,
/// 0x80000001), thermal and power (0x6), structured features (0x7), the
/// architectural PMU (0xA), the TSC and core crystal (0x15, 0x16), the
/// invariant TSC (0x80000007), AMD's extended PMU (0x80000022).
pub const LEAVES: [u32; 12] = [0x0, 0x1, 0x6, 0x7, 0xA, 0x15, 0x16, 0x8000_0000, 0x8000_0001, 0x8000_0007, 0x8000_0008, 0x8000_0022];

/// The fields of the dumps' `index.json` (an independent decoder's reading)
/// that the tests compare with.
pub const INDEX_FIELDS: [&str; 11] =
    ["vendor", "family", "model", "stepping", "leaf_0x15", "leaf_0x16", "arch_perfmon", "amd_perfmon_v2", "amd_perfctr_ext_core", "amd_core_counters", "sha1"];

fn hex8(s: &str) -> Option<u32> {
    (s.len() == 8 && s.bytes().all(|b| b.is_ascii_hexdigit())).then(|| u32::from_str_radix(s, 16).ok()).flatten()
}

/// Subleaf-0 values of every leaf in the first logical CPU's block: lines
/// `CPUID <leaf>: EAX-EBX-ECX-EDX` (or with blanks or a tab before the
/// colon); the block ends where leaf 0 comes again.
pub fn first_block(text: &str) -> BTreeMap<u32, [u32; 4]> {
    let mut leaves = BTreeMap::new();
    let mut rest = text;
    while let Some(i) = rest.find("CPUID ") {
        rest = &rest[i + 6..];
        let Some(leaf) = rest.get(..8).and_then(hex8) else { continue };
        let after = rest[8..].trim_start_matches([' ', '\t', ':']);
        let regs: Vec<u32> = after.get(..35).map(|r| r.split('-').filter_map(hex8).collect()).unwrap_or_default();
        if regs.len() != 4 {
            continue;
        }
        if leaf == 0 && leaves.contains_key(&0) {
            break;
        }
        leaves.entry(leaf).or_insert([regs[0], regs[1], regs[2], regs[3]]);
    }
    leaves
}

/// One row of the table: the dump's name, the decoder's facts the tests
/// use, and the registers of [`LEAVES`] present in the dump's first block.
pub fn facts_row(index_entry: &Value, dump_text: &str) -> Value {
    let block = first_block(dump_text);
    let leaves: BTreeMap<String, Vec<String>> =
        LEAVES.iter().filter_map(|l| block.get(l).map(|r| (format!("{l:#010x}"), r.iter().map(|x| format!("{x:08x}")).collect()))).collect();
    let mut index = serde_json::Map::new();
    for f in INDEX_FIELDS {
        index.insert(f.to_string(), index_entry[f].clone());
    }
    json!({ "file": index_entry["file"], "index": index, "leaves": leaves })
}

/// A row's registers: (leaf) -> [eax, ebx, ecx, edx], absent leaves absent.
pub fn row_leaves(row: &Value) -> BTreeMap<u32, [u32; 4]> {
    let mut out = BTreeMap::new();
    if let Some(m) = row["leaves"].as_object() {
        for (k, v) in m {
            let leaf = u32::from_str_radix(k.trim_start_matches("0x"), 16).expect("a hex leaf");
            let r: Vec<u32> = v.as_array().expect("four registers").iter().map(|x| u32::from_str_radix(x.as_str().expect("hex"), 16).expect("hex")).collect();
            out.insert(leaf, [r[0], r[1], r[2], r[3]]);
        }
    }
    out
}
