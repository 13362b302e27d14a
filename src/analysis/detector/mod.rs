//! Anomaly detectors, one file per kind (config, validation, state, `observe`, reason text), and the
//! one list (`kinds!` below) that turns them into the config, spec, state and reason enums.
//!
//! Adding a kind: write `detector/<kind>.rs` with `Config` (declared through `detector_config!`,
//! with `validate`), `Spec` (implementing [`Kind`]) and `Reason` (with `Display`), then add one
//! line to the `kinds!` list. Every match over the kinds is generated from that list, so a kind
//! cannot be half wired: a missing piece is a compile error. The list's order is the postcard
//! encoding of specs and states in snapshots: append new kinds at the end (see docs/ARCHITECTURE.md).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::config::Dur;
use crate::model::{Millis, Severity};

/// Largest score a verdict reports. A sample that differs from a reference with zero spread would
/// have an infinite z; it gets this score instead (and is anomalous unless the threshold is at
/// least this large).
pub const MAX_SCORE: f64 = 1e9;

/// Declares a kind's `Config`: the fields every kind shares (`name`, `severity`, `hold`) followed
/// by the kind's own. No `#[serde(flatten)]`, so `deny_unknown_fields` holds and a field that
/// does not apply to the kind is a located serde error.
macro_rules! detector_config {
    (
        $(#[$meta:meta])*
        pub struct Config {
            $( $(#[$fmeta:meta])* pub $field:ident : $ty:ty, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct Config {
            /// Name used in alerts; defaults to the type.
            #[serde(default)]
            pub name: Option<String>,
            #[serde(default)]
            pub severity: Option<crate::model::Severity>,
            /// Minimum time an alert stays firing before it may resolve.
            #[serde(default)]
            pub hold: Option<crate::config::Dur>,
            $( $(#[$fmeta])* pub $field: $ty, )*
        }

        impl Config {
            /// The fields every kind has.
            pub fn common(&self) -> super::Common<'_> {
                super::Common {
                    name: self.name.as_deref(),
                    severity: self.severity,
                    hold: self.hold,
                }
            }
        }
    };
}

/// The behaviour of one detector kind; `Self` is its validated settings (the spec).
pub trait Kind {
    /// Per-(device, metric, detector) state, persisted in snapshots (postcard).
    type State;
    /// Fresh state. `now` is the wall clock (unix ms); only silence uses it, as the arrival time
    /// it counts from until the first `seen`.
    fn start(&self, now: Millis) -> Self::State;
    /// Feeds one sample (`ts` is the sample's own timestamp) and returns the verdict for it.
    /// Must not allocate once the state has reached its size: this is the hot path.
    fn observe(&self, state: &mut Self::State, ts: Millis, value: f64) -> Verdict;
    /// Called periodically with the wall clock, also when no data arrives. Only time-driven
    /// kinds (silence) answer.
    fn tick(&self, _state: &mut Self::State, _now: Millis) -> Option<Verdict> {
        None
    }
    /// A sample arrived at wall-clock time `now`.
    fn seen(_state: &mut Self::State, _now: Millis) {}
    /// Whether a (restored) state can go on under these settings; a state that does not fit is
    /// replaced by a fresh one.
    fn fits(&self, _state: &Self::State) -> bool {
        true
    }
    /// The (mean, population std) the next sample would be judged against, for charts.
    fn baseline(_state: &Self::State) -> Option<(f64, f64)> {
        None
    }
}

/// The fields every detector config has, as written (unset: `None`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Common<'a> {
    pub name: Option<&'a str>,
    pub severity: Option<Severity>,
    pub hold: Option<Dur>,
}

/// A setting that fails a kind's validation; `field` is the key it is located at (`None`: the
/// detector's table as a whole, e.g. a required one of two fields is missing).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct Invalid {
    pub field: Option<&'static str>,
    pub message: String,
}

impl Invalid {
    fn at(field: &'static str, message: impl Into<String>) -> Self {
        Invalid {
            field: Some(field),
            message: message.into(),
        }
    }

    fn whole(message: impl Into<String>) -> Self {
        Invalid {
            field: None,
            message: message.into(),
        }
    }
}

/// The list of kinds. Generates `DetectorConfig` (the `type`-tagged config enum), `DetectorSpec`,
/// `DetectorState`, `Reason` and every dispatch over them.
macro_rules! kinds {
    ($( $(#[$doc:meta])* $variant:ident($module:ident) = $name:literal, )*) => {
        $( pub mod $module; )*

        /// One detector as written in the file: `type` selects the kind, whose `Config` takes the
        /// rest (unknown fields are rejected by serde, located).
        #[derive(Debug, Clone, PartialEq, Deserialize)]
        #[serde(tag = "type")]
        pub enum DetectorConfig {
            $( #[serde(rename = $name)] $variant($module::Config), )*
        }

        /// A validated detector configuration.
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        pub enum DetectorSpec {
            $( $(#[$doc])* $variant($module::Spec), )*
        }

        /// Per-(device, metric, detector) state. Size is O(window) for zscore and mad, fixed for
        /// seasonal (at most 168 bins) and ensemble (about 17 KiB), and O(1) otherwise.
        #[derive(Debug, Clone, Serialize, Deserialize)]
        pub enum DetectorState {
            $( $variant(<$module::Spec as Kind>::State), )*
        }

        /// Why a verdict came out as it did. Plain numbers, so building one costs nothing; format
        /// it with `Display` (e.g. `"|z| 7.10 > 6"`, `"value 41.2 > max 40"`) only when an alert
        /// transitions. Each kind's file owns its reason and its text.
        #[derive(Debug, Clone, Copy, PartialEq)]
        pub enum Reason {
            /// Still learning: `have` of `need` samples (`have` 0 for kinds that do not count).
            Warmup { have: u32, need: u32 },
            $( $variant($module::Reason), )*
        }

        $(
            impl From<$module::Reason> for Reason {
                fn from(r: $module::Reason) -> Self {
                    Reason::$variant(r)
                }
            }
        )*

        impl fmt::Display for Reason {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self {
                    Reason::Warmup { have, need } => {
                        write!(f, "warming up ({have}/{need} samples)")
                    }
                    $( Reason::$variant(r) => fmt::Display::fmt(r, f), )*
                }
            }
        }

        impl DetectorConfig {
            /// The `type` as written.
            pub fn kind(&self) -> &'static str {
                match self {
                    $( DetectorConfig::$variant(_) => $name, )*
                }
            }

            pub fn common(&self) -> Common<'_> {
                match self {
                    $( DetectorConfig::$variant(c) => c.common(), )*
                }
            }

            /// The kind's own checks and defaults.
            pub fn validate(&self) -> Result<DetectorSpec, Invalid> {
                match self {
                    $( DetectorConfig::$variant(c) => c.validate().map(DetectorSpec::$variant), )*
                }
            }
        }

        /// The fields a kind's config takes (`None`: no such kind), from serde's own field
        /// list, so error messages cannot drift from the structs.
        pub fn fields_of(kind: &str) -> Option<&'static [&'static str]> {
            match kind {
                $( $name => Some(fields::<$module::Config>()), )*
                _ => None,
            }
        }

        /// Every field some kind takes.
        fn any_kind_takes(field: &str) -> bool {
            [$( fields::<$module::Config>(), )*].iter().any(|f| f.contains(&field))
        }

        impl DetectorSpec {
            pub fn kind(&self) -> &'static str {
                match self {
                    $( DetectorSpec::$variant(_) => $name, )*
                }
            }
        }

        impl DetectorState {
            /// Fresh state for `spec`. `now` is the wall clock (unix ms); only silence uses it, as
            /// the arrival time it counts from until the first [`seen`](Self::seen). There is
            /// deliberately no constructor without a clock, so a silence detector cannot start
            /// out already silent.
            pub fn new(spec: &DetectorSpec, now: Millis) -> Self {
                match spec {
                    $( DetectorSpec::$variant(k) => DetectorState::$variant(k.start(now)), )*
                }
            }

            pub fn kind(&self) -> &'static str {
                match self {
                    $( DetectorState::$variant(_) => $name, )*
                }
            }

            /// Whether this state belongs to `spec` (check after restoring persisted state
            /// against a possibly changed config; `observe`/`tick` reset a mismatched state).
            pub fn matches(&self, spec: &DetectorSpec) -> bool {
                match (self, spec) {
                    $( (DetectorState::$variant(s), DetectorSpec::$variant(k)) => k.fits(s), )*
                    _ => false,
                }
            }

            /// Records that a sample arrived at wall-clock time `now`. Only silence uses it; call
            /// it for every arriving sample (it is a no-op for other kinds).
            pub fn seen(&mut self, now: Millis) {
                match self {
                    $( DetectorState::$variant(s) => <$module::Spec as Kind>::seen(s, now), )*
                }
            }

            /// Feeds one sample (`ts` is the sample's own timestamp) and returns the verdict for
            /// it. Static dispatch, no allocation once a window is full. Silence always answers
            /// "not anomalous" here; it is driven by [`seen`](Self::seen) and
            /// [`tick`](Self::tick). A state of the wrong kind for `spec` is first reset
            /// (a silence state then counts from `ts`).
            pub fn observe(&mut self, spec: &DetectorSpec, ts: Millis, value: f64) -> Verdict {
                match spec {
                    $(
                        DetectorSpec::$variant(k) => {
                            if let DetectorState::$variant(s) = self {
                                if k.fits(s) {
                                    return k.observe(s, ts, value);
                                }
                            }
                            let mut s = k.start(ts);
                            let v = k.observe(&mut s, ts, value);
                            *self = DetectorState::$variant(s);
                            v
                        }
                    )*
                }
            }

            /// Called periodically with the wall clock, also when no data arrives at all. Only
            /// silence returns `Some`: anomalous when `now - last_seen > after`.
            pub fn tick(&mut self, spec: &DetectorSpec, now: Millis) -> Option<Verdict> {
                match spec {
                    $(
                        DetectorSpec::$variant(k) => {
                            if let DetectorState::$variant(s) = self {
                                if k.fits(s) {
                                    return k.tick(s, now);
                                }
                            }
                            let mut s = k.start(now);
                            let v = k.tick(&mut s, now);
                            *self = DetectorState::$variant(s);
                            v
                        }
                    )*
                }
            }

            /// The (mean, population std) a zscore detector would judge the next sample against,
            /// once its window holds a sample; `None` for other kinds. Read-only, for charts.
            pub fn baseline(&self) -> Option<(f64, f64)> {
                match self {
                    $( DetectorState::$variant(s) => <$module::Spec as Kind>::baseline(s), )*
                }
            }
        }
    };
}

// The one list of kinds. Append new kinds at the end: the order is the snapshot encoding.
kinds! {
    /// `z = (x - mean) / max(std, min_std)` against the last `window` samples.
    Zscore(zscore) = "zscore",
    /// Fixed limits with hysteresis.
    Threshold(threshold) = "threshold",
    /// Rate of change between consecutive samples.
    Rate(rate) = "rate",
    /// The same value for too many samples or too long.
    Stuck(stuck) = "stuck",
    /// No data for too long (wall clock).
    Silence(silence) = "silence",
    /// Robust z-score against the window median.
    Mad(mad) = "mad",
    /// EWMA control chart.
    Ewma(ewma) = "ewma",
    /// Two-sided CUSUM.
    Cusum(cusum) = "cusum",
    /// Residual from a learned daily or weekly profile.
    Seasonal(seasonal) = "seasonal",
    /// Error of a Holt forecast.
    Predict(predict) = "predict",
    /// The default: six views combined by surprise.
    Ensemble(ensemble) = "ensemble",
    /// The rolling least-squares trend will cross a limit within a horizon.
    Forecast(forecast) = "forecast",
}

pub mod baseline;
pub mod novelty;

/// Why a field in a detector of kind `kind` was rejected by serde as unknown: it belongs to
/// another kind, or to none. `None` when `kind` is not a kind.
pub fn explain_unknown_field(kind: &str, field: &str) -> Option<String> {
    let fields = fields_of(kind)?;
    const COMMON: [&str; 3] = ["name", "severity", "hold"];
    let takes: Vec<&str> = fields
        .iter()
        .filter(|f| !COMMON.contains(f))
        .chain(COMMON.iter())
        .copied()
        .collect();
    let takes = takes.join(", ");
    Some(if any_kind_takes(field) {
        format!("`{field}` does not apply to a {kind} detector (it takes: {takes})")
    } else {
        format!("unknown field `{field}` for a {kind} detector (it takes: {takes})")
    })
}

/// The field list serde's derive hands to `deserialize_struct`, read by a deserializer that
/// records it and stops.
fn fields<T: serde::de::DeserializeOwned>() -> &'static [&'static str] {
    struct Fields(Option<&'static [&'static str]>);
    #[derive(Debug)]
    struct Stop;
    impl fmt::Display for Stop {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("field list read")
        }
    }
    impl std::error::Error for Stop {}
    impl serde::de::Error for Stop {
        fn custom<M: fmt::Display>(_: M) -> Self {
            Stop
        }
    }
    impl<'de> serde::Deserializer<'de> for &mut Fields {
        type Error = Stop;
        fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
            Err(Stop)
        }
        fn deserialize_struct<V: serde::de::Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Stop> {
            self.0 = Some(fields);
            Err(Stop)
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
            identifier ignored_any
        }
    }
    let mut d = Fields(None);
    let _ = T::deserialize(&mut d);
    d.0.unwrap_or(&[])
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
    fn quiet(reason: impl Into<Reason>) -> Self {
        Verdict {
            anomalous: false,
            score: 0.0,
            anomaly: 0.0,
            reason: reason.into(),
        }
    }

    /// A verdict from a measure compared with a threshold (`measure > threshold` fires).
    fn measured(measure: f64, threshold: f64, reason: impl Into<Reason>) -> Self {
        Verdict {
            anomalous: measure > threshold,
            score: measure,
            anomaly: anomaly(measure, threshold),
            reason: reason.into(),
        }
    }

    /// Quiet while a detector that reports no progress of its own is still learning.
    fn warming_up(need: usize) -> Self {
        Verdict::quiet(warming(0, need))
    }

    /// The human-readable reason. Allocates: call it on transitions, not per sample.
    pub fn message(&self) -> String {
        self.reason.to_string()
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

/// `>` or `<=`: how a measure compares with its threshold, for reason texts.
fn op(fired: bool) -> &'static str {
    if fired {
        ">"
    } else {
        "<="
    }
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

// Checks shared by the kinds' `validate`, with the same wording for every kind.

fn finite(x: f64, field: &'static str) -> Result<f64, Invalid> {
    if x.is_finite() {
        Ok(x)
    } else {
        Err(Invalid::at(field, "must be a finite number"))
    }
}

fn finite_opt(x: Option<f64>, field: &'static str) -> Result<Option<f64>, Invalid> {
    x.map(|x| finite(x, field)).transpose()
}

fn window_in(window: usize, max: usize) -> Result<usize, Invalid> {
    if !(2..=max).contains(&window) {
        return Err(Invalid::at(
            "window",
            format!("window must be between 2 and {max} samples"),
        ));
    }
    Ok(window)
}

fn positive(x: f64, field: &'static str) -> Result<f64, Invalid> {
    if x <= 0.0 {
        return Err(Invalid::at(
            field,
            format!("{field} must be greater than 0"),
        ));
    }
    Ok(x)
}

fn at_least_zero(x: f64, field: &'static str) -> Result<f64, Invalid> {
    if x < 0.0 {
        return Err(Invalid::at(field, format!("{field} must be >= 0")));
    }
    Ok(x)
}

fn warmup_upto(warmup: usize, max: usize) -> Result<usize, Invalid> {
    if warmup > max {
        return Err(Invalid::at(
            "warmup",
            format!("warmup must be at most {max}"),
        ));
    }
    Ok(warmup)
}

/// Warm-up of the window-based kinds (zscore, mad): between 2 and the window.
fn warmup_within(warmup: usize, window: usize) -> Result<usize, Invalid> {
    if warmup < 2 || warmup > window {
        return Err(Invalid::at(
            "warmup",
            format!("warmup must be between 2 and the window ({window})"),
        ));
    }
    Ok(warmup)
}

fn alpha_in(alpha: f64) -> Result<f64, Invalid> {
    if !(alpha > 0.0 && alpha <= 1.0) {
        return Err(Invalid::at("alpha", "alpha must be in (0, 1]"));
    }
    Ok(alpha)
}

/// Default statistics window of the window-based kinds (and of a metric).
pub const DEFAULT_WINDOW: usize = 256;

fn default_window() -> usize {
    DEFAULT_WINDOW
}

#[cfg(test)]
mod tests;
