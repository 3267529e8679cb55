//! Isolation (issue 12): users, limits, one control group per instance,
//! and the modes of the secrets on disk, through the real binaries on the
//! real kernel. Tests that need root (switching users, control groups)
//! are ignored otherwise: `cargo test -- --ignored isolate`.
//!
//! Each test runs its own [`TestHeart`]; on drop every process it started
//! is killed, then every process left in its heart's control groups, and
//! the groups are removed (`cgroups::clean`).

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};

use crate::util::cgroups;
use crate::util::heart::{shell_instance, LONG};
use crate::util::http::Response;
use crate::util::{alive, wait_for, wait_until, KillOnDrop, TestHeart};

/// A heart for the isolation test `name` with the options `args` and no
/// others: as root, no `--allow-root-apps` unless `args` gives it.
fn serve(name: &str, args: &[&str]) -> TestHeart {
    let mut heart = TestHeart::new(&format!("isolate-{name}"));
    heart.no_root_apps().args(args).spawn();
    heart
}

/// Registers a standalone shell instance running `script` with `sh -c`
/// in its directory (a copy of `app/`), with `extra` fields.
fn register(heart: &TestHeart, id: &str, script: &str, extra: Value) -> Response {
    let source = heart.dir().join("app");
    heart.dir().write("app/README", "an application\n");
    let mut body = shell_instance(
        id,
        &source,
        json!({"launch_command": script, "shell": true, "stop_timeout": 2}),
    );
    body["application"]["name"] = json!("isolate");
    body["standalone"] = json!(true);
    for (key, value) in extra.as_object().unwrap() {
        body[key] = value.clone();
    }
    heart.register(body)
}

/// The control group directories of `id`'s current launch, from its
/// control file.
fn groups(heart: &TestHeart, id: &str) -> Vec<PathBuf> {
    let path = heart.data().join(format!("supervisor/{id}.json"));
    let control: Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    control["cgroups"]
        .as_array()
        .unwrap_or_else(|| panic!("no cgroups in {control}"))
        .iter()
        .map(|d| PathBuf::from(d.as_str().unwrap()))
        .collect()
}

/// The log file of `id`, as it is now.
fn log(heart: &TestHeart, id: &str) -> String {
    fs::read_to_string(heart.data().join(format!("logs/{id}.log"))).unwrap_or_default()
}

/// The value of `key` in `key value` lines.
fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok())?
    })
}

/// CPU seconds a group has used, from whichever hierarchy accounts it.
fn cpu_seconds(groups: &[PathBuf]) -> f64 {
    for dir in groups {
        if let Ok(text) = fs::read_to_string(dir.join("cpuacct.usage")) {
            return text.trim().parse::<f64>().unwrap() / 1e9;
        }
    }
    for dir in groups {
        if let Ok(text) = fs::read_to_string(dir.join("cpu.stat")) {
            if let Some(usec) = keyed(&text, "usage_usec") {
                return usec as f64 / 1e6;
            }
        }
    }
    panic!("no CPU accounting in {groups:?}");
}

#[test]
#[ignore = "needs root"]
fn isolate_user_nobody_runs_with_its_uid_gid_and_groups() {
    let heart = serve("nobody", &[]);
    let health = heart.call("GET", "/health", None).json();
    assert!(health["isolation"].is_string(), "{health}");
    let script = "echo ids $(id -u) $(id -g) groups $(id -G); exec sleep 300";
    let answer = register(
        &heart,
        "as-nobody",
        script,
        json!({"user": "nobody", "startup": ["id -u > startup-uid"]}),
    );
    assert_eq!(answer.status, 201, "{answer:?}");
    assert_eq!(answer.json()["user"], "nobody");
    let answer = heart.start("as-nobody");
    assert_eq!(answer.status, 200, "{answer:?}");

    let expected_groups = String::from_utf8(
        Command::new("id")
            .args(["-G", "nobody"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let line = wait_for(LONG, "the ids in the log", || {
        log(&heart, "as-nobody")
            .lines()
            .find(|l| l.starts_with("ids "))
            .map(str::to_owned)
    });
    assert_eq!(
        line,
        format!("ids 65534 65534 groups {}", expected_groups.trim())
    );
    let instance = heart.data().join("instances/as-nobody");
    assert_eq!(
        fs::read_to_string(instance.join("startup-uid")).unwrap(),
        "65534\n"
    );
    let meta = fs::metadata(&instance).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (65534, 65534));
    assert_eq!(fs::metadata(instance.join("README")).unwrap().uid(), 65534);
    let log = fs::metadata(heart.data().join("logs/as-nobody.log")).unwrap();
    assert_eq!(log.permissions().mode() & 0o777, 0o640);
    assert_eq!(log.gid(), 65534, "readable by the instance's group");
    assert_eq!(log.uid(), 0, "the log is the heart's");
    let answer = heart.call("POST", "/instances/as-nobody/stop", None);
    assert_eq!(answer.status, 200, "{answer:?}");
}

#[test]
#[ignore = "needs root"]
fn isolate_as_root_without_user_or_default_start_is_refused_and_root_is_refused() {
    let heart = serve("no-user", &[]);
    let answer = register(&heart, "no-user", "exec sleep 300", json!({}));
    assert_eq!(answer.status, 201, "{answer:?}");
    let answer = heart.start("no-user");
    assert_eq!(answer.status, 403, "{answer:?}");
    let error = answer.json()["error"].as_str().unwrap().to_owned();
    assert!(
        error.contains("no user")
            && error.contains("--run-as")
            && error.contains("--allow-root-apps"),
        "{error}"
    );
    assert_eq!(heart.show("no-user")["state"], "REGISTERED");

    for user in ["root", "0"] {
        let answer = register(&heart, "as-root", "exec sleep 300", json!({"user": user}));
        assert_eq!(answer.status, 422, "{answer:?}");
        let error = answer.json()["error"].as_str().unwrap().to_owned();
        assert!(
            error.contains("root") && error.contains("--allow-root-apps"),
            "{error}"
        );
    }
    let answer = register(
        &heart,
        "unknown",
        "exec sleep 300",
        json!({"user": "no-such-user-pm"}),
    );
    assert_eq!(answer.status, 422, "{answer:?}");
    assert!(
        answer.body.contains("unknown user no-such-user-pm"),
        "{answer:?}"
    );

    // With a node default, the same instance runs as it.
    let heart = serve("run-as", &["--run-as", "nobody"]);
    register(
        &heart,
        "default",
        "echo uid $(id -u); exec sleep 300",
        json!({}),
    );
    let answer = heart.start("default");
    assert_eq!(answer.status, 200, "{answer:?}");
    wait_until(LONG, "the uid in the log", || {
        log(&heart, "default").contains("uid 65534\n")
    });
}

#[test]
#[ignore = "needs root"]
fn isolate_an_unbounded_allocator_is_oom_killed_and_reads_error_out_of_memory() {
    let heart = serve("oom", &["--run-as", "nobody", "--check-interval", "0.5"]);
    let answer = register(
        &heart,
        "hog",
        // Running first (standalone_wait 1 s), then doubling a string
        // until the kernel kills the shell.
        "sleep 2; a=x; while :; do a=\"$a$a\"; done",
        json!({"limits": {"memory_max": "32M"}}),
    );
    assert_eq!(answer.status, 201, "{answer:?}");
    assert_eq!(answer.json()["limits"]["memory_max"], 32 << 20);
    let answer = heart.start("hog");
    assert_eq!(answer.status, 200, "{answer:?}");
    let view = heart.wait_state("hog", "ERROR");
    let message = view["message"].as_str().unwrap();
    assert!(message.contains("out of memory"), "{message}");
    assert!(message.contains("exited with code 137"), "{message}");
}

#[test]
#[ignore = "needs root"]
fn isolate_a_fork_loop_stops_at_pids_max_and_the_node_stays_responsive() {
    let heart = serve("forks", &["--run-as", "nobody"]);
    let answer = register(
        &heart,
        "forker",
        // A subshell forks until refused (then it exits); the application
        // itself lives on.
        "(while :; do sleep 300 & done) 2>/dev/null & exec sleep 300",
        json!({"limits": {"pids_max": 16}}),
    );
    assert_eq!(answer.status, 201, "{answer:?}");
    let answer = heart.start("forker");
    assert_eq!(answer.status, 200, "{answer:?}");
    let groups = groups(&heart, "forker");
    let pids_dir = groups
        .iter()
        .find(|d| d.join("pids.max").exists())
        .expect("a pids group");
    assert_eq!(
        fs::read_to_string(pids_dir.join("pids.max")).unwrap(),
        "16\n"
    );
    wait_until(LONG, "a fork refused at pids_max", || {
        fs::read_to_string(pids_dir.join("pids.events"))
            .ok()
            .and_then(|t| keyed(&t, "max"))
            .is_some_and(|n| n >= 1)
    });
    let count = cgroups::procs(&groups[0]).len();
    assert!(count <= 16, "{count} processes in the group");
    let began = Instant::now();
    let answer = heart.call("GET", "/health", None);
    assert_eq!(answer.status, 200);
    assert_eq!(heart.show("forker")["state"], "RUNNING");
    assert!(
        began.elapsed() < Duration::from_secs(2),
        "{:?}",
        began.elapsed()
    );
    // Stop ends every process of the group, and removes it.
    let answer = heart.call("POST", "/instances/forker/stop", None);
    assert_eq!(answer.status, 200, "{answer:?}");
    assert!(groups.iter().all(|d| !d.exists()), "{groups:?} left");
}

#[test]
#[ignore = "needs root"]
fn isolate_a_cpu_burner_at_cpu_max_20_percent_gets_a_fifth_of_a_cpu() {
    let heart = serve("cpu", &["--run-as", "nobody"]);
    let answer = register(
        &heart,
        "burner",
        "while :; do :; done",
        json!({"limits": {"cpu_max": "20%"}}),
    );
    assert_eq!(answer.status, 201, "{answer:?}");
    assert_eq!(answer.json()["limits"]["cpu_max"], "20%");
    let answer = heart.start("burner");
    assert_eq!(answer.status, 200, "{answer:?}");
    let groups = groups(&heart, "burner");
    let (t0, c0) = (Instant::now(), cpu_seconds(&groups));
    thread::sleep(Duration::from_secs(3));
    let (t1, c1) = (Instant::now(), cpu_seconds(&groups));
    let share = (c1 - c0) / (t1 - t0).as_secs_f64();
    // The quota is a hard ceiling of 20 ms per 100 ms period: over 30
    // periods the group can exceed it by at most about one period's
    // slack, so 0.25 is generous above. Below, the burner competes for
    // two cores with the other tests; 0.12 still tells a limited burner
    // from an unlimited one (1.0) and from one that never ran.
    assert!((0.12..=0.25).contains(&share), "share {share:.3} of a CPU");
    let view = heart.show("burner");
    assert!(view["cpu_seconds"].as_f64().unwrap() > 0.1, "{view}");
    assert!(view["memory_bytes"].as_u64().is_some(), "{view}");
}

#[test]
#[ignore = "needs root"]
fn isolate_a_setsid_daemon_that_survived_its_supervisor_is_ended_by_the_next_check() {
    let heart = serve("daemon", &["--run-as", "nobody", "--check-interval", "0.5"]);
    let answer = register(
        &heart,
        "escaper",
        "(setsid sh -c 'echo $$ > daemon.pid; exec sleep 300' &); exec sleep 300",
        json!({}),
    );
    assert_eq!(answer.status, 201, "{answer:?}");
    let view = heart.start("escaper").json();
    let supervisor = view["pid"].as_i64().unwrap() as i32;
    let pid_file = heart.data().join("instances/escaper/daemon.pid");
    let daemon: i32 = wait_for(LONG, "the daemon's pid", || {
        fs::read_to_string(&pid_file).ok()?.trim().parse().ok()
    });
    let _guard = KillOnDrop {
        pid: daemon,
        group: false,
    };
    assert!(alive(daemon));
    kill(Pid::from_raw(supervisor), Signal::SIGKILL).unwrap();
    wait_until(Duration::from_secs(10), "the supervisor to die", || {
        !alive(supervisor)
    });
    // The daemon is in a session of its own, re-parented: it survived.
    assert!(alive(daemon), "the daemon died with its supervisor");
    let began = Instant::now();
    wait_until(Duration::from_secs(10), "the daemon to be ended", || {
        !alive(daemon)
    });
    // One check interval, and kill_all's own wait.
    assert!(
        began.elapsed() < Duration::from_secs(3),
        "{:?}",
        began.elapsed()
    );
    assert_eq!(heart.show("escaper")["state"], "ERROR");
    let stderr = heart.stderr();
    assert!(
        stderr.contains(&format!(
            "ending process {daemon} (sleep) left in the control group of escaper"
        )),
        "{stderr}"
    );
}

#[test]
fn isolate_token_control_files_and_records_are_0600_in_0700_directories() {
    let heart = TestHeart::serve("isolate-modes", &[]);
    let answer = register(
        &heart,
        "secret",
        "exec sleep 300",
        json!({"environment": {"DB_PASSWORD": "hunter2"}, "startup": ["true"]}),
    );
    assert_eq!(answer.status, 201, "{answer:?}");
    let answer = heart.start("secret");
    assert_eq!(answer.status, 200, "{answer:?}");
    let data = heart.data();
    let mode = |path: &Path| fs::metadata(path).unwrap().permissions().mode() & 0o777;
    for file in ["token", "store/secret.json", "supervisor/secret.json"] {
        assert_eq!(mode(&data.join(file)), 0o600, "{file}");
    }
    for dir in ["store", "supervisor"] {
        assert_eq!(mode(&data.join(dir)), 0o700, "{dir}");
    }
    assert_eq!(mode(data), 0o711);
    assert_eq!(mode(&data.join("logs/secret.log")), 0o640);
    assert!(fs::read_to_string(data.join("supervisor/secret.json"))
        .unwrap()
        .contains("hunter2"));
}

#[test]
fn isolate_open_secrets_are_closed_and_an_open_data_directory_is_named_at_start_up() {
    let mut heart = TestHeart::serve("isolate-reopen", &[]);
    let data = heart.data().to_path_buf();
    let token = data.join("token");
    fs::set_permissions(&token, fs::Permissions::from_mode(0o644)).unwrap();
    fs::set_permissions(data.join("supervisor"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(&data, fs::Permissions::from_mode(0o755)).unwrap();
    heart.crash();
    let before = heart.stderr().len();
    heart.spawn();
    let mode = |path: &Path| fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&token), 0o600);
    assert_eq!(mode(&data.join("supervisor")), 0o700);
    let stderr = heart.stderr()[before..].to_string();
    assert!(
        stderr.contains(&format!(
            "pm-heart: warning: data directory {} is readable or writable by others (mode 0755)",
            data.canonicalize().unwrap().display()
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("token was open to others (mode 0644): made it 0600"),
        "{stderr}"
    );
}

#[test]
#[ignore = "needs root"]
fn isolate_a_restart_refused_for_its_user_is_not_retried() {
    // As root, the fixture gives the first heart --allow-root-apps.
    let mut heart = TestHeart::serve("isolate-refused-restart", &[]);
    let answer = register(
        &heart,
        "root-app",
        "sleep 3; exit 3",
        json!({"user": "root", "restart": "always"}),
    );
    assert_eq!(answer.status, 201, "{answer:?}");
    let answer = heart.start("root-app");
    assert_eq!(answer.status, 200, "{answer:?}");
    // The same node, no longer allowing root applications: the exit is
    // reported to the new heart, whose restart is refused once.
    heart.crash();
    heart
        .no_root_apps()
        .args(&["--check-interval", "0.2"])
        .spawn();
    let view = wait_for(LONG, "the restart to be refused", || {
        let view = heart.show("root-app");
        view["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("restart refused: "))
            .then_some(view)
    });
    assert_eq!(view["state"], "ERROR");
    let message = view["message"].as_str().unwrap().to_owned();
    assert!(message.contains("--allow-root-apps"), "{message}");
    // Several check intervals later: no other attempt.
    thread::sleep(Duration::from_secs(2));
    assert_eq!(heart.show("root-app")["message"], message.as_str());
    let attempts = heart.stderr().matches("restart of root-app failed").count();
    assert_eq!(attempts, 1, "{}", heart.stderr());
}
