//! MQTT sink, an output of the shared outbox consumer: alerts from its outbox with QoS 1 (deleted
//! on PubAck), summaries live from the hub, a retained birth message and a Last Will.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Outgoing, Packet, QoS};
use serde::Deserialize;
use tokio::sync::{broadcast, mpsc};

use crate::config::MqttSink;
use crate::protocol::{self, Kind, Wire};
use crate::sinks::consumer::{self, Delivery, Feed, Output, Peer};
use crate::sinks::homeassistant::{self, Discovery};
use crate::sources::backoff::Backoff;
use crate::store::outbox::Item;
use crate::store::{Lane, Outbox, StoreError};

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
    /// The hub's local stream, for summaries.
    pub events: broadcast::Receiver<Arc<Wire>>,
    opts: MqttOptions,
    /// Home Assistant discovery state, kept across sessions (`homeassistant`).
    ha: Option<Arc<Mutex<Discovery>>>,
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
    pub fn new(
        cfg: MqttSink,
        node: String,
        events: broadcast::Receiver<Arc<Wire>>,
    ) -> Result<Self, SinkError> {
        let default_id = format!("edgewatch-{node}-{}", cfg.id);
        let mut opts = crate::mqtt::options(&cfg.conn(), &default_id)?;
        let status = cfg.status_topic.replace("{node}", &topic_safe(&node));
        opts.set_last_will(LastWill::new(
            status,
            protocol::status_json(&node, "offline"),
            QoS::AtLeastOnce,
            true,
        ));
        opts.set_inflight(cfg.window.clamp(1, 65_000) as u16);
        let ha = cfg.homeassistant().map(|h| {
            let status = cfg.status_topic.replace("{node}", &topic_safe(&node));
            Arc::new(Mutex::new(Discovery::new(h.clone(), node.clone(), status)))
        });
        Ok(Sink {
            cfg,
            node,
            events,
            opts,
            ha,
        })
    }
}

impl Sink {
    /// See [`Discovery::expire_after`].
    pub fn expire_after(&self, after: Duration) {
        if let Some(Ok(mut d)) = self.ha.as_ref().map(|h| h.lock()) {
            d.expire_after(after);
        }
    }
}

/// Runs until the process stops (the shared consumer drives the sessions).
pub async fn run(s: Sink, feed: Feed) {
    consumer::run(s, feed).await
}

/// Aborts the event-loop task when the session ends.
struct Pump(tokio::task::JoinHandle<()>);

impl Drop for Pump {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One broker connection. A fresh rumqttc event loop per session, so nothing is replayed behind
/// the outbox's back: after a reconnect every unacknowledged alert is sent again from the outbox.
pub struct Connection {
    client: AsyncClient,
    events: mpsc::UnboundedReceiver<Result<Event, rumqttc::ConnectionError>>,
    _pump: Pump,
    node: String,
    alert_topic: String,
    status_topic: String,
    retain: bool,
    summary_topic: String,
    summary_qos: QoS,
    /// The hub's stream, for live summaries.
    live: broadcast::Receiver<Arc<Wire>>,
    /// Every publish yields one `Outgoing::Publish(pkid)`, in request order: alerts carry their seq.
    awaiting: VecDeque<Option<u64>>,
    in_flight: HashMap<u16, u64>,
    ha: Option<Arc<Mutex<Discovery>>>,
    /// Discovery messages to publish (retained, QoS 1), drained by `next`; bounded.
    ha_pending: VecDeque<homeassistant::Msg>,
    ha_cap: usize,
}

/// Discovery messages published per `next` call at most, so acknowledgements keep flowing.
const HA_DRAIN: usize = 64;

impl Connection {
    fn queue_ha(&mut self, msgs: Vec<homeassistant::Msg>) {
        for m in msgs {
            if self.ha_pending.len() >= self.ha_cap {
                tracing::warn!(topic = %m.topic, "homeassistant: publish queue full; message skipped (all are sent again on reconnect)");
                continue;
            }
            self.ha_pending.push_back(m);
        }
    }

    fn with_ha<T: Default>(&self, f: impl FnOnce(&mut Discovery) -> T) -> T {
        match &self.ha {
            Some(h) => h.lock().map(|mut d| f(&mut d)).unwrap_or_default(),
            None => T::default(),
        }
    }

    /// Publishes queued discovery messages while the client's request queue has room. No await:
    /// `next` may be dropped at any point, and `awaiting` must match what the client took.
    fn drain_ha(&mut self) {
        for _ in 0..HA_DRAIN {
            let Some(m) = self.ha_pending.front() else {
                return;
            };
            let (topic, payload) = (m.topic.clone(), m.payload.clone());
            if self
                .client
                .try_publish(topic, QoS::AtLeastOnce, true, payload)
                .is_err()
            {
                return; // full: the events of what is in flight wake `next` again
            }
            self.ha_pending.pop_front();
            self.awaiting.push_back(None);
        }
    }
}

impl Output for Sink {
    type Session = Connection;

    fn label(&self) -> (&str, &str) {
        ("mqtt sink", &self.cfg.url)
    }

    fn summaries(&self) -> bool {
        false // published live from the hub's stream, not from the outbox
    }

    fn window(&self) -> usize {
        self.cfg.window
    }

    fn delivery(&self) -> Delivery {
        Delivery::Acked
    }

    fn backoff(&self) -> Backoff {
        Backoff::new(self.cfg.backoff_min.0, self.cfg.backoff_max.0)
    }

    async fn connect(&mut self, outbox: &Outbox) -> Result<Connection, SinkError> {
        let (client, mut el) = AsyncClient::new(self.opts.clone(), self.cfg.window + 16);
        let (etx, mut erx) = mpsc::unbounded_channel();
        let pump = Pump(tokio::spawn(async move {
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
        tracing::info!(sink = %self.cfg.id, url = %self.cfg.url, pending_alerts = outbox.len(Lane::Alert), "mqtt sink connected");
        let node = self.node.clone();
        let status_topic = self.cfg.status_topic.replace("{node}", &topic_safe(&node));
        let mut c = Connection {
            client,
            events: erx,
            _pump: pump,
            alert_topic: self.cfg.alert_topic.clone(),
            summary_topic: self.cfg.summary_topic.replace("{node}", &topic_safe(&node)),
            summary_qos: if self.cfg.summary_qos == 0 {
                QoS::AtMostOnce
            } else {
                QoS::AtLeastOnce
            },
            retain: self.cfg.retain,
            live: self.events.resubscribe(),
            awaiting: VecDeque::new(),
            in_flight: HashMap::new(),
            status_topic: self.cfg.status_topic.clone(),
            node,
            ha: self.ha.clone(),
            ha_pending: VecDeque::new(),
            ha_cap: self
                .cfg
                .homeassistant()
                .map_or(0, |h| h.max_sensors.saturating_mul(3) + 64),
        };
        if c.client
            .try_publish(
                &status_topic,
                QoS::AtLeastOnce,
                true,
                protocol::status_json(&c.node, "online"),
            )
            .is_ok()
        {
            c.awaiting.push_back(None);
        }
        // Discovery again on every connection (after the birth message, so entities are online).
        let again = c.with_ha(|d| d.on_connect());
        c.queue_ha(again);
        Ok(c)
    }
}

impl consumer::Session for Connection {
    type Error = SinkError;

    async fn send(&mut self, batch: Vec<Item>) -> Result<usize, SinkError> {
        let mut taken = 0;
        for item in batch {
            let topic = render_topic(
                &self.alert_topic,
                &self.status_topic,
                &self.node,
                &item.json,
            );
            // Alerts are rare: a copy for discovery's problem state only when it is on.
            let ha_json = self.ha.is_some().then(|| item.json.clone());
            if self
                .client
                .try_publish(topic, QoS::AtLeastOnce, self.retain, item.json)
                .is_err()
            {
                break; // request queue full: continue after the next event
            }
            self.awaiting.push_back(Some(item.seq));
            taken += 1;
            if let Some(json) = ha_json {
                let h: Head<'_> = serde_json::from_slice(&json).unwrap_or_default();
                if let (Some("alert"), Some(device)) = (h.kind, h.device) {
                    let firing = h.state == Some("firing");
                    let (metric, detector) = (h.metric.unwrap_or(""), h.detector.unwrap_or(""));
                    let msgs = self.with_ha(|d| d.on_alert(device, metric, detector, firing));
                    self.queue_ha(msgs);
                }
            }
        }
        Ok(taken)
    }

    async fn next(&mut self) -> Result<Peer, SinkError> {
        self.drain_ha();
        tokio::select! {
            ev = self.events.recv() => match ev {
                Some(Ok(Event::Outgoing(Outgoing::Publish(pkid)))) => {
                    if let Some(Some(seq)) = self.awaiting.pop_front() {
                        self.in_flight.insert(pkid, seq);
                    }
                    Ok(Peer::Nothing)
                }
                Some(Ok(Event::Incoming(Packet::PubAck(a)))) => {
                    Ok(Peer::Acked(self.in_flight.remove(&a.pkid).into_iter().collect()))
                }
                Some(Ok(_)) => Ok(Peer::Nothing),
                Some(Err(e)) => Err(SinkError::Connection(Box::new(e))),
                None => Err(SinkError::ConnectTimeout),
            },
            w = self.live.recv() => match w {
                Ok(w) if w.kind == Kind::Summary => {
                    // Summaries are not durable: when the request queue is full, one is skipped.
                    if !self.summary_topic.is_empty() && self.client.try_publish(&self.summary_topic, self.summary_qos, false, w.json.clone()).is_ok() {
                        self.awaiting.push_back(None);
                    }
                    if let Some(s) = &w.summary {
                        let msgs = self.with_ha(|d| d.on_summary(s));
                        self.queue_ha(msgs);
                    }
                    Ok(Peer::Nothing)
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => Ok(Peer::Nothing),
                Err(broadcast::error::RecvError::Closed) => Ok(Peer::Shutdown),
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
