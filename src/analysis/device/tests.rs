//! Device-level analysis through a real `ShardCore`: alignment, a broken correlation caught (and
//! quiet before it), snapshot and restore.

use std::path::Path;
use std::sync::Arc;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::*;
use crate::analysis::shard::{Policies, ShardCore};
use crate::model::{AlertState, Batch};
use crate::status::StatusBoard;

const DEVICE_CFG: &str = "[[device]]\nid = \"pump\"\n\
    device_detectors = [{ type = \"multivariate\", warmup = 200, hold = \"0s\" }]\n\
    [device.vector]\nmetrics = [\"x\", \"y\", \"z\"]\n";

fn core(text: &str) -> ShardCore {
    let text = format!("node_id = \"n\"\n{text}");
    let resolved = crate::config::parse_str(&text, Path::new("t.toml")).expect("config");
    let policies = Arc::new(Policies {
        resolved,
        source_ids: vec![],
        shards: 1,
    });
    ShardCore::new(0, policies, Arc::new(StatusBoard::new("n", Vec::new())), 0)
}

/// Row `i` of a pump whose `y` follows `x` (`broken`: `y` follows `-x`); `z` is independent.
/// Every value stays within about ±4 of its usual range either way.
fn row(rng: &mut SmallRng, broken: bool) -> [f64; 3] {
    let x: f64 = rng.gen_range(-1.0..1.0);
    let y = if broken { -x } else { x } + rng.gen_range(-0.1..0.1);
    [x, y, rng.gen_range(-1.0..1.0)]
}

fn feed_row(c: &mut ShardCore, i: i64, v: [f64; 3], out: &mut Vec<Alert>) {
    let mut b = Batch::with_capacity(3);
    let ts = 1_000_000 + i * 1_000;
    for (m, x) in ["x", "y", "z"].iter().zip(v) {
        b.push("pump", m, ts, x);
    }
    c.ingest(0, &b, ts, out);
}

fn device_alerts(out: &[Alert]) -> Vec<&Alert> {
    out.iter().filter(|a| a.metric == "*").collect()
}

#[test]
fn a_broken_correlation_fires_naming_the_pair_and_normal_rows_stay_quiet() {
    let mut c = core(DEVICE_CFG);
    let mut rng = SmallRng::seed_from_u64(7);
    let mut out = Vec::new();
    for i in 0..600 {
        feed_row(&mut c, i, row(&mut rng, false), &mut out);
    }
    assert!(
        device_alerts(&out).is_empty(),
        "quiet on 400 normal vectors after the warm-up: {:?}",
        device_alerts(&out)
    );
    let view = c.view(Some("pump"))[0].vector.clone().expect("vector view");
    assert_eq!(view.metrics, ["x", "y", "z"]);
    let corr = c.correlation("pump").expect("correlation");
    assert_eq!((corr.count, corr.window), (300, 300));
    assert!(
        corr.correlation[0][1] > 0.98,
        "x and y move together: {:?}",
        corr.correlation
    );
    assert!(
        corr.correlation[0][2].abs() < 0.2,
        "z is independent: {:?}",
        corr.correlation
    );
    assert!(
        (corr.covariance[0][0] - 1.0 / 3.0).abs() < 0.05,
        "var of U(-1, 1)"
    );
    assert_eq!(view.vectors, 600);
    assert!(!view.detectors[0].warming);

    let mut fired_at = None;
    for i in 600..700 {
        out.clear();
        feed_row(&mut c, i, row(&mut rng, true), &mut out);
        if let Some(a) = device_alerts(&out).first() {
            assert_eq!(a.state, AlertState::Firing);
            assert_eq!(a.detector, "multivariate");
            assert!(a.score > 1.0 && a.anomaly > 0.5, "{a:?}");
            let most = a
                .message
                .split("most: ")
                .nth(1)
                .expect("contributors named");
            assert!(
                most.starts_with('x') || most.starts_with('y'),
                "x or y contributes most: {}",
                a.message
            );
            assert!(
                !most.contains('z') || most.find('z') > most.find('y'),
                "{}",
                a.message
            );
            fired_at = Some(i);
            break;
        }
    }
    let at = fired_at.expect("the broken correlation fires");
    assert!(
        at < 640,
        "caught within 40 vectors of the break, at {}",
        at - 600
    );
}

#[test]
fn samples_align_within_the_tolerance_or_with_recent_enough_values() {
    let spec = VectorSpec {
        metrics: Some(vec!["a".into(), "b".into()]),
        tolerance_ms: 500,
        max_age_ms: None,
        window: 10,
        span_ms: None,
    };
    let mut v = VectorState::new(&spec);
    v.metric_added(0, "a");
    v.metric_added(1, "b");
    v.metric_added(2, "other");
    assert_eq!(v.member_of, [Some(0), Some(1), None]);
    assert!(!v.push(0, 0, 1.0));
    assert!(v.push(1, 300, 2.0), "b within 500 ms of a");
    assert_eq!((v.out.as_slice(), v.out_ts), ([1.0, 2.0].as_slice(), 300));
    assert!(!v.push(0, 1_000, 3.0));
    assert!(!v.push(1, 2_000, 4.0), "b 1 s after a: no vector");
    assert!(v.push(0, 2_100, 5.0), "a completes the round b opened");
    assert_eq!((v.out.as_slice(), v.out_ts), ([5.0, 4.0].as_slice(), 2_100));

    let mut v = VectorState::new(&VectorSpec {
        max_age_ms: Some(5_000),
        ..spec
    });
    v.metric_added(0, "a");
    v.metric_added(1, "b");
    assert!(v.push(0, 0, 1.0) | v.push(1, 0, 2.0));
    assert!(!v.push(0, 3_000, 3.0));
    assert!(
        v.push(0, 4_000, 4.0),
        "a repeats: b's value of 3 s before fills in"
    );
    assert_eq!((v.out.as_slice(), v.out_ts), ([3.0, 2.0].as_slice(), 3_000));
    assert!(v.push(0, 9_000, 5.0), "a@4000 with b's value of 4 s before");
    assert_eq!((v.out.as_slice(), v.out_ts), ([4.0, 2.0].as_slice(), 4_000));
    assert!(
        !v.push(0, 10_000, 6.0),
        "b's value is 9 s older than a@9000: no vector"
    );
}

#[test]
fn every_metric_mode_settles_after_the_first_round() {
    let mut c = core(
        "[unknown_devices]\npolicy = \"register\"\ndevice_detectors = [{ type = \"multivariate\" }]\n",
    );
    let mut rng = SmallRng::seed_from_u64(1);
    let mut out = Vec::new();
    for i in 0..3 {
        feed_row(&mut c, i, row(&mut rng, false), &mut out);
    }
    let v = c.view(Some("pump"))[0].vector.clone().expect("vector");
    assert_eq!(v.metrics, ["x", "y", "z"]);
    assert_eq!(
        v.vectors, 3,
        "row 1 is emitted when row 2 begins, then one per row"
    );
}

#[test]
fn a_firing_alert_resolves_only_below_the_resolve_level() {
    // Two detectors with the same model (so the same ratio) differ only in `resolve`.
    let mut c = core(
        "[[device]]\nid = \"pump\"\ndevice_detectors = [\
         { type = \"multivariate\", name = \"plain\", warmup = 200, hold = \"0s\", resolve = 1.0 },\
         { type = \"multivariate\", name = \"sticky\", warmup = 200, hold = \"0s\", resolve = 0.3 }]\n\
         [device.vector]\nmetrics = [\"x\", \"y\", \"z\"]\n",
    );
    let mut rng = SmallRng::seed_from_u64(11);
    let mut out = Vec::new();
    let (mut sticky_was, mut held) = (false, 0);
    for i in 0..500 {
        feed_row(&mut c, i, row(&mut rng, (300..330).contains(&i)), &mut out);
        let v = c.view(Some("pump"))[0].vector.clone().expect("vector view");
        let (plain, sticky) = (&v.detectors[0], &v.detectors[1]);
        let Some(r) = plain.ratio else { continue };
        assert_eq!(sticky.ratio, Some(r), "row {i}: one model");
        assert_eq!(
            plain.firing.is_some(),
            r > 1.0,
            "row {i}: no hysteresis, ratio {r}"
        );
        let expect = r > 1.0 || (sticky_was && r > 0.3);
        assert_eq!(sticky.firing.is_some(), expect, "row {i}: ratio {r}");
        held += usize::from(expect && r <= 1.0);
        sticky_was = expect;
    }
    assert!(held > 0, "the ratio passed between 0.3 and 1 while firing");
    assert!(!sticky_was, "resolved once the relation came back");
}

#[test]
fn snapshot_and_restore_continue_the_same_model_and_a_changed_one_starts_over() {
    let mut a = core(DEVICE_CFG);
    let mut rng = SmallRng::seed_from_u64(3);
    let mut out = Vec::new();
    for i in 0..300 {
        feed_row(&mut a, i, row(&mut rng, false), &mut out);
    }
    let saved = a.snapshot();
    let mut b = core(DEVICE_CFG);
    assert_eq!(b.restore(&saved, 0), 1);
    let vb = b.view(Some("pump"))[0].vector.clone().expect("vector");
    assert_eq!(vb.vectors, 300);
    let (mut oa, mut ob) = (Vec::new(), Vec::new());
    for i in 300..320 {
        let r = row(&mut rng, i >= 310);
        feed_row(&mut a, i, r, &mut out);
        feed_row(&mut b, i, r, &mut out);
        a.device_outcomes("pump", &mut oa);
        b.device_outcomes("pump", &mut ob);
        assert_eq!(oa, ob, "row {i}");
        assert!(oa[0].0 > 0.0, "judged, not warming");
    }

    assert_eq!(
        a.correlation("pump").expect("a").correlation,
        b.correlation("pump").expect("b").correlation,
        "the rolling covariance is restored too"
    );

    // Another warm-up length: the saved model does not apply and learning starts again.
    let mut c = core(&DEVICE_CFG.replace("warmup = 200", "warmup = 250"));
    c.restore(&saved, 0);
    feed_row(&mut c, 400, row(&mut rng, false), &mut out);
    let vc = c.view(Some("pump"))[0].vector.clone().expect("vector");
    assert!(vc.detectors[0].warming);

    // A state saved before device-level analysis existed (no trailing part) still restores.
    let mut plain = core("[[device]]\nid = \"pump\"\n");
    for i in 0..5 {
        feed_row(&mut plain, i, row(&mut rng, false), &mut out);
    }
    let mut d = core(DEVICE_CFG);
    assert_eq!(d.restore(&plain.snapshot(), 0), 1);
    assert_eq!(d.view(Some("pump"))[0].metrics.len(), 3);
}

#[test]
fn device_level_config_errors_are_located() {
    let err = |t: &str| {
        crate::config::parse_str(&format!("node_id = \"n\"\n{t}"), Path::new("c.toml"))
            .expect_err("invalid")
            .to_string()
    };
    let e = err("[[device]]\nid = \"p\"\n[device.vector]\nmetrics = [\"a\"]\n");
    assert!(e.starts_with("c.toml:5:"), "{e}");
    assert!(
        e.contains("2 to 16 metrics") && e.contains("device[0].vector.metrics"),
        "{e}"
    );
    let e = err(
        "[[device]]\nid = \"p\"\ndevice_detectors = [{ type = \"multivariate\", smoothing = 0 }]\n",
    );
    assert!(e.contains("smoothing must be in (0, 1]"), "{e}");
    assert!(e.contains("device[0].device_detectors[0].smoothing"), "{e}");
    let e = err(
        "[[device]]\nid = \"p\"\ndevice_detectors = [{ type = \"multivariate\", wamup = 10 }]\n",
    );
    assert!(e.starts_with("c.toml:4:"), "{e}");
    assert!(e.contains("wamup"), "{e}");
    let e = err("[[device]]\nid = \"p\"\n[device.vector]\ntolerance = \"1s\"\nmax_agee = \"5s\"\n");
    assert!(e.contains("max_agee"), "{e}");
}
