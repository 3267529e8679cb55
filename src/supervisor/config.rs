//! `pm-supervisor`'s command line (`Args`, as lexopt gave it) and its
//! control file, read and validated once into a [`Config`]: the argument
//! vector, the user, where and how long to report, the log limits. A bad
//! control file becomes a [`Fatal`] with the exit code it causes (SPEC §3:
//! 1 missing, 2 unreadable, 3 invalid).

use std::ffi::OsString;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::exit::Supervisor as Code;
use crate::logfile::Limits;
use crate::process::{self, Confinement, Credentials};
use crate::protocol::{self, exited, ControlFile, LogKeep, LogLimits, LogSize};
use crate::shellwords;

use super::report::{Base, Target};

/// The command line, as lexopt gave it.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Args {
    /// `--detach`.
    pub detach: bool,
    /// `--help`.
    pub help: bool,
    /// `--version`.
    pub version: bool,
    /// The control file, exactly as given; with `--log-pipe`, the log.
    pub control: Option<OsString>,
    /// `--log-pipe`: be a piped logger of the log file `control`.
    pub log_pipe: bool,
    /// `--max-size SIZE` of a piped logger.
    pub max_size: Option<LogSize>,
    /// `--keep N` of a piped logger.
    pub keep: Option<LogKeep>,
}

/// Parses the arguments after the program name.
///
/// # Errors
///
/// An unknown option or a second control file.
pub(crate) fn parse_args(
    args: impl IntoIterator<Item = impl Into<OsString>>,
) -> std::result::Result<Args, lexopt::Error> {
    use lexopt::prelude::*;
    let mut parser = lexopt::Parser::from_args(args);
    let mut out = Args::default();
    while let Some(arg) = parser.next()? {
        match arg {
            Long("detach") => out.detach = true,
            Short('h') | Long("help") => out.help = true,
            Long("version") => out.version = true,
            Long("log-pipe") => out.log_pipe = true,
            Long("max-size") => {
                let text = parser.value()?.string()?;
                out.max_size = Some(text.parse().map_err(|e| bad_value("--max-size", e))?);
            }
            Long("keep") => {
                let text = parser.value()?.string()?;
                out.keep = Some(text.parse().map_err(|e| bad_value("--keep", e))?);
            }
            Value(v) if out.control.is_none() => out.control = Some(v),
            _ => return Err(arg.unexpected()),
        }
    }
    Ok(out)
}

/// A bad option value, as lexopt reports one.
fn bad_value(option: &str, error: impl std::error::Error + Send + Sync + 'static) -> lexopt::Error {
    lexopt::Error::ParsingFailed {
        value: option.to_string(),
        error: Box::new(error),
    }
}

/// The validated control file.
#[derive(Debug)]
pub(crate) struct Config {
    /// The control file, exactly as given on the command line.
    pub control_path: PathBuf,
    /// The argument vector to execute.
    pub argv: Vec<String>,
    /// Working directory of the command.
    pub cwd: PathBuf,
    /// The complete environment of the command.
    pub environment: protocol::Environment,
    /// The log file.
    pub log_file: PathBuf,
    /// Its rotation.
    pub log_limits: Limits,
    /// The pidfile.
    pub pidfile: PathBuf,
    /// The startflag file.
    pub startflag: PathBuf,
    /// From SIGTERM to SIGKILL.
    pub stop_timeout: Duration,
    /// Where and how long to report.
    pub target: Target,
    /// The user to run as, resolved.
    pub credentials: Option<Credentials>,
    /// The control groups to join and RLIMIT_NOFILE, prepared.
    pub confinement: Confinement,
}

/// A failure before the command runs, with the exit code it causes.
#[derive(Debug)]
pub(super) struct Fatal {
    pub(super) code: Code,
    pub(super) error: Error,
}

impl Fatal {
    fn new(code: Code, error: Error) -> Fatal {
        Fatal { code, error }
    }
}

/// Reads and validates the control file at `path`.
pub(super) fn load(path: &Path) -> std::result::Result<Config, Fatal> {
    let bytes = std::fs::read(path).map_err(|e| {
        let code = if e.kind() == io::ErrorKind::NotFound {
            Code::NoControlFile
        } else {
            Code::Unreadable
        };
        Fatal::new(code, Error::io("read control file", path, e))
    })?;
    let what = || format!("control file {}", path.display());
    let control: ControlFile = serde_json::from_slice(&bytes)
        .map_err(|e| Fatal::new(Code::Invalid, Error::json(what(), e)))?;
    validate(path, control).map_err(|e| {
        Fatal::new(
            Code::Invalid,
            Error::invalid(format!("invalid {}: {e}", what())),
        )
    })
}

/// Checks the values of `control` and resolves what must be resolved
/// before the fork: the argument vector and the user.
fn validate(path: &Path, control: ControlFile) -> Result<Config> {
    let words = match control.command {
        protocol::Command::Argv(argv) => argv,
        protocol::Command::Line(line) if control.shell => vec![line],
        protocol::Command::Line(line) => shellwords::split(&line)?,
    };
    if words.is_empty() || words[0].is_empty() {
        return Err(Error::invalid("command is empty"));
    }
    if words.iter().any(|w| w.contains('\0')) {
        return Err(Error::invalid("command contains a NUL byte"));
    }
    let bad_variable = |(name, value): (&String, &String)| {
        name.is_empty() || name.contains(['=', '\0']) || value.contains('\0')
    };
    if let Some((name, _)) = control.environment.iter().find(|v| bad_variable(*v)) {
        return Err(Error::invalid(format!(
            "environment variable {name:?} has a bad name or value"
        )));
    }
    if control.cwd.as_os_str().as_encoded_bytes().contains(&0) {
        return Err(Error::invalid("cwd contains a NUL byte"));
    }
    let argv = if control.shell {
        vec!["/bin/sh".to_owned(), "-c".to_owned(), words.join(" ")]
    } else {
        words
    };
    let base = match (&control.report_url, control.port) {
        (Some(url), _) => {
            Base::parse(url).map_err(|e| Error::invalid(format!("report_url {e}")))?
        }
        (None, Some(port)) if port != 0 => Base::of_addr(SocketAddr::from(([127, 0, 0, 1], port))),
        _ => return Err(Error::invalid("neither port nor report_url is given")),
    };
    if !valid_url_segment(&control.exit_key) {
        return Err(Error::invalid(
            "exit_key is empty or holds a character that is not allowed in a URL path segment",
        ));
    }
    let stop_timeout = control
        .stop_timeout
        .unwrap_or(protocol::DEFAULT_STOP_TIMEOUT)
        .duration();
    let deadline = control
        .report_deadline
        .unwrap_or(protocol::DEFAULT_REPORT_DEADLINE)
        .duration();
    let credentials = match &control.user {
        Some(name) => Some(process::resolve_user(name)?),
        None => None,
    };
    let confinement = Confinement::new(&control.cgroups, control.nofile)?;
    let exited_file = exited::path(exited::dir_of(&control.pidfile), &control.instance_id);
    Ok(Config {
        control_path: path.to_path_buf(),
        argv,
        cwd: control.cwd,
        environment: control.environment,
        log_file: control.log_file,
        log_limits: LogLimits::default()
            .overridden(control.log_max_size, control.log_keep)
            .into(),
        pidfile: control.pidfile,
        startflag: control.startflagfile,
        stop_timeout,
        target: Target {
            base,
            address_file: control.address_file,
            instance_id: control.instance_id,
            exit_key: control.exit_key,
            deadline,
            exited_file,
        },
        credentials,
        confinement,
    })
}

/// A key the heart chose must be one URL path segment as it is: RFC 3986
/// `pchar`s without percent-encoding.
fn valid_url_segment(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn parse_args_takes_detach_and_one_control_file() {
        let args = parse_args(["--detach", "/x.json"]).unwrap();
        assert!(args.detach);
        assert_eq!(args.control.as_deref(), Some(OsStr::new("/x.json")));
        assert!(parse_args(["/a", "/b"]).is_err());
        assert!(parse_args(["--bogus"]).is_err());
        assert!(parse_args(["--help"]).unwrap().help);
        let args = parse_args(["--log-pipe", "--max-size", "1M", "--keep", "3", "/l"]).unwrap();
        assert!(args.log_pipe);
        assert_eq!(args.max_size.map(LogSize::bytes), Some(1 << 20));
        assert_eq!(args.keep.map(LogKeep::files), Some(3));
        let err = parse_args(["--log-pipe", "--max-size", "1K", "/l"]).unwrap_err();
        assert!(err.to_string().contains("out of range"), "{err}");
        assert!(parse_args(["--keep", "x"]).is_err());
    }

    #[test]
    fn exit_keys_must_be_plain_path_segments() {
        assert!(valid_url_segment("3f9c2a-KEY_x.y~z+="));
        assert!(!valid_url_segment(""));
        assert!(!valid_url_segment("a/b"));
        assert!(!valid_url_segment("a b"));
        assert!(!valid_url_segment("a%20"));
        assert!(!valid_url_segment("a?b"));
    }

    fn control(json: &str) -> ControlFile {
        serde_json::from_str(json).unwrap()
    }

    const BASE: &str = r#""instance_id": "web-1", "cwd": "/", "exit_key": "k",
        "port": 1, "log_file": "/l", "pidfile": "/run/p", "startflagfile": "/s""#;

    #[test]
    fn validate_resolves_the_command_and_the_report_target() {
        let c = control(&format!(
            r#"{{{BASE}, "command": "echo 'a b'", "environment": {{}}}}"#
        ));
        let config = validate(Path::new("/c.json"), c).unwrap();
        assert_eq!(config.argv, ["echo", "a b"]);
        assert_eq!(config.target.base.authority, "127.0.0.1:1");
        assert_eq!(
            config.target.exited_file,
            PathBuf::from("/run/web-1.exited")
        );
        assert_eq!(config.stop_timeout, Duration::from_secs(10));
        assert_eq!(config.target.deadline, Duration::from_secs(45));

        let c = control(&format!(
            r#"{{{BASE}, "command": ["echo", "a"], "shell": true, "environment": {{}}}}"#
        ));
        let config = validate(Path::new("/c.json"), c).unwrap();
        assert_eq!(config.argv, ["/bin/sh", "-c", "echo a"]);
    }

    #[test]
    fn validate_refuses_bad_values() {
        for (command, env) in [
            (r#"[]"#, "{}"),
            (r#""""#, "{}"),
            (r#""'open""#, "{}"),
            (r#"["a\u0000b"]"#, "{}"),
            (r#"["a"]"#, r#"{"A=B": "c"}"#),
            (r#"["a"]"#, r#"{"": "c"}"#),
            (r#"["a"]"#, r#"{"A": "c\u0000"}"#),
        ] {
            let c = control(&format!(
                r#"{{{BASE}, "command": {command}, "environment": {env}}}"#
            ));
            assert!(
                validate(Path::new("/c.json"), c).is_err(),
                "{command} {env}"
            );
        }
    }
}
