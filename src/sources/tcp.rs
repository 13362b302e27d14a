//! Raw TCP source: server mode (many concurrent clients) or client mode (connects out and
//! reconnects with backoff). Each connection frames lines, decodes them and routes the samples.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};

use super::backoff::Backoff;
use super::route::{Closed, Router};
use super::SourceError;
use crate::config::{TcpMode, TcpSource};
use crate::decode::{decode, framing::LineFramer};
use crate::model::now_ms;
use crate::status::{RateLimitedLog, SourceStats};

const READ_BUF: usize = 64 * 1024;

pub async fn run(
    cfg: Arc<TcpSource>,
    idx: u16,
    router: Router,
    stats: Arc<SourceStats>,
) -> Result<(), SourceError> {
    match cfg.mode {
        TcpMode::Server => serve(cfg, idx, router, stats).await,
        TcpMode::Client => connect_loop(cfg, idx, router, stats).await,
    }
}

async fn serve(
    cfg: Arc<TcpSource>,
    idx: u16,
    router: Router,
    stats: Arc<SourceStats>,
) -> Result<(), SourceError> {
    let addr = cfg.listen.ok_or_else(|| SourceError::Bind {
        addr: "(none)".into(),
        source: std::io::Error::other("no listen address"),
    })?;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| SourceError::Bind {
            addr: addr.to_string(),
            source,
        })?;
    let local = listener.local_addr().map_or(addr, |a| a);
    tracing::info!(source = %cfg.id, "tcp source listening on {local}");
    stats.set_listen_addr(local);
    stats.set_healthy(true);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // e.g. out of file descriptors: wait a little instead of spinning
                tracing::warn!(source = %cfg.id, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if stats.connections.load(Relaxed) >= cfg.max_clients as u64 {
            tracing::warn!(source = %cfg.id, %peer, limit = cfg.max_clients, "connection refused: too many clients");
            drop(stream);
            continue;
        }
        let (cfg, router, stats) = (cfg.clone(), router.clone(), stats.clone());
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            stats.connections.fetch_add(1, Relaxed);
            stats.connects_total.fetch_add(1, Relaxed);
            tracing::debug!(source = %cfg.id, %peer, "client connected");
            let r = read_frames(stream, &peer.to_string(), &cfg, idx, &router, &stats).await;
            stats.connections.fetch_sub(1, Relaxed);
            tracing::debug!(source = %cfg.id, %peer, result = ?r, "client disconnected");
        });
    }
}

async fn connect_loop(
    cfg: Arc<TcpSource>,
    idx: u16,
    router: Router,
    stats: Arc<SourceStats>,
) -> Result<(), SourceError> {
    let target = cfg.connect.clone().unwrap_or_default();
    let mut backoff = Backoff::new(cfg.backoff_min.0, cfg.backoff_max.0);
    loop {
        match tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(&target)).await {
            Ok(Ok(stream)) => {
                backoff.reset();
                let _ = stream.set_nodelay(true);
                tracing::info!(source = %cfg.id, peer = %target, "connected");
                stats.set_healthy(true);
                stats.connections.store(1, Relaxed);
                stats.connects_total.fetch_add(1, Relaxed);
                let r = read_frames(stream, &target, &cfg, idx, &router, &stats).await;
                stats.connections.store(0, Relaxed);
                stats.set_healthy(false);
                match r {
                    Err(Closed) => return Err(SourceError::Closed(Closed)),
                    Ok(why) => {
                        tracing::warn!(source = %cfg.id, peer = %target, reason = %why, "connection lost");
                        stats.set_error(format!("connection to {target} lost: {why}"));
                    }
                }
            }
            Ok(Err(e)) => {
                stats.set_healthy(false);
                stats.set_error(format!("connect to {target}: {e}"));
            }
            Err(_) => {
                stats.set_healthy(false);
                stats.set_error(format!("connect to {target}: timed out"));
            }
        }
        let delay = backoff.next_delay();
        tracing::debug!(source = %cfg.id, peer = %target, ?delay, "reconnecting after backoff");
        tokio::time::sleep(delay).await;
    }
}

/// Reads one connection until EOF or error; returns why it ended, or `Closed` on shutdown.
async fn read_frames(
    mut stream: TcpStream,
    peer: &str,
    cfg: &TcpSource,
    idx: u16,
    router: &Router,
    stats: &SourceStats,
) -> Result<String, Closed> {
    let mut framer = LineFramer::new(cfg.max_frame);
    let mut buf = vec![0u8; READ_BUF];
    let mut sink = router.sink(idx);
    let mut log = RateLimitedLog::new(5, Duration::from_secs(10));
    let why = loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) => break "closed by peer".to_string(),
            Ok(n) => n,
            Err(e) => break e.to_string(),
        };
        sink.set_default_ts(now_ms());
        let (mut accepted, mut rejected) = (0u64, 0u64);
        framer.feed(&buf[..n], |frame| {
            let reason = match frame {
                Ok(line) => match decode(cfg.format, line, None, &mut sink) {
                    Ok(0) => return,
                    Ok(_) => {
                        accepted += 1;
                        return;
                    }
                    Err(e) => format!("{e}; frame: {}", excerpt(line)),
                },
                Err(e) => e.to_string(),
            };
            rejected += 1;
            let (allow, suppressed) = log.allow();
            if let Some(n) = suppressed {
                tracing::warn!(source = %cfg.id, %peer, suppressed = n, "more bad frames were not logged");
            }
            if allow {
                tracing::warn!(source = %cfg.id, %peer, %reason, "bad frame skipped");
            }
        });
        stats.frames_accepted.fetch_add(accepted, Relaxed);
        stats.frames_rejected.fetch_add(rejected, Relaxed);
        stats.samples.fetch_add(sink.take_pushed(), Relaxed);
        sink.flush().await?;
    };
    if let Some(len) = framer.reset() {
        stats.frames_rejected.fetch_add(1, Relaxed);
        tracing::warn!(source = %cfg.id, %peer, bytes = len, "partial frame at disconnect dropped");
    }
    Ok(why)
}

/// The start of a frame, printable, for logs.
pub fn excerpt(frame: &[u8]) -> String {
    const MAX: usize = 80;
    let cut = &frame[..frame.len().min(MAX)];
    let mut s: String = String::from_utf8_lossy(cut).escape_debug().collect();
    if frame.len() > MAX {
        s.push('…');
    }
    s
}
