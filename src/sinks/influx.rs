//! InfluxDB output of the outbox consumer: summaries, alerts and gap notices as line protocol,
//! one gzipped request per batch to the v1 (`/write`) or v2 (`/api/v2/write`) API.

use std::fmt::Write as _;
use std::io::Write as _;

use serde::Deserialize;

use crate::analysis::samples::Block;
use crate::config::{InfluxApi, InfluxSink, SampleMode};
use crate::model::Summary;
use crate::sinks::alertmanager::Msg;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use crate::sinks::consumer::{self, Delivery, DeliveryStats, Output, Peer};
use crate::sinks::http::{read_secret, Client, PushError};
use crate::sources::backoff::Backoff;
use crate::store::outbox::Item;
use crate::store::Outbox;

pub struct Influx {
    cfg: InfluxSink,
    node: String,
    client: Client,
    /// The write URL with its query (database or org/bucket, precision, v1 credentials).
    url: String,
    /// Extra headers: v2's token.
    auth: Option<String>,
    /// Where request bytes are counted (`/api/status` → `sinks[].wire_bytes`).
    stats: Option<Arc<DeliveryStats>>,
}

/// Percent-encodes a query value (everything but unreserved characters).
fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

impl Influx {
    pub fn new(cfg: InfluxSink, node: String) -> Result<Self, PushError> {
        let client = Client::new(
            &cfg.headers,
            &cfg.header_files,
            cfg.ca_file.as_deref(),
            cfg.timeout.0,
        )?;
        let base = cfg.url.trim_end_matches('/');
        let (url, auth) = match cfg.api {
            InfluxApi::V1 => {
                let mut u = format!(
                    "{base}/write?precision=ns&db={}",
                    query_escape(cfg.database.as_deref().unwrap_or_default())
                );
                if let Some(rp) = &cfg.retention_policy {
                    let _ = write!(u, "&rp={}", query_escape(rp));
                }
                if let Some(user) = &cfg.username {
                    let _ = write!(u, "&u={}", query_escape(user));
                    if let Some(f) = &cfg.password_file {
                        let _ = write!(u, "&p={}", query_escape(&read_secret(f)?));
                    }
                }
                (u, None)
            }
            InfluxApi::V2 => {
                let u = format!(
                    "{base}/api/v2/write?precision=ns&org={}&bucket={}",
                    query_escape(cfg.org.as_deref().unwrap_or_default()),
                    query_escape(cfg.bucket.as_deref().unwrap_or_default())
                );
                let auth = match &cfg.token_file {
                    Some(f) => Some(format!("Token {}", read_secret(f)?)),
                    None => None,
                };
                (u, auth)
            }
        };
        Ok(Influx {
            cfg,
            node,
            client,
            url,
            auth,
            stats: None,
        })
    }

    pub fn id(&self) -> &str {
        &self.cfg.id
    }

    /// Counts the bytes of accepted requests in these stats.
    pub fn count_into(&mut self, stats: Arc<DeliveryStats>) {
        self.stats = Some(stats);
    }
}

/// Escapes a measurement name, tag key or tag value (commas, spaces, `=`).
fn tag(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            ',' | ' ' | '=' => {
                out.push('\\');
                out.push(c);
            }
            '\n' | '\r' => out.push(' '),
            _ => out.push(c),
        }
    }
}

/// A string field value, quoted.
fn string_field(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '\n' | '\r' => out.push(' '),
            _ => out.push(c),
        }
    }
    out.push('"');
}

/// Fields of one line: floats (non-finite ones left out, InfluxDB refuses them), integers, strings.
struct Fields<'a> {
    out: &'a mut String,
    first: bool,
}

impl Fields<'_> {
    fn sep(&mut self, k: &str) {
        self.out.push(if self.first { ' ' } else { ',' });
        self.first = false;
        tag(self.out, k);
        self.out.push('=');
    }
    fn float(&mut self, k: &str, v: f64) -> &mut Self {
        if v.is_finite() {
            self.sep(k);
            let _ = write!(self.out, "{v:?}");
        }
        self
    }
    fn int(&mut self, k: &str, v: i64) -> &mut Self {
        self.sep(k);
        let _ = write!(self.out, "{v}i");
        self
    }
    fn string(&mut self, k: &str, v: &str) -> &mut Self {
        self.sep(k);
        string_field(self.out, v);
        self
    }
}

fn head(out: &mut String, prefix: &str, name: &str, tags: &[(&str, &str)]) {
    tag(out, prefix);
    tag(out, name);
    for (k, v) in tags {
        if v.is_empty() {
            continue; // an empty tag value is invalid line protocol
        }
        out.push(',');
        tag(out, k);
        out.push('=');
        tag(out, v);
    }
}

const NS_PER_MS: i64 = 1_000_000;

/// A point's time in ns: the event's millisecond plus its outbox seq below the millisecond. Two
/// transitions of one series in the same millisecond stay two points (InfluxDB keys points by
/// series and time), and a message sent again after a failure lands on the same point (idempotent).
fn unique_ns(ms: i64, seq: u64) -> i64 {
    ms.saturating_mul(NS_PER_MS) + (seq % NS_PER_MS as u64) as i64
}

#[derive(Deserialize)]
struct SummaryMsg {
    #[serde(default)]
    node: String,
    #[serde(flatten)]
    summary: Summary,
}

/// Most sample blocks (`analysis::samples::BLOCK_ROWS` rows each) in one request.
const SAMPLE_BLOCKS_PER_REQUEST: usize = 50;

/// Lines of a sample block: `<prefix>sample value=` per raw sample at its own time, or
/// `<prefix>sample_interval min,mean,max,last,count,interval_ms` at each interval's start.
fn encode_samples(out: &mut String, prefix: &str, node: &str, b: &Block) {
    let names = |i: u32| b.series.get(i as usize);
    for r in &b.raw {
        let Some((device, metric)) = names(r.series) else {
            continue;
        };
        if !r.value.is_finite() {
            continue;
        }
        head(
            out,
            prefix,
            "sample",
            &[("node", node), ("device", device), ("metric", metric)],
        );
        Fields { out, first: true }.float("value", r.value);
        let _ = writeln!(out, " {}", r.ts.saturating_mul(NS_PER_MS));
    }
    for s in &b.stats {
        let Some((device, metric)) = names(s.series) else {
            continue;
        };
        if s.count == 0 || !s.sum.is_finite() {
            continue;
        }
        head(
            out,
            prefix,
            "sample_interval",
            &[("node", node), ("device", device), ("metric", metric)],
        );
        Fields { out, first: true }
            .float("min", s.min)
            .float("mean", s.sum / f64::from(s.count))
            .float("max", s.max)
            .float("last", s.last)
            .int("count", i64::from(s.count))
            .int("interval_ms", b.interval_ms);
        let _ = writeln!(out, " {}", s.start.saturating_mul(NS_PER_MS));
    }
}

/// Appends the lines of one queued message (JSON of `protocol.rs`, or a sample block) to `out`.
pub fn encode(out: &mut String, prefix: &str, node: &str, json: &[u8]) {
    if json.starts_with(crate::analysis::samples::MAGIC) {
        match Block::decode(json) {
            Some(b) => encode_samples(out, prefix, node, &b),
            None => tracing::error!("a damaged sample block in the outbox is skipped"),
        }
        return;
    }
    if json.starts_with(br#"{"type":"summary""#) {
        let Ok(s) = serde_json::from_slice::<SummaryMsg>(json) else {
            return;
        };
        let node = if s.node.is_empty() { node } else { &s.node };
        for e in &s.summary.devices {
            head(
                out,
                prefix,
                "summary",
                &[("node", node), ("device", &e.device), ("metric", &e.metric)],
            );
            let mut f = Fields { out, first: true };
            f.int("count", e.count as i64)
                .float("mean", e.mean)
                .float("std", e.std)
                .float("min", e.min)
                .float("max", e.max)
                .float("last", e.last)
                .int("total", e.total as i64)
                .int("interval_ms", s.summary.interval_ms as i64);
            let _ = writeln!(out, " {}", s.summary.ts.saturating_mul(NS_PER_MS));
        }
        return;
    }
    let Some(m) = Msg::parse(json) else { return };
    let node = if m.node.is_empty() { node } else { &m.node };
    match m.kind.as_str() {
        "alert" => {
            head(
                out,
                prefix,
                "alert",
                &[
                    ("node", node),
                    ("device", &m.device),
                    ("metric", &m.metric),
                    ("detector", &m.detector),
                    ("severity", &m.severity),
                ],
            );
            let firing = m.state == "firing";
            let mut f = Fields { out, first: true };
            f.int("firing", i64::from(firing))
                .string("state", &m.state)
                .float("value", m.value)
                .float("score", m.score)
                .float("anomaly", m.anomaly)
                .int("sample_ts", m.ts)
                .string("message", &m.message)
                .string("id", &m.id);
            let at = if firing {
                m.raised_at
            } else {
                m.resolved_at.unwrap_or(m.ts)
            };
            let _ = writeln!(out, " {}", unique_ns(at, m.seq));
        }
        "gap" => {
            head(out, prefix, "gap", &[("node", node), ("lane", &m.lane)]);
            let mut f = Fields { out, first: true };
            f.int("count", m.count as i64)
                .int("from", m.from as i64)
                .int("to", m.to as i64)
                .string("reason", &m.reason);
            let _ = writeln!(out, " {}", unique_ns(crate::model::now_ms(), m.seq));
        }
        _ => {}
    }
}

pub struct Session {
    client: Client,
    url: String,
    auth: Option<String>,
    gzip: bool,
    prefix: String,
    node: String,
    stats: Option<Arc<DeliveryStats>>,
}

impl Output for Influx {
    type Session = Session;

    fn label(&self) -> (&str, &str) {
        ("influxdb sink", &self.cfg.url)
    }

    fn summaries(&self) -> bool {
        true
    }

    fn window(&self) -> usize {
        // A sample block holds up to 1000 points: keep a request's body to a few MB.
        if self.cfg.samples == SampleMode::None {
            self.cfg.batch
        } else {
            self.cfg.batch.min(SAMPLE_BLOCKS_PER_REQUEST)
        }
    }

    fn delivery(&self) -> Delivery {
        Delivery::Written
    }

    fn backoff(&self) -> Backoff {
        Backoff::new(self.cfg.backoff_min.0, self.cfg.backoff_max.0)
    }

    async fn connect(&mut self, _: &Outbox) -> Result<Session, PushError> {
        Ok(Session {
            client: self.client.clone(),
            url: self.url.clone(),
            auth: self.auth.clone(),
            gzip: self.cfg.gzip,
            prefix: self.cfg.measurement_prefix.clone(),
            node: self.node.clone(),
            stats: self.stats.clone(),
        })
    }
}

impl consumer::Session for Session {
    type Error = PushError;

    async fn send(&mut self, batch: Vec<Item>) -> Result<usize, PushError> {
        let n = batch.len();
        let mut text = String::new();
        for i in &batch {
            encode(&mut text, &self.prefix, &self.node, &i.json);
        }
        if text.is_empty() {
            return Ok(n);
        }
        let mut headers = vec![("Content-Type", "text/plain; charset=utf-8".to_string())];
        if let Some(a) = &self.auth {
            headers.push(("Authorization", a.clone()));
        }
        let body = if self.gzip {
            headers.push(("Content-Encoding", "gzip".into()));
            let mut gz = flate2::write::GzEncoder::new(
                Vec::with_capacity(text.len() / 4),
                flate2::Compression::fast(),
            );
            gz.write_all(text.as_bytes())
                .and_then(|_| gz.finish())
                .map_err(|e| PushError::Transport(format!("gzip: {e}")))?
        } else {
            text.into_bytes()
        };
        let len = body.len() as u64;
        match self.client.post(self.url.clone(), headers, body).await {
            Ok(()) => {
                if let Some(s) = &self.stats {
                    s.wire_bytes.fetch_add(len, Relaxed);
                }
                Ok(n)
            }
            Err(e) if e.rejected() => {
                tracing::error!(url = %self.url, error = %e, count = n, "influxdb refused these points; they are dropped");
                Ok(n)
            }
            Err(e) => Err(e),
        }
    }

    async fn next(&mut self) -> Result<Peer, PushError> {
        std::future::pending().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_alerts_and_gaps_become_escaped_line_protocol() {
        let mut out = String::new();
        let s = br#"{"type":"summary","v":1,"node":"n 1","seq":2,"ts":5000,"interval_ms":1000,"devices":[{"device":"d,1","metric":"t=x","count":3,"mean":1.5,"std":0.5,"min":1.0,"max":2.0,"last":2.0,"total":30}]}"#;
        encode(&mut out, "edgewatch_", "other", s);
        assert_eq!(
            out,
            "edgewatch_summary,node=n\\ 1,device=d\\,1,metric=t\\=x count=3i,mean=1.5,std=0.5,min=1.0,max=2.0,last=2.0,total=30i,interval_ms=1000i 5000000000\n"
        );
        out.clear();
        let a = br#"{"type":"alert","v":1,"node":"n","seq":3,"id":"a1","device":"d","metric":"t","detector":"zscore","severity":"warning","state":"firing","ts":900,"value":9.0,"score":7.0,"anomaly":0.8,"raised_at":1000,"message":"say \"hi\""}"#;
        encode(&mut out, "e_", "n", a);
        assert_eq!(
            out,
            "e_alert,node=n,device=d,metric=t,detector=zscore,severity=warning firing=1i,state=\"firing\",value=9.0,score=7.0,anomaly=0.8,sample_ts=900i,message=\"say \\\"hi\\\"\",id=\"a1\" 1000000003\n"
        );
        assert_eq!(query_escape("a b&c"), "a%20b%26c");
    }

    #[test]
    fn sample_blocks_become_one_line_per_sample_or_interval() {
        use crate::analysis::samples::{Raw, Stat};
        let b = Block {
            interval_ms: 0,
            series: vec![("d 1".into(), "t".into())],
            raw: vec![
                Raw {
                    series: 0,
                    ts: 5,
                    value: 1.5,
                },
                Raw {
                    series: 0,
                    ts: 6,
                    value: f64::NAN,
                },
                Raw {
                    series: 9,
                    ts: 7,
                    value: 1.0,
                },
            ],
            stats: vec![],
        };
        let mut out = String::new();
        encode(&mut out, "e_", "n", &b.encode());
        assert_eq!(
            out,
            "e_sample,node=n,device=d\\ 1,metric=t value=1.5 5000000\n"
        );
        let b = Block {
            interval_ms: 10_000,
            series: vec![("d".into(), "t".into())],
            raw: vec![],
            stats: vec![Stat {
                series: 0,
                start: 10_000,
                min: 1.0,
                max: 4.0,
                sum: 10.0,
                last: 2.0,
                count: 4,
            }],
        };
        out.clear();
        encode(&mut out, "e_", "n", &b.encode());
        assert_eq!(
            out,
            "e_sample_interval,node=n,device=d,metric=t min=1.0,mean=2.5,max=4.0,last=2.0,count=4i,interval_ms=10000i 10000000000\n"
        );
    }
}
