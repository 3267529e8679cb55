//! A number of seconds: one parser and one bound for every timeout,
//! interval and grace period of the suite.
//!
//! A value is finite, not negative, and at most [`Seconds::MAX`] (a day).
//! It is parsed from a JSON number, a command-line or environment string,
//! or a runtime parameter, always with the same rule and message; code
//! behind the edge takes a [`Seconds`] and uses its [`Duration`].

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A bounded, non-negative number of seconds.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Serialize, Deserialize)]
#[serde(try_from = "f64", into = "f64")]
pub struct Seconds(Duration);

/// A value that is not a number of seconds within the bound.
#[derive(Debug, Clone, PartialEq)]
pub struct InvalidSeconds(pub String);

impl fmt::Display for InvalidSeconds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} is not a number of seconds from 0 to {}",
            self.0,
            Seconds::MAX.0.as_secs()
        )
    }
}

impl std::error::Error for InvalidSeconds {}

impl Seconds {
    /// The largest value: one day.
    pub const MAX: Seconds = Seconds(Duration::from_secs(86_400));

    /// `secs` whole seconds (clamped to [`Seconds::MAX`]); for constants.
    pub const fn from_secs(secs: u64) -> Seconds {
        if secs > 86_400 {
            Seconds::MAX
        } else {
            Seconds(Duration::from_secs(secs))
        }
    }

    /// The duration.
    pub fn duration(self) -> Duration {
        self.0
    }

    /// The value as a float, for messages and JSON.
    pub fn as_f64(self) -> f64 {
        self.0.as_secs_f64()
    }
}

impl TryFrom<f64> for Seconds {
    type Error = InvalidSeconds;

    fn try_from(secs: f64) -> Result<Seconds, InvalidSeconds> {
        if secs.is_finite() && (0.0..=Seconds::MAX.0.as_secs_f64()).contains(&secs) {
            Ok(Seconds(Duration::from_secs_f64(secs)))
        } else {
            Err(InvalidSeconds(secs.to_string()))
        }
    }
}

impl FromStr for Seconds {
    type Err = InvalidSeconds;

    fn from_str(s: &str) -> Result<Seconds, InvalidSeconds> {
        let secs: f64 = s
            .trim()
            .parse()
            .map_err(|_| InvalidSeconds(format!("{s:?}")))?;
        Seconds::try_from(secs).map_err(|_| InvalidSeconds(format!("{s:?}")))
    }
}

impl From<Seconds> for f64 {
    fn from(s: Seconds) -> f64 {
        s.as_f64()
    }
}

impl From<Seconds> for Duration {
    fn from(s: Seconds) -> Duration {
        s.0
    }
}

impl fmt::Display for Seconds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} s", self.as_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_bound_for_every_source() {
        assert_eq!(
            "2.5".parse::<Seconds>().unwrap().duration(),
            Duration::from_millis(2500)
        );
        assert_eq!(Seconds::try_from(0.0).unwrap().duration(), Duration::ZERO);
        assert!(Seconds::try_from(86_400.0).is_ok());
        for bad in [-1.0, 86_400.5, f64::NAN, f64::INFINITY] {
            assert!(Seconds::try_from(bad).is_err(), "{bad} accepted");
        }
        let err = "ten".parse::<Seconds>().unwrap_err().to_string();
        assert_eq!(err, "\"ten\" is not a number of seconds from 0 to 86400");
        assert!(serde_json::from_str::<Seconds>("-3").is_err());
        assert!(serde_json::from_str::<Seconds>("\"3\"").is_err());
    }
}
