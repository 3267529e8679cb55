//! Issue 13, "see what runs", through the real binaries: health checks
//! (a frozen application is found unhealthy and restarted; a check that
//! answers 500 fails the start), `log --follow` across a rotation, the
//! heart's event log, the status fields and `/metrics`. Each test runs its
//! own heart from the one fixture ([`TestHeart`]).

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};

use crate::util::heart::{shell_instance, LONG};
use crate::util::http;
use crate::util::{alive, python_server, wait_for, wait_until, ChildGuard, TestHeart, HEART};

/// The request handler of the test application (a [`python_server`]):
/// answers `GET /bad` with 500 and anything else with 200, and logs each
/// request path to stderr (so, the instance log).
const APP_HANDLER_PY: &str = r#"
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(500 if self.path == "/bad" else 200)
        self.end_headers()
        self.wfile.write(b"ok\n")
"#;

/// A heart that checks every second, with the test application as
/// `app/` in its scratch directory.
fn heart(name: &str) -> TestHeart {
    let heart = TestHeart::serve(&format!("observe-{name}"), &["--check-interval", "1"]);
    heart
        .dir()
        .write("app/server.py", python_server(APP_HANDLER_PY));
    heart
}

/// Registers `id`, an instance of the test application, with the fields
/// of `extra` added.
fn register(heart: &TestHeart, id: &str, extra: Value) {
    let mut body = shell_instance(
        id,
        &heart.dir().join("app"),
        json!({"launch_command": "python3 server.py %(port)d",
               "start_timeout": 20, "stop_timeout": 2}),
    );
    body["application"] = json!({"name": "observed"});
    for (key, value) in extra.as_object().unwrap() {
        body[key] = value.clone();
    }
    let answer = heart.register(body);
    assert_eq!(answer.status, 201, "{answer:?}");
}

/// The heart's event log as it is now.
fn events(heart: &TestHeart) -> String {
    fs::read_to_string(heart.data().join("heart.log")).unwrap_or_default()
}

/// `pm-heart ARGS --data-dir DATA`, not run yet.
fn client(heart: &TestHeart, args: &[&str]) -> Command {
    let mut cmd = Command::new(HEART);
    cmd.args(args).arg("--data-dir").arg(heart.data());
    cmd
}

/// Kills the application of `id` with `signal`; returns its pid.
fn signal_app(heart: &TestHeart, id: &str, signal: Signal) -> i32 {
    let pid = heart.show(id)["app_pid"].as_i64().expect("an app_pid") as i32;
    kill(Pid::from_raw(pid), signal).unwrap();
    pid
}

/// Waits until `id` runs again under a new application pid.
fn wait_restarted(heart: &TestHeart, id: &str, old: i32, within: Duration) -> Value {
    wait_for(within, &format!("{id} to run again"), || {
        let view = heart.show(id);
        (view["state"] == "RUNNING" && view["app_pid"].as_i64().is_some_and(|p| p != old as i64))
            .then_some(view)
    })
}

#[test]
fn a_frozen_application_is_found_unhealthy_and_restarted() {
    let heart = heart("frozen");
    register(
        &heart,
        "frozen",
        json!({"restart": "on-failure",
               "health_check": {"type": "http", "path": "/healthz",
                                "interval": 1, "timeout": 1, "failures": 2}}),
    );
    let answer = heart.start("frozen");
    let (status, view) = (answer.status, answer.json());
    assert_eq!(status, 200, "{view}");
    wait_until(LONG, "a first healthy check", || {
        heart.show("frozen")["health"]["status"] == "healthy"
    });

    let stopped = Instant::now();
    let old = signal_app(&heart, "frozen", Signal::SIGSTOP);
    // interval × failures (2 s) plus the checks' own timeouts (2 s), the
    // first restart's backoff (1 s), the stop and the start: well within
    // 10 s.
    let view = wait_restarted(&heart, "frozen", old, Duration::from_secs(10));
    let took = stopped.elapsed();
    assert_eq!(view["restarts"], 1, "{view}");
    assert_eq!(
        view["last_exit"]["reason"], "health check: GET /healthz timed out after 1 s",
        "{view}"
    );
    assert_eq!(view["last_exit"]["code"], Value::Null, "{view}");
    wait_until(
        Duration::from_secs(5),
        "the frozen application to end",
        || !alive(old),
    );
    let events = events(&heart);
    assert!(
        events.contains(
            "WARNING frozen: health check failed (2/2): GET /healthz timed out after 1 s"
        ),
        "{events}"
    );
    assert!(took < Duration::from_secs(10), "{took:?}");
}

#[test]
fn an_http_check_that_answers_500_fails_the_start() {
    let heart = heart("check500");
    register(
        &heart,
        "bad",
        json!({"health_check": {"type": "http", "path": "/bad", "interval": 1, "failures": 2}}),
    );
    let began = Instant::now();
    let answer = heart.start("bad");
    let (status, answer) = (answer.status, answer.json());
    assert_eq!(status, 500, "{answer}");
    let error = answer["error"].as_str().unwrap();
    assert!(
        error.starts_with("health check: GET /bad answered 500"),
        "{error}"
    );
    assert_eq!(answer["instance"]["state"], "ERROR", "{answer}");
    // Failed at once, not after the 20 s start_timeout.
    assert!(began.elapsed() < Duration::from_secs(15));
    // The application was stopped.
    wait_until(Duration::from_secs(10), "no supervisor left", || {
        !fs::read_dir(heart.data().join("supervisor"))
            .unwrap()
            .flatten()
            .any(|e| e.path().extension().is_some_and(|x| x == "pid"))
    });
}

#[test]
fn log_follow_sees_new_lines_across_a_rotation_and_ends_with_the_instance() {
    let heart = heart("follow");
    register(&heart, "tailed", json!({}));
    let answer = heart.start("tailed");
    let (status, view) = (answer.status, answer.json());
    assert_eq!(status, 200, "{view}");
    let port = view["port"].as_u64().unwrap() as u16;
    let mut follow = client(&heart, &["log", "tailed", "--follow"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = follow.stdout.take().unwrap();
    let mut follow = ChildGuard(follow);
    let (tx, rx) = mpsc::channel::<String>();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut seen = Vec::new();
    let expect = |needle: &str, seen: &mut Vec<String>| {
        let deadline = Instant::now() + Duration::from_secs(15);
        while !seen.iter().any(|l| l.contains(needle)) {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => seen.push(line),
                Err(_) => panic!("{needle} not followed; saw {seen:#?}"),
            }
        }
    };
    let get = |path: &str| {
        let answer = http::get(port, path).expect("the application answers");
        assert_eq!(answer.status, 200, "{answer:?}");
    };
    // The follow starts with the last lines of the log, the supervisor's
    // among them: once one is seen, the follow is in place.
    expect("INFO Started process", &mut seen);
    get("/marker-before-rotation");
    expect("GET /marker-before-rotation", &mut seen);

    // Rotate as the supervisor (or logrotate) does: rename, then a new
    // file. The application still writes to the renamed one.
    let log = heart.data().join("logs/tailed.log");
    fs::rename(&log, heart.data().join("logs/tailed.log.1")).unwrap();
    get("/marker-in-the-old-file");
    expect("GET /marker-in-the-old-file", &mut seen);
    fs::write(&log, "first line of the new file\n").unwrap();
    expect("first line of the new file", &mut seen);

    // Deregistered: the follow ends by itself, with status 0.
    let answer = heart.call("POST", "/instances/tailed/stop", None);
    let (status, body) = (answer.status, answer.body);
    assert_eq!(status, 200, "{body}");
    let answer = heart.call("DELETE", "/instances/tailed", None);
    let (status, body) = (answer.status, answer.body);
    assert_eq!(status, 200, "{body}");
    let exit = wait_for(Duration::from_secs(10), "the follow to end", || {
        follow.0.try_wait().unwrap()
    });
    assert!(exit.success(), "{exit:?}");
}

#[test]
fn the_event_log_records_a_crash_and_its_restart_and_show_has_the_app_pid() {
    let heart = heart("events");
    register(&heart, "crashy", json!({"restart": "on-failure"}));
    let answer = heart.start("crashy");
    let (status, view) = (answer.status, answer.json());
    assert_eq!(status, 200, "{view}");

    // The real application: its command line is the app's, not the
    // supervisor's.
    let pid = view["app_pid"].as_i64().expect("app_pid") as i32;
    assert_ne!(Some(pid as i64), view["pid"].as_i64());
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    assert!(cmdline.contains("server.py"), "{cmdline}");
    assert!(
        view["started_at"].as_str().unwrap().ends_with('Z'),
        "{view}"
    );
    assert_eq!(view["restarts"], 0);
    let shown = heart.show("crashy");
    assert_eq!(shown["app_pid"], pid, "{shown}");
    assert!(shown["memory_bytes"].as_u64().unwrap() > 0, "{shown}");
    assert!(shown["cpu_seconds"].as_f64().is_some(), "{shown}");

    let old = signal_app(&heart, "crashy", Signal::SIGKILL);
    let view = wait_restarted(&heart, "crashy", old, LONG);
    assert_eq!(view["restarts"], 1, "{view}");
    assert_eq!(view["last_exit"]["code"], 137, "{view}");
    let events = events(&heart);
    let order = [
        "INFO crashy: registered",
        "INFO crashy: starting",
        "INFO crashy: running",
        "ERROR crashy: exited with code 137",
        "INFO crashy: restarting in 1 s (attempt 1)",
        "INFO crashy: starting (restart 1)",
    ];
    let mut at = 0;
    for needle in order {
        let found = events[at..]
            .find(needle)
            .unwrap_or_else(|| panic!("{needle:?} missing or out of order in\n{events}"));
        at += found + needle.len();
    }
    for line in events.lines() {
        let stamp = line.split(' ').next().unwrap();
        assert!(stamp.len() == 27 && stamp.ends_with('Z'), "{line}");
    }
    // The same through the client.
    let out = heart.client(&["events", "--tail", "50"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("crashy: starting (restart 1)"));
    let out = heart.client(&["list"]);
    let list = String::from_utf8_lossy(&out.stdout);
    assert!(
        list.lines()
            .next()
            .unwrap()
            .contains("UPTIME  RESTARTS  MEMORY  CPU"),
        "{list}"
    );
}

#[test]
fn metrics_pass_promtool_and_count_the_restarts() {
    let heart = heart("metrics");
    register(&heart, "counted", json!({"restart": "always"}));
    let answer = heart.start("counted");
    let (status, view) = (answer.status, answer.json());
    assert_eq!(status, 200, "{view}");
    let old = signal_app(&heart, "counted", Signal::SIGKILL);
    let view = wait_restarted(&heart, "counted", old, LONG);
    let restarts = view["restarts"].as_u64().unwrap();
    assert!(restarts >= 1, "{view}");

    let answer = heart.call("GET", "/metrics", None);
    let (status, text) = (answer.status, answer.body);
    assert_eq!(status, 200, "{text}");
    let sample = format!(
        "paasmaker_instance_restarts_total{{instance_id=\"counted\",application=\"observed\"}} {restarts}\n"
    );
    assert!(text.contains(&sample), "{sample} not in\n{text}");
    assert!(text
        .contains("paasmaker_instance_up{instance_id=\"counted\",application=\"observed\"} 1\n"));
    assert!(text.contains("paasmaker_heart_requests_total{route=\"/instances/{id}/start\",method=\"POST\",status=\"200\"} 1\n"), "{text}");
    assert!(
        text.contains("paasmaker_heart_start_duration_seconds_count 2\n"),
        "{text}"
    );
    assert!(
        text.contains("paasmaker_heart_resident_memory_bytes "),
        "{text}"
    );

    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus) is needed for this test");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool: {}\n{}{}\n{text}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // Like every route but /health, it needs the token.
    let anonymous = http::Request::get("/metrics").call(heart.addr());
    assert_eq!(anonymous.status, 401, "{anonymous:?}");
}

#[test]
fn a_follow_whose_client_left_frees_its_worker() {
    let heart = heart("follows");
    // Opens `GET /events?follow=1` and reads its status line; the
    // connection stays open while the stream is held.
    let open = || {
        let mut stream = std::net::TcpStream::connect(heart.addr()).unwrap();
        stream.set_read_timeout(Some(LONG)).unwrap();
        write!(
            stream,
            "GET /events?follow=1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\r\n",
            heart.token()
        )
        .unwrap();
        let mut line = String::new();
        BufReader::new(stream.try_clone().unwrap())
            .read_line(&mut line)
            .unwrap();
        let status: u16 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        (status, stream)
    };
    // The eight stream workers, all following.
    let held: Vec<_> = (0..8).map(|_| open()).collect();
    for (status, _) in &held {
        assert_eq!(*status, 200);
    }
    assert_eq!(open().0, 503, "a ninth follow while eight stream");
    drop(held);
    // The clients are gone: their follows end within a poll, and a new
    // one is served.
    wait_until(
        Duration::from_secs(10),
        "a follow to be served again",
        || open().0 == 200,
    );
}
