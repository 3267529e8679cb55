//! The scale benchmark: the per-operation figures of one heart as it fills
//! with 0, 1,000 and 5,000 registered instances, and then with 5,000
//! unrelated TCP connections open on loopback besides.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use nix::sys::resource::{getrlimit, setrlimit, Resource};
use serde_json::{json, Value};

use super::util::heart::shell_instance;
use super::util::{wait_until, TestHeart};
use super::{baseline, fill, heart, list_load, ms, register_standalone, summary, TIMEOUT};

/// Timed runs per figure and step.
const RUNS: usize = 30;

pub(super) fn run() {
    let exe = std::env::current_exe().unwrap();
    let bind = baseline(&exe);
    let (heart, app) = heart("scale");
    let body = shell_instance(
        "web",
        &app,
        json!({"launch_command": format!("{} app %(port)d", exe.display())}),
    );
    let answer = heart.register(body);
    assert_eq!(answer.status, 201, "{answer:?}");
    let mut registered = 0;
    let mut fresh = 0;
    for (step, instances, sockets) in [
        ("0 instances", 0, false),
        ("1,000 instances", 1000, false),
        ("5,000 instances", 5000, false),
        ("5,000 instances + 5,000 sockets", 5000, true),
    ] {
        if instances > registered {
            let took = fill(&heart, &app, "f", registered, instances);
            println!(
                "(registered {} more in {:.1} s)",
                instances - registered,
                took.as_secs_f64()
            );
            registered = instances;
        }
        let _open = sockets.then(|| open_connections(2500));
        println!("[{step}]");
        let start = step_figures(&heart);
        let mut registers = Vec::new();
        for _ in 0..RUNS {
            let id = format!("n{fresh}");
            fresh += 1;
            let t = Instant::now();
            register_standalone(&heart, &id, &app, "sleep 1000");
            registers.push(t.elapsed());
        }
        summary("  register", registers);
        let lists = list_load(&heart, 4, Duration::from_secs(3));
        summary("  GET /instances, 4 clients", lists);
        println!(
            "  (start minus the application's own launch and bind: {})",
            ms(start.saturating_sub(bind))
        );
    }
}

/// Start, stop and exit report of the instance `web`; returns the p50 of
/// start.
fn step_figures(heart: &TestHeart) -> Duration {
    let mut starts = Vec::new();
    let mut stops = Vec::new();
    let mut reports = Vec::new();
    for n in 0..2 * RUNS {
        let t = Instant::now();
        let answer = heart.start("web");
        starts.push(t.elapsed());
        assert_eq!(answer.status, 200, "{answer:?}");
        if n % 2 == 0 {
            let t = Instant::now();
            let answer = heart.stop("web");
            stops.push(t.elapsed());
            assert_eq!(answer.status, 200, "{answer:?}");
            continue;
        }
        // The exit report, sent by the bench with the key of the store:
        // then the application is told to exit, its supervisor's own
        // report finds the key spent, and the supervisor exits.
        let record: Value =
            serde_json::from_slice(&std::fs::read(heart.data().join("store/web.json")).unwrap())
                .unwrap();
        let key = record["exit_key"]
            .as_str()
            .expect("an exit key")
            .to_string();
        let port = record["port"].as_u64().expect("a port") as u16;
        let t = Instant::now();
        let status = raw_exit_report(heart.addr(), &format!("/instance/exit/web/{key}/0"));
        reports.push(t.elapsed());
        assert_eq!(status, 200, "exit report");
        let _ = super::util::http::get(port, "/exit");
        wait_until(TIMEOUT, "the application to let go of its port", || {
            TcpListener::bind(("127.0.0.1", port)).is_ok()
        });
        let supervisor = record["supervisor"]["pid"].as_i64().unwrap_or(0) as i32;
        wait_until(TIMEOUT, "the supervisor to exit", || {
            supervisor == 0 || !super::util::alive(supervisor)
        });
    }
    let start = summary("  start → RUNNING", starts);
    summary("  stop → STOPPED", stops);
    summary("  exit report accepted (raw POST)", reports);
    start
}

/// One `POST PATH` on a fresh connection, as the supervisor sends it; the
/// status of the answer.
fn raw_exit_report(addr: &str, path: &str) -> u16 {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_nodelay(true).unwrap();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = Vec::new();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    let _ = stream.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    text.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// `pairs` connected loopback pairs (2 sockets each) and their listener,
/// all open until dropped; raises this process's soft `RLIMIT_NOFILE` to
/// the hard limit first.
fn open_connections(pairs: usize) -> (TcpListener, Vec<(TcpStream, TcpStream)>) {
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let mut all = Vec::with_capacity(pairs);
    for _ in 0..pairs {
        let client = TcpStream::connect(addr).unwrap();
        let (server, _) = listener.accept().unwrap();
        all.push((client, server));
    }
    (listener, all)
}
