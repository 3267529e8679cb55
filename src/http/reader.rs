//! The reader (`http-read`): one poll(2) loop over every connection that
//! is not in a handler.
//!
//! A connection goes through these phases, each with its deadline:
//!
//! - head: from accept until the blank line, by `head_timeout`; then the
//!   head is parsed (or refused) and the service's plan decides;
//! - body: a buffered body (`Plan::Buffer`) read as it arrives, at the
//!   body pace; a declared length over the limit is answered 413 without
//!   reading any of it;
//! - writing: a refusal (4xx, 503), or the rest of a handler's answer
//!   that the socket did not take at once, written as the socket takes
//!   it; each write must make progress within the write timeout;
//! - linger: after an answer that may have left a body unread, what
//!   arrives is read away (at most [`LINGER_MAX`] bytes, for at most
//!   `linger`) so that the close is not a reset that destroys the answer.
//!
//! A request whose head (and buffered body) is in goes to its pool; a
//! full pool means 503. Past its deadline, a connection in the head or
//! body phase is answered 408 and closed. A new connection over
//! `max_connections` makes room by dropping a lingering one, else the
//! oldest still sending its request; when every connection is in a
//! handler, the newcomer is answered 503. The loop never blocks on a
//! socket, so the cost of a connection that sends nothing is a
//! descriptor and a small buffer.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::fd::AsFd;
use std::sync::atomic::Ordering;
use std::time::Instant;

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags};

use super::body::Pace;
use super::chunked::Decoder;
use super::conn::{self, Conn};
use super::pool::{Job, JobBody};
use super::request::{head_end, parse_head, Framing, Method, Request};
use super::server::{Handoff, Shared};
use super::{Plan, Pool};

/// Size of each read from a socket.
const READ_CHUNK: usize = 16 * 1024;
/// The most bytes read away from a lingering connection.
const LINGER_MAX: usize = 256 * 1024;

/// How much of a buffered body is still to come.
#[derive(Debug)]
enum Left {
    Length(u64),
    Chunked(Decoder),
}

#[derive(Debug)]
enum Phase {
    Head {
        buf: Vec<u8>,
        searched: usize,
    },
    Body {
        request: Box<Request>,
        pool: Pool,
        limit: usize,
        body: Vec<u8>,
        left: Left,
        pace: Pace,
    },
    Writing {
        out: Vec<u8>,
        pos: usize,
    },
    Linger {
        discarded: usize,
    },
}

#[derive(Debug)]
struct Entry {
    conn: Conn,
    phase: Phase,
    deadline: Instant,
}

/// What a connection does next.
enum Next {
    /// Wait for the socket.
    Keep,
    /// Close it.
    Close,
    /// Go on in this phase, with this deadline.
    Phase(Phase, Instant),
    /// Hand the request to a worker.
    Dispatch(Pool, Request, JobBody),
}

struct Reader<'a> {
    shared: &'a Shared,
    table: Vec<Entry>,
    scratch: Vec<u8>,
}

/// The body of the reader thread; returns once the server stops, closing
/// every connection it holds.
pub(super) fn run(shared: &Shared) {
    let mut reader = Reader {
        shared,
        table: Vec::new(),
        scratch: vec![0; READ_CHUNK],
    };
    while !shared.stop.is_set() {
        reader.take_inbox(Instant::now());
        reader.expire(Instant::now());
        let ready = reader.wait();
        let now = Instant::now();
        for &i in ready.iter().rev() {
            reader.process(i, now);
        }
    }
}

impl Reader<'_> {
    /// Takes the connections handed over by the acceptor and the workers.
    fn take_inbox(&mut self, now: Instant) {
        let handoffs =
            std::mem::take(&mut *self.shared.inbox.lock().unwrap_or_else(|e| e.into_inner()));
        for handoff in handoffs {
            match handoff {
                Handoff::New(conn) => {
                    self.shared.pending.fetch_sub(1, Ordering::SeqCst);
                    self.admit(conn, now);
                }
                Handoff::Linger(conn) => {
                    if !self.shared.config.linger.is_zero() {
                        self.table.push(Entry {
                            conn,
                            phase: Phase::Linger { discarded: 0 },
                            deadline: now + self.shared.config.linger,
                        });
                    }
                }
                Handoff::Write { conn, out, pos } => self.table.push(Entry {
                    conn,
                    phase: Phase::Writing { out, pos },
                    deadline: now + self.shared.config.write_timeout,
                }),
            }
        }
    }

    /// Takes a new connection in, making room for it when over the limit
    /// (the connections still in the inbox do not count yet: they are
    /// newer, and each will make room for itself).
    fn admit(&mut self, conn: Conn, now: Instant) {
        let shared = self.shared;
        let active = shared.active.load(Ordering::SeqCst);
        let held = active.saturating_sub(shared.pending.load(Ordering::SeqCst));
        if held > shared.config.max_connections {
            if let Some(victim) = self.victim() {
                self.table.swap_remove(victim);
                shared.stats.evicted.inc();
            } else {
                shared.stats.busy.inc();
                let answer = shared.refusal(503, "server busy: too many connections", false);
                conn::refuse_now(&conn.stream, &answer);
                return;
            }
        }
        let deadline = conn.admitted + shared.config.head_timeout;
        self.table.push(Entry {
            conn,
            phase: Phase::Head {
                buf: Vec::new(),
                searched: 0,
            },
            deadline,
        });
        // The head often arrives with the connection.
        self.process(self.table.len() - 1, now);
    }

    /// The connection to drop for a newcomer: a lingering one, else the
    /// oldest still sending its request, else one being refused.
    fn victim(&self) -> Option<usize> {
        let rank = |e: &Entry| match e.phase {
            Phase::Linger { .. } => 0,
            Phase::Head { .. } | Phase::Body { .. } => 1,
            Phase::Writing { .. } => 2,
        };
        self.table
            .iter()
            .enumerate()
            .min_by_key(|(_, e)| (rank(e), e.conn.admitted))
            .map(|(i, _)| i)
    }

    /// Drops the connections past their deadline (408 to those that were
    /// sending a request).
    fn expire(&mut self, now: Instant) {
        for i in (0..self.table.len()).rev() {
            if now < self.table[i].deadline {
                continue;
            }
            let entry = self.table.swap_remove(i);
            if let Phase::Head { .. } | Phase::Body { .. } = entry.phase {
                self.shared.stats.timed_out.inc();
                let answer = self
                    .shared
                    .refusal(408, "request not received in time", false);
                conn::refuse_now(&entry.conn.stream, &answer);
            }
        }
    }

    /// Waits for the sockets, the wake-up, or the next deadline; returns
    /// the indices of the ready connections, ascending.
    fn wait(&mut self) -> Vec<usize> {
        let config = &self.shared.config;
        let held: usize = self
            .table
            .iter()
            .map(|e| match &e.phase {
                Phase::Body { body, .. } => body.len(),
                _ => 0,
            })
            .sum();
        let mut fds = Vec::with_capacity(self.table.len() + 1);
        fds.push(PollFd::new(self.shared.waker.fd(), PollFlags::POLLIN));
        for entry in &self.table {
            let events = match entry.phase {
                Phase::Head { .. } | Phase::Linger { .. } => PollFlags::POLLIN,
                Phase::Body { .. } if held < config.max_buffered => PollFlags::POLLIN,
                Phase::Body { .. } => PollFlags::empty(),
                Phase::Writing { .. } => PollFlags::POLLOUT,
            };
            fds.push(PollFd::new(entry.conn.stream.as_fd(), events));
        }
        let next = self.table.iter().map(|e| e.deadline).min();
        let timeout = conn::timeout_until(next, Instant::now());
        match poll(&mut fds, timeout) {
            Ok(_) => {}
            Err(Errno::EINTR) => return Vec::new(),
            Err(e) => {
                (config.warn)(&format!("http reader: unable to poll: {e}"));
                return Vec::new();
            }
        }
        if fds[0].any().unwrap_or(true) {
            self.shared.waker.drain();
        }
        fds.iter()
            .enumerate()
            .skip(1)
            .filter(|(_, fd)| fd.any().unwrap_or(true))
            .map(|(i, _)| i - 1)
            .collect()
    }

    /// Moves connection `i` on as far as its socket allows.
    fn process(&mut self, i: usize, now: Instant) {
        loop {
            match self.advance(i, now) {
                Next::Keep => return,
                Next::Close => {
                    self.table.swap_remove(i);
                    return;
                }
                Next::Phase(phase, deadline) => {
                    self.table[i].phase = phase;
                    self.table[i].deadline = deadline;
                }
                Next::Dispatch(pool, request, body) => {
                    let entry = self.table.swap_remove(i);
                    self.dispatch(entry.conn, pool, request, body, now);
                    return;
                }
            }
        }
    }

    fn advance(&mut self, i: usize, now: Instant) -> Next {
        let shared = self.shared;
        let entry = &mut self.table[i];
        let scratch = &mut self.scratch;
        match &mut entry.phase {
            Phase::Head { buf, searched } => {
                read_head(shared, &entry.conn, buf, searched, scratch, now)
            }
            Phase::Body {
                body,
                left,
                limit,
                pace,
                ..
            } => loop {
                match (&entry.conn.stream).read(scratch) {
                    Ok(0) => return Next::Close,
                    Ok(n) => {
                        pace.advance(n as u64, now);
                        entry.deadline = pace.deadline();
                        match feed(body, left, *limit, &scratch[..n]) {
                            Err((status, reason)) => {
                                return refuse(shared, status, &reason, false, now)
                            }
                            Ok(false) => {}
                            Ok(true) => {
                                let taken = std::mem::replace(
                                    &mut entry.phase,
                                    Phase::Linger { discarded: 0 },
                                );
                                let Phase::Body {
                                    request,
                                    pool,
                                    body,
                                    ..
                                } = taken
                                else {
                                    unreachable!("the phase was Body just above");
                                };
                                return Next::Dispatch(pool, *request, JobBody::Bytes(body));
                            }
                        }
                    }
                    Err(e) => return wait_or_close(&e),
                }
            },
            Phase::Writing { out, pos } => loop {
                if *pos == out.len() {
                    if entry.conn.stream.shutdown(Shutdown::Write).is_err()
                        || shared.config.linger.is_zero()
                    {
                        return Next::Close;
                    }
                    return Next::Phase(Phase::Linger { discarded: 0 }, now + shared.config.linger);
                }
                match (&entry.conn.stream).write(&out[*pos..]) {
                    Ok(0) => return Next::Close,
                    Ok(n) => {
                        *pos += n;
                        entry.deadline = now + shared.config.write_timeout;
                    }
                    Err(e) => return wait_or_close(&e),
                }
            },
            Phase::Linger { discarded } => loop {
                match (&entry.conn.stream).read(scratch) {
                    Ok(0) => return Next::Close,
                    Ok(n) => {
                        *discarded += n;
                        if *discarded > LINGER_MAX {
                            return Next::Close;
                        }
                    }
                    Err(e) => return wait_or_close(&e),
                }
            },
        }
    }

    /// Hands a request to its pool, or answers 503 when the pool is full.
    fn dispatch(&mut self, conn: Conn, pool: Pool, request: Request, body: JobBody, now: Instant) {
        let head_only = *request.method() == Method::Head;
        let job = Job {
            conn,
            request,
            body,
        };
        if let Err(job) = self.shared.queue(pool).submit(job) {
            self.shared.stats.busy.inc();
            let reason = format!("server busy: too many {} requests", pool.name());
            let out = self.shared.refusal(503, &reason, head_only);
            self.table.push(Entry {
                conn: job.conn,
                phase: Phase::Writing { out, pos: 0 },
                deadline: now + self.shared.config.write_timeout,
            });
            self.process(self.table.len() - 1, now);
        }
    }
}

/// Keep waiting on a read or write that would block; close on anything
/// else (a reset, an error).
fn wait_or_close(err: &io::Error) -> Next {
    match err.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Next::Keep,
        _ => Next::Close,
    }
}

/// The writing phase of a refusal.
fn refuse(shared: &Shared, status: u16, reason: &str, head_only: bool, now: Instant) -> Next {
    if status == 413 {
        shared.stats.too_large.inc();
    }
    let out = shared.refusal(status, reason, head_only);
    Next::Phase(
        Phase::Writing { out, pos: 0 },
        now + shared.config.write_timeout,
    )
}

/// Reads a head until it is complete, then parses and plans it.
fn read_head(
    shared: &Shared,
    conn: &Conn,
    buf: &mut Vec<u8>,
    searched: &mut usize,
    scratch: &mut [u8],
    now: Instant,
) -> Next {
    let max_head = shared.config.max_head;
    loop {
        let end = head_end(buf, *searched);
        if let Some(end) = end.filter(|&end| end <= max_head) {
            return plan(shared, conn, std::mem::take(buf), end, now);
        }
        *searched = buf.len();
        if end.is_some() || buf.len() > max_head {
            shared.stats.bad_heads.inc();
            let reason = format!("request head larger than {max_head} bytes");
            return refuse(shared, 431, &reason, false, now);
        }
        match (&conn.stream).read(scratch) {
            Ok(0) => return Next::Close,
            Ok(n) => buf.extend_from_slice(&scratch[..n]),
            Err(e) => return wait_or_close(&e),
        }
    }
}

/// Parses the head in `buf[..end]` and asks the service how to serve it;
/// `buf[end..]` is the start of the body.
fn plan(shared: &Shared, conn: &Conn, mut buf: Vec<u8>, end: usize, now: Instant) -> Next {
    let rest = buf.split_off(end);
    let request = match parse_head(&buf, shared.config.max_headers, conn.peer) {
        Ok(request) => request,
        Err(e) => {
            shared.stats.bad_heads.inc();
            return refuse(shared, e.status, &e.reason, false, now);
        }
    };
    let head_only = *request.method() == Method::Head;
    let too_large = |limit: u64| {
        let reason = format!("request body larger than {limit} bytes");
        refuse(shared, 413, &reason, head_only, now)
    };
    match shared.service.plan(&request) {
        Plan::Reject { status, reason } => {
            shared.stats.rejected.inc();
            refuse(shared, status, &reason, head_only, now)
        }
        Plan::Stream { pool, limit } => match request.framing() {
            Framing::Length(n) if n > limit => too_large(limit),
            _ => Next::Dispatch(pool, request, JobBody::Stream { raw: rest, limit }),
        },
        Plan::Buffer { pool, limit } => {
            let mut left = match request.framing() {
                Framing::Length(n) if n > limit as u64 => return too_large(limit as u64),
                Framing::Length(n) => Left::Length(n),
                Framing::Chunked => Left::Chunked(Decoder::new()),
            };
            if request.expects_continue() {
                let _ = (&conn.stream).write(b"HTTP/1.1 100 Continue\r\n\r\n");
            }
            let mut pace = Pace::new(shared.config.body_timeout, shared.config.body_quota(), now);
            pace.advance(rest.len() as u64, now);
            let mut body = Vec::new();
            match feed(&mut body, &mut left, limit, &rest) {
                Err((status, reason)) => refuse(shared, status, &reason, head_only, now),
                Ok(true) => Next::Dispatch(pool, request, JobBody::Bytes(body)),
                Ok(false) => {
                    let deadline = pace.deadline();
                    let phase = Phase::Body {
                        request: Box::new(request),
                        pool,
                        limit,
                        body,
                        left,
                        pace,
                    };
                    Next::Phase(phase, deadline)
                }
            }
        }
    }
}

/// Adds `input` to a buffered body; true once the body is complete. A
/// body over `limit` is a 413, a malformed chunked body a 400.
fn feed(
    body: &mut Vec<u8>,
    left: &mut Left,
    limit: usize,
    input: &[u8],
) -> Result<bool, (u16, String)> {
    match left {
        Left::Length(n) => {
            let take = input.len().min(usize::try_from(*n).unwrap_or(usize::MAX));
            body.extend_from_slice(&input[..take]);
            *n -= take as u64;
            Ok(*n == 0)
        }
        Left::Chunked(decoder) => {
            let mut out = [0u8; 8192];
            let mut input = input;
            while !input.is_empty() && !decoder.is_done() {
                let p = decoder.decode(input, &mut out).map_err(|e| (400, e))?;
                body.extend_from_slice(&out[..p.produced]);
                input = &input[p.consumed..];
                if body.len() > limit {
                    return Err((413, format!("request body larger than {limit} bytes")));
                }
            }
            Ok(decoder.is_done())
        }
    }
}
