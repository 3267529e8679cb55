//! What the heart finds out on its own: the reconcile at start-up (which
//! instances survived the heart's absence) and the `checker` thread (a
//! periodic check of every running instance, and the restarts when due).
//!
//! Neither waits on an application: a supervisor is looked up in `/proc`
//! once ([`supervise::is_supervising`]), a managed instance is asked of its
//! runtime once, and an instance busy with an operation is skipped until
//! the next pass.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::exits::apply_exit;
use super::{lock, now, Node};
use crate::cli;
use crate::error::Result;
use crate::heart::record::Record;
use crate::heart::PROG;
use crate::protocol::{InstanceId, State};

impl Node {
    /// After a heart (re)start: each `STARTING` or `RUNNING` instance whose
    /// supervisor is alive is `RUNNING`; one with an `.exited` file takes
    /// its code; any other is `SUSPENDED`. `.exited` files of `SUSPENDED`
    /// instances are applied too. No waits: one `/proc` look per instance.
    /// Those found gone that should be running are queued to be brought
    /// back once the heart listens (`resume`).
    ///
    /// # Errors
    ///
    /// The catalog cannot be written.
    pub(crate) fn reconcile(&self) -> Result<()> {
        let candidates = self.records_in(&[State::Starting, State::Running, State::Suspended]);
        let mut outcome: Vec<(InstanceId, State, String)> = Vec::new();
        let mut resume: Vec<InstanceId> = Vec::new();
        for rec in &candidates {
            let id = &rec.instance_id;
            if rec.state != State::Suspended {
                if rec.managed {
                    match self.managed_status(rec) {
                        Ok(message) => outcome.push((id.clone(), State::Running, message)),
                        Err(e) => outcome.push((
                            id.clone(),
                            State::Suspended,
                            format!("not running after the heart restarted: {e}"),
                        )),
                    }
                    if self.found_gone(rec, &mut outcome) {
                        resume.push(id.clone());
                    }
                    continue;
                }
                if let Some(identity) = self.supervisor_of(rec) {
                    let message = if rec.state == State::Starting {
                        "running (its start was interrupted by a heart restart)".into()
                    } else {
                        rec.message.clone()
                    };
                    if rec.supervisor != Some(identity) {
                        // Launched, but the heart died before it recorded
                        // the supervisor: adopt it.
                        self.update_any(id, |r| {
                            r.supervisor = Some(identity);
                            Ok(())
                        })?;
                    }
                    outcome.push((id.clone(), State::Running, message));
                    continue;
                }
            }
            if self.take_exited(id, rec.exit_key.as_deref()) {
                continue;
            }
            if rec.state != State::Suspended {
                outcome.push((
                    id.clone(),
                    State::Suspended,
                    "its supervisor was gone when the heart restarted".into(),
                ));
            }
            if self.found_gone(rec, &mut outcome) {
                resume.push(id.clone());
            }
        }
        let at = now();
        let running = outcome.iter().filter(|o| o.1 == State::Running).count();
        self.events.info(format_args!(
            "reconciled {} instances: {running} running, {} suspended",
            outcome.len(),
            outcome.len() - running
        ));
        for (id, state, message) in outcome {
            self.update_any(&id, |rec| {
                if matches!(
                    rec.state,
                    State::Starting | State::Running | State::Suspended
                ) {
                    if state == State::Running && rec.state == State::Starting {
                        rec.running_since = Some(at);
                    }
                    rec.state = state;
                    rec.message = message;
                }
                Ok(())
            })?;
        }
        self.queue_resume(resume);
        self.sweep_groups();
        Ok(())
    }

    /// One pass of the periodic check: EXECUTE status of each `RUNNING`
    /// instance, `.exited` files of `RUNNING` and `SUSPENDED` ones.
    /// Instances busy with an operation are skipped until the next pass.
    pub(crate) fn check(&self) {
        self.expire_uploads();
        for rec in self.records_in(&[State::Running, State::Suspended]) {
            if self.is_shutting_down() {
                return;
            }
            let id = &rec.instance_id;
            let op = self.op_lock(id);
            let Ok(_guard) = op.try_lock() else {
                continue;
            };
            if rec.state == State::Suspended {
                self.take_exited(id, rec.exit_key.as_deref());
                continue;
            }
            let failure = if rec.managed {
                let status = self.managed_status(&rec).inspect_err(|_| {
                    // Undo what the managed daemon still holds for it (its
                    // configuration), so that nothing half-served remains
                    // and a restart starts clean.
                    let _ = self.managed_stop(&rec);
                });
                match status {
                    Ok(_) => continue,
                    Err(e) => format!("status check failed: {e}"),
                }
            } else {
                if self.is_supervised(&rec) || self.take_exited(id, rec.exit_key.as_deref()) {
                    continue;
                }
                let gone = "its supervisor is gone without a report";
                match self.isolation.oom_message(id) {
                    Some(oom) => format!("{oom}; {gone}"),
                    None => gone.to_string(),
                }
            };
            let at = now();
            let restart = self.update_any(id, |r| {
                if r.state != State::Running || r.exit_key != rec.exit_key {
                    return Ok(false);
                }
                Ok(apply_exit(r, None, failure, at))
            });
            if let Err(e) = &restart {
                cli::warn(PROG, e);
            }
            if restart.is_ok_and(|r| r == Some(true)) {
                self.kick();
            }
        }
        if !self.is_shutting_down() {
            self.sweep_groups();
        }
    }

    /// The `checker` thread's loop: a check every `check_interval`,
    /// restarts when due, until shutdown. Waits on a condition variable, so
    /// shutdown and newly scheduled restarts wake it at once.
    pub(crate) fn run_checker(self: &Arc<Self>) {
        let interval = self.config.check_interval;
        let mut next_check = Instant::now() + interval;
        loop {
            let until_restart = self.restart_due();
            let now_i = Instant::now();
            if now_i >= next_check {
                self.check();
                next_check = Instant::now() + interval;
                continue;
            }
            let mut timeout = next_check - now_i;
            if let Some(t) = until_restart {
                timeout = timeout.min(t + Duration::from_millis(1));
            }
            let mut kicked = lock(&self.kicked);
            if self.is_shutting_down() {
                return;
            }
            if !*kicked {
                kicked = self
                    .kick
                    .wait_timeout(kicked, timeout)
                    .map(|(g, _)| g)
                    .unwrap_or_else(|e| e.into_inner().0);
            }
            *kicked = false;
            drop(kicked);
            if self.is_shutting_down() {
                return;
            }
        }
    }

    /// The records in one of `states`.
    fn records_in(&self, states: &[State]) -> Vec<Arc<Record>> {
        self.snapshot()
            .into_iter()
            .filter(|r| states.contains(&r.state))
            .collect()
    }

    /// The EXECUTE status of a managed instance, from its runtime.
    fn managed_status(&self, rec: &Record) -> Result<String> {
        let rt = self.registry.get(&rec.runtime.name)?;
        rt.status(&self.ctx, &self.plugin_instance(rec))
    }
}
