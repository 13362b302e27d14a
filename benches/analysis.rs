//! Per-sample cost of the analysis hot path: `RollingStats::push` and `DetectorState::observe` of
//! every detector kind (the ensemble is the default set).
//! Each iteration feeds a batch of `BATCH` samples, so criterion's per-element throughput is ns/sample.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use edgewatch::analysis::detector::seasonal::Period;
use edgewatch::analysis::detector::{
    cusum, ensemble, ewma, forecast, mad, predict, rate, seasonal, silence, stuck, threshold,
    zscore, DetectorSpec, DetectorState,
};
use edgewatch::analysis::stats::{RollingStats, WindowSpec};

const BATCH: usize = 4096;

/// Deterministic noisy signal around 20 (xorshift), with an occasional spike and flat stretch.
fn series() -> Vec<f64> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..BATCH)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let noise = (x >> 11) as f64 / (1u64 << 53) as f64 - 0.5;
            match i % 512 {
                0 => 80.0,
                100..=110 => 21.0,
                _ => 20.0 + 4.0 * noise,
            }
        })
        .collect()
}

fn bench_rolling_stats(c: &mut Criterion) {
    let values = series();
    let mut group = c.benchmark_group("rolling_stats");
    group.throughput(Throughput::Elements(BATCH as u64));
    let mut stats = RollingStats::new(
        WindowSpec {
            count: Some(256),
            span_ms: None,
        },
        0.05,
    );
    let mut ts = 0i64;
    group.bench_function("push_window_256", |b| {
        b.iter(|| {
            for &v in &values {
                ts += 1000;
                stats.push(ts, black_box(v));
            }
            black_box(stats.mean());
        })
    });
    group.finish();
}

fn bench_detectors(c: &mut Criterion) {
    let values = series();
    let specs = [
        (
            "zscore_256_6_32",
            DetectorSpec::Zscore(zscore::Spec {
                window: 256,
                threshold: 6.0,
                warmup: 32,
                min_std: 0.0,
            }),
        ),
        (
            "threshold",
            DetectorSpec::Threshold(threshold::Spec {
                min: Some(0.0),
                max: Some(40.0),
                hysteresis: 1.0,
            }),
        ),
        ("rate", DetectorSpec::Rate(rate::Spec { max_per_sec: 10.0 })),
        (
            "stuck",
            DetectorSpec::Stuck(stuck::Spec {
                count: Some(10),
                duration_ms: Some(60_000),
                tolerance: 0.001,
            }),
        ),
        (
            "silence",
            DetectorSpec::Silence(silence::Spec { after_ms: 60_000 }),
        ),
        (
            "mad_256_5",
            DetectorSpec::Mad(mad::Spec {
                window: 256,
                threshold: 5.0,
                warmup: 32,
            }),
        ),
        (
            "ewma",
            DetectorSpec::Ewma(ewma::Spec {
                alpha: 0.1,
                window: 256,
                threshold: 5.0,
                warmup: 64,
            }),
        ),
        (
            "cusum",
            DetectorSpec::Cusum(cusum::Spec {
                drift: 0.5,
                threshold: 10.0,
                window: 256,
                warmup: 64,
            }),
        ),
        (
            "seasonal_day",
            DetectorSpec::Seasonal(seasonal::Spec {
                period: Period::Day,
                window: 256,
                threshold: 6.0,
                warmup: 32,
            }),
        ),
        (
            "predict",
            DetectorSpec::Predict(predict::Spec {
                alpha: 0.5,
                beta: 0.1,
                window: 128,
                threshold: 6.0,
                warmup: 32,
            }),
        ),
        (
            "forecast_256",
            DetectorSpec::Forecast(forecast::Spec {
                above: Some(95.0),
                below: Some(5.0),
                horizon_ms: 3_600_000,
                window: 256,
                span_ms: None,
                min_r2: 0.5,
                min_samples: 32,
            }),
        ),
        (
            "ensemble_default",
            DetectorSpec::Ensemble(ensemble::Spec {
                window: 6144,
                threshold: 5.0,
                warmup: 100,
            }),
        ),
    ];
    let mut group = c.benchmark_group("detector_observe");
    group.throughput(Throughput::Elements(BATCH as u64));
    for (name, spec) in &specs {
        let mut state = DetectorState::new(spec, 0);
        let mut ts = 0i64;
        group.bench_function(*name, |b| {
            b.iter(|| {
                let mut anomalous = 0usize;
                for &v in &values {
                    ts += 1000;
                    state.seen(ts);
                    anomalous += usize::from(state.observe(spec, ts, black_box(v)).anomalous);
                }
                black_box(anomalous)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_rolling_stats, bench_detectors);
criterion_main!(benches);
