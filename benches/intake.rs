//! A source's ingest per read buffer: `cargo bench --bench intake`. 64 KiB of JSON lines framed,
//! decoded, counted and batched for 4 shards, through `Framed` and through the loop each source
//! carried its own copy of before (kept here as the baseline), ns per sample.
//!
//! `INTAKE_ITERS=N INTAKE_VARIANT=copy|framed` runs N buffers of one variant without criterion,
//! for instruction counts under callgrind (run N=0 too and subtract the set-up).

use std::hint::black_box;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, Throughput};
use edgewatch::decode::framing::{Delimiter, LineFramer};
use edgewatch::decode::{decode, Format, Opts};
use edgewatch::model::now_ms;
use edgewatch::sources::intake::{Decoder, Framed, Intake, Origin};
use edgewatch::sources::route::{Ingest, Router, RoutingSink};
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

struct Bench {
    rt: tokio::runtime::Runtime,
    data: Vec<u8>,
    lines: u64,
    rxs: Vec<mpsc::Receiver<Ingest>>,
    stats: Arc<SourceStats>,
    // The loop tcp.rs, serial.rs and mqtt/mod.rs each had their own copy of.
    framer: LineFramer,
    sink: RoutingSink,
    log: RateLimitedLog,
    // The shared intake.
    framed: Framed,
}

impl Bench {
    fn new() -> Self {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let (data, lines) = stream();
        let (txs, rxs): (Vec<_>, Vec<_>) = (0..4).map(|_| mpsc::channel::<Ingest>(64)).unzip();
        let router = Router::new(txs);
        let stats = Arc::new(SourceStats::new("tcp", "tcp"));
        let framed = Framed::new(
            Intake::new(&router, 0, stats.clone(), Origin::Peer),
            4096,
            Delimiter::Newline,
            Decoder::format(Format::Json),
        );
        Bench {
            rt,
            data,
            lines,
            rxs,
            stats,
            framer: LineFramer::new(4096),
            sink: router.sink(0),
            log: RateLimitedLog::new(5, Duration::from_secs(10)),
            framed,
        }
    }

    fn drain(&mut self) {
        for r in &mut self.rxs {
            while let Ok(x) = r.try_recv() {
                black_box(x.batch.len());
            }
        }
    }

    fn copy_before(&mut self) {
        let (sink, log) = (&mut self.sink, &mut self.log);
        sink.set_default_ts(now_ms());
        let (mut accepted, mut rejected) = (0u64, 0u64);
        self.framer.feed(black_box(&self.data), |frame| {
            let reason = match frame {
                Ok(line) => match decode(Format::Json, line, &Opts::default(), sink) {
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
        self.stats.frames_accepted.fetch_add(accepted, Relaxed);
        self.stats.frames_rejected.fetch_add(rejected, Relaxed);
        self.stats.samples.fetch_add(sink.take_pushed(), Relaxed);
        self.rt.block_on(sink.flush()).expect("flush");
        self.drain();
    }

    fn framed_after(&mut self) {
        self.framed.feed(black_box(&self.data));
        self.rt.block_on(self.framed.flush()).expect("flush");
        self.drain();
    }
}

fn main() {
    let mut b = Bench::new();
    if let Ok(n) = std::env::var("INTAKE_ITERS") {
        let n: u64 = n.parse().expect("INTAKE_ITERS is a number");
        let framed = std::env::var("INTAKE_VARIANT").as_deref() == Ok("framed");
        for _ in 0..n {
            if framed {
                b.framed_after();
            } else {
                b.copy_before();
            }
        }
        println!("{} samples", n * b.lines);
        return;
    }
    let mut c = Criterion::default().configure_from_args();
    let mut g = c.benchmark_group("intake");
    g.throughput(Throughput::Elements(b.lines));
    g.bench_function("copy_before", |i| i.iter(|| b.copy_before()));
    g.bench_function("framed_after", |i| i.iter(|| b.framed_after()));
    g.finish();
    assert_eq!(b.stats.frames_rejected.load(Relaxed), 0);
    c.final_summary();
}
