//! The `php` and `static` runtimes: one managed Apache per node.
//!
//! The heart runs a single Apache (mpm_prefork, with mod_php when the node
//! has it) from its own server root, `DATA_DIR/runtimes/apache/`, under
//! its own detached `pm-supervisor`. Every instance is one file,
//! `instances/ID.conf`: a `Listen 127.0.0.1:PORT` and a `<VirtualHost>` on
//! that port. Start writes the file, stop removes it, and each change is
//! tested with `apache2 -t` before a graceful reload (`-k graceful`), so a
//! file that Apache rejects never reaches the running server.
//!
//! Invariants:
//!
//! - All Apache operations (write, test, reload, launch, stop) run under
//!   one lock, so two instances starting at once never race on a reload.
//! - Apache runs only while it has at least one instance (it refuses to
//!   start without a `Listen`), and stops when the last one goes, unless
//!   `PM_APACHE_KEEP_PORT` gives it a placeholder port to keep running on.
//! - Apache gets an empty environment and a configuration that uses no
//!   `${VAR}`, so no `${...}` in a value can ever be expanded, and the
//!   Debian `APACHE_*` variables are not needed.
//! - A broken file of another instance found by the test is set aside
//!   (`ID.conf.rejected`, with Apache's message in `ID.error`) and that
//!   instance's `status` fails with the message; the others keep serving.
//! - The instance environment reaches PHP as `SetEnv NAME "VALUE"`, with
//!   `\` and `"` escaped. A newline, carriage return or NUL cannot be
//!   written into a directive at all, so such a value fails the start with
//!   an error naming the variable: encoding it would hand the application
//!   a value it was never given.
//! - `instances/ID.conf` holds the instance's environment (`SetEnv`,
//!   often passwords): it is 0600 in a 0700 directory. Apache reads its
//!   configuration in its parent process, which runs as the heart's user
//!   (root, before it drops to its own `User`), so that is enough; the
//!   instance's own `user` does not apply to what Apache serves.
//! - An instance's Apache error log, which holds PHP's errors, is the
//!   instance log `DATA_DIR/logs/ID.log`, so `pm-heart log ID` shows it;
//!   its access log is `DATA_DIR/logs/ID.access.log` (`pm-heart log ID
//!   --access`). Both are written by piped loggers (`pm-supervisor
//!   --log-pipe`, see [`loggers`]), stamped and rotated within the
//!   instance's log limits; Apache's own messages go to its standard
//!   error, which its supervisor writes to `apache.log` within the node's.
//! - Status is: Apache's supervisor alive, the file present, and a TCP
//!   connect to the port (SPEC §4's RUNNING; an Apache whose workers are
//!   all busy still accepts, and is not taken for dead).
//! - The supervisor's exit report goes to the heart under the instance id
//!   [`server::SUPERVISOR_ID`] with a random key that no instance ever
//!   holds, so the heart refuses it (403 or 404) and nothing changes; the
//!   supervisor gives up at once (`report_deadline` 0) and its `.exited`
//!   file lands in the Apache directory, where nobody reads it. Apache's
//!   death is found by `status` (the supervisor identity), never by the
//!   report.
//!
//! The files: [`install`] finds Apache, its modules and mod_php;
//! [`layout`] owns the server root under `DATA_DIR/runtimes/apache/`;
//! [`conf`] writes the main and per-instance configuration text; [`server`]
//! runs Apache under its supervisor, tests and reloads its configuration,
//! recovers from a failed reload and stops it. This file holds the two
//! runtimes and the start, stop and status that string them together.

mod conf;
mod install;
mod layout;
mod loggers;
mod server;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use self::conf::{instance_config, main_config};
use self::install::{php_versions, Install};
use self::layout::Layout;
use self::loggers::Loggers;
use self::server::{
    check_port_free, launch_apache, recover, reload, running, stop_apache, test_config,
};
use super::params::Served;
use super::{require_version, resolve_inside, Context, Runtime, Started};
use crate::error::{Error, Result};
use crate::fsutil;
use crate::logfile;
use crate::net;
use crate::protocol::{Environment, Parameters, PluginInstance};
use crate::wait;

/// The mode of `instances/ID.conf`: it holds the instance's secrets.
const INSTANCE_CONF_MODE: u32 = 0o600;

/// Environment variable: a port for a placeholder `Listen` that keeps
/// Apache running when it has no instance.
const KEEP_PORT_VAR: &str = "PM_APACHE_KEEP_PORT";

/// How long a removed instance's port may take to close.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serialises every Apache operation of this process.
static LOCK: Mutex<()> = Mutex::new(());

/// A runtime served by the managed Apache: [`PHP`] or [`STATIC`].
#[derive(Debug)]
pub(crate) struct Apache(Flavor);

/// The built-in `php` runtime: mod_php in the managed Apache.
pub(crate) const PHP: Apache = Apache(Flavor::Php);

/// The built-in `static` runtime: files served by the managed Apache.
pub(crate) const STATIC: Apache = Apache(Flavor::Static);

/// Which of the two runtimes an instance file is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Flavor {
    Php,
    Static,
}

impl Runtime for Apache {
    fn name(&self) -> &str {
        match self.0 {
            Flavor::Php => "php",
            Flavor::Static => "static",
        }
    }

    fn versions(&self) -> Result<Vec<String>> {
        let install = Install::find()?;
        match (self.0, &install.mod_php) {
            (Flavor::Static, _) => Ok(vec!["1".to_string()]),
            (Flavor::Php, Some(_)) => php_versions(),
            (Flavor::Php, None) => Err(Error::invalid(format!(
                "mod_php is not installed (no libphp*.so in {})",
                install.module_dir.display()
            ))),
        }
    }

    fn environment(&self, version: &str, _env: &mut Environment, _: &Parameters) -> Result<()> {
        require_version(self.name(), version, &self.versions()?)
    }

    fn validate(&self, parameters: &Parameters, standalone: bool) -> Result<()> {
        Served::parse(parameters, standalone).map(drop)
    }

    fn start(&self, ctx: &Context, instance: &PluginInstance) -> Result<Started> {
        start(ctx, instance, self.0)
    }

    fn stop(&self, ctx: &Context, instance: &PluginInstance) -> Result<String> {
        stop(ctx, instance)
    }

    fn status(&self, ctx: &Context, instance: &PluginInstance) -> Result<String> {
        status(ctx, instance)
    }
}

/// The document root of `instance`, resolved (symlinks included) and
/// checked to be inside its directory.
fn resolve_document_root(instance: &PluginInstance, root: Option<&Path>) -> Result<PathBuf> {
    let resolved = match root {
        None => instance
            .path
            .canonicalize()
            .map_err(|e| Error::io("resolve", &instance.path, e)),
        Some(root) => resolve_inside(&instance.path, root)
            .map_err(|e| Error::invalid(format!("parameter document_root: {e}"))),
    }?;
    refuse_escaping_links(&resolved, &instance.path)?;
    Ok(resolved)
}

/// Refuses a document root that holds a symbolic link whose target is
/// outside `instance_dir` (or dangling): Apache would serve another
/// instance's files, or the node's, through it.
fn refuse_escaping_links(root: &Path, instance_dir: &Path) -> Result<()> {
    let top = instance_dir
        .canonicalize()
        .map_err(|e| Error::io("resolve", instance_dir, e))?;
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|e| Error::io("list", &dir, e))?;
        for entry in entries {
            let path = entry.map_err(|e| Error::io("list", &dir, e))?.path();
            let meta = std::fs::symlink_metadata(&path).map_err(|e| Error::io("read", &path, e))?;
            if meta.file_type().is_symlink() {
                let inside = path
                    .canonicalize()
                    .is_ok_and(|target| target.starts_with(&top));
                if !inside {
                    return Err(Error::invalid(format!(
                        "{} is a symbolic link that leaves the instance directory; \
                         php and static instances may not hold one",
                        path.display()
                    )));
                }
            } else if meta.is_dir() {
                dirs.push(path);
            }
        }
    }
    Ok(())
}

fn lock() -> std::sync::MutexGuard<'static, ()> {
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// The placeholder port from `PM_APACHE_KEEP_PORT`, if set.
fn keep_port() -> Result<Option<u16>> {
    match std::env::var(KEEP_PORT_VAR) {
        Ok(text) if !text.is_empty() => match text.parse::<u16>() {
            Ok(port) if port > 0 => Ok(Some(port)),
            _ => Err(Error::invalid(format!(
                "{KEEP_PORT_VAR}={text} is not a port"
            ))),
        },
        _ => Ok(None),
    }
}

fn log_path(ctx: &Context, id: &str) -> PathBuf {
    let data_dir = std::path::absolute(&ctx.data_dir).unwrap_or_else(|_| ctx.data_dir.clone());
    logfile::instance_log(&data_dir, id)
}

fn start(ctx: &Context, instance: &PluginInstance, flavor: Flavor) -> Result<Started> {
    let id = instance.instance_id.as_str();
    let parameters = Served::parse(&instance.parameters, instance.standalone)?;
    let port = instance
        .port
        .ok_or_else(|| Error::invalid(format!("instance {id} has no port")))?;
    let ready = parameters.start_timeout.duration();
    let doc_root = resolve_document_root(instance, parameters.document_root.as_deref())?;
    // The piped loggers open the logs after each reload, and a logger that
    // cannot would be restarted by Apache forever, which `-t` does not
    // check: open them first (the loggers run as the heart's user).
    let error_log = log_path(ctx, id);
    for log in [error_log.clone(), logfile::access_log(&error_log)] {
        fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(|e| Error::io("open the log", &log, e))?;
    }
    let loggers = Loggers::new(&ctx.supervisor, &error_log, instance.log_limits)?;
    let install = Install::find()?;
    let text = instance_config(
        instance,
        flavor,
        &doc_root,
        &loggers,
        install.mod_php.is_some(),
    )?;

    let _guard = lock();
    let layout = Layout::new(&ctx.data_dir);
    layout.create()?;
    fsutil::write_atomic(
        &layout.conf,
        main_config(&layout, &install, keep_port()?)?.as_bytes(),
        0o644,
    )?;
    let file = layout.instance_conf(id);
    fsutil::remove_if_exists(&layout.error(id))?;
    fsutil::remove_if_exists(&layout.rejected(id))?;

    let Some(apache) = running(&layout) else {
        // A fresh Apache serves only what is started from now on: files
        // left by a dead Apache belong to instances that are not running.
        layout.clear_instances()?;
        fsutil::write_atomic(&file, text.as_bytes(), INSTANCE_CONF_MODE)?;
        let result = test_config(&install, &layout, id)
            .and_then(|()| check_port_free(port, ready))
            .and_then(|()| launch_apache(ctx, &install, &layout, port, ready));
        return match result {
            Ok(identity) => Ok(Started::Managed(format!(
                "served by Apache (supervisor {}) on 127.0.0.1:{port}",
                identity.pid
            ))),
            Err(e) => {
                let _ = fsutil::remove_if_exists(&file);
                Err(e)
            }
        };
    };

    let previous = fs::read(&file).ok();
    let was_listening = previous.as_deref().is_some_and(|p| {
        String::from_utf8_lossy(p).contains(&format!("Listen 127.0.0.1:{port}\n"))
    });
    let restore = |file: &Path| -> Result<()> {
        match &previous {
            Some(bytes) => fsutil::write_atomic(file, bytes, INSTANCE_CONF_MODE),
            None => fsutil::remove_if_exists(file),
        }
    };
    if !was_listening {
        check_port_free(port, ready)?;
    }
    fsutil::write_atomic(&file, text.as_bytes(), INSTANCE_CONF_MODE)?;
    if let Err(e) = test_config(&install, &layout, id) {
        restore(&file)?;
        return Err(e);
    }
    if let Err(e) = reload(&install, &layout, &apache, Some((port, ready))) {
        restore(&file)?;
        recover(ctx, &install, &layout);
        return Err(e);
    }
    Ok(Started::Managed(format!(
        "served by Apache (supervisor {}) on 127.0.0.1:{port}",
        apache.pid
    )))
}

fn stop(ctx: &Context, instance: &PluginInstance) -> Result<String> {
    let id = instance.instance_id.as_str();
    let _guard = lock();
    let layout = Layout::new(&ctx.data_dir);
    let file = layout.instance_conf(id);
    let had_file = file.exists();
    fsutil::remove_if_exists(&file)?;
    fsutil::remove_if_exists(&layout.rejected(id))?;
    fsutil::remove_if_exists(&layout.error(id))?;
    let Some(apache) = running(&layout) else {
        return Ok("stopped (Apache was not running)".into());
    };
    if !had_file {
        return Ok("stopped (it was not configured)".into());
    }
    if layout.configured().is_empty() && keep_port()?.is_none() {
        stop_apache(&layout, &apache)?;
        return Ok("stopped; Apache stopped with its last instance".into());
    }
    let install = Install::find()?;
    test_config(&install, &layout, id)?;
    reload(&install, &layout, &apache, None)?;
    if let Some(port) = instance.port {
        if !wait::until(CLOSE_TIMEOUT, || !net::port_answers(port)) {
            return Err(Error::invalid(format!(
                "port {port} still open {} s after Apache reloaded",
                CLOSE_TIMEOUT.as_secs()
            )));
        }
    }
    Ok("stopped".into())
}

fn status(ctx: &Context, instance: &PluginInstance) -> Result<String> {
    let id = instance.instance_id.as_str();
    let layout = Layout::new(&ctx.data_dir);
    let Some(apache) = running(&layout) else {
        return Err(Error::invalid("Apache is not running"));
    };
    if !layout.instance_conf(id).exists() {
        if let Ok(message) = fs::read_to_string(layout.error(id)) {
            return Err(Error::invalid(format!(
                "Apache rejected its configuration: {}",
                message.trim()
            )));
        }
        return Err(Error::invalid("not configured in Apache"));
    }
    let port = instance
        .port
        .ok_or_else(|| Error::invalid(format!("instance {id} has no port")))?;
    // A connect, as SPEC §4 defines RUNNING: an Apache whose workers are
    // all busy still accepts into its backlog, and must not be taken for
    // dead (the heart would stop every instance of a busy node).
    if !net::port_answers(port) {
        return Err(Error::invalid(format!(
            "Apache does not accept connections on port {port}"
        )));
    }
    Ok(format!(
        "served by Apache (supervisor {}) on 127.0.0.1:{port}",
        apache.pid
    ))
}
