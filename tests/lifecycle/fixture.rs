//! The fixture of the lifecycle tests: a data directory with its port
//! block ([`Node`]: heart, client, the simulated reboot, cleanup of every
//! supervisor and application by pid) and a running heart ([`Heart`]).

use std::collections::HashSet;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};

use crate::util::{
    alive, is_supervisor, run, supervisor_pids, wait_for, wait_until, ChildGuard, Dir, HEART,
    WEB_SERVER_PY,
};

pub(super) static NEXT_PORT: AtomicU16 = AtomicU16::new(24400);
pub(super) const BLOCK: u16 = 20;
pub(super) const LONG: Duration = Duration::from_secs(120);

/// A web application that logs the signals it gets, writes its pid and
/// `$GREETING` to files in its directory, and serves that directory.
pub(super) const SIGNAL_APP_PY: &str = r#"
import os, signal, sys
def logged(signum, frame):
    print("got", signal.Signals(signum).name, flush=True)
for s in (signal.SIGHUP, signal.SIGUSR1):
    signal.signal(s, logged)
open("app.pid", "w").write(str(os.getpid()))
open("greeting.txt", "w").write(os.environ.get("GREETING", "") + "\n")
exec(open("server.py").read())
"#;

/// A test's data directory and port block.
pub(super) struct Node {
    pub(super) dir: Dir,
    pub(super) low: u16,
}

/// The applications (process group leaders) under `supervisors`.
pub(super) fn application_pids(supervisors: &[i32]) -> Vec<i32> {
    supervisors
        .iter()
        .map(|pid| {
            fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default()
        })
        .flat_map(|text| {
            text.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<i32>>()
        })
        .collect()
}

impl Node {
    pub(super) fn new(name: &str) -> Node {
        let low = NEXT_PORT.fetch_add(BLOCK, Ordering::SeqCst);
        assert!(low + BLOCK <= 24600, "private port range exhausted");
        Node {
            dir: Dir::new(&format!("lifecycle-{name}")),
            low,
        }
    }

    pub(super) fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// Starts a heart on `listen` and waits for its `listening on` line.
    pub(super) fn serve_on(&self, listen: &str) -> Heart {
        let mut child = Command::new(HEART)
            .args(["serve", "--listen", listen, "--check-interval", "1"])
            .args(crate::util::heart::root_apps(&[]))
            .arg("--data-dir")
            .arg(self.data())
            .arg("--ports")
            .arg(format!("{}-{}", self.low, self.low + BLOCK - 1))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn pm-heart");
        let stdout = child.stdout.take().unwrap();
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
        let token = fs::read_to_string(self.data().join("token")).unwrap();
        Heart {
            child: Some(guard),
            addr,
            token: token.trim().to_string(),
        }
    }

    pub(super) fn serve(&self) -> Heart {
        self.serve_on("127.0.0.1:0")
    }

    /// Runs a client command on this data directory.
    pub(super) fn client(&self, args: &[&str]) -> Output {
        run(Command::new(HEART)
            .args(args)
            .arg("--data-dir")
            .arg(self.data()))
    }

    /// The supervisor pids the store names, live ones only.
    pub(super) fn supervisors(&self) -> Vec<i32> {
        let mut pids: HashSet<i32> = supervisor_pids(&self.data()).into_iter().collect();
        if let Ok(entries) = fs::read_dir(self.data().join("store")) {
            for entry in entries.flatten() {
                let rec: Value =
                    serde_json::from_slice(&fs::read(entry.path()).unwrap_or_default())
                        .unwrap_or(Value::Null);
                if let Some(pid) = rec["supervisor"]["pid"].as_i64() {
                    pids.insert(pid as i32);
                }
            }
        }
        pids.into_iter().filter(|&p| is_supervisor(p)).collect()
    }

    /// What a reboot does to the applications: every supervisor of this
    /// data directory and every application under them killed (SIGKILL,
    /// by pid); waits until all are gone.
    pub(super) fn kill_everything(&self) {
        let supervisors = self.supervisors();
        let apps = application_pids(&supervisors);
        for &pid in &apps {
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
        }
        for &pid in &supervisors {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        for pid in supervisors.iter().chain(&apps) {
            wait_until(LONG, &format!("{pid} to be gone"), || !alive(*pid));
        }
    }

    /// A source directory `name` with the signal app and the web server.
    pub(super) fn app(&self, name: &str) -> PathBuf {
        self.dir.write(format!("{name}/server.py"), WEB_SERVER_PY);
        self.dir.write(format!("{name}/app.py"), SIGNAL_APP_PY);
        self.dir.join(name)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill_everything_quietly();
        crate::util::cgroups::clean(&self.data());
    }
}

impl Node {
    pub(super) fn kill_everything_quietly(&self) {
        let supervisors = self.supervisors();
        for pid in application_pids(&supervisors) {
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
        }
        for pid in supervisors {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

/// A running heart; killed on drop.
pub(super) struct Heart {
    pub(super) child: Option<ChildGuard>,
    pub(super) addr: String,
    pub(super) token: String,
}

/// One HTTP/1.0 exchange: (status, body).
pub(super) fn http(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    stream.set_read_timeout(Some(LONG)).unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(token) = token {
        head.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    stream
        .write_all(format!("{head}\r\n{body}").as_bytes())
        .unwrap();
    let mut raw = String::new();
    let _ = stream.read_to_string(&mut raw);
    let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP answer");
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, body.to_string())
}

impl Heart {
    pub(super) fn call(&self, method: &str, path: &str, body: Value) -> (u16, Value) {
        let body = if body.is_null() {
            String::new()
        } else {
            body.to_string()
        };
        let (status, text) = http(&self.addr, method, path, Some(&self.token), &body);
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, value)
    }

    /// A request that must answer 200 or 201; its body.
    pub(super) fn ok(&self, method: &str, path: &str, body: Value) -> Value {
        let (status, value) = self.call(method, path, body);
        assert!(
            status == 200 || status == 201,
            "{method} {path}: {status} {value}"
        );
        value
    }

    pub(super) fn show(&self, id: &str) -> Value {
        self.ok("GET", &format!("/instances/{id}"), Value::Null)
    }

    pub(super) fn wait_state(&self, id: &str, state: &str) -> Value {
        wait_for(LONG, &format!("{id} to be {state}"), || {
            let view = self.show(id);
            (view["state"] == state).then_some(view)
        })
    }

    pub(super) fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().pid()
    }

    /// SIGKILL: the heart dies, its supervisors and applications do not.
    pub(super) fn crash(mut self) {
        let mut guard = self.child.take().unwrap();
        kill(Pid::from_raw(guard.pid()), Signal::SIGKILL).unwrap();
        let _ = guard.0.wait();
    }
}

impl Drop for Heart {
    fn drop(&mut self) {
        drop(self.child.take());
    }
}

/// A register body for a web instance of the signal app.
pub(super) fn web(id: &str, source: &Path, restart: &str) -> Value {
    json!({
        "instance_id": id,
        "source": source,
        "application": {"name": id},
        "restart": restart,
        "runtime": {"name": "shell", "version": "1", "parameters": {
            "launch_command": "python3 app.py %(port)d", "start_timeout": 90}},
    })
}

/// The body of `http://127.0.0.1:PORT/PATH`, if it answers.
pub(super) fn fetch(port: u64, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port as u16)).ok()?;
    stream.set_read_timeout(Some(LONG)).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\n\r\n").ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    Some(text.split_once("\r\n\r\n")?.1.to_string())
}

pub(super) fn app_pid(node: &Node, id: &str) -> i32 {
    let path = node.data().join("instances").join(id).join("app.pid");
    fs::read_to_string(path).unwrap().trim().parse().unwrap()
}

pub(super) fn log_of(heart: &Heart, id: &str) -> String {
    match heart.call("GET", &format!("/instances/{id}/log"), Value::Null) {
        (200, Value::String(text)) => text,
        other => panic!("log of {id}: {other:?}"),
    }
}
