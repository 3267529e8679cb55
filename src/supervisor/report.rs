//! The exit report: how the command ended, told to the heart.
//!
//! `POST BASE/instance/exit/ID/KEY/CODE` as one small HTTP/1.1 request on
//! a fresh connection (`Connection: close`, no body), written with one
//! `write` and answered by a status line: nothing is built per try but the
//! request bytes, and no HTTP client library is needed. Each try is bounded
//! (connect, write and read timeouts). A 2xx answer is success; a 4xx
//! answer is final (the heart refused the key, retrying cannot help); any
//! other answer or a transport error is retried with a growing pause
//! until the report deadline. A report that was never delivered is
//! recorded in `<pidfile dir>/<id>.exited` (the code and a newline,
//! written atomically) for the heart to pick up later.
//!
//! Where the heart is: when the control file names the heart's address
//! file (`DATA_DIR/address`, rewritten by every heart as it starts), each
//! try reads it, so a report reaches the heart that runs now even if it
//! came back on another port; otherwise, or when that file cannot be read,
//! the control file's `report_url` or `port`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use crate::protocol::{self, exited, InstanceId};

use super::log::Log;

/// The longest a single try may take.
const TRY_TIMEOUT: Duration = Duration::from_secs(2);
/// The pause after the first failed try; it doubles after each one.
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
/// The longest pause between tries.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// An `http://HOST:PORT/PREFIX` base URL, split once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Base {
    /// `HOST:PORT` (the port defaults to 80), for the connect and `Host:`.
    pub authority: String,
    /// The path prefix without a trailing slash; empty for none.
    pub prefix: String,
}

impl Base {
    /// Parses an `http://` URL.
    ///
    /// # Errors
    ///
    /// Not `http://`, or no host.
    pub(crate) fn parse(url: &str) -> Result<Base, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("{url:?} is not an http:// URL"))?;
        let (authority, prefix) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        if authority.is_empty() || authority.contains(['@', ' ', '?', '#']) {
            return Err(format!("{url:?} has no usable host"));
        }
        let has_port = authority
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.ends_with('[') && port.parse::<u16>().is_ok());
        Ok(Base {
            authority: if has_port {
                authority.to_string()
            } else {
                format!("{authority}:80")
            },
            prefix: prefix.to_string(),
        })
    }

    /// The base of the heart listening on `addr`.
    pub(crate) fn of_addr(addr: SocketAddr) -> Base {
        Base {
            authority: addr.to_string(),
            prefix: String::new(),
        }
    }
}

/// Where and what to report.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// Where the heart was when the command started.
    pub base: Base,
    /// The heart's address file, read at each try when given.
    pub address_file: Option<PathBuf>,
    /// The instance.
    pub instance_id: InstanceId,
    /// The one-time key.
    pub exit_key: String,
    /// How long to keep trying.
    pub deadline: Duration,
    /// The `.exited` file written when the report cannot be delivered.
    pub exited_file: PathBuf,
}

impl Target {
    /// Where the heart is now: its address file when that names a socket
    /// address, else the base of the control file.
    fn current_base(&self) -> Base {
        self.address_file
            .as_ref()
            .and_then(|path| std::fs::read_to_string(path).ok())
            .and_then(|text| text.trim().parse::<SocketAddr>().ok())
            .map_or_else(|| self.base.clone(), Base::of_addr)
    }
}

/// How a report ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The heart accepted it.
    Reported,
    /// The heart refused it with this 4xx status.
    Refused(u16),
    /// Never delivered; written to the `.exited` file.
    Recorded,
    /// Never delivered and the `.exited` file could not be written.
    Lost,
}

/// Reports `code` to the heart, falling back to the `.exited` file.
pub(crate) fn send(target: &Target, code: i32, log: &Log) -> Outcome {
    let path = protocol::exit_report_path(&target.instance_id, &target.exit_key, code);
    let deadline = Instant::now() + target.deadline;
    let mut backoff = FIRST_BACKOFF;
    let mut tries = 0u32;
    let mut last_failure = String::new();
    loop {
        let now = Instant::now();
        if now >= deadline && tries > 0 {
            break;
        }
        let timeout = TRY_TIMEOUT.min(deadline.saturating_duration_since(now));
        let timeout = timeout.max(Duration::from_millis(100));
        tries += 1;
        match try_once(&target.current_base(), &path, timeout) {
            Ok(status) if (200..300).contains(&status) => {
                log.info(format_args!("Reported code {code} to the heart"));
                return Outcome::Reported;
            }
            Ok(status) if (400..500).contains(&status) => {
                log.error(format_args!(
                    "The heart refused the report of code {code}: HTTP {status}"
                ));
                return Outcome::Refused(status);
            }
            Ok(status) => last_failure = format!("HTTP {status}"),
            Err(reason) => last_failure = reason,
        }
        if tries == 1 {
            log.warn(format_args!(
                "Unable to report code {code} ({last_failure}); retrying for {} s",
                target.deadline.as_secs_f64()
            ));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        thread::sleep(backoff.min(left));
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
    log.warn(format_args!(
        "Gave up reporting code {code} after {tries} tries ({last_failure})"
    ));
    match exited::write(&target.exited_file, code) {
        Ok(()) => {
            log.info(format_args!(
                "Recorded code {code} in {}",
                target.exited_file.display()
            ));
            Outcome::Recorded
        }
        Err(err) => {
            log.error(format_args!("Code {code} is lost: {err}"));
            Outcome::Lost
        }
    }
}

/// One try: the HTTP status, or why there was none.
/// The timeout of the last tries shrinks to what is left of the deadline.
fn try_once(base: &Base, path: &str, timeout: Duration) -> Result<u16, String> {
    let started = Instant::now();
    let left = || {
        timeout
            .saturating_sub(started.elapsed())
            .max(Duration::from_millis(1))
    };
    let addr = base
        .authority
        .to_socket_addrs()
        .map_err(|e| format!("{}: {e}", base.authority))?
        .next()
        .ok_or_else(|| format!("{}: no address", base.authority))?;
    let mut stream = TcpStream::connect_timeout(&addr, timeout)
        .map_err(|e| format!("connect to {addr}: {e}"))?;
    let _ = stream.set_nodelay(true);
    let request = format!(
        "POST {}{path} HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        base.prefix, base.authority
    );
    stream
        .set_write_timeout(Some(left()))
        .and_then(|()| stream.write_all(request.as_bytes()))
        .map_err(|e| format!("send to {addr}: {e}"))?;
    // "HTTP/1.1 200": twelve bytes hold the status.
    let mut head = [0u8; 12];
    let mut got = 0;
    while got < head.len() {
        stream
            .set_read_timeout(Some(left()))
            .map_err(|e| format!("read from {addr}: {e}"))?;
        match stream.read(&mut head[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("read from {addr}: {e}")),
        }
    }
    parse_status(&head[..got]).ok_or_else(|| format!("no HTTP answer from {addr}"))
}

/// The status code of an `HTTP/1.x NNN` status line.
fn parse_status(head: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(head).ok()?;
    let rest = text.strip_prefix("HTTP/1.")?;
    let code = rest.get(2..5)?;
    (rest.as_bytes().get(1) == Some(&b' '))
        .then(|| code.parse().ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_are_split_once() {
        let b = Base::parse("http://127.0.0.1:42500").unwrap();
        assert_eq!(
            (b.authority.as_str(), b.prefix.as_str()),
            ("127.0.0.1:42500", "")
        );
        let b = Base::parse("http://heart.local/pm/").unwrap();
        assert_eq!(
            (b.authority.as_str(), b.prefix.as_str()),
            ("heart.local:80", "/pm")
        );
        let b = Base::parse("http://[::1]:9/").unwrap();
        assert_eq!(b.authority, "[::1]:9");
        assert!(Base::parse("https://x").is_err());
        assert!(Base::parse("http:///x").is_err());
    }

    #[test]
    fn status_lines_are_read() {
        assert_eq!(parse_status(b"HTTP/1.1 200 OK"), Some(200));
        assert_eq!(parse_status(b"HTTP/1.0 403"), Some(403));
        assert_eq!(parse_status(b"HTTP/1.1 20"), None);
        assert_eq!(parse_status(b"SSH-2.0-Open"), None);
    }

    #[test]
    fn the_address_file_wins_when_it_names_an_address() {
        let dir = std::env::temp_dir().join(format!("pm-report-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("address");
        let target = Target {
            base: Base::parse("http://127.0.0.1:1").unwrap(),
            address_file: Some(file.clone()),
            instance_id: "a".parse().unwrap(),
            exit_key: "k".into(),
            deadline: Duration::ZERO,
            exited_file: dir.join("a.exited"),
        };
        assert_eq!(target.current_base().authority, "127.0.0.1:1");
        std::fs::write(&file, "127.0.0.1:2\n").unwrap();
        assert_eq!(target.current_base().authority, "127.0.0.1:2");
        std::fs::write(&file, "garbage").unwrap();
        assert_eq!(target.current_base().authority, "127.0.0.1:1");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
