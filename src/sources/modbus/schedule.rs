//! When each Modbus device (and each of its reads) is polled next: on its interval while it
//! answers; after a failure, not before the retry layer's growing delay. No I/O; time is passed in.

use std::time::Duration;

use tokio::time::Instant;

use crate::sources::backoff::Retry;

/// Poll schedule of one device.
#[derive(Debug, Clone)]
pub struct DeviceSched {
    interval: Duration,
    next_due: Instant,
    retry: Retry,
    failing: bool,
}

impl DeviceSched {
    /// First poll at `now`.
    pub fn new(
        interval: Duration,
        backoff_min: Duration,
        backoff_max: Duration,
        now: Instant,
    ) -> Self {
        DeviceSched {
            interval,
            next_due: now,
            retry: Retry::new(backoff_min, backoff_max),
            failing: false,
        }
    }

    pub fn interval(&self) -> Duration {
        self.interval
    }

    pub fn next_due(&self) -> Instant {
        self.next_due
    }

    pub fn due(&self, now: Instant) -> bool {
        now >= self.next_due
    }

    pub fn failing(&self) -> bool {
        self.failing
    }

    /// The device answered: next poll one interval after the previous due time (at once if
    /// polling fell behind). Returns true when it had been failing.
    pub fn succeeded(&mut self, now: Instant) -> bool {
        self.retry.healthy();
        self.next_due = (self.next_due + self.interval).max(now);
        std::mem::take(&mut self.failing)
    }

    /// The device did not answer: it is skipped for the returned delay (never less than its
    /// interval), which grows with every further failure up to the backoff maximum.
    pub fn failed(&mut self, now: Instant) -> Duration {
        self.failing = true;
        let delay = self.retry.failed().max(self.interval);
        self.next_due = now + delay;
        delay
    }
}

/// Backoff of one read of a device that answered it with an exception.
#[derive(Debug, Clone)]
pub struct ReadSched {
    skip_until: Option<Instant>,
    retry: Retry,
    failures: u32,
}

impl ReadSched {
    pub fn new(backoff_min: Duration, backoff_max: Duration) -> Self {
        ReadSched {
            skip_until: None,
            retry: Retry::new(backoff_min, backoff_max),
            failures: 0,
        }
    }

    /// Whether the read is still backing off at `now`.
    pub fn skipping(&self, now: Instant) -> bool {
        self.skip_until.is_some_and(|t| now < t)
    }

    /// Consecutive exception answers.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Answered with data: returns true when it had been failing.
    pub fn succeeded(&mut self) -> bool {
        self.skip_until = None;
        self.retry.healthy();
        std::mem::take(&mut self.failures) > 0
    }

    /// Answered with an exception: skip it for the returned delay (at least `interval`).
    pub fn failed(&mut self, now: Instant, interval: Duration) -> Duration {
        self.failures += 1;
        let delay = self.retry.failed().max(interval);
        self.skip_until = Some(now + delay);
        delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn an_answering_device_keeps_its_rhythm() {
        let t0 = Instant::now();
        let mut s = DeviceSched::new(100 * MS, 1000 * MS, 8000 * MS, t0);
        assert!(s.due(t0));
        // Polled a little late: the next poll stays on the 100 ms grid.
        assert!(!s.succeeded(t0 + 7 * MS));
        assert_eq!(s.next_due(), t0 + 100 * MS);
        assert!(!s.due(t0 + 99 * MS));
        // Fell far behind: poll at once, no burst of catch-up polls.
        s.succeeded(t0 + 450 * MS);
        assert_eq!(s.next_due(), t0 + 450 * MS);
    }

    #[test]
    fn a_failing_device_backs_off_growing_and_capped_then_recovers() {
        let t0 = Instant::now();
        let mut s = DeviceSched::new(100 * MS, 1000 * MS, 4000 * MS, t0);
        let mut now = t0;
        let mut delays = Vec::new();
        for _ in 0..6 {
            let d = s.failed(now);
            assert!(s.failing());
            assert_eq!(s.next_due(), now + d);
            assert!(!s.due(now + d - MS));
            delays.push(d);
            now += d;
        }
        // Jittered in [d/2, d] with d = 1, 2, 4, 4, 4, 4 s.
        for (d, cap) in delays.iter().zip([1000u32, 2000, 4000, 4000, 4000, 4000]) {
            assert!(*d <= cap * MS && *d >= cap * MS / 2, "{delays:?}");
        }
        assert!(s.succeeded(now), "reports the recovery");
        assert!(!s.failing());
        let d = s.failed(now);
        assert!(d <= 1000 * MS, "backoff starts over after a success: {d:?}");
    }

    #[test]
    fn backoff_is_never_shorter_than_the_interval() {
        let t0 = Instant::now();
        let mut s = DeviceSched::new(5000 * MS, 100 * MS, 400 * MS, t0);
        assert_eq!(s.failed(t0), 5000 * MS);
        let mut r = ReadSched::new(100 * MS, 400 * MS);
        assert_eq!(r.failed(t0, 5000 * MS), 5000 * MS);
    }

    #[test]
    fn a_read_with_exceptions_is_skipped_until_its_backoff_expires() {
        let t0 = Instant::now();
        let mut r = ReadSched::new(1000 * MS, 8000 * MS);
        assert!(!r.skipping(t0));
        let d = r.failed(t0, 100 * MS);
        assert_eq!(r.failures(), 1);
        assert!(r.skipping(t0 + d - MS));
        assert!(!r.skipping(t0 + d));
        r.failed(t0 + d, 100 * MS);
        assert_eq!(r.failures(), 2);
        assert!(r.succeeded());
        assert_eq!(r.failures(), 0);
        assert!(!r.skipping(t0 + d));
        assert!(!r.succeeded());
    }
}
