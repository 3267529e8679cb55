//! Following a log file as it is written (`log --follow`, `events
//! --follow`), independent of any HTTP server: a [`Follower`] hands out
//! the new whole lines of a file as they appear, across rotations, until
//! the caller's `keep_going` says stop.
//!
//! Where it starts: at the end of the file, or `tail` lines before it, or
//! (with `since`) at the first line stamped at or after that time (a line
//! that does not start with an RFC 3339 time, such as an application's
//! own output, goes with the stamped line before it); only the last
//! [`START_MAX`] bytes are looked at.
//!
//! Rotation: the file is polled every [`POLL`]. When the path names
//! another file than the one open (the log was renamed to `PATH.1` and a
//! new one created, by the supervisor or by logrotate), what is left of
//! the old file is read to its end first, then the new file from its
//! start; when the file got shorter than what was read (truncated in
//! place, logrotate's `copytruncate`), it is read again from its start.
//! A line still being written is held back until its newline arrives
//! (or it grows past [`LINE_MAX`]), so lines are never handed out split.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::Duration;

use crate::rfc3339;

/// How often the file is looked at when nothing new was there.
pub(crate) const POLL: Duration = Duration::from_millis(100);

/// The most of the file looked at for the starting point.
pub(crate) const START_MAX: u64 = 1 << 20;

/// A partial line longer than this is handed out without its newline.
pub(crate) const LINE_MAX: usize = 64 * 1024;

/// Where a follow starts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Start {
    /// At the end: only what is written from now on.
    End,
    /// The last N lines first.
    Tail(usize),
    /// The first line stamped at or after this time (seconds since the
    /// Unix epoch).
    Since(f64),
}

/// A file being followed.
pub(crate) struct Follower {
    path: PathBuf,
    file: Option<File>,
    /// Device and inode of `file`.
    ident: (u64, u64),
    /// Bytes of `file` read so far.
    pos: u64,
    /// Read but not handed out: the start of a line still being written.
    partial: Vec<u8>,
    /// Handed out by `read` but not yet read by its caller.
    unread: Vec<u8>,
    start: Option<Start>,
    keep_going: Box<dyn FnMut() -> bool + Send>,
}

impl Follower {
    /// Follows `path` from `start`, as long as `keep_going` says so (it is
    /// asked at every poll).
    pub(crate) fn new(
        path: PathBuf,
        start: Start,
        keep_going: impl FnMut() -> bool + Send + 'static,
    ) -> Follower {
        Follower {
            path,
            file: None,
            ident: (0, 0),
            pos: 0,
            partial: Vec::new(),
            unread: Vec::new(),
            start: Some(start),
            keep_going: Box::new(keep_going),
        }
    }

    /// The next whole lines; blocks (polling every [`POLL`]) until some
    /// are written. Once `keep_going` said stop, what is left is handed
    /// out (a last line without its newline too), then `None`.
    pub(crate) fn next_chunk(&mut self) -> Option<Vec<u8>> {
        self.next_chunk_with(|| {
            std::thread::sleep(POLL);
            false
        })
    }

    /// Like [`Follower::next_chunk`], with `wait` in place of the sleep
    /// between two looks at the file: it waits about [`POLL`] and answers
    /// true to end the follow (a client that went away); what is left is
    /// then handed out as when `keep_going` says stop.
    pub(crate) fn next_chunk_with(&mut self, mut wait: impl FnMut() -> bool) -> Option<Vec<u8>> {
        let mut stop = false;
        loop {
            if let Some(lines) = self.poll_once() {
                return Some(lines);
            }
            if stop || !(self.keep_going)() {
                // What was written up to the end is still handed out.
                let last = self.poll_once();
                let mut rest = std::mem::take(&mut self.partial);
                return match last {
                    Some(mut lines) => {
                        lines.append(&mut rest);
                        Some(lines)
                    }
                    None if !rest.is_empty() => Some(rest),
                    None => {
                        self.keep_going = Box::new(|| false);
                        None
                    }
                };
            }
            stop = wait();
        }
    }

    /// One look at the file: the whole lines that are new, if any.
    fn poll_once(&mut self) -> Option<Vec<u8>> {
        if self.file.is_none() {
            self.open_current();
        }
        let mut fresh = self.read_new();
        if fresh.is_empty() {
            // Nothing new in the open file: is it still the one at `path`?
            match fs::metadata(&self.path) {
                Ok(meta) if (meta.dev(), meta.ino()) != self.ident => {
                    // Rotated: the rest of the old file, then the new one.
                    let mut rest = self.read_new();
                    rest.append(&mut self.partial);
                    self.file = None;
                    self.open_current();
                    rest.extend(self.read_new());
                    fresh = rest;
                }
                Ok(meta) if meta.len() < self.pos => {
                    // Truncated in place.
                    self.pos = 0;
                    self.partial.clear();
                    fresh = self.read_new();
                }
                _ => {}
            }
        }
        let mut data = std::mem::take(&mut self.partial);
        data.extend(fresh);
        let cut = match data.iter().rposition(|&b| b == b'\n') {
            Some(i) => i + 1,
            None if data.len() > LINE_MAX => data.len(),
            None => 0,
        };
        self.partial = data.split_off(cut);
        (!data.is_empty()).then_some(data)
    }

    /// Opens the file at `path` (if there is one); the first time, at the
    /// starting point.
    fn open_current(&mut self) {
        let Ok(mut file) = File::open(&self.path) else {
            return;
        };
        let Ok(meta) = file.metadata() else {
            return;
        };
        self.ident = (meta.dev(), meta.ino());
        self.pos = match self.start.take() {
            None => 0,
            Some(start) => starting_point(&mut file, meta.len(), start),
        };
        self.file = Some(file);
    }

    /// What the open file holds past `pos`.
    fn read_new(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        if let Some(file) = &mut self.file {
            if file.seek(SeekFrom::Start(self.pos)).is_ok() {
                let _ = file.take(8 << 20).read_to_end(&mut out);
            }
        }
        self.pos += out.len() as u64;
        out
    }
}

/// Blocks until new lines are there; 0 (the end) once the follow ended.
impl Read for Follower {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.unread.is_empty() {
            match self.next_chunk() {
                Some(chunk) => self.unread = chunk,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.unread.len());
        buf[..n].copy_from_slice(&self.unread[..n]);
        self.unread.drain(..n);
        Ok(n)
    }
}

/// The offset in `file` (of `len` bytes) where a follow from `start`
/// begins.
fn starting_point(file: &mut File, len: u64, start: Start) -> u64 {
    if start == Start::End {
        return len;
    }
    let from = len.saturating_sub(START_MAX);
    let mut text = Vec::new();
    if file.seek(SeekFrom::Start(from)).is_err()
        || file.take(START_MAX).read_to_end(&mut text).is_err()
    {
        return len;
    }
    // Only whole lines: skip a first line cut by the window.
    let skip = if from > 0 {
        text.iter()
            .position(|&b| b == b'\n')
            .map_or(text.len(), |i| i + 1)
    } else {
        0
    };
    from + skip as u64 + offset_in(&text[skip..], start) as u64
}

/// Where in `text` (whole lines) a follow from `start` begins.
pub(crate) fn offset_in(text: &[u8], start: Start) -> usize {
    let starts = std::iter::once(0)
        .chain(
            text.iter()
                .enumerate()
                .filter(|&(i, &b)| b == b'\n' && i + 1 < text.len())
                .map(|(i, _)| i + 1),
        )
        .collect::<Vec<usize>>();
    match start {
        Start::End => text.len(),
        Start::Tail(0) => text.len(),
        Start::Tail(n) if text.is_empty() || n >= starts.len() => 0,
        Start::Tail(n) => starts[starts.len() - n],
        Start::Since(t) => starts
            .iter()
            .copied()
            .find(|&i| stamp_of(&text[i..]).is_some_and(|s| s >= t))
            .unwrap_or(text.len()),
    }
}

/// The time a line starts with, if it starts with one.
fn stamp_of(line: &[u8]) -> Option<f64> {
    let end = line.iter().position(|&b| b == b' ' || b == b'\n')?;
    rfc3339::parse(std::str::from_utf8(&line[..end]).ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    #[test]
    fn starting_points() {
        let text = b"2026-01-01T00:00:00Z INFO a\nout\n2026-01-01T00:00:02Z INFO b\nmore\n";
        assert_eq!(offset_in(text, Start::End), text.len());
        assert_eq!(&text[offset_in(text, Start::Tail(1))..], b"more\n");
        assert_eq!(
            &text[offset_in(text, Start::Tail(2))..],
            b"2026-01-01T00:00:02Z INFO b\nmore\n"
        );
        assert_eq!(offset_in(text, Start::Tail(9)), 0);
        assert_eq!(offset_in(text, Start::Tail(0)), text.len());
        let since = rfc3339::parse("2026-01-01T00:00:01Z").unwrap();
        assert_eq!(
            &text[offset_in(text, Start::Since(since))..],
            b"2026-01-01T00:00:02Z INFO b\nmore\n"
        );
        assert_eq!(offset_in(text, Start::Since(0.0)), 0);
        assert_eq!(offset_in(text, Start::Since(4e9)), text.len());
    }

    #[test]
    fn follows_new_lines_across_a_rotation_and_ends_when_told() {
        let dir = std::env::temp_dir().join(format!("pm-follow-unit-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("x.log");
        fs::write(&path, "old 1\nold 2\n").unwrap();
        let go = Arc::new(AtomicBool::new(true));
        let flag = Arc::clone(&go);
        let mut follower = Follower::new(path.clone(), Start::Tail(1), move || {
            flag.load(Ordering::SeqCst)
        });
        assert_eq!(follower.next_chunk().unwrap(), b"old 2\n");
        let mut file = fs::OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(b"new 1\nhalf").unwrap();
        assert_eq!(follower.next_chunk().unwrap(), b"new 1\n");
        file.write_all(b" done\n").unwrap();
        fs::rename(&path, dir.join("x.log.1")).unwrap();
        file.write_all(b"last of old\n").unwrap();
        fs::write(&path, "first of new\n").unwrap();
        let mut seen = Vec::new();
        while !seen.ends_with(b"first of new\n") {
            seen.extend(follower.next_chunk().unwrap());
        }
        assert_eq!(seen, b"half done\nlast of old\nfirst of new\n");
        go.store(false, Ordering::SeqCst);
        fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"said at the end\n")
            .unwrap();
        assert_eq!(follower.next_chunk().unwrap(), b"said at the end\n");
        assert_eq!(follower.next_chunk(), None);
        fs::remove_dir_all(&dir).unwrap();
    }
}
