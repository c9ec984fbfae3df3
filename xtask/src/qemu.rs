//! QEMU command lines (from `qemu/qemu.toml`) and a runner that captures the
//! serial console, bounds every run in time and kills QEMU on drop.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::{Result, root};

#[derive(Deserialize)]
struct Config {
    firmware: FirmwarePaths,
    common: Args,
    machine: BTreeMap<String, Args>,
    accel: BTreeMap<String, AccelDef>,
}

#[derive(Deserialize)]
struct FirmwarePaths {
    ovmf_code: Vec<PathBuf>,
    ovmf_vars: Vec<PathBuf>,
}

#[derive(Deserialize)]
struct Args {
    args: Vec<String>,
}

#[derive(Deserialize)]
struct AccelDef {
    args: Vec<String>,
    cpu: String,
}

fn config() -> Result<Config> {
    let path = root().join("qemu/qemu.toml");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Accel {
    Auto,
    Kvm,
    /// Single-threaded TCG (exact cross-modifying-code behaviour).
    Tcg,
    /// Multi-threaded TCG (faster; QEMU 7.2 misses some cross-CPU code changes).
    Mttcg,
}

/// Whether /dev/kvm offers hardware-assisted virtualization, and why not.
///
/// On our development machines /dev/kvm is the `kvm_pvm` software backend,
/// which emulates every guest instruction and stops on the first SSE one.
pub fn kvm_hardware() -> std::result::Result<String, String> {
    let dev = Path::new("/dev/kvm");
    if !dev.exists() {
        return Err("no /dev/kvm".into());
    }
    if std::fs::OpenOptions::new().read(true).write(true).open(dev).is_err() {
        return Err("/dev/kvm is not accessible to this user".into());
    }
    if Path::new("/sys/module/kvm_pvm").exists() {
        return Err("/dev/kvm is the kvm_pvm software backend (no hardware virtualization: it emulates each guest instruction and fails on SSE)".into());
    }
    let module = ["kvm_intel", "kvm_amd"].into_iter().find(|m| Path::new("/sys/module").join(m).exists());
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let flag = cpuinfo.lines().filter(|l| l.starts_with("flags")).flat_map(|l| l.split_whitespace()).any(|f| f == "vmx" || f == "svm");
    match (module, flag) {
        (Some(m), true) => Ok(format!("/dev/kvm backed by {m} with hardware virtualization")),
        (None, _) => Err("/dev/kvm is not backed by kvm_intel or kvm_amd".into()),
        (_, false) => Err("the CPU does not report vmx or svm".into()),
    }
}

/// Resolve `auto` and report the choice.
pub fn choose_accel(a: Accel) -> Result<(Accel, String)> {
    match (a, kvm_hardware()) {
        (Accel::Auto, Ok(why)) => Ok((Accel::Kvm, format!("kvm: {why}"))),
        (Accel::Auto, Err(why)) => Ok((Accel::Tcg, format!("tcg: {why}"))),
        (Accel::Kvm, Ok(why)) => Ok((Accel::Kvm, format!("kvm: {why}"))),
        (Accel::Kvm, Err(why)) => Err(format!("--accel kvm refused: {why}").into()),
        (Accel::Tcg, _) => Ok((Accel::Tcg, "tcg: requested".into())),
        (Accel::Mttcg, _) => Ok((Accel::Mttcg, "mttcg: requested (multi-threaded TCG)".into())),
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Boot {
    /// `-kernel ELF -append CMDLINE` (multiboot1, the fast path).
    Kernel { elf: PathBuf, append: String },
    /// The ISO as a CD-ROM.
    Cdrom(PathBuf),
    /// The ISO as a USB stick (qemu-xhci + usb-storage).
    Usb(PathBuf),
    /// From the network: the firmware's PXE (`-boot n`) fetches `bootfile`
    /// from the user network's TFTP server, which serves `dir`.
    Net { dir: PathBuf, bootfile: String },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Firmware {
    Bios,
    Uefi,
}

#[derive(Clone, Debug)]
pub struct Spec {
    pub accel: Accel,
    pub cpu: Option<String>,
    /// `-smp` value, e.g. "4" or "6,sockets=2,cores=3".
    pub smp: String,
    pub mem_mib: u32,
    pub machine: String,
    pub firmware: Firmware,
    pub boot: Boot,
    /// Host 127.0.0.1:port forwarded to guest TCP 80, with this NIC model.
    pub net: Option<(u16, String)>,
    /// A QMP socket (unix path), for tests that read the screen.
    pub qmp: Option<PathBuf>,
    /// COM1 on stdio (false: no serial port at all, as on most PCs).
    pub serial: bool,
    /// More QEMU arguments (a second NIC, ...).
    pub extra: Vec<String>,
}

impl Spec {
    pub fn new(boot: Boot) -> Spec {
        Spec {
            accel: Accel::Tcg,
            cpu: None,
            smp: "4".into(),
            mem_mib: 512,
            machine: "q35".into(),
            firmware: Firmware::Bios,
            boot,
            net: None,
            qmp: None,
            serial: true,
            extra: Vec::new(),
        }
    }

    /// The full QEMU argument list. `scratch` receives the writable UEFI variable store.
    pub fn args(&self, scratch: &Path) -> Result<Vec<String>> {
        let cfg = config()?;
        let mut a: Vec<String> = cfg.common.args.clone();
        let machine = cfg.machine.get(&self.machine).ok_or_else(|| {
            format!("unknown machine `{}` (qemu/qemu.toml has: {:?})", self.machine, cfg.machine.keys().collect::<Vec<_>>())
        })?;
        a.extend(machine.args.iter().cloned());
        let accel = match self.accel {
            Accel::Kvm => &cfg.accel["kvm"],
            Accel::Tcg => &cfg.accel["tcg"],
            Accel::Mttcg => &cfg.accel["mttcg"],
            Accel::Auto => return Err("resolve --accel auto with choose_accel first".into()),
        };
        a.extend(accel.args.iter().cloned());
        // Under KVM the guest gets a virtual PMU only when asked (QEMU's
        // `pmu` property is off by default): the watchdog's counter source needs it.
        let cpu = match (&self.cpu, self.accel) {
            (Some(c), Accel::Kvm) if !c.contains("pmu=") => format!("{c},pmu=on"),
            (Some(c), _) => c.clone(),
            (None, _) => accel.cpu.clone(),
        };
        a.extend(["-cpu".into(), cpu]);
        a.extend(["-smp".into(), self.smp.clone(), "-m".into(), self.mem_mib.to_string(), "-serial".into(), if self.serial { "stdio" } else { "none" }.into()]);
        if self.firmware == Firmware::Uefi {
            let code = cfg.firmware.ovmf_code.iter().find(|p| p.exists()).ok_or("no OVMF code image (install the `ovmf` package)")?;
            let vars = cfg.firmware.ovmf_vars.iter().find(|p| p.exists()).ok_or("no OVMF variable store (install `ovmf`)")?;
            let vars_copy = scratch.join("ovmf-vars.fd");
            std::fs::copy(vars, &vars_copy)?;
            a.extend([
                "-drive".into(),
                format!("if=pflash,format=raw,readonly=on,file={}", code.display()),
                "-drive".into(),
                format!("if=pflash,format=raw,file={}", vars_copy.display()),
            ]);
        }
        match &self.boot {
            Boot::Kernel { elf, append } => {
                if self.firmware == Firmware::Uefi {
                    return Err("-kernel boots go through SeaBIOS's multiboot loader: use --firmware bios".into());
                }
                a.extend(["-kernel".into(), elf.display().to_string(), "-append".into(), append.clone()]);
            }
            Boot::Cdrom(iso) => {
                a.extend(["-drive".into(), format!("media=cdrom,format=raw,readonly=on,file={}", iso.display())]);
                a.extend(["-boot".into(), "d".into()]);
            }
            Boot::Usb(iso) => a.extend([
                "-device".into(),
                "qemu-xhci,id=xhci".into(),
                "-drive".into(),
                format!("if=none,id=usbstick,format=raw,readonly=on,file={}", iso.display()),
                // bootindex=0: else OVMF tries PXE first and that eats minutes.
                "-device".into(),
                "usb-storage,bus=xhci.0,drive=usbstick,bootindex=0".into(),
            ]),
            Boot::Net { .. } => a.extend(["-boot".into(), "n".into()]),
        }
        a.extend(self.extra.iter().cloned());
        match &self.net {
            Some((port, model)) => {
                // A USB NIC (`usb-net[,props]`) sits on an xHCI controller of its own.
                let device = match model.strip_prefix("usb-net") {
                    Some(props) => {
                        a.extend(["-device".into(), "qemu-xhci,id=usbnic".into()]);
                        format!("usb-net,bus=usbnic.0{props}")
                    }
                    None => model.clone(),
                };
                let tftp = match &self.boot {
                    Boot::Net { dir, bootfile } => format!(",tftp={},bootfile={bootfile}", dir.display()),
                    _ => String::new(),
                };
                a.extend(["-netdev".into(), format!("user,id=n0{tftp},hostfwd=tcp:127.0.0.1:{port}-:80"), "-device".into(), format!("{device},netdev=n0")]);
            }
            None => a.extend(["-nic".into(), "none".into()]),
        }
        if let Some(path) = &self.qmp {
            a.extend(["-qmp".into(), format!("unix:{},server=on,wait=off", path.display())]);
        }
        Ok(a)
    }
}

/// A running QEMU; killed when dropped.
pub struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    pub started: Instant,
    _scratch: TempDir,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A scratch directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Result<TempDir> {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = root().join("target/qemu-scratch").join(format!("{tag}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&p)?;
        Ok(TempDir(p))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// How a bounded run ended.
#[derive(Debug)]
pub struct Outcome {
    /// QEMU's exit status (None when we killed it).
    pub exit: Option<i32>,
    pub timed_out: bool,
    pub log: String,
    /// Each serial line with when it arrived, from QEMU start.
    pub timeline: Vec<(Duration, String)>,
    pub elapsed: Duration,
}

/// The verdicts the kernel writes to isa-debug-exit (kernel/src/drivers/qemu.rs).
pub const EXIT_SUCCESS: i32 = (0x10 << 1) | 1;
pub const EXIT_FAILURE: i32 = (0x11 << 1) | 1;

/// Start QEMU. Serial lines go to `log` (a file), to the terminal when `echo`,
/// and to the returned handle.
pub fn spawn(spec: &Spec, log: &Path, echo: bool) -> Result<Running> {
    let scratch = TempDir::new("run")?;
    let args = spec.args(&scratch.0)?;
    let mut child = Command::new("qemu-system-x86_64")
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start qemu-system-x86_64: {e} (cargo xtask deps installs it)"))?;
    let started = Instant::now();
    if let Some((port, _)) = &spec.net
        && let Err(e) = crate::hostfwd::widen_backlog(child.id(), *port, Duration::from_secs(5))
    {
        eprintln!("xtask: QEMU's forward of 127.0.0.1:{port} keeps libslirp's backlog of 1 (clients connecting at once may wait or be lost): {e}");
    }
    let (tx, rx) = mpsc::channel();
    if let Some(parent) = log.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut file = std::fs::File::create(log)?;
    writeln!(file, "# qemu-system-x86_64 {}", args.join(" "))?;
    // QEMU's own complaints (stderr) go to the same log, prefixed `qemu: `.
    let mut err_file = file.try_clone()?;
    let out = child.stdout.take().expect("piped stdout");
    let err = child.stderr.take().expect("piped stderr");
    let tx2 = tx.clone();
    std::thread::spawn(move || {
        let mut r = BufReader::new(out);
        let mut buf = Vec::new();
        while r.read_until(b'\n', &mut buf).map(|n| n > 0).unwrap_or(false) {
            let line = String::from_utf8_lossy(&buf).trim_end_matches(['\r', '\n']).to_string();
            let _ = writeln!(file, "{line}");
            if echo {
                println!("{line}");
            }
            if tx.send(line).is_err() && !echo {
                break;
            }
            buf.clear();
        }
    });
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(|l| l.ok()) {
            let _ = writeln!(err_file, "qemu: {line}");
            if echo {
                eprintln!("qemu: {line}");
            }
            let _ = tx2.send(format!("qemu: {line}"));
        }
    });
    Ok(Running { child, lines: rx, started, _scratch: scratch })
}

/// One step of reading the serial console.
enum Recv {
    Line(String),
    /// Nothing within the polling interval.
    Idle,
    /// Both reader threads are gone (QEMU closed its output).
    Closed,
    TimedOut,
}

impl Running {
    /// The next serial line, waiting at most 200 ms and never past `deadline`.
    fn recv(&mut self, deadline: Instant) -> Recv {
        let now = Instant::now();
        if now >= deadline {
            // Lines that came already are still read: a caller whose
            // deadline passed while it did something else (an HTTP poll)
            // must not miss them.
            return match self.lines.try_recv() {
                Ok(line) => Recv::Line(line),
                Err(mpsc::TryRecvError::Empty) => Recv::TimedOut,
                Err(mpsc::TryRecvError::Disconnected) => Recv::Closed,
            };
        }
        match self.lines.recv_timeout((deadline - now).min(Duration::from_millis(200))) {
            Ok(line) => Recv::Line(line),
            Err(mpsc::RecvTimeoutError::Timeout) => Recv::Idle,
            Err(mpsc::RecvTimeoutError::Disconnected) => Recv::Closed,
        }
    }

    fn exited(&mut self) -> Option<Option<i32>> {
        self.child.try_wait().ok().flatten().map(|st| st.code())
    }

    /// Read serial lines until one satisfies `pred` (returned), or `timeout`
    /// from QEMU's start, or QEMU exits. Keeps QEMU running.
    pub fn wait_line(&mut self, timeout: Duration, log: &mut String, mut pred: impl FnMut(&str) -> bool) -> Option<String> {
        let deadline = self.started + timeout;
        loop {
            match self.recv(deadline) {
                Recv::Line(line) => {
                    log.push_str(&line);
                    log.push('\n');
                    if pred(&line) {
                        return Some(line);
                    }
                }
                Recv::Idle if self.exited().is_none() => {}
                Recv::Idle | Recv::Closed | Recv::TimedOut => return None,
            }
        }
    }

    /// Read serial lines until QEMU exits or `timeout` (then QEMU is killed on drop).
    pub fn wait(mut self, timeout: Duration) -> Outcome {
        let mut log = String::new();
        let mut timeline = Vec::new();
        let deadline = self.started + timeout;
        let mut exit = None;
        let mut timed_out = false;
        loop {
            match self.recv(deadline) {
                Recv::Line(line) => {
                    log.push_str(&line);
                    log.push('\n');
                    timeline.push((self.started.elapsed(), line));
                }
                Recv::Idle => {}
                Recv::Closed => break,
                Recv::TimedOut => {
                    timed_out = true;
                    break;
                }
            }
            if let Some(code) = self.exited() {
                exit = code;
                // Drain what the readers still hold.
                while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(100)) {
                    log.push_str(&line);
                    log.push('\n');
                }
                break;
            }
        }
        if exit.is_none() && !timed_out {
            exit = self.child.wait().ok().and_then(|s| s.code());
        }
        Outcome { exit, timed_out, log, timeline, elapsed: self.started.elapsed() }
    }
}

/// A QMP connection (QEMU Machine Protocol, JSON lines over a unix socket).
pub struct Qmp {
    reader: BufReader<std::os::unix::net::UnixStream>,
    writer: std::os::unix::net::UnixStream,
}

impl Qmp {
    /// Connect once QEMU has made the socket (it does so before the guest runs).
    pub fn connect(path: &Path, timeout: Duration) -> std::result::Result<Qmp, String> {
        let t0 = Instant::now();
        let stream = loop {
            match std::os::unix::net::UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e) if t0.elapsed() > timeout => return Err(format!("QMP socket {}: {e}", path.display())),
                Err(_) => std::thread::yield_now(),
            }
        };
        stream.set_read_timeout(Some(Duration::from_secs(30))).map_err(|e| e.to_string())?;
        let writer = stream.try_clone().map_err(|e| e.to_string())?;
        let mut q = Qmp { reader: BufReader::new(stream), writer };
        q.read()?; // the greeting
        q.execute("qmp_capabilities", serde_json::json!({}))?;
        Ok(q)
    }

    fn read(&mut self) -> std::result::Result<serde_json::Value, String> {
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line).map_err(|e| format!("QMP: {e}"))? == 0 {
                return Err("QMP: QEMU closed the connection".into());
            }
            let v: serde_json::Value = serde_json::from_str(&line).map_err(|e| format!("QMP: {e}: {line}"))?;
            if v.get("event").is_none() {
                return Ok(v);
            }
        }
    }

    /// Run a command; its `return` value.
    pub fn execute(&mut self, cmd: &str, args: serde_json::Value) -> std::result::Result<serde_json::Value, String> {
        let msg = serde_json::json!({"execute": cmd, "arguments": args});
        writeln!(self.writer, "{msg}").map_err(|e| format!("QMP: {e}"))?;
        let v = self.read()?;
        match v.get("return") {
            Some(r) => Ok(r.clone()),
            None => Err(format!("QMP {cmd}: {v}")),
        }
    }

    /// Read guest physical memory through the human monitor's `xp`.
    pub fn read_phys(&mut self, addr: u64, len: usize) -> std::result::Result<Vec<u8>, String> {
        let out = self.execute("human-monitor-command", serde_json::json!({"command-line": format!("xp /{len}xb {addr:#x}")}))?;
        let text = out.as_str().ok_or("xp: no text")?;
        let bytes: Vec<u8> = text
            .lines()
            .filter_map(|l| l.split_once(':').map(|(_, r)| r))
            .flat_map(|r| r.split_whitespace())
            .filter_map(|w| u8::from_str_radix(w.trim_start_matches("0x"), 16).ok())
            .collect();
        if bytes.len() != len {
            return Err(format!("xp returned {} of {len} bytes", bytes.len()));
        }
        Ok(bytes)
    }

    /// The display as (width, height, RGB bytes), through `screendump` (PPM).
    pub fn screendump(&mut self, scratch: &Path) -> std::result::Result<(usize, usize, Vec<u8>), String> {
        let file = scratch.join("screen.ppm");
        self.execute("screendump", serde_json::json!({"filename": file.display().to_string()}))?;
        let data = std::fs::read(&file).map_err(|e| format!("{}: {e}", file.display()))?;
        parse_ppm(&data)
    }
}

/// A binary PPM (P6, maxval 255) as (width, height, RGB bytes).
pub fn parse_ppm(data: &[u8]) -> std::result::Result<(usize, usize, Vec<u8>), String> {
    // Header: "P6" width height maxval, whitespace-separated, then one whitespace byte.
    let mut fields = Vec::new();
    let mut i = 0;
    while fields.len() < 4 {
        while i < data.len() && data[i].is_ascii_whitespace() {
            i += 1;
        }
        let start = i;
        while i < data.len() && !data[i].is_ascii_whitespace() {
            i += 1;
        }
        if start == i {
            return Err("PPM: short header".into());
        }
        fields.push(String::from_utf8_lossy(&data[start..i]).to_string());
    }
    let (w, h): (usize, usize) = match (fields[0].as_str(), fields[1].parse(), fields[2].parse(), fields[3].as_str()) {
        ("P6", Ok(w), Ok(h), "255") => (w, h),
        _ => return Err(format!("PPM: unsupported header {fields:?}")),
    };
    let body = data.get(i + 1..).ok_or("PPM: no pixels")?;
    if body.len() < w * h * 3 {
        return Err(format!("PPM: {} bytes of pixels for {w}x{h}", body.len()));
    }
    Ok((w, h, body[..w * h * 3].to_vec()))
}

/// A TCP port on 127.0.0.1 that nothing listens on now (the kernel picks it),
/// for a host forward: runs that go at the same time must not share one.
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port())
}

/// One HTTP/1.1 exchange with the guest through the host forward: (status,
/// body). A connection reset (every server socket busy: the service bounds
/// its connections) is retried on a new connection, as a client would.
pub fn http(port: u16, request: &str) -> std::result::Result<(u16, String), String> {
    http_at(&format!("127.0.0.1:{port}"), request)
}

/// [`http`] to any `host:port` (an appliance on another machine).
pub fn http_at(addr: &str, request: &str) -> std::result::Result<(u16, String), String> {
    let mut last = String::new();
    for _ in 0..5 {
        match http_once(addr, request) {
            Err(e) if e.contains("reset") || e.contains("refused") => last = e,
            r => return r,
        }
    }
    Err(last)
}

fn http_once(addr: &str, request: &str) -> std::result::Result<(u16, String), String> {
    let (code, body) = http_bytes_at(addr, request)?;
    Ok((code, String::from_utf8_lossy(&body).to_string()))
}

/// One HTTP/1.1 exchange (no retry), the body as bytes (a tar archive).
/// Bounded: 5 s to connect, 20 s without a byte.
pub fn http_bytes_at(addr: &str, request: &str) -> std::result::Result<(u16, Vec<u8>), String> {
    use std::io::{Read, Write};
    use std::net::ToSocketAddrs;
    let sa = addr.to_socket_addrs().map_err(|e| format!("{addr}: {e}"))?.next().ok_or_else(|| format!("{addr}: no address"))?;
    let mut s = std::net::TcpStream::connect_timeout(&sa, Duration::from_secs(5)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(20))).map_err(|e| e.to_string())?;
    s.write_all(request.as_bytes()).map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).map_err(|e| format!("reading the response: {e}"))?;
    let split = buf.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(|| format!("no HTTP head in {} bytes", buf.len()))?;
    let head = String::from_utf8_lossy(&buf[..split]).to_string();
    let code = head.split(' ').nth(1).and_then(|c| c.parse().ok()).ok_or_else(|| format!("no status line in {head:?}"))?;
    Ok((code, buf[split + 4..].to_vec()))
}

/// `GET /status`, decoded into the appliance's own type.
pub fn status(port: u16) -> std::result::Result<appliance::contract::Status, String> {
    let (code, body) = http(port, "GET /status HTTP/1.1\r\nHost: appliance\r\nConnection: close\r\n\r\n")?;
    if code != 200 {
        return Err(format!("/status answered {code}: {body}"));
    }
    serde_json::from_str(&body).map_err(|e| format!("/status is not the appliance's Status ({e}): {body}"))
}
