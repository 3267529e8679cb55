//! The signals an operator may have forwarded to an application
//! (`POST /instances/ID/signal`, `pm-heart signal ID SIG`): `HUP`, `USR1`,
//! `USR2`, `INT`, `QUIT`, `TERM`, `WINCH`, by name (with or without
//! `SIG`, any case) or by number. Parsed once at the edge into a
//! [`ForwardSignal`]; the supervisor checks a number it is handed with
//! [`ForwardSignal::from_number`] too, so nothing else is ever forwarded.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// The signals that may be forwarded: name and Linux number.
const ALLOWED: [(&str, i32); 7] = [
    ("HUP", 1),
    ("INT", 2),
    ("QUIT", 3),
    ("USR1", 10),
    ("USR2", 12),
    ("TERM", 15),
    ("WINCH", 28),
];

/// One of the signals that may be forwarded to an application.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForwardSignal(i32);

/// A signal that may not be forwarded, or is no signal at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidSignal(String);

impl fmt::Display for InvalidSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid signal {:?}: expected one of HUP, USR1, USR2, INT, QUIT, TERM, WINCH or their numbers",
            self.0
        )
    }
}

impl std::error::Error for InvalidSignal {}

impl ForwardSignal {
    /// The signal numbered `number`, if it may be forwarded.
    pub fn from_number(number: i32) -> Option<ForwardSignal> {
        ALLOWED
            .iter()
            .any(|&(_, n)| n == number)
            .then_some(ForwardSignal(number))
    }

    /// Its number.
    pub fn number(self) -> i32 {
        self.0
    }

    /// Its name without `SIG`: `HUP`.
    pub fn name(self) -> &'static str {
        ALLOWED
            .iter()
            .find(|&&(_, n)| n == self.0)
            .map_or("?", |&(name, _)| name)
    }
}

impl fmt::Display for ForwardSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SIG{}", self.name())
    }
}

impl FromStr for ForwardSignal {
    type Err = InvalidSignal;

    fn from_str(s: &str) -> Result<ForwardSignal, InvalidSignal> {
        let invalid = || InvalidSignal(s.to_string());
        let text = s.trim();
        if let Ok(number) = text.parse::<i32>() {
            return ForwardSignal::from_number(number).ok_or_else(invalid);
        }
        let upper = text.to_ascii_uppercase();
        let name = upper.strip_prefix("SIG").unwrap_or(&upper);
        ALLOWED
            .iter()
            .find(|&&(n, _)| n == name)
            .map(|&(_, number)| ForwardSignal(number))
            .ok_or_else(invalid)
    }
}

impl Serialize for ForwardSignal {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for ForwardSignal {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<ForwardSignal, D::Error> {
        struct Expect;
        impl Visitor<'_> for Expect {
            type Value = ForwardSignal;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a signal name or number")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ForwardSignal, E> {
                v.parse().map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ForwardSignal, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ForwardSignal, E> {
                self.visit_str(&v.to_string())
            }
        }
        deserializer.deserialize_any(Expect)
    }
}

/// The body of `POST /instances/ID/signal`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignalRequest {
    /// The signal to forward.
    pub signal: ForwardSignal,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers_of_the_allowed_signals_parse() {
        for text in ["HUP", "hup", "SIGHUP", "sighup", "1", " 1 "] {
            assert_eq!(text.parse::<ForwardSignal>().unwrap().number(), 1, "{text}");
        }
        assert_eq!("WINCH".parse::<ForwardSignal>().unwrap().number(), 28);
        assert_eq!(
            "usr2".parse::<ForwardSignal>().unwrap().to_string(),
            "SIGUSR2"
        );
        for bad in ["KILL", "9", "STOP", "0", "", "SIG", "50", "-1"] {
            assert!(bad.parse::<ForwardSignal>().is_err(), "{bad}");
        }
        assert_eq!(ForwardSignal::from_number(9), None);
    }

    #[test]
    fn the_request_takes_a_name_or_a_number() {
        let r: SignalRequest = serde_json::from_str(r#"{"signal": "HUP"}"#).unwrap();
        assert_eq!(r.signal.number(), 1);
        let r: SignalRequest = serde_json::from_str(r#"{"signal": 10}"#).unwrap();
        assert_eq!(r.signal.name(), "USR1");
        assert!(serde_json::from_str::<SignalRequest>(r#"{"signal": "KILL"}"#).is_err());
        assert!(serde_json::from_str::<SignalRequest>(r#"{"signal": 1, "x": 1}"#).is_err());
    }
}
