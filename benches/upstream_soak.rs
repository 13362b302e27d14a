//! Upstream durability figures with the real release binary and a real receiver: disk bytes
//! written per hour at steady state, outbox bytes per 1,000 alerts, catch-up rate, soak size.
//!
//! `cargo bench --bench upstream_soak` — env: STEADY_MIN (5), OUTAGE_MIN (10), SOAK_MIN (30),
//! DEVICES (100), HZ (10 samples/s per device), PERSIST_S (600, the snapshot interval). Prints one
//! line per measurement (EDGEWATCH_BIN runs another build of the binary); the steady phase splits its writes by cause (`store.writes` in
//! `/api/status`). OUTAGE_MIN=0 SOAK_MIN=0 measures the steady state only.

#[path = "../tests/common/receiver.rs"]
mod receiver;

use std::io::Write;
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use receiver::{Behaviour, Receiver};
use serde_json::Value;

fn env(k: &str, d: u64) -> u64 {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

fn status(api: &str) -> Value {
    ureq::get(&format!("http://{api}/api/status"))
        .call()
        .expect("status")
        .into_json()
        .expect("json")
}

fn write_bytes(pid: u32) -> u64 {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap_or_default();
    io.lines()
        .find_map(|l| l.strip_prefix("write_bytes: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

fn dir_size(p: &std::path::Path) -> u64 {
    let mut total = 0;
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            let m = match e.metadata() {
                Ok(m) => m,
                Err(_) => continue,
            };
            total += if m.is_dir() {
                dir_size(&e.path())
            } else {
                m.len()
            };
        }
    }
    total
}

/// sled's files: the log's size, blob files (count, MB), other names (page-table snapshots).
fn layout(data: &std::path::Path) -> String {
    let db = std::fs::metadata(data.join("db")).map_or(0, |m| m.len());
    let (mut n, mut blob_bytes) = (0, 0);
    if let Ok(rd) = std::fs::read_dir(data.join("blobs")) {
        for e in rd.flatten() {
            n += 1;
            blob_bytes += e.metadata().map_or(0, |m| m.len());
        }
    }
    let mut other: Vec<String> = std::fs::read_dir(data)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !["db", "blobs", "conf"].contains(&n.as_str()))
                .collect()
        })
        .unwrap_or_default();
    other.sort();
    format!(
        "db {:.1} MB, {n} blobs {:.1} MB, {}",
        db as f64 / 1e6,
        blob_bytes as f64 / 1e6,
        other.join(" ")
    )
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return; // only `cargo bench` runs it; `cargo test --all-targets` just builds it
    }
    let (steady, outage, soak) = (
        env("STEADY_MIN", 5),
        env("OUTAGE_MIN", 10),
        env("SOAK_MIN", 30),
    );
    let (devices, hz) = (env("DEVICES", 100), env("HZ", 10));
    let persist = env("PERSIST_S", 600);
    let rx_port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("a")
        .port();
    let tcp_port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("a")
        .port();
    let api_port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("a")
        .port();
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");
    let cfg = dir.path().join("soak.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"node_id = "soak"
data_dir = {data:?}
summary_interval = "10s"
persist_interval = "{persist}s"
[api]
listen = "127.0.0.1:{api_port}"
[unknown_devices]
policy = "register"
[[source]]
id = "tcp"
kind = "tcp"
listen = "127.0.0.1:{tcp_port}"
[upstream]
url = "ws://127.0.0.1:{rx_port}"
summary_interval = "10s"
backoff_max = "2s"
"#
        ),
    )
    .expect("config");
    let api = format!("127.0.0.1:{api_port}");
    // EDGEWATCH_BIN: measure another build (e.g. a copy of the previous one) with the same load.
    let bin =
        std::env::var("EDGEWATCH_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_edgewatch").into());
    let mut child: Child = Command::new(bin)
        .args(["run", "--config"])
        .arg(&cfg)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("edgewatch");
    let pid = child.id();
    let t0 = Instant::now();
    while ureq::get(&format!("http://{api}/healthz")).call().is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "edgewatch did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // Load: DEVICES devices at HZ samples/s, Gaussian-ish noise, a spike with probability 1/1000.
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut s = TcpStream::connect(("127.0.0.1", tcp_port)).expect("tcp");
            let mut x: u64 = 0x2545_F491_4F6C_DD1D;
            let mut rnd = move || {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 11) as f64 / (1u64 << 53) as f64
            };
            let tick = Duration::from_millis(100);
            let per_tick = (devices * hz / 10).max(1);
            let mut next = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                let mut buf = String::new();
                for i in 0..per_tick {
                    let d = i % devices;
                    let noise: f64 = (0..4).map(|_| rnd()).sum::<f64>() - 2.0;
                    let v = if rnd() < 0.001 {
                        20.0 + 30.0
                    } else {
                        20.0 + noise
                    };
                    buf.push_str(&format!(
                        "{{\"device\":\"dev{d:03}\",\"metric\":\"temp\",\"value\":{v:.4}}}\n"
                    ));
                }
                if s.write_all(buf.as_bytes()).is_err() {
                    return;
                }
                next += tick;
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
            }
        })
    };

    // 1. Steady state with the receiver up.
    let rx = Receiver::start(&format!("127.0.0.1:{rx_port}"), Behaviour::default());
    std::thread::sleep(Duration::from_secs(30)); // warm-up: detectors, first snapshot
    let (w0, t0, s0) = (write_bytes(pid), Instant::now(), status(&api));
    let mut per_min = String::from(
        "steady per minute (MB written: snapshots/outbox/alert log/history handed to sled):",
    );
    let (mut last, mut last_st) = (w0, s0.clone());
    // Every 10 s: bursts (more than 1 MB in 10 s) with what the store wrote meanwhile and the
    // data directory's layout, to find who writes them.
    let mut bursts = Vec::new();
    let mut last10 = w0;
    for _ in 0..steady {
        for _ in 0..6 {
            std::thread::sleep(Duration::from_secs(10));
            let w = write_bytes(pid);
            if w - last10 > 1_000_000 && bursts.len() < 40 {
                bursts.push(format!(
                    "  +{:.0} s: {:.2} MB in 10 s; {}",
                    t0.elapsed().as_secs_f64(),
                    (w - last10) as f64 / 1e6,
                    layout(&data)
                ));
            }
            last10 = w;
        }
        let w = write_bytes(pid);
        let st = status(&api);
        let d = |k: &str| {
            (st["store"]["writes"][k].as_u64().unwrap_or(0)
                - last_st["store"]["writes"][k].as_u64().unwrap_or(0)) as f64
                / 1e6
        };
        per_min.push_str(&format!(
            " {:.2} ({:.2}/{:.2}/{:.2}/{:.2})",
            (w - last) as f64 / 1e6,
            d("snapshot_bytes"),
            d("outbox_bytes"),
            d("alert_log_bytes"),
            d("history_bytes")
        ));
        (last, last_st) = (w, st);
    }
    let secs = t0.elapsed().as_secs_f64();
    let per_hour = (write_bytes(pid) - w0) as f64 / secs * 3600.0;
    let st = status(&api);
    println!(
        "steady: {devices} devices x {hz} Hz, 10 s summaries, snapshots every {persist} s: {:.1} MB written per hour over {:.1} min; alerts fired {} resolved {}; data dir {:.1} MB",
        per_hour / 1e6,
        secs / 60.0,
        st["alerts"]["fired"].as_u64().unwrap_or(0) - s0["alerts"]["fired"].as_u64().unwrap_or(0),
        st["alerts"]["resolved"].as_u64().unwrap_or(0) - s0["alerts"]["resolved"].as_u64().unwrap_or(0),
        dir_size(&data) as f64 / 1e6
    );
    println!("{per_min}");
    println!("steady bursts (> 1 MB in 10 s): {}", bursts.len());
    for b in &bursts {
        println!("{b}");
    }
    println!("data dir at the end: {}", layout(&data));
    // What the store handed to sled, per cause, per hour; the rest is sled's and the kernel's.
    let d = |k: &str| {
        let (a, b) = (&st["store"]["writes"][k], &s0["store"]["writes"][k]);
        (a.as_u64().unwrap_or(0) - b.as_u64().unwrap_or(0)) as f64 / secs * 3600.0
    };
    let logical =
        d("snapshot_bytes") + d("alert_log_bytes") + d("outbox_bytes") + d("history_bytes");
    println!(
        "steady breakdown per hour: snapshots {:.2} MB ({:.0} records), alert log {:.2} MB ({:.0} records), outbox {:.2} MB ({:.0} records), history {:.2} MB ({:.0} records), removals {:.0}; {:.0} flushes ({:.1} MB at one 4 KiB page each), {:.0} manifests; sled + filesystem overhead {:.2} MB",
        d("snapshot_bytes") / 1e6,
        d("snapshot_records"),
        d("alert_log_bytes") / 1e6,
        d("alert_log_records"),
        d("outbox_bytes") / 1e6,
        d("outbox_records"),
        d("history_bytes") / 1e6,
        d("history_records"),
        d("removals"),
        d("flushes"),
        d("flushes") * 4096.0 / 1e6,
        d("manifests"),
        (per_hour - logical) / 1e6
    );
    if outage == 0 && soak == 0 {
        stop.store(true, Ordering::Relaxed);
        let _ = load.join();
        let _ = child.kill();
        let _ = child.wait();
        drop(rx);
        return;
    }

    // 2. Outage: the receiver is down for OUTAGE_MIN minutes.
    rx.stop();
    std::thread::sleep(Duration::from_secs(outage * 60));
    let st = status(&api);
    let up = &st["upstream"];
    let (alerts, summaries) = (
        up["outbox_alerts"].as_u64().unwrap_or(0),
        up["outbox_summaries"].as_u64().unwrap_or(0),
    );
    let alert_bytes = up["outbox_alert_bytes"].as_u64().unwrap_or(0);
    println!(
        "outage {outage} min: backlog {alerts} alerts + {summaries} summaries, {:.1} KB queued; {:.0} bytes per 1,000 alerts (sled values+keys)",
        up["outbox_bytes"].as_u64().unwrap_or(0) as f64 / 1e3,
        alert_bytes as f64 * 1000.0 / alerts.max(1) as f64
    );

    // 3. Catch-up.
    let t = Instant::now();
    let rx = Receiver::start(&format!("127.0.0.1:{rx_port}"), Behaviour::default());
    loop {
        let up = status(&api)["upstream"].clone();
        if up["outbox_alerts"] == 0 && up["outbox_summaries"] == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "catch-up: {} messages in {secs:.2} s = {:.0} messages/s (including connect and backoff)",
        alerts + summaries,
        (alerts + summaries) as f64 / secs
    );

    // 4. Soak: the receiver is down 3 minutes, up 2 minutes, repeatedly; data dir size over time.
    let mut rx = Some(rx);
    let start = Instant::now();
    let mut line = String::from("soak data dir MB:");
    while start.elapsed() < Duration::from_secs(soak * 60) {
        let m = start.elapsed().as_secs() / 60;
        let want_up = m % 5 >= 3;
        match (want_up, rx.is_some()) {
            (true, false) => {
                rx = Some(Receiver::start(
                    &format!("127.0.0.1:{rx_port}"),
                    Behaviour::default(),
                ))
            }
            (false, true) => {
                if let Some(r) = rx.take() {
                    r.stop();
                }
            }
            _ => {}
        }
        std::thread::sleep(Duration::from_secs(60));
        line.push_str(&format!(" {:.1}", dir_size(&data) as f64 / 1e6));
    }
    println!("{line}");
    let st = status(&api);
    println!(
        "soak end: peak RSS {} KiB, outbox {} alerts / {} summaries, sent {} acked {}",
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .map(|v| v.trim().trim_end_matches(" kB").to_string())
            .unwrap_or_default(),
        st["upstream"]["outbox_alerts"],
        st["upstream"]["outbox_summaries"],
        st["upstream"]["sent"],
        st["upstream"]["acked"]
    );
    stop.store(true, Ordering::Relaxed);
    let _ = load.join();
    let _ = child.kill();
    let _ = child.wait();
}
