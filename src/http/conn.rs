//! One client connection, and waiting I/O on non-blocking sockets.
//!
//! Every socket the server holds stays non-blocking from accept to close;
//! a thread that must wait for one (a worker writing an answer, a handler
//! reading a streamed body) waits in poll(2) with a deadline, and, where
//! asked, also on the server's [`Stop`], so that shutdown ends the wait.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

/// An accepted connection, counted in the server's active connections
/// for as long as it lives.
#[derive(Debug)]
pub(super) struct Conn {
    /// The socket, non-blocking.
    pub(super) stream: TcpStream,
    /// The client's address.
    pub(super) peer: SocketAddr,
    /// When it was accepted.
    pub(super) admitted: Instant,
    _counted: Counted,
}

#[derive(Debug)]
struct Counted(Arc<AtomicUsize>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Conn {
    /// Wraps a connection just accepted, counting it in `active`.
    pub(super) fn new(stream: TcpStream, peer: SocketAddr, active: &Arc<AtomicUsize>) -> Conn {
        active.fetch_add(1, Ordering::SeqCst);
        Conn {
            stream,
            peer,
            admitted: Instant::now(),
            _counted: Counted(Arc::clone(active)),
        }
    }
}

/// A one-way signal: once triggered, its descriptor stays readable, so
/// any number of threads can wait on it in poll(2).
#[derive(Debug)]
pub(super) struct Stop {
    flag: AtomicBool,
    rx: UnixStream,
    tx: UnixStream,
}

impl Stop {
    pub(super) fn new() -> io::Result<Stop> {
        let (rx, tx) = UnixStream::pair()?;
        tx.set_nonblocking(true)?;
        Ok(Stop {
            flag: AtomicBool::new(false),
            rx,
            tx,
        })
    }

    /// Triggers the signal (idempotent).
    pub(super) fn trigger(&self) {
        if !self.flag.swap(true, Ordering::SeqCst) {
            let _ = (&self.tx).write(&[1]);
        }
    }

    pub(super) fn is_set(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }

    pub(super) fn fd(&self) -> BorrowedFd<'_> {
        self.rx.as_fd()
    }
}

/// The wake-up of a poll loop: any thread may wake it; the loop drains it.
#[derive(Debug)]
pub(super) struct Waker {
    rx: UnixStream,
    tx: UnixStream,
}

impl Waker {
    pub(super) fn new() -> io::Result<Waker> {
        let (rx, tx) = UnixStream::pair()?;
        rx.set_nonblocking(true)?;
        tx.set_nonblocking(true)?;
        Ok(Waker { rx, tx })
    }

    /// Wakes the loop; a full buffer means it is awake already.
    pub(super) fn wake(&self) {
        let _ = (&self.tx).write(&[1]);
    }

    /// Empties the buffer (called by the loop after it woke).
    pub(super) fn drain(&self) {
        let mut buf = [0u8; 64];
        while matches!((&self.rx).read(&mut buf), Ok(n) if n > 0) {}
    }

    pub(super) fn fd(&self) -> BorrowedFd<'_> {
        self.rx.as_fd()
    }
}

/// The poll(2) timeout until `deadline`, rounded up to the millisecond so
/// that a wake-up is never early (an early one would spin until it).
pub(super) fn timeout_until(deadline: Option<Instant>, now: Instant) -> PollTimeout {
    match deadline {
        None => PollTimeout::NONE,
        Some(deadline) => {
            let left = deadline.saturating_duration_since(now) + Duration::from_micros(999);
            PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX)
        }
    }
}

fn shutting_down() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, "server shutting down")
}

/// Waits until `fd` is ready for `events` (or has an error or hung up);
/// fails with `TimedOut` at `deadline`, and with `ConnectionAborted` when
/// `stop` is triggered.
pub(super) fn wait(
    fd: BorrowedFd<'_>,
    events: PollFlags,
    deadline: Instant,
    stop: Option<&Stop>,
) -> io::Result<()> {
    loop {
        if stop.is_some_and(Stop::is_set) {
            return Err(shutting_down());
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "client too slow"));
        }
        let mut fds = vec![PollFd::new(fd, events)];
        if let Some(stop) = stop {
            fds.push(PollFd::new(stop.fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, timeout_until(Some(deadline), now)) {
            Ok(_) => {
                if fds[0].any().unwrap_or(true) {
                    return Ok(());
                }
            }
            Err(Errno::EINTR) => {}
            Err(e) => return Err(io::Error::from(e)),
        }
    }
}

/// Writes all of `buf` to the non-blocking `stream`, waiting at most
/// `timeout` for each bit of progress (and not past `stop`, if given).
pub(super) fn write_all(
    stream: &TcpStream,
    mut buf: &[u8],
    timeout: Duration,
    stop: Option<&Stop>,
) -> io::Result<()> {
    while !buf.is_empty() {
        match (&*stream).write(buf) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                wait(
                    stream.as_fd(),
                    PollFlags::POLLOUT,
                    Instant::now() + timeout,
                    stop,
                )?;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// What [`refuse_now`] reads at most from a connection before answering.
const REFUSE_DRAIN: usize = 64 * 1024;

/// Answers `answer` on `stream` and shuts its write side, at once and without a
/// thread or a wait: what the client has already sent is read (up to 64
/// KiB, so that the close is not a reset that could destroy the answer
/// before the client reads it), the answer written as far as the socket
/// takes it, and the write side shut.
pub(super) fn refuse_now(stream: &TcpStream, answer: &[u8]) {
    if stream.set_nonblocking(true).is_err() {
        return;
    }
    let mut buf = [0u8; 4096];
    let mut drained = 0;
    while drained < REFUSE_DRAIN {
        match (&*stream).read(&mut buf) {
            Ok(n) if n > 0 => drained += n,
            _ => break,
        }
    }
    let _ = (&*stream).write(answer);
    let _ = stream.shutdown(Shutdown::Write);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_triggered_stop_ends_a_wait_and_stays_readable() {
        let (a, _b) = UnixStream::pair().unwrap();
        let stop = Stop::new().unwrap();
        let far = Instant::now() + Duration::from_secs(60);
        let early = Instant::now() + Duration::from_millis(20);
        let err = wait(a.as_fd(), PollFlags::POLLIN, early, Some(&stop)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        stop.trigger();
        stop.trigger();
        let err = wait(a.as_fd(), PollFlags::POLLIN, far, Some(&stop)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionAborted);
        let mut fds = [PollFd::new(stop.fd(), PollFlags::POLLIN)];
        assert_eq!(poll(&mut fds, PollTimeout::ZERO).unwrap(), 1);
    }

    #[test]
    fn timeouts_round_up() {
        let now = Instant::now();
        let t = timeout_until(Some(now + Duration::from_micros(10)), now);
        assert_eq!(i32::from(t), 1);
        assert_eq!(i32::from(timeout_until(Some(now), now)), 0);
        assert_eq!(i32::from(timeout_until(None, now)), -1);
    }
}
