//! `GET /metrics`: the instances and the heart itself in the Prometheus
//! text format (`metrics::Exposition`), and the counters the heart keeps
//! for it ([`Stats`]: requests by route and status, start latency, exit
//! reports). Counters live in memory and start at 0 with the heart.
//!
//! Per instance, labelled `instance_id` and `application`:
//! `paasmaker_instance_up`, `paasmaker_instance_state{state}` (1 for its
//! state, 0 for the others), `paasmaker_instance_restarts_total`,
//! `paasmaker_instance_health_failures_total`, and where known
//! `paasmaker_instance_memory_bytes` and
//! `paasmaker_instance_cpu_seconds_total`. The heart's own:
//! `paasmaker_heart_instances{state}`,
//! `paasmaker_heart_requests_total{route,method,status}`,
//! `paasmaker_heart_start_duration_seconds` (histogram),
//! `paasmaker_heart_exit_reports_total{result}`,
//! `paasmaker_heart_resident_memory_bytes`.

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::{lock, Node};
use crate::metrics::{Exposition, Histogram, Kind};
use crate::protocol::State;

/// Upper bounds of the start latency buckets, in seconds.
static START_BOUNDS: [f64; 10] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// The states an instance is shown in, in `paasmaker_instance_state`.
const STATES: [State; 6] = [
    State::Registered,
    State::Starting,
    State::Running,
    State::Suspended,
    State::Stopped,
    State::Error,
];

/// The heart's own counters.
#[derive(Debug)]
pub(crate) struct Stats {
    /// Requests by route pattern, method and status: bounded label sets.
    requests: Mutex<BTreeMap<(&'static str, &'static str, u16), u64>>,
    starts: Histogram,
    exit_reports: Mutex<BTreeMap<&'static str, u64>>,
}

impl Default for Stats {
    fn default() -> Stats {
        Stats {
            requests: Mutex::new(BTreeMap::new()),
            starts: Histogram::new(&START_BOUNDS),
            exit_reports: Mutex::new(BTreeMap::new()),
        }
    }
}

impl Stats {
    /// Counts a request to `route` (its pattern, such as
    /// `/instances/{id}`) answered `status`. Methods outside the usual
    /// few are counted as `other`, so that no client can grow the label
    /// set.
    pub(crate) fn request(&self, route: &'static str, method: &str, status: u16) {
        let method = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
            .into_iter()
            .find(|m| *m == method)
            .unwrap_or("other");
        *lock(&self.requests)
            .entry((route, method, status))
            .or_default() += 1;
    }

    /// Records how long a start took, in seconds.
    pub(super) fn start_took(&self, seconds: f64) {
        self.starts.observe(seconds);
    }

    /// Counts an exit report: `accepted` or `refused`.
    pub(super) fn exit_report(&self, result: &'static str) {
        *lock(&self.exit_reports).entry(result).or_default() += 1;
    }
}

/// The heart's resident memory, from `/proc/self/status` (`VmRSS`).
fn resident_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = text.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

impl Node {
    /// Counts a request answered by the API.
    pub(crate) fn count_request(&self, route: &'static str, method: &str, status: u16) {
        self.stats.request(route, method, status);
    }

    /// The exposition of `GET /metrics`.
    pub(crate) fn metrics(&self) -> String {
        let records = self.snapshot();
        let views: Vec<_> = self
            .live_views(&records)
            .into_iter()
            .map(|v| {
                let failures = self.checks.failures_total(&v.instance_id);
                (v, failures)
            })
            .collect();
        let mut exp = Exposition::new();
        let labels = |v: &crate::protocol::InstanceView| {
            [
                ("instance_id", v.instance_id.to_string()),
                ("application", v.application.name.clone()),
            ]
        };
        let families: [(&str, Kind, &str); 6] = [
            (
                "paasmaker_instance_up",
                Kind::Gauge,
                "1 when the instance is RUNNING, else 0.",
            ),
            (
                "paasmaker_instance_state",
                Kind::Gauge,
                "1 for the state the instance is in, 0 for the others.",
            ),
            (
                "paasmaker_instance_restarts_total",
                Kind::Counter,
                "Restarts by the restart policy since the last operator start.",
            ),
            (
                "paasmaker_instance_health_failures_total",
                Kind::Counter,
                "Failed health checks since the heart started.",
            ),
            (
                "paasmaker_instance_memory_bytes",
                Kind::Gauge,
                "Resident memory of the instance's processes.",
            ),
            (
                "paasmaker_instance_cpu_seconds_total",
                Kind::Counter,
                "CPU time (user and system) of the instance's live processes.",
            ),
        ];
        for (name, kind, help) in families {
            exp.family(name, kind, help);
            for (view, failures) in &views {
                let [a, b] = labels(view);
                let base = [(a.0, a.1.as_str()), (b.0, b.1.as_str())];
                match name {
                    "paasmaker_instance_up" => {
                        exp.sample(
                            name,
                            &base,
                            f64::from(u8::from(view.state == State::Running)),
                        );
                    }
                    "paasmaker_instance_state" => {
                        for state in STATES {
                            let mut with = base.to_vec();
                            with.push(("state", state.as_str()));
                            exp.sample(name, &with, f64::from(u8::from(view.state == state)));
                        }
                    }
                    "paasmaker_instance_restarts_total" => {
                        exp.sample(name, &base, f64::from(view.restarts));
                    }
                    "paasmaker_instance_health_failures_total" => {
                        exp.sample(name, &base, *failures as f64);
                    }
                    "paasmaker_instance_memory_bytes" => {
                        if let Some(bytes) = view.memory_bytes {
                            exp.sample(name, &base, bytes as f64);
                        }
                    }
                    _ => {
                        if let Some(seconds) = view.cpu_seconds {
                            exp.sample(name, &base, seconds);
                        }
                    }
                }
            }
        }

        exp.family(
            "paasmaker_heart_instances",
            Kind::Gauge,
            "Instances of this heart by state.",
        );
        for state in STATES {
            let count = views.iter().filter(|(v, _)| v.state == state).count();
            exp.sample(
                "paasmaker_heart_instances",
                &[("state", state.as_str())],
                count as f64,
            );
        }
        exp.family(
            "paasmaker_heart_requests_total",
            Kind::Counter,
            "API requests by route, method and status.",
        );
        for ((route, method, status), count) in lock(&self.stats.requests).iter() {
            exp.sample(
                "paasmaker_heart_requests_total",
                &[
                    ("route", route),
                    ("method", method),
                    ("status", &status.to_string()),
                ],
                *count as f64,
            );
        }
        exp.family(
            "paasmaker_heart_start_duration_seconds",
            Kind::Histogram,
            "How long starts took, from the request to RUNNING or ERROR.",
        );
        self.stats
            .starts
            .write(&mut exp, "paasmaker_heart_start_duration_seconds");
        exp.family(
            "paasmaker_heart_exit_reports_total",
            Kind::Counter,
            "Exit reports from supervisors, accepted or refused.",
        );
        let reports = lock(&self.stats.exit_reports);
        for result in ["accepted", "refused"] {
            exp.sample(
                "paasmaker_heart_exit_reports_total",
                &[("result", result)],
                reports.get(result).copied().unwrap_or(0) as f64,
            );
        }
        drop(reports);
        if let Some(bytes) = resident_bytes() {
            exp.family(
                "paasmaker_heart_resident_memory_bytes",
                Kind::Gauge,
                "Resident memory of the heart process.",
            );
            exp.sample("paasmaker_heart_resident_memory_bytes", &[], bytes as f64);
        }
        exp.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_labels_stay_bounded() {
        let stats = Stats::default();
        stats.request("/health", "GET", 200);
        stats.request("/health", "GET", 200);
        stats.request("other", "FROB1", 405);
        stats.request("other", "FROB2", 405);
        let counted = lock(&stats.requests);
        assert_eq!(counted.get(&("/health", "GET", 200)), Some(&2));
        assert_eq!(counted.get(&("other", "other", 405)), Some(&2));
        assert_eq!(counted.len(), 2);
    }
}
