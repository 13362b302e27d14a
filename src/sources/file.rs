//! File source: files matched by globs, read every `interval` (1-Wire DS18B20, IIO, hwmon presets,
//! or a regex). The device comes from the glob match; a file that vanished or fails is unhealthy.
//!
//! Parsing is pure (`parse_*` on text, `read_dir_device` on a directory), tested on prepared trees;
//! the globs run again at every poll, so a sensor that comes back is found again.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::intake::{Intake, Origin};
use super::route::Router;
use super::SourceError;
use crate::config::{FilePreset, FileSource};
use crate::model::{now_ms, SampleSink};
use crate::status::{ErrorView, SourceStats, UnitView};

/// Longest file read (sysfs attributes are a page at most).
const MAX_READ: u64 = 64 * 1024;

/// Why a file gave no value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FileError {
    #[error("cannot read: {0}")]
    Read(String),
    #[error("CRC check failed (the sensor answered {0:?})")]
    Crc(String),
    #[error("85 °C is the DS18B20's power-on value, not a reading")]
    PowerOn,
    #[error("no value found")]
    NoValue,
    #[error("{0:?} is not a number")]
    NotNumber(String),
    #[error("vanished")]
    Vanished,
}

fn read_bounded(p: &Path) -> Result<String, FileError> {
    let mut s = String::new();
    std::fs::File::open(p)
        .and_then(|f| f.take(MAX_READ).read_to_string(&mut s))
        .map_err(|e| FileError::Read(e.to_string()))?;
    Ok(s)
}

fn number(t: &str) -> Result<f64, FileError> {
    let t = t.trim();
    t.parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
        .ok_or_else(|| FileError::NotNumber(t.chars().take(32).collect()))
}

/// A DS18B20 `w1_slave`: `… : crc=57 YES` then `… t=23125` → 23.125 °C.
pub fn parse_ds18b20(text: &str) -> Result<f64, FileError> {
    let mut lines = text.lines();
    let crc = lines.next().unwrap_or_default().trim();
    if !crc.ends_with("YES") {
        return Err(FileError::Crc(
            crc.rsplit(' ').next().unwrap_or_default().to_string(),
        ));
    }
    let t = lines
        .next()
        .and_then(|l| l.split("t=").nth(1))
        .ok_or(FileError::NoValue)?;
    let milli: i64 = t
        .trim()
        .parse()
        .map_err(|_| FileError::NotNumber(t.trim().to_string()))?;
    if milli == 85_000 {
        return Err(FileError::PowerOn);
    }
    Ok(milli as f64 / 1000.0)
}

/// A number in `text`: the regex's `value` group (else its first group, else its whole match),
/// or the whole text without a regex.
pub fn parse_regex(text: &str, re: Option<&regex_lite::Regex>) -> Result<f64, FileError> {
    let Some(re) = re else {
        return number(text);
    };
    let caps = re.captures(text).ok_or(FileError::NoValue)?;
    let m = caps
        .name("value")
        .or_else(|| caps.get(1))
        .or_else(|| caps.get(0))
        .ok_or(FileError::NoValue)?;
    number(m.as_str())
}

/// IIO channels: (file prefix, metric, multiplier, divisor from the ABI's unit to ours).
const IIO: [(&str, &str, f64, f64); 3] = [
    ("in_temp", "temp", 1.0, 1000.0),                 // m°C → °C
    ("in_humidityrelative", "humidity", 1.0, 1000.0), // m% → %
    ("in_pressure", "pressure", 10.0, 1.0),           // kPa → hPa
];

/// One IIO channel: `_input`, else (`_raw` + `_offset`) × `_scale`.
fn iio_channel(dir: &Path, prefix: &str) -> Option<Result<f64, FileError>> {
    let f = |suffix: &str| dir.join(format!("{prefix}_{suffix}"));
    if f("input").exists() {
        return Some(read_bounded(&f("input")).and_then(|t| number(&t)));
    }
    if !f("raw").exists() {
        return None;
    }
    let opt = |suffix: &str, default: f64| match read_bounded(&f(suffix)) {
        Ok(t) => number(&t),
        Err(_) => Ok(default),
    };
    Some((|| {
        Ok((number(&read_bounded(&f("raw"))?)? + opt("offset", 0.0)?) * opt("scale", 1.0)?)
    })())
}

/// The samples of one IIO or hwmon device directory.
pub fn read_dir_device(preset: FilePreset, dir: &Path) -> Result<Vec<(String, f64)>, FileError> {
    if !dir.exists() {
        return Err(FileError::Vanished);
    }
    let mut out = Vec::new();
    match preset {
        FilePreset::Iio => {
            for (prefix, metric, mul, div) in IIO {
                if let Some(v) = iio_channel(dir, prefix) {
                    out.push((metric.to_string(), v? * mul / div));
                }
            }
        }
        FilePreset::Hwmon => {
            let mut names: Vec<String> = std::fs::read_dir(dir)
                .map_err(|e| FileError::Read(e.to_string()))?
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with("_input"))
                .collect();
            names.sort();
            for n in names {
                let metric = n.trim_end_matches("_input");
                let div = if metric.starts_with("temp") || metric.starts_with("in") {
                    1000.0 // m°C → °C, mV → V
                } else {
                    1.0 // fan rpm, …
                };
                let v = number(&read_bounded(&dir.join(&n))?)?;
                out.push((metric.to_string(), v / div));
            }
        }
        FilePreset::Ds18b20 => {}
    }
    if out.is_empty() {
        return Err(FileError::NoValue);
    }
    Ok(out)
}

/// The device id of `path` matched by `pattern`: the path component where the pattern's first
/// wildcard is (without its extension when it is the file name).
pub fn device_of(pattern: &str, path: &Path) -> Option<String> {
    let pat: Vec<&str> = pattern.split('/').collect();
    let i = pat.iter().position(|c| c.contains(['*', '?', '[']))?;
    let comps: Vec<String> = path
        .to_string_lossy()
        .split('/')
        .map(str::to_owned)
        .collect();
    let c = comps.get(i)?;
    if i + 1 == comps.len() {
        return Some(
            Path::new(c)
                .file_stem()
                .map_or(c.clone(), |s| s.to_string_lossy().into_owned()),
        );
    }
    Some(c.clone())
}

/// What is known about one matched file (or device directory).
struct Tracked {
    device: String,
    view: UnitView,
    seen: bool,
}

pub async fn run(
    cfg: Arc<FileSource>,
    idx: u16,
    router: Router,
    stats: Arc<SourceStats>,
) -> Result<(), SourceError> {
    let re = match &cfg.regex {
        Some(r) => Some(regex_lite::Regex::new(r).map_err(|e| SourceError::Config(e.to_string()))?),
        None => None,
    };
    let patterns = cfg.patterns();
    let mut intake = Intake::new(&router, idx, stats.clone(), Origin::Port);
    let mut tracked: BTreeMap<PathBuf, Tracked> = BTreeMap::new();
    let mut tick = tokio::time::interval(cfg.interval.0);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let (c, pats, r) = (cfg.clone(), patterns.clone(), re.clone());
        // Globbing and sysfs reads may block (a 1-Wire read takes ~750 ms): off the runtime.
        let results = tokio::task::spawn_blocking(move || poll(&c, &pats, r.as_ref()))
            .await
            .unwrap_or_default();
        for t in tracked.values_mut() {
            t.seen = false;
        }
        intake.begin();
        for (path, device, result) in results {
            let t = tracked.entry(path.clone()).or_insert_with(|| Tracked {
                device: device.clone(),
                view: UnitView {
                    device: device.clone(),
                    ..UnitView::default()
                },
                seen: true,
            });
            t.seen = true;
            match result {
                Ok(samples) => {
                    for (m, v) in &samples {
                        intake.sink().push(&t.device, m, None, *v);
                    }
                    t.view.healthy = true;
                    t.view.reads_ok += 1;
                    intake.tally(true);
                }
                Err(e) => {
                    t.view.healthy = false;
                    t.view.errors += 1;
                    let from = path.display().to_string();
                    intake.reject(Some(&from), &e, None);
                    t.view.last_error = Some(ErrorView {
                        at: now_ms(),
                        message: format!("{from}: {e}"),
                    });
                }
            }
        }
        // A file that matched before and is gone now: unhealthy until it comes back.
        for (path, t) in tracked.iter_mut().filter(|(_, t)| !t.seen) {
            if t.view.healthy || t.view.last_error.is_none() {
                let from = path.display().to_string();
                intake.reject(Some(&from), &FileError::Vanished, None);
            }
            t.view.healthy = false;
            t.view.last_error = Some(ErrorView {
                at: now_ms(),
                message: format!("{}: vanished", path.display()),
            });
        }
        let views: Vec<UnitView> = tracked.values().map(|t| t.view.clone()).collect();
        stats.set_units(&views);
        let healthy = !tracked.is_empty() && tracked.values().all(|t| t.view.healthy);
        stats.set_healthy(healthy);
        if tracked.is_empty() {
            stats.set_error(format!("no file matches {}", patterns.join(" ")));
        }
        intake.flush().await?;
    }
}

type Polled = Vec<(PathBuf, String, Result<Vec<(String, f64)>, FileError>)>;

/// One poll: every match of every pattern, read and parsed (blocking).
fn poll(cfg: &FileSource, patterns: &[String], re: Option<&regex_lite::Regex>) -> Polled {
    let mut out = Polled::new();
    for pat in patterns {
        let Ok(paths) = glob::glob(pat) else { continue };
        for path in paths.flatten() {
            if out.len() >= cfg.max_files {
                return out;
            }
            let from_name = matches!(cfg.preset, Some(FilePreset::Iio | FilePreset::Hwmon))
                .then(|| read_bounded(&path.join("name")).ok())
                .flatten()
                .map(|n| n.trim().to_string())
                .filter(|n| !n.is_empty());
            let device = cfg
                .device
                .clone()
                .or(from_name)
                .or_else(|| device_of(pat, &path))
                .unwrap_or_else(|| path.display().to_string());
            let result = match cfg.preset {
                Some(FilePreset::Ds18b20) => read_bounded(&path)
                    .and_then(|t| parse_ds18b20(&t))
                    .map(|v| vec![("temp".to_string(), v)]),
                Some(p) => read_dir_device(p, &path),
                None => read_bounded(&path)
                    .and_then(|t| parse_regex(&t, re))
                    .map(|v| vec![(cfg.metric.clone(), v * cfg.scale + cfg.offset)]),
            };
            out.push((path, device, result));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ds18b20_checks_the_crc_and_reads_millidegrees() {
        let ok = "72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n72 01 4b 46 7f ff 0e 10 57 t=23125\n";
        assert_eq!(parse_ds18b20(ok), Ok(23.125));
        let neg = "5e ff 4b 46 7f ff 0c 10 1c : crc=1c YES\n5e ff 4b 46 7f ff 0c 10 1c t=-10125\n";
        assert_eq!(parse_ds18b20(neg), Ok(-10.125));
        let bad = "72 01 4b 46 7f ff 0e 10 57 : crc=00 NO\n72 01 4b 46 7f ff 0e 10 57 t=23125\n";
        assert_eq!(parse_ds18b20(bad), Err(FileError::Crc("NO".into())));
        let reset = "50 05 4b 46 7f ff 0c 10 1c : crc=1c YES\n50 05 4b 46 7f ff 0c 10 1c t=85000\n";
        assert_eq!(parse_ds18b20(reset), Err(FileError::PowerOn));
        assert_eq!(parse_ds18b20(""), Err(FileError::Crc(String::new())));
        assert_eq!(parse_ds18b20("x YES\n"), Err(FileError::NoValue));
    }

    #[test]
    fn regex_groups_and_plain_numbers() {
        let re = regex_lite::Regex::new(r"temp=(?P<value>-?[0-9.]+)").expect("re");
        assert_eq!(parse_regex("hum=40 temp=21.5 ok", Some(&re)), Ok(21.5));
        let first = regex_lite::Regex::new(r"T:([0-9.]+)").expect("re");
        assert_eq!(parse_regex("T:7.25", Some(&first)), Ok(7.25));
        assert_eq!(parse_regex("nothing", Some(&re)), Err(FileError::NoValue));
        assert_eq!(parse_regex(" 42\n", None), Ok(42.0));
        assert!(matches!(
            parse_regex("inf", None),
            Err(FileError::NotNumber(_))
        ));
    }

    #[test]
    fn device_ids_from_the_glob_match() {
        let p = "/sys/bus/w1/devices/28-*/w1_slave";
        assert_eq!(
            device_of(p, Path::new("/sys/bus/w1/devices/28-0316a279b6ff/w1_slave")),
            Some("28-0316a279b6ff".into())
        );
        assert_eq!(
            device_of("/run/sensors/*.txt", Path::new("/run/sensors/kitchen.txt")),
            Some("kitchen".into())
        );
        assert_eq!(device_of("/fixed/path", Path::new("/fixed/path")), None);
    }

    #[test]
    fn iio_input_or_raw_with_scale_and_offset_and_hwmon() {
        let dir = tempfile::tempdir().expect("tmp");
        let w = |p: &str, t: &str| std::fs::write(dir.path().join(p), t).expect("write");
        // BME280 through the bmp280 driver: processed values.
        w("name", "bme280\n");
        w("in_temp_input", "23450\n");
        w("in_humidityrelative_input", "41234\n");
        w("in_pressure_input", "101.325\n");
        let got = read_dir_device(FilePreset::Iio, dir.path()).expect("iio");
        let get = |m: &str| got.iter().find(|x| x.0 == m).map(|x| x.1);
        assert_eq!(get("temp"), Some(23.45));
        assert!((get("humidity").expect("hum") - 41.234).abs() < 1e-9);
        assert!((get("pressure").expect("press") - 1013.25).abs() < 1e-9);
        // A driver that gives raw counts: (raw + offset) × scale, in the ABI's units.
        let raw = tempfile::tempdir().expect("tmp");
        std::fs::write(raw.path().join("in_temp_raw"), "1000\n").expect("w");
        std::fs::write(raw.path().join("in_temp_offset"), "-500\n").expect("w");
        std::fs::write(raw.path().join("in_temp_scale"), "40.5\n").expect("w");
        assert_eq!(
            read_dir_device(FilePreset::Iio, raw.path()),
            Ok(vec![("temp".into(), 20.25)])
        );
        // hwmon: millidegrees, millivolts, rpm.
        let hw = tempfile::tempdir().expect("tmp");
        std::fs::write(hw.path().join("temp1_input"), "48312\n").expect("w");
        std::fs::write(hw.path().join("in0_input"), "5100\n").expect("w");
        std::fs::write(hw.path().join("fan1_input"), "1200\n").expect("w");
        assert_eq!(
            read_dir_device(FilePreset::Hwmon, hw.path()),
            Ok(vec![
                ("fan1".into(), 1200.0),
                ("in0".into(), 5.1),
                ("temp1".into(), 48.312)
            ])
        );
        assert_eq!(
            read_dir_device(FilePreset::Iio, &dir.path().join("gone")),
            Err(FileError::Vanished)
        );
    }

    /// The whole source on a prepared 1-Wire tree: two sensors are read, one is unplugged (its
    /// device turns unhealthy, the other keeps working) and plugged back in (healthy again).
    #[tokio::test]
    async fn a_vanished_sensor_is_unhealthy_and_found_again() {
        use std::sync::atomic::Ordering::Relaxed;
        let dir = tempfile::tempdir().expect("tmp");
        let w1 = dir.path().join("w1");
        let put = |id: &str, milli: i64| {
            let d = w1.join(id);
            std::fs::create_dir_all(&d).expect("mkdir");
            let text = format!("aa 01 : crc=57 YES\naa 01 t={milli}\n");
            std::fs::write(d.join("w1_slave"), text).expect("write");
        };
        put("28-000000000001", 21500);
        put("28-000000000002", -3250);
        let text = format!(
            "node_id = \"n\"\n[[source]]\nid = \"w1\"\nkind = \"file\"\npreset = \"ds18b20\"\ninterval = \"100ms\"\npaths = [{:?}]\n",
            format!("{}/28-*/w1_slave", w1.display())
        );
        let r = crate::config::parse_str(&text, Path::new("t.toml")).expect("config");
        let crate::config::SourceConfig::File(cfg) = r.config.sources[0].clone() else {
            panic!("not file")
        };
        let (tx, mut rx) = tokio::sync::mpsc::channel(64);
        let stats = Arc::new(SourceStats::new("w1", "file"));
        let task = tokio::spawn(run(Arc::new(cfg), 0, Router::new(vec![tx]), stats.clone()));
        let mut seen = BTreeMap::new();
        while seen.len() < 2 {
            let b: crate::sources::route::Ingest = rx.recv().await.expect("batch");
            for s in b.batch.iter() {
                assert_eq!(s.metric, "temp");
                seen.insert(s.device.to_string(), s.value);
            }
        }
        assert_eq!(seen["28-000000000001"], 21.5);
        assert_eq!(seen["28-000000000002"], -3.25);
        let units = |stats: &SourceStats| -> Vec<(String, bool)> {
            let v = serde_json::to_value(stats.view()).expect("view");
            v["devices"]
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
        };
        // Unplugged: the directory disappears from the bus.
        std::fs::remove_dir_all(w1.join("28-000000000002")).expect("unplug");
        let mut gone = Vec::new();
        for _ in 0..50 {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            while rx.try_recv().is_ok() {}
            gone = units(&stats);
            if gone.contains(&("28-000000000002".into(), false)) {
                break;
            }
        }
        assert_eq!(
            gone,
            vec![
                ("28-000000000001".into(), true),
                ("28-000000000002".into(), false)
            ]
        );
        assert!(!stats.healthy.load(Relaxed));
        // Plugged back in, with a failed CRC first: still unhealthy, then a good reading.
        std::fs::create_dir_all(w1.join("28-000000000002")).expect("mkdir");
        std::fs::write(
            w1.join("28-000000000002/w1_slave"),
            "aa : crc=00 NO\naa t=1\n",
        )
        .expect("w");
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert!(units(&stats).contains(&("28-000000000002".into(), false)));
        put("28-000000000002", 19000);
        let mut back = false;
        for _ in 0..50 {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            if units(&stats).iter().all(|u| u.1) {
                back = true;
                break;
            }
        }
        assert!(back, "{:?}", units(&stats));
        assert!(stats.healthy.load(Relaxed));
        assert!(
            stats.frames_rejected.load(Relaxed) >= 2,
            "vanished and the bad CRC are counted"
        );
        task.abort();
    }
}
