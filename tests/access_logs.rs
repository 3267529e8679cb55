//! The logs of php and static instances: the managed Apache writes each
//! instance's error log (`logs/ID.log`) and access log
//! (`logs/ID.access.log`) through piped loggers (`pm-supervisor
//! --log-pipe`), stamped and rotated within the instance's limits, read
//! through `GET /instances/ID/log[?stream=access]` and `pm-heart log ID
//! [--access]`.

use std::collections::BTreeSet;
use std::fs;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::json;

use crate::apache::{
    apache_heart, apache_options, body_of, fetch, php, php_version, port_of, site, static_site, T,
};
use crate::util::process::processes_under;
use crate::util::{wait_for, wait_until, TestHeart};

/// The piped loggers of `heart`'s Apache that are alive.
fn loggers(heart: &TestHeart) -> Vec<i32> {
    processes_under(heart.data())
        .into_iter()
        .filter(|pid| {
            fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|raw| raw.split(|&b| b == 0).any(|arg| arg == b"--log-pipe"))
        })
        .collect()
}

/// The access log of `id` through the API, with `query` added.
fn access_log(heart: &TestHeart, id: &str, query: &str) -> String {
    let answer = heart.call(
        "GET",
        &format!("/instances/{id}/log?stream=access{query}"),
        None,
    );
    assert_eq!(answer.status, 200, "{answer:?}");
    answer.body
}

/// The numbers `n` of the requests `GET /page.html?n=N` in `log`, each
/// once; panics on a number seen twice.
fn numbers(log: &str) -> BTreeSet<u32> {
    let mut seen = BTreeSet::new();
    for line in log.lines() {
        if let Some(at) = line.find("/page.html?n=") {
            let digits: String = line[at + 13..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            assert!(seen.insert(digits.parse().unwrap()), "twice: {line}");
        }
    }
    seen
}

/// True for a line that starts with the logger's stamp and a space:
/// `2026-01-01T00:00:00.000000Z `.
fn stamped(line: &str) -> bool {
    let b = line.as_bytes();
    b.len() > 28 && b[4] == b'-' && b[10] == b'T' && b[26] == b'Z' && b[27] == b' '
}

/// True for a whole access line: a stamp, then the combined format of one
/// request answered 200 (the test's `GET`s, and the `OPTIONS *` with
/// which the heart sees Apache answer).
fn whole_access_line(line: &str) -> bool {
    stamped(line)
        && Some(&line[28..]).is_some_and(|rest| {
            rest.starts_with("127.0.0.1 - - [")
                && (rest.contains("] \"GET /page.html?n=") || rest.contains("] \"OPTIONS * "))
                && rest.contains(" HTTP/1.")
                && rest.contains("\" 200 ")
                && rest.ends_with('"')
        })
}

#[test]
fn a_static_instance_has_its_requests_in_its_access_log() {
    let heart = apache_heart("access-log");
    let site_dir = static_site(heart.dir());
    let s = heart.run_instance(site("s", &site_dir, json!({})));
    let port = port_of(&s);
    for n in 0..20 {
        body_of(port, &format!("/page.html?n={n}"));
    }
    wait_until(T, "20 requests in the access log", || {
        numbers(&access_log(&heart, "s", "")).len() == 20
    });
    let log = access_log(&heart, "s", "");
    assert_eq!(numbers(&log), (0..20).collect(), "{log}");
    assert!(log.lines().all(whole_access_line), "{log}");
    // The file is beside the instance log; the main log does not have it.
    assert!(heart.data().join("logs/s.access.log").is_file());
    let main = heart.call("GET", "/instances/s/log", None);
    assert!(!main.body.contains("/page.html?n="), "{main:?}");

    // `tail`, `since` and the client.
    let last = access_log(&heart, "s", "&tail=2");
    assert_eq!(numbers(&last), [18, 19].into(), "{last}");
    let since = access_log(&heart, "s", "&since=2000-01-01T00:00:00Z");
    assert_eq!(numbers(&since).len(), 20, "{since}");
    let future = access_log(&heart, "s", "&since=2999-01-01T00:00:00Z");
    assert_eq!(future, "");
    let out = heart.ok(&["log", "s", "--access", "--tail", "1"]);
    assert_eq!(numbers(&out), [19].into(), "{out}");
    let bad = heart.call("GET", "/instances/s/log?stream=errors", None);
    assert_eq!(bad.status, 400, "{bad:?}");
    assert!(bad.body.contains("stream"), "{bad:?}");

    // A follow sees a request made after it started.
    let mut follow = std::process::Command::new(crate::util::HEART)
        .args(["log", "s", "--access", "--follow", "--data-dir"])
        .arg(heart.data())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = follow.stdout.take().unwrap();
    let guard = crate::util::ChildGuard(follow);
    let reader = thread::spawn(move || {
        use std::io::BufRead;
        std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find(|line| line.contains("/page.html?n=100"))
    });
    // The follow starts 10 lines back: requests until it has shown one
    // made after it connected.
    wait_until(T, "the follow to show a new request", || {
        body_of(port, "/page.html?n=100");
        reader.is_finished()
    });
    assert!(reader
        .join()
        .unwrap()
        .is_some_and(|l| whole_access_line(&l)));
    drop(guard);

    // Deregister takes the access log with the instance.
    assert_eq!(heart.stop("s").status, 200);
    let answer = heart.call("DELETE", "/instances/s", None);
    assert_eq!(answer.status, 200, "{answer:?}");
    assert!(!heart.data().join("logs/s.access.log").exists());
    assert!(!heart.data().join("logs/s.log").exists());
}

#[test]
fn a_logger_that_dies_is_started_again_and_loses_nothing_in_the_pipe() {
    let heart = apache_heart("access-logger-dies");
    let site_dir = static_site(heart.dir());
    let s = heart.run_instance(site("s", &site_dir, json!({})));
    let port = port_of(&s);
    let access = wait_for(T, "the access logger", || {
        loggers(&heart).into_iter().find(|pid| {
            fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|raw| String::from_utf8_lossy(&raw).contains("s.access.log"))
        })
    });
    kill(Pid::from_raw(access), Signal::SIGKILL).unwrap();
    // Requests while it is dead wait in Apache's pipe for the next one.
    for n in 0..10 {
        body_of(port, &format!("/page.html?n={n}"));
    }
    wait_until(T, "Apache to start another access logger", || {
        let now = loggers(&heart);
        now.len() == 2 && !now.contains(&access)
    });
    wait_until(T, "the 10 requests in the access log", || {
        numbers(&access_log(&heart, "s", "")).len() == 10
    });
}

#[test]
fn access_logs_rotate_within_the_instance_limits() {
    let heart = apache_heart("access-rotate");
    let site_dir = static_site(heart.dir());
    let mut body = site("s", &site_dir, json!({}));
    body["log_max_size"] = json!("64K");
    body["log_keep"] = json!(2);
    let s = heart.run_instance(body);
    assert_eq!(s["log_max_size"], 65536, "{s}");
    assert_eq!(s["log_keep"], 2, "{s}");
    let port = port_of(&s);
    // About 190 bytes a line: some 10 files' worth.
    let padding = "x".repeat(60);
    let total = 3500;
    for n in 0..total {
        body_of(port, &format!("/page.html?n={n}&pad={padding}"));
    }
    let logs = heart.data().join("logs");
    let newest = |text: &str| numbers(text).last().copied();
    wait_until(T, "the last request in the access log", || {
        fs::read_to_string(logs.join("s.access.log"))
            .is_ok_and(|text| newest(&text) == Some(total - 1))
    });
    assert!(!logs.join("s.access.log.3").exists());
    let mut kept = String::new();
    for name in ["s.access.log.2", "s.access.log.1", "s.access.log"] {
        let text = fs::read_to_string(logs.join(name)).unwrap();
        assert!(text.len() <= 65536, "{name}: {} bytes", text.len());
        assert!(text.ends_with('\n'), "{name}");
        if let Some(bad) = text.lines().find(|l| !whole_access_line(l)) {
            panic!("{name}: {bad:?}");
        }
        kept.push_str(&text);
    }
    // The newest requests, each once, none missing.
    let seen = numbers(&kept);
    let first = *seen.first().unwrap();
    assert_eq!(seen, (first..total).collect(), "a gap in {first}..{total}");
    assert!(total - first > 600, "only {} lines kept", total - first);
}

#[test]
fn php_errors_reach_the_instance_log() {
    let heart = apache_heart("access-php-errors");
    let version = php_version(&heart);
    heart.dir().write(
        "app/index.php",
        "<?php error_log('pm-marker: ' . 'from php'); echo 'logged';\n",
    );
    let p = heart.run_instance(php("p", &heart.dir().join("app"), &version, json!({})));
    assert_eq!(body_of(port_of(&p), "/"), "logged");
    let log = wait_for(T, "PHP's line in the instance log", || {
        let answer = heart.call("GET", "/instances/p/log", None);
        answer
            .body
            .contains("pm-marker: from php")
            .then_some(answer.body)
    });
    let line = log
        .lines()
        .find(|l| l.contains("pm-marker: from php"))
        .unwrap();
    // Stamped by the logger, then Apache's own error line.
    assert!(stamped(line), "{line}");
    assert!(line[28..].starts_with('['), "{line}");
    // And the request is in the access log.
    wait_until(T, "the request in the access log", || {
        access_log(&heart, "p", "").contains("\"GET / HTTP/1.1\" 200")
    });
}

#[test]
fn a_graceful_reload_loses_no_access_line_and_leaks_no_logger() {
    let mut heart = TestHeart::new("access-reload");
    apache_options(&mut heart).args(&["--stop-on-exit"]).spawn();
    let site_dir = static_site(heart.dir());
    let a = heart.run_instance(site("a", &site_dir, json!({})));
    let port = port_of(&a);
    wait_until(T, "the two loggers of a", || loggers(&heart).len() == 2);

    let done = Arc::new(AtomicBool::new(false));
    let client = {
        let done = Arc::clone(&done);
        thread::spawn(move || {
            let (mut ok, mut failed) = (0u32, Vec::new());
            while !(done.load(Ordering::SeqCst) && ok >= 50) && ok < 100_000 {
                match fetch(port, &format!("/page.html?n={ok}")) {
                    Some((200, _)) => ok += 1,
                    other => failed.push(other),
                }
            }
            (ok, failed)
        })
    };
    // Two reloads while requests go on, and one for a stop.
    heart.run_instance(site("b", &site_dir, json!({})));
    heart.run_instance(site("c", &site_dir, json!({})));
    assert_eq!(heart.stop("c").status, 200);
    done.store(true, Ordering::SeqCst);
    let (ok, failed) = client.join().unwrap();
    assert!(failed.is_empty(), "{failed:?}");

    wait_until(T, "every request in the access log", || {
        numbers(&access_log(&heart, "a", "")).len() == ok as usize
    });
    assert_eq!(numbers(&access_log(&heart, "a", "")), (0..ok).collect());
    // The old loggers ended with their generation: two per instance left.
    wait_until(T, "the old loggers to end", || loggers(&heart).len() == 4);
    eprintln!("{ok} requests logged across three reloads");

    // Apache stops with the heart, and its loggers with it.
    let before = loggers(&heart);
    assert!(heart.terminate().success());
    wait_until(T, "every logger to end with Apache", || {
        loggers(&heart).is_empty()
    });
    assert!(before.iter().all(|&pid| !crate::util::alive(pid)));
}
