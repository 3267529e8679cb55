//! How the client shows what the heart answered: the `list` and
//! `runtimes` tables, `show`'s `key: value` lines, the one-line state of
//! a start or register, and the raw JSON with `--json`. Output goes to
//! stdout; a reader that went away is not an error.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{Failed, Outcome};
use crate::cli;
use crate::error::Error;
use crate::protocol::{InstanceView, State};
use crate::rfc3339;

/// The state in an answer, or `default` when the answer names none.
pub(super) fn answered_state(text: &str, default: State) -> &'static str {
    serde_json::from_str::<Value>(text)
        .ok()
        .and_then(|v| serde_json::from_value::<State>(v.get("state")?.clone()).ok())
        .unwrap_or(default)
        .as_str()
}

/// Writes `text` to stdout.
pub(super) fn print(text: &str) -> Outcome<()> {
    cli::print(text).map_err(|e| Failed::Other(Error::io("write to", "standard output", e)))
}

/// Writes an answer as it came, ending with a newline.
pub(super) fn print_json(text: &str) -> Outcome<()> {
    if text.ends_with('\n') {
        print(text)
    } else {
        print(&format!("{text}\n"))
    }
}

/// The URL an instance answers on, when it runs on a port.
fn app_url(view: &InstanceView, host: &str) -> Option<String> {
    match (view.state, view.port) {
        (State::Running, Some(port)) => Some(format!("http://{host}:{port}/")),
        _ => None,
    }
}

/// `ID: STATE`, then the URL to open, or the reason for an ERROR.
pub(super) fn state_line(view: &InstanceView, host: &str) -> String {
    let mut line = format!("{}: {}", view.instance_id, view.state.as_str());
    if let Some(url) = app_url(view, host) {
        line.push_str(&format!("\n{url}"));
    } else if let (State::Registered, Some(port)) = (view.state, view.port) {
        line.push_str(&format!(" (port {port})"));
    } else if view.state == State::Error && !view.message.is_empty() {
        line.push_str(&format!(": {}", first_line(&view.message)));
    }
    line
}

/// The first non-blank line of `text`, trimmed.
pub(super) fn first_line(text: &str) -> &str {
    text.trim().lines().next().unwrap_or_default()
}

/// `NAME VERSION` of an instance's runtime.
fn runtime_name(view: &InstanceView) -> String {
    format!("{} {}", view.runtime.name, view.runtime.version)
}

/// The `list` table: one row per instance, columns padded to fit.
pub(super) fn list_table(instances: &[InstanceView]) -> String {
    let mut rows = vec![[
        "ID",
        "STATE",
        "PORT",
        "RUNTIME",
        "APPLICATION",
        "UPTIME",
        "RESTARTS",
        "MEMORY",
        "CPU",
        "MESSAGE",
    ]
    .map(String::from)];
    let now = now();
    for view in instances {
        rows.push([
            view.instance_id.to_string(),
            view.state.as_str().to_string(),
            view.port.map_or_else(|| "-".to_string(), |p| p.to_string()),
            runtime_name(view),
            view.application.name.clone(),
            uptime(view, now),
            view.restarts.to_string(),
            view.memory_bytes.map_or_else(|| "-".to_string(), memory),
            view.cpu_seconds
                .map_or_else(|| "-".to_string(), |s| format!("{s:.1}s")),
            first_line(&view.message).to_string(),
        ]);
    }
    table(&rows)
}

/// Seconds since the Unix epoch.
fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// How long a running instance has been up (`45s`, `12m03s`, `5h07m`,
/// `3d04h`); `-` when it is not running.
fn uptime(view: &InstanceView, now: f64) -> String {
    let Some(since) = view
        .started_at
        .as_deref()
        .and_then(|t| rfc3339::parse(t).ok())
    else {
        return "-".to_string();
    };
    let secs = (now - since).max(0.0) as u64;
    match secs {
        0..=59 => format!("{secs}s"),
        60..=3599 => format!("{}m{:02}s", secs / 60, secs % 60),
        3600..=86_399 => format!("{}h{:02}m", secs / 3600, secs / 60 % 60),
        _ => format!("{}d{:02}h", secs / 86_400, secs / 3600 % 24),
    }
}

/// A size in bytes with a binary unit: `812K`, `23.4M`, `1.2G`.
fn memory(bytes: u64) -> String {
    const KIB: f64 = 1024.0;
    let b = bytes as f64;
    if b < KIB * KIB {
        format!("{:.0}K", b / KIB)
    } else if b < KIB * KIB * KIB {
        format!("{:.1}M", b / KIB / KIB)
    } else {
        format!("{:.1}G", b / KIB / KIB / KIB)
    }
}

/// The `runtimes` table: each runtime with its versions on this node.
pub(super) fn runtimes_table(runtimes: &BTreeMap<String, Vec<String>>) -> String {
    let mut rows = vec![["RUNTIME", "VERSIONS"].map(String::from)];
    for (name, versions) in runtimes {
        let versions = if versions.is_empty() {
            "(not on this node)".to_string()
        } else {
            versions.join(" ")
        };
        rows.push([name.clone(), versions]);
    }
    table(&rows)
}

/// Left-aligned columns separated by two spaces; the last column is not
/// padded.
fn table<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0usize; N];
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 < N {
                line.push_str(&format!("{cell:<width$}  ", width = widths[i]));
            } else {
                line.push_str(cell);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `show`: one `key: value` line per field.
pub(super) fn show_lines(view: &InstanceView, host: &str) -> String {
    let dash = || "-".to_string();
    let restart = serde_json::to_value(view.restart)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default();
    let mut lines = vec![
        ("instance_id", view.instance_id.to_string()),
        ("state", view.state.as_str().to_string()),
        ("port", view.port.map_or_else(dash, |p| p.to_string())),
    ];
    if let Some(url) = app_url(view, host) {
        lines.push(("url", url));
    }
    lines.extend([
        ("application", view.application.name.clone()),
        ("version", view.version.clone()),
        ("runtime", runtime_name(view)),
        (
            "parameters",
            serde_json::to_string(&view.runtime.parameters).unwrap_or_default(),
        ),
        ("standalone", view.standalone.to_string()),
        ("exclusive", view.exclusive.to_string()),
        ("restart", restart),
        ("desired", view.desired.as_str().to_string()),
        ("pid", view.pid.map_or_else(dash, |p| p.to_string())),
        ("app_pid", view.app_pid.map_or_else(dash, |p| p.to_string())),
        ("started_at", view.started_at.clone().unwrap_or_else(dash)),
        ("uptime", uptime(view, now())),
        ("restarts", view.restarts.to_string()),
        (
            "last_exit",
            view.last_exit.as_ref().map_or_else(dash, |e| {
                let code = e.code.map_or_else(|| "?".to_string(), |c| c.to_string());
                format!("code {code} at {}: {}", e.at, first_line(&e.reason))
            }),
        ),
        (
            "health",
            view.health.as_ref().map_or_else(dash, |h| {
                let status = serde_json::to_value(h.status)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_default();
                let checked = h.last_checked.as_deref().unwrap_or("never");
                let mut text = format!("{status} (checked {checked})");
                if !h.message.is_empty() {
                    text.push_str(&format!(": {}", h.message));
                }
                text
            }),
        ),
        (
            "health_check",
            view.health_check
                .as_ref()
                .and_then(|c| serde_json::to_string(c).ok())
                .unwrap_or_else(dash),
        ),
        (
            "log_max_size",
            view.log_max_size
                .map_or_else(dash, |s| s.bytes().to_string()),
        ),
        (
            "log_keep",
            view.log_keep.map_or_else(dash, |k| k.files().to_string()),
        ),
        (
            "memory_bytes",
            view.memory_bytes.map_or_else(dash, |m| m.to_string()),
        ),
        (
            "cpu_seconds",
            view.cpu_seconds.map_or_else(dash, |c| format!("{c:.2}")),
        ),
        ("message", view.message.trim_end().replace('\n', "\n  ")),
    ]);
    lines
        .into_iter()
        .map(|(key, value)| format!("{}\n", format!("{key}: {value}").trim_end()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Application, Restart, RuntimeSpec};

    fn view(id: &str, state: State, port: Option<u16>, message: &str) -> InstanceView {
        InstanceView {
            instance_id: id.parse().unwrap(),
            state,
            port,
            application: Application {
                name: "hello".into(),
            },
            version: "1".into(),
            runtime: RuntimeSpec {
                name: "shell".into(),
                version: "1".into(),
                parameters: Default::default(),
            },
            standalone: port.is_none(),
            exclusive: false,
            restart: Restart::Never,
            message: message.into(),
            pid: None,
            desired: Default::default(),
            user: None,
            limits: Default::default(),
            memory_bytes: None,
            cpu_seconds: None,
            app_pid: None,
            started_at: None,
            restarts: 0,
            last_exit: None,
            health: None,
            health_check: None,
            log_max_size: None,
            log_keep: None,
        }
    }

    #[test]
    fn list_is_an_aligned_table() {
        let text = list_table(&[
            view("web-1", State::Running, Some(42600), ""),
            view("daemon", State::Error, None, "exited\nwith 1"),
        ]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "ID      STATE    PORT   RUNTIME  APPLICATION  UPTIME  RESTARTS  MEMORY  CPU  MESSAGE"
        );
        assert_eq!(
            lines[1],
            "web-1   RUNNING  42600  shell 1  hello        -       0         -       -"
        );
        assert_eq!(
            lines[2],
            "daemon  ERROR    -      shell 1  hello        -       0         -       -    exited"
        );
        assert_eq!(memory(812 * 1024), "812K");
        assert_eq!(memory(24_536_678), "23.4M");
        let mut up = view("w", State::Running, Some(1), "");
        up.started_at = Some("1970-01-01T00:00:00Z".into());
        assert_eq!(uptime(&up, 3725.0), "1h02m");
        assert_eq!(uptime(&up, 59.0), "59s");
    }

    #[test]
    fn state_line_gives_url_or_reason() {
        let running = view("web-1", State::Running, Some(42600), "");
        assert_eq!(
            state_line(&running, "127.0.0.1"),
            "web-1: RUNNING\nhttp://127.0.0.1:42600/"
        );
        let failed = view("web-1", State::Error, Some(42600), "port taken\nmore");
        assert_eq!(state_line(&failed, "127.0.0.1"), "web-1: ERROR: port taken");
        let registered = view("web-1", State::Registered, Some(42601), "");
        assert_eq!(
            state_line(&registered, "h"),
            "web-1: REGISTERED (port 42601)"
        );
    }

    #[test]
    fn show_prints_key_value_lines() {
        let text = show_lines(&view("web-1", State::Running, Some(42600), "ok"), "h");
        assert!(text.starts_with(
            "instance_id: web-1\nstate: RUNNING\nport: 42600\nurl: http://h:42600/\n"
        ));
        assert!(text.contains("restart: never\n"), "{text}");
        assert!(text.ends_with("message: ok\n"), "{text}");
        assert!(text.contains("app_pid: -\nstarted_at: -\n"), "{text}");
        assert!(text.contains("\nlog_max_size: -\nlog_keep: -\n"), "{text}");
    }

    #[test]
    fn answered_state_falls_back() {
        assert_eq!(
            answered_state(r#"{"state": "STOPPED"}"#, State::Deregistered),
            "STOPPED"
        );
        assert_eq!(answered_state("{}", State::Deregistered), "DEREGISTERED");
        assert_eq!(answered_state("", State::Stopped), "STOPPED");
    }
}
