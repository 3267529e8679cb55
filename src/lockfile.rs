//! An exclusive lock on a file, held for the life of the process.
//!
//! `flock(LOCK_EX | LOCK_NB)` on an open file: the kernel releases it when
//! the process exits, however it exits (kill -9 included), so there is
//! never a stale lock to clean up. The holder writes its pid into the file
//! so that a refused second process can say who holds it. The descriptor
//! is close-on-exec: no child inherits the lock.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use crate::error::{Error, Result};

/// A held lock; dropping it releases it.
#[derive(Debug)]
pub(crate) struct Lock {
    _file: Flock<File>,
}

/// Why [`acquire`] did not get the lock.
#[derive(Debug)]
pub(crate) enum Refused {
    /// Another process holds it; its pid when the file names one.
    Held {
        /// The lock file.
        path: PathBuf,
        /// The holder, as written in the file.
        pid: Option<i32>,
    },
    /// The file could not be opened or locked.
    Failed(Error),
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::Held {
                path,
                pid: Some(pid),
            } => write!(f, "{} is locked by pid {pid}", path.display()),
            Refused::Held { path, pid: None } => {
                write!(f, "{} is locked by another process", path.display())
            }
            Refused::Failed(e) => write!(f, "{e}"),
        }
    }
}

/// Takes the exclusive lock on `path` (created with mode 0600) without
/// waiting, and writes this process's pid into it.
///
/// # Errors
///
/// [`Refused::Held`] when another process holds it, else
/// [`Refused::Failed`] with the path and the reason.
pub(crate) fn acquire(path: &Path) -> std::result::Result<Lock, Refused> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(|e| Refused::Failed(Error::io("open lock file", path, e)))?;
    let mut file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => lock,
        Err((mut file, Errno::EWOULDBLOCK)) => {
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            return Err(Refused::Held {
                path: path.to_path_buf(),
                pid: text.trim().parse().ok(),
            });
        }
        Err((_, errno)) => {
            return Err(Refused::Failed(Error::sys(
                format!("lock {}", path.display()),
                errno,
            )))
        }
    };
    let pid = format!("{}\n", std::process::id());
    file.set_len(0)
        .and_then(|()| file.seek(SeekFrom::Start(0)))
        .and_then(|_| file.write_all(pid.as_bytes()))
        .map_err(|e| Refused::Failed(Error::io("write lock file", path, e)))?;
    Ok(Lock { _file: file })
}

/// Like [`acquire`], as a plain [`Result`] for callers that only report.
///
/// # Errors
///
/// As [`acquire`], with the refusal's message.
pub(crate) fn acquire_or_error(path: &Path) -> Result<Lock> {
    acquire(path).map_err(|refused| match refused {
        Refused::Failed(e) => e,
        held => Error::invalid(held.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn a_second_holder_is_refused_with_the_first_ones_pid_until_it_goes() {
        let dir = std::env::temp_dir().join(format!("pm-lock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("lock");
        let lock = acquire(&path).unwrap();
        // flock locks belong to the open file: a second open in this very
        // process is refused like another process would be.
        match acquire(&path) {
            Err(Refused::Held { pid, .. }) => assert_eq!(pid, Some(std::process::id() as i32)),
            other => panic!("{other:?}"),
        }
        // Another process sees it held too (flock(1) is util-linux's).
        let held = Command::new("flock")
            .args(["--nonblock", "--conflict-exit-code", "7"])
            .arg(&path)
            .arg("true")
            .status();
        if let Ok(status) = held {
            assert_eq!(status.code(), Some(7));
        }
        drop(lock);
        assert!(acquire(&path).is_ok());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
