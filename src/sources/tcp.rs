//! Raw TCP source: server mode (many concurrent clients) or client mode (connects out and
//! reconnects through the retry layer). Each connection feeds its own `Framed` intake.

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};

use super::backoff::Retry;
use super::intake::{Decoder, Framed, Intake, Origin};
use super::route::{Closed, Router};
use super::SourceError;
use crate::config::{TcpMode, TcpSource};
use crate::decode::framing::Delimiter;
use crate::status::SourceStats;

const READ_BUF: usize = 64 * 1024;
/// Longest a connect may take in client mode.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn run(
    cfg: Arc<TcpSource>,
    idx: u16,
    router: Router,
    stats: Arc<SourceStats>,
) -> Result<(), SourceError> {
    match &cfg.mode {
        TcpMode::Server {
            listen,
            max_clients,
        } => serve(&cfg, *listen, *max_clients, idx, router, stats).await,
        TcpMode::Client { connect } => connect_loop(&cfg, connect, idx, router, stats).await,
    }
}

/// One connection's intake: framer, decoder, sink, counters and reject log.
fn framed(cfg: &TcpSource, idx: u16, router: &Router, stats: &Arc<SourceStats>) -> Framed {
    Framed::new(
        Intake::new(router, idx, stats.clone(), Origin::Peer),
        cfg.max_frame,
        Delimiter::Newline,
        Decoder::Format {
            format: cfg.format,
            settings: cfg.settings(),
        },
    )
}

async fn serve(
    cfg: &Arc<TcpSource>,
    addr: SocketAddr,
    max_clients: usize,
    idx: u16,
    router: Router,
    stats: Arc<SourceStats>,
) -> Result<(), SourceError> {
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
        if stats.connections.load(Relaxed) >= max_clients as u64 {
            tracing::warn!(source = %cfg.id, %peer, limit = max_clients, "connection refused: too many clients");
            drop(stream);
            continue;
        }
        let mut intake = framed(cfg, idx, &router, &stats);
        intake.intake.set_from(peer.to_string());
        let (id, stats) = (cfg.id.clone(), stats.clone());
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            stats.connections.fetch_add(1, Relaxed);
            stats.connects_total.fetch_add(1, Relaxed);
            tracing::debug!(source = %id, %peer, "client connected");
            let r = read_frames(stream, &mut intake).await;
            stats.connections.fetch_sub(1, Relaxed);
            tracing::debug!(source = %id, %peer, result = ?r, "client disconnected");
        });
    }
}

async fn connect_loop(
    cfg: &TcpSource,
    target: &str,
    idx: u16,
    router: Router,
    stats: Arc<SourceStats>,
) -> Result<(), SourceError> {
    let mut retry = Retry::new(cfg.backoff_min.0, cfg.backoff_max.0);
    let mut intake = framed(cfg, idx, &router, &stats);
    intake.intake.set_from(target);
    loop {
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(target)).await {
            Ok(Ok(stream)) => {
                retry.up();
                let _ = stream.set_nodelay(true);
                tracing::info!(source = %cfg.id, peer = %target, "connected");
                stats.set_healthy(true);
                stats.connections.store(1, Relaxed);
                stats.connects_total.fetch_add(1, Relaxed);
                let r = read_frames(stream, &mut intake).await;
                if intake.take_received() {
                    retry.healthy();
                }
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
        let delay = retry.failed();
        tracing::debug!(source = %cfg.id, peer = %target, ?delay, "reconnecting after backoff");
        tokio::time::sleep(delay).await;
    }
}

/// Reads one connection until EOF or error; returns why it ended, or `Closed` on shutdown.
async fn read_frames(mut stream: TcpStream, intake: &mut Framed) -> Result<String, Closed> {
    let mut buf = vec![0u8; READ_BUF];
    let why = loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) => break "closed by peer".to_string(),
            Ok(n) => n,
            Err(e) => break e.to_string(),
        };
        intake.feed(&buf[..n]);
        intake.flush().await?;
    };
    intake.disconnected();
    Ok(why)
}

#[cfg(test)]
mod tests {
    use crate::config::{parse_str, SourceConfig, TcpMode};

    fn parse(body: &str) -> Result<TcpMode, String> {
        let text = format!("node_id = \"n\"\n[[source]]\nid = \"t\"\nkind = \"tcp\"\n{body}");
        let r = parse_str(&text, std::path::Path::new("t.toml")).map_err(|e| e.to_string())?;
        match &r.config.sources[0] {
            SourceConfig::Tcp(t) => Ok(t.mode.clone()),
            _ => Err("not tcp".into()),
        }
    }

    #[test]
    fn every_written_form_is_accepted() {
        let server = TcpMode::Server {
            listen: "127.0.0.1:9000".parse().expect("addr"),
            max_clients: 256,
        };
        assert_eq!(parse("listen = \"127.0.0.1:9000\"\n"), Ok(server.clone()));
        assert_eq!(
            parse("mode = \"server\"\nlisten = \"127.0.0.1:9000\"\nformat = \"json\"\n"),
            Ok(server)
        );
        assert_eq!(
            parse("listen = \"127.0.0.1:9000\"\nmax_clients = 3\n"),
            Ok(TcpMode::Server {
                listen: "127.0.0.1:9000".parse().expect("addr"),
                max_clients: 3
            })
        );
        assert_eq!(
            parse("mode = \"client\"\nconnect = \"hub:9000\"\nformat = \"csv\"\nbackoff_min = \"50ms\"\n"),
            Ok(TcpMode::Client {
                connect: "hub:9000".into()
            })
        );
    }

    #[test]
    fn a_field_of_the_other_mode_is_a_located_error() {
        let e = parse("mode = \"client\"\nconnect = \"hub:9000\"\nmax_clients = 4\n")
            .expect_err("max_clients on a client");
        assert!(
            e.starts_with("t.toml:7:1: unknown field `max_clients`"),
            "{e}"
        );
        assert!(
            e.contains("mode = \"server\"") && e.contains("(field `source[0].max_clients`)"),
            "{e}"
        );
        let e = parse("mode = \"client\"\nconnect = \"hub:9000\"\nlisten = \"0.0.0.0:1\"\n")
            .expect_err("listen on a client");
        assert!(e.starts_with("t.toml:7:1: unknown field `listen`"), "{e}");
        let e = parse("connect = \"hub:9000\"\n").expect_err("connect without mode");
        assert!(e.starts_with("t.toml:5:1: unknown field `connect`"), "{e}");
        assert!(e.contains("mode = \"client\""), "{e}");
    }

    #[test]
    fn decoder_settings_in_either_mode() {
        use crate::decode::{influx::MetricName, TsUnit};
        let text = "node_id = \"n\"\n[[source]]\nid = \"t\"\nkind = \"tcp\"\nmode = \"client\"\nconnect = \"h:1\"\nformat = \"influx\"\nts_unit = \"us\"\ndevice_tag = \"host\"\ninflux_metric = \"field\"\n";
        let r = parse_str(text, std::path::Path::new("t.toml")).expect("valid");
        let SourceConfig::Tcp(t) = &r.config.sources[0] else {
            panic!("not tcp")
        };
        let s = t.settings();
        assert_eq!(
            (s.ts_unit, s.device_tag.as_deref(), s.influx_metric),
            (TsUnit::Us, Some("host"), MetricName::Field)
        );
        let e = parse("listen = \"127.0.0.1:1\"\nts_unit = \"sec\"\n").expect_err("bad unit");
        assert!(
            e.contains("unknown variant `sec`") && e.contains("`ms`") && e.contains("ts_unit"),
            "{e}"
        );
        let e = parse("listen = \"127.0.0.1:1\"\ndevice_tag = \"host\"\n").expect_err("json");
        assert!(
            e.contains("applies to format = \"influx\" only") && e.contains("source[0].device_tag"),
            "{e}"
        );
    }

    #[test]
    fn a_missing_address_or_bad_mode_says_so() {
        let e = parse("mode = \"client\"\n").expect_err("no connect");
        assert!(e.contains("missing field `connect`"), "{e}");
        let e = parse("format = \"csv\"\n").expect_err("no listen");
        assert!(e.contains("missing field `listen`"), "{e}");
        let e = parse("mode = \"both\"\nlisten = \"0.0.0.0:1\"\n").expect_err("bad mode");
        assert!(
            e.contains("unknown variant `both`") && e.contains("source[0].mode"),
            "{e}"
        );
        let e = parse("listen = \"0.0.0.0:1\"\nmax_clients = 0\n").expect_err("zero clients");
        assert!(
            e.contains("must be at least 1") && e.contains("max_clients"),
            "{e}"
        );
    }
}
