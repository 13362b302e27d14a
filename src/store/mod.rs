//! The only owner of the sled database: detector-state snapshots and the alert log (with retention).
//! `Store` is plain and testable; `StoreActor` is the actix shell that runs it on its own thread.

mod actor;
mod durable;
pub mod history;
mod manifest;
pub mod outbox;
pub mod record;
mod recovery;
pub mod stats;

pub use actor::{
    DropSnapshots, LogAlerts, QueryAlerts, QueueSamples, QueueSummary, SaveHistory, SaveSnapshot,
    StoreActor, SummaryFeed, UpstreamQueue,
};
pub use outbox::{Budget, Lane, Outbox};
pub use recovery::{is_disk_full, open_or_recover, Recovery};

use std::path::Path;

use crate::model::{Alert, AlertState, Millis};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("sled: {0}")]
    Sled(#[from] sled::Error),
    #[error("corrupt record in {tree}: {reason}")]
    Corrupt { tree: &'static str, reason: String },
    #[error("{}: {source}", path.display())]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// Filter for alert queries.
#[derive(Debug, Clone, Default)]
pub struct AlertFilter {
    pub state: Option<AlertState>,
    pub device: Option<String>,
    pub limit: usize,
}

pub struct Store {
    db: sled::Db,
    /// sled's log file and directory, fsync'ed by `flush` (sled itself only calls
    /// `sync_file_range`, which neither flushes a drive's cache nor the file's size).
    sync: durable::Syncer,
    outbox: Outbox,
    /// Every outbox (upstream and named ones), whose seq each flush writes first.
    outboxes: std::sync::Mutex<Vec<Outbox>>,
    history: history::History,
    state: sled::Tree,
    alerts: sled::Tree,
    alert_keys: sled::Tree,
    damage: std::sync::Arc<record::DamageLog>,
    writes: std::sync::Arc<stats::Writes>,
    dir: std::path::PathBuf,
    /// A snapshot was saved since the manifest was last written.
    checkpoint_due: std::sync::atomic::AtomicBool,
}

const STATE_VERSION: &[u8] = b"state-format-3";
/// sled's default log segment size.
pub const SEGMENT_SIZE: usize = 512 * 1024;

/// The segment size recorded in sled's `conf` file of an existing database.
fn existing_segment_size(dir: &Path) -> Option<usize> {
    let conf = std::fs::read(dir.join("conf")).ok()?;
    String::from_utf8_lossy(&conf)
        .lines()
        .find_map(|l| l.strip_prefix("segment_size: "))
        .and_then(|v| v.trim().parse().ok())
}
/// Marks a database whose values are all sealed (`record::seal`); older ones are sealed once.
const RECORD_FORMAT: &[u8] = b"crc32-1";

impl Store {
    /// Opens (or creates) the database in `dir` with a page cache of `cache_bytes`.
    #[cfg(test)]
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<Self, StoreError> {
        Self::open_sized(dir, cache_bytes, SEGMENT_SIZE)
    }

    /// [`Store::open`] creating a new database with sled log segments of `segment_size` bytes
    /// (a power of two). An existing database keeps the size it was created with (sled refuses
    /// another one, and that must not look like damage).
    pub fn open_sized(
        dir: &Path,
        cache_bytes: u64,
        segment_size: usize,
    ) -> Result<Self, StoreError> {
        let segment_size = existing_segment_size(dir).unwrap_or(segment_size);
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            .segment_size(segment_size)
            // No background flusher: `Store::flush` makes writes durable when the store actor
            // says (every 500 ms while messages are queued, at each snapshot, every minute),
            // and fsyncs them. sled's own flusher added log writes of its own on top (each
            // rewrites at least the log's last page): acknowledgements become durable with the
            // next store flush instead.
            .flush_every_ms(None)
            .open()?;
        // sled never fsyncs its directory or `conf`: a power cut right after the first start
        // would lose the whole database. Make the files and their names durable now.
        let sync = durable::Syncer::new(dir)?;
        sync.files_and_names()?;
        let meta = db.open_tree("meta")?;
        let state = db.open_tree("state")?;
        // A snapshot written by an incompatible build is dropped, never misread.
        let cleared = meta.get("state_version")?.as_deref() != Some(STATE_VERSION);
        if cleared {
            state.clear()?;
            meta.insert("state_version", STATE_VERSION)?;
        }
        let alerts = db.open_tree("alerts")?;
        if meta.get("record_format")?.as_deref() != Some(RECORD_FORMAT) {
            seal_all(&db)?;
            meta.insert("record_format", RECORD_FORMAT)?;
            db.flush()?;
        }
        let damage = std::sync::Arc::new(record::DamageLog::default());
        // Every record is checked once at start: what is damaged is counted, logged and dropped.
        for (name, tree) in [("state", &state), ("alerts", &alerts)] {
            drop_damaged(name, tree, &damage)?;
        }
        let writes = std::sync::Arc::new(stats::Writes::default());
        let outbox = Outbox::open(&db, "", writes.clone())?;
        outbox.report_damage("outbox", &damage);
        // Records sled dropped while recovering a damaged log leave no trace but the manifest.
        if let Some(m) = manifest::Manifest::read(dir) {
            let have = state.len() as u64;
            if have < m.state_records && !cleared {
                let why = record::Damaged::Missing(m.state_records - have);
                damage.record("state", m.state_records - have, &why);
            }
            let last = outbox.last_seq();
            if last < m.outbox_seq {
                let why = record::Damaged::Missing(m.outbox_seq - last);
                damage.record("outbox", m.outbox_seq - last, &why);
                // Never issue those seqs again with other messages.
                outbox.skip_to(m.outbox_seq);
            }
        }
        let history = history::History::open(&db, damage.clone(), writes.clone())?;
        Ok(Store {
            outboxes: std::sync::Mutex::new(vec![outbox.clone()]),
            outbox,
            history,
            alerts,
            alert_keys: db.open_tree("alert_keys")?,
            state,
            db,
            sync,
            damage,
            writes,
            dir: dir.to_path_buf(),
            checkpoint_due: std::sync::atomic::AtomicBool::new(true),
        })
    }

    /// Records that could not be restored since start, per tree.
    pub fn damage(&self) -> std::sync::Arc<record::DamageLog> {
        self.damage.clone()
    }

    /// The downsampled history (shares this database; reads are safe from any thread).
    pub fn history(&self) -> history::History {
        self.history.clone()
    }

    /// What was written since start, per kind (`/api/status` → `store.writes`).
    pub fn writes(&self) -> std::sync::Arc<stats::Writes> {
        self.writes.clone()
    }

    /// The upstream outbox (shares this database).
    pub fn outbox(&self) -> Outbox {
        self.outbox.clone()
    }

    /// The outbox of another consumer (e.g. an MQTT sink), with its own trees and seq.
    pub fn named_outbox(&self, name: &str) -> Result<Outbox, StoreError> {
        let o = Outbox::open(&self.db, name, self.writes.clone())?;
        o.report_damage(&format!("outbox_{name}"), &self.damage);
        self.outboxes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(o.clone());
        Ok(o)
    }

    /// All saved per-device snapshots: device id → encoded state.
    pub fn load_snapshots(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let mut out = Vec::new();
        for kv in self.state.iter() {
            let (k, v) = kv?;
            let key = String::from_utf8(k.to_vec()).map_err(|e| StoreError::Corrupt {
                tree: "state",
                reason: e.to_string(),
            })?;
            match record::open(&k, &v) {
                Ok(p) => out.push((key, p.to_vec())),
                Err(e) => self.damage.record("state", 1, &e),
            }
        }
        Ok(out)
    }

    /// Writes snapshots in one batch. Durable after `flush`.
    pub fn save_snapshots(&self, items: Vec<(String, Vec<u8>)>) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for (k, v) in items {
            let sealed = record::seal(k.as_bytes(), &v);
            self.writes.snapshot(k.len() + sealed.len());
            batch.insert(k.as_bytes(), sealed);
        }
        self.state.apply_batch(batch)?;
        self.checkpoint_due
            .store(true, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// Removes the saved state of evicted devices. Durable after `flush`.
    pub fn drop_snapshots(&self, ids: &[String]) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for k in ids {
            batch.remove(k.as_bytes());
        }
        self.state.apply_batch(batch)?;
        Ok(())
    }

    /// Appends or updates an alert: a resolution overwrites its firing record (same id).
    pub fn log_alert(&self, alert: &Alert) -> Result<(), StoreError> {
        let value = serde_json::to_vec(alert).map_err(|e| StoreError::Corrupt {
            tree: "alerts",
            reason: e.to_string(),
        })?;
        let key = match self.alert_keys.get(alert.id.as_bytes())? {
            Some(k) => k.to_vec(),
            None => {
                let mut k = Vec::with_capacity(16);
                k.extend_from_slice(&alert.raised_at.to_be_bytes());
                k.extend_from_slice(&self.db.generate_id()?.to_be_bytes());
                self.alert_keys.insert(alert.id.as_bytes(), k.as_slice())?;
                k
            }
        };
        let sealed = record::seal(&key, &value);
        self.writes.alert_log(key.len() + sealed.len());
        self.alerts.insert(key, sealed)?;
        Ok(())
    }

    /// Newest first, latest state of each alert.
    pub fn alerts(&self, f: &AlertFilter) -> Result<Vec<Alert>, StoreError> {
        let mut out = Vec::new();
        for kv in self.alerts.iter().rev() {
            let (k, v) = kv?;
            let Ok(v) = record::open(&k, &v) else {
                continue; // counted at start; damage written since is caught there next time
            };
            let a: Alert = match serde_json::from_slice(&v) {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "skipping unreadable alert log record");
                    continue;
                }
            };
            if f.state.is_some_and(|s| s != a.state) {
                continue;
            }
            if f.device.as_deref().is_some_and(|d| d != a.device) {
                continue;
            }
            out.push(a);
            if out.len() >= f.limit {
                break;
            }
        }
        Ok(out)
    }

    #[cfg(test)]
    pub fn alert_count(&self) -> usize {
        self.alerts.len()
    }

    /// Applies retention: drops alerts raised before `now - max_age`, then the oldest beyond `max`.
    /// Returns how many were removed.
    pub fn prune_alerts(
        &self,
        now: Millis,
        max_age_ms: i64,
        max: usize,
    ) -> Result<usize, StoreError> {
        let cutoff = now.saturating_sub(max_age_ms);
        let mut removed = 0;
        let excess = self.alerts.len().saturating_sub(max);
        for kv in self.alerts.iter() {
            let (k, v) = kv?;
            let raised = k
                .get(..8)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map_or(i64::MIN, i64::from_be_bytes);
            if raised >= cutoff && removed >= excess {
                break;
            }
            self.alerts.remove(&k)?;
            let body = record::open(&k, &v).unwrap_or_default();
            if let Ok(a) = serde_json::from_slice::<Alert>(&body) {
                self.alert_keys.remove(a.id.as_bytes())?;
            }
            removed += 1;
        }
        self.writes.removed(removed as u64);
        Ok(removed)
    }

    /// Makes everything written so far durable.
    pub fn flush(&self) -> Result<usize, StoreError> {
        for o in self
            .outboxes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
        {
            o.persist_seq()?;
        }
        let n = self.db.flush()?;
        self.sync.log()?;
        self.writes.flushed();
        if self
            .checkpoint_due
            .swap(false, std::sync::atomic::Ordering::Relaxed)
        {
            let m = manifest::Manifest {
                state_records: self.state.len() as u64,
                outbox_seq: self.outbox.last_seq(),
            };
            m.write(&self.dir)?;
            self.writes.manifest();
        }
        Ok(n)
    }
}

/// Seals every value of a database written before records were sealed (trusted as they are).
fn seal_all(db: &sled::Db) -> Result<(), StoreError> {
    for name in db.tree_names() {
        let n = String::from_utf8_lossy(&name);
        let sealed =
            n == "state" || n == "alerts" || n.starts_with("outbox_") && !n.ends_with("_meta");
        if !sealed {
            continue;
        }
        let tree = db.open_tree(&name)?;
        for kv in tree.iter() {
            let (k, v) = kv?;
            if record::open(&k, &v).is_err() {
                tree.insert(&k, record::seal(&k, &v))?;
            }
        }
    }
    Ok(())
}

/// Removes the records of `tree` that fail their check, counting them in `damage`.
fn drop_damaged(
    name: &str,
    tree: &sled::Tree,
    damage: &record::DamageLog,
) -> Result<(), StoreError> {
    let mut bad = Vec::new();
    let mut why = None;
    for kv in tree.iter() {
        let (k, v) = kv?;
        if let Err(e) = record::open(&k, &v) {
            why.get_or_insert(e);
            bad.push(k);
        }
    }
    for k in &bad {
        tree.remove(k)?;
    }
    if let Some(why) = why {
        damage.record(name, bad.len() as u64, &why);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Severity;

    fn alert(id: &str, raised_at: i64, state: AlertState) -> Alert {
        Alert {
            id: id.into(),
            device: "d".into(),
            metric: "m".into(),
            detector: "zscore".into(),
            severity: Severity::Warning,
            state,
            ts: raised_at,
            value: 1.0,
            score: 7.0,
            anomaly: 0.6,
            raised_at,
            resolved_at: None,
            message: String::new(),
        }
    }

    #[test]
    fn resolution_overwrites_and_retention_prunes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Store::open(dir.path(), 1 << 20).expect("open");
        for i in 0..10 {
            s.log_alert(&alert(&format!("a{i}"), 1000 + i, AlertState::Firing))
                .expect("log");
        }
        s.log_alert(&alert("a3", 1003, AlertState::Resolved))
            .expect("log");
        assert_eq!(s.alert_count(), 10);
        let f = AlertFilter {
            state: Some(AlertState::Resolved),
            device: None,
            limit: 100,
        };
        let got = s.alerts(&f).expect("query");
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].id, "a3");
        let all = s
            .alerts(&AlertFilter {
                limit: 3,
                ..Default::default()
            })
            .expect("query");
        assert_eq!(
            all.iter().map(|a| a.id.as_str()).collect::<Vec<_>>(),
            ["a9", "a8", "a7"]
        );
        // age: drop raised before 1002; count: keep 5
        let removed = s.prune_alerts(1002 + 1000, 1000, 5).expect("prune");
        assert_eq!(removed, 5);
        let left = s
            .alerts(&AlertFilter {
                limit: 100,
                ..Default::default()
            })
            .expect("query");
        assert_eq!(left.last().map(|a| a.id.as_str()), Some("a5"));
        // a pruned alert's key mapping is gone: logging it again creates a new record
        s.log_alert(&alert("a0", 5000, AlertState::Resolved))
            .expect("log");
        assert_eq!(s.alert_count(), 6);
    }

    #[test]
    fn records_missing_since_the_last_checkpoint_and_damaged_ones_are_counted() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let s = Store::open(dir.path(), 1 << 20).expect("open");
            let items = (0..3).map(|i| (format!("dev{i}"), vec![i])).collect();
            s.save_snapshots(items).expect("save");
            s.log_alert(&alert("a1", 1000, AlertState::Firing))
                .expect("log");
            s.flush().expect("flush");
            // As if sled had dropped one snapshot record and damaged an alert record.
            s.state.remove("dev1").expect("remove");
            let (k, _) = s.alerts.first().expect("first").expect("an alert");
            s.alerts.insert(k, &b"\xC1garbage"[..]).expect("damage");
            s.db.flush().expect("flush");
        }
        let s = Store::open(dir.path(), 1 << 20).expect("reopen");
        assert_eq!(
            s.damage().counts(),
            vec![("alerts".to_string(), 1), ("state".to_string(), 1)]
        );
        assert_eq!(s.load_snapshots().expect("load").len(), 2);
        assert_eq!(s.alert_count(), 0, "the damaged record was dropped");
    }

    #[test]
    fn snapshots_survive_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let s = Store::open(dir.path(), 1 << 20).expect("open");
            s.save_snapshots(vec![("dev1".into(), vec![1, 2, 3])])
                .expect("save");
            s.flush().expect("flush");
        }
        let s = Store::open(dir.path(), 1 << 20).expect("reopen");
        assert_eq!(
            s.load_snapshots().expect("load"),
            vec![("dev1".to_string(), vec![1, 2, 3])]
        );
    }
}
