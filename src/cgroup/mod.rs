//! Control groups: one group per instance, for limits, accounting, and
//! ending every process an instance ever started (issue 12, SPEC §7).
//!
//! The mechanism only; which instance gets which group and limits is the
//! heart's policy. The heart calls, in order:
//!
//! 1. [`detect`] once: the [`Support`] of this node, whose
//!    [`Support::summary`] (`"cgroup v2"`, `"cgroup v1+v2 hybrid"`,
//!    `"none: REASON"`) goes to `GET /health`;
//! 2. [`Scope::open`] once with its layout and a short name of its own
//!    (say a hash of its data directory), so that two hearts, or tests
//!    running in parallel, never share groups: every group lives in
//!    `HIERARCHY/paasmaker/SCOPE/NAME`;
//! 3. per start, [`Scope::create`] and [`Group::apply`]; the group's
//!    [`Group::dirs`] go into the control file's `cgroups`, and the
//!    supervisor's child joins them before it executes the command, so
//!    that everything the command forks is in the group;
//! 4. while it runs, [`Group::usage`] and [`Group::oom_kills`]; to end
//!    it, [`Group::kill_all`], then [`Group::remove`];
//! 5. at start-up and in its periodic check, [`Scope::list`] and
//!    [`Scope::group`] to find the groups of instances whose supervisor
//!    died, and [`Group::procs`] and [`Group::kill_all`] on them.
//!
//! Only groups under `paasmaker/` are ever written to, created or removed;
//! the hierarchy roots are only read. Every error names the path and the
//! reason. Nothing here needs `unsafe`: the files are plain files and
//! signals go through nix.

mod group;
mod layout;
mod mountinfo;

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

pub(crate) use group::{CpuQuota, Group, Scope, Settings};
pub(crate) use layout::{detect, Support};

/// The directory under each hierarchy root that holds every group of the
/// suite; nothing outside it is written to.
pub(crate) const BASE: &str = "paasmaker";

/// The file a process writes `0` to in order to join the group `dir`.
pub(crate) fn procs_file(dir: &Path) -> PathBuf {
    dir.join("cgroup.procs")
}

/// Reads an interface file.
fn read(path: &Path) -> Result<String> {
    fs::read_to_string(path).map_err(|e| Error::io("read", path, e))
}

/// Reads an interface file that holds one number.
fn read_number(path: &Path) -> Result<u64> {
    let text = read(path)?;
    text.trim().parse().map_err(|_| {
        Error::invalid(format!(
            "unable to read {}: {:?} is not a number",
            path.display(),
            text.trim()
        ))
    })
}

/// Reads the value of `key` in a file of `key value` lines (`cpu.stat`,
/// `memory.events`, `memory.oom_control`).
fn read_keyed(path: &Path, key: &str) -> Result<u64> {
    keyed(&read(path)?, key)
        .ok_or_else(|| Error::invalid(format!("unable to read {}: no {key} line", path.display())))
}

/// The value of `key` in `key value` lines.
fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok())?
    })
}

/// Writes `value` to an interface file in one `write`, as the kernel
/// wants it.
fn write(path: &Path, value: &str) -> Result<()> {
    OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .and_then(|mut f| f.write_all(value.as_bytes()))
        .map_err(|e| Error::io(format!("write {value:?} to"), path, e))
}

/// The pids in a `cgroup.procs` file.
fn parse_pids(text: &str) -> Vec<i32> {
    text.split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

#[cfg(test)]
mod root_tests;
#[cfg(test)]
pub(crate) mod tests;
