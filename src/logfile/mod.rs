//! An append-only log file with size-based rotation: the one home of
//! "write lines to a log that never grows past its limit".
//!
//! A [`LogFile`] is written by whole lines only, each at most
//! [`MAX_LINE`] bytes, newline included. Before a line that would make the
//! file larger than `max_size`, the file is rotated: `PATH.(keep-1)` is
//! renamed to `PATH.keep` (replacing it), and so on down to `PATH` itself
//! becoming `PATH.1`; then a new `PATH` is created. So a log never holds
//! more than `keep + 1` files of at most `max_size` bytes each, no line is
//! ever split between two files, and a rotation is `keep` renames and an
//! open: no copying, no compression, nothing that takes long.
//!
//! Only a regular file is rotated; a FIFO, a terminal or `/dev/null` is
//! just written to.
//!
//! Writing never fails to the caller: a log must not stop the program it
//! records. If a write or a rotation fails, the bytes are lost, counted,
//! and the next write that succeeds is preceded by a `WARNING` line that
//! says how many were lost and why.
//!
//! [`Shared`] puts one [`LogFile`] behind a mutex, so that several threads
//! (the supervisor's own event lines, the [`copy`] thread that copies the
//! command's output) write whole lines into one file, interleaved only at
//! line boundaries, and the size accounting stays exact. A log opened with
//! [`LogFile::open`] has one writing process: nothing else may append to
//! it while it is open here, or its size would be counted short. A log
//! that several processes append to at once (the piped loggers of the
//! managed Apache, an old one draining while its successor runs) is opened
//! with [`LogFile::open_among_writers`]: its writers take turns under a
//! lock ([`turns`]).

pub(crate) mod copy;
pub(crate) mod event;
mod turns;

use std::ffi::OsString;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use crate::error::{Error, Result};

use self::event::Level;

/// The longest line, newline included. A longer line is written in pieces
/// of this size, each ended with a newline of its own (see [`copy`]).
/// Also the smallest `max_size`: every line fits in an empty file.
pub(crate) const MAX_LINE: usize = 64 * 1024;

/// The most rotated files kept: a rotation makes one rename per file, and
/// must stay short.
pub(crate) const MAX_KEEP: u32 = 100;

/// How large a log may grow and how many rotated files it keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    /// The largest size of each file, in bytes.
    pub max_size: u64,
    /// How many rotated files (`PATH.1` .. `PATH.keep`) are kept.
    pub keep: u32,
}

impl Limits {
    /// `max_size` bytes per file and `keep` rotated files, raised to at
    /// least [`MAX_LINE`] and capped at [`MAX_KEEP`]. The callers check
    /// their inputs at the edge (`protocol::LogSize`, `protocol::LogKeep`);
    /// this only keeps the mechanism sound whatever it is given.
    pub(crate) fn new(max_size: u64, keep: u32) -> Limits {
        Limits {
            max_size: max_size.max(MAX_LINE as u64),
            keep: keep.min(MAX_KEEP),
        }
    }
}

/// The folder of the instance logs in a data directory.
pub(crate) const LOGS: &str = "logs";

/// The log of instance `id` in the data directory `data_dir`:
/// `logs/ID.log` (written by its supervisor, or Apache's error log of it).
pub(crate) fn instance_log(data_dir: &Path, id: &str) -> PathBuf {
    data_dir.join(LOGS).join(format!("{id}.log"))
}

/// The access log beside the instance log `log` (`logs/ID.log`):
/// `logs/ID.access.log`, of an instance served by the managed Apache.
pub(crate) fn access_log(log: &Path) -> PathBuf {
    log.with_extension("access.log")
}

/// The path of the `n`th rotated file of `path`: `path.n`.
pub(crate) fn rotated(path: &Path, n: u32) -> PathBuf {
    let mut name = OsString::from(path.as_os_str());
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// Removes the log at `path` and every rotated file it may have.
///
/// # Errors
///
/// A file exists and cannot be removed.
pub(crate) fn remove_all(path: &Path) -> Result<()> {
    let mut first = Ok(());
    for p in std::iter::once(path.to_path_buf()).chain((1..=MAX_KEEP).map(|n| rotated(path, n))) {
        if let Err(err) = crate::fsutil::remove_if_exists(&p) {
            if first.is_ok() {
                first = Err(err);
            }
        }
    }
    first
}

/// Bytes that could not be written, and the latest reason.
#[derive(Debug)]
struct Lost {
    bytes: u64,
    reason: String,
}

/// An open log file and its rotation state.
#[derive(Debug)]
pub(crate) struct LogFile {
    path: PathBuf,
    /// `None` after a rotation whose new file could not be created.
    file: Option<File>,
    /// The size of `file`, counted as we write.
    size: u64,
    limits: Limits,
    /// A regular file: rotated. Anything else is only written to.
    rotates: bool,
    lost: Option<Lost>,
    /// Other processes may append too: every append takes its turn.
    among_writers: bool,
    /// The lock on `file` during an append among writers.
    turn: Option<turns::Turn>,
}

/// Opens `path` for appending, creating it with mode 0640.
fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
        .open(path)
}

impl LogFile {
    /// Opens (creating, mode 0640) `path` for appending. A file that is
    /// already larger than `limits.max_size` is rotated by the first
    /// write.
    ///
    /// # Errors
    ///
    /// The file cannot be opened or its size cannot be read.
    pub(crate) fn open(path: &Path, limits: Limits) -> Result<LogFile> {
        let file = open_append(path).map_err(|e| Error::io("open log file", path, e))?;
        let meta = file
            .metadata()
            .map_err(|e| Error::io("read the size of log file", path, e))?;
        Ok(LogFile {
            path: path.to_path_buf(),
            file: Some(file),
            size: meta.len(),
            limits,
            rotates: meta.file_type().is_file(),
            lost: None,
            among_writers: false,
            turn: None,
        })
    }

    /// Opens `path` like [`LogFile::open`], for a log that other processes
    /// append to and rotate at the same time, each with its own
    /// `LogFile` opened this way: every append locks the file, follows a
    /// rotation another writer made, and takes the size from the file
    /// (see [`turns`]).
    ///
    /// # Errors
    ///
    /// The file cannot be opened or its size cannot be read.
    pub(crate) fn open_among_writers(path: &Path, limits: Limits) -> Result<LogFile> {
        let mut file = LogFile::open(path, limits)?;
        file.among_writers = file.rotates;
        Ok(file)
    }

    /// Appends `lines`: whole lines, each ended by a newline and at most
    /// [`MAX_LINE`] bytes long. The file is rotated before a line that
    /// would not fit. A failure loses the bytes (see the module header).
    pub(crate) fn append(&mut self, lines: &[u8]) {
        if self.among_writers {
            if let Err(reason) = self.take_turn() {
                self.lose(lines.len(), reason);
                return;
            }
        }
        self.append_now(lines);
        self.turn = None;
    }

    fn append_now(&mut self, lines: &[u8]) {
        if let Some(lost) = self.lost.take() {
            let report = event::line(
                Level::Warning,
                format_args!("{} bytes of output were lost: {}", lost.bytes, lost.reason),
            );
            if !self.write(&report) {
                // Still failing: the report itself is not counted.
                if let Some(now) = &mut self.lost {
                    now.bytes = lost.bytes;
                }
            }
        }
        self.write(lines);
    }

    /// Writes `lines`, rotating as needed; on a failure records the loss
    /// of what was left and returns false.
    fn write(&mut self, mut lines: &[u8]) -> bool {
        while !lines.is_empty() {
            let result = match self.fitting(lines) {
                0 => self.rotate(),
                n => self.put(&lines[..n]).map(|()| lines = &lines[n..]),
            };
            if let Err(reason) = result {
                self.lose(lines.len(), reason);
                return false;
            }
        }
        true
    }

    /// How many bytes of `lines` fit in the current file: all of them, or
    /// up to the last line end that fits; 0 when it must be rotated first.
    fn fitting(&self, lines: &[u8]) -> usize {
        if !self.rotates || self.file.is_none() {
            return lines.len();
        }
        let room = self.limits.max_size.saturating_sub(self.size);
        if lines.len() as u64 <= room {
            return lines.len();
        }
        let window = &lines[..room as usize];
        match window.iter().rposition(|&b| b == b'\n') {
            Some(end) => end + 1,
            // Only a line longer than `max_size`, against the contract of
            // `append`: written in pieces rather than never.
            None if self.size == 0 => window.len(),
            None => 0,
        }
    }

    /// Writes `bytes` to the current file (creating it again if the last
    /// rotation could not).
    fn put(&mut self, bytes: &[u8]) -> std::result::Result<(), String> {
        if self.file.is_none() && self.among_writers {
            self.take_turn()?;
        }
        let file = match &mut self.file {
            Some(file) => file,
            None => {
                let file = open_append(&self.path)
                    .map_err(|e| format!("unable to create {}: {e}", self.path.display()))?;
                self.size = 0;
                self.file.insert(file)
            }
        };
        let mut rest = bytes;
        while !rest.is_empty() {
            match file.write(rest) {
                Ok(0) => {
                    return Err(format!(
                        "unable to write {}: {}",
                        self.path.display(),
                        io::Error::from(io::ErrorKind::WriteZero)
                    ))
                }
                Ok(n) => {
                    self.size += n as u64;
                    rest = &rest[n..];
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("unable to write {}: {e}", self.path.display())),
            }
        }
        Ok(())
    }

    /// Rotates: shifts `PATH.n` to `PATH.n+1` from the oldest down,
    /// `PATH` to `PATH.1` (with `keep` 0, removes `PATH`), then creates a
    /// new `PATH`. A file missing from the chain is skipped.
    fn rotate(&mut self) -> std::result::Result<(), String> {
        let shift = |from: &Path, to: &Path| match fs::rename(from, to) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(format!(
                "unable to rename {} to {}: {e}",
                from.display(),
                to.display()
            )),
            _ => Ok(()),
        };
        let keep = self.limits.keep;
        for n in (1..keep).rev() {
            shift(&rotated(&self.path, n), &rotated(&self.path, n + 1))?;
        }
        if keep == 0 {
            if let Err(e) = fs::remove_file(&self.path) {
                if e.kind() != io::ErrorKind::NotFound {
                    return Err(format!("unable to remove {}: {e}", self.path.display()));
                }
            }
        } else {
            shift(&self.path, &rotated(&self.path, 1))?;
        }
        // From here on the old file is out of the way: if the new one
        // cannot be created now, `put` tries again, without shifting the
        // chain a second time.
        self.file = None;
        self.size = 0;
        let file = open_append(&self.path)
            .map_err(|e| format!("unable to create {}: {e}", self.path.display()))?;
        self.file = Some(file);
        if self.among_writers {
            // The new file may already be another writer's: wait for it,
            // and count what it wrote.
            self.take_turn()?;
        }
        Ok(())
    }

    fn lose(&mut self, bytes: usize, reason: String) {
        let lost = self.lost.get_or_insert(Lost {
            bytes: 0,
            reason: String::new(),
        });
        lost.bytes += bytes as u64;
        lost.reason = reason;
    }
}

/// A [`LogFile`] shared by threads: each call writes whole lines under
/// one lock, so lines from different threads never mix.
#[derive(Debug)]
pub(crate) struct Shared {
    file: Mutex<LogFile>,
}

impl Shared {
    /// Shares `file`.
    pub(crate) fn new(file: LogFile) -> Shared {
        Shared {
            file: Mutex::new(file),
        }
    }

    fn lock(&self) -> MutexGuard<'_, LogFile> {
        // A thread that panicked while writing left the file state
        // consistent enough: at worst its size counted short.
        self.file.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends whole lines (see [`LogFile::append`]).
    pub(crate) fn append(&self, lines: &[u8]) {
        self.lock().append(lines);
    }

    /// Appends one event line, `TIMESTAMP LEVEL message`, now.
    pub(crate) fn event(&self, level: Level, message: fmt::Arguments<'_>) {
        let line = event::line(level, message);
        self.append(&line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("pm-logfile-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn size(path: &Path) -> Option<u64> {
        fs::metadata(path).ok().map(|m| m.len())
    }

    /// A line of exactly `len` bytes, newline included, starting with `n`.
    fn numbered(n: usize, len: usize) -> Vec<u8> {
        let mut line = format!("{n:08} ").into_bytes();
        line.resize(len - 1, b'.');
        line.push(b'\n');
        line
    }

    #[test]
    fn limits_keep_the_mechanism_sound() {
        assert_eq!(Limits::new(1, 7), Limits::new(MAX_LINE as u64, 7));
        assert_eq!(Limits::new(1 << 20, 1000).keep, MAX_KEEP);
        assert_eq!(rotated(Path::new("/l/a.log"), 3), Path::new("/l/a.log.3"));
    }

    #[test]
    fn rotation_keeps_whole_lines_and_bounds_every_file() {
        let dir = scratch("rotate");
        let path = dir.join("app.log");
        let max = MAX_LINE as u64;
        let mut log = LogFile::open(&path, Limits::new(max, 2)).unwrap();
        // 1000 lines of 700 bytes in writes of 37 lines: about 10 files'
        // worth, so the chain is shifted many times.
        let lines: Vec<Vec<u8>> = (0..1000).map(|n| numbered(n, 700)).collect();
        for chunk in lines.chunks(37) {
            log.append(&chunk.concat());
        }
        let files = [path.clone(), rotated(&path, 1), rotated(&path, 2)];
        assert!(!rotated(&path, 3).exists());
        let mut seen = Vec::new();
        for file in files.iter().rev() {
            let text = fs::read(file).unwrap();
            assert!(text.len() as u64 <= max, "{} too large", file.display());
            assert!(text.ends_with(b"\n"));
            seen.extend(text.split_inclusive(|&b| b == b'\n').map(<[u8]>::to_vec));
        }
        // The files hold the newest lines, in order, each whole: a full
        // file lacks less than one line of room.
        let first = 1000 - seen.len();
        assert_eq!(seen, lines[first..]);
        let per_file = max as usize / 700;
        assert!(seen.len() >= 2 * per_file, "{} lines kept", seen.len());
        assert_eq!(size(&rotated(&path, 1)), Some((per_file * 700) as u64));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_file_already_too_large_is_rotated_first_and_keep_zero_drops_it() {
        let dir = scratch("keep0");
        let path = dir.join("x.log");
        fs::write(&path, vec![b'a'; MAX_LINE + 10]).unwrap();
        let mut log = LogFile::open(&path, Limits::new(0, 0)).unwrap();
        log.append(b"fresh\n");
        assert_eq!(fs::read(&path).unwrap(), b"fresh\n");
        assert!(!rotated(&path, 1).exists());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_missing_file_is_created_again_and_losses_are_reported() {
        let dir = scratch("lost");
        let sub = dir.join("gone");
        fs::create_dir_all(&sub).unwrap();
        let path = sub.join("x.log");
        let mut log = LogFile::open(&path, Limits::new(0, 1)).unwrap();
        log.append(&numbered(1, MAX_LINE));
        // The directory disappears: the rotation cannot rename or create.
        fs::remove_dir_all(&sub).unwrap();
        log.append(&numbered(2, 100));
        log.append(&numbered(3, 100));
        fs::create_dir_all(&sub).unwrap();
        log.append(&numbered(4, 100));
        let text = String::from_utf8(fs::read(&path).unwrap()).unwrap();
        let mut lines = text.lines();
        let warning = lines.next().unwrap();
        assert!(
            warning.contains(" WARNING 200 bytes of output were lost: unable to"),
            "{text}"
        );
        assert!(lines.next().unwrap().starts_with("00000004 "), "{text}");
        assert_eq!(lines.next(), None);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn remove_all_takes_the_rotated_files_too() {
        let dir = scratch("remove");
        let path = dir.join("x.log");
        for p in [path.clone(), rotated(&path, 1), rotated(&path, 7)] {
            fs::write(p, b"x\n").unwrap();
        }
        remove_all(&path).unwrap();
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 0);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_file_that_is_not_regular_is_never_rotated() {
        let mut log = LogFile::open(Path::new("/dev/null"), Limits::new(0, 3)).unwrap();
        for _ in 0..3 {
            log.append(&numbered(0, MAX_LINE));
        }
        assert!(!Path::new("/dev/null.1").exists());
    }
}
