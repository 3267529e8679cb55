//! Resource limits of an instance (issue 12, SPEC §7 "Isolation"):
//! memory, CPU, processes and open files, parsed once at the edge.
//!
//! `limits` appears in the register request, the manifest and the update
//! request; `nofile` also in the supervisor's control file. Each value is
//! parsed here, with one rule and one message per field that names the
//! field and the expected form, and refused when it is zero or absurd.
//! Code behind the edge takes the types and never checks again.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// The limits of one instance; a missing field is no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// The most memory the instance's processes may use together, swap
    /// included.
    #[serde(
        default,
        deserialize_with = "memory_max",
        skip_serializing_if = "Option::is_none"
    )]
    pub memory_max: Option<Bytes>,
    /// The CPU time the instance may use, as a share of CPUs.
    #[serde(
        default,
        deserialize_with = "cpu_max",
        skip_serializing_if = "Option::is_none"
    )]
    pub cpu_max: Option<CpuMax>,
    /// The most processes (and threads) the instance may have at once.
    #[serde(
        default,
        deserialize_with = "pids_max",
        skip_serializing_if = "Option::is_none"
    )]
    pub pids_max: Option<u64>,
    /// RLIMIT_NOFILE, soft and hard, of the instance's command.
    #[serde(
        default,
        deserialize_with = "nofile",
        skip_serializing_if = "Option::is_none"
    )]
    pub nofile: Option<u64>,
}

impl Limits {
    /// True when a limit needs a control group (all but `nofile`, which
    /// is a resource limit of the process).
    pub fn need_cgroup(&self) -> bool {
        self.memory_max.is_some() || self.cpu_max.is_some() || self.pids_max.is_some()
    }

    /// True when no limit is set.
    pub fn is_empty(&self) -> bool {
        *self == Limits::default()
    }
}

/// The limits a control group enforces (all but `nofile`), in the
/// kernel's units: what the heart passes to `cgroup::Group::apply`.
impl From<&Limits> for crate::cgroup::Settings {
    fn from(limits: &Limits) -> crate::cgroup::Settings {
        crate::cgroup::Settings {
            memory_max: limits.memory_max.map(Bytes::get),
            cpu_max: limits.cpu_max.map(|cpu| crate::cgroup::CpuQuota {
                quota_usec: cpu.quota_usec(),
                period_usec: CpuMax::PERIOD_USEC,
            }),
            pids_max: limits.pids_max,
        }
    }
}

/// A number of bytes, from [`Bytes::MIN`] to [`Bytes::MAX`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(into = "u64")]
pub struct Bytes(u64);

/// A value that is not a valid limit; its `Display` says what was wrong
/// and what is expected, without the field (the caller adds it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidLimit(pub String);

impl fmt::Display for InvalidLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InvalidLimit {}

impl Bytes {
    /// The smallest memory limit: 1 MiB (less cannot hold a process).
    pub const MIN: Bytes = Bytes(1 << 20);
    /// The largest memory limit: 1 PiB.
    pub const MAX: Bytes = Bytes(1 << 50);
    /// The expected form, for messages.
    const EXPECTED: &'static str = "a number of bytes, or a string of digits with an optional \
         K, M or G suffix (powers of 1024) like \"512M\", from 1M to 1048576G";

    /// The number of bytes.
    pub fn get(self) -> u64 {
        self.0
    }

    fn checked(n: u64, shown: &str) -> Result<Bytes, InvalidLimit> {
        if (Bytes::MIN.0..=Bytes::MAX.0).contains(&n) {
            Ok(Bytes(n))
        } else {
            Err(InvalidLimit(format!(
                "{shown} is out of range: expected {}",
                Bytes::EXPECTED
            )))
        }
    }
}

impl FromStr for Bytes {
    type Err = InvalidLimit;

    fn from_str(s: &str) -> Result<Bytes, InvalidLimit> {
        match parse_size(s) {
            Ok(bytes) => Bytes::checked(bytes, &format!("{s:?}")),
            Err(SizeError::Form) => Err(InvalidLimit(format!(
                "{s:?} is not a size: expected {}",
                Bytes::EXPECTED
            ))),
            Err(SizeError::Overflow) => Err(InvalidLimit(format!(
                "{s:?} is out of range: expected {}",
                Bytes::EXPECTED
            ))),
        }
    }
}

/// Why a string is not a size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SizeError {
    /// Not digits with an optional suffix.
    Form,
    /// More than `u64` bytes.
    Overflow,
}

/// The one rule for a size written as a string, shared by every size of
/// the suite ([`Bytes`], `LogSize`): digits with an optional `K`, `M` or
/// `G` suffix (powers of 1024, either case). The caller applies its
/// bounds.
pub(crate) fn parse_size(s: &str) -> Result<u64, SizeError> {
    let (digits, shift) = match s.as_bytes().last() {
        Some(b'K' | b'k') => (&s[..s.len() - 1], 10),
        Some(b'M' | b'm') => (&s[..s.len() - 1], 20),
        Some(b'G' | b'g') => (&s[..s.len() - 1], 30),
        _ => (s, 0),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SizeError::Form);
    }
    let n: u64 = digits.parse().map_err(|_| SizeError::Overflow)?;
    n.checked_mul(1 << shift).ok_or(SizeError::Overflow)
}

impl From<Bytes> for u64 {
    fn from(b: Bytes) -> u64 {
        b.0
    }
}

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} bytes", self.0)
    }
}

/// A CPU limit in thousandths of one CPU, from [`CpuMax::MIN`] (1 %) to
/// [`CpuMax::MAX`] (1024 CPUs). Written as `"50%"` (a share of one CPU),
/// `"1.5"` or `1.5` (CPUs); serialized as a percentage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct CpuMax(u32);

impl CpuMax {
    /// The smallest CPU limit: 1 % of one CPU (the kernel's shortest
    /// quota, 1 ms, in the period of [`CpuMax::PERIOD_USEC`]).
    pub const MIN: CpuMax = CpuMax(10);
    /// The largest CPU limit: 1024 CPUs.
    pub const MAX: CpuMax = CpuMax(1024 * 1000);
    /// The scheduling period the quota is given in, in microseconds: the
    /// kernel's default, 100 ms.
    pub const PERIOD_USEC: u64 = 100_000;
    /// The expected form, for messages.
    const EXPECTED: &'static str = "a share of one CPU like \"50%\", or a number of CPUs \
         like \"1.5\" or 1.5, from 1% to 1024 CPUs";

    /// The limit in thousandths of one CPU.
    pub fn millicpus(self) -> u32 {
        self.0
    }

    /// The quota in microseconds per [`CpuMax::PERIOD_USEC`].
    pub fn quota_usec(self) -> u64 {
        u64::from(self.0) * CpuMax::PERIOD_USEC / 1000
    }

    fn from_cpus(cpus: f64, shown: &str) -> Result<CpuMax, InvalidLimit> {
        let millis = (cpus * 1000.0).round();
        if cpus.is_finite()
            && (f64::from(CpuMax::MIN.0)..=f64::from(CpuMax::MAX.0)).contains(&millis)
        {
            Ok(CpuMax(millis as u32))
        } else {
            Err(InvalidLimit(format!(
                "{shown} is out of range: expected {}",
                CpuMax::EXPECTED
            )))
        }
    }
}

impl FromStr for CpuMax {
    type Err = InvalidLimit;

    fn from_str(s: &str) -> Result<CpuMax, InvalidLimit> {
        let bad = || {
            InvalidLimit(format!(
                "{s:?} is not a CPU share: expected {}",
                CpuMax::EXPECTED
            ))
        };
        let (number, scale) = match s.strip_suffix('%') {
            Some(percent) => (percent, 100.0),
            None => (s, 1.0),
        };
        // Digits and at most one point: no sign, exponent, "inf" or "NaN".
        let decimal = !number.is_empty()
            && number.bytes().all(|b| b.is_ascii_digit() || b == b'.')
            && number.bytes().filter(|&b| b == b'.').count() <= 1
            && number.bytes().any(|b| b.is_ascii_digit());
        if !decimal {
            return Err(bad());
        }
        let value: f64 = number.parse().map_err(|_| bad())?;
        CpuMax::from_cpus(value / scale, &format!("{s:?}"))
    }
}

impl fmt::Display for CpuMax {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}%", f64::from(self.0) / 10.0)
    }
}

impl Serialize for CpuMax {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// The most processes: the kernel's own ceiling on pids (`PID_MAX_LIMIT`).
pub const PIDS_MAX: u64 = 1 << 22;

/// The most open files: the kernel's default `fs.nr_open`, above which
/// even root cannot raise RLIMIT_NOFILE.
pub const NOFILE_MAX: u64 = 1 << 20;

/// A JSON value before it is checked: what a limit may be written as.
enum Raw {
    Unsigned(u64),
    Negative(i64),
    Float(f64),
    Text(String),
}

/// Reads any scalar, and names `field` and `expected` when the JSON type
/// itself is wrong (an object, a list, a boolean).
struct RawVisitor {
    field: &'static str,
    expected: &'static str,
}

impl<'de> Visitor<'de> for RawVisitor {
    type Value = Option<Raw>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.expected)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Option<Raw>, E> {
        Ok(None)
    }

    fn visit_none<E: de::Error>(self) -> Result<Option<Raw>, E> {
        Ok(None)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Option<Raw>, E> {
        Ok(Some(Raw::Unsigned(v)))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Option<Raw>, E> {
        Ok(Some(
            u64::try_from(v).map_or(Raw::Negative(v), Raw::Unsigned),
        ))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Option<Raw>, E> {
        Ok(Some(Raw::Float(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Option<Raw>, E> {
        Ok(Some(Raw::Text(v.to_owned())))
    }
}

/// Deserializes the optional limit `field`: null is no limit, anything
/// else goes through `parse`, whose message is prefixed with the field.
fn optional<'de, D, T>(
    deserializer: D,
    field: &'static str,
    expected: &'static str,
    parse: impl FnOnce(Raw) -> Result<T, InvalidLimit>,
) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
{
    match deserializer.deserialize_any(RawVisitor { field, expected })? {
        None => Ok(None),
        Some(raw) => parse(raw)
            .map(Some)
            .map_err(|e| de::Error::custom(format!("{field}: {e}"))),
    }
}

/// A count from 1 to `max`, written as a JSON integer.
fn count(raw: Raw, max: u64, expected: &str) -> Result<u64, InvalidLimit> {
    match raw {
        Raw::Unsigned(n) if (1..=max).contains(&n) => Ok(n),
        Raw::Unsigned(n) => Err(InvalidLimit(format!(
            "{n} is out of range: expected {expected}"
        ))),
        Raw::Negative(n) => Err(InvalidLimit(format!(
            "{n} is out of range: expected {expected}"
        ))),
        Raw::Float(v) => Err(InvalidLimit(format!(
            "{v} is not a whole number: expected {expected}"
        ))),
        Raw::Text(s) => Err(InvalidLimit(format!(
            "{s:?} is a string: expected {expected}"
        ))),
    }
}

fn memory_max<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Bytes>, D::Error> {
    optional(d, "memory_max", Bytes::EXPECTED, |raw| match raw {
        Raw::Unsigned(n) => Bytes::checked(n, &n.to_string()),
        Raw::Text(s) => s.parse(),
        Raw::Negative(n) => Err(InvalidLimit(format!(
            "{n} is out of range: expected {}",
            Bytes::EXPECTED
        ))),
        Raw::Float(v) => Err(InvalidLimit(format!(
            "{v} is not a whole number: expected {}",
            Bytes::EXPECTED
        ))),
    })
}

fn cpu_max<'de, D: Deserializer<'de>>(d: D) -> Result<Option<CpuMax>, D::Error> {
    optional(d, "cpu_max", CpuMax::EXPECTED, |raw| match raw {
        Raw::Unsigned(n) => CpuMax::from_cpus(n as f64, &n.to_string()),
        Raw::Negative(n) => CpuMax::from_cpus(n as f64, &n.to_string()),
        Raw::Float(v) => CpuMax::from_cpus(v, &v.to_string()),
        Raw::Text(s) => s.parse(),
    })
}

/// The expected form of `pids_max`.
const PIDS_EXPECTED: &str = "a number of processes from 1 to 4194304";

fn pids_max<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    optional(d, "pids_max", PIDS_EXPECTED, |raw| {
        count(raw, PIDS_MAX, PIDS_EXPECTED)
    })
}

/// The expected form of `nofile`.
const NOFILE_EXPECTED: &str = "a number of open files from 1 to 1048576";

/// Deserializes an optional `nofile` (RLIMIT_NOFILE) with its bound and
/// message; the control file's `nofile` uses it too.
///
/// # Errors
///
/// Not a whole number from 1 to [`NOFILE_MAX`].
pub fn nofile<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    optional(d, "nofile", NOFILE_EXPECTED, |raw| {
        count(raw, NOFILE_MAX, NOFILE_EXPECTED)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(json: &str) -> Result<Limits, String> {
        serde_json::from_str(json).map_err(|e| e.to_string())
    }

    #[test]
    fn memory_max_takes_bytes_or_a_suffixed_string() {
        for (json, bytes) in [
            ("1048576", 1 << 20),
            (r#""1M""#, 1 << 20),
            (r#""512M""#, 512 << 20),
            (r#""2048K""#, 2 << 20),
            (r#""2g""#, 2 << 30),
            (r#""3000000""#, 3_000_000),
        ] {
            let l = limits(&format!(r#"{{"memory_max": {json}}}"#)).unwrap();
            assert_eq!(l.memory_max.map(Bytes::get), Some(bytes), "{json}");
        }
    }

    #[test]
    fn memory_max_refuses_bad_zero_and_absurd_values_naming_the_field() {
        for json in [
            "0",
            "-1",
            "1.5",
            "1023",
            r#""0""#,
            r#""""#,
            r#""M""#,
            r#""1.5G""#,
            r#""12X""#,
            r#""-1M""#,
            r#"" 1M""#,
            r#""1T""#,
            r#""1048577G""#,
            r#""99999999999999999999""#,
            r#""18014398509481984K""#,
            "true",
            "[1]",
        ] {
            let err = limits(&format!(r#"{{"memory_max": {json}}}"#)).unwrap_err();
            assert!(err.contains("memory_max: "), "{json}: {err}");
            assert!(err.contains("\"512M\""), "{json}: {err}");
        }
    }

    #[test]
    fn cpu_max_takes_a_percentage_or_cpus() {
        for (json, millis) in [
            (r#""50%""#, 500),
            (r#""150%""#, 1500),
            (r#""1%""#, 10),
            (r#""33.3%""#, 333),
            (r#""1.5""#, 1500),
            (r#""2""#, 2000),
            ("1.5", 1500),
            ("2", 2000),
            ("0.25", 250),
            ("1024", 1_024_000),
        ] {
            let l = limits(&format!(r#"{{"cpu_max": {json}}}"#)).unwrap();
            assert_eq!(l.cpu_max.map(CpuMax::millicpus), Some(millis), "{json}");
        }
        let half: CpuMax = "50%".parse().unwrap();
        assert_eq!(half.quota_usec(), 50_000);
        assert_eq!(CpuMax::MIN.quota_usec(), 1000);
    }

    #[test]
    fn cpu_max_refuses_bad_zero_and_absurd_values_naming_the_field() {
        for json in [
            "0",
            "-1",
            "0.001",
            "1025",
            r#""0%""#,
            r#""0.5%""#,
            r#""%""#,
            r#""""#,
            r#""half""#,
            r#""-50%""#,
            r#""1e1""#,
            r#""inf""#,
            r#""NaN""#,
            r#""1.2.3""#,
            r#""50 %""#,
            r#""102500%""#,
            "{}",
        ] {
            let err = limits(&format!(r#"{{"cpu_max": {json}}}"#)).unwrap_err();
            assert!(err.contains("cpu_max: "), "{json}: {err}");
            assert!(err.contains("\"50%\""), "{json}: {err}");
        }
    }

    #[test]
    fn counts_refuse_zero_negative_fractions_strings_and_absurd_values() {
        let l = limits(r#"{"pids_max": 64, "nofile": 1024}"#).unwrap();
        assert_eq!((l.pids_max, l.nofile), (Some(64), Some(1024)));
        for (field, max) in [("pids_max", PIDS_MAX), ("nofile", NOFILE_MAX)] {
            assert!(limits(&format!(r#"{{"{field}": {max}}}"#)).is_ok());
            for json in ["0", "-3", "1.5", r#""64""#, &(max + 1).to_string(), "false"] {
                let err = limits(&format!(r#"{{"{field}": {json}}}"#)).unwrap_err();
                assert!(err.contains(&format!("{field}: ")), "{json}: {err}");
                assert!(err.contains("from 1 to"), "{json}: {err}");
            }
        }
    }

    #[test]
    fn unknown_fields_are_refused_and_missing_ones_are_no_limit() {
        let err = limits(r#"{"memory": 1}"#).unwrap_err();
        assert!(err.contains("unknown field `memory`"), "{err}");
        assert_eq!(limits("{}").unwrap(), Limits::default());
        assert_eq!(
            limits(r#"{"memory_max": null, "cpu_max": null}"#).unwrap(),
            Limits::default()
        );
        assert!(!Limits::default().need_cgroup());
        assert!(!limits(r#"{"nofile": 64}"#).unwrap().need_cgroup());
        assert!(limits(r#"{"pids_max": 64}"#).unwrap().need_cgroup());
    }

    #[test]
    fn limits_become_cgroup_settings_in_kernel_units() {
        use crate::cgroup::{CpuQuota, Settings};
        let l = limits(r#"{"memory_max": "1G", "cpu_max": "20%", "pids_max": 7, "nofile": 9}"#)
            .unwrap();
        assert_eq!(
            Settings::from(&l),
            Settings {
                memory_max: Some(1 << 30),
                cpu_max: Some(CpuQuota {
                    quota_usec: 20_000,
                    period_usec: 100_000
                }),
                pids_max: Some(7),
            }
        );
        assert_eq!(Settings::from(&Limits::default()), Settings::default());
    }

    #[test]
    fn limits_round_trip_through_json() {
        let l = limits(r#"{"memory_max": "64M", "cpu_max": "1.5", "pids_max": 9, "nofile": 99}"#)
            .unwrap();
        let json = serde_json::to_string(&l).unwrap();
        assert_eq!(
            json,
            r#"{"memory_max":67108864,"cpu_max":"150%","pids_max":9,"nofile":99}"#
        );
        assert_eq!(limits(&json).unwrap(), l);
        let odd = limits(r#"{"cpu_max": "33.3%"}"#).unwrap();
        assert_eq!(limits(&serde_json::to_string(&odd).unwrap()).unwrap(), odd);
        assert_eq!(serde_json::to_string(&Limits::default()).unwrap(), "{}");
    }
}
