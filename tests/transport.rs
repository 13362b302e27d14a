//! Bounded transports against the real binary: `/ws` frame limit, the API's connection cap and
//! descriptor shedding, the TCP source's idle timeout, exact and per-peer caps and allow-list.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{Edgewatch, Sender};
use serde_json::Value;

/// Writes a config with one TCP server source `t` (extra keys `tcp`) and `[api]` keys `api`.
fn config(dir: &std::path::Path, tcp: &str, api: &str) -> PathBuf {
    let path = dir.join("edgewatch.toml");
    let text = format!(
        "node_id = \"test\"\ndata_dir = {:?}\n[unknown_devices]\npolicy = \"register\"\n\
         [[source]]\nid = \"t\"\nkind = \"tcp\"\nlisten = \"127.0.0.1:0\"\n{tcp}\n\
         [api]\nlisten = \"127.0.0.1:0\"\n{api}\n",
        dir.join("data").display().to_string()
    );
    std::fs::write(&path, text).expect("write config");
    path
}

fn source(status: &Value) -> &Value {
    &status["sources"][0]
}

fn samples(ew: &Edgewatch) -> u64 {
    source(&ew.get("/api/status"))["samples"]
        .as_u64()
        .unwrap_or(0)
}

/// Sends `n` samples of device `legit` on a fresh connection and waits until all are counted.
fn legit_sensor_delivers(ew: &mut Edgewatch, n: u64) {
    let addr = ew.tcp_addr("t");
    let before = samples(ew);
    let mut s = Sender::connect(&addr);
    for i in 0..n {
        s.line(&format!(
            "{{\"device\":\"legit\",\"metric\":\"temp\",\"value\":{}}}",
            20.0 + i as f64
        ));
    }
    ew.poll("/api/status", Duration::from_secs(10), |v| {
        source(v)["samples"].as_u64() == Some(before + n)
    });
}

/// An HTTP/1.1 request on an open connection; the status code, or None when nothing came back
/// within `wait` (or the connection was closed).
fn request(c: &mut TcpStream, path: &str, wait: Duration) -> Option<u16> {
    c.set_read_timeout(Some(wait)).ok()?;
    c.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes())
        .ok()?;
    let mut buf = [0u8; 4096];
    let n = c.read(&mut buf).ok()?;
    let head = String::from_utf8_lossy(&buf[..n]);
    head.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

#[test]
fn a_ws_client_declaring_a_huge_frame_is_closed_before_it_is_buffered() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut ew = Edgewatch::start(&config(dir.path(), "", ""));
    // a legitimate /ws client keeps its stream
    let mut good = ew.ws("");
    assert!(good.next(Duration::from_secs(5)).is_some(), "hello");
    let (rss_before, _) = ew.rss_kib();

    let mut c = TcpStream::connect(&ew.api).expect("connect");
    c.write_all(
        b"GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .expect("handshake");
    let mut buf = [0u8; 1024];
    let n = c.read(&mut buf).expect("101");
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 101"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    // a masked binary frame declaring 1 TiB, then as much of it as the server takes (≤ 256 MiB)
    let mut header = vec![0x82, 0x80 | 127];
    header.extend_from_slice(&(1u64 << 40).to_be_bytes());
    header.extend_from_slice(&[1, 2, 3, 4]);
    c.write_all(&header).expect("frame header");
    c.set_write_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let chunk = vec![0x55u8; 1 << 20];
    let mut sent = 0usize;
    let end = Instant::now() + Duration::from_secs(20);
    while sent < 256 << 20 && Instant::now() < end {
        match c.write(&chunk) {
            Ok(n) => sent += n,
            Err(_) => break,
        }
    }
    // the kernel's socket buffers take a few MiB before the server's close is seen
    assert!(
        sent < 8 << 20,
        "the server kept reading a 1 TiB frame: {} MiB accepted",
        sent >> 20
    );
    let (rss_after, _) = ew.rss_kib();
    assert!(
        rss_after < rss_before + 8 * 1024,
        "RSS grew from {rss_before} to {rss_after} KiB"
    );
    let st = ew.poll("/api/status", Duration::from_secs(5), |v| {
        v["ws"]["closed_oversize"] == 1
    });
    assert_eq!(st["ws"]["closed_oversize"], 1);
    ew.wait_log("frame over api.ws_max_frame", Duration::from_secs(5));
    // the legitimate client is still connected and served
    legit_sensor_delivers(&mut ew, 3);
    assert_eq!(ew.get("/api/status")["ws"]["clients"], 1);
    drop(good);
}

#[test]
fn the_api_connection_cap_holds_while_a_served_client_keeps_working() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = config(
        dir.path(),
        "",
        "max_connections = 8\nrequest_timeout = \"30s\"\nkeep_alive = \"30s\"\n",
    );
    let mut ew = Edgewatch::start(&cfg);
    assert_eq!(ew.get("/api/status")["api"]["max_connections"], 8);
    let mut legit = TcpStream::connect(&ew.api).expect("connect");
    assert_eq!(
        request(&mut legit, "/healthz", Duration::from_secs(5)),
        Some(200)
    );
    // 40 idle connections: 7 get the remaining slots, the rest wait in the kernel's backlog
    let idle: Vec<TcpStream> = (0..40)
        .map(|_| TcpStream::connect(&ew.api).expect("connect"))
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let mut late = TcpStream::connect(&ew.api).expect("connect");
    assert_eq!(
        request(&mut late, "/healthz", Duration::from_millis(800)),
        None,
        "a connection beyond the cap is not served"
    );
    assert_eq!(
        request(&mut legit, "/healthz", Duration::from_secs(5)),
        Some(200)
    );
    assert_eq!(
        request(&mut legit, "/api/status", Duration::from_secs(5)),
        Some(200)
    );
    drop(idle);
    // once the idle connections go, the waiting one is served
    assert_eq!(
        request(&mut late, "/healthz", Duration::from_secs(5)),
        Some(200)
    );
    legit_sensor_delivers(&mut ew, 5);
}

#[test]
fn idle_tcp_clients_are_dropped_after_read_timeout_and_a_sensor_gets_a_slot() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = config(dir.path(), "max_clients = 4\nread_timeout = \"1s\"\n", "");
    let mut ew = Edgewatch::start(&cfg);
    let addr = ew.tcp_addr("t");
    let mut idle: Vec<TcpStream> = (0..4)
        .map(|_| TcpStream::connect(&addr).expect("connect"))
        .collect();
    ew.poll("/api/status", Duration::from_secs(5), |v| {
        source(v)["connections"] == 4
    });
    // full: a fifth connection is closed at once (exactly 4 in)
    let mut fifth = TcpStream::connect(&addr).expect("connect");
    fifth
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("t");
    assert_eq!(fifth.read(&mut [0u8; 8]).ok(), Some(0), "refused: closed");
    let st = ew.get("/api/status");
    assert_eq!(source(&st)["connections"], 4);
    assert_eq!(source(&st)["connections_refused"]["max_clients"], 1);
    // the idle ones are closed after read_timeout
    for c in &mut idle {
        c.set_read_timeout(Some(Duration::from_secs(5))).expect("t");
        assert_eq!(c.read(&mut [0u8; 8]).ok(), Some(0), "closed by the server");
    }
    let st = ew.poll("/api/status", Duration::from_secs(5), |v| {
        source(v)["connections"] == 0
    });
    assert_eq!(source(&st)["connections_refused"]["idle"], 4);
    ew.wait_log(
        "nothing received within read_timeout",
        Duration::from_secs(5),
    );
    ew.wait_log(
        "connection refused: max_clients reached",
        Duration::from_secs(5),
    );
    legit_sensor_delivers(&mut ew, 5);
}

#[test]
fn max_clients_is_exact_under_a_burst() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = config(
        dir.path(),
        "max_clients = 5\nmax_clients_per_ip = 100\n",
        "",
    );
    let mut ew = Edgewatch::start(&cfg);
    let addr = ew.tcp_addr("t");
    let conns: Vec<TcpStream> = (0..30)
        .map(|_| TcpStream::connect(&addr).expect("connect"))
        .collect();
    // connects_total is counted by each admitted connection's task, which may run after the
    // accept loop has refused the rest: wait for both
    let st = ew.poll("/api/status", Duration::from_secs(5), |v| {
        source(v)["connections_refused"]["max_clients"] == 25 && source(v)["connects_total"] == 5
    });
    assert_eq!(source(&st)["connections"], 5);
    drop(conns);
    ew.poll("/api/status", Duration::from_secs(5), |v| {
        source(v)["connections"] == 0
    });
    legit_sensor_delivers(&mut ew, 3);
}

/// A connection from a chosen loopback address (127.0.0.0/8 is all local on Linux).
fn connect_from(local: &str, to: &str) -> TcpStream {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .expect("runtime");
    let s = rt.block_on(async {
        let sock = tokio::net::TcpSocket::new_v4().expect("socket");
        sock.bind(format!("{local}:0").parse().expect("local"))
            .expect("bind");
        sock.connect(to.parse::<SocketAddr>().expect("to"))
            .await
            .expect("connect")
    });
    let s = s.into_std().expect("std");
    s.set_nonblocking(false).expect("blocking");
    s
}

#[test]
fn the_per_peer_cap_and_the_allow_list_turn_peers_away() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = config(
        dir.path(),
        "max_clients_per_ip = 3\nallow_from = [\"127.0.0.1/32\", \"127.0.0.2\"]\n",
        "",
    );
    let mut ew = Edgewatch::start(&cfg);
    let addr = ew.tcp_addr("t");
    let hog: Vec<TcpStream> = (0..5).map(|_| connect_from("127.0.0.1", &addr)).collect();
    let st = ew.poll("/api/status", Duration::from_secs(5), |v| {
        source(v)["connections_refused"]["per_ip"] == 2
    });
    assert_eq!(source(&st)["connections"], 3);
    // another peer still gets in and is served
    let mut other = connect_from("127.0.0.2", &addr);
    other
        .write_all(b"{\"device\":\"other\",\"metric\":\"m\",\"value\":1}\n")
        .expect("write");
    ew.poll("/api/status", Duration::from_secs(5), |v| {
        source(v)["samples"] == 1
    });
    // a peer outside allow_from is closed at once
    let mut outsider = connect_from("127.0.0.3", &addr);
    outsider
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("t");
    let _ = outsider.write_all(b"{\"device\":\"x\",\"metric\":\"m\",\"value\":1}\n");
    assert!(matches!(outsider.read(&mut [0u8; 8]), Ok(0) | Err(_)));
    let st = ew.poll("/api/status", Duration::from_secs(5), |v| {
        source(v)["connections_refused"]["not_allowed"] == 1
    });
    assert_eq!(source(&st)["samples"], 1, "nothing from the outsider");
    ew.wait_log(
        "connection refused: peer not in allow_from",
        Duration::from_secs(5),
    );
    ew.wait_log(
        "connection refused: max_clients_per_ip reached",
        Duration::from_secs(5),
    );
    drop(hog);
}

#[test]
fn out_of_descriptors_the_api_sheds_with_503_while_the_tcp_source_keeps_accepting() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = config(
        dir.path(),
        "max_clients = 100\nmax_clients_per_ip = 100\n",
        "fd_reserve = 24\nrequest_timeout = \"30s\"\nkeep_alive = \"30s\"\n",
    );
    let mut ew = Edgewatch::start_limited(&cfg, &[], Some(128));
    let st = ew.get("/api/status");
    assert_eq!(st["api"]["fd_limit"], 128);
    // 128 - open - 24 - 100 < 4: the API keeps its floor of 4 connections
    assert_eq!(st["api"]["max_connections"], 4);
    let mut api = TcpStream::connect(&ew.api).expect("connect");
    assert_eq!(
        request(&mut api, "/healthz", Duration::from_secs(5)),
        Some(200)
    );
    // sensors fill the descriptors until fewer than fd_reserve are free
    let addr = ew.tcp_addr("t");
    let open = st["api"]["fds_open"].as_u64().expect("fds_open");
    let fill = 128 - open - 24 + 4;
    let hold: Vec<TcpStream> = (0..fill)
        .map(|_| TcpStream::connect(&addr).expect("connect"))
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let mut shed = None;
    for _ in 0..20 {
        let mut c = TcpStream::connect(&ew.api).expect("connect");
        shed = request(&mut c, "/healthz", Duration::from_secs(5));
        if shed == Some(503) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(shed, Some(503), "the API sheds load");
    // the TCP source still accepts a real sensor and takes its samples
    let mut sensor = Sender::connect(&addr);
    for i in 0..5 {
        sensor.line(&format!(
            "{{\"device\":\"legit\",\"metric\":\"temp\",\"value\":{i}}}"
        ));
    }
    ew.wait_log("API shedding load", Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(300));
    drop(hold);
    // with descriptors back (once the server has seen the held connections close), the API
    // answers again: every sample arrived, the shedding counted
    let end = Instant::now() + Duration::from_secs(10);
    while ew.get_status("/healthz").0 == 503 {
        assert!(
            Instant::now() < end,
            "the API still sheds after the descriptors were freed"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let st = ew.poll("/api/status", Duration::from_secs(10), |v| {
        source(v)["samples"] == 5
    });
    assert!(st["api"]["shed_503"].as_u64() >= Some(1));
    assert_eq!(source(&st)["connections_refused"]["max_clients"], 0);
    drop(sensor);
}

#[test]
fn a_ws_client_that_never_answers_pings_is_dropped() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut ew = Edgewatch::start(&config(dir.path(), "", "ws_ping_interval = \"200ms\"\n"));
    // a tungstenite client answers pings whenever it reads: it stays
    let mut good = ew.ws("");
    let mut c = TcpStream::connect(&ew.api).expect("connect");
    c.write_all(
        b"GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .expect("handshake");
    let end = Instant::now() + Duration::from_secs(3);
    while Instant::now() < end {
        let _ = good.next(Duration::from_millis(100));
    }
    let st = ew.poll("/api/status", Duration::from_secs(5), |v| {
        v["ws"]["closed_idle"] == 1
    });
    assert_eq!(st["ws"]["clients"], 1, "the answering client stays");
    ew.wait_log("no pong for three ping intervals", Duration::from_secs(5));
    drop(c);
}

#[test]
fn when_every_slot_is_taken_a_silent_client_makes_room_for_a_sensor() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = config(dir.path(), "max_clients = 4\nevict_after = \"1s\"\n", "");
    let mut ew = Edgewatch::start(&cfg);
    let addr = ew.tcp_addr("t");
    // a real sensor that reports every 200 ms on its own connection
    let mut busy = connect_from("127.0.0.9", &addr);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let feeder = {
        let (stop, mut busy) = (stop.clone(), busy.try_clone().expect("clone"));
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let line = format!("{{\"device\":\"busy\",\"metric\":\"m\",\"value\":{i}}}\n");
                if busy.write_all(line.as_bytes()).is_err() {
                    return i;
                }
                i += 1;
                std::thread::sleep(Duration::from_millis(200));
            }
            i
        })
    };
    // three clients that connect and say nothing, from three addresses
    let mut silent: Vec<TcpStream> = (2..5)
        .map(|i| connect_from(&format!("127.0.0.{i}"), &addr))
        .collect();
    ew.poll("/api/status", Duration::from_secs(5), |v| {
        source(v)["connections"] == 4
    });
    // within evict_after nobody is silent long enough: a newcomer is refused
    let mut early = connect_from("127.0.0.20", &addr);
    early
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("t");
    assert_eq!(
        early.read(&mut [0u8; 8]).ok(),
        Some(0),
        "refused while full"
    );
    std::thread::sleep(Duration::from_millis(1500));
    // two sensors arrive: each takes the slot of a silent client, never the busy one's
    for n in 0..2 {
        let mut s = connect_from(&format!("127.0.0.{}", 30 + n), &addr);
        s.write_all(format!("{{\"device\":\"new{n}\",\"metric\":\"m\",\"value\":1}}\n").as_bytes())
            .expect("write");
        ew.poll("/api/devices", Duration::from_secs(5), |v| {
            v.to_string().contains(&format!("\"new{n}\""))
        });
        std::mem::forget(s); // keep it open for the rest of the test
    }
    let st = ew.get("/api/status");
    assert_eq!(source(&st)["connections_refused"]["evicted"], 2);
    assert_eq!(source(&st)["connections_refused"]["max_clients"], 1);
    assert_eq!(source(&st)["connections"], 4, "exact: two out, two in");
    let mut closed = 0;
    for c in &mut silent {
        c.set_read_timeout(Some(Duration::from_millis(300))).ok();
        closed += usize::from(matches!(c.read(&mut [0u8; 8]), Ok(0)));
    }
    assert_eq!(closed, 2, "two silent clients were closed");
    // the busy sensor kept its connection throughout
    let before = samples(&ew);
    ew.poll("/api/status", Duration::from_secs(5), |v| {
        source(v)["samples"].as_u64() > Some(before + 2)
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent = feeder.join().expect("feeder");
    busy.set_read_timeout(Some(Duration::from_millis(100))).ok();
    assert!(
        !matches!(busy.read(&mut [0u8; 8]), Ok(0)),
        "the busy sensor was not closed"
    );
    assert!(sent > 5);
    ew.wait_log(
        "closed the connection silent for longest",
        Duration::from_secs(5),
    );
}

/// A CA, a server certificate for `localhost` and a client certificate, as PEM files in `dir`.
fn tls_files(
    dir: &std::path::Path,
) -> (
    rcgen::Certificate,
    rcgen::KeyPair,
    rcgen::Certificate,
    rcgen::KeyPair,
) {
    use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, KeyPair};
    let ca_key = KeyPair::generate().expect("key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca.self_signed(&ca_key).expect("ca");
    let leaf = |name: &str, usage| {
        let key = KeyPair::generate().expect("key");
        let mut p = CertificateParams::new(vec![name.to_string()]).expect("params");
        p.extended_key_usages = vec![usage];
        (p.signed_by(&key, &ca, &ca_key).expect("sign"), key)
    };
    let (server, server_key) = leaf("localhost", ExtendedKeyUsagePurpose::ServerAuth);
    let (client, client_key) = leaf("sensor-1", ExtendedKeyUsagePurpose::ClientAuth);
    std::fs::write(dir.join("ca.pem"), ca.pem()).expect("write");
    std::fs::write(dir.join("server.pem"), server.pem()).expect("write");
    std::fs::write(dir.join("server.key"), server_key.serialize_pem()).expect("write");
    (ca, ca_key, client, client_key)
}

/// Connects with TLS (trusting `ca`), presenting `client` when given, and sends `lines`;
/// the error of the handshake or the first write, if any.
fn tls_send(
    addr: &str,
    ca: &rcgen::Certificate,
    client: Option<(&rcgen::Certificate, &rcgen::KeyPair)>,
    lines: &str,
) -> Result<(), String> {
    use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.der().clone()).map_err(|e| e.to_string())?;
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let b = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots);
        let cfg = match client {
            None => b.with_no_client_auth(),
            Some((c, k)) => b
                .with_client_auth_cert(
                    vec![c.der().clone()],
                    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(k.serialize_der())),
                )
                .map_err(|e| e.to_string())?,
        };
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        let name = ServerName::try_from("localhost").map_err(|e| e.to_string())?;
        let mut tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg))
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        tls.write_all(lines.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        tls.flush().await.map_err(|e| e.to_string())?;
        // TLS 1.3: a refused client certificate shows on the first read, after the write
        let mut buf = [0u8; 16];
        match tokio::time::timeout(Duration::from_millis(500), tls.read(&mut buf)).await {
            Ok(Err(e)) => Err(e.to_string()),
            _ => {
                let _ = tls.shutdown().await;
                Ok(())
            }
        }
    })
}

#[test]
fn tls_with_client_certificates_lets_only_trusted_sensors_in() {
    let dir = tempfile::tempdir().expect("tmp");
    let (ca, ca_key, client, client_key) = tls_files(dir.path());
    let d = dir.path().display();
    let cfg = config(
        dir.path(),
        &format!(
            "[source.tls]\ncert = \"{d}/server.pem\"\nkey = \"{d}/server.key\"\nclient_ca = \"{d}/ca.pem\"\nhandshake_timeout = \"1s\"\n"
        ),
        "",
    );
    let mut ew = Edgewatch::start(&cfg);
    let addr = ew.tcp_addr("t");
    ew.wait_log("(tls)", Duration::from_secs(5));
    // a sensor with a certificate from the CA gets its samples in
    tls_send(
        &addr,
        &ca,
        Some((&client, &client_key)),
        "{\"device\":\"trusted\",\"metric\":\"m\",\"value\":1}\n{\"device\":\"trusted\",\"metric\":\"m\",\"value\":2}\n",
    )
    .expect("trusted client");
    ew.poll("/api/status", Duration::from_secs(5), |v| {
        source(v)["samples"] == 2
    });
    // no client certificate: refused in the handshake, nothing accepted
    let e = tls_send(
        &addr,
        &ca,
        None,
        "{\"device\":\"anon\",\"metric\":\"m\",\"value\":1}\n",
    )
    .expect_err("no client certificate");
    assert!(e.to_lowercase().contains("certificate"), "{e}");
    // a certificate from another CA: refused too
    let other = dir.path().join("other");
    std::fs::create_dir_all(&other).expect("mkdir");
    let (_, _, stranger, stranger_key) = tls_files(&other);
    let e = tls_send(
        &addr,
        &ca,
        Some((&stranger, &stranger_key)),
        "{\"device\":\"stranger\",\"metric\":\"m\",\"value\":1}\n",
    )
    .expect_err("untrusted client certificate");
    assert!(!e.is_empty());
    // plaintext on a TLS listener, and a client that never starts a handshake
    let mut plain = Sender::connect(&addr);
    plain.line("{\"device\":\"plain\",\"metric\":\"m\",\"value\":1}");
    let _mute = TcpStream::connect(&addr).expect("connect");
    let st = ew.poll("/api/status", Duration::from_secs(5), |v| {
        source(v)["connections_refused"]["tls"] == 4
    });
    assert_eq!(
        source(&st)["samples"],
        2,
        "only the trusted sensor's samples"
    );
    ew.wait_log("tls handshake failed", Duration::from_secs(5));
    let devices = ew.get("/api/devices").to_string();
    assert!(
        devices.contains("trusted") && !devices.contains("anon"),
        "{devices}"
    );
    drop(ca_key);
}

#[test]
fn one_peer_flooding_the_api_cannot_starve_healthz_for_others() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = config(
        dir.path(),
        "",
        "max_connections = 40\nmax_connections_per_ip = 10\nrequest_timeout = \"30s\"\nkeep_alive = \"30s\"\n",
    );
    let mut ew = Edgewatch::start(&cfg);
    // 60 idle connections from one address: 10 are held, the other 50 are shut at once
    let api = ew.api.clone();
    let mut flood: Vec<TcpStream> = (0..60).map(|_| connect_from("127.0.0.2", &api)).collect();
    ew.poll("/api/status", Duration::from_secs(10), |v| {
        v["api"]["refused_per_ip"] == 50
    });
    let mut shut = 0;
    for c in &mut flood {
        c.set_read_timeout(Some(Duration::from_millis(100))).ok();
        shut += usize::from(matches!(c.read(&mut [0u8; 8]), Ok(0)));
    }
    assert_eq!(
        shut, 50,
        "the connections over the cap are closed, the others held"
    );
    // another address is served at once, repeatedly
    for _ in 0..5 {
        let mut c = connect_from("127.0.0.1", &api);
        assert_eq!(
            request(&mut c, "/healthz", Duration::from_secs(2)),
            Some(200)
        );
    }
    ew.wait_log(
        "API connection refused: api.max_connections_per_ip reached",
        Duration::from_secs(5),
    );
    // the flooder's held connections still work (they are capped, not banned)
    assert_eq!(
        request(&mut flood[0], "/healthz", Duration::from_secs(2)),
        Some(200)
    );
    legit_sensor_delivers(&mut ew, 3);
}
