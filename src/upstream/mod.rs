//! Upstream delivery: a WebSocket output of the shared outbox consumer (`sinks::consumer`) that
//! says hello with where the outbox stands, sends messages as text frames and reads acks.

pub mod client;
pub mod merge;
pub mod tls;

pub use client::run;

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

/// The delivery counters of `/api/status` are the shared consumer's.
pub use crate::sinks::consumer::{DeliveryStats as UpstreamStats, DeliveryView as UpstreamView};

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
