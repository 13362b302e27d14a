//! Rolling least-squares trend of one value over time (slope, line, R², residual spread): Welford
//! co-moments of (time, value) with add and evict over a count and/or time window, re-summed exactly.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::model::Millis;

/// The least-squares line `value ≈ level + slope · (t − at_ms) / 1000` through a window of samples.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Trend {
    /// Samples the line was fitted to.
    pub count: usize,
    /// Change of the value per second.
    pub slope: f64,
    /// The line's value at `at_ms` (its intercept there).
    pub level: f64,
    /// The newest sample's time (unix ms): where `level` is read.
    pub at_ms: Millis,
    /// The oldest sample's time in the window (unix ms).
    pub from_ms: Millis,
    /// Coefficient of determination in [0, 1] (1 when every value is the same).
    pub r2: f64,
    /// Residual standard deviation around the line, `sqrt(SSR / (n − 2))` (0 for two samples).
    pub resid_std: f64,
}

impl Trend {
    /// The line's value at `ts` (unix ms).
    pub fn at(&self, ts: Millis) -> f64 {
        self.level + self.slope * (ts - self.at_ms) as f64 / 1000.0
    }
}

/// Count, means and centred co-moments of points `(t, y)`; `t` in seconds from an origin and `y`
/// relative to a shift, both chosen by the owner near the data so offsets cost no precision.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct LineMoments {
    n: u64,
    mt: f64,
    my: f64,
    stt: f64,
    syy: f64,
    sty: f64,
}

impl LineMoments {
    /// Points in the set.
    pub(crate) fn len(&self) -> u64 {
        self.n
    }

    /// The least-squares line as (mean t, mean y, slope); `None` below two points or when every
    /// point has the same `t`.
    pub(crate) fn line(&self) -> Option<(f64, f64, f64)> {
        if self.n < 2 || self.stt.is_nan() || self.stt <= 0.0 {
            return None;
        }
        let slope = self.sty / self.stt;
        slope.is_finite().then_some((self.mt, self.my, slope))
    }

    /// Welford's update.
    pub(crate) fn push(&mut self, t: f64, y: f64) {
        self.n += 1;
        let n = self.n as f64;
        let dt = t - self.mt;
        let dy = y - self.my;
        self.mt += dt / n;
        self.my += dy / n;
        self.stt += dt * (t - self.mt);
        self.syy += dy * (y - self.my);
        self.sty += dt * (y - self.my);
    }

    /// The inverse of `push` for a point in the set.
    pub(crate) fn remove(&mut self, t: f64, y: f64) {
        if self.n <= 1 {
            *self = LineMoments::default();
            return;
        }
        let m = (self.n - 1) as f64;
        let mt = self.mt - (t - self.mt) / m;
        let my = self.my - (y - self.my) / m;
        self.stt -= (t - mt) * (t - self.mt);
        self.syy -= (y - my) * (y - self.my);
        self.sty -= (t - mt) * (y - self.my);
        self.mt = mt;
        self.my = my;
        self.n -= 1;
    }

    /// The fit, with `t` measured from `origin` (ms) and `y` from `shift`; `at_ms`/`from_ms` as
    /// in [`Trend`]. `None` below two points or when every point has the same time.
    fn fit(&self, origin: Millis, shift: f64, at_ms: Millis, from_ms: Millis) -> Option<Trend> {
        if self.n < 2 || self.stt.is_nan() || self.stt <= 0.0 {
            return None;
        }
        let stt = self.stt;
        let syy = self.syy.max(0.0);
        let slope = self.sty / stt;
        let t_at = (at_ms - origin) as f64 / 1000.0;
        let level = shift + self.my + slope * (t_at - self.mt);
        let explained = self.sty * self.sty / stt;
        let ssr = (syy - explained).max(0.0);
        let r2 = if syy > 0.0 {
            (explained / syy).clamp(0.0, 1.0)
        } else {
            1.0
        };
        let resid_std = if self.n > 2 {
            (ssr / (self.n - 2) as f64).sqrt()
        } else {
            0.0
        };
        let t = Trend {
            count: self.n as usize,
            slope,
            level,
            at_ms,
            from_ms,
            r2,
            resid_std,
        };
        (t.slope.is_finite() && t.level.is_finite() && t.resid_std.is_finite()).then_some(t)
    }
}

/// The least-squares trend of `points` (time ms, value), e.g. a statistics window, computed in
/// one pass without allocating. Non-finite values are skipped.
pub fn fit<I: Iterator<Item = (Millis, f64)>>(points: I) -> Option<Trend> {
    let mut m = LineMoments::default();
    let mut first: Option<(Millis, f64)> = None;
    let (mut lo, mut hi) = (Millis::MAX, Millis::MIN);
    for (ts, y) in points.filter(|p| p.1.is_finite()) {
        let (origin, shift) = *first.get_or_insert((ts, y));
        m.push((ts - origin) as f64 / 1000.0, y - shift);
        lo = lo.min(ts);
        hi = hi.max(ts);
    }
    let (origin, shift) = first?;
    m.fit(origin, shift, hi, lo)
}

/// The trend over the last `count` samples, and with `span_ms` only those within that time of the
/// newest. Samples are evicted in arrival order; the moments are re-summed from the ring once per
/// window of evictions (and when an outlier leaves), so rounding cannot drift. No allocation after
/// the first sample. Persisted with the detector that owns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RollingTrend {
    count: usize,
    span_ms: Option<Millis>,
    ring: VecDeque<(Millis, f64)>,
    m: LineMoments,
    origin: Millis,
    shift: f64,
    evictions: u32,
    newest: Millis,
}

impl RollingTrend {
    /// `count` is clamped to at least 2.
    pub fn new(count: usize, span_ms: Option<Millis>) -> Self {
        RollingTrend {
            count: count.max(2),
            span_ms,
            ring: VecDeque::new(),
            m: LineMoments::default(),
            origin: 0,
            shift: 0.0,
            evictions: 0,
            newest: Millis::MIN,
        }
    }

    /// Whether a (restored) state has these settings and is consistent.
    pub fn fits(&self, count: usize, span_ms: Option<Millis>) -> bool {
        self.count == count.max(2)
            && self.span_ms == span_ms
            && self.ring.len() <= self.count
            && self.m.n == self.ring.len() as u64
    }

    /// Samples in the window.
    pub fn len(&self) -> usize {
        self.ring.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ring.is_empty()
    }

    fn t(&self, ts: Millis) -> f64 {
        (ts - self.origin) as f64 / 1000.0
    }

    /// Adds the sample `(ts, y)`; non-finite values and samples older than the span are skipped.
    pub fn push(&mut self, ts: Millis, y: f64) {
        if !y.is_finite() {
            return;
        }
        self.newest = self.newest.max(ts);
        let cutoff = self.span_ms.map(|s| self.newest.saturating_sub(s.max(0)));
        if cutoff.is_some_and(|c| ts < c) {
            return;
        }
        while self.ring.len() >= self.count {
            self.evict();
        }
        if self.ring.capacity() == 0 {
            self.ring.reserve_exact(self.count.min(1 << 16));
        }
        if self.ring.is_empty() {
            self.origin = ts;
            self.shift = y;
            self.m = LineMoments::default();
        }
        self.ring.push_back((ts, y));
        self.m.push(self.t(ts), y - self.shift);
        if let Some(c) = cutoff {
            while self.ring.front().is_some_and(|&(t, _)| t < c) {
                self.evict();
            }
        }
    }

    fn evict(&mut self) {
        let Some((ts, y)) = self.ring.pop_front() else {
            return;
        };
        self.evictions = self.evictions.saturating_add(1);
        let (t, y) = (self.t(ts), y - self.shift);
        // An outlier leaving takes most of a co-moment with it: subtracting would cancel.
        let dy = y - self.m.my;
        let big = dy * dy >= 0.5 * self.m.syy && self.m.syy > 0.0;
        if self.ring.is_empty() {
            self.m = LineMoments::default();
            self.evictions = 0;
        } else if big || self.evictions as usize >= self.ring.len() {
            self.resum();
        } else {
            self.m.remove(t, y);
        }
    }

    /// Exact re-sum from the ring, with the origin and shift moved to its oldest sample.
    fn resum(&mut self) {
        self.evictions = 0;
        self.m = LineMoments::default();
        if let Some(&(ts, y)) = self.ring.front() {
            self.origin = ts;
            self.shift = y;
        }
        for i in 0..self.ring.len() {
            let (ts, y) = self.ring[i];
            self.m.push(self.t(ts), y - self.shift);
        }
    }

    /// The current fit; `None` below two samples or when they share one time. O(1): read at the
    /// newest time seen, `from_ms` the oldest arrival's time.
    pub fn trend(&self) -> Option<Trend> {
        let from = self.ring.front()?.0;
        self.m.fit(self.origin, self.shift, self.newest, from)
    }

    /// The samples in the window, oldest arrival first.
    pub fn points(&self) -> impl Iterator<Item = (Millis, f64)> + '_ {
        self.ring.iter().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Two-pass textbook fit over the points, for comparison.
    fn naive(points: &[(Millis, f64)]) -> Option<(f64, f64, f64, f64)> {
        let n = points.len() as f64;
        if points.len() < 2 {
            return None;
        }
        let t0 = points[0].0;
        let ts: Vec<f64> = points.iter().map(|p| (p.0 - t0) as f64 / 1000.0).collect();
        let mt = ts.iter().sum::<f64>() / n;
        let my = points.iter().map(|p| p.1).sum::<f64>() / n;
        let (mut stt, mut sty, mut syy) = (0.0, 0.0, 0.0);
        for (t, p) in ts.iter().zip(points) {
            stt += (t - mt) * (t - mt);
            sty += (t - mt) * (p.1 - my);
            syy += (p.1 - my) * (p.1 - my);
        }
        if stt <= 0.0 {
            return None;
        }
        let slope = sty / stt;
        let at = points.iter().map(|p| p.0).max()?;
        let level = my + slope * ((at - t0) as f64 / 1000.0 - mt);
        let mut ssr = 0.0;
        for (t, p) in ts.iter().zip(points) {
            let e = p.1 - (my + slope * (t - mt));
            ssr += e * e;
        }
        let r2 = if syy > 0.0 { 1.0 - ssr / syy } else { 1.0 };
        let rs = if points.len() > 2 {
            (ssr / (n - 2.0)).sqrt()
        } else {
            0.0
        };
        Some((slope, level, r2, rs))
    }

    #[test]
    fn exact_line_and_noise() {
        let mut r = RollingTrend::new(100, None);
        for i in 0..500 {
            r.push(1_000_000 + i * 1000, 5.0 + 0.25 * i as f64);
        }
        let t = r.trend().unwrap();
        assert_eq!(t.count, 100);
        assert!((t.slope - 0.25).abs() < 1e-9, "{t:?}");
        assert!((t.level - (5.0 + 0.25 * 499.0)).abs() < 1e-6, "{t:?}");
        assert!((t.r2 - 1.0).abs() < 1e-9 && t.resid_std < 1e-6, "{t:?}");
        assert!((t.at(t.at_ms + 4000) - (t.level + 1.0)).abs() < 1e-9);
        assert_eq!((t.from_ms, t.at_ms), (1_400_000, 1_499_000));
        // The same through the one-pass fit.
        let f = fit(r.points()).unwrap();
        assert!((f.slope - t.slope).abs() < 1e-9 && (f.level - t.level).abs() < 1e-6);
    }

    #[test]
    fn span_and_degenerate() {
        let mut r = RollingTrend::new(1000, Some(10_000));
        assert!(r.trend().is_none());
        r.push(0, 1.0);
        assert!(r.trend().is_none());
        r.push(0, 2.0);
        assert!(r.trend().is_none(), "one time: no slope");
        for i in 1..100 {
            r.push(i * 1000, i as f64);
        }
        assert_eq!(r.len(), 11); // 89 s ..= 99 s
        r.push(200_000, f64::NAN);
        assert_eq!(r.len(), 11);
        assert!(r.fits(1000, Some(10_000)) && !r.fits(999, Some(10_000)));
    }

    fn stream() -> impl Strategy<Value = (usize, Option<Millis>, Vec<(Millis, f64)>)> {
        (
            2usize..40,
            prop::option::of(500i64..20_000),
            prop::collection::vec(
                (
                    0i64..3000,
                    prop_oneof![-1e3f64..1e3, 1e9f64..1e9 + 1.0, Just(7.5)],
                ),
                1..300,
            ),
        )
            .prop_map(|(count, span, steps)| {
                let mut ts = 1_700_000_000_000i64;
                let pts = steps
                    .into_iter()
                    .map(|(dt, y)| {
                        ts += dt;
                        (ts, y)
                    })
                    .collect();
                (count, span, pts)
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn rolling_matches_naive((count, span, pts) in stream()) {
            let mut r = RollingTrend::new(count, span);
            for &(ts, y) in &pts {
                r.push(ts, y);
                let window: Vec<(Millis, f64)> = r.points().collect();
                prop_assert!(window.len() <= count);
                let got = r.trend();
                let want = naive(&window);
                match (got, want) {
                    (Some(g), Some((slope, level, r2, rs))) => {
                        let ys = window.iter().map(|p| p.1).fold(0.0f64, |a, y| a.max((y - window[0].1).abs()));
                        let secs = (window.iter().map(|p| p.0).max().unwrap() - window.iter().map(|p| p.0).min().unwrap()) as f64 / 1000.0;
                        let scale = ys.max(1e-9 * window[0].1.abs()).max(1e-12);
                        let tol = 1e-6 * scale;
                        prop_assert!((g.slope - slope).abs() <= tol / secs.max(1e-3) + 1e-9 * slope.abs(), "slope {} vs {}", g.slope, slope);
                        prop_assert!((g.level - level).abs() <= tol + 1e-12 * level.abs(), "level {} vs {}", g.level, level);
                        prop_assert!((g.resid_std - rs).abs() <= tol, "resid {} vs {}", g.resid_std, rs);
                        // R² is ill-conditioned when the values barely vary; compare where they do.
                        if ys > 1e-6 * window[0].1.abs().max(1.0) {
                            prop_assert!((g.r2 - r2.clamp(0.0, 1.0)).abs() <= 1e-6, "r2 {} vs {}", g.r2, r2);
                        }
                        prop_assert_eq!(g.count, window.len());
                    }
                    (None, None) => {}
                    (g, w) => {
                        // Only the degenerate edge (all times equal) may differ by rounding.
                        let same_time = window.iter().all(|p| p.0 == window[0].0);
                        prop_assert!(same_time, "{:?} vs {:?}", g, w);
                    }
                }
            }
        }
    }
}
