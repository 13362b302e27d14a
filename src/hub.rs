//! Event hub: serialises each alert and summary once into its wire form, fans it out to the
//! local `/ws` stream (a broadcast ring; a slow client lags and is dropped) and logs alerts to the store.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use serde::Serialize;
use tokio::sync::broadcast;

use crate::analysis::actor::{ShardActor, TakeSummary};
use crate::model::{now_ms, Alert, AlertState, Summary};
use crate::status::StatusBoard;
use crate::store::{Gap, LogAlerts, QueueSummary, StoreActor};
use crate::upstream::merge::SummaryMerger;

/// Version of the wire messages (`v` field), see docs/PROTOCOL.md.
pub const PROTOCOL_VERSION: u32 = 1;

#[derive(Message)]
#[rtype(result = "()")]
pub enum Event {
    Alerts(Vec<Alert>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Alert,
    Summary,
}

/// One serialised message on the local stream.
#[derive(Debug)]
pub struct Wire {
    pub kind: Kind,
    /// The alert's device (summaries cover many).
    pub device: Option<String>,
    /// The alert's state (for `?state=` filters).
    pub state: Option<AlertState>,
    /// The summary itself, so a filtered client can be sent just its device's entries.
    pub summary: Option<Arc<Summary>>,
    pub json: String,
}

/// Envelope of every outgoing message: type, protocol version, node, upstream `seq`, then the body.
#[derive(Serialize)]
struct Envelope<'a, T: Serialize> {
    #[serde(rename = "type")]
    kind: &'static str,
    v: u32,
    node: &'a str,
    /// Upstream only: the message's outbox sequence number.
    #[serde(skip_serializing_if = "Option::is_none")]
    seq: Option<u64>,
    #[serde(flatten)]
    body: &'a T,
}

fn envelope<T: Serialize>(kind: &'static str, node: &str, seq: Option<u64>, body: &T) -> String {
    serde_json::to_string(&Envelope {
        kind,
        v: PROTOCOL_VERSION,
        node,
        seq,
        body,
    })
    .unwrap_or_default()
}

/// The JSON of an alert message (`seq` only upstream).
pub fn alert_json(node: &str, seq: Option<u64>, alert: &Alert) -> String {
    envelope("alert", node, seq, alert)
}

/// The JSON of a summary message (`seq` only upstream).
pub fn summary_json(node: &str, seq: Option<u64>, summary: &Summary) -> String {
    envelope("summary", node, seq, summary)
}

/// The JSON of a `gap` notice: messages the outbox budget dropped.
pub fn gap_json(node: &str, seq: u64, gap: &Gap) -> String {
    envelope("gap", node, Some(seq), gap)
}

pub struct Hub {
    node: String,
    summary_every: Duration,
    /// Merges local summaries into one per upstream interval (None without `[upstream]`).
    upstream: Option<(Duration, SummaryMerger)>,
    shards: Vec<Addr<ShardActor>>,
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
        let _ = self.tx.send(Arc::new(Wire {
            kind: Kind::Summary,
            device: None,
            state: None,
            json: summary_json(&self.node, None, &s),
            summary: Some(s),
        }));
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
                    let mut devices: Vec<_> =
                        parts.into_iter().filter_map(Result::ok).flatten().collect();
                    if devices.is_empty() {
                        return;
                    }
                    devices.sort_by(|a, b| (&a.device, &a.metric).cmp(&(&b.device, &b.metric)));
                    act.publish_summary(Summary {
                        ts: now,
                        interval_ms: every.as_millis() as u64,
                        devices,
                    });
                })
                .spawn(ctx);
        });
        if let Some((every, _)) = &self.upstream {
            ctx.run_interval(*every, |act, _| {
                if let Some((every, merger)) = &mut act.upstream {
                    if let Some(s) = merger.take(now_ms(), every.as_millis() as u64) {
                        act.store.do_send(QueueSummary(Arc::new(s)));
                    }
                }
            });
        }
    }
}

/// Tells the hub which shards to ask for summaries (they are started after it).
#[derive(Message)]
#[rtype(result = "()")]
pub struct AttachShards(pub Vec<Addr<ShardActor>>);

impl Handler<AttachShards> for Hub {
    type Result = ();
    fn handle(&mut self, msg: AttachShards, _: &mut Self::Context) {
        self.shards = msg.0;
    }
}

impl Handler<Event> for Hub {
    type Result = ();

    fn handle(&mut self, ev: Event, _: &mut Self::Context) {
        let p = &self.status.pipeline;
        match ev {
            Event::Alerts(alerts) => {
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
                    let _ = self.tx.send(Arc::new(Wire {
                        kind: Kind::Alert,
                        device: Some(a.device.clone()),
                        state: Some(a.state),
                        summary: None,
                        json: alert_json(&self.node, None, a),
                    }));
                }
                self.store.do_send(LogAlerts(alerts));
            }
        }
    }
}
