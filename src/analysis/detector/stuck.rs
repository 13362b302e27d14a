//! The `stuck` detector: anomalous when the value stays within `tolerance` of the first value of
//! the run for at least `count` samples or at least `duration` (by sample timestamps).

use std::fmt;

use serde::{Deserialize, Serialize};

use super::{anomaly, Invalid, Kind, Verdict};
use crate::config::Dur;
use crate::model::Millis;

detector_config! {
    /// `{ type = "stuck", count, duration, tolerance }`: `count`, `duration` or both.
    pub struct Config {
        #[serde(default)]
        pub count: Option<u32>,
        #[serde(default)]
        pub duration: Option<Dur>,
        #[serde(default)]
        pub tolerance: f64,
    }
}

impl Config {
    pub fn validate(&self) -> Result<Spec, Invalid> {
        super::finite(self.tolerance, "tolerance")?;
        if self.count.is_none() && self.duration.is_none() {
            return Err(Invalid::whole(
                "a stuck detector needs `count`, `duration` or both",
            ));
        }
        if self.count.is_some_and(|c| c < 2) {
            return Err(Invalid::at("count", "count must be at least 2"));
        }
        if self.duration.is_some_and(|x| x.as_ms() == 0) {
            return Err(Invalid::at("duration", "duration must be greater than 0"));
        }
        Ok(Spec {
            count: self.count,
            duration_ms: self.duration.map(|x| x.as_ms()),
            tolerance: super::at_least_zero(self.tolerance, "tolerance")?,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Spec {
    pub count: Option<u32>,
    pub duration_ms: Option<Millis>,
    pub tolerance: f64,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Run {
    first: f64,
    start_ts: Millis,
    len: u32,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct State {
    run: Option<Run>,
}

/// `value` (the first of the run) repeated `run` samples over `span_ms`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reason {
    pub value: f64,
    pub run: u32,
    pub span_ms: Millis,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "value {} unchanged for {} samples ({} s)",
            self.value,
            self.run,
            super::seconds(self.span_ms)
        )
    }
}

impl Kind for Spec {
    type State = State;

    fn start(&self, _now: Millis) -> State {
        State::default()
    }

    fn observe(&self, s: &mut State, ts: Millis, value: f64) -> Verdict {
        let Spec {
            count,
            duration_ms,
            tolerance,
        } = *self;
        let run = match s.run {
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
        s.run = Some(run);
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
            reason: Reason {
                value: run.first,
                run: run.len,
                span_ms,
            }
            .into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{anomalies, gaussian};
    use super::super::*;

    #[test]
    fn stuck_by_count() {
        let spec = DetectorSpec::Stuck(stuck::Spec {
            count: Some(5),
            duration_ms: None,
            tolerance: 0.01,
        });
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
        let spec = DetectorSpec::Stuck(stuck::Spec {
            count: None,
            duration_ms: Some(10_000),
            tolerance: 0.0,
        });
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
}
