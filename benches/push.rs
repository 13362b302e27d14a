//! Influx line protocol pushed over UDP and HTTP into the real binary: samples per second of
//! edgewatch CPU time (= per core), the figure for a Pi's budget. Decode, routing and analysis
//! (zscore, 100 devices × 4 fields) included; the load generator runs in this process.
//!
//! `cargo bench --bench push` (release; add `-- --secs 10` for longer runs). Prints one line per
//! transport: offered, taken, loss, edgewatch CPU seconds and samples per CPU second.

use std::io::{BufRead, BufReader};
use std::net::UdpSocket;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const DEVICES: usize = 100;
/// Lines per UDP datagram (~90 bytes each, ~3.6 KB per datagram).
const LINES_PER_DATAGRAM: usize = 40;
/// Lines per HTTP body.
const LINES_PER_BODY: usize = 1000;

fn line(i: usize) -> String {
    let d = i % DEVICES;
    let v = 20.0 + ((i * 7919) % 1000) as f64 / 1000.0;
    format!(
        "env,host=dev{d:03} temp={v},hum={},press=1013.{},ok=true {}\n",
        40.0 + v / 10.0,
        i % 10,
        1_763_761_234_000_000_000u64 + i as u64 * 1_000_000
    )
}

fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which ends with `)`): utime is the 12th, stime the 13th.
    let rest = stat.rsplit_once(')').map(|x| x.1).unwrap_or_default();
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|x| x.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|x| x.parse().ok()).unwrap_or(0.0);
    let hz = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .trim()
                .parse::<f64>()
                .ok()
        })
        .unwrap_or(100.0);
    ticks / hz
}

fn samples(api: &str, source: &str) -> u64 {
    let v: serde_json::Value = ureq::get(&format!("http://{api}/api/status"))
        .call()
        .expect("status")
        .into_json()
        .expect("json");
    v["sources"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["id"] == source))
        .and_then(|s| s["samples"].as_u64())
        .unwrap_or(0)
}

/// Waits until the counter stops moving (the queues drained), returns it.
fn settled(api: &str, source: &str) -> u64 {
    let mut last = samples(api, source);
    loop {
        std::thread::sleep(Duration::from_millis(300));
        let now = samples(api, source);
        if now == last {
            return now;
        }
        last = now;
    }
}

fn report(what: &str, offered: u64, taken: u64, cpu: f64, wall: f64) {
    println!(
        "{what:<5} offered {offered:>9} in {wall:.1}s  taken {taken:>9} ({:.2}% lost)  edgewatch CPU {cpu:.2}s  => {:.0} samples/s per core",
        100.0 * (offered.saturating_sub(taken)) as f64 / offered.max(1) as f64,
        taken as f64 / cpu.max(1e-9)
    );
}

fn main() {
    let secs: f64 = std::env::args()
        .skip_while(|a| a != "--secs")
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(5.0);
    let dir = tempfile::tempdir().expect("tmp");
    let udp_port = UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("port")
        .port();
    let cfg = dir.path().join("bench.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"node_id = "bench"
data_dir = {data:?}
[api]
listen = "127.0.0.1:0"
[analysis]
shards = 1
[unknown_devices]
policy = "register"
template = "t"
[template.t]
window = 256
detectors = [{{ type = "zscore", window = 256, threshold = 6.0, warmup = 32 }}]
[[source]]
id = "udp"
kind = "udp"
listen = "127.0.0.1:{udp_port}"
device_tag = "host"
[[source]]
id = "http"
kind = "http"
format = "influx"
device_tag = "host"
max_body = 4194304
"#,
            data = dir.path().join("data").display().to_string()
        ),
    )
    .expect("config");
    let mut child = Command::new(env!("CARGO_BIN_EXE_edgewatch"))
        .args(["run", "--config"])
        .arg(&cfg)
        .env("RUST_LOG", "warn,edgewatch=info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start edgewatch");
    let pid = child.id();
    let mut err = BufReader::new(child.stderr.take().expect("stderr"));
    let mut api = String::new();
    let mut l = String::new();
    while api.is_empty() {
        l.clear();
        if err.read_line(&mut l).unwrap_or(0) == 0 {
            panic!("edgewatch exited before its API was up");
        }
        if let Some(rest) = l.split("dashboard/API at http://").nth(1) {
            api = rest.split('/').next().unwrap_or_default().to_string();
        }
    }
    std::thread::spawn(move || for _ in err.lines() {});

    // UDP: datagrams of 40 lines, as fast as one sender thread goes.
    let lines: Vec<String> = (0..DEVICES * 50).map(line).collect();
    let datagrams: Vec<Vec<u8>> = lines
        .chunks(LINES_PER_DATAGRAM)
        .map(|c| c.concat().into_bytes())
        .collect();
    let sock = UdpSocket::bind("127.0.0.1:0").expect("udp");
    let to = format!("127.0.0.1:{udp_port}");
    let cpu0 = cpu_seconds(pid);
    let start = Instant::now();
    let mut offered = 0u64;
    'udp: loop {
        for d in &datagrams {
            if sock.send_to(d, &to).is_ok() {
                offered += LINES_PER_DATAGRAM as u64 * 4;
            }
            if start.elapsed().as_secs_f64() >= secs {
                break 'udp;
            }
        }
    }
    let wall = start.elapsed().as_secs_f64();
    let taken = settled(&api, "udp");
    report("udp", offered, taken, cpu_seconds(pid) - cpu0, wall);

    // HTTP: bodies of 1000 lines from two client threads with keep-alive.
    let bodies: Vec<String> = lines.chunks(LINES_PER_BODY).map(|c| c.concat()).collect();
    let cpu0 = cpu_seconds(pid);
    let start = Instant::now();
    let url = format!("http://{api}/api/ingest");
    let offered: u64 = std::thread::scope(|s| {
        let hs: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    let agent = ureq::agent();
                    let mut n = 0u64;
                    'http: loop {
                        for b in &bodies {
                            match agent.post(&url).send_string(b) {
                                Ok(_) => n += LINES_PER_BODY as u64 * 4,
                                Err(ureq::Error::Status(503 | 429, _)) => {
                                    std::thread::sleep(Duration::from_millis(10))
                                }
                                Err(e) => panic!("POST: {e}"),
                            }
                            if start.elapsed().as_secs_f64() >= secs {
                                break 'http;
                            }
                        }
                    }
                    n
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().expect("client")).sum()
    });
    let wall = start.elapsed().as_secs_f64();
    let taken = settled(&api, "http");
    report("http", offered, taken, cpu_seconds(pid) - cpu0, wall);
    let _ = child.kill();
    let _ = child.wait();
}
