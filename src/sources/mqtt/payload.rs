//! One subscription compiled for the hot path (pattern, payload format, field paths) and the pure
//! function that turns one MQTT message into samples.

use rumqttc::QoS;

use super::topic::{Captures, Pattern};
use crate::config::{MqttPayload, MqttSubscription};
use crate::decode::path::FieldPath;
use crate::decode::{check_name, json, parse_value, DecodeError, Format, Opts, Settings};
use crate::model::SampleSink;

/// A subscription ready to use.
#[derive(Debug, Clone)]
pub struct Sub {
    pub pattern: Pattern,
    pub filter: String,
    pub qos: QoS,
    pub format: MqttPayload,
    pub value: Option<FieldPath>,
    pub ts: Option<FieldPath>,
    pub device: Option<String>,
    pub metric: Option<String>,
    /// Timestamp unit and Influx mapping (its `device` is unused: the topic's or `device` is).
    pub settings: Settings,
    /// `format = "sparkplug_b"`: its settings (the state lives in the decode task).
    pub sparkplug: Option<crate::config::SparkplugConfig>,
}

impl Sub {
    /// Compiles a validated subscription; the error text says which part is wrong.
    pub fn compile(s: &MqttSubscription) -> Result<Self, String> {
        let pattern = Pattern::parse(&s.topic)?;
        Ok(Sub {
            filter: pattern.filter(),
            pattern,
            qos: if s.qos == 0 {
                QoS::AtMostOnce
            } else {
                QoS::AtLeastOnce
            },
            format: s.format,
            value: s.value.as_deref().map(FieldPath::parse).transpose()?,
            ts: s.ts.as_deref().map(FieldPath::parse).transpose()?,
            device: s.device.clone(),
            metric: s.metric.clone(),
            settings: Settings {
                device: None,
                ts_unit: s.ts_unit,
                device_tag: s.device_tag.clone(),
                influx_metric: s.influx_metric,
            },
            sparkplug: (s.format == MqttPayload::SparkplugB)
                .then(|| s.sparkplug.clone().unwrap_or_default()),
        })
    }
}

/// Why a message produced no samples.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PayloadError {
    #[error("the topic matches no subscription pattern")]
    NoPattern,
    #[error("{0}")]
    Decode(#[from] DecodeError),
    #[error("{0}")]
    Sparkplug(#[from] super::sparkplug::SparkplugError),
    #[error("Sparkplug B payloads are decoded with the source's state")]
    Stateful,
}

/// The first subscription whose pattern matches `topic`, with its index and captures.
pub fn find<'t>(subs: &[Sub], topic: &'t str) -> Option<(usize, Captures<'t>)> {
    subs.iter()
        .enumerate()
        .find_map(|(i, s)| s.pattern.captures(topic).map(|c| (i, c)))
}

/// Finds the first subscription whose pattern matches `topic` and decodes `payload` with it.
/// Returns the number of samples pushed.
pub fn decode(
    subs: &[Sub],
    topic: &str,
    payload: &[u8],
    out: &mut impl SampleSink,
) -> Result<usize, PayloadError> {
    let (i, c) = find(subs, topic).ok_or(PayloadError::NoPattern)?;
    let s = &subs[i];
    if s.sparkplug.is_some() {
        return Err(PayloadError::Stateful);
    }
    Ok(decode_one(s, c, payload, out)?)
}

/// Decodes `payload` with one stateless subscription.
pub fn decode_one(
    s: &Sub,
    c: Captures<'_>,
    payload: &[u8],
    out: &mut impl SampleSink,
) -> Result<usize, DecodeError> {
    let device = c.device.or(s.device.as_deref());
    let metric = c.metric.or(s.metric.as_deref());
    let opts = Opts {
        device,
        ..s.settings.opts()
    };
    let named = || -> Result<(&str, &str), DecodeError> {
        let d = device.ok_or(DecodeError::MissingField("device"))?;
        let m = metric.ok_or(DecodeError::MissingField("metric"))?;
        check_name("device", d)?;
        check_name("metric", m)?;
        Ok((d, m))
    };
    match (s.format, &s.value) {
        (MqttPayload::Json, Some(value)) => {
            let (d, m) = named()?;
            crate::decode::path::decode(payload, value, s.ts.as_ref(), d, m, opts.ts_unit, out)
        }
        (MqttPayload::Number, _) => {
            let (d, m) = named()?;
            let text = std::str::from_utf8(payload).map_err(|_| DecodeError::NotUtf8)?;
            let v = parse_value("payload", text)?;
            out.push(d, m, None, v);
            Ok(1)
        }
        (MqttPayload::Json, None) => {
            let text = std::str::from_utf8(payload).map_err(|_| DecodeError::NotUtf8)?;
            match json::decode_with(text, device, metric, opts.ts_unit, out)? {
                0 => Err(DecodeError::NoValues),
                n => Ok(n),
            }
        }
        (MqttPayload::SparkplugB, _) => Err(DecodeError::MissingField("Sparkplug B state")),
        (MqttPayload::Csv | MqttPayload::Kv | MqttPayload::Influx, _) => {
            let f = match s.format {
                MqttPayload::Csv => Format::Csv,
                MqttPayload::Kv => Format::Kv,
                _ => Format::Influx,
            };
            // Several lines may share one message; lines before a bad one are kept.
            let mut n = 0;
            for line in payload.split(|b| *b == b'\n') {
                n += crate::decode::decode(f, line, &opts, out)?;
            }
            if n == 0 {
                return Err(DecodeError::NoValues);
            }
            Ok(n)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::test_util::{rec, VecSink};

    fn sub(topic: &str, format: MqttPayload, value: Option<&str>, ts: Option<&str>) -> Sub {
        Sub::compile(&MqttSubscription {
            topic: topic.into(),
            qos: 1,
            format,
            value: value.map(Into::into),
            ts: ts.map(Into::into),
            device: None,
            metric: None,
            ts_unit: Default::default(),
            device_tag: None,
            influx_metric: Default::default(),
            sparkplug: None,
        })
        .expect("compile")
    }

    #[test]
    fn every_payload_format() {
        let subs = [
            sub("num/{device}/{metric}", MqttPayload::Number, None, None),
            sub(
                "deep/{device}/{metric}",
                MqttPayload::Json,
                Some("reading.temp"),
                Some("time"),
            ),
            sub("sensors/{device}/{metric}", MqttPayload::Json, None, None),
            sub("multi/{device}", MqttPayload::Json, None, None),
            sub("csv/{device}", MqttPayload::Csv, None, None),
            sub("kv/{device}", MqttPayload::Kv, None, None),
            sub("influx/{device}", MqttPayload::Influx, None, None),
            sub("telegraf/#", MqttPayload::Influx, None, None),
        ];
        let mut s = VecSink::default();
        let mut d = |t: &str, p: &[u8]| decode(&subs, t, p, &mut s);
        assert_eq!(d("num/a/b/temp", b" 21.5\n"), Ok(1));
        assert_eq!(
            d(
                "deep/d2/t",
                br#"{"reading":{"temp":3},"time":"2025-11-21T21:40:34Z"}"#
            ),
            Ok(1)
        );
        assert_eq!(
            d("sensors/d3/hum", br#"{"ts":1763761234567,"value":40.5}"#),
            Ok(1)
        );
        assert_eq!(
            d("multi/d4", br#"{"ts":1763761234,"temp":1,"hum":2}"#),
            Ok(2)
        );
        assert_eq!(d("csv/d5", b"d5,temp,7\nd6,temp,8\n"), Ok(2));
        assert_eq!(d("kv/d7", b"temp=9 hum=10"), Ok(2));
        // Influx: the topic names the device; without one, the measurement does.
        assert_eq!(
            d("influx/d8", b"env temp=11,on=true 1763761234567000000\n"),
            Ok(2)
        );
        assert_eq!(d("telegraf/x", b"d9 temp=12i"), Ok(1));
        assert_eq!(
            s.0,
            vec![
                rec("a/b", "temp", None, 21.5),
                rec("d2", "t", Some(1_763_761_234_000), 3.0),
                rec("d3", "hum", Some(1_763_761_234_567), 40.5),
                rec("d4", "temp", Some(1_763_761_234_000), 1.0),
                rec("d4", "hum", Some(1_763_761_234_000), 2.0),
                rec("d5", "temp", None, 7.0),
                rec("d6", "temp", None, 8.0),
                rec("d7", "temp", None, 9.0),
                rec("d7", "hum", None, 10.0),
                rec("d8", "env.temp", Some(1_763_761_234_567), 11.0),
                rec("d8", "env.on", Some(1_763_761_234_567), 1.0),
                rec("d9", "temp", None, 12.0),
            ]
        );
    }

    #[test]
    fn bad_payloads_say_why() {
        let subs = [
            sub("num/{device}/{metric}", MqttPayload::Number, None, None),
            sub("sensors/{device}/{metric}", MqttPayload::Json, None, None),
        ];
        let mut s = VecSink::default();
        let mut d = |t: &str, p: &[u8]| decode(&subs, t, p, &mut s);
        assert_eq!(d("elsewhere/x", b"1"), Err(PayloadError::NoPattern));
        assert!(d("num/a/t", b"abc")
            .unwrap_err()
            .to_string()
            .contains("not a valid number"));
        assert!(d("num//t", b"1").unwrap_err().to_string().contains("empty"));
        assert!(d("sensors/a/t", b"{\"value\":")
            .unwrap_err()
            .to_string()
            .contains("JSON"));
        assert_eq!(
            d("sensors/a/t", b"{}"),
            Err(PayloadError::Decode(DecodeError::NoValues))
        );
        assert!(s.0.is_empty());
    }
}
