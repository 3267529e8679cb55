//! `pm-heart serve`: the API, the catalog, restarts and crashes, through
//! the real binaries. Each test runs its own heart on `127.0.0.1:0` with
//! its own data directory and its own block of 25 instance ports from the
//! private range 21000-22999, below the kernel's ephemeral ports
//! (32768-60999), so no client connection on the machine can hold one.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};

use crate::util::{
    alive, is_supervisor, supervisor_pids, wait_for, wait_until, ChildGuard, Dir, HEART,
    WEB_SERVER_PY,
};

/// Next free block of the private port range.
static NEXT_PORT: AtomicU16 = AtomicU16::new(21000);
const BLOCK: u16 = 25;
const LONG: Duration = Duration::from_secs(120);

/// A test's data directory and port block. On drop, every supervisor the
/// heart started (pidfiles and catalog entries) is killed, so their
/// commands die too (parent-death signal).
struct Env {
    dir: Dir,
    low: u16,
}

impl Env {
    fn new(name: &str) -> Env {
        let low = NEXT_PORT.fetch_add(BLOCK, Ordering::SeqCst);
        assert!(low + BLOCK <= 23000, "private port range exhausted");
        Env {
            dir: Dir::new(&format!("heart-{name}")),
            low,
        }
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn ports(&self) -> String {
        format!("{}-{}", self.low, self.low + BLOCK - 1)
    }

    /// Starts a heart on this data directory with `extra` options.
    fn heart(&self, extra: &[&str]) -> Heart {
        self.heart_on("127.0.0.1:0", extra)
    }

    fn heart_on(&self, listen: &str, extra: &[&str]) -> Heart {
        let mut cmd = Command::new(HEART);
        cmd.arg("serve")
            .arg("--listen")
            .arg(listen)
            .arg("--data-dir")
            .arg(self.data())
            .arg("--ports")
            .arg(self.ports())
            // Tests run as root: the applications too, as before users.
            .arg("--allow-root-apps")
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().expect("spawn pm-heart");
        let stdout = child.stdout.take().expect("stdout");
        let guard = ChildGuard(child);
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(LONG).expect("no listening line in time");
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        let token = fs::read_to_string(self.data().join("token"))
            .unwrap()
            .trim()
            .to_string();
        assert_eq!(
            fs::read_to_string(self.data().join("address"))
                .unwrap()
                .trim(),
            addr
        );
        Heart {
            child: Some(guard),
            addr,
            token,
        }
    }

    /// Every record of the store, as `{"instances": {ID: record}}`.
    fn catalog(&self) -> Value {
        let mut instances = serde_json::Map::new();
        for (name, bytes) in store_files(&self.data()) {
            let id = name.strip_suffix(".json").unwrap().to_string();
            instances.insert(id, serde_json::from_slice(&bytes).unwrap());
        }
        json!({ "instances": instances })
    }

    /// Writes a source directory with one file and the test web server,
    /// and returns its path.
    fn app(&self) -> PathBuf {
        self.dir.write("app/hello.txt", "hello from the app\n");
        self.dir.write("app/server.py", WEB_SERVER_PY);
        self.dir.join("app")
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let mut pids: HashSet<i32> = supervisor_pids(&self.data()).into_iter().collect();
        for (_, bytes) in store_files(&self.data()) {
            if let Ok(rec) = serde_json::from_slice::<Value>(&bytes) {
                if let Some(pid) = rec["supervisor"]["pid"].as_i64() {
                    pids.insert(pid as i32);
                }
            }
        }
        for pid in pids {
            if is_supervisor(pid) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
        crate::cgroups::clean(&self.data());
    }
}

/// A running heart; killed on drop.
struct Heart {
    child: Option<ChildGuard>,
    addr: String,
    token: String,
}

struct Answer {
    status: u16,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

impl std::fmt::Debug for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status, self.body)
    }
}

/// How many threads of `pid` are called `name`.
fn threads_named(pid: i32, name: &str) -> usize {
    fs::read_dir(format!("/proc/{pid}/task"))
        .map(|tasks| {
            tasks
                .flatten()
                .filter(|task| {
                    fs::read_to_string(task.path().join("comm"))
                        .is_ok_and(|comm| comm.trim() == name)
                })
                .count()
        })
        .unwrap_or(0)
}

/// One HTTP/1.0 exchange (the server closes the connection after it).
fn http(addr: &str, method: &str, path: &str, token: Option<&str>, body: &[u8]) -> Answer {
    let mut stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    stream.set_read_timeout(Some(LONG)).unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(token) = token {
        head.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    // A server that refuses a large body may close before reading it all.
    let _ = stream.write_all(body);
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP answer to {method} {path}: {text:?}"));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {head:?}"));
    Answer {
        status,
        body: body.to_string(),
    }
}

impl Heart {
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Answer {
        let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        http(&self.addr, method, path, Some(&self.token), &bytes)
    }

    fn register(&self, body: Value) -> Answer {
        self.call("POST", "/instances", Some(body))
    }

    fn start(&self, id: &str) -> Answer {
        self.call("POST", &format!("/instances/{id}/start"), None)
    }

    fn stop(&self, id: &str) -> Answer {
        self.call("POST", &format!("/instances/{id}/stop"), None)
    }

    fn show(&self, id: &str) -> Value {
        let answer = self.call("GET", &format!("/instances/{id}"), None);
        assert_eq!(answer.status, 200, "{answer:?}");
        answer.json()
    }

    fn state(&self, id: &str) -> String {
        self.show(id)["state"].as_str().unwrap().to_string()
    }

    fn wait_state(&self, id: &str, state: &str) -> Value {
        wait_for(LONG, &format!("{id} to be {state}"), || {
            let view = self.show(id);
            (view["state"] == state).then_some(view)
        })
    }

    fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().pid()
    }

    /// SIGTERM, and the exit status.
    fn terminate(mut self) -> std::process::ExitStatus {
        let mut guard = self.child.take().unwrap();
        kill(Pid::from_raw(guard.pid()), Signal::SIGTERM).unwrap();
        wait_child(&mut guard.0)
    }

    /// SIGKILL: the heart dies, its supervisors and applications do not.
    fn crash(mut self) {
        let mut guard = self.child.take().unwrap();
        kill(Pid::from_raw(guard.pid()), Signal::SIGKILL).unwrap();
        wait_child(&mut guard.0);
    }
}

fn wait_child(child: &mut Child) -> std::process::ExitStatus {
    wait_for(LONG, "the heart to exit", || child.try_wait().unwrap())
}

impl Drop for Heart {
    fn drop(&mut self) {
        drop(self.child.take());
    }
}

/// A register body for a shell instance.
fn shell_instance(id: &str, source: &Path, parameters: Value) -> Value {
    json!({
        "instance_id": id,
        "source": source,
        "application": {"name": "test"},
        "runtime": {"name": "shell", "version": "1", "parameters": parameters},
    })
}

fn web_instance(id: &str, source: &Path) -> Value {
    shell_instance(
        id,
        source,
        json!({"launch_command": "python3 server.py %(port)d", "start_timeout": 90}),
    )
}

/// A web instance whose shell writes the application's pid to `app.pid`.
fn web_instance_with_pid(id: &str, source: &Path) -> Value {
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

/// A standalone instance that exits with the code written to its FIFO.
fn fifo_instance(id: &str, source: &Path) -> Value {
    let mut body = shell_instance(
        id,
        source,
        json!({"launch_command": "sh -c 'read c < ctl; exit $c'", "standalone_wait": 0.1}),
    );
    body["standalone"] = json!(true);
    body["startup"] = json!(["rm -f ctl", "mkfifo ctl"]);
    body
}

/// Makes a FIFO instance exit with `code`.
fn make_exit(env: &Env, id: &str, code: i32) {
    let fifo = env.data().join("instances").join(id).join("ctl");
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
fn huge_declared(addr: &str, token: Option<&str>) -> Answer {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(LONG)).unwrap();
    let auth = match token {
        Some(token) => format!("Authorization: Bearer {token}\r\n"),
        None => String::new(),
    };
    write!(
        stream,
        "POST /instances HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 100000000000000\r\n\r\nabc"
    )
    .unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    // The connection may stay open: read until the whole answer is in.
    while !String::from_utf8_lossy(&raw).contains("\"}") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("an answer");
    Answer {
        status: head.split_whitespace().nth(1).unwrap().parse().unwrap(),
        body: body.to_string(),
    }
}

/// The body of `GET http://127.0.0.1:PORT/PATH` from an application.
fn fetch(port: u64, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port as u16)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\n\r\n").ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    Some(text.split_once("\r\n\r\n")?.1.to_string())
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

fn exit_key(env: &Env, id: &str) -> String {
    env.catalog()["instances"][id]["exit_key"]
        .as_str()
        .unwrap_or_else(|| panic!("no exit key for {id}"))
        .to_string()
}

#[test]
fn whole_lifecycle_through_the_api() {
    let env = Env::new("lifecycle");
    let heart = env.heart(&[]);
    let app = env.app();

    let health = http(&heart.addr, "GET", "/health", None, b"");
    assert_eq!(health.status, 200, "{health:?}");
    assert_eq!(health.json()["status"], "ok");
    let runtimes = heart.call("GET", "/runtimes", None);
    assert_eq!(runtimes.json()["shell"], json!(["1"]));

    let answer = heart.register(web_instance("life", &app));
    assert_eq!(answer.status, 201, "{answer:?}");
    let view = answer.json();
    assert_eq!(view["state"], "REGISTERED");
    let port = view["port"].as_u64().unwrap();
    assert!((u64::from(env.low)..u64::from(env.low + BLOCK)).contains(&port));
    let dir = env.data().join("instances/life");
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
    let log = heart.call("GET", "/instances/life/log?tail=50", None);
    assert_eq!(log.status, 200);
    assert!(log.body.contains("GET /hello.txt"), "{}", log.body);

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
    let env = Env::new("standalone");
    let heart = env.heart(&[]);
    let app = env.app();

    let mut body = shell_instance(
        "daemon",
        &app,
        json!({"launch_command": "sleep 300", "standalone_wait": 0.2}),
    );
    body["standalone"] = json!(true);
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

    let mut body = shell_instance(
        "quick",
        &app,
        json!({"launch_command": "sh -c 'echo boom-marker; exit 3'", "standalone_wait": 5}),
    );
    body["standalone"] = json!(true);
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
    let pidfile = env.data().join("supervisor/quick.pid");
    wait_until(LONG, "the supervisor to finish", || !pidfile.exists());
    assert_eq!(heart.state("quick"), "ERROR");
}

#[test]
fn exit_reports_are_one_time_and_keyed() {
    let env = Env::new("exit");
    let heart = env.heart(&[]);
    let app = env.app();
    for id in ["e0", "e7", "late"] {
        assert_eq!(heart.register(fifo_instance(id, &app)).status, 201);
        let answer = heart.start(id);
        assert_eq!(answer.status, 200, "{answer:?}");
    }
    let report = |id: &str, key: &str, code: i32, method: &str| {
        http(
            &heart.addr,
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
    let key0 = exit_key(&env, "e0");
    make_exit(&env, "e0", 0);
    heart.wait_state("e0", "STOPPED");
    assert_eq!(report("e0", &key0, 0, "POST"), 403, "a replayed key");
    assert_eq!(heart.state("e0"), "STOPPED");

    // Non-zero → ERROR.
    make_exit(&env, "e7", 7);
    let view = heart.wait_state("e7", "ERROR");
    assert!(
        view["message"]
            .as_str()
            .unwrap()
            .contains("exited with code 7"),
        "{view}"
    );

    // A key of an earlier launch is dead once the instance started again.
    assert_eq!(heart.start("e0").status, 200);
    assert_eq!(report("e0", &key0, 3, "GET"), 403);
    assert_eq!(heart.state("e0"), "RUNNING");
    // The current one works, once, with GET too.
    let key = exit_key(&env, "e0");
    assert_eq!(report("e0", &key, 4, "GET"), 200);
    assert_eq!(heart.state("e0"), "ERROR");
    assert_eq!(report("e0", &key, 4, "GET"), 403);

    // A late report never moves a stopped instance back.
    let key = exit_key(&env, "late");
    assert_eq!(heart.stop("late").json()["state"], "STOPPED");
    assert_eq!(report("late", &key, 1, "POST"), 403);
    assert_eq!(report("late", &key, 0, "POST"), 403);
    assert_eq!(heart.state("late"), "STOPPED");
}

#[test]
fn a_killed_heart_finds_its_instances_again() {
    let env = Env::new("crash");
    let heart = env.heart(&[]);
    let app = env.app();
    let mut before = HashMap::new();
    for id in ["a", "b", "c", "gone", "decoyed"] {
        assert_eq!(heart.register(web_instance_with_pid(id, &app)).status, 201);
        let answer = heart.start(id);
        assert_eq!(answer.status, 200, "{answer:?}");
        let view = answer.json();
        let pidfile = env.data().join("instances").join(id).join("app.pid");
        let app_pid: i32 = wait_for(LONG, "app.pid", || {
            fs::read_to_string(&pidfile).ok()?.trim().parse().ok()
        });
        before.insert(
            id,
            (
                view["pid"].as_i64().unwrap() as i32,
                app_pid,
                view["port"].as_u64().unwrap(),
            ),
        );
    }
    heart.crash();

    // While the heart is down: "gone" ends, and its supervisor could only
    // record the code; "decoyed"'s catalog entry points at another process.
    let (gone_sup, gone_app, _) = before["gone"];
    kill(Pid::from_raw(gone_sup), Signal::SIGKILL).unwrap();
    wait_until(LONG, "gone's application to die", || !alive(gone_app));
    fs::write(env.data().join("supervisor/gone.exited"), "5\n").unwrap();

    let decoy = ChildGuard(Command::new("sleep").arg("300").spawn().unwrap());
    let start_time = fs::read_to_string(format!("/proc/{}/stat", decoy.pid())).unwrap();
    let start_time: u64 = start_time[start_time.rfind(')').unwrap() + 2..]
        .split_whitespace()
        .nth(19)
        .unwrap()
        .parse()
        .unwrap();
    let (decoyed_sup, decoyed_app, _) = before["decoyed"];
    let mut record = env.catalog()["instances"]["decoyed"].clone();
    record["supervisor"] = json!({"pid": decoy.pid(), "start_time": start_time});
    fs::write(env.data().join("store/decoyed.json"), record.to_string()).unwrap();
    kill(Pid::from_raw(decoyed_sup), Signal::SIGKILL).unwrap();
    wait_until(LONG, "decoyed's application to die", || !alive(decoyed_app));
    // ... and its supervisor left an exit file nobody can read.
    fs::write(env.data().join("supervisor/decoyed.exited"), "garbage").unwrap();

    let heart = env.heart(&[]);
    for id in ["a", "b", "c"] {
        let view = heart.show(id);
        let (sup, app_pid, port) = before[id];
        assert_eq!(view["state"], "RUNNING", "{view}");
        assert_eq!(view["pid"].as_i64(), Some(i64::from(sup)));
        let pidfile = env.data().join("instances").join(id).join("app.pid");
        assert_eq!(
            fs::read_to_string(pidfile).unwrap().trim(),
            app_pid.to_string()
        );
        assert!(alive(app_pid));
        assert_eq!(
            fetch(port, "/hello.txt").as_deref(),
            Some("hello from the app\n")
        );
    }
    let gone = heart.show("gone");
    assert_eq!(gone["state"], "ERROR", "{gone}");
    assert!(gone["message"]
        .as_str()
        .unwrap()
        .contains("exited with code 5"));
    assert!(!env.data().join("supervisor/gone.exited").exists());

    let decoyed = heart.show("decoyed");
    assert_eq!(decoyed["state"], "SUSPENDED", "{decoyed}");
    assert!(!env.data().join("supervisor/decoyed.exited").exists());
    assert_eq!(
        fs::read_to_string(env.data().join("supervisor/decoyed.exited.corrupt")).unwrap(),
        "garbage"
    );
    assert_eq!(heart.stop("decoyed").json()["state"], "STOPPED");
    assert!(
        alive(decoy.pid()),
        "the decoy at the recorded pid was signalled"
    );

    // A second restart changes nothing: the exit file was applied once.
    let status = heart.terminate();
    assert_eq!(status.code(), Some(0));
    let heart = env.heart(&[]);
    assert_eq!(heart.show("gone")["message"], gone["message"]);
    for id in ["a", "b", "c"] {
        assert_eq!(heart.state(id), "RUNNING");
        assert!(alive(before[id].1));
    }
    assert_eq!(heart.stop("a").json()["state"], "STOPPED");
    assert!(!alive(before["a"].1));
}

#[test]
fn taken_ports_and_an_exhausted_range() {
    let env = Env::new("ports");
    let low = env.low;
    let range = format!("{low}-{}", low + 1);
    let heart = env.heart(&["--ports", &range]);
    let app = env.app();

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
    let before = store_files(&env.data());
    let answer = heart.register(web_instance("z", &app));
    assert_eq!(answer.status, 409, "{answer:?}");
    assert!(answer.json()["error"]
        .as_str()
        .unwrap()
        .contains("no free port"));
    assert!(!env.data().join("instances/z").exists());
    assert_eq!(store_files(&env.data()), before);

    // A standalone instance needs no port.
    let mut body = shell_instance("s", &app, json!({"launch_command": "sleep 1"}));
    body["standalone"] = json!(true);
    assert_eq!(heart.register(body).status, 201);
}

#[test]
fn bad_input_is_refused_and_changes_nothing() {
    let env = Env::new("bad");
    let heart = env.heart(&[]);
    let app = env.app();
    assert_eq!(heart.register(web_instance("ok1", &app)).status, 201);
    assert_eq!(heart.start("ok1").status, 200);
    let catalog = store_files(&env.data());

    let raw = |body: &[u8]| http(&heart.addr, "POST", "/instances", Some(&heart.token), body);
    let mut cases: Vec<(&str, Answer, u16)> = vec![
        ("malformed JSON", raw(b"{\"instance_id\": "), 400),
        ("not an object", raw(b"[1, 2]"), 400),
    ];
    let mut with = |what: &'static str, edit: &dyn Fn(&mut Value), status: u16| {
        let mut body = web_instance("new1", &app);
        edit(&mut body);
        cases.push((what, heart.register(body), status));
    };
    with("wrong type", &|b| b["standalone"] = json!("yes"), 400);
    with(
        "wrong type in runtime",
        &|b| b["runtime"]["version"] = json!(1),
        400,
    );
    with("unknown field", &|b| b["colour"] = json!("red"), 400);
    with(
        "unknown runtime field",
        &|b| b["runtime"]["colour"] = json!("red"),
        400,
    );
    with(
        "missing field",
        &|b| {
            b.as_object_mut().unwrap().remove("runtime");
        },
        400,
    );
    with("slash in id", &|b| b["instance_id"] = json!("a/b"), 400);
    with("dot-dot id", &|b| b["instance_id"] = json!(".."), 400);
    with("empty id", &|b| b["instance_id"] = json!(""), 400);
    with(
        "unknown runtime",
        &|b| b["runtime"]["name"] = json!("cobol"),
        422,
    );
    with(
        "unknown version",
        &|b| b["runtime"]["version"] = json!("9"),
        422,
    );
    with(
        "bad parameters",
        &|b| b["runtime"]["parameters"] = json!({}),
        422,
    );
    with(
        "missing source",
        &|b| b["source"] = json!("/nonexistent/pm-src"),
        422,
    );
    with("id in use", &|b| b["instance_id"] = json!("ok1"), 409);
    let big = vec![b' '; 2 << 20];
    cases.push(("oversized body", raw(&big), 413));
    cases.push((
        "huge declared body",
        huge_declared(&heart.addr, Some(&heart.token)),
        413,
    ));
    cases.push((
        "huge declared body, no token",
        huge_declared(&heart.addr, None),
        401,
    ));
    cases.push((
        "oversized body, no token",
        http(&heart.addr, "POST", "/instances", None, &big),
        401,
    ));
    cases.push((
        "no token",
        http(&heart.addr, "GET", "/instances", None, b""),
        401,
    ));
    cases.push((
        "wrong token",
        http(&heart.addr, "GET", "/instances", Some("0000"), b""),
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
    cases.push(("start while running", heart.start("ok1"), 409));
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
    assert_eq!(store_files(&env.data()), catalog);
    assert!(!env.data().join("instances/new1").exists());
    assert_eq!(heart.state("ok1"), "RUNNING");
    assert_eq!(http(&heart.addr, "GET", "/health", None, b"").status, 200);

    assert_eq!(heart.stop("ok1").status, 200);
    assert_eq!(heart.stop("ok1").status, 409, "stop from STOPPED");
}

#[test]
fn restart_policy_backs_off() {
    let env = Env::new("restart");
    let heart = env.heart(&[]);
    let app = env.app();
    let crashing = |id: &str, restart: &str| {
        let counter = env.dir.join(format!("{id}.runs"));
        let mut body = shell_instance(
            id,
            &app,
            json!({
                "launch_command": format!("date +%s.%N >> {}; sleep 0.3; exit 3", counter.display()),
                "shell": true,
                "standalone_wait": 0.1,
            }),
        );
        body["standalone"] = json!(true);
        body["restart"] = json!(restart);
        assert_eq!(heart.register(body).status, 201);
        let answer = heart.start(id);
        assert_eq!(answer.status, 200, "{answer:?}");
        counter
    };
    let never = crashing("never", "never");
    let counter = crashing("crashy", "on-failure");

    let runs = || -> Vec<f64> {
        fs::read_to_string(&counter)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    };
    let times = wait_for(Duration::from_secs(40), "four runs", || {
        let times = runs();
        (times.len() >= 4).then_some(times)
    });
    let gaps: Vec<f64> = times.windows(2).map(|w| w[1] - w[0]).collect();
    // Each gap is the 0.3 s run plus a backoff of 1, 2, then 4 s.
    assert!(gaps[0] >= 1.2 && gaps[0] < 3.0, "{gaps:?}");
    assert!(gaps[1] >= 2.2 && gaps[1] > gaps[0] + 0.5, "{gaps:?}");
    assert!(gaps[2] >= 4.2 && gaps[2] > gaps[1] + 1.0, "{gaps:?}");
    let backoff = &env.catalog()["instances"]["crashy"]["backoff"];
    assert!(backoff["attempts"].as_u64().unwrap() >= 3, "{backoff}");

    let view = heart.wait_state("never", "ERROR");
    assert!(view["message"]
        .as_str()
        .unwrap()
        .contains("exited with code 3"));
    assert_eq!(
        env.catalog()["instances"]["never"]["backoff"]["next_restart"],
        Value::Null
    );
    assert_eq!(fs::read_to_string(never).unwrap().lines().count(), 1);

    assert_eq!(heart.stop("crashy").json()["state"], "STOPPED");
    assert_eq!(
        env.catalog()["instances"]["crashy"]["backoff"]["next_restart"],
        Value::Null
    );
}

#[test]
fn twenty_concurrent_starts() {
    let env = Env::new("twenty");
    let heart = env.heart(&[]);
    let app = env.app();
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
    let heart = env.heart(&[]);
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
    assert_eq!(env.catalog()["instances"].as_object().unwrap().len(), 20);
}

/// The files of the store, by name, in name order.
fn store_files(data: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = fs::read_dir(data.join("store"))
        .map(|dir| {
            dir.filter_map(|e| {
                let e = e.ok()?;
                let name = e.file_name().into_string().ok()?;
                // A write in progress (`ID.json.new`) is not a record yet.
                name.ends_with(".json")
                    .then(|| Some((name, fs::read(e.path()).ok()?)))?
            })
            .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

#[test]
fn a_record_that_is_not_json_stops_the_heart_naming_it() {
    let env = Env::new("badrecord");
    fs::create_dir_all(env.data().join("store")).unwrap();
    let record = env.data().join("store/web-1.json");
    fs::write(&record, "{\"instance_id\": ").unwrap();
    let out = Command::new(HEART)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(env.data())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains(&record.display().to_string()), "{stderr}");
}

#[test]
fn a_catalog_that_is_not_json_stops_the_heart() {
    let env = Env::new("corrupt");
    fs::create_dir_all(env.data()).unwrap();
    let catalog = env.data().join("catalog.json");
    fs::write(&catalog, "this is not JSON").unwrap();
    let out = Command::new(HEART)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(env.data())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains(&catalog.display().to_string()), "{stderr}");
    assert_eq!(fs::read_to_string(&catalog).unwrap(), "this is not JSON");
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
    let env = Env::new("config");
    let file = env
        .dir
        .write("config.json", r#"{"listen": "127.0.0.1:0", "bogus": 1}"#);
    let out = Command::new(HEART)
        .args(["serve", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(100));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bogus"));

    // Options win over the file.
    let file = env.dir.write(
        "config.json",
        format!(
            r#"{{"listen": "127.0.0.1:1", "data_dir": "{}", "check_interval": 0.5}}"#,
            env.data().display()
        ),
    );
    let heart = env.heart(&["--config", file.to_str().unwrap()]);
    assert_ne!(heart.addr, "127.0.0.1:1");
    assert!(heart.pid() > 0);
}

#[test]
fn sigterm_leaves_applications_running_unless_exclusive() {
    let env = Env::new("sigterm");
    let heart = env.heart(&[]);
    let app = env.app();
    let mut pids = HashMap::new();
    for (id, exclusive) in [("shared", false), ("own", true)] {
        let mut body = web_instance(id, &app);
        body["exclusive"] = json!(exclusive);
        assert_eq!(heart.register(body).status, 201);
        let view = heart.start(id).json();
        assert_eq!(view["state"], "RUNNING", "{view}");
        pids.insert(id, view["pid"].as_i64().unwrap() as i32);
    }
    assert_eq!(heart.terminate().code(), Some(0));
    assert!(
        is_supervisor(pids["shared"]),
        "a shared instance outlives the heart"
    );
    assert!(
        !alive(pids["own"]),
        "an exclusive instance stops with the heart"
    );
    let catalog = env.catalog();
    assert_eq!(catalog["instances"]["own"]["state"], "STOPPED");
    assert_eq!(catalog["instances"]["shared"]["state"], "RUNNING");

    let heart = env.heart(&["--stop-on-exit"]);
    assert_eq!(heart.state("shared"), "RUNNING");
    assert_eq!(heart.terminate().code(), Some(0));
    assert!(
        !alive(pids["shared"]),
        "--stop-on-exit stops every instance"
    );
    assert_eq!(env.catalog()["instances"]["shared"]["state"], "STOPPED");
}

#[test]
fn the_periodic_check_notices_a_vanished_supervisor() {
    let env = Env::new("check");
    let heart = env.heart(&["--check-interval", "0.2"]);
    let app = env.app();
    let mut body = shell_instance(
        "victim",
        &app,
        json!({"launch_command": "sleep 300", "standalone_wait": 0.1}),
    );
    body["standalone"] = json!(true);
    assert_eq!(heart.register(body).status, 201);
    let supervisor = heart.start("victim").json()["pid"].as_i64().unwrap() as i32;
    kill(Pid::from_raw(supervisor), Signal::SIGKILL).unwrap();
    let view = heart.wait_state("victim", "ERROR");
    assert!(
        view["message"]
            .as_str()
            .unwrap()
            .contains("supervisor is gone"),
        "{view}"
    );
    // It can be started again.
    assert_eq!(heart.start("victim").json()["state"], "RUNNING");
}

#[test]
fn stalled_clients_do_not_block_the_api() {
    let env = Env::new("stalled");
    let heart = env.heart(&[]);
    let app = env.app();
    let pid = heart.child.as_ref().unwrap().pid();
    // More clients than the heart has workers, each stalled in its body.
    // Each is opened once the previous one is with the heart: tiny_http's
    // connection pool can queue a connection that arrives while threads it
    // counts as idle are being woken, and a queued connection then waits
    // for a pool thread that a stalled client holds (a limitation of
    // tiny_http, in pm-heart(8) BUGS); this test is about the workers.
    let stalled: Vec<TcpStream> = (0..40)
        .map(|n| {
            let mut stream = TcpStream::connect(&heart.addr).unwrap();
            write!(
                stream,
                "POST /instances HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Length: 5000\r\n\r\n{{",
                heart.token
            )
            .unwrap();
            wait_until(LONG, "the stalled request to reach the heart", || {
                threads_named(pid, "request-body") > n
            });
            stream
        })
        .collect();
    let began = Instant::now();
    assert_eq!(http(&heart.addr, "GET", "/health", None, b"").status, 200);
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
