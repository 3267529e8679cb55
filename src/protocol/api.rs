//! The heart's HTTP API bodies (SPEC §4): instance states, the register
//! request and manifest, the instance as answered, and the error body.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::log_limits::{LogKeep, LogSize};
use super::{Environment, HealthCheck, InstanceId, Limits, Parameters};

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
    // Issue 12: isolation.
    /// The user the instance runs as (a name or a numeric uid; its groups
    /// come with it); `None` is the node's default (`--run-as`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Its resource limits; `memory_max`, `cpu_max` and `pids_max` need
    /// control groups.
    #[serde(default, skip_serializing_if = "Limits::is_empty")]
    pub limits: Limits,
    // Issue 13: observability.
    /// How readiness and health are checked; without one, a TCP connect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
    /// The largest size of each file of its logs; `None` is the node's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_max_size: Option<LogSize>,
    /// How many rotated files of each of its logs are kept; `None` is the
    /// node's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_keep: Option<LogKeep>,
}

/// The body of `POST /instances`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// The id to use; the heart picks one when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<InstanceId>,
    /// A directory or a `.tar.gz` file on this node, an `http://` URL of
    /// a `.tar.gz`, or `upload:ID` (from `POST /uploads`).
    pub source: PathBuf,
    /// The SHA-256 the source archive must have, in hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_sha256: Option<String>,
    /// Everything else.
    #[serde(flatten)]
    pub manifest: Manifest,
}

/// An instance as the API answers it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceView {
    /// The instance id.
    pub instance_id: InstanceId,
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
    // Issue 11: lifecycle.
    /// What the operator last asked for: `running` or `stopped`.
    #[serde(default)]
    pub desired: Desired,
    // Issue 12: isolation.
    /// The user it runs as, as registered (`None`: the node's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Its resource limits.
    #[serde(default, skip_serializing_if = "Limits::is_empty")]
    pub limits: Limits,
    /// Memory in use by its control group, while it runs in one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    /// CPU time its control group used since it started, while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_seconds: Option<f64>,
    // Issue 13: observability.
    /// The application's own pid (its process group) while it runs.
    #[serde(default)]
    pub app_pid: Option<i32>,
    /// When it became `RUNNING`, RFC 3339; `None` when not running.
    #[serde(default)]
    pub started_at: Option<String>,
    /// Restarts by the restart policy since the last operator start.
    #[serde(default)]
    pub restarts: u32,
    /// How its process last ended.
    #[serde(default)]
    pub last_exit: Option<LastExit>,
    /// Its health check, as last run.
    #[serde(default)]
    pub health: Option<Health>,
    /// The health check it has (`None`: a TCP connect when it has a port).
    #[serde(default)]
    pub health_check: Option<HealthCheck>,
    /// Its own `log_max_size`, as registered (`None`: the node's).
    #[serde(default)]
    pub log_max_size: Option<LogSize>,
    /// Its own `log_keep`, as registered (`None`: the node's).
    #[serde(default)]
    pub log_keep: Option<LogKeep>,
}

/// How an instance's process last ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LastExit {
    /// Its exit code; `None` when it is not known (a supervisor gone
    /// without a report, a process stopped as unhealthy).
    pub code: Option<i32>,
    /// When, RFC 3339.
    pub at: String,
    /// Why, as the message said then.
    pub reason: String,
}

/// The outcome of an instance's health checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    /// Not checked since it became `RUNNING`.
    Unknown,
    /// The last check passed.
    Healthy,
    /// The last check failed (fewer than `failures` in a row, or the
    /// instance was stopped for it).
    Unhealthy,
}

/// An instance's health, as its last check found it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// The outcome.
    pub status: HealthStatus,
    /// When it was last checked, RFC 3339.
    pub last_checked: Option<String>,
    /// Why the last check failed; empty when it passed.
    pub message: String,
}

/// What the operator last asked of an instance (issue 11): start,
/// restart and redeploy ask for `running`; stop (and register) for
/// `stopped`. An instance that should be running and is found gone when
/// the heart starts is started again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Desired {
    /// It should be running.
    Running,
    /// It should not run (the default: registered, or stopped).
    #[default]
    Stopped,
}

impl Desired {
    /// The name on the wire: `running`.
    pub fn as_str(self) -> &'static str {
        match self {
            Desired::Running => "running",
            Desired::Stopped => "stopped",
        }
    }
}

/// The runtime part of `PATCH /instances/ID`: what may change of the
/// runtime (not its name).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeUpdate {
    /// A new requested version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Parameters to set; a `null` value removes the parameter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Parameters>,
}

/// The body of `PATCH /instances/ID`: every field is optional, and only
/// those given change. Validated as at register; applied at the next
/// start.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateRequest {
    /// Variables to set; a `null` value removes the variable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<std::collections::BTreeMap<String, Option<String>>>,
    /// The runtime's version and parameters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<RuntimeUpdate>,
    /// A new restart policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart: Option<Restart>,
    /// New startup commands (replacing the old list).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub startup: Option<Vec<String>>,
    // Issue 12: isolation.
    /// A new user to run as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// New resource limits, replacing the old ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Limits>,
    // Issue 13: observability.
    /// A new health check, replacing the old one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
    /// A new largest size of each file of its logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_max_size: Option<LogSize>,
    /// A new number of rotated files kept of each of its logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_keep: Option<LogKeep>,
}

/// The body of `PUT /instances/ID/source` (redeploy in place).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceRequest {
    /// The new source, as in a register: a path on this node, an
    /// `http://` URL, or `upload:ID`.
    pub source: PathBuf,
    /// The SHA-256 the source archive must have, in hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_sha256: Option<String>,
    /// The new description of the application, replacing the old one
    /// (its application name and `standalone` must stay the same); the
    /// old one is kept when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<Manifest>,
}

/// The answer to `POST /instances/start-all`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StartAllAnswer {
    /// The instances that were started, as they are now.
    pub started: Vec<InstanceView>,
    /// Those that could not be started, with why.
    pub failed: Vec<ApiErrorOf>,
}

/// One failure of `POST /instances/start-all`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiErrorOf {
    /// The instance.
    pub instance_id: InstanceId,
    /// What went wrong.
    pub error: String,
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
