//! `pm-supervisor`'s instance log: the command's output copied through a
//! pipe into a size-rotated file, by whole lines, with the supervisor's
//! own lines between them.

use std::collections::BTreeMap;
use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};

use crate::util::{alive, wait_for, wait_until, ChildGuard, Dir, KillOnDrop, SUPERVISOR};

const LONG: Duration = Duration::from_secs(60);

/// A port on which nothing listens: the report fails at once and the code
/// is recorded, so a supervisor ends without a heart.
fn dead_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// Writes the control file of `/bin/sh -c SCRIPT` in `dir` (its cwd),
/// with the fields of `extra` added, and returns its path.
fn control(dir: &Dir, script: &str, extra: Value) -> PathBuf {
    let mut doc = json!({
        "instance_id": "logs",
        "command": ["/bin/sh", "-c", script],
        "cwd": dir.path,
        "environment": {"PATH": "/usr/bin:/bin"},
        "exit_key": "k",
        "port": dead_port(),
        "log_file": dir.join("log"),
        "pidfile": dir.join("sup.pid"),
        "startflagfile": dir.join("sup.started"),
        "stop_timeout": 10,
        "report_deadline": 0,
    });
    for (key, value) in extra.as_object().unwrap() {
        doc[key] = value.clone();
    }
    dir.write("control.json", doc.to_string())
}

fn start(control: &Path) -> ChildGuard {
    ChildGuard(
        Command::new(SUPERVISOR)
            .arg(control)
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

fn exit_of(child: &mut ChildGuard) -> ExitStatus {
    wait_for(LONG, "the supervisor to exit", || {
        child.0.try_wait().unwrap()
    })
}

/// The log's files, oldest first, as (path, contents).
fn files(dir: &Dir) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for n in (1..=100).rev() {
        let path = dir.join(format!("log.{n}"));
        if let Ok(bytes) = fs::read(&path) {
            out.push((path, bytes));
        }
    }
    let path = dir.join("log");
    let bytes = fs::read(&path).unwrap();
    out.push((path, bytes));
    out
}

/// True for a supervisor line: `RFC3339 LEVEL message\n`.
fn is_event(line: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(line) else {
        return false;
    };
    let (stamp, rest) = text.split_at(text.find(' ').unwrap_or(0));
    stamp.len() == 27
        && stamp.as_bytes()[10] == b'T'
        && stamp.ends_with('Z')
        && ["INFO ", "WARNING ", "ERROR "]
            .iter()
            .any(|level| rest[1..].starts_with(level))
        && text.ends_with('\n')
}

#[test]
fn fifty_megabytes_leave_four_bounded_files_of_whole_lines() {
    const LINES: usize = 500_000;
    const LINE: usize = 100;
    const MAX: usize = 1 << 20;
    let dir = Dir::new("logs-fifty");
    // 50 MB of numbered 100-byte lines, in large writes that end
    // anywhere in a line.
    let writer = format!(
        "import sys\n\
         for start in range(0, {LINES}, 5000):\n\
         \x20   sys.stdout.write(''.join('%09d %s\\n' % (i, 'x' * 89) \
                for i in range(start, min({LINES}, start + 5000))))\n"
    );
    let path = control(
        &dir,
        "exec python3 -c \"$WRITER\"",
        json!({"log_max_size": "1M", "log_keep": 3, "environment": {
            "PATH": "/usr/bin:/bin", "WRITER": writer}}),
    );
    let mut sup = start(&path);
    assert_eq!(exit_of(&mut sup).code(), Some(0));

    let files = files(&dir);
    let names: Vec<String> = files
        .iter()
        .map(|(p, _)| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["log.3", "log.2", "log.1", "log"]);
    let mut numbers = Vec::new();
    let mut events = Vec::new();
    for (path, bytes) in &files {
        assert!(
            bytes.len() <= MAX,
            "{} has {} bytes",
            path.display(),
            bytes.len()
        );
        assert!(
            bytes.ends_with(b"\n"),
            "{} ends inside a line",
            path.display()
        );
        for line in bytes.split_inclusive(|&b| b == b'\n') {
            let app = line.len() == LINE
                && line[..9].iter().all(u8::is_ascii_digit)
                && line[9] == b' '
                && line[10..99].iter().all(|&b| b == b'x');
            if app {
                numbers.push(
                    std::str::from_utf8(&line[..9])
                        .unwrap()
                        .parse::<usize>()
                        .unwrap(),
                );
            } else {
                assert!(
                    is_event(line),
                    "{}: a line split or mixed: {:?}",
                    path.display(),
                    String::from_utf8_lossy(line)
                );
                events.push(String::from_utf8_lossy(line).into_owned());
            }
        }
    }
    // The newest lines, each exactly once, in order, up to the last.
    assert_eq!(numbers.last(), Some(&(LINES - 1)));
    for pair in numbers.windows(2) {
        assert_eq!(pair[1], pair[0] + 1, "a line lost or repeated");
    }
    // The last 3 MiB of output, less the room a rotation leaves at the
    // end of a full file (under one line each) and the supervisor's
    // closing lines, which take the place of as many output lines.
    let kept = numbers.len() * LINE;
    assert!(kept >= 3 * MAX - 1024, "only {kept} bytes of output kept");
    assert!(
        events
            .iter()
            .any(|e| e.contains(" INFO Completed with result code 0\n")),
        "{events:?}"
    );
}

/// The writer of the stdout/stderr test: `python3 -c WRITER TAG FD`
/// writes 5000 lines `TAG N LEN BODY`, each with one `write`.
const TAGGED_WRITER: &str = "
import os, sys
tag, fd = sys.argv[1], int(sys.argv[2])
for i in range(5000):
    body = tag * (i % 300)
    os.write(fd, ('%s %06d %d %s\\n' % (tag, i, len(body), body)).encode())
";

#[test]
fn stdout_and_stderr_lines_are_whole_and_the_supervisor_lines_are_there() {
    let dir = Dir::new("logs-streams");
    let path = control(
        &dir,
        "python3 -c \"$WRITER\" out 1 & python3 -c \"$WRITER\" err 2 & wait; \
         printf 'no newline at the end'",
        json!({"environment": {"PATH": "/usr/bin:/bin", "WRITER": TAGGED_WRITER}}),
    );
    let mut sup = start(&path);
    assert_eq!(exit_of(&mut sup).code(), Some(0));

    let all: Vec<u8> = files(&dir).into_iter().flat_map(|(_, b)| b).collect();
    let text = String::from_utf8(all).unwrap();
    let mut next: BTreeMap<&str, usize> = BTreeMap::new();
    let mut events = Vec::new();
    let mut last_output = 0;
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        offset += line.len();
        if is_event(line.as_bytes()) {
            events.push((offset, line));
            continue;
        }
        last_output = offset;
        if line == "no newline at the end\n" {
            continue;
        }
        let fields: Vec<&str> = line.trim_end_matches('\n').splitn(4, ' ').collect();
        assert_eq!(fields.len(), 4, "a line split or mixed: {line:?}");
        let (tag, n, len) = (fields[0], fields[1], fields[2]);
        assert!(tag == "out" || tag == "err", "{line:?}");
        let expected = next.entry(tag).or_insert(0);
        assert_eq!(n.parse::<usize>().unwrap(), *expected, "{line:?}");
        *expected += 1;
        assert_eq!(
            fields[3],
            tag.repeat(len.parse::<usize>().unwrap() / 3),
            "{line:?}"
        );
    }
    assert_eq!(next.get("out"), Some(&5000));
    assert_eq!(next.get("err"), Some(&5000));
    assert!(text.contains("\nno newline at the end\n"));
    let find = |needle: &str| {
        events
            .iter()
            .find(|(_, line)| line.contains(needle))
            .unwrap_or_else(|| panic!("no {needle:?} among {events:?}"))
            .0
    };
    find(" INFO Starting [\"/bin/sh\", \"-c\"");
    find(" INFO Started process ");
    // The command's last output is in the log before its end is.
    assert!(find(" INFO Completed with result code 0\n") > last_output);
}

#[test]
fn a_line_without_newline_is_written_while_the_command_runs() {
    let dir = Dir::new("logs-partial");
    let path = control(
        &dir,
        "echo $$ > app.pid; printf 'prompt> '; exec sleep 60",
        json!({}),
    );
    let mut sup = start(&path);
    let app = wait_for(LONG, "app.pid", || {
        fs::read_to_string(dir.join("app.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    });
    let _app = KillOnDrop {
        pid: app,
        group: true,
    };
    wait_until(LONG, "the unfinished line in the log", || {
        fs::read_to_string(dir.join("log")).is_ok_and(|log| log.contains("\nprompt> \n"))
    });
    assert!(alive(app), "written while the command still runs");
    kill(Pid::from_raw(sup.pid()), Signal::SIGTERM).unwrap();
    assert_eq!(exit_of(&mut sup).code(), Some(0));
}

#[test]
fn a_killed_supervisor_loses_no_written_line_and_blocks_no_writer() {
    let dir = Dir::new("logs-sigkill");
    // The command's background writer outlives it (no parent-death
    // signal); it must not block on the pipe once nobody reads it.
    let path = control(
        &dir,
        "echo before-kill; \
         (while echo spam; do sleep 0.01; done) & echo $! > writer.pid; \
         echo $$ > app.pid; exec sleep 60",
        json!({}),
    );
    let mut sup = start(&path);
    let pid_in = |name: &str| -> i32 {
        wait_for(LONG, name, || {
            fs::read_to_string(dir.join(name)).ok()?.trim().parse().ok()
        })
    };
    let app = pid_in("app.pid");
    let writer = pid_in("writer.pid");
    let _guards = [
        KillOnDrop {
            pid: app,
            group: true,
        },
        KillOnDrop {
            pid: writer,
            group: false,
        },
    ];
    wait_until(LONG, "output in the log", || {
        fs::read_to_string(dir.join("log")).is_ok_and(|log| log.contains("spam\n"))
    });
    kill(Pid::from_raw(sup.pid()), Signal::SIGKILL).unwrap();
    let _ = exit_of(&mut sup);
    wait_until(LONG, "the command to die with the supervisor", || {
        !alive(app)
    });
    wait_until(LONG, "the writer to end on the broken pipe", || {
        !alive(writer)
    });
    let log = fs::read_to_string(dir.join("log")).unwrap();
    assert!(log.contains("\nbefore-kill\n"), "{log}");
    for line in log.lines() {
        assert!(
            line == "before-kill" || line == "spam" || is_event(format!("{line}\n").as_bytes()),
            "{line:?}"
        );
    }
}

#[test]
fn bad_log_limits_make_the_control_file_invalid() {
    let dir = Dir::new("logs-limits");
    for (field, value, message) in [
        ("log_max_size", json!(1000), "1000 is out of range"),
        ("log_max_size", json!("10X"), "\"10X\" is not a size"),
        (
            "log_keep",
            json!(101),
            "101 is not a number of log files to keep",
        ),
    ] {
        let path = control(&dir, "exit 0", json!({ field: value }));
        let out = Command::new(SUPERVISOR).arg(&path).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{field}: {stderr}");
        assert!(stderr.contains(message), "{field}: {stderr}");
    }
    assert!(!dir.join("log").exists(), "nothing may run");
}
