//! `cargo xtask corpora`: what the repository keeps of the real-hardware
//! corpora in `../shared` (issue 30), regenerated from them:
//! - the 658 MADTs of the Linux Hardware Project's ACPI collection
//!   (`madt/linuxhw/`, CC-BY-4.0) and their rows of the independent
//!   decoder's `expected.json`, into `kernel/tests/data/acpi-real/`;
//! - a table of the facts the CPUID tests use, taken from the 88 dumps
//!   (which ship no licence and stay out), into
//!   `kernel/tests/data/cpuid-real/facts.json`.
//!
//! The 39 other MADTs (`madt/other/`) have no terms that allow copying:
//! the test reads them from `../shared/acpi-real` when it is there.

#[path = "../../kernel/tests/support/cpuid_dump.rs"]
#[allow(dead_code)] // `row_leaves` is the test's side
mod cpuid_dump;

use std::path::Path;

use serde_json::Value;

use crate::{Result, root};

/// The folder of MADTs that may be committed, inside `madt/`.
pub const COMMITTED_MADTS: &str = "linuxhw";

pub fn main() -> Result<()> {
    let shared = root().join("../shared");
    let (n_madt, n_cpuid) = (madts(&shared.join("acpi-real"), &root().join("kernel/tests/data/acpi-real"))?, cpuid(&shared.join("cpuid-real"), &root().join("kernel/tests/data/cpuid-real"))?);
    println!("corpora: {n_madt} MADTs with their expected rows, facts of {n_cpuid} CPUID dumps");
    Ok(())
}

fn madts(from: &Path, to: &Path) -> Result<usize> {
    let expected: Value = serde_json::from_str(&std::fs::read_to_string(from.join("expected.json")).map_err(|e| format!("{}: {e}", from.join("expected.json").display()))?)?;
    let prefix = format!("{COMMITTED_MADTS}/");
    let mut tables = serde_json::Map::new();
    let dir = to.join("madt").join(COMMITTED_MADTS);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    for (name, row) in expected["tables"].as_object().ok_or("expected.json has no tables")? {
        if let Some(file) = name.strip_prefix(&prefix) {
            std::fs::copy(from.join("madt").join(name), dir.join(file))?;
            tables.insert(name.clone(), row.clone());
        }
    }
    let n = tables.len();
    let out = serde_json::json!({
        "decoder": expected["decoder"],
        "row_formats": expected["row_formats"],
        "tables": tables,
    });
    std::fs::write(to.join("expected.json"), serde_json::to_string(&out)? + "\n")?;
    Ok(n)
}

fn cpuid(from: &Path, to: &Path) -> Result<usize> {
    let index: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(from.join("index.json")).map_err(|e| format!("{}: {e}", from.join("index.json").display()))?)?;
    let mut rows = Vec::new();
    for e in &index {
        let file = e["file"].as_str().ok_or("an index entry without a file")?;
        let text = String::from_utf8_lossy(&std::fs::read(from.join("dumps").join(file))?).to_string();
        rows.push(cpuid_dump::facts_row(e, &text));
    }
    std::fs::create_dir_all(to)?;
    // One row a line: diffs stay readable.
    let body: Vec<String> = rows.iter().map(serde_json::to_string).collect::<std::result::Result<_, _>>()?;
    std::fs::write(to.join("facts.json"), format!("[\n{}\n]\n", body.join(",\n")))?;
    Ok(rows.len())
}
