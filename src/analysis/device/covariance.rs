//! Rolling covariance and correlation of a device's vectors over the last `window` vectors (and,
//! with a span, only those within it): Welford updates on add and evict, re-summed exactly once
//! per window of evictions and when an outlier leaves; the vectors live in one flat ring.

// Index loops read as the formulas they implement.
#![allow(clippy::needless_range_loop)]

use serde::{Deserialize, Serialize};

/// The rolling window's state (persisted with the device).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RollingCov {
    dim: usize,
    cap: usize,
    span_ms: Option<i64>,
    /// Ring of `cap` vectors (row-major) and their times; `head` is the oldest, `len` in use.
    ring: Vec<f64>,
    times: Vec<i64>,
    head: usize,
    len: usize,
    mean: Vec<f64>,
    /// Co-moment Σ (x − mean)(x − mean)ᵀ, row-major d×d.
    co: Vec<f64>,
    evictions: usize,
    #[serde(skip)]
    scratch: Vec<f64>,
}

impl RollingCov {
    pub fn new(dim: usize, cap: usize, span_ms: Option<i64>) -> Self {
        let cap = cap.max(2);
        RollingCov {
            dim,
            cap,
            span_ms,
            ring: vec![0.0; cap * dim],
            times: vec![0; cap],
            head: 0,
            len: 0,
            mean: vec![0.0; dim],
            co: vec![0.0; dim * dim],
            evictions: 0,
            scratch: vec![0.0; dim],
        }
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Whether this (restored) state fits a window of `dim` metrics, `cap` vectors, `span_ms`.
    pub fn fits(&self, dim: usize, cap: usize, span_ms: Option<i64>) -> bool {
        self.dim == dim
            && self.cap == cap.max(2)
            && self.span_ms == span_ms
            && self.ring.len() == self.cap * dim
            && self.times.len() == self.cap
            && self.mean.len() == dim
            && self.co.len() == dim * dim
            && self.len <= self.cap
            && self.head < self.cap
    }

    /// Vectors in the window.
    pub fn count(&self) -> usize {
        self.len
    }

    pub fn mean(&self) -> &[f64] {
        &self.mean
    }

    /// Adds the vector `x` seen at `ts`, evicting the oldest beyond the count or the span.
    /// Non-finite vectors are skipped. No allocation.
    pub fn push(&mut self, ts: i64, x: &[f64]) {
        let d = self.dim;
        if x.len() != d || x.iter().any(|v| !v.is_finite()) {
            return;
        }
        if self.scratch.len() != d {
            self.scratch = vec![0.0; d];
        }
        if self.len == self.cap {
            self.evict();
        }
        if let Some(span) = self.span_ms {
            while self.len > 0 && ts - self.times[self.head] > span {
                self.evict();
            }
        }
        let slot = (self.head + self.len) % self.cap;
        self.ring[slot * d..(slot + 1) * d].copy_from_slice(x);
        self.times[slot] = ts;
        self.len += 1;
        let n = self.len as f64;
        // Welford: a = x − mean_before; mean += a/n; C += a·(x − mean_after)ᵀ = a·aᵀ·(n−1)/n.
        for i in 0..d {
            let a = x[i] - self.mean[i];
            self.scratch[i] = a;
            self.mean[i] += a / n;
        }
        let f = (n - 1.0) / n;
        for i in 0..d {
            for j in 0..d {
                self.co[i * d + j] += self.scratch[i] * self.scratch[j] * f;
            }
        }
    }

    /// Removes the oldest vector: the inverse of `push`'s update.
    fn evict(&mut self) {
        let d = self.dim;
        let slot = self.head;
        self.head = (self.head + 1) % self.cap;
        self.len -= 1;
        if self.len == 0 {
            self.mean.iter_mut().for_each(|m| *m = 0.0);
            self.co.iter_mut().for_each(|c| *c = 0.0);
            return;
        }
        let n = (self.len + 1) as f64;
        // a = x − mean_before; mean_after = mean − a/(n−1); C −= a·aᵀ·n/(n−1).
        for i in 0..d {
            let a = self.ring[slot * d + i] - self.mean[i];
            self.scratch[i] = a;
            self.mean[i] -= a / (n - 1.0);
        }
        let f = n / (n - 1.0);
        // A vector carrying at least half of a metric's co-moment is leaving: subtracting would
        // cancel most digits of what remains, so re-sum instead (as `stats::WindowMoments` does).
        let cancels = (0..d).any(|i| {
            let c = self.scratch[i] * self.scratch[i] * f;
            c >= 0.5 * self.co[i * d + i]
        });
        for i in 0..d {
            for j in 0..d {
                self.co[i * d + j] -= self.scratch[i] * self.scratch[j] * f;
            }
        }
        self.evictions += 1;
        if cancels || self.evictions >= self.cap {
            self.evictions = 0;
            self.resum();
        }
    }

    /// Recomputes the mean and co-moment from the ring (two passes), dropping accumulated
    /// rounding.
    fn resum(&mut self) {
        let d = self.dim;
        let n = self.len as f64;
        self.mean.iter_mut().for_each(|m| *m = 0.0);
        self.co.iter_mut().for_each(|c| *c = 0.0);
        for k in 0..self.len {
            let s = (self.head + k) % self.cap;
            for i in 0..d {
                self.mean[i] += self.ring[s * d + i] / n;
            }
        }
        for k in 0..self.len {
            let s = (self.head + k) % self.cap;
            for i in 0..d {
                let a = self.ring[s * d + i] - self.mean[i];
                for j in 0..d {
                    self.co[i * d + j] += a * (self.ring[s * d + j] - self.mean[j]);
                }
            }
        }
    }

    /// Sample covariance (n − 1) into `out` (row-major d×d); NaN with fewer than 2 vectors.
    pub fn covariance(&self, out: &mut Vec<f64>) {
        out.clear();
        let n = self.len as f64;
        out.extend(self.co.iter().map(|c| {
            if self.len < 2 {
                f64::NAN
            } else {
                c / (n - 1.0)
            }
        }));
    }

    /// Pearson correlation into `out` (row-major d×d); NaN where a metric did not vary.
    pub fn correlation(&self, out: &mut Vec<f64>) {
        let d = self.dim;
        out.clear();
        for i in 0..d {
            for j in 0..d {
                let v = self.co[i * d + i] * self.co[j * d + j];
                let tiny = 1e-12 * (self.co[i * d + i].abs() + self.co[j * d + j].abs());
                out.push(if self.len < 2 || v <= 0.0 || v.sqrt() <= tiny {
                    f64::NAN
                } else {
                    (self.co[i * d + j] / v.sqrt()).clamp(-1.0, 1.0)
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Naive covariance of the last `cap` rows (and within `span` of the last).
    fn naive(rows: &[(i64, Vec<f64>)], cap: usize, span: Option<i64>) -> (usize, Vec<f64>) {
        let last_ts = rows.last().map_or(0, |r| r.0);
        let start = rows.len().saturating_sub(cap);
        let w: Vec<&Vec<f64>> = rows[start..]
            .iter()
            .filter(|r| span.is_none_or(|s| last_ts - r.0 <= s))
            .map(|r| &r.1)
            .collect();
        let d = rows.first().map_or(0, |r| r.1.len());
        let n = w.len() as f64;
        let mean: Vec<f64> = (0..d)
            .map(|i| w.iter().map(|r| r[i]).sum::<f64>() / n)
            .collect();
        let mut cov = vec![0.0; d * d];
        for i in 0..d {
            for j in 0..d {
                cov[i * d + j] = w
                    .iter()
                    .map(|r| (r[i] - mean[i]) * (r[j] - mean[j]))
                    .sum::<f64>()
                    / (n - 1.0);
            }
        }
        (w.len(), cov)
    }

    proptest! {
        #[test]
        fn matches_a_naive_recomputation(
            d in 1usize..5,
            cap in 2usize..40,
            span in proptest::option::of(1i64..50),
            offset in -1e6f64..1e6,
            steps in proptest::collection::vec((0i64..5, proptest::collection::vec(-100.0f64..100.0, 4)), 2..300),
        ) {
            let mut c = RollingCov::new(d, cap, span);
            let mut rows = Vec::new();
            let mut ts = 0;
            for (dt, v) in steps {
                ts += dt;
                // A large common offset: the case where naive one-pass sums lose digits.
                let x: Vec<f64> = v[..d].iter().map(|a| a + offset).collect();
                c.push(ts, &x);
                rows.push((ts, x));
            }
            let (n, want) = naive(&rows, cap, span);
            prop_assert_eq!(c.count(), n);
            let mut got = Vec::new();
            c.covariance(&mut got);
            if n >= 2 {
                for (g, w) in got.iter().zip(&want) {
                    prop_assert!((g - w).abs() <= 1e-6 * (1.0 + w.abs()), "{} vs {}", g, w);
                }
                let mut r = Vec::new();
                c.correlation(&mut r);
                for i in 0..d {
                    for j in 0..d {
                        let w = want[i * d + j] / (want[i * d + i] * want[j * d + j]).sqrt();
                        if w.is_finite() && want[i * d + i] > 1e-6 && want[j * d + j] > 1e-6 {
                            prop_assert!((r[i * d + j] - w).abs() < 1e-6, "corr {} vs {}", r[i * d + j], w);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn perfectly_related_metrics_correlate_plus_and_minus_one() {
        let mut c = RollingCov::new(3, 100, None);
        for i in 0..50 {
            let x = (i as f64 * 0.37).sin();
            c.push(i, &[x, 2.0 * x + 1.0, -x]);
        }
        let mut r = Vec::new();
        c.correlation(&mut r);
        assert!(
            (r[1] - 1.0).abs() < 1e-9 && (r[2] + 1.0).abs() < 1e-9,
            "{r:?}"
        );
    }
}
