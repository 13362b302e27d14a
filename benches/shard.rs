//! Per-sample cost of a shard's whole ingest path (`ShardCore::ingest`: device lookup, statistics,
//! zscore or the default ensemble, lifecycle) with the dashboard's history ring off and on (600 points:
//! twice the default, the worse case for caches), to price the ring. Instruction counts: valgrind --tool=callgrind.

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use edgewatch::analysis::shard::{Policies, ShardCore};
use edgewatch::model::Batch;
use edgewatch::status::StatusBoard;

const DEVICES: usize = 100;
const BATCH: usize = 4096;

/// A shard whose devices all get `detector` (an inline table).
fn core(history: usize, detector: &str) -> ShardCore {
    let text = format!(
        "node_id = \"bench\"\n[analysis]\nhistory = {history}\n\
         [unknown_devices]\npolicy = \"register\"\ntemplate = \"t\"\n\
         [template.t]\nwindow = 256\n\
         detectors = [{detector}]\n"
    );
    let resolved =
        edgewatch::config::parse_str(&text, Path::new("bench.toml")).expect("bench config");
    let policies = Arc::new(Policies {
        resolved,
        source_ids: vec!["tcp".into()],
        shards: 1,
    });
    let board = Arc::new(StatusBoard::new("bench", Vec::new()));
    ShardCore::new(0, policies, board, 0)
}

/// Batches of samples round-robin over `DEVICES` devices, noisy around 20 with rare spikes.
fn batches() -> Vec<Batch> {
    let names: Vec<String> = (0..DEVICES).map(|i| format!("dev-{i:04}")).collect();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..8)
        .map(|k| {
            let mut b = Batch::with_capacity(BATCH);
            for i in 0..BATCH {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let noise = (x >> 11) as f64 / (1u64 << 53) as f64 - 0.5;
                let n = k * BATCH + i;
                let v = if n % 997 == 0 { 80.0 } else { 20.0 + noise };
                b.push(
                    &names[n % DEVICES],
                    "temp",
                    1_763_000_000_000 + n as i64 * 10,
                    v,
                );
            }
            b
        })
        .collect()
}

fn bench_ingest(c: &mut Criterion) {
    let batches = batches();
    let mut group = c.benchmark_group("shard_ingest");
    group.throughput(Throughput::Elements(BATCH as u64));
    let zscore = "{ type = \"zscore\", window = 256, threshold = 6.0, warmup = 32, hold = \"0s\" }";
    let ensemble = "{ type = \"ensemble\", hold = \"0s\" }";
    for (name, history, detector) in [
        ("history_0", 0usize, zscore),
        ("history_600", 600, zscore),
        ("ensemble_history_0", 0, ensemble),
    ] {
        let mut core = core(history, detector);
        let mut out = Vec::new();
        // Warm up: register devices, fill windows and rings.
        for b in &batches {
            core.ingest(0, b, 0, &mut out);
        }
        let mut i = 0;
        group.bench_function(name, |bch| {
            bch.iter(|| {
                out.clear();
                core.ingest(0, &batches[i % batches.len()], 0, &mut out);
                i += 1;
                black_box(out.len());
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_ingest);
criterion_main!(benches);
