//! Device-level analysis cost: the `multivariate` and `mode` judgements of one 8-metric vector
//! after the warm-up (target ≤ 5 µs), and a shard's ingest of 8-metric rows without and with them.
//! Run: `cargo bench --bench device`.

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use edgewatch::analysis::device::mode;
use edgewatch::analysis::device::multivariate::{Spec, State};
use edgewatch::analysis::shard::{Policies, ShardCore};
use edgewatch::model::Batch;
use edgewatch::status::StatusBoard;

const D: usize = 8;
const ROWS: usize = 4096;

fn rows() -> Vec<[f64; D]> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x >> 11) as f64 / (1u64 << 53) as f64 - 0.5
    };
    (0..ROWS)
        .map(|_| {
            let base = next();
            let mut r = [0.0; D];
            for (i, v) in r.iter_mut().enumerate() {
                *v = (i as f64 + 1.0) * base + 0.3 * next();
            }
            r
        })
        .collect()
}

fn core(device_level: &str) -> ShardCore {
    let level = if device_level.is_empty() {
        String::new()
    } else {
        format!("device_detectors = [{device_level}]\n")
    };
    let text = format!(
        "node_id = \"bench\"\n[analysis]\nhistory = 0\n\
         [unknown_devices]\npolicy = \"register\"\ntemplate = \"t\"\n{level}\
         [template.t]\ndetectors = [{{ type = \"threshold\", max = 1e9 }}]\n"
    );
    let resolved =
        edgewatch::config::parse_str(&text, Path::new("bench.toml")).expect("bench config");
    let policies = Arc::new(Policies {
        resolved,
        source_ids: vec!["tcp".into()],
        shards: 1,
    });
    ShardCore::new(
        0,
        policies,
        Arc::new(StatusBoard::new("bench", Vec::new())),
        0,
    )
}

fn bench(c: &mut Criterion) {
    let data = rows();
    let mut g = c.benchmark_group("multivariate");
    g.throughput(Throughput::Elements(ROWS as u64));
    let spec = Spec::default();
    for (name, spec) in [
        ("t2/8 metrics", spec.clone()),
        (
            "t2+q/8 metrics",
            Spec {
                residual: true,
                ..spec
            },
        ),
    ] {
        let mut state = State::new(&spec, D);
        for r in &data[..spec.warmup] {
            state.observe(&spec, r);
        }
        g.bench_function(name, |b| {
            b.iter(|| {
                for r in &data {
                    black_box(state.observe(&spec, black_box(r)));
                }
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("mode");
    g.throughput(Throughput::Elements(ROWS as u64));
    for (name, spec) in [
        ("grown max_k 8/8 metrics", mode::Spec::default()),
        (
            "fixed k 3/8 metrics",
            mode::Spec {
                fixed: true,
                k: 3,
                ..mode::Spec::default()
            },
        ),
    ] {
        let labels = mode::Labels::default();
        let mut state = mode::State::new(&spec, D);
        for r in &data[..spec.warmup] {
            state.observe(&spec, &labels, r);
        }
        g.bench_function(name, |b| {
            b.iter(|| {
                for r in &data {
                    black_box(state.observe(&spec, &labels, black_box(r)));
                }
            })
        });
    }
    g.finish();

    let names: Vec<String> = (0..D).map(|i| format!("m{i}")).collect();
    let batches: Vec<Batch> = data
        .chunks(512)
        .enumerate()
        .map(|(k, chunk)| {
            let mut b = Batch::with_capacity(chunk.len() * D);
            for (j, r) in chunk.iter().enumerate() {
                let ts = 1_763_000_000_000 + ((k * 512 + j) as i64) * 1000;
                for (m, v) in names.iter().zip(r) {
                    b.push("pump", m, ts, *v);
                }
            }
            b
        })
        .collect();
    let mut g = c.benchmark_group("shard rows");
    g.throughput(Throughput::Elements(ROWS as u64));
    for (name, level) in [
        ("8 metrics, threshold", ""),
        (
            "8 metrics, threshold + multivariate",
            "{ type = \"multivariate\" }",
        ),
        (
            "8 metrics, threshold + multivariate + mode",
            "{ type = \"multivariate\" }, { type = \"mode\" }",
        ),
    ] {
        let mut core = core(level);
        let mut out = Vec::new();
        // Past the warm-up before measuring.
        for b in &batches {
            core.ingest(0, b, 0, &mut out);
        }
        g.bench_function(name, |bch| {
            bch.iter(|| {
                for b in &batches {
                    out.clear();
                    core.ingest(0, b, 0, &mut out);
                }
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
