//! The whole per-sample hot path on one core, without I/O: JSON frames decoded into a batch, then
//! a shard's ingest (device lookup, rolling stats, zscore detector, alert lifecycle), ns/sample.
//! `benches/shard.rs` prices the ingest alone, with and without the chart history.

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use edgewatch::analysis::shard::{Policies, ShardCore};
use edgewatch::config::parse_str;
use edgewatch::decode::{decode, Format, Opts};
use edgewatch::model::{Batch, Millis, SampleSink};
use edgewatch::status::StatusBoard;

const DEVICES: usize = 100;
const FRAMES: usize = 4096;

struct BatchSink<'a>(&'a mut Batch);

impl SampleSink for BatchSink<'_> {
    fn push(&mut self, device: &str, metric: &str, ts: Option<Millis>, value: f64) {
        self.0.push(device, metric, ts.unwrap_or(0), value);
    }
}

/// The reference workload's frames: 100 devices round-robin, noise, a 12-sigma spike now and then.
fn frames() -> Vec<String> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..FRAMES)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let noise = (x >> 11) as f64 / (1u64 << 53) as f64 - 0.5;
            let v = if i % 997 == 0 {
                22.0 + 12.0
            } else {
                22.0 + noise
            };
            format!(
                r#"{{"device":"dev{:04}","metric":"temp","ts":{},"value":{v:.4}}}"#,
                i % DEVICES,
                1_763_761_234_567u64 + i as u64
            )
        })
        .collect()
}

fn bench_pipeline(c: &mut Criterion) {
    let cfg = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("config/bench-tcp.toml"),
    )
    .expect("bench config");
    let resolved = parse_str(&cfg, Path::new("config/bench-tcp.toml")).expect("valid");
    let policies = Arc::new(Policies {
        resolved,
        source_ids: vec!["tcp".into()],
        shards: 1,
    });
    let status = Arc::new(StatusBoard::new("bench", Vec::new()));
    let mut core = ShardCore::new(0, policies, status, 0);
    let lines = frames();
    let mut batch = Batch::with_capacity(FRAMES);
    let mut alerts = Vec::new();
    // Warm every device's window past its warm-up, as in steady state.
    for _ in 0..4 {
        batch.clear();
        for l in &lines {
            let _ = decode(
                Format::Json,
                l.as_bytes(),
                &Opts::default(),
                &mut BatchSink(&mut batch),
            );
        }
        core.ingest(0, &batch, 0, &mut alerts);
    }

    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Elements(FRAMES as u64));
    g.bench_function("decode_json_stats_zscore", |b| {
        b.iter(|| {
            batch.clear();
            for l in &lines {
                let _ = decode(
                    Format::Json,
                    black_box(l.as_bytes()),
                    &Opts::default(),
                    &mut BatchSink(&mut batch),
                );
            }
            alerts.clear();
            core.ingest(0, &batch, 0, &mut alerts);
            black_box(alerts.len())
        })
    });
    g.finish();
}

criterion_group!(benches, bench_pipeline);
criterion_main!(benches);
