//! The exit report: how the command ended, told to the heart.
//!
//! `POST BASE/instance/exit/ID/KEY/CODE` with one `ureq::Agent` whose every
//! try is bounded by a global timeout. A 2xx answer is success; a 4xx
//! answer is final (the heart refused the key, retrying cannot help); any
//! other answer or a transport error is retried with a growing pause
//! until the report deadline. A report that was never delivered is
//! recorded in `<pidfile dir>/<id>.exited` (the code and a newline,
//! written atomically) for the heart to pick up later.

use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use crate::protocol::{self, exited, InstanceId};

use super::log::Log;

/// The longest a single try may take.
const TRY_TIMEOUT: Duration = Duration::from_secs(2);
/// The pause after the first failed try; it doubles after each one.
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
/// The longest pause between tries.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Where and what to report.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// `http://127.0.0.1:PORT` or the control file's `report_url`, without
    /// a trailing slash.
    pub base: String,
    /// The instance.
    pub instance_id: InstanceId,
    /// The one-time key.
    pub exit_key: String,
    /// How long to keep trying.
    pub deadline: Duration,
    /// The `.exited` file written when the report cannot be delivered.
    pub exited_file: PathBuf,
}

/// How a report ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The heart accepted it.
    Reported,
    /// The heart refused it with this 4xx status.
    Refused(u16),
    /// Never delivered; written to the `.exited` file.
    Recorded,
    /// Never delivered and the `.exited` file could not be written.
    Lost,
}

/// Reports `code` to the heart, falling back to the `.exited` file.
pub(crate) fn send(target: &Target, code: i32, log: &Log) -> Outcome {
    let url = format!(
        "{}{}",
        target.base,
        protocol::exit_report_path(&target.instance_id, &target.exit_key, code)
    );
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(TRY_TIMEOUT))
        .http_status_as_error(false)
        .proxy(None)
        .build()
        .into();
    let deadline = Instant::now() + target.deadline;
    let mut backoff = FIRST_BACKOFF;
    let mut tries = 0u32;
    let mut last_failure = String::new();
    loop {
        let now = Instant::now();
        if now >= deadline && tries > 0 {
            break;
        }
        let timeout = TRY_TIMEOUT.min(deadline.saturating_duration_since(now));
        let timeout = timeout.max(Duration::from_millis(100));
        tries += 1;
        match try_once(&agent, &url, timeout) {
            Ok(status) if (200..300).contains(&status) => {
                log.info(format_args!("Reported code {code} to the heart"));
                return Outcome::Reported;
            }
            Ok(status) if (400..500).contains(&status) => {
                log.error(format_args!(
                    "The heart refused the report of code {code}: HTTP {status}"
                ));
                return Outcome::Refused(status);
            }
            Ok(status) => last_failure = format!("HTTP {status}"),
            Err(reason) => last_failure = reason,
        }
        if tries == 1 {
            log.warn(format_args!(
                "Unable to report code {code} ({last_failure}); retrying for {} s",
                target.deadline.as_secs_f64()
            ));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        thread::sleep(backoff.min(left));
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
    log.warn(format_args!(
        "Gave up reporting code {code} after {tries} tries ({last_failure})"
    ));
    match exited::write(&target.exited_file, code) {
        Ok(()) => {
            log.info(format_args!(
                "Recorded code {code} in {}",
                target.exited_file.display()
            ));
            Outcome::Recorded
        }
        Err(err) => {
            log.error(format_args!("Code {code} is lost: {err}"));
            Outcome::Lost
        }
    }
}

/// One try: the HTTP status, or why there was none.
/// The timeout of the last tries shrinks to what is left of the deadline.
fn try_once(agent: &ureq::Agent, url: &str, timeout: Duration) -> Result<u16, String> {
    agent
        .post(url)
        .config()
        .timeout_global(Some(timeout))
        .build()
        .send_empty()
        .map(|response| response.status().as_u16())
        .map_err(|err| err.to_string())
}
