//! Checksummed store records: `seal` prefixes a value with a tag and a CRC-32 of its key and bytes,
//! `open` verifies both, so damage in sled's files is found and counted instead of misread.

use std::collections::BTreeMap;
use std::sync::Mutex;

/// First byte of every sealed value (format 1: tag, CRC-32 LE of key and payload, payload).
const TAG: u8 = 0xC1;
const HEADER: usize = 5;

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
    #[error("{0} records of the last checkpoint missing (sled dropped them recovering its log)")]
    Missing(u64),
}

fn crc(key: &[u8], payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(key);
    h.update(payload);
    h.finalize()
}

/// The value to store under `key` for `payload`.
pub fn seal(key: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(HEADER + payload.len());
    v.push(TAG);
    v.extend_from_slice(&crc(key, payload).to_le_bytes());
    v.extend_from_slice(payload);
    v
}

/// The payload of a value read under `key`, if it is intact (and was stored under that key).
pub fn open<'a>(key: &[u8], value: &'a [u8]) -> Result<&'a [u8], Damaged> {
    let (Some(&tag), Some(sum), Some(payload)) =
        (value.first(), value.get(1..HEADER), value.get(HEADER..))
    else {
        return Err(Damaged::Short(value.len()));
    };
    if tag != TAG {
        return Err(Damaged::Tag(tag));
    }
    let stored = sum.try_into().map_or(0, u32::from_le_bytes);
    let computed = crc(key, payload);
    if stored != computed {
        return Err(Damaged::Checksum { stored, computed });
    }
    Ok(payload)
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
        assert_eq!(open(b"k", &v), Ok(&b"payload"[..]));
        assert!(matches!(open(b"other", &v), Err(Damaged::Checksum { .. })));
        for i in 0..v.len() * 8 {
            let mut w = v.clone();
            w[i / 8] ^= 1 << (i % 8);
            assert!(open(b"k", &w).is_err(), "bit {i} flipped unnoticed");
        }
        assert_eq!(open(b"k", &v[..3]), Err(Damaged::Short(3)));
        assert_eq!(open(b"k", &seal(b"k", b"")), Ok(&b""[..]));
    }
}
