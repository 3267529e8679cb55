//! The supervisor's control file (SPEC §3) and the path of its exit
//! report: what the heart writes and `pm-supervisor` reads.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{Environment, InstanceId, LogKeep, LogSize, Seconds};

/// A command: an argument vector, or one string split like a shell splits
/// words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Command {
    /// `["prog", "arg"]`.
    Argv(Vec<String>),
    /// `"prog arg"`.
    Line(String),
}

/// The control file that tells `pm-supervisor` what to run (SPEC §3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ControlFile {
    /// The instance, `[A-Za-z0-9-]{1,64}`.
    pub instance_id: InstanceId,
    /// What to run.
    pub command: Command,
    /// Run `command` with `/bin/sh -c`.
    #[serde(default)]
    pub shell: bool,
    /// Working directory of the command.
    pub cwd: PathBuf,
    /// The complete environment of the command.
    pub environment: Environment,
    /// The one-time key of the exit report.
    pub exit_key: String,
    /// The heart's HTTP port on 127.0.0.1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// The heart's address file (`DATA_DIR/address`): read at each try of
    /// the report, so that it reaches the heart that runs now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address_file: Option<PathBuf>,
    /// A whole base URL for the report, instead of `port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_url: Option<String>,
    /// Appended to: supervisor lines and the command's output, rotated
    /// by size.
    pub log_file: PathBuf,
    /// The largest size of the log and of each rotated file; default
    /// [`LogSize::DEFAULT`] (10 MiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_max_size: Option<LogSize>,
    /// How many rotated files (`log_file.1` ..) are kept; default
    /// [`LogKeep::DEFAULT`] (5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_keep: Option<LogKeep>,
    /// Written with the supervisor's pid once the command runs.
    pub pidfile: PathBuf,
    /// Written once the command was started or failed to start.
    pub startflagfile: PathBuf,
    /// Seconds from SIGTERM to SIGKILL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_timeout: Option<Seconds>,
    /// Seconds the exit report is retried before the `.exited` file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_deadline: Option<Seconds>,
    /// Run the command as this user and its groups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Control-group directories the command joins before it is executed
    /// (their `cgroup.procs`), so that everything it forks is in them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cgroups: Vec<PathBuf>,
    /// RLIMIT_NOFILE, soft and hard, of the command.
    #[serde(
        default,
        deserialize_with = "super::limits::nofile",
        skip_serializing_if = "Option::is_none"
    )]
    pub nofile: Option<u64>,
}

/// Default seconds from SIGTERM to SIGKILL.
pub const DEFAULT_STOP_TIMEOUT: Seconds = Seconds::from_secs(10);

/// Default seconds an exit report is retried.
pub const DEFAULT_REPORT_DEADLINE: Seconds = Seconds::from_secs(45);

/// The path of the supervisor's exit report.
pub fn exit_report_path(instance_id: &InstanceId, exit_key: &str, code: i32) -> String {
    format!("/instance/exit/{instance_id}/{exit_key}/{code}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_is_argv_or_line() {
        let argv: Command = serde_json::from_str(r#"["a", "b"]"#).unwrap();
        assert_eq!(argv, Command::Argv(vec!["a".into(), "b".into()]));
        let line: Command = serde_json::from_str(r#""a b""#).unwrap();
        assert_eq!(line, Command::Line("a b".into()));
    }

    #[test]
    fn control_file_requires_its_fields() {
        let err = serde_json::from_str::<ControlFile>(r#"{"instance_id": "x"}"#).unwrap_err();
        assert!(err.to_string().contains("missing field"), "{err}");
    }

    #[test]
    fn cgroups_and_nofile_are_optional_and_nofile_is_bounded() {
        let base = r#""instance_id": "x", "command": "a", "cwd": "/", "environment": {},
            "exit_key": "k", "log_file": "/l", "pidfile": "/p", "startflagfile": "/s""#;
        let c: ControlFile = serde_json::from_str(&format!("{{{base}}}")).unwrap();
        assert!(c.cgroups.is_empty());
        assert_eq!(c.nofile, None);
        let json = serde_json::to_string(&c).unwrap();
        assert!(
            !json.contains("cgroups") && !json.contains("nofile"),
            "{json}"
        );
        let c: ControlFile = serde_json::from_str(&format!(
            r#"{{{base}, "cgroups": ["/sys/fs/cgroup/a", "/sys/fs/cgroup/b"], "nofile": 512}}"#
        ))
        .unwrap();
        assert_eq!(c.cgroups.len(), 2);
        assert_eq!(c.nofile, Some(512));
        let err = serde_json::from_str::<ControlFile>(&format!(r#"{{{base}, "nofile": 0}}"#))
            .unwrap_err();
        assert!(err.to_string().starts_with("nofile: "), "{err}");
    }

    #[test]
    fn exit_report_path_has_the_contract_shape() {
        let id: InstanceId = "web-1".parse().unwrap();
        assert_eq!(
            exit_report_path(&id, "k3y", -1),
            "/instance/exit/web-1/k3y/-1"
        );
    }
}
