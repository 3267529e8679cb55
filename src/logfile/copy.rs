//! Copying a pipe into a log by whole lines: the thread that reads a
//! command's output and appends it to a [`Shared`] log.
//!
//! The bytes read are cut into lines ([`Lines`]); every complete line is
//! written at once, many lines in one `write`. The unfinished line at the
//! end of a read is held, in one fixed buffer of [`MAX_LINE`] bytes, only
//! until its newline arrives, and at most [`HOLD`] or [`MAX_LINE`] bytes:
//! after that it is written as a piece ended with a newline of its own,
//! and the rest of the line follows as a line of its own. At the end of
//! the input a held line is written the same way. So the log only ever
//! receives whole lines, which is what lets [`LogFile`] rotate between
//! lines and lets other threads' lines go in between them.
//!
//! Memory: the buffer is allocated zeroed, so only the pages that data
//! reaches are ever touched, and a read takes at most [`READ_CHUNK`]
//! bytes: an instance that writes short lines touches a few pages of it,
//! one that writes 64 KiB lines touches all of it.
//!
//! The read end is made non-blocking (it is ours alone: the writer's end
//! is another open file, unaffected); the thread blocks in `poll` only
//! when the pipe is empty, with the hold deadline as its timeout while a
//! line is held.
//!
//! [`LogFile`]: super::LogFile

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::process::Stdio;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::unistd::pipe2;

use super::event::{self, Level};
use super::{Shared, MAX_LINE};

/// The longest an unfinished line is held before it is written as a piece.
pub(crate) const HOLD: Duration = Duration::from_secs(1);

/// The most bytes one read takes from the pipe.
pub(crate) const READ_CHUNK: usize = 16 * 1024;

/// Stack of a copier thread: it reads, writes and renames; it formats a
/// message only when something fails.
const STACK: usize = 64 * 1024;

/// A byte stream cut into whole lines of at most [`MAX_LINE`] bytes.
#[derive(Debug, Default)]
pub(crate) struct Lines {
    /// Allocated at the first read; `held` bytes at its start are an
    /// unfinished line.
    buf: Vec<u8>,
    held: usize,
    /// When the first byte of the held line arrived.
    since: Option<Instant>,
}

impl Lines {
    /// The place for the next read: after the held line, at most
    /// [`READ_CHUNK`] bytes, and one byte short of the buffer's end, kept
    /// for the newline that ends a piece.
    pub(crate) fn space(&mut self) -> &mut [u8] {
        if self.buf.is_empty() {
            // Zeroed by the allocator: fresh pages stay untouched until
            // data reaches them.
            self.buf = vec![0; MAX_LINE];
        }
        let end = (self.held + READ_CHUNK).min(MAX_LINE - 1);
        &mut self.buf[self.held..end]
    }

    /// Takes `n` bytes just read into [`Lines::space`]: passes the
    /// complete lines (and a piece of [`MAX_LINE`] bytes if the held line
    /// reached that length) to `out`, and holds the rest.
    pub(crate) fn filled(&mut self, n: usize, now: Instant, mut out: impl FnMut(&[u8])) {
        let start = self.held;
        let total = start + n;
        // The held part has no newline: only the new bytes are searched,
        // from the end, so the search stops at the last line end.
        match self.buf[start..total].iter().rposition(|&b| b == b'\n') {
            Some(i) => {
                let end = start + i + 1;
                out(&self.buf[..end]);
                self.buf.copy_within(end..total, 0);
                self.held = total - end;
                self.since = (self.held > 0).then_some(now);
            }
            None => {
                self.held = total;
                self.since.get_or_insert(now);
            }
        }
        if self.held == MAX_LINE - 1 {
            self.flush(out);
        }
    }

    /// When the held line must be written, if one is held.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.since.map(|since| since + HOLD)
    }

    /// Writes the held line, if any, as a piece ended with a newline.
    pub(crate) fn flush(&mut self, mut out: impl FnMut(&[u8])) {
        if self.held > 0 {
            self.buf[self.held] = b'\n';
            out(&self.buf[..=self.held]);
        }
        self.held = 0;
        self.since = None;
    }
}

/// A running copier thread.
#[derive(Debug)]
pub(crate) struct Copier {
    /// Disconnected once the thread has copied everything and ended.
    done: Receiver<()>,
}

impl Copier {
    /// Starts a thread named `name` that copies `source`, the read end of
    /// a pipe that nothing else reads, into `sink` until end of file.
    ///
    /// # Errors
    ///
    /// The read end cannot be made non-blocking, or the thread cannot be
    /// started.
    pub(crate) fn spawn(name: &str, source: OwnedFd, sink: Arc<Shared>) -> io::Result<Copier> {
        set_nonblocking(&source)?;
        let (tx, done) = mpsc::channel::<()>();
        thread::Builder::new()
            .name(name.into())
            .stack_size(STACK)
            .spawn(move || {
                copy(File::from(source), &sink, false);
                drop(tx);
            })?;
        Ok(Copier { done })
    }

    /// Waits at most `timeout` for the copier to reach the end of its
    /// input, with everything written; true if it has.
    pub(crate) fn wait(&self, timeout: Duration) -> bool {
        matches!(
            self.done.recv_timeout(timeout),
            Err(RecvTimeoutError::Disconnected)
        )
    }
}

/// Makes a command's stdout and stderr: one pipe, so that their lines
/// reach `sink` in the order they were written (a write of up to
/// `PIPE_BUF` bytes is never mixed with another). Starts a copier thread
/// named `name` on its read end, which appends what comes until every
/// writer has closed the pipe, and returns it with the write end twice.
///
/// Both ends are close-on-exec: the command gets the write end as its
/// fds 1 and 2 only, and the read end never leaves this process, so if
/// this process dies, writes to the pipe fail with `EPIPE` instead of
/// blocking on a pipe nobody reads. The caller must drop its copies of
/// the write end once the command runs, or the copier never ends.
///
/// # Errors
///
/// The pipe or the thread cannot be made.
pub(crate) fn output_pipe(name: &str, sink: Arc<Shared>) -> io::Result<(Copier, [Stdio; 2])> {
    let (read, write) = pipe2(OFlag::O_CLOEXEC)?;
    let err = write.try_clone()?;
    let copier = Copier::spawn(name, read, sink)?;
    Ok((copier, [Stdio::from(write), Stdio::from(err)]))
}

/// Copies `source`, the read end of a pipe that nothing else reads, into
/// `sink` on this thread until end of file, each line stamped with the
/// time it was read when `stamped` (`event::stamp`): the loop of a piped
/// logger (`pm-supervisor --log-pipe`).
///
/// # Errors
///
/// The read end cannot be made non-blocking.
pub(crate) fn run(source: OwnedFd, sink: &Shared, stamped: bool) -> io::Result<()> {
    set_nonblocking(&source)?;
    copy(File::from(source), sink, stamped);
    Ok(())
}

/// Makes reads of `fd` non-blocking.
fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    let flags = fcntl(fd, FcntlArg::F_GETFL).map_err(io::Error::from)?;
    let flags = OFlag::from_bits_retain(flags) | OFlag::O_NONBLOCK;
    fcntl(fd, FcntlArg::F_SETFL(flags)).map_err(io::Error::from)?;
    Ok(())
}

/// The copier's loop: until end of file (every writer has closed the
/// pipe) or a read error; lines are stamped when `stamped`.
fn copy(mut pipe: File, sink: &Shared, stamped: bool) {
    let mut lines = Lines::default();
    let mut stamps = Vec::new();
    let mut write = |bytes: &[u8]| {
        if stamped {
            stamps.clear();
            event::stamp(bytes, &mut stamps);
            sink.append(&stamps);
        } else {
            sink.append(bytes);
        }
    };
    // The buffer is allocated by the first read: a command that never
    // writes never costs it.
    wait_readable(&pipe, None);
    loop {
        match pipe.read(lines.space()) {
            Ok(0) => break,
            Ok(n) => lines.filled(n, Instant::now(), &mut write),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if !wait_readable(&pipe, lines.deadline()) {
                    lines.flush(&mut write);
                }
            }
            Err(e) => {
                lines.flush(&mut write);
                sink.event(
                    Level::Error,
                    format_args!("Unable to read the command's output: {e}; no more is logged"),
                );
                return;
            }
        }
    }
    lines.flush(&mut write);
}

/// Blocks until `pipe` is readable (or hung up): true; or until
/// `deadline`: false.
fn wait_readable(pipe: &File, deadline: Option<Instant>) -> bool {
    loop {
        let timeout = match deadline {
            None => PollTimeout::NONE,
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return false;
                }
                // Rounded up, so that a wake-up is never early.
                let ms = left.as_nanos().div_ceil(1_000_000);
                PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
            }
        };
        let mut fds = [PollFd::new(pipe.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, timeout) {
            Ok(0) => return false,
            Ok(_) => return true,
            Err(Errno::EINTR) => {}
            // Cannot happen with one valid descriptor; the read that
            // follows reports what is wrong.
            Err(_) => return true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `chunks` through [`Lines`] as reads, and flushes at the end.
    fn cut(chunks: &[&[u8]]) -> Vec<Vec<u8>> {
        let mut lines = Lines::default();
        let mut out = Vec::new();
        let now = Instant::now();
        for chunk in chunks {
            let mut rest = *chunk;
            while !rest.is_empty() {
                let space = lines.space();
                let n = space.len().min(rest.len());
                space[..n].copy_from_slice(&rest[..n]);
                rest = &rest[n..];
                lines.filled(n, now, |b| out.push(b.to_vec()));
            }
        }
        lines.flush(|b| out.push(b.to_vec()));
        out
    }

    #[test]
    fn complete_lines_go_out_at_once_and_together() {
        assert_eq!(cut(&[b"a\nb\nc"]), [b"a\nb\n".to_vec(), b"c\n".to_vec()]);
        assert_eq!(
            cut(&[b"he", b"llo\nwor", b"ld\n"]),
            [b"hello\n".to_vec(), b"world\n".to_vec()]
        );
        assert_eq!(cut(&[b"\n\n"]), [b"\n\n".to_vec()]);
        assert!(cut(&[]).is_empty());
    }

    #[test]
    fn a_long_line_is_written_in_pieces_of_max_line() {
        let long = vec![b'x'; 2 * MAX_LINE + 5];
        let mut input = long.clone();
        input.extend_from_slice(b"\nnext\n");
        let out = cut(&[&input]);
        let sizes: Vec<usize> = out.iter().map(Vec::len).collect();
        assert_eq!(sizes, [MAX_LINE, MAX_LINE, 13]);
        for piece in &out[..2] {
            assert_eq!(piece.last(), Some(&b'\n'));
        }
        // 2 pieces of MAX_LINE - 1 bytes and their newlines; the 7 bytes
        // left end the line, and the next line goes with them.
        assert_eq!(out[2], b"xxxxxxx\nnext\n");
        let rejoined: Vec<u8> = out
            .concat()
            .split(|&b| b == b'\n')
            .take(3)
            .flatten()
            .copied()
            .collect();
        assert_eq!(rejoined, long);
    }

    #[test]
    fn a_held_line_has_a_deadline_from_its_first_byte() {
        let mut lines = Lines::default();
        assert_eq!(lines.deadline(), None);
        let t0 = Instant::now();
        lines.space()[..3].copy_from_slice(b"abc");
        lines.filled(3, t0, |_| panic!("nothing complete"));
        assert_eq!(lines.deadline(), Some(t0 + HOLD));
        let t1 = t0 + Duration::from_millis(10);
        lines.space()[..1].copy_from_slice(b"d");
        lines.filled(1, t1, |_| panic!("nothing complete"));
        assert_eq!(lines.deadline(), Some(t0 + HOLD), "the first byte counts");
        let mut out = Vec::new();
        lines.space()[..4].copy_from_slice(b"\nef\n");
        lines.filled(4, t1, |b| out.extend_from_slice(b));
        assert_eq!(out, b"abcd\nef\n");
        assert_eq!(lines.deadline(), None);
    }

    #[test]
    fn reads_are_bounded_by_the_chunk() {
        let mut lines = Lines::default();
        assert_eq!(lines.space().len(), READ_CHUNK);
    }
}
