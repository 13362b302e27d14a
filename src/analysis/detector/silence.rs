//! The `silence` detector: anomalous (on [`tick`](super::Kind::tick), by the wall clock) when no
//! sample arrived for more than `after`; samples themselves are always judged quiet.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::{anomaly, Invalid, Kind, Verdict};
use crate::config::Dur;
use crate::model::Millis;

detector_config! {
    /// `{ type = "silence", after }` (required, at least 100ms).
    pub struct Config {
        #[serde(default)]
        pub after: Option<Dur>,
    }
}

impl Config {
    pub fn validate(&self) -> Result<Spec, Invalid> {
        match self.after {
            Some(a) if a.as_ms() >= 100 => Ok(Spec {
                after_ms: a.as_ms(),
            }),
            Some(_) => Err(Invalid::at("after", "after must be at least 100ms")),
            None => Err(Invalid::whole(
                "a silence detector needs `after` (e.g. \"30s\")",
            )),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Spec {
    pub after_ms: Millis,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    /// Wall clock (unix ms) of the last arrival, or of creation when nothing arrived yet.
    last_seen: Millis,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Reason {
    Silence { silent_ms: Millis, after_ms: Millis },
    /// What silence says for every sample.
    Receiving,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Reason::Silence {
                silent_ms,
                after_ms,
            } => write!(
                f,
                "no data for {} s {} {} s",
                super::seconds(silent_ms),
                super::op(silent_ms > after_ms),
                super::seconds(after_ms)
            ),
            Reason::Receiving => f.write_str("receiving data"),
        }
    }
}

impl Kind for Spec {
    type State = State;

    fn start(&self, now: Millis) -> State {
        State { last_seen: now }
    }

    fn observe(&self, _s: &mut State, _ts: Millis, _value: f64) -> Verdict {
        Verdict::quiet(Reason::Receiving)
    }

    /// Anomalous when `now - last_seen > after_ms`; score = seconds of silence.
    fn tick(&self, s: &mut State, now: Millis) -> Option<Verdict> {
        let after_ms = self.after_ms;
        let silent_ms = now.saturating_sub(s.last_seen).max(0);
        Some(Verdict {
            anomalous: silent_ms > after_ms,
            score: silent_ms as f64 / 1000.0,
            anomaly: anomaly(silent_ms as f64, after_ms as f64),
            reason: Reason::Silence {
                silent_ms,
                after_ms,
            }
            .into(),
        })
    }

    fn seen(s: &mut State, now: Millis) {
        s.last_seen = now;
    }
}
