//! The restart policy: which exits are restarted (`never`, `on-failure`,
//! `always`; never after an operator's stop), the backoff before each
//! restart (1, 2, 4 … 60 s, reset once an instance stayed up 60 s; kept in
//! the catalog, so it survives a heart restart), and the `restart-ID`
//! threads that start an instance once its restart is due.
//!
//! The checker finds the restarts that are due ([`Node::restart_due`]);
//! each runs in a thread of its own, so a slow start never delays the
//! check. At most one restart thread runs per instance; shutdown joins
//! them all ([`Node::join_restarts`]).

use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use super::{lock, now, Node, Origin, PROG};
use crate::cli;
use crate::error::{Error, Refusal};
use crate::heart::catalog::Record;
use crate::protocol::{Restart, State};

/// Longest restart backoff, in seconds.
const BACKOFF_MAX: f64 = 60.0;

/// An instance up this long has its backoff reset, in seconds.
const BACKOFF_RESET: f64 = 60.0;

/// Seconds before restart number `attempts` (0-based): 1, 2, 4, ... 60.
fn backoff_delay(attempts: u32) -> f64 {
    2f64.powi(attempts.min(16) as i32).min(BACKOFF_MAX)
}

/// Schedules the next restart of `rec` after its backoff delay, and says
/// so in its message.
pub(super) fn schedule(rec: &mut Record, at: f64) {
    let delay = backoff_delay(rec.backoff.attempts);
    rec.backoff.attempts = rec.backoff.attempts.saturating_add(1);
    rec.backoff.next_restart = Some(at + delay);
    rec.message = format!("{}; restart in {delay} s", rec.message);
}

/// The policy after `rec` ended on its own at `at` (`failed`: with a code
/// other than 0, or none known), having been up since `up_since`: schedules
/// a restart when the policy asks for one. True when it did.
pub(super) fn after_exit(rec: &mut Record, failed: bool, up_since: Option<f64>, at: f64) -> bool {
    if rec.stop_requested {
        return false;
    }
    let restart = match rec.restart {
        Restart::Never => false,
        Restart::OnFailure => failed,
        Restart::Always => true,
    };
    if !restart {
        return false;
    }
    if up_since.is_some_and(|t| at - t >= BACKOFF_RESET) {
        rec.backoff.attempts = 0;
    }
    schedule(rec, at);
    true
}

impl Node {
    /// Starts every instance whose restart is due, each in its own thread.
    /// Returns the time until the next restart is due, if any.
    pub(super) fn restart_due(self: &Arc<Self>) -> Option<Duration> {
        let at = now();
        let mut due = Vec::new();
        let mut next: Option<f64> = None;
        self.peek(|cat| {
            for rec in cat.instances.values() {
                if !matches!(rec.state, State::Error | State::Stopped) || rec.stop_requested {
                    continue;
                }
                if let Some(t) = rec.backoff.next_restart {
                    if t <= at {
                        due.push(rec.instance_id.clone());
                    } else {
                        next = Some(next.map_or(t, |n: f64| n.min(t)));
                    }
                }
            }
        });
        for id in due {
            if !lock(&self.restarting).insert(id.clone()) {
                continue;
            }
            let node = Arc::clone(self);
            let thread_id = id.clone();
            let spawned = thread::Builder::new()
                .name(format!("restart-{id}"))
                .spawn(move || {
                    let id = thread_id;
                    match node.start(&id, Origin::Restart) {
                        // Stopped, started or removed meanwhile.
                        Ok(_)
                        | Err(Error::Refused(Refusal::NotFound(_) | Refusal::Conflict(_))) => {}
                        Err(e) => cli::warn(PROG, format!("restart of {id} failed: {e}")),
                    }
                    lock(&node.restarting).remove(&id);
                });
            match spawned {
                Ok(handle) => {
                    let mut threads = lock(&self.restart_threads);
                    threads.retain(|h| !h.is_finished());
                    threads.push(handle);
                }
                Err(e) => {
                    lock(&self.restarting).remove(&id);
                    cli::warn(PROG, format!("unable to start a restart thread: {e}"));
                }
            }
        }
        next.map(|t| Duration::from_secs_f64((t - at).max(0.0)))
    }

    /// Joins every restart thread (at shutdown, once the checker ended).
    pub(super) fn join_restarts(&self) {
        let threads: Vec<JoinHandle<()>> = std::mem::take(&mut *lock(&self.restart_threads));
        for handle in threads {
            let _ = handle.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_record;
    use super::*;

    #[test]
    fn backoff_doubles_to_a_minute() {
        let delays: Vec<f64> = (0..8).map(backoff_delay).collect();
        assert_eq!(delays, [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0]);
        assert_eq!(backoff_delay(u32::MAX), 60.0);
    }

    #[test]
    fn an_operators_stop_is_never_restarted() {
        let mut rec = test_record(Restart::Always);
        rec.stop_requested = true;
        assert!(!after_exit(&mut rec, true, Some(0.0), 10.0));
        assert_eq!(rec.backoff.next_restart, None);
        rec.stop_requested = false;
        assert!(after_exit(&mut rec, true, Some(0.0), 10.0));
        assert_eq!(rec.backoff.next_restart, Some(11.0));
        assert!(rec.message.ends_with("; restart in 1 s"), "{}", rec.message);
    }
}
