//! The durable upstream outbox: two sled trees (alerts, summaries) keyed by a per-node `seq`,
//! with a disk budget that drops summaries first and alerts only past a hard cap, recording gaps.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use super::record::{self, DamageLog, Damaged};
use super::StoreError;
use crate::model::Millis;

use crate::protocol::GAP_PREFIX;
pub use crate::protocol::{Gap, Lane};

/// Limits of the outbox (from `[upstream.budget]`).
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    pub max_bytes: u64,
    pub max_age_ms: i64,
    pub alert_max_bytes: u64,
}

/// One queued message: its `seq` and the exact JSON text to send.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub seq: u64,
    pub lane: Lane,
    pub json: Vec<u8>,
}

/// Cheap to clone; every clone works on the same trees. Appends come from the store actor only
/// (one writer, so `seq` is dense); the upstream sender reads and acknowledges.
#[derive(Clone)]
pub struct Outbox {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("last_seq", &self.last_seq())
            .field("alerts", &self.len(Lane::Alert))
            .field("summaries", &self.len(Lane::Summary))
            .finish()
    }
}

struct Inner {
    trees: [sled::Tree; 2],
    meta: sled::Tree,
    next_seq: AtomicU64,
    /// The seq last written to the meta tree (`persist_seq`, before each store flush).
    written_seq: AtomicU64,
    bytes: [AtomicU64; 2],
    counts: [AtomicU64; 2],
    dropped: AtomicU64,
    writes: Arc<super::stats::Writes>,
    /// Damaged records found (and removed) at open: their gap notices, queued by `enforce`, and
    /// the count and first reason for the store's damage report.
    lost: std::sync::Mutex<(Vec<Gap>, u64, Option<Damaged>)>,
}

/// Key prefix of records kept beside the queue in the meta tree.
const KEEP: &[u8] = b"keep/";

/// Value layout: sealed (`record::seal`) created_at (i64 BE, 8 bytes) + JSON.
const HEADER: usize = 8;

fn key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

fn seq_of(k: &[u8]) -> u64 {
    k.try_into().map_or(0, u64::from_be_bytes)
}

fn created_of(v: &[u8]) -> Millis {
    v.get(..HEADER)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map_or(0, i64::from_be_bytes)
}

impl Lane {
    fn idx(self) -> usize {
        match self {
            Lane::Alert => 0,
            Lane::Summary => 1,
        }
    }
}

impl Outbox {
    /// Opens the outbox called `name` (its own trees and seq); `""` is the upstream's.
    pub(super) fn open(
        db: &sled::Db,
        name: &str,
        writes: Arc<super::stats::Writes>,
    ) -> Result<Self, StoreError> {
        let tree = |t: &str| match name {
            "" => format!("outbox_{t}"),
            n => format!("outbox_{n}_{t}"),
        };
        let trees = [
            db.open_tree(tree("alerts"))?,
            db.open_tree(tree("summaries"))?,
        ];
        let meta = db.open_tree(tree("meta"))?;
        let mut last = meta.get("last_seq")?.map_or(0, |v| seq_of(&v));
        let mut bytes = [0u64; 2];
        let mut counts = [0u64; 2];
        let mut lost = (Vec::new(), 0, None);
        for (i, t) in trees.iter().enumerate() {
            let lane = [Lane::Alert, Lane::Summary][i];
            for kv in t.iter() {
                let (k, v) = kv?;
                last = last.max(seq_of(&k));
                if let Err(e) = record::open(&k, &v) {
                    t.remove(&k)?;
                    note_lost(&mut lost, lane, seq_of(&k), e);
                    continue;
                }
                bytes[i] += (k.len() + record::plain_len(&v)) as u64;
                counts[i] += 1;
            }
        }
        Ok(Outbox {
            inner: Arc::new(Inner {
                trees,
                meta,
                next_seq: AtomicU64::new(last + 1),
                written_seq: AtomicU64::new(last),
                bytes: bytes.map(AtomicU64::new),
                counts: counts.map(AtomicU64::new),
                dropped: AtomicU64::new(0),
                writes,
                lost: std::sync::Mutex::new(lost),
            }),
        })
    }

    /// Queues one message; `build` gets its `seq` and returns the JSON to send. Durable after the
    /// store's next flush.
    pub fn append(
        &self,
        lane: Lane,
        now: Millis,
        build: impl FnOnce(u64) -> Vec<u8>,
    ) -> Result<u64, StoreError> {
        let i = &self.inner;
        let seq = i.next_seq.fetch_add(1, Relaxed);
        let json = build(seq);
        let mut body = Vec::with_capacity(HEADER + json.len());
        body.extend_from_slice(&now.to_be_bytes());
        body.extend_from_slice(&json);
        let v = record::seal(&key(seq), &body);
        // Budgets count the message as it is, not as it compresses.
        let len = (record::plain_len(&v) + 8) as u64;
        let stored = v.len() + 8;
        i.trees[lane.idx()].insert(key(seq), v)?;
        i.writes.outbox(stored);
        i.bytes[lane.idx()].fetch_add(len, Relaxed);
        i.counts[lane.idx()].fetch_add(1, Relaxed);
        Ok(seq)
    }

    /// Up to `limit` messages of `lane` with `after < seq <= upto`, in seq order.
    pub fn pending(
        &self,
        lane: Lane,
        after: u64,
        upto: u64,
        limit: usize,
    ) -> Result<Vec<Item>, StoreError> {
        let mut out = Vec::new();
        if after >= upto {
            return Ok(out);
        }
        for kv in self.inner.trees[lane.idx()].range(key(after + 1)..=key(upto)) {
            let (k, v) = kv?;
            // Checked at open; a record damaged since is not sent as garbage.
            let Ok(body) = record::open(&k, &v) else {
                continue;
            };
            out.push(Item {
                seq: seq_of(&k),
                lane,
                json: body.get(HEADER..).unwrap_or_default().to_vec(),
            });
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// Writes the highest seq issued, if it grew, so that it survives even when every message
    /// is acknowledged. Once per store flush, before it (the message records become durable in
    /// the same flush), instead of once per message: one sled update instead of many.
    pub(super) fn persist_seq(&self) -> Result<(), StoreError> {
        let last = self.last_seq();
        if self.inner.written_seq.load(Relaxed) < last {
            self.inner.meta.insert("last_seq", &key(last))?;
            self.inner.written_seq.fetch_max(last, Relaxed);
        }
        Ok(())
    }

    /// Removes a delivered message. Returns whether it was still queued.
    pub fn ack(&self, seq: u64) -> Result<bool, StoreError> {
        for lane in [Lane::Alert, Lane::Summary] {
            if let Some(v) = self.inner.trees[lane.idx()].remove(key(seq))? {
                self.account_removed(lane, record::plain_len(&v));
                self.inner.writes.removed(1);
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn account_removed(&self, lane: Lane, value_len: usize) {
        let i = &self.inner;
        let _ = i.bytes[lane.idx()].fetch_update(Relaxed, Relaxed, |b| {
            Some(b.saturating_sub((value_len + 8) as u64))
        });
        let _ = i.counts[lane.idx()].fetch_update(Relaxed, Relaxed, |c| Some(c.saturating_sub(1)));
    }

    /// The oldest message not yet acknowledged (any lane).
    pub fn first_unacked(&self) -> Result<Option<u64>, StoreError> {
        let mut first: Option<u64> = None;
        for t in &self.inner.trees {
            if let Some((k, _)) = t.first()? {
                let s = seq_of(&k);
                first = Some(first.map_or(s, |f| f.min(s)));
            }
        }
        Ok(first)
    }

    /// The last seq issued so far.
    /// Keeps a small record beside the queue (e.g. the alerts an Alertmanager sink must re-send
    /// while they fire), sealed like the queued messages; durable after the store's next flush.
    pub fn keep(&self, name: &str, value: &[u8]) -> Result<(), StoreError> {
        let k = [KEEP, name.as_bytes()].concat();
        let v = record::seal(&k, value);
        self.inner.meta.insert(k, v)?;
        Ok(())
    }

    /// Drops a record kept by [`Outbox::keep`].
    pub fn forget(&self, name: &str) -> Result<(), StoreError> {
        self.inner.meta.remove([KEEP, name.as_bytes()].concat())?;
        Ok(())
    }

    /// Every kept record, by name; a damaged one is removed and skipped.
    pub fn kept(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let mut out = Vec::new();
        for kv in self.inner.meta.scan_prefix(KEEP) {
            let (k, v) = kv?;
            match record::open(&k, &v) {
                Ok(p) => out.push((
                    String::from_utf8_lossy(&k[KEEP.len()..]).into_owned(),
                    p.to_vec(),
                )),
                Err(_) => {
                    self.inner.meta.remove(&k)?;
                }
            }
        }
        Ok(out)
    }

    pub fn last_seq(&self) -> u64 {
        self.inner.next_seq.load(Relaxed).saturating_sub(1)
    }

    pub fn len(&self, lane: Lane) -> u64 {
        self.inner.counts[lane.idx()].load(Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len(Lane::Alert) == 0 && self.len(Lane::Summary) == 0
    }

    /// Approximate bytes queued in a lane (keys and values).
    pub fn bytes(&self, lane: Lane) -> u64 {
        self.inner.bytes[lane.idx()].load(Relaxed)
    }

    /// Messages dropped by the budget since start.
    pub fn dropped(&self) -> u64 {
        self.inner.dropped.load(Relaxed)
    }

    /// Applies the budget: summaries older than `max_age`, then the oldest summaries while the
    /// total exceeds `max_bytes`, then the oldest alerts while alerts exceed `alert_max_bytes`.
    /// Each pass frees 10% below the limit so that it runs rarely. Returns what was dropped.
    pub fn enforce(&self, b: &Budget, now: Millis) -> Result<Vec<Gap>, StoreError> {
        let mut gaps = std::mem::take(&mut self.lost().0);
        let cutoff = now.saturating_sub(b.max_age_ms);
        if let Some(g) =
            self.drop_oldest(Lane::Summary, "max_age", |_, created| created < cutoff)?
        {
            gaps.push(g);
        }
        let total = || self.bytes(Lane::Alert) + self.bytes(Lane::Summary);
        if total() > b.max_bytes {
            let target = b.max_bytes - b.max_bytes / 10;
            if let Some(g) = self.drop_oldest(Lane::Summary, "max_bytes", |this, _| {
                total_of(this) > target
            })? {
                gaps.push(g);
            }
        }
        if self.bytes(Lane::Alert) > b.alert_max_bytes {
            let target = b.alert_max_bytes - b.alert_max_bytes / 10;
            if let Some(g) = self.drop_oldest(Lane::Alert, "alert_max_bytes", |this, _| {
                this.bytes(Lane::Alert) > target
            })? {
                gaps.push(g);
            }
        }
        Ok(gaps)
    }

    /// Drops the oldest messages of `lane` while `more(outbox, created_at)` holds. Gap notices
    /// are never dropped: losing the record of a loss would make it silent.
    fn drop_oldest(
        &self,
        lane: Lane,
        reason: &'static str,
        more: impl Fn(&Outbox, Millis) -> bool,
    ) -> Result<Option<Gap>, StoreError> {
        let mut gap: Option<Gap> = None;
        let tree = &self.inner.trees[lane.idx()];
        for kv in tree.iter() {
            let (k, v) = kv?;
            let body = record::open(&k, &v).unwrap_or_default();
            if !more(self, created_of(&body)) {
                break;
            }
            if body
                .get(HEADER..)
                .is_some_and(|j| j.starts_with(GAP_PREFIX))
            {
                continue;
            }
            // Only what this pass really removed counts (an ack may have taken it meanwhile).
            if tree.remove(&k)?.is_none() {
                continue;
            }
            self.account_removed(lane, record::plain_len(&v));
            self.inner.writes.removed(1);
            self.inner.dropped.fetch_add(1, Relaxed);
            let seq = seq_of(&k);
            match &mut gap {
                Some(g) => {
                    g.to = seq;
                    g.count += 1;
                }
                None => {
                    gap = Some(Gap {
                        lane,
                        from: seq,
                        to: seq,
                        count: 1,
                        reason,
                    })
                }
            }
        }
        Ok(gap)
    }
}

impl Outbox {
    fn lost(&self) -> std::sync::MutexGuard<'_, (Vec<Gap>, u64, Option<Damaged>)> {
        self.inner.lost.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Issues seqs after `seq` from now on (seqs the store knows were issued but lost).
    pub(super) fn skip_to(&self, seq: u64) {
        self.inner.next_seq.fetch_max(seq + 1, Relaxed);
    }

    /// Adds the damaged records found at open to the store's damage report (as `tree`).
    pub(super) fn report_damage(&self, tree: &str, log: &DamageLog) {
        let l = self.lost();
        if let Some(why) = &l.2 {
            log.record(tree, l.1, why);
        }
    }
}

/// Counts a damaged record of `lane` and extends (or starts) that lane's `damaged` gap.
fn note_lost(lost: &mut (Vec<Gap>, u64, Option<Damaged>), lane: Lane, seq: u64, why: Damaged) {
    lost.1 += 1;
    lost.2.get_or_insert(why);
    match lost.0.iter_mut().find(|g| g.lane == lane) {
        Some(g) => {
            g.from = g.from.min(seq);
            g.to = g.to.max(seq);
            g.count += 1;
        }
        None => lost.0.push(Gap {
            lane,
            from: seq,
            to: seq,
            count: 1,
            reason: "damaged",
        }),
    }
}

fn total_of(o: &Outbox) -> u64 {
    o.bytes(Lane::Alert) + o.bytes(Lane::Summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &std::path::Path) -> (sled::Db, Outbox) {
        let db = sled::Config::new().path(dir).open().expect("open");
        let o = Outbox::open(&db, "", Default::default()).expect("outbox");
        (db, o)
    }

    fn msg(seq: u64, pad: usize) -> Vec<u8> {
        format!("{{\"seq\":{seq},\"pad\":\"{}\"}}", "x".repeat(pad)).into_bytes()
    }

    #[test]
    fn seq_is_dense_ordered_and_survives_reopen_after_full_ack() {
        let dir = tempfile::tempdir().expect("tmp");
        {
            let (db, o) = open(dir.path());
            let a = o.append(Lane::Alert, 0, |s| msg(s, 0)).expect("a");
            let b = o.append(Lane::Summary, 0, |s| msg(s, 0)).expect("b");
            let c = o.append(Lane::Alert, 0, |s| msg(s, 0)).expect("c");
            assert_eq!((a, b, c), (1, 2, 3));
            assert_eq!(o.first_unacked().expect("f"), Some(1));
            let alerts = o.pending(Lane::Alert, 0, 3, 10).expect("p");
            assert_eq!(alerts.iter().map(|i| i.seq).collect::<Vec<_>>(), [1, 3]);
            assert_eq!(alerts[1].json, msg(3, 0));
            assert_eq!(
                o.pending(Lane::Alert, 1, 2, 10).expect("p"),
                vec![],
                "upto bounds the read"
            );
            for s in [1, 2, 3] {
                assert!(o.ack(s).expect("ack"));
            }
            assert!(!o.ack(2).expect("ack twice"));
            assert!(o.is_empty());
            assert_eq!((o.bytes(Lane::Alert), o.bytes(Lane::Summary)), (0, 0));
            o.persist_seq().expect("seq"); // as `Store::flush` does
            db.flush().expect("flush");
        }
        let (_db, o) = open(dir.path());
        assert_eq!(
            o.append(Lane::Alert, 0, |s| msg(s, 0)).expect("d"),
            4,
            "no seq is reused"
        );
    }

    #[test]
    fn named_outboxes_are_independent_and_keep_the_upstream_trees() {
        let dir = tempfile::tempdir().expect("tmp");
        let db = sled::Config::new().path(dir.path()).open().expect("open");
        let up = Outbox::open(&db, "", Default::default()).expect("upstream");
        let mq = Outbox::open(&db, "mqtt", Default::default()).expect("mqtt");
        up.append(Lane::Alert, 0, |s| msg(s, 0)).expect("a");
        up.append(Lane::Alert, 0, |s| msg(s, 0)).expect("a");
        assert_eq!(mq.append(Lane::Alert, 0, |s| msg(s, 0)).expect("m"), 1);
        assert_eq!((up.len(Lane::Alert), mq.len(Lane::Alert)), (2, 1));
        assert!(mq.ack(1).expect("ack"));
        assert_eq!(up.len(Lane::Alert), 2, "acks stay in their own outbox");
        let names: Vec<String> = db
            .tree_names()
            .iter()
            .map(|n| String::from_utf8_lossy(n).into_owned())
            .collect();
        for n in [
            "outbox_alerts",
            "outbox_meta",
            "outbox_mqtt_alerts",
            "outbox_mqtt_meta",
        ] {
            assert!(names.iter().any(|x| x == n), "{n} in {names:?}");
        }
    }

    #[test]
    fn budget_drops_summaries_first_then_oldest_alerts_with_gaps() {
        let dir = tempfile::tempdir().expect("tmp");
        let (_db, o) = open(dir.path());
        for t in 0..10 {
            o.append(Lane::Alert, t, |s| msg(s, 100)).expect("alert");
            o.append(Lane::Summary, t, |s| msg(s, 900))
                .expect("summary");
        }
        let one_alert = o.bytes(Lane::Alert) / 10;
        // Room for everything but about half the summaries.
        let b = Budget {
            max_bytes: o.bytes(Lane::Alert) + o.bytes(Lane::Summary) / 2,
            max_age_ms: 1_000_000,
            alert_max_bytes: 1 << 30,
        };
        let gaps = o.enforce(&b, 10).expect("enforce");
        assert_eq!(gaps.len(), 1);
        let g = &gaps[0];
        assert_eq!((g.lane, g.from, g.reason), (Lane::Summary, 2, "max_bytes"));
        assert_eq!(o.len(Lane::Alert), 10, "alerts are kept");
        assert_eq!(o.len(Lane::Summary), 10 - g.count);
        assert!(o.bytes(Lane::Alert) + o.bytes(Lane::Summary) <= b.max_bytes);
        // Now the alert cap: keep about 4 alerts.
        let b = Budget {
            alert_max_bytes: one_alert * 4 + one_alert / 2,
            ..b
        };
        let gaps = o.enforce(&b, 10).expect("enforce");
        let ga = gaps
            .iter()
            .find(|g| g.lane == Lane::Alert)
            .expect("alert gap");
        assert_eq!((ga.from, ga.reason), (1, "alert_max_bytes"));
        let left: Vec<u64> = o
            .pending(Lane::Alert, 0, u64::MAX, 100)
            .expect("p")
            .iter()
            .map(|i| i.seq)
            .collect();
        assert_eq!(
            left.first().copied(),
            Some(ga.to + 2),
            "oldest alerts went first: {left:?}"
        );
        assert_eq!(ga.count as usize + left.len(), 10);
    }

    #[test]
    fn gap_notices_are_recognised_and_never_dropped() {
        let g = Gap {
            lane: Lane::Alert,
            from: 1,
            to: 2,
            count: 2,
            reason: "alert_max_bytes",
        };
        assert!(crate::protocol::gap_json("n", 9, &g)
            .as_bytes()
            .starts_with(GAP_PREFIX));
        let dir = tempfile::tempdir().expect("tmp");
        let (_db, o) = open(dir.path());
        o.append(Lane::Alert, 0, |s| {
            crate::protocol::gap_json("n", s, &g).into_bytes()
        })
        .expect("gap");
        o.append(Lane::Alert, 0, |s| msg(s, 0)).expect("alert");
        let b = Budget {
            max_bytes: 1 << 30,
            max_age_ms: 1 << 40,
            alert_max_bytes: 0,
        };
        let gaps = o.enforce(&b, 0).expect("enforce");
        assert_eq!(gaps.len(), 1);
        assert_eq!((gaps[0].from, gaps[0].count), (2, 1), "only the alert went");
        assert_eq!(o.len(Lane::Alert), 1, "the gap notice stays");
    }

    #[test]
    fn old_summaries_expire() {
        let dir = tempfile::tempdir().expect("tmp");
        let (_db, o) = open(dir.path());
        o.append(Lane::Summary, 1_000, |s| msg(s, 0)).expect("s");
        o.append(Lane::Summary, 5_000, |s| msg(s, 0)).expect("s");
        o.append(Lane::Alert, 1_000, |s| msg(s, 0)).expect("a");
        let b = Budget {
            max_bytes: 1 << 30,
            max_age_ms: 2_000,
            alert_max_bytes: 1 << 30,
        };
        let gaps = o.enforce(&b, 6_000).expect("enforce");
        assert_eq!(
            gaps,
            vec![Gap {
                lane: Lane::Summary,
                from: 1,
                to: 1,
                count: 1,
                reason: "max_age"
            }]
        );
        assert_eq!(o.len(Lane::Summary), 1);
        assert_eq!(o.len(Lane::Alert), 1, "age does not drop alerts");
    }
}
