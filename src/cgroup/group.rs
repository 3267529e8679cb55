//! A scope of groups (`paasmaker/SCOPE` in every hierarchy) and the group
//! of one instance in it: create, limit, list, account, kill, remove.
//!
//! A group is the same name in each hierarchy of the layout: one
//! directory in the unified layout, five (four when `cpu` and `cpuacct`
//! share a mount) in the hybrid one. The cgroup2 directory is the truth on
//! which processes are in the group; the others hold limits and counters.

use std::fs;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;

use super::layout::{Dirs, Layout, Version, CONTROLLERS};
use super::{parse_pids, procs_file, read, read_keyed, read_number, write, BASE};
use crate::error::{Error, Result};
use crate::wait;

/// How long [`Group::kill_all`] waits for the group to empty: a process
/// in uninterruptible sleep can outlive a SIGKILL for a while.
const KILL_DEADLINE: Duration = Duration::from_secs(5);

/// How long [`Group::remove`] retries a group that is still busy (its
/// last processes are still exiting).
const REMOVE_DEADLINE: Duration = Duration::from_secs(2);

/// The longest scope or group name.
const NAME_MAX: usize = 64;

/// The limits a group enforces; `None` is no limit (writing it lifts a
/// limit set before).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Settings {
    /// Bytes of memory, swap included.
    pub memory_max: Option<u64>,
    /// CPU time per period.
    pub cpu_max: Option<CpuQuota>,
    /// Processes and threads at once.
    pub pids_max: Option<u64>,
}

/// A CPU limit as the kernel takes it: `quota_usec` of CPU time in every
/// `period_usec`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CpuQuota {
    /// CPU time allowed per period, in microseconds (1000 at least).
    pub quota_usec: u64,
    /// The period, in microseconds.
    pub period_usec: u64,
}

/// The kernel's default CPU period, written back when a limit is lifted.
const DEFAULT_PERIOD_USEC: u64 = 100_000;

/// What a group has used.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Usage {
    /// Memory in use now, page cache included.
    pub memory_bytes: u64,
    /// CPU time used since the group was created.
    pub cpu_seconds: f64,
}

/// `paasmaker/SCOPE` in every hierarchy: the groups of one heart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Scope {
    pub(super) dirs: Dirs,
}

/// The control group of one instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Group {
    name: String,
    pub(super) dirs: Dirs,
}

/// Refuses a name that is not one plain path component.
fn check_name(what: &str, name: &str) -> Result<()> {
    let valid = !name.is_empty()
        && name.len() <= NAME_MAX
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if valid {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "invalid control group {what} {name:?}: expected 1 to {NAME_MAX} of A-Z, a-z, \
             0-9, '-', '_' and '.', not starting with '.'"
        )))
    }
}

/// Creates `dir`; true if it was created now, false if it was there.
fn make_dir(dir: &PathBuf) -> Result<bool> {
    match fs::create_dir(dir) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(Error::io("create control group", dir, e)),
    }
}

/// Removes the group directory `dir`, retrying while it is busy; a
/// directory that is gone already is fine.
fn remove_dir(dir: &PathBuf, deadline: Duration) -> Result<()> {
    let mut last = None;
    let done = wait::until(deadline, || match fs::remove_dir(dir) {
        Ok(()) => true,
        Err(e) if e.kind() == io::ErrorKind::NotFound => true,
        Err(e) if e.raw_os_error() == Some(Errno::EBUSY as i32) => {
            last = Some(e);
            false
        }
        Err(e) => {
            last = Some(e);
            true
        }
    });
    match last {
        Some(e) if !done || dir.exists() => Err(Error::io("remove control group", dir, e)),
        _ => Ok(()),
    }
}

/// Whether `err` says a file does not exist.
fn is_not_found(err: &Error) -> bool {
    matches!(err, Error::Io { source, .. } if source.kind() == io::ErrorKind::NotFound)
}

impl Scope {
    /// Creates (or finds) `paasmaker/NAME` in every hierarchy of
    /// `layout`; in the unified layout, enables the memory, cpu and pids
    /// controllers for the groups below, in `paasmaker` and in the scope,
    /// the two groups the suite owns.
    ///
    /// # Errors
    ///
    /// `name` is not one plain path component, or a directory cannot be
    /// created or a controller enabled (the path and the reason).
    pub(crate) fn open(layout: &Layout, name: &str) -> Result<Scope> {
        check_name("scope", name)?;
        let base = layout.roots.join(BASE);
        let dirs = base.join(name);
        for (parent, child) in base.unique().iter().zip(dirs.unique()) {
            make_dir(parent)?;
            make_dir(&child)?;
        }
        if dirs.version == Version::V2 {
            enable_controllers(&base)?;
            enable_controllers(&dirs)?;
        }
        Ok(Scope { dirs })
    }

    /// Creates the group `name` in every hierarchy; one that exists
    /// already (an instance started again after a crash) is used as it
    /// is. If one directory cannot be created, those created by this call
    /// are removed again.
    ///
    /// # Errors
    ///
    /// `name` is not one plain path component, or a directory cannot be
    /// created.
    pub(crate) fn create(&self, name: &str) -> Result<Group> {
        let group = self.group(name)?;
        let mut created = Vec::new();
        for dir in group.dirs.unique() {
            match make_dir(&dir) {
                Ok(true) => created.push(dir),
                Ok(false) => {}
                Err(err) => {
                    for dir in created.iter().rev() {
                        let _ = fs::remove_dir(dir);
                    }
                    return Err(err);
                }
            }
        }
        Ok(group)
    }

    /// The group `name`, whether it exists or not; touches nothing.
    ///
    /// # Errors
    ///
    /// `name` is not one plain path component.
    pub(crate) fn group(&self, name: &str) -> Result<Group> {
        check_name("name", name)?;
        Ok(Group {
            name: name.to_owned(),
            dirs: self.dirs.join(name),
        })
    }

    /// The names of the groups that exist in the scope, in any hierarchy
    /// (a group half created or half removed counts), sorted.
    ///
    /// # Errors
    ///
    /// A scope directory cannot be listed.
    pub(crate) fn list(&self) -> Result<Vec<String>> {
        let mut names = Vec::new();
        for dir in self.dirs.unique() {
            let entries = match fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io("list control groups in", &dir, e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| Error::io("list control groups in", &dir, e))?;
                let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
                if let Some(name) = entry.file_name().to_str().filter(|_| is_dir) {
                    names.push(name.to_owned());
                }
            }
        }
        names.sort();
        names.dedup();
        Ok(names)
    }

    /// Removes the scope's directories if no group is left in them.
    ///
    /// # Errors
    ///
    /// A directory cannot be removed; a scope that still holds groups is
    /// busy.
    pub(crate) fn remove(&self) -> Result<()> {
        let mut result = Ok(());
        for dir in self.dirs.unique() {
            if let Err(err) = remove_dir(&dir, Duration::ZERO) {
                result = result.and(Err(err));
            }
        }
        result
    }
}

/// Enables the controllers the limits need in the `cgroup.subtree_control`
/// of `dirs` (unified layout: one directory), writing only those missing.
fn enable_controllers(dirs: &Dirs) -> Result<()> {
    let file = dirs.unified.join("cgroup.subtree_control");
    let enabled = read(&file)?;
    let missing: Vec<String> = CONTROLLERS
        .into_iter()
        .filter(|c| !enabled.split_whitespace().any(|e| e == *c))
        .map(|c| format!("+{c}"))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    write(&file, &missing.join(" "))
}

impl Group {
    /// Every directory of the group, the cgroup2 one first: what the
    /// control file's `cgroups` holds.
    pub(crate) fn dirs(&self) -> Vec<PathBuf> {
        self.dirs.unique()
    }

    /// The `cgroup.procs` files a new process writes `0` to in order to
    /// join the group in every hierarchy.
    #[cfg(test)]
    pub(crate) fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs.unique().iter().map(|d| procs_file(d)).collect()
    }

    /// Writes `settings`: every limit, so that `None` lifts one set
    /// before. In the hybrid layout memory is limited with swap included
    /// (`memory.memsw.limit_in_bytes` where the kernel accounts swap); in
    /// the unified one `memory.swap.max` is 0 while memory is limited.
    ///
    /// # Errors
    ///
    /// A file cannot be written (the file, the value and the reason: the
    /// kernel refuses a memory limit below what is in use with EBUSY).
    pub(crate) fn apply(&self, settings: &Settings) -> Result<()> {
        let d = &self.dirs;
        let memory = settings
            .memory_max
            .map_or_else(|| "max".to_owned(), |n| n.to_string());
        let pids = settings
            .pids_max
            .map_or_else(|| "max".to_owned(), |n| n.to_string());
        match d.version {
            Version::V2 => {
                write(&d.memory.join("memory.max"), &memory)?;
                let swap = d.memory.join("memory.swap.max");
                if swap.exists() {
                    let value = if settings.memory_max.is_some() {
                        "0"
                    } else {
                        "max"
                    };
                    write(&swap, value)?;
                }
                let cpu = match settings.cpu_max {
                    Some(q) => format!("{} {}", q.quota_usec, q.period_usec),
                    None => format!("max {DEFAULT_PERIOD_USEC}"),
                };
                write(&d.cpu.join("cpu.max"), &cpu)?;
            }
            Version::Hybrid => {
                let memory = if settings.memory_max.is_some() {
                    &memory
                } else {
                    "-1"
                };
                // The kernel keeps memsw >= limit at every step: lift
                // memsw, set the limit, then bring memsw down to it.
                let memsw = d.memory.join("memory.memsw.limit_in_bytes");
                let swap_accounted = memsw.exists();
                if swap_accounted {
                    write(&memsw, "-1")?;
                }
                write(&d.memory.join("memory.limit_in_bytes"), memory)?;
                if swap_accounted {
                    write(&memsw, memory)?;
                }
                match settings.cpu_max {
                    Some(q) => {
                        write(&d.cpu.join("cpu.cfs_period_us"), &q.period_usec.to_string())?;
                        write(&d.cpu.join("cpu.cfs_quota_us"), &q.quota_usec.to_string())?;
                    }
                    None => write(&d.cpu.join("cpu.cfs_quota_us"), "-1")?,
                }
            }
        }
        write(&d.pids.join("pids.max"), &pids)
    }

    /// Every process in the group now, in any of its directories (a
    /// process that joined only some of them, or was moved out of some by
    /// someone else, is still found), sorted.
    ///
    /// # Errors
    ///
    /// A `cgroup.procs` cannot be read, for example because the group
    /// does not exist; one directory missing in a hybrid layout (a group
    /// half created or half removed) is skipped.
    pub(crate) fn procs(&self) -> Result<Vec<i32>> {
        let mut pids = Vec::new();
        let mut missing = None;
        let mut found = false;
        for dir in self.dirs.unique() {
            match read(&procs_file(&dir)) {
                Ok(text) => {
                    found = true;
                    pids.extend(parse_pids(&text));
                }
                Err(err) if is_not_found(&err) => {
                    missing.get_or_insert(err);
                }
                Err(err) => return Err(err),
            }
        }
        if let (false, Some(err)) = (found, missing) {
            return Err(err);
        }
        pids.sort_unstable();
        pids.dedup();
        Ok(pids)
    }

    /// Kills every process in the group and waits until it is empty:
    /// `cgroup.kill` where the kernel has it (Linux 5.14), which also
    /// catches processes forked meanwhile; then, and on older kernels
    /// instead, SIGKILL to every pid listed, again and again, for at most
    /// 5 seconds.
    ///
    /// # Errors
    ///
    /// The group cannot be read or `cgroup.kill` written, or processes
    /// are still in it after 5 seconds (the path and their pids).
    pub(crate) fn kill_all(&self) -> Result<()> {
        let kill = self.dirs.unified.join("cgroup.kill");
        if kill.exists() {
            write(&kill, "1")?;
        }
        self.kill_listed(KILL_DEADLINE)
    }

    /// SIGKILLs every pid listed in the group until it is empty or
    /// `deadline` has passed. A pid is read and signalled microseconds
    /// apart; for it to be another process by then, the pid space would
    /// have to wrap in between.
    pub(super) fn kill_listed(&self, deadline: Duration) -> Result<()> {
        let mut failure = None;
        let mut left = Vec::new();
        let empty = wait::until(deadline, || match self.procs() {
            Ok(pids) if pids.is_empty() => true,
            Ok(pids) => {
                for &pid in &pids {
                    let _ = signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
                left = pids;
                false
            }
            Err(err) => {
                failure = Some(err);
                true
            }
        });
        if let Some(err) = failure {
            return Err(err);
        }
        if empty {
            return Ok(());
        }
        Err(Error::io(
            "empty control group",
            &self.dirs.unified,
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "processes {left:?} are still in it {} s after SIGKILL",
                    deadline.as_secs_f64()
                ),
            ),
        ))
    }

    /// Memory in use and CPU time used: `memory.current` and the
    /// `usage_usec` of `cpu.stat` (unified), `memory.usage_in_bytes` and
    /// `cpuacct.usage` (hybrid).
    ///
    /// # Errors
    ///
    /// A counter cannot be read.
    pub(crate) fn usage(&self) -> Result<Usage> {
        let d = &self.dirs;
        Ok(match d.version {
            Version::V2 => Usage {
                memory_bytes: read_number(&d.memory.join("memory.current"))?,
                cpu_seconds: read_keyed(&d.cpuacct.join("cpu.stat"), "usage_usec")? as f64 / 1e6,
            },
            Version::Hybrid => Usage {
                memory_bytes: read_number(&d.memory.join("memory.usage_in_bytes"))?,
                cpu_seconds: read_number(&d.cpuacct.join("cpuacct.usage"))? as f64 / 1e9,
            },
        })
    }

    /// How many processes of the group the kernel has killed for going
    /// over the memory limit, since the group was created: `oom_kill` of
    /// `memory.events` (unified) or `memory.oom_control` (hybrid).
    ///
    /// # Errors
    ///
    /// The counter cannot be read.
    pub(crate) fn oom_kills(&self) -> Result<u64> {
        let d = &self.dirs;
        match d.version {
            Version::V2 => read_keyed(&d.memory.join("memory.events"), "oom_kill"),
            Version::Hybrid => read_keyed(&d.memory.join("memory.oom_control"), "oom_kill"),
        }
    }

    /// Removes the group from every hierarchy, waiting up to 2 seconds
    /// for processes that are still exiting; the kernel refuses to remove
    /// a group with processes in it, so this never ends one. A directory
    /// already gone is fine.
    ///
    /// # Errors
    ///
    /// A directory cannot be removed (busy after 2 seconds: processes are
    /// left, see [`Group::kill_all`]).
    pub(crate) fn remove(&self) -> Result<()> {
        let mut result = Ok(());
        for dir in self.dirs.unique() {
            if let Err(err) = remove_dir(&dir, REMOVE_DEADLINE) {
                result = result.and(Err(err));
            }
        }
        result
    }
}
