//! Event lines: `RFC3339-timestamp LEVEL message`, the one format of the
//! lines a program writes about itself into a log (the supervisor's lines
//! in an instance log, the heart's event log).

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

#[cfg(test)]
mod tests {
    use super::*;

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
