//! A fleet on existing engines: three real edgewatch processes (nodes pi-0..pi-2) → one
//! Prometheus (scraping `/metrics` and receiving remote write) and one mosquitto (MQTT sink).
//! Each node's series, summaries and alerts are found there with its node label; `edgewatch tail`
//! with the three URLs and with the broker prints lines of every node; and every PromQL query of
//! the shipped Grafana dashboard (docs/grafana/edgewatch-fleet.json) parses and returns data.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::broker::{free_port, Broker};
use common::prom::{value, Prometheus};
use common::{Edgewatch, Sender, BIN};

const NODES: usize = 3;

fn config(
    dir: &std::path::Path,
    i: usize,
    api: u16,
    broker: &str,
    write: &str,
) -> std::path::PathBuf {
    let d = dir.join(format!("pi-{i}"));
    std::fs::create_dir_all(&d).expect("mkdir");
    let path = d.join("edgewatch.toml");
    let text = format!(
        r#"
node_id = "pi-{i}"
data_dir = {data:?}
summary_interval = "500ms"

[unknown_devices]
policy = "register"
template = "t"

[template.t]
window = 50
detectors = [{{ type = "threshold", name = "hot", max = 100.0, severity = "critical", hold = "1h" }}]

[[source]]
id = "sim"
kind = "sim"
interval = "100ms"
seed = {i}

[[source.device]]
id = "press-{i}"
metrics.temp = {{ mean = 40.0, noise = 1.0 }}

[[source]]
id = "tcp"
kind = "tcp"
listen = "127.0.0.1:0"
format = "json"

[[sink]]
kind = "mqtt"
id = "broker"
url = "{broker}"
retain = true

[[sink]]
kind = "prometheus_remote_write"
id = "central"
url = "{write}"
backoff_max = "1s"

[api]
listen = "127.0.0.1:{api}"
"#,
        data = d.join("data").display().to_string(),
    );
    std::fs::write(&path, text).expect("write config");
    path
}

/// Runs `edgewatch tail ARGS` until it exits (it stops after `--count` lines) or 30 s pass.
fn tail(args: &[String]) -> String {
    let mut child = Command::new(BIN)
        .arg("tail")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn tail");
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        if Instant::now() > end {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().expect("tail output");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every `expr` of a Grafana dashboard, with its template variables replaced.
fn dashboard_exprs(json: &serde_json::Value, out: &mut Vec<String>) {
    match json {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v.as_str()) {
                    ("expr", Some(e)) => out.push(
                        e.replace("$__rate_interval", "30s")
                            .replace("$node", ".*")
                            .replace("$device", ".*")
                            .replace("$job", "edgewatch"),
                    ),
                    _ => dashboard_exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| dashboard_exprs(v, out)),
        _ => {}
    }
}

#[test]
fn three_nodes_on_one_prometheus_and_one_broker() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(dir.path(), "");
    let apis: Vec<u16> = (0..NODES).map(|_| free_port()).collect();
    let targets: Vec<String> = apis.iter().map(|p| format!("\"127.0.0.1:{p}\"")).collect();
    let prom = Prometheus::start(
        dir.path(),
        &format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: edgewatch\n    static_configs:\n      - targets: [{}]\n",
            targets.join(", ")
        ),
    );
    let mut nodes: Vec<Edgewatch> = (0..NODES)
        .map(|i| {
            Edgewatch::start(&config(
                dir.path(),
                i,
                apis[i],
                &broker.url(),
                &prom.write_url(),
            ))
        })
        .collect();
    for (i, ew) in nodes.iter_mut().enumerate() {
        let mut tx = Sender::connect(&ew.tcp_addr("tcp"));
        tx.line(&format!(
            r#"{{"device":"press-{i}","metric":"temp","ts":{},"value":500}}"#,
            edgewatch::model::now_ms()
        ));
    }

    // Prometheus: scraped series, remote-written summaries and alerts, per node.
    let t = Duration::from_secs(40);
    for (i, api) in apis.iter().enumerate() {
        let node = format!("pi-{i}");
        let sel = format!("{{node=\"{node}\",device=\"press-{i}\",metric=\"temp\"}}");
        let last = prom.wait(&format!("edgewatch_series_last{sel}"), t, |r| r.len() == 1);
        assert!(value(&last[0]).is_finite(), "{last:?}");
        prom.wait(&format!("edgewatch_summary_count{sel}"), t, |r| {
            r.len() == 1 && value(&r[0]) > 0.0
        });
        // One series from the scrape (with job/instance) and one from remote write.
        let q = format!(
            "edgewatch_alert_firing{{node=\"{node}\",device=\"press-{i}\",detector=\"hot\",severity=\"critical\"}}"
        );
        let r = prom.wait(&q, t, |r| r.len() == 2);
        assert!(r.iter().all(|v| value(v) == 1.0), "{r:?}");
        assert_eq!(
            r.iter()
                .filter(|v| v["metric"]["job"] == "edgewatch")
                .count(),
            1,
            "{r:?}"
        );
        prom.wait(&format!("up{{instance=\"127.0.0.1:{api}\"}}"), t, |r| {
            r.len() == 1 && value(&r[0]) == 1.0
        });
    }

    // Every query of the Grafana dashboard parses and returns data (rates need a few scrapes).
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/grafana/edgewatch-fleet.json"
    ))
    .expect("dashboard");
    let dash: serde_json::Value = serde_json::from_str(&text).expect("dashboard JSON");
    let mut exprs = Vec::new();
    dashboard_exprs(&dash, &mut exprs);
    assert!(exprs.len() >= 15, "{exprs:?}");
    for e in &exprs {
        let r = prom.wait(e, t, |r| !r.is_empty());
        assert!(!r.is_empty(), "{e}");
    }

    // `tail` with the three appliances' URLs: lines of every node.
    let mut args: Vec<String> = ["--count", "30", "--type", "summary", "--color", "never"]
        .map(String::from)
        .to_vec();
    args.extend(apis.iter().map(|p| format!("ws://127.0.0.1:{p}")));
    let out = tail(&args);
    for i in 0..NODES {
        assert!(
            out.contains(&format!("[pi-{i}] ")),
            "no line of pi-{i}:\n{out}"
        );
    }
    assert_eq!(out.lines().count(), 30, "{out}");

    // `tail mqtt://broker`: retained alerts and live summaries of every node.
    let out = tail(&[
        "--count".into(),
        "40".into(),
        "--color".into(),
        "never".into(),
        broker.url(),
    ]);
    for i in 0..NODES {
        assert!(
            out.lines().any(|l| l.starts_with(&format!("[pi-{i}] "))
                && l.contains("FIRING")
                && l.contains(&format!("press-{i}/temp hot"))),
            "no alert line of pi-{i}:\n{out}"
        );
        assert!(
            out.lines()
                .any(|l| l.starts_with(&format!("[pi-{i}] ")) && l.contains(" summary ")),
            "no summary line of pi-{i}:\n{out}"
        );
    }
}
