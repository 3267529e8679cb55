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
use crate::protocol::{ForwardSignal, InstanceId, InvalidId};

/// The client part of `pm-heart --help`; identical to the man page
/// SYNOPSIS.
pub(crate) const USAGE: &str = "\
usage: pm-heart list [CLIENT-OPTIONS]
       pm-heart show ID [CLIENT-OPTIONS]
       pm-heart register FILE [CLIENT-OPTIONS]
       pm-heart start ID | --all [CLIENT-OPTIONS]
       pm-heart stop ID [CLIENT-OPTIONS]
       pm-heart restart ID [CLIENT-OPTIONS]
       pm-heart signal ID SIGNAL [CLIENT-OPTIONS]
       pm-heart update ID [--env KEY=VALUE]... [--unset KEY]... [--restart] [CLIENT-OPTIONS]
       pm-heart deregister ID [CLIENT-OPTIONS]
       pm-heart log ID [--access] [--tail N] [--since TIME] [--follow] [CLIENT-OPTIONS]
       pm-heart events [--tail N] [--since TIME] [--follow] [CLIENT-OPTIONS]
       pm-heart runtimes [CLIENT-OPTIONS]
       pm-heart deploy DIR [--id ID | --new | --replace] [CLIENT-OPTIONS]
client options: [--data-dir DIR] [--address ADDR] [--token TOKEN] [--json] [--help]

Client options may come before or after the subcommand. Without them the
environment is used (PM_DATA_DIR, PM_HEART_ADDRESS, PM_HEART_TOKEN), then
DIR/address and DIR/token of the data directory (default ./pm-data).
start of a RUNNING instance and stop of a stopped one succeed, saying so.
signal sends HUP, USR1, USR2, INT, QUIT, TERM or WINCH (or its number) to
the application through its supervisor. update changes the environment for
the next start (--restart: restart now). deploy of an application that has
exactly one instance here replaces that instance's source and restarts it
on the same port; --new registers another instance instead.
Exit status: 0 done, 1 failed or refused, 2 no such instance, 3 refused in
this state, 100 misuse, 111 heart unreachable. See pm-heart(8).
";

/// The client subcommands.
pub(crate) const COMMANDS: [&str; 13] = [
    "list",
    "show",
    "register",
    "start",
    "stop",
    "restart",
    "signal",
    "update",
    "deregister",
    "log",
    "events",
    "runtimes",
    "deploy",
];

/// The client options that take a value, and the flag: what `pm-heart`
/// accepts before the subcommand too.
pub(crate) const VALUE_OPTIONS: [&str; 3] = ["--data-dir", "--address", "--token"];

/// What a client subcommand does, with its positional arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Command {
    List,
    Show(InstanceId),
    Register(PathBuf),
    Start(InstanceId),
    /// `start --all`.
    StartAll,
    Stop(InstanceId),
    Restart(InstanceId),
    Signal(InstanceId, ForwardSignal),
    Update(InstanceId, Update),
    Deregister(InstanceId),
    Log(InstanceId),
    Events,
    Runtimes,
    Deploy(PathBuf),
}

/// What `update` changes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Update {
    /// `--env KEY=VALUE`, in order.
    pub set: Vec<(String, String)>,
    /// `--unset KEY`.
    pub unset: Vec<String>,
    /// `--restart`: restart the instance once updated.
    pub restart: bool,
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
    access: bool,
    id: Option<String>,
    new: bool,
    replace: bool,
    all: bool,
    env: Vec<String>,
    unset: Vec<String>,
    restart: bool,
    help: bool,
    positional: Vec<OsString>,
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
    /// `log --access`: the access log of a php or static instance.
    pub access: bool,
    /// `deploy --id ID`.
    pub id: Option<InstanceId>,
    /// `deploy --new`.
    pub new: bool,
    /// `deploy --replace`.
    pub replace: bool,
}

/// Where the client finds its heart when no option says: the
/// environment variables `PM_DATA_DIR`, `PM_HEART_ADDRESS` and
/// `PM_HEART_TOKEN`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Environment {
    pub data_dir: Option<PathBuf>,
    pub address: Option<String>,
    pub token: Option<String>,
}

impl Environment {
    /// Reads the variables (an empty one counts as unset).
    pub(super) fn read() -> Environment {
        let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        Environment {
            data_dir: var("PM_DATA_DIR").map(PathBuf::from),
            address: var("PM_HEART_ADDRESS").map(|v| v.to_string_lossy().into_owned()),
            token: var("PM_HEART_TOKEN").map(|v| v.to_string_lossy().into_owned()),
        }
    }
}

/// Parses and validates the arguments after client subcommand `command`;
/// `env` fills what no option gives.
///
/// # Errors
///
/// [`Error::Usage`] for an unknown subcommand or option, a missing or
/// extra argument, or a bad value.
pub(super) fn parse(
    command: &str,
    args: impl IntoIterator<Item = impl Into<OsString>>,
    env: Environment,
) -> Result<Args, Error> {
    validate(command, parse_raw(command, args)?, env)
}

/// How many positional arguments `command` takes.
fn positionals(command: &str) -> usize {
    match command {
        "list" | "runtimes" => 0,
        "signal" => 2,
        _ => 1,
    }
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
            Long("access") if command == "log" => raw.access = true,
            Long("tail") if matches!(command, "log" | "events") => {
                raw.tail = Some(
                    parser
                        .value()
                        .and_then(|v| v.parse())
                        .map_err(cli::usage_error)?,
                );
            }
            Long("id") if command == "deploy" => raw.id = Some(string_value(&mut parser)?),
            Long("new") if command == "deploy" => raw.new = true,
            Long("replace") if command == "deploy" => raw.replace = true,
            Long("all") if command == "start" => raw.all = true,
            Long("env") if command == "update" => raw.env.push(string_value(&mut parser)?),
            Long("unset") if command == "update" => raw.unset.push(string_value(&mut parser)?),
            Long("restart") if command == "update" => raw.restart = true,
            Short('h') | Long("help") => raw.help = true,
            Value(value) if raw.positional.len() < positionals(command).max(1) => {
                raw.positional.push(value);
            }
            _ => return Err(cli::usage_error(arg.unexpected())),
        }
    }
    Ok(raw)
}

/// Turns the raw command line into [`Args`].
fn validate(command: &str, raw: Raw, env: Environment) -> Result<Args, Error> {
    if raw.new && raw.id.is_some() {
        return Err(Error::Usage(
            "deploy: --id and --new exclude each other".into(),
        ));
    }
    if raw.replace && (raw.new || raw.id.is_some()) {
        return Err(Error::Usage(
            "deploy: --replace registers a new instance itself: no --id or --new".into(),
        ));
    }
    let mut args = Args {
        command: None,
        data_dir: raw
            .data_dir
            .or(env.data_dir)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
        address: raw.address.or(env.address),
        token: raw.token.or(env.token),
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
        access: raw.access,
        id: raw.id.map(instance_id).transpose()?,
        new: raw.new,
        replace: raw.replace,
    };
    if raw.help {
        return Ok(args);
    }
    let mut positional = raw.positional.into_iter();
    let first = positional.next();
    let second = positional.next();
    let needs = |what: &str, value: &Option<OsString>| {
        value
            .clone()
            .ok_or_else(|| Error::Usage(format!("{command}: missing {what}")))
    };
    let text = |value: OsString, what: &str| {
        value
            .into_string()
            .map_err(|v| Error::Usage(format!("invalid {what} {}", v.to_string_lossy())))
    };
    let id_arg = || -> Result<InstanceId, Error> {
        instance_id(text(needs("instance ID", &first)?, "instance ID")?)
    };
    args.command = Some(match command {
        "list" | "runtimes" | "events" => {
            if let Some(extra) = &first {
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
        "start" if raw.all => {
            if first.is_some() {
                return Err(Error::Usage("start: give an ID or --all, not both".into()));
            }
            Command::StartAll
        }
        "start" => Command::Start(id_arg()?),
        "stop" => Command::Stop(id_arg()?),
        "restart" => Command::Restart(id_arg()?),
        "signal" => {
            let id = id_arg()?;
            let signal = text(needs("SIGNAL", &second)?, "signal")?;
            let signal = signal
                .parse()
                .map_err(|e: crate::protocol::InvalidSignal| Error::Usage(e.to_string()))?;
            Command::Signal(id, signal)
        }
        "update" => {
            let id = id_arg()?;
            let mut update = Update {
                restart: raw.restart,
                unset: raw.unset,
                ..Update::default()
            };
            for pair in raw.env {
                let Some((key, value)) = pair.split_once('=') else {
                    return Err(Error::Usage(format!(
                        "update: --env {pair:?}: expected KEY=VALUE"
                    )));
                };
                update.set.push((key.to_string(), value.to_string()));
            }
            if update.set.is_empty() && update.unset.is_empty() && !update.restart {
                return Err(Error::Usage(
                    "update: nothing to do: give --env, --unset or --restart".into(),
                ));
            }
            Command::Update(id, update)
        }
        "deregister" => Command::Deregister(id_arg()?),
        "log" => Command::Log(id_arg()?),
        "register" => Command::Register(needs("FILE", &first)?.into()),
        "deploy" => Command::Deploy(needs("DIR", &first)?.into()),
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
            Environment::default(),
        )
        .unwrap();
        assert_eq!(args.command, Some(Command::List));
        assert_eq!(args.data_dir, PathBuf::from("/d"));
        assert!(args.json);
        assert_eq!(args.address.as_deref(), Some("127.0.0.1:1"));

        let args = parse("log", ["web-1", "--tail", "20"], Environment::default()).unwrap();
        assert_eq!(args.command, Some(Command::Log("web-1".parse().unwrap())));
        assert_eq!(args.tail, Some(20));
        assert_eq!(args.data_dir, PathBuf::from(DEFAULT_DATA_DIR));

        let args = parse(
            "log",
            ["web-1", "-f", "--since", "2026-01-01T00:00:00Z"],
            Environment::default(),
        )
        .unwrap();
        assert!(args.follow);
        assert_eq!(args.since.as_deref(), Some("2026-01-01T00:00:00Z"));
        let args = parse("events", ["--follow"], Environment::default()).unwrap();
        assert_eq!(args.command, Some(Command::Events));
        assert!(args.follow);

        let args = parse("deploy", ["app", "--id", "web-2"], Environment::default()).unwrap();
        assert_eq!(args.command, Some(Command::Deploy("app".into())));
        assert_eq!(args.id.as_deref(), Some("web-2"));
    }

    #[test]
    fn help_needs_no_argument() {
        let args = parse("show", ["--help"], Environment::default()).unwrap();
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
            ("signal", &["x"][..]),
            ("signal", &["x", "KILL"][..]),
            ("signal", &["x", "HUP", "y"][..]),
            ("update", &["x"][..]),
            ("update", &["x", "--env", "NOEQUALS"][..]),
            ("start", &["x", "--all"][..]),
            ("stop", &["--all"][..]),
            ("deploy", &["d", "--id", "x", "--new"][..]),
        ] {
            let err = parse(command, args.iter().copied(), Environment::default()).unwrap_err();
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
            "--new",
            "--all",
            "--env",
            "--unset",
            "--restart",
            "PM_DATA_DIR",
            "PM_HEART_ADDRESS",
            "PM_HEART_TOKEN",
        ]) {
            assert!(USAGE.contains(word), "{word}");
        }
    }

    #[test]
    fn the_new_subcommands_take_their_arguments() {
        let env = Environment::default;
        let args = parse("signal", ["web-1", "hup"], env()).unwrap();
        assert_eq!(
            args.command,
            Some(Command::Signal(
                "web-1".parse().unwrap(),
                "HUP".parse().unwrap()
            ))
        );
        let args = parse(
            "update",
            ["web-1", "--env", "A=b=c", "--unset", "B", "--restart"],
            env(),
        )
        .unwrap();
        let Some(Command::Update(_, update)) = args.command else {
            panic!("{args:?}");
        };
        assert_eq!(update.set, [("A".to_string(), "b=c".to_string())]);
        assert_eq!(update.unset, ["B"]);
        assert!(update.restart);
        let args = parse("start", ["--all"], env()).unwrap();
        assert_eq!(args.command, Some(Command::StartAll));
        assert!(parse("deploy", ["d", "--new"], env()).unwrap().new);
    }

    #[test]
    fn options_win_over_the_environment() {
        let env = Environment {
            data_dir: Some("/env".into()),
            address: Some("127.0.0.1:2".into()),
            token: Some("t".into()),
        };
        let args = parse("list", ["--data-dir", "/opt"], env.clone()).unwrap();
        assert_eq!(args.data_dir, PathBuf::from("/opt"));
        assert_eq!(args.address.as_deref(), Some("127.0.0.1:2"));
        assert_eq!(args.token.as_deref(), Some("t"));
        let args = parse("list", ["--token", "u"], env).unwrap();
        assert_eq!(args.data_dir, PathBuf::from("/env"));
        assert_eq!(args.token.as_deref(), Some("u"));
    }
}
