//! A fleet on existing engines: three real edgewatch processes with different node ids push to one
//! Alertmanager and one InfluxDB; each node's alerts and summaries are found there by its label.

mod common;

use std::time::{Duration, Instant};

use common::servers;
use common::{Edgewatch, Sender};

fn node_config(dir: &std::path::Path, node: &str, am: &str, influx: &str) -> std::path::PathBuf {
    let data = dir.join(format!("data-{node}"));
    let path = dir.join(format!("{node}.toml"));
    std::fs::write(
        &path,
        format!(
            r#"
node_id = "{node}"
data_dir = {data:?}
summary_interval = "300ms"

[api]
listen = "127.0.0.1:0"

[unknown_devices]
policy = "register"
template = "t"

[template.t]
detectors = [{{ type = "threshold", max = 10.0, hold = "0s" }}]

[[source]]
id = "tcp"
kind = "tcp"
listen = "127.0.0.1:0"
format = "csv"

[[sink]]
kind = "alertmanager"
id = "am"
url = "{am}"
backoff_min = "50ms"

[[sink]]
kind = "influxdb"
id = "tsdb"
url = "{influx}"
database = "fleet"
backoff_min = "50ms"
"#,
            data = data.display().to_string()
        ),
    )
    .expect("write config");
    path
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < end, "{what}: not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn three_nodes_alerts_and_summaries_land_in_one_alertmanager_and_one_influxdb() {
    if !servers::have("prometheus-alertmanager") || !servers::have("influxd") {
        return;
    }
    let dir = tempfile::tempdir().expect("tmp");
    let am = servers::alertmanager(dir.path());
    let influx = servers::influxdb(dir.path());
    servers::influx_query(&influx, "", "CREATE DATABASE fleet");
    let nodes = ["pi-a", "pi-b", "pi-c"];
    let mut running = Vec::new();
    for node in nodes {
        let cfg = node_config(dir.path(), node, &am.url(), &influx.url());
        let mut ew = Edgewatch::start(&cfg);
        let mut tx = Sender::connect(&ew.tcp_addr("tcp"));
        // Each node: one alert that stays firing, on a device of the same name everywhere.
        tx.send(b"pump,pressure,5\npump,pressure,50\n");
        running.push((ew, tx));
    }

    wait_until(
        "every node's alert active in Alertmanager",
        Duration::from_secs(30),
        || {
            let alerts = servers::am_alerts(&am);
            nodes.iter().all(|n| {
                alerts.iter().any(|a| {
                    a["labels"]["node"] == *n
                        && a["labels"]["device"] == "pump"
                        && a["status"]["state"] == "active"
                })
            })
        },
    );
    wait_until(
        "every node's alert and summaries in InfluxDB",
        Duration::from_secs(30),
        || {
            nodes.iter().all(|n| {
                let count = |m: &str, f: &str| {
                    let q = servers::influx_query(
                        &influx,
                        "fleet",
                        &format!("SELECT count(\"{f}\") FROM \"{m}\" WHERE \"node\" = '{n}' AND \"device\" = 'pump'"),
                    );
                    q["results"][0]["series"][0]["values"][0][1]
                        .as_u64()
                        .unwrap_or(0)
                };
                count("edgewatch_alert", "firing") == 1 && count("edgewatch_summary", "mean") >= 1
            })
        },
    );
    // Exactly one alert per node, and the node tag is what tells them apart.
    let q = servers::influx_query(
        &influx,
        "fleet",
        "SELECT count(\"firing\") FROM \"edgewatch_alert\" GROUP BY \"node\"",
    );
    let series = q["results"][0]["series"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(series.len(), 3, "{q}");
    for s in &series {
        assert_eq!(s["values"][0][1], 1, "{s}");
    }
    drop(running);
}
