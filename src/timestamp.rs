//! Timestamps from text, the one parser for decoders and replay: unix time as a number (in a
//! configured `TsUnit`, or by magnitude: s, ms, µs, ns) or a calendar time (RFC 3339, or
//! `YYYY-MM-DD HH:MM:SS` in UTC).

use crate::model::Millis;

/// Integer or float timestamps below this are seconds, at or above it milliseconds or finer
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

/// The unit of a numeric timestamp (`ts_unit` of a source). `Auto` goes by magnitude:
/// below 10^11 seconds, below 10^14 milliseconds, below 10^17 microseconds, else nanoseconds
/// (each boundary is the year 5138 in the smaller unit, so no real time is misread).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TsUnit {
    #[default]
    Auto,
    S,
    Ms,
    Us,
    Ns,
}

/// `Auto`: values at or above this are microseconds.
const MICROS_CUTOFF: i64 = 100_000_000_000_000;
/// `Auto`: values at or above this are nanoseconds.
const NANOS_CUTOFF: i64 = 100_000_000_000_000_000;

impl TsUnit {
    /// As written in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            TsUnit::Auto => "auto",
            TsUnit::S => "s",
            TsUnit::Ms => "ms",
            TsUnit::Us => "us",
            TsUnit::Ns => "ns",
        }
    }

    /// The unit `Auto` takes for a non-negative value of this magnitude.
    #[inline]
    fn resolve(self, magnitude: f64) -> TsUnit {
        match self {
            TsUnit::Auto if magnitude < SECONDS_CUTOFF as f64 => TsUnit::S,
            TsUnit::Auto if magnitude < MICROS_CUTOFF as f64 => TsUnit::Ms,
            TsUnit::Auto if magnitude < NANOS_CUTOFF as f64 => TsUnit::Us,
            TsUnit::Auto => TsUnit::Ns,
            u => u,
        }
    }

    /// An integer timestamp in this unit as unix ms (finer units truncated towards the past);
    /// `None` when negative or out of range. Integer comparisons only: this is on the hot path.
    #[inline]
    pub fn ms_from_i64(self, v: i64) -> Option<Millis> {
        if v < 0 {
            return None;
        }
        let unit = match self {
            TsUnit::Auto if v < SECONDS_CUTOFF => return Some(v * 1000),
            TsUnit::Auto if v < MICROS_CUTOFF => return Some(v),
            TsUnit::Auto if v < NANOS_CUTOFF => TsUnit::Us,
            TsUnit::Auto => TsUnit::Ns,
            u => u,
        };
        match unit {
            TsUnit::S => v.checked_mul(1000),
            TsUnit::Us => Some(v / 1000),
            TsUnit::Ns => Some(v / 1_000_000),
            TsUnit::Ms | TsUnit::Auto => Some(v),
        }
    }

    /// A finite float timestamp in this unit as unix ms, rounded; `None` when negative or
    /// beyond the range of `Millis`.
    #[inline]
    pub fn ms_from_f64(self, v: f64) -> Option<Millis> {
        let ms = match self.resolve(v) {
            TsUnit::S => v * 1000.0,
            TsUnit::Us => v / 1000.0,
            TsUnit::Ns => v / 1_000_000.0,
            TsUnit::Ms | TsUnit::Auto => v,
        }
        .round();
        // 2^63 is exactly representable; anything at or above it does not fit an i64.
        if (0.0..9_223_372_036_854_775_808.0).contains(&ms) {
            Some(ms as Millis)
        } else {
            None
        }
    }
}

impl std::fmt::Display for TsUnit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An integer timestamp of unknown unit (`TsUnit::Auto`) as unix ms; `None` when negative.
pub fn ms_from_i64(v: i64) -> Option<Millis> {
    TsUnit::Auto.ms_from_i64(v)
}

/// A finite float timestamp of unknown unit (`TsUnit::Auto`) as unix ms, rounded; `None` when
/// negative or beyond the range of `Millis`.
pub fn ms_from_f64(v: f64) -> Option<Millis> {
    TsUnit::Auto.ms_from_f64(v)
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
    fn units_explicit_and_by_magnitude() {
        // The same instant in every unit: each reads back as T, with `auto` and with its unit.
        let forms = [
            (TsUnit::S, 1_396_828_800i64),
            (TsUnit::Ms, 1_396_828_800_000),
            (TsUnit::Us, 1_396_828_800_000_000),
            (TsUnit::Ns, 1_396_828_800_000_000_000),
        ];
        for (unit, v) in forms {
            assert_eq!(unit.ms_from_i64(v), Some(T), "{unit} {v}");
            assert_eq!(TsUnit::Auto.ms_from_i64(v), Some(T), "auto {v}");
            assert_eq!(unit.ms_from_f64(v as f64), Some(T), "{unit} {v} as float");
            assert_eq!(
                TsUnit::Auto.ms_from_f64(v as f64),
                Some(T),
                "auto {v} float"
            );
        }
        // Finer units truncate integers, round floats.
        assert_eq!(
            TsUnit::Ns.ms_from_i64(1_396_828_800_123_999_999),
            Some(T + 123)
        );
        assert_eq!(TsUnit::Us.ms_from_i64(1_396_828_800_123_999), Some(T + 123));
        assert_eq!(TsUnit::S.ms_from_f64(1_396_828_800.123_4), Some(T + 123));
        // An explicit unit wins over the magnitude: small values are not taken for seconds.
        assert_eq!(TsUnit::Ms.ms_from_i64(5), Some(5));
        assert_eq!(TsUnit::Ns.ms_from_i64(5_000_000), Some(5));
        assert_eq!(TsUnit::Auto.ms_from_i64(5), Some(5_000));
        // The auto boundaries.
        assert_eq!(
            TsUnit::Auto.ms_from_i64(99_999_999_999),
            Some(99_999_999_999_000)
        );
        assert_eq!(
            TsUnit::Auto.ms_from_i64(100_000_000_000),
            Some(100_000_000_000)
        );
        assert_eq!(
            TsUnit::Auto.ms_from_i64(99_999_999_999_999),
            Some(99_999_999_999_999)
        );
        assert_eq!(
            TsUnit::Auto.ms_from_i64(100_000_000_000_000),
            Some(100_000_000_000)
        );
        assert_eq!(
            TsUnit::Auto.ms_from_i64(i64::MAX),
            Some(i64::MAX / 1_000_000)
        );
        // Negative or overflowing.
        assert_eq!(TsUnit::Ns.ms_from_i64(-1), None);
        assert_eq!(TsUnit::S.ms_from_i64(i64::MAX / 10), None);
        assert_eq!(TsUnit::S.ms_from_f64(1e300), None);
        assert_eq!(TsUnit::Ms.ms_from_f64(-0.6), None);
    }

    #[test]
    fn unit_names_as_in_the_config() {
        #[derive(serde::Deserialize)]
        struct W {
            u: TsUnit,
        }
        for (text, unit) in [
            ("auto", TsUnit::Auto),
            ("s", TsUnit::S),
            ("ms", TsUnit::Ms),
            ("us", TsUnit::Us),
            ("ns", TsUnit::Ns),
        ] {
            let w: W = toml::from_str(&format!("u = \"{text}\"")).expect(text);
            assert_eq!(w.u, unit);
            assert_eq!(unit.to_string(), text);
        }
        assert!(toml::from_str::<W>("u = \"µs\"").is_err());
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
