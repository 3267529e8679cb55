//! Bringing instances back: those that should be running (desired state
//! `running`) and were found gone when the heart started (after a reboot,
//! or a crash that took their supervisors), and `start --all`.
//!
//! The reconcile marks each one `SUSPENDED` "found gone, being brought
//! back" and queues it ([`Node::queue_resume`]); once the heart listens,
//! the `resume` thread ([`Node::spawn_resume`]) starts them through the
//! normal start path, [`RESUME_PARALLEL`] at a time, in id order. A start
//! that fails leaves its instance `SUSPENDED` "could not be brought back:
//! REASON". The restart policy plays no part: an instance left running is
//! brought back whatever its policy (`never` included), since the
//! operator left it running.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};

use super::{lock, Node, Origin, PROG};
use crate::cli;
use crate::error::{Error, Result};
use crate::heart::record::Record;
use crate::protocol::{ApiErrorOf, Desired, InstanceId, InstanceView, StartAllAnswer, State};

/// How many instances are started at once by a resume or `start --all`.
pub(crate) const RESUME_PARALLEL: usize = 8;

/// The message of an instance found gone that will be brought back.
const FOUND_GONE: &str = "found gone, being brought back";

impl Node {
    /// Part of the reconcile: when `rec` ends it `SUSPENDED` (its outcome
    /// in `outcome`, else its state now) and should be running, its
    /// message says it is being brought back; true when it is to be.
    pub(super) fn found_gone(
        &self,
        rec: &Record,
        outcome: &mut Vec<(InstanceId, State, String)>,
    ) -> bool {
        let id = &rec.instance_id;
        let last = outcome.iter_mut().rev().find(|(o, _, _)| o == id);
        let state = last.as_ref().map_or(rec.state, |(_, state, _)| *state);
        if state != State::Suspended || rec.desired() != Desired::Running {
            return false;
        }
        match last {
            Some((_, _, message)) => *message = FOUND_GONE.into(),
            None => outcome.push((id.clone(), State::Suspended, FOUND_GONE.into())),
        }
        true
    }

    /// Keeps `ids` to be brought back by [`Node::spawn_resume`].
    pub(super) fn queue_resume(&self, mut ids: Vec<InstanceId>) {
        ids.sort();
        ids.dedup();
        *lock(&self.resume_queue) = ids;
    }

    /// Starts the `resume` thread, which brings back what the reconcile
    /// queued; joined by [`Node::shutdown`]. Nothing to do: no thread.
    pub(crate) fn spawn_resume(self: &Arc<Self>) {
        let ids = std::mem::take(&mut *lock(&self.resume_queue));
        if ids.is_empty() {
            return;
        }
        let node = Arc::clone(self);
        let spawned = thread::Builder::new().name("resume".into()).spawn(move || {
            node.start_each(&ids, Origin::Resume);
        });
        match spawned {
            Ok(handle) => *lock(&self.resume_thread) = Some(handle),
            Err(e) => cli::warn(PROG, format!("unable to start the resume thread: {e}")),
        }
    }

    /// Joins the `resume` thread (at shutdown: it starts nothing new once
    /// shutdown began).
    pub(super) fn join_resume(&self) {
        let handle: Option<JoinHandle<()>> = lock(&self.resume_thread).take();
        if let Some(handle) = handle {
            let _ = handle.join();
        }
    }

    /// `POST /instances/start-all`: starts every instance whose desired
    /// state is `running` and that is not `RUNNING` (nor `STARTING`),
    /// [`RESUME_PARALLEL`] at a time, in id order; answers once each is
    /// `RUNNING` or has failed.
    pub(crate) fn start_all(&self) -> StartAllAnswer {
        let ids: Vec<InstanceId> = self
            .snapshot()
            .iter()
            .filter(|r| {
                r.desired() == Desired::Running
                    && !matches!(r.state, State::Running | State::Starting)
            })
            .map(|r| r.instance_id.clone())
            .collect();
        let results = self.start_each(&ids, Origin::Api);
        let mut answer = StartAllAnswer {
            started: Vec::new(),
            failed: Vec::new(),
        };
        for (id, result) in results {
            match result {
                Ok(view) => answer.started.push(view),
                Err(e) => answer.failed.push(ApiErrorOf {
                    instance_id: id,
                    error: e.to_string(),
                }),
            }
        }
        answer
    }

    /// Starts each of `ids` (in order, [`RESUME_PARALLEL`] at a time);
    /// the results in the order of `ids`. Stops taking new ones once
    /// shutdown began.
    fn start_each(
        &self,
        ids: &[InstanceId],
        origin: Origin,
    ) -> Vec<(InstanceId, Result<InstanceView>)> {
        let next = AtomicUsize::new(0);
        let results: Mutex<Vec<Option<Result<InstanceView>>>> =
            Mutex::new((0..ids.len()).map(|_| None).collect());
        thread::scope(|scope| {
            for _ in 0..RESUME_PARALLEL.min(ids.len()) {
                scope.spawn(|| loop {
                    if self.is_shutting_down() {
                        return;
                    }
                    let n = next.fetch_add(1, Ordering::SeqCst);
                    let Some(id) = ids.get(n) else {
                        return;
                    };
                    let result = self.start(id, origin);
                    if origin == Origin::Resume {
                        if let Err(e) = &result {
                            cli::warn(PROG, format!("unable to bring {id} back: {e}"));
                        }
                    }
                    lock(&results)[n] = Some(result);
                });
            }
        });
        let results = results.into_inner().unwrap_or_else(|e| e.into_inner());
        ids.iter()
            .cloned()
            .zip(results)
            .map(|(id, result)| {
                let result = result
                    .unwrap_or_else(|| Err(Error::invalid("not started: the heart is stopping")));
                (id, result)
            })
            .collect()
    }
}
