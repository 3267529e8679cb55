//! Event lines: `RFC3339-timestamp LEVEL message`, the one format of the
//! lines a program writes about itself into a log (the supervisor's lines
//! in an instance log, the heart's event log).

use std::fmt;
use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use super::MAX_LINE;

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

/// A time shown as RFC 3339 in UTC with microseconds:
/// `2026-11-24T16:50:46.123456Z`.
pub(crate) struct Timestamp(pub SystemTime);

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let since = self.0.duration_since(UNIX_EPOCH).unwrap_or_default();
        let secs = since.as_secs();
        let (year, month, day) = civil_from_days((secs / 86_400) as i64);
        let rem = secs % 86_400;
        write!(
            f,
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
            rem / 3600,
            rem / 60 % 60,
            rem % 60,
            since.subsec_micros()
        )
    }
}

/// The proleptic Gregorian date of `days` since 1970-01-01 (Howard
/// Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11], March-based
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(secs: u64, micros: u32) -> String {
        Timestamp(UNIX_EPOCH + Duration::new(secs, micros * 1000)).to_string()
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(at(951_782_400, 5), "2000-02-29T00:00:00.000005Z");
        assert_eq!(at(1_795_452_646, 123_456), "2026-11-23T16:50:46.123456Z");
        assert_eq!(at(4_107_542_399, 999_999), "2100-02-28T23:59:59.999999Z");
    }

    #[test]
    fn civil_dates_round_the_leap_rules() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(47_541), (2100, 3, 1));
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
