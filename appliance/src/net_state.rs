//! What the network service publishes for the rest of the appliance, readable
//! without the service's lock: its counters (`/status`' `http`), the
//! network's state (`/status`' `net`), and the address the screen shows.
//! `net.rs` writes them; `status.rs` and `screen.rs` read them.

use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use appliance::contract::{HttpStatus, NetStatus};

use appliance::serve;

/// What the service's policy did, for `/status` and `/metrics`.
pub(crate) static REQUESTS: AtomicU64 = AtomicU64::new(0);
pub(crate) static TIMEOUTS: AtomicU64 = AtomicU64::new(0);
pub(crate) static REFUSED_BUSY: AtomicU64 = AtomicU64::new(0);
pub(crate) static CUT_STALLED: AtomicU64 = AtomicU64::new(0);
pub(crate) static BUSY: AtomicU64 = AtomicU64::new(0);
pub(crate) static DOWNLOADS: AtomicU64 = AtomicU64::new(0);
pub(crate) static LENT_POLLS: AtomicU64 = AtomicU64::new(0);
/// Incomplete requests whose socket went to a newcomer (`serve::evict`).
pub(crate) static EVICTED: AtomicU64 = AtomicU64::new(0);

/// The HTTP service as `/status` reports it.
pub fn http_status() -> HttpStatus {
    let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let up = STATE.load(Ordering::Relaxed) != 0;
    HttpStatus {
        sockets: if up { serve::SOCKETS as u64 } else { 0 },
        busy: n(&BUSY),
        downloads: n(&DOWNLOADS),
        buffer_bytes: if up { serve::buffer_bytes() as u64 } else { 0 },
        requests: n(&REQUESTS),
        timeouts: n(&TIMEOUTS),
        refused_busy: n(&REFUSED_BUSY),
        cut_stalled: n(&CUT_STALLED),
        lent_polls: n(&LENT_POLLS),
        rescued_polls: n(&RESCUED_POLLS),
        evicted: n(&EVICTED),
    }
}

/// The network as `/status` and the screen report it, published by the poller
/// (readable while another CPU holds the service; never from NMI context).
pub(crate) static NET_STATUS: spin::Mutex<NetStatus> = spin::Mutex::new(NetStatus {
    nic: String::new(),
    link: String::new(),
    address: None,
    gateway: None,
    gateway_answers: None,
    dhcp: false,
    dhcp_leases: 0,
    link_changes: 0,
    warnings: Vec::new(),
});

/// What `/status` says of the network now.
pub fn status() -> NetStatus {
    NET_STATUS.lock().clone()
}

/// What the screen shows of the network, readable without the service lock:
/// 0 no NIC, 1 waiting for an address, 2 listening.
pub(crate) static STATE: AtomicU32 = AtomicU32::new(0);
pub(crate) static ADDR: AtomicU32 = AtomicU32::new(0);
pub(crate) static PORT: AtomicU32 = AtomicU32::new(0);

/// The network as the screen shows it.
pub fn address() -> appliance::status_screen::Net {
    use appliance::status_screen::Net;
    match STATE.load(Ordering::Relaxed) {
        0 => Net::Off,
        1 => Net::Waiting,
        _ => Net::Listening(ADDR.load(Ordering::Relaxed).to_be_bytes(), PORT.load(Ordering::Relaxed) as u16),
    }
}

/// Polls made by a CPU that found the service unpolled for `UNSERVED_NS`.
pub(crate) static RESCUED_POLLS: AtomicU64 = AtomicU64::new(0);
