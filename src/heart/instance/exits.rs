//! The end of an instance's process: the supervisor's exit report, the
//! `.exited` file it leaves when it cannot report, and [`apply_exit`],
//! the one transition both lead to.
//!
//! A report counts only with the exit key of the instance's current
//! launch; the key is spent by the first report or file applied, so an
//! exit is applied exactly once. Exit reports take no instance lock (see
//! the module above).

use std::fs;

use super::restart;
use super::{now, Node, PROG};
use crate::cli;
use crate::error::{Error, Refusal, Result};
use crate::heart::record::{Exit, Record};
use crate::protocol::exited::{self, Recorded};
use crate::protocol::{InstanceId, State};
use crate::secret::secret_eq;

/// The message of an instance that exited with `code`.
fn exit_reason(code: i32) -> String {
    format!("exited with code {code}")
}

/// Applies the end of an instance's process: code 0 → `STOPPED`, anything
/// else (or an unknown code) → `ERROR`, then the restart policy. The exit
/// key is spent. Returns true when a restart was scheduled.
pub(super) fn apply_exit(rec: &mut Record, code: Option<i32>, reason: String, at: f64) -> bool {
    let failed = code != Some(0);
    rec.state = if failed { State::Error } else { State::Stopped };
    rec.last_exit = Some(Exit {
        code,
        at,
        reason: reason.clone(),
    });
    rec.message = reason;
    rec.exit_key = None;
    rec.supervisor = None;
    let up_since = rec.running_since.take();
    restart::after_exit(rec, failed, up_since, at)
}

impl Node {
    /// The message of an exit of `id` with `code`: "exited with code N",
    /// after what the kernel's OOM killer did, if it killed a process of
    /// the instance's control group since its launch.
    fn exit_message(&self, id: &InstanceId, code: i32) -> String {
        match self.isolation.oom_message(id) {
            Some(oom) => format!("{oom}; {}", exit_reason(code)),
            None => exit_reason(code),
        }
    }

    /// The supervisor's exit report: instance `id` ended with `code`.
    ///
    /// # Errors
    ///
    /// `NotFound` unknown instance; `Forbidden` a stale or spent key.
    pub(crate) fn exit_report(&self, id: &InstanceId, key: &str, code: i32) -> Result<State> {
        let at = now();
        let reason = self.exit_message(id, code);
        let outcome = self.update(id, |rec| {
            let current = rec
                .exit_key
                .as_deref()
                .is_some_and(|k| secret_eq(k.as_bytes(), key.as_bytes()));
            if !current {
                return Err(Error::refused(
                    Refusal::Forbidden,
                    format!("exit key for {id} is stale or spent"),
                ));
            }
            rec.exit_key = None;
            let mut restart = false;
            match rec.state {
                State::Starting => {
                    rec.state = State::Error;
                    rec.message = reason;
                    rec.last_exit = Some(Exit {
                        code: Some(code),
                        at,
                        reason: rec.message.clone(),
                    });
                }
                State::Running | State::Suspended => {
                    restart = apply_exit(rec, Some(code), reason, at);
                }
                _ => {}
            }
            Ok((rec.state, restart))
        });
        self.stats.exit_report(if outcome.is_ok() {
            "accepted"
        } else {
            "refused"
        });
        let (state, restart) = outcome?;
        if restart {
            self.kick();
        }
        Ok(state)
    }

    /// Reads `supervisor/ID.exited`: `None` when absent or unreadable; a
    /// corrupt file is renamed to `.exited.corrupt` with a warning.
    fn read_exited(&self, id: &InstanceId) -> Option<i32> {
        let path = self.layout.exited(id);
        match exited::read(&path) {
            Ok(Recorded::Code(code)) => Some(code),
            Ok(Recorded::Absent) => None,
            Err(e) => {
                cli::warn(PROG, e);
                None
            }
            Ok(Recorded::Corrupt(_)) => {
                let aside = path.with_extension("exited.corrupt");
                cli::warn(
                    PROG,
                    format!(
                        "corrupt exit file {} set aside as {}",
                        path.display(),
                        aside.display()
                    ),
                );
                let _ = fs::rename(&path, &aside);
                None
            }
        }
    }

    /// Applies the `.exited` file of `id` if there is one, exactly once
    /// (the file is removed after the catalog change). Call with the store
    /// lock *not* held; `key` is the exit key the caller saw. True when a
    /// file was applied.
    pub(super) fn take_exited(&self, id: &InstanceId, key: Option<&str>) -> bool {
        let Some(code) = self.read_exited(id) else {
            return false;
        };
        let at = now();
        let reason = self.exit_message(id, code);
        let applied = self.update_any(id, |rec| {
            let stale = rec.exit_key.as_deref() != key;
            if stale
                || !matches!(
                    rec.state,
                    State::Running | State::Suspended | State::Starting
                )
            {
                return Ok(false);
            }
            Ok(apply_exit(rec, Some(code), reason, at))
        });
        match applied {
            Ok(Some(restart)) => {
                let _ = crate::fsutil::remove_if_exists(&self.layout.exited(id));
                if restart {
                    self.kick();
                }
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_record;
    use super::*;
    use crate::protocol::Restart;

    #[test]
    fn exit_codes_pick_the_state_and_the_policy_the_restart() {
        let mut rec = test_record(Restart::Never);
        assert!(!apply_exit(&mut rec, Some(0), "x".into(), 110.0));
        assert_eq!(rec.state, State::Stopped);
        assert_eq!(rec.exit_key, None);

        let mut rec = test_record(Restart::OnFailure);
        assert!(!apply_exit(&mut rec, Some(0), "x".into(), 110.0));
        let mut rec = test_record(Restart::OnFailure);
        assert!(apply_exit(&mut rec, Some(3), "x".into(), 110.0));
        assert_eq!(rec.state, State::Error);
        assert_eq!(rec.backoff.next_restart, Some(111.0));
        assert_eq!(rec.backoff.attempts, 1);

        let mut rec = test_record(Restart::Always);
        rec.backoff.attempts = 5;
        assert!(apply_exit(&mut rec, Some(0), "x".into(), 200.0));
        assert_eq!(rec.backoff.attempts, 1, "reset after 60 s up");

        let mut rec = test_record(Restart::Always);
        rec.stop_requested = true;
        assert!(!apply_exit(&mut rec, Some(0), "x".into(), 200.0));
    }
}
