//! Sparkplug B through a real mosquitto, with payloads encoded and decoded by Eclipse Tahu's own
//! JavaScript library (`tests/sparkplug/codec.js`, the official `sparkplug_b.proto`), not by
//! edgewatch's structs: births and data by alias become samples, an unknown alias is answered
//! with one NCMD `Node Control/Rebirth` per node (paced), deaths mark devices unhealthy (a stale
//! NDEATH does not), and a garbage payload is rejected with its reason while others keep working.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::broker::{publish_all, Broker, Watcher};
use common::{now_ms, write_config, Edgewatch};
use rumqttc::QoS;
use serde_json::{json, Value};

/// Runs `tests/sparkplug/codec.js` (`encode` or `decode`) on a JSON array.
fn codec(mode: &str, input: &Value) -> Value {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sparkplug");
    assert!(
        dir.join("node_modules/sparkplug-payload/package.json").exists(),
        "tests/sparkplug/node_modules is missing: run tests/run.sh (or `npm ci` in tests/sparkplug)"
    );
    let mut child = Command::new("node")
        .arg("codec.js")
        .arg(mode)
        .current_dir(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node (install Node.js; tests/run.sh does)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.to_string().as_bytes())
        .expect("write to node");
    let out = child.wait_with_output().expect("node output");
    assert!(
        out.status.success(),
        "codec.js {mode}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("codec.js prints JSON")
}

/// Encodes Tahu-shaped payload objects to protobuf bytes.
fn encode(payloads: &[Value]) -> Vec<Vec<u8>> {
    let hex = codec("encode", &Value::Array(payloads.to_vec()));
    hex.as_array()
        .expect("array")
        .iter()
        .map(|h| {
            let h = h.as_str().expect("hex string").as_bytes();
            h.chunks(2)
                .map(|c| {
                    u8::from_str_radix(std::str::from_utf8(c).expect("ascii"), 16).expect("hex")
                })
                .collect()
        })
        .collect()
}

fn decode(payload: &[u8]) -> Value {
    let hex: String = payload.iter().map(|b| format!("{b:02x}")).collect();
    codec("decode", &json!([hex]))[0].clone()
}

fn last_value(devs: &Value, device: &str, metric: &str) -> Option<(f64, Option<i64>)> {
    let d = devs.as_array()?.iter().find(|d| d["device"] == device)?;
    let m = d["metrics"]
        .as_array()?
        .iter()
        .find(|m| m["metric"] == metric)?;
    Some((m["last_value"].as_f64()?, m["last_ts"].as_i64()))
}

/// (device, healthy) of the source's Sparkplug nodes and devices.
fn health(st: &Value) -> Vec<(String, bool)> {
    st["sources"][0]["devices"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|d| {
                    (
                        d["device"].as_str().unwrap_or("").to_string(),
                        d["healthy"] == true,
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn ncmds(w: &Watcher) -> Vec<(String, Vec<u8>)> {
    w.messages()
        .into_iter()
        .filter(|m| m.0.contains("/NCMD/"))
        .map(|m| (m.0, m.1))
        .collect()
}

fn send(broker: &Broker, msgs: &[(&str, &[u8])]) {
    let msgs: Vec<(String, Vec<u8>)> = msgs
        .iter()
        .map(|(t, p)| (t.to_string(), p.to_vec()))
        .collect();
    publish_all(broker.port, QoS::AtLeastOnce, &msgs);
}

#[test]
fn births_data_by_alias_rebirth_and_deaths_through_mosquitto() {
    let dir = tempfile::tempdir().expect("tmp");
    let broker = Broker::start(dir.path(), "");
    let cfg = format!(
        r#"
[unknown_devices]
policy = "register"

[[source]]
id = "sp"
kind = "mqtt"
url = "{url}"

[[source.subscribe]]
topic = "spBv1.0/#"
format = "sparkplug_b"
qos = 1

[source.subscribe.sparkplug]
rebirth_interval = "30s"
"#,
        url = broker.url()
    );
    let mut ew = Edgewatch::start(&write_config(dir.path(), &cfg));
    ew.wait_log("subscribed", Duration::from_secs(20));
    let cmds = Watcher::start(broker.port, "ncmd-watcher", "spBv1.0/+/NCMD/#");

    let t0 = now_ms() - 60_000;
    let (t1, t2) = (t0 + 1_000, t0 + 2_000);
    let m = |name: Option<&str>, alias: Option<u64>, ty: &str, v: Value| {
        let mut o = json!({ "type": ty, "value": v });
        if let Some(n) = name {
            o["name"] = json!(n);
        }
        if let Some(a) = alias {
            o["alias"] = json!(a);
        }
        o
    };
    let nbirth = |bd: u64| {
        json!({ "timestamp": t0, "seq": 0, "metrics": [
            m(Some("bdSeq"), None, "UInt64", json!(bd)),
            m(Some("Node Control/Rebirth"), Some(0), "Boolean", json!(false)),
            m(Some("Supply/Voltage"), Some(1), "Float", json!(12.5)),
        ]})
    };
    let dbirth = json!({ "timestamp": t0, "seq": 1, "metrics": [
        m(Some("Temp"), Some(10), "Double", json!(21.5)),
        m(Some("Count"), Some(11), "Int32", json!(-3)),
        m(Some("Running"), Some(12), "Boolean", json!(true)),
        m(Some("Label"), Some(13), "String", json!("pump")),
    ]});
    let mut ddata = json!({ "timestamp": t2, "seq": 2, "metrics": [
        m(None, Some(10), "Double", json!(22.25)),
        m(None, Some(11), "Int32", json!(-7)),
        m(None, Some(12), "Boolean", json!(false)),
        m(None, Some(13), "String", json!("still a string")),
    ]});
    ddata["metrics"][0]["timestamp"] = json!(t1);
    let ndata = json!({ "timestamp": t2, "seq": 3, "metrics": [
        m(None, Some(1), "Float", json!(12.75)),
    ]});
    let unknown = json!({ "timestamp": t2, "seq": 4, "metrics": [
        m(None, Some(99), "Double", json!(1.0)),
    ]});
    let dbirth2 = json!({ "timestamp": t2, "seq": 1, "metrics": [
        m(Some("Temp"), Some(10), "Double", json!(23.5)),
        m(Some("Pressure"), Some(99), "UInt16", json!(1013)),
    ]});
    let ddata2 = json!({ "timestamp": t2 + 1_000, "seq": 2, "metrics": [
        m(None, Some(99), "UInt16", json!(1015)),
    ]});
    let dbirth_d2 = json!({ "timestamp": t2, "seq": 3, "metrics": [
        m(Some("Temp"), Some(1), "Double", json!(5.0)),
    ]});
    let ddeath = json!({ "timestamp": t2, "seq": 4 });
    let ndeath = |bd: u64| json!({ "metrics": [m(Some("bdSeq"), None, "UInt64", json!(bd))] });
    let enc = encode(&[
        nbirth(7),
        dbirth,
        ddata,
        ndata,
        unknown,
        nbirth(8),
        dbirth2,
        ddata2,
        dbirth_d2,
        ddeath,
        ndeath(7),
        ndeath(8),
    ]);
    let [nbirth7, dbirth, ddata, ndata, unknown, nbirth8, dbirth2, ddata2, dbirth_d2, ddeath, ndeath7, ndeath8] =
        &enc[..]
    else {
        panic!("12 payloads")
    };
    const DDATA: &str = "spBv1.0/Plant1/DDATA/E1/D1";
    const NBIRTH: &str = "spBv1.0/Plant1/NBIRTH/E1";
    const DBIRTH: &str = "spBv1.0/Plant1/DBIRTH/E1/D1";

    // Data before any birth: rejected, and one rebirth request for three messages.
    send(&broker, &[(DDATA, ddata), (DDATA, ddata), (DDATA, ddata)]);
    cmds.wait(Duration::from_secs(10), "NCMD", |m| !m.is_empty());
    ew.poll("/api/status", Duration::from_secs(10), |s| {
        s["sources"][0]["frames_rejected"] == 3
    });
    let got = ncmds(&cmds);
    assert_eq!(got.len(), 1, "paced: {got:?}");
    assert_eq!(got[0].0, "spBv1.0/Plant1/NCMD/E1");
    let cmd = decode(&got[0].1);
    assert_eq!(cmd["metrics"][0]["name"], "Node Control/Rebirth", "{cmd}");
    assert_eq!(cmd["metrics"][0]["type"], "Boolean", "{cmd}");
    assert_eq!(cmd["metrics"][0]["value"], true, "{cmd}");
    assert!(ew
        .log_text()
        .contains("data from an edge node without a live NBIRTH (rebirth requested)"));

    // Births, then data by alias on the device and the node, and a garbage payload elsewhere.
    send(&broker, &[(NBIRTH, nbirth7), (DBIRTH, dbirth)]);
    ew.poll("/api/status", Duration::from_secs(10), |s| {
        s["sources"][0]["sparkplug"]["births"] == 2
    });
    send(
        &broker,
        &[
            (DDATA, ddata),
            ("spBv1.0/Plant1/DDATA/E1/D9", b"\xff\xff\xff garbage"),
            ("spBv1.0/Plant1/NDATA/E1", ndata),
        ],
    );
    let devs = ew.poll("/api/devices", Duration::from_secs(10), |d| {
        last_value(d, "E1", "Supply/Voltage").map(|v| v.0) == Some(12.75)
            && last_value(d, "E1/D1", "Temp").map(|v| v.0) == Some(22.25)
    });
    assert_eq!(
        last_value(&devs, "E1/D1", "Temp"),
        Some((22.25, Some(t1))),
        "the metric's own timestamp"
    );
    assert_eq!(
        last_value(&devs, "E1/D1", "Count"),
        Some((-7.0, Some(t2))),
        "Int32 sign, the payload's timestamp"
    );
    assert_eq!(last_value(&devs, "E1/D1", "Running"), Some((0.0, Some(t2))));
    assert_eq!(
        last_value(&devs, "E1", "Supply/Voltage"),
        Some((12.75, Some(t2)))
    );
    assert_eq!(
        last_value(&devs, "E1/D1", "Label"),
        None,
        "strings are skipped"
    );
    assert_eq!(last_value(&devs, "E1", "bdSeq"), None, "protocol state");
    let log = ew.log_text();
    let bad = log
        .lines()
        .find(|l| l.contains("topic=spBv1.0/Plant1/DDATA/E1/D9"))
        .unwrap_or_else(|| panic!("no reject line for the garbage; log:\n{log}"));
    assert!(
        bad.contains("source=sp") && bad.contains("bad Sparkplug B protobuf"),
        "{bad}"
    );

    // An alias the birth did not name: rejected, one rebirth asked; after the rebirth it flows.
    send(&broker, &[(DDATA, unknown), (DDATA, unknown)]);
    cmds.wait(Duration::from_secs(10), "a second NCMD", |m| m.len() >= 2);
    send(
        &broker,
        &[(NBIRTH, nbirth8), (DBIRTH, dbirth2), (DDATA, ddata2)],
    );
    let devs = ew.poll("/api/devices", Duration::from_secs(10), |d| {
        last_value(d, "E1/D1", "Pressure").map(|v| v.0) == Some(1015.0)
    });
    assert_eq!(
        last_value(&devs, "E1/D1", "Pressure"),
        Some((1015.0, Some(t2 + 1_000)))
    );
    assert_eq!(
        ncmds(&cmds).len(),
        2,
        "one request per unknown-alias episode"
    );
    let st = ew.get("/api/status");
    assert_eq!(st["sources"][0]["sparkplug"]["unknown_alias"], 2, "{st}");

    // Deaths: DDEATH takes one device down; a stale NDEATH (the old session's bdSeq 7) changes
    // nothing; the live one (bdSeq 8) takes the node and all its devices down.
    send(
        &broker,
        &[
            ("spBv1.0/Plant1/DBIRTH/E1/D2", dbirth_d2),
            ("spBv1.0/Plant1/DDEATH/E1/D1", ddeath),
            ("spBv1.0/Plant1/NDEATH/E1", ndeath7),
        ],
    );
    let st = ew.poll("/api/status", Duration::from_secs(10), |s| {
        s["sources"][0]["sparkplug"]["stale_deaths"] == 1
    });
    assert_eq!(
        health(&st),
        [
            ("E1".to_string(), true),
            ("E1/D1".to_string(), false),
            ("E1/D2".to_string(), true)
        ],
        "{st}"
    );
    send(&broker, &[("spBv1.0/Plant1/NDEATH/E1", ndeath8)]);
    let st = ew.poll("/api/status", Duration::from_secs(10), |s| {
        s["sources"][0]["sparkplug"]["deaths"] == 2
    });
    assert_eq!(
        health(&st),
        [
            ("E1".to_string(), false),
            ("E1/D1".to_string(), false),
            ("E1/D2".to_string(), false)
        ],
        "{st}"
    );
    let sp = &st["sources"][0]["sparkplug"];
    assert_eq!(sp["rebirths_requested"], 2, "{sp}");
    assert_eq!(sp["births"], 5, "{sp}");
    assert_eq!(sp["metrics"], 0, "a dead node's aliases are freed: {sp}");
    assert_eq!(
        sp["seq_gaps"], 0,
        "every seq followed the previous one: {sp}"
    );
    // 3 before the birth, the garbage, 2 unknown aliases.
    assert_eq!(st["sources"][0]["frames_rejected"], 6, "{st}");
}
