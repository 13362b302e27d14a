//! Raw samples for the InfluxDB sink (`samples = "all" | "<interval>"`): the shard collects them in
//! an owned block (or per-series interval statistics) and hands whole blocks to the store's outbox.
//!
//! Per sample this costs one push into a reused `Vec` (or a few float operations for an
//! interval): no allocation, lock or disk write. A series' names enter a block once per block.

use serde::{Deserialize, Serialize};

use crate::model::Millis;

/// A block is handed to the store when it holds this many rows (else at the shard's 1 s tick).
pub const BLOCK_ROWS: usize = 1000;

/// Marks an outbox message that is a sample block (postcard after it), not protocol JSON.
pub const MAGIC: &[u8] = b"\0ewsb1";

/// One raw sample of the block's series `series`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Raw {
    pub series: u32,
    pub ts: Millis,
    pub value: f64,
}

/// Statistics of one series over one closed interval starting at `start`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Stat {
    pub series: u32,
    pub start: Millis,
    pub min: f64,
    pub max: f64,
    pub sum: f64,
    pub last: f64,
    pub count: u32,
}

/// What a shard hands to the store in one message: names once, then rows referring to them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Block {
    /// 0 for raw samples, else the interval of `stats`.
    pub interval_ms: i64,
    /// (device, metric) per series index.
    pub series: Vec<(String, String)>,
    pub raw: Vec<Raw>,
    pub stats: Vec<Stat>,
}

impl Block {
    pub fn rows(&self) -> usize {
        self.raw.len() + self.stats.len()
    }

    /// The outbox form: [`MAGIC`] then postcard.
    pub fn encode(&self) -> Vec<u8> {
        let out = MAGIC.to_vec();
        match postcard::to_extend(self, out) {
            Ok(v) => v,
            Err(_) => MAGIC.to_vec(), // unreachable for plain data; an empty block is harmless
        }
    }

    /// `None` when `bytes` is not a sample block (or a damaged one).
    pub fn decode(bytes: &[u8]) -> Option<Block> {
        postcard::from_bytes(bytes.strip_prefix(MAGIC)?).ok()
    }
}

/// Per series: where it sits in the current block, and its open interval.
#[derive(Debug, Clone, Copy, Default)]
pub struct SeriesTap {
    /// The block generation `slot` belongs to.
    gen: u32,
    slot: u32,
    open: Option<Open>,
}

#[derive(Debug, Clone, Copy)]
struct Open {
    start: Millis,
    /// Appliance time the interval got its first sample (it closes one interval after that).
    opened_at: Millis,
    min: f64,
    max: f64,
    sum: f64,
    last: f64,
    count: u32,
}

/// A shard's collector. `interval_ms == 0`: every sample; else per-interval statistics.
#[derive(Debug)]
pub struct Tap {
    interval_ms: i64,
    gen: u32,
    block: Block,
}

impl Tap {
    /// `mode`: `SampleMode::interval_ms` of the sinks; `None` collects nothing.
    pub fn new(mode: Option<i64>) -> Option<Tap> {
        let interval_ms = mode?;
        Some(Tap {
            interval_ms,
            gen: 1,
            block: Block {
                interval_ms,
                ..Block::default()
            },
        })
    }

    fn slot(&mut self, st: &mut SeriesTap, device: &str, metric: &str) -> u32 {
        if st.gen != self.gen {
            st.gen = self.gen;
            st.slot = self.block.series.len() as u32;
            self.block.series.push((device.into(), metric.into()));
        }
        st.slot
    }

    /// One accepted sample of a series.
    pub fn push(
        &mut self,
        st: &mut SeriesTap,
        device: &str,
        metric: &str,
        ts: Millis,
        value: f64,
        now: Millis,
    ) {
        if self.interval_ms == 0 {
            let series = self.slot(st, device, metric);
            self.block.raw.push(Raw { series, ts, value });
            return;
        }
        let start = ts - ts.rem_euclid(self.interval_ms);
        if let Some(o) = &st.open {
            // A sample of a later interval closes the open one; a late one joins the open one.
            if start > o.start {
                self.close(st, device, metric);
            }
        }
        match &mut st.open {
            Some(o) => {
                o.min = o.min.min(value);
                o.max = o.max.max(value);
                o.sum += value;
                o.last = value;
                o.count = o.count.saturating_add(1);
            }
            None => {
                st.open = Some(Open {
                    start,
                    opened_at: now,
                    min: value,
                    max: value,
                    sum: value,
                    last: value,
                    count: 1,
                })
            }
        }
    }

    /// Closes the series' interval if it has been open for an interval of appliance time plus a
    /// second (so a series that stopped sending still gets its last point).
    pub fn tick(&mut self, st: &mut SeriesTap, device: &str, metric: &str, now: Millis) {
        if st
            .open
            .is_some_and(|o| now >= o.opened_at + self.interval_ms + 1000)
        {
            self.close(st, device, metric);
        }
    }

    /// Closes the series' open interval now (shutdown, expiry).
    pub fn close(&mut self, st: &mut SeriesTap, device: &str, metric: &str) {
        if let Some(o) = st.open.take() {
            let series = self.slot(st, device, metric);
            self.block.stats.push(Stat {
                series,
                start: o.start,
                min: o.min,
                max: o.max,
                sum: o.sum,
                last: o.last,
                count: o.count,
            });
        }
    }

    pub fn rows(&self) -> usize {
        self.block.rows()
    }

    /// The block so far (if it has rows); the next one starts empty with room for as many.
    pub fn take(&mut self) -> Option<Block> {
        if self.block.rows() == 0 {
            return None;
        }
        self.gen = self.gen.wrapping_add(1).max(1);
        let next = Block {
            interval_ms: self.interval_ms,
            series: Vec::with_capacity(self.block.series.len()),
            raw: Vec::with_capacity(self.block.raw.len()),
            stats: Vec::with_capacity(self.block.stats.len()),
        };
        Some(std::mem::replace(&mut self.block, next))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_mode_names_each_series_once_per_block_and_round_trips() {
        let mut t = Tap::new(Some(0)).expect("tap");
        let (mut a, mut b) = (SeriesTap::default(), SeriesTap::default());
        t.push(&mut a, "d1", "x", 1, 1.0, 10);
        t.push(&mut b, "d2", "y", 2, 2.0, 10);
        t.push(&mut a, "d1", "x", 3, 3.0, 10);
        let blk = t.take().expect("rows");
        assert_eq!(
            blk.series,
            vec![("d1".into(), "x".into()), ("d2".into(), "y".into())]
        );
        assert_eq!(
            blk.raw.iter().map(|r| r.series).collect::<Vec<_>>(),
            [0, 1, 0]
        );
        assert_eq!(Block::decode(&blk.encode()), Some(blk));
        assert!(t.take().is_none());
        // The next block names the series again.
        t.push(&mut b, "d2", "y", 4, 4.0, 10);
        let blk = t.take().expect("rows");
        assert_eq!(blk.series, vec![("d2".into(), "y".into())]);
        assert_eq!(blk.raw[0].series, 0);
        assert_eq!(Block::decode(b"{\"type\":\"alert\"}"), None);
    }

    #[test]
    fn intervals_close_on_a_later_sample_or_after_an_interval_of_silence() {
        let mut t = Tap::new(Some(10_000)).expect("tap");
        let mut s = SeriesTap::default();
        for (ts, v) in [(10_000, 1.0), (12_000, 5.0), (19_999, 3.0)] {
            t.push(&mut s, "d", "m", ts, v, ts);
        }
        assert_eq!(t.rows(), 0, "still open");
        t.push(&mut s, "d", "m", 8_000, 2.0, 20_000); // late: joins the open interval
        t.push(&mut s, "d", "m", 20_000, 7.0, 20_000); // closes [10 s, 20 s)
        let blk = t.take().expect("closed");
        assert_eq!(
            blk.stats,
            vec![Stat {
                series: 0,
                start: 10_000,
                min: 1.0,
                max: 5.0,
                sum: 11.0,
                last: 2.0,
                count: 4
            }]
        );
        t.tick(&mut s, "d", "m", 30_999);
        assert_eq!(t.rows(), 0);
        t.tick(&mut s, "d", "m", 31_000);
        assert_eq!(t.take().expect("closed by silence").stats[0].start, 20_000);
    }
}
