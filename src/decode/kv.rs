//! key=value frames: pairs separated by whitespace and/or commas, e.g.
//! `device=d1 metric=temp value=22.5 ts=1763761234567` or `device=d1 temp=22.5 humidity=40`.
//!
//! Keys mean what they mean in JSON frames (device/id, metric, value, ts/time/timestamp); every
//! other key is a metric and its value must be a number.

use super::{
    check_name, emit, parse_ts, parse_value, resolve_device, Collected, DecodeError, TsUnit,
    MAX_SAMPLES_PER_FRAME,
};
use crate::model::SampleSink;
use std::borrow::Cow;

/// Decodes one key=value frame; a numeric `ts` is read in `unit`.
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
    let mut device = None;
    let mut metric = None;
    let mut value = None;
    let mut ts = None;
    let mut samples = Collected::new();

    let tokens = frame
        .split(|c: char| c.is_ascii_whitespace() || c == ',')
        .filter(|t| !t.is_empty());
    for token in tokens {
        let Some((key, text)) = token.split_once('=') else {
            return Err(DecodeError::Kv(format!(
                "{:?} is not a key=value pair",
                super::shorten(token)
            )));
        };
        let (slot, name) = match key {
            "device" | "id" => (&mut device, "device"),
            "metric" => (&mut metric, "metric"),
            "value" => (&mut value, "value"),
            "ts" | "time" | "timestamp" => (&mut ts, "ts"),
            _ => {
                if samples.len() >= MAX_SAMPLES_PER_FRAME {
                    return Err(DecodeError::TooManyFields);
                }
                check_name("metric", key)?;
                samples.push((Cow::Borrowed(key), parse_value(key, text)?));
                continue;
            }
        };
        if slot.replace(text).is_some() {
            return Err(DecodeError::DuplicateField(name));
        }
    }

    let device = resolve_device(device, default_device)?;
    match (metric, value) {
        (Some(metric), Some(value)) => {
            check_name("metric", metric)?;
            let value = parse_value("value", value)?;
            samples.insert(0, (Cow::Borrowed(metric), value));
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
    let ts = ts.map(|t| parse_ts(t, unit)).transpose()?;
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

    fn bad(field: &str, text: &str) -> DecodeError {
        DecodeError::BadNumber {
            field: field.into(),
            text: text.into(),
        }
    }

    #[test]
    fn single_metric() {
        assert_eq!(
            ok("device=d1 metric=temp value=22.5 ts=1763761234567", None),
            vec![rec("d1", "temp", Some(1_763_761_234_567), 22.5)]
        );
    }

    #[test]
    fn multi_metric_with_seconds() {
        assert_eq!(
            ok("device=d1 temp=22.5 humidity=40 ts=1763761234", None),
            vec![
                rec("d1", "temp", Some(1_763_761_234_000), 22.5),
                rec("d1", "humidity", Some(1_763_761_234_000), 40.0)
            ]
        );
    }

    #[test]
    fn separators_and_order() {
        assert_eq!(
            ok(
                " \ttemp=1,, humidity=2 ,device=d2\t,ts=1763761234.5 \r",
                None
            ),
            vec![
                rec("d2", "temp", Some(1_763_761_234_500), 1.0),
                rec("d2", "humidity", Some(1_763_761_234_500), 2.0)
            ]
        );
    }

    #[test]
    fn metric_value_and_extras_main_first() {
        assert_eq!(
            ok("a=1 device=d value=2 metric=m", None),
            vec![rec("d", "m", None, 2.0), rec("d", "a", None, 1.0)]
        );
    }

    #[test]
    fn aliases_and_default_device() {
        assert_eq!(
            ok("id=d3 x=1 time=1700000000", None),
            vec![rec("d3", "x", Some(1_700_000_000_000), 1.0)]
        );
        assert_eq!(
            ok("x=1 timestamp=1700000000123", Some("dflt")),
            vec![rec("dflt", "x", Some(1_700_000_000_123), 1.0)]
        );
        assert_eq!(
            ok("device=own x=1", Some("dflt")),
            vec![rec("own", "x", None, 1.0)]
        );
    }

    #[test]
    fn splits_at_first_equals_sign() {
        // split at the first '='; the rest is the value text.
        assert_eq!(err("device=d x=1=2", None), bad("x", "1=2"));
        assert_eq!(ok("device=a=b x=1", None), vec![rec("a=b", "x", None, 1.0)]);
    }

    #[test]
    fn errors() {
        assert_eq!(
            err("device=d1 temp 22.5", None),
            DecodeError::Kv("\"temp\" is not a key=value pair".into())
        );
        assert_eq!(err("temp=1", None), DecodeError::MissingField("device"));
        assert_eq!(err("device=d1", None), DecodeError::NoValues);
        assert_eq!(err("device=d1 ts=1", None), DecodeError::NoValues);
        assert_eq!(
            err("device=d1 metric=m", None),
            DecodeError::MissingField("value")
        );
        assert_eq!(
            err("device=d1 value=1", None),
            DecodeError::MissingField("metric")
        );
        assert_eq!(
            err("device=d1 location=kitchen", None),
            bad("location", "kitchen")
        );
        assert_eq!(err("device=d1 metric=m value=", None), bad("value", ""));
        assert_eq!(
            err("device=d1 x=nan", None),
            DecodeError::NonFinite { field: "x".into() }
        );
        assert_eq!(
            err("device=d1 x=1e309", None),
            DecodeError::NonFinite { field: "x".into() }
        );
        assert_eq!(err("device=d1 x=1 ts=now", None), bad("ts", "now"));
        assert_eq!(err("device=d1 x=1 ts=-1", None), bad("ts", "-1"));
        assert_eq!(
            err("device=d1 id=d2 x=1", None),
            DecodeError::DuplicateField("device")
        );
        assert_eq!(
            err("device=d1 ts=1 time=2 x=1", None),
            DecodeError::DuplicateField("ts")
        );
        assert_eq!(
            err("device= x=1", None),
            DecodeError::BadName {
                what: "device",
                name: String::new(),
                why: "empty"
            }
        );
        assert_eq!(
            err("device=d =1", None),
            DecodeError::BadName {
                what: "metric",
                name: String::new(),
                why: "empty"
            }
        );
        assert!(matches!(
            err(&format!("device=d {}=1", "m".repeat(129)), None),
            DecodeError::BadName {
                what: "metric",
                why: "longer than 128 bytes",
                ..
            }
        ));
        assert!(matches!(
            err("device=d\u{7f} x=1", None),
            DecodeError::BadName {
                what: "device",
                why: "contains control characters",
                ..
            }
        ));
        // A good sample before a bad token is not pushed.
        assert_eq!(
            err("device=d good=1 oops", None),
            DecodeError::Kv("\"oops\" is not a key=value pair".into())
        );
    }

    #[test]
    fn too_many_fields() {
        let mut frame = String::from("device=d");
        for i in 0..MAX_SAMPLES_PER_FRAME {
            frame.push_str(&format!(" m{i}={i}"));
        }
        assert_eq!(ok(&frame, None).len(), MAX_SAMPLES_PER_FRAME);
        assert_eq!(
            err(&format!("{frame} extra=1"), None),
            DecodeError::TooManyFields
        );
        assert_eq!(
            err(&format!("{frame} metric=m value=1"), None),
            DecodeError::TooManyFields
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut s = VecSink::default();
            match super::super::decode(super::super::Format::Kv, &bytes, &super::super::Opts::device(Some("d")), &mut s) {
                Ok(n) => prop_assert_eq!(n, s.0.len()),
                Err(_) => prop_assert!(s.0.is_empty()),
            }
        }

        #[test]
        fn kv_like_text_never_panics(text in "[a-z0-9=., \t\\-]{0,60}") {
            let mut s = VecSink::default();
            match decode(&text, None, TsUnit::Auto, &mut s) {
                Ok(n) => prop_assert_eq!(n, s.0.len()),
                Err(_) => prop_assert!(s.0.is_empty()),
            }
        }

        #[test]
        fn roundtrip(
            device in "[a-z0-9_]{1,16}",
            metrics in proptest::collection::vec(("[a-z]{1,3}[0-9_]{0,5}", -1e15f64..1e15), 1..12),
            ts in proptest::option::of(0i64..4_000_000_000_000),
        ) {
            let metrics: Vec<_> = metrics
                .into_iter()
                .filter(|(k, _)| !matches!(k.as_str(), "id" | "ts" | "time"))
                .collect();
            let mut line = format!("device={device}");
            for (k, v) in &metrics {
                line.push_str(&format!(" {k}={v}"));
            }
            if let Some(ts) = ts {
                line.push_str(&format!(",ts={ts}"));
            }
            let want_ts = ts.map(|t| if t < 100_000_000_000 { t * 1000 } else { t });
            let want: Vec<_> = metrics.iter().map(|(k, v)| rec(&device, k, want_ts, *v)).collect();
            let mut s = VecSink::default();
            let r = decode(&line, None, TsUnit::Auto, &mut s);
            if want.is_empty() {
                prop_assert_eq!(r, Err(DecodeError::NoValues));
            } else {
                prop_assert_eq!(r, Ok(want.len()));
                prop_assert_eq!(s.0, want);
            }
        }
    }
}
