//! The runtime plugins through `pm-runtime` and through the heart: version
//! selection for rbenv and nvm, external plugins (good, hanging, broken),
//! `env` output that `sh` evaluates to the `--json` environment, `exec`
//! status and arguments, and `check`. Through the heart: `plugins.rs`.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::util::process::group_alive;
use crate::util::{describe, exited_with, pid_in, run, wait_until, ChildGuard, Dir, RUNTIME};

pub(crate) const EXAMPLE_PLUGIN: &str = concat!(
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
    exited_with(&pm_runtime(args, env), 1, &format!("pm-runtime {args:?}"))
}

fn env_json(args: &[&str], env: &[(&str, &str)]) -> BTreeMap<String, String> {
    serde_json::from_str(&ok(args, env)).unwrap()
}

/// `exec shell 1 -- CMD...`.
fn shell_exec<'a>(cmd: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["exec", "shell", "1", "--"];
    args.extend(cmd);
    args
}

/// Makes `root/rel/bin/NAME` an executable file (or a symlink to
/// `target`).
pub(crate) fn install(root: &Path, rel: &str, name: &str, target: Option<&Path>) {
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

/// The PATH of the tests' environments.
const BASE_PATH: &str = "/usr/bin:/bin";

/// What `versions RUNTIME` lists, line by line.
fn versions(runtime: &str, env: &[(&str, &str)]) -> Vec<String> {
    ok(&["versions", runtime], env)
        .lines()
        .map(str::to_string)
        .collect()
}

/// The PATH of `env RUNTIME VERSION --json` run with `env` and `PATH`
/// set to `path`.
fn path_given(runtime: &str, version: &str, env: &[(&str, &str)], path: &str) -> String {
    let mut env = env.to_vec();
    env.push(("PATH", path));
    env_json(&["env", runtime, version, "--json"], &env)["PATH"].clone()
}

/// `env RUNTIME V` fails for each V of `missing`, naming V and the
/// available versions: the list starts with `available` and holds each of
/// `also`.
fn refuses_versions(
    runtime: &str,
    missing: &[&str],
    env: &[(&str, &str)],
    available: &str,
    also: &[&str],
) {
    for missing in missing {
        let err = fails(&["env", runtime, missing], env);
        assert!(
            err.contains(&format!(
                "runtime {runtime} has no version {missing} (available: {available}"
            )) && also.iter().all(|a| err.contains(a)),
            "{err}"
        );
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
    let base = [("RBENV_ROOT", root_s), ("HOME", home), ("PATH", BASE_PATH)];
    assert_eq!(
        versions("rbenv", &base),
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
    assert_eq!(
        path_given("rbenv", "3.1", &base[..2], &messy),
        format!("{shims}:{bin}:/usr/bin:/bin")
    );

    let missing = ["3.2", "1.9.4", "3.1.4.1", "9.9.9"];
    refuses_versions("rbenv", &missing, &base, "1.9", &["3.10.0"]);

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
    assert_eq!(versions("rbenv", &[("HOME", home)]), ["3.3", "3.3.0"]);
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
    let base = [("NVM_DIR", root_s), ("HOME", home), ("PATH", BASE_PATH)];
    assert_eq!(
        versions("nvm", &base),
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
    assert_eq!(
        path_given("nvm", "20", &base[..2], &messy),
        format!("{bin}:/usr/bin:/bin")
    );

    let missing = ["21", "2", "20.1.1", "1"];
    refuses_versions("nvm", &missing, &base, "0.10.48, 9.11.2,", &[]);
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
        let out = pm_runtime(&shell_exec(&["sh", "-c", &format!("exit {code}")]), &env);
        assert_eq!(out.status.code(), Some(code), "{}", describe("exec", &out));
    }
    let argv_file = dir.join("argv");
    let args = ["a b", "", "$MARK", "'q'", "-x", "--json", "--", "ü\n"];
    let mut cmd = shell_exec(&[
        "python3",
        "-c",
        "import json, os, sys; open(sys.argv[1], 'w').write(json.dumps([sys.argv[2:], os.environ.get('MARK')]))",
        argv_file.to_str().unwrap(),
    ]);
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
    exited_with(&out, 143, "exec");
    let out = pm_runtime(&["exec", "shell", "1", "--", "/nonexistent/cmd"], &env);
    exited_with(&out, 127, "exec");
    // The runtime's environment is used, and an unknown version refused.
    let out = pm_runtime(&["exec", "shell", "2", "--", "true"], &env);
    exited_with(&out, 1, "exec");
}

#[test]
fn exec_forwards_sigterm() {
    use std::io::BufRead;
    let path = std::env::var("PATH").unwrap();
    let child = Command::new(RUNTIME)
        .args(shell_exec(&[
            "python3",
            "-c",
            "import signal, sys, time\n\
             signal.signal(signal.SIGTERM, lambda *a: sys.exit(42))\n\
             print('ready', flush=True)\n\
             time.sleep(60)",
        ]))
        .env_clear()
        .env("PATH", &path)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut guard = ChildGuard(child);
    let mut line = String::new();
    std::io::BufReader::new(guard.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "ready\n");
    guard.signal(nix::sys::signal::Signal::SIGTERM);
    let status = guard.wait(Duration::from_secs(10));
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
    let pid = pid_in(&dir.join("hang.pid"), Duration::from_secs(5));
    wait_until(Duration::from_secs(5), "the plugin's group to die", || {
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
    exited_with(&out, 1, "list");
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
        exited_with(&out, 1, name);
        String::from_utf8(out.stdout).unwrap()
    };
    let started = Instant::now();
    let report = check("hang");
    // One time limit, not one per mode: the modes after the hang are
    // skipped, naming it.
    assert!(started.elapsed() < Duration::from_secs(5), "{report}");
    assert!(
        report.contains("versions: FAILED: runtime plugin hang"),
        "{report}"
    );
    assert!(report.contains("timed out after 0.5 s"), "{report}");
    for mode in ["environment", "start", "status", "stop"] {
        assert!(
            report.contains(&format!("{mode}: skipped: the plugin hung in versions")),
            "{report}"
        );
    }
    assert!(report.contains("1 problem"), "{report}");
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
