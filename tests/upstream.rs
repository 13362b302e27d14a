//! Upstream store-and-forward against a real WebSocket receiver: acking, outage and return,
//! a connection dropped mid-batch, a slow receiver, kill -9 during an outage, the disk budget.
//! Also `edgewatch tail` against a running appliance.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use common::receiver::{of_type, Behaviour, Receiver};
use common::{write_config, Edgewatch, InProcess, Sender};
use serde_json::Value;

/// Every sample flips a threshold detector: one alert message per sample (firing, resolved, ...).
fn config(upstream_url: &str, extra_upstream: &str) -> String {
    format!(
        r#"
summary_interval = "200ms"
persist_interval = "1s"

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

[upstream]
url = "{upstream_url}"
summary_interval = "200ms"
ping_interval = "1s"
pong_timeout = "1s"
backoff_min = "50ms"
backoff_max = "300ms"
{extra_upstream}
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

fn seqs(msgs: &[&Value]) -> Vec<u64> {
    msgs.iter()
        .map(|m| m["seq"].as_u64().expect("seq"))
        .collect()
}

fn strictly_increasing(v: &[u64]) -> bool {
    v.windows(2).all(|w| w[0] < w[1])
}

fn upstream_status(api: &str) -> Value {
    common::get_json(&format!("http://{api}/api/status"))["upstream"].clone()
}

/// Alerts per connection must arrive in seq order; across connections a resend may repeat.
fn assert_ordered_per_connection(log: &[(usize, Value)]) {
    let mut by_conn: HashMap<usize, Vec<u64>> = HashMap::new();
    let mut sums: HashMap<usize, Vec<u64>> = HashMap::new();
    for (c, v) in log {
        match v["type"].as_str() {
            Some("alert") | Some("gap") => by_conn
                .entry(*c)
                .or_default()
                .push(v["seq"].as_u64().expect("seq")),
            Some("summary") => sums
                .entry(*c)
                .or_default()
                .push(v["seq"].as_u64().expect("seq")),
            _ => {}
        }
    }
    for (c, s) in by_conn.iter().chain(sums.iter()) {
        assert!(strictly_increasing(s), "connection {c}: out of order {s:?}");
    }
}

#[test]
fn acking_receiver_gets_every_alert_once_in_order_and_the_outbox_empties() {
    let rx = Receiver::start("127.0.0.1:0", Behaviour::default());
    let dir = tempfile::tempdir().expect("tmp");
    let mut ew = InProcess::start(&write_config(dir.path(), &config(&rx.url(), "")));
    let mut tx = Sender::connect(&ew.tcp_addr("tcp"));
    flip(&mut tx, "d1", 200);
    rx.wait(Duration::from_secs(20), "200 alerts", |l| {
        of_type(l, "alert").len() >= 200
    });
    rx.wait(Duration::from_secs(5), "a summary", |l| {
        !of_type(l, "summary").is_empty()
    });
    let log = rx.messages();
    let hello = &log[0].1;
    assert_eq!(hello["type"], "hello");
    assert_eq!(hello["node"], "test");
    assert_eq!(hello["v"], 1);
    let alerts = of_type(&log, "alert");
    assert_eq!(alerts.len(), 200, "each alert exactly once");
    assert!(strictly_increasing(&seqs(&alerts)));
    assert_eq!(alerts[0]["state"], "firing");
    assert_eq!(alerts[1]["state"], "resolved");
    assert_eq!(alerts[0]["id"], alerts[1]["id"]);
    let summary = of_type(&log, "summary")[0];
    assert_eq!(summary["devices"][0]["device"], "d1");
    assert!(summary["seq"].as_u64().is_some());
    // The outbox count drops as each ack is applied, the `acked` counter right after it: wait for
    // both (polling only the first raced the counter once).
    ew.poll("/api/status", Duration::from_secs(10), |s| {
        s["upstream"]["outbox_alerts"] == 0
            && s["upstream"]["connected"] == true
            && s["upstream"]["acked"].as_u64() >= Some(200)
    });
    assert_ordered_per_connection(&log);
}

#[test]
fn alerts_raised_while_the_receiver_is_down_arrive_when_it_is_back() {
    // A free port with nobody listening yet.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let url = format!("ws://127.0.0.1:{port}");
    let dir = tempfile::tempdir().expect("tmp");
    let mut ew = InProcess::start(&write_config(dir.path(), &config(&url, "")));
    let mut tx = Sender::connect(&ew.tcp_addr("tcp"));
    flip(&mut tx, "down", 50);
    ew.poll("/api/status", Duration::from_secs(10), |s| {
        s["upstream"]["outbox_alerts"] == 50
    });
    std::thread::sleep(Duration::from_millis(500)); // a few reconnect attempts fail meanwhile
    assert_eq!(upstream_status(&ew.api)["connected"], false);
    let rx = Receiver::start(&format!("127.0.0.1:{port}"), Behaviour::default());
    rx.wait(Duration::from_secs(15), "50 alerts", |l| {
        of_type(l, "alert").len() >= 50
    });
    let log = rx.messages();
    let alerts = of_type(&log, "alert");
    assert_eq!(alerts.len(), 50);
    assert!(strictly_increasing(&seqs(&alerts)));
    assert_eq!(
        log[0].1["first_unacked"], alerts[0]["seq"],
        "hello names the first unacknowledged seq"
    );
    // Alerts go before summaries that were queued earlier.
    let first_summary = log.iter().position(|(_, v)| v["type"] == "summary");
    let last_alert = log.iter().rposition(|(_, v)| v["type"] == "alert");
    if let (Some(s), Some(a)) = (first_summary, last_alert) {
        assert!(a < s, "all queued alerts before any summary");
    }
    ew.poll("/api/status", Duration::from_secs(10), |s| {
        s["upstream"]["outbox_alerts"] == 0
    });
}

#[test]
fn a_connection_dropped_mid_batch_resumes_from_the_first_unacknowledged() {
    let b = Behaviour {
        ack_first: Some(20),
        drop_after: Some(30),
        ..Behaviour::default()
    };
    let rx = Receiver::start("127.0.0.1:0", b);
    let dir = tempfile::tempdir().expect("tmp");
    let mut ew = InProcess::start(&write_config(dir.path(), &config(&rx.url(), "")));
    let mut tx = Sender::connect(&ew.tcp_addr("tcp"));
    flip(&mut tx, "mid", 100);
    rx.wait(Duration::from_secs(20), "all 100 alerts", |l| {
        of_type(l, "alert")
            .iter()
            .map(|a| a["seq"].as_u64())
            .collect::<BTreeSet<_>>()
            .len()
            >= 100
    });
    let log = rx.messages();
    assert!(log.iter().any(|(c, _)| *c >= 2), "edgewatch reconnected");
    let first: Vec<u64> = log
        .iter()
        .filter(|(c, v)| *c == 1 && v["type"] != "hello")
        .map(|(_, v)| v["seq"].as_u64().expect("seq"))
        .collect();
    // The receiver drops the connection with data unread, so TCP resets it and acks still in
    // flight can be lost with it: repeats are allowed, but only of what the first connection
    // carried, and the second connection resumes exactly where the appliance's outbox stands.
    let carried: BTreeSet<u64> = first.iter().copied().collect();
    let later: Vec<u64> = log
        .iter()
        .filter(|(c, v)| *c >= 2 && v["type"] == "alert")
        .map(|(_, v)| v["seq"].as_u64().expect("seq"))
        .collect();
    let hello2 = log
        .iter()
        .find(|(c, v)| *c == 2 && v["type"] == "hello")
        .expect("second hello");
    let first_unacked = hello2.1["first_unacked"].as_u64().expect("first_unacked");
    assert_eq!(
        later.first().copied(),
        Some(first_unacked),
        "resumes from the first unacknowledged"
    );
    let mut seen = BTreeSet::new();
    for (c, v) in &log {
        if let Some(seq) = v["seq"].as_u64().filter(|_| v["type"] == "alert") {
            assert!(
                seen.insert(seq) || (*c >= 2 && carried.contains(&seq)),
                "seq {seq} repeated without a reconnect"
            );
        }
    }
    assert_ordered_per_connection(&log);
}

#[test]
fn a_slow_receiver_never_slows_analysis() {
    let b = Behaviour {
        delay: Duration::from_millis(5),
        ..Behaviour::default()
    };
    let rx = Receiver::start("127.0.0.1:0", b);
    let dir = tempfile::tempdir().expect("tmp");
    let mut ew = InProcess::start(&write_config(dir.path(), &config(&rx.url(), "window = 32")));
    let mut tx = Sender::connect(&ew.tcp_addr("tcp"));
    flip(&mut tx, "slow", 2000);
    // Analysis finishes long before delivery (2000 messages at 5 ms each take 10 s).
    let st = ew.poll("/api/status", Duration::from_secs(5), |s| {
        s["analysis"]["samples"] == 2000 && s["upstream"]["last_seq"].as_u64() >= Some(2000)
    });
    assert!(
        st["upstream"]["outbox_alerts"].as_u64().expect("n") > 500,
        "still queued: {st}"
    );
    rx.wait(Duration::from_secs(60), "every alert", |l| {
        of_type(l, "alert").len() >= 2000
    });
    let log = rx.messages();
    assert_eq!(of_type(&log, "alert").len(), 2000);
    assert_ordered_per_connection(&log);
}

#[test]
fn kill_9_during_an_outage_loses_no_alert() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = write_config(dir.path(), &config(&format!("ws://127.0.0.1:{port}"), ""));
    let mut ew = Edgewatch::start(&cfg);
    let mut tx = Sender::connect(&ew.tcp_addr("tcp"));
    flip(&mut tx, "crash", 40);
    // Accepted = durable in the outbox.
    let st = ew.poll("/api/status", Duration::from_secs(10), |s| {
        s["upstream"]["outbox_alerts"] == 40
            && s["upstream"]["durable_seq"] == s["upstream"]["last_seq"]
    });
    let last_seq = st["upstream"]["last_seq"].as_u64().expect("seq");
    drop(tx);
    ew.kill9();
    let ew = Edgewatch::start(&cfg);
    assert_eq!(
        upstream_status(&ew.api)["outbox_alerts"],
        40,
        "the outbox survived kill -9"
    );
    let rx = Receiver::start(&format!("127.0.0.1:{port}"), Behaviour::default());
    rx.wait(Duration::from_secs(15), "40 alerts", |l| {
        of_type(l, "alert").len() >= 40
    });
    let log = rx.messages();
    let alerts = of_type(&log, "alert");
    assert_eq!(alerts.len(), 40);
    assert!(strictly_increasing(&seqs(&alerts)));
    assert!(seqs(&alerts).iter().all(|s| *s <= last_seq));
    ew.poll("/api/status", Duration::from_secs(10), |s| {
        s["upstream"]["outbox_alerts"] == 0
    });
    // New messages continue the sequence: no seq is reused after the restart.
    let mut ew = ew;
    let mut tx = Sender::connect(&ew.tcp_addr("tcp"));
    flip(&mut tx, "after", 2);
    rx.wait(Duration::from_secs(10), "2 more alerts", |l| {
        of_type(l, "alert").len() >= 42
    });
    let log = rx.messages();
    let after = of_type(&log, "alert");
    assert!(
        after[40..]
            .iter()
            .all(|a| a["seq"].as_u64() > Some(last_seq)),
        "fresh seqs after restart"
    );
}

#[test]
fn the_disk_budget_keeps_alerts_over_summaries_and_reports_gaps() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let dir = tempfile::tempdir().expect("tmp");
    let budget = "[upstream.budget]\nmax_bytes = 65536\nalert_max_bytes = 16384\n";
    let cfg = write_config(
        dir.path(),
        &config(&format!("ws://127.0.0.1:{port}"), budget),
    );
    let mut ew = InProcess::start(&cfg);
    let mut tx = Sender::connect(&ew.tcp_addr("tcp"));
    // Phase 1: 20 alerts, then summaries of 60 device metrics every 200 ms overflow the budget.
    flip(&mut tx, "keep", 20);
    let mut noise = String::new();
    for d in 0..60 {
        noise.push_str(&format!("noise-{d:02},x,1\n"));
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        tx.send(noise.as_bytes());
        let up = upstream_status(&ew.api);
        if up["dropped"].as_u64() > Some(0) {
            assert!(
                up["outbox_alerts"].as_u64() >= Some(20),
                "every alert kept while summaries go: {up}"
            );
            assert!(up["outbox_bytes"].as_u64() <= Some(65536 + 4096), "{up}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "budget never reached: {up}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Phase 2: 300 more alerts overflow the alert cap: the oldest alerts go.
    flip(&mut tx, "burst", 300);
    ew.poll("/api/status", Duration::from_secs(20), |s| {
        s["analysis"]["samples"].as_u64() >= Some(320)
    });
    // The outage scenario: the alert cap is applied before the receiver returns (every alert is
    // durable and the budget pass has run). Dropping during delivery is another case (see notes).
    ew.poll("/api/status", Duration::from_secs(20), |s| {
        let up = &s["upstream"];
        up["durable_seq"] == up["last_seq"] && up["outbox_alert_bytes"].as_u64() <= Some(16384)
    });
    let rx = Receiver::start(&format!("127.0.0.1:{port}"), Behaviour::default());
    ew.poll("/api/status", Duration::from_secs(20), |s| {
        s["upstream"]["outbox_alerts"] == 0 && s["upstream"]["outbox_summaries"] == 0
    });
    let log = rx.messages();
    let gaps = of_type(&log, "gap");
    let alert_gaps: Vec<&&Value> = gaps.iter().filter(|g| g["lane"] == "alert").collect();
    assert!(
        gaps.iter().any(|g| g["lane"] == "summary"),
        "summaries dropped first: {gaps:?}"
    );
    assert!(
        !alert_gaps.is_empty(),
        "then the oldest alerts, with a gap notice: {gaps:?}"
    );
    let alerts = of_type(&log, "alert");
    let received: Vec<u64> = seqs(&alerts);
    let lost: u64 = alert_gaps
        .iter()
        .map(|g| g["count"].as_u64().expect("count"))
        .sum();
    let conns: BTreeSet<usize> = log.iter().map(|(c, _)| *c).collect();
    let unique: BTreeSet<u64> = received.iter().copied().collect();
    assert_eq!(
        received.len() as u64 + lost,
        320,
        "every alert is either delivered or reported lost (connections {conns:?}, unique {}, gaps {alert_gaps:?}, detectors {:?})",
        unique.len(),
        alerts.iter().map(|a| (a["device"].as_str().unwrap_or("").to_string(), a["detector"].as_str().unwrap_or("").to_string())).collect::<BTreeSet<_>>()
    );
    for g in &alert_gaps {
        let (from, to) = (
            g["from"].as_u64().expect("from"),
            g["to"].as_u64().expect("to"),
        );
        assert!(from <= to && g["count"].as_u64() >= Some(1));
        assert!(
            received.iter().all(|s| *s < from || *s > to),
            "nothing inside a reported gap was delivered"
        );
        assert_eq!(g["reason"], "alert_max_bytes");
    }
    // The newest alerts survive.
    assert_eq!(
        alerts.last().map(|a| a["device"].clone()),
        Some(Value::from("burst"))
    );
    assert_ordered_per_connection(&log);
}

#[test]
fn tail_prints_one_line_per_event() {
    let dir = tempfile::tempdir().expect("tmp");
    let body = config("ws://127.0.0.1:9", "")
        .split("[upstream]")
        .next()
        .expect("cfg")
        .to_string();
    let mut ew = Edgewatch::start(&write_config(dir.path(), &body));
    let mut tx = Sender::connect(&ew.tcp_addr("tcp"));
    let child = std::process::Command::new(common::BIN)
        .args([
            "tail",
            &format!("ws://{}", ew.api),
            "--type",
            "alert",
            "--device",
            "t1",
            "--count",
            "2",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("tail");
    std::thread::sleep(Duration::from_millis(500));
    flip(&mut tx, "other", 2);
    flip(&mut tx, "t1", 2);
    let out = child.wait_with_output().expect("tail output");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines[0].contains(" FIRING ") && lines[0].contains("t1/x threshold value=100"),
        "{text}"
    );
    assert!(
        lines[1].contains(" RESOLVED ") && lines[1].contains("t1/x"),
        "{text}"
    );
    assert!(
        !text.contains('\u{1b}'),
        "no colour codes when not on a terminal"
    );
}

/// Every (receiver, message) with a seq; checks that one seq never carries two contents.
fn by_seq<'a>(logs: &[&'a [(usize, Value)]]) -> std::collections::BTreeMap<u64, &'a Value> {
    let mut out = std::collections::BTreeMap::new();
    for log in logs {
        for (_, v) in log.iter() {
            let Some(seq) = v["seq"].as_u64() else {
                continue;
            };
            if let Some(before) = out.insert(seq, v) {
                assert_eq!(before, v, "seq {seq} arrived with two contents");
            }
        }
    }
    out
}

/// Two real receivers: the primary goes down, the secondary gets everything from the first
/// unacknowledged seq; the primary comes back, the appliance returns to it. Across both, every
/// seq from 1 to the last arrives (nothing lost), and none arrives with two contents.
#[test]
fn failover_to_the_secondary_and_back_to_the_primary_loses_and_reuses_no_seq() {
    let primary_addr = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    // The primary acks its first 20 messages only, then dies: what it got after is unacked.
    let stalls = Behaviour {
        ack_first: Some(20),
        ..Behaviour::default()
    };
    let primary = Receiver::start(&primary_addr.to_string(), stalls);
    let secondary = Receiver::start("127.0.0.1:0", Behaviour::default());
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = config(
        "unused",
        "failback_interval = \"1s\"\nconnect_timeout = \"1s\"",
    )
    .replace(
        "url = \"unused\"",
        &format!("urls = [\"{}\", \"{}\"]", primary.url(), secondary.url()),
    );
    let mut ew = InProcess::start(&write_config(dir.path(), &cfg));
    let mut tx = Sender::connect(&ew.tcp_addr("tcp"));

    // 1. Both up: the primary gets everything (and stops acking after 20 messages).
    flip(&mut tx, "f", 30);
    primary.wait(Duration::from_secs(20), "30 alerts", |l| {
        of_type(l, "alert").len() >= 30
    });
    let st = ew.poll("/api/status", Duration::from_secs(10), |s| {
        s["upstream"]["acked"].as_u64() >= Some(20)
    });
    assert!(st["upstream"]["outbox_alerts"].as_u64() > Some(0), "{st}");
    assert!(secondary.messages().is_empty(), "the secondary is idle");
    let before = primary.messages();
    primary.stop();

    // 2. The primary is down: the secondary gets everything from the first unacknowledged seq.
    flip(&mut tx, "f", 20);
    secondary.wait(Duration::from_secs(20), "the 20 alerts raised since", |l| {
        of_type(l, "alert").len() >= 20
    });
    let st = ew.poll("/api/status", Duration::from_secs(10), |s| {
        s["upstream"]["outbox_alerts"] == 0
    });
    assert!(
        st["upstream"]["url"]
            .as_str()
            .is_some_and(|u| u == secondary.url()),
        "status names the receiver in use: {st}"
    );
    let on_secondary = secondary.messages();
    let hello = &on_secondary[0].1;
    assert_eq!(hello["type"], "hello");
    let first_sent = on_secondary
        .iter()
        .find_map(|(_, v)| v["seq"].as_u64())
        .expect("a message with a seq");
    assert_eq!(
        hello["first_unacked"].as_u64(),
        Some(first_sent),
        "the secondary's hello names where its stream starts: {hello}"
    );
    let max_before = before.iter().filter_map(|(_, v)| v["seq"].as_u64()).max();
    assert!(
        Some(first_sent) <= max_before,
        "what the primary got and never acked is sent to the secondary: {hello}"
    );

    // 3. The primary is back: the appliance returns to it (probed every second).
    let primary = Receiver::start(&primary_addr.to_string(), Behaviour::default());
    primary.wait(Duration::from_secs(15), "a hello after failback", |l| {
        !of_type(l, "hello").is_empty()
    });
    flip(&mut tx, "f", 20);
    primary.wait(
        Duration::from_secs(20),
        "the 20 alerts raised after failback",
        |l| of_type(l, "alert").len() >= 20,
    );
    let st = ew.poll("/api/status", Duration::from_secs(10), |s| {
        s["upstream"]["outbox_alerts"] == 0 && s["upstream"]["outbox_summaries"] == 0
    });
    let after = primary.messages();
    let secondary_alerts = of_type(&secondary.messages(), "alert").len();
    let hello = &after[0].1;
    assert_eq!(hello["type"], "hello");
    // Nothing is unacknowledged (null) or it starts after what the primary saw before; `last_seq`
    // covers what the secondary got meanwhile.
    let max_secondary = secondary
        .messages()
        .iter()
        .filter_map(|(_, v)| v["seq"].as_u64())
        .max();
    assert!(
        hello["first_unacked"].is_null() || hello["first_unacked"].as_u64() > max_before,
        "the returning primary's hello skips what the secondary acknowledged: {hello}"
    );
    assert!(hello["last_seq"].as_u64() >= max_secondary, "{hello}");

    // Across the three streams: every seq from 1 to the last, each with one content.
    let secondary_log = secondary.messages();
    let all = by_seq(&[&before, &secondary_log, &after]);
    let last = st["upstream"]["last_seq"].as_u64().expect("last_seq");
    let missing: Vec<u64> = (1..=last).filter(|s| !all.contains_key(s)).collect();
    assert!(missing.is_empty(), "seqs lost in failover: {missing:?}");
    let alerts = all.values().filter(|v| v["type"] == "alert").count();
    assert_eq!(alerts, 70, "every alert once per seq");
    assert!(secondary_alerts >= 20);
    for log in [&before, &secondary_log, &after] {
        assert_ordered_per_connection(log);
    }
}
