//! The runtime plugins through the heart: an nvm application, the example
//! external plugin, plugins that hang or answer garbage, and a plugin that
//! runs its application itself. Each test runs its own [`TestHeart`] with
//! the plugin directory `DIR/plugins`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::runtime::{install, EXAMPLE_PLUGIN};
use crate::util::heart::instance;
use crate::util::http::{self, Response};
use crate::util::process::group_alive;
use crate::util::{alive, pid_in, run, wait_until, web_server_py, Dir, KillOnDrop, TestHeart};

/// A heart on the scratch directory `dir` with `--plugin-dir DIR/plugins`
/// and the environment `env`.
fn heart_with_plugins(dir: Dir, env: &[(&str, &str)]) -> TestHeart {
    let plugins = dir.mkdir("plugins");
    let mut heart = TestHeart::in_dir(dir);
    heart.args(&["--plugin-dir"]).args(&[plugins]);
    for (key, value) in env {
        heart.env(key, value);
    }
    heart.spawn();
    heart
}

/// Registers an instance of `runtime` on `source`; its view.
fn register(heart: &TestHeart, id: &str, source: &Path, runtime: Value) -> Value {
    let answer = heart.register(instance(id, source, runtime));
    assert_eq!(answer.status, 201, "register {id}: {answer:?}");
    answer.json()
}

/// `GET /` from an application on `port`, which must answer.
fn get_app(port: u64) -> Response {
    http::get(port as u16, "/").unwrap_or_else(|| panic!("nothing answers on port {port}"))
}

#[test]
fn nvm_application_runs_through_the_heart() {
    let dir = Dir::new("nvm-heart");
    let node =
        String::from_utf8(run(Command::new("sh").args(["-c", "command -v node"])).stdout).unwrap();
    let node = PathBuf::from(node.trim());
    let version = String::from_utf8(run(Command::new(&node).arg("--version")).stdout).unwrap();
    let version = version.trim().trim_start_matches('v').to_string();
    let major = version.split('.').next().unwrap().to_string();
    let root = dir.join("nvm");
    install(
        &root,
        &format!("versions/node/v{version}"),
        "node",
        Some(&node),
    );
    let bin = root.join(format!("versions/node/v{version}/bin"));
    let app = dir.mkdir("app");

    let heart = heart_with_plugins(dir, &[("NVM_DIR", root.to_str().unwrap())]);
    let runtimes = heart.call("GET", "/runtimes", None).json();
    assert!(
        runtimes["nvm"]
            .as_array()
            .unwrap()
            .contains(&Value::from(version.clone())),
        "{runtimes}"
    );
    // The server retries its bind on EADDRINUSE, as web_server_py() does.
    let server = "const srv = require('http').createServer((q, s) => s.end('node ' + process.version + ' ' + process.env.NVM_BIN + ' ' + process.env.PATH.split(':')[0])); let tries = 100; srv.on('error', (e) => { if (e.code === 'EADDRINUSE' && tries-- > 0) { setTimeout(() => srv.listen(%(port)d, '127.0.0.1'), 50); } else { throw e; } }); srv.listen(%(port)d, '127.0.0.1')";
    let view = heart.run_instance(instance(
        "nvm-app",
        &app,
        json!({
            "name": "nvm",
            "version": major,
            "parameters": {"launch_command": format!("node -e \"{server}\"")},
        }),
    ));
    let port = view["port"].as_u64().unwrap();
    let answer = get_app(port);
    let bin = bin.display().to_string();
    assert!(
        answer
            .body
            .ends_with(&format!("node v{version} {bin} {bin}")),
        "{answer:?}"
    );
    let stopped = heart.stop("nvm-app");
    assert_eq!(
        (stopped.status, stopped.json()["state"].as_str()),
        (200, Some("STOPPED"))
    );
    wait_until(Duration::from_secs(10), "the port to close", || {
        std::net::TcpStream::connect(("127.0.0.1", port as u16)).is_err()
    });
}

#[test]
fn external_plugin_runs_an_application_through_the_heart() {
    let dir = Dir::new("plugin-heart");
    let plugins = dir.mkdir("plugins");
    fs::copy(EXAMPLE_PLUGIN, plugins.join("pm-runtime-procfile")).unwrap();
    dir.write(
        "app/Procfile",
        "# the example application\nweb: python3 server.py $PORT\n",
    );
    dir.write("app/server.py", web_server_py());
    dir.write("app/hello.txt", "hello\n");
    let app = dir.join("app");
    let empty = dir.mkdir("empty");
    let heart = heart_with_plugins(dir, &[]);
    let runtimes = heart.call("GET", "/runtimes", None).json();
    assert_eq!(runtimes["procfile"], json!(["1"]), "{runtimes}");

    let view = heart.run_instance(instance(
        "procfile-app",
        &app,
        json!({"name": "procfile", "version": "1"}),
    ));
    let port = view["port"].as_u64().unwrap();
    let answer = get_app(port);
    assert!(
        answer.status == 200 && answer.body.contains("hello.txt"),
        "{answer:?}"
    );
    let stopped = heart.stop("procfile-app");
    assert_eq!(
        (stopped.status, stopped.json()["state"].as_str()),
        (200, Some("STOPPED"))
    );

    // An application without a Procfile: the plugin's reason reaches the
    // instance.
    register(
        &heart,
        "no-procfile",
        &empty,
        json!({"name": "procfile", "version": "1"}),
    );
    let failed = heart.start("no-procfile");
    let message = &failed.body;
    assert!(
        message.contains("ERROR")
            && message.contains("runtime plugin procfile")
            && message.contains("cannot read"),
        "{failed:?}"
    );
}

#[test]
fn broken_plugins_fail_a_start_through_the_heart() {
    let dir = Dir::new("broken-heart");
    let pidfile = dir.join("hang.pid");
    let versions = "versions) echo '{\"versions\": [\"1\"]}'; exit 0 ;;";
    dir.script(
        "plugins/pm-runtime-hang",
        &format!(
            "#!/bin/sh\ncase $1 in {versions} esac\necho $$ > {}\nsleep 600 &\nsleep 600\n",
            pidfile.display()
        ),
    );
    dir.script(
        "plugins/pm-runtime-garbage",
        &format!("#!/bin/sh\ncase $1 in {versions} esac\necho '<html>oops'\n"),
    );
    dir.script(
        "plugins/pm-runtime-fail",
        &format!("#!/bin/sh\ncase $1 in {versions} esac\necho 'fail: no luck' >&2\nexit 1\n"),
    );
    let app = dir.mkdir("app");
    let heart = heart_with_plugins(dir, &[("PM_RUNTIME_TIMEOUT", "1")]);

    let expectations = [
        (
            "hang",
            "environment timed out after 1.0 s; its process group was killed",
        ),
        ("garbage", "environment answered invalid JSON"),
        ("fail", "environment failed: exit status 1: fail: no luck"),
    ];
    for (name, expected) in expectations {
        let id = format!("{name}-app");
        register(&heart, &id, &app, json!({"name": name, "version": "1"}));
        let start = Instant::now();
        let message = heart.start_fails(&id);
        assert!(start.elapsed() < Duration::from_secs(15));
        assert!(
            message.contains(&format!("runtime plugin {name} (")) && message.contains(expected),
            "{message}"
        );
    }
    let pid = pid_in(&pidfile, Duration::from_secs(5));
    wait_until(Duration::from_secs(5), "the plugin's group to die", || {
        !group_alive(pid)
    });
}

/// A plugin that starts its application itself (a daemon in its own
/// session) and answers `stop` and `status` for it.
const SELF_RUN_PLUGIN: &str = r#"#!/usr/bin/env python3
import json, os, signal, subprocess, sys, time
mode = sys.argv[1]
request = json.load(sys.stdin)
if mode == "versions":
    json.dump({"versions": ["1"]}, sys.stdout)
elif mode == "environment":
    json.dump({"environment": request["environment"]}, sys.stdout)
else:
    pidfile = os.path.join(request["path"], ".selfrun.pid")
    if mode == "start":
        proc = subprocess.Popen(
            [sys.executable, "server.py", str(request["port"])],
            cwd=request["path"], env=request["environment"], start_new_session=True,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=open(os.path.join(request["path"], ".selfrun.log"), "a"))
        with open(pidfile, "w") as f:
            f.write(str(proc.pid))
        json.dump({"message": "started pid %d" % proc.pid}, sys.stdout)
    else:
        try:
            pid = int(open(pidfile).read())
            os.kill(pid, 0)
        except (OSError, ValueError):
            sys.exit("selfrun: %s is not running" % request["instance_id"])
        if mode == "stop":
            os.kill(pid, signal.SIGTERM)
            os.unlink(pidfile)
            json.dump({"message": "stopped pid %d" % pid}, sys.stdout)
        else:
            json.dump({"message": "running as pid %d" % pid}, sys.stdout)
"#;

#[test]
fn managed_plugin_start_stop_and_status_through_the_heart() {
    let dir = Dir::new("managed-heart");
    dir.script("plugins/pm-runtime-selfrun", SELF_RUN_PLUGIN);
    dir.write("app/index.html", "managed by the plugin\n");
    dir.write("app/server.py", web_server_py());
    let app = dir.join("app");
    let heart = heart_with_plugins(dir, &[]);
    let view = register(
        &heart,
        "selfrun-app",
        &app,
        json!({"name": "selfrun", "version": "1"}),
    );
    let port = view["port"].as_u64().unwrap();
    let started = heart.start("selfrun-app");
    let log = || fs::read_to_string(heart.data().join("instances/selfrun-app/.selfrun.log"));
    assert_eq!(started.status, 200, "{started:?} {:?}", log());
    let started = started.json();
    assert_eq!(started["state"], "RUNNING", "{started}");
    assert!(
        started["message"]
            .as_str()
            .is_some_and(|m| m.contains("started pid")),
        "{started}"
    );
    let pidfile = heart.data().join("instances/selfrun-app/.selfrun.pid");
    let pid: i32 = fs::read_to_string(&pidfile).unwrap().parse().unwrap();
    let _daemon = KillOnDrop { pid, group: true };
    assert!(get_app(port).body.contains("managed by the plugin"));

    let stopped = heart.stop("selfrun-app");
    assert_eq!(
        (stopped.status, stopped.json()["state"].as_str()),
        (200, Some("STOPPED")),
        "{stopped:?}"
    );
    assert!(!pidfile.exists(), "the plugin's stop was not called");
    wait_until(Duration::from_secs(10), "the daemon to end", || !alive(pid));
}
