//! The node: the instances of this heart and everything done to them.
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

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::catalog::{self, Catalog, Paths, Record};
use super::config::Config;
use super::pacemaker::Reporter;
use super::ports;
use crate::cli;
use crate::error::{Error, Refusal, Result};
use crate::net;
use crate::process::{self, Identity};
use crate::protocol::exited::{self, Recorded};
use crate::protocol::{
    self, ControlFile, Environment, InstanceId, InstanceView, NodeReport, PluginInstance,
    RegisterRequest, Restart, Seconds, State,
};
use crate::runtime::{self, shell, Context, Registry, Started};
use crate::secret::{random_hex, secret_eq};
use crate::supervise::{self, Terminated};
use crate::wait;

/// Default bound of each startup command (parameter `startup_timeout`).
const DEFAULT_STARTUP_TIMEOUT: Seconds = Seconds::from_secs(300);
/// Bound of copying or unpacking a source.
const COPY_TIMEOUT: Duration = Duration::from_secs(600);
/// Lines of log quoted in the message of a failed start.
const TAIL_LINES: usize = 20;
/// The most of a log answered or quoted, from its end.
const LOG_MAX: u64 = 1 << 20;
/// Longest restart backoff, in seconds.
const BACKOFF_MAX: f64 = 60.0;
/// An instance up this long has its backoff reset.
const BACKOFF_RESET: f64 = 60.0;
/// The variables of the heart's own environment that instances inherit.
const BASE_ENV: [&str; 10] = [
    "PATH", "HOME", "LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE", "TZ", "USER", "LOGNAME", "TMPDIR",
];
/// PATH for instances when the heart has none.
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";
/// Program name in diagnostics.
const PROG: &str = "pm-heart";

/// Who asked for a start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// An API request.
    Api,
    /// The restart policy.
    Restart,
}

/// Locks `mutex`, recovering the data if a holder panicked (none should).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Seconds since the Unix epoch.
pub(crate) fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Seconds before restart number `attempts` (0-based): 1, 2, 4, ... 60.
pub(crate) fn backoff_delay(attempts: u32) -> f64 {
    2f64.powi(attempts.min(16) as i32).min(BACKOFF_MAX)
}

/// Applies the end of an instance's process: code 0 → `STOPPED`, anything
/// else (or an unknown code) → `ERROR`, then the restart policy. The exit
/// key is spent. Returns true when a restart was scheduled.
pub(crate) fn apply_exit(rec: &mut Record, code: Option<i32>, reason: String, at: f64) -> bool {
    let failed = code != Some(0);
    rec.state = if failed { State::Error } else { State::Stopped };
    rec.message = reason;
    rec.exit_key = None;
    rec.supervisor = None;
    let up_since = rec.running_since.take();
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
    schedule_restart(rec, at);
    true
}

/// Schedules the next restart of `rec` after its backoff delay.
fn schedule_restart(rec: &mut Record, at: f64) {
    let delay = backoff_delay(rec.backoff.attempts);
    rec.backoff.attempts = rec.backoff.attempts.saturating_add(1);
    rec.backoff.next_restart = Some(at + delay);
    rec.message = format!("{}; restart in {delay} s", rec.message);
}

/// The last `lines` lines of `path` (at most its last MiB); empty when it
/// cannot be read.
pub(crate) fn log_tail(path: &Path, lines: Option<usize>) -> String {
    let Ok(mut file) = File::open(path) else {
        return String::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(LOG_MAX);
    if file.seek(SeekFrom::Start(start)).is_err() {
        return String::new();
    }
    let mut buf = Vec::new();
    if file.take(LOG_MAX).read_to_end(&mut buf).is_err() {
        return String::new();
    }
    let text = String::from_utf8_lossy(&buf);
    match lines {
        None => text.into_owned(),
        Some(n) => {
            let all: Vec<&str> = text.lines().collect();
            let mut out = all[all.len().saturating_sub(n)..].join("\n");
            if !out.is_empty() {
                out.push('\n');
            }
            out
        }
    }
}

/// The state the catalog lock protects.
struct Store {
    catalog: Catalog,
    generation: u64,
}

/// The heart's instances and the means to act on them.
pub(crate) struct Node {
    config: Config,
    paths: Paths,
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
    locks: Mutex<HashMap<String, Arc<Mutex<()>>>>,
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
    pub paths: Paths,
    pub catalog: Catalog,
    pub token: String,
    pub listen: SocketAddr,
    pub address: String,
}

/// A failed start: the reason, and the HTTP status to answer.
struct StartFailure {
    kind: StartRefusal,
    message: String,
}

/// The kind of a failed start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StartRefusal {
    /// The instance's port is taken by something else.
    PortInUse,
    /// Anything else.
    Failed,
}

impl StartFailure {
    fn new(message: impl Into<String>) -> StartFailure {
        StartFailure {
            kind: StartRefusal::Failed,
            message: message.into(),
        }
    }
}

impl Node {
    /// Builds the node over a loaded catalog; nothing is reconciled yet.
    pub(crate) fn new(setup: Setup) -> Node {
        let Setup {
            config,
            paths,
            catalog,
            token,
            listen,
            address,
        } = setup;
        let registry = Registry::new(runtime::plugin_dirs(&config.plugin_dirs));
        let heart_port = listen.port();
        let ip = listen.ip();
        let report_url =
            (!ip.is_loopback() && !ip.is_unspecified()).then(|| format!("http://{address}"));
        let ctx = Context {
            data_dir: paths.root.clone(),
            supervisor: config.supervisor.clone(),
            heart_url: Some(format!("http://{}", net::loopback_of(listen))),
        };
        let runtimes = registry
            .all()
            .iter()
            .map(|rt| (rt.name().to_string(), rt.versions().unwrap_or_default()))
            .collect();
        let node_name = config.node_name.clone().unwrap_or_else(|| {
            nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_else(|| "localhost".to_string())
        });
        Node {
            config,
            paths,
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

    // ---- catalog access ------------------------------------------------

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
        Catalog::store(&self.paths.catalog(), bytes)?;
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
            .entry(id.to_string())
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
    /// 404 when there is no such instance.
    pub(crate) fn show(&self, id: &InstanceId) -> Result<InstanceView> {
        self.peek(|cat| get(cat, id).map(Record::view))
    }

    /// The runtimes of this node with their versions.
    pub(crate) fn runtimes(&self) -> BTreeMap<String, Vec<String>> {
        self.registry
            .all()
            .iter()
            .map(|rt| (rt.name().to_string(), rt.versions().unwrap_or_default()))
            .collect()
    }

    /// The log of instance `id`, or its last `lines` lines.
    ///
    /// # Errors
    ///
    /// 404 when there is no such instance.
    pub(crate) fn log(&self, id: &InstanceId, lines: Option<usize>) -> Result<String> {
        self.show(id)?;
        Ok(log_tail(&self.paths.log(id), lines))
    }

    // ---- register ------------------------------------------------------

    /// Registers an instance from the body of `POST /instances`.
    ///
    /// # Errors
    ///
    /// 400 for a malformed body or id, 422 for an unknown runtime or
    /// version, bad parameters or a missing source, 409 for an id in use or
    /// an exhausted port range, 500 when the copy fails for another reason.
    pub(crate) fn register(&self, body: &[u8]) -> Result<InstanceView> {
        let req: RegisterRequest = serde_json::from_slice(body).map_err(|e| {
            Error::refused(
                Refusal::BadRequest,
                format!("invalid register request: {e}"),
            )
        })?;
        let manifest = &req.manifest;
        let id = match &req.instance_id {
            Some(id) => id.clone(),
            None => generate_id(&manifest.application.name)?,
        };
        if manifest.application.name.trim().is_empty() {
            return Err(Error::refused(
                Refusal::BadRequest,
                "application name is empty",
            ));
        }
        let rt = self
            .registry
            .get(&manifest.runtime.name)
            .map_err(|e| Error::refused(Refusal::Unprocessable, e.to_string()))?;
        // With the instance's parameters: an `rbenv_path` or `nvm_path`
        // has versions of its own that the node default may lack.
        rt.resolve_version(&manifest.runtime.version, &manifest.runtime.parameters)
            .map_err(|e| Error::refused(Refusal::Unprocessable, e.to_string()))?;
        rt.validate(&manifest.runtime.parameters, manifest.standalone)
            .map_err(|e| {
                Error::refused(
                    Refusal::Unprocessable,
                    format!("runtime {}: {e}", manifest.runtime.name),
                )
            })?;
        shell::seconds_param(
            &manifest.runtime.parameters,
            "startup_timeout",
            DEFAULT_STARTUP_TIMEOUT,
        )
        .map_err(|e| Error::refused(Refusal::Unprocessable, e.to_string()))?;
        let source = std::path::absolute(&req.source).map_err(|e| {
            Error::refused(
                Refusal::Unprocessable,
                format!("source {}: {e}", req.source.display()),
            )
        })?;
        let kind = source_kind(&source)?;

        let op = self.op_lock(&id);
        let _guard = lock(&op);
        let range = self.config.ports;
        self.peek(|cat| -> Result<()> {
            if cat.instances.contains_key(&id) {
                return Err(Error::refused(
                    Refusal::Conflict,
                    format!("instance {id} already exists"),
                ));
            }
            let port = if manifest.standalone {
                None
            } else {
                let held: HashSet<u16> = cat.instances.values().filter_map(|r| r.port).collect();
                Some(ports::allocate(range, &held).ok_or_else(|| {
                    Error::refused(
                        Refusal::Conflict,
                        format!("no free port left in the instance port range {range}"),
                    )
                })?)
            };
            cat.instances.insert(
                id.clone(),
                Record {
                    instance_id: id.clone(),
                    state: State::Allocated,
                    port,
                    application: manifest.application.clone(),
                    version: manifest.version.clone(),
                    runtime: manifest.runtime.clone(),
                    standalone: manifest.standalone,
                    exclusive: manifest.exclusive,
                    startup: manifest.startup.clone(),
                    environment: manifest.environment.clone(),
                    restart: manifest.restart,
                    source: source.clone(),
                    message: "registering".into(),
                    exit_key: None,
                    supervisor: None,
                    managed: false,
                    stop_timeout: None,
                    stop_requested: false,
                    running_since: None,
                    backoff: catalog::Backoff::default(),
                },
            );
            Ok(())
        })?;

        let dest = self.paths.instance(&id);
        let copied = self.copy_source(&source, kind, &dest);
        let result = copied.and_then(|()| {
            self.update(|cat| {
                let rec = cat.instances.get_mut(&id).ok_or_else(|| {
                    Error::refused(Refusal::NotFound, format!("instance {id} vanished"))
                })?;
                rec.state = State::Registered;
                rec.message = "registered".into();
                Ok(rec.view())
            })
        });
        if result.is_err() {
            let _ = fs::remove_dir_all(&dest);
            self.peek(|cat| cat.instances.remove(&id));
        }
        result
    }

    /// Copies a directory (`cp -a SRC/. DEST`) or unpacks a `.tar.gz`
    /// (`tar -xzf`) into `dest`; a failure leaves no `dest` behind.
    fn copy_source(&self, source: &Path, kind: SourceKind, dest: &Path) -> Result<()> {
        if dest.exists() {
            fs::remove_dir_all(dest).map_err(|e| Error::io("remove stale", dest, e))?;
        }
        crate::fsutil::create_dir_all(dest, 0o755)?;
        let mut cmd = match kind {
            SourceKind::Dir => {
                let mut cmd = Command::new("cp");
                cmd.arg("-a").arg(source.join(".")).arg(dest);
                cmd
            }
            SourceKind::TarGz => {
                let mut cmd = Command::new("tar");
                cmd.arg("-xzf").arg(source).arg("-C").arg(dest);
                cmd
            }
        };
        let errors = dest.with_extension("copy-errors");
        let err_file = File::create(&errors).map_err(|e| Error::io("create", &errors, e))?;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err_file);
        let what = match kind {
            SourceKind::Dir => "cp",
            SourceKind::TarGz => "tar",
        };
        let outcome = process::bounded::run(&mut cmd, COPY_TIMEOUT, what);
        let stderr = fs::read_to_string(&errors).unwrap_or_default();
        let _ = fs::remove_file(&errors);
        let failure = match outcome {
            Ok(Some(0)) => return Ok(()),
            Ok(Some(code)) => format!("{what} exited with code {code}: {}", stderr.trim()),
            Ok(None) => format!("{what} took longer than {} s", COPY_TIMEOUT.as_secs()),
            Err(e) => e.to_string(),
        };
        let _ = fs::remove_dir_all(dest);
        Err(Error::refused(
            Refusal::Unprocessable,
            format!("unable to copy {}: {failure}", source.display()),
        ))
    }

    // ---- start ---------------------------------------------------------

    /// Starts instance `id` and answers once it is `RUNNING` or `ERROR`.
    ///
    /// # Errors
    ///
    /// 404 unknown, 409 wrong state or port already in use, 500 when the
    /// start ended in `ERROR` (the message says why).
    pub(crate) fn start(&self, id: &InstanceId, origin: Origin) -> Result<InstanceView> {
        let op = self.op_lock(id);
        let _guard = lock(&op);
        let key = random_hex(16)?;
        let rec = self.update(|cat| {
            let rec = get_mut(cat, id)?;
            if !rec.state.can_start() {
                return Err(Error::refused(
                    Refusal::Conflict,
                    format!("cannot start {id}: it is {}", rec.state.as_str()),
                ));
            }
            if origin == Origin::Restart
                && (rec.stop_requested || rec.backoff.next_restart.is_none())
            {
                return Err(Error::refused(
                    Refusal::Conflict,
                    format!("no restart of {id} is due"),
                ));
            }
            if origin == Origin::Api {
                rec.backoff = catalog::Backoff::default();
            }
            rec.backoff.next_restart = None;
            rec.state = State::Starting;
            rec.message = "starting".into();
            rec.exit_key = Some(key.clone());
            rec.supervisor = None;
            rec.managed = false;
            rec.stop_requested = false;
            rec.running_since = None;
            Ok(rec.clone())
        })?;
        let outcome = self.execute_start(&rec, &key);
        let failure = outcome.as_ref().err().map(|f| f.kind);
        let at = now();
        let view = self.update(|cat| {
            let rec = get_mut(cat, id)?;
            match &outcome {
                Ok(message) if rec.state == State::Starting => {
                    rec.state = State::Running;
                    rec.message.clone_from(message);
                    rec.running_since = Some(at);
                }
                Ok(_) => {}
                Err(failure) => {
                    if rec.state == State::Starting || rec.state == State::Error {
                        rec.message = if rec.state == State::Error && rec.exit_key.is_none() {
                            // The exit report came first: it names the code.
                            format!("{}: {}", rec.message, failure.message)
                        } else {
                            failure.message.clone()
                        };
                        rec.state = State::Error;
                        rec.exit_key = None;
                        rec.supervisor = None;
                        rec.running_since = None;
                        let restart = rec.restart != Restart::Never;
                        if origin == Origin::Restart && restart && !rec.stop_requested {
                            schedule_restart(rec, at);
                        }
                    }
                }
            }
            Ok(rec.view())
        })?;
        self.kick();
        match failure {
            None if view.state == State::Running => Ok(view),
            // It exited in the moment between its answer and this update.
            None => Err(failed(view)),
            Some(StartRefusal::PortInUse) => Err(Error::refused(Refusal::Conflict, view.message)),
            Some(StartRefusal::Failed) => Err(failed(view)),
        }
    }

    /// Composes the environment, runs the startup commands and EXECUTE
    /// start; waits for readiness. Returns the message of a `RUNNING`
    /// instance.
    fn execute_start(&self, rec: &Record, key: &str) -> std::result::Result<String, StartFailure> {
        let id = &rec.instance_id;
        let log_path = self.paths.log(id);
        let dir = self.paths.instance(id);
        let rt = self
            .registry
            .get(&rec.runtime.name)
            .map_err(|e| StartFailure::new(e.to_string()))?;

        let mut env = base_environment();
        env.extend(rec.environment.clone());
        if let Some(port) = rec.port {
            env.entry("PM_PORT".into())
                .or_insert_with(|| port.to_string());
            env.entry("PORT".into()).or_insert_with(|| port.to_string());
        }
        env.entry("PM_INSTANCE_ID".into())
            .or_insert_with(|| id.to_string());
        rt.environment(&rec.runtime.version, &mut env, &rec.runtime.parameters)
            .map_err(|e| StartFailure::new(format!("runtime {}: {e}", rec.runtime.name)))?;

        let startup_timeout = shell::seconds_param(
            &rec.runtime.parameters,
            "startup_timeout",
            DEFAULT_STARTUP_TIMEOUT,
        )
        .map_err(|e| StartFailure::new(e.to_string()))?;
        for command in &rec.startup {
            self.run_startup(id, command, &dir, &env, startup_timeout.duration())?;
        }

        if let Some(port) = rec.port {
            if !net::port_free(port) {
                return Err(StartFailure {
                    kind: StartRefusal::PortInUse,
                    message: format!("port {port} is already in use"),
                });
            }
        }

        let instance = PluginInstance {
            instance_id: rec.instance_id.clone(),
            port: rec.port,
            standalone: rec.standalone,
            path: dir.clone(),
            version: rec.runtime.version.clone(),
            parameters: rec.runtime.parameters.clone(),
            environment: env,
        };
        let started = rt
            .start(&self.ctx, &instance)
            .map_err(|e| StartFailure::new(format!("runtime {}: {e}", rec.runtime.name)))?;
        match started {
            Started::Managed(message) => {
                self.update(|cat| {
                    get_mut(cat, id)?.managed = true;
                    Ok(())
                })
                .map_err(|e| StartFailure::new(e.to_string()))?;
                if let Some(port) = rec.port {
                    let timeout = shell::seconds_param(
                        &rec.runtime.parameters,
                        "start_timeout",
                        shell::DEFAULT_START_TIMEOUT,
                    )
                    .unwrap_or(shell::DEFAULT_START_TIMEOUT);
                    if !wait::until_soon(timeout.duration(), || net::port_answers(port)) {
                        let _ = rt.stop(&self.ctx, &instance);
                        return Err(StartFailure::new(format!(
                            "did not answer on port {port} within {} s",
                            timeout.as_f64()
                        )));
                    }
                }
                Ok(message)
            }
            Started::Supervise(launch) => self.supervise(rec, key, &launch, &log_path),
        }
    }

    /// Runs one startup command with `sh -e -c` in the instance directory,
    /// its output appended to the instance log.
    fn run_startup(
        &self,
        id: &InstanceId,
        command: &str,
        dir: &Path,
        env: &Environment,
        timeout: Duration,
    ) -> std::result::Result<(), StartFailure> {
        let log_path = self.paths.log(id);
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| StartFailure::new(Error::io("open log", &log_path, e).to_string()))?;
        let _ = writeln!(log, "pm-heart: startup command: {command}");
        let err = log
            .try_clone()
            .map_err(|e| StartFailure::new(Error::io("open log", &log_path, e).to_string()))?;
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-e")
            .arg("-c")
            .arg(command)
            .current_dir(dir)
            .env_clear()
            .envs(env)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err);
        let tail = || log_tail(&log_path, Some(TAIL_LINES));
        match process::bounded::run(&mut cmd, timeout, "/bin/sh") {
            Ok(Some(0)) => Ok(()),
            Ok(Some(code)) => Err(StartFailure::new(format!(
                "startup command `{command}` failed with code {code}; log tail:\n{}",
                tail()
            ))),
            Ok(None) => Err(StartFailure::new(format!(
                "startup command `{command}` took longer than {} s; log tail:\n{}",
                timeout.as_secs_f64(),
                tail()
            ))),
            Err(e) => Err(StartFailure::new(e.to_string())),
        }
    }

    /// Runs `launch` under a detached `pm-supervisor` and waits until the
    /// instance is ready, has exited, or the start timeout passed.
    fn supervise(
        &self,
        rec: &Record,
        key: &str,
        launch: &runtime::Launch,
        log_path: &Path,
    ) -> std::result::Result<String, StartFailure> {
        let id = &rec.instance_id;
        let control_path = self.paths.control(id);
        let _ = crate::fsutil::remove_if_exists(&self.paths.exited(id));
        let control = ControlFile {
            instance_id: rec.instance_id.clone(),
            command: protocol::Command::Argv(launch.command.clone()),
            shell: launch.shell,
            cwd: launch.cwd.clone(),
            environment: launch.environment.clone(),
            exit_key: key.to_string(),
            port: Some(self.heart_port),
            report_url: self.report_url.clone(),
            log_file: log_path.to_path_buf(),
            log_max_size: None,
            log_keep: None,
            pidfile: self.paths.pidfile(id),
            startflagfile: self.paths.startflag(id),
            stop_timeout: Some(launch.stop_timeout),
            report_deadline: None,
            user: None,
        };
        let tail = || log_tail(log_path, Some(TAIL_LINES));
        let identity = match supervise::launch(&self.config.supervisor, &control_path, &control) {
            Err(e) => return Err(StartFailure::new(format!("unable to launch: {e}"))),
            Ok(None) => {
                return Err(StartFailure::new(format!(
                    "the command failed to start; log tail:\n{}",
                    tail()
                )))
            }
            Ok(Some(identity)) => identity,
        };
        self.update(|cat| {
            let rec = get_mut(cat, id)?;
            rec.supervisor = Some(identity);
            rec.stop_timeout = Some(launch.stop_timeout);
            Ok(())
        })
        .map_err(|e| StartFailure::new(e.to_string()))?;

        let still_starting = || {
            self.peek(|cat| {
                cat.instances.get(id).is_some_and(|r| {
                    r.state == State::Starting && r.exit_key.as_deref() == Some(key)
                })
            })
        };
        let gone = || !supervise::is_supervising(&identity, &control_path) || !still_starting();
        let exited = || format!("exited before it was ready; log tail:\n{}", tail());
        match rec.port {
            None => {
                if wait::until_soon(launch.standalone_wait.duration(), gone) {
                    return Err(StartFailure::new(exited()));
                }
                Ok("running".into())
            }
            Some(port) => {
                let mut died = false;
                let ready = wait::until_soon(launch.start_timeout.duration(), || {
                    if net::port_answers(port) {
                        return true;
                    }
                    died = gone();
                    died
                });
                if ready && !died {
                    return Ok(format!("answering on port {port}"));
                }
                if died {
                    return Err(StartFailure::new(exited()));
                }
                // Spend the key first: the report of this stop is not news.
                let _ = self.update(|cat| {
                    let rec = get_mut(cat, id)?;
                    rec.exit_key = None;
                    Ok(())
                });
                self.terminate(&identity, &control_path, launch.stop_timeout.duration());
                Err(StartFailure::new(format!(
                    "did not answer on port {port} within {} s; log tail:\n{}",
                    launch.start_timeout.as_f64(),
                    tail()
                )))
            }
        }
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

    // ---- stop ----------------------------------------------------------

    /// Stops instance `id` → `STOPPED`.
    ///
    /// # Errors
    ///
    /// 404 unknown, 409 when it is not running (`REGISTERED`, `STOPPED`),
    /// 500 when it cannot be stopped.
    pub(crate) fn stop(&self, id: &InstanceId) -> Result<InstanceView> {
        let op = self.op_lock(id);
        let _guard = lock(&op);
        let rec = self.update(|cat| {
            let rec = get_mut(cat, id)?;
            if matches!(rec.state, State::Registered | State::Stopped) {
                return Err(Error::refused(
                    Refusal::Conflict,
                    format!("cannot stop {id}: it is {}", rec.state.as_str()),
                ));
            }
            rec.stop_requested = true;
            rec.backoff.next_restart = None;
            Ok(rec.clone())
        })?;
        let mut failure = None;
        if rec.managed {
            if let Err(e) = self.managed_stop(&rec) {
                failure = Some(e.to_string());
            }
        } else if let Some(identity) = rec.supervisor {
            let stop_timeout = rec
                .stop_timeout
                .unwrap_or(protocol::DEFAULT_STOP_TIMEOUT)
                .duration();
            if !self.terminate(&identity, &self.paths.control(id), stop_timeout) {
                failure = Some(format!("supervisor {} would not stop", identity.pid));
            }
        }
        let view = self.update(|cat| {
            let rec = get_mut(cat, id)?;
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

    fn managed_stop(&self, rec: &Record) -> Result<String> {
        let rt = self.registry.get(&rec.runtime.name)?;
        rt.stop(&self.ctx, &self.plugin_instance(rec))
    }

    fn plugin_instance(&self, rec: &Record) -> PluginInstance {
        PluginInstance {
            instance_id: rec.instance_id.clone(),
            port: rec.port,
            standalone: rec.standalone,
            path: self.paths.instance(&rec.instance_id),
            version: rec.runtime.version.clone(),
            parameters: rec.runtime.parameters.clone(),
            environment: rec.environment.clone(),
        }
    }

    // ---- deregister ----------------------------------------------------

    /// Deregisters instance `id`: removes its directory, files and port.
    ///
    /// # Errors
    ///
    /// 404 unknown, 409 while `STARTING` or `RUNNING`, 500 when its files
    /// cannot be removed.
    pub(crate) fn deregister(&self, id: &InstanceId) -> Result<InstanceView> {
        let op = self.op_lock(id);
        let _guard = lock(&op);
        let rec = self.peek(|cat| -> Result<Record> {
            let rec = get(cat, id)?;
            if matches!(rec.state, State::Starting | State::Running) {
                return Err(Error::refused(
                    Refusal::Conflict,
                    format!(
                        "cannot deregister {id}: it is {}; stop it first",
                        rec.state.as_str()
                    ),
                ));
            }
            Ok(rec.clone())
        })?;
        if let Some(identity) = rec.supervisor {
            // ERROR or SUSPENDED with a supervisor that somehow lives on.
            self.terminate(&identity, &self.paths.control(id), Duration::from_secs(10));
        }
        let dir = self.paths.instance(id);
        if dir.parent() != Some(self.paths.instances().as_path()) {
            return Err(Error::invalid(format!(
                "refusing to remove {}",
                dir.display()
            )));
        }
        match fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(Error::io("remove instance directory", &dir, e))
            }
            _ => {}
        }
        for path in [
            self.paths.control(id),
            self.paths.pidfile(id),
            self.paths.startflag(id),
            self.paths.exited(id),
        ] {
            let _ = crate::fsutil::remove_if_exists(&path);
        }
        let _ = crate::logfile::remove_all(&self.paths.log(id));
        self.update(|cat| {
            let mut rec = cat.instances.remove(id).ok_or_else(|| not_found(id))?;
            rec.state = State::Deregistered;
            rec.message = "deregistered".into();
            Ok(rec.view())
        })
    }

    // ---- exit reports and .exited files ---------------------------------

    /// The supervisor's exit report.
    ///
    /// # Errors
    ///
    /// 404 unknown instance, 403 stale or spent key, 400 bad code.
    pub(crate) fn exit_report(&self, id: &InstanceId, key: &str, code: &str) -> Result<State> {
        let code: i32 = code.parse().map_err(|_| {
            Error::refused(Refusal::BadRequest, format!("invalid exit code {code:?}"))
        })?;
        let at = now();
        let (state, restart) = self.update(|cat| {
            let rec = get_mut(cat, id)?;
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
                    rec.message = format!("exited with code {code}");
                }
                State::Running | State::Suspended => {
                    restart = apply_exit(rec, Some(code), exit_reason(code), at);
                }
                _ => {}
            }
            Ok((rec.state, restart))
        })?;
        if restart {
            self.kick();
        }
        Ok(state)
    }

    /// Reads `supervisor/ID.exited`: `Ok(None)` when absent; a corrupt
    /// file is renamed to `.corrupt` with a warning.
    fn read_exited(&self, id: &InstanceId) -> Option<i32> {
        let path = self.paths.exited(id);
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

    /// Applies the `.exited` file of `rec` if there is one, exactly once
    /// (the file is removed after the catalog change). Call with the store
    /// lock *not* held; `key` is the exit key the caller saw.
    fn take_exited(&self, id: &InstanceId, key: Option<&str>) -> Option<bool> {
        let code = self.read_exited(id)?;
        let path = self.paths.exited(id);
        let at = now();
        let applied = self.update(|cat| {
            let Some(rec) = cat.instances.get_mut(id) else {
                return Ok(None);
            };
            let stale = rec.exit_key.as_deref() != key;
            if stale
                || !matches!(
                    rec.state,
                    State::Running | State::Suspended | State::Starting
                )
            {
                return Ok(Some(false));
            }
            let restart = apply_exit(rec, Some(code), exit_reason(code), at);
            Ok(Some(restart))
        });
        match applied {
            Ok(Some(restart)) => {
                let _ = crate::fsutil::remove_if_exists(&path);
                if restart {
                    self.kick();
                }
                Some(true)
            }
            _ => None,
        }
    }

    // ---- reconciliation and the periodic check ---------------------------

    /// After a heart (re)start: each `STARTING` or `RUNNING` instance whose
    /// supervisor is alive is `RUNNING`; one with an `.exited` file takes
    /// its code; any other is `SUSPENDED`. `.exited` files of `SUSPENDED`
    /// instances are applied too. No waits: one `/proc` look per instance.
    ///
    /// # Errors
    ///
    /// The catalog cannot be written.
    pub(crate) fn reconcile(&self) -> Result<()> {
        let candidates: Vec<Record> = self.peek(|cat| {
            cat.instances
                .values()
                .filter(|r| matches!(r.state, State::Starting | State::Running | State::Suspended))
                .cloned()
                .collect()
        });
        let mut outcome: Vec<(InstanceId, State, String)> = Vec::new();
        for rec in &candidates {
            let id = &rec.instance_id;
            if rec.state != State::Suspended {
                if rec.managed {
                    let status = self
                        .registry
                        .get(&rec.runtime.name)
                        .and_then(|rt| rt.status(&self.ctx, &self.plugin_instance(rec)));
                    match status {
                        Ok(message) => outcome.push((id.clone(), State::Running, message)),
                        Err(e) => outcome.push((
                            id.clone(),
                            State::Suspended,
                            format!("not running after the heart restarted: {e}"),
                        )),
                    }
                    continue;
                }
                let alive = rec
                    .supervisor
                    .is_some_and(|s| supervise::is_supervising(&s, &self.paths.control(id)));
                if alive {
                    let message = if rec.state == State::Starting {
                        "running (its start was interrupted by a heart restart)".into()
                    } else {
                        rec.message.clone()
                    };
                    outcome.push((id.clone(), State::Running, message));
                    continue;
                }
            }
            if self.take_exited(id, rec.exit_key.as_deref()).is_some() {
                continue;
            }
            if rec.state != State::Suspended {
                outcome.push((
                    id.clone(),
                    State::Suspended,
                    "its supervisor was gone when the heart restarted".into(),
                ));
            }
        }
        let at = now();
        self.update(|cat| {
            for (id, state, message) in outcome {
                if let Some(rec) = cat.instances.get_mut(id.as_str()) {
                    if matches!(rec.state, State::Starting | State::Running) {
                        if state == State::Running && rec.state == State::Starting {
                            rec.running_since = Some(at);
                        }
                        rec.state = state;
                        rec.message = message;
                    }
                }
            }
            Ok(())
        })
    }

    /// One pass of the periodic check: EXECUTE status of each `RUNNING`
    /// instance, `.exited` files of `RUNNING` and `SUSPENDED` ones.
    /// Instances busy with an operation are skipped until the next pass.
    pub(crate) fn check(&self) {
        let candidates: Vec<Record> = self.peek(|cat| {
            cat.instances
                .values()
                .filter(|r| matches!(r.state, State::Running | State::Suspended))
                .cloned()
                .collect()
        });
        for rec in candidates {
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
                let instance = self.plugin_instance(&rec);
                let status = self.registry.get(&rec.runtime.name).and_then(|rt| {
                    rt.status(&self.ctx, &instance).inspect_err(|_| {
                        // Undo what the managed daemon still holds for it
                        // (its configuration), so that nothing half-served
                        // remains and a restart starts clean.
                        let _ = rt.stop(&self.ctx, &instance);
                    })
                });
                match status {
                    Ok(_) => continue,
                    Err(e) => format!("status check failed: {e}"),
                }
            } else {
                let alive = rec
                    .supervisor
                    .is_some_and(|s| supervise::is_supervising(&s, &self.paths.control(id)));
                if alive {
                    continue;
                }
                if self.take_exited(id, rec.exit_key.as_deref()).is_some() {
                    continue;
                }
                "its supervisor is gone without a report".to_string()
            };
            let at = now();
            let restart = self.update(|cat| {
                let Some(r) = cat.instances.get_mut(id) else {
                    return Ok(false);
                };
                if r.state != State::Running || r.exit_key != rec.exit_key {
                    return Ok(false);
                }
                Ok(apply_exit(r, None, failure, at))
            });
            if restart.unwrap_or(false) {
                self.kick();
            }
        }
    }

    /// Starts every instance whose restart is due, each in its own thread.
    /// Returns the time until the next restart is due, if any.
    fn restart_due(self: &Arc<Self>) -> Option<Duration> {
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
            let spawned = thread::Builder::new()
                .name(format!("restart-{id}"))
                .spawn(move || {
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
                Err(e) => cli::warn(PROG, format!("unable to start a restart thread: {e}")),
            }
        }
        next.map(|t| Duration::from_secs_f64((t - at).max(0.0)))
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

    /// The checker thread's loop: a check every `check_interval`, restarts
    /// when due, until shutdown. Waits on a condition variable, so shutdown
    /// and newly scheduled restarts wake it at once.
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

    /// After the server stopped: waits for restarts in flight, then stops
    /// the instances that must not outlive the heart (`--stop-on-exit`, or
    /// `exclusive`), and sends the controller the shutdown report.
    pub(crate) fn shutdown(&self) {
        let threads: Vec<JoinHandle<()>> = std::mem::take(&mut *lock(&self.restart_threads));
        for handle in threads {
            let _ = handle.join();
        }
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
            reporter.shutdown(report, Duration::from_secs(5));
        }
    }
}

/// How a source is copied.
#[derive(Debug, Clone, Copy)]
enum SourceKind {
    Dir,
    TarGz,
}

fn source_kind(source: &Path) -> Result<SourceKind> {
    let meta = fs::metadata(source).map_err(|e| {
        Error::refused(
            Refusal::Unprocessable,
            format!("source {}: {e}", source.display()),
        )
    })?;
    let name = source.to_string_lossy();
    if meta.is_dir() {
        Ok(SourceKind::Dir)
    } else if meta.is_file() && (name.ends_with(".tar.gz") || name.ends_with(".tgz")) {
        Ok(SourceKind::TarGz)
    } else {
        Err(Error::refused(
            Refusal::Unprocessable,
            format!(
                "source {} is neither a directory nor a .tar.gz file",
                source.display()
            ),
        ))
    }
}

/// An id for an instance registered without one: the application name
/// (letters, digits and `-` only) and 8 random hex digits.
fn generate_id(app: &str) -> Result<InstanceId> {
    let mut stem: String = app
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(protocol::INSTANCE_ID_MAX - 9)
        .collect();
    stem = stem.trim_matches('-').to_string();
    if stem.is_empty() {
        stem = "instance".into();
    }
    format!("{stem}-{}", random_hex(4)?)
        .parse()
        .map_err(|e: protocol::InvalidId| Error::invalid(e.to_string()))
}

fn exit_reason(code: i32) -> String {
    format!("exited with code {code}")
}

/// The heart's own environment that instances start from.
fn base_environment() -> Environment {
    let mut env = Environment::new();
    for name in BASE_ENV {
        if let Ok(value) = std::env::var(name) {
            env.insert(name.to_string(), value);
        }
    }
    env.entry("PATH".into())
        .or_insert_with(|| DEFAULT_PATH.to_string());
    env
}

/// The address a local client uses to reach a heart listening on `addr`:
/// a wildcard address becomes the loopback address of its family.
/// A start that failed, with the instance as it is now.
fn failed(view: InstanceView) -> Error {
    Error::Refused(Refusal::Failed {
        message: view.message.clone(),
        instance: Some(Box::new(view)),
    })
}

fn not_found(id: &InstanceId) -> Error {
    Error::refused(Refusal::NotFound, format!("no instance {id}"))
}

fn get<'a>(cat: &'a Catalog, id: &InstanceId) -> Result<&'a Record> {
    cat.instances
        .get(id)
        .filter(|r| r.state != State::Allocated)
        .ok_or_else(|| not_found(id))
}

fn get_mut<'a>(cat: &'a mut Catalog, id: &InstanceId) -> Result<&'a mut Record> {
    cat.instances
        .get_mut(id)
        .filter(|r| r.state != State::Allocated)
        .ok_or_else(|| not_found(id))
}

/// Paths of the data directory that must exist.
pub(crate) fn data_dirs(paths: &Paths) -> [(PathBuf, u32); 5] {
    [
        (paths.root.clone(), 0o755),
        (paths.instances(), 0o755),
        (paths.supervisor(), 0o700),
        (paths.logs(), 0o755),
        (paths.runtimes(), 0o755),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Application, RuntimeSpec};

    fn record(restart: Restart) -> Record {
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
            source: PathBuf::new(),
            message: String::new(),
            exit_key: Some("k".into()),
            supervisor: None,
            managed: false,
            stop_timeout: None,
            stop_requested: false,
            running_since: Some(100.0),
            backoff: catalog::Backoff::default(),
        }
    }

    #[test]
    fn backoff_doubles_to_a_minute() {
        let delays: Vec<f64> = (0..8).map(backoff_delay).collect();
        assert_eq!(delays, [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0]);
        assert_eq!(backoff_delay(u32::MAX), 60.0);
    }

    #[test]
    fn exit_codes_pick_the_state_and_the_policy_the_restart() {
        let mut rec = record(Restart::Never);
        assert!(!apply_exit(&mut rec, Some(0), "x".into(), 110.0));
        assert_eq!(rec.state, State::Stopped);
        assert_eq!(rec.exit_key, None);

        let mut rec = record(Restart::OnFailure);
        assert!(!apply_exit(&mut rec, Some(0), "x".into(), 110.0));
        let mut rec = record(Restart::OnFailure);
        assert!(apply_exit(&mut rec, Some(3), "x".into(), 110.0));
        assert_eq!(rec.state, State::Error);
        assert_eq!(rec.backoff.next_restart, Some(111.0));
        assert_eq!(rec.backoff.attempts, 1);

        let mut rec = record(Restart::Always);
        rec.backoff.attempts = 5;
        assert!(apply_exit(&mut rec, Some(0), "x".into(), 200.0));
        assert_eq!(rec.backoff.attempts, 1, "reset after 60 s up");

        let mut rec = record(Restart::Always);
        rec.stop_requested = true;
        assert!(!apply_exit(&mut rec, Some(0), "x".into(), 200.0));
    }

    #[test]
    fn generated_ids_are_valid() {
        let id = generate_id("My App/2").unwrap();
        assert!(id.len() <= protocol::INSTANCE_ID_MAX, "{id}");
        assert!(id.starts_with("My-App-2-"));
        assert!(generate_id("..").is_ok());
    }

    #[test]
    fn log_tail_keeps_the_last_lines() {
        let dir = std::env::temp_dir().join(format!("pm-heart-tail-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("x.log");
        fs::write(&path, "a\nb\nc\n").unwrap();
        assert_eq!(log_tail(&path, Some(2)), "b\nc\n");
        assert_eq!(log_tail(&path, None), "a\nb\nc\n");
        assert_eq!(log_tail(&dir.join("none"), Some(2)), "");
        fs::remove_dir_all(dir).unwrap();
    }
}
