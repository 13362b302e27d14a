//! The `predict` detector: the error of a cheap online forecast (Holt's linear exponential
//! smoothing: level plus trend), over the typical size of recent errors.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::{Invalid, Kind, Verdict, MAX_SCORE};
use crate::model::Millis;

/// Mean absolute error to standard deviation for normal errors.
const MEAN_AD_TO_STD: f64 = 1.2533;

fn default_alpha() -> f64 {
    0.5
}
fn default_beta() -> f64 {
    0.1
}
fn default_window() -> usize {
    128
}
fn default_threshold() -> f64 {
    6.0
}
fn default_warmup() -> usize {
    32
}

detector_config! {
    /// `{ type = "predict", alpha, beta, window, threshold, warmup }`.
    pub struct Config {
        #[serde(default = "default_alpha")]
        pub alpha: f64,
        #[serde(default = "default_beta")]
        pub beta: f64,
        #[serde(default = "default_window")]
        pub window: usize,
        #[serde(default = "default_threshold")]
        pub threshold: f64,
        #[serde(default = "default_warmup")]
        pub warmup: usize,
    }
}

impl Config {
    pub fn validate(&self) -> Result<Spec, Invalid> {
        super::finite(self.threshold, "threshold")?;
        super::finite(self.alpha, "alpha")?;
        super::finite(self.beta, "beta")?;
        if !(0.0..=1.0).contains(&self.beta) {
            return Err(Invalid::at("beta", "beta must be in [0, 1]"));
        }
        Ok(Spec {
            alpha: super::alpha_in(self.alpha)?,
            beta: self.beta,
            window: super::window_in(self.window, 1_000_000)?,
            threshold: super::positive(self.threshold, "threshold")?,
            warmup: super::warmup_upto(self.warmup, 1_000_000)?,
        })
    }
}

/// Error of a Holt (level + trend) forecast over the typical error; anomalous when
/// `|z| > threshold`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Spec {
    pub alpha: f64,
    pub beta: f64,
    pub window: usize,
    pub threshold: f64,
    pub warmup: usize,
}

/// The value, the forecast, the error z, the threshold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reason {
    pub value: f64,
    pub forecast: f64,
    pub z: f64,
    pub threshold: f64,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "value {} vs forecast {}: |z| {:.2} {} {}",
            self.value,
            super::Short(self.forecast),
            self.z.abs(),
            super::op(self.z.abs() > self.threshold),
            self.threshold
        )
    }
}

impl Kind for Spec {
    type State = PredictState;

    fn start(&self, _now: Millis) -> PredictState {
        PredictState::default()
    }

    fn observe(&self, s: &mut PredictState, _ts: Millis, value: f64) -> Verdict {
        let threshold = self.threshold;
        match s.observe(self.alpha, self.beta, self.window, self.warmup, value) {
            Some(o) => Verdict::measured(
                o.z.abs(),
                threshold,
                Reason {
                    value,
                    forecast: o.forecast,
                    z: o.z,
                    threshold,
                },
            ),
            None => Verdict::warming_up(self.warmup),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PredictOutcome {
    pub forecast: f64,
    /// Forecast error over its typical size (signed, clamped).
    pub z: f64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct PredictState {
    n: u64,
    level: f64,
    trend: f64,
    /// Exponentially weighted mean absolute forecast error.
    abs_err: f64,
}

impl PredictState {
    /// `alpha`: level smoothing, `beta`: trend smoothing, `window`: samples the error scale
    /// averages over. `None` for the first `warmup` samples. Non-finite samples are skipped.
    pub fn observe(
        &mut self,
        alpha: f64,
        beta: f64,
        window: usize,
        warmup: usize,
        x: f64,
    ) -> Option<PredictOutcome> {
        if !x.is_finite() {
            return None;
        }
        if self.n == 0 {
            self.level = x;
            self.trend = 0.0;
            self.n = 1;
            return None;
        }
        let forecast = self.level + self.trend;
        let e = x - forecast;
        let scale = MEAN_AD_TO_STD * self.abs_err;
        let out = (self.n > warmup as u64).then(|| {
            let z = if scale > 0.0 {
                e / scale
            } else if e == 0.0 {
                0.0
            } else {
                MAX_SCORE.copysign(e)
            };
            PredictOutcome {
                forecast,
                z: z.clamp(-MAX_SCORE, MAX_SCORE),
            }
        });
        let w = super::baseline::ew_weight(super::baseline::baseline_weight(window), self.n - 1);
        self.abs_err += w * (e.abs() - self.abs_err);
        let prev = self.level;
        self.level = alpha * x + (1.0 - alpha) * forecast;
        self.trend = beta * (self.level - prev) + (1.0 - beta) * self.trend;
        if !(self.level.is_finite() && self.trend.is_finite()) {
            *self = PredictState::default();
        }
        self.n += 1;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_a_ramp_and_flags_a_break() {
        let mut p = PredictState::default();
        let mut worst = 0.0f64;
        for i in 0..500 {
            // A steady ramp with a little deterministic wobble is predictable...
            let x = 2.0 * i as f64 + ((i * 7) % 5) as f64 * 0.1;
            if let Some(o) = p.observe(0.5, 0.1, 100, 50, x) {
                worst = worst.max(o.z.abs());
            }
        }
        assert!(worst < 6.0, "{worst}");
        // ...a jump is not.
        let o = p.observe(0.5, 0.1, 100, 50, 2.0 * 500.0 + 40.0).unwrap();
        assert!(o.z > 6.0, "{o:?}");
        assert!((o.forecast - 1000.0).abs() < 1.0, "{o:?}");
    }
}
