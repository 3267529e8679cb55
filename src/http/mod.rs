//! A small HTTP/1.1 server on std sockets and poll(2), hardened against
//! clients that hold connections, stall, or declare huge bodies. It knows
//! nothing of its callers: a [`Service`] decides, from a request's head,
//! how it is served ([`Plan`]) and then handles it.
//!
//! Threads (all started by [`Bound::start`], all joined by
//! [`Server::shutdown`]):
//!
//! - `http-accept`: accepts connections and hands them to the reader. It
//!   keeps a reserve descriptor (an open `/dev/null`): when `accept` fails
//!   for want of descriptors, it closes the reserve, accepts one
//!   connection, answers it 503, closes it and reopens the reserve, so
//!   that the listen queue drains and the server answers again as soon
//!   as descriptors are free. Other persistent errors back off (10 ms,
//!   doubling up to 1 s), never busy-loop.
//! - `http-read`: one poll(2) loop over every connection that is sending
//!   its head or a buffered body, being refused, receiving the part of an
//!   answer its socket did not take at once, or lingering after an
//!   answer. Such connections cost a descriptor and a buffer, never a
//!   thread; each has a deadline ([`Config::head_timeout`], the body pace
//!   of [`Config::body_timeout`] and [`Config::body_min_rate`]) after
//!   which it is answered 408 and closed. Over
//!   [`Config::max_connections`] the oldest connection still in this
//!   loop is dropped for a newcomer; when every connection is in a
//!   handler, the newcomer is answered 503 at once.
//! - `http-quick-N`, `http-slow-N`, `http-stream-N`: three bounded worker
//!   pools ([`Pool`]), each with a bounded queue; a request whose pool and
//!   queue are full is answered 503. Slow handlers never hold a quick
//!   worker, and long-lived streamed answers hold only a stream worker.
//!
//! Every answer carries `Connection: close`: one request per connection.
//! A declared `Content-Length` over the plan's limit is answered 413 as
//! soon as the head is in, without reading the body; after an answer
//! that leaves a body unread, the connection lingers in the reader for at
//! most [`Config::linger`] (discarding what arrives) so that the client
//! reads the answer rather than a reset.

mod accept;
mod body;
mod chunked;
mod config;
mod conn;
pub(crate) mod demo;
mod pool;
mod reader;
mod request;
mod response;
mod server;

pub(crate) use body::{Body, BodyError, BodyReader};
pub(crate) use config::{Config, PoolSize};
pub(crate) use request::{percent_decode, Method, Request};
pub(crate) use response::{Response, StreamWriter};
pub(crate) use server::{bind, Bound, Server, Stats};

/// What the server asks of its caller.
///
/// [`Service::plan`] runs on the reader thread for every request whose
/// head parsed: it must be quick and must never block (no locks held for
/// long, no I/O). [`Service::handle`] runs on a worker of the pool the
/// plan chose.
pub(crate) trait Service: Send + Sync + 'static {
    /// Decides, from the head alone, how `request` is served.
    fn plan(&self, request: &Request) -> Plan;

    /// Handles `request`, whose body is as the plan asked, and answers.
    fn handle(&self, request: Request, body: Body<'_>) -> Response;

    /// The answer to a request the server refuses by itself (400, 408,
    /// 413, 431, 503, ...) or that a plan rejects: `reason` says why. It
    /// is written from the reader thread, so its body must be bytes (a
    /// streamed body is dropped). The default is the reason as text.
    fn refusal(&self, status: u16, reason: &str) -> Response {
        Response::text(status, format!("{reason}\n"))
    }
}

/// How one request is served, chosen by [`Service::plan`].
#[derive(Debug)]
pub(crate) enum Plan {
    /// Read the whole body into memory (at most `limit` bytes, else 413),
    /// in the reader thread, then run the handler on `pool` with
    /// [`Body::Bytes`].
    Buffer {
        /// The pool that runs the handler.
        pool: Pool,
        /// The largest body accepted.
        limit: usize,
    },
    /// Run the handler on `pool` at once with [`Body::Stream`]: it reads
    /// the body itself, at most `limit` bytes, at the body pace.
    Stream {
        /// The pool that runs the handler.
        pool: Pool,
        /// The largest body accepted.
        limit: u64,
    },
    /// Answer `status` at once (built by [`Service::refusal`] from
    /// `reason`), without reading the body or running a handler.
    Reject {
        /// The status of the answer.
        status: u16,
        /// Why, for [`Service::refusal`].
        reason: String,
    },
}

/// The worker pools a handler may run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Pool {
    /// Short handlers: reads, health, metrics.
    Quick,
    /// Handlers that may take seconds: starts, stops, deploys, uploads.
    Slow,
    /// Long-lived streamed answers: log and event follows.
    Stream,
}

impl Pool {
    /// Every pool, in the order of their threads' names.
    pub(crate) const ALL: [Pool; 3] = [Pool::Quick, Pool::Slow, Pool::Stream];

    /// The pool's name, as in its threads' names (`http-NAME-N`).
    pub(crate) fn name(self) -> &'static str {
        match self {
            Pool::Quick => "quick",
            Pool::Slow => "slow",
            Pool::Stream => "stream",
        }
    }
}
