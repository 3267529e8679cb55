//! Windows and contract points of issue 8: each test reproduces what went
//! wrong before (a crash window simulated with a wrapper, a crafted
//! request) against the real binaries.

use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::json;

use crate::heart::{app, standalone, web_instance};
use crate::util::heart::{shell_instance, LONG};
use crate::util::http::Request;
use crate::util::{alive, pid_in, wait_until, TestHeart, SUPERVISOR};

#[test]
fn a_supervisor_launched_but_not_recorded_is_adopted_and_stopped() {
    let mut heart = TestHeart::new("hostile-unrecorded");
    // The heart is killed right after the launch, before it records the
    // supervisor: a wrapper launches the real one, says so, and lingers.
    let marker = heart.dir().join("launched");
    let wrapper = heart.dir().script(
        "slow-supervisor",
        &format!(
            "#!/bin/sh\n{SUPERVISOR} \"$@\" || exit $?\ntouch {}\nexec sleep 60\n",
            marker.display()
        ),
    );
    heart
        .args(&["--supervisor", wrapper.to_str().unwrap()])
        .spawn();
    let app_dir = app(&heart);
    let body = shell_instance(
        "window",
        &app_dir,
        json!({"launch_command": "echo $$ > app.pid; exec sleep 300", "shell": true}),
    );
    let mut body = body;
    body["standalone"] = json!(true);
    assert_eq!(heart.register(body).status, 201);
    let addr = heart.addr().to_string();
    let token = heart.token().to_string();
    let start = std::thread::spawn(move || {
        Request::new("POST", "/instances/window/start")
            .token(Some(&token))
            .timeout(Duration::from_secs(5))
            .send(&addr)
    });
    wait_until(LONG, "the launch", || marker.exists());
    heart.crash();
    let _ = start.join();
    let app_pid = pid_in(&heart.data().join("instances/window/app.pid"), LONG);

    // Started again with the real supervisor: the instance is RUNNING,
    // adopted from its pidfile, and a stop ends its application.
    heart.args(&["--supervisor", SUPERVISOR]).spawn();
    let view = heart.show("window");
    assert_eq!(view["state"], "RUNNING", "{view}");
    assert_eq!(heart.stop("window").status, 200);
    wait_until(LONG, "the application to end", || !alive(app_pid));
}

#[test]
fn a_stop_during_a_restart_backoff_cancels_the_restart() {
    let heart = TestHeart::serve("hostile-backoff", &["--check-interval", "0.2"]);
    let app_dir = app(&heart);
    let mut body = standalone(
        "flappy",
        &app_dir,
        json!({"launch_command": "sleep 0.3", "standalone_wait": 0.1}),
    );
    body["restart"] = json!("always");
    assert_eq!(heart.register(body).status, 201);
    let _ = heart.start("flappy");
    // Its exit is applied, and a restart is scheduled (1 s, then 2 s...).
    wait_until(LONG, "a restart to be pending", || {
        heart.catalog()["instances"]["flappy"]["backoff"]["next_restart"].is_number()
    });
    let answer = heart.stop("flappy");
    assert_eq!(answer.status, 200, "{answer:?}");
    assert!(heart.catalog()["instances"]["flappy"]["backoff"]["next_restart"].is_null());
    // No restart comes: its state stays as it is past the backoff.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(heart.state("flappy"), "STOPPED");
}

#[test]
fn the_assigned_port_wins_over_the_instances_own_port_variable() {
    let heart = TestHeart::serve("hostile-port", &[]);
    let app_dir = app(&heart);
    let mut body = web_instance("portly", &app_dir);
    body["environment"] = json!({"PORT": "1", "PM_PORT": "1", "PM_INSTANCE_ID": "x"});
    let view = heart.run_instance(body);
    let port = view["port"].as_u64().unwrap();
    assert_ne!(port, 1);
    assert_eq!(view["state"], "RUNNING");
}

#[test]
fn exit_codes_outside_a_byte_are_refused_and_the_key_kept() {
    let heart = TestHeart::serve("hostile-codes", &[]);
    let app_dir = app(&heart);
    heart.run_instance(standalone(
        "keyed",
        &app_dir,
        json!({"launch_command": "sleep 300", "standalone_wait": 0.1}),
    ));
    let key = heart.catalog()["instances"]["keyed"]["exit_key"]
        .as_str()
        .unwrap()
        .to_string();
    for code in ["-1", "256", "abc", "99999999999999999999"] {
        let answer =
            Request::new("POST", &format!("/instance/exit/keyed/{key}/{code}")).call(heart.addr());
        assert_eq!(answer.status, 400, "{code}: {answer:?}");
    }
    assert_eq!(heart.state("keyed"), "RUNNING");
    assert_eq!(
        heart.catalog()["instances"]["keyed"]["exit_key"].as_str(),
        Some(key.as_str())
    );
    // Clean up the sleeper through its supervisor.
    let pid = heart.show("keyed")["pid"].as_i64().unwrap() as i32;
    let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
}

#[test]
fn what_a_client_reads_is_in_place_before_the_first_answer() {
    // A client that polls /health from before the heart is spawned: when
    // the first answer comes, the address and token files must be there.
    let mut heart = TestHeart::new("hostile-address");
    heart.ports(20);
    let listen = format!("127.0.0.1:{}", heart.block().port(24));
    let data = heart.data().to_path_buf();
    let addr = listen.clone();
    let poller = std::thread::spawn(move || {
        let deadline = std::time::Instant::now() + LONG;
        while std::time::Instant::now() < deadline {
            let answer = Request::get("/health")
                .timeout(Duration::from_millis(500))
                .send(&addr);
            if answer.is_ok_and(|a| a.status == 200) {
                return (data.join("address").is_file(), data.join("token").is_file());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        panic!("no answer from {addr}");
    });
    heart.args(&["--listen", &listen]).spawn();
    let (address, token) = poller.join().unwrap();
    assert!(address, "answered before DATA_DIR/address was written");
    assert!(token, "answered before DATA_DIR/token was written");
}

#[test]
fn a_patch_changes_the_health_check_the_user_and_the_limits() {
    let heart = TestHeart::serve("hostile-patch", &[]);
    let app_dir = app(&heart);
    assert_eq!(
        heart.register(web_instance("patched", &app_dir)).status,
        201
    );
    let patch = |body: serde_json::Value| {
        Request::new("PATCH", "/instances/patched")
            .token(Some(heart.token()))
            .body(body.to_string().as_bytes())
            .call(heart.addr())
    };
    let answer = patch(json!({
        "health_check": {"type": "http", "path": "/hello.txt"},
        "limits": {"nofile": 512},
        "user": "nobody"
    }));
    assert_eq!(answer.status, 200, "{answer:?}");
    let record = heart.catalog()["instances"]["patched"].clone();
    assert_eq!(record["health_check"]["path"], "/hello.txt", "{record}");
    assert_eq!(record["limits"]["nofile"], 512, "{record}");
    assert_eq!(record["user"], "nobody", "{record}");
    let answer = patch(json!({"limits": {"nofile": 0}}));
    assert_eq!(answer.status, 400, "{answer:?}");
    let answer = patch(json!({"user": "no-such-user-here"}));
    assert_eq!(answer.status, 422, "{answer:?}");
    assert_eq!(heart.catalog()["instances"]["patched"]["user"], "nobody");
}
