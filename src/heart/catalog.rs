//! The instance catalog: `catalog.json`, its records and their format.
//!
//! `DATA_DIR/catalog.json` holds every registered instance with its state,
//! its port, the supervisor identity (pid + start time) and exit key of its
//! current launch, and its restart backoff. It is rewritten whole on every
//! change, atomically and durably (`fsutil::write_atomic`), so a crash
//! leaves the previous catalog or the new one. A catalog that cannot be
//! read or parsed is a fatal error naming the file: the heart never starts
//! empty over it.
//!
//! Deregistered instances are dropped from the catalog (a `GET` of them
//! answers 404).

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::fsutil;
use crate::process::Identity;
use crate::protocol::{
    Application, Environment, InstanceId, InstanceView, Parameters, Restart, RuntimeSpec, Seconds,
    State,
};

/// Format version of `catalog.json`.
pub(crate) const FORMAT: u32 = 1;

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
}

impl Record {
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
        }
    }
}

/// The whole catalog file.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Catalog {
    #[serde(default)]
    pub format: u32,
    #[serde(default)]
    pub instances: BTreeMap<InstanceId, Record>,
}

impl Catalog {
    /// Reads `path`; a missing file is an empty catalog, anything else that
    /// goes wrong is an error naming the file.
    ///
    /// # Errors
    ///
    /// The file exists but cannot be read, is not JSON, or is not a catalog.
    pub(crate) fn load(path: &Path) -> Result<Catalog> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Catalog::default()),
            Err(e) => return Err(Error::io("read catalog", path, e)),
        };
        let mut catalog: Catalog = serde_json::from_str(&text)
            .map_err(|e| Error::json(format!("catalog {}", path.display()), e))?;
        for (id, record) in &catalog.instances {
            if id != &record.instance_id {
                return Err(Error::invalid(format!(
                    "invalid catalog {}: bad instance id {id:?}",
                    path.display()
                )));
            }
        }
        // A register that never finished: its copy is not trusted.
        catalog
            .instances
            .retain(|_, r| r.state != State::Allocated && r.state != State::Deregistered);
        for record in catalog.instances.values_mut() {
            if record.startup_timeout.is_none() {
                // Checked at register: the default is never needed.
                let parsed = startup_timeout(&record.runtime.parameters);
                record.startup_timeout = Some(parsed.unwrap_or(DEFAULT_STARTUP_TIMEOUT));
            }
        }
        catalog.format = FORMAT;
        Ok(catalog)
    }

    /// The catalog as the bytes of `catalog.json`, without the records
    /// still being registered.
    ///
    /// # Errors
    ///
    /// Serialisation failed (it cannot for these types).
    pub(crate) fn to_bytes(&self) -> Result<Vec<u8>> {
        #[derive(Serialize)]
        struct Out<'a> {
            format: u32,
            instances: BTreeMap<&'a str, &'a Record>,
        }
        let out = Out {
            format: FORMAT,
            instances: self
                .instances
                .iter()
                .filter(|(_, r)| r.state != State::Allocated)
                .map(|(id, r)| (id.as_str(), r))
                .collect(),
        };
        serde_json::to_vec(&out).map_err(|e| Error::json("catalog", e))
    }

    /// Writes `bytes` to `path` atomically and durably.
    ///
    /// # Errors
    ///
    /// As `fsutil::write_atomic`.
    pub(crate) fn store(path: &Path, bytes: &[u8]) -> Result<()> {
        fsutil::write_atomic(path, bytes, 0o600)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_catalog_that_is_not_json_names_the_file() {
        let dir = std::env::temp_dir().join(format!("pm-heart-cat-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("catalog.json");
        assert!(Catalog::load(&path).unwrap().instances.is_empty());
        std::fs::write(&path, "not json").unwrap();
        let err = Catalog::load(&path).unwrap_err().to_string();
        assert!(err.contains(&path.display().to_string()), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
