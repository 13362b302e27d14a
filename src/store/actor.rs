//! Actix shell around `Store`: runs on its own arbiter so disk work never blocks analysis; logs
//! alerts, queues upstream messages (flushed in groups every 500 ms), writes snapshots, retention.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::watch;

use super::{AlertFilter, Budget, Lane, Outbox, Store};
use crate::config::StoreConfig;
use crate::model::{now_ms, Alert, Summary};
use crate::protocol::{alert_json, gap_json, summary_json};

/// How often queued upstream messages are made durable (and then offered to the sender).
/// Each flush is a sled log write; grouping messages for 500 ms (sled's own flush period) keeps
/// SD-card writes down: at 50 ms, 100 devices with ~2 alert messages/s wrote ~85 MB/h in total.
const OUTBOX_FLUSH: Duration = Duration::from_millis(500);

/// One consumer's outbox (upstream, an MQTT sink): where to append, where to announce durable
/// messages, and the budget.
pub struct UpstreamQueue {
    pub outbox: Outbox,
    /// Which summaries are queued too (alerts and gap notices always are).
    pub summaries: SummaryFeed,
    pub node: String,
    pub budget: Budget,
    /// Whether sample blocks (`analysis::samples`) are queued too (an InfluxDB sink's `samples`).
    pub samples: bool,
    /// Highest seq that is durable on disk; the upstream sender never sends beyond it.
    pub flushed: watch::Sender<u64>,
}

pub struct StoreActor {
    store: Store,
    retention: StoreConfig,
    queues: Vec<UpstreamQueue>,
    dirty: bool,
    /// Set when the appliance is abandoned (in-process stop without saving): queued writes are
    /// skipped, as a crash would lose them, so the thread ends at once.
    abandoned: Arc<AtomicBool>,
}

impl StoreActor {
    pub fn new(store: Store, retention: StoreConfig, queues: Vec<UpstreamQueue>) -> Self {
        for u in &queues {
            // What survived from a previous run is durable already.
            let last = u.outbox.last_seq();
            u.flushed.send_replace(last);
        }
        StoreActor {
            store,
            retention,
            queues,
            dirty: false,
            abandoned: Arc::default(),
        }
    }

    /// Shares the flag that makes the actor skip its queued writes (see `app::Request::Abandon`).
    pub fn abandoned_by(mut self, flag: Arc<AtomicBool>) -> Self {
        self.abandoned = flag;
        self
    }

    fn is_abandoned(&self) -> bool {
        self.abandoned.load(Relaxed)
    }

    /// Applies each outbox budget (queueing `gap` notices), flushes, and announces the new
    /// durable seq to each sender.
    fn flush_outbox(&mut self) {
        if self.queues.is_empty() {
            return;
        }
        let now = now_ms();
        for u in &self.queues {
            match u.outbox.enforce(&u.budget, now) {
                Ok(gaps) => {
                    for g in gaps {
                        tracing::warn!(lane = ?g.lane, from = g.from, to = g.to, count = g.count, reason = g.reason, "outbox over budget: messages dropped");
                        let node = u.node.clone();
                        if let Err(e) = u.outbox.append(Lane::Alert, now, |seq| {
                            gap_json(&node, seq, &g).into_bytes()
                        }) {
                            tracing::error!(error = %e, "cannot queue gap notice");
                        }
                    }
                }
                Err(e) => tracing::error!(error = %e, "outbox budget check failed"),
            }
        }
        match self.store.flush() {
            Ok(_) => {
                for u in &self.queues {
                    let seq = u.outbox.last_seq();
                    u.flushed.send_replace(seq);
                }
                self.dirty = false;
            }
            Err(e) => tracing::error!(error = %e, "outbox flush failed; retrying"),
        }
    }

    /// 1-minute history of days past `history_1m_max_age` → 15-minute buckets; old days deleted.
    /// Does nothing but one read except once a day.
    fn compact_history(&mut self) {
        if !self.retention.history {
            return;
        }
        match self.store.history().compact(
            now_ms(),
            self.retention.history_1m_max_age.as_ms(),
            self.retention.history_15m_max_age.as_ms(),
        ) {
            Ok((0, 0)) => {}
            Ok((compacted, deleted)) => {
                tracing::info!(compacted, deleted, "history compacted to 15-minute buckets");
                if let Err(e) = self.store.flush() {
                    tracing::error!(error = %e, "history flush failed");
                }
            }
            Err(e) => tracing::error!(error = %e, "history compaction failed"),
        }
    }

    /// Appends to every queue that takes `lane` (for summaries: the queues fed `which`).
    fn queue(
        &mut self,
        lane: Lane,
        which: Option<SummaryFeed>,
        build: impl Fn(&str, u64) -> String,
    ) {
        for u in &self.queues {
            if lane == Lane::Summary && Some(u.summaries) != which {
                continue;
            }
            let node = u.node.as_str();
            match u
                .outbox
                .append(lane, now_ms(), |seq| build(node, seq).into_bytes())
            {
                Ok(_) => self.dirty = true,
                Err(e) => tracing::error!(error = %e, "cannot queue an outgoing message"),
            }
        }
    }
}

impl Actor for StoreActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Days that aged while the appliance was off are compacted now, not in a minute.
        self.compact_history();
        ctx.run_interval(self.retention.retention_interval.0, |act, _| {
            let r = &act.retention;
            match act
                .store
                .prune_alerts(now_ms(), r.alert_log_max_age.as_ms(), r.alert_log_max)
            {
                Ok(0) => {}
                Ok(n) => tracing::info!(removed = n, "alert log retention applied"),
                Err(e) => tracing::error!(error = %e, "alert log retention failed"),
            }
            act.compact_history();
            // Age limits apply even when nothing new arrives.
            act.dirty |= !act.queues.is_empty();
        });
        ctx.run_interval(OUTBOX_FLUSH, |act, _| {
            if act.dirty {
                act.flush_outbox();
            }
        });
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        if let Err(e) = self.store.flush() {
            tracing::error!(error = %e, "final flush failed");
        }
    }
}

/// Append alert transitions to the alert log (and the upstream outbox).
#[derive(Message)]
#[rtype(result = "()")]
pub struct LogAlerts(pub Vec<Alert>);

impl Handler<LogAlerts> for StoreActor {
    type Result = ();
    fn handle(&mut self, msg: LogAlerts, _: &mut Self::Context) {
        if self.is_abandoned() {
            return;
        }
        for a in &msg.0 {
            if let Err(e) = self.store.log_alert(a) {
                tracing::error!(error = %e, alert = %a.id, "cannot write alert log");
            }
            self.queue(Lane::Alert, None, |node, seq| {
                alert_json(node, Some(seq), a)
            });
        }
    }
}

/// Which summaries a consumer's outbox takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SummaryFeed {
    /// None (alerts and gap notices only).
    None,
    /// One merged summary per upstream interval.
    Upstream,
    /// Every summary of the local `summary_interval` (e.g. InfluxDB).
    Every,
}

/// Queue a summary for the consumers fed `.1`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct QueueSummary(pub Arc<Summary>, pub SummaryFeed);

impl Handler<QueueSummary> for StoreActor {
    type Result = ();
    fn handle(&mut self, msg: QueueSummary, _: &mut Self::Context) {
        if self.is_abandoned() {
            return;
        }
        self.queue(Lane::Summary, Some(msg.1), |node, seq| {
            summary_json(node, Some(seq), &msg.0)
        });
    }
}

/// Save device snapshots and flush; answers once they are durable.
#[derive(Message)]
#[rtype(result = "Result<(), String>")]
pub struct SaveSnapshot(pub Vec<(String, Vec<u8>)>);

impl Handler<SaveSnapshot> for StoreActor {
    type Result = Result<(), String>;
    fn handle(&mut self, msg: SaveSnapshot, _: &mut Self::Context) -> Self::Result {
        let n = msg.0.len();
        self.store
            .save_snapshots(msg.0)
            .and_then(|_| self.store.flush())
            .map(|bytes| tracing::debug!(devices = n, flushed_bytes = bytes, "snapshot saved"))
            .map_err(|e| e.to_string())?;
        if self.dirty {
            self.flush_outbox();
        }
        Ok(())
    }
}

/// Drops the saved state of evicted devices (`analysis.expire_after`).
#[derive(Message)]
#[rtype(result = "()")]
pub struct DropSnapshots(pub Vec<String>);

impl Handler<DropSnapshots> for StoreActor {
    type Result = ();
    fn handle(&mut self, msg: DropSnapshots, _: &mut Self::Context) {
        match self.store.drop_snapshots(&msg.0) {
            Ok(()) => tracing::debug!(
                devices = msg.0.len(),
                "saved state of evicted devices dropped"
            ),
            Err(e) => tracing::error!(error = %e, "cannot drop the saved state of evicted devices"),
        }
    }
}

#[derive(Message)]
#[rtype(result = "Result<Vec<Alert>, String>")]
pub struct QueryAlerts(pub AlertFilter);

impl Handler<QueryAlerts> for StoreActor {
    type Result = Result<Vec<Alert>, String>;
    fn handle(&mut self, msg: QueryAlerts, _: &mut Self::Context) -> Self::Result {
        self.store.alerts(&msg.0).map_err(|e| e.to_string())
    }
}

/// Closed minutes of every series of a shard, sent with each snapshot: merged into their hour
/// records and flushed.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SaveHistory(pub Vec<super::history::SeriesBuckets>);

impl Handler<SaveHistory> for StoreActor {
    type Result = ();
    fn handle(&mut self, msg: SaveHistory, _: &mut Self::Context) {
        if self.is_abandoned() || msg.0.is_empty() {
            return;
        }
        let h = self.store.history();
        match h.save(&msg.0).and_then(|_| self.store.flush()) {
            Ok(_) => tracing::debug!(series = msg.0.len(), "history saved"),
            Err(e) => tracing::error!(error = %e, "cannot save history"),
        }
    }
}

/// A shard's block of raw samples or interval statistics, for the outboxes that take samples:
/// encoded once, appended as one message in the summary lane (so the budget drops it before
/// any alert, with a gap notice), durable with the next group flush.
#[derive(Message)]
#[rtype(result = "()")]
pub struct QueueSamples(pub crate::analysis::samples::Block);

impl Handler<QueueSamples> for StoreActor {
    type Result = ();
    fn handle(&mut self, msg: QueueSamples, _: &mut Self::Context) {
        if self.is_abandoned() || !self.queues.iter().any(|u| u.samples) {
            return;
        }
        let bytes = msg.0.encode();
        for u in self.queues.iter().filter(|u| u.samples) {
            match u.outbox.append(Lane::Summary, now_ms(), |_| bytes.clone()) {
                Ok(_) => self.dirty = true,
                Err(e) => tracing::error!(error = %e, "cannot queue samples"),
            }
        }
    }
}
