//! Remote deploy (issue 14): sources by URL with a digest, uploads, and
//! `deploy --address`, against a heart that cannot see the client's files,
//! and archives that try to write outside the instance directory.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::thread;

use serde_json::{json, Value};

use crate::util::heart::shell_instance;
use crate::util::http::Request;
use crate::util::{exited_with, run, Dir, TestHeart, HEART};

/// A `.tar.gz` of `dir` made by GNU tar, as an operator would make it.
fn tar_gz(dir: &Path, out: &Path) -> Vec<u8> {
    let status = Command::new("tar")
        .arg("czf")
        .arg(out)
        .arg("-C")
        .arg(dir)
        .arg(".")
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::read(out).unwrap()
}

/// The SHA-256 of `bytes`, by `sha256sum`.
fn sha256(path: &Path) -> String {
    let out = run(Command::new("sha256sum").arg(path));
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// Serves `body` with `status` to every request on 127.0.0.1, in a thread
/// that ends with the test process; its base URL.
fn serve(status: u16, body: Vec<u8>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut stream = stream;
            let mut head = [0u8; 4096];
            let _ = stream.read(&mut head);
            let _ = write!(
                stream,
                "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(&body);
        }
    });
    format!("http://127.0.0.1:{port}")
}

/// An application directory the shell runtime can run.
fn app(dir: &Dir) -> std::path::PathBuf {
    dir.write("app/hello.txt", "hello\n");
    dir.join("app")
}

fn body_from(id: &str, source: &str, sha: Option<&str>) -> Value {
    let mut body = shell_instance(id, Path::new(source), json!({"launch_command": "sleep 60"}));
    body["standalone"] = json!(true);
    if let Some(sha) = sha {
        body["source_sha256"] = json!(sha);
    }
    body
}

#[test]
fn a_source_by_url_is_checked_by_its_digest_and_each_failure_says_why() {
    let heart = TestHeart::serve("deploy-url", &[]);
    let dir = Dir::new("deploy-url-files");
    let archive = dir.join("app.tar.gz");
    let bytes = tar_gz(&app(&dir), &archive);
    let digest = sha256(&archive);
    let url = format!("{}/app.tar.gz", serve(200, bytes));

    let answer = heart.register(body_from("good", &url, Some(&digest)));
    assert_eq!(answer.status, 201, "{answer:?}");
    assert!(heart.data().join("instances/good/hello.txt").is_file());
    // The download is not kept.
    assert_eq!(
        std::fs::read_dir(heart.data().join("uploads"))
            .unwrap()
            .count(),
        0
    );

    let wrong = "0".repeat(64);
    let answer = heart.register(body_from("bad-digest", &url, Some(&wrong)));
    assert_eq!(answer.status, 422, "{answer:?}");
    let error = answer.json()["error"].as_str().unwrap().to_string();
    assert!(error.contains(&digest) && error.contains(&wrong), "{error}");

    let missing = format!("{}/nope.tar.gz", serve(404, b"no".to_vec()));
    let answer = heart.register(body_from("not-found", &missing, None));
    assert_eq!(answer.status, 422, "{answer:?}");
    assert!(answer.body.contains("404"), "{answer:?}");

    let not_gzip = format!("{}/x.tar.gz", serve(200, b"plain text".to_vec()));
    let answer = heart.register(body_from("not-gzip", &not_gzip, None));
    assert_eq!(answer.status, 422, "{answer:?}");
    assert!(answer.body.contains("gzip"), "{answer:?}");

    let answer = heart.register(body_from("tls", "https://example.invalid/x.tar.gz", None));
    assert_eq!(answer.status, 422, "{answer:?}");
    assert!(answer.body.contains("only http://"), "{answer:?}");

    for id in ["bad-digest", "not-found", "not-gzip", "tls"] {
        assert_eq!(
            heart.call("GET", &format!("/instances/{id}"), None).status,
            404
        );
        assert!(!heart.data().join("instances").join(id).exists());
    }
}

#[test]
fn an_upload_is_used_once_and_archives_never_write_outside() {
    let heart = TestHeart::serve("deploy-upload", &[]);
    let dir = Dir::new("deploy-upload-files");
    let archive = dir.join("app.tar.gz");
    let bytes = tar_gz(&app(&dir), &archive);
    let answer = Request::new("POST", "/uploads")
        .token(Some(heart.token()))
        .body(&bytes)
        .call(heart.addr());
    assert_eq!(answer.status, 201, "{answer:?}");
    let upload = answer.json();
    assert_eq!(upload["size"], bytes.len());
    assert_eq!(upload["sha256"], sha256(&archive));
    let source = format!("upload:{}", upload["upload"].as_str().unwrap());
    assert_eq!(heart.register(body_from("up", &source, None)).status, 201);
    // Used once.
    let again = heart.register(body_from("up2", &source, None));
    assert_eq!(again.status, 422, "{again:?}");

    // Not gzip: refused, nothing kept.
    let answer = Request::new("POST", "/uploads")
        .token(Some(heart.token()))
        .body(b"not an archive")
        .call(heart.addr());
    assert_eq!(answer.status, 422, "{answer:?}");

    // An archive whose member climbs out is refused, naming it, and
    // writes nothing outside.
    let evil = dir.mkdir("evil");
    std::fs::write(evil.join("x"), "planted").unwrap();
    let sentinel = heart.data().join("instances/x");
    let evil_archive = dir.join("evil.tar.gz");
    let status = Command::new("tar")
        .arg("czf")
        .arg(&evil_archive)
        .arg("-C")
        .arg(&evil)
        .args(["--transform", "s,^x$,../x,", "x"])
        .status()
        .unwrap();
    assert!(status.success());
    let answer = heart.register(body_from("evil", evil_archive.to_str().unwrap(), None));
    assert_eq!(answer.status, 422, "{answer:?}");
    assert!(answer.body.contains("../x"), "{answer:?}");
    assert!(!sentinel.exists(), "the archive wrote outside");
    assert!(!heart.data().join("instances/evil").exists());
}

#[test]
fn deploy_with_an_address_uploads_what_the_heart_cannot_see() {
    let heart = TestHeart::serve("deploy-remote", &[]);
    let dir = Dir::new("deploy-remote-app");
    dir.write("app/hello.txt", "hello\n");
    dir.write("app/secret.key", "not for the node\n");
    dir.write("app/.pmignore", "*.key\n");
    dir.write(
        "app/paasmaker.json",
        json!({
            "application": {"name": "remote"},
            "runtime": {"name": "shell", "version": "1",
                        "parameters": {"launch_command": "sleep 60"}},
            "standalone": true
        })
        .to_string(),
    );
    // No --data-dir: the client knows the heart only by address and token.
    let out = run(Command::new(HEART)
        .arg("deploy")
        .arg(dir.join("app"))
        .args([
            "--id",
            "remote",
            "--address",
            heart.addr(),
            "--token",
            heart.token(),
        ])
        .current_dir(&dir.path));
    exited_with(&out, 0, "deploy --address");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("uploaded"), "{stderr}");
    assert_eq!(heart.state("remote"), "RUNNING");
    let copy = heart.data().join("instances/remote");
    assert!(copy.join("hello.txt").is_file());
    assert!(
        !copy.join("secret.key").exists(),
        ".pmignore was not honoured"
    );
}

/// Writes a manifest of application `replaced` that runs `command`.
fn replaceable(dir: &Dir, command: &str) {
    dir.write(
        "app/paasmaker.json",
        json!({
            "application": {"name": "replaced"},
            "runtime": {"name": "shell", "version": "1",
                        "parameters": {"launch_command": command, "standalone_wait": 0.2}},
            "standalone": true
        })
        .to_string(),
    );
}

#[test]
fn deploy_replace_starts_the_new_before_removing_the_old_and_keeps_it_on_failure() {
    let heart = TestHeart::serve("deploy-replace", &[]);
    let dir = Dir::new("deploy-replace-app");
    let deploy = |args: &[&str]| {
        heart.client(&[&["deploy", dir.join("app").to_str().unwrap()], args].concat())
    };
    replaceable(&dir, "sleep 60");
    exited_with(&deploy(&[]), 0, "first deploy");
    let ids = |heart: &TestHeart| -> Vec<String> {
        let list = heart.call("GET", "/instances", None).json();
        list["instances"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["instance_id"].as_str().unwrap().to_string())
            .collect()
    };
    let first = ids(&heart);
    assert_eq!(first.len(), 1);

    exited_with(&deploy(&["--replace"]), 0, "deploy --replace");
    let second = ids(&heart);
    assert_eq!(second.len(), 1, "{second:?}");
    assert_ne!(second, first);
    assert_eq!(heart.state(&second[0]), "RUNNING");

    // A replacement that cannot start leaves the running one alone.
    replaceable(&dir, "/nonexistent/program");
    let out = deploy(&["--replace"]);
    assert_ne!(out.status.code(), Some(0), "a failed replacement succeeded");
    assert_eq!(ids(&heart), second);
    assert_eq!(heart.state(&second[0]), "RUNNING");
}

#[test]
fn a_50_mb_upload_is_streamed_to_disk_not_held_in_memory() {
    let heart = TestHeart::serve("deploy-big", &[]);
    let dir = Dir::new("deploy-big-files");
    let big = dir.join("big.tar.gz");
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "head -c 50000000 /dev/urandom | gzip -1 > {}",
            big.display()
        ))
        .status()
        .unwrap();
    assert!(status.success());
    let bytes = std::fs::read(&big).unwrap();
    let answer = Request::new("POST", "/uploads")
        .token(Some(heart.token()))
        .body(&bytes)
        .call(heart.addr());
    assert_eq!(answer.status, 201, "{answer:?}");
    assert_eq!(answer.json()["size"], bytes.len());
    // The heart's peak resident memory over its whole life.
    let status = std::fs::read_to_string(format!("/proc/{}/status", heart.pid())).unwrap();
    let peak_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    assert!(peak_kib < 30 * 1024, "peak RSS {peak_kib} KiB");
}
