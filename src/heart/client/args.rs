//! The command line of a client subcommand: [`Raw`] is exactly what
//! lexopt gave us, [`Args`] is validated (the subcommand with its typed
//! positional argument, instance ids parsed).
//!
//! Options may come before or after the positional argument; every
//! mistake is an [`Error::Usage`].

use std::ffi::OsString;
use std::path::PathBuf;

use crate::cli;
use crate::error::Error;
use crate::heart::layout::DEFAULT_DATA_DIR;
use crate::protocol::{InstanceId, InvalidId};

/// The client part of `pm-heart --help`; identical to the man page
/// SYNOPSIS.
pub(crate) const USAGE: &str = "\
usage: pm-heart list [CLIENT-OPTIONS]
       pm-heart show ID [CLIENT-OPTIONS]
       pm-heart register FILE [CLIENT-OPTIONS]
       pm-heart start ID [CLIENT-OPTIONS]
       pm-heart stop ID [CLIENT-OPTIONS]
       pm-heart deregister ID [CLIENT-OPTIONS]
       pm-heart log ID [--tail N] [--since TIME] [--follow] [CLIENT-OPTIONS]
       pm-heart events [--tail N] [--since TIME] [--follow] [CLIENT-OPTIONS]
       pm-heart runtimes [CLIENT-OPTIONS]
       pm-heart deploy DIR [--id ID] [CLIENT-OPTIONS]
client options: [--data-dir DIR] [--address ADDR] [--token TOKEN] [--json] [--help]
";

/// The client subcommands.
pub(crate) const COMMANDS: [&str; 10] = [
    "list",
    "show",
    "register",
    "start",
    "stop",
    "deregister",
    "log",
    "events",
    "runtimes",
    "deploy",
];

/// What a client subcommand does, with its positional argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Command {
    List,
    Show(InstanceId),
    Register(PathBuf),
    Start(InstanceId),
    Stop(InstanceId),
    Deregister(InstanceId),
    Log(InstanceId),
    Events,
    Runtimes,
    Deploy(PathBuf),
}

/// The command line as lexopt gave it, before validation.
#[derive(Debug, Default)]
struct Raw {
    data_dir: Option<PathBuf>,
    address: Option<String>,
    token: Option<String>,
    json: bool,
    tail: Option<u64>,
    since: Option<String>,
    follow: bool,
    id: Option<String>,
    help: bool,
    positional: Option<OsString>,
}

/// The validated command line of a client subcommand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Args {
    /// `None` with `--help`.
    pub command: Option<Command>,
    pub data_dir: PathBuf,
    pub address: Option<String>,
    pub token: Option<String>,
    pub json: bool,
    /// `log --tail N`, `events --tail N`.
    pub tail: Option<u64>,
    /// `log --since TIME`, `events --since TIME`: RFC 3339, checked.
    pub since: Option<String>,
    /// `log --follow`, `events --follow`.
    pub follow: bool,
    /// `deploy --id ID`.
    pub id: Option<InstanceId>,
}

/// Parses and validates the arguments after client subcommand `command`.
///
/// # Errors
///
/// [`Error::Usage`] for an unknown subcommand or option, a missing or
/// extra argument, or a bad value.
pub(super) fn parse(
    command: &str,
    args: impl IntoIterator<Item = impl Into<OsString>>,
) -> Result<Args, Error> {
    validate(command, parse_raw(command, args)?)
}

/// Collects what lexopt gives; only an option's own value is typed here.
fn parse_raw(
    command: &str,
    args: impl IntoIterator<Item = impl Into<OsString>>,
) -> Result<Raw, Error> {
    use lexopt::prelude::*;

    let mut parser = lexopt::Parser::from_args(args);
    let mut raw = Raw::default();
    while let Some(arg) = parser.next().map_err(cli::usage_error)? {
        match arg {
            Long("data-dir") => {
                raw.data_dir = Some(parser.value().map_err(cli::usage_error)?.into());
            }
            Long("address") => raw.address = Some(string_value(&mut parser)?),
            Long("token") => raw.token = Some(string_value(&mut parser)?),
            Long("json") => raw.json = true,
            Long("since") if matches!(command, "log" | "events") => {
                raw.since = Some(string_value(&mut parser)?);
            }
            Short('f') | Long("follow") if matches!(command, "log" | "events") => {
                raw.follow = true;
            }
            Long("tail") if matches!(command, "log" | "events") => {
                raw.tail = Some(
                    parser
                        .value()
                        .and_then(|v| v.parse())
                        .map_err(cli::usage_error)?,
                );
            }
            Long("id") if command == "deploy" => raw.id = Some(string_value(&mut parser)?),
            Short('h') | Long("help") => raw.help = true,
            Value(value) if raw.positional.is_none() => raw.positional = Some(value),
            _ => return Err(cli::usage_error(arg.unexpected())),
        }
    }
    Ok(raw)
}

/// Turns the raw command line into [`Args`].
fn validate(command: &str, raw: Raw) -> Result<Args, Error> {
    let mut args = Args {
        command: None,
        data_dir: raw
            .data_dir
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
        address: raw.address,
        token: raw.token,
        json: raw.json,
        tail: raw.tail,
        since: match raw.since {
            Some(since) => {
                crate::rfc3339::parse(&since).map_err(Error::Usage)?;
                Some(since)
            }
            None => None,
        },
        follow: raw.follow,
        id: raw.id.map(instance_id).transpose()?,
    };
    if raw.help {
        return Ok(args);
    }
    let positional = raw.positional;
    let needs = |what: &str| {
        positional
            .clone()
            .ok_or_else(|| Error::Usage(format!("{command}: missing {what}")))
    };
    let id_arg =
        || -> Result<InstanceId, Error> {
            let value = needs("instance ID")?;
            instance_id(value.into_string().map_err(|v| {
                Error::Usage(format!("invalid instance ID {}", v.to_string_lossy()))
            })?)
        };
    args.command = Some(match command {
        "list" | "runtimes" | "events" => {
            if let Some(extra) = &positional {
                return Err(Error::Usage(format!(
                    "{command}: unexpected argument {}",
                    extra.to_string_lossy()
                )));
            }
            match command {
                "list" => Command::List,
                "events" => Command::Events,
                _ => Command::Runtimes,
            }
        }
        "show" => Command::Show(id_arg()?),
        "start" => Command::Start(id_arg()?),
        "stop" => Command::Stop(id_arg()?),
        "deregister" => Command::Deregister(id_arg()?),
        "log" => Command::Log(id_arg()?),
        "register" => Command::Register(needs("FILE")?.into()),
        "deploy" => Command::Deploy(needs("DIR")?.into()),
        other => return Err(Error::Usage(format!("unknown command {other:?}"))),
    });
    Ok(args)
}

fn string_value(parser: &mut lexopt::Parser) -> Result<String, Error> {
    use lexopt::ValueExt;
    parser
        .value()
        .and_then(|v| v.string())
        .map_err(cli::usage_error)
}

fn instance_id(value: String) -> Result<InstanceId, Error> {
    value
        .parse()
        .map_err(|e: InvalidId| Error::Usage(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_follow_the_subcommand() {
        let args = parse(
            "list",
            ["--data-dir", "/d", "--json", "--address", "127.0.0.1:1"],
        )
        .unwrap();
        assert_eq!(args.command, Some(Command::List));
        assert_eq!(args.data_dir, PathBuf::from("/d"));
        assert!(args.json);
        assert_eq!(args.address.as_deref(), Some("127.0.0.1:1"));

        let args = parse("log", ["web-1", "--tail", "20"]).unwrap();
        assert_eq!(args.command, Some(Command::Log("web-1".parse().unwrap())));
        assert_eq!(args.tail, Some(20));
        assert_eq!(args.data_dir, PathBuf::from(DEFAULT_DATA_DIR));

        let args = parse("log", ["web-1", "-f", "--since", "2026-01-01T00:00:00Z"]).unwrap();
        assert!(args.follow);
        assert_eq!(args.since.as_deref(), Some("2026-01-01T00:00:00Z"));
        let args = parse("events", ["--follow"]).unwrap();
        assert_eq!(args.command, Some(Command::Events));
        assert!(args.follow);

        let args = parse("deploy", ["app", "--id", "web-2"]).unwrap();
        assert_eq!(args.command, Some(Command::Deploy("app".into())));
        assert_eq!(args.id.as_deref(), Some("web-2"));
    }

    #[test]
    fn help_needs_no_argument() {
        let args = parse("show", ["--help"]).unwrap();
        assert_eq!(args.command, None);
    }

    #[test]
    fn misuse_is_a_usage_error() {
        for (command, args) in [
            ("list", &["--bogus"][..]),
            ("list", &["extra"][..]),
            ("show", &[][..]),
            ("show", &["a/b"][..]),
            ("show", &["a", "b"][..]),
            ("start", &["--tail", "3", "x"][..]),
            ("list", &["--id", "x"][..]),
            ("log", &["x", "--tail", "many"][..]),
            ("log", &["x", "--since", "yesterday"][..]),
            ("show", &["x", "-f"][..]),
            ("events", &["x"][..]),
            ("deploy", &["d", "--id", "bad id"][..]),
            ("frobnicate", &[][..]),
        ] {
            let err = parse(command, args.iter().copied()).unwrap_err();
            assert!(matches!(err, Error::Usage(_)), "{command} {args:?}: {err}");
        }
    }

    #[test]
    fn usage_names_every_subcommand_and_option() {
        for word in COMMANDS.iter().copied().chain([
            "--data-dir",
            "--address",
            "--token",
            "--json",
            "--help",
            "--tail",
            "--since",
            "--follow",
            "--id",
        ]) {
            assert!(USAGE.contains(word), "{word}");
        }
    }
}
