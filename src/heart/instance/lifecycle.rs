//! The operator's verbs beyond start and stop: the idempotent start and
//! stop of the API (an instance already `RUNNING`, or already stopped, is
//! answered as it is, marked `already`), restart (stop, then start, on the
//! same port), and signals forwarded to an application through its
//! supervisor.
//!
//! A signal never goes to an unverified pid: the supervisor of the
//! instance's current launch is looked up in `/proc` (pid, start time and
//! command line naming its control file, `supervise::is_supervising`) and
//! asked to forward the signal (`supervise::forward`); it alone signals
//! the application's process group, and only while it has not reaped it.

use super::{lock, Node, Origin};
use crate::error::{Error, Refusal, Result};
use crate::protocol::{Desired, ForwardSignal, InstanceId, InstanceView, State};
use crate::supervise;

/// What an idempotent start or stop did.
#[derive(Debug)]
pub(crate) struct Done {
    /// The instance as it is now.
    pub view: InstanceView,
    /// True when it already was as asked, and nothing was done.
    pub already: bool,
}

impl Node {
    /// `POST /instances/ID/start`: starts `id`, or answers it as it is
    /// when it is `RUNNING` already (its desired state becomes `running`
    /// either way).
    ///
    /// # Errors
    ///
    /// As [`Node::start`].
    pub(crate) fn ensure_running(&self, id: &InstanceId) -> Result<Done> {
        let op = self.op_lock(id);
        let _guard = lock(&op);
        if self.record(id)?.state == State::Running {
            let view = self.update(id, |rec| {
                rec.desired = Some(Desired::Running);
                Ok(rec.view())
            })?;
            return Ok(Done {
                view,
                already: true,
            });
        }
        let view = self.start_locked(id, Origin::Api)?;
        Ok(Done {
            view,
            already: false,
        })
    }

    /// `POST /instances/ID/stop`: stops `id`, or answers it as it is when
    /// it is `STOPPED` or `REGISTERED` already (its desired state becomes
    /// `stopped` either way, so neither a reboot nor `start --all` starts
    /// it).
    ///
    /// # Errors
    ///
    /// As [`Node::stop`].
    pub(crate) fn ensure_stopped(&self, id: &InstanceId) -> Result<Done> {
        let op = self.op_lock(id);
        let _guard = lock(&op);
        if matches!(self.record(id)?.state, State::Stopped | State::Registered) {
            let view = self.update(id, |rec| {
                rec.desired = Some(Desired::Stopped);
                rec.backoff.next_restart = None;
                Ok(rec.view())
            })?;
            return Ok(Done {
                view,
                already: true,
            });
        }
        let view = self.stop_locked(id)?;
        Ok(Done {
            view,
            already: false,
        })
    }

    /// `POST /instances/ID/restart`: stops `id` when it runs (or is
    /// `SUSPENDED` or `ERROR`), then starts it on the same port, all under
    /// its operation lock; answers like a start.
    ///
    /// # Errors
    ///
    /// `NotFound`; `Conflict` while `STARTING` cannot happen (the lock);
    /// what the stop or the start fails with.
    pub(crate) fn restart(&self, id: &InstanceId) -> Result<InstanceView> {
        let op = self.op_lock(id);
        let _guard = lock(&op);
        self.restart_locked(id)
    }

    /// [`Node::restart`], with the operation lock of `id` held.
    pub(super) fn restart_locked(&self, id: &InstanceId) -> Result<InstanceView> {
        let state = self.record(id)?.state;
        if !matches!(state, State::Registered | State::Stopped) {
            self.stop_locked(id)?;
        }
        self.start_locked(id, Origin::Api)
    }

    /// `POST /instances/ID/signal`: has the supervisor of `id` forward
    /// `signal` to the application's process group. The signal is not a
    /// stop request: an exit that follows is handled like any exit the
    /// application makes on its own (restart policy included).
    ///
    /// # Errors
    ///
    /// `NotFound`; `Conflict` when it is not `RUNNING` under a supervisor
    /// that is still alive, or is run by a managed daemon (Apache), whose
    /// processes serve every instance of that runtime; `Failed` when the
    /// request cannot be delivered.
    pub(crate) fn signal(&self, id: &InstanceId, signal: ForwardSignal) -> Result<InstanceView> {
        let rec = self.record(id)?;
        if rec.managed {
            return Err(Error::refused(
                Refusal::Conflict,
                format!(
                    "cannot signal {id}: it is served by the managed {} daemon, shared with other \
                     instances; use restart",
                    rec.runtime.name
                ),
            ));
        }
        let conflict = || {
            Error::refused(
                Refusal::Conflict,
                format!(
                    "cannot signal {id}: it is {} without a live supervisor",
                    rec.state.as_str()
                ),
            )
        };
        if !matches!(rec.state, State::Running | State::Starting) {
            return Err(conflict());
        }
        let Some(identity) = rec.supervisor else {
            return Err(conflict());
        };
        match supervise::forward(&identity, &self.layout.control(id), signal) {
            Ok(true) => Ok(rec.view()),
            Ok(false) => Err(conflict()),
            Err(e) => Err(Error::Refused(Refusal::Failed {
                message: format!("cannot signal {id}: {e}"),
                instance: Some(Box::new(rec.view())),
            })),
        }
    }
}
