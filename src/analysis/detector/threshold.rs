//! The `threshold` detector: anomalous when `value > max` or `value < min`; once anomalous, it
//! stays so until the value is back inside `[min + hysteresis, max - hysteresis]`.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::{anomaly, Invalid, Kind, Verdict};
use crate::model::Millis;

detector_config! {
    /// `{ type = "threshold", min, max, hysteresis }`: `min`, `max` or both.
    pub struct Config {
        #[serde(default)]
        pub min: Option<f64>,
        #[serde(default)]
        pub max: Option<f64>,
        #[serde(default)]
        pub hysteresis: f64,
    }
}

impl Config {
    pub fn validate(&self) -> Result<Spec, Invalid> {
        let min = super::finite_opt(self.min, "min")?;
        let max = super::finite_opt(self.max, "max")?;
        super::finite(self.hysteresis, "hysteresis")?;
        if min.is_none() && max.is_none() {
            return Err(Invalid::whole(
                "a threshold detector needs `min`, `max` or both",
            ));
        }
        let hysteresis = super::at_least_zero(self.hysteresis, "hysteresis")?;
        if let (Some(lo), Some(hi)) = (min, max) {
            if lo >= hi {
                return Err(Invalid::at(
                    "max",
                    format!("max ({hi}) must be greater than min ({lo})"),
                ));
            }
            if hi - lo <= 2.0 * hysteresis {
                return Err(Invalid::at(
                    "hysteresis",
                    "hysteresis must be less than half of max - min",
                ));
            }
        }
        Ok(Spec {
            min,
            max,
            hysteresis,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Spec {
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub hysteresis: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct State {
    active: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Reason {
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
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Reason::AboveMax { value, max } => write!(f, "value {value} > max {max}"),
            Reason::BelowMin { value, min } => write!(f, "value {value} < min {min}"),
            Reason::Hysteresis { value, low, high } => {
                write!(f, "value {value} not yet back inside [{low}, {high}]")
            }
            Reason::InRange { value } => write!(f, "value {value} within limits"),
        }
    }
}

impl Kind for Spec {
    type State = State;

    fn start(&self, _now: Millis) -> State {
        State::default()
    }

    fn observe(&self, s: &mut State, _ts: Millis, value: f64) -> Verdict {
        let Spec {
            min,
            max,
            hysteresis,
        } = *self;
        let over = max.map_or(0.0, |m| value - m).max(0.0);
        let under = min.map_or(0.0, |m| m - value).max(0.0);
        if over > 0.0 || under > 0.0 {
            s.active = true;
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
                reason: reason.into(),
            };
        }
        if s.active {
            let h = hysteresis.max(0.0);
            let low = min.map_or(f64::NEG_INFINITY, |m| m + h);
            let high = max.map_or(f64::INFINITY, |m| m - h);
            if value >= low && value <= high {
                s.active = false;
            } else {
                return Verdict {
                    anomalous: true,
                    score: 0.0,
                    anomaly: 0.5,
                    reason: Reason::Hysteresis { value, low, high }.into(),
                };
            }
        }
        Verdict::quiet(Reason::InRange { value })
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{anomalies, gaussian};
    use super::super::*;

    #[test]
    fn threshold_with_hysteresis() {
        let spec = DetectorSpec::Threshold(threshold::Spec {
            min: Some(10.0),
            max: Some(40.0),
            hysteresis: 1.0,
        });
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
            Reason::Threshold(threshold::Reason::Hysteresis {
                value: 39.5,
                low: 11.0,
                high: 39.0
            })
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
        let spec = DetectorSpec::Threshold(threshold::Spec {
            min: None,
            max: Some(5.0),
            hysteresis: 0.5,
        });
        let values = [-1e6, 5.0, 6.0, 4.8, 4.5, -1e6];
        assert_eq!(anomalies(&spec, &values, 1), vec![2, 3]);
        let clean = gaussian(3, 10_000, 0.0, 1.0);
        assert!(anomalies(&spec, &clean, 1).is_empty());
    }
}
