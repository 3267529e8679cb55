//! External runtime plugins (SPEC §2): executables named
//! `pm-runtime-NAME` in the plugin directories.
//!
//! A call is `pm-runtime-NAME MODE` with the JSON request on standard
//! input and the JSON answer on standard output. The plugin runs through
//! the one timed runner (`process::bounded::output`): in its own process
//! group with the caller's environment, the request written and stdout
//! and stderr read by threads (capped, the excess read and dropped), so a
//! chatty plugin never blocks on a full pipe, and when the call outlives
//! its time limit the whole group is killed while the leader's pid is
//! still reserved. Exit status 0 is success; anything else is a
//! failure reported with the plugin's name, its status and its stderr.
//! Every answer is checked for its shape before it is used.
//!
//! Discovery: the first plugin directory that holds an executable
//! `pm-runtime-NAME` wins; a built-in runtime wins over a plugin of the
//! same name (the registry looks at built-ins first).

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::Duration;

use nix::sys::signal::Signal;
use nix::unistd::{access, AccessFlags};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use super::params::Timeouts;
use super::{Context, Launch, Runtime, Started};
use crate::error::{Error, Result};
use crate::process::bounded::{self, Output};
use crate::protocol::{
    Environment, Parameters, PluginEnvironment, PluginEnvironmentRequest, PluginInstance,
    PluginMessage, PluginStart, PluginVersions, Seconds,
};

/// The file-name prefix of a plugin.
pub(crate) const PREFIX: &str = "pm-runtime-";

/// The time limit of one call when neither `--timeout` nor
/// `PM_RUNTIME_TIMEOUT` sets one.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// The environment variable that sets the time limit, in seconds.
pub(crate) const TIMEOUT_VAR: &str = "PM_RUNTIME_TIMEOUT";

/// The most of a plugin's stdout that is kept.
const STDOUT_CAP: usize = 1 << 20;
/// The most of a plugin's stderr that is kept.
const STDERR_CAP: usize = 64 << 10;
/// The longest error message quoted from stderr.
const STDERR_QUOTE: usize = 2000;

/// The modes, in the order `pm-runtime check` runs them.
pub(crate) const MODES: [&str; 5] = ["versions", "environment", "start", "status", "stop"];

/// Parses a time limit: [`Seconds`] (the one parser and bound), more
/// than 0.
///
/// # Errors
///
/// Anything else.
pub(crate) fn parse_timeout(text: &str) -> Result<Duration> {
    let secs: Seconds = text
        .parse()
        .map_err(|e| Error::invalid(format!("invalid timeout: {e}")))?;
    if secs.duration().is_zero() {
        return Err(Error::invalid(
            "invalid timeout: a plugin call needs more than 0 seconds",
        ));
    }
    Ok(secs.duration())
}

/// The time limit from `PM_RUNTIME_TIMEOUT`, or [`DEFAULT_TIMEOUT`] when it
/// is not set.
///
/// # Errors
///
/// The variable is set to something that is not a valid time limit.
pub(crate) fn timeout_from_env() -> Result<Duration> {
    match std::env::var(TIMEOUT_VAR) {
        Ok(text) if !text.is_empty() => {
            parse_timeout(&text).map_err(|e| Error::invalid(format!("{TIMEOUT_VAR}: {e}")))
        }
        _ => Ok(DEFAULT_TIMEOUT),
    }
}

/// True when `name` can be a runtime name: `[A-Za-z0-9_-]{1,64}`.
pub(crate) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// True when `path` is a regular file this process may execute.
pub(crate) fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file()) && access(path, AccessFlags::X_OK).is_ok()
}

/// Every plugin in `dirs`, sorted by name; for a name found in several
/// directories, the first directory's.
pub(crate) fn discover(dirs: &[PathBuf], timeout: Duration) -> Vec<External> {
    let mut found: Vec<External> = Vec::new();
    for dir in dirs {
        let Ok(read) = std::fs::read_dir(dir) else {
            continue;
        };
        for entry in read.flatten() {
            let file_name = entry.file_name();
            let Some(name) = file_name.to_str().and_then(|n| n.strip_prefix(PREFIX)) else {
                continue;
            };
            let path = entry.path();
            if valid_name(name) && !found.iter().any(|p| p.name == name) && is_executable(&path) {
                found.push(External::new(name, path, timeout));
            }
        }
    }
    found.sort_by(|a, b| a.name.cmp(&b.name));
    found
}

/// The plugin called `name` in `dirs`: `Ok(None)` when there is none.
///
/// # Errors
///
/// The only `pm-runtime-NAME` files found are not executable.
pub(crate) fn find(dirs: &[PathBuf], name: &str, timeout: Duration) -> Result<Option<External>> {
    if !valid_name(name) {
        return Ok(None);
    }
    let mut not_executable = None;
    for dir in dirs {
        let path = dir.join(format!("{PREFIX}{name}"));
        if is_executable(&path) {
            return Ok(Some(External::new(name, path, timeout)));
        }
        if path.exists() && not_executable.is_none() {
            not_executable = Some(path);
        }
    }
    match not_executable {
        Some(path) => Err(Error::invalid(format!(
            "runtime plugin {name}: {} is not an executable file",
            path.display()
        ))),
        None => Ok(None),
    }
}

/// An external runtime plugin.
#[derive(Debug, Clone)]
pub(crate) struct External {
    name: String,
    path: PathBuf,
    timeout: Duration,
}

impl External {
    /// The plugin `name` at `path`, whose calls may each take `timeout`.
    /// A bare file name is taken in the current directory, never looked
    /// up in `PATH`.
    pub(crate) fn new(name: &str, path: PathBuf, timeout: Duration) -> External {
        let path = if path.is_relative() && path.components().count() == 1 {
            Path::new(".").join(path)
        } else {
            path
        };
        External {
            name: name.to_string(),
            path,
            timeout,
        }
    }

    /// The plugin for the file `path`, named after it (`pm-runtime-NAME`
    /// gives `NAME`; any other file name is used whole).
    pub(crate) fn at(path: &Path, timeout: Duration) -> External {
        let file = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.display().to_string());
        let name = file.strip_prefix(PREFIX).unwrap_or(&file);
        External::new(name, path.to_path_buf(), timeout)
    }

    /// The plugin's executable.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    fn context(&self, mode: &str) -> String {
        format!(
            "runtime plugin {} ({}) {mode}",
            self.name,
            self.path.display()
        )
    }

    /// Runs `pm-runtime-NAME MODE` with `input` on stdin, within the time
    /// limit; its exit status and output.
    ///
    /// # Errors
    ///
    /// The plugin cannot be run, or it did not exit within the time limit
    /// (its process group is then killed).
    fn run(&self, mode: &str, input: Vec<u8>) -> Result<Output> {
        bounded::output(
            Command::new(&self.path).arg(mode),
            Some(input),
            self.timeout,
            (STDOUT_CAP, STDERR_CAP),
            &format!("runtime plugin {} ({})", self.name, self.path.display()),
        )?
        .ok_or_else(|| {
            Error::TimedOut(format!(
                "{} timed out after {:.1} s; its process group was killed",
                self.context(mode),
                self.timeout.as_secs_f64()
            ))
        })
    }

    /// Runs `mode` with `request` and returns its answer as JSON.
    ///
    /// # Errors
    ///
    /// The plugin cannot be run, timed out, exited non-zero (the message
    /// holds its status and stderr), or printed something that is not a
    /// JSON object.
    pub(crate) fn call(&self, mode: &str, request: &impl Serialize) -> Result<Value> {
        let input = serde_json::to_vec(request)
            .map_err(|e| Error::json(format!("{} request", self.context(mode)), e))?;
        let finished = self.run(mode, input)?;
        if !finished.status.success() {
            let reason = describe_status(finished.status);
            let stderr = quote_stderr(&finished.stderr);
            return Err(Error::invalid(if stderr.is_empty() {
                format!("{} failed: {reason}, nothing on stderr", self.context(mode))
            } else {
                format!("{} failed: {reason}: {stderr}", self.context(mode))
            }));
        }
        if finished.stdout.iter().all(u8::is_ascii_whitespace) {
            return Err(Error::invalid(format!(
                "{} answered nothing (expected a JSON object on stdout)",
                self.context(mode)
            )));
        }
        let value: Value = serde_json::from_slice(&finished.stdout).map_err(|e| {
            Error::invalid(format!(
                "{} answered invalid JSON ({e}): {}",
                self.context(mode),
                excerpt(&finished.stdout)
            ))
        })?;
        if !value.is_object() {
            return Err(Error::invalid(format!(
                "{} answered the wrong shape: expected a JSON object, got {}",
                self.context(mode),
                excerpt(value.to_string().as_bytes())
            )));
        }
        Ok(value)
    }

    /// Decodes an answer of `mode` as `T`, naming `expected` on failure.
    fn decode<T: DeserializeOwned>(&self, mode: &str, value: Value, expected: &str) -> Result<T> {
        serde_json::from_value(value).map_err(|e| self.wrong_shape(mode, expected, e))
    }

    fn wrong_shape(&self, mode: &str, expected: &str, why: impl std::fmt::Display) -> Error {
        Error::invalid(format!(
            "{} answered the wrong shape (expected {expected}): {why}",
            self.context(mode)
        ))
    }

    fn check_environment(&self, mode: &str, env: &Environment, expected: &str) -> Result<()> {
        for (name, value) in env {
            if name.is_empty() || name.contains(['=', '\0']) || value.contains('\0') {
                return Err(self.wrong_shape(
                    mode,
                    expected,
                    format!("invalid environment variable {name:?}"),
                ));
            }
        }
        Ok(())
    }

    /// EXECUTE start, with the plugin's answer turned into a [`Started`].
    fn start_answer(&self, instance: &PluginInstance, value: Value) -> Result<Started> {
        const EXPECTED: &str = r#"{"supervise": {"command": [...], "cwd": ..., "environment": {...}}} or {"message": "..."}"#;
        let answer: PluginStart = self.decode("start", value, EXPECTED)?;
        match (answer.supervise, answer.message) {
            (Some(supervise), None) => {
                let first = supervise.command.first().map(String::as_str);
                if !matches!(first, Some(f) if !f.is_empty())
                    || supervise.command.iter().any(|a| a.contains('\0'))
                {
                    return Err(self.wrong_shape(
                        "start",
                        EXPECTED,
                        "supervise.command must be a non-empty list of strings",
                    ));
                }
                let environment = supervise
                    .environment
                    .unwrap_or_else(|| instance.environment.clone());
                self.check_environment("start", &environment, EXPECTED)?;
                let cwd = match supervise.cwd {
                    Some(cwd) => instance.path.join(cwd),
                    None => instance.path.clone(),
                };
                Ok(Started::Supervise(Launch::new(
                    supervise.command,
                    false,
                    cwd,
                    environment,
                    Timeouts::parse(&instance.parameters)?,
                )))
            }
            (None, Some(message)) => Ok(Started::Managed(message)),
            (Some(_), Some(_)) => {
                Err(self.wrong_shape("start", EXPECTED, "both supervise and message are set"))
            }
            (None, None) => {
                Err(self.wrong_shape("start", EXPECTED, "neither supervise nor message is set"))
            }
        }
    }

    fn message(&self, mode: &str, instance: &PluginInstance) -> Result<String> {
        let value = self.call(mode, instance)?;
        let answer: PluginMessage = self.decode(mode, value, r#"{"message": "..."}"#)?;
        Ok(answer.message)
    }
}

impl Runtime for External {
    fn name(&self) -> &str {
        &self.name
    }

    fn versions(&self) -> Result<Vec<String>> {
        const EXPECTED: &str = r#"{"versions": ["1.2", "1.2.3", ...]}"#;
        let value = self.call("versions", &serde_json::json!({}))?;
        let answer: PluginVersions = self.decode("versions", value, EXPECTED)?;
        if let Some(bad) = answer.versions.iter().find(|v| {
            v.is_empty() || v.len() > 100 || v.chars().any(|c| c.is_whitespace() || c.is_control())
        }) {
            return Err(self.wrong_shape("versions", EXPECTED, format!("invalid version {bad:?}")));
        }
        let mut versions = answer.versions;
        super::version::sort(&mut versions);
        Ok(versions)
    }

    fn environment(
        &self,
        version: &str,
        env: &mut Environment,
        parameters: &Parameters,
    ) -> Result<()> {
        const EXPECTED: &str = r#"{"environment": {"NAME": "value", ...}}"#;
        let request = PluginEnvironmentRequest {
            version: version.to_string(),
            environment: env.clone(),
            parameters: parameters.clone(),
        };
        let value = self.call("environment", &request)?;
        let answer: PluginEnvironment = self.decode("environment", value, EXPECTED)?;
        self.check_environment("environment", &answer.environment, EXPECTED)?;
        *env = answer.environment;
        Ok(())
    }

    fn start(&self, _ctx: &Context, instance: &PluginInstance) -> Result<Started> {
        let value = self.call("start", instance)?;
        self.start_answer(instance, value)
    }

    fn stop(&self, _ctx: &Context, instance: &PluginInstance) -> Result<String> {
        self.message("stop", instance)
    }

    fn status(&self, _ctx: &Context, instance: &PluginInstance) -> Result<String> {
        self.message("status", instance)
    }
}

/// `exit status 1`, `killed by signal 9 (SIGKILL)`.
pub(crate) fn describe_status(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        format!("exit status {code}")
    } else if let Some(signal) = status.signal() {
        match Signal::try_from(signal) {
            Ok(sig) => format!("killed by signal {signal} ({})", sig.as_str()),
            Err(_) => format!("killed by signal {signal}"),
        }
    } else {
        status.to_string()
    }
}

/// The stderr of a plugin as one line: its last [`STDERR_QUOTE`] bytes,
/// lines joined by `; `.
fn quote_stderr(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let joined = lines.join("; ");
    if joined.len() > STDERR_QUOTE {
        let mut start = joined.len() - STDERR_QUOTE;
        while !joined.is_char_boundary(start) {
            start += 1;
        }
        format!("...{}", &joined[start..])
    } else {
        joined
    }
}

/// The first bytes of an answer, for error messages.
fn excerpt(bytes: &[u8]) -> String {
    const LIMIT: usize = 200;
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(LIMIT)]);
    let text = text.trim().replace('\n', "\\n");
    if bytes.len() > LIMIT {
        format!("{text}...")
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_timeouts_are_validated() {
        assert!(valid_name("procfile"));
        assert!(valid_name("py_venv-3"));
        for bad in ["", "a/b", "..", "a.b", "a b", &"a".repeat(65)] {
            assert!(!valid_name(bad), "{bad:?}");
        }
        assert_eq!(parse_timeout("2.5").unwrap(), Duration::from_millis(2500));
        for bad in ["0", "-1", "x", "inf", "NaN", "90000"] {
            assert!(parse_timeout(bad).is_err(), "{bad}");
        }
    }

    fn instance() -> PluginInstance {
        PluginInstance {
            instance_id: "web-1".parse().unwrap(),
            port: Some(4000),
            standalone: false,
            path: "/srv/web-1".into(),
            version: "1".into(),
            parameters: serde_json::json!({"stop_timeout": 3})
                .as_object()
                .cloned()
                .unwrap_or_default(),
            environment: [("PORT".to_string(), "4000".to_string())].into(),
            log_limits: Default::default(),
        }
    }

    #[test]
    fn start_answers_become_launches_or_messages() {
        let plugin = External::new("x", "/p/pm-runtime-x".into(), DEFAULT_TIMEOUT);
        let inst = instance();
        let answer = serde_json::json!({"supervise": {"command": ["run", "a b"], "cwd": "sub"}});
        let Started::Supervise(launch) = plugin.start_answer(&inst, answer).unwrap() else {
            panic!("not supervised");
        };
        assert_eq!(launch.command, ["run", "a b"]);
        assert!(!launch.shell);
        assert_eq!(launch.cwd, PathBuf::from("/srv/web-1/sub"));
        assert_eq!(launch.environment, inst.environment);
        assert_eq!(launch.stop_timeout, crate::protocol::Seconds::from_secs(3));
        assert_eq!(
            launch.start_timeout,
            crate::protocol::Seconds::from_secs(20)
        );

        let answer = serde_json::json!({"supervise": {"command": ["run"], "cwd": "/abs",
            "environment": {"A": "1"}}});
        let Started::Supervise(launch) = plugin.start_answer(&inst, answer).unwrap() else {
            panic!("not supervised");
        };
        assert_eq!(launch.cwd, PathBuf::from("/abs"));
        assert_eq!(launch.environment.len(), 1);

        let answer = serde_json::json!({"message": "up"});
        assert_eq!(
            plugin.start_answer(&inst, answer).unwrap(),
            Started::Managed("up".into())
        );

        for bad in [
            serde_json::json!({}),
            serde_json::json!({"message": "a", "supervise": {"command": ["x"]}}),
            serde_json::json!({"supervise": {"command": []}}),
            serde_json::json!({"supervise": {"command": [""]}}),
            serde_json::json!({"supervise": {"command": "run"}}),
            serde_json::json!({"supervise": {"command": ["x"], "environment": {"A=B": "1"}}}),
            serde_json::json!({"message": 3}),
        ] {
            let err = plugin.start_answer(&inst, bad.clone()).unwrap_err();
            assert!(
                err.to_string().contains("start answered the wrong shape"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn stderr_is_quoted_on_one_line() {
        assert_eq!(quote_stderr(b"a\n\n  b  \n"), "a; b");
        let long = "x".repeat(3 * STDERR_QUOTE);
        assert!(quote_stderr(long.as_bytes()).len() <= STDERR_QUOTE + 3);
    }
}
