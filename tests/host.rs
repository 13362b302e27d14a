//! The host source through the whole appliance, on a prepared Raspberry Pi procfs/sysfs tree:
//! its metrics reach `/api/devices` under the node's name and the shipped detectors of
//! `config/pi.toml` (hot CPU, under-voltage, disk nearly full) raise alerts. Also `edgewatch
//! check` on the shipped configs that use the new sources.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{write_config, InProcess, BIN};

/// A Pi at 85 °C with the under-voltage flag set (`get_throttled` = 0x50005).
fn pi_tree(root: &Path) {
    let w = |p: &str, text: &str| {
        let p = root.join(p);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, text).expect("write");
    };
    w("proc/stat", "cpu  100 0 50 800 50 0 0 0 0 0\n");
    w("proc/loadavg", "0.52 0.40 0.31 1/123 4567\n");
    w(
        "proc/meminfo",
        "MemTotal: 3884000 kB\nMemAvailable: 2913000 kB\n",
    );
    w("proc/uptime", "5000.00 9000.00\n");
    w(
        "proc/diskstats",
        " 179       0 mmcblk0 100 0 800 10 50 0 4096 70 0 0 0\n",
    );
    w("sys/class/thermal/thermal_zone0/type", "cpu-thermal\n");
    w("sys/class/thermal/thermal_zone0/temp", "85062\n");
    w(
        "sys/devices/platform/soc/soc:firmware/get_throttled",
        "50005\n",
    );
}

/// The host source and detectors exactly as `config/pi.toml` ships them, on `root`.
fn shipped_host_section(root: &Path) -> String {
    let pi = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/pi.toml"))
        .expect("config/pi.toml");
    let start = pi
        .find("[[source]]\nid = \"host\"")
        .expect("host source in pi.toml");
    let end = start
        + pi[start..]
            .find("# A device with its own limits")
            .expect("end of section");
    pi[start..end].replace(
        "interval = \"10s\"",
        &format!(
            "interval = \"200ms\"\nproc_root = {:?}\nsys_root = {:?}\nblock_device = \"mmcblk0\"",
            root.join("proc").display().to_string(),
            root.join("sys").display().to_string()
        ),
    )
}

#[test]
fn host_metrics_reach_the_api_and_the_shipped_detectors_fire() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("root");
    pi_tree(&root);
    let cfg = write_config(dir.path(), &shipped_host_section(&root));
    let ew = InProcess::start(&cfg);
    // From the alert log: they may fire before a WebSocket client could connect.
    let alerts = ew.poll("/api/alerts?state=firing", Duration::from_secs(10), |v| {
        let t = v.to_string();
        t.contains("\"undervoltage\"") && t.contains("\"hot_cpu\"")
    });
    let by = |det: &str| {
        alerts
            .as_array()
            .and_then(|a| a.iter().find(|x| x["detector"] == det))
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(
        by("undervoltage")["device"],
        "test",
        "named after node_id: {alerts}"
    );
    assert_eq!(by("undervoltage")["metric"], "power.undervoltage");
    assert_eq!(by("undervoltage")["severity"], "critical");
    assert_eq!(by("hot_cpu")["metric"], "cpu.temp_c");
    assert_eq!(by("hot_cpu")["value"], 85.062);
    // disk_nearly_full follows the real filesystem of the data directory (> 90 % used).
    let disk = by("disk_nearly_full");
    if !disk.is_null() {
        assert!(disk["value"].as_f64().unwrap_or(0.0) > 90.0, "{disk}");
    }
    let devices = ew.poll("/api/devices", Duration::from_secs(10), |v| {
        v.to_string().contains("disk.write_bytes_per_s")
    });
    let text = devices.to_string();
    for m in [
        "load.1m",
        "mem.used_percent",
        "disk.used_percent",
        "disk.written_bytes",
        "uptime_s",
    ] {
        assert!(text.contains(m), "{m} missing: {text}");
    }
    // /proc/stat does not move in the prepared tree: no CPU use is made up.
    assert!(!text.contains("cpu.usage_percent"), "{text}");
    ew.stop();
}

#[test]
fn shipped_configs_check_with_the_new_sources() {
    let run = |cfg: &str| {
        let out = std::process::Command::new(BIN)
            .args(["check", "--config", cfg])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .expect("run check");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{cfg}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    };
    let pi = run("config/pi.toml");
    assert!(pi.contains(" host  device "), "{pi}");
    for d in [
        "cpu.temp_c[hot_cpu]",
        "disk.used_percent[disk_nearly_full]",
        "power.undervoltage[undervoltage]",
    ] {
        assert!(pi.contains(d), "{d} not in:\n{pi}");
    }
    let push = run("config/push.toml");
    assert!(
        push.contains("telegraf-udp     udp  0.0.0.0:8089  format influx"),
        "{push}"
    );
    assert!(
        push.contains("POST /api/ingest on the API listener"),
        "{push}"
    );
}
