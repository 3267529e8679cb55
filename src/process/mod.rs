//! Processes: who a pid really is, and how a wait status becomes a code.
//!
//! A pid alone is never trusted: the kernel recycles them. A process is
//! identified by its pid *and* its start time (field 22 of
//! `/proc/PID/stat`, in clock ticks since boot), which together are unique
//! for the life of the machine; a check may also compare the command line.
//!
//! The OS side of running commands lives beside it: [`spawn`] (the spawn
//! with its pre-exec hook, credentials, the detaching fork), [`reap`]
//! (waiting without reaping, reaping, signalling process groups),
//! [`bounded`] (a child run with a deadline, its whole group killed when
//! it outlives it) and [`forward`] (signals forwarded to a child that may
//! be signalled only until it ends). [`code_of_status`] is the one mapping
//! from how a process ended to the code the suite reports.

pub(crate) mod bounded;
pub(crate) mod forward;
pub(crate) mod memory;
pub(crate) mod reap;
pub(crate) mod spawn;
pub(crate) mod usage;

use std::ffi::OsString;
use std::fs;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

use nix::sys::signal::{self, Signal};
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

pub(crate) use bounded::{Bounded, Ended};
pub(crate) use reap::{become_subreaper, children_of, reap_ended, signal_group};
pub(crate) use spawn::{
    confine, detach, mark_inherited_cloexec, resolve_user, spawn_supervised, Confinement,
    Credentials, Detached, Notifier,
};

/// A process as the kernel knows it: pid plus start time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// The process id.
    pub pid: i32,
    /// Start time in clock ticks since boot, from `/proc/PID/stat`.
    pub start_time: u64,
}

/// The fields of `/proc/PID/stat` that we use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stat {
    /// One-letter state: `R`, `S`, `Z`, ...
    pub state: u8,
    /// Parent pid.
    pub ppid: i32,
    /// Start time in clock ticks since boot.
    pub start_time: u64,
}

/// Parses the text of `/proc/PID/stat`. The command name in parentheses
/// may contain spaces and parentheses itself, so parsing starts after the
/// last `)`.
pub(crate) fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    // Fields after the name, numbered from 3 as in proc(5).
    let state = fields.next()?.bytes().next()?;
    let ppid = fields.next()?.parse().ok()?;
    let start_time = fields.nth(22 - 5)?.parse().ok()?;
    Some(Stat {
        state,
        ppid,
        start_time,
    })
}

/// Reads `/proc/PID/stat`; `None` when there is no such process.
pub(crate) fn stat(pid: i32) -> Option<Stat> {
    parse_stat(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// The argument vector of `pid` from `/proc/PID/cmdline`.
pub(crate) fn cmdline(pid: i32) -> Option<Vec<OsString>> {
    let raw = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let mut args: Vec<OsString> = raw
        .split(|&b| b == 0)
        .map(|arg| OsString::from_vec(arg.to_vec()))
        .collect();
    if args.last().is_some_and(|a| a.is_empty()) {
        args.pop();
    }
    Some(args)
}

impl Identity {
    /// The identity of the live (non-zombie) process `pid`, if there is one.
    pub fn of(pid: i32) -> Option<Identity> {
        let stat = stat(pid)?;
        (stat.state != b'Z').then_some(Identity {
            pid,
            start_time: stat.start_time,
        })
    }

    /// True when the process is still the same one and not a zombie.
    pub fn is_alive(&self) -> bool {
        Identity::of(self.pid) == Some(*self)
    }

    /// Sends `signal` to the process, only if it is still this identity.
    /// Returns false when it is gone (or is now another process).
    pub fn signal(&self, signal: Signal) -> bool {
        // The window between the check and the kill is a few microseconds;
        // pid reuse needs the whole pid space to wrap in between.
        self.is_alive() && signal::kill(Pid::from_raw(self.pid), signal).is_ok()
    }
}

/// Reported code for a process that exited with `status`.
pub(crate) fn code_of_exit(status: i32) -> i32 {
    status
}

/// Reported code for a process killed by `signal` that nobody asked for:
/// `128 + n`, as shells and tini report it.
pub(crate) fn code_of_signal(signal: Signal) -> i32 {
    128 + signal as i32
}

/// The code for a process that ended with `status`: its exit status, or
/// `128 + n` when signal `n` killed it, as shells and tini report it. The
/// supervisor's one exception (a stop that was asked for reports 0) is its
/// own policy, on top of this.
pub(crate) fn code_of_status(status: ExitStatus) -> i32 {
    match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(signal)) => 128 + signal,
        (None, None) => 128,
    }
}

/// Test support: spawns `sleep 60` as the leader of a new process group
/// with the pid `pid`, which must be free, by setting the last pid of the
/// pid namespace (`/proc/sys/kernel/ns_last_pid`, root only) just below
/// it: what pid reuse does on a busy machine. `None` when it cannot be
/// set, or another process took the pid first every time.
/// The code for a child whose wait status is `status`, by the rule of
/// [`code_of_status`]; `None` for a status that is no end (stopped,
/// continued, still alive).
pub(crate) fn code_of_wait(status: WaitStatus) -> Option<i32> {
    match status {
        WaitStatus::Exited(_, code) => Some(code_of_exit(code)),
        WaitStatus::Signaled(_, signal, _) => Some(code_of_signal(signal)),
        _ => None,
    }
}

#[cfg(test)]
pub(crate) fn squat(pid: i32) -> Option<std::process::Child> {
    use std::os::unix::process::CommandExt;
    for _ in 0..100 {
        fs::write("/proc/sys/kernel/ns_last_pid", (pid - 1).to_string()).ok()?;
        let mut child = std::process::Command::new("sleep")
            .arg("60")
            .process_group(0)
            .spawn()
            .ok()?;
        if child.id() as i32 == pid {
            return Some(child);
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_stat_handles_names_with_spaces_and_parens() {
        let text =
            "1234 (a b) c)) S 1 1234 1234 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 987654 1000 100";
        let stat = parse_stat(text).unwrap();
        assert_eq!(stat.state, b'S');
        assert_eq!(stat.ppid, 1);
        assert_eq!(stat.start_time, 987654);
    }

    #[test]
    fn own_identity_is_alive_and_stable() {
        let me = Identity::of(std::process::id() as i32).unwrap();
        assert!(me.is_alive());
        let other = Identity {
            start_time: me.start_time + 1,
            ..me
        };
        assert!(!other.is_alive());
    }

    #[test]
    fn cmdline_of_self_names_the_test_binary() {
        let args = cmdline(std::process::id() as i32).unwrap();
        assert!(!args.is_empty());
    }

    #[test]
    fn codes_follow_the_shell_convention() {
        assert_eq!(code_of_exit(3), 3);
        assert_eq!(code_of_signal(Signal::SIGKILL), 137);
        assert_eq!(code_of_status(ExitStatus::from_raw(3 << 8)), 3);
        assert_eq!(code_of_status(ExitStatus::from_raw(9)), 137);
        let pid = Pid::from_raw(1);
        assert_eq!(code_of_wait(WaitStatus::Exited(pid, 3)), Some(3));
        assert_eq!(
            code_of_wait(WaitStatus::Signaled(pid, Signal::SIGKILL, false)),
            Some(137)
        );
        assert_eq!(code_of_wait(WaitStatus::StillAlive), None);
    }
}
