//! The upstream WebSocket output: hello (with `first_unacked`), outbox messages as text frames,
//! `ack`s from the receiver, pings to detect a dead peer. The shared consumer drives it.

use std::time::{Duration, Instant};

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::header::AUTHORIZATION;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

use super::UpstreamError;
use crate::config::{AckMode, UpstreamConfig};
use crate::protocol::{self, AckKind, FromReceiver};
use crate::sinks::consumer::{self, Delivery, Feed, Output, Peer};
use crate::sources::backoff::Backoff;
use crate::store::outbox::Item;
use crate::store::{Lane, Outbox};

/// What the sender needs, built once at start-up.
pub struct Upstream {
    pub cfg: UpstreamConfig,
    pub node: String,
    pub token: Option<String>,
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

use std::sync::Arc;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// One connection to the receiver.
pub struct Connection {
    tx: SplitSink<Ws, Message>,
    rx: SplitStream<Ws>,
    /// A write (or a ping) that takes longer than this means the receiver is gone or too slow.
    write_timeout: Duration,
    ping: tokio::time::Interval,
    ping_due: bool,
    last_pong: Instant,
}

/// Runs until the process stops.
pub async fn run(up: Upstream, feed: Feed) {
    consumer::run(up, feed).await
}

impl Output for Upstream {
    type Session = Connection;

    fn label(&self) -> (&str, &str) {
        ("upstream", &self.cfg.url)
    }

    fn summaries(&self) -> bool {
        true
    }

    fn window(&self) -> usize {
        self.cfg.window
    }

    fn delivery(&self) -> Delivery {
        match self.cfg.ack {
            AckMode::Seq => Delivery::Acked,
            AckMode::None => Delivery::Written,
        }
    }

    fn backoff(&self) -> Backoff {
        Backoff::with_jitter(
            self.cfg.backoff_min.0,
            self.cfg.backoff_max.0,
            self.cfg.backoff_jitter,
        )
    }

    async fn connect(&mut self, outbox: &Outbox) -> Result<Connection, UpstreamError> {
        let cfg = &self.cfg;
        let mut req = cfg
            .url
            .as_str()
            .into_client_request()
            .map_err(|e| UpstreamError::Connect(e.to_string()))?;
        if let Some(t) = &self.token {
            let v = format!("Bearer {t}").parse().map_err(|_| {
                UpstreamError::Token("the token is not a valid header value".into())
            })?;
            req.headers_mut().insert(AUTHORIZATION, v);
        }
        let connector = self.tls.clone().map(Connector::Rustls);
        let (ws, _) = tokio::time::timeout(
            Duration::from_secs(10),
            tokio_tungstenite::connect_async_tls_with_config(req, None, false, connector),
        )
        .await
        .map_err(|_| UpstreamError::Connect("timed out".into()))??;
        let (mut tx, rx) = ws.split();
        let ack = match cfg.ack {
            AckMode::Seq => AckKind::Seq,
            AckMode::None => AckKind::None,
        };
        let hello = protocol::upstream_hello_json(
            &self.node,
            outbox.first_unacked()?,
            outbox.last_seq(),
            ack,
        );
        tx.send(Message::text(hello)).await?;
        tracing::info!(url = %cfg.url, pending_alerts = outbox.len(Lane::Alert), pending_summaries = outbox.len(Lane::Summary), "upstream connected");
        let mut ping = tokio::time::interval(cfg.ping_interval.0);
        ping.reset();
        Ok(Connection {
            tx,
            rx,
            write_timeout: cfg.ping_interval.0 + cfg.pong_timeout.0,
            ping,
            ping_due: false,
            last_pong: Instant::now(),
        })
    }
}

/// The seqs an `ack` frame acknowledges (other frames acknowledge nothing).
fn acks_in(text: &str) -> Vec<u64> {
    match protocol::parse_from_receiver(text) {
        FromReceiver::Ack(seqs) => seqs,
        FromReceiver::Other => Vec::new(),
        FromReceiver::Unreadable => {
            tracing::debug!(%text, "ignoring unreadable message from upstream");
            Vec::new()
        }
    }
}

impl consumer::Session for Connection {
    type Error = UpstreamError;

    async fn send(&mut self, batch: Vec<Item>) -> Result<usize, UpstreamError> {
        let n = batch.len();
        for item in batch {
            let text = String::from_utf8(item.json).unwrap_or_default();
            self.tx.feed(Message::text(text)).await?;
        }
        tokio::time::timeout(self.write_timeout, self.tx.flush())
            .await
            .map_err(|_| UpstreamError::WriteTimeout)??;
        Ok(n)
    }

    async fn next(&mut self) -> Result<Peer, UpstreamError> {
        // A ping whose write was interrupted (cancelled) is sent again first.
        if self.ping_due {
            tokio::time::timeout(
                self.write_timeout,
                self.tx.send(Message::Ping(Default::default())),
            )
            .await
            .map_err(|_| UpstreamError::WriteTimeout)??;
            self.ping_due = false;
        }
        tokio::select! {
            msg = self.rx.next() => match msg {
                Some(Ok(Message::Text(t))) => Ok(Peer::Acked(acks_in(&t))),
                Some(Ok(Message::Pong(_))) => {
                    self.last_pong = Instant::now();
                    Ok(Peer::Nothing)
                }
                Some(Ok(Message::Close(_))) | None => Ok(Peer::Closed),
                Some(Ok(_)) => Ok(Peer::Nothing),
                Some(Err(e)) => Err(e.into()),
            },
            _ = self.ping.tick() => {
                if self.last_pong.elapsed() > self.write_timeout {
                    return Err(UpstreamError::PongTimeout);
                }
                self.ping_due = true;
                Ok(Peer::Nothing)
            }
        }
    }

    async fn salvage(&mut self) -> Vec<u64> {
        let mut acked = Vec::new();
        while let Ok(Some(Ok(msg))) =
            tokio::time::timeout(Duration::from_millis(100), self.rx.next()).await
        {
            if let Message::Text(t) = msg {
                acked.extend(acks_in(&t));
            }
        }
        acked
    }
}
