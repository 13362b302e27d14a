//! The one outbox consumer every push output runs on: reads its outbox up to the durable seq,
//! hands batches to the output's session, deletes on acknowledgement, reconnects with backoff, counts.
//!
//! An output (upstream WebSocket, MQTT, ...) only says how to connect and how to send a batch
//! ([`Output`], [`Session`]); ordering, windows, deletion, retries and `/api/status` counters are here.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::sync::watch;

use crate::model::{now_ms, Millis};
use crate::sources::backoff::Backoff;
use crate::store::outbox::Item;
use crate::store::{Budget, Lane, Outbox, StoreError, UpstreamQueue};

/// When a sent message may be deleted from the outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// When the peer acknowledges it ([`Peer::Acked`]).
    Acked,
    /// As soon as it is written (the peer does not acknowledge).
    Written,
}

/// What a session heard from its peer.
#[derive(Debug, PartialEq, Eq)]
pub enum Peer {
    /// These seqs are delivered: delete them.
    Acked(Vec<u64>),
    /// Something the session handled itself (a pong, a live summary): carry on.
    Nothing,
    /// The peer ended the session: reconnect after the backoff.
    Closed,
    /// The appliance is stopping: end the consumer.
    Shutdown,
}

/// One connection of an output.
pub trait Session: Send {
    type Error: std::fmt::Display + From<StoreError> + Send;

    /// Writes `batch` (seq order, one lane) and returns how many it took from its front; fewer
    /// than all when a local queue is full (the rest is offered again after the next event).
    fn send(&mut self, batch: Vec<Item>)
        -> impl Future<Output = Result<usize, Self::Error>> + Send;

    /// Waits for the peer. Must be cancel-safe: the consumer drops it when new messages become
    /// durable.
    fn next(&mut self) -> impl Future<Output = Result<Peer, Self::Error>> + Send;

    /// After a failed `send`: acknowledgements that arrived before the connection broke.
    fn salvage(&mut self) -> impl Future<Output = Vec<u64>> + Send {
        async { Vec::new() }
    }
}

/// How to reach one destination. A new output implements this and [`Session`] in one file.
pub trait Output: Send {
    type Session: Session;

    /// For logs: what and where, e.g. `("upstream", "wss://…")`.
    fn label(&self) -> (&str, &str);
    /// Whether summaries are read from the outbox too (alerts and gap notices always are).
    fn summaries(&self) -> bool;
    /// Most messages sent and not yet deleted.
    fn window(&self) -> usize;
    fn delivery(&self) -> Delivery;
    fn backoff(&self) -> Backoff;
    /// Opens a session (handshake included); `outbox` tells where delivery stands.
    fn connect(
        &mut self,
        outbox: &Outbox,
    ) -> impl Future<Output = Result<Self::Session, <Self::Session as Session>::Error>> + Send;
}

/// Counters shown per consumer in `/api/status` (`upstream`, `sinks[].delivery`).
#[derive(Debug)]
pub struct DeliveryStats {
    pub connected: AtomicBool,
    pub connects: AtomicU64,
    pub sent: AtomicU64,
    pub acked: AtomicU64,
    /// Request bytes an HTTP output put on the wire (bodies as sent, after gzip), when it counts.
    pub wire_bytes: AtomicU64,
    /// Highest seq that is durable on disk (announced by the store after each flush).
    durable: watch::Receiver<u64>,
    last_error: Mutex<Option<(Millis, String)>>,
    /// Where the current (or last) session went: with several upstream receivers, which one.
    url: Mutex<String>,
}

impl DeliveryStats {
    pub fn new(durable: watch::Receiver<u64>) -> Self {
        DeliveryStats {
            connected: AtomicBool::new(false),
            connects: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            wire_bytes: AtomicU64::new(0),
            durable,
            last_error: Mutex::new(None),
            url: Mutex::new(String::new()),
        }
    }

    pub fn set_error(&self, e: impl Into<String>) {
        if let Ok(mut g) = self.last_error.lock() {
            *g = Some((now_ms(), e.into()));
        }
    }

    fn set_url(&self, url: &str) {
        if let Ok(mut g) = self.url.lock() {
            url.clone_into(&mut g);
        }
    }

    pub fn durable_seq(&self) -> u64 {
        *self.durable.borrow()
    }

    pub fn view(&self, outbox: &Outbox) -> DeliveryView {
        DeliveryView {
            url: self.url.lock().map(|g| g.clone()).unwrap_or_default(),
            connected: self.connected.load(Relaxed),
            connects: self.connects.load(Relaxed),
            sent: self.sent.load(Relaxed),
            acked: self.acked.load(Relaxed),
            wire_bytes: self.wire_bytes.load(Relaxed),
            last_seq: outbox.last_seq(),
            durable_seq: self.durable_seq(),
            outbox_alerts: outbox.len(Lane::Alert),
            outbox_summaries: outbox.len(Lane::Summary),
            outbox_bytes: outbox.bytes(Lane::Alert) + outbox.bytes(Lane::Summary),
            outbox_alert_bytes: outbox.bytes(Lane::Alert),
            dropped: outbox.dropped(),
            last_error: self
                .last_error
                .lock()
                .ok()
                .and_then(|g| g.clone())
                .map(|(at, message)| crate::status::ErrorView { at, message }),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct DeliveryView {
    /// The destination of the current (or last) session.
    pub url: String,
    pub connected: bool,
    pub connects: u64,
    pub sent: u64,
    pub acked: u64,
    pub wire_bytes: u64,
    pub last_seq: u64,
    pub durable_seq: u64,
    pub outbox_alerts: u64,
    pub outbox_summaries: u64,
    pub outbox_bytes: u64,
    pub outbox_alert_bytes: u64,
    pub dropped: u64,
    pub last_error: Option<crate::status::ErrorView>,
}

/// A consumer's end of its outbox: read, acknowledge, and learn what is durable.
pub struct Feed {
    pub outbox: Outbox,
    /// Highest durable seq; nothing beyond it is ever sent ("sent" implies "on disk").
    pub flushed: watch::Receiver<u64>,
    pub stats: Arc<DeliveryStats>,
}

/// Makes both ends of one consumer's outbox: the store's (append, budget, announce) and the
/// consumer's.
pub fn feed(
    outbox: Outbox,
    budget: Budget,
    summaries: crate::store::SummaryFeed,
    node: &str,
) -> (UpstreamQueue, Feed) {
    let (tx, rx) = watch::channel(0);
    let stats = Arc::new(DeliveryStats::new(rx.clone()));
    let queue = UpstreamQueue {
        outbox: outbox.clone(),
        summaries,
        node: node.to_string(),
        budget,
        samples: false,
        flushed: tx,
    };
    (
        queue,
        Feed {
            outbox,
            flushed: rx,
            stats,
        },
    )
}

/// How a session ended without an error.
enum End {
    Closed,
    Shutdown,
}

/// Runs `out` until the appliance stops: one session at a time, backoff in between.
pub async fn run<O: Output>(mut out: O, mut feed: Feed) {
    let mut backoff = out.backoff();
    loop {
        let r = session(&mut out, &mut feed, &mut backoff).await;
        feed.stats.connected.store(false, Relaxed);
        let (kind, url) = out.label();
        match r {
            Ok(End::Shutdown) => return,
            Ok(End::Closed) => tracing::info!(%url, "{kind} closed the connection"),
            Err(e) => {
                tracing::warn!(%url, error = %e, "{kind} connection failed");
                feed.stats.set_error(e.to_string());
            }
        }
        // The store has stopped: nothing more will become durable.
        if feed.flushed.has_changed().is_err() {
            return;
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

type Error<O> = <<O as Output>::Session as Session>::Error;

async fn session<O: Output>(
    out: &mut O,
    feed: &mut Feed,
    backoff: &mut Backoff,
) -> Result<End, Error<O>> {
    let mut s = out.connect(&feed.outbox).await?;
    feed.stats.set_url(out.label().1);
    feed.stats.connected.store(true, Relaxed);
    feed.stats.connects.fetch_add(1, Relaxed);
    backoff.reset();
    let (window, delivery, summaries) = (out.window(), out.delivery(), out.summaries());
    let (outbox, stats) = (&feed.outbox, &feed.stats);
    // Highest seq sent per lane in this session; after a reconnect everything unacknowledged
    // is sent again (the outbox still holds it).
    let mut cursor = [0u64; 2];
    let mut in_flight = BTreeSet::new();
    let apply_acks = |in_flight: &mut BTreeSet<u64>, seqs: Vec<u64>| -> Result<(), StoreError> {
        for seq in seqs {
            in_flight.remove(&seq);
            if outbox.ack(seq)? {
                stats.acked.fetch_add(1, Relaxed);
            }
        }
        Ok(())
    };
    loop {
        // Fill the window: alerts (and gap notices) first, summaries when no alert waits.
        let upto = *feed.flushed.borrow_and_update();
        loop {
            let room = window.saturating_sub(in_flight.len());
            if room == 0 {
                break;
            }
            let mut batch = outbox.pending(Lane::Alert, cursor[0], upto, room)?;
            if batch.is_empty() && summaries {
                batch = outbox.pending(Lane::Summary, cursor[1], upto, room)?;
            }
            if batch.is_empty() {
                break;
            }
            let offered: Vec<(u64, Lane)> = batch.iter().map(|i| (i.seq, i.lane)).collect();
            let taken = match s.send(batch).await {
                Ok(n) => n.min(offered.len()),
                Err(e) => {
                    // Honour acks the peer sent just before the break, so that only truly
                    // unacknowledged messages are sent again.
                    let acked = s.salvage().await;
                    apply_acks(&mut in_flight, acked)?;
                    return Err(e);
                }
            };
            let sent = &offered[..taken];
            for &(seq, lane) in sent {
                cursor[usize::from(lane == Lane::Summary)] = seq;
            }
            stats.sent.fetch_add(taken as u64, Relaxed);
            match delivery {
                Delivery::Acked => in_flight.extend(sent.iter().map(|&(seq, _)| seq)),
                Delivery::Written => {
                    for &(seq, _) in sent {
                        outbox.ack(seq)?;
                    }
                    stats.acked.fetch_add(taken as u64, Relaxed);
                }
            }
            if taken < offered.len() {
                break; // a local queue is full: continue after the next event
            }
        }

        tokio::select! {
            p = s.next() => match p? {
                Peer::Acked(seqs) => apply_acks(&mut in_flight, seqs)?,
                Peer::Nothing => {}
                Peer::Closed => return Ok(End::Closed),
                Peer::Shutdown => return Ok(End::Shutdown),
            },
            r = feed.flushed.changed() => {
                if r.is_err() {
                    return Ok(End::Shutdown); // the store stopped
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::sync::mpsc;

    use super::*;
    use crate::store::Store;

    /// An output whose wire is a channel the test reads and whose peer is a channel the test writes.
    struct Fake {
        wire: mpsc::UnboundedSender<(u32, u64)>,
        peer: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Peer>>>,
        sessions: u32,
    }

    struct FakeSession {
        n: u32,
        wire: mpsc::UnboundedSender<(u32, u64)>,
        peer: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Peer>>>,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("fake: {0}")]
    struct FakeError(#[from] StoreError);

    impl Output for Fake {
        type Session = FakeSession;
        fn label(&self) -> (&str, &str) {
            ("fake", "mem://")
        }
        fn summaries(&self) -> bool {
            true
        }
        fn window(&self) -> usize {
            8
        }
        fn delivery(&self) -> Delivery {
            Delivery::Acked
        }
        fn backoff(&self) -> Backoff {
            Backoff::new(Duration::from_millis(1), Duration::from_millis(5))
        }
        async fn connect(&mut self, _: &Outbox) -> Result<FakeSession, FakeError> {
            self.sessions += 1;
            Ok(FakeSession {
                n: self.sessions,
                wire: self.wire.clone(),
                peer: self.peer.clone(),
            })
        }
    }

    impl Session for FakeSession {
        type Error = FakeError;
        async fn send(&mut self, batch: Vec<Item>) -> Result<usize, FakeError> {
            for i in &batch {
                let _ = self.wire.send((self.n, i.seq));
            }
            Ok(batch.len())
        }
        async fn next(&mut self) -> Result<Peer, FakeError> {
            Ok(self
                .peer
                .lock()
                .await
                .recv()
                .await
                .unwrap_or(Peer::Shutdown))
        }
    }

    async fn recv(rx: &mut mpsc::UnboundedReceiver<(u32, u64)>) -> Option<(u32, u64)> {
        tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .ok()
            .flatten()
    }

    #[tokio::test]
    async fn sends_only_what_is_durable_deletes_on_ack_and_resends_the_rest_after_a_reconnect() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = Store::open(dir.path(), 1 << 20).expect("store");
        let outbox = store.outbox();
        let budget = Budget {
            max_bytes: 1 << 30,
            max_age_ms: 1 << 40,
            alert_max_bytes: 1 << 30,
        };
        let (queue, feed) = super::feed(
            outbox.clone(),
            budget,
            crate::store::SummaryFeed::Upstream,
            "n",
        );
        for _ in 0..3 {
            outbox
                .append(Lane::Alert, 0, |s| format!("{{\"seq\":{s}}}").into_bytes())
                .expect("append");
        }
        outbox
            .append(Lane::Summary, 0, |s| {
                format!("{{\"seq\":{s}}}").into_bytes()
            })
            .expect("append");
        queue.flushed.send_replace(2);
        let stats = feed.stats.clone();
        let (wire_tx, mut wire) = mpsc::unbounded_channel();
        let (peer, peer_rx) = mpsc::unbounded_channel();
        let fake = Fake {
            wire: wire_tx,
            peer: Arc::new(tokio::sync::Mutex::new(peer_rx)),
            sessions: 0,
        };
        let task = tokio::spawn(run(fake, feed));

        assert_eq!(recv(&mut wire).await, Some((1, 1)));
        assert_eq!(recv(&mut wire).await, Some((1, 2)));
        // 3 and 4 are not durable yet: nothing more is sent.
        assert!(
            tokio::time::timeout(Duration::from_millis(100), wire.recv())
                .await
                .is_err()
        );
        queue.flushed.send_replace(4);
        assert_eq!(recv(&mut wire).await, Some((1, 3)), "alerts first");
        assert_eq!(recv(&mut wire).await, Some((1, 4)), "then summaries");

        peer.send(Peer::Acked(vec![1, 4])).expect("ack");
        let end = std::time::Instant::now() + Duration::from_secs(5);
        while outbox.len(Lane::Alert) != 2 || outbox.len(Lane::Summary) != 0 {
            assert!(std::time::Instant::now() < end, "acks not applied");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(stats.acked.load(Relaxed), 2);

        // The peer goes away: the next session starts again at the oldest unacknowledged.
        peer.send(Peer::Closed).expect("close");
        assert_eq!(recv(&mut wire).await, Some((2, 2)));
        assert_eq!(recv(&mut wire).await, Some((2, 3)));
        assert_eq!(stats.connects.load(Relaxed), 2);
        assert_eq!(stats.sent.load(Relaxed), 6);
        assert_eq!(stats.durable_seq(), 4);

        // The store stopping ends the consumer.
        drop(queue);
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("consumer ends when the store stops")
            .expect("no panic");
    }
}
