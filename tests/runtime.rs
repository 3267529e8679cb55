//! The runtime plugins through `pm-runtime` and through the heart: version
//! selection for rbenv and nvm, external plugins (good, hanging, broken),
//! `env` output that `sh` evaluates to the `--json` environment, `exec`
//! status and arguments, and `check`.
//!
//! Heart-based tests use instance ports from 24000-24999, ten per test.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::util::{describe, run, supervisor_pids, Dir, RUNTIME, WEB_SERVER_PY};

const EXAMPLE_PLUGIN: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/examples/plugins/pm-runtime-procfile"
);

/// `pm-runtime ARGS` with exactly the environment `env` (plus nothing).
fn pm_runtime(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(RUNTIME);
    cmd.args(args).env_clear().envs(env.iter().copied());
    run(&mut cmd)
}

fn ok(args: &[&str], env: &[(&str, &str)]) -> String {
    let out = pm_runtime(args, env);
    assert!(
        out.status.success(),
        "{}",
        describe(&format!("pm-runtime {args:?}"), &out)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn fails(args: &[&str], env: &[(&str, &str)]) -> String {
    let out = pm_runtime(args, env);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        describe(&format!("pm-runtime {args:?}"), &out)
    );
    String::from_utf8(out.stderr).unwrap()
}

fn env_json(args: &[&str], env: &[(&str, &str)]) -> BTreeMap<String, String> {
    serde_json::from_str(&ok(args, env)).unwrap()
}

fn lines(text: &str) -> Vec<&str> {
    text.lines().collect()
}

/// Makes `root/rel/bin/NAME` an executable file (or a symlink to
/// `target`).
fn install(root: &Path, rel: &str, name: &str, target: Option<&Path>) {
    let bin = root.join(rel).join("bin");
    fs::create_dir_all(&bin).unwrap();
    let path = bin.join(name);
    match target {
        Some(target) => std::os::unix::fs::symlink(target, &path).unwrap(),
        None => {
            fs::write(&path, "#!/bin/sh\n").unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        }
    }
}

#[test]
fn rbenv_versions_and_environment() {
    let dir = Dir::new("rbenv");
    let root = dir.join("rbenv");
    for v in [
        "1.9.3", "1.9.30", "2.7.8", "2.7.8-p1", "3.1.4", "3.1.10", "3.10.0",
    ] {
        install(&root, &format!("versions/{v}"), "ruby", None);
    }
    fs::create_dir_all(root.join("versions/9.9.9/bin")).unwrap(); // no ruby
    let root_s = root.to_str().unwrap();
    let home = dir.path.to_str().unwrap();
    let base = [
        ("RBENV_ROOT", root_s),
        ("HOME", home),
        ("PATH", "/usr/bin:/bin"),
    ];

    assert_eq!(
        lines(&ok(&["versions", "rbenv"], &base)),
        [
            "1.9", "1.9.3", "1.9.30", "2.7", "2.7.8", "2.7.8-p1", "3.1", "3.1.4", "3.1.10", "3.10",
            "3.10.0"
        ]
    );

    let table = [
        ("1.9.3", "1.9.3"),
        ("1.9.30", "1.9.30"),
        ("1.9", "1.9.30"),
        ("2.7.8", "2.7.8-p1"),
        ("2.7.8-p1", "2.7.8-p1"),
        ("2.7", "2.7.8-p1"),
        ("3.1", "3.1.10"),
        ("3.1.4", "3.1.4"),
        ("3", "3.10.0"),
        ("3.10", "3.10.0"),
    ];
    let shims = format!("{root_s}/shims");
    let bin = format!("{root_s}/bin");
    for (requested, full) in table {
        let env = env_json(&["env", "rbenv", requested, "--json"], &base);
        assert_eq!(env["RBENV_VERSION"], full, "{requested}");
        assert_eq!(env["RBENV_ROOT"], root_s);
        assert_eq!(env["PATH"], format!("{shims}:{bin}:/usr/bin:/bin"));
    }

    // Already on PATH, in the wrong order and twice: first, once each.
    let messy = format!("{bin}:/usr/bin:{shims}:/bin:{bin}");
    let env = env_json(
        &["env", "rbenv", "3.1", "--json"],
        &[("RBENV_ROOT", root_s), ("HOME", home), ("PATH", &messy)],
    );
    assert_eq!(env["PATH"], format!("{shims}:{bin}:/usr/bin:/bin"));

    for missing in ["3.2", "1.9.4", "3.1.4.1", "9.9.9"] {
        let err = fails(&["env", "rbenv", missing], &base);
        assert!(
            err.contains(&format!(
                "runtime rbenv has no version {missing} (available: 1.9"
            )) && err.contains("3.10.0"),
            "{err}"
        );
    }

    // The rbenv_path parameter wins over RBENV_ROOT; an empty root lists
    // nothing and says so.
    let empty = dir.join("empty");
    fs::create_dir_all(&empty).unwrap();
    let params = format!(r#"{{"rbenv_path": "{}"}}"#, empty.display());
    let err = fails(&["env", "rbenv", "3.1", "--parameters", &params], &base);
    assert!(err.contains("(available: none on this node)"), "{err}");
    let none = [("RBENV_ROOT", empty.to_str().unwrap()), ("HOME", home)];
    assert_eq!(ok(&["versions", "rbenv"], &none), "");
    // No RBENV_ROOT: ~/.rbenv.
    install(&dir.path, ".rbenv/versions/3.3.0", "ruby", None);
    assert_eq!(
        lines(&ok(&["versions", "rbenv"], &[("HOME", home)])),
        ["3.3", "3.3.0"]
    );
}

#[test]
fn nvm_versions_both_layouts() {
    let dir = Dir::new("nvm");
    let root = dir.join("nvm");
    for v in ["v20.1.0", "v20.10.0", "v18.2.0", "v9.11.2"] {
        install(&root, &format!("versions/node/{v}"), "node", None);
    }
    for v in ["v16.3.0", "v20.1.0", "v0.10.48"] {
        install(&root, v, "node", None);
    }
    fs::create_dir_all(root.join("versions/node/v21.0.0/bin")).unwrap(); // no node
    fs::create_dir_all(root.join("alias")).unwrap();
    let root_s = root.to_str().unwrap();
    let home = dir.path.to_str().unwrap();
    let base = [
        ("NVM_DIR", root_s),
        ("HOME", home),
        ("PATH", "/usr/bin:/bin"),
    ];

    assert_eq!(
        lines(&ok(&["versions", "nvm"], &base)),
        [
            "0.10", "0.10.48", "9.11", "9.11.2", "16.3", "16.3.0", "18.2", "18.2.0", "20.1",
            "20.1.0", "20.10", "20.10.0"
        ]
    );

    let new = |v: &str| format!("{root_s}/versions/node/v{v}/bin");
    let old = |v: &str| format!("{root_s}/v{v}/bin");
    let table = [
        ("20", new("20.10.0")),
        ("20.1", new("20.1.0")),
        ("20.1.0", new("20.1.0")),
        ("v18", new("18.2.0")),
        ("16", old("16.3.0")),
        ("0.10", old("0.10.48")),
        ("9", new("9.11.2")),
    ];
    for (requested, bin) in table {
        let env = env_json(&["env", "nvm", requested, "--json"], &base);
        assert_eq!(env["PATH"], format!("{bin}:/usr/bin:/bin"), "{requested}");
        assert_eq!(env["NVM_BIN"], bin);
        assert_eq!(env["NVM_DIR"], root_s);
    }
    let bin = new("20.10.0");
    let messy = format!("/usr/bin:{bin}:/bin:{bin}/");
    let env = env_json(
        &["env", "nvm", "20", "--json"],
        &[("NVM_DIR", root_s), ("HOME", home), ("PATH", &messy)],
    );
    assert_eq!(env["PATH"], format!("{bin}:/usr/bin:/bin"));

    for missing in ["21", "2", "20.1.1", "1"] {
        let err = fails(&["env", "nvm", missing], &base);
        assert!(
            err.contains(&format!(
                "runtime nvm has no version {missing} (available: 0.10.48, 9.11.2,"
            )),
            "{err}"
        );
    }
    let empty = dir.join("empty");
    let params = format!(r#"{{"nvm_path": "{}"}}"#, empty.display());
    let err = fails(&["env", "nvm", "20", "--parameters", &params], &base);
    assert!(err.contains("(available: none on this node)"), "{err}");
}

/// A plugin directory with a plugin whose environment mode sets awkward
/// values and removes one variable.
fn fancy_plugin(dir: &Dir) -> PathBuf {
    dir.script(
        "plugins/pm-runtime-fancy",
        r#"#!/bin/sh
case $1 in
versions) echo '{"versions": ["1.0.0"]}' ;;
environment) exec python3 -c '
import json, sys
req = json.load(sys.stdin)
env = req["environment"]
env.pop("REMOVE_ME", None)
env["SPACES"] = "a  b   c"
env["QUOTES"] = "it'"'"'s \"quoted\" and '"'"''"'"' twice"
env["DOLLAR"] = "$HOME ${PATH} $(echo no) `echo no` \\ \\n"
env["NEWLINES"] = "line 1\nline 2\n\n"
env["EMPTY"] = ""
env["VERSION_SEEN"] = req["version"]
json.dump({"environment": env}, sys.stdout)
' ;;
*) echo '{"message": "ok"}' ;;
esac
"#,
    );
    dir.join("plugins")
}

#[test]
fn env_output_evaluated_by_sh_matches_json() {
    let dir = Dir::new("env-sh");
    let plugins = fancy_plugin(&dir);
    let script = format!(
        "{RUNTIME} --plugin-dir {p} env fancy 1.0 --json > {d}/json && \
         {RUNTIME} --plugin-dir {p} env fancy 1.0 > {d}/exports && \
         eval \"$(cat {d}/exports)\" && exec env -0 > {d}/after",
        p = plugins.display(),
        d = dir.path.display(),
    );
    let path = std::env::var("PATH").unwrap();
    let out = run(Command::new("/bin/sh")
        .arg("-c")
        .arg(&script)
        .env_clear()
        .env("PATH", &path)
        .env("HOME", &dir.path)
        .env("REMOVE_ME", "x")
        .env("UNCHANGED", "it's fine"));
    assert!(out.status.success(), "{}", describe("sh", &out));
    let read = |name: &str| -> BTreeMap<String, String> {
        serde_json::from_str(&fs::read_to_string(dir.join(name)).unwrap()).unwrap()
    };
    let json = read("json");
    let mut after: BTreeMap<String, String> = fs::read_to_string(dir.join("after"))
        .unwrap()
        .split_terminator('\0')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    after.remove("_");
    let mut json_cmp = json.clone();
    json_cmp.remove("_");
    assert_eq!(after, json_cmp);
    assert_eq!(json["NEWLINES"], "line 1\nline 2\n\n");
    assert_eq!(json["VERSION_SEEN"], "1.0");
    assert_eq!(json["UNCHANGED"], "it's fine");
    assert!(!json.contains_key("REMOVE_ME"));
    let exports = fs::read_to_string(dir.join("exports")).unwrap();
    assert!(exports.contains("unset REMOVE_ME\n"), "{exports}");
    assert!(!exports.contains("UNCHANGED"), "{exports}");
}

#[test]
fn exec_passes_status_and_arguments_through() {
    let dir = Dir::new("exec");
    let path = std::env::var("PATH").unwrap();
    let env = [("PATH", path.as_str()), ("MARK", "m")];
    for code in [0, 1, 7, 100, 255] {
        let out = pm_runtime(
            &[
                "exec",
                "shell",
                "1",
                "--",
                "sh",
                "-c",
                &format!("exit {code}"),
            ],
            &env,
        );
        assert_eq!(out.status.code(), Some(code), "{}", describe("exec", &out));
    }
    let argv_file = dir.join("argv");
    let args = ["a b", "", "$MARK", "'q'", "-x", "--json", "--", "ü\n"];
    let mut cmd = vec![
        "exec",
        "shell",
        "1",
        "--",
        "python3",
        "-c",
        "import json, os, sys; open(sys.argv[1], 'w').write(json.dumps([sys.argv[2:], os.environ.get('MARK')]))",
        argv_file.to_str().unwrap(),
    ];
    cmd.extend(args);
    ok(&cmd, &env);
    let (seen, mark): (Vec<String>, String) =
        serde_json::from_str(&fs::read_to_string(&argv_file).unwrap()).unwrap();
    assert_eq!(seen, args);
    assert_eq!(mark, "m");

    // Killed by SIGTERM: 128 + 15. Not found: 127.
    let out = pm_runtime(
        &[
            "exec",
            "shell",
            "1",
            "python3",
            "-c",
            "import os; os.kill(os.getpid(), 15)",
        ],
        &env,
    );
    assert_eq!(out.status.code(), Some(143), "{}", describe("exec", &out));
    let out = pm_runtime(&["exec", "shell", "1", "--", "/nonexistent/cmd"], &env);
    assert_eq!(out.status.code(), Some(127), "{}", describe("exec", &out));
    // The runtime's environment is used, and an unknown version refused.
    let out = pm_runtime(&["exec", "shell", "2", "--", "true"], &env);
    assert_eq!(out.status.code(), Some(1), "{}", describe("exec", &out));
}

#[test]
fn exec_forwards_sigterm() {
    use std::io::BufRead;
    let path = std::env::var("PATH").unwrap();
    let child = Command::new(RUNTIME)
        .args([
            "exec",
            "shell",
            "1",
            "--",
            "python3",
            "-c",
            "import signal, sys, time\n\
             signal.signal(signal.SIGTERM, lambda *a: sys.exit(42))\n\
             print('ready', flush=True)\n\
             time.sleep(60)",
        ])
        .env_clear()
        .env("PATH", &path)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut guard = crate::util::ChildGuard(child);
    let mut line = String::new();
    std::io::BufReader::new(guard.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "ready\n");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(guard.pid()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = crate::util::wait_for(Duration::from_secs(10), "pm-runtime exec to end", || {
        guard.0.try_wait().unwrap()
    });
    assert_eq!(status.code(), Some(42));
}

/// Writes plugins that misbehave, each in its own way.
fn bad_plugins(dir: &Dir) -> PathBuf {
    let pidfile = dir.join("hang.pid");
    dir.script(
        "bad/pm-runtime-hang",
        &format!(
            "#!/bin/sh\necho $$ > {}\nsleep 600 &\nsleep 600\n",
            pidfile.display()
        ),
    );
    dir.script(
        "bad/pm-runtime-garbage",
        "#!/bin/sh\necho 'this is {not json'\n",
    );
    dir.script(
        "bad/pm-runtime-fail",
        "#!/bin/sh\necho 'fail: broken on purpose' >&2\nexit 1\n",
    );
    dir.script(
        "bad/pm-runtime-shape",
        "#!/bin/sh\necho '{\"versions\": \"1.0\", \"supervise\": 3, \"message\": 4}'\n",
    );
    dir.write("bad/pm-runtime-noexec", "#!/bin/sh\necho '{}'\n");
    dir.join("bad")
}

/// True when some process is in process group `pgid`.
fn group_alive(pgid: i32) -> bool {
    fs::read_dir("/proc").unwrap().flatten().any(|entry| {
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
            return false;
        };
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            return false;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // state ppid pgrp: pgrp is field 5 of proc(5), index 2 here.
        fields.get(2) == Some(&pgid.to_string().as_str()) && fields[0] != "Z"
    })
}

#[test]
fn broken_plugins_give_clear_errors() {
    let dir = Dir::new("broken");
    let bad = bad_plugins(&dir);
    let bad = bad.to_str().unwrap();

    let start = Instant::now();
    let err = fails(
        &["--plugin-dir", bad, "--timeout", "1", "versions", "hang"],
        &[],
    );
    let took = start.elapsed();
    assert!(
        err.contains("runtime plugin hang") && err.contains("versions timed out after 1.0 s"),
        "{err}"
    );
    assert!(took < Duration::from_secs(10), "{took:?}");
    let pid: i32 = fs::read_to_string(dir.join("hang.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    crate::util::wait_until(Duration::from_secs(5), "the plugin's group to die", || {
        !group_alive(pid)
    });

    // PM_RUNTIME_TIMEOUT sets the limit too.
    let err = fails(
        &["--plugin-dir", bad, "versions", "hang"],
        &[("PM_RUNTIME_TIMEOUT", "0.5")],
    );
    assert!(err.contains("timed out after 0.5 s"), "{err}");

    let err = fails(&["--plugin-dir", bad, "versions", "garbage"], &[]);
    assert!(
        err.contains("runtime plugin garbage (")
            && err.contains("versions answered invalid JSON")
            && err.contains("this is {not json"),
        "{err}"
    );
    let err = fails(&["--plugin-dir", bad, "env", "fail", "1"], &[]);
    assert!(
        err.contains("runtime plugin fail (")
            && err.contains("environment failed: exit status 1: fail: broken on purpose"),
        "{err}"
    );
    let err = fails(&["--plugin-dir", bad, "versions", "shape"], &[]);
    assert!(
        err.contains("runtime plugin shape (") && err.contains("versions answered the wrong shape"),
        "{err}"
    );
    let err = fails(&["--plugin-dir", bad, "versions", "noexec"], &[]);
    assert!(err.contains("is not an executable file"), "{err}");
    // A chatty plugin neither blocks on a full pipe nor floods the caller.
    dir.script(
        "chatty/pm-runtime-chatty",
        "#!/bin/sh\nhead -c 10000000 /dev/zero | tr '\\0' x >&2\necho '{\"versions\": [\"1\"]}'\n",
    );
    dir.script(
        "chatty/pm-runtime-flood",
        "#!/bin/sh\nhead -c 10000000 /dev/zero | tr '\\0' x\nexit 3\n",
    );
    let chatty = dir.join("chatty");
    let chatty = chatty.to_str().unwrap();
    let path = [("PATH", "/usr/bin:/bin")];
    assert_eq!(
        ok(
            &[
                "--plugin-dir",
                chatty,
                "--timeout",
                "20",
                "versions",
                "chatty"
            ],
            &path
        ),
        "1\n"
    );
    let err = fails(
        &[
            "--plugin-dir",
            chatty,
            "--timeout",
            "20",
            "versions",
            "flood",
        ],
        &path,
    );
    assert!(
        err.contains("versions failed: exit status 3, nothing on stderr"),
        "{err}"
    );
    let err = fails(&["--plugin-dir", bad, "versions", "nothere"], &[]);
    assert!(err.contains("unknown runtime: nothere"), "{err}");

    // list shows every runtime, warns about the broken ones, exits 1.
    let out = pm_runtime(&["--plugin-dir", bad, "--timeout", "0.5", "list"], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", describe("list", &out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    for name in ["fail", "garbage", "hang", "nvm", "rbenv", "shape", "shell"] {
        assert!(stdout.contains(name), "{name} missing from {stdout}");
    }
    assert!(!stdout.contains("noexec"), "{stdout}");
}

#[test]
fn check_flags_each_problem() {
    let dir = Dir::new("check");
    let bad = bad_plugins(&dir);
    let check = |name: &str| {
        let path = bad.join(format!("pm-runtime-{name}"));
        let out = pm_runtime(
            &["--timeout", "0.5", "check", path.to_str().unwrap()],
            &[("PATH", "/usr/bin:/bin")],
        );
        assert_eq!(out.status.code(), Some(1), "{}", describe(name, &out));
        String::from_utf8(out.stdout).unwrap()
    };
    let report = check("hang");
    assert!(
        report.contains("versions: FAILED: runtime plugin hang"),
        "{report}"
    );
    assert!(report.contains("timed out after 0.5 s"), "{report}");
    assert!(report.contains("5 problems"), "{report}");
    let report = check("garbage");
    assert!(
        report.contains("versions: FAILED:") && report.contains("invalid JSON"),
        "{report}"
    );
    let report = check("fail");
    assert!(
        report.contains("stop: FAILED:") && report.contains("exit status 1"),
        "{report}"
    );
    let report = check("shape");
    assert!(report.contains("wrong shape"), "{report}");
    let report = check("noexec");
    assert!(
        report.contains("file: FAILED:") && report.contains("not an executable"),
        "{report}"
    );
    let report = check("../garbage"); // any name: a missing file
    assert!(report.contains("not an executable"), "{report}");

    // The example passes, with the example application (a Procfile).
    let app_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/procfile-app");
    let path = std::env::var("PATH").unwrap();
    let report = ok(
        &["check", EXAMPLE_PLUGIN, "--app", app_dir],
        &[("PATH", &path), ("HOME", dir.path.to_str().unwrap())],
    );
    assert!(report.contains("start: ok: supervised"), "{report}");
    assert!(report.contains("every mode passed"), "{report}");
}

#[test]
fn plugins_are_discovered_in_order() {
    let dir = Dir::new("discover");
    dir.script(
        "one/pm-runtime-dup",
        "#!/bin/sh\necho '{\"versions\": [\"1.1\"]}'\n",
    );
    dir.script(
        "two/pm-runtime-dup",
        "#!/bin/sh\necho '{\"versions\": [\"2.2\"]}'\n",
    );
    dir.script(
        "two/pm-runtime-shell",
        "#!/bin/sh\necho '{\"versions\": [\"9\"]}'\n",
    );
    dir.script("two/not-a-plugin", "#!/bin/sh\nexit 1\n");
    let one = dir.join("one");
    let two = dir.join("two");
    let list = |args: &[&str], env: &[(&str, &str)]| -> BTreeMap<String, Vec<String>> {
        serde_json::from_str(&ok(args, env)).unwrap()
    };
    let home = [("HOME", dir.path.to_str().unwrap())];
    let all = list(
        &[
            "--plugin-dir",
            one.to_str().unwrap(),
            "--plugin-dir",
            two.to_str().unwrap(),
            "list",
            "--json",
        ],
        &home,
    );
    assert_eq!(all["dup"], ["1.1"]);
    assert_eq!(all["shell"], ["1"]);
    assert_eq!(all["nvm"], Vec::<String>::new());
    // Built-ins and plugins only: one "dup", no "not-a-plugin".
    let plugins: Vec<&String> = all
        .keys()
        .filter(|k| ["dup", "not-a-plugin", "a-plugin"].contains(&k.as_str()))
        .collect();
    assert_eq!(plugins, ["dup"], "{all:?}");
    // PM_RUNTIME_PATH, in its order.
    let path = format!("{}:{}", two.display(), one.display());
    let all = list(&["list", "--json"], &[("PM_RUNTIME_PATH", &path), home[0]]);
    assert_eq!(all["dup"], ["2.2"]);
}

/// A heart of this test file: its own data directory, plugin directory
/// and ten ports of 24000-24999. On drop it kills the heart and every
/// supervisor it started (their commands die with them).
struct Heart {
    child: Option<std::process::Child>,
    data: PathBuf,
    addr: String,
    token: String,
}

impl Heart {
    fn start(dir: &Dir, plugins: &Path, ports: u16, env: &[(&str, &str)]) -> Heart {
        use std::io::BufRead;
        let data = dir.join("data");
        let mut cmd = Command::new(crate::util::HEART);
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data)
            .arg("--ports")
            .arg(format!("{ports}-{}", ports + 9))
            .arg("--plugin-dir")
            .arg(plugins)
            // Tests run as root: the applications too, as before users.
            .arg("--allow-root-apps")
            .envs(env.iter().copied())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped());
        let mut child = cmd.spawn().expect("spawn pm-heart");
        let stdout = child.stdout.take().unwrap();
        let mut heart = Heart {
            child: Some(child),
            data,
            addr: String::new(),
            token: String::new(),
        };
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = std::io::BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("no listening line from pm-heart");
        heart.addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        heart.token = fs::read_to_string(heart.data.join("token"))
            .unwrap()
            .trim()
            .to_string();
        heart
    }

    /// One HTTP/1.0 exchange with the heart: status and JSON body.
    fn call(&self, method: &str, path: &str, body: Option<serde_json::Value>) -> (u16, Value) {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let request = format!(
            "{method} {path} HTTP/1.0\r\nHost: {}\r\nAuthorization: Bearer {}\r\nContent-Length: {}\r\n\r\n{body}",
            self.addr,
            self.token,
            body.len()
        );
        let text = http_exchange(&self.addr, &request);
        let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
        let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
        let json = serde_json::from_str(body).unwrap_or(Value::String(body.to_string()));
        (status, json)
    }

    fn register(&self, id: &str, source: &Path, runtime: Value) -> Value {
        let body = serde_json::json!({
            "instance_id": id,
            "application": {"name": id},
            "source": source,
            "runtime": runtime,
        });
        let (status, answer) = self.call("POST", "/instances", Some(body));
        assert_eq!(status, 201, "register {id}: {answer}");
        answer
    }
}

use serde_json::Value;

fn http_exchange(addr: &str, request: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    String::from_utf8_lossy(&raw).into_owned()
}

/// `GET /` from an application on `port`.
fn get_app(port: u64) -> String {
    let addr = format!("127.0.0.1:{port}");
    http_exchange(&addr, &format!("GET / HTTP/1.0\r\nHost: {addr}\r\n\r\n"))
}

impl Drop for Heart {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        for pid in supervisor_pids(&self.data) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        crate::cgroups::clean(&self.data);
    }
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
    let app = dir.join("app");
    fs::create_dir_all(&app).unwrap();
    fs::create_dir_all(dir.join("plugins")).unwrap();

    let heart = Heart::start(
        &dir,
        &dir.join("plugins"),
        24000,
        &[("NVM_DIR", root.to_str().unwrap())],
    );
    let (_, runtimes) = heart.call("GET", "/runtimes", None);
    assert!(
        runtimes["nvm"]
            .as_array()
            .unwrap()
            .contains(&Value::from(version.clone())),
        "{runtimes}"
    );
    // The server retries its bind on EADDRINUSE, as WEB_SERVER_PY does.
    let server = "const srv = require('http').createServer((q, s) => s.end('node ' + process.version + ' ' + process.env.NVM_BIN + ' ' + process.env.PATH.split(':')[0])); let tries = 100; srv.on('error', (e) => { if (e.code === 'EADDRINUSE' && tries-- > 0) { setTimeout(() => srv.listen(%(port)d, '127.0.0.1'), 50); } else { throw e; } }); srv.listen(%(port)d, '127.0.0.1')";
    let view = heart.register(
        "nvm-app",
        &app,
        serde_json::json!({
            "name": "nvm",
            "version": major,
            "parameters": {"launch_command": format!("node -e \"{server}\"")},
        }),
    );
    let port = view["port"].as_u64().unwrap();
    let (status, started) = heart.call("POST", "/instances/nvm-app/start", None);
    assert_eq!(status, 200, "{started}");
    assert_eq!(started["state"], "RUNNING", "{started}");
    let answer = get_app(port);
    let bin = bin.display().to_string();
    assert!(
        answer.ends_with(&format!("node v{version} {bin} {bin}")),
        "{answer}"
    );
    let (status, stopped) = heart.call("POST", "/instances/nvm-app/stop", None);
    assert_eq!((status, stopped["state"].as_str()), (200, Some("STOPPED")));
    crate::util::wait_until(Duration::from_secs(10), "the port to close", || {
        std::net::TcpStream::connect(("127.0.0.1", port as u16)).is_err()
    });
}

#[test]
fn external_plugin_runs_an_application_through_the_heart() {
    let dir = Dir::new("plugin-heart");
    let plugins = dir.join("plugins");
    fs::create_dir_all(&plugins).unwrap();
    fs::copy(EXAMPLE_PLUGIN, plugins.join("pm-runtime-procfile")).unwrap();
    dir.write(
        "app/Procfile",
        "# the example application\nweb: python3 server.py $PORT\n",
    );
    dir.write("app/server.py", WEB_SERVER_PY);
    dir.write("app/hello.txt", "hello\n");
    let heart = Heart::start(&dir, &plugins, 24010, &[]);
    let (_, runtimes) = heart.call("GET", "/runtimes", None);
    assert_eq!(runtimes["procfile"], serde_json::json!(["1"]), "{runtimes}");

    let view = heart.register(
        "procfile-app",
        &dir.join("app"),
        serde_json::json!({"name": "procfile", "version": "1"}),
    );
    let port = view["port"].as_u64().unwrap();
    let (status, started) = heart.call("POST", "/instances/procfile-app/start", None);
    assert_eq!(status, 200, "{started}");
    assert_eq!(started["state"], "RUNNING", "{started}");
    let answer = get_app(port);
    assert!(
        answer.starts_with("HTTP/1.0 200") && answer.contains("hello.txt"),
        "{answer}"
    );
    let (status, stopped) = heart.call("POST", "/instances/procfile-app/stop", None);
    assert_eq!((status, stopped["state"].as_str()), (200, Some("STOPPED")));

    // An application without a Procfile: the plugin's reason reaches the
    // instance.
    fs::create_dir_all(dir.join("empty")).unwrap();
    heart.register(
        "no-procfile",
        &dir.join("empty"),
        serde_json::json!({"name": "procfile", "version": "1"}),
    );
    let (_, failed) = heart.call("POST", "/instances/no-procfile/start", None);
    let message = failed.to_string();
    assert!(
        message.contains("ERROR")
            && message.contains("runtime plugin procfile")
            && message.contains("cannot read"),
        "{failed}"
    );
}

#[test]
fn broken_plugins_fail_a_start_through_the_heart() {
    let dir = Dir::new("broken-heart");
    let plugins = dir.join("plugins");
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
    fs::create_dir_all(dir.join("app")).unwrap();
    let heart = Heart::start(&dir, &plugins, 24020, &[("PM_RUNTIME_TIMEOUT", "1")]);

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
        heart.register(
            &id,
            &dir.join("app"),
            serde_json::json!({"name": name, "version": "1"}),
        );
        let start = Instant::now();
        let (_, failed) = heart.call("POST", &format!("/instances/{id}/start"), None);
        assert!(start.elapsed() < Duration::from_secs(15));
        let (_, view) = heart.call("GET", &format!("/instances/{id}"), None);
        assert_eq!(view["state"], "ERROR", "{failed} {view}");
        let message = view["message"].as_str().unwrap();
        assert!(
            message.contains(&format!("runtime plugin {name} (")) && message.contains(expected),
            "{message}"
        );
    }
    let pid: i32 = fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    crate::util::wait_until(Duration::from_secs(5), "the plugin's group to die", || {
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
    dir.write("app/server.py", WEB_SERVER_PY);
    let heart = Heart::start(&dir, &dir.join("plugins"), 24030, &[]);
    let view = heart.register(
        "selfrun-app",
        &dir.join("app"),
        serde_json::json!({"name": "selfrun", "version": "1"}),
    );
    let port = view["port"].as_u64().unwrap();
    let (status, started) = heart.call("POST", "/instances/selfrun-app/start", None);
    let log = || fs::read_to_string(heart.data.join("instances/selfrun-app/.selfrun.log"));
    assert_eq!(status, 200, "{started} {:?}", log());
    assert_eq!(started["state"], "RUNNING", "{started}");
    assert!(
        started["message"]
            .as_str()
            .is_some_and(|m| m.contains("started pid")),
        "{started}"
    );
    let pidfile = heart.data.join("instances/selfrun-app/.selfrun.pid");
    let pid: i32 = fs::read_to_string(&pidfile).unwrap().parse().unwrap();
    let _daemon = crate::util::KillOnDrop { pid, group: true };
    assert!(get_app(port).contains("managed by the plugin"));

    let (status, stopped) = heart.call("POST", "/instances/selfrun-app/stop", None);
    assert_eq!(
        (status, stopped["state"].as_str()),
        (200, Some("STOPPED")),
        "{stopped}"
    );
    assert!(!pidfile.exists(), "the plugin's stop was not called");
    crate::util::wait_until(Duration::from_secs(10), "the daemon to end", || {
        !crate::util::alive(pid)
    });
}
