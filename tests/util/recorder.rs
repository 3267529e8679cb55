//! A recording HTTP server: answers every request with one status and
//! hands each request to the test. It stands in for the heart that a
//! supervisor reports to, and for the pacemaker a heart reports to.

use std::sync::mpsc::{self, Receiver};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

/// A request the server received.
#[derive(Debug, Clone)]
pub struct Hit {
    pub method: String,
    pub url: String,
    /// The body as JSON; `Null` when it is empty or not JSON.
    pub body: Value,
    /// When the request arrived (before its body was read).
    pub at: Instant,
}

/// The server; stopped and joined on drop.
pub struct Recorder {
    server: Arc<tiny_http::Server>,
    pub port: u16,
    hits: Receiver<Hit>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Recorder {
    /// A server on 127.0.0.1:0 that answers `status`.
    pub fn start(status: u16) -> Recorder {
        Recorder::on("127.0.0.1:0", status)
    }

    /// A server on `addr` that answers `status`.
    pub fn on(addr: &str, status: u16) -> Recorder {
        let server = Arc::new(
            tiny_http::Server::http(addr).unwrap_or_else(|e| panic!("listen on {addr}: {e}")),
        );
        let port = server.server_addr().to_ip().unwrap().port();
        let (tx, hits) = mpsc::channel();
        let accept = Arc::clone(&server);
        let thread = thread::spawn(move || {
            for mut request in accept.incoming_requests() {
                let at = Instant::now();
                let mut body = String::new();
                let _ = request.as_reader().read_to_string(&mut body);
                let hit = Hit {
                    method: request.method().to_string(),
                    url: request.url().to_string(),
                    body: serde_json::from_str(&body).unwrap_or(Value::Null),
                    at,
                };
                let _ = request.respond(tiny_http::Response::empty(status));
                let _ = tx.send(hit);
            }
        });
        Recorder {
            server,
            port,
            hits,
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The next request; panics when none comes within `timeout`.
    pub fn next(&self, timeout: Duration) -> Hit {
        self.hits
            .recv_timeout(timeout)
            .unwrap_or_else(|_| panic!("no request within {timeout:?}"))
    }

    /// A request that has arrived already, if any.
    pub fn try_next(&self) -> Option<Hit> {
        self.hits.try_recv().ok()
    }

    /// Skips requests until one to `path` whose body satisfies `pred`;
    /// panics when none comes within `timeout` of the previous one.
    pub fn wait(&self, timeout: Duration, path: &str, pred: impl Fn(&Value) -> bool) -> Value {
        loop {
            match self.hits.recv_timeout(timeout) {
                Ok(hit) if hit.url == path && pred(&hit.body) => return hit.body,
                Ok(_) => continue,
                Err(_) => panic!("no {path} request arrived"),
            }
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
