//! The wire messages (docs/PROTOCOL.md): the envelope every message shares, `hello`, `alert`,
//! `summary`, `gap`, the MQTT `status`, the receiver's `ack`, and the serialised form the hub fans out.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::model::{Alert, AlertState, Summary};

/// Version of the wire messages (`v` field).
pub const PROTOCOL_VERSION: u32 = 1;

/// The appliance's version, sent in `hello`.
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// What a message on the local stream is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Alert,
    Summary,
}

/// One serialised message on the local stream, made once by the hub and shared by every reader.
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

impl Wire {
    /// The local-stream form of an alert transition.
    pub fn alert(node: &str, a: &Alert) -> Self {
        Wire {
            kind: Kind::Alert,
            device: Some(a.device.clone()),
            state: Some(a.state),
            summary: None,
            json: alert_json(node, None, a),
        }
    }

    /// The local-stream form of a summary.
    pub fn summary(node: &str, s: Arc<Summary>) -> Self {
        Wire {
            kind: Kind::Summary,
            device: None,
            state: None,
            json: summary_json(node, None, &s),
            summary: Some(s),
        }
    }
}

/// Which outbox queue a message waits in (and the `lane` of a `gap` notice). Alerts and gap
/// notices are always delivered before summaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Lane {
    Alert,
    Summary,
}

/// Messages the outbox budget dropped, reported to the consumer as a `gap` message.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Gap {
    pub lane: Lane,
    pub from: u64,
    pub to: u64,
    pub count: u64,
    pub reason: &'static str,
}

/// How every gap notice's JSON starts (the outbox recognises them by it and never drops them).
pub const GAP_PREFIX: &[u8] = br#"{"type":"gap""#;

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
    to_json(&Envelope {
        kind,
        v: PROTOCOL_VERSION,
        node,
        seq,
        body,
    })
}

/// Serialising these types cannot fail (no maps with non-string keys, no custom serialisers).
fn to_json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

/// The JSON of an alert message (`seq` only in an outbox).
pub fn alert_json(node: &str, seq: Option<u64>, alert: &Alert) -> String {
    envelope("alert", node, seq, alert)
}

/// The JSON of a summary message (`seq` only in an outbox).
pub fn summary_json(node: &str, seq: Option<u64>, summary: &Summary) -> String {
    envelope("summary", node, seq, summary)
}

/// The JSON of a `gap` notice: messages the outbox budget dropped.
pub fn gap_json(node: &str, seq: u64, gap: &Gap) -> String {
    envelope("gap", node, Some(seq), gap)
}

/// `hello` on `/ws`. Field order is alphabetical, as the protocol has always sent it.
#[derive(Serialize)]
struct LocalHello<'a> {
    node: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    v: u32,
    version: &'static str,
}

/// The first message on `/ws`.
pub fn local_hello_json(node: &str) -> String {
    to_json(&LocalHello {
        node,
        kind: "hello",
        v: PROTOCOL_VERSION,
        version: VERSION,
    })
}

/// How the upstream receiver acknowledges (`ack` in the upstream `hello`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AckKind {
    Seq,
    None,
}

/// `hello` to the upstream receiver: where the outbox stands. Field order is alphabetical.
#[derive(Serialize)]
struct UpstreamHello<'a> {
    ack: AckKind,
    first_unacked: Option<u64>,
    last_seq: u64,
    node: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    v: u32,
    version: &'static str,
}

/// The first message of every upstream connection.
pub fn upstream_hello_json(
    node: &str,
    first_unacked: Option<u64>,
    last_seq: u64,
    ack: AckKind,
) -> String {
    to_json(&UpstreamHello {
        ack,
        first_unacked,
        last_seq,
        node,
        kind: "hello",
        v: PROTOCOL_VERSION,
        version: VERSION,
    })
}

/// The MQTT sink's retained `status` (birth `online`, Last Will `offline`). Alphabetical order.
#[derive(Serialize)]
struct Status<'a> {
    node: &'a str,
    state: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    v: u32,
}

/// The JSON of a `status` message.
pub fn status_json(node: &str, state: &str) -> String {
    to_json(&Status {
        node,
        state,
        kind: "status",
        v: PROTOCOL_VERSION,
    })
}

#[derive(Deserialize)]
struct Incoming {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    seq: Option<u64>,
    #[serde(default)]
    seqs: Vec<u64>,
}

/// What a message from the upstream receiver means.
#[derive(Debug, PartialEq, Eq)]
pub enum FromReceiver {
    /// `{"type":"ack","seq":N}` and/or `"seqs":[..]`: these messages are delivered.
    Ack(Vec<u64>),
    /// Any other well-formed message (ignored).
    Other,
    /// Not a message of this protocol.
    Unreadable,
}

/// Reads a text frame from the upstream receiver.
pub fn parse_from_receiver(text: &str) -> FromReceiver {
    match serde_json::from_str::<Incoming>(text) {
        Ok(m) if m.kind == "ack" => FromReceiver::Ack(m.seq.into_iter().chain(m.seqs).collect()),
        Ok(_) => FromReceiver::Other,
        Err(_) => FromReceiver::Unreadable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hand-built messages of earlier builds (serde_json's sorted `json!` maps), byte for byte.
    #[test]
    fn hello_and_status_are_unchanged_on_the_wire() {
        let old = serde_json::json!({
            "type": "hello", "v": PROTOCOL_VERSION, "node": "n\"1", "version": VERSION,
            "first_unacked": Some(3u64), "last_seq": 9u64, "ack": "seq",
        })
        .to_string();
        assert_eq!(upstream_hello_json("n\"1", Some(3), 9, AckKind::Seq), old);
        let old = serde_json::json!({
            "type": "hello", "v": PROTOCOL_VERSION, "node": "n", "version": VERSION,
            "first_unacked": None::<u64>, "last_seq": 0u64, "ack": "none",
        })
        .to_string();
        assert_eq!(upstream_hello_json("n", None, 0, AckKind::None), old);
        let old = serde_json::json!({
            "type": "hello", "v": PROTOCOL_VERSION, "node": "n", "version": VERSION,
        })
        .to_string();
        assert_eq!(local_hello_json("n"), old);
        let old = serde_json::json!({"type": "status", "v": PROTOCOL_VERSION, "node": "n", "state": "online"})
            .to_string();
        assert_eq!(status_json("n", "online"), old);
    }

    #[test]
    fn envelope_puts_type_version_node_and_seq_first() {
        let g = Gap {
            lane: Lane::Summary,
            from: 2,
            to: 5,
            count: 3,
            reason: "max_bytes",
        };
        let j = gap_json("n", 7, &g);
        assert_eq!(
            j,
            r#"{"type":"gap","v":1,"node":"n","seq":7,"lane":"summary","from":2,"to":5,"count":3,"reason":"max_bytes"}"#
        );
        assert!(j.as_bytes().starts_with(GAP_PREFIX));
        let s = Summary {
            ts: 10,
            interval_ms: 1000,
            devices: Vec::new(),
            vectors: Vec::new(),
        };
        assert_eq!(
            summary_json("n", None, &s),
            r#"{"type":"summary","v":1,"node":"n","ts":10,"interval_ms":1000,"devices":[]}"#
        );
    }

    #[test]
    fn acks_are_read_from_seq_and_seqs() {
        assert_eq!(
            parse_from_receiver(r#"{"type":"ack","seq":4,"seqs":[5,6]}"#),
            FromReceiver::Ack(vec![4, 5, 6])
        );
        assert_eq!(
            parse_from_receiver(r#"{"type":"hello","x":1}"#),
            FromReceiver::Other
        );
        assert_eq!(parse_from_receiver("nope"), FromReceiver::Unreadable);
    }
}
