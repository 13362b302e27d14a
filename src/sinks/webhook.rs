//! Webhook output of the outbox consumer: each alert transition POSTed to a URL, as the `/ws`
//! JSON or through a `{{field}}` body template (ntfy, Slack, Discord, Mattermost, Home Assistant).

use crate::config::WebhookSink;
use crate::sinks::alertmanager::Msg;
use crate::sinks::consumer::{self, Delivery, Output, Peer};
use crate::sinks::http::{rfc3339, Client, PushError};
use crate::sources::backoff::Backoff;
use crate::store::outbox::Item;
use crate::store::Outbox;

/// Placeholders a template may use.
const FIELDS: &[&str] = &[
    "node",
    "id",
    "device",
    "metric",
    "detector",
    "severity",
    "state",
    "value",
    "score",
    "anomaly",
    "message",
    "ts",
    "ts_rfc3339",
    "raised_at",
    "raised_at_rfc3339",
    "resolved_at",
];

/// A template split into literal text and placeholders.
#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(String),
    Field(&'static str),
}

fn parse(t: &str) -> Result<Vec<Part>, String> {
    let mut parts = Vec::new();
    let mut rest = t;
    while let Some(i) = rest.find("{{") {
        if i > 0 {
            parts.push(Part::Text(rest[..i].to_string()));
        }
        let after = &rest[i + 2..];
        let Some(j) = after.find("}}") else {
            return Err(format!(
                "`{{{{` at byte {} is not closed by `}}}}`",
                t.len() - rest.len() + i
            ));
        };
        let name = after[..j].trim();
        let Some(f) = FIELDS.iter().find(|f| **f == name) else {
            return Err(format!(
                "unknown placeholder {{{{{name}}}}}; known: {}",
                FIELDS.join(", ")
            ));
        };
        parts.push(Part::Field(f));
        rest = &after[j + 2..];
    }
    if !rest.is_empty() {
        parts.push(Part::Text(rest.to_string()));
    }
    Ok(parts)
}

/// Checks a body template (config validation).
pub fn check_template(t: &str) -> Result<(), String> {
    parse(t).map(|_| ())
}

fn field(m: &Msg, f: &str) -> String {
    match f {
        "node" => m.node.clone(),
        "id" => m.id.clone(),
        "device" => m.device.clone(),
        "metric" => m.metric.clone(),
        "detector" => m.detector.clone(),
        "severity" => m.severity.clone(),
        "state" => m.state.clone(),
        "value" => m.value.to_string(),
        "score" => m.score.to_string(),
        "anomaly" => m.anomaly.to_string(),
        "message" => m.message.clone(),
        "ts" => m.ts.to_string(),
        "ts_rfc3339" => rfc3339(m.ts),
        "raised_at" => m.raised_at.to_string(),
        "raised_at_rfc3339" => rfc3339(m.raised_at),
        "resolved_at" => m.resolved_at.map(|t| t.to_string()).unwrap_or_default(),
        _ => String::new(),
    }
}

fn render(parts: &[Part], m: &Msg, json_escape: bool) -> String {
    let mut out = String::new();
    for p in parts {
        match p {
            Part::Text(t) => out.push_str(t),
            Part::Field(f) => {
                let v = field(m, f);
                if json_escape {
                    // A JSON string's inside: the quoted form without its quotes.
                    let q = serde_json::to_string(&v).unwrap_or_default();
                    out.push_str(q.get(1..q.len().saturating_sub(1)).unwrap_or(""));
                } else {
                    out.push_str(&v);
                }
            }
        }
    }
    out
}

pub struct Webhook {
    cfg: WebhookSink,
    client: Client,
    template: Option<Vec<Part>>,
}

impl Webhook {
    pub fn new(cfg: WebhookSink) -> Result<Self, PushError> {
        let client = Client::new(
            &cfg.headers,
            &cfg.header_files,
            cfg.ca_file.as_deref(),
            cfg.timeout.0,
        )?;
        let template = match &cfg.template {
            Some(t) => Some(parse(t).map_err(PushError::Setup)?),
            None => None,
        };
        Ok(Webhook {
            cfg,
            client,
            template,
        })
    }

    pub fn id(&self) -> &str {
        &self.cfg.id
    }
}

pub struct Session {
    client: Client,
    url: String,
    content_type: String,
    template: Option<Vec<Part>>,
    gaps: bool,
    /// Delivered by a `send` that then failed: handed to the consumer by `salvage`.
    done: Vec<u64>,
}

impl Session {
    /// The request body of one queued message, or `None` to skip it.
    fn body(&self, item: &Item) -> Option<Vec<u8>> {
        let m = Msg::parse(&item.json)?;
        match (&self.template, m.kind.as_str()) {
            (None, "alert") => Some(item.json.clone()),
            (None, "gap") if self.gaps => Some(item.json.clone()),
            (Some(t), "alert") => {
                let json = self.content_type.contains("json");
                Some(render(t, &m, json).into_bytes())
            }
            _ => None,
        }
    }
}

impl Output for Webhook {
    type Session = Session;

    fn label(&self) -> (&str, &str) {
        ("webhook sink", &self.cfg.url)
    }

    fn summaries(&self) -> bool {
        false
    }

    fn window(&self) -> usize {
        64
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
            url: self.cfg.url.clone(),
            content_type: self.cfg.content_type.clone(),
            template: self.template.clone(),
            gaps: self.cfg.gaps,
            done: Vec::new(),
        })
    }
}

impl consumer::Session for Session {
    type Error = PushError;

    async fn send(&mut self, batch: Vec<Item>) -> Result<usize, PushError> {
        self.done.clear();
        let n = batch.len();
        for item in &batch {
            if let Some(body) = self.body(item) {
                let r = self
                    .client
                    .post(
                        self.url.clone(),
                        vec![("Content-Type", self.content_type.clone())],
                        body,
                    )
                    .await;
                match r {
                    Ok(()) => {}
                    Err(e) if e.rejected() => {
                        tracing::error!(url = %self.url, seq = item.seq, error = %e, "webhook refused this alert; it is dropped");
                    }
                    Err(e) => return Err(e),
                }
            }
            self.done.push(item.seq);
        }
        Ok(n)
    }

    async fn next(&mut self) -> Result<Peer, PushError> {
        std::future::pending().await
    }

    async fn salvage(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_substitute_fields_json_escaped_and_reject_unknown_ones() {
        let t = parse(r#"{"text":"{{device}}/{{metric}} {{state}}: {{message}}"}"#).expect("ok");
        let m = Msg {
            device: "d\"1".into(),
            metric: "t".into(),
            state: "firing".into(),
            message: "|z| 7 > 6\n".into(),
            ..Msg::default()
        };
        let out = render(&t, &m, true);
        assert_eq!(out, r#"{"text":"d\"1/t firing: |z| 7 > 6\n"}"#);
        let v: serde_json::Value = serde_json::from_str(&out).expect("valid JSON");
        assert_eq!(v["text"], "d\"1/t firing: |z| 7 > 6\n");
        assert_eq!(
            render(&t, &m, false),
            "{\"text\":\"d\"1/t firing: |z| 7 > 6\n\"}"
        );
        assert!(check_template("{{nope}}")
            .unwrap_err()
            .contains("unknown placeholder"));
        assert!(check_template("{{device")
            .unwrap_err()
            .contains("not closed"));
    }
}
