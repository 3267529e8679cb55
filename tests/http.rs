//! The HTTP server (`src/http/`) over real sockets: each test runs the
//! demo service in a process of its own (this test binary run again as
//! [`server_process`]) so that its descriptors and threads can be counted
//! and its descriptor limit lowered, and attacks it as issue 8 did.

#[path = "http_load.rs"]
mod load;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use load::{exchange, get, wait_until, Answer, Load, ServerProcess};

/// Set in the environment of the server process: its settings.
const ARGS_VAR: &str = "PM_HTTPD_ARGS";
/// Set to lower the server process's descriptor limit.
const NOFILE_VAR: &str = "PM_HTTPD_NOFILE";

const T: Duration = Duration::from_secs(10);

/// Runs the demo server with `settings` (`KEY=VALUE ...`), and with a
/// descriptor limit when `nofile` is given.
fn server_with(settings: &str, nofile: Option<u64>) -> ServerProcess {
    let exe = std::env::current_exe().expect("test binary path");
    let mut command = Command::new(exe);
    command
        .args([
            "--exact",
            "http::server_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ARGS_VAR, settings);
    if let Some(n) = nofile {
        command.env(NOFILE_VAR, n.to_string());
    }
    ServerProcess::spawn(command)
}

fn server(settings: &str) -> ServerProcess {
    server_with(settings, None)
}

fn send(server: &ServerProcess, request: &str) -> Answer {
    exchange(server.addr, request.as_bytes(), T)
        .unwrap_or_else(|e| panic!("no answer to {request:?}: {e}"))
}

/// The server process of these tests when [`ARGS_VAR`] is set (it serves
/// until its stdin closes, then exits). Run as a test, it checks that the
/// server shuts down gracefully: a handler in flight finishes and is
/// answered, a streamed answer is ended, every thread is joined, and the
/// process exits 0.
#[test]
fn server_process() {
    if let Ok(settings) = std::env::var(ARGS_VAR) {
        if let Some(n) = std::env::var(NOFILE_VAR).ok().and_then(|n| n.parse().ok()) {
            use nix::sys::resource::{getrlimit, setrlimit, Resource};
            let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
            setrlimit(Resource::RLIMIT_NOFILE, n, hard).expect("setrlimit");
        }
        let code = paasmaker::http_demo(settings.split_whitespace().map(String::from));
        std::process::exit(i32::from(code != std::process::ExitCode::SUCCESS));
    }
    let server = server("grace_ms=5000 quick=2 slow=3 stream=1");
    let names = || {
        let mut names = server.thread_names();
        names.retain(|n| n.starts_with("http-"));
        names.sort();
        names
    };
    let expected = [
        "http-accept",
        "http-quick-0",
        "http-quick-1",
        "http-read",
        "http-slow-0",
        "http-slow-1",
        "http-slow-2",
        "http-stream-0",
    ];
    // Each thread names itself as it starts.
    wait_until(T, || names() == expected);
    assert_eq!(names(), expected);
    let addr = server.addr;
    let sleeper = thread::spawn(move || get(addr, "/sleep?ms=1000", T).0.map(|a| a.status));
    let mut follow = load::connect(addr, T).unwrap();
    follow
        .write_all(b"GET /stream?follow=1&interval_ms=50 HTTP/1.1\r\n\r\n")
        .unwrap();
    let mut first = [0u8; 64];
    assert!(follow.read(&mut first).unwrap() > 0, "the follow started");
    // The sleeper is in its handler once the slow pool has it.
    thread::sleep(Duration::from_millis(200));
    let stopping = Instant::now();
    let (status, line) = server.stop(T);
    assert!(status.success(), "{status}: {line}");
    assert_eq!(line.trim(), "stopped running=[]");
    assert_eq!(
        sleeper.join().unwrap().unwrap(),
        200,
        "the handler in flight finished"
    );
    assert!(
        stopping.elapsed() < Duration::from_secs(4),
        "{:?}",
        stopping.elapsed()
    );
    assert!(load::closed_within(&mut follow, T), "the follow was ended");
}

#[test]
fn answers_carry_framing_date_and_close() {
    let server = server("");
    let a = send(&server, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!((a.status, a.text().as_str()), (200, "ok\n"));
    assert_eq!(a.header("Connection"), Some("close"));
    assert_eq!(a.header("Content-Length"), Some("3"));
    assert!(
        a.header("Date").is_some_and(|d| d.ends_with(" GMT")),
        "{}",
        a.head
    );
    let a = send(&server, "HEAD /health HTTP/1.1\r\n\r\n");
    assert_eq!((a.status, a.body.len()), (200, 0));
    assert_eq!(a.header("Content-Length"), Some("3"));
    let a = send(&server, "GET /nowhere HTTP/1.0\r\n\r\n");
    assert_eq!(a.status, 404);
    let a = send(&server, "DELETE /inspect HTTP/1.1\r\n\r\n");
    assert_eq!((a.status, a.header("X-Demo")), (204, Some("deleted")));
}

#[test]
fn requests_are_parsed_into_segments_query_and_headers() {
    let server = server("");
    let a = send(
        &server,
        "GET /inspect//a%20b/c%2Fd/?q=1+2&r=%C3%A9&flag HTTP/1.1\r\nx-TEST:  yes \r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(a.status, 200);
    let text = a.text();
    for line in [
        "method=GET",
        "target=/inspect//a%20b/c%2Fd/?q=1+2&r=%C3%A9&flag",
        "path=/inspect//a%20b/c%2Fd/",
        "segments=inspect|a b|c%2Fd",
        "query=q=1 2|r=\u{e9}|flag=",
        "x-test=yes",
        "headers=2",
        "length=Some(0)",
        "peer=127.0.0.1",
    ] {
        assert!(text.lines().any(|l| l == line), "{line:?} in {text}");
    }
}

#[test]
fn bad_heads_get_their_status_and_are_closed() {
    let server = server("max_head=1024 max_headers=8");
    let many: String = (0..9).map(|i| format!("H{i}: v\r\n")).collect();
    let big = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(2000));
    for (request, status) in [
        ("GARBAGE\r\n\r\n".to_string(), 400),
        ("GET /a/../b HTTP/1.1\r\n\r\n".into(), 400),
        ("GET / HTTP/2.0\r\n\r\n".into(), 505),
        (format!("GET / HTTP/1.1\r\n{many}\r\n"), 431),
        (big, 431),
        (
            "POST /echo HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n".into(),
            501,
        ),
        (
            "POST /echo HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n".into(),
            400,
        ),
    ] {
        assert_eq!(send(&server, &request).status, status, "{request:?}");
    }
    let mut server = server;
    assert_eq!(server.stat("bad_heads"), 7);
}

#[test]
fn buffered_bodies_with_length_or_chunked_and_their_limit() {
    let server = server("body_limit=100");
    let a = send(
        &server,
        "POST /echo HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
    );
    assert_eq!((a.status, a.text().as_str()), (200, "hello"));
    let chunked = "POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n6\r\n world\r\n0\r\nT: 1\r\n\r\n";
    let a = send(&server, chunked);
    assert_eq!((a.status, a.text().as_str()), (200, "hello world"));
    let a = send(
        &server,
        "POST /echo HTTP/1.1\r\nContent-Length: 101\r\n\r\n",
    );
    assert_eq!(a.status, 413);
    assert_eq!(a.text(), "request body larger than 100 bytes\n");
    let over = format!(
        "POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n65\r\n{}\r\n0\r\n\r\n",
        "x".repeat(101)
    );
    assert_eq!(send(&server, &over).status, 413);
    let bad = "POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";
    assert_eq!(send(&server, bad).status, 400);
}

#[test]
fn expect_continue_gets_continue_or_the_refusal_before_the_body() {
    let server = server("body_limit=100");
    let mut s = load::connect(server.addr, T).unwrap();
    s.write_all(b"POST /echo HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 25];
    s.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"HTTP/1.1 100 Continue\r\n\r\n");
    s.write_all(b"abc").unwrap();
    let a = load::read_answer(&mut s).unwrap();
    assert_eq!((a.status, a.text().as_str()), (200, "abc"));
    let a = send(
        &server,
        "POST /echo HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 1000\r\n\r\n",
    );
    assert_eq!(a.status, 413);
}

/// FNV-1a of `data`, as the demo's `/upload` reports it.
fn fnv(data: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

#[test]
fn streamed_uploads_arrive_whole_and_are_capped() {
    let server = server("upload_limit=3000000");
    let data: Vec<u8> = (0..2_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let mut request = format!(
        "POST /upload HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
        data.len()
    )
    .into_bytes();
    request.extend_from_slice(&data);
    let a = exchange(server.addr, &request, T).unwrap();
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.text(), format!("{} {}\n", data.len(), fnv(&data)));

    let mut chunked = b"POST /upload HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for piece in data.chunks(70_000) {
        chunked.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        chunked.extend_from_slice(piece);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let a = exchange(server.addr, &chunked, T).unwrap();
    assert_eq!(a.text(), format!("{} {}\n", data.len(), fnv(&data)));

    // Declared over the cap: refused before any of it is read.
    let a = send(
        &server,
        "POST /upload HTTP/1.1\r\nContent-Length: 3000001\r\n\r\n",
    );
    assert_eq!(a.status, 413);
    // Chunked over the cap: the handler's read fails with 413, and the
    // client still reads that answer while it is sending.
    let mut big = b"POST /upload HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..4 {
        big.extend_from_slice(format!("{:x}\r\n", 1_000_000).as_bytes());
        big.extend_from_slice(&vec![b'y'; 1_000_000]);
        big.extend_from_slice(b"\r\n");
    }
    let mut s = load::connect(server.addr, T).unwrap();
    let writer = {
        let mut s = s.try_clone().unwrap();
        thread::spawn(move || {
            let _ = s.write_all(&big);
        })
    };
    let a = load::read_answer(&mut s).unwrap();
    assert_eq!(a.status, 413, "{}", a.text());
    assert_eq!(a.text(), "request body larger than 3000000 bytes\n");
    writer.join().unwrap();
}

#[test]
fn a_stalled_upload_is_cut_off_at_the_body_pace() {
    let server = server("body_ms=500 min_rate=1000");
    let mut s = load::connect(server.addr, T).unwrap();
    s.write_all(b"POST /upload HTTP/1.1\r\nContent-Length: 100000\r\n\r\nabc")
        .unwrap();
    let start = Instant::now();
    let a = load::read_answer(&mut s).unwrap();
    let took = start.elapsed();
    assert_eq!(a.status, 408, "{}", a.text());
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_secs(3),
        "{took:?}"
    );
}

#[test]
fn a_plan_rejects_without_reading_the_body() {
    let server = server("");
    let a = send(
        &server,
        "POST /private HTTP/1.1\r\nContent-Length: 100000000\r\n\r\nxxxx",
    );
    assert_eq!(
        (a.status, a.text().as_str()),
        (401, "missing or wrong token\n")
    );
}

#[test]
fn streamed_answers_are_chunked_or_close_delimited() {
    let server = server("");
    let a = send(&server, "GET /stream?lines=5000 HTTP/1.1\r\n\r\n");
    assert_eq!(a.header("Transfer-Encoding"), Some("chunked"));
    let expected: String = (0..5000).map(|i| format!("line {i}\n")).collect();
    assert_eq!(a.text(), expected);
    let a = send(&server, "GET /stream?lines=3 HTTP/1.0\r\n\r\n");
    assert_eq!(a.header("Transfer-Encoding"), None);
    assert_eq!(a.header("Content-Length"), None);
    assert_eq!(a.text(), "line 0\nline 1\nline 2\n");
}

#[test]
fn streams_are_bounded_and_end_when_the_client_leaves() {
    let mut server = server("stream=1 stream_queue=0");
    let follow = "GET /stream?follow=1&interval_ms=20 HTTP/1.1\r\n\r\n";
    let mut first = load::connect(server.addr, T).unwrap();
    first.write_all(follow.as_bytes()).unwrap();
    let mut buf = [0u8; 256];
    assert!(first.read(&mut buf).unwrap() > 0);
    // The one stream worker is taken: a second stream is refused at once.
    assert_eq!(send(&server, follow).status, 503);
    assert_eq!(get(server.addr, "/health", T).0.unwrap().status, 200);
    drop(first);
    let handled = server.stat("handled");
    assert!(
        wait_until(T, || {
            let mut s = load::connect(server.addr, T).unwrap();
            s.write_all(b"GET /stream?lines=1 HTTP/1.1\r\n\r\n")
                .unwrap();
            load::read_answer(&mut s).is_ok_and(|a| a.status == 200)
        }),
        "the stream worker was freed"
    );
    assert!(server.stat("handled") > handled);
}

#[test]
fn a_full_pool_and_queue_answer_503_at_once() {
    let mut server = server("slow=1 slow_queue=1");
    let slow = load::slow(server.addr, 2, 4000);
    assert!(wait_until(T, || server.stat("accepted") >= 2));
    // Once the two slow requests hold the worker and the queue, a third
    // is refused without waiting for them (it would wait 4 s or more).
    // Until the reader has queued the second, a probe may still find the
    // queue free: probe until one is refused.
    let (a, took) = get(server.addr, "/sleep?ms=1", T);
    let (a, took) = match a {
        Ok(answer) if answer.status != 503 => get(server.addr, "/sleep?ms=1", T),
        other => (other, took),
    };
    assert_eq!(a.unwrap().status, 503);
    assert!(took < Duration::from_secs(3), "{took:?}");
    for h in slow {
        assert_eq!(h.join().unwrap(), 200, "the queued one waited its turn");
    }
}

#[test]
fn over_the_connection_limit_the_oldest_waiting_connection_makes_room() {
    let mut server = server("max_connections=10");
    let mut idle = load::idle(server.addr, 20);
    let (a, _) = get(server.addr, "/health", T);
    assert_eq!(a.unwrap().status, 200);
    assert!(server.stat("evicted") >= 10);
    // The first connections were dropped for the later ones.
    assert!(load::closed_within(&mut idle[0], T));
    drop(idle);
    // When every connection is in a handler, a newcomer gets 503.
    let slow = load::slow(server.addr, 10, 1500);
    assert!(wait_until(T, || server.stat("accepted") >= 31));
    thread::sleep(Duration::from_millis(100));
    let (a, took) = get(server.addr, "/health", T);
    assert_eq!(a.unwrap().status, 503);
    assert!(took < Duration::from_millis(500), "{took:?}");
    for h in slow {
        assert_eq!(h.join().unwrap(), 200);
    }
}

/// Issue 8, item 1: with descriptors exhausted the server refuses
/// (rather than ignores) new clients without spinning, and answers again
/// as soon as descriptors are free.
#[test]
fn descriptor_exhaustion_is_survived() {
    let mut server = server_with("max_connections=1000 head_ms=60000", Some(48));
    let addr = server.addr;
    let mut held = load::idle(addr, 80);
    assert!(
        wait_until(T, || server.stat("exhausted") > 0),
        "accept ran out of descriptors"
    );
    // Out of descriptors, a new client is refused at once, not ignored.
    let (a, took) = get(addr, "/health", T);
    let a = a.expect("an answer while out of descriptors");
    assert_eq!(a.status, 503, "{}", a.text());
    assert!(took < Duration::from_secs(1), "{took:?}");
    // ... and the accept loop does not spin meanwhile.
    let cpu = server.cpu_time();
    thread::sleep(Duration::from_millis(1000));
    let spent = server.cpu_time() - cpu;
    assert!(
        spent < Duration::from_millis(200),
        "{spent:?} of CPU in 1 s"
    );
    // The connections refused were answered too (those held time out).
    let mut refused = 0;
    for s in &mut held {
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        if load::read_answer(s).is_ok_and(|a| a.status == 503) {
            refused += 1;
        }
    }
    assert!(refused > 0);
    drop(held);
    assert!(
        wait_until(T, || get(addr, "/health", T)
            .0
            .is_ok_and(|a| a.status == 200)),
        "answers again once descriptors are free; stderr: {}",
        server.stderr()
    );
    assert!(server
        .stderr()
        .contains("refusing connections until descriptors are free"));
}

/// Issue 8, item 2: requests declaring a 100,000,000-byte body are
/// answered 413 and leak neither descriptors nor threads.
#[test]
fn oversized_bodies_are_refused_and_leak_nothing() {
    let mut server = server("");
    let fds = server.fds();
    let threads = server.threads();
    let statuses = load::oversized(server.addr, 60);
    assert!(statuses.iter().all(|&s| s == 413), "{statuses:?}");
    assert!(
        wait_until(T, || server.fds() <= fds),
        "descriptors back to {fds}: {}",
        server.fds()
    );
    assert_eq!(server.threads(), threads);
    assert_eq!(server.stat("too_large"), 60);
}

/// Issue 8, item 3: stalled bodies and slowloris heads hold no worker: a
/// new client is answered at once, and they are dropped at their
/// deadline.
#[test]
fn stalled_bodies_and_slowloris_heads_hold_no_worker() {
    let mut server = server("head_ms=2000 body_ms=2000");
    let threads = server.threads();
    let fds = server.fds();
    let start = Instant::now();
    let mut stalled = load::stalled(server.addr, 100);
    let mut loris = load::slowloris(server.addr, 100);
    assert!(wait_until(T, || server.stat("accepted") >= 200));
    for _ in 0..5 {
        load::trickle(&mut loris);
        let (a, took) = get(server.addr, "/health", T);
        assert_eq!(a.unwrap().status, 200);
        assert!(took < Duration::from_secs(1), "{took:?}");
        thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(server.threads(), threads, "no thread per connection");
    // Dropped at the deadline (2 s), with a 408, while still trickling.
    let mut keep_trickling = true;
    let dropped = wait_until(T, || {
        if keep_trickling {
            keep_trickling = load::trickle(&mut loris) > 0;
        }
        !keep_trickling
    });
    assert!(dropped, "slowloris clients dropped");
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(1900), "{took:?}");
    for s in stalled.iter_mut().chain(loris.iter_mut()) {
        s.set_read_timeout(Some(T)).unwrap();
        let a = load::read_answer(s).map(|a| a.status);
        assert!(matches!(a, Ok(408)) || a.is_err(), "{a:?}");
    }
    assert!(
        start.elapsed() < Duration::from_secs(6),
        "{:?}",
        start.elapsed()
    );
    drop(stalled);
    drop(loris);
    assert!(wait_until(T, || server.fds() <= fds));
    assert_eq!(server.stat("timed_out"), 200);
}

/// Issue 8, item 4: slow handlers fill the slow pool, never the quick one.
#[test]
fn slow_handlers_never_delay_quick_ones() {
    let mut server = server("");
    let slow = load::slow(server.addr, 40, 8000);
    assert!(wait_until(T, || server.stat("accepted") >= 40));
    thread::sleep(Duration::from_millis(200));
    let mut took: Vec<Duration> = (0..20)
        .map(|_| {
            let (a, took) = get(server.addr, "/health", T);
            assert_eq!(a.unwrap().status, 200);
            took
        })
        .collect();
    took.sort();
    assert!(took[10] < Duration::from_millis(100), "{took:?}");
    assert!(took[19] < Duration::from_millis(1000), "{took:?}");
    for h in slow {
        assert_eq!(h.join().unwrap(), 200);
    }
}

/// All of issue 8's hostile clients at once, at a small scale.
#[test]
fn combined_load_small() {
    let mut server = server("head_ms=3000 body_ms=3000");
    let load = Load {
        idle: 200,
        slowloris: 50,
        stalled: 50,
        oversized: 100,
        slow: 20,
        slow_ms: 2000,
        probes: 20,
    };
    let f = load::combined(&mut server, load);
    assert_eq!(f.health_ok, load.probes, "{f:?}");
    assert!(f.percentile(50) < Duration::from_millis(100), "{f:?}");
    assert_eq!(f.oversized_413, load.oversized, "{f:?}");
    assert_eq!(f.slow_ok, load.slow, "{f:?}");
    assert!(f.fds_after <= f.fds_before, "{f:?}");
    assert_eq!(f.threads_after, f.threads_before, "{f:?}");
}

/// The target of issue 8 at full scale, with its figures printed:
/// `cargo test --release --test integration -- --ignored --nocapture
/// http::combined_load_target`; `PM_HTTPD_BENCH="KEY=VALUE ..."` sets
/// the server's settings (the defaults otherwise).
#[test]
#[ignore = "benchmark: run alone with --ignored --nocapture"]
fn combined_load_target() {
    load::raise_nofile();
    let mut server = server(&std::env::var("PM_HTTPD_BENCH").unwrap_or_default());
    let f = load::combined(&mut server, Load::TARGET);
    println!(
        "health: {} of {} answered 200; p50 {:?}, p90 {:?}, max {:?}",
        f.health_ok,
        f.health.len(),
        f.percentile(50),
        f.percentile(90),
        f.percentile(100)
    );
    println!(
        "fds before/during/after: {}/{}/{}; threads: {}/{}/{}; settled in {:?}",
        f.fds_before,
        f.fds_during,
        f.fds_after,
        f.threads_before,
        f.threads_during,
        f.threads_after,
        f.settle
    );
    println!(
        "oversized answered 413: {}; slow answered 200: {}",
        f.oversized_413, f.slow_ok
    );
    println!("{}", f.stats);
    assert!(f.percentile(50) < Duration::from_millis(100), "{f:?}");
    assert!(f.fds_after <= f.fds_before, "{f:?}");
}

/// A client that does not read a large answer holds no worker: the reader
/// writes it as the client reads.
#[test]
fn a_client_that_reads_slowly_holds_no_worker() {
    let server = server("quick=1");
    let n = 32 << 20;
    let mut s = load::connect(server.addr, T).unwrap();
    s.write_all(format!("GET /bytes?n={n} HTTP/1.1\r\n\r\n").as_bytes())
        .unwrap();
    let mut head = [0u8; 16];
    s.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 200 OK\r");
    for _ in 0..3 {
        let (a, took) = get(server.addr, "/health", T);
        assert_eq!(a.unwrap().status, 200);
        assert!(took < Duration::from_secs(1), "{took:?}");
    }
    let mut raw = head.to_vec();
    s.read_to_end(&mut raw).unwrap();
    let a = load::parse_answer(&raw).unwrap();
    assert_eq!(a.body.len(), n);
    assert!(a.body.iter().all(|&b| b == b'b'));
}

/// A streamed answer to a client that does not read costs its worker one
/// write timeout.
#[test]
fn a_client_that_does_not_read_costs_one_write_timeout() {
    let mut server = server("write_ms=500");
    let mut s = TcpStream::connect(server.addr).unwrap();
    // A stream of 1.3 GB, which the client never reads: the stream
    // worker gives up once the socket is full and a write has waited
    // 500 ms, with the connection still open.
    s.write_all(b"GET /stream?lines=100000000 HTTP/1.1\r\n\r\n")
        .unwrap();
    assert!(
        wait_until(T, || server.stat("handled") >= 1),
        "the streaming handler ended"
    );
    drop(s);
}
