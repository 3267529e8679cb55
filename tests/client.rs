//! The `pm-heart` client against a real heart, and the pacemaker reports
//! it sends. Each test runs its own heart (`--listen 127.0.0.1:0`, its own
//! data directory, its own slice of the instance ports 23000-23999), and a
//! guard ends the heart and every supervisor it started, even when the
//! test fails.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::util::{alive, describe, run, supervisor_pids, wait_for, wait_until, Dir, HEART};

const READY: Duration = Duration::from_secs(20);
const WAIT: Duration = Duration::from_secs(20);

/// A heart run by one test; on drop it is killed, and so is every
/// supervisor listed in its `supervisor/*.pid` files.
struct Heart {
    child: Option<Child>,
    data: PathBuf,
    address: String,
    /// The rest of the heart's stdout, line by line.
    lines: mpsc::Receiver<String>,
    dir: Dir,
}

impl Heart {
    fn start(name: &str, ports: &str, extra: &[&str]) -> Heart {
        let dir = Dir::new(name);
        let data = dir.join("data");
        let stderr = fs::File::create(dir.join("heart.err")).unwrap();
        let mut child = Command::new(HEART)
            .args(["serve", "--listen", "127.0.0.1:0", "--ports", ports])
            .arg("--data-dir")
            .arg(&data)
            // Tests run as root: the applications too, as before users.
            .arg("--allow-root-apps")
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut heart = Heart {
            child: Some(child),
            data,
            address: String::new(),
            lines,
            dir,
        };
        heart.address = heart.wait_line("listening on ");
        heart
    }

    /// Waits for a stdout line starting with `prefix`; returns the rest.
    fn wait_line(&self, prefix: &str) -> String {
        loop {
            match self.lines.recv_timeout(READY) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix(prefix) {
                        return rest.trim().to_string();
                    }
                }
                Err(_) => panic!(
                    "heart printed no {prefix:?} line; stderr:\n{}",
                    fs::read_to_string(self.dir.join("heart.err")).unwrap_or_default()
                ),
            }
        }
    }

    /// `pm-heart ARGS --data-dir DATA`.
    fn client(&self, args: &[&str]) -> Output {
        run(Command::new(HEART)
            .args(args)
            .arg("--data-dir")
            .arg(&self.data))
    }

    /// Runs a client command that must succeed; returns its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.client(args);
        assert!(out.status.success(), "{}", describe(&args.join(" "), &out));
        String::from_utf8(out.stdout).unwrap()
    }

    fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    /// SIGTERM, then the heart's exit status.
    fn terminate(&mut self) -> ExitStatus {
        kill(Pid::from_raw(self.pid()), Signal::SIGTERM).unwrap();
        let mut child = self.child.take().unwrap();
        wait_for(WAIT, "the heart to exit on SIGTERM", || {
            child.try_wait().unwrap()
        })
    }
}

impl Drop for Heart {
    fn drop(&mut self) {
        // Supervisors first, while the heart still takes their exit
        // reports (a supervisor whose heart is gone retries its report for
        // its whole report deadline).
        let supervisors = supervisor_pids(&self.data);
        for &pid in &supervisors {
            // Forwarded to the command's process group.
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        for &pid in &supervisors {
            if !gone_within(pid, Duration::from_secs(15)) {
                // The command then dies by its parent-death signal.
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        crate::cgroups::clean(&self.data);
    }
}

/// Polls, without panicking (it runs in `drop`), until `pid` is gone.
fn gone_within(pid: i32, timeout: Duration) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    let mut interval = Duration::from_millis(1);
    while alive(pid) {
        if std::time::Instant::now() >= deadline {
            return false;
        }
        thread::sleep(interval);
        interval = (interval * 2).min(Duration::from_millis(50));
    }
    true
}

/// The example application, copied to `dest`.
fn copy_hello(dest: &Path) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/hello");
    fs::create_dir_all(dest).unwrap();
    for entry in fs::read_dir(src).unwrap() {
        let entry = entry.unwrap();
        fs::copy(entry.path(), dest.join(entry.file_name())).unwrap();
    }
}

/// The body of a GET to `url`.
fn http_get(url: &str) -> String {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let mut response = agent
        .get(url)
        .call()
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    response.body_mut().read_to_string().unwrap()
}

fn url_in(text: &str) -> String {
    text.lines()
        .find(|line| line.starts_with("http://"))
        .unwrap_or_else(|| panic!("no URL in {text:?}"))
        .to_string()
}

fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn whole_lifecycle_through_the_client() {
    let heart = Heart::start("client-lifecycle", "23000-23009", &[]);
    copy_hello(&heart.dir.join("app"));
    let file = heart.dir.write(
        "register.json",
        r#"{"instance_id": "life-1", "source": "app",
            "application": {"name": "hello"}, "version": "1",
            "runtime": {"name": "shell", "version": "1",
                        "parameters": {"launch_command": "python3 -u app.py %(port)d"}}}"#,
    );

    let out = heart.ok(&["register", file.to_str().unwrap()]);
    assert!(out.starts_with("life-1: REGISTERED (port 230"), "{out}");

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
    assert!(url.starts_with("http://127.0.0.1:230"), "{url}");
    let body = http_get(&url);
    assert!(body.contains("I am instance life-1"), "{body}");

    // Refusals: one line, the heart's reason, exit 1.
    for args in [["start", "life-1"], ["deregister", "life-1"]] {
        let out = heart.client(&args);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{}",
            describe(&args.join(" "), &out)
        );
        let stderr = stderr_of(&out);
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

    let log = heart.ok(&["log", "life-1", "--tail", "50"]);
    assert!(log.contains("hello: instance life-1 listening on"), "{log}");

    let out = heart.ok(&["stop", "life-1"]);
    assert_eq!(out, "life-1: STOPPED\n");
    let out = heart.ok(&["deregister", "life-1"]);
    assert_eq!(out, "life-1: DEREGISTERED\n");
    let table = heart.ok(&["list"]);
    assert!(!table.contains("life-1"), "{table}");
}

#[test]
fn deploy_runs_the_example_application() {
    let heart = Heart::start("client-deploy", "23010-23019", &[]);
    let app = heart.dir.join("hello");
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
    let heart = Heart::start("client-fail", "23020-23029", &[]);
    heart.dir.write(
        "broken/paasmaker.json",
        r#"{"application": {"name": "broken"},
            "runtime": {"name": "shell", "version": "1",
                        "parameters": {"launch_command": "sh -c 'echo no luck; exit 3'"}}}"#,
    );
    let out = heart.client(&["deploy", heart.dir.join("broken").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", describe("deploy", &out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(": ERROR"), "{stdout}");
    assert!(
        stderr_of(&out).starts_with("pm-heart: fatal: unable to start "),
        "{}",
        stderr_of(&out)
    );
}

#[test]
fn errors_have_one_line_and_the_documented_exit_code() {
    let heart = Heart::start("client-errors", "23030-23039", &[]);

    let out = heart.client(&["show", "nope"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        describe("show nope", &out)
    );
    let stderr = stderr_of(&out);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("pm-heart: fatal: "), "{stderr}");
    assert!(stderr.contains("(HTTP 404)"), "{stderr}");

    let out = heart.client(&["list", "--token", "wrong"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        describe("wrong token", &out)
    );
    assert!(
        stderr_of(&out).contains("(HTTP 401)"),
        "{}",
        stderr_of(&out)
    );

    let out = heart.client(&["list", "--bogus"]);
    assert_eq!(
        out.status.code(),
        Some(100),
        "{}",
        describe("--bogus", &out)
    );

    let out = heart.client(&["deploy", heart.dir.join("missing").to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(100),
        "{}",
        describe("deploy missing", &out)
    );

    let empty = heart.dir.join("empty");
    fs::create_dir_all(&empty).unwrap();
    let out = run(Command::new(HEART).args(["list", "--data-dir"]).arg(&empty));
    assert_eq!(
        out.status.code(),
        Some(111),
        "{}",
        describe("no heart", &out)
    );
    let address = empty.join("address");
    assert!(
        stderr_of(&out).contains(address.to_str().unwrap()),
        "{}",
        stderr_of(&out)
    );

    // An address nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = heart.client(&["list", "--address", &format!("127.0.0.1:{port}")]);
    assert_eq!(
        out.status.code(),
        Some(111),
        "{}",
        describe("dead heart", &out)
    );
}

#[test]
fn help_names_every_subcommand() {
    let subcommands = [
        "list",
        "show",
        "register",
        "start",
        "stop",
        "deregister",
        "log",
        "runtimes",
        "deploy",
    ];
    for args in [&["list", "--help"][..], &["--help"][..]] {
        let out = run(Command::new(HEART).args(args));
        assert_eq!(out.status.code(), Some(0), "{}", describe("--help", &out));
        let text = String::from_utf8_lossy(&out.stdout);
        for sub in subcommands {
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

/// A fake controller: every report it receives, as (path, body).
struct Controller {
    server: std::sync::Arc<tiny_http::Server>,
    reports: mpsc::Receiver<(String, serde_json::Value)>,
}

impl Controller {
    fn on(addr: &str) -> Controller {
        let server = std::sync::Arc::new(tiny_http::Server::http(addr).unwrap());
        let (tx, reports) = mpsc::channel();
        let accept = std::sync::Arc::clone(&server);
        thread::spawn(move || {
            for mut request in accept.incoming_requests() {
                let mut body = String::new();
                let _ = request.as_reader().read_to_string(&mut body);
                let value = serde_json::from_str(&body).unwrap_or(serde_json::Value::Null);
                let path = request.url().to_string();
                let _ = request.respond(tiny_http::Response::empty(200));
                if tx.send((path, value)).is_err() {
                    break;
                }
            }
        });
        Controller { server, reports }
    }

    fn url(&self) -> String {
        format!("http://{}", self.server.server_addr().to_ip().unwrap())
    }

    /// Waits for a report to `path` that satisfies `pred`.
    fn wait(&self, path: &str, pred: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        loop {
            match self.reports.recv_timeout(WAIT) {
                Ok((p, body)) if p == path && pred(&body) => return body,
                Ok(_) => continue,
                Err(_) => panic!("no {path} report arrived"),
            }
        }
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.server.unblock();
    }
}

#[test]
fn the_heart_reports_to_the_pacemaker() {
    let controller = Controller::on("127.0.0.1:0");
    let mut heart = Heart::start(
        "client-pacemaker",
        "23040-23049",
        &["--pacemaker", &controller.url()],
    );
    let register = controller.wait("/node/register", |_| true);
    assert!(register["runtimes"]["shell"].is_array(), "{register}");
    assert!(
        register["node"].as_str().is_some_and(|n| !n.is_empty()),
        "{register}"
    );

    let app = heart.dir.join("hello");
    copy_hello(&app);
    heart.ok(&["deploy", app.to_str().unwrap(), "--id", "pm-1"]);
    controller.wait("/node/update", |body| {
        body["instances"]["pm-1"] == "RUNNING"
    });
    heart.ok(&["stop", "pm-1"]);
    controller.wait("/node/update", |body| {
        body["instances"]["pm-1"] == "STOPPED"
    });

    let status = heart.terminate();
    assert!(status.success(), "{status}");
    controller.wait("/node/shutdown", |_| true);
}

#[test]
fn reports_arrive_once_the_pacemaker_comes_up() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let heart = Heart::start(
        "client-pacemaker-late",
        "23050-23059",
        &["--pacemaker", &url],
    );
    // The heart serves while the controller is down.
    heart.ok(&["list"]);
    let controller = Controller::on(&format!("127.0.0.1:{port}"));
    controller.wait("/node/register", |_| true);
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
