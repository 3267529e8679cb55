//! The limits of a rotated log, parsed once at the edge: [`LogSize`], the
//! largest size of each file, and [`LogKeep`], how many rotated files are
//! kept (`log_max_size` and `log_keep` of the control file, the heart's
//! configuration, the register and update requests and the manifest);
//! [`LogLimits`], the two resolved for one log.

use std::fmt;
use std::str::FromStr;

use serde::{de, Deserialize, Deserializer, Serialize};
use serde_json::Value;

use super::limits::{parse_size, SizeError};
use crate::logfile::{MAX_KEEP, MAX_LINE};

/// The largest size of each file of a log, in bytes: from 64 KiB (the
/// longest line, so that every line fits in an empty file) to 1 TiB.
/// Written in JSON as a number of bytes, or as a string with the one size
/// rule of the suite (`limits::parse_size`): `"1M"` is 1048576 bytes. A
/// JSON value that is not one is refused naming the field, `log_max_size`
/// (its one name in every file and request).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(into = "u64")]
pub struct LogSize(u64);

/// A value that is not a log size within the bounds; its `Display` says
/// what was wrong and what is expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidLogSize(pub String);

impl fmt::Display for InvalidLogSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InvalidLogSize {}

impl LogSize {
    /// The smallest size: the longest line.
    pub const MIN: LogSize = LogSize(MAX_LINE as u64);
    /// The largest size: 1 TiB.
    pub const MAX: LogSize = LogSize(1 << 40);
    /// The default size of `log_max_size`: 10 MiB.
    pub const DEFAULT: LogSize = LogSize(10 << 20);

    /// The number of bytes.
    pub fn bytes(self) -> u64 {
        self.0
    }
}

impl LogSize {
    /// The expected form, for messages.
    const EXPECTED: &'static str = "a number of bytes, or a string of digits with an optional \
         K, M or G suffix (powers of 1024) like \"10M\", from 64K to 1024G";

    fn checked(bytes: u64, shown: &str) -> Result<LogSize, InvalidLogSize> {
        if (LogSize::MIN.0..=LogSize::MAX.0).contains(&bytes) {
            Ok(LogSize(bytes))
        } else {
            Err(InvalidLogSize(format!(
                "{shown} is out of range: expected {}",
                LogSize::EXPECTED
            )))
        }
    }
}

impl TryFrom<u64> for LogSize {
    type Error = InvalidLogSize;

    fn try_from(bytes: u64) -> Result<LogSize, InvalidLogSize> {
        LogSize::checked(bytes, &bytes.to_string())
    }
}

impl FromStr for LogSize {
    type Err = InvalidLogSize;

    fn from_str(s: &str) -> Result<LogSize, InvalidLogSize> {
        match parse_size(s) {
            Ok(bytes) => LogSize::checked(bytes, &format!("{s:?}")),
            Err(SizeError::Form) => Err(InvalidLogSize(format!(
                "{s:?} is not a size: expected {}",
                LogSize::EXPECTED
            ))),
            Err(SizeError::Overflow) => Err(InvalidLogSize(format!(
                "{s:?} is out of range: expected {}",
                LogSize::EXPECTED
            ))),
        }
    }
}

impl TryFrom<Value> for LogSize {
    type Error = InvalidLogSize;

    fn try_from(value: Value) -> Result<LogSize, InvalidLogSize> {
        match &value {
            Value::Number(n) => match n.as_u64() {
                Some(bytes) => LogSize::try_from(bytes),
                None => Err(InvalidLogSize(format!(
                    "{n} is not a whole number of bytes: expected {}",
                    LogSize::EXPECTED
                ))),
            },
            Value::String(s) => s.parse(),
            other => Err(InvalidLogSize(format!(
                "{other} is not a size: expected {}",
                LogSize::EXPECTED
            ))),
        }
    }
}

impl From<LogSize> for u64 {
    fn from(size: LogSize) -> u64 {
        size.0
    }
}

impl fmt::Display for LogSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} bytes", self.0)
    }
}

/// How many rotated files of a log are kept, 0 to 100: `PATH.1` (the
/// newest) to `PATH.N`. With 0, a full log is emptied. Written in JSON as
/// a whole number; any other value is refused naming the field,
/// `log_keep`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(into = "u32")]
pub struct LogKeep(u32);

/// A value that is not a number of files within the bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidLogKeep(pub String);

impl fmt::Display for InvalidLogKeep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} is not a number of log files to keep, from 0 to {MAX_KEEP}",
            self.0
        )
    }
}

impl std::error::Error for InvalidLogKeep {}

impl LogKeep {
    /// The default of `log_keep`: 5 files.
    pub const DEFAULT: LogKeep = LogKeep(5);

    /// The number of files.
    pub fn files(self) -> u32 {
        self.0
    }
}

impl TryFrom<u64> for LogKeep {
    type Error = InvalidLogKeep;

    fn try_from(files: u64) -> Result<LogKeep, InvalidLogKeep> {
        match u32::try_from(files) {
            Ok(n) if n <= MAX_KEEP => Ok(LogKeep(n)),
            _ => Err(InvalidLogKeep(files.to_string())),
        }
    }
}

impl FromStr for LogKeep {
    type Err = InvalidLogKeep;

    fn from_str(s: &str) -> Result<LogKeep, InvalidLogKeep> {
        let bad = || InvalidLogKeep(format!("{s:?}"));
        let n: u64 = s.trim().parse().map_err(|_| bad())?;
        LogKeep::try_from(n).map_err(|_| bad())
    }
}

impl From<LogKeep> for u32 {
    fn from(keep: LogKeep) -> u32 {
        keep.0
    }
}

/// The limits of one log, resolved: the instance's own, else the node's,
/// else the defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogLimits {
    /// The largest size of each file.
    pub max_size: LogSize,
    /// How many rotated files are kept.
    pub keep: LogKeep,
}

impl Default for LogLimits {
    fn default() -> LogLimits {
        LogLimits {
            max_size: LogSize::DEFAULT,
            keep: LogKeep::DEFAULT,
        }
    }
}

impl LogLimits {
    /// `max_size` and `keep` where given, else those of `self`.
    pub fn overridden(self, max_size: Option<LogSize>, keep: Option<LogKeep>) -> LogLimits {
        LogLimits {
            max_size: max_size.unwrap_or(self.max_size),
            keep: keep.unwrap_or(self.keep),
        }
    }
}

impl From<LogLimits> for crate::logfile::Limits {
    fn from(limits: LogLimits) -> crate::logfile::Limits {
        crate::logfile::Limits::new(limits.max_size.bytes(), limits.keep.files())
    }
}

impl<'de> Deserialize<'de> for LogSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<LogSize, D::Error> {
        LogSize::try_from(Value::deserialize(d)?)
            .map_err(|e| de::Error::custom(format!("log_max_size: {e}")))
    }
}

impl<'de> Deserialize<'de> for LogKeep {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<LogKeep, D::Error> {
        let bad = |shown: String| de::Error::custom(format!("log_keep: {}", InvalidLogKeep(shown)));
        match Value::deserialize(d)? {
            Value::Number(n) => match n.as_u64() {
                Some(files) => LogKeep::try_from(files).map_err(|e| bad(e.0)),
                None => Err(bad(n.to_string())),
            },
            other => Err(bad(other.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_follow_the_one_size_rule_within_their_bounds() {
        let size = |json: &str| serde_json::from_str::<LogSize>(json).map(LogSize::bytes);
        assert_eq!(size("1048576").unwrap(), 1 << 20);
        assert_eq!(size("\"1M\"").unwrap(), 1 << 20);
        assert_eq!(size("\"64k\"").unwrap(), 65_536);
        assert_eq!(size("\"1024G\"").unwrap(), 1 << 40);
        assert_eq!(size("\"65536\"").unwrap(), 65_536);
        for bad in [
            "65535",
            "\"63K\"",
            "\"1025G\"",
            "-1",
            "1.5",
            "\"1T\"",
            "\"M\"",
            "\"1 M\"",
            "\"1MiB\"",
            "null",
            "\"99999999999999999999G\"",
        ] {
            assert!(size(bad).is_err(), "{bad} accepted");
        }
        let err = size("\"10X\"").unwrap_err().to_string();
        assert!(
            err.starts_with(
                "log_max_size: \"10X\" is not a size: expected a number of bytes, or a string"
            ),
            "{err}"
        );
        let err = size("1000").unwrap_err().to_string();
        assert!(
            err.starts_with("log_max_size: 1000 is out of range: expected"),
            "{err}"
        );
        assert!(err.contains("from 64K to 1024G"), "{err}");
        assert_eq!(
            serde_json::to_string(&LogSize::DEFAULT).unwrap(),
            "10485760"
        );
    }

    #[test]
    fn fields_name_themselves_in_errors() {
        #[derive(Debug, Deserialize)]
        struct Both {
            #[serde(default)]
            log_max_size: Option<LogSize>,
            #[serde(default)]
            log_keep: Option<LogKeep>,
        }
        let both = |json: &str| serde_json::from_str::<Both>(json).map_err(|e| e.to_string());
        let ok = both(r#"{"log_max_size": "1M", "log_keep": 3}"#).unwrap();
        assert_eq!(ok.log_max_size.map(LogSize::bytes), Some(1 << 20));
        assert_eq!(ok.log_keep.map(LogKeep::files), Some(3));
        let none = both("{}").unwrap();
        assert!(none.log_max_size.is_none() && none.log_keep.is_none());
        let err = both(r#"{"log_max_size": "1K"}"#).unwrap_err();
        assert!(
            err.starts_with("log_max_size: \"1K\" is out of range"),
            "{err}"
        );
        let err = both(r#"{"log_keep": 101}"#).unwrap_err();
        assert!(err.starts_with("log_keep: 101 is not a number"), "{err}");
        let err = both(r#"{"log_keep": "3"}"#).unwrap_err();
        assert!(err.starts_with("log_keep: \"3\" is not a number"), "{err}");
        let limits = LogLimits::default().overridden(None, Some(LogKeep(1)));
        assert_eq!(limits.max_size, LogSize::DEFAULT);
        assert_eq!(limits.keep.files(), 1);
    }

    #[test]
    fn keep_is_a_small_count() {
        let keep = |json: &str| serde_json::from_str::<LogKeep>(json).map(LogKeep::files);
        assert_eq!(keep("0").unwrap(), 0);
        assert_eq!(keep("100").unwrap(), 100);
        for bad in ["101", "-1", "2.5", "\"3\"", "4294967296"] {
            assert!(keep(bad).is_err(), "{bad} accepted");
        }
        assert_eq!("7".parse::<LogKeep>().unwrap().files(), 7);
        assert_eq!(
            "x".parse::<LogKeep>().unwrap_err().to_string(),
            "\"x\" is not a number of log files to keep, from 0 to 100"
        );
    }
}
