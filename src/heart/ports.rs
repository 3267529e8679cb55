//! Instance ports.
//!
//! A port of the configured range is free when no other instance holds it
//! and no socket on the machine LISTENs on it. Listening sockets are read
//! from `/proc/net/tcp` and `/proc/net/tcp6` (state `0A`, LISTEN, only):
//! connections in TIME_WAIT or any other state never make a port busy, so
//! an application's own leftover connections after a stop never block a
//! restart on the same port.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, TcpListener};

use super::config::PortRange;

/// The TCP state LISTEN in `/proc/net/tcp`.
const TCP_LISTEN: &str = "0A";

/// The local ports of every listening TCP socket (IPv4 and IPv6).
pub(crate) fn listening() -> HashSet<u16> {
    let mut ports = HashSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        if let Ok(text) = fs::read_to_string(table) {
            parse_table(&text, &mut ports);
        }
    }
    ports
}

/// True when a socket LISTENs on `port`.
///
/// Reading the tables costs time in proportion to every TCP socket on the
/// machine (20 ms with 15,000 of them), so a cheap test comes first: when
/// both `0.0.0.0:PORT` and `[::]:PORT` can be bound (with SO_REUSEADDR, as
/// the standard library binds), no socket but a TIME_WAIT one holds the
/// port, so none listens. Only when a bind fails do the tables decide (the
/// port may be held by a connection, which does not make it busy).
pub(crate) fn is_listening(port: u16) -> bool {
    !bind_probe(port) && listening().contains(&port)
}

/// True when the port can be bound on every IPv4 and IPv6 address (each
/// test listener is closed at once).
fn bind_probe(port: u16) -> bool {
    if TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).is_err() {
        return false;
    }
    match TcpListener::bind((Ipv6Addr::UNSPECIFIED, port)) {
        Ok(_) => true,
        // No IPv6 on this machine: nothing can listen there.
        Err(e) => e.kind() != io::ErrorKind::AddrInUse,
    }
}

/// Adds the listening ports of one `/proc/net/tcp*` table to `ports`.
fn parse_table(text: &str, ports: &mut HashSet<u16>) {
    for line in text.lines().skip(1) {
        let mut fields = line.split_ascii_whitespace();
        let (Some(_slot), Some(local), Some(_remote), Some(state)) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        if state != TCP_LISTEN {
            continue;
        }
        let Some((_, port)) = local.rsplit_once(':') else {
            continue;
        };
        if let Ok(port) = u16::from_str_radix(port, 16) {
            ports.insert(port);
        }
    }
}

/// The lowest port of `range` that is neither `held` by an instance nor
/// listened on.
pub(crate) fn allocate(range: PortRange, held: &HashSet<u16>) -> Option<u16> {
    let mut table: Option<HashSet<u16>> = None;
    (range.low..=range.high).find(|port| {
        !held.contains(port)
            && (bind_probe(*port) || !table.get_or_insert_with(listening).contains(port))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:A5B8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0000000000000000 100 0 0 10 0
   1: 0100007F:A5B9 0100007F:A5B8 06 00000000:00000000 03:00001000 00000000     0        0 0 3 0000000000000000
   2: 0100007F:A5BA 0100007F:A5B8 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0000000000000000 20 4 30 10 -1
";

    #[test]
    fn only_listen_state_counts() {
        let mut ports = HashSet::new();
        parse_table(TABLE, &mut ports);
        assert_eq!(ports, HashSet::from([0xA5B8]));
    }

    #[test]
    fn a_bound_listener_is_seen_and_skipped() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert!(is_listening(port));
        let range = PortRange {
            low: port,
            high: port,
        };
        assert_eq!(allocate(range, &HashSet::new()), None);
        drop(listener);
        assert!(!is_listening(port));
        assert_eq!(allocate(range, &HashSet::new()), Some(port));
        // A connection holding the port does not make it busy.
        let server = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(server.local_addr().unwrap()).unwrap();
        let held = client.local_addr().unwrap().port();
        assert!(!is_listening(held));
        assert_eq!(allocate(range, &HashSet::from([port])), None);
    }
}
