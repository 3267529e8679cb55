//! Apache itself: launched in the foreground under a detached
//! `pm-supervisor`, its configuration tested (`-t`) and reloaded
//! gracefully (`-k graceful`), a broken instance file set aside, Apache
//! brought back after a failed reload, and stopped through its supervisor.

use std::fs;
use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::install::{run_tool, Install};
use super::layout::Layout;
use super::Context;
use crate::error::{Error, Result};
use crate::fsutil;
use crate::net;
use crate::process::bounded::Output;
use crate::process::Identity;
use crate::protocol::{self, Command as Argv, ControlFile, Environment, InstanceId, Seconds};
use crate::secret;
use crate::supervise::{self, Terminated};
use crate::wait;

/// The instance id in the Apache supervisor's control file.
pub(super) const SUPERVISOR_ID: &str = "pm-managed-apache";

fn supervisor_id() -> InstanceId {
    SUPERVISOR_ID
        .parse()
        .expect("SUPERVISOR_ID is a valid instance id")
}

/// How long Apache may take to answer when it is relaunched after a
/// failed reload (a start waits its `start_timeout`).
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// From SIGTERM to SIGKILL for Apache's supervisor.
const STOP_TIMEOUT: Seconds = Seconds::from_secs(10);
/// One HTTP probe's connect and read timeout.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// How much of Apache's log a failure quotes.
const LOG_TAIL_BYTES: u64 = 2048;

/// The supervisor of the running Apache, checked against `/proc`.
pub(super) fn running(layout: &Layout) -> Option<Identity> {
    let text = fs::read_to_string(&layout.identity).ok()?;
    let identity: Identity = serde_json::from_str(&text).ok()?;
    supervise::is_supervising(&identity, &layout.control).then_some(identity)
}

/// `apache2 -t`. When the error is in another instance's file, that file
/// is set aside with Apache's message and the test runs again; an error
/// in `id`'s own file, or anywhere else, is returned.
pub(super) fn test_config(install: &Install, layout: &Layout, id: &str) -> Result<()> {
    let bound = layout.configured().len() + 1;
    for _ in 0..=bound {
        let output = apache_tool(install, layout, &["-t"])?;
        if output.status.success() {
            return Ok(());
        }
        let message = apache_message(&output);
        match offending_instance(layout, &message) {
            Some(other) if other != id => {
                let _ = fsutil::write_atomic(&layout.error(&other), message.as_bytes(), 0o644);
                fs::rename(layout.instance_conf(&other), layout.rejected(&other))
                    .map_err(|e| Error::io("set aside", layout.instance_conf(&other), e))?;
            }
            _ => {
                return Err(Error::invalid(format!(
                    "Apache rejected the configuration: {message}"
                )))
            }
        }
    }
    Err(Error::invalid("Apache kept rejecting its configuration"))
}

/// The text Apache printed, without the success line and the warnings.
fn apache_message(output: &Output) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(&output.stdout)
    );
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && *l != "Syntax OK" && !l.contains(":warn]"))
        .collect();
    if lines.is_empty() {
        format!("{} with no message", output.status)
    } else {
        lines.join(" ")
    }
}

/// The instance whose file Apache names in `message`: `Syntax error on
/// line N of /…/instances/ID.conf:`.
fn offending_instance(layout: &Layout, message: &str) -> Option<InstanceId> {
    let at = message.find("Syntax error on line ")?;
    let rest = &message[at..];
    let path = rest[rest.find(" of ")? + 4..].split(':').next()?;
    let path = Path::new(path.trim());
    if path.parent()? != layout.instances {
        return None;
    }
    let id = path.file_name()?.to_str()?.strip_suffix(".conf")?;
    id.parse::<protocol::InstanceId>().ok()
}

/// `apache2 -f CONF ARGS` with an empty environment, bounded in time.
fn apache_tool(install: &Install, layout: &Layout, args: &[&str]) -> Result<Output> {
    let mut cmd = Command::new(&install.binary);
    cmd.arg("-f")
        .arg(&layout.conf)
        .args(args)
        .env_clear()
        .current_dir(&layout.dir);
    run_tool(&mut cmd, &install.binary.to_string_lossy())
}

/// Refuses a port that something else listens on: Apache would die on
/// the reload that tries to bind it, taking every instance with it. A
/// port held only by a client connection (the instance range may lie in
/// the kernel's ephemeral range, and Linux hands out its even ports to
/// `connect`) is waited for, up to `limit` (the instance's start timeout).
pub(super) fn check_port_free(port: u16, limit: Duration) -> Result<()> {
    if net::port_answers(port) {
        return Err(Error::invalid(format!(
            "port {port} is in use: another process listens on it"
        )));
    }
    if wait::until(limit, || net::port_free(port)) {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "port {port} is not free after {} s: a connection or another listener holds it",
            limit.as_secs_f64()
        )))
    }
}

/// Launches Apache in the foreground under a detached `pm-supervisor`,
/// and waits for it to answer on `port`.
pub(super) fn launch_apache(
    ctx: &Context,
    install: &Install,
    layout: &Layout,
    port: u16,
    ready: Duration,
) -> Result<Identity> {
    let report_url = ctx
        .heart_url
        .clone()
        .unwrap_or_else(|| "http://127.0.0.1:9".to_string());
    let control = ControlFile {
        instance_id: supervisor_id(),
        command: Argv::Argv(vec![
            install.binary.to_string_lossy().into_owned(),
            "-D".into(),
            "FOREGROUND".into(),
            "-f".into(),
            layout.conf.to_string_lossy().into_owned(),
        ]),
        shell: false,
        address_file: None,
        cgroups: Vec::new(),
        nofile: None,
        cwd: layout.dir.clone(),
        environment: Environment::new(),
        exit_key: secret::random_hex(16)?,
        port: None,
        report_url: Some(report_url),
        log_file: layout.log.clone(),
        log_max_size: Some(ctx.log_limits.max_size),
        log_keep: Some(ctx.log_limits.keep),
        pidfile: layout.supervisor_pid.clone(),
        startflagfile: layout.startflag.clone(),
        stop_timeout: Some(STOP_TIMEOUT),
        report_deadline: Some(Seconds::from_secs(0)),
        user: None,
    };
    let log_start = fs::metadata(&layout.log).map(|m| m.len()).unwrap_or(0);
    let identity =
        supervise::launch(&ctx.supervisor, &layout.control, &control)?.ok_or_else(|| {
            Error::invalid(format!(
                "Apache failed to start: {}",
                log_since(&layout.log, log_start)
            ))
        })?;
    let json = serde_json::to_vec(&identity)
        .map_err(|e| Error::json(format!("identity {}", layout.identity.display()), e))?;
    fsutil::write_atomic(&layout.identity, &json, 0o644)?;
    let up = wait::until(ready, || {
        answers_http(port) || !supervise::is_supervising(&identity, &layout.control)
    });
    if up && answers_http(port) {
        return Ok(identity);
    }
    let _ = stop_apache(layout, &identity);
    Err(Error::invalid(format!(
        "Apache did not answer on port {port}: {}",
        log_since(&layout.log, log_start)
    )))
}

/// `apache2 -k graceful`, then waits until `port` answers (a start), or
/// only until Apache has taken the signal (a stop). Fails if Apache died.
pub(super) fn reload(
    install: &Install,
    layout: &Layout,
    apache: &Identity,
    port: Option<(u16, Duration)>,
) -> Result<()> {
    let log_start = fs::metadata(&layout.log).map(|m| m.len()).unwrap_or(0);
    check_pid_file(layout, apache)?;
    let output = apache_tool(install, layout, &["-k", "graceful"])?;
    if !output.status.success() {
        return Err(Error::invalid(format!(
            "Apache refused the graceful reload: {}",
            apache_message(&output)
        )));
    }
    let alive = || supervise::is_supervising(apache, &layout.control);
    if let Some((port, ready)) = port {
        wait::until(ready, || answers_http(port) || !alive());
        if !alive() {
            return Err(Error::invalid(format!(
                "Apache stopped on the reload: {}",
                log_since(&layout.log, log_start)
            )));
        }
        if !answers_http(port) {
            return Err(Error::invalid(format!(
                "Apache did not answer on port {port} within {} s after the reload",
                ready.as_secs_f64()
            )));
        }
    } else if !alive() {
        return Err(Error::invalid(format!(
            "Apache stopped on the reload: {}",
            log_since(&layout.log, log_start)
        )));
    }
    Ok(())
}

/// After a failed reload with the instance's file undone: brings Apache
/// back on the remaining files if the reload killed it.
pub(super) fn recover(ctx: &Context, install: &Install, layout: &Layout) {
    if let Some(apache) = running(layout) {
        if test_config(install, layout, "").is_ok() {
            let _ = reload_quiet(install, layout, &apache);
        }
        return;
    }
    let Some(id) = layout.configured().into_iter().next() else {
        return;
    };
    if test_config(install, layout, "").is_err() {
        return;
    }
    let port = fs::read_to_string(layout.instance_conf(&id))
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("Listen 127.0.0.1:")?.trim().parse().ok())
        });
    if let Some(port) = port {
        let _ = launch_apache(ctx, install, layout, port, READY_TIMEOUT);
    }
}

fn reload_quiet(install: &Install, layout: &Layout, apache: &Identity) -> Result<()> {
    check_pid_file(layout, apache)?;
    apache_tool(install, layout, &["-k", "graceful"]).map(drop)
}

/// Checks that Apache's pid file names the child of its supervisor: with
/// no running server, `-k graceful` would start a second, daemonized
/// Apache outside any supervisor.
fn check_pid_file(layout: &Layout, apache: &Identity) -> Result<()> {
    let pid: i32 = fs::read_to_string(&layout.httpd_pid)
        .map_err(|e| Error::io("read Apache pid file", &layout.httpd_pid, e))?
        .trim()
        .parse()
        .map_err(|_| Error::invalid(format!("bad pid in {}", layout.httpd_pid.display())))?;
    match crate::process::stat(pid) {
        Some(stat) if stat.ppid == apache.pid && stat.state != b'Z' => Ok(()),
        _ => Err(Error::invalid(format!(
            "{} names pid {pid}, which is not the Apache of supervisor {}",
            layout.httpd_pid.display(),
            apache.pid
        ))),
    }
}

/// Stops Apache: SIGTERM to its supervisor (which ends Apache's process
/// group), SIGKILL if it outlasts its stop timeout.
pub(super) fn stop_apache(layout: &Layout, apache: &Identity) -> Result<()> {
    if supervise::terminate(apache, &layout.control, STOP_TIMEOUT.duration())
        == Terminated::WouldNotStop
    {
        return Err(Error::invalid(format!(
            "Apache's supervisor {} would not stop",
            apache.pid
        )));
    }
    fsutil::remove_if_exists(&layout.identity)
}

/// True when Apache answers HTTP on `port`: `OPTIONS *`, which Apache
/// answers itself without running any application code.
fn answers_http(port: u16) -> bool {
    let Some(mut stream) = net::connect(port, PROBE_TIMEOUT) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(PROBE_TIMEOUT));
    let _ = stream.set_write_timeout(Some(PROBE_TIMEOUT));
    if stream
        .write_all(b"OPTIONS * HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 5];
    stream.read_exact(&mut head).is_ok() && &head == b"HTTP/"
}

/// What Apache's log gained since `offset` (at most its last 2 KiB).
fn log_since(path: &Path, offset: u64) -> String {
    let Ok(text) = fsutil::read_tail(path, LOG_TAIL_BYTES, offset) else {
        return "no log".into();
    };
    // Apache's own lines, and of the supervisor's (which start with their
    // timestamp) only how the command ended.
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.contains(":warn]"))
        .filter(|l| {
            !l.starts_with(|c: char| c.is_ascii_digit())
                || l.contains("Completed with result code")
                || l.contains("Failed to start")
        })
        .collect();
    if lines.is_empty() {
        "nothing in its log".into()
    } else {
        lines.join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offending_instance_is_read_from_apaches_message() {
        let layout = Layout::new(Path::new("/d"));
        let message =
            "AH00526: Syntax error on line 2 of /d/runtimes/apache/instances/web-1.conf: \
                       Invalid command 'Garbage'";
        assert_eq!(
            offending_instance(&layout, message).as_deref(),
            Some("web-1")
        );
        let main = "AH00526: Syntax error on line 2 of /d/runtimes/apache/httpd.conf: x";
        assert_eq!(offending_instance(&layout, main), None);
    }
}
