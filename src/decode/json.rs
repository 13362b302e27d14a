//! JSON frames: one object per line, e.g. `{"device":"d1","metric":"temp","ts":1763761234567,"value":22.1}`
//! or multi-metric `{"device":"d1","ts":1763761234,"temp":22.1,"humidity":40}`.
//!
//! Parsed with a streaming serde visitor straight off the input: keys and strings borrow from the
//! frame unless they contain escapes, so a typical frame does not touch the heap.

use super::{
    bad_number, check_finite, check_name, emit, ms_from_f64, ms_from_i64, parse_ts, parse_value,
    resolve_device, Collected, DecodeError, MAX_SAMPLES_PER_FRAME,
};
use crate::model::{Millis, SampleSink};
use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::borrow::Cow;
use std::fmt;

/// Decodes one JSON object frame; see the module docs for the accepted shapes.
pub fn decode(
    frame: &str,
    default_device: Option<&str>,
    out: &mut impl SampleSink,
) -> Result<usize, DecodeError> {
    let frame = frame.trim_ascii();
    if frame.is_empty() {
        return Ok(0);
    }
    let mut rejected = None;
    let mut de = serde_json::Deserializer::from_str(frame);
    let parsed = match de.deserialize_map(FrameVisitor {
        rejected: &mut rejected,
    }) {
        Ok(p) => p,
        Err(e) => return Err(rejected.unwrap_or_else(|| DecodeError::Json(e.to_string()))),
    };
    de.end().map_err(|e| DecodeError::Json(e.to_string()))?;

    let Parsed {
        device,
        metric,
        value,
        ts,
        mut samples,
    } = parsed;
    let device = resolve_device(device.as_deref(), default_device)?;
    match (metric, value) {
        (Some(metric), Some(value)) => {
            check_name("metric", &metric)?;
            let value = num_to_value("value", value)?;
            samples.insert(0, (metric, value));
        }
        (Some(_), None) => return Err(DecodeError::MissingField("value")),
        (None, Some(_)) => return Err(DecodeError::MissingField("metric")),
        (None, None) => {}
    }
    if samples.is_empty() {
        return Err(DecodeError::NoValues);
    }
    if samples.len() > MAX_SAMPLES_PER_FRAME {
        return Err(DecodeError::TooManyFields);
    }
    for (metric, _) in &samples {
        check_name("metric", metric)?;
    }
    let ts = match ts {
        None | Some(Num::Null) => None,
        Some(n) => Some(num_to_ts(n)?),
    };
    Ok(emit(out, device, ts, &samples))
}

/// What one object yielded, before validation.
struct Parsed<'de> {
    device: Option<Cow<'de, str>>,
    metric: Option<Cow<'de, str>>,
    value: Option<Num<'de>>,
    ts: Option<Num<'de>>,
    /// Numeric fields other than the known ones, in frame order.
    samples: Collected<'de>,
}

/// A number as it arrived: JSON number, numeric string, or null.
enum Num<'de> {
    Int(i64),
    UInt(u64),
    Float(f64),
    Text(Cow<'de, str>),
    Null,
}

fn num_to_value(field: &str, n: Num<'_>) -> Result<f64, DecodeError> {
    match n {
        Num::Int(v) => Ok(v as f64),
        Num::UInt(v) => Ok(v as f64),
        Num::Float(v) => check_finite(field, v),
        Num::Text(s) => parse_value(field, &s),
        Num::Null => Err(bad_number(field, "null")),
    }
}

fn num_to_ts(n: Num<'_>) -> Result<Millis, DecodeError> {
    match n {
        Num::Int(v) => ms_from_i64(v).ok_or_else(|| bad_number("ts", &v.to_string())),
        Num::UInt(v) => i64::try_from(v)
            .ok()
            .and_then(ms_from_i64)
            .ok_or_else(|| bad_number("ts", &v.to_string())),
        Num::Float(v) => {
            ms_from_f64(check_finite("ts", v)?).ok_or_else(|| bad_number("ts", &format!("{v:?}")))
        }
        Num::Text(s) => parse_ts(&s),
        Num::Null => Err(bad_number("ts", "null")),
    }
}

/// Which known field a key names.
enum Field {
    Device,
    Metric,
    Value,
    Ts,
    Other,
}

fn classify(key: &str) -> Field {
    match key {
        "device" | "id" => Field::Device,
        "metric" => Field::Metric,
        "value" => Field::Value,
        "ts" | "time" | "timestamp" => Field::Ts,
        _ => Field::Other,
    }
}

/// A string that borrows from the input when it has no escapes. (serde's own `Cow<str>`
/// impl always allocates.)
struct BorrowStr<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for BorrowStr<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(BorrowStrVisitor).map(BorrowStr)
    }
}

struct BorrowStrVisitor;

impl<'de> Visitor<'de> for BorrowStrVisitor {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v))
    }
}

impl<'de> Deserialize<'de> for Num<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NumVisitor)
    }
}

struct NumVisitor;

impl<'de> Visitor<'de> for NumVisitor {
    type Value = Num<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a number or a numeric string")
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Num::Int(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Num::UInt(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Num::Float(v))
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Num::Text(Cow::Borrowed(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Num::Text(Cow::Owned(v.to_owned())))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Num::Null)
    }
}

/// The value of an unknown field: its number if numeric, `None` for anything else (skipped).
struct Extra(Option<f64>);

impl<'de> Deserialize<'de> for Extra {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ExtraVisitor).map(Extra)
    }
}

struct ExtraVisitor;

impl<'de> Visitor<'de> for ExtraVisitor {
    type Value = Option<f64>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Some(v as f64))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Some(v as f64))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Some(v))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        IgnoredAny.visit_seq(seq).map(|_| None)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        IgnoredAny.visit_map(map).map(|_| None)
    }
}

/// Walks the top-level object. A rejection that is not a JSON syntax/type error is left in
/// `rejected` (the serde error returned alongside only stops the parse).
struct FrameVisitor<'r> {
    rejected: &'r mut Option<DecodeError>,
}

impl FrameVisitor<'_> {
    fn reject<E: de::Error, T>(self, e: DecodeError) -> Result<T, E> {
        *self.rejected = Some(e);
        Err(E::custom("frame rejected"))
    }
}

impl<'de> Visitor<'de> for FrameVisitor<'_> {
    type Value = Parsed<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut p = Parsed {
            device: None,
            metric: None,
            value: None,
            ts: None,
            samples: Collected::new(),
        };
        while let Some(BorrowStr(key)) = map.next_key()? {
            match classify(&key) {
                Field::Device => {
                    if p.device.is_some() {
                        return self.reject(DecodeError::DuplicateField("device"));
                    }
                    p.device = Some(map.next_value::<BorrowStr>()?.0);
                }
                Field::Metric => {
                    if p.metric.is_some() {
                        return self.reject(DecodeError::DuplicateField("metric"));
                    }
                    p.metric = Some(map.next_value::<BorrowStr>()?.0);
                }
                Field::Value => {
                    if p.value.is_some() {
                        return self.reject(DecodeError::DuplicateField("value"));
                    }
                    p.value = Some(map.next_value()?);
                }
                Field::Ts => {
                    if p.ts.is_some() {
                        return self.reject(DecodeError::DuplicateField("ts"));
                    }
                    p.ts = Some(map.next_value()?);
                }
                Field::Other => {
                    if let Extra(Some(v)) = map.next_value()? {
                        if p.samples.len() >= MAX_SAMPLES_PER_FRAME {
                            return self.reject(DecodeError::TooManyFields);
                        }
                        p.samples.push((key, v));
                    }
                }
            }
        }
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{rec, VecSink};
    use super::*;
    use proptest::prelude::*;

    fn ok(frame: &str, default_device: Option<&str>) -> Vec<(String, String, Option<i64>, f64)> {
        let mut s = VecSink::default();
        let n = decode(frame, default_device, &mut s)
            .unwrap_or_else(|e| panic!("{frame:?} failed: {e}"));
        assert_eq!(n, s.0.len());
        s.0
    }

    /// Decodes a frame that must fail, and checks nothing was pushed.
    fn err(frame: &str, default_device: Option<&str>) -> DecodeError {
        let mut s = VecSink::default();
        let e = decode(frame, default_device, &mut s).expect_err(frame);
        assert!(s.0.is_empty(), "{frame:?} pushed {:?}", s.0);
        e
    }

    fn bad(field: &str, text: &str) -> DecodeError {
        DecodeError::BadNumber {
            field: field.into(),
            text: text.into(),
        }
    }

    #[test]
    fn single_metric() {
        assert_eq!(
            ok(
                r#"{"device":"d1","metric":"temp","ts":1763761234567,"value":22.1}"#,
                None
            ),
            vec![rec("d1", "temp", Some(1_763_761_234_567), 22.1)]
        );
    }

    #[test]
    fn field_order_and_whitespace_are_free() {
        assert_eq!(
            ok(
                " \t{ \"value\" : -3 , \"ts\":1763761234, \"metric\":\"m\", \"device\":\"d9\" }\r ",
                None
            ),
            vec![rec("d9", "m", Some(1_763_761_234_000), -3.0)]
        );
    }

    #[test]
    fn timestamps_seconds_ms_fractional_absent_null() {
        let f = |ts: &str| ok(&format!(r#"{{"device":"d","v":1,"ts":{ts}}}"#), None)[0].2;
        assert_eq!(f("1763761234"), Some(1_763_761_234_000));
        assert_eq!(f("1763761234.25"), Some(1_763_761_234_250));
        assert_eq!(f("1763761234567"), Some(1_763_761_234_567));
        assert_eq!(f("1763761234567.0"), Some(1_763_761_234_567));
        assert_eq!(f(r#""1763761234""#), Some(1_763_761_234_000));
        assert_eq!(f(r#"" 1763761234567.6 ""#), Some(1_763_761_234_568));
        assert_eq!(f("null"), None);
        assert_eq!(ok(r#"{"device":"d","v":1}"#, None)[0].2, None);
    }

    #[test]
    fn aliases() {
        assert_eq!(
            ok(
                r#"{"id":"d1","metric":"t","value":1,"time":1700000000}"#,
                None
            ),
            vec![rec("d1", "t", Some(1_700_000_000_000), 1.0)]
        );
        assert_eq!(
            ok(r#"{"timestamp":1700000000123,"id":"d2","x":2}"#, None),
            vec![rec("d2", "x", Some(1_700_000_000_123), 2.0)]
        );
    }

    #[test]
    fn multi_metric_skips_non_numeric_fields() {
        let frame = r#"{"device":"d1","ts":1763761234,"temp":22.1,"name":"kitchen","humidity":40,
            "ok":true,"n":null,"cfg":{"a":[1,2,{"b":"c"}]},"list":[1,2,3],"neg":-7,"big":18446744073709551615}"#
            .replace('\n', "");
        assert_eq!(
            ok(&frame, None),
            vec![
                rec("d1", "temp", Some(1_763_761_234_000), 22.1),
                rec("d1", "humidity", Some(1_763_761_234_000), 40.0),
                rec("d1", "neg", Some(1_763_761_234_000), -7.0),
                rec(
                    "d1",
                    "big",
                    Some(1_763_761_234_000),
                    18_446_744_073_709_551_615.0
                ),
            ]
        );
    }

    #[test]
    fn metric_value_and_extras_are_all_emitted_main_first() {
        assert_eq!(
            ok(r#"{"a":1,"device":"d","value":2,"b":3,"metric":"m"}"#, None),
            vec![
                rec("d", "m", None, 2.0),
                rec("d", "a", None, 1.0),
                rec("d", "b", None, 3.0)
            ]
        );
    }

    #[test]
    fn numeric_strings_for_value_and_ts_only() {
        assert_eq!(
            ok(
                r#"{"device":"d","metric":"m","value":"22.5","ts":"1700000000"}"#,
                None
            ),
            vec![rec("d", "m", Some(1_700_000_000_000), 22.5)]
        );
        // A string in an unknown field is not a number: skipped.
        assert_eq!(
            ok(r#"{"device":"d","s":"22.5","n":1}"#, None),
            vec![rec("d", "n", None, 1.0)]
        );
    }

    #[test]
    fn default_device() {
        assert_eq!(
            ok(r#"{"temp":1}"#, Some("dflt")),
            vec![rec("dflt", "temp", None, 1.0)]
        );
        assert_eq!(
            ok(r#"{"device":"own","temp":1}"#, Some("dflt")),
            vec![rec("own", "temp", None, 1.0)]
        );
        assert_eq!(
            err(r#"{"temp":1}"#, Some("")),
            DecodeError::BadName {
                what: "device",
                name: String::new(),
                why: "empty"
            }
        );
    }

    #[test]
    fn escapes_in_keys_and_strings() {
        assert_eq!(
            ok(
                r#"{"dev\u0069ce":"d\"1\\","te\u006dp":5,"m\u00e9t\u00e9o":6}"#,
                None
            ),
            vec![
                rec("d\"1\\", "temp", None, 5.0),
                rec("d\"1\\", "météo", None, 6.0)
            ]
        );
        assert_eq!(
            ok(
                r#"{"device":"\ud83d\ude00","metric":"t\/x","value":1}"#,
                None
            ),
            vec![rec("😀", "t/x", None, 1.0)]
        );
    }

    #[test]
    fn deep_nesting_in_ignored_fields() {
        let deep = format!(
            r#"{{"device":"d","junk":{}{},"v":1}}"#,
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        assert_eq!(ok(&deep, None), vec![rec("d", "v", None, 1.0)]);
        let deep_obj = format!(
            r#"{{"device":"d","junk":{}1{},"v":1}}"#,
            r#"{"a":"#.repeat(10_000),
            "}".repeat(10_000)
        );
        assert_eq!(ok(&deep_obj, None), vec![rec("d", "v", None, 1.0)]);
        // Unbalanced deep nesting is an error, not a crash.
        let open = format!(r#"{{"device":"d","junk":{}"#, "[".repeat(100_000));
        assert!(matches!(err(&open, None), DecodeError::Json(_)));
        assert!(matches!(
            err(&"[".repeat(100_000), None),
            DecodeError::Json(_)
        ));
    }

    #[test]
    fn syntax_errors_carry_serde_message() {
        assert_eq!(
            err(r#"{"device":"d","v":1} x"#, None),
            DecodeError::Json("trailing characters at line 1 column 22".into())
        );
        assert_eq!(
            err(r#"{"device":"d","v":1}{}"#, None),
            DecodeError::Json("trailing characters at line 1 column 21".into())
        );
        assert_eq!(
            err(r#"{"device":"d","v":1"#, None),
            DecodeError::Json("EOF while parsing an object at line 1 column 19".into())
        );
        assert_eq!(
            err("[1,2]", None),
            DecodeError::Json(
                "invalid type: sequence, expected a JSON object at line 1 column 0".into()
            )
        );
        assert_eq!(
            err("42", None),
            DecodeError::Json(
                "invalid type: integer `42`, expected a JSON object at line 1 column 2".into()
            )
        );
        assert_eq!(
            err(r#"{"device":7,"v":1}"#, None),
            DecodeError::Json(
                "invalid type: integer `7`, expected a string at line 1 column 11".into()
            )
        );
        assert_eq!(
            err(r#"{"device":"d","value":[1]}"#, None),
            DecodeError::Json(
                "invalid type: sequence, expected a number or a numeric string at line 1 column 23"
                    .into()
            )
        );
        for garbage in [
            "\u{0}\u{1}garbage",
            "{device:d}",
            "{\"a\":tru}",
            "{'a':1}",
            "}",
        ] {
            assert!(
                matches!(err(garbage, None), DecodeError::Json(_)),
                "{garbage:?}"
            );
        }
    }

    #[test]
    fn huge_numbers() {
        assert!(matches!(
            err(r#"{"device":"d","v":1e400}"#, None),
            DecodeError::Json(m) if m.starts_with("number out of range")
        ));
        assert_eq!(
            ok(r#"{"device":"d","v":100000000000000000000000000000}"#, None),
            vec![rec("d", "v", None, 1e29)]
        );
        assert_eq!(
            err(r#"{"device":"d","v":1,"ts":18446744073709551615}"#, None),
            bad("ts", "18446744073709551615")
        );
        assert_eq!(
            err(r#"{"device":"d","v":1,"ts":1e300}"#, None),
            bad("ts", "1e300")
        );
        assert_eq!(
            err(r#"{"device":"d","v":1,"ts":-5}"#, None),
            bad("ts", "-5")
        );
    }

    #[test]
    fn non_finite_and_bad_numeric_strings() {
        assert_eq!(
            err(r#"{"device":"d","metric":"m","value":"NaN"}"#, None),
            DecodeError::NonFinite {
                field: "value".into()
            }
        );
        assert_eq!(
            err(r#"{"device":"d","metric":"m","value":"-inf"}"#, None),
            DecodeError::NonFinite {
                field: "value".into()
            }
        );
        assert_eq!(
            err(r#"{"device":"d","metric":"m","value":"1e999"}"#, None),
            DecodeError::NonFinite {
                field: "value".into()
            }
        );
        assert_eq!(
            err(r#"{"device":"d","metric":"m","value":"22,5"}"#, None),
            bad("value", "22,5")
        );
        assert_eq!(
            err(r#"{"device":"d","metric":"m","value":null}"#, None),
            bad("value", "null")
        );
        assert_eq!(
            err(r#"{"device":"d","v":1,"ts":"yesterday"}"#, None),
            bad("ts", "yesterday")
        );
        assert_eq!(
            err(r#"{"device":"d","v":1,"ts":"NaN"}"#, None),
            DecodeError::NonFinite { field: "ts".into() }
        );
    }

    #[test]
    fn missing_fields_and_no_values() {
        assert_eq!(
            err(r#"{"metric":"m","value":1}"#, None),
            DecodeError::MissingField("device")
        );
        assert_eq!(
            err(r#"{"device":"d","metric":"m","x":1}"#, None),
            DecodeError::MissingField("value")
        );
        assert_eq!(
            err(r#"{"device":"d","value":1,"x":1}"#, None),
            DecodeError::MissingField("metric")
        );
        assert_eq!(err(r#"{"device":"d"}"#, None), DecodeError::NoValues);
        assert_eq!(
            err(r#"{"device":"d","ts":1,"s":"x","o":{}}"#, None),
            DecodeError::NoValues
        );
        assert_eq!(err("{}", Some("d")), DecodeError::NoValues);
    }

    #[test]
    fn duplicates() {
        assert_eq!(
            err(r#"{"device":"a","id":"b","v":1}"#, None),
            DecodeError::DuplicateField("device")
        );
        assert_eq!(
            err(r#"{"device":"a","ts":1,"timestamp":2,"v":1}"#, None),
            DecodeError::DuplicateField("ts")
        );
        assert_eq!(
            err(
                r#"{"device":"a","metric":"m","metric":"n","value":1}"#,
                None
            ),
            DecodeError::DuplicateField("metric")
        );
        assert_eq!(
            err(r#"{"device":"a","metric":"m","value":1,"value":2}"#, None),
            DecodeError::DuplicateField("value")
        );
    }

    #[test]
    fn bad_names() {
        let long = "x".repeat(129);
        assert!(matches!(
            err(&format!(r#"{{"device":"{long}","v":1}}"#), None),
            DecodeError::BadName {
                what: "device",
                why: "longer than 128 bytes",
                ..
            }
        ));
        assert!(matches!(
            err(&format!(r#"{{"device":"d","{long}":1}}"#), None),
            DecodeError::BadName {
                what: "metric",
                why: "longer than 128 bytes",
                ..
            }
        ));
        assert_eq!(
            err(r#"{"device":"d\u0001","v":1}"#, None),
            DecodeError::BadName {
                what: "device",
                name: "d\u{1}".into(),
                why: "contains control characters"
            }
        );
        assert_eq!(
            err(r#"{"device":"d","a\nb":1}"#, None),
            DecodeError::BadName {
                what: "metric",
                name: "a\nb".into(),
                why: "contains control characters"
            }
        );
        assert_eq!(
            err(r#"{"device":"d","metric":"","value":1}"#, None),
            DecodeError::BadName {
                what: "metric",
                name: String::new(),
                why: "empty"
            }
        );
        // A bad name on a skipped (non-numeric) field does not matter.
        assert_eq!(
            ok(r#"{"device":"d","":"x","v":1}"#, None),
            vec![rec("d", "v", None, 1.0)]
        );
        // A frame with a good sample and a badly named one pushes nothing.
        assert!(matches!(
            err(r#"{"device":"d","good":1,"":2}"#, None),
            DecodeError::BadName { .. }
        ));
    }

    #[test]
    fn too_many_fields() {
        let mut frame = String::from(r#"{"device":"d""#);
        for i in 0..MAX_SAMPLES_PER_FRAME {
            frame.push_str(&format!(r#","m{i}":{i}"#));
        }
        let at_limit = format!("{frame}}}");
        assert_eq!(ok(&at_limit, None).len(), MAX_SAMPLES_PER_FRAME);
        assert_eq!(
            err(&format!(r#"{frame},"extra":1}}"#), None),
            DecodeError::TooManyFields
        );
        assert_eq!(
            err(&format!(r#"{frame},"metric":"m","value":1}}"#), None),
            DecodeError::TooManyFields
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut s = VecSink::default();
            match super::super::decode(super::super::Format::Json, &bytes, Some("d"), &mut s) {
                Ok(n) => prop_assert_eq!(n, s.0.len()),
                Err(_) => prop_assert!(s.0.is_empty()),
            }
        }

        #[test]
        fn json_like_text_never_panics(text in r#"[{}\[\]":,0-9a-z.\-eE \\u]{0,80}"#) {
            let mut s = VecSink::default();
            match decode(&text, None, &mut s) {
                Ok(n) => prop_assert_eq!(n, s.0.len()),
                Err(_) => prop_assert!(s.0.is_empty()),
            }
        }

        #[test]
        fn roundtrip_generated_objects(
            device in "[a-zA-Z0-9_\"\\\\é-]{1,20}",
            metrics in proptest::collection::btree_map("[a-z][a-z0-9_]{0,10}", -1e12f64..1e12, 1..10),
            ts in proptest::option::of(0i64..4_000_000_000_000),
        ) {
            let mut obj = serde_json::Map::new();
            obj.insert("device".into(), device.clone().into());
            if let Some(ts) = ts {
                obj.insert("ts".into(), ts.into());
            }
            for (k, v) in &metrics {
                if classify(k).is_other() {
                    obj.insert(k.clone(), (*v).into());
                }
            }
            let text = serde_json::Value::Object(obj.clone()).to_string();
            let mut s = VecSink::default();
            let r = decode(&text, None, &mut s);
            let want_ts = ts.map(|t| if t < 100_000_000_000 { t * 1000 } else { t });
            let want: Vec<_> = obj
                .iter()
                .filter(|(k, _)| classify(k).is_other())
                .map(|(k, v)| rec(&device, k, want_ts, v.as_f64().unwrap()))
                .collect();
            if want.is_empty() {
                prop_assert_eq!(r, Err(DecodeError::NoValues));
            } else {
                // serde_json's default float parser may be off by one ulp.
                prop_assert_eq!(r, Ok(want.len()));
                prop_assert_eq!(s.0.len(), want.len());
                for (got, want) in s.0.iter().zip(&want) {
                    prop_assert_eq!((&got.0, &got.1, got.2), (&want.0, &want.1, want.2));
                    prop_assert!((got.3 - want.3).abs() <= want.3.abs() * 1e-15, "{got:?} vs {want:?}");
                }
            }
        }
    }

    impl Field {
        fn is_other(&self) -> bool {
            matches!(self, Field::Other)
        }
    }
}
