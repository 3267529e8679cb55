//! Bounded waits.
//!
//! Where no event can be waited on (a file appearing, a port opening), we
//! poll with a short interval that grows, so that a condition that comes
//! true at once costs about a millisecond, and a slow one costs little
//! CPU. Every wait has a deadline.

use std::thread;
use std::time::{Duration, Instant};

/// The first poll interval.
const FIRST: Duration = Duration::from_millis(1);
/// The longest poll interval.
const LONGEST: Duration = Duration::from_millis(50);

/// Polls `cond` until it is true or `timeout` has passed; returns whether
/// it became true. `cond` is always evaluated at least once, and once more
/// at the deadline.
pub(crate) fn until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    let mut interval = FIRST;
    loop {
        if cond() {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        thread::sleep(interval.min(deadline - now));
        interval = (interval * 2).min(LONGEST);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn until_returns_early_and_times_out() {
        let mut n = 0;
        assert!(until(Duration::from_secs(5), || {
            n += 1;
            n == 3
        }));
        let start = Instant::now();
        assert!(!until(Duration::from_millis(30), || false));
        assert!(start.elapsed() >= Duration::from_millis(30));
    }
}
