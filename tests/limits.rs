//! Hostile and buggy input against the real binary: the series budget (caps, rejection counters,
//! the internal alert, expiry with its saved state, restore over budget) and sane input (timestamps,
//! names, Origin, bearer case, plaintext credentials, pagination).

mod common;

use std::time::Duration;

use common::{now_ms, write_config, Edgewatch, Sender};
use serde_json::Value;
use tokio_tungstenite::tungstenite;

fn budget(status: &Value) -> &Value {
    &status["analysis"]["budget"]
}

fn source<'a>(status: &'a Value, id: &str) -> &'a Value {
    status["sources"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["id"] == id))
        .expect("source in status")
}

const BUDGET_CONFIG: &str = r#"
persist_interval = "1s"
[analysis]
shards = 2
max_devices = 40
max_series = 30
max_metrics_per_device = 4
expire_after = "3s"
[unknown_devices]
policy = "register"
[[source]]
id = "tcp"
kind = "tcp"
listen = "127.0.0.1:0"
[[device]]
id = "legit"
[device.metrics.temp]
detectors = [{ type = "threshold", max = 100.0 }]
"#;

/// A sender that invents device and metric names (a counter in the name) is stopped at the
/// budget: rejected and counted per reason and per source, logged, raised as an internal alert;
/// a configured sensor keeps being analysed; once the invented devices expire the alert resolves
/// and their saved state is gone after a restart.
#[test]
fn invented_names_are_stopped_by_the_budget_and_expire() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), BUDGET_CONFIG);
    let mut ew = Edgewatch::start(&config);
    let addr = ew.tcp_addr("tcp");
    let mut legit = Sender::connect(&addr);
    legit.line(r#"{"device":"legit","metric":"temp","value":20}"#);
    let mut attacker = Sender::connect(&addr);
    // One device with a counter in its metric names, then many devices.
    for m in 0..10 {
        attacker.line(&format!(
            r#"{{"device":"bot-0","metric":"m{m}","value":1}}"#
        ));
    }
    ew.poll("/api/status", Duration::from_secs(10), |s| {
        budget(s)["rejected"]["max_metrics_per_device"] == 6
    });
    let mut flood = String::new();
    for d in 1..200 {
        flood.push_str(&format!(r#"{{"device":"bot-{d}","metric":"m","value":1}}"#));
        flood.push('\n');
    }
    attacker.send(flood.as_bytes());

    let st = ew.poll("/api/status", Duration::from_secs(10), |s| {
        let a = &s["analysis"];
        a["samples"].as_u64().unwrap_or(0) + a["rejected_limit"].as_u64().unwrap_or(0) == 210
    });
    let b = budget(&st);
    assert_eq!(b["series"], 30, "{b}");
    assert_eq!(b["max_series"], 30);
    assert!(b["state_bytes"].as_u64() > Some(30 * 1024), "{b}");
    let rejected = st["analysis"]["rejected_limit"].as_u64().expect("count");
    assert!(rejected >= 170, "{st}");
    assert_eq!(
        source(&st, "tcp")["rejected_limit"].as_u64(),
        Some(rejected)
    );
    ew.wait_log("reason=max_series", Duration::from_secs(5));
    ew.wait_log("reason=max_metrics_per_device", Duration::from_secs(5));
    ew.poll("/api/alerts?device=test", Duration::from_secs(5), |a| {
        a.as_array()
            .is_some_and(|a| a.iter().any(|x| x["detector"] == "series_budget"))
    });

    // The configured sensor keeps being analysed while the budget is full.
    for v in 0..5 {
        legit.line(&format!(
            r#"{{"device":"legit","metric":"temp","value":{v}}}"#
        ));
    }
    ew.poll("/api/devices/legit", Duration::from_secs(5), |d| {
        d["metrics"][0]["total"] == 6
    });

    // Let the bots be snapshotted, then keep only the legit sensor talking: the bots expire.
    std::thread::sleep(Duration::from_millis(1_500));
    let end = std::time::Instant::now() + Duration::from_secs(15);
    let mut sent = 6;
    loop {
        legit.line(r#"{"device":"legit","metric":"temp","value":21}"#);
        sent += 1;
        let alerts = ew.get("/api/alerts?device=test");
        let resolved = alerts.as_array().is_some_and(|a| {
            a.iter()
                .any(|x| x["detector"] == "series_budget" && x["state"] == "resolved")
        });
        if resolved {
            break;
        }
        assert!(
            std::time::Instant::now() < end,
            "budget alert not resolved: {alerts} {}",
            ew.get("/api/status")["analysis"]
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let st = ew.get("/api/status");
    assert_eq!(
        budget(&st)["devices"],
        1,
        "only the configured device is left: {st}"
    );
    assert_eq!(budget(&st)["series"], 1);
    assert!(ew.log_text().contains("expired device evicted"));
    ew.poll("/api/devices/legit", Duration::from_secs(5), |d| {
        d["metrics"][0]["total"].as_u64() == Some(sent)
    });
    let (code, _) = ew.get_status("/api/devices/bot-1");
    assert_eq!(code, 404);
    std::thread::sleep(Duration::from_millis(1_500));
    let (st, _) = ew.terminate();
    assert!(st.success());

    // After a restart with a long expiry, the bots' saved state is gone (not merely skipped).
    let text = std::fs::read_to_string(&config)
        .expect("config")
        .replace("expire_after = \"3s\"", "expire_after = \"7d\"");
    std::fs::write(&config, text).expect("config");
    let ew = Edgewatch::start(&config);
    ew.poll("/api/devices/legit", Duration::from_secs(10), |d| {
        d["metrics"][0]["total"].as_u64() >= Some(sent)
    });
    // Both shards have restored by now (the log says so for each shard with state).
    std::thread::sleep(Duration::from_millis(500));
    let st = ew.get("/api/status");
    assert_eq!(budget(&st)["devices"], 1, "{st}");
    assert_eq!(ew.get("/api/devices").as_array().map(Vec::len), Some(1));
}

/// Saved state is restored only as far as the budget allows.
#[test]
fn restore_respects_the_budget() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), &BUDGET_CONFIG.replace("\"3s\"", "\"7d\""));
    let mut ew = Edgewatch::start(&config);
    let addr = ew.tcp_addr("tcp");
    let mut s = Sender::connect(&addr);
    for d in 0..20 {
        s.line(&format!(r#"{{"device":"d-{d}","metric":"m","value":1}}"#));
    }
    ew.poll("/api/status", Duration::from_secs(10), |s| {
        budget(s)["devices"] == 21
    });
    let (st, _) = ew.terminate();
    assert!(st.success());

    let text = std::fs::read_to_string(&config)
        .expect("config")
        .replace("max_devices = 40", "max_devices = 8");
    std::fs::write(&config, text).expect("config");
    let mut ew = Edgewatch::start(&config);
    // Shards restore in their own threads, after the API is up.
    std::thread::sleep(Duration::from_millis(500));
    let st = ew.poll("/api/status", Duration::from_secs(10), |s| {
        budget(s)["rejected"]["max_devices"] == 13
    });
    assert_eq!(budget(&st)["devices"], 8, "{st}");
    ew.wait_log("not restored", Duration::from_secs(5));
}

const INPUT_CONFIG: &str = r#"
[unknown_devices]
policy = "register"
[[source]]
id = "tcp"
kind = "tcp"
listen = "127.0.0.1:0"
[[source]]
id = "restamp"
kind = "tcp"
listen = "127.0.0.1:0"
"#;

/// Status and body of a GET with extra headers.
fn get_with(api: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut req = ureq::get(&format!("http://{api}{path}")).timeout(Duration::from_secs(10));
    for (k, v) in headers {
        req = req.set(k, v);
    }
    match req.call() {
        Ok(r) => (r.status(), r.into_string().unwrap_or_default()),
        Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap_or_default()),
        Err(e) => panic!("GET {path}: {e}"),
    }
}

/// A far-future timestamp (9e18, one that froze a span window) is rejected and counted, or
/// re-stamped with the receive time under `ts_policy = "receive"`; one from 1970 likewise; names
/// with control or bidi characters are rejected; `/api/devices` pages; a foreign `Origin` or
/// `Host` is refused while the same host and clients without `Origin` work.
#[test]
fn out_of_bounds_timestamps_bad_names_and_foreign_origins_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), INPUT_CONFIG);
    let mut ew = Edgewatch::start(&config);
    let addr = ew.tcp_addr("tcp");
    let mut s = Sender::connect(&addr);
    let now = now_ms();
    s.line(r#"{"device":"far","metric":"m","ts":9000000000000000000,"value":1}"#);
    s.line(r#"{"device":"far","metric":"m","ts":1000,"value":1}"#);
    s.line(&format!(
        r#"{{"device":"far","metric":"m","ts":{},"value":1}}"#,
        now + 2 * 86_400_000
    ));
    s.line(&format!(
        r#"{{"device":"ok","metric":"m","ts":{now},"value":1}}"#
    ));
    s.line(r#"{"device":"evil\u202Eexe","metric":"m","value":1}"#);
    s.line(r#"{"device":"bell\u0007","metric":"m","value":1}"#);
    let st = ew.poll("/api/status", Duration::from_secs(10), |s| {
        source(s, "tcp")["rejected_ts"] == 3
            && source(s, "tcp")["frames_rejected"] == 2
            && s["analysis"]["samples"] == 1
    });
    assert_eq!(st["analysis"]["samples"], 1, "{st}");
    ew.wait_log("timestamp too far in the future", Duration::from_secs(5));
    ew.wait_log(
        "bidirectional formatting characters",
        Duration::from_secs(5),
    );
    let (code, _) = ew.get_status("/api/devices/far");
    assert_eq!(code, 404);

    drop(s);
    let (st, _) = ew.terminate();
    assert!(st.success());
    let text = std::fs::read_to_string(&config).expect("config").replace(
        "[unknown_devices]",
        "[input]\nts_policy = \"receive\"\n[unknown_devices]",
    );
    std::fs::write(&config, text).expect("config");
    let mut ew = Edgewatch::start(&config);
    let addr = ew.tcp_addr("tcp");
    let mut s = Sender::connect(&addr);
    let before = now_ms();
    s.line(r#"{"device":"far","metric":"m","ts":9000000000000000000,"value":1}"#);
    let st = ew.poll("/api/status", Duration::from_secs(10), |s| {
        source(s, "tcp")["restamped_ts"] == 1 && s["analysis"]["samples"] == 1
    });
    assert_eq!(st["analysis"]["samples"], 1, "{st}");
    let d = ew.poll("/api/devices/far", Duration::from_secs(5), |_| true);
    let ts = d["metrics"][0]["last_ts"].as_i64().expect("ts");
    assert!(
        ts >= before - 1_000 && ts <= now_ms(),
        "re-stamped with receive time: {ts}"
    );

    // Pages of devices.
    for i in 0..5 {
        s.line(&format!(r#"{{"device":"p{i}","metric":"m","value":1}}"#));
    }
    ew.poll("/api/status", Duration::from_secs(10), |s| {
        s["analysis"]["devices"] == 7 // far, ok (restored), p0..p4
    });
    let url = format!("http://{}/api/devices?offset=2&limit=3", ew.api);
    let r = ureq::get(&url).call().expect("page");
    assert_eq!(r.header("X-Total-Count"), Some("7"));
    let page: Value = r.into_json().expect("json");
    let ids: Vec<_> = page
        .as_array()
        .expect("array")
        .iter()
        .map(|d| d["device"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(ids, ["p0", "p1", "p2"]);

    // Origin / Host.
    let api = ew.api.clone();
    let port = api.rsplit_once(':').map(|p| p.1).unwrap_or("");
    assert_eq!(
        get_with(&api, "/api/status", &[]).0,
        200,
        "no Origin: tail, curl"
    );
    assert_eq!(
        get_with(&api, "/api/status", &[("Origin", &format!("http://{api}"))]).0,
        200,
        "the dashboard's own origin"
    );
    let (code, body) = get_with(&api, "/api/status", &[("Origin", "http://evil.example")]);
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("api.allowed_origins"), "{body}");
    let (code, _) = get_with(
        &api,
        "/api/status",
        &[("Host", &format!("evil.example:{port}"))],
    );
    assert_eq!(code, 403, "DNS rebinding: a foreign Host");
    let mut req =
        tungstenite::client::IntoClientRequest::into_client_request(format!("ws://{api}/ws"))
            .expect("request");
    req.headers_mut().insert(
        "Origin",
        tungstenite::http::HeaderValue::from_static("http://evil.example"),
    );
    assert!(
        tungstenite::connect(req).is_err(),
        "/ws refuses a foreign Origin"
    );
    ew.wait_log("API request refused", Duration::from_secs(5));
}

/// `bearer` in any case; `check` warns about credentials over plaintext URLs.
#[test]
fn bearer_in_any_case_and_plaintext_credentials_warned() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret\n").expect("token");
    let config = write_config(dir.path(), INPUT_CONFIG);
    let text = std::fs::read_to_string(&config).expect("config")
        + &format!("token_file = {:?}\n", token.display().to_string());
    std::fs::write(&config, &text).expect("config");
    let ew = Edgewatch::start(&config);
    for auth in ["Bearer s3cret", "bearer s3cret", "BEARER s3cret"] {
        assert_eq!(
            get_with(&ew.api, "/api/status", &[("Authorization", auth)]).0,
            200,
            "{auth}"
        );
    }
    assert_eq!(
        get_with(&ew.api, "/api/status", &[("Authorization", "bearer nope")]).0,
        401
    );
    drop(ew);

    let plain = write_config(
        dir.path(),
        r#"
[[source]]
id = "broker"
kind = "mqtt"
url = "mqtt://127.0.0.1:1883"
username = "u"
password_env = "PW"
[[source.subscribe]]
topic = "s/{device}/{metric}"
"#,
    );
    let out = std::process::Command::new(common::BIN)
        .args(["check", "--config"])
        .arg(&plain)
        .output()
        .expect("check");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("warning: source \"broker\" url \"mqtt://127.0.0.1:1883\" is plaintext"),
        "{err}"
    );
}
