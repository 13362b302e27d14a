//! Decoder cost per frame: `cargo bench --bench decode`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use edgewatch::decode::{decode, Format, Opts};
use edgewatch::model::{Millis, SampleSink};
use std::hint::black_box;

/// Counts samples and touches every argument so nothing is optimized away.
#[derive(Default)]
struct CountSink {
    samples: u64,
    checksum: f64,
}

impl SampleSink for CountSink {
    fn push(&mut self, device: &str, metric: &str, ts: Option<Millis>, value: f64) {
        self.samples += 1;
        self.checksum +=
            value + (device.len() + metric.len()) as f64 + ts.unwrap_or(0) as f64 * 1e-12;
    }
}

const CASES: &[(&str, Format, &str)] = &[
    (
        "json_single",
        Format::Json,
        r#"{"device":"sensor-0042","metric":"temperature","ts":1763761234567,"value":22.125}"#,
    ),
    (
        "json_multi",
        Format::Json,
        r#"{"device":"sensor-0042","ts":1763761234567,"temperature":22.125,"humidity":41.5,"pressure":1013.2,"battery":3.71,"fw":"1.4.2"}"#,
    ),
    (
        // Nested values in ignored fields: still the JSON fast path.
        "json_nested",
        Format::Json,
        r#"{"device":"sensor-0042","ts":1763761234567,"temperature":22.125,"loc":{"lat":52.52,"lon":13.405,"tags":["roof","north"]},"humidity":41.5}"#,
    ),
    (
        // An escape in the device id: the fast path gives up, serde_json parses the frame.
        "json_fallback",
        Format::Json,
        r#"{"device":"sensor-0042\u00e9","metric":"temperature","ts":1763761234567,"value":22.125}"#,
    ),
    (
        "csv",
        Format::Csv,
        "sensor-0042,temperature,22.125,1763761234567",
    ),
    (
        "kv",
        Format::Kv,
        "device=sensor-0042 metric=temperature value=22.125 ts=1763761234567",
    ),
    (
        // Telegraf-style: device from the measurement, nanosecond timestamp.
        "influx",
        Format::Influx,
        "sensor-0042,site=roof temperature=22.125,humidity=41.5,pressure=1013.2 1763761234567000000",
    ),
];

fn bench_decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Elements(1));
    for &(name, format, frame) in CASES {
        let mut sink = CountSink::default();
        // Fail loudly on a broken fixture instead of timing the error path.
        let n = decode(format, frame.as_bytes(), &Opts::default(), &mut sink).expect(name);
        assert!(n > 0, "{name}: no samples");
        group.bench_function(name, |b| {
            b.iter(|| {
                decode(
                    format,
                    black_box(frame.as_bytes()),
                    &Opts::default(),
                    &mut sink,
                )
            })
        });
        black_box((sink.samples, sink.checksum));
    }
    group.finish();
}

criterion_group!(benches, bench_decode);
criterion_main!(benches);
