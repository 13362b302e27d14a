//! MQTT sink: publishes alerts from its durable outbox with QoS 1 (deleted on PubAck, in seq order,
//! resent after reconnects), summaries live, a retained birth message and a Last Will.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Outgoing, Packet, QoS};
use serde::Deserialize;
use tokio::sync::{broadcast, mpsc, watch};

use crate::config::MqttSink;
use crate::hub::{Kind, Wire, PROTOCOL_VERSION};
use crate::sources::backoff::Backoff;
use crate::store::{Lane, Outbox, StoreError};
use crate::upstream::UpstreamStats;

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("broker: {0}")]
    Connection(Box<rumqttc::ConnectionError>),
    #[error("no CONNACK within 10 s")]
    ConnectTimeout,
    #[error("outbox: {0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Setup(#[from] crate::mqtt::MqttError),
}

/// Everything the sink task needs, built at start-up.
pub struct Sink {
    pub cfg: MqttSink,
    pub node: String,
    pub outbox: Outbox,
    pub flushed: watch::Receiver<u64>,
    pub stats: Arc<UpstreamStats>,
    /// The hub's local stream, for summaries.
    pub events: broadcast::Receiver<Arc<Wire>>,
    opts: MqttOptions,
}

fn status_json(node: &str, state: &str) -> String {
    serde_json::json!({"type": "status", "v": PROTOCOL_VERSION, "node": node, "state": state})
        .to_string()
}

/// A value put into a topic: `+`, `#` and NUL would make the topic invalid.
fn topic_safe(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains(['+', '#', '\0']) {
        s.replace(['+', '#', '\0'], "_").into()
    } else {
        s.into()
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Head<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<&'a str>,
    #[serde(borrow)]
    device: Option<&'a str>,
    #[serde(borrow)]
    metric: Option<&'a str>,
    #[serde(borrow)]
    detector: Option<&'a str>,
    #[serde(borrow)]
    severity: Option<&'a str>,
    #[serde(borrow)]
    state: Option<&'a str>,
}

/// The topic of one queued message: alerts by the template; gap notices under the status topic.
pub fn render_topic(template: &str, status_topic: &str, node: &str, json: &[u8]) -> String {
    let h: Head<'_> = serde_json::from_slice(json).unwrap_or_default();
    if h.kind != Some("alert") {
        return format!("{}/gap", status_topic.replace("{node}", &topic_safe(node)));
    }
    let mut t = template.replace("{node}", &topic_safe(node));
    for (k, v) in [
        ("{device}", h.device),
        ("{metric}", h.metric),
        ("{detector}", h.detector),
        ("{severity}", h.severity),
        ("{state}", h.state),
    ] {
        if t.contains(k) {
            t = t.replace(k, &topic_safe(v.unwrap_or("_")));
        }
    }
    t
}

impl Sink {
    /// Builds the connection options now (password and certificate files are read here).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cfg: MqttSink,
        node: String,
        outbox: Outbox,
        flushed: watch::Receiver<u64>,
        stats: Arc<UpstreamStats>,
        events: broadcast::Receiver<Arc<Wire>>,
    ) -> Result<Self, SinkError> {
        let default_id = format!("edgewatch-{node}-{}", cfg.id);
        let mut opts = crate::mqtt::options(&cfg.conn(), &default_id)?;
        let status = cfg.status_topic.replace("{node}", &topic_safe(&node));
        opts.set_last_will(LastWill::new(
            status,
            status_json(&node, "offline"),
            QoS::AtLeastOnce,
            true,
        ));
        opts.set_inflight(cfg.window.clamp(1, 65_000) as u16);
        Ok(Sink {
            cfg,
            node,
            outbox,
            flushed,
            stats,
            events,
            opts,
        })
    }
}

/// Runs until the process stops: one session at a time, backoff in between.
pub async fn run(mut s: Sink) {
    let mut backoff = Backoff::new(s.cfg.backoff_min.0, s.cfg.backoff_max.0);
    loop {
        let r = session(&mut s, &mut backoff).await;
        s.stats.connected.store(false, Relaxed);
        match r {
            Ok(()) => return, // the store or the hub stopped: shutting down
            Err(e) => {
                tracing::warn!(sink = %s.cfg.id, url = %s.cfg.url, error = %e, "mqtt sink: broker connection failed");
                s.stats.set_error(e.to_string());
            }
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

/// Aborts the event-loop task when the session ends.
struct Pump(tokio::task::JoinHandle<()>);

impl Drop for Pump {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One connection. A fresh rumqttc event loop per session, so nothing is replayed behind the
/// outbox's back: after a reconnect every unacknowledged alert is sent again from the outbox.
async fn session(s: &mut Sink, backoff: &mut Backoff) -> Result<(), SinkError> {
    let window = s.cfg.window;
    let (client, mut el) = AsyncClient::new(s.opts.clone(), window + 16);
    let (etx, mut erx) = mpsc::unbounded_channel();
    let _pump = Pump(tokio::spawn(async move {
        loop {
            let r = el.poll().await;
            let stop = r.is_err();
            if etx.send(r).is_err() || stop {
                break;
            }
        }
    }));
    let connack = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match erx.recv().await {
                Some(Ok(Event::Incoming(Packet::ConnAck(_)))) => return Ok(()),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(SinkError::Connection(Box::new(e))),
                None => return Err(SinkError::ConnectTimeout),
            }
        }
    });
    connack.await.map_err(|_| SinkError::ConnectTimeout)??;
    backoff.reset();
    s.stats.connected.store(true, Relaxed);
    s.stats.connects.fetch_add(1, Relaxed);
    tracing::info!(sink = %s.cfg.id, url = %s.cfg.url, pending_alerts = s.outbox.len(Lane::Alert), "mqtt sink connected");

    let node = s.node.clone();
    let status_topic = s.cfg.status_topic.replace("{node}", &topic_safe(&node));
    let summary_topic = s.cfg.summary_topic.replace("{node}", &topic_safe(&node));
    let summary_qos = if s.cfg.summary_qos == 0 {
        QoS::AtMostOnce
    } else {
        QoS::AtLeastOnce
    };
    // Every publish yields one `Outgoing::Publish(pkid)`, in request order: alerts carry their seq.
    let mut awaiting: VecDeque<Option<u64>> = VecDeque::new();
    let mut in_flight: HashMap<u16, u64> = HashMap::new();
    if client
        .try_publish(
            &status_topic,
            QoS::AtLeastOnce,
            true,
            status_json(&node, "online"),
        )
        .is_ok()
    {
        awaiting.push_back(None);
    }
    let mut cursor = 0u64;
    loop {
        let upto = *s.flushed.borrow_and_update();
        'fill: loop {
            let room = window.saturating_sub(awaiting.len() + in_flight.len());
            if room == 0 {
                break;
            }
            let batch = s.outbox.pending(Lane::Alert, cursor, upto, room)?;
            if batch.is_empty() {
                break;
            }
            for item in batch {
                let topic =
                    render_topic(&s.cfg.alert_topic, &s.cfg.status_topic, &node, &item.json);
                if client
                    .try_publish(topic, QoS::AtLeastOnce, s.cfg.retain, item.json)
                    .is_err()
                {
                    break 'fill; // request queue full: continue after the next event
                }
                awaiting.push_back(Some(item.seq));
                cursor = item.seq;
                s.stats.sent.fetch_add(1, Relaxed);
            }
        }

        tokio::select! {
            ev = erx.recv() => match ev {
                Some(Ok(Event::Outgoing(Outgoing::Publish(pkid)))) => {
                    if let Some(Some(seq)) = awaiting.pop_front() {
                        in_flight.insert(pkid, seq);
                    }
                }
                Some(Ok(Event::Incoming(Packet::PubAck(a)))) => {
                    if let Some(seq) = in_flight.remove(&a.pkid) {
                        if s.outbox.ack(seq)? {
                            s.stats.acked.fetch_add(1, Relaxed);
                        }
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(SinkError::Connection(Box::new(e))),
                None => return Err(SinkError::ConnectTimeout),
            },
            r = s.flushed.changed() => {
                if r.is_err() {
                    return Ok(());
                }
            }
            w = s.events.recv() => match w {
                Ok(w) if w.kind == Kind::Summary && !summary_topic.is_empty() => {
                    // Summaries are not durable: when the request queue is full, one is skipped.
                    if client.try_publish(&summary_topic, summary_qos, false, w.json.clone()).is_ok() {
                        awaiting.push_back(None);
                    }
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return Ok(()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_are_rendered_from_the_alert() {
        let a = br#"{"type":"alert","v":1,"node":"n","seq":3,"device":"site/d+1","metric":"temp","detector":"zscore","severity":"warning","state":"firing"}"#;
        assert_eq!(
            render_topic(
                "e/{node}/alerts/{device}/{metric}/{state}",
                "e/{node}/status",
                "n1",
                a
            ),
            "e/n1/alerts/site/d_1/temp/firing"
        );
        let g = br#"{"type":"gap","v":1,"node":"n","seq":9,"lane":"alert"}"#;
        assert_eq!(
            render_topic("x/{device}", "e/{node}/status", "n1", g),
            "e/n1/status/gap"
        );
    }
}
