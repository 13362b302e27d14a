//! The `forecast` detector: a rolling least-squares trend of the metric, anomalous while its line
//! will cross a limit (`above`/`below`) within `horizon`; the reason says when ("in ~2 h 10 min").

use std::fmt;

use serde::{Deserialize, Serialize};

use super::{Invalid, Kind, Verdict, MAX_SCORE};
use crate::analysis::trend::{RollingTrend, Trend};
use crate::config::Dur;
use crate::model::Millis;

fn default_window() -> usize {
    256
}
fn default_min_r2() -> f64 {
    0.5
}
fn default_min_samples() -> usize {
    32
}

/// Largest trend window (samples).
pub const MAX_WINDOW: usize = 100_000;

detector_config! {
    /// `{ type = "forecast", above, below, horizon, window, span, min_r2, min_samples }`.
    pub struct Config {
        /// Fires when the trend will rise to this value within the horizon.
        #[serde(default)]
        pub above: Option<f64>,
        /// Fires when the trend will fall to this value within the horizon.
        #[serde(default)]
        pub below: Option<f64>,
        /// How far ahead the trend is followed.
        pub horizon: Dur,
        /// Samples the trend is fitted to.
        #[serde(default = "default_window")]
        pub window: usize,
        /// When set, only samples within this time of the newest.
        #[serde(default)]
        pub span: Option<Dur>,
        /// A trend explaining less of the variance than this (R²) is not followed.
        #[serde(default = "default_min_r2")]
        pub min_r2: f64,
        /// Samples in the window before the trend is followed.
        #[serde(default = "default_min_samples")]
        pub min_samples: usize,
    }
}

impl Config {
    pub fn validate(&self) -> Result<Spec, Invalid> {
        let above = super::finite_opt(self.above, "above")?;
        let below = super::finite_opt(self.below, "below")?;
        if above.is_none() && below.is_none() {
            return Err(Invalid::whole(
                "a forecast detector needs a limit: `above`, `below` or both",
            ));
        }
        if let (Some(a), Some(b)) = (above, below) {
            if b >= a {
                return Err(Invalid::at("below", "below must be less than above"));
            }
        }
        let horizon_ms = self.horizon.as_ms();
        if horizon_ms <= 0 {
            return Err(Invalid::at("horizon", "horizon must be greater than 0"));
        }
        let window = super::window_in(self.window, MAX_WINDOW)?;
        let span_ms = self.span.map(|s| s.as_ms());
        if span_ms.is_some_and(|s| s <= 0) {
            return Err(Invalid::at("span", "span must be greater than 0"));
        }
        super::finite(self.min_r2, "min_r2")?;
        if !(0.0..=1.0).contains(&self.min_r2) {
            return Err(Invalid::at("min_r2", "min_r2 must be in [0, 1]"));
        }
        if self.min_samples < 3 || self.min_samples > window {
            return Err(Invalid::at(
                "min_samples",
                format!("min_samples must be between 3 and the window ({window})"),
            ));
        }
        Ok(Spec {
            above,
            below,
            horizon_ms,
            window,
            span_ms,
            min_r2: self.min_r2,
            min_samples: self.min_samples,
        })
    }
}

/// Validated settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Spec {
    pub above: Option<f64>,
    pub below: Option<f64>,
    pub horizon_ms: Millis,
    pub window: usize,
    pub span_ms: Option<Millis>,
    pub min_r2: f64,
    pub min_samples: usize,
}

/// Where the trend is heading.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Outlook {
    /// It reaches `limit` in `eta_s` seconds (0: at or past it and still going).
    Crosses { limit: f64, eta_s: f64 },
    /// It reaches no limit (flat, or heading away).
    Clear,
    /// R² below `min_r2`: too weak a trend to follow.
    Weak { min_r2: f64 },
}

/// The outlook, the fitted line (value now, slope per second, R²) and the horizon.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reason {
    pub outlook: Outlook,
    pub level: f64,
    pub slope: f64,
    pub r2: f64,
    pub horizon_s: f64,
}

/// A duration in seconds for people: "~45 s", "~12 min", "~2 h 10 min", "~3 d 4 h".
pub struct Human(pub f64);

impl fmt::Display for Human {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0.max(0.0);
        if !s.is_finite() || s >= 1e9 {
            return f.write_str("never");
        }
        if s < 59.5 {
            return write!(f, "~{} s", s.round() as u64);
        }
        let min = (s / 60.0).round() as u64;
        if min < 60 {
            return write!(f, "~{min} min");
        }
        if min < 24 * 60 {
            let (h, m) = (min / 60, min % 60);
            return if m == 0 {
                write!(f, "~{h} h")
            } else {
                write!(f, "~{h} h {m} min")
            };
        }
        let h = (s / 3600.0).round() as u64;
        let (d, h) = (h / 24, h % 24);
        if h == 0 {
            write!(f, "~{d} d")
        } else {
            write!(f, "~{d} d {h} h")
        }
    }
}

/// A rate per second as "+0.52/min", in the unit (s, min, h, d) where it reads best.
struct Rate(f64);

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = self.0;
        let (v, unit) = [(1.0, "s"), (60.0, "min"), (3600.0, "h"), (86_400.0, "d")]
            .into_iter()
            .map(|(k, u)| (r * k, u))
            .find(|(v, _)| v.abs() >= 1.0)
            .unwrap_or((r * 86_400.0, "d"));
        write!(f, "{}{}/{unit}", if v >= 0.0 { "+" } else { "" }, Sig(v))
    }
}

/// Three significant digits, without trailing zeros.
struct Sig(f64);

impl fmt::Display for Sig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let x = self.0;
        if x == 0.0 || !x.is_finite() {
            return write!(f, "{}", if x.is_finite() { 0.0 } else { x });
        }
        let digits = (2 - x.abs().log10().floor() as i32).clamp(0, 12) as usize;
        // Display only (alert transitions), so the small allocation is fine.
        let s = format!("{x:.digits$}");
        let s = if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.')
        } else {
            &s
        };
        f.write_str(s)
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let line = format_args!(
            "trend {}, {}, R² {:.2}",
            Sig(self.level),
            Rate(self.slope),
            self.r2
        );
        match self.outlook {
            Outlook::Crosses { limit, eta_s } if eta_s <= 0.0 => {
                write!(f, "at or past {} and still going ({line})", Sig(limit))
            }
            Outlook::Crosses { limit, eta_s } if eta_s < self.horizon_s => {
                write!(f, "crosses {} in {} ({line})", Sig(limit), Human(eta_s))
            }
            Outlook::Crosses { limit, eta_s } => write!(
                f,
                "crosses {} in {}, beyond the {} horizon ({line})",
                Sig(limit),
                Human(eta_s),
                Human(self.horizon_s)
            ),
            Outlook::Clear => write!(f, "no limit ahead ({line})"),
            Outlook::Weak { min_r2 } => {
                write!(f, "no clear trend: R² {:.2} < {min_r2} ({line})", self.r2)
            }
        }
    }
}

impl Spec {
    /// The nearest crossing of a limit by the line, in seconds from its newest sample.
    pub fn crossing(&self, t: &Trend) -> Option<(f64, f64)> {
        let up = self
            .above
            .filter(|_| t.slope > 0.0)
            .map(|l| (l, ((l - t.level) / t.slope).max(0.0)));
        let down = self
            .below
            .filter(|_| t.slope < 0.0)
            .map(|l| (l, ((t.level - l) / -t.slope).max(0.0)));
        // At most one applies: the slope has one sign.
        up.or(down).filter(|(_, eta)| eta.is_finite())
    }

    /// The verdict on a fitted line.
    pub fn judge(&self, t: &Trend) -> Verdict {
        let horizon_s = self.horizon_ms as f64 / 1000.0;
        let reason = |outlook| Reason {
            outlook,
            level: t.level,
            slope: t.slope,
            r2: t.r2,
            horizon_s,
        };
        if t.r2 < self.min_r2 {
            return Verdict::quiet(reason(Outlook::Weak {
                min_r2: self.min_r2,
            }));
        }
        match self.crossing(t) {
            Some((limit, eta_s)) => {
                // horizon / eta: 1 at the horizon, growing as the crossing nears.
                let measure = if eta_s > 0.0 {
                    (horizon_s / eta_s).min(MAX_SCORE)
                } else {
                    MAX_SCORE
                };
                Verdict {
                    anomalous: eta_s < horizon_s,
                    score: eta_s.min(MAX_SCORE),
                    anomaly: super::anomaly(measure, 1.0),
                    reason: reason(Outlook::Crosses { limit, eta_s }).into(),
                }
            }
            None => Verdict::quiet(reason(Outlook::Clear)),
        }
    }
}

/// A forecast detector's line and crossing, for charts (`GET /api/devices/{id}/series`).
#[derive(Debug, Clone, Serialize)]
pub struct ForecastView {
    pub detector: String,
    pub above: Option<f64>,
    pub below: Option<f64>,
    pub horizon_ms: Millis,
    /// The fitted line over the detector's window (`None` below two samples).
    pub trend: Option<Trend>,
    /// The trend is followed: enough samples and R² at least `min_r2`.
    pub followed: bool,
    /// The limit the followed trend heads to, in how long from its newest sample, and when.
    pub limit: Option<f64>,
    pub eta_ms: Option<Millis>,
    pub crossing_ts: Option<Millis>,
}

impl Spec {
    /// The view of `state` under these settings.
    pub fn view(&self, name: &str, state: &RollingTrend) -> ForecastView {
        let trend = state.trend();
        let followed = state.len() >= self.min_samples && trend.is_some_and(|t| t.r2 >= self.min_r2);
        let cross = trend
            .filter(|_| followed)
            .and_then(|t| self.crossing(&t).map(|(l, eta)| (t, l, eta)))
            .filter(|(_, _, eta)| *eta < 1e9);
        let eta_ms = cross.map(|(_, _, eta)| (eta * 1000.0).round() as Millis);
        ForecastView {
            detector: name.to_string(),
            above: self.above,
            below: self.below,
            horizon_ms: self.horizon_ms,
            trend,
            followed,
            limit: cross.map(|c| c.1),
            eta_ms,
            crossing_ts: cross.zip(eta_ms).map(|((t, _, _), e)| t.at_ms.saturating_add(e)),
        }
    }
}

impl Kind for Spec {
    type State = RollingTrend;

    fn start(&self, _now: Millis) -> RollingTrend {
        RollingTrend::new(self.window, self.span_ms)
    }

    fn observe(&self, s: &mut RollingTrend, ts: Millis, value: f64) -> Verdict {
        s.push(ts, value);
        if s.len() < self.min_samples {
            return Verdict::quiet(super::warming(s.len(), self.min_samples));
        }
        match s.trend() {
            Some(t) => self.judge(&t),
            None => Verdict::quiet(super::warming(s.len(), self.min_samples)),
        }
    }

    fn fits(&self, s: &RollingTrend) -> bool {
        s.fits(self.window, self.span_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::gaussian;
    use super::super::*;
    use super::{Human, Outlook};

    fn spec(toml_body: &str) -> DetectorSpec {
        let c: DetectorConfig =
            toml::from_str(&format!("type = \"forecast\"\n{toml_body}")).expect("config");
        c.validate().expect("valid")
    }

    #[test]
    fn human_durations() {
        let h = |s: f64| Human(s).to_string();
        assert_eq!(h(7800.0), "~2 h 10 min");
        assert_eq!(h(7200.0), "~2 h");
        assert_eq!(h(44.6), "~45 s");
        assert_eq!(h(59.7), "~1 min");
        assert_eq!(h(725.0), "~12 min");
        assert_eq!(h(3.0 * 86_400.0 + 4.0 * 3600.0), "~3 d 4 h");
        assert_eq!(h(f64::INFINITY), "never");
    }

    /// A noisy ramp from 50 rising 1 per minute, one sample every 10 s: it reaches 95 at 45 min.
    /// Fed until 20 min, the forecast fires with an ETA within ±10 % of the true 25 min.
    #[test]
    fn ramp_fires_with_eta_within_ten_percent() {
        let sp = spec("above = 95.0\nhorizon = \"30m\"\nwindow = 120");
        let noise = gaussian(7, 1000, 0.0, 0.5);
        let mut st = DetectorState::new(&sp, 0);
        let t0: Millis = 1_790_000_000_000;
        let mut first_fire = None;
        let mut last = None;
        for (i, e) in noise.iter().enumerate().take(121) {
            let ts = t0 + i as Millis * 10_000;
            let x = 50.0 + i as f64 / 6.0 + e;
            let v = st.observe(&sp, ts, x);
            if v.anomalous && first_fire.is_none() {
                first_fire = Some(i);
            }
            last = Some((ts, v));
        }
        let (ts, v) = last.unwrap();
        assert!(v.anomalous, "{v:?}");
        let truth = (t0 + 45 * 60_000 - ts) as f64 / 1000.0;
        assert!((v.score - truth).abs() <= 0.1 * truth, "eta {} vs {truth}", v.score);
        let Reason::Forecast(r) = v.reason else {
            panic!("{v:?}")
        };
        assert!(matches!(r.outlook, Outlook::Crosses { limit, .. } if limit == 95.0));
        let msg = v.message();
        assert!(msg.starts_with("crosses 95 in ~2"), "{msg}"); // ~25 min
        assert!(msg.contains("/min") && msg.contains("R² 0.9"), "{msg}");
        // It fired once the crossing came within the 30 min horizon (at 15 min), not long before.
        let f = first_fire.unwrap();
        assert!((80..=100).contains(&f), "first fire at sample {f}");
    }

    #[test]
    fn flat_noisy_signal_stays_quiet() {
        let sp = spec("above = 95.0\nbelow = 5.0\nhorizon = \"6h\"");
        let mut st = DetectorState::new(&sp, 0);
        for (i, x) in gaussian(11, 20_000, 50.0, 5.0).into_iter().enumerate() {
            let v = st.observe(&sp, i as Millis * 1000, x);
            assert!(!v.anomalous, "sample {i}: {}", v.message());
        }
    }

    #[test]
    fn falling_towards_below_and_resolving() {
        let sp = spec("below = 10.0\nhorizon = \"10m\"\nwindow = 60\nmin_samples = 10");
        let mut st = DetectorState::new(&sp, 0);
        // Falls 1 per 10 s from 100: reaches 10 at 900 s.
        let mut fired_at = None;
        for i in 0..60 {
            let v = st.observe(&sp, i * 10_000, 100.0 - i as f64);
            if v.anomalous && fired_at.is_none() {
                fired_at = Some(i);
            }
        }
        // Horizon 600 s: fires from t = 300 s (sample 30).
        assert_eq!(fired_at, Some(31));
        // It levels off: the trend over the window flattens and the crossing leaves the horizon.
        let mut quiet_at = None;
        for i in 60..400 {
            let v = st.observe(&sp, i * 10_000, 41.0);
            if !v.anomalous && quiet_at.is_none() {
                quiet_at = Some(i);
                assert!(v.message().contains("beyond the"), "{}", v.message());
            }
        }
        assert!(quiet_at.is_some_and(|q| q < 100), "{quiet_at:?}");
        let v = st.observe(&sp, 400 * 10_000, 41.0);
        assert!(!v.anomalous && v.message().starts_with("no limit ahead"), "{}", v.message());
    }

    #[test]
    fn state_survives_snapshot_and_restore() {
        let sp = spec("above = 95.0\nhorizon = \"30m\"\nwindow = 120");
        let mut a = DetectorState::new(&sp, 0);
        for i in 0..100 {
            a.observe(&sp, i * 10_000, 50.0 + i as f64 / 6.0);
        }
        let bytes = postcard::to_stdvec(&a).unwrap();
        let mut b: DetectorState = postcard::from_bytes(&bytes).unwrap();
        assert!(b.matches(&sp));
        let va = a.observe(&sp, 100 * 10_000, 50.0 + 100.0 / 6.0);
        let vb = b.observe(&sp, 100 * 10_000, 50.0 + 100.0 / 6.0);
        assert_eq!(va, vb);
        assert!(va.anomalous);
        // A changed window does not fit: the state starts over (warming up).
        let other = spec("above = 95.0\nhorizon = \"30m\"\nwindow = 60");
        assert!(!b.matches(&other));
        let v = b.observe(&other, 101 * 10_000, 70.0);
        assert_eq!(v.reason, Reason::Warmup { have: 1, need: 32 });
    }

    #[test]
    fn validation() {
        let err = |body: &str| {
            let c: DetectorConfig =
                toml::from_str(&format!("type = \"forecast\"\n{body}")).expect("parses");
            c.validate().unwrap_err()
        };
        assert_eq!(err("horizon = \"1h\"").field, None);
        assert_eq!(err("above = 5.0\nbelow = 6.0\nhorizon = \"1h\"").field, Some("below"));
        assert_eq!(err("above = 5.0\nhorizon = \"0s\"").field, Some("horizon"));
        assert_eq!(err("above = 5.0\nhorizon = \"1h\"\nmin_r2 = 1.5").field, Some("min_r2"));
        assert_eq!(
            err("above = 5.0\nhorizon = \"1h\"\nwindow = 10\nmin_samples = 11").field,
            Some("min_samples")
        );
        assert_eq!(err("above = nan\nhorizon = \"1h\"").field, Some("above"));
    }
}
