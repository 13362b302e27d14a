//! `GET /metrics` against the real Prometheus and promtool: the exposition passes `promtool check
//! metrics`, asks for the API token when one is set, and a Prometheus scraping it (with the token)
//! holds the per-series values and the firing alert that the appliance computed.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::prom::{value, Prometheus};
use common::{InProcess, Sender};

const TOKEN: &str = "metrics-test-token-5f1c";
const T0: i64 = 1_763_000_000_000;

fn config(dir: &std::path::Path, metrics: &str) -> std::path::PathBuf {
    let token = dir.join("token");
    std::fs::write(&token, TOKEN).expect("token file");
    let path = dir.join("edgewatch.toml");
    let text = format!(
        r#"
node_id = "pi-metrics"
data_dir = {data:?}
summary_interval = "500ms"

[unknown_devices]
policy = "register"
template = "t"

[template.t]
window = 100
detectors = [{{ type = "threshold", name = "hot", max = 100.0, severity = "critical", hold = "0s" }}]

[[source]]
id = "tcp"
kind = "tcp"
listen = "127.0.0.1:0"
format = "json"

[api]
listen = "127.0.0.1:0"
token_file = {token:?}

[api.metrics]
{metrics}
"#,
        data = dir.join("data").display().to_string(),
        token = token.display().to_string(),
    );
    std::fs::write(&path, text).expect("write config");
    path
}

fn line(device: &str, metric: &str, i: i64, v: f64) -> String {
    format!(
        r#"{{"device":"{device}","metric":"{metric}","ts":{},"value":{v}}}"#,
        T0 + i * 1000
    )
}

fn get_metrics(api: &str, token: Option<&str>) -> Result<String, u16> {
    let mut req = ureq::get(&format!("http://{api}/metrics")).timeout(Duration::from_secs(10));
    if let Some(t) = token {
        req = req.set("Authorization", &format!("Bearer {t}"));
    }
    match req.call() {
        Ok(r) => Ok(r.into_string().expect("body")),
        Err(ureq::Error::Status(code, _)) => Err(code),
        Err(e) => panic!("GET /metrics: {e}"),
    }
}

/// Waits until analysis has taken `n` samples (read from /metrics itself).
fn wait_samples(api: &str, n: u64) {
    let want = format!("edgewatch_samples_analyzed_total{{node=\"pi-metrics\"}} {n}.0\n");
    let end = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = get_metrics(api, Some(TOKEN)).expect("metrics");
        if text.contains(&want) {
            return;
        }
        assert!(std::time::Instant::now() < end, "no {want:?} in:\n{text}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn promtool_check(text: &str) -> (bool, String) {
    use std::io::Write;
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn promtool (apt-get install prometheus)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn prometheus_scrapes_metrics_with_the_token_and_sees_series_and_alerts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path(), "max_series = 100");
    let mut ew = InProcess::start(&cfg);
    let mut tx = Sender::connect(&ew.tcp_addr("tcp"));
    for (i, v) in [10.0, 20.0, 30.0].into_iter().enumerate() {
        tx.line(&line("pump-1", "temp", i as i64, v));
    }
    for i in 0..5 {
        tx.line(&line("pump-2", "pressure", i, 1.5));
    }
    tx.line(&line("pump-2", "temp", 0, 150.0)); // over max = 100: `hot` fires
    tx.send(b"not json\n"); // a rejected frame
    wait_samples(&ew.api, 9);

    // The token guards /metrics like /api.
    assert_eq!(get_metrics(&ew.api, None), Err(401));
    assert_eq!(get_metrics(&ew.api, Some("wrong")), Err(401));
    let mut text = String::new();
    let end = std::time::Instant::now() + Duration::from_secs(10);
    while !text.contains("edgewatch_alert_firing{") {
        assert!(
            std::time::Instant::now() < end,
            "no firing alert in:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(100));
        text = get_metrics(&ew.api, Some(TOKEN)).expect("metrics with the token");
    }
    let (ok, lint) = promtool_check(&text);
    assert!(
        ok,
        "promtool check metrics failed:\n{lint}\n--- exposition:\n{text}"
    );
    assert!(
        text.contains(
            r#"edgewatch_series_last{node="pi-metrics",device="pump-1",metric="temp"} 30"#
        ),
        "{text}"
    );

    // A real Prometheus scraping it with the token file.
    let token_path = dir.path().join("token");
    let prom = Prometheus::start(
        dir.path(),
        &format!(
            r#"
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: edgewatch
    authorization:
      credentials_file: {token}
    static_configs:
      - targets: ["{api}"]
"#,
            token = token_path.display(),
            api = ew.api
        ),
    );
    let t = Duration::from_secs(30);
    let up = prom.wait("up{job=\"edgewatch\"}", t, |r| {
        r.len() == 1 && value(&r[0]) == 1.0
    });
    assert_eq!(value(&up[0]), 1.0);

    let q = |name: &str| format!("{name}{{node=\"pi-metrics\",device=\"pump-1\",metric=\"temp\"}}");
    let last = prom.wait(&q("edgewatch_series_last"), t, |r| r.len() == 1);
    assert_eq!(value(&last[0]), 30.0);
    let mean = prom.wait(&q("edgewatch_series_mean"), t, |r| r.len() == 1);
    assert!((value(&mean[0]) - 20.0).abs() < 1e-9, "{mean:?}");
    let std = prom.wait(&q("edgewatch_series_std"), t, |r| r.len() == 1);
    assert!(value(&std[0]) > 0.0, "{std:?}");
    let n = prom.wait(&q("edgewatch_series_samples_total"), t, |r| r.len() == 1);
    assert_eq!(value(&n[0]), 3.0);
    let anomaly = prom.wait(&q("edgewatch_series_anomaly"), t, |r| r.len() == 1);
    assert!((0.0..0.5).contains(&value(&anomaly[0])), "{anomaly:?}");

    let firing = prom.wait("edgewatch_alert_firing", t, |r| !r.is_empty());
    assert_eq!(firing.len(), 1, "{firing:?}");
    let m = &firing[0]["metric"];
    assert_eq!(m["node"], "pi-metrics");
    assert_eq!(m["device"], "pump-2");
    assert_eq!(m["metric"], "temp");
    assert_eq!(m["detector"], "hot");
    assert_eq!(m["severity"], "critical");
    let hot = prom.wait(
        "edgewatch_series_anomaly{device=\"pump-2\",metric=\"temp\"}",
        t,
        |r| r.len() == 1,
    );
    assert!(value(&hot[0]) >= 0.5, "{hot:?}");

    // Health: the rejected frame and the source's samples.
    let rej = prom.wait(
        "edgewatch_source_frames_rejected_total{source=\"tcp\"}",
        t,
        |r| r.len() == 1,
    );
    assert_eq!(value(&rej[0]), 1.0);
    let samples = prom.wait("edgewatch_samples_analyzed_total", t, |r| r.len() == 1);
    assert_eq!(value(&samples[0]), 9.0);
    let rss = prom.wait("process_resident_memory_bytes", t, |r| r.len() == 1);
    assert!(value(&rss[0]) > 1e6, "{rss:?}");
    let series = prom.wait("edgewatch_metrics_series", t, |r| r.len() == 1);
    assert_eq!(value(&series[0]), 3.0);
    ew.stop();
}

#[test]
fn max_series_caps_the_exposition_and_per_series_can_be_turned_off() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path(), "max_series = 4");
    let mut ew = InProcess::start(&cfg);
    let mut tx = Sender::connect(&ew.tcp_addr("tcp"));
    for d in 0..3 {
        for m in ["a", "b", "c"] {
            tx.line(&line(&format!("dev-{d}"), m, 0, 1.0));
        }
    }
    wait_samples(&ew.api, 9);
    let text = get_metrics(&ew.api, Some(TOKEN)).expect("metrics");
    let rows = text
        .lines()
        .filter(|l| l.starts_with("edgewatch_series_last{"))
        .count();
    assert_eq!(rows, 4, "{text}");
    assert!(
        text.contains("edgewatch_metrics_series{node=\"pi-metrics\"} 4"),
        "{text}"
    );
    assert!(
        text.contains("edgewatch_metrics_series_omitted{node=\"pi-metrics\"} 5"),
        "{text}"
    );
    ew.stop();

    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path(), "per_series = false");
    let mut ew = InProcess::start(&cfg);
    let mut tx = Sender::connect(&ew.tcp_addr("tcp"));
    tx.line(&line("dev-0", "a", 0, 1.0));
    wait_samples(&ew.api, 1);
    let text = get_metrics(&ew.api, Some(TOKEN)).expect("metrics");
    assert!(!text.contains("edgewatch_series_last{"), "{text}");
    assert!(
        text.contains("edgewatch_samples_analyzed_total{node=\"pi-metrics\"} 1"),
        "{text}"
    );
    ew.stop();
}
