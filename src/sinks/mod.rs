//! Sinks besides `/ws` and `[upstream]`: places alerts and summaries are delivered to
//! (`[[sink]]` in the config). Each has its own durable outbox in the store.

pub mod alertmanager;
pub mod consumer;
pub mod homeassistant;
pub mod http;
pub mod influx;
pub mod mqtt;
pub mod remote_write;
pub mod webhook;

use std::sync::Arc;

use tokio::sync::broadcast;

use crate::config::SinkConfig;
use crate::protocol::Wire;

/// One `[[sink]]`, built at start-up (secrets and certificates read), ready to run.
pub enum Built {
    Mqtt(Box<mqtt::Sink>),
    Alertmanager(alertmanager::Alertmanager),
    Webhook(webhook::Webhook),
    Influx(Box<influx::Influx>),
    RemoteWrite(remote_write::Sink),
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Mqtt(#[from] mqtt::SinkError),
    #[error(transparent)]
    Http(#[from] http::PushError),
}

impl Built {
    pub fn new(
        k: SinkConfig,
        node: &str,
        events: &broadcast::Sender<Arc<Wire>>,
    ) -> Result<Self, BuildError> {
        Ok(match k {
            SinkConfig::Mqtt(m) => Built::Mqtt(Box::new(mqtt::Sink::new(
                m,
                node.into(),
                events.subscribe(),
            )?)),
            SinkConfig::Alertmanager(a) => {
                Built::Alertmanager(alertmanager::Alertmanager::new(a, node.into())?)
            }
            SinkConfig::Webhook(w) => Built::Webhook(webhook::Webhook::new(w)?),
            SinkConfig::Influxdb(i) => {
                Built::Influx(Box::new(influx::Influx::new(i, node.into())?))
            }
            SinkConfig::PrometheusRemoteWrite(r) => {
                Built::RemoteWrite(remote_write::Sink::new(r, node.into()))
            }
        })
    }

    /// Home Assistant discovery removes entities of series the analysis would have expired.
    pub fn expire_after(self, after: std::time::Duration) -> Self {
        if let Built::Mqtt(s) = &self {
            s.expire_after(after);
        }
        self
    }

    /// Runs the sink's outbox consumer on the runtime until the appliance stops.
    pub fn spawn(self, feed: consumer::Feed) {
        match self {
            Built::Mqtt(s) => {
                tracing::info!(sink = %s.cfg.id, url = %s.cfg.url, "publishing alerts to an MQTT broker");
                tokio::spawn(mqtt::run(*s, feed));
            }
            Built::Alertmanager(s) => {
                tracing::info!(sink = %s.id(), "sending alerts to Alertmanager");
                tokio::spawn(consumer::run(s, feed));
            }
            Built::Webhook(s) => {
                tracing::info!(sink = %s.id(), "posting alert transitions to a webhook");
                tokio::spawn(consumer::run(s, feed));
            }
            Built::Influx(mut s) => {
                tracing::info!(sink = %s.id(), "writing summaries and alerts to InfluxDB");
                s.count_into(feed.stats.clone());
                tokio::spawn(consumer::run(*s, feed));
            }
            Built::RemoteWrite(s) => {
                tracing::info!(sink = %s.cfg.id, url = %s.cfg.url, "writing series to a Prometheus remote-write receiver");
                tokio::spawn(consumer::run(s, feed));
            }
        }
    }
}
