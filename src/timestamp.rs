//! Timestamps from text, the one parser for decoders and replay: unix time as a number (seconds
//! below 10^11, else milliseconds) or a calendar time (RFC 3339, or `YYYY-MM-DD HH:MM:SS` in UTC).

use crate::model::Millis;

/// Integer or float timestamps below this are seconds, at or above it milliseconds
/// (10^11 s is the year 5138; 10^11 ms is 1973).
pub const SECONDS_CUTOFF: i64 = 100_000_000_000;

/// Why a timestamp could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimestampError {
    #[error("empty timestamp")]
    Empty,
    #[error("timestamp {0} is negative or out of range")]
    OutOfRange(String),
    #[error(
        "not a timestamp: {0} (expected unix seconds or ms, RFC 3339, or YYYY-MM-DD HH:MM:SS)"
    )]
    Invalid(String),
}

/// Converts an integer timestamp (seconds below `SECONDS_CUTOFF`, else ms) to unix ms;
/// `None` when negative.
pub fn ms_from_i64(v: i64) -> Option<Millis> {
    if v < 0 {
        None
    } else if v < SECONDS_CUTOFF {
        Some(v * 1000)
    } else {
        Some(v)
    }
}

/// Converts a finite float timestamp (seconds below `SECONDS_CUTOFF`, else ms) to unix ms,
/// rounded; `None` when negative or beyond the range of `Millis`.
pub fn ms_from_f64(v: f64) -> Option<Millis> {
    let ms = if v < SECONDS_CUTOFF as f64 {
        v * 1000.0
    } else {
        v
    }
    .round();
    // 2^63 is exactly representable; anything at or above it does not fit an i64.
    if (0.0..9_223_372_036_854_775_808.0).contains(&ms) {
        Some(ms as Millis)
    } else {
        None
    }
}

/// A number as unix time (integer first, then float), trimmed; `None` when it is not a number.
fn number(t: &str) -> Option<Result<Millis, TimestampError>> {
    let ms = match t.parse::<i64>() {
        Ok(v) => ms_from_i64(v),
        Err(_) => match t.parse::<f64>() {
            Ok(v) if v.is_finite() => ms_from_f64(v),
            Ok(_) => None,
            // "nan", "inf" and other words are not numbers here.
            Err(_) => return None,
        },
    };
    Some(ms.ok_or_else(|| TimestampError::OutOfRange(t.to_owned())))
}

/// A calendar time as unix ms: RFC 3339 / ISO 8601 with `Z` or an offset (`+02:00`, `+0200`,
/// within ±24 h), else a civil date-time (`T` or a space before the time, fractions allowed) in UTC.
pub fn calendar(text: &str) -> Option<Millis> {
    use jiff::fmt::temporal::{Pieces, PiecesOffset};
    let p = Pieces::parse(text.trim()).ok()?;
    // A named zone (`[Europe/Berlin]`) would need the tz database: not taken as UTC.
    if p.time_zone_annotation().is_some() {
        return None;
    }
    let offset_s = match p.offset() {
        None | Some(PiecesOffset::Zulu) => 0,
        Some(PiecesOffset::Numeric(n)) => i64::from(n.offset().seconds()),
        Some(_) => return None,
    };
    if offset_s.abs() >= 86_400 {
        return None;
    }
    let dt = p.date().to_datetime(p.time()?);
    let ts = jiff::tz::TimeZone::UTC.to_timestamp(dt).ok()?;
    Some(ts.as_millisecond() - offset_s * 1000)
}

/// Any timestamp this crate reads from text: a number (see [`ms_from_i64`]) or a calendar time.
pub fn parse(text: &str) -> Result<Millis, TimestampError> {
    let t = text.trim();
    if t.is_empty() {
        return Err(TimestampError::Empty);
    }
    if let Some(n) = number(t) {
        return n;
    }
    calendar(t).ok_or_else(|| TimestampError::Invalid(t.chars().take(64).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Millis = 1_396_828_800_000; // 2014-04-07 00:00:00 UTC

    #[test]
    fn numbers_in_seconds_and_milliseconds() {
        assert_eq!(parse("1396828800"), Ok(T));
        assert_eq!(parse("1396828800.5"), Ok(T + 500));
        assert_eq!(parse("1396828800000"), Ok(T));
        assert_eq!(parse(" 1396828800000 "), Ok(T));
        assert_eq!(parse("1.3968288e9"), Ok(T));
        assert!(matches!(parse("-5"), Err(TimestampError::OutOfRange(_))));
        assert!(matches!(parse("1e300"), Err(TimestampError::OutOfRange(_))));
        assert!(parse("NaN").is_err());
        assert_eq!(parse(""), Err(TimestampError::Empty));
    }

    #[test]
    fn calendar_times_with_and_without_offsets() {
        assert_eq!(parse("2014-04-07 00:00:00"), Ok(T));
        assert_eq!(parse("2014-04-07 00:00:00.250000"), Ok(T + 250));
        assert_eq!(parse("2014-04-07T00:00:00Z"), Ok(T));
        assert_eq!(parse("2014-04-07T00:00:00.125z"), Ok(T + 125));
        assert_eq!(parse("2014-04-07T02:00:00+02:00"), Ok(T));
        assert_eq!(parse("2014-04-06T23:30:00-00:30"), Ok(T));
        assert_eq!(parse("2014-04-07T01:00:00+0100"), Ok(T));
        assert!(parse("yesterday").is_err());
        assert!(parse("2014-13-07 00:00:00").is_err());
        assert!(parse("2014-04-07T00:00:00+25:00").is_err());
        assert!(parse("2014-02-30T00:00:00Z").is_err());
    }

    proptest::proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,40}", digits in "[0-9:+T. -]{0,30}") {
            let _ = parse(&s);
            let _ = parse(&digits);
            let _ = parse(&format!("2014-04-07T00:00:00{digits}"));
            let _ = parse(&format!("2014-04-07 00:00:00{s}"));
        }

        #[test]
        fn rfc3339_round_trips(ms in 0i64..4_102_444_800_000) {
            let text = humantime::format_rfc3339_millis(
                std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms as u64),
            )
            .to_string();
            proptest::prop_assert_eq!(parse(&text), Ok(ms));
        }
    }
}
