//! Forwarding signals to a child without ever signalling a recycled pid:
//! the one mechanism behind `pm-supervisor` and `pm-runtime exec`.
//!
//! The child's pid sits in a [`Slot`] under a mutex. The
//! `signal-forwarder` thread ([`spawn_forwarder`]) reads signals and hands
//! each to its program's policy, which reaches the child only through
//! [`Slot::with_child`]: under the lock, and only while the slot still
//! holds the pid. The waiter ([`Slot::wait`]) waits for the child with
//! `WNOWAIT` (the zombie keeps its pid, and so its process group id,
//! reserved), clears the slot under the lock, and only then reaps. So no
//! signal is ever sent to a pid the kernel may have handed to another
//! process. What to send, to the group or to the child alone, and when
//! to escalate, is the policy of each program.

use std::io;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;

use super::reap::{reap, wait_any_unreaped, wait_unreaped};

/// The pid of a child that may be signalled: set until the child has
/// ended, cleared before it is reaped.
#[derive(Debug)]
pub(crate) struct Slot {
    child: Mutex<Option<Pid>>,
    /// Notified when the slot is cleared.
    cleared: Condvar,
}

/// What else [`Slot::wait`] reaps while it waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Others {
    /// Nothing: only the child is waited for.
    Leave,
    /// Every other child that ends meanwhile (the orphans a subreaper
    /// adopts); they are in no slot, so they can be reaped at once.
    Reap,
}

impl Slot {
    /// A slot holding our unreaped child `child`.
    pub(crate) fn new(child: Pid) -> Slot {
        Slot {
            child: Mutex::new(Some(child)),
            cleared: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Option<Pid>> {
        // A poisoned lock only means a thread panicked holding it; the
        // slot itself is one plain value and stays usable.
        self.child.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` with the child's pid while the child is unreaped, holding
    /// the lock, so the waiter cannot reap it until `f` returns; `None`
    /// once the child has ended. `f` may signal the pid or its group; it
    /// must not keep the pid.
    pub(crate) fn with_child<R>(&self, f: impl FnOnce(Pid) -> R) -> Option<R> {
        let child = self.lock();
        child.map(f)
    }

    /// Waits at most `timeout` for the child to end (the slot to be
    /// cleared); true when it has.
    pub(crate) fn wait_cleared(&self, timeout: Duration) -> bool {
        let child = self.lock();
        let (child, _) = self
            .cleared
            .wait_timeout_while(child, timeout, |c| c.is_some())
            .unwrap_or_else(|e| e.into_inner());
        child.is_none()
    }

    fn clear(&self) {
        *self.lock() = None;
        self.cleared.notify_all();
    }

    /// The waiter: blocks until the child has ended, without reaping it,
    /// clears the slot, and only then reaps it; returns its status. With
    /// [`Others::Reap`], other children that end meanwhile are reaped as
    /// they end. On an error the slot is cleared too (nothing will be
    /// signalled any more).
    ///
    /// # Errors
    ///
    /// The child cannot be waited for (`ECHILD`: it is not our child, or
    /// someone else reaped it).
    pub(crate) fn wait(&self, others: Others) -> nix::Result<WaitStatus> {
        let Some(pid) = *self.lock() else {
            return Err(Errno::ECHILD);
        };
        let ended = loop {
            let status = match others {
                Others::Leave => wait_unreaped(pid),
                Others::Reap => wait_any_unreaped(),
            };
            match status {
                Ok(status) => match status.pid() {
                    Some(ended) if ended == pid => break Ok(status),
                    Some(orphan) => {
                        let _ = reap(orphan);
                    }
                    None => {}
                },
                Err(errno) => break Err(errno),
            }
        };
        // From here on the policy cannot reach this pid.
        self.clear();
        let status = ended?;
        Ok(reap(pid).unwrap_or(status))
    }
}

/// Stack of the `signal-forwarder` thread: a policy formats a log line
/// and makes a few system calls, nothing deeper.
const FORWARDER_STACK: usize = 32 * 1024;

/// Starts the `signal-forwarder` thread: it hands every signal (or
/// other event) `recv` returns (in practice
/// [`crate::signal::SignalPipe::recv`] or `recv_caught`) to `forward`, until `recv` fails, which it hands to `failed` before it
/// ends. Nobody joins it; it lives as long as the signal source.
///
/// # Errors
///
/// The thread cannot be started.
pub(crate) fn spawn_forwarder<T>(
    mut recv: impl FnMut() -> io::Result<T> + Send + 'static,
    mut forward: impl FnMut(T) + Send + 'static,
    failed: impl FnOnce(io::Error) + Send + 'static,
) -> io::Result<()> {
    thread::Builder::new()
        .name("signal-forwarder".into())
        .stack_size(FORWARDER_STACK)
        .spawn(move || loop {
            match recv() {
                Ok(signal) => forward(signal),
                Err(err) => return failed(err),
            }
        })
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::{signal_group, squat};
    use nix::sys::signal::Signal;
    use std::os::unix::process::CommandExt;
    use std::process::Command;
    use std::sync::{mpsc, Arc};

    fn spawn_group(program: &str, args: &[&str]) -> Pid {
        let child = Command::new(program)
            .args(args)
            .process_group(0)
            .spawn()
            .unwrap();
        let pid = Pid::from_raw(child.id() as i32);
        // Reaped by the slot's waiter, never by `Child::wait`.
        drop(child);
        pid
    }

    /// Kills what is left of the slot's child when a test fails.
    struct Cleanup<'a>(&'a Slot);

    impl Drop for Cleanup<'_> {
        fn drop(&mut self) {
            self.0.with_child(|pid| signal_group(pid, Signal::SIGKILL));
        }
    }

    #[test]
    fn a_signal_reaches_the_group_until_the_child_ends() {
        let pid = spawn_group("/bin/sh", &["-c", "sleep 30 & wait"]);
        let slot = Slot::new(pid);
        let _cleanup = Cleanup(&slot);
        assert!(!slot.wait_cleared(Duration::from_millis(10)));
        let sent = slot.with_child(|pid| signal_group(pid, Signal::SIGKILL));
        assert_eq!(sent, Some(Ok(())));
        let status = slot.wait(Others::Leave).unwrap();
        assert_eq!(status, WaitStatus::Signaled(pid, Signal::SIGKILL, false));
        assert!(slot.wait_cleared(Duration::ZERO));
        assert_eq!(slot.with_child(|_| ()), None);
        assert_eq!(slot.wait(Others::Leave), Err(Errno::ECHILD));
    }

    #[test]
    fn the_forwarder_hands_each_signal_to_the_policy_then_stops() {
        let pid = spawn_group("sleep", &["30"]);
        let slot = Arc::new(Slot::new(pid));
        let _cleanup = Cleanup(&slot);
        let (send, signals) = mpsc::channel::<Signal>();
        let (done, failed) = mpsc::channel();
        let target = Arc::clone(&slot);
        spawn_forwarder(
            move || signals.recv().map_err(|_| io::ErrorKind::BrokenPipe.into()),
            move |signal| {
                if signal == Signal::SIGTERM {
                    target.with_child(|pid| signal_group(pid, signal));
                }
            },
            move |err| done.send(err.kind()).unwrap(),
        )
        .unwrap();
        send.send(Signal::SIGHUP).unwrap();
        send.send(Signal::SIGTERM).unwrap();
        let status = slot.wait(Others::Leave).unwrap();
        assert_eq!(status, WaitStatus::Signaled(pid, Signal::SIGTERM, false));
        drop(send);
        assert_eq!(
            failed.recv_timeout(Duration::from_secs(10)),
            Ok(io::ErrorKind::BrokenPipe)
        );
    }

    #[test]
    #[ignore = "needs root"]
    fn a_reaped_child_is_never_signalled_even_when_its_pid_comes_back() {
        let pid = spawn_group("true", &[]);
        let slot = Slot::new(pid);
        assert!(matches!(
            slot.wait(Others::Leave),
            Ok(WaitStatus::Exited(_, 0))
        ));
        // Another process group leader now has the child's pid (and so
        // its group id): what pid reuse does on a busy machine.
        let mut squatter = squat(pid.as_raw()).expect("could not reuse the pid");
        let sent = slot.with_child(|pid| signal_group(pid, Signal::SIGKILL));
        let alive = squatter.try_wait().unwrap().is_none();
        let _ = squatter.kill();
        let _ = squatter.wait();
        assert_eq!(sent, None);
        assert!(alive, "the process that reused pid {pid} was signalled");
    }
}
