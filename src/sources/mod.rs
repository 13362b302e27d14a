//! Sources turn a transport into samples for the router. Each runs as a task supervised by a
//! `SourceActor`, which restarts it through the retry layer (`backoff::Retry`) when it fails or panics.
//!
//! A source kind is one file (+ its config struct); all of them feed an `intake::Intake`.

pub(crate) mod backoff;
pub mod exec;
pub mod file;
pub mod host;
pub mod http;
pub mod intake;
pub(crate) mod modbus;
pub(crate) mod mqtt;
pub mod route;
pub(crate) mod serial;
pub mod sim;
pub(crate) mod tcp;
pub mod tls;
pub(crate) mod udp;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use actix::prelude::*;

use crate::config::SourceConfig;
use crate::status::SourceStats;
use backoff::Retry;
use route::Router;

/// Why a source task stopped.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("analysis stopped")]
    Closed(#[from] route::Closed),
    #[error("{0}")]
    Mqtt(#[from] crate::mqtt::MqttError),
    #[error("config: {0}")]
    Config(String),
}

pub(crate) type TaskFuture = Pin<Box<dyn Future<Output = Result<(), SourceError>> + Send>>;

/// A factory for a source's task: each call starts it afresh with its own config, router and stats.
fn task<C, F, Fut>(
    cfg: &C,
    idx: u16,
    router: Router,
    stats: &Arc<SourceStats>,
    run: F,
) -> Box<dyn Fn() -> TaskFuture>
where
    C: Clone + Send + Sync + 'static,
    F: Fn(Arc<C>, u16, Router, Arc<SourceStats>) -> Fut + 'static,
    Fut: Future<Output = Result<(), SourceError>> + Send + 'static,
{
    let (cfg, stats) = (Arc::new(cfg.clone()), stats.clone());
    Box::new(move || Box::pin(run(cfg.clone(), idx, router.clone(), stats.clone())))
}

/// The task factory of the source `cfg` (index `idx` in the config).
pub(crate) fn factory(
    cfg: &SourceConfig,
    idx: u16,
    router: Router,
    stats: &Arc<SourceStats>,
) -> Box<dyn Fn() -> TaskFuture> {
    match cfg {
        SourceConfig::Sim(c) => task(c, idx, router, stats, sim::run),
        SourceConfig::Tcp(c) => task(c, idx, router, stats, tcp::run),
        SourceConfig::Serial(c) => task(c, idx, router, stats, serial::run),
        SourceConfig::Modbus(c) => task(c, idx, router, stats, modbus::run),
        SourceConfig::Mqtt(c) => task(c, idx, router, stats, mqtt::run),
        SourceConfig::Udp(c) => task(c, idx, router, stats, udp::run),
        SourceConfig::Http(c) => task(c, idx, router, stats, http::run),
        SourceConfig::Host(c) => task(c, idx, router, stats, host::run),
        SourceConfig::File(c) => task(c, idx, router, stats, file::run),
        SourceConfig::Exec(c) => task(c, idx, router, stats, exec::run),
    }
}

/// Supervisor shell: owns one source task and restarts it after a failure.
pub struct SourceActor {
    stats: Arc<SourceStats>,
    make: Box<dyn Fn() -> TaskFuture>,
    task: Option<tokio::task::AbortHandle>,
    retry: Retry,
}

impl SourceActor {
    /// Starts the source described by `cfg` (index `idx` in the config).
    pub fn for_config(
        cfg: &SourceConfig,
        idx: u16,
        router: Router,
        stats: Arc<SourceStats>,
    ) -> Self {
        let make = factory(cfg, idx, router, &stats);
        let retry = match cfg {
            SourceConfig::Tcp(t) => Retry::new(t.backoff_min.0, t.backoff_max.0),
            SourceConfig::Serial(s) => Retry::new(s.backoff_min.0, s.backoff_max.0),
            SourceConfig::Modbus(m) => Retry::new(m.backoff_min.0, m.backoff_max.0),
            SourceConfig::Mqtt(m) => Retry::new(m.backoff_min.0, m.backoff_max.0),
            SourceConfig::Udp(u) => Retry::new(u.backoff_min.0, u.backoff_max.0),
            SourceConfig::Http(h) => Retry::new(h.backoff_min.0, h.backoff_max.0),
            SourceConfig::Exec(x) => Retry::new(x.backoff_min.0, x.backoff_max.0),
            SourceConfig::Host(_) | SourceConfig::File(_) | SourceConfig::Sim(_) => Retry::new(
                std::time::Duration::from_millis(200),
                std::time::Duration::from_secs(10),
            ),
        };
        SourceActor {
            stats,
            make,
            task: None,
            retry,
        }
    }

    fn launch(&mut self, ctx: &mut Context<Self>) {
        let handle = tokio::spawn((self.make)());
        // A task that ran for a healthy period restarts after the minimum delay again.
        self.retry.up();
        self.task = Some(handle.abort_handle());
        ctx.spawn(actix::fut::wrap_future(handle).map(|res, act: &mut Self, ctx| {
            act.task = None;
            act.stats.set_healthy(false);
            let why = match res {
                Ok(Ok(())) => return,
                Ok(Err(SourceError::Closed(_))) => return,
                Ok(Err(e)) => e.to_string(),
                Err(e) if e.is_cancelled() => return,
                Err(e) => format!("task panicked: {e}"),
            };
            let delay = act.retry.failed();
            tracing::error!(source = %act.stats.id, error = %why, retry_in = ?delay, "source failed; restarting");
            act.stats.set_error(why);
            act.stats.restarts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            ctx.run_later(delay, |act, ctx| act.launch(ctx));
        }));
    }
}

impl Actor for SourceActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.launch(ctx);
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}
