//! Shared test helpers: binary paths, scratch directories, bounded waits,
//! and guards that end every process a test started, even when it fails.

#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

pub const SUPERVISOR: &str = env!("CARGO_BIN_EXE_pm-supervisor");
pub const HEART: &str = env!("CARGO_BIN_EXE_pm-heart");
pub const RUNTIME: &str = env!("CARGO_BIN_EXE_pm-runtime");

/// A test web application: `python3 server.py PORT` serves its working
/// directory on 127.0.0.1:PORT. It retries its bind on EADDRINUSE for up
/// to 10 s, so that a port just released by another instance of the same
/// test does not fail it.
pub const WEB_SERVER_PY: &str = r#"
import errno, http.server, sys, time
port = int(sys.argv[1])
deadline = time.time() + 10
while True:
    try:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", port), http.server.SimpleHTTPRequestHandler)
        break
    except OSError as e:
        if e.errno != errno.EADDRINUSE or time.time() > deadline:
            raise
        time.sleep(0.05)
server.serve_forever()
"#;

/// A scratch directory, removed on drop unless the test failed
/// (then it is kept for a look and its path printed).
pub struct Dir {
    pub path: PathBuf,
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

impl Dir {
    pub fn new(name: &str) -> Dir {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let path = std::env::temp_dir().join(format!(
            "pm-test-{}-{}-{n}",
            std::process::id(),
            name.replace("::", "-")
        ));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap();
        Dir { path }
    }

    pub fn join(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.path.join(rel)
    }

    /// Writes `contents` to `rel`, creating parents.
    pub fn write(&self, rel: impl AsRef<Path>, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.join(rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).unwrap();
        }
        fs::write(&path, contents).unwrap();
        path
    }

    /// Writes an executable script.
    pub fn script(&self, rel: impl AsRef<Path>, body: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = self.write(rel, body);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        path
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("kept scratch directory {}", self.path.display());
        } else {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// Polls `cond` every few milliseconds until it holds; panics with `what`
/// after `timeout`.
pub fn wait_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    let mut interval = Duration::from_millis(2);
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        thread::sleep(interval);
        interval = (interval * 2).min(Duration::from_millis(50));
    }
}

/// Like [`wait_until`], returning the value once `f` gives one.
pub fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let mut out = None;
    wait_until(timeout, what, || {
        out = f();
        out.is_some()
    });
    out.unwrap()
}

/// True while `pid` exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().next())
            .is_some_and(|state| state != "Z"),
        Err(_) => false,
    }
}

/// True while `pid` is a live `pm-supervisor`.
pub fn is_supervisor(pid: i32) -> bool {
    alive(pid)
        && fs::read(format!("/proc/{pid}/cmdline"))
            .is_ok_and(|c| String::from_utf8_lossy(&c).contains("pm-supervisor"))
}

/// The live `pm-supervisor`s whose pidfiles are in `DATA/supervisor/`:
/// what a test's cleanup must end, by pid, whatever state it failed in.
pub fn supervisor_pids(data: &Path) -> Vec<i32> {
    let Ok(entries) = fs::read_dir(data.join("supervisor")) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|entry| entry.path().extension().is_some_and(|e| e == "pid"))
        .filter_map(|entry| fs::read_to_string(entry.path()).ok()?.trim().parse().ok())
        .filter(|&pid| is_supervisor(pid))
        .collect()
}

/// Ends a pid (and, if `group`, its process group) with SIGKILL on drop.
pub struct KillOnDrop {
    pub pid: i32,
    pub group: bool,
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if self.group {
            let _ = killpg(Pid::from_raw(self.pid), Signal::SIGKILL);
        }
        let _ = kill(Pid::from_raw(self.pid), Signal::SIGKILL);
    }
}

/// A child that is killed and reaped on drop.
pub struct ChildGuard(pub Child);

impl ChildGuard {
    pub fn pid(&self) -> i32 {
        self.0.id() as i32
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `cmd` to completion and returns its output.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Describes an output for assertion messages.
pub fn describe(cmd: &str, out: &Output) -> String {
    format!(
        "{cmd}: {}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
