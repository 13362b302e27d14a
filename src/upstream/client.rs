//! One upstream connection at a time: hello, then a window of outbox messages (alerts first),
//! acks delete them; pings detect a dead peer; on any failure, reconnect with jittered backoff.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::header::AUTHORIZATION;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::Connector;

use super::{UpstreamError, UpstreamStats};
use crate::config::{AckMode, UpstreamConfig};
use crate::hub::PROTOCOL_VERSION;
use crate::sources::backoff::Backoff;
use crate::store::{Lane, Outbox};

/// What the sender needs, built once at start-up.
pub struct Upstream {
    pub cfg: UpstreamConfig,
    pub node: String,
    pub outbox: Outbox,
    pub flushed: watch::Receiver<u64>,
    pub stats: Arc<UpstreamStats>,
    pub token: Option<String>,
    pub tls: Option<Arc<rustls::ClientConfig>>,
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

/// Applies an `ack` message (others are ignored).
fn take_acks(
    up: &Upstream,
    in_flight: &mut BTreeSet<u64>,
    text: &str,
) -> Result<(), UpstreamError> {
    let Ok(m) = serde_json::from_str::<Incoming>(text) else {
        tracing::debug!(%text, "ignoring unreadable message from upstream");
        return Ok(());
    };
    if m.kind == "ack" {
        for seq in m.seq.into_iter().chain(m.seqs) {
            in_flight.remove(&seq);
            if up.outbox.ack(seq)? {
                up.stats.acked.fetch_add(1, Relaxed);
            }
        }
    }
    Ok(())
}

/// Runs until the process stops.
pub async fn run(mut up: Upstream) {
    let mut backoff = Backoff::with_jitter(
        up.cfg.backoff_min.0,
        up.cfg.backoff_max.0,
        up.cfg.backoff_jitter,
    );
    loop {
        let r = session(&mut up, &mut backoff).await;
        up.stats.connected.store(false, Relaxed);
        match r {
            Ok(()) => tracing::info!(url = %up.cfg.url, "upstream closed the connection"),
            Err(e) => {
                tracing::warn!(url = %up.cfg.url, error = %e, "upstream connection failed");
                up.stats.set_error(e.to_string());
            }
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

async fn session(up: &mut Upstream, backoff: &mut Backoff) -> Result<(), UpstreamError> {
    let cfg = &up.cfg;
    let mut req = cfg
        .url
        .as_str()
        .into_client_request()
        .map_err(|e| UpstreamError::Connect(e.to_string()))?;
    if let Some(t) = &up.token {
        let v = format!("Bearer {t}")
            .parse()
            .map_err(|_| UpstreamError::Token("the token is not a valid header value".into()))?;
        req.headers_mut().insert(AUTHORIZATION, v);
    }
    let connector = up.tls.clone().map(Connector::Rustls);
    let (ws, _) = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::connect_async_tls_with_config(req, None, false, connector),
    )
    .await
    .map_err(|_| UpstreamError::Connect("timed out".into()))??;
    let (mut tx, mut rx) = ws.split();

    let hello = serde_json::json!({
        "type": "hello", "v": PROTOCOL_VERSION, "node": up.node, "version": env!("CARGO_PKG_VERSION"),
        "first_unacked": up.outbox.first_unacked()?, "last_seq": up.outbox.last_seq(),
        "ack": match cfg.ack { AckMode::Seq => "seq", AckMode::None => "none" },
    });
    tx.send(Message::text(hello.to_string())).await?;
    up.stats.connected.store(true, Relaxed);
    up.stats.connects.fetch_add(1, Relaxed);
    tracing::info!(url = %cfg.url, pending_alerts = up.outbox.len(Lane::Alert), pending_summaries = up.outbox.len(Lane::Summary), "upstream connected");
    backoff.reset();

    let write_timeout = cfg.ping_interval.0 + cfg.pong_timeout.0;
    // Highest seq sent per lane in this session; everything unacknowledged is resent after a reconnect.
    let mut cursor = [0u64; 2];
    let mut in_flight = BTreeSet::new();
    let mut ping = tokio::time::interval(cfg.ping_interval.0);
    ping.reset();
    let mut last_pong = Instant::now();
    loop {
        // Fill the window: alerts (and gap notices) first, summaries when no alert waits.
        let upto = *up.flushed.borrow_and_update();
        loop {
            let room = cfg.window.saturating_sub(in_flight.len());
            if room == 0 {
                break;
            }
            let mut batch = up.outbox.pending(Lane::Alert, cursor[0], upto, room)?;
            if batch.is_empty() {
                batch = up.outbox.pending(Lane::Summary, cursor[1], upto, room)?;
            }
            if batch.is_empty() {
                break;
            }
            let n = batch.len() as u64;
            let mut sent = Vec::with_capacity(batch.len());
            let written = async {
                for item in batch {
                    let text = String::from_utf8(item.json).unwrap_or_default();
                    tx.feed(Message::text(text)).await?;
                    cursor[usize::from(item.lane == Lane::Summary)] = item.seq;
                    sent.push(item.seq);
                }
                tokio::time::timeout(write_timeout, tx.flush())
                    .await
                    .map_err(|_| UpstreamError::WriteTimeout)??;
                Ok::<(), UpstreamError>(())
            }
            .await;
            if let Err(e) = written {
                // The peer may have acknowledged messages just before the connection broke: honour
                // the acks already received, so that only truly unacknowledged messages are resent.
                while let Ok(Some(Ok(msg))) =
                    tokio::time::timeout(Duration::from_millis(100), rx.next()).await
                {
                    if let Message::Text(t) = msg {
                        take_acks(up, &mut in_flight, &t)?;
                    }
                }
                return Err(e);
            }
            up.stats.sent.fetch_add(n, Relaxed);
            match cfg.ack {
                AckMode::Seq => in_flight.extend(sent),
                AckMode::None => {
                    for s in sent {
                        up.outbox.ack(s)?;
                    }
                    up.stats.acked.fetch_add(n, Relaxed);
                }
            }
        }

        tokio::select! {
            msg = rx.next() => match msg {
                Some(Ok(Message::Text(t))) => take_acks(up, &mut in_flight, &t)?,
                Some(Ok(Message::Pong(_))) => last_pong = Instant::now(),
                Some(Ok(Message::Close(_))) | None => return Ok(()),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.into()),
            },
            r = up.flushed.changed() => {
                if r.is_err() {
                    return Ok(()); // the store stopped: shutting down
                }
            }
            _ = ping.tick() => {
                if last_pong.elapsed() > write_timeout {
                    return Err(UpstreamError::PongTimeout);
                }
                tokio::time::timeout(write_timeout, tx.send(Message::Ping(Default::default())))
                    .await
                    .map_err(|_| UpstreamError::WriteTimeout)??;
            }
        }
    }
}
