//! Bare-value frames such as `23.5,45.1`: the n-th field is the n-th configured column's metric,
//! the device id comes from config. For sensors that print numbers without names.
//!
//! Fields are separated by `,`, `;` or tabs (empty fields allowed: no sample for that column),
//! or by runs of spaces when the frame has none of those. A column named `_` is ignored, and a
//! column named `ts` carries the sample time (unix seconds or ms, as everywhere).

use super::{
    check_name, emit, parse_ts, parse_value, resolve_device, Collected, DecodeError, TsUnit,
    MAX_SAMPLES_PER_FRAME,
};
use crate::model::SampleSink;
use std::borrow::Cow;

/// Column name that skips its field.
pub const SKIP: &str = "_";
/// Column name whose field is the timestamp.
pub const TS: &str = "ts";

/// Decodes one frame of bare values into samples of `device`, named by `columns`.
/// The frame must have exactly as many fields as there are columns; a field that is empty
/// gives no sample. On error nothing is pushed.
pub fn decode<S: AsRef<str>>(
    frame: &str,
    columns: &[S],
    device: Option<&str>,
    unit: TsUnit,
    out: &mut impl SampleSink,
) -> Result<usize, DecodeError> {
    let frame = frame.trim_ascii();
    if frame.is_empty() {
        return Ok(0);
    }
    let device = resolve_device(None, device)?;
    let mut fields = if frame.contains(SEPARATORS) {
        Fields::Delimited(frame.split(SEPARATORS))
    } else {
        Fields::Spaces(frame.split_ascii_whitespace())
    };
    let mut samples = Collected::new();
    let mut ts = None;
    let mut seen = 0usize;
    for column in columns {
        let Some(field) = fields.next() else {
            return Err(count_error(columns.len(), seen));
        };
        seen += 1;
        let (column, field) = (column.as_ref(), field.trim_ascii());
        if field.is_empty() || column == SKIP {
            continue;
        }
        if column == TS {
            ts = Some(parse_ts(field, unit)?);
            continue;
        }
        if samples.len() >= MAX_SAMPLES_PER_FRAME {
            return Err(DecodeError::TooManyFields);
        }
        check_name("metric", column)?;
        samples.push((Cow::Borrowed(column), parse_value(column, field)?));
    }
    let extra = fields.count();
    if extra > 0 {
        return Err(count_error(columns.len(), seen + extra));
    }
    if samples.is_empty() {
        return Err(DecodeError::NoValues);
    }
    Ok(emit(out, device, ts, &samples))
}

const SEPARATORS: [char; 3] = [',', ';', '\t'];

/// The fields of a frame, without allocating.
enum Fields<'a> {
    Delimited(std::str::Split<'a, [char; 3]>),
    Spaces(std::str::SplitAsciiWhitespace<'a>),
}

impl<'a> Iterator for Fields<'a> {
    type Item = &'a str;
    fn next(&mut self) -> Option<&'a str> {
        match self {
            Fields::Delimited(it) => it.next(),
            Fields::Spaces(it) => it.next(),
        }
    }
}

fn count_error(expected: usize, got: usize) -> DecodeError {
    DecodeError::Columns(format!(
        "expected {expected} fields (one per configured column), got {got}"
    ))
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{rec, VecSink};
    use super::*;

    fn run(
        frame: &str,
        cols: &[&str],
    ) -> (
        Result<usize, DecodeError>,
        Vec<super::super::test_util::Rec>,
    ) {
        let mut s = VecSink::default();
        let r = decode(frame, cols, Some("bench-1"), TsUnit::Auto, &mut s);
        (r, s.0)
    }

    #[test]
    fn comma_separated_values_map_to_columns() {
        let (r, got) = run("23.5,45.1", &["temp", "humidity"]);
        assert_eq!(r, Ok(2));
        assert_eq!(
            got,
            vec![
                rec("bench-1", "temp", None, 23.5),
                rec("bench-1", "humidity", None, 45.1)
            ]
        );
    }

    #[test]
    fn other_separators_and_whitespace() {
        let cols = ["a", "b", "c"];
        for frame in [
            "1;2;3",
            "1\t2\t3",
            "1 2   3",
            "  1, 2 ,3  ",
            "1;2,3",
            "1, -2e0 ,+3",
        ] {
            let (r, got) = run(frame, &cols);
            assert_eq!(r, Ok(3), "{frame:?}");
            let vals: Vec<f64> = got.iter().map(|g| g.3.abs()).collect();
            assert_eq!(vals, vec![1.0, 2.0, 3.0], "{frame:?}");
        }
    }

    #[test]
    fn empty_fields_and_skipped_columns_give_no_sample() {
        let (r, got) = run("1,,3", &["a", "b", "c"]);
        assert_eq!(r, Ok(2));
        assert_eq!(got[1], rec("bench-1", "c", None, 3.0));
        let (r, got) = run("7,OK,9", &["a", "_", "c"]);
        assert_eq!(r, Ok(2));
        assert_eq!(
            got.iter().map(|g| g.1.as_str()).collect::<Vec<_>>(),
            ["a", "c"]
        );
        assert_eq!(run(",,", &["a", "b", "c"]).0, Err(DecodeError::NoValues));
    }

    #[test]
    fn ts_column_sets_the_timestamp() {
        let (r, got) = run("1763761234,21.5", &["ts", "temp"]);
        assert_eq!(r, Ok(1));
        assert_eq!(
            got,
            vec![rec("bench-1", "temp", Some(1_763_761_234_000), 21.5)]
        );
        let (r, got) = run("x,21.5", &["ts", "temp"]);
        assert!(matches!(r, Err(DecodeError::BadNumber { .. })), "{r:?}");
        assert!(got.is_empty());
    }

    #[test]
    fn wrong_field_count_is_rejected_and_nothing_pushed() {
        let (r, got) = run("1,2,3", &["a", "b"]);
        assert_eq!(
            r.map_err(|e| e.to_string()),
            Err(
                "invalid column frame: expected 2 fields (one per configured column), got 3".into()
            )
        );
        assert!(got.is_empty());
        let (r, got) = run("1", &["a", "b"]);
        assert_eq!(
            r.map_err(|e| e.to_string()),
            Err(
                "invalid column frame: expected 2 fields (one per configured column), got 1".into()
            )
        );
        assert!(got.is_empty());
    }

    #[test]
    fn garbage_is_rejected_without_partial_output() {
        let (r, got) = run("23.5,4x5", &["temp", "humidity"]);
        assert_eq!(
            r,
            Err(DecodeError::BadNumber {
                field: "humidity".into(),
                text: "4x5".into()
            })
        );
        assert!(got.is_empty());
        let (r, _) = run("nan,1", &["temp", "humidity"]);
        assert_eq!(
            r,
            Err(DecodeError::NonFinite {
                field: "temp".into()
            })
        );
        assert_eq!(run("  \r ", &["a"]).0, Ok(0));
    }

    proptest::proptest! {
        #[test]
        fn value_like_text_never_panics_and_is_all_or_nothing(
            text in "[0-9a-z.,; \t+-]{0,60}",
            ncols in 1usize..6,
        ) {
            let cols: Vec<String> = ["a", "ts", "_", "b", "c", "d"][..ncols].iter().map(|c| c.to_string()).collect();
            let mut s = VecSink::default();
            match decode(&text, &cols, Some("d"), TsUnit::Auto, &mut s) {
                Ok(n) => {
                    proptest::prop_assert_eq!(n, s.0.len());
                    proptest::prop_assert!(n <= ncols);
                }
                Err(_) => proptest::prop_assert!(s.0.is_empty()),
            }
        }
    }

    #[test]
    fn device_is_required() {
        let mut s = VecSink::default();
        assert_eq!(
            decode("1", &["a"], None, TsUnit::Auto, &mut s),
            Err(DecodeError::MissingField("device"))
        );
    }
}
