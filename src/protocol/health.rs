//! An instance's health check (`health_check` in the register request, the
//! manifest and the update request), validated once at the edge.
//!
//! `{"type": "http"|"tcp", "path": "/healthz", "interval": 10, "timeout":
//! 2, "failures": 3}`: an `http` check asks `GET path` and needs a 2xx or
//! 3xx answer; a `tcp` check needs a connect. Only `type` is required.

use serde::{Deserialize, Serialize};

use super::Seconds;

/// What a check asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckKind {
    /// `GET path`, answered 2xx or 3xx.
    Http,
    /// A TCP connect.
    Tcp,
}

/// A validated health check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawCheck")]
pub struct HealthCheck {
    /// What it asks.
    #[serde(rename = "type")]
    pub kind: CheckKind,
    /// The path of an `http` check.
    pub path: String,
    /// Seconds between two checks of a running instance.
    pub interval: Seconds,
    /// Seconds one check may take.
    pub timeout: Seconds,
    /// Consecutive failures that make the instance unhealthy.
    pub failures: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCheck {
    #[serde(rename = "type")]
    kind: CheckKind,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    interval: Option<Seconds>,
    #[serde(default)]
    timeout: Option<Seconds>,
    #[serde(default)]
    failures: Option<u32>,
}

/// Default seconds between two checks.
pub const DEFAULT_INTERVAL: Seconds = Seconds::from_secs(10);
/// Default seconds a check may take.
pub const DEFAULT_TIMEOUT: Seconds = Seconds::from_secs(2);
/// Default consecutive failures.
pub const DEFAULT_FAILURES: u32 = 3;

impl TryFrom<RawCheck> for HealthCheck {
    type Error = String;

    fn try_from(raw: RawCheck) -> Result<HealthCheck, String> {
        let path = raw.path.unwrap_or_else(|| "/".to_string());
        let printable = path.bytes().all(|b| b.is_ascii_graphic());
        if !path.starts_with('/') || !printable || path.len() > 1024 {
            return Err(format!(
                "health_check.path {path:?} must start with / and hold no blanks or control characters"
            ));
        }
        let interval = raw.interval.unwrap_or(DEFAULT_INTERVAL);
        if interval.duration().is_zero() {
            return Err("health_check.interval must be above 0 seconds".into());
        }
        let timeout = raw.timeout.unwrap_or(DEFAULT_TIMEOUT);
        if timeout.duration().is_zero() {
            return Err("health_check.timeout must be above 0 seconds".into());
        }
        let failures = raw.failures.unwrap_or(DEFAULT_FAILURES);
        if failures == 0 {
            return Err("health_check.failures must be at least 1".into());
        }
        Ok(HealthCheck {
            kind: raw.kind,
            path,
            interval,
            timeout,
            failures,
        })
    }
}

impl HealthCheck {
    /// The check a non-standalone instance gets without one: a TCP connect
    /// at `interval`.
    pub fn default_tcp(interval: Seconds) -> HealthCheck {
        HealthCheck {
            kind: CheckKind::Tcp,
            path: "/".into(),
            interval,
            timeout: DEFAULT_TIMEOUT,
            failures: DEFAULT_FAILURES,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fill_in_and_bad_values_name_the_field() {
        let c: HealthCheck =
            serde_json::from_str(r#"{"type": "http", "path": "/healthz"}"#).unwrap();
        assert_eq!(c.kind, CheckKind::Http);
        assert_eq!(
            (c.interval, c.timeout, c.failures),
            (DEFAULT_INTERVAL, DEFAULT_TIMEOUT, 3)
        );
        let round: HealthCheck = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(round, c);
        for (bad, needle) in [
            (r#"{"type": "udp"}"#, "unknown variant"),
            (
                r#"{"type": "http", "path": "healthz"}"#,
                "health_check.path",
            ),
            (r#"{"type": "http", "path": "/a b"}"#, "health_check.path"),
            (r#"{"type": "tcp", "interval": 0}"#, "health_check.interval"),
            (r#"{"type": "tcp", "failures": 0}"#, "health_check.failures"),
            (
                r#"{"type": "tcp", "timeout": -1}"#,
                "not a number of seconds",
            ),
            (r#"{"type": "tcp", "every": 3}"#, "unknown field"),
        ] {
            let err = serde_json::from_str::<HealthCheck>(bad)
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{bad}: {err}");
        }
    }
}
