//! The `.exited` file: a result code that could not be reported.
//!
//! When the supervisor cannot deliver its exit report before its deadline,
//! it records the code in `<pidfile dir>/<id>.exited` for the heart to
//! apply later. This module is the file's one writer ([`write`], used by
//! `pm-supervisor`) and its one reader ([`read`], used by the heart), like
//! s6's `s6_svstatus_write` and `s6_svstatus_read`. The format is the code
//! in decimal and a newline, written atomically.

use std::path::{Path, PathBuf};

use super::InstanceId;
use crate::error::{Error, Result};
use crate::fsutil;

/// The `.exited` file of `id` in `dir` (the directory of the pidfile).
pub fn path(dir: &Path, id: &InstanceId) -> PathBuf {
    dir.join(format!("{id}.exited"))
}

/// The directory that holds the pidfile `pidfile` (`.` for a bare name).
pub fn dir_of(pidfile: &Path) -> &Path {
    match pidfile.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// Records `code` at `path`, atomically and durably, mode 0600.
///
/// # Errors
///
/// The file cannot be written.
pub(crate) fn write(path: &Path, code: i32) -> Result<()> {
    fsutil::write_atomic(path, format!("{code}\n").as_bytes(), 0o600)
}

/// What [`read`] found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Recorded {
    /// No file.
    Absent,
    /// The recorded code.
    Code(i32),
    /// A file that is not a code; its text, for the warning.
    Corrupt(String),
}

/// Reads the `.exited` file at `path`.
///
/// # Errors
///
/// The file exists but cannot be read.
pub(crate) fn read(path: &Path) -> Result<Recorded> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(parse(&text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Recorded::Absent),
        Err(e) => Err(Error::io("read", path, e)),
    }
}

fn parse(text: &str) -> Recorded {
    match text.strip_suffix('\n').unwrap_or(text).parse::<i32>() {
        Ok(code) => Recorded::Code(code),
        Err(_) => Recorded::Corrupt(text.chars().take(64).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_the_writer_writes_the_reader_reads() {
        let dir = std::env::temp_dir().join(format!("pm-exited-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let id: InstanceId = "web-1".parse().unwrap();
        let file = path(&dir, &id);
        assert_eq!(file, dir.join("web-1.exited"));
        assert_eq!(read(&file).unwrap(), Recorded::Absent);
        for code in [0, 3, -15, 255] {
            write(&file, code).unwrap();
            assert_eq!(read(&file).unwrap(), Recorded::Code(code));
        }
        std::fs::write(&file, "{\"code\": 3}").unwrap();
        assert!(matches!(read(&file).unwrap(), Recorded::Corrupt(_)));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn the_directory_of_a_bare_pidfile_is_the_current_one() {
        assert_eq!(dir_of(Path::new("x.pid")), Path::new("."));
        assert_eq!(dir_of(Path::new("/run/pm/x.pid")), Path::new("/run/pm"));
    }
}
