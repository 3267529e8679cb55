//! The node: the instances of this heart, the catalog they live in, and
//! the locking rules every operation on them follows. Each operation has
//! a file of its own: `register`, `start`, `stop` (and deregister),
//! `exits` (exit reports and `.exited` files), `restart` (the policy and
//! its threads) and `checker` (the periodic check and the reconcile at
//! start-up).
//!
//! Locking: every operation on one instance (register, start, stop,
//! deregister) holds that instance's own lock for its whole length, so
//! operations on one instance are serialised while other instances go on.
//! The catalog lock is only ever held for a short, non-blocking mutation
//! (never across a start's wait, a copy or a stop), and always after the
//! instance lock, never before. Exit reports take no instance lock: they
//! change the catalog under its lock, conditional on the exit key, and a
//! start in progress sees the change on its next poll.
//!
//! Every change of the catalog is written to `catalog.json` before the
//! request that made it is answered (one write may carry several changes:
//! a writer that finds a newer catalog already on disk skips its own). A
//! write that fails is reported on stderr and retried with the next change;
//! only the write at start-up is fatal.
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
//!   `RUNNING`, with an `.exited` file → as above, otherwise `SUSPENDED`.
//!
//! Every refusal is an [`Error::Refused`] variant; the API alone turns it
//! into an HTTP status.

mod checker;
mod exits;
mod register;
mod restart;
mod start;
mod stop;

pub(crate) use self::start::Origin;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::catalog::{Catalog, Record};
use super::config::Config;
use super::layout::Layout;
use super::pacemaker::Reporter;
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

/// The state the catalog lock protects.
struct Store {
    catalog: Catalog,
    generation: u64,
}

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
    store: Mutex<Store>,
    written: Mutex<u64>,
    locks: Mutex<HashMap<InstanceId, Arc<Mutex<()>>>>,
    kicked: Mutex<bool>,
    kick: Condvar,
    shutting_down: AtomicBool,
    restarting: Mutex<HashSet<InstanceId>>,
    restart_threads: Mutex<Vec<JoinHandle<()>>>,
    reporter: Option<Reporter>,
}

/// What `Node::new` needs.
pub(crate) struct Setup {
    pub config: Config,
    pub layout: Layout,
    pub catalog: Catalog,
    pub token: String,
    pub listen: SocketAddr,
    pub address: String,
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
            catalog,
            token,
            listen,
            address,
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
        };
        let runtimes = runtime_versions(&registry);
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
            store: Mutex::new(Store {
                catalog,
                generation: 0,
            }),
            written: Mutex::new(0),
            locks: Mutex::new(HashMap::new()),
            kicked: Mutex::new(false),
            kick: Condvar::new(),
            shutting_down: AtomicBool::new(false),
            restarting: Mutex::new(HashSet::new()),
            restart_threads: Mutex::new(Vec::new()),
            reporter: None,
        }
    }

    /// Starts reporting to the controller, when one is configured.
    pub(crate) fn start_reporter(&mut self) {
        if let Some(url) = self.config.pacemaker.clone() {
            let report = {
                let store = lock(&self.store);
                self.node_report(&store.catalog)
            };
            self.reporter = Some(Reporter::start(url, report));
        }
    }

    /// The API token.
    pub(crate) fn token(&self) -> &str {
        &self.token
    }

    fn node_report(&self, catalog: &Catalog) -> NodeReport {
        NodeReport {
            node: self.node_name.clone(),
            address: self.address.clone(),
            runtimes: self.runtimes.clone(),
            instances: catalog
                .instances
                .iter()
                .filter(|(_, r)| r.state != State::Allocated)
                .map(|(id, r)| (id.to_string(), r.state))
                .collect(),
        }
    }

    /// Runs `f` on the catalog under its lock, then writes the catalog
    /// durably. `f` must not change anything when it returns an error.
    fn update<T>(&self, f: impl FnOnce(&mut Catalog) -> Result<T>) -> Result<T> {
        let (out, generation, bytes) = {
            let mut store = lock(&self.store);
            let out = f(&mut store.catalog)?;
            store.generation += 1;
            let bytes = store.catalog.to_bytes()?;
            if let Some(reporter) = &self.reporter {
                reporter.update(self.node_report(&store.catalog));
            }
            (out, store.generation, bytes)
        };
        // The change is made; a catalog that cannot be written is reported
        // and written again with the next change (the heart keeps serving
        // rather than leave an operation half done in memory).
        if let Err(e) = self.persist(generation, &bytes) {
            cli::warn(PROG, &e);
        }
        Ok(out)
    }

    /// Runs `f` on the catalog under its lock without writing it (for
    /// changes that are never persisted, such as `ALLOCATED`).
    fn peek<T>(&self, f: impl FnOnce(&mut Catalog) -> T) -> T {
        f(&mut lock(&self.store).catalog)
    }

    fn persist(&self, generation: u64, bytes: &[u8]) -> Result<()> {
        let mut written = lock(&self.written);
        if *written >= generation {
            return Ok(());
        }
        Catalog::store(&self.layout.catalog(), bytes)?;
        *written = generation;
        Ok(())
    }

    /// Writes the catalog as it is now.
    ///
    /// # Errors
    ///
    /// The catalog cannot be written.
    pub(crate) fn save(&self) -> Result<()> {
        let (generation, bytes) = {
            let mut store = lock(&self.store);
            store.generation += 1;
            (store.generation, store.catalog.to_bytes()?)
        };
        self.persist(generation, &bytes)
    }

    /// The lock that serialises operations on instance `id`.
    fn op_lock(&self, id: &InstanceId) -> Arc<Mutex<()>> {
        lock(&self.locks)
            .entry(id.clone())
            .or_insert_with(|| Arc::new(Mutex::new(())))
            .clone()
    }

    /// Every instance, sorted by id.
    pub(crate) fn list(&self) -> Vec<InstanceView> {
        self.peek(|cat| {
            cat.instances
                .values()
                .filter(|r| r.state != State::Allocated)
                .map(Record::view)
                .collect()
        })
    }

    /// One instance.
    ///
    /// # Errors
    ///
    /// `NotFound` when there is no such instance.
    pub(crate) fn show(&self, id: &InstanceId) -> Result<InstanceView> {
        self.peek(|cat| get(cat, id).map(Record::view))
    }

    /// The runtimes of this node with their versions.
    pub(crate) fn runtimes(&self) -> BTreeMap<String, Vec<String>> {
        runtime_versions(&self.registry)
    }

    /// The log of instance `id` (up to its last MiB), or its last `lines`
    /// lines.
    ///
    /// # Errors
    ///
    /// `NotFound` when there is no such instance.
    pub(crate) fn log(&self, id: &InstanceId, lines: Option<usize>) -> Result<String> {
        self.show(id)?;
        Ok(fsutil::tail(&self.layout.log(id), LOG_MAX, lines))
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
        }
    }

    /// True when `rec`'s supervisor is alive and still supervises it.
    fn is_supervised(&self, rec: &Record) -> bool {
        rec.supervisor
            .is_some_and(|s| supervise::is_supervising(&s, &self.layout.control(&rec.instance_id)))
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
        self.shutting_down.store(true, Ordering::SeqCst);
        self.kick();
    }

    /// After the server stopped: joins the restarts in flight, then stops
    /// the instances that must not outlive the heart (`--stop-on-exit`, or
    /// `exclusive`), and sends the controller the shutdown report.
    pub(crate) fn shutdown(&self) {
        self.join_restarts();
        let to_stop: Vec<InstanceId> = self.peek(|cat| {
            cat.instances
                .values()
                .filter(|r| {
                    (self.config.stop_on_exit || r.exclusive)
                        && matches!(r.state, State::Starting | State::Running)
                })
                .map(|r| r.instance_id.clone())
                .collect()
        });
        for id in to_stop {
            if let Err(e) = self.stop(&id) {
                cli::warn(PROG, format!("unable to stop {id}: {e}"));
            }
        }
        if let Some(reporter) = &self.reporter {
            let report = self.peek(|cat| self.node_report(cat));
            reporter.shutdown(report, SHUTDOWN_REPORT_WAIT);
        }
    }
}

/// The refusal for an id the catalog does not hold.
fn not_found(id: &InstanceId) -> Error {
    Error::refused(Refusal::NotFound, format!("no instance {id}"))
}

/// Registered instance `id` (not one still being registered).
fn get<'a>(cat: &'a Catalog, id: &InstanceId) -> Result<&'a Record> {
    cat.instances
        .get(id)
        .filter(|r| r.state != State::Allocated)
        .ok_or_else(|| not_found(id))
}

/// Registered instance `id`, to change.
fn get_mut<'a>(cat: &'a mut Catalog, id: &InstanceId) -> Result<&'a mut Record> {
    cat.instances
        .get_mut(id)
        .filter(|r| r.state != State::Allocated)
        .ok_or_else(|| not_found(id))
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
        backoff: super::catalog::Backoff::default(),
    }
}
