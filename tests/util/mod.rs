//! Shared test helpers, for the integration tests and the benchmarks
//! (which include this module with `#[path]`): binary paths, the test web
//! servers, scratch directories and bounded waits here; the heart
//! fixture, the HTTP client, the port blocks, the recording HTTP server
//! and the process guards in the submodules.

#![allow(dead_code)]

pub mod cgroups;
pub mod heart;
pub mod http;
pub mod ports;
pub mod process;
pub mod recorder;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

// The names most tests use; a benchmark that includes this module uses
// fewer of them.
#[allow(unused_imports)]
pub use heart::TestHeart;
#[allow(unused_imports)]
pub use process::{alive, is_supervisor, supervisor_pids, ChildGuard, KillOnDrop};

pub const SUPERVISOR: &str = env!("CARGO_BIN_EXE_pm-supervisor");
pub const HEART: &str = env!("CARGO_BIN_EXE_pm-heart");
pub const RUNTIME: &str = env!("CARGO_BIN_EXE_pm-runtime");

/// A Python web server script: `python3 SCRIPT PORT` serves on
/// 127.0.0.1:PORT with the request handler class `Handler` that the
/// Python source `handler` defines (`http.server` is imported). It retries
/// its bind on EADDRINUSE for up to 10 s, so that a port just released by
/// another instance of the same test does not fail it.
pub fn python_server(handler: &str) -> String {
    format!(
        r#"import errno, http.server, sys, time
{handler}
port = int(sys.argv[1])
deadline = time.time() + 10
while True:
    try:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        break
    except OSError as e:
        if e.errno != errno.EADDRINUSE or time.time() > deadline:
            raise
        time.sleep(0.05)
server.serve_forever()
"#
    )
}

/// A test web application: `python3 server.py PORT` serves its working
/// directory on 127.0.0.1:PORT (a [`python_server`]).
pub fn web_server_py() -> String {
    python_server("Handler = http.server.SimpleHTTPRequestHandler")
}

/// A scratch directory, removed on drop unless the test failed
/// (then it is kept for a look and its path printed).
pub struct Dir {
    pub path: PathBuf,
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

impl Dir {
    /// A new, empty directory below the system's temporary directory.
    pub fn new(name: &str) -> Dir {
        Dir::below(&std::env::temp_dir(), name)
    }

    /// A new, empty directory on tmpfs (`/dev/shm`) when there is one,
    /// else like [`Dir::new`]: for benchmarks, so that the disk is not
    /// measured.
    pub fn on_tmpfs(name: &str) -> Dir {
        let shm = Path::new("/dev/shm");
        if shm.is_dir() {
            Dir::below(shm, name)
        } else {
            Dir::new(name)
        }
    }

    fn below(root: &Path, name: &str) -> Dir {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let path = root.join(format!(
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

    /// Creates the directory `rel` (and its parents) and returns its path.
    pub fn mkdir(&self, rel: impl AsRef<Path>) -> PathBuf {
        let path = self.join(rel);
        fs::create_dir_all(&path).unwrap();
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

/// Waits for `path` to hold a number (a pid that a script wrote).
pub fn pid_in(path: &Path, timeout: Duration) -> i32 {
    wait_for(timeout, &format!("a pid in {}", path.display()), || {
        fs::read_to_string(path).ok()?.trim().parse().ok()
    })
}

/// Runs `cmd` to completion and returns its output.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Checks that the command `what` exited `code`; its stderr.
pub fn exited_with(out: &Output, code: i32, what: &str) -> String {
    assert_eq!(out.status.code(), Some(code), "{}", describe(what, out));
    String::from_utf8_lossy(&out.stderr).into_owned()
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
