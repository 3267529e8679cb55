//! The server's lifecycle: bind, start the threads, count, shut down.
//!
//! [`bind`] only listens, so that a program can publish the address
//! before the first request is answered (connections wait in the listen
//! queue); [`Bound::start`] starts every thread; [`Server::shutdown`]
//! stops accepting, closes the connections that are not in a handler,
//! answers 503 to queued requests, ends streamed answers, lets running
//! handlers finish within a grace period and joins every thread.

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use super::conn::{Conn, Stop, Waker};
use super::pool::{self, Queue};
use super::{accept, reader, Config, Pool, Service};
use crate::error::{Error, Result};

/// Connections the accept thread may hand to the reader before it sees
/// them; beyond, the accept thread answers 503 itself.
const INBOX_MAX: usize = 1024;

/// What the server has done since it started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Stats {
    /// Connections held now.
    pub(crate) active: usize,
    /// Connections accepted.
    pub(crate) accepted: u64,
    /// Requests whose handler ran and whose answer was written (or
    /// failed to be).
    pub(crate) handled: u64,
    /// Requests or connections answered 503: over the connection limit
    /// with none to drop, pool and queue full, or no descriptor left.
    pub(crate) busy: u64,
    /// Times `accept` failed for want of descriptors.
    pub(crate) exhausted: u64,
    /// Connections dropped, still sending, to make room for a newcomer.
    pub(crate) evicted: u64,
    /// Connections answered 408: head or body too slow.
    pub(crate) timed_out: u64,
    /// Requests answered 413 by the server (declared or chunked body over
    /// the plan's limit).
    pub(crate) too_large: u64,
    /// Heads refused as malformed or over the limits.
    pub(crate) bad_heads: u64,
    /// Requests a plan rejected.
    pub(crate) rejected: u64,
}

/// A counter of [`Stats`].
#[derive(Debug, Default)]
pub(super) struct Counter(AtomicU64);

impl Counter {
    pub(super) fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// The counters behind [`Stats`].
#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) accepted: Counter,
    pub(super) handled: Counter,
    pub(super) busy: Counter,
    pub(super) exhausted: Counter,
    pub(super) evicted: Counter,
    pub(super) timed_out: Counter,
    pub(super) too_large: Counter,
    pub(super) bad_heads: Counter,
    pub(super) rejected: Counter,
}

/// What the accept thread and the workers hand to the reader.
#[derive(Debug)]
pub(super) enum Handoff {
    /// A connection just accepted.
    New(Conn),
    /// A connection answered, write side shut, to close after lingering.
    Linger(Conn),
    /// A connection whose answer is written from `out[pos..]` on, then
    /// lingers.
    Write {
        conn: Conn,
        out: Vec<u8>,
        pos: usize,
    },
}

/// The state every thread of the server shares.
pub(super) struct Shared {
    pub(super) config: Config,
    pub(super) service: Arc<dyn Service>,
    pub(super) stop: Stop,
    pub(super) active: Arc<AtomicUsize>,
    /// New connections in the inbox (counted in `active` already).
    pub(super) pending: AtomicUsize,
    pub(super) stats: Counters,
    pub(super) inbox: Mutex<Vec<Handoff>>,
    pub(super) waker: Waker,
    queues: [Queue; 3],
}

impl Shared {
    /// The queue of `pool`.
    pub(super) fn queue(&self, pool: Pool) -> &Queue {
        &self.queues[pool as usize]
    }

    /// Hands `handoff` to the reader; gives it back when the inbox is full
    /// or the server is stopping.
    pub(super) fn hand(&self, handoff: Handoff) -> std::result::Result<(), Handoff> {
        if self.stop.is_set() {
            return Err(handoff);
        }
        let mut inbox = self.inbox.lock().unwrap_or_else(|e| e.into_inner());
        if inbox.len() >= INBOX_MAX {
            return Err(handoff);
        }
        if let Handoff::New(_) = handoff {
            self.pending.fetch_add(1, Ordering::SeqCst);
        }
        inbox.push(handoff);
        drop(inbox);
        self.waker.wake();
        Ok(())
    }

    /// The bytes of the service's refusal with `status`.
    pub(super) fn refusal(&self, status: u16, reason: &str, head_only: bool) -> Vec<u8> {
        self.service.refusal(status, reason).to_bytes(head_only)
    }
}

/// A listening socket, not yet served.
#[derive(Debug)]
pub(crate) struct Bound {
    listener: TcpListener,
    addr: SocketAddr,
    config: Config,
}

/// Listens on `config.listen`.
///
/// # Errors
///
/// `Error::Invalid` for a configuration the server cannot run with
/// (`Config::check`); `Error::Http` naming the address when it cannot be
/// bound.
pub(crate) fn bind(config: Config) -> Result<Bound> {
    config.check().map_err(Error::Invalid)?;
    let unable =
        |e: std::io::Error| Error::Http(format!("unable to listen on {}: {e}", config.listen));
    let listener = TcpListener::bind(config.listen).map_err(unable)?;
    let addr = listener.local_addr().map_err(unable)?;
    listener.set_nonblocking(true).map_err(unable)?;
    Ok(Bound {
        listener,
        addr,
        config,
    })
}

impl Bound {
    /// The address it listens on (the real port when bound to port 0).
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Starts serving with `service`.
    ///
    /// # Errors
    ///
    /// `Error::Io` when a thread, the reserve descriptor or a wake-up
    /// socket cannot be created (the threads already started are ended).
    pub(crate) fn start(self, service: Arc<dyn Service>) -> Result<Server> {
        let io = |what: &str, e| Error::io("create", format!("http {what}"), e);
        let config = self.config;
        let queues = Pool::ALL.map(|pool| Queue::new(config.pool(pool).queue));
        let shared = Arc::new(Shared {
            stop: Stop::new().map_err(|e| io("stop signal", e))?,
            waker: Waker::new().map_err(|e| io("reader wake-up", e))?,
            active: Arc::new(AtomicUsize::new(0)),
            pending: AtomicUsize::new(0),
            stats: Counters::default(),
            inbox: Mutex::new(Vec::new()),
            queues,
            service,
            config,
        });
        let mut server = Server {
            addr: self.addr,
            shared: Arc::clone(&shared),
            threads: Vec::new(),
        };
        let acceptor = accept::Acceptor::new(self.listener).map_err(|e| io("reserve", e))?;
        let mut spawn = |name: String, body: Box<dyn FnOnce() + Send>| {
            thread::Builder::new()
                .name(name.clone())
                .stack_size(shared.config.stack_size)
                .spawn(body)
                .map(|handle| server.threads.push((name.clone(), handle)))
                .map_err(|e| Error::io("start thread", name, e))
        };
        let mut started = Ok(());
        for pool in Pool::ALL {
            for n in 0..shared.config.pool(pool).threads {
                let sh = Arc::clone(&shared);
                let name = format!("http-{}-{n}", pool.name());
                started =
                    started.and_then(|()| spawn(name, Box::new(move || pool::work(&sh, pool))));
            }
        }
        let sh = Arc::clone(&shared);
        started =
            started.and_then(|()| spawn("http-read".into(), Box::new(move || reader::run(&sh))));
        let sh = Arc::clone(&shared);
        started =
            started.and_then(|()| spawn("http-accept".into(), Box::new(move || acceptor.run(&sh))));
        match started {
            Ok(()) => Ok(server),
            Err(e) => {
                server.stop_threads(Duration::ZERO);
                Err(e)
            }
        }
    }
}

/// A running server. Dropping it shuts it down with no grace period.
pub(crate) struct Server {
    addr: SocketAddr,
    shared: Arc<Shared>,
    threads: Vec<(String, JoinHandle<()>)>,
}

impl Server {
    /// The address it listens on.
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// What it has done so far.
    pub(crate) fn stats(&self) -> Stats {
        let c = &self.shared.stats;
        Stats {
            active: self.shared.active.load(Ordering::SeqCst),
            accepted: c.accepted.get(),
            handled: c.handled.get(),
            busy: c.busy.get(),
            exhausted: c.exhausted.get(),
            evicted: c.evicted.get(),
            timed_out: c.timed_out.get(),
            too_large: c.too_large.get(),
            bad_heads: c.bad_heads.get(),
            rejected: c.rejected.get(),
        }
    }

    /// Stops the server: no new connection is accepted (the listener is
    /// closed), connections not in a handler are closed, queued requests
    /// are answered 503, streamed answers and streamed bodies end, and
    /// handlers still running get `grace` to finish. Returns the names of
    /// the threads still running a handler then (left to finish on their
    /// own, not joined); every other thread is joined.
    pub(crate) fn shutdown(mut self, grace: Duration) -> Vec<String> {
        self.stop_threads(grace)
    }

    fn stop_threads(&mut self, grace: Duration) -> Vec<String> {
        let shared = &self.shared;
        shared.stop.trigger();
        shared.waker.wake();
        let (io_threads, workers): (Vec<_>, Vec<_>) = std::mem::take(&mut self.threads)
            .into_iter()
            .partition(|(name, _)| name == "http-accept" || name == "http-read");
        for (_, handle) in io_threads {
            let _ = handle.join();
        }
        shared
            .inbox
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        for pool in Pool::ALL {
            let jobs = shared.queue(pool).close();
            pool::refuse_all(shared, jobs);
        }
        crate::wait::until(grace, || workers.iter().all(|(_, h)| h.is_finished()));
        let mut running = Vec::new();
        for (name, handle) in workers {
            if handle.is_finished() {
                let _ = handle.join();
            } else {
                running.push(name);
            }
        }
        running
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if !self.threads.is_empty() {
            self.stop_threads(Duration::ZERO);
        }
    }
}
