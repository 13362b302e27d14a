//! Tests over every kind at once: the dispatch, reasons' texts, snapshot round trips, and the
//! statistical kinds on clean noise, spikes, shifts and daily cycles.

use super::seasonal::Period;
use super::*;
use crate::analysis::lifecycle::{Lifecycle, Transition};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Normal};

pub(super) fn zscore(window: usize, threshold: f64, warmup: usize, min_std: f64) -> DetectorSpec {
    DetectorSpec::Zscore(zscore::Spec {
        window,
        threshold,
        warmup,
        min_std,
    })
}

/// Indices of anomalous verdicts for a series with ts = index * step_ms.
pub(super) fn anomalies(spec: &DetectorSpec, values: &[f64], step_ms: Millis) -> Vec<usize> {
    let mut st = DetectorState::new(spec, 0);
    values
        .iter()
        .enumerate()
        .filter(|&(i, &v)| st.observe(spec, i as Millis * step_ms, v).anomalous)
        .map(|(i, _)| i)
        .collect()
}

pub(super) fn gaussian(seed: u64, n: usize, mean: f64, std: f64) -> Vec<f64> {
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

/// The postcard encoding of specs and states is what snapshots hold: it must not change without
/// a bump of the store's format marker. Lengths and FNV-1a hashes of each kind's spec and of its
/// state after 400 samples, as encoded before the detectors moved to one file per kind. (The
/// ensemble's state hash changed when its warm-up z-view came to judge for 64 blocks instead of 32:
/// the same fields, learned over more of these 400 samples; the encoding did not change.)
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
            9091,
            0xc695060ea5024830,
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
