//! Instance ports: allocation from the configured range.
//!
//! A port of the range is free when no other instance holds it and it can
//! be bound on every address ([`net::port_free`]): a listener anywhere on
//! the machine makes it busy, and so does a client connection that uses
//! it as its source port (the application's own bind would fail on it
//! too); an application's own TIME_WAIT connections after a stop do not.
//! The cost of a test is the same whatever the number of sockets on the
//! machine.

use std::collections::HashSet;

use super::config::PortRange;
use crate::net;

/// The lowest port of `range` that is neither `held` by an instance nor
/// in use on the machine.
pub(crate) fn allocate(range: PortRange, held: &HashSet<u16>) -> Option<u16> {
    (range.low..=range.high).find(|port| !held.contains(port) && net::port_free(*port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn a_bound_listener_is_seen_and_skipped() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let range = PortRange {
            low: port,
            high: port,
        };
        assert_eq!(allocate(range, &HashSet::new()), None);
        drop(listener);
        assert_eq!(allocate(range, &HashSet::new()), Some(port));
        assert_eq!(allocate(range, &HashSet::from([port])), None);
    }
}
