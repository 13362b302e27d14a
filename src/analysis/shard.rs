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

use super::budget::Limit;
use super::detector::forecast::ForecastView;
use super::detector::{DetectorSpec, DetectorState, Verdict};
use super::device::{CorrelationView, DeviceLevel, LevelView, ModesView};
use super::history::{Columns, History};
use super::lifecycle::{Lifecycle, Transition};
use super::samples::{Block, SeriesTap, Tap};
use super::stats::{Accumulator, RollingStats, SPAN_ONLY_MAX_COUNT};
use super::trend::{self, Trend};
use crate::config::{MetricPolicy, Resolved};
use crate::model::{Alert, AlertState, Batch, Millis, Severity, SummaryEntry, VectorSummary};
use crate::store::history::{Bucket, MinuteAcc, SeriesBuckets};

/// What the InfluxDB sinks ask of raw samples (validation allows one setting for all of them).
fn sample_mode(cfg: &crate::config::Config) -> Option<i64> {
    cfg.sinks.iter().find_map(|k| match k {
        crate::config::SinkConfig::Influxdb(i) => i.samples.interval_ms(),
        _ => None,
    })
}

/// How often a shard looks for devices and series to expire at most: every minute, or every
/// quarter of `analysis.expire_after` when that is shorter (at least once a second).
const EXPIRY_SCAN_MS: Millis = 60_000;

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
    /// Estimated bytes this series holds in the budget (`series_cost`).
    cost: u32,
    /// Appliance time of the last sample (for expiry; not persisted, restored as `last_seen`).
    seen: Millis,
    /// Named in the config: never expires on its own.
    named: bool,
    /// Its place in the current sample block and its open interval (InfluxDB `samples`).
    tap: SeriesTap,
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
    /// Device-level analysis (the vector and its detectors), when configured.
    level: Option<Box<DeviceLevel>>,
}

/// Persisted form of a device (postcard). Changing this struct: bump `STATE_VERSION` in store.
#[derive(Serialize, Deserialize)]
struct DeviceSnapshot {
    last_seen: Option<Millis>,
    registered: bool,
    metrics: Vec<MetricSnapshot>,
}

/// Fuzzing: a saved device state read from arbitrary bytes, then used as a restore would (a
/// sample pushed through its statistics and every detector whose spec it claims to match).
#[doc(hidden)]
pub fn fuzz_snapshot(bytes: &[u8]) {
    let Ok(mut snap) = postcard::from_bytes::<DeviceSnapshot>(bytes) else {
        return;
    };
    for ms in &mut snap.metrics {
        let _ = (
            ms.stats.mean(),
            ms.stats.std(),
            ms.stats.min(),
            ms.stats.max(),
        );
        ms.stats.push(1_000, 1.5);
        ms.stats.push(2_000, -3.0);
        let _ = (ms.stats.mean(), ms.stats.std(), ms.stats.last());
        for ds in &mut ms.detectors {
            if ds.state.matches(&ds.spec) {
                let _ = ds.state.observe(&ds.spec, 3_000, 2.0);
                let _ = ds.state.observe(&ds.spec, 4_000, 1e6);
            }
        }
    }
    let _ = postcard::to_stdvec(&snap);
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
    /// The device's vector and device-level detectors (absent without device-level analysis).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vector: Option<LevelView>,
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
    /// Highest anomaly score (0..1, 0.5 at the firing threshold) of the detectors' latest
    /// verdicts.
    pub anomaly: f64,
    pub detectors: Vec<String>,
    pub firing: Vec<Alert>,
    /// Least-squares trend of the statistics window (computed when read).
    pub trend: Option<Trend>,
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
    /// Estimated bytes of a series, per metric policy (keyed by the policy's address).
    costs: HashMap<usize, u32>,
    /// Devices evicted whose saved state the store should drop (taken by the actor).
    evicted: Vec<String>,
    next_expiry: Millis,
    /// Raw samples or interval statistics for the InfluxDB sinks that want them.
    tap: Option<Tap>,
}

impl MetricState {
    fn new(name: &str, policy: Arc<MetricPolicy>, now: Millis, cost: u32, named: bool) -> Self {
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
            cost,
            seen: now,
            named,
            tap: SeriesTap::default(),
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
    /// Least-squares trend of the statistics window.
    pub trend: Option<Trend>,
    /// The first forecast detector's line and crossing, when the metric has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forecast: Option<ForecastView>,
    #[serde(flatten)]
    pub points: Columns,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SeriesError {
    #[error("device {0:?}")]
    UnknownDevice(String),
    #[error("metric {metric:?} of device {device:?}")]
    UnknownMetric { device: String, metric: String },
    #[error("device {0:?} has no device-level analysis (no `vector` or `device_detectors`)")]
    NoVector(String),
    #[error("device {0:?} has no `mode` device detector")]
    NoModes(String),
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

/// Samples fed to a fresh detector state to estimate its size once its windows are full.
const COST_WARM_UP: i64 = 5_000;

/// Estimated bytes one series of `policy` holds once its windows are full: its structs, the
/// statistics ring (16 bytes a sample), the chart ring (16 bytes a point) and each detector's state
/// (its encoded size after `COST_WARM_UP` synthetic samples, a lower bound of its heap). An
/// estimate for the budget, not an allocator's count: benches/memory.sh measures the real RSS.
pub fn series_cost(policy: &MetricPolicy, history_cap: usize) -> u32 {
    let window = policy.window.count.unwrap_or(SPAN_ONLY_MAX_COUNT).max(1);
    let mut bytes = std::mem::size_of::<MetricState>() + 32 + window * 16 + history_cap * 16;
    for d in &policy.detectors {
        let mut state = DetectorState::new(&d.spec, 0);
        let mut x: u32 = 0x9e37_79b9;
        for i in 0..COST_WARM_UP {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let v = 20.0 + (i % 97) as f64 * 0.01 + f64::from(x % 1000) * 1e-3;
            state.observe(&d.spec, i * 1_000, v);
        }
        let heap = postcard::to_stdvec(&state).map_or(0, |v| v.len());
        bytes += std::mem::size_of::<DetectorSlot>() + d.name.len() + heap;
    }
    u32::try_from(bytes).unwrap_or(u32::MAX)
}

/// Appends a metric growing the vector by at most half its length: a `MetricState` is ~0.5 KiB
/// and most devices have one to a few metrics, where `Vec`'s usual growth (to 4, then doubling)
/// would hold up to 1.5 KiB of unused slots per device.
fn push_metric(metrics: &mut Vec<MetricState>, m: MetricState) {
    if metrics.len() == metrics.capacity() {
        metrics.reserve_exact((metrics.len() / 2).max(1));
    }
    metrics.push(m);
}

/// `series_cost`, computed once per policy (keyed by its address; the cache is rebuilt on reload).
fn cost_of(cache: &mut HashMap<usize, u32>, policy: &Arc<MetricPolicy>, history_cap: usize) -> u32 {
    *cache
        .entry(Arc::as_ptr(policy) as usize)
        .or_insert_with(|| series_cost(policy, history_cap))
}

/// Over the analysis budget: counted globally, per reason and per source, logged rate-limited.
#[cold]
#[inline(never)]
fn over_budget(
    board: &crate::status::StatusBoard,
    policies: &Policies,
    source: u16,
    limit: Limit,
    device: &str,
    metric: &str,
) {
    board.pipeline.rejected_limit.fetch_add(1, Relaxed);
    board.pipeline.budget.reject(limit);
    let id = policies
        .source_ids
        .get(source as usize)
        .map_or("", |s| s.as_str());
    if let Some(src) = board.source(id) {
        src.rejected_limit.fetch_add(1, Relaxed);
    }
    let (allow, suppressed) = crate::status::BUDGET_LOG[limit as usize].allow();
    if let Some(n) = suppressed {
        tracing::warn!(
            suppressed = n,
            reason = %limit.as_str(),
            "more samples over the analysis budget were not logged"
        );
    }
    if allow {
        tracing::warn!(
            source = id,
            device = %crate::status::Clean(device),
            metric = %crate::status::Clean(metric),
            reason = %limit.as_str(),
            "sample rejected: over the analysis budget"
        );
    }
}

impl ShardCore {
    pub fn new(
        index: usize,
        policies: Arc<Policies>,
        counters: Arc<crate::status::StatusBoard>,
        now: Millis,
    ) -> Self {
        counters
            .pipeline
            .budget
            .set_limits(&policies.resolved.config.analysis);
        let tap = Tap::new(sample_mode(&policies.resolved.config));
        let mut core = ShardCore {
            index,
            rng: SmallRng::seed_from_u64(now as u64 ^ ((index as u64) << 48)),
            devices: Vec::new(),
            by_id: HashMap::default(),
            counters,
            history_cap: policies.resolved.config.analysis.history,
            keep_minutes: policies.resolved.config.store.history,
            policies,
            costs: HashMap::new(),
            evicted: Vec::new(),
            next_expiry: 0,
            tap,
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
            // Configured devices and metrics always fit: they count, but are never rejected.
            let budget = &core.counters.pipeline.budget;
            let _ = budget.take_device(true);
            let metrics: Vec<MetricState> = named
                .iter()
                .map(|(m, p)| {
                    let cost = cost_of(&mut core.costs, p, core.history_cap);
                    let _ = budget.take_series(u64::from(cost), true);
                    MetricState::new(m, p.clone(), now, cost, true)
                })
                .collect();
            let level = dp.level.clone().map(|l| {
                let mut l = Box::new(DeviceLevel::new(l));
                for (pos, m) in metrics.iter().enumerate() {
                    l.metric_added(pos, &m.name);
                }
                l
            });
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
                level,
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
        let policies = self.policies.clone();
        let p = &counters.pipeline;
        let mut analysed = 0u64;
        for s in batch.iter() {
            let i = match self.by_id.get(s.device) {
                Some(&i) => i,
                None => match self.register(s.device) {
                    Ok(i) => i,
                    Err(Some(limit)) => {
                        over_budget(&counters, &policies, source, limit, s.device, s.metric);
                        continue;
                    }
                    Err(None) => continue,
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
                    let limit = if dev.metrics.len() >= p.budget.max_metrics_per_device() {
                        Err(Limit::MetricsPerDevice)
                    } else {
                        Ok(())
                    };
                    let named = dev.named.as_ref().and_then(|n| n.get(s.metric).cloned());
                    let is_named = named.is_some();
                    let policy = named.unwrap_or_else(|| dev.default.clone());
                    let cost = cost_of(&mut self.costs, &policy, self.history_cap);
                    if let Err(limit) =
                        limit.and_then(|()| p.budget.take_series(u64::from(cost), is_named))
                    {
                        over_budget(&counters, &policies, source, limit, s.device, s.metric);
                        continue;
                    }
                    push_metric(
                        &mut dev.metrics,
                        MetricState::new(s.metric, policy, now, cost, is_named),
                    );
                    if let Some(l) = &mut dev.level {
                        l.metric_added(dev.metrics.len() - 1, s.metric);
                    }
                    dev.metrics.len() - 1
                }
            };
            if let Some(l) = &mut dev.level {
                l.push(pos, s.ts, s.value, now, s.device, &mut self.rng, out);
            }
            let m = &mut dev.metrics[pos];
            m.seen = now;
            let band = if self.history_cap > 0 { m.band() } else { None };
            m.stats.push(s.ts, s.value);
            m.interval.push(s.value);
            m.total += 1;
            m.last = Some((s.ts, s.value));
            let mut fired = false;
            for slot in &mut m.detectors {
                slot.state.seen(now);
                let v = slot.state.observe(&slot.spec, s.ts, s.value);
                // A forecast judges the trend, not this point: charts draw its line instead.
                fired |= v.anomalous && !matches!(slot.spec, DetectorSpec::Forecast(_));
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
            if let Some(t) = &mut self.tap {
                t.push(&mut m.tap, s.device, &m.name, s.ts, s.value, now);
            }
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

    /// Rows collected for the sample outbox so far (the actor hands a block over at
    /// `samples::BLOCK_ROWS`).
    pub fn sample_rows(&self) -> usize {
        self.tap.as_ref().map_or(0, Tap::rows)
    }

    /// The sample block collected so far; with `close_open`, open intervals are closed first
    /// (at shutdown).
    pub fn take_samples(&mut self, close_open: bool) -> Option<Block> {
        let t = self.tap.as_mut()?;
        if close_open {
            for d in &mut self.devices {
                for m in &mut d.metrics {
                    t.close(&mut m.tap, &d.id, &m.name);
                }
            }
        }
        t.take()
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

    /// Registers an unknown device: `Err(None)` when unknown devices are rejected (counted here),
    /// `Err(Some(limit))` when the budget is full (the caller counts it with its source).
    fn register(&mut self, device: &str) -> Result<u32, Option<Limit>> {
        let p = &self.counters.pipeline;
        let Some(policy) = self.policies.resolved.unknown.clone() else {
            p.rejected_unknown_device.fetch_add(1, Relaxed);
            return Err(None);
        };
        if device.is_empty() {
            p.rejected_limit.fetch_add(1, Relaxed);
            return Err(None);
        }
        p.budget.take_device(false).map_err(Some)?;
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
            level: self
                .policies
                .resolved
                .unknown_level
                .clone()
                .map(|l| Box::new(DeviceLevel::new(l))),
        });
        Ok(i)
    }

    /// Devices evicted since the last call, whose saved state should be dropped.
    pub fn take_evicted(&mut self) -> Vec<String> {
        std::mem::take(&mut self.evicted)
    }

    /// Evicts auto-registered devices, and metrics not named in the config, last seen before
    /// `now - analysis.expire_after`. Configured devices stay (their unnamed metrics may go).
    fn expire(&mut self, now: Millis) {
        let ttl = self.policies.resolved.config.analysis.expire_after.0;
        let cutoff = now.saturating_sub(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX));
        let p = &self.counters.pipeline;
        let mut i = 0;
        while i < self.devices.len() {
            let dev = &mut self.devices[i];
            let gone = dev.registered && dev.last_seen.unwrap_or(0) < cutoff;
            let tap = &mut self.tap;
            let id = &dev.id;
            dev.metrics.retain_mut(|m| {
                let keep = !gone && (m.named || m.seen >= cutoff);
                if !keep {
                    if let Some(t) = tap.as_mut() {
                        t.close(&mut m.tap, id, &m.name);
                    }
                    p.budget.free_series(u64::from(m.cost));
                    let firing = m.detectors.iter().filter(|d| d.active.is_some()).count();
                    p.alerts_firing.fetch_sub(firing as u64, Relaxed);
                }
                keep
            });
            if !gone {
                i += 1;
                continue;
            }
            let dev = self.devices.swap_remove(i);
            self.by_id.remove(&dev.id);
            if let Some(moved) = self.devices.get(i) {
                self.by_id.insert(moved.id.clone(), i as u32);
            }
            p.budget.free_device();
            p.devices.fetch_sub(1, Relaxed);
            tracing::info!(device = %dev.id, shard = self.index, "expired device evicted");
            self.evicted.push(dev.id.into());
        }
    }

    /// Gives back every device and series of this shard to the budget (before a rebuild).
    fn release_budget(&self) {
        let b = &self.counters.pipeline.budget;
        for dev in &self.devices {
            b.free_device();
            for m in &dev.metrics {
                b.free_series(u64::from(m.cost));
            }
        }
    }

    /// Time-driven detectors (silence). Call about once a second, also when no data arrives.
    pub fn tick(&mut self, now: Millis, out: &mut Vec<Alert>) {
        if self.index == 0 {
            let node = &self.policies.resolved.config.node_id;
            out.extend(self.counters.pipeline.budget.check(node, now));
        }
        if now >= self.next_expiry {
            let ttl = self
                .policies
                .resolved
                .config
                .analysis
                .expire_after
                .0
                .as_millis();
            let every = (i64::try_from(ttl / 4).unwrap_or(i64::MAX)).clamp(1_000, EXPIRY_SCAN_MS);
            self.next_expiry = now.saturating_add(every);
            self.expire(now);
        }
        for dev in self.devices.iter_mut() {
            let id = &dev.id;
            for m in &mut dev.metrics {
                if let Some(t) = &mut self.tap {
                    t.tick(&mut m.tap, id, &m.name, now);
                }
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
    pub fn summary(&mut self, _now: Millis) -> (Vec<SummaryEntry>, Vec<VectorSummary>) {
        let mut entries = Vec::new();
        let mut vectors = Vec::new();
        for dev in self.devices.iter_mut() {
            let id = &dev.id;
            if let Some(v) = dev.level.as_ref().and_then(|l| l.summary(id)) {
                vectors.push(v);
            }
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
        (entries, vectors)
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
                        anomaly: m
                            .detectors
                            .iter()
                            .map(|d| d.last_anomaly)
                            .fold(0.0, f64::max),
                        detectors: m.detectors.iter().map(|d| d.name.to_string()).collect(),
                        firing: m
                            .detectors
                            .iter()
                            .filter_map(|d| d.active.clone())
                            .collect(),
                        trend: trend::fit(m.stats.points()),
                    })
                    .collect(),
                vector: dev.level.as_ref().map(|l| l.view()),
            })
            .collect()
    }

    /// The rolling covariance and correlation of `device`'s vector.
    pub fn correlation(&self, device: &str) -> Result<CorrelationView, SeriesError> {
        let dev = self
            .by_id
            .get(device)
            .and_then(|&i| self.devices.get(i as usize))
            .ok_or_else(|| SeriesError::UnknownDevice(device.to_string()))?;
        let level = dev
            .level
            .as_ref()
            .ok_or_else(|| SeriesError::NoVector(device.to_string()))?;
        Ok(level.correlation(device))
    }

    /// The operating modes of `device` (its first `mode` detector's).
    pub fn modes(&self, device: &str) -> Result<ModesView, SeriesError> {
        let dev = self
            .by_id
            .get(device)
            .and_then(|&i| self.devices.get(i as usize))
            .ok_or_else(|| SeriesError::UnknownDevice(device.to_string()))?;
        dev.level
            .as_ref()
            .and_then(|l| l.modes(device))
            .ok_or_else(|| SeriesError::NoModes(device.to_string()))
    }

    /// Names of the device-level detectors of `device`, in config order (`None`: no such device
    /// or no device-level analysis).
    pub fn device_detector_names(&self, device: &str) -> Option<Vec<String>> {
        let &i = self.by_id.get(device)?;
        Some(self.devices.get(i as usize)?.level.as_ref()?.names())
    }

    /// The latest (anomaly, firing) of each device-level detector of `device` into `out`
    /// (cleared first); false without device-level analysis. No allocation once `out` is sized.
    pub fn device_outcomes(&self, device: &str, out: &mut Vec<(f64, bool)>) -> bool {
        out.clear();
        let level = self
            .by_id
            .get(device)
            .and_then(|&i| self.devices.get(i as usize))
            .and_then(|d| d.level.as_ref());
        match level {
            Some(l) => {
                l.outcomes(out);
                true
            }
            None => false,
        }
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
                trend: trend::fit(m.stats.points()),
                forecast: m.detectors.iter().find_map(|d| match (&d.spec, &d.state) {
                    (DetectorSpec::Forecast(f), DetectorState::Forecast(s)) => {
                        Some(f.view(&d.name, s))
                    }
                    _ => None,
                }),
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
            // The device-level state follows the per-metric one in the same value, so that states
            // saved before it existed still decode (and older readers ignore it).
            let bytes = postcard::to_stdvec(&snap).and_then(|mut b| {
                if let Some(l) = &dev.level {
                    l.encode(&mut b)?;
                }
                Ok(b)
            });
            match bytes {
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
        let mut over = 0u64;
        let ttl = self.policies.resolved.config.analysis.expire_after.0;
        let cutoff = now.saturating_sub(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX));
        for (id, bytes) in saved {
            if crate::sources::route::shard_of(id, self.policies.shards) != self.index {
                continue;
            }
            let (snap, rest): (DeviceSnapshot, &[u8]) = match postcard::take_from_bytes(bytes) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(device = %id, error = %e, "unreadable saved state ignored");
                    continue;
                }
            };
            let i = match self.by_id.get(id.as_str()) {
                Some(&i) => i,
                None if snap.registered && snap.last_seen.unwrap_or(0) < cutoff => {
                    self.evicted.push(id.clone());
                    continue;
                }
                None if snap.registered => match self.register(id) {
                    Ok(i) => i,
                    Err(e) => {
                        if let Some(limit) = e {
                            over += 1;
                            self.counters.pipeline.budget.reject(limit);
                        }
                        continue;
                    }
                },
                None => continue, // device no longer configured
            };
            let Some(dev) = self.devices.get_mut(i as usize) else {
                continue;
            };
            dev.last_seen = snap.last_seen;
            let seen = snap.last_seen.unwrap_or(now).min(now);
            let budget = &self.counters.pipeline.budget;
            for ms in snap.metrics {
                let pos = match dev.metrics.iter().position(|m| *m.name == *ms.name) {
                    Some(i) => i,
                    None => {
                        let named = dev.named.as_ref().and_then(|n| n.get(&ms.name).cloned());
                        let is_named = named.is_some();
                        let policy = named.unwrap_or_else(|| dev.default.clone());
                        let cost = cost_of(&mut self.costs, &policy, self.history_cap);
                        let fits = dev.metrics.len() < budget.max_metrics_per_device()
                            && budget.take_series(u64::from(cost), is_named).is_ok();
                        if !fits {
                            over += 1;
                            budget.reject(Limit::Series);
                            continue;
                        }
                        push_metric(
                            &mut dev.metrics,
                            MetricState::new(&ms.name, policy, now, cost, is_named),
                        );
                        if let Some(l) = &mut dev.level {
                            l.metric_added(dev.metrics.len() - 1, &ms.name);
                        }
                        dev.metrics.len() - 1
                    }
                };
                let m = &mut dev.metrics[pos];
                m.seen = seen;
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
            if let (Some(l), false) = (&mut dev.level, rest.is_empty()) {
                let names: Vec<&str> = dev.metrics.iter().map(|m| &*m.name).collect();
                match l.decode(rest, &names) {
                    Ok(firing) => {
                        self.counters
                            .pipeline
                            .alerts_firing
                            .fetch_add(firing as u64, Relaxed);
                    }
                    Err(e) => {
                        tracing::warn!(device = %id, error = %e, "unreadable device-level state ignored")
                    }
                }
            }
            restored += 1;
        }
        if over > 0 {
            tracing::warn!(
                shard = self.index,
                skipped = over,
                "saved devices/series over the analysis budget were not restored"
            );
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
            .count() as u64
            + self
                .devices
                .iter()
                .filter_map(|d| d.level.as_ref())
                .map(|l| l.firing() as u64)
                .sum::<u64>();
        p.devices.fetch_sub(self.devices.len() as u64, Relaxed);
        p.alerts_firing.fetch_sub(firing, Relaxed);
        self.release_budget();
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

    /// A tank filling 1 % per minute, one sample every 10 s, from 50 %: full (95) at 45 min.
    /// Through the shard: the alert says when, the series and the device view carry the line.
    #[test]
    fn forecast_alert_says_when_and_the_series_carries_the_line() {
        let mut c = core(
            "[[device]]\nid = \"tank\"\n[device.metrics.level]\nwindow = 100\n\
             detectors = [{ type = \"forecast\", above = 95.0, horizon = \"3h\", window = 60, min_samples = 10 }]\n",
        );
        let t0: Millis = 1_790_000_000_000;
        let mut b = Batch::with_capacity(30);
        for i in 0..30i64 {
            // A little deterministic wobble, so the fit is not exact.
            let wobble = [0.2, -0.1, 0.0, 0.1, -0.2][i as usize % 5];
            b.push(
                "tank",
                "level",
                t0 + i * 10_000,
                50.0 + i as f64 / 6.0 + wobble,
            );
        }
        let mut out = Vec::new();
        c.ingest(0, &b, t0 + 300_000, &mut out);
        assert_eq!(out.len(), 1, "{out:?}");
        let a = &out[0];
        assert_eq!(
            (a.detector.as_str(), a.state),
            ("forecast", AlertState::Firing)
        );
        // Fired at the 10th sample (90 s): 43.5 min to go, within ±10 %.
        let truth = 45.0 * 60.0 - 90.0;
        assert!((a.score - truth).abs() < 0.1 * truth, "{a:?}");
        assert!(a.message.starts_with("crosses 95 in ~4"), "{}", a.message);

        let s = c.series("tank", Some("level"), None, 0).expect("series");
        let m = &s.metrics[0];
        let f = m.forecast.as_ref().expect("forecast view");
        let t = f.trend.expect("trend");
        assert!((t.slope * 60.0 - 1.0).abs() < 0.02, "{t:?}");
        assert_eq!((t.count, t.at_ms), (30, t0 + 290_000));
        assert!(f.followed && f.limit == Some(95.0));
        let eta = f.eta_ms.expect("eta") as f64;
        let truth = (45.0 * 60.0 - 290.0) * 1000.0;
        assert!((eta - truth).abs() < 0.05 * truth, "{eta} vs {truth}");
        assert_eq!(f.crossing_ts, Some(t.at_ms + f.eta_ms.unwrap_or(0)));
        assert!(m.points.fired.is_empty(), "a forecast marks no points");
        let w = m.trend.expect("window trend");
        assert!((w.slope - t.slope).abs() < 1e-9, "the same 30 samples");
        let d = c.view(Some("tank")).into_iter().next().expect("tank");
        assert!(d.metrics[0]
            .trend
            .is_some_and(|x| (x.slope - w.slope).abs() < 1e-12));
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
