//! Changing a registered instance without registering it again:
//! `PATCH /instances/ID` (environment, runtime version and parameters,
//! restart policy, startup commands, user, limits, health check, log
//! limits), and the redeploy in place,
//! `PUT /instances/ID/source` (a new copy of the source, and optionally a
//! new manifest, then a restart on the same port).
//!
//! A change is checked as register checks it (the version resolves, the
//! parameters are valid) on a copy of the record, under the instance's
//! operation lock, and only then written. It applies at the next start:
//! a running instance keeps what it was started with until restarted.
//! The instance log and the port are never touched.

use std::fs;

use super::{lock, Node};
use crate::error::{Error, Refusal, Result};
use crate::heart::record::Record;
use crate::protocol::{InstanceId, InstanceView, Parameters, SourceRequest, UpdateRequest};

/// Applies `req` to `rec` (nothing is checked yet).
fn apply(rec: &mut Record, req: &UpdateRequest) {
    if let Some(environment) = &req.environment {
        for (name, value) in environment {
            match value {
                Some(value) => {
                    rec.environment.insert(name.clone(), value.clone());
                }
                None => {
                    rec.environment.remove(name);
                }
            }
        }
    }
    if let Some(runtime) = &req.runtime {
        if let Some(version) = &runtime.version {
            rec.runtime.version.clone_from(version);
        }
        if let Some(parameters) = &runtime.parameters {
            merge(&mut rec.runtime.parameters, parameters);
        }
    }
    if let Some(restart) = req.restart {
        rec.restart = restart;
    }
    if let Some(startup) = &req.startup {
        rec.startup.clone_from(startup);
    }
    if let Some(check) = &req.health_check {
        rec.health_check = Some(check.clone());
    }
    if let Some(user) = &req.user {
        rec.user = Some(user.clone());
    }
    if let Some(limits) = req.limits {
        rec.limits = limits;
    }
    if let Some(size) = req.log_max_size {
        rec.log_max_size = Some(size);
    }
    if let Some(keep) = req.log_keep {
        rec.log_keep = Some(keep);
    }
}

/// Sets each parameter of `changes` in `parameters`; a `null` removes it.
fn merge(parameters: &mut Parameters, changes: &Parameters) {
    for (name, value) in changes {
        if value.is_null() {
            parameters.remove(name);
        } else {
            parameters.insert(name.clone(), value.clone());
        }
    }
}

/// An environment variable name the supervisor would refuse.
fn bad_variable(name: &str, value: Option<&String>) -> bool {
    name.is_empty() || name.contains(['=', '\0']) || value.is_some_and(|v| v.contains('\0'))
}

impl Node {
    /// `PATCH /instances/ID`: changes what is given of `id`, checked as at
    /// register, applied at its next start; answers the instance.
    ///
    /// # Errors
    ///
    /// `BadRequest` for a malformed body, an unknown field or a bad
    /// variable name; `NotFound`; `Unprocessable` when the runtime
    /// version does not resolve or the parameters are invalid.
    pub(crate) fn patch(&self, id: &InstanceId, body: &[u8]) -> Result<InstanceView> {
        let req: UpdateRequest = serde_json::from_slice(body).map_err(|e| {
            Error::refused(Refusal::BadRequest, format!("invalid update request: {e}"))
        })?;
        if let Some((name, _)) = req
            .environment
            .iter()
            .flatten()
            .find(|(name, value)| bad_variable(name, value.as_ref()))
        {
            return Err(Error::refused(
                Refusal::BadRequest,
                format!("environment variable {name:?} has a bad name or value"),
            ));
        }
        let op = self.op_lock(id);
        let _guard = lock(&op);
        let mut changed = Record::clone(&*self.record(id)?);
        apply(&mut changed, &req);
        let startup_timeout = self.check_runtime(&changed.runtime, changed.standalone)?;
        self.isolation
            .check_register(changed.user.as_deref(), &changed.limits)?;
        self.update(id, |rec| {
            rec.environment = changed.environment;
            rec.runtime = changed.runtime;
            rec.restart = changed.restart;
            rec.startup = changed.startup;
            rec.startup_timeout = Some(startup_timeout);
            rec.health_check = changed.health_check;
            rec.user = changed.user;
            rec.limits = changed.limits;
            rec.log_max_size = changed.log_max_size;
            rec.log_keep = changed.log_keep;
            Ok(rec.view())
        })
    }

    /// `PUT /instances/ID/source`: copies the new source beside the
    /// instance's directory (`instances/ID.new`), stops the instance if
    /// it runs, swaps the directories, takes the new manifest if one is
    /// given, and starts it on the same port; answers like a start.
    ///
    /// # Errors
    ///
    /// `BadRequest` for a malformed body; `NotFound`; `Unprocessable` for
    /// a missing or uncopyable source, or a manifest that is invalid or
    /// names another application or changes `standalone`; what the stop
    /// or the start fails with.
    pub(crate) fn replace_source(&self, id: &InstanceId, body: &[u8]) -> Result<InstanceView> {
        let req: SourceRequest = serde_json::from_slice(body).map_err(|e| {
            Error::refused(Refusal::BadRequest, format!("invalid source request: {e}"))
        })?;
        let source = self.resolve_source(&req.source, req.source_sha256.as_deref())?;
        let op = self.op_lock(id);
        let _guard = lock(&op);
        let rec = self.record(id)?;
        let unprocessable = |message: String| Error::refused(Refusal::Unprocessable, message);
        let startup_timeout = match &req.manifest {
            Some(manifest) => {
                if manifest.application.name != rec.application.name {
                    return Err(unprocessable(format!(
                        "{id} belongs to application {:?}, not {:?}",
                        rec.application.name, manifest.application.name
                    )));
                }
                if manifest.standalone != rec.standalone {
                    return Err(unprocessable(format!(
                        "cannot change standalone of {id}: register a new instance"
                    )));
                }
                Some(self.check_runtime(&manifest.runtime, manifest.standalone)?)
            }
            None => None,
        };

        let dir = self.layout.instance(id);
        let fresh = dir.with_extension("new");
        let old = dir.with_extension("old");
        let copied = source.copy_into(&fresh);
        source.dispose(copied.is_ok());
        copied?;
        if !matches!(
            rec.state,
            crate::protocol::State::Registered | crate::protocol::State::Stopped
        ) {
            if let Err(e) = self.stop_locked(id) {
                let _ = fs::remove_dir_all(&fresh);
                return Err(e);
            }
        }
        let _ = fs::remove_dir_all(&old);
        fs::rename(&dir, &old).map_err(|e| Error::io("move aside", &dir, e))?;
        if let Err(e) = fs::rename(&fresh, &dir) {
            let _ = fs::rename(&old, &dir);
            return Err(Error::io("move into place", &fresh, e));
        }
        let _ = fs::remove_dir_all(&old);
        self.update(id, |rec| {
            rec.source.clone_from(&req.source);
            if let (Some(manifest), Some(timeout)) = (&req.manifest, startup_timeout) {
                rec.version.clone_from(&manifest.version);
                rec.runtime = manifest.runtime.clone();
                rec.exclusive = manifest.exclusive;
                rec.startup.clone_from(&manifest.startup);
                rec.environment.clone_from(&manifest.environment);
                rec.restart = manifest.restart;
                rec.health_check.clone_from(&manifest.health_check);
                rec.log_max_size = manifest.log_max_size;
                rec.log_keep = manifest.log_keep;
                rec.startup_timeout = Some(timeout);
            }
            Ok(())
        })?;
        self.start_locked(id, super::Origin::Api)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_record;
    use super::*;
    use crate::protocol::Restart;

    #[test]
    fn a_patch_sets_and_removes_keys_and_keeps_the_rest() {
        let mut rec = test_record(Restart::Never);
        rec.environment.insert("KEEP".into(), "1".into());
        rec.environment.insert("GONE".into(), "1".into());
        rec.runtime
            .parameters
            .insert("launch_command".into(), "x".into());
        let req: UpdateRequest = serde_json::from_str(
            r#"{"environment": {"NEW": "2", "GONE": null},
                "runtime": {"parameters": {"stop_timeout": 3}},
                "restart": "always", "log_keep": 2}"#,
        )
        .unwrap();
        apply(&mut rec, &req);
        assert_eq!(rec.log_keep.map(crate::protocol::LogKeep::files), Some(2));
        assert_eq!(rec.log_max_size, None);
        assert_eq!(rec.environment.get("KEEP").map(String::as_str), Some("1"));
        assert_eq!(rec.environment.get("NEW").map(String::as_str), Some("2"));
        assert!(!rec.environment.contains_key("GONE"));
        assert_eq!(rec.runtime.parameters.len(), 2);
        assert_eq!(rec.restart, Restart::Always);
        assert_eq!(rec.runtime.version, "1");
        assert!(serde_json::from_str::<UpdateRequest>(r#"{"runtime": {"name": "x"}}"#).is_err());
        assert!(serde_json::from_str::<UpdateRequest>(r#"{"bogus": 1}"#).is_err());
        assert!(bad_variable("A=B", None));
        assert!(!bad_variable("A", Some(&"b".to_string())));
    }
}
