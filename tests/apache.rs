//! The `php` and `static` runtimes against the real Apache, through the
//! heart. Each test runs its own heart on `127.0.0.1:0` with its own data
//! directory (so its own Apache) and its own block of 10 instance ports
//! from the private range 25000-25999. The [`Cleanup`] guard ends, by pid,
//! every supervisor the heart started, Apache's supervisor and Apache
//! itself (its process group: the parent and its children).

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};

use crate::util::{
    alive, is_supervisor, supervisor_pids, wait_for, wait_until, Dir, HEART, SUPERVISOR,
};

const T: Duration = Duration::from_secs(30);

/// Ends what a heart on `data` left behind: instance supervisors, Apache's
/// supervisor, Apache's process group. Declare it before the [`Heart`] so
/// that it runs after the heart is gone.
struct Cleanup {
    data: PathBuf,
}

fn read_pid(path: &Path) -> Option<i32> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn cmdline_has(pid: i32, needle: &str) -> bool {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|raw| String::from_utf8_lossy(&raw).contains(needle))
        .unwrap_or(false)
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let apache = self.data.join("runtimes/apache");
        // Apache first: once its supervisor is gone, its parent dies of the
        // parent-death signal and its children would be orphaned.
        if let Some(pid) = read_pid(&apache.join("run/httpd.pid")) {
            if cmdline_has(pid, &apache.join("httpd.conf").to_string_lossy()) {
                let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
        let mut supervisors = supervisor_pids(&self.data);
        supervisors
            .extend(read_pid(&apache.join("supervisor.pid")).filter(|&pid| is_supervisor(pid)));
        for pid in supervisors {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        crate::cgroups::clean(&self.data);
    }
}

/// A running `pm-heart serve`, killed on drop.
struct Heart {
    child: Child,
    addr: String,
    token: String,
}

impl Heart {
    fn start(data: &Path, ports: &str) -> Heart {
        Heart::start_with(data, ports, &[])
    }

    fn start_stop_on_exit(data: &Path, ports: &str) -> Heart {
        Heart::spawn(data, ports, &[], &["--stop-on-exit"])
    }

    fn start_with(data: &Path, ports: &str, env: &[(&str, &str)]) -> Heart {
        Heart::spawn(data, ports, env, &[])
    }

    fn spawn(data: &Path, ports: &str, env: &[(&str, &str)], extra: &[&str]) -> Heart {
        let mut child = Command::new(HEART)
            .envs(env.iter().copied())
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--check-interval",
                "0.5",
            ])
            .arg("--data-dir")
            .arg(data)
            .args(["--ports", ports])
            .arg("--supervisor")
            .arg(SUPERVISOR)
            // Tests run as root: the applications too, as before users.
            .arg("--allow-root-apps")
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn pm-heart");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("stdout");
        BufReader::new(stdout).read_line(&mut line).unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| {
                let _ = child.kill();
                panic!("no readiness line from pm-heart: {line:?}")
            })
            .to_string();
        let token = fs::read_to_string(data.join("token"))
            .unwrap()
            .trim()
            .to_string();
        Heart { child, addr, token }
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let mut stream = TcpStream::connect(&self.addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(90)))
            .unwrap();
        let head = format!(
            "{method} {path} HTTP/1.0\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            self.addr,
            self.token,
            body.len()
        );
        stream.write_all(head.as_bytes()).unwrap();
        stream.write_all(body.as_bytes()).unwrap();
        let mut text = String::new();
        stream.read_to_string(&mut text).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
        let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
        (status, serde_json::from_str(body).unwrap_or(Value::Null))
    }

    fn register(&self, body: Value) -> (u16, Value) {
        self.call("POST", "/instances", Some(body))
    }

    fn start_instance(&self, id: &str) -> (u16, Value) {
        self.call("POST", &format!("/instances/{id}/start"), None)
    }

    fn stop_instance(&self, id: &str) -> (u16, Value) {
        self.call("POST", &format!("/instances/{id}/stop"), None)
    }

    fn show(&self, id: &str) -> Value {
        let (status, body) = self.call("GET", &format!("/instances/{id}"), None);
        assert_eq!(status, 200, "{body}");
        body
    }

    fn wait_state(&self, id: &str, state: &str) -> Value {
        wait_for(T, &format!("{id} to be {state}"), || {
            let view = self.show(id);
            (view["state"] == state).then_some(view)
        })
    }

    fn php_version(&self) -> String {
        let (status, body) = self.call("GET", "/runtimes", None);
        assert_eq!(status, 200, "{body}");
        body["php"][0]
            .as_str()
            .unwrap_or_else(|| panic!("no php on this node: {body}"))
            .to_string()
    }

    fn crash(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Heart {
    fn drop(&mut self) {
        self.crash();
    }
}

/// Registers and starts an instance; panics unless it ends RUNNING.
fn run(heart: &Heart, body: Value) -> Value {
    let id = body["instance_id"].as_str().unwrap().to_string();
    let (status, view) = heart.register(body);
    assert_eq!(status, 201, "register {id}: {view}");
    let (status, view) = heart.start_instance(&id);
    assert_eq!(status, 200, "start {id}: {view}");
    assert_eq!(view["state"], "RUNNING", "{view}");
    view
}

fn php(id: &str, source: &Path, version: &str, environment: Value) -> Value {
    json!({
        "instance_id": id, "source": source, "application": {"name": id},
        "runtime": {"name": "php", "version": version},
        "environment": environment,
    })
}

fn site(id: &str, source: &Path, parameters: Value) -> Value {
    json!({
        "instance_id": id, "source": source, "application": {"name": id},
        "runtime": {"name": "static", "version": "1", "parameters": parameters},
    })
}

fn port_of(view: &Value) -> u16 {
    view["port"].as_u64().unwrap() as u16
}

/// `GET path` on 127.0.0.1:port: `(status, body)`, or `None` when nothing
/// answers.
fn fetch(port: u16, path: &str) -> Option<(u16, String)> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

fn body_of(port: u16, path: &str) -> String {
    match fetch(port, path) {
        Some((200, body)) => body,
        other => panic!("GET {path} on port {port}: {other:?}"),
    }
}

fn php_app(dir: &Dir) -> PathBuf {
    dir.write("app/index.php", "<?php echo 'php says ' . 'hello';\n");
    dir.write(
        "app/environ.php",
        "<?php foreach (['PM_PORT', 'PM_INSTANCE_ID', 'GREETING', 'TRICKY'] as $n) {\n\
         echo $n, '=[', getenv($n), \"]\\n\"; }\n",
    );
    dir.join("app")
}

fn static_site(dir: &Dir) -> PathBuf {
    dir.write("site/index.html", "<h1>static index</h1>\n");
    dir.write("site/page.html", "<p>a static page</p>\n");
    dir.write("site/code.php", "<?php echo 'EXEC' . 'UTED';\n");
    dir.join("site")
}

fn apache_dir(data: &Path) -> PathBuf {
    data.join("runtimes/apache")
}

#[test]
fn php_and_static_side_by_side() {
    let dir = Dir::new("apache-side-by-side");
    let data = dir.join("data");
    let _cleanup = Cleanup { data: data.clone() };
    let heart = Heart::start(&data, "25000-25009");
    let version = heart.php_version();
    let app = php_app(&dir);
    let site_dir = static_site(&dir);

    let p = run(
        &heart,
        php("p", &app, &version, json!({"GREETING": "hi there"})),
    );
    let s = run(&heart, site("s", &site_dir, json!({})));
    let (pp, sp) = (port_of(&p), port_of(&s));
    assert_ne!(pp, sp);

    assert_eq!(body_of(pp, "/"), "php says hello");
    let environ = body_of(pp, "/environ.php");
    assert!(environ.contains(&format!("PM_PORT=[{pp}]")), "{environ}");
    assert!(environ.contains("PM_INSTANCE_ID=[p]"), "{environ}");
    assert!(environ.contains("GREETING=[hi there]"), "{environ}");
    assert_eq!(body_of(sp, "/page.html"), "<p>a static page</p>\n");
    assert_eq!(body_of(sp, "/"), "<h1>static index</h1>\n");
    // No PHP runs in a static site.
    assert!(!body_of(sp, "/code.php").starts_with("EXECUTED"));
    // PHP's own error log is the instance log.
    assert!(
        fs::read_to_string(apache_dir(&data).join("instances/p.conf"))
            .unwrap()
            .contains("/logs/p.log")
    );

    let (status, view) = heart.stop_instance("p");
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["state"], "STOPPED");
    assert!(fetch(pp, "/").is_none(), "a stopped instance still answers");
    assert_eq!(body_of(sp, "/page.html"), "<p>a static page</p>\n");

    // The last instance takes Apache with it.
    let httpd = read_pid(&apache_dir(&data).join("run/httpd.pid")).unwrap();
    let (status, view) = heart.stop_instance("s");
    assert_eq!(status, 200, "{view}");
    wait_until(T, "Apache to stop with its last instance", || !alive(httpd));
    assert!(fetch(sp, "/").is_none());

    // And the next start brings it back.
    let (status, view) = heart.start_instance("p");
    assert_eq!(status, 200, "{view}");
    assert_eq!(body_of(pp, "/"), "php says hello");
}

#[test]
fn environment_values_cannot_change_the_configuration() {
    let dir = Dir::new("apache-injection");
    let data = dir.join("data");
    let _cleanup = Cleanup { data: data.clone() };
    let heart = Heart::start(&data, "25010-25019");
    let version = heart.php_version();
    let app = php_app(&dir);
    let good = run(&heart, php("good", &app, &version, json!({})));

    // A newline would end the directive: refused at start, nothing applied.
    let evil = "x\" \\\nListen 127.0.0.1:25018\n<VirtualHost 127.0.0.1:25018>\n\
                DocumentRoot /\n</VirtualHost>\n\\";
    let (status, view) = heart.register(php("evil", &app, &version, json!({"EVIL": evil})));
    assert_eq!(status, 201, "{view}");
    let (status, view) = heart.start_instance("evil");
    assert_ne!(status, 200, "{view}");
    assert_eq!(heart.show("evil")["state"], "ERROR", "{view}");
    let message = heart.show("evil")["message"].as_str().unwrap().to_string();
    assert!(
        message.contains("EVIL") && message.contains("newline"),
        "{message}"
    );
    assert!(
        fetch(25018, "/").is_none(),
        "the injected Listen took effect"
    );
    assert!(!apache_dir(&data).join("instances/evil.conf").exists());
    assert!(!fs::read_to_string(apache_dir(&data).join("httpd.conf"))
        .unwrap()
        .contains("25018"));
    assert_eq!(body_of(port_of(&good), "/"), "php says hello");

    // Quotes, backslashes and directives without a newline are plain text.
    let tricky = "a\" \\\" Listen 127.0.0.1:25019 </VirtualHost> ${PATH} \\";
    let t = run(
        &heart,
        php("tricky", &app, &version, json!({"TRICKY": tricky})),
    );
    let environ = body_of(port_of(&t), "/environ.php");
    assert!(environ.contains(&format!("TRICKY=[{tricky}]")), "{environ}");
    // The file holds the environment (SetEnv): the heart's only.
    let mode = |path: &Path| {
        use std::os::unix::fs::PermissionsExt;
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    };
    let instances = apache_dir(&data).join("instances");
    assert_eq!(mode(&instances.join("tricky.conf")), 0o600);
    assert_eq!(mode(&instances), 0o700);
    assert!(
        fetch(25019, "/").is_none(),
        "the injected Listen took effect"
    );
    assert_eq!(body_of(port_of(&good), "/"), "php says hello");
}

#[test]
fn document_root_stays_inside_the_instance() {
    let dir = Dir::new("apache-docroot");
    let data = dir.join("data");
    let _cleanup = Cleanup { data: data.clone() };
    let heart = Heart::start(&data, "25020-25029");
    let site_dir = static_site(&dir);
    dir.write("site/public/index.html", "public part\n");
    std::os::unix::fs::symlink("/etc", site_dir.join("out")).unwrap();
    std::os::unix::fs::symlink("public", site_dir.join("in")).unwrap();

    for (id, root) in [("up", "../.."), ("up2", "public/../../x"), ("abs", "/etc")] {
        let (status, body) = heart.register(site(id, &site_dir, json!({"document_root": root})));
        assert_eq!(status, 422, "{root}: {body}");
    }
    let mut standalone = site("alone", &site_dir, json!({}));
    standalone["standalone"] = json!(true);
    let (status, body) = heart.register(standalone);
    assert_eq!(status, 422, "{body}");
    // A symlink out is found at start, once the files are in place.
    let refused = match heart.register(site("link", &site_dir, json!({"document_root": "out"}))) {
        (422, _) => true,
        (201, _) => {
            let (status, view) = heart.start_instance("link");
            assert_ne!(status, 200, "{view}");
            let view = heart.show("link");
            assert_eq!(view["state"], "ERROR", "{view}");
            let message = view["message"].as_str().unwrap();
            assert!(
                message.contains("leaves the instance directory"),
                "{message}"
            );
            true
        }
        (status, body) => panic!("{status}: {body}"),
    };
    assert!(refused);
    assert!(!apache_dir(&data).join("instances/link.conf").exists());

    let ok = run(
        &heart,
        site("ok", &site_dir, json!({"document_root": "in"})),
    );
    assert_eq!(body_of(port_of(&ok), "/"), "public part\n");
}

#[test]
fn a_rejected_configuration_harms_only_its_instance() {
    let dir = Dir::new("apache-rejected");
    let data = dir.join("data");
    let _cleanup = Cleanup { data: data.clone() };
    let heart = Heart::start(&data, "25030-25039");
    let site_dir = static_site(&dir);
    let a = run(&heart, site("a", &site_dir, json!({})));
    let b = run(&heart, site("b", &site_dir, json!({})));

    // Break a's file on disk; the next reload finds it.
    let file = apache_dir(&data).join("instances/a.conf");
    let mut text = fs::read_to_string(&file).unwrap();
    text.push_str("NoSuchDirective here\n");
    fs::write(&file, text).unwrap();

    let c = run(&heart, site("c", &site_dir, json!({})));
    assert_eq!(body_of(port_of(&b), "/page.html"), "<p>a static page</p>\n");
    assert_eq!(body_of(port_of(&c), "/page.html"), "<p>a static page</p>\n");
    assert!(fetch(port_of(&a), "/").is_none());

    let view = heart.wait_state("a", "ERROR");
    let message = view["message"].as_str().unwrap();
    assert!(
        message.contains("NoSuchDirective") && message.contains("a.conf"),
        "{message}"
    );
    assert_eq!(heart.show("b")["state"], "RUNNING");
    assert_eq!(heart.show("c")["state"], "RUNNING");

    // What `-t` cannot see (an error log Apache could not open on the
    // reload, and would die of) is refused before the reload.
    let httpd = read_pid(&apache_dir(&data).join("run/httpd.pid")).unwrap();
    fs::create_dir_all(data.join("logs/d.log")).unwrap();
    let (status, view) = heart.register(site("d", &site_dir, json!({})));
    assert_eq!(status, 201, "{view}");
    let (status, view) = heart.start_instance("d");
    assert_ne!(status, 200, "{view}");
    let view = heart.show("d");
    assert_eq!(view["state"], "ERROR", "{view}");
    assert!(
        view["message"].as_str().unwrap().contains("d.log"),
        "{view}"
    );
    assert_eq!(
        read_pid(&apache_dir(&data).join("run/httpd.pid")),
        Some(httpd)
    );
    assert_eq!(body_of(port_of(&b), "/page.html"), "<p>a static page</p>\n");

    // Fixed (a start writes it anew), it serves again.
    let (status, view) = heart.start_instance("a");
    assert_eq!(status, 200, "{view}");
    assert_eq!(body_of(port_of(&a), "/page.html"), "<p>a static page</p>\n");
}

#[test]
fn graceful_reloads_lose_no_request() {
    let dir = Dir::new("apache-graceful");
    let data = dir.join("data");
    let _cleanup = Cleanup { data: data.clone() };
    let heart = Heart::start(&data, "25040-25049");
    let version = heart.php_version();
    let app = php_app(&dir);
    let site_dir = static_site(&dir);
    let first = run(&heart, php("first", &app, &version, json!({})));
    run(&heart, site("second", &site_dir, json!({})));

    let port = port_of(&first);
    let done = Arc::new(AtomicBool::new(false));
    let client = {
        let done = Arc::clone(&done);
        thread::spawn(move || {
            let (mut ok, mut failed) = (0u32, Vec::new());
            for _ in 0..20_000 {
                if done.load(Ordering::SeqCst) && ok >= 20 {
                    break;
                }
                match fetch(port, "/") {
                    Some((200, body)) if body == "php says hello" => ok += 1,
                    other => failed.push(other),
                }
            }
            (ok, failed)
        })
    };
    run(&heart, site("third", &site_dir, json!({})));
    let (status, view) = heart.stop_instance("second");
    assert_eq!(status, 200, "{view}");
    run(&heart, php("fourth", &app, &version, json!({})));
    done.store(true, Ordering::SeqCst);
    let (ok, failed) = client.join().unwrap();
    assert!(
        failed.is_empty(),
        "{} of {} failed: {:?}",
        failed.len(),
        ok as usize + failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(ok >= 20, "only {ok} requests");
    eprintln!("{ok} requests answered across three reloads");
}

#[test]
fn apache_outlives_the_heart_and_comes_back_when_killed() {
    let dir = Dir::new("apache-crash");
    let data = dir.join("data");
    let _cleanup = Cleanup { data: data.clone() };
    let mut heart = Heart::start(&data, "25050-25059");
    let version = heart.php_version();
    let app = php_app(&dir);
    let site_dir = static_site(&dir);
    let mut body = php("p", &app, &version, json!({}));
    body["restart"] = json!("on-failure");
    let p = run(&heart, body);
    let s = run(&heart, site("s", &site_dir, json!({})));
    let (pp, sp) = (port_of(&p), port_of(&s));

    heart.crash();
    assert_eq!(body_of(pp, "/"), "php says hello");
    let heart = Heart::start(&data, "25050-25059");
    assert_eq!(heart.show("p")["state"], "RUNNING");
    assert_eq!(heart.show("s")["state"], "RUNNING");
    assert_eq!(body_of(pp, "/"), "php says hello");

    let httpd = read_pid(&apache_dir(&data).join("run/httpd.pid")).unwrap();
    kill(Pid::from_raw(httpd), Signal::SIGKILL).unwrap();

    // `s` (restart never) ends in ERROR; `p` (on-failure) comes back on a
    // new Apache.
    let view = heart.wait_state("s", "ERROR");
    let message = view["message"].as_str().unwrap();
    assert!(message.contains("Apache is not running"), "{message}");
    wait_until(T, "p to answer on a new Apache", || {
        heart.show("p")["state"] == "RUNNING"
            && read_pid(&apache_dir(&data).join("run/httpd.pid")).is_some_and(|pid| pid != httpd)
            && fetch(pp, "/").is_some_and(|(status, _)| status == 200)
    });
    assert_eq!(body_of(pp, "/"), "php says hello");
    assert!(fetch(sp, "/").is_none(), "a failed instance is served");
}

#[test]
fn a_node_without_apache_says_so() {
    let dir = Dir::new("apache-missing");
    let data = dir.join("data");
    let _cleanup = Cleanup { data: data.clone() };
    let missing = dir.join("no-such-apache2");
    let heart = Heart::start_with(
        &data,
        "25060-25069",
        &[("PM_APACHE_BIN", missing.to_str().unwrap())],
    );
    let (status, body) = heart.call("GET", "/runtimes", None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["php"], json!([]), "{body}");
    assert_eq!(body["static"], json!([]), "{body}");
    let site_dir = static_site(&dir);
    let (status, body) = heart.register(site("s", &site_dir, json!({})));
    assert_eq!(status, 422, "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(
        error.contains("PM_APACHE_BIN") && error.contains("no-such-apache2"),
        "{error}"
    );
}

#[test]
fn stop_on_exit_takes_apache_down_with_the_heart() {
    let dir = Dir::new("apache-stop-on-exit");
    let data = dir.join("data");
    let _cleanup = Cleanup { data: data.clone() };
    let mut heart = Heart::start_with(&data, "25070-25079", &[]);
    let site_dir = static_site(&dir);
    let s = run(&heart, site("s", &site_dir, json!({})));
    let httpd = read_pid(&apache_dir(&data).join("run/httpd.pid")).unwrap();

    // Without --stop-on-exit, SIGTERM leaves Apache serving.
    kill(Pid::from_raw(heart.child.id() as i32), Signal::SIGTERM).unwrap();
    assert!(heart.child.wait().unwrap().success());
    assert_eq!(body_of(port_of(&s), "/page.html"), "<p>a static page</p>\n");
    assert!(alive(httpd));

    drop(heart);
    let mut heart = Heart::start_stop_on_exit(&data, "25070-25079");
    assert_eq!(heart.show("s")["state"], "RUNNING");
    kill(Pid::from_raw(heart.child.id() as i32), Signal::SIGTERM).unwrap();
    assert!(heart.child.wait().unwrap().success());
    wait_until(T, "Apache to stop with the heart", || !alive(httpd));
    assert!(fetch(port_of(&s), "/").is_none());
}

#[test]
fn concurrent_starts_do_not_race_on_reloads() {
    let dir = Dir::new("apache-concurrent");
    let data = dir.join("data");
    let _cleanup = Cleanup { data: data.clone() };
    let heart = Arc::new(Heart::start(&data, "25080-25089"));
    let site_dir = static_site(&dir);
    let ids: Vec<String> = (0..6).map(|n| format!("c{n}")).collect();
    for id in &ids {
        let (status, view) = heart.register(site(id, &site_dir, json!({})));
        assert_eq!(status, 201, "{view}");
    }
    // All at once, Apache not running yet: one launches it, the others
    // reload it, one at a time.
    let threads: Vec<_> = ids
        .iter()
        .map(|id| {
            let heart = Arc::clone(&heart);
            let id = id.clone();
            thread::spawn(move || heart.start_instance(&id))
        })
        .collect();
    for thread in threads {
        let (status, view) = thread.join().unwrap();
        assert_eq!(status, 200, "{view}");
    }
    for id in &ids {
        let view = heart.show(id);
        assert_eq!(view["state"], "RUNNING", "{view}");
        assert_eq!(
            body_of(port_of(&view), "/page.html"),
            "<p>a static page</p>\n"
        );
    }
    let instances = fs::read_dir(apache_dir(&data).join("instances"))
        .unwrap()
        .count();
    assert_eq!(instances, ids.len());
}

#[test]
fn a_placeholder_port_keeps_apache_running() {
    let dir = Dir::new("apache-keep");
    let data = dir.join("data");
    let _cleanup = Cleanup { data: data.clone() };
    let heart = Heart::start_with(&data, "25090-25098", &[("PM_APACHE_KEEP_PORT", "25099")]);
    let site_dir = static_site(&dir);
    let s = run(&heart, site("s", &site_dir, json!({})));
    let httpd = read_pid(&apache_dir(&data).join("run/httpd.pid")).unwrap();
    let (status, view) = heart.stop_instance("s");
    assert_eq!(status, 200, "{view}");
    assert!(fetch(port_of(&s), "/").is_none());
    assert!(alive(httpd), "Apache stopped despite PM_APACHE_KEEP_PORT");
    // The placeholder serves nothing.
    assert_eq!(fetch(25099, "/").map(|(status, _)| status), Some(403));
    let (status, view) = heart.start_instance("s");
    assert_eq!(status, 200, "{view}");
    assert_eq!(body_of(port_of(&s), "/page.html"), "<p>a static page</p>\n");
    assert_eq!(
        read_pid(&apache_dir(&data).join("run/httpd.pid")),
        Some(httpd)
    );
}
