//! `pm-supervisor --log-pipe FILE`: a piped logger. It copies its
//! standard input into the log `FILE` by whole lines, each stamped with
//! the time it was read, rotated by size with the instance logs' one
//! mechanism (`logfile`), until end of input.
//!
//! The managed Apache runs one per instance log (`ErrorLog` and
//! `CustomLog "||pm-supervisor --log-pipe …"`). Apache starts a new
//! generation of loggers on each graceful reload and sends SIGTERM to the
//! old ones while its old children may still be finishing requests, so a
//! piped logger ignores SIGTERM, SIGHUP and SIGINT and ends only at the
//! end of its input, once every writer of the pipe is gone: no line
//! written is lost, and none outlives Apache. An old and a new logger of
//! one file write it at the same time, so the file is opened among
//! writers (`LogFile::open_among_writers`): they take turns, and the size
//! limit holds for both.

use std::io;
use std::os::fd::AsFd;
use std::path::Path;

use nix::sys::signal::Signal;

use crate::error::{Error, Result};
use crate::logfile::{copy, LogFile, Shared};
use crate::protocol::{LogKeep, LogLimits, LogSize};
use crate::signal;

/// Copies standard input into the log at `path` until its end.
///
/// # Errors
///
/// The signals cannot be ignored, the log cannot be opened, or standard
/// input cannot be read.
pub(super) fn run(path: &Path, max_size: Option<LogSize>, keep: Option<LogKeep>) -> Result<()> {
    signal::ignore(&[Signal::SIGTERM, Signal::SIGHUP, Signal::SIGINT])?;
    let limits = LogLimits::default().overridden(max_size, keep);
    let sink = Shared::new(LogFile::open_among_writers(path, limits.into())?);
    let stdin = io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| Error::io("read standard input for", path, e))?;
    copy::run(stdin, &sink, true).map_err(|e| Error::io("read standard input for", path, e))
}
