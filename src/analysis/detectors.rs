//! Anomaly detectors (zscore, threshold, rate, stuck, silence, mad, ewma, cusum, seasonal, predict,
//! ensemble) as small serializable state machines, and the alert lifecycle over their verdicts.

use std::collections::VecDeque;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::control::{CusumState, EwmaState};
use super::ensemble::{EnsembleState, Feature};
use super::predict::PredictState;
use super::robust::MadState;
use super::seasonal::{Period, SeasonalState};
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
    /// Robust z-score against the last `window` samples: `(x - median) / (1.4826 · MAD)`;
    /// anomalous when `|z| > threshold` once `warmup` samples are in.
    Mad {
        window: usize,
        threshold: f64,
        warmup: usize,
    },
    /// EWMA control chart: the EWMA (weight `alpha`) of the samples, in units of its standard
    /// error, against a baseline mean/variance over about `window` samples; anomalous beyond
    /// `threshold`.
    Ewma {
        alpha: f64,
        window: usize,
        threshold: f64,
        warmup: usize,
    },
    /// Two-sided CUSUM of standardized samples with allowance `drift`; anomalous when a sum
    /// passes `threshold` (the sums then restart). Baseline over about `window` samples.
    Cusum {
        drift: f64,
        threshold: f64,
        window: usize,
        warmup: usize,
    },
    /// Residual from a learned daily or weekly profile (by sample timestamps), over its typical
    /// size; anomalous when `|z| > threshold`.
    Seasonal {
        period: Period,
        window: usize,
        threshold: f64,
        warmup: usize,
    },
    /// Error of a Holt (level + trend) forecast over the typical error; anomalous when
    /// `|z| > threshold`.
    Predict {
        alpha: f64,
        beta: f64,
        window: usize,
        threshold: f64,
        warmup: usize,
    },
    /// The default: six views of the series judged against their own history (about `window`
    /// samples) and combined; anomalous when a new event's surprise (decimal digits of
    /// improbability) reaches `threshold`.
    Ensemble {
        window: usize,
        threshold: f64,
        warmup: usize,
    },
}

impl DetectorSpec {
    pub fn kind(&self) -> &'static str {
        match self {
            DetectorSpec::Zscore { .. } => "zscore",
            DetectorSpec::Threshold { .. } => "threshold",
            DetectorSpec::Rate { .. } => "rate",
            DetectorSpec::Stuck { .. } => "stuck",
            DetectorSpec::Silence { .. } => "silence",
            DetectorSpec::Mad { .. } => "mad",
            DetectorSpec::Ewma { .. } => "ewma",
            DetectorSpec::Cusum { .. } => "cusum",
            DetectorSpec::Seasonal { .. } => "seasonal",
            DetectorSpec::Predict { .. } => "predict",
            DetectorSpec::Ensemble { .. } => "ensemble",
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
    /// Robust z (signed, clamped) against the window median, and the threshold.
    RobustZ {
        z: f64,
        median: f64,
        threshold: f64,
    },
    /// EWMA chart: the EWMA value, the baseline mean, the statistic (signed) and the threshold.
    Ewma {
        ewma: f64,
        mean: f64,
        z: f64,
        threshold: f64,
    },
    /// CUSUM: the larger sum, its direction, the threshold.
    Cusum {
        sum: f64,
        up: bool,
        threshold: f64,
    },
    /// Seasonal: the value expected at this time of the day (week), the residual z, threshold.
    Seasonal {
        value: f64,
        expected: f64,
        z: f64,
        threshold: f64,
    },
    /// Predict: the forecast, the error z, threshold.
    Forecast {
        value: f64,
        forecast: f64,
        z: f64,
        threshold: f64,
    },
    /// Ensemble: combined surprise, whether it starts a new event, the strongest view.
    Ensemble {
        surprise: f64,
        new_event: bool,
        feature: Feature,
        up: bool,
        threshold: f64,
    },
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
            Reason::RobustZ {
                z,
                median,
                threshold,
            } => {
                let op = if z.abs() > threshold { ">" } else { "<=" };
                write!(
                    f,
                    "robust |z| {:.2} {op} {threshold} (median {})",
                    z.abs(),
                    Short(median)
                )
            }
            Reason::Ewma {
                ewma,
                mean,
                z,
                threshold,
            } => {
                let op = if z.abs() > threshold { ">" } else { "<=" };
                write!(
                    f,
                    "EWMA {} vs baseline {}: |z| {:.2} {op} {threshold}",
                    Short(ewma),
                    Short(mean),
                    z.abs()
                )
            }
            Reason::Cusum { sum, up, threshold } => {
                let op = if sum > threshold { ">" } else { "<=" };
                let dir = if up { "upward" } else { "downward" };
                write!(f, "CUSUM {dir} {:.2} {op} {threshold}", sum)
            }
            Reason::Seasonal {
                value,
                expected,
                z,
                threshold,
            } => {
                let op = if z.abs() > threshold { ">" } else { "<=" };
                write!(
                    f,
                    "value {value} vs {} usual at this time: |z| {:.2} {op} {threshold}",
                    Short(expected),
                    z.abs()
                )
            }
            Reason::Forecast {
                value,
                forecast,
                z,
                threshold,
            } => {
                let op = if z.abs() > threshold { ">" } else { "<=" };
                write!(
                    f,
                    "value {value} vs forecast {}: |z| {:.2} {op} {threshold}",
                    Short(forecast),
                    z.abs()
                )
            }
            Reason::Ensemble {
                surprise,
                new_event,
                feature,
                up,
                threshold,
            } => {
                let what = feature.describe(up);
                if new_event {
                    let op = if surprise >= threshold { ">=" } else { "<" };
                    write!(f, "{what}: surprise {:.2} {op} {threshold}", surprise)
                } else {
                    write!(
                        f,
                        "{what}: surprise {:.2}, part of a reported event",
                        surprise
                    )
                }
            }
        }
    }
}

/// A detector's judgement of one sample (or one tick).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Verdict {
    pub anomalous: bool,
    /// Kind-specific magnitude: |z|, distance beyond the limit, rate per second, run length,
    /// seconds of silence, CUSUM sum, surprise. Always finite and >= 0.
    pub score: f64,
    /// The same judgement on one scale for every kind, in [0, 1]: 0.5 exactly at the
    /// detector's firing threshold, towards 1 the further beyond it (see [`anomaly`]).
    pub anomaly: f64,
    pub reason: Reason,
}

/// Maps a non-negative measure onto [0, 1) with 0.5 at `threshold`: `m / (m + threshold)`.
pub fn anomaly(measure: f64, threshold: f64) -> f64 {
    let m = if measure.is_nan() {
        0.0
    } else {
        measure.max(0.0)
    };
    if threshold <= 0.0 {
        return if m > 0.0 { 1.0 } else { 0.0 };
    }
    if m.is_infinite() {
        return 1.0;
    }
    (m / (m + threshold)).clamp(0.0, 1.0)
}

impl Verdict {
    fn quiet(reason: Reason) -> Self {
        Verdict {
            anomalous: false,
            score: 0.0,
            anomaly: 0.0,
            reason,
        }
    }

    /// A verdict from a measure compared with a threshold (`measure > threshold` fires).
    fn measured(measure: f64, threshold: f64, reason: Reason) -> Self {
        Verdict {
            anomalous: measure > threshold,
            score: measure,
            anomaly: anomaly(measure, threshold),
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

/// Per-(device, metric, detector) state. Size is O(window) for zscore and mad, fixed for seasonal
/// (at most 168 bins) and ensemble (about 20 KiB), and O(1) otherwise.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum DetectorState {
    Zscore(ZscoreState),
    Threshold(ThresholdState),
    Rate(RateState),
    Stuck(StuckState),
    Silence(SilenceState),
    Mad(MadState),
    Ewma(EwmaState),
    Cusum(CusumState),
    Seasonal(SeasonalState),
    Predict(PredictState),
    Ensemble(Box<EnsembleState>),
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
            DetectorSpec::Mad { .. } => DetectorState::Mad(MadState::default()),
            DetectorSpec::Ewma { .. } => DetectorState::Ewma(EwmaState::default()),
            DetectorSpec::Cusum { .. } => DetectorState::Cusum(CusumState::default()),
            DetectorSpec::Seasonal { period, .. } => {
                DetectorState::Seasonal(SeasonalState::new(*period))
            }
            DetectorSpec::Predict { .. } => DetectorState::Predict(PredictState::default()),
            DetectorSpec::Ensemble { window, .. } => {
                DetectorState::Ensemble(Box::new(EnsembleState::new(*window)))
            }
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            DetectorState::Zscore(_) => "zscore",
            DetectorState::Threshold(_) => "threshold",
            DetectorState::Rate(_) => "rate",
            DetectorState::Stuck(_) => "stuck",
            DetectorState::Silence(_) => "silence",
            DetectorState::Mad(_) => "mad",
            DetectorState::Ewma(_) => "ewma",
            DetectorState::Cusum(_) => "cusum",
            DetectorState::Seasonal(_) => "seasonal",
            DetectorState::Predict(_) => "predict",
            DetectorState::Ensemble(_) => "ensemble",
        }
    }

    /// Whether this state belongs to a spec of the same kind (check after restoring persisted
    /// state against a possibly changed config; `observe`/`tick` reset a mismatched state).
    pub fn matches(&self, spec: &DetectorSpec) -> bool {
        match (self, spec) {
            (DetectorState::Seasonal(s), DetectorSpec::Seasonal { period, .. }) => {
                s.period() == *period
            }
            _ => self.kind() == spec.kind(),
        }
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
            (
                DetectorState::Mad(s),
                &DetectorSpec::Mad {
                    window,
                    threshold,
                    warmup,
                },
            ) => match s.observe(window, warmup, value) {
                Some(o) => Verdict::measured(
                    o.z.abs(),
                    threshold,
                    Reason::RobustZ {
                        z: o.z,
                        median: o.median,
                        threshold,
                    },
                ),
                None => Verdict::quiet(warming(s.len(), warmup.clamp(1, window.max(1)))),
            },
            (
                DetectorState::Ewma(s),
                &DetectorSpec::Ewma {
                    alpha,
                    window,
                    threshold,
                    warmup,
                },
            ) => match s.observe(alpha, window, warmup, value) {
                Some(o) => Verdict::measured(
                    o.stat.abs(),
                    threshold,
                    Reason::Ewma {
                        ewma: o.level,
                        mean: o.mean,
                        z: o.stat,
                        threshold,
                    },
                ),
                None => Verdict::warming_up(warmup),
            },
            (
                DetectorState::Cusum(s),
                &DetectorSpec::Cusum {
                    drift,
                    threshold,
                    window,
                    warmup,
                },
            ) => match s.observe(drift, threshold, window, warmup, value) {
                Some(o) => Verdict::measured(
                    o.stat,
                    threshold,
                    Reason::Cusum {
                        sum: o.stat,
                        up: o.up,
                        threshold,
                    },
                ),
                None => Verdict::warming_up(warmup),
            },
            (
                DetectorState::Seasonal(s),
                &DetectorSpec::Seasonal {
                    window,
                    threshold,
                    warmup,
                    ..
                },
            ) => match s.observe(window, warmup, ts, value) {
                Some(o) => Verdict::measured(
                    o.z.abs(),
                    threshold,
                    Reason::Seasonal {
                        value,
                        expected: o.expected,
                        z: o.z,
                        threshold,
                    },
                ),
                None => Verdict::warming_up(warmup),
            },
            (
                DetectorState::Predict(s),
                &DetectorSpec::Predict {
                    alpha,
                    beta,
                    window,
                    threshold,
                    warmup,
                },
            ) => match s.observe(alpha, beta, window, warmup, value) {
                Some(o) => Verdict::measured(
                    o.z.abs(),
                    threshold,
                    Reason::Forecast {
                        value,
                        forecast: o.forecast,
                        z: o.z,
                        threshold,
                    },
                ),
                None => Verdict::warming_up(warmup),
            },
            (
                DetectorState::Ensemble(s),
                &DetectorSpec::Ensemble {
                    threshold, warmup, ..
                },
            ) => {
                let o = s.observe(warmup, ts, value);
                if s.seen() < warmup as u64 {
                    return Verdict::quiet(warming(s.seen() as usize, warmup));
                }
                Verdict {
                    anomalous: o.reported >= threshold,
                    score: o.surprise,
                    anomaly: anomaly(o.reported, threshold),
                    reason: Reason::Ensemble {
                        surprise: o.surprise,
                        new_event: o.reported > 0.0,
                        feature: o.feature,
                        up: o.up,
                        threshold,
                    },
                }
            }
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
                    anomaly: anomaly(silent_ms as f64, after_ms as f64),
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

impl Verdict {
    /// Quiet while a detector that reports no progress of its own is still learning.
    fn warming_up(need: usize) -> Self {
        Verdict::quiet(Reason::Warmup {
            have: 0,
            need: to_u32(need),
        })
    }
}

fn to_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn warming(have: usize, need: usize) -> Reason {
    Reason::Warmup {
        have: to_u32(have),
        need: to_u32(need),
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
                Verdict::measured(z.abs(), threshold, Reason::Zscore { z, threshold })
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
            let excess = over.max(under);
            let limit = if over > 0.0 { max } else { min }.unwrap_or(0.0);
            let scale = hysteresis.max(0.01 * limit.abs()).max(1e-9);
            return Verdict {
                anomalous: true,
                score: excess,
                anomaly: 0.5 + 0.5 * anomaly(excess, scale),
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
                    anomaly: 0.5,
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
        Verdict::measured(
            per_sec,
            max_per_sec,
            Reason::Rate {
                per_sec,
                max_per_sec,
            },
        )
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
        // 0 for a fresh value, 0.5 when the run reaches `count` (or lasts `duration`).
        let by_len = count.map_or(0.0, |c| {
            anomaly(f64::from(run.len - 1), f64::from(c.saturating_sub(1)))
        });
        let by_span = duration_ms.map_or(0.0, |d| anomaly(span_ms as f64, d as f64));
        Verdict {
            anomalous: by_count || by_duration,
            score: f64::from(run.len),
            anomaly: by_len.max(by_span),
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
            DetectorSpec::Mad {
                window: 32,
                threshold: 2.0,
                warmup: 8,
            },
            DetectorSpec::Ewma {
                alpha: 0.3,
                window: 64,
                threshold: 1.5,
                warmup: 8,
            },
            DetectorSpec::Cusum {
                drift: 0.1,
                threshold: 2.0,
                window: 64,
                warmup: 8,
            },
            DetectorSpec::Seasonal {
                period: Period::Day,
                window: 64,
                threshold: 1.5,
                warmup: 8,
            },
            DetectorSpec::Predict {
                alpha: 0.5,
                beta: 0.1,
                window: 64,
                threshold: 2.0,
                warmup: 8,
            },
            DetectorSpec::Ensemble {
                window: 512,
                threshold: 1.0,
                warmup: 16,
            },
        ];
        for spec in &specs {
            assert_eq!(&roundtrip(spec), spec);
            let mut rng = StdRng::seed_from_u64(11);
            let mut a = DetectorState::new(spec, 0);
            let mut la = Lifecycle::new();
            let mut ts = 0;
            // Seasonal needs days to learn: about five minutes between its samples.
            let step = if spec.kind() == "seasonal" { 300 } else { 1 };
            let mut next = |rng: &mut StdRng| -> (Millis, f64, bool) {
                ts += rng.gen_range(1..2_000) * step;
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

    /// Indices of anomalous verdicts for (ts, value) samples.
    fn alarms_at(spec: &DetectorSpec, samples: &[(Millis, f64)]) -> Vec<usize> {
        let mut st = DetectorState::new(spec, 0);
        samples
            .iter()
            .enumerate()
            .filter(|&(_, &(ts, v))| st.observe(spec, ts, v).anomalous)
            .map(|(i, _)| i)
            .collect()
    }

    /// The statistical detectors with their default settings (as the config layer builds them).
    fn statistical() -> Vec<DetectorSpec> {
        vec![
            zscore(256, 5.0, 32, 0.0),
            DetectorSpec::Mad {
                window: 256,
                threshold: 5.0,
                warmup: 32,
            },
            DetectorSpec::Ewma {
                alpha: 0.1,
                window: 256,
                threshold: 5.0,
                warmup: 64,
            },
            DetectorSpec::Cusum {
                drift: 0.5,
                threshold: 10.0,
                window: 256,
                warmup: 64,
            },
            DetectorSpec::Predict {
                alpha: 0.5,
                beta: 0.1,
                window: 128,
                threshold: 6.0,
                warmup: 32,
            },
            DetectorSpec::Ensemble {
                window: 6144,
                threshold: 5.0,
                warmup: 100,
            },
        ]
    }

    const MINUTE: Millis = 60_000;

    fn noisy(seed: u64, n: usize) -> Vec<(Millis, f64)> {
        gaussian(seed, n, 20.0, 2.0)
            .into_iter()
            .enumerate()
            .map(|(i, v)| (i as Millis * MINUTE, v))
            .collect()
    }

    #[test]
    fn every_statistical_detector_is_quiet_on_clean_noise() {
        for seed in [21, 22] {
            let clean = noisy(seed, 8_000);
            for spec in statistical() {
                assert_eq!(alarms_at(&spec, &clean), Vec::<usize>::new(), "{spec:?}");
            }
        }
    }

    #[test]
    fn spike_is_caught_at_the_sample_by_point_detectors() {
        let mut series = noisy(23, 8_000);
        series[6_000].1 += 40.0; // 20 sigma
        for spec in statistical() {
            if matches!(spec, DetectorSpec::Ewma { .. } | DetectorSpec::Cusum { .. }) {
                continue; // made for sustained shifts (below)
            }
            let a = alarms_at(&spec, &series);
            assert_eq!(a.first(), Some(&6_000), "{spec:?}: {a:?}");
        }
    }

    #[test]
    fn small_sustained_shift_is_caught_by_charts_and_ensemble() {
        // 1.5 sigma from sample 6000 on: under any per-sample threshold, but it accumulates.
        let mut series = noisy(24, 8_000);
        for s in &mut series[6_000..] {
            s.1 += 3.0;
        }
        for spec in statistical() {
            let a = alarms_at(&spec, &series);
            match spec {
                DetectorSpec::Ewma { .. } | DetectorSpec::Cusum { .. } => {
                    let first = a.first().copied();
                    assert!(
                        first.is_some_and(|i| (6_000..6_050).contains(&i)),
                        "{spec:?}: {a:?}"
                    );
                }
                DetectorSpec::Ensemble { .. } => {
                    assert!(
                        a.iter().any(|i| (6_000..6_200).contains(i)),
                        "{spec:?}: {a:?}"
                    );
                }
                _ => {}
            }
        }
    }

    /// Five-minute samples over `days`, high (80) from 08:00 to 18:00 UTC and low (20) otherwise,
    /// with noise; on day `skip` the rise does not happen.
    fn daily(days: i64, skip: i64) -> Vec<(Millis, f64)> {
        let step = 5 * MINUTE;
        let day = 24 * 60 * MINUTE;
        let t0 = 1_700_000_000_000 - 1_700_000_000_000 % day;
        let noise = gaussian(25, (days * day / step) as usize, 0.0, 1.0);
        noise
            .into_iter()
            .enumerate()
            .map(|(i, e)| {
                let ts = t0 + i as Millis * step;
                let h = (ts - t0) % day / (60 * MINUTE);
                let high = (8..18).contains(&h) && (ts - t0) / day != skip;
                (ts, if high { 80.0 } else { 20.0 } + e)
            })
            .collect()
    }

    #[test]
    fn seasonal_detectors_learn_the_day_and_catch_a_missing_rise() {
        let specs = [
            DetectorSpec::Seasonal {
                period: Period::Day,
                window: 256,
                threshold: 6.0,
                warmup: 32,
            },
            DetectorSpec::Ensemble {
                window: 6144,
                threshold: 5.0,
                warmup: 100,
            },
        ];
        let per_day = 288;
        for spec in &specs {
            // The daily steps are normal: quiet once learned (the ensemble needs the first day
            // to see a step at all).
            let clean = daily(10, -1);
            let a = alarms_at(spec, &clean);
            assert!(a.iter().all(|&i| i < per_day), "{spec:?}: {a:?}");
            // Day 8 stays low: caught within an hour of 08:00.
            let series = daily(10, 8);
            let a = alarms_at(spec, &series);
            let rise = 8 * per_day + 8 * 12;
            assert!(
                a.iter().any(|&i| (rise..rise + 12).contains(&i)),
                "{spec:?}: {a:?}"
            );
            assert!(
                a.iter().all(|&i| i < per_day || i >= rise),
                "{spec:?}: {a:?}"
            );
        }
    }

    #[test]
    fn anomaly_is_one_half_at_the_threshold() {
        assert_eq!(anomaly(5.0, 5.0), 0.5);
        assert_eq!(anomaly(0.0, 5.0), 0.0);
        assert!(anomaly(50.0, 5.0) > 0.9 && anomaly(50.0, 5.0) < 1.0);
        assert_eq!(anomaly(f64::INFINITY, 5.0), 1.0);
        assert_eq!(anomaly(f64::NAN, 5.0), 0.0);
        assert_eq!(anomaly(-3.0, 5.0), 0.0);
        // Every kind: anomalous exactly when anomaly >= 0.5 on a series with a spike.
        let mut series = noisy(26, 3_000);
        series[2_500].1 += 60.0;
        let mut specs = statistical();
        specs.push(DetectorSpec::Threshold {
            min: None,
            max: Some(40.0),
            hysteresis: 1.0,
        });
        specs.push(DetectorSpec::Rate { max_per_sec: 0.5 });
        for spec in &specs {
            let mut st = DetectorState::new(spec, 0);
            let mut fired = 0;
            for &(ts, v) in &series {
                let verdict = st.observe(spec, ts, v);
                assert!(
                    (0.0..=1.0).contains(&verdict.anomaly),
                    "{spec:?} {verdict:?}"
                );
                if verdict.anomalous {
                    fired += 1;
                    assert!(verdict.anomaly >= 0.5, "{spec:?} {verdict:?}");
                } else {
                    assert!(verdict.anomaly <= 0.5, "{spec:?} {verdict:?}");
                }
            }
            assert!(fired > 0, "{spec:?}");
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
