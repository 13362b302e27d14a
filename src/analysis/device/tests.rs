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
        summary_correlation: false,
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

const MODE_CFG: &str = "[[device]]\nid = \"pump\"\n\
    device_detectors = [{ type = \"mode\", warmup = 200, hold = \"0s\", labels = [\"idle\", \"run\", \"dry\"], bad = [\"dry\"] }]\n\
    [device.vector]\nmetrics = [\"x\", \"y\", \"z\"]\nsummary_correlation = true\n";

/// A pump idling (A) or running (B), or a state it never showed (C); ±0.1 noise on each metric.
fn mode_row(rng: &mut SmallRng, state: char) -> [f64; 3] {
    let c = match state {
        'A' => [0.0, 10.0, 5.0],
        'B' => [3.0, 14.0, 5.5],
        _ => [1.5, 12.0, 9.0],
    };
    c.map(|v| v + rng.gen_range(-0.1..0.1))
}

/// A and B in turns of 40 vectors.
fn two_modes(i: i64) -> char {
    if (i / 40) % 2 == 0 {
        'A'
    } else {
        'B'
    }
}

#[test]
fn two_alternating_modes_stay_quiet_a_new_state_fires_and_entering_a_bad_mode_fires() {
    let mut c = core(MODE_CFG);
    let mut rng = SmallRng::seed_from_u64(11);
    let mut out = Vec::new();
    for i in 0..800 {
        feed_row(&mut c, i, mode_row(&mut rng, two_modes(i)), &mut out);
    }
    assert!(
        device_alerts(&out).is_empty(),
        "quiet on two known modes: {:?}",
        device_alerts(&out)
    );
    let m = c.modes("pump").expect("modes");
    assert_eq!(m.modes.len(), 2, "{m:?}");
    assert_eq!(m.metrics, ["x", "y", "z"]);
    assert_eq!(
        (m.modes[0].label.as_deref(), m.modes[1].label.as_deref()),
        (Some("idle"), Some("run"))
    );
    assert!((m.modes[1].centroid[0] - 3.0).abs() < 0.05, "{m:?}");
    // Row 799 is in B (rows 760..800).
    assert_eq!(
        (m.now.index, m.now.label.as_deref()),
        (Some(1), Some("run"))
    );
    assert!(m.limit.is_some_and(|l| l > 1.0 && l < 6.0), "{m:?}");
    let view = c.view(Some("pump"))[0].vector.clone().expect("vector");
    assert_eq!(view.mode.as_ref().map(|m| m.modes), Some(2));

    // The summary carries the mode and, asked for, the correlation matrix.
    let (_, vectors) = c.summary(0);
    assert_eq!(vectors.len(), 1);
    assert_eq!(vectors[0].mode.as_ref().and_then(|m| m.index), Some(1));
    let corr = vectors[0].correlation.as_ref().expect("correlation");
    assert_eq!(corr.matrix.len(), 3);
    assert!(
        corr.matrix[0][1].is_some_and(|r| r > 0.9),
        "x and y move together between the modes: {corr:?}"
    );

    // C was never seen: fires at once, naming the distance; learnt as mode 2, labelled bad.
    out.clear();
    feed_row(&mut c, 800, mode_row(&mut rng, 'C'), &mut out);
    let a = device_alerts(&out)
        .first()
        .cloned()
        .cloned()
        .expect("a new state fires");
    assert_eq!((a.detector.as_str(), a.state), ("mode", AlertState::Firing));
    assert!(a.message.contains("a state never seen"), "{}", a.message);
    assert!(
        a.message.contains("learnt as mode 2 (dry)"),
        "{}",
        a.message
    );
    assert!(a.value > 6.0 && a.score > 1.0, "{a:?}");
    for i in 801..820 {
        feed_row(&mut c, i, mode_row(&mut rng, 'C'), &mut out);
    }
    assert_eq!(c.modes("pump").expect("modes").modes.len(), 3);
    out.clear();
    for i in 820..900 {
        feed_row(&mut c, i, mode_row(&mut rng, two_modes(i)), &mut out);
    }
    let resolved = device_alerts(&out);
    assert_eq!(resolved.len(), 1, "{resolved:?}");
    assert_eq!(resolved[0].state, AlertState::Resolved);

    // Back into C, now a known mode labelled bad: fires for that alone.
    out.clear();
    feed_row(&mut c, 900, mode_row(&mut rng, 'C'), &mut out);
    let a = device_alerts(&out)
        .first()
        .cloned()
        .cloned()
        .expect("entering a bad mode fires");
    assert!(!a.message.contains("never seen"), "{}", a.message);
    assert!(
        a.message.contains("in mode 2 (dry), labelled bad"),
        "{}",
        a.message
    );
    let now = c.modes("pump").expect("modes").now;
    assert!(now.bad && now.index == Some(2), "{now:?}");
}

#[test]
fn mode_state_survives_snapshot_and_restore() {
    let mut a = core(MODE_CFG);
    let mut rng = SmallRng::seed_from_u64(12);
    let mut out = Vec::new();
    for i in 0..400 {
        feed_row(&mut a, i, mode_row(&mut rng, two_modes(i)), &mut out);
    }
    let saved = a.snapshot();
    let mut b = core(MODE_CFG);
    assert_eq!(b.restore(&saved, 0), 1);
    let (ma, mb) = (a.modes("pump").expect("a"), b.modes("pump").expect("b"));
    assert_eq!(mb.modes, ma.modes, "centroids and counts restored");
    assert_eq!(mb.now, ma.now);
    assert_eq!(mb.modes.len(), 2);
    let (mut oa, mut ob) = (Vec::new(), Vec::new());
    for i in 400..440 {
        let r = mode_row(&mut rng, if i < 430 { two_modes(i) } else { 'C' });
        feed_row(&mut a, i, r, &mut out);
        feed_row(&mut b, i, r, &mut out);
        a.device_outcomes("pump", &mut oa);
        b.device_outcomes("pump", &mut ob);
        assert_eq!(oa, ob, "row {i}");
    }
    assert!(oa[0].1, "C fires in both");

    // Relabelling keeps the learnt modes; other learning settings start over.
    let mut c = core(
        &MODE_CFG
            .replace("\"dry\"]", "\"other\"]")
            .replace("bad = [\"other\"]", "bad = []"),
    );
    c.restore(&saved, 0);
    let mc = c.modes("pump").expect("c");
    assert_eq!(mc.modes.len(), 2);
    assert_eq!(mc.modes[0].centroid, ma.modes[0].centroid);
    let mut d = core(&MODE_CFG.replace("warmup = 200", "warmup = 300"));
    d.restore(&saved, 0);
    assert!(d.modes("pump").expect("d").now.warming);
}

#[test]
fn mode_config_errors_are_located() {
    let err = |t: &str| {
        crate::config::parse_str(&format!("node_id = \"n\"\n{t}"), Path::new("c.toml"))
            .expect_err("invalid")
            .to_string()
    };
    let e =
        err("[[device]]\nid = \"p\"\ndevice_detectors = [{ type = \"mode\", k = 3, max_k = 5 }]\n");
    assert!(
        e.contains("not both") && e.contains("device[0].device_detectors[0].max_k"),
        "{e}"
    );
    let e = err("[[device]]\nid = \"p\"\ndevice_detectors = [{ type = \"mode\", k = 40 }]\n");
    assert!(
        e.contains("between 1 and 16") && e.contains("device_detectors[0].k"),
        "{e}"
    );
    let e = err(
        "[[device]]\nid = \"p\"\ndevice_detectors = [{ type = \"mode\", labels = [\"a\"], bad = [\"b\"] }]\n",
    );
    assert!(
        e.contains("\"b\" is not one of the `labels`") && e.contains("device_detectors[0].bad"),
        "{e}"
    );
    let e = err("[[device]]\nid = \"p\"\ndevice_detectors = [{ type = \"mode\", new_mode_distance = -1 }]\n");
    assert!(e.contains("device_detectors[0].new_mode_distance"), "{e}");
    let e =
        err("[[device]]\nid = \"p\"\ndevice_detectors = [{ type = \"mode\", half_lfe = 10 }]\n");
    assert!(e.starts_with("c.toml:4:") && e.contains("half_lfe"), "{e}");
    let e = err("[[device]]\nid = \"p\"\n[device.vector]\nsummary_correlation = 1\n");
    assert!(e.contains("summary_correlation"), "{e}");
}
