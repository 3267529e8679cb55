//! The one heart fixture: a real `pm-heart serve` on `127.0.0.1:0` with a
//! private scratch directory (the data directory is `DIR/data`, its
//! stderr goes to `DIR/heart.err`) and a private block of instance ports.
//!
//! The fixture outlives its heart process: a test can kill the heart
//! ([`TestHeart::crash`]), stop it ([`TestHeart::terminate`]), kill it
//! with everything it started ([`TestHeart::reboot`]) and start it again
//! on the same data directory ([`TestHeart::spawn`]). On drop it kills the
//! heart, then every process of its scratch directory by pid (supervisors,
//! applications, Apache), whatever state the test left, and removes the
//! control groups of its heart.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::{json, Value};

use super::http::{Request, Response};
use super::ports::{PortBlock, BLOCK};
use super::process::{end_processes_under, processes_under, ChildGuard};
use super::{describe, run, wait_for, Dir, HEART};

/// How long a heart may take to print `listening on`, to exit, or to
/// bring an instance to a state.
pub const LONG: Duration = Duration::from_secs(120);

/// A heart, its scratch directory and its ports.
pub struct TestHeart {
    dir: Dir,
    data: PathBuf,
    block: PortBlock,
    ports: u16,
    args: Vec<OsString>,
    envs: Vec<(OsString, OsString)>,
    binary: PathBuf,
    root_apps: bool,
    running: Option<Running>,
}

/// The heart process of a [`TestHeart`].
struct Running {
    child: ChildGuard,
    addr: String,
    token: String,
    ready_after: Duration,
}

impl TestHeart {
    /// A fixture with a new scratch directory named after `name`; no heart
    /// runs yet (see [`TestHeart::spawn`]).
    pub fn new(name: &str) -> TestHeart {
        TestHeart::in_dir(Dir::new(name))
    }

    /// A fixture on the scratch directory `dir`.
    pub fn in_dir(dir: Dir) -> TestHeart {
        TestHeart {
            data: dir.join("data"),
            dir,
            block: PortBlock::new(),
            ports: BLOCK,
            args: Vec::new(),
            envs: Vec::new(),
            binary: PathBuf::from(HEART),
            root_apps: true,
            running: None,
        }
    }

    /// A running heart with the options `args`.
    pub fn serve(name: &str, args: &[&str]) -> TestHeart {
        let mut heart = TestHeart::new(name);
        heart.args(args).spawn();
        heart
    }

    /// Adds options for the next [`TestHeart::spawn`].
    pub fn args<S: Into<OsString> + Clone>(&mut self, args: &[S]) -> &mut TestHeart {
        self.args.extend(args.iter().cloned().map(Into::into));
        self
    }

    /// Sets an environment variable for the next [`TestHeart::spawn`].
    pub fn env(&mut self, key: &str, value: impl Into<OsString>) -> &mut TestHeart {
        self.envs.push((key.into(), value.into()));
        self
    }

    /// Runs `binary` instead of the `pm-heart` cargo built for the tests
    /// (the benchmarks measure the musl and glibc builds alike).
    pub fn binary(&mut self, binary: impl Into<PathBuf>) -> &mut TestHeart {
        self.binary = binary.into();
        self
    }

    /// Gives the heart `n` ports: the first `n` of its block (the rest
    /// stay free for the test), or, for more than one block holds, a
    /// block that spans as many as it takes. The heart must not have run
    /// yet when the block changes.
    pub fn ports(&mut self, n: u16) -> &mut TestHeart {
        assert!(n >= 1, "no ports");
        if n > self.block.size() {
            assert!(self.running.is_none(), "the heart runs on its ports");
            self.block = PortBlock::spanning(usize::from(n.div_ceil(BLOCK)));
        }
        self.ports = n;
        self
    }

    /// Leaves out the `--allow-root-apps` that the fixture gives a heart
    /// run as root (see [`TestHeart::root_apps`]): for the tests of what a heart
    /// without it refuses.
    pub fn no_root_apps(&mut self) -> &mut TestHeart {
        self.root_apps = false;
        self
    }

    /// Starts `pm-heart serve --listen 127.0.0.1:0 --data-dir DATA --ports
    /// RANGE` with the options given so far, waits (at most [`LONG`]) for
    /// its `listening on ADDR` line, and checks that the `address` and
    /// `token` files agree.
    pub fn spawn(&mut self) -> &mut TestHeart {
        assert!(self.running.is_none(), "the heart runs already");
        let stderr = append(&self.stderr_path());
        let began = Instant::now();
        let mut child = Command::new(&self.binary)
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&self.data)
            .arg("--ports")
            .arg(self.block.range(self.ports))
            .args(self.root_apps())
            .args(&self.args)
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn pm-heart");
        let stdout = child.stdout.take().unwrap();
        let child = ChildGuard(child);
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            // The first line, then the rest unread into nothing, so that
            // the heart never writes to a closed pipe.
            let mut lines = BufReader::new(stdout).lines();
            let _ = tx.send(lines.next());
            lines.for_each(drop);
        });
        let line = match rx.recv_timeout(LONG) {
            Ok(Some(Ok(line))) => line,
            other => panic!(
                "pm-heart printed no first line within {LONG:?} ({other:?}); stderr:\n{}",
                self.stderr()
            ),
        };
        let ready_after = began.elapsed();
        let addr = line
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .trim()
            .to_string();
        let token = fs::read_to_string(self.data.join("token"))
            .unwrap()
            .trim()
            .to_string();
        assert!(!token.is_empty(), "empty token file");
        assert_eq!(
            fs::read_to_string(self.data.join("address"))
                .unwrap()
                .trim(),
            addr,
            "the address file and the listening line disagree"
        );
        self.running = Some(Running {
            child,
            addr,
            token,
            ready_after,
        });
        self
    }

    /// `--allow-root-apps` when the tests run as root, the options name no
    /// user of their own and the test did not opt out: the applications
    /// of the tests run as the tests do.
    fn root_apps(&self) -> Option<&'static str> {
        let own_user = self.args.iter().any(|a| a == "--run-as");
        (self.root_apps && !own_user && nix::unistd::geteuid().is_root())
            .then_some("--allow-root-apps")
    }

    fn running(&self) -> &Running {
        self.running.as_ref().expect("no heart runs")
    }

    /// What the heart wrote to stderr, in every run.
    pub fn stderr(&self) -> String {
        fs::read_to_string(self.stderr_path()).unwrap_or_default()
    }

    fn stderr_path(&self) -> PathBuf {
        self.dir.join("heart.err")
    }

    /// The scratch directory.
    pub fn dir(&self) -> &Dir {
        &self.dir
    }

    /// The data directory, `DIR/data`.
    pub fn data(&self) -> &Path {
        &self.data
    }

    /// The port block; the heart has its first ports (all by default).
    pub fn block(&self) -> &PortBlock {
        &self.block
    }

    /// True when `port` is one of the heart's instance ports.
    pub fn owns_port(&self, port: u64) -> bool {
        self.block.holds(self.ports, port)
    }

    pub fn addr(&self) -> &str {
        &self.running().addr
    }

    pub fn token(&self) -> &str {
        &self.running().token
    }

    pub fn pid(&self) -> i32 {
        self.running().child.pid()
    }

    /// From the spawn to the `listening on` line.
    pub fn ready_after(&self) -> Duration {
        self.running().ready_after
    }

    /// SIGTERM, and the exit status (within [`LONG`]).
    pub fn terminate(&mut self) -> ExitStatus {
        let mut running = self.running.take().expect("no heart runs");
        running.child.signal(Signal::SIGTERM);
        running.child.wait(LONG)
    }

    /// SIGKILL of the heart alone: its supervisors and applications stay.
    pub fn crash(&mut self) {
        drop(self.running.take().expect("no heart runs"));
    }

    /// What a reboot does to the node: the heart, its supervisors and
    /// their applications (every process of the scratch directory) killed
    /// with SIGKILL. Returns once none is left; the data directory stays
    /// for the next [`TestHeart::spawn`].
    pub fn reboot(&mut self) {
        self.crash();
        end_processes_under(&self.dir.path);
        let left = processes_under(&self.dir.path);
        assert!(left.is_empty(), "processes {left:?} outlived the reboot");
    }

    /// One request with the heart's token; `body` is sent as JSON.
    pub fn call(&self, method: &str, path: &str, body: Option<Value>) -> Response {
        let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        Request::new(method, path)
            .token(Some(self.token()))
            .body(&bytes)
            .call(self.addr())
    }

    /// A request that must answer 200 or 201; its body as JSON.
    pub fn call_ok(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let answer = self.call(method, path, body);
        assert!(
            answer.status == 200 || answer.status == 201,
            "{method} {path}: {answer:?}"
        );
        answer.json()
    }

    pub fn register(&self, body: Value) -> Response {
        self.call("POST", "/instances", Some(body))
    }

    pub fn start(&self, id: &str) -> Response {
        self.call("POST", &format!("/instances/{id}/start"), None)
    }

    pub fn stop(&self, id: &str) -> Response {
        self.call("POST", &format!("/instances/{id}/stop"), None)
    }

    /// Registers and starts an instance; panics unless it ends RUNNING.
    /// Returns its view.
    pub fn run_instance(&self, body: Value) -> Value {
        let id = body["instance_id"].as_str().unwrap().to_string();
        let answer = self.register(body);
        assert_eq!(answer.status, 201, "register {id}: {answer:?}");
        let answer = self.start(&id);
        assert_eq!(answer.status, 200, "start {id}: {answer:?}");
        let view = answer.json();
        assert_eq!(view["state"], "RUNNING", "{view}");
        view
    }

    /// `GET /instances/ID`, which must answer 200.
    pub fn show(&self, id: &str) -> Value {
        let answer = self.call("GET", &format!("/instances/{id}"), None);
        assert_eq!(answer.status, 200, "{answer:?}");
        answer.json()
    }

    pub fn state(&self, id: &str) -> String {
        self.show(id)["state"].as_str().unwrap().to_string()
    }

    /// Waits (at most [`LONG`]) for `id` to be in `state`; its view.
    pub fn wait_state(&self, id: &str, state: &str) -> Value {
        wait_for(LONG, &format!("{id} to be {state}"), || {
            let view = self.show(id);
            (view["state"] == state).then_some(view)
        })
    }

    /// Waits (at most [`LONG`]) for `id` to be in `state`; its message.
    pub fn wait_message(&self, id: &str, state: &str) -> String {
        message_of(&self.wait_state(id, state))
    }

    /// Starts `id`, which must fail: the answer is not 200 and the
    /// instance is in ERROR. Its message.
    pub fn start_fails(&self, id: &str) -> String {
        let answer = self.start(id);
        assert_ne!(answer.status, 200, "start {id}: {answer:?}");
        let view = self.show(id);
        assert_eq!(view["state"], "ERROR", "{answer:?} {view}");
        message_of(&view)
    }

    /// Every record of the store, as `{"instances": {ID: record}}`.
    pub fn catalog(&self) -> Value {
        let mut instances = serde_json::Map::new();
        for (name, bytes) in self.store_files() {
            let id = name.strip_suffix(".json").unwrap().to_string();
            instances.insert(id, serde_json::from_slice(&bytes).unwrap());
        }
        json!({ "instances": instances })
    }

    /// The record files of the store (`DATA/store/ID.json`), by name, in
    /// name order; a write in progress (`ID.json.new`) is not a record.
    pub fn store_files(&self) -> Vec<(String, Vec<u8>)> {
        let mut files: Vec<(String, Vec<u8>)> = fs::read_dir(self.data.join("store"))
            .map(|dir| {
                dir.filter_map(|e| {
                    let e = e.ok()?;
                    let name = e.file_name().into_string().ok()?;
                    name.ends_with(".json")
                        .then(|| Some((name, fs::read(e.path()).ok()?)))?
                })
                .collect()
            })
            .unwrap_or_default();
        files.sort();
        files
    }

    /// Writes the record of `id` as `record`, behind the heart's back.
    pub fn write_record(&self, id: &str, record: &Value) {
        fs::write(
            self.data.join(format!("store/{id}.json")),
            record.to_string(),
        )
        .unwrap();
    }

    /// Runs the client, `pm-heart ARGS --data-dir DATA`.
    pub fn client(&self, args: &[&str]) -> Output {
        run(Command::new(HEART)
            .args(args)
            .arg("--data-dir")
            .arg(&self.data))
    }

    /// Runs a client command that must succeed; its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.client(args);
        assert!(out.status.success(), "{}", describe(&args.join(" "), &out));
        String::from_utf8(out.stdout).unwrap()
    }
}

impl Drop for TestHeart {
    fn drop(&mut self) {
        // The heart first, so that it starts nothing new.
        drop(self.running.take());
        end_processes_under(&self.dir.path);
        super::cgroups::clean(&self.data);
    }
}

/// The message of an instance view.
pub fn message_of(view: &Value) -> String {
    view["message"]
        .as_str()
        .unwrap_or_else(|| panic!("no message: {view}"))
        .to_string()
}

/// A register body: `runtime` is `{"name", "version", "parameters"}`.
pub fn instance(id: &str, source: &Path, runtime: Value) -> Value {
    json!({
        "instance_id": id,
        "source": source,
        "application": {"name": id},
        "runtime": runtime,
    })
}

/// A register body for the `shell` runtime.
pub fn shell_instance(id: &str, source: &Path, parameters: Value) -> Value {
    instance(
        id,
        source,
        json!({"name": "shell", "version": "1", "parameters": parameters}),
    )
}

/// Creates (or opens) `path` for appending.
fn append(path: &Path) -> File {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap()
}
