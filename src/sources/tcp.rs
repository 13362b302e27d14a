//! Raw TCP source: server mode (many concurrent clients) or client mode (connects out and
//! reconnects through the retry layer). Each connection feeds its own `Framed` intake.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicI64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

use super::backoff::Retry;
use super::intake::{Decoder, Framed, Intake, Origin};
use super::route::{Closed, Router};
use super::SourceError;
use crate::config::{TcpGuard, TcpMode, TcpSource};
use crate::decode::framing::Delimiter;
use crate::model::now_ms;
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

/// The open connections of one server: per-peer counts and, for eviction, when each last
/// delivered an accepted frame. Locked on connect, disconnect and eviction only.
#[derive(Default)]
struct Table {
    per_ip: HashMap<IpAddr, usize>,
    open: HashMap<u64, Conn>,
    next_id: u64,
}

struct Conn {
    ip: IpAddr,
    /// When the connection last delivered an accepted frame (its connect time until then),
    /// in ms; written by the connection's task after each read that delivered.
    last_good: Arc<AtomicI64>,
    /// Closes the connection when it is evicted.
    kick: Arc<Notify>,
}

impl Table {
    /// Forgets connection `id`; false when it was already gone (evicted).
    fn release(&mut self, id: u64, stats: &SourceStats) -> bool {
        let Some(c) = self.open.remove(&id) else {
            return false;
        };
        if let Some(n) = self.per_ip.get_mut(&c.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_ip.remove(&c.ip);
            }
        }
        stats.connections.fetch_sub(1, Relaxed);
        true
    }

    /// Closes the connection that has delivered nothing for longest, if that is at least
    /// `after_ms`, and frees its slot now (its task ends at its next poll).
    fn evict_silent(&mut self, now: i64, after_ms: i64, stats: &SourceStats) -> Option<IpAddr> {
        let (&id, c) = self
            .open
            .iter()
            .min_by_key(|(_, c)| c.last_good.load(Relaxed))?;
        if now - c.last_good.load(Relaxed) < after_ms {
            return None;
        }
        let (ip, kick) = (c.ip, c.kick.clone());
        self.release(id, stats);
        kick.notify_one();
        Some(ip)
    }
}

/// One accepted connection's place in the server's counts; freed when the connection ends.
struct Slot {
    id: u64,
    table: Arc<Mutex<Table>>,
    stats: Arc<SourceStats>,
    last_good: Arc<AtomicI64>,
    kick: Arc<Notify>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Ok(mut t) = self.table.lock() {
            t.release(self.id, &self.stats);
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
/// taken here, in the accept loop, before the connection's task starts). When every slot is
/// taken, the connection silent for longest (at least `evict_after`) makes room; `evicted`
/// says whose.
fn admit(
    guard: &TcpGuard,
    max_clients: usize,
    peer: IpAddr,
    table: &Arc<Mutex<Table>>,
    stats: &Arc<SourceStats>,
    now: i64,
) -> Result<(Slot, Option<IpAddr>), Refuse> {
    if !guard.allow_from.is_empty() && !guard.allow_from.iter().any(|c| c.contains(peer)) {
        return Err(Refuse::NotAllowed);
    }
    let mut t = table.lock().map_err(|_| Refuse::Full)?;
    if t.per_ip.get(&peer).copied().unwrap_or(0) >= guard.max_clients_per_ip {
        return Err(Refuse::PerIp);
    }
    let mut evicted = None;
    if stats.connections.load(Relaxed) >= max_clients as u64 {
        evicted = t.evict_silent(now, guard.evict_after.as_ms(), stats);
        if evicted.is_none() {
            return Err(Refuse::Full);
        }
        stats.refused.evicted.fetch_add(1, Relaxed);
    }
    *t.per_ip.entry(peer).or_insert(0) += 1;
    stats.connections.fetch_add(1, Relaxed);
    let id = t.next_id;
    t.next_id += 1;
    let (last_good, kick) = (Arc::new(AtomicI64::new(now)), Arc::new(Notify::new()));
    t.open.insert(
        id,
        Conn {
            ip: peer,
            last_good: last_good.clone(),
            kick: kick.clone(),
        },
    );
    Ok((
        Slot {
            id,
            table: table.clone(),
            stats: stats.clone(),
            last_good,
            kick,
        },
        evicted,
    ))
}

/// Rate-limited logs of one server, shared by its connections.
struct Logs {
    refused: RateLimitedLog,
    idle: RateLimitedLog,
    tls: RateLimitedLog,
}

impl Logs {
    fn new() -> Self {
        let l = || RateLimitedLog::new(5, Duration::from_secs(10));
        Logs {
            refused: l(),
            idle: l(),
            tls: l(),
        }
    }
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
    let tls = match &guard.tls {
        Some(t) => Some((
            super::tls::acceptor(t).map_err(|e| SourceError::Config(e.to_string()))?,
            t.handshake_timeout.0,
        )),
        None => None,
    };
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| SourceError::Bind {
            addr: addr.to_string(),
            source,
        })?;
    let local = listener.local_addr().map_or(addr, |a| a);
    let scheme = if tls.is_some() { " (tls)" } else { "" };
    tracing::info!(source = %cfg.id, "tcp source listening on {local}{scheme}");
    stats.set_listen_addr(local);
    stats.set_healthy(true);
    let table = Arc::new(Mutex::new(Table::default()));
    let logs = Arc::new(Mutex::new(Logs::new()));
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
        let slot = match admit(guard, max_clients, peer.ip(), &table, &stats, now_ms()) {
            Ok((slot, evicted)) => {
                if let Some(ip) = evicted {
                    log(
                        &logs,
                        |l| &mut l.refused,
                        |n| tracing::info!(source = %cfg.id, %peer, evicted = %ip, suppressed_before = n, "every slot taken: closed the connection silent for longest (evict_after)"),
                    );
                }
                slot
            }
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
                log(
                    &logs,
                    |l| &mut l.refused,
                    |n| tracing::warn!(source = %cfg.id, %peer, limit, suppressed_before = n, "connection refused: {reason}"),
                );
                drop(stream);
                continue;
            }
        };
        let mut intake = framed(cfg, idx, &router, &stats);
        intake.intake.set_from(peer.to_string());
        let (id, stats, logs, tls) = (cfg.id.clone(), stats.clone(), logs.clone(), tls.clone());
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            let r = match tls {
                None => {
                    stats.connects_total.fetch_add(1, Relaxed);
                    read_frames(stream, &mut intake, Some(read_timeout), Some(&slot)).await
                }
                Some((acceptor, limit)) => {
                    match tokio::time::timeout(limit, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            stats.connects_total.fetch_add(1, Relaxed);
                            read_frames(tls, &mut intake, Some(read_timeout), Some(&slot)).await
                        }
                        failed => {
                            stats.refused.tls.fetch_add(1, Relaxed);
                            let why = match failed {
                                Ok(Err(e)) => e.to_string(),
                                _ => format!("no handshake within {limit:?}"),
                            };
                            log(
                                &logs,
                                |l| &mut l.tls,
                                |n| tracing::warn!(source = %id, %peer, suppressed_before = n, "tls handshake failed: {why}"),
                            );
                            return;
                        }
                    }
                }
            };
            match r {
                Ok(Ended::Idle) => {
                    stats.refused.idle.fetch_add(1, Relaxed);
                    log(
                        &logs,
                        |l| &mut l.idle,
                        |n| tracing::info!(source = %id, %peer, timeout = ?read_timeout, suppressed_before = n, "client closed: nothing received within read_timeout"),
                    );
                }
                r => tracing::debug!(source = %id, %peer, result = ?r, "client disconnected"),
            }
        });
    }
}

/// Writes a line through one of the server's rate-limited logs.
fn log(
    logs: &Mutex<Logs>,
    which: impl FnOnce(&mut Logs) -> &mut RateLimitedLog,
    line: impl FnOnce(u64),
) {
    let Ok(mut l) = logs.lock() else { return };
    if let (true, suppressed) = which(&mut l).allow() {
        line(suppressed.unwrap_or(0));
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
                let r = read_frames(stream, &mut intake, None, None).await;
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
    /// Closed to make room for a newcomer (`evict_after`).
    Evicted,
}

impl std::fmt::Display for Ended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ended::Peer => f.write_str("closed by peer"),
            Ended::Error(e) => write!(f, "{e}"),
            Ended::Idle => f.write_str("idle beyond read_timeout"),
            Ended::Evicted => f.write_str("evicted for a newcomer"),
        }
    }
}

/// Reads one connection until EOF, error, eviction or `idle` without data; returns why it
/// ended, or `Closed` on shutdown. A server connection's `slot` learns when it last delivered.
async fn read_frames<S: AsyncRead + Unpin>(
    mut stream: S,
    intake: &mut Framed,
    idle: Option<Duration>,
    slot: Option<&Slot>,
) -> Result<Ended, Closed> {
    let mut buf = vec![0u8; READ_BUF];
    let never = Notify::new();
    let kick = slot.map_or(&never, |s| &*s.kick);
    let why = loop {
        let read = async {
            match idle {
                Some(t) => tokio::time::timeout(t, stream.read(&mut buf)).await.ok(),
                None => Some(stream.read(&mut buf).await),
            }
        };
        let read = tokio::select! {
            r = read => r,
            _ = kick.notified() => break Ended::Evicted,
        };
        let n = match read {
            None => break Ended::Idle,
            Some(Ok(0)) => break Ended::Peer,
            Some(Ok(n)) => n,
            Some(Err(e)) => break Ended::Error(e),
        };
        intake.feed(&buf[..n]);
        if let Some(s) = slot {
            if intake.intake.accepted_pending() > 0 {
                s.last_good.store(now_ms(), Relaxed);
            }
        }
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
            "listen = \"0.0.0.0:9000\"\nmax_clients_per_ip = 2\nread_timeout = \"30s\"\nallow_from = [\"192.168.1.0/24\", \"10.0.0.7\"]\nevict_after = \"1m\"\n",
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
                evict_after: Dur::secs(60),
                tls: None,
            }
        );
        let e = parse("listen = \"0.0.0.0:1\"\n[source.tls]\ncert = \"/nonexistent/c.pem\"\nkey = \"/nonexistent/k.pem\"\n")
            .expect_err("missing cert");
        assert!(
            e.contains("source[0].tls.cert") && e.contains("/nonexistent/c.pem"),
            "{e}"
        );
        let e = parse(
            "mode = \"client\"\nconnect = \"h:1\"\n[source.tls]\ncert = \"c\"\nkey = \"k\"\n",
        )
        .expect_err("server-only tls");
        assert!(e.contains("mode = \"server\""), "{e}");
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
        let table = Default::default();
        let guard = TcpGuard {
            max_clients_per_ip: 2,
            allow_from: vec![Cidr::parse("10.0.0.0/8").expect("cidr")],
            ..TcpGuard::default()
        };
        let a: std::net::IpAddr = "10.0.0.1".parse().expect("ip");
        let b: std::net::IpAddr = "10.0.0.2".parse().expect("ip");
        let outsider: std::net::IpAddr = "192.168.0.1".parse().expect("ip");
        let now = 1_000_000;
        let refused = |ip| admit(&guard, 3, ip, &table, &stats, now).err();
        assert_eq!(refused(outsider), Some(Refuse::NotAllowed));
        let s1 = admit(&guard, 3, a, &table, &stats, now).expect("1st");
        let _s2 = admit(&guard, 3, a, &table, &stats, now).expect("2nd");
        assert_eq!(refused(a), Some(Refuse::PerIp));
        let _s3 = admit(&guard, 3, b, &table, &stats, now).expect("3rd");
        // full, and nobody has been silent for evict_after yet
        assert_eq!(refused(b), Some(Refuse::Full));
        assert_eq!(stats.connections.load(Relaxed), 3);
        drop(s1);
        assert_eq!(stats.connections.load(Relaxed), 2);
        let _s4 = admit(&guard, 3, a, &table, &stats, now).expect("a slot freed");
        assert_eq!(stats.connections.load(Relaxed), 3);
    }

    #[test]
    fn when_full_the_longest_silent_connection_makes_room() {
        use super::admit;
        use std::sync::atomic::Ordering::Relaxed;
        let stats = std::sync::Arc::new(crate::status::SourceStats::new("t", "tcp"));
        let table = Default::default();
        let guard = TcpGuard::default(); // evict_after 30 s
        let ip = |s: &str| s.parse::<std::net::IpAddr>().expect("ip");
        let t0 = 1_000_000;
        let (quiet, _) = admit(&guard, 2, ip("10.0.0.1"), &table, &stats, t0).expect("1st");
        let (busy, _) = admit(&guard, 2, ip("10.0.0.2"), &table, &stats, t0).expect("2nd");
        // the second delivers a sample 20 s in; the first never does
        busy.last_good.store(t0 + 20_000, Relaxed);
        // at 25 s nobody is silent for 30 s: refused
        assert!(admit(&guard, 2, ip("10.0.0.3"), &table, &stats, t0 + 25_000).is_err());
        // at 40 s the first has been silent for 40 s: it is closed for the newcomer
        let (_new, evicted) =
            admit(&guard, 2, ip("10.0.0.3"), &table, &stats, t0 + 40_000).expect("room made");
        assert_eq!(evicted, Some(ip("10.0.0.1")));
        assert_eq!(stats.connections.load(Relaxed), 2, "exact: one out, one in");
        assert_eq!(stats.refused.evicted.load(Relaxed), 1);
        // the evicted connection's task is woken, and its slot is not freed twice
        let kicked = quiet.kick.clone();
        drop(quiet);
        assert_eq!(stats.connections.load(Relaxed), 2);
        let woke = futures_util::FutureExt::now_or_never(kicked.notified());
        assert!(woke.is_some(), "the evicted connection was told to close");
        // the busy one (silent only 20 s at t0+40s) is not evicted in its turn
        assert!(admit(&guard, 2, ip("10.0.0.4"), &table, &stats, t0 + 40_000).is_err());
        drop(busy);
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
