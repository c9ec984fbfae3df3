//! `GET /`: the live page for a browser, embedded in the image (no external
//! assets). It polls `/status` every second and draws the CPUs, the APIC
//! mode, the watchdog source, per-CPU rates of NMIs, int3 emulations and
//! events, patch cycles as small charts, torn executions in red, the newest
//! NMI-log lines, and links to every download.

/// The page, served as it is.
pub const HTML: &str = include_str!("live_page.html");

#[cfg(test)]
mod tests {
    use super::HTML;

    /// Every id the script writes exists in the page, and the page reads
    /// only keys `/status` has (the contract's encoder writes them).
    #[test]
    fn the_script_and_the_status_agree() {
        let ids: Vec<&str> = HTML.split("$(\"").skip(1).filter_map(|s| s.split('"').next()).collect();
        assert!(ids.len() >= 15, "{ids:?}");
        for id in ids.iter().filter(|i| !i.starts_with("c_")) {
            assert!(HTML.contains(&format!("id=\"{id}\"")), "the script writes #{id}, which the page lacks");
        }
        for key in ["cpu_brand", "cpus_online", "apic", "watchdog.source", "watchdog.hz", "clock.reference", "clock.tsc_hz", "uptime_ns", "patching.cycles", "watchdog.unknown", "watchdog.lockups", "int3_emulated", "events", "lost", "torn", "apic_id", "watchdog.log_records", "ftrace.enabled"] {
            let leaf = key.rsplit('.').next().unwrap();
            assert!(HTML.contains(leaf), "the page does not read {key}");
        }
        for link in ["/status", "/metrics", "/nmi-log", "/trace", "/trace.json", "/trace.ctf.tar", "/trace.dat"] {
            assert!(HTML.contains(&format!("href=\"{link}\"")), "no link to {link}");
        }
        assert!(!HTML.contains("http://") && !HTML.contains("https://"), "no external assets");
    }
}
