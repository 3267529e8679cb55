//! `pm-heart serve` when things go wrong: the heart killed and restarted,
//! applications that crash (restart policy and backoff), SIGTERM with
//! shared and exclusive instances, a supervisor that vanishes. Each test
//! runs its own [`TestHeart`].

use std::collections::HashMap;
use std::fs;
use std::process::Command;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};

use crate::heart::{app, standalone, web_instance, web_instance_with_pid};
use crate::util::heart::LONG;
use crate::util::http::fetch;
use crate::util::process::start_time;
use crate::util::{alive, is_supervisor, wait_for, wait_until, ChildGuard, TestHeart};

#[test]
fn a_killed_heart_finds_its_instances_again() {
    let mut heart = TestHeart::serve("heart-crash", &[]);
    let app = app(&heart);
    let mut before = HashMap::new();
    for id in ["a", "b", "c", "gone", "decoyed"] {
        assert_eq!(heart.register(web_instance_with_pid(id, &app)).status, 201);
        let answer = heart.start(id);
        assert_eq!(answer.status, 200, "{answer:?}");
        let view = answer.json();
        let pidfile = heart.data().join("instances").join(id).join("app.pid");
        let app_pid: i32 = wait_for(LONG, "app.pid", || {
            fs::read_to_string(&pidfile).ok()?.trim().parse().ok()
        });
        before.insert(
            id,
            (
                view["pid"].as_i64().unwrap() as i32,
                app_pid,
                view["port"].as_u64().unwrap(),
            ),
        );
    }
    heart.crash();

    // While the heart is down: "gone" ends, and its supervisor could only
    // record the code; "decoyed"'s catalog entry points at another process.
    let (gone_sup, gone_app, _) = before["gone"];
    kill(Pid::from_raw(gone_sup), Signal::SIGKILL).unwrap();
    wait_until(LONG, "gone's application to die", || !alive(gone_app));
    fs::write(heart.data().join("supervisor/gone.exited"), "5\n").unwrap();

    let decoy = ChildGuard(Command::new("sleep").arg("300").spawn().unwrap());
    let start_time = start_time(decoy.pid()).unwrap();
    let (decoyed_sup, decoyed_app, _) = before["decoyed"];
    let mut record = heart.catalog()["instances"]["decoyed"].clone();
    record["supervisor"] = json!({"pid": decoy.pid(), "start_time": start_time});
    heart.write_record("decoyed", &record);
    kill(Pid::from_raw(decoyed_sup), Signal::SIGKILL).unwrap();
    wait_until(LONG, "decoyed's application to die", || !alive(decoyed_app));
    // ... and its supervisor left an exit file nobody can read.
    fs::write(heart.data().join("supervisor/decoyed.exited"), "garbage").unwrap();

    heart.spawn();
    for id in ["a", "b", "c"] {
        let view = heart.show(id);
        let (sup, app_pid, port) = before[id];
        assert_eq!(view["state"], "RUNNING", "{view}");
        assert_eq!(view["pid"].as_i64(), Some(i64::from(sup)));
        let pidfile = heart.data().join("instances").join(id).join("app.pid");
        assert_eq!(
            fs::read_to_string(pidfile).unwrap().trim(),
            app_pid.to_string()
        );
        assert!(alive(app_pid));
        assert_eq!(
            fetch(port, "/hello.txt").as_deref(),
            Some("hello from the app\n")
        );
    }
    let gone = heart.show("gone");
    assert_eq!(gone["state"], "ERROR", "{gone}");
    assert!(gone["message"]
        .as_str()
        .unwrap()
        .contains("exited with code 5"));
    assert!(!heart.data().join("supervisor/gone.exited").exists());

    // Found gone and left running: brought back (issue 11), under a new
    // supervisor, never trusting the decoy at the recorded pid.
    let decoyed = heart.wait_state("decoyed", "RUNNING");
    assert_ne!(decoyed["pid"].as_i64(), Some(i64::from(decoy.pid())));
    assert!(!heart.data().join("supervisor/decoyed.exited").exists());
    assert_eq!(
        fs::read_to_string(heart.data().join("supervisor/decoyed.exited.corrupt")).unwrap(),
        "garbage"
    );
    assert_eq!(heart.stop("decoyed").json()["state"], "STOPPED");
    assert!(
        alive(decoy.pid()),
        "the decoy at the recorded pid was signalled"
    );

    // A second restart changes nothing: the exit file was applied once.
    let status = heart.terminate();
    assert_eq!(status.code(), Some(0));
    heart.spawn();
    assert_eq!(heart.show("gone")["message"], gone["message"]);
    for id in ["a", "b", "c"] {
        assert_eq!(heart.state(id), "RUNNING");
        assert!(alive(before[id].1));
    }
    assert_eq!(heart.stop("a").json()["state"], "STOPPED");
    assert!(!alive(before["a"].1));
}

#[test]
fn restart_policy_backs_off() {
    let heart = TestHeart::serve("heart-restart", &[]);
    let app = app(&heart);
    let crashing = |id: &str, restart: &str| {
        let counter = heart.dir().join(format!("{id}.runs"));
        let mut body = standalone(
            id,
            &app,
            json!({
                "launch_command": format!("date +%s.%N >> {}; sleep 0.3; exit 3", counter.display()),
                "shell": true,
                "standalone_wait": 0.1,
            }),
        );
        body["restart"] = json!(restart);
        assert_eq!(heart.register(body).status, 201);
        let answer = heart.start(id);
        assert_eq!(answer.status, 200, "{answer:?}");
        counter
    };
    let never = crashing("never", "never");
    let counter = crashing("crashy", "on-failure");

    let runs = || -> Vec<f64> {
        fs::read_to_string(&counter)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    };
    let times = wait_for(Duration::from_secs(40), "four runs", || {
        let times = runs();
        (times.len() >= 4).then_some(times)
    });
    let gaps: Vec<f64> = times.windows(2).map(|w| w[1] - w[0]).collect();
    // Each gap is the 0.3 s run plus a backoff of 1, 2, then 4 s.
    assert!(gaps[0] >= 1.2 && gaps[0] < 3.0, "{gaps:?}");
    assert!(gaps[1] >= 2.2 && gaps[1] > gaps[0] + 0.5, "{gaps:?}");
    assert!(gaps[2] >= 4.2 && gaps[2] > gaps[1] + 1.0, "{gaps:?}");
    let backoff = &heart.catalog()["instances"]["crashy"]["backoff"];
    assert!(backoff["attempts"].as_u64().unwrap() >= 3, "{backoff}");

    let message = heart.wait_message("never", "ERROR");
    assert!(message.contains("exited with code 3"), "{message}");
    assert_eq!(
        heart.catalog()["instances"]["never"]["backoff"]["next_restart"],
        Value::Null
    );
    assert_eq!(fs::read_to_string(never).unwrap().lines().count(), 1);

    assert_eq!(heart.stop("crashy").json()["state"], "STOPPED");
    assert_eq!(
        heart.catalog()["instances"]["crashy"]["backoff"]["next_restart"],
        Value::Null
    );
}

#[test]
fn sigterm_leaves_applications_running_unless_exclusive() {
    let mut heart = TestHeart::serve("heart-sigterm", &[]);
    let app = app(&heart);
    let mut pids = HashMap::new();
    for (id, exclusive) in [("shared", false), ("own", true)] {
        let mut body = web_instance(id, &app);
        body["exclusive"] = json!(exclusive);
        assert_eq!(heart.register(body).status, 201);
        let view = heart.start(id).json();
        assert_eq!(view["state"], "RUNNING", "{view}");
        pids.insert(id, view["pid"].as_i64().unwrap() as i32);
    }
    assert_eq!(heart.terminate().code(), Some(0));
    assert!(
        is_supervisor(pids["shared"]),
        "a shared instance outlives the heart"
    );
    assert!(
        !alive(pids["own"]),
        "an exclusive instance stops with the heart"
    );
    let catalog = heart.catalog();
    assert_eq!(catalog["instances"]["own"]["state"], "STOPPED");
    assert_eq!(catalog["instances"]["shared"]["state"], "RUNNING");

    heart.args(&["--stop-on-exit"]).spawn();
    assert_eq!(heart.state("shared"), "RUNNING");
    assert_eq!(heart.terminate().code(), Some(0));
    assert!(
        !alive(pids["shared"]),
        "--stop-on-exit stops every instance"
    );
    assert_eq!(heart.catalog()["instances"]["shared"]["state"], "STOPPED");
}

#[test]
fn the_periodic_check_notices_a_vanished_supervisor() {
    let heart = TestHeart::serve("heart-check", &["--check-interval", "0.2"]);
    let app = app(&heart);
    let body = standalone(
        "victim",
        &app,
        json!({"launch_command": "sleep 300", "standalone_wait": 0.1}),
    );
    assert_eq!(heart.register(body).status, 201);
    let supervisor = heart.start("victim").json()["pid"].as_i64().unwrap() as i32;
    kill(Pid::from_raw(supervisor), Signal::SIGKILL).unwrap();
    let message = heart.wait_message("victim", "ERROR");
    assert!(message.contains("supervisor is gone"), "{message}");
    // It can be started again.
    assert_eq!(heart.start("victim").json()["state"], "RUNNING");
}
