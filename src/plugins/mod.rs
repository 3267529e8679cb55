//! The runtime plugin layer (SPEC §2), below all three programs.
//!
//! A [`Runtime`] answers three modes: VERSIONS, ENVIRONMENT and EXECUTE
//! (`start`, `stop`, `status`). EXECUTE comes in two strategies: a
//! supervised process, where `start` returns a [`Launch`] that the heart
//! runs under a detached `pm-supervisor` (and stops by signalling that
//! supervisor), and a managed daemon, where the runtime starts and stops
//! the instance itself ([`Started::Managed`]) and answers `stop` and
//! `status` for it.
//!
//! The [`Registry`] holds the built-in runtimes and finds external plugins
//! (`external`) in the plugin directories; the heart and the `pm-runtime`
//! program both use it, so a runtime behaves the same from either. A
//! built-in wins over a plugin of the same name. Every runtime matches a
//! requested version by the one rule of `version`: whole dot-separated
//! components, highest match first. A runtime's parameters are parsed into
//! the types of `params`, once per call, with one message per bad field.

pub(crate) mod apache;
pub(crate) mod external;
mod manager;
pub(crate) mod nvm;
pub(crate) mod params;
pub(crate) mod rbenv;
pub(crate) mod shell;
pub(crate) mod version;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use self::params::Timeouts;
use crate::error::{Error, Result};
use crate::protocol::{Environment, LogLimits, Parameters, PluginInstance, Seconds};

/// A supervised command, ready for `pm-supervisor`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Launch {
    /// Argument vector (or a one-element shell line when `shell`).
    pub command: Vec<String>,
    /// Run `command[0]` with `/bin/sh -c`.
    pub shell: bool,
    /// Working directory.
    pub cwd: PathBuf,
    /// The complete environment.
    pub environment: Environment,
    /// How long the heart waits for the port to answer.
    pub start_timeout: Seconds,
    /// How long a standalone process must stay up to count as running.
    pub standalone_wait: Seconds,
    /// From SIGTERM to SIGKILL.
    pub stop_timeout: Seconds,
}

impl Launch {
    /// `command` (a shell line when `shell`) in `cwd` with `environment`,
    /// bounded by `timeouts`.
    pub(crate) fn new(
        command: Vec<String>,
        shell: bool,
        cwd: PathBuf,
        environment: Environment,
        timeouts: Timeouts,
    ) -> Launch {
        Launch {
            command,
            shell,
            cwd,
            environment,
            start_timeout: timeouts.start_timeout,
            standalone_wait: timeouts.standalone_wait,
            stop_timeout: timeouts.stop_timeout,
        }
    }
}

/// What `start` did.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Started {
    /// The heart must run this under `pm-supervisor`.
    Supervise(Launch),
    /// The runtime started the instance itself; `stop` and `status` go to
    /// the runtime.
    Managed(String),
}

/// What the heart knows that a runtime may need.
#[derive(Debug, Clone)]
pub(crate) struct Context {
    /// The heart's data directory; managed daemons live in `runtimes/`.
    pub data_dir: PathBuf,
    /// The `pm-supervisor` executable.
    pub supervisor: PathBuf,
    /// The heart's base URL (`http://127.0.0.1:PORT`), for the exit reports
    /// of supervisors a runtime starts itself; `None` outside the heart.
    pub heart_url: Option<String>,
    /// The node's log limits, for the logs of a managed daemon itself
    /// (an instance's own are in `PluginInstance::log_limits`).
    pub log_limits: LogLimits,
}

/// One runtime: built in, or an external plugin.
pub(crate) trait Runtime: Send + Sync {
    /// The name instances ask for: `shell`, `rbenv`, ...
    fn name(&self) -> &str;

    /// VERSIONS: what this node can run; empty means "not on this node".
    fn versions(&self) -> Result<Vec<String>>;

    /// The full version that ENVIRONMENT uses for the request `requested`
    /// (`3.1` gives the highest `3.1.*`), by the rule of [`version`]. The
    /// heart checks a requested version with this at register time;
    /// `parameters` matter to runtimes whose versions depend on them
    /// (`rbenv_path`, `nvm_path`). The default resolves against
    /// [`Runtime::versions`].
    ///
    /// # Errors
    ///
    /// Nothing matches; the message lists the versions that exist.
    fn resolve_version(&self, requested: &str, _parameters: &Parameters) -> Result<String> {
        version::resolve(self.name(), requested, &self.versions()?)
    }

    /// ENVIRONMENT: changes `env` so that `version` is used.
    ///
    /// # Errors
    ///
    /// An unknown version, naming the versions that exist.
    fn environment(
        &self,
        version: &str,
        env: &mut Environment,
        parameters: &Parameters,
    ) -> Result<()>;

    /// Checks parameters at register time, before anything is copied.
    ///
    /// # Errors
    ///
    /// A parameter is missing or wrong, or the runtime cannot run a
    /// standalone instance.
    fn validate(&self, _parameters: &Parameters, _standalone: bool) -> Result<()> {
        Ok(())
    }

    /// EXECUTE start.
    ///
    /// # Errors
    ///
    /// The instance cannot be started; the message says why.
    fn start(&self, ctx: &Context, instance: &PluginInstance) -> Result<Started>;

    /// EXECUTE stop, for instances this runtime started itself.
    ///
    /// # Errors
    ///
    /// The instance cannot be stopped.
    fn stop(&self, _ctx: &Context, instance: &PluginInstance) -> Result<String> {
        Err(not_managed(self.name(), instance))
    }

    /// EXECUTE status, for instances this runtime started itself: `Ok`
    /// with a message when running, an error saying why not otherwise.
    ///
    /// # Errors
    ///
    /// The instance is not running.
    fn status(&self, _ctx: &Context, instance: &PluginInstance) -> Result<String> {
        Err(not_managed(self.name(), instance))
    }
}

fn not_managed(runtime: &str, instance: &PluginInstance) -> Error {
    Error::invalid(format!(
        "runtime {runtime} does not manage {} itself",
        instance.instance_id
    ))
}

/// The runtimes of this node: the built-ins, then external plugins.
///
/// Plugins are looked up in the plugin directories on every call, so a
/// plugin dropped in (or removed) is seen without a restart. A built-in
/// wins over a plugin of the same name; among plugins, the first directory
/// wins.
pub(crate) struct Registry {
    builtins: Vec<Arc<dyn Runtime>>,
    plugin_dirs: Vec<PathBuf>,
    timeout: Duration,
}

/// The plugin directories when neither `--plugin-dir` nor
/// `PM_RUNTIME_PATH` names any.
pub(crate) const DEFAULT_PLUGIN_DIRS: [&str; 2] = [
    "/usr/local/lib/paasmaker/runtimes",
    "/usr/lib/paasmaker/runtimes",
];

/// The plugin directories: `explicit` when given, else `PM_RUNTIME_PATH`
/// (colon-separated), else [`DEFAULT_PLUGIN_DIRS`].
pub(crate) fn plugin_dirs(explicit: &[PathBuf]) -> Vec<PathBuf> {
    if !explicit.is_empty() {
        return explicit.to_vec();
    }
    match std::env::var_os("PM_RUNTIME_PATH") {
        Some(path) if !path.is_empty() => std::env::split_paths(&path).collect(),
        _ => DEFAULT_PLUGIN_DIRS.iter().map(PathBuf::from).collect(),
    }
}

impl Registry {
    /// The built-in runtimes and the plugins found in `plugin_dirs`, whose
    /// calls may each take the time `PM_RUNTIME_TIMEOUT` sets (default
    /// [`external::DEFAULT_TIMEOUT`]; an invalid value is ignored here and
    /// reported by `pm-runtime`).
    pub(crate) fn new(plugin_dirs: Vec<PathBuf>) -> Registry {
        let mut builtins: Vec<Arc<dyn Runtime>> = vec![
            Arc::new(shell::Shell),
            Arc::new(manager::Managed(rbenv::Rbenv)),
            Arc::new(manager::Managed(nvm::Nvm)),
            Arc::new(apache::PHP),
            Arc::new(apache::STATIC),
        ];
        builtins.sort_by(|a, b| a.name().cmp(b.name()));
        Registry {
            builtins,
            plugin_dirs,
            timeout: external::timeout_from_env().unwrap_or(external::DEFAULT_TIMEOUT),
        }
    }

    /// The same registry with a time limit of `timeout` per plugin call.
    pub(crate) fn with_timeout(mut self, timeout: Duration) -> Registry {
        self.timeout = timeout;
        self
    }

    /// The time limit of one plugin call.
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The runtime called `name`.
    ///
    /// # Errors
    ///
    /// No runtime has that name.
    pub(crate) fn get(&self, name: &str) -> Result<Arc<dyn Runtime>> {
        if let Some(builtin) = self.builtins.iter().find(|rt| rt.name() == name) {
            return Ok(Arc::clone(builtin));
        }
        match external::find(&self.plugin_dirs, name, self.timeout)? {
            Some(plugin) => Ok(Arc::new(plugin)),
            None => Err(Error::invalid(format!("unknown runtime: {name}"))),
        }
    }

    /// Every runtime, built-ins first, sorted by name within each group.
    pub(crate) fn all(&self) -> Vec<Arc<dyn Runtime>> {
        let mut all = self.builtins.clone();
        for plugin in external::discover(&self.plugin_dirs, self.timeout) {
            if !self.builtins.iter().any(|b| b.name() == plugin.name()) {
                all.push(Arc::new(plugin));
            }
        }
        all
    }
}

/// Checks that `requested` matches one of `versions` by whole components
/// (the rule of [`version`]), or says which exist.
///
/// # Errors
///
/// Nothing matches.
pub(crate) fn require_version(runtime: &str, requested: &str, versions: &[String]) -> Result<()> {
    version::resolve(runtime, requested, versions).map(|_| ())
}

/// Resolves `path` inside `root`, refusing anything that leaves it.
///
/// # Errors
///
/// `path` is absolute or escapes `root` (through `..` or a symlink).
pub(crate) fn resolve_inside(root: &Path, path: &Path) -> Result<PathBuf> {
    if path.is_absolute() {
        return Err(Error::invalid(format!(
            "{} must be a relative path",
            path.display()
        )));
    }
    let root = root
        .canonicalize()
        .map_err(|e| Error::io("resolve", root, e))?;
    let full = root
        .join(path)
        .canonicalize()
        .map_err(|e| Error::io("resolve", root.join(path), e))?;
    if full.starts_with(&root) {
        Ok(full)
    } else {
        Err(Error::invalid(format!(
            "{} leaves the instance directory",
            path.display()
        )))
    }
}
