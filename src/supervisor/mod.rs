//! `pm-supervisor`: runs one application process (SPEC §3).
//!
//! The life of a supervisor:
//!
//! 1. read and validate the control file (exit 1, 2 or 3 with one line on
//!    stderr if it is missing, unreadable or invalid); with `--detach`,
//!    fork: the parent exits 0 at once, the child goes on in a new session;
//! 2. catch SIGTERM, SIGHUP and SIGINT into the self-pipe, and the forward
//!    channel's real-time signal (`relay`), become a child subreaper, open
//!    the log, start the `output-copier` thread on a new pipe, start the
//!    command in its own process group with that pipe as its stdout and
//!    stderr and SIGKILL as its parent-death signal; write the pidfile,
//!    then the startflag;
//! 3. the main thread waits (blocking `waitid`) and reaps; the
//!    `signal-forwarder` thread turns a SIGTERM into SIGTERM to the
//!    command's group and, after `stop_timeout`, SIGKILL, and passes a
//!    forward request's signal on to the group (`relay`); the
//!    `output-copier` thread appends what comes through the pipe to the
//!    log by whole lines, rotating it by size (`log`, `logfile`);
//! 4. once the command has ended, let the copier reach the end of the
//!    pipe ([`OUTPUT_DRAIN`]) and log the end, end every descendant left
//!    behind, let the copier finish ([`OUTPUT_END`]), remove the control
//!    file, report the code to the heart or record it in the `.exited`
//!    file, and remove the pidfile.
//!
//! The pid-reuse invariant is kept by `process::forward`: the command's
//! pid sits in a slot under a mutex. The forwarder signals the group only
//! while holding the lock with the pid in the slot; the main thread waits
//! with `WNOWAIT` (the zombie keeps the pid reserved), clears the slot
//! under the lock, and only then reaps. So no signal is ever sent to a
//! recycled pid.
//!
//! With `--log-pipe` it is a piped logger instead ([`pipe`]): one thread
//! that copies standard input into a log.
//!
//! Threads: the main thread; `signal-forwarder` and `output-copier`, never
//! joined: the forwarder blocks on the self-pipe until the process exits,
//! and the copier ends by itself at the end of the pipe, which the main
//! thread waits for (bounded) through [`Copier::wait`].

mod config;
mod log;
mod pipe;
mod relay;
mod report;

use std::io;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::Signal;
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;

use crate::cli;
use crate::error::{Error, Result};
use crate::exit::Supervisor as Code;
use crate::fsutil;
use crate::logfile::copy::Copier;
use crate::process::forward::{self, Others, Slot};
use crate::process::{self, Detached, Notifier};
use crate::signal::{self, Caught, SignalPipe};
use crate::wait;

use self::config::{load, parse_args, Config};
use self::log::Log;
use self::report::Outcome;

const PROG: &str = "pm-supervisor";

/// The usage text, identical to the man page SYNOPSIS.
const USAGE: &str = "\
usage: pm-supervisor [--detach] CONTROL_FILE
       pm-supervisor --log-pipe [--max-size SIZE] [--keep N] FILE
       pm-supervisor --help | --version

Runs the command described by the JSON control file CONTROL_FILE, forwards
a stop request (SIGTERM) to it, and reports how it ended to the heart.
Signal 50 queued with sigqueue(3) and a value of HUP, INT, QUIT, USR1,
USR2, TERM or WINCH (1, 2, 3, 10, 12, 15, 28) sends that signal to the
command's process group (the forward channel).

With --log-pipe, copies standard input into the log FILE by whole lines,
each stamped with the time, rotated at SIZE (default 10M) keeping N old
files (default 5), until the end of the input (a piped logger).

options:
  --detach    start the supervisor in a new session and exit at once
  --log-pipe  be a piped logger of FILE
  --max-size SIZE  with --log-pipe: the largest size of each file (64K-1024G)
  --keep N    with --log-pipe: how many rotated files are kept (0-100)
  --help      print this help and exit
  --version   print the version and exit

See pm-supervisor(8).
";

/// How long, once the command has been reaped, the copier gets to reach
/// the end of its output before `Completed with result code N` is logged:
/// at once, unless a descendant still holds the pipe open.
const OUTPUT_DRAIN: Duration = Duration::from_millis(200);

/// How long, once every descendant has ended, the copier gets to write
/// the last of the output before the report.
const OUTPUT_END: Duration = Duration::from_secs(1);

/// How long SIGKILLed descendants get to disappear before we give up on
/// reaping them (a process in uninterruptible sleep can outlive a SIGKILL).
const KILL_GRACE: Duration = Duration::from_secs(5);

/// Entry point of `pm-supervisor`.
pub fn main() -> ExitCode {
    // Before any descriptor of ours exists: whatever the caller let us
    // inherit must not reach the command.
    process::mark_inherited_cloexec();
    let args = match parse_args(std::env::args_os().skip(1)) {
        Ok(args) => args,
        Err(err) => {
            cli::fatal(PROG, format_args!("{err}; try --help"));
            return Code::NoControlFile.into();
        }
    };
    if args.help {
        let _ = cli::print(USAGE);
        return Code::Success.into();
    }
    if args.version {
        let _ = cli::print(concat!("pm-supervisor ", env!("CARGO_PKG_VERSION"), "\n"));
        return Code::Success.into();
    }
    if args.log_pipe {
        let Some(file) = args.control else {
            cli::fatal(PROG, "unable to run: no log file given; try --help");
            return Code::NoControlFile.into();
        };
        return match pipe::run(Path::new(&file), args.max_size, args.keep) {
            Ok(()) => Code::Success.into(),
            Err(err) => {
                cli::fatal(PROG, err);
                Code::System.into()
            }
        };
    }
    if args.max_size.is_some() || args.keep.is_some() {
        cli::fatal(PROG, "--max-size and --keep go with --log-pipe; try --help");
        return Code::NoControlFile.into();
    }
    let Some(control) = args.control else {
        cli::fatal(PROG, "unable to run: no control file given; try --help");
        return Code::NoControlFile.into();
    };
    // Caught from the start, so that a stop request that comes while the
    // control file is read is kept in the pipe, not lost.
    let installed = signal::install(&[Signal::SIGTERM, Signal::SIGHUP, Signal::SIGINT])
        .and_then(|pipe| signal::catch_forward_requests().map(|()| pipe));
    let pipe = match installed {
        Ok(pipe) => pipe,
        Err(err) => {
            cli::fatal(PROG, err);
            return Code::System.into();
        }
    };
    let config = match load(Path::new(&control)) {
        Ok(config) => config,
        Err(fatal) => {
            cli::fatal(PROG, &fatal.error);
            return fatal.code.into();
        }
    };
    let mut notifier_slot = None;
    if args.detach {
        // The log is checked here too, while someone can still hear the
        // complaint: after detaching, stderr is /dev/null.
        if let Err(err) = Log::open(&config.log_file, config.log_limits) {
            cli::fatal(PROG, err);
            return Code::System.into();
        }
        match process::detach() {
            Ok(Detached::Parent(waiter)) => {
                // The copy's word: the command runs and is recorded (0),
                // or why not. Silence means it died: a system failure.
                return ExitCode::from(
                    waiter
                        .wait(DETACH_WAIT)
                        .unwrap_or_else(|| Code::System.into()),
                );
            }
            Ok(Detached::Child(notifier)) => notifier_slot = Some(notifier),
            Err(err) => {
                cli::fatal(PROG, err);
                return Code::System.into();
            }
        }
    }
    match run(config, pipe, notifier_slot) {
        Ok(code) => code.into(),
        Err(err) => {
            cli::fatal(PROG, err);
            Code::System.into()
        }
    }
}

/// How long `pm-supervisor --detach` waits for its detached copy to say
/// that the command runs (the spawn has returned by then, so this only
/// bounds a wedged file system).
const DETACH_WAIT: Duration = Duration::from_secs(30);

/// Runs the command of `config` to its end and reports it.
///
/// # Errors
///
/// The log cannot be opened. Everything after that is logged and worked
/// around: once the command runs, the supervisor does not bail out.
pub(crate) fn run(config: Config, pipe: SignalPipe, detached: Option<Notifier>) -> Result<Code> {
    let tell = |code: Code| {
        if let Some(notifier) = detached {
            notifier.tell(code.into());
        }
    };
    let log = Arc::new(Log::open(&config.log_file, config.log_limits)?);
    if let Err(err) = process::become_subreaper() {
        log.warn(format_args!("{err}; daemonizing descendants may escape"));
    }

    let code = match start(&config, &log) {
        Err(err) => {
            let (code, reason) = match err.raw_os_error() {
                Some(errno) if errno == Errno::ENOENT as i32 => {
                    (127, Errno::ENOENT.desc().to_owned())
                }
                Some(errno) => (126, Errno::from_raw(errno).desc().to_owned()),
                None => (126, err.to_string()),
            };
            log.error(format_args!("Failed to start up: {reason}"));
            write_state_file(&config.startflag, b"", &log);
            tell(Code::Success);
            code
        }
        Ok((pid, output)) => {
            let pidfile = format!("{}\n", std::process::id());
            if let Err(err) = fsutil::write_atomic(&config.pidfile, pidfile.as_bytes(), 0o644) {
                // Nobody could find or stop a supervisor that is not
                // recorded: its command must not run.
                log.error(format_args!(
                    "Unable to record the supervisor: {err}; ending the command"
                ));
                let _ = process::signal_group(pid, nix::sys::signal::Signal::SIGKILL);
                let _ = process::reap::reap(pid);
                end_descendants(Duration::ZERO, &log);
                write_state_file(&config.startflag, b"", &log);
                tell(Code::System);
                return Ok(Code::System);
            }
            // The command's pid, for the heart's `app_pid`.
            write_state_file(&config.startflag, format!("{pid}\n").as_bytes(), &log);
            tell(Code::Success);
            let slot = Arc::new(Slot::new(pid));
            let stop_requested = Arc::new(AtomicBool::new(false));
            if let Err(err) =
                spawn_forwarder(pipe, &slot, &stop_requested, &log, config.stop_timeout)
            {
                // The command runs: we may no longer bail out. It can
                // still be waited for and reported, and dies with us.
                log.error(format_args!("{err}; stop requests will not be forwarded"));
            }
            let status = wait_for_command(pid, &slot, &log);
            // The command's last lines go before the line about its end.
            output.wait(OUTPUT_DRAIN);
            let code = code_of(status, stop_requested.load(Ordering::SeqCst), &log);
            end_descendants(config.stop_timeout, &log);
            if !output.wait(OUTPUT_END) {
                log.warn(format_args!(
                    "The output pipe is still open after every process ended; \
                     output written from now on is lost"
                ));
            }
            code
        }
    };

    // The control file goes first: once the heart has the report it may
    // write a new one for the next start. The pidfile goes last, so that
    // until the code is reported or recorded a live supervisor can be
    // found, and it is removed only if it still names us.
    if let Err(err) = fsutil::remove_if_exists(&config.control_path) {
        log.warn(format_args!("{err}"));
    }
    let outcome = report::send(&config.target, code, &log);
    remove_own_pidfile(&config.pidfile, &log);
    Ok(match outcome {
        Outcome::Reported | Outcome::Recorded => Code::Success,
        Outcome::Refused(_) | Outcome::Lost => Code::Unrecorded,
    })
}

/// Starts the command; returns its pid, which is also its process group,
/// and the copier of its output.
fn start(config: &Config, log: &Log) -> io::Result<(Pid, Copier)> {
    log.info(format_args!(
        "Starting {:?} in {}{}",
        config.argv,
        config.cwd.display(),
        match &config.credentials {
            Some(c) => format!(" as {}", c.name),
            None => String::new(),
        }
    ));
    if let Err(err) = std::fs::metadata(&config.cwd) {
        log.error(format_args!(
            "Unable to use the working directory {}: {err}",
            config.cwd.display()
        ));
        return Err(err);
    }
    // Before the command, so that it never writes to a pipe nobody reads.
    let (output, [out, err]) = log.command_output()?;
    let mut cmd = Command::new(&config.argv[0]);
    cmd.args(&config.argv[1..])
        .env_clear()
        .envs(&config.environment)
        .current_dir(&config.cwd)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0);
    let child =
        process::spawn_supervised(&mut cmd, config.credentials.as_ref(), &config.confinement);
    // Our copies of the write end: while we held them, the copier would
    // never see the end of the output.
    drop(cmd);
    let child = child?;
    let pid = Pid::from_raw(child.id() as i32);
    // `child` is dropped without `wait`: the main thread reaps with
    // waitid/waitpid, and two reapers for one child would race.
    drop(child);
    log.info(format_args!("Started process {pid}"));
    Ok((pid, output))
}

/// Starts the `signal-forwarder` thread (`process::forward`) with the
/// supervisor's policy, [`forward_signal`].
fn spawn_forwarder(
    pipe: SignalPipe,
    slot: &Arc<Slot>,
    stop_requested: &Arc<AtomicBool>,
    log: &Arc<Log>,
    stop_timeout: Duration,
) -> Result<()> {
    let (slot, stop_requested) = (Arc::clone(slot), Arc::clone(stop_requested));
    let (log, failed_log) = (Arc::clone(log), Arc::clone(log));
    forward::spawn_forwarder(
        move || pipe.recv_caught(),
        move |caught| match caught {
            Caught::Signal(signal) => {
                forward_signal(signal, &slot, &stop_requested, &log, stop_timeout);
            }
            Caught::Forward(number) => relay::forward_request(number, &slot, &log),
        },
        move |err| failed_log.error(format_args!("Unable to read the signal pipe: {err}")),
    )
    .map_err(|e| Error::sys("start the signal-forwarder thread", errno_of(&e)))
}

fn errno_of(err: &io::Error) -> Errno {
    Errno::from_raw(err.raw_os_error().unwrap_or(0))
}

/// The policy of the forwarder: the first SIGTERM becomes a stop of the
/// command's group (SIGTERM, then SIGKILL after `stop_timeout`); later
/// ones do nothing more; SIGHUP and SIGINT are dropped.
fn forward_signal(
    signal: Signal,
    slot: &Slot,
    stop_requested: &AtomicBool,
    log: &Log,
    stop_timeout: Duration,
) {
    if signal != Signal::SIGTERM {
        log.info(format_args!("Ignored {signal}"));
        return;
    }
    if stop_requested.swap(true, Ordering::SeqCst) {
        return;
    }
    let sent = slot.with_child(|pid| {
        log.info(format_args!(
            "Received SIGTERM; sending SIGTERM to process group {pid}"
        ));
        if let Err(errno) = process::signal_group(pid, Signal::SIGTERM) {
            log.warn(format_args!(
                "Unable to send SIGTERM to process group {pid}: {}",
                errno.desc()
            ));
        }
        // A stopped process (SIGSTOP) acts on its SIGTERM only once it is
        // continued; systemd follows its stop signal with SIGCONT too.
        let _ = process::signal_group(pid, Signal::SIGCONT);
    });
    if sent.is_none() || slot.wait_cleared(stop_timeout) {
        return;
    }
    slot.with_child(|pid| {
        log.warn(format_args!(
            "Process group {pid} still running {} s after SIGTERM; sending SIGKILL",
            stop_timeout.as_secs_f64()
        ));
        if let Err(errno) = process::signal_group(pid, Signal::SIGKILL) {
            log.warn(format_args!(
                "Unable to send SIGKILL to process group {pid}: {}",
                errno.desc()
            ));
        }
    });
}

/// Waits for the command to end, reaping orphans that end meanwhile;
/// returns its status. `None` if it vanished (cannot happen unless
/// someone else reaps our children).
fn wait_for_command(pid: Pid, slot: &Slot, log: &Log) -> Option<WaitStatus> {
    match slot.wait(Others::Reap) {
        Ok(status) => Some(status),
        Err(errno) => {
            log.error(format_args!(
                "Unable to wait for process {pid}: {}",
                errno.desc()
            ));
            None
        }
    }
}

/// The reported code of `status`; logs `Completed with result code N`.
fn code_of(status: Option<WaitStatus>, stop_requested: bool, log: &Log) -> i32 {
    match status {
        Some(WaitStatus::Exited(_, status)) => {
            log.info(format_args!("Completed with result code {status}"));
            process::code_of_exit(status)
        }
        Some(WaitStatus::Signaled(_, signal, _)) => {
            log.info(format_args!(
                "Completed with result code -{}",
                signal as i32
            ));
            if stop_requested && matches!(signal, Signal::SIGTERM | Signal::SIGKILL) {
                0
            } else {
                process::code_of_signal(signal)
            }
        }
        other => {
            log.error(format_args!("Completed with an unknown status {other:?}"));
            255
        }
    }
}

/// Ends every descendant left behind: SIGTERM to each child we have
/// (adopted orphans included), SIGKILL after `stop_timeout`, until none is
/// left. Our own children cannot be recycled pids: we have not reaped
/// them.
fn end_descendants(stop_timeout: Duration, log: &Log) {
    if !process::reap_ended() {
        return;
    }
    let me = std::process::id() as i32;
    let mut termed: Vec<i32> = Vec::new();
    let step = |signal: Signal, sent: &mut Vec<i32>| {
        if !process::reap_ended() {
            return true;
        }
        for pid in process::children_of(me) {
            if !sent.contains(&pid) {
                log.info(format_args!("Sending {signal} to leftover process {pid}"));
                let _ = nix::sys::signal::kill(Pid::from_raw(pid), signal);
                sent.push(pid);
            }
        }
        false
    };
    if wait::until(stop_timeout, || step(Signal::SIGTERM, &mut termed)) {
        return;
    }
    let mut killed = Vec::new();
    if !wait::until(KILL_GRACE, || step(Signal::SIGKILL, &mut killed)) {
        log.warn(format_args!(
            "Leftover processes survived SIGKILL; not waiting"
        ));
    }
}

/// Writes a pidfile or startflag atomically; a failure is logged.
fn write_state_file(path: &Path, data: &[u8], log: &Log) {
    if let Err(err) = fsutil::write_atomic(path, data, 0o644) {
        log.warn(format_args!("{err}"));
    }
}

/// Removes the pidfile if it still holds our pid.
fn remove_own_pidfile(path: &Path, log: &Log) {
    let ours = std::fs::read_to_string(path)
        .is_ok_and(|text| text.trim() == std::process::id().to_string());
    if ours {
        if let Err(err) = fsutil::remove_if_exists(path) {
            log.warn(format_args!("{err}"));
        }
    }
}
