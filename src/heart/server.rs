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
use std::thread::{self, JoinHandle};
use std::time::Duration;

use nix::sys::signal::Signal;

use super::api;
use super::config::Config;
use super::instance::{Node, Setup};
use super::layout::Layout;
use super::record;
use super::PROG;
use crate::cli;
use crate::error::{Error, Result};
use crate::fsutil;
use crate::lockfile;
use crate::notify;
use crate::signal;

/// HTTP worker threads: how many requests are handled at once. A start
/// holds its worker until the instance is RUNNING or ERROR.
const WORKERS: usize = 32;

/// How long shutdown waits for requests handled in their own thread (a
/// register reading a large body) that are past reading their body.
const BODY_REQUEST_WAIT: Duration = Duration::from_secs(30);

/// Stack size of each worker thread.
const WORKER_STACK: usize = 256 * 1024;

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
    // Before any thread exists (tiny_http spawns some at once).
    crate::process::memory::bound_allocator();
    let signals = signal::install(&[Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP])?;

    let layout = Layout::create(&config.data_dir)?;
    let _lock = lockfile::acquire_or_error(&layout.lock())?;
    let token = token(&layout.token())?;
    let (store, records) = record::load(&layout)?;

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
        layout: layout.clone(),
        store,
        records,
        token,
        listen,
        address: address.clone(),
    });
    node.reconcile()?;
    node.start_reporter();
    fsutil::write_atomic(&layout.address(), format!("{address}\n").as_bytes(), 0o644)?;
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

    cli::print(&format!("listening on {listen}\n")).map_err(|e| Error::io("write", "stdout", e))?;
    notify::notify("READY=1");

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
