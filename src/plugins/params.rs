//! Runtime parameters, parsed once: an instance's `parameters` object
//! becomes a typed value in one `parse` per kind of runtime, and an error
//! names the field that is wrong. Code behind the parse takes the type
//! and never looks at the JSON again.
//!
//! - [`Supervised`]: the runtimes whose instance the heart runs under
//!   `pm-supervisor` (`shell`, `rbenv`, `nvm`): `launch_command`, `shell`
//!   and the [`Timeouts`] of the launch.
//! - [`Timeouts`] alone: what an external plugin's supervised answer
//!   takes from the parameters.
//! - [`Served`]: the runtimes served by the managed Apache (`php`,
//!   `static`): `document_root` and `start_timeout`.
//! - [`startup_timeout`]: the bound of the heart's startup commands, a
//!   parameter of every runtime.

use std::path::{Component, Path, PathBuf};

use serde_json::Value;

use crate::error::{Error, Result};
use crate::protocol::{Parameters, Seconds};
use crate::shellwords;

/// Default seconds to wait for the port.
pub(crate) const DEFAULT_START_TIMEOUT: Seconds = Seconds::from_secs(20);
/// Default seconds a standalone process must stay up.
pub(crate) const DEFAULT_STANDALONE_WAIT: Seconds = Seconds::from_secs(1);
/// Default seconds from SIGTERM to SIGKILL.
pub(crate) const DEFAULT_STOP_TIMEOUT: Seconds = Seconds::from_secs(10);
/// Default seconds each startup command may take.
pub(crate) const DEFAULT_STARTUP_TIMEOUT: Seconds = Seconds::from_secs(300);

/// The placeholders that become the instance port.
const PORT_PLACEHOLDERS: [&str; 2] = ["%(port)d", "{port}"];

/// The command of a supervised runtime, from `launch_command` and `shell`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum LaunchCommand {
    /// An argument vector: the string split like a POSIX shell splits
    /// words, or the JSON list as it is.
    Argv(Vec<String>),
    /// One line for `/bin/sh -c` (`shell: true`); a list is joined with
    /// spaces.
    Shell(String),
}

impl LaunchCommand {
    /// Parses `launch_command` (a string or a list of strings) with the
    /// `shell` flag.
    ///
    /// # Errors
    ///
    /// The value is missing, of the wrong type, empty, unsplittable, or
    /// holds a NUL byte.
    fn parse(value: Option<&Value>, shell: bool) -> Result<LaunchCommand> {
        let invalid = |why: &str| Error::invalid(format!("parameter launch_command {why}"));
        let words = match value {
            None | Some(Value::Null) => return Err(invalid("is required")),
            Some(Value::String(line)) if line.trim().is_empty() => return Err(invalid("is empty")),
            Some(Value::String(line)) if shell => vec![line.clone()],
            Some(Value::String(line)) => shellwords::split(line)
                .map_err(|e| Error::invalid(format!("parameter launch_command: {e}")))?,
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| item.as_str().map(str::to_owned))
                .collect::<Option<Vec<String>>>()
                .ok_or_else(|| invalid("must be a string or a list of strings"))?,
            Some(_) => return Err(invalid("must be a string or a list of strings")),
        };
        match words.first() {
            None => return Err(invalid("is empty")),
            Some(first) if first.is_empty() => return Err(invalid("starts with an empty word")),
            Some(_) => {}
        }
        if words.iter().any(|w| w.contains('\0')) {
            return Err(invalid("contains a NUL byte"));
        }
        Ok(if shell {
            LaunchCommand::Shell(words.join(" "))
        } else {
            LaunchCommand::Argv(words)
        })
    }

    /// True when the command is a line for `/bin/sh -c`.
    pub(crate) fn shell(&self) -> bool {
        matches!(self, LaunchCommand::Shell(_))
    }

    /// The command for an instance on `port`: the argument vector, or the
    /// shell line as its only element, with `%(port)d` and `{port}`
    /// replaced by the port. Without a port they become nothing, and an
    /// argument that was only a placeholder is left out.
    pub(crate) fn for_port(&self, port: Option<u16>) -> Vec<String> {
        let port = port.map(|p| p.to_string()).unwrap_or_default();
        let fill = |word: &str| {
            PORT_PLACEHOLDERS
                .iter()
                .fold(word.to_owned(), |w, p| w.replace(p, &port))
        };
        match self {
            LaunchCommand::Shell(line) => vec![fill(line)],
            LaunchCommand::Argv(words) => words
                .iter()
                .filter(|w| !port.is_empty() || !PORT_PLACEHOLDERS.contains(&w.as_str()))
                .map(|w| fill(w))
                .collect(),
        }
    }
}

/// The timeouts of a supervised launch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Timeouts {
    /// How long the heart waits for the port to answer.
    pub start_timeout: Seconds,
    /// How long a standalone process must stay up to count as running.
    pub standalone_wait: Seconds,
    /// From SIGTERM to SIGKILL.
    pub stop_timeout: Seconds,
}

impl Timeouts {
    /// `start_timeout`, `standalone_wait` and `stop_timeout`, each with
    /// its default when absent.
    ///
    /// # Errors
    ///
    /// A value is not a number of seconds within [`Seconds::MAX`].
    pub(crate) fn parse(parameters: &Parameters) -> Result<Timeouts> {
        Ok(Timeouts {
            start_timeout: start_timeout(parameters)?,
            standalone_wait: seconds(parameters, "standalone_wait", DEFAULT_STANDALONE_WAIT)?,
            stop_timeout: seconds(parameters, "stop_timeout", DEFAULT_STOP_TIMEOUT)?,
        })
    }
}

/// The parameters of a supervised runtime (`shell`, `rbenv`, `nvm`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Supervised {
    /// What to run.
    pub launch_command: LaunchCommand,
    /// How long to wait for it, and to stop it.
    pub timeouts: Timeouts,
}

impl Supervised {
    /// Parses `launch_command`, `shell` and the timeouts.
    ///
    /// # Errors
    ///
    /// A field is missing or wrong; the message names it.
    pub(crate) fn parse(parameters: &Parameters) -> Result<Supervised> {
        let shell = match parameters.get("shell") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(Error::invalid("parameter shell must be true or false")),
        };
        Ok(Supervised {
            launch_command: LaunchCommand::parse(parameters.get("launch_command"), shell)?,
            timeouts: Timeouts::parse(parameters)?,
        })
    }
}

/// The parameters of a runtime served by the managed Apache (`php`,
/// `static`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Served {
    /// The directory served, relative to the instance directory, that
    /// cannot leave it by its text (`..`); `None` for the instance
    /// directory itself. Symbolic links are resolved at start, once the
    /// files are there.
    pub document_root: Option<PathBuf>,
    /// How long to wait for the port to answer.
    pub start_timeout: Seconds,
}

impl Served {
    /// Parses `document_root` and `start_timeout` of an instance that is
    /// `standalone` or not.
    ///
    /// # Errors
    ///
    /// The instance is standalone (Apache serves every instance on a
    /// port), or a field is wrong; the message names it.
    pub(crate) fn parse(parameters: &Parameters, standalone: bool) -> Result<Served> {
        if standalone {
            return Err(Error::invalid(
                "cannot run standalone instances: Apache serves every instance on a port",
            ));
        }
        Ok(Served {
            document_root: document_root(parameters)?,
            start_timeout: start_timeout(parameters)?,
        })
    }
}

/// `document_root`: absent or empty is `None`; else a relative path
/// without control characters whose `..` never climbs above its start.
fn document_root(parameters: &Parameters) -> Result<Option<PathBuf>> {
    let root = match parameters.get("document_root") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) if s.is_empty() => return Ok(None),
        Some(Value::String(s)) => s,
        Some(_) => {
            return Err(Error::invalid(
                "parameter document_root must be a relative path",
            ))
        }
    };
    if root.chars().any(char::is_control) {
        return Err(Error::invalid(
            "parameter document_root contains a control character",
        ));
    }
    let path = Path::new(root);
    if path.is_absolute() {
        return Err(Error::invalid(format!(
            "parameter document_root {root} must be a relative path"
        )));
    }
    let mut depth: usize = 0;
    for component in path.components() {
        match component {
            Component::ParentDir => {
                depth = depth.checked_sub(1).ok_or_else(|| {
                    Error::invalid(format!(
                        "parameter document_root {root} leaves the instance directory"
                    ))
                })?;
            }
            Component::Normal(_) => depth += 1,
            _ => {}
        }
    }
    Ok(Some(path.to_path_buf()))
}

/// `start_timeout`: how long the port may take to answer after a start.
///
/// # Errors
///
/// It is not a number of seconds within [`Seconds::MAX`].
pub(crate) fn start_timeout(parameters: &Parameters) -> Result<Seconds> {
    seconds(parameters, "start_timeout", DEFAULT_START_TIMEOUT)
}

/// `startup_timeout`: how long each of the heart's startup commands may
/// take, for an instance of any runtime.
///
/// # Errors
///
/// It is not a number of seconds within [`Seconds::MAX`].
pub(crate) fn startup_timeout(parameters: &Parameters) -> Result<Seconds> {
    seconds(parameters, "startup_timeout", DEFAULT_STARTUP_TIMEOUT)
}

/// The parameter `name` as [`Seconds`] (the one parser), or `default`
/// when absent.
fn seconds(parameters: &Parameters, name: &str, default: Seconds) -> Result<Seconds> {
    match parameters.get(name) {
        None | Some(Value::Null) => Ok(default),
        Some(value) => serde_json::from_value(value.clone())
            .map_err(|e| Error::invalid(format!("parameter {name}: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn params(v: Value) -> Parameters {
        v.as_object().unwrap().clone()
    }

    fn supervised(v: Value) -> Result<Supervised> {
        Supervised::parse(&params(v))
    }

    #[test]
    fn a_string_is_split_once_and_the_port_filled_in() {
        let s = supervised(json!({
            "launch_command": "python3 -m http.server %(port)d --bind '127.0.0.1' # {port}"
        }))
        .unwrap();
        assert!(!s.launch_command.shell());
        assert_eq!(
            s.launch_command.for_port(Some(4321)),
            [
                "python3",
                "-m",
                "http.server",
                "4321",
                "--bind",
                "127.0.0.1",
                "#",
                "4321"
            ]
        );
        assert_eq!(
            s.timeouts,
            Timeouts {
                start_timeout: Seconds::from_secs(20),
                standalone_wait: Seconds::from_secs(1),
                stop_timeout: Seconds::from_secs(10),
            }
        );
    }

    #[test]
    fn a_list_is_taken_as_the_argument_vector() {
        let s = supervised(json!({
            "launch_command": ["./serve", "--port={port}", "a b", "%(port)d"],
            "stop_timeout": 2.5
        }))
        .unwrap();
        assert_eq!(
            s.launch_command.for_port(Some(80)),
            ["./serve", "--port=80", "a b", "80"]
        );
        // No port: the placeholder empties, a bare one is left out.
        assert_eq!(
            s.launch_command.for_port(None),
            ["./serve", "--port=", "a b"]
        );
        assert_eq!(s.timeouts.stop_timeout, "2.5".parse().unwrap());
    }

    #[test]
    fn shell_keeps_the_line_whole_and_joins_a_list() {
        let line = supervised(json!({"launch_command": "echo $X | cat {port}", "shell": true}));
        assert_eq!(
            line.unwrap().launch_command,
            LaunchCommand::Shell("echo $X | cat {port}".into())
        );
        let list = supervised(json!({"launch_command": ["echo", "$X", "%(port)d"], "shell": true}))
            .unwrap();
        assert!(list.launch_command.shell());
        assert_eq!(list.launch_command.for_port(Some(7)), ["echo $X 7"]);
    }

    #[test]
    fn each_bad_field_is_named() {
        for (parameters, field) in [
            (json!({}), "launch_command is required"),
            (json!({"launch_command": ""}), "launch_command is empty"),
            (json!({"launch_command": "  "}), "launch_command is empty"),
            (json!({"launch_command": []}), "launch_command is empty"),
            (json!({"launch_command": 3}), "launch_command must be"),
            (
                json!({"launch_command": ["a", 3]}),
                "launch_command must be",
            ),
            (
                json!({"launch_command": [""]}),
                "launch_command starts with",
            ),
            (
                json!({"launch_command": "'' x"}),
                "launch_command starts with",
            ),
            (
                json!({"launch_command": ["a\u{0}b"]}),
                "launch_command contains",
            ),
            (
                json!({"launch_command": "a 'b"}),
                "launch_command: unterminated",
            ),
            (json!({"launch_command": "a", "shell": "yes"}), "shell"),
            (
                json!({"launch_command": "a", "start_timeout": "5"}),
                "start_timeout",
            ),
            (
                json!({"launch_command": "a", "stop_timeout": -1}),
                "stop_timeout",
            ),
            (
                json!({"launch_command": "a", "standalone_wait": 1e9}),
                "standalone_wait",
            ),
        ] {
            let err = supervised(parameters.clone()).unwrap_err().to_string();
            assert!(
                err.contains(&format!("parameter {field}")),
                "{parameters}: {err}"
            );
        }
    }

    #[test]
    fn served_refuses_standalone_and_escaping_roots() {
        let served = |v: Value, standalone| Served::parse(&params(v), standalone);
        assert!(served(json!({}), true).is_err());
        assert_eq!(
            served(json!({}), false).unwrap(),
            Served {
                document_root: None,
                start_timeout: DEFAULT_START_TIMEOUT
            }
        );
        assert_eq!(
            served(json!({"document_root": "public"}), false)
                .unwrap()
                .document_root,
            Some(PathBuf::from("public"))
        );
        assert!(served(json!({"document_root": "a/../b"}), false).is_ok());
        assert_eq!(
            served(json!({"document_root": ""}), false)
                .unwrap()
                .document_root,
            None
        );
        for bad in [
            json!({"document_root": ".."}),
            json!({"document_root": "a/../../b"}),
            json!({"document_root": "/etc"}),
            json!({"document_root": 3}),
            json!({"document_root": "a\nb"}),
            json!({"start_timeout": "soon"}),
        ] {
            let err = served(bad.clone(), false).unwrap_err().to_string();
            assert!(err.starts_with("parameter "), "{bad}: {err}");
        }
    }

    #[test]
    fn every_runtime_takes_a_startup_timeout() {
        assert_eq!(
            startup_timeout(&Parameters::new()).unwrap(),
            DEFAULT_STARTUP_TIMEOUT
        );
        let err = startup_timeout(&params(json!({"startup_timeout": 90_000})))
            .unwrap_err()
            .to_string();
        assert!(err.contains("parameter startup_timeout"), "{err}");
    }
}
