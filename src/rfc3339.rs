//! RFC 3339 times in UTC, the one format of the timestamps the programs
//! write and read: [`Timestamp`] shows a time as
//! `2026-11-24T16:50:46.123456Z` (the supervisor's log lines, the heart's
//! event log, `started_at` and `last_checked` in the API), [`parse`] reads
//! one back (`?since=`), with or without fractional seconds, in `Z` or
//! with a numeric offset.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A time shown as RFC 3339 in UTC with microseconds:
/// `2026-11-24T16:50:46.123456Z`.
pub(crate) struct Timestamp(pub SystemTime);

impl Timestamp {
    /// The time `secs` seconds after the Unix epoch.
    pub(crate) fn from_secs(secs: f64) -> Timestamp {
        Timestamp(UNIX_EPOCH + Duration::from_secs_f64(secs.max(0.0)))
    }
}

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

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Reads an RFC 3339 time (`2026-11-24T16:50:46Z`,
/// `2026-11-24T16:50:46.5+01:00`; `t` and a space are taken for `T`) as
/// seconds since the Unix epoch.
///
/// # Errors
///
/// A message quoting `text` when it is not such a time.
pub(crate) fn parse(text: &str) -> Result<f64, String> {
    let bad = || format!("invalid time {text:?}: expected RFC 3339, e.g. 2026-11-24T16:50:46Z");
    let b = text.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return Err(bad());
    }
    if b[13] != b':' || b[16] != b':' {
        return Err(bad());
    }
    let num = |range: std::ops::Range<usize>| -> Result<u32, String> {
        let part = text.get(range).ok_or_else(bad)?;
        if !part.bytes().all(|c| c.is_ascii_digit()) {
            return Err(bad());
        }
        part.parse().map_err(|_| bad())
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return Err(bad());
    }
    if second > 60 {
        return Err(bad());
    }
    let mut rest = &text[19..];
    let mut fraction = 0.0;
    if let Some(after) = rest.strip_prefix('.') {
        let digits = after.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad());
        }
        fraction = format!("0.{}", &after[..digits])
            .parse::<f64>()
            .map_err(|_| bad())?;
        rest = &after[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first() {
                Some(b'+') => 1,
                Some(b'-') => -1,
                _ => return Err(bad()),
            };
            let rb = rest.as_bytes();
            if rb.len() != 6 || rb[3] != b':' {
                return Err(bad());
            }
            let hours: i64 = rest[1..3].parse().map_err(|_| bad())?;
            let minutes: i64 = rest[4..6].parse().map_err(|_| bad())?;
            sign * (hours * 3600 + minutes * 60)
        }
    };
    let days = days_from_civil(i64::from(year), month, day);
    let secs = days * 86_400 + i64::from(hour) * 3600 + i64::from(minute) * 60 + i64::from(second)
        - offset;
    Ok(secs as f64 + fraction)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        for days in [-1, 0, 11_016, 47_541, 20_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }

    #[test]
    fn parse_reads_what_timestamp_writes_and_offsets() {
        assert_eq!(
            parse("2026-11-23T16:50:46.123456Z").unwrap(),
            1_795_452_646.123456
        );
        assert_eq!(parse("1970-01-01T00:00:00Z").unwrap(), 0.0);
        assert_eq!(parse("1970-01-01T01:00:00+01:00").unwrap(), 0.0);
        assert_eq!(parse("1969-12-31T23:00:00-01:00").unwrap(), 0.0);
        for bad in [
            "",
            "yesterday",
            "2026-11-23",
            "2026-13-01T00:00:00Z",
            "2026-11-23T16:50:46",
            "2026-11-23T16:50:46.Z",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
