//! The network service: the NIC found on PCI (virtio-net) behind smoltcp,
//! DHCPv4 or a static address, and an HTTP/1.1 responder on TCP port 80
//! (`http_port=`). Polled cooperatively (between patch batches and in idle
//! loops) by whichever CPU holds the service; a CPU that finds it busy skips.
//! Never polled from NMI context.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write;
use core::sync::atomic::{AtomicU64, Ordering};

use kernel::boot::cmdline::NetConfig;
use kernel::drivers::nic::Nic;
use log::{info, warn};

use crate::net_state::{ADDR, BUSY, CUT_STALLED, DOWNLOADS, EVICTED, LENT_POLLS, NET_STATUS, PORT, REFUSED_BUSY, REQUESTS, RESCUED_POLLS, STATE, TIMEOUTS};
use appliance::serve::{self, Stall};
use appliance::http::{Method, Parse, Request};
use appliance::trace::ctf::TarStream;
use appliance::trace::stream::TraceStream;
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::socket::{dhcpv4, tcp};
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpCidr, Ipv4Address, Ipv4Cidr};

/// trace.dat's kallsyms text, made at the first `/trace.dat`.
static KALLSYMS: spin::Once<String> = spin::Once::new();

/// Largest request head accepted.
const MAX_REQUEST: usize = appliance::http::MAX_HEAD;

/// The function an address is in, from the embedded symbol table (none
/// outside every function: the trace then shows the address).
fn symbol(addr: u64) -> Option<&'static str> {
    kernel::debug::backtrace::table().and_then(|t| t.function(addr)).map(|l| l.symbol.name)
}

enum Conn {
    /// Receiving a request head (and body), since this time (ns; 0: no
    /// client yet); `continued`: `100 Continue` was sent.
    Reading { req: Vec<u8>, since: u64, continued: bool },
    /// A trace download, streamed.
    Trace { t: alloc::boxed::Box<TraceStream<'static>>, stall: Stall },
    /// A CTF snapshot, made as it goes out.
    Tar { t: alloc::boxed::Box<TarStream>, stall: Stall },
    /// A built response being sent, from this offset.
    Blob { data: Vec<u8>, pos: usize, stall: Stall },
}

impl Conn {
    fn idle() -> Conn {
        Conn::Reading { req: Vec::new(), since: 0, continued: false }
    }

    fn is_download(&self) -> bool {
        !matches!(self, Conn::Reading { .. })
    }
}



/// How often the link state is read, and how long the gateway gets to
/// answer an ARP probe (three probes before the warning).
const LINK_CHECK_NS: u64 = 250_000_000;
const ARP_WAIT_NS: u64 = 3_000_000_000;
const ARP_PROBES: u32 = 3;

/// The ARP probe of a static gateway.
struct GatewayProbe {
    gw: [u8; 4],
    /// Probes sent, and when the last one went out.
    sent: u32,
    last_ns: u64,
    /// An ARP packet from the gateway was seen.
    answered: bool,
    warned: bool,
}

struct Service {
    dev: Nic,
    mac: [u8; 6],
    /// The static address (`ip=`), for the probe's sender fields.
    static_ip: Option<[u8; 4]>,
    probe: Option<GatewayProbe>,
    next_link_check_ns: u64,
    iface: Interface,
    sockets: SocketSet<'static>,
    dhcp: Option<SocketHandle>,
    /// The HTTP sockets in `sockets`: listening or connected.
    http: Vec<(SocketHandle, Conn)>,
    /// The others, closed, until a listener is taken (`serve::LISTENERS`).
    spare: Vec<tcp::Socket<'static>>,
    port: u16,
    announced: bool,
    token: Option<String>,
    /// Where the next poll starts its round of the connections.
    rotate: usize,
}

/// The service, used by one CPU at a time (try_lock: pollers never wait).
struct Cell(Option<Service>);
// SAFETY: the service (with its Rc/RefCell device) is only touched under the
// SERVICE lock, by one CPU at a time; nothing in it is tied to a CPU.
unsafe impl Send for Cell {}
static SERVICE: spin::Mutex<Cell> = spin::Mutex::new(Cell(None));


/// A warning for the console, `/status` and the screen.
fn warn_user(text: String) {
    warn!("net: {text}");
    NET_STATUS.lock().warnings.push(text);
}


fn now() -> Instant {
    Instant::from_micros(kernel::time::clock::now_ns() as i64 / 1000)
}

/// How long several NICs get to bring a link up before the first serves anyway.
const LINK_WAIT_NS: u64 = 3_000_000_000;

/// With several NICs, the first (in order) whose link comes up within
/// `LINK_WAIT_NS` serves: the one with a cable wins. None up by then: the
/// first serves, and the service waits for its link as with one NIC.
fn choose_by_link(nics: &[kernel::drivers::nic::Up]) -> usize {
    if nics.len() == 1 {
        return 0;
    }
    let t0 = kernel::time::clock::now_ns();
    loop {
        let links: Vec<Option<bool>> = nics.iter().map(|(n, _, _)| n.link_up()).collect();
        if let Some(i) = appliance::netcheck::first_linked(&links) {
            for (j, (_, model, df)) in nics.iter().enumerate().filter(|(j, _)| *j != i) {
                info!("net: {model} at {df} not chosen ({})", if j < i { "no link" } else { "a NIC before it has a link" });
            }
            info!("net: {} NICs; {} at {} has the first link up and serves", nics.len(), nics[i].1, nics[i].2);
            return i;
        }
        if kernel::time::clock::now_ns() - t0 >= LINK_WAIT_NS {
            warn!("net: {} NICs, no link up on any after {} s; {} at {} serves", nics.len(), LINK_WAIT_NS / 1_000_000_000, nics[0].1, nics[0].2);
            return 0;
        }
        core::hint::spin_loop();
    }
}

/// Find a NIC and bring the service up. Boot CPU, after SMP. Returns
/// whether there is a service to run.
pub fn init(conf: &NetConfig, ecam: Option<&kernel::acpi::machine::EcamRegion>) -> bool {
    let (devs, how, scan) = kernel::drivers::pci::enumerate(ecam);
    info!("pci: {} functions found through {how} on {} buses (from the first, through bridges), {} configuration reads", devs.len(), scan.buses, scan.reads);
    for f in &devs {
        info!("pci: {} {:04x}:{:04x} class {:02x}.{:02x}", f.df, f.info.vendor_id, f.info.device_id, f.info.class, f.info.subclass);
    }
    let functions: Vec<appliance::netcheck::PciFunction> = devs
        .iter()
        .map(|f| appliance::netcheck::PciFunction {
            address: alloc::format!("{}", f.df),
            vendor: f.info.vendor_id,
            device: f.info.device_id,
            class: f.info.class,
            subclass: f.info.subclass,
        })
        .collect();
    let mut up = Vec::new();
    let mut failed: Option<(String, String)> = None;
    let (nics, usb) = Nic::find_all(&devs, conf.nic);
    for line in &usb {
        info!("{line}");
    }
    for r in nics {
        match r {
            Ok(n) => up.push(n),
            Err((e, df)) => {
                warn!("net: NIC at {df}: {e}");
                failed.get_or_insert((alloc::format!("{df}"), alloc::string::ToString::to_string(&e)));
            }
        }
    }
    if up.is_empty() {
        match &failed {
            None if conf.nic == kernel::boot::cmdline::NicChoice::Auto => {
                warn!("net: no supported NIC (virtio-net; Intel 82540EM/82545EM/82574L, 82576, I350, I210/I211, I217/I218/I219; USB CDC-ECM on xHCI) found; the network service is off")
            }
            None => warn!("net: nic={:?} matches no supported NIC; the network service is off", conf.nic),
            Some((df, e)) => warn!("net: NIC at {df}: {e}; the network service is off"),
        }
        for line in appliance::netcheck::unsupported_nics(&functions, failed.as_ref().map(|(a, e)| (a.as_str(), e.as_str()))) {
            warn_user(line);
        }
        for line in usb {
            warn_user(line);
        }
        return false;
    }
    let chosen = choose_by_link(&up);
    let (mut dev, model, df) = up.swap_remove(chosen);
    // The others stay as they were brought up, unused.
    drop(up);
    let mac = EthernetAddress(dev.mac());
    let mut cfg = Config::new(HardwareAddress::Ethernet(mac));
    cfg.random_seed = kernel::arch::cpu::rdtsc();
    let mut iface = Interface::new(cfg, &mut dev, now());
    let mut sockets = SocketSet::new(Vec::new());
    {
        let mut n = NET_STATUS.lock();
        n.nic = alloc::format!("{model} at {df}");
        n.link = String::from("unknown");
        n.dhcp = conf.ip.is_none();
    }
    let dhcp = match conf.ip {
        Some((a, prefix)) => {
            iface.update_ip_addrs(|addrs| {
                let _ = addrs.push(IpCidr::Ipv4(Ipv4Cidr::new(Ipv4Address::new(a[0], a[1], a[2], a[3]), prefix)));
            });
            if let Some(g) = conf.gw {
                let _ = iface.routes_mut().add_default_ipv4_route(Ipv4Address::new(g[0], g[1], g[2], g[3]));
            }
            {
                let mut n = NET_STATUS.lock();
                n.address = Some(alloc::format!("{}/{prefix}", Ipv4Address::from(a)));
                n.gateway = conf.gw.map(|g| alloc::format!("{}", Ipv4Address::from(g)));
            }
            if let Some(w) = appliance::netcheck::static_config_warning(a, prefix, conf.gw) {
                warn_user(w);
            }
            None
        }
        None => Some(sockets.add(dhcpv4::Socket::new())),
    };
    let probe = conf.gw.filter(|_| conf.ip.is_some()).map(|gw| GatewayProbe { gw, sent: 0, last_ns: 0, answered: false, warned: false });
    let spare: Vec<tcp::Socket<'static>> = (0..serve::SOCKETS)
        .map(|_| tcp::Socket::new(tcp::SocketBuffer::new(alloc::vec![0; serve::RX_BUFFER]), tcp::SocketBuffer::new(alloc::vec![0; serve::TX_BUFFER])))
        .collect();
    info!("net: {} HTTP connections, {} KiB of socket buffers", serve::SOCKETS, serve::buffer_bytes() / 1024);
    info!("net: {model} at {df} MAC {mac}, {}", if dhcp.is_some() { "DHCPv4" } else { "static address" });
    STATE.store(1, Ordering::Relaxed);
    // The owner's first poll is due now: from here on, a service nobody
    // polls is rescued (`poll_if_unserved`).
    LAST_POLL_NS.store(kernel::time::clock::now_ns(), Ordering::Relaxed);
    *SERVICE.lock() = Cell(Some(Service {
        dev,
        mac: mac.0,
        static_ip: conf.ip.map(|(a, _)| a),
        probe,
        next_link_check_ns: 0,
        iface,
        sockets,
        dhcp,
        http: Vec::new(),
        spare,
        port: conf.http_port,
        announced: false,
        rotate: 0,
        token: conf.control_token.as_ref().map(|t| String::from(t.as_str())),
    }));
    true
}

impl Service {
    /// One smoltcp poll over the NIC, frame by frame so that a listener a
    /// SYN took is replaced before the next frame; true when a frame from the
    /// gateway under probe went by.
    fn poll_iface(&mut self, ts: Instant) -> bool {
        use smoltcp::iface::{PollIngressSingleResult, PollResult};
        let seen = core::sync::atomic::AtomicBool::new(false);
        let gw = self.probe.as_ref().filter(|p| !p.answered).map(|p| p.gw);
        let mut dev = Watch { nic: &mut self.dev, gw, seen: &seen };
        self.iface.poll_maintenance(ts);
        listen(&mut self.sockets, &mut self.http, &mut self.spare, self.port);
        while self.iface.poll_ingress_single(ts, &mut dev, &mut self.sockets) != PollIngressSingleResult::None {
            listen(&mut self.sockets, &mut self.http, &mut self.spare, self.port);
            // Every socket taken and none listening: the slowest incomplete
            // request gives its socket up (reset), which listens at once.
            if self.spare.is_empty() && listening(&self.sockets, &self.http) == 0 {
                let now_ns = kernel::time::clock::now_ns();
                let reading = self.http.iter().map(|(_, c)| match c {
                    Conn::Reading { since, .. } => Some(*since),
                    _ => None,
                });
                if let Some(k) = serve::evict(reading, now_ns) {
                    self.sockets.get_mut::<tcp::Socket>(self.http[k].0).abort();
                    EVICTED.fetch_add(1, Ordering::Relaxed);
                    while self.iface.poll_egress(ts, &mut dev, &mut self.sockets) != PollResult::None {}
                    release_closed(&mut self.sockets, &mut self.http, &mut self.spare, self.port);
                }
            }
        }
        while self.iface.poll_egress(ts, &mut dev, &mut self.sockets) != PollResult::None {}
        seen.load(Ordering::Relaxed)
    }
}

/// How many of the service's sockets are listening.
fn listening(sockets: &SocketSet<'static>, http: &[(SocketHandle, Conn)]) -> usize {
    http.iter().filter(|(h, _)| sockets.get::<tcp::Socket>(*h).state() == tcp::State::Listen).count()
}

/// Bring listeners from the pool into the set, up to `serve::LISTENERS`.
fn listen(sockets: &mut SocketSet<'static>, http: &mut Vec<(SocketHandle, Conn)>, spare: &mut Vec<tcp::Socket<'static>>, port: u16) {
    for _ in 0..serve::listeners_to_add(listening(sockets, http), spare.len()) {
        let Some(mut sock) = spare.pop() else { return };
        let _ = sock.listen(port);
        http.push((sockets.add(sock), Conn::idle()));
    }
}

/// Sockets whose connection is over: listening again while listeners are
/// short, else back to the pool.
fn release_closed(sockets: &mut SocketSet<'static>, http: &mut Vec<(SocketHandle, Conn)>, spare: &mut Vec<tcp::Socket<'static>>, port: u16) {
    let mut k = 0;
    while k < http.len() {
        let h = http[k].0;
        if sockets.get::<tcp::Socket>(h).is_open() {
            k += 1;
        } else if serve::to_pool(listening(sockets, http)) {
            if let smoltcp::socket::Socket::Tcp(sock) = sockets.remove(h) {
                spare.push(sock);
            }
            http.swap_remove(k);
        } else {
            let _ = sockets.get_mut::<tcp::Socket>(h).listen(port);
            http[k].1 = Conn::idle();
            k += 1;
        }
    }
}

/// Read the link state now and then; log and publish changes.
fn check_link(s: &mut Service, now_ns: u64) {
    if now_ns < s.next_link_check_ns {
        return;
    }
    s.next_link_check_ns = now_ns + LINK_CHECK_NS;
    let link = match s.dev.link_up() {
        Some(true) => "up",
        Some(false) => "down",
        None => "unknown",
    };
    let mut n = NET_STATUS.lock();
    if n.link == link {
        return;
    }
    let first = n.link == "unknown" && n.link_changes == 0;
    if !first {
        n.link_changes += 1;
    }
    n.link = String::from(link);
    drop(n);
    match (first, link) {
        (true, _) => info!("net: link {link}"),
        (false, "down") => warn!("net: link down"),
        _ => info!("net: link {link} again"),
    }
    if link == "up"
        && let Some(p) = s.probe.as_mut()
        && !p.answered
    {
        // A fresh link: probe the gateway again from the start.
        (p.sent, p.last_ns) = (0, 0);
    }
}

/// ARP for a static gateway until it answers; after `ARP_PROBES` probes
/// without an answer, warn once.
fn probe_gateway(s: &mut Service, now_ns: u64, seen: bool) {
    let (Some(p), Some(ip)) = (s.probe.as_mut(), s.static_ip) else { return };
    if seen && !p.answered {
        p.answered = true;
        NET_STATUS.lock().gateway_answers = Some(true);
        if p.warned {
            info!("net: gateway {} answers ARP now", Ipv4Address::from(p.gw));
        }
        return;
    }
    if p.answered || now_ns < p.last_ns + ARP_WAIT_NS {
        return;
    }
    if p.sent >= ARP_PROBES {
        if !p.warned {
            p.warned = true;
            NET_STATUS.lock().gateway_answers = Some(false);
            let gw = p.gw;
            warn_user(alloc::format!("no ARP reply from gateway {} after {ARP_PROBES} requests: check gw= and the cable", Ipv4Address::from(gw)));
        }
        return;
    }
    let frame = appliance::netcheck::arp_request(s.mac, ip, p.gw);
    if let Some(tx) = smoltcp::phy::Device::transmit(&mut s.dev, now()) {
        smoltcp::phy::TxToken::consume(tx, frame.len(), |buf| buf.copy_from_slice(&frame));
        p.sent += 1;
        p.last_ns = now_ns;
    }
}

/// The NIC as smoltcp sees it, with every received frame checked for an ARP
/// packet from the gateway under probe.
struct Watch<'a> {
    nic: &'a mut Nic,
    gw: Option<[u8; 4]>,
    seen: &'a core::sync::atomic::AtomicBool,
}

struct WatchRx<'a> {
    rx: kernel::drivers::nic::Rx,
    gw: Option<[u8; 4]>,
    seen: &'a core::sync::atomic::AtomicBool,
}

impl smoltcp::phy::RxToken for WatchRx<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        let (gw, seen) = (self.gw, self.seen);
        self.rx.consume(|buf| {
            if let Some(g) = gw
                && appliance::netcheck::arp_from(buf, g)
            {
                seen.store(true, Ordering::Relaxed);
            }
            f(buf)
        })
    }
}

impl smoltcp::phy::Device for Watch<'_> {
    type RxToken<'b>
        = WatchRx<'b>
    where
        Self: 'b;
    type TxToken<'b>
        = kernel::drivers::nic::Tx
    where
        Self: 'b;

    fn receive(&mut self, ts: Instant) -> Option<(WatchRx<'_>, kernel::drivers::nic::Tx)> {
        let (rx, tx) = self.nic.receive(ts)?;
        Some((WatchRx { rx, gw: self.gw, seen: self.seen }, tx))
    }

    fn transmit(&mut self, ts: Instant) -> Option<kernel::drivers::nic::Tx> {
        self.nic.transmit(ts)
    }

    fn capabilities(&self) -> smoltcp::phy::DeviceCapabilities {
        self.nic.capabilities()
    }
}

/// A worker CPU's offer of time: a round of network work while a download
/// runs. Under QEMU's single-threaded TCG the CPUs take turns on one host
/// thread, so the serving CPU alone gets a quarter of it beside three busy
/// CPUs; lent turns move the download on whichever CPU runs. When another
/// CPU holds the service (the serving CPU, perhaps stopped mid-round by the
/// emulator), the worker waits on it (`pause_for_others`: under TCG the turn
/// goes on towards the holder); on silicon, where the serving CPU mostly
/// holds the service, the offer is one read of the lock and tens of cycles.
pub fn help_downloads() {
    if DOWNLOADS.load(Ordering::Relaxed) == 0 {
        poll_if_unserved();
        return;
    }
    // A read first: an offer made while the service is held leaves the
    // lock's cache line shared instead of taking it from the holder.
    if !SERVICE.is_locked() && poll() {
        LENT_POLLS.fetch_add(1, Ordering::Relaxed);
    } else {
        kernel::arch::cpu::pause_for_others();
    }
}

/// When the service was last polled (ns; 0: not yet).
static LAST_POLL_NS: AtomicU64 = AtomicU64::new(0);
/// How long the service may go unpolled before any CPU steps in: its
/// owner (the serving CPU, or the patching loop between batches) is stuck.
/// Far above a round of the loop (tens of ms under TCG), far below a
/// client's patience.
pub const UNSERVED_NS: u64 = 200_000_000;

/// Poll the service (and print the NMI log) if nobody has for
/// `UNSERVED_NS`: a worker's or an idle CPU's duty when the CPU that owns
/// the service is stuck (issue 28: `/status` answers while a CPU is stuck
/// with interrupts off, whichever CPU it is).
pub fn poll_if_unserved() {
    let last = LAST_POLL_NS.load(Ordering::Relaxed);
    // A rescue does not count as the owner's poll: once the owner is
    // stuck, every offer polls until it comes back.
    if last != 0 && kernel::time::clock::now_ns().saturating_sub(last) >= UNSERVED_NS && poll_round(false) {
        RESCUED_POLLS.fetch_add(1, Ordering::Relaxed);
        kernel::nmi::watchdog::drain_to_console();
    }
}

/// One round of network work, if no other CPU is doing it (false then). A
/// traced path.
#[inline(never)]
pub fn poll() -> bool {
    kernel::trace_site!();
    poll_round(true)
}

/// [`poll`]; `served` marks the service as polled by its owner (or a CPU
/// that polls it all the time), which a rescue does not.
fn poll_round(served: bool) -> bool {
    let Some(mut guard) = SERVICE.try_lock() else { return false };
    let Some(s) = guard.0.as_mut() else { return false };
    if served {
        LAST_POLL_NS.store(kernel::time::clock::now_ns(), Ordering::Relaxed);
    }
    let ts = now();
    let now_ns = kernel::time::clock::now_ns();
    check_link(s, now_ns);
    let seen = s.poll_iface(ts);
    probe_gateway(s, now_ns, seen);
    if let Some(h) = s.dhcp {
        match s.sockets.get_mut::<dhcpv4::Socket>(h).poll() {
            Some(dhcpv4::Event::Configured(c)) => {
                s.iface.update_ip_addrs(|a| {
                    a.clear();
                    let _ = a.push(IpCidr::Ipv4(c.address));
                });
                if let Some(r) = c.router {
                    let _ = s.iface.routes_mut().add_default_ipv4_route(r);
                }
                s.announced = false;
                let mut n = NET_STATUS.lock();
                n.dhcp_leases += 1;
                n.address = Some(alloc::format!("{}", c.address));
                n.gateway = c.router.map(|r| alloc::format!("{r}"));
                let verb = if n.dhcp_leases == 1 { "acquired" } else { "acquired again (renewed with a change, or after a loss)" };
                drop(n);
                match c.router {
                    Some(r) => info!("net: DHCP lease {verb}: {} router {r}", c.address),
                    None => info!("net: DHCP lease {verb}: {} (no router)", c.address),
                }
            }
            Some(dhcpv4::Event::Deconfigured) => {
                s.iface.update_ip_addrs(|a| a.clear());
                STATE.store(1, Ordering::Relaxed);
                // smoltcp also says this once at start, before any lease: only a held lease is lost.
                if NET_STATUS.lock().address.take().is_some() {
                    warn!("net: DHCP lease lost; waiting for a new one");
                }
            }
            None => {}
        }
    }
    if !s.announced && let Some(addr) = s.iface.ipv4_addr() {
        s.announced = true;
        ADDR.store(u32::from_be_bytes(addr.octets()), Ordering::Relaxed);
        PORT.store(u32::from(s.port), Ordering::Relaxed);
        STATE.store(2, Ordering::Relaxed);
        info!("net: listening on http://{addr}:{}/ (/status, /nmi-log, /trace, /trace.json, /trace.ctf.tar, /trace.dat, /metrics)", s.port);
    }
    let port = s.port;
    // Connections that ended in the last poll (their reset, if any, went out
    // with its last smoltcp poll).
    release_closed(&mut s.sockets, &mut s.http, &mut s.spare, port);
    let mut downloads = s.http.iter().filter(|(_, c)| c.is_download()).count();
    let mut busy = 0u64;
    // Short requests first, then downloads sharing a byte budget, starting
    // from a different connection each poll: no download can starve
    // `/status`, and none starves the others.
    let mut budget = serve::DOWNLOAD_BYTES_PER_POLL;
    let count = s.http.len();
    s.rotate = (s.rotate + 1) % count.max(1);
    for (pass, k) in (0..2).flat_map(|pass| (0..count).map(move |k| (pass, k))) {
        let (h, conn) = &mut s.http[(k + s.rotate) % count];
        if conn.is_download() != (pass == 1) {
            continue;
        }
        let sock = s.sockets.get_mut::<tcp::Socket>(*h);
        // A closed connection waits out TIME-WAIT (10 s in smoltcp) in its
        // socket; with every byte delivered and both sides closed, reuse it
        // at once so a client never meets a reset while the server idles.
        if sock.state() == tcp::State::TimeWait {
            sock.abort();
        }
        if !sock.is_open() {
            // Listening again or back to the pool: `release_closed`, after this round.
            if conn.is_download() {
                downloads -= 1;
            }
            *conn = Conn::idle();
            continue;
        }
        let now_ns = kernel::time::clock::now_ns();
        if sock.is_active() && pass == 0 {
            busy += 1;
        }
        let (done, accepted) = match conn {
            Conn::Reading { req, since, continued } => {
                // Listening, no client yet: the clock has not started.
                if !sock.is_active() {
                    *since = 0;
                    continue;
                }
                if *since == 0 {
                    *since = now_ns;
                }
                if sock.can_recv() {
                    let _ = sock.recv(|data| {
                        let take = data.len().min(MAX_REQUEST + 1 - req.len().min(MAX_REQUEST + 1));
                        req.extend_from_slice(&data[..take]);
                        (data.len(), ())
                    });
                }
                if !sock.can_send() {
                    continue;
                }
                let expired = serve::request_expired(*since, req.len(), now_ns);
                let parsed = appliance::http::parse(req);
                // A request with a body waits for all of it; a client that
                // asked for `100 Continue` gets it at once (RFC 9110 §10.1.1).
                if let Parse::Complete(r) = &parsed
                    && req.len() < r.head_len + r.content_length
                    && sock.may_recv()
                    && !expired
                {
                    if r.expect_continue && !*continued {
                        *continued = true;
                        let _ = sock.send_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
                    }
                    continue;
                }
                if matches!(parsed, Parse::Incomplete) && sock.may_recv() && !expired {
                    continue;
                }
                REQUESTS.fetch_add(1, Ordering::Relaxed);
                let download = match &parsed {
                    Parse::Complete(r) if r.method == Method::Get && matches!(r.path, "/trace" | "/trace.json" | "/trace.ctf.tar" | "/trace.dat") => Some(r.path),
                    _ => None,
                };
                if download.is_some() && !serve::admit_download(downloads) {
                    REFUSED_BUSY.fetch_add(1, Ordering::Relaxed);
                    let _ = sock.send_slice(reply(503, "text/plain", "every download slot is taken; try again\n").as_bytes());
                    sock.close();
                    *conn = Conn::idle();
                    continue;
                }
                if download.is_some() {
                    // Published before the rings are read (milliseconds under
                    // TCG): the workers lend their turns from here on.
                    downloads += 1;
                    DOWNLOADS.store(downloads as u64, Ordering::Relaxed);
                }
                match (download, &parsed) {
                    (Some("/trace.ctf.tar"), _) => {
                        // The rings are read now; the archive is made as the client takes it.
                        let rings = crate::events::RINGS.get().map_or(&[][..], |r| r.as_slice());
                        let t = alloc::boxed::Box::new(TarStream::new(rings, "trace-appliance"));
                        let head = alloc::format!("HTTP/1.1 200 OK\r\nContent-Type: application/x-tar\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", t.len());
                        let _ = sock.send_slice(head.as_bytes());
                        *conn = Conn::Tar { t, stall: Stall::new(now_ns) };
                        continue;
                    }
                    (Some("/trace.dat"), _) => {
                        let rings = crate::events::RINGS.get().map_or(&[][..], |r| r.as_slice());
                        let kallsyms = KALLSYMS.call_once(|| {
                            let syms = kernel::debug::backtrace::table().map(|t| (0..t.len()).filter_map(move |i| t.get(i)).map(|s| (s.addr, s.len, s.name)));
                            appliance::trace::dat::kallsyms(syms.into_iter().flatten())
                        });
                        let body = appliance::trace::dat::snapshot(rings, kallsyms);
                        let mut out = alloc::format!("HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len()).into_bytes();
                        out.extend_from_slice(&body);
                        *conn = Conn::Blob { data: out, pos: 0, stall: Stall::new(now_ns) };
                        continue;
                    }
                    (Some(path), Parse::Complete(r)) => {
                        // Streamed until the snapshot ends; the connection closes to end the body.
                        let (json, follow) = (path == "/trace.json", path == "/trace" && r.query_value("follow") == Some("1"));
                        let ctype: &[u8] = if json { b"application/json" } else { b"text/plain" };
                        let _ = sock.send_slice(b"HTTP/1.1 200 OK\r\nContent-Type: ");
                        let _ = sock.send_slice(ctype);
                        let _ = sock.send_slice(b"\r\nConnection: close\r\n\r\n");
                        let rings = crate::events::RINGS.get().map_or(&[][..], |r| r.as_slice());
                        *conn = Conn::Trace { t: alloc::boxed::Box::new(TraceStream::new(rings, json, follow, symbol)), stall: Stall::new(now_ns) };
                        continue;
                    }
                    _ => {}
                }
                let resp = match parsed {
                    Parse::Complete(r) if r.method == Method::Post && r.path.starts_with("/control/") => {
                        let body = req.get(r.head_len..(r.head_len + r.content_length).min(req.len())).unwrap_or(&[]);
                        control(&r, body, s.token.as_deref())
                    }
                    Parse::Incomplete => {
                        TIMEOUTS.fetch_add(1, Ordering::Relaxed);
                        reply(408, "text/plain", "no complete request in time\n")
                    }
                    Parse::Error(code) => reply(code, "text/plain", &alloc::format!("{}\n", appliance::http::reason(code))),
                    Parse::Complete(r) => respond(&r),
                };
                let _ = sock.send_slice(resp.as_bytes());
                sock.close();
                *conn = Conn::idle();
                continue;
            }
            Conn::Blob { data, pos, .. } => {
                let end = data.len().min(*pos + budget);
                let n = if *pos < end { sock.send_slice(&data[*pos..end]).unwrap_or(0) } else { 0 };
                budget -= n;
                *pos += n;
                (*pos >= data.len(), n)
            }
            Conn::Tar { t, .. } => {
                // Straight into the send buffer, within the poll's byte
                // budget; its free space comes in at most two parts.
                let mut n = 0;
                while n < budget && !t.is_done() {
                    let room = budget - n;
                    let k = sock.send(|buf| {
                        let m = buf.len().min(room);
                        let k = t.fill(&mut buf[..m]);
                        (k, k)
                    });
                    match k {
                        Ok(k) if k > 0 => n += k,
                        _ => break,
                    }
                }
                budget -= n;
                (t.is_done(), n)
            }
            Conn::Trace { t, .. } => {
                // Fill the send buffer, within the poll's byte budget.
                let (done, accepted) = t.fill(budget, |b| sock.send_slice(b).unwrap_or(0));
                budget -= accepted;
                (done, accepted)
            }
        };
        // A download that is done closes; one whose client stopped reading is cut.
        let stalled = match conn {
            Conn::Blob { stall, .. } | Conn::Trace { stall, .. } | Conn::Tar { stall, .. } => !done && stall.stalled(sock.send_queue(), accepted, now_ns),
            Conn::Reading { .. } => false,
        };
        if done {
            sock.close();
        } else if stalled {
            CUT_STALLED.fetch_add(1, Ordering::Relaxed);
            sock.abort();
        } else {
            continue;
        }
        downloads -= 1;
        *conn = Conn::idle();
    }
    // Stored on change only: worker CPUs read DOWNLOADS (`help_downloads`),
    // and a store every poll would take its cache line from them each time.
    if BUSY.load(Ordering::Relaxed) != busy {
        BUSY.store(busy, Ordering::Relaxed);
    }
    if DOWNLOADS.load(Ordering::Relaxed) != downloads as u64 {
        DOWNLOADS.store(downloads as u64, Ordering::Relaxed);
    }
    let seen = s.poll_iface(now());
    probe_gateway(s, now_ns, seen);
    true
}

/// `POST /control/*`: parsed by `appliance::control`, applied here. A
/// request with any bad part changes nothing.
fn control(r: &Request<'_>, body: &[u8], token: Option<&str>) -> String {
    use appliance::control::Action;
    use kernel::patch::control;
    let actions = match appliance::control::parse(r.path, body, token, r.bearer) {
        Ok(a) => a,
        Err((code, why)) => return reply(code, "text/plain", why),
    };
    // Refused before anything changes: SERIALIZE where the CPU lacks it.
    if let Some(Action::Sync(m)) = actions.iter().find(|a| matches!(a, Action::Sync(_)))
        && let Err(e) = control::check_sync(*m)
    {
        return reply(400, "text/plain", &alloc::format!("{e}\n"));
    }
    let mut done = String::new();
    for a in actions {
        match a {
            Action::TracingOn => {
                control::control_enable();
                done.push_str("tracing on\n");
            }
            Action::TracingOff => {
                control::control_disable();
                done.push_str("tracing turning off\n");
            }
            Action::Strategy(s) => {
                control::control_strategy(s);
                let _ = writeln!(done, "strategy={} from the next cycle", s.name());
            }
            Action::Sync(m) => {
                let _ = control::control_sync(m);
                let _ = writeln!(done, "sync={}", m.name());
            }
            Action::Batch(n) => {
                control::control_batch(n);
                let _ = writeln!(done, "batch={n} from the next pass");
            }
        }
    }
    reply(200, "text/plain", &done)
}

fn respond(r: &Request<'_>) -> String {
    if r.method != Method::Get {
        return reply(405, "text/plain", "GET, or POST to /control/*\n");
    }
    match r.path {
        "/" | "/index.html" => reply(200, "text/html; charset=utf-8", appliance::live_page::HTML),
        "/status" => reply(200, "application/json", &crate::status::collect().to_json()),
        "/metrics" => reply(200, "text/plain; version=0.0.4", &crate::status::collect().to_metrics()),
        "/nmi-log" => {
            let mut body = String::new();
            for r in kernel::nmi::watchdog::NMI_LOG.iter() {
                body.push_str(r);
            }
            let _ = writeln!(body, "# {} records, {} dropped", kernel::nmi::watchdog::NMI_LOG.len(), kernel::nmi::watchdog::NMI_LOG.dropped());
            reply(200, "text/plain", &body)
        }
        _ => reply(404, "text/plain", "not found\n"),
    }
}

fn reply(code: u16, ctype: &str, body: &str) -> String {
    let reason = appliance::http::reason(code);
    let mut s = String::with_capacity(body.len() + 128);
    let _ = write!(s, "HTTP/1.1 {code} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
    s
}
