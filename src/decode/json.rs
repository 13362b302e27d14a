//! JSON frames: one object per line, e.g. `{"device":"d1","metric":"temp","ts":1763761234567,"value":22.1}`
//! or multi-metric `{"device":"d1","ts":1763761234,"temp":22.1,"humidity":40}`.
//!
//! Two parsers fill the same `Parsed`:
//! - a hand-written scanner for the common case: an object whose keys, and whose strings that
//!   are used (device, metric, numeric strings), have no escapes; numbers of at most 19 digits
//!   with a decimal exponent within ±22; any JSON whitespace. Ignored fields may hold any valid
//!   JSON without escaped UTF-16 surrogates, nested up to 64 levels. It borrows every key and
//!   string from the frame, so a typical frame does not touch the heap;
//! - a streaming serde visitor (strings borrow from the frame unless they contain escapes) for
//!   every frame the scanner does not accept.
//!
//! The scanner gives up on anything outside its subset, on every malformed frame and on every
//! rejection found during the walk (duplicate or too many fields); serde then parses the frame
//! from the start, so errors and their messages are exactly serde's. The scanner converts numbers
//! with serde_json's own algorithm (the crate's default, without `float_roundtrip`), so both
//! parsers yield bit-identical values; tests check that the two agree.
//!
//! Why the scanner exists: decode + ingest costs 2,710 instructions per sample with it and 4,248
//! with serde alone (zscore; 3,784 vs 5,321 with the default ensemble), see docs/BENCHMARKS.md.
//!
//! Over 600 lines: the scanner is one hand-written state machine (it earns its place, above) and
//! the serde visitor must accept exactly the same shapes, so both live here.

use super::{
    bad_number, check_finite, check_name, emit, parse_ts, parse_value, resolve_device, Collected,
    DecodeError, TsUnit, MAX_NAME_LEN, MAX_SAMPLES_PER_FRAME,
};
use crate::model::{Millis, SampleSink};
use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::borrow::Cow;
use std::fmt;

/// Decodes one JSON object frame; see the module docs for the accepted shapes. Numeric
/// timestamps are read in `unit`.
pub fn decode(
    frame: &str,
    default_device: Option<&str>,
    unit: TsUnit,
    out: &mut impl SampleSink,
) -> Result<usize, DecodeError> {
    decode_with(frame, default_device, None, unit, out)
}

/// Like `decode`; a `value` without a `metric` field takes `default_metric` (e.g. from an MQTT
/// topic) when one is given.
pub fn decode_with(
    frame: &str,
    default_device: Option<&str>,
    default_metric: Option<&str>,
    unit: TsUnit,
    out: &mut impl SampleSink,
) -> Result<usize, DecodeError> {
    let frame = frame.trim_ascii();
    if frame.is_empty() {
        return Ok(0);
    }
    let mut parsed = Parsed::new();
    if !scan(frame, &mut parsed) {
        parsed = parse_serde(frame)?;
    }
    finish(&mut parsed, default_device, default_metric, unit, out)
}

/// Parses a (trimmed, non-empty) frame with serde.
#[cold]
#[inline(never)]
fn parse_serde(frame: &str) -> Result<Parsed<'_>, DecodeError> {
    let mut rejected = None;
    let mut de = serde_json::Deserializer::from_str(frame);
    let parsed = match de.deserialize_map(FrameVisitor {
        rejected: &mut rejected,
    }) {
        Ok(p) => p,
        Err(e) => return Err(rejected.unwrap_or_else(|| DecodeError::Json(e.to_string()))),
    };
    de.end().map_err(|e| DecodeError::Json(e.to_string()))?;
    Ok(parsed)
}

/// Validates what a parser yielded and pushes the samples.
#[inline(always)]
fn finish(
    parsed: &mut Parsed<'_>,
    default_device: Option<&str>,
    default_metric: Option<&str>,
    unit: TsUnit,
    out: &mut impl SampleSink,
) -> Result<usize, DecodeError> {
    let Parsed {
        device,
        metric,
        value,
        ts,
        samples,
    } = parsed;
    let device = match device {
        Some(d) if name_ok(d) => &**d,
        _ => resolve_device(device.as_deref(), default_device)?,
    };
    // The `metric`/`value` pair is pushed ahead of the other samples.
    let main = match (metric.take(), value.take()) {
        (Some(metric), Some(value)) => {
            if !name_ok(&metric) {
                check_name("metric", &metric)?;
            }
            Some((metric, num_to_value("value", value)?))
        }
        (Some(_), None) => return Err(DecodeError::MissingField("value")),
        (None, Some(value)) => match default_metric {
            Some(m) => {
                check_name("metric", m)?;
                Some((Cow::Borrowed(m), num_to_value("value", value)?))
            }
            None => return Err(DecodeError::MissingField("metric")),
        },
        (None, None) => None,
    };
    let total = samples.len() + usize::from(main.is_some());
    if total == 0 {
        return Err(DecodeError::NoValues);
    }
    if total > MAX_SAMPLES_PER_FRAME {
        return Err(DecodeError::TooManyFields);
    }
    for (metric, _) in samples.iter() {
        if !name_ok(metric) {
            check_name("metric", metric)?;
        }
    }
    let ts = match ts.take() {
        None | Some(Num::Null) => None,
        Some(n) => Some(num_to_ts(n, unit)?),
    };
    if let Some((metric, value)) = &main {
        out.push(device, metric, ts, *value);
    }
    emit(out, device, ts, samples);
    Ok(total)
}

/// A quick sufficient test for `check_name` passing: 1 to `MAX_NAME_LEN` bytes of printable
/// ASCII (names failing it go through `check_name` itself).
#[inline(always)]
fn name_ok(name: &str) -> bool {
    (1..=MAX_NAME_LEN).contains(&name.len())
        && name
            .bytes()
            .fold(true, |ok, b| ok & (b' '..=b'~').contains(&b))
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

impl Parsed<'_> {
    fn new() -> Self {
        Parsed {
            device: None,
            metric: None,
            value: None,
            ts: None,
            samples: Collected::new(),
        }
    }
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

fn num_to_ts(n: Num<'_>, unit: TsUnit) -> Result<Millis, DecodeError> {
    match n {
        Num::Int(v) => unit
            .ms_from_i64(v)
            .ok_or_else(|| bad_number("ts", &v.to_string())),
        Num::UInt(v) => i64::try_from(v)
            .ok()
            .and_then(|v| unit.ms_from_i64(v))
            .ok_or_else(|| bad_number("ts", &v.to_string())),
        Num::Float(v) => unit
            .ms_from_f64(check_finite("ts", v)?)
            .ok_or_else(|| bad_number("ts", &format!("{v:?}"))),
        Num::Text(s) => parse_ts(&s, unit),
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

#[inline(always)]
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
        let mut p = Parsed::new();
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

/// Fast path: fills `p` from a trimmed frame and returns true, or returns false when the frame
/// is outside the subset described in the module docs (`p` is then to be discarded).
#[inline]
fn scan<'a>(frame: &'a str, p: &mut Parsed<'a>) -> bool {
    scan_object(frame, p).is_some()
}

fn scan_object<'a>(frame: &'a str, p: &mut Parsed<'a>) -> Option<()> {
    // A local cursor, so that its position lives in a register.
    let s = &mut Scanner {
        text: frame,
        pos: 0,
    };
    s.expect(b'{')?;
    s.skip_ws();
    if s.peek() == Some(b'}') {
        s.pos += 1;
    } else {
        loop {
            s.expect(b'"')?;
            let key = s.string()?;
            s.skip_ws();
            s.expect(b':')?;
            s.skip_ws();
            match classify(key) {
                Field::Device => {
                    if p.device.is_some() {
                        return None;
                    }
                    s.expect(b'"')?;
                    p.device = Some(Cow::Borrowed(s.string()?));
                }
                Field::Metric => {
                    if p.metric.is_some() {
                        return None;
                    }
                    s.expect(b'"')?;
                    p.metric = Some(Cow::Borrowed(s.string()?));
                }
                Field::Value => {
                    if p.value.is_some() {
                        return None;
                    }
                    p.value = Some(s.num()?);
                }
                Field::Ts => {
                    if p.ts.is_some() {
                        return None;
                    }
                    p.ts = Some(s.num()?);
                }
                Field::Other => {
                    if let Some(v) = s.extra()? {
                        if p.samples.len() >= MAX_SAMPLES_PER_FRAME {
                            return None;
                        }
                        p.samples.push((Cow::Borrowed(key), v));
                    }
                }
            }
            s.skip_ws();
            match s.next()? {
                b',' => s.skip_ws(),
                b'}' => break,
                _ => return None,
            }
        }
    }
    // The frame is trimmed, so anything after the object is not whitespace.
    (s.pos == s.text.len()).then_some(())
}

/// Exact powers of ten, as serde_json's table has them (`1e0` to `1e22` are exact in f64).
const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// Longest exponent (in digits) the fast path takes; longer ones are left to serde.
const MAX_EXP_DIGITS: usize = 4;
/// Most significant digits (integer and fraction) the fast path takes: any 19 digits fit u64.
const MAX_DIGITS: usize = 19;
/// Deepest nesting the fast path skips (one bit per level); deeper values are left to serde.
const MAX_DEPTH: u32 = 64;

/// Byte cursor of the fast path. Methods return `None` where the input leaves the fast path's
/// subset of JSON (or is malformed); they never panic.
struct Scanner<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Scanner<'a> {
    #[inline(always)]
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.pos).copied()
    }

    #[inline(always)]
    fn next(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.pos += 1;
        Some(b)
    }

    #[inline(always)]
    fn expect(&mut self, want: u8) -> Option<()> {
        (self.next()? == want).then_some(())
    }

    /// Skips JSON whitespace (exactly what serde_json skips).
    #[inline(always)]
    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\t' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    /// Consumes `lit` if the input continues with it.
    #[inline(always)]
    fn literal(&mut self, lit: &[u8]) -> bool {
        let end = self.pos + lit.len();
        if self.text.as_bytes().get(self.pos..end) == Some(lit) {
            self.pos = end;
            true
        } else {
            false
        }
    }

    /// After an opening quote: the string's contents, borrowed, with the closing quote consumed.
    /// `None` for escapes and for control characters (which serde rejects), or without an end.
    #[inline(always)]
    fn string(&mut self) -> Option<&'a str> {
        let start = self.pos;
        let end = find_special(self.text.as_bytes(), start)?;
        if self.text.as_bytes().get(end) != Some(&b'"') {
            return None;
        }
        // The quote is ASCII, so both ends are char boundaries.
        let s = self.text.get(start..end)?;
        self.pos = end + 1;
        Some(s)
    }

    /// After an opening quote: skips a string whose contents are not needed, through its
    /// closing quote. Escapes are checked, not decoded; `None` for a `\u` escape of a UTF-16
    /// surrogate (serde_json checks their pairing only where it decodes), for invalid escapes
    /// and control characters, or without an end.
    fn skip_string(&mut self) -> Option<()> {
        let bytes = self.text.as_bytes();
        let mut i = self.pos;
        loop {
            i = find_special(bytes, i)?;
            match *bytes.get(i)? {
                b'"' => break,
                b'\\' => match *bytes.get(i + 1)? {
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => i += 2,
                    b'u' => {
                        let mut code = 0u32;
                        for &h in bytes.get(i + 2..i + 6)? {
                            code = code * 16 + char::from(h).to_digit(16)?;
                        }
                        if (0xd800..=0xdfff).contains(&code) {
                            return None;
                        }
                        i += 6;
                    }
                    _ => return None,
                },
                _ => return None,
            }
        }
        self.pos = i + 1;
        Some(())
    }

    /// The value of `value` or `ts`: a number, a string (kept as text), or null.
    #[inline(always)]
    fn num(&mut self) -> Option<Num<'a>> {
        match self.peek()? {
            b'"' => {
                self.pos += 1;
                Some(Num::Text(Cow::Borrowed(self.string()?)))
            }
            b'n' => self.literal(b"null").then_some(Num::Null),
            _ => self.number(),
        }
    }

    /// The value of another field: `Some(number)`, or `None` for a skipped scalar.
    #[inline(always)]
    fn extra(&mut self) -> Option<Option<f64>> {
        let skipped = match self.peek()? {
            b'"' => {
                self.pos += 1;
                self.skip_string()?;
                true
            }
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            b'[' | b'{' => {
                self.skip_container()?;
                true
            }
            _ => false,
        };
        if skipped {
            return Some(None);
        }
        match self.number()? {
            Num::Int(v) => Some(Some(v as f64)),
            Num::UInt(v) => Some(Some(v as f64)),
            Num::Float(v) => Some(Some(v)),
            Num::Text(_) | Num::Null => None,
        }
    }

    /// Skips the array or object at the cursor, checking that it is valid JSON the way serde_json
    /// does for an ignored value: numbers by their syntax only, any depth (but the fast path
    /// leaves more than `MAX_DEPTH` levels, and strings with escapes, to serde).
    fn skip_container(&mut self) -> Option<()> {
        // The open containers, the innermost in the lowest bit: 1 for an object, 0 for an array.
        let mut stack: u64 = 0;
        let mut depth = 0;
        loop {
            // At a value.
            match self.peek()? {
                open @ (b'[' | b'{') => {
                    self.pos += 1;
                    if depth == MAX_DEPTH {
                        return None;
                    }
                    let object = open == b'{';
                    stack = (stack << 1) | u64::from(object);
                    depth += 1;
                    self.skip_ws();
                    let empty = self.peek() == Some(if object { b'}' } else { b']' });
                    if !empty {
                        if object {
                            self.member_key()?;
                        }
                        continue;
                    }
                    self.pos += 1;
                    stack >>= 1;
                    depth -= 1;
                }
                b'"' => {
                    self.pos += 1;
                    self.skip_string()?;
                }
                b't' if self.literal(b"true") => {}
                b'f' if self.literal(b"false") => {}
                b'n' if self.literal(b"null") => {}
                _ => self.skip_number()?,
            }
            // After a value: close containers until one goes on with another element.
            loop {
                if depth == 0 {
                    return Some(());
                }
                self.skip_ws();
                let object = stack & 1 == 1;
                match self.next()? {
                    b',' => {
                        self.skip_ws();
                        if object {
                            self.member_key()?;
                        }
                        break;
                    }
                    b']' if !object => {}
                    b'}' if object => {}
                    _ => return None,
                }
                stack >>= 1;
                depth -= 1;
            }
        }
    }

    /// In a skipped object: a key, the colon and the whitespace up to the value.
    #[inline(always)]
    fn member_key(&mut self) -> Option<()> {
        self.expect(b'"')?;
        self.skip_string()?;
        self.skip_ws();
        self.expect(b':')?;
        self.skip_ws();
        Some(())
    }

    /// Skips a number in a skipped container, checking only its syntax (as serde_json does there).
    fn skip_number(&mut self) -> Option<()> {
        let bytes = self.text.as_bytes();
        let mut i = self.pos;
        if bytes.get(i) == Some(&b'-') {
            i += 1;
        }
        let digits = |mut i: usize| {
            while let Some(b'0'..=b'9') = bytes.get(i) {
                i += 1;
            }
            i
        };
        match bytes.get(i)? {
            // No leading zeros.
            b'0' if !matches!(bytes.get(i + 1), Some(b'0'..=b'9')) => i += 1,
            b'1'..=b'9' => i = digits(i + 1),
            _ => return None,
        }
        if bytes.get(i) == Some(&b'.') {
            let end = digits(i + 1);
            if end == i + 1 {
                return None;
            }
            i = end;
        }
        if let Some(b'e' | b'E') = bytes.get(i) {
            i += 1;
            if let Some(b'+' | b'-') = bytes.get(i) {
                i += 1;
            }
            let end = digits(i);
            if end == i {
                return None;
            }
            i = end;
        }
        self.pos = i;
        Some(())
    }

    /// A JSON number, as serde_json would deliver it to a visitor: `UInt` for non-negative
    /// integers, `Int` for negative ones, `Float` for `-0` and numbers with a fraction or
    /// exponent, computed exactly like serde_json's `f64_from_parts`. `None` for malformed
    /// numbers, for more than `MAX_DIGITS` significant digits (serde_json takes other routes
    /// once the significand leaves u64) and for a decimal exponent beyond ±22 (outside `POW10`).
    #[inline(always)]
    fn number(&mut self) -> Option<Num<'a>> {
        let bytes = self.text.as_bytes();
        let mut i = self.pos;
        let positive = bytes.get(i) != Some(&b'-');
        if !positive {
            i += 1;
        }
        // Digits accumulate with wrapping arithmetic; more than MAX_DIGITS of them are
        // rejected below, and up to that many cannot wrap.
        let int_start = i;
        let mut sig: u64 = 0;
        while let Some(&c @ b'0'..=b'9') = bytes.get(i) {
            sig = sig.wrapping_mul(10).wrapping_add(u64::from(c - b'0'));
            i += 1;
        }
        let int_len = i - int_start;
        // At least one digit, and no leading zero.
        if int_len == 0 || (int_len > 1 && bytes.get(int_start) == Some(&b'0')) {
            return None;
        }
        let mut frac_len = 0;
        let mut float = false;
        if bytes.get(i) == Some(&b'.') {
            i += 1;
            let frac_start = i;
            while let Some(&c @ b'0'..=b'9') = bytes.get(i) {
                sig = sig.wrapping_mul(10).wrapping_add(u64::from(c - b'0'));
                i += 1;
            }
            frac_len = i - frac_start;
            // At least one digit after the point.
            if frac_len == 0 {
                return None;
            }
            float = true;
        }
        if int_len + frac_len > MAX_DIGITS {
            return None;
        }
        // At most MAX_DIGITS, so the cast is exact.
        let mut exp = -(frac_len as i32);
        if let Some(b'e' | b'E') = bytes.get(i) {
            i += 1;
            float = true;
            let negative_exp = match bytes.get(i) {
                Some(b'+') => {
                    i += 1;
                    false
                }
                Some(b'-') => {
                    i += 1;
                    true
                }
                _ => false,
            };
            let start = i;
            let mut e: i32 = 0;
            while let Some(&c @ b'0'..=b'9') = bytes.get(i) {
                if i - start >= MAX_EXP_DIGITS {
                    return None;
                }
                e = e * 10 + i32::from(c - b'0');
                i += 1;
            }
            if i == start {
                return None;
            }
            exp = if negative_exp { exp - e } else { exp + e };
        }
        self.pos = i;
        if !float {
            return Some(if positive {
                Num::UInt(sig)
            } else {
                let neg = (sig as i64).wrapping_neg();
                // serde_json: a float on underflow below i64::MIN, or on `-0`.
                if neg >= 0 {
                    Num::Float(-(sig as f64))
                } else {
                    Num::Int(neg)
                }
            });
        }
        let pow = *POW10.get(exp.unsigned_abs() as usize)?;
        let mut f = sig as f64;
        if exp >= 0 {
            f *= pow;
            if f.is_infinite() {
                return None;
            }
        } else {
            f /= pow;
        }
        Some(Num::Float(if positive { f } else { -f }))
    }
}

/// The index of the first `"`, `\` or control character at or after `i`, if any; eight bytes at
/// a time while eight remain.
#[inline(always)]
fn find_special(bytes: &[u8], mut i: usize) -> Option<usize> {
    loop {
        if let Some(chunk) = bytes.get(i..i + 8) {
            let mask = special_mask(u64::from_le_bytes(chunk.try_into().ok()?));
            if mask == 0 {
                i += 8;
                continue;
            }
            return Some(i + (mask.trailing_zeros() / 8) as usize);
        }
        match *bytes.get(i)? {
            b'"' | b'\\' | 0..=0x1f => return Some(i),
            _ => i += 1,
        }
    }
}

/// Eight bytes (the first in the low byte) → a mask with the high bit set in the lane of each
/// `"`, `\` or byte below 0x20. Lanes above such a byte may be set spuriously (borrows
/// propagate upwards), but the lowest set lane is always a real one, and no real one is missed.
#[inline(always)]
fn special_mask(w: u64) -> u64 {
    const ONES: u64 = u64::MAX / 255;
    const HIGH: u64 = ONES << 7;
    let ctrl = w.wrapping_sub(ONES * 0x20) & !w;
    let q = w ^ (ONES * u64::from(b'"'));
    let quote = q.wrapping_sub(ONES) & !q;
    let b = w ^ (ONES * u64::from(b'\\'));
    let backslash = b.wrapping_sub(ONES) & !b;
    (ctrl | quote | backslash) & HIGH
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

    /// Decodes a frame that must fail, and checks nothing was pushed.
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
        // Microseconds and nanoseconds (found by magnitude) were read as milliseconds before.
        assert_eq!(f("1763761234567890"), Some(1_763_761_234_567));
        assert_eq!(f("1763761234567890123"), Some(1_763_761_234_567));
        assert_eq!(f(r#""1763761234567890123""#), Some(1_763_761_234_567));
    }

    #[test]
    fn a_configured_unit_is_applied_by_both_parsers() {
        // The scanner takes the first frame, serde the second (an escaped key), alike.
        for frame in [
            r#"{"device":"d","v":1,"ts":1763761234567890}"#,
            r#"{"device":"d","\u0076":1,"ts":1763761234567890}"#,
        ] {
            let mut s = VecSink::default();
            decode(frame, None, TsUnit::Us, &mut s).expect(frame);
            assert_eq!(s.0[0].2, Some(1_763_761_234_567), "{frame}");
        }
        let at = |unit, ts: &str| {
            let mut s = VecSink::default();
            let frame = format!(r#"{{"device":"d","v":1,"ts":{ts}}}"#);
            decode(&frame, None, unit, &mut s).map(|_| s.0[0].2)
        };
        // Small values in an explicit unit are not taken for seconds.
        assert_eq!(at(TsUnit::Ms, "1500"), Ok(Some(1500)));
        assert_eq!(at(TsUnit::Auto, "1500"), Ok(Some(1_500_000)));
        assert_eq!(
            at(TsUnit::Ns, "1763761234567890123.0"),
            Ok(Some(1_763_761_234_568))
        );
        assert_eq!(at(TsUnit::S, "1763761234.5"), Ok(Some(1_763_761_234_500)));
        assert_eq!(
            at(TsUnit::S, "9223372036854776"),
            Err(bad("ts", "9223372036854776"))
        );
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
            match super::super::decode(super::super::Format::Json, &bytes, &super::super::Opts::device(Some("d")), &mut s) {
                Ok(n) => prop_assert_eq!(n, s.0.len()),
                Err(_) => prop_assert!(s.0.is_empty()),
            }
        }

        #[test]
        fn json_like_text_never_panics(text in r#"[{}\[\]":,0-9a-z.\-eE \\u]{0,80}"#) {
            let mut s = VecSink::default();
            match decode(&text, None, TsUnit::Auto, &mut s) {
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
            let r = decode(&text, None, TsUnit::Auto, &mut s);
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

    // ---- Fast path vs serde path -------------------------------------------------------------

    /// The fast path's result for a frame, if it takes the frame.
    fn parse_fast(frame: &str) -> Option<Parsed<'_>> {
        let mut p = Parsed::new();
        scan(frame.trim_ascii(), &mut p).then_some(p)
    }

    /// `decode` without the fast path: what the decoder did before it had one.
    fn decode_serde_only(
        frame: &str,
        default_device: Option<&str>,
        out: &mut VecSink,
    ) -> Result<usize, DecodeError> {
        let frame = frame.trim_ascii();
        if frame.is_empty() {
            return Ok(0);
        }
        finish(
            &mut parse_serde(frame)?,
            default_device,
            None,
            TsUnit::Auto,
            out,
        )
    }

    /// A bit-exact, comparable rendering of a number (`-0.0` differs from `0.0`).
    fn describe_num(n: &Option<Num<'_>>) -> String {
        match n {
            None => "-".into(),
            Some(Num::Int(v)) => format!("i{v}"),
            Some(Num::UInt(v)) => format!("u{v}"),
            Some(Num::Float(v)) => format!("f{:#x}", v.to_bits()),
            Some(Num::Text(s)) => format!("t{s:?}"),
            Some(Num::Null) => "null".into(),
        }
    }

    fn describe(p: &Parsed<'_>) -> String {
        let samples: Vec<_> = p
            .samples
            .iter()
            .map(|(k, v)| format!("{k:?}={:#x}", v.to_bits()))
            .collect();
        format!(
            "device={:?} metric={:?} value={} ts={} samples={samples:?}",
            p.device,
            p.metric,
            describe_num(&p.value),
            describe_num(&p.ts)
        )
    }

    fn bits(recs: &[(String, String, Option<i64>, f64)]) -> Vec<(&str, &str, Option<i64>, u64)> {
        recs.iter()
            .map(|(d, m, ts, v)| (d.as_str(), m.as_str(), *ts, v.to_bits()))
            .collect()
    }

    /// Checks that the fast path, where it takes the frame, parses exactly as serde does (every
    /// string borrowed), and that `decode` and the serde-only decoder agree bit for bit.
    fn check_agree(frame: &str, default_device: Option<&str>) -> Result<(), TestCaseError> {
        if let Some(fast) = parse_fast(frame) {
            for s in [&fast.device, &fast.metric].into_iter().flatten() {
                prop_assert!(matches!(s, Cow::Borrowed(_)), "{frame:?}: owned string");
            }
            prop_assert!(!fast.samples.spilled() || fast.samples.len() > 8);
            match parse_serde(frame.trim_ascii()) {
                Ok(slow) => prop_assert_eq!(describe(&fast), describe(&slow), "{:?}", frame),
                Err(e) => prop_assert!(false, "{frame:?}: fast path took it, serde says {e}"),
            }
        }
        let (mut a, mut b) = (VecSink::default(), VecSink::default());
        let got = decode(frame, default_device, TsUnit::Auto, &mut a);
        let want = decode_serde_only(frame, default_device, &mut b);
        prop_assert_eq!(&got, &want, "{:?}", frame);
        prop_assert_eq!(bits(&a.0), bits(&b.0), "{:?}", frame);
        if let Ok(n) = got {
            prop_assert_eq!(n, a.0.len());
        }
        Ok(())
    }

    fn agree(frame: &str) {
        for dflt in [None, Some("dflt")] {
            if let Err(e) = check_agree(frame, dflt) {
                panic!("{e}");
            }
        }
    }

    #[test]
    fn name_ok_is_a_shortcut_of_check_name() {
        let printable: String = (b' '..=b'~').map(char::from).collect();
        for name in [
            &printable[..1],
            &printable,
            &"x".repeat(MAX_NAME_LEN),
            " ",
            "~",
        ] {
            assert!(name_ok(name), "{name:?}");
            assert_eq!(check_name("metric", name), Ok(()), "{name:?}");
        }
        for c in printable.chars() {
            assert_eq!(check_name("metric", &c.to_string()), Ok(()));
        }
        for name in ["", "a\u{7f}", "a\tb", "é", &"x".repeat(MAX_NAME_LEN + 1)] {
            assert!(!name_ok(name), "{name:?}");
        }
    }

    #[test]
    fn fast_path_takes_common_frames() {
        for frame in [
            r#"{"device":"sensor-0042","metric":"temperature","ts":1763761234567,"value":22.125}"#,
            r#"{"device":"sensor-0042","ts":1763761234567,"temperature":22.125,"humidity":41.5,"pressure":1013.2,"battery":3.71,"fw":"1.4.2"}"#,
            " \t{ \"value\" : -3 , \"ts\":1763761234, \"metric\":\"m\", \"device\":\"d9\" }\r ",
            "{\n\"id\":\"d\",\r\n\"x\":1e5,\"y\":-2.5E-3,\"z\":0,\"w\":-0,\"v\":-0.0}",
            r#"{"device":"d","metric":"m","value":"22.5","ts":"1700000000"}"#,
            r#"{"device":"d","v":1,"ts":null,"ok":true,"no":false,"n":null,"s":"x y","":"e"}"#,
            r#"{"device":"dé😀","métrique":1.5,"big":9999999999999999999,"min":-9223372036854775808}"#,
            r#"{"device":"d","a":123456789012345678.9,"b":0.30000000000000004,"c":1e22,"d":1e-22}"#,
            "{\"device\":\"d\u{7f}\",\"metric\":\"\",\"value\":null}",
            r#"{"device":"","v":1}"#,
            r#"{"metric":"m","value":1,"x":2}"#,
            r#"{"device":"d","o":{},"a":[],"v":1}"#,
            r#"{"device":"d","s":"a\nb\"\\\/\b\f\r\t\u00e9\uFFFF\u0000","v":1}"#,
            r#"{"device":"d","o":["a\nb",{"\u0061\"":"\u00E9"}],"v":1}"#,
            "{\"device\":\"d\",\"n\":[ 1 ,-0.5e+3,\t1e400, 0,\"x\",true,false,null,{ \"k\" :\r\n[{}] }],\"v\":1}",
            r#"{"device":"d","o":{"a":{"b":{"c":[[["é"]]]}},"d":-12345678901234567890123.5E-999},"v":1}"#,
            "{}",
            "{ }",
        ] {
            assert!(parse_fast(frame).is_some(), "{frame:?}");
            agree(frame);
        }
        let deep = format!(
            r#"{{"device":"d","o":{}{},"v":1}}"#,
            "[".repeat(64),
            "]".repeat(64)
        );
        assert!(parse_fast(&deep).is_some());
        agree(&deep);
        let deep = format!(
            r#"{{"device":"d","o":{}1{},"v":1}}"#,
            r#"{"a":["#.repeat(32),
            "]}".repeat(32)
        );
        assert!(parse_fast(&deep).is_some());
        agree(&deep);
    }

    #[test]
    fn fast_path_leaves_unusual_frames_to_serde() {
        for frame in [
            r#"{"dev\u0069ce":"d","v":1}"#,
            r#"{"device":"d\"q","v":1}"#,
            r#"{"device":"d","s":"\ud83d\ude00","v":1}"#,
            r#"{"device":"d","s":"\udc00","v":1}"#,
            r#"{"device":"d","s":"\q","v":1}"#,
            r#"{"device":"d","s":"\u12","v":1}"#,
            r#"{"device":"d","s":"\u12G4","v":1}"#,
            r#"{"device":"d","s":"\"#,
            r#"{"device":"d","s":"a\"}"#,
            r#"{"device":"d","o":["\ud800"],"v":1}"#,
            r#"{"device":"d","o":{"a":1,},"v":1}"#,
            r#"{"device":"d","o":[1,],"v":1}"#,
            r#"{"device":"d","o":[1 2],"v":1}"#,
            r#"{"device":"d","o":{"a" 1},"v":1}"#,
            r#"{"device":"d","o":{"a":1 "b":2},"v":1}"#,
            r#"{"device":"d","o":{1:2},"v":1}"#,
            r#"{"device":"d","o":{"a"},"v":1}"#,
            r#"{"device":"d","o":[01],"v":1}"#,
            r#"{"device":"d","o":[1.],"v":1}"#,
            r#"{"device":"d","o":[1e],"v":1}"#,
            r#"{"device":"d","o":[-],"v":1}"#,
            r#"{"device":"d","o":[.5],"v":1}"#,
            r#"{"device":"d","o":[tru],"v":1}"#,
            r#"{"device":"d","o":[},"v":1}"#,
            r#"{"device":"d","o":{],"v":1}"#,
            r#"{"device":"d","o":[[]],]"v":1}"#,
            r#"{"device":"d","o":[1,{"a":[2}],"v":1}"#,
            r#"{"device":"d","o":[1"#,
            r#"{"device":"d","o":{"a":"#,
            r#"{"device":"d","v":100000000000000000000000000000}"#,
            r#"{"device":"d","v":18446744073709551615}"#,
            r#"{"device":"d","v":-18446744073709551615}"#,
            r#"{"device":"d","v":1844674407370955161.5}"#,
            r#"{"device":"d","v":0.000000000000000000001}"#,
            r#"{"device":"d","v":1.00000000000000000000000001}"#,
            r#"{"device":"d","v":1e23}"#,
            r#"{"device":"d","v":1e-23}"#,
            r#"{"device":"d","v":0e99999}"#,
            r#"{"device":"d","v":1e400}"#,
            r#"{"device":"d","v":-01}"#,
            r#"{"device":"d","v":1.}"#,
            r#"{"device":"d","v":.5}"#,
            r#"{"device":"d","v":1e}"#,
            r#"{"device":"d","v":+1}"#,
            r#"{"device":"d","v":tru}"#,
            r#"{"device":"d","v":1,}"#,
            r#"{"device":"d","v":1} x"#,
            r#"{"device":"d","v":1}{}"#,
            r#"{"device":"d","v":1"#,
            r#"{"device":"d" "v":1}"#,
            "{\"device\":\"d\",\u{c}\"v\":1}",
            "{\"device\":\"d\t\",\"v\":1}",
            r#"{"device":7,"v":1}"#,
            r#"{"device":null,"v":1}"#,
            r#"{"device":"d","value":true,"metric":"m"}"#,
            r#"{"device":"d","value":[1]}"#,
            r#"{"device":"a","id":"b","v":1}"#,
            r#"{"device":"a","ts":1,"timestamp":2,"v":1}"#,
            r#"{"device":"a","metric":"m","metric":"n","value":1}"#,
            r#"{"device":"a","metric":"m","value":1,"value":2}"#,
            r#"{'a':1}"#,
            "[1,2]",
            "42",
            "}",
            "{",
            "\u{feff}{}",
        ] {
            assert!(parse_fast(frame).is_none(), "{frame:?}");
            agree(frame);
        }
        let mut many = String::from(r#"{"device":"d""#);
        for i in 0..=MAX_SAMPLES_PER_FRAME {
            many.push_str(&format!(r#","m{i}":{i}"#));
        }
        many.push('}');
        assert!(parse_fast(&many).is_none());
        agree(&many);
        let deep = format!(
            r#"{{"device":"d","o":{}{},"v":1}}"#,
            "[".repeat(65),
            "]".repeat(65)
        );
        assert!(parse_fast(&deep).is_none());
        agree(&deep);
    }

    #[test]
    fn fast_numbers_match_serde_exactly() {
        for n in [
            "0",
            "-0",
            "0.0",
            "-0.0",
            "-0e0",
            "1",
            "-1",
            "22.125",
            "22.1234",
            "1013.2",
            "0.1",
            "0.30000000000000004",
            "1.7976931348623157",
            "5e-7",
            "4.9E+3",
            "123456789.123456789e-5",
            "1e22",
            "1e-22",
            "9.999999999999999e22",
            "9223372036854775807",
            "9223372036854775808",
            "-9223372036854775808",
            "-9223372036854775809",
            "1763761234567",
            "1763761234567.4",
            "0.000000000000000001",
            "1e0022",
            "1e-0022",
        ] {
            let frame = format!(r#"{{"device":"d","x":{n},"metric":"m","value":{n},"ts":{n}}}"#);
            let fast = parse_fast(&frame).unwrap_or_else(|| panic!("{n}: not taken"));
            let slow = parse_serde(&frame).unwrap_or_else(|e| panic!("{n}: {e}"));
            assert_eq!(describe(&fast), describe(&slow), "{n}");
            agree(&frame);
        }
    }

    /// A JSON-ish number: mostly well formed, with long digit runs and big exponents.
    fn number_text() -> impl Strategy<Value = String> {
        prop_oneof![
            6 => r"-?(0|[1-9][0-9]{0,8})(\.[0-9]{1,8})?([eE][+-]?1?[0-9])?",
            2 => (-1e9f64..1e9).prop_map(|v| v.to_string()),
            1 => r"-?(0|[1-9][0-9]{0,24})(\.[0-9]{1,24})?([eE][+-]?[0-9]{1,5})?",
            1 => any::<f64>()
                .prop_filter("finite", |v| v.is_finite())
                .prop_map(|v| format!("{v:e}")),
            1 => any::<i64>().prop_map(|v| v.to_string()),
            1 => any::<u64>().prop_map(|v| v.to_string()),
            1 => r"[-+0-9.eE]{1,8}",
        ]
    }

    fn value_text() -> impl Strategy<Value = String> {
        prop_oneof![
            12 => number_text(),
            3 => r#""[a-z0-9 ._é-]{0,10}""#,
            2 => number_text().prop_map(|n| format!("\"{n}\"")),
            2 => escaped_string_text(),
            2 => prop_oneof![
                4 => Just("true"),
                4 => Just("false"),
                4 => Just("null"),
                1 => Just("nul"),
                1 => Just("True"),
            ]
                .prop_map(str::to_owned),
            2 => nested_text(),
        ]
    }

    /// A string with escapes, valid or not.
    fn escaped_string_text() -> impl Strategy<Value = String> {
        r#""([a-z]|\\[nt"\\/bfr]|\\u[0-9a-fA-F]{4}|\\ud83d\\ude00|\\udc00|\\[qx]|\\u[0-9a-f]{0,3}){0,4}""#
    }

    /// An array or object of arbitrary values (with whitespace), for ignored fields.
    fn nested_text() -> impl Strategy<Value = String> {
        fn array(items: Vec<(String, &str, &str)>) -> String {
            let items: Vec<_> = items.iter().map(|(v, a, b)| format!("{a}{v}{b}")).collect();
            format!("[{}]", items.join(","))
        }
        fn object(members: Vec<(String, String, &str, &str)>) -> String {
            let members: Vec<_> = members
                .iter()
                .map(|(k, v, a, b)| format!("{a}\"{k}\"{b}:{a}{v}{b}"))
                .collect();
            format!("{{{}}}", members.join(","))
        }
        let leaf = prop_oneof![
            number_text(),
            r#""[a-z0-9 é]{0,4}""#,
            Just("true".to_owned()),
            Just("null".to_owned()),
            escaped_string_text(),
        ];
        let value = leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec((inner.clone(), ws(), ws()), 0..4).prop_map(array),
                proptest::collection::vec((key_text(), inner, ws(), ws()), 0..4).prop_map(object),
            ]
        });
        prop_oneof![
            proptest::collection::vec((value.clone(), ws(), ws()), 0..4).prop_map(array),
            proptest::collection::vec((key_text(), value, ws(), ws()), 0..4).prop_map(object),
        ]
    }

    fn key_text() -> impl Strategy<Value = String> {
        prop_oneof![
            1 => prop_oneof![
                Just("device"), Just("id"), Just("metric"), Just("value"),
                Just("ts"), Just("time"), Just("timestamp"),
            ]
            .prop_map(str::to_owned),
            6 => "[a-z][a-z0-9_]{0,6}",
            1 => prop_oneof![Just(""), Just("é"), Just("dev\\u0069ce"), Just("a\\nb"), Just("x y")]
                .prop_map(str::to_owned),
        ]
    }

    fn ws() -> impl Strategy<Value = &'static str> {
        prop_oneof![
            100 => Just(""),
            8 => Just(" "),
            2 => Just("\t"),
            2 => Just("\r\n"),
            1 => Just("\u{c}"),
        ]
    }

    /// A flat-ish JSON object of arbitrary members, with arbitrary whitespace between tokens.
    fn object_text() -> impl Strategy<Value = String> {
        let member = (key_text(), value_text(), ws(), ws(), ws(), ws())
            .prop_map(|(k, v, a, b, c, d)| format!("{a}\"{k}\"{b}:{c}{v}{d}"));
        (
            prop_oneof![3 => Just(None), 1 => r#""[a-z0-9-]{0,8}""#.prop_map(Some)],
            proptest::collection::vec(member, 0..8),
            ws(),
            ws(),
        )
            .prop_map(|(device, members, a, b)| {
                let mut all = Vec::new();
                if let Some(d) = device {
                    all.push(format!("\"device\":{d}"));
                }
                all.extend(members);
                format!("{a}{{{}}}{b}", all.join(","))
            })
    }

    #[test]
    fn generated_objects_mostly_take_the_fast_path() {
        use proptest::strategy::ValueTree;
        use proptest::test_runner::TestRunner;
        let mut runner = TestRunner::deterministic();
        let strategy = object_text();
        let (mut fast, mut emitted) = (0, 0);
        for _ in 0..300 {
            let frame = strategy
                .new_tree(&mut runner)
                .map(|t| t.current())
                .unwrap_or_default();
            if parse_fast(&frame).is_some() {
                fast += 1;
                if decode(&frame, Some("dflt"), TsUnit::Auto, &mut VecSink::default()).is_ok() {
                    emitted += 1;
                }
            }
        }
        // Without enough fast-path frames the agreement tests above would prove little.
        assert!(fast >= 90, "only {fast} of 300 took the fast path");
        assert!(
            emitted >= 30,
            "only {emitted} of 300 decoded on the fast path"
        );
    }

    type Edit = (proptest::sample::Index, u8, char);

    /// A few random edits of JSON-ish characters.
    fn edits() -> impl Strategy<Value = Vec<Edit>> {
        // Structural characters three times as likely as the others.
        let chars: Vec<char> = "{}[]\":,{}[]\":,{}[]\":,0123456789.-+eE \t\\uéntrfals\u{0}\u{1f}"
            .chars()
            .collect();
        proptest::collection::vec(
            (
                any::<proptest::sample::Index>(),
                0u8..7,
                proptest::sample::select(chars),
            ),
            1..4,
        )
    }

    /// Applies edits: insert, remove or replace a character, or (rarely) cut the text there.
    fn mutate(text: &str, edits: &[Edit]) -> String {
        let mut chars: Vec<char> = text.chars().collect();
        for (at, op, c) in edits {
            let i = at.index(chars.len() + 1);
            match op {
                0 | 1 => chars.insert(i, *c),
                2 | 3 if i < chars.len() => {
                    chars.remove(i);
                }
                4 | 5 if i < chars.len() => chars[i] = *c,
                _ => chars.truncate(i),
            }
        }
        chars.into_iter().collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        #[test]
        fn fast_and_serde_paths_agree_on_generated_objects(frame in object_text()) {
            check_agree(&frame, None)?;
            check_agree(&frame, Some("dflt"))?;
        }

        #[test]
        fn fast_and_serde_paths_agree_on_numbers(n in number_text()) {
            for frame in [
                format!(r#"{{"device":"d","x":{n}}}"#),
                format!(r#"{{"device":"d","metric":"m","value":{n}}}"#),
                format!(r#"{{"device":"d","v":1,"ts":{n}}}"#),
                format!(r#"{{"device":"d","v":1,"ts":"{n}"}}"#),
            ] {
                check_agree(&frame, None)?;
            }
        }

        #[test]
        fn fast_and_serde_paths_agree_on_mutated_objects(frame in object_text(), edits in edits()) {
            let frame = mutate(&frame, &edits);
            check_agree(&frame, None)?;
            check_agree(&frame, Some("dflt"))?;
        }

        #[test]
        fn fast_and_serde_paths_agree_on_mutated_nested_values(
            nested in nested_text(),
            edits in edits(),
        ) {
            let frame = format!(r#"{{"device":"d","o":{},"v":1}}"#, mutate(&nested, &edits));
            check_agree(&frame, None)?;
        }

        #[test]
        fn fast_and_serde_paths_agree_on_garbage(text in r#"[{}\[\]":,0-9a-z.\-eE \\u]{0,80}"#) {
            check_agree(&text, None)?;
            check_agree(&text, Some("dflt"))?;
        }
    }

    impl Field {
        fn is_other(&self) -> bool {
            matches!(self, Field::Other)
        }
    }
}
