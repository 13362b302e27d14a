//! The `ewma` detector: an EWMA control chart, the EWMA (weight `alpha`) of the samples in units of
//! its standard error against a baseline mean/variance over about `window` samples.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::baseline::{baseline_weight, Baseline, ChartOutcome};
use super::{Invalid, Kind, Verdict, MAX_SCORE};
use crate::model::Millis;

fn default_alpha() -> f64 {
    0.1
}
fn default_threshold() -> f64 {
    5.0
}
/// Warm-up when none is given: a quarter of the window, between 8 and 128.
fn default_warmup(window: usize) -> usize {
    (window / 4).clamp(8, 128)
}

detector_config! {
    /// `{ type = "ewma", alpha, window, threshold, warmup }`.
    pub struct Config {
        #[serde(default = "default_alpha")]
        pub alpha: f64,
        #[serde(default = "super::default_window")]
        pub window: usize,
        #[serde(default = "default_threshold")]
        pub threshold: f64,
        #[serde(default)]
        pub warmup: Option<usize>,
    }
}

impl Config {
    pub fn validate(&self) -> Result<Spec, Invalid> {
        super::finite(self.threshold, "threshold")?;
        super::finite(self.alpha, "alpha")?;
        let window = super::window_in(self.window, 1_000_000)?;
        Ok(Spec {
            alpha: super::alpha_in(self.alpha)?,
            window,
            threshold: super::positive(self.threshold, "threshold")?,
            warmup: super::warmup_upto(self.warmup.unwrap_or(default_warmup(window)), 1_000_000)?,
        })
    }
}

/// Anomalous when the chart statistic passes `threshold`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Spec {
    pub alpha: f64,
    pub window: usize,
    pub threshold: f64,
    pub warmup: usize,
}

/// The EWMA value, the baseline mean, the statistic (signed) and the threshold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reason {
    pub ewma: f64,
    pub mean: f64,
    pub z: f64,
    pub threshold: f64,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "EWMA {} vs baseline {}: |z| {:.2} {} {}",
            super::Short(self.ewma),
            super::Short(self.mean),
            self.z.abs(),
            super::op(self.z.abs() > self.threshold),
            self.threshold
        )
    }
}

impl Kind for Spec {
    type State = EwmaState;

    fn start(&self, _now: Millis) -> EwmaState {
        EwmaState::default()
    }

    fn observe(&self, s: &mut EwmaState, _ts: Millis, value: f64) -> Verdict {
        let threshold = self.threshold;
        match s.observe(self.alpha, self.window, self.warmup, value) {
            Some(o) => Verdict::measured(
                o.stat.abs(),
                threshold,
                Reason {
                    ewma: o.level,
                    mean: o.mean,
                    z: o.stat,
                    threshold,
                },
            ),
            None => Verdict::warming_up(self.warmup),
        }
    }
}

/// EWMA chart: `e = alpha·x + (1 - alpha)·e`, judged as `(e - mean) / (std · sqrt(alpha / (2 - alpha)))`
/// against a baseline over about `window` samples.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct EwmaState {
    base: Baseline,
    ewma: f64,
}

impl EwmaState {
    /// `None` while the baseline has fewer than `warmup` samples. Non-finite samples are skipped.
    pub fn observe(
        &mut self,
        alpha: f64,
        window: usize,
        warmup: usize,
        x: f64,
    ) -> Option<ChartOutcome> {
        if !x.is_finite() {
            return None;
        }
        let alpha = alpha.clamp(f64::MIN_POSITIVE, 1.0);
        self.ewma = if self.base.count() == 0 {
            x
        } else {
            self.ewma + alpha * (x - self.ewma)
        };
        let out = (self.base.count() >= warmup.max(1) as u64).then(|| {
            let se = (alpha / (2.0 - alpha)).sqrt();
            let z = self.base.standardize(self.ewma) / se;
            ChartOutcome {
                stat: z.clamp(-MAX_SCORE, MAX_SCORE),
                up: z >= 0.0,
                mean: self.base.mean(),
                level: self.ewma,
            }
        });
        self.base.push(baseline_weight(window), x);
        out
    }
}

