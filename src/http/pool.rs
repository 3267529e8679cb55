//! The worker pools: a bounded queue per pool, fixed worker threads that
//! take requests from it, run the handler, and write its answer. An
//! answer given as bytes that the socket does not take at once goes to
//! the reader to finish, so a client that reads slowly holds no worker;
//! a streamed answer holds its worker until it ends.
//!
//! A request is queued only when an idle worker or a free queue slot is
//! there for it; otherwise the reader answers 503. Shutdown closes the
//! queues: what is still queued is answered 503, the requests in a
//! handler finish.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::net::Shutdown;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Instant;

use super::body::{Body, BodyReader, Pace, Stream};
use super::conn::{self, Conn};
use super::request::{Method, Request};
use super::response::{self, Content, Delimit, StreamWriter};
use super::server::{Handoff, Shared};
use super::Pool;

/// A request ready for a handler.
#[derive(Debug)]
pub(super) struct Job {
    pub(super) conn: Conn,
    pub(super) request: Request,
    pub(super) body: JobBody,
}

/// The body of a [`Job`].
#[derive(Debug)]
pub(super) enum JobBody {
    /// Read whole by the reader.
    Bytes(Vec<u8>),
    /// To be read by the handler: `raw` came in with the head.
    Stream { raw: Vec<u8>, limit: u64 },
}

#[derive(Debug, Default)]
struct State {
    jobs: VecDeque<Job>,
    idle: usize,
    closed: bool,
}

/// The queue of one pool.
#[derive(Debug)]
pub(super) struct Queue {
    state: Mutex<State>,
    ready: Condvar,
    max: usize,
}

impl Queue {
    /// A queue holding at most `max` requests beyond its idle workers.
    pub(super) fn new(max: usize) -> Queue {
        Queue {
            state: Mutex::new(State::default()),
            ready: Condvar::new(),
            max,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `job`, or gives it back when the pool and its queue are full
    /// (or closed).
    pub(super) fn submit(&self, job: Job) -> Result<(), Box<Job>> {
        let mut state = self.lock();
        if state.closed || state.jobs.len() >= state.idle + self.max {
            return Err(Box::new(job));
        }
        state.jobs.push_back(job);
        drop(state);
        self.ready.notify_one();
        Ok(())
    }

    /// The next job, waiting for one; `None` once the queue is closed.
    fn next(&self) -> Option<Job> {
        let mut state = self.lock();
        loop {
            if state.closed {
                return None;
            }
            if let Some(job) = state.jobs.pop_front() {
                return Some(job);
            }
            state.idle += 1;
            state = self.ready.wait(state).unwrap_or_else(|e| e.into_inner());
            state.idle -= 1;
        }
    }

    /// Closes the queue and returns the jobs still in it.
    pub(super) fn close(&self) -> Vec<Job> {
        let mut state = self.lock();
        state.closed = true;
        let jobs = state.jobs.drain(..).collect();
        drop(state);
        self.ready.notify_all();
        jobs
    }
}

/// The body of a worker thread of `pool`.
pub(super) fn work(shared: &Shared, pool: Pool) {
    let queue = shared.queue(pool);
    while let Some(job) = queue.next() {
        run(shared, job);
    }
}

/// Runs the handler of `job` and writes its answer.
fn run(shared: &Shared, job: Job) {
    let Job {
        conn,
        request,
        body,
    } = job;
    let config = &shared.config;
    let head_only = *request.method() == Method::Head;
    let http10 = request.is_http10();
    let streamed = matches!(body, JobBody::Stream { .. });
    let body = match body {
        JobBody::Bytes(bytes) => Body::Bytes(bytes),
        JobBody::Stream { raw, limit } => {
            let params = Stream {
                framing: request.framing(),
                limit,
                pace: Pace::new(config.body_timeout, config.body_quota(), Instant::now()),
                send_continue: request.expects_continue(),
                write_timeout: config.write_timeout,
            };
            Body::Stream(BodyReader::new(&conn.stream, &shared.stop, raw, params))
        }
    };
    let service = &shared.service;
    let response = catch_unwind(AssertUnwindSafe(|| service.handle(request, body)))
        .unwrap_or_else(|_| service.refusal(500, "the request handler failed"));
    let (status, headers, content) = response.into_parts();
    match content {
        Content::Bytes(bytes) => {
            let mut out = response::head(status, &headers, Delimit::Length(bytes.len() as u64));
            if !head_only {
                out.extend_from_slice(&bytes);
            }
            shared.stats.handled.inc();
            answer_bytes(shared, conn, out, streamed);
        }
        Content::Stream(write) => {
            let delimit = if http10 {
                Delimit::Close
            } else {
                Delimit::Chunked
            };
            let head = response::head(status, &headers, delimit);
            let _ =
                conn::write_all(&conn.stream, &head, config.write_timeout, None).and_then(|()| {
                    if head_only {
                        return Ok(());
                    }
                    let mut writer = StreamWriter::new(
                        &conn.stream,
                        &shared.stop,
                        delimit == Delimit::Chunked,
                        config.write_timeout,
                    );
                    write(&mut writer).and_then(|()| writer.finish())
                });
            shared.stats.handled.inc();
            finish(shared, conn, streamed);
        }
    }
}

/// Writes an answer given as bytes: what the socket does not take at once
/// (a client that reads slowly) is left to the reader to write, so that
/// the worker is free at once.
fn answer_bytes(shared: &Shared, conn: Conn, out: Vec<u8>, streamed: bool) {
    let mut pos = 0;
    while pos < out.len() {
        match (&conn.stream).write(&out[pos..]) {
            Ok(0) => return,
            Ok(n) => pos += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                match shared.hand(Handoff::Write { conn, out, pos }) {
                    Ok(()) => return,
                    // The reader is gone (shutdown): write the rest here.
                    Err(Handoff::Write { conn, out, pos }) => {
                        let timeout = shared.config.write_timeout;
                        let _ = conn::write_all(&conn.stream, &out[pos..], timeout, None);
                        finish(shared, conn, streamed);
                        return;
                    }
                    Err(_) => return,
                }
            }
            Err(_) => return,
        }
    }
    finish(shared, conn, streamed);
}

/// Ends a connection after its answer: one whose body the handler read
/// itself may have some of it left unread, so it lingers in the reader
/// rather than close with a reset.
fn finish(shared: &Shared, conn: Conn, streamed: bool) {
    if conn.stream.shutdown(Shutdown::Write).is_err() || !streamed {
        return;
    }
    // When the reader cannot take it (shutdown), it closes here.
    let _ = shared.hand(Handoff::Linger(conn));
}

/// Answers 503 to jobs a closed queue gave back.
pub(super) fn refuse_all(shared: &Shared, jobs: Vec<Job>) {
    for job in jobs {
        let answer = shared.refusal(503, "server shutting down", false);
        conn::refuse_now(&job.conn.stream, &answer);
    }
}
