//! An instance's record: everything the heart keeps about it, as it is
//! written to its file in the store (`store`, `DATA_DIR/store/ID.json`):
//! its state, its port, the supervisor identity (pid + start time) and
//! exit key of its current launch, and its restart backoff.
//!
//! Deregistered instances have no record (a `GET` of them answers 404).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::layout::Layout;
use super::store::{Keyed, Store};
use crate::error::Result;
use crate::process::Identity;
use crate::protocol::{
    Application, Desired, Environment, HealthCheck, InstanceId, InstanceView, LastExit, Limits,
    LogKeep, LogLimits, LogSize, Parameters, Restart, RuntimeSpec, Seconds, State,
};
use crate::rfc3339::Timestamp;

/// Default bound of each startup command (parameter `startup_timeout`).
pub(crate) use crate::plugins::params::DEFAULT_STARTUP_TIMEOUT;

/// The runtime parameter `startup_timeout`, or its default.
///
/// # Errors
///
/// The parameter is not a number of seconds within the bound.
pub(crate) fn startup_timeout(parameters: &Parameters) -> Result<Seconds> {
    crate::plugins::params::startup_timeout(parameters)
}

/// Restart backoff of one instance; survives a heart restart.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Backoff {
    /// Restarts since the instance last stayed up 60 s.
    #[serde(default)]
    pub attempts: u32,
    /// When the next restart is due, in seconds since the Unix epoch.
    #[serde(default)]
    pub next_restart: Option<f64>,
}

/// One instance as the catalog keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Record {
    pub instance_id: InstanceId,
    pub state: State,
    #[serde(default)]
    pub port: Option<u16>,
    pub application: Application,
    #[serde(default)]
    pub version: String,
    pub runtime: RuntimeSpec,
    #[serde(default)]
    pub standalone: bool,
    #[serde(default)]
    pub exclusive: bool,
    #[serde(default)]
    pub startup: Vec<String>,
    #[serde(default)]
    pub environment: Environment,
    #[serde(default)]
    pub restart: Restart,
    /// Where the source was copied from.
    #[serde(default)]
    pub source: PathBuf,
    /// The last reason.
    #[serde(default)]
    pub message: String,
    /// The exit key of the current launch; `None` once spent or stopped.
    #[serde(default)]
    pub exit_key: Option<String>,
    /// The supervisor of the current launch.
    #[serde(default)]
    pub supervisor: Option<Identity>,
    /// True when this instance was started by its runtime itself
    /// (`Started::Managed`): stop and status go to the runtime.
    #[serde(default)]
    pub managed: bool,
    /// Seconds from SIGTERM to SIGKILL of the current launch.
    #[serde(default)]
    pub stop_timeout: Option<Seconds>,
    /// The bound of each startup command (runtime parameter
    /// `startup_timeout`), parsed at register; a catalog written before
    /// the field existed gets it from the parameters when loaded.
    #[serde(default)]
    pub startup_timeout: Option<Seconds>,
    /// An operator asked for a stop: the exit is not a failure and is never
    /// restarted.
    #[serde(default)]
    pub stop_requested: bool,
    /// When it became RUNNING, in seconds since the Unix epoch.
    #[serde(default)]
    pub running_since: Option<f64>,
    /// Restart backoff.
    #[serde(default)]
    pub backoff: Backoff,
    // Issue 11: lifecycle.
    /// What the operator last asked for; `None` in a record written before
    /// the field existed, until [`load`] derives it from the state.
    #[serde(default)]
    pub desired: Option<Desired>,
    // Issue 12: isolation.
    /// The user it runs as, as registered; `None` is the node's default.
    #[serde(default)]
    pub user: Option<String>,
    /// Its resource limits.
    #[serde(default)]
    pub limits: Limits,
    // Issue 13: observability.
    /// Its health check (`None`: a TCP connect when it has a port).
    #[serde(default)]
    pub health_check: Option<HealthCheck>,
    /// The application process of the current launch (the leader of its
    /// process group), as the supervisor wrote it in the startflag.
    #[serde(default)]
    pub app: Option<Identity>,
    /// Restarts by the policy since the last operator start.
    #[serde(default)]
    pub restarts: u32,
    /// How its process last ended.
    #[serde(default)]
    pub last_exit: Option<Exit>,
    /// Its own largest size of each log file (`None`: the node's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_max_size: Option<LogSize>,
    /// Its own number of rotated log files kept (`None`: the node's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_keep: Option<LogKeep>,
}

/// How an instance's process ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Exit {
    /// The exit code, when known.
    pub code: Option<i32>,
    /// When, in seconds since the Unix epoch.
    pub at: f64,
    /// Why.
    pub reason: String,
}

impl Record {
    /// What the operator last asked for. A record written before the
    /// field existed is taken to want what its state shows.
    pub(crate) fn desired(&self) -> Desired {
        self.desired.unwrap_or(match self.state {
            State::Starting | State::Running | State::Suspended => Desired::Running,
            _ => Desired::Stopped,
        })
    }

    /// The API view of this record.
    pub(crate) fn view(&self) -> InstanceView {
        InstanceView {
            instance_id: self.instance_id.clone(),
            state: self.state,
            port: self.port,
            application: self.application.clone(),
            version: self.version.clone(),
            runtime: self.runtime.clone(),
            standalone: self.standalone,
            exclusive: self.exclusive,
            restart: self.restart,
            message: self.message.clone(),
            pid: match self.state {
                State::Starting | State::Running => self.supervisor.map(|s| s.pid),
                _ => None,
            },
            desired: self.desired(),
            user: self.user.clone(),
            limits: self.limits,
            memory_bytes: None,
            cpu_seconds: None,
            app_pid: match self.state {
                State::Starting | State::Running => self
                    .app
                    .filter(crate::process::Identity::is_alive)
                    .map(|a| a.pid),
                _ => None,
            },
            started_at: (self.state == State::Running)
                .then_some(self.running_since)
                .flatten()
                .map(|t| Timestamp::from_secs(t).to_string()),
            restarts: self.restarts,
            last_exit: self.last_exit.as_ref().map(|e| LastExit {
                code: e.code,
                at: Timestamp::from_secs(e.at).to_string(),
                reason: e.reason.clone(),
            }),
            health: None,
            health_check: self.health_check.clone(),
            log_max_size: self.log_max_size,
            log_keep: self.log_keep,
        }
    }

    /// The limits of its logs: its own, else the node's (`node`).
    pub(crate) fn log_limits(&self, node: LogLimits) -> LogLimits {
        node.overridden(self.log_max_size, self.log_keep)
    }
}

/// Opens the store of `layout` and reads every record: the records of
/// registers that never finished (`ALLOCATED`) are removed, and records
/// written before `startup_timeout` existed get it from their parameters.
///
/// # Errors
///
/// A record cannot be read or parsed (the error names its file), or the
/// store cannot be opened or migrated.
pub(crate) fn load(layout: &Layout) -> Result<(Store, BTreeMap<InstanceId, Record>)> {
    let (store, records) = Store::open::<Record>(&layout.store(), &layout.catalog())?;
    let mut kept = BTreeMap::new();
    for mut record in records {
        if matches!(record.state, State::Allocated | State::Deregistered) {
            // A register that never finished: its copy is not trusted.
            store.remove(&record.instance_id)?;
            continue;
        }
        if record.desired.is_none() {
            record.desired = Some(record.desired());
        }
        if record.startup_timeout.is_none() {
            // Checked at register: the default is never needed.
            let parsed = startup_timeout(&record.runtime.parameters);
            record.startup_timeout = Some(parsed.unwrap_or(DEFAULT_STARTUP_TIMEOUT));
        }
        kept.insert(record.instance_id.clone(), record);
    }
    Ok((store, kept))
}

impl Keyed for Record {
    fn key(&self) -> &InstanceId {
        &self.instance_id
    }
}
