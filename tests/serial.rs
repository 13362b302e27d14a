//! Serial sources end to end, over real pseudo-terminal pairs: lines in, samples and alerts out;
//! garbage and overlong lines; unplugging and re-plugging under another name behind the same
//! symlink; a sensor that answers only when polled, framed by silence.

mod common;

use std::time::{Duration, Instant};

use common::pty::{relink, Pty};
use common::{write_config, Edgewatch};
use serde_json::Value;

fn metric<'a>(devices: &'a Value, device: &str, metric: &str) -> Option<&'a Value> {
    devices.as_array()?.iter().find(|d| d["device"] == device)?["metrics"]
        .as_array()?
        .iter()
        .find(|m| m["metric"] == metric)
}

fn source<'a>(status: &'a Value, id: &str) -> &'a Value {
    status["sources"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["id"] == id))
        .unwrap_or_else(|| panic!("no source {id} in {status}"))
}

fn wait_healthy(ew: &Edgewatch, id: &str, healthy: bool) -> Value {
    let id = id.to_string();
    ew.poll("/api/status", Duration::from_secs(10), move |s| {
        source(s, &id)["healthy"] == healthy
    })
}

#[test]
fn serial_lines_become_samples_and_alerts_and_garbage_is_counted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut bench = Pty::new();
    let mut probe = Pty::new();
    let body = format!(
        r#"
summary_interval = "500ms"

[[source]]
id = "bench"
kind = "serial"
path = "{bench}"
baud = 115200
format = "columns"
columns = ["temp", "humidity"]
device = "bench-1"
max_frame = 64

[[source]]
id = "probe"
kind = "serial"
path = "{probe}"
baud = 9600
parity = "even"
stop_bits = 2
format = "kv"
device = "probe-2"
delimiter = "\r"

[[device]]
id = "bench-1"
source = "bench"
[device.metrics.temp]
detectors = [{{ type = "threshold", max = 30.0, hold = "0s" }}]

[[device]]
id = "probe-2"
source = "probe"
"#,
        bench = bench.path,
        probe = probe.path
    );
    let cfg = write_config(dir.path(), &body);
    let ew = Edgewatch::start(&cfg);
    wait_healthy(&ew, "bench", true);
    wait_healthy(&ew, "probe", true);
    let mut ws = ew.ws("?type=alert");

    for i in 0..20 {
        bench.line(&format!(
            "{:.1},{:.1}",
            20.0 + f64::from(i % 5) * 0.5,
            45.0 + f64::from(i)
        ));
    }
    // Garbage: binary noise, an overlong line, a wrong field count, a non-number.
    bench.send(b"\x00\xff\xfe\x01garbage\n");
    bench.send(format!("{}\n", "9".repeat(200)).as_bytes());
    bench.send(b"1,2,3\n");
    bench.send(b"23.5,abc\n");
    // Still reading: a hot reading raises the alert.
    bench.send(b"35.0,40.0\r\n");
    let alert = ws.wait_for(Duration::from_secs(10), "threshold alert", |m| {
        m["type"] == "alert" && m["device"] == "bench-1"
    });
    assert_eq!(alert["metric"], "temp");
    assert_eq!(alert["value"], 35.0);
    assert_eq!(alert["state"], "firing");

    // Custom delimiter "\r", with a frame cut across two writes.
    probe.send(b"t=1.5 rh=30\rt=1.");
    std::thread::sleep(Duration::from_millis(50));
    probe.send(b"75 rh=31\r");

    let status = ew.poll("/api/status", Duration::from_secs(10), |s| {
        source(s, "bench")["frames_accepted"] == 21 && source(s, "probe")["frames_accepted"] == 2
    });
    let b = source(&status, "bench");
    assert_eq!(b["frames_rejected"], 4, "{status}");
    assert_eq!(b["samples"], 42, "{status}");
    assert_eq!(b["kind"], "serial");
    assert_eq!(b["connections"], 1);
    assert_eq!(source(&status, "probe")["frames_rejected"], 0, "{status}");

    let devices = ew.poll("/api/devices", Duration::from_secs(5), |d| {
        metric(d, "probe-2", "rh").is_some_and(|m| m["total"] == 2)
            && metric(d, "bench-1", "humidity").is_some_and(|m| m["total"] == 21)
    });
    let h = metric(&devices, "bench-1", "humidity").expect("humidity");
    assert_eq!(h["last_value"], 40.0);
    assert_eq!(h["max"], 64.0);
    assert_eq!(
        metric(&devices, "probe-2", "t").expect("t")["last_value"],
        1.75
    );
    let log = ew.log_text();
    assert!(log.contains("bad frame skipped"), "{log}");
    assert!(log.contains("line longer than 64 bytes"), "{log}");
    assert!(
        log.contains("expected 2 fields (one per configured column), got 3"),
        "{log}"
    );
}

#[test]
fn unplug_goes_unhealthy_fires_silence_and_replug_under_a_new_name_recovers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let link = dir.path().join("ttyUSB-sensor");
    let mut first = Pty::new();
    relink(&first.path, &link);
    let body = format!(
        r#"
[[source]]
id = "usb"
kind = "serial"
path = "{}"
format = "kv"
device = "plug-1"
backoff_min = "50ms"
backoff_max = "400ms"

[[device]]
id = "plug-1"
source = "usb"
[device.metrics.temp]
detectors = [{{ type = "silence", after = "1s", hold = "0s", severity = "critical" }}]
"#,
        link.display()
    );
    let cfg = write_config(dir.path(), &body);
    let mut ew = Edgewatch::start(&cfg);
    wait_healthy(&ew, "usb", true);
    let mut ws = ew.ws("?type=alert&device=plug-1");
    for i in 0..10 {
        first.line(&format!("temp={}", 20 + i));
    }
    ew.poll("/api/devices", Duration::from_secs(10), |d| {
        metric(d, "plug-1", "temp").is_some_and(|m| m["total"] == 10)
    });

    // The replacement is allocated while the first still exists, so it gets another name.
    let mut second = Pty::new();
    assert_ne!(second.path, first.path);
    // A frame cut off by the unplug must be dropped, not glued to the next one.
    first.send(b"temp=9");
    std::thread::sleep(Duration::from_millis(100));
    let unplugged = Instant::now();
    drop(first);
    std::fs::remove_file(&link).expect("remove link");

    let status = wait_healthy(&ew, "usb", false);
    let detect = unplugged.elapsed();
    let src = source(&status, "usb");
    assert_eq!(src["connections"], 0, "{status}");
    // The loss is reported with its cause, noticed by the read itself (hang-up), not only by the
    // once-a-second node check. (`last_error` may already show a failed reopen, so read the log.)
    let lost = ew.wait_log("serial port lost", Duration::from_secs(5));
    assert!(
        lost.contains("end of file") || lost.contains("Input/output error"),
        "{lost}"
    );
    let silence = ws.wait_for(Duration::from_secs(10), "silence alert", |m| {
        m["state"] == "firing"
    });
    let silence_after = unplugged.elapsed();
    assert_eq!(silence["detector"], "silence");
    assert_eq!(silence["metric"], "temp");
    assert_eq!(silence["severity"], "critical");
    ew.wait_log("cannot open serial port", Duration::from_secs(5));
    assert_eq!(
        source(&ew.get("/api/status"), "usb")["frames_rejected"],
        1,
        "the partial frame is counted"
    );

    // Plugged back in: same symlink, another pts node.
    let replugged = Instant::now();
    relink(&second.path, &link);
    let status = ew.poll("/api/status", Duration::from_secs(10), |s| {
        source(s, "usb")["healthy"] == true && source(s, "usb")["connects_total"] == 2
    });
    let reopen = replugged.elapsed();
    assert_eq!(
        source(&status, "usb")["restarts"],
        0,
        "reopened by the source itself"
    );
    second.line("temp=30");
    let resolved = ws.wait_for(Duration::from_secs(10), "silence resolved", |m| {
        m["state"] == "resolved"
    });
    assert_eq!(resolved["id"], silence["id"]);
    assert_eq!(resolved["value"], 30.0);
    let d = ew.poll("/api/devices", Duration::from_secs(10), |d| {
        metric(d, "plug-1", "temp").is_some_and(|m| m["total"] == 11)
    });
    assert_eq!(
        metric(&d, "plug-1", "temp").expect("temp")["last_value"],
        30.0,
        "\"temp=9\" was not glued to \"temp=30\""
    );
    ew.wait_log(&format!("device={}", second.path), Duration::from_secs(5));
    eprintln!(
        "hot-plug: unhealthy {} ms after unplug, silence alert after {} ms, reopened {} ms after replug",
        detect.as_millis(),
        silence_after.as_millis(),
        reopen.as_millis()
    );
}

#[test]
fn polled_sensor_gets_init_and_poll_strings_and_gap_framing_joins_split_answers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut port = Pty::new();
    let body = format!(
        r#"
[[source]]
id = "asked"
kind = "serial"
path = "{}"
format = "kv"
device = "asked-1"
frame_gap = "100ms"
init = "MODE RAW\r\n"
poll = "READ?\r\n"
poll_interval = "300ms"

[unknown_devices]
policy = "register"
"#,
        port.path
    );
    let cfg = write_config(dir.path(), &body);
    let ew = Edgewatch::start(&cfg);
    let got = port.read_until(b"MODE RAW\r\n", Duration::from_secs(10));
    assert!(
        got.starts_with(b"MODE RAW\r\n"),
        "the init string comes first: {:?}",
        String::from_utf8_lossy(&got)
    );
    let started = Instant::now();
    for i in 0..4 {
        port.read_until(b"READ?\r\n", Duration::from_secs(5));
        // The answer arrives in two pieces, 10 ms apart, with no delimiter at all.
        port.send(format!("temp=2{i}.5 hu").as_bytes());
        std::thread::sleep(Duration::from_millis(10));
        port.send(b"m=40");
    }
    let polls = started.elapsed();
    let d = ew.poll("/api/devices", Duration::from_secs(10), |d| {
        metric(d, "asked-1", "hum").is_some_and(|m| m["total"] == 4)
    });
    assert_eq!(
        metric(&d, "asked-1", "temp").expect("temp")["last_value"],
        23.5
    );
    let st = ew.get("/api/status");
    assert_eq!(source(&st, "asked")["frames_accepted"], 4, "{st}");
    assert_eq!(source(&st, "asked")["frames_rejected"], 0, "{st}");
    assert!(
        polls >= Duration::from_millis(800),
        "polls come every 300ms, not faster: 4 in {polls:?}"
    );
}

#[test]
fn check_accepts_the_serial_and_modbus_example_and_locates_errors() {
    let out = std::process::Command::new(common::BIN)
        .args(["check", "--config", "config/serial-modbus.toml"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("rs485            modbus  rtu /dev/ttySC0 9600 baud  2 devices, 5 points"),
        "{stdout}"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "node_id = \"n\"\n[[source]]\nid = \"m\"\nkind = \"modbus\"\nconnect = \"plc:502\"\n\
         [[source.device]]\nid = \"d\"\nunit = 1\npoints = [\n  { metric = \"v\", register = \"holding\", address = 0, type = \"float\" },\n]\n",
    )
    .expect("write");
    let out = std::process::Command::new(common::BIN)
        .args(["check", "--config"])
        .arg(&bad)
        .output()
        .expect("run check");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let expect = format!("{}:10:54: unknown variant `float`", bad.display());
    assert!(err.contains(&expect), "{err}");
    assert!(err.contains("source[0].device[0].points[0].type"), "{err}");
}

#[test]
fn a_repointed_link_is_followed_even_when_the_old_port_stays_open() {
    // Some drivers never report removal; the once-a-second node check must notice the link
    // (as udev's by-id link) now leading to another device.
    let dir = tempfile::tempdir().expect("tempdir");
    let link = dir.path().join("sensor");
    let mut old = Pty::new();
    let mut new = Pty::new();
    relink(&old.path, &link);
    let body = format!(
        "[[source]]\nid = \"s\"\nkind = \"serial\"\npath = \"{}\"\nformat = \"kv\"\ndevice = \"moved\"\n\
         backoff_min = \"50ms\"\nbackoff_max = \"200ms\"\n[unknown_devices]\npolicy = \"register\"\n",
        link.display()
    );
    let cfg = write_config(dir.path(), &body);
    let mut ew = Edgewatch::start(&cfg);
    wait_healthy(&ew, "s", true);
    old.line("v=1");
    ew.poll("/api/devices", Duration::from_secs(10), |d| {
        metric(d, "moved", "v").is_some()
    });
    relink(&new.path, &link);
    let st = ew.poll("/api/status", Duration::from_secs(10), |s| {
        source(s, "s")["connects_total"] == 2 && source(s, "s")["healthy"] == true
    });
    let err = source(&st, "s")["last_error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(err.contains("now points to another device"), "{st}");
    ew.wait_log(&format!("device={}", new.path), Duration::from_secs(5));
    old.line("v=99"); // the old port is no longer read
    new.line("v=2");
    ew.poll("/api/devices", Duration::from_secs(10), |d| {
        metric(d, "moved", "v").is_some_and(|m| m["total"] == 2)
    });
    std::thread::sleep(Duration::from_millis(300));
    let d = ew.get("/api/devices");
    let v = metric(&d, "moved", "v").expect("v");
    assert_eq!(
        (v["total"].as_u64(), v["last_value"].as_f64()),
        (Some(2), Some(2.0)),
        "{d}"
    );
}
