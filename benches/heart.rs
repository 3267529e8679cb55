//! Benchmarks of `pm-heart serve` against the release binaries
//! (`cargo bench --bench heart`), state on tmpfs (`/dev/shm` when it
//! exists):
//!
//! 1. start: `POST /instances/ID/start` until the answer (RUNNING) for an
//!    application that binds at once: the heart's own overhead, including
//!    launching `pm-supervisor`;
//! 2. stop: `POST /instances/ID/stop` until the answer (STOPPED);
//! 3. `GET /instances` latency (100 instances) under load from 4 client
//!    threads;
//! 4. RSS of the heart with 1,000 registered instances;
//! 5. reconciliation: 500 running instances, `kill -9` of the heart, time
//!    from its start to `listening on` with all 500 RUNNING.
//!
//! The application is this very binary run as `heart app PORT`: a
//! std-only HTTP server that binds at once and answers every request.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

const HEART: &str = env!("CARGO_BIN_EXE_pm-heart");
const TIMEOUT: Duration = Duration::from_secs(60);

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("app") {
        serve_app(args.get(2).and_then(|p| p.parse().ok()).unwrap_or(0));
        return;
    }
    let root = if Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    }
    .join(format!("pm-bench-heart-{}", std::process::id()));
    let _ = fs::remove_dir_all(&root);
    fs::create_dir_all(root.join("app")).unwrap();
    fs::write(root.join("app/index.html"), "ok\n").unwrap();
    let app_dir = root.join("app");
    println!(
        "pm-heart benchmarks (release binaries, data on {})",
        root.display()
    );

    // `cargo bench --bench heart -- NAME` runs only the benchmarks whose
    // name contains NAME: start, list, rss, reconcile.
    let filter = args[1..].iter().find(|a| !a.starts_with("--")).cloned();
    let wanted = |name: &str| filter.as_deref().map_or(true, |f| name.contains(f));
    if wanted("start") {
        start_stop(&root, &app_dir);
    }
    if wanted("list") {
        list_latency(&root, &app_dir);
    }
    if wanted("rss") {
        rss_of_registered(&root, &app_dir);
    }
    if wanted("reconcile") {
        reconcile(&root, &app_dir);
    }
    let _ = fs::remove_dir_all(&root);
}

/// The application: binds 127.0.0.1:PORT and answers `ok` to anything.
fn serve_app(port: u16) {
    let Ok(listener) = TcpListener::bind(("127.0.0.1", port)) else {
        std::process::exit(1);
    };
    for stream in listener.incoming().flatten() {
        let mut stream = stream;
        let mut buf = [0u8; 4096];
        let mut seen = Vec::new();
        while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
        let _ = stream.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nok\n");
    }
}

/// A heart run by a benchmark; killed with its supervisors on drop.
struct Heart {
    child: Option<Child>,
    data: PathBuf,
    addr: String,
    token: String,
    /// From spawn to the `listening on` line.
    ready_after: Duration,
}

impl Heart {
    fn start(data: &Path, ports: &str) -> Heart {
        let began = Instant::now();
        let mut child = Command::new(HEART)
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--ports",
                ports,
                "--allow-root-apps",
                "--data-dir",
            ])
            .arg(data)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn pm-heart");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(TIMEOUT).expect("no listening line");
        let ready_after = began.elapsed();
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .expect("listening line")
            .to_string();
        let token = fs::read_to_string(data.join("token"))
            .unwrap()
            .trim()
            .to_string();
        Heart {
            child: Some(child),
            data: data.to_path_buf(),
            addr,
            token,
            ready_after,
        }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    fn call(&self, method: &str, path: &str, body: &str) -> (u16, String) {
        http(&self.addr, method, path, &self.token, body)
    }

    fn register_standalone(&self, id: &str, app: &Path, command: &str) {
        let body = format!(
            r#"{{"instance_id":"{id}","source":"{}","application":{{"name":"bench"}},
               "standalone":true,
               "runtime":{{"name":"shell","version":"1","parameters":{{"launch_command":"{command}","standalone_wait":0}}}}}}"#,
            app.display()
        );
        let (status, answer) = self.call("POST", "/instances", &body);
        assert_eq!(status, 201, "{answer}");
    }

    /// SIGKILL of the heart only.
    fn crash(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Heart {
    fn drop(&mut self) {
        self.crash();
        kill_supervisors(&self.data);
        remove_groups(&self.data);
    }
}

/// Removes the control groups the heart on `data` left (as `pm-heart`
/// names them: `HIERARCHY/paasmaker/h` and the FNV-1a hash of the data
/// directory), waiting a little for their last processes to exit; a
/// busy one is left with a warning.
fn remove_groups(data: &Path) {
    let data = data.canonicalize().unwrap_or_else(|_| data.to_path_buf());
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in data.as_os_str().as_encoded_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for line in mounts.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let fstype = right.split_whitespace().next().unwrap_or("");
        let Some(point) = left.split_whitespace().nth(4) else {
            continue;
        };
        if fstype != "cgroup" && fstype != "cgroup2" {
            continue;
        }
        let scope = Path::new(point).join(format!("paasmaker/h{hash:016x}"));
        let Ok(entries) = fs::read_dir(&scope) else {
            continue;
        };
        let groups = entries.flatten().map(|e| e.path()).filter(|p| p.is_dir());
        for dir in groups.chain([scope.clone()]) {
            let deadline = Instant::now() + Duration::from_secs(2);
            while fs::remove_dir(&dir).is_err() && dir.exists() {
                if Instant::now() > deadline {
                    eprintln!("warning: control group {} is busy", dir.display());
                    break;
                }
                thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

/// Kills every supervisor named by a pidfile of `data` (their commands die
/// with them).
fn kill_supervisors(data: &Path) {
    let Ok(entries) = fs::read_dir(data.join("supervisor")) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.path().extension().is_some_and(|e| e == "pid") {
            let Ok(pid) = fs::read_to_string(entry.path())
                .unwrap_or_default()
                .trim()
                .parse::<i32>()
            else {
                continue;
            };
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains("pm-supervisor") {
                let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
            }
        }
    }
}

/// One HTTP/1.0 exchange.
fn http(addr: &str, method: &str, path: &str, token: &str, body: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connect to the heart");
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nAuthorization: Bearer {token}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, body.to_string())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn summary(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    println!(
        "{name:<44} n={:<5} p50 {:>10}  p99 {:>10}  min {:>10}",
        samples.len(),
        ms(percentile(&samples, 0.5)),
        ms(percentile(&samples, 0.99)),
        ms(samples[0])
    );
}

fn start_stop(root: &Path, app: &Path) {
    let data = root.join("start-stop");
    let heart = Heart::start(&data, "20000-20009");
    let exe = std::env::current_exe().unwrap();
    let body = format!(
        r#"{{"instance_id":"web","source":"{}","application":{{"name":"bench"}},
           "runtime":{{"name":"shell","version":"1","parameters":{{"launch_command":"{} app %(port)d"}}}}}}"#,
        app.display(),
        exe.display()
    );
    let (status, answer) = heart.call("POST", "/instances", &body);
    assert_eq!(status, 201, "{answer}");
    let mut starts = Vec::new();
    let mut stops = Vec::new();
    for _ in 0..50 {
        let t = Instant::now();
        let (status, answer) = heart.call("POST", "/instances/web/start", "");
        starts.push(t.elapsed());
        assert_eq!(status, 200, "{answer}");
        let t = Instant::now();
        let (status, answer) = heart.call("POST", "/instances/web/stop", "");
        stops.push(t.elapsed());
        assert_eq!(status, 200, "{answer}");
    }
    summary("start → RUNNING (app binds at once)", starts);
    summary("stop → STOPPED", stops);
    drop(heart);
    baseline(root, &exe);
}

/// The same launch without the heart: write a control file, run
/// `pm-supervisor --detach`, poll (busy) until the application answers;
/// then SIGTERM the supervisor and wait until it is gone. The difference
/// to the figures above is the heart's own overhead.
fn baseline(root: &Path, exe: &Path) {
    let supervisor = Path::new(HEART).with_file_name("pm-supervisor");
    let dir = root.join("baseline");
    fs::create_dir_all(&dir).unwrap();
    let port = 20010;
    let mut starts = Vec::new();
    for n in 0..50 {
        let control = dir.join("b.json");
        let pidfile = dir.join("b.pid");
        let _ = fs::remove_file(&pidfile);
        let text = format!(
            r#"{{"instance_id":"b","command":["{}","app","{port}"],"cwd":"{}","environment":{{}},
               "exit_key":"k{n}","port":1,"report_deadline":0.1,"log_file":"{}","pidfile":"{}",
               "startflagfile":"{}"}}"#,
            exe.display(),
            dir.display(),
            dir.join("b.log").display(),
            pidfile.display(),
            dir.join("b.start").display()
        );
        fs::write(&control, text).unwrap();
        let t = Instant::now();
        let status = Command::new(&supervisor)
            .arg("--detach")
            .arg(&control)
            .status()
            .unwrap();
        assert!(status.success());
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(t.elapsed() < TIMEOUT, "baseline application never answered");
        }
        starts.push(t.elapsed());
        let pid = loop {
            if let Ok(pid) = fs::read_to_string(&pidfile)
                .unwrap_or_default()
                .trim()
                .parse::<u32>()
            {
                break pid;
            }
            assert!(t.elapsed() < TIMEOUT, "no pidfile");
        };
        let _ = Command::new("kill").arg(pid.to_string()).status();
        while Path::new(&format!("/proc/{pid}")).exists()
            && !fs::read_to_string(format!("/proc/{pid}/stat"))
                .unwrap_or_default()
                .contains(") Z")
        {
            assert!(t.elapsed() < TIMEOUT, "supervisor did not stop");
        }
    }
    summary("baseline: bare pm-supervisor launch → answer", starts);
}

fn list_latency(root: &Path, app: &Path) {
    let data = root.join("list");
    let heart = Heart::start(&data, "20000-20009");
    for n in 0..100 {
        heart.register_standalone(&format!("i{n}"), app, "sleep 1000");
    }
    let stop = Arc::new(AtomicBool::new(false));
    let loaders: Vec<_> = (0..3)
        .map(|_| {
            let (addr, token, stop) = (heart.addr.clone(), heart.token.clone(), Arc::clone(&stop));
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let (status, _) = http(&addr, "GET", "/instances", &token, "");
                    assert_eq!(status, 200);
                }
            })
        })
        .collect();
    let mut samples = Vec::new();
    let began = Instant::now();
    while began.elapsed() < Duration::from_secs(3) {
        let t = Instant::now();
        let (status, _) = heart.call("GET", "/instances", "");
        samples.push(t.elapsed());
        assert_eq!(status, 200);
    }
    stop.store(true, Ordering::Relaxed);
    for loader in loaders {
        let _ = loader.join();
    }
    summary("GET /instances, 100 instances, 4 clients", samples);
}

fn rss_kib(pid: u32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn rss_of_registered(root: &Path, app: &Path) {
    let data = root.join("rss");
    let heart = Heart::start(&data, "20000-20009");
    let idle = rss_kib(heart.pid());
    let began = Instant::now();
    for n in 0..1000 {
        heart.register_standalone(&format!("r{n}"), app, "sleep 1000");
    }
    let took = began.elapsed();
    let (status, list) = heart.call("GET", "/instances", "");
    assert_eq!(status, 200);
    println!(
        "{:<44} {} KiB idle, {} KiB with 1,000 ({} registers in {:.1} s, list {} KiB)",
        "RSS of the heart",
        idle,
        rss_kib(heart.pid()),
        1000,
        took.as_secs_f64(),
        list.len() / 1024
    );
}

fn reconcile(root: &Path, app: &Path) {
    let data = root.join("reconcile");
    let mut heart = Heart::start(&data, "20000-20009");
    let count = 500;
    for n in 0..count {
        let id = format!("s{n}");
        heart.register_standalone(&id, app, "sleep 1000");
        let (status, answer) = heart.call("POST", &format!("/instances/{id}/start"), "");
        assert_eq!(status, 200, "{answer}");
    }
    heart.crash();
    let mut samples = Vec::new();
    for _ in 0..5 {
        let restarted = Heart::start(&data, "20000-20009");
        let (_, list) = restarted.call("GET", "/instances", "");
        let running = list.matches("\"RUNNING\"").count();
        assert_eq!(running, count, "all instances RUNNING after the restart");
        samples.push(restarted.ready_after);
        let mut restarted = restarted;
        restarted.crash();
        // Keep the supervisors for the next round.
        std::mem::forget(restarted);
    }
    summary("restart → listening, 500 RUNNING reconciled", samples);
    drop(heart);
}
