//! Bringing a source archive to disk: a download from an `http://` URL,
//! or any body stream (an upload), saved with a size cap, its SHA-256
//! computed on the way, and a check that it is gzip.
//!
//! Only plain `http://` is supported: the build has no TLS, so a package
//! is served on a private network or checked by its digest. Nothing is
//! ever held whole in memory: the body goes through one 64 KiB buffer
//! into `DEST.new`, which is synced and renamed to `DEST` only when every
//! check passed, and removed on any failure, so no partial file is ever
//! left. Each failure is its own [`FetchError`] variant; the caller picks
//! the answer it gives (the heart: a 4xx or 5xx with the message).

// Not called yet outside tests: the heart wires register, `POST /uploads`
// and `deploy --address` to this (issue 14).

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, Instant};

use crate::digest::{Digest, Sha256};
use crate::error::{Error, Refusal};
use crate::fsutil;

/// The first two bytes of every gzip stream (RFC 1952).
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
/// Size of the copy buffer.
const BUF_SIZE: usize = 64 * 1024;

/// An `http://` URL, checked once at the edge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HttpUrl(String);

impl HttpUrl {
    /// The URL as given.
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for HttpUrl {
    type Err = FetchError;

    /// Accepts `http://HOST[:PORT][/PATH]`; refuses every other scheme,
    /// `https://` included, saying that only `http://` is supported.
    fn from_str(text: &str) -> Result<HttpUrl, FetchError> {
        let Some((scheme, rest)) = text.split_once("://") else {
            return Err(FetchError::BadUrl(format!(
                "{text:?} is not a URL (expected http://HOST[:PORT]/PATH)"
            )));
        };
        if !scheme.eq_ignore_ascii_case("http") {
            return Err(FetchError::BadUrl(format!(
                "unable to fetch {text}: only http:// URLs are supported (this build has no TLS)"
            )));
        }
        let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
        if host.is_empty() || text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(FetchError::BadUrl(format!(
                "{text:?} is not a valid http:// URL"
            )));
        }
        Ok(HttpUrl(text.to_owned()))
    }
}

/// Bounds of one download, given by the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    /// Most bytes the body may have.
    pub max_size: u64,
    /// Longest wait for the connection.
    pub connect_timeout: Duration,
    /// Longest the whole download may take, connection included.
    pub deadline: Duration,
}

/// A body saved to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Saved {
    /// Its size in bytes.
    pub size: u64,
    /// Its SHA-256.
    pub sha256: Digest,
}

/// Why a download or a save failed. In every case the partial file is
/// gone.
#[derive(Debug)]
pub(crate) enum FetchError {
    /// Not an `http://` URL (an `https://` one included).
    BadUrl(String),
    /// No connection could be made.
    Unreachable {
        /// The URL.
        url: String,
        /// The reason.
        reason: String,
    },
    /// The server answered with a status other than 200.
    Status {
        /// The URL.
        url: String,
        /// The status it answered.
        status: u16,
    },
    /// The body is larger than the cap (by its `Content-Length`, or by
    /// the bytes that came).
    TooLarge {
        /// The cap.
        limit: u64,
        /// The declared length, when that is what exceeded it.
        declared: Option<u64>,
    },
    /// The deadline passed; the message says while doing what.
    TimedOut(String),
    /// The transfer broke off (connection reset, bad HTTP answer).
    Transfer(String),
    /// The body is not what the expected SHA-256 says.
    DigestMismatch {
        /// The digest asked for.
        expected: Digest,
        /// The digest of what came.
        actual: Digest,
    },
    /// The body does not start with the gzip magic bytes.
    NotGzip,
    /// A local failure writing the file.
    Io(Error),
}

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FetchError::BadUrl(msg) | FetchError::TimedOut(msg) => f.write_str(msg),
            FetchError::Unreachable { url, reason } => {
                write!(f, "unable to reach {url}: {reason}")
            }
            FetchError::Status { url, status } => {
                write!(f, "{url} answered HTTP status {status}")
            }
            FetchError::TooLarge {
                limit,
                declared: Some(declared),
            } => write!(
                f,
                "the archive is {declared} bytes, more than the limit of {limit} bytes"
            ),
            FetchError::TooLarge {
                limit,
                declared: None,
            } => write!(f, "the archive is larger than the limit of {limit} bytes"),
            FetchError::Transfer(msg) => write!(f, "the transfer broke off: {msg}"),
            FetchError::DigestMismatch { expected, actual } => write!(
                f,
                "sha256 mismatch: expected {expected}, the archive has {actual}"
            ),
            FetchError::NotGzip => write!(
                f,
                "not a gzip archive (it does not start with the bytes 1f 8b)"
            ),
            FetchError::Io(err) => write!(f, "{err}"),
        }
    }
}

impl std::error::Error for FetchError {}

/// The crate error for a fetch failure: too large is `TooLarge`, a local
/// failure stays what it was, everything else is `Unprocessable` (the
/// source cannot be used). A caller that answers unreachable or timed
/// out differently matches on [`FetchError`] first.
impl From<FetchError> for Error {
    fn from(err: FetchError) -> Error {
        match err {
            FetchError::Io(err) => err,
            FetchError::TooLarge { .. } => Error::refused(Refusal::TooLarge, err.to_string()),
            _ => Error::refused(Refusal::Unprocessable, err.to_string()),
        }
    }
}

/// Downloads `url` to `dest` within `limits`; with `sha256`, the body
/// must have that digest. Redirects are not followed (a 3xx is a status
/// error).
///
/// # Errors
///
/// One [`FetchError`] variant per reason; the partial file is removed.
pub(crate) fn download(
    url: &HttpUrl,
    dest: &Path,
    limits: &Limits,
    sha256: Option<&Digest>,
) -> Result<Saved, FetchError> {
    let started = Instant::now();
    let config = ureq::Agent::config_builder()
        .timeout_connect(Some(limits.connect_timeout))
        .timeout_global(Some(limits.deadline))
        .http_status_as_error(false)
        .max_redirects(0)
        .max_redirects_will_error(false)
        .build();
    let agent: ureq::Agent = config.into();
    let response = agent
        .get(url.as_str())
        .call()
        .map_err(|e| request_error(url, limits, e))?;
    let status = response.status().as_u16();
    if status != 200 {
        return Err(FetchError::Status {
            url: url.to_string(),
            status,
        });
    }
    let declared = response.body().content_length();
    let mut body = response.into_body().into_reader();
    let deadline = Deadline {
        at: started + limits.deadline,
        limit: limits.deadline,
    };
    save(
        &mut body,
        declared,
        dest,
        limits.max_size,
        sha256,
        Some(deadline),
    )
}

fn request_error(url: &HttpUrl, limits: &Limits, err: ureq::Error) -> FetchError {
    let unreachable = |reason: String| FetchError::Unreachable {
        url: url.to_string(),
        reason,
    };
    match err {
        ureq::Error::Timeout(what) => FetchError::TimedOut(format!(
            "no answer from {url} within {} s ({what})",
            limits.deadline.as_secs_f64()
        )),
        ureq::Error::Io(e) if is_timeout(&e) => FetchError::TimedOut(format!(
            "no answer from {url} within {} s",
            limits.deadline.as_secs_f64()
        )),
        ureq::Error::Io(e) => unreachable(e.to_string()),
        ureq::Error::HostNotFound => unreachable("host not found".into()),
        ureq::Error::ConnectionFailed => unreachable("the connection failed".into()),
        ureq::Error::BadUri(msg) => FetchError::BadUrl(format!("{url} is not a valid URL: {msg}")),
        ureq::Error::StatusCode(status) => FetchError::Status {
            url: url.to_string(),
            status,
        },
        other => FetchError::Transfer(format!("{url}: {other}")),
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
    ) || e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<ureq::Error>())
        .is_some_and(|inner| matches!(inner, ureq::Error::Timeout(_)))
}

/// When a transfer must be over, and the bound it came from (for the
/// message).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadline {
    /// The instant.
    pub at: Instant,
    /// The bound, as configured.
    pub limit: Duration,
}

impl Deadline {
    fn passed(&self) -> FetchError {
        FetchError::TimedOut(format!(
            "the transfer took longer than {} s",
            self.limit.as_secs_f64()
        ))
    }
}

/// Saves `body` to `dest` through `DEST.new`: refused at once when
/// `declared` (its `Content-Length`) is over `max_size`, and as soon as
/// the bytes that came are; refused as soon as its first two bytes are
/// not gzip's; its SHA-256 is computed on the way and compared with
/// `sha256` at the end. The file is synced and renamed into place only
/// when every check passed. The heart's `POST /uploads` calls this with
/// the request body; [`download`] with the response body.
///
/// # Errors
///
/// One [`FetchError`] variant per reason; `DEST.new` is removed.
pub(crate) fn save(
    body: &mut dyn Read,
    declared: Option<u64>,
    dest: &Path,
    max_size: u64,
    sha256: Option<&Digest>,
    deadline: Option<Deadline>,
) -> Result<Saved, FetchError> {
    if let Some(declared) = declared.filter(|&d| d > max_size) {
        return Err(FetchError::TooLarge {
            limit: max_size,
            declared: Some(declared),
        });
    }
    let tmp = fsutil::temp_path(dest);
    let result = write_checked(body, &tmp, max_size, sha256, deadline).and_then(|saved| {
        std::fs::rename(&tmp, dest)
            .map_err(|e| FetchError::Io(Error::io("rename into place", dest, e)))?;
        fsutil::sync_parent(dest).map_err(FetchError::Io)?;
        Ok(saved)
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn write_checked(
    body: &mut dyn Read,
    tmp: &Path,
    max_size: u64,
    sha256: Option<&Digest>,
    deadline: Option<Deadline>,
) -> Result<Saved, FetchError> {
    let mut file: File = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(tmp)
        .map_err(|e| FetchError::Io(Error::io("create", tmp, e)))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; BUF_SIZE];
    let mut size = 0u64;
    let mut head = Vec::with_capacity(2);
    loop {
        let n = match body.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if is_timeout(&e) => {
                return Err(match deadline {
                    Some(deadline) => deadline.passed(),
                    None => FetchError::TimedOut(format!("the transfer stalled: {e}")),
                })
            }
            Err(e) => return Err(FetchError::Transfer(e.to_string())),
        };
        if n == 0 {
            break;
        }
        size += n as u64;
        if size > max_size {
            return Err(FetchError::TooLarge {
                limit: max_size,
                declared: None,
            });
        }
        if head.len() < 2 {
            let take = (2 - head.len()).min(n);
            head.extend_from_slice(&buf[..take]);
            if head[..] != GZIP_MAGIC[..head.len()] {
                return Err(FetchError::NotGzip);
            }
        }
        hasher.update(&buf[..n]);
        file.write_all(&buf[..n])
            .map_err(|e| FetchError::Io(Error::io("write", tmp, e)))?;
        if let Some(deadline) = deadline.filter(|d| Instant::now() > d.at) {
            return Err(deadline.passed());
        }
    }
    if head.len() < 2 {
        return Err(FetchError::NotGzip);
    }
    let actual = hasher.finalize();
    if let Some(expected) = sha256.filter(|&&expected| expected != actual) {
        return Err(FetchError::DigestMismatch {
            expected: *expected,
            actual,
        });
    }
    file.sync_all()
        .map_err(|e| FetchError::Io(Error::io("sync", tmp, e)))?;
    Ok(Saved {
        size,
        sha256: actual,
    })
}

#[cfg(test)]
mod tests;
