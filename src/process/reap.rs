//! Waiting for children without reaping them (`WNOWAIT`, so a pid stays
//! reserved until we choose to reap it), reaping, finding children, and
//! signalling a process group while its leader's pid is still ours.

use std::fs;

use nix::errno::Errno;
use nix::sys::prctl;
use nix::sys::signal::{self, Signal};
use nix::sys::wait::{waitid, waitpid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::stat;
use crate::error::{Error, Result};

/// Blocks until some child has ended and returns its status without
/// reaping it (`WNOWAIT`): its pid stays reserved until [`reap`].
///
/// # Errors
///
/// `ECHILD` when there is no child; `EINTR` is retried.
pub(crate) fn wait_any_unreaped() -> nix::Result<WaitStatus> {
    loop {
        match waitid(Id::All, WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT) {
            Err(Errno::EINTR) => {}
            other => return other,
        }
    }
}

/// Blocks until the child `pid` has ended and returns its status without
/// reaping it (`WNOWAIT`): its pid, and so its process group id, stays
/// reserved until [`reap`].
///
/// # Errors
///
/// `ECHILD` when `pid` is not a child; `EINTR` is retried.
pub(crate) fn wait_unreaped(pid: Pid) -> nix::Result<WaitStatus> {
    loop {
        match waitid(Id::Pid(pid), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT) {
            Err(Errno::EINTR) => {}
            other => return other,
        }
    }
}

/// Reaps the ended child `pid`, returning its status.
///
/// # Errors
///
/// `ECHILD` when `pid` is not a child; `EINTR` is retried.
pub(crate) fn reap(pid: Pid) -> nix::Result<WaitStatus> {
    loop {
        match waitpid(pid, None) {
            Err(Errno::EINTR) => {}
            other => return other,
        }
    }
}

/// Reaps every ended child without blocking. Returns `false` once no child
/// is left at all (`ECHILD`).
pub(crate) fn reap_ended() -> bool {
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => return true,
            Ok(_) | Err(Errno::EINTR) => {}
            Err(_) => return false,
        }
    }
}

/// The live (non-zombie) children of `parent`, from `/proc`.
pub(crate) fn children_of(parent: i32) -> Vec<i32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| stat(pid).is_some_and(|s| s.ppid == parent && s.state != b'Z'))
        .collect()
}

/// Makes this process a child subreaper: orphaned descendants are
/// re-parented to it instead of init.
///
/// # Errors
///
/// The `prctl` failed.
pub(crate) fn become_subreaper() -> Result<()> {
    prctl::set_child_subreaper(true).map_err(|errno| Error::sys("become a child subreaper", errno))
}

/// Sends `signal` to the process group led by our unreaped child
/// `leader`; if the group is empty because the leader moved to another
/// group, to the leader alone. The caller guarantees that `leader` has not
/// been reaped, so neither number can have been recycled.
///
/// # Errors
///
/// The `kill` failed.
pub(crate) fn signal_group(leader: Pid, signal: Signal) -> nix::Result<()> {
    match signal::killpg(leader, signal) {
        Err(Errno::ESRCH) => signal::kill(leader, signal),
        other => other,
    }
}
