//! Unit tests of the cgroup module that need no root: the file formats,
//! and the interface files each layout writes and reads, checked on fake
//! trees laid out with the kernel's file names (the unified layout with
//! controllers cannot be had on the hybrid test machines).

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::group::CpuQuota;
use super::layout::{self, Layout, Support};
use super::mountinfo::{Kind, Mount};
use super::*;

/// A directory under the system temporary directory, removed on drop:
/// fake cgroup trees and scratch space of the tests.
pub(crate) struct FakeTree {
    root: PathBuf,
}

impl FakeTree {
    pub(crate) fn new(name: &str) -> FakeTree {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let root = std::env::temp_dir().join(format!(
            "pm-cgroup-{name}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(&root).unwrap();
        FakeTree { root }
    }

    pub(crate) fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// Writes `content` to `rel`, creating the directories on the way.
    pub(crate) fn file(&self, rel: &str, content: &str) {
        let path = self.path(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, content).unwrap();
    }

    pub(crate) fn read(&self, rel: &str) -> String {
        fs::read_to_string(self.path(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
    }

    /// Mounts of cgroup2 at each of `v2` and of v1 hierarchies with the
    /// given controllers, all inside the tree (the directories are made).
    pub(crate) fn mounts(&self, v2: &[&str], v1: &[(&str, &[&str])]) -> Vec<Mount> {
        for rel in v2.iter().chain(v1.iter().map(|(rel, _)| rel)) {
            fs::create_dir_all(self.path(rel)).unwrap();
        }
        let mut mounts: Vec<Mount> = v2
            .iter()
            .map(|rel| Mount {
                point: self.path(rel),
                kind: Kind::V2,
                read_only: false,
            })
            .collect();
        mounts.extend(v1.iter().map(|(rel, controllers)| Mount {
            point: self.path(rel),
            kind: Kind::V1(controllers.iter().map(|c| (*c).to_owned()).collect()),
            read_only: false,
        }));
        mounts
    }
}

impl Drop for FakeTree {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.root);
    }
}

fn layout_of(support: Support) -> Layout {
    match support {
        Support::Available(layout) => layout,
        Support::Unavailable(reason) => panic!("no layout: {reason}"),
    }
}

const LIMITS: Settings = Settings {
    memory_max: Some(64 << 20),
    cpu_max: Some(CpuQuota {
        quota_usec: 20_000,
        period_usec: 100_000,
    }),
    pids_max: Some(32),
};

#[test]
fn keyed_files_and_procs_lists_parse() {
    let cpu_stat = "usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\n";
    assert_eq!(keyed(cpu_stat, "usage_usec"), Some(2_500_000));
    assert_eq!(keyed(cpu_stat, "usage"), None);
    let events = "low 0\nhigh 0\nmax 17\noom 2\noom_kill 2\noom_group_kill 0\n";
    assert_eq!(keyed(events, "oom_kill"), Some(2));
    let oom_control = "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n";
    assert_eq!(keyed(oom_control, "oom_kill"), Some(1));
    assert_eq!(parse_pids("12\n345\n"), [12, 345]);
    assert!(parse_pids("").is_empty());
}

#[test]
fn unified_layout_enables_controllers_in_its_own_groups_and_writes_v2_files() {
    let tree = FakeTree::new("v2-group");
    tree.file("cg/cgroup.controllers", "cpu io memory pids\n");
    tree.file("cg/cgroup.subtree_control", "cpu io memory pids\n");
    // What the kernel would create with the directories.
    tree.file("cg/paasmaker/cgroup.subtree_control", "");
    tree.file("cg/paasmaker/s1/cgroup.subtree_control", "memory\n");
    for file in ["memory.max", "memory.swap.max", "cpu.max", "pids.max"] {
        tree.file(&format!("cg/paasmaker/s1/web-1/{file}"), "max\n");
    }
    let layout = layout_of(layout::from_mounts(&tree.mounts(&["cg"], &[])));
    let scope = Scope::open(&layout, "s1").unwrap();
    assert_eq!(
        tree.read("cg/paasmaker/cgroup.subtree_control"),
        "+memory +cpu +pids"
    );
    assert_eq!(
        tree.read("cg/paasmaker/s1/cgroup.subtree_control"),
        "+cpu +pids"
    );
    assert_eq!(
        tree.read("cg/cgroup.subtree_control"),
        "cpu io memory pids\n"
    );

    let group = scope.create("web-1").unwrap();
    assert_eq!(group.dirs(), [tree.path("cg/paasmaker/s1/web-1")]);
    assert_eq!(
        group.procs_files(),
        [tree.path("cg/paasmaker/s1/web-1/cgroup.procs")]
    );
    group.apply(&LIMITS).unwrap();
    let read = |file: &str| tree.read(&format!("cg/paasmaker/s1/web-1/{file}"));
    assert_eq!(read("memory.max"), "67108864");
    assert_eq!(read("memory.swap.max"), "0");
    assert_eq!(read("cpu.max"), "20000 100000");
    assert_eq!(read("pids.max"), "32");
    group.apply(&Settings::default()).unwrap();
    assert_eq!(read("memory.max"), "max");
    assert_eq!(read("memory.swap.max"), "max");
    assert_eq!(read("cpu.max"), "max 100000");
    assert_eq!(read("pids.max"), "max");

    tree.file("cg/paasmaker/s1/web-1/memory.current", "12345678\n");
    tree.file(
        "cg/paasmaker/s1/web-1/cpu.stat",
        "usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\n",
    );
    tree.file(
        "cg/paasmaker/s1/web-1/memory.events",
        "low 0\nhigh 0\nmax 9\noom 1\noom_kill 1\n",
    );
    let usage = group.usage().unwrap();
    assert_eq!(usage.memory_bytes, 12_345_678);
    assert!((usage.cpu_seconds - 2.5).abs() < 1e-9);
    assert_eq!(group.oom_kills().unwrap(), 1);
    assert_eq!(scope.list().unwrap(), ["web-1"]);
}

#[test]
fn hybrid_layout_writes_v1_files_with_swap_included() {
    let tree = FakeTree::new("hybrid-group");
    tree.file("unified/cgroup.controllers", "hugetlb\n");
    let g = "paasmaker/s1/web-1";
    for file in [
        "memory/{g}/memory.limit_in_bytes",
        "memory/{g}/memory.memsw.limit_in_bytes",
        "cpu/{g}/cpu.cfs_period_us",
        "cpu/{g}/cpu.cfs_quota_us",
        "pids/{g}/pids.max",
    ] {
        tree.file(&file.replace("{g}", g), "");
    }
    let mounts = tree.mounts(
        &["unified"],
        &[
            ("cpu", &["cpu"]),
            ("cpuacct", &["cpuacct"]),
            ("memory", &["memory"]),
            ("pids", &["pids"]),
        ],
    );
    let layout = layout_of(layout::from_mounts(&mounts));
    let scope = Scope::open(&layout, "s1").unwrap();
    let group = scope.create("web-1").unwrap();
    assert_eq!(
        group.dirs(),
        ["unified", "memory", "cpu", "cpuacct", "pids"].map(|h| tree.path(&format!("{h}/{g}")))
    );
    group.apply(&LIMITS).unwrap();
    let read = |file: &str| tree.read(&file.replace("{g}", g));
    assert_eq!(read("memory/{g}/memory.limit_in_bytes"), "67108864");
    assert_eq!(read("memory/{g}/memory.memsw.limit_in_bytes"), "67108864");
    assert_eq!(read("cpu/{g}/cpu.cfs_period_us"), "100000");
    assert_eq!(read("cpu/{g}/cpu.cfs_quota_us"), "20000");
    assert_eq!(read("pids/{g}/pids.max"), "32");
    group.apply(&Settings::default()).unwrap();
    assert_eq!(read("memory/{g}/memory.limit_in_bytes"), "-1");
    assert_eq!(read("memory/{g}/memory.memsw.limit_in_bytes"), "-1");
    assert_eq!(read("cpu/{g}/cpu.cfs_quota_us"), "-1");
    assert_eq!(read("pids/{g}/pids.max"), "max");

    tree.file(&format!("memory/{g}/memory.usage_in_bytes"), "4096\n");
    tree.file(&format!("cpuacct/{g}/cpuacct.usage"), "1500000000\n");
    tree.file(
        &format!("memory/{g}/memory.oom_control"),
        "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n",
    );
    let usage = group.usage().unwrap();
    assert_eq!(usage.memory_bytes, 4096);
    assert!((usage.cpu_seconds - 1.5).abs() < 1e-9);
    assert_eq!(group.oom_kills().unwrap(), 3);
}

#[test]
fn names_must_be_one_plain_path_component_and_errors_name_the_path() {
    let tree = FakeTree::new("names");
    tree.file("unified/cgroup.controllers", "memory cpu pids\n");
    tree.file("unified/cgroup.subtree_control", "memory cpu pids\n");
    let layout = layout_of(layout::from_mounts(&tree.mounts(&["unified"], &[])));
    for bad in ["", "..", ".hidden", "a/b", "a b", &"x".repeat(65)] {
        let err = Scope::open(&layout, bad).unwrap_err().to_string();
        assert!(err.starts_with("invalid control group scope"), "{err}");
    }
    // The kernel would have created the interface file; the fake tree
    // has none, so enabling the controllers fails, naming the file.
    let err = Scope::open(&layout, "s1").unwrap_err().to_string();
    let file = tree.path("unified/paasmaker/cgroup.subtree_control");
    assert!(
        err.starts_with(&format!("unable to read {}: ", file.display())),
        "{err}"
    );
    let scope = Scope {
        dirs: layout.roots.join("paasmaker/s1"),
    };
    assert!(scope.group("a/b").is_err());
    let group = scope.group("gone").unwrap();
    let err = group.procs().unwrap_err().to_string();
    let procs = procs_file(Path::new(&tree.path("unified/paasmaker/s1/gone")));
    assert!(
        err.starts_with(&format!("unable to read {}: ", procs.display())),
        "{err}"
    );
    assert!(group.remove().is_ok(), "a group already gone is removed");
}
