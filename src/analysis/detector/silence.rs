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

#[cfg(test)]
mod tests {
    use super::super::*;
    use crate::analysis::lifecycle::{Lifecycle, Transition};

    #[test]
    fn silence_fires_without_any_data_and_resolves_after_seen() {
        let spec = DetectorSpec::Silence(silence::Spec { after_ms: 5_000 });
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
}
