//! The shared fixtures themselves: a fixture that leaves processes behind
//! or hands out the same ports twice fails every test that uses it, but
//! quietly, so each promise is checked here.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::thread;
use std::time::Duration;

use serde_json::json;

use crate::util::heart::shell_instance;
use crate::util::http::Request;
use crate::util::ports::{PortBlock, BLOCK};
use crate::util::process::processes_under;
use crate::util::{alive, pid_in, wait_until, TestHeart};

#[test]
fn dropping_the_heart_fixture_ends_everything_it_started() {
    let heart = TestHeart::serve("fixture-drop", &[]);
    let app = heart.dir().mkdir("app");
    // An application with a child in its group and a daemon in a
    // session of its own, each of which records its pid.
    let mut body = shell_instance(
        "leaver",
        &app,
        json!({
            "launch_command": "sleep 300 & echo $! > child.pid; \
                 setsid sh -c 'echo $$ > daemon.pid; exec sleep 300' & \
                 echo $$ > app.pid; exec sleep 300",
            "shell": true,
            "standalone_wait": 0.1,
        }),
    );
    body["standalone"] = json!(true);
    let view = heart.run_instance(body);
    let supervisor = view["pid"].as_i64().unwrap() as i32;
    let instance = heart.data().join("instances/leaver");
    let mut pids: Vec<i32> = ["app.pid", "child.pid", "daemon.pid"]
        .iter()
        .map(|file| pid_in(&instance.join(file), Duration::from_secs(30)))
        .collect();
    pids.extend([supervisor, heart.pid()]);
    let root = heart.dir().path.clone();
    let found: HashSet<i32> = processes_under(&root).into_iter().collect();
    for pid in &pids[..4] {
        assert!(found.contains(pid), "{pid} not found in {found:?}");
    }

    drop(heart);
    wait_until(Duration::from_secs(10), "every process to end", || {
        pids.iter().all(|&pid| !alive(pid))
    });
    assert_eq!(processes_under(&root), Vec::<i32>::new());
}

#[test]
fn port_blocks_are_distinct_and_free() {
    // Single blocks and blocks that span two and three, taken at once.
    let blocks: Vec<(u16, PortBlock)> = thread::scope(|scope| {
        let threads: Vec<_> = (0..16u16)
            .map(|n| {
                let spans = n % 3 + 1;
                scope.spawn(move || (spans, PortBlock::spanning(usize::from(spans))))
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let mut ports = HashSet::new();
    for (spans, block) in &blocks {
        assert_eq!(block.size(), spans * BLOCK);
        let last = block.port(block.size() - 1);
        assert!(last < 32768, "{}", block.range(block.size()));
        for i in 0..block.size() {
            assert!(ports.insert(block.port(i)), "port {} twice", block.port(i));
        }
    }
    // A block is free while held: its ports bind.
    let _listener = TcpListener::bind(("127.0.0.1", blocks[0].1.low())).unwrap();
}

/// Serves one connection on a listener of its own with `answer`, and
/// returns its address.
fn answer_once(answer: &'static [u8]) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut seen = Vec::new();
        let mut buf = [0u8; 1024];
        while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut buf).unwrap();
            assert!(n > 0, "the request ended early");
            seen.extend_from_slice(&buf[..n]);
        }
        stream.write_all(answer).unwrap();
        // Keep the connection open: the client must see the end itself.
        thread::sleep(Duration::from_secs(5));
    });
    addr
}

#[test]
fn the_http_client_finds_the_end_of_each_kind_of_answer() {
    let cases: [(&'static [u8], u16, &str); 3] = [
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello and more",
            200,
            "hello",
        ),
        (
            b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nchun\r\n3;x=y\r\nked\r\n0\r\n\r\n",
            201,
            "chunked",
        ),
        (
            b"HTTP/1.1 413 Payload Too Large\r\n\r\n{\"error\": \"too large\"}",
            413,
            "{\"error\": \"too large\"}",
        ),
    ];
    for (raw, status, body) in cases {
        let addr = answer_once(raw);
        let answer = Request::get("/")
            .timeout(Duration::from_secs(2))
            .send(&addr)
            .unwrap_or_else(|e| panic!("{}: {e}", String::from_utf8_lossy(raw)));
        assert_eq!((answer.status, answer.body.as_str()), (status, body));
    }
}
