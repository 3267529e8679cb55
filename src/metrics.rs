//! The Prometheus text exposition format (version 0.0.4), written by hand.
//!
//! An [`Exposition`] is built per scrape: a family is announced once with
//! its `# HELP` and `# TYPE` lines, then its samples follow, each
//! `name{label="value",...} value`. Label values are escaped (`\`, `"` and
//! newline), numbers are written as Prometheus reads them (`+Inf`, `NaN`).
//! A [`Histogram`] keeps cumulative bucket counts with atomics, so the hot
//! path that observes a value takes no lock.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// The content type of the exposition.
pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A metric family's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Goes up and down.
    Gauge,
    /// Only goes up; its name ends in `_total`.
    Counter,
    /// Observations in buckets.
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
            Kind::Histogram => "histogram",
        }
    }
}

/// One scrape's text.
#[derive(Debug, Default)]
pub(crate) struct Exposition {
    out: String,
}

impl Exposition {
    /// An empty exposition.
    pub(crate) fn new() -> Exposition {
        Exposition::default()
    }

    /// Announces the family `name`: its help text and type.
    pub(crate) fn family(&mut self, name: &str, kind: Kind, help: &str) {
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {}", kind.as_str());
    }

    /// One sample of the family announced last.
    pub(crate) fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (key, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                self.out.push_str(key);
                self.out.push_str("=\"");
                escape_into(&mut self.out, value);
                self.out.push('"');
            }
            self.out.push('}');
        }
        self.out.push(' ');
        write_number(&mut self.out, value);
        self.out.push('\n');
    }

    /// The text.
    pub(crate) fn finish(self) -> String {
        self.out
    }
}

fn escape_into(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn write_number(out: &mut String, value: f64) {
    if value.is_nan() {
        out.push_str("NaN");
    } else if value == f64::INFINITY {
        out.push_str("+Inf");
    } else if value == f64::NEG_INFINITY {
        out.push_str("-Inf");
    } else if value.fract() == 0.0 && value.abs() < 1e15 {
        let _ = write!(out, "{}", value as i64);
    } else {
        let _ = write!(out, "{value}");
    }
}

/// A histogram with fixed upper bounds, observed without a lock.
#[derive(Debug)]
pub(crate) struct Histogram {
    bounds: &'static [f64],
    /// Per bucket (not cumulative), then the +Inf bucket.
    counts: Vec<AtomicU64>,
    /// The sum of the observations, as `f64` bits.
    sum: AtomicU64,
}

impl Histogram {
    /// A histogram with the ascending upper `bounds`.
    pub(crate) fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0f64.to_bits()),
        }
    }

    /// Records `value`.
    pub(crate) fn observe(&self, value: f64) {
        let bucket = self
            .bounds
            .iter()
            .position(|&b| value <= b)
            .unwrap_or(self.bounds.len());
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        let _ = self
            .sum
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some((f64::from_bits(bits) + value).to_bits())
            });
    }

    /// Writes the `_bucket`, `_sum` and `_count` samples of `name`.
    pub(crate) fn write(&self, exp: &mut Exposition, name: &str) {
        let mut cumulative = 0u64;
        let bucket = format!("{name}_bucket");
        for (i, count) in self.counts.iter().enumerate() {
            cumulative += count.load(Ordering::Relaxed);
            let le = match self.bounds.get(i) {
                Some(b) => {
                    let mut text = String::new();
                    write_number(&mut text, *b);
                    text
                }
                None => "+Inf".to_string(),
            };
            exp.sample(&bucket, &[("le", &le)], cumulative as f64);
        }
        exp.sample(
            &format!("{name}_sum"),
            &[],
            f64::from_bits(self.sum.load(Ordering::Relaxed)),
        );
        exp.sample(&format!("{name}_count"), &[], cumulative as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_escape_labels_and_write_numbers_as_prometheus_reads_them() {
        let mut exp = Exposition::new();
        exp.family("x_total", Kind::Counter, "A \\ counter\nof things.");
        exp.sample("x_total", &[("a", "q\"b\\c\nd"), ("b", "2")], 3.0);
        exp.sample("x_total", &[], 0.25);
        exp.sample("x_total", &[], f64::NAN);
        assert_eq!(
            exp.finish(),
            "# HELP x_total A \\\\ counter\\nof things.\n# TYPE x_total counter\n\
             x_total{a=\"q\\\"b\\\\c\\nd\",b=\"2\"} 3\nx_total 0.25\nx_total NaN\n"
        );
    }

    #[test]
    fn histogram_buckets_are_cumulative() {
        static BOUNDS: [f64; 3] = [0.001, 0.01, 0.1];
        let h = Histogram::new(&BOUNDS);
        for v in [0.0005, 0.005, 0.005, 5.0] {
            h.observe(v);
        }
        let mut exp = Exposition::new();
        h.write(&mut exp, "lat_seconds");
        let text = exp.finish();
        assert!(
            text.contains("lat_seconds_bucket{le=\"0.001\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("lat_seconds_bucket{le=\"0.01\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("lat_seconds_bucket{le=\"0.1\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("lat_seconds_bucket{le=\"+Inf\"} 4\n"),
            "{text}"
        );
        assert!(text.contains("lat_seconds_count 4\n"), "{text}");
        assert!(text.contains("lat_seconds_sum 5.0105\n"), "{text}");
    }
}
