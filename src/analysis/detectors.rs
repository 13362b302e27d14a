//! Anomaly detectors (zscore, threshold, rate, stuck, silence) as small serializable state machines,
//! and the alert lifecycle that turns per-sample verdicts into fire/resolve transitions.

use std::collections::VecDeque;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::stats::WindowMoments;
use crate::model::Millis;

/// Largest score a zscore verdict reports. A sample that differs from a window with zero spread
/// (and `min_std == 0`) would have an infinite z; it gets this score instead (and is anomalous
/// unless the threshold is at least this large).
pub const MAX_SCORE: f64 = 1e9;

/// A validated detector configuration, built by the config layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum DetectorSpec {
    /// Judge each sample against the last `window` samples before it:
    /// `z = (x - mean) / max(std, min_std)` (population std); anomalous when `|z| > threshold`
    /// once the window holds `warmup` samples.
    Zscore {
        window: usize,
        threshold: f64,
        warmup: usize,
        min_std: f64,
    },
    /// Anomalous when `value > max` or `value < min`; once anomalous, stays so until the value is
    /// back inside `[min + hysteresis, max - hysteresis]`.
    Threshold {
        min: Option<f64>,
        max: Option<f64>,
        hysteresis: f64,
    },
    /// Anomalous when `|Δvalue / Δt|` between consecutive samples exceeds `max_per_sec`.
    Rate { max_per_sec: f64 },
    /// Anomalous when the value stays within `tolerance` of the first value of the run for at
    /// least `count` samples or at least `duration_ms` (by sample timestamps).
    Stuck {
        count: Option<u32>,
        duration_ms: Option<Millis>,
        tolerance: f64,
    },
    /// Anomalous (via [`DetectorState::tick`]) when no sample arrived for more than `after_ms`
    /// of wall-clock time.
    Silence { after_ms: Millis },
}

impl DetectorSpec {
    pub fn kind(&self) -> &'static str {
        match self {
            DetectorSpec::Zscore { .. } => "zscore",
            DetectorSpec::Threshold { .. } => "threshold",
            DetectorSpec::Rate { .. } => "rate",
            DetectorSpec::Stuck { .. } => "stuck",
            DetectorSpec::Silence { .. } => "silence",
        }
    }
}

/// Why a verdict came out as it did. Plain numbers, so building one costs nothing; format it
/// with `Display` (e.g. `"|z| 7.10 > 6"`, `"value 41.2 > max 40"`) only when an alert
/// transitions.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Reason {
    /// Zscore window still filling: `have` of `need` samples.
    Warmup {
        have: u32,
        need: u32,
    },
    /// Signed z (clamped to ±[`MAX_SCORE`]) and the threshold.
    Zscore {
        z: f64,
        threshold: f64,
    },
    AboveMax {
        value: f64,
        max: f64,
    },
    BelowMin {
        value: f64,
        min: f64,
    },
    /// Back within the limits but not yet inside the release band `[low, high]`
    /// (`min + hysteresis`, `max - hysteresis`; ±inf where there is no limit).
    Hysteresis {
        value: f64,
        low: f64,
        high: f64,
    },
    InRange {
        value: f64,
    },
    /// Absolute rate of change in units per second.
    Rate {
        per_sec: f64,
        max_per_sec: f64,
    },
    /// No rate: first sample, or Δt <= 0 (the sample was skipped).
    NoRate,
    /// `value` (the first of the run) repeated `run` samples over `span_ms`.
    Stuck {
        value: f64,
        run: u32,
        span_ms: Millis,
    },
    Silence {
        silent_ms: Millis,
        after_ms: Millis,
    },
    /// Silence detectors say this for every sample.
    Receiving,
}

/// Formats a number with at most three decimals and no trailing zeros.
struct Short(f64);

impl fmt::Display for Short {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = (self.0 * 1000.0).round() / 1000.0;
        // `{}` prints the shortest representation, so 7.833 stays 7.833 and 15.0 prints 15.
        write!(f, "{}", if r == 0.0 { 0.0 } else { r })
    }
}

fn seconds(ms: Millis) -> Short {
    Short(ms as f64 / 1000.0)
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Reason::Warmup { have, need } => write!(f, "warming up ({have}/{need} samples)"),
            Reason::Zscore { z, threshold } => {
                let op = if z.abs() > threshold { ">" } else { "<=" };
                write!(f, "|z| {:.2} {op} {threshold}", z.abs())
            }
            Reason::AboveMax { value, max } => write!(f, "value {value} > max {max}"),
            Reason::BelowMin { value, min } => write!(f, "value {value} < min {min}"),
            Reason::Hysteresis { value, low, high } => {
                write!(f, "value {value} not yet back inside [{low}, {high}]")
            }
            Reason::InRange { value } => write!(f, "value {value} within limits"),
            Reason::Rate {
                per_sec,
                max_per_sec,
            } => {
                let op = if per_sec > max_per_sec { ">" } else { "<=" };
                write!(f, "rate {}/s {op} {max_per_sec}/s", Short(per_sec))
            }
            Reason::NoRate => f.write_str("no rate (first sample or non-increasing timestamp)"),
            Reason::Stuck {
                value,
                run,
                span_ms,
            } => write!(
                f,
                "value {value} unchanged for {run} samples ({} s)",
                seconds(span_ms)
            ),
            Reason::Silence {
                silent_ms,
                after_ms,
            } => {
                let op = if silent_ms > after_ms { ">" } else { "<=" };
                write!(
                    f,
                    "no data for {} s {op} {} s",
                    seconds(silent_ms),
                    seconds(after_ms)
                )
            }
            Reason::Receiving => f.write_str("receiving data"),
        }
    }
}

/// A detector's judgement of one sample (or one tick).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Verdict {
    pub anomalous: bool,
    /// Kind-specific magnitude: |z|, distance beyond the limit, rate per second, run length,
    /// seconds of silence. Always finite and >= 0.
    pub score: f64,
    pub reason: Reason,
}

impl Verdict {
    fn quiet(reason: Reason) -> Self {
        Verdict {
            anomalous: false,
            score: 0.0,
            reason,
        }
    }

    /// The human-readable reason. Allocates: call it on transitions, not per sample.
    pub fn message(&self) -> String {
        self.reason.to_string()
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ZscoreState {
    ring: VecDeque<f64>,
    moments: WindowMoments,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ThresholdState {
    active: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RateState {
    last: Option<(Millis, f64)>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Run {
    first: f64,
    start_ts: Millis,
    len: u32,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StuckState {
    run: Option<Run>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SilenceState {
    /// Wall clock (unix ms) of the last arrival, or of creation when nothing arrived yet.
    last_seen: Millis,
}

/// Per-(device, metric, detector) state. Size is O(window) for zscore and O(1) otherwise.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum DetectorState {
    Zscore(ZscoreState),
    Threshold(ThresholdState),
    Rate(RateState),
    Stuck(StuckState),
    Silence(SilenceState),
}

impl DetectorState {
    /// Fresh state for `spec`. `now` is the wall clock (unix ms); only silence uses it, as the
    /// arrival time it counts from until the first [`seen`](Self::seen). There is deliberately
    /// no constructor without a clock, so a silence detector cannot start out already silent.
    pub fn new(spec: &DetectorSpec, now: Millis) -> Self {
        match spec {
            DetectorSpec::Zscore { .. } => DetectorState::Zscore(ZscoreState::default()),
            DetectorSpec::Threshold { .. } => DetectorState::Threshold(ThresholdState::default()),
            DetectorSpec::Rate { .. } => DetectorState::Rate(RateState::default()),
            DetectorSpec::Stuck { .. } => DetectorState::Stuck(StuckState::default()),
            DetectorSpec::Silence { .. } => DetectorState::Silence(SilenceState { last_seen: now }),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            DetectorState::Zscore(_) => "zscore",
            DetectorState::Threshold(_) => "threshold",
            DetectorState::Rate(_) => "rate",
            DetectorState::Stuck(_) => "stuck",
            DetectorState::Silence(_) => "silence",
        }
    }

    /// Whether this state belongs to a spec of the same kind (check after restoring persisted
    /// state against a possibly changed config; `observe`/`tick` reset a mismatched state).
    pub fn matches(&self, spec: &DetectorSpec) -> bool {
        self.kind() == spec.kind()
    }

    /// Records that a sample arrived at wall-clock time `now`. Only silence uses it; call it for
    /// every arriving sample (it is a no-op for other kinds).
    pub fn seen(&mut self, now: Millis) {
        if let DetectorState::Silence(s) = self {
            s.last_seen = now;
        }
    }

    /// Feeds one sample (`ts` is the sample's own timestamp) and returns the verdict for it.
    /// Does not allocate once a zscore ring has reached its window size. Silence always
    /// answers "not anomalous" here; it is driven by [`seen`](Self::seen) and
    /// [`tick`](Self::tick). A state of the wrong kind for `spec` is first reset
    /// (a silence state then counts from `ts`).
    pub fn observe(&mut self, spec: &DetectorSpec, ts: Millis, value: f64) -> Verdict {
        if !self.matches(spec) {
            *self = DetectorState::new(spec, ts);
        }
        match (self, spec) {
            (
                DetectorState::Zscore(s),
                &DetectorSpec::Zscore {
                    window,
                    threshold,
                    warmup,
                    min_std,
                },
            ) => s.observe(window, threshold, warmup, min_std, value),
            (
                DetectorState::Threshold(s),
                &DetectorSpec::Threshold {
                    min,
                    max,
                    hysteresis,
                },
            ) => s.observe(min, max, hysteresis, value),
            (DetectorState::Rate(s), &DetectorSpec::Rate { max_per_sec }) => {
                s.observe(max_per_sec, ts, value)
            }
            (
                DetectorState::Stuck(s),
                &DetectorSpec::Stuck {
                    count,
                    duration_ms,
                    tolerance,
                },
            ) => s.observe(count, duration_ms, tolerance, ts, value),
            _ => Verdict::quiet(Reason::Receiving),
        }
    }

    /// The (mean, population std) a zscore detector would judge the next sample against, once
    /// its window holds a sample; `None` for other kinds. Read-only, for charts.
    pub fn baseline(&self) -> Option<(f64, f64)> {
        match self {
            DetectorState::Zscore(s) => s.moments.mean_std(),
            _ => None,
        }
    }

    /// Called periodically with the wall clock, also when no data arrives at all. Only silence
    /// returns `Some`: anomalous when `now - last_seen > after_ms`, score = seconds of silence.
    pub fn tick(&mut self, spec: &DetectorSpec, now: Millis) -> Option<Verdict> {
        if !self.matches(spec) {
            *self = DetectorState::new(spec, now);
        }
        match (self, spec) {
            (DetectorState::Silence(s), &DetectorSpec::Silence { after_ms }) => {
                let silent_ms = now.saturating_sub(s.last_seen).max(0);
                Some(Verdict {
                    anomalous: silent_ms > after_ms,
                    score: silent_ms as f64 / 1000.0,
                    reason: Reason::Silence {
                        silent_ms,
                        after_ms,
                    },
                })
            }
            _ => None,
        }
    }
}

impl ZscoreState {
    /// `window` 0 behaves like 1; the effective warm-up is `warmup` clamped to `[1, window]`.
    fn observe(
        &mut self,
        window: usize,
        threshold: f64,
        warmup: usize,
        min_std: f64,
        x: f64,
    ) -> Verdict {
        let window = window.max(1);
        let need = warmup.clamp(1, window);
        let have = self.ring.len();
        let verdict = match self.moments.mean_std() {
            Some((mean, std)) if have >= need => {
                let denom = std.max(min_std);
                let diff = x - mean;
                let z = if denom > 0.0 {
                    (diff / denom).clamp(-MAX_SCORE, MAX_SCORE)
                } else if diff == 0.0 {
                    0.0
                } else {
                    MAX_SCORE.copysign(diff)
                };
                Verdict {
                    anomalous: z.abs() > threshold,
                    score: z.abs(),
                    reason: Reason::Zscore { z, threshold },
                }
            }
            _ => Verdict::quiet(Reason::Warmup {
                have: u32::try_from(have).unwrap_or(u32::MAX),
                need: u32::try_from(need).unwrap_or(u32::MAX),
            }),
        };
        // `while`, not `if`: the window may have shrunk after a config change.
        while self.ring.len() >= window {
            let Some(old) = self.ring.pop_front() else {
                break;
            };
            self.moments.evict(old, self.ring.iter().copied());
        }
        if self.ring.capacity() == 0 {
            // Once, at the first sample: exactly the window, not the next power of two.
            self.ring.reserve_exact(window.min(1 << 16));
        }
        self.ring.push_back(x);
        self.moments.push(x);
        verdict
    }
}

impl ThresholdState {
    fn observe(
        &mut self,
        min: Option<f64>,
        max: Option<f64>,
        hysteresis: f64,
        value: f64,
    ) -> Verdict {
        let over = max.map_or(0.0, |m| value - m).max(0.0);
        let under = min.map_or(0.0, |m| m - value).max(0.0);
        if over > 0.0 || under > 0.0 {
            self.active = true;
            let reason = match (max, min) {
                (Some(max), _) if over > 0.0 => Reason::AboveMax { value, max },
                (_, Some(min)) => Reason::BelowMin { value, min },
                _ => Reason::InRange { value },
            };
            return Verdict {
                anomalous: true,
                score: over.max(under),
                reason,
            };
        }
        if self.active {
            let h = hysteresis.max(0.0);
            let low = min.map_or(f64::NEG_INFINITY, |m| m + h);
            let high = max.map_or(f64::INFINITY, |m| m - h);
            if value >= low && value <= high {
                self.active = false;
            } else {
                return Verdict {
                    anomalous: true,
                    score: 0.0,
                    reason: Reason::Hysteresis { value, low, high },
                };
            }
        }
        Verdict::quiet(Reason::InRange { value })
    }
}

impl RateState {
    /// A sample with Δt <= 0 is skipped: not anomalous, and the previous sample stays the
    /// reference for the next one.
    fn observe(&mut self, max_per_sec: f64, ts: Millis, value: f64) -> Verdict {
        let Some((last_ts, last_value)) = self.last else {
            self.last = Some((ts, value));
            return Verdict::quiet(Reason::NoRate);
        };
        let dt = ts.saturating_sub(last_ts);
        if dt <= 0 {
            return Verdict::quiet(Reason::NoRate);
        }
        self.last = Some((ts, value));
        let per_sec = (value - last_value).abs() / (dt as f64 / 1000.0);
        let per_sec = if per_sec.is_finite() {
            per_sec
        } else {
            MAX_SCORE
        };
        Verdict {
            anomalous: per_sec > max_per_sec,
            score: per_sec,
            reason: Reason::Rate {
                per_sec,
                max_per_sec,
            },
        }
    }
}

impl StuckState {
    fn observe(
        &mut self,
        count: Option<u32>,
        duration_ms: Option<Millis>,
        tolerance: f64,
        ts: Millis,
        value: f64,
    ) -> Verdict {
        let run = match self.run {
            Some(mut run) if (value - run.first).abs() <= tolerance => {
                run.len = run.len.saturating_add(1);
                run
            }
            _ => Run {
                first: value,
                start_ts: ts,
                len: 1,
            },
        };
        self.run = Some(run);
        let span_ms = ts.saturating_sub(run.start_ts);
        let by_count = count.is_some_and(|c| run.len >= c);
        let by_duration = duration_ms.is_some_and(|d| span_ms >= d);
        Verdict {
            anomalous: by_count || by_duration,
            score: f64::from(run.len),
            reason: Reason::Stuck {
                value: run.first,
                run: run.len,
                span_ms,
            },
        }
    }
}

/// Alert transition produced by [`Lifecycle::step`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Fire,
    Resolve,
}

/// The alert a lifecycle is firing, or fired last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertRef {
    /// Set by the caller with [`Lifecycle::set_id`] after a `Fire`; 0 until then.
    pub id: u64,
    /// Wall clock (unix ms) of the step that fired.
    pub raised_at: Millis,
}

/// Turns a detector's verdicts into at most one firing alert at a time.
///
/// Ids: the caller generates them. On `Some(Transition::Fire)` it calls
/// [`set_id`](Self::set_id); on `Some(Transition::Resolve)` it reads [`id`](Self::id) and
/// [`raised_at`](Self::raised_at), which still describe the alert that just resolved (they are
/// kept until the next `Fire`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lifecycle {
    firing: bool,
    current: Option<AlertRef>,
}

impl Lifecycle {
    pub fn new() -> Self {
        Self::default()
    }

    /// `anomalous`: the detector verdict; `now`: wall clock ms; `hold_ms`: minimum time an alert
    /// stays firing. Fires on a not-firing → anomalous edge; resolves on the first
    /// non-anomalous step with `now >= raised_at + hold_ms`. Anomalous steps while firing, and
    /// non-anomalous steps within the hold time, change nothing.
    pub fn step(&mut self, anomalous: bool, now: Millis, hold_ms: Millis) -> Option<Transition> {
        if !self.firing {
            if anomalous {
                self.firing = true;
                self.current = Some(AlertRef {
                    id: 0,
                    raised_at: now,
                });
                return Some(Transition::Fire);
            }
            return None;
        }
        if anomalous {
            return None;
        }
        let raised_at = self.current.map_or(now, |c| c.raised_at);
        if now >= raised_at.saturating_add(hold_ms.max(0)) {
            self.firing = false;
            return Some(Transition::Resolve);
        }
        None
    }

    /// Attaches the caller's id to the current alert (no-op when nothing has fired yet).
    pub fn set_id(&mut self, id: u64) {
        if let Some(c) = &mut self.current {
            c.id = id;
        }
    }

    pub fn is_firing(&self) -> bool {
        self.firing
    }

    /// Id of the firing alert, or of the one that resolved last; `None` before the first fire.
    pub fn id(&self) -> Option<u64> {
        self.current.map(|c| c.id)
    }

    /// When the firing alert (or the one that resolved last) was raised; `None` before the
    /// first fire.
    pub fn raised_at(&self) -> Option<Millis> {
        self.current.map(|c| c.raised_at)
    }

    pub fn current(&self) -> Option<AlertRef> {
        self.current
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use rand_distr::{Distribution, Normal};

    fn zscore(window: usize, threshold: f64, warmup: usize, min_std: f64) -> DetectorSpec {
        DetectorSpec::Zscore {
            window,
            threshold,
            warmup,
            min_std,
        }
    }

    /// Indices of anomalous verdicts for a series with ts = index * step_ms.
    fn anomalies(spec: &DetectorSpec, values: &[f64], step_ms: Millis) -> Vec<usize> {
        let mut st = DetectorState::new(spec, 0);
        values
            .iter()
            .enumerate()
            .filter(|&(i, &v)| st.observe(spec, i as Millis * step_ms, v).anomalous)
            .map(|(i, _)| i)
            .collect()
    }

    fn gaussian(seed: u64, n: usize, mean: f64, std: f64) -> Vec<f64> {
        let mut rng = StdRng::seed_from_u64(seed);
        let d = Normal::new(mean, std).unwrap();
        (0..n).map(|_| d.sample(&mut rng)).collect()
    }

    #[test]
    fn kinds() {
        let specs = [
            zscore(8, 3.0, 4, 0.0),
            DetectorSpec::Threshold {
                min: None,
                max: Some(1.0),
                hysteresis: 0.0,
            },
            DetectorSpec::Rate { max_per_sec: 1.0 },
            DetectorSpec::Stuck {
                count: Some(3),
                duration_ms: None,
                tolerance: 0.0,
            },
            DetectorSpec::Silence { after_ms: 1000 },
        ];
        let kinds: Vec<_> = specs.iter().map(DetectorSpec::kind).collect();
        assert_eq!(kinds, ["zscore", "threshold", "rate", "stuck", "silence"]);
        for s in &specs {
            let st = DetectorState::new(s, 0);
            assert_eq!(st.kind(), s.kind());
            assert!(st.matches(s));
        }
    }

    #[test]
    fn zscore_quiet_on_clean_gaussian() {
        let spec = zscore(256, 6.0, 32, 0.0);
        let values = gaussian(1234, 10_000, 20.0, 2.0);
        assert_eq!(anomalies(&spec, &values, 1000), Vec::<usize>::new());
        // Same at a large offset.
        let values = gaussian(99, 10_000, 1e9, 0.5);
        assert_eq!(anomalies(&spec, &values, 1000), Vec::<usize>::new());
    }

    #[test]
    fn zscore_catches_spike_at_the_right_sample() {
        let spec = zscore(256, 6.0, 32, 0.0);
        let mut values = gaussian(5, 1_000, 20.0, 2.0);
        values[500] = 20.0 + 2.0 * 20.0;
        assert_eq!(anomalies(&spec, &values, 1000), vec![500]);

        let mut st = DetectorState::new(&spec, 0);
        for (i, v) in values[..500].iter().enumerate() {
            st.observe(&spec, i as Millis, *v);
        }
        let v = st.observe(&spec, 500, values[500]);
        assert!(v.anomalous);
        assert!(v.score > 15.0 && v.score < 25.0, "{}", v.score);
        let msg = v.message();
        assert!(msg.starts_with("|z| ") && msg.ends_with(" > 6"), "{msg}");
    }

    #[test]
    fn zscore_warmup() {
        let spec = zscore(16, 3.0, 5, 0.0);
        let mut st = DetectorState::new(&spec, 0);
        // A wild value before the window holds 5 samples is never anomalous.
        for (i, v) in [0.0, 1.0, 0.0, 1000.0].into_iter().enumerate() {
            let verdict = st.observe(&spec, i as Millis, v);
            assert!(!verdict.anomalous);
            assert_eq!(verdict.score, 0.0);
            assert_eq!(
                verdict.reason,
                Reason::Warmup {
                    have: i as u32,
                    need: 5
                }
            );
        }
        assert_eq!(
            Reason::Warmup { have: 3, need: 5 }.to_string(),
            "warming up (3/5 samples)"
        );
        st.observe(&spec, 4, 1.0);
        // Window now has 5 samples: 0, 1, 0, 1000, 1 -> mean 200.4, std ~399.8.
        let v = st.observe(&spec, 5, 5000.0);
        assert!(v.anomalous, "{v:?}");
        assert!(matches!(v.reason, Reason::Zscore { .. }));
    }

    #[test]
    fn zscore_zero_spread_and_min_std() {
        let spec = zscore(8, 6.0, 4, 0.0);
        let mut st = DetectorState::new(&spec, 0);
        for i in 0..4 {
            st.observe(&spec, i, 10.0);
        }
        let v = st.observe(&spec, 4, 10.0);
        assert!(!v.anomalous);
        assert_eq!(v.score, 0.0);
        let v = st.observe(&spec, 5, 10.001);
        assert!(v.anomalous);
        assert_eq!(v.score, MAX_SCORE);

        let spec = zscore(8, 6.0, 4, 1.0);
        let mut st = DetectorState::new(&spec, 0);
        for i in 0..8 {
            st.observe(&spec, i, 10.0);
        }
        let v = st.observe(&spec, 8, 15.0);
        assert!(!v.anomalous);
        assert_eq!(v.score, 5.0);
        assert_eq!(v.reason.to_string(), "|z| 5.00 <= 6");
        // The 15 is in the window now; the next judgement sees it, so rebuild a clean one.
        let mut st = DetectorState::new(&spec, 0);
        for i in 0..8 {
            st.observe(&spec, i, 10.0);
        }
        let v = st.observe(&spec, 8, 3.0);
        assert!(v.anomalous);
        assert_eq!(v.score, 7.0);
        assert_eq!(
            v.reason,
            Reason::Zscore {
                z: -7.0,
                threshold: 6.0
            }
        );
        assert_eq!(v.message(), "|z| 7.00 > 6");
    }

    #[test]
    fn zscore_anomalous_values_enter_the_window() {
        let spec = zscore(4, 3.0, 4, 0.5);
        let mut st = DetectorState::new(&spec, 0);
        for i in 0..4 {
            st.observe(&spec, i, 0.0);
        }
        assert!(st.observe(&spec, 4, 100.0).anomalous);
        // Four more 100s fill the window: 100 is the new normal.
        for i in 5..8 {
            st.observe(&spec, i, 100.0);
        }
        let v = st.observe(&spec, 8, 100.0);
        assert!(!v.anomalous);
        assert_eq!(v.score, 0.0);
    }

    #[test]
    fn threshold_with_hysteresis() {
        let spec = DetectorSpec::Threshold {
            min: Some(10.0),
            max: Some(40.0),
            hysteresis: 1.0,
        };
        let values = [
            30.0, 35.0, 41.2, 39.5, 39.0, 38.0, 40.0, 9.0, 10.5, 11.0, 25.0,
        ];
        let mut st = DetectorState::new(&spec, 0);
        let verdicts: Vec<Verdict> = values
            .iter()
            .enumerate()
            .map(|(i, &v)| st.observe(&spec, i as Millis, v))
            .collect();
        let flags: Vec<bool> = verdicts.iter().map(|v| v.anomalous).collect();
        assert_eq!(
            flags,
            [false, false, true, true, false, false, false, true, true, false, false]
        );
        assert!((verdicts[2].score - 1.2).abs() < 1e-9);
        assert_eq!(verdicts[2].message(), "value 41.2 > max 40");
        assert_eq!(verdicts[3].score, 0.0);
        assert_eq!(
            verdicts[3].reason,
            Reason::Hysteresis {
                value: 39.5,
                low: 11.0,
                high: 39.0
            }
        );
        assert_eq!(verdicts[7].score, 1.0);
        assert_eq!(verdicts[7].message(), "value 9 < min 10");
        assert_eq!(
            verdicts[8].reason.to_string(),
            "value 10.5 not yet back inside [11, 39]"
        );
        assert_eq!(verdicts[10].score, 0.0);
    }

    #[test]
    fn threshold_one_sided() {
        let spec = DetectorSpec::Threshold {
            min: None,
            max: Some(5.0),
            hysteresis: 0.5,
        };
        let values = [-1e6, 5.0, 6.0, 4.8, 4.5, -1e6];
        assert_eq!(anomalies(&spec, &values, 1), vec![2, 3]);
        let clean = gaussian(3, 10_000, 0.0, 1.0);
        assert!(anomalies(&spec, &clean, 1).is_empty());
    }

    #[test]
    fn rate_with_irregular_dt() {
        let spec = DetectorSpec::Rate { max_per_sec: 10.0 };
        let mut st = DetectorState::new(&spec, 0);
        let samples: [(Millis, f64); 8] = [
            (0, 0.0),
            (500, 4.0),    // 8/s
            (600, 5.0),    // 10/s, not > 10
            (700, 6.5),    // 15/s
            (700, 100.0),  // Δt 0: skipped
            (650, 100.0),  // Δt < 0: skipped
            (3700, 30.0),  // 23.5 over 3 s vs the ts-700 sample: 7.83/s
            (3710, 29.85), // 15/s, falling
        ];
        let verdicts: Vec<Verdict> = samples
            .iter()
            .map(|&(ts, v)| st.observe(&spec, ts, v))
            .collect();
        let flags: Vec<bool> = verdicts.iter().map(|v| v.anomalous).collect();
        assert_eq!(
            flags,
            [false, false, false, true, false, false, false, true]
        );
        assert_eq!(verdicts[0].reason, Reason::NoRate);
        assert!((verdicts[1].score - 8.0).abs() < 1e-9);
        assert!((verdicts[3].score - 15.0).abs() < 1e-9);
        assert_eq!(verdicts[3].message(), "rate 15/s > 10/s");
        assert_eq!(verdicts[4].reason, Reason::NoRate);
        assert_eq!(verdicts[5].score, 0.0);
        assert!((verdicts[6].score - 23.5 / 3.0).abs() < 1e-9);
        assert_eq!(verdicts[6].message(), "rate 7.833/s <= 10/s");
        assert!((verdicts[7].score - 15.0).abs() < 1e-6);
    }

    #[test]
    fn rate_quiet_on_smooth_signal() {
        let spec = DetectorSpec::Rate { max_per_sec: 2.0 };
        let values: Vec<f64> = (0..10_000).map(|i| (i as f64 / 100.0).sin()).collect();
        // d/dt sin(t/100 s) peaks at 1/(100 ms) per sample... at 10 ms steps that is 1/s.
        assert!(anomalies(&spec, &values, 10).is_empty());
    }

    #[test]
    fn stuck_by_count() {
        let spec = DetectorSpec::Stuck {
            count: Some(5),
            duration_ms: None,
            tolerance: 0.01,
        };
        let values = [1.0, 2.0, 2.0, 2.005, 1.995, 2.0, 2.0, 3.0, 3.0];
        let mut st = DetectorState::new(&spec, 0);
        let verdicts: Vec<Verdict> = values
            .iter()
            .enumerate()
            .map(|(i, &v)| st.observe(&spec, i as Millis * 1000, v))
            .collect();
        let flags: Vec<bool> = verdicts.iter().map(|v| v.anomalous).collect();
        assert_eq!(
            flags,
            [false, false, false, false, false, true, true, false, false]
        );
        let scores: Vec<f64> = verdicts.iter().map(|v| v.score).collect();
        assert_eq!(scores, [1.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 1.0, 2.0]);
        assert_eq!(
            verdicts[5].message(),
            "value 2 unchanged for 5 samples (4 s)"
        );
        let clean = gaussian(8, 10_000, 0.0, 1.0);
        assert!(anomalies(&spec, &clean, 1000).is_empty());
    }

    #[test]
    fn stuck_by_duration() {
        let spec = DetectorSpec::Stuck {
            count: None,
            duration_ms: Some(10_000),
            tolerance: 0.0,
        };
        let mut st = DetectorState::new(&spec, 0);
        let samples: [(Millis, f64); 8] = [
            (0, 5.0),
            (3_000, 5.0),
            (6_000, 5.0),
            (9_999, 5.0),
            (10_000, 5.0), // run has lasted 10 s
            (10_500, 6.0), // reset
            (15_000, 6.0),
            (20_500, 6.0),
        ];
        let flags: Vec<bool> = samples
            .iter()
            .map(|&(ts, v)| st.observe(&spec, ts, v).anomalous)
            .collect();
        assert_eq!(
            flags,
            [false, false, false, false, true, false, false, true]
        );
    }

    #[test]
    fn silence_fires_without_any_data_and_resolves_after_seen() {
        let spec = DetectorSpec::Silence { after_ms: 5_000 };
        let mut st = DetectorState::new(&spec, 1_000);
        let mut lc = Lifecycle::new();
        let mut events = Vec::new();
        for now in (1_000..=8_000).step_by(1_000) {
            let v = st.tick(&spec, now).unwrap();
            if let Some(t) = lc.step(v.anomalous, now, 0) {
                events.push((now, t, v));
            }
        }
        // 6_000 - 1_000 = 5_000 is not > 5_000; 7_000 is the first silent tick.
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].0, 7_000);
        assert_eq!(events[0].1, Transition::Fire);
        assert_eq!(events[0].2.score, 6.0);
        assert_eq!(events[0].2.message(), "no data for 6 s > 5 s");

        // Samples' own timestamps do not count; arrivals do.
        let v = st.observe(&spec, 123, 1.0);
        assert!(!v.anomalous);
        assert!(st.tick(&spec, 8_500).unwrap().anomalous);
        st.seen(8_600);
        let v = st.tick(&spec, 9_000).unwrap();
        assert!(!v.anomalous);
        assert!((v.score - 0.4).abs() < 1e-12);
        assert_eq!(lc.step(v.anomalous, 9_000, 0), Some(Transition::Resolve));
        assert!(st.tick(&spec, 13_600).is_some_and(|v| !v.anomalous));
        assert!(st.tick(&spec, 13_601).is_some_and(|v| v.anomalous));
    }

    #[test]
    fn tick_is_none_for_sample_driven_detectors() {
        for spec in [
            zscore(8, 3.0, 4, 0.0),
            DetectorSpec::Threshold {
                min: Some(0.0),
                max: None,
                hysteresis: 0.0,
            },
            DetectorSpec::Rate { max_per_sec: 1.0 },
            DetectorSpec::Stuck {
                count: None,
                duration_ms: Some(1),
                tolerance: 0.0,
            },
        ] {
            let mut st = DetectorState::new(&spec, 0);
            assert_eq!(st.tick(&spec, 1_000_000), None);
            st.seen(5); // no-op
            assert_eq!(st.kind(), spec.kind());
        }
    }

    #[test]
    fn mismatched_state_is_reset() {
        let z = zscore(8, 3.0, 2, 0.0);
        let t = DetectorSpec::Threshold {
            min: None,
            max: Some(1.0),
            hysteresis: 0.0,
        };
        let mut st = DetectorState::new(&z, 0);
        assert!(!st.matches(&t));
        assert!(st.observe(&t, 0, 2.0).anomalous);
        assert_eq!(st.kind(), "threshold");
        let s = DetectorSpec::Silence { after_ms: 10 };
        assert!(!st.tick(&s, 100).unwrap().anomalous);
        assert!(st.tick(&s, 111).unwrap().anomalous);
    }

    #[test]
    fn zscore_window_shrink_after_config_change() {
        let big = zscore(64, 3.0, 4, 0.0);
        let small = zscore(4, 3.0, 4, 0.0);
        let mut st = DetectorState::new(&big, 0);
        for i in 0..64 {
            st.observe(&big, i, i as f64);
        }
        st.observe(&small, 64, 100.0);
        match &st {
            DetectorState::Zscore(z) => {
                assert_eq!(z.ring.len(), 4);
                assert_eq!(z.moments.len(), 4);
                assert_eq!(z.ring, [61.0, 62.0, 63.0, 100.0]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn lifecycle_hold_time() {
        let mut lc = Lifecycle::new();
        assert!(!lc.is_firing());
        assert_eq!(lc.raised_at(), None);
        assert_eq!(lc.id(), None);
        assert_eq!(lc.step(false, 0, 10_000), None);
        assert_eq!(lc.step(true, 1_000, 10_000), Some(Transition::Fire));
        lc.set_id(42);
        assert!(lc.is_firing());
        assert_eq!(lc.raised_at(), Some(1_000));
        assert_eq!(lc.id(), Some(42));
        assert_eq!(lc.step(true, 2_000, 10_000), None); // no second Fire
        assert_eq!(lc.step(false, 5_000, 10_000), None); // within hold
        assert_eq!(lc.step(true, 9_000, 10_000), None);
        assert_eq!(lc.step(false, 11_000, 10_000), Some(Transition::Resolve)); // at raised_at + hold
        assert!(!lc.is_firing());
        // The resolved alert is still readable for the Resolve message.
        assert_eq!(lc.id(), Some(42));
        assert_eq!(lc.raised_at(), Some(1_000));
        assert_eq!(lc.step(false, 12_000, 10_000), None);
        assert_eq!(lc.step(true, 13_000, 10_000), Some(Transition::Fire));
        assert_eq!(lc.id(), Some(0));
        lc.set_id(43);
        assert_eq!(
            lc.current(),
            Some(AlertRef {
                id: 43,
                raised_at: 13_000
            })
        );
        // Anomalous past the hold: stays firing until a clean step.
        assert_eq!(lc.step(true, 50_000, 10_000), None);
        assert_eq!(lc.step(false, 50_001, 10_000), Some(Transition::Resolve));
        // Zero hold resolves on the very next clean step.
        assert_eq!(lc.step(true, 60_000, 0), Some(Transition::Fire));
        assert_eq!(lc.step(false, 60_000, 0), Some(Transition::Resolve));
        let mut fresh = Lifecycle::new();
        fresh.set_id(7); // nothing fired: no-op
        assert_eq!(fresh.id(), None);
    }

    fn roundtrip<T: Serialize + serde::de::DeserializeOwned>(v: &T) -> T {
        postcard::from_bytes(&postcard::to_stdvec(v).unwrap()).unwrap()
    }

    #[test]
    fn serde_roundtrip_continues_identically() {
        let specs = [
            zscore(64, 3.0, 16, 0.01),
            DetectorSpec::Threshold {
                min: Some(-1.0),
                max: Some(1.0),
                hysteresis: 0.2,
            },
            DetectorSpec::Rate { max_per_sec: 1.5 },
            DetectorSpec::Stuck {
                count: Some(3),
                duration_ms: Some(4_000),
                tolerance: 0.3,
            },
            DetectorSpec::Silence { after_ms: 2_500 },
        ];
        for spec in &specs {
            assert_eq!(&roundtrip(spec), spec);
            let mut rng = StdRng::seed_from_u64(11);
            let mut a = DetectorState::new(spec, 0);
            let mut la = Lifecycle::new();
            let mut ts = 0;
            let mut next = |rng: &mut StdRng| -> (Millis, f64, bool) {
                ts += rng.gen_range(1..2_000);
                let v = if rng.gen_bool(0.3) {
                    0.5
                } else {
                    rng.gen_range(-1.5..1.5)
                };
                (ts, v, rng.gen_bool(0.5))
            };
            for _ in 0..300 {
                let (ts, v, arrived) = next(&mut rng);
                if arrived {
                    a.seen(ts);
                }
                let verdict = a.observe(spec, ts, v);
                la.step(verdict.anomalous, ts, 1_000);
                if let Some(t) = a.tick(spec, ts) {
                    la.step(t.anomalous, ts, 1_000);
                }
            }
            let mut b: DetectorState = roundtrip(&a);
            let mut lb: Lifecycle = roundtrip(&la);
            assert_eq!(la, lb);
            let mut fired = 0;
            for _ in 0..1_000 {
                let (ts, v, arrived) = next(&mut rng);
                if arrived {
                    a.seen(ts);
                    b.seen(ts);
                }
                let va = a.observe(spec, ts, v);
                let vb = b.observe(spec, ts, v);
                assert_eq!(va.anomalous, vb.anomalous);
                assert_eq!(va.score.to_bits(), vb.score.to_bits());
                assert_eq!(va.reason, vb.reason);
                let ta = la.step(va.anomalous, ts, 1_000);
                assert_eq!(ta, lb.step(vb.anomalous, ts, 1_000));
                fired += usize::from(ta == Some(Transition::Fire));
                let (ka, kb) = (a.tick(spec, ts), b.tick(spec, ts));
                assert_eq!(ka, kb);
                if let (Some(ka), Some(kb)) = (ka, kb) {
                    let ta = la.step(ka.anomalous, ts, 1_000);
                    assert_eq!(ta, lb.step(kb.anomalous, ts, 1_000));
                    fired += usize::from(ta == Some(Transition::Fire));
                }
            }
            assert!(fired > 0, "{} never fired", spec.kind());
            assert_eq!(
                postcard::to_stdvec(&a).unwrap(),
                postcard::to_stdvec(&b).unwrap()
            );
            assert_eq!(la, lb);
        }
    }

    #[test]
    fn short_number_format() {
        assert_eq!(Short(15.0).to_string(), "15");
        assert_eq!(Short(7.833_333).to_string(), "7.833");
        assert_eq!(Short(-0.0001).to_string(), "0");
        assert_eq!(Short(0.25).to_string(), "0.25");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// The zscore score matches a naive recomputation over the previous `window` values.
        #[test]
        fn zscore_matches_naive(
            window in 1usize..40,
            warmup in 0usize..50,
            min_std in prop_oneof![Just(0.0), 1e-3f64..10.0],
            offset in prop_oneof![Just(0.0), Just(1e9)],
            values in prop::collection::vec(prop_oneof![
                (-3i32..=3).prop_map(f64::from),
                -100.0f64..100.0,
            ], 1..200),
        ) {
            let spec = zscore(window, 4.0, warmup, min_std);
            let mut st = DetectorState::new(&spec, 0);
            let need = warmup.clamp(1, window);
            for (i, &raw) in values.iter().enumerate() {
                let x = raw + offset;
                let v = st.observe(&spec, i as Millis, x);
                let prev: Vec<f64> = values[i.saturating_sub(window)..i]
                    .iter()
                    .map(|r| r + offset)
                    .collect();
                if prev.len() < need {
                    prop_assert!(!v.anomalous);
                    prop_assert_eq!(v.score, 0.0);
                    continue;
                }
                let n = prev.len() as f64;
                let mean = offset + prev.iter().map(|p| p - offset).sum::<f64>() / n;
                let std = (prev.iter().map(|p| (p - mean).powi(2)).sum::<f64>() / n).sqrt();
                let denom = std.max(min_std);
                let want = if denom > 1e-6 {
                    ((x - mean) / denom).abs()
                } else {
                    // Degenerate spread: only check the sign of the outcome.
                    prop_assert!(v.score == 0.0 || v.score > 1e3 || (x - mean).abs() < 1e-6);
                    continue;
                };
                let tol = 1e-9 * want + 1e-15 * offset.max(1.0) / denom;
                prop_assert!((v.score - want).abs() <= tol, "{} vs {} at {}", v.score, want, i);
            }
        }
    }
}
