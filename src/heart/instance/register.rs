//! Register: check a register request against the node's runtimes, get
//! its source (`source`: a path, a URL or an upload), take a port, copy the
//! source into `instances/ID/`, and record the instance as `REGISTERED`.
//!
//! While the source is copied the record is `ALLOCATED`: it holds its id
//! and port but is neither answered nor written to disk, so a crash in the
//! middle leaves no trace in the catalog (the stale copy is removed by the
//! next register of that id).

use std::fs;

use super::source::Source;
use super::{lock, Node};
use crate::error::{Error, Refusal, Result};
use crate::heart::ports;
use crate::heart::record::{self, Backoff, Record};
use crate::protocol::{
    self, Desired, InstanceId, InstanceView, RegisterRequest, RuntimeSpec, Seconds, State,
};
use crate::secret::random_hex;

impl Node {
    /// Registers an instance from the body of `POST /instances`.
    ///
    /// # Errors
    ///
    /// `BadRequest` for a malformed body or id or an empty application
    /// name; `Unprocessable` for an unknown runtime or version, bad
    /// parameters, or a missing or uncopyable source; `Conflict` for an id
    /// in use or an exhausted port range.
    pub(crate) fn register(&self, body: &[u8]) -> Result<InstanceView> {
        let req: RegisterRequest = serde_json::from_slice(body).map_err(|e| {
            Error::refused(
                Refusal::BadRequest,
                format!("invalid register request: {e}"),
            )
        })?;
        let manifest = &req.manifest;
        let id = match &req.instance_id {
            Some(id) => id.clone(),
            None => generate_id(&manifest.application.name)?,
        };
        if manifest.application.name.trim().is_empty() {
            return Err(Error::refused(
                Refusal::BadRequest,
                "application name is empty",
            ));
        }
        let startup_timeout = self.check_runtime(&manifest.runtime, manifest.standalone)?;
        self.isolation
            .check_register(manifest.user.as_deref(), &manifest.limits)?;
        let source = self.resolve_source(&req.source, req.source_sha256.as_deref())?;
        let result = self.register_from(&req, id, &source, startup_timeout);
        source.dispose(result.is_ok());
        result
    }

    /// The rest of a register, once its source is at hand.
    fn register_from(
        &self,
        req: &RegisterRequest,
        id: InstanceId,
        source: &Source,
        startup_timeout: Seconds,
    ) -> Result<InstanceView> {
        let manifest = &req.manifest;

        let op = self.op_lock(&id);
        let _guard = lock(&op);
        let range = self.config.ports;
        let standalone = manifest.standalone;
        self.allocate(
            Record {
                instance_id: id.clone(),
                state: State::Allocated,
                port: None,
                application: manifest.application.clone(),
                version: manifest.version.clone(),
                runtime: manifest.runtime.clone(),
                standalone,
                exclusive: manifest.exclusive,
                startup: manifest.startup.clone(),
                environment: manifest.environment.clone(),
                restart: manifest.restart,
                source: req.source.clone(),
                message: "registering".into(),
                exit_key: None,
                supervisor: None,
                managed: false,
                stop_timeout: None,
                startup_timeout: Some(startup_timeout),
                stop_requested: false,
                running_since: None,
                backoff: Backoff::default(),
                desired: Some(Desired::Stopped),
                user: manifest.user.clone(),
                limits: manifest.limits,
                health_check: manifest.health_check.clone(),
                app: None,
                restarts: 0,
                last_exit: None,
                log_max_size: manifest.log_max_size,
                log_keep: manifest.log_keep,
            },
            |held| {
                if standalone {
                    return Ok(None);
                }
                ports::allocate(range, held).map(Some).ok_or_else(|| {
                    Error::refused(
                        Refusal::Conflict,
                        format!("no free port left in the instance port range {range}"),
                    )
                })
            },
        )?;

        let dest = self.layout.instance(&id);
        let copied = source.copy_into(&dest);
        let result = copied.and_then(|()| {
            self.update_any(&id, |rec| {
                rec.state = State::Registered;
                rec.message = "registered".into();
                Ok(rec.view())
            })?
            .ok_or_else(|| Error::refused(Refusal::NotFound, format!("instance {id} vanished")))
        });
        if result.is_err() {
            let _ = fs::remove_dir_all(&dest);
            self.forget_allocated(&id);
        }
        result
    }
}

impl Node {
    /// Checks a runtime as register does: the runtime exists, the version
    /// resolves (with the instance's parameters: an `rbenv_path` or
    /// `nvm_path` has versions of its own that the node default may
    /// lack), the parameters are valid; returns the parsed
    /// `startup_timeout`.
    ///
    /// # Errors
    ///
    /// `Unprocessable`, naming what is wrong.
    pub(super) fn check_runtime(&self, runtime: &RuntimeSpec, standalone: bool) -> Result<Seconds> {
        let unprocessable = |e: Error| Error::refused(Refusal::Unprocessable, e.to_string());
        let rt = self.registry.get(&runtime.name).map_err(unprocessable)?;
        rt.resolve_version(&runtime.version, &runtime.parameters)
            .map_err(unprocessable)?;
        rt.validate(&runtime.parameters, standalone).map_err(|e| {
            Error::refused(
                Refusal::Unprocessable,
                format!("runtime {}: {e}", runtime.name),
            )
        })?;
        record::startup_timeout(&runtime.parameters).map_err(unprocessable)
    }
}

/// An id for an instance registered without one: the application name
/// (letters, digits and `-` only) and 8 random hex digits.
fn generate_id(app: &str) -> Result<InstanceId> {
    let mut stem: String = app
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(protocol::INSTANCE_ID_MAX - 9)
        .collect();
    stem = stem.trim_matches('-').to_string();
    if stem.is_empty() {
        stem = "instance".into();
    }
    // Letters, digits and `-` within the length: always a valid id.
    format!("{stem}-{}", random_hex(4)?)
        .parse()
        .map_err(|e: protocol::InvalidId| Error::invalid(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_valid() {
        let id = generate_id("My App/2").unwrap();
        assert!(id.len() <= protocol::INSTANCE_ID_MAX, "{id}");
        assert!(id.starts_with("My-App-2-"));
        assert!(generate_id("..").is_ok());
    }
}
