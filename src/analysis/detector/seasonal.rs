//! Daily and weekly seasonality learned from sample timestamps: a profile of the usual value per
//! time-of-day (or time-of-week) bin, and the `seasonal` detector that judges the residual against it.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::{Invalid, Kind, Verdict};
use crate::model::Millis;

fn default_period() -> Period {
    Period::Day
}
fn default_threshold() -> f64 {
    6.0
}
fn default_warmup() -> usize {
    32
}

detector_config! {
    /// `{ type = "seasonal", period, window, threshold, warmup }`.
    pub struct Config {
        #[serde(default = "default_period")]
        pub period: Period,
        #[serde(default = "super::default_window")]
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
        Ok(Spec {
            period: self.period,
            window: super::window_in(self.window, 1_000_000)?,
            threshold: super::positive(self.threshold, "threshold")?,
            warmup: super::warmup_upto(self.warmup, 1_000_000)?,
        })
    }
}

/// Residual from a learned daily or weekly profile (by sample timestamps), over its typical
/// size; anomalous when `|z| > threshold`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Spec {
    pub period: Period,
    pub window: usize,
    pub threshold: f64,
    pub warmup: usize,
}

/// The value, the one expected at this time of the day (week), the residual z, the threshold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reason {
    pub value: f64,
    pub expected: f64,
    pub z: f64,
    pub threshold: f64,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "value {} vs {} usual at this time: |z| {:.2} {} {}",
            self.value,
            super::Short(self.expected),
            self.z.abs(),
            super::op(self.z.abs() > self.threshold),
            self.threshold
        )
    }
}

impl Kind for Spec {
    type State = SeasonalState;

    fn start(&self, _now: Millis) -> SeasonalState {
        SeasonalState::new(self.period)
    }

    fn observe(&self, s: &mut SeasonalState, ts: Millis, value: f64) -> Verdict {
        let threshold = self.threshold;
        match s.observe(self.window, self.warmup, ts, value) {
            Some(o) => Verdict::measured(
                o.z.abs(),
                threshold,
                Reason {
                    value,
                    expected: o.expected,
                    z: o.z,
                    threshold,
                },
            ),
            None => Verdict::warming_up(self.warmup),
        }
    }

    /// A profile learned for another period cannot go on.
    fn fits(&self, s: &SeasonalState) -> bool {
        s.period() == self.period
    }
}

const DAY_MS: Millis = 86_400_000;
const WEEK_MS: Millis = 7 * DAY_MS;
/// Intervals looked at before the sampling step is decided.
const STEP_SAMPLES: usize = 16;
/// Weight of the newest day (or week) in a bin's profile.
const PROFILE_ALPHA: f64 = 0.3;
/// Visits a bin needs before its profile is trusted.
const MIN_VISITS: u16 = 2;

/// Which cycle a profile follows (`period = "day"` or `"week"` in the config).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Period {
    Day,
    Week,
}

impl Period {
    pub fn ms(self) -> Millis {
        match self {
            Period::Day => DAY_MS,
            Period::Week => WEEK_MS,
        }
    }

    /// Most bins a profile of this period uses (15-minute bins for a day, hourly for a week).
    pub fn max_bins(self) -> usize {
        match self {
            Period::Day => 96,
            Period::Week => 168,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Period::Day => "day",
            Period::Week => "week",
        }
    }
}

/// The usual value per bin of the cycle (UTC time of day or of week), learned one visit at a
/// time: the mean of the samples in a visit of a bin is folded into that bin's profile when the
/// visit ends, so the profile describes previous cycles, never the one in progress, and the sample
/// rate does not change how fast it learns.
///
/// The bin width is the sampling step (found from the first intervals between timestamps), but at
/// least the period / [`Period::max_bins`]. A step longer than a quarter of the period means the
/// timestamps cannot show that cycle, and the profile stays off.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    period: Period,
    last_ts: Option<Millis>,
    steps: Vec<Millis>,
    /// Decided bin count: 0 while undecided, and also when the cycle cannot be seen.
    bins: u32,
    decided: bool,
    mean: Vec<f64>,
    visits: Vec<u16>,
    current: Option<u32>,
    sum: f64,
    count: u32,
}

impl Profile {
    pub fn new(period: Period) -> Self {
        Profile {
            period,
            last_ts: None,
            steps: Vec::new(),
            bins: 0,
            decided: false,
            mean: Vec::new(),
            visits: Vec::new(),
            current: None,
            sum: 0.0,
            count: 0,
        }
    }

    /// Whether the sampling step was decided and shows this cycle.
    pub fn active(&self) -> bool {
        self.bins > 0
    }

    /// The usual value for a sample at `ts`, if that bin has been seen on enough earlier cycles;
    /// then records `x` (non-finite values are not recorded).
    pub fn expect_then_add(&mut self, ts: Millis, x: f64) -> Option<f64> {
        self.learn_step(ts);
        if self.bins == 0 {
            return None;
        }
        if self.mean.len() != self.bins as usize
            || self.visits.len() != self.bins as usize
            || self.current.is_some_and(|c| c >= self.bins)
        {
            // Inconsistent restored state (a damaged snapshot): start the profile over.
            self.mean = vec![0.0; self.bins as usize];
            self.visits = vec![0; self.bins as usize];
            self.current = None;
        }
        let span = self.period.ms();
        let b = (ts.rem_euclid(span) as i128 * i128::from(self.bins) / i128::from(span)) as u32;
        let b = b.min(self.bins - 1);
        if self.current != Some(b) {
            self.close_visit();
            self.current = Some(b);
        }
        let i = b as usize;
        let expected = (self.visits[i] >= MIN_VISITS).then_some(self.mean[i]);
        if x.is_finite() {
            self.sum += x;
            self.count += 1;
        }
        expected
    }

    fn close_visit(&mut self) {
        let i = self.current.map_or(usize::MAX, |c| c as usize);
        if let (Some(mean), Some(visits)) = (self.mean.get_mut(i), self.visits.get_mut(i)) {
            if self.count > 0 {
                let m = self.sum / f64::from(self.count);
                *mean = if *visits == 0 {
                    m
                } else {
                    *mean + PROFILE_ALPHA * (m - *mean)
                };
                *visits = visits.saturating_add(1);
            }
        }
        self.sum = 0.0;
        self.count = 0;
    }

    fn learn_step(&mut self, ts: Millis) {
        if self.decided {
            return;
        }
        if let Some(last) = self.last_ts {
            if ts > last {
                self.steps.push(ts - last);
            }
        }
        self.last_ts = Some(ts);
        if self.steps.len() < STEP_SAMPLES {
            return;
        }
        self.steps.sort_unstable();
        let step = self.steps[STEP_SAMPLES / 2].max(1);
        let span = self.period.ms();
        let bins = if step.saturating_mul(4) > span {
            0
        } else {
            (span / step).min(self.period.max_bins() as Millis) as u32
        };
        self.bins = bins;
        self.mean = vec![0.0; bins as usize];
        self.visits = vec![0; bins as usize];
        self.steps = Vec::new();
        self.decided = true;
    }
}

/// Reason-independent outcome of the seasonal detector for one sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SeasonalOutcome {
    pub expected: f64,
    /// Residual over its typical size (signed).
    pub z: f64,
}

/// The `seasonal` detector: `z = (x - expected) / (1.2533 · mean |residual|)`, where the mean
/// absolute residual is an exponentially weighted average over about `window` samples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeasonalState {
    profile: Profile,
    abs_resid: f64,
    resid_n: u64,
}

impl SeasonalState {
    pub fn new(period: Period) -> Self {
        SeasonalState {
            profile: Profile::new(period),
            abs_resid: 0.0,
            resid_n: 0,
        }
    }

    pub fn period(&self) -> Period {
        self.profile.period
    }

    /// `None` while the profile for this time is not learned yet (or after `warmup` residuals).
    pub fn observe(
        &mut self,
        window: usize,
        warmup: usize,
        ts: Millis,
        x: f64,
    ) -> Option<SeasonalOutcome> {
        let expected = self.profile.expect_then_add(ts, x)?;
        let r = x - expected;
        if !r.is_finite() {
            return None;
        }
        let have = self.resid_n;
        let scale = 1.2533 * self.abs_resid;
        let w = super::baseline::ew_weight(super::baseline::baseline_weight(window), have);
        self.abs_resid += w * (r.abs() - self.abs_resid);
        self.resid_n += 1;
        if have < warmup.max(1) as u64 {
            return None;
        }
        let z = if scale > 0.0 {
            r / scale
        } else if r == 0.0 {
            0.0
        } else {
            super::MAX_SCORE.copysign(r)
        };
        Some(SeasonalOutcome {
            expected,
            z: z.clamp(-super::MAX_SCORE, super::MAX_SCORE),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Millis = 3_600_000;

    fn daily(ts: Millis) -> f64 {
        // High from 08:00 to 18:00 UTC.
        let h = ts.rem_euclid(DAY_MS) / HOUR;
        if (8..18).contains(&h) {
            80.0
        } else {
            20.0
        }
    }

    #[test]
    fn profile_learns_the_day_and_ignores_the_sample_rate() {
        for step in [5 * 60_000, 60_000, 15_000] {
            let mut p = Profile::new(Period::Day);
            let mut ts = 1_700_000_000_000 - 1_700_000_000_000 % DAY_MS;
            let mut last = None;
            while ts < 1_700_000_000_000 + 3 * DAY_MS {
                last = p.expect_then_add(ts, daily(ts));
                ts += step;
            }
            assert!(p.active());
            assert_eq!(p.bins, 96);
            // 3 days in: every bin has been visited at least twice.
            assert_eq!(last, Some(20.0));
            let noon = ts - ts.rem_euclid(DAY_MS) + DAY_MS + 12 * HOUR;
            assert_eq!(p.clone().expect_then_add(noon, 0.0), Some(80.0));
        }
    }

    #[test]
    fn profile_is_off_when_the_step_is_too_long() {
        let mut p = Profile::new(Period::Day);
        for i in 0..40 {
            assert_eq!(p.expect_then_add(i * 8 * HOUR, 1.0), None);
        }
        assert!(!p.active());
        let mut w = Profile::new(Period::Week);
        for i in 0..40 {
            w.expect_then_add(i * 8 * HOUR, 1.0);
        }
        assert!(w.active());
        assert_eq!(w.bins, 21);
    }

    #[test]
    fn seasonal_detector_flags_a_missing_daily_rise() {
        let mut s = SeasonalState::new(Period::Day);
        let step = 5 * 60_000;
        let t0 = 1_700_000_000_000 - 1_700_000_000_000 % DAY_MS;
        let mut fired = Vec::new();
        let mut n = 0u64;
        for i in 0..(6 * DAY_MS / step) {
            let ts = t0 + i * step;
            let noise = ((i * 7919) % 13) as f64 / 13.0 - 0.5;
            // Day 4: the daily rise does not happen.
            let v = if (4 * DAY_MS..5 * DAY_MS).contains(&(ts - t0)) {
                20.0
            } else {
                daily(ts)
            } + noise;
            if let Some(o) = s.observe(288, 32, ts, v) {
                n += 1;
                if o.z.abs() > 6.0 {
                    fired.push((ts - t0) / HOUR);
                }
            }
        }
        assert!(n > 1000);
        // Quiet on the normal days before, and fires within the first hour of the missing rise.
        assert!(fired.iter().all(|&h| h >= 4 * 24 + 8), "{fired:?}");
        assert_eq!(fired.first(), Some(&(4 * 24 + 8)), "{fired:?}");
    }
}
