//! The upstream WebSocket output: hello (with `first_unacked`), outbox messages as text frames,
//! `ack`s from the receiver, pings to detect a dead peer, failover between several receivers
//! (the first that answers; back to the first when a probe finds it up). The shared consumer drives it.

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
    /// The receiver in use (or last tried), an index into `cfg.receivers()`.
    current: usize,
}

impl Upstream {
    pub fn new(
        cfg: UpstreamConfig,
        node: String,
        token: Option<String>,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Self {
        Upstream {
            cfg,
            node,
            token,
            tls,
            current: 0,
        }
    }
}

/// Opens a WebSocket to `url` (handshake included) within `timeout`.
async fn open(
    url: &str,
    token: Option<&str>,
    tls: Option<Arc<rustls::ClientConfig>>,
    timeout: Duration,
) -> Result<Ws, UpstreamError> {
    let mut req = url
        .into_client_request()
        .map_err(|e| UpstreamError::Connect(e.to_string()))?;
    if let Some(t) = token {
        let v = format!("Bearer {t}")
            .parse()
            .map_err(|_| UpstreamError::Token("the token is not a valid header value".into()))?;
        req.headers_mut().insert(AUTHORIZATION, v);
    }
    let connector = tls.map(Connector::Rustls);
    let (ws, _) = tokio::time::timeout(
        timeout,
        tokio_tungstenite::connect_async_tls_with_config(req, None, false, connector),
    )
    .await
    .map_err(|_| UpstreamError::Connect(format!("no handshake within {timeout:?}")))??;
    Ok(ws)
}

/// While a later receiver is in use: tries the first one every `interval` (a WebSocket handshake,
/// then a close; no hello), so that the session can end and return to it.
struct Failback {
    interval: tokio::time::Interval,
    probe: Option<tokio::task::JoinHandle<bool>>,
    url: String,
    token: Option<String>,
    tls: Option<Arc<rustls::ClientConfig>>,
    timeout: Duration,
}

impl Failback {
    /// Resolves when the first receiver answered a probe. Cancel-safe.
    async fn primary_back(&mut self) {
        loop {
            match &mut self.probe {
                Some(task) => {
                    let up = task.await.unwrap_or(false);
                    self.probe = None;
                    if up {
                        return;
                    }
                }
                None => {
                    self.interval.tick().await;
                    let (url, token, tls, timeout) = (
                        self.url.clone(),
                        self.token.clone(),
                        self.tls.clone(),
                        self.timeout,
                    );
                    self.probe = Some(tokio::spawn(async move {
                        match open(&url, token.as_deref(), tls, timeout).await {
                            Ok(mut ws) => {
                                let _ = tokio::time::timeout(timeout, ws.close(None)).await;
                                true
                            }
                            Err(_) => false,
                        }
                    }));
                }
            }
        }
    }
}

impl Drop for Failback {
    fn drop(&mut self) {
        if let Some(t) = self.probe.take() {
            t.abort();
        }
    }
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
    /// Set while a receiver other than the first is in use.
    failback: Option<Failback>,
}

/// Runs until the process stops.
pub async fn run(up: Upstream, feed: Feed) {
    consumer::run(up, feed).await
}

impl Output for Upstream {
    type Session = Connection;

    fn label(&self) -> (&str, &str) {
        let url = self
            .cfg
            .receivers()
            .get(self.current)
            .copied()
            .unwrap_or("");
        ("upstream", url)
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
        // The first receiver that answers, in order of preference: the first one whenever it is up.
        let urls: Vec<String> = self.cfg.receivers().into_iter().map(String::from).collect();
        let timeout = self.cfg.connect_timeout.0;
        let mut failed = None;
        let mut ws = None;
        for (i, url) in urls.iter().enumerate() {
            self.current = i;
            match open(url, self.token.as_deref(), self.tls.clone(), timeout).await {
                Ok(w) => {
                    ws = Some(w);
                    break;
                }
                Err(e) if i + 1 < urls.len() => {
                    tracing::warn!(%url, error = %e, next = %urls[i + 1], "upstream receiver unreachable; trying the next");
                    failed = Some(e);
                }
                Err(e) => failed = Some(e),
            }
        }
        let Some(ws) = ws else {
            return Err(failed.unwrap_or_else(|| UpstreamError::Connect("no receiver".into())));
        };
        let cfg = &self.cfg;
        let url = urls.get(self.current).cloned().unwrap_or_default();
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
        tracing::info!(%url, pending_alerts = outbox.len(Lane::Alert), pending_summaries = outbox.len(Lane::Summary), "upstream connected");
        let mut ping = tokio::time::interval(cfg.ping_interval.0);
        ping.reset();
        let failback = (self.current > 0).then(|| {
            let mut interval = tokio::time::interval(cfg.failback_interval.0);
            interval.reset();
            Failback {
                interval,
                probe: None,
                url: urls.first().cloned().unwrap_or_default(),
                token: self.token.clone(),
                tls: self.tls.clone(),
                timeout,
            }
        });
        Ok(Connection {
            tx,
            rx,
            write_timeout: cfg.ping_interval.0 + cfg.pong_timeout.0,
            ping,
            ping_due: false,
            last_pong: Instant::now(),
            failback,
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
            _ = async {
                match &mut self.failback {
                    Some(f) => f.primary_back().await,
                    None => std::future::pending().await,
                }
            } => {
                let url = self.failback.as_ref().map(|f| f.url.clone()).unwrap_or_default();
                tracing::info!(%url, "the first upstream receiver answers again; returning to it");
                let _ = tokio::time::timeout(self.write_timeout, self.tx.close()).await;
                Ok(Peer::Closed)
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
