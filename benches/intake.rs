//! A source's ingest per read buffer: `cargo bench --bench intake`. 64 KiB of JSON lines framed,
//! decoded, counted and batched for 4 shards, through `Framed` and through the loop each source
//! carried its own copy of before (kept here as the baseline), ns per sample.

use std::hint::black_box;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use edgewatch::decode::framing::{Delimiter, LineFramer};
use edgewatch::decode::{decode, Format};
use edgewatch::model::now_ms;
use edgewatch::sources::intake::{Decoder, Framed, Intake, Origin};
use edgewatch::sources::route::{Ingest, Router};
use edgewatch::status::{RateLimitedLog, SourceStats};
use tokio::sync::mpsc;

fn stream() -> (Vec<u8>, u64) {
    let mut s = Vec::with_capacity(64 * 1024);
    let mut i = 0u64;
    while s.len() < 64 * 1024 - 128 {
        s.extend_from_slice(
            format!(
                "{{\"device\":\"dev{:04}\",\"metric\":\"temp\",\"ts\":{},\"value\":{}.125}}\n",
                i % 100,
                1_763_761_234_567u64 + i,
                i % 40
            )
            .as_bytes(),
        );
        i += 1;
    }
    (s, i)
}

fn drain(rx: &mut [mpsc::Receiver<Ingest>]) {
    for r in rx {
        while let Ok(x) = r.try_recv() {
            black_box(x.batch.len());
        }
    }
}

fn bench_intake(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let (data, lines) = stream();
    let (txs, mut rxs): (Vec<_>, Vec<_>) = (0..4).map(|_| mpsc::channel::<Ingest>(64)).unzip();
    let router = Router::new(txs);
    let stats = Arc::new(SourceStats::new("tcp", "tcp"));
    let mut g = c.benchmark_group("intake");
    g.throughput(Throughput::Elements(lines));

    // The loop tcp.rs, serial.rs and mqtt/mod.rs each had their own copy of.
    let mut framer = LineFramer::new(4096);
    let mut sink = router.sink(0);
    let mut log = RateLimitedLog::new(5, Duration::from_secs(10));
    g.bench_function("copy_before", |b| {
        b.iter(|| {
            sink.set_default_ts(now_ms());
            let (mut accepted, mut rejected) = (0u64, 0u64);
            framer.feed(black_box(&data), |frame| {
                let reason = match frame {
                    Ok(line) => match decode(Format::Json, line, None, &mut sink) {
                        Ok(0) => return,
                        Ok(_) => {
                            accepted += 1;
                            return;
                        }
                        Err(e) => e.to_string(),
                    },
                    Err(e) => e.to_string(),
                };
                rejected += 1;
                if log.allow().0 {
                    eprintln!("{reason}");
                }
            });
            stats.frames_accepted.fetch_add(accepted, Relaxed);
            stats.frames_rejected.fetch_add(rejected, Relaxed);
            stats.samples.fetch_add(sink.take_pushed(), Relaxed);
            rt.block_on(sink.flush()).expect("flush");
            drain(&mut rxs);
        })
    });

    let mut framed = Framed::new(
        Intake::new(&router, 0, stats.clone(), Origin::Peer),
        4096,
        Delimiter::Newline,
        Decoder::Format {
            format: Format::Json,
            device: None,
        },
    );
    g.bench_function("framed_after", |b| {
        b.iter(|| {
            framed.feed(black_box(&data));
            rt.block_on(framed.flush()).expect("flush");
            drain(&mut rxs);
        })
    });
    g.finish();
    assert_eq!(stats.frames_rejected.load(Relaxed), 0);
}

criterion_group!(benches, bench_intake);
criterion_main!(benches);
