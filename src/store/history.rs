//! Downsampled history of every series in sled, for charts over hours to weeks: 1-minute buckets
//! (min/mean/max/count) in one record per series-hour, compacted once a day into 15-minute buckets
//! in one record per series-day, deleted after `history_15m_max_age`.
//!
//! Shards keep only the current minute of each series in memory and hand closed minutes to the
//! store with each snapshot (every `persist_interval`), so a power cut loses at most that much, as
//! for the statistics. A record is read, merged and written back in one sled batch: merging is
//! exact (counts add, means weighted), so a minute written in two parts (before and after a
//! restart) is one bucket. Keys are length-prefixed names, so no name can alias another.

use serde::{Deserialize, Serialize};

use super::record::{self, DamageLog};
use super::StoreError;
use crate::model::Millis;

pub const MINUTE: i64 = 60_000;
pub const QUARTER: i64 = 15 * MINUTE;
pub const HOUR: i64 = 60 * MINUTE;
pub const DAY: i64 = 24 * HOUR;

/// Most buckets one query returns (30 days of 1-minute buckets is 43,200): a wider request is
/// refused with the resolution to ask for instead.
pub const MAX_POINTS: usize = 50_000;

const TIER_MINUTE: u8 = b'm';
const TIER_QUARTER: u8 = b'q';
/// Meta key: the day (start, ms) up to which minute records were compacted.
const COMPACTED: &[u8] = b"\xffcompacted";

/// One bucket: values as f32 (about 7 significant digits), like the chart ring.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Bucket {
    pub min: f32,
    pub max: f32,
    pub mean: f32,
    pub count: u32,
}

impl Bucket {
    pub fn merge(&mut self, o: &Bucket) {
        let n = f64::from(self.count) + f64::from(o.count);
        if n > 0.0 {
            let mean = (f64::from(self.mean) * f64::from(self.count)
                + f64::from(o.mean) * f64::from(o.count))
                / n;
            self.mean = mean as f32;
        }
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
        self.count = self.count.saturating_add(o.count);
    }
}

/// The minute being filled for one series, in the shard: 32 bytes, no allocation.
#[derive(Debug, Clone, Copy)]
pub struct MinuteAcc {
    /// Start of the minute (ms); meaningless while `count == 0`.
    start: Millis,
    min: f64,
    max: f64,
    sum: f64,
    count: u32,
}

impl Default for MinuteAcc {
    fn default() -> Self {
        MinuteAcc {
            start: 0,
            min: 0.0,
            max: 0.0,
            sum: 0.0,
            count: 0,
        }
    }
}

impl MinuteAcc {
    /// Adds a sample; returns the minute it closed (start, bucket) when the sample is of a later
    /// minute. A sample of an earlier minute than the open one is left out of the history.
    #[inline]
    pub fn push(&mut self, ts: Millis, value: f64) -> Option<(Millis, Bucket)> {
        let start = ts - ts.rem_euclid(MINUTE);
        if self.count > 0 && start != self.start {
            if start < self.start {
                return None;
            }
            let closed = self.take();
            self.open(start, value);
            return closed;
        }
        if self.count == 0 {
            self.open(start, value);
        } else {
            self.min = self.min.min(value);
            self.max = self.max.max(value);
            self.sum += value;
            self.count += 1;
        }
        None
    }

    fn open(&mut self, start: Millis, value: f64) {
        *self = MinuteAcc {
            start,
            min: value,
            max: value,
            sum: value,
            count: 1,
        };
    }

    /// The open minute so far (it stays open: later samples of it keep adding).
    pub fn peek(&self) -> Option<(Millis, Bucket)> {
        (self.count > 0).then(|| {
            (
                self.start,
                Bucket {
                    min: self.min as f32,
                    max: self.max as f32,
                    mean: (self.sum / f64::from(self.count)) as f32,
                    count: self.count,
                },
            )
        })
    }

    /// The open minute so far, leaving it empty (what a flush hands to the store; samples of the
    /// same minute that come later form a second part, merged with the first in the store).
    pub fn take(&mut self) -> Option<(Millis, Bucket)> {
        let b = self.peek();
        self.count = 0;
        b
    }
}

/// Buckets of one series handed to the store.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesBuckets {
    pub device: String,
    pub metric: String,
    /// (minute start, bucket), in time order.
    pub minutes: Vec<(Millis, Bucket)>,
}

/// The resolutions a query can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    Minute,
    Quarter,
}

impl Resolution {
    pub fn ms(self) -> i64 {
        match self {
            Resolution::Minute => MINUTE,
            Resolution::Quarter => QUARTER,
        }
    }
}

/// A record: the buckets of one series in one hour (minutes) or day (quarters), by slot.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Record {
    slots: Vec<(u8, Bucket)>,
}

impl Record {
    fn merge(&mut self, slot: u8, b: &Bucket) {
        match self.slots.binary_search_by_key(&slot, |(s, _)| *s) {
            Ok(i) => self.slots[i].1.merge(b),
            Err(i) => self.slots.insert(i, (slot, *b)),
        }
    }
}

fn put_name(key: &mut Vec<u8>, name: &str) {
    let len = u16::try_from(name.len()).unwrap_or(u16::MAX);
    key.extend_from_slice(&len.to_be_bytes());
    key.extend_from_slice(&name.as_bytes()[..usize::from(len)]);
}

/// Order-preserving encoding of a signed time.
fn time_bytes(t: Millis) -> [u8; 8] {
    ((t as u64) ^ (1 << 63)).to_be_bytes()
}

fn time_of(b: &[u8]) -> Option<Millis> {
    let a: [u8; 8] = b.try_into().ok()?;
    Some((u64::from_be_bytes(a) ^ (1 << 63)) as i64)
}

fn series_prefix(device: &str, metric: &str, tier: u8) -> Vec<u8> {
    let mut k = Vec::with_capacity(device.len() + metric.len() + 13);
    put_name(&mut k, device);
    put_name(&mut k, metric);
    k.push(tier);
    k
}

/// `part` tells records of one hour apart: each save writes the minutes it brings as a record of
/// their own (keyed by the first one's slot), so no record is rewritten as the hour fills.
fn key(device: &str, metric: &str, tier: u8, start: Millis, part: u8) -> Vec<u8> {
    let mut k = series_prefix(device, metric, tier);
    k.extend_from_slice(&time_bytes(start));
    k.push(part);
    k
}

/// (series prefix, tier, record start) of a key; `None` for the meta key or a malformed one.
fn parse_key(k: &[u8]) -> Option<(&[u8], u8, Millis)> {
    if k.len() < 14 {
        return None;
    }
    let (head, time) = k.split_at(k.len() - 9);
    let (prefix, tier) = head.split_at(head.len() - 1);
    Some((prefix, tier[0], time_of(&time[..8])?))
}

/// The history tree.
#[derive(Clone)]
pub struct History {
    tree: sled::Tree,
    damage: std::sync::Arc<DamageLog>,
    writes: std::sync::Arc<super::stats::Writes>,
}

impl History {
    pub fn open(
        db: &sled::Db,
        damage: std::sync::Arc<DamageLog>,
        writes: std::sync::Arc<super::stats::Writes>,
    ) -> Result<Self, StoreError> {
        Ok(History {
            tree: db.open_tree("history")?,
            damage,
            writes,
        })
    }

    fn read(&self, k: &[u8], v: &[u8]) -> Option<Record> {
        let why = match record::open(k, v) {
            Ok(payload) => match postcard::from_bytes::<Record>(&payload) {
                Ok(r) => return Some(r),
                Err(e) => record::Damaged::Decode(e.to_string()),
            },
            Err(d) => d,
        };
        self.damage.record("history", 1, &why);
        None
    }

    fn write(&self, batch: &mut sled::Batch, k: Vec<u8>, r: &Record) {
        if let Ok(payload) = postcard::to_allocvec(r) {
            let v = record::seal(&k, &payload);
            self.writes.history(k.len() + v.len());
            batch.insert(k, v);
        }
    }

    /// Writes closed minutes as records of their hour (one sled batch; the caller flushes). A
    /// record is only read and merged when the same key exists already (a minute split by a flush).
    pub fn save(&self, series: &[SeriesBuckets]) -> Result<usize, StoreError> {
        let mut batch = sled::Batch::default();
        let mut records = 0;
        // A minute of a day already compacted (a late sample) makes the next pass run again.
        let done = self.compacted_upto()?;
        let mut late = false;
        for s in series {
            let mut i = 0;
            while i < s.minutes.len() {
                let hour = s.minutes[i].0 - s.minutes[i].0.rem_euclid(HOUR);
                let part = ((s.minutes[i].0 - hour) / MINUTE) as u8;
                let k = key(&s.device, &s.metric, TIER_MINUTE, hour, part);
                let mut rec = match self.tree.get(&k)? {
                    Some(v) => self.read(&k, &v).unwrap_or_default(),
                    None => Record::default(),
                };
                while i < s.minutes.len() && s.minutes[i].0 - hour < HOUR && s.minutes[i].0 >= hour
                {
                    let (start, b) = &s.minutes[i];
                    rec.merge(((start - hour) / MINUTE) as u8, b);
                    i += 1;
                }
                self.write(&mut batch, k, &rec);
                records += 1;
                late |= hour + HOUR <= done;
            }
        }
        if late {
            batch.remove(COMPACTED);
        }
        self.tree.apply_batch(batch)?;
        Ok(records)
    }

    /// Buckets of one series in `[from, to)` at `res`, in time order.
    pub fn query(
        &self,
        device: &str,
        metric: &str,
        res: Resolution,
        from: Millis,
        to: Millis,
    ) -> Result<Vec<(Millis, Bucket)>, StoreError> {
        let (tier, span) = match res {
            Resolution::Minute => (TIER_MINUTE, HOUR),
            Resolution::Quarter => (TIER_QUARTER, DAY),
        };
        let mut out = Vec::new();
        let first = from - from.rem_euclid(span);
        let lo = key(device, metric, tier, first, 0);
        let mut hi = series_prefix(device, metric, tier);
        hi.extend_from_slice(&time_bytes(to));
        for kv in self.tree.range(lo..hi) {
            let (k, v) = kv?;
            let Some((_, _, start)) = parse_key(&k) else {
                continue;
            };
            let Some(rec) = self.read(&k, &v) else {
                continue;
            };
            for (slot, b) in rec.slots {
                let t = start + i64::from(slot) * res.ms();
                if t >= from && t < to {
                    out.push((t, b));
                }
            }
        }
        // Parts of one hour may hold the same minute (split by a flush): in order, merged.
        out.sort_by_key(|(t, _)| *t);
        out = merge_sorted(out, Vec::new());
        if res == Resolution::Quarter {
            // Quarters not compacted yet are still minute records: fold them in.
            let minutes = self.query(device, metric, Resolution::Minute, from, to)?;
            out = merge_sorted(out, to_quarters(minutes));
        }
        Ok(out)
    }

    fn compacted_upto(&self) -> Result<Millis, StoreError> {
        Ok(self
            .tree
            .get(COMPACTED)?
            .and_then(|v| time_of(&v))
            .unwrap_or(Millis::MIN))
    }

    /// Once per day: minute records of days that ended more than `minutes_for` ago become
    /// 15-minute buckets of that day's record, and day records older than `keep` are deleted.
    /// Returns (minute records compacted, day records deleted).
    pub fn compact(
        &self,
        now: Millis,
        minutes_for: i64,
        keep: i64,
    ) -> Result<(usize, usize), StoreError> {
        let line = now - minutes_for;
        let upto = line - line.rem_euclid(DAY);
        if upto <= self.compacted_upto()? {
            return Ok((0, 0));
        }
        let (mut compacted, mut deleted) = (0, 0);
        let cutoff = now - keep;
        let mut batch = sled::Batch::default();
        // Day records being built in this pass: (key, record), one series at a time.
        let mut days: Vec<(Vec<u8>, Record)> = Vec::new();
        for kv in self.tree.iter() {
            let (k, v) = kv?;
            let Some((prefix, tier, start)) = parse_key(&k) else {
                continue;
            };
            if tier == TIER_QUARTER && start + DAY <= cutoff {
                batch.remove(k);
                deleted += 1;
                continue;
            }
            if tier != TIER_MINUTE || start + HOUR > upto {
                continue;
            }
            let rec = self.read(&k, &v);
            batch.remove(k.clone());
            compacted += 1;
            let Some(rec) = rec else { continue };
            let day = start - start.rem_euclid(DAY);
            if day + DAY <= cutoff {
                continue;
            }
            let mut dk = prefix.to_vec();
            dk.push(TIER_QUARTER);
            dk.extend_from_slice(&time_bytes(day));
            dk.push(0);
            let at = match days.iter().position(|(key, _)| *key == dk) {
                Some(i) => i,
                None => {
                    let existing = match self.tree.get(&dk)? {
                        Some(v) => self.read(&dk, &v).unwrap_or_default(),
                        None => Record::default(),
                    };
                    days.push((dk, existing));
                    days.len() - 1
                }
            };
            for (slot, b) in &rec.slots {
                let t = start + i64::from(*slot) * MINUTE;
                days[at].1.merge(((t - day) / QUARTER) as u8, b);
            }
        }
        for (k, r) in &days {
            self.write(&mut batch, k.clone(), r);
        }
        batch.insert(COMPACTED, &time_bytes(upto));
        self.tree.apply_batch(batch)?;
        Ok((compacted, deleted))
    }
}

/// Minute buckets (time-ordered) folded into 15-minute buckets.
pub fn to_quarters(minutes: Vec<(Millis, Bucket)>) -> Vec<(Millis, Bucket)> {
    let mut out: Vec<(Millis, Bucket)> = Vec::new();
    for (t, b) in minutes {
        let q = t - t.rem_euclid(QUARTER);
        match out.last_mut() {
            Some((lt, lb)) if *lt == q => lb.merge(&b),
            _ => out.push((q, b)),
        }
    }
    out
}

/// Two time-ordered bucket lists as one; buckets of the same time are merged.
pub fn merge_sorted(a: Vec<(Millis, Bucket)>, b: Vec<(Millis, Bucket)>) -> Vec<(Millis, Bucket)> {
    let mut out: Vec<(Millis, Bucket)> = Vec::with_capacity(a.len() + b.len());
    let (mut a, mut b) = (a.into_iter().peekable(), b.into_iter().peekable());
    loop {
        let next = match (a.peek(), b.peek()) {
            (Some(x), Some(y)) if x.0 <= y.0 => a.next(),
            (Some(_), Some(_)) => b.next(),
            (Some(_), None) => a.next(),
            (None, Some(_)) => b.next(),
            (None, None) => break,
        };
        let Some((t, bk)) = next else { break };
        match out.last_mut() {
            Some((lt, lb)) if *lt == t => lb.merge(&bk),
            _ => out.push((t, bk)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(v: f32) -> Bucket {
        Bucket {
            min: v,
            max: v,
            mean: v,
            count: 1,
        }
    }

    fn open() -> (tempfile::TempDir, History) {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = sled::Config::new().path(dir.path()).open().expect("sled");
        let h = History::open(&db, Default::default(), Default::default()).expect("open");
        (dir, h)
    }

    #[test]
    fn a_minute_closes_when_a_later_minute_starts_and_parts_merge_exactly() {
        let mut acc = MinuteAcc::default();
        assert_eq!(acc.push(60_000, 1.0), None);
        assert_eq!(acc.push(60_500, 3.0), None);
        assert_eq!(
            acc.push(59_000, 100.0),
            None,
            "an earlier minute is left out"
        );
        let (start, closed) = acc.push(120_000, 5.0).expect("closed");
        assert_eq!(start, 60_000);
        assert_eq!(
            (closed.min, closed.max, closed.mean, closed.count),
            (1.0, 3.0, 2.0, 2)
        );
        let mut first = acc.take().expect("open part").1;
        acc.push(120_001, 7.0);
        acc.push(120_002, 9.0);
        first.merge(&acc.take().expect("second part").1);
        assert_eq!(
            (first.min, first.max, first.mean, first.count),
            (5.0, 9.0, 7.0, 3)
        );
    }

    #[test]
    fn minutes_are_saved_merged_and_read_back_in_order() {
        let (_d, h) = open();
        let t0 = 1_700_000_000_000 - 1_700_000_000_000 % HOUR;
        let s = |minutes: Vec<(Millis, Bucket)>| SeriesBuckets {
            device: "d".into(),
            metric: "m".into(),
            minutes,
        };
        h.save(&[s(vec![
            (t0, b(1.0)),
            (t0 + MINUTE, b(2.0)),
            (t0 + HOUR, b(3.0)),
        ])])
        .expect("save");
        h.save(&[s(vec![(t0 + MINUTE, b(4.0))])])
            .expect("save again");
        // Another series with a name that would alias under a separator-based key.
        h.save(&[SeriesBuckets {
            device: "d\0m".into(),
            metric: String::new(),
            minutes: vec![(t0, b(99.0))],
        }])
        .expect("save other");
        let got = h
            .query("d", "m", Resolution::Minute, t0, t0 + 2 * HOUR)
            .expect("query");
        let means: Vec<(Millis, f32, u32)> =
            got.iter().map(|(t, b)| (*t, b.mean, b.count)).collect();
        assert_eq!(
            means,
            [(t0, 1.0, 1), (t0 + MINUTE, 3.0, 2), (t0 + HOUR, 3.0, 1)]
        );
        let part = h
            .query("d", "m", Resolution::Minute, t0 + MINUTE, t0 + HOUR)
            .expect("query part");
        assert_eq!(part.len(), 1);
    }

    #[test]
    fn old_days_compact_to_quarters_and_expire() {
        let (_d, h) = open();
        let day0 = 1_700_000_000_000 - 1_700_000_000_000 % DAY;
        let minutes: Vec<(Millis, Bucket)> =
            (0..30).map(|i| (day0 + i * MINUTE, b(i as f32))).collect();
        h.save(&[SeriesBuckets {
            device: "d".into(),
            metric: "m".into(),
            minutes,
        }])
        .expect("save");
        // Quarter reads fold in minutes not compacted yet.
        let before = h
            .query("d", "m", Resolution::Quarter, day0, day0 + DAY)
            .expect("quarters before");
        let now = day0 + 3 * DAY + HOUR;
        let (compacted, deleted) = h.compact(now, 2 * DAY, 30 * DAY).expect("compact");
        assert_eq!((compacted, deleted), (1, 0));
        assert!(h
            .query("d", "m", Resolution::Minute, day0, day0 + DAY)
            .expect("minutes")
            .is_empty());
        let after = h
            .query("d", "m", Resolution::Quarter, day0, day0 + DAY)
            .expect("quarters after");
        assert_eq!(before, after);
        let q: Vec<(Millis, f32, u32)> = after.iter().map(|(t, b)| (*t, b.mean, b.count)).collect();
        assert_eq!(q, [(day0, 7.0, 15), (day0 + QUARTER, 22.0, 15)]);
        // Once a day only: a second pass the same day does nothing...
        assert_eq!(
            h.compact(now + HOUR, 2 * DAY, 30 * DAY).expect("again"),
            (0, 0)
        );
        // ...unless a late minute of a compacted day came in.
        h.save(&[SeriesBuckets {
            device: "d".into(),
            metric: "m".into(),
            minutes: vec![(day0 + 20 * MINUTE, b(100.0))],
        }])
        .expect("late save");
        assert_eq!(
            h.compact(now + HOUR, 2 * DAY, 30 * DAY).expect("late"),
            (1, 0)
        );
        let late = h
            .query("d", "m", Resolution::Quarter, day0, day0 + DAY)
            .expect("quarters late");
        assert_eq!(late[1].1.count, 16);
        // After 30 days the day record goes.
        let (_, deleted) = h
            .compact(day0 + 32 * DAY, 2 * DAY, 30 * DAY)
            .expect("expire");
        assert_eq!(deleted, 1);
        assert!(h
            .query("d", "m", Resolution::Quarter, day0, day0 + DAY)
            .expect("gone")
            .is_empty());
    }

    fn io(field: &str) -> u64 {
        std::fs::read_to_string("/proc/self/io")
            .ok()
            .and_then(|t| {
                t.lines()
                    .find_map(|l| l.strip_prefix(field)?.trim().parse().ok())
            })
            .unwrap_or(0)
    }

    fn dir_bytes(p: &std::path::Path) -> u64 {
        std::fs::read_dir(p)
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .map(|e| match e.metadata() {
                        Ok(m) if m.is_dir() => dir_bytes(&e.path()),
                        Ok(m) => m.len(),
                        Err(_) => 0,
                    })
                    .sum()
            })
            .unwrap_or(0)
    }

    /// The figures of docs/BENCHMARKS.md ("History in sled"): bytes written per hour at 400
    /// series (6 snapshots an hour, one sled flush each) and disk per metric-month. Run with
    /// `cargo test --lib history_cost -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn history_cost() {
        let series = 400;
        let dir = tempfile::tempdir().expect("tempdir");
        let db = sled::Config::new()
            .path(dir.path())
            .cache_capacity(8 << 20)
            .open()
            .expect("sled");
        let h = History::open(&db, Default::default(), Default::default()).expect("open");
        let t0 = 1_800_000_000_000 - 1_800_000_000_000 % DAY;
        let snapshot = |h: &History, db: &sled::Db, from: Millis, series: usize| {
            let batch: Vec<SeriesBuckets> = (0..series)
                .map(|i| SeriesBuckets {
                    device: format!("dev{:04}", i / 4),
                    metric: ["temp", "humidity", "pressure", "vibration"][i % 4].into(),
                    minutes: (0..10)
                        .map(|m| (from + m * MINUTE, b(20.0 + (m % 7) as f32)))
                        .collect(),
                })
                .collect();
            h.save(&batch).expect("save");
            db.flush().expect("flush");
        };
        // Warm up one hour, then measure the second.
        for k in 0..6 {
            snapshot(&h, &db, t0 + k * 10 * MINUTE, series);
        }
        let (w0, c0) = (io("write_bytes:"), io("wchar:"));
        for k in 6..12 {
            snapshot(&h, &db, t0 + k * 10 * MINUTE, series);
        }
        let (w1, c1) = (io("write_bytes:"), io("wchar:"));
        println!(
            "history writes at {series} series, 10-minute snapshots: wchar {:.2} MB/h, write_bytes {:.2} MB/h",
            (c1 - c0) as f64 / 1e6,
            (w1 - w0) as f64 / 1e6
        );
        // A month of 20 series in a fresh database: 48 h of minutes (up to 72 h before the daily
        // pass) and 28 more days of quarters.
        let series = 20;
        drop(h);
        drop(db);
        let dir = tempfile::tempdir().expect("tempdir");
        let db = sled::Config::new()
            .path(dir.path())
            .cache_capacity(8 << 20)
            .open()
            .expect("sled");
        let h = History::open(&db, Default::default(), Default::default()).expect("open");
        for k in 0..(30 * 24 * 6) {
            snapshot(&h, &db, t0 + k * 10 * MINUTE, series);
            if k % (24 * 6) == 0 {
                h.compact(t0 + k * 10 * MINUTE, 2 * DAY, 30 * DAY)
                    .expect("compact");
            }
        }
        db.flush().expect("flush");
        let held: u64 = h
            .tree
            .iter()
            .filter_map(Result::ok)
            .map(|(k, v)| (k.len() + v.len()) as u64)
            .sum();
        println!(
            "a month: {:.1} KB of records per metric, {:.1} KB on disk per metric (sled files)",
            held as f64 / series as f64 / 1e3,
            dir_bytes(dir.path()) as f64 / series as f64 / 1e3
        );
    }
}
