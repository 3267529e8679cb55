//! The one HTTP/1.1 client of the tests and benchmarks: std `TcpStream`,
//! one request per connection (`Connection: close`), bounded by timeouts.
//!
//! It is written by hand, not with ureq, because tests need what a
//! well-behaved client does not do: a path with `..`, a declared body
//! length the body does not have, a body the server stops reading.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use serde_json::Value;

/// How long a connect may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a read may wait, by default: a start that runs its runtime's
/// startup commands can take a minute.
const READ_TIMEOUT: Duration = Duration::from_secs(120);

/// A request to send.
pub struct Request<'a> {
    method: &'a str,
    path: &'a str,
    token: Option<&'a str>,
    body: &'a [u8],
    timeout: Duration,
}

impl<'a> Request<'a> {
    pub fn new(method: &'a str, path: &'a str) -> Request<'a> {
        Request {
            method,
            path,
            token: None,
            body: b"",
            timeout: READ_TIMEOUT,
        }
    }

    pub fn get(path: &'a str) -> Request<'a> {
        Request::new("GET", path)
    }

    /// `Authorization: Bearer TOKEN`.
    pub fn token(mut self, token: Option<&'a str>) -> Request<'a> {
        self.token = token;
        self
    }

    pub fn body(mut self, body: &'a [u8]) -> Request<'a> {
        self.body = body;
        self
    }

    /// How long each read may wait for the answer.
    pub fn timeout(mut self, timeout: Duration) -> Request<'a> {
        self.timeout = timeout;
        self
    }

    /// Sends the request to `addr` (`HOST:PORT`) and reads the answer.
    ///
    /// # Errors
    ///
    /// Nothing answers, or the answer is not HTTP.
    pub fn send(&self, addr: &str) -> io::Result<Response> {
        let mut head = format!(
            "{} {} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
            self.method,
            self.path,
            self.body.len()
        );
        if let Some(token) = self.token {
            head.push_str(&format!("Authorization: Bearer {token}\r\n"));
        }
        head.push_str("\r\n");
        exchange(addr, head.as_bytes(), self.body, self.timeout)
    }

    /// Like [`Request::send`]; panics with the request and the reason.
    pub fn call(&self, addr: &str) -> Response {
        self.send(addr).unwrap_or_else(|e| {
            panic!(
                "no HTTP answer to {} {} from {addr}: {e}",
                self.method, self.path
            )
        })
    }
}

/// An answer: its status, header lines and body.
pub struct Response {
    pub status: u16,
    pub headers: String,
    pub body: String,
}

impl Response {
    /// The body as JSON; panics when it is not.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"))
    }
}

impl fmt::Debug for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.status, self.body)
    }
}

/// `GET PATH` from an application on 127.0.0.1:`port`; `None` when nothing
/// answers.
pub fn get(port: u16, path: &str) -> Option<Response> {
    Request::get(path)
        .timeout(Duration::from_secs(10))
        .send(&format!("127.0.0.1:{port}"))
        .ok()
}

/// The body of `GET PATH` from an application on 127.0.0.1:`port` (a
/// port as an instance view gives it); `None` when nothing answers.
pub fn fetch(port: u64, path: &str) -> Option<String> {
    get(port as u16, path).map(|answer| answer.body)
}

/// `GET URL` for an `http://HOST:PORT/PATH` URL; panics unless it answers.
pub fn get_url(url: &str) -> Response {
    let rest = url
        .strip_prefix("http://")
        .unwrap_or_else(|| panic!("not an http URL: {url}"));
    let (addr, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    Request::get(path).call(addr)
}

/// Writes `head`, then `body`, and reads one answer. A server that
/// refuses the body may close before it has all of it: a failure to
/// write the body is not an error, a missing answer is.
pub fn exchange(addr: &str, head: &[u8], body: &[u8], timeout: Duration) -> io::Result<Response> {
    let target: SocketAddr = addr
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no address"))?;
    let mut stream = TcpStream::connect_timeout(&target, CONNECT_TIMEOUT)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.write_all(head)?;
    let _ = stream.write_all(body);
    read_response(&mut stream)
}

fn invalid(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

/// Reads one answer: up to its `Content-Length`, to the end of its
/// chunks, or to the end of the stream or of a JSON body.
fn read_response(stream: &mut TcpStream) -> io::Result<Response> {
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        if let Some(response) = parse(&raw, false)? {
            return Ok(response);
        }
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            // A server that closes with unread data resets the
            // connection; what arrived before counts.
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset && !raw.is_empty() => break,
            Err(e) => return Err(e),
        }
    }
    parse(&raw, true)?.ok_or_else(|| {
        invalid(format!(
            "incomplete answer: {:?}",
            String::from_utf8_lossy(&raw)
        ))
    })
}

/// The answer in `raw` once it is complete (`ended`: nothing more comes).
fn parse(raw: &[u8], ended: bool) -> io::Result<Option<Response>> {
    let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let rest = &raw[end + 4..];
    let (status_line, headers) = head.split_once("\r\n").unwrap_or((&head, ""));
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| invalid(format!("bad status line {status_line:?}")))?;
    let header = |name: &str| {
        headers.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim()
                .eq_ignore_ascii_case(name)
                .then(|| value.trim().to_string())
        })
    };
    let body = if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        match dechunk(rest) {
            Some(body) => body,
            None if ended => return Err(invalid("truncated chunked body".into())),
            None => return Ok(None),
        }
    } else if let Some(length) = header("content-length") {
        let length: usize = length
            .parse()
            .map_err(|_| invalid(format!("bad Content-Length {length:?}")))?;
        if rest.len() < length {
            return if ended {
                Err(invalid(format!("body of {} of {length} bytes", rest.len())))
            } else {
                Ok(None)
            };
        }
        rest[..length].to_vec()
    } else if ended || serde_json::from_slice::<Value>(rest).is_ok_and(|v| !v.is_number()) {
        // No length: the answer ends with the connection, or, when the
        // connection stays open (tiny_http after a refused upload), with
        // a whole JSON object.
        rest.to_vec()
    } else {
        return Ok(None);
    };
    Ok(Some(Response {
        status,
        headers: headers.to_string(),
        body: String::from_utf8_lossy(&body).into_owned(),
    }))
}

/// The body of a complete chunked encoding, or `None` while incomplete.
fn dechunk(mut raw: &[u8]) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = raw.windows(2).position(|w| w == b"\r\n")?;
        let size_text = String::from_utf8_lossy(&raw[..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        raw = &raw[line_end + 2..];
        if size == 0 {
            return Some(body);
        }
        if raw.len() < size + 2 {
            return None;
        }
        body.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
}
