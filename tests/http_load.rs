//! Hostile clients against the HTTP server's demo process
//! (`paasmaker::http_demo`), and what that process holds, read from
//! `/proc`: shared by the tests in `http.rs` and, through
//! `#[path = "../tests/http_load.rs"] mod http_load;`, by the benchmarks.
//!
//! [`combined`] runs the load of issue 8 at a chosen scale: idle
//! connections, slowloris heads, stalled bodies, oversized declared
//! bodies and slow handlers all at once, measures `/health` from new
//! clients meanwhile, and the server's descriptors and threads before,
//! during and after.

#![allow(dead_code)]

use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// How long a server process may take to say where it listens.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A demo server process, killed on drop.
pub struct ServerProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    stderr: Arc<Mutex<String>>,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl ServerProcess {
    /// Runs `command` (which must run `paasmaker::http_demo`) and waits
    /// for its `listening on ADDR` line.
    ///
    /// # Panics
    ///
    /// When it cannot be started or does not say where it listens in
    /// time.
    pub fn spawn(mut command: Command) -> ServerProcess {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("unable to run {command:?}: {e}"));
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err = child.stderr.take().expect("stderr is piped");
        let sink = Arc::clone(&stderr);
        thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    return;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let stdin = child.stdin.take();
        let mut server = ServerProcess {
            child,
            stdin,
            lines,
            stderr,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        let line = server.line_with("listening on ", START_TIMEOUT);
        let addr = line.rsplit("listening on ").next().unwrap_or_default();
        server.addr = addr
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("bad address in {line:?}: {e}"));
        server
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The next stdout line containing `needle`, waiting at most `timeout`.
    fn line_with(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(_) => panic!(
                    "server process printed no {needle:?} within {timeout:?}; stderr: {}",
                    self.stderr()
                ),
            }
        }
    }

    /// What it wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Its counters, as `Stats { .. }` text.
    pub fn stats(&mut self) -> String {
        let stdin = self.stdin.as_mut().expect("server still running");
        stdin
            .write_all(b"stats\n")
            .expect("write to the server process");
        stdin.flush().expect("write to the server process");
        self.line_with("stats ", Duration::from_secs(10))
    }

    /// One counter of [`ServerProcess::stats`].
    pub fn stat(&mut self, name: &str) -> u64 {
        let stats = self.stats();
        let key = format!("{name}: ");
        let at = stats
            .find(&key)
            .unwrap_or_else(|| panic!("no {name} in {stats}"));
        stats[at + key.len()..]
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("bad {name} in {stats}"))
    }

    /// Descriptors it holds now.
    pub fn fds(&self) -> usize {
        fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(Iterator::count)
            .unwrap_or(0)
    }

    /// Threads it runs now.
    pub fn threads(&self) -> usize {
        fs::read_dir(format!("/proc/{}/task", self.pid()))
            .map(Iterator::count)
            .unwrap_or(0)
    }

    /// The names of its threads.
    pub fn thread_names(&self) -> Vec<String> {
        let Ok(tasks) = fs::read_dir(format!("/proc/{}/task", self.pid())) else {
            return Vec::new();
        };
        tasks
            .filter_map(|t| fs::read_to_string(t.ok()?.path().join("comm")).ok())
            .map(|name| name.trim().to_string())
            .collect()
    }

    /// CPU time it used so far (user and system).
    pub fn cpu_time(&self) -> Duration {
        let stat = fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap_or_default();
        let after = stat.rsplit(')').next().unwrap_or_default();
        let fields: Vec<&str> = after.split_whitespace().collect();
        let ticks: u64 = [11, 12]
            .iter()
            .filter_map(|&i| fields.get(i).and_then(|f| f.parse::<u64>().ok()))
            .sum();
        // USER_HZ is 100 on Linux.
        Duration::from_millis(ticks * 10)
    }

    /// Closes its stdin (it shuts down) and waits for it to exit; returns
    /// its status and its `stopped ...` line.
    pub fn stop(mut self, timeout: Duration) -> (ExitStatus, String) {
        drop(self.stdin.take());
        let line = self.line_with("stopped ", timeout);
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for the server") {
                return (status, line);
            }
            assert!(
                Instant::now() < deadline,
                "server process did not exit within {timeout:?}"
            );
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Waits until `cond` holds, polling every 20 ms, at most `timeout`.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// An answer as a client saw it.
#[derive(Debug, Default)]
pub struct Answer {
    /// The status (0 when no status line came).
    pub status: u16,
    /// The head, as text.
    pub head: String,
    /// The body, de-chunked when chunked.
    pub body: Vec<u8>,
}

impl Answer {
    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// Connects to `addr` with a timeout on every operation.
pub fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    Ok(stream)
}

/// Reads an answer to its end (the server closes every connection).
pub fn read_answer(stream: &mut TcpStream) -> io::Result<Answer> {
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            // A reset after the whole answer arrived still counts.
            Err(e) if !raw.is_empty() && e.kind() == io::ErrorKind::ConnectionReset => break,
            Err(e) => return Err(e),
        }
    }
    parse_answer(&raw)
}

/// Parses a whole answer (after any `100 Continue`).
pub fn parse_answer(mut raw: &[u8]) -> io::Result<Answer> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
    loop {
        let end = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or_else(|| bad("no complete head"))?;
        let head = String::from_utf8_lossy(&raw[..end]).into_owned();
        let body = &raw[end + 4..];
        let status: u16 = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("no status"))?;
        if status == 100 {
            raw = body;
            continue;
        }
        let mut answer = Answer {
            status,
            head,
            body: Vec::new(),
        };
        answer.body = if answer.header("Transfer-Encoding") == Some("chunked") {
            dechunk(body).ok_or_else(|| bad("bad chunked body"))?
        } else {
            body.to_vec()
        };
        return Ok(answer);
    }
}

/// The data of a complete chunked body.
fn dechunk(mut raw: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = raw.windows(2).position(|w| w == b"\r\n")?;
        let size = usize::from_str_radix(std::str::from_utf8(&raw[..line_end]).ok()?, 16).ok()?;
        raw = &raw[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(raw.get(..size)?);
        raw = raw.get(size + 2..)?;
    }
}

/// Sends `request` whole and reads the answer, each step within `timeout`.
pub fn exchange(addr: SocketAddr, request: &[u8], timeout: Duration) -> io::Result<Answer> {
    let mut stream = connect(addr, timeout)?;
    stream.write_all(request)?;
    read_answer(&mut stream)
}

/// `GET path` from a new client; the answer and how long it took.
pub fn get(addr: SocketAddr, path: &str, timeout: Duration) -> (io::Result<Answer>, Duration) {
    let start = Instant::now();
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n");
    let answer = exchange(addr, request.as_bytes(), timeout);
    (answer, start.elapsed())
}

/// Opens `n` connections that send nothing.
pub fn idle(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    (0..n)
        .filter_map(|_| connect(addr, Duration::from_secs(5)).ok())
        .collect()
}

/// Opens `n` connections that send the start of a head and stop there
/// (a slowloris client adds a byte now and then: see [`trickle`]).
pub fn slowloris(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut out = Vec::new();
    for _ in 0..n {
        if let Ok(mut s) = connect(addr, Duration::from_secs(5)) {
            if s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nX-A: ")
                .is_ok()
            {
                out.push(s);
            }
        }
    }
    out
}

/// Sends one more header byte on each slowloris connection; returns how
/// many still took it.
pub fn trickle(conns: &mut [TcpStream]) -> usize {
    conns
        .iter_mut()
        .map(|s| s.write_all(b"a"))
        .filter(Result::is_ok)
        .count()
}

/// Opens `n` connections that declare a 4 KiB body and send one byte.
pub fn stalled(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut out = Vec::new();
    for _ in 0..n {
        if let Ok(mut s) = connect(addr, Duration::from_secs(5)) {
            let head = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4096\r\n\r\nx";
            if s.write_all(head).is_ok() {
                out.push(s);
            }
        }
    }
    out
}

/// Sends `n` requests declaring a 100,000,000-byte body (and the first
/// 64 KiB of it), each from its own connection, and reads their answers;
/// returns the statuses (0 for no answer).
pub fn oversized(addr: SocketAddr, n: usize) -> Vec<u16> {
    let mut conns = Vec::new();
    for _ in 0..n {
        if let Ok(mut s) = connect(addr, Duration::from_secs(10)) {
            let head = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n";
            let sent = s.write_all(head).and_then(|()| {
                s.set_nonblocking(true)?;
                // As much of the body as the socket takes at once.
                let _ = s.write(&[b'x'; 64 * 1024]);
                s.set_nonblocking(false)
            });
            if sent.is_ok() {
                conns.push(s);
            }
        }
    }
    let mut statuses: Vec<u16> = conns
        .iter_mut()
        .map(|s| read_answer(s).map_or(0, |a| a.status))
        .collect();
    statuses.resize(n, 0);
    statuses
}

/// Starts `n` requests to `GET /sleep?ms=MS` (slow handlers), each in a
/// thread that reads its answer; join them for the statuses.
pub fn slow(addr: SocketAddr, n: usize, ms: u64) -> Vec<thread::JoinHandle<u16>> {
    (0..n)
        .map(|_| {
            thread::spawn(move || {
                let timeout = Duration::from_millis(ms) + Duration::from_secs(30);
                get(addr, &format!("/sleep?ms={ms}"), timeout)
                    .0
                    .map_or(0, |a| a.status)
            })
        })
        .collect()
}

/// The combined load, by number of clients of each kind.
#[derive(Clone, Copy, Debug)]
pub struct Load {
    pub idle: usize,
    pub slowloris: usize,
    pub stalled: usize,
    pub oversized: usize,
    pub slow: usize,
    pub slow_ms: u64,
    /// `/health` requests measured while the load is in place.
    pub probes: usize,
}

impl Load {
    /// The load of issue 8's target.
    pub const TARGET: Load = Load {
        idle: 1000,
        slowloris: 200,
        stalled: 100,
        oversized: 500,
        slow: 40,
        slow_ms: 8000,
        probes: 50,
    };
}

/// What [`combined`] measured.
#[derive(Debug, Default)]
pub struct Figures {
    /// Latency of each `/health` from a new client under load (failed
    /// ones count as their timeout).
    pub health: Vec<Duration>,
    /// `/health` answered 200.
    pub health_ok: usize,
    /// Statuses of the oversized requests: how many were 413.
    pub oversized_413: usize,
    /// Slow requests answered 200.
    pub slow_ok: usize,
    pub fds_before: usize,
    pub fds_during: usize,
    pub fds_after: usize,
    pub threads_before: usize,
    pub threads_during: usize,
    pub threads_after: usize,
    /// Time from the hostile clients leaving to the server holding no
    /// more descriptors than before, plus one per slow request still in
    /// its handler, and no more threads.
    pub settle: Duration,
    /// The server's counters at the end.
    pub stats: String,
}

impl Figures {
    /// The `p`-th percentile (0..=100) of the `/health` latencies.
    pub fn percentile(&self, p: usize) -> Duration {
        let mut v = self.health.clone();
        v.sort();
        v.get((v.len().saturating_sub(1)) * p / 100)
            .copied()
            .unwrap_or_default()
    }
}

/// Raises this process's soft descriptor limit to its hard limit (the
/// clients of a large load need more than 1024).
pub fn raise_nofile() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

/// Runs `load` against `server` and measures.
pub fn combined(server: &mut ServerProcess, load: Load) -> Figures {
    let addr = server.addr;
    let mut f = Figures {
        fds_before: server.fds(),
        threads_before: server.threads(),
        ..Figures::default()
    };
    let slow = slow(addr, load.slow, load.slow_ms);
    let held_idle = idle(addr, load.idle);
    let mut loris = slowloris(addr, load.slowloris);
    let held_stalled = stalled(addr, load.stalled);
    let oversized = thread::spawn(move || oversized(addr, load.oversized));
    let probe_timeout = Duration::from_secs(5);
    for i in 0..load.probes {
        if i % 5 == 0 {
            trickle(&mut loris);
        }
        let (answer, took) = get(addr, "/health", probe_timeout);
        if answer.is_ok_and(|a| a.status == 200) {
            f.health_ok += 1;
            f.health.push(took);
        } else {
            f.health.push(probe_timeout);
        }
        if i == load.probes / 2 {
            f.fds_during = server.fds();
            f.threads_during = server.threads();
        }
        thread::sleep(Duration::from_millis(20));
    }
    f.oversized_413 = oversized
        .join()
        .map_or(0, |s| s.iter().filter(|&&s| s == 413).count());
    drop(held_idle);
    drop(loris);
    drop(held_stalled);
    // The slow requests still hold their connections until they end.
    let left = Instant::now();
    wait_until(Duration::from_secs(30), || {
        server.fds() <= f.fds_before + load.slow && server.threads() <= f.threads_before
    });
    f.settle = left.elapsed();
    f.slow_ok = slow
        .into_iter()
        .filter_map(|h| h.join().ok())
        .filter(|&s| s == 200)
        .count();
    wait_until(Duration::from_secs(30), || {
        server.fds() <= f.fds_before && server.threads() <= f.threads_before
    });
    f.fds_after = server.fds();
    f.threads_after = server.threads();
    f.stats = server.stats();
    f
}

/// Shuts the write side of a client and reads until the server closes:
/// whether it closed within `timeout`.
pub fn closed_within(stream: &mut TcpStream, timeout: Duration) -> bool {
    let _ = stream.set_read_timeout(Some(timeout));
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
    false
}

/// Shuts both sides of `stream`, ignoring errors.
pub fn hang_up(stream: &TcpStream) {
    let _ = stream.shutdown(Shutdown::Both);
}
