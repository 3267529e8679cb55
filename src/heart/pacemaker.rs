//! Reports to the optional controller (`--pacemaker URL`): node register,
//! update on every state change (coalesced: only the newest snapshot is
//! sent), and shutdown. A background thread delivers them with retries and
//! backoff; nothing in the heart blocks on the controller but the bounded
//! [`Reporter::flush`] a stop begins with.
//!
//! Invariants, all kept under one mutex that the thread waits on with a
//! condition variable:
//!
//! - the register report is delivered (or refused with a 4xx) before any
//!   update is sent;
//! - at most one update is pending: a newer one replaces an unsent one,
//!   and a failed one is put back only when nothing newer arrived; an
//!   update equal to the last one queued is not queued again;
//! - a shutdown report supersedes whatever is pending and ends the thread
//!   once delivered or given up;
//! - each try is bounded by [`TRY_TIMEOUT`]; while the controller is
//!   unreachable or answers 5xx (or 408, 429) the thread backs off from
//!   [`FIRST_BACKOFF`], doubling to [`MAX_BACKOFF`]; any other non-2xx
//!   answer is final and the report is dropped with a warning;
//! - [`Reporter::flush`] waits (bounded) until the controller has answered
//!   every update queued before it, and not while it is unreachable: a
//!   stop waits so, so that a controller has switched its routes to what
//!   started before what stopped is signalled.

use std::io::Write as _;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use super::PROG;
use crate::cli;
use crate::protocol::{pacemaker, NodeReport};

/// Bound on one POST to the controller.
const TRY_TIMEOUT: Duration = Duration::from_secs(5);
/// The first pause after a failed try.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// The longest pause between tries.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Which report, and where it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Register,
    Update,
    Shutdown,
}

impl Kind {
    fn path(self) -> &'static str {
        match self {
            Kind::Register => pacemaker::paths::REGISTER,
            Kind::Update => pacemaker::paths::UPDATE,
            Kind::Shutdown => pacemaker::paths::SHUTDOWN,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Register => "register",
            Kind::Update => "update",
            Kind::Shutdown => "shutdown",
        }
    }
}

/// How a [`Reporter::flush`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flushed {
    /// The controller answered every update queued before the flush (or
    /// there was none).
    Answered,
    /// The controller cannot be reached (its last try failed), or
    /// reporting ended: there is nothing to wait for.
    Unreachable,
    /// A try was still in flight at the timeout.
    TimedOut,
}

/// What is waiting to be delivered.
#[derive(Debug, Default)]
struct Queue {
    /// Until delivered or refused.
    register: Option<NodeReport>,
    /// The newest undelivered update, with its number.
    update: Option<(u64, NodeReport)>,
    /// The newest report queued (register or update): an equal update is
    /// not queued again.
    last: Option<NodeReport>,
    /// The number of the newest update queued (they count from 1).
    queued: u64,
    /// The number of the newest update the controller answered, 2xx or
    /// refused.
    answered: u64,
    /// Once asked for: supersedes the rest.
    shutdown: Option<NodeReport>,
    /// The thread is done (shutdown delivered, given up, or no thread).
    finished: bool,
    /// No try before this instant (backoff).
    not_before: Option<Instant>,
    /// The pause after the next failure.
    backoff: Duration,
    /// Tries made, for tests and diagnostics.
    attempts: u64,
    /// Tries that failed (retried or refused).
    failures: u64,
}

impl Queue {
    /// The report to send next, in contract order.
    fn next(&self) -> Option<Kind> {
        if self.shutdown.is_some() {
            Some(Kind::Shutdown)
        } else if self.register.is_some() {
            Some(Kind::Register)
        } else if self.update.is_some() {
            Some(Kind::Update)
        } else {
            None
        }
    }
}

#[derive(Debug)]
struct Shared {
    /// The controller's base URL, without a trailing slash.
    url: String,
    queue: Mutex<Queue>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn wait<'a>(
        &self,
        guard: MutexGuard<'a, Queue>,
        timeout: Option<Duration>,
    ) -> MutexGuard<'a, Queue> {
        match timeout {
            Some(timeout) => {
                self.changed
                    .wait_timeout(guard, timeout)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0
            }
            None => self
                .changed
                .wait(guard)
                .unwrap_or_else(PoisonError::into_inner),
        }
    }
}

/// The handle the heart keeps; cheap to call from any thread.
#[derive(Debug)]
pub(crate) struct Reporter {
    shared: Arc<Shared>,
}

impl Reporter {
    /// Starts the reporting thread and queues the node register report.
    pub(crate) fn start(url: String, register: NodeReport) -> Reporter {
        let shared = Arc::new(Shared {
            url: url.trim_end_matches('/').to_string(),
            queue: Mutex::new(Queue {
                last: Some(register.clone()),
                register: Some(register),
                backoff: FIRST_BACKOFF,
                ..Queue::default()
            }),
            changed: Condvar::new(),
        });
        let worker = Arc::clone(&shared);
        let spawned = thread::Builder::new()
            .name("pacemaker".into())
            .spawn(move || deliver(&worker));
        if let Err(err) = spawned {
            cli::warn(
                PROG,
                format!("unable to start the pacemaker reporter: {err}; no reports will be sent"),
            );
            shared.lock().finished = true;
        }
        Reporter { shared }
    }

    /// Queues an update; replaces any update not yet delivered. An update
    /// equal to the last report queued changes nothing and is dropped.
    pub(crate) fn update(&self, report: NodeReport) {
        let mut queue = self.shared.lock();
        if queue.finished || queue.shutdown.is_some() || queue.last.as_ref() == Some(&report) {
            return;
        }
        queue.queued += 1;
        queue.last = Some(report.clone());
        queue.update = Some((queue.queued, report));
        self.shared.changed.notify_all();
    }

    /// Waits at most `timeout` for the controller to answer every update
    /// queued so far. Returns at once while the controller is unreachable
    /// (the last try failed and the thread backs off), and as soon as a
    /// try fails: the controller that would act on the report is not
    /// listening.
    pub(crate) fn flush(&self, timeout: Duration) -> Flushed {
        let deadline = Instant::now() + timeout;
        let mut queue = self.shared.lock();
        let target = queue.queued;
        let failures = queue.failures;
        loop {
            if queue.answered >= target {
                return Flushed::Answered;
            }
            if queue.finished
                || queue.shutdown.is_some()
                || queue.not_before.is_some()
                || queue.failures != failures
            {
                return Flushed::Unreachable;
            }
            let now = Instant::now();
            if now >= deadline {
                return Flushed::TimedOut;
            }
            queue = self.shared.wait(queue, Some(deadline - now));
        }
    }

    /// Sends the shutdown report, waiting at most `timeout` for delivery.
    /// Pending register and update reports are dropped: the controller
    /// only needs to know that the node is going away.
    pub(crate) fn shutdown(&self, report: NodeReport, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut queue = self.shared.lock();
        if queue.finished {
            return;
        }
        queue.register = None;
        queue.update = None;
        queue.shutdown = Some(report);
        queue.not_before = None;
        queue.backoff = FIRST_BACKOFF;
        self.shared.changed.notify_all();
        while !queue.finished {
            let now = Instant::now();
            if now >= deadline {
                cli::warn(
                    PROG,
                    format!(
                        "pacemaker {}: shutdown report not delivered within {:?}; giving up",
                        self.shared.url, timeout
                    ),
                );
                queue.finished = true;
                self.shared.changed.notify_all();
                return;
            }
            queue = self.shared.wait(queue, Some(deadline - now));
        }
    }

    /// Tries made so far.
    #[cfg(test)]
    fn attempts(&self) -> u64 {
        self.shared.lock().attempts
    }
}

impl Drop for Reporter {
    /// Ends the thread without a shutdown report (it exits after the try
    /// in flight, if any).
    fn drop(&mut self) {
        self.shared.lock().finished = true;
        self.shared.changed.notify_all();
    }
}

/// How one try ended.
enum Sent {
    Delivered,
    /// Unreachable, a timeout, 5xx, 408 or 429: try again later.
    Retry(String),
    /// Any other answer: the controller does not want this report.
    Refused(String),
}

/// The reporting thread: takes the next report in order, posts it, and
/// backs off while the controller cannot take it.
fn deliver(shared: &Shared) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(TRY_TIMEOUT))
        .http_status_as_error(false)
        .build()
        .into();
    let mut failing = false;
    loop {
        let (kind, number, report) = {
            let mut queue = shared.lock();
            loop {
                if queue.finished {
                    return;
                }
                let Some(kind) = queue.next() else {
                    queue = shared.wait(queue, None);
                    continue;
                };
                let now = Instant::now();
                if let Some(pause) = queue.not_before.and_then(|t| t.checked_duration_since(now)) {
                    if !pause.is_zero() {
                        queue = shared.wait(queue, Some(pause));
                        continue;
                    }
                }
                let report = match kind {
                    Kind::Register => queue.register.clone().map(|r| (0, r)),
                    Kind::Update => queue.update.take(),
                    Kind::Shutdown => queue.shutdown.clone().map(|r| (0, r)),
                };
                let Some((number, report)) = report else {
                    continue;
                };
                queue.attempts += 1;
                break (kind, number, report);
            }
        };

        let sent = post(&agent, &format!("{}{}", shared.url, kind.path()), &report);

        let mut queue = shared.lock();
        match sent {
            Sent::Delivered => {
                if failing {
                    let _ = writeln!(
                        std::io::stderr().lock(),
                        "{PROG}: pacemaker {}: reachable again, {} report delivered",
                        shared.url,
                        kind.name()
                    );
                    failing = false;
                }
                queue.not_before = None;
                queue.backoff = FIRST_BACKOFF;
                finish(&mut queue, kind, number);
            }
            Sent::Retry(reason) => {
                if !failing {
                    cli::warn(
                        PROG,
                        format!(
                            "pacemaker {}: unable to send {} report: {reason}; retrying",
                            shared.url,
                            kind.name()
                        ),
                    );
                    failing = true;
                }
                queue.failures += 1;
                if kind == Kind::Update && queue.update.is_none() && queue.shutdown.is_none() {
                    queue.update = Some((number, report));
                }
                queue.not_before = Some(Instant::now() + queue.backoff);
                queue.backoff = (queue.backoff * 2).min(MAX_BACKOFF);
            }
            Sent::Refused(reason) => {
                cli::warn(
                    PROG,
                    format!(
                        "pacemaker {}: {} report refused: {reason}; dropped",
                        shared.url,
                        kind.name()
                    ),
                );
                queue.failures += 1;
                finish(&mut queue, kind, number);
            }
        }
        shared.changed.notify_all();
    }
}

/// Marks `kind` (update `number`) as done (delivered or refused).
fn finish(queue: &mut Queue, kind: Kind, number: u64) {
    match kind {
        Kind::Register => queue.register = None,
        Kind::Update => queue.answered = queue.answered.max(number),
        Kind::Shutdown => {
            queue.shutdown = None;
            queue.finished = true;
        }
    }
}

fn post(agent: &ureq::Agent, url: &str, report: &NodeReport) -> Sent {
    match agent.post(url).send_json(report) {
        Err(err) => Sent::Retry(err.to_string()),
        Ok(response) => {
            let status = response.status().as_u16();
            match status {
                200..=299 => Sent::Delivered,
                408 | 429 | 500..=599 => Sent::Retry(format!("HTTP {status}")),
                _ => Sent::Refused(format!("HTTP {status}")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::State;
    use std::collections::BTreeMap;
    use std::net::TcpListener;

    const WAIT: Duration = Duration::from_secs(10);

    fn report(instances: &[(&str, State)]) -> NodeReport {
        NodeReport {
            node: "node-1".into(),
            address: "127.0.0.1:42500".into(),
            runtimes: BTreeMap::from([("shell".to_string(), vec!["1".to_string()])]),
            instances: instances
                .iter()
                .map(|(id, state)| (id.to_string(), *state))
                .collect(),
        }
    }

    fn controller() -> (tiny_http::Server, String) {
        let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
        let url = format!("http://{}", server.server_addr().to_ip().unwrap());
        (server, url)
    }

    /// The next report: its path, its body, and the request to answer.
    fn next(server: &tiny_http::Server) -> (String, NodeReport, tiny_http::Request) {
        let mut request = server
            .recv_timeout(WAIT)
            .unwrap()
            .expect("no report arrived in time");
        let mut body = String::new();
        request.as_reader().read_to_string(&mut body).unwrap();
        let report = serde_json::from_str(&body).unwrap();
        (request.url().to_string(), report, request)
    }

    fn answer(request: tiny_http::Request, status: u16) {
        request.respond(tiny_http::Response::empty(status)).unwrap();
    }

    #[test]
    fn register_first_then_the_newest_update_then_shutdown() {
        let (server, url) = controller();
        let reporter = Reporter::start(url, report(&[]));
        let (path, body, held) = next(&server);
        assert_eq!(path, "/node/register");
        assert_eq!(body.node, "node-1");
        // Queued while the register is in flight: must not block, and only
        // the newest may be sent.
        let queued = Instant::now();
        reporter.update(report(&[("web-1", State::Starting)]));
        reporter.update(report(&[("web-1", State::Running)]));
        assert!(queued.elapsed() < Duration::from_millis(100));
        answer(held, 200);

        let (path, body, request) = next(&server);
        assert_eq!(path, "/node/update");
        assert_eq!(body.instances["web-1"], State::Running);
        answer(request, 204);

        let stopper = thread::spawn(move || {
            reporter.shutdown(report(&[("web-1", State::Running)]), WAIT);
        });
        let (path, _, request) = next(&server);
        assert_eq!(path, "/node/shutdown");
        answer(request, 200);
        stopper.join().unwrap();
        assert!(server
            .recv_timeout(Duration::from_millis(50))
            .unwrap()
            .is_none());
    }

    #[test]
    fn server_errors_are_retried_and_refusals_dropped() {
        let (server, url) = controller();
        let reporter = Reporter::start(url, report(&[]));
        let (path, _, request) = next(&server);
        assert_eq!(path, "/node/register");
        answer(request, 503);
        let (path, _, request) = next(&server);
        assert_eq!(path, "/node/register", "a 503 is retried");
        answer(request, 400);

        reporter.update(report(&[("a", State::Registered)]));
        let (path, _, request) = next(&server);
        assert_eq!(path, "/node/update", "a refused register is not retried");
        answer(request, 500);
        reporter.update(report(&[("a", State::Running)]));
        let (path, body, request) = next(&server);
        assert_eq!(path, "/node/update");
        assert_eq!(body.instances["a"], State::Running, "the newer update wins");
        answer(request, 200);
    }

    #[test]
    fn reports_arrive_once_the_controller_comes_up() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let reporter = Reporter::start(format!("http://127.0.0.1:{port}/"), report(&[]));
        reporter.update(report(&[("web-1", State::Running)]));
        assert!(crate::wait::until(WAIT, || reporter.attempts() >= 2));

        let server = tiny_http::Server::http(("127.0.0.1", port)).unwrap();
        let (path, _, request) = next(&server);
        assert_eq!(path, "/node/register");
        answer(request, 200);
        let (path, body, request) = next(&server);
        assert_eq!(path, "/node/update");
        assert_eq!(body.instances["web-1"], State::Running);
        answer(request, 200);
    }

    #[test]
    fn a_flush_waits_until_the_controller_answered_what_was_queued() {
        let (server, url) = controller();
        let reporter = Arc::new(Reporter::start(url, report(&[])));
        let (_, _, request) = next(&server);
        answer(request, 200);
        assert_eq!(reporter.flush(WAIT), Flushed::Answered, "nothing queued");

        reporter.update(report(&[("new", State::Running), ("old", State::Running)]));
        let (tx, flushed) = std::sync::mpsc::channel();
        let flusher = Arc::clone(&reporter);
        let waiter = thread::spawn(move || tx.send(flusher.flush(WAIT)).unwrap());
        let (path, body, held) = next(&server);
        assert_eq!(path, "/node/update");
        assert_eq!(body.instances["new"], State::Running);
        assert!(
            flushed.recv_timeout(Duration::from_millis(200)).is_err(),
            "the flush returned before the controller answered"
        );
        answer(held, 200);
        assert_eq!(flushed.recv_timeout(WAIT).unwrap(), Flushed::Answered);
        waiter.join().unwrap();

        // The same report again is not sent again.
        reporter.update(report(&[("new", State::Running), ("old", State::Running)]));
        assert_eq!(reporter.flush(WAIT), Flushed::Answered);
        reporter.update(report(&[("new", State::Running), ("old", State::Stopped)]));
        let (_, body, request) = next(&server);
        assert_eq!(body.instances["old"], State::Stopped);
        answer(request, 200);
    }

    #[test]
    fn a_flush_gives_up_at_its_timeout_or_when_a_try_fails() {
        let (server, url) = controller();
        let reporter = Reporter::start(url, report(&[]));
        let (_, _, request) = next(&server);
        answer(request, 200);
        reporter.update(report(&[("a", State::Running)]));
        let (_, _, held) = next(&server);
        let begun = Instant::now();
        assert_eq!(
            reporter.flush(Duration::from_millis(300)),
            Flushed::TimedOut
        );
        assert!(begun.elapsed() >= Duration::from_millis(300));
        // A failed try ends the wait, and while the controller fails, a
        // flush does not wait at all.
        let (tx, flushed) = std::sync::mpsc::channel();
        thread::scope(|scope| {
            scope.spawn(|| tx.send(reporter.flush(WAIT)).unwrap());
            answer(held, 503);
            assert_eq!(flushed.recv_timeout(WAIT).unwrap(), Flushed::Unreachable);
        });
        let begun = Instant::now();
        assert_eq!(reporter.flush(WAIT), Flushed::Unreachable);
        assert!(begun.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn shutdown_gives_up_at_its_timeout() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let reporter = Reporter::start(format!("http://127.0.0.1:{port}"), report(&[]));
        let begun = Instant::now();
        reporter.shutdown(report(&[]), Duration::from_millis(300));
        let took = begun.elapsed();
        assert!(took >= Duration::from_millis(300), "{took:?}");
        assert!(took < Duration::from_secs(3), "{took:?}");
        // Nothing is queued after shutdown.
        reporter.update(report(&[]));
        assert!(reporter.shared.lock().update.is_none());
    }
}
