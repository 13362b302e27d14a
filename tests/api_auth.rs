//! The real binary with `api.token_file`: `/api/*` and `/ws` answer 401 without the token and work
//! with it (header, or `?token=` on `/ws`); `/healthz` and the dashboard stay open; a missing token
//! file stops start-up with its path. Also the series endpoint that feeds the dashboard's charts.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{write_config, InProcess, Sender, BIN};
use serde_json::Value;
use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest, http::HeaderValue};

const TOKEN: &str = "0b1e5c7a-test-token";

fn config(dir: &std::path::Path, token_file: &str) -> std::path::PathBuf {
    // `write_config` appends `[api]` last: the token file goes in that table.
    let body = r#"
summary_interval = "500ms"

[unknown_devices]
policy = "register"
template = "t"

[template.t]
window = 50
detectors = [{ type = "zscore", window = 30, threshold = 5.0, warmup = 10, hold = "0s" }]

[[source]]
id = "tcp"
kind = "tcp"
listen = "127.0.0.1:0"
"#;
    let path = write_config(dir, body);
    let mut text = std::fs::read_to_string(&path).expect("read config");
    text.push_str(&format!("token_file = {token_file:?}\n"));
    std::fs::write(&path, text).expect("write config");
    path
}

/// Status and JSON body of a GET with an optional `Authorization` header.
fn get(ew: &InProcess, path: &str, auth: Option<&str>) -> (u16, Value) {
    let url = format!("http://{}{path}", ew.api);
    let mut req = ureq::get(&url).timeout(Duration::from_secs(10));
    if let Some(a) = auth {
        req = req.set("Authorization", a);
    }
    let resp = match req.call() {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("GET {url}: {e}"),
    };
    let status = resp.status();
    let body = resp.into_string().expect("body");
    (
        status,
        serde_json::from_str(&body).unwrap_or(Value::String(body)),
    )
}

fn ws_status(url: &str, auth: Option<&str>) -> Result<Value, u16> {
    let mut req = url.into_client_request().expect("request");
    if let Some(a) = auth {
        req.headers_mut()
            .insert("Authorization", HeaderValue::from_str(a).expect("header"));
    }
    match tungstenite::connect(req) {
        Ok((mut ws, _)) => {
            let msg = ws.read().expect("first message");
            Ok(serde_json::from_str(msg.to_text().expect("text")).expect("json"))
        }
        Err(tungstenite::Error::Http(resp)) => Err(resp.status().as_u16()),
        Err(e) => panic!("ws {url}: {e}"),
    }
}

#[test]
fn token_guards_api_and_ws_but_not_health_or_dashboard() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tok = dir.path().join("token");
    std::fs::write(&tok, format!("  {TOKEN}\n")).expect("write token");
    let cfg = config(dir.path(), &tok.display().to_string());
    let ew = InProcess::start(&cfg);
    let bearer = format!("Bearer {TOKEN}");

    for path in [
        "/api/status",
        "/api/devices",
        "/api/devices/x",
        "/api/devices/x/series",
        "/api/alerts",
        "/api/nonexistent",
    ] {
        let (code, body) = get(&ew, path, None);
        assert_eq!(code, 401, "{path} without a token: {body}");
        assert!(
            body["error"]
                .as_str()
                .is_some_and(|e| e.contains("missing token")),
            "{body}"
        );
        let (code, body) = get(&ew, path, Some("Bearer wrong-token"));
        assert_eq!(
            (code, body["error"].as_str()),
            (401, Some("invalid token")),
            "{path}"
        );
        let (code, _) = get(&ew, &format!("{path}?token={TOKEN}"), None);
        assert_eq!(code, 401, "{path}: ?token= is only for /ws");
    }
    let (code, body) = get(&ew, "/api/status", Some(&bearer));
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["node_id"], "test");
    assert!(body["now"].as_i64().is_some_and(|n| n > 1_700_000_000_000));
    let (code, _) = get(&ew, "/api/nonexistent", Some(&bearer));
    assert_eq!(code, 404);

    // Open without a token: health, the page and its assets.
    assert_eq!(get(&ew, "/healthz", None).0, 200);
    let (code, page) = ew.get_status("/");
    assert_eq!(code, 200);
    assert!(page.contains("/assets/app.js"), "{page}");
    assert_eq!(ew.get_status("/assets/app.js").0, 200);
    assert_eq!(ew.get_status("/assets/nope.js").0, 404);

    let ws = format!("ws://{}/ws", ew.api);
    assert_eq!(ws_status(&ws, None), Err(401));
    assert_eq!(ws_status(&format!("{ws}?token=nope"), None), Err(401));
    assert_eq!(ws_status(&ws, Some("Bearer nope")), Err(401));
    let hello = ws_status(&format!("{ws}?type=alert&token={TOKEN}"), None).expect("query token");
    assert_eq!(hello["type"], "hello");
    let hello = ws_status(&ws, Some(&bearer)).expect("header token");
    assert_eq!(hello["type"], "hello");
}

#[test]
fn without_a_token_file_the_api_is_open_and_a_missing_file_stops_start_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = write_config(dir.path(), "");
    let ew = InProcess::start(&cfg);
    assert_eq!(ew.get_status("/api/status").0, 200);
    drop(ew);

    let missing = dir.path().join("no-such-token");
    let cfg = config(dir.path(), &missing.display().to_string());
    let out = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&cfg)
        .output()
        .expect("run edgewatch");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "cannot read token file {:?}",
            missing.display().to_string()
        )) && err.contains("(field `api.token_file`)"),
        "{err}"
    );
}

#[test]
fn series_returns_recent_points_with_band_and_fired_flags() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = write_config(
        dir.path(),
        r#"
[analysis]
history = 40

[unknown_devices]
policy = "register"
template = "t"

[template.t]
window = 50
detectors = [{ type = "zscore", window = 30, threshold = 5.0, warmup = 10, hold = "0s" }]

[[source]]
id = "tcp"
kind = "tcp"
listen = "127.0.0.1:0"
"#,
    );
    let mut ew = InProcess::start(&cfg);
    let mut tx = Sender::connect(&ew.tcp_addr("tcp"));
    let t0 = 1_763_000_000_000i64;
    for i in 0..60i64 {
        let v = if i == 50 {
            90.0
        } else {
            20.0 + common::noise(i as u64)
        };
        tx.line(&format!(
            r#"{{"device":"d1","metric":"temp","ts":{},"value":{v}}}"#,
            t0 + i * 1000
        ));
        tx.line(&format!(
            r#"{{"device":"d1","metric":"hum","ts":{},"value":{}}}"#,
            t0 + i * 1000,
            50.0 + common::noise(i as u64 + 7)
        ));
    }
    // Until every sample is in (the device is registered by its first sample).
    let end = std::time::Instant::now() + Duration::from_secs(10);
    let s = loop {
        let (code, body) = ew.get_status("/api/devices/d1/series?metric=temp");
        let v: Value = serde_json::from_str(&body).unwrap_or_default();
        if code == 200 && v["metrics"][0]["ts"][39] == t0 + 59_000 {
            break v;
        }
        assert!(
            std::time::Instant::now() < end,
            "series not complete: {code} {body}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let m = &s["metrics"][0];
    assert_eq!(s["metrics"].as_array().map(Vec::len), Some(1));
    assert_eq!(
        (m["metric"].as_str(), m["capacity"].as_u64()),
        (Some("temp"), Some(40))
    );
    assert_eq!(
        (m["k"].as_f64(), m["band"].as_str()),
        (Some(5.0), Some("zscore"))
    );
    let ts: Vec<i64> = m["ts"]
        .as_array()
        .expect("ts")
        .iter()
        .filter_map(Value::as_i64)
        .collect();
    assert_eq!(
        ts.first(),
        Some(&(t0 + 20_000)),
        "the ring keeps the last 40 of 60"
    );
    assert_eq!(ts.last(), Some(&(t0 + 59_000)));
    assert_eq!(
        m["fired"],
        serde_json::json!([30]),
        "the spike at i=50 is index 30"
    );
    assert_eq!(m["value"][30].as_f64(), Some(90.0));
    let (mean, std) = (
        m["mean"][30].as_f64().expect("mean"),
        m["std"][30].as_f64().expect("std"),
    );
    assert!(
        (mean - 20.0).abs() < 0.5 && std < 1.0,
        "baseline before the spike: {mean} ± {std}"
    );

    let all = ew.get("/api/devices/d1/series");
    let names: Vec<&str> = all["metrics"]
        .as_array()
        .expect("metrics")
        .iter()
        .filter_map(|m| m["metric"].as_str())
        .collect();
    assert_eq!(names, ["hum", "temp"]);
    let tail = ew.get(&format!(
        "/api/devices/d1/series?metric=temp&since={}",
        t0 + 57_000
    ));
    assert_eq!(
        tail["metrics"][0]["ts"],
        serde_json::json!([t0 + 58_000, t0 + 59_000])
    );

    let (code, body) = ew.get_status("/api/devices/nope/series");
    assert_eq!(code, 404, "{body}");
    assert!(body.contains("device \\\"nope\\\""), "{body}");
    let (code, body) = ew.get_status("/api/devices/d1/series?metric=nope");
    assert_eq!(code, 404, "{body}");
    let (code, body) = ew.get_status("/api/devices/d1/series?since=yesterday");
    assert_eq!(code, 400, "{body}");
}
