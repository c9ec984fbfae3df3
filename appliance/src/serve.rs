//! The HTTP service's connection policy, as pure logic: how long a client
//! may take to send its request, how long a download may stall because the
//! client stopped reading, and how many sockets long downloads may hold so
//! that short requests (`/status`, `/metrics`) always find one. There are
//! more sockets than the clients a load test runs (64): a closed connection's
//! socket is reusable only once its close handshake is over, so clients that
//! reconnect at once need spares, or they meet resets. Host-tested; `net.rs`
//! applies it to its sockets.

/// Connections (TCP sockets) of the service.
pub const SOCKETS: usize = 128;
/// Sockets that long downloads (`/trace`, `/trace.json`, `/trace.ctf.tar`,
/// `/trace.dat`)
/// may never take: kept for short requests.
pub const RESERVED_FOR_SHORT: usize = 32;
/// Sockets kept listening. The others wait outside smoltcp's socket set
/// until a connection takes a listener: smoltcp walks every socket in its
/// set for each frame it receives and again for each segment it sends, so a
/// set of 128 mostly listening sockets made every segment of a download
/// cost 128 sockets' checks. A listener taken is replaced after the frame
/// that took it (`net.rs`), so a burst of SYNs finds one for each SYN while
/// the pool lasts.
pub const LISTENERS: usize = 2;
/// Each socket's receive and send buffers.
pub const RX_BUFFER: usize = 4096;
pub const TX_BUFFER: usize = 32 * 1024;
/// Bytes all downloads together may queue in one poll of the service.
pub const DOWNLOAD_BYTES_PER_POLL: usize = 64 * 1024;
/// A connection must send its first byte within this time...
pub const FIRST_BYTE_NS: u64 = 2_000_000_000;
/// ...and its whole request (head and body) within this one (408 otherwise).
pub const REQUEST_NS: u64 = 5_000_000_000;
/// A download whose client accepts nothing for this long is cut.
pub const STALL_NS: u64 = 10_000_000_000;

/// Memory the sockets' buffers take (reported in `/status`).
pub const fn buffer_bytes() -> usize {
    SOCKETS * (RX_BUFFER + TX_BUFFER)
}

/// Listeners to take from the pool: up to `LISTENERS` listening, while
/// sockets remain outside the set (`spare`).
pub fn listeners_to_add(listening: usize, spare: usize) -> usize {
    LISTENERS.saturating_sub(listening).min(spare)
}

/// Does a socket whose connection is over go back to the pool (true), or
/// listen again (false), with `listening` sockets listening besides it?
pub fn to_pool(listening: usize) -> bool {
    listening >= LISTENERS
}

/// Has a client that connected at `since` and sent `received` bytes so far
/// (no complete request) used up its time?
pub fn request_expired(since: u64, received: usize, now: u64) -> bool {
    let t = now.saturating_sub(since);
    t >= REQUEST_NS || (received == 0 && t >= FIRST_BYTE_NS)
}

/// A connection may be given up for a newcomer once it has been sending
/// its request this long without completing it.
pub const EVICT_AFTER_NS: u64 = 500_000_000;

/// Every socket is taken and none listens: which connection gives its
/// socket up, so that the next client (a user's `/status` among hundreds of
/// slowloris connections, issue 28) finds a listener? The one that has been
/// sending an incomplete request longest, if for at least `EVICT_AFTER_NS`
/// (`reading_since[i]`: when connection `i` began its request, None for a
/// connection not reading one: a download, a response being sent). A
/// client that sends a request completes it in milliseconds; one that holds
/// a socket with half a request is the attack's, or too slow to serve.
pub fn evict(reading_since: impl Iterator<Item = Option<u64>>, now: u64) -> Option<usize> {
    reading_since
        .enumerate()
        .filter_map(|(i, s)| s.filter(|&since| since != 0 && now.saturating_sub(since) >= EVICT_AFTER_NS).map(|since| (since, i)))
        .min()
        .map(|(_, i)| i)
}

/// May another long download start while `streams` are running?
pub fn admit_download(streams: usize) -> bool {
    streams < SOCKETS - RESERVED_FOR_SHORT
}

/// Watches a download for a client that stopped reading: progress is the
/// send queue draining or new bytes accepted; a queue that is empty is never
/// a stall (a following download with nothing new to send is waiting on us).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stall {
    last_progress: u64,
    last_queue: usize,
}

impl Stall {
    pub fn new(now: u64) -> Stall {
        Stall { last_progress: now, last_queue: 0 }
    }

    /// After a poll: `queue` bytes wait in the send buffer, `accepted` were
    /// just queued. True when the client has accepted nothing for `STALL_NS`.
    pub fn stalled(&mut self, queue: usize, accepted: usize, now: u64) -> bool {
        if queue == 0 || accepted > 0 || queue < self.last_queue {
            self.last_progress = now;
        }
        self.last_queue = queue;
        now.saturating_sub(self.last_progress) >= STALL_NS
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn the_oldest_incomplete_request_gives_its_socket_up() {
        let ms = 1_000_000;
        let now = 10_000 * ms;
        // Downloads (None) and clients that have not started (0) are never chosen.
        let conns = [None, Some(0), Some(now - 900 * ms), Some(now - 3000 * ms), Some(now - 100 * ms)];
        assert_eq!(evict(conns.into_iter(), now), Some(3));
        // Nobody has been at it for EVICT_AFTER_NS: nobody gives up.
        assert_eq!(evict([Some(now - 499 * ms), None].into_iter(), now), None);
        assert_eq!(evict(core::iter::empty(), now), None);
    }

    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn request_deadlines() {
        assert!(!request_expired(0, 0, S));
        assert!(request_expired(0, 0, 2 * S), "silent: 2 s");
        assert!(!request_expired(0, 1, 4 * S), "a byte buys time up to the request deadline");
        assert!(request_expired(0, 1, 5 * S), "slowloris: 5 s whatever it trickles");
        assert!(request_expired(10 * S, 100, 15 * S));
        assert!(!request_expired(10 * S, 100, 14 * S));
    }

    #[test]
    fn downloads_leave_room_for_short_requests() {
        assert!(admit_download(0));
        assert!(admit_download(SOCKETS - RESERVED_FOR_SHORT - 1));
        assert!(!admit_download(SOCKETS - RESERVED_FOR_SHORT));
        const { assert!(SOCKETS >= 64 && RESERVED_FOR_SHORT >= 8) };
        assert_eq!(buffer_bytes(), 128 * 36 * 1024);
    }

    #[test]
    fn listeners_are_replaced_while_the_pool_lasts() {
        assert_eq!(listeners_to_add(0, 100), LISTENERS);
        assert_eq!(listeners_to_add(LISTENERS - 1, 100), 1, "one taken, one back");
        assert_eq!(listeners_to_add(LISTENERS, 100), 0);
        assert_eq!(listeners_to_add(0, 1), 1, "the last spare");
        assert_eq!(listeners_to_add(0, 0), 0, "every socket connected: SYNs meet resets");
        assert!(!to_pool(LISTENERS - 1), "a closed socket listens when listeners are short");
        assert!(to_pool(LISTENERS));
        const { assert!(LISTENERS >= 1 && LISTENERS < SOCKETS) };
    }

    #[test]
    fn a_client_that_stops_reading_is_cut_and_a_waiting_one_is_not() {
        let mut s = Stall::new(0);
        // Reading: the queue drains.
        assert!(!s.stalled(30_000, 30_000, S));
        assert!(!s.stalled(10_000, 0, 2 * S));
        // Stops reading: the queue stays full, nothing accepted.
        assert!(!s.stalled(10_000, 0, 11 * S));
        assert!(s.stalled(10_000, 0, 12 * S));
        // Following with nothing new: an empty queue for minutes is fine.
        let mut f = Stall::new(0);
        for t in 1..300 {
            assert!(!f.stalled(0, 0, t * S));
        }
    }
}
