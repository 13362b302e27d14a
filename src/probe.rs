//! `edgewatch probe`: runs one configured source alone and prints every sample it decodes (bad
//! frames go to the log with their reason), with no analysis and no store, before devices exist.
//!
//! The source runs exactly as in the appliance (same transport, framer, decoder and `Intake`);
//! only the shard side of its router is a printer. Nothing is written to the data directory.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::config::{Resolved, SourceConfig, TcpMode};
use crate::sources::route::{Ingest, Router};
use crate::sources::{self, SourceError};
use crate::status::SourceStats;

/// Why a probe could not run.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("no source {id:?} in the config (sources: {known})")]
    NoSuchSource { id: String, known: String },
    #[error("--listen applies to a TCP source in server mode only")]
    ListenNotServer,
    #[error("source {id:?}: {source}{hint}")]
    Source {
        id: String,
        #[source]
        source: SourceError,
        hint: &'static str,
    },
    #[error("cannot write the output: {0}")]
    Output(#[from] std::io::Error),
}

/// What to probe.
#[derive(Debug, Clone)]
pub struct Options {
    /// The source's `id`.
    pub source: String,
    /// Stop after this long (`None`: until the future passed as `stop` completes).
    pub seconds: Option<u64>,
    /// For a TCP server source: listen here instead (the service may hold the configured port).
    pub listen: Option<SocketAddr>,
}

/// The counts at the end of a probe.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub samples: u64,
    pub frames_accepted: u64,
    pub frames_rejected: u64,
}

/// The source `opts.source` of `resolved`, ready to run alone: a TCP listener moved to
/// `opts.listen`, an MQTT client under a client id of its own with a clean session (so the
/// broker neither disconnects the running service nor keeps a session for the probe).
fn probe_config(resolved: &Resolved, opts: &Options) -> Result<(u16, SourceConfig), ProbeError> {
    let sources = &resolved.config.sources;
    let Some(idx) = sources.iter().position(|s| s.id() == opts.source) else {
        let mut known: Vec<&str> = sources.iter().map(|s| s.id()).collect();
        known.sort_unstable();
        return Err(ProbeError::NoSuchSource {
            id: opts.source.clone(),
            known: if known.is_empty() {
                "none".into()
            } else {
                known.join(", ")
            },
        });
    };
    let mut cfg = sources[idx].clone();
    match (&mut cfg, opts.listen) {
        (SourceConfig::Tcp(t), Some(addr)) => match &mut t.mode {
            TcpMode::Server { listen, .. } => *listen = addr,
            TcpMode::Client { .. } => return Err(ProbeError::ListenNotServer),
        },
        (_, Some(_)) => return Err(ProbeError::ListenNotServer),
        (SourceConfig::Mqtt(m), None) => {
            m.client_id = m.client_id.as_ref().map(|c| format!("{c}-probe"));
            m.clean_session = true;
        }
        _ => {}
    }
    Ok((u16::try_from(idx).unwrap_or(u16::MAX), cfg))
}

/// A hint for errors a running service typically causes.
fn hint(e: &SourceError) -> &'static str {
    let text = e.to_string();
    if text.contains("in use") {
        " (is the service running? `sudo systemctl stop edgewatch`, or probe with --listen)"
    } else if text.contains("busy") || text.contains("locked") {
        " (is the service running? `sudo systemctl stop edgewatch` first)"
    } else {
        ""
    }
}

/// Runs the source until `opts.seconds` pass or `stop` completes, writing one line per sample to
/// `out`: `ts device metric value` (ts in unix ms). A TCP server source logs where it listens.
pub async fn run(
    resolved: &Resolved,
    opts: &Options,
    out: &mut (dyn Write + Send),
    stop: impl std::future::Future<Output = ()>,
) -> Result<Tally, ProbeError> {
    let (idx, cfg) = probe_config(resolved, opts)?;
    let stats = Arc::new(SourceStats::new(cfg.id(), cfg.kind()));
    let (tx, mut rx) = mpsc::channel::<Ingest>(64);
    let make = sources::factory(&cfg, idx, Router::new(vec![tx]), &stats);
    let mut task = tokio::spawn(make());

    let deadline = async {
        match opts.seconds {
            Some(s) => tokio::time::sleep(Duration::from_secs(s)).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(deadline, stop);
    let ended = loop {
        tokio::select! {
            batch = rx.recv() => {
                let Some(ingest) = batch else { break None };
                for s in ingest.batch.iter() {
                    writeln!(out, "{} {} {} {}", s.ts, s.device, s.metric, s.value)?;
                }
                out.flush()?;
            }
            res = &mut task => break Some(res),
            _ = &mut deadline => break None,
            _ = &mut stop => break None,
        }
    };
    task.abort();
    // Samples already decoded when the probe stopped are still printed.
    while let Ok(ingest) = rx.try_recv() {
        for s in ingest.batch.iter() {
            writeln!(out, "{} {} {} {}", s.ts, s.device, s.metric, s.value)?;
        }
    }
    out.flush()?;
    if let Some(res) = ended {
        let err = match res {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e),
            Err(e) => Some(SourceError::Config(format!("the source task failed: {e}"))),
        };
        if let Some(source) = err {
            let hint = hint(&source);
            return Err(ProbeError::Source {
                id: opts.source.clone(),
                source,
                hint,
            });
        }
    }
    Ok(Tally {
        samples: stats.samples.load(Relaxed),
        frames_accepted: stats.frames_accepted.load(Relaxed),
        frames_rejected: stats.frames_rejected.load(Relaxed),
    })
}
