//! Home Assistant MQTT discovery through a real mosquitto and the real binary: retained config
//! payloads with the documented keys (seen by a subscriber that comes after), device states with
//! values, the problem sensor ON while an alert fires and OFF after, availability offline on kill -9.

mod common;

use std::time::Duration;

use common::broker::{Broker, Received, Watcher};
use common::{write_config, Edgewatch, Sender};
use serde_json::Value;

fn find<'a>(msgs: &'a [Received], topic: &str) -> Option<&'a Received> {
    msgs.iter().rev().find(|m| m.0 == topic)
}

fn json(m: &Received) -> Value {
    serde_json::from_slice(&m.1).unwrap_or(Value::Null)
}

#[test]
fn discovery_configs_are_retained_states_carry_values_and_problem_and_availability_follow() {
    if !common::servers::have("mosquitto") {
        return;
    }
    let dir = tempfile::tempdir().expect("tmp");
    let broker = Broker::start(dir.path(), "");
    let cfg = write_config(
        dir.path(),
        &format!(
            r#"
summary_interval = "300ms"

[unknown_devices]
policy = "register"
template = "t"

[template.t]
detectors = [{{ type = "threshold", max = 50.0, hold = "0s" }}]

[[source]]
id = "tcp"
kind = "tcp"
listen = "127.0.0.1:0"
format = "csv"

[[sink]]
kind = "mqtt"
id = "ha"
url = "{}"
backoff_min = "50ms"

[sink.homeassistant]
prefix = "homeassistant"
"#,
            broker.url()
        ),
    );
    let mut ew = Edgewatch::start(&cfg);
    let mut tx = Sender::connect(&ew.tcp_addr("tcp"));
    tx.send(b"pump1,temp,21.5\npump1,hum,40\nsite/p2,temp,7\n");
    let live = Watcher::start(broker.port, "ha-live", "edgewatch/test/#");
    live.wait(Duration::from_secs(20), "device state", |m| {
        find(m, "edgewatch/test/state/pump1")
            .is_some_and(|r| json(r)["temp"] == 21.5 && json(r)["hum"] == 40.0)
    });

    // A subscriber that arrives afterwards gets every config, retained.
    let late = Watcher::start(broker.port, "ha-late", "homeassistant/#");
    let sensor = "homeassistant/sensor/test_pump1_temp/config";
    let problem = "homeassistant/binary_sensor/test_pump1_problem/config";
    let node = "homeassistant/binary_sensor/edgewatch_test/config";
    late.wait(Duration::from_secs(20), "retained configs", |m| {
        [
            sensor,
            problem,
            node,
            "homeassistant/sensor/test_pump1_hum/config",
        ]
        .iter()
        .all(|t| find(m, t).is_some())
            && m.iter()
                .filter(|r| r.0.starts_with("homeassistant/sensor/test_site_p2_temp_"))
                .count()
                == 1
    });
    let msgs = late.messages();
    assert!(msgs.iter().all(|m| m.2), "every config is retained");
    let s = json(find(&msgs, sensor).expect("sensor"));
    assert_eq!(s["name"], "temp");
    assert_eq!(s["unique_id"], "edgewatch_test_pump1_temp");
    assert_eq!(s["state_topic"], "edgewatch/test/state/pump1");
    assert_eq!(s["value_template"], "{{ value_json[\"temp\"] }}");
    assert_eq!(s["state_class"], "measurement");
    assert_eq!(s["availability_topic"], "edgewatch/test/status");
    assert_eq!(s["availability_template"], "{{ value_json.state }}");
    assert_eq!(s["payload_available"], "online");
    assert_eq!(s["payload_not_available"], "offline");
    assert_eq!(s["device"]["identifiers"][0], "edgewatch_test_pump1");
    assert_eq!(s["device"]["name"], "pump1");
    assert_eq!(s["device"]["via_device"], "edgewatch_test");
    assert_eq!(s["origin"]["name"], "edgewatch");
    let p = json(find(&msgs, problem).expect("problem"));
    assert_eq!(p["device_class"], "problem");
    assert_eq!(p["state_topic"], "edgewatch/test/problem/pump1");
    assert_eq!(p["payload_on"], "ON");
    assert_eq!(p["device"]["identifiers"][0], "edgewatch_test_pump1");
    let n = json(find(&msgs, node).expect("node"));
    assert_eq!(n["device"]["identifiers"][0], "edgewatch_test");
    assert_eq!(n["device_class"], "connectivity");

    // The problem sensor: OFF, ON while the threshold alert fires, OFF once it resolves.
    let state =
        |w: &Watcher| find(&w.messages(), "edgewatch/test/problem/pump1").map(|r| r.1.clone());
    live.wait(Duration::from_secs(10), "problem OFF", |_| {
        state(&live).as_deref() == Some(b"OFF")
    });
    tx.line("pump1,temp,99");
    live.wait(Duration::from_secs(20), "problem ON", |_| {
        state(&live).as_deref() == Some(b"ON")
    });
    live.wait(Duration::from_secs(10), "the value in the state", |m| {
        find(m, "edgewatch/test/state/pump1").is_some_and(|r| json(r)["temp"] == 99.0)
    });
    tx.line("pump1,temp,20");
    live.wait(Duration::from_secs(20), "problem OFF again", |_| {
        state(&live).as_deref() == Some(b"OFF")
    });
    let on_off: Vec<Vec<u8>> = live
        .messages()
        .into_iter()
        .filter(|m| m.0 == "edgewatch/test/problem/pump1")
        .map(|m| m.1)
        .collect();
    assert!(
        on_off.windows(2).any(|w| w[0] == b"ON" && w[1] == b"OFF"),
        "{on_off:?}"
    );

    // kill -9: the broker publishes the Last Will; availability goes offline, retained.
    ew.kill9();
    drop(tx);
    live.wait(Duration::from_secs(20), "offline", |m| {
        find(m, "edgewatch/test/status").is_some_and(|r| json(r)["state"] == "offline")
    });
    let after = Watcher::start(broker.port, "ha-after", "edgewatch/test/status");
    after.wait(Duration::from_secs(10), "retained offline", |m| {
        m.iter().any(|r| r.2 && json(r)["state"] == "offline")
    });
}
