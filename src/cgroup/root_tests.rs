//! Tests on the real kernel, as root (`cargo test -- --ignored cgroup`):
//! groups are created under a scope of their own (`test-PID-N`), and a
//! guard kills whatever is in them and removes them, even when a test
//! fails. No other group is ever written to.
//!
//! They run in whatever layout the machine has (the project's test
//! machines are hybrid; CI machines may be unified) through the same
//! calls the heart makes.

use std::cell::RefCell;
use std::fs;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use nix::unistd::Pid;

use super::group::CpuQuota;
use super::layout::{self, Version};
use super::tests::FakeTree;
use super::{Group, Scope, Settings};
use crate::process::{self, Confinement, Identity};
use crate::wait;

/// A scope of one test, with every group created and process started in
/// it: on drop the processes are killed and reaped, and the groups and
/// the scope removed.
struct TestScope {
    scope: Scope,
    groups: RefCell<Vec<Group>>,
    children: RefCell<Vec<Child>>,
}

impl TestScope {
    fn new() -> TestScope {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let support = layout::detect();
        let layout = support
            .layout()
            .unwrap_or_else(|| panic!("no control groups: {}", support.summary()));
        let name = format!(
            "test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        TestScope {
            scope: Scope::open(layout, &name).unwrap(),
            groups: RefCell::new(Vec::new()),
            children: RefCell::new(Vec::new()),
        }
    }

    fn create(&self, name: &str) -> Group {
        let group = self.scope.create(name).unwrap();
        self.groups.borrow_mut().push(group.clone());
        group
    }

    /// Starts `sh -c script` through the supervisor's spawn, in `group`.
    fn spawn(&self, group: &Group, script: &str) -> u32 {
        let confinement = Confinement::new(&group.dirs(), None).unwrap();
        let mut cmd = Command::new("/bin/sh");
        cmd.args(["-c", script])
            .stdin(Stdio::null())
            .process_group(0);
        let child = process::spawn_supervised(&mut cmd, None, &confinement).unwrap();
        let pid = child.id();
        self.children.borrow_mut().push(child);
        pid
    }

    /// Waits for the child `pid` to end; its status.
    fn wait_exit(&self, pid: u32, timeout: Duration) -> ExitStatus {
        let mut children = self.children.borrow_mut();
        let child = children.iter_mut().find(|c| c.id() == pid).unwrap();
        let mut status = None;
        wait::until(timeout, || {
            status = child.try_wait().unwrap();
            status.is_some()
        });
        status.unwrap_or_else(|| panic!("process {pid} still runs after {timeout:?}"))
    }
}

impl Drop for TestScope {
    fn drop(&mut self) {
        for group in self.groups.borrow().iter() {
            if let Err(err) = group.kill_all() {
                eprintln!("cleanup: {err}");
            }
        }
        for child in self.children.borrow_mut().iter_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
        for group in self.groups.borrow().iter() {
            if let Err(err) = group.remove() {
                eprintln!("cleanup: {err}");
            }
        }
        if let Err(err) = self.scope.remove() {
            eprintln!("cleanup: {err}");
        }
    }
}

/// The first line of a file a script writes, once it is there.
fn wait_line(path: &std::path::Path) -> String {
    let mut line = String::new();
    let found = wait::until(Duration::from_secs(10), || {
        line = fs::read_to_string(path).unwrap_or_default();
        line.ends_with('\n')
    });
    assert!(found, "{} was not written", path.display());
    line.trim().to_owned()
}

fn read(dir: &std::path::Path, file: &str) -> String {
    let path = dir.join(file);
    fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .to_owned()
}

fn pids_in(dir: &std::path::Path) -> Vec<i32> {
    super::parse_pids(&read(dir, "cgroup.procs"))
}

#[test]
#[ignore = "needs root"]
fn cgroup_limits_are_written_and_read_back_and_lifted() {
    let t = TestScope::new();
    let group = t.create("limits");
    assert_eq!(t.scope.list().unwrap(), ["limits"]);
    group
        .apply(&Settings {
            memory_max: Some(64 << 20),
            cpu_max: Some(CpuQuota {
                quota_usec: 20_000,
                period_usec: 100_000,
            }),
            pids_max: Some(32),
        })
        .unwrap();
    let d = &group.dirs;
    match d.version {
        Version::Hybrid => {
            assert_eq!(read(&d.memory, "memory.limit_in_bytes"), "67108864");
            if d.memory.join("memory.memsw.limit_in_bytes").exists() {
                assert_eq!(read(&d.memory, "memory.memsw.limit_in_bytes"), "67108864");
            }
            assert_eq!(read(&d.cpu, "cpu.cfs_quota_us"), "20000");
            assert_eq!(read(&d.cpu, "cpu.cfs_period_us"), "100000");
        }
        Version::V2 => {
            assert_eq!(read(&d.memory, "memory.max"), "67108864");
            assert_eq!(read(&d.cpu, "cpu.max"), "20000 100000");
        }
    }
    assert_eq!(read(&d.pids, "pids.max"), "32");

    group.apply(&Settings::default()).unwrap();
    match d.version {
        Version::Hybrid => {
            let limit: u64 = read(&d.memory, "memory.limit_in_bytes").parse().unwrap();
            assert!(limit > 1 << 62, "memory limit {limit} not lifted");
            assert_eq!(read(&d.cpu, "cpu.cfs_quota_us"), "-1");
        }
        Version::V2 => {
            assert_eq!(read(&d.memory, "memory.max"), "max");
            assert_eq!(read(&d.cpu, "cpu.max"), "max 100000");
        }
    }
    assert_eq!(read(&d.pids, "pids.max"), "max");

    group.remove().unwrap();
    assert!(group.dirs().iter().all(|dir| !dir.exists()));
    assert!(t.scope.list().unwrap().is_empty());
}

#[test]
#[ignore = "needs root"]
fn cgroup_spawned_command_and_its_fork_are_in_every_group() {
    let t = TestScope::new();
    let scratch = FakeTree::new("fork");
    let group = t.create("fork");
    let fork_file = scratch.path("fork");
    let pid = t.spawn(
        &group,
        &format!(
            "sleep 300 & echo $! > {}; exec sleep 301",
            fork_file.display()
        ),
    ) as i32;
    let fork: i32 = wait_line(&fork_file).parse().unwrap();
    for dir in group.dirs() {
        let pids = pids_in(&dir);
        assert!(
            pids.contains(&pid) && pids.contains(&fork),
            "{} holds {pids:?}, not {pid} and {fork}",
            dir.display()
        );
    }
    let mut procs = group.procs().unwrap();
    procs.sort();
    let mut expected = vec![pid, fork];
    expected.sort();
    assert_eq!(procs, expected);
    // The spawning process itself stayed where it was.
    let me = std::process::id() as i32;
    assert!(group.dirs().iter().all(|dir| !pids_in(dir).contains(&me)));
}

#[test]
#[ignore = "needs root"]
fn cgroup_setsid_grandchild_stays_in_the_group_and_kill_all_ends_it() {
    let t = TestScope::new();
    let scratch = FakeTree::new("daemon");
    let group = t.create("daemon");
    let daemon_file = scratch.path("daemon");
    let pid = t.spawn(
        &group,
        &format!(
            "(setsid sh -c 'echo $$ > {}; exec sleep 300' &); exit 0",
            daemon_file.display()
        ),
    );
    assert!(t.wait_exit(pid, Duration::from_secs(10)).success());
    let daemon: i32 = wait_line(&daemon_file).parse().unwrap();
    let identity = Identity::of(daemon).expect("the daemon runs");
    let stat = process::stat(daemon).unwrap();
    assert_ne!(stat.ppid, pid as i32, "not re-parented");
    assert_eq!(
        nix::unistd::getsid(Some(Pid::from_raw(daemon))).unwrap(),
        Pid::from_raw(daemon),
        "not a session leader"
    );
    assert_eq!(group.procs().unwrap(), [daemon]);

    group.kill_all().unwrap();
    assert!(group.procs().unwrap().is_empty());
    assert!(
        wait::until(Duration::from_secs(5), || !identity.is_alive()),
        "the daemon survived kill_all"
    );
    group.remove().unwrap();
}

#[test]
#[ignore = "needs root"]
fn cgroup_kill_by_signal_loop_empties_a_group_without_cgroup_kill() {
    let t = TestScope::new();
    let group = t.create("loop");
    let pid = t.spawn(
        &group,
        "for i in 1 2 3 4 5; do sleep 300 & done; exec sleep 300",
    );
    assert!(wait::until(Duration::from_secs(10), || group
        .procs()
        .unwrap()
        .len()
        == 6));
    group.kill_listed(Duration::from_secs(5)).unwrap();
    assert!(group.procs().unwrap().is_empty());
    let status = t.wait_exit(pid, Duration::from_secs(5));
    assert_eq!(status.signal(), Some(9));
}

#[test]
#[ignore = "needs root"]
fn cgroup_allocating_process_is_oom_killed_at_memory_max_and_counted() {
    let t = TestScope::new();
    let group = t.create("oom");
    group
        .apply(&Settings {
            memory_max: Some(16 << 20),
            ..Settings::default()
        })
        .unwrap();
    assert_eq!(group.oom_kills().unwrap(), 0);
    // Doubles a string until the kernel kills the shell.
    let pid = t.spawn(&group, "a=x; while :; do a=\"$a$a\"; done");
    let status = t.wait_exit(pid, Duration::from_secs(30));
    assert_eq!(status.signal(), Some(9), "{status:?}");
    assert!(group.oom_kills().unwrap() >= 1);
}

#[test]
#[ignore = "needs root"]
fn cgroup_fork_loop_stops_at_pids_max() {
    let t = TestScope::new();
    let scratch = FakeTree::new("forks");
    let group = t.create("forks");
    group
        .apply(&Settings {
            pids_max: Some(8),
            ..Settings::default()
        })
        .unwrap();
    let tried = scratch.path("tried");
    let pid = t.spawn(
        &group,
        &format!(
            "i=0; while [ $i -lt 30 ]; do sleep 300 2>/dev/null & i=$((i+1)); done; \
             echo $i > {}; exec sleep 300",
            tried.display()
        ),
    );
    // The shell either tries all 30 forks, or gives up at the first
    // refused one and exits: either way the loop has ended.
    let ended = wait::until(Duration::from_secs(20), || {
        tried.exists() || t.children.borrow_mut()[0].try_wait().unwrap().is_some()
    });
    assert!(ended, "the fork loop of {pid} did not end");
    let procs = group.procs().unwrap();
    assert!(procs.len() <= 8, "{} processes: {procs:?}", procs.len());
    assert!(procs.len() >= 7, "{} processes: {procs:?}", procs.len());
    let refused = super::read_keyed(&group.dirs.pids.join("pids.events"), "max").unwrap();
    assert!(refused >= 1, "no fork was refused");
}

#[test]
#[ignore = "needs root"]
fn cgroup_usage_reports_memory_and_cpu_that_grow() {
    let t = TestScope::new();
    let scratch = FakeTree::new("usage");
    let group = t.create("usage");
    let empty = group.usage().unwrap();
    assert!(empty.memory_bytes < 1 << 20, "{empty:?}");
    assert!(empty.cpu_seconds < 0.01, "{empty:?}");
    let ready = scratch.path("ready");
    // An 8 MiB string, then a busy loop.
    t.spawn(
        &group,
        &format!(
            "a=x; i=0; while [ $i -lt 23 ]; do a=\"$a$a\"; i=$((i+1)); done; \
             echo > {}; while :; do :; done",
            ready.display()
        ),
    );
    wait_line(&ready);
    let first = group.usage().unwrap();
    assert!(first.memory_bytes >= 8 << 20, "{first:?}");
    let mut later = first;
    let grew = wait::until(Duration::from_secs(10), || {
        later = group.usage().unwrap();
        later.cpu_seconds >= first.cpu_seconds + 0.2
    });
    assert!(grew, "CPU time stayed at {first:?}: {later:?}");
    assert!(later.memory_bytes >= 8 << 20, "{later:?}");
}

#[test]
#[ignore = "needs root"]
fn cgroup_join_failure_is_a_start_failure_naming_the_group() {
    let t = TestScope::new();
    let group = t.create("present");
    let scratch = FakeTree::new("join");
    let ran = scratch.path("ran");
    let missing = t.scope.group("missing").unwrap();
    let dirs = [group.dirs(), missing.dirs()].concat();
    let confinement = Confinement::new(&dirs, None).unwrap();
    let mut cmd = Command::new("/bin/sh");
    cmd.args(["-c", &format!("echo > {}", ran.display())]);
    let err = process::spawn_supervised(&mut cmd, None, &confinement).unwrap_err();
    let first_missing = &missing.dirs()[0];
    assert_eq!(
        err.to_string(),
        format!(
            "unable to join control group {}: No such file or directory",
            first_missing.display()
        )
    );
    assert_eq!(err.raw_os_error(), None, "would be taken for exit code 127");
    assert!(!ran.exists(), "the command ran");
    assert!(group.procs().unwrap().is_empty());
}
