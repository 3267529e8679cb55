//! The supervisor's log lines: `RFC3339-timestamp LEVEL message`.
//!
//! The log file is opened with `O_APPEND` and shared with the command,
//! whose stdout and stderr point at the same open file. Each line is
//! formatted in full and written with one `write`, at once, so lines from
//! the supervisor's two threads and the command's output interleave only
//! at line boundaries (for the supervisor's part) and nothing is held
//! back until the end.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::SystemTime;

use crate::rfc3339::Timestamp;

use crate::error::{Error, Result};

/// Severity of a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Level {
    /// Normal events.
    Info,
    /// Something went wrong and was worked around.
    Warning,
    /// Something went wrong and could not be worked around.
    Error,
}

impl Level {
    fn as_str(self) -> &'static str {
        match self {
            Level::Info => "INFO",
            Level::Warning => "WARNING",
            Level::Error => "ERROR",
        }
    }
}

/// The open log file.
#[derive(Debug)]
pub(crate) struct Log {
    file: File,
}

impl Log {
    /// Opens (creating, mode 0640) `path` for appending.
    ///
    /// # Errors
    ///
    /// The file cannot be opened.
    pub(crate) fn open(path: &Path) -> Result<Log> {
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o640)
            .open(path)
            .map_err(|e| Error::io("open log file", path, e))?;
        Ok(Log { file })
    }

    /// The file, for the command's stdout and stderr.
    pub(crate) fn file(&self) -> &File {
        &self.file
    }

    /// Writes one line now. A failed write is dropped: there is nowhere
    /// else to say it, and the command must not suffer for it.
    pub(crate) fn line(&self, level: Level, message: fmt::Arguments<'_>) {
        let mut buf = Vec::with_capacity(128);
        let _ = writeln!(
            buf,
            "{} {} {}",
            Timestamp(SystemTime::now()),
            level.as_str(),
            message
        );
        let _ = (&self.file).write_all(&buf);
    }

    /// An INFO line.
    pub(crate) fn info(&self, message: fmt::Arguments<'_>) {
        self.line(Level::Info, message);
    }

    /// A WARNING line.
    pub(crate) fn warn(&self, message: fmt::Arguments<'_>) {
        self.line(Level::Warning, message);
    }

    /// An ERROR line.
    pub(crate) fn error(&self, message: fmt::Arguments<'_>) {
        self.line(Level::Error, message);
    }
}
