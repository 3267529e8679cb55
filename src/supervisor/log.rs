//! The instance log as the supervisor writes it: its own event lines
//! (`RFC3339-timestamp LEVEL message`, see `logfile::event`) and the
//! command's output, in one size-rotated file (`logfile`).
//!
//! The command's stdout and stderr are one pipe, read by the
//! `output-copier` thread ([`Log::command_output`]), which appends whole
//! lines. The
//! supervisor's own lines are formatted in full and appended under the
//! same lock, at once, so the two interleave only at line boundaries and
//! nothing is held back until the end.

use std::fmt;
use std::io;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;

use crate::error::Result;
use crate::logfile::copy::{self, Copier};
use crate::logfile::event::Level;
use crate::logfile::{Limits, LogFile, Shared};

/// The open instance log.
#[derive(Debug)]
pub(crate) struct Log {
    shared: Arc<Shared>,
}

impl Log {
    /// Opens (creating, mode 0640) `path` for appending, to be rotated
    /// within `limits`.
    ///
    /// # Errors
    ///
    /// The file cannot be opened.
    pub(crate) fn open(path: &Path, limits: Limits) -> Result<Log> {
        Ok(Log {
            shared: Arc::new(Shared::new(LogFile::open(path, limits)?)),
        })
    }

    /// Makes the command's stdout and stderr, one pipe read by the
    /// `output-copier` thread (see [`copy::output_pipe`]). The caller must
    /// drop its copies of the write end once the command runs.
    ///
    /// # Errors
    ///
    /// The pipe or the thread cannot be made.
    pub(crate) fn command_output(&self) -> io::Result<(Copier, [Stdio; 2])> {
        copy::output_pipe("output-copier", Arc::clone(&self.shared))
    }

    /// Writes one line now. A failed write is counted and reported in the
    /// log once it can be written again (see `logfile`): there is nowhere
    /// else to say it, and the command must not suffer for it.
    pub(crate) fn line(&self, level: Level, message: fmt::Arguments<'_>) {
        self.shared.event(level, message);
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
