//! `[[sink]] kind = "prometheus_remote_write"`: summaries and alert transitions from the sink's own
//! outbox as Prometheus remote-write 1.0 requests (protobuf, snappy) to Prometheus, Mimir, Thanos
//! receive or VictoriaMetrics; deleted from the outbox once the receiver answered 2xx.
//!
//! Series: `edgewatch_summary_{mean,std,min,max,count,last}{node,device,metric}` at the summary's
//! time, and `edgewatch_alert_firing{node,device,metric,detector,severity}` = 1 when an alert
//! fires (at `raised_at`) and 0 when it resolves (at `resolved_at`). A 4xx answer (a malformed or
//! out-of-order sample, e.g. a batch repeated after a crash) is not retried, as the spec says;
//! 5xx, 429 and network errors are, with backoff, from the oldest message not yet delivered.

use std::collections::BTreeMap;
use std::path::PathBuf;

use prost::Message;
use serde::Deserialize;

use crate::config::{Dur, OutboxBudget};
use crate::sinks::consumer::{self, Delivery, Output, Peer};
use crate::sources::backoff::Backoff;
use crate::store::outbox::Item;
use crate::store::{Outbox, StoreError};

/// The sink's settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Names the sink's outbox; keep it stable across restarts.
    pub id: String,
    /// The receiver's write endpoint, e.g. `http://prometheus:9090/api/v1/write`.
    pub url: String,
    /// Extra HTTP headers (e.g. `X-Scope-OrgID` for Mimir, `Authorization = "Basic …"`).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// File holding a bearer token (content trimmed), read at each connection.
    #[serde(default)]
    pub bearer_token_file: Option<PathBuf>,
    /// Labels added to every series (e.g. `site = "plant-3"`).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Outbox messages (alerts, summaries) per request.
    #[serde(default = "default_batch")]
    pub batch: usize,
    /// Time limit of one request.
    #[serde(default = "default_timeout")]
    pub timeout: Dur,
    #[serde(default = "default_backoff_min")]
    pub backoff_min: Dur,
    #[serde(default = "default_backoff_max")]
    pub backoff_max: Dur,
    #[serde(default)]
    pub budget: OutboxBudget,
}

fn default_batch() -> usize {
    50
}
fn default_timeout() -> Dur {
    Dur::secs(10)
}
fn default_backoff_min() -> Dur {
    Dur::millis(500)
}
fn default_backoff_max() -> Dur {
    Dur::secs(60)
}

impl Config {
    /// Checks that need no I/O; the error names the field.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            return Err((
                "url",
                format!("{:?} is not an http:// or https:// URL", self.url),
            ));
        }
        if !(1..=10_000).contains(&self.batch) {
            return Err(("batch", "must be 1 to 10000".into()));
        }
        for name in self.labels.keys() {
            let ok = name
                .chars()
                .enumerate()
                .all(|(i, c)| c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit()));
            if !ok || name.is_empty() || name.starts_with("__") {
                return Err(("labels", format!("{name:?} is not a valid label name")));
            }
            if ["node", "device", "metric", "detector", "severity"].contains(&name.as_str()) {
                return Err(("labels", format!("{name:?} is set by edgewatch")));
            }
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("outbox: {0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Http(String),
    #[error("bearer_token_file {path}: {error}")]
    Token { path: String, error: std::io::Error },
}

// The remote-write 1.0 messages (prometheus/prompb types.proto and remote.proto), only the fields
// a sender fills.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WriteRequest {
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct TimeSeries {
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
}

#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, prost::Message)]
pub struct Label {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Sample {
    #[prost(double, tag = "1")]
    pub value: f64,
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

/// The parts of an outbox message the encoding reads.
#[derive(Deserialize)]
struct Outgoing {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    ts: i64,
    #[serde(default)]
    devices: Vec<crate::model::SummaryEntry>,
    #[serde(default)]
    device: String,
    #[serde(default)]
    metric: String,
    #[serde(default)]
    detector: String,
    #[serde(default)]
    severity: String,
    #[serde(default)]
    state: String,
    #[serde(default)]
    raised_at: i64,
    #[serde(default)]
    resolved_at: Option<i64>,
}

/// Turns a batch of outbox messages into one write request: series keyed by their sorted labels,
/// samples in seq order. Gap notices and messages that do not parse carry no series.
pub fn encode(node: &str, extra: &BTreeMap<String, String>, batch: &[Item]) -> WriteRequest {
    let mut series: BTreeMap<Vec<Label>, Vec<Sample>> = BTreeMap::new();
    let mut add = |name: &str, pairs: &[(&str, &str)], ts: i64, value: f64| {
        let mut labels: Vec<Label> = [("__name__", name), ("node", node)]
            .iter()
            .chain(pairs)
            .map(|(k, v)| Label {
                name: k.to_string(),
                value: v.to_string(),
            })
            .chain(extra.iter().map(|(k, v)| Label {
                name: k.clone(),
                value: v.clone(),
            }))
            .collect();
        labels.sort_by(|a, b| a.name.cmp(&b.name));
        series.entry(labels).or_default().push(Sample {
            value,
            timestamp: ts,
        });
    };
    for item in batch {
        let Ok(m) = serde_json::from_slice::<Outgoing>(&item.json) else {
            continue;
        };
        match m.kind.as_str() {
            "summary" => {
                for e in &m.devices {
                    let l = [("device", e.device.as_str()), ("metric", e.metric.as_str())];
                    for (name, v) in [
                        ("edgewatch_summary_mean", e.mean),
                        ("edgewatch_summary_std", e.std),
                        ("edgewatch_summary_min", e.min),
                        ("edgewatch_summary_max", e.max),
                        ("edgewatch_summary_count", e.count as f64),
                        ("edgewatch_summary_last", e.last),
                    ] {
                        add(name, &l, m.ts, v);
                    }
                }
            }
            "alert" => {
                let l = [
                    ("device", m.device.as_str()),
                    ("metric", m.metric.as_str()),
                    ("detector", m.detector.as_str()),
                    ("severity", m.severity.as_str()),
                ];
                if m.state == "resolved" {
                    add(
                        "edgewatch_alert_firing",
                        &l,
                        m.resolved_at.unwrap_or(m.ts),
                        0.0,
                    );
                } else {
                    add("edgewatch_alert_firing", &l, m.raised_at, 1.0);
                }
            }
            _ => {}
        }
    }
    WriteRequest {
        timeseries: series
            .into_iter()
            .map(|(labels, mut samples)| {
                samples.sort_by_key(|s| s.timestamp);
                TimeSeries { labels, samples }
            })
            .collect(),
    }
}

/// The output: one HTTP agent, reused across sessions.
pub struct Sink {
    pub cfg: Config,
    node: String,
    agent: ureq::Agent,
}

impl Sink {
    pub fn new(cfg: Config, node: String) -> Self {
        let agent = ureq::AgentBuilder::new()
            .timeout(cfg.timeout.0)
            .user_agent(concat!("edgewatch/", env!("CARGO_PKG_VERSION")))
            .build();
        Sink { cfg, node, agent }
    }
}

/// A "session": request/response, so it only holds what each request needs.
pub struct Session {
    agent: ureq::Agent,
    url: String,
    node: String,
    labels: BTreeMap<String, String>,
    headers: Vec<(String, String)>,
}

impl Output for Sink {
    type Session = Session;

    fn label(&self) -> (&str, &str) {
        ("prometheus remote write", &self.cfg.url)
    }
    fn summaries(&self) -> bool {
        true
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

    async fn connect(&mut self, _outbox: &Outbox) -> Result<Session, Error> {
        let mut headers: Vec<(String, String)> = self
            .cfg
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if let Some(path) = &self.cfg.bearer_token_file {
            let token = std::fs::read_to_string(path).map_err(|error| Error::Token {
                path: path.display().to_string(),
                error,
            })?;
            headers.push(("Authorization".into(), format!("Bearer {}", token.trim())));
        }
        Ok(Session {
            agent: self.agent.clone(),
            url: self.cfg.url.clone(),
            node: self.node.clone(),
            labels: self.cfg.labels.clone(),
            headers,
        })
    }
}

impl consumer::Session for Session {
    type Error = Error;

    async fn send(&mut self, batch: Vec<Item>) -> Result<usize, Error> {
        let n = batch.len();
        let req = encode(&self.node, &self.labels, &batch);
        if req.timeseries.is_empty() {
            return Ok(n); // gap notices only
        }
        let body = snap::raw::Encoder::new()
            .compress_vec(&req.encode_to_vec())
            .map_err(|e| Error::Http(format!("snappy: {e}")))?;
        let (agent, url, headers) = (self.agent.clone(), self.url.clone(), self.headers.clone());
        let answer = tokio::task::spawn_blocking(move || {
            let mut r = agent
                .post(&url)
                .set("Content-Encoding", "snappy")
                .set("Content-Type", "application/x-protobuf")
                .set("X-Prometheus-Remote-Write-Version", "0.1.0");
            for (k, v) in &headers {
                r = r.set(k, v);
            }
            match r.send_bytes(&body) {
                Ok(_) => Ok(()),
                Err(ureq::Error::Status(code, resp)) => {
                    let text: String = resp
                        .into_string()
                        .unwrap_or_default()
                        .chars()
                        .take(300)
                        .collect();
                    Err((Some(code), text))
                }
                Err(e) => Err((None, e.to_string())),
            }
        })
        .await
        .map_err(|e| Error::Http(format!("request task: {e}")))?;
        match answer {
            Ok(()) => Ok(n),
            // The receiver refuses these samples for good (bad data, out of order, duplicate
            // after a repeat): retrying would block the outbox forever.
            Err((Some(code), text)) if (400..500).contains(&code) && code != 429 => {
                tracing::warn!(url = %self.url, status = code, answer = %text, messages = n, "remote write rejected a batch; not retried");
                Ok(n)
            }
            Err((Some(code), text)) => Err(Error::Http(format!("HTTP {code}: {text}"))),
            Err((None, e)) => Err(Error::Http(e)),
        }
    }

    async fn next(&mut self) -> Result<Peer, Error> {
        std::future::pending().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Lane;

    fn item(seq: u64, json: &str) -> Item {
        Item {
            seq,
            lane: Lane::Alert,
            json: json.as_bytes().to_vec(),
        }
    }

    #[test]
    fn summaries_and_alerts_become_sorted_series() {
        let extra = BTreeMap::from([("site".to_string(), "a".to_string())]);
        let batch = [
            item(
                1,
                r#"{"type":"summary","v":1,"node":"n","seq":1,"ts":2000,"interval_ms":1000,"devices":[{"device":"d","metric":"t","count":3,"mean":2.0,"std":1.0,"min":1.0,"max":3.0,"last":3.0,"total":9}]}"#,
            ),
            item(
                2,
                r#"{"type":"alert","v":1,"node":"n","seq":2,"id":"x","device":"d","metric":"t","detector":"hot","severity":"critical","state":"firing","ts":1500,"value":9.0,"score":1.0,"raised_at":1600,"message":"m"}"#,
            ),
            item(
                3,
                r#"{"type":"alert","v":1,"node":"n","seq":3,"id":"x","device":"d","metric":"t","detector":"hot","severity":"critical","state":"resolved","ts":1700,"value":1.0,"score":0.0,"raised_at":1600,"resolved_at":1800,"message":"m"}"#,
            ),
            item(
                4,
                r#"{"type":"gap","v":1,"node":"n","seq":4,"lane":"summary","from":1,"to":2,"count":1,"reason":"max_bytes"}"#,
            ),
        ];
        let req = encode("n", &extra, &batch);
        assert_eq!(req.timeseries.len(), 7);
        for ts in &req.timeseries {
            let names: Vec<&str> = ts.labels.iter().map(|l| l.name.as_str()).collect();
            let mut sorted = names.clone();
            sorted.sort();
            assert_eq!(names, sorted);
            assert_eq!(names[0], "__name__");
            assert!(names.contains(&"site") && names.contains(&"node"));
        }
        let firing = req
            .timeseries
            .iter()
            .find(|t| t.labels[0].value == "edgewatch_alert_firing")
            .expect("alert series");
        let points: Vec<(i64, f64)> = firing
            .samples
            .iter()
            .map(|s| (s.timestamp, s.value))
            .collect();
        assert_eq!(points, vec![(1600, 1.0), (1800, 0.0)]);
        let mean = req
            .timeseries
            .iter()
            .find(|t| t.labels[0].value == "edgewatch_summary_mean")
            .expect("mean series");
        assert_eq!(
            (mean.samples[0].timestamp, mean.samples[0].value),
            (2000, 2.0)
        );
        // The protobuf survives a round trip through prost and snappy.
        let wire = snap::raw::Encoder::new()
            .compress_vec(&req.encode_to_vec())
            .expect("snappy");
        let back = snap::raw::Decoder::new()
            .decompress_vec(&wire)
            .expect("unsnappy");
        assert_eq!(WriteRequest::decode(back.as_slice()).expect("decode"), req);
    }

    #[test]
    fn check_names_the_field() {
        let mut c: Config = toml::from_str(
            r#"id = "rw"
url = "ftp://x""#,
        )
        .expect("parse");
        assert_eq!(c.check().map_err(|e| e.0), Err("url"));
        c.url = "http://x/api/v1/write".into();
        c.labels.insert("node".into(), "x".into());
        assert_eq!(c.check().map_err(|e| e.0), Err("labels"));
        c.labels.clear();
        assert_eq!(c.check(), Ok(()));
    }
}
