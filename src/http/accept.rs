//! The accept loop (`http-accept`), which survives descriptor exhaustion.
//!
//! It keeps a reserve descriptor (an open `/dev/null`). When `accept`
//! fails with EMFILE or ENFILE, the reserve is closed, one connection
//! accepted with the descriptor that freed, answered 503 and closed, and
//! the reserve reopened: each failure thus takes one connection off the
//! listen queue, so the loop never spins on a queue it cannot serve, and
//! it serves again as soon as descriptors are free. When the reserve
//! cannot be reopened (the rest of the program took the descriptor), and
//! on other persistent errors (ENOBUFS, ENOMEM), it backs off: 10 ms,
//! doubling up to 1 s, without polling the listener meanwhile.

use std::fs::File;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::time::Duration;

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use super::conn::{self, Conn};
use super::server::{Handoff, Shared};

/// Connections accepted in a row before the stop signal is looked at.
const BATCH: usize = 64;
/// The first and the longest backoff.
const BACKOFF_FIRST: Duration = Duration::from_millis(10);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

fn open_reserve() -> io::Result<File> {
    File::open("/dev/null")
}

/// The accept loop's state.
pub(super) struct Acceptor {
    listener: TcpListener,
    reserve: Option<File>,
    /// The wait before the next accept, when backing off.
    backoff: Option<Duration>,
    /// The last backoff of the current run of failures.
    streak: Option<Duration>,
    warned: bool,
}

impl Acceptor {
    /// An acceptor on the non-blocking `listener`, with its reserve open.
    pub(super) fn new(listener: TcpListener) -> io::Result<Acceptor> {
        Ok(Acceptor {
            listener,
            reserve: Some(open_reserve()?),
            backoff: None,
            streak: None,
            warned: false,
        })
    }

    /// Accepts until the server stops; the listener closes on return.
    pub(super) fn run(mut self, shared: &Shared) {
        loop {
            if shared.stop.is_set() {
                return;
            }
            let mut fds = vec![PollFd::new(shared.stop.fd(), PollFlags::POLLIN)];
            if self.backoff.is_none() {
                fds.push(PollFd::new(self.listener.as_fd(), PollFlags::POLLIN));
            }
            let timeout = self.backoff.map_or(PollTimeout::NONE, |b| {
                PollTimeout::try_from(b).unwrap_or(PollTimeout::MAX)
            });
            match poll(&mut fds, timeout) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => {
                    self.fail(shared, &io::Error::from(e));
                    continue;
                }
            }
            drop(fds);
            if shared.stop.is_set() {
                return;
            }
            if self.reserve.is_none() {
                self.reserve = open_reserve().ok();
            }
            self.backoff = None;
            self.accept_batch(shared);
        }
    }

    /// Accepts what the listen queue holds, up to [`BATCH`].
    fn accept_batch(&mut self, shared: &Shared) {
        for _ in 0..BATCH {
            match self.listener.accept() {
                Ok((stream, peer)) => {
                    self.warned = false;
                    self.streak = None;
                    admit(shared, stream, peer);
                }
                Err(e) => match e.raw_os_error().map(Errno::from_raw) {
                    _ if e.kind() == io::ErrorKind::WouldBlock => {
                        self.streak = None;
                        return;
                    }
                    Some(Errno::EMFILE | Errno::ENFILE) => {
                        shared.stats.exhausted.inc();
                        if !self.warned {
                            self.warned = true;
                            (shared.config.warn)(&format!(
                                "unable to accept a connection: {e}; refusing connections until descriptors are free"
                            ));
                        }
                        if !self.refuse_with_reserve(shared) {
                            self.fail(shared, &e);
                            return;
                        }
                    }
                    // The connection went away, or a signal: try the next.
                    Some(
                        Errno::ECONNABORTED
                        | Errno::EINTR
                        | Errno::EPROTO
                        | Errno::EPERM
                        | Errno::ENETDOWN
                        | Errno::ENOPROTOOPT
                        | Errno::EHOSTDOWN
                        | Errno::ENONET
                        | Errno::EHOSTUNREACH
                        | Errno::EOPNOTSUPP
                        | Errno::ENETUNREACH,
                    ) => {}
                    _ => {
                        self.fail(shared, &e);
                        return;
                    }
                },
            }
        }
    }

    /// Refuses one queued connection with the reserve descriptor; false
    /// when there was no reserve or it cannot be reopened.
    fn refuse_with_reserve(&mut self, shared: &Shared) -> bool {
        if self.reserve.take().is_none() {
            return false;
        }
        if let Ok((stream, _)) = self.listener.accept() {
            shared.stats.busy.inc();
            conn::refuse_now(
                &stream,
                &shared.refusal(503, "server out of descriptors", false),
            );
        }
        self.reserve = open_reserve().ok();
        self.reserve.is_some()
    }

    /// Backs off after a persistent error.
    fn fail(&mut self, shared: &Shared, err: &io::Error) {
        let next = self
            .streak
            .map_or(BACKOFF_FIRST, |b| (b * 2).min(BACKOFF_MAX));
        if !self.warned {
            self.warned = true;
            (shared.config.warn)(&format!(
                "unable to accept a connection: {err}; backing off"
            ));
        }
        self.streak = Some(next);
        self.backoff = Some(next);
    }
}

/// Hands a new connection to the reader, or answers 503 when it cannot
/// take it.
fn admit(shared: &Shared, stream: TcpStream, peer: SocketAddr) {
    shared.stats.accepted.inc();
    if stream.set_nonblocking(true).is_err() {
        return;
    }
    let _ = stream.set_nodelay(true);
    let conn = Conn::new(stream, peer, &shared.active);
    if let Err(Handoff::New(conn) | Handoff::Linger(conn) | Handoff::Write { conn, .. }) =
        shared.hand(Handoff::New(conn))
    {
        shared.stats.busy.inc();
        conn::refuse_now(&conn.stream, &shared.refusal(503, "server busy", false));
    }
}
