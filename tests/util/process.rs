//! Processes seen from a test: whether one lives, what it is, and the
//! guards that end what a test started, by pid, even when the test fails.

use std::fs;
use std::path::Path;
use std::process::{Child, ExitStatus};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

use super::wait_for;

/// The fields of `/proc/PID/stat` after the command name: `state` is
/// index 0, `ppid` 1, `pgrp` 2, `starttime` 19.
fn stat_fields(pid: i32) -> Option<Vec<String>> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// True while `pid` exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    stat_fields(pid).is_some_and(|f| f.first().is_some_and(|state| state != "Z"))
}

/// The process group of `pid`.
pub fn group_of(pid: i32) -> Option<i32> {
    stat_fields(pid)?.get(2)?.parse().ok()
}

/// The start time of `pid`, in clock ticks since boot (field 22 of
/// proc(5)): with the pid, what identifies a process.
pub fn start_time(pid: i32) -> Option<u64> {
    stat_fields(pid)?.get(19)?.parse().ok()
}

/// True when some live process is in process group `pgid`.
pub fn group_alive(pgid: i32) -> bool {
    live_pids().any(|pid| group_of(pid) == Some(pgid))
}

/// True while `pid` is a live `pm-supervisor`.
pub fn is_supervisor(pid: i32) -> bool {
    alive(pid)
        && fs::read(format!("/proc/{pid}/cmdline"))
            .is_ok_and(|c| String::from_utf8_lossy(&c).contains("pm-supervisor"))
}

/// Every live process but this one.
fn live_pids() -> impl Iterator<Item = i32> {
    let me = std::process::id() as i32;
    fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
        .filter(move |&pid| pid != me && alive(pid))
}

/// True when `text` names `root` or a path below it.
fn names_path_below(text: &str, root: &str) -> bool {
    text.match_indices(root).any(|(i, _)| {
        let after = &text[i + root.len()..];
        after.is_empty() || after.starts_with('/')
    })
}

/// The live processes that belong to a test's scratch directory `root`:
/// their working directory is in it, or an argument names a path in it.
/// A scratch directory's name is unique (process id and counter), so this
/// finds what the test started, directly or not (supervisors, their
/// commands, daemons they left, Apache and its children), and nothing
/// else.
pub fn processes_under(root: &Path) -> Vec<i32> {
    let root_text = root.to_string_lossy().into_owned();
    live_pids()
        .filter(|&pid| {
            let cwd_below =
                fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|cwd| cwd.starts_with(root));
            cwd_below
                || fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|raw| {
                    raw.split(|&b| b == 0)
                        .any(|arg| names_path_below(&String::from_utf8_lossy(arg), &root_text))
                })
        })
        .collect()
}

/// Ends, with SIGKILL, every process of [`processes_under`] `root` (and
/// the process group of each that leads one), pass after pass until none
/// is left or 10 s have gone: a supervisor killed in one pass may have
/// started a command that the next pass finds. Never panics (it runs in
/// `drop`).
pub fn end_processes_under(root: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let pids = processes_under(root);
        if pids.is_empty() || Instant::now() >= deadline {
            return;
        }
        for pid in pids {
            if group_of(pid) == Some(pid) {
                let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
            }
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        thread::sleep(Duration::from_millis(10));
    }
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

    /// Sends `signal` to the child.
    pub fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.pid()), signal).unwrap();
    }

    /// Waits, at most `timeout`, for the child to exit.
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        wait_for(timeout, &format!("process {} to exit", self.pid()), || {
            self.0.try_wait().unwrap()
        })
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The live supervisors whose pidfiles are in `DATA/supervisor/`.
pub fn supervisor_pids(data: &Path) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir(data.join("supervisor")) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|entry| entry.path().extension().is_some_and(|e| e == "pid"))
        .filter_map(|entry| {
            std::fs::read_to_string(entry.path())
                .ok()?
                .trim()
                .parse()
                .ok()
        })
        .filter(|&pid| is_supervisor(pid))
        .collect()
}
