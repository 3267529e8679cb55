//! The node: the instances of this heart, the catalog they live in, and
//! the locking rules every operation on them follows. Each operation has
//! a file of its own: `register`, `start`, `stop` (and deregister),
//! `exits` (exit reports and `.exited` files), `restart` (the policy and
//! its threads) and `checker` (the periodic check and the reconcile at
//! start-up).
//!
//! Locking: every operation on one instance (register, start, stop,
//! deregister) holds that instance's own operation lock for its whole
//! length, so operations on one instance are serialised while other
//! instances go on. A change of a record ([`Node::update`]) holds that
//! record's write lock while it writes the record's file, then the map
//! lock only to swap the new record in: readers (`GET /instances`) take
//! the map lock for as long as it takes to copy the list of shared
//! records, never across a write. Exit reports take no operation lock:
//! they change the record conditional on the exit key, and a start in
//! progress sees the change on its next poll.
//!
//! Every change is durable in the record's file (`store`) before the
//! request that made it is answered; a change whose write fails is not
//! made in memory either, and the request fails with the file and the
//! reason.
//!
//! State machine (SPEC §4):
//!
//! - register → `REGISTERED` (`ALLOCATED` while the source is copied; never
//!   written to disk);
//! - start, from `REGISTERED`, `STOPPED`, `SUSPENDED`, `ERROR` → `STARTING`
//!   → `RUNNING` or `ERROR`;
//! - stop, from `STARTING`, `RUNNING`, `SUSPENDED`, `ERROR` → `STOPPED`;
//! - deregister, from anything but `STARTING` and `RUNNING` → dropped from
//!   the catalog (`DEREGISTERED` in the answer);
//! - exit report or `.exited` file: code 0 → `STOPPED`, else `ERROR`; a
//!   supervisor found gone without either → `ERROR`;
//! - heart restart: `STARTING`/`RUNNING` whose supervisor is alive →
//!   `RUNNING`, with an `.exited` file → as above, otherwise `SUSPENDED`;
//!   one that should be running (desired state `running`) is then started
//!   again in the background (`resume`), and a failure leaves it
//!   `SUSPENDED`;
//! - restart: stop (unless `REGISTERED` or `STOPPED`), then start, under
//!   one operation lock; redeploy: the same around a swap of the source.
//!
//! The desired state (`Record::desired`) is what the operator last asked
//! for: start, restart and redeploy set `running`; stop and register set
//! `stopped`; exits and the heart's own stops at shutdown leave it.
//!
//! Every refusal is an [`Error::Refused`] variant; the API alone turns it
//! into an HTTP status.

mod checker;
mod exits;
mod follow;
mod health;
mod isolation;
mod lifecycle;
mod metrics;
mod narrate;
mod register;
mod restart;
mod resume;
mod source;
mod start;
mod status;
mod stop;
mod update;

pub(crate) use self::isolation::Isolation;
pub(crate) use self::lifecycle::Done;
pub(crate) use self::start::Origin;
pub(crate) use self::status::Listing;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::config::Config;
use super::events::Events;
use super::layout::{Layout, LogStream};
use super::pacemaker::Reporter;
use super::record::Record;
use super::store::Store;
use crate::cli;
use crate::error::{Error, Refusal, Result};
use crate::fsutil;
use crate::heart::PROG;
use crate::net;
use crate::plugins::{self, Context, Registry};
use crate::process::Identity;
use crate::protocol::{InstanceId, InstanceView, NodeReport, PluginInstance, State};
use crate::supervise::{self, Terminated};

/// The most of a log answered or quoted, from its end.
const LOG_MAX: u64 = 1 << 20;

/// How long the controller gets to take the shutdown report.
const SHUTDOWN_REPORT_WAIT: Duration = Duration::from_secs(5);

/// Locks `mutex`, recovering the data if a holder panicked (none should).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Seconds since the Unix epoch.
fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The records in memory: shared, so that a reader copies pointers.
type Records = BTreeMap<InstanceId, Arc<Record>>;

/// The heart's instances and the means to act on them.
pub(crate) struct Node {
    config: Config,
    layout: Layout,
    registry: Registry,
    ctx: Context,
    token: String,
    heart_port: u16,
    report_url: Option<String>,
    address: String,
    node_name: String,
    runtimes: BTreeMap<String, Vec<String>>,
    store: Store,
    records: Mutex<Records>,
    locks: Mutex<HashMap<InstanceId, Arc<Mutex<()>>>>,
    writers: Mutex<HashMap<InstanceId, Arc<Mutex<()>>>>,
    kicked: Mutex<bool>,
    kick: Condvar,
    shutting_down: AtomicBool,
    restarting: Mutex<HashSet<InstanceId>>,
    restart_threads: Mutex<Vec<JoinHandle<()>>>,
    reporter: Option<Reporter>,
    // Issue 11: lifecycle.
    /// Instances found gone at start-up, to be brought back (`resume`).
    resume_queue: Mutex<Vec<InstanceId>>,
    /// The `resume` thread, joined at shutdown.
    resume_thread: Mutex<Option<JoinHandle<()>>>,
    isolation: Isolation,
    // Issue 13: observability.
    events: Events,
    checks: health::Checks,
    stats: metrics::Stats,
}

/// What `Node::new` needs.
pub(crate) struct Setup {
    pub config: Config,
    pub layout: Layout,
    pub store: Store,
    pub records: BTreeMap<InstanceId, Record>,
    pub token: String,
    pub listen: SocketAddr,
    pub address: String,
    pub isolation: Isolation,
}

/// The runtimes of `registry` with their versions.
fn runtime_versions(registry: &Registry) -> BTreeMap<String, Vec<String>> {
    registry
        .all()
        .iter()
        .map(|rt| (rt.name().to_string(), rt.versions().unwrap_or_default()))
        .collect()
}

impl Node {
    /// Builds the node over a loaded catalog; nothing is reconciled yet.
    pub(crate) fn new(setup: Setup) -> Node {
        let Setup {
            config,
            layout,
            store,
            records,
            token,
            listen,
            address,
            isolation,
        } = setup;
        let registry = Registry::new(plugins::plugin_dirs(&config.plugin_dirs));
        let heart_port = listen.port();
        let ip = listen.ip();
        let report_url =
            (!ip.is_loopback() && !ip.is_unspecified()).then(|| format!("http://{address}"));
        let ctx = Context {
            data_dir: layout.root().to_path_buf(),
            supervisor: config.supervisor.clone(),
            heart_url: Some(format!("http://{}", net::loopback_of(listen))),
            log_limits: config.log_limits,
        };
        let runtimes = runtime_versions(&registry);
        let layout_events = layout.events();
        let log_limits = config.log_limits;
        let node_name = config.node_name.clone().unwrap_or_else(|| {
            nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_else(|| "localhost".to_string())
        });
        Node {
            config,
            layout,
            registry,
            ctx,
            token,
            heart_port,
            report_url,
            address,
            node_name,
            runtimes,
            store,
            records: Mutex::new(
                records
                    .into_iter()
                    .map(|(id, r)| (id, Arc::new(r)))
                    .collect(),
            ),
            locks: Mutex::new(HashMap::new()),
            writers: Mutex::new(HashMap::new()),
            kicked: Mutex::new(false),
            kick: Condvar::new(),
            shutting_down: AtomicBool::new(false),
            restarting: Mutex::new(HashSet::new()),
            restart_threads: Mutex::new(Vec::new()),
            reporter: None,
            resume_queue: Mutex::new(Vec::new()),
            resume_thread: Mutex::new(None),
            isolation,
            events: Events::new(layout_events, log_limits),
            checks: health::Checks::default(),
            stats: metrics::Stats::default(),
        }
    }

    /// The node's control groups, for `GET /health`.
    pub(crate) fn isolation_summary(&self) -> String {
        self.isolation.summary()
    }

    /// Starts reporting to the controller, when one is configured.
    pub(crate) fn start_reporter(&mut self) {
        if let Some(url) = self.config.pacemaker.clone() {
            let report = self.node_report(&lock(&self.records));
            self.reporter = Some(Reporter::start(url, report));
        }
    }

    /// The API token.
    pub(crate) fn token(&self) -> &str {
        &self.token
    }

    /// The largest source archive a register downloads or an upload
    /// takes.
    pub(crate) fn max_source_size(&self) -> u64 {
        self.config.max_source_size
    }

    fn node_report(&self, records: &Records) -> NodeReport {
        NodeReport {
            node: self.node_name.clone(),
            address: self.address.clone(),
            runtimes: self.runtimes.clone(),
            instances: records
                .iter()
                .filter(|(_, r)| r.state != State::Allocated)
                .map(|(id, r)| (id.to_string(), r.state))
                .collect(),
        }
    }

    /// Changes the record of `id` with `f` and makes the change durable
    /// before it is visible: `f` works on a copy, the copy is written to
    /// the record's file (unless it is unchanged, or still `ALLOCATED`),
    /// and only then swapped in. When `f` or the write fails, nothing
    /// changed.
    ///
    /// # Errors
    ///
    /// `NotFound` when there is no such registered instance; what `f`
    /// returns; the record's file cannot be written.
    fn update<T>(&self, id: &InstanceId, f: impl FnOnce(&mut Record) -> Result<T>) -> Result<T> {
        self.update_record(id, false, f)?
            .ok_or_else(|| not_found(id))
    }

    /// Like [`Node::update`], but `Ok(None)` when there is no such record,
    /// and a record still being registered (`ALLOCATED`) is changed too.
    fn update_any<T>(
        &self,
        id: &InstanceId,
        f: impl FnOnce(&mut Record) -> Result<T>,
    ) -> Result<Option<T>> {
        self.update_record(id, true, f)
    }

    fn update_record<T>(
        &self,
        id: &InstanceId,
        allocated: bool,
        f: impl FnOnce(&mut Record) -> Result<T>,
    ) -> Result<Option<T>> {
        let writer = Arc::clone(
            lock(&self.writers)
                .entry(id.clone())
                .or_insert_with(|| Arc::new(Mutex::new(()))),
        );
        let _writing = lock(&writer);
        let Some(old) = lock(&self.records).get(id).cloned() else {
            return Ok(None);
        };
        if old.state == State::Allocated && !allocated {
            return Ok(None);
        }
        let mut new = Record::clone(&old);
        let out = f(&mut new)?;
        if new == *old {
            return Ok(Some(out));
        }
        if new.state != State::Allocated {
            self.store.put(&new)?;
        }
        self.narrate(&old, &new);
        let mut records = lock(&self.records);
        records.insert(id.clone(), Arc::new(new));
        if let Some(reporter) = &self.reporter {
            reporter.update(self.node_report(&records));
        }
        Ok(Some(out))
    }

    /// Adds `record` in memory only, as `ALLOCATED` (a register in
    /// progress, never written), with the port that `port` picks from the
    /// ports the other instances hold.
    ///
    /// # Errors
    ///
    /// `Conflict` when the id is taken; what `port` returns.
    fn allocate(
        &self,
        record: Record,
        port: impl FnOnce(&HashSet<u16>) -> Result<Option<u16>>,
    ) -> Result<()> {
        let mut records = lock(&self.records);
        let id = record.instance_id.clone();
        if records.contains_key(&id) {
            return Err(Error::refused(
                Refusal::Conflict,
                format!("instance {id} already exists"),
            ));
        }
        let held: HashSet<u16> = records.values().filter_map(|r| r.port).collect();
        let port = port(&held)?;
        records.insert(
            id,
            Arc::new(Record {
                state: State::Allocated,
                port,
                ..record
            }),
        );
        Ok(())
    }

    /// Removes the record of `id`, durably first.
    ///
    /// # Errors
    ///
    /// Its file cannot be removed; the record stays.
    fn remove(&self, id: &InstanceId) -> Result<()> {
        self.store.remove(id)?;
        self.events.info(format_args!("{id}: deregistered"));
        let mut records = lock(&self.records);
        records.remove(id);
        if let Some(reporter) = &self.reporter {
            reporter.update(self.node_report(&records));
        }
        Ok(())
    }

    /// Forgets a register that failed (its record was never written).
    fn forget_allocated(&self, id: &InstanceId) {
        let mut records = lock(&self.records);
        if records.get(id).is_some_and(|r| r.state == State::Allocated) {
            records.remove(id);
        }
    }

    /// The registered records (not those still being registered), shared:
    /// the map lock is held for the copy of the pointers only.
    fn snapshot(&self) -> Vec<Arc<Record>> {
        lock(&self.records)
            .values()
            .filter(|r| r.state != State::Allocated)
            .cloned()
            .collect()
    }

    /// The registered record of `id`.
    ///
    /// # Errors
    ///
    /// `NotFound` when there is none.
    fn record(&self, id: &InstanceId) -> Result<Arc<Record>> {
        lock(&self.records)
            .get(id)
            .filter(|r| r.state != State::Allocated)
            .cloned()
            .ok_or_else(|| not_found(id))
    }

    /// The lock that serialises operations on instance `id`.
    fn op_lock(&self, id: &InstanceId) -> Arc<Mutex<()>> {
        lock(&self.locks)
            .entry(id.clone())
            .or_insert_with(|| Arc::new(Mutex::new(())))
            .clone()
    }

    /// Every instance in `state` (every instance when `None`), sorted by
    /// id.
    pub(crate) fn list(&self, state: Option<State>) -> Listing<'_> {
        let mut records = self.snapshot();
        records.retain(|r| state.map_or(true, |s| r.state == s));
        self.listing(records)
    }

    /// One instance.
    ///
    /// # Errors
    ///
    /// `NotFound` when there is no such instance.
    pub(crate) fn show(&self, id: &InstanceId) -> Result<InstanceView> {
        let rec = self.record(id)?;
        Ok(self.live_views(std::slice::from_ref(&rec)).remove(0))
    }

    /// The runtimes of this node with their versions.
    pub(crate) fn runtimes(&self) -> BTreeMap<String, Vec<String>> {
        runtime_versions(&self.registry)
    }

    /// The log `stream` of instance `id` (up to its last MiB), or its last
    /// `lines` lines.
    ///
    /// # Errors
    ///
    /// `NotFound` when there is no such instance.
    pub(crate) fn log(
        &self,
        id: &InstanceId,
        stream: LogStream,
        lines: Option<usize>,
    ) -> Result<String> {
        self.record(id)?;
        Ok(fsutil::tail(
            &self.layout.log_of(id, stream),
            LOG_MAX,
            lines,
        ))
    }

    /// The last `lines` lines of the log of `id`, quoted in messages.
    fn log_tail(&self, id: &InstanceId, lines: usize) -> String {
        fsutil::tail(&self.layout.log(id), LOG_MAX, Some(lines))
    }

    /// The instance as its runtime sees it, with its own environment.
    fn plugin_instance(&self, rec: &Record) -> PluginInstance {
        PluginInstance {
            instance_id: rec.instance_id.clone(),
            port: rec.port,
            standalone: rec.standalone,
            path: self.layout.instance(&rec.instance_id),
            version: rec.runtime.version.clone(),
            parameters: rec.runtime.parameters.clone(),
            environment: rec.environment.clone(),
            log_limits: rec.log_limits(self.config.log_limits),
        }
    }

    /// The live supervisor of `rec`'s current launch: the one its record
    /// names, or, when the heart died between the launch and recording it,
    /// the one its pidfile names. Either way its identity must prove it
    /// supervises this instance's control file.
    fn supervisor_of(&self, rec: &Record) -> Option<Identity> {
        let control = self.layout.control(&rec.instance_id);
        let recorded = rec
            .supervisor
            .filter(|s| supervise::is_supervising(s, &control));
        recorded.or_else(|| {
            let text = std::fs::read_to_string(self.layout.pidfile(&rec.instance_id)).ok()?;
            Identity::of(text.trim().parse().ok()?)
                .filter(|s| supervise::is_supervising(s, &control))
        })
    }

    /// True when `rec`'s supervisor is alive and still supervises it.
    fn is_supervised(&self, rec: &Record) -> bool {
        self.supervisor_of(rec).is_some()
    }

    /// Ends the supervisor `identity` (only if it still supervises
    /// `control_path`); true once it is gone.
    fn terminate(&self, identity: &Identity, control_path: &Path, stop_timeout: Duration) -> bool {
        match supervise::terminate(identity, control_path, stop_timeout) {
            Terminated::WasGone | Terminated::Stopped | Terminated::Killed => true,
            Terminated::WouldNotStop => {
                cli::warn(
                    PROG,
                    format!("supervisor {} would not stop, even killed", identity.pid),
                );
                false
            }
        }
    }

    /// Wakes the checker (a restart was scheduled, or shutdown).
    pub(crate) fn kick(&self) {
        *lock(&self.kicked) = true;
        self.kick.notify_all();
    }

    /// True once shutdown began.
    pub(crate) fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    /// Begins shutdown: the checker and restarts end.
    pub(crate) fn begin_shutdown(&self) {
        self.events.info("shutting down");
        self.shutting_down.store(true, Ordering::SeqCst);
        self.kick();
        self.wake_health();
    }

    /// After the server stopped: joins the restarts in flight, then stops
    /// the instances that must not outlive the heart (`--stop-on-exit`, or
    /// `exclusive`), and sends the controller the shutdown report.
    pub(crate) fn shutdown(&self) {
        self.join_resume();
        self.join_restarts();
        let to_stop: Vec<InstanceId> = self
            .snapshot()
            .iter()
            .filter(|r| {
                (self.config.stop_on_exit || r.exclusive)
                    && matches!(r.state, State::Starting | State::Running)
            })
            .map(|r| r.instance_id.clone())
            .collect();
        for id in to_stop {
            if let Err(e) = self.stop(&id) {
                cli::warn(PROG, format!("unable to stop {id}: {e}"));
            }
            // Stopped with the heart, not by the operator: it should still
            // be running (`pm-heart start --all` brings it back).
            let _ = self.update(&id, |rec| {
                rec.desired = Some(crate::protocol::Desired::Running);
                Ok(())
            });
        }
        self.sweep_groups();
        self.isolation.close();
        if let Some(reporter) = &self.reporter {
            let report = self.node_report(&lock(&self.records));
            reporter.shutdown(report, SHUTDOWN_REPORT_WAIT);
        }
    }
}

/// The refusal for an id the catalog does not hold.
fn not_found(id: &InstanceId) -> Error {
    Error::refused(Refusal::NotFound, format!("no instance {id}"))
}

/// A record for the unit tests of the operations.
#[cfg(test)]
fn test_record(restart: crate::protocol::Restart) -> Record {
    use crate::protocol::{Application, Environment, RuntimeSpec};
    Record {
        instance_id: "a".parse().unwrap(),
        state: State::Running,
        port: Some(1),
        application: Application { name: "a".into() },
        version: String::new(),
        runtime: RuntimeSpec {
            name: "shell".into(),
            version: "1".into(),
            parameters: Default::default(),
        },
        standalone: false,
        exclusive: false,
        startup: Vec::new(),
        environment: Environment::new(),
        restart,
        source: std::path::PathBuf::new(),
        message: String::new(),
        exit_key: Some("k".into()),
        supervisor: None,
        managed: false,
        stop_timeout: None,
        startup_timeout: None,
        stop_requested: false,
        running_since: Some(100.0),
        backoff: super::record::Backoff::default(),
        desired: None,
        user: None,
        limits: Default::default(),
        health_check: None,
        app: None,
        restarts: 0,
        last_exit: None,
        log_max_size: None,
        log_keep: None,
    }
}
