//! TCP ports on this machine: is one free, does one answer.
//!
//! Both questions are answered with a constant number of system calls on
//! the one port, whatever the number of sockets on the machine (no read of
//! the `/proc/net/tcp*` tables, whose cost grows with every socket):
//!
//! - [`port_free`]: the port can be bound on every IPv4 and IPv6 address
//!   with `SO_REUSEADDR`, as applications bind. A socket that LISTENs on
//!   the port (on any address) makes it busy; TIME_WAIT connections left
//!   by an application that bound the port with `SO_REUSEADDR` (as the
//!   standard libraries of Rust, Python, Node, Ruby and PHP all do) do
//!   not, so they never block a restart on the same port. Only ever call
//!   it when no application of ours may be binding the port at that very
//!   moment: the test listener holds the port for a few microseconds.
//! - [`port_answers`] (and [`connect`], for a probe that talks once
//!   connected): a TCP connect to `127.0.0.1:PORT` succeeds. A
//!   connect to a loopback port nobody listens on may pick that very port
//!   as its own ephemeral source port and connect to itself (TCP
//!   simultaneous open); such a connection is recognised (its local and
//!   peer addresses are equal), reset rather than closed, so that it
//!   leaves no TIME_WAIT behind to block the application's bind, and
//!   counts as no answer.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use nix::sys::socket::{setsockopt, sockopt};

/// Connect timeout of one [`port_answers`] probe.
pub(crate) const PROBE_TIMEOUT: Duration = Duration::from_millis(200);

/// True when `port` can be bound on every IPv4 and IPv6 address (each
/// test listener is closed at once).
pub(crate) fn port_free(port: u16) -> bool {
    if TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).is_err() {
        return false;
    }
    match TcpListener::bind((Ipv6Addr::UNSPECIFIED, port)) {
        Ok(_) => true,
        // No IPv6 on this machine: nothing can listen there.
        Err(e) => e.kind() != io::ErrorKind::AddrInUse,
    }
}

/// A TCP connection to `127.0.0.1:port` made within `timeout`, when
/// something accepts it; a connection that landed on itself is reset and
/// is `None`.
pub(crate) fn connect(port: u16, timeout: Duration) -> Option<TcpStream> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    answered(TcpStream::connect_timeout(&addr, timeout).ok()?)
}

/// `stream`, unless it is connected to itself (TCP simultaneous open on a
/// port nobody listens on): then it is reset, leaving no TIME_WAIT, and
/// the answer is `None`.
fn answered(stream: TcpStream) -> Option<TcpStream> {
    if stream.local_addr().ok() == stream.peer_addr().ok() {
        reset(&stream);
        return None;
    }
    Some(stream)
}

/// True when something accepts TCP connections on `127.0.0.1:port`
/// within `timeout`.
pub(crate) fn port_answers_within(port: u16, timeout: Duration) -> bool {
    connect(port, timeout).is_some()
}

/// True when something accepts TCP connections on `127.0.0.1:port`.
pub(crate) fn port_answers(port: u16) -> bool {
    port_answers_within(port, PROBE_TIMEOUT)
}

/// Asks `GET path` of `127.0.0.1:port` (HTTP/1.0, `Connection: close`)
/// and returns the status code of the answer, all within `timeout`.
///
/// # Errors
///
/// Why there was no status, for an operator: "GET /healthz timed out after
/// 2 s", "connection refused", "no HTTP answer".
pub(crate) fn http_status(port: u16, path: &str, timeout: Duration) -> Result<u16, String> {
    use std::io::{Read, Write};
    use std::time::Instant;
    let started = Instant::now();
    let timed_out = || format!("GET {path} timed out after {} s", timeout.as_secs_f64());
    let left = || {
        timeout
            .checked_sub(started.elapsed())
            .filter(|d| !d.is_zero())
    };
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let stream = TcpStream::connect_timeout(&addr, timeout).map_err(|e| match e.kind() {
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => timed_out(),
        _ => format!("GET {path}: {e}"),
    })?;
    let mut stream =
        answered(stream).ok_or_else(|| format!("GET {path}: nothing listens on port {port}"))?;
    let _ = stream.set_nodelay(true);
    let request =
        format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    stream
        .set_write_timeout(Some(left().ok_or_else(timed_out)?))
        .and_then(|()| stream.write_all(request.as_bytes()))
        .map_err(|e| match e.kind() {
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => timed_out(),
            _ => format!("GET {path}: {e}"),
        })?;
    let mut head = [0u8; 12];
    let mut got = 0;
    while got < head.len() {
        stream
            .set_read_timeout(Some(left().ok_or_else(timed_out)?))
            .map_err(|e| format!("GET {path}: {e}"))?;
        match stream.read(&mut head[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
                ) =>
            {
                return Err(timed_out())
            }
            Err(e) => return Err(format!("GET {path}: {e}")),
        }
    }
    parse_status(&head[..got]).ok_or_else(|| format!("GET {path}: no HTTP answer"))
}

/// The status code of an `HTTP/1.x NNN` status line.
pub(crate) fn parse_status(head: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(head).ok()?;
    let rest = text.strip_prefix("HTTP/1.")?;
    let code = rest.get(2..5)?;
    (rest.as_bytes().get(1) == Some(&b' '))
        .then(|| code.parse().ok())
        .flatten()
}

/// Makes the close of `stream` a reset (`SO_LINGER` 0): no FIN, no
/// TIME_WAIT.
fn reset(stream: &TcpStream) {
    let linger = nix::libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    let _ = setsockopt(stream, sockopt::Linger, &linger);
}

/// `addr` with an unspecified IP (`0.0.0.0`, `[::]`) replaced by the
/// loopback address of its family: where a local client reaches a server
/// that listens on `addr`.
pub(crate) fn loopback_of(addr: SocketAddr) -> SocketAddr {
    let mut addr = addr;
    if addr.ip().is_unspecified() {
        match addr {
            SocketAddr::V4(ref mut a) => a.set_ip(Ipv4Addr::LOCALHOST),
            SocketAddr::V6(ref mut a) => a.set_ip(Ipv6Addr::LOCALHOST),
        }
    }
    addr
}

/// Test support: runs `f` on a thread of its own in a new network
/// namespace (root only) whose loopback is up and whose only ephemeral
/// port is `port`: there, every connect to a closed `127.0.0.1:port`
/// lands on itself, as a probe on a busy machine sometimes does.
#[cfg(test)]
pub(crate) fn with_self_connect<T: Send + 'static>(
    port: u16,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    std::thread::spawn(move || {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
            .expect("a network namespace of our own (needs root)");
        // Children of this thread share its namespace.
        let set_up = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(format!(
                "ip link set lo up && echo {port} {port} > /proc/sys/net/ipv4/ip_local_port_range"
            ))
            .status()
            .expect("run sh");
        assert!(set_up.success(), "cannot set up the namespace: {set_up}");
        f()
    })
    .join()
    .expect("the test thread panicked")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listener_makes_its_port_busy_and_answering() {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        assert!(!port_free(port));
        assert!(port_answers(port));
        drop(listener);
        assert!(port_free(port));
        assert!(!port_answers(port));
    }

    #[test]
    fn time_wait_of_an_accepted_connection_leaves_the_port_free() {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let client = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).unwrap();
        let (server_side, _) = listener.accept().unwrap();
        // The server closes first, so its side goes to TIME_WAIT.
        drop(server_side);
        drop(listener);
        drop(client);
        assert!(port_free(port));
    }

    #[test]
    fn a_connection_to_itself_is_no_answer_and_leaves_nothing() {
        // Bind a client socket, learn its port, and connect it to itself:
        // what an unlucky probe of a closed port does.
        let probe = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = probe.local_addr().unwrap().port();
        drop(probe);
        let socket = nix::sys::socket::socket(
            nix::sys::socket::AddressFamily::Inet,
            nix::sys::socket::SockType::Stream,
            nix::sys::socket::SockFlag::SOCK_CLOEXEC,
            None,
        )
        .unwrap();
        let addr = nix::sys::socket::SockaddrIn::new(127, 0, 0, 1, port);
        nix::sys::socket::bind(std::os::fd::AsRawFd::as_raw_fd(&socket), &addr).unwrap();
        nix::sys::socket::connect(std::os::fd::AsRawFd::as_raw_fd(&socket), &addr).unwrap();
        let stream = TcpStream::from(socket);
        assert_eq!(stream.local_addr().unwrap(), stream.peer_addr().unwrap());
        // The guard every probe goes through (port_answers, connect, and
        // so the heart's, Apache's and pm-runtime check's probes): a
        // connect that succeeded is no answer when it reached itself. A
        // bare `connect(..).is_ok()`, as those probes once were, takes
        // it for an answer and leaves a TIME_WAIT on the port.
        assert!(answered(stream).is_none());
        // Reset, not closed: the port is bindable at once.
        assert!(port_free(port));
    }

    #[test]
    fn http_status_reads_the_answer_and_names_a_timeout() {
        use std::io::{Read, Write};
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 256];
            let n = s.read(&mut buf).unwrap();
            assert!(buf[..n].starts_with(b"GET /healthz HTTP/1.0\r\n"));
            s.write_all(b"HTTP/1.1 503 Busy\r\n\r\n").unwrap();
            // Accepted, never answered.
            let (_silent, _) = listener.accept().unwrap();
            std::thread::sleep(Duration::from_millis(500));
        });
        assert_eq!(
            http_status(port, "/healthz", Duration::from_secs(2)),
            Ok(503)
        );
        let err = http_status(port, "/healthz", Duration::from_millis(100)).unwrap_err();
        assert_eq!(err, "GET /healthz timed out after 0.1 s");
        server.join().unwrap();
        assert!(http_status(port, "/", Duration::from_millis(100)).is_err());
    }

    #[test]
    fn status_lines_are_read() {
        assert_eq!(parse_status(b"HTTP/1.1 200 OK"), Some(200));
        assert_eq!(parse_status(b"HTTP/1.0 403"), Some(403));
        assert_eq!(parse_status(b"HTTP/1.1 20"), None);
        assert_eq!(parse_status(b"SSH-2.0-Open"), None);
    }

    #[test]
    fn a_connection_to_a_listener_is_an_answer() {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stream = connect(port, PROBE_TIMEOUT).expect("the listener answers");
        assert_eq!(stream.peer_addr().unwrap().port(), port);
    }

    #[test]
    fn unspecified_addresses_become_loopback() {
        let any: SocketAddr = "0.0.0.0:80".parse().unwrap();
        assert_eq!(loopback_of(any), "127.0.0.1:80".parse().unwrap());
        let any6: SocketAddr = "[::]:80".parse().unwrap();
        assert_eq!(loopback_of(any6), "[::1]:80".parse().unwrap());
        let set: SocketAddr = "10.0.0.1:80".parse().unwrap();
        assert_eq!(loopback_of(set), set);
    }

    #[test]
    #[ignore = "needs root"]
    fn a_probe_that_lands_on_itself_is_no_answer() {
        // Nobody listens on the port; the namespace makes every connect
        // to it land on itself. The probe first, then a bare connect as
        // the probes of Apache and pm-runtime check once were: it must
        // land on itself (the setup works, and the probe's reset left
        // the port usable) and would count as an answer.
        let port = 40_000;
        let (answers, bare) = with_self_connect(port, move || {
            let answers = port_answers(port);
            let bare = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok();
            (answers, bare)
        });
        assert!(bare, "the connect did not land on itself: no test");
        assert!(!answers, "a connection to itself was taken for an answer");
    }
}
