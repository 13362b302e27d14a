//! Clock sanity for boards without a real-time clock (Raspberry Pi): detects a wall clock that is
//! not set yet (earlier than this build) or that jumps (NTP sync, manual set) against the monotonic clock.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use serde::Serialize;

use crate::model::Millis;

/// When this binary was built (unix ms): no correct wall clock can be earlier.
pub const BUILD_UNIX_MS: Millis = parse_ms(env!("EDGEWATCH_BUILD_UNIX_MS"));

/// Smallest wall-clock step counted as a jump; longer gaps between readings also allow NTP's
/// slewing (at most 500 ppm) before they count.
pub const JUMP_MIN_MS: i64 = 2_000;

const fn parse_ms(s: &str) -> Millis {
    let b = s.as_bytes();
    let mut i = 0;
    let mut v: Millis = 0;
    while i < b.len() {
        v = v * 10 + (b[i] - b'0') as Millis;
        i += 1;
    }
    v
}

/// What one reading of the wall clock says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reading {
    /// The wall clock is plausible (not before the build).
    pub synced: bool,
    /// The wall clock moved this much more (or less, negative) than the monotonic clock since the
    /// previous reading: a step, e.g. the first NTP sync after boot.
    pub jump: Option<i64>,
}

/// Per-source clock watcher: one `observe` per read buffer, never per sample.
#[derive(Debug, Clone)]
pub struct ClockGuard {
    floor: Millis,
    last: Option<(Millis, Instant)>,
}

impl Default for ClockGuard {
    fn default() -> Self {
        Self::new(BUILD_UNIX_MS)
    }
}

impl ClockGuard {
    /// `floor`: the earliest plausible wall-clock time (normally `BUILD_UNIX_MS`).
    pub fn new(floor: Millis) -> Self {
        ClockGuard { floor, last: None }
    }

    /// Compares a wall-clock reading with the monotonic clock taken at the same moment.
    pub fn observe(&mut self, wall: Millis, mono: Instant) -> Reading {
        let jump = self.last.and_then(|(w0, m0)| {
            let elapsed = mono.saturating_duration_since(m0).as_millis() as i64;
            let step = wall - (w0 + elapsed);
            let tolerance = JUMP_MIN_MS.max(elapsed / 2_000);
            (step.abs() > tolerance).then_some(step)
        });
        self.last = Some((wall, mono));
        Reading {
            synced: wall >= self.floor,
            jump,
        }
    }
}

static UNSYNCED_SAMPLES: AtomicU64 = AtomicU64::new(0);
static JUMPS: AtomicU64 = AtomicU64::new(0);
static LAST_JUMP_MS: AtomicI64 = AtomicI64::new(0);
static LAST_JUMP_AT: AtomicI64 = AtomicI64::new(0);

/// Counts samples stamped with receive time while the clock was not plausible.
pub fn count_unsynced(samples: u64) {
    if samples > 0 {
        UNSYNCED_SAMPLES.fetch_add(samples, Relaxed);
    }
}

/// Records and logs a clock step seen by a source (`corrected`: pending samples shifted).
pub fn note_jump(step_ms: i64, now: Millis, corrected: usize) {
    JUMPS.fetch_add(1, Relaxed);
    let previous = LAST_JUMP_AT.swap(now, Relaxed);
    LAST_JUMP_MS.store(step_ms, Relaxed);
    // Every source sees the same step; log it once.
    if (now - previous).abs() > 10 * JUMP_MIN_MS {
        tracing::warn!(
            step_ms,
            corrected,
            "wall clock jumped (NTP sync or clock set); receive times after this use the new clock"
        );
    }
}

/// Clock health for `/api/status`.
#[derive(Debug, Clone, Serialize)]
pub struct ClockView {
    /// The wall clock now is not before the build time.
    pub plausible: bool,
    pub build_time: Millis,
    /// Samples without their own timestamp that were received while the clock was implausible.
    pub unsynced_samples: u64,
    pub jumps: u64,
    pub last_jump_ms: i64,
    pub last_jump_at: Option<Millis>,
}

pub fn view(now: Millis) -> ClockView {
    let at = LAST_JUMP_AT.load(Relaxed);
    ClockView {
        plausible: now >= BUILD_UNIX_MS,
        build_time: BUILD_UNIX_MS,
        unsynced_samples: UNSYNCED_SAMPLES.load(Relaxed),
        jumps: JUMPS.load(Relaxed),
        last_jump_ms: LAST_JUMP_MS.load(Relaxed),
        last_jump_at: (at != 0).then_some(at),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const FLOOR: Millis = 1_760_000_000_000;

    #[test]
    fn build_time_is_embedded_and_recent() {
        let now = crate::model::now_ms();
        assert!(BUILD_UNIX_MS <= now, "{BUILD_UNIX_MS}");
        assert!(BUILD_UNIX_MS > now - 365 * 86_400_000, "{BUILD_UNIX_MS}");
        assert_eq!(parse_ms("1763000000123"), 1_763_000_000_123);
    }

    #[test]
    fn a_clock_before_the_build_is_unsynced_until_ntp_steps_it() {
        let mut g = ClockGuard::new(FLOOR);
        let t0 = Instant::now();
        // Boot without RTC: 1970 plus uptime.
        let r = g.observe(12_000, t0);
        assert_eq!(
            r,
            Reading {
                synced: false,
                jump: None
            }
        );
        // Time passes at the same rate on both clocks: no jump, still unsynced.
        let r = g.observe(13_000, t0 + Duration::from_secs(1));
        assert_eq!(
            r,
            Reading {
                synced: false,
                jump: None
            }
        );
        // NTP steps the clock to the real time.
        let real = FLOOR + 86_400_000;
        let r = g.observe(real, t0 + Duration::from_millis(1_500));
        assert!(r.synced);
        assert_eq!(r.jump, Some(real - 13_500));
        let r = g.observe(real + 1_000, t0 + Duration::from_millis(2_500));
        assert_eq!(
            r,
            Reading {
                synced: true,
                jump: None
            }
        );
    }

    #[test]
    fn backward_steps_and_small_drift() {
        let mut g = ClockGuard::new(FLOOR);
        let t0 = Instant::now();
        let w = FLOOR + 1_000_000;
        g.observe(w, t0);
        // A restored-at-shutdown clock corrected backwards by a minute.
        let r = g.observe(w + 1_000 - 60_000, t0 + Duration::from_secs(1));
        assert_eq!(r.jump, Some(-60_000));
        // Sub-threshold differences are not jumps.
        let r = g.observe(w + 2_500 - 60_000, t0 + Duration::from_secs(2));
        assert_eq!(r.jump, None);
        // Over 10 hours NTP may slew by up to 18 s: not a step.
        let later = t0 + Duration::from_secs(2 + 36_000);
        let r = g.observe(w + 2_000 - 60_000 + 36_000_000 + 15_000, later);
        assert_eq!(r.jump, None);
    }
}
