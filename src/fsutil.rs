//! Durable file writes and small file helpers, log tails among them.
//!
//! State files (catalog, pidfile, startflag, `.exited`, control files) are
//! never written in place: the bytes go to `NAME.new`, which is synced,
//! renamed over `NAME`, and then the directory is synced, so that a crash
//! leaves either the old file or the new one, never a torn one.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The temporary name `write_atomic` writes before the rename.
pub(crate) fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".new");
    path.with_file_name(name)
}

/// Writes `data` to `path` atomically and durably, with permissions `mode`.
///
/// # Errors
///
/// Any failure to create, write, sync or rename, with the path it concerns.
pub(crate) fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    let tmp = temp_path(path);
    let result = write_synced(&tmp, data, mode)
        .and_then(|()| fs::rename(&tmp, path).map_err(|e| Error::io("rename into", path, e)))
        .and_then(|()| sync_parent(path));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn write_synced(tmp: &Path, data: &[u8], mode: u32) -> Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(tmp)
        .map_err(|e| Error::io("create", tmp, e))?;
    file.write_all(data)
        .map_err(|e| Error::io("write", tmp, e))?;
    file.sync_all().map_err(|e| Error::io("sync", tmp, e))
}

/// Syncs the directory that holds `path`, so that a rename or unlink in it
/// survives a crash.
///
/// # Errors
///
/// Opening or syncing the directory failed.
pub(crate) fn sync_parent(path: &Path) -> Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => sync_dir(dir),
        _ => sync_dir(Path::new(".")),
    }
}

/// Syncs the directory `dir` itself: its entries survive a crash.
///
/// # Errors
///
/// Opening or syncing the directory failed.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("sync directory", dir, e))
}

/// Reads `path` as UTF-8 text; `what` names the file in the error.
///
/// # Errors
///
/// The file cannot be opened or read, or is not UTF-8.
pub(crate) fn read_text(path: &Path, what: &str) -> Result<String> {
    fs::read_to_string(path).map_err(|e| Error::io(format!("read {what}"), path, e))
}

/// Removes `path`; a file that is already gone is not an error.
///
/// # Errors
///
/// Any other failure to unlink.
pub(crate) fn remove_if_exists(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(Error::io("remove", path, e)),
        _ => Ok(()),
    }
}

/// Creates `path` and its parents with permissions `mode` for the ones it
/// creates.
///
/// # Errors
///
/// A component cannot be created.
pub(crate) fn create_dir_all(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(path)
        .map_err(|e| Error::io("create directory", path, e))
}

/// The end of the file at `path` as text (invalid UTF-8 replaced): its
/// bytes from offset `from`, or only its last `max_bytes` when that starts
/// later; never more than `max_bytes`, even if the file grows meanwhile.
///
/// # Errors
///
/// The file cannot be opened, sought or read.
pub(crate) fn read_tail(path: &Path, max_bytes: u64, from: u64) -> io::Result<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    file.seek(SeekFrom::Start(from.max(len.saturating_sub(max_bytes))))?;
    let mut bytes = Vec::new();
    file.take(max_bytes).read_to_end(&mut bytes)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// The tail of a log: the last `max_bytes` of the file at `path`, and of
/// those only the last `lines` lines when given (each ending with a
/// newline). Empty when the file cannot be read: a tail is quoted in
/// answers and messages, where a missing log is no error.
pub(crate) fn tail(path: &Path, max_bytes: u64, lines: Option<usize>) -> String {
    let Ok(text) = read_tail(path, max_bytes, 0) else {
        return String::new();
    };
    let Some(n) = lines else {
        return text;
    };
    let all: Vec<&str> = text.lines().collect();
    let mut out = all[all.len().saturating_sub(n)..].join("\n");
    if !out.is_empty() {
        out.push('\n');
    }
    out
}

/// A scratch directory for one unit test, removed on drop.
#[cfg(test)]
pub(crate) struct Scratch(pub PathBuf);

#[cfg(test)]
impl Scratch {
    /// `$TMPDIR/pm-NAME-PID`, empty.
    pub(crate) fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("pm-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

#[cfg(test)]
impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("pm-fsutil-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn write_atomic_replaces_and_leaves_no_temp_file() {
        let dir = scratch("replace");
        let path = dir.join("state.json");
        write_atomic(&path, b"one", 0o600).unwrap();
        write_atomic(&path, b"two", 0o600).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert!(!temp_path(&path).exists());
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn write_atomic_into_missing_directory_names_the_path() {
        let err = write_atomic(Path::new("/nonexistent-pm/x"), b"", 0o644).unwrap_err();
        assert!(err.to_string().contains("/nonexistent-pm/x.new"), "{err}");
    }

    #[test]
    fn tail_keeps_the_last_lines_of_the_last_bytes() {
        let dir = scratch("tail");
        let path = dir.join("x.log");
        fs::write(&path, "a\nb\nc\n").unwrap();
        assert_eq!(tail(&path, 1 << 20, Some(2)), "b\nc\n");
        assert_eq!(tail(&path, 1 << 20, None), "a\nb\nc\n");
        assert_eq!(tail(&path, 4, None), "b\nc\n");
        assert_eq!(tail(&path, 1 << 20, Some(0)), "");
        assert_eq!(tail(&dir.join("none"), 1 << 20, Some(2)), "");
        assert_eq!(read_tail(&path, 1 << 20, 4).unwrap(), "c\n");
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn remove_if_exists_accepts_missing_files() {
        let dir = scratch("remove");
        remove_if_exists(&dir.join("absent")).unwrap();
        fs::remove_dir_all(dir).unwrap();
    }
}
