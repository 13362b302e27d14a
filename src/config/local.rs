//! Config schema of the sources that read this machine itself: its health (`kind = "host"`).

use std::path::PathBuf;

use serde::Deserialize;

use super::load::Seg;
use super::validate::{at, check_name, fail, key};
use super::Dur;

type VResult<T> = Result<T, (Vec<Seg>, String)>;

fn default_host_interval() -> Dur {
    Dur::secs(10)
}
fn default_proc() -> PathBuf {
    PathBuf::from("/proc")
}
fn default_sys() -> PathBuf {
    PathBuf::from("/sys")
}

/// `[[source]] kind = "host"`: CPU, load, memory, disk, SD card writes, temperature, Pi
/// throttling flags, network and uptime as metrics of one device (the node by default).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostSource {
    pub id: String,
    /// Device id of the metrics; `node_id` when absent (filled in when the config is loaded).
    #[serde(default)]
    pub device: Option<String>,
    /// Template of that device (its detectors), unless a `[[device]]` names it.
    #[serde(default)]
    pub template: Option<String>,
    /// Per-metric policies of that device (e.g. a threshold on `cpu.temp_c`), as in `[[device]]`.
    #[serde(default)]
    pub metrics: std::collections::BTreeMap<String, super::MetricConfig>,
    #[serde(default = "default_host_interval")]
    pub interval: Dur,
    /// Where procfs and sysfs are (a prepared tree in tests, `/host/proc` in a container).
    #[serde(default = "default_proc")]
    pub proc_root: PathBuf,
    #[serde(default = "default_sys")]
    pub sys_root: PathBuf,
    /// Filesystem whose use is reported; `data_dir` when absent (filled in when loaded).
    #[serde(default)]
    pub disk_path: Option<PathBuf>,
    /// `/proc/diskstats` name whose writes are counted (e.g. `mmcblk0`); absent: the partition
    /// holding `disk_path`.
    #[serde(default)]
    pub block_device: Option<String>,
}

pub(super) fn validate_host(h: &HostSource, p: &[Seg]) -> VResult<()> {
    if h.interval.0 < std::time::Duration::from_millis(100) {
        return fail(at(p, &[key("interval")]), "must be at least 100ms");
    }
    if let Some(d) = &h.device {
        check_name(at(p, &[key("device")]), "device id", d)?;
    }
    Ok(())
}

/// What a `file` source knows how to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FilePreset {
    /// 1-Wire DS18B20: `w1_slave` with its CRC line (`YES`) and `t=23125` (m°C).
    Ds18b20,
    /// Industrial I/O devices (BME280, DHT22, …): `in_temp`, `in_humidityrelative`, `in_pressure`.
    Iio,
    /// hwmon chips: `temp*_input`, `fan*_input`, `in*_input`.
    Hwmon,
}

fn default_file_interval() -> Dur {
    Dur::secs(10)
}
fn default_metric() -> String {
    "value".into()
}
fn default_scale() -> f64 {
    1.0
}
fn default_max_files() -> usize {
    64
}

/// `[[source]] kind = "file"`: files matched by globs, polled every `interval`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSource {
    pub id: String,
    #[serde(default)]
    pub preset: Option<FilePreset>,
    /// Glob patterns; a preset brings its own when absent.
    #[serde(default)]
    pub paths: Vec<String>,
    #[serde(default = "default_file_interval")]
    pub interval: Dur,
    /// Fixed device id; else from the part of the path the first wildcard matched (IIO and
    /// hwmon: the chip's `name`).
    #[serde(default)]
    pub device: Option<String>,
    /// Without a preset: the metric name, a regex whose `value` group (else first group) is
    /// the number (else the whole file is), and `value × scale + offset`.
    #[serde(default = "default_metric")]
    pub metric: String,
    #[serde(default)]
    pub regex: Option<String>,
    #[serde(default = "default_scale")]
    pub scale: f64,
    #[serde(default)]
    pub offset: f64,
    /// Most files (or device directories) read per poll.
    #[serde(default = "default_max_files")]
    pub max_files: usize,
}

impl FileSource {
    /// The patterns to poll: the configured ones, else the preset's.
    pub fn patterns(&self) -> Vec<String> {
        if !self.paths.is_empty() {
            return self.paths.clone();
        }
        match self.preset {
            Some(FilePreset::Ds18b20) => vec!["/sys/bus/w1/devices/28-*/w1_slave".into()],
            Some(FilePreset::Iio) => vec!["/sys/bus/iio/devices/iio:device*".into()],
            Some(FilePreset::Hwmon) => vec!["/sys/class/hwmon/hwmon*".into()],
            None => Vec::new(),
        }
    }
}

pub(super) fn validate_file(f: &FileSource, p: &[Seg]) -> VResult<()> {
    if f.interval.0 < std::time::Duration::from_millis(100) {
        return fail(at(p, &[key("interval")]), "must be at least 100ms");
    }
    if f.preset.is_none() && f.paths.is_empty() {
        return fail(
            at(p, &[key("paths")]),
            "give `paths` (glob patterns) or a `preset` (ds18b20, iio, hwmon)",
        );
    }
    for (i, pat) in f.paths.iter().enumerate() {
        if let Err(e) = glob::Pattern::new(pat) {
            return fail(
                at(p, &[key("paths"), Seg::Index(i)]),
                format!("bad glob pattern: {e}"),
            );
        }
    }
    if f.preset.is_some() && f.regex.is_some() {
        return fail(at(p, &[key("regex")]), "applies without a `preset` only");
    }
    if let Some(r) = &f.regex {
        if let Err(e) = regex_lite::Regex::new(r) {
            return fail(at(p, &[key("regex")]), format!("bad regex: {e}"));
        }
    }
    check_name(at(p, &[key("metric")]), "metric name", &f.metric)?;
    if let Some(d) = &f.device {
        check_name(at(p, &[key("device")]), "device id", d)?;
    }
    if !(f.scale.is_finite() && f.offset.is_finite()) {
        return fail(at(p, &[key("scale")]), "scale and offset must be finite");
    }
    if !(1..=4096).contains(&f.max_files) {
        return fail(at(p, &[key("max_files")]), "must be between 1 and 4096");
    }
    Ok(())
}

fn default_exec_timeout() -> Dur {
    Dur::secs(10)
}
fn default_exec_backoff_min() -> Dur {
    Dur::secs(1)
}
fn default_exec_backoff_max() -> Dur {
    Dur::secs(60)
}
fn default_exec_format() -> crate::decode::Format {
    crate::decode::Format::Json
}

/// `[[source]] kind = "exec"`: a command's stdout through a decoder, run every `interval` (with
/// a timeout) or, without `interval`, kept running and read line by line.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecSource {
    pub id: String,
    /// Program and arguments (no shell: write `["sh", "-c", "…"]` for one).
    pub command: Vec<String>,
    /// Run every this long; absent: one long-running process, restarted with backoff.
    #[serde(default)]
    pub interval: Option<Dur>,
    /// A run that takes longer is killed with its process group.
    #[serde(default = "default_exec_timeout")]
    pub timeout: Dur,
    #[serde(default = "default_exec_format")]
    pub format: crate::decode::Format,
    #[serde(default)]
    pub device: Option<String>,
    #[serde(default)]
    pub ts_unit: crate::decode::TsUnit,
    #[serde(default)]
    pub device_tag: Option<String>,
    #[serde(default)]
    pub influx_metric: crate::decode::influx::MetricName,
    #[serde(default = "super::default_max_frame")]
    pub max_frame: usize,
    /// Restart delay of the long-running process, doubling with jitter.
    #[serde(default = "default_exec_backoff_min")]
    pub backoff_min: Dur,
    #[serde(default = "default_exec_backoff_max")]
    pub backoff_max: Dur,
}

impl ExecSource {
    pub fn settings(&self) -> crate::decode::Settings {
        crate::decode::Settings {
            device: self.device.clone(),
            ts_unit: self.ts_unit,
            device_tag: self.device_tag.clone(),
            influx_metric: self.influx_metric,
        }
    }
}

pub(super) fn validate_exec(x: &ExecSource, p: &[Seg]) -> VResult<()> {
    if x.command.first().is_none_or(|c| c.is_empty()) {
        return fail(
            at(p, &[key("command")]),
            "needs a program, e.g. [\"/usr/local/bin/read-sensor\"]",
        );
    }
    if x.interval
        .is_some_and(|i| i.0 < std::time::Duration::from_millis(100))
    {
        return fail(at(p, &[key("interval")]), "must be at least 100ms");
    }
    if x.timeout.0.is_zero() {
        return fail(at(p, &[key("timeout")]), "must be greater than 0");
    }
    if !(16..=1 << 20).contains(&x.max_frame) {
        return fail(
            at(p, &[key("max_frame")]),
            "must be between 16 and 1048576 bytes",
        );
    }
    super::validate::validate_influx_only(
        x.format == crate::decode::Format::Influx,
        &x.device_tag,
        x.influx_metric,
        p,
    )?;
    super::validate::validate_backoff(x.backoff_min, x.backoff_max, p)
}
