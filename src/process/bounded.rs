//! A child run with a deadline: the one timed runner of the suite.
//!
//! The child is spawned in a process group of its own. It is waited for
//! without being reaped (`waitid` with `WNOWAIT`, in a waiter thread, so
//! the wait wakes at once when it ends): while the leader is an unreaped
//! zombie its pid, and so the group id, cannot be recycled, so signalling
//! the group is always safe. Only then is it reaped. When the deadline
//! passes, or on [`Bounded::terminate`] or drop, the whole group is
//! killed before the leader is reaped. Startup commands, source copies,
//! runtime plugin calls, Apache's tools and `pm-runtime check` all run
//! through it; [`output`] also captures what the child writes (plugin
//! calls, Apache's tools).

use std::io::{Read, Write};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::{waitid, Id, WaitPidFlag};
use nix::unistd::Pid;
use std::os::unix::process::CommandExt;

use crate::error::{Error, Result};

/// A running child in its own process group.
#[derive(Debug)]
pub(crate) struct Bounded {
    child: Child,
    /// The leader's pid, which is the group id; `None` once reaped.
    group: Option<Pid>,
    /// For messages: what the child is.
    what: String,
}

/// How [`Bounded::wait`] ended.
#[derive(Debug)]
pub(crate) enum Ended {
    /// The leader exited by itself.
    Exited(ExitStatus),
    /// The deadline passed; the whole group was killed and reaped.
    TimedOut,
}

impl Bounded {
    /// Spawns `cmd` in a new process group. `what` names it in errors.
    ///
    /// # Errors
    ///
    /// The command cannot be started.
    pub(crate) fn spawn(cmd: &mut Command, what: impl Into<String>) -> Result<Bounded> {
        let what = what.into();
        let child = cmd
            .process_group(0)
            .spawn()
            .map_err(|e| Error::io("run", &what, e))?;
        let group = Some(Pid::from_raw(child.id() as i32));
        Ok(Bounded { child, group, what })
    }

    /// The child, to take its standard streams.
    pub(crate) fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    /// True once the leader has ended (it is not reaped by this).
    pub(crate) fn has_ended(&self) -> bool {
        let Some(group) = self.group else {
            return true;
        };
        matches!(
            waitid(
                Id::Pid(group),
                WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT | WaitPidFlag::WNOHANG
            ),
            Ok(status) if status.pid().is_some()
        )
    }

    /// Waits at most `timeout` for the leader to end. When it ends, what
    /// it left in its group is left alone (a plugin may have started an
    /// application there on purpose) unless `end_group` asks for it; when
    /// the deadline passes, the whole group is killed. Either way the
    /// leader is reaped.
    ///
    /// # Errors
    ///
    /// The child cannot be waited for.
    pub(crate) fn wait(&mut self, timeout: Duration, end_group: bool) -> Result<Ended> {
        let Some(group) = self.group else {
            return Err(Error::invalid(format!("{} was already reaped", self.what)));
        };
        let ended = self.wait_unreaped(group, timeout);
        if !ended || end_group {
            let _ = killpg(group, Signal::SIGKILL);
        }
        let status = self.reap()?;
        Ok(if ended {
            Ended::Exited(status)
        } else {
            Ended::TimedOut
        })
    }

    /// Ends the group: SIGTERM, then SIGKILL after `grace` if the leader
    /// has not ended; then reaps the leader. Returns its status.
    ///
    /// # Errors
    ///
    /// The child cannot be waited for.
    pub(crate) fn terminate(&mut self, grace: Duration) -> Result<ExitStatus> {
        let Some(group) = self.group else {
            return Err(Error::invalid(format!("{} was already reaped", self.what)));
        };
        let _ = killpg(group, Signal::SIGTERM);
        self.wait_unreaped(group, grace);
        // Whatever is left of the group goes, leader or not, while the
        // leader's pid is still reserved.
        let _ = killpg(group, Signal::SIGKILL);
        self.reap()
    }

    /// Waits for the leader to end without reaping it; false on timeout.
    fn wait_unreaped(&self, group: Pid, timeout: Duration) -> bool {
        let (tx, rx) = mpsc::channel();
        let waiter = thread::Builder::new()
            .name("bounded-waiter".into())
            .spawn(move || {
                let _ = super::reap::wait_unreaped(group);
                let _ = tx.send(());
            });
        match waiter {
            // The waiter ends with the leader: after a timeout the caller
            // kills the group, which ends the leader.
            Ok(_) => !matches!(rx.recv_timeout(timeout), Err(RecvTimeoutError::Timeout)),
            // No thread to be had: poll instead.
            Err(_) => crate::wait::until(timeout, || self.has_ended()),
        }
    }

    fn reap(&mut self) -> Result<ExitStatus> {
        let status = self
            .child
            .wait()
            .map_err(|e| Error::io("wait for", &self.what, e))?;
        self.group = None;
        Ok(status)
    }
}

impl Drop for Bounded {
    fn drop(&mut self) {
        if let Some(group) = self.group {
            let _ = killpg(group, Signal::SIGKILL);
            let _ = self.reap();
        }
    }
}

/// Runs `cmd` in its own process group for at most `timeout`; on timeout
/// the group is killed. Returns the code (exit status, or `128 + signal`),
/// or `None` on timeout.
///
/// # Errors
///
/// The command cannot be started or waited for.
pub(crate) fn run(cmd: &mut Command, timeout: Duration, what: &str) -> Result<Option<i32>> {
    let mut child = Bounded::spawn(cmd, what)?;
    match child.wait(timeout, false)? {
        Ended::Exited(status) => Ok(Some(super::code_of_status(status))),
        Ended::TimedOut => Ok(None),
    }
}

/// What [`output`] gave: how the child ended and what it wrote.
#[derive(Debug)]
pub(crate) struct Output {
    /// The leader's exit status.
    pub status: ExitStatus,
    /// Its standard output, at most the cap asked for.
    pub stdout: Vec<u8>,
    /// Its standard error, at most the cap asked for.
    pub stderr: Vec<u8>,
}

/// How long the output pipes may stay open after the leader exited (a
/// daemon it started may hold them).
const DRAIN_GRACE: Duration = Duration::from_secs(1);

/// Runs `cmd` like [`run`], capturing its output: `input`, if any, is
/// written to its standard input by a thread (a child that exits without
/// reading it is fine; without input, standard input is `/dev/null`), and
/// its standard output and error are each read by a thread that keeps at
/// most `caps.0` and `caps.1` bytes and reads and drops the rest, so the
/// child never blocks on a full pipe. After the leader exited, the pipes
/// get [`DRAIN_GRACE`] to close. `None` when the deadline passed (the
/// group was killed).
///
/// # Errors
///
/// The command cannot be started or waited for.
pub(crate) fn output(
    cmd: &mut Command,
    input: Option<Vec<u8>>,
    timeout: Duration,
    caps: (usize, usize),
    what: &str,
) -> Result<Option<Output>> {
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = Bounded::spawn(cmd, what)?;
    let stdout = child.child.stdout.take().map(|r| Capture::start(r, caps.0));
    let stderr = child.child.stderr.take().map(|r| Capture::start(r, caps.1));
    if let (Some(mut stdin), Some(input)) = (child.child.stdin.take(), input) {
        // EPIPE from a child that did not read is dropped with the thread.
        let _ = thread::Builder::new()
            .name("bounded-stdin".into())
            .spawn(move || {
                let _ = stdin.write_all(&input);
            });
    }
    let Ended::Exited(status) = child.wait(timeout, false)? else {
        return Ok(None);
    };
    let finish = |c: Option<Capture>| c.map(Capture::finish).unwrap_or_default();
    Ok(Some(Output {
        status,
        stdout: finish(stdout),
        stderr: finish(stderr),
    }))
}

/// One output pipe, read to its end by a thread.
struct Capture {
    buffer: Arc<Mutex<Vec<u8>>>,
    done: mpsc::Receiver<()>,
}

impl Capture {
    fn start(mut reader: impl Read + Send + 'static, cap: usize) -> Capture {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let (tx, done) = mpsc::channel();
        let shared = Arc::clone(&buffer);
        let _ = thread::Builder::new()
            .name("bounded-output".into())
            .spawn(move || {
                let mut chunk = [0u8; 8192];
                loop {
                    match reader.read(&mut chunk) {
                        Ok(0) => break,
                        Ok(n) => {
                            let mut buf = shared.lock().unwrap_or_else(|e| e.into_inner());
                            let room = cap.saturating_sub(buf.len());
                            buf.extend_from_slice(&chunk[..n.min(room)]);
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(_) => break,
                    }
                }
                let _ = tx.send(());
            });
        Capture { buffer, done }
    }

    /// What was read, once the pipe closed or [`DRAIN_GRACE`] passed.
    fn finish(self) -> Vec<u8> {
        let _ = self.done.recv_timeout(DRAIN_GRACE);
        let mut buf = self.buffer.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::take(&mut *buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn a_quick_command_gives_its_code() {
        let mut cmd = Command::new("/bin/sh");
        cmd.args(["-c", "exit 3"]);
        assert_eq!(
            run(&mut cmd, Duration::from_secs(5), "sh").unwrap(),
            Some(3)
        );
    }

    #[test]
    fn a_slow_group_is_killed_at_the_deadline() {
        let started = Instant::now();
        let mut cmd = Command::new("/bin/sh");
        // The grandchild holds nothing of ours: it must die with the group.
        cmd.args(["-c", "sleep 30 & sleep 30"]);
        assert_eq!(
            run(&mut cmd, Duration::from_millis(200), "sh").unwrap(),
            None
        );
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn ending_the_group_after_the_leader_exits_kills_what_it_left() {
        let dir = std::env::temp_dir().join(format!("pm-bounded-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pidfile = dir.join("left.pid");
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(format!("sleep 30 & echo $! > {}", pidfile.display()));
        let mut child = Bounded::spawn(&mut cmd, "sh").unwrap();
        let ended = child.wait(Duration::from_secs(5), true).unwrap();
        assert!(matches!(ended, Ended::Exited(s) if s.success()));
        let left: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let gone = crate::wait::until(Duration::from_secs(5), || {
            crate::process::Identity::of(left).is_none()
        });
        assert!(gone, "pid {left} outlived its group");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn output_is_captured_capped_and_bounded() {
        let mut cmd = Command::new("/bin/sh");
        cmd.args(["-c", "cat; echo err >&2; head -c 100000 /dev/zero"]);
        let out = output(
            &mut cmd,
            Some(b"in\n".to_vec()),
            Duration::from_secs(10),
            (10, 100),
            "sh",
        )
        .unwrap()
        .unwrap();
        assert!(out.status.success());
        assert_eq!(out.stdout, b"in\n\0\0\0\0\0\0\0");
        assert_eq!(out.stderr, b"err\n");

        let started = Instant::now();
        let mut cmd = Command::new("/bin/sh");
        cmd.args(["-c", "echo partial; exec sleep 30"]);
        let out = output(&mut cmd, None, Duration::from_millis(300), (100, 100), "sh").unwrap();
        assert!(out.is_none());
        assert!(started.elapsed() < Duration::from_secs(10));
    }
}
