//! Version handling shared by every runtime: parsing, ordering, listing
//! and matching.
//!
//! A version is a list of dot-separated components. Each component is a
//! number followed by an optional suffix (`8-p1` is 8 with the suffix
//! `-p1`), or plain text (`jruby-9`). Components compare numerically
//! (`1.9.30` is above `1.9.3`, `3.10` above `3.9`); a suffix `-pN` is a
//! patch level and sorts after the plain number (`2.7.8-p1` above
//! `2.7.8`), any other suffix is a pre-release and sorts before it
//! (`3.0.0-rc1` below `3.0.0`). A version that is a prefix of another sorts
//! first (`3.1` below `3.1.4`).
//!
//! A request matches a version by whole components: `3.1` matches `3.1`
//! and every `3.1.*`, never `3.10.0`; `1.9.3` matches `1.9.3` and its
//! patch levels (`1.9.3-p551`), never `1.9.30`. The highest match wins.

use std::cmp::Ordering;

use crate::error::{Error, Result};

/// One dot-separated component.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Part {
    /// The leading digits without leading zeros (`"0"` stays `"0"`), or
    /// `None` when the component does not start with a digit.
    number: Option<String>,
    /// Everything after the leading digits (the whole component when there
    /// are none).
    suffix: String,
}

impl Part {
    fn parse(text: &str) -> Part {
        let digits = text.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Part {
                number: None,
                suffix: text.to_string(),
            };
        }
        let trimmed = text[..digits].trim_start_matches('0');
        Part {
            number: Some(if trimmed.is_empty() { "0" } else { trimmed }.to_string()),
            suffix: text[digits..].to_string(),
        }
    }

    /// True when the suffix is a patch level: `-pN` or `pN`.
    fn is_patch(&self) -> bool {
        let rest = self.suffix.strip_prefix('-').unwrap_or(&self.suffix);
        rest.strip_prefix('p')
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    }

    /// Pre-release, plain, patch level: the order of suffix kinds.
    fn suffix_rank(&self) -> u8 {
        if self.suffix.is_empty() {
            1
        } else if self.is_patch() {
            2
        } else {
            0
        }
    }
}

impl Ord for Part {
    fn cmp(&self, other: &Part) -> Ordering {
        match (&self.number, &other.number) {
            (Some(a), Some(b)) => compare_digits(a, b)
                .then_with(|| self.suffix_rank().cmp(&other.suffix_rank()))
                .then_with(|| compare_natural(&self.suffix, &other.suffix)),
            (None, Some(_)) => Ordering::Less,
            (Some(_), None) => Ordering::Greater,
            (None, None) => compare_natural(&self.suffix, &other.suffix),
        }
    }
}

impl PartialOrd for Part {
    fn partial_cmp(&self, other: &Part) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Compares two runs of digits as numbers, whatever their length.
fn compare_digits(a: &str, b: &str) -> Ordering {
    let a = a.trim_start_matches('0');
    let b = b.trim_start_matches('0');
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

/// Compares text with embedded numbers: digit runs numerically, the rest
/// byte by byte (`rc2` below `rc10`).
fn compare_natural(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a, b);
    loop {
        match (a.is_empty(), b.is_empty()) {
            (true, true) => return Ordering::Equal,
            (true, false) => return Ordering::Less,
            (false, true) => return Ordering::Greater,
            (false, false) => {}
        }
        let (ta, ra) = split_token(a);
        let (tb, rb) = split_token(b);
        let a_digit = ta.as_bytes()[0].is_ascii_digit();
        let b_digit = tb.as_bytes()[0].is_ascii_digit();
        let order = match (a_digit, b_digit) {
            (true, true) => compare_digits(ta, tb),
            _ => ta.cmp(tb),
        };
        if order != Ordering::Equal {
            return order;
        }
        a = ra;
        b = rb;
    }
}

/// The leading run of digits or of non-digits of a non-empty `s`.
fn split_token(s: &str) -> (&str, &str) {
    let digit = s.as_bytes()[0].is_ascii_digit();
    let len = s
        .bytes()
        .take_while(|b| b.is_ascii_digit() == digit)
        .count();
    s.split_at(len)
}

/// A parsed version, ordered as the module header describes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Version {
    parts: Vec<Part>,
}

impl Version {
    /// Parses `text`; every string is a version (possibly an odd one).
    pub(crate) fn parse(text: &str) -> Version {
        Version {
            parts: text.split('.').map(Part::parse).collect(),
        }
    }

    /// True when the request `self` matches the version `candidate` by
    /// whole components: every requested component equals the candidate's,
    /// except that a last requested component that is a bare number also
    /// matches that number with a patch level (`3` matches `3-p551`).
    pub(crate) fn matches(&self, candidate: &Version) -> bool {
        let Some((last, init)) = self.parts.split_last() else {
            return false;
        };
        if candidate.parts.len() < self.parts.len() {
            return false;
        }
        let same_init = init.iter().zip(&candidate.parts).all(|(a, b)| a == b);
        let theirs = &candidate.parts[init.len()];
        let same_last = last == theirs
            || (last.suffix.is_empty()
                && last.number.is_some()
                && last.number == theirs.number
                && theirs.is_patch());
        same_init && same_last
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Version) -> Ordering {
        self.parts.cmp(&other.parts)
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Version) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Sorts version strings in version order (lowest first) and drops
/// duplicates.
pub(crate) fn sort(versions: &mut Vec<String>) {
    versions.sort_by(|a, b| {
        Version::parse(a)
            .cmp(&Version::parse(b))
            .then_with(|| a.cmp(b))
    });
    versions.dedup();
}

/// What a runtime lists for the full versions `found`: each full version
/// and its `X.Y` (first two components), sorted, without duplicates:
/// `["3.1.4", "3.2.0"]` gives `["3.1", "3.1.4", "3.2", "3.2.0"]`.
pub(crate) fn listing(found: &[String]) -> Vec<String> {
    let mut all = Vec::with_capacity(found.len() * 2);
    for full in found {
        let mut parts = full.splitn(3, '.');
        if let (Some(major), Some(minor), Some(_)) = (parts.next(), parts.next(), parts.next()) {
            all.push(format!("{major}.{minor}"));
        }
        all.push(full.clone());
    }
    sort(&mut all);
    all
}

/// The highest of `versions` that `requested` matches.
///
/// # Errors
///
/// Nothing matches; the message names `runtime` and lists `versions`.
pub(crate) fn resolve(runtime: &str, requested: &str, versions: &[String]) -> Result<String> {
    let request = Version::parse(requested);
    versions
        .iter()
        .map(|v| (Version::parse(v), v))
        .filter(|(parsed, _)| request.matches(parsed))
        .max_by(|(a, va), (b, vb)| a.cmp(b).then_with(|| va.cmp(vb)))
        .map(|(_, v)| v.clone())
        .ok_or_else(|| no_match(runtime, requested, versions))
}

/// The error for a version that nothing matches.
pub(crate) fn no_match(runtime: &str, requested: &str, versions: &[String]) -> Error {
    let available = if versions.is_empty() {
        "none on this node".to_string()
    } else {
        let mut sorted = versions.to_vec();
        sort(&mut sorted);
        sorted.join(", ")
    };
    Error::invalid(format!(
        "runtime {runtime} has no version {requested} (available: {available})"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn pick(requested: &str, versions: &[&str]) -> Option<String> {
        resolve("test", requested, &strings(versions)).ok()
    }

    #[test]
    fn components_compare_numerically() {
        let ordered = [
            "1.9",
            "1.9.3-rc1",
            "1.9.3",
            "1.9.3-p0",
            "1.9.3-p9",
            "1.9.3-p551",
            "1.9.4",
            "1.9.30",
            "1.10",
            "2.7.8",
            "2.7.8-p1",
            "3.0.0-preview1",
            "3.0.0-preview2",
            "3.0.0-rc1",
            "3.0.0",
            "3.1",
            "3.1.4",
            "3.10.0",
            "18446744073709551616000.1",
        ];
        for pair in ordered.windows(2) {
            assert!(
                Version::parse(pair[0]) < Version::parse(pair[1]),
                "{} < {}",
                pair[0],
                pair[1]
            );
        }
        let mut shuffled = strings(&ordered);
        shuffled.reverse();
        sort(&mut shuffled);
        assert_eq!(shuffled, strings(&ordered));
    }

    #[test]
    fn requests_match_whole_components() {
        let table: &[(&str, &[&str], Option<&str>)] = &[
            (
                "3.1",
                &["3.1.4", "3.1.10", "3.10.0", "3.2.0"],
                Some("3.1.10"),
            ),
            ("3.1", &["3.10.0", "3.11.1"], None),
            ("3", &["3.1.4", "3.10.0", "4.0.0"], Some("3.10.0")),
            ("1.9.3", &["1.9.30", "1.9.3"], Some("1.9.3")),
            ("1.9.3", &["1.9.30"], None),
            ("1.9.30", &["1.9.3", "1.9.30"], Some("1.9.30")),
            (
                "1.9.3",
                &["1.9.3-p551", "1.9.3-p99", "1.9.30"],
                Some("1.9.3-p551"),
            ),
            ("1.9", &["1.9.3-p551", "1.9.2-p330"], Some("1.9.3-p551")),
            ("2.7.8", &["2.7.8", "2.7.8-p1"], Some("2.7.8-p1")),
            (
                "2.7.8-p1",
                &["2.7.8", "2.7.8-p1", "2.7.8-p10"],
                Some("2.7.8-p1"),
            ),
            ("3.0.0", &["3.0.0-preview1"], None),
            (
                "3.0.0-preview1",
                &["3.0.0-preview1"],
                Some("3.0.0-preview1"),
            ),
            ("3.0", &["3.0.0-rc1", "3.0.0"], Some("3.0.0")),
            ("3.1", &["3.1", "3.1.4"], Some("3.1.4")),
            ("1", &["1"], Some("1")),
            ("3.1.4.2", &["3.1.4"], None),
            ("", &["1"], None),
            ("3.01", &["3.1.2"], Some("3.1.2")),
            (
                "jruby-9.4",
                &["jruby-9.4.0.0", "9.4.1"],
                Some("jruby-9.4.0.0"),
            ),
        ];
        for (requested, versions, expected) in table {
            assert_eq!(
                pick(requested, versions).as_deref(),
                *expected,
                "{requested} in {versions:?}"
            );
        }
    }

    #[test]
    fn listing_adds_major_minor_and_sorts() {
        assert_eq!(
            listing(&strings(&["3.2.0", "3.1.4", "3.1.10", "1.9.3-p551", "3.2"])),
            strings(&[
                "1.9",
                "1.9.3-p551",
                "3.1",
                "3.1.4",
                "3.1.10",
                "3.2",
                "3.2.0"
            ])
        );
        assert!(listing(&[]).is_empty());
    }

    #[test]
    fn no_match_lists_what_exists() {
        let err = resolve("rbenv", "3.3", &strings(&["3.2.0", "3.1.4"])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "runtime rbenv has no version 3.3 (available: 3.1.4, 3.2.0)"
        );
        let err = resolve("nvm", "20", &[]).unwrap_err();
        assert!(err.to_string().contains("none on this node"), "{err}");
    }
}
