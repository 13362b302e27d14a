//! The slowly adapting baseline (exponentially weighted mean and variance) that the `ewma` and
//! `cusum` charts measure against, and the weights `seasonal` and `predict` average errors with.

use serde::{Deserialize, Serialize};

use super::MAX_SCORE;

/// Exponentially weighted mean and variance (West 1979), the baseline both charts measure against.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    n: u64,
    mean: f64,
    var: f64,
}

impl Baseline {
    /// Samples learned.
    pub fn count(&self) -> u64 {
        self.n
    }

    pub fn mean(&self) -> f64 {
        self.mean
    }

    pub fn std(&self) -> f64 {
        self.var.max(0.0).sqrt()
    }

    /// Learns `x` with weight `beta`, or `1/n` while fewer than `1/beta` samples are in (a plain
    /// running mean and variance at first, so the early baseline is not biased towards the
    /// first sample).
    pub fn push(&mut self, beta: f64, x: f64) {
        let w = ew_weight(beta, self.n);
        let d = x - self.mean;
        self.mean += w * d;
        self.var = (1.0 - w) * (self.var + w * d * d);
        self.n += 1;
    }

    /// `(x - mean) / std`, clamped; 0 for a constant baseline that `x` equals.
    pub fn standardize(&self, x: f64) -> f64 {
        let d = x - self.mean;
        let s = self.std();
        let z = if s > 0.0 {
            d / s
        } else if d == 0.0 {
            0.0
        } else {
            MAX_SCORE.copysign(d)
        };
        z.clamp(-MAX_SCORE, MAX_SCORE)
    }
}

/// Weight of a new sample in a baseline that averages about `window` samples.
pub fn baseline_weight(window: usize) -> f64 {
    2.0 / (window.max(1) as f64 + 1.0)
}

/// The weight of the `n`-th (0-based) sample in an exponentially weighted average with weight
/// `beta`: `1/(n+1)` until that is smaller than `beta`.
pub fn ew_weight(beta: f64, n: u64) -> f64 {
    beta.max(1.0 / (n as f64 + 1.0)).min(1.0)
}

/// What a chart says about one sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChartOutcome {
    /// The chart statistic: EWMA in units of its own standard error (signed), or the larger
    /// CUSUM sum (positive; `up` tells which).
    pub stat: f64,
    pub up: bool,
    /// Baseline mean the sample was compared with.
    pub mean: f64,
    /// The EWMA value (ewma) or the sample (cusum).
    pub level: f64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;
    use rand_distr::{Distribution, Normal};

    #[test]
    fn baseline_tracks_mean_and_std() {
        let mut rng = StdRng::seed_from_u64(2);
        let d = Normal::new(100.0, 3.0).unwrap();
        let mut b = Baseline::default();
        for _ in 0..20_000 {
            b.push(baseline_weight(500), d.sample(&mut rng));
        }
        assert!((b.mean() - 100.0).abs() < 1.0, "{}", b.mean());
        assert!((b.std() - 3.0).abs() < 0.5, "{}", b.std());
        assert_eq!(b.standardize(b.mean()), 0.0);
        let mut flat = Baseline::default();
        flat.push(0.1, 5.0);
        flat.push(0.1, 5.0);
        assert_eq!(flat.standardize(5.0), 0.0);
        assert_eq!(flat.standardize(6.0), MAX_SCORE);
    }
}
