//! The `rate` detector: anomalous when `|Δvalue / Δt|` between consecutive samples (by their own
//! timestamps) exceeds `max_per_sec`.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::{Invalid, Kind, Verdict, MAX_SCORE};
use crate::model::Millis;

detector_config! {
    /// `{ type = "rate", max_per_sec }` (required).
    pub struct Config {
        #[serde(default)]
        pub max_per_sec: Option<f64>,
    }
}

impl Config {
    pub fn validate(&self) -> Result<Spec, Invalid> {
        match super::finite_opt(self.max_per_sec, "max_per_sec")? {
            Some(r) => Ok(Spec {
                max_per_sec: super::positive(r, "max_per_sec")?,
            }),
            None => Err(Invalid::whole("a rate detector needs `max_per_sec`")),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Spec {
    pub max_per_sec: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct State {
    last: Option<(Millis, f64)>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Reason {
    /// Absolute rate of change in units per second.
    Rate { per_sec: f64, max_per_sec: f64 },
    /// No rate: first sample, or Δt <= 0 (the sample was skipped).
    NoRate,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Reason::Rate {
                per_sec,
                max_per_sec,
            } => {
                let op = super::op(per_sec > max_per_sec);
                write!(f, "rate {}/s {op} {max_per_sec}/s", super::Short(per_sec))
            }
            Reason::NoRate => f.write_str("no rate (first sample or non-increasing timestamp)"),
        }
    }
}

impl Kind for Spec {
    type State = State;

    fn start(&self, _now: Millis) -> State {
        State::default()
    }

    /// A sample with Δt <= 0 is skipped: not anomalous, and the previous sample stays the
    /// reference for the next one.
    fn observe(&self, s: &mut State, ts: Millis, value: f64) -> Verdict {
        let max_per_sec = self.max_per_sec;
        let Some((last_ts, last_value)) = s.last else {
            s.last = Some((ts, value));
            return Verdict::quiet(Reason::NoRate);
        };
        let dt = ts.saturating_sub(last_ts);
        if dt <= 0 {
            return Verdict::quiet(Reason::NoRate);
        }
        s.last = Some((ts, value));
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

#[cfg(test)]
mod tests {
    use super::super::tests::anomalies;
    use super::super::*;

    #[test]
    fn rate_with_irregular_dt() {
        let spec = DetectorSpec::Rate(rate::Spec { max_per_sec: 10.0 });
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
        assert_eq!(verdicts[0].reason, Reason::Rate(rate::Reason::NoRate));
        assert!((verdicts[1].score - 8.0).abs() < 1e-9);
        assert!((verdicts[3].score - 15.0).abs() < 1e-9);
        assert_eq!(verdicts[3].message(), "rate 15/s > 10/s");
        assert_eq!(verdicts[4].reason, Reason::Rate(rate::Reason::NoRate));
        assert_eq!(verdicts[5].score, 0.0);
        assert!((verdicts[6].score - 23.5 / 3.0).abs() < 1e-9);
        assert_eq!(verdicts[6].message(), "rate 7.833/s <= 10/s");
        assert!((verdicts[7].score - 15.0).abs() < 1e-6);
    }

    #[test]
    fn rate_quiet_on_smooth_signal() {
        let spec = DetectorSpec::Rate(rate::Spec { max_per_sec: 2.0 });
        let values: Vec<f64> = (0..10_000).map(|i| (i as f64 / 100.0).sin()).collect();
        // d/dt sin(t/100 s) peaks at 1/(100 ms) per sample... at 10 ms steps that is 1/s.
        assert!(anomalies(&spec, &values, 10).is_empty());
    }
}
