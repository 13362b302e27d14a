//! Raw samples through the InfluxDB sink against real servers on loopback: `samples = "all"` into
//! InfluxDB 1.x (v1 API) with exact point counts across an InfluxDB restart and an edgewatch
//! kill -9, and `samples = "<interval>"` into VictoriaMetrics (v2 API) with exact interval points.

mod common;

use std::time::Duration;

use common::servers;
use common::{now_ms, wait_until, write_config, Edgewatch, Sender};
use serde_json::Value;

fn config(sink: &str) -> String {
    format!(
        r#"
summary_interval = "1s"

[unknown_devices]
policy = "register"
template = "plain"

[template.plain]
detectors = [{{ type = "threshold", max = 1000000.0 }}]

[[source]]
id = "tcp"
kind = "tcp"
listen = "127.0.0.1:0"
format = "csv"
{sink}
"#
    )
}

/// `n` samples for each of `devices`, metric `x`, each at its own millisecond from `base`.
fn send(tx: &mut Sender, devices: &[&str], n: usize, base: i64) {
    let mut buf = String::new();
    for d in devices {
        for i in 0..n {
            buf.push_str(&format!("{d},x,{},{}\n", i % 17, base + i as i64));
        }
    }
    tx.send(buf.as_bytes());
}

fn analysed(ew: &Edgewatch) -> u64 {
    ew.get("/api/status")["analysis"]["samples"]
        .as_u64()
        .unwrap_or(0)
}

#[test]
fn influxdb_holds_exactly_every_sample_across_its_restart_and_an_edgewatch_kill_9() {
    if !servers::have("influxd") {
        return;
    }
    let dir = tempfile::tempdir().expect("tmp");
    let mut influx = servers::influxdb(dir.path());
    servers::influx_query(&influx, "", "CREATE DATABASE ew");
    let cfg = write_config(
        dir.path(),
        &config(&format!(
            r#"
[[sink]]
kind = "influxdb"
id = "tsdb"
url = "{}"
database = "ew"
samples = "all"
backoff_min = "50ms"
backoff_max = "300ms"
"#,
            influx.url()
        )),
    );
    let count = |i: &servers::Server| servers::influx_count(i, "ew", "edgewatch_sample", "value");
    let mut ew = Edgewatch::start(&cfg);
    let mut tx = Sender::connect(&ew.tcp_addr("tcp"));
    let base = now_ms() - 600_000;
    // 3 × 1500: more than one block per shard, so blocks are handed over full and on the tick.
    send(&mut tx, &["s1", "s2", "s3"], 1500, base);
    wait_until("4500 samples in InfluxDB", Duration::from_secs(30), || {
        (count(&influx) == 4500).then_some(())
    });

    // InfluxDB down: samples queue in the outbox; it comes back: they arrive.
    influx.stop();
    send(&mut tx, &["s1", "s2", "s3"], 1000, base + 100_000);
    wait_until("analysed", Duration::from_secs(10), || {
        (analysed(&ew) == 7500).then_some(())
    });
    std::thread::sleep(Duration::from_secs(1));
    influx.start_again();
    wait_until(
        "7500 samples after InfluxDB's restart",
        Duration::from_secs(30),
        || (count(&influx) == 7500).then_some(()),
    );

    // InfluxDB down, samples durable in the outbox, edgewatch killed; both back: nothing lost.
    influx.stop();
    send(&mut tx, &["s1", "s4"], 1000, base + 200_000);
    wait_until("analysed", Duration::from_secs(10), || {
        (analysed(&ew) == 9500).then_some(())
    });
    // The shard hands its block over at its next 1 s tick; the store makes it durable ≤ 500 ms later.
    std::thread::sleep(Duration::from_millis(2000));
    wait_until("samples durable", Duration::from_secs(10), || {
        let st = ew.get("/api/status");
        let s = &st["sinks"][0];
        (s["outbox_summaries"].as_u64() > Some(0) && s["durable_seq"] == s["last_seq"])
            .then_some(())
    });
    ew.kill9();
    drop(tx);
    influx.start_again();
    let ew = Edgewatch::start(&cfg);
    wait_until(
        "9500 samples after the kill -9",
        Duration::from_secs(30),
        || (count(&influx) == 9500).then_some(()),
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(count(&influx), 9500, "exactly the samples sent, no more");
    let q = servers::influx_query(
        &influx,
        "ew",
        "SELECT count(\"value\"), sum(\"value\") FROM \"edgewatch_sample\" WHERE \"node\" = 'test' GROUP BY \"device\"",
    );
    let series = q["results"][0]["series"].as_array().expect("series");
    let per: Vec<(String, u64, f64)> = series
        .iter()
        .map(|s| {
            (
                s["tags"]["device"].as_str().unwrap_or("").to_string(),
                s["values"][0][1].as_u64().unwrap_or(0),
                s["values"][0][2].as_f64().unwrap_or(0.0),
            )
        })
        .collect();
    let sum = |n: usize| (0..n).map(|i| (i % 17) as f64).sum::<f64>();
    assert_eq!(
        per,
        vec![
            ("s1".into(), 3500, sum(1500) + sum(1000) + sum(1000)),
            ("s2".into(), 2500, sum(1500) + sum(1000)),
            ("s3".into(), 2500, sum(1500) + sum(1000)),
            ("s4".into(), 1000, sum(1000)),
        ]
    );
    let st = ew.get("/api/status");
    assert!(st["sinks"][0]["wire_bytes"].as_u64() > Some(0), "{st}");
    assert_eq!(st["sinks"][0]["dropped"], 0);
}

#[test]
fn interval_statistics_land_in_victoria_metrics_one_point_per_series_and_interval() {
    if !servers::have("victoria-metrics") {
        return;
    }
    let dir = tempfile::tempdir().expect("tmp");
    let vm = servers::victoria(dir.path());
    let sink = servers::victoria_v2_sink(dir.path(), &vm, "samples = \"2s\"");
    let cfg = write_config(dir.path(), &config(&sink));
    let mut ew = Edgewatch::start(&cfg);
    let mut tx = Sender::connect(&ew.tcp_addr("tcp"));
    // Five 2 s intervals per device, four samples each (values 1, 2, 3, 4 + interval index);
    // the last interval is closed by silence (an interval plus a second of appliance time).
    let base = (now_ms() - 300_000) / 2000 * 2000;
    let mut buf = String::new();
    for d in ["i1", "i2", "i3"] {
        for k in 0..5i64 {
            for j in 0..4i64 {
                let ts = base + k * 2000 + j * 400;
                buf.push_str(&format!("{d},x,{},{ts}\n", j + 1 + k));
            }
        }
    }
    tx.send(buf.as_bytes());
    let export = |name: &str, device: &str| -> Vec<(i64, f64)> {
        let _ = ureq::get(&format!("{}/internal/force_flush", vm.url())).call();
        let r = ureq::get(&format!("{}/api/v1/export", vm.url()))
            .query("match[]", &format!("{name}{{device=\"{device}\"}}"))
            .call()
            .ok()
            .and_then(|r| r.into_string().ok())
            .unwrap_or_default();
        let mut out = Vec::new();
        for l in r.lines() {
            let Ok(v) = serde_json::from_str::<Value>(l) else {
                continue;
            };
            let (ts, vals) = (&v["timestamps"], &v["values"]);
            for i in 0..ts.as_array().map_or(0, Vec::len) {
                out.push((
                    ts[i].as_i64().unwrap_or(0),
                    vals[i].as_f64().unwrap_or(f64::NAN),
                ));
            }
        }
        out.sort_by_key(|p| p.0);
        out
    };
    for d in ["i1", "i2", "i3"] {
        wait_until(
            "five interval points per device",
            Duration::from_secs(30),
            || (export("edgewatch_sample_interval_count", d).len() == 5).then_some(()),
        );
    }
    std::thread::sleep(Duration::from_secs(4));
    let count = export("edgewatch_sample_interval_count", "i2");
    assert_eq!(
        count,
        (0..5).map(|k| (base + k * 2000, 4.0)).collect::<Vec<_>>(),
        "one point per interval, at its start, no more"
    );
    let mean = export("edgewatch_sample_interval_mean", "i2");
    let min = export("edgewatch_sample_interval_min", "i2");
    let max = export("edgewatch_sample_interval_max", "i2");
    let last = export("edgewatch_sample_interval_last", "i2");
    for k in 0..5usize {
        let kf = k as f64;
        assert_eq!(mean[k].1, 2.5 + kf);
        assert_eq!(min[k].1, 1.0 + kf);
        assert_eq!(max[k].1, 4.0 + kf);
        assert_eq!(last[k].1, 4.0 + kf);
    }
    let st = ew.get("/api/status");
    assert_eq!(st["sinks"][0]["id"], "vm");
}

#[test]
fn a_full_outbox_drops_the_oldest_sample_blocks_counted_and_reported_as_a_gap() {
    if !servers::have("influxd") {
        return;
    }
    let dir = tempfile::tempdir().expect("tmp");
    let mut influx = servers::influxdb(dir.path());
    servers::influx_query(&influx, "", "CREATE DATABASE ew");
    influx.stop();
    let cfg = write_config(
        dir.path(),
        &config(&format!(
            r#"
[[sink]]
kind = "influxdb"
id = "tsdb"
url = "{}"
database = "ew"
samples = "all"
backoff_min = "50ms"
backoff_max = "300ms"

[sink.budget]
max_bytes = 100000
"#,
            influx.url()
        )),
    );
    let mut ew = Edgewatch::start(&cfg);
    let mut tx = Sender::connect(&ew.tcp_addr("tcp"));
    let base = now_ms() - 600_000;
    // InfluxDB is down: 30,000 samples (~30 blocks of ~16 kB) cannot fit in 100 kB.
    for k in 0..10 {
        send(&mut tx, &["b1", "b2", "b3"], 1000, base + k * 1000);
        std::thread::sleep(Duration::from_millis(300));
    }
    let dropped = wait_until("blocks dropped", Duration::from_secs(20), || {
        let st = ew.get("/api/status");
        let s = &st["sinks"][0];
        let d = s["dropped"].as_u64().unwrap_or(0);
        (d > 0 && analysed(&ew) == 30_000 && s["outbox_bytes"].as_u64() <= Some(100_000))
            .then_some(d)
    });
    influx.start_again();
    // What was kept arrives, and the loss is recorded there as gap points whose counts add up.
    let gap_total = |i: &servers::Server| {
        let v = servers::influx_query(i, "ew", "SELECT sum(\"count\") FROM \"edgewatch_gap\"");
        v["results"][0]["series"][0]["values"][0][1]
            .as_u64()
            .unwrap_or(0)
    };
    let total = wait_until("gap points", Duration::from_secs(30), || {
        let st = ew.get("/api/status");
        let d = st["sinks"][0]["dropped"].as_u64().unwrap_or(0);
        (d >= dropped && gap_total(&influx) == d && st["sinks"][0]["outbox_summaries"] == 0)
            .then_some(d)
    });
    let kept = servers::influx_count(&influx, "ew", "edgewatch_sample", "value");
    assert!(
        kept > 0 && kept < 30_000,
        "kept {kept} of 30000, {total} blocks dropped"
    );
}
