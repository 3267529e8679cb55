//! Benchmark of `pm-supervisor` against the targets of SPEC §6.
//!
//! Run with `cargo bench --bench supervisor` (it measures
//! `target/release/pm-supervisor`, which cargo builds for the bench, and
//! `target/x86_64-unknown-linux-musl/release/pm-supervisor` when that has
//! been built with `cargo build --release --target
//! x86_64-unknown-linux-musl`). Set `PM_BENCH_RUNS` to change the number
//! of timed runs (default 50).
//!
//! What it reports, medians over the runs, state on tmpfs (`/dev/shm`):
//!
//! - memory of one supervisor, and of each of 100 running at once: RSS,
//!   PSS and USS (`Private_Clean + Private_Dirty`) from
//!   `/proc/PID/smaps_rollup`;
//! - launch → exec: from `spawn` of `pm-supervisor` (and of
//!   `pm-supervisor --detach`) to the first output of a static application
//!   (the musl `pm-supervisor --version`, or the gnu one if the musl build
//!   is missing), read from a FIFO that is the instance's log file. The
//!   same application spawned directly by the bench, its stdout on the
//!   FIFO, is the baseline: the difference is what the supervisor adds;
//! - SIGTERM → gone: from SIGTERM to the supervisor until the application
//!   is gone (the application, this bench binary in "app mode", holds a
//!   FIFO open and its end hangs up), until the exit report arrives
//!   at a fake heart (the tests' `Recorder`), and until the supervisor has
//!   exited;
//! - the same with 100 supervisors (of `sleep 3600`) sent SIGTERM at once:
//!   until the last report arrived and the last supervisor exited;
//! - the piped logger (`--log-pipe`, the managed Apache's): lines per
//!   second and MB/s of input through a pipe into a log rotated at 1 MiB,
//!   and the memory of each of 100 idle loggers that have logged 100
//!   lines.
//!
//! No peer init (tini, catatonit, dumb-init) is measured here: none sends
//! an exit report, so the figures of SPEC §6 compare with them by hand.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::sys::stat::Mode;
use nix::unistd::{mkfifo, Pid};
use serde_json::json;

#[path = "../tests/util/mod.rs"]
mod util;

use util::recorder::Recorder;
use util::{wait_until, Dir, SUPERVISOR};

/// Every wait in the bench is bounded by this.
const BOUND: Duration = Duration::from_secs(20);

const USAGE: &str = "usage: [PM_BENCH_RUNS=N] cargo bench --bench supervisor

Measures memory, launch and stop of pm-supervisor (the release build, and
the musl one when it is built), N timed runs per figure (default 50).";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--app") {
        app(&args[2]);
    }
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        return;
    }
    let runs: usize = std::env::var("PM_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let root = env!("CARGO_MANIFEST_DIR");
    let binaries = [
        ("gnu", PathBuf::from(SUPERVISOR)),
        (
            "musl",
            Path::new(root).join("target/x86_64-unknown-linux-musl/release/pm-supervisor"),
        ),
    ];
    let scratch = Dir::on_tmpfs("bench-supervisor");
    let bench = Bench {
        scratch: scratch.path.clone(),
        heart: Recorder::start(200),
        me: std::env::current_exe().expect("own executable"),
        counter: std::cell::Cell::new(0),
    };

    println!("pm-supervisor benchmark: {runs} timed runs per figure, medians, state on tmpfs");
    // The application of the launch figures: a static binary that writes
    // one line at once (the musl pm-supervisor's --version), or the gnu
    // one when the musl build is missing.
    let app = binaries
        .iter()
        .rev()
        .map(|(_, exe)| exe)
        .find(|exe| exe.is_file())
        .expect("a pm-supervisor binary")
        .clone();
    println!(
        "launch application: {} --version (static; its first output is the \"exec\" mark)",
        app.display()
    );
    for (name, exe) in &binaries {
        if !exe.is_file() {
            println!("\n[{name}] {} not built; skipped", exe.display());
            continue;
        }
        let size = fs::metadata(exe).map(|m| m.len()).unwrap_or(0);
        println!(
            "\n[{name}] {} ({size} bytes, {:.0} KiB)",
            exe.display(),
            size as f64 / 1024.0
        );
        for n in [1, 100] {
            let m = bench.memory(exe, n);
            println!(
                "memory, {n:>3} running: RSS {:.0} KiB, PSS {:.0} KiB, USS {:.0} KiB per supervisor",
                m.rss, m.pss, m.uss
            );
        }
        let launch = bench.launch(exe, &app, runs);
        println!(
            "launch → app output: {} direct (no supervisor), {} through pm-supervisor \
             (adds {}), {} through --detach (adds {})",
            ms(launch.direct),
            ms(launch.supervised),
            ms(launch.supervised.saturating_sub(launch.direct)),
            ms(launch.detached),
            ms(launch.detached.saturating_sub(launch.direct))
        );
        let stop = bench.stop(exe, runs);
        println!(
            "SIGTERM → app gone {}, → report at heart {}, → supervisor exited {}; \
             report after app exit {}",
            ms(stop.app_gone),
            ms(stop.reported),
            ms(stop.exited),
            ms(stop.report_after_exit)
        );
        let (reported, exited) = bench.stop_many(exe, 100, runs.clamp(1, 5));
        println!(
            "100 stopping at once: SIGTERM to all → last report at heart {}, → last supervisor exited {}",
            ms(reported),
            ms(exited)
        );
        let took = bench.log_pipe(exe, runs.clamp(1, 5));
        let secs = took.as_secs_f64();
        println!(
            "--log-pipe: {PIPE_LINES} lines of {PIPE_LINE} bytes in {}: {:.1} M lines/s, {:.0} MB/s \
             (stamped, rotated at 1 MiB)",
            ms(took),
            PIPE_LINES as f64 / secs / 1e6,
            (PIPE_LINES * PIPE_LINE) as f64 / secs / 1e6
        );
        let m = bench.log_pipe_memory(exe, 100);
        println!(
            "--log-pipe memory, 100 idle: RSS {:.0} KiB, PSS {:.0} KiB, USS {:.0} KiB per logger",
            m.rss, m.pss, m.uss
        );
    }
}

/// App mode: tell the bench we run, then idle until killed.
fn app(fifo: &str) -> ! {
    if let Ok(mut f) = OpenOptions::new().write(true).open(fifo) {
        let _ = f.write_all(b"x");
        // Keep the FIFO open: its hang-up tells the bench we are gone.
        loop {
            thread::park();
        }
    }
    std::process::exit(1)
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn median_f(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

struct Bench {
    scratch: PathBuf,
    /// The fake heart the supervisors report to.
    heart: Recorder,
    me: PathBuf,
    counter: std::cell::Cell<u32>,
}

/// One instance's files.
struct Instance {
    dir: PathBuf,
    control: PathBuf,
    fifo: PathBuf,
    startflag: PathBuf,
}

struct Memory {
    rss: f64,
    pss: f64,
    uss: f64,
}

struct Launch {
    direct: Duration,
    supervised: Duration,
    detached: Duration,
}

/// Untimed runs before each timed series.
const WARM_UP: usize = 3;

struct Stop {
    app_gone: Duration,
    reported: Duration,
    exited: Duration,
    report_after_exit: Duration,
}

impl Bench {
    /// Writes the control file of a new instance whose command is `argv`
    /// (`{fifo}` is replaced by the FIFO's path).
    fn instance(&self, argv: &[&str]) -> Instance {
        self.instance_with_log(argv, true)
    }

    /// Like [`Bench::instance`]; with `log_on_fifo` the FIFO is also the
    /// log file, so that the command's output arrives there.
    fn instance_with_log(&self, argv: &[&str], log_on_fifo: bool) -> Instance {
        let n = self.counter.get();
        self.counter.set(n + 1);
        let dir = self.scratch.join(format!("i{n}"));
        fs::create_dir_all(&dir).expect("create instance directory");
        let fifo = dir.join("fifo");
        let argv: Vec<String> = argv
            .iter()
            .map(|a| a.replace("{fifo}", &fifo.to_string_lossy()))
            .collect();
        let control = dir.join("control.json");
        let startflag = dir.join("started");
        let doc = json!({
            "instance_id": format!("bench-{n}"),
            "command": argv,
            "cwd": dir,
            "environment": {"PATH": "/usr/bin:/bin"},
            "exit_key": "k",
            "port": self.heart.port,
            "log_file": if log_on_fifo { fifo.clone() } else { dir.join("log") },
            "pidfile": dir.join("pid"),
            "startflagfile": startflag,
            "stop_timeout": 10,
            "report_deadline": 10,
        });
        fs::write(&control, doc.to_string()).expect("write control file");
        Instance {
            dir,
            control,
            fifo,
            startflag,
        }
    }

    /// Opens the FIFO's read end (non-blocking, so that the open returns
    /// before a writer exists).
    fn open_fifo(&self, inst: &Instance) -> File {
        mkfifo(&inst.fifo, Mode::from_bits_truncate(0o600)).expect("mkfifo");
        OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_NONBLOCK)
            .open(&inst.fifo)
            .expect("open FIFO")
    }

    fn app_argv(&self) -> [&str; 3] {
        [self.me.to_str().expect("UTF-8 path"), "--app", "{fifo}"]
    }

    /// Spawn → first output of the static application `app`: spawned
    /// directly (its stdout on the FIFO), through `exe`, and through `exe
    /// --detach` (the FIFO is then the log file). The three are
    /// interleaved run by run, so that the load of the machine weighs on
    /// them alike, after a few runs of warm-up.
    fn launch(&self, exe: &Path, app: &Path, runs: usize) -> Launch {
        let (mut direct, mut supervised, mut detached) = (Vec::new(), Vec::new(), Vec::new());
        for run in 0..runs + WARM_UP {
            let d = self.launch_direct(app);
            let s = self.launch_once(exe, app, false);
            let t = self.launch_once(exe, app, true);
            if run >= WARM_UP {
                direct.push(d);
                supervised.push(s);
                detached.push(t);
            }
        }
        Launch {
            direct: median(direct),
            supervised: median(supervised),
            detached: median(detached),
        }
    }

    fn launch_direct(&self, app: &Path) -> Duration {
        let inst = self.instance(&[]);
        let mut fifo = self.open_fifo(&inst);
        let writer = OpenOptions::new()
            .write(true)
            .open(&inst.fifo)
            .expect("open FIFO for writing");
        let start = Instant::now();
        let child = Command::new(app)
            .arg("--version")
            .stdin(Stdio::null())
            .stdout(writer)
            .spawn()
            .expect("spawn app");
        wait_text(&mut fifo, APP_OUTPUT);
        let took = start.elapsed();
        reap(child);
        let _ = fs::remove_dir_all(&inst.dir);
        took
    }

    fn launch_once(&self, exe: &Path, app: &Path, detach: bool) -> Duration {
        let app = app.to_str().expect("UTF-8 path");
        let inst = self.instance(&[app, "--version"]);
        let mut fifo = self.open_fifo(&inst);
        // A writer of our own, so that the detaching parent's check of
        // the log file (open, close) does not hang the FIFO up.
        let _keep = OpenOptions::new()
            .write(true)
            .open(&inst.fifo)
            .expect("open FIFO for writing");
        let mut cmd = Command::new(exe);
        if detach {
            cmd.arg("--detach");
        }
        cmd.arg(&inst.control).stdin(Stdio::null());
        let start = Instant::now();
        let child = cmd.spawn().expect("spawn pm-supervisor");
        wait_text(&mut fifo, APP_OUTPUT);
        let took = start.elapsed();
        let url = self.heart.next(BOUND).url;
        assert!(url.ends_with("/0"), "unexpected report {url}");
        reap(child);
        if detach {
            // The detached supervisor removes its pidfile last.
            let pidfile = inst.dir.join("pid");
            wait_until(BOUND, "the pidfile to go", || !pidfile.exists());
        }
        let _ = fs::remove_dir_all(&inst.dir);
        took
    }

    /// SIGTERM → app gone, report, supervisor exited.
    fn stop(&self, exe: &Path, runs: usize) -> Stop {
        let (mut gone, mut reported, mut exited, mut after) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for run in 0..runs + WARM_UP {
            let inst = self.instance_with_log(&self.app_argv(), false);
            let mut fifo = self.open_fifo(&inst);
            let child = Command::new(exe)
                .arg(&inst.control)
                .stdin(Stdio::null())
                .spawn()
                .expect("spawn pm-supervisor");
            let pid = child.id() as i32;
            wait_byte(&mut fifo);
            wait_until(BOUND, "the startflag", || inst.startflag.exists());
            let waiter = exit_waiter(child);
            let start = Instant::now();
            kill(Pid::from_raw(pid), Signal::SIGTERM).expect("SIGTERM");
            let t_gone = wait_hangup(&mut fifo);
            let report = self.heart.next(BOUND);
            let t_report = report.at;
            assert!(
                report.url.ends_with("/0"),
                "unexpected report {}",
                report.url
            );
            let t_exit = waiter.recv_timeout(BOUND).expect("supervisor did not exit");
            if run >= WARM_UP {
                gone.push(t_gone - start);
                reported.push(t_report - start);
                exited.push(t_exit - start);
                after.push(t_report.saturating_duration_since(t_gone));
            }
            let _ = fs::remove_dir_all(&inst.dir);
        }
        Stop {
            app_gone: median(gone),
            reported: median(reported),
            exited: median(exited),
            report_after_exit: median(after),
        }
    }

    /// `n` supervisors (of `sleep 3600`) sent SIGTERM at once: from the
    /// first signal to the last report at the heart and to the last
    /// supervisor exited; medians over `runs`.
    fn stop_many(&self, exe: &Path, n: usize, runs: usize) -> (Duration, Duration) {
        let (mut reported, mut exited) = (Vec::new(), Vec::new());
        for _ in 0..runs {
            let running = self.sleepers(exe, n);
            let pids: Vec<Pid> = running
                .iter()
                .map(|(_, c)| Pid::from_raw(c.id() as i32))
                .collect();
            let (dirs, waiters): (Vec<_>, Vec<_>) = running
                .into_iter()
                .map(|(inst, child)| (inst.dir, exit_waiter(child)))
                .unzip();
            let start = Instant::now();
            for pid in &pids {
                let _ = kill(*pid, Signal::SIGTERM);
            }
            let mut last_report = start;
            for _ in 0..n {
                last_report = last_report.max(self.heart.next(BOUND).at);
            }
            let last_exit = waiters
                .iter()
                .map(|w| w.recv_timeout(BOUND).expect("supervisor did not exit"))
                .max()
                .unwrap_or(start);
            reported.push(last_report - start);
            exited.push(last_exit - start);
            for dir in dirs {
                let _ = fs::remove_dir_all(dir);
            }
        }
        (median(reported), median(exited))
    }

    /// `n` supervisors of `sleep 3600` in the foreground, each past its
    /// startflag.
    fn sleepers(&self, exe: &Path, n: usize) -> Vec<(Instance, Child)> {
        let mut running = Vec::new();
        for _ in 0..n {
            let inst = self.instance_with_log(&["sleep", "3600"], false);
            let child = Command::new(exe)
                .arg(&inst.control)
                .stdin(Stdio::null())
                .spawn()
                .expect("spawn pm-supervisor");
            running.push((inst, child));
        }
        for (inst, _) in &running {
            wait_until(BOUND, "the startflag", || inst.startflag.exists());
        }
        running
    }

    /// Memory of each of `n` supervisors running at once.
    fn memory(&self, exe: &Path, n: usize) -> Memory {
        let running = self.sleepers(exe, n);
        let (mut rss, mut pss, mut uss) = (Vec::new(), Vec::new(), Vec::new());
        for (_, child) in &running {
            let (r, p, u) = memory_of(child.id());
            rss.push(r);
            pss.push(p);
            uss.push(u);
        }
        for (_, child) in &running {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        }
        for _ in 0..n {
            let _ = self.heart.next(BOUND);
        }
        for (inst, child) in running {
            reap(child);
            let _ = fs::remove_dir_all(&inst.dir);
        }
        Memory {
            rss: median_f(rss),
            pss: median_f(pss),
            uss: median_f(uss),
        }
    }
}

/// Lines a `--log-pipe` run copies, and the length of each.
const PIPE_LINES: usize = 500_000;
const PIPE_LINE: usize = 101;

/// `smaps_rollup` of `pid`: RSS, PSS and USS in KiB.
fn memory_of(pid: u32) -> (f64, f64, f64) {
    let rollup =
        fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).expect("read smaps_rollup");
    let field = |name: &str| -> f64 {
        rollup
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    (
        field("Rss:"),
        field("Pss:"),
        field("Private_Clean:") + field("Private_Dirty:"),
    )
}

impl Bench {
    /// A `--log-pipe` logger of `log` (1 MiB, 3 kept), its stdin a pipe.
    fn logger(&self, exe: &Path, log: &Path) -> Child {
        Command::new(exe)
            .args(["--log-pipe", "--max-size", "1M", "--keep", "3"])
            .arg(log)
            .stdin(Stdio::piped())
            .spawn()
            .expect("spawn pm-supervisor --log-pipe")
    }

    /// The median time of `runs` runs from the first write of
    /// [`PIPE_LINES`] lines into a logger's pipe until it has exited at
    /// the end of its input (everything written).
    fn log_pipe(&self, exe: &Path, runs: usize) -> Duration {
        let mut chunk = Vec::new();
        for n in 0..1000 {
            let mut line = format!("{n:09} ").into_bytes();
            line.resize(PIPE_LINE - 1, b'x');
            line.push(b'\n');
            chunk.extend_from_slice(&line);
        }
        let dir = self.scratch.join("log-pipe");
        let mut times = Vec::new();
        for _ in 0..runs {
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).expect("create log directory");
            let mut child = self.logger(exe, &dir.join("a.log"));
            let mut stdin = child.stdin.take().expect("stdin");
            let start = Instant::now();
            for _ in 0..PIPE_LINES / 1000 {
                stdin.write_all(&chunk).expect("write to the logger");
            }
            drop(stdin);
            let end = exit_waiter(child)
                .recv_timeout(BOUND)
                .expect("the logger to end");
            times.push(end - start);
        }
        let _ = fs::remove_dir_all(&dir);
        median(times)
    }

    /// Memory of each of `n` loggers, idle after 100 lines each.
    fn log_pipe_memory(&self, exe: &Path, n: usize) -> Memory {
        let dir = self.scratch.join("log-pipe-memory");
        fs::create_dir_all(&dir).expect("create log directory");
        let lines: Vec<u8> = (0..100)
            .flat_map(|i| format!("127.0.0.1 - - \"GET /{i} HTTP/1.1\" 200 3\n").into_bytes())
            .collect();
        let mut running = Vec::new();
        for i in 0..n {
            let log = dir.join(format!("{i}.log"));
            let mut child = self.logger(exe, &log);
            let mut stdin = child.stdin.take().expect("stdin");
            stdin.write_all(&lines).expect("write to the logger");
            running.push((child, stdin, log));
        }
        for (_, _, log) in &running {
            wait_until(BOUND, "the logger's lines", || {
                fs::read(log).is_ok_and(|t| t.iter().filter(|&&b| b == b'\n').count() == 100)
            });
        }
        let (mut rss, mut pss, mut uss) = (Vec::new(), Vec::new(), Vec::new());
        for (child, _, _) in &running {
            let (r, p, u) = memory_of(child.id());
            rss.push(r);
            pss.push(p);
            uss.push(u);
        }
        for (child, stdin, _) in running {
            drop(stdin);
            reap(child);
        }
        let _ = fs::remove_dir_all(&dir);
        Memory {
            rss: median_f(rss),
            pss: median_f(pss),
            uss: median_f(uss),
        }
    }
}

/// Reaps `child`, waiting at most [`BOUND`].
fn reap(child: Child) {
    let _ = exit_waiter(child).recv_timeout(BOUND);
}

/// Waits for `child` in a thread and sends the moment it exited.
fn exit_waiter(mut child: Child) -> Receiver<Instant> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = child.wait();
        let _ = tx.send(Instant::now());
    });
    rx
}

/// Polls `fd` for `events` until they come; panics after [`BOUND`].
fn poll_for(file: &File, events: PollFlags) -> PollFlags {
    let mut fds = [PollFd::new(file.as_fd(), events)];
    let timeout = PollTimeout::try_from(BOUND.as_millis() as i32).expect("timeout");
    match poll(&mut fds, timeout) {
        Ok(n) if n > 0 => fds[0].revents().unwrap_or(PollFlags::empty()),
        other => panic!("FIFO: no event within {BOUND:?}: {other:?}"),
    }
}

/// Waits for the application's first byte.
fn wait_byte(fifo: &mut File) {
    loop {
        let revents = poll_for(fifo, PollFlags::POLLIN);
        let mut byte = [0u8; 1];
        if revents.contains(PollFlags::POLLIN) && fifo.read(&mut byte).unwrap_or(0) == 1 {
            return;
        }
    }
}

/// What the static application writes first.
const APP_OUTPUT: &[u8] = b"pm-supervisor 0.";

/// Reads the FIFO until `needle` has arrived.
fn wait_text(fifo: &mut File, needle: &[u8]) {
    let mut seen = Vec::new();
    loop {
        let revents = poll_for(fifo, PollFlags::POLLIN);
        let mut buf = [0u8; 4096];
        match fifo.read(&mut buf) {
            Ok(n) if n > 0 => seen.extend_from_slice(&buf[..n]),
            _ if revents.contains(PollFlags::POLLHUP) => {
                panic!(
                    "FIFO closed before {:?}; it said: {}",
                    String::from_utf8_lossy(needle),
                    String::from_utf8_lossy(&seen)
                )
            }
            _ => {}
        }
        if seen.windows(needle.len()).any(|w| w == needle) {
            return;
        }
    }
}

/// Waits until the application's end of the FIFO hangs up.
fn wait_hangup(fifo: &mut File) -> Instant {
    loop {
        let revents = poll_for(fifo, PollFlags::POLLIN);
        if revents.contains(PollFlags::POLLHUP) {
            return Instant::now();
        }
        let mut buf = [0u8; 16];
        let _ = fifo.read(&mut buf);
    }
}
