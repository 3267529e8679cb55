//! Starting commands: the supervised spawn with its pre-exec hook
//! (default signal dispositions, control groups, RLIMIT_NOFILE,
//! credentials, parent-death signal), the user lookup done before the
//! fork, descriptor hygiene, and the detaching fork of `pm-supervisor
//! --detach`.

use std::ffi::{CStr, CString};
use std::fs;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command};

use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::libc;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
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

/// Looks `user` up in the user and group databases: a user name, or a
/// numeric uid when no user has that name.
///
/// # Errors
///
/// The user is unknown, or the databases cannot be read.
pub(crate) fn resolve_user(user: &str) -> Result<Credentials> {
    let by_name =
        User::from_name(user).map_err(|errno| Error::sys(format!("look up user {user}"), errno))?;
    let found = match (by_name, user.parse::<u32>()) {
        (Some(found), _) => Some(found),
        (None, Ok(uid)) => User::from_uid(Uid::from_raw(uid))
            .map_err(|errno| Error::sys(format!("look up uid {uid}"), errno))?,
        (None, Err(_)) => None,
    };
    let user = found.ok_or_else(|| Error::invalid(format!("unknown user {user}")))?;
    let name = user.name;
    let cname = CString::new(name.as_str())
        .map_err(|_| Error::invalid(format!("bad user name {name:?}")))?;
    let groups = getgrouplist(&cname, user.gid)
        .map_err(|errno| Error::sys(format!("list the groups of user {name}"), errno))?;
    Ok(Credentials {
        name,
        uid: user.uid,
        gid: user.gid,
        groups,
    })
}

/// Takes the credentials `(uid, gid, groups)`: groups first, then the
/// group, then the user (each step needs the privileges the next drops).
/// Async-signal-safe: three system calls.
fn become_user((uid, gid, groups): &(Uid, Gid, Vec<Gid>)) -> io::Result<()> {
    nix::unistd::setgroups(groups)?;
    nix::unistd::setgid(*gid)?;
    nix::unistd::setuid(*uid)?;
    Ok(())
}

/// Prepares `cmd`, a command that is not supervised (an instance's
/// startup command, run by the timed runner), to join the control groups
/// of `confinement` and take its RLIMIT_NOFILE, then to run as
/// `credentials` if given: the same steps, in the same order, as
/// [`spawn_supervised`], without the parent-death signal (the runner
/// kills the command's group itself). A failed step fails the spawn with
/// the step's OS error.
pub(crate) fn confine(
    cmd: &mut Command,
    credentials: Option<&Credentials>,
    confinement: &Confinement,
) {
    let creds = credentials.map(|c| (c.uid, c.gid, c.groups.clone()));
    let procs = confinement.procs.clone();
    let nofile = confinement.nofile;
    // SAFETY: the hook runs in the child between fork and exec, where only
    // async-signal-safe calls are allowed: open, write, close, setrlimit,
    // setgroups, setgid and setuid, on values built before the fork and
    // only read here.
    unsafe {
        cmd.pre_exec(move || {
            for path in &procs {
                join_cgroup(path)?;
            }
            if let Some(n) = nofile {
                set_nofile(n)?;
            }
            if let Some(creds) = &creds {
                become_user(creds)?;
            }
            Ok(())
        })
    };
}

/// The most control groups a command may join (one per hierarchy: the
/// hybrid layout has five).
const GROUPS_MAX: usize = 16;

/// What a command is confined to besides its credentials, prepared
/// before the fork: the control groups it joins and its RLIMIT_NOFILE.
/// The default confines nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Confinement {
    /// The group directories, for messages.
    groups: Vec<PathBuf>,
    /// Their `cgroup.procs` files, as the pre-exec hook opens them.
    procs: Vec<CString>,
    /// RLIMIT_NOFILE, soft and hard.
    nofile: Option<u64>,
}

impl Confinement {
    /// Joins the control groups `groups` (directories) and sets
    /// RLIMIT_NOFILE to `nofile`.
    ///
    /// # Errors
    ///
    /// A directory is not absolute or holds a NUL byte, or there are more
    /// than 16.
    pub(crate) fn new(groups: &[PathBuf], nofile: Option<u64>) -> Result<Confinement> {
        if groups.len() > GROUPS_MAX {
            return Err(Error::invalid(format!(
                "{} control groups given: at most {GROUPS_MAX} can be joined",
                groups.len()
            )));
        }
        let mut procs = Vec::with_capacity(groups.len());
        for dir in groups {
            let file = crate::cgroup::procs_file(dir);
            let path = CString::new(file.as_os_str().as_bytes())
                .ok()
                .filter(|_| dir.is_absolute())
                .ok_or_else(|| {
                    Error::invalid(format!(
                        "control group {dir:?} is not an absolute path without NUL bytes"
                    ))
                })?;
            procs.push(path);
        }
        Ok(Confinement {
            groups: groups.to_vec(),
            procs,
            nofile,
        })
    }

    fn is_empty(&self) -> bool {
        self.procs.is_empty() && self.nofile.is_none()
    }
}

/// Which step of the pre-exec hook failed, as the child reports it to
/// the parent: [`STEP_NOFILE`], or `STEP_GROUP + i` for group `i`.
const STEP_NOFILE: u8 = 0;
const STEP_GROUP: u8 = 1;

/// Joins a control group: writes `0` (this process) to its
/// `cgroup.procs`. Async-signal-safe: open, write and close.
fn join_cgroup(procs: &CStr) -> io::Result<()> {
    // SAFETY: `procs` is a valid NUL-terminated path built before the
    // fork; open allocates nothing in this process.
    let fd = unsafe { libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened by us; the buffer is a live static
    // byte of length 1.
    let written = unsafe { libc::write(fd, b"0".as_ptr().cast(), 1) };
    let err = io::Error::last_os_error();
    // SAFETY: `fd` is ours and closed exactly once.
    unsafe { libc::close(fd) };
    match written {
        1 => Ok(()),
        n if n < 0 => Err(err),
        _ => Err(io::Error::from_raw_os_error(libc::EIO)),
    }
}

/// Sets RLIMIT_NOFILE, soft and hard, to `n`. Async-signal-safe: one
/// system call.
fn set_nofile(n: u64) -> io::Result<()> {
    let limit = libc::rlimit {
        rlim_cur: n as libc::rlim_t,
        rlim_max: n as libc::rlim_t,
    };
    // SAFETY: `limit` is a live, properly laid-out rlimit; setrlimit only
    // reads it.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Tells the parent which step failed: one byte on the report pipe (none
/// when `fd` is -1). Async-signal-safe: one write.
fn note_step(fd: libc::c_int, step: u8) {
    if fd >= 0 {
        // SAFETY: `fd` is the write end of a pipe created before the fork;
        // the buffer is a live local byte of length 1.
        unsafe { libc::write(fd, (&step as *const u8).cast(), 1) };
    }
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
/// caller sets `process_group(0)`), in the control groups of
/// `confinement` and with its RLIMIT_NOFILE, as `credentials` if given,
/// and with SIGKILL as its parent-death signal, so it dies with the
/// supervisor.
///
/// The groups are joined in the child before anything else and before the
/// exec, so that every process the command ever forks is in them; then
/// the limit is set, then the credentials are changed (joining a group
/// and raising a hard limit need the privileges dropped after).
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
/// carries the OS reason (`ENOENT`, `EACCES`, ...). A control group that
/// cannot be joined, or a limit that cannot be set, is an error without
/// an OS code (so that it is not taken for a missing program) whose
/// message names the group or the limit and gives the reason; the
/// command is not run.
pub(crate) fn spawn_supervised(
    cmd: &mut Command,
    credentials: Option<&Credentials>,
    confinement: &Confinement,
) -> io::Result<Child> {
    let parent = nix::unistd::getpid();
    let creds = credentials.map(|c| (c.uid, c.gid, c.groups.clone()));
    let ignored = ignored_signals();
    let procs = confinement.procs.clone();
    let nofile = confinement.nofile;
    // The child says which step failed on this pipe; std only passes the
    // errno back.
    let report = if confinement.is_empty() {
        None
    } else {
        Some(nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?)
    };
    let report_fd = report.as_ref().map_or(-1, |(_, w)| w.as_raw_fd());
    // SAFETY: the hook runs in the child between fork and exec, where only
    // async-signal-safe calls are allowed. It makes raw rt_sigaction,
    // open, write, close and setrlimit calls, and calls setgroups,
    // setgid, setuid, prctl and getppid, thin wrappers over system calls
    // that neither allocate nor lock; `creds`, `ignored`, `procs` and
    // `report_fd` were built before the fork and are only read.
    unsafe {
        cmd.pre_exec(move || {
            // An ignored signal stays ignored across exec; the command
            // must start with default dispositions.
            for signo in 1..=64 {
                if ignored & (1 << (signo - 1)) != 0 {
                    kernel_sigaction(signo, Some(libc::SIG_DFL));
                }
            }
            for (i, path) in procs.iter().enumerate() {
                if let Err(err) = join_cgroup(path) {
                    note_step(report_fd, STEP_GROUP + i as u8);
                    return Err(err);
                }
            }
            if let Some(n) = nofile {
                if let Err(err) = set_nofile(n) {
                    note_step(report_fd, STEP_NOFILE);
                    return Err(err);
                }
            }
            if let Some(creds) = &creds {
                become_user(creds)?;
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
    let result = cmd.spawn();
    let Some((read_end, write_end)) = report else {
        return result;
    };
    drop(write_end);
    result.map_err(|err| {
        // The child wrote its byte before std's own report of the error,
        // which `spawn` has read: it is in the pipe now.
        let mut step = [0u8; 1];
        if nix::unistd::read(&read_end, &mut step) != Ok(1) {
            return err;
        }
        let reason = match err.raw_os_error() {
            Some(errno) => Errno::from_raw(errno).desc().to_owned(),
            None => err.to_string(),
        };
        let message = match step[0] {
            STEP_NOFILE => format!(
                "unable to set RLIMIT_NOFILE to {}: {reason}",
                nofile.unwrap_or_default()
            ),
            n => match confinement.groups.get(usize::from(n - STEP_GROUP)) {
                Some(dir) => format!("unable to join control group {}: {reason}", dir.display()),
                None => return err,
            },
        };
        io::Error::other(message)
    })
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
#[derive(Debug)]
pub(crate) enum Detached {
    /// The original process: it waits for the copy's word, then exits.
    Parent(Waiter),
    /// The detached copy, in a session of its own with standard input,
    /// output and error on `/dev/null`: it goes on, and tells the parent
    /// how its start went.
    Child(Notifier),
}

/// The parent's end of the word from the detached copy.
#[derive(Debug)]
pub(crate) struct Waiter(OwnedFd);

/// The detached copy's end: one byte, then closed.
#[derive(Debug)]
pub(crate) struct Notifier(OwnedFd);

impl Waiter {
    /// Waits at most `timeout` for the detached copy's word: `Some(0)`
    /// when it started (or recorded why it could not), `Some(n)` for the
    /// exit status it asks the parent to exit with, `None` when it died or
    /// said nothing in time.
    pub(crate) fn wait(self, timeout: Duration) -> Option<u8> {
        let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        let mut fds = [PollFd::new(self.0.as_fd(), PollFlags::POLLIN)];
        loop {
            match poll(
                &mut fds,
                PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
            ) {
                Err(Errno::EINTR) => continue,
                Ok(0) | Err(_) => return None,
                Ok(_) => break,
            }
        }
        let mut byte = [0u8; 1];
        match nix::unistd::read(&self.0, &mut byte) {
            Ok(1) => Some(byte[0]),
            _ => None,
        }
    }
}

impl Notifier {
    /// Tells the parent to exit with `code` (0: started).
    pub(crate) fn tell(self, code: u8) {
        let _ = nix::unistd::write(&self.0, &[code]);
    }
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
/// its end is not held by the child). The parent waits for the child's
/// word through a close-on-exec pipe ([`Waiter`], [`Notifier`]), then
/// exits, so that init (or the nearest subreaper) adopts the child, the
/// caller never has to reap it, and the parent's exit status says whether
/// the child got its command running and recorded. Unlike a re-exec, this
/// keeps the command line (and saves an exec on every launch).
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
    let (read, write) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|errno| Error::sys("create a pipe", errno))?;
    // SAFETY: the process has exactly one thread (checked above, and
    // nothing between the check and the fork starts one), so the child is
    // a complete copy and may run any code, allocation included.
    match unsafe { nix::unistd::fork() } {
        Ok(ForkResult::Parent { .. }) => {
            drop(write);
            Ok(Detached::Parent(Waiter(read)))
        }
        Ok(ForkResult::Child) => {
            let redirect = nix::unistd::dup2_stdin(&null)
                .and_then(|()| nix::unistd::dup2_stdout(&null))
                .and_then(|()| nix::unistd::dup2_stderr(&null));
            redirect.map_err(|errno| Error::sys("redirect to /dev/null", errno))?;
            nix::unistd::setsid().map_err(|errno| Error::sys("start a new session", errno))?;
            drop(read);
            Ok(Detached::Child(Notifier(write)))
        }
        Err(errno) => Err(Error::sys("fork", errno)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Stdio;

    use crate::fsutil::Scratch;

    #[test]
    fn users_are_found_by_name_or_by_uid() {
        let by_name = resolve_user("root").unwrap();
        assert_eq!((by_name.uid.as_raw(), by_name.gid.as_raw()), (0, 0));
        let by_uid = resolve_user("0").unwrap();
        assert_eq!(by_uid, by_name);
        let err = resolve_user("no-such-user-here").unwrap_err();
        assert_eq!(err.to_string(), "unknown user no-such-user-here");
    }

    fn shell(script: &str) -> Command {
        let mut cmd = Command::new("/bin/sh");
        cmd.args(["-c", script]).stdin(Stdio::null());
        cmd
    }

    #[test]
    fn confinement_refuses_relative_paths_nul_bytes_and_too_many_groups() {
        assert!(Confinement::new(&[PathBuf::from("/sys/fs/cgroup/x")], None).is_ok());
        assert!(Confinement::new(&[PathBuf::from("sys/fs/cgroup/x")], None).is_err());
        assert!(Confinement::new(&[PathBuf::from("/a\0b")], None).is_err());
        let many = vec![PathBuf::from("/g"); GROUPS_MAX + 1];
        assert!(Confinement::new(&many, None).is_err());
        assert!(Confinement::default().is_empty());
    }

    #[test]
    fn nofile_sets_the_soft_and_hard_limit_of_the_command() {
        let scratch = Scratch::new("spawn-nofile");
        let out = scratch.0.join("limits");
        let confinement = Confinement::new(&[], Some(64)).unwrap();
        let mut cmd = shell(&format!(
            "echo $(ulimit -Sn) $(ulimit -Hn) > {}",
            out.display()
        ));
        let status = spawn_supervised(&mut cmd, None, &confinement)
            .unwrap()
            .wait()
            .unwrap();
        assert!(status.success());
        assert_eq!(fs::read_to_string(&out).unwrap(), "64 64\n");
    }

    #[test]
    fn a_group_that_cannot_be_joined_is_a_start_failure_naming_it() {
        let scratch = Scratch::new("spawn-join");
        let ran = scratch.0.join("ran");
        let group = scratch.0.join("no-such-group");
        let confinement = Confinement::new(std::slice::from_ref(&group), None).unwrap();
        let mut cmd = shell(&format!("echo > {}", ran.display()));
        let err = spawn_supervised(&mut cmd, None, &confinement).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "unable to join control group {}: No such file or directory",
                group.display()
            )
        );
        // No OS code: the supervisor must not take it for a missing
        // program (127).
        assert_eq!(err.raw_os_error(), None);
        assert!(!ran.exists(), "the command ran");
    }

    #[test]
    fn an_impossible_nofile_is_a_start_failure_naming_the_limit() {
        // Above fs.nr_open even root cannot go.
        let nr_open: u64 = fs::read_to_string("/proc/sys/fs/nr_open")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let confinement = Confinement::new(&[], Some(nr_open + 1)).unwrap();
        let err = spawn_supervised(&mut shell("true"), None, &confinement).unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with(&format!("unable to set RLIMIT_NOFILE to {}: ", nr_open + 1)),
            "{text}"
        );
        assert_eq!(err.raw_os_error(), None);
    }
}
