//! The `php` and `static` runtimes against the real Apache, through the
//! heart. Each test runs its own [`TestHeart`] (so its own Apache, under
//! its own data directory) with its own block of instance ports; the
//! fixture ends every process of its scratch directory on drop: instance
//! supervisors, Apache's supervisor, Apache and its children.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};

use crate::util::heart::instance;
use crate::util::http;
use crate::util::ports::BLOCK;
use crate::util::{alive, wait_until, Dir, TestHeart, SUPERVISOR};

pub(crate) const T: Duration = Duration::from_secs(30);

/// The options of a heart for Apache instances: a check every 0.5 s, the
/// supervisor given by path, and all ports of the block but the last two
/// (for the test).
pub(crate) fn apache_options(heart: &mut TestHeart) -> &mut TestHeart {
    heart
        .args(&["--check-interval", "0.5", "--supervisor", SUPERVISOR])
        .ports(BLOCK - 2)
}

/// A running heart for Apache instances, its scratch directory named
/// after `name`.
pub(crate) fn apache_heart(name: &str) -> TestHeart {
    let mut heart = TestHeart::new(name);
    apache_options(&mut heart).spawn();
    heart
}

fn read_pid(path: &Path) -> Option<i32> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

pub(crate) fn php_version(heart: &TestHeart) -> String {
    let answer = heart.call("GET", "/runtimes", None);
    assert_eq!(answer.status, 200, "{answer:?}");
    answer.json()["php"][0]
        .as_str()
        .unwrap_or_else(|| panic!("no php on this node: {answer:?}"))
        .to_string()
}

pub(crate) fn php(id: &str, source: &Path, version: &str, environment: Value) -> Value {
    let mut body = instance(id, source, json!({"name": "php", "version": version}));
    body["environment"] = environment;
    body
}

pub(crate) fn site(id: &str, source: &Path, parameters: Value) -> Value {
    instance(
        id,
        source,
        json!({"name": "static", "version": "1", "parameters": parameters}),
    )
}

pub(crate) fn port_of(view: &Value) -> u16 {
    view["port"].as_u64().unwrap() as u16
}

/// `GET path` on 127.0.0.1:port: `(status, body)`, or `None` when nothing
/// answers.
pub(crate) fn fetch(port: u16, path: &str) -> Option<(u16, String)> {
    http::get(port, path).map(|answer| (answer.status, answer.body))
}

pub(crate) fn body_of(port: u16, path: &str) -> String {
    match fetch(port, path) {
        Some((200, body)) => body,
        other => panic!("GET {path} on port {port}: {other:?}"),
    }
}

pub(crate) fn php_app(dir: &Dir) -> PathBuf {
    dir.write("app/index.php", "<?php echo 'php says ' . 'hello';\n");
    dir.write(
        "app/environ.php",
        "<?php foreach (['PM_PORT', 'PM_INSTANCE_ID', 'GREETING', 'TRICKY'] as $n) {\n\
         echo $n, '=[', getenv($n), \"]\\n\"; }\n",
    );
    dir.join("app")
}

pub(crate) fn static_site(dir: &Dir) -> PathBuf {
    dir.write("site/index.html", "<h1>static index</h1>\n");
    dir.write("site/page.html", "<p>a static page</p>\n");
    dir.write("site/code.php", "<?php echo 'EXEC' . 'UTED';\n");
    dir.join("site")
}

/// The PHP version of the node, a PHP application and a static site in
/// the heart's scratch directory.
fn php_and_static(heart: &TestHeart) -> (String, PathBuf, PathBuf) {
    (
        php_version(heart),
        php_app(heart.dir()),
        static_site(heart.dir()),
    )
}

/// The managed Apache's server root in the heart's data directory.
pub(crate) fn apache_dir(heart: &TestHeart) -> PathBuf {
    heart.data().join("runtimes/apache")
}

#[test]
fn php_and_static_side_by_side() {
    let heart = apache_heart("apache-side-by-side");
    let (version, app, site_dir) = php_and_static(&heart);

    let p = heart.run_instance(php("p", &app, &version, json!({"GREETING": "hi there"})));
    let s = heart.run_instance(site("s", &site_dir, json!({})));
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
        fs::read_to_string(apache_dir(&heart).join("instances/p.conf"))
            .unwrap()
            .contains("/logs/p.log")
    );

    let answer = heart.stop("p");
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.json()["state"], "STOPPED");
    assert!(fetch(pp, "/").is_none(), "a stopped instance still answers");
    assert_eq!(body_of(sp, "/page.html"), "<p>a static page</p>\n");

    // The last instance takes Apache with it.
    let httpd = read_pid(&apache_dir(&heart).join("run/httpd.pid")).unwrap();
    let answer = heart.stop("s");
    assert_eq!(answer.status, 200, "{answer:?}");
    wait_until(T, "Apache to stop with its last instance", || !alive(httpd));
    assert!(fetch(sp, "/").is_none());

    // And the next start brings it back.
    let answer = heart.start("p");
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(body_of(pp, "/"), "php says hello");
}

#[test]
fn environment_values_cannot_change_the_configuration() {
    let heart = apache_heart("apache-injection");
    let version = php_version(&heart);
    let app = php_app(heart.dir());
    let good = heart.run_instance(php("good", &app, &version, json!({})));

    // Two ports of the block that the heart does not hand out.
    let (first, second) = (heart.block().port(BLOCK - 2), heart.block().port(BLOCK - 1));

    // A newline would end the directive: refused at start, nothing applied.
    let evil = format!(
        "x\" \\\nListen 127.0.0.1:{first}\n<VirtualHost 127.0.0.1:{first}>\n\
         DocumentRoot /\n</VirtualHost>\n\\"
    );
    let answer = heart.register(php("evil", &app, &version, json!({"EVIL": evil})));
    assert_eq!(answer.status, 201, "{answer:?}");
    let message = heart.start_fails("evil");
    assert!(
        message.contains("EVIL") && message.contains("newline"),
        "{message}"
    );
    assert!(
        fetch(first, "/").is_none(),
        "the injected Listen took effect"
    );
    assert!(!apache_dir(&heart).join("instances/evil.conf").exists());
    assert!(!fs::read_to_string(apache_dir(&heart).join("httpd.conf"))
        .unwrap()
        .contains(&first.to_string()));
    assert_eq!(body_of(port_of(&good), "/"), "php says hello");

    // Quotes, backslashes and directives without a newline are plain text.
    let tricky = format!("a\" \\\" Listen 127.0.0.1:{second} </VirtualHost> ${{PATH}} \\");
    let t = heart.run_instance(php("tricky", &app, &version, json!({"TRICKY": tricky})));
    let environ = body_of(port_of(&t), "/environ.php");
    assert!(environ.contains(&format!("TRICKY=[{tricky}]")), "{environ}");
    assert!(
        fetch(second, "/").is_none(),
        "the injected Listen took effect"
    );
    assert_eq!(body_of(port_of(&good), "/"), "php says hello");
}

#[test]
fn document_root_stays_inside_the_instance() {
    let heart = apache_heart("apache-docroot");
    let site_dir = static_site(heart.dir());
    heart.dir().write("site/public/index.html", "public part\n");
    std::os::unix::fs::symlink("/etc", site_dir.join("out")).unwrap();
    std::os::unix::fs::symlink("public", site_dir.join("in")).unwrap();

    for (id, root) in [("up", "../.."), ("up2", "public/../../x"), ("abs", "/etc")] {
        let answer = heart.register(site(id, &site_dir, json!({"document_root": root})));
        assert_eq!(answer.status, 422, "{root}: {answer:?}");
    }
    let mut standalone = site("alone", &site_dir, json!({}));
    standalone["standalone"] = json!(true);
    let answer = heart.register(standalone);
    assert_eq!(answer.status, 422, "{answer:?}");
    // A symlink out is found at start, once the files are in place.
    let answer = heart.register(site("link", &site_dir, json!({"document_root": "out"})));
    let refused = match answer.status {
        422 => true,
        201 => {
            let message = heart.start_fails("link");
            assert!(
                message.contains("leaves the instance directory"),
                "{message}"
            );
            true
        }
        _ => panic!("{answer:?}"),
    };
    assert!(refused);
    assert!(!apache_dir(&heart).join("instances/link.conf").exists());

    let ok = heart.run_instance(site("ok", &site_dir, json!({"document_root": "in"})));
    assert_eq!(body_of(port_of(&ok), "/"), "public part\n");
}

#[test]
fn a_rejected_configuration_harms_only_its_instance() {
    let heart = apache_heart("apache-rejected");
    let site_dir = static_site(heart.dir());
    let a = heart.run_instance(site("a", &site_dir, json!({})));
    let b = heart.run_instance(site("b", &site_dir, json!({})));

    // Break a's file on disk; the next reload finds it.
    let file = apache_dir(&heart).join("instances/a.conf");
    let mut text = fs::read_to_string(&file).unwrap();
    text.push_str("NoSuchDirective here\n");
    fs::write(&file, text).unwrap();

    let c = heart.run_instance(site("c", &site_dir, json!({})));
    assert_eq!(body_of(port_of(&b), "/page.html"), "<p>a static page</p>\n");
    assert_eq!(body_of(port_of(&c), "/page.html"), "<p>a static page</p>\n");
    assert!(fetch(port_of(&a), "/").is_none());

    let message = heart.wait_message("a", "ERROR");
    assert!(
        message.contains("NoSuchDirective") && message.contains("a.conf"),
        "{message}"
    );
    assert_eq!(heart.show("b")["state"], "RUNNING");
    assert_eq!(heart.show("c")["state"], "RUNNING");

    // What `-t` cannot see (an error log Apache could not open on the
    // reload, and would die of) is refused before the reload.
    let httpd = read_pid(&apache_dir(&heart).join("run/httpd.pid")).unwrap();
    fs::create_dir_all(heart.data().join("logs/d.log")).unwrap();
    let answer = heart.register(site("d", &site_dir, json!({})));
    assert_eq!(answer.status, 201, "{answer:?}");
    let message = heart.start_fails("d");
    assert!(message.contains("d.log"), "{message}");
    assert_eq!(
        read_pid(&apache_dir(&heart).join("run/httpd.pid")),
        Some(httpd)
    );
    assert_eq!(body_of(port_of(&b), "/page.html"), "<p>a static page</p>\n");

    // Fixed (a start writes it anew), it serves again.
    let answer = heart.start("a");
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(body_of(port_of(&a), "/page.html"), "<p>a static page</p>\n");
}

#[test]
fn graceful_reloads_lose_no_request() {
    let heart = apache_heart("apache-graceful");
    let (version, app, site_dir) = php_and_static(&heart);
    let first = heart.run_instance(php("first", &app, &version, json!({})));
    heart.run_instance(site("second", &site_dir, json!({})));

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
    heart.run_instance(site("third", &site_dir, json!({})));
    let answer = heart.stop("second");
    assert_eq!(answer.status, 200, "{answer:?}");
    heart.run_instance(php("fourth", &app, &version, json!({})));
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
    let mut heart = apache_heart("apache-crash");
    let (version, app, site_dir) = php_and_static(&heart);
    let mut body = php("p", &app, &version, json!({}));
    body["restart"] = json!("on-failure");
    let p = heart.run_instance(body);
    let s = heart.run_instance(site("s", &site_dir, json!({})));
    let (pp, sp) = (port_of(&p), port_of(&s));

    heart.crash();
    assert_eq!(body_of(pp, "/"), "php says hello");
    heart.spawn();
    assert_eq!(heart.show("p")["state"], "RUNNING");
    assert_eq!(heart.show("s")["state"], "RUNNING");
    assert_eq!(body_of(pp, "/"), "php says hello");

    let httpd = read_pid(&apache_dir(&heart).join("run/httpd.pid")).unwrap();
    kill(Pid::from_raw(httpd), Signal::SIGKILL).unwrap();

    // `s` (restart never) ends in ERROR; `p` (on-failure) comes back on a
    // new Apache.
    let message = heart.wait_message("s", "ERROR");
    assert!(message.contains("Apache is not running"), "{message}");
    wait_until(T, "p to answer on a new Apache", || {
        heart.show("p")["state"] == "RUNNING"
            && read_pid(&apache_dir(&heart).join("run/httpd.pid")).is_some_and(|pid| pid != httpd)
            && fetch(pp, "/").is_some_and(|(status, _)| status == 200)
    });
    assert_eq!(body_of(pp, "/"), "php says hello");
    assert!(fetch(sp, "/").is_none(), "a failed instance is served");
}

#[test]
fn a_node_without_apache_says_so() {
    let mut heart = TestHeart::new("apache-missing");
    let missing = heart.dir().join("no-such-apache2");
    apache_options(&mut heart)
        .env("PM_APACHE_BIN", missing)
        .spawn();
    let answer = heart.call("GET", "/runtimes", None);
    assert_eq!(answer.status, 200, "{answer:?}");
    let body = answer.json();
    assert_eq!(body["php"], json!([]), "{body}");
    assert_eq!(body["static"], json!([]), "{body}");
    let site_dir = static_site(heart.dir());
    let answer = heart.register(site("s", &site_dir, json!({})));
    assert_eq!(answer.status, 422, "{answer:?}");
    let body = answer.json();
    let error = body["error"].as_str().unwrap();
    assert!(
        error.contains("PM_APACHE_BIN") && error.contains("no-such-apache2"),
        "{error}"
    );
}

#[test]
fn stop_on_exit_takes_apache_down_with_the_heart() {
    let mut heart = apache_heart("apache-stop-on-exit");
    let site_dir = static_site(heart.dir());
    let s = heart.run_instance(site("s", &site_dir, json!({})));
    let httpd = read_pid(&apache_dir(&heart).join("run/httpd.pid")).unwrap();

    // Without --stop-on-exit, SIGTERM leaves Apache serving.
    assert!(heart.terminate().success());
    assert_eq!(body_of(port_of(&s), "/page.html"), "<p>a static page</p>\n");
    assert!(alive(httpd));

    heart.args(&["--stop-on-exit"]).spawn();
    assert_eq!(heart.show("s")["state"], "RUNNING");
    assert!(heart.terminate().success());
    wait_until(T, "Apache to stop with the heart", || !alive(httpd));
    assert!(fetch(port_of(&s), "/").is_none());
}

#[test]
fn concurrent_starts_do_not_race_on_reloads() {
    let heart = apache_heart("apache-concurrent");
    let site_dir = static_site(heart.dir());
    let ids: Vec<String> = (0..6).map(|n| format!("c{n}")).collect();
    for id in &ids {
        let answer = heart.register(site(id, &site_dir, json!({})));
        assert_eq!(answer.status, 201, "{answer:?}");
    }
    // All at once, Apache not running yet: one launches it, the others
    // reload it, one at a time.
    thread::scope(|scope| {
        let threads: Vec<_> = ids
            .iter()
            .map(|id| {
                let heart = &heart;
                scope.spawn(move || heart.start(id))
            })
            .collect();
        for thread in threads {
            let answer = thread.join().unwrap();
            assert_eq!(answer.status, 200, "{answer:?}");
        }
    });
    for id in &ids {
        let view = heart.show(id);
        assert_eq!(view["state"], "RUNNING", "{view}");
        assert_eq!(
            body_of(port_of(&view), "/page.html"),
            "<p>a static page</p>\n"
        );
    }
    let instances = fs::read_dir(apache_dir(&heart).join("instances"))
        .unwrap()
        .count();
    assert_eq!(instances, ids.len());
}

#[test]
fn a_placeholder_port_keeps_apache_running() {
    let mut heart = TestHeart::new("apache-keep");
    let keep = heart.block().port(BLOCK - 1);
    apache_options(&mut heart)
        .env("PM_APACHE_KEEP_PORT", keep.to_string())
        .spawn();
    let site_dir = static_site(heart.dir());
    let s = heart.run_instance(site("s", &site_dir, json!({})));
    let httpd = read_pid(&apache_dir(&heart).join("run/httpd.pid")).unwrap();
    let answer = heart.stop("s");
    assert_eq!(answer.status, 200, "{answer:?}");
    assert!(fetch(port_of(&s), "/").is_none());
    assert!(alive(httpd), "Apache stopped despite PM_APACHE_KEEP_PORT");
    // The placeholder serves nothing.
    assert_eq!(fetch(keep, "/").map(|(status, _)| status), Some(403));
    let answer = heart.start("s");
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(body_of(port_of(&s), "/page.html"), "<p>a static page</p>\n");
    assert_eq!(
        read_pid(&apache_dir(&heart).join("run/httpd.pid")),
        Some(httpd)
    );
}

#[test]
fn files_beneath_the_document_root_never_lead_outside_it() {
    let heart = apache_heart("apache-symlinks");
    let secret = heart
        .dir()
        .write("secret/config.txt", "DB_PASSWORD=hunter2\n");
    let site_dir = static_site(heart.dir());
    heart.dir().mkdir("site/steal");
    std::os::unix::fs::symlink(&secret, site_dir.join("steal/config.txt")).unwrap();
    let answer = heart.register(site("thief", &site_dir, json!({})));
    assert_eq!(answer.status, 201, "{answer:?}");
    let message = heart.start_fails("thief");
    assert!(
        message.contains("steal/config.txt") && message.contains("leaves the instance directory"),
        "{message}"
    );
    assert!(!apache_dir(&heart).join("instances/thief.conf").exists());
    // Nor can an .htaccess turn links back on: Options is not overridable.
    fs::remove_file(site_dir.join("steal/config.txt")).unwrap();
    let ok = heart.run_instance(site("honest", &site_dir, json!({})));
    assert_eq!(
        body_of(port_of(&ok), "/page.html"),
        "<p>a static page</p>\n"
    );
    let conf = fs::read_to_string(apache_dir(&heart).join("instances/honest.conf")).unwrap();
    assert!(conf.contains("Options SymLinksIfOwnerMatch"), "{conf}");
    assert!(!conf.contains("AllowOverride All"), "{conf}");
}
