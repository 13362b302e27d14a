//! The `cusum` detector: two-sided CUSUM of standardized samples with allowance `drift`, anomalous
//! when a sum passes `threshold` (the sums then restart); baseline over about `window` samples.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::baseline::{baseline_weight, Baseline, ChartOutcome};
use super::{Invalid, Kind, Verdict, MAX_SCORE};
use crate::model::Millis;

fn default_drift() -> f64 {
    0.5
}
fn default_threshold() -> f64 {
    10.0
}
/// Warm-up when none is given: a quarter of the window, between 8 and 128.
fn default_warmup(window: usize) -> usize {
    (window / 4).clamp(8, 128)
}

detector_config! {
    /// `{ type = "cusum", drift, threshold, window, warmup }`.
    pub struct Config {
        #[serde(default = "default_drift")]
        pub drift: f64,
        #[serde(default = "default_threshold")]
        pub threshold: f64,
        #[serde(default = "super::default_window")]
        pub window: usize,
        #[serde(default)]
        pub warmup: Option<usize>,
    }
}

impl Config {
    pub fn validate(&self) -> Result<Spec, Invalid> {
        super::finite(self.threshold, "threshold")?;
        super::finite(self.drift, "drift")?;
        let window = super::window_in(self.window, 1_000_000)?;
        let drift = super::at_least_zero(self.drift, "drift")?;
        Ok(Spec {
            drift,
            threshold: super::positive(self.threshold, "threshold")?,
            window,
            warmup: super::warmup_upto(self.warmup.unwrap_or(default_warmup(window)), 1_000_000)?,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Spec {
    pub drift: f64,
    pub threshold: f64,
    pub window: usize,
    pub warmup: usize,
}

/// The larger sum, its direction, the threshold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reason {
    pub sum: f64,
    pub up: bool,
    pub threshold: f64,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dir = if self.up { "upward" } else { "downward" };
        write!(
            f,
            "CUSUM {dir} {:.2} {} {}",
            self.sum,
            super::op(self.sum > self.threshold),
            self.threshold
        )
    }
}

impl Kind for Spec {
    type State = CusumState;

    fn start(&self, _now: Millis) -> CusumState {
        CusumState::default()
    }

    fn observe(&self, s: &mut CusumState, _ts: Millis, value: f64) -> Verdict {
        let threshold = self.threshold;
        match s.observe(self.drift, threshold, self.window, self.warmup, value) {
            Some(o) => Verdict::measured(
                o.stat,
                threshold,
                Reason {
                    sum: o.stat,
                    up: o.up,
                    threshold,
                },
            ),
            None => Verdict::warming_up(self.warmup),
        }
    }
}

/// Two-sided CUSUM of standardized samples: `hi = max(0, hi + z - drift)`,
/// `lo = max(0, lo - z - drift)`; both restart after they pass the threshold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct CusumState {
    base: Baseline,
    hi: f64,
    lo: f64,
}

impl CusumState {
    /// `None` while the baseline has fewer than `warmup` samples. Non-finite samples are skipped.
    pub fn observe(
        &mut self,
        drift: f64,
        threshold: f64,
        window: usize,
        warmup: usize,
        x: f64,
    ) -> Option<ChartOutcome> {
        if !x.is_finite() {
            return None;
        }
        let ready = self.base.count() >= warmup.max(1) as u64;
        let out = ready.then(|| {
            let z = self.base.standardize(x);
            self.hi = (self.hi + z - drift).clamp(0.0, MAX_SCORE);
            self.lo = (self.lo - z - drift).clamp(0.0, MAX_SCORE);
            let up = self.hi >= self.lo;
            let stat = self.hi.max(self.lo);
            if stat > threshold {
                self.hi = 0.0;
                self.lo = 0.0;
            }
            ChartOutcome {
                stat,
                up,
                mean: self.base.mean(),
                level: x,
            }
        });
        self.base.push(baseline_weight(window), x);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;
    use rand_distr::{Distribution, Normal};

    #[test]
    fn cusum_accumulates_a_small_shift_and_restarts() {
        let mut c = CusumState::default();
        let mut rng = StdRng::seed_from_u64(3);
        let d = Normal::new(0.0, 1.0).unwrap();
        let mut fired = Vec::new();
        for i in 0..3_000 {
            // A 1-sigma shift from 2000: too small for a per-sample z test.
            let x = d.sample(&mut rng) + if i >= 2_000 { 1.0 } else { 0.0 };
            if let Some(o) = c.observe(0.5, 10.0, 1_000, 100, x) {
                if o.stat > 10.0 {
                    fired.push(i);
                    assert!(o.up);
                }
            }
        }
        assert!(!fired.is_empty());
        assert!(fired[0] >= 2_000 && fired[0] < 2_060, "{fired:?}");
    }
}
