//! JSON payloads whose value and timestamp sit at configured field paths (`reading.temp`, `time`,
//! `items.0.v`); timestamps in unix seconds, milliseconds or RFC 3339. Device and metric come from outside.

use serde_json::Value;

use super::DecodeError;
use super::{check_finite, check_name, parse_ts, parse_value, shorten, TsUnit};
use crate::model::{Millis, SampleSink};

/// A dotted path into a JSON document: object keys, or array indices for arrays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldPath {
    text: String,
    segments: Vec<String>,
}

impl FieldPath {
    /// Parses `a.b.c`; empty segments are an error.
    pub fn parse(text: &str) -> Result<Self, String> {
        let segments: Vec<String> = text.split('.').map(str::to_owned).collect();
        if segments.iter().any(String::is_empty) {
            return Err(format!("invalid field path {text:?}: empty segment"));
        }
        Ok(FieldPath {
            text: text.to_owned(),
            segments,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    fn get<'v>(&self, root: &'v Value) -> Option<&'v Value> {
        let mut v = root;
        for s in &self.segments {
            v = match v {
                Value::Object(m) => m.get(s)?,
                Value::Array(a) => a.get(s.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        Some(v)
    }
}

/// Reads the value at `value` (a number or a numeric string) and the optional timestamp at `ts`
/// from a JSON document and pushes one sample for `device`/`metric`.
pub fn decode(
    frame: &[u8],
    value: &FieldPath,
    ts: Option<&FieldPath>,
    device: &str,
    metric: &str,
    unit: TsUnit,
    out: &mut impl SampleSink,
) -> Result<usize, DecodeError> {
    check_name("device", device)?;
    check_name("metric", metric)?;
    let doc: Value = serde_json::from_slice(frame).map_err(|e| DecodeError::Json(e.to_string()))?;
    let field = value.as_str();
    let v = match value.get(&doc) {
        None => return Err(DecodeError::MissingPath(shorten(field))),
        Some(Value::Number(n)) => check_finite(field, n.as_f64().unwrap_or(f64::NAN))?,
        Some(Value::String(s)) => parse_value(field, s)?,
        Some(other) => return Err(super::bad_number(field, &other.to_string())),
    };
    let ts = match ts {
        None => None,
        Some(p) => match p.get(&doc) {
            None => return Err(DecodeError::MissingPath(shorten(p.as_str()))),
            Some(Value::Null) => None,
            Some(t) => Some(timestamp(p.as_str(), t, unit)?),
        },
    };
    out.push(device, metric, ts, v);
    Ok(1)
}

/// A JSON timestamp: an integer or float in `unit` (as `ts` everywhere), or an RFC 3339 string.
fn timestamp(field: &str, t: &Value, unit: TsUnit) -> Result<Millis, DecodeError> {
    let bad = || DecodeError::BadTimestamp {
        field: shorten(field),
        text: shorten(&t.to_string()),
    };
    match t {
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => unit.ms_from_i64(i),
            (None, Some(f)) if f.is_finite() => unit.ms_from_f64(f),
            _ => None,
        }
        .ok_or_else(bad),
        Value::String(s) => {
            parse_ts(s, unit).or_else(|_| crate::timestamp::calendar(s).ok_or_else(bad))
        }
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{rec, VecSink};
    use super::*;

    fn p(s: &str) -> FieldPath {
        FieldPath::parse(s).expect("path")
    }

    #[test]
    fn nested_value_and_timestamps_in_every_unit() {
        let mut s = VecSink::default();
        let f = br#"{"reading":{"temp":21.5},"time":1763761234}"#;
        assert_eq!(
            decode(
                f,
                &p("reading.temp"),
                Some(&p("time")),
                "d",
                "t",
                TsUnit::Auto,
                &mut s
            ),
            Ok(1)
        );
        let f = br#"{"reading":{"temp":"22"},"time":1763761234567}"#;
        decode(
            f,
            &p("reading.temp"),
            Some(&p("time")),
            "d",
            "t",
            TsUnit::Auto,
            &mut s,
        )
        .expect("ms");
        let f = br#"{"r":[1,{"v":3}],"time":"2025-11-21T21:40:34.567Z"}"#;
        decode(
            f,
            &p("r.1.v"),
            Some(&p("time")),
            "d",
            "t",
            TsUnit::Auto,
            &mut s,
        )
        .expect("rfc3339");
        let f = br#"{"v":4,"time":"2025-11-21T22:40:34.567+01:00"}"#;
        decode(f, &p("v"), Some(&p("time")), "d", "t", TsUnit::Auto, &mut s).expect("offset");
        let f = br#"{"v":5}"#;
        decode(f, &p("v"), None, "d", "t", TsUnit::Auto, &mut s).expect("no ts");
        assert_eq!(
            s.0,
            vec![
                rec("d", "t", Some(1_763_761_234_000), 21.5),
                rec("d", "t", Some(1_763_761_234_567), 22.0),
                rec("d", "t", Some(1_763_761_234_567), 3.0),
                rec("d", "t", Some(1_763_761_234_567), 4.0),
                rec("d", "t", None, 5.0),
            ]
        );
    }

    #[test]
    fn errors_name_the_path() {
        let mut s = VecSink::default();
        let e = |f: &[u8]| {
            decode(
                f,
                &p("a.b"),
                Some(&p("ts")),
                "d",
                "t",
                TsUnit::Auto,
                &mut VecSink::default(),
            )
        };
        assert_eq!(
            e(br#"{"a":{}}"#),
            Err(DecodeError::MissingPath("a.b".into()))
        );
        assert_eq!(
            e(br#"{"a":{"b":1}}"#),
            Err(DecodeError::MissingPath("ts".into()))
        );
        assert!(matches!(
            e(br#"{"a":{"b":1},"ts":"yesterday"}"#),
            Err(DecodeError::BadTimestamp { .. })
        ));
        assert!(matches!(
            e(br#"{"a":{"b":true},"ts":1}"#),
            Err(DecodeError::BadNumber { .. })
        ));
        assert!(matches!(e(b"{not json"), Err(DecodeError::Json(_))));
        assert!(decode(b"{}", &p("x"), None, "", "t", TsUnit::Auto, &mut s).is_err());
        assert!(FieldPath::parse("a..b").is_err());
        assert!(s.0.is_empty());
    }
}
