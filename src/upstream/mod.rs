//! Upstream delivery: a WebSocket client that drains the durable outbox in order (alerts before
//! summaries), resumes after reconnects and deletes only what the receiver acknowledged.

pub mod client;
pub mod merge;
pub mod tls;

pub use client::run;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

use serde::Serialize;

use crate::model::{now_ms, Millis};
use crate::store::{Lane, Outbox};

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot read the token: {0}")]
    Token(String),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("connect: {0}")]
    Connect(String),
    #[error("websocket: {0}")]
    Ws(#[from] tokio_tungstenite::tungstenite::Error),
    #[error("no pong within the timeout")]
    PongTimeout,
    #[error("receiver too slow: a write did not complete in time")]
    WriteTimeout,
    #[error("outbox: {0}")]
    Store(#[from] crate::store::StoreError),
}

/// Counters shown under `upstream` in `/api/status`.
#[derive(Debug, Default)]
pub struct UpstreamStats {
    pub connected: AtomicBool,
    /// Highest seq that is durable on disk (set by the store after each flush).
    pub durable_seq: AtomicU64,
    pub connects: AtomicU64,
    pub sent: AtomicU64,
    pub acked: AtomicU64,
    last_error: Mutex<Option<(Millis, String)>>,
}

impl UpstreamStats {
    pub fn set_error(&self, e: impl Into<String>) {
        if let Ok(mut g) = self.last_error.lock() {
            *g = Some((now_ms(), e.into()));
        }
    }

    pub fn view(&self, outbox: &Outbox) -> UpstreamView {
        UpstreamView {
            connected: self.connected.load(Relaxed),
            connects: self.connects.load(Relaxed),
            sent: self.sent.load(Relaxed),
            acked: self.acked.load(Relaxed),
            last_seq: outbox.last_seq(),
            durable_seq: self.durable_seq.load(Relaxed),
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
pub struct UpstreamView {
    pub connected: bool,
    pub connects: u64,
    pub sent: u64,
    pub acked: u64,
    pub last_seq: u64,
    pub durable_seq: u64,
    pub outbox_alerts: u64,
    pub outbox_summaries: u64,
    pub outbox_bytes: u64,
    pub outbox_alert_bytes: u64,
    pub dropped: u64,
    pub last_error: Option<crate::status::ErrorView>,
}

/// Reads a bearer token from a file (trimmed) or an environment variable.
pub fn read_token(
    file: Option<&std::path::Path>,
    env: Option<&str>,
) -> Result<Option<String>, UpstreamError> {
    let t = match (file, env) {
        (Some(f), _) => std::fs::read_to_string(f)
            .map_err(|e| UpstreamError::Token(format!("{}: {e}", f.display())))?
            .trim()
            .to_string(),
        (None, Some(var)) => std::env::var(var)
            .map_err(|_| UpstreamError::Token(format!("environment variable {var} is not set")))?
            .trim()
            .to_string(),
        (None, None) => return Ok(None),
    };
    if t.is_empty() {
        return Err(UpstreamError::Token("the token is empty".into()));
    }
    Ok(Some(t))
}
