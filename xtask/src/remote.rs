//! Appliances running elsewhere, addressed by URL: a physical machine booted
//! from the USB image, a KVM guest on another host. `cargo xtask fetch`
//! downloads a snapshot from one; `cargo xtask soak --target URL` polls one
//! for the soak's duration exactly as it polls its own QEMU runs (`soak.rs`),
//! one row per target in the same report. Every exchange is bounded in time
//! (`qemu::http_bytes_at`): a target that stops answering is a failed row
//! with the reason, never a hang.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::Result;
use crate::qemu;
use crate::soak_run::{Counters, Machine, RunReport, parse_status};

/// `http://host[:port][/...]` or `host[:port]` as `host:port` (port 80 by default).
pub fn target_addr(url: &str) -> std::result::Result<String, String> {
    let rest = url.strip_prefix("http://").unwrap_or(url);
    if url.starts_with("https://") {
        return Err(format!("{url}: the appliance serves plain HTTP"));
    }
    let hostport = rest.split('/').next().unwrap_or("");
    if hostport.is_empty() || hostport.contains(char::is_whitespace) {
        return Err(format!("`{url}` names no host"));
    }
    Ok(match hostport.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() && p.parse::<u16>().is_ok() => hostport.to_string(),
        Some(_) => return Err(format!("`{url}`: bad port")),
        None => format!("{hostport}:80"),
    })
}

/// What `fetch` can download: (format, path, file written).
pub const FORMATS: &[(&str, &str, &str)] = &[
    ("ctf", "/trace.ctf.tar", "trace.ctf.tar"),
    ("dat", "/trace.dat", "trace.dat"),
    ("json", "/trace.json", "trace.json"),
    ("text", "/trace", "trace.txt"),
    ("status", "/status", "status.json"),
    ("metrics", "/metrics", "metrics.txt"),
    ("nmi-log", "/nmi-log", "nmi-log.txt"),
];

/// Download one snapshot in `format` into `out`; a CTF archive is also
/// unpacked there (`out/trace/`, what babeltrace2 reads). Returns the file
/// written and its size.
pub fn fetch(url: &str, format: &str, out: &Path) -> std::result::Result<(PathBuf, usize), String> {
    let addr = target_addr(url)?;
    let (_, path, file) = FORMATS.iter().find(|(f, _, _)| *f == format).ok_or_else(|| {
        let known: Vec<&str> = FORMATS.iter().map(|(f, _, _)| *f).collect();
        format!("unknown format `{format}` (one of {})", known.join(", "))
    })?;
    let (code, body) = qemu::http_bytes_at(&addr, &format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"))?;
    if code != 200 {
        return Err(format!("{url}{path} answered {code}: {}", String::from_utf8_lossy(&body[..body.len().min(200)])));
    }
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let dest = out.join(file);
    std::fs::write(&dest, &body).map_err(|e| format!("{}: {e}", dest.display()))?;
    if format == "ctf" {
        let st = std::process::Command::new("tar").arg("xf").arg(&dest).arg("-C").arg(out).status().map_err(|e| format!("tar: {e}"))?;
        if !st.success() {
            return Err(format!("{}: not a tar archive ({st})", dest.display()));
        }
    }
    Ok((dest, body.len()))
}

/// Poll a remote appliance's `/status` every `poll` for `seconds`: a row of
/// the soak report. It passes when it answered throughout (a silence longer
/// than `silence` fails it, as does no first answer within `silence`), and
/// its last counters show no torn execution under int3 and no unknown NMI.
pub fn watch(url: &str, seconds: u64, poll: Duration, silence: Duration) -> RunReport {
    let mut r = RunReport { failure: None, ..RunReport::not_started(&format!("target {url}"), String::new()) };
    let addr = match target_addr(url) {
        Ok(a) => a,
        Err(e) => {
            r.failure = Some(e);
            return r;
        }
    };
    let started = Instant::now();
    let mut last_answer = started;
    while started.elapsed() < Duration::from_secs(seconds) {
        let t = Instant::now();
        match qemu::http_at(&addr, &format!("GET /status HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")) {
            Ok((200, body)) => match parse_status(&body) {
                Ok((m, c)) => {
                    last_answer = Instant::now();
                    r.machine = Some(m);
                    r.samples.push((started.elapsed().as_secs_f64(), c));
                }
                Err(e) => {
                    r.failure = Some(e);
                    break;
                }
            },
            Ok((code, _)) => {
                r.failure = Some(format!("/status answered {code}"));
                break;
            }
            Err(e) if last_answer.elapsed() > silence => {
                r.failure = Some(format!("stopped answering /status for {} s ({e})", last_answer.elapsed().as_secs()));
                break;
            }
            Err(_) => {}
        }
        std::thread::sleep(poll.saturating_sub(t.elapsed()));
    }
    r.wall_s = started.elapsed().as_secs_f64();
    r.last = r.samples.last().map(|(_, c)| c.clone());
    if r.failure.is_none() {
        r.failure = judge(r.machine.as_ref(), r.last.as_ref());
    }
    r.passed = r.failure.is_none();
    if r.passed {
        r.kernel_verdict = Some(format!("answered {} polls over {:.0} s", r.samples.len(), r.wall_s));
    }
    r
}

/// What fails a remote row at its end (its own verdict line is on its
/// console, out of reach): no answer at all, torn executions under int3,
/// unknown NMIs.
fn judge(m: Option<&Machine>, c: Option<&Counters>) -> Option<String> {
    let (Some(m), Some(c)) = (m, c) else { return Some("never answered /status".into()) };
    if m.strategy == "int3" && c.torn != 0 {
        return Some(format!("{} torn executions under int3", c.torn));
    }
    if c.unknown_nmis != 0 {
        return Some(format!("{} unknown NMIs", c.unknown_nmis));
    }
    None
}

/// `cargo xtask fetch` options.
#[derive(clap::Args, Debug)]
pub struct FetchArgs {
    /// The appliance, e.g. http://192.168.1.50 or 192.168.1.50:8080
    url: String,
    /// ctf (unpacked for babeltrace2), json (Perfetto), text, status, metrics, nmi-log
    #[arg(long, default_value = "ctf")]
    format: String,
    /// Directory to write into
    #[arg(long, default_value = "target/fetch")]
    out: PathBuf,
}

pub fn fetch_main(a: &FetchArgs) -> Result<()> {
    let (file, n) = fetch(&a.url, &a.format, &a.out)?;
    println!("fetch: {n} bytes from {} into {}", a.url, file.display());
    if a.format == "ctf" {
        println!("read it with: babeltrace2 {}", a.out.join("trace").display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_urls() {
        assert_eq!(target_addr("http://192.168.1.50").unwrap(), "192.168.1.50:80");
        assert_eq!(target_addr("http://10.0.0.2:8080/status").unwrap(), "10.0.0.2:8080");
        assert_eq!(target_addr("box.lan:81").unwrap(), "box.lan:81");
        assert!(target_addr("https://x").unwrap_err().contains("plain HTTP"));
        assert!(target_addr("http://").unwrap_err().contains("no host"));
        assert!(target_addr("http://a:99999").unwrap_err().contains("bad port"));
    }

    #[test]
    fn unknown_formats_are_named() {
        assert!(fetch("http://127.0.0.1:9", "pcap", Path::new("/nonexistent")).unwrap_err().contains("one of ctf, dat, json"));
    }

    #[test]
    fn a_target_that_never_answers_is_a_failed_row_in_bounded_time() {
        // A port nothing listens on (bound, then closed).
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let t = Instant::now();
        let r = watch(&format!("http://127.0.0.1:{port}"), 30, Duration::from_millis(100), Duration::from_millis(500));
        assert!(!r.passed);
        assert!(r.failure.as_deref().unwrap().starts_with("stopped answering"), "{:?}", r.failure);
        assert!(t.elapsed() < Duration::from_secs(10), "took {:?}", t.elapsed());
    }
}
