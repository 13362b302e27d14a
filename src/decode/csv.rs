//! CSV frames: `device,metric,value[,ts]`, one sample per line; fields trimmed, no quoting.
//! A header line naming exactly those columns (any case) is skipped.

use super::{
    check_name, emit, parse_ts, parse_value, resolve_device, Collected, DecodeError, TsUnit,
};
use crate::model::SampleSink;
use std::borrow::Cow;

const HEADER: [&str; 4] = ["device", "metric", "value", "ts"];

/// Decodes one CSV record. An empty device field falls back to `default_device`; an empty
/// `ts` field means no timestamp; a numeric one is read in `unit`.
pub fn decode(
    frame: &str,
    default_device: Option<&str>,
    unit: TsUnit,
    out: &mut impl SampleSink,
) -> Result<usize, DecodeError> {
    let frame = frame.trim_ascii();
    if frame.is_empty() {
        return Ok(0);
    }
    let mut fields = [""; 4];
    let mut count = 0usize;
    for (slot, field) in fields.iter_mut().zip(frame.split(',')) {
        *slot = field.trim_ascii();
        count += 1;
    }
    if count == fields.len() {
        count += frame.split(',').skip(fields.len()).count();
    }
    if !(3..=4).contains(&count) {
        return Err(DecodeError::Csv(format!(
            "expected 3 or 4 fields (device,metric,value[,ts]), got {count}"
        )));
    }
    let [device, metric, value, ts] = fields;
    if HEADER
        .iter()
        .zip(&fields)
        .take(count)
        .all(|(h, f)| h.eq_ignore_ascii_case(f))
    {
        return Ok(0);
    }

    let device = resolve_device((!device.is_empty()).then_some(device), default_device)?;
    if metric.is_empty() {
        return Err(DecodeError::MissingField("metric"));
    }
    check_name("metric", metric)?;
    if value.is_empty() {
        return Err(DecodeError::MissingField("value"));
    }
    let value = parse_value("value", value)?;
    let ts = if ts.is_empty() {
        None
    } else {
        Some(parse_ts(ts, unit)?)
    };
    let mut samples = Collected::new();
    samples.push((Cow::Borrowed(metric), value));
    Ok(emit(out, device, ts, &samples))
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{rec, VecSink};
    use super::*;
    use proptest::prelude::*;

    fn ok(frame: &str, default_device: Option<&str>) -> Vec<(String, String, Option<i64>, f64)> {
        let mut s = VecSink::default();
        let n = decode(frame, default_device, TsUnit::Auto, &mut s)
            .unwrap_or_else(|e| panic!("{frame:?} failed: {e}"));
        assert_eq!(n, s.0.len());
        s.0
    }

    fn err(frame: &str, default_device: Option<&str>) -> DecodeError {
        let mut s = VecSink::default();
        let e = decode(frame, default_device, TsUnit::Auto, &mut s).expect_err(frame);
        assert!(s.0.is_empty(), "{frame:?} pushed {:?}", s.0);
        e
    }

    #[test]
    fn happy_paths() {
        assert_eq!(
            ok("d1,temp,22.5,1763761234567", None),
            vec![rec("d1", "temp", Some(1_763_761_234_567), 22.5)]
        );
        assert_eq!(
            ok("  d1 , temp\t, -1e3 , 1763761234 \r", None),
            vec![rec("d1", "temp", Some(1_763_761_234_000), -1000.0)]
        );
        assert_eq!(
            ok("d1,temp,22.5,1763761234.5", None),
            vec![rec("d1", "temp", Some(1_763_761_234_500), 22.5)]
        );
        assert_eq!(ok("d1,temp,7", None), vec![rec("d1", "temp", None, 7.0)]);
        assert_eq!(ok("d1,temp,7,", None), vec![rec("d1", "temp", None, 7.0)]);
        assert_eq!(
            ok("dé vice,météo,0", None),
            vec![rec("dé vice", "météo", None, 0.0)]
        );
    }

    #[test]
    fn default_device_fills_empty_field_only() {
        assert_eq!(ok(",t,1", Some("dd")), vec![rec("dd", "t", None, 1.0)]);
        assert_eq!(ok("own,t,1", Some("dd")), vec![rec("own", "t", None, 1.0)]);
        assert_eq!(err(" ,t,1", None), DecodeError::MissingField("device"));
    }

    #[test]
    fn header_is_skipped() {
        let mut s = VecSink::default();
        assert_eq!(
            decode("device,metric,value,ts", None, TsUnit::Auto, &mut s),
            Ok(0)
        );
        assert_eq!(
            decode("Device, METRIC ,Value", None, TsUnit::Auto, &mut s),
            Ok(0)
        );
        assert!(s.0.is_empty());
        // Not exactly the header: a data line whose value is not a number.
        assert_eq!(
            err("device,metric,val", None),
            DecodeError::BadNumber {
                field: "value".into(),
                text: "val".into()
            }
        );
    }

    #[test]
    fn wrong_field_count() {
        for (frame, got) in [("d1,temp", 2), ("d1", 1), ("a,b,1,2,3", 5), (",,,,,,,,", 9)] {
            assert_eq!(
                err(frame, Some("d")),
                DecodeError::Csv(format!(
                    "expected 3 or 4 fields (device,metric,value[,ts]), got {got}"
                ))
            );
        }
    }

    #[test]
    fn field_errors() {
        assert_eq!(err("d1,,1", None), DecodeError::MissingField("metric"));
        assert_eq!(err("d1,t,", None), DecodeError::MissingField("value"));
        assert_eq!(
            err("d1,t,abc", None),
            DecodeError::BadNumber {
                field: "value".into(),
                text: "abc".into()
            }
        );
        assert_eq!(
            err("d1,t,NaN", None),
            DecodeError::NonFinite {
                field: "value".into()
            }
        );
        assert_eq!(
            err("d1,t,1e999", None),
            DecodeError::NonFinite {
                field: "value".into()
            }
        );
        assert_eq!(
            err("d1,t,1,soon", None),
            DecodeError::BadNumber {
                field: "ts".into(),
                text: "soon".into()
            }
        );
        assert_eq!(
            err("d1,t,1,inf", None),
            DecodeError::NonFinite { field: "ts".into() }
        );
        assert_eq!(
            err("d1,t,1,99999999999999999999999999", None),
            DecodeError::BadNumber {
                field: "ts".into(),
                text: "99999999999999999999999999".into()
            }
        );
        assert!(matches!(
            err(&format!("{},t,1", "d".repeat(129)), None),
            DecodeError::BadName { what: "device", .. }
        ));
        assert!(matches!(
            err(&format!("d,{},1", "m".repeat(129)), None),
            DecodeError::BadName { what: "metric", .. }
        ));
        assert!(matches!(
            err("d\u{1b},t,1", None),
            DecodeError::BadName {
                what: "device",
                why: "contains control characters",
                ..
            }
        ));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut s = VecSink::default();
            match super::super::decode(super::super::Format::Csv, &bytes, &super::super::Opts::device(None), &mut s) {
                Ok(n) => prop_assert_eq!(n, s.0.len()),
                Err(_) => prop_assert!(s.0.is_empty()),
            }
        }

        #[test]
        fn csv_like_text_never_panics(text in "[a-z0-9., \t\\-eE]{0,60}") {
            let mut s = VecSink::default();
            match decode(&text, Some("d"), TsUnit::Auto, &mut s) {
                Ok(n) => prop_assert_eq!(n, s.0.len()),
                Err(_) => prop_assert!(s.0.is_empty()),
            }
        }

        #[test]
        fn roundtrip(
            device in "[a-z0-9_]{1,16}",
            metric in "[a-z][a-z0-9_]{0,16}",
            value in -1e15f64..1e15,
            ts in proptest::option::of(100_000_000_000i64..4_000_000_000_000),
        ) {
            let line = match ts {
                Some(ts) => format!("{device},{metric},{value},{ts}"),
                None => format!("{device},{metric},{value}"),
            };
            let mut s = VecSink::default();
            prop_assert_eq!(decode(&line, None, TsUnit::Auto, &mut s), Ok(1));
            prop_assert_eq!(s.0, vec![rec(&device, &metric, ts, value)]);
        }
    }
}
