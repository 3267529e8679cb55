//! The node's Apache: the binary, its module directory and mod_php, and
//! the PHP versions the node has; Apache's tools run through
//! [`run_tool`], bounded in time.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::plugins::external;
use crate::process::bounded::{self, Output};

/// Environment variable: the Apache binary to use instead of searching.
const BINARY_VAR: &str = "PM_APACHE_BIN";

/// How long one of Apache's tools (`-t`, `-l`, `-k graceful`, `php -v`)
/// may run.
const TOOL_TIMEOUT: Duration = Duration::from_secs(60);
/// The most of a tool's standard output, and of its standard error, that
/// is kept.
const TOOL_OUTPUT_CAP: usize = 64 << 10;

/// Apache binary names, in order of preference.
const BINARY_NAMES: [&str; 2] = ["apache2", "httpd"];

/// Where Apache binaries live when they are not on `PATH` (Debian puts
/// `apache2` in `/usr/sbin`, which is not on a user's `PATH`).
const BINARY_DIRS: [&str; 5] = [
    "/usr/sbin",
    "/usr/local/sbin",
    "/usr/local/apache2/bin",
    "/usr/bin",
    "/sbin",
];

/// Where Apache modules live: Debian, RHEL (64 and 32 bit), a source build.
const MODULE_DIRS: [&str; 5] = [
    "/usr/lib/apache2/modules",
    "/usr/lib64/httpd/modules",
    "/usr/lib/httpd/modules",
    "/usr/local/apache2/modules",
    "/usr/libexec/apache2",
];

/// Modules Apache cannot serve an instance without.
pub(super) const REQUIRED_MODULES: [&str; 5] = ["mpm_prefork", "authz_core", "mime", "dir", "env"];

/// Modules loaded when the node has them (and they are not built in), for
/// `.htaccess` files that use them.
pub(super) const OPTIONAL_MODULES: [&str; 11] = [
    "unixd",
    "log_config",
    "authz_host",
    "access_compat",
    "alias",
    "rewrite",
    "headers",
    "expires",
    "setenvif",
    "filter",
    "deflate",
];

/// The node's Apache: binary, module directory, mod_php.
#[derive(Debug, Clone)]
pub(super) struct Install {
    pub binary: PathBuf,
    pub module_dir: PathBuf,
    pub mod_php: Option<PathBuf>,
}

impl Install {
    /// Finds Apache: `$PM_APACHE_BIN`, else `apache2` or `httpd` on `PATH`
    /// or in the usual sbin directories; modules in the first of the usual
    /// module directories that has `mod_mpm_prefork.so`.
    pub(super) fn find() -> Result<Install> {
        let binary = find_binary()?;
        let module_dir = MODULE_DIRS
            .iter()
            .map(PathBuf::from)
            .find(|dir| dir.join("mod_mpm_prefork.so").is_file())
            .ok_or_else(|| {
                Error::invalid(format!(
                    "Apache modules not found (no mod_mpm_prefork.so in {})",
                    MODULE_DIRS.join(", ")
                ))
            })?;
        let mod_php = find_mod_php(&module_dir);
        Ok(Install {
            binary,
            module_dir,
            mod_php,
        })
    }

    /// The modules compiled into the binary (`-l`), which must not be
    /// loaded again.
    pub(super) fn builtin_modules(&self) -> Vec<String> {
        let mut cmd = Command::new(&self.binary);
        cmd.arg("-l").env_clear();
        let Ok(output) = run_tool(&mut cmd, &self.binary.to_string_lossy()) else {
            return Vec::new();
        };
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|line| {
                let name = line.trim().strip_prefix("mod_")?.strip_suffix(".c")?;
                Some(name.to_string())
            })
            .collect()
    }
}

fn find_binary() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os(BINARY_VAR).filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(Error::invalid(format!(
                "{BINARY_VAR}={} is not a file",
                path.display()
            )))
        };
    }
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(BINARY_DIRS.iter().map(PathBuf::from));
    for name in BINARY_NAMES {
        for dir in &dirs {
            let path = dir.join(name);
            if external::is_executable(&path) {
                return Ok(path);
            }
        }
    }
    Err(Error::invalid(format!(
        "Apache is not installed (no apache2 or httpd on PATH or in {})",
        BINARY_DIRS.join(", ")
    )))
}

/// `libphp*.so` (PHP 7 and 8) or `mod_php*.so` (RHEL) in `dir`; the
/// highest name when there are several.
fn find_mod_php(dir: &Path) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = fs::read_dir(dir)
        .ok()?
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.path())
        .filter(|path| {
            path.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                (n.starts_with("libphp") || n.starts_with("mod_php")) && n.ends_with(".so")
            })
        })
        .collect();
    found.sort();
    found.pop()
}

/// The node's PHP versions from `php -v`: `["8.2", "8.2.36"]`.
pub(super) fn php_versions() -> Result<Vec<String>> {
    let output = run_tool(Command::new("php").arg("-v"), "php -v")?;
    if !output.status.success() {
        return Err(Error::invalid(format!(
            "php -v failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    let text = String::from_utf8_lossy(&output.stdout);
    parse_php_version(&text).ok_or_else(|| {
        Error::invalid(format!(
            "cannot read a version from php -v: {}",
            text.trim()
        ))
    })
}

/// Runs `cmd`, one of Apache's tools (or `php -v`), through the one timed
/// runner; `what` names it in errors.
///
/// # Errors
///
/// It cannot be run, or did not finish within [`TOOL_TIMEOUT`] (its
/// process group is then killed).
pub(super) fn run_tool(cmd: &mut Command, what: &str) -> Result<Output> {
    bounded::output(
        cmd,
        None,
        TOOL_TIMEOUT,
        (TOOL_OUTPUT_CAP, TOOL_OUTPUT_CAP),
        what,
    )?
    .ok_or_else(|| {
        Error::invalid(format!(
            "{what} did not finish within {} s; its process group was killed",
            TOOL_TIMEOUT.as_secs()
        ))
    })
}

/// `PHP 8.2.36 (cli) ...` → `["8.2", "8.2.36"]`.
fn parse_php_version(text: &str) -> Option<Vec<String>> {
    let word = text.split_whitespace().nth(1)?;
    let full: String = word
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let parts: Vec<&str> = full.split('.').collect();
    if parts.len() < 2 || parts.iter().any(|p| p.is_empty()) {
        return None;
    }
    let short = format!("{}.{}", parts[0], parts[1]);
    if short == full {
        Some(vec![short])
    } else {
        Some(vec![short, full])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn php_version_lists_short_and_full() {
        assert_eq!(
            parse_php_version("PHP 8.2.36 (cli) (built: Nov 18 2026)").unwrap(),
            ["8.2", "8.2.36"]
        );
        assert_eq!(
            parse_php_version("PHP 8.3.0-1+ubuntu (cli)").unwrap(),
            ["8.3", "8.3.0"]
        );
        assert!(parse_php_version("nonsense").is_none());
    }
}
