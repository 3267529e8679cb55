//! `pm-heart serve`: the API, the catalog, exit reports and ports, through
//! the real binaries (failures and restarts are in `recovery.rs`). Each
//! test runs its own [`TestHeart`]: a heart on `127.0.0.1:0` with its own
//! data directory and its own block of instance ports.

use std::collections::HashSet;
use std::fs;
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::util::heart::{shell_instance, LONG};
use crate::util::http::{exchange, fetch, Request, Response};
use crate::util::{
    alive, is_supervisor, wait_for, wait_until, web_server_py, Dir, TestHeart, HEART,
};

/// Writes a source directory with one file and the test web server into
/// the heart's scratch directory, and returns its path.
pub(crate) fn app(heart: &TestHeart) -> PathBuf {
    heart.dir().write("app/hello.txt", "hello from the app\n");
    heart.dir().write("app/server.py", web_server_py());
    heart.dir().join("app")
}

/// The open descriptors of `pid`.
fn descriptors(pid: i32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |fds| fds.count())
}

/// One request to the heart with `token` (or none).
fn request(
    heart: &TestHeart,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &[u8],
) -> Response {
    Request::new(method, path)
        .token(token)
        .body(body)
        .call(heart.addr())
}

pub(crate) fn web_instance(id: &str, source: &Path) -> Value {
    shell_instance(
        id,
        source,
        json!({"launch_command": "python3 server.py %(port)d", "start_timeout": 90}),
    )
}

/// A web instance whose shell writes the application's pid to `app.pid`.
pub(crate) fn web_instance_with_pid(id: &str, source: &Path) -> Value {
    shell_instance(
        id,
        source,
        json!({
            "launch_command": "echo $$ > app.pid; exec python3 server.py {port}",
            "shell": true,
            "start_timeout": 90,
        }),
    )
}

/// A register body for a standalone shell instance.
pub(crate) fn standalone(id: &str, source: &Path, parameters: Value) -> Value {
    let mut body = shell_instance(id, source, parameters);
    body["standalone"] = json!(true);
    body
}

/// A standalone instance that exits with the code written to its FIFO.
fn fifo_instance(id: &str, source: &Path) -> Value {
    let mut body = standalone(
        id,
        source,
        json!({"launch_command": "sh -c 'read c < ctl; exit $c'", "standalone_wait": 0.1}),
    );
    body["startup"] = json!(["rm -f ctl", "mkfifo ctl"]);
    body
}

/// Makes a FIFO instance exit with `code`.
fn make_exit(heart: &TestHeart, id: &str, code: i32) {
    let fifo = heart.data().join("instances").join(id).join("ctl");
    let mut file = wait_for(LONG, "the FIFO to have a reader", || {
        fs::OpenOptions::new()
            .write(true)
            .custom_flags(nix::libc::O_NONBLOCK)
            .open(&fifo)
            .ok()
    });
    writeln!(file, "{code}").unwrap();
}

/// A request that declares a body of 10^14 bytes and sends three.
fn huge_declared(heart: &TestHeart, token: Option<&str>) -> Response {
    let auth = match token {
        Some(token) => format!("Authorization: Bearer {token}\r\n"),
        None => String::new(),
    };
    let head = format!(
        "POST /instances HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 100000000000000\r\n\r\n"
    );
    // The connection may stay open: the answer is read to its length.
    exchange(heart.addr(), head.as_bytes(), b"abc", LONG).expect("an answer")
}

/// True when a socket LISTENs on `port` (from `/proc/net/tcp*`; a connect
/// to a free loopback port could connect to itself).
fn listening(port: u64) -> bool {
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|table| {
        fs::read_to_string(table)
            .unwrap_or_default()
            .lines()
            .skip(1)
            .any(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                fields.len() > 3
                    && fields[3] == "0A"
                    && fields[1]
                        .rsplit_once(':')
                        .and_then(|(_, p)| u64::from_str_radix(p, 16).ok())
                        == Some(port)
            })
    })
}

fn port_answers(port: u64) -> bool {
    TcpStream::connect(("127.0.0.1", port as u16)).is_ok()
}

fn exit_key(heart: &TestHeart, id: &str) -> String {
    heart.catalog()["instances"][id]["exit_key"]
        .as_str()
        .unwrap_or_else(|| panic!("no exit key for {id}"))
        .to_string()
}

#[test]
fn whole_lifecycle_through_the_api() {
    let mut heart = TestHeart::serve("heart-lifecycle", &[]);
    let app = app(&heart);

    let health = request(&heart, "GET", "/health", None, b"");
    assert_eq!(health.status, 200, "{health:?}");
    assert_eq!(health.json()["status"], "ok");
    let runtimes = heart.call("GET", "/runtimes", None);
    assert_eq!(runtimes.json()["shell"], json!(["1"]));

    let answer = heart.register(web_instance("life", &app));
    assert_eq!(answer.status, 201, "{answer:?}");
    let view = answer.json();
    assert_eq!(view["state"], "REGISTERED");
    let port = view["port"].as_u64().unwrap();
    assert!(heart.owns_port(port), "{port}");
    let dir = heart.data().join("instances/life");
    assert!(dir.join("hello.txt").is_file());

    let answer = heart.start("life");
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.json()["state"], "RUNNING");
    assert_eq!(
        fetch(port, "/hello.txt").as_deref(),
        Some("hello from the app\n")
    );
    let list = heart.call("GET", "/instances", None).json();
    assert_eq!(list["instances"][0]["instance_id"], "life");
    assert_eq!(list["instances"][0]["state"], "RUNNING");
    // The app's output reaches the log through the supervisor's copier,
    // a moment after the app wrote it.
    wait_until(LONG, "the request in the log", || {
        let log = heart.call("GET", "/instances/life/log?tail=50", None);
        assert_eq!(log.status, 200);
        log.body.contains("GET /hello.txt")
    });

    let answer = heart.stop("life");
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.json()["state"], "STOPPED");
    assert!(!listening(port), "port {port} still listened on after stop");

    // Start again on the same port (its TIME_WAIT connections do not count).
    assert_eq!(heart.start("life").status, 200);
    assert_eq!(heart.stop("life").status, 200);

    let answer = heart.call("DELETE", "/instances/life", None);
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.json()["state"], "DEREGISTERED");
    assert!(!dir.exists());
    assert_eq!(heart.call("GET", "/instances/life", None).status, 404);

    // The port is free for the next instance.
    let again = heart.register(web_instance("life2", &app)).json();
    assert_eq!(again["port"].as_u64(), Some(port));

    let status = heart.terminate();
    assert_eq!(status.code(), Some(0), "{status}");
}

#[test]
fn standalone_instances_run_and_fail_with_their_log() {
    let heart = TestHeart::serve("heart-standalone", &[]);
    let app = app(&heart);

    let body = standalone(
        "daemon",
        &app,
        json!({"launch_command": "sleep 300", "standalone_wait": 0.2}),
    );
    let view = heart.register(body).json();
    assert_eq!(view["port"], Value::Null);
    let answer = heart.start("daemon");
    assert_eq!(answer.status, 200, "{answer:?}");
    let view = answer.json();
    assert_eq!(view["state"], "RUNNING");
    let supervisor = view["pid"].as_i64().unwrap() as i32;
    assert!(is_supervisor(supervisor));
    assert_eq!(heart.stop("daemon").json()["state"], "STOPPED");
    assert!(!alive(supervisor));

    let body = standalone(
        "quick",
        &app,
        json!({"launch_command": "sh -c 'echo boom-marker; exit 3'", "standalone_wait": 5}),
    );
    assert_eq!(heart.register(body).status, 201);
    let started = Instant::now();
    let answer = heart.start("quick");
    assert_eq!(answer.status, 500, "{answer:?}");
    assert!(answer.body.contains("boom-marker"), "{answer:?}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "a process that exits at once fails at once"
    );
    let view = heart.show("quick");
    assert_eq!(view["state"], "ERROR");
    assert!(view["message"].as_str().unwrap().contains("boom-marker"));
    // Its supervisor's late report does not change that.
    let pidfile = heart.data().join("supervisor/quick.pid");
    wait_until(LONG, "the supervisor to finish", || !pidfile.exists());
    assert_eq!(heart.state("quick"), "ERROR");
}

#[test]
fn exit_reports_are_one_time_and_keyed() {
    let heart = TestHeart::serve("heart-exit", &[]);
    let app = app(&heart);
    for id in ["e0", "e7", "late"] {
        assert_eq!(heart.register(fifo_instance(id, &app)).status, 201);
        let answer = heart.start(id);
        assert_eq!(answer.status, 200, "{answer:?}");
    }
    let report = |id: &str, key: &str, code: i32, method: &str| {
        request(
            &heart,
            method,
            &format!("/instance/exit/{id}/{key}/{code}"),
            None,
            b"",
        )
        .status
    };

    assert_eq!(report("e0", "0123456789abcdef", 0, "POST"), 403);
    assert_eq!(report("nobody", "0123456789abcdef", 0, "POST"), 404);

    // Code 0 → STOPPED, through the real supervisor's report.
    let key0 = exit_key(&heart, "e0");
    make_exit(&heart, "e0", 0);
    heart.wait_state("e0", "STOPPED");
    assert_eq!(report("e0", &key0, 0, "POST"), 403, "a replayed key");
    assert_eq!(heart.state("e0"), "STOPPED");

    // Non-zero → ERROR.
    make_exit(&heart, "e7", 7);
    let message = heart.wait_message("e7", "ERROR");
    assert!(message.contains("exited with code 7"), "{message}");

    // A key of an earlier launch is dead once the instance started again.
    assert_eq!(heart.start("e0").status, 200);
    assert_eq!(report("e0", &key0, 3, "GET"), 403);
    assert_eq!(heart.state("e0"), "RUNNING");
    // The current one works, once, with GET too.
    let key = exit_key(&heart, "e0");
    assert_eq!(report("e0", &key, 4, "GET"), 200);
    assert_eq!(heart.state("e0"), "ERROR");
    assert_eq!(report("e0", &key, 4, "GET"), 403);

    // A late report never moves a stopped instance back.
    let key = exit_key(&heart, "late");
    assert_eq!(heart.stop("late").json()["state"], "STOPPED");
    assert_eq!(report("late", &key, 1, "POST"), 403);
    assert_eq!(report("late", &key, 0, "POST"), 403);
    assert_eq!(heart.state("late"), "STOPPED");
}

#[test]
fn taken_ports_and_an_exhausted_range() {
    let mut heart = TestHeart::new("heart-ports");
    heart.ports(2).spawn();
    let low = heart.block().low();
    let app = app(&heart);

    let x = heart.register(web_instance("x", &app)).json();
    assert_eq!(x["port"].as_u64(), Some(u64::from(low)));
    let squatter = TcpListener::bind(("127.0.0.1", low)).unwrap();
    let answer = heart.start("x");
    assert_eq!(answer.status, 409, "{answer:?}");
    let view = heart.show("x");
    assert_eq!(view["state"], "ERROR");
    assert_eq!(view["message"], format!("port {low} is already in use"));
    drop(squatter);

    assert_eq!(heart.register(web_instance("y", &app)).status, 201);
    let before = heart.store_files();
    let answer = heart.register(web_instance("z", &app));
    assert_eq!(answer.status, 409, "{answer:?}");
    assert!(answer.json()["error"]
        .as_str()
        .unwrap()
        .contains("no free port"));
    assert!(!heart.data().join("instances/z").exists());
    assert_eq!(heart.store_files(), before);

    // A standalone instance needs no port.
    let body = standalone("s", &app, json!({"launch_command": "sleep 1"}));
    assert_eq!(heart.register(body).status, 201);
}

#[test]
fn bad_input_is_refused_and_changes_nothing() {
    let heart = TestHeart::serve("heart-bad", &[]);
    let app = app(&heart);
    assert_eq!(heart.register(web_instance("ok1", &app)).status, 201);
    assert_eq!(heart.start("ok1").status, 200);
    let catalog = heart.store_files();

    let raw = |body: &[u8]| request(&heart, "POST", "/instances", Some(heart.token()), body);
    let mut cases: Vec<(&str, Response, u16)> = vec![
        ("malformed JSON", raw(b"{\"instance_id\": "), 400),
        ("not an object", raw(b"[1, 2]"), 400),
    ];
    // A register body with one field (a path of keys) set to a value, or
    // removed (None), and the status that must refuse it.
    let edits = [
        ("wrong type", "standalone", Some(json!("yes")), 400),
        (
            "wrong type in runtime",
            "runtime/version",
            Some(json!(1)),
            400,
        ),
        ("unknown field", "colour", Some(json!("red")), 400),
        (
            "unknown runtime field",
            "runtime/colour",
            Some(json!("red")),
            400,
        ),
        ("missing field", "runtime", None, 400),
        ("slash in id", "instance_id", Some(json!("a/b")), 400),
        ("dot-dot id", "instance_id", Some(json!("..")), 400),
        ("empty id", "instance_id", Some(json!("")), 400),
        ("unknown runtime", "runtime/name", Some(json!("cobol")), 422),
        ("unknown version", "runtime/version", Some(json!("9")), 422),
        ("bad parameters", "runtime/parameters", Some(json!({})), 422),
        (
            "missing source",
            "source",
            Some(json!("/nonexistent/pm-src")),
            422,
        ),
        ("id in use", "instance_id", Some(json!("ok1")), 409),
    ];
    for (what, field, value, status) in edits {
        let mut body = web_instance("new1", &app);
        let (parent, key) = field.rsplit_once('/').unwrap_or(("", field));
        let object = parent
            .split('/')
            .filter(|k| !k.is_empty())
            .fold(&mut body, |v, k| &mut v[k])
            .as_object_mut()
            .unwrap();
        match value {
            Some(value) => object.insert(key.to_string(), value),
            None => object.remove(key),
        };
        cases.push((what, heart.register(body), status));
    }
    let big = vec![b' '; 2 << 20];
    cases.push(("oversized body", raw(&big), 413));
    cases.push((
        "huge declared body",
        huge_declared(&heart, Some(heart.token())),
        413,
    ));
    cases.push((
        "huge declared body, no token",
        huge_declared(&heart, None),
        401,
    ));
    cases.push((
        "oversized body, no token",
        request(&heart, "POST", "/instances", None, &big),
        401,
    ));
    cases.push((
        "no token",
        request(&heart, "GET", "/instances", None, b""),
        401,
    ));
    cases.push((
        "wrong token",
        request(&heart, "GET", "/instances", Some("0000"), b""),
        401,
    ));
    cases.push((
        "dot-dot path",
        heart.call("POST", "/instances/../start", None),
        400,
    ));
    cases.push(("unknown instance", heart.start("nobody"), 404));
    cases.push(("unknown route", heart.call("GET", "/nowhere", None), 404));
    cases.push(("wrong method", heart.call("PUT", "/instances", None), 405));
    cases.push((
        "a signal that may not be sent",
        heart.call(
            "POST",
            "/instances/ok1/signal",
            Some(json!({"signal": "KILL"})),
        ),
        400,
    ));
    cases.push((
        "deregister while running",
        heart.call("DELETE", "/instances/ok1", None),
        409,
    ));
    cases.push((
        "bad tail",
        heart.call("GET", "/instances/ok1/log?tail=x", None),
        400,
    ));
    for (what, answer, status) in &cases {
        assert_eq!(answer.status, *status, "{what}: {answer:?}");
        assert!(
            answer.json()["error"].is_string(),
            "{what}: error body {answer:?}"
        );
    }
    // A start of a running instance is answered as it is (issue 11).
    let again = heart.start("ok1");
    assert_eq!(again.status, 200, "{again:?}");
    assert_eq!(again.json()["already"], true, "{again:?}");
    assert_eq!(heart.store_files(), catalog);
    assert!(!heart.data().join("instances/new1").exists());
    assert_eq!(heart.state("ok1"), "RUNNING");
    assert_eq!(request(&heart, "GET", "/health", None, b"").status, 200);

    assert_eq!(heart.stop("ok1").status, 200);
    let again = heart.stop("ok1");
    assert_eq!(again.status, 200, "stop from STOPPED: {again:?}");
    assert_eq!(again.json()["already"], true, "{again:?}");
}

#[test]
fn twenty_concurrent_starts() {
    let mut heart = TestHeart::serve("heart-twenty", &[]);
    let app = app(&heart);
    let ids: Vec<String> = (0..20).map(|n| format!("c{n}")).collect();
    thread::scope(|scope| {
        for id in &ids {
            let heart = &heart;
            let app = &app;
            scope.spawn(move || {
                let answer = heart.register(web_instance(id, app));
                assert_eq!(answer.status, 201, "{id}: {answer:?}");
            });
        }
    });
    // Each start holds its client connection (HTTP/1.0: the heart closes
    // it, so the client side never lingers in TIME_WAIT on a port that may
    // be an instance's).
    thread::scope(|scope| {
        for id in &ids {
            let heart = &heart;
            scope.spawn(move || {
                let answer = heart.start(id);
                assert_eq!(answer.status, 200, "{id}: {answer:?}");
            });
        }
    });
    let list = heart.call("GET", "/instances", None).json();
    let instances = list["instances"].as_array().unwrap();
    assert_eq!(instances.len(), 20);
    let ports: HashSet<u64> = instances
        .iter()
        .map(|i| {
            assert_eq!(i["state"], "RUNNING", "{i}");
            i["port"].as_u64().unwrap()
        })
        .collect();
    assert_eq!(ports.len(), 20, "ports are distinct");
    for port in &ports {
        assert!(port_answers(*port));
    }

    assert_eq!(heart.terminate().code(), Some(0));
    heart.spawn();
    let list = heart.call("GET", "/instances", None).json();
    let after: HashSet<u64> = list["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            assert_eq!(i["state"], "RUNNING", "{i}");
            i["port"].as_u64().unwrap()
        })
        .collect();
    assert_eq!(after, ports);
    assert_eq!(heart.catalog()["instances"].as_object().unwrap().len(), 20);
}

/// Writes `text` to `DATA/rel` of a fresh data directory and checks that
/// `pm-heart serve` refuses to start over it, in one line naming it.
fn serve_refuses_over(name: &str, rel: &str, text: &str) {
    let dir = Dir::new(name);
    let data = dir.mkdir("data");
    let file = data.join(rel);
    fs::create_dir_all(file.parent().unwrap()).unwrap();
    fs::write(&file, text).unwrap();
    let out = Command::new(HEART)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains(&file.display().to_string()), "{stderr}");
    assert_eq!(fs::read_to_string(&file).unwrap(), text);
}

#[test]
fn a_record_that_is_not_json_stops_the_heart_naming_it() {
    serve_refuses_over("heart-badrecord", "store/web-1.json", "{\"instance_id\": ");
}

#[test]
fn a_catalog_that_is_not_json_stops_the_heart() {
    serve_refuses_over("heart-corrupt", "catalog.json", "this is not JSON");
}

#[test]
fn serve_help_names_every_option_and_config_keys_are_checked() {
    let out = Command::new(HEART)
        .args(["serve", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for option in [
        "--config",
        "--listen",
        "--data-dir",
        "--ports",
        "--pacemaker",
        "--stop-on-exit",
        "--check-interval",
        "--node-name",
        "--plugin-dir",
        "--supervisor",
        "--help",
        "--version",
    ] {
        assert!(help.contains(option), "{option} missing from {help}");
    }
    let mut heart = TestHeart::new("heart-config");
    let file = heart
        .dir()
        .write("config.json", r#"{"listen": "127.0.0.1:0", "bogus": 1}"#);
    let out = Command::new(HEART)
        .args(["serve", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(100));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bogus"));

    // Options win over the file.
    let file = heart.dir().write(
        "config.json",
        format!(
            r#"{{"listen": "127.0.0.1:1", "data_dir": "{}", "check_interval": 0.5}}"#,
            heart.data().display()
        ),
    );
    heart.args(&["--config", file.to_str().unwrap()]).spawn();
    assert_ne!(heart.addr(), "127.0.0.1:1");
    assert!(heart.pid() > 0);
}

#[test]
fn stalled_clients_do_not_block_the_api() {
    let mut heart = TestHeart::serve("heart-stalled", &[]);
    let app = app(&heart);
    let pid = heart.pid();
    // More clients than the heart has workers, each stalled in its body;
    // each is opened once the previous one is with the heart (it holds
    // one more descriptor).
    let idle = descriptors(pid);
    let stalled: Vec<TcpStream> = (0..40)
        .map(|n| {
            let mut stream = TcpStream::connect(heart.addr()).unwrap();
            write!(
                stream,
                "POST /instances HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Length: 5000\r\n\r\n{{",
                heart.token()
            )
            .unwrap();
            wait_until(LONG, "the stalled request to reach the heart", || {
                descriptors(pid) > idle + n
            });
            stream
        })
        .collect();
    let began = Instant::now();
    assert_eq!(request(&heart, "GET", "/health", None, b"").status, 200);
    assert_eq!(heart.call("GET", "/instances", None).status, 200);
    assert_eq!(heart.register(web_instance("fine", &app)).status, 201);
    assert!(
        began.elapsed() < Duration::from_secs(5),
        "{:?}",
        began.elapsed()
    );
    drop(stalled);
    assert_eq!(heart.terminate().code(), Some(0));
}
