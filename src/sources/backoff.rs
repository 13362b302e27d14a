//! Capped exponential backoff with jitter, for reconnects and restarts.
//! Each delay is drawn in [d·(1−jitter), d] where d doubles from `min` up to `max`.

use std::time::Duration;

use rand::Rng;

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
}
