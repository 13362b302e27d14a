//! Rolling statistics over a sliding window (count and/or time span): mean, population std,
//! min/max, exponentially weighted mean/std, plus a plain Welford accumulator for interval summaries.
//! (Over 600 lines with its tests and proptests; the statistics themselves are about 375.)

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::model::Millis;

/// Which samples a [`RollingStats`] window keeps. At least one field should be `Some`
/// (the config layer validates this); with both `None` the window is unbounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowSpec {
    /// Keep at most the last `count` samples. `Some(0)` behaves like `Some(1)`.
    pub count: Option<usize>,
    /// Keep only samples with `ts >= newest_ts - span_ms`. Negative spans behave like 0.
    pub span_ms: Option<Millis>,
}

/// Samples a window with only a `span` keeps at most (a fast sender cannot grow it without bound).
pub const SPAN_ONLY_MAX_COUNT: usize = 4096;

/// Count, mean and sum of squared deviations (M2) of a set of values. The mean is kept
/// relative to `shift`, the first value added, so a large common offset (1e9 + small noise)
/// costs no precision: rounding is relative to the spread of the values, not their magnitude.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
struct Agg {
    n: u64,
    shift: f64,
    mean: f64,
    m2: f64,
}

impl Agg {
    /// Welford update.
    fn push(&mut self, x: f64) {
        if self.n == 0 {
            self.shift = x;
        }
        let x = x - self.shift;
        self.n = self.n.saturating_add(1);
        let delta = x - self.mean;
        self.mean += delta / self.n as f64;
        self.m2 = (self.m2 + delta * (x - self.mean)).max(0.0);
    }

    fn mean(&self) -> Option<f64> {
        (self.n > 0).then_some(self.shift + self.mean)
    }

    fn variance(&self) -> Option<f64> {
        (self.n > 0).then(|| (self.m2 / self.n as f64).max(0.0))
    }
}

/// Mean and population variance of a FIFO window whose values the caller keeps (e.g. in a
/// ring): Welford's update to add, its inverse to evict, and an exact rebuild from the values
/// still in the window whenever subtracting could lose precision, so it needs no memory of its own.
///
/// A rebuild happens (a) after `len` evictions, which bounds rounding drift to one window's worth
/// of updates, and (b) when the evicted value carries at least half of the window's squared
/// deviations (an outlier leaving), where subtracting would cancel. Rebuilds cost O(window), so
/// eviction stays O(1) amortised. The mean is kept relative to one of the window's values, so a
/// large common offset such as 1e9 + small noise costs no precision.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WindowMoments {
    agg: Agg,
    evictions: u32,
}

impl WindowMoments {
    pub fn new() -> Self {
        Self::default()
    }

    fn total(&self) -> Agg {
        self.agg
    }

    /// Number of values in the window.
    pub fn len(&self) -> usize {
        self.agg.n as usize
    }

    pub fn is_empty(&self) -> bool {
        self.agg.n == 0
    }

    /// Adds the newest value.
    pub fn push(&mut self, x: f64) {
        self.agg.push(x);
    }

    /// Drops the oldest value `removed`. `remaining` yields the values left in the window after
    /// the eviction, oldest first; it is read only when the moments are rebuilt.
    pub fn evict<I>(&mut self, removed: f64, remaining: I)
    where
        I: Iterator<Item = f64>,
    {
        let a = &mut self.agg;
        self.evictions = self.evictions.saturating_add(1);
        if a.n <= 1 {
            *a = Agg::default();
            self.evictions = 0;
            return;
        }
        let x = removed - a.shift;
        let n = a.n as f64;
        let dev = x - a.mean;
        let contribution = dev * dev * n / (n - 1.0);
        if self.evictions as u64 >= a.n
            || !x.is_finite()
            || contribution >= 0.5 * a.m2
            || contribution.is_nan()
        {
            self.agg = Agg::default();
            for v in remaining {
                self.agg.push(v);
            }
            self.evictions = 0;
            return;
        }
        a.n -= 1;
        let mean = a.mean - dev / (n - 1.0);
        a.m2 = (a.m2 - dev * (x - mean)).max(0.0);
        a.mean = mean;
    }

    pub fn mean(&self) -> Option<f64> {
        self.total().mean()
    }

    /// Population variance (M2 / n), never negative.
    pub fn variance(&self) -> Option<f64> {
        self.total().variance()
    }

    /// Population standard deviation.
    pub fn std(&self) -> Option<f64> {
        self.variance().map(f64::sqrt)
    }

    /// `(mean, population std)` in one go.
    pub fn mean_std(&self) -> Option<(f64, f64)> {
        let t = self.total();
        Some((t.mean()?, t.variance()?.sqrt()))
    }
}

/// Exponentially weighted mean and variance (incremental form, West 1979).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct Ewm {
    mean: f64,
    var: f64,
}

/// Rolling statistics over a window of samples, plus EWMA over the whole stream.
///
/// The window holds samples in arrival order. Eviction is from the oldest arrival: by count
/// (keep the last `count`) and by span (drop samples with `ts < newest_ts - span_ms`, where
/// `newest_ts` is the largest timestamp seen so far). When timestamps go backwards, a late sample
/// stays in the window until it becomes the oldest arrival and is then dropped as usual; a late
/// sample that is already older than the span cutoff when it arrives is not added to the window
/// (it still counts for [`ewma`](Self::ewma), [`ewm_std`](Self::ewm_std) and
/// [`last`](Self::last)). `push` is amortised O(1) and memory is O(window).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RollingStats {
    spec: WindowSpec,
    alpha: f64,
    ring: VecDeque<(Millis, f64)>,
    moments: WindowMoments,
    /// Monotonic deques of (sequence number, value): values strictly decreasing / increasing.
    max_q: VecDeque<(u64, f64)>,
    min_q: VecDeque<(u64, f64)>,
    /// Sequence number the next windowed sample gets; the ring front has `next_seq - ring.len()`.
    next_seq: u64,
    newest_ts: Option<Millis>,
    last: Option<(Millis, f64)>,
    ewm: Option<Ewm>,
}

impl RollingStats {
    /// `ewma_alpha` is the weight of a new sample in (0, 1]; values outside are clamped into
    /// [0, 1], and a non-finite alpha becomes 1. Nothing is preallocated.
    pub fn new(spec: WindowSpec, ewma_alpha: f64) -> Self {
        let alpha = if ewma_alpha.is_finite() {
            ewma_alpha.clamp(0.0, 1.0)
        } else {
            1.0
        };
        RollingStats {
            spec,
            alpha,
            ring: VecDeque::new(),
            moments: WindowMoments::new(),
            max_q: VecDeque::new(),
            min_q: VecDeque::new(),
            next_seq: 0,
            newest_ts: None,
            last: None,
            ewm: None,
        }
    }

    pub fn push(&mut self, ts: Millis, value: f64) {
        self.last = Some((ts, value));
        self.ewm = Some(match self.ewm {
            None => Ewm {
                mean: value,
                var: 0.0,
            },
            Some(Ewm { mean, var }) => {
                let diff = value - mean;
                let incr = self.alpha * diff;
                Ewm {
                    mean: mean + incr,
                    var: ((1.0 - self.alpha) * (var + diff * incr)).max(0.0),
                }
            }
        });
        let newest = self.newest_ts.map_or(ts, |n| n.max(ts));
        self.newest_ts = Some(newest);
        let cutoff = self
            .spec
            .span_ms
            .map(|span| newest.saturating_sub(span.max(0)));
        if cutoff.is_some_and(|c| ts < c) {
            return;
        }

        {
            let count = self.spec.count.unwrap_or(SPAN_ONLY_MAX_COUNT).max(1);
            // Make room first, so the ring never holds count + 1 (a VecDeque would double).
            while self.ring.len() >= count {
                self.evict_front();
            }
            if self.ring.capacity() == 0 {
                self.ring.reserve_exact(count.min(1 << 16));
            }
        }
        self.ring.push_back((ts, value));
        self.moments.push(value);
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        while self.max_q.back().is_some_and(|&(_, v)| v <= value) {
            self.max_q.pop_back();
        }
        self.max_q.push_back((seq, value));
        while self.min_q.back().is_some_and(|&(_, v)| v >= value) {
            self.min_q.pop_back();
        }
        self.min_q.push_back((seq, value));

        if let Some(cutoff) = cutoff {
            while self.ring.front().is_some_and(|&(t, _)| t < cutoff) {
                self.evict_front();
            }
        }
    }

    fn evict_front(&mut self) {
        if let Some((_, old)) = self.ring.pop_front() {
            self.moments.evict(old, self.ring.iter().map(|&(_, v)| v));
            // Saturating: a damaged snapshot may hold a `next_seq` below the ring's length.
            let front_seq = self.next_seq.saturating_sub(self.ring.len() as u64);
            while self.max_q.front().is_some_and(|&(s, _)| s < front_seq) {
                self.max_q.pop_front();
            }
            while self.min_q.front().is_some_and(|&(s, _)| s < front_seq) {
                self.min_q.pop_front();
            }
        }
    }

    /// Samples currently in the window.
    pub fn len(&self) -> usize {
        self.ring.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ring.is_empty()
    }

    /// Mean of the window.
    pub fn mean(&self) -> Option<f64> {
        self.moments.mean()
    }

    /// Population standard deviation of the window (divides by n).
    pub fn std(&self) -> Option<f64> {
        self.moments.std()
    }

    pub fn min(&self) -> Option<f64> {
        self.min_q.front().map(|&(_, v)| v)
    }

    pub fn max(&self) -> Option<f64> {
        self.max_q.front().map(|&(_, v)| v)
    }

    /// Exponentially weighted mean over every sample pushed (not windowed).
    pub fn ewma(&self) -> Option<f64> {
        self.ewm.map(|e| e.mean)
    }

    /// Exponentially weighted standard deviation over every sample pushed (not windowed).
    pub fn ewm_std(&self) -> Option<f64> {
        self.ewm.map(|e| e.var.max(0.0).sqrt())
    }

    /// The most recently pushed sample (whether or not it is in the window).
    pub fn last(&self) -> Option<(Millis, f64)> {
        self.last
    }

    pub fn spec(&self) -> WindowSpec {
        self.spec
    }

    /// The samples in the window (time, value), oldest arrival first.
    pub fn points(&self) -> impl Iterator<Item = (Millis, f64)> + '_ {
        self.ring.iter().copied()
    }
}

/// Plain Welford accumulator for per-interval summaries: count, mean, population std, min, max
/// and last value. Getters return `None` while empty. Values are accumulated relative to the
/// first one, so a large common offset costs no precision.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Accumulator {
    agg: Agg,
    min: f64,
    max: f64,
    last: f64,
}

impl Accumulator {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, v: f64) {
        if self.agg.n == 0 {
            self.min = v;
            self.max = v;
        } else {
            self.min = self.min.min(v);
            self.max = self.max.max(v);
        }
        self.agg.push(v);
        self.last = v;
    }

    pub fn count(&self) -> u64 {
        self.agg.n
    }

    pub fn mean(&self) -> Option<f64> {
        self.agg.mean()
    }

    /// Population standard deviation (divides by n).
    pub fn std(&self) -> Option<f64> {
        self.agg.variance().map(f64::sqrt)
    }

    pub fn min(&self) -> Option<f64> {
        (self.agg.n > 0).then_some(self.min)
    }

    pub fn max(&self) -> Option<f64> {
        (self.agg.n > 0).then_some(self.max)
    }

    pub fn last(&self) -> Option<f64> {
        (self.agg.n > 0).then_some(self.last)
    }

    pub fn reset(&mut self) {
        *self = Self::default();
    }
}

#[cfg(test)]
mod tests {

    /// Found by the `store` fuzz target: a restored window whose `next_seq` is below its length
    /// (or at the end of u64) must neither panic nor stop working.
    #[test]
    fn a_damaged_restored_window_goes_on() {
        let mut w = RollingStats::new(spec(Some(4), None), 0.1);
        for v in [1.0, 2.0, 3.0] {
            w.push(0, v);
        }
        for seq in [0, u64::MAX] {
            let mut d = w.clone();
            d.next_seq = seq;
            for v in [4.0, 5.0, 6.0, 7.0, 8.0] {
                d.push(0, v);
            }
            assert_eq!(d.len(), 4);
            assert!(d.mean().is_some_and(f64::is_finite));
        }
    }

    use super::*;
    use proptest::prelude::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;
    use rand_distr::{Distribution, Normal};

    fn spec(count: Option<usize>, span_ms: Option<Millis>) -> WindowSpec {
        WindowSpec { count, span_ms }
    }

    /// Exact reference statistics of a slice of values.
    fn naive(values: &[f64]) -> (f64, f64, f64, f64) {
        let n = values.len() as f64;
        let shift = values[0];
        let mean = shift + values.iter().map(|v| v - shift).sum::<f64>() / n;
        let var = values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
        let min = values.iter().copied().fold(f64::INFINITY, f64::min);
        let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (mean, var.sqrt(), min, max)
    }

    /// The window a naive implementation keeps, for non-decreasing timestamps.
    fn naive_window(all: &[(Millis, f64)], spec: WindowSpec) -> Vec<f64> {
        let newest = all.iter().map(|s| s.0).max().unwrap_or(0);
        let mut w: Vec<f64> = all
            .iter()
            .filter(|(t, _)| spec.span_ms.is_none_or(|s| *t >= newest - s))
            .map(|s| s.1)
            .collect();
        if let Some(c) = spec.count {
            let c = c.max(1);
            if w.len() > c {
                w.drain(..w.len() - c);
            }
        }
        w
    }

    #[test]
    fn empty_is_none() {
        let r = RollingStats::new(spec(Some(4), None), 0.5);
        assert!(r.is_empty());
        assert_eq!(r.len(), 0);
        assert_eq!(r.mean(), None);
        assert_eq!(r.std(), None);
        assert_eq!(r.min(), None);
        assert_eq!(r.max(), None);
        assert_eq!(r.ewma(), None);
        assert_eq!(r.ewm_std(), None);
        assert_eq!(r.last(), None);
        assert_eq!(r.spec(), spec(Some(4), None));
    }

    #[test]
    fn count_window_evicts_and_tracks_min_max() {
        let mut r = RollingStats::new(spec(Some(3), None), 0.5);
        for (i, v) in [5.0, 1.0, 3.0, 4.0, 2.0, 2.0].into_iter().enumerate() {
            r.push(i as Millis, v);
        }
        // Window: 4, 2, 2.
        assert_eq!(r.len(), 3);
        assert_eq!(r.min(), Some(2.0));
        assert_eq!(r.max(), Some(4.0));
        assert!((r.mean().unwrap() - 8.0 / 3.0).abs() < 1e-12);
        let var: f64 = [4.0f64, 2.0, 2.0]
            .iter()
            .map(|v| (v - 8.0 / 3.0).powi(2))
            .sum::<f64>()
            / 3.0;
        assert!((r.std().unwrap() - var.sqrt()).abs() < 1e-12);
        assert_eq!(r.last(), Some((5, 2.0)));
    }

    #[test]
    fn span_window_evicts_by_time() {
        let mut r = RollingStats::new(spec(None, Some(1000)), 0.5);
        r.push(0, 10.0);
        r.push(500, 20.0);
        r.push(1000, 30.0);
        assert_eq!(r.len(), 3); // ts 0 >= 1000 - 1000
        r.push(1001, 40.0);
        assert_eq!(r.len(), 3);
        assert_eq!(r.min(), Some(20.0));
        r.push(5000, 1.0);
        assert_eq!(r.len(), 1);
        assert_eq!(r.mean(), Some(1.0));
        assert_eq!(r.std(), Some(0.0));
        assert_eq!(r.max(), Some(1.0));
    }

    #[test]
    fn backwards_timestamps_use_max_seen() {
        let mut r = RollingStats::new(spec(None, Some(1000)), 0.5);
        r.push(5000, 1.0);
        // Late but within the span of the newest (5000): kept.
        r.push(4500, 2.0);
        assert_eq!(r.len(), 2);
        // Older than the cutoff (4000) on arrival: not added to the window.
        r.push(3000, 100.0);
        assert_eq!(r.len(), 2);
        assert_eq!(r.max(), Some(2.0));
        assert_eq!(r.last(), Some((3000, 100.0)));
        // Cutoff moves to 4800: the ts-5000 sample stays, and so does the late 4500 sample
        // until it is the oldest arrival.
        r.push(5800, 3.0);
        assert_eq!(r.len(), 3);
        r.push(6100, 4.0); // cutoff 5100: 5000 evicted, then 4500 is at the front and evicted
        assert_eq!(r.len(), 2);
        assert_eq!(r.min(), Some(3.0));
        assert_eq!(r.max(), Some(4.0));
    }

    #[test]
    fn count_and_span_together() {
        let mut r = RollingStats::new(spec(Some(2), Some(100)), 0.5);
        r.push(0, 1.0);
        r.push(10, 2.0);
        r.push(20, 3.0);
        assert_eq!(r.len(), 2);
        assert_eq!(r.min(), Some(2.0));
        r.push(200, 4.0);
        assert_eq!(r.len(), 1);
        assert_eq!(r.min(), Some(4.0));
    }

    #[test]
    fn zero_count_behaves_like_one() {
        let mut r = RollingStats::new(spec(Some(0), None), 0.5);
        r.push(0, 1.0);
        r.push(1, 2.0);
        assert_eq!(r.len(), 1);
        assert_eq!(r.mean(), Some(2.0));
    }

    #[test]
    fn ewma_and_ewm_std() {
        let mut r = RollingStats::new(spec(Some(2), None), 0.5);
        r.push(0, 0.0);
        assert_eq!(r.ewma(), Some(0.0));
        assert_eq!(r.ewm_std(), Some(0.0));
        r.push(1, 10.0);
        // diff 10, incr 5: mean 5, var 0.5 * (0 + 10 * 5) = 25
        assert_eq!(r.ewma(), Some(5.0));
        assert_eq!(r.ewm_std(), Some(5.0));
        // Constant input converges to that value with vanishing spread.
        for i in 0..200 {
            r.push(2 + i, 7.0);
        }
        assert!((r.ewma().unwrap() - 7.0).abs() < 1e-9);
        assert!(r.ewm_std().unwrap() < 1e-9);
        // Not windowed: alpha 1 follows the last value exactly.
        let mut r = RollingStats::new(spec(Some(2), None), 1.0);
        r.push(0, 3.0);
        r.push(1, 9.0);
        assert_eq!(r.ewma(), Some(9.0));
        assert_eq!(r.ewm_std(), Some(0.0));
    }

    #[test]
    fn large_offset_stays_accurate_over_millions() {
        let mut rng = StdRng::seed_from_u64(7);
        let noise = Normal::new(0.0, 0.01).unwrap();
        let window = 1000;
        let mut r = RollingStats::new(spec(Some(window), None), 0.01);
        let mut recent = VecDeque::new();
        for i in 0..2_000_000i64 {
            // A slow drift too, so the mean moves a lot relative to the spread.
            let v = 1e9 + (i as f64) * 1e-3 + noise.sample(&mut rng);
            r.push(i, v);
            recent.push_back(v);
            if recent.len() > window {
                recent.pop_front();
            }
        }
        let w: Vec<f64> = recent.into_iter().collect();
        let (mean, std, min, max) = naive(&w);
        assert!((r.mean().unwrap() - mean).abs() <= 1e-6, "mean");
        let rel = (r.std().unwrap() - std).abs() / std;
        assert!(rel < 1e-9, "std rel err {rel}");
        assert_eq!(r.min(), Some(min));
        assert_eq!(r.max(), Some(max));
    }

    #[test]
    fn repeated_values_have_zero_std() {
        let mut r = RollingStats::new(spec(Some(8), None), 0.3);
        for i in 0..100 {
            r.push(i, 1e9 + 0.5);
        }
        assert_eq!(r.std(), Some(0.0));
        assert_eq!(r.mean(), Some(1e9 + 0.5));
    }

    #[test]
    fn accumulator_basics() {
        let mut a = Accumulator::new();
        assert_eq!(a.count(), 0);
        assert_eq!(a.mean(), None);
        assert_eq!(a.std(), None);
        assert_eq!(a.min(), None);
        assert_eq!(a.max(), None);
        assert_eq!(a.last(), None);
        for v in [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0] {
            a.push(v);
        }
        assert_eq!(a.count(), 8);
        assert_eq!(a.mean(), Some(5.0));
        assert_eq!(a.std(), Some(2.0));
        assert_eq!(a.min(), Some(2.0));
        assert_eq!(a.max(), Some(9.0));
        assert_eq!(a.last(), Some(9.0));
        a.reset();
        assert_eq!(a.count(), 0);
        a.push(-3.0);
        assert_eq!(a.min(), Some(-3.0));
        assert_eq!(a.max(), Some(-3.0));
        assert_eq!(a.std(), Some(0.0));
    }

    #[test]
    fn accumulator_large_offset() {
        let mut a = Accumulator::new();
        let (hi, lo) = (1e9 + 0.001, 1e9 - 0.001);
        for i in 0..1_000_000 {
            a.push(if i % 2 == 0 { hi } else { lo });
        }
        // hi - lo is exact; the true std is half of it.
        let want = (hi - lo) / 2.0;
        assert!((a.std().unwrap() - want).abs() < 1e-9 * want);
        assert!((a.mean().unwrap() - (lo + want)).abs() < 1e-6);
    }

    #[test]
    fn window_moments_push_evict() {
        let mut ring: VecDeque<f64> = VecDeque::new();
        let mut m = WindowMoments::new();
        assert!(m.is_empty());
        assert_eq!(m.mean_std(), None);
        for x in [1.0, 3.0, 5.0] {
            ring.push_back(x);
            m.push(x);
        }
        assert_eq!(m.len(), 3);
        assert_eq!(m.mean(), Some(3.0));
        let old = ring.pop_front().expect("value");
        m.evict(old, ring.iter().copied());
        assert_eq!(m.mean(), Some(4.0));
        assert_eq!(m.variance(), Some(1.0));
        ring.push_back(7.0);
        m.push(7.0);
        assert_eq!(m.mean_std(), Some((5.0, (8.0f64 / 3.0).sqrt())));
        for _ in 0..3 {
            let old = ring.pop_front().expect("value");
            m.evict(old, ring.iter().copied());
        }
        assert!(m.is_empty());
        assert_eq!(m.mean(), None);
        assert_eq!(m.std(), None);
    }

    /// Streams where an outlier shares the window with small values, then leaves it.
    #[test]
    fn outlier_regressions() {
        let cases: [(WindowSpec, &[(Millis, f64)]); 2] = [
            (
                spec(Some(2), None),
                &[
                    (0, 0.0),
                    (0, 0.0),
                    (0, 624088345088.4639),
                    (0, 0.0),
                    (0, 1.0),
                ],
            ),
            (
                spec(None, Some(11)),
                &[
                    (0, 0.0),
                    (6, 0.0),
                    (12, -127683542223.24162),
                    (13, 0.0),
                    (24, -269.87818426645833),
                ],
            ),
        ];
        for (spec, samples) in cases {
            let mut r = RollingStats::new(spec, 0.5);
            for &(ts, v) in samples {
                r.push(ts, v);
            }
            let w = naive_window(samples, spec);
            let (mean, std, min, max) = naive(&w);
            assert_eq!(r.len(), 2);
            assert!((r.mean().unwrap() - mean).abs() <= 1e-12 * mean.abs().max(1.0));
            assert!((r.std().unwrap() - std).abs() <= 1e-12 * std.max(1.0));
            assert_eq!((r.min(), r.max()), (Some(min), Some(max)));
        }
    }

    #[test]
    fn huge_outlier_leaving_the_window_leaves_no_trace() {
        let mut r = RollingStats::new(spec(Some(100), None), 0.5);
        let mut rng = StdRng::seed_from_u64(3);
        let noise = Normal::new(0.0, 1.0).unwrap();
        let mut all = Vec::new();
        for i in 0..1_000 {
            let v = if i == 450 {
                3.4e38
            } else {
                noise.sample(&mut rng)
            };
            all.push(v);
            r.push(i, v);
            let w = &all[all.len().saturating_sub(100)..];
            if i >= 550 {
                let (mean, std, _, _) = naive(w);
                assert!((r.mean().unwrap() - mean).abs() < 1e-12, "mean at {i}");
                assert!((r.std().unwrap() - std).abs() < 1e-12 * std, "std at {i}");
            }
        }
    }

    fn serde_roundtrip(r: &RollingStats) -> RollingStats {
        let bytes = postcard::to_stdvec(r).unwrap();
        postcard::from_bytes(&bytes).unwrap()
    }

    fn same(a: &RollingStats, b: &RollingStats) {
        let bits = |o: Option<f64>| o.map(f64::to_bits);
        assert_eq!(a.len(), b.len());
        assert_eq!(bits(a.mean()), bits(b.mean()));
        assert_eq!(bits(a.std()), bits(b.std()));
        assert_eq!(bits(a.min()), bits(b.min()));
        assert_eq!(bits(a.max()), bits(b.max()));
        assert_eq!(bits(a.ewma()), bits(b.ewma()));
        assert_eq!(bits(a.ewm_std()), bits(b.ewm_std()));
        assert_eq!(a.last(), b.last());
    }

    #[test]
    fn serde_roundtrip_continues_identically() {
        let mut rng = StdRng::seed_from_u64(42);
        let noise = Normal::new(100.0, 5.0).unwrap();
        let mut a = RollingStats::new(spec(Some(50), Some(3_000)), 0.1);
        let mut ts = 0;
        for _ in 0..500 {
            ts += 37;
            a.push(ts, noise.sample(&mut rng));
        }
        let mut b = serde_roundtrip(&a);
        same(&a, &b);
        for _ in 0..2_000 {
            ts += 41;
            let v = noise.sample(&mut rng);
            a.push(ts, v);
            b.push(ts, v);
            same(&a, &b);
        }
        assert_eq!(
            postcard::to_stdvec(&a).unwrap(),
            postcard::to_stdvec(&b).unwrap()
        );
        let acc = {
            let mut acc = Accumulator::new();
            acc.push(1.5);
            acc.push(2.5);
            acc
        };
        let back: Accumulator = postcard::from_bytes(&postcard::to_stdvec(&acc).unwrap()).unwrap();
        assert_eq!(acc, back);
    }

    fn value_strategy() -> impl Strategy<Value = f64> {
        prop_oneof![
            3 => (-3i32..=3).prop_map(f64::from),
            3 => -1e3f64..1e3,
            2 => -1.0f64..1.0,
            1 => (-1e6f64..1e6).prop_map(|v| v * 1e6),
        ]
    }

    fn stream_strategy() -> impl Strategy<Value = (WindowSpec, f64, Vec<(Millis, f64)>)> {
        let spec = prop_oneof![
            (1usize..40).prop_map(|c| WindowSpec {
                count: Some(c),
                span_ms: None
            }),
            (0i64..200).prop_map(|s| WindowSpec {
                count: None,
                span_ms: Some(s)
            }),
            (1usize..40, 0i64..200).prop_map(|(c, s)| WindowSpec {
                count: Some(c),
                span_ms: Some(s)
            }),
        ];
        let offset = prop_oneof![Just(0.0), Just(1e9), Just(-1e9), Just(1e12), Just(0.5)];
        let steps = prop::collection::vec(
            (
                prop_oneof![2 => Just(0i64), 5 => 1i64..20, 1 => 20i64..300],
                value_strategy(),
            ),
            1..300,
        );
        (spec, offset, steps).prop_map(|(spec, offset, steps)| {
            let mut ts = 1_700_000_000_000i64;
            let samples = steps
                .into_iter()
                .map(|(dt, v)| {
                    ts += dt;
                    (ts, offset + v)
                })
                .collect();
            (spec, offset, samples)
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        #[test]
        fn matches_naive_recomputation((spec, _offset, samples) in stream_strategy()) {
            let mut r = RollingStats::new(spec, 0.2);
            for i in 0..samples.len() {
                let (ts, v) = samples[i];
                r.push(ts, v);
                let w = naive_window(&samples[..=i], spec);
                prop_assert_eq!(r.len(), w.len());
                let (mean, std, min, max) = naive(&w);
                let scale = w.iter().fold(1.0f64, |a, v| a.max(v.abs()));
                let got_mean = r.mean().unwrap();
                prop_assert!((got_mean - mean).abs() <= 1e-12 * scale,
                    "mean {} vs {} at {}", got_mean, mean, i);
                let got_std = r.std().unwrap();
                prop_assert!(got_std >= 0.0);
                prop_assert!((got_std - std).abs() <= 1e-10 * std + 1e-15 * scale,
                    "std {} vs {} at {}", got_std, std, i);
                prop_assert_eq!(r.min(), Some(min));
                prop_assert_eq!(r.max(), Some(max));
                prop_assert_eq!(r.last(), Some((ts, v)));
            }
        }

        #[test]
        fn accumulator_matches_naive(values in prop::collection::vec(value_strategy(), 1..200),
                                     offset in prop_oneof![Just(0.0), Just(1e9)]) {
            let values: Vec<f64> = values.into_iter().map(|v| v + offset).collect();
            let mut a = Accumulator::new();
            for &v in &values {
                a.push(v);
            }
            let (mean, std, min, max) = naive(&values);
            let scale = values.iter().fold(1.0f64, |a, v| a.max(v.abs()));
            prop_assert_eq!(a.count(), values.len() as u64);
            prop_assert!((a.mean().unwrap() - mean).abs() <= 1e-12 * scale);
            prop_assert!((a.std().unwrap() - std).abs() <= 1e-10 * std + 1e-15 * scale);
            prop_assert_eq!(a.min(), Some(min));
            prop_assert_eq!(a.max(), Some(max));
            prop_assert_eq!(a.last(), values.last().copied());
        }
    }
}
