//! The `zscore` detector: each sample against the last `window` samples before it,
//! `z = (x - mean) / max(std, min_std)` (population std), anomalous when `|z| > threshold`.

use std::collections::VecDeque;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::{Kind, Verdict, MAX_SCORE};
use crate::analysis::stats::WindowMoments;
use crate::model::Millis;

fn default_threshold() -> f64 {
    5.0
}

/// Warm-up when none is given: an eighth of the window, between 2 and 32.
fn default_warmup(window: usize) -> usize {
    (window / 8).clamp(2, 32)
}

detector_config! {
    /// `{ type = "zscore", window, threshold, warmup, min_std }`.
    pub struct Config {
        #[serde(default = "super::default_window")]
        pub window: usize,
        #[serde(default = "default_threshold")]
        pub threshold: f64,
        /// Default: [`default_warmup`] of the window.
        #[serde(default)]
        pub warmup: Option<usize>,
        #[serde(default)]
        pub min_std: f64,
    }
}

impl Config {
    pub fn validate(&self) -> Result<Spec, super::Invalid> {
        super::finite(self.threshold, "threshold")?;
        super::finite(self.min_std, "min_std")?;
        let window = super::window_in(self.window, 100_000)?;
        let threshold = super::positive(self.threshold, "threshold")?;
        let warmup =
            super::warmup_within(self.warmup.unwrap_or(default_warmup(window)), window)?;
        let min_std = super::at_least_zero(self.min_std, "min_std")?;
        Ok(Spec {
            window,
            threshold,
            warmup,
            min_std,
        })
    }
}

/// Anomalous when `|z| > threshold` once the window holds `warmup` samples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Spec {
    pub window: usize,
    pub threshold: f64,
    pub warmup: usize,
    pub min_std: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct State {
    pub(crate) ring: VecDeque<f64>,
    pub(crate) moments: WindowMoments,
}

/// Signed z (clamped to ±[`MAX_SCORE`]) and the threshold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reason {
    pub z: f64,
    pub threshold: f64,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = super::op(self.z.abs() > self.threshold);
        write!(f, "|z| {:.2} {op} {}", self.z.abs(), self.threshold)
    }
}

impl Kind for Spec {
    type State = State;

    fn start(&self, _now: Millis) -> State {
        State::default()
    }

    /// `window` 0 behaves like 1; the effective warm-up is `warmup` clamped to `[1, window]`.
    /// Does not allocate once the ring has reached its window size.
    fn observe(&self, s: &mut State, _ts: Millis, x: f64) -> Verdict {
        let threshold = self.threshold;
        let window = self.window.max(1);
        let need = self.warmup.clamp(1, window);
        let have = s.ring.len();
        let verdict = match s.moments.mean_std() {
            Some((mean, std)) if have >= need => {
                let denom = std.max(self.min_std);
                let diff = x - mean;
                let z = if denom > 0.0 {
                    (diff / denom).clamp(-MAX_SCORE, MAX_SCORE)
                } else if diff == 0.0 {
                    0.0
                } else {
                    MAX_SCORE.copysign(diff)
                };
                Verdict::measured(z.abs(), threshold, Reason { z, threshold })
            }
            _ => Verdict::quiet(super::warming(have, need)),
        };
        // `while`, not `if`: the window may have shrunk after a config change.
        while s.ring.len() >= window {
            let Some(old) = s.ring.pop_front() else {
                break;
            };
            s.moments.evict(old, s.ring.iter().copied());
        }
        if s.ring.capacity() == 0 {
            // Once, at the first sample: exactly the window, not the next power of two.
            s.ring.reserve_exact(window.min(1 << 16));
        }
        s.ring.push_back(x);
        s.moments.push(x);
        verdict
    }

    fn baseline(s: &State) -> Option<(f64, f64)> {
        s.moments.mean_std()
    }
}
