//! What the version-manager runtimes (rbenv, nvm) share: finding the
//! manager's root directory, and putting directories first on `PATH`
//! exactly once.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::{Error, Result};
use crate::protocol::{Environment, Parameters};

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
