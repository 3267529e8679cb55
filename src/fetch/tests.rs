//! Downloads from a real HTTP server of the test's own (a std
//! `TcpListener` on 127.0.0.1:0 in a thread): each failure refused with
//! its reason, and no file, partial or whole, left behind.

use std::io::{Cursor, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::*;

/// What the test server answers to its one request.
enum Answer {
    /// A status and a body, with `Content-Length` when `declared` is
    /// set, else chunked.
    Body {
        status: u16,
        body: Vec<u8>,
        declared: Option<u64>,
    },
    /// Reads the request and never answers.
    Silent,
    /// Sends the head and `sent` of a longer body, then stalls.
    Stall { sent: Vec<u8>, declared: u64 },
}

/// A one-request HTTP server; dropping it ends its thread.
struct Server {
    addr: SocketAddr,
    release: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

fn serve(answer: Answer) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (release, held) = mpsc::channel::<()>();
    let thread = thread::spawn(move || {
        let Ok((mut stream, _)) = listener.accept() else {
            return;
        };
        read_head(&mut stream);
        // Write errors are the client hanging up, as it should on a refusal.
        let _ = match answer {
            Answer::Body {
                status,
                body,
                declared,
            } => write_body(&mut stream, status, &body, declared),
            Answer::Silent => Ok(()),
            Answer::Stall { sent, declared } => write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Length: {declared}\r\n\r\n"
            )
            .and_then(|()| stream.write_all(&sent)),
        };
        // Hold the connection open until the test is done.
        let _ = held.recv();
    });
    Server {
        addr,
        release: Some(release),
        thread: Some(thread),
    }
}

impl Server {
    fn url(&self, path: &str) -> HttpUrl {
        format!("http://{}{path}", self.addr).parse().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        drop(self.release.take());
        // Wakes an accept that no client reached.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn read_head(stream: &mut TcpStream) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 65536 {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
}

fn write_body(
    stream: &mut TcpStream,
    status: u16,
    body: &[u8],
    declared: Option<u64>,
) -> std::io::Result<()> {
    write!(
        stream,
        "HTTP/1.1 {status} Whatever\r\nConnection: close\r\n"
    )?;
    match declared {
        Some(len) => {
            write!(stream, "Content-Length: {len}\r\n\r\n")?;
            stream.write_all(body)
        }
        None => {
            write!(stream, "Transfer-Encoding: chunked\r\n\r\n")?;
            for chunk in body.chunks(64 * 1024) {
                write!(stream, "{:x}\r\n", chunk.len())?;
                stream.write_all(chunk)?;
                stream.write_all(b"\r\n")?;
            }
            stream.write_all(b"0\r\n\r\n")
        }
    }
}

/// A scratch directory, removed on drop unless the test failed.
struct Scratch(PathBuf);

static COUNTER: AtomicUsize = AtomicUsize::new(0);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let path = std::env::temp_dir().join(format!(
            "pm-fetch-{}-{}-{name}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        Scratch(path)
    }

    fn dest(&self) -> PathBuf {
        self.0.join("source.tar.gz")
    }

    /// Nothing at all was left in the directory.
    fn assert_empty(&self) {
        let left: Vec<_> = std::fs::read_dir(&self.0).unwrap().collect();
        assert!(left.is_empty(), "left behind: {left:?}");
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// `data` compressed by the real gzip.
fn gzipped(data: &[u8]) -> Vec<u8> {
    let mut child = Command::new("gzip")
        .arg("-c")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let owned = data.to_vec();
    let writer = thread::spawn(move || stdin.write_all(&owned));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(out.status.success());
    out.stdout
}

fn package() -> Vec<u8> {
    let text: Vec<u8> = (0..300_000u32).flat_map(|i| i.to_le_bytes()).collect();
    gzipped(&text)
}

const LIMITS: Limits = Limits {
    max_size: 4 << 20,
    connect_timeout: Duration::from_secs(2),
    deadline: Duration::from_secs(5),
};

#[test]
fn the_right_digest_is_saved_whole() {
    let s = Scratch::new("right");
    let body = package();
    let server = serve(Answer::Body {
        status: 200,
        declared: Some(body.len() as u64),
        body: body.clone(),
    });
    let digest = Digest::of(&body);
    let saved = download(
        &server.url("/app.tar.gz"),
        &s.dest(),
        &LIMITS,
        Some(&digest),
    )
    .unwrap();
    assert_eq!(
        saved,
        Saved {
            size: body.len() as u64,
            sha256: digest
        }
    );
    assert_eq!(std::fs::read(s.dest()).unwrap(), body);
    assert!(!fsutil::temp_path(&s.dest()).exists());
    // Chunked, and with no digest asked for: the digest is still given.
    std::fs::remove_file(s.dest()).unwrap();
    let server = serve(Answer::Body {
        status: 200,
        declared: None,
        body: body.clone(),
    });
    let saved = download(&server.url("/"), &s.dest(), &LIMITS, None).unwrap();
    assert_eq!(saved.sha256, digest);
}

#[test]
fn a_wrong_digest_is_refused_with_both_digests() {
    let s = Scratch::new("wrong");
    let body = package();
    let server = serve(Answer::Body {
        status: 200,
        declared: Some(body.len() as u64),
        body: body.clone(),
    });
    let wrong = Digest::of(b"something else");
    let err = download(&server.url("/"), &s.dest(), &LIMITS, Some(&wrong)).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, FetchError::DigestMismatch { .. }), "{text}");
    assert!(text.contains(&wrong.to_string()), "{text}");
    assert!(text.contains(&Digest::of(&body).to_string()), "{text}");
    s.assert_empty();
}

#[test]
fn an_error_status_or_a_redirect_is_refused() {
    let s = Scratch::new("status");
    for status in [404, 500, 302] {
        let server = serve(Answer::Body {
            status,
            body: b"no".to_vec(),
            declared: Some(2),
        });
        let err = download(&server.url("/missing"), &s.dest(), &LIMITS, None).unwrap_err();
        assert!(
            matches!(err, FetchError::Status { status: s, .. } if s == status),
            "{err}"
        );
        assert!(
            err.to_string().contains(&format!("HTTP status {status}")),
            "{err}"
        );
        s.assert_empty();
    }
}

#[test]
fn a_server_that_never_answers_hits_the_deadline() {
    let s = Scratch::new("silent");
    let limits = Limits {
        deadline: Duration::from_secs(1),
        ..LIMITS
    };
    let server = serve(Answer::Silent);
    let started = Instant::now();
    let err = download(&server.url("/"), &s.dest(), &limits, None).unwrap_err();
    assert!(matches!(err, FetchError::TimedOut(_)), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    s.assert_empty();
    // Stalling in the middle of the body: the partial file goes too.
    let sent = package();
    let declared = sent.len() as u64 + (1 << 20);
    let server = serve(Answer::Stall { sent, declared });
    let err = download(&server.url("/"), &s.dest(), &limits, None).unwrap_err();
    assert!(matches!(err, FetchError::TimedOut(_)), "{err}");
    s.assert_empty();
}

#[test]
fn a_body_over_the_cap_is_refused_declared_or_streamed() {
    let s = Scratch::new("cap");
    let limits = Limits {
        max_size: 1 << 20,
        ..LIMITS
    };
    let mut big = vec![0x1f, 0x8b];
    big.resize(3 << 20, 7);
    let server = serve(Answer::Body {
        status: 200,
        declared: Some(big.len() as u64),
        body: big.clone(),
    });
    let err = download(&server.url("/"), &s.dest(), &limits, None).unwrap_err();
    assert!(
        matches!(err, FetchError::TooLarge { declared: Some(d), .. } if d == 3 << 20),
        "{err}"
    );
    s.assert_empty();
    let server = serve(Answer::Body {
        status: 200,
        declared: None,
        body: big,
    });
    let err = download(&server.url("/"), &s.dest(), &limits, None).unwrap_err();
    assert!(
        matches!(err, FetchError::TooLarge { declared: None, limit } if limit == 1 << 20),
        "{err}"
    );
    s.assert_empty();
}

#[test]
fn a_body_that_is_not_gzip_is_refused() {
    let s = Scratch::new("not-gzip");
    for body in [&b"<html>not found</html>"[..], b"", b"\x1f"] {
        let server = serve(Answer::Body {
            status: 200,
            body: body.to_vec(),
            declared: Some(body.len() as u64),
        });
        let err = download(&server.url("/"), &s.dest(), &LIMITS, None).unwrap_err();
        assert!(matches!(err, FetchError::NotGzip), "{body:?}: {err}");
        s.assert_empty();
    }
}

#[test]
fn only_http_urls_are_accepted() {
    for url in [
        "https://example.com/app.tgz",
        "HTTPS://x/y",
        "ftp://x/y",
        "file:///etc/passwd",
    ] {
        let err = url.parse::<HttpUrl>().unwrap_err();
        assert!(matches!(err, FetchError::BadUrl(_)), "{url}");
        assert!(
            err.to_string().contains("only http:// URLs are supported"),
            "{err}"
        );
        assert!(err.to_string().contains("no TLS"), "{err}");
    }
    for url in ["/srv/app.tgz", "http://", "http:///x", "http://a b/"] {
        assert!(url.parse::<HttpUrl>().is_err(), "{url}");
    }
    assert!("http://10.0.0.1:8080/a.tgz?v=1".parse::<HttpUrl>().is_ok());
    assert!("HTTP://host/a.tgz".parse::<HttpUrl>().is_ok());
}

#[test]
fn a_port_where_nothing_listens_is_unreachable() {
    let s = Scratch::new("unreachable");
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let url: HttpUrl = format!("http://{addr}/a.tgz").parse().unwrap();
    let err = download(&url, &s.dest(), &LIMITS, None).unwrap_err();
    assert!(matches!(err, FetchError::Unreachable { .. }), "{err}");
    assert!(err.to_string().contains(&addr.to_string()), "{err}");
    s.assert_empty();
}

#[test]
fn save_serves_uploads_from_any_reader() {
    let s = Scratch::new("save");
    let body = package();
    let saved = save(
        &mut Cursor::new(&body),
        None,
        &s.dest(),
        1 << 30,
        None,
        None,
    )
    .unwrap();
    assert_eq!(saved.sha256, Digest::of(&body));
    assert_eq!(std::fs::read(s.dest()).unwrap(), body);
    std::fs::remove_file(s.dest()).unwrap();
    // A declared length over the cap is refused before a byte is read.
    let mut never = FailingReader;
    let err = save(&mut never, Some(1 << 31), &s.dest(), 1 << 30, None, None).unwrap_err();
    assert!(
        matches!(
            err,
            FetchError::TooLarge {
                declared: Some(_),
                ..
            }
        ),
        "{err}"
    );
    let err = save(&mut never, None, &s.dest(), 1 << 30, None, None).unwrap_err();
    assert!(matches!(err, FetchError::Transfer(_)), "{err}");
    s.assert_empty();
    let err = save(
        &mut Cursor::new(&body),
        None,
        Path::new("/nonexistent-pm/x"),
        1 << 30,
        None,
        None,
    )
    .unwrap_err();
    assert!(err.to_string().contains("/nonexistent-pm/x.new"), "{err}");
}

/// A body whose client went away.
struct FailingReader;

impl Read for FailingReader {
    fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
        Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "client gone",
        ))
    }
}

#[test]
#[ignore = "measurement: run with --ignored --nocapture"]
fn measure_sha256_throughput() {
    let data = vec![0xa5u8; 256 << 20];
    let started = Instant::now();
    let mut hasher = crate::digest::Sha256::new();
    for chunk in data.chunks(64 * 1024) {
        hasher.update(chunk);
    }
    let digest = hasher.finalize();
    let secs = started.elapsed().as_secs_f64();
    println!(
        "sha256 of 256 MiB in {secs:.2} s: {:.0} MB/s",
        268.435456 / secs
    );
    assert_ne!(digest, Digest::of(b""));
}
