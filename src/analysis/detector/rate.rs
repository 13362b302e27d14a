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
