//! Actix shell around `ShardCore`: consumes its bounded batch queue as a stream, ticks silence
//! detectors, emits summaries, snapshots state to the store and answers API queries.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::mpsc;

use super::device::{CorrelationView, ModesView};
use super::shard::{DeviceView, SeriesError, SeriesView, ShardCore};
use crate::model::{now_ms, Alert};
use crate::model::{SummaryEntry, VectorSummary};
use crate::sources::route::Ingest;
use crate::store::{DropSnapshots, QueueSamples, SaveHistory, SaveSnapshot, StoreActor};

/// Alert transitions a shard raised, for whoever fans them out (the hub).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Alerts(pub Vec<Alert>);

pub struct ShardActor {
    core: ShardCore,
    rx: Option<mpsc::Receiver<Ingest>>,
    /// Where alert transitions go (the hub).
    hub: Recipient<Alerts>,
    store: Addr<StoreActor>,
    persist_every: Duration,
    out: Vec<Alert>,
    /// Hash of each device's encoded state as last confirmed durable by the store: a device
    /// whose state did not change since (no sample, no tick that moved it) is not written again.
    saved: HashMap<String, u64>,
}

fn hash_of(bytes: &[u8]) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

/// Encoded device states: (device id, bytes).
type Snapshots = Vec<(String, Vec<u8>)>;

/// The snapshots whose encoding differs from the one saved last, with their new hashes.
fn changed_since(saved: &HashMap<String, u64>, snap: Snapshots) -> (Snapshots, Vec<(String, u64)>) {
    let mut hashes = Vec::with_capacity(snap.len());
    let changed = snap
        .into_iter()
        .filter(|(id, bytes)| {
            let h = hash_of(bytes);
            let same = saved.get(id) == Some(&h);
            if !same {
                hashes.push((id.clone(), h));
            }
            !same
        })
        .collect();
    (changed, hashes)
}

impl ShardActor {
    pub fn new(
        core: ShardCore,
        rx: mpsc::Receiver<Ingest>,
        hub: Recipient<Alerts>,
        store: Addr<StoreActor>,
        persist_every: Duration,
    ) -> Self {
        ShardActor {
            core,
            rx: Some(rx),
            hub,
            store,
            persist_every,
            out: Vec::new(),
            saved: HashMap::new(),
        }
    }

    /// Hands the closed minutes of every series to the store (before each snapshot).
    fn save_history(&mut self) {
        let h = self.core.take_history();
        if !h.is_empty() {
            self.store.do_send(SaveHistory(h));
        }
    }

    /// Hands the sample block collected so far to the store (one outbox message per block).
    fn save_samples(&mut self, close_open: bool) {
        if let Some(b) = self.core.take_samples(close_open) {
            self.store.do_send(QueueSamples(b));
        }
    }

    fn emit_alerts(&mut self) {
        if !self.out.is_empty() {
            self.hub.do_send(Alerts(std::mem::take(&mut self.out)));
        }
    }
}

impl Actor for ShardActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if let Some(mut rx) = self.rx.take() {
            ctx.add_stream(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)));
        }
        ctx.run_interval(Duration::from_secs(1), |act, _| {
            act.core.tick(now_ms(), &mut act.out);
            act.emit_alerts();
            act.save_samples(false);
            let evicted = act.core.take_evicted();
            for id in &evicted {
                act.saved.remove(id);
            }
            if !evicted.is_empty() {
                act.store.do_send(DropSnapshots(evicted));
            }
        });
        ctx.run_interval(self.persist_every, |act, ctx| {
            act.emit_alerts();
            act.save_history();
            let (snap, hashes) = changed_since(&act.saved, act.core.snapshot());
            if snap.is_empty() {
                return;
            }
            let shard = act.core.index();
            // The alerts this state has raised go shard -> hub -> store, the snapshot straight to
            // the store: it could overtake them, be flushed first, and a power cut then would
            // restore an alert the outbox and the alert log never got (its resolution would go
            // upstream for an alert never announced; the power-cut test found it). An empty
            // `Alerts` through the hub first: once answered, the hub has handed every earlier
            // alert of this shard to the store, which takes them before the snapshot.
            let barrier = act.hub.send(Alerts(Vec::new()));
            let store = act.store.clone();
            async move {
                let _ = barrier.await;
                store.send(SaveSnapshot(snap)).await
            }
            .into_actor(act)
            .map(move |r, act, _| match r {
                // Only what is durable counts as saved (a failed round is written again).
                Ok(Ok(())) => act.saved.extend(hashes),
                Ok(Err(e)) => tracing::error!(shard, error = %e, "snapshot failed"),
                Err(e) => tracing::error!(shard, error = %e, "store unavailable"),
            })
            .spawn(ctx);
        });
    }
}

impl StreamHandler<Ingest> for ShardActor {
    fn handle(&mut self, msg: Ingest, _: &mut Self::Context) {
        self.core
            .ingest(msg.source, &msg.batch, now_ms(), &mut self.out);
        self.emit_alerts();
        if self.core.sample_rows() >= super::samples::BLOCK_ROWS {
            self.save_samples(false);
        }
    }

    /// The queue closes only at shutdown; keep the actor alive for the final snapshot.
    fn finished(&mut self, _: &mut Self::Context) {}
}

/// The shard's devices (or one device), for the API.
#[derive(Message)]
#[rtype(result = "Vec<DeviceView>")]
pub struct QueryDevices(pub Option<String>);

impl Handler<QueryDevices> for ShardActor {
    type Result = MessageResult<QueryDevices>;
    fn handle(&mut self, msg: QueryDevices, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.core.view(msg.0.as_deref()))
    }
}

/// Encode all state now (used at shutdown); the caller hands it to the store.
#[derive(Message)]
#[rtype(result = "Vec<(String, Vec<u8>)>")]
pub struct TakeSnapshot;

impl Handler<TakeSnapshot> for ShardActor {
    type Result = MessageResult<TakeSnapshot>;
    fn handle(&mut self, _: TakeSnapshot, _: &mut Self::Context) -> Self::Result {
        // Queued before the caller's SaveSnapshot, whose flush makes both durable.
        self.save_history();
        self.save_samples(true);
        MessageResult(self.core.snapshot())
    }
}

/// Statistics since the previous summary, and the device vectors' part (the hub asks every shard
/// at once, then merges).
#[derive(Message)]
#[rtype(result = "(Vec<SummaryEntry>, Vec<VectorSummary>)")]
pub struct TakeSummary {
    pub now: i64,
}

impl Handler<TakeSummary> for ShardActor {
    type Result = MessageResult<TakeSummary>;
    fn handle(&mut self, msg: TakeSummary, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.core.summary(msg.now))
    }
}

/// Recent points of one device's metrics (see `ShardCore::series`); ask the device's shard.
#[derive(Message)]
#[rtype(result = "Result<SeriesView, SeriesError>")]
pub struct QuerySeries {
    pub device: String,
    pub metric: Option<String>,
    pub since: Option<i64>,
}

impl Handler<QuerySeries> for ShardActor {
    type Result = Result<SeriesView, SeriesError>;
    fn handle(&mut self, msg: QuerySeries, _: &mut Self::Context) -> Self::Result {
        self.core
            .series(&msg.device, msg.metric.as_deref(), msg.since, now_ms())
    }
}

/// The rolling covariance and correlation of one device's vector; ask the device's shard.
#[derive(Message)]
#[rtype(result = "Result<CorrelationView, SeriesError>")]
pub struct QueryCorrelation(pub String);

impl Handler<QueryCorrelation> for ShardActor {
    type Result = Result<CorrelationView, SeriesError>;
    fn handle(&mut self, msg: QueryCorrelation, _: &mut Self::Context) -> Self::Result {
        self.core.correlation(&msg.0)
    }
}

/// The operating modes of one device; ask the device's shard.
#[derive(Message)]
#[rtype(result = "Result<ModesView, SeriesError>")]
pub struct QueryModes(pub String);

impl Handler<QueryModes> for ShardActor {
    type Result = Result<ModesView, SeriesError>;
    fn handle(&mut self, msg: QueryModes, _: &mut Self::Context) -> Self::Result {
        self.core.modes(&msg.0)
    }
}

/// A reloaded config: the shard rebuilds its devices and keeps the state of unchanged ones.
/// Answers (devices now, devices whose state was kept).
#[derive(Message)]
#[rtype(result = "(usize, usize)")]
pub struct Reconfigure(pub std::sync::Arc<super::shard::Policies>);

impl Handler<Reconfigure> for ShardActor {
    type Result = MessageResult<Reconfigure>;
    fn handle(&mut self, msg: Reconfigure, _: &mut Self::Context) -> Self::Result {
        self.save_history();
        // The core is rebuilt: what it collected (open intervals closed) goes out first.
        self.save_samples(true);
        MessageResult(self.core.reconfigure(msg.0, now_ms()))
    }
}

/// Minutes of one series the store does not have yet (see `ShardCore::pending_history`).
#[derive(Message)]
#[rtype(result = "Vec<(i64, crate::store::history::Bucket)>")]
pub struct QueryPendingHistory {
    pub device: String,
    pub metric: String,
}

impl Handler<QueryPendingHistory> for ShardActor {
    type Result = MessageResult<QueryPendingHistory>;
    fn handle(&mut self, msg: QueryPendingHistory, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.core.pending_history(&msg.device, &msg.metric))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_snapshots_that_changed_since_the_last_saved_round_are_written() {
        let round =
            |a: &[u8], b: &[u8]| vec![("a".to_string(), a.to_vec()), ("b".into(), b.to_vec())];
        let mut saved = HashMap::new();
        let (changed, hashes) = changed_since(&saved, round(b"1", b"1"));
        assert_eq!(changed.len(), 2, "nothing saved yet: everything is written");
        // Not confirmed durable: the next round writes both again.
        let (changed, _) = changed_since(&saved, round(b"1", b"1"));
        assert_eq!(changed.len(), 2);
        saved.extend(hashes);
        let (changed, hashes) = changed_since(&saved, round(b"1", b"2"));
        assert_eq!(changed, vec![("b".to_string(), b"2".to_vec())]);
        assert_eq!(hashes.len(), 1);
        saved.extend(hashes);
        assert!(changed_since(&saved, round(b"1", b"2")).0.is_empty());
    }
}
