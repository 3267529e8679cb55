//! Benchmarks of `pm-heart serve` against the release binaries
//! (`cargo bench --bench heart`), state on tmpfs (`/dev/shm` when it
//! exists):
//!
//! 1. start: `POST /instances/ID/start` until the answer (RUNNING) for an
//!    application that binds at once: the heart's own overhead, including
//!    launching `pm-supervisor`;
//! 2. stop: `POST /instances/ID/stop` until the answer (STOPPED);
//! 3. `GET /instances` latency (100 instances) under load from 4 client
//!    threads;
//! 4. RSS of the heart with 1,000 registered instances;
//! 5. reconciliation: 500 running instances, `kill -9` of the heart, time
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

use util::heart::shell_instance;
use util::ports::PortBlock;
use util::{alive, pid_in, wait_until, Dir, TestHeart, SUPERVISOR};

const TIMEOUT: Duration = Duration::from_secs(60);

const USAGE: &str = "usage: cargo bench --bench heart [-- NAME...]

Runs the benchmarks whose name contains a NAME (all without one):
start (start and stop, and the bare supervisor baseline), list, rss,
reconcile.";

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
    // name contains NAME: start, list, rss, reconcile.
    let filter = args[1..].iter().find(|a| !a.starts_with("--")).cloned();
    let wanted = |name: &str| filter.as_deref().map_or(true, |f| name.contains(f));
    if wanted("start") {
        start_stop();
    }
    if wanted("list") {
        list_latency();
    }
    if wanted("rss") {
        rss_of_registered();
    }
    if wanted("reconcile") {
        reconcile();
    }
}

/// The application: binds 127.0.0.1:PORT and answers `ok` to anything.
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
    }
}

/// A running heart on tmpfs, with an empty application directory `app`.
fn heart(name: &str) -> (TestHeart, PathBuf) {
    let dir = Dir::on_tmpfs(&format!("bench-heart-{name}"));
    dir.write("app/index.html", "ok\n");
    let app = dir.join("app");
    let mut heart = TestHeart::in_dir(dir);
    heart.spawn();
    (heart, app)
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

fn summary(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    println!(
        "{name:<44} n={:<5} p50 {:>10}  p99 {:>10}  min {:>10}",
        samples.len(),
        ms(percentile(&samples, 0.5)),
        ms(percentile(&samples, 0.99)),
        ms(samples[0])
    );
}

fn start_stop() {
    let (heart, app) = heart("start-stop");
    let exe = std::env::current_exe().unwrap();
    let body = shell_instance(
        "web",
        &app,
        json!({"launch_command": format!("{} app %(port)d", exe.display())}),
    );
    let answer = heart.register(body);
    assert_eq!(answer.status, 201, "{answer:?}");
    let mut starts = Vec::new();
    let mut stops = Vec::new();
    for _ in 0..50 {
        let t = Instant::now();
        let answer = heart.start("web");
        starts.push(t.elapsed());
        assert_eq!(answer.status, 200, "{answer:?}");
        let t = Instant::now();
        let answer = heart.stop("web");
        stops.push(t.elapsed());
        assert_eq!(answer.status, 200, "{answer:?}");
    }
    summary("start → RUNNING (app binds at once)", starts);
    summary("stop → STOPPED", stops);
    drop(heart);
    baseline(&exe);
}

/// The same launch without the heart: write a control file, run
/// `pm-supervisor --detach`, poll (busy) until the application answers;
/// then SIGTERM the supervisor and wait until it is gone. The difference
/// to the figures above is the heart's own overhead.
fn baseline(exe: &Path) {
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
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(t.elapsed() < TIMEOUT, "baseline application never answered");
        }
        starts.push(t.elapsed());
        let pid = pid_in(&pidfile, TIMEOUT);
        kill(Pid::from_raw(pid), Signal::SIGTERM).unwrap();
        wait_until(TIMEOUT, "the supervisor to stop", || !alive(pid));
    }
    summary("baseline: bare pm-supervisor launch → answer", starts);
}

fn list_latency() {
    let (heart, app) = heart("list");
    for n in 0..100 {
        register_standalone(&heart, &format!("i{n}"), &app, "sleep 1000");
    }
    let stop = AtomicBool::new(false);
    let mut samples = Vec::new();
    thread::scope(|scope| {
        for _ in 0..3 {
            scope.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    ok(&heart, "GET", "/instances");
                }
            });
        }
        let began = Instant::now();
        while began.elapsed() < Duration::from_secs(3) {
            let t = Instant::now();
            let answer = heart.call("GET", "/instances", None);
            samples.push(t.elapsed());
            assert_eq!(answer.status, 200);
        }
        stop.store(true, Ordering::Relaxed);
    });
    summary("GET /instances, 100 instances, 4 clients", samples);
}

fn rss_kib(pid: i32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn rss_of_registered() {
    let (heart, app) = heart("rss");
    let idle = rss_kib(heart.pid());
    let began = Instant::now();
    for n in 0..1000 {
        register_standalone(&heart, &format!("r{n}"), &app, "sleep 1000");
    }
    let took = began.elapsed();
    let list = ok(&heart, "GET", "/instances");
    println!(
        "{:<44} {} KiB idle, {} KiB with 1,000 ({} registers in {:.1} s, list {} KiB)",
        "RSS of the heart",
        idle,
        rss_kib(heart.pid()),
        1000,
        took.as_secs_f64(),
        list.len() / 1024
    );
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
