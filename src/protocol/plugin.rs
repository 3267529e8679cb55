//! The external runtime plugin protocol (SPEC §2): the JSON requests and
//! answers of `pm-runtime-NAME MODE`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{Environment, InstanceId, LogLimits, Parameters};

/// The instance as an external runtime plugin sees it (SPEC §2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PluginInstance {
    /// The instance id.
    pub instance_id: InstanceId,
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
    /// The limits of its logs, for a runtime that writes them itself (the
    /// managed Apache); not part of the external plugin protocol.
    #[serde(skip)]
    pub log_limits: LogLimits,
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
