//! Stop and deregister.
//!
//! A stop ends the instance's supervisor (SIGTERM, which stops the
//! application's group, then SIGKILL after its stop timeout and a margin)
//! or asks its runtime to stop it, and records `STOPPED`; an operator's
//! stop is never restarted. With a controller (`--pacemaker`), a stop
//! first waits, at most [`CONTROLLER_WAIT`], for the controller to answer
//! the reports of every change before it: in a replacement it has then
//! heard the new instance `RUNNING` (and switched its routes) before the
//! old one is signalled. Deregister removes the instance's directory,
//! its files under `supervisor/` and `logs/`, and its record.

use std::fs;
use std::time::{Duration, Instant};

use super::{lock, Node};
use crate::error::{Error, Refusal, Result};
use crate::heart::pacemaker::Flushed;
use crate::heart::record::Record;
use crate::protocol::{self, Desired, InstanceId, InstanceView, State};

/// How long deregister gives a supervisor that somehow outlived its
/// instance's stop.
const DEREGISTER_STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a stop waits for the controller to answer the reports
/// queued before it.
const CONTROLLER_WAIT: Duration = Duration::from_secs(5);

impl Node {
    /// Stops instance `id` → `STOPPED`.
    ///
    /// # Errors
    ///
    /// `NotFound` unknown; `Conflict` when it is not running
    /// (`REGISTERED`, `STOPPED`); `Failed` when it cannot be stopped (then
    /// `ERROR`).
    pub(crate) fn stop(&self, id: &InstanceId) -> Result<InstanceView> {
        let op = self.op_lock(id);
        let _guard = lock(&op);
        self.stop_locked(id)
    }

    /// [`Node::stop`], with the operation lock of `id` held by the caller.
    pub(super) fn stop_locked(&self, id: &InstanceId) -> Result<InstanceView> {
        let rec = self.update(id, |rec| {
            let restart_pending = rec.backoff.next_restart.is_some();
            if matches!(rec.state, State::Registered | State::Stopped) && !restart_pending {
                return Err(Error::refused(
                    Refusal::Conflict,
                    format!("cannot stop {id}: it is {}", rec.state.as_str()),
                ));
            }
            // A stop while a restart waits for its backoff cancels it.
            rec.stop_requested = true;
            rec.backoff.next_restart = None;
            rec.desired = Some(Desired::Stopped);
            Ok(rec.clone())
        })?;
        self.tell_controller_before_stop(id);
        let mut failure = None;
        if rec.managed {
            if let Err(e) = self.managed_stop(&rec) {
                failure = Some(e.to_string());
            }
        } else if let Some(identity) = self.supervisor_of(&rec) {
            let stop_timeout = rec
                .stop_timeout
                .unwrap_or(protocol::DEFAULT_STOP_TIMEOUT)
                .duration();
            if !self.terminate(&identity, &self.layout.control(id), stop_timeout) {
                failure = Some(format!("supervisor {} would not stop", identity.pid));
            }
        }
        if failure.is_none() {
            // After the supervisor's grace: whatever of it is left goes.
            self.isolation.release(id);
        }
        let view = self.update(id, |rec| {
            match &failure {
                None => {
                    // An exit report may have come in while it stopped.
                    rec.message = if rec.exit_key.is_none() && rec.message.starts_with("exited") {
                        format!("stopped ({})", rec.message)
                    } else {
                        "stopped".into()
                    };
                    rec.state = State::Stopped;
                    rec.exit_key = None;
                    rec.supervisor = None;
                    rec.running_since = None;
                }
                Some(message) => {
                    rec.state = State::Error;
                    rec.message.clone_from(message);
                }
            }
            Ok(rec.view())
        })?;
        match failure {
            None => Ok(view),
            Some(message) => Err(Error::Refused(Refusal::Failed {
                message,
                instance: Some(Box::new(view)),
            })),
        }
    }

    /// Waits for the controller, if any, to answer every report queued so
    /// far (see [`Reporter::flush`](crate::heart::pacemaker::Reporter::flush)).
    fn tell_controller_before_stop(&self, id: &InstanceId) {
        let Some(reporter) = &self.reporter else {
            return;
        };
        let began = Instant::now();
        match reporter.flush(CONTROLLER_WAIT) {
            Flushed::Answered | Flushed::Unreachable => {}
            Flushed::TimedOut => self.events.warn(format_args!(
                "{id}: the controller did not answer the last report within {:?}; stopping \
                 anyway",
                began.elapsed()
            )),
        }
    }

    /// Asks the runtime that manages `rec` to stop it.
    pub(super) fn managed_stop(&self, rec: &Record) -> Result<String> {
        let rt = self.registry.get(&rec.runtime.name)?;
        rt.stop(&self.ctx, &self.plugin_instance(rec))
    }

    /// Deregisters instance `id`: removes its directory, files and port.
    ///
    /// # Errors
    ///
    /// `NotFound` unknown; `Conflict` while `STARTING` or `RUNNING`; an
    /// I/O error when its directory cannot be removed.
    pub(crate) fn deregister(&self, id: &InstanceId) -> Result<InstanceView> {
        let op = self.op_lock(id);
        let _guard = lock(&op);
        let rec = self.record(id)?;
        {
            if matches!(rec.state, State::Starting | State::Running) {
                return Err(Error::refused(
                    Refusal::Conflict,
                    format!(
                        "cannot deregister {id}: it is {}; stop it first",
                        rec.state.as_str()
                    ),
                ));
            }
        }
        if let Some(identity) = self.supervisor_of(&rec) {
            // ERROR or SUSPENDED with a supervisor that somehow lives on.
            self.terminate(&identity, &self.layout.control(id), DEREGISTER_STOP_TIMEOUT);
        }
        self.isolation.release(id);
        let dir = self.layout.instance(id);
        match fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(Error::io("remove instance directory", &dir, e))
            }
            _ => {}
        }
        for path in self.layout.instance_files(id) {
            let _ = crate::fsutil::remove_if_exists(&path);
        }
        // The log's rotated files (`ID.log.1` ..) too.
        let _ = crate::logfile::remove_all(&self.layout.log(id));
        let _ = crate::logfile::remove_all(&self.layout.access_log(id));
        self.remove(id)?;
        let mut view = rec.view();
        view.state = State::Deregistered;
        view.message = "deregistered".into();
        Ok(view)
    }
}
