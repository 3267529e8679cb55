//! Issue 11, a node that keeps its applications up on its own: reboot
//! resume, restart, signals through the supervisor, `PATCH`, redeploy in
//! place, one heart per data directory, exit reports that follow the heart
//! to a new port, the systemd unit, and the scriptable client. Real
//! binaries and real processes; each test runs its own [`TestHeart`],
//! which checks every second.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};

use crate::util::heart::{shell_instance, LONG};
use crate::util::http::{fetch, Request};
use crate::util::{
    alive, describe, is_supervisor, run, wait_for, wait_until, web_server_py, Dir, TestHeart, HEART,
};

/// A web application that logs the signals it gets, writes its pid and
/// `$GREETING` to files in its directory, and serves that directory.
const SIGNAL_APP_PY: &str = r#"
import os, signal, sys
def logged(signum, frame):
    print("got", signal.Signals(signum).name, flush=True)
for s in (signal.SIGHUP, signal.SIGUSR1):
    signal.signal(s, logged)
open("app.pid", "w").write(str(os.getpid()))
open("greeting.txt", "w").write(os.environ.get("GREETING", "") + "\n")
exec(open("server.py").read())
"#;

/// The heart of the lifecycle test `name`, checking every second.
fn heart(name: &str) -> TestHeart {
    TestHeart::serve(&format!("lifecycle-{name}"), &["--check-interval", "1"])
}

/// A source directory `name` in the heart's scratch directory, with the
/// signal app and the web server.
fn app(heart: &TestHeart, name: &str) -> PathBuf {
    heart
        .dir()
        .write(format!("{name}/server.py"), web_server_py());
    heart.dir().write(format!("{name}/app.py"), SIGNAL_APP_PY);
    heart.dir().join(name)
}

/// A register body for a web instance of the signal app.
fn web(id: &str, source: &Path, restart: &str) -> Value {
    let mut body = shell_instance(
        id,
        source,
        json!({"launch_command": "python3 app.py %(port)d", "start_timeout": 90}),
    );
    body["restart"] = json!(restart);
    body
}

/// The pid the signal app of `id` wrote.
fn app_pid(heart: &TestHeart, id: &str) -> i32 {
    let path = heart.data().join("instances").join(id).join("app.pid");
    fs::read_to_string(path).unwrap().trim().parse().unwrap()
}

/// The log of `id`, through the API.
fn log_of(heart: &TestHeart, id: &str) -> String {
    let answer = heart.call("GET", &format!("/instances/{id}/log"), None);
    assert_eq!(answer.status, 200, "log of {id}: {answer:?}");
    answer.body
}

#[test]
fn a_reboot_brings_back_what_was_left_running() {
    let mut heart = heart("reboot");
    let app = app(&heart, "app");
    for (id, restart) in [
        ("a", "never"),
        ("b", "always"),
        ("c", "never"),
        ("d", "never"),
    ] {
        heart.call_ok("POST", "/instances", Some(web(id, &app, restart)));
    }
    let mut before = Vec::new();
    for id in ["a", "b", "c"] {
        let view = heart.call_ok("POST", &format!("/instances/{id}/start"), None);
        assert_eq!(view["desired"], "running", "{view}");
        before.push(view["pid"].as_i64().unwrap());
    }
    let c = heart.call_ok("POST", "/instances/c/stop", None);
    assert_eq!(c["desired"], "stopped", "{c}");
    assert_eq!(heart.show("d")["desired"], "stopped");
    let apps = [app_pid(&heart, "a"), app_pid(&heart, "b")];

    heart.reboot();
    heart.spawn();
    for (n, id) in ["a", "b"].iter().enumerate() {
        let view = heart.wait_state(id, "RUNNING");
        assert_ne!(view["pid"].as_i64().unwrap(), before[n], "{view}");
        assert_ne!(app_pid(&heart, id), apps[n]);
        assert!(fetch(view["port"].as_u64().unwrap(), "/server.py").is_some());
    }
    assert_eq!(heart.show("c")["state"], "STOPPED");
    assert_eq!(heart.show("d")["state"], "REGISTERED");

    // A resume that fails leaves it SUSPENDED, saying why; start --all
    // tries again.
    heart.reboot();
    let port = heart.catalog()["instances"]["a"]["port"].as_u64().unwrap() as u16;
    let squatter = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    heart.spawn();
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
    let out = heart.client(&["start", "--all"]);
    assert!(out.status.success(), "{}", describe("start --all", &out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("a: RUNNING"));
    assert_eq!(heart.show("c")["state"], "STOPPED");
}

#[test]
fn restart_keeps_the_port_and_a_patch_applies_at_the_next_start() {
    let heart = heart("restart");
    let app = app(&heart, "app");
    heart.call_ok("POST", "/instances", Some(web("web", &app, "never")));
    let first = heart.call_ok("POST", "/instances/web/start", None);
    let port = first["port"].as_u64().unwrap();
    assert_eq!(fetch(port, "/greeting.txt").as_deref(), Some("\n"));
    let old_app = app_pid(&heart, "web");

    let patched = heart.call_ok(
        "PATCH",
        "/instances/web",
        Some(json!({"environment": {"GREETING": "hello again"}, "restart": "on-failure"})),
    );
    assert_eq!(patched["restart"], "on-failure");
    assert_eq!(patched["state"], "RUNNING", "applies at the next start");
    assert_eq!(fetch(port, "/greeting.txt").as_deref(), Some("\n"));
    let answer = heart.call(
        "PATCH",
        "/instances/web",
        Some(json!({"runtime": {"version": "9"}})),
    );
    assert_eq!(answer.status, 422, "{answer:?}");
    let answer = heart.call("PATCH", "/instances/web", Some(json!({"user": "x"})));
    assert_eq!(answer.status, 422, "an unknown user: {answer:?}");
    let answer = heart.call("PATCH", "/instances/web", Some(json!({"owner": "x"})));
    assert_eq!(answer.status, 400, "an unknown field: {answer:?}");

    let second = heart.call_ok("POST", "/instances/web/restart", None);
    assert_eq!(second["state"], "RUNNING");
    assert_eq!(second["port"].as_u64(), Some(port));
    assert_ne!(second["pid"], first["pid"]);
    assert_ne!(app_pid(&heart, "web"), old_app);
    assert!(!alive(old_app));
    assert_eq!(
        fetch(port, "/greeting.txt").as_deref(),
        Some("hello again\n")
    );

    // The client: --unset and --restart.
    let out = heart.client(&["update", "web", "--unset", "GREETING", "--restart"]);
    assert!(out.status.success(), "{}", describe("update", &out));
    assert_eq!(fetch(port, "/greeting.txt").as_deref(), Some("\n"));
}

#[test]
fn a_signal_reaches_the_application_through_its_supervisor_alone() {
    let heart = heart("signal");
    let app = app(&heart, "app");
    for id in ["one", "two"] {
        heart.call_ok("POST", "/instances", Some(web(id, &app, "never")));
        heart.call_ok("POST", &format!("/instances/{id}/start"), None);
    }
    let supervisor = heart.show("one")["pid"].as_i64().unwrap() as i32;

    let view = heart.call_ok(
        "POST",
        "/instances/one/signal",
        Some(json!({"signal": "HUP"})),
    );
    assert_eq!(view["state"], "RUNNING");
    wait_until(LONG, "the app to log SIGHUP", || {
        log_of(&heart, "one").contains("got SIGHUP")
    });
    let out = heart.client(&["signal", "one", "usr1"]);
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
        let answer = heart.call("POST", "/instances/one/signal", Some(body));
        assert_eq!(answer.status, status, "{answer:?}");
    }
    let answer = heart.call(
        "POST",
        "/instances/nope/signal",
        Some(json!({"signal": "HUP"})),
    );
    assert_eq!(answer.status, 404, "{answer:?}");

    // TERM through the channel is no stop: the exit is a failure.
    heart.call_ok(
        "POST",
        "/instances/two/signal",
        Some(json!({"signal": "TERM"})),
    );
    let view = heart.wait_state("two", "ERROR");
    assert!(view["message"].as_str().unwrap().contains("143"), "{view}");
    assert_eq!(view["desired"], "running");
    let answer = heart.call("POST", "/instances/two/signal", Some(json!({"signal": 1})));
    assert_eq!(answer.status, 409, "{answer:?}");
    let out = heart.client(&["signal", "two", "HUP"]);
    assert_eq!(out.status.code(), Some(3), "{}", describe("signal", &out));
}

#[test]
fn redeploy_keeps_the_id_the_port_and_the_log() {
    let heart = heart("redeploy");
    let app = app(&heart, "site");
    heart.dir().write("site/version.txt", "one\n");
    let manifest = json!({"application": {"name": "site"},
        "runtime": {"name": "shell", "version": "1",
                    "parameters": {"launch_command": "python3 app.py %(port)d"}}});
    heart
        .dir()
        .write("site/paasmaker.json", manifest.to_string());
    let out = heart.client(&["deploy", app.to_str().unwrap(), "--json"]);
    assert!(out.status.success(), "{}", describe("deploy", &out));
    let first: Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = first["instance_id"].as_str().unwrap().to_string();
    let port = first["port"].as_u64().unwrap();
    assert_eq!(fetch(port, "/version.txt").as_deref(), Some("one\n"));

    heart.dir().write("site/version.txt", "two\n");
    let out = heart.client(&["deploy", app.to_str().unwrap()]);
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

    let out = heart.client(&["deploy", app.to_str().unwrap(), "--new"]);
    assert!(out.status.success(), "{}", describe("deploy --new", &out));
    let list = heart.call_ok("GET", "/instances", None);
    assert_eq!(list["instances"].as_array().unwrap().len(), 2);
    let out = heart.client(&["deploy", app.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(100), "{}", describe("deploy", &out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--new"));
    let out = heart.client(&["deploy", app.to_str().unwrap(), "--id", &id]);
    assert!(out.status.success(), "{}", describe("deploy --id", &out));
    assert_eq!(heart.show(&id)["port"].as_u64(), Some(port));
}

#[test]
fn a_second_heart_is_refused_and_the_first_keeps_serving() {
    let heart = heart("lock");
    let out = heart.client(&["serve", "--listen", "127.0.0.1:0"]);
    assert!(!out.status.success(), "{}", describe("second serve", &out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lock = heart.data().join("lock");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains(lock.to_str().unwrap()), "{stderr}");
    assert!(stderr.contains(&heart.pid().to_string()), "{stderr}");
    let answer = Request::get("/health").call(heart.addr());
    assert_eq!(answer.status, 200, "{answer:?}");
    assert!(heart.client(&["list"]).status.success());
}

#[test]
fn a_late_exit_reaches_the_heart_on_its_new_port_within_a_second() {
    let mut heart = heart("late");
    let app = app(&heart, "app");
    heart.call_ok("POST", "/instances", Some(web("late", &app, "never")));
    heart.call_ok("POST", "/instances/late/start", None);
    let old_addr = heart.addr().to_string();
    heart.crash();
    heart.spawn();
    assert_ne!(heart.addr(), old_addr);
    heart.wait_state("late", "RUNNING");
    let pid = app_pid(&heart, "late");
    let killed = Instant::now();
    kill(Pid::from_raw(pid), Signal::SIGTERM).unwrap();
    let view = wait_for(LONG, "the exit to be reported", || {
        let view = heart.show("late");
        (view["state"] != "RUNNING").then_some(view)
    });
    let took = killed.elapsed();
    assert_eq!(view["state"], "ERROR", "{view}");
    assert!(took < Duration::from_secs(1), "reported after {took:?}");
    assert!(!heart.data().join("supervisor/late.exited").exists());
}

#[test]
fn the_systemd_unit_verifies() {
    // The suite needs it like Apache and promtool (.ci/run installs it): a
    // missing program fails the test rather than passing it unchecked.
    let out = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .unwrap_or_else(|e| panic!("run systemd-analyze (Debian package systemd): {e}"));
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
    let heart = heart("client");
    let app = app(&heart, "app");
    heart.call_ok("POST", "/instances", Some(web("s", &app, "never")));

    // Options before the subcommand, and the environment.
    let data = heart.data();
    let out = run(Command::new(HEART)
        .arg("--data-dir")
        .arg(data)
        .args(["start", "s"]));
    assert!(out.status.success(), "{}", describe("start", &out));
    let out = run(Command::new(HEART)
        .args(["start", "s"])
        .env("PM_DATA_DIR", data));
    assert!(out.status.success(), "{}", describe("start again", &out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "s: already RUNNING\n");
    let out = run(Command::new(HEART)
        .args(["show", "s", "--data-dir", "/nonexistent"])
        .env("PM_HEART_ADDRESS", heart.addr())
        .env("PM_HEART_TOKEN", heart.token()));
    assert!(out.status.success(), "{}", describe("show", &out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("desired: running"));

    let out = heart.client(&["stop", "s"]);
    assert!(out.status.success(), "{}", describe("stop", &out));
    let out = heart.client(&["stop", "s"]);
    assert!(out.status.success(), "{}", describe("stop again", &out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "s: already STOPPED\n");
    let out = heart.client(&["stop", "s", "--json"]);
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
            let out = heart.client(&args);
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
    heart.call_ok("POST", "/instances/s/start", None);
    let out = heart.client(&["deregister", "s"]);
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
    let mut heart = TestHeart::new("lifecycle-200");
    heart.args(&["--check-interval", "1"]).ports(300).spawn();
    let app = app(&heart, "app");
    // The smallest application that listens: the figure is the heart's
    // and the supervisors' cost, not the application's start-up (200
    // Python web servers take about 30 s of CPU to start on 2 cores).
    // SO_REUSEADDR, as every server sets it: the block's ports may have
    // served an earlier test, whose connections linger in TIME_WAIT.
    heart.dir().write(
        "app/listen.py",
        "import socket, sys, time\ns = socket.socket()\n\
         s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
         s.bind(('127.0.0.1', int(sys.argv[1])))\ns.listen()\ntime.sleep(1e6)\n",
    );
    for n in 0..N {
        let id = format!("i{n:03}");
        let mut body = web(&id, &app, "never");
        body["runtime"]["parameters"]["launch_command"] =
            json!("/usr/bin/python3 -S listen.py %(port)d");
        heart.call_ok("POST", "/instances", Some(body));
        heart.call_ok("POST", &format!("/instances/{id}/start"), None);
    }
    heart.reboot();
    let started = Instant::now();
    heart.spawn();
    wait_until(Duration::from_secs(600), "every instance RUNNING", || {
        let list = heart.call_ok("GET", "/instances?state=RUNNING", None);
        list["instances"].as_array().unwrap().len() == N
    });
    println!(
        "resume of {N} instances after a simulated reboot: {:?}",
        started.elapsed()
    );
}
