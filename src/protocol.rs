//! The wire contract shared by the three programs.
//!
//! Only serde types, validators and path builders live here; nothing in
//! this module does I/O. The heart writes [`ControlFile`]s that the
//! supervisor reads, the supervisor calls [`exit_report_path`] that the
//! heart routes, and external runtime plugins speak the `Plugin*` types.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The longest instance id.
pub const INSTANCE_ID_MAX: usize = 64;

/// An environment: variable name to value, in a stable order.
pub type Environment = BTreeMap<String, String>;

/// Runtime parameters of one instance, as JSON.
pub type Parameters = Map<String, Value>;

/// True when `id` matches `[A-Za-z0-9-]{1,64}`, so it is safe as a file
/// name and a URL segment.
pub fn valid_instance_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= INSTANCE_ID_MAX
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

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
    pub instance_id: String,
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
    /// A whole base URL for the report, instead of `port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_url: Option<String>,
    /// Appended to: supervisor lines and the command's output.
    pub log_file: PathBuf,
    /// Written with the supervisor's pid once the command runs.
    pub pidfile: PathBuf,
    /// Written once the command was started or failed to start.
    pub startflagfile: PathBuf,
    /// Seconds from SIGTERM to SIGKILL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_timeout: Option<f64>,
    /// Seconds the exit report is retried before the `.exited` file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_deadline: Option<f64>,
    /// Run the command as this user and its groups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// Default seconds from SIGTERM to SIGKILL.
pub const DEFAULT_STOP_TIMEOUT: f64 = 10.0;

/// Default seconds an exit report is retried.
pub const DEFAULT_REPORT_DEADLINE: f64 = 45.0;

/// The path of the supervisor's exit report.
pub fn exit_report_path(instance_id: &str, exit_key: &str, code: i32) -> String {
    format!("/instance/exit/{instance_id}/{exit_key}/{code}")
}

/// The instance as an external runtime plugin sees it (SPEC §2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PluginInstance {
    /// The instance id.
    pub instance_id: String,
    /// The assigned TCP port; `None` when standalone.
    pub port: Option<u16>,
    /// A daemon that listens on nothing.
    pub standalone: bool,
    /// The instance's own copy of its source.
    pub path: PathBuf,
    /// The requested runtime version.
    pub version: String,
    /// Runtime parameters.
    pub parameters: Parameters,
    /// The composed environment of the instance.
    pub environment: Environment,
}

/// Answer of the `versions` mode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginVersions {
    /// Versions this node can run.
    pub versions: Vec<String>,
}

/// Request of the `environment` mode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PluginEnvironmentRequest {
    /// The requested version.
    pub version: String,
    /// The environment to change.
    pub environment: Environment,
    /// Runtime parameters.
    pub parameters: Parameters,
}

/// Answer of the `environment` mode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginEnvironment {
    /// The changed environment.
    pub environment: Environment,
}

/// What a plugin asks the heart to run under `pm-supervisor`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginSupervise {
    /// Argument vector.
    pub command: Vec<String>,
    /// Working directory; the instance directory when absent.
    #[serde(default)]
    pub cwd: Option<PathBuf>,
    /// Environment; the instance environment when absent.
    #[serde(default)]
    pub environment: Option<Environment>,
}

/// Answer of the `start` mode: exactly one of the two fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginStart {
    /// Run this under `pm-supervisor`.
    #[serde(default)]
    pub supervise: Option<PluginSupervise>,
    /// The plugin started the instance itself.
    #[serde(default)]
    pub message: Option<String>,
}

/// Answer of the `stop` and `status` modes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginMessage {
    /// What happened.
    pub message: String,
}

/// Life-cycle states of an instance (SPEC §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum State {
    /// Known to the node, nothing copied yet.
    Allocated,
    /// Source copied, port allocated, not started.
    Registered,
    /// A start is in progress.
    Starting,
    /// Answering on its port, or alive past `standalone_wait`.
    Running,
    /// Was running when the heart went down; its fate is unknown.
    Suspended,
    /// Stopped on request, or exited with code 0.
    Stopped,
    /// Failed to start, or exited with a non-zero code.
    Error,
    /// Removed; its directory and port are gone.
    Deregistered,
}

impl State {
    /// The name used on the wire and in tables: `RUNNING`.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Allocated => "ALLOCATED",
            State::Registered => "REGISTERED",
            State::Starting => "STARTING",
            State::Running => "RUNNING",
            State::Suspended => "SUSPENDED",
            State::Stopped => "STOPPED",
            State::Error => "ERROR",
            State::Deregistered => "DEREGISTERED",
        }
    }

    /// True when a start request is allowed from this state.
    pub fn can_start(self) -> bool {
        matches!(
            self,
            State::Registered | State::Stopped | State::Suspended | State::Error
        )
    }
}

/// When the heart restarts an instance whose process ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Restart {
    /// Never (the default).
    #[default]
    Never,
    /// After a non-zero exit.
    OnFailure,
    /// After any exit that was not asked for.
    Always,
}

/// The application an instance belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Application {
    /// Its name.
    pub name: String,
}

/// Which runtime runs an instance, and how.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeSpec {
    /// Runtime name: `shell`, `php`, a plugin's name.
    pub name: String,
    /// Requested version: `1`, `3.1`, `3.1.4`.
    pub version: String,
    /// Runtime parameters.
    #[serde(default)]
    pub parameters: Parameters,
}

/// The deployable description of an application: the body of `POST
/// /instances` without `instance_id` and `source`, and the contents of a
/// `paasmaker.json` manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The application.
    pub application: Application,
    /// The application's version.
    #[serde(default)]
    pub version: String,
    /// The runtime.
    pub runtime: RuntimeSpec,
    /// A daemon that listens on nothing.
    #[serde(default)]
    pub standalone: bool,
    /// Stop the instance when the heart stops.
    #[serde(default)]
    pub exclusive: bool,
    /// Commands run with `sh -e` in the instance directory before start.
    #[serde(default)]
    pub startup: Vec<String>,
    /// The instance's own environment.
    #[serde(default)]
    pub environment: Environment,
    /// Restart policy.
    #[serde(default)]
    pub restart: Restart,
}

/// The body of `POST /instances`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// The id to use; the heart picks one when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
    /// A directory, or a `.tar.gz` file, on this node.
    pub source: PathBuf,
    /// Everything else.
    #[serde(flatten)]
    pub manifest: Manifest,
}

/// An instance as the API answers it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceView {
    /// The instance id.
    pub instance_id: String,
    /// Its state.
    pub state: State,
    /// Its port; `None` when standalone.
    pub port: Option<u16>,
    /// The application.
    pub application: Application,
    /// The application's version.
    pub version: String,
    /// The runtime.
    pub runtime: RuntimeSpec,
    /// A daemon that listens on nothing.
    pub standalone: bool,
    /// Stopped with the heart.
    pub exclusive: bool,
    /// Restart policy.
    pub restart: Restart,
    /// The last reason: why it is in ERROR, what the runtime said.
    pub message: String,
    /// The supervisor's pid while running under one.
    #[serde(default)]
    pub pid: Option<i32>,
}

/// `GET /instances`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceList {
    /// Every instance.
    pub instances: Vec<InstanceView>,
}

/// Every API error body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    /// What went wrong.
    pub error: String,
}

/// What the heart tells the pacemaker about itself (register and update).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeReport {
    /// The node's name (its host name unless configured).
    pub node: String,
    /// The heart's API address.
    pub address: String,
    /// Runtimes with their versions.
    pub runtimes: BTreeMap<String, Vec<String>>,
    /// Instance id to state.
    pub instances: BTreeMap<String, State>,
}

/// Pacemaker paths, relative to its base URL.
pub mod pacemaker {
    /// Node register.
    pub const REGISTER: &str = "/node/register";
    /// Node update, on every state change.
    pub const UPDATE: &str = "/node/update";
    /// Node shutdown, when the heart stops.
    pub const SHUTDOWN: &str = "/node/shutdown";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_ids_are_safe_path_segments() {
        assert!(valid_instance_id("web-1"));
        assert!(valid_instance_id(&"a".repeat(64)));
        for bad in ["", "a/b", "..", "a.b", "a b", &"a".repeat(65), "é"] {
            assert!(!valid_instance_id(bad), "{bad:?} accepted");
        }
    }

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
    fn register_request_flattens_the_manifest() {
        let req: RegisterRequest = serde_json::from_str(
            r#"{"source": "/src", "application": {"name": "a"},
                "runtime": {"name": "shell", "version": "1"}, "restart": "on-failure"}"#,
        )
        .unwrap();
        assert_eq!(req.manifest.restart, Restart::OnFailure);
        assert!(req.manifest.startup.is_empty());
        assert_eq!(
            serde_json::to_string(&State::Running).unwrap(),
            "\"RUNNING\""
        );
    }

    #[test]
    fn exit_report_path_has_the_contract_shape() {
        assert_eq!(
            exit_report_path("web-1", "k3y", -1),
            "/instance/exit/web-1/k3y/-1"
        );
    }
}
