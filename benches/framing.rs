//! Framer cost per byte stream chunk: `cargo bench --bench framing`.
//! A 64 KiB read buffer of JSON lines (the TCP source's hot path), cut into frames; the same
//! with a multi-byte custom delimiter (serial sources); and the bare-value `columns` decoder.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use edgewatch::decode::framing::{Delimiter, LineFramer};
use edgewatch::model::{Millis, SampleSink};
use std::hint::black_box;

fn stream(line_end: &str) -> Vec<u8> {
    let mut s = Vec::with_capacity(64 * 1024);
    let mut i = 0u64;
    while s.len() < 64 * 1024 - 128 {
        s.extend_from_slice(
            format!(
                r#"{{"device":"sensor-{:04}","metric":"temperature","ts":1763761234567,"value":{}.125}}{line_end}"#,
                i % 1000,
                i % 40
            )
            .as_bytes(),
        );
        i += 1;
    }
    s
}

fn bench_framing(c: &mut Criterion) {
    let mut group = c.benchmark_group("framing");
    let data = stream("\n");
    group.throughput(Throughput::Bytes(data.len() as u64));
    group.bench_function("newline_64k", |b| {
        let mut f = LineFramer::new(4096);
        b.iter(|| {
            let mut n = 0usize;
            // Cut mid-line so the partial-tail path is exercised too.
            let (a, z) = data.split_at(data.len() / 2 + 17);
            f.feed(black_box(a), |r| n += r.map_or(0, <[u8]>::len));
            f.feed(black_box(z), |r| n += r.map_or(0, <[u8]>::len));
            n
        })
    });
    let data = stream("\r\n");
    group.bench_function("custom_crlf_exact_64k", |b| {
        let mut f = LineFramer::with_delimiter(4096, Delimiter::Bytes(b"\r\n".to_vec()));
        b.iter(|| {
            let mut n = 0usize;
            let (a, z) = data.split_at(data.len() / 2 + 17);
            f.feed(black_box(a), |r| n += r.map_or(0, <[u8]>::len));
            f.feed(black_box(z), |r| n += r.map_or(0, <[u8]>::len));
            n
        })
    });
    group.finish();

    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Elements(1));
    let columns = ["temp", "humidity", "pressure", "_", "ts"];
    let frame = "22.125,41.5,1013.2,OK,1763761234567";
    let mut sink = CountSink::default();
    assert_eq!(
        edgewatch::decode::columns::decode(
            frame,
            &columns,
            Some("bench-1"),
            edgewatch::decode::TsUnit::Auto,
            &mut sink
        ),
        Ok(3)
    );
    group.bench_function("columns", |b| {
        b.iter(|| {
            edgewatch::decode::columns::decode(
                black_box(frame),
                &columns,
                Some("bench-1"),
                edgewatch::decode::TsUnit::Auto,
                &mut sink,
            )
        })
    });
    black_box(sink.samples);
    group.finish();
}

#[derive(Default)]
struct CountSink {
    samples: u64,
}

impl SampleSink for CountSink {
    fn push(&mut self, device: &str, metric: &str, ts: Option<Millis>, value: f64) {
        self.samples +=
            (device.len() + metric.len()) as u64 + ts.unwrap_or(0) as u64 % 2 + value as u64 % 2;
    }
}

criterion_group!(benches, bench_framing);
criterion_main!(benches);
