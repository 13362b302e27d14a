//! Influx line protocol: `measurement[,tag=v...] field=value[,field=value...] [timestamp]`, one
//! point per line, as Telegraf, ESPHome and Tasmota write it. Device and metric names follow `Mapping`.
//!
//! Values: floats, integers (`12i`), unsigned integers (`12u`) and booleans (`t`/`true`/… as
//! 1, `f`/`false`/… as 0) become samples; string fields (`"…"`) are skipped. Escapes: `\,` and
//! `\ ` in measurements; `\,`, `\=` and `\ ` in tag keys, tag values and field keys; `\"` and
//! `\\` in strings. Lines starting with `#` are comments. Names borrow from the line unless they
//! hold an escape, and `measurement.field` metrics are built on the stack: no heap per sample.

use std::borrow::Cow;

use serde::Deserialize;

use super::{check_finite, check_name, shorten, DecodeError, TsUnit, MAX_NAME_LEN};
use super::{Collected, MAX_SAMPLES_PER_FRAME};
use crate::model::SampleSink;

/// How a point's metric names are formed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
pub enum MetricName {
    /// `field` when the device is the measurement, else `measurement.field`.
    #[default]
    #[serde(rename = "auto")]
    Auto,
    /// The field key alone.
    #[serde(rename = "field")]
    Field,
    /// `measurement.field`.
    #[serde(rename = "measurement.field")]
    MeasurementField,
}

/// Where a point's device and metric names come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Mapping<'a> {
    /// The tag that names the device (Telegraf: `host`); without it (or when a point lacks
    /// it) the source's default device, else the measurement.
    pub device_tag: Option<&'a str>,
    pub metric: MetricName,
}

fn bad(col: usize, what: &str) -> DecodeError {
    DecodeError::Influx(format!("column {}: {what}", col + 1))
}

/// Decodes one line. `Ok(0)` for blank lines, comments and points with only string fields.
pub fn decode(
    line: &str,
    default_device: Option<&str>,
    map: Mapping<'_>,
    unit: TsUnit,
    out: &mut impl SampleSink,
) -> Result<usize, DecodeError> {
    let start = line.len() - line.trim_ascii_start().len();
    let line = line.trim_ascii_end();
    let b = line.as_bytes();
    if start >= b.len() || b[start] == b'#' {
        return Ok(0);
    }
    // Measurement: up to an unescaped `,` or space.
    let mut i = start;
    let m_end = scan(b, i, |c| c == b',' || c == b' ');
    if m_end == i {
        return Err(bad(i, "missing measurement"));
    }
    let measurement = unescape(&line[i..m_end], b", ");
    i = m_end;
    // Tags.
    let mut device = None;
    while i < b.len() && b[i] == b',' {
        i += 1;
        let k_end = scan(b, i, |c| c == b'=' || c == b',' || c == b' ');
        if k_end == i || k_end >= b.len() || b[k_end] != b'=' {
            return Err(bad(i, "tag without `key=value`"));
        }
        let v_start = k_end + 1;
        let v_end = scan(b, v_start, |c| c == b',' || c == b' ');
        if v_end == v_start {
            return Err(bad(v_start, "empty tag value"));
        }
        if let Some(tag) = map.device_tag {
            if unescape(&line[i..k_end], b",= ") == tag {
                device = Some(unescape(&line[v_start..v_end], b",= "));
            }
        }
        i = v_end;
    }
    if i >= b.len() || b[i] != b' ' {
        return Err(bad(i, "missing field set"));
    }
    i += 1;
    // Fields.
    let mut fields = Collected::new();
    loop {
        let k_end = scan(b, i, |c| c == b'=' || c == b',' || c == b' ');
        if k_end == i || k_end >= b.len() || b[k_end] != b'=' {
            return Err(bad(i, "field without `key=value`"));
        }
        let key = &line[i..k_end];
        let v_start = k_end + 1;
        let (value, v_end) = if b.get(v_start) == Some(&b'"') {
            (
                None,
                string_end(b, v_start).ok_or_else(|| bad(v_start, "unterminated string"))?,
            )
        } else {
            let v_end = scan(b, v_start, |c| c == b',' || c == b' ');
            (Some(field_value(&line[v_start..v_end], v_start)?), v_end)
        };
        if let Some(v) = value {
            if fields.len() >= MAX_SAMPLES_PER_FRAME {
                return Err(DecodeError::TooManyFields);
            }
            fields.push((unescape(key, b",= "), v));
        }
        i = v_end;
        match b.get(i) {
            Some(b',') => i += 1,
            Some(b' ') | None => break,
            Some(_) => return Err(bad(i, "expected `,` or a space after a field value")),
        }
    }
    // Timestamp.
    let rest = line.get(i..).unwrap_or_default().trim_ascii_start();
    let ts = if rest.is_empty() {
        None
    } else {
        let v: i64 = rest
            .parse()
            .map_err(|_| bad(b.len() - rest.len(), "timestamp is not an integer"))?;
        Some(unit.ms_from_i64(v).ok_or_else(|| {
            bad(
                b.len() - rest.len(),
                "timestamp is negative or out of range",
            )
        })?)
    };
    if fields.is_empty() {
        return Ok(0);
    }
    let (device, from_measurement) = match (device, default_device) {
        (Some(d), _) => (d, false),
        (None, Some(d)) => (Cow::Borrowed(d), false),
        (None, None) => (measurement.clone(), true),
    };
    check_name("device", &device)?;
    let prefixed = match map.metric {
        MetricName::Auto => !from_measurement,
        MetricName::Field => false,
        MetricName::MeasurementField => true,
    };
    for (key, _) in &fields {
        if prefixed {
            metric_name(&measurement, key)?;
        } else {
            check_name("metric", key)?;
        }
    }
    for (key, value) in &fields {
        if prefixed {
            let mut buf = [0u8; MAX_NAME_LEN];
            out.push(&device, join(&mut buf, &measurement, key), ts, *value);
        } else {
            out.push(&device, key, ts, *value);
        }
    }
    Ok(fields.len())
}

/// Checks `measurement.field` as a metric name.
fn metric_name(measurement: &str, field: &str) -> Result<(), DecodeError> {
    if measurement.len() + 1 + field.len() > MAX_NAME_LEN {
        return Err(DecodeError::BadName {
            what: "metric",
            name: shorten(&format!("{measurement}.{field}")),
            why: "longer than 128 bytes",
        });
    }
    check_name("metric", measurement)?;
    check_name("metric", field)
}

/// `measurement.field` in `buf` (checked to fit by `metric_name`).
fn join<'b>(buf: &'b mut [u8; MAX_NAME_LEN], measurement: &str, field: &str) -> &'b str {
    let (m, f) = (measurement.len(), field.len());
    buf[..m].copy_from_slice(measurement.as_bytes());
    buf[m] = b'.';
    buf[m + 1..m + 1 + f].copy_from_slice(field.as_bytes());
    // Two valid UTF-8 strings and an ASCII dot are valid UTF-8.
    std::str::from_utf8(&buf[..m + 1 + f]).unwrap_or_default()
}

/// Index of the first byte at or after `i` that `stop` accepts and no backslash escapes.
fn scan(b: &[u8], mut i: usize, stop: impl Fn(u8) -> bool) -> usize {
    while i < b.len() {
        match b[i] {
            b'\\' if i + 1 < b.len() => i += 2,
            c if stop(c) => return i,
            _ => i += 1,
        }
    }
    b.len()
}

/// Index just after the closing quote of the string starting at `i` (its opening quote).
fn string_end(b: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    while j < b.len() {
        match b[j] {
            b'\\' => j += 2,
            b'"' => return Some(j + 1),
            _ => j += 1,
        }
    }
    None
}

/// Removes the backslash before each of `escapable`; borrows when there is none.
fn unescape<'a>(s: &'a str, escapable: &[u8]) -> Cow<'a, str> {
    if !s.contains('\\') {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(&n) = chars.peek() {
                if n.is_ascii() && escapable.contains(&(n as u8)) {
                    out.push(n);
                    chars.next();
                    continue;
                }
            }
        }
        out.push(c);
    }
    Cow::Owned(out)
}

/// A non-string field value as a sample value.
fn field_value(text: &str, col: usize) -> Result<f64, DecodeError> {
    let invalid = || bad(col, &format!("{:?} is not a field value", shorten(text)));
    let v = match text {
        "" => return Err(bad(col, "empty field value")),
        "t" | "T" | "true" | "True" | "TRUE" => 1.0,
        "f" | "F" | "false" | "False" | "FALSE" => 0.0,
        _ => {
            if let Some(int) = text.strip_suffix('i') {
                int.parse::<i64>().map_err(|_| invalid())? as f64
            } else if let Some(uint) = text.strip_suffix('u') {
                uint.parse::<u64>().map_err(|_| invalid())? as f64
            } else if text
                .bytes()
                .all(|c| c.is_ascii_digit() || b"+-.eE".contains(&c))
            {
                text.parse::<f64>().map_err(|_| invalid())?
            } else {
                // Rust would read `inf` or `NaN`; line protocol has no such floats.
                return Err(invalid());
            }
        }
    };
    check_finite("value", v)
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{rec, Rec, VecSink};
    use super::*;

    const TS: i64 = 1_465_839_830_100; // 1465839830100400200 ns, as in the reference's examples

    fn with(line: &str, map: Mapping<'_>, dflt: Option<&str>) -> Result<Vec<Rec>, DecodeError> {
        let mut s = VecSink::default();
        let r = decode(line, dflt, map, TsUnit::Auto, &mut s);
        match r {
            Ok(n) => {
                assert_eq!(n, s.0.len(), "{line}");
                Ok(s.0)
            }
            Err(e) => {
                assert!(s.0.is_empty(), "{line} pushed {:?} before failing", s.0);
                Err(e)
            }
        }
    }

    fn ok(line: &str) -> Vec<Rec> {
        with(line, Mapping::default(), None).unwrap_or_else(|e| panic!("{line}: {e}"))
    }

    fn err(line: &str) -> String {
        with(line, Mapping::default(), None)
            .expect_err(line)
            .to_string()
    }

    #[test]
    fn the_references_basic_examples() {
        // From the line protocol reference (InfluxDB 1.x "Line protocol syntax" and tutorial).
        assert_eq!(
            ok("weather,location=us-midwest temperature=82 1465839830100400200"),
            vec![rec("weather", "temperature", Some(TS), 82.0)]
        );
        assert_eq!(
            ok("weather,location=us-midwest temperature=82,bug_concentration=98 1465839830100400200"),
            vec![
                rec("weather", "temperature", Some(TS), 82.0),
                rec("weather", "bug_concentration", Some(TS), 98.0)
            ]
        );
        assert_eq!(
            ok("weather,location=us-midwest,season=summer temperature=82 1465839830100400200"),
            vec![rec("weather", "temperature", Some(TS), 82.0)]
        );
        // Missing timestamp: the receive time is the sink's default.
        assert_eq!(
            ok("weather,location=us-midwest temperature=82"),
            vec![rec("weather", "temperature", None, 82.0)]
        );
        // No tag set at all.
        assert_eq!(
            ok("weather temperature=82 1465839830100400200"),
            vec![rec("weather", "temperature", Some(TS), 82.0)]
        );
    }

    #[test]
    fn data_types_integers_booleans_and_strings() {
        assert_eq!(
            ok("weather,location=us-midwest temperature=82i 1465839830100400200"),
            vec![rec("weather", "temperature", Some(TS), 82.0)]
        );
        assert_eq!(ok("m v=-12i")[0].3, -12.0);
        assert_eq!(
            ok("m v=18446744073709551615u")[0].3,
            18_446_744_073_709_551_615.0
        );
        assert_eq!(ok("m v=1e3,w=-1.5E-2,x=+4.")[..].len(), 3);
        // Booleans in every spelling the reference lists are 1 and 0.
        for t in ["t", "T", "true", "True", "TRUE"] {
            assert_eq!(
                ok(&format!("weather,location=us-midwest too_hot={t}"))[0].3,
                1.0
            );
        }
        for f in ["f", "F", "false", "False", "FALSE"] {
            assert_eq!(ok(&format!("weather too_hot={f}"))[0].3, 0.0);
        }
        // String fields are skipped; a point with only strings gives nothing and is no error.
        assert_eq!(
            ok(r#"weather,location=us-midwest temperature="too warm""#),
            vec![]
        );
        assert_eq!(
            ok(r#"weather,location=us-midwest note="a, b=c d",temperature=82 1465839830100400200"#),
            vec![rec("weather", "temperature", Some(TS), 82.0)]
        );
        assert!(err("m v=82x").contains("\"82x\" is not a field value"));
        assert!(err("m v=1.5i").contains("is not a field value"));
        assert!(err("m v=-1u").contains("is not a field value"));
        assert!(err("m v=nan").contains("is not a field value"));
        assert!(err("m v=inf").contains("is not a field value"));
        assert!(err("m v=yes").contains("is not a field value"));
        assert!(err("m v=1e999").contains("not finite"));
    }

    #[test]
    fn the_references_escaping_examples() {
        let at = Some(TS);
        // Commas and spaces in measurements, commas/equals/spaces in tag and field keys.
        assert_eq!(
            ok(r"wea\,ther,location=us-midwest temperature=82 1465839830100400200"),
            vec![rec("wea,ther", "temperature", at, 82.0)]
        );
        assert_eq!(
            ok(r"wea\ ther,location=us-midwest temperature=82 1465839830100400200"),
            vec![rec("wea ther", "temperature", at, 82.0)]
        );
        assert_eq!(
            ok(r"weather,location=us\,midwest temperature=82 1465839830100400200"),
            vec![rec("weather", "temperature", at, 82.0)]
        );
        assert_eq!(
            ok(r"weather,location=us-midwest temp\=rature=82 1465839830100400200"),
            vec![rec("weather", "temp=rature", at, 82.0)]
        );
        assert_eq!(
            ok(r"weather,location\ place=us-midwest temperature=82 1465839830100400200"),
            vec![rec("weather", "temperature", at, 82.0)]
        );
        assert_eq!(
            ok(r"weather,location=us-midwest temp\ erature=82 1465839830100400200"),
            vec![rec("weather", "temp erature", at, 82.0)]
        );
        // Escaped quotes and backslashes inside strings do not end them.
        assert_eq!(
            ok(r#"weather,location=us-midwest temperature="too\"hot\"",t=1 1465839830100400200"#),
            vec![rec("weather", "t", at, 1.0)]
        );
        assert_eq!(
            ok(r#"weather,location=us-midwest temperature_str="too hot\\cold",t=2"#),
            vec![rec("weather", "t", None, 2.0)]
        );
        // Unicode and an escaped space in a tag value used as the device.
        let map = Mapping {
            device_tag: Some("tag key"),
            metric: MetricName::Auto,
        };
        assert_eq!(
            with(
                r#"my\ Measurement,tag\ key=caf\,é\ 1 field\ key=1,s="x""#,
                map,
                None
            ),
            Ok(vec![rec("caf,é 1", "my Measurement.field key", None, 1.0)])
        );
        // A backslash before anything else is literal.
        assert_eq!(ok(r"a\b c\d=1"), vec![rec(r"a\b", r"c\d", None, 1.0)]);
    }

    #[test]
    fn device_from_a_tag_the_default_or_the_measurement() {
        let host = Mapping {
            device_tag: Some("host"),
            metric: MetricName::Auto,
        };
        let line =
            "cpu,cpu=cpu-total,host=pi-kitchen usage_idle=97.5,usage_user=1.5 1465839830100400200";
        assert_eq!(
            with(line, host, None),
            Ok(vec![
                rec("pi-kitchen", "cpu.usage_idle", Some(TS), 97.5),
                rec("pi-kitchen", "cpu.usage_user", Some(TS), 1.5)
            ])
        );
        let field_only = Mapping {
            metric: MetricName::Field,
            ..host
        };
        assert_eq!(with(line, field_only, None).expect("ok")[0].1, "usage_idle");
        // Without the tag: the source's default device (e.g. from an MQTT topic), else the measurement.
        let line = "cpu usage_idle=97.5";
        assert_eq!(
            with(line, host, Some("topic-dev")),
            Ok(vec![rec("topic-dev", "cpu.usage_idle", None, 97.5)])
        );
        assert_eq!(
            with(line, host, None),
            Ok(vec![rec("cpu", "usage_idle", None, 97.5)])
        );
        let prefixed = Mapping {
            device_tag: None,
            metric: MetricName::MeasurementField,
        };
        assert_eq!(
            with(line, prefixed, None),
            Ok(vec![rec("cpu", "cpu.usage_idle", None, 97.5)])
        );
        // A joined name over 128 bytes is a named error.
        let long = format!("{} {}=1", "m".repeat(70), "f".repeat(70));
        let e = with(&long, prefixed, None)
            .expect_err("too long")
            .to_string();
        assert!(e.contains("longer than 128 bytes"), "{e}");
    }

    #[test]
    fn timestamps_follow_the_precision() {
        let at = |unit, line: &str| {
            let mut s = VecSink::default();
            decode(line, None, Mapping::default(), unit, &mut s).map(|_| s.0[0].2)
        };
        assert_eq!(at(TsUnit::Ns, "m v=1 1465839830100400200"), Ok(Some(TS)));
        assert_eq!(at(TsUnit::Us, "m v=1 1465839830100400"), Ok(Some(TS)));
        assert_eq!(at(TsUnit::Ms, "m v=1 1465839830100"), Ok(Some(TS)));
        assert_eq!(
            at(TsUnit::S, "m v=1 1465839830"),
            Ok(Some(1_465_839_830_000))
        );
        // Auto (the default) goes by magnitude, so Telegraf's nanoseconds and `precision=s` both work.
        assert_eq!(at(TsUnit::Auto, "m v=1 1465839830100400"), Ok(Some(TS)));
        assert_eq!(
            at(TsUnit::Auto, "m v=1 1465839830"),
            Ok(Some(1_465_839_830_000))
        );
        assert!(err("m v=1 1465839830.5").contains("column 7: timestamp is not an integer"));
        assert!(err("m v=1 -5").contains("negative or out of range"));
        assert!(err("m v=1 12 13").contains("timestamp is not an integer"));
    }

    #[test]
    fn malformed_lines_say_where() {
        assert_eq!(
            err("weather"),
            "invalid line protocol: column 8: missing field set"
        );
        assert_eq!(
            err("weather,location temperature=1"),
            "invalid line protocol: column 9: tag without `key=value`"
        );
        assert_eq!(
            err("weather,location= t=1"),
            "invalid line protocol: column 18: empty tag value"
        );
        assert_eq!(
            err("weather temperature"),
            "invalid line protocol: column 9: field without `key=value`"
        );
        assert_eq!(
            err("weather t="),
            "invalid line protocol: column 11: empty field value"
        );
        assert_eq!(
            err(r#"weather t="open"#),
            "invalid line protocol: column 11: unterminated string"
        );
        assert_eq!(
            err(",t=1 v=1"),
            "invalid line protocol: column 1: missing measurement"
        );
        assert_eq!(
            err("m t=1,"),
            "invalid line protocol: column 7: field without `key=value`"
        );
        assert!(err("m a=1\u{7}").contains("is not a field value"));
        assert!(err("m\u{7} a=1").contains("control characters"));
        // Blank lines and comments are nothing, not errors.
        assert_eq!(ok(""), vec![]);
        assert_eq!(ok("   "), vec![]);
        assert_eq!(ok("# a comment, t=1"), vec![]);
        let many: Vec<String> = (0..=MAX_SAMPLES_PER_FRAME)
            .map(|i| format!("f{i}=1"))
            .collect();
        assert_eq!(
            with(&format!("m {}", many.join(",")), Mapping::default(), None),
            Err(DecodeError::TooManyFields)
        );
    }

    proptest::proptest! {
        #[test]
        fn never_panics(s in r##"[a-z ,=\\"#.0-9itfu\-]{0,60}"##) {
            let mut sink = VecSink::default();
            let map = Mapping { device_tag: Some("h"), metric: MetricName::MeasurementField };
            match decode(&s, None, map, TsUnit::Auto, &mut sink) {
                Ok(n) => proptest::prop_assert_eq!(n, sink.0.len()),
                Err(_) => proptest::prop_assert!(sink.0.is_empty()),
            }
        }
    }
}
