//! Processes: who a pid really is, and how a wait status becomes a code.
//!
//! A pid alone is never trusted: the kernel recycles them. A process is
//! identified by its pid *and* its start time (field 22 of
//! `/proc/PID/stat`, in clock ticks since boot), which together are unique
//! for the life of the machine; a check may also compare the command line.
//!
//! This module also holds the OS side of running a command: the spawn with
//! its pre-exec hook (credentials, parent-death signal), the detaching
//! re-spawn, waiting without reaping (`WNOWAIT`, so a pid stays reserved
//! until we choose to reap it) and signalling process groups.

use std::ffi::{CString, OsStr, OsString};
use std::fs;
use std::io;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use nix::errno::Errno;
use nix::libc;
use nix::sys::prctl;
use nix::sys::signal::{self, Signal};
use nix::sys::wait::{waitid, waitpid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::{getgrouplist, Gid, Pid, Uid, User};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

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

// ---------------------------------------------------------------------
// Spawning, waiting, signalling.
// ---------------------------------------------------------------------

/// The credentials a command runs with when a `user` is given, resolved
/// before the fork: the pre-exec hook may not allocate or read files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Credentials {
    /// The user's name, for messages.
    pub name: String,
    /// The user id.
    pub uid: Uid,
    /// The primary group.
    pub gid: Gid,
    /// Every group of the user, primary group included.
    pub groups: Vec<Gid>,
}

/// Looks `name` up in the user and group databases.
///
/// # Errors
///
/// The user is unknown, or the databases cannot be read.
pub(crate) fn resolve_user(name: &str) -> Result<Credentials> {
    let user = User::from_name(name)
        .map_err(|errno| Error::sys(format!("look up user {name}"), errno))?
        .ok_or_else(|| Error::invalid(format!("unknown user {name}")))?;
    let cname =
        CString::new(name).map_err(|_| Error::invalid(format!("bad user name {name:?}")))?;
    let groups = getgrouplist(&cname, user.gid)
        .map_err(|errno| Error::sys(format!("list the groups of user {name}"), errno))?;
    Ok(Credentials {
        name: name.to_owned(),
        uid: user.uid,
        gid: user.gid,
        groups,
    })
}

/// `CLOSE_RANGE_CLOEXEC` from `<linux/close_range.h>` (Linux 5.11).
const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;

/// Marks every file descriptor above 2 close-on-exec, so that nothing the
/// caller let us inherit reaches a command we start. Our own descriptors
/// are close-on-exec already (std opens everything with `O_CLOEXEC`).
///
/// Call it first thing, before any thread exists.
pub(crate) fn mark_inherited_cloexec() {
    // SAFETY: close_range only changes descriptor flags; no memory is
    // passed. With CLOSE_RANGE_CLOEXEC it closes nothing, so no `OwnedFd`
    // elsewhere in the program is invalidated.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3 as libc::c_uint,
            libc::c_uint::MAX,
            CLOSE_RANGE_CLOEXEC,
        )
    };
    if rc == 0 {
        return;
    }
    // Older kernels: walk the descriptor table.
    let Ok(dir) = fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<i32> = dir
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .filter(|&fd| fd > 2)
        .collect();
    for fd in fds {
        // SAFETY: F_SETFD with FD_CLOEXEC touches only the flags of `fd`;
        // a descriptor that was the directory listing and is closed now
        // just gives EBADF.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
}

/// Starts `cmd` as the supervised command: in its own process group (the
/// caller sets `process_group(0)`), as `credentials` if given, and with
/// SIGKILL as its parent-death signal, so it dies with the supervisor.
///
/// `spawn` returns only once the command has been executed or has failed
/// to be (std reports exec failures through a close-on-exec pipe), so the
/// returned pid is already the application and its process group exists.
///
/// Call it from the thread that lives as long as the supervisor: the
/// parent-death signal fires when the *thread* that forked exits.
///
/// # Errors
///
/// The fork, a credential change, or the exec failed; the `io::Error`
/// carries the OS reason (`ENOENT`, `EACCES`, ...).
pub(crate) fn spawn_supervised(
    cmd: &mut Command,
    credentials: Option<&Credentials>,
) -> io::Result<Child> {
    let parent = nix::unistd::getpid();
    let creds = credentials.map(|c| (c.uid, c.gid, c.groups.clone()));
    let ignored = ignored_signals();
    // SAFETY: the hook runs in the child between fork and exec, where only
    // async-signal-safe calls are allowed. It calls setgroups, setgid,
    // setuid, prctl and getppid, thin wrappers over system calls that
    // neither allocate nor lock; `creds` was built before the fork and is
    // only read.
    unsafe {
        cmd.pre_exec(move || {
            // An ignored signal stays ignored across exec; the command
            // must start with default dispositions.
            for signo in 1..=64 {
                if ignored & (1 << (signo - 1)) != 0 {
                    kernel_sigaction(signo, Some(libc::SIG_DFL));
                }
            }
            if let Some((uid, gid, groups)) = &creds {
                nix::unistd::setgroups(groups)?;
                nix::unistd::setgid(*gid)?;
                nix::unistd::setuid(*uid)?;
            }
            // After the credential change: changing ids clears the
            // parent-death signal.
            prctl::set_pdeathsig(Signal::SIGKILL)?;
            // The supervisor may have died before the line above; then
            // nothing would ever kill us.
            if nix::unistd::getppid() != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        })
    };
    cmd.spawn()
}

/// The kernel's `struct sigaction` for `rt_sigaction` on x86_64 (glibc
/// and musl refuse to touch their reserved real-time signals, 32 to 34,
/// which a caller may still have left ignored).
#[repr(C)]
struct KernelSigaction {
    handler: libc::sighandler_t,
    flags: libc::c_ulong,
    restorer: usize,
    mask: u64,
}

/// Reads the disposition of `signo` and, with `set`, replaces it with the
/// handler `set` (`SIG_DFL`, `SIG_IGN`). Returns the old handler, or
/// `None` if the call failed. Async-signal-safe: one system call.
fn kernel_sigaction(
    signo: libc::c_int,
    set: Option<libc::sighandler_t>,
) -> Option<libc::sighandler_t> {
    let new = set.map(|handler| KernelSigaction {
        handler,
        flags: 0,
        restorer: 0,
        mask: 0,
    });
    let mut old = KernelSigaction {
        handler: 0,
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    let new_ptr = new
        .as_ref()
        .map_or(std::ptr::null(), |n| n as *const KernelSigaction);
    // SAFETY: both pointers are null or point to live, properly laid-out
    // structures for the kernel's rt_sigaction on this architecture, and
    // the size of the mask is the kernel's (8 bytes). Setting SIG_DFL or
    // SIG_IGN installs no code.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_rt_sigaction,
            signo,
            new_ptr,
            &mut old as *mut KernelSigaction,
            8usize,
        )
    };
    (rc == 0).then_some(old.handler)
}

/// The signals this process ignores, bit `n - 1` for signal `n`: they
/// would stay ignored in a command we execute.
pub(crate) fn ignored_signals() -> u64 {
    let mut mask = 0u64;
    for signo in 1..=64 {
        if kernel_sigaction(signo, None) == Some(libc::SIG_IGN) {
            mask |= 1 << (signo - 1);
        }
    }
    mask
}

/// Runs the program of this process again, detached: `arg0` and `args`
/// as its argument vector, in a new session (`setsid`), with standard
/// input, output and error on `/dev/null`. The new process is not waited
/// for: once the caller exits, init (or the nearest subreaper) adopts it.
///
/// # Errors
///
/// The program cannot be run.
pub(crate) fn respawn_detached(arg0: &OsStr, args: &[&OsStr]) -> Result<u32> {
    let exe = Path::new("/proc/self/exe");
    let mut cmd = Command::new(exe);
    cmd.arg0(arg0)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: setsid is a single async-signal-safe system call; the hook
    // touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid()?;
            Ok(())
        })
    };
    let child = cmd.spawn().map_err(|e| Error::io("run", exe, e))?;
    Ok(child.id())
}

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

/// Sends `signal` to the process group `pgid`.
///
/// # Errors
///
/// The `kill` failed (`ESRCH`: the group is empty).
pub(crate) fn signal_group(pgid: Pid, signal: Signal) -> nix::Result<()> {
    signal::killpg(pgid, signal)
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
    }
}
