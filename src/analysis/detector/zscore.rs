//! The `zscore` detector: each sample against the last `window` samples before it,
//! `z = (x - mean) / max(std, min_std)` (population std), anomalous when `|z| > threshold`.

use std::collections::VecDeque;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::{Kind, Verdict, MAX_SCORE};
use crate::analysis::stats::WindowMoments;
use crate::model::Millis;

fn default_threshold() -> f64 {
    5.0
}

/// Warm-up when none is given: an eighth of the window, between 2 and 32.
fn default_warmup(window: usize) -> usize {
    (window / 8).clamp(2, 32)
}

detector_config! {
    /// `{ type = "zscore", window, threshold, warmup, min_std }`.
    pub struct Config {
        #[serde(default = "super::default_window")]
        pub window: usize,
        #[serde(default = "default_threshold")]
        pub threshold: f64,
        /// Default: [`default_warmup`] of the window.
        #[serde(default)]
        pub warmup: Option<usize>,
        #[serde(default)]
        pub min_std: f64,
    }
}

impl Config {
    pub fn validate(&self) -> Result<Spec, super::Invalid> {
        super::finite(self.threshold, "threshold")?;
        super::finite(self.min_std, "min_std")?;
        let window = super::window_in(self.window, 100_000)?;
        let threshold = super::positive(self.threshold, "threshold")?;
        let warmup =
            super::warmup_within(self.warmup.unwrap_or(default_warmup(window)), window)?;
        let min_std = super::at_least_zero(self.min_std, "min_std")?;
        Ok(Spec {
            window,
            threshold,
            warmup,
            min_std,
        })
    }
}

/// Anomalous when `|z| > threshold` once the window holds `warmup` samples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Spec {
    pub window: usize,
    pub threshold: f64,
    pub warmup: usize,
    pub min_std: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct State {
    pub(crate) ring: VecDeque<f64>,
    pub(crate) moments: WindowMoments,
}

/// Signed z (clamped to ±[`MAX_SCORE`]) and the threshold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reason {
    pub z: f64,
    pub threshold: f64,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = super::op(self.z.abs() > self.threshold);
        write!(f, "|z| {:.2} {op} {}", self.z.abs(), self.threshold)
    }
}

impl Kind for Spec {
    type State = State;

    fn start(&self, _now: Millis) -> State {
        State::default()
    }

    /// `window` 0 behaves like 1; the effective warm-up is `warmup` clamped to `[1, window]`.
    /// Does not allocate once the ring has reached its window size.
    fn observe(&self, s: &mut State, _ts: Millis, x: f64) -> Verdict {
        let threshold = self.threshold;
        let window = self.window.max(1);
        let need = self.warmup.clamp(1, window);
        let have = s.ring.len();
        let verdict = match s.moments.mean_std() {
            Some((mean, std)) if have >= need => {
                let denom = std.max(self.min_std);
                let diff = x - mean;
                let z = if denom > 0.0 {
                    (diff / denom).clamp(-MAX_SCORE, MAX_SCORE)
                } else if diff == 0.0 {
                    0.0
                } else {
                    MAX_SCORE.copysign(diff)
                };
                Verdict::measured(z.abs(), threshold, Reason { z, threshold })
            }
            _ => Verdict::quiet(super::warming(have, need)),
        };
        // `while`, not `if`: the window may have shrunk after a config change.
        while s.ring.len() >= window {
            let Some(old) = s.ring.pop_front() else {
                break;
            };
            s.moments.evict(old, s.ring.iter().copied());
        }
        if s.ring.capacity() == 0 {
            // Once, at the first sample: exactly the window, not the next power of two.
            s.ring.reserve_exact(window.min(1 << 16));
        }
        s.ring.push_back(x);
        s.moments.push(x);
        verdict
    }

    fn baseline(s: &State) -> Option<(f64, f64)> {
        s.moments.mean_std()
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{anomalies, gaussian, zscore};
    use super::super::*;
    use proptest::prelude::*;

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
        assert!(matches!(v.reason, Reason::Zscore(_)));
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
            Reason::Zscore(zscore::Reason {
                z: -7.0,
                threshold: 6.0
            })
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
