//! `pm-runtime check`: every mode of one external plugin against a
//! scratch instance, one line per mode with what is wrong.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::{current_environment, stdout};
use crate::error::{Error, Result};
use crate::exit::Tool;
use crate::fsutil;
use crate::net;
use crate::plugins::external::{self, External};
use crate::plugins::{params, Context, Launch, Runtime, Started};
use crate::process::{Bounded, Ended};
use crate::protocol::{InstanceId, Parameters, PluginInstance};

/// How many lines of its log a failed supervised command is quoted with.
const LOG_TAIL_LINES: usize = 5;
/// How much of that log is read for them.
const LOG_TAIL_BYTES: u64 = 64 << 10;

/// Counts scratch directories made by this process.
static SCRATCH: AtomicUsize = AtomicUsize::new(0);

/// A scratch directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Result<Scratch> {
        let n = SCRATCH.fetch_add(1, Ordering::SeqCst);
        let path =
            std::env::temp_dir().join(format!("pm-runtime-check-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        fsutil::create_dir_all(&path.join("app"), 0o700)?;
        Ok(Scratch(path))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Copies the tree `from` into the directory `to`.
fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    let read = std::fs::read_dir(from).map_err(|e| Error::io("read directory", from, e))?;
    for entry in read {
        let entry = entry.map_err(|e| Error::io("read directory", from, e))?;
        let source = entry.path();
        let target = to.join(entry.file_name());
        let kind = entry
            .file_type()
            .map_err(|e| Error::io("stat", &source, e))?;
        if kind.is_dir() {
            std::fs::create_dir(&target).map_err(|e| Error::io("create directory", &target, e))?;
            copy_tree(&source, &target)?;
        } else if kind.is_symlink() {
            let link =
                std::fs::read_link(&source).map_err(|e| Error::io("read link", &source, e))?;
            std::os::unix::fs::symlink(&link, &target)
                .map_err(|e| Error::io("create link", &target, e))?;
        } else {
            std::fs::copy(&source, &target).map_err(|e| Error::io("copy", &source, e))?;
        }
    }
    Ok(())
}

/// A free port on 127.0.0.1, as the kernel picks one.
fn free_port() -> Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .map_err(|e| Error::io("bind", "127.0.0.1:0", e))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| Error::io("read address of", "127.0.0.1:0", e))
}

/// A supervised command that `check` runs itself, killed on drop.
struct Running(Bounded);

impl Drop for Running {
    fn drop(&mut self) {
        // SIGTERM to the group, SIGKILL to whatever is left of it after
        // the grace, all while the leader's pid is still reserved.
        let _ = self.0.terminate(Duration::from_secs(5));
    }
}

/// The results of `check`, one line per mode.
struct Report {
    lines: String,
    problems: usize,
}

impl Report {
    fn ok(&mut self, mode: &str, what: impl std::fmt::Display) {
        let _ = writeln!(self.lines, "{mode}: ok: {what}");
    }

    fn problem(&mut self, mode: &str, what: impl std::fmt::Display) {
        self.problems += 1;
        let _ = writeln!(self.lines, "{mode}: FAILED: {what}");
    }

    fn skip(&mut self, mode: &str, why: &str) {
        let _ = writeln!(self.lines, "{mode}: skipped: {why}");
    }
}

pub(super) fn check(
    path: &Path,
    timeout: Duration,
    app: Option<&Path>,
    parameters: Parameters,
    standalone: bool,
) -> Result<ExitCode> {
    let mut report = Report {
        lines: String::new(),
        problems: 0,
    };
    let plugin = External::at(path, timeout);
    check_plugin(&plugin, app, parameters, standalone, &mut report)?;
    let verdict = if report.problems == 0 {
        format!("{}: every mode passed\n", path.display())
    } else {
        format!(
            "{}: {} problem{}\n",
            path.display(),
            report.problems,
            if report.problems == 1 { "" } else { "s" }
        )
    };
    report.lines.push_str(&verdict);
    stdout(&report.lines)?;
    Ok(if report.problems == 0 {
        Tool::Success
    } else {
        Tool::Failure
    }
    .into())
}

fn check_plugin(
    plugin: &External,
    app: Option<&Path>,
    parameters: Parameters,
    standalone: bool,
    report: &mut Report,
) -> Result<()> {
    let path = plugin.path();
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    match file_name.strip_prefix(external::PREFIX) {
        Some(name) if external::valid_name(name) => report.ok("name", name),
        _ => report.problem(
            "name",
            format!(
                "{file_name:?} is not pm-runtime-NAME with NAME of [A-Za-z0-9_-]: it would not be discovered"
            ),
        ),
    }
    if !external::is_executable(path) {
        report.problem(
            "file",
            format!("{} is not an executable file", path.display()),
        );
        for mode in external::MODES {
            report.skip(mode, "the plugin cannot be run");
        }
        return Ok(());
    }

    let version = match plugin.versions() {
        Ok(versions) if versions.is_empty() => {
            report.ok("versions", "none (not on this node)");
            for mode in &external::MODES[1..] {
                report.skip(mode, "no version to test");
            }
            return Ok(());
        }
        Ok(versions) => {
            report.ok("versions", versions.join(" "));
            versions.last().cloned().unwrap_or_default()
        }
        Err(err) => {
            let hung = matches!(err, Error::TimedOut(_));
            report.problem("versions", err);
            if hung {
                return skip_after_hang("versions", &external::MODES[1..], report);
            }
            "1".to_string()
        }
    };

    let scratch = Scratch::new()?;
    let app_dir = scratch.0.join("app");
    if let Some(app) = app {
        copy_tree(app, &app_dir)?;
    }
    let port = if standalone { None } else { Some(free_port()?) };
    let instance_id: InstanceId = format!("pm-check-{}", std::process::id())
        .parse()
        .map_err(|e: crate::protocol::InvalidId| Error::invalid(e.to_string()))?;
    let mut env = current_environment();
    let base = env.clone();
    match plugin.environment(&version, &mut env, &parameters) {
        Ok(()) => {
            let changed = env.iter().filter(|(k, v)| base.get(*k) != Some(*v)).count()
                + base.keys().filter(|k| !env.contains_key(*k)).count();
            report.ok("environment", format!("{changed} variables changed"));
        }
        Err(err) => {
            let hung = matches!(err, Error::TimedOut(_));
            report.problem("environment", err);
            if hung {
                return skip_after_hang("environment", &["start", "status", "stop"], report);
            }
            env = base;
        }
    }
    if let Some(port) = port {
        env.insert("PM_PORT".into(), port.to_string());
        env.insert("PORT".into(), port.to_string());
    }
    env.insert("PM_INSTANCE_ID".into(), instance_id.to_string());
    let instance = PluginInstance {
        log_limits: Default::default(),
        instance_id,
        port,
        standalone,
        path: app_dir,
        version,
        parameters,
        environment: env,
    };
    let ctx = Context {
        data_dir: scratch.0.clone(),
        supervisor: crate::supervise::supervisor_exe(),
        heart_url: None,
        log_limits: Default::default(),
    };

    let mut running = None;
    match plugin.start(&ctx, &instance) {
        Ok(Started::Supervise(launch)) => match run_supervised(&launch, &scratch.0, port) {
            Ok((child, what)) => {
                report.ok("start", what);
                running = Some(child);
            }
            Err(err) => report.problem("start", err),
        },
        Ok(Started::Managed(message)) => {
            let timeout = params::start_timeout(&instance.parameters)?;
            match port {
                Some(port) if !crate::wait::until(timeout.duration(), || net::port_answers(port)) => report.problem(
                    "start",
                    format!(
                        "the plugin says it started the instance ({message}), but nothing answers on port {port} after {} s",
                        timeout.as_f64()
                    ),
                ),
                _ => report.ok("start", format!("started by the plugin: {message}")),
            }
        }
        Err(err) => {
            let hung = matches!(err, Error::TimedOut(_));
            report.problem("start", err);
            if hung {
                return skip_after_hang("start", &["status", "stop"], report);
            }
        }
    }
    for mode in ["status", "stop"] {
        let result = if mode == "status" {
            plugin.status(&ctx, &instance)
        } else {
            plugin.stop(&ctx, &instance)
        };
        match result {
            Err(err) if matches!(err, Error::TimedOut(_)) && mode == "status" => {
                report.problem(mode, err);
                return skip_after_hang(mode, &["stop"], report);
            }
            Ok(message) => report.ok(mode, message),
            Err(err) => report.problem(mode, err),
        }
    }
    drop(running);
    Ok(())
}

/// After the plugin hung in `mode`, the modes that need it to answer are
/// not tried: a check of a plugin that hangs everywhere takes one time
/// limit, not one per mode.
fn skip_after_hang(mode: &str, rest: &[&str], report: &mut Report) -> Result<()> {
    for later in rest {
        report.skip(later, &format!("the plugin hung in {mode}"));
    }
    Ok(())
}

/// Runs a supervised start the way `pm-supervisor` would (own process
/// group, the given environment and directory, output to a log), and waits
/// until it answers on `port`, or, standalone, stays up `standalone_wait`.
fn run_supervised(launch: &Launch, scratch: &Path, port: Option<u16>) -> Result<(Running, String)> {
    let log_path = scratch.join("start.log");
    let log = std::fs::File::create(&log_path).map_err(|e| Error::io("create", &log_path, e))?;
    let log2 = log
        .try_clone()
        .map_err(|e| Error::io("duplicate", &log_path, e))?;
    let (program, args) = launch
        .command
        .split_first()
        .ok_or_else(|| Error::invalid("the command to supervise is empty"))?;
    let child = Bounded::spawn(
        Command::new(program)
            .args(args)
            .current_dir(&launch.cwd)
            .env_clear()
            .envs(&launch.environment)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2),
        format!(
            "the command to supervise, {:?}, in {}",
            launch.command,
            launch.cwd.display()
        ),
    )?;
    let mut running = Running(child);
    let started = Instant::now();
    let mut exited = None;
    let wait = if port.is_some() {
        launch.start_timeout
    } else {
        launch.standalone_wait
    };
    let up = crate::wait::until(wait.duration(), || {
        if running.0.has_ended() {
            // Reaped only now, after the group is gone.
            exited = running
                .0
                .wait(Duration::ZERO, true)
                .ok()
                .map(|ended| match ended {
                    Ended::Exited(status) => status,
                    Ended::TimedOut => ExitStatus::from_raw(0),
                });
            return true;
        }
        port.is_some_and(net::port_answers)
    });
    let tail = || {
        let text = fsutil::tail(&log_path, LOG_TAIL_BYTES, Some(LOG_TAIL_LINES));
        text.lines().collect::<Vec<_>>().join("; ")
    };
    if let Some(status) = exited {
        return Err(Error::invalid(format!(
            "the supervised command {:?} ended ({}) after {:.1} s: {}",
            launch.command,
            external::describe_status(status),
            started.elapsed().as_secs_f64(),
            tail()
        )));
    }
    match port {
        Some(port) if !up => Err(Error::invalid(format!(
            "the supervised command {:?} did not answer on port {port} within {} s: {}",
            launch.command,
            launch.start_timeout.as_f64(),
            tail()
        ))),
        Some(port) => Ok((
            running,
            format!(
                "supervised {:?} answered on port {port} after {:.2} s",
                launch.command,
                started.elapsed().as_secs_f64()
            ),
        )),
        None => Ok((
            running,
            format!(
                "supervised {:?} still running after {} s",
                launch.command,
                launch.standalone_wait.as_f64()
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[ignore = "needs root"]
    fn a_command_that_ended_is_not_signalled_on_drop_even_when_its_pid_comes_back() {
        let scratch = Scratch::new().unwrap();
        let pidfile = scratch.0.join("pid");
        let mut running = Running(
            Bounded::spawn(
                Command::new("/bin/sh")
                    .arg("-c")
                    .arg(format!("echo $$ > {}", pidfile.display())),
                "sh",
            )
            .unwrap(),
        );
        // What run_supervised does with a command that ended before it
        // answered: reap it, then drop it.
        assert!(crate::wait::until(Duration::from_secs(10), || running
            .0
            .has_ended()));
        running.0.wait(Duration::ZERO, true).unwrap();
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // Another process group leader now has its pid, and so its group
        // id: a drop that signals the group (as it once did after reaping
        // the leader) kills it.
        let mut squatter = crate::process::squat(pid).expect("could not reuse the pid");
        drop(running);
        let alive = squatter.try_wait().unwrap().is_none();
        let _ = squatter.kill();
        let _ = squatter.wait();
        assert!(alive, "the process that reused pid {pid} was signalled");
    }

    #[test]
    #[ignore = "needs root"]
    fn a_command_that_does_not_listen_is_not_taken_for_answering() {
        // In a namespace where a probe of the closed port lands on
        // itself: the once bare probe of check took that for an answer.
        let port = 40_000;
        let result = crate::net::with_self_connect(port, move || {
            let scratch = Scratch::new().unwrap();
            let timeouts = crate::plugins::params::Timeouts {
                start_timeout: crate::protocol::Seconds::from_secs(1),
                standalone_wait: crate::protocol::Seconds::from_secs(1),
                stop_timeout: crate::protocol::Seconds::from_secs(1),
            };
            let launch = Launch::new(
                vec!["/bin/sleep".into(), "30".into()],
                false,
                scratch.0.clone(),
                crate::protocol::Environment::new(),
                timeouts,
            );
            run_supervised(&launch, &scratch.0, Some(port))
                .map(|(_, what)| what)
                .map_err(|e| e.to_string())
        });
        let err = result.expect_err("a command that listens on nothing answered");
        assert!(err.contains("did not answer on port 40000"), "{err}");
    }
}
