//! The wire contract shared by the three programs (STYLE §2, contract
//! layer).
//!
//! Serde types, the values validated once at the edge, and path builders:
//!
//! - [`id`]: [`InstanceId`], parsed once wherever an id enters;
//! - [`seconds`]: [`Seconds`], the one parser and bound of every timeout;
//! - [`control`]: the supervisor's control file and exit report path;
//! - [`log_limits`]: [`LogSize`] and [`LogKeep`], the limits of a rotated
//!   log;
//! - [`exited`]: the `.exited` file, with its one writer and one reader;
//! - [`health`]: an instance's health check;
//! - [`limits`]: an instance's resource limits, parsed once at the edge;
//! - [`api`]: the heart's HTTP API bodies;
//! - [`forward`]: the signals an application may be sent through its
//!   supervisor;
//! - [`plugin`]: the external runtime plugin protocol;
//! - [`pacemaker`]: the reports to the optional controller.
//!
//! Nothing here does I/O but [`exited`], whose reading and writing belong
//! with its format.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

pub mod api;
pub mod control;
pub mod exited;
pub mod forward;
pub mod health;
pub mod id;
pub mod limits;
pub mod log_limits;
pub mod pacemaker;
pub mod plugin;
pub mod seconds;

pub use api::{
    ApiError, ApiErrorOf, Application, Desired, Health, HealthStatus, InstanceList, InstanceView,
    LastExit, Manifest, RegisterRequest, Restart, RuntimeSpec, RuntimeUpdate, SourceRequest,
    StartAllAnswer, State, UpdateRequest,
};
pub use control::{
    exit_report_path, Command, ControlFile, DEFAULT_REPORT_DEADLINE, DEFAULT_STOP_TIMEOUT,
};
pub use forward::{ForwardSignal, InvalidSignal, SignalRequest};
pub use health::{CheckKind, HealthCheck};
pub use id::{InstanceId, InvalidId, INSTANCE_ID_MAX};
pub use limits::{Bytes, CpuMax, InvalidLimit, Limits};
pub use log_limits::{InvalidLogKeep, InvalidLogSize, LogKeep, LogLimits, LogSize};
pub use pacemaker::NodeReport;
pub use plugin::{
    PluginEnvironment, PluginEnvironmentRequest, PluginInstance, PluginMessage, PluginStart,
    PluginSupervise, PluginVersions,
};
pub use seconds::{InvalidSeconds, Seconds};

/// An environment: variable name to value, in a stable order.
pub type Environment = BTreeMap<String, String>;

/// Runtime parameters of one instance, as JSON.
pub type Parameters = Map<String, Value>;
