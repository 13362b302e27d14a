//! The HTTP client the push sinks share: ureq (blocking, run in `spawn_blocking`) with rustls/ring,
//! configured headers (secrets read from files), and answers sorted into retry or give up.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("HTTP {code}: {body}")]
    Status { code: u16, body: String },
    #[error("{0}")]
    Transport(String),
    #[error("{0}")]
    Setup(String),
    #[error("outbox: {0}")]
    Store(#[from] StoreError),
}

impl PushError {
    /// The receiver refused the content itself (400, 422): sending it again cannot help.
    pub fn rejected(&self) -> bool {
        matches!(
            self,
            PushError::Status {
                code: 400 | 422,
                ..
            }
        )
    }
}

/// One sink's HTTP client: an agent (connection pool, timeout, TLS) and its fixed headers.
#[derive(Clone)]
pub struct Client {
    agent: ureq::Agent,
    headers: Vec<(String, String)>,
}

/// At most this much of an error answer's body is kept for the log.
const ERROR_BODY: usize = 300;

impl Client {
    /// Reads `header_files` now, so a missing secret is an error at start.
    pub fn new(
        headers: &BTreeMap<String, String>,
        header_files: &BTreeMap<String, PathBuf>,
        ca_file: Option<&std::path::Path>,
        timeout: Duration,
    ) -> Result<Self, PushError> {
        let mut hs: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (k, f) in header_files {
            hs.push((k.clone(), read_secret(f)?));
        }
        let tls = crate::upstream::tls::client_config(ca_file)
            .map_err(|e| PushError::Setup(e.to_string()))?;
        let agent = ureq::AgentBuilder::new()
            .timeout(timeout)
            .tls_config(tls)
            .user_agent(concat!("edgewatch/", env!("CARGO_PKG_VERSION")))
            .build();
        Ok(Client { agent, headers: hs })
    }

    /// POSTs `body`; `Ok` only on a 2xx answer.
    pub async fn post(
        &self,
        url: String,
        extra: Vec<(&'static str, String)>,
        body: Vec<u8>,
    ) -> Result<(), PushError> {
        let c = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut r = c.agent.post(&url);
            for (k, v) in &c.headers {
                r = r.set(k, v);
            }
            for (k, v) in &extra {
                r = r.set(k, v);
            }
            match r.send_bytes(&body) {
                Ok(_) => Ok(()),
                Err(ureq::Error::Status(code, resp)) => {
                    let mut body = resp.into_string().unwrap_or_default();
                    if body.len() > ERROR_BODY {
                        let mut cut = ERROR_BODY;
                        while !body.is_char_boundary(cut) {
                            cut -= 1;
                        }
                        body.truncate(cut);
                    }
                    Err(PushError::Status {
                        code,
                        body: body.trim().to_string(),
                    })
                }
                Err(e) => Err(PushError::Transport(e.to_string())),
            }
        })
        .await
        .map_err(|e| PushError::Transport(format!("request task: {e}")))?
    }
}

/// A secret from a file, trimmed of surrounding whitespace.
pub fn read_secret(f: &std::path::Path) -> Result<String, PushError> {
    std::fs::read_to_string(f)
        .map(|s| s.trim().to_string())
        .map_err(|e| PushError::Setup(format!("{}: {e}", f.display())))
}

/// Unix milliseconds as RFC 3339 (UTC).
pub fn rfc3339(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".into())
}
