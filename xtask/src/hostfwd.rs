//! QEMU's user network forwards a host port to the guest (`hostfwd`) from
//! a socket that libslirp listens on with a backlog of 1 (`ss -ltn` shows
//! `Send-Q 1` on the forwarded port). When more clients connect at once
//! than QEMU's main loop accepts, the host kernel's accept queue overflows:
//! it drops the handshake's last ACK, and a client that has already sent
//! its request waits on retransmissions. Measured with ApacheBench
//! (`ab -n 3000 -c 64`, issue 28) and a capture of the guest's side
//! (`-object filter-dump`): 27-36 of 3,000 requests never reached the
//! guest at all, the appliance answered every connection that did.
//!
//! Linux lets a listening socket's backlog be changed by calling `listen()`
//! on it again (`inet_listen`, net/ipv4/af_inet.c: an already listening
//! socket only takes the new backlog). So the harness takes a duplicate of
//! QEMU's listening socket (`pidfd_getfd`, Linux 5.6; the caller is QEMU's
//! parent, so the ptrace access check passes) and calls `listen()` with a
//! backlog of [`BACKLOG`]. QEMU keeps accepting from the same socket.

use std::time::{Duration, Instant};

/// The backlog given to QEMU's forwarded port.
pub const BACKLOG: i32 = 1024;

/// TCP state LISTEN in `/proc/net/tcp` (include/net/tcp_states.h).
const TCP_LISTEN: &str = "0A";

/// The socket inode listening on 127.0.0.1:`port`, from the text of
/// `/proc/net/tcp` (addresses are the IPv4 address as a host-order hex
/// number and the port in hex: `0100007F:1F90` on x86).
pub fn listening_inode(proc_net_tcp: &str, port: u16) -> Option<u64> {
    let want = format!("{:08X}:{:04X}", u32::from_ne_bytes([127, 0, 0, 1]), port);
    proc_net_tcp.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() > 9 && f[1] == want && f[3] == TCP_LISTEN).then(|| f[9].parse().ok()).flatten()
    })
}

/// The file descriptor of `pid` that is the socket with this inode.
fn fd_of_inode(pid: u32, inode: u64) -> Option<i32> {
    let want = format!("socket:[{inode}]");
    std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.flatten().find_map(|e| {
        let target = std::fs::read_link(e.path()).ok()?;
        (target.to_str() == Some(want.as_str())).then(|| e.file_name().to_str()?.parse().ok()).flatten()
    })
}

/// Give QEMU's (`pid`) forwarded port on 127.0.0.1 a backlog of
/// [`BACKLOG`], once QEMU listens on it (waiting at most `wait`).
pub fn widen_backlog(pid: u32, port: u16, wait: Duration) -> Result<(), String> {
    let t0 = Instant::now();
    let fd = loop {
        let tcp = std::fs::read_to_string("/proc/net/tcp").map_err(|e| format!("/proc/net/tcp: {e}"))?;
        if let Some(fd) = listening_inode(&tcp, port).and_then(|inode| fd_of_inode(pid, inode)) {
            break fd;
        }
        if t0.elapsed() > wait {
            return Err(format!("QEMU (pid {pid}) did not listen on 127.0.0.1:{port} within {} s", wait.as_secs()));
        }
        // QEMU sets the forward up while it starts; look again shortly.
        std::thread::sleep(Duration::from_millis(10));
    };
    // SAFETY: pidfd_open(2) with a pid and no flags returns a new file
    // descriptor (or -1); nothing else is touched.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::c_int, 0) } as libc::c_int;
    if pidfd < 0 {
        return Err(format!("pidfd_open({pid}): {}", std::io::Error::last_os_error()));
    }
    // SAFETY: pidfd_getfd(2) duplicates QEMU's descriptor `fd` into this
    // process as a new descriptor (or returns -1); QEMU's is untouched.
    let dup = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd, fd, 0) } as libc::c_int;
    let err = std::io::Error::last_os_error();
    // SAFETY: `pidfd` is ours, opened above, closed once.
    unsafe { libc::close(pidfd) };
    if dup < 0 {
        return Err(format!("pidfd_getfd(QEMU pid {pid}, fd {fd}): {err}"));
    }
    // SAFETY: `dup` is a socket descriptor of ours (the duplicate); listen(2)
    // on a listening TCP socket changes only its backlog.
    let r = unsafe { libc::listen(dup, BACKLOG) };
    let err = std::io::Error::last_os_error();
    // SAFETY: `dup` is ours; closing it leaves QEMU's descriptor open.
    unsafe { libc::close(dup) };
    if r != 0 {
        return Err(format!("listen(QEMU's 127.0.0.1:{port}, {BACKLOG}): {err}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROC_NET_TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 123456 1 0000000000000000 100 0 0 10 0
   1: 0100007F:1F90 0100007F:D2C4 01 00000000:00000000 00:00000000 00000000     0        0 654321 1 0000000000000000 20 4 30 10 -1
   2: 00000000:1F91 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 777 1 0000000000000000 100 0 0 10 0
";

    #[test]
    fn the_listening_socket_on_loopback_is_found() {
        // 0x1F90 = 8080; the established connection on the same port is not it.
        assert_eq!(listening_inode(PROC_NET_TCP, 8080), Some(123456));
        // 8081 listens on 0.0.0.0, not on 127.0.0.1.
        assert_eq!(listening_inode(PROC_NET_TCP, 8081), None);
        assert_eq!(listening_inode(PROC_NET_TCP, 9000), None);
    }

    /// A listener with QEMU's backlog of 1, none of whose connections is
    /// accepted: the kernel completes two handshakes and drops the SYNs
    /// after; once widened, every new connection completes at once.
    #[test]
    fn a_listener_of_this_process_gets_the_wider_backlog() {
        use std::os::fd::FromRawFd;
        // SAFETY: a new IPv4 TCP socket; bind and listen on it below.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
        assert!(fd >= 0);
        let addr = libc::sockaddr_in { sin_family: libc::AF_INET as u16, sin_port: 0, sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes([127, 0, 0, 1]) }, sin_zero: [0; 8] };
        // SAFETY: `addr` is a valid sockaddr_in of the size given; `fd` is the socket above.
        assert_eq!(unsafe { libc::bind(fd, &addr as *const _ as *const libc::sockaddr, std::mem::size_of::<libc::sockaddr_in>() as u32) }, 0);
        // SAFETY: `fd` is a bound TCP socket.
        assert_eq!(unsafe { libc::listen(fd, 1) }, 0);
        // SAFETY: `fd` is ours and owned by the listener from here on.
        let l = unsafe { std::net::TcpListener::from_raw_fd(fd) };
        let port = l.local_addr().unwrap().port();
        let connects = |n: usize| -> (usize, Vec<std::net::TcpStream>) {
            let mut ok = Vec::new();
            for _ in 0..n {
                if let Ok(s) = std::net::TcpStream::connect_timeout(&(std::net::Ipv4Addr::LOCALHOST, port).into(), Duration::from_millis(300)) {
                    ok.push(s);
                }
            }
            (ok.len(), ok)
        };
        let (narrow, _held) = connects(6);
        assert!(narrow < 6, "with a backlog of 1, {narrow} of 6 unaccepted connections completed");
        widen_backlog(std::process::id(), port, Duration::from_secs(2)).unwrap();
        let (wide, _held2) = connects(20);
        assert_eq!(wide, 20, "after widening");
    }
}
