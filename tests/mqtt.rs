//! MQTT against a real mosquitto started by each test: topic captures and every payload format,
//! broker restarts (clean and persistent sessions), TLS with client certificates made at test
//! time, and the sink delivering every alert across a broker outage and a kill -9.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::broker::{publish_all, Broker, Watcher};
use common::{write_config, Edgewatch, Sender};
use rumqttc::QoS;
use serde_json::Value;

fn msg(topic: &str, payload: &str) -> (String, Vec<u8>) {
    (topic.to_owned(), payload.as_bytes().to_vec())
}

fn source_status(ew: &Edgewatch) -> Value {
    ew.get("/api/status")["sources"][0].clone()
}

fn wait_subscribed(ew: &mut Edgewatch, times: usize) {
    let end = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let n = ew
            .log_text()
            .lines()
            .filter(|l| l.contains("subscribed") && l.contains("source=mqtt"))
            .count();
        if n >= times {
            return;
        }
        assert!(
            std::time::Instant::now() < end,
            "not subscribed {times}x; log:\n{}",
            ew.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn last_value(devs: &Value, device: &str, metric: &str) -> Option<(f64, Option<i64>)> {
    let d = devs.as_array()?.iter().find(|d| d["device"] == device)?;
    let m = d["metrics"]
        .as_array()?
        .iter()
        .find(|m| m["metric"] == metric)?;
    Some((m["last_value"].as_f64()?, m["last_ts"].as_i64()))
}

#[test]
fn wildcard_topics_and_every_payload_format() {
    let dir = tempfile::tempdir().expect("tmp");
    let broker = Broker::start(dir.path(), "");
    let cfg = format!(
        r#"
[unknown_devices]
policy = "register"

[[source]]
id = "mqtt"
kind = "mqtt"
url = "{url}"

[[source.subscribe]]
topic = "num/{{device}}/{{metric}}"
format = "number"

[[source.subscribe]]
topic = "deep/+/{{device}}/{{metric}}"
value = "reading.temp"
ts = "time"
qos = 1

[[source.subscribe]]
topic = "sensors/{{device}}/{{metric}}"

[[source.subscribe]]
topic = "multi/{{device}}/#"

[[source.subscribe]]
topic = "csv/{{device}}"
format = "csv"

[[source.subscribe]]
topic = "kv/{{device}}"
format = "kv"
"#,
        url = broker.url()
    );
    let mut ew = Edgewatch::start(&write_config(dir.path(), &cfg));
    wait_subscribed(&mut ew, 1);
    publish_all(
        broker.port,
        QoS::AtLeastOnce,
        &[
            msg("num/site1/floor2/n1/temp", "21.5"),
            msg(
                "deep/x/j1/temp",
                r#"{"reading":{"temp":3.5},"time":"2025-11-21T21:40:34Z"}"#,
            ),
            msg(
                "deep/x/j2/temp",
                r#"{"reading":{"temp":4},"time":1763761234567}"#,
            ),
            msg("sensors/s1/hum", r#"{"ts":1763761234,"value":40.5}"#),
            msg(
                "multi/m1/any/level",
                r#"{"ts":1763761234,"temp":1,"hum":2}"#,
            ),
            msg("csv/c1", "c1,temp,7\nc1,hum,8"),
            msg("kv/k1", "temp=9 hum=10"),
            msg("num/n2/temp", "not a number"),
            msg("sensors/s1/hum", r#"{"value":"#),
        ],
    );
    let st = ew.poll("/api/status", Duration::from_secs(10), |s| {
        s["sources"][0]["frames_accepted"] == 7 && s["sources"][0]["frames_rejected"] == 2
    });
    assert_eq!(st["sources"][0]["samples"], 10, "{st}");
    assert_eq!(st["sources"][0]["kind"], "mqtt");
    let devs = ew.poll("/api/devices", Duration::from_secs(10), |d| {
        d.as_array().is_some_and(|a| a.len() == 7)
    });
    assert_eq!(
        last_value(&devs, "site1/floor2/n1", "temp").map(|v| v.0),
        Some(21.5),
        "multi-level device id"
    );
    assert_eq!(
        last_value(&devs, "j1", "temp"),
        Some((3.5, Some(1_763_761_234_000))),
        "RFC 3339"
    );
    assert_eq!(
        last_value(&devs, "j2", "temp"),
        Some((4.0, Some(1_763_761_234_567))),
        "ms"
    );
    assert_eq!(
        last_value(&devs, "s1", "hum"),
        Some((40.5, Some(1_763_761_234_000))),
        "s"
    );
    assert_eq!(last_value(&devs, "m1", "hum").map(|v| v.0), Some(2.0));
    assert_eq!(last_value(&devs, "c1", "hum").map(|v| v.0), Some(8.0));
    assert_eq!(last_value(&devs, "k1", "temp").map(|v| v.0), Some(9.0));
    let log = ew.log_text();
    assert!(
        log.lines().any(|l| l.contains("bad message skipped")
            && l.contains("num/n2/temp")
            && l.contains("not a valid number")),
        "bad payloads are logged with topic and reason:\n{log}"
    );
}

#[test]
fn a_broker_restart_is_survived_clean_session_resubscribes() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut broker = Broker::start(dir.path(), "");
    let cfg = format!(
        r#"
[unknown_devices]
policy = "register"

[[source]]
id = "mqtt"
kind = "mqtt"
url = "{}"
backoff_min = "50ms"
backoff_max = "500ms"

[[source.subscribe]]
topic = "sensors/{{device}}/{{metric}}"
"#,
        broker.url()
    );
    let mut ew = Edgewatch::start(&write_config(dir.path(), &cfg));
    wait_subscribed(&mut ew, 1);
    let batch = |from: usize| -> Vec<(String, Vec<u8>)> {
        (from..from + 50)
            .map(|i| {
                msg(
                    &format!("sensors/d{}/t", i % 5),
                    &format!(r#"{{"value":{i}}}"#),
                )
            })
            .collect()
    };
    publish_all(broker.port, QoS::AtMostOnce, &batch(0));
    ew.poll("/api/status", Duration::from_secs(10), |s| {
        s["sources"][0]["samples"] == 50
    });
    broker.stop();
    ew.poll("/api/status", Duration::from_secs(10), |s| {
        s["sources"][0]["healthy"] == false
    });
    broker.start_again();
    wait_subscribed(&mut ew, 2);
    publish_all(broker.port, QoS::AtMostOnce, &batch(50));
    let st = ew.poll("/api/status", Duration::from_secs(10), |s| {
        s["sources"][0]["samples"] == 100
    });
    let s = &st["sources"][0];
    assert_eq!(s["healthy"], true, "{st}");
    assert_eq!(s["connects_total"], 2, "{st}");
    assert_eq!(s["dropped_queue_full"], 0, "{st}");
}

#[test]
fn a_persistent_session_with_qos_1_loses_nothing_across_a_broker_restart() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut broker = Broker::start(dir.path(), "");
    // A slow first retry: the publisher reaches the restarted broker before edgewatch does, so
    // the second batch waits in edgewatch's session on the broker.
    let cfg = format!(
        r#"
[unknown_devices]
policy = "register"

[[source]]
id = "mqtt"
kind = "mqtt"
url = "{}"
client_id = "edgewatch-persistent"
clean_session = false
backoff_min = "2s"
backoff_max = "3s"

[[source.subscribe]]
topic = "p/{{device}}/{{metric}}"
qos = 1
format = "number"
"#,
        broker.url()
    );
    let mut ew = Edgewatch::start(&write_config(dir.path(), &cfg));
    wait_subscribed(&mut ew, 1);
    let batch = |from: usize| -> Vec<(String, Vec<u8>)> {
        (from..from + 100)
            .map(|i| msg(&format!("p/dev{i}/v"), &i.to_string()))
            .collect()
    };
    publish_all(broker.port, QoS::AtLeastOnce, &batch(0));
    ew.poll("/api/status", Duration::from_secs(10), |s| {
        s["analysis"]["devices"] == 100
    });
    broker.stop();
    broker.start_again();
    publish_all(broker.port, QoS::AtLeastOnce, &batch(100));
    assert_eq!(
        source_status(&ew)["connections"],
        0,
        "edgewatch was still away when the batch was published"
    );
    // One device per message: the count proves each message arrived (duplicates add nothing).
    let st = ew.poll("/api/status", Duration::from_secs(20), |s| {
        s["analysis"]["devices"] == 200
    });
    assert_eq!(st["sources"][0]["connects_total"], 2, "{st}");
    assert!(
        ew.log_text().contains("session resumed"),
        "{}",
        ew.log_text()
    );
}

/// CA, server and client certificates, written as PEM files into `dir`.
fn make_certs(dir: &std::path::Path) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};
    let ca_key = KeyPair::generate().expect("key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "edgewatch test CA");
    let ca_cert = ca.self_signed(&ca_key).expect("ca");
    let leaf = |name: &str| {
        let key = KeyPair::generate().expect("key");
        let mut p = CertificateParams::new(vec!["localhost".to_string()]).expect("params");
        p.subject_alt_names
            .push(SanType::IpAddress([127, 0, 0, 1].into()));
        p.distinguished_name.push(DnType::CommonName, name);
        let cert = p.signed_by(&key, &ca_cert, &ca_key).expect("sign");
        (cert.pem(), key.serialize_pem())
    };
    let (srv, srv_key) = leaf("broker");
    let (cli, cli_key) = leaf("edgewatch");
    for (f, t) in [
        ("ca.pem", ca_cert.pem()),
        ("server.pem", srv),
        ("server.key", srv_key),
        ("client.pem", cli),
        ("client.key", cli_key),
    ] {
        std::fs::write(dir.join(f), t).expect("write pem");
    }
}

#[test]
fn tls_with_a_client_certificate() {
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path();
    make_certs(d);
    let tls_port = common::broker::free_port();
    let broker = Broker::start(
        d,
        &format!(
            "listener {tls_port} 127.0.0.1\ncafile {0}/ca.pem\ncertfile {0}/server.pem\nkeyfile {0}/server.key\nrequire_certificate true\n",
            d.display()
        ),
    );
    let cfg = format!(
        r#"
[unknown_devices]
policy = "register"

[[source]]
id = "mqtt"
kind = "mqtt"
url = "mqtts://127.0.0.1:{tls_port}"
ca_file = "{0}/ca.pem"
client_cert = "{0}/client.pem"
client_key = "{0}/client.key"

[[source.subscribe]]
topic = "sensors/{{device}}/{{metric}}"
format = "number"
"#,
        d.display()
    );
    let mut ew = Edgewatch::start(&write_config(d, &cfg));
    wait_subscribed(&mut ew, 1);
    publish_all(
        broker.port,
        QoS::AtLeastOnce,
        &[msg("sensors/tls1/temp", "42")],
    );
    let devs = ew.poll("/api/devices", Duration::from_secs(10), |d| {
        d.as_array().is_some_and(|a| !a.is_empty())
    });
    assert_eq!(last_value(&devs, "tls1", "temp").map(|v| v.0), Some(42.0));
}

fn sink_config(url: &str) -> String {
    format!(
        r#"
summary_interval = "200ms"

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

[[sink]]
kind = "mqtt"
id = "fleet"
url = "{url}"
backoff_min = "50ms"
backoff_max = "300ms"
retain = true
"#
    )
}

/// Sends `n` samples that produce `n` alert messages for `device`.
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

fn alerts(msgs: &[(String, Vec<u8>, bool)]) -> Vec<Value> {
    msgs.iter()
        .filter(|(t, _, _)| t.starts_with("edgewatch/test/alerts/"))
        .map(|(_, p, _)| serde_json::from_slice(p).expect("alert json"))
        .collect()
}

#[test]
fn the_sink_delivers_every_alert_in_order_across_an_outage_and_a_kill_9() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut broker = Broker::start(dir.path(), "");
    let watcher = Watcher::start(broker.port, "watcher", "edgewatch/#");
    let cfg = write_config(dir.path(), &sink_config(&broker.url()));
    let mut ew = Edgewatch::start(&cfg);
    let mut tx = Sender::connect(&ew.tcp_addr("tcp"));
    flip(&mut tx, "d1", 20);
    watcher.wait(Duration::from_secs(20), "20 alerts", |m| {
        alerts(m).len() >= 20
    });
    let m = watcher.messages();
    assert!(
        m.iter().any(|(t, p, _)| t == "edgewatch/test/status"
            && String::from_utf8_lossy(p).contains("online")),
        "birth message"
    );
    assert!(m.iter().any(|(t, _, _)| t == "edgewatch/test/alerts/d1/x"));

    // Outage: alerts are raised while the broker is down, then edgewatch is killed.
    broker.stop();
    flip(&mut tx, "d2", 20);
    ew.poll("/api/status", Duration::from_secs(10), |s| {
        s["sinks"][0]["durable_seq"] == 40 && s["sinks"][0]["outbox_alerts"] == 20
    });
    ew.kill9();
    broker.start_again();
    let ew = Edgewatch::start(&cfg);
    watcher.wait(Duration::from_secs(20), "40 alerts", |m| {
        alerts(m)
            .iter()
            .map(|a| a["seq"].as_u64())
            .collect::<BTreeSet<_>>()
            .len()
            >= 40
    });
    let all = alerts(&watcher.messages());
    // First occurrences are in seq order; QoS 1 may repeat a message, never skip one.
    let mut firsts = Vec::new();
    let mut seen = BTreeSet::new();
    for a in &all {
        let s = a["seq"].as_u64().expect("seq");
        if seen.insert(s) {
            firsts.push(s);
        }
    }
    assert_eq!(
        firsts,
        (1..=40).collect::<Vec<u64>>(),
        "every alert, in order"
    );
    assert!(all.iter().any(|a| a["device"] == "d2"));
    let st = ew.poll("/api/status", Duration::from_secs(10), |s| {
        s["sinks"][0]["outbox_alerts"] == 0 && s["sinks"][0]["connected"] == true
    });
    assert_eq!(st["sinks"][0]["id"], "fleet");

    // The Last Will marks the node offline when edgewatch dies with the broker up.
    ew.kill9();
    watcher.wait(Duration::from_secs(30), "the last will", |m| {
        m.iter().any(|(t, p, _)| {
            t == "edgewatch/test/status" && String::from_utf8_lossy(p).contains("offline")
        })
    });
    drop(tx);
}

#[test]
fn the_queue_toward_analysis_is_bounded_in_bytes() {
    let dir = tempfile::tempdir().expect("tmp");
    let broker = Broker::start(dir.path(), "");
    // room for one 60 KiB message at a time: a burst overflows by bytes long before 16,384 messages
    let cfg = format!(
        r#"
[unknown_devices]
policy = "register"

[[source]]
id = "mqtt"
kind = "mqtt"
url = "{url}"
max_packet_size = 65536
queue_bytes = 65536

[[source.subscribe]]
topic = "sensors/{{device}}/{{metric}}"
"#,
        url = broker.url()
    );
    let mut ew = Edgewatch::start(&write_config(dir.path(), &cfg));
    wait_subscribed(&mut ew, 1);
    let pad = "x".repeat(60 * 1024);
    let msgs: Vec<_> = (0..200)
        .map(|i| {
            msg(
                "sensors/big/m",
                &format!("{{\"value\":{i},\"pad\":\"{pad}\"}}"),
            )
        })
        .collect();
    publish_all(broker.port, QoS::AtMostOnce, &msgs);
    let end = std::time::Instant::now() + Duration::from_secs(20);
    let s = loop {
        let s = source_status(&ew);
        let done = s["frames_accepted"].as_u64().unwrap_or(0)
            + s["frames_rejected"].as_u64().unwrap_or(0)
            + s["dropped_queue_full"].as_u64().unwrap_or(0);
        if done >= 200 || std::time::Instant::now() > end {
            break s;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let dropped = s["dropped_queue_full"].as_u64().unwrap_or(0);
    assert!(dropped > 0, "no message dropped for bytes: {s}");
    assert_eq!(
        s["frames_accepted"].as_u64().unwrap_or(0) + dropped,
        200,
        "every message either analysed or counted as dropped: {s}"
    );
    ew.wait_log("queue full (messages or bytes)", Duration::from_secs(5));
}
