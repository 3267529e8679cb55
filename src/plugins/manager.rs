//! What the version-manager runtimes (rbenv, nvm) share: the runtime
//! itself ([`Managed`], over what each [`Manager`] knows), finding the
//! manager's root directory, and putting directories first on `PATH`
//! exactly once.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::params::Supervised;
use super::{shell, version, Context, Runtime, Started};
use crate::error::{Error, Result};
use crate::protocol::{Environment, Parameters, PluginInstance};

/// Where a version manager keeps its versions, by [`root`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Root {
    /// The instance parameter that names it.
    pub parameter: &'static str,
    /// The environment variable that names it.
    pub variable: &'static str,
    /// Its place under the home directory.
    pub home: &'static str,
}

/// What one version manager knows: where its versions are, and how an
/// environment uses one.
pub(crate) trait Manager: Send + Sync {
    /// The runtime's name.
    fn name(&self) -> &'static str;

    /// Where its root is looked for.
    fn root(&self) -> Root;

    /// The versions installed under `root`, each with its directory.
    ///
    /// # Errors
    ///
    /// A version directory exists but cannot be read.
    fn installed(&self, root: &Path) -> Result<BTreeMap<String, PathBuf>>;

    /// The request as the versions are named.
    fn request<'a>(&self, requested: &'a str) -> &'a str {
        requested
    }

    /// Changes `env` so that version `full`, installed in `home` under
    /// `root`, is used.
    ///
    /// # Errors
    ///
    /// A directory cannot go on `PATH`.
    fn apply(&self, root: &Path, full: &str, home: &Path, env: &mut Environment) -> Result<()>;
}

/// The runtime of a version manager: VERSIONS and ENVIRONMENT from its
/// installed versions, EXECUTE the `shell` runtime's.
#[derive(Debug)]
pub(crate) struct Managed<M>(pub M);

impl<M: Manager> Managed<M> {
    fn root(&self, parameters: &Parameters) -> Result<PathBuf> {
        let r = self.0.root();
        root(parameters, r.parameter, r.variable, r.home)
    }

    /// The installed version that `requested` resolves to, with its
    /// directory.
    fn resolve(&self, requested: &str, root: &Path) -> Result<(String, PathBuf)> {
        let mut found = self.0.installed(root)?;
        let names: Vec<String> = found.keys().cloned().collect();
        let name = self.0.name();
        let full = version::resolve(name, self.0.request(requested), &names)
            .map_err(|_| version::no_match(name, requested, &names))?;
        let home = found
            .remove(&full)
            .ok_or_else(|| version::no_match(name, requested, &names))?;
        Ok((full, home))
    }
}

impl<M: Manager> Runtime for Managed<M> {
    fn name(&self) -> &str {
        self.0.name()
    }

    fn versions(&self) -> Result<Vec<String>> {
        let found = self.0.installed(&self.root(&Parameters::new())?)?;
        Ok(version::listing(&found.into_keys().collect::<Vec<_>>()))
    }

    fn resolve_version(&self, requested: &str, parameters: &Parameters) -> Result<String> {
        let root = self.root(parameters)?;
        self.resolve(requested, &root).map(|(full, _)| full)
    }

    fn environment(
        &self,
        requested: &str,
        env: &mut Environment,
        parameters: &Parameters,
    ) -> Result<()> {
        let root = self.root(parameters)?;
        let (full, home) = self.resolve(requested, &root)?;
        self.0.apply(&root, &full, &home, env)
    }

    fn validate(&self, parameters: &Parameters, _standalone: bool) -> Result<()> {
        self.root(parameters)?;
        Supervised::parse(parameters).map(drop)
    }

    fn start(&self, _ctx: &Context, instance: &PluginInstance) -> Result<Started> {
        shell::start(instance)
    }
}

/// The root of a version manager: the `parameter` of the instance when
/// set, else the environment variable `var`, else `~/default`.
///
/// A `~/` at the start of the parameter is the home directory.
///
/// # Errors
///
/// The parameter is not a string, is relative, or names the home
/// directory when there is none.
pub(crate) fn root(
    parameters: &Parameters,
    parameter: &str,
    var: &str,
    default: &str,
) -> Result<PathBuf> {
    match parameters.get(parameter) {
        None | Some(Value::Null) => {}
        Some(Value::String(path)) if !path.is_empty() => {
            let path = match path.strip_prefix("~/") {
                Some(rest) => home()?.join(rest),
                None if path == "~" => home()?,
                None => PathBuf::from(path),
            };
            if path.is_relative() {
                return Err(Error::invalid(format!(
                    "parameter {parameter} must be an absolute path, not {}",
                    path.display()
                )));
            }
            return Ok(path);
        }
        Some(_) => {
            return Err(Error::invalid(format!(
                "parameter {parameter} must be a non-empty string"
            )))
        }
    }
    match std::env::var_os(var) {
        Some(path) if !path.is_empty() => Ok(PathBuf::from(path)),
        _ => Ok(home()?.join(default)),
    }
}

/// The home directory: `$HOME`, else the password database.
fn home() -> Result<PathBuf> {
    if let Some(home) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        return Ok(PathBuf::from(home));
    }
    nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map(|user| user.dir)
        .ok_or_else(|| Error::invalid("no home directory: HOME is not set"))
}

/// Puts `dirs` first on `PATH` in `env`, in order, removing every other
/// occurrence of them, so that each appears exactly once.
///
/// # Errors
///
/// A directory is not valid UTF-8 or contains a `:`.
pub(crate) fn prepend_path(env: &mut Environment, dirs: &[PathBuf]) -> Result<()> {
    let mut entries: Vec<String> = Vec::new();
    for dir in dirs {
        let text = dir.to_str().filter(|t| !t.contains(':')).ok_or_else(|| {
            Error::invalid(format!(
                "{} cannot go on PATH (not UTF-8, or holds a colon)",
                dir.display()
            ))
        })?;
        if !entries.iter().any(|e| Path::new(e) == dir) {
            entries.push(text.to_string());
        }
    }
    if let Some(old) = env.get("PATH").filter(|old| !old.is_empty()) {
        for entry in old.split(':') {
            let keep = entry.is_empty() || !dirs.iter().any(|d| Path::new(entry) == d);
            if keep {
                entries.push(entry.to_string());
            }
        }
    }
    env.insert("PATH".to_string(), entries.join(":"));
    Ok(())
}

/// The names of the entries of `dir`, sorted; empty when `dir` does not
/// exist. Names that are not UTF-8 or start with a dot are left out.
///
/// # Errors
///
/// `dir` exists but cannot be read.
pub(crate) fn entries(dir: &Path) -> Result<Vec<String>> {
    let read = match std::fs::read_dir(dir) {
        Ok(read) => read,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) if e.raw_os_error() == Some(nix::libc::ENOTDIR) => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("read directory", dir, e)),
    };
    let mut names = Vec::new();
    for entry in read {
        let entry = entry.map_err(|e| Error::io("read directory", dir, e))?;
        if let Ok(name) = OsString::into_string(entry.file_name()) {
            if !name.starts_with('.') {
                names.push(name);
            }
        }
    }
    names.sort();
    Ok(names)
}

/// True when `path` (after symlinks) is a regular file.
pub(crate) fn is_file(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn env(path: Option<&str>) -> Environment {
        let mut env = Environment::new();
        if let Some(path) = path {
            env.insert("PATH".into(), path.into());
        }
        env
    }

    #[test]
    fn prepend_path_puts_dirs_first_once() {
        let dirs = [PathBuf::from("/r/shims"), PathBuf::from("/r/bin")];
        let table = [
            (None, "/r/shims:/r/bin"),
            (Some("/usr/bin:/bin"), "/r/shims:/r/bin:/usr/bin:/bin"),
            (
                Some("/usr/bin:/r/bin:/bin:/r/shims/:/r/bin"),
                "/r/shims:/r/bin:/usr/bin:/bin",
            ),
            (Some("/r/shims:/r/bin"), "/r/shims:/r/bin"),
            (Some(""), "/r/shims:/r/bin"),
            (Some("/a::/b"), "/r/shims:/r/bin:/a::/b"),
        ];
        for (before, after) in table {
            let mut e = env(before);
            prepend_path(&mut e, &dirs).unwrap();
            assert_eq!(e["PATH"], after, "{before:?}");
        }
        assert!(prepend_path(&mut env(None), &[PathBuf::from("/a:b")]).is_err());
    }

    #[test]
    fn root_prefers_the_parameter() {
        let params = json!({"rbenv_path": "/opt/rbenv"});
        let root = root(params.as_object().unwrap(), "rbenv_path", "X_NONE", ".x").unwrap();
        assert_eq!(root, PathBuf::from("/opt/rbenv"));
        for bad in [json!({"rbenv_path": "rel"}), json!({"rbenv_path": 3})] {
            assert!(super::root(bad.as_object().unwrap(), "rbenv_path", "X", ".x").is_err());
        }
    }
}
