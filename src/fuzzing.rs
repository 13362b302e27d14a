//! Entry points for the fuzz targets (`fuzz/`) and their corpus replay test: each takes raw bytes,
//! runs one parser of outside input on them and must never panic. Not an API (hidden from docs).

use crate::config::{
    DataType, ModbusPoint, MqttPayload, MqttSubscription, RegisterKind, WordOrder,
};
use crate::decode::{self, framing::LineFramer, Format};
use crate::model::{Millis, SampleSink};

/// Collects samples and checks what a decoder promises about them.
#[derive(Default)]
struct Check(usize);

impl SampleSink for Check {
    fn push(&mut self, device: &str, metric: &str, _ts: Option<Millis>, value: f64) {
        assert!(
            !device.is_empty() && !metric.is_empty(),
            "empty name pushed"
        );
        assert!(value.is_finite(), "non-finite value pushed: {value}");
        self.0 += 1;
    }
}

/// Splits `data` at the first newline: a parameter line and the rest.
fn split(data: &[u8]) -> (&str, &[u8]) {
    match data.iter().position(|&b| b == b'\n') {
        Some(i) => (
            std::str::from_utf8(&data[..i]).unwrap_or(""),
            &data[i + 1..],
        ),
        None => ("", data),
    }
}

/// `json`, `csv` and `kv` frames: the count returned is the count pushed.
pub fn frame_decoders(data: &[u8]) {
    for format in [Format::Json, Format::Csv, Format::Kv, Format::Influx] {
        for device in [None, Some("dev")] {
            let mut out = Check::default();
            let opts = decode::Opts::device(device);
            if let Ok(n) = decode::decode(format, data, &opts, &mut out) {
                assert_eq!(n, out.0, "{format:?} count");
            } else {
                assert_eq!(out.0, 0, "{format:?} pushed before an error");
            }
        }
    }
}

/// Bare-value frames against a column list given on the first line.
pub fn columns(data: &[u8]) {
    let (head, frame) = split(data);
    let cols: Vec<&str> = head.split(',').collect();
    let Ok(frame) = std::str::from_utf8(frame) else {
        return;
    };
    let mut out = Check::default();
    if let Ok(n) =
        decode::columns::decode(frame, &cols, Some("dev"), decode::TsUnit::Auto, &mut out)
    {
        assert_eq!(n, out.0);
    }
}

/// JSON documents read at field paths given on the first line (`value ts`).
pub fn path(data: &[u8]) {
    let (head, frame) = split(data);
    let mut parts = head.split(' ');
    let Ok(value) = decode::path::FieldPath::parse(parts.next().unwrap_or("value")) else {
        return;
    };
    let ts = parts
        .next()
        .and_then(|t| decode::path::FieldPath::parse(t).ok());
    let mut out = Check::default();
    let _ = decode::path::decode(
        frame,
        &value,
        ts.as_ref(),
        "dev",
        "m",
        decode::TsUnit::Auto,
        &mut out,
    );
}

/// The line framer: frames never exceed the limit and bytes are never invented.
pub fn framer(data: &[u8]) {
    let max = 1 + usize::from(data.first().copied().unwrap_or(0));
    let mut f = LineFramer::new(max);
    let mut seen = 0usize;
    for chunk in data.chunks(1 + usize::from(data.get(1).copied().unwrap_or(7) % 32)) {
        f.feed(chunk, |r| {
            if let Ok(frame) = r {
                assert!(frame.len() <= max, "frame over the limit");
                seen += frame.len();
            }
        });
        // content up to the limit, plus a trailing '\r' that may belong to the delimiter
        assert!(f.pending() <= max + 1, "pending over the limit");
    }
    f.end_frame(|r| {
        if let Ok(frame) = r {
            seen += frame.len();
        }
    });
    assert!(seen <= data.len(), "more frame bytes than input");
}

/// MQTT topic patterns (first line) matched against topics (the other lines), and the payload
/// decoders behind a subscription.
pub fn mqtt(data: &[u8]) {
    let (pattern, rest) = split(data);
    let Ok(p) = crate::sources::mqtt::topic::Pattern::parse(pattern) else {
        return;
    };
    let _ = p.filter();
    let text = String::from_utf8_lossy(rest);
    let mut lines = text.lines();
    let topic = lines.next().unwrap_or("");
    // an empty level may capture an empty device: the decoders must refuse it (checked on push)
    let _ = p.captures(topic);
    let payload = lines.next().unwrap_or("").as_bytes();
    for format in [
        MqttPayload::Number,
        MqttPayload::Json,
        MqttPayload::Csv,
        MqttPayload::Kv,
    ] {
        let sub = MqttSubscription {
            topic: pattern.to_string(),
            qos: 0,
            format,
            value: None,
            ts: None,
            device: (!p.has_device()).then(|| "dev".to_string()),
            metric: (!p.has_metric()).then(|| "m".to_string()),
            ts_unit: decode::TsUnit::Auto,
            device_tag: None,
            influx_metric: Default::default(),
            sparkplug: None,
        };
        let Ok(sub) = crate::sources::mqtt::payload::Sub::compile(&sub) else {
            continue;
        };
        let mut out = Check::default();
        let _ = crate::sources::mqtt::payload::decode(&[sub], topic, payload, &mut out);
    }
}

/// Sparkplug B payloads (the rest) on a topic (first line, or a birth/data sequence when it is
/// empty), through one state with small caps: births then data and deaths on the same bytes.
pub fn sparkplug(data: &[u8]) {
    use crate::sources::mqtt::sparkplug::Sparkplug;
    let (topic, payload) = split(data);
    let mut sp = Sparkplug::new(crate::config::SparkplugConfig {
        max_nodes: 2,
        max_devices: 2,
        max_metrics: 8,
        ..Default::default()
    });
    let now = std::time::Instant::now();
    let topics: &[&str] = if topic.is_empty() {
        &[
            "spBv1.0/G/NBIRTH/E",
            "spBv1.0/G/DBIRTH/E/D",
            "spBv1.0/G/DDATA/E/D",
            "spBv1.0/G/NDATA/E",
            "spBv1.0/G/DDEATH/E/D",
            "spBv1.0/G/NDEATH/E",
            "spBv1.0/G/NDATA/E",
        ]
    } else {
        &[topic]
    };
    for t in topics {
        let mut out = Check::default();
        if let Ok(n) = sp.handle(t, payload, now, &mut out) {
            assert_eq!(n, out.0, "sparkplug count");
        }
        for r in sp.take_rebirths() {
            assert!(r.topic.contains("/NCMD/"), "rebirth topic {}", r.topic);
        }
    }
    let c = sp.counts();
    assert!(
        c.nodes <= 2 && c.devices <= 2 && c.metrics <= 8,
        "caps: {c:?}"
    );
    let _ = sp.units();
}

/// Modbus register and bit responses for every type, word order and offset.
pub fn modbus(data: &[u8]) {
    let words: Vec<u16> = data
        .chunks(2)
        .map(|c| u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)]))
        .collect();
    let bits: Vec<bool> = data.iter().map(|b| b & 1 == 1).collect();
    let offset = u16::from(data.first().copied().unwrap_or(0) % 8);
    let scale = f64::from(data.get(1).copied().unwrap_or(1) as i8);
    for (register, ty) in [
        (RegisterKind::Holding, DataType::U16),
        (RegisterKind::Holding, DataType::I16),
        (RegisterKind::Input, DataType::U32),
        (RegisterKind::Input, DataType::I32),
        (RegisterKind::Holding, DataType::F32),
        (RegisterKind::Coil, DataType::Bool),
        (RegisterKind::Discrete, DataType::Bool),
    ] {
        for word_order in [WordOrder::Big, WordOrder::Little] {
            let point = ModbusPoint {
                metric: "m".into(),
                register,
                address: 0,
                data_type: Some(ty),
                word_order,
                scale,
                offset: 0.5,
            };
            let v = if register.is_bit() {
                crate::sources::modbus::plan::value_from_bits(&point, offset, &bits)
            } else {
                crate::sources::modbus::plan::value_from_registers(&point, offset, &words)
            };
            if let Ok(v) = v {
                assert!(v.is_finite(), "non-finite modbus value");
            }
        }
    }
}

/// The config loader (TOML, interpolation, validation): errors, never panics.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = crate::config::parse_str(text, std::path::Path::new("fuzz.toml"));
}

/// Records read back from sled: the checksummed record frame, a device snapshot, an alert.
pub fn store_records(data: &[u8]) {
    let cut = usize::from(data.first().copied().unwrap_or(0) % 16).min(data.len());
    let (key, value) = data.split_at(cut);
    let _ = crate::store::record::open(key, value);
    crate::analysis::shard::fuzz_snapshot(data);
    let _ = serde_json::from_slice::<crate::model::Alert>(data);
}

/// What the upstream receiver sends back (acks).
pub fn ws_ack(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = crate::protocol::parse_from_receiver(text);
    }
}

/// One target: raw bytes in, a panic is a finding.
pub type Target = fn(&[u8]);

/// Every target, by the name of its `fuzz/fuzz_targets/*.rs` file.
pub const TARGETS: &[(&str, Target)] = &[
    ("decode", frame_decoders),
    ("columns", columns),
    ("path", path),
    ("framer", framer),
    ("mqtt", mqtt),
    ("sparkplug", sparkplug),
    ("modbus", modbus),
    ("config", config),
    ("store", store_records),
    ("ws_ack", ws_ack),
];
