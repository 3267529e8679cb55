//! A request head: parsed once, with its limits, into [`Request`].
//!
//! The head is refused (the status and reason of a [`HeadError`]) when it
//! is not HTTP/1.0 or 1.1 (505), is over the size or header-count limit
//! (431), frames its body ambiguously (both `Content-Length` and
//! `Transfer-Encoding`, or two different lengths: 400), uses a transfer
//! coding other than `chunked` (501), or has a malformed request line,
//! header, or path (400). Path segments are percent-decoded only where
//! that is safe: a segment that would decode to something holding `/` or
//! NUL, to `.` or `..`, or to invalid UTF-8 stays as sent; a literal `.`
//! or `..` segment is refused.

use std::net::SocketAddr;

/// A request method.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Method {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Patch,
    Options,
    /// Any other token.
    Other(String),
}

impl Method {
    fn parse(token: &str) -> Method {
        match token {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "PATCH" => Method::Patch,
            "OPTIONS" => Method::Options,
            other => Method::Other(other.to_string()),
        }
    }

    /// The method as sent.
    pub(crate) fn as_str(&self) -> &str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
            Method::Patch => "PATCH",
            Method::Options => "OPTIONS",
            Method::Other(token) => token,
        }
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the body of a request is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Framing {
    /// `Content-Length: N` (no header: 0).
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// A parsed request head.
#[derive(Clone, Debug)]
pub(crate) struct Request {
    method: Method,
    target: String,
    segments: Vec<String>,
    headers: Vec<(String, String)>,
    http10: bool,
    framing: Framing,
    peer: SocketAddr,
}

impl Request {
    /// The method.
    pub(crate) fn method(&self) -> &Method {
        &self.method
    }

    /// The request target as sent (path and query).
    pub(crate) fn target(&self) -> &str {
        &self.target
    }

    /// The path as sent, without the query.
    pub(crate) fn path(&self) -> &str {
        self.target
            .split_once('?')
            .map_or(self.target.as_str(), |(path, _)| path)
    }

    /// The non-empty path segments, percent-decoded where safe: match
    /// them with `match (request.method(), &request.segments()[..])`.
    pub(crate) fn segments(&self) -> Vec<&str> {
        self.segments.iter().map(String::as_str).collect()
    }

    /// The query string as sent, without the `?` (empty when none).
    pub(crate) fn query(&self) -> &str {
        self.target.split_once('?').map_or("", |(_, query)| query)
    }

    /// The value of the first query parameter `name`, decoded (`+` is a
    /// space); `Some("")` for a bare `name`.
    pub(crate) fn query_param(&self, name: &str) -> Option<String> {
        query_pairs(self.query())
            .into_iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value)
    }

    /// Every query parameter, in order, decoded.
    pub(crate) fn query_params(&self) -> Vec<(String, String)> {
        query_pairs(self.query())
    }

    /// The value of the first header `name` (any case), trimmed.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// Every header, in order, names as sent.
    pub(crate) fn headers(&self) -> &[(String, String)] {
        &self.headers
    }

    /// The client's address.
    pub(crate) fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The declared body length: `Some(0)` when none is declared,
    /// `None` for a chunked body.
    pub(crate) fn body_length(&self) -> Option<u64> {
        match self.framing {
            Framing::Length(n) => Some(n),
            Framing::Chunked => None,
        }
    }

    /// True for an HTTP/1.0 request (its streamed answers are not chunked).
    pub(crate) fn is_http10(&self) -> bool {
        self.http10
    }

    pub(super) fn framing(&self) -> Framing {
        self.framing
    }

    /// True when the client waits for `100 Continue` before its body.
    pub(super) fn expects_continue(&self) -> bool {
        !self.http10
            && self.framing != Framing::Length(0)
            && self
                .header("Expect")
                .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
    }
}

/// Why a head is refused: the status to answer and the reason.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct HeadError {
    pub(super) status: u16,
    pub(super) reason: String,
}

fn refuse(status: u16, reason: impl Into<String>) -> HeadError {
    HeadError {
        status,
        reason: reason.into(),
    }
}

/// The offset just past the blank line that ends the head in `buf`, when
/// it is there; the search starts a little before `from` (the bytes
/// before it were searched already).
pub(super) fn head_end(buf: &[u8], from: usize) -> Option<usize> {
    let start = from.saturating_sub(3);
    let mut i = start;
    while let Some(pos) = buf[i..].iter().position(|&b| b == b'\n') {
        let at = i + pos;
        let rest = &buf[at + 1..];
        if rest.first() == Some(&b'\n') {
            return Some(at + 2);
        }
        if rest.starts_with(b"\r\n") {
            return Some(at + 3);
        }
        i = at + 1;
    }
    None
}

/// Parses a complete head (as delimited by [`head_end`]) from `peer`.
pub(super) fn parse_head(
    head: &[u8],
    max_headers: usize,
    peer: SocketAddr,
) -> Result<Request, HeadError> {
    let text = std::str::from_utf8(head).map_err(|_| refuse(400, "request head is not UTF-8"))?;
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let line = lines.next().unwrap_or_default();
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(refuse(400, "malformed request line"));
    };
    if method.is_empty() || !method.bytes().all(is_tchar) {
        return Err(refuse(400, "malformed request method"));
    }
    let http10 = match version {
        "HTTP/1.1" => false,
        "HTTP/1.0" => true,
        v if v.starts_with("HTTP/") => {
            return Err(refuse(505, format!("HTTP version {v} not supported")))
        }
        _ => return Err(refuse(400, "malformed request line")),
    };
    let segments = parse_target(target)?;
    let mut headers = Vec::new();
    for line in lines.take_while(|l| !l.is_empty()) {
        if line.starts_with([' ', '\t']) {
            return Err(refuse(400, "folded header lines are not accepted"));
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(refuse(400, "malformed header line"));
        };
        if name.is_empty() || !name.bytes().all(is_tchar) {
            return Err(refuse(400, "malformed header name"));
        }
        let value = value.trim_matches([' ', '\t']);
        if value.chars().any(|c| c.is_control() && c != '\t') {
            return Err(refuse(400, format!("control character in header {name}")));
        }
        if headers.len() == max_headers {
            return Err(refuse(
                431,
                format!("more than {max_headers} header fields"),
            ));
        }
        headers.push((name.to_string(), value.to_string()));
    }
    let framing = framing(&headers)?;
    Ok(Request {
        method: Method::parse(method),
        target: target.to_string(),
        segments,
        headers,
        http10,
        framing,
        peer,
    })
}

/// The body framing the headers declare.
fn framing(headers: &[(String, String)]) -> Result<Framing, HeadError> {
    let named = |name: &'static str| {
        headers
            .iter()
            .filter(move |(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    };
    let mut length: Option<u64> = None;
    for value in named("Content-Length") {
        for item in value.split(',').map(str::trim) {
            if item.is_empty() || !item.bytes().all(|b| b.is_ascii_digit()) {
                return Err(refuse(400, format!("invalid Content-Length {value:?}")));
            }
            let n: u64 = item
                .parse()
                .map_err(|_| refuse(400, format!("invalid Content-Length {value:?}")))?;
            if length.is_some_and(|m| m != n) {
                return Err(refuse(400, "conflicting Content-Length headers"));
            }
            length = Some(n);
        }
    }
    let codings: Vec<&str> = named("Transfer-Encoding")
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    if codings.is_empty() {
        return Ok(Framing::Length(length.unwrap_or(0)));
    }
    if length.is_some() {
        return Err(refuse(
            400,
            "both Content-Length and Transfer-Encoding in one request",
        ));
    }
    match codings.as_slice() {
        [only] if only.eq_ignore_ascii_case("chunked") => Ok(Framing::Chunked),
        _ => Err(refuse(
            501,
            format!(
                "transfer coding {:?} not supported (only chunked)",
                codings.join(", ")
            ),
        )),
    }
}

/// The segments of an origin-form target (`/a/b?q`).
fn parse_target(target: &str) -> Result<Vec<String>, HeadError> {
    if !target.starts_with('/') {
        return Err(refuse(400, "request target must be an absolute path"));
    }
    if !target.bytes().all(|b| b.is_ascii_graphic()) || target.contains('#') {
        return Err(refuse(400, "invalid character in request target"));
    }
    let path = target.split_once('?').map_or(target, |(path, _)| path);
    let mut segments = Vec::new();
    for raw in path.split('/').filter(|s| !s.is_empty()) {
        if raw == "." || raw == ".." {
            return Err(refuse(400, "request path with a . or .. segment"));
        }
        segments.push(decode_segment(raw));
    }
    Ok(segments)
}

/// `raw` percent-decoded, or as sent when decoding is unsafe.
fn decode_segment(raw: &str) -> String {
    match percent_decode(raw, false) {
        Some(s) if !s.contains(['/', '\0']) && s != "." && s != ".." => s,
        _ => raw.to_string(),
    }
}

/// `s` with `%XX` decoded (and `+` as a space when `plus` is set); `None`
/// for a malformed escape or a result that is not UTF-8.
pub(crate) fn percent_decode(s: &str, plus: bool) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' if plus => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// The pairs of a query string, decoded; a pair that does not decode is
/// kept as sent.
fn query_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let decode = |s: &str| percent_decode(s, true).unwrap_or_else(|| s.to_string());
            (decode(key), decode(value))
        })
        .collect()
}

/// A `tchar` of RFC 9110 (the characters of a token).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> SocketAddr {
        "127.0.0.1:9".parse().unwrap()
    }

    fn parse(head: &str) -> Result<Request, HeadError> {
        parse_head(head.as_bytes(), 8, peer())
    }

    fn status(head: &str) -> u16 {
        parse(head).unwrap_err().status
    }

    #[test]
    fn the_end_of_a_head_is_found_wherever_it_splits() {
        let head = b"GET / HTTP/1.1\r\nHost: x\r\n\r\nBODY";
        assert_eq!(head_end(head, 0), Some(head.len() - 4));
        for cut in 0..head.len() {
            let first = head_end(&head[..cut], 0);
            let found = first.or_else(|| head_end(head, cut));
            assert_eq!(found, Some(head.len() - 4), "cut at {cut}");
        }
        assert_eq!(head_end(b"GET / HTTP/1.0\n\nX", 0), Some(16));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: x\r\n", 0), None);
    }

    #[test]
    fn a_request_is_parsed() {
        let r = parse(
            "POST /instances/web-1/start?tail=5&x=a+b%21&flag HTTP/1.1\r\nHost: h\r\ncontent-length: 12\r\nAuthorization:  Bearer t \r\n\r\n",
        )
        .unwrap();
        assert_eq!(r.method(), &Method::Post);
        assert_eq!(r.path(), "/instances/web-1/start");
        assert_eq!(r.segments(), ["instances", "web-1", "start"]);
        assert_eq!(r.query(), "tail=5&x=a+b%21&flag");
        assert_eq!(r.query_param("tail").as_deref(), Some("5"));
        assert_eq!(r.query_param("x").as_deref(), Some("a b!"));
        assert_eq!(r.query_param("flag").as_deref(), Some(""));
        assert_eq!(r.query_param("nope"), None);
        assert_eq!(r.header("AUTHORIZATION"), Some("Bearer t"));
        assert_eq!(r.header("Content-Length"), Some("12"));
        assert_eq!(r.body_length(), Some(12));
        assert!(!r.is_http10());
        assert_eq!(r.peer(), peer());
    }

    #[test]
    fn segments_are_decoded_only_where_safe() {
        let r = parse("GET //a%20b/c%2Fd/%2E%2E/%ff/%zz/ok/ HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(r.segments(), ["a b", "c%2Fd", "%2E%2E", "%ff", "%zz", "ok"]);
        assert_eq!(status("GET /a/../b HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(status("GET /a/./b HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(status("GET a/b HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(status("GET http://x/a HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(status("GET /a\u{e9} HTTP/1.1\r\n\r\n"), 400);
    }

    #[test]
    fn bad_heads_get_their_status() {
        assert_eq!(status("GET / HTTP/2.0\r\n\r\n"), 505);
        assert_eq!(status("GET / FTP/1.0\r\n\r\n"), 400);
        assert_eq!(status("GET /  HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(status("G(T / HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(status("GET / HTTP/1.1\r\nNo colon\r\n\r\n"), 400);
        assert_eq!(status("GET / HTTP/1.1\r\nA: b\r\n folded\r\n\r\n"), 400);
        assert_eq!(status("GET / HTTP/1.1\r\nBad Name: b\r\n\r\n"), 400);
        assert_eq!(status("GET / HTTP/1.1\r\nA: b\u{1}c\r\n\r\n"), 400);
        let many: String = (0..9).map(|i| format!("H{i}: v\r\n")).collect();
        assert_eq!(status(&format!("GET / HTTP/1.1\r\n{many}\r\n")), 431);
    }

    #[test]
    fn bodies_are_framed_unambiguously() {
        let framing = |h: &str| parse(&format!("POST / HTTP/1.1\r\n{h}\r\n")).map(|r| r.framing());
        assert_eq!(framing(""), Ok(Framing::Length(0)));
        assert_eq!(framing("Content-Length: 5\r\n"), Ok(Framing::Length(5)));
        assert_eq!(
            framing("Content-Length: 5\r\nContent-Length: 5\r\n"),
            Ok(Framing::Length(5))
        );
        assert_eq!(
            framing("Transfer-Encoding: Chunked\r\n"),
            Ok(Framing::Chunked)
        );
        let status_of = |h: &str| framing(h).unwrap_err().status;
        assert_eq!(status_of("Content-Length: 5\r\nContent-Length: 6\r\n"), 400);
        assert_eq!(status_of("Content-Length: -1\r\n"), 400);
        assert_eq!(status_of("Content-Length: +1\r\n"), 400);
        assert_eq!(
            status_of("Content-Length: 99999999999999999999999\r\n"),
            400
        );
        assert_eq!(
            status_of("Content-Length: 5\r\nTransfer-Encoding: chunked\r\n"),
            400
        );
        assert_eq!(status_of("Transfer-Encoding: gzip, chunked\r\n"), 501);
    }

    #[test]
    fn expect_continue_only_with_a_body() {
        let r =
            parse("POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n").unwrap();
        assert!(r.expects_continue());
        let r = parse("POST / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n").unwrap();
        assert!(!r.expects_continue());
    }
}
