//! Running as a systemd service, against the real binary: sd_notify READY/WATCHDOG/RELOADING/
//! STOPPING on a real notify socket, and config reload on SIGHUP (sources added, state kept, bad file rejected).

mod common;

use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{write_config, Edgewatch, Sender};
use serde_json::Value;

const T0: i64 = 1_763_000_000_000;

fn line(device: &str, i: i64, value: f64) -> String {
    format!(
        r#"{{"device":"{device}","metric":"m","ts":{},"value":{value}}}"#,
        T0 + i * 1000
    )
}

fn total(v: &Value, device: &str) -> u64 {
    v.as_array()
        .and_then(|l| l.iter().find(|d| d["device"] == device))
        .and_then(|d| d["metrics"][0]["total"].as_u64())
        .unwrap_or(0)
}

fn hup(ew: &Edgewatch) {
    let st = Command::new("kill")
        .args(["-HUP", &ew.pid().to_string()])
        .status()
        .expect("kill -HUP");
    assert!(st.success());
}

const SOURCE_A: &str = r#"
[[source]]
id = "a"
kind = "tcp"
listen = "127.0.0.1:0"
format = "json"
"#;

const SOURCE_B: &str = r#"
[[source]]
id = "b"
kind = "tcp"
listen = "127.0.0.1:0"
format = "json"
"#;

fn body(template_window: usize, sources: &str, devices: &str) -> String {
    format!(
        r#"
summary_interval = "500ms"
persist_interval = "1h"

[unknown_devices]
policy = "register"
template = "t"

[template.t]
window = 100
detectors = [{{ type = "zscore", window = 50, threshold = 6.0, warmup = 20 }}]

[template.other]
window = {template_window}

{devices}
{sources}
"#
    )
}

#[test]
fn sighup_reloads_sources_and_devices_keeps_state_and_rejects_a_bad_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let devices = "[[device]]\nid = \"kept\"\ntemplate = \"t\"\n\n[[device]]\nid = \"changed\"\ntemplate = \"other\"\n";
    let cfg = write_config(dir.path(), &body(10, SOURCE_A, devices));
    let mut ew = Edgewatch::start(&cfg);
    let a_addr = ew.tcp_addr("a");
    let mut a = Sender::connect(&a_addr);
    for i in 0..30 {
        a.line(&line("kept", i, 20.0 + (i % 3) as f64));
        a.line(&line("changed", i, 1.0));
        a.line(&line("registered", i, 5.0));
    }
    ew.poll("/api/devices", Duration::from_secs(10), |d| {
        total(d, "kept") == 30 && total(d, "changed") == 30 && total(d, "registered") == 30
    });

    // New source b, a device added, the "other" template changed (window 10 → 20).
    let devices2 =
        format!("{devices}\n[[device]]\nid = \"added\"\ntemplate = \"t\"\nsource = \"b\"\n");
    let cfg2 = write_config(
        dir.path(),
        &body(20, &format!("{SOURCE_A}{SOURCE_B}"), &devices2),
    );
    assert_eq!(cfg, cfg2);
    hup(&ew);
    let done = ew.wait_log("config reloaded", Duration::from_secs(10));
    assert!(done.contains("sources_started=1"), "{done}");
    assert!(done.contains("sources_kept=1"), "{done}");
    let b_addr = ew.tcp_addr("b");
    let mut b = Sender::connect(&b_addr);
    for i in 0..5 {
        b.line(&line("added", i, 1.0));
    }
    // Source a was kept: the very same connection still delivers.
    a.line(&line("kept", 30, 21.0));
    let d = ew.poll("/api/devices", Duration::from_secs(10), |d| {
        total(d, "added") == 5 && total(d, "kept") == 31
    });
    assert_eq!(
        total(&d, "registered"),
        30,
        "registered device kept its state"
    );
    assert_eq!(total(&d, "changed"), 30, "totals survive a policy change");
    let changed = d
        .as_array()
        .and_then(|l| l.iter().find(|x| x["device"] == "changed"))
        .cloned()
        .expect("changed device");
    assert_eq!(
        changed["metrics"][0]["window"], 0,
        "a changed window starts fresh: {changed}"
    );
    let kept = d
        .as_array()
        .and_then(|l| l.iter().find(|x| x["device"] == "kept"))
        .cloned()
        .expect("kept device");
    assert_eq!(
        kept["metrics"][0]["window"], 31,
        "unchanged policy keeps its window: {kept}"
    );
    let status = ew.get("/api/status");
    let ids: Vec<&str> = status["sources"]
        .as_array()
        .expect("sources")
        .iter()
        .filter_map(|s| s["id"].as_str())
        .collect();
    assert_eq!(ids, ["a", "b"]);

    // A broken file is rejected with its location; the running config stays.
    std::fs::write(
        &cfg,
        std::fs::read_to_string(&cfg)
            .expect("read")
            .replace("window = 20", "windw = 20"),
    )
    .expect("write");
    hup(&ew);
    let err = ew.wait_log("config reload rejected", Duration::from_secs(10));
    assert!(err.contains(&format!("{}:", cfg.display())), "{err}");
    assert!(err.contains("windw"), "{err}");
    b.line(&line("added", 5, 1.0));
    ew.poll("/api/devices", Duration::from_secs(10), |d| {
        total(d, "added") == 6
    });

    // Removing source b stops it: its port is closed.
    let cfg3 = write_config(dir.path(), &body(20, SOURCE_A, devices));
    assert_eq!(cfg, cfg3);
    hup(&ew);
    let end = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(&b_addr).is_ok() {
        assert!(
            Instant::now() < end,
            "source b still listening after removal"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (st, log) = ew.terminate();
    assert!(st.success(), "{log}");
}

/// Reads notify datagrams until one contains `needle`, returns everything received so far.
fn recv_until(sock: &UnixDatagram, needle: &str, timeout: Duration, seen: &mut Vec<String>) {
    let end = Instant::now() + timeout;
    let mut buf = [0u8; 4096];
    while !seen.iter().any(|m| m.contains(needle)) {
        let left = end.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "no {needle:?} from edgewatch; got {seen:?}"
        );
        sock.set_read_timeout(Some(left)).expect("timeout");
        if let Ok(n) = sock.recv(&mut buf) {
            seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
}

#[test]
fn sd_notify_ready_after_startup_watchdog_pings_reload_and_stop() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = write_config(dir.path(), &body(10, SOURCE_A, ""));
    let path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).expect("bind notify socket");
    let path_s = path.display().to_string();
    // WatchdogSec=900ms: keep-alives every 450 ms.
    let mut ew = Edgewatch::start_with_env(
        &cfg,
        &[
            ("NOTIFY_SOCKET", path_s.as_str()),
            ("WATCHDOG_USEC", "900000"),
        ],
    );
    let mut seen = Vec::new();
    recv_until(&sock, "READY=1", Duration::from_secs(15), &mut seen);
    let ready = seen.iter().find(|m| m.contains("READY=1")).expect("ready");
    assert!(ready.contains("STATUS=running: 1 sources up"), "{ready}");
    // READY means usable: the source is listening and the API answers.
    let addr = ew.tcp_addr("a");
    Sender::connect(&addr).line(&line("x", 0, 1.0));
    assert_eq!(ew.get("/api/status")["sources"][0]["healthy"], true);

    seen.clear();
    let t = Instant::now();
    recv_until(&sock, "WATCHDOG=1", Duration::from_secs(5), &mut seen);
    seen.clear();
    recv_until(&sock, "WATCHDOG=1", Duration::from_secs(5), &mut seen);
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "keep-alives come every WatchdogSec/2"
    );
    assert!(ew.log_text().contains("systemd watchdog enabled"));

    seen.clear();
    hup(&ew);
    recv_until(&sock, "RELOADING=1", Duration::from_secs(10), &mut seen);
    recv_until(&sock, "READY=1", Duration::from_secs(10), &mut seen);
    let reloading = seen
        .iter()
        .find(|m| m.contains("RELOADING=1"))
        .expect("reloading");
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading}");

    seen.clear();
    let pid = ew.pid().to_string();
    Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    recv_until(&sock, "STOPPING=1", Duration::from_secs(10), &mut seen);
    let (st, log) = ew.terminate();
    assert!(st.success(), "{log}");
}
