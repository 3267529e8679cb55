//! Starting commands: the supervised spawn with its pre-exec hook
//! (default signal dispositions, credentials, parent-death signal), the
//! user lookup done before the fork, descriptor hygiene, and the
//! detaching fork of `pm-supervisor --detach`.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};

use nix::errno::Errno;
use nix::libc;
use nix::sys::prctl;
use nix::sys::signal::Signal;
use nix::unistd::{getgrouplist, ForkResult, Gid, Uid, User};

use crate::error::{Error, Result};

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
    // async-signal-safe calls are allowed. It makes raw rt_sigaction
    // calls and calls setgroups, setgid, setuid, prctl and getppid, thin
    // wrappers over system calls that neither allocate nor lock; `creds`
    // and `ignored` were built before the fork and are only read.
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

/// The kernel's `struct sigaction` for `rt_sigaction`, as laid out on
/// x86_64 and aarch64 (the raw call is needed because glibc and musl
/// refuse to touch their reserved real-time signals, 32 to 34, which a
/// caller may still have left ignored).
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
compile_error!("KernelSigaction is laid out for x86_64 and aarch64 only: check the kernel's struct sigaction for this architecture");

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

/// Which side of [`detach`] we are on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Detached {
    /// The original process: it should exit at once.
    Parent,
    /// The detached copy, in a session of its own with standard input,
    /// output and error on `/dev/null`: it goes on.
    Child,
}

/// The number of threads of this process, from `/proc/self/status`.
fn thread_count() -> Option<usize> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("Threads:"))?
        .trim()
        .parse()
        .ok()
}

/// Forks; the child starts a new session and points its standard input,
/// output and error at `/dev/null` (so a caller that reads our stderr to
/// its end is not held by the child), and the parent is expected to exit
/// at once, so that init (or the nearest subreaper) adopts the child and
/// the caller never has to reap it. Unlike a re-exec, this keeps the
/// command line (and saves an exec on every launch).
///
/// # Errors
///
/// The process has more than one thread (a forked copy of a threaded
/// process may only make async-signal-safe calls), `/dev/null` cannot be
/// opened, or `fork` fails.
pub(crate) fn detach() -> Result<Detached> {
    if thread_count() != Some(1) {
        return Err(Error::sys("fork a process with threads", Errno::EBUSY));
    }
    let null = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(|e| Error::io("open", "/dev/null", e))?;
    // SAFETY: the process has exactly one thread (checked above, and
    // nothing between the check and the fork starts one), so the child is
    // a complete copy and may run any code, allocation included.
    match unsafe { nix::unistd::fork() } {
        Ok(ForkResult::Parent { .. }) => Ok(Detached::Parent),
        Ok(ForkResult::Child) => {
            let redirect = nix::unistd::dup2_stdin(&null)
                .and_then(|()| nix::unistd::dup2_stdout(&null))
                .and_then(|()| nix::unistd::dup2_stderr(&null));
            redirect.map_err(|errno| Error::sys("redirect to /dev/null", errno))?;
            nix::unistd::setsid().map_err(|errno| Error::sys("start a new session", errno))?;
            Ok(Detached::Child)
        }
        Err(errno) => Err(Error::sys("fork", errno)),
    }
}
