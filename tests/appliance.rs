//! End-to-end tests of the real binary: TCP frames in (good and malformed), alerts and summaries
//! out on /ws, the API, kill -9 and SIGTERM restarts with state resumed, TCP client mode.

mod common;

use std::time::Duration;

use common::{noise, write_config, Edgewatch, InProcess, Sender};
use serde_json::Value;

const T0: i64 = 1_763_000_000_000;

fn tcp_config(extra: &str) -> String {
    format!(
        r#"
summary_interval = "500ms"
persist_interval = "1s"

[unknown_devices]
policy = "register"
template = "t"

[template.t]
window = 100
detectors = [{{ type = "zscore", window = 50, threshold = 6.0, warmup = 20, hold = "0s" }}]

[[source]]
id = "tcp"
kind = "tcp"
listen = "127.0.0.1:0"
format = "json"
max_frame = 256
{extra}
"#
    )
}

fn json_line(device: &str, metric: &str, i: i64, value: f64) -> String {
    format!(
        r#"{{"device":"{device}","metric":"{metric}","ts":{},"value":{value}}}"#,
        T0 + i * 1000
    )
}

fn metric<'a>(devices: &'a Value, device: &str, metric: &str) -> Option<&'a Value> {
    devices.as_array()?.iter().find(|d| d["device"] == device)?["metrics"]
        .as_array()?
        .iter()
        .find(|m| m["metric"] == metric)
}

fn total(ew: &Edgewatch, device: &str, m: &str) -> u64 {
    metric(&ew.get("/api/devices"), device, m)
        .and_then(|x| x["total"].as_u64())
        .unwrap_or(0)
}

#[test]
fn tcp_frames_become_alerts_summaries_and_api_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let extra = r#"
[[source]]
id = "csv"
kind = "tcp"
listen = "127.0.0.1:0"
format = "csv"

[[source]]
id = "kv"
kind = "tcp"
listen = "127.0.0.1:0"
format = "kv"
"#;
    let cfg = write_config(dir.path(), &tcp_config(extra));
    let mut ew = Edgewatch::start(&cfg);
    let tcp = ew.tcp_addr("tcp");
    let mut ws = ew.ws("");
    let mut only_resolved = ew.ws("?type=alert&state=resolved&device=dev-a");
    let hello = ws.next(Duration::from_secs(5)).expect("hello");
    assert_eq!(hello["type"], "hello");
    assert_eq!(hello["node"], "test");

    let mut tx = Sender::connect(&tcp);
    for i in 0..100 {
        tx.line(&json_line("dev-a", "temp", i, 20.0 + noise(i as u64)));
    }
    // Five malformed frames, each must be counted and skipped without closing the connection.
    tx.send(b"garbage\n");
    tx.send(b"{\"device\":\"dev-a\"}\n");
    tx.send(format!("{}\n", "x".repeat(300)).as_bytes());
    tx.send(b"\xff\xfe\xfd\n");
    tx.send(b"{\"device\":\"dev-a\",\"metric\":\"temp\",\"value\":\"abc\"}\n");
    tx.line(&json_line("dev-a", "temp", 100, 100.0));

    let alert = ws.wait_for(Duration::from_secs(10), "alert for dev-a", |m| {
        m["type"] == "alert"
    });
    assert_eq!(alert["device"], "dev-a");
    assert_eq!(alert["metric"], "temp");
    assert_eq!(alert["ts"], T0 + 100_000);
    assert_eq!(alert["value"], 100.0);
    assert_eq!(alert["state"], "firing");
    assert_eq!(alert["detector"], "zscore");
    assert_eq!(alert["node"], "test");
    assert_eq!(alert["v"], 1);
    assert!(alert["score"].as_f64().expect("score") > 6.0, "{alert}");

    // The next normal sample resolves it (hold 0s), with the same id.
    tx.line(&json_line("dev-a", "temp", 101, 20.0));
    let resolved = ws.wait_for(Duration::from_secs(10), "resolution", |m| {
        m["type"] == "alert"
    });
    assert_eq!(resolved["state"], "resolved");
    assert_eq!(resolved["id"], alert["id"]);
    assert_eq!(resolved["ts"], T0 + 101_000);
    let filtered = only_resolved.wait_for(Duration::from_secs(5), "filtered alert", |m| {
        m["type"] != "hello"
    });
    assert_eq!(
        filtered, resolved,
        "a filtered client gets only the resolution"
    );

    assert!(
        only_resolved.next(Duration::from_millis(700)).is_none(),
        "summaries and firings are filtered out"
    );
    let summary = ws.wait_for(Duration::from_secs(5), "summary with dev-a", |m| {
        m["type"] == "summary"
            && m["devices"]
                .as_array()
                .is_some_and(|d| d.iter().any(|e| e["device"] == "dev-a"))
    });
    let entry = summary["devices"]
        .as_array()
        .and_then(|d| d.iter().find(|e| e["device"] == "dev-a"))
        .expect("entry");
    assert_eq!(entry["metric"], "temp");
    assert!(entry["count"].as_u64().expect("count") >= 1);
    for k in ["mean", "std", "min", "max", "last", "total"] {
        assert!(entry.get(k).is_some(), "summary entry lacks {k}: {entry}");
    }

    // Other formats on other sources, including one frame carrying several metrics.
    let mut csv = Sender::connect(&ew.tcp_addr("csv"));
    csv.send(b"device,metric,value,ts\ndev-csv,rpm,1200.5,1763000000\ndev-csv,rpm,oops\n");
    let mut kv = Sender::connect(&ew.tcp_addr("kv"));
    kv.send(b"device=dev-kv temp=21.5 humidity=40 ts=1763000000123\n");
    tx.line(r#"{"device":"dev-m","ts":1763000000000,"temp":1.5,"pressure":1013.2,"label":"x"}"#);

    let status = ew.poll("/api/status", Duration::from_secs(10), |s| {
        s["sources"][0]["frames_accepted"] == 103 && s["sources"][1]["frames_rejected"] == 1
    });
    let src = &status["sources"][0];
    assert_eq!(src["id"], "tcp");
    assert_eq!(src["frames_rejected"], 5, "{status}");
    assert_eq!(src["samples"], 104, "{status}");
    assert_eq!(src["healthy"], true);
    assert_eq!(status["sources"][1]["frames_accepted"], 1, "{status}");
    assert_eq!(status["alerts"]["fired"], 1, "{status}");

    let devices = ew.poll("/api/devices", Duration::from_secs(5), |d| {
        metric(d, "dev-kv", "humidity").is_some() && metric(d, "dev-m", "pressure").is_some()
    });
    let a = metric(&devices, "dev-a", "temp").expect("dev-a temp");
    assert_eq!(a["total"], 102);
    assert_eq!(a["last_value"], 20.0);
    assert_eq!(a["max"], 100.0);
    assert_eq!(
        metric(&devices, "dev-csv", "rpm").expect("csv")["last_ts"],
        1_763_000_000_000i64
    );
    assert_eq!(
        metric(&devices, "dev-kv", "temp").expect("kv")["last_value"],
        21.5
    );
    assert_eq!(
        metric(&devices, "dev-m", "temp").expect("multi")["last_value"],
        1.5
    );
    assert!(metric(&devices, "dev-m", "label").is_none());

    let log = ew.get("/api/alerts?device=dev-a");
    let list = log.as_array().expect("list");
    assert_eq!(list.len(), 1, "{log}");
    assert_eq!(list[0]["id"], alert["id"]);
    assert_eq!(list[0]["state"], "resolved");
    assert_eq!(
        ew.get("/api/alerts?state=firing").as_array().map(Vec::len),
        Some(0)
    );
    let (code, body) = ew.get_status("/api/alerts?state=bogus");
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("state must be"), "{body}");
    assert_eq!(ew.get_status("/api/devices/nope").0, 404);
    assert_eq!(ew.get("/healthz")["status"], "ok");
    assert!(
        ew.log_text().contains("bad frame skipped"),
        "bad frames are logged"
    );
}

/// permessage-deflate (RFC 7692) is not implemented by actix-ws (docs/PROTOCOL.md): a client that
/// offers it (as browsers do) gets the handshake answered without the extension and plain frames,
/// which it reads as usual (tungstenite rejects a frame with the compression bit set); a client
/// that offers nothing gets the same messages.
#[test]
fn a_ws_client_offering_permessage_deflate_is_answered_without_it_and_reads_plain_frames() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = write_config(dir.path(), &tcp_config(""));
    let mut ew = InProcess::start(&cfg);
    let url = format!("ws://{}/ws?type=summary", ew.api);
    let (mut offering, resp) = common::Ws::connect_offering(
        &url,
        &[(
            "Sec-WebSocket-Extensions",
            "permessage-deflate; client_max_window_bits",
        )],
    );
    assert_eq!(resp.status(), 101);
    assert!(
        resp.headers().get("Sec-WebSocket-Extensions").is_none(),
        "extension answered: {:?}",
        resp.headers()
    );
    let mut plain = ew.ws("?type=summary");
    let mut tcp = Sender::connect(&ew.tcp_addr("tcp"));
    for i in 0..5 {
        tcp.line(&json_line("deflate-1", "temp", i, 20.0 + 0.1 * i as f64));
    }
    for ws in [&mut offering, &mut plain] {
        let s = ws.wait_for(Duration::from_secs(10), "summary of deflate-1", |v| {
            v["devices"].as_array().is_some_and(|d| {
                d.iter()
                    .any(|e| e["device"] == "deflate-1" && e["total"] == 5)
            })
        });
        assert_eq!(s["type"], "summary");
    }
}

#[test]
fn kill_9_then_restart_resumes_state_and_keeps_the_alert_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = write_config(dir.path(), &tcp_config(""));
    let mut ew = Edgewatch::start(&cfg);
    let mut tx = Sender::connect(&ew.tcp_addr("tcp"));
    for i in 0..60 {
        tx.line(&json_line("warm", "temp", i, 20.0 + noise(i as u64)));
    }
    for i in 0..40 {
        tx.line(&json_line("spiky", "temp", i, 5.0 + noise(i as u64 + 7)));
    }
    tx.line(&json_line("spiky", "temp", 40, 50.0));
    ew.poll("/api/alerts", Duration::from_secs(10), |a| {
        a.as_array().is_some_and(|l| l.len() == 1)
    });
    ew.poll("/api/devices", Duration::from_secs(10), |d| {
        metric(d, "warm", "temp").is_some_and(|m| m["total"] == 60)
    });
    let before = ew.get("/api/alerts");
    // Two snapshot intervals pass, then the process dies without any chance to flush.
    std::thread::sleep(Duration::from_millis(2500));
    drop(tx);
    ew.kill9();

    let mut ew = Edgewatch::start(&cfg);
    assert_eq!(
        total(&ew, "warm", "temp"),
        60,
        "stats resumed from the snapshot"
    );
    assert_eq!(total(&ew, "spiky", "temp"), 41);
    assert_eq!(
        ew.get("/api/alerts"),
        before,
        "alert log intact after kill -9"
    );
    // The detector's window was restored: a spike alerts at once, with no new warm-up.
    let mut ws = ew.ws("?type=alert");
    let mut tx = Sender::connect(&ew.tcp_addr("tcp"));
    tx.line(&json_line("warm", "temp", 60, 80.0));
    let a = ws.wait_for(Duration::from_secs(10), "alert after restart", |m| {
        m["type"] == "alert"
    });
    assert_eq!(a["device"], "warm");
    assert_eq!(a["ts"], T0 + 60_000);
}

#[test]
fn sigterm_saves_state_even_between_snapshots() {
    let dir = tempfile::tempdir().expect("tempdir");
    let body = tcp_config("").replace("persist_interval = \"1s\"", "persist_interval = \"1h\"");
    let cfg = write_config(dir.path(), &body);
    let mut ew = Edgewatch::start(&cfg);
    let mut tx = Sender::connect(&ew.tcp_addr("tcp"));
    for i in 0..30 {
        tx.line(&json_line("d", "m", i, i as f64));
    }
    ew.poll("/api/devices", Duration::from_secs(10), |d| {
        metric(d, "d", "m").is_some_and(|m| m["total"] == 30)
    });
    drop(tx);
    let (status, log) = ew.terminate();
    assert!(status.success(), "graceful exit: {status}\n{log}");
    assert!(log.contains("state saved"), "{log}");
    let ew = Edgewatch::start(&cfg);
    assert_eq!(total(&ew, "d", "m"), 30);
}

/// The in-process seam: `stop` is the graceful path (final snapshot), and a second appliance on
/// the same data directory resumes from it; dropping one instead (abandon) loses what was not saved.
#[test]
fn in_process_stop_saves_state_and_an_abandoned_run_does_not() {
    let dir = tempfile::tempdir().expect("tempdir");
    let body = tcp_config("").replace("persist_interval = \"1s\"", "persist_interval = \"1h\"");
    let cfg = write_config(dir.path(), &body);
    let feed = |ew: &mut InProcess, device: &str| {
        let mut tx = Sender::connect(&ew.tcp_addr("tcp"));
        for i in 0..30 {
            tx.line(&json_line(device, "m", i, i as f64));
        }
        ew.poll("/api/devices", Duration::from_secs(10), |d| {
            metric(d, device, "m").is_some_and(|m| m["total"] == 30)
        });
    };
    let mut ew = InProcess::start(&cfg);
    feed(&mut ew, "kept");
    ew.stop();
    let mut ew = InProcess::start(&cfg);
    let devices = ew.get("/api/devices");
    assert_eq!(
        metric(&devices, "kept", "m").and_then(|m| m["total"].as_u64()),
        Some(30),
        "{devices}"
    );
    feed(&mut ew, "lost");
    drop(ew);
    let ew = InProcess::start(&cfg);
    let devices = ew.get("/api/devices");
    assert!(metric(&devices, "kept", "m").is_some(), "{devices}");
    assert!(metric(&devices, "lost", "m").is_none(), "{devices}");
}

#[test]
fn tcp_client_mode_reconnects_after_the_peer_goes_away() {
    let dir = tempfile::tempdir().expect("tempdir");
    let peer = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = peer.local_addr().expect("addr");
    let body = format!(
        "[unknown_devices]\npolicy = \"register\"\n[[source]]\nid = \"up\"\nkind = \"tcp\"\nmode = \"client\"\n\
         connect = \"{addr}\"\nformat = \"csv\"\nbackoff_min = \"50ms\"\nbackoff_max = \"200ms\"\n"
    );
    let cfg = write_config(dir.path(), &body);
    let ew = InProcess::start(&cfg);
    for round in 0..2 {
        let (mut s, _) = peer.accept().expect("edgewatch connects");
        for i in 0..10 {
            std::io::Write::write_all(
                &mut s,
                format!("dev-c,level,{}\n", round * 10 + i).as_bytes(),
            )
            .expect("write");
        }
        ew.poll("/api/devices", Duration::from_secs(10), |d| {
            metric(d, "dev-c", "level").is_some_and(|m| m["total"] == (round + 1) * 10)
        });
        // dropping `s` closes the connection: edgewatch must come back by itself
    }
    let st = ew.get("/api/status");
    assert!(
        st["sources"][0]["connects_total"].as_u64().expect("n") >= 2,
        "{st}"
    );
}

#[test]
fn many_concurrent_clients_are_all_counted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = write_config(dir.path(), &tcp_config(""));
    let mut ew = InProcess::start(&cfg);
    let tcp = ew.tcp_addr("tcp");
    let threads: Vec<_> = (0..16)
        .map(|c| {
            let tcp = tcp.clone();
            std::thread::spawn(move || {
                let mut tx = Sender::connect(&tcp);
                let mut buf = String::new();
                for i in 0..500 {
                    buf.push_str(&json_line(&format!("c{c}"), "v", i, noise(i as u64)));
                    buf.push('\n');
                }
                tx.send(buf.as_bytes());
            })
        })
        .collect();
    for t in threads {
        t.join().expect("client thread");
    }
    let d = ew.poll("/api/devices", Duration::from_secs(20), |d| {
        (0..16).all(|c| metric(d, &format!("c{c}"), "v").is_some_and(|m| m["total"] == 500))
    });
    assert_eq!(d.as_array().map(Vec::len), Some(16));
    let st = ew.get("/api/status");
    assert_eq!(st["sources"][0]["samples"], 8000);
    assert_eq!(st["sources"][0]["connects_total"], 16);
}

#[test]
fn a_client_that_stops_reading_is_dropped_and_the_pipeline_goes_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let body = r#"
summary_interval = "1s"
[unknown_devices]
policy = "register"
template = "flip"
[template.flip]
detectors = [{ type = "threshold", max = 10.0, hold = "0s" }]
[[source]]
id = "tcp"
kind = "tcp"
listen = "127.0.0.1:0"
format = "csv"
"#;
    let cfg = write_config(dir.path(), body);
    let text = std::fs::read_to_string(&cfg)
        .expect("cfg")
        .replace("[api]\n", "[api]\nws_buffer = 16\n");
    std::fs::write(&cfg, text).expect("write");
    let mut ew = InProcess::start(&cfg);
    let stalled = ew.ws(""); // connected, never reads
    let mut tx = Sender::connect(&ew.tcp_addr("tcp"));
    // Every sample flips the threshold detector: one alert message per sample.
    let n = 40_000;
    let mut buf = String::new();
    for i in 0..n {
        buf.push_str(if i % 2 == 0 {
            "flood,x,100\n"
        } else {
            "flood,x,0\n"
        });
    }
    tx.send(buf.as_bytes());
    ew.poll("/api/status", Duration::from_secs(30), |s| {
        s["ws"]["dropped_slow"].as_u64() >= Some(1)
    });
    ew.poll("/api/status", Duration::from_secs(30), |s| {
        s["analysis"]["samples"] == n
            && s["alerts"]["fired"].as_u64().unwrap_or(0)
                + s["alerts"]["resolved"].as_u64().unwrap_or(0)
                == n
    });
    // A new client still gets live alerts.
    let mut fresh = ew.ws("?type=alert&device=flood");
    tx.line("flood,x,555");
    let a = fresh.wait_for(Duration::from_secs(10), "alert after the flood", |m| {
        m["type"] == "alert" && m["value"] == 555.0
    });
    assert_eq!(a["state"], "firing");
    assert_eq!(a["device"], "flood");
    drop(stalled);
}

#[test]
fn check_accepts_shipped_configs_and_locates_errors() {
    for f in ["config/demo.toml", "config/bench-tcp.toml"] {
        let out = std::process::Command::new(common::BIN)
            .args(["check", "--config", f])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .expect("run check");
        assert!(
            out.status.success(),
            "{f}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("ok"));
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "node_id = \"n\"\n\n[template.t]\ndetectors = [\n  { type = \"zscore\", treshold = 3.0 },\n]\n",
    )
    .expect("write");
    let out = std::process::Command::new(common::BIN)
        .args(["check", "--config"])
        .arg(&bad)
        .output()
        .expect("run check");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let expect = format!("{}:5:22: unknown field `treshold`", bad.display());
    assert!(err.contains(&expect), "{err}");
    assert!(err.contains("template.t.detectors[0]"), "{err}");
}
