//! `pm-runtime`: the runtimes of this node from the command line.
//!
//! `list`, `versions`, `env` and `exec` go through the same [`Registry`]
//! as the heart, so a runtime behaves the same from either; `check` runs
//! every mode of one external plugin against a scratch instance and
//! reports each problem. `Args` is what lexopt gave us; `run` resolves it.
//! Errors become a message and an exit status only in [`main`].

use std::ffi::OsString;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitid, Id, WaitPidFlag};
use nix::unistd::Pid;

use super::external::{self, External};
use super::{plugin_dirs, Context, Registry, Runtime, Started};
use crate::cli::{fatal, print, usage_error, warn};
use crate::error::{Error, Result};
use crate::exit::Tool;
use crate::net;
use crate::process::{Bounded, Ended};
use crate::protocol::{Environment, InstanceId, Parameters, PluginInstance};

const PROG: &str = "pm-runtime";

const USAGE: &str = "\
usage: pm-runtime [--plugin-dir DIR]... [--timeout SECS] COMMAND [ARGS]

commands:
  list [--json]                        every runtime with its versions
  versions NAME                        the versions of one runtime
  env NAME VERSION [--json] [--parameters JSON]
                                       export lines (or the whole environment)
  exec NAME VERSION [--parameters JSON] [--] CMD [ARGS]...
                                       run CMD in that environment
  check PATH [--app DIR] [--parameters JSON] [--standalone]
                                       test every mode of an external plugin

options:
  --plugin-dir DIR    look for pm-runtime-NAME plugins in DIR (repeatable)
  --timeout SECS      time limit of one plugin call (default 30)
  -h, --help          this help
  -V, --version       the version
";

/// What the command line asked for.
#[derive(Debug, PartialEq)]
enum Args {
    Help,
    Version,
    Run {
        plugin_dirs: Vec<PathBuf>,
        timeout: Option<Duration>,
        command: Sub,
    },
}

/// The subcommands.
#[derive(Debug, PartialEq)]
enum Sub {
    List {
        json: bool,
    },
    Versions {
        name: String,
    },
    Env {
        name: String,
        version: String,
        json: bool,
        parameters: Parameters,
    },
    Exec {
        name: String,
        version: String,
        parameters: Parameters,
        argv: Vec<OsString>,
    },
    Check {
        path: PathBuf,
        app: Option<PathBuf>,
        parameters: Parameters,
        standalone: bool,
    },
}

fn parse_args(args: impl IntoIterator<Item = OsString>) -> Result<Args> {
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_args(args);
    let mut plugin_dirs = Vec::new();
    let mut timeout = None;
    let command = loop {
        match p.next().map_err(usage_error)? {
            Some(Short('h') | Long("help")) => return Ok(Args::Help),
            Some(Short('V') | Long("version")) => return Ok(Args::Version),
            Some(Long("plugin-dir")) => {
                plugin_dirs.push(PathBuf::from(p.value().map_err(usage_error)?));
            }
            Some(Long("timeout")) => {
                let text = string(p.value().map_err(usage_error)?)?;
                timeout =
                    Some(external::parse_timeout(&text).map_err(|e| Error::Usage(e.to_string()))?);
            }
            Some(Value(cmd)) => break string(cmd)?,
            Some(arg) => return Err(usage_error(arg.unexpected())),
            None => return Err(Error::Usage("missing command".into())),
        }
    };

    let mut positional: Vec<OsString> = Vec::new();
    let mut json = false;
    let mut app = None;
    let mut standalone = false;
    let mut parameters = Parameters::new();
    let mut argv = Vec::new();
    let takes_json = matches!(command.as_str(), "list" | "env");
    let takes_params = matches!(command.as_str(), "env" | "exec" | "check");
    while let Some(arg) = p.next().map_err(usage_error)? {
        match arg {
            Short('h') | Long("help") => return Ok(Args::Help),
            Long("json") if takes_json => json = true,
            Long("parameters") if takes_params => {
                parameters = parse_parameters(&string(p.value().map_err(usage_error)?)?)?;
            }
            Long("app") if command == "check" => {
                app = Some(PathBuf::from(p.value().map_err(usage_error)?));
            }
            Long("standalone") if command == "check" => standalone = true,
            Value(value) if command == "exec" && positional.len() == 2 => {
                argv.push(value);
                argv.extend(p.raw_args().map_err(usage_error)?);
                break;
            }
            Value(value) => positional.push(value),
            other => return Err(usage_error(other.unexpected())),
        }
    }

    let want = match command.as_str() {
        "list" => 0,
        "versions" | "check" => 1,
        "env" | "exec" => 2,
        other => return Err(Error::Usage(format!("unknown command: {other}"))),
    };
    if positional.len() != want {
        return Err(Error::Usage(format!(
            "{command} takes {want} argument{}, got {}",
            if want == 1 { "" } else { "s" },
            positional.len()
        )));
    }
    let mut positional = positional.into_iter();
    let mut next = || string(positional.next().unwrap_or_default());
    let command = match command.as_str() {
        "list" => Sub::List { json },
        "versions" => Sub::Versions { name: next()? },
        "env" => Sub::Env {
            name: next()?,
            version: next()?,
            json,
            parameters,
        },
        "exec" => {
            if argv.is_empty() {
                return Err(Error::Usage("exec needs a command to run".into()));
            }
            Sub::Exec {
                name: next()?,
                version: next()?,
                parameters,
                argv,
            }
        }
        _ => Sub::Check {
            path: PathBuf::from(next()?),
            app,
            parameters,
            standalone,
        },
    };
    Ok(Args::Run {
        plugin_dirs,
        timeout,
        command,
    })
}

fn string(value: OsString) -> Result<String> {
    value
        .into_string()
        .map_err(|v| Error::Usage(format!("argument is not valid UTF-8: {v:?}")))
}

fn parse_parameters(text: &str) -> Result<Parameters> {
    match serde_json::from_str(text) {
        Ok(serde_json::Value::Object(map)) => Ok(map),
        Ok(_) => Err(Error::Usage("--parameters must be a JSON object".into())),
        Err(e) => Err(Error::Usage(format!("--parameters is not valid JSON: {e}"))),
    }
}

/// Entry point of `pm-runtime`.
pub(crate) fn main() -> ExitCode {
    let args = match parse_args(std::env::args_os().skip(1)) {
        Ok(args) => args,
        Err(err) => {
            fatal(PROG, &err);
            let _ = print_err(&format!("{PROG}: try 'pm-runtime --help'\n"));
            return Tool::Usage.into();
        }
    };
    match args {
        Args::Help => exit_printing(USAGE),
        Args::Version => exit_printing(&format!("{PROG} {}\n", env!("CARGO_PKG_VERSION"))),
        Args::Run {
            plugin_dirs: dirs,
            timeout,
            command,
        } => {
            let timeout = match timeout.map(Ok).unwrap_or_else(external::timeout_from_env) {
                Ok(timeout) => timeout,
                Err(err) => {
                    fatal(PROG, &err);
                    return Tool::Usage.into();
                }
            };
            let registry = Registry::new(plugin_dirs(&dirs)).with_timeout(timeout);
            match run(&registry, command) {
                Ok(code) => code,
                Err(err) => {
                    fatal(PROG, &err);
                    exit_code(&err).into()
                }
            }
        }
    }
}

fn print_err(text: &str) -> std::io::Result<()> {
    use std::io::Write;
    std::io::stderr().lock().write_all(text.as_bytes())
}

fn exit_printing(text: &str) -> ExitCode {
    match print(text) {
        Ok(()) => Tool::Success.into(),
        Err(err) => {
            fatal(PROG, format!("unable to write to stdout: {err}"));
            Tool::Temporary.into()
        }
    }
}

/// The exit status of a failed command.
fn exit_code(err: &Error) -> Tool {
    match err {
        Error::Usage(_) => Tool::Usage,
        Error::Sys { .. } => Tool::Temporary,
        Error::Io { source, .. } if source.kind() != std::io::ErrorKind::NotFound => {
            Tool::Temporary
        }
        _ => Tool::Failure,
    }
}

fn stdout(text: &str) -> Result<()> {
    print(text).map_err(|e| Error::io("write to", "stdout", e))
}

fn run(registry: &Registry, command: Sub) -> Result<ExitCode> {
    match command {
        Sub::List { json } => list(registry, json),
        Sub::Versions { name } => {
            let versions = registry.get(&name)?.versions()?;
            let mut out = String::new();
            for v in versions {
                out.push_str(&v);
                out.push('\n');
            }
            stdout(&out)?;
            Ok(Tool::Success.into())
        }
        Sub::Env {
            name,
            version,
            json,
            parameters,
        } => {
            let base = current_environment();
            let mut env = base.clone();
            registry
                .get(&name)?
                .environment(&version, &mut env, &parameters)?;
            let text = if json {
                let mut text = serde_json::to_string_pretty(&env)
                    .map_err(|e| Error::json("environment", e))?;
                text.push('\n');
                text
            } else {
                export_lines(&base, &env)?
            };
            stdout(&text)?;
            Ok(Tool::Success.into())
        }
        Sub::Exec {
            name,
            version,
            parameters,
            argv,
        } => {
            let mut env = current_environment();
            registry
                .get(&name)?
                .environment(&version, &mut env, &parameters)?;
            Ok(exec(&argv, &env))
        }
        Sub::Check {
            path,
            app,
            parameters,
            standalone,
        } => check(
            &path,
            registry.timeout(),
            app.as_deref(),
            parameters,
            standalone,
        ),
    }
}

fn list(registry: &Registry, json: bool) -> Result<ExitCode> {
    let mut failed = false;
    let mut table: Vec<(String, Option<Vec<String>>)> = Vec::new();
    for runtime in registry.all() {
        match runtime.versions() {
            Ok(versions) => table.push((runtime.name().to_string(), Some(versions))),
            Err(err) => {
                warn(PROG, format!("runtime {}: {err}", runtime.name()));
                failed = true;
                table.push((runtime.name().to_string(), None));
            }
        }
    }
    let text = if json {
        let map: serde_json::Map<String, serde_json::Value> = table
            .into_iter()
            .filter_map(|(name, versions)| Some((name, versions?.into())))
            .collect();
        let mut text = serde_json::to_string_pretty(&map).map_err(|e| Error::json("list", e))?;
        text.push('\n');
        text
    } else {
        let width = table.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
        let mut text = String::new();
        for (name, versions) in table {
            let versions = match versions {
                None => "(error)".to_string(),
                Some(v) if v.is_empty() => "(none)".to_string(),
                Some(v) => v.join(" "),
            };
            let _ = writeln!(text, "{name:width$}  {versions}");
        }
        text
    };
    stdout(&text)?;
    Ok(if failed { Tool::Failure } else { Tool::Success }.into())
}

/// The environment of this process, leaving out variables that are not
/// UTF-8 (they cannot be passed on as JSON).
fn current_environment() -> Environment {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect()
}

/// True when `name` is a shell variable name: `[A-Za-z_][A-Za-z0-9_]*`.
fn shell_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// `value` in single quotes, each `'` written as `'\''`.
fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

/// The shell lines that turn `base` into `env`: `export NAME='value'` for
/// each variable added or changed, `unset NAME` for each removed.
///
/// # Errors
///
/// A variable to set or unset has a name the shell cannot take.
fn export_lines(base: &Environment, env: &Environment) -> Result<String> {
    let mut out = String::new();
    let check = |name: &str| {
        if shell_name(name) {
            Ok(())
        } else {
            Err(Error::invalid(format!(
                "cannot export {name:?}: not a shell variable name"
            )))
        }
    };
    for name in base.keys().filter(|k| !env.contains_key(*k)) {
        check(name)?;
        let _ = writeln!(out, "unset {name}");
    }
    for (name, value) in env {
        if base.get(name) != Some(value) {
            check(name)?;
            let _ = writeln!(out, "export {name}={}", shell_quote(value));
        }
    }
    Ok(out)
}

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
fn exec(argv: &[OsString], env: &Environment) -> ExitCode {
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
        crate::fsutil::create_dir_all(&path.join("app"), 0o700)?;
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

fn check(
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
            report.problem("versions", err);
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
            report.problem("environment", err);
            env = base;
        }
    }
    if let Some(port) = port {
        env.insert("PM_PORT".into(), port.to_string());
        env.insert("PORT".into(), port.to_string());
    }
    env.insert("PM_INSTANCE_ID".into(), instance_id.to_string());
    let instance = PluginInstance {
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
            let timeout = super::shell::seconds_param(
                &instance.parameters,
                "start_timeout",
                super::shell::DEFAULT_START_TIMEOUT,
            )?;
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
        Err(err) => report.problem("start", err),
    }
    for mode in ["status", "stop"] {
        let result = if mode == "status" {
            plugin.status(&ctx, &instance)
        } else {
            plugin.stop(&ctx, &instance)
        };
        match result {
            Ok(message) => report.ok(mode, message),
            Err(err) => report.problem(mode, err),
        }
    }
    drop(running);
    Ok(())
}

/// Runs a supervised start the way `pm-supervisor` would (own process
/// group, the given environment and directory, output to a log), and waits
/// until it answers on `port`, or, standalone, stays up `standalone_wait`.
fn run_supervised(
    launch: &super::Launch,
    scratch: &Path,
    port: Option<u16>,
) -> Result<(Running, String)> {
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
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(5)..].join("; ")
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

    fn parse(args: &[&str]) -> Result<Args> {
        parse_args(args.iter().map(OsString::from))
    }

    #[test]
    fn global_options_come_before_the_command() {
        let args = parse(&["--plugin-dir", "/p", "--timeout", "2", "list", "--json"]).unwrap();
        assert_eq!(
            args,
            Args::Run {
                plugin_dirs: vec![PathBuf::from("/p")],
                timeout: Some(Duration::from_secs(2)),
                command: Sub::List { json: true },
            }
        );
        assert_eq!(parse(&["--help"]).unwrap(), Args::Help);
        assert_eq!(parse(&["-V"]).unwrap(), Args::Version);
    }

    #[test]
    fn exec_keeps_the_command_and_its_options() {
        for args in [
            &["exec", "shell", "1", "--", "sh", "-c", "exit 3", "--json"][..],
            &["exec", "shell", "1", "sh", "-c", "exit 3", "--json"][..],
        ] {
            let Args::Run {
                command: Sub::Exec { argv, .. },
                ..
            } = parse(args).unwrap()
            else {
                panic!("not exec: {args:?}");
            };
            assert_eq!(argv, ["sh", "-c", "exit 3", "--json"]);
        }
    }

    #[test]
    fn misuse_is_a_usage_error() {
        for args in [
            &[][..],
            &["frob"][..],
            &["versions"][..],
            &["env", "shell"][..],
            &["exec", "shell", "1"][..],
            &["--timeout", "0", "list"][..],
            &["list", "--app", "x"][..],
            &["env", "a", "1", "--parameters", "[]"][..],
        ] {
            assert!(
                matches!(parse(args), Err(Error::Usage(_))),
                "{args:?} accepted"
            );
        }
    }

    #[test]
    fn export_lines_quote_and_validate() {
        let base: Environment = [("A", "1"), ("GONE", "x")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut env = base.clone();
        env.remove("GONE");
        env.insert("B".into(), "it's $HOME\nline".into());
        assert_eq!(
            export_lines(&base, &env).unwrap(),
            "unset GONE\nexport B='it'\\''s $HOME\nline'\n"
        );
        env.insert("BAD-NAME".into(), "x".into());
        assert!(export_lines(&base, &env).is_err());
        assert!(shell_name("_a1") && !shell_name("1a") && !shell_name(""));
    }
}
