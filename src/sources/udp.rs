//! UDP source: each datagram holds one or more newline-separated frames (Telegraf's and
//! ESPHome's line protocol over UDP). One bounded receive buffer; what is queued is read in rounds.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;

use super::intake::{Decoder, Framed, Intake, Origin};
use super::route::Router;
use super::SourceError;
use crate::config::UdpSource;
use crate::decode::framing::Delimiter;
use crate::status::SourceStats;

/// Datagrams already queued in the socket taken before the samples are handed on.
const ROUND: usize = 256;

pub async fn run(
    cfg: Arc<UdpSource>,
    idx: u16,
    router: Router,
    stats: Arc<SourceStats>,
) -> Result<(), SourceError> {
    let socket = UdpSocket::bind(cfg.listen)
        .await
        .map_err(|source| SourceError::Bind {
            addr: cfg.listen.to_string(),
            source,
        })?;
    let local = socket.local_addr().map_or(cfg.listen, |a| a);
    tracing::info!(source = %cfg.id, "udp source listening on {local}");
    stats.set_listen_addr(local);
    stats.set_healthy(true);
    let mut rx = Datagrams {
        framed: Framed::new(
            Intake::new(&router, idx, stats.clone(), Origin::Peer),
            cfg.max_frame,
            Delimiter::Newline,
            Decoder::Format {
                format: cfg.format,
                settings: cfg.settings(),
            },
        ),
        // One byte more than allowed, so an oversize datagram is seen as such, not cut short.
        buf: vec![0u8; cfg.max_datagram + 1],
        max: cfg.max_datagram,
        peer: None,
    };
    loop {
        match socket.recv_from(&mut rx.buf).await {
            Ok((n, peer)) => rx.take(n, peer),
            Err(e) => {
                tracing::warn!(source = %cfg.id, error = %e, "udp receive failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        }
        for _ in 0..ROUND {
            match socket.try_recv_from(&mut rx.buf) {
                Ok((n, peer)) => rx.take(n, peer),
                Err(_) => break,
            }
        }
        rx.framed.flush().await?;
    }
}

/// The receive buffer and the intake behind it.
struct Datagrams {
    framed: Framed,
    buf: Vec<u8>,
    max: usize,
    /// The sender named in the reject log (updated only when it changes).
    peer: Option<SocketAddr>,
}

impl Datagrams {
    /// Decodes the `n` bytes of one datagram from `peer`; a last line needs no newline.
    fn take(&mut self, n: usize, peer: SocketAddr) {
        if self.peer != Some(peer) {
            self.peer = Some(peer);
            self.framed.intake.set_from(peer.to_string());
        }
        let data = &self.buf[..n.min(self.buf.len())];
        if n > self.max {
            let why = format!("datagram longer than {} bytes", self.max);
            self.framed.intake.reject(None, &why, Some(data));
            return;
        }
        self.framed.feed(data);
        self.framed.end_frame();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering::Relaxed;

    use tokio::sync::mpsc;

    use super::*;
    use crate::config::{parse_str, SourceConfig};
    use crate::sources::route::Ingest;

    fn config(extra: &str) -> Result<UdpSource, String> {
        let text = format!(
            "node_id = \"n\"\n[[source]]\nid = \"u\"\nkind = \"udp\"\nlisten = \"127.0.0.1:0\"\n{extra}"
        );
        let r = parse_str(&text, std::path::Path::new("t.toml")).map_err(|e| e.to_string())?;
        match &r.config.sources[0] {
            SourceConfig::Udp(u) => Ok(u.clone()),
            _ => Err("not udp".into()),
        }
    }

    #[test]
    fn config_defaults_and_bounds() {
        let u = config("").expect("defaults");
        assert_eq!(u.format, crate::decode::Format::Influx);
        assert_eq!(u.max_datagram, 65_507);
        let e = config("max_datagram = 100\n").expect_err("too small");
        assert!(
            e.starts_with("t.toml:6:1:") && e.contains("between 512 and 65507"),
            "{e}"
        );
        let e = config("format = \"csv\"\ninflux_metric = \"field\"\n").expect_err("not influx");
        assert!(e.contains("influx_metric") && e.contains("only"), "{e}");
        let e = config("lisen = \"x\"\n").expect_err("typo");
        assert!(e.contains("unknown field `lisen`"), "{e}");
    }

    /// Real datagrams over loopback: several lines per datagram, a bad line between good
    /// ones, a datagram over the limit, and two senders.
    #[tokio::test]
    async fn datagrams_over_loopback() {
        let mut cfg = config("max_datagram = 512\ndevice_tag = \"host\"\n").expect("cfg");
        let probe = std::net::UdpSocket::bind("127.0.0.1:0").expect("probe");
        cfg.listen = probe.local_addr().expect("addr");
        drop(probe);
        let (tx, mut rx) = mpsc::channel::<Ingest>(64);
        let stats = Arc::new(SourceStats::new("u", "udp"));
        let task = tokio::spawn(run(
            Arc::new(cfg.clone()),
            0,
            Router::new(vec![tx]),
            stats.clone(),
        ));
        let a = UdpSocket::bind("127.0.0.1:0").await.expect("a");
        let b = UdpSocket::bind("127.0.0.1:0").await.expect("b");
        let to = cfg.listen;
        // Wait until the source is bound.
        for _ in 0..200 {
            if stats.listen_addr().is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        a.send_to(
            b"cpu,host=pi1 usage=12.5,idle=87.5 1465839830100400200\ncpu,host=pi1 usage=oops\ncpu,host=pi1 usage=13\n",
            to,
        )
        .await
        .expect("send");
        b.send_to(b"mem,host=pi2 free=1024i", to)
            .await
            .expect("send");
        b.send_to(format!("mem free=1 {}", "1".repeat(600)).as_bytes(), to)
            .await
            .expect("send big");
        let mut got = Vec::new();
        while got.len() < 4 {
            let batch = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .expect("samples in time")
                .expect("batch");
            got.extend(
                batch
                    .batch
                    .iter()
                    .map(|s| (s.device.to_string(), s.metric.to_string(), s.value)),
            );
        }
        assert_eq!(
            got,
            vec![
                ("pi1".into(), "cpu.usage".into(), 12.5),
                ("pi1".into(), "cpu.idle".into(), 87.5),
                ("pi1".into(), "cpu.usage".into(), 13.0),
                ("pi2".into(), "mem.free".into(), 1024.0),
            ]
        );
        // The oversize datagram and the bad line are counted as rejected.
        for _ in 0..200 {
            if stats.frames_rejected.load(Relaxed) == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(stats.frames_rejected.load(Relaxed), 2);
        assert_eq!(stats.frames_accepted.load(Relaxed), 3);
        assert_eq!(stats.samples.load(Relaxed), 4);
        task.abort();
    }
}
