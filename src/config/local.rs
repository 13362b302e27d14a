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
