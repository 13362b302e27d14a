//! Raw TCP source: server mode (many concurrent clients) or client mode (connects out and
//! reconnects through the retry layer). Each connection feeds its own `Framed` intake.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};

use super::backoff::Retry;
use super::intake::{Decoder, Framed, Intake, Origin};
use super::route::{Closed, Router};
use super::SourceError;
use crate::config::{TcpGuard, TcpMode, TcpSource};
use crate::decode::framing::Delimiter;
use crate::status::{RateLimitedLog, SourceStats};

/// Read buffer per connection (256 clients hold 4 MiB of them at most).
const READ_BUF: usize = 16 * 1024;
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
            guard,
        } => serve(&cfg, *listen, *max_clients, guard, idx, router, stats).await,
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

/// One accepted connection's place in the server's counts; freed when the connection ends.
struct Slot {
    ip: IpAddr,
    per_ip: Arc<Mutex<HashMap<IpAddr, usize>>>,
    stats: Arc<SourceStats>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.stats.connections.fetch_sub(1, Relaxed);
        if let Ok(mut m) = self.per_ip.lock() {
            if let Some(n) = m.get_mut(&self.ip) {
                *n -= 1;
                if *n == 0 {
                    m.remove(&self.ip);
                }
            }
        }
    }
}

/// Why a peer was turned away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refuse {
    NotAllowed,
    Full,
    PerIp,
}

/// Admission: the allow-list, then the per-peer and total caps, counted exactly (the slot is
/// taken here, in the accept loop, before the connection's task starts).
fn admit(
    guard: &TcpGuard,
    max_clients: usize,
    peer: IpAddr,
    per_ip: &Arc<Mutex<HashMap<IpAddr, usize>>>,
    stats: &Arc<SourceStats>,
) -> Result<Slot, Refuse> {
    if !guard.allow_from.is_empty() && !guard.allow_from.iter().any(|c| c.contains(peer)) {
        return Err(Refuse::NotAllowed);
    }
    if stats.connections.load(Relaxed) >= max_clients as u64 {
        return Err(Refuse::Full);
    }
    let mut m = per_ip.lock().map_err(|_| Refuse::Full)?;
    let n = m.entry(peer).or_insert(0);
    if *n >= guard.max_clients_per_ip {
        return Err(Refuse::PerIp);
    }
    *n += 1;
    stats.connections.fetch_add(1, Relaxed);
    Ok(Slot {
        ip: peer,
        per_ip: per_ip.clone(),
        stats: stats.clone(),
    })
}

async fn serve(
    cfg: &Arc<TcpSource>,
    addr: SocketAddr,
    max_clients: usize,
    guard: &TcpGuard,
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
    let per_ip = Arc::new(Mutex::new(HashMap::new()));
    let mut refused_log = RateLimitedLog::new(5, Duration::from_secs(10));
    let idle_log = Arc::new(Mutex::new(RateLimitedLog::new(5, Duration::from_secs(10))));
    let read_timeout = guard.read_timeout.0;
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
        let slot = match admit(guard, max_clients, peer.ip(), &per_ip, &stats) {
            Ok(slot) => slot,
            Err(why) => {
                let r = &stats.refused;
                let (counter, reason, limit) = match why {
                    Refuse::NotAllowed => (&r.not_allowed, "peer not in allow_from", 0),
                    Refuse::Full => (&r.max_clients, "max_clients reached", max_clients),
                    Refuse::PerIp => (
                        &r.per_ip,
                        "max_clients_per_ip reached",
                        guard.max_clients_per_ip,
                    ),
                };
                counter.fetch_add(1, Relaxed);
                if let (true, suppressed) = refused_log.allow() {
                    tracing::warn!(source = %cfg.id, %peer, limit, suppressed_before = suppressed.unwrap_or(0), "connection refused: {reason}");
                }
                drop(stream);
                continue;
            }
        };
        let mut intake = framed(cfg, idx, &router, &stats);
        intake.intake.set_from(peer.to_string());
        let (id, stats, idle_log) = (cfg.id.clone(), stats.clone(), idle_log.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let _ = stream.set_nodelay(true);
            stats.connects_total.fetch_add(1, Relaxed);
            tracing::debug!(source = %id, %peer, "client connected");
            let r = read_frames(stream, &mut intake, Some(read_timeout)).await;
            if let Ok(Ended::Idle) = r {
                stats.refused.idle.fetch_add(1, Relaxed);
                if let Ok(mut l) = idle_log.lock() {
                    if let (true, suppressed) = l.allow() {
                        tracing::info!(source = %id, %peer, timeout = ?read_timeout, suppressed_before = suppressed.unwrap_or(0), "client closed: nothing received within read_timeout");
                    }
                }
            }
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
                let r = read_frames(stream, &mut intake, None).await;
                if intake.take_received() {
                    retry.healthy();
                }
                stats.connections.store(0, Relaxed);
                stats.set_healthy(false);
                match r {
                    Err(Closed) => return Err(SourceError::Closed(Closed)),
                    Ok(why) => {
                        let why = why.to_string();
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

/// How a connection ended (other than by shutdown).
#[derive(Debug)]
enum Ended {
    Peer,
    Error(std::io::Error),
    /// Nothing arrived within `read_timeout`.
    Idle,
}

impl std::fmt::Display for Ended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ended::Peer => f.write_str("closed by peer"),
            Ended::Error(e) => write!(f, "{e}"),
            Ended::Idle => f.write_str("idle beyond read_timeout"),
        }
    }
}

/// Reads one connection until EOF, error or `idle` without data; returns why it ended, or
/// `Closed` on shutdown.
async fn read_frames(
    mut stream: TcpStream,
    intake: &mut Framed,
    idle: Option<Duration>,
) -> Result<Ended, Closed> {
    let mut buf = vec![0u8; READ_BUF];
    let why = loop {
        let read = match idle {
            Some(t) => match tokio::time::timeout(t, stream.read(&mut buf)).await {
                Ok(r) => r,
                Err(_) => break Ended::Idle,
            },
            None => stream.read(&mut buf).await,
        };
        let n = match read {
            Ok(0) => break Ended::Peer,
            Ok(n) => n,
            Err(e) => break Ended::Error(e),
        };
        intake.feed(&buf[..n]);
        intake.flush().await?;
    };
    intake.disconnected();
    Ok(why)
}

#[cfg(test)]
mod tests {
    use crate::config::{parse_str, Cidr, Dur, SourceConfig, TcpGuard, TcpMode};

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
            guard: TcpGuard::default(),
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
                max_clients: 3,
                guard: TcpGuard::default(),
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
    fn the_guard_fields_are_read_and_checked() {
        let m = parse(
            "listen = \"0.0.0.0:9000\"\nmax_clients_per_ip = 2\nread_timeout = \"30s\"\nallow_from = [\"192.168.1.0/24\", \"10.0.0.7\"]\n",
        )
        .expect("guard");
        let TcpMode::Server { guard, .. } = m else {
            panic!("not a server")
        };
        assert_eq!(
            guard,
            TcpGuard {
                max_clients_per_ip: 2,
                read_timeout: Dur::secs(30),
                allow_from: vec![
                    Cidr::parse("192.168.1.0/24").expect("cidr"),
                    Cidr::parse("10.0.0.7").expect("cidr")
                ],
            }
        );
        let e = parse("listen = \"0.0.0.0:1\"\nallow_from = [\"lan\"]\n").expect_err("bad cidr");
        assert!(
            e.contains("not an address") && e.contains("allow_from"),
            "{e}"
        );
        let e = parse("listen = \"0.0.0.0:1\"\nmax_clients_per_ip = 0\n").expect_err("zero");
        assert!(
            e.contains("max_clients_per_ip") && e.contains("at least 1"),
            "{e}"
        );
        let e = parse("mode = \"client\"\nconnect = \"h:1\"\nread_timeout = \"1s\"\n")
            .expect_err("server-only");
        assert!(e.contains("mode = \"server\""), "{e}");
    }

    #[test]
    fn admission_counts_exactly_and_per_peer() {
        use super::{admit, Refuse};
        use std::sync::atomic::Ordering::Relaxed;
        let stats = std::sync::Arc::new(crate::status::SourceStats::new("t", "tcp"));
        let per_ip = Default::default();
        let guard = TcpGuard {
            max_clients_per_ip: 2,
            allow_from: vec![Cidr::parse("10.0.0.0/8").expect("cidr")],
            ..TcpGuard::default()
        };
        let a: std::net::IpAddr = "10.0.0.1".parse().expect("ip");
        let b: std::net::IpAddr = "10.0.0.2".parse().expect("ip");
        let outsider: std::net::IpAddr = "192.168.0.1".parse().expect("ip");
        assert_eq!(
            admit(&guard, 3, outsider, &per_ip, &stats).err(),
            Some(Refuse::NotAllowed)
        );
        let s1 = admit(&guard, 3, a, &per_ip, &stats).expect("1st");
        let _s2 = admit(&guard, 3, a, &per_ip, &stats).expect("2nd");
        assert_eq!(
            admit(&guard, 3, a, &per_ip, &stats).err(),
            Some(Refuse::PerIp)
        );
        let _s3 = admit(&guard, 3, b, &per_ip, &stats).expect("3rd");
        assert_eq!(
            admit(&guard, 3, b, &per_ip, &stats).err(),
            Some(Refuse::Full)
        );
        assert_eq!(stats.connections.load(Relaxed), 3);
        drop(s1);
        assert_eq!(stats.connections.load(Relaxed), 2);
        let _s4 = admit(&guard, 3, a, &per_ip, &stats).expect("a slot freed");
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
