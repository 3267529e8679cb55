//! `pm-runtime exec`: a command in a runtime's environment, with the stop
//! signals sent to `pm-runtime` forwarded to it.

use std::ffi::OsString;
use std::process::{Command, ExitCode};
use std::sync::Arc;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::PROG;
use crate::cli::{fatal, warn};
use crate::exit::Tool;
use crate::process;
use crate::process::forward::{self, Others, Slot};
use crate::protocol::Environment;

/// Runs `argv` with exactly `env`; its exit status, or `128 + N` when
/// signal N killed it, 127 when it cannot be found, 126 when it cannot be
/// run.
///
/// While it runs, SIGTERM and SIGHUP sent to `pm-runtime` are forwarded to
/// it; SIGINT and SIGQUIT are caught and dropped, since a terminal sends
/// them to the command too (it shares the foreground process group). The
/// handlers are installed before the spawn and only catch, so the command
/// starts with default dispositions. The forwarding is the supervisor's
/// mechanism (`process::forward`): the command is waited for without
/// being reaped (`WNOWAIT`) and forgotten by the forwarder before it is
/// reaped, so a recycled pid is never signalled. Unlike the supervisor,
/// exec signals the command alone: it shares our process group.
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
    let child = match spawned {
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
    // Reaped by the slot's waiter, never by `Child::wait`.
    let slot = Arc::new(Slot::new(Pid::from_raw(child.id() as i32)));
    drop(child);
    if let Ok(pipe) = signals {
        let target = Arc::clone(&slot);
        let forwarding = forward::spawn_forwarder(
            move || pipe.recv(),
            move |signal| {
                if matches!(signal, Signal::SIGTERM | Signal::SIGHUP) {
                    target.with_child(|pid| kill(pid, signal));
                }
            },
            drop,
        );
        if let Err(err) = forwarding {
            warn(PROG, format!("signals will not be forwarded: {err}"));
        }
    }
    match slot.wait(Others::Leave) {
        Ok(status) => process::code_of_wait(status)
            .map_or(Tool::Failure.into(), |code| ExitCode::from(code as u8)),
        Err(errno) => {
            fatal(
                PROG,
                format!("unable to wait for the command: {}", errno.desc()),
            );
            Tool::Temporary.into()
        }
    }
}
