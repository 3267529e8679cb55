//! `pm-supervisor`: the real binary against fake hearts on 127.0.0.1:0
//! (a [`Recorder`] each).

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};

use crate::util::ports::dead_port;
use crate::util::recorder::Recorder;
use crate::util::{alive, pid_in, wait_until, ChildGuard, Dir, KillOnDrop, SUPERVISOR};

const LONG: Duration = Duration::from_secs(20);

/// The code in a report URL `/instance/exit/ID/KEY/CODE`.
fn code_in(url: &str) -> (String, i32) {
    let parts: Vec<&str> = url.split('/').collect();
    assert_eq!(parts.len(), 6, "bad report URL {url}");
    (parts[3].to_owned(), parts[5].parse().unwrap())
}

/// One supervised instance: its scratch directory and control file.
struct Instance {
    dir: Dir,
    id: String,
    control: Value,
}

impl Instance {
    fn new(name: &str, command: Value, port: u16) -> Instance {
        let dir = Dir::new(&format!("supervisor-{name}"));
        let id = name.replace('_', "-");
        let control = json!({
            "instance_id": id,
            "command": command,
            "cwd": dir.path,
            "environment": {"PATH": "/usr/bin:/bin", "DIR": dir.path},
            "exit_key": "key-123",
            "port": port,
            "log_file": dir.join("log"),
            "pidfile": dir.join("run/sup.pid"),
            "startflagfile": dir.join("run/sup.started"),
            "stop_timeout": 10,
            "report_deadline": 10,
        });
        fs::create_dir_all(dir.join("run")).unwrap();
        Instance { dir, id, control }
    }

    /// An instance running `/bin/sh -c SCRIPT`; `$DIR` is its directory.
    fn sh(name: &str, script: &str, port: u16) -> Instance {
        Instance::new(name, json!(["/bin/sh", "-c", script]), port)
    }

    fn set(&mut self, key: &str, value: Value) -> &mut Instance {
        self.control[key] = value;
        self
    }

    fn control_path(&self) -> PathBuf {
        self.dir.join("control.json")
    }

    fn pidfile(&self) -> PathBuf {
        self.dir.join("run/sup.pid")
    }

    fn startflag(&self) -> PathBuf {
        self.dir.join("run/sup.started")
    }

    fn exited(&self) -> PathBuf {
        self.dir.join(format!("run/{}.exited", self.id))
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }

    /// Waits for the command's pid in `$DIR/app.pid`; the pid, and a
    /// guard that kills its process group.
    fn app(&self) -> (i32, KillOnDrop) {
        let pid = self.pid_in("app.pid");
        (pid, KillOnDrop { pid, group: true })
    }

    /// Waits for `$DIR/NAME` to hold a pid and returns it.
    fn pid_in(&self, name: &str) -> i32 {
        pid_in(&self.dir.join(name), LONG)
    }

    /// Runs `pm-supervisor --detach` on this control file; its output.
    fn detach(&self) -> std::process::Output {
        let path = self.write_control();
        Command::new(SUPERVISOR)
            .arg("--detach")
            .arg(&path)
            .stderr(Stdio::piped())
            .output()
            .unwrap()
    }

    fn write_control(&self) -> PathBuf {
        let path = self.control_path();
        fs::write(&path, serde_json::to_vec(&self.control).unwrap()).unwrap();
        path
    }

    /// Starts a supervisor in the foreground (its child, for the test).
    fn start(&self) -> ChildGuard {
        let path = self.write_control();
        ChildGuard(
            Command::new(SUPERVISOR)
                .arg(path)
                .stdin(Stdio::null())
                .spawn()
                .unwrap(),
        )
    }
}

/// A command that writes its pid to `$DIR/app.pid` and sleeps.
const SLEEPER: &str = "echo $$ > \"$DIR/app.pid\"; exec sleep 60";

/// The codes of the next `n` reports, by instance id.
fn reports(heart: &Recorder, n: usize) -> BTreeMap<String, i32> {
    (0..n).map(|_| code_in(&heart.next(LONG).url)).collect()
}

/// Waits for a foreground supervisor to exit 0 with `Completed with
/// result code RESULT` in its log.
fn assert_completed(inst: &Instance, sup: &mut ChildGuard, result: &str) {
    assert_eq!(sup.wait(LONG).code(), Some(0), "{}", inst.log());
    let log = inst.log();
    assert!(
        log.contains(&format!("Completed with result code {result}\n")),
        "{log}"
    );
}

fn sigterm(pid: i32) {
    kill(Pid::from_raw(pid), Signal::SIGTERM).unwrap();
}

#[test]
fn runs_logs_ignores_sighup_and_stops_on_sigterm() {
    let heart = Recorder::start(200);
    let inst = Instance::sh(
        "basic",
        "echo to-stdout; echo to-stderr >&2; echo $$ > \"$DIR/app.pid\"; exec sleep 60",
        heart.port,
    );
    let mut sup = inst.start();
    let (app, _app_guard) = inst.app();
    wait_until(LONG, "the startflag", || inst.startflag().exists());
    let pid: i32 = fs::read_to_string(inst.pidfile())
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(pid, sup.pid());
    wait_until(LONG, "output in the log", || {
        let log = inst.log();
        log.contains("to-stdout\n") && log.contains("to-stderr\n")
    });

    // Log lines are written at once, not when the supervisor ends.
    assert!(inst
        .log()
        .contains(&format!("INFO Started process {app}\n")));

    for (signal, name) in [(Signal::SIGHUP, "SIGHUP"), (Signal::SIGINT, "SIGINT")] {
        kill(Pid::from_raw(sup.pid()), signal).unwrap();
        wait_until(LONG, "the signal in the log", || {
            inst.log().contains(&format!("Ignored {name}"))
        });
        assert!(alive(app), "{name} must change nothing");
    }
    assert!(sup.0.try_wait().unwrap().is_none());

    sigterm(sup.pid());
    let hit = heart.next(LONG);
    assert_eq!(hit.method, "POST");
    assert_eq!(hit.url, "/instance/exit/basic/key-123/0");
    let status = sup.wait(LONG);
    assert_eq!(status.code(), Some(0), "{}", inst.log());
    assert!(!alive(app));
    let log = inst.log();
    assert!(log.contains("Completed with result code -15"), "{log}");
    assert!(!inst.pidfile().exists());
    assert!(!inst.control_path().exists());
    for line in log.lines().filter(|l| l.contains(" INFO ")) {
        let stamp = line.split(' ').next().unwrap();
        assert_eq!(stamp.len(), 27, "{line}");
        assert!(
            stamp.ends_with('Z') && stamp.as_bytes()[10] == b'T',
            "{line}"
        );
    }
}

#[test]
fn detached_supervisor_is_found_by_its_pidfile_and_stops() {
    let heart = Recorder::start(200);
    let inst = Instance::sh("detached", SLEEPER, heart.port);
    let path = inst.control_path();
    let start = Instant::now();
    let out = inst.detach();
    assert!(out.status.success(), "{out:?}");
    assert!(start.elapsed() < Duration::from_secs(5));
    wait_until(LONG, "the startflag", || inst.startflag().exists());
    let pid = pid_in(&inst.pidfile(), LONG);
    let _guard = KillOnDrop { pid, group: false };
    let (app, _app_guard) = inst.app();
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
    assert!(args[0].ends_with(b"pm-supervisor"), "{args:?}");
    assert!(args.contains(&path.as_os_str().as_encoded_bytes()));
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    assert_eq!(fields[3], pid.to_string(), "a session of its own: {stat}");

    sigterm(pid);
    let hit = heart.next(LONG);
    assert_eq!(hit.url, "/instance/exit/detached/key-123/0");
    wait_until(LONG, "the supervisor to go", || !alive(pid));
    assert!(!alive(app));
    assert!(inst.log().contains("Completed with result code -15"));
}

#[test]
fn missing_command_is_127_and_not_executable_is_126() {
    let heart = Recorder::start(200);
    let missing = Instance::new("missing", json!(["no-such-command", "x"]), heart.port);
    let mut sup = missing.start();
    let hit = heart.next(LONG);
    assert_eq!(hit.url, "/instance/exit/missing/key-123/127");
    assert_eq!(sup.wait(LONG).code(), Some(0));
    let log = missing.log();
    assert!(
        log.contains("Failed to start up: No such file or directory"),
        "{log}"
    );
    assert!(missing.startflag().exists());
    assert!(!missing.pidfile().exists());

    let mut plain = Instance::new("plain", json!("placeholder"), heart.port);
    let file = plain.dir.write("not-executable", "echo hi\n");
    plain.set("command", json!([file]));
    let mut sup = plain.start();
    let hit = heart.next(LONG);
    assert_eq!(hit.url, "/instance/exit/plain/key-123/126");
    assert_eq!(sup.wait(LONG).code(), Some(0));
    assert!(plain
        .log()
        .contains("Failed to start up: Permission denied"));

    let mut nowhere = Instance::sh("nowhere", "exit 0", heart.port);
    nowhere.set("cwd", json!("/no/such/directory"));
    let mut sup = nowhere.start();
    assert_eq!(heart.next(LONG).url, "/instance/exit/nowhere/key-123/127");
    assert_eq!(sup.wait(LONG).code(), Some(0));
    let log = nowhere.log();
    assert!(
        log.contains("Unable to use the working directory /no/such/directory"),
        "{log}"
    );
}

#[test]
fn every_exit_status_is_reported_exactly() {
    let heart = Recorder::start(200);
    for batch in (0..256).collect::<Vec<i32>>().chunks(32) {
        let mut running = Vec::new();
        for &code in batch {
            let inst = Instance::new(
                &format!("code-{code}"),
                json!(format!("/bin/sh -c 'exit {code}'")),
                heart.port,
            );
            let sup = inst.start();
            running.push((inst, sup));
        }
        let got = reports(&heart, batch.len());
        for (inst, mut sup) in running {
            let expected: i32 = inst.id.trim_start_matches("code-").parse().unwrap();
            assert_eq!(got.get(&inst.id), Some(&expected), "{}", inst.log());
            assert_completed(&inst, &mut sup, &expected.to_string());
        }
    }
}

#[test]
fn unasked_signals_report_128_plus_n() {
    let heart = Recorder::start(200);
    let signals = [Signal::SIGKILL, Signal::SIGSEGV, Signal::SIGUSR1];
    let mut running = Vec::new();
    for signal in signals {
        let inst = Instance::sh(&format!("sig-{}", signal as i32), SLEEPER, heart.port);
        let sup = inst.start();
        let app = inst.pid_in("app.pid");
        kill(Pid::from_raw(app), signal).unwrap();
        running.push((signal, inst, sup));
    }
    let got = reports(&heart, signals.len());
    for (signal, inst, mut sup) in running {
        let n = signal as i32;
        assert_eq!(got.get(&inst.id), Some(&(128 + n)));
        assert_completed(&inst, &mut sup, &format!("-{n}"));
    }
}

#[test]
fn sigterm_ignoring_command_is_killed_after_stop_timeout() {
    let heart = Recorder::start(200);
    let mut inst = Instance::sh(
        "stubborn",
        "trap '' TERM; echo $$ > \"$DIR/app.pid\"; exec sleep 60",
        heart.port,
    );
    inst.set("stop_timeout", json!(0.5));
    let mut sup = inst.start();
    let (_, _guard) = inst.app();
    let sent = Instant::now();
    sigterm(sup.pid());
    let hit = heart.next(LONG);
    let took = hit.at - sent;
    assert_eq!(hit.url, "/instance/exit/stubborn/key-123/0");
    assert!(took >= Duration::from_millis(500), "{took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert_eq!(sup.wait(LONG).code(), Some(0));
    let log = inst.log();
    assert!(log.contains("sending SIGKILL"), "{log}");
    assert!(log.contains("Completed with result code -9"), "{log}");
}

#[test]
fn prompt_command_is_reported_long_before_stop_timeout() {
    let heart = Recorder::start(200);
    let mut inst = Instance::sh("prompt", SLEEPER, heart.port);
    inst.set("stop_timeout", json!(30));
    let mut sup = inst.start();
    inst.pid_in("app.pid");
    let sent = Instant::now();
    sigterm(sup.pid());
    let hit = heart.next(LONG);
    let took = hit.at - sent;
    assert_eq!(hit.url, "/instance/exit/prompt/key-123/0");
    // A tenth of the timeout: generous for a loaded CI machine, far from
    // what waiting for the timeout would take. Typically ~1 ms.
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert_eq!(sup.wait(LONG).code(), Some(0));
}

/// A command that leaves a grandchild in its group and a daemon in a
/// session of its own, and records their pids.
const FORKING: &str = "sleep 60 & echo $! > \"$DIR/grandchild.pid\"; \
    ( setsid sh -c 'echo $$ > \"$DIR/daemon.pid\"; exec sleep 60' & ); \
    echo $$ > \"$DIR/app.pid\"; ";

#[test]
fn stop_ends_grandchildren_and_daemons() {
    let heart = Recorder::start(200);
    let inst = Instance::sh("forks", &format!("{FORKING} exec sleep 60"), heart.port);
    let mut sup = inst.start();
    let pids = ["app.pid", "grandchild.pid", "daemon.pid"].map(|f| inst.pid_in(f));
    let _guards = pids.map(|pid| KillOnDrop { pid, group: false });
    assert!(pids.iter().all(|&p| alive(p)));
    sigterm(sup.pid());
    assert_eq!(heart.next(LONG).url, "/instance/exit/forks/key-123/0");
    assert_eq!(sup.wait(LONG).code(), Some(0));
    for pid in pids {
        assert!(!alive(pid), "{pid} survived: {}", inst.log());
    }
}

#[test]
fn descendants_are_ended_when_the_command_exits_by_itself() {
    let heart = Recorder::start(200);
    let inst = Instance::sh(
        "leftovers",
        &format!("{FORKING} while [ ! -s \"$DIR/daemon.pid\" ]; do sleep 0.01; done; exit 7"),
        heart.port,
    );
    let mut sup = inst.start();
    assert_eq!(heart.next(LONG).url, "/instance/exit/leftovers/key-123/7");
    assert_eq!(sup.wait(LONG).code(), Some(0));
    for file in ["app.pid", "grandchild.pid", "daemon.pid"] {
        let pid = inst.pid_in(file);
        let _guard = KillOnDrop { pid, group: false };
        assert!(!alive(pid), "{file} {pid} survived: {}", inst.log());
    }
    assert!(inst.log().contains("leftover process"));
}

#[test]
fn command_dies_with_a_killed_supervisor() {
    let inst = Instance::sh("orphan", SLEEPER, dead_port());
    let mut sup = inst.start();
    let (app, _guard) = inst.app();
    kill(Pid::from_raw(sup.pid()), Signal::SIGKILL).unwrap();
    assert_eq!(sup.wait(LONG).signal(), Some(9));
    wait_until(LONG, "the command to die with its supervisor", || {
        !alive(app)
    });
}

#[test]
fn refused_report_is_final() {
    let heart = Recorder::start(403);
    let inst = Instance::sh("refused", "exit 5", heart.port);
    let mut sup = inst.start();
    assert_eq!(heart.next(LONG).url, "/instance/exit/refused/key-123/5");
    assert_eq!(sup.wait(LONG).code(), Some(4));
    assert!(heart.try_next().is_none(), "a 4xx must not be retried");
    assert!(!inst.exited().exists());
    assert!(inst.log().contains("HTTP 403"));
}

#[test]
fn report_url_replaces_the_port() {
    let heart = Recorder::start(204);
    let mut inst = Instance::sh("by-url", "exit 9", dead_port());
    inst.set(
        "report_url",
        json!(format!("http://127.0.0.1:{}/", heart.port)),
    );
    let mut sup = inst.start();
    let hit = heart.next(LONG);
    assert_eq!(hit.url, "/instance/exit/by-url/key-123/9");
    assert_eq!(sup.wait(LONG).code(), Some(0));
}

#[test]
fn undelivered_report_is_recorded_in_the_exited_file() {
    let mut inst = Instance::sh("no-heart", "exit 42", dead_port());
    inst.set("report_deadline", json!(0.3));
    let mut sup = inst.start();
    assert_eq!(sup.wait(LONG).code(), Some(0), "{}", inst.log());
    assert_eq!(fs::read_to_string(inst.exited()).unwrap(), "42\n");
    let names: Vec<String> = fs::read_dir(inst.dir.join("run"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(
        names.iter().all(|n| !n.ends_with(".new")),
        "temporary file left: {names:?}"
    );
    assert!(inst.log().contains("Recorded code 42"));
}

/// A tiny linear congruential generator (Knuth's MMIX constants).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
}

#[test]
fn sigterm_at_random_moments_never_hangs_or_leaks() {
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("sigterm_at_random_moments: LCG seed {seed}");
    let mut rng = Lcg(seed);
    let heart = Recorder::start(200);
    let reports = Arc::new(Mutex::new(BTreeMap::new()));
    for round in 0..50 {
        let delay = Duration::from_micros(rng.next() % 3000);
        let inst = Instance::sh(&format!("race-{round}"), SLEEPER, heart.port);
        let mut sup = inst.start();
        // A deliberate, random delay: the point is to hit every moment.
        thread::sleep(delay);
        sigterm(sup.pid());
        let status = sup.wait(LONG);
        if let Some(signal) = status.signal() {
            // Killed before the handler was installed: then nothing ran.
            assert_eq!(signal, 15, "round {round}, delay {delay:?}");
            assert!(!inst.startflag().exists(), "round {round}");
        } else {
            assert_eq!(status.code(), Some(0), "round {round}: {}", inst.log());
            let (id, code) = code_in(&heart.next(LONG).url);
            reports.lock().unwrap().insert(id.clone(), code);
            assert_eq!(id, inst.id);
            assert_eq!(code, 0, "round {round}: {}", inst.log());
        }
        if let Ok(text) = fs::read_to_string(inst.dir.join("app.pid")) {
            if let Ok(app) = text.trim().parse() {
                let _guard = KillOnDrop {
                    pid: app,
                    group: true,
                };
                assert!(!alive(app), "round {round}: application left running");
            }
        }
    }
}

#[test]
fn command_starts_clean() {
    let heart = Recorder::start(200);
    let inst = Instance::sh("clean", SLEEPER, heart.port);
    let path = inst.write_control();
    // The caller leaks descriptor 7 into the supervisor on purpose.
    let mut sup = ChildGuard(
        Command::new("/bin/sh")
            .arg("-c")
            .arg("exec 7</dev/null; exec \"$0\" \"$1\"")
            .arg(SUPERVISOR)
            .arg(&path)
            .spawn()
            .unwrap(),
    );
    let (app, _guard) = inst.app();
    wait_until(LONG, "the command to be sleep", || {
        fs::read(format!("/proc/{app}/cmdline")).is_ok_and(|c| c.starts_with(b"sleep\0"))
    });
    let status = fs::read_to_string(format!("/proc/{app}/status")).unwrap();
    for field in ["SigBlk", "SigIgn"] {
        let line = status.lines().find(|l| l.starts_with(field)).unwrap();
        assert_eq!(line, format!("{field}:\t0000000000000000"));
    }
    // sleep itself may open a locale file for a moment while it starts;
    // a descriptor that leaked from the supervisor stays, and fails this.
    let fds = || {
        let mut fds: Vec<String> = fs::read_dir(format!("/proc/{app}/fd"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        fds.sort();
        fds
    };
    let mut open = fds();
    for _ in 0..250 {
        if open == ["0", "1", "2"] {
            break;
        }
        thread::sleep(Duration::from_millis(20));
        open = fds();
    }
    assert_eq!(open, ["0", "1", "2"], "only stdin, stdout and stderr");
    assert_eq!(
        fs::read_link(format!("/proc/{app}/fd/0")).unwrap(),
        PathBuf::from("/dev/null")
    );
    // stdout and stderr are one pipe, which the supervisor copies into
    // the log.
    let out = fs::read_link(format!("/proc/{app}/fd/1")).unwrap();
    assert!(out.to_string_lossy().starts_with("pipe:["), "{out:?}");
    assert_eq!(fs::read_link(format!("/proc/{app}/fd/2")).unwrap(), out);
    let env = fs::read(format!("/proc/{app}/environ")).unwrap();
    let env = String::from_utf8_lossy(&env);
    assert!(env.contains("DIR="), "{env}");
    assert!(!env.contains("CARGO"), "nothing inherited: {env}");
    sigterm(sup.pid());
    assert_eq!(heart.next(LONG).url, "/instance/exit/clean/key-123/0");
    assert_eq!(sup.wait(LONG).code(), Some(0));
}

#[test]
#[ignore = "needs root"]
fn runs_as_the_given_user() {
    let heart = Recorder::start(200);
    let mut inst = Instance::sh("as-user", "echo $$ > app.pid; exec sleep 60", heart.port);
    inst.set("user", json!("nobody"));
    // The command writes app.pid into its cwd, as nobody.
    fs::set_permissions(
        &inst.dir.path,
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let mut sup = inst.start();
    let (app, _guard) = inst.app();
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    let name = std::ffi::CString::new("nobody").unwrap();
    let mut groups: Vec<u32> = nix::unistd::getgrouplist(&name, nobody.gid)
        .unwrap()
        .iter()
        .map(|g| g.as_raw())
        .collect();
    groups.sort();
    groups.dedup();
    let status = fs::read_to_string(format!("/proc/{app}/status")).unwrap();
    let field = |name: &str| -> Vec<u32> {
        let line = status.lines().find(|l| l.starts_with(name)).unwrap();
        let mut ids: Vec<u32> = line[name.len()..]
            .split_whitespace()
            .map(|v| v.parse().unwrap())
            .collect();
        ids.sort();
        ids.dedup();
        ids
    };
    assert_eq!(field("Uid:"), [nobody.uid.as_raw()], "{status}");
    assert_eq!(field("Gid:"), [nobody.gid.as_raw()], "{status}");
    assert_eq!(field("Groups:"), groups, "{status}");
    sigterm(sup.pid());
    assert_eq!(heart.next(LONG).url, "/instance/exit/as-user/key-123/0");
    assert_eq!(sup.wait(LONG).code(), Some(0));

    let mut bad = Instance::sh("bad-user", "exit 0", heart.port);
    bad.set("user", json!("no-such-user-pm"));
    let out = Command::new(SUPERVISOR)
        .arg(bad.write_control())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unknown user no-such-user-pm"), "{stderr}");
}

/// Runs the supervisor on `path` and checks the exit code and the single
/// stderr line.
fn refuses(args: &[&std::ffi::OsStr], code: i32, needle: &str) {
    let out = Command::new(SUPERVISOR).args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{args:?}: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
    assert!(stderr.starts_with("pm-supervisor: fatal: "), "{stderr}");
    assert!(stderr.contains(needle), "{args:?}: {stderr}");
}

#[test]
fn bad_control_files_are_refused_with_one_line() {
    let inst = Instance::sh("bad", "exit 0", dead_port());
    let dir = &inst.dir;
    let missing = dir.join("missing.json");
    refuses(&[missing.as_os_str()], 1, "No such file or directory");
    refuses(
        &["--detach".as_ref(), missing.as_os_str()],
        1,
        "No such file or directory",
    );
    refuses(&[], 1, "no control file");
    refuses(&[dir.path.as_os_str()], 2, "Is a directory");
    let junk = dir.write("junk.json", "{not json");
    refuses(&[junk.as_os_str()], 3, "invalid control file");
    let mut control = inst.control.clone();
    control.as_object_mut().unwrap().remove("command");
    let no_command = dir.write("no-command.json", control.to_string());
    refuses(&[no_command.as_os_str()], 3, "missing field `command`");
    let mut control = inst.control.clone();
    control["instance_id"] = json!("../etc");
    let bad_id = dir.write("bad-id.json", control.to_string());
    refuses(&[bad_id.as_os_str()], 3, "invalid instance id \"../etc\"");
    refuses(
        &["--detach".as_ref(), bad_id.as_os_str()],
        3,
        "invalid instance id \"../etc\"",
    );
    refuses(&["--bogus".as_ref()], 1, "--bogus");
    assert!(!dir.join("log").exists(), "nothing may run");
}

#[test]
fn help_names_every_option() {
    let out = Command::new(SUPERVISOR).arg("--help").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    for option in ["--detach", "--help", "--version"] {
        assert!(text.contains(option), "{option} missing: {text}");
    }
}

/// Pids whose command line is exactly `args`.
fn pids_running(args: &[&str]) -> Vec<i32> {
    let want: Vec<u8> = args
        .iter()
        .flat_map(|a| [a.as_bytes(), b"\0"].concat())
        .collect();
    fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == want))
        .collect()
}

#[test]
fn a_supervisor_that_cannot_record_itself_ends_its_command_and_fails() {
    let heart = Recorder::start(200);
    let marker = format!("3599.{}", std::process::id());
    let inst = Instance::sh("nopid", &format!("exec sleep {marker}"), heart.port);
    // The pidfile's temporary file cannot be created: a full disk, an I/O
    // error, simulated.
    fs::create_dir_all(inst.dir.join("run/sup.pid.new")).unwrap();
    let out = inst.detach();
    let leaked = pids_running(&["sleep", &marker]);
    for pid in &leaked {
        let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
    }
    assert_eq!(out.status.code(), Some(111), "{out:?}");
    assert!(
        leaked.is_empty(),
        "the command was left running: {leaked:?}"
    );
    assert!(!inst.pidfile().exists());
    wait_until(LONG, "the log line", || {
        inst.log().contains("Unable to record the supervisor")
    });
}
