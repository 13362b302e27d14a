//! The `mad` detector: a robust z-score, `(x - median) / (1.4826 · MAD)` over a sliding window kept
//! sorted, so a burst of outliers in the window barely moves the reference.

use std::collections::VecDeque;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::{Invalid, Kind, Verdict};
use crate::model::Millis;

fn default_threshold() -> f64 {
    5.0
}

/// Warm-up when none is given: an eighth of the window, between 2 and 32.
fn default_warmup(window: usize) -> usize {
    (window / 8).clamp(2, 32)
}

detector_config! {
    /// `{ type = "mad", window, threshold, warmup }`.
    pub struct Config {
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
        let window = super::window_in(self.window, 100_000)?;
        let threshold = super::positive(self.threshold, "threshold")?;
        let warmup =
            super::warmup_within(self.warmup.unwrap_or(default_warmup(window)), window)?;
        Ok(Spec {
            window,
            threshold,
            warmup,
        })
    }
}

/// Anomalous when the robust `|z| > threshold` once `warmup` samples are in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Spec {
    pub window: usize,
    pub threshold: f64,
    pub warmup: usize,
}

/// Robust z (signed, clamped) against the window median, and the threshold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reason {
    pub z: f64,
    pub median: f64,
    pub threshold: f64,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "robust |z| {:.2} {} {} (median {})",
            self.z.abs(),
            super::op(self.z.abs() > self.threshold),
            self.threshold,
            super::Short(self.median)
        )
    }
}

impl Kind for Spec {
    type State = MadState;

    fn start(&self, _now: Millis) -> MadState {
        MadState::default()
    }

    fn observe(&self, s: &mut MadState, _ts: Millis, value: f64) -> Verdict {
        let threshold = self.threshold;
        match s.observe(self.window, self.warmup, value) {
            Some(o) => Verdict::measured(
                o.z.abs(),
                threshold,
                Reason {
                    z: o.z,
                    median: o.median,
                    threshold,
                },
            ),
            None => Verdict::quiet(super::warming(
                s.len(),
                self.warmup.clamp(1, self.window.max(1)),
            )),
        }
    }
}


/// Consistency constant: 1.4826 · MAD estimates the standard deviation of normal data.
const MAD_TO_STD: f64 = 1.4826;
/// Mean absolute deviation to standard deviation for normal data (fallback when MAD is 0).
const MEAN_AD_TO_STD: f64 = 1.2533;

/// Median and scale of the window when a sample was judged.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RobustOutcome {
    pub median: f64,
    /// Signed robust z (clamped to ±`MAX_SCORE`).
    pub z: f64,
}

/// The last `window` samples in arrival order and sorted (both O(window) memory).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MadState {
    ring: VecDeque<f64>,
    sorted: Vec<f64>,
}

impl MadState {
    /// Samples in the window.
    pub fn len(&self) -> usize {
        self.ring.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ring.is_empty()
    }

    /// Judges `x` against the window before it (once it holds `warmup` samples), then adds `x`.
    /// Non-finite samples are judged as nothing and not added.
    pub fn observe(&mut self, window: usize, warmup: usize, x: f64) -> Option<RobustOutcome> {
        if !x.is_finite() {
            return None;
        }
        if self.sorted.len() != self.ring.len() {
            // Inconsistent restored state: rebuild the sorted copy from the ring.
            self.sorted = self
                .ring
                .iter()
                .copied()
                .filter(|v| v.is_finite())
                .collect();
            self.sorted.sort_by(f64::total_cmp);
            self.ring = self.sorted.iter().copied().collect();
        }
        let window = window.max(1);
        let out = (self.len() >= warmup.clamp(1, window)).then(|| self.judge(x));
        while self.ring.len() >= window {
            let Some(old) = self.ring.pop_front() else {
                break;
            };
            let i = self.sorted.partition_point(|&y| y < old);
            if i < self.sorted.len() {
                self.sorted.remove(i);
            }
        }
        self.ring.push_back(x);
        let i = self.sorted.partition_point(|&y| y < x);
        self.sorted.insert(i, x);
        out
    }

    fn judge(&self, x: f64) -> RobustOutcome {
        let s = &self.sorted;
        let n = s.len();
        let median = 0.5 * (s[(n - 1) / 2] + s[n / 2]);
        let mut scale = MAD_TO_STD * mad(s, median);
        if scale == 0.0 {
            // More than half the window is one value: fall back to the mean absolute deviation.
            scale = MEAN_AD_TO_STD * s.iter().map(|v| (v - median).abs()).sum::<f64>() / n as f64;
        }
        let d = x - median;
        let z = if scale > 0.0 {
            d / scale
        } else if d == 0.0 {
            0.0
        } else {
            super::MAX_SCORE.copysign(d)
        };
        RobustOutcome {
            median,
            z: z.clamp(-super::MAX_SCORE, super::MAX_SCORE),
        }
    }
}

/// Median absolute deviation from `median` of sorted `s`. The distances left of the median grow
/// leftwards and those right of it grow rightwards: two sorted sequences, so each order statistic
/// of their union is a binary search. O(log n).
fn mad(s: &[f64], median: f64) -> f64 {
    let n = s.len();
    let split = s.partition_point(|&v| v < median); // s[..split] < median <= s[split..]
    let left = |j: usize| median - s[split - 1 - j];
    let right = |j: usize| s[split + j] - median;
    let (nl, nr) = (split, n - split);
    let a = kth_of_two(&left, nl, &right, nr, (n - 1) / 2);
    let b = if n % 2 == 0 {
        kth_of_two(&left, nl, &right, nr, n / 2)
    } else {
        a
    };
    0.5 * (a + b)
}

/// The `k`-th smallest (0-based) of the union of two ascending sequences of lengths `na`, `nb`.
fn kth_of_two(
    a: &impl Fn(usize) -> f64,
    na: usize,
    b: &impl Fn(usize) -> f64,
    nb: usize,
    k: usize,
) -> f64 {
    // Take `i` from `a` and `k + 1 - i` from `b`: find the smallest `i` with a[i] >= b[k - i].
    let (mut lo, mut hi) = ((k + 1).saturating_sub(nb), (k + 1).min(na));
    while lo < hi {
        let i = (lo + hi) / 2;
        if a(i) < b(k - i) {
            lo = i + 1;
        } else {
            hi = i;
        }
    }
    let j = k + 1 - lo;
    let x = if lo > 0 { a(lo - 1) } else { f64::NEG_INFINITY };
    let y = if j > 0 { b(j - 1) } else { f64::NEG_INFINITY };
    x.max(y)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn naive(w: &[f64], x: f64) -> f64 {
        let mut s = w.to_vec();
        s.sort_by(f64::total_cmp);
        let n = s.len();
        let med = 0.5 * (s[(n - 1) / 2] + s[n / 2]);
        let mut d: Vec<f64> = s.iter().map(|v| (v - med).abs()).collect();
        d.sort_by(f64::total_cmp);
        let mad = 0.5 * (d[(n - 1) / 2] + d[n / 2]);
        let mut scale = MAD_TO_STD * mad;
        if scale == 0.0 {
            scale = MEAN_AD_TO_STD * d.iter().sum::<f64>() / n as f64;
        }
        if scale > 0.0 {
            (x - med) / scale
        } else if x == med {
            0.0
        } else {
            super::super::MAX_SCORE.copysign(x - med)
        }
    }

    #[test]
    fn known_values() {
        let mut m = MadState::default();
        for x in [1.0, 2.0, 3.0, 4.0, 100.0] {
            m.observe(5, 5, x);
        }
        // median 3, |d| = 2 1 0 1 97 -> MAD 1.
        let o = m.observe(5, 5, 10.0).unwrap();
        assert_eq!(o.median, 3.0);
        assert!((o.z - 7.0 / 1.4826).abs() < 1e-12);
        assert_eq!(m.len(), 5);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn matches_naive(window in 1usize..40,
                         values in prop::collection::vec(prop_oneof![
                             (-3i32..=3).prop_map(f64::from), -100.0f64..100.0], 1..150)) {
            let mut m = MadState::default();
            for (i, &x) in values.iter().enumerate() {
                let got = m.observe(window, 1, x);
                let prev = &values[i.saturating_sub(window)..i];
                match got {
                    None => prop_assert!(prev.is_empty()),
                    Some(o) => {
                        let want = naive(prev, x).clamp(-1e9, 1e9);
                        prop_assert!((o.z - want).abs() <= 1e-9 * want.abs().max(1.0),
                            "{} vs {} at {}", o.z, want, i);
                    }
                }
            }
        }
    }
}
