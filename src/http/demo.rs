//! The demo service: the server with routes that exercise each of its
//! mechanisms, run in a process of its own by the integration tests and
//! the benchmarks (`paasmaker::http_demo`), so that its descriptors and
//! threads can be counted from `/proc`.
//!
//! Routes: `GET /health` (quick), `GET /bytes?n=N` (quick: N bytes),
//! `GET /sleep?ms=N` (slow: sleeps N ms),
//! `POST /echo` (quick, body buffered up to `body_limit`, answered back),
//! `POST /upload` (slow, body streamed up to `upload_limit`, answered
//! with its size and FNV-1a hash), `GET /stream?lines=N` (stream pool: N
//! lines, or with `follow=1` a line every `interval_ms` until the client
//! closes), `GET /private` (rejected 401 by the plan), `GET /inspect/...`
//! (quick: the decoded segments and query), anything else 404.
//!
//! Protocol on the standard streams: prints `listening on ADDR` once it
//! serves; each `stats` line on stdin prints a `stats ...` line; at the
//! end of stdin it shuts down (grace `grace_ms`), prints `stopped
//! running=[...]` with the threads still in a handler, and exits 0 when
//! there are none.

use std::io::{self, BufRead, Read, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use super::{
    bind, Body, BodyError, BodyReader, Bound, Config, Method, Plan, Pool, PoolSize, Request,
    Response, Server, Service, Stats, StreamWriter,
};

struct Demo {
    body_limit: usize,
    upload_limit: u64,
}

impl Service for Demo {
    fn plan(&self, request: &Request) -> Plan {
        let quick = Plan::Buffer {
            pool: Pool::Quick,
            limit: 0,
        };
        match (request.method(), request.segments().as_slice()) {
            (Method::Get, ["sleep"]) => Plan::Buffer {
                pool: Pool::Slow,
                limit: 0,
            },
            (Method::Post, ["echo"]) => Plan::Buffer {
                pool: Pool::Quick,
                limit: self.body_limit,
            },
            (Method::Post, ["upload"]) => Plan::Stream {
                pool: Pool::Slow,
                limit: self.upload_limit,
            },
            (Method::Get, ["stream"]) => Plan::Buffer {
                pool: Pool::Stream,
                limit: 0,
            },
            (_, ["private"]) => Plan::Reject {
                status: 401,
                reason: "missing or wrong token".into(),
            },
            _ => quick,
        }
    }

    fn handle(&self, request: Request, body: Body<'_>) -> Response {
        let number = |name: &str, default: u64| {
            request
                .query_param(name)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(default)
        };
        match (request.method(), request.segments().as_slice(), body) {
            (Method::Get | Method::Head, ["health"], _) => Response::text(200, "ok\n"),
            (Method::Get, ["bytes"], _) => {
                let n = usize::try_from(number("n", 0)).unwrap_or(0).min(1 << 30);
                Response::new(200, "application/octet-stream", vec![b'b'; n])
            }
            (Method::Get, ["sleep"], _) => {
                std::thread::sleep(Duration::from_millis(number("ms", 0)));
                Response::text(200, "slept\n")
            }
            (Method::Post, ["echo"], Body::Bytes(bytes)) => {
                Response::new(200, "application/octet-stream", bytes)
            }
            (Method::Post, ["upload"], Body::Stream(reader)) => self.upload(reader),
            (Method::Get, ["stream"], _) => {
                let lines = number("lines", 0);
                let follow = request.query_param("follow").as_deref() == Some("1");
                let interval = Duration::from_millis(number("interval_ms", 100));
                Response::stream(200, "text/plain; charset=utf-8", move |w| {
                    stream_lines(w, lines, follow.then_some(interval))
                })
            }
            (Method::Delete, ["inspect"], _) => {
                Response::empty(204).with_header("X-Demo", "deleted")
            }
            (_, ["inspect", ..], _) => inspect(&request),
            _ => self.refusal(404, "no such route"),
        }
    }
}

impl Demo {
    /// Reads an upload to its end: its size and hash, or the refusal of
    /// its body error.
    fn upload(&self, mut reader: BodyReader<'_>) -> Response {
        let mut buf = vec![0u8; 64 * 1024];
        let mut hash = Fnv::new();
        loop {
            match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => hash.update(&buf[..n]),
                Err(e) => {
                    let status = BodyError::of(&e).map_or(400, BodyError::status);
                    return self.refusal(status, &e.to_string());
                }
            }
        }
        Response::text(200, format!("{} {:016x}\n", reader.received(), hash.0))
    }
}

/// Writes `lines` lines, then, when following, one more every `follow`
/// until the client closes.
fn stream_lines(w: &mut StreamWriter<'_>, lines: u64, follow: Option<Duration>) -> io::Result<()> {
    for i in 0..lines {
        if i % 1024 == 0 && w.is_closed() {
            return Ok(());
        }
        writeln!(w, "line {i}")?;
    }
    w.flush()?;
    let Some(interval) = follow else {
        return Ok(());
    };
    let mut i = lines;
    while !w.closed_within(interval) {
        writeln!(w, "line {i}")?;
        w.flush()?;
        i += 1;
    }
    Ok(())
}

/// What the server made of a request, as text.
fn inspect(request: &Request) -> Response {
    let segments = request.segments().join("|");
    let query: Vec<String> = request
        .query_params()
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let text = format!(
        "method={}\ntarget={}\npath={}\nsegments={segments}\nquery={}\nx-test={}\nheaders={}\nlength={:?}\npeer={}\n",
        request.method(),
        request.target(),
        request.path(),
        query.join("|"),
        request.header("x-test").unwrap_or_default(),
        request.headers().len(),
        request.body_length(),
        request.peer().ip(),
    );
    Response::text(200, text)
}

/// FNV-1a, 64 bits: a check that an upload arrived whole.
struct Fnv(u64);

impl Fnv {
    fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    fn update(&mut self, data: &[u8]) {
        for &b in data {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// Applies one `key=value` argument to the configuration.
fn apply(
    config: &mut Config,
    demo: &mut Demo,
    grace: &mut Duration,
    arg: &str,
) -> Result<(), String> {
    let (key, value) = arg
        .split_once('=')
        .ok_or_else(|| format!("expected KEY=VALUE, got {arg:?}"))?;
    if key == "listen" {
        config.listen = value.parse().map_err(|e| format!("{arg}: {e}"))?;
        return Ok(());
    }
    let n: u64 = value.parse().map_err(|e| format!("{arg}: {e}"))?;
    let size = usize::try_from(n).map_err(|e| format!("{arg}: {e}"))?;
    let ms = Duration::from_millis(n);
    match key {
        "max_connections" => config.max_connections = size,
        "head_ms" => config.head_timeout = ms,
        "body_ms" => config.body_timeout = ms,
        "min_rate" => config.body_min_rate = n,
        "write_ms" => config.write_timeout = ms,
        "linger_ms" => config.linger = ms,
        "max_head" => config.max_head = size,
        "max_headers" => config.max_headers = size,
        "quick" => {
            config.quick = PoolSize {
                threads: size,
                ..config.quick
            }
        }
        "quick_queue" => config.quick.queue = size,
        "slow" => {
            config.slow = PoolSize {
                threads: size,
                ..config.slow
            }
        }
        "slow_queue" => config.slow.queue = size,
        "stream" => {
            config.stream = PoolSize {
                threads: size,
                ..config.stream
            }
        }
        "stream_queue" => config.stream.queue = size,
        "body_limit" => demo.body_limit = size,
        "upload_limit" => demo.upload_limit = n,
        "grace_ms" => *grace = ms,
        _ => return Err(format!("unknown setting {key:?}")),
    }
    Ok(())
}

/// Runs the demo server with `args` (`KEY=VALUE` settings of the
/// configuration, see [`apply`]) until the end of stdin.
#[doc(hidden)]
pub fn main(args: impl IntoIterator<Item = String>) -> ExitCode {
    let mut config = Config {
        warn: |msg| eprintln!("httpd: warning: {msg}"),
        ..Config::default()
    };
    let mut demo = Demo {
        body_limit: 1 << 20,
        upload_limit: 1 << 30,
    };
    let mut grace = Duration::from_secs(5);
    for arg in args {
        if let Err(e) = apply(&mut config, &mut demo, &mut grace, &arg) {
            eprintln!("httpd: fatal: {e}");
            return ExitCode::from(100);
        }
    }
    // Bound first, so that the address is known before any answer.
    let bound: Bound = match bind(config) {
        Ok(bound) => bound,
        Err(e) => {
            eprintln!("httpd: fatal: {e}");
            return ExitCode::from(111);
        }
    };
    let addr = bound.local_addr();
    let server: Server = match bound.start(Arc::new(demo)) {
        Ok(server) => server,
        Err(e) => {
            eprintln!("httpd: fatal: {e}");
            return ExitCode::from(111);
        }
    };
    debug_assert_eq!(addr, server.local_addr());
    println!("listening on {addr}");
    let _ = io::stdout().flush();
    for line in io::stdin().lock().lines() {
        match line.as_deref().map(str::trim) {
            Ok("stats") => {
                let stats: Stats = server.stats();
                println!("stats {stats:?}");
                let _ = io::stdout().flush();
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    let running = server.shutdown(grace);
    println!("stopped running={running:?}");
    let _ = io::stdout().flush();
    if running.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
