//! MQTT source: subscribes to a broker, maps topics to device/metric and decodes payloads. The
//! event loop never waits for analysis: messages go through a bounded queue (overflow is counted).

pub mod payload;
pub mod sparkplug;
pub mod topic;

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, Packet, Publish, QoS, SubscribeFilter, SubscribeReasonCode};
use tokio::sync::mpsc;

use super::backoff::Retry;
use super::intake::{Intake, Origin};
use super::route::{Closed, Router};
use super::SourceError;
use crate::config::MqttSource;
use crate::status::{RateLimitedLog, SourceStats};
use payload::{PayloadError, Sub};
use sparkplug::{Sparkplug, SparkplugView};

/// Most messages decoded into one round of batches.
const DECODE_BATCH: usize = 1024;

pub async fn run(
    cfg: Arc<MqttSource>,
    idx: u16,
    router: Router,
    stats: Arc<SourceStats>,
) -> Result<(), SourceError> {
    let subs: Vec<Sub> = cfg
        .subscriptions
        .iter()
        .map(Sub::compile)
        .collect::<Result<_, _>>()
        .map_err(SourceError::Config)?;
    let default_id = format!("edgewatch-{}-{:08x}", cfg.id, rand::random::<u32>());
    let opts = crate::mqtt::options(&cfg.conn(), &default_id)?;
    let (client, mut events) = AsyncClient::new(opts, 16);
    let (tx, rx) = mpsc::channel::<Publish>(cfg.queue);
    // Payload bytes in the queue: bounded by `queue_bytes` as well as by the message count.
    let queued = Arc::new(AtomicUsize::new(0));
    let subs = Arc::new(subs);
    let mut decoder = tokio::spawn(decode_loop(
        rx,
        queued.clone(),
        subs.clone(),
        Intake::new(&router, idx, stats.clone(), Origin::Topic),
        Commands {
            client: client.clone(),
            stats: stats.clone(),
            log: RateLimitedLog::new(5, Duration::from_secs(60)),
        },
    ));
    let filters: Vec<SubscribeFilter> = subs
        .iter()
        .map(|s| SubscribeFilter::new(s.filter.clone(), s.qos))
        .collect();
    let mut retry = Retry::new(cfg.backoff_min.0, cfg.backoff_max.0);
    let mut full_log = RateLimitedLog::new(1, Duration::from_secs(10));
    let mut was_connected = false;
    loop {
        let ev = tokio::select! {
            ev = events.poll() => ev,
            // The decoder stops only when analysis is gone.
            _ = &mut decoder => return Err(SourceError::Closed(Closed)),
        };
        match ev {
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let size = p.payload.len() + p.topic.len();
                let r = if queued.load(Relaxed) + size > cfg.queue_bytes {
                    Err(mpsc::error::TrySendError::Full(p))
                } else {
                    queued.fetch_add(size, Relaxed);
                    tx.try_send(p).inspect_err(|_| {
                        queued.fetch_sub(size, Relaxed);
                    })
                };
                match r {
                    Ok(()) => retry.healthy(),
                    Err(mpsc::error::TrySendError::Full(p)) => {
                        stats.dropped_queue_full.fetch_add(1, Relaxed);
                        let (allow, suppressed) = full_log.allow();
                        if allow {
                            tracing::warn!(source = %cfg.id, topic = %p.topic, queue = cfg.queue, queue_bytes = cfg.queue_bytes, suppressed_before = suppressed.unwrap_or(0), "analysis is behind: queue full (messages or bytes), message dropped");
                        }
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => {
                        return Err(SourceError::Closed(Closed))
                    }
                }
            }
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                retry.up();
                was_connected = true;
                stats.set_healthy(true);
                stats.connections.store(1, Relaxed);
                stats.connects_total.fetch_add(1, Relaxed);
                if ack.session_present {
                    tracing::info!(source = %cfg.id, url = %cfg.url, "connected; session resumed, subscribed");
                } else {
                    tracing::info!(source = %cfg.id, url = %cfg.url, "connected; subscribing");
                    if let Err(e) = client.try_subscribe_many(filters.clone()) {
                        tracing::error!(source = %cfg.id, error = %e, "cannot queue the subscription");
                    }
                }
            }
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                let failed = ack
                    .return_codes
                    .iter()
                    .zip(subs.iter())
                    .filter(|(c, _)| matches!(c, SubscribeReasonCode::Failure))
                    .map(|(_, s)| s.filter.as_str())
                    .collect::<Vec<_>>();
                if failed.is_empty() {
                    let topics: Vec<&str> = subs.iter().map(|s| s.filter.as_str()).collect();
                    tracing::info!(source = %cfg.id, topics = ?topics, "subscribed");
                } else {
                    let msg = format!("the broker refused the subscription to {failed:?}");
                    tracing::error!(source = %cfg.id, "{msg}");
                    stats.set_error(msg);
                }
            }
            Ok(_) => {}
            Err(e) => {
                stats.set_healthy(false);
                stats.connections.store(0, Relaxed);
                let delay = retry.failed();
                let msg = format!("{}: {e}", cfg.url);
                if was_connected {
                    tracing::warn!(source = %cfg.id, error = %msg, retry_in = ?delay, "broker connection lost");
                } else {
                    tracing::debug!(source = %cfg.id, error = %msg, retry_in = ?delay, "broker connection failed");
                }
                was_connected = false;
                stats.set_error(msg);
                // rumqttc reconnects on the next poll without any delay of its own.
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// What the decode task needs besides the samples' way out: the client to publish Sparkplug
/// rebirth requests with, and the stats its health and counters go to.
struct Commands {
    client: AsyncClient,
    stats: Arc<SourceStats>,
    log: RateLimitedLog,
}

impl Commands {
    /// Publishes the rebirth requests of `sp` (QoS 0, as Sparkplug hosts send commands).
    fn rebirths(&mut self, sp: &mut Sparkplug) {
        for r in sp.take_rebirths() {
            let res = self
                .client
                .try_publish(r.topic.clone(), QoS::AtMostOnce, false, r.payload);
            let (allow, suppressed) = self.log.allow();
            if !allow {
                continue;
            }
            let id = &self.stats.id;
            let n = suppressed.unwrap_or(0);
            match res {
                Ok(()) => {
                    tracing::info!(source = %id, topic = %r.topic, suppressed_before = n, "Sparkplug rebirth requested")
                }
                Err(e) => {
                    tracing::warn!(source = %id, topic = %r.topic, error = %e, suppressed_before = n, "cannot queue the Sparkplug rebirth request")
                }
            }
        }
    }
}

/// Decodes queued messages in rounds of up to `DECODE_BATCH` and hands the batches to the shards,
/// waiting when they are full (the event loop keeps running meanwhile). Sparkplug subscriptions
/// keep their state here (one task: no lock).
async fn decode_loop(
    mut rx: mpsc::Receiver<Publish>,
    queued: Arc<AtomicUsize>,
    subs: Arc<Vec<Sub>>,
    mut intake: Intake,
    mut cmds: Commands,
) -> Result<(), Closed> {
    let mut buf = Vec::with_capacity(DECODE_BATCH);
    let mut sparkplug: Vec<Option<Sparkplug>> = subs
        .iter()
        .map(|s| s.sparkplug.clone().map(Sparkplug::new))
        .collect();
    let has_sparkplug = sparkplug.iter().any(Option::is_some);
    let mut units = Units::default();
    loop {
        // A health list held back by its pacing is published when the pace allows, even if no
        // message comes.
        let received = match units.pending_until() {
            Some(at) => tokio::select! {
                n = rx.recv_many(&mut buf, DECODE_BATCH) => Some(n),
                _ = tokio::time::sleep_until(at.into()) => None,
            },
            None => Some(rx.recv_many(&mut buf, DECODE_BATCH).await),
        };
        let Some(received) = received else {
            units.publish(&mut sparkplug, &cmds.stats, Instant::now(), true);
            continue;
        };
        if received == 0 {
            return Ok(());
        }
        intake.begin();
        let now = Instant::now();
        for p in buf.drain(..) {
            queued.fetch_sub(p.payload.len() + p.topic.len(), Relaxed);
            let r = match payload::find(&subs, &p.topic) {
                None => Err(PayloadError::NoPattern),
                Some((i, c)) => match sparkplug.get_mut(i).and_then(Option::as_mut) {
                    Some(sp) => {
                        let r = sp.handle(&p.topic, &p.payload, now, intake.sink());
                        cmds.rebirths(sp);
                        r.map_err(PayloadError::from)
                    }
                    None => payload::decode_one(&subs[i], c, &p.payload, intake.sink())
                        .map_err(PayloadError::from),
                },
            };
            intake.count(r, Some(&p.topic), Some(&p.payload));
        }
        if has_sparkplug {
            units.publish(&mut sparkplug, &cmds.stats, now, false);
        }
        intake.flush().await?;
    }
}

/// Pacing of the Sparkplug health list (a list of every node and device, so not rebuilt for
/// every round of messages).
#[derive(Default)]
struct Units {
    last: Option<Instant>,
    /// A change is not published yet.
    pending: bool,
}

impl Units {
    fn pending_until(&self) -> Option<Instant> {
        self.pending
            .then(|| self.last.map(|t| t + sparkplug::UNITS_REFRESH))
            .flatten()
    }

    /// Publishes the counters (small: every round) and the health list: at once when a birth or
    /// death changed health, else at most every `UNITS_REFRESH` (`force`: the pace allows now).
    fn publish(
        &mut self,
        sps: &mut [Option<Sparkplug>],
        stats: &SourceStats,
        now: Instant,
        force: bool,
    ) {
        let changed = sps
            .iter_mut()
            .flatten()
            .fold(false, |c, sp| sp.take_changed() | c);
        let mut total = SparkplugView::default();
        for sp in sps.iter().flatten() {
            total.add(&sp.counts());
        }
        stats.set_sparkplug(total);
        let due = self
            .last
            .is_none_or(|t| now.saturating_duration_since(t) >= sparkplug::UNITS_REFRESH);
        if !(changed || due || force) {
            // Counters of devices (reads, errors) moved: published when the pace allows.
            self.pending = true;
            return;
        }
        self.last = Some(now);
        self.pending = false;
        let units: Vec<_> = sps.iter().flatten().flat_map(Sparkplug::units).collect();
        stats.set_units(&units);
    }
}
