//! Request bodies: the pace every body must keep, the body a handler
//! gets ([`Body`]), and the stream it reads when it asked for one
//! ([`BodyReader`]).
//!
//! The pace: each successive quota of `body_min_rate` × `body_timeout`
//! bytes must arrive within `body_timeout` of the previous one (or of the
//! end of the head). A small body thus has an overall deadline, a large
//! one a minimum rate, and a client that stalls or trickles is cut off
//! within `body_timeout` whatever it sent before.

use std::io::{self, Read};
use std::net::TcpStream;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use nix::poll::PollFlags;

use super::chunked::Decoder;
use super::conn::{self, Stop};
use super::request::Framing;

/// The pace of one body.
#[derive(Debug, Clone)]
pub(super) struct Pace {
    window: Duration,
    quota: u64,
    start: Instant,
    got: u64,
}

impl Pace {
    pub(super) fn new(window: Duration, quota: u64, now: Instant) -> Pace {
        Pace {
            window,
            quota,
            start: now,
            got: 0,
        }
    }

    /// Counts `n` more bytes, arrived at `now`.
    pub(super) fn advance(&mut self, n: u64, now: Instant) {
        self.got += n;
        if self.got >= self.quota {
            self.start = now;
            self.got = 0;
        }
    }

    /// When the current quota is due.
    pub(super) fn deadline(&self) -> Instant {
        self.start + self.window
    }
}

/// Why a body could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BodyError {
    /// It is longer than the limit (the limit, in bytes).
    TooLarge(u64),
    /// The client did not keep the pace.
    TimedOut,
    /// The chunked coding was malformed.
    Malformed(String),
    /// The client closed before the end of the body.
    Truncated,
    /// The server is shutting down.
    Stopped,
}

impl BodyError {
    /// The [`BodyError`] inside an error returned by [`BodyReader`].
    pub(crate) fn of(err: &io::Error) -> Option<&BodyError> {
        err.get_ref().and_then(|e| e.downcast_ref::<BodyError>())
    }

    /// The status that answers it.
    pub(crate) fn status(&self) -> u16 {
        match self {
            BodyError::TooLarge(_) => 413,
            BodyError::TimedOut => 408,
            BodyError::Malformed(_) | BodyError::Truncated => 400,
            BodyError::Stopped => 503,
        }
    }

    fn kind(&self) -> io::ErrorKind {
        match self {
            BodyError::TooLarge(_) | BodyError::Malformed(_) => io::ErrorKind::InvalidData,
            BodyError::TimedOut => io::ErrorKind::TimedOut,
            BodyError::Truncated => io::ErrorKind::UnexpectedEof,
            BodyError::Stopped => io::ErrorKind::ConnectionAborted,
        }
    }
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyError::TooLarge(limit) => write!(f, "request body larger than {limit} bytes"),
            BodyError::TimedOut => f.write_str("request body too slow"),
            BodyError::Malformed(why) => f.write_str(why),
            BodyError::Truncated => f.write_str("request body ended early"),
            BodyError::Stopped => f.write_str("server shutting down"),
        }
    }
}

impl std::error::Error for BodyError {}

impl From<BodyError> for io::Error {
    fn from(err: BodyError) -> io::Error {
        io::Error::new(err.kind(), err)
    }
}

/// The body a handler gets: as its plan asked.
#[derive(Debug)]
pub(crate) enum Body<'a> {
    /// The whole body (`Plan::Buffer`).
    Bytes(Vec<u8>),
    /// The body still to read (`Plan::Stream`).
    Stream(BodyReader<'a>),
}

/// How much of the body is left, as framed.
#[derive(Debug)]
enum Left {
    Length(u64),
    Chunked(Decoder),
}

/// Size of the raw reads of a chunked body.
const RAW_READ: usize = 16 * 1024;

/// A request body read as a stream: chunked bodies decoded, at most
/// `limit` bytes, at the body pace; each read waits for the client at
/// most until the pace's deadline, and not past shutdown. Its errors
/// carry a [`BodyError`] (see [`BodyError::of`]). The `100 Continue` a
/// client may wait for is sent on the first read.
#[derive(Debug)]
pub(crate) struct BodyReader<'a> {
    stream: &'a TcpStream,
    stop: &'a Stop,
    raw: Vec<u8>,
    pos: usize,
    left: Left,
    limit: u64,
    received: u64,
    pace: Pace,
    send_continue: bool,
    write_timeout: Duration,
    failed: Option<BodyError>,
}

/// The parameters of a [`BodyReader`].
#[derive(Debug)]
pub(super) struct Stream {
    pub(super) framing: Framing,
    pub(super) limit: u64,
    pub(super) pace: Pace,
    pub(super) send_continue: bool,
    pub(super) write_timeout: Duration,
}

impl<'a> BodyReader<'a> {
    /// A reader of the body on `stream`, of which `raw` was read already.
    pub(super) fn new(
        stream: &'a TcpStream,
        stop: &'a Stop,
        raw: Vec<u8>,
        params: Stream,
    ) -> BodyReader<'a> {
        let left = match params.framing {
            Framing::Length(n) => Left::Length(n),
            Framing::Chunked => Left::Chunked(Decoder::new()),
        };
        BodyReader {
            stream,
            stop,
            raw,
            pos: 0,
            left,
            limit: params.limit,
            received: 0,
            pace: params.pace,
            send_continue: params.send_continue,
            write_timeout: params.write_timeout,
            failed: None,
        }
    }

    /// Body bytes read so far.
    pub(crate) fn received(&self) -> u64 {
        self.received
    }

    /// Reads raw bytes: first those read with the head, then the socket.
    fn read_raw(&mut self, out: &mut [u8]) -> Result<usize, BodyError> {
        if self.pos < self.raw.len() {
            let n = out.len().min(self.raw.len() - self.pos);
            out[..n].copy_from_slice(&self.raw[self.pos..self.pos + n]);
            self.pos += n;
            return Ok(n);
        }
        loop {
            match (&*self.stream).read(out) {
                Ok(0) => return Err(BodyError::Truncated),
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let waited = conn::wait(
                        self.stream.as_fd(),
                        PollFlags::POLLIN,
                        self.pace.deadline(),
                        Some(self.stop),
                    );
                    match waited {
                        Ok(()) => {}
                        Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                            return Err(BodyError::TimedOut)
                        }
                        Err(_) => return Err(BodyError::Stopped),
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Err(BodyError::Truncated),
            }
        }
    }

    fn read_body(&mut self, out: &mut [u8]) -> Result<usize, BodyError> {
        if self.send_continue {
            self.send_continue = false;
            let answer = b"HTTP/1.1 100 Continue\r\n\r\n";
            conn::write_all(self.stream, answer, self.write_timeout, Some(self.stop))
                .map_err(|_| BodyError::Truncated)?;
        }
        loop {
            let n = match &mut self.left {
                Left::Length(0) => return Ok(0),
                Left::Length(left) => {
                    let max = out.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                    let n = self.read_raw(&mut out[..max])?;
                    if let Left::Length(left) = &mut self.left {
                        *left -= n as u64;
                    }
                    n
                }
                Left::Chunked(d) if d.is_done() => return Ok(0),
                Left::Chunked(_) => {
                    if self.pos == self.raw.len() {
                        let mut raw = std::mem::take(&mut self.raw);
                        raw.resize(RAW_READ, 0);
                        self.pos = 0;
                        let got = self.read_raw(&mut raw);
                        raw.truncate(*got.as_ref().unwrap_or(&0));
                        self.raw = raw;
                        got?;
                    }
                    let Left::Chunked(d) = &mut self.left else {
                        unreachable!("the framing of a body never changes")
                    };
                    let p = d
                        .decode(&self.raw[self.pos..], out)
                        .map_err(BodyError::Malformed)?;
                    self.pos += p.consumed;
                    p.produced
                }
            };
            if n == 0 {
                continue;
            }
            self.received += n as u64;
            if self.received > self.limit {
                return Err(BodyError::TooLarge(self.limit));
            }
            self.pace.advance(n as u64, Instant::now());
            return Ok(n);
        }
    }
}

impl Read for BodyReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        if let Some(err) = &self.failed {
            return Err(err.clone().into());
        }
        self.read_body(out).map_err(|err| {
            self.failed = Some(err.clone());
            err.into()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pace_moves_on_with_each_quota() {
        let t0 = Instant::now();
        let window = Duration::from_secs(10);
        let mut pace = Pace::new(window, 100, t0);
        assert_eq!(pace.deadline(), t0 + window);
        pace.advance(99, t0 + Duration::from_secs(1));
        assert_eq!(pace.deadline(), t0 + window);
        let t1 = t0 + Duration::from_secs(2);
        pace.advance(1, t1);
        assert_eq!(pace.deadline(), t1 + window);
    }

    #[test]
    fn body_errors_travel_inside_io_errors() {
        let err: io::Error = BodyError::TooLarge(5).into();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert_eq!(BodyError::of(&err), Some(&BodyError::TooLarge(5)));
        assert_eq!(BodyError::of(&err).map(BodyError::status), Some(413));
        assert_eq!(err.to_string(), "request body larger than 5 bytes");
        assert_eq!(BodyError::of(&io::Error::other("x")), None);
    }
}
