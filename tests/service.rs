//! Running as a systemd service, against the real binary: sd_notify READY/WATCHDOG/RELOADING/
//! STOPPING on a real notify socket, config reload on SIGHUP (sources added, state kept, bad file
//! rejected), and the unit file: serial device allow-list, credentials, systemd-analyze verify/security.

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

fn unit_text() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/systemd/edgewatch.service"
    ))
    .expect("systemd/edgewatch.service")
}

/// Values of every `Key=` line of the unit (comments skipped).
fn unit_values(unit: &str, key: &str) -> Vec<String> {
    let prefix = format!("{key}=");
    unit.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.strip_prefix(&prefix))
        .map(|v| v.trim().to_string())
        .collect()
}

#[test]
fn the_unit_allows_every_serial_driver_a_pi_user_meets() {
    let unit = unit_text();
    assert_eq!(unit_values(&unit, "DevicePolicy"), ["closed"]);
    assert!(
        unit_values(&unit, "PrivateDevices").is_empty(),
        "PrivateDevices hides /dev/tty*"
    );
    let allowed = unit_values(&unit, "DeviceAllow");
    // PL011, 8250/mini-UART, SC16IS7xx SPI/I2C RS-485 hats, usb-serial, CDC-ACM, MAX310x, Exar.
    for driver in [
        "ttyAMA", "ttyS", "ttySC", "ttyUSB", "ttyACM", "ttyMAX", "ttyXRUSB",
    ] {
        let want = format!("char-{driver} rw");
        assert!(
            allowed.contains(&want),
            "DeviceAllow={want} missing: {allowed:?}"
        );
    }
    assert_eq!(unit_values(&unit, "SupplementaryGroups"), ["dialout"]);
}

#[test]
fn the_unit_gives_room_for_the_default_connection_caps() {
    let unit = unit_text();
    let v = unit_values(&unit, "LimitNOFILE");
    let n: u64 = match v.as_slice() {
        [one] => one
            .parse()
            .expect("LimitNOFILE is one number (soft = hard)"),
        other => panic!("LimitNOFILE must be set once: {other:?}"),
    };
    // api.max_connections 128 + one TCP source's max_clients 256 + api.fd_reserve 64 + the ~30
    // open at start, with room for several TCP sources; systemd's own default soft limit is 1024.
    assert!((4096..=65536).contains(&n), "LimitNOFILE={n}");
}

/// The credential names the unit loads (`LoadCredential=NAME`, searched in /etc/credstore/).
fn credentials(unit: &str) -> Vec<String> {
    unit_values(unit, "LoadCredential")
}

#[test]
fn the_unit_loads_the_documented_credentials_from_the_credstore() {
    let unit = unit_text();
    let creds = credentials(&unit);
    for want in [
        "edgewatch.api-token",
        "edgewatch.upstream-token",
        "edgewatch.mqtt-password",
    ] {
        assert!(
            creds.iter().any(|c| c == want),
            "LoadCredential={want}: {creds:?}"
        );
    }
    let config_doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/CONFIG.md"))
            .expect("docs/CONFIG.md");
    for c in &creds {
        // The terse form: a name, no path. A missing credstore file is then skipped, not fatal,
        // so the service starts without secrets.
        assert!(
            !c.contains(':') && !c.contains('/'),
            "LoadCredential={c} should name a credstore entry"
        );
        let reference = format!("${{CREDENTIALS_DIRECTORY:-/etc/credstore}}/{c}");
        assert!(
            config_doc.contains(&reference),
            "docs/CONFIG.md does not show {reference}"
        );
    }
}

#[test]
fn systemd_analyze_verifies_the_unit_and_rates_it_at_most_2() {
    let Ok(out) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("SKIP: systemd-analyze not installed (apt install systemd); cross/ci.sh runs it");
        return;
    };
    assert!(out.status.success());
    let dir = tempfile::tempdir().expect("tempdir");
    let unit = dir.path().join("edgewatch.service");
    // verify wants ExecStart= to exist: point it at the binary under test.
    std::fs::write(
        &unit,
        unit_text().replace("/usr/bin/edgewatch", env!("CARGO_BIN_EXE_edgewatch")),
    )
    .expect("write unit");
    let v = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
        .expect("verify");
    let err = String::from_utf8_lossy(&v.stderr);
    assert!(v.status.success() && err.trim().is_empty(), "verify: {err}");
    let s = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--threshold=20", "--no-pager"])
        .arg(&unit)
        .output()
        .expect("security");
    let text = String::from_utf8_lossy(&s.stdout);
    assert!(s.status.success(), "exposure above 2.0: {text}");
    assert!(text.contains("Overall exposure level"), "{text}");
}

#[test]
fn a_token_from_the_credentials_directory_guards_the_api() {
    // What the service sees: systemd copied /etc/credstore/edgewatch.api-token into
    // $CREDENTIALS_DIRECTORY; the config names it with a fallback for `check` outside the unit.
    let dir = tempfile::tempdir().expect("tempdir");
    let creds = dir.path().join("creds");
    std::fs::create_dir(&creds).expect("mkdir");
    std::fs::write(creds.join("edgewatch.api-token"), "s3cret-from-credstore\n").expect("token");
    let cfg = dir.path().join("edgewatch.toml");
    std::fs::write(
        &cfg,
        format!(
            "node_id = \"t\"\ndata_dir = {:?}\n[api]\nlisten = \"127.0.0.1:0\"\n\
             token_file = \"${{CREDENTIALS_DIRECTORY:-/etc/credstore}}/edgewatch.api-token\"\n",
            dir.path().join("data").display().to_string()
        ),
    )
    .expect("config");
    let creds_s = creds.display().to_string();
    let ew = Edgewatch::start_with_env(&cfg, &[("CREDENTIALS_DIRECTORY", creds_s.as_str())]);
    let (code, _) = ew.get_status("/api/status");
    assert_eq!(code, 401, "no token");
    let url = format!("http://{}/api/status", ew.api);
    let r = ureq::get(&url)
        .set("Authorization", "Bearer s3cret-from-credstore")
        .timeout(Duration::from_secs(10))
        .call()
        .expect("with the credential's token");
    assert_eq!(r.status(), 200);
    let (st, log) = ew.terminate();
    assert!(st.success(), "{log}");
    assert!(!log.contains("s3cret"), "the token is never logged");
}
