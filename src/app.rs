//! Wires the appliance together: store → hub → analyzer shards (one arbiter each) → router →
//! sources, outputs, then the API; shuts it down gracefully (final snapshot and flush) on request.
//! `run` is the binary's (signals); `start` runs it in-process on a thread of its own (tests).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use anyhow::Context as _;
use tokio::sync::{broadcast, mpsc};

use crate::analysis::actor::{ShardActor, TakeSnapshot};
use crate::analysis::shard::{Policies, ShardCore};
use crate::api::{self, ApiState};
use crate::config::Resolved;
use crate::hub::{AttachShards, Hub};
use crate::model::now_ms;
use crate::service::signals::Request as Signal;
use crate::sinks::consumer;
use crate::sources::route::Router;
use crate::sources::SourceActor;
use crate::status::{PipelineStats, SourceStats, StatusBoard};
use crate::store::{Budget, SaveSnapshot, Store, StoreActor};
use crate::upstream;

/// An outbox budget from its config section.
fn budget(b: &crate::config::OutboxBudget) -> Budget {
    Budget {
        max_bytes: b.max_bytes,
        max_age_ms: b.max_age.as_ms(),
        alert_max_bytes: b.alert_max_bytes.unwrap_or(b.max_bytes),
    }
}

/// Number of analyzer shards for a config (0 = one per core).
pub fn shard_count(resolved: &Resolved) -> usize {
    match resolved.config.analysis.shards {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
}

/// What a running appliance has bound, reported once it is up (sources healthy or 10 s passed).
#[derive(Clone)]
pub struct Bound {
    /// The API, dashboard and `/ws` address.
    pub api: SocketAddr,
    /// Counters and health, as `/api/status` shows them (TCP listeners' addresses included).
    pub status: Arc<StatusBoard>,
}

/// What the embedding code (or a signal) asks of a running appliance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// Re-read the config file (SIGHUP).
    Reload,
    /// Stop gracefully: stop sources, final snapshot and flush (SIGTERM, SIGINT).
    Stop,
    /// Stop at once without the final snapshot, as a crash would (what sled flushed survives).
    Abandon,
}

/// Where the appliance takes stop and reload requests from.
pub enum Control {
    /// SIGINT/SIGTERM stop it, SIGHUP reloads the config file (the binary).
    Signals,
    /// Requests sent by the embedding code (tests); closing the channel stops it too.
    Channel(tokio::sync::mpsc::UnboundedReceiver<Request>),
}

impl Control {
    async fn next(&mut self, signals: &mut Option<crate::service::signals::Signals>) -> Request {
        match self {
            Control::Signals => match signals {
                Some(s) => match s.next().await {
                    Signal::Reload => Request::Reload,
                    Signal::Stop => Request::Stop,
                },
                None => Request::Stop,
            },
            Control::Channel(rx) => rx.recv().await.unwrap_or(Request::Stop),
        }
    }
}

/// How many damaged databases are kept aside for inspection (`<data_dir>.damaged-<ms>`).
const KEEP_DAMAGED: usize = 3;

/// Opens the store; a damaged database is moved aside (never a crash loop), a full disk is
/// reported and retried every 10 s.
fn open_store(
    dir: &std::path::Path,
    cache: u64,
    segment: usize,
) -> anyhow::Result<(Store, Option<crate::store::Recovery>)> {
    loop {
        match crate::store::open_or_recover(dir, cache, segment, KEEP_DAMAGED) {
            Ok(r) => return Ok(r),
            Err(e) if crate::store::is_disk_full(&e) => {
                tracing::error!(data_dir = %dir.display(), error = %e, "disk full: cannot open the store; retrying in 10 s");
                crate::service::notify::status(&format!("disk full: {e}"));
                std::thread::sleep(Duration::from_secs(10));
            }
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("cannot open the store in {}", dir.display()))
            }
        }
    }
}

/// An appliance running in this process on its own thread (see [`start`]).
pub struct Running {
    bound: Bound,
    control: tokio::sync::mpsc::UnboundedSender<Request>,
    thread: Option<std::thread::JoinHandle<anyhow::Result<()>>>,
}

impl Running {
    pub fn api(&self) -> SocketAddr {
        self.bound.api
    }

    pub fn status(&self) -> &Arc<StatusBoard> {
        &self.bound.status
    }

    /// Where the TCP source `id` listens (server mode), once it is bound.
    pub fn tcp_addr(&self, id: &str) -> Option<SocketAddr> {
        self.bound.status.listen_addr(id)
    }

    /// Reloads the config file, like SIGHUP.
    pub fn reload(&self) {
        let _ = self.control.send(Request::Reload);
    }

    /// Stops gracefully (final snapshot and flush), like SIGTERM, and waits for the end.
    pub fn stop(mut self) -> anyhow::Result<()> {
        self.finish(Request::Stop)
    }

    /// Stops at once without the final snapshot (what a drop does), and waits for the end.
    pub fn abandon(mut self) -> anyhow::Result<()> {
        self.finish(Request::Abandon)
    }

    fn finish(&mut self, how: Request) -> anyhow::Result<()> {
        let _ = self.control.send(how);
        match self.thread.take() {
            Some(t) => t
                .join()
                .map_err(|_| anyhow::anyhow!("the appliance thread panicked"))?,
            None => Ok(()),
        }
    }
}

/// Dropping a running appliance abandons it (fast, like the binary's kill in tests).
impl Drop for Running {
    fn drop(&mut self) {
        if let Err(e) = self.finish(Request::Abandon) {
            tracing::error!(error = %e, "appliance stopped with an error");
        }
    }
}

/// Starts the appliance on a thread of its own and returns once it is up, with what it bound
/// (port 0 in `api.listen` or a TCP source's `listen` gets a free port). Tests use this.
pub fn start(resolved: Resolved) -> anyhow::Result<Running> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
    let thread = std::thread::Builder::new()
        .name("edgewatch-app".into())
        .spawn(move || {
            serve(resolved, Control::Channel(rx), move |b| {
                let _ = ready_tx.send(b);
            })
        })
        .context("cannot start the appliance thread")?;
    match ready_rx.recv() {
        Ok(bound) => Ok(Running {
            bound,
            control: tx,
            thread: Some(thread),
        }),
        // It ended before it was up: its error says why.
        Err(_) => match thread.join() {
            Ok(Ok(())) => Err(anyhow::anyhow!("the appliance stopped during start-up")),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(anyhow::anyhow!(
                "the appliance thread panicked during start-up"
            )),
        },
    }
}

/// Internal alerts for what the store could not restore.
fn store_alerts(
    node: &str,
    damage: &[(String, u64)],
    recovery: Option<&crate::store::Recovery>,
) -> Vec<crate::model::Alert> {
    let now = now_ms();
    let alert = |metric: String, message: String| crate::model::Alert {
        id: format!("store-{now:x}-{metric}"),
        device: node.to_string(),
        metric,
        detector: "store_integrity".into(),
        severity: crate::model::Severity::Critical,
        state: crate::model::AlertState::Firing,
        ts: now,
        value: 1.0,
        score: 1.0,
        anomaly: 1.0,
        raised_at: now,
        resolved_at: None,
        message,
    };
    let mut out: Vec<_> = damage
        .iter()
        .map(|(tree, n)| {
            alert(
                format!("store.{tree}"),
                format!("{n} damaged records in the store's {tree} could not be restored"),
            )
        })
        .collect();
    if let Some(r) = recovery {
        out.push(alert(
            "store.database".into(),
            format!(
                "the store could not be opened ({}); moved aside to {}, started fresh",
                r.reason,
                r.moved_to.display()
            ),
        ));
    }
    out
}

/// Descriptors the TCP servers may hold between them (their `max_clients`), kept from the API.
fn tcp_clients(cfg: &crate::config::Config) -> usize {
    cfg.sources
        .iter()
        .map(|s| match s {
            crate::config::SourceConfig::Tcp(t) => match &t.mode {
                crate::config::TcpMode::Server { max_clients, .. } => *max_clients,
                crate::config::TcpMode::Client { .. } => 1,
            },
            _ => 0,
        })
        .sum()
}

/// Runs the appliance until SIGINT or SIGTERM (SIGHUP reloads). Blocks the calling thread.
pub fn run(resolved: Resolved) -> anyhow::Result<()> {
    serve(resolved, Control::Signals, |_| {})
}

/// Runs the appliance until `control` asks it to stop; `on_ready` gets the bound addresses once
/// it is up. Blocks the calling thread (it runs the actix system).
pub fn serve(
    resolved: Resolved,
    mut control: Control,
    on_ready: impl FnOnce(Bound),
) -> anyhow::Result<()> {
    let cfg = resolved.config.clone();
    let (soft_was, soft) = crate::fds::raise_limit();
    if soft != soft_was {
        tracing::debug!(from = soft_was, to = soft, "file descriptor limit raised");
    }
    for w in crate::config::plaintext_credentials(&cfg) {
        tracing::warn!("{w}");
    }
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("cannot create data directory {}", cfg.data_dir.display()))?;
    let (store, recovery) =
        open_store(&cfg.data_dir, cfg.store.cache_bytes, cfg.store.segment_size)?;
    let saved = store.load_snapshots().context("cannot read saved state")?;
    let mut queues = Vec::new();
    let sender = match &cfg.upstream {
        None => None,
        Some(u) => {
            let token = upstream::read_token(u.token_file.as_deref(), u.token_env.as_deref())
                .context("upstream token (upstream.token_file / upstream.token_env)")?;
            let tls = if u.receivers().iter().any(|r| r.starts_with("wss://")) {
                Some(upstream::tls::client_config(u.ca_file.as_deref()).context("upstream TLS")?)
            } else {
                None
            };
            let (queue, feed) = consumer::feed(
                store.outbox(),
                budget(&u.budget),
                crate::store::SummaryFeed::Upstream,
                &cfg.node_id,
            );
            queues.push(queue);
            let sender =
                upstream::client::Upstream::new(u.clone(), cfg.node_id.clone(), token, tls);
            Some((sender, feed))
        }
    };
    // `[[sink]]`: each gets its own outbox in the store.
    let mut sink_parts = Vec::new();
    for k in &cfg.sinks {
        let outbox = store
            .named_outbox(&k.outbox_name())
            .with_context(|| format!("cannot open the outbox of sink {:?}", k.id()))?;
        let (queue, feed) = consumer::feed(
            outbox,
            budget(k.budget()),
            if k.outbox_summaries() {
                crate::store::SummaryFeed::Every
            } else {
                crate::store::SummaryFeed::None
            },
            &cfg.node_id,
        );
        let mut queue = queue;
        queue.samples = matches!(k, crate::config::SinkConfig::Influxdb(i) if i.samples != crate::config::SampleMode::None);
        queues.push(queue);
        sink_parts.push((k.clone(), feed));
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("edgewatch-io")
        .build()
        .context("cannot start the async runtime")?;
    // actix needs its System (a LocalSet) on top of tokio's multi-thread runtime.
    let system = actix_rt::System::with_tokio_rt(move || runtime);
    let result: anyhow::Result<Vec<Arbiter>> = system.block_on(async move {
        let status = Arc::new(StatusBoard {
            node_id: cfg.node_id.clone(),
            started_at: now_ms(),
            sources: std::sync::RwLock::new(
                cfg.sources
                    .iter()
                    .map(|s| Arc::new(SourceStats::new(s.id(), s.kind())))
                    .collect(),
            ),
            pipeline: PipelineStats::default(),
            upstream: sender.as_ref().map(|(_, f)| (f.stats.clone(), f.outbox.clone())),
            sinks: sink_parts
                .iter()
                .map(|(k, f)| (k.id().to_string(), f.stats.clone(), f.outbox.clone()))
                .collect(),
            store: Default::default(),
        });
        let _ = status.store.set((store.damage(), recovery.clone(), store.writes()));

        let store_arbiter = Arbiter::new();
        let abandoned = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let retention = cfg.store.clone();
        let store_damage = store.damage().counts();
        let history = cfg.store.history.then(|| store.history());
        let store = StoreActor::start_in_arbiter(&store_arbiter.handle(), {
            let abandoned = abandoned.clone();
            move |_| StoreActor::new(store, retention, queues).abandoned_by(abandoned)
        });

        let (events, _) = broadcast::channel(cfg.api.ws_buffer);
        let mut sinks = Vec::new();
        for (k, feed) in sink_parts {
            let id = k.id().to_string();
            let sink = crate::sinks::Built::new(k, &cfg.node_id, &events)
                .with_context(|| format!("sink {id:?}"))?
                .expire_after(cfg.analysis.expire_after.0);
            sinks.push((sink, feed));
        }
        let hub = Hub::new(
            cfg.node_id.clone(),
            cfg.summary_interval.0,
            events.clone(),
            store.clone(),
            status.clone(),
            // Merged summaries for the upstream at its interval; push sinks that want summaries
            // (influxdb, prometheus_remote_write) get every local one (`SummaryFeed::Every`).
            cfg.upstream.as_ref().map(|u| u.summary_interval.0),
        )
        .start();
        // Damage is never silent: raised as internal alerts (device = the node id).
        let internal = store_alerts(&cfg.node_id, &store_damage, recovery.as_ref());
        if !internal.is_empty() {
            hub.do_send(crate::analysis::actor::Alerts(internal));
        }

        let n = shard_count(&resolved);
        let resolved_token = resolved.api_token.clone();
        let resolved_path = resolved.path.clone();
        let policies = Arc::new(Policies {
            source_ids: cfg.sources.iter().map(|s| s.id().to_string()).collect(),
            shards: n,
            resolved,
        });
        let saved = Arc::new(saved);
        let mut senders = Vec::with_capacity(n);
        let mut shards = Vec::with_capacity(n);
        let mut arbiters = vec![store_arbiter];
        for i in 0..n {
            let (tx, rx) = mpsc::channel(cfg.analysis.queue);
            senders.push(tx);
            let arbiter = Arbiter::new();
            let (policies, status, saved, hub, store) =
                (policies.clone(), status.clone(), saved.clone(), hub.clone(), store.clone());
            let persist = cfg.persist_interval.0;
            shards.push(ShardActor::start_in_arbiter(&arbiter.handle(), move |_| {
                let now = now_ms();
                let mut core = ShardCore::new(i, policies, status, now);
                let restored = core.restore(&saved, now);
                if restored > 0 {
                    tracing::info!(shard = i, devices = restored, "state restored");
                }
                ShardActor::new(core, rx, hub.recipient(), store, persist)
            }));
            arbiters.push(arbiter);
        }
        drop(saved);
        hub.do_send(AttachShards(shards.iter().map(|s| s.clone().recipient()).collect()));

        let queues = senders.iter().map(|tx| tx.downgrade()).collect();
        let router = Router::new(senders)
            .with_ts_rule(crate::sources::route::TsRule::new(&cfg.input));
        let api_ingest = router.api_ingest();
        // Starts every source; keeps them (and the router) to apply config reloads on SIGHUP.
        let mut reloader = crate::reload::Reloader::start(
            resolved_path,
            policies.clone(),
            router,
            shards.clone(),
            status.clone(),
        );

        let (addr, server) = api::start(
            cfg.api.listen,
            ApiState {
                node: cfg.node_id.clone(),
                status: status.clone(),
                shards: shards.clone(),
                store: store.clone(),
                events,
                token: resolved_token,
                history,
                history_1m_max_age: cfg.store.history_1m_max_age.as_ms(),
                ingest: api_ingest,
                metrics: cfg.api.metrics.clone(),
                queues,
                data_dir: Some(cfg.data_dir.clone()),
                limits: api::ApiLimits::new(&cfg.api, tcp_clients(&cfg)),
                origins: api::origin::OriginPolicy {
                    allowed: cfg.api.allowed_origins.clone(),
                    hostname: crate::config::host_name().to_ascii_lowercase(),
                },
            },
        )
        .with_context(|| format!("cannot listen on {} (api.listen)", cfg.api.listen))?;
        let server_handle = server.handle();
        actix_rt::spawn(server);
        tracing::info!(
            node = %cfg.node_id,
            shards = n,
            sources = cfg.sources.len(),
            "edgewatch running: dashboard/API at http://{addr}/  live alerts at ws://{addr}/ws  status at http://{addr}/api/status"
        );

        for (sink, feed) in sinks {
            sink.spawn(feed);
        }
        if let Some((sender, feed)) = sender {
            tracing::info!(urls = ?sender.cfg.receivers(), "forwarding alerts and summaries upstream");
            tokio::spawn(upstream::run(sender, feed));
        }

        let ticker = status.clone();
        actix_rt::spawn(async move {
            let mut t = tokio::time::interval(Duration::from_secs(1));
            loop {
                t.tick().await;
                ticker.tick();
            }
        });

        // systemd: READY=1 now that sources, store and API are up; then the watchdog.
        // From here on SIGHUP reloads; it never kills us.
        let mut signals = matches!(control, Control::Signals).then(crate::service::signals::Signals::install);
        crate::service::notify::ready_when_up(&status, &addr.to_string(), Duration::from_secs(10)).await;
        on_ready(Bound { api: addr, status: status.clone() });
        if let Some(interval) = crate::service::notify::watchdog_interval() {
            let mut watched: Vec<crate::service::watchdog::Watched> = shards
                .iter()
                .enumerate()
                .map(|(i, s)| crate::service::watchdog::Watched { name: format!("shard-{i}"), addr: s.clone().recipient() })
                .collect();
            watched.push(crate::service::watchdog::Watched { name: "store".into(), addr: store.clone().recipient() });
            watched.push(crate::service::watchdog::Watched { name: "hub".into(), addr: hub.clone().recipient() });
            tracing::info!(interval = ?interval, actors = watched.len(), "systemd watchdog enabled");
            actix_rt::spawn(crate::service::watchdog::run(watched, interval));
        }

        let how = loop {
            match control.next(&mut signals).await {
                Request::Reload => crate::reload::on_sighup(&mut reloader).await,
                other => break other,
            }
        };
        if how == Request::Abandon {
            tracing::info!("abandoning: no final snapshot");
            abandoned.store(true, std::sync::atomic::Ordering::Relaxed);
            reloader.stop_all();
            server_handle.stop(false).await;
            for a in &arbiters {
                a.stop();
            }
            return Ok(arbiters);
        }
        crate::service::notify::stopping();
        tracing::info!("shutting down: stopping sources, saving state");
        reloader.stop_all();
        server_handle.stop(true).await;
        // Give in-flight batches a moment to reach the shards, then snapshot.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut all = Vec::new();
        for s in &shards {
            match s.send(TakeSnapshot).await {
                Ok(v) => all.extend(v),
                Err(e) => tracing::error!(error = %e, "a shard did not answer at shutdown"),
            }
        }
        let devices = all.len();
        match store.send(SaveSnapshot(all)).await {
            Ok(Ok(())) => tracing::info!(devices, "state saved"),
            Ok(Err(e)) => tracing::error!(error = %e, "final snapshot failed"),
            Err(e) => tracing::error!(error = %e, "store unavailable at shutdown"),
        }
        for a in &arbiters {
            a.stop();
        }
        Ok(arbiters)
    });
    // Wait for the store's and shards' threads, so that sled is closed (its lock released) when
    // this returns: an embedder may open the same data directory again at once.
    drop(system);
    for a in result? {
        if a.join().is_err() {
            tracing::error!("an arbiter thread panicked");
        }
    }
    Ok(())
}

/// Stops a source (at shutdown, or when a reload removes it).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct StopSource;

impl Handler<StopSource> for SourceActor {
    type Result = ();
    fn handle(&mut self, _: StopSource, ctx: &mut Self::Context) {
        ctx.stop();
    }
}
