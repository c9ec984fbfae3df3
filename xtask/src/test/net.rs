//! The network and its NICs: /status and every path over each NIC, link flaps, NIC choice, static misconfiguration, starvation.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use super::harness::*;
use super::trace::ctf_check;
use crate::qemu::{self, http};

/// Network truth with a NIC (`virtio-net-pci` or `e1000`) and a correct
/// static address: the link is reported up, the gateway answers ARP, no
/// warning, heap figures in /status; a link flap through QMP `set_link` is
/// logged down, then up again, and counted in /status.
pub(super) fn link_case(elf: &Path, nic: &str, logs: &Path) -> std::result::Result<String, String> {
    let scratch = qemu::TempDir::new("link").map_err(|e| e.to_string())?;
    let port = qemu::free_port().map_err(|e| e.to_string())?;
    let mut spec = kernel_boot(elf, "patch=on patch_interval_us=1000 ip=10.0.2.15/24 gw=10.0.2.2", "2");
    spec.net = Some((port, nic.into()));
    let qmp_path = scratch.0.join("qmp.sock");
    spec.qmp = Some(qmp_path.clone());
    let (mut run, mut log) = spawn_serving(&spec, &logs.join(format!("net_link_{nic}.log")))?;
    if !log.contains("net: link up") {
        run.wait_line(Duration::from_secs(30), &mut log, |l| l.contains("net: link up")).ok_or("no `net: link up` line")?;
    }
    // The gateway (slirp's 10.0.2.2) answers the ARP probe.
    let t0 = Instant::now();
    let st = loop {
        let st = qemu::status(port)?;
        if st.net.gateway_answers.is_some() || t0.elapsed() > Duration::from_secs(20) {
            break st;
        }
        let _ = run.wait_line(run.started.elapsed() + Duration::from_millis(300), &mut log, |_| false);
    };
    let n = &st.net;
    if n.gateway_answers != Some(true) || n.link != "up" || n.dhcp || n.address.as_deref() != Some("10.0.2.15/24") || n.gateway.as_deref() != Some("10.0.2.2") || !n.warnings.is_empty() || st.heap_used == 0 || st.heap_free == 0 {
        return Err(format!("/status before the flap: net {n:?}, heap {} used {} free", st.heap_used, st.heap_free));
    }
    let mut qmp = qemu::Qmp::connect(&qmp_path, Duration::from_secs(10))?;
    qmp.execute("set_link", serde_json::json!({"name": "n0", "up": false}))?;
    run.wait_line(run.started.elapsed() + Duration::from_secs(20), &mut log, |l| l.contains("net: link down")).ok_or("no `net: link down` after set_link off")?;
    qmp.execute("set_link", serde_json::json!({"name": "n0", "up": true}))?;
    run.wait_line(run.started.elapsed() + Duration::from_secs(20), &mut log, |l| l.contains("net: link up again")).ok_or("no `net: link up again` after set_link on")?;
    let st = qemu::status(port)?;
    if st.net.link != "up" || st.net.link_changes != 2 || !st.net.warnings.is_empty() {
        return Err(format!("/status after the flap: {:?}", st.net));
    }
    let metrics = http(port, "GET /metrics HTTP/1.1\r\n\r\n")?.1;
    if !metrics.contains("appliance_net_link_up 1\n") || !metrics.contains("appliance_heap_bytes{state=\"used\"} ") {
        return Err("/metrics lacks the link and heap gauges".into());
    }
    promtool_check(&metrics)?;
    Ok(format!("heap {} KiB used, /metrics passes promtool", st.heap_used / 1024))
}

/// `GET /` in headless Chromium: the page's script fills in the live values
/// from /status (checked in the rendered DOM), and a screenshot is kept with
/// the test logs.
pub(super) fn live_page_case(elf: &Path, logs: &Path) -> std::result::Result<String, String> {
    let port = qemu::free_port().map_err(|e| e.to_string())?;
    let mut spec = kernel_boot(elf, "patch=on patch_interval_us=1000", "4");
    spec.net = Some((port, "virtio-net-pci".into()));
    let (mut run, mut log) = spawn_serving(&spec, &logs.join("live_page.log"))?;
    let url = format!("http://127.0.0.1:{port}/");
    let mut chromium = |extra: &[&str]| -> std::result::Result<std::process::Output, String> {
        let mut child = Command::new("chromium")
            .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1200,1000", "--virtual-time-budget=5000"])
            .args(extra)
            .arg(&url)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| format!("chromium: {e} (install the `chromium` package)"))?;
        // Bounded: a wedged browser is killed.
        let t = Instant::now();
        while child.try_wait().map_err(|e| e.to_string())?.is_none() {
            if t.elapsed() > Duration::from_secs(90) {
                let _ = child.kill();
                return Err("chromium did not finish within 90 s".into());
            }
            let _ = run.wait_line(run.started.elapsed() + Duration::from_millis(200), &mut log, |_| false);
        }
        child.wait_with_output().map_err(|e| e.to_string())
    };
    let dom = String::from_utf8_lossy(&chromium(&["--dump-dom"])?.stdout).to_string();
    for want in ["id=\"cpus\">4<", "id=\"source\">ipi-broadcast<", "id=\"torn\" class=\"good\">0<", "id=\"strategy\">int3/cpuid<", "href=\"/trace.ctf.tar\""] {
        if !dom.contains(want) {
            let facts = dom.split("class=\"facts\"").nth(1).and_then(|f| f.split("</div>").next()).unwrap_or(&dom);
            return Err(format!("the rendered page lacks `{want}`: {facts}"));
        }
    }
    let body = dom.split("id=\"percpu\">").nth(1).and_then(|b| b.split("</tbody>").next()).unwrap_or("");
    let rows = body.matches("<tr><td>").count();
    if rows != 4 {
        return Err(format!("{rows} per-CPU rows in the rendered page, expected 4"));
    }
    let shot = logs.join("live_page.png");
    chromium(&[&format!("--screenshot={}", shot.display())])?;
    if std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0) < 1000 {
        return Err("no screenshot".into());
    }
    Ok(format!("rendered with live values, screenshot {}", shot.display()))
}

/// Two NICs: `nic=e1000` (and `nic=` by PCI address) picks the one that
/// serves, over the virtio-net that comes first in the documented order.
pub(super) fn nic_choice_case(elf: &Path, logs: &Path) -> std::result::Result<String, String> {
    let mut seen = Vec::new();
    for (choice, wired, want) in [
        ("nic=e1000", "e1000,addr=03.0", "82540EM at 00:03.0"),
        ("nic=00:03.0", "e1000,addr=03.0", "82540EM at 00:03.0"),
        // The USB adapter's xHCI controller takes the next free slot, 00:03.0.
        ("nic=usb", "usb-net", "usb-net (CDC-ECM) at 00:03.0"),
    ] {
        let port = qemu::free_port().map_err(|e| e.to_string())?;
        let mut spec = kernel_boot(elf, &format!("patch=on patch_interval_us=1000 {choice}"), "2");
        // 00:02.0: a virtio-net with no backend (first in the documented order); 00:03.0: the NIC that is wired.
        spec.extra = vec!["-device".into(), "virtio-net-pci,addr=02.0".into()];
        spec.net = Some((port, wired.into()));
        let _serving = spawn_serving(&spec, &logs.join(format!("net_nic_choice_{}.log", choice.replace([':', '=', '.'], "_")))).map_err(|e| format!("{choice}: {e}"))?;
        let st = qemu::status(port)?;
        if st.net.nic != want {
            return Err(format!("{choice}: /status says the NIC is `{}`, expected `{want}`", st.net.nic));
        }
        seen.push(format!("{choice} -> {}", st.net.nic));
    }
    Ok(seen.join(", "))
}

/// Two NICs, the first without a link (an e1000 at 00:02.0 whose link QMP
/// takes down before the guest runs), the second wired (an igb at 00:03.0
/// with the port forward): `nic=auto` serves on the one whose link came up,
/// and the console says why the first was passed over.
pub(super) fn first_link_case(elf: &Path, logs: &Path) -> std::result::Result<String, String> {
    let scratch = qemu::TempDir::new("first-link").map_err(|e| e.to_string())?;
    let port = qemu::free_port().map_err(|e| e.to_string())?;
    let mut spec = kernel_boot(elf, "patch=on patch_interval_us=1000", "2");
    spec.extra = ["-S", "-netdev", "user,id=cold", "-device", "e1000,netdev=cold,addr=02.0"].map(String::from).to_vec();
    spec.net = Some((port, "igb,addr=03.0".into()));
    let qmp_path = scratch.0.join("qmp.sock");
    spec.qmp = Some(qmp_path.clone());
    let mut run = qemu::spawn(&spec, &logs.join("net_first_link_up_serves.log"), false).map_err(|e| e.to_string())?;
    let mut qmp = qemu::Qmp::connect(&qmp_path, Duration::from_secs(10))?;
    qmp.execute("set_link", serde_json::json!({"name": "cold", "up": false}))?;
    qmp.execute("cont", serde_json::json!({}))?;
    let mut log = String::new();
    run.wait_line(Duration::from_secs(90), &mut log, |l| l.contains("net: listening on http://")).ok_or("the service never listened")?;
    let chose = "net: 2 NICs; 82576 at 00:03.0 has the first link up and serves";
    let passed = "net: 82540EM at 00:02.0 not chosen (no link)";
    if !log.contains(chose) || !log.contains(passed) {
        return Err(format!("the console does not say `{chose}` and `{passed}`"));
    }
    let st = qemu::status(port)?;
    if st.net.nic != "82576 at 00:03.0" || st.net.link != "up" {
        return Err(format!("/status: {:?}", st.net));
    }
    Ok(format!("served by {}", st.net.nic))
}

/// `promtool check metrics` (Prometheus's own linter, Debian package
/// `prometheus`) on a /metrics body: no problem reported, exit 0.
pub(super) fn promtool_check(metrics: &str) -> std::result::Result<(), String> {
    use std::io::Write;
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("promtool: {e} (install the `prometheus` package)"))?;
    child.stdin.take().ok_or("promtool stdin")?.write_all(metrics.as_bytes()).map_err(|e| e.to_string())?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if !out.status.success() || !out.stdout.is_empty() || !out.stderr.is_empty() {
        return Err(format!(
            "promtool check metrics: {} {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

/// A static address that cannot work is said on the console: a gateway off
/// the subnet at once, a gateway that never answers ARP after its probes.
pub(super) fn static_misconfig_case(elf: &Path, logs: &Path) -> std::result::Result<String, String> {
    for (append, want, within) in [
        ("ip=192.168.50.10/24 gw=10.0.2.2", "net: gateway 10.0.2.2 is not in the subnet of 192.168.50.10/24", 30),
        ("ip=192.168.50.10/24 gw=192.168.50.1", "net: no ARP reply from gateway 192.168.50.1 after 3 requests", 40),
    ] {
        let port = qemu::free_port().map_err(|e| e.to_string())?;
        let mut spec = kernel_boot(elf, &format!("patch=on patch_interval_us=1000 {append}"), "2");
        spec.net = Some((port, "virtio-net-pci".into()));
        let mut run = qemu::spawn(&spec, &logs.join(format!("net_static_{}.log", append.replace(['=', '/', ' '], "_"))), false).map_err(|e| e.to_string())?;
        let mut log = String::new();
        run.wait_line(Duration::from_secs(within), &mut log, |l| l.contains(want)).ok_or_else(|| format!("`{append}`: no `{want}` within {within} s"))?;
    }
    Ok(String::new())
}

/// Nobody starves the endpoint: with 2 never-read trace streams and 20
/// slowloris connections held open for 30 s, `/status` answers at least 95%
/// of its polls, the stalled streams are cut and the slow clients get 408.
/// (The host's loopback buffers take about 4 MB of each stream before its
/// window closes; two streams fill them within seconds.)
pub(super) fn starvation_case(elf: &Path, logs: &Path) -> std::result::Result<String, String> {
    let port = qemu::free_port().map_err(|e| e.to_string())?;
    let mut spec = kernel_boot(elf, "patch=on patch_interval_us=1000", "4");
    spec.net = Some((port, "virtio-net-pci".into()));
    let (_run, _) = spawn_serving(&spec, &logs.join("net_starvation.log"))?;
    let probe = crate::stress::starvation(port, 30, 2, 20);
    let h = qemu::status(port)?.http;
    if probe.success_pct() < 95.0 || probe.ok < 20 || h.cut_stalled == 0 || h.timeouts == 0 {
        return Err(format!("/status {:.1}% of {} polls ({:?}); guest cut {} stalled streams, sent {} 408s", probe.success_pct(), probe.ok, probe.errors, h.cut_stalled, h.timeouts));
    }
    Ok(format!("/status {:.1}% ok, p99 {:.0} ms; {} streams cut, {} 408s", probe.success_pct(), probe.p99_ms, h.cut_stalled, h.timeouts))
}

/// Boot with a NIC, wait for the service, and query it like a user would.
pub(super) fn net_case(elf: &Path, nic: &str, cpu: Option<&str>, logs: &Path) -> std::result::Result<(), String> {
    let port = qemu::free_port().map_err(|e| e.to_string())?;
    let mut spec = kernel_boot(elf, "patch=on patch_interval_us=1000 control_token=s3cret trace_nmi_path ftrace_keep_on_nmi", "4");
    spec.net = Some((port, nic.into()));
    spec.cpu = cpu.map(String::from);
    let tag = format!("{nic}{}", cpu.map_or(String::new(), |c| format!("_{c}"))).replace([',', '='], "_");
    let mut run = qemu::spawn(&spec, &logs.join(format!("net_{tag}.log")), false).map_err(|e| e.to_string())?;
    let mut log = String::new();
    run.wait_line(Duration::from_secs(60), &mut log, |l| l.contains("net: listening on http://"))
        .ok_or_else(|| format!("the service never listened; log tail: {}", log.lines().rev().take(5).collect::<Vec<_>>().join(" | ")))?;
    if !log.contains("net: DHCP lease acquired: 10.0.2.15/24 router 10.0.2.2") {
        return Err("no `net: DHCP lease acquired` line naming the address and router".into());
    }
    if log.contains("DHCP lease lost") {
        return Err("`DHCP lease lost` before any lease was held".into());
    }
    // QEMU's usb-net (NetChip 0525:a4a2), found on the xHCI root port and driven as CDC-ECM.
    if nic.starts_with("usb-net") && !(log.contains(" 0525:a4a2 class 02.06 CDC Ethernet (ECM) (full speed): driver usb-net (CDC-ECM), MAC 40:") && log.contains("net: usb-net (CDC-ECM) at ")) {
        return Err("no console line naming the USB adapter, its class and its driver".into());
    }
    let st = qemu::status(port)?;
    let want_apic = if cpu.is_some_and(|c| c.contains("-x2apic")) { "xapic" } else { "x2apic" };
    if st.cpus_online != 4 || st.cpus.len() != 4 || st.watchdog.source != "ipi-broadcast" || st.apic != want_apic {
        return Err(format!("/status: {st:?}"));
    }
    if st.cpus[1].apic_id != 1 || st.patching.strategy != "int3" || !st.ftrace.enabled || st.uptime_ns == 0 || !st.cmdline.contains("control_token=") {
        return Err(format!("/status: {st:?}"));
    }
    if st.cpus.iter().all(|c| c.events == 0) {
        return Err(format!("/status: no CPU recorded events: {st:?}"));
    }
    let (code, _) = http(port, "GET /nmi-log HTTP/1.1\r\n\r\n")?;
    if code != 200 {
        return Err(format!("/nmi-log: {code}"));
    }
    let (code, body) = http(port, "GET /metrics HTTP/1.1\r\n\r\n")?;
    if code != 200 || !body.contains("appliance_int3_emulated_total{cpu=\"1\",apic_id=\"1\"}") || !body.contains("appliance_cpus_online 4") {
        return Err(format!("/metrics: {code} {body}"));
    }
    let (code, body) = http(port, "GET /trace.json HTTP/1.1\r\n\r\n")?;
    if code != 200 || !body.starts_with("{\"displayTimeUnit\"") || !body.trim_end().ends_with('}') || !body.contains("\"ph\":\"i\"") {
        return Err(format!("/trace.json: {code}, {} bytes", body.len()));
    }
    // One JSON document with a named track per CPU (Perfetto shows "cpu N").
    let doc: serde_json::Value = serde_json::from_str(&body).map_err(|e| format!("/trace.json is not JSON: {e}"))?;
    let tracks = doc["traceEvents"].as_array().map_or(0, |a| a.iter().filter(|e| e["ph"] == "M" && e["name"] == "thread_name").count());
    if tracks != 4 {
        return Err(format!("/trace.json names {tracks} CPU tracks, expected 4"));
    }
    // Patch batches and sync rounds are spans: complete events with a duration.
    for kind in ["patch_batch", "sync_round"] {
        let spans = doc["traceEvents"].as_array().map_or(0, |a| a.iter().filter(|e| e["name"] == kind && e["ph"] == "X" && e["dur"].as_f64().is_some_and(|d| d > 0.0)).count());
        if spans == 0 {
            return Err(format!("/trace.json has no {kind} complete event with a duration"));
        }
    }
    // follow=1 streams live: read a while, then hang up mid-stream. A
    // connection reset while every socket is busy is retried, as a client would.
    let mut follow = Err(String::new());
    for _ in 0..3 {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
        s.write_all(b"GET /trace?follow=1 HTTP/1.1\r\n\r\n").map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(2))).map_err(|e| e.to_string())?;
        let (mut got, mut buf, t0) = (Vec::new(), [0u8; 65536], Instant::now());
        let mut ended = false;
        while t0.elapsed() < Duration::from_secs(3) {
            match s.read(&mut buf) {
                Ok(0) => {
                    ended = true;
                    break;
                }
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
                Err(_) => {}
            }
        }
        let text = String::from_utf8_lossy(&got);
        follow = if ended && !got.is_empty() {
            Err("follow=1 stream ended by itself".into())
        } else if !text.starts_with("HTTP/1.1 200") || text.contains("# end of snapshot") || text.lines().count() < 10 {
            Err(format!("follow=1: {} lines, head {:?}", text.lines().count(), text.lines().take(3).collect::<Vec<_>>()))
        } else {
            Ok(())
        };
        if follow.is_ok() {
            break;
        }
    }
    follow?;
    ctf_check(port, logs, &tag)?;
    // Two worker CPUs ran beside those downloads: they lent rounds of network work.
    let lent = qemu::status(port)?.http.lent_polls;
    if lent == 0 {
        return Err("no worker CPU lent a round of network work to the downloads (http.lent_polls 0)".into());
    }
    // The NMI-path sites have been traced by now (trace_nmi_path): the warning is served.
    let (code, body) = http(port, "GET /nmi-log HTTP/1.1\r\n\r\n")?;
    if code != 200 || !body.contains("WARNING: ftraced code called from NMI context") || !body.contains(" <NMI> [<") {
        return Err(format!("/nmi-log: {code} {body}"));
    }
    let (code, body) = http(port, "GET /trace HTTP/1.1\r\n\r\n")?;
    let functions = body.lines().filter(|l| l.contains(": appliance::traced::traced_") || l.contains("::poll <-")).count();
    if code != 200 || !body.starts_with("# tracer: function") || !body.contains("# end of snapshot") || functions == 0 {
        return Err(format!("/trace: {code}, {functions} function lines, head {:?}", body.lines().take(4).collect::<Vec<_>>()));
    }
    // Bad input, and the RFC 9112 framing rules: each answered at once
    // (never the 10 s request timeout).
    for (req, want) in [
        ("GET /nope HTTP/1.1\r\n\r\n", 404),
        ("POST /status HTTP/1.1\r\n\r\n", 405),
        ("garbage\r\n\r\n", 400),
        ("GET /status HTTP/1.1\nHost: a\n\n", 200),
        ("POST /control/tracing HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\non", 400),
        ("POST /control/tracing HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\non\r\n0\r\n\r\n", 400),
        ("GET /status HTTP/1.1\r\nExpect: teapot\r\n\r\n", 417),
    ] {
        let t = Instant::now();
        let (code, _) = http(port, req)?;
        if code != want || t.elapsed() > Duration::from_secs(5) {
            return Err(format!("{req:?} answered {code} after {:.1} s, expected {want} at once", t.elapsed().as_secs_f64()));
        }
    }
    {
        use std::io::{Read, Write};
        // Expect: 100-continue is answered before the body is sent.
        let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
        c.set_read_timeout(Some(Duration::from_secs(5))).map_err(|e| e.to_string())?;
        c.write_all(b"POST /control/tracing HTTP/1.1\r\nExpect: 100-continue\r\nAuthorization: Bearer s3cret\r\nContent-Length: 2\r\n\r\n").map_err(|e| e.to_string())?;
        let mut first = [0u8; 25];
        c.read_exact(&mut first).map_err(|e| format!("no 100 Continue within 5 s: {e}"))?;
        if &first != b"HTTP/1.1 100 Continue\r\n\r\n" {
            return Err(format!("Expect: 100-continue answered {:?}", String::from_utf8_lossy(&first)));
        }
        c.write_all(b"on").map_err(|e| e.to_string())?;
        let mut rest = Vec::new();
        let _ = c.read_to_end(&mut rest);
        if !rest.starts_with(b"HTTP/1.1 200") {
            return Err(format!("after 100 Continue: {:?}", String::from_utf8_lossy(&rest)));
        }
        // Pipelined requests: the first is answered, stating Connection: close, and the connection closes.
        let mut p = std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
        p.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
        p.write_all(b"GET /nmi-log HTTP/1.1\r\n\r\nGET /status HTTP/1.1\r\n\r\nGET /metrics HTTP/1.1\r\n\r\n").map_err(|e| e.to_string())?;
        let mut all = Vec::new();
        p.read_to_end(&mut all).map_err(|e| format!("pipelined: {e}"))?;
        let text = String::from_utf8_lossy(&all);
        if text.matches("HTTP/1.1 ").count() != 1 || !text.contains("Connection: close\r\n") || !text.contains("records") {
            return Err(format!("pipelined requests: {:?}", &text[..text.len().min(200)]));
        }
    }
    // A silent client gets 408 after the request timeout; a half-closed one
    // with an incomplete request is answered at once; meanwhile /status answers.
    {
        use std::io::{Read, Write};
        let mut silent = std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
        let mut half = std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
        half.write_all(b"GET /status HT").map_err(|e| e.to_string())?;
        half.shutdown(std::net::Shutdown::Write).map_err(|e| e.to_string())?;
        let (code, _) = http(port, "GET /status HTTP/1.1\r\n\r\n")?;
        if code != 200 {
            return Err(format!("/status with a silent and a half-closed client: {code}"));
        }
        for (name, s) in [("half-closed", &mut half), ("silent", &mut silent)] {
            s.set_read_timeout(Some(Duration::from_secs(30))).map_err(|e| e.to_string())?;
            let mut buf = Vec::new();
            let _ = s.read_to_end(&mut buf);
            let text = String::from_utf8_lossy(&buf);
            if !text.starts_with("HTTP/1.1 408") {
                return Err(format!("{name} client got {text:?}, expected 408"));
            }
        }
    }
    let (code, _) = http(port, "GET /nmi-log HTTP/1.1\r\nContent-Length: 99999\r\n\r\n")?;
    if code != 413 {
        return Err(format!("oversized body announced: {code}, expected 413"));
    }
    // Control: refused without the token, obeyed with it.
    let post = |path: &str, token: Option<&str>, body: &str| {
        let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
        http(port, &format!("POST {path} HTTP/1.1\r\n{auth}Content-Length: {}\r\n\r\n{body}", body.len()))
    };
    for token in [None, Some("wrong")] {
        let (code, _) = post("/control/tracing", token, "off")?;
        if code != 403 {
            return Err(format!("control with token {token:?}: {code}, expected 403"));
        }
    }
    let (code, body) = post("/control/patching", Some("s3cret"), "strategy=stop_machine&sync=iret&batch=64")?;
    if code != 200 || !body.contains("strategy=stop_machine") {
        return Err(format!("control/patching: {code} {body}"));
    }
    let (code, _) = post("/control/patching", Some("s3cret"), "strategy=fast")?;
    if code != 400 {
        return Err(format!("control/patching with a bad strategy: {code}, expected 400"));
    }
    let (code, _) = post("/control/tracing", Some("s3cret"), "off")?;
    if code != 200 {
        return Err(format!("control/tracing off: {code}"));
    }
    let t0 = Instant::now();
    loop {
        let st = qemu::status(port)?;
        if st.ftrace.disabled_reason.as_deref() == Some("turned off through the control endpoint") {
            break;
        }
        if t0.elapsed() > Duration::from_secs(30) {
            return Err(format!("tracing never reported off: {st:?}"));
        }
    }
    let (code, _) = post("/control/tracing", Some("s3cret"), "on")?;
    if code != 200 {
        return Err(format!("control/tracing on: {code}"));
    }
    // Bad input must not stop the service or tracing.
    let st = qemu::status(port)?;
    if !st.ftrace.enabled {
        return Err(format!("after bad requests: tracing is off: {st:?}"));
    }
    Ok(())
}
