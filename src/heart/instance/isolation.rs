//! Isolation of instances (issue 12, SPEC §7 "Isolation"): the policy
//! over the mechanisms of `process` (credentials) and `cgroup` (control
//! groups).
//!
//! - **Users.** When the heart runs as root, an instance runs as its own
//!   `user`, else as the node's `--run-as` user; with neither, its start is
//!   refused, and so is `root`, unless the heart runs with
//!   `--allow-root-apps`. When the heart does not run as root, it cannot
//!   switch users: a `user` other than its own is refused at register.
//!   The instance directory is given to the user (recursively, when its
//!   top is not the user's already); the log stays the heart's, mode 0640,
//!   group the user's primary group, so the user reads it and nobody else
//!   does.
//! - **Control groups.** Each start of a supervised instance gets a fresh
//!   group, `paasmaker/SCOPE/ID`, where SCOPE is `h` and a 64-bit FNV-1a
//!   hash of the data directory in hex (two hearts never share groups),
//!   limited before anything runs in it: startup commands and the command
//!   join it before they are executed. A stop ends whatever is left in it
//!   after the supervisor's grace and removes it; the periodic check and
//!   the reconcile at start-up ([`Node::sweep_groups`]) end the processes
//!   left in the group of an instance that does not run (a daemon that
//!   escaped its supervisor's death), naming each, and remove the group.
//! - **Accounting.** OOM kills are counted from the group's creation: an
//!   exit after one says "out of memory"; memory and CPU time in use are
//!   read from the group for `GET /instances/ID`.

use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::{Mutex, OnceLock};

use nix::unistd::{Gid, Uid};

use super::{lock, Node};
use crate::cgroup::{self, Group, Scope, Settings, Support, BASE};
use crate::cli;
use crate::error::{Error, Refusal, Result};
use crate::heart::config::Config;
use crate::heart::layout::Layout;
use crate::heart::PROG;
use crate::process::{self, Confinement, Credentials};
use crate::protocol::{InstanceId, InstanceView, Limits, State};

/// The node's isolation: its control groups, its default user and its
/// rules.
pub(crate) struct Isolation {
    /// What `GET /health` reports.
    support: Support,
    /// The name of this heart's scope ([`scope_name`]).
    scope_name: String,
    /// This heart's groups, opened (created) when first needed: a heart
    /// that never starts an instance leaves nothing behind.
    scope: OnceLock<Scope>,
    /// `--run-as`, resolved.
    run_as: Option<Credentials>,
    /// `--allow-root-apps`.
    allow_root: bool,
    /// The heart's own effective uid.
    uid: Uid,
    /// OOM kills each group had when its instance was launched.
    oom_base: Mutex<HashMap<InstanceId, u64>>,
}

/// The name of the scope of the heart on `data_dir`: `h` and the 64-bit
/// FNV-1a hash of its path in hex.
pub(crate) fn scope_name(data_dir: &Path) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in data_dir.as_os_str().as_encoded_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("h{hash:016x}")
}

impl Isolation {
    /// The isolation of a heart with `config` on `layout`: resolves
    /// `--run-as` and detects the control groups (this heart's scope is
    /// created at the first start that needs it).
    ///
    /// # Errors
    ///
    /// `--run-as` names an unknown user, `root` without
    /// `--allow-root-apps`, or another user than the heart's own when the
    /// heart does not run as root (misuse).
    pub(crate) fn new(config: &Config, layout: &Layout) -> Result<Isolation> {
        let uid = Uid::effective();
        let run_as = match &config.run_as {
            Some(user) => {
                let creds = process::resolve_user(user)
                    .map_err(|e| Error::Usage(format!("--run-as: {e}")))?;
                if creds.uid.is_root() && !config.allow_root_apps {
                    return Err(Error::Usage(
                        "--run-as root needs --allow-root-apps".to_owned(),
                    ));
                }
                if !uid.is_root() && creds.uid != uid {
                    return Err(Error::Usage(format!(
                        "--run-as {user}: the heart runs as uid {uid}, not as root, and cannot \
                         run applications as another user"
                    )));
                }
                Some(creds)
            }
            None => None,
        };
        Ok(Isolation {
            support: cgroup::detect(),
            scope_name: scope_name(layout.root()),
            scope: OnceLock::new(),
            run_as,
            allow_root: config.allow_root_apps,
            uid,
            oom_base: Mutex::new(HashMap::new()),
        })
    }

    /// True when this node has control groups.
    fn has_groups(&self) -> bool {
        self.support.layout().is_some()
    }

    /// This heart's scope, created if `create`, else only if it exists
    /// already; `None` without control groups.
    ///
    /// # Errors
    ///
    /// The scope cannot be created.
    fn scope(&self, create: bool) -> Result<Option<&Scope>> {
        if let Some(scope) = self.scope.get() {
            return Ok(Some(scope));
        }
        let Some(layout) = self.support.layout() else {
            return Ok(None);
        };
        let dirs = layout.roots.join(BASE).join(&self.scope_name).unique();
        if !create && !dirs.iter().any(|d| d.exists()) {
            return Ok(None);
        }
        let scope = Scope::open(layout, &self.scope_name)?;
        Ok(Some(self.scope.get_or_init(|| scope)))
    }

    /// The group of `id` in an existing scope.
    fn existing_group(&self, id: &InstanceId) -> Option<Group> {
        let scope = self.scope(false).unwrap_or_else(|e| {
            cli::warn(PROG, e);
            None
        })?;
        scope.group(id.as_str()).ok()
    }

    /// `"cgroup v2"`, `"cgroup v1+v2 hybrid"` or `"none: REASON"`, for
    /// `GET /health`.
    pub(crate) fn summary(&self) -> String {
        self.support.summary()
    }

    /// Checks the `user` and `limits` of a register request against the
    /// node.
    ///
    /// # Errors
    ///
    /// `Unprocessable`: an unknown user; root without `--allow-root-apps`;
    /// another user than the heart's own when the heart is not root;
    /// limits that need control groups on a node without them.
    pub(crate) fn check_register(&self, user: Option<&str>, limits: &Limits) -> Result<()> {
        let refuse = |message: String| Error::refused(Refusal::Unprocessable, message);
        if let Some(user) = user {
            let creds = process::resolve_user(user).map_err(|e| refuse(format!("user: {e}")))?;
            self.check_user(&creds).map_err(refuse)?;
        }
        if limits.need_cgroup() && !self.has_groups() {
            return Err(refuse(format!(
                "limits: memory_max, cpu_max and pids_max need control groups, and this node \
                 has none ({}); only nofile can be set",
                self.support.summary()
            )));
        }
        Ok(())
    }

    /// Whether instances may run as `creds` on this node.
    fn check_user(&self, creds: &Credentials) -> std::result::Result<(), String> {
        if creds.uid.is_root() && !self.allow_root {
            return Err(format!(
                "user {}: applications never run as root unless the heart runs with \
                 --allow-root-apps",
                creds.name
            ));
        }
        if !self.uid.is_root() && creds.uid != self.uid {
            return Err(format!(
                "user {}: the heart runs as uid {}, not as root, and cannot run applications \
                 as another user",
                creds.name, self.uid
            ));
        }
        Ok(())
    }

    /// The credentials an instance registered with `user` runs with:
    /// `None` when it runs as the heart itself (the heart is not root, or
    /// runs root applications by `--allow-root-apps`).
    ///
    /// # Errors
    ///
    /// `Forbidden` with the reason: as root, no user and no default
    /// without `--allow-root-apps`; the user is unknown now, or is not
    /// allowed (see [`Isolation::check_register`]).
    pub(crate) fn credentials(&self, user: Option<&str>) -> Result<Option<Credentials>> {
        let refuse = |message: String| Error::refused(Refusal::Forbidden, message);
        let creds = match user {
            Some(user) => process::resolve_user(user).map_err(|e| refuse(e.to_string()))?,
            None => match &self.run_as {
                Some(creds) => creds.clone(),
                None if !self.uid.is_root() || self.allow_root => return Ok(None),
                None => {
                    return Err(refuse(
                        "it has no user, and the node has no default: the heart runs as root \
                         and runs no application as root unless started with \
                         --allow-root-apps; give the instance a user, or the node a default \
                         with --run-as"
                            .to_owned(),
                    ))
                }
            },
        };
        self.check_user(&creds).map_err(refuse)?;
        Ok((creds.uid != self.uid).then_some(creds))
    }

    /// A fresh control group for a launch of `id`, limited by `limits`:
    /// processes left in an old group of `id` are ended (each named in a
    /// warning) and the old group removed first, so that its counters
    /// start from zero. `None` without control groups.
    ///
    /// # Errors
    ///
    /// Limits that need a group on a node without them; the group cannot
    /// be emptied, created or limited.
    pub(crate) fn prepare(&self, id: &InstanceId, limits: &Limits) -> Result<Option<Group>> {
        let Some(scope) = self.scope(true)? else {
            if limits.need_cgroup() {
                return Err(Error::invalid(format!(
                    "its limits need control groups, and this node has none ({})",
                    self.support.summary()
                )));
            }
            return Ok(None);
        };
        let group = scope.group(id.as_str())?;
        if group.dirs().iter().any(|d| d.exists()) {
            end_leftovers(id, &group)?;
            group.remove()?;
        }
        let group = scope.create(id.as_str())?;
        group.apply(&Settings::from(limits))?;
        let base = group.oom_kills().unwrap_or(0);
        lock(&self.oom_base).insert(id.clone(), base);
        Ok(Some(group))
    }

    /// Ends whatever is left in the group of `id` and removes it; failures
    /// are warnings (the next sweep tries again).
    pub(crate) fn release(&self, id: &InstanceId) {
        let Some(group) = self.existing_group(id) else {
            return;
        };
        if !group.dirs().iter().any(|d| d.exists()) {
            return;
        }
        if let Err(e) = end_leftovers(id, &group).and_then(|()| group.remove()) {
            cli::warn(PROG, e);
        }
    }

    /// "out of memory ..." when the kernel killed a process of `id`'s
    /// group for going over its memory limit since its launch.
    pub(crate) fn oom_message(&self, id: &InstanceId) -> Option<String> {
        let group = self.existing_group(id)?;
        let kills = group.oom_kills().ok()?;
        let base = lock(&self.oom_base).get(id).copied().unwrap_or(0);
        (kills > base).then(|| {
            format!(
                "out of memory: the kernel killed {} process(es) of it at its memory_max",
                kills - base
            )
        })
    }

    /// `view` with the memory and CPU time its group uses, while it runs.
    pub(crate) fn add_usage(&self, mut view: InstanceView) -> InstanceView {
        if !matches!(view.state, State::Running | State::Starting) {
            return view;
        }
        let usage = self
            .existing_group(&view.instance_id)
            .and_then(|group| group.usage().ok());
        if let Some(usage) = usage {
            view.memory_bytes = Some(usage.memory_bytes);
            view.cpu_seconds = Some(usage.cpu_seconds);
        }
        view
    }

    /// At shutdown: removes this heart's scope if no group is left in it
    /// (groups of running instances stay, and with them the scope).
    pub(crate) fn close(&self) {
        if let Ok(Some(scope)) = self.scope(false) {
            if scope.list().is_ok_and(|groups| groups.is_empty()) {
                let _ = scope.remove();
            }
        }
    }

    /// The names of the groups in this heart's scope.
    fn groups(&self) -> Vec<String> {
        let Ok(Some(scope)) = self.scope(false) else {
            return Vec::new();
        };
        scope.list().unwrap_or_else(|e| {
            cli::warn(PROG, e);
            Vec::new()
        })
    }
}

/// Ends every process in `group` of `id`, naming each in a warning.
fn end_leftovers(id: &InstanceId, group: &Group) -> Result<()> {
    let pids = group.procs()?;
    if pids.is_empty() {
        return Ok(());
    }
    for pid in &pids {
        let name = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        cli::warn(
            PROG,
            format!(
                "ending process {pid} ({}) left in the control group of {id}",
                name.trim()
            ),
        );
    }
    group.kill_all()
}

/// The confinement of a command of an instance: its group and its
/// RLIMIT_NOFILE.
pub(crate) fn confinement(group: Option<&Group>, limits: &Limits) -> Result<Confinement> {
    let dirs = group.map(Group::dirs).unwrap_or_default();
    Confinement::new(&dirs, limits.nofile)
}

/// Gives `dir` and everything in it to `creds` (without following
/// symbolic links), unless its top already belongs to the user.
///
/// # Errors
///
/// An entry cannot be read or given (the path and the reason).
pub(crate) fn give_tree(dir: &Path, creds: &Credentials) -> Result<()> {
    let meta = fs::symlink_metadata(dir).map_err(|e| Error::io("read", dir, e))?;
    if meta.uid() == creds.uid.as_raw() && meta.gid() == creds.gid.as_raw() {
        return Ok(());
    }
    crate::archive::chown_tree(dir, creds.uid, creds.gid)
}

/// Creates the instance log if needed, mode 0640, its group the primary
/// group of `creds` (so the instance's user reads it, and no one else but
/// the heart); an older log readable by others is made 0640.
///
/// # Errors
///
/// The log cannot be created or changed.
pub(crate) fn prepare_log(path: &Path, creds: Option<&Credentials>) -> Result<()> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
        .map_err(|e| Error::io("open log", path, e))?;
    let meta = file.metadata().map_err(|e| Error::io("read", path, e))?;
    if meta.mode() & 0o007 != 0 {
        file.set_permissions(fs::Permissions::from_mode(0o640))
            .map_err(|e| Error::io("change the mode of", path, e))?;
    }
    if let Some(creds) = creds {
        if meta.gid() != creds.gid.as_raw() {
            std::os::unix::fs::fchown(&file, None, Some(Gid::as_raw(creds.gid)))
                .map_err(|e| Error::io("change the group of", path, e))?;
        }
    }
    Ok(())
}

impl Node {
    /// Ends the processes left in the groups of instances that do not
    /// run (no record, not `RUNNING`, or a supervisor that is gone),
    /// naming each, and removes those groups. Instances busy with an
    /// operation are skipped until the next pass.
    pub(crate) fn sweep_groups(&self) {
        for name in self.isolation.groups() {
            let Ok(id) = name.parse::<InstanceId>() else {
                continue;
            };
            let op = self.op_lock(&id);
            let Ok(_guard) = op.try_lock() else {
                continue;
            };
            let live = self.record(&id).is_ok_and(|rec| {
                matches!(rec.state, State::Running | State::Starting) && self.is_supervised(&rec)
            });
            if !live {
                self.isolation.release(&id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn without_groups(allow_root: bool) -> Isolation {
        Isolation {
            support: Support::Unavailable("no cgroup file system is mounted".into()),
            scope_name: scope_name(Path::new("/d")),
            scope: OnceLock::new(),
            run_as: None,
            allow_root,
            uid: Uid::effective(),
            oom_base: Mutex::new(HashMap::new()),
        }
    }

    #[test]
    fn without_groups_only_nofile_is_accepted_and_the_reason_is_given() {
        let iso = without_groups(true);
        let nofile: Limits = serde_json::from_str(r#"{"nofile": 256}"#).unwrap();
        iso.check_register(None, &nofile).unwrap();
        let memory: Limits = serde_json::from_str(r#"{"memory_max": "64M"}"#).unwrap();
        let err = iso.check_register(None, &memory).unwrap_err();
        assert!(
            matches!(err, Error::Refused(Refusal::Unprocessable(_))),
            "{err}"
        );
        assert_eq!(
            err.to_string(),
            "limits: memory_max, cpu_max and pids_max need control groups, and this node has \
             none (none: no cgroup file system is mounted); only nofile can be set"
        );
        let id: InstanceId = "a".parse().unwrap();
        assert!(iso.prepare(&id, &nofile).unwrap().is_none());
        assert!(iso.prepare(&id, &memory).is_err());
        assert_eq!(iso.summary(), "none: no cgroup file system is mounted");
    }

    #[test]
    fn root_is_refused_unless_allowed() {
        let err = without_groups(false)
            .check_register(Some("root"), &Limits::default())
            .unwrap_err();
        assert!(err.to_string().contains("--allow-root-apps"), "{err}");
        if Uid::effective().is_root() {
            without_groups(true)
                .check_register(Some("root"), &Limits::default())
                .unwrap();
            let err = without_groups(false).credentials(None).unwrap_err();
            assert!(
                matches!(err, Error::Refused(Refusal::Forbidden(_))),
                "{err}"
            );
            assert_eq!(without_groups(true).credentials(None).unwrap(), None);
        }
    }

    #[test]
    fn scope_names_differ_per_data_directory_and_are_valid() {
        let a = scope_name(Path::new("/var/lib/pm/a"));
        let b = scope_name(Path::new("/var/lib/pm/b"));
        assert_ne!(a, b);
        assert_eq!(a, scope_name(Path::new("/var/lib/pm/a")));
        assert_eq!(a.len(), 17);
        assert!(a.starts_with('h') && a[1..].bytes().all(|c| c.is_ascii_hexdigit()));
    }
}
