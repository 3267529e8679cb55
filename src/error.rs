//! The crate's one error type.
//!
//! Every variant carries the context an operator needs to act on it: the
//! operation that failed, the path it touched, and the reason the OS or a
//! peer gave. An error becomes a message and an exit code in exactly one
//! place, the `main` of each program.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use nix::errno::Errno;

/// Result with the crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong, with its context.
#[derive(Debug)]
pub enum Error {
    /// The command line was wrong; the message says how.
    Usage(String),
    /// A file-system operation on `path` failed.
    Io {
        /// What we were doing, as a verb phrase: "open control file".
        op: String,
        /// The file or directory it was done to.
        path: PathBuf,
        /// The reason the OS gave.
        source: io::Error,
    },
    /// A system call that touches no path failed.
    Sys {
        /// What we were doing: "fork", "send SIGTERM to group 42".
        op: String,
        /// The reason the OS gave.
        errno: Errno,
    },
    /// A JSON document could not be read or written.
    Json {
        /// Which document: "control file /x.json".
        what: String,
        /// What the parser said.
        source: serde_json::Error,
    },
    /// An HTTP exchange failed before an answer arrived.
    Http(String),
    /// A peer answered with an error status, or an API request is refused
    /// with this status.
    Api {
        /// The HTTP status.
        status: u16,
        /// The reason, for the operator.
        message: String,
    },
    /// Input that was well-formed but not acceptable.
    Invalid(String),
    /// Something did not finish within its time limit; the message says
    /// what and which limit.
    TimedOut(String),
    /// A refusal of the heart: what was asked cannot be done. The API maps
    /// each kind to its HTTP status (`heart::api`), a client maps it to its
    /// exit status; nothing else chooses either.
    Refused(Refusal),
}

/// Why the heart refuses a request: one variant per kind, never a status
/// chosen deep inside.
#[derive(Debug)]
pub enum Refusal {
    /// The request itself is malformed (bad JSON, bad id, bad query).
    BadRequest(String),
    /// No such instance (or upload).
    NotFound(String),
    /// An exit key that is not the instance's current one.
    Forbidden(String),
    /// Not in this state: the message says which state.
    Conflict(String),
    /// The body is larger than the limit.
    TooLarge(String),
    /// Well-formed, but the node cannot do it (unknown runtime or version,
    /// bad parameters, unusable source, exhausted port range).
    Unprocessable(String),
    /// It was tried and failed; `instance` is the instance as it is now.
    Failed {
        /// Why it failed.
        message: String,
        /// The instance after the failure, when there is one.
        instance: Option<Box<crate::protocol::InstanceView>>,
    },
}

impl Error {
    /// A file-system error on `path` while doing `op`.
    pub fn io(op: impl Into<String>, path: impl AsRef<Path>, source: io::Error) -> Error {
        Error::Io {
            op: op.into(),
            path: path.as_ref().to_path_buf(),
            source,
        }
    }

    /// A system call error while doing `op`.
    pub fn sys(op: impl Into<String>, errno: Errno) -> Error {
        Error::Sys {
            op: op.into(),
            errno,
        }
    }

    /// A JSON error in the document described by `what`.
    pub fn json(what: impl Into<String>, source: serde_json::Error) -> Error {
        Error::Json {
            what: what.into(),
            source,
        }
    }

    /// An API refusal with `status`.
    pub fn api(status: u16, message: impl Into<String>) -> Error {
        Error::Api {
            status,
            message: message.into(),
        }
    }

    /// A refusal of kind `kind` (a [`Refusal`] variant) with `message`.
    pub fn refused(kind: fn(String) -> Refusal, message: impl Into<String>) -> Error {
        Error::Refused(kind(message.into()))
    }

    /// Unacceptable input.
    pub fn invalid(message: impl Into<String>) -> Error {
        Error::Invalid(message.into())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Usage(msg) => write!(f, "{msg}"),
            Error::Io { op, path, source } => {
                write!(f, "unable to {op} {}: {source}", path.display())
            }
            Error::Sys { op, errno } => write!(f, "unable to {op}: {}", errno.desc()),
            Error::Json { what, source } => write!(f, "invalid {what}: {source}"),
            Error::Http(msg) => write!(f, "{msg}"),
            Error::Api { status, message } => write!(f, "{message} (HTTP {status})"),
            Error::Invalid(msg) | Error::TimedOut(msg) => write!(f, "{msg}"),
            Error::Refused(refusal) => write!(f, "{refusal}"),
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::BadRequest(msg)
            | Refusal::NotFound(msg)
            | Refusal::Forbidden(msg)
            | Refusal::Conflict(msg)
            | Refusal::TooLarge(msg)
            | Refusal::Unprocessable(msg)
            | Refusal::Failed { message: msg, .. } => write!(f, "{msg}"),
        }
    }
}

impl From<Refusal> for Error {
    fn from(refusal: Refusal) -> Error {
        Error::Refused(refusal)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            Error::Sys { errno, .. } => Some(errno),
            Error::Json { source, .. } => Some(source),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_error_names_operation_path_and_reason() {
        let err = Error::io(
            "open control file",
            "/x.json",
            io::Error::from_raw_os_error(2),
        );
        let text = err.to_string();
        assert!(text.starts_with("unable to open control file /x.json: "));
        assert!(text.contains("No such file or directory"), "{text}");
    }

    #[test]
    fn sys_error_uses_errno_description() {
        let err = Error::sys("fork", Errno::ENOENT);
        assert_eq!(err.to_string(), "unable to fork: No such file or directory");
    }
}
