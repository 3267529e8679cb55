//! Answers: a status, headers, and a body given as bytes or written by
//! the handler through a [`StreamWriter`] (chunked transfer coding, or
//! plain bytes up to the close for an HTTP/1.0 client).
//!
//! The server owns the framing headers: `Content-Length`,
//! `Transfer-Encoding` and `Connection` given by a handler are dropped,
//! and so is any header whose name is not a token or whose value holds a
//! control character (no header injection). Every answer carries `Date`
//! and `Connection: close`.

use std::io::{self, Write};
use std::net::TcpStream;
use std::os::fd::AsFd;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::poll::PollFlags;

use super::conn::{self, Stop};

/// A function that writes a streamed body.
pub(crate) type Streamer = Box<dyn FnOnce(&mut StreamWriter<'_>) -> io::Result<()> + Send>;

/// The body of an answer.
pub(crate) enum Content {
    /// Sent with `Content-Length`.
    Bytes(Vec<u8>),
    /// Written by the function, chunked, until it returns.
    Stream(Streamer),
}

impl std::fmt::Debug for Content {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Content::Bytes(b) => write!(f, "Bytes({} bytes)", b.len()),
            Content::Stream(_) => f.write_str("Stream"),
        }
    }
}

/// An answer.
#[derive(Debug)]
pub(crate) struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    content: Content,
}

impl Response {
    /// An answer with `body` of type `content_type`.
    pub(crate) fn new(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Response {
        Response {
            status,
            headers: vec![("Content-Type".into(), content_type.into())],
            content: Content::Bytes(body.into()),
        }
    }

    /// A `text/plain; charset=utf-8` answer.
    pub(crate) fn text(status: u16, text: impl Into<String>) -> Response {
        Response::new(status, "text/plain; charset=utf-8", text.into())
    }

    /// An answer without a body.
    pub(crate) fn empty(status: u16) -> Response {
        Response {
            status,
            headers: Vec::new(),
            content: Content::Bytes(Vec::new()),
        }
    }

    /// A streamed answer: once the head is sent, `write` writes the body
    /// through the [`StreamWriter`]; the answer ends when it returns (an
    /// error cuts the stream short, which the client sees as an
    /// incomplete body).
    pub(crate) fn stream(
        status: u16,
        content_type: &str,
        write: impl FnOnce(&mut StreamWriter<'_>) -> io::Result<()> + Send + 'static,
    ) -> Response {
        Response {
            status,
            headers: vec![("Content-Type".into(), content_type.into())],
            content: Content::Stream(Box::new(write)),
        }
    }

    /// The answer with one more header.
    pub(crate) fn with_header(mut self, name: &str, value: &str) -> Response {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The body, when given as bytes.
    pub(crate) fn bytes(&self) -> Option<&[u8]> {
        match &self.content {
            Content::Bytes(b) => Some(b),
            Content::Stream(_) => None,
        }
    }

    pub(super) fn into_parts(self) -> (u16, Vec<(String, String)>, Content) {
        (self.status, self.headers, self.content)
    }

    /// The whole answer as bytes (a streamed body is left out): what the
    /// reader thread writes without blocking.
    pub(super) fn to_bytes(&self, head_only: bool) -> Vec<u8> {
        let body = self.bytes().unwrap_or_default();
        let mut out = head(
            self.status,
            &self.headers,
            Delimit::Length(body.len() as u64),
        );
        if !head_only {
            out.extend_from_slice(body);
        }
        out
    }
}

/// The reason phrase of `status`.
fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        414 => "URI Too Long",
        422 => "Unprocessable Content",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Status",
    }
}

/// Headers the server writes itself.
const OWN_HEADERS: [&str; 4] = ["Content-Length", "Transfer-Encoding", "Connection", "Date"];

fn header_ok(name: &str, value: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
        && !value.chars().any(|c| c.is_control() && c != '\t')
        && !OWN_HEADERS.iter().any(|own| own.eq_ignore_ascii_case(name))
}

/// How the body of an answer is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Delimit {
    /// `Content-Length`.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// By the close of the connection (a streamed answer to HTTP/1.0).
    Close,
}

/// The head of an answer whose body is delimited as `delimit` says.
pub(super) fn head(status: u16, headers: &[(String, String)], delimit: Delimit) -> Vec<u8> {
    let status = if (100..1000).contains(&status) {
        status
    } else {
        500
    };
    let mut out = format!(
        "HTTP/1.1 {status} {}\r\nDate: {}\r\nConnection: close\r\n",
        reason(status),
        http_date(SystemTime::now())
    );
    match delimit {
        Delimit::Length(n) => out.push_str(&format!("Content-Length: {n}\r\n")),
        Delimit::Chunked => out.push_str("Transfer-Encoding: chunked\r\n"),
        Delimit::Close => {}
    }
    for (name, value) in headers.iter().filter(|(n, v)| header_ok(n, v)) {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("\r\n");
    out.into_bytes()
}

/// `time` as an IMF-fixdate: `Sun, 06 Nov 1994 08:49:37 GMT`.
fn http_date(time: SystemTime) -> String {
    let secs = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{}, {day:02} {} {year} {:02}:{:02}:{:02} GMT",
        WEEKDAYS[usize::try_from(days.rem_euclid(7)).unwrap_or(0)],
        MONTHS[usize::try_from(month - 1).unwrap_or(0)],
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Bytes a [`StreamWriter`] gathers before it sends a chunk.
const CHUNK: usize = 8 * 1024;

/// Writes a streamed body: each [`Write::flush`] (and every 8 KiB) sends
/// what was written as one chunk. Writes fail once the server shuts down,
/// and each waits for the client at most the write timeout.
pub(crate) struct StreamWriter<'a> {
    stream: &'a TcpStream,
    stop: &'a Stop,
    chunked: bool,
    buf: Vec<u8>,
    timeout: Duration,
}

impl<'a> StreamWriter<'a> {
    pub(super) fn new(
        stream: &'a TcpStream,
        stop: &'a Stop,
        chunked: bool,
        timeout: Duration,
    ) -> StreamWriter<'a> {
        StreamWriter {
            stream,
            stop,
            chunked,
            buf: Vec::with_capacity(CHUNK),
            timeout,
        }
    }

    /// True when the client has closed the connection (or reset it), or
    /// the server is shutting down: time to end the stream.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed_within(Duration::ZERO)
    }

    /// Waits at most `timeout` for the client to close the connection or
    /// the server to shut down; true if either happened. A follower
    /// waiting for news calls this instead of sleeping.
    pub(crate) fn closed_within(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.stop.is_set() {
                return true;
            }
            let mut probe = [0u8; 512];
            match self.stream.peek(&mut probe) {
                Ok(0) => return true,
                // The client sent more (it should not): read it away, so
                // that only its close makes the socket readable.
                Ok(n) => {
                    let _ = std::io::Read::read(&mut &*self.stream, &mut probe[..n]);
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return true,
            }
            match conn::wait(
                self.stream.as_fd(),
                PollFlags::POLLIN,
                deadline,
                Some(self.stop),
            ) {
                Ok(()) => {}
                Err(e) => return e.kind() != io::ErrorKind::TimedOut,
            }
        }
    }

    fn send(&mut self, data: &[u8]) -> io::Result<()> {
        if self.chunked {
            let mut framed = format!("{:x}\r\n", data.len()).into_bytes();
            framed.extend_from_slice(data);
            framed.extend_from_slice(b"\r\n");
            conn::write_all(self.stream, &framed, self.timeout, Some(self.stop))
        } else {
            conn::write_all(self.stream, data, self.timeout, Some(self.stop))
        }
    }

    /// Sends what is buffered and the end of the body.
    pub(super) fn finish(mut self) -> io::Result<()> {
        self.flush()?;
        if self.chunked {
            conn::write_all(self.stream, b"0\r\n\r\n", self.timeout, Some(self.stop))?;
        }
        Ok(())
    }
}

impl Write for StreamWriter<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.stop.is_set() {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "server shutting down",
            ));
        }
        if self.buf.len() + data.len() > CHUNK {
            self.flush()?;
        }
        if data.len() >= CHUNK {
            self.send(data)?;
        } else {
            self.buf.extend_from_slice(data);
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let data = std::mem::take(&mut self.buf);
        let sent = self.send(&data);
        self.buf = data;
        self.buf.clear();
        sent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_imf_fixdates() {
        let t = UNIX_EPOCH + Duration::from_secs(784_111_777);
        assert_eq!(http_date(t), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(http_date(UNIX_EPOCH), "Thu, 01 Jan 1970 00:00:00 GMT");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(http_date(leap), "Tue, 29 Feb 2000 00:00:00 GMT");
    }

    #[test]
    fn the_server_owns_framing_and_no_header_is_injected() {
        let r = Response::text(404, "no")
            .with_header("Content-Length", "99")
            .with_header("connection", "keep-alive")
            .with_header("X-Ok", "yes")
            .with_header("X-Bad", "a\r\nSet-Cookie: x")
            .with_header("Bad Name", "v");
        let text = String::from_utf8(r.to_bytes(false)).unwrap();
        assert!(
            text.starts_with("HTTP/1.1 404 Not Found\r\nDate: "),
            "{text}"
        );
        assert!(text.contains("\r\nConnection: close\r\nContent-Length: 2\r\n"));
        assert!(text.contains("\r\nContent-Type: text/plain; charset=utf-8\r\n"));
        assert!(text.contains("\r\nX-Ok: yes\r\n"));
        assert!(!text.contains("99") && !text.contains("keep-alive"));
        assert!(!text.contains("Set-Cookie") && !text.contains("Bad Name"));
        assert!(text.ends_with("\r\n\r\nno"));
        let head_only = String::from_utf8(r.to_bytes(true)).unwrap();
        assert!(head_only.ends_with(
            "Content-Length: 2\r\nContent-Type: text/plain; charset=utf-8\r\nX-Ok: yes\r\n\r\n"
        ));
    }

    #[test]
    fn chunked_heads_have_no_length() {
        let text = String::from_utf8(head(200, &[], Delimit::Chunked)).unwrap();
        assert!(text.contains("Transfer-Encoding: chunked\r\n"));
        assert!(!text.contains("Content-Length"));
    }
}
