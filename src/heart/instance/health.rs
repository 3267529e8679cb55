//! Health checks: the probe ([`probe`]: an `http` check needs a 2xx or
//! 3xx answer within its timeout, a `tcp` check a connect), readiness at
//! start ([`Node::wait_ready`]), and the periodic checks of every
//! `RUNNING` instance that has a port.
//!
//! The periodic checks: the `health` thread keeps a queue of the next
//! check of each instance, ordered by when it is due (a binary heap, so
//! one step costs O(log n) with n instances), and hands the checks that
//! are due to a pool of [`CHECKERS`] `health-N` threads; each check is
//! bounded by its timeout, so a slow application holds one checker for
//! that long and never delays the others beyond the pool's width. Which
//! instances are checked is learnt from the records every
//! `check_interval` (and at once when a start ends, [`Node::watch`]): a
//! `RUNNING` instance with a port is checked every `interval` of its
//! `health_check`, or with a TCP connect every `check_interval` without
//! one. Each launch (a new `running_since`) starts with a clean count.
//!
//! After `failures` checks in a row failed, the instance goes to `ERROR`
//! with the last failure as its message (`health check: GET /healthz timed
//! out after 2 s`), its process is stopped (its supervisor terminated, or
//! its runtime asked), and the restart policy applies as for a crash. An
//! instance busy with an operation (start, stop) is not failed; its check
//! comes round again.
//!
//! Health is kept in memory only: after a heart restart every instance is
//! `unknown` until checked.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use super::exits::apply_exit;
use super::{lock, now, Node};
use crate::cli;
use crate::heart::record::Record;
use crate::heart::PROG;
use crate::net;
use crate::protocol::{CheckKind, Health, HealthCheck, HealthStatus, InstanceId, Seconds, State};
use crate::rfc3339::Timestamp;

/// Checker threads: how many checks run at once.
pub(crate) const CHECKERS: usize = 8;

/// At start, an `http` check that answered badly is asked again after
/// this long (or its `interval`, when shorter).
const READY_RETRY: Duration = Duration::from_secs(1);

/// Asks `check` of the application on `port`, within its timeout.
///
/// # Errors
///
/// Why it failed, for the instance's message: "GET /healthz answered
/// 500", "GET /healthz timed out after 2 s", "nothing answers on port P".
pub(crate) fn probe(check: &HealthCheck, port: u16) -> Result<(), String> {
    let timeout = check.timeout.duration();
    match check.kind {
        CheckKind::Tcp => {
            if net::port_answers_within(port, timeout) {
                Ok(())
            } else {
                Err(format!(
                    "nothing answers on port {port} within {} s",
                    timeout.as_secs_f64()
                ))
            }
        }
        CheckKind::Http => match net::http_status(port, &check.path, timeout)? {
            200..=399 => Ok(()),
            status => Err(format!("GET {} answered {status}", check.path)),
        },
    }
}

/// The check of `rec`, or the TCP check at `every` when it has none.
fn check_of(rec: &Record, every: Duration) -> HealthCheck {
    rec.health_check
        .clone()
        .unwrap_or_else(|| HealthCheck::default_tcp(Seconds::from_secs(every.as_secs().max(1))))
}

/// What the checks found about one instance.
#[derive(Debug, Clone)]
struct Watch {
    /// Which queue entries are current: a new launch gets a new one.
    generation: u64,
    /// The launch it watches (`running_since`, as bits).
    launch: u64,
    consecutive: u32,
    status: HealthStatus,
    last_checked: Option<f64>,
    message: String,
    /// Failed checks since the heart started (for `/metrics`).
    failures_total: u64,
}

/// A check that is due at `at`.
type Due = Reverse<(Instant, u64, InstanceId)>;

/// The state of the periodic checks, shared by the `health` thread, its
/// checkers and the views.
#[derive(Debug, Default)]
pub(crate) struct Checks {
    table: Mutex<Table>,
    wake: Condvar,
}

#[derive(Debug, Default)]
struct Table {
    watches: HashMap<InstanceId, Watch>,
    queue: BinaryHeap<Due>,
    next_generation: u64,
    /// Look at the records now (a start ended, or shutdown).
    sync_now: bool,
}

impl Checks {
    /// The health of `id` for its view; `None` when it is not watched.
    pub(crate) fn health(&self, id: &InstanceId) -> Option<Health> {
        let table = lock(&self.table);
        let w = table.watches.get(id)?;
        Some(Health {
            status: w.status,
            last_checked: w.last_checked.map(|t| Timestamp::from_secs(t).to_string()),
            message: w.message.clone(),
        })
    }

    /// Failed checks of `id` since the heart started.
    pub(crate) fn failures_total(&self, id: &InstanceId) -> u64 {
        lock(&self.table)
            .watches
            .get(id)
            .map_or(0, |w| w.failures_total)
    }
}

impl Node {
    /// Has the `health` thread look at the records now (a start ended).
    pub(super) fn watch(&self) {
        lock(&self.checks.table).sync_now = true;
        self.checks.wake.notify_all();
    }

    /// Waits until `rec`'s check passes on `port`, within `timeout`, or
    /// `gone` says the instance ended. An `http` check that gets an answer
    /// outside 2xx and 3xx `failures` times in a row (asked again after
    /// [`READY_RETRY`] or its interval) ends the wait at once.
    pub(super) fn wait_ready(
        &self,
        rec: &Record,
        port: u16,
        timeout: Duration,
        mut gone: impl FnMut() -> bool,
    ) -> Readiness {
        let Some(check) = rec.health_check.clone() else {
            let mut died = false;
            let ready = crate::wait::until_soon(timeout, || {
                if net::port_answers(port) {
                    return true;
                }
                died = gone();
                died
            });
            return match (ready, died) {
                (_, true) => Readiness::Exited,
                (true, false) => Readiness::Ready,
                (false, false) => Readiness::TimedOut(None),
            };
        };
        let retry = READY_RETRY.min(check.interval.duration());
        let mut bad_answers = 0u32;
        let mut last: Option<String> = None;
        let mut next_probe = Instant::now();
        let mut outcome = Readiness::TimedOut(None);
        crate::wait::until_soon(timeout, || {
            if gone() {
                outcome = Readiness::Exited;
                return true;
            }
            if Instant::now() < next_probe || !net::port_answers(port) {
                return false;
            }
            match probe(&check, port) {
                Ok(()) => {
                    outcome = Readiness::Ready;
                    true
                }
                Err(reason) => {
                    bad_answers += 1;
                    next_probe = Instant::now() + retry;
                    if bad_answers >= check.failures {
                        outcome = Readiness::Failed(reason);
                        return true;
                    }
                    last = Some(reason);
                    false
                }
            }
        });
        match outcome {
            Readiness::TimedOut(_) => Readiness::TimedOut(last),
            other => other,
        }
    }

    /// The `health` thread: keeps the queue of checks and hands those due
    /// to [`CHECKERS`] checker threads, until shutdown. The checkers are
    /// not joined: one may be in a check for up to its timeout; each ends
    /// after its current check, which changes nothing once shutdown began.
    pub(crate) fn run_health(self: &Arc<Self>) {
        let (tx, rx) = mpsc::channel::<(InstanceId, u64)>();
        let rx = Arc::new(Mutex::new(rx));
        for n in 0..CHECKERS {
            let node = Arc::clone(self);
            let rx = Arc::clone(&rx);
            let spawned = thread::Builder::new()
                .name(format!("health-{n}"))
                .stack_size(128 * 1024)
                .spawn(move || loop {
                    let job = lock(&rx).recv();
                    match job {
                        Ok((id, generation)) => node.run_check(&id, generation),
                        Err(_) => return,
                    }
                });
            if let Err(e) = spawned {
                cli::warn(PROG, format!("unable to start a health checker: {e}"));
            }
        }
        let every = self.config.check_interval;
        let mut next_sync = Instant::now();
        while !self.is_shutting_down() {
            if Instant::now() >= next_sync || lock(&self.checks.table).sync_now {
                self.sync_watches(every);
                next_sync = Instant::now() + every;
            }
            let mut table = lock(&self.checks.table);
            let now_i = Instant::now();
            while let Some(Reverse((at, _, _))) = table.queue.peek() {
                if *at > now_i {
                    break;
                }
                let Some(Reverse((_, generation, id))) = table.queue.pop() else {
                    break;
                };
                if table
                    .watches
                    .get(&id)
                    .is_some_and(|w| w.generation == generation)
                {
                    let _ = tx.send((id, generation));
                }
            }
            let mut until = next_sync;
            if let Some(Reverse((at, _, _))) = table.queue.peek() {
                until = until.min(*at);
            }
            if table.sync_now || self.is_shutting_down() {
                continue;
            }
            let wait = until.saturating_duration_since(Instant::now());
            let _ = self.checks.wake.wait_timeout(table, wait);
        }
        drop(tx);
    }

    /// Wakes the `health` thread (at shutdown).
    pub(super) fn wake_health(&self) {
        // Under the lock: the thread checks for shutdown under it before
        // it waits, so the wake-up cannot fall in between.
        let _table = lock(&self.checks.table);
        self.checks.wake.notify_all();
    }

    /// Brings the watches in line with the records: a `RUNNING` instance
    /// with a port and a new launch gets a fresh watch and its first check
    /// one interval on; deregistered instances are forgotten.
    fn sync_watches(&self, every: Duration) {
        let records = self.snapshot();
        let mut table = lock(&self.checks.table);
        table.sync_now = false;
        let ids: HashSet<&InstanceId> = records.iter().map(|r| &r.instance_id).collect();
        table.watches.retain(|id, _| ids.contains(id));
        let now_i = Instant::now();
        for rec in &records {
            let (State::Running, Some(_), Some(since)) = (rec.state, rec.port, rec.running_since)
            else {
                continue;
            };
            let launch = since.to_bits();
            if table
                .watches
                .get(&rec.instance_id)
                .is_some_and(|w| w.launch == launch)
            {
                continue;
            }
            table.next_generation += 1;
            let generation = table.next_generation;
            let failures_total = table
                .watches
                .get(&rec.instance_id)
                .map_or(0, |w| w.failures_total);
            table.watches.insert(
                rec.instance_id.clone(),
                Watch {
                    generation,
                    launch,
                    consecutive: 0,
                    status: HealthStatus::Unknown,
                    last_checked: None,
                    message: String::new(),
                    failures_total,
                },
            );
            let interval = check_of(rec, every).interval.duration();
            table.queue.push(Reverse((
                now_i + interval,
                generation,
                rec.instance_id.clone(),
            )));
        }
    }

    /// One check of `id` (in a checker thread), if its watch is still
    /// `generation`: records the outcome, fails the instance after
    /// `failures` in a row, else queues its next check.
    fn run_check(&self, id: &InstanceId, generation: u64) {
        let Ok(rec) = self.record(id) else {
            return;
        };
        let current = |table: &Table| {
            table.watches.get(id).is_some_and(|w| {
                w.generation == generation && Some(w.launch) == rec.running_since.map(f64::to_bits)
            })
        };
        if rec.state != State::Running || !current(&lock(&self.checks.table)) {
            return;
        }
        let Some(port) = rec.port else {
            return;
        };
        let check = check_of(&rec, self.config.check_interval);
        let result = probe(&check, port);
        let at = now();
        let mut table = lock(&self.checks.table);
        if !current(&table) || self.is_shutting_down() {
            return;
        }
        let Some(watch) = table.watches.get_mut(id) else {
            return;
        };
        watch.last_checked = Some(at);
        let failed_for = match result {
            Ok(()) => {
                watch.consecutive = 0;
                watch.status = HealthStatus::Healthy;
                watch.message.clear();
                None
            }
            Err(reason) => {
                watch.consecutive += 1;
                watch.failures_total += 1;
                watch.status = HealthStatus::Unhealthy;
                watch.message = format!("health check: {reason}");
                self.events.warn(format_args!(
                    "{id}: health check failed ({}/{}): {reason}",
                    watch.consecutive, check.failures
                ));
                (watch.consecutive >= check.failures).then(|| watch.message.clone())
            }
        };
        let next = Reverse((
            Instant::now() + check.interval.duration(),
            generation,
            id.clone(),
        ));
        match failed_for {
            Some(message) => {
                drop(table);
                if !self.fail_unhealthy(&rec, message) {
                    // Busy with an operation: try again next round.
                    let mut table = lock(&self.checks.table);
                    table.queue.push(next);
                    drop(table);
                    self.checks.wake.notify_all();
                }
            }
            None => {
                table.queue.push(next);
                drop(table);
                self.checks.wake.notify_all();
            }
        }
    }

    /// Puts `rec` (as the check saw it) in `ERROR` with `message`, stops
    /// its process and applies the restart policy. False when an
    /// operation holds the instance (nothing was done).
    fn fail_unhealthy(&self, rec: &Record, message: String) -> bool {
        let id = &rec.instance_id;
        let op = self.op_lock(id);
        let Ok(_guard) = op.try_lock() else {
            return false;
        };
        let at = now();
        let changed = self.update_any(id, |r| {
            if r.state != State::Running || r.exit_key != rec.exit_key {
                return Ok(None);
            }
            let launch = (r.supervisor, r.managed, r.stop_timeout);
            let restart = apply_exit(r, None, message.clone(), at);
            Ok(Some((launch, restart)))
        });
        let ((supervisor, managed, stop_timeout), restart) = match changed {
            Ok(Some(Some(change))) => change,
            Ok(_) => return true,
            Err(e) => {
                cli::warn(PROG, e);
                return true;
            }
        };
        // The exit key is spent: the supervisor's report of this stop is
        // not news.
        if managed {
            if let Err(e) = self.managed_stop(rec) {
                cli::warn(PROG, format!("unable to stop unhealthy {id}: {e}"));
            }
        } else if let Some(identity) = supervisor {
            let timeout = stop_timeout.map_or(Duration::from_secs(10), Seconds::duration);
            if self.terminate(&identity, &self.layout.control(id), timeout) {
                // As after a stop: whatever is left of it goes.
                self.isolation.release(id);
            }
        }
        if restart {
            self.kick();
        }
        true
    }
}

/// How a wait for readiness ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Readiness {
    /// The check passed.
    Ready,
    /// The instance ended first.
    Exited,
    /// An `http` check answered badly `failures` times in a row.
    Failed(String),
    /// Not ready in time, with the last failure of the check, if any.
    TimedOut(Option<String>),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_need_a_good_answer() {
        let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
        let port = server.server_addr().to_ip().unwrap().port();
        let answers = thread::spawn(move || {
            for status in [200, 302, 500] {
                let request = server.recv().unwrap();
                let _ = request.respond(tiny_http::Response::empty(status));
            }
        });
        let check: HealthCheck =
            serde_json::from_str(r#"{"type": "http", "path": "/healthz"}"#).unwrap();
        assert_eq!(probe(&check, port), Ok(()));
        assert_eq!(probe(&check, port), Ok(()));
        assert_eq!(
            probe(&check, port),
            Err("GET /healthz answered 500".to_string())
        );
        answers.join().unwrap();
        let tcp: HealthCheck = serde_json::from_str(r#"{"type": "tcp", "timeout": 1}"#).unwrap();
        let free = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let err = probe(&tcp, free).unwrap_err();
        assert!(err.starts_with("nothing answers on port"), "{err}");
    }
}
