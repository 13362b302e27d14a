//! Control charts with a baseline that adapts slowly: `ewma` (exponentially weighted moving average
//! against its control limits) and `cusum` (two-sided cumulative sums, for small sustained shifts).

use serde::{Deserialize, Serialize};

use super::detectors::MAX_SCORE;

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
