//! Which control groups this node can use: the layout detected from the
//! mounts, or the reason there is none.
//!
//! Two layouts are supported. The unified one (cgroup v2 with the
//! `memory`, `cpu` and `pids` controllers, as on Debian 11+, Ubuntu 22.04+
//! and RHEL 9) does everything in one hierarchy. The hybrid one keeps
//! those controllers in cgroup v1 hierarchies (`memory`, `cpu`, `cpuacct`,
//! `pids`) beside a cgroup2 mount without controllers: there the v2 group
//! tracks the processes and kills them (`cgroup.kill`), and the v1 groups
//! hold the limits and the accounting. Anything else (no cgroup file
//! system, a read-only one, no permission, a v2 root that does not
//! delegate the controllers, cgroup v1 alone) is "none", with a reason.

use std::fs;
use std::path::{Path, PathBuf};

use nix::unistd::AccessFlags;

use super::mountinfo::{self, Kind, Mount};
use super::BASE;

/// The controllers an instance's limits need, as cgroup v2 names them.
pub(crate) const CONTROLLERS: [&str; 3] = ["memory", "cpu", "pids"];

/// The cgroup v1 hierarchies of the hybrid layout: the three above, and
/// `cpuacct` for CPU time.
const V1_CONTROLLERS: [&str; 4] = ["memory", "cpu", "cpuacct", "pids"];

/// Which layout a group lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Version {
    /// cgroup v2 with the controllers: one directory does everything.
    V2,
    /// cgroup v1 controllers beside a v2 hierarchy without them.
    Hybrid,
}

/// The directories of one group (or of the hierarchy roots), one per job.
/// In the unified layout all five are the same directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Dirs {
    /// The layout, which decides the names of the interface files.
    pub version: Version,
    /// The cgroup2 directory: the truth on which processes are in the
    /// group, and `cgroup.kill`.
    pub unified: PathBuf,
    /// Memory limit, usage and OOM kills.
    pub memory: PathBuf,
    /// CPU limit.
    pub cpu: PathBuf,
    /// CPU time used.
    pub cpuacct: PathBuf,
    /// Process limit.
    pub pids: PathBuf,
}

impl Dirs {
    /// The same directories, each with `name` appended.
    pub(crate) fn join(&self, name: impl AsRef<Path>) -> Dirs {
        let name = name.as_ref();
        Dirs {
            version: self.version,
            unified: self.unified.join(name),
            memory: self.memory.join(name),
            cpu: self.cpu.join(name),
            cpuacct: self.cpuacct.join(name),
            pids: self.pids.join(name),
        }
    }

    /// Every distinct directory, the cgroup2 one first: a process joins
    /// each of them, and a group is made of them.
    pub(crate) fn unique(&self) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = Vec::with_capacity(5);
        for dir in [
            &self.unified,
            &self.memory,
            &self.cpu,
            &self.cpuacct,
            &self.pids,
        ] {
            if !out.contains(dir) {
                out.push(dir.clone());
            }
        }
        out
    }
}

/// A usable layout: the roots of its hierarchies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Layout {
    /// The mount points, one per job.
    pub(crate) roots: Dirs,
}

impl Layout {
    /// `"cgroup v2"` or `"cgroup v1+v2 hybrid"`, for `GET /health` and
    /// the man page.
    pub(crate) fn summary(&self) -> &'static str {
        match self.roots.version {
            Version::V2 => "cgroup v2",
            Version::Hybrid => "cgroup v1+v2 hybrid",
        }
    }
}

/// What this node can do with control groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Support {
    /// Groups can be created in this layout.
    Available(Layout),
    /// No groups: why, for the operator.
    Unavailable(String),
}

impl Support {
    /// `"cgroup v2"`, `"cgroup v1+v2 hybrid"` or `"none: REASON"`.
    pub(crate) fn summary(&self) -> String {
        match self {
            Support::Available(layout) => layout.summary().to_owned(),
            Support::Unavailable(reason) => format!("none: {reason}"),
        }
    }

    /// The layout, when there is one.
    pub(crate) fn layout(&self) -> Option<&Layout> {
        match self {
            Support::Available(layout) => Some(layout),
            Support::Unavailable(_) => None,
        }
    }
}

/// Detects the layout of this process's mount namespace from
/// `/proc/self/mountinfo`, checking that the controllers are there,
/// delegated to the base's parent, and that the base can be written.
pub(crate) fn detect() -> Support {
    match fs::read_to_string("/proc/self/mountinfo") {
        Ok(text) => from_mounts(&mountinfo::parse(&text)),
        Err(e) => Support::Unavailable(format!("unable to read /proc/self/mountinfo: {e}")),
    }
}

/// Decides the layout from the mounts; reads the root groups' files.
pub(crate) fn from_mounts(mounts: &[Mount]) -> Support {
    match choose(mounts) {
        Ok(roots) => match usable(mounts, &roots) {
            Ok(()) => Support::Available(Layout { roots }),
            Err(reason) => Support::Unavailable(reason),
        },
        Err(reason) => Support::Unavailable(reason),
    }
}

/// Picks the hierarchies: v2 if its root has every controller, else the
/// v1 ones beside a cgroup2 mount.
fn choose(mounts: &[Mount]) -> Result<Dirs, String> {
    let unified = mounts.iter().find(|m| m.kind == Kind::V2);
    let v1 = |controller: &str| {
        mounts.iter().find_map(|m| match &m.kind {
            Kind::V1(names) if names.iter().any(|n| n == controller) => Some(m.point.clone()),
            _ => None,
        })
    };
    let Some(unified) = unified else {
        return Err(if v1("memory").is_some() {
            "cgroup v1 without a cgroup2 hierarchy (the legacy layout) is not supported: \
             processes could not be tracked and killed as a group"
                .to_owned()
        } else {
            "no cgroup file system is mounted".to_owned()
        });
    };
    let root = &unified.point;
    let controllers_file = root.join("cgroup.controllers");
    let available = fs::read_to_string(&controllers_file)
        .map_err(|e| format!("unable to read {}: {e}", controllers_file.display()))?;
    let missing_v2: Vec<&str> = CONTROLLERS
        .into_iter()
        .filter(|c| !available.split_whitespace().any(|a| a == *c))
        .collect();
    if missing_v2.is_empty() {
        return Ok(Dirs {
            version: Version::V2,
            unified: root.clone(),
            memory: root.clone(),
            cpu: root.clone(),
            cpuacct: root.clone(),
            pids: root.clone(),
        });
    }
    let found: Vec<Option<PathBuf>> = V1_CONTROLLERS.iter().map(|c| v1(c)).collect();
    match found.as_slice() {
        [Some(memory), Some(cpu), Some(cpuacct), Some(pids)] => Ok(Dirs {
            version: Version::Hybrid,
            unified: root.clone(),
            memory: memory.clone(),
            cpu: cpu.clone(),
            cpuacct: cpuacct.clone(),
            pids: pids.clone(),
        }),
        _ => {
            let missing_v1: Vec<&str> = V1_CONTROLLERS
                .iter()
                .zip(&found)
                .filter(|(_, f)| f.is_none())
                .map(|(c, _)| *c)
                .collect();
            Err(format!(
                "the cgroup2 hierarchy at {} lacks the controllers {} and no cgroup v1 \
                 hierarchy has {}",
                root.display(),
                missing_v2.join(", "),
                missing_v1.join(", ")
            ))
        }
    }
}

/// Checks that the base can be created or used in every hierarchy and,
/// in the unified layout, that the root delegates the controllers (we
/// never write to a group we did not create).
fn usable(mounts: &[Mount], roots: &Dirs) -> Result<(), String> {
    for root in roots.unique() {
        if mounts.iter().any(|m| m.point == root && m.read_only) {
            return Err(format!("{} is mounted read-only", root.display()));
        }
        let base = root.join(BASE);
        let target = if base.is_dir() { base } else { root };
        if let Err(errno) = nix::unistd::access(&target, AccessFlags::W_OK) {
            return Err(format!(
                "unable to write to {}: {} (control groups need root or a delegated {BASE} group)",
                target.display(),
                errno.desc()
            ));
        }
    }
    if roots.version == Version::V2 {
        let file = roots.unified.join("cgroup.subtree_control");
        let enabled = fs::read_to_string(&file)
            .map_err(|e| format!("unable to read {}: {e}", file.display()))?;
        let missing: Vec<&str> = CONTROLLERS
            .into_iter()
            .filter(|c| !enabled.split_whitespace().any(|e| e == *c))
            .collect();
        if !missing.is_empty() {
            return Err(format!(
                "{} does not enable {}: the parent of the {BASE} group must delegate them",
                file.display(),
                missing.join(", ")
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroup::tests::FakeTree;

    #[test]
    fn unified_root_with_the_controllers_delegated_is_v2() {
        let tree = FakeTree::new("v2");
        tree.file(
            "unified/cgroup.controllers",
            "cpuset cpu io memory hugetlb pids rdma\n",
        );
        tree.file("unified/cgroup.subtree_control", "cpu io memory pids\n");
        let support = from_mounts(&tree.mounts(&["unified"], &[]));
        assert_eq!(support.summary(), "cgroup v2");
        let roots = &support.layout().unwrap().roots;
        assert_eq!(roots.unique(), [tree.path("unified")]);
    }

    #[test]
    fn unified_root_that_does_not_delegate_is_none_with_the_file_named() {
        let tree = FakeTree::new("v2-undelegated");
        tree.file("unified/cgroup.controllers", "cpu io memory pids\n");
        tree.file("unified/cgroup.subtree_control", "memory\n");
        let summary = from_mounts(&tree.mounts(&["unified"], &[])).summary();
        let file = tree.path("unified/cgroup.subtree_control");
        assert_eq!(
            summary,
            format!(
                "none: {} does not enable cpu, pids: the parent of the paasmaker group must \
                 delegate them",
                file.display()
            )
        );
    }

    #[test]
    fn v1_controllers_beside_an_empty_cgroup2_are_hybrid() {
        let tree = FakeTree::new("hybrid");
        tree.file("unified/cgroup.controllers", "hugetlb\n");
        let mounts = tree.mounts(
            &["unified"],
            &[
                ("cpu,cpuacct", &["cpu", "cpuacct"]),
                ("memory", &["memory"]),
                ("pids", &["pids"]),
            ],
        );
        let support = from_mounts(&mounts);
        assert_eq!(support.summary(), "cgroup v1+v2 hybrid");
        let roots = &support.layout().unwrap().roots;
        assert_eq!(
            roots.unique(),
            [
                tree.path("unified"),
                tree.path("memory"),
                tree.path("cpu,cpuacct"),
                tree.path("pids")
            ]
        );
        let group = roots.join("paasmaker/s/web-1");
        assert_eq!(group.cpu, group.cpuacct);
        assert_eq!(group.memory, tree.path("memory/paasmaker/s/web-1"));
    }

    #[test]
    fn missing_pieces_give_reasons() {
        assert_eq!(
            from_mounts(&[]).summary(),
            "none: no cgroup file system is mounted"
        );
        let tree = FakeTree::new("partial");
        tree.file("unified/cgroup.controllers", "memory\n");
        let summary = from_mounts(&tree.mounts(&["unified"], &[("memory", &["memory"])])).summary();
        assert!(
            summary.ends_with(
                "lacks the controllers cpu, pids and no cgroup v1 hierarchy has cpu, cpuacct, pids"
            ),
            "{summary}"
        );
        let legacy = tree.mounts(&[], &[("memory", &["memory"])]);
        assert!(from_mounts(&legacy).summary().contains("legacy layout"));
        let mut read_only = tree.mounts(&["unified"], &[]);
        tree.file("unified/cgroup.controllers", "memory cpu pids\n");
        read_only[0].read_only = true;
        assert!(from_mounts(&read_only)
            .summary()
            .ends_with("is mounted read-only"));
    }

    #[test]
    fn this_machine_has_a_layout_or_a_reason() {
        let summary = detect().summary();
        assert!(
            summary == "cgroup v2"
                || summary == "cgroup v1+v2 hybrid"
                || summary.starts_with("none: "),
            "{summary}"
        );
    }
}
