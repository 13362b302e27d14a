//! Tests over every kind at once: the dispatch, reasons' texts, snapshot round trips, and the
//! statistical kinds on clean noise, spikes, shifts and daily cycles.

use super::seasonal::Period;
use super::*;
use crate::analysis::lifecycle::{Lifecycle, Transition};
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Normal};

fn zscore(window: usize, threshold: f64, warmup: usize, min_std: f64) -> DetectorSpec {
    DetectorSpec::Zscore(zscore::Spec {
        window,
        threshold,
        warmup,
        min_std,
    })
}

/// Indices of anomalous verdicts for a series with ts = index * step_ms.
fn anomalies(spec: &DetectorSpec, values: &[f64], step_ms: Millis) -> Vec<usize> {
    let mut st = DetectorState::new(spec, 0);
    values
        .iter()
        .enumerate()
        .filter(|&(i, &v)| st.observe(spec, i as Millis * step_ms, v).anomalous)
        .map(|(i, _)| i)
        .collect()
}

fn gaussian(seed: u64, n: usize, mean: f64, std: f64) -> Vec<f64> {
    let mut rng = StdRng::seed_from_u64(seed);
    let d = Normal::new(mean, std).unwrap();
    (0..n).map(|_| d.sample(&mut rng)).collect()
}

#[test]
fn kinds() {
    let specs = [
        zscore(8, 3.0, 4, 0.0),
        DetectorSpec::Threshold(threshold::Spec {
            min: None,
            max: Some(1.0),
            hysteresis: 0.0,
        }),
        DetectorSpec::Rate(rate::Spec { max_per_sec: 1.0 }),
        DetectorSpec::Stuck(stuck::Spec {
            count: Some(3),
            duration_ms: None,
            tolerance: 0.0,
        }),
        DetectorSpec::Silence(silence::Spec { after_ms: 1000 }),
    ];
    let kinds: Vec<_> = specs.iter().map(DetectorSpec::kind).collect();
    assert_eq!(kinds, ["zscore", "threshold", "rate", "stuck", "silence"]);
    for s in &specs {
        let st = DetectorState::new(s, 0);
        assert_eq!(st.kind(), s.kind());
        assert!(st.matches(s));
    }
}

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

#[test]
fn tick_is_none_for_sample_driven_detectors() {
    for spec in [
        zscore(8, 3.0, 4, 0.0),
        DetectorSpec::Threshold(threshold::Spec {
            min: Some(0.0),
            max: None,
            hysteresis: 0.0,
        }),
        DetectorSpec::Rate(rate::Spec { max_per_sec: 1.0 }),
        DetectorSpec::Stuck(stuck::Spec {
            count: None,
            duration_ms: Some(1),
            tolerance: 0.0,
        }),
    ] {
        let mut st = DetectorState::new(&spec, 0);
        assert_eq!(st.tick(&spec, 1_000_000), None);
        st.seen(5); // no-op
        assert_eq!(st.kind(), spec.kind());
    }
}

#[test]
fn mismatched_state_is_reset() {
    let z = zscore(8, 3.0, 2, 0.0);
    let t = DetectorSpec::Threshold(threshold::Spec {
        min: None,
        max: Some(1.0),
        hysteresis: 0.0,
    });
    let mut st = DetectorState::new(&z, 0);
    assert!(!st.matches(&t));
    assert!(st.observe(&t, 0, 2.0).anomalous);
    assert_eq!(st.kind(), "threshold");
    let s = DetectorSpec::Silence(silence::Spec { after_ms: 10 });
    assert!(!st.tick(&s, 100).unwrap().anomalous);
    assert!(st.tick(&s, 111).unwrap().anomalous);
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

fn roundtrip<T: Serialize + serde::de::DeserializeOwned>(v: &T) -> T {
    postcard::from_bytes(&postcard::to_stdvec(v).unwrap()).unwrap()
}

#[test]
fn serde_roundtrip_continues_identically() {
    let specs = [
        zscore(64, 3.0, 16, 0.01),
        DetectorSpec::Threshold(threshold::Spec {
            min: Some(-1.0),
            max: Some(1.0),
            hysteresis: 0.2,
        }),
        DetectorSpec::Rate(rate::Spec { max_per_sec: 1.5 }),
        DetectorSpec::Stuck(stuck::Spec {
            count: Some(3),
            duration_ms: Some(4_000),
            tolerance: 0.3,
        }),
        DetectorSpec::Silence(silence::Spec { after_ms: 2_500 }),
        DetectorSpec::Mad(mad::Spec {
            window: 32,
            threshold: 2.0,
            warmup: 8,
        }),
        DetectorSpec::Ewma(ewma::Spec {
            alpha: 0.3,
            window: 64,
            threshold: 1.5,
            warmup: 8,
        }),
        DetectorSpec::Cusum(cusum::Spec {
            drift: 0.1,
            threshold: 2.0,
            window: 64,
            warmup: 8,
        }),
        DetectorSpec::Seasonal(seasonal::Spec {
            period: Period::Day,
            window: 64,
            threshold: 1.5,
            warmup: 8,
        }),
        DetectorSpec::Predict(predict::Spec {
            alpha: 0.5,
            beta: 0.1,
            window: 64,
            threshold: 2.0,
            warmup: 8,
        }),
        DetectorSpec::Ensemble(ensemble::Spec {
            window: 512,
            threshold: 1.0,
            warmup: 16,
        }),
    ];
    for spec in &specs {
        assert_eq!(&roundtrip(spec), spec);
        let mut rng = StdRng::seed_from_u64(11);
        let mut a = DetectorState::new(spec, 0);
        let mut la = Lifecycle::new();
        let mut ts = 0;
        // Seasonal needs days to learn: about five minutes between its samples.
        let step = if spec.kind() == "seasonal" { 300 } else { 1 };
        let mut next = |rng: &mut StdRng| -> (Millis, f64, bool) {
            ts += rng.gen_range(1..2_000) * step;
            let v = if rng.gen_bool(0.3) {
                0.5
            } else {
                rng.gen_range(-1.5..1.5)
            };
            (ts, v, rng.gen_bool(0.5))
        };
        for _ in 0..300 {
            let (ts, v, arrived) = next(&mut rng);
            if arrived {
                a.seen(ts);
            }
            let verdict = a.observe(spec, ts, v);
            la.step(verdict.anomalous, ts, 1_000);
            if let Some(t) = a.tick(spec, ts) {
                la.step(t.anomalous, ts, 1_000);
            }
        }
        let mut b: DetectorState = roundtrip(&a);
        let mut lb: Lifecycle = roundtrip(&la);
        assert_eq!(la, lb);
        let mut fired = 0;
        for _ in 0..1_000 {
            let (ts, v, arrived) = next(&mut rng);
            if arrived {
                a.seen(ts);
                b.seen(ts);
            }
            let va = a.observe(spec, ts, v);
            let vb = b.observe(spec, ts, v);
            assert_eq!(va.anomalous, vb.anomalous);
            assert_eq!(va.score.to_bits(), vb.score.to_bits());
            assert_eq!(va.reason, vb.reason);
            let ta = la.step(va.anomalous, ts, 1_000);
            assert_eq!(ta, lb.step(vb.anomalous, ts, 1_000));
            fired += usize::from(ta == Some(Transition::Fire));
            let (ka, kb) = (a.tick(spec, ts), b.tick(spec, ts));
            assert_eq!(ka, kb);
            if let (Some(ka), Some(kb)) = (ka, kb) {
                let ta = la.step(ka.anomalous, ts, 1_000);
                assert_eq!(ta, lb.step(kb.anomalous, ts, 1_000));
                fired += usize::from(ta == Some(Transition::Fire));
            }
        }
        assert!(fired > 0, "{} never fired", spec.kind());
        assert_eq!(
            postcard::to_stdvec(&a).unwrap(),
            postcard::to_stdvec(&b).unwrap()
        );
        assert_eq!(la, lb);
    }
}

/// Indices of anomalous verdicts for (ts, value) samples.
fn alarms_at(spec: &DetectorSpec, samples: &[(Millis, f64)]) -> Vec<usize> {
    let mut st = DetectorState::new(spec, 0);
    samples
        .iter()
        .enumerate()
        .filter(|&(_, &(ts, v))| st.observe(spec, ts, v).anomalous)
        .map(|(i, _)| i)
        .collect()
}

/// The statistical detectors with their default settings (as the config layer builds them).
fn statistical() -> Vec<DetectorSpec> {
    vec![
        zscore(256, 5.0, 32, 0.0),
        DetectorSpec::Mad(mad::Spec {
            window: 256,
            threshold: 5.0,
            warmup: 32,
        }),
        DetectorSpec::Ewma(ewma::Spec {
            alpha: 0.1,
            window: 256,
            threshold: 5.0,
            warmup: 64,
        }),
        DetectorSpec::Cusum(cusum::Spec {
            drift: 0.5,
            threshold: 10.0,
            window: 256,
            warmup: 64,
        }),
        DetectorSpec::Predict(predict::Spec {
            alpha: 0.5,
            beta: 0.1,
            window: 128,
            threshold: 6.0,
            warmup: 32,
        }),
        DetectorSpec::Ensemble(ensemble::Spec {
            window: 6144,
            threshold: 5.0,
            warmup: 100,
        }),
    ]
}

const MINUTE: Millis = 60_000;

fn noisy(seed: u64, n: usize) -> Vec<(Millis, f64)> {
    gaussian(seed, n, 20.0, 2.0)
        .into_iter()
        .enumerate()
        .map(|(i, v)| (i as Millis * MINUTE, v))
        .collect()
}

#[test]
fn every_statistical_detector_is_quiet_on_clean_noise() {
    for seed in [21, 22] {
        let clean = noisy(seed, 8_000);
        for spec in statistical() {
            assert_eq!(alarms_at(&spec, &clean), Vec::<usize>::new(), "{spec:?}");
        }
    }
}

#[test]
fn spike_is_caught_at_the_sample_by_point_detectors() {
    let mut series = noisy(23, 8_000);
    series[6_000].1 += 40.0; // 20 sigma
    for spec in statistical() {
        if matches!(spec, DetectorSpec::Ewma(..) | DetectorSpec::Cusum(..)) {
            continue; // made for sustained shifts (below)
        }
        let a = alarms_at(&spec, &series);
        assert_eq!(a.first(), Some(&6_000), "{spec:?}: {a:?}");
    }
}

#[test]
fn small_sustained_shift_is_caught_by_charts_and_ensemble() {
    // 1.5 sigma from sample 6000 on: under any per-sample threshold, but it accumulates.
    let mut series = noisy(24, 8_000);
    for s in &mut series[6_000..] {
        s.1 += 3.0;
    }
    for spec in statistical() {
        let a = alarms_at(&spec, &series);
        match spec {
            DetectorSpec::Ewma(..) | DetectorSpec::Cusum(..) => {
                let first = a.first().copied();
                assert!(
                    first.is_some_and(|i| (6_000..6_050).contains(&i)),
                    "{spec:?}: {a:?}"
                );
            }
            DetectorSpec::Ensemble(..) => {
                assert!(
                    a.iter().any(|i| (6_000..6_200).contains(i)),
                    "{spec:?}: {a:?}"
                );
            }
            _ => {}
        }
    }
}

/// Five-minute samples over `days`, high (80) from 08:00 to 18:00 UTC and low (20) otherwise,
/// with noise; on day `skip` the rise does not happen.
fn daily(days: i64, skip: i64) -> Vec<(Millis, f64)> {
    let step = 5 * MINUTE;
    let day = 24 * 60 * MINUTE;
    let t0 = 1_700_000_000_000 - 1_700_000_000_000 % day;
    let noise = gaussian(25, (days * day / step) as usize, 0.0, 1.0);
    noise
        .into_iter()
        .enumerate()
        .map(|(i, e)| {
            let ts = t0 + i as Millis * step;
            let h = (ts - t0) % day / (60 * MINUTE);
            let high = (8..18).contains(&h) && (ts - t0) / day != skip;
            (ts, if high { 80.0 } else { 20.0 } + e)
        })
        .collect()
}

#[test]
fn seasonal_detectors_learn_the_day_and_catch_a_missing_rise() {
    let specs = [
        DetectorSpec::Seasonal(seasonal::Spec {
            period: Period::Day,
            window: 256,
            threshold: 6.0,
            warmup: 32,
        }),
        DetectorSpec::Ensemble(ensemble::Spec {
            window: 6144,
            threshold: 5.0,
            warmup: 100,
        }),
    ];
    let per_day = 288;
    for spec in &specs {
        // The daily steps are normal: quiet once learned (the ensemble needs the first day
        // to see a step at all).
        let clean = daily(10, -1);
        let a = alarms_at(spec, &clean);
        assert!(a.iter().all(|&i| i < per_day), "{spec:?}: {a:?}");
        // Day 8 stays low: caught within an hour of 08:00.
        let series = daily(10, 8);
        let a = alarms_at(spec, &series);
        let rise = 8 * per_day + 8 * 12;
        assert!(
            a.iter().any(|&i| (rise..rise + 12).contains(&i)),
            "{spec:?}: {a:?}"
        );
        assert!(
            a.iter().all(|&i| i < per_day || i >= rise),
            "{spec:?}: {a:?}"
        );
    }
}

#[test]
fn anomaly_is_one_half_at_the_threshold() {
    assert_eq!(anomaly(5.0, 5.0), 0.5);
    assert_eq!(anomaly(0.0, 5.0), 0.0);
    assert!(anomaly(50.0, 5.0) > 0.9 && anomaly(50.0, 5.0) < 1.0);
    assert_eq!(anomaly(f64::INFINITY, 5.0), 1.0);
    assert_eq!(anomaly(f64::NAN, 5.0), 0.0);
    assert_eq!(anomaly(-3.0, 5.0), 0.0);
    // Every kind: anomalous exactly when anomaly >= 0.5 on a series with a spike.
    let mut series = noisy(26, 3_000);
    series[2_500].1 += 60.0;
    let mut specs = statistical();
    specs.push(DetectorSpec::Threshold(threshold::Spec {
        min: None,
        max: Some(40.0),
        hysteresis: 1.0,
    }));
    specs.push(DetectorSpec::Rate(rate::Spec { max_per_sec: 0.5 }));
    for spec in &specs {
        let mut st = DetectorState::new(spec, 0);
        let mut fired = 0;
        for &(ts, v) in &series {
            let verdict = st.observe(spec, ts, v);
            assert!(
                (0.0..=1.0).contains(&verdict.anomaly),
                "{spec:?} {verdict:?}"
            );
            if verdict.anomalous {
                fired += 1;
                assert!(verdict.anomaly >= 0.5, "{spec:?} {verdict:?}");
            } else {
                assert!(verdict.anomaly <= 0.5, "{spec:?} {verdict:?}");
            }
        }
        assert!(fired > 0, "{spec:?}");
    }
}

#[test]
fn short_number_format() {
    assert_eq!(Short(15.0).to_string(), "15");
    assert_eq!(Short(7.833_333).to_string(), "7.833");
    assert_eq!(Short(-0.0001).to_string(), "0");
    assert_eq!(Short(0.25).to_string(), "0.25");
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

/// The postcard encoding of specs and states is what snapshots hold: it must not change without
/// a bump of the store's format marker. Lengths and FNV-1a hashes of each kind's spec and of its
/// state after 400 samples, as encoded before the detectors moved to one file per kind.
#[test]
fn snapshot_encoding_is_unchanged() {
    fn fnv(b: &[u8]) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for x in b {
            h ^= u64::from(*x);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h
    }
    let cases: [(DetectorSpec, usize, u64, usize, u64); 11] = [
        (
            zscore(64, 3.0, 16, 0.01),
            19,
            0x26bfff8578ade299,
            540,
            0x17623927f25bd9d2,
        ),
        (
            DetectorSpec::Threshold(threshold::Spec {
                min: Some(-1.0),
                max: Some(1.0),
                hysteresis: 0.2,
            }),
            27,
            0xd26c5cdd813f08f5,
            2,
            0x082f2207b4e88cc4,
        ),
        (
            DetectorSpec::Rate(rate::Spec { max_per_sec: 1.5 }),
            9,
            0x0dcdddf54e95fb20,
            14,
            0x3a4f8e09c7b70b65,
        ),
        (
            DetectorSpec::Stuck(stuck::Spec {
                count: Some(3),
                duration_ms: Some(4_000),
                tolerance: 0.3,
            }),
            14,
            0x9f953cc52c107bd7,
            15,
            0xa0e6ecb351ad709f,
        ),
        (
            DetectorSpec::Silence(silence::Spec { after_ms: 2_500 }),
            3,
            0xb8753b1859f7b4f2,
            5,
            0x5699b06e843c6d08,
        ),
        (
            DetectorSpec::Mad(mad::Spec {
                window: 32,
                threshold: 2.0,
                warmup: 8,
            }),
            11,
            0xbf694a92f308bc98,
            515,
            0x29066024d4c89194,
        ),
        (
            DetectorSpec::Ewma(ewma::Spec {
                alpha: 0.3,
                window: 64,
                threshold: 1.5,
                warmup: 8,
            }),
            19,
            0x6ebb1f80db97dcca,
            27,
            0xe8b4d563b51288cc,
        ),
        (
            DetectorSpec::Cusum(cusum::Spec {
                drift: 0.1,
                threshold: 2.0,
                window: 64,
                warmup: 8,
            }),
            19,
            0xdea1b04835747e9b,
            35,
            0x8c3980c480f3d6ef,
        ),
        (
            DetectorSpec::Seasonal(seasonal::Spec {
                period: Period::Week,
                window: 64,
                threshold: 1.5,
                warmup: 8,
            }),
            12,
            0x1e0d4ec1349dc9a5,
            1547,
            0x2934170ff940af5d,
        ),
        (
            DetectorSpec::Predict(predict::Spec {
                alpha: 0.5,
                beta: 0.1,
                window: 64,
                threshold: 2.0,
                warmup: 8,
            }),
            27,
            0x7a4b24b71f48f448,
            27,
            0xeaf2344687d4cb11,
        ),
        (
            DetectorSpec::Ensemble(ensemble::Spec {
                window: 512,
                threshold: 1.0,
                warmup: 16,
            }),
            12,
            0x8a534afe1b8596fc,
            9073,
            0x6b6c6a84e3804e7b,
        ),
    ];
    for (spec, spec_len, spec_hash, state_len, state_hash) in cases {
        let mut st = DetectorState::new(&spec, 7);
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for i in 0..400i64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let v = ((x >> 11) as f64 / (1u64 << 53) as f64) * 4.0 - 2.0;
            let v = if i % 5 == 0 { 0.5 } else { v };
            st.seen(i * 100_000);
            st.observe(&spec, i * 300_000, v);
            st.tick(&spec, i * 300_000 + 1);
        }
        let sb = postcard::to_stdvec(&spec).unwrap();
        let tb = postcard::to_stdvec(&st).unwrap();
        assert_eq!(
            (sb.len(), fnv(&sb)),
            (spec_len, spec_hash),
            "{}",
            spec.kind()
        );
        assert_eq!(
            (tb.len(), fnv(&tb)),
            (state_len, state_hash),
            "{}",
            spec.kind()
        );
    }
}

#[test]
fn a_field_of_another_kind_is_told_apart_from_a_typo() {
    let m = explain_unknown_field("zscore", "max_per_sec").unwrap();
    assert_eq!(
        m,
        "`max_per_sec` does not apply to a zscore detector \
         (it takes: window, threshold, warmup, min_std, name, severity, hold)"
    );
    let m = explain_unknown_field("rate", "treshold").unwrap();
    assert!(
        m.starts_with("unknown field `treshold` for a rate detector"),
        "{m}"
    );
    assert_eq!(explain_unknown_field("nope", "x"), None);
    assert_eq!(
        fields_of("silence"),
        Some(&["name", "severity", "hold", "after"][..])
    );
}
