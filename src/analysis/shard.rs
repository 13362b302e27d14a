//! One analyzer shard's state and logic, without actors: per-device, per-metric rolling statistics,
//! detectors and alert lifecycles; summaries, silence ticks, snapshots and restore.
//! Over 600 lines: the per-device ingest, restore and snapshot paths share private state types
//! and are kept together (tests from line 725).

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use super::detector::{DetectorSpec, DetectorState, Verdict};
use super::history::{Columns, History};
use super::lifecycle::{Lifecycle, Transition};
use super::stats::{Accumulator, RollingStats};
use crate::config::{MetricPolicy, Resolved};
use crate::model::{Alert, AlertState, Batch, Millis, Severity, SummaryEntry};
use crate::store::history::{Bucket, MinuteAcc, SeriesBuckets};

/// Most metrics one device may have; more are rejected (protects memory from a runaway sender).
pub const MAX_METRICS_PER_DEVICE: usize = 256;

/// What the shard needs from the config, shared by all shards.
#[derive(Debug)]
pub struct Policies {
    pub resolved: Resolved,
    /// Source index (config order) → source id.
    pub source_ids: Vec<String>,
    pub shards: usize,
}

struct DetectorSlot {
    name: Arc<str>,
    spec: DetectorSpec,
    severity: Severity,
    hold_ms: i64,
    state: DetectorState,
    life: Lifecycle,
    /// The alert currently firing, to resolve it with the same id and details.
    active: Option<Alert>,
    /// Anomaly score (0..1) of the latest verdict; not persisted.
    last_anomaly: f64,
}

/// One detector's latest judgement of a metric, as replay reports it per sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DetectorOutcome {
    /// The verdict's anomaly score in [0, 1] (0.5 at the firing threshold).
    pub anomaly: f64,
    /// Whether the detector's alert is firing after the sample.
    pub firing: bool,
}

struct MetricState {
    name: Box<str>,
    policy: Arc<MetricPolicy>,
    stats: RollingStats,
    interval: Accumulator,
    total: u64,
    last: Option<(Millis, f64)>,
    detectors: Vec<DetectorSlot>,
    /// Recent points for charts (not persisted: it starts empty after a restart).
    history: History,
    /// The minute being filled for the downsampled history in sled, and closed minutes not yet
    /// handed to the store (at most one `persist_interval` of them).
    minute: MinuteAcc,
    closed: Vec<(Millis, Bucket)>,
}

struct DeviceState {
    id: Box<str>,
    bound_source: Option<u16>,
    default: Arc<MetricPolicy>,
    /// Metric policies named in the config; others get `default`.
    named: Option<Arc<HashMap<String, Arc<MetricPolicy>>>>,
    metrics: Vec<MetricState>,
    last_seen: Option<Millis>,
    registered: bool,
}

/// Persisted form of a device (postcard). Changing this struct: bump `STATE_VERSION` in store.
#[derive(Serialize, Deserialize)]
struct DeviceSnapshot {
    last_seen: Option<Millis>,
    registered: bool,
    metrics: Vec<MetricSnapshot>,
}

#[derive(Serialize, Deserialize)]
struct MetricSnapshot {
    name: String,
    stats: RollingStats,
    total: u64,
    last: Option<(Millis, f64)>,
    detectors: Vec<DetectorSnapshot>,
}

#[derive(Serialize, Deserialize)]
struct DetectorSnapshot {
    name: String,
    spec: DetectorSpec,
    state: DetectorState,
    life: Lifecycle,
    active: Option<Alert>,
}

/// Read-only view of one device for the API.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceView {
    pub device: String,
    pub registered: bool,
    pub last_seen: Option<Millis>,
    pub metrics: Vec<MetricView>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MetricView {
    pub metric: String,
    pub window: usize,
    pub mean: Option<f64>,
    pub std: Option<f64>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub ewma: Option<f64>,
    pub last_value: Option<f64>,
    pub last_ts: Option<Millis>,
    pub total: u64,
    pub detectors: Vec<String>,
    pub firing: Vec<Alert>,
}

pub struct ShardCore {
    index: usize,
    policies: Arc<Policies>,
    counters: Arc<crate::status::StatusBoard>,
    /// Devices in registration order; `index` maps an id to its position.
    devices: Vec<DeviceState>,
    /// foldhash: several times faster than SipHash on short ids, and randomly seeded per table,
    /// so device ids chosen by a sender cannot be made to collide.
    by_id: HashMap<Box<str>, u32, foldhash::fast::RandomState>,
    rng: SmallRng,
    /// Points of history per metric (`analysis.history`).
    history_cap: usize,
    /// Whether minutes are kept for the history in sled (`store.history`).
    keep_minutes: bool,
}

impl MetricState {
    fn new(name: &str, policy: Arc<MetricPolicy>, now: Millis) -> Self {
        let detectors = policy
            .detectors
            .iter()
            .map(|d| DetectorSlot {
                name: d.name.as_str().into(),
                spec: d.spec.clone(),
                severity: d.severity,
                hold_ms: d.hold_ms,
                state: DetectorState::new(&d.spec, now),
                life: Lifecycle::new(),
                active: None,
                last_anomaly: 0.0,
            })
            .collect();
        MetricState {
            name: name.into(),
            stats: RollingStats::new(policy.window, policy.ewma_alpha),
            policy,
            interval: Accumulator::default(),
            total: 0,
            last: None,
            detectors,
            history: History::new(),
            minute: MinuteAcc::default(),
            closed: Vec::new(),
        }
    }

    /// The (mean, std) a new sample is judged against, for the chart's band: the first zscore
    /// detector's window (std floored at its `min_std`), else the statistics window.
    fn band(&self) -> Option<(f64, f64)> {
        for d in &self.detectors {
            if let DetectorSpec::Zscore(z) = &d.spec {
                return d.state.baseline().map(|(m, s)| (m, s.max(z.min_std)));
            }
        }
        Some((self.stats.mean()?, self.stats.std()?))
    }

    /// How many std the chart's band spans, and what it is based on (see `band`).
    fn band_k(&self) -> (f64, &'static str) {
        for d in &self.detectors {
            if let DetectorSpec::Zscore(z) = &d.spec {
                return (z.threshold, "zscore");
            }
        }
        (DEFAULT_BAND_K, "window")
    }
}

/// Band width (in std) drawn around the mean of a metric without a zscore detector.
pub const DEFAULT_BAND_K: f64 = 3.0;

/// Recent points of a device's metrics, for `GET /api/devices/{id}/series`.
#[derive(Debug, Clone, Serialize)]
pub struct SeriesView {
    pub device: String,
    /// Appliance wall clock when this was read (unix ms).
    pub now: Millis,
    pub metrics: Vec<MetricSeries>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MetricSeries {
    pub metric: String,
    /// Points kept at most (`analysis.history`).
    pub capacity: usize,
    /// The band to draw is `mean ± k·std`; `band` says whose mean and std: `zscore` (the first
    /// zscore detector's window, `k` = its threshold) or `window` (the statistics window).
    pub k: f64,
    pub band: &'static str,
    #[serde(flatten)]
    pub points: Columns,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SeriesError {
    #[error("device {0:?}")]
    UnknownDevice(String),
    #[error("metric {metric:?} of device {device:?}")]
    UnknownMetric { device: String, metric: String },
}

fn alert_id(rng: &mut SmallRng) -> u64 {
    rng.gen::<u64>() | 1
}

/// Applies a verdict to a detector's lifecycle; pushes the alert transition, if any, to `out`.
#[allow(clippy::too_many_arguments)]
fn judge(
    slot: &mut DetectorSlot,
    v: Verdict,
    device: &str,
    metric: &str,
    ts: Millis,
    value: f64,
    now: Millis,
    rng: &mut SmallRng,
    out: &mut Vec<Alert>,
) {
    let alert = |slot: &DetectorSlot, id: String, raised_at: Millis| Alert {
        id,
        device: device.to_string(),
        metric: metric.to_string(),
        detector: slot.name.to_string(),
        severity: slot.severity,
        state: AlertState::Firing,
        ts,
        value,
        score: v.score,
        anomaly: v.anomaly,
        raised_at,
        resolved_at: None,
        message: v.message(),
    };
    match slot.life.step(v.anomalous, now, slot.hold_ms) {
        None => {}
        Some(Transition::Fire) => {
            let id = alert_id(rng);
            slot.life.set_id(id);
            let a = alert(slot, format!("{id:016x}"), now);
            slot.active = Some(a.clone());
            out.push(a);
        }
        Some(Transition::Resolve) => {
            // The firing alert is normally known (also after a restart, from the snapshot).
            let fired = slot.active.take();
            let mut a = alert(
                slot,
                format!("{:016x}", slot.life.id().unwrap_or(0)),
                slot.life.raised_at().unwrap_or(now),
            );
            if let Some(f) = fired {
                a.id = f.id;
                a.raised_at = f.raised_at;
            }
            a.state = AlertState::Resolved;
            a.resolved_at = Some(now);
            out.push(a);
        }
    }
}

impl ShardCore {
    pub fn new(
        index: usize,
        policies: Arc<Policies>,
        counters: Arc<crate::status::StatusBoard>,
        now: Millis,
    ) -> Self {
        let mut core = ShardCore {
            index,
            rng: SmallRng::seed_from_u64(now as u64 ^ ((index as u64) << 48)),
            devices: Vec::new(),
            by_id: HashMap::default(),
            counters,
            history_cap: policies.resolved.config.analysis.history,
            keep_minutes: policies.resolved.config.store.history,
            policies,
        };
        let policies = core.policies.clone();
        for (id, dp) in &policies.resolved.devices {
            if crate::sources::route::shard_of(id, policies.shards) != index {
                continue;
            }
            let named: HashMap<String, Arc<MetricPolicy>> = dp
                .metrics
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let bound_source = dp
                .source
                .as_ref()
                .and_then(|s| policies.source_ids.iter().position(|x| x == s))
                .and_then(|i| u16::try_from(i).ok());
            // Listed metrics exist from the start so that silence detectors work without data.
            let metrics = named
                .iter()
                .map(|(m, p)| MetricState::new(m, p.clone(), now))
                .collect();
            core.by_id
                .insert(id.as_str().into(), core.devices.len() as u32);
            core.devices.push(DeviceState {
                id: id.as_str().into(),
                bound_source,
                default: dp.default.clone(),
                named: Some(Arc::new(named)),
                metrics,
                last_seen: None,
                registered: false,
            });
            core.counters.pipeline.devices.fetch_add(1, Relaxed);
        }
        core
    }

    pub fn index(&self) -> usize {
        self.index
    }

    /// Analyses a batch in order; alert transitions are appended to `out`.
    pub fn ingest(&mut self, source: u16, batch: &Batch, now: Millis, out: &mut Vec<Alert>) {
        let counters = self.counters.clone();
        let p = &counters.pipeline;
        let mut analysed = 0u64;
        for s in batch.iter() {
            let i = match self.by_id.get(s.device) {
                Some(&i) => i,
                None => match self.register(s.device) {
                    Some(i) => i,
                    None => continue,
                },
            };
            let Some(dev) = self.devices.get_mut(i as usize) else {
                continue;
            };
            if dev.bound_source.is_some_and(|b| b != source) {
                p.rejected_wrong_source.fetch_add(1, Relaxed);
                continue;
            }
            dev.last_seen = Some(now);
            let pos = match dev.metrics.iter().position(|m| &*m.name == s.metric) {
                Some(i) => i,
                None => {
                    if dev.metrics.len() >= MAX_METRICS_PER_DEVICE {
                        p.rejected_limit.fetch_add(1, Relaxed);
                        continue;
                    }
                    let policy = dev
                        .named
                        .as_ref()
                        .and_then(|n| n.get(s.metric).cloned())
                        .unwrap_or_else(|| dev.default.clone());
                    dev.metrics.push(MetricState::new(s.metric, policy, now));
                    dev.metrics.len() - 1
                }
            };
            let m = &mut dev.metrics[pos];
            let band = if self.history_cap > 0 { m.band() } else { None };
            m.stats.push(s.ts, s.value);
            m.interval.push(s.value);
            m.total += 1;
            m.last = Some((s.ts, s.value));
            let mut fired = false;
            for slot in &mut m.detectors {
                slot.state.seen(now);
                let v = slot.state.observe(&slot.spec, s.ts, s.value);
                fired |= v.anomalous;
                slot.last_anomaly = v.anomaly;
                judge(
                    slot,
                    v,
                    s.device,
                    &m.name,
                    s.ts,
                    s.value,
                    now,
                    &mut self.rng,
                    out,
                );
            }
            m.history.push(self.history_cap, s.ts, s.value, band, fired);
            if self.keep_minutes {
                if let Some(closed) = m.minute.push(s.ts, s.value) {
                    m.closed.push(closed);
                }
            }
            analysed += 1;
        }
        p.samples_analyzed.fetch_add(analysed, Relaxed);
    }

    /// Every series' closed minutes and its open minute so far, for the store (each snapshot);
    /// the open minute's later samples form a second part that the store merges with the first.
    pub fn take_history(&mut self) -> Vec<SeriesBuckets> {
        let mut out = Vec::new();
        for d in &mut self.devices {
            for m in &mut d.metrics {
                let mut minutes = std::mem::take(&mut m.closed);
                minutes.extend(m.minute.take());
                if !minutes.is_empty() {
                    out.push(SeriesBuckets {
                        device: d.id.to_string(),
                        metric: m.name.to_string(),
                        minutes,
                    });
                }
            }
        }
        out
    }

    /// Minutes of one series not in the store yet (closed ones and the open one so far).
    pub fn pending_history(&self, device: &str, metric: &str) -> Vec<(Millis, Bucket)> {
        self.metric(device, metric).map_or_else(Vec::new, |m| {
            let mut v = m.closed.clone();
            v.extend(m.minute.peek());
            v
        })
    }

    fn metric(&self, device: &str, metric: &str) -> Option<&MetricState> {
        let &i = self.by_id.get(device)?;
        let dev = self.devices.get(i as usize)?;
        dev.metrics.iter().find(|m| &*m.name == metric)
    }

    /// Names of the detectors `device`/`metric` runs, in config order (`None` before it is seen).
    pub fn detector_names(&self, device: &str, metric: &str) -> Option<Vec<String>> {
        let m = self.metric(device, metric)?;
        Some(m.detectors.iter().map(|d| d.name.to_string()).collect())
    }

    /// The latest outcome of each detector of `device`/`metric`, in config order, into `out`
    /// (cleared first); false when the metric is unknown. Does not allocate once `out` is sized.
    pub fn detector_outcomes(
        &self,
        device: &str,
        metric: &str,
        out: &mut Vec<DetectorOutcome>,
    ) -> bool {
        out.clear();
        let Some(m) = self.metric(device, metric) else {
            return false;
        };
        out.extend(m.detectors.iter().map(|d| DetectorOutcome {
            anomaly: d.last_anomaly,
            firing: d.life.is_firing(),
        }));
        true
    }

    fn register(&mut self, device: &str) -> Option<u32> {
        let p = &self.counters.pipeline;
        let Some(policy) = self.policies.resolved.unknown.clone() else {
            p.rejected_unknown_device.fetch_add(1, Relaxed);
            return None;
        };
        let per_shard =
            self.policies.resolved.config.analysis.max_devices / self.policies.shards.max(1) + 1;
        if self.devices.len() >= per_shard || device.is_empty() {
            p.rejected_limit.fetch_add(1, Relaxed);
            return None;
        }
        tracing::info!(device, shard = self.index, "registered unknown device");
        p.devices.fetch_add(1, Relaxed);
        let i = self.devices.len() as u32;
        self.by_id.insert(device.into(), i);
        self.devices.push(DeviceState {
            id: device.into(),
            bound_source: None,
            default: policy,
            named: None,
            metrics: Vec::new(),
            last_seen: None,
            registered: true,
        });
        Some(i)
    }

    /// Time-driven detectors (silence). Call about once a second, also when no data arrives.
    pub fn tick(&mut self, now: Millis, out: &mut Vec<Alert>) {
        for dev in self.devices.iter_mut() {
            let id = &dev.id;
            for m in &mut dev.metrics {
                let (ts, value) = m.last.unwrap_or((now, f64::NAN));
                for slot in &mut m.detectors {
                    if let Some(v) = slot.state.tick(&slot.spec, now) {
                        judge(
                            slot,
                            v,
                            id,
                            &m.name,
                            ts.max(now),
                            value,
                            now,
                            &mut self.rng,
                            out,
                        );
                    }
                }
            }
        }
    }

    /// Statistics since the previous summary for every metric that saw data; resets the interval.
    pub fn summary(&mut self, _now: Millis) -> Vec<SummaryEntry> {
        let mut entries = Vec::new();
        for dev in self.devices.iter_mut() {
            let id = &dev.id;
            for m in &mut dev.metrics {
                if m.interval.count() == 0 {
                    continue;
                }
                entries.push(SummaryEntry {
                    device: id.to_string(),
                    metric: m.name.to_string(),
                    count: m.interval.count(),
                    mean: m.interval.mean().unwrap_or(f64::NAN),
                    std: m.interval.std().unwrap_or(f64::NAN),
                    min: m.interval.min().unwrap_or(f64::NAN),
                    max: m.interval.max().unwrap_or(f64::NAN),
                    last: m.interval.last().unwrap_or(f64::NAN),
                    total: m.total,
                });
                m.interval.reset();
            }
        }
        entries
    }

    /// Current state of every device, for the API.
    pub fn view(&self, device: Option<&str>) -> Vec<DeviceView> {
        self.devices
            .iter()
            .filter(|dev| device.is_none_or(|d| d == &*dev.id))
            .map(|dev| DeviceView {
                device: dev.id.to_string(),
                registered: dev.registered,
                last_seen: dev.last_seen,
                metrics: dev
                    .metrics
                    .iter()
                    .map(|m| MetricView {
                        metric: m.name.to_string(),
                        window: m.stats.len(),
                        mean: m.stats.mean(),
                        std: m.stats.std(),
                        min: m.stats.min(),
                        max: m.stats.max(),
                        ewma: m.stats.ewma(),
                        last_value: m.last.map(|l| l.1),
                        last_ts: m.last.map(|l| l.0),
                        total: m.total,
                        detectors: m.detectors.iter().map(|d| d.name.to_string()).collect(),
                        firing: m
                            .detectors
                            .iter()
                            .filter_map(|d| d.active.clone())
                            .collect(),
                    })
                    .collect(),
            })
            .collect()
    }

    /// Recent points of one device's metrics (one metric with `metric`), those after `since`.
    pub fn series(
        &self,
        device: &str,
        metric: Option<&str>,
        since: Option<Millis>,
        now: Millis,
    ) -> Result<SeriesView, SeriesError> {
        let dev = self
            .by_id
            .get(device)
            .and_then(|&i| self.devices.get(i as usize))
            .ok_or_else(|| SeriesError::UnknownDevice(device.to_string()))?;
        let mut metrics = Vec::new();
        for m in &dev.metrics {
            if metric.is_some_and(|x| x != &*m.name) {
                continue;
            }
            let (k, band) = m.band_k();
            let mut points = Columns::default();
            m.history.query(since, &mut points);
            metrics.push(MetricSeries {
                metric: m.name.to_string(),
                capacity: self.history_cap,
                k,
                band,
                points,
            });
        }
        if let (Some(x), true) = (metric, metrics.is_empty()) {
            return Err(SeriesError::UnknownMetric {
                device: device.to_string(),
                metric: x.to_string(),
            });
        }
        metrics.sort_by(|a, b| a.metric.cmp(&b.metric));
        Ok(SeriesView {
            device: device.to_string(),
            now,
            metrics,
        })
    }

    /// Encodes every device's state for the store.
    pub fn snapshot(&self) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::with_capacity(self.devices.len());
        for dev in &self.devices {
            let id = &dev.id;
            let snap = DeviceSnapshot {
                last_seen: dev.last_seen,
                registered: dev.registered,
                metrics: dev
                    .metrics
                    .iter()
                    .map(|m| MetricSnapshot {
                        name: m.name.to_string(),
                        stats: m.stats.clone(),
                        total: m.total,
                        last: m.last,
                        detectors: m
                            .detectors
                            .iter()
                            .map(|d| DetectorSnapshot {
                                name: d.name.to_string(),
                                spec: d.spec.clone(),
                                state: d.state.clone(),
                                life: d.life.clone(),
                                active: d.active.clone(),
                            })
                            .collect(),
                    })
                    .collect(),
            };
            match postcard::to_stdvec(&snap) {
                Ok(bytes) => out.push((id.to_string(), bytes)),
                Err(e) => tracing::error!(device = %id, error = %e, "cannot encode device state"),
            }
        }
        out
    }

    /// Restores devices owned by this shard from saved snapshots. State whose policy changed
    /// (other window, other detector settings) starts fresh; the rest continues where it stopped.
    pub fn restore(&mut self, saved: &[(String, Vec<u8>)], now: Millis) -> usize {
        let mut restored = 0;
        for (id, bytes) in saved {
            if crate::sources::route::shard_of(id, self.policies.shards) != self.index {
                continue;
            }
            let snap: DeviceSnapshot = match postcard::from_bytes(bytes) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(device = %id, error = %e, "unreadable saved state ignored");
                    continue;
                }
            };
            let i = match self.by_id.get(id.as_str()) {
                Some(&i) => i,
                None if snap.registered => match self.register(id) {
                    Some(i) => i,
                    None => continue,
                },
                None => continue, // device no longer configured
            };
            let Some(dev) = self.devices.get_mut(i as usize) else {
                continue;
            };
            dev.last_seen = snap.last_seen;
            for ms in snap.metrics {
                let pos = match dev.metrics.iter().position(|m| *m.name == *ms.name) {
                    Some(i) => i,
                    None => {
                        let policy = dev
                            .named
                            .as_ref()
                            .and_then(|n| n.get(&ms.name).cloned())
                            .unwrap_or_else(|| dev.default.clone());
                        dev.metrics.push(MetricState::new(&ms.name, policy, now));
                        dev.metrics.len() - 1
                    }
                };
                let m = &mut dev.metrics[pos];
                if ms.stats.spec() == m.policy.window {
                    m.stats = ms.stats;
                }
                m.total = ms.total;
                m.last = ms.last;
                for ds in ms.detectors {
                    if let Some(slot) = m
                        .detectors
                        .iter_mut()
                        .find(|s| *s.name == *ds.name && s.spec == ds.spec)
                    {
                        if ds.state.matches(&slot.spec) {
                            if ds.active.is_some() {
                                self.counters.pipeline.alerts_firing.fetch_add(1, Relaxed);
                            }
                            slot.state = ds.state;
                            slot.life = ds.life;
                            slot.active = ds.active;
                        }
                    }
                }
            }
            restored += 1;
        }
        restored
    }

    /// Applies a reloaded config in memory: rebuilds the devices from `policies` and carries each
    /// device's state over exactly as `restore` does after a restart (unchanged policies keep
    /// their statistics, detector state and firing alerts; removed devices are dropped).
    /// Returns (devices now, devices whose state was carried over).
    pub fn reconfigure(&mut self, policies: Arc<Policies>, now: Millis) -> (usize, usize) {
        let saved = self.snapshot();
        let p = &self.counters.pipeline;
        let firing = self
            .devices
            .iter()
            .flat_map(|d| &d.metrics)
            .flat_map(|m| &m.detectors)
            .filter(|d| d.active.is_some())
            .count() as u64;
        p.devices.fetch_sub(self.devices.len() as u64, Relaxed);
        p.alerts_firing.fetch_sub(firing, Relaxed);
        let rng = self.rng.clone();
        *self = ShardCore::new(self.index, policies, self.counters.clone(), now);
        self.rng = rng;
        let kept = self.restore(&saved, now);
        (self.devices.len(), kept)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::status::StatusBoard;

    fn core(extra: &str) -> ShardCore {
        let text = format!(
            "node_id = \"n\"\n{extra}\n[template.t]\nwindow = 50\n\
             detectors = [{{ type = \"zscore\", window = 20, threshold = 4.0, warmup = 10, hold = \"0s\" }}]\n\
             [[device]]\nid = \"d1\"\ntemplate = \"t\"\n\
             [[device]]\nid = \"d2\"\n[device.metrics.level]\ndetectors = [{{ type = \"threshold\", max = 5.0 }}]\n"
        );
        let resolved = crate::config::parse_str(&text, Path::new("t.toml")).expect("config");
        let policies = Arc::new(Policies {
            resolved,
            source_ids: vec![],
            shards: 1,
        });
        let board = Arc::new(StatusBoard::new("n", Vec::new()));
        ShardCore::new(0, policies, board, 0)
    }

    fn feed(c: &mut ShardCore, device: &str, metric: &str, values: &[f64]) -> Vec<Alert> {
        let mut b = Batch::with_capacity(values.len());
        for (i, v) in values.iter().enumerate() {
            b.push(device, metric, 1_000 + i as i64 * 100, *v);
        }
        let mut out = Vec::new();
        c.ingest(0, &b, 5_000, &mut out);
        out
    }

    #[test]
    fn series_has_the_zscore_band_before_each_sample_and_marks_the_fired_point() {
        let mut c = core("");
        let mut values: Vec<f64> = (0..30).map(|i| 20.0 + (i % 3) as f64 * 0.1).collect();
        values.push(30.0);
        values.push(20.1);
        let alerts = feed(&mut c, "d1", "temp", &values);
        assert_eq!(
            alerts.len(),
            2,
            "the spike fires and the next sample resolves"
        );

        let s = c.series("d1", None, None, 7).expect("series");
        assert_eq!(s.device, "d1");
        assert_eq!(s.now, 7);
        assert_eq!(s.metrics.len(), 1);
        let m = &s.metrics[0];
        assert_eq!(
            (m.metric.as_str(), m.k, m.band, m.capacity),
            ("temp", 4.0, "zscore", 300)
        );
        assert_eq!(m.points.ts.len(), 32);
        assert_eq!(m.points.ts[0], 1_000);
        assert_eq!(m.points.fired, vec![30]);
        let (mean, std) = (m.points.mean[30], m.points.std[30]);
        assert!((mean - 20.1).abs() < 0.05, "baseline mean {mean}");
        assert!(
            30.0 > mean + m.k as f32 * std,
            "the spike lies outside the band"
        );
        assert!(
            m.points.mean[0].is_nan(),
            "no baseline before the first sample"
        );

        let tail = c
            .series("d1", Some("temp"), Some(1_000 + 30 * 100), 7)
            .expect("tail");
        assert_eq!(tail.metrics[0].points.value, vec![20.1]);
    }

    #[test]
    fn without_zscore_the_band_is_the_statistics_window_and_errors_name_what_is_missing() {
        let mut c = core("");
        feed(&mut c, "d2", "level", &[1.0, 2.0, 9.0]);
        let s = c.series("d2", Some("level"), None, 0).expect("series");
        let m = &s.metrics[0];
        assert_eq!((m.k, m.band), (DEFAULT_BAND_K, "window"));
        assert_eq!(m.points.mean[2], 1.5);
        assert_eq!(m.points.fired, vec![2], "threshold max 5 fired on 9");

        assert_eq!(
            c.series("nope", None, None, 0).unwrap_err(),
            SeriesError::UnknownDevice("nope".into())
        );
        assert!(matches!(
            c.series("d2", Some("x"), None, 0),
            Err(SeriesError::UnknownMetric { .. })
        ));
    }

    #[test]
    fn history_zero_keeps_no_points() {
        let mut c = core("[analysis]\nhistory = 0\n");
        feed(&mut c, "d1", "temp", &[1.0, 2.0]);
        let s = c.series("d1", None, None, 0).expect("series");
        assert!(s.metrics[0].points.ts.is_empty());
        assert_eq!(s.metrics[0].capacity, 0);
    }
}

/// The default detector set on the reference benchmark's workload (../shared/bench: Gaussian
/// noise per device, +12σ spikes from the 64th sample on, at least 256 samples apart), run
/// through the shard as the appliance runs it; an alert matches a spike by (device, ts).
#[cfg(test)]
mod default_catches_spikes {
    use std::path::Path;

    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use rand_distr::{Distribution, Normal};

    use super::*;
    use crate::status::StatusBoard;

    fn core() -> ShardCore {
        let text = "node_id = \"n\"\n[unknown_devices]\npolicy = \"register\"\n";
        let resolved = crate::config::parse_str(text, Path::new("t.toml")).expect("config");
        let policies = Arc::new(Policies {
            resolved,
            source_ids: vec![],
            shards: 1,
        });
        ShardCore::new(0, policies, Arc::new(StatusBoard::new("n", Vec::new())), 0)
    }

    /// Feeds `devices` series of `len` samples (10 ms apart, interleaved in batches of 100 per
    /// device) with spikes of probability `p` per eligible sample; returns (spikes, matched
    /// spikes, false alerts).
    fn run(devices: usize, len: usize, p: f64, seed: u64) -> (usize, usize, usize) {
        let mut c = core();
        let mut rng = StdRng::seed_from_u64(seed);
        let noise = Normal::new(0.0, 0.5).expect("normal");
        let names: Vec<String> = (0..devices).map(|d| format!("dev{d:04}")).collect();
        let mut last_spike: Vec<Option<usize>> = vec![None; devices];
        let mut spikes = std::collections::HashSet::new();
        let (mut matched, mut false_alerts) = (0, 0);
        let mut out = Vec::new();
        for start in (0..len).step_by(100) {
            let mut b = Batch::with_capacity(100 * devices);
            for (d, name) in names.iter().enumerate() {
                for i in start..(start + 100).min(len) {
                    let spike = i >= 64
                        && last_spike[d].is_none_or(|l| i - l >= 256)
                        && rng.gen::<f64>() < p;
                    let ts = 1_700_000_000_000 + i as i64 * 10;
                    if spike {
                        last_spike[d] = Some(i);
                        spikes.insert((d, ts));
                    }
                    let mean = 20.0 + (d % 10) as f64;
                    let x = mean + noise.sample(&mut rng) + if spike { 6.0 } else { 0.0 };
                    b.push(name, "temp", ts, x);
                }
            }
            out.clear();
            c.ingest(0, &b, 5_000, &mut out);
            for a in out.iter().filter(|a| a.state == AlertState::Firing) {
                let d: usize = a.device[3..].parse().expect("device number");
                if spikes.contains(&(d, a.ts)) {
                    matched += 1;
                } else {
                    false_alerts += 1;
                }
            }
        }
        (spikes.len(), matched, false_alerts)
    }

    #[test]
    fn spikes_from_the_64th_sample_on_are_caught() {
        // 40 devices × 2,000 samples, about two spikes each: the first ones while the history
        // is young (the warm-up z-view), the later ones against the ensemble's views.
        let (spikes, matched, false_alerts) = run(40, 2_000, 1.0 / 800.0, 1);
        assert!(spikes >= 60, "{spikes} spikes injected");
        assert!(
            matched * 100 >= spikes * 99,
            "matched {matched} of {spikes} spikes"
        );
        assert_eq!(false_alerts, 0, "false alerts next to {spikes} spikes");
    }

    #[test]
    fn a_long_clean_stretch_raises_nothing() {
        // 20 devices × 15,000 samples of noise: 300,000 samples, no alert.
        let (spikes, matched, false_alerts) = run(20, 15_000, 0.0, 2);
        assert_eq!((spikes, matched), (0, 0));
        assert_eq!(false_alerts, 0);
    }
}
