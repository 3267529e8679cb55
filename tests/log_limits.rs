//! `log_max_size` and `log_keep`: node-wide in the heart's configuration,
//! per instance in the register request, the manifest and the update;
//! the instance's own win, and both reach the supervisor that writes the
//! instance log.

use std::ffi::OsString;
use std::fs;
use std::path::Path;
use std::time::Duration;

use serde_json::json;

use crate::util::heart::shell_instance;
use crate::util::{wait_until, TestHeart};

const T: Duration = Duration::from_secs(60);

/// A standalone shell instance that writes `lines` numbered lines of
/// about 100 bytes, then sleeps.
fn writer(id: &str, source: &Path, lines: u32) -> serde_json::Value {
    let mut body = shell_instance(
        id,
        source,
        json!({
            "launch_command": format!(
                "i=0; while [ $i -lt {lines} ]; do \
                 echo \"line $i ................................................................................\"; \
                 i=$((i+1)); done; echo written; exec sleep 600"
            ),
            "shell": true,
        }),
    );
    body["standalone"] = json!(true);
    body
}

/// The instance log of `id` and its rotated files, newest last, as
/// `(name, size)`; checks that each holds whole lines only.
fn log_files(heart: &TestHeart, id: &str) -> Vec<(String, u64)> {
    let logs = heart.data().join("logs");
    let mut out = Vec::new();
    for n in (1..=100).rev() {
        let name = format!("{id}.log.{n}");
        if let Ok(text) = fs::read_to_string(logs.join(&name)) {
            assert!(text.ends_with('\n'), "{name} ends inside a line");
            out.push((name, text.len() as u64));
        }
    }
    let name = format!("{id}.log");
    out.push((name.clone(), fs::metadata(logs.join(name)).unwrap().len()));
    out
}

fn written(heart: &TestHeart, id: &str) -> bool {
    fs::read_to_string(heart.data().join(format!("logs/{id}.log")))
        .is_ok_and(|text| text.contains("\nwritten\n"))
}

#[test]
fn the_instances_own_limits_win_over_the_nodes() {
    let mut heart = TestHeart::new("log-limits");
    let config = heart
        .dir()
        .write("heart.json", r#"{"log_max_size": "64K", "log_keep": 1}"#);
    heart
        .args(&[OsString::from("--config"), config.into_os_string()])
        .spawn();
    let source = heart.dir().mkdir("app");

    // Its own: 1 MiB, 3 files kept; 4.6 MB written.
    let mut own = writer("own", &source, 50_000);
    own["log_max_size"] = json!("1M");
    own["log_keep"] = json!(3);
    let view = heart.run_instance(own);
    assert_eq!(view["log_max_size"], 1 << 20, "{view}");
    assert_eq!(view["log_keep"], 3, "{view}");
    // The node's: 64 KiB, 1 file kept.
    let view = heart.run_instance(writer("node", &source, 3_000));
    assert_eq!(view["log_max_size"], serde_json::Value::Null, "{view}");

    wait_until(T, "both to have written everything", || {
        written(&heart, "own") && written(&heart, "node")
    });
    let own = log_files(&heart, "own");
    assert_eq!(own.len(), 4, "{own:?}");
    assert!(own.iter().all(|(_, size)| *size <= 1 << 20), "{own:?}");
    assert!(own[0].1 > 1 << 19, "files of 1 MiB, not 64 KiB: {own:?}");
    let node = log_files(&heart, "node");
    assert_eq!(node.len(), 2, "{node:?}");
    assert!(node.iter().all(|(_, size)| *size <= 65536), "{node:?}");

    // An update changes them for the next start.
    let answer = heart.call(
        "PATCH",
        "/instances/node",
        Some(json!({"log_max_size": 131072, "log_keep": 2})),
    );
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.json()["log_max_size"], 131072);
    assert_eq!(answer.json()["log_keep"], 2);
    let control = heart.data().join("supervisor/node.json");
    assert_eq!(heart.stop("node").status, 200);
    assert_eq!(heart.start("node").status, 200);
    let text = fs::read_to_string(&control).unwrap();
    let control: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(control["log_max_size"], 131072, "{control}");
    assert_eq!(control["log_keep"], 2, "{control}");
}

#[test]
fn bad_limits_are_refused_naming_the_field() {
    let mut heart = TestHeart::new("log-limits-bad");
    heart.spawn();
    let source = heart.dir().mkdir("app");
    for (field, value) in [
        ("log_max_size", json!("1K")),
        ("log_max_size", json!("lots")),
        ("log_max_size", json!(-1)),
        ("log_keep", json!(101)),
        ("log_keep", json!("3")),
    ] {
        let mut body = writer("bad", &source, 1);
        body[field] = value.clone();
        let answer = heart.register(body);
        assert_eq!(answer.status, 400, "{field}={value}: {answer:?}");
        assert!(answer.body.contains(field), "{field}={value}: {answer:?}");
    }
    let answer = heart.register(writer("good", &source, 1));
    assert_eq!(answer.status, 201, "{answer:?}");
    let answer = heart.call("PATCH", "/instances/good", Some(json!({"log_keep": 1000})));
    assert_eq!(answer.status, 400, "{answer:?}");
    assert!(answer.body.contains("log_keep"), "{answer:?}");

    // A bad node-wide value stops a heart at once, naming the option.
    let out = heart.client(&["serve", "--log-max-size", "10"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--log-max-size"), "{stderr}");
}
