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

#[test]
fn a_startup_commands_output_is_rotated_within_the_limits() {
    let mut heart = TestHeart::new("log-limits-startup");
    heart.spawn();
    let source = heart.dir().mkdir("app");
    // 30,000 lines of about 100 bytes: 3 MB before the process starts.
    let mut body = writer("startup", &source, 1);
    body["startup"] = json!([
        "i=0; while [ $i -lt 30000 ]; do \
         echo \"startup $i ................................................................................\"; \
         i=$((i+1)); done"
    ]);
    body["log_max_size"] = json!("1M");
    body["log_keep"] = json!(2);
    heart.run_instance(body);
    wait_until(T, "the instance to have written", || {
        written(&heart, "startup")
    });
    let files = log_files(&heart, "startup");
    assert_eq!(files.len(), 3, "{files:?}");
    assert!(files.iter().all(|(_, size)| *size <= 1 << 20), "{files:?}");
    // The newest lines of the startup command are all there, in order.
    let logs = heart.data().join("logs");
    let text: String = files
        .iter()
        .map(|(name, _)| fs::read_to_string(logs.join(name)).unwrap())
        .collect();
    let tail: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("startup "))
        .map(|l| l.split(' ').nth(1).unwrap())
        .collect();
    let last: Vec<String> = (29_000..30_000).map(|i| i.to_string()).collect();
    assert!(tail.ends_with(&last.iter().map(String::as_str).collect::<Vec<_>>()));
}
