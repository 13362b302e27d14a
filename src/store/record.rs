//! Checksummed store records: `seal` prefixes a value with a tag and a CRC-32 of its key and bytes
//! (deflating payloads that shrink), `open` verifies both, so damage is counted instead of misread.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::sync::Mutex;

/// First byte of a plain sealed value (format 1: tag, CRC-32 LE of key and payload, payload).
const TAG: u8 = 0xC1;
/// First byte of a deflated one (format 2: tag, CRC-32 LE of key and the rest, inflated length
/// u32 LE, raw deflate stream). The CRC covers the stored bytes, so damage is found before inflating.
const TAG_DEFLATE: u8 = 0xC2;
const HEADER: usize = 5;
const HEADER_DEFLATE: usize = 9;
/// Payloads shorter than this are stored plain (deflate saves little on them).
const MIN_DEFLATE: usize = 200;
/// Largest inflated length accepted (a damaged length must not make us allocate gigabytes).
const MAX_INFLATED: usize = 64 << 20;

/// Why a stored value is not a sound record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Damaged {
    #[error("{0} bytes: shorter than a record header")]
    Short(usize),
    #[error("unknown record tag {0:#04x}")]
    Tag(u8),
    #[error("checksum {stored:#010x} != {computed:#010x}")]
    Checksum { stored: u32, computed: u32 },
    #[error("undecodable payload: {0}")]
    Decode(String),
    #[error("inflated length {0} out of bounds")]
    Length(usize),
    #[error("{0} records of the last checkpoint missing (sled dropped them recovering its log)")]
    Missing(u64),
}

fn crc(key: &[u8], payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(key);
    h.update(payload);
    h.finalize()
}

/// The value to store under `key` for `payload`: deflated (format 2) when that saves at least an
/// eighth, else plain (format 1). JSON messages shrink ~3x, detector state little.
pub fn seal(key: &[u8], payload: &[u8]) -> Vec<u8> {
    if payload.len() >= MIN_DEFLATE && payload.len() <= MAX_INFLATED {
        if let Some(v) = deflated(key, payload) {
            return v;
        }
    }
    let mut v = Vec::with_capacity(HEADER + payload.len());
    v.push(TAG);
    v.extend_from_slice(&crc(key, payload).to_le_bytes());
    v.extend_from_slice(payload);
    v
}

fn deflated(key: &[u8], payload: &[u8]) -> Option<Vec<u8>> {
    let mut v = Vec::with_capacity(HEADER_DEFLATE + payload.len() / 2);
    v.extend_from_slice(&[TAG_DEFLATE, 0, 0, 0, 0]);
    v.extend_from_slice(&u32::try_from(payload.len()).ok()?.to_le_bytes());
    let mut z = flate2::write::DeflateEncoder::new(v, flate2::Compression::default());
    z.write_all(payload).ok()?;
    let mut v = z.finish().ok()?;
    if v.len() + payload.len() / 8 > HEADER + payload.len() {
        return None;
    }
    let sum = crc(key, &v[HEADER..]);
    v[1..HEADER].copy_from_slice(&sum.to_le_bytes());
    Some(v)
}

/// The payload of a value read under `key`, if it is intact (and was stored under that key).
pub fn open<'a>(key: &[u8], value: &'a [u8]) -> Result<Cow<'a, [u8]>, Damaged> {
    let (Some(&tag), Some(sum), Some(rest)) =
        (value.first(), value.get(1..HEADER), value.get(HEADER..))
    else {
        return Err(Damaged::Short(value.len()));
    };
    if tag != TAG && tag != TAG_DEFLATE {
        return Err(Damaged::Tag(tag));
    }
    let stored = sum.try_into().map_or(0, u32::from_le_bytes);
    let computed = crc(key, rest);
    if stored != computed {
        return Err(Damaged::Checksum { stored, computed });
    }
    if tag == TAG {
        return Ok(Cow::Borrowed(rest));
    }
    let len = inflated_len(value).ok_or(Damaged::Short(value.len()))?;
    if len > MAX_INFLATED {
        return Err(Damaged::Length(len));
    }
    let mut out = Vec::with_capacity(len);
    flate2::read::DeflateDecoder::new(&value[HEADER_DEFLATE..])
        .take(len as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| Damaged::Decode(e.to_string()))?;
    if out.len() != len {
        return Err(Damaged::Length(out.len()));
    }
    Ok(Cow::Owned(out))
}

fn inflated_len(value: &[u8]) -> Option<usize> {
    let b = value.get(HEADER..HEADER_DEFLATE)?;
    usize::try_from(u32::from_le_bytes(b.try_into().ok()?)).ok()
}

/// The length the value would have sealed plain (format 1), read from its header without
/// inflating: budgets count messages as they are, not as they compress.
pub fn plain_len(value: &[u8]) -> usize {
    match value.first() {
        Some(&TAG_DEFLATE) => inflated_len(value).map_or(value.len(), |n| HEADER + n),
        _ => value.len(),
    }
}

/// Records that could not be restored, per tree, since start.
#[derive(Debug, Default)]
pub struct DamageLog {
    trees: Mutex<BTreeMap<String, u64>>,
}

impl DamageLog {
    /// Counts and logs `n` records of `tree` that could not be restored.
    pub fn record(&self, tree: &str, n: u64, why: &Damaged) {
        if n == 0 {
            return;
        }
        tracing::error!(tree, records = n, reason = %why, "damaged store records could not be restored; dropped");
        let mut t = self.trees.lock().unwrap_or_else(|p| p.into_inner());
        *t.entry(tree.to_string()).or_default() += n;
    }

    /// (tree, records) for every tree with damage.
    pub fn counts(&self) -> Vec<(String, u64)> {
        let t = self.trees.lock().unwrap_or_else(|p| p.into_inner());
        t.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }

    pub fn total(&self) -> u64 {
        self.counts().iter().map(|(_, n)| n).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_record_opens_and_any_flipped_bit_or_other_key_is_caught() {
        let v = seal(b"k", b"payload");
        assert_eq!(open(b"k", &v).as_deref(), Ok(&b"payload"[..]));
        assert!(matches!(open(b"other", &v), Err(Damaged::Checksum { .. })));
        for i in 0..v.len() * 8 {
            let mut w = v.clone();
            w[i / 8] ^= 1 << (i % 8);
            assert!(open(b"k", &w).is_err(), "bit {i} flipped unnoticed");
        }
        assert_eq!(open(b"k", &v[..3]), Err(Damaged::Short(3)));
        assert_eq!(open(b"k", &seal(b"k", b"")).as_deref(), Ok(&b""[..]));
    }

    #[test]
    fn a_deflated_record_opens_to_its_payload_and_any_flipped_bit_is_caught() {
        let payload = br#"{"type":"summary","devices":{"dev001":{"mean":20.1}}}"#.repeat(20);
        let v = seal(b"k", &payload);
        assert_eq!(v[0], TAG_DEFLATE);
        assert!(v.len() < payload.len() / 4, "{} bytes", v.len());
        assert_eq!(open(b"k", &v).as_deref(), Ok(&payload[..]));
        assert_eq!(plain_len(&v), HEADER + payload.len());
        for i in 0..v.len() * 8 {
            let mut w = v.clone();
            w[i / 8] ^= 1 << (i % 8);
            assert!(open(b"k", &w).is_err(), "bit {i} flipped unnoticed");
        }
        // Incompressible bytes stay plain.
        let mut x: u32 = 1;
        let noise: Vec<u8> = (0..1000)
            .map(|_| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                (x >> 16) as u8
            })
            .collect();
        assert_eq!(seal(b"k", &noise)[0], TAG);
        // A sound checksum over a lying length is refused, not allocated.
        let mut w = v.clone();
        w[HEADER..HEADER_DEFLATE].copy_from_slice(&u32::MAX.to_le_bytes());
        let sum = crc(b"k", &w[HEADER..]);
        w[1..HEADER].copy_from_slice(&sum.to_le_bytes());
        assert!(matches!(open(b"k", &w), Err(Damaged::Length(_))));
    }
}
