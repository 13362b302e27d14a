//! What the store asked sled to write since start, per kind (snapshots, alert log, outbox), and
//! how often it made it durable: with `/proc/<pid>/io` this splits disk writes into their causes.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde::Serialize;

/// Counters shared by the store, its outboxes and `/api/status` (`store.writes`).
#[derive(Debug, Default)]
pub struct Writes {
    snapshot_records: AtomicU64,
    snapshot_bytes: AtomicU64,
    alert_log_records: AtomicU64,
    alert_log_bytes: AtomicU64,
    outbox_records: AtomicU64,
    outbox_bytes: AtomicU64,
    history_records: AtomicU64,
    history_bytes: AtomicU64,
    removals: AtomicU64,
    flushes: AtomicU64,
    manifests: AtomicU64,
}

/// A copy of [`Writes`] for reports. Bytes are keys plus sealed values as handed to sled (its
/// own framing, page headers and segment rewrites come on top).
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct WritesView {
    pub snapshot_records: u64,
    pub snapshot_bytes: u64,
    pub alert_log_records: u64,
    pub alert_log_bytes: u64,
    pub outbox_records: u64,
    pub outbox_bytes: u64,
    /// Downsampled history records (one per series and snapshot round).
    pub history_records: u64,
    pub history_bytes: u64,
    /// Records removed: acknowledged outbox messages, budget drops, retention.
    pub removals: u64,
    /// Durable flushes (each a log write plus fsyncs).
    pub flushes: u64,
    /// Checkpoint manifests written.
    pub manifests: u64,
}

fn add(c: &AtomicU64, records: u64, bytes_c: &AtomicU64, bytes: usize) {
    c.fetch_add(records, Relaxed);
    bytes_c.fetch_add(bytes as u64, Relaxed);
}

impl Writes {
    pub(super) fn snapshot(&self, bytes: usize) {
        add(&self.snapshot_records, 1, &self.snapshot_bytes, bytes);
    }
    pub(super) fn alert_log(&self, bytes: usize) {
        add(&self.alert_log_records, 1, &self.alert_log_bytes, bytes);
    }
    pub(super) fn outbox(&self, bytes: usize) {
        add(&self.outbox_records, 1, &self.outbox_bytes, bytes);
    }
    pub(super) fn history(&self, bytes: usize) {
        add(&self.history_records, 1, &self.history_bytes, bytes);
    }
    pub(super) fn removed(&self, n: u64) {
        self.removals.fetch_add(n, Relaxed);
    }
    pub(super) fn flushed(&self) {
        self.flushes.fetch_add(1, Relaxed);
    }
    pub(super) fn manifest(&self) {
        self.manifests.fetch_add(1, Relaxed);
    }

    pub fn view(&self) -> WritesView {
        WritesView {
            snapshot_records: self.snapshot_records.load(Relaxed),
            snapshot_bytes: self.snapshot_bytes.load(Relaxed),
            alert_log_records: self.alert_log_records.load(Relaxed),
            alert_log_bytes: self.alert_log_bytes.load(Relaxed),
            outbox_records: self.outbox_records.load(Relaxed),
            outbox_bytes: self.outbox_bytes.load(Relaxed),
            history_records: self.history_records.load(Relaxed),
            history_bytes: self.history_bytes.load(Relaxed),
            removals: self.removals.load(Relaxed),
            flushes: self.flushes.load(Relaxed),
            manifests: self.manifests.load(Relaxed),
        }
    }
}
