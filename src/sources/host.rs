//! Host source: the appliance's own health as metrics of one device (the node), read from procfs
//! and sysfs every `interval`. Reading is pure (`Snapshot::read` on any root), so tests use a prepared tree.
//!
//! Counters (CPU time, bytes written, network bytes) become rates between two readings; a file
//! that does not exist (no thermal zone, not a Pi) just gives no metric.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use super::intake::{Intake, Origin};
use super::route::Router;
use super::SourceError;
use crate::config::HostSource;
use crate::model::SampleSink;
use crate::status::SourceStats;

/// Bytes per sector in `/proc/diskstats`, whatever the device's own sector size.
const SECTOR: f64 = 512.0;

/// One reading of everything; `None` where the machine does not have it.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Snapshot {
    /// (busy, total) jiffies of all CPUs since boot.
    cpu: Option<(u64, u64)>,
    load: Option<[f64; 3]>,
    /// (total, available) bytes.
    mem: Option<(u64, u64)>,
    /// (used %, free bytes) of the data directory's filesystem.
    disk: Option<(f64, u64)>,
    /// Bytes written to the block device since boot.
    written: Option<u64>,
    temp_c: Option<f64>,
    /// The firmware's `get_throttled` bits.
    throttled: Option<u32>,
    /// (received, sent) bytes of all interfaces but loopback.
    net: Option<(u64, u64)>,
    uptime_s: Option<f64>,
}

/// Where to read.
#[derive(Debug, Clone)]
pub struct Roots {
    pub proc: PathBuf,
    pub sys: PathBuf,
    pub disk: PathBuf,
    pub block_device: Option<String>,
}

fn read(p: &Path) -> Option<String> {
    std::fs::read_to_string(p).ok()
}

impl Snapshot {
    pub fn read(r: &Roots) -> Snapshot {
        let block = r
            .block_device
            .clone()
            .or_else(|| partition_of(&r.disk, &r.proc));
        Snapshot {
            cpu: read(&r.proc.join("stat")).and_then(|t| cpu(&t)),
            load: read(&r.proc.join("loadavg")).and_then(|t| {
                let mut it = t.split_whitespace().map(|x| x.parse::<f64>().ok());
                Some([it.next()??, it.next()??, it.next()??])
            }),
            mem: read(&r.proc.join("meminfo")).and_then(|t| meminfo(&t)),
            disk: disk_use(&r.disk),
            written: block.and_then(|b| {
                read(&r.proc.join("diskstats")).and_then(|t| sectors_written(&t, &b))
            }),
            temp_c: cpu_temp(&r.sys),
            throttled: read(
                &r.sys
                    .join("devices/platform/soc/soc:firmware/get_throttled"),
            )
            .and_then(|t| {
                let t = t.trim();
                u32::from_str_radix(t.strip_prefix("0x").unwrap_or(t), 16).ok()
            }),
            net: read(&r.proc.join("net/dev")).and_then(|t| net(&t)),
            uptime_s: read(&r.proc.join("uptime"))
                .and_then(|t| t.split_whitespace().next()?.parse().ok()),
        }
    }

    /// The metrics of this reading; rates need the previous one and the seconds between them.
    pub fn metrics(&self, prev: Option<&Snapshot>, secs: f64, out: &mut Vec<(&'static str, f64)>) {
        let rate = |now: Option<u64>, before: Option<u64>| match (now, before) {
            (Some(n), Some(b)) if n >= b && secs > 0.0 => Some((n - b) as f64 / secs),
            _ => None,
        };
        let mut put = |name: &'static str, v: Option<f64>| {
            if let Some(v) = v.filter(|v| v.is_finite()) {
                out.push((name, v));
            }
        };
        let prev_cpu = prev.and_then(|p| p.cpu);
        put(
            "cpu.usage_percent",
            match (self.cpu, prev_cpu) {
                (Some((b1, t1)), Some((b0, t0))) if t1 > t0 && b1 >= b0 => {
                    Some(100.0 * (b1 - b0) as f64 / (t1 - t0) as f64)
                }
                _ => None,
            },
        );
        put("cpu.temp_c", self.temp_c);
        put("load.1m", self.load.map(|l| l[0]));
        put("load.5m", self.load.map(|l| l[1]));
        put("load.15m", self.load.map(|l| l[2]));
        put(
            "mem.used_percent",
            self.mem
                .filter(|m| m.0 > 0)
                .map(|(t, a)| 100.0 * t.saturating_sub(a) as f64 / t as f64),
        );
        put("mem.available_bytes", self.mem.map(|m| m.1 as f64));
        put("disk.used_percent", self.disk.map(|d| d.0));
        put("disk.free_bytes", self.disk.map(|d| d.1 as f64));
        put("disk.written_bytes", self.written.map(|w| w as f64));
        put(
            "disk.write_bytes_per_s",
            rate(self.written, prev.and_then(|p| p.written)),
        );
        let bit = |b: u32| self.throttled.map(|t| f64::from((t >> b) & 1));
        put("power.undervoltage", bit(0));
        put("power.freq_capped", bit(1));
        put("power.throttled", bit(2));
        put("power.soft_temp_limit", bit(3));
        put("power.undervoltage_since_boot", bit(16));
        put("power.throttled_since_boot", bit(18));
        let prev_net = prev.and_then(|p| p.net);
        put(
            "net.rx_bytes_per_s",
            rate(self.net.map(|n| n.0), prev_net.map(|n| n.0)),
        );
        put(
            "net.tx_bytes_per_s",
            rate(self.net.map(|n| n.1), prev_net.map(|n| n.1)),
        );
        put("uptime_s", self.uptime_s);
    }
}

/// `cpu  user nice system idle iowait irq softirq steal …`: (busy, total) jiffies.
fn cpu(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    let total: u64 = f.iter().sum();
    let idle = f.get(3)? + f.get(4).copied().unwrap_or(0);
    Some((total.saturating_sub(idle), total))
}

fn meminfo(text: &str) -> Option<(u64, u64)> {
    let kb = |key: &str| -> Option<u64> {
        let l = text.lines().find(|l| l.starts_with(key))?;
        Some(
            l[key.len()..]
                .split_whitespace()
                .next()?
                .parse::<u64>()
                .ok()?
                * 1024,
        )
    };
    Some((kb("MemTotal:")?, kb("MemAvailable:")?))
}

fn sectors_written(diskstats: &str, device: &str) -> Option<u64> {
    let f: Vec<&str> = diskstats
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.get(2) == Some(&device))?;
    Some((f.get(9)?.parse::<u64>().ok()? as f64 * SECTOR) as u64)
}

/// The `/proc/diskstats` name of the partition holding `path` (by its device number).
fn partition_of(path: &Path, proc: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata(path).ok()?.dev();
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    let stats = read(&proc.join("diskstats"))?;
    stats.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.first()?.parse::<u64>().ok()? == major && f.get(1)?.parse::<u64>().ok()? == minor)
            .then(|| f.get(2).map(|s| s.to_string()))?
    })
}

fn disk_use(path: &Path) -> Option<(f64, u64)> {
    let s = nix::sys::statvfs::statvfs(path).ok()?;
    let frag = s.fragment_size() as u64;
    let (blocks, free, avail) = (
        s.blocks() as u64,
        s.blocks_free() as u64,
        s.blocks_available() as u64,
    );
    let used = blocks.saturating_sub(free);
    // As df: used / (used + available to unprivileged users).
    let pct = 100.0 * used as f64 / (used + avail).max(1) as f64;
    Some((pct, avail * frag))
}

/// The CPU's thermal zone (type containing `cpu`, else the first), in °C.
fn cpu_temp(sys: &Path) -> Option<f64> {
    let dir = sys.join("class/thermal");
    let mut zones: Vec<PathBuf> = std::fs::read_dir(&dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("thermal_zone"))
        })
        .collect();
    zones.sort();
    let is_cpu = |z: &PathBuf| read(&z.join("type")).is_some_and(|t| t.contains("cpu"));
    let zone = zones.iter().find(|z| is_cpu(z)).or(zones.first())?;
    let milli: f64 = read(&zone.join("temp"))?.trim().parse().ok()?;
    Some(milli / 1000.0)
}

fn net(text: &str) -> Option<(u64, u64)> {
    let mut rx = 0u64;
    let mut tx = 0u64;
    let mut any = false;
    for l in text.lines().skip(2) {
        let Some((name, rest)) = l.split_once(':') else {
            continue;
        };
        if name.trim() == "lo" {
            continue;
        }
        let f: Vec<u64> = rest
            .split_whitespace()
            .map(|x| x.parse().unwrap_or(0))
            .collect();
        rx += f.first().copied().unwrap_or(0);
        tx += f.get(8).copied().unwrap_or(0);
        any = true;
    }
    any.then_some((rx, tx))
}

pub async fn run(
    cfg: Arc<HostSource>,
    idx: u16,
    router: Router,
    stats: Arc<SourceStats>,
) -> Result<(), SourceError> {
    let device = cfg.device.clone().unwrap_or_else(|| "host".into());
    let roots = Roots {
        proc: cfg.proc_root.clone(),
        sys: cfg.sys_root.clone(),
        disk: cfg.disk_path.clone().unwrap_or_else(|| PathBuf::from("/")),
        block_device: cfg.block_device.clone(),
    };
    let mut intake = Intake::new(&router, idx, stats.clone(), Origin::Port);
    intake.set_from(cfg.proc_root.display().to_string());
    let mut tick = tokio::time::interval(cfg.interval.0);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut prev: Option<(Snapshot, Instant)> = None;
    let mut metrics = Vec::new();
    loop {
        tick.tick().await;
        let r = roots.clone();
        let snap = tokio::task::spawn_blocking(move || Snapshot::read(&r))
            .await
            .unwrap_or_default();
        let now = Instant::now();
        if snap.cpu.is_none() && snap.uptime_s.is_none() {
            stats.set_healthy(false);
            stats.set_error(format!(
                "nothing readable under {} (proc_root)",
                cfg.proc_root.display()
            ));
        } else {
            stats.set_healthy(true);
        }
        metrics.clear();
        let secs = prev.as_ref().map_or(0.0, |(_, t)| (now - *t).as_secs_f64());
        snap.metrics(prev.as_ref().map(|p| &p.0), secs, &mut metrics);
        intake.begin();
        for (m, v) in &metrics {
            intake.sink().push(&device, m, None, *v);
        }
        intake.tally(!metrics.is_empty());
        intake.flush().await?;
        prev = Some((snap, now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Raspberry Pi's procfs and sysfs as files, with the counters given.
    fn tree(dir: &Path, busy: u64, idle: u64, sectors: u64, rx: u64) {
        let w = |p: &str, text: &str| {
            let p = dir.join(p);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(p, text).expect("write");
        };
        w(
            "proc/stat",
            &format!("cpu  {busy} 0 0 {idle} 0 0 0 0 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\nintr 1\n"),
        );
        w("proc/loadavg", "0.52 0.40 0.31 1/123 4567\n");
        w(
            "proc/meminfo",
            "MemTotal:        3884000 kB\nMemFree:          100000 kB\nMemAvailable:    2913000 kB\n",
        );
        w(
            "proc/diskstats",
            &format!(" 179       0 mmcblk0 100 0 800 10 50 0 {sectors} 70 0 0 0\n 179       2 mmcblk0p2 1 0 8 1 2 0 16 1 0 0 0\n"),
        );
        w(
            "proc/net/dev",
            &format!("Inter-|   Receive |  Transmit\n face |bytes packets|bytes\n    lo: 999 1 0 0 0 0 0 0 999 1 0 0 0 0 0 0\n  eth0: {rx} 10 0 0 0 0 0 0 {} 5 0 0 0 0 0 0\n wlan0: 1000 1 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n", rx / 2),
        );
        w("proc/uptime", "12345.67 20000.00\n");
        w("sys/class/thermal/thermal_zone0/type", "cpu-thermal\n");
        w("sys/class/thermal/thermal_zone0/temp", "61835\n");
        w(
            "sys/devices/platform/soc/soc:firmware/get_throttled",
            "50005\n",
        );
    }

    fn roots(dir: &Path) -> Roots {
        Roots {
            proc: dir.join("proc"),
            sys: dir.join("sys"),
            disk: dir.to_path_buf(),
            block_device: Some("mmcblk0".into()),
        }
    }

    fn get(m: &[(&str, f64)], name: &str) -> Option<f64> {
        m.iter().find(|x| x.0 == name).map(|x| x.1)
    }

    #[test]
    fn a_prepared_pi_tree_gives_every_metric() {
        let dir = tempfile::tempdir().expect("tmp");
        tree(dir.path(), 1000, 9000, 2000, 10_000);
        let first = Snapshot::read(&roots(dir.path()));
        let mut m = Vec::new();
        first.metrics(None, 0.0, &mut m);
        // No rates without a previous reading.
        assert_eq!(get(&m, "cpu.usage_percent"), None);
        assert_eq!(get(&m, "net.rx_bytes_per_s"), None);
        assert_eq!(get(&m, "cpu.temp_c"), Some(61.835));
        assert_eq!(get(&m, "load.1m"), Some(0.52));
        assert_eq!(get(&m, "load.15m"), Some(0.31));
        let used = get(&m, "mem.used_percent").expect("mem");
        assert!((used - 25.0).abs() < 1e-9, "{used}");
        assert_eq!(get(&m, "mem.available_bytes"), Some(2_913_000.0 * 1024.0));
        assert_eq!(get(&m, "disk.written_bytes"), Some(2000.0 * 512.0));
        // 0x50005: under-voltage and throttled now; under-voltage and throttling since boot.
        assert_eq!(get(&m, "power.undervoltage"), Some(1.0));
        assert_eq!(get(&m, "power.freq_capped"), Some(0.0));
        assert_eq!(get(&m, "power.throttled"), Some(1.0));
        assert_eq!(get(&m, "power.undervoltage_since_boot"), Some(1.0));
        assert_eq!(get(&m, "power.throttled_since_boot"), Some(1.0));
        assert_eq!(get(&m, "uptime_s"), Some(12345.67));
        let disk = get(&m, "disk.used_percent").expect("statvfs of the temp dir");
        assert!((0.0..=100.0).contains(&disk), "{disk}");

        // Ten seconds later: 500 of 1000 jiffies busy, 20 KiB written, 5000 bytes received.
        tree(dir.path(), 1500, 9500, 2040, 15_000);
        let second = Snapshot::read(&roots(dir.path()));
        let mut m = Vec::new();
        second.metrics(Some(&first), 10.0, &mut m);
        assert_eq!(get(&m, "cpu.usage_percent"), Some(50.0));
        assert_eq!(get(&m, "disk.write_bytes_per_s"), Some(40.0 * 512.0 / 10.0));
        // eth0 and wlan0, not lo.
        assert_eq!(get(&m, "net.rx_bytes_per_s"), Some(500.0));
        assert_eq!(get(&m, "net.tx_bytes_per_s"), Some(250.0));
        // A counter that went backwards (reboot, wrap) gives no rate, not a negative one.
        let mut m = Vec::new();
        first.metrics(Some(&second), 10.0, &mut m);
        assert_eq!(get(&m, "disk.write_bytes_per_s"), None);
        assert_eq!(get(&m, "cpu.usage_percent"), None);
    }

    #[test]
    fn a_machine_without_pi_files_gives_what_it_has() {
        let dir = tempfile::tempdir().expect("tmp");
        let r = roots(dir.path());
        assert_eq!(
            Snapshot::read(&r),
            Snapshot {
                disk: disk_use(dir.path()),
                ..Snapshot::default()
            }
        );
    }

    #[test]
    fn the_real_proc_and_sys() {
        let dir = tempfile::tempdir().expect("tmp");
        let r = Roots {
            proc: "/proc".into(),
            sys: "/sys".into(),
            disk: dir.path().to_path_buf(),
            block_device: None,
        };
        let a = Snapshot::read(&r);
        std::thread::sleep(std::time::Duration::from_millis(200));
        let b = Snapshot::read(&r);
        let mut m = Vec::new();
        b.metrics(Some(&a), 0.2, &mut m);
        let cpu = get(&m, "cpu.usage_percent").expect("cpu");
        assert!((0.0..=100.0).contains(&cpu), "{cpu}");
        let mem = get(&m, "mem.used_percent").expect("mem");
        assert!(mem > 0.0 && mem < 100.0, "{mem}");
        assert!(get(&m, "uptime_s").expect("uptime") > 0.0);
        assert!(get(&m, "load.1m").expect("load") >= 0.0);
        assert!(get(&m, "disk.free_bytes").expect("disk") > 0.0);
        // The temp dir's partition is found in /proc/diskstats (absent only on overlay/tmpfs).
        if partition_of(dir.path(), Path::new("/proc")).is_some() {
            assert!(get(&m, "disk.written_bytes").is_some());
        }
    }
}
