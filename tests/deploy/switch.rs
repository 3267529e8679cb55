//! A router and the fake controller that drives it, for the test of a
//! replacement without a gap: the controller takes the heart's pacemaker
//! reports and, when an instance of its application becomes `RUNNING`
//! (it was not in the report before), points the front (a TCP proxy on 127.0.0.1) at that instance's port, read from
//! `GET /instances/ID`, before it answers the report; pollers request the
//! application through the front, one connection per request, and record
//! which version answered or how the request failed.
//!
//! Every thread here ends on drop (a flag, then a join), and every loop is
//! bounded in time, so a failing test leaves nothing behind.

use std::collections::BTreeMap;
use std::io::{self, Write as _};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::util::http::Request;

/// How long a front connection or a poll may wait for its peer.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest any poller runs, whatever the test does.
const POLL_BOUND: Duration = Duration::from_secs(300);
/// The pause between two polls of one poller.
const POLL_PAUSE: Duration = Duration::from_millis(2);

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Seconds since the Unix epoch, as Python's `time.time()` gives them.
pub fn epoch(at: SystemTime) -> f64 {
    at.duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

/// The port the front forwards to (0: nowhere yet). The front holds the
/// lock from reading it until its connection to the backend is made, so
/// once a switch returns no connection to the previous port is begun.
#[derive(Clone, Default)]
pub struct Route(Arc<Mutex<u16>>);

impl Route {
    pub fn port(&self) -> u16 {
        *lock(&self.0)
    }

    fn set(&self, port: u16) {
        *lock(&self.0) = port;
    }
}

/// The front: accepts on 127.0.0.1:0 and proxies each connection to the
/// route's port of the moment; a connection it cannot forward is closed
/// unanswered, as a router's 502 would fail the request.
pub struct Front {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Front {
    pub fn start(route: Route) -> Front {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = thread::spawn(move || {
            for client in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                let route = route.clone();
                thread::spawn(move || forward(client, &route));
            }
        });
        Front {
            addr,
            stop,
            thread: Some(thread),
        }
    }

    pub fn addr(&self) -> String {
        self.addr.to_string()
    }
}

impl Drop for Front {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so that it sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Proxies `client` to the route's port, both ways, until both ends close.
fn forward(client: TcpStream, route: &Route) {
    let backend = {
        let port = lock(&route.0);
        if *port == 0 {
            return;
        }
        TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], *port)), IO_TIMEOUT)
    };
    let Ok(backend) = backend else { return };
    for stream in [&client, &backend] {
        let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
        let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
    }
    let (Ok(mut client_in), Ok(mut backend_out)) = (client.try_clone(), backend.try_clone()) else {
        return;
    };
    let upstream = thread::spawn(move || {
        let _ = io::copy(&mut client_in, &mut backend_out);
        let _ = backend_out.shutdown(Shutdown::Write);
    });
    let (mut backend_in, mut client_out) = (backend, client);
    let _ = io::copy(&mut backend_in, &mut client_out);
    let _ = client_out.flush();
    let _ = client_out.shutdown(Shutdown::Write);
    let _ = upstream.join();
}

/// One poll: when it began and ended, and the version that answered or
/// why none did.
#[derive(Debug, Clone)]
pub struct Poll {
    pub at: SystemTime,
    pub ended: SystemTime,
    pub answer: Result<String, String>,
}

/// Threads that `GET /` through the front, one connection per request,
/// until dropped (or [`POLL_BOUND`]).
pub struct Pollers {
    polls: Arc<Mutex<Vec<Poll>>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Pollers {
    pub fn start(front: &str, count: usize) -> Pollers {
        let polls = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..count)
            .map(|_| {
                let (polls, stop, front) =
                    (Arc::clone(&polls), Arc::clone(&stop), front.to_string());
                thread::spawn(move || {
                    let began = Instant::now();
                    while !stop.load(Ordering::SeqCst) && began.elapsed() < POLL_BOUND {
                        let at = SystemTime::now();
                        let answer = match Request::get("/").timeout(IO_TIMEOUT).send(&front) {
                            Ok(r) if r.status == 200 => Ok(r.body),
                            Ok(r) => Err(format!("HTTP {}: {}", r.status, r.body)),
                            Err(e) => Err(e.to_string()),
                        };
                        let ended = SystemTime::now();
                        lock(&polls).push(Poll { at, ended, answer });
                        thread::sleep(POLL_PAUSE);
                    }
                })
            })
            .collect();
        Pollers {
            polls,
            stop,
            threads,
        }
    }

    /// How many polls `version` answered.
    pub fn answered_by(&self, version: &str) -> usize {
        lock(&self.polls)
            .iter()
            .filter(|p| p.answer.as_deref() == Ok(version))
            .count()
    }

    /// Every poll made so far.
    pub fn polls(&self) -> Vec<Poll> {
        lock(&self.polls).clone()
    }

    /// Stops the pollers; every poll made.
    pub fn finish(mut self) -> Vec<Poll> {
        self.end();
        std::mem::take(&mut *lock(&self.polls))
    }

    fn end(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

impl Drop for Pollers {
    fn drop(&mut self) {
        self.end();
    }
}

/// A report as the controller received it.
#[derive(Debug, Clone)]
pub struct Report {
    pub path: String,
    /// Instance id to state.
    pub instances: BTreeMap<String, String>,
}

/// A switch of the route: to which instance, and when the controller,
/// the switch made, began to answer the report that caused it (the heart
/// cannot have the answer before).
#[derive(Debug, Clone)]
pub struct Switch {
    pub instance: String,
    pub port: u16,
    pub answering: SystemTime,
}

#[derive(Default)]
struct Seen {
    reports: Vec<Report>,
    switches: Vec<Switch>,
}

/// The fake controller: a pacemaker URL that routes `application`.
pub struct Controller {
    server: Arc<tiny_http::Server>,
    seen: Arc<Mutex<Seen>>,
    thread: Option<JoinHandle<()>>,
}

impl Controller {
    /// Starts on 127.0.0.1:0. It reads the heart's token from `token`
    /// when it needs it; each switch takes `delay` (the time a real
    /// controller takes to reprogram its routers) before it is made and
    /// the report answered.
    pub fn start(application: &str, token: PathBuf, route: Route, delay: Duration) -> Controller {
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").unwrap());
        let seen = Arc::new(Mutex::new(Seen::default()));
        let (accept, record) = (Arc::clone(&server), Arc::clone(&seen));
        let application = application.to_string();
        let thread = thread::spawn(move || {
            let mut running: Vec<String> = Vec::new();
            for mut request in accept.incoming_requests() {
                let mut body = String::new();
                let _ = request.as_reader().read_to_string(&mut body);
                let report: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                let instances: BTreeMap<String, String> = report["instances"]
                    .as_object()
                    .map(|m| {
                        m.iter()
                            .map(|(id, s)| (id.clone(), s.as_str().unwrap_or("").to_string()))
                            .collect()
                    })
                    .unwrap_or_default();
                lock(&record).reports.push(Report {
                    path: request.url().to_string(),
                    instances: instances.clone(),
                });
                let target = instances.iter().find_map(|(id, state)| {
                    if state != "RUNNING" || running.contains(id) {
                        return None;
                    }
                    let heart = report["address"].as_str()?;
                    let token = std::fs::read_to_string(&token).ok()?;
                    let answer = Request::get(&format!("/instances/{id}"))
                        .token(Some(token.trim()))
                        .timeout(IO_TIMEOUT)
                        .send(heart)
                        .ok()?;
                    let view: Value = serde_json::from_str(&answer.body).ok()?;
                    let port = view["port"].as_u64()?;
                    (view["application"]["name"] == application.as_str())
                        .then(|| (id.clone(), u16::try_from(port).ok()))
                });
                running = instances
                    .iter()
                    .filter(|(_, state)| *state == "RUNNING")
                    .map(|(id, _)| id.clone())
                    .collect();
                if let Some((id, Some(port))) = target {
                    thread::sleep(delay);
                    route.set(port);
                    lock(&record).switches.push(Switch {
                        instance: id,
                        port,
                        answering: SystemTime::now(),
                    });
                    let _ = request.respond(tiny_http::Response::empty(200));
                } else {
                    let _ = request.respond(tiny_http::Response::empty(200));
                }
            }
        });
        Controller {
            server,
            seen,
            thread: Some(thread),
        }
    }

    /// The pacemaker URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.server.server_addr().to_ip().unwrap())
    }

    /// Every report so far, in the order received.
    pub fn reports(&self) -> Vec<Report> {
        lock(&self.seen).reports.clone()
    }

    /// Every switch so far.
    pub fn switches(&self) -> Vec<Switch> {
        lock(&self.seen).switches.clone()
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
