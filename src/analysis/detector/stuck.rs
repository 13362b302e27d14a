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
