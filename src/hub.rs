//! Event hub: fans each alert and summary out, serialised once (`protocol::Wire`), to the local
//! `/ws` stream (a broadcast ring; a slow client lags and is dropped) and to the store (log, outboxes).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::broadcast;

use crate::analysis::actor::{Alerts, TakeSummary};
use crate::model::{now_ms, AlertState, Summary};
use crate::protocol::Wire;
use crate::status::StatusBoard;
use crate::store::{LogAlerts, QueueSummary, StoreActor, SummaryFeed};
use crate::upstream::merge::SummaryMerger;

pub struct Hub {
    node: String,
    summary_every: Duration,
    /// Merges local summaries into one per upstream interval (None without `[upstream]`).
    upstream: Option<(Duration, SummaryMerger)>,
    /// Who to ask for interval statistics (the analyzer shards).
    shards: Vec<Recipient<TakeSummary>>,
    tx: broadcast::Sender<Arc<Wire>>,
    store: Addr<StoreActor>,
    status: Arc<StatusBoard>,
}

impl Hub {
    pub fn new(
        node: String,
        summary_every: Duration,
        tx: broadcast::Sender<Arc<Wire>>,
        store: Addr<StoreActor>,
        status: Arc<StatusBoard>,
        upstream_every: Option<Duration>,
    ) -> Self {
        Hub {
            node,
            summary_every,
            upstream: upstream_every.map(|d| (d, SummaryMerger::default())),
            shards: Vec::new(),
            tx,
            store,
            status,
        }
    }

    fn publish_summary(&mut self, s: Summary) {
        self.status.pipeline.summaries.fetch_add(1, Relaxed);
        if let Some((_, merger)) = &mut self.upstream {
            merger.add(&s);
        }
        let s = Arc::new(s);
        // Outboxes that take every summary (InfluxDB); the store skips it when none does.
        self.store
            .do_send(QueueSummary(s.clone(), SummaryFeed::Every));
        let _ = self.tx.send(Arc::new(Wire::summary(&self.node, s)));
    }
}

impl Actor for Hub {
    type Context = Context<Self>;

    /// One clock for summaries: every interval, ask all shards at once and publish one message.
    fn started(&mut self, ctx: &mut Self::Context) {
        let every = self.summary_every;
        ctx.run_interval(every, move |act, ctx| {
            let now = now_ms();
            let asks: Vec<_> = act
                .shards
                .iter()
                .map(|s| s.send(TakeSummary { now }))
                .collect();
            futures_util::future::join_all(asks)
                .into_actor(act)
                .map(move |parts, act, _| {
                    let (mut devices, mut vectors) = (Vec::new(), Vec::new());
                    for (d, v) in parts.into_iter().filter_map(Result::ok) {
                        devices.extend(d);
                        vectors.extend(v);
                    }
                    if devices.is_empty() {
                        return;
                    }
                    devices.sort_by(|a, b| (&a.device, &a.metric).cmp(&(&b.device, &b.metric)));
                    vectors.sort_by(|a, b| a.device.cmp(&b.device));
                    act.publish_summary(Summary {
                        ts: now,
                        interval_ms: every.as_millis() as u64,
                        devices,
                        vectors,
                    });
                })
                .spawn(ctx);
        });
        if let Some((every, _)) = &self.upstream {
            ctx.run_interval(*every, |act, _| {
                if let Some((every, merger)) = &mut act.upstream {
                    if let Some(s) = merger.take(now_ms(), every.as_millis() as u64) {
                        act.store
                            .do_send(QueueSummary(Arc::new(s), SummaryFeed::Upstream));
                    }
                }
            });
        }
    }
}

/// Tells the hub which shards to ask for summaries (they are started after it).
#[derive(Message)]
#[rtype(result = "()")]
pub struct AttachShards(pub Vec<Recipient<TakeSummary>>);

impl Handler<AttachShards> for Hub {
    type Result = ();
    fn handle(&mut self, msg: AttachShards, _: &mut Self::Context) {
        self.shards = msg.0;
    }
}

impl Handler<Alerts> for Hub {
    type Result = ();

    fn handle(&mut self, Alerts(alerts): Alerts, _: &mut Self::Context) {
        let p = &self.status.pipeline;
        for a in &alerts {
            match a.state {
                AlertState::Firing => {
                    p.alerts_fired.fetch_add(1, Relaxed);
                    p.alerts_firing.fetch_add(1, Relaxed);
                    tracing::info!(device = %a.device, metric = %a.metric, detector = %a.detector, severity = ?a.severity, value = a.value, reason = %a.message, "alert firing");
                }
                AlertState::Resolved => {
                    p.alerts_resolved.fetch_add(1, Relaxed);
                    let _ = p
                        .alerts_firing
                        .fetch_update(Relaxed, Relaxed, |n| Some(n.saturating_sub(1)));
                    tracing::info!(device = %a.device, metric = %a.metric, detector = %a.detector, "alert resolved");
                }
            }
            // No receivers is fine: nobody is watching.
            let _ = self.tx.send(Arc::new(Wire::alert(&self.node, a)));
        }
        self.store.do_send(LogAlerts(alerts));
    }
}
