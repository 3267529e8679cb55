//! A detached `pm-supervisor`, seen from the program that runs it: launch
//! it, tell whether it still runs, have it forward a signal to its
//! command, end it.
//!
//! Used by the heart for every supervised instance and by the managed
//! Apache for its server. The control file is written atomically (mode 0600: it holds the
//! environment and the exit key), `pm-supervisor --detach` is run and
//! reaped at once (it forks and its parent exits), and the launch waits,
//! with a bound, for the startflag file that says the command was started
//! or failed to start.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::error::{Error, Result};
use crate::fsutil;
use crate::process::{self, Identity};
use crate::protocol::{ControlFile, ForwardSignal};
use crate::signal;
use crate::wait;

/// Extra time, beyond the command's stop timeout, that [`terminate`]
/// waits for the supervisor to go before it is killed.
pub(crate) const STOP_MARGIN: Duration = Duration::from_secs(5);
/// How long a supervisor whose command ended may take to report and exit
/// during [`terminate`] before it is killed.
const REPORT_GRACE: Duration = Duration::from_secs(2);
/// How long a killed supervisor may take to disappear.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// How long a supervisor may take to start its command.
pub(crate) const STARTFLAG_TIMEOUT: Duration = Duration::from_secs(10);

/// The `pm-supervisor` to run: `$PM_SUPERVISOR`, else the one beside the
/// running executable, else `pm-supervisor` from `PATH`.
pub(crate) fn supervisor_exe() -> PathBuf {
    if let Some(path) = std::env::var_os("PM_SUPERVISOR") {
        return PathBuf::from(path);
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.join("pm-supervisor")))
        .filter(|path| path.is_file())
        .unwrap_or_else(|| PathBuf::from("pm-supervisor"))
}

/// Writes `control` to `control_path` and starts `exe --detach` on it.
///
/// Returns the identity of the supervisor once its command runs, or `None`
/// when the command failed to start (the supervisor then reports the exit
/// code 126 or 127 and writes the reason to the log).
///
/// # Errors
///
/// The control file cannot be written, the supervisor cannot be run or
/// refuses the control file (its stderr line is in the message), or the
/// startflag does not appear in time.
pub(crate) fn launch(
    exe: &Path,
    control_path: &Path,
    control: &ControlFile,
) -> Result<Option<Identity>> {
    fsutil::remove_if_exists(&control.pidfile)?;
    fsutil::remove_if_exists(&control.startflagfile)?;
    let json = serde_json::to_vec_pretty(control)
        .map_err(|e| Error::json(format!("control file {}", control_path.display()), e))?;
    fsutil::write_atomic(control_path, &json, 0o600)?;

    let output = Command::new(exe)
        .arg("--detach")
        .arg(control_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| Error::io("run", exe, e))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(Error::invalid(format!(
            "{} refused {}: {}",
            exe.display(),
            control_path.display(),
            stderr.trim()
        )));
    }

    if !wait::until_soon(STARTFLAG_TIMEOUT, || control.startflagfile.exists()) {
        return Err(Error::invalid(format!(
            "supervisor did not start the command within {} s (no {})",
            STARTFLAG_TIMEOUT.as_secs(),
            control.startflagfile.display()
        )));
    }
    let Ok(text) = std::fs::read_to_string(&control.pidfile) else {
        return Ok(None);
    };
    let pid: i32 = text
        .trim()
        .parse()
        .map_err(|_| Error::invalid(format!("bad pid in {}", control.pidfile.display())))?;
    Ok(Identity::of(pid).filter(|id| is_supervising(id, control_path)))
}

/// The application a supervisor runs, from the pid it wrote in its
/// startflag file (the leader of the command's process group), with its
/// start time; `None` when the file holds no live pid.
pub(crate) fn app_identity(startflagfile: &Path) -> Option<Identity> {
    let text = std::fs::read_to_string(startflagfile).ok()?;
    Identity::of(text.trim().parse().ok()?)
}

/// True when `identity` is alive and is a `pm-supervisor` whose command
/// line names `control_path`: the check that keeps a recycled pid from
/// being trusted or signalled.
pub(crate) fn is_supervising(identity: &Identity, control_path: &Path) -> bool {
    if !identity.is_alive() {
        return false;
    }
    let Some(args) = process::cmdline(identity.pid) else {
        return false;
    };
    let is_supervisor = args.first().is_some_and(|arg0| {
        Path::new(arg0)
            .file_name()
            .is_some_and(|name| name == OsStr::new("pm-supervisor"))
    });
    is_supervisor && args.iter().any(|arg| Path::new(arg) == control_path)
}

/// How [`terminate`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Terminated {
    /// It was gone already, or is not that supervisor any more.
    WasGone,
    /// It went after SIGTERM.
    Stopped,
    /// It had to be killed (it outlived `stop_timeout` plus a margin, or
    /// lingered after its command ended); it is gone now.
    Killed,
    /// Even SIGKILL did not make it go within its bound.
    WouldNotStop,
}

/// Ends the supervisor `identity`, only if it still supervises
/// `control_path`: SIGTERM (it stops its command's group), then SIGKILL
/// after `stop_timeout` plus [`STOP_MARGIN`].
///
/// A supervisor lingers after its command ended only to deliver its exit
/// report; when it reports to a port nobody listens on any more, it would
/// retry for its whole report deadline. So once it has no child left, it
/// gets [`REPORT_GRACE`] to report, and is then killed.
pub(crate) fn terminate(
    identity: &Identity,
    control_path: &Path,
    stop_timeout: Duration,
) -> Terminated {
    if !is_supervising(identity, control_path) {
        return Terminated::WasGone;
    }
    identity.signal(Signal::SIGTERM);
    let mut childless_since: Option<Instant> = None;
    wait::until(stop_timeout + STOP_MARGIN, || {
        if !identity.is_alive() {
            return true;
        }
        if process::children_of(identity.pid).is_empty() {
            let since = *childless_since.get_or_insert_with(Instant::now);
            return since.elapsed() >= REPORT_GRACE;
        }
        childless_since = None;
        false
    });
    if !identity.is_alive() {
        return Terminated::Stopped;
    }
    identity.signal(Signal::SIGKILL);
    if wait::until(KILL_WAIT, || !identity.is_alive()) {
        Terminated::Killed
    } else {
        Terminated::WouldNotStop
    }
}

/// Asks the supervisor `identity`, only if it still supervises
/// `control_path`, to forward `signal` to its command's process group
/// (the forward channel of `pm-supervisor(8)`: [`signal::FORWARD_SIGNAL`]
/// queued with the signal's number as its value). Returns false when it
/// is gone, or is not that supervisor any more.
///
/// # Errors
///
/// The supervisor does not catch the forward signal (it predates the
/// channel; it would die of it), or the signal cannot be queued.
pub(crate) fn forward(
    identity: &Identity,
    control_path: &Path,
    signal: ForwardSignal,
) -> Result<bool> {
    if !is_supervising(identity, control_path) {
        return Ok(false);
    }
    if !signal::catches_forward_requests(identity.pid) {
        return Err(Error::invalid(format!(
            "supervisor {} does not take forward requests (started by an older pm-supervisor); \
             restart the instance first",
            identity.pid
        )));
    }
    // As with `Identity::signal`, the window between the check and the
    // queue is a few microseconds.
    signal::request_forward(identity.pid, signal.number())?;
    Ok(true)
}
