//! Issue 11, a node that keeps its applications up on its own: reboot
//! resume, restart, signals through the supervisor, `PATCH`, redeploy in
//! place, one heart per data directory, exit reports that follow the heart
//! to a new port, the systemd unit, and the scriptable client. Real
//! binaries and real processes; each test has its own data directory and
//! its own block of 20 instance ports from 24400-24599 (below the kernel's
//! ephemeral ports); on drop, every supervisor and application it started
//! is killed by pid.

mod fixture;

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};

use self::fixture::{app_pid, fetch, http, log_of, web, Heart, Node, LONG};
use crate::util::{
    alive, describe, is_supervisor, run, wait_for, wait_until, ChildGuard, Dir, HEART,
};

#[test]
fn a_reboot_brings_back_what_was_left_running() {
    let node = Node::new("reboot");
    let app = node.app("app");
    let heart = node.serve();
    for (id, restart) in [
        ("a", "never"),
        ("b", "always"),
        ("c", "never"),
        ("d", "never"),
    ] {
        heart.ok("POST", "/instances", web(id, &app, restart));
    }
    let mut before = Vec::new();
    for id in ["a", "b", "c"] {
        let view = heart.ok("POST", &format!("/instances/{id}/start"), Value::Null);
        assert_eq!(view["desired"], "running", "{view}");
        before.push(view["pid"].as_i64().unwrap());
    }
    let c = heart.ok("POST", "/instances/c/stop", Value::Null);
    assert_eq!(c["desired"], "stopped", "{c}");
    assert_eq!(heart.show("d")["desired"], "stopped");
    let apps = [app_pid(&node, "a"), app_pid(&node, "b")];

    heart.crash();
    node.kill_everything();
    let heart = node.serve();
    for (n, id) in ["a", "b"].iter().enumerate() {
        let view = heart.wait_state(id, "RUNNING");
        assert_ne!(view["pid"].as_i64().unwrap(), before[n], "{view}");
        assert_ne!(app_pid(&node, id), apps[n]);
        assert!(fetch(view["port"].as_u64().unwrap(), "/server.py").is_some());
    }
    assert_eq!(heart.show("c")["state"], "STOPPED");
    assert_eq!(heart.show("d")["state"], "REGISTERED");

    // A resume that fails leaves it SUSPENDED, saying why; start --all
    // tries again.
    heart.crash();
    node.kill_everything();
    let port = heart_port_of(&node, "a");
    let squatter = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let heart = node.serve();
    let view = wait_for(LONG, "a to fail its resume", || {
        let view = heart.show("a");
        view["message"]
            .as_str()
            .unwrap()
            .starts_with("could not be brought back: ")
            .then_some(view)
    });
    assert_eq!(view["state"], "SUSPENDED", "{view}");
    heart.wait_state("b", "RUNNING");
    drop(squatter);
    let out = node.client(&["start", "--all"]);
    assert!(out.status.success(), "{}", describe("start --all", &out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("a: RUNNING"));
    assert_eq!(heart.show("c")["state"], "STOPPED");
}

/// The port of instance `id` from its record.
fn heart_port_of(node: &Node, id: &str) -> u16 {
    let rec: Value =
        serde_json::from_slice(&fs::read(node.data().join(format!("store/{id}.json"))).unwrap())
            .unwrap();
    rec["port"].as_u64().unwrap() as u16
}

#[test]
fn restart_keeps_the_port_and_a_patch_applies_at_the_next_start() {
    let node = Node::new("restart");
    let app = node.app("app");
    let heart = node.serve();
    heart.ok("POST", "/instances", web("web", &app, "never"));
    let first = heart.ok("POST", "/instances/web/start", Value::Null);
    let port = first["port"].as_u64().unwrap();
    assert_eq!(fetch(port, "/greeting.txt").as_deref(), Some("\n"));
    let old_app = app_pid(&node, "web");

    let patched = heart.ok(
        "PATCH",
        "/instances/web",
        json!({"environment": {"GREETING": "hello again"}, "restart": "on-failure"}),
    );
    assert_eq!(patched["restart"], "on-failure");
    assert_eq!(patched["state"], "RUNNING", "applies at the next start");
    assert_eq!(fetch(port, "/greeting.txt").as_deref(), Some("\n"));
    let (status, body) = heart.call(
        "PATCH",
        "/instances/web",
        json!({"runtime": {"version": "9"}}),
    );
    assert_eq!(status, 422, "{body}");
    let (status, body) = heart.call("PATCH", "/instances/web", json!({"user": "x"}));
    assert_eq!(status, 422, "an unknown user: {body}");
    let (status, body) = heart.call("PATCH", "/instances/web", json!({"owner": "x"}));
    assert_eq!(status, 400, "an unknown field: {body}");

    let second = heart.ok("POST", "/instances/web/restart", Value::Null);
    assert_eq!(second["state"], "RUNNING");
    assert_eq!(second["port"].as_u64(), Some(port));
    assert_ne!(second["pid"], first["pid"]);
    assert_ne!(app_pid(&node, "web"), old_app);
    assert!(!alive(old_app));
    assert_eq!(
        fetch(port, "/greeting.txt").as_deref(),
        Some("hello again\n")
    );

    // The client: --unset and --restart.
    let out = node.client(&["update", "web", "--unset", "GREETING", "--restart"]);
    assert!(out.status.success(), "{}", describe("update", &out));
    assert_eq!(fetch(port, "/greeting.txt").as_deref(), Some("\n"));
}

#[test]
fn a_signal_reaches_the_application_through_its_supervisor_alone() {
    let node = Node::new("signal");
    let app = node.app("app");
    let heart = node.serve();
    for id in ["one", "two"] {
        heart.ok("POST", "/instances", web(id, &app, "never"));
        heart.ok("POST", &format!("/instances/{id}/start"), Value::Null);
    }
    let supervisor = heart.show("one")["pid"].as_i64().unwrap() as i32;

    let view = heart.ok("POST", "/instances/one/signal", json!({"signal": "HUP"}));
    assert_eq!(view["state"], "RUNNING");
    wait_until(LONG, "the app to log SIGHUP", || {
        log_of(&heart, "one").contains("got SIGHUP")
    });
    let out = node.client(&["signal", "one", "usr1"]);
    assert!(out.status.success(), "{}", describe("signal", &out));
    wait_until(LONG, "the app to log SIGUSR1", || {
        log_of(&heart, "one").contains("got SIGUSR1")
    });
    let log = log_of(&heart, "one");
    assert!(log.contains("Forwarding SIGHUP to process group"), "{log}");
    assert!(
        !log_of(&heart, "two").contains("got "),
        "the other app got it"
    );
    assert!(
        is_supervisor(supervisor),
        "the supervisor must not die of it"
    );
    assert_eq!(heart.show("one")["state"], "RUNNING");

    for (body, status) in [
        (json!({"signal": "KILL"}), 400),
        (json!({"signal": 9}), 400),
        (json!({}), 400),
    ] {
        assert_eq!(heart.call("POST", "/instances/one/signal", body).0, status);
    }
    assert_eq!(
        heart
            .call("POST", "/instances/nope/signal", json!({"signal": "HUP"}))
            .0,
        404
    );

    // TERM through the channel is no stop: the exit is a failure.
    heart.ok("POST", "/instances/two/signal", json!({"signal": "TERM"}));
    let view = heart.wait_state("two", "ERROR");
    assert!(view["message"].as_str().unwrap().contains("143"), "{view}");
    assert_eq!(view["desired"], "running");
    let (status, body) = heart.call("POST", "/instances/two/signal", json!({"signal": 1}));
    assert_eq!(status, 409, "{body}");
    let out = node.client(&["signal", "two", "HUP"]);
    assert_eq!(out.status.code(), Some(3), "{}", describe("signal", &out));
}

#[test]
fn redeploy_keeps_the_id_the_port_and_the_log() {
    let node = Node::new("redeploy");
    let app = node.app("site");
    node.dir.write("site/version.txt", "one\n");
    let manifest = json!({"application": {"name": "site"},
        "runtime": {"name": "shell", "version": "1",
                    "parameters": {"launch_command": "python3 app.py %(port)d"}}});
    node.dir.write("site/paasmaker.json", manifest.to_string());
    let heart = node.serve();
    let out = node.client(&["deploy", app.to_str().unwrap(), "--json"]);
    assert!(out.status.success(), "{}", describe("deploy", &out));
    let first: Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = first["instance_id"].as_str().unwrap().to_string();
    let port = first["port"].as_u64().unwrap();
    assert_eq!(fetch(port, "/version.txt").as_deref(), Some("one\n"));

    node.dir.write("site/version.txt", "two\n");
    let out = node.client(&["deploy", app.to_str().unwrap()]);
    assert!(out.status.success(), "{}", describe("redeploy", &out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("{id}: redeployed in place on port {port}")),
        "{stdout}"
    );
    let view = heart.show(&id);
    assert_eq!(view["port"].as_u64(), Some(port));
    assert_eq!(view["state"], "RUNNING");
    assert_eq!(fetch(port, "/version.txt").as_deref(), Some("two\n"));
    let log = log_of(&heart, &id);
    assert_eq!(log.matches("Starting [").count(), 2, "{log}");

    let out = node.client(&["deploy", app.to_str().unwrap(), "--new"]);
    assert!(out.status.success(), "{}", describe("deploy --new", &out));
    let list = heart.ok("GET", "/instances", Value::Null);
    assert_eq!(list["instances"].as_array().unwrap().len(), 2);
    let out = node.client(&["deploy", app.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(100), "{}", describe("deploy", &out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--new"));
    let out = node.client(&["deploy", app.to_str().unwrap(), "--id", &id]);
    assert!(out.status.success(), "{}", describe("deploy --id", &out));
    assert_eq!(heart.show(&id)["port"].as_u64(), Some(port));
}

#[test]
fn a_second_heart_is_refused_and_the_first_keeps_serving() {
    let node = Node::new("lock");
    let heart = node.serve();
    let out = run(Command::new(HEART)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(node.data()));
    assert!(!out.status.success(), "{}", describe("second serve", &out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lock = node.data().join("lock");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains(lock.to_str().unwrap()), "{stderr}");
    assert!(stderr.contains(&heart.pid().to_string()), "{stderr}");
    let (status, _) = http(&heart.addr, "GET", "/health", None, "");
    assert_eq!(status, 200);
    assert!(node.client(&["list"]).status.success());
}

#[test]
fn a_late_exit_reaches_the_heart_on_its_new_port_within_a_second() {
    let node = Node::new("late");
    let app = node.app("app");
    let heart = node.serve();
    heart.ok("POST", "/instances", web("late", &app, "never"));
    heart.ok("POST", "/instances/late/start", Value::Null);
    let old_addr = heart.addr.clone();
    heart.crash();
    let heart = node.serve();
    assert_ne!(heart.addr, old_addr);
    heart.wait_state("late", "RUNNING");
    let pid = app_pid(&node, "late");
    let killed = Instant::now();
    kill(Pid::from_raw(pid), Signal::SIGTERM).unwrap();
    let view = wait_for(LONG, "the exit to be reported", || {
        let view = heart.show("late");
        (view["state"] != "RUNNING").then_some(view)
    });
    let took = killed.elapsed();
    assert_eq!(view["state"], "ERROR", "{view}");
    assert!(took < Duration::from_secs(1), "reported after {took:?}");
    assert!(!node.data().join("supervisor/late.exited").exists());
}

#[test]
fn the_systemd_unit_verifies() {
    let Ok(out) = Command::new("systemd-analyze").arg("--version").output() else {
        println!("skipped: systemd-analyze is not installed (Debian package systemd)");
        return;
    };
    assert!(
        out.status.success(),
        "{}",
        describe("systemd-analyze", &out)
    );
    let unit_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/systemd/pm-heart.service");
    let unit = fs::read_to_string(unit_path).unwrap();
    for line in ["Type=notify", "KillMode=process", "Restart=on-failure"] {
        assert!(unit.lines().any(|l| l == line), "no {line}");
    }
    let dir = Dir::new("lifecycle-unit");
    let man = Path::new(env!("CARGO_MANIFEST_DIR")).join("man/pm-heart.8");
    fs::create_dir_all(dir.join("man/man8")).unwrap();
    fs::copy(man, dir.join("man/man8/pm-heart.8")).unwrap();
    // The copy runs the binary just built; `--run-as` (issue 12) is left
    // out until `serve` takes it.
    let copy: String = unit
        .lines()
        .map(|line| match line.strip_prefix("ExecStart=") {
            Some(exec) => {
                let args = exec
                    .split_whitespace()
                    .skip(1)
                    .collect::<Vec<_>>()
                    .join(" ");
                let args = args.replace(" --run-as paasmaker", "");
                format!("ExecStart={HEART} {args}\n")
            }
            None => format!("{line}\n"),
        })
        .collect();
    let copy_path = dir.write("pm-heart.service", copy);
    let out = run(Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy_path)
        .env("MANPATH", dir.join("man")));
    assert!(out.status.success(), "{}", describe("verify", &out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.trim().is_empty(), "warnings: {stderr}");
}

#[test]
fn the_client_is_scriptable() {
    let node = Node::new("client");
    let app = node.app("app");
    let heart = node.serve();
    heart.ok("POST", "/instances", web("s", &app, "never"));

    // Options before the subcommand, and the environment.
    let data = node.data();
    let out = run(Command::new(HEART)
        .arg("--data-dir")
        .arg(&data)
        .args(["start", "s"]));
    assert!(out.status.success(), "{}", describe("start", &out));
    let out = run(Command::new(HEART)
        .args(["start", "s"])
        .env("PM_DATA_DIR", &data));
    assert!(out.status.success(), "{}", describe("start again", &out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "s: already RUNNING\n");
    let out = run(Command::new(HEART)
        .args(["show", "s", "--data-dir", "/nonexistent"])
        .env("PM_HEART_ADDRESS", &heart.addr)
        .env("PM_HEART_TOKEN", &heart.token));
    assert!(out.status.success(), "{}", describe("show", &out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("desired: running"));

    let out = node.client(&["stop", "s"]);
    assert!(out.status.success(), "{}", describe("stop", &out));
    let out = node.client(&["stop", "s"]);
    assert!(out.status.success(), "{}", describe("stop again", &out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "s: already STOPPED\n");
    let out = node.client(&["stop", "s", "--json"]);
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["already"], true);

    // Distinct exit statuses, and JSON errors for every subcommand.
    for (args, code) in [
        (&["show", "nope"][..], 2),
        (&["start", "nope"][..], 2),
        (&["restart", "nope"][..], 2),
        (&["signal", "s", "HUP"][..], 3),
        (&["list", "--token", "wrong"][..], 1),
        (&["signal", "s", "KILL"][..], 100),
    ] {
        for json in [false, true] {
            let mut args = args.to_vec();
            if json {
                args.push("--json");
            }
            let out = node.client(&args);
            assert_eq!(
                out.status.code(),
                Some(code),
                "{}",
                describe(&args.join(" "), &out)
            );
            if json {
                let error: Value = serde_json::from_slice(&out.stdout)
                    .unwrap_or_else(|e| panic!("{args:?}: {e}: {out:?}"));
                assert!(error["error"].is_string(), "{args:?}: {error}");
            }
        }
    }
    heart.ok("POST", "/instances/s/start", Value::Null);
    let out = node.client(&["deregister", "s"]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        describe("deregister", &out)
    );
}

/// The time to bring back 200 instances after a simulated reboot:
/// `cargo test --test integration -- --ignored --nocapture resume_of_200`.
#[test]
#[ignore = "a measurement: run it alone, it prints the time"]
fn resume_of_200_instances() {
    const N: usize = 200;
    let dir = Dir::new("lifecycle-200");
    let node = Node { dir, low: 24600 };
    let app = node.app("app");
    let heart = {
        let node = &node;
        let mut child = Command::new(HEART)
            .args(["serve", "--listen", "127.0.0.1:0", "--ports", "24600-24899"])
            .args(crate::util::heart::root_apps(&[]))
            .arg("--data-dir")
            .arg(node.data())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        let token = fs::read_to_string(node.data().join("token")).unwrap();
        Heart {
            child: Some(ChildGuard(child)),
            addr: line
                .trim()
                .strip_prefix("listening on ")
                .unwrap()
                .to_string(),
            token: token.trim().to_string(),
        }
    };
    // The smallest application that listens: the figure is the heart's
    // and the supervisors' cost, not the application's start-up (200
    // Python web servers take about 30 s of CPU to start on 2 cores).
    node.dir.write(
        "app/listen.py",
        "import socket, sys, time\ns = socket.socket()\n\
         s.bind(('127.0.0.1', int(sys.argv[1])))\ns.listen()\ntime.sleep(1e6)\n",
    );
    for n in 0..N {
        let id = format!("i{n:03}");
        let mut body = web(&id, &app, "never");
        body["runtime"]["parameters"]["launch_command"] =
            json!("/usr/bin/python3 -S listen.py %(port)d");
        heart.ok("POST", "/instances", body);
        heart.ok("POST", &format!("/instances/{id}/start"), Value::Null);
    }
    heart.crash();
    node.kill_everything();
    let started = Instant::now();
    let heart = node.serve_on("127.0.0.1:0");
    wait_until(Duration::from_secs(600), "every instance RUNNING", || {
        let list = heart.ok("GET", "/instances?state=RUNNING", Value::Null);
        list["instances"].as_array().unwrap().len() == N
    });
    println!(
        "resume of {N} instances after a simulated reboot: {:?}",
        started.elapsed()
    );
}
