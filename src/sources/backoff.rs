//! The one retry layer of every source: capped exponential backoff with jitter (`Backoff`), and
//! `Retry`, which starts over at the minimum once a connection has been healthy for a while.

use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;

/// Capped exponential delays: each is drawn in [d·(1−jitter), d] where d doubles from `min` to `max`.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
    jitter: f64,
}

impl Backoff {
    /// Half of each delay is random.
    pub fn new(min: Duration, max: Duration) -> Self {
        Self::with_jitter(min, max, 0.5)
    }

    /// `jitter` (0 to 1) is the random fraction of each delay: it is drawn in [d·(1−jitter), d].
    pub fn with_jitter(min: Duration, max: Duration, jitter: f64) -> Self {
        let min = min.max(Duration::from_millis(1));
        Backoff {
            min,
            max: max.max(min),
            next: min,
            jitter: if jitter.is_finite() {
                jitter.clamp(0.0, 1.0)
            } else {
                0.5
            },
        }
    }

    /// The delay before the next attempt; grows until `max`.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        let lo = d.mul_f64(1.0 - self.jitter);
        let jitter = rand::thread_rng().gen_range(0..=(d - lo).as_millis() as u64);
        (lo + Duration::from_millis(jitter)).max(self.min.min(d))
    }

    /// Call after a success: the next failure waits `min` again.
    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

/// How long a connection must stay up before its loss counts as a fresh failure (backoff from
/// `min` again) rather than one more of a series (a peer that accepts and drops at once).
pub const HEALTHY_AFTER: Duration = Duration::from_secs(10);

/// Reconnect pacing of one transport (TCP client, serial port, MQTT broker, Modbus bus, and the
/// supervisor's restarts): grows on every failure and resets after a healthy period, or as soon as
/// the transport proved useful (`healthy`).
#[derive(Debug, Clone)]
pub struct Retry {
    backoff: Backoff,
    healthy_after: Duration,
    up_since: Option<Instant>,
}

impl Retry {
    pub fn new(min: Duration, max: Duration) -> Self {
        Self::with_backoff(Backoff::new(min, max), HEALTHY_AFTER)
    }

    pub fn with_backoff(backoff: Backoff, healthy_after: Duration) -> Self {
        Retry {
            backoff,
            healthy_after,
            up_since: None,
        }
    }

    /// The transport is up (connected, port open, task started).
    pub fn up(&mut self) {
        self.up_since = Some(Instant::now());
    }

    /// The transport did useful work (a frame decoded, a device answered): the next loss
    /// starts the backoff over.
    pub fn healthy(&mut self) {
        self.backoff.reset();
    }

    /// An attempt failed or the transport went down: the delay before the next attempt.
    pub fn failed(&mut self) -> Duration {
        if let Some(since) = self.up_since.take() {
            if since.elapsed() >= self.healthy_after {
                self.backoff.reset();
            }
        }
        self.backoff.next_delay()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_is_capped_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let ds: Vec<Duration> = (0..8).map(|_| b.next_delay()).collect();
        for (i, d) in ds.iter().enumerate() {
            let cap = Duration::from_millis(100 * (1 << i)).min(Duration::from_secs(1));
            assert!(
                *d <= cap && *d >= cap / 2,
                "attempt {i}: {d:?} not in [{:?}, {cap:?}]",
                cap / 2
            );
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
        let mut exact =
            Backoff::with_jitter(Duration::from_millis(100), Duration::from_secs(1), 0.0);
        assert_eq!(exact.next_delay(), Duration::from_millis(100));
        assert_eq!(exact.next_delay(), Duration::from_millis(200));
    }

    fn exact(healthy_after: Duration) -> Retry {
        Retry::with_backoff(
            Backoff::with_jitter(Duration::from_millis(100), Duration::from_secs(1), 0.0),
            healthy_after,
        )
    }

    #[test]
    fn a_connection_dropped_at_once_keeps_backing_off() {
        // A peer that accepts and closes at once (or a broker kicking a duplicate client id)
        // must not be hammered at the minimum delay.
        let mut r = exact(Duration::from_secs(3600));
        let mut ds = Vec::new();
        for _ in 0..4 {
            r.up();
            ds.push(r.failed().as_millis());
        }
        assert_eq!(ds, [100, 200, 400, 800]);
    }

    #[test]
    fn a_healthy_period_or_useful_work_starts_over() {
        let mut r = exact(Duration::ZERO);
        r.failed();
        r.failed();
        r.up();
        assert_eq!(r.failed(), Duration::from_millis(100), "up long enough");
        let mut r = exact(Duration::from_secs(3600));
        r.failed();
        r.failed();
        r.up();
        r.healthy();
        assert_eq!(r.failed(), Duration::from_millis(100), "did useful work");
        // Failures while down (no `up`) keep growing.
        assert_eq!(r.failed(), Duration::from_millis(200));
    }
}
