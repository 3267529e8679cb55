//! The heart's own event log, `DATA_DIR/heart.log`: one line per event,
//! `RFC3339 LEVEL message` as the supervisor writes its lines
//! (`logfile::event`): registered, starting, running, exited, restarting,
//! health check failed, stopped, deregistered, reconciled, shutting down;
//! also written to stderr when stderr is a terminal.
//!
//! The file is a [`LogFile`] rotated by size like the instance logs, with
//! the node's `log_max_size` and `log_keep` (10 MiB and 5 by default):
//! before a line that would take it past the size, `heart.log.4` becomes
//! `heart.log.5`, and so on down to `heart.log` becoming `heart.log.1`;
//! so it never holds more than `log_keep` + 1 files of at most
//! `log_max_size` bytes, and no line is split between two files.
//!
//! Writing never fails to the caller: the heart must not stop because its
//! log cannot be written (`LogFile` counts what was lost and says so in
//! the next line it manages to write; a log that cannot even be opened is
//! warned about once on stderr).

use std::fmt;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use crate::cli;
use crate::heart::PROG;
pub(crate) use crate::logfile::event::Level;
use crate::logfile::{event, Limits, LogFile, Shared};
use crate::protocol::LogLimits;

/// The event log.
#[derive(Debug)]
pub(crate) struct Events {
    path: PathBuf,
    file: Option<Shared>,
    to_stderr: bool,
}

impl Events {
    /// The event log at `path`, rotated within `limits`; lines go to
    /// stderr too when it is a terminal.
    pub(crate) fn new(path: PathBuf, limits: LogLimits) -> Events {
        Events::with_limits(path, limits.into(), std::io::stderr().is_terminal())
    }

    fn with_limits(path: PathBuf, limits: Limits, to_stderr: bool) -> Events {
        let file = match LogFile::open(&path, limits) {
            Ok(file) => Some(Shared::new(file)),
            Err(e) => {
                cli::warn(PROG, format!("no event log: {e}"));
                None
            }
        };
        Events {
            path,
            file,
            to_stderr,
        }
    }

    /// The path of the log.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Writes one event now.
    pub(crate) fn log(&self, level: Level, message: impl fmt::Display) {
        let line = event::line(level, format_args!("{message}"));
        if self.to_stderr {
            let _ = std::io::stderr().write_all(&line);
        }
        if let Some(file) = &self.file {
            file.append(&line);
        }
    }

    /// An `INFO` event.
    pub(crate) fn info(&self, message: impl fmt::Display) {
        self.log(Level::Info, message);
    }

    /// A `WARNING` event.
    pub(crate) fn warn(&self, message: impl fmt::Display) {
        self.log(Level::Warning, message);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logfile::{rotated, MAX_LINE};
    use std::fs;

    #[test]
    fn events_are_stamped_lines_in_a_rotated_log() {
        let dir = std::env::temp_dir().join(format!("pm-events-unit-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("heart.log");
        // The smallest size a log may have: one longest line.
        let events = Events::with_limits(path.clone(), Limits::new(0, 2), false);
        let long = "x".repeat(MAX_LINE / 2);
        for n in 0..5 {
            events.info(format_args!("event {n}\n{long}"));
        }
        let size = |p: &Path| fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        for p in [path.clone(), rotated(&path, 1), rotated(&path, 2)] {
            assert!(
                size(&p) > 0 && size(&p) <= MAX_LINE as u64,
                "{}",
                p.display()
            );
        }
        assert!(!rotated(&path, 3).exists());
        let last = fs::read_to_string(&path).unwrap();
        assert_eq!(last.lines().count(), 1, "one event, on one line");
        assert!(last.contains(" INFO event 4 x"), "{last:.80}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
