//! `pm-heart`: the node agent and its command-line client (SPEC §4).
//!
//! `pm-heart serve` runs the agent; every other subcommand is a client of
//! a running agent (`client`). The agent reports to an optional controller
//! through `pacemaker`.
//!
//! The agent's threads: `http-N` workers (a bounded pool, each looping on
//! `Server::recv`), the `checker` (periodic EXECUTE status, `.exited`
//! files, restarts when due) and the main thread, blocked on the signal
//! self-pipe. On SIGTERM or SIGINT it stops accepting, unblocks and joins
//! every worker, ends the checker, stops the instances that must not
//! outlive it (`--stop-on-exit`, or `exclusive`), sends the controller its
//! shutdown report and exits 0. Applications keep running otherwise.
//! SIGHUP is caught and ignored.
//!
//! Files in the data directory: `catalog.json` (0600), `token` (0600, 256
//! random bits in hex, created on first start), `address` (the `IP:PORT`
//! a client uses, written once the API accepts requests), `instances/ID/`,
//! `supervisor/ID.{json,pid,start,exited}` (0700 directory), `logs/ID.log`,
//! `runtimes/`.
//!
//! Exit status of `serve`: 0 after SIGTERM or SIGINT, or for `--help` and
//! `--version`; 100 for a bad option or config file; 1 for a catalog that
//! cannot be parsed; 111 when a system call fails (data directory, token,
//! catalog unreadable, address in use).

pub(crate) mod api;
pub(crate) mod catalog;
pub(crate) mod client;
pub(crate) mod config;
pub(crate) mod node;
pub(crate) mod pacemaker;
pub(crate) mod ports;

use std::ffi::OsString;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::thread::{self, JoinHandle};

use nix::sys::signal::Signal;

use self::catalog::{Catalog, Paths};
use self::config::Config;
use self::node::{Node, Setup};
use crate::cli;
use crate::error::{Error, Result};
use crate::exit::Tool;
use crate::fsutil;
use crate::signal;

/// Program name in diagnostics.
const PROG: &str = "pm-heart";

/// HTTP worker threads: how many requests are handled at once. A start
/// holds its worker until the instance is RUNNING or ERROR.
pub(crate) const WORKERS: usize = 32;

/// How long shutdown waits for requests handled in their own thread (a
/// register reading a large body) that are past reading their body.
const BODY_REQUEST_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Stack size of each worker thread.
const WORKER_STACK: usize = 256 * 1024;

/// The top-level usage text.
const USAGE: &str = "\
usage: pm-heart serve [OPTIONS]        run the node agent (see pm-heart serve --help)
       pm-heart COMMAND [OPTIONS]      talk to a running agent:
           list, show, register, start, stop, deregister, log, runtimes, deploy
       pm-heart --help | --version
";

/// Entry point of `pm-heart`.
pub fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let Some(first) = args.next() else {
        let _ = cli::print(USAGE);
        return Tool::Usage.into();
    };
    let rest: Vec<OsString> = args.collect();
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
    let result = config::resolve(args).and_then(serve);
    match result {
        Ok(()) => Tool::Success.into(),
        Err(e) => {
            cli::fatal(PROG, &e);
            exit_code(&e).into()
        }
    }
}

/// The exit status for an error that ended `serve`.
fn exit_code(err: &Error) -> Tool {
    match err {
        Error::Usage(_) => Tool::Usage,
        Error::Json { what, .. } if what.starts_with("config file") => Tool::Usage,
        Error::Io { op, .. } if op == "read config file" => Tool::Usage,
        Error::Json { .. } | Error::Invalid(_) | Error::Api { .. } | Error::Refused(_) => {
            Tool::Failure
        }
        Error::Io { .. } | Error::Sys { .. } | Error::Http(_) => Tool::Temporary,
    }
}

/// Reads the API token, creating it (0600, 256 random bits in hex) on
/// first start.
fn token(path: &Path) -> Result<String> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let token = text.trim().to_string();
            if token.is_empty() {
                return Err(Error::invalid(format!(
                    "token file {} is empty",
                    path.display()
                )));
            }
            Ok(token)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let token = crate::secret::random_hex(32)?;
            fsutil::write_atomic(path, format!("{token}\n").as_bytes(), 0o600)?;
            Ok(token)
        }
        Err(e) => Err(Error::io("read token", path, e)),
    }
}

/// Runs the agent until SIGTERM or SIGINT.
fn serve(config: Config) -> Result<()> {
    // Before any thread exists (tiny_http spawns some at once).
    let signals = signal::install(&[Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP])?;

    fsutil::create_dir_all(&config.data_dir, 0o755)?;
    let root = config
        .data_dir
        .canonicalize()
        .map_err(|e| Error::io("resolve data directory", &config.data_dir, e))?;
    let paths = Paths { root };
    for (dir, mode) in node::data_dirs(&paths) {
        fsutil::create_dir_all(&dir, mode)?;
    }
    let _ = std::fs::set_permissions(paths.supervisor(), std::fs::Permissions::from_mode(0o700));
    let token = token(&paths.token())?;
    let catalog = Catalog::load(&paths.catalog())?;

    let server = tiny_http::Server::http(config.listen)
        .map_err(|e| Error::Http(format!("unable to listen on {}: {e}", config.listen)))?;
    let listen = server
        .server_addr()
        .to_ip()
        .ok_or_else(|| Error::Http(format!("unable to listen on {}", config.listen)))?;
    let address = crate::net::loopback_of(listen).to_string();
    let server = Arc::new(server);

    let mut node = Node::new(Setup {
        config,
        paths: paths.clone(),
        catalog,
        token,
        listen,
        address: address.clone(),
    });
    node.reconcile()?;
    node.save()?;
    node.start_reporter();
    let node = Arc::new(node);

    let mut workers: Vec<JoinHandle<()>> = Vec::with_capacity(WORKERS);
    for n in 0..WORKERS {
        let server = Arc::clone(&server);
        let node = Arc::clone(&node);
        let handle = thread::Builder::new()
            .name(format!("http-{n}"))
            .stack_size(WORKER_STACK)
            .spawn(move || loop {
                match server.recv() {
                    Ok(request) => api::handle(&node, request),
                    Err(_) if node.is_shutting_down() => return,
                    Err(e) => cli::warn(PROG, format!("unable to accept a request: {e}")),
                }
            })
            .map_err(|e| Error::io("start worker thread", "http", e))?;
        workers.push(handle);
    }
    let checker = {
        let node = Arc::clone(&node);
        thread::Builder::new()
            .name("checker".into())
            .spawn(move || node.run_checker())
            .map_err(|e| Error::io("start thread", "checker", e))?
    };

    fsutil::write_atomic(&paths.address(), format!("{address}\n").as_bytes(), 0o644)?;
    cli::print(&format!("listening on {listen}\n")).map_err(|e| Error::io("write", "stdout", e))?;

    loop {
        match signals.recv() {
            Ok(Signal::SIGTERM | Signal::SIGINT) => break,
            Ok(_) => {}
            Err(e) => {
                cli::warn(PROG, format!("signal pipe failed: {e}; shutting down"));
                break;
            }
        }
    }

    node.begin_shutdown();
    for _ in 0..workers.len() {
        server.unblock();
    }
    for handle in workers {
        let _ = handle.join();
    }
    let _ = checker.join();
    if !api::wait_for_body_requests(BODY_REQUEST_WAIT) {
        cli::warn(PROG, "requests still in progress at exit");
    }
    drop(server);
    node.shutdown();
    Ok(())
}
