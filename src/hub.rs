//! Event hub: serialises each alert and summary once into its wire form, fans it out to the
//! local `/ws` stream (a broadcast ring; a slow client lags and is dropped) and logs alerts to the store.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use actix::prelude::*;
use serde::Serialize;
use tokio::sync::broadcast;

use crate::model::{Alert, AlertState, Summary};
use crate::status::StatusBoard;
use crate::store::{LogAlerts, StoreActor};

/// Version of the wire messages (`v` field), see docs/PROTOCOL.md.
pub const PROTOCOL_VERSION: u32 = 1;

#[derive(Message)]
#[rtype(result = "()")]
pub enum Event {
    Alerts(Vec<Alert>),
    Summary(Arc<Summary>),
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
    /// The summary itself, so a filtered client can be sent just its device's entries.
    pub summary: Option<Arc<Summary>>,
    pub json: String,
}

#[derive(Serialize)]
struct WireAlert<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    v: u32,
    node: &'a str,
    #[serde(flatten)]
    alert: &'a Alert,
}

#[derive(Serialize)]
struct WireSummary<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    v: u32,
    node: &'a str,
    #[serde(flatten)]
    summary: &'a Summary,
}

/// The JSON of an alert message.
pub fn alert_json(node: &str, alert: &Alert) -> String {
    serde_json::to_string(&WireAlert {
        kind: "alert",
        v: PROTOCOL_VERSION,
        node,
        alert,
    })
    .unwrap_or_default()
}

/// The JSON of a summary message.
pub fn summary_json(node: &str, summary: &Summary) -> String {
    serde_json::to_string(&WireSummary {
        kind: "summary",
        v: PROTOCOL_VERSION,
        node,
        summary,
    })
    .unwrap_or_default()
}

pub struct Hub {
    node: String,
    tx: broadcast::Sender<Arc<Wire>>,
    store: Addr<StoreActor>,
    status: Arc<StatusBoard>,
}

impl Hub {
    pub fn new(
        node: String,
        tx: broadcast::Sender<Arc<Wire>>,
        store: Addr<StoreActor>,
        status: Arc<StatusBoard>,
    ) -> Self {
        Hub {
            node,
            tx,
            store,
            status,
        }
    }
}

impl Actor for Hub {
    type Context = Context<Self>;
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
                        summary: None,
                        json: alert_json(&self.node, a),
                    }));
                }
                self.store.do_send(LogAlerts(alerts));
            }
            Event::Summary(s) => {
                p.summaries.fetch_add(1, Relaxed);
                let _ = self.tx.send(Arc::new(Wire {
                    kind: Kind::Summary,
                    device: None,
                    json: summary_json(&self.node, &s),
                    summary: Some(s),
                }));
            }
        }
    }
}
