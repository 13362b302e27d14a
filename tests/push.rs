//! The HTTP push sinks against real servers on loopback: Alertmanager (firing, re-sent after a
//! kill -9, resolved), a webhook receiver (retries after 500s, template, secret header), InfluxDB 1.x
//! (exact counts across an InfluxDB restart and an edgewatch kill -9), VictoriaMetrics (v2 write).

mod common;

use std::time::Duration;

use common::servers::{self, Receiver};
use common::{wait_until, write_config, Edgewatch, Sender};
use serde_json::Value;

fn config(sinks: &str) -> String {
    format!(
        r#"
summary_interval = "300ms"

[unknown_devices]
policy = "register"
template = "flip"

[template.flip]
detectors = [{{ type = "threshold", max = 10.0, hold = "0s" }}]

[[source]]
id = "tcp"
kind = "tcp"
listen = "127.0.0.1:0"
format = "csv"
{sinks}
"#
    )
}

/// `n` samples alternating above and below the threshold: `n` alert transitions for `device`.
fn flip(tx: &mut Sender, device: &str, n: usize) {
    let mut buf = String::new();
    for i in 0..n {
        buf.push_str(&format!(
            "{device},x,{}\n",
            if i % 2 == 0 { 100 } else { 0 }
        ));
    }
    tx.send(buf.as_bytes());
}

fn am_active(am: &servers::Server, device: &str) -> Option<Value> {
    servers::am_alerts(am)
        .into_iter()
        .find(|a| a["labels"]["device"] == device && a["status"]["state"] == "active")
}

#[test]
fn alertmanager_lists_the_alert_while_firing_again_after_a_kill_9_and_resolves_it() {
    if !servers::have("prometheus-alertmanager") {
        return;
    }
    let dir = tempfile::tempdir().expect("tmp");
    // Alertmanager's own notifications come to this receiver, so "resolved" is seen as it is.
    let hook = Receiver::start();
    let am = servers::alertmanager_with_webhook(dir.path(), &hook.url());
    let cfg = write_config(
        dir.path(),
        &config(&format!(
            r#"
[[sink]]
kind = "alertmanager"
id = "am"
url = "{}"
resend_interval = "1s"
generator_url = "http://pi.local:8080/"
backoff_min = "50ms"
backoff_max = "300ms"
"#,
            am.url()
        )),
    );
    let mut ew = Edgewatch::start(&cfg);
    let mut tx = Sender::connect(&ew.tcp_addr("tcp"));
    flip(&mut tx, "d1", 1); // firing
    let a = wait_until(
        "alert active in Alertmanager",
        Duration::from_secs(20),
        || am_active(&am, "d1"),
    );
    for (k, v) in [
        ("node", "test"),
        ("device", "d1"),
        ("metric", "x"),
        ("detector", "threshold"),
        ("alertname", "EdgewatchAnomaly"),
    ] {
        assert_eq!(a["labels"][k], v, "label {k} of {a}");
    }
    assert!(a["labels"]["severity"].is_string());
    assert_eq!(a["annotations"]["value"], "100");
    assert!(a["annotations"]["message"]
        .as_str()
        .is_some_and(|m| !m.is_empty()));
    assert_eq!(a["generatorURL"], "http://pi.local:8080/");

    // kill -9: Alertmanager lets the alert expire (endsAt = 4 × resend_interval ahead) ...
    ew.kill9();
    drop(tx);
    wait_until(
        "alert expired without re-sends",
        Duration::from_secs(20),
        || am_active(&am, "d1").is_none().then_some(()),
    );
    // ... and the restarted appliance re-sends its firing set at once.
    let mut ew = Edgewatch::start(&cfg);
    wait_until(
        "alert active again after restart",
        Duration::from_secs(20),
        || am_active(&am, "d1"),
    );
    // It stays active across several re-send intervals (longer than its 4 s endsAt).
    std::thread::sleep(Duration::from_secs(6));
    assert!(am_active(&am, "d1").is_some(), "re-sent while firing");

    // The kill -9 lost the shard's state since its last snapshot (persist_interval), so the
    // detector no longer knows it fired: its next firing replaces the re-sent one (same labels),
    // and that one's resolution ends it: gone from the active list, Alertmanager says "resolved".
    let mut tx = Sender::connect(&ew.tcp_addr("tcp"));
    tx.line("d1,x,100");
    std::thread::sleep(Duration::from_millis(1500));
    assert!(am_active(&am, "d1").is_some());
    tx.line("d1,x,0");
    wait_until(
        "alert resolved in Alertmanager",
        Duration::from_secs(20),
        || am_active(&am, "d1").is_none().then_some(()),
    );
    wait_until("resolved notification", Duration::from_secs(30), || {
        hook.requests().iter().find_map(|r| {
            let v: Value = serde_json::from_slice(&r.body).ok()?;
            (v["status"] == "resolved" && v["alerts"][0]["labels"]["device"] == "d1").then_some(())
        })
    });
    let st = ew.get("/api/status");
    assert_eq!(st["sinks"][0]["id"], "am");
    assert_eq!(st["sinks"][0]["outbox_alerts"], 0);
}

#[test]
fn the_webhook_gets_every_transition_once_per_attempt_with_retries_after_a_500() {
    let dir = tempfile::tempdir().expect("tmp");
    let plain = Receiver::start();
    let slack = Receiver::start();
    let secret = dir.path().join("token");
    std::fs::write(&secret, "Bearer s3cret\n").expect("write secret");
    plain.set_status(500);
    let cfg = write_config(
        dir.path(),
        &config(&format!(
            r#"
[[sink]]
kind = "webhook"
id = "plain"
url = "{}"
headers = {{ "X-Source" = "edgewatch" }}
backoff_min = "50ms"
backoff_max = "200ms"

[[sink]]
kind = "webhook"
id = "slack"
url = "{}"
template = '{{"text":"{{{{device}}}}/{{{{metric}}}} {{{{state}}}}: {{{{message}}}}"}}'
header_files = {{ Authorization = "{}" }}
"#,
            plain.url(),
            slack.url(),
            secret.display()
        )),
    );
    let mut ew = Edgewatch::start(&cfg);
    let mut tx = Sender::connect(&ew.tcp_addr("tcp"));
    flip(&mut tx, "d1", 4); // firing, resolved, firing, resolved
                            // The receiver answers 500: the first transition is tried again and again, nothing after it.
    let failed = plain.wait(3, Duration::from_secs(20));
    let first: Value = serde_json::from_slice(&failed[0].body).expect("json");
    assert_eq!(first["state"], "firing");
    for r in &failed {
        let v: Value = serde_json::from_slice(&r.body).expect("json");
        assert_eq!(
            v["seq"], first["seq"],
            "retries repeat the undelivered transition"
        );
    }
    plain.set_status(200);
    let before = plain.requests().len();
    wait_until("outbox drained", Duration::from_secs(20), || {
        let st = ew.get("/api/status");
        (st["sinks"][0]["outbox_alerts"] == 0 && st["sinks"][0]["acked"] == 4).then_some(())
    });
    let after: Vec<Value> = plain.requests()[before..]
        .iter()
        .map(|r| serde_json::from_slice(&r.body).expect("json"))
        .collect();
    // At most the one attempt in flight at the switch repeats the first; then each once, in order.
    let seqs: Vec<u64> = after.iter().filter_map(|v| v["seq"].as_u64()).collect();
    let tail: Vec<u64> = seqs.iter().copied().skip_while(|s| *s == seqs[0]).collect();
    assert!(seqs.len() <= 5, "{seqs:?}");
    assert_eq!(seqs[0], first["seq"].as_u64().expect("seq"));
    assert_eq!(
        tail,
        vec![seqs[0] + 1, seqs[0] + 2, seqs[0] + 3],
        "{seqs:?}"
    );
    let states: Vec<&str> = after.iter().filter_map(|v| v["state"].as_str()).collect();
    assert_eq!(states.last(), Some(&"resolved"));
    assert!(plain.requests().iter().all(|r| r
        .headers
        .iter()
        .any(|(k, v)| k == "x-source" && v == "edgewatch")));

    // The templated one: four requests, each the rendered JSON with the secret header.
    let got = slack.wait(4, Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(500));
    let got_now = slack.requests();
    assert_eq!(got_now.len(), 4, "once each: {got_now:?}");
    let texts: Vec<String> = got
        .iter()
        .map(|r| {
            assert!(r
                .headers
                .iter()
                .any(|(k, v)| k == "authorization" && v == "Bearer s3cret"));
            let v: Value = serde_json::from_slice(&r.body).expect("rendered JSON");
            v["text"].as_str().expect("text").to_string()
        })
        .collect();
    assert!(texts[0].starts_with("d1/x firing: "), "{texts:?}");
    assert!(texts[1].starts_with("d1/x resolved: "), "{texts:?}");
}

fn influx_sink(id: &str, url: &str) -> String {
    format!(
        r#"
[[sink]]
kind = "influxdb"
id = "{id}"
url = "{url}"
database = "ew"
backoff_min = "50ms"
backoff_max = "300ms"
"#
    )
}

fn create_db(influx: &servers::Server) {
    servers::influx_query(influx, "", "CREATE DATABASE ew");
}

#[test]
fn influxdb_holds_exactly_the_alerts_sent_across_its_restart_and_an_edgewatch_kill_9() {
    if !servers::have("influxd") {
        return;
    }
    let dir = tempfile::tempdir().expect("tmp");
    let mut influx = servers::influxdb(dir.path());
    create_db(&influx);
    let cfg = write_config(dir.path(), &config(&influx_sink("tsdb", &influx.url())));
    let mut ew = Edgewatch::start(&cfg);
    let mut tx = Sender::connect(&ew.tcp_addr("tcp"));
    let count = |i: &servers::Server| servers::influx_count(i, "ew", "edgewatch_alert", "firing");
    flip(&mut tx, "d1", 10);
    wait_until("10 alerts in InfluxDB", Duration::from_secs(20), || {
        (count(&influx) == 10).then_some(())
    });

    // InfluxDB down: alerts queue; it comes back: they arrive.
    influx.stop();
    flip(&mut tx, "d2", 10);
    std::thread::sleep(Duration::from_secs(1));
    influx.start_again();
    wait_until(
        "20 alerts after InfluxDB's restart",
        Duration::from_secs(30),
        || (count(&influx) == 20).then_some(()),
    );

    // InfluxDB down, alerts made durable, edgewatch killed; both back: nothing lost.
    influx.stop();
    flip(&mut tx, "d3", 10);
    wait_until("alerts durable", Duration::from_secs(10), || {
        let st = ew.get("/api/status");
        let s = &st["sinks"][0];
        (s["outbox_alerts"].as_u64() >= Some(10) && s["durable_seq"] == s["last_seq"]).then_some(())
    });
    ew.kill9();
    drop(tx);
    influx.start_again();
    let ew = Edgewatch::start(&cfg);
    wait_until(
        "30 alerts after the kill -9",
        Duration::from_secs(30),
        || (count(&influx) == 30).then_some(()),
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(count(&influx), 30, "exactly the alerts sent, no more");
    let q = servers::influx_query(
        &influx,
        "ew",
        "SELECT count(\"firing\") FROM \"edgewatch_alert\" WHERE \"node\" = 'test' GROUP BY \"device\"",
    );
    assert_eq!(
        q["results"][0]["series"].as_array().map(Vec::len),
        Some(3),
        "{q}"
    );
    // Summaries too, one point per device metric and interval, with the node tag.
    wait_until("summaries in InfluxDB", Duration::from_secs(10), || {
        let v = servers::influx_query(
            &influx,
            "ew",
            "SELECT last(\"count\") FROM \"edgewatch_summary\" WHERE \"node\" = 'test' AND \"device\" = 'd1'",
        );
        v["results"][0]["series"][0]["values"][0][1]
            .as_u64()
            .map(|_| ())
    });
    drop(ew);
}

#[test]
fn the_v2_write_api_lands_in_victoria_metrics() {
    if !servers::have("victoria-metrics") {
        return;
    }
    let dir = tempfile::tempdir().expect("tmp");
    let vm = servers::victoria(dir.path());
    let sink = servers::victoria_v2_sink(dir.path(), &vm, "");
    let cfg = write_config(dir.path(), &config(&sink));
    let mut ew = Edgewatch::start(&cfg);
    let mut tx = Sender::connect(&ew.tcp_addr("tcp"));
    flip(&mut tx, "v1", 6);
    // VictoriaMetrics names numeric fields <measurement>_<field>, tags become labels.
    let lines = wait_until("alert series exported", Duration::from_secs(30), || {
        let _ = ureq::get(&format!("{}/internal/force_flush", vm.url())).call();
        let r = ureq::get(&format!("{}/api/v1/export", vm.url()))
            .query("match[]", "edgewatch_alert_firing{device=\"v1\"}")
            .call()
            .ok()?
            .into_string()
            .ok()?;
        let vals: Vec<Value> = r
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        let n: usize = vals
            .iter()
            .map(|v| v["values"].as_array().map_or(0, Vec::len))
            .sum();
        (n == 6).then_some(vals)
    });
    assert_eq!(lines[0]["metric"]["node"], "test");
    assert_eq!(lines[0]["metric"]["metric"], "x");
    let st = ew.get("/api/status");
    assert_eq!(st["sinks"][0]["id"], "vm");
}
