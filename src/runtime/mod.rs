//! `pm-runtime`: the runtimes of this node from the command line.
//!
//! `list`, `versions`, `env` and `exec` go through the same `Registry`
//! as the heart, so a runtime behaves the same from either; `check` runs
//! every mode of one external plugin against a scratch instance and
//! reports each problem. `Args` is what lexopt gave us; `run` resolves it.
//! Errors become a message and an exit status only in [`main`].
//!
//! This file holds the command line and the dispatch; `exec` runs a
//! command in a runtime's environment and `check` tests a plugin.
//!
//! Threads: `exec` starts a `signal-forwarder` (`process::forward`; it
//! forwards SIGTERM and SIGHUP to the command; nobody joins it, it ends
//! with the process). Nothing else here starts a thread of its own: a
//! plugin call, and the command `check` supervises, are waited for by the
//! threads of `process::bounded` (`bounded-waiter`, `bounded-stdin`,
//! `bounded-output`), which end with the call, or when a daemon it left
//! closes the output pipe.

mod check;
mod exec;

use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use crate::cli::{fatal, print, usage_error, warn};
use crate::error::{Error, Result};
use crate::exit::Tool;
use crate::plugins::{external, plugin_dirs, Registry};
use crate::protocol::{Environment, Parameters};

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
pub fn main() -> ExitCode {
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
            Ok(exec::exec(&argv, &env))
        }
        Sub::Check {
            path,
            app,
            parameters,
            standalone,
        } => check::check(
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
