//! `pm-heart serve`: lock the data directory, load the store, reconcile,
//! listen, run the worker pool and the checker until SIGTERM or SIGINT,
//! then shut down in order (the threads are listed in the header of
//! `heart/mod.rs`).
//!
//! One heart per data directory: `DATA_DIR/lock` is locked (`flock`) for
//! the life of the process, so a second `pm-heart serve` on the same
//! directory exits at once naming the lock file and the pid that holds it,
//! and a heart killed with SIGKILL leaves no stale lock.
//!
//! Everything a client reads (`DATA_DIR/token`, `DATA_DIR/address`) is
//! written before the first request is answered and before `listening on
//! ADDR` is printed (and `READY=1` sent to systemd under `Type=notify`).

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use nix::sys::signal::Signal;

use super::api;
use super::config::Config;
use super::instance::{Isolation, Node, Setup};
use super::layout::Layout;
use super::record;
use super::PROG;
use crate::cli;
use crate::error::{Error, Result};
use crate::fsutil;
use crate::http;
use crate::lockfile;
use crate::notify;
use crate::signal;

/// How long shutdown lets the requests in progress (a start waiting for
/// its application, a register copying its source) finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Prints a warning of the HTTP server.
fn warn_http(message: &str) {
    cli::warn(PROG, message);
}

/// Reads the API token, creating it (0600, 256 random bits in hex) on
/// first start.
///
/// # Errors
///
/// The file cannot be read or written, or is empty.
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
///
/// # Errors
///
/// Anything that keeps it from starting: the data directory, the token or
/// the catalog cannot be set up, or the address cannot be listened on.
pub(crate) fn serve(config: Config) -> Result<()> {
    // Before any thread exists.
    crate::process::memory::bound_allocator();
    let signals = signal::install(&[Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP])?;

    let layout = Layout::create(&config.data_dir)?;
    let _lock = lockfile::acquire_or_error(&layout.lock())?;
    let token = token(&layout.token())?;
    let (store, records) = record::load(&layout)?;
    super::secrets::check(&layout);
    let isolation = Isolation::new(&config, &layout)?;

    // Bound now, served once everything a client reads is in place:
    // connections wait in the listen queue until then.
    let bound = http::bind(http::Config {
        listen: config.listen,
        warn: warn_http,
        ..http::Config::default()
    })?;
    let listen = bound.local_addr();
    let address = crate::net::loopback_of(listen).to_string();

    let mut node = Node::new(Setup {
        config,
        layout: layout.clone(),
        store,
        records,
        token,
        listen,
        address: address.clone(),
        isolation,
    });
    node.reconcile()?;
    node.start_reporter();
    fsutil::write_atomic(&layout.address(), format!("{address}\n").as_bytes(), 0o644)?;
    let node = Arc::new(node);

    let server = bound.start(Arc::new(api::Api::new(Arc::clone(&node))))?;
    let checker = {
        let node = Arc::clone(&node);
        thread::Builder::new()
            .name("checker".into())
            .spawn(move || node.run_checker())
            .map_err(|e| Error::io("start thread", "checker", e))?
    };
    let health = {
        let node = Arc::clone(&node);
        thread::Builder::new()
            .name("health".into())
            .spawn(move || node.run_health())
            .map_err(|e| Error::io("start thread", "health", e))?
    };

    cli::print(&format!("listening on {listen}\n")).map_err(|e| Error::io("write", "stdout", e))?;
    notify::notify("READY=1");
    // Instances found gone that should be running come back in the
    // background, once the API answers.
    node.spawn_resume();

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

    notify::notify("STOPPING=1");
    node.begin_shutdown();
    let unfinished = server.shutdown(SHUTDOWN_GRACE);
    if !unfinished.is_empty() {
        cli::warn(
            PROG,
            format!(
                "requests still in progress at exit: {}",
                unfinished.join(", ")
            ),
        );
    }
    let _ = checker.join();
    let _ = health.join();
    node.shutdown();
    Ok(())
}
