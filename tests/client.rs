//! The `pm-heart` client against a real heart, and the pacemaker reports
//! it sends. Each test runs its own [`TestHeart`] (its own data directory
//! and block of instance ports), which ends the heart and everything it
//! started, even when the test fails.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::util::ports::{dead_port, PortBlock};
use crate::util::recorder::Recorder;
use crate::util::{alive, describe, exited_with, http, run, wait_until, TestHeart, HEART};

const WAIT: Duration = Duration::from_secs(20);

/// The example application, copied to `dest`.
fn copy_hello(dest: &Path) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/hello");
    fs::create_dir_all(dest).unwrap();
    for entry in fs::read_dir(src).unwrap() {
        let entry = entry.unwrap();
        fs::copy(entry.path(), dest.join(entry.file_name())).unwrap();
    }
}

/// The body of a GET to `url`, which must answer 200.
fn http_get(url: &str) -> String {
    let answer = http::get_url(url);
    assert_eq!(answer.status, 200, "GET {url}: {answer:?}");
    answer.body
}

fn url_in(text: &str) -> String {
    text.lines()
        .find(|line| line.starts_with("http://"))
        .unwrap_or_else(|| panic!("no URL in {text:?}"))
        .to_string()
}

#[test]
fn whole_lifecycle_through_the_client() {
    let heart = TestHeart::serve("client-lifecycle", &[]);
    copy_hello(&heart.dir().join("app"));
    let file = heart.dir().write(
        "register.json",
        r#"{"instance_id": "life-1", "source": "app",
            "application": {"name": "hello"}, "version": "1",
            "runtime": {"name": "shell", "version": "1",
                        "parameters": {"launch_command": "python3 -u app.py %(port)d"}}}"#,
    );

    let out = heart.ok(&["register", file.to_str().unwrap()]);
    let low = heart.block().low();
    assert!(
        out.starts_with(&format!("life-1: REGISTERED (port {low})")),
        "{out}"
    );

    let table = heart.ok(&["list"]);
    let mut lines = table.lines();
    let header = lines.next().unwrap();
    for column in ["ID", "STATE", "PORT", "RUNTIME", "APPLICATION", "MESSAGE"] {
        assert!(header.contains(column), "{table}");
    }
    let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(row[..2], ["life-1", "REGISTERED"], "{table}");

    let json: serde_json::Value = serde_json::from_str(&heart.ok(&["list", "--json"])).unwrap();
    assert_eq!(json["instances"][0]["instance_id"], "life-1");
    assert_eq!(json["instances"][0]["state"], "REGISTERED");

    let out = heart.ok(&["start", "life-1"]);
    assert!(out.starts_with("life-1: RUNNING\n"), "{out}");
    let url = url_in(&out);
    assert_eq!(url, format!("http://127.0.0.1:{low}/"));
    let body = http_get(&url);
    assert!(body.contains("I am instance life-1"), "{body}");

    // A start of a running instance succeeds, saying so.
    assert_eq!(heart.ok(&["start", "life-1"]), "life-1: already RUNNING\n");

    // Refusals in this state: one line, the heart's reason, exit 3.
    {
        let args = ["deregister", "life-1"];
        let out = heart.client(&args);
        let stderr = exited_with(&out, 3, &args.join(" "));
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.contains("RUNNING") && stderr.ends_with("(HTTP 409)\n"),
            "{stderr}"
        );
        assert!(out.stdout.is_empty(), "{}", describe(&args.join(" "), &out));
    }

    let show = heart.ok(&["show", "life-1"]);
    assert!(show.contains("state: RUNNING\n"), "{show}");
    assert!(show.contains(&format!("url: {url}\n")), "{show}");

    // The app's output reaches the log through the supervisor's copier,
    // a moment after the app wrote it.
    wait_until(Duration::from_secs(20), "the app's line in the log", || {
        let log = heart.ok(&["log", "life-1", "--tail", "50"]);
        log.contains("hello: instance life-1 listening on")
    });

    let out = heart.ok(&["stop", "life-1"]);
    assert_eq!(out, "life-1: STOPPED\n");
    let out = heart.ok(&["deregister", "life-1"]);
    assert_eq!(out, "life-1: DEREGISTERED\n");
    let table = heart.ok(&["list"]);
    assert!(!table.contains("life-1"), "{table}");
}

#[test]
fn deploy_runs_the_example_application() {
    let heart = TestHeart::serve("client-deploy", &[]);
    let app = heart.dir().join("hello");
    copy_hello(&app);
    let out = heart.ok(&["deploy", app.to_str().unwrap(), "--id", "hello-1"]);
    assert!(out.contains("hello-1: RUNNING\n"), "{out}");
    let body = http_get(&url_in(&out));
    assert_eq!(body, "Hello from Paasmaker! I am instance hello-1.\n");

    let runtimes = heart.ok(&["runtimes"]);
    assert!(
        runtimes.lines().any(|l| l.starts_with("shell ")),
        "{runtimes}"
    );
    let json: serde_json::Value = serde_json::from_str(&heart.ok(&["runtimes", "--json"])).unwrap();
    assert!(json["shell"].as_array().is_some(), "{json}");
    heart.ok(&["stop", "hello-1"]);
}

#[test]
fn a_failed_start_prints_the_reason_and_exits_1() {
    let heart = TestHeart::serve("client-fail", &[]);
    heart.dir().write(
        "broken/paasmaker.json",
        r#"{"application": {"name": "broken"},
            "runtime": {"name": "shell", "version": "1",
                        "parameters": {"launch_command": "sh -c 'echo no luck; exit 3'"}}}"#,
    );
    let out = heart.client(&["deploy", heart.dir().join("broken").to_str().unwrap()]);
    let stderr = exited_with(&out, 1, "deploy");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(": ERROR"), "{stdout}");
    assert!(
        stderr.starts_with("pm-heart: fatal: unable to start "),
        "{stderr}"
    );
}

#[test]
fn errors_have_one_line_and_the_documented_exit_code() {
    let heart = TestHeart::serve("client-errors", &[]);

    let out = heart.client(&["show", "nope"]);
    let stderr = exited_with(&out, 2, "show nope");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("pm-heart: fatal: "), "{stderr}");
    assert!(stderr.contains("(HTTP 404)"), "{stderr}");

    let out = heart.client(&["list", "--token", "wrong"]);
    let stderr = exited_with(&out, 1, "wrong token");
    assert!(stderr.contains("(HTTP 401)"), "{stderr}");

    let out = heart.client(&["list", "--bogus"]);
    exited_with(&out, 100, "--bogus");

    let out = heart.client(&["deploy", heart.dir().join("missing").to_str().unwrap()]);
    exited_with(&out, 100, "deploy missing");

    let empty = heart.dir().join("empty");
    fs::create_dir_all(&empty).unwrap();
    let out = run(Command::new(HEART).args(["list", "--data-dir"]).arg(&empty));
    let stderr = exited_with(&out, 111, "no heart");
    let address = empty.join("address");
    assert!(stderr.contains(address.to_str().unwrap()), "{stderr}");

    // An address nobody listens on.
    let port = dead_port();
    let out = heart.client(&["list", "--address", &format!("127.0.0.1:{port}")]);
    exited_with(&out, 111, "dead heart");
}

#[test]
fn help_names_every_subcommand() {
    // The contract's list, written out here on purpose (not taken from
    // the code under test).
    let subcommands = "list show register start stop deregister log runtimes deploy".split(' ');
    for args in [&["list", "--help"][..], &["--help"][..]] {
        let out = run(Command::new(HEART).args(args));
        exited_with(&out, 0, "--help");
        let text = String::from_utf8_lossy(&out.stdout);
        for sub in subcommands.clone() {
            // The client's usage has a line per subcommand; the top-level
            // one lists their names.
            let named = if args[0] == "--help" {
                text.contains(sub)
            } else {
                text.contains(&format!("pm-heart {sub}"))
            };
            assert!(named, "{args:?}: {sub}: {text}");
        }
    }
}

#[test]
fn the_heart_reports_to_the_pacemaker() {
    let controller = Recorder::start(200);
    let mut heart = TestHeart::serve("client-pacemaker", &["--pacemaker", &controller.url()]);
    let register = controller.wait(WAIT, "/node/register", |_| true);
    assert!(register["runtimes"]["shell"].is_array(), "{register}");
    assert!(
        register["node"].as_str().is_some_and(|n| !n.is_empty()),
        "{register}"
    );

    let app = heart.dir().join("hello");
    copy_hello(&app);
    heart.ok(&["deploy", app.to_str().unwrap(), "--id", "pm-1"]);
    controller.wait(WAIT, "/node/update", |body| {
        body["instances"]["pm-1"] == "RUNNING"
    });
    heart.ok(&["stop", "pm-1"]);
    controller.wait(WAIT, "/node/update", |body| {
        body["instances"]["pm-1"] == "STOPPED"
    });

    let status = heart.terminate();
    assert!(status.success(), "{status}");
    controller.wait(WAIT, "/node/shutdown", |_| true);
}

#[test]
fn reports_arrive_once_the_pacemaker_comes_up() {
    // A port of a private block: nothing else takes it meanwhile.
    let block = PortBlock::new();
    let port = block.low();
    let url = format!("http://127.0.0.1:{port}");
    let heart = TestHeart::serve("client-pacemaker-late", &["--pacemaker", &url]);
    // The heart serves while the controller is down.
    heart.ok(&["list"]);
    let controller = Recorder::on(&format!("127.0.0.1:{port}"), 200);
    controller.wait(WAIT, "/node/register", |_| true);
    wait_until(WAIT, "heart still alive", || alive(heart.pid()));
}

/// The man page source with font escapes and `\-` resolved.
fn man_text() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("man/pm-heart.8");
    fs::read_to_string(path)
        .unwrap()
        .replace("\\fB", "")
        .replace("\\fI", "")
        .replace("\\fP", "")
        .replace("\\-", "-")
}

#[test]
fn the_man_page_synopsis_is_the_usage() {
    let man = man_text();
    let synopsis: Vec<&str> = man
        .split(".SH SYNOPSIS\n.nf\n")
        .nth(1)
        .and_then(|rest| rest.split("\n.fi").next())
        .unwrap()
        .lines()
        .map(str::trim)
        .collect();
    for args in [&["list", "--help"][..], &["serve", "--help"][..]] {
        let out = run(Command::new(HEART).args(args));
        assert!(out.status.success(), "{}", describe("--help", &out));
        let text = String::from_utf8(out.stdout).unwrap();
        // The usage proper: up to the first blank line.
        for line in text.lines().take_while(|l| !l.trim().is_empty()) {
            let line = line.trim().trim_start_matches("usage:").trim();
            assert!(
                synopsis.contains(&line),
                "{args:?}: {line:?} not in the SYNOPSIS {synopsis:#?}"
            );
        }
    }
}
