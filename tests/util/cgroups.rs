//! The control groups a test's heart created, found and removed after the
//! test: every heart keeps its groups in `HIERARCHY/paasmaker/SCOPE/ID`,
//! where SCOPE is `h` and the 64-bit FNV-1a hash of its (canonical) data
//! directory in hex, so a test finds exactly its own heart's groups and
//! never touches another's. Every test file's heart guard calls [`clean`]
//! once its heart and supervisors are gone.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Polls `cond` until it holds or `timeout` passed; whether it held.
fn poll(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The scope name of the heart on `data` (as `pm-heart` computes it).
pub fn scope_name(data: &Path) -> String {
    let data = data.canonicalize().unwrap_or_else(|_| data.to_path_buf());
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in data.as_os_str().as_encoded_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("h{hash:016x}")
}

/// The mount points of every cgroup and cgroup2 file system.
fn hierarchies() -> Vec<PathBuf> {
    let text = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let fstype = right.split_whitespace().next()?;
            let point = left.split_whitespace().nth(4)?;
            (fstype == "cgroup" || fstype == "cgroup2").then(|| PathBuf::from(point))
        })
        .collect()
}

/// The scope directories of the heart on `data` that exist, one per
/// hierarchy.
pub fn scope_dirs(data: &Path) -> Vec<PathBuf> {
    let name = scope_name(data);
    hierarchies()
        .into_iter()
        .map(|root| root.join("paasmaker").join(&name))
        .filter(|dir| dir.is_dir())
        .collect()
}

/// The pids in the `cgroup.procs` of `dir`.
pub fn procs(dir: &Path) -> Vec<i32> {
    fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// Kills every process left in the groups of the heart on `data` and
/// removes the groups and the scope.
pub fn clean(data: &Path) {
    let scopes = scope_dirs(data);
    let groups: Vec<PathBuf> = scopes
        .iter()
        .filter_map(|scope| fs::read_dir(scope).ok())
        .flat_map(|entries| entries.flatten())
        .filter(|entry| entry.file_type().is_ok_and(|t| t.is_dir()))
        .map(|entry| entry.path())
        .collect();
    let mut left = Vec::new();
    let emptied = poll(Duration::from_secs(5), || {
        left = groups.iter().flat_map(|g| procs(g)).collect();
        for &pid in &left {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        left.is_empty()
    });
    if !emptied {
        eprintln!("cleanup: processes {left:?} are still in the groups of {data:?}");
    }
    for dir in groups.iter().chain(&scopes) {
        // Busy until its last process is gone.
        let _ = poll(Duration::from_secs(2), || {
            fs::remove_dir(dir).is_ok() || !dir.exists()
        });
    }
}
