//! Frame decoders: turn one input frame (a JSON object, a CSV record, key=value pairs or an Influx
//! line protocol point) into samples.
//! Pure code without I/O; `framing` cuts byte streams into frames, the per-format modules parse them.

pub mod columns;
pub(crate) mod csv;
pub mod framing;
pub mod influx;
pub(crate) mod json;
pub(crate) mod kv;
pub(crate) mod path;

use crate::model::Millis;
use serde::Deserialize;
use std::fmt;

/// Wire format of a source's frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Json,
    Csv,
    Kv,
    /// Influx line protocol.
    Influx,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Csv => "csv",
            Format::Kv => "kv",
            Format::Influx => "influx",
        }
    }
}

/// What a decoder is told besides the frame; cheap to copy, built per message where the
/// default device varies (MQTT topics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Opts<'a> {
    /// Device of frames that name none.
    pub device: Option<&'a str>,
    /// Unit of numeric timestamps (Influx: the precision).
    pub ts_unit: TsUnit,
    /// Influx line protocol only: where device and metric names come from.
    pub influx: influx::Mapping<'a>,
}

impl<'a> Opts<'a> {
    /// Defaults with a default device.
    pub fn device(device: Option<&'a str>) -> Self {
        Opts {
            device,
            ..Opts::default()
        }
    }
}

/// The owned form of `Opts`, as a source keeps it from its config.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    pub device: Option<String>,
    pub ts_unit: TsUnit,
    pub device_tag: Option<String>,
    pub influx_metric: influx::MetricName,
}

impl Settings {
    pub fn opts(&self) -> Opts<'_> {
        Opts {
            device: self.device.as_deref(),
            ts_unit: self.ts_unit,
            influx: influx::Mapping {
                device_tag: self.device_tag.as_deref(),
                metric: self.influx_metric,
            },
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Longest device id or metric name, in bytes.
pub const MAX_NAME_LEN: usize = 128;
/// Most samples one frame may carry.
pub const MAX_SAMPLES_PER_FRAME: usize = 256;
pub use crate::timestamp::{TsUnit, SECONDS_CUTOFF};

/// Why a frame was rejected. The message is meant to be logged as the reason.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    #[error("frame is not valid UTF-8")]
    NotUtf8,
    #[error("invalid JSON: {0}")]
    Json(String),
    #[error("invalid CSV: {0}")]
    Csv(String),
    #[error("invalid key=value frame: {0}")]
    Kv(String),
    #[error("invalid column frame: {0}")]
    Columns(String),
    #[error("invalid line protocol: {0}")]
    Influx(String),
    #[error("missing field `{0}`")]
    MissingField(&'static str),
    #[error("duplicate field `{0}`")]
    DuplicateField(&'static str),
    #[error("field `{field}`: {text:?} is not a valid number")]
    BadNumber { field: String, text: String },
    #[error("field `{field}`: value is not finite")]
    NonFinite { field: String },
    #[error("frame carries no values")]
    NoValues,
    #[error("bad {what} name {name:?}: {why}")]
    BadName {
        what: &'static str,
        name: String,
        why: &'static str,
    },
    #[error("too many fields (at most {MAX_SAMPLES_PER_FRAME} samples per frame)")]
    TooManyFields,
    #[error("no field at path `{0}`")]
    MissingPath(String),
    #[error(
        "field `{field}`: {text:?} is not a timestamp (unix seconds, milliseconds or RFC 3339)"
    )]
    BadTimestamp { field: String, text: String },
}

/// Decodes one frame (a line without its delimiter) and pushes its samples into `out`.
/// Returns how many samples were pushed; `Ok(0)` for a blank frame or a CSV header.
/// On error nothing has been pushed.
pub fn decode(
    format: Format,
    frame: &[u8],
    opts: &Opts<'_>,
    out: &mut impl crate::model::SampleSink,
) -> Result<usize, DecodeError> {
    let text = std::str::from_utf8(frame).map_err(|_| DecodeError::NotUtf8)?;
    let (device, unit) = (opts.device, opts.ts_unit);
    match format {
        Format::Json => json::decode(text, device, unit, out),
        Format::Csv => csv::decode(text, device, unit, out),
        Format::Kv => kv::decode(text, device, unit, out),
        Format::Influx => influx::decode(text, device, opts.influx, unit, out),
    }
}

/// Samples of one frame, collected before any is pushed.
pub(crate) type Collected<'a> = smallvec::SmallVec<[(std::borrow::Cow<'a, str>, f64); 8]>;

/// Pushes collected samples, all with the same device and timestamp.
pub(crate) fn emit(
    out: &mut impl crate::model::SampleSink,
    device: &str,
    ts: Option<Millis>,
    samples: &Collected<'_>,
) -> usize {
    for (metric, value) in samples {
        out.push(device, metric, ts, *value);
    }
    samples.len()
}

/// A name shortened for error messages (at most 64 chars).
pub(crate) fn shorten(s: &str) -> String {
    const KEEP: usize = 64;
    match s.char_indices().nth(KEEP) {
        Some((cut, _)) => {
            let mut t = String::with_capacity(cut + 3);
            t.push_str(s.get(..cut).unwrap_or_default());
            t.push('…');
            t
        }
        None => s.to_owned(),
    }
}

/// Checks a device id or metric name: non-empty, at most `MAX_NAME_LEN` bytes, no control chars.
/// Unicode bidirectional formatting characters (marks, embeddings, overrides, isolates): in a name
/// they make a log line or the dashboard show something else than what is stored ("Trojan Source").
pub fn is_bidi(c: char) -> bool {
    matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

pub(crate) fn check_name(what: &'static str, name: &str) -> Result<(), DecodeError> {
    let why = if name.is_empty() {
        "empty"
    } else if name.len() > MAX_NAME_LEN {
        "longer than 128 bytes"
    } else if name.chars().any(char::is_control) {
        "contains control characters"
    } else if !name.is_ascii() && name.chars().any(is_bidi) {
        "contains bidirectional formatting characters"
    } else {
        return Ok(());
    };
    Err(DecodeError::BadName {
        what,
        name: shorten(name),
        why,
    })
}

/// The frame's device, else the default; validated.
pub(crate) fn resolve_device<'a>(
    frame_device: Option<&'a str>,
    default_device: Option<&'a str>,
) -> Result<&'a str, DecodeError> {
    let device = frame_device
        .or(default_device)
        .ok_or(DecodeError::MissingField("device"))?;
    check_name("device", device)?;
    Ok(device)
}

pub(crate) fn bad_number(field: &str, text: &str) -> DecodeError {
    DecodeError::BadNumber {
        field: shorten(field),
        text: shorten(text),
    }
}

pub(crate) fn check_finite(field: &str, value: f64) -> Result<f64, DecodeError> {
    if value.is_finite() {
        Ok(value)
    } else {
        Err(DecodeError::NonFinite {
            field: shorten(field),
        })
    }
}

/// Parses a sample value from text (surrounding whitespace allowed); must be finite.
pub(crate) fn parse_value(field: &str, text: &str) -> Result<f64, DecodeError> {
    let v: f64 = text.trim().parse().map_err(|_| bad_number(field, text))?;
    check_finite(field, v)
}

/// Parses a numeric timestamp in `unit` from text (surrounding whitespace allowed): an integer,
/// else a float. Calendar times are `crate::timestamp::calendar`'s.
pub(crate) fn parse_ts(text: &str, unit: TsUnit) -> Result<Millis, DecodeError> {
    let t = text.trim();
    let ms = match t.parse::<i64>() {
        Ok(v) => unit.ms_from_i64(v),
        Err(_) => {
            let v: f64 = t.parse().map_err(|_| bad_number("ts", text))?;
            unit.ms_from_f64(check_finite("ts", v)?)
        }
    };
    ms.ok_or_else(|| bad_number("ts", text))
}

#[cfg(test)]
pub(crate) mod test_util {
    use crate::model::{Millis, SampleSink};

    pub type Rec = (String, String, Option<i64>, f64);

    #[derive(Debug, Default, PartialEq)]
    pub struct VecSink(pub Vec<Rec>);

    impl SampleSink for VecSink {
        fn push(&mut self, device: &str, metric: &str, ts: Option<Millis>, value: f64) {
            self.0
                .push((device.to_owned(), metric.to_owned(), ts, value));
        }
    }

    pub fn rec(d: &str, m: &str, ts: Option<i64>, v: f64) -> Rec {
        (d.to_owned(), m.to_owned(), ts, v)
    }
}

#[cfg(test)]
mod tests {
    use super::test_util::{rec, VecSink};
    use super::*;

    #[test]
    fn format_deserializes_lowercase() {
        #[derive(Deserialize)]
        struct W {
            f: Format,
        }
        let w: W = serde_json::from_str(r#"{"f":"kv"}"#).unwrap();
        assert_eq!(w.f, Format::Kv);
        let w: W = serde_json::from_str(r#"{"f":"json"}"#).unwrap();
        assert_eq!(w.f, Format::Json);
        let w: W = serde_json::from_str(r#"{"f":"csv"}"#).unwrap();
        assert_eq!(w.f, Format::Csv);
        let w: W = serde_json::from_str(r#"{"f":"influx"}"#).unwrap();
        assert_eq!(w.f, Format::Influx);
        assert!(serde_json::from_str::<W>(r#"{"f":"Json"}"#).is_err());
        assert_eq!(Format::Csv.to_string(), "csv");
    }

    #[test]
    fn dispatches_by_format() {
        let mut s = VecSink::default();
        let n = decode(
            Format::Json,
            br#"{"device":"d1","metric":"t","value":1}"#,
            &Opts::default(),
            &mut s,
        )
        .unwrap();
        assert_eq!(n, 1);
        let none = Opts::default();
        assert_eq!(decode(Format::Csv, b"d2,t,2", &none, &mut s), Ok(1));
        assert_eq!(decode(Format::Kv, b"device=d3 t=3", &none, &mut s), Ok(1));
        assert_eq!(decode(Format::Influx, b"d4 t=4", &none, &mut s), Ok(1));
        assert_eq!(
            s.0,
            vec![
                rec("d1", "t", None, 1.0),
                rec("d2", "t", None, 2.0),
                rec("d3", "t", None, 3.0),
                rec("d4", "t", None, 4.0)
            ]
        );
    }

    #[test]
    fn invalid_utf8_is_rejected_for_every_format() {
        for f in [Format::Json, Format::Csv, Format::Kv, Format::Influx] {
            let mut s = VecSink::default();
            assert_eq!(
                decode(f, b"d1,t,\xff\xfe", &Opts::device(Some("x")), &mut s),
                Err(DecodeError::NotUtf8)
            );
            assert!(s.0.is_empty());
        }
    }

    #[test]
    fn blank_frames_are_ok_zero() {
        for f in [Format::Json, Format::Csv, Format::Kv, Format::Influx] {
            let mut s = VecSink::default();
            assert_eq!(decode(f, b"", &Opts::default(), &mut s), Ok(0));
            assert_eq!(decode(f, b" \t\r ", &Opts::default(), &mut s), Ok(0));
            assert!(s.0.is_empty());
        }
    }

    #[test]
    fn timestamps_seconds_ms_and_bounds() {
        let parse_ts = |t| parse_ts(t, TsUnit::Auto);
        assert_eq!(parse_ts("1763761234"), Ok(1_763_761_234_000));
        assert_eq!(parse_ts("1763761234.5"), Ok(1_763_761_234_500));
        assert_eq!(parse_ts("1763761234567"), Ok(1_763_761_234_567));
        assert_eq!(parse_ts("1763761234567.4"), Ok(1_763_761_234_567));
        assert_eq!(parse_ts("99999999999"), Ok(99_999_999_999_000));
        assert_eq!(parse_ts("100000000000"), Ok(100_000_000_000));
        assert_eq!(parse_ts("0"), Ok(0));
        assert_eq!(parse_ts(" 12 "), Ok(12_000));
        assert_eq!(parse_ts("-1"), Err(bad_number("ts", "-1")));
        assert_eq!(parse_ts("abc"), Err(bad_number("ts", "abc")));
        assert_eq!(
            parse_ts("1e30"),
            Err(DecodeError::BadNumber {
                field: "ts".into(),
                text: "1e30".into()
            })
        );
        assert_eq!(
            parse_ts("nan"),
            Err(DecodeError::NonFinite { field: "ts".into() })
        );
        assert_eq!(
            parse_ts("inf"),
            Err(DecodeError::NonFinite { field: "ts".into() })
        );
        // Beyond 10^17 a value is nanoseconds.
        assert_eq!(parse_ts("9223372036854775807"), Ok(9_223_372_036_854));
        assert_eq!(parse_ts("9223372036854775808"), Ok(9_223_372_036_855));
    }

    #[test]
    fn every_format_applies_the_unit() {
        let ns = Opts {
            ts_unit: TsUnit::Ns,
            ..Opts::device(Some("d"))
        };
        let frames: [(Format, &[u8]); 4] = [
            (Format::Json, br#"{"t":1,"ts":1500000000}"#),
            (Format::Csv, b"d,t,1,1500000000"),
            (Format::Kv, b"t=1 ts=1500000000"),
            (Format::Influx, b"d t=1 1500000000"),
        ];
        for (f, frame) in frames {
            let mut s = VecSink::default();
            decode(f, frame, &ns, &mut s).expect("decodes");
            // Taken for seconds without the unit.
            assert_eq!(s.0[0].2, Some(1500), "{f}");
        }
    }

    #[test]
    fn values_must_be_finite_numbers() {
        assert_eq!(parse_value("v", " 22.5 "), Ok(22.5));
        assert_eq!(parse_value("v", "-1e3"), Ok(-1000.0));
        assert_eq!(
            parse_value("v", "1e400"),
            Err(DecodeError::NonFinite { field: "v".into() })
        );
        assert_eq!(
            parse_value("v", "NaN"),
            Err(DecodeError::NonFinite { field: "v".into() })
        );
        assert_eq!(
            parse_value("v", "12a"),
            Err(DecodeError::BadNumber {
                field: "v".into(),
                text: "12a".into()
            })
        );
    }

    #[test]
    fn names_are_checked() {
        assert_eq!(check_name("device", "d1"), Ok(()));
        assert_eq!(check_name("device", &"x".repeat(128)), Ok(()));
        assert_eq!(
            check_name("device", ""),
            Err(DecodeError::BadName {
                what: "device",
                name: String::new(),
                why: "empty"
            })
        );
        let long = "é".repeat(65);
        match check_name("metric", &long) {
            Err(DecodeError::BadName { what, name, why }) => {
                assert_eq!(what, "metric");
                assert_eq!(why, "longer than 128 bytes");
                assert_eq!(name, format!("{}…", "é".repeat(64)));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(
            check_name("metric", "a\u{7}b"),
            Err(DecodeError::BadName {
                what: "metric",
                name: "a\u{7}b".into(),
                why: "contains control characters"
            })
        );
    }

    #[test]
    fn error_messages_read_well() {
        assert_eq!(
            DecodeError::MissingField("device").to_string(),
            "missing field `device`"
        );
        assert_eq!(
            bad_number("value", "x1").to_string(),
            "field `value`: \"x1\" is not a valid number"
        );
        assert_eq!(
            DecodeError::TooManyFields.to_string(),
            "too many fields (at most 256 samples per frame)"
        );
    }
}
