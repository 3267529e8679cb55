//! `pm-runtime exec`: a command in a runtime's environment, with the stop
//! signals sent to `pm-runtime` forwarded to it.

use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitCode};
use std::sync::{Arc, Mutex};

use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitid, Id, WaitPidFlag};
use nix::unistd::Pid;

use super::PROG;
use crate::cli::{fatal, warn};
use crate::exit::Tool;
use crate::protocol::Environment;

/// Runs `argv` with exactly `env`; its exit status, or `128 + N` when
/// signal N killed it, 127 when it cannot be found, 126 when it cannot be
/// run.
///
/// While it runs, SIGTERM and SIGHUP sent to `pm-runtime` are forwarded to
/// it; SIGINT and SIGQUIT are caught and dropped, since a terminal sends
/// them to the command too (it shares the foreground process group). The
/// handlers are installed before the spawn and only catch, so the command
/// starts with default dispositions. The command is waited for without
/// being reaped (`WNOWAIT`) and forgotten by the forwarder before it is
/// reaped, so a recycled pid is never signalled.
pub(super) fn exec(argv: &[OsString], env: &Environment) -> ExitCode {
    let Some((program, args)) = argv.split_first() else {
        return Tool::Usage.into();
    };
    let signals = crate::signal::install(&[
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGINT,
        Signal::SIGQUIT,
    ]);
    if let Err(err) = &signals {
        warn(PROG, format!("signals will not be forwarded: {err}"));
    }
    let spawned = Command::new(program)
        .args(args)
        .env_clear()
        .envs(env)
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(err) => {
            fatal(
                PROG,
                format!("unable to run {}: {err}", program.to_string_lossy()),
            );
            let code = if err.kind() == std::io::ErrorKind::NotFound {
                127
            } else {
                126
            };
            return ExitCode::from(code);
        }
    };
    let pid = Pid::from_raw(child.id() as i32);
    let slot = Arc::new(Mutex::new(Some(pid)));
    if let Ok(pipe) = signals {
        let slot = Arc::clone(&slot);
        let _ = std::thread::Builder::new()
            .name("signal-forwarder".into())
            .spawn(move || {
                while let Ok(signal) = pipe.recv() {
                    if matches!(signal, Signal::SIGTERM | Signal::SIGHUP) {
                        let target = *slot.lock().unwrap_or_else(|e| e.into_inner());
                        if let Some(pid) = target {
                            let _ = kill(pid, signal);
                        }
                    }
                }
            });
    }
    while let Err(Errno::EINTR) = waitid(Id::Pid(pid), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT)
    {
    }
    *slot.lock().unwrap_or_else(|e| e.into_inner()) = None;
    match child.wait() {
        Ok(status) => match (status.code(), status.signal()) {
            (Some(code), _) => ExitCode::from(code as u8),
            (None, Some(signal)) => ExitCode::from((128 + signal) as u8),
            _ => Tool::Failure.into(),
        },
        Err(err) => {
            fatal(PROG, format!("unable to wait for the command: {err}"));
            Tool::Temporary.into()
        }
    }
}
