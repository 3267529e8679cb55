//! The server's limits and pool sizes, with defaults fit for a node
//! agent on a small machine.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use super::Pool;

/// The size of one worker pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PoolSize {
    /// Worker threads, started with the server and alive until shutdown.
    pub(crate) threads: usize,
    /// Requests that may wait for a worker; beyond, 503.
    pub(crate) queue: usize,
}

/// Everything the server needs to know; see [`Config::default`] for the
/// defaults.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    /// Where to listen; port 0 picks a free port (see `Bound::local_addr`).
    pub(crate) listen: SocketAddr,
    /// Connections held at once, whatever their phase. Keep it well under
    /// `RLIMIT_NOFILE` minus what the rest of the program needs.
    pub(crate) max_connections: usize,
    /// Time from accept to the end of the request head.
    pub(crate) head_timeout: Duration,
    /// Time a body may take to send its first [`Config::body_min_rate`]
    /// × `body_timeout` bytes, and each such quota after: small bodies
    /// have an overall deadline, large ones a minimum rate.
    pub(crate) body_timeout: Duration,
    /// The minimum average rate of a body, in bytes per second.
    pub(crate) body_min_rate: u64,
    /// Time any single write of an answer may wait for the client.
    pub(crate) write_timeout: Duration,
    /// How long a connection lingers after an answer that left its body
    /// unread (zero: close at once).
    pub(crate) linger: Duration,
    /// The largest request head (request line and headers); beyond, 431.
    pub(crate) max_head: usize,
    /// The most header fields in a head; beyond, 431.
    pub(crate) max_headers: usize,
    /// Bytes of buffered bodies the reader holds at once; beyond, it stops
    /// reading bodies until handlers take theirs (their deadlines run on).
    pub(crate) max_buffered: usize,
    /// The quick pool.
    pub(crate) quick: PoolSize,
    /// The slow pool.
    pub(crate) slow: PoolSize,
    /// The stream pool.
    pub(crate) stream: PoolSize,
    /// Stack size of every thread the server starts.
    pub(crate) stack_size: usize,
    /// Called with a one-line message when accepting fails in a way the
    /// operator should know (descriptors exhausted); at most once per
    /// episode.
    pub(crate) warn: fn(&str),
}

impl Default for Config {
    fn default() -> Config {
        Config {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            max_connections: 256,
            head_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            body_min_rate: 16 * 1024,
            write_timeout: Duration::from_secs(10),
            linger: Duration::from_secs(1),
            max_head: 16 * 1024,
            max_headers: 64,
            max_buffered: 32 << 20,
            quick: PoolSize {
                threads: 4,
                queue: 64,
            },
            slow: PoolSize {
                threads: 32,
                queue: 64,
            },
            stream: PoolSize {
                threads: 8,
                queue: 0,
            },
            stack_size: 256 * 1024,
            warn: |_| {},
        }
    }
}

impl Config {
    /// The size of `pool`.
    pub(crate) fn pool(&self, pool: Pool) -> PoolSize {
        match pool {
            Pool::Quick => self.quick,
            Pool::Slow => self.slow,
            Pool::Stream => self.stream,
        }
    }

    /// Checks that the server can run with this configuration: at least
    /// one connection, one worker per pool, and timeouts that are not
    /// zero.
    pub(crate) fn check(&self) -> Result<(), String> {
        if self.max_connections == 0 {
            return Err("max_connections must be at least 1".into());
        }
        if let Some(pool) = Pool::ALL.into_iter().find(|&p| self.pool(p).threads == 0) {
            return Err(format!(
                "the {} pool needs at least one thread",
                pool.name()
            ));
        }
        if self.max_headers == 0 || self.max_head < 64 {
            return Err("max_head must be at least 64 and max_headers at least 1".into());
        }
        if [self.head_timeout, self.body_timeout, self.write_timeout]
            .iter()
            .any(Duration::is_zero)
        {
            return Err("head, body and write timeouts must not be zero".into());
        }
        Ok(())
    }

    /// Bytes a body must deliver within each `body_timeout`.
    pub(crate) fn body_quota(&self) -> u64 {
        let millis = u64::try_from(self.body_timeout.as_millis()).unwrap_or(u64::MAX);
        (self.body_min_rate.saturating_mul(millis) / 1000).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_run_and_impossible_settings_do_not() {
        assert_eq!(Config::default().check(), Ok(()));
        assert_eq!(Config::default().body_quota(), 160 * 1024);
        let mut config = Config::default();
        config.slow.threads = 0;
        assert_eq!(
            config.check(),
            Err("the slow pool needs at least one thread".into())
        );
        let config = Config {
            head_timeout: Duration::ZERO,
            ..Config::default()
        };
        assert!(config.check().is_err());
        let config = Config {
            max_connections: 0,
            ..Config::default()
        };
        assert!(config.check().is_err());
    }
}
