//! `[[sink]] kind = "prometheus_remote_write"` against a real Prometheus (remote-write receiver on)
//! and a real VictoriaMetrics: summaries and alerts land as series with the node label, and across
//! a VictoriaMetrics outage plus an edgewatch `kill -9` no summary is lost (the sum of
//! `edgewatch_summary_count` over every point equals the samples sent, in both receivers).

mod common;

use std::time::Duration;

use common::prom::{value, wait, Prometheus, Victoria};
use common::{Edgewatch, Sender};

fn config(dir: &std::path::Path, prom: &str, vm: &str) -> std::path::PathBuf {
    let path = dir.join("edgewatch.toml");
    let text = format!(
        r#"
node_id = "pi-rw"
data_dir = {data:?}
summary_interval = "500ms"

[unknown_devices]
policy = "register"
template = "t"

[template.t]
window = 100
detectors = [{{ type = "threshold", name = "hot", max = 100.0, severity = "warning", hold = "1h" }}]

[[source]]
id = "tcp"
kind = "tcp"
listen = "127.0.0.1:0"
format = "json"

[[sink]]
kind = "prometheus_remote_write"
id = "prom"
url = "{prom}"
labels = {{ site = "lab" }}
backoff_max = "1s"

[[sink]]
kind = "prometheus_remote_write"
id = "vm"
url = "{vm}"
backoff_max = "1s"

[api]
listen = "127.0.0.1:0"
"#,
        data = dir.join("data").display().to_string(),
    );
    std::fs::write(&path, text).expect("write config");
    path
}

fn send(ew: &mut Edgewatch, from: i64, n: i64) {
    let mut tx = Sender::connect(&ew.tcp_addr("tcp"));
    let now = edgewatch::model::now_ms();
    for i in from..from + n {
        tx.line(&format!(
            r#"{{"device":"press-{}","metric":"temp","ts":{},"value":{}}}"#,
            i % 2,
            now + i,
            20.0 + (i % 7) as f64
        ));
    }
}

/// Sum of `edgewatch_summary_count` over every point of the last hour (per series, then total).
const COUNTED: &str = "sum(sum_over_time(edgewatch_summary_count{node=\"pi-rw\"}[1h]))";

fn total(r: &[serde_json::Value]) -> f64 {
    r.first().map(value).unwrap_or(0.0)
}

#[test]
fn remote_write_reaches_prometheus_and_victoria_metrics_across_an_outage_and_kill_9() {
    let dir = tempfile::tempdir().expect("tempdir");
    let prom = Prometheus::start(dir.path(), "global:\n  scrape_interval: 1m\n");
    let mut vm = Victoria::start(dir.path());
    let cfg = config(dir.path(), &prom.write_url(), &vm.write_url());
    let mut ew = Edgewatch::start(&cfg);
    let t = Duration::from_secs(30);

    // 1. Normal delivery: 40 samples and one alert.
    send(&mut ew, 0, 40);
    std::thread::sleep(Duration::from_millis(300));
    {
        let mut tx = Sender::connect(&ew.tcp_addr("tcp"));
        tx.line(&format!(
            r#"{{"device":"press-0","metric":"temp","ts":{},"value":500}}"#,
            edgewatch::model::now_ms() + 100
        ));
    }
    let sent = 41.0;
    prom.wait(COUNTED, t, |r| total(r) == sent);
    vm.wait(COUNTED, t, |r| total(r) == sent);
    let firing = prom.wait("edgewatch_alert_firing", t, |r| !r.is_empty());
    let m = &firing[0]["metric"];
    assert_eq!(
        (
            &m["node"],
            &m["device"],
            &m["metric"],
            &m["detector"],
            &m["severity"],
            &m["site"]
        ),
        (
            &"pi-rw".into(),
            &"press-0".into(),
            &"temp".into(),
            &"hot".into(),
            &"warning".into(),
            &"lab".into()
        ),
        "{firing:?}"
    );
    assert_eq!(value(&firing[0]), 1.0);
    let last = prom.wait(
        "edgewatch_summary_last{node=\"pi-rw\",device=\"press-0\",metric=\"temp\"}",
        t,
        |r| r.len() == 1,
    );
    assert_eq!(value(&last[0]), 500.0);
    vm.wait(
        "edgewatch_alert_firing{node=\"pi-rw\",detector=\"hot\"}",
        t,
        |r| r.len() == 1,
    );

    // 2. VictoriaMetrics goes away; 60 more samples are summarised (Prometheus gets them), then
    //    edgewatch is killed while VictoriaMetrics' summaries wait in its outbox.
    vm.stop();
    send(&mut ew, 100, 60);
    let sent = sent + 60.0;
    prom.wait(COUNTED, t, |r| total(r) == sent);
    let pending = ew.poll("/api/status", t, |s| {
        s["sinks"]
            .as_array()
            .and_then(|a| a.iter().find(|k| k["id"] == "vm"))
            .is_some_and(|k| k["outbox_summaries"].as_u64().unwrap_or(0) > 0)
    });
    assert!(
        pending["sinks"].to_string().contains("\"last_error\":{"),
        "the vm sink should report its failed requests: {pending}"
    );
    ew.kill9();

    // 3. Restarted on the same data directory, then VictoriaMetrics comes back: everything
    //    arrives, nothing twice.
    let ew = Edgewatch::start(&cfg);
    std::thread::sleep(Duration::from_secs(1));
    vm.start_again();
    vm.wait(COUNTED, t, |r| total(r) == sent);
    ew.poll("/api/status", t, |s| {
        s["sinks"].as_array().is_some_and(|a| {
            a.iter()
                .all(|k| k["outbox_summaries"] == 0 && k["outbox_alerts"] == 0)
        })
    });
    // Still exact after the outboxes drained: Prometheus ignores a repeated identical point and
    // VictoriaMetrics runs with `-dedup.minScrapeInterval=1ms` (at-least-once delivery repeats).
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(total(&wait(&prom.url(), COUNTED, t, |_| true)), sent);
    assert_eq!(total(&wait(&vm.url(), COUNTED, t, |_| true)), sent);
    ew.kill9();
}
