//! Event lines: `RFC3339-timestamp LEVEL message`, the one format of the
//! lines a program writes about itself into a log (the supervisor's lines
//! in an instance log, the heart's event log); and [`stamp`], which puts
//! the same timestamp before lines that another program wrote (the
//! managed Apache's logs), so that every log can be read from a time.

use std::fmt;
use std::io::Write;
use std::time::SystemTime;

use super::MAX_LINE;
use crate::rfc3339::Timestamp;

/// Severity of an event line.
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
    /// The word in the line: `INFO`, `WARNING`, `ERROR`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Level::Info => "INFO",
            Level::Warning => "WARNING",
            Level::Error => "ERROR",
        }
    }
}

/// Formats one event line stamped now, newline included. A message that
/// would make the line longer than [`MAX_LINE`] is cut so that the line
/// is exactly that long, and a newline in the message becomes a space:
/// an event is always one line.
pub(crate) fn line(level: Level, message: fmt::Arguments<'_>) -> Vec<u8> {
    let mut buf = Vec::with_capacity(128);
    let _ = write!(
        buf,
        "{} {} {}",
        Timestamp(SystemTime::now()),
        level.as_str(),
        message
    );
    buf.truncate(MAX_LINE - 1);
    for b in &mut buf {
        if *b == b'\n' {
            *b = b' ';
        }
    }
    buf.push(b'\n');
    buf
}

/// Appends `lines` (whole lines, each ended by a newline) to `out`, each
/// after the time now and a space. A line that would then be longer than
/// [`MAX_LINE`] is cut into pieces that are not, each stamped and ended
/// with a newline of its own.
pub(crate) fn stamp(lines: &[u8], out: &mut Vec<u8>) {
    let mut prefix = Vec::with_capacity(32);
    let _ = write!(prefix, "{} ", Timestamp(SystemTime::now()));
    let room = MAX_LINE - prefix.len() - 1;
    for line in lines.split_inclusive(|&b| b == b'\n') {
        let body = line.strip_suffix(b"\n").unwrap_or(line);
        let mut pieces = body.chunks(room).peekable();
        if pieces.peek().is_none() {
            out.extend_from_slice(&prefix);
            out.push(b'\n');
        }
        for piece in pieces {
            out.extend_from_slice(&prefix);
            out.extend_from_slice(piece);
            out.push(b'\n');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamped_lines_stay_lines_within_the_bound() {
        let mut out = Vec::new();
        stamp(b"GET / 200\n\nlast", &mut out);
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].ends_with("Z GET / 200"), "{text}");
        assert!(crate::rfc3339::parse(lines[1].trim_end()).is_ok(), "{text}");
        assert!(lines[2].ends_with("Z last"), "{text}");
        let mut long = vec![b'x'; MAX_LINE];
        long.push(b'\n');
        let mut out = Vec::new();
        stamp(&long, &mut out);
        let pieces: Vec<&[u8]> = out.split_inclusive(|&b| b == b'\n').collect();
        assert_eq!(pieces.len(), 2);
        assert!(pieces.iter().all(|p| p.len() <= MAX_LINE));
    }

    #[test]
    fn an_event_is_one_bounded_line() {
        let text = String::from_utf8(line(Level::Warning, format_args!("a\nb"))).unwrap();
        assert!(text.ends_with(" WARNING a b\n"), "{text:?}");
        assert_eq!(text.split(' ').next().unwrap().len(), 27);
        let long = "x".repeat(2 * MAX_LINE);
        let text = line(Level::Info, format_args!("{long}"));
        assert_eq!(text.len(), MAX_LINE);
        assert_eq!(text.last(), Some(&b'\n'));
    }
}
