//! Wires the appliance together: store → hub → analyzer shards (one arbiter each) → router →
//! sources, then the API; and shuts it down gracefully (final snapshot and flush) on SIGINT/SIGTERM.

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
use crate::sources::route::Router;
use crate::sources::SourceActor;
use crate::status::{PipelineStats, SourceStats, StatusBoard};
use crate::store::{Budget, SaveSnapshot, Store, StoreActor, UpstreamQueue};
use crate::upstream;

/// Number of analyzer shards for a config (0 = one per core).
pub fn shard_count(resolved: &Resolved) -> usize {
    match resolved.config.analysis.shards {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
}

/// How many damaged databases are kept aside for inspection (`<data_dir>.damaged-<ms>`).
const KEEP_DAMAGED: usize = 3;

/// Opens the store; a damaged database is moved aside (never a crash loop), a full disk is
/// reported and retried every 10 s.
fn open_store(
    dir: &std::path::Path,
    cache: u64,
) -> anyhow::Result<(Store, Option<crate::store::Recovery>)> {
    loop {
        match crate::store::open_or_recover(dir, cache, KEEP_DAMAGED) {
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

/// Runs the appliance until SIGINT or SIGTERM. Blocks the calling thread.
pub fn run(resolved: Resolved) -> anyhow::Result<()> {
    let cfg = resolved.config.clone();
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("cannot create data directory {}", cfg.data_dir.display()))?;
    let (store, recovery) = open_store(&cfg.data_dir, cfg.store.cache_bytes)?;
    let saved = store.load_snapshots().context("cannot read saved state")?;
    let upstream = match &cfg.upstream {
        None => None,
        Some(u) => {
            let token = upstream::read_token(u.token_file.as_deref(), u.token_env.as_deref())
                .context("upstream token (upstream.token_file / upstream.token_env)")?;
            let tls = if u.url.starts_with("wss://") {
                Some(upstream::tls::client_config(u.ca_file.as_deref()).context("upstream TLS")?)
            } else {
                None
            };
            let (flushed_tx, flushed_rx) = tokio::sync::watch::channel(0);
            let budget = Budget {
                max_bytes: u.budget.max_bytes,
                max_age_ms: u.budget.max_age.as_ms(),
                alert_max_bytes: u.budget.alert_max_bytes.unwrap_or(u.budget.max_bytes),
            };
            let stats = Arc::new(upstream::UpstreamStats::default());
            let queue = UpstreamQueue {
                outbox: store.outbox(),
                summaries: true,
                node: cfg.node_id.clone(),
                budget,
                flushed: flushed_tx,
                stats: stats.clone(),
            };
            let sender = upstream::client::Upstream {
                cfg: u.clone(),
                node: cfg.node_id.clone(),
                outbox: store.outbox(),
                flushed: flushed_rx,
                stats,
                token,
                tls,
            };
            Some((queue, sender))
        }
    };
    let (mut queues, sender) = match upstream {
        Some((q, s)) => (vec![q], Some(s)),
        None => (Vec::new(), None),
    };
    // `[[sink]]`: each gets its own outbox in the store.
    let mut sink_parts = Vec::new();
    for k in &cfg.sinks {
        let crate::config::SinkConfig::Mqtt(m) = k;
        let outbox = store
            .named_outbox(&format!("mqtt_{}", m.id))
            .with_context(|| format!("cannot open the outbox of sink {:?}", m.id))?;
        let (flushed_tx, flushed_rx) = tokio::sync::watch::channel(0);
        let stats = Arc::new(upstream::UpstreamStats::default());
        queues.push(UpstreamQueue {
            outbox: outbox.clone(),
            summaries: false,
            node: cfg.node_id.clone(),
            budget: Budget {
                max_bytes: m.budget.max_bytes,
                max_age_ms: m.budget.max_age.as_ms(),
                alert_max_bytes: m.budget.alert_max_bytes.unwrap_or(m.budget.max_bytes),
            },
            flushed: flushed_tx,
            stats: stats.clone(),
        });
        sink_parts.push((m.clone(), outbox, flushed_rx, stats));
    }

    let system = actix_rt::System::with_tokio_rt(|| {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("edgewatch-io")
            .build()
            .unwrap_or_else(|e| {
                // Building a runtime fails only when the OS refuses threads; nothing to run then.
                eprintln!("edgewatch: cannot start the async runtime: {e}");
                std::process::exit(1)
            })
    });
    let result: anyhow::Result<()> = system.block_on(async move {
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
            upstream: sender.as_ref().map(|s| (s.stats.clone(), s.outbox.clone())),
            sinks: sink_parts
                .iter()
                .map(|(m, o, _, st)| (m.id.clone(), st.clone(), o.clone()))
                .collect(),
            store: Default::default(),
        });
        let _ = status.store.set((store.damage(), recovery.clone()));

        let store_arbiter = Arbiter::new();
        let retention = cfg.store.clone();
        let store_damage = store.damage().counts();
        let store = StoreActor::start_in_arbiter(&store_arbiter.handle(), move |_| StoreActor::new(store, retention, queues));

        let (events, _) = broadcast::channel(cfg.api.ws_buffer);
        let mut sinks = Vec::new();
        for (m, outbox, flushed, stats) in sink_parts {
            let id = m.id.clone();
            let sink = crate::sinks::mqtt::Sink::new(m, cfg.node_id.clone(), outbox, flushed, stats, events.subscribe())
                .with_context(|| format!("sink {id:?}"))?;
            sinks.push(sink);
        }
        let hub = Hub::new(
            cfg.node_id.clone(),
            cfg.summary_interval.0,
            events.clone(),
            store.clone(),
            status.clone(),
            cfg.upstream.as_ref().map(|u| u.summary_interval.0),
        )
        .start();
        // Damage is never silent: raised as internal alerts (device = the node id).
        let internal = store_alerts(&cfg.node_id, &store_damage, recovery.as_ref());
        if !internal.is_empty() {
            hub.do_send(crate::hub::Event::Alerts(internal));
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
                ShardActor::new(core, rx, hub, store, persist)
            }));
            arbiters.push(arbiter);
        }
        drop(saved);
        hub.do_send(AttachShards(shards.clone()));

        let router = Router::new(senders);
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

        for sink in sinks {
            tracing::info!(sink = %sink.cfg.id, url = %sink.cfg.url, "publishing alerts to an MQTT broker");
            tokio::spawn(crate::sinks::mqtt::run(sink));
        }
        if let Some(sender) = sender {
            tracing::info!(url = %sender.cfg.url, "forwarding alerts and summaries upstream");
            tokio::spawn(upstream::run(sender));
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
        let mut signals = crate::service::signals::Signals::install();
        crate::service::notify::ready_when_up(&status, &addr.to_string(), Duration::from_secs(10)).await;
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

        while signals.next().await == crate::service::signals::Request::Reload {
            crate::reload::on_sighup(&mut reloader).await;
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
        Ok(())
    });
    result
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
