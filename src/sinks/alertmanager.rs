//! Alertmanager output of the outbox consumer: alert transitions to `/api/v2/alerts`, and every
//! firing alert re-sent on an interval (kept beside the outbox, so a restart re-sends them too).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};

use crate::config::AlertmanagerSink;
use crate::model::now_ms;
use crate::sinks::consumer::{self, Delivery, Output, Peer};
use crate::sinks::http::{rfc3339, Client, PushError};
use crate::sources::backoff::Backoff;
use crate::store::outbox::Item;
use crate::store::Outbox;

/// `alertname` of anomaly alerts and of outbox gap notices.
const ALERTNAME: &str = "EdgewatchAnomaly";
const GAP_ALERTNAME: &str = "EdgewatchOutboxGap";

/// A queued message as the outbox holds it (the wire JSON of `protocol.rs`).
#[derive(Debug, Deserialize, Default)]
#[serde(default)]
pub(crate) struct Msg {
    #[serde(rename = "type")]
    pub kind: String,
    pub node: String,
    pub seq: u64,
    pub id: String,
    pub device: String,
    pub metric: String,
    pub detector: String,
    pub severity: String,
    pub state: String,
    pub ts: i64,
    pub value: f64,
    pub score: f64,
    pub anomaly: f64,
    pub raised_at: i64,
    pub resolved_at: Option<i64>,
    pub message: String,
    // gap notices
    pub lane: String,
    pub from: u64,
    pub to: u64,
    pub count: u64,
    pub reason: String,
}

impl Msg {
    pub fn parse(json: &[u8]) -> Option<Msg> {
        serde_json::from_slice(json).ok()
    }
}

pub struct Alertmanager {
    cfg: AlertmanagerSink,
    node: String,
    client: Client,
}

impl Alertmanager {
    pub fn new(cfg: AlertmanagerSink, node: String) -> Result<Self, PushError> {
        let client = Client::new(
            &cfg.headers,
            &cfg.header_files,
            cfg.ca_file.as_deref(),
            cfg.timeout.0,
        )?;
        Ok(Alertmanager { cfg, node, client })
    }

    pub fn id(&self) -> &str {
        &self.cfg.id
    }
}

/// The Alertmanager form of one queued message; `None` for what it does not carry.
fn to_alert(m: &Msg, node: &str, ends_ahead: i64, generator: Option<&str>) -> Option<Value> {
    let now = now_ms();
    let mut a = match m.kind.as_str() {
        "alert" => {
            let ends = match (m.state.as_str(), m.resolved_at) {
                ("resolved", Some(t)) => t,
                ("resolved", None) => now,
                _ => now + ends_ahead,
            };
            json!({
                "labels": {
                    "alertname": ALERTNAME,
                    "node": if m.node.is_empty() { node } else { &m.node },
                    "device": m.device,
                    "metric": m.metric,
                    "detector": m.detector,
                    "severity": m.severity,
                },
                "annotations": {
                    "summary": format!("{} {}: {}", m.device, m.metric, m.message),
                    "message": m.message,
                    "value": m.value.to_string(),
                    "score": m.score.to_string(),
                    "anomaly": m.anomaly.to_string(),
                    "alert_id": m.id,
                },
                "startsAt": rfc3339(m.raised_at),
                "endsAt": rfc3339(ends),
            })
        }
        "gap" => json!({
            "labels": {
                "alertname": GAP_ALERTNAME,
                "node": node,
                "lane": m.lane,
                "severity": "warning",
            },
            "annotations": {
                "summary": format!("{} {} messages dropped from the outbox ({}), seq {}..{}",
                    m.count, m.lane, m.reason, m.from, m.to),
            },
            "startsAt": rfc3339(now),
            "endsAt": rfc3339(now + ends_ahead),
        }),
        _ => return None,
    };
    if let (Some(g), Some(o)) = (generator, a.as_object_mut()) {
        o.insert("generatorURL".into(), Value::String(g.to_string()));
    }
    Some(a)
}

pub struct Session {
    client: Client,
    url: String,
    node: String,
    outbox: Outbox,
    batch: usize,
    resend: Duration,
    generator: Option<String>,
    /// Firing alerts by device, metric and detector: the queued JSON of their `firing` message.
    firing: BTreeMap<String, Vec<u8>>,
    next_resend: tokio::time::Instant,
}

impl Session {
    fn ends_ahead(&self) -> i64 {
        4 * self.resend.as_millis().min(i64::MAX as u128 / 4) as i64
    }

    async fn post(&self, alerts: Vec<Value>) -> Result<(), PushError> {
        let body = serde_json::to_vec(&alerts).unwrap_or_default();
        self.client
            .post(
                self.url.clone(),
                vec![("Content-Type", "application/json".into())],
                body,
            )
            .await
    }

    /// Sends every firing alert again with a fresh `endsAt`.
    async fn resend_firing(&mut self) -> Result<(), PushError> {
        let ahead = self.ends_ahead();
        let all: Vec<Value> = self
            .firing
            .values()
            .filter_map(|j| Msg::parse(j))
            .filter_map(|m| to_alert(&m, &self.node, ahead, self.generator.as_deref()))
            .collect();
        for chunk in all.chunks(self.batch.max(1)) {
            self.post(chunk.to_vec()).await?;
        }
        Ok(())
    }
}

impl Output for Alertmanager {
    type Session = Session;

    fn label(&self) -> (&str, &str) {
        ("alertmanager sink", &self.cfg.url)
    }

    fn summaries(&self) -> bool {
        false
    }

    fn window(&self) -> usize {
        self.cfg.batch
    }

    fn delivery(&self) -> Delivery {
        Delivery::Written
    }

    fn backoff(&self) -> Backoff {
        Backoff::new(self.cfg.backoff_min.0, self.cfg.backoff_max.0)
    }

    async fn connect(&mut self, outbox: &Outbox) -> Result<Session, PushError> {
        let firing: BTreeMap<String, Vec<u8>> = outbox.kept()?.into_iter().collect();
        let url = format!("{}/api/v2/alerts", self.cfg.url.trim_end_matches('/'));
        let mut s = Session {
            client: self.client.clone(),
            url,
            node: self.node.clone(),
            outbox: outbox.clone(),
            batch: self.cfg.batch,
            resend: self.cfg.resend_interval.0,
            generator: self.cfg.generator_url.clone(),
            firing,
            next_resend: tokio::time::Instant::now() + self.cfg.resend_interval.0,
        };
        // Probe the receiver and restore what fired before a restart or an outage at once.
        s.resend_firing().await?;
        tracing::info!(sink = %self.cfg.id, url = %self.cfg.url, firing = s.firing.len(), "alertmanager sink connected");
        Ok(s)
    }
}

impl consumer::Session for Session {
    type Error = PushError;

    async fn send(&mut self, batch: Vec<Item>) -> Result<usize, PushError> {
        let n = batch.len();
        let ahead = self.ends_ahead();
        let msgs: Vec<(Msg, Vec<u8>)> = batch
            .into_iter()
            .filter_map(|i| Msg::parse(&i.json).map(|m| (m, i.json)))
            .collect();
        let alerts: Vec<Value> = msgs
            .iter()
            .filter_map(|(m, _)| to_alert(m, &self.node, ahead, self.generator.as_deref()))
            .collect();
        if !alerts.is_empty() {
            match self.post(alerts).await {
                Ok(()) => {}
                Err(e) if e.rejected() => {
                    tracing::error!(url = %self.url, error = %e, count = n, "alertmanager refused these alerts; they are dropped");
                }
                Err(e) => return Err(e),
            }
        }
        for (m, json) in msgs {
            if m.kind != "alert" {
                continue;
            }
            // Keyed like Alertmanager's identity (one firing alert per device, metric and
            // detector): a new firing replaces one whose resolution a kill -9 lost with the
            // shard's state, and any later transition of that detector ends it.
            let key = format!("{}\u{1f}{}\u{1f}{}", m.device, m.metric, m.detector);
            if m.state == "firing" {
                self.outbox.keep(&key, &json)?;
                self.firing.insert(key, json);
            } else {
                self.outbox.forget(&key)?;
                self.firing.remove(&key);
            }
        }
        Ok(n)
    }

    async fn next(&mut self) -> Result<Peer, PushError> {
        tokio::time::sleep_until(self.next_resend).await;
        self.resend_firing().await?;
        self.next_resend = tokio::time::Instant::now() + self.resend;
        Ok(Peer::Nothing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn firing_and_resolved_alerts_map_to_alertmanager_fields() {
        let j = br#"{"type":"alert","v":1,"node":"n1","seq":4,"id":"a-1","device":"d","metric":"t","detector":"zscore","severity":"critical","state":"resolved","ts":1000,"value":9.5,"score":7.1,"anomaly":0.9,"raised_at":1000,"resolved_at":61000,"message":"|z| 7.1 > 6"}"#;
        let m = Msg::parse(j).expect("parses");
        let a = to_alert(&m, "other", 240_000, Some("http://pi:8080/")).expect("an alert");
        assert_eq!(a["labels"]["node"], "n1");
        assert_eq!(a["labels"]["severity"], "critical");
        assert_eq!(a["labels"]["alertname"], ALERTNAME);
        assert_eq!(a["startsAt"], "1970-01-01T00:00:01Z");
        assert_eq!(a["endsAt"], "1970-01-01T00:01:01Z");
        assert_eq!(a["annotations"]["value"], "9.5");
        assert_eq!(a["generatorURL"], "http://pi:8080/");
        assert!(to_alert(&Msg::default(), "n", 1, None).is_none());
    }
}
