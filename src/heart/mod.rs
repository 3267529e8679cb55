//! `pm-heart`: the node agent and its command-line client (SPEC §4).
//!
//! `pm-heart serve` runs the agent (`server`, over `api`, `instance`,
//! `catalog`, `layout`, `ports` and `config`); every other subcommand is a
//! client of a running agent (`client`). The agent reports to an optional
//! controller through `pacemaker`.
//!
//! Threads of the agent, and who joins them:
//!
//! - the main thread: sets up, then blocks on the signal self-pipe; on
//!   SIGTERM or SIGINT it runs the shutdown below. SIGHUP is caught and
//!   ignored.
//! - the HTTP server's threads (`crate::http`): `http-accept`,
//!   `http-read` (one poll loop over every connection still sending its
//!   request, with deadlines), and the worker pools `http-quick-0..3`
//!   (reads, health, exit reports), `http-slow-0..31` (register, start,
//!   stop, deregister) and `http-stream-0..7` (follows of a log or of the
//!   events, each until the client is gone, the instance deregistered or
//!   shutdown began): all joined by
//!   `Server::shutdown`, which lets the requests in progress finish for
//!   up to 30 s.
//! - `checker`: the periodic check, `.exited` files, and restarts when
//!   due: joined by the main thread once shutdown began.
//! - `health`: keeps the queue of periodic health checks and hands those
//!   due to its pool of `health-0` … `health-7` checkers: joined by the
//!   main thread once shutdown began. The checkers are not joined: each
//!   ends after its current check (bounded by its timeout), which changes
//!   nothing once shutdown began.
//! - `restart-ID` (at most one per instance): one restart each: joined by
//!   `Node::shutdown`, after the checker (so no new one starts).
//! - `resume` (once, when instances were found gone at start-up): brings
//!   them back through 8 scoped threads of its own, each taking the next
//!   id until none is left or shutdown began; joined by `Node::shutdown`
//!   first. `POST /instances/start-all` runs the same 8 scoped threads
//!   inside its request's worker.
//! - `pacemaker` (with `--pacemaker`): delivers the controller reports.
//!   Not joined: `Node::shutdown` waits up to 5 s for the shutdown report
//!   to be delivered, then the process exits.
//!
//! Shutdown, in order: stop accepting, let the requests in progress
//! finish and join the server's threads, join the checker, join the
//! restarts, stop the instances that must not outlive the heart
//! (`--stop-on-exit`, or `exclusive`), send the controller its shutdown
//! report, exit 0. Applications keep running otherwise.
//!
//! Files in the data directory: see `layout`.
//!
//! Exit status of `serve` ([`exit_code`], from the error's variant): 0
//! after SIGTERM or SIGINT, or for `--help` and `--version`; 100 for a bad
//! option or config file; 1 for a catalog that cannot be parsed; 111 when
//! a system call fails (data directory, token, catalog unreadable, address
//! in use).

pub(crate) mod api;
pub(crate) mod client;
pub(crate) mod config;
pub(crate) mod events;
pub(crate) mod follow;
pub(crate) mod instance;
pub(crate) mod layout;
pub(crate) mod pacemaker;
pub(crate) mod ports;
pub(crate) mod record;
pub(crate) mod secrets;
pub(crate) mod server;
pub(crate) mod store;

use std::ffi::OsString;
use std::process::ExitCode;

use crate::cli;
use crate::error::Error;
use crate::exit::Tool;

/// Program name in diagnostics.
const PROG: &str = "pm-heart";

/// The top-level usage text.
const USAGE: &str = "\
usage: pm-heart serve [OPTIONS]        run the node agent (see pm-heart serve --help)
       pm-heart [CLIENT-OPTIONS] COMMAND [ARGS] [CLIENT-OPTIONS]
                                       talk to a running agent:
           list, show, register, start, stop, restart, signal, update,
           deregister, log, events, runtimes, deploy (see pm-heart list --help)
       pm-heart --help | --version
";

/// Splits the command line into the subcommand and its arguments; client
/// options given before the subcommand (`pm-heart --data-dir D list`) are
/// moved after it, where every subcommand's parser takes them.
fn split_command(args: Vec<OsString>) -> Option<(OsString, Vec<OsString>)> {
    let mut leading = Vec::new();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let text = arg.to_string_lossy();
        let takes_value = client::VALUE_OPTIONS.contains(&text.as_ref());
        let inline = client::VALUE_OPTIONS
            .iter()
            .any(|o| text.starts_with(&format!("{o}=")));
        if takes_value {
            leading.push(arg);
            leading.extend(args.next());
        } else if inline || text == "--json" {
            leading.push(arg);
        } else {
            let mut rest: Vec<OsString> = args.collect();
            rest.extend(leading);
            return Some((arg, rest));
        }
    }
    None
}

/// Entry point of `pm-heart`.
pub fn main() -> ExitCode {
    let Some((first, rest)) = split_command(std::env::args_os().skip(1).collect()) else {
        let _ = cli::print(USAGE);
        return Tool::Usage.into();
    };
    match first.to_str() {
        Some("serve") => serve_main(rest),
        Some("-h" | "--help" | "help") => {
            let _ = cli::print(USAGE);
            Tool::Success.into()
        }
        Some("-V" | "--version") => {
            let _ = cli::print(&format!("pm-heart {}\n", env!("CARGO_PKG_VERSION")));
            Tool::Success.into()
        }
        Some(command) => client::run(command, rest),
        None => {
            cli::fatal(PROG, "invalid subcommand");
            Tool::Usage.into()
        }
    }
}

fn serve_main(args: Vec<OsString>) -> ExitCode {
    let args = match config::parse_args(args) {
        Ok(args) => args,
        Err(e) => {
            cli::fatal(PROG, e);
            return Tool::Usage.into();
        }
    };
    if args.help {
        let _ = cli::print(config::USAGE);
        return Tool::Success.into();
    }
    if args.version {
        let _ = cli::print(&format!("pm-heart {}\n", env!("CARGO_PKG_VERSION")));
        return Tool::Success.into();
    }
    let result = config::resolve(args).and_then(server::serve);
    match result {
        Ok(()) => Tool::Success.into(),
        Err(e) => {
            cli::fatal(PROG, &e);
            exit_code(&e).into()
        }
    }
}

/// The exit status for an error that ended `serve`, from its variant: a
/// config file that cannot be used is `Usage` (`config` builds it so), a
/// catalog or token file with bad contents is `Json` or `Invalid`, and a
/// failed system call or listen is `Io`, `Sys` or `Http`. `serve` never
/// meets a peer's answer (`Api`) or a refusal; were one to end it, it
/// would be a failure.
fn exit_code(err: &Error) -> Tool {
    match err {
        Error::Usage(_) => Tool::Usage,
        Error::Json { .. } | Error::Invalid(_) | Error::Api { .. } | Error::Refused(_) => {
            Tool::Failure
        }
        Error::Io { .. } | Error::Sys { .. } | Error::Http(_) | Error::TimedOut(_) => {
            Tool::Temporary
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_options_may_come_before_the_subcommand() {
        let split = |args: &[&str]| {
            split_command(args.iter().map(OsString::from).collect()).map(|(c, rest)| {
                let rest: Vec<String> = rest
                    .iter()
                    .map(|a| a.to_string_lossy().into_owned())
                    .collect();
                (c.to_string_lossy().into_owned(), rest)
            })
        };
        assert_eq!(
            split(&["--data-dir", "/d", "--json", "show", "x"]),
            Some((
                "show".into(),
                vec![
                    "x".into(),
                    "--data-dir".into(),
                    "/d".into(),
                    "--json".into()
                ]
            ))
        );
        assert_eq!(
            split(&["--token=t", "list"]),
            Some(("list".into(), vec!["--token=t".into()]))
        );
        assert_eq!(split(&["--help"]), Some(("--help".into(), vec![])));
        assert_eq!(split(&["--json"]), None);
    }

    #[test]
    fn serve_exit_codes_come_from_variants() {
        let io = std::io::Error::from_raw_os_error(13);
        assert_eq!(exit_code(&Error::Usage("x".into())), Tool::Usage);
        assert_eq!(exit_code(&Error::invalid("x")), Tool::Failure);
        assert_eq!(
            exit_code(&Error::io("read catalog", "/c", io)),
            Tool::Temporary
        );
        assert_eq!(exit_code(&Error::Http("x".into())), Tool::Temporary);
    }
}
