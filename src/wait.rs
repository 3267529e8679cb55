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
pub(crate) fn until(timeout: Duration, cond: impl FnMut() -> bool) -> bool {
    poll(timeout, FIRST, 2.0, LONGEST, cond)
}

/// The first poll interval of [`until_soon`].
const SOON_FIRST: Duration = Duration::from_micros(100);
/// The longest poll interval of [`until_soon`].
const SOON_LONGEST: Duration = Duration::from_millis(5);

/// Like [`until`], for cheap conditions on the critical path of a start
/// (a startflag file, a port starting to listen): the interval starts at
/// 100 µs and grows by half each time up to 5 ms, so a condition that
/// comes true after t is seen by about 1.5 t (t + 5 ms at most).
pub(crate) fn until_soon(timeout: Duration, cond: impl FnMut() -> bool) -> bool {
    poll(timeout, SOON_FIRST, 1.5, SOON_LONGEST, cond)
}

fn poll(
    timeout: Duration,
    first: Duration,
    growth: f64,
    longest: Duration,
    mut cond: impl FnMut() -> bool,
) -> bool {
    let deadline = Instant::now() + timeout;
    let mut interval = first;
    loop {
        if cond() {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        thread::sleep(interval.min(deadline - now));
        interval = interval.mul_f64(growth).min(longest);
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

    #[test]
    fn until_soon_polls_finely_and_times_out() {
        let start = Instant::now();
        assert!(until_soon(Duration::from_secs(5), || start.elapsed()
            >= Duration::from_millis(3)));
        assert!(start.elapsed() < Duration::from_millis(100));
        assert!(!until_soon(Duration::from_millis(20), || false));
    }
}
