//! Benchmarks of `pm-heart serve` against the release binaries
//! (`cargo bench --bench heart`), state on tmpfs (`/dev/shm` when it
//! exists):
//!
//! 1. scale: one heart filled with 0, 1,000 and 5,000 registered (not
//!    started) instances, and then with 5,000 unrelated TCP connections
//!    open on loopback besides; at each step: start (`POST
//!    /instances/ID/start` until the answer, RUNNING, for an application
//!    that binds at once), stop (until STOPPED), the exit report accepted
//!    (the raw `POST /instance/exit/ID/KEY/0` with the key from the store,
//!    until the answer), register (a new instance, until 201) and `GET
//!    /instances` under load from 4 client threads; and, once, the same
//!    application under a bare `pm-supervisor --detach` (the application's
//!    own launch and bind time, to subtract from start);
//! 2. rss: the heart's RSS (peak of `VmRSS`, and `/proc/PID/smaps_rollup`
//!    at the end) with 5,000 registered instances under 10 s of `GET
//!    /instances` from 4 client threads, for each binary in
//!    `PM_BENCH_HEARTS` (colon-separated; default the glibc build cargo
//!    made and `target/x86_64-unknown-linux-musl/release/pm-heart` when it
//!    is built); scale and reconcile run the first binary of
//!    `PM_BENCH_HEARTS` when it is set;
//! 3. reconcile: 500 running instances, `kill -9` of the heart, time
//!    from its start to `listening on` with all 500 RUNNING.
//!
//! The application is this very binary run as `heart app PORT`: a
//! std-only HTTP server that binds at once and answers every request. The
//! hearts are the tests' `TestHeart` (`tests/util/`, included below), each
//! with its own scratch directory on tmpfs and its own port block.

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};

#[path = "../tests/util/mod.rs"]
mod util;

#[path = "heart/scale.rs"]
mod scale;

use util::heart::shell_instance;
use util::ports::PortBlock;
use util::{alive, pid_in, wait_until, Dir, TestHeart, SUPERVISOR};

const TIMEOUT: Duration = Duration::from_secs(60);

const USAGE: &str = "usage: cargo bench --bench heart [-- NAME...]

Runs the benchmarks whose name contains a NAME (all without one):
scale (start, stop, exit report, register and GET /instances at 0, 1,000
and 5,000 instances and with 5,000 sockets open, and the bare supervisor
baseline), rss (PM_BENCH_HEARTS=BIN:BIN selects the binaries), reconcile.";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("app") {
        serve_app(args.get(2).and_then(|p| p.parse().ok()).unwrap_or(0));
        return;
    }
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        return;
    }
    println!(
        "pm-heart benchmarks (release binaries, data on {})",
        Dir::on_tmpfs("probe").path.parent().unwrap().display()
    );

    // `cargo bench --bench heart -- NAME` runs only the benchmarks whose
    // name contains NAME: scale, rss, reconcile.
    let filter = args[1..].iter().find(|a| !a.starts_with("--")).cloned();
    let wanted = |name: &str| filter.as_deref().map_or(true, |f| name.contains(f));
    if wanted("scale") {
        scale::run();
    }
    if wanted("rss") {
        rss_under_load();
    }
    if wanted("reconcile") {
        reconcile();
    }
}

/// The application: binds 127.0.0.1:PORT and answers `ok` to anything;
/// after answering a request for `/exit` it exits 0.
fn serve_app(port: u16) {
    let Ok(listener) = TcpListener::bind(("127.0.0.1", port)) else {
        std::process::exit(1);
    };
    for stream in listener.incoming().flatten() {
        let mut stream = stream;
        let mut buf = [0u8; 4096];
        let mut seen = Vec::new();
        while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
        let _ = stream.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nok\n");
        if seen.starts_with(b"GET /exit ") {
            std::process::exit(0);
        }
    }
}

/// A running heart on tmpfs, with an empty application directory `app`:
/// the first binary of `PM_BENCH_HEARTS` when set, else the cargo-built
/// `pm-heart`.
fn heart(name: &str) -> (TestHeart, PathBuf) {
    let first =
        std::env::var_os("PM_BENCH_HEARTS").and_then(|list| std::env::split_paths(&list).next());
    heart_of(name, first.as_deref())
}

/// [`heart`] running `binary` (the cargo-built `pm-heart` without one).
fn heart_of(name: &str, binary: Option<&Path>) -> (TestHeart, PathBuf) {
    let dir = Dir::on_tmpfs(&format!("bench-heart-{name}"));
    dir.write("app/index.html", "ok\n");
    let app = dir.join("app");
    let mut heart = TestHeart::in_dir(dir);
    if let Some(binary) = binary {
        heart.binary(binary);
    }
    heart.spawn();
    (heart, app)
}

/// Registers the standalone instances `{prefix}{from}` … `{prefix}{to - 1}`
/// (`sleep 1000`, never started) from 4 threads; returns how long it took.
fn fill(heart: &TestHeart, app: &Path, prefix: &str, from: usize, to: usize) -> Duration {
    let began = Instant::now();
    let threads = 4;
    thread::scope(|scope| {
        for t in 0..threads {
            scope.spawn(move || {
                for n in (from + t..to).step_by(threads) {
                    register_standalone(heart, &format!("{prefix}{n}"), app, "sleep 1000");
                }
            });
        }
    });
    began.elapsed()
}

/// `GET /instances` from `clients` threads for `time`; the latencies of
/// every request.
fn list_load(heart: &TestHeart, clients: usize, time: Duration) -> Vec<Duration> {
    let stop = AtomicBool::new(false);
    thread::scope(|scope| {
        let handles: Vec<_> = (0..clients)
            .map(|_| {
                scope.spawn(|| {
                    let mut samples = Vec::new();
                    let began = Instant::now();
                    while began.elapsed() < time && !stop.load(Ordering::Relaxed) {
                        let t = Instant::now();
                        let answer = heart.call("GET", "/instances", None);
                        samples.push(t.elapsed());
                        if answer.status != 200 {
                            stop.store(true, Ordering::Relaxed);
                            panic!("GET /instances: {answer:?}");
                        }
                    }
                    samples
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    })
}

/// The binaries of the rss benchmark: `PM_BENCH_HEARTS` (colon-separated),
/// else the glibc build cargo made and the musl build when it exists.
fn hearts() -> Vec<PathBuf> {
    if let Some(list) = std::env::var_os("PM_BENCH_HEARTS") {
        return std::env::split_paths(&list).collect();
    }
    let musl = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/x86_64-unknown-linux-musl/release/pm-heart");
    let mut all = vec![PathBuf::from(util::HEART)];
    if musl.is_file() {
        all.push(musl);
    }
    all
}

/// Peak RSS of the heart with 5,000 registered instances under 10 s of
/// `GET /instances` from 4 clients, for each binary of [`hearts`].
fn rss_under_load() {
    for binary in hearts() {
        let (heart, app) = heart_of("rss", Some(&binary));
        let pid = heart.pid();
        let idle = rss_kib(pid);
        let took = fill(&heart, &app, "r", 0, 5000);
        let registered = rss_kib(pid);
        let done = AtomicBool::new(false);
        let peak = thread::scope(|scope| {
            let watcher = scope.spawn(|| {
                let mut peak = 0;
                while !done.load(Ordering::Relaxed) {
                    peak = peak.max(rss_kib(pid));
                    thread::sleep(Duration::from_millis(20));
                }
                peak
            });
            let samples = list_load(&heart, 4, Duration::from_secs(10));
            done.store(true, Ordering::Relaxed);
            summary("  GET /instances, 5,000 instances, 4 clients", samples);
            watcher.join().unwrap()
        });
        let rollup = fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
        let field = |name: &str| {
            rollup
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
                .unwrap_or(0)
        };
        println!(
            "RSS of {}: {idle} KiB idle, {registered} KiB with 5,000 registered \
             (in {:.1} s), peak {peak} KiB under load (end: Rss {} KiB, Anonymous {} KiB)",
            binary.display(),
            took.as_secs_f64(),
            field("Rss:"),
            field("Anonymous:")
        );
    }
}

/// Registers a standalone instance that runs `command`.
fn register_standalone(heart: &TestHeart, id: &str, app: &Path, command: &str) {
    let mut body = shell_instance(
        id,
        app,
        json!({"launch_command": command, "standalone_wait": 0}),
    );
    body["standalone"] = json!(true);
    let answer = heart.register(body);
    assert_eq!(answer.status, 201, "{answer:?}");
}

/// A request that must answer 200; its body.
fn ok(heart: &TestHeart, method: &str, path: &str) -> String {
    let answer = heart.call(method, path, None);
    assert_eq!(answer.status, 200, "{method} {path}: {answer:?}");
    answer.body
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// Prints p50, p99 and min of `samples`; returns the p50.
fn summary(name: &str, mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    println!(
        "{name:<44} n={:<5} p50 {:>10}  p99 {:>10}  min {:>10}",
        samples.len(),
        ms(percentile(&samples, 0.5)),
        ms(percentile(&samples, 0.99)),
        ms(samples[0])
    );
    percentile(&samples, 0.5)
}

/// The same launch without the heart: write a control file, run
/// `pm-supervisor --detach`, poll (busy) until the application answers;
/// then SIGTERM the supervisor and wait until it is gone. The difference
/// to the figures above is the heart's own overhead.
fn baseline(exe: &Path) -> Duration {
    let dir = Dir::on_tmpfs("bench-heart-baseline");
    let block = PortBlock::new();
    let port = block.low();
    let mut starts = Vec::new();
    for n in 0..50 {
        let control = dir.join("b.json");
        let pidfile = dir.join("b.pid");
        let _ = fs::remove_file(&pidfile);
        let text = json!({
            "instance_id": "b",
            "command": [exe, "app", port.to_string()],
            "cwd": dir.path,
            "environment": {},
            "exit_key": format!("k{n}"),
            "port": 1,
            "report_deadline": 0.1,
            "log_file": dir.join("b.log"),
            "pidfile": pidfile,
            "startflagfile": dir.join("b.start"),
        });
        fs::write(&control, text.to_string()).unwrap();
        let t = Instant::now();
        let status = Command::new(SUPERVISOR)
            .arg("--detach")
            .arg(&control)
            .status()
            .unwrap();
        assert!(status.success());
        // Polled every 100 µs, not busily: on 2 cores a busy poll takes
        // the CPU the supervisor and the application need.
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(t.elapsed() < TIMEOUT, "baseline application never answered");
            thread::sleep(Duration::from_micros(100));
        }
        starts.push(t.elapsed());
        let pid = pid_in(&pidfile, TIMEOUT);
        kill(Pid::from_raw(pid), Signal::SIGTERM).unwrap();
        wait_until(TIMEOUT, "the supervisor to stop", || !alive(pid));
    }
    summary(
        "baseline: bare pm-supervisor launch → answer",
        starts.clone(),
    )
}

fn rss_kib(pid: i32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn reconcile() {
    let (mut heart, app) = heart("reconcile");
    let count = 500;
    for n in 0..count {
        let id = format!("s{n}");
        register_standalone(&heart, &id, &app, "sleep 1000");
        let answer = heart.start(&id);
        assert_eq!(answer.status, 200, "{answer:?}");
    }
    let mut samples = Vec::new();
    for _ in 0..5 {
        // Only the heart dies: its supervisors stay for the next round.
        heart.crash();
        heart.spawn();
        let list: Value = serde_json::from_str(&ok(&heart, "GET", "/instances")).unwrap();
        let instances = list["instances"].as_array().unwrap();
        let running = instances.iter().filter(|i| i["state"] == "RUNNING").count();
        assert_eq!(running, count, "all instances RUNNING after the restart");
        samples.push(heart.ready_after());
    }
    summary("restart → listening, 500 RUNNING reconciled", samples);
}
