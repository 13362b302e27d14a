//! Push sources through the whole in-process appliance: Influx line protocol (the reference's
//! documented examples) over TCP and UDP, and HTTP `POST /api/ingest` behind the API token with a
//! real HTTP client; samples must show up in `/api/devices` with their names and timestamps.

mod common;

use std::io::Write;
use std::net::{TcpStream, UdpSocket};
use std::time::Duration;

use common::{write_config, InProcess};
use serde_json::Value;

const TOKEN: &str = "ingest-test-token";

fn config(dir: &std::path::Path) -> std::path::PathBuf {
    let token = dir.join("api.token");
    std::fs::write(&token, TOKEN).expect("token file");
    // The line protocol reference's examples are from 2016: older than `[input] max_past`
    // (the build time − 2 years) allows by default.
    let body = r#"
[input]
max_past = "4000d"

[unknown_devices]
policy = "register"
template = "t"

[template.t]
window = 50
detectors = [{ type = "zscore", window = 30, threshold = 5.0, warmup = 10, hold = "0s" }]

[[source]]
id = "lp-tcp"
kind = "tcp"
listen = "127.0.0.1:0"
format = "influx"

[[source]]
id = "lp-udp"
kind = "udp"
listen = "127.0.0.1:0"
device_tag = "host"

[[source]]
id = "push"
kind = "http"
format = "json"
"#;
    let path = write_config(dir, body);
    let mut text = std::fs::read_to_string(&path).expect("read config");
    text.push_str(&format!("token_file = {:?}\n", token.display().to_string()));
    std::fs::write(&path, text).expect("write config");
    path
}

fn metric<'a>(devices: &'a Value, device: &str, metric: &str) -> Option<&'a Value> {
    devices.as_array()?.iter().find(|d| d["device"] == device)?["metrics"]
        .as_array()?
        .iter()
        .find(|m| m["metric"] == metric)
}

/// Waits until `device`/`name` has `total` samples and returns the metric's view.
fn wait_metric(ew: &InProcess, device: &str, name: &str, total: u64) -> Value {
    let end = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let all = authed_get(ew, "/api/devices");
        if let Some(m) = metric(&all, device, name) {
            if m["total"].as_u64() == Some(total) {
                return m.clone();
            }
        }
        assert!(
            std::time::Instant::now() < end,
            "{device}/{name} never reached {total} samples: {all}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn authed_get(ew: &InProcess, path: &str) -> Value {
    ureq::get(&format!("http://{}{path}", ew.api))
        .set("Authorization", &format!("Bearer {TOKEN}"))
        .timeout(Duration::from_secs(10))
        .call()
        .expect("GET")
        .into_json()
        .expect("json")
}

fn post(ew: &InProcess, token: Option<&str>, body: &str) -> (u16, String) {
    let mut req =
        ureq::post(&format!("http://{}/api/ingest", ew.api)).timeout(Duration::from_secs(10));
    if let Some(t) = token {
        req = req.set("Authorization", &format!("Bearer {t}"));
    }
    match req.send_string(body) {
        Ok(r) => (r.status(), r.into_string().unwrap_or_default()),
        Err(ureq::Error::Status(c, r)) => (c, r.into_string().unwrap_or_default()),
        Err(e) => panic!("POST: {e}"),
    }
}

#[test]
fn line_protocol_over_tcp_and_udp_and_json_over_http() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut ew = InProcess::start(&config(dir.path()));

    // TCP: the reference's examples, escapes included; the measurement names the device.
    let mut tcp = TcpStream::connect(ew.tcp_addr("lp-tcp")).expect("connect");
    tcp.write_all(
        concat!(
            "weather,location=us-midwest temperature=82 1465839830100400200\n",
            "weather,location=us-midwest temperature=82,bug_concentration=98 1465839830100400201\n",
            "weather,location=us-midwest temperature=\"too warm\" 1465839830100400202\n",
            "weather,location=us-midwest too_hot=true 1465839830100400203\n",
            "weather,location=us\\,midwest temp\\=rature=81i\n",
            "wea\\ ther,location=us-midwest temperature=80 1465839830100400200\n",
            "weather,location=us-midwest temperature=oops\n",
        )
        .as_bytes(),
    )
    .expect("send");
    let t = wait_metric(&ew, "weather", "temperature", 2);
    assert_eq!(t["last_ts"], 1_465_839_830_100i64, "{t}");
    assert_eq!(wait_metric(&ew, "weather", "too_hot", 1)["last_value"], 1.0);
    assert_eq!(
        wait_metric(&ew, "weather", "temp=rature", 1)["last_value"],
        81.0
    );
    assert_eq!(
        wait_metric(&ew, "wea ther", "temperature", 1)["last_value"],
        80.0
    );

    // UDP: Telegraf-style points, several per datagram, the `host` tag names the device.
    let udp = UdpSocket::bind("127.0.0.1:0").expect("udp");
    let to = ew.tcp_addr("lp-udp");
    udp.send_to(
        b"cpu,cpu=cpu-total,host=pi-kitchen usage_user=1.5,usage_idle=97.5 1465839830100400200\nmem,host=pi-kitchen used_percent=41.25 1465839830100400200",
        &to,
    )
    .expect("datagram");
    assert_eq!(
        wait_metric(&ew, "pi-kitchen", "cpu.usage_idle", 1)["last_value"],
        97.5
    );
    assert_eq!(
        wait_metric(&ew, "pi-kitchen", "mem.used_percent", 1)["last_value"],
        41.25
    );

    // HTTP on the API listener: the API token is required; 204 once taken; 400 names the line.
    assert_eq!(post(&ew, None, r#"{"device":"esp32","t":1}"#).0, 401);
    let body = "{\"device\":\"esp32\",\"ts\":1700000000123456,\"temp\":21.5}\n{\"device\":\"esp32\",\"ts\":1700000001123456,\"temp\":21.75}\n";
    let (code, text) = post(&ew, Some(TOKEN), body);
    assert_eq!(code, 204, "{text}");
    let m = wait_metric(&ew, "esp32", "temp", 2);
    // Microseconds are told from milliseconds (ts_unit = "auto").
    assert_eq!(m["last_ts"], 1_700_000_001_123i64, "{m}");
    let (code, text) = post(
        &ew,
        Some(TOKEN),
        "{\"device\":\"esp32\",\"temp\":1}\nnot json\n",
    );
    assert_eq!(code, 400, "{text}");
    assert!(text.contains("line 2: invalid JSON"), "{text}");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        wait_metric(&ew, "esp32", "temp", 2)["last_value"],
        21.75,
        "the 400 body took nothing"
    );

    // Counters: the bad TCP line and the bad HTTP line are rejected frames of their sources.
    let status = authed_get(&ew, "/api/status");
    let src = |id: &str| {
        status["sources"]
            .as_array()
            .and_then(|a| a.iter().find(|s| s["id"] == id))
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(src("lp-tcp")["frames_rejected"], 1, "{status}");
    assert_eq!(src("push")["frames_rejected"], 1, "{status}");
    assert_eq!(src("push")["samples"], 2, "{status}");
    assert_eq!(src("lp-udp")["samples"], 3, "{status}");
    ew.stop();
}
