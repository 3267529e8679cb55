//! Remote deploy (issue 14): sources by URL with a digest, uploads, and
//! `deploy --address`, against a heart that cannot see the client's files,
//! archives that try to write outside the instance directory, and `deploy
//! --replace`, alone and behind a controller that switches a router on the
//! heart's reports while clients poll through it.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::Duration;

use serde_json::{json, Value};

use self::switch::{epoch, Controller, Front, Poll, Pollers, Report, Route};
use crate::util::heart::{shell_instance, LONG};
use crate::util::http::Request;
use crate::util::{exited_with, run, wait_until, Dir, TestHeart, HEART};

mod switch;

/// A `.tar.gz` of `dir` made by GNU tar, as an operator would make it.
fn tar_gz(dir: &Path, out: &Path) -> Vec<u8> {
    let status = Command::new("tar")
        .arg("czf")
        .arg(out)
        .arg("-C")
        .arg(dir)
        .arg(".")
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::read(out).unwrap()
}

/// The SHA-256 of `bytes`, by `sha256sum`.
fn sha256(path: &Path) -> String {
    let out = run(Command::new("sha256sum").arg(path));
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// Serves `body` with `status` to every request on 127.0.0.1, in a thread
/// that ends with the test process; its base URL.
fn serve(status: u16, body: Vec<u8>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut stream = stream;
            let mut head = [0u8; 4096];
            let _ = stream.read(&mut head);
            let _ = write!(
                stream,
                "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(&body);
        }
    });
    format!("http://127.0.0.1:{port}")
}

/// An application directory the shell runtime can run.
fn app(dir: &Dir) -> std::path::PathBuf {
    dir.write("app/hello.txt", "hello\n");
    dir.join("app")
}

fn body_from(id: &str, source: &str, sha: Option<&str>) -> Value {
    let mut body = shell_instance(id, Path::new(source), json!({"launch_command": "sleep 60"}));
    body["standalone"] = json!(true);
    if let Some(sha) = sha {
        body["source_sha256"] = json!(sha);
    }
    body
}

#[test]
fn a_source_by_url_is_checked_by_its_digest_and_each_failure_says_why() {
    let heart = TestHeart::serve("deploy-url", &[]);
    let dir = Dir::new("deploy-url-files");
    let archive = dir.join("app.tar.gz");
    let bytes = tar_gz(&app(&dir), &archive);
    let digest = sha256(&archive);
    let url = format!("{}/app.tar.gz", serve(200, bytes));

    let answer = heart.register(body_from("good", &url, Some(&digest)));
    assert_eq!(answer.status, 201, "{answer:?}");
    assert!(heart.data().join("instances/good/hello.txt").is_file());
    // The download is not kept.
    assert_eq!(
        std::fs::read_dir(heart.data().join("uploads"))
            .unwrap()
            .count(),
        0
    );

    let wrong = "0".repeat(64);
    let answer = heart.register(body_from("bad-digest", &url, Some(&wrong)));
    assert_eq!(answer.status, 422, "{answer:?}");
    let error = answer.json()["error"].as_str().unwrap().to_string();
    assert!(error.contains(&digest) && error.contains(&wrong), "{error}");

    let missing = format!("{}/nope.tar.gz", serve(404, b"no".to_vec()));
    let answer = heart.register(body_from("not-found", &missing, None));
    assert_eq!(answer.status, 422, "{answer:?}");
    assert!(answer.body.contains("404"), "{answer:?}");

    let not_gzip = format!("{}/x.tar.gz", serve(200, b"plain text".to_vec()));
    let answer = heart.register(body_from("not-gzip", &not_gzip, None));
    assert_eq!(answer.status, 422, "{answer:?}");
    assert!(answer.body.contains("gzip"), "{answer:?}");

    let answer = heart.register(body_from("tls", "https://example.invalid/x.tar.gz", None));
    assert_eq!(answer.status, 422, "{answer:?}");
    assert!(answer.body.contains("only http://"), "{answer:?}");

    for id in ["bad-digest", "not-found", "not-gzip", "tls"] {
        assert_eq!(
            heart.call("GET", &format!("/instances/{id}"), None).status,
            404
        );
        assert!(!heart.data().join("instances").join(id).exists());
    }
}

#[test]
fn an_upload_is_used_once_and_archives_never_write_outside() {
    let heart = TestHeart::serve("deploy-upload", &[]);
    let dir = Dir::new("deploy-upload-files");
    let archive = dir.join("app.tar.gz");
    let bytes = tar_gz(&app(&dir), &archive);
    let answer = Request::new("POST", "/uploads")
        .token(Some(heart.token()))
        .body(&bytes)
        .call(heart.addr());
    assert_eq!(answer.status, 201, "{answer:?}");
    let upload = answer.json();
    assert_eq!(upload["size"], bytes.len());
    assert_eq!(upload["sha256"], sha256(&archive));
    let source = format!("upload:{}", upload["upload"].as_str().unwrap());
    assert_eq!(heart.register(body_from("up", &source, None)).status, 201);
    // Used once.
    let again = heart.register(body_from("up2", &source, None));
    assert_eq!(again.status, 422, "{again:?}");

    // Not gzip: refused, nothing kept.
    let answer = Request::new("POST", "/uploads")
        .token(Some(heart.token()))
        .body(b"not an archive")
        .call(heart.addr());
    assert_eq!(answer.status, 422, "{answer:?}");

    // An archive whose member climbs out is refused, naming it, and
    // writes nothing outside.
    let evil = dir.mkdir("evil");
    std::fs::write(evil.join("x"), "planted").unwrap();
    let sentinel = heart.data().join("instances/x");
    let evil_archive = dir.join("evil.tar.gz");
    let status = Command::new("tar")
        .arg("czf")
        .arg(&evil_archive)
        .arg("-C")
        .arg(&evil)
        .args(["--transform", "s,^x$,../x,", "x"])
        .status()
        .unwrap();
    assert!(status.success());
    let answer = heart.register(body_from("evil", evil_archive.to_str().unwrap(), None));
    assert_eq!(answer.status, 422, "{answer:?}");
    assert!(answer.body.contains("../x"), "{answer:?}");
    assert!(!sentinel.exists(), "the archive wrote outside");
    assert!(!heart.data().join("instances/evil").exists());
}

#[test]
fn deploy_with_an_address_uploads_what_the_heart_cannot_see() {
    let heart = TestHeart::serve("deploy-remote", &[]);
    let dir = Dir::new("deploy-remote-app");
    dir.write("app/hello.txt", "hello\n");
    dir.write("app/secret.key", "not for the node\n");
    dir.write("app/.pmignore", "*.key\n");
    dir.write(
        "app/paasmaker.json",
        json!({
            "application": {"name": "remote"},
            "runtime": {"name": "shell", "version": "1",
                        "parameters": {"launch_command": "sleep 60"}},
            "standalone": true
        })
        .to_string(),
    );
    // No --data-dir: the client knows the heart only by address and token.
    let out = run(Command::new(HEART)
        .arg("deploy")
        .arg(dir.join("app"))
        .args([
            "--id",
            "remote",
            "--address",
            heart.addr(),
            "--token",
            heart.token(),
        ])
        .current_dir(&dir.path));
    exited_with(&out, 0, "deploy --address");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("uploaded"), "{stderr}");
    assert_eq!(heart.state("remote"), "RUNNING");
    let copy = heart.data().join("instances/remote");
    assert!(copy.join("hello.txt").is_file());
    assert!(
        !copy.join("secret.key").exists(),
        ".pmignore was not honoured"
    );
}

/// Writes a manifest of application `replaced` that runs `command`.
fn replaceable(dir: &Dir, command: &str) {
    dir.write(
        "app/paasmaker.json",
        json!({
            "application": {"name": "replaced"},
            "runtime": {"name": "shell", "version": "1",
                        "parameters": {"launch_command": command, "standalone_wait": 0.2}},
            "standalone": true
        })
        .to_string(),
    );
}

#[test]
fn deploy_replace_starts_the_new_before_removing_the_old_and_keeps_it_on_failure() {
    let heart = TestHeart::serve("deploy-replace", &[]);
    let dir = Dir::new("deploy-replace-app");
    let deploy = |args: &[&str]| {
        heart.client(&[&["deploy", dir.join("app").to_str().unwrap()], args].concat())
    };
    replaceable(&dir, "sleep 60");
    exited_with(&deploy(&[]), 0, "first deploy");
    let ids = |heart: &TestHeart| -> Vec<String> {
        let list = heart.call("GET", "/instances", None).json();
        list["instances"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["instance_id"].as_str().unwrap().to_string())
            .collect()
    };
    let first = ids(&heart);
    assert_eq!(first.len(), 1);

    exited_with(&deploy(&["--replace"]), 0, "deploy --replace");
    let second = ids(&heart);
    assert_eq!(second.len(), 1, "{second:?}");
    assert_ne!(second, first);
    assert_eq!(heart.state(&second[0]), "RUNNING");

    // A replacement that cannot start leaves the running one alone.
    replaceable(&dir, "/nonexistent/program");
    let out = deploy(&["--replace"]);
    assert_ne!(out.status.code(), Some(0), "a failed replacement succeeded");
    assert_eq!(ids(&heart), second);
    assert_eq!(heart.state(&second[0]), "RUNNING");
}

#[test]
fn a_50_mb_upload_is_streamed_to_disk_not_held_in_memory() {
    let heart = TestHeart::serve("deploy-big", &[]);
    let dir = Dir::new("deploy-big-files");
    let big = dir.join("big.tar.gz");
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "head -c 50000000 /dev/urandom | gzip -1 > {}",
            big.display()
        ))
        .status()
        .unwrap();
    assert!(status.success());
    let bytes = std::fs::read(&big).unwrap();
    let answer = Request::new("POST", "/uploads")
        .token(Some(heart.token()))
        .body(&bytes)
        .call(heart.addr());
    assert_eq!(answer.status, 201, "{answer:?}");
    assert_eq!(answer.json()["size"], bytes.len());
    // The heart's peak resident memory over its whole life.
    let status = std::fs::read_to_string(format!("/proc/{}/status", heart.pid())).unwrap();
    let peak_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    assert!(peak_kib < 30 * 1024, "peak RSS {peak_kib} KiB");
}

/// A graceful web application: `python3 server.py PORT VERSION MARK`
/// answers every `GET` with VERSION after 20 ms (so that some requests are
/// in flight whenever it is stopped). On SIGTERM it writes the time to
/// MARK and stops accepting (within 10 ms): it takes the connections the
/// kernel has accepted already, closes its listening socket (a connection
/// after that is refused), finishes every request in flight and exits 0.
const GRACEFUL_SERVER_PY: &str = r#"
import errno, http.server, signal, socket, sys, time
port, version, mark = int(sys.argv[1]), sys.argv[2].encode(), sys.argv[3]

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        time.sleep(0.02)
        self.send_response(200)
        self.send_header("Content-Length", str(len(version)))
        self.end_headers()
        self.wfile.write(version)
    def log_message(self, *args):
        pass

class Server(http.server.ThreadingHTTPServer):
    daemon_threads = False

deadline = time.time() + 10
while True:
    try:
        server = Server(("127.0.0.1", port), Handler)
        break
    except OSError as e:
        if e.errno != errno.EADDRINUSE or time.time() > deadline:
            raise
        time.sleep(0.05)

stopping = []
def on_term(signum, frame):
    with open(mark, "w") as f:
        f.write(repr(time.time()))
    stopping.append(True)
signal.signal(signal.SIGTERM, on_term)

server.socket.settimeout(0.01)
while not stopping:
    try:
        conn, addr = server.socket.accept()
    except socket.timeout:
        continue
    server.process_request(conn, addr)
server.socket.setblocking(False)
while True:
    try:
        conn, addr = server.socket.accept()
    except BlockingIOError:
        break
    conn.setblocking(True)
    server.process_request(conn, addr)
server.server_close()
"#;

/// How long the fake controller takes to switch its route.
const ROUTE_DELAY: Duration = Duration::from_millis(300);
/// Polls each version must answer, so that the test cannot pass on none.
const ENOUGH: usize = 30;

/// The ids of application `name` on the heart.
fn ids_of(heart: &TestHeart, name: &str) -> Vec<String> {
    let list = heart.call("GET", "/instances", None).json();
    list["instances"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["application"]["name"] == name)
        .map(|v| v["instance_id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn deploy_replace_behind_a_controller_that_switches_routes_fails_no_request() {
    let dir = Dir::new("deploy-switch-app");
    let route = Route::default();
    let mut heart = TestHeart::new("deploy-switch");
    let controller = Controller::start(
        "switched",
        heart.data().join("token"),
        route.clone(),
        ROUTE_DELAY,
    );
    heart.args(&["--pacemaker", &controller.url()]).spawn();
    let front = Front::start(route.clone());
    dir.write("app/server.py", GRACEFUL_SERVER_PY);
    let mark = |version: &str| dir.join(format!("{version}.sigterm"));
    let manifest = |command: Value| {
        dir.write(
            "app/paasmaker.json",
            json!({
                "application": {"name": "switched"},
                "runtime": {"name": "shell", "version": "1",
                            "parameters": {"launch_command": command}},
                "health_check": {"type": "http", "path": "/"}
            })
            .to_string(),
        );
    };
    let version = |v: &str| {
        manifest(json!(["python3", "server.py", "{port}", v, mark(v)]));
    };
    let deploy = |args: &[&str]| {
        heart.client(&[&["deploy", dir.join("app").to_str().unwrap()], args].concat())
    };

    version("v1");
    exited_with(&deploy(&[]), 0, "first deploy");
    let old = ids_of(&heart, "switched");
    assert_eq!(old.len(), 1, "{old:?}");
    wait_until(LONG, "the controller to route to v1", || route.port() != 0);
    let pollers = Pollers::start(&front.addr(), 2);
    wait_until(LONG, "polls answered by v1", || {
        pollers.answered_by("v1") >= ENOUGH
    });

    version("v2");
    exited_with(&deploy(&["--replace"]), 0, "deploy --replace");
    let new = ids_of(&heart, "switched");
    assert_eq!(new.len(), 1, "{new:?}");
    assert_ne!(new, old);
    let (old, new) = (&old[0], &new[0]);
    wait_until(LONG, "a report without the old instance", || {
        controller
            .reports()
            .last()
            .is_some_and(|r| !r.instances.contains_key(old))
    });
    wait_until(LONG, "polls answered by v2", || {
        pollers.answered_by("v2") >= ENOUGH
    });

    let reports = controller.reports();
    let switches = controller.switches();
    let context = || {
        format!(
            "reports: {reports:#?}\nswitches: {switches:#?}\nheart stderr:\n{}",
            heart.stderr()
        )
    };
    // Every poll through the switch answered, by v1 or by v2.
    let polls = pollers.polls();
    let (v1, v2) = check_polls(&polls, &context);
    assert!(v1 >= ENOUGH && v2 >= ENOUGH, "v1 {v1}, v2 {v2}");

    // The controller heard the new instance RUNNING, with the old one
    // still RUNNING, before it heard of the old one stopped or gone.
    let first = |pred: &dyn Fn(&Report) -> bool| reports.iter().position(pred);
    let new_running = first(&|r| r.instances.get(new).is_some_and(|s| s == "RUNNING"))
        .unwrap_or_else(|| panic!("no report of {new} RUNNING\n{}", context()));
    let old_up = first(&|r| r.instances.get(old).is_some_and(|s| s == "RUNNING"))
        .unwrap_or_else(|| panic!("no report of {old} RUNNING\n{}", context()));
    let old_gone = reports[old_up..]
        .iter()
        .position(|r| r.instances.get(old).map_or(true, |s| s != "RUNNING"))
        .map(|i| i + old_up);
    assert_eq!(reports[new_running].path, "/node/update");
    assert_eq!(
        reports[new_running].instances.get(old).map(String::as_str),
        Some("RUNNING"),
        "{}",
        context()
    );
    assert!(old_gone.is_some_and(|i| i > new_running), "{}", context());

    // The old instance got its SIGTERM only after the controller had
    // switched the route to the new one and begun to answer the report.
    let switch = switches
        .iter()
        .find(|s| &s.instance == new)
        .unwrap_or_else(|| panic!("no switch to {new}\n{}", context()));
    assert_eq!(
        Some(u64::from(switch.port)),
        heart.show(new)["port"].as_u64()
    );
    let sigterm: f64 = std::fs::read_to_string(mark("v1"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let gap = sigterm - epoch(switch.answering);
    let drained = polls
        .iter()
        .filter(|p| p.answer.as_deref() == Ok("v1") && epoch(p.ended) > sigterm)
        .count();
    eprintln!(
        "v1 got SIGTERM {:.1} ms after the controller answered the switch to v2; {drained} of its \
         answers came after its SIGTERM",
        gap * 1000.0
    );
    assert!(
        gap > 0.0,
        "SIGTERM {gap:.4} s after the switch\n{}",
        context()
    );

    // A replacement that cannot start: the controller never routes to it
    // and v2 keeps answering.
    manifest(json!(["/nonexistent/program"]));
    let out = deploy(&["--replace"]);
    assert_ne!(out.status.code(), Some(0), "a failed replacement succeeded");
    assert_eq!(ids_of(&heart, "switched"), std::slice::from_ref(new));
    assert_eq!(heart.state(new), "RUNNING");
    wait_until(LONG, "polls answered by v2 after the failure", || {
        pollers.answered_by("v2") >= v2 + ENOUGH
    });
    check_polls(&pollers.finish(), &|| {
        format!("after the failed replacement\n{}", context())
    });
    assert!(!mark("v2").exists(), "v2 was stopped");
    assert_eq!(controller.switches().len(), 2, "{}", context());
}

/// Checks that every poll was answered by v1 or v2; how many by each.
fn check_polls(polls: &[Poll], context: &dyn Fn() -> String) -> (usize, usize) {
    let failed: Vec<String> = polls
        .iter()
        .filter_map(|p| {
            let error = p.answer.as_ref().err()?;
            Some(format!("{:.3}: {error}", epoch(p.at)))
        })
        .collect();
    let count = |v: &str| {
        polls
            .iter()
            .filter(|p| p.answer.as_deref() == Ok(v))
            .count()
    };
    let (v1, v2) = (count("v1"), count("v2"));
    eprintln!(
        "{} polls: {v1} answered by v1, {v2} by v2, {} failed",
        polls.len(),
        failed.len()
    );
    assert!(
        failed.is_empty(),
        "{} failed polls, the first:\n{}\n{}",
        failed.len(),
        failed[..failed.len().min(20)].join("\n"),
        context()
    );
    assert_eq!(v1 + v2, polls.len(), "{}", context());
    (v1, v2)
}
