//! The heart's own event log, `DATA_DIR/heart.log`: one line per event,
//! `RFC3339 LEVEL message` as the supervisor writes its lines (registered,
//! starting, running, exited, restarting, health check failed, stopped,
//! deregistered, reconciled, shutting down), also written to stderr when
//! stderr is a terminal.
//!
//! The file is rotated by size: before a line that would take it past
//! [`MAX_SIZE`], `heart.log.4` becomes `heart.log.5` (replacing it), and
//! so on down to `heart.log` becoming `heart.log.1`; a new `heart.log` is
//! then created. So the log never holds more than [`KEEP`] + 1 files of at
//! most [`MAX_SIZE`] bytes, and no line is split between two files. (This
//! is the same scheme as the supervisor's instance logs; the two can share
//! one mechanism once that one is below both.)
//!
//! Writing never fails to the caller: the heart must not stop because its
//! log cannot be written. A failure is warned about on stderr once, and
//! the event is lost.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{IsTerminal, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use crate::cli;
use crate::heart::PROG;
use crate::rfc3339::Timestamp;

/// The largest size of `heart.log` and of each rotated file.
pub(crate) const MAX_SIZE: u64 = 10 << 20;

/// How many rotated files (`heart.log.1` .. `heart.log.5`) are kept.
pub(crate) const KEEP: u32 = 5;

/// The longest message kept; the rest is cut.
const MAX_MESSAGE: usize = 4096;

/// Severity of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Level {
    /// Normal events.
    Info,
    /// Something went wrong and was worked around.
    Warning,
    /// Something failed.
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

/// The open event log.
#[derive(Debug)]
pub(crate) struct Events {
    path: PathBuf,
    max_size: u64,
    keep: u32,
    to_stderr: bool,
    file: Mutex<Open>,
}

#[derive(Debug, Default)]
struct Open {
    file: Option<File>,
    size: u64,
    warned: bool,
}

/// The path of the `n`th rotated file of `path`: `path.n`.
pub(crate) fn rotated(path: &Path, n: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

fn open_append(path: &Path) -> std::io::Result<(File, u64)> {
    let file = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
        .open(path)?;
    let size = file.metadata()?.len();
    Ok((file, size))
}

/// One event line, newline included: a newline in `message` becomes a
/// space, so that an event is always one line.
pub(crate) fn line(at: SystemTime, level: Level, message: &str) -> String {
    let mut message: String = message
        .chars()
        .map(|c| if c == '\n' || c == '\r' { ' ' } else { c })
        .collect();
    if message.len() > MAX_MESSAGE {
        let mut cut = MAX_MESSAGE;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
    }
    format!(
        "{} {} {}\n",
        Timestamp(at),
        level.as_str(),
        message.trim_end()
    )
}

impl Events {
    /// The event log at `path` (opened at the first event), rotated at
    /// [`MAX_SIZE`] keeping [`KEEP`] files; lines go to stderr too when it
    /// is a terminal.
    pub(crate) fn new(path: PathBuf) -> Events {
        Events::with_limits(path, MAX_SIZE, KEEP, std::io::stderr().is_terminal())
    }

    fn with_limits(path: PathBuf, max_size: u64, keep: u32, to_stderr: bool) -> Events {
        Events {
            path,
            max_size,
            keep,
            to_stderr,
            file: Mutex::new(Open::default()),
        }
    }

    /// The path of the log.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Writes one event now.
    pub(crate) fn log(&self, level: Level, message: impl fmt::Display) {
        let text = line(SystemTime::now(), level, &message.to_string());
        if self.to_stderr {
            let _ = std::io::stderr().write_all(text.as_bytes());
        }
        let mut open = self
            .file
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Err(e) = self.write(&mut open, text.as_bytes()) {
            open.file = None;
            if !open.warned {
                open.warned = true;
                cli::warn(
                    PROG,
                    format!("unable to write event log {}: {e}", self.path.display()),
                );
            }
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

    fn write(&self, open: &mut Open, bytes: &[u8]) -> std::io::Result<()> {
        if open.file.is_none() {
            let (file, size) = open_append(&self.path)?;
            open.file = Some(file);
            open.size = size;
        }
        if open.size > 0 && open.size + bytes.len() as u64 > self.max_size {
            open.file = None;
            self.rotate()?;
            let (file, size) = open_append(&self.path)?;
            open.file = Some(file);
            open.size = size;
        }
        if let Some(file) = &mut open.file {
            file.write_all(bytes)?;
            open.size += bytes.len() as u64;
        }
        Ok(())
    }

    /// `path.(keep-1)` → `path.keep`, …, `path` → `path.1`.
    fn rotate(&self) -> std::io::Result<()> {
        if self.keep == 0 {
            return fs::remove_file(&self.path);
        }
        for n in (1..self.keep).rev() {
            match fs::rename(rotated(&self.path, n), rotated(&self.path, n + 1)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        fs::rename(&self.path, rotated(&self.path, 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_stamped_and_single() {
        let text = line(std::time::UNIX_EPOCH, Level::Warning, "a\nb ");
        assert_eq!(text, "1970-01-01T00:00:00.000000Z WARNING a b\n");
    }

    #[test]
    fn the_log_rotates_by_size_and_keeps_its_files() {
        let dir = std::env::temp_dir().join(format!("pm-events-unit-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("heart.log");
        let events = Events::with_limits(path.clone(), 200, 2, false);
        for n in 0..40 {
            events.info(format_args!("event number {n}"));
        }
        let size = |p: &Path| fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        assert!(size(&path) <= 200 && size(&path) > 0);
        assert!(size(&rotated(&path, 1)) <= 200 && size(&rotated(&path, 1)) > 100);
        assert!(size(&rotated(&path, 2)) > 100);
        assert!(!rotated(&path, 3).exists());
        let last = fs::read_to_string(&path).unwrap();
        assert!(last.ends_with(" INFO event number 39\n"), "{last}");
        for p in [path.clone(), rotated(&path, 1), rotated(&path, 2)] {
            for l in fs::read_to_string(&p).unwrap().lines() {
                assert!(l.contains(" INFO event number "), "{l}");
            }
        }
        fs::remove_dir_all(&dir).unwrap();
    }
}
