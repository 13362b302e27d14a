//! The per-sample hot path (JSON decode into a batch + a shard's ingest) for the zscore and the
//! default ensemble policy, as ns/sample and, under callgrind, instructions per sample.
//!
//! `cargo bench --bench per_sample` prints ns/sample. For instructions (which carry over to a Pi
//! better than x86 time), run the built binary under callgrind counting only the measured loop:
//! `valgrind --tool=callgrind --toggle-collect='*measured*' target/release/deps/per_sample-<hash>
//! --rounds 4 --only zscore` (or `--only ensemble`) and divide `Collected` by the samples it prints.

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use edgewatch::analysis::shard::{Policies, ShardCore};
use edgewatch::config::parse_str;
use edgewatch::decode::{decode, Format, Opts};
use edgewatch::model::{Alert, Batch, Millis, SampleSink};
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
fn frames(round: usize) -> Vec<String> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ round as u64;
    (0..FRAMES)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let noise = (x >> 11) as f64 / (1u64 << 53) as f64 - 0.5;
            let v = if i % 997 == 0 { 34.0 } else { 22.0 + noise };
            format!(
                r#"{{"device":"dev{:04}","metric":"temp","ts":{},"value":{v:.4}}}"#,
                i % DEVICES,
                1_763_761_234_567u64 + (round * FRAMES + i) as u64 * 10
            )
        })
        .collect()
}

fn core_for(detectors: &str) -> ShardCore {
    let cfg = format!(
        "node_id = \"bench\"\n[unknown_devices]\npolicy = \"register\"\ntemplate = \"t\"\n\
         [template.t]\nwindow = 256\n{detectors}\n"
    );
    let resolved = match parse_str(&cfg, Path::new("per_sample.toml")) {
        Ok(r) => r,
        Err(e) => panic!("bench config: {e}"),
    };
    let policies = Arc::new(Policies {
        resolved,
        source_ids: vec!["tcp".into()],
        shards: 1,
    });
    let status = Arc::new(StatusBoard::new("bench", Vec::new()));
    ShardCore::new(0, policies, status, 0)
}

/// The counted rounds: the only code callgrind counts (`--toggle-collect='*measured*'`).
#[inline(never)]
fn measured(
    core: &mut ShardCore,
    rounds: &[Vec<String>],
    batch: &mut Batch,
    alerts: &mut Vec<Alert>,
) -> usize {
    run(core, rounds, batch, alerts)
}

/// Decodes and ingests every round once.
#[inline(never)]
fn run(
    core: &mut ShardCore,
    rounds: &[Vec<String>],
    batch: &mut Batch,
    alerts: &mut Vec<Alert>,
) -> usize {
    let mut n = 0;
    for lines in rounds {
        batch.clear();
        for l in lines {
            n += decode(
                Format::Json,
                black_box(l.as_bytes()),
                &Opts::default(),
                &mut BatchSink(batch),
            )
            .unwrap_or(0);
        }
        alerts.clear();
        core.ingest(0, batch, 0, alerts);
    }
    n
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rounds = args
        .iter()
        .position(|a| a == "--rounds")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(200usize);
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1));
    for (name, detectors) in [
        (
            "zscore",
            "detectors = [{ type = \"zscore\", window = 256, threshold = 6.0, warmup = 32 }]",
        ),
        ("ensemble", ""),
    ] {
        if only.is_some_and(|o| o != name) {
            continue;
        }
        let mut core = core_for(detectors);
        let mut batch = Batch::with_capacity(FRAMES);
        let mut alerts = Vec::new();
        // Steady state: every device's window and detector history warmed up (past the ensemble's
        // warm-up) before anything is counted.
        let warm: Vec<Vec<String>> = (0..64).map(frames).collect();
        run(&mut core, &warm, &mut batch, &mut alerts);
        let work: Vec<Vec<String>> = (64..64 + rounds).map(frames).collect();
        let t = Instant::now();
        let n = measured(&mut core, &work, &mut batch, &mut alerts);
        let ns = t.elapsed().as_nanos() as f64 / n.max(1) as f64;
        println!("{name}: {n} samples measured, {ns:.1} ns/sample");
    }
}
