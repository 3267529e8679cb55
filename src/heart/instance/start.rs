//! Start: compose the instance's environment, run its startup commands,
//! have its runtime start it (under a detached `pm-supervisor`, or as part
//! of a daemon the runtime manages), and wait until it is ready.
//!
//! A start answers once the instance is `RUNNING` or `ERROR`. Each start
//! gets a fresh exit key: the supervisor's report of an earlier launch is
//! refused, and a report of this one that arrives while the start still
//! waits ends the wait.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use super::health::Readiness;
use super::isolation;
use super::restart;
use super::{lock, now, Node};
use crate::cgroup::Group;
use crate::error::{Error, Refusal, Result};
use crate::heart::record::{Backoff, Record, DEFAULT_STARTUP_TIMEOUT};
use crate::logfile::copy;
use crate::logfile::event::Level;
use crate::logfile::{LogFile, Shared};
use crate::net;
use crate::plugins::{self, params, Started};
use crate::process::{self, Confinement, Credentials};
use crate::protocol::{
    self, ControlFile, Desired, Environment, InstanceId, InstanceView, PluginInstance, Restart,
    State,
};
use crate::secret::random_hex;
use crate::supervise;
use crate::wait;

/// Lines of log quoted in the message of a failed start.
const TAIL_LINES: usize = 20;

/// How long a startup command's output may still be copied after the
/// command ended (its group is killed by then; only a process that left
/// the group can hold the pipe longer).
const STARTUP_OUTPUT_WAIT: Duration = Duration::from_secs(2);

/// The variables of the heart's own environment that instances inherit.
const BASE_ENV: [&str; 10] = [
    "PATH", "HOME", "LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE", "TZ", "USER", "LOGNAME", "TMPDIR",
];

/// PATH for instances when the heart has none.
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// Who asked for a start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// An API request.
    Api,
    /// The restart policy.
    Restart,
    /// The resume of an instance found gone when the heart started
    /// (`resume`): a failure leaves it `SUSPENDED`.
    Resume,
}

/// A start that did not get the instance running.
struct StartFailure {
    /// The refusal it is answered as: `None` for a start that was tried
    /// and failed (the instance is `ERROR`), `Some` for one the node
    /// refused to try (its port is taken by something else).
    refusal: Option<fn(String) -> Refusal>,
    /// Why.
    message: String,
}

impl StartFailure {
    /// A start that was tried and failed.
    fn new(message: impl Into<String>) -> StartFailure {
        StartFailure {
            refusal: None,
            message: message.into(),
        }
    }
}

impl From<Error> for StartFailure {
    fn from(err: Error) -> StartFailure {
        StartFailure::new(err.to_string())
    }
}

type Outcome<T> = std::result::Result<T, StartFailure>;

impl Node {
    /// Starts instance `id` and answers once it is `RUNNING` or `ERROR`.
    ///
    /// # Errors
    ///
    /// `NotFound` unknown; `Conflict` in a state that cannot start, no
    /// restart due (`Origin::Restart`), or its port already in use (then
    /// `ERROR`); `Failed` when the start ended in `ERROR` (the message says
    /// why, with the instance as it is then).
    pub(crate) fn start(&self, id: &InstanceId, origin: Origin) -> Result<InstanceView> {
        let op = self.op_lock(id);
        let _guard = lock(&op);
        self.start_locked(id, origin)
    }

    /// [`Node::start`], with the operation lock of `id` held by the caller.
    pub(super) fn start_locked(&self, id: &InstanceId, origin: Origin) -> Result<InstanceView> {
        let key = random_hex(16)?;
        let current = self.record(id)?;
        let creds = if current.state.can_start() {
            match self.isolation.credentials(current.user.as_deref()) {
                Ok(creds) => creds,
                Err(err) if origin == Origin::Restart => {
                    // A refusal does not go away by waiting: no more
                    // restarts until an operator acts.
                    self.update(id, |rec| {
                        rec.backoff.next_restart = None;
                        rec.message = format!("restart refused: {err}");
                        Ok(())
                    })?;
                    return Err(err);
                }
                Err(err) => return Err(err),
            }
        } else {
            None
        };
        let rec = self.update(id, |rec| {
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
                rec.backoff = Backoff::default();
                rec.desired = Some(Desired::Running);
                rec.restarts = 0;
            } else {
                rec.restarts = rec.restarts.saturating_add(1);
            }
            rec.app = None;
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
        let began = std::time::Instant::now();
        let outcome = self.execute_start(&rec, &key, creds.as_ref());
        self.stats.start_took(began.elapsed().as_secs_f64());
        let oom = match outcome {
            Ok(_) => None,
            Err(_) => {
                let oom = self.isolation.oom_message(id);
                self.isolation.release(id);
                oom
            }
        };
        let at = now();
        let view = self.update(id, |rec| {
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
                        match &oom {
                            Some(oom) if !rec.message.contains(oom.as_str()) => {
                                rec.message = format!("{oom}; {}", rec.message);
                            }
                            _ => {}
                        }
                        rec.state = State::Error;
                        if origin == Origin::Resume {
                            rec.state = State::Suspended;
                            rec.message = format!("could not be brought back: {}", rec.message);
                        }
                        rec.exit_key = None;
                        rec.supervisor = None;
                        rec.running_since = None;
                        let restart = rec.restart != Restart::Never;
                        if origin == Origin::Restart && restart && !rec.stop_requested {
                            restart::schedule(rec, at);
                        }
                    }
                }
            }
            Ok(rec.view())
        })?;
        self.kick();
        self.watch();
        match outcome {
            Ok(_) if view.state == State::Running => Ok(view),
            Err(StartFailure {
                refusal: Some(kind),
                ..
            }) => Err(Error::refused(kind, view.message)),
            // Failed, or exited in the moment between its answer and this
            // update.
            Ok(_) | Err(_) => Err(failed(view)),
        }
    }

    /// Composes the environment, runs the startup commands and has the
    /// runtime start the instance; waits for readiness. Returns the message
    /// of a `RUNNING` instance.
    fn execute_start(
        &self,
        rec: &Record,
        key: &str,
        creds: Option<&Credentials>,
    ) -> Outcome<String> {
        let id = &rec.instance_id;
        let dir = self.layout.instance(id);
        let rt = self.registry.get(&rec.runtime.name)?;
        let in_runtime = |e: Error| StartFailure::new(format!("runtime {}: {e}", rec.runtime.name));

        // SPEC §4, in this order, each layer over the one before: the
        // node's base, the instance's own, the port and the id the heart
        // assigned (an instance variable never overrides them), then the
        // runtime's.
        let mut env = base_environment();
        env.extend(rec.environment.clone());
        if let Some(port) = rec.port {
            env.insert("PM_PORT".into(), port.to_string());
            env.insert("PORT".into(), port.to_string());
        }
        env.insert("PM_INSTANCE_ID".into(), id.to_string());
        rt.environment(&rec.runtime.version, &mut env, &rec.runtime.parameters)
            .map_err(in_runtime)?;

        let group = self.isolation.prepare(id, &rec.limits)?;
        let confinement = isolation::confinement(group.as_ref(), &rec.limits)?;
        if let Some(creds) = creds {
            isolation::give_tree(&dir, creds)?;
        }
        isolation::prepare_log(&self.layout.log(id), creds)?;

        for command in &rec.startup {
            self.run_startup(rec, command, &dir, &env, (creds, &confinement))?;
        }

        if let Some(port) = rec.port {
            if !net::port_free(port) {
                return Err(StartFailure {
                    refusal: Some(Refusal::Conflict),
                    message: format!("port {port} is already in use"),
                });
            }
        }

        let instance = PluginInstance {
            environment: env,
            ..self.plugin_instance(rec)
        };
        match rt.start(&self.ctx, &instance).map_err(in_runtime)? {
            Started::Managed(message) => {
                // Its runtime's daemon serves it: no group of its own.
                self.isolation.release(id);
                self.update(id, |rec| {
                    rec.managed = true;
                    Ok(())
                })?;
                if let Some(port) = rec.port {
                    let timeout = params::start_timeout(&rec.runtime.parameters)
                        .unwrap_or(params::DEFAULT_START_TIMEOUT);
                    let failure = match self.wait_ready(rec, port, timeout.duration(), || false) {
                        Readiness::Ready => None,
                        Readiness::Failed(reason) => Some(format!("health check: {reason}")),
                        Readiness::Exited | Readiness::TimedOut(_) => Some(format!(
                            "did not answer on port {port} within {} s",
                            timeout.as_f64()
                        )),
                    };
                    if let Some(failure) = failure {
                        let _ = rt.stop(&self.ctx, &instance);
                        return Err(StartFailure::new(failure));
                    }
                }
                Ok(message)
            }
            Started::Supervise(launch) => self.supervise(rec, key, &launch, creds, group.as_ref()),
        }
    }

    /// Runs one startup command of `rec` with `sh -e -c` in the instance
    /// directory, bounded by its `startup_timeout`, as the instance's user
    /// and in its control group (`confined`). Its output goes through a
    /// pipe into the instance log, rotated within the instance's limits
    /// like the supervisor's.
    fn run_startup(
        &self,
        rec: &Record,
        command: &str,
        dir: &Path,
        env: &Environment,
        confined: (Option<&Credentials>, &Confinement),
    ) -> Outcome<()> {
        let id = &rec.instance_id;
        let timeout = rec
            .startup_timeout
            .unwrap_or(DEFAULT_STARTUP_TIMEOUT)
            .duration();
        let log_path = self.layout.log(id);
        let limits = rec.log_limits(self.config.log_limits);
        let log = Arc::new(Shared::new(LogFile::open_among_writers(
            &log_path,
            limits.into(),
        )?));
        log.event(Level::Info, format_args!("startup command: {command}"));
        let (copier, [out, err]) = copy::output_pipe("startup-output", Arc::clone(&log))
            .map_err(|e| Error::io("make the output pipe of", &log_path, e))?;
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-e")
            .arg("-c")
            .arg(command)
            .current_dir(dir)
            .env_clear()
            .envs(env)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        process::confine(&mut cmd, confined.0, confined.1);
        let ended = process::bounded::run(&mut cmd, timeout, "/bin/sh");
        // Our copies of the write end go with the command; the copier
        // ends once the command's group (ended by `run`) has closed its.
        drop(cmd);
        if !copier.wait(STARTUP_OUTPUT_WAIT) {
            self.events.warn(format_args!(
                "{id}: a process of startup command `{command}` still holds its output \
                 open; not waiting"
            ));
        }
        let tail = || self.log_tail(id, TAIL_LINES);
        match ended? {
            Some(0) => Ok(()),
            Some(code) => Err(StartFailure::new(format!(
                "startup command `{command}` failed with code {code}; log tail:\n{}",
                tail()
            ))),
            None => Err(StartFailure::new(format!(
                "startup command `{command}` took longer than {} s; log tail:\n{}",
                timeout.as_secs_f64(),
                tail()
            ))),
        }
    }

    /// Runs `launch` under a detached `pm-supervisor` and waits until the
    /// instance is ready, has exited, or the start timeout passed.
    fn supervise(
        &self,
        rec: &Record,
        key: &str,
        launch: &plugins::Launch,
        creds: Option<&Credentials>,
        group: Option<&Group>,
    ) -> Outcome<String> {
        let id = &rec.instance_id;
        let control_path = self.layout.control(id);
        let _ = crate::fsutil::remove_if_exists(&self.layout.exited(id));
        let control = ControlFile {
            instance_id: rec.instance_id.clone(),
            command: protocol::Command::Argv(launch.command.clone()),
            shell: launch.shell,
            cwd: launch.cwd.clone(),
            environment: launch.environment.clone(),
            exit_key: key.to_string(),
            port: Some(self.heart_port),
            address_file: Some(self.layout.address()),
            cgroups: group.map(Group::dirs).unwrap_or_default(),
            nofile: rec.limits.nofile,
            report_url: self.report_url.clone(),
            log_file: self.layout.log(id),
            log_max_size: Some(rec.log_limits(self.config.log_limits).max_size),
            log_keep: Some(rec.log_limits(self.config.log_limits).keep),
            pidfile: self.layout.pidfile(id),
            startflagfile: self.layout.startflag(id),
            stop_timeout: Some(launch.stop_timeout),
            report_deadline: None,
            user: creds.map(|c| c.name.clone()),
        };
        let tail = || self.log_tail(id, TAIL_LINES);
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
        let app = supervise::app_identity(&control.startflagfile);
        self.update(id, |rec| {
            rec.supervisor = Some(identity);
            rec.stop_timeout = Some(launch.stop_timeout);
            rec.app = app;
            Ok(())
        })?;

        let still_starting = || {
            self.record(id)
                .is_ok_and(|r| r.state == State::Starting && r.exit_key.as_deref() == Some(key))
        };
        let gone = || !supervise::is_supervising(&identity, &control_path) || !still_starting();
        let exited = || format!("exited before it was ready; log tail:\n{}", tail());
        let Some(port) = rec.port else {
            if wait::until_soon(launch.standalone_wait.duration(), gone) {
                return Err(StartFailure::new(exited()));
            }
            return Ok("running".into());
        };
        let failure = match self.wait_ready(rec, port, launch.start_timeout.duration(), gone) {
            Readiness::Ready => return Ok(format!("answering on port {port}")),
            Readiness::Exited => return Err(StartFailure::new(exited())),
            Readiness::Failed(reason) => format!("health check: {reason}; log tail:\n{}", tail()),
            Readiness::TimedOut(last) => format!(
                "did not answer on port {port} within {} s{}; log tail:\n{}",
                launch.start_timeout.as_f64(),
                last.map(|l| format!(" (health check: {l})"))
                    .unwrap_or_default(),
                tail()
            ),
        };
        // Spend the key first: the report of this stop is not news.
        let _ = self.update(id, |rec| {
            rec.exit_key = None;
            Ok(())
        });
        self.terminate(&identity, &control_path, launch.stop_timeout.duration());
        Err(StartFailure::new(failure))
    }
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

/// A start that failed, with the instance as it is now.
fn failed(view: InstanceView) -> Error {
    Error::Refused(Refusal::Failed {
        message: view.message.clone(),
        instance: Some(Box::new(view)),
    })
}
