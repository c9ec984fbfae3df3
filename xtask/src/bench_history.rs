//! `bench/history.csv`: every recorded `cargo xtask bench` figure, one row
//! each, so runs compare over time without keeping their folders (git keeps
//! those). Columns: commit, date, host CPU, source (the run), boot, figure,
//! value, unit. `cargo xtask bench --record` appends the run just made;
//! `--record-from DIR` appends an earlier run's `kernel.json`.

use std::path::Path;

use serde_json::Value;

/// The file's first line.
pub const HEADER: &str = "commit,date,host,source,boot,figure,value,unit";

/// A CSV field: quoted when it holds a comma, a quote or a line break.
fn field(s: &str) -> String {
    if s.contains([',', '"', '\n']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s.to_string() }
}

/// The rows of one run's `kernel.json` (`results`: boot, name, value, unit).
pub fn rows(commit: &str, date: &str, source: &str, kernel_json: &Value) -> Result<Vec<String>, String> {
    let host = kernel_json["host"].as_str().unwrap_or("unknown host");
    let results = kernel_json["results"].as_array().ok_or("kernel.json has no results")?;
    results
        .iter()
        .map(|r| {
            let name = r["name"].as_str().ok_or("a result without a name")?;
            let value = r["value"].as_f64().ok_or_else(|| format!("{name}: no value"))?;
            Ok([commit, date, host, source, r["boot"].as_str().unwrap_or(""), name, &value.to_string(), r["unit"].as_str().unwrap_or("")].map(field).join(","))
        })
        .collect()
}

/// Append `rows` to the history at `path` (with its header when new).
pub fn append(path: &Path, rows: &[String]) -> std::io::Result<()> {
    use std::io::Write;
    let new = !path.exists();
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
    if new {
        writeln!(f, "{HEADER}")?;
    }
    for r in rows {
        writeln!(f, "{r}")?;
    }
    Ok(())
}

/// The run's commit and date from a run folder's name
/// (`run-2026-11-30-ed434ec`, `run-2026-11-29-final`): the date, and the
/// commit where the name carries one (7 to 40 hex digits), else empty.
pub fn from_folder_name(name: &str) -> (String, String) {
    let parts: Vec<&str> = name.split('-').collect();
    let date = if parts.len() >= 4 && parts[1].len() == 4 { format!("{}-{}-{}", parts[1], parts[2], parts[3]) } else { String::new() };
    let commit = parts.get(4).filter(|c| (7..=40).contains(&c.len()) && c.bytes().all(|b| b.is_ascii_hexdigit())).map(|c| c.to_string()).unwrap_or_default();
    (commit, date)
}

/// Today's date (UTC) as YYYY-MM-DD, from the system clock.
pub fn today() -> String {
    civil(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() / 86_400).unwrap_or(0) as i64)
}

/// YYYY-MM-DD of `days` after 1970-01-01.
fn civil(days: i64) -> String {
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + (m <= 2) as i64;
    format!("{y:04}-{m:02}-{d:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_becomes_rows_with_quoted_fields() {
        let k = serde_json::json!({"host": "AMD EPYC, 2 cores", "results": [
            {"boot": "bench", "name": "cpus", "unit": "", "value": 4.0},
            {"boot": "service-e1000", "name": "fetch_median", "unit": "MB/s", "value": 41.25},
        ]});
        let r = rows("ed434ec", "2026-11-30", "run-2026-11-30-ed434ec", &k).unwrap();
        assert_eq!(r, ["ed434ec,2026-11-30,\"AMD EPYC, 2 cores\",run-2026-11-30-ed434ec,bench,cpus,4,", "ed434ec,2026-11-30,\"AMD EPYC, 2 cores\",run-2026-11-30-ed434ec,service-e1000,fetch_median,41.25,MB/s"]);
        assert!(rows("x", "d", "s", &serde_json::json!({})).is_err());
    }

    #[test]
    fn folder_names_give_date_and_commit() {
        assert_eq!(from_folder_name("run-2026-11-30-ed434ec"), ("ed434ec".into(), "2026-11-30".into()));
        assert_eq!(from_folder_name("run-2026-11-30-ed434ec-2"), ("ed434ec".into(), "2026-11-30".into()));
        assert_eq!(from_folder_name("run-2026-11-29-final"), (String::new(), "2026-11-29".into()));
        assert_eq!(from_folder_name("nics-2026-11-29-usb"), (String::new(), "2026-11-29".into()));
    }

    #[test]
    fn days_become_civil_dates() {
        assert_eq!(civil(0), "1970-01-01");
        assert_eq!(civil(11_016), "2000-02-29");
        assert_eq!(civil(20_000), "2024-10-04");
        assert!(today().as_str() >= "2026-01-01");
    }

    #[test]
    fn the_history_gets_its_header_once() {
        let p = std::env::temp_dir().join(format!("history-{}.csv", std::process::id()));
        let _ = std::fs::remove_file(&p);
        append(&p, &["a".into()]).unwrap();
        append(&p, &["b".into()]).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        let _ = std::fs::remove_file(&p);
        assert_eq!(text, format!("{HEADER}\na\nb\n"));
    }
}
