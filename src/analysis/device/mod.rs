//! Device-level analysis: a device's metrics aligned in time into one vector (`VectorState`) and
//! the detectors over it (`multivariate`, `mode`), with their alert lifecycles; owned by the device's shard.

pub mod covariance;
pub(crate) mod linalg;
pub mod mode;
pub mod multivariate;
pub mod relation;

use std::sync::Arc;

use rand::rngs::SmallRng;
use serde::{Deserialize, Serialize};

use super::lifecycle::{Lifecycle, Transition};
use crate::config::device::VectorConfig;
use crate::model::{
    Alert, AlertState, CorrelationSummary, Millis, ModeNow, Severity, VectorSummary,
};

/// Most metrics in one device vector.
pub const MAX_VECTOR: usize = 16;

/// Which metrics form the vector and how samples are aligned.
#[derive(Debug, Clone, PartialEq)]
pub struct VectorSpec {
    /// `None`: every metric of the device (the first `MAX_VECTOR` seen).
    pub metrics: Option<Vec<Box<str>>>,
    pub tolerance_ms: i64,
    pub max_age_ms: Option<i64>,
    /// Rolling covariance window: vectors, and time when set.
    pub window: usize,
    pub span_ms: Option<i64>,
    /// Summaries carry the vector's correlation matrix.
    pub summary_correlation: bool,
}

impl VectorSpec {
    pub fn from_config(c: &VectorConfig) -> Self {
        VectorSpec {
            metrics: c
                .metrics
                .as_ref()
                .map(|ms| ms.iter().map(|m| m.as_str().into()).collect()),
            tolerance_ms: c.tolerance.as_ms(),
            max_age_ms: c.max_age.map(|a| a.as_ms()),
            window: c.window,
            span_ms: c.span.map(|s| s.as_ms()),
            summary_correlation: c.summary_correlation,
        }
    }
}

/// A device-level detector's kind and settings.
#[derive(Debug, Clone, PartialEq)]
pub enum DetectorSpec {
    Multivariate(multivariate::Spec),
    /// The operating modes; the labels are not part of the learnt state.
    Mode(mode::Spec, mode::Labels),
}

/// One configured device-level detector.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceDetectorInstance {
    pub name: String,
    pub spec: DetectorSpec,
    pub severity: Severity,
    pub hold_ms: i64,
    /// A firing alert stays anomalous while the ratio exceeds this (hysteresis; 1: none).
    pub resolve: f64,
}

/// A device's vector and detectors, as configured.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceLevelPolicy {
    pub vector: VectorSpec,
    pub detectors: Vec<DeviceDetectorInstance>,
    /// `relation` detectors (regression of one member on another).
    pub relations: Vec<relation::Instance>,
}

/// Aligns samples of the member metrics into vectors. No allocation per sample.
#[derive(Debug, Clone)]
struct VectorState {
    members: Vec<Box<str>>,
    /// The members are the configured list (no others join).
    configured: bool,
    /// The member set is known: configured, or the first round of "all" is over. Later joiners
    /// change the vector's size.
    settled: bool,
    /// Device metric position → member index.
    member_of: Vec<Option<u8>>,
    values: Vec<f64>,
    ts: Vec<Option<Millis>>,
    fresh: u32,
    round_start: Option<Millis>,
    round_last: Millis,
    out: Vec<f64>,
    out_ts: Millis,
    tolerance_ms: i64,
    max_age_ms: Option<i64>,
}

impl VectorState {
    fn new(spec: &VectorSpec) -> Self {
        let members: Vec<Box<str>> = spec.metrics.clone().unwrap_or_default();
        let n = members.len();
        VectorState {
            configured: spec.metrics.is_some(),
            settled: spec.metrics.is_some(),
            members,
            member_of: Vec::new(),
            values: vec![f64::NAN; n],
            ts: vec![None; n],
            fresh: 0,
            round_start: None,
            round_last: 0,
            out: Vec::with_capacity(MAX_VECTOR),
            out_ts: 0,
            tolerance_ms: spec.tolerance_ms,
            max_age_ms: spec.max_age_ms,
        }
    }

    fn all(&self) -> u32 {
        (1u32 << self.members.len()) - 1
    }

    /// A metric appeared at device position `pos`. True when it joined a settled vector (its
    /// size changed, so the detectors start over).
    fn metric_added(&mut self, pos: usize, name: &str) -> bool {
        if self.member_of.len() <= pos {
            self.member_of.resize(pos + 1, None);
        }
        if let Some(i) = self.members.iter().position(|m| &**m == name) {
            self.member_of[pos] = Some(i as u8);
            return false;
        }
        if self.configured || self.members.len() >= MAX_VECTOR {
            return false;
        }
        self.members.push(name.into());
        self.values.push(f64::NAN);
        self.ts.push(None);
        self.member_of[pos] = Some((self.members.len() - 1) as u8);
        if self.settled {
            self.fresh = 0;
            self.round_start = None;
            return true;
        }
        false
    }

    /// Feeds member `i`'s sample. True when a vector is ready in `out` (time `out_ts`).
    fn push(&mut self, i: usize, ts: Millis, value: f64) -> bool {
        let bit = 1u32 << i;
        let mut ready = false;
        if let Some(start) = self.round_start {
            if (ts - start).abs() > self.tolerance_ms || self.fresh & bit != 0 {
                ready = self.close_round();
            }
        }
        self.values[i] = value;
        self.ts[i] = Some(ts);
        self.fresh |= bit;
        match self.round_start {
            None => {
                self.round_start = Some(ts);
                self.round_last = ts;
            }
            Some(_) => self.round_last = self.round_last.max(ts),
        }
        if self.settled && self.members.len() >= 2 && self.fresh == self.all() {
            self.emit();
            self.fresh = 0;
            self.round_start = None;
            ready = true;
        }
        ready
    }

    /// Ends the current round: a vector when every member is fresh, or (with `max_age`) the
    /// missing ones have a value recent enough.
    fn close_round(&mut self) -> bool {
        self.settled = true;
        let last = self.round_last;
        let ok = self.members.len() >= 2
            && (self.fresh == self.all()
                || self
                    .max_age_ms
                    .is_some_and(|a| self.ts.iter().all(|t| t.is_some_and(|t| last - t <= a))));
        if ok {
            self.emit();
        }
        self.fresh = 0;
        self.round_start = None;
        ok
    }

    fn emit(&mut self) {
        self.out.clear();
        self.out.extend_from_slice(&self.values);
        self.out_ts = self.round_last;
    }
}

/// A detector's state, by kind (created with the first vector of the current size).
enum SlotState {
    Multivariate(Option<multivariate::State>),
    Mode(Option<mode::State>),
}

/// A detector's latest outcome, whatever its kind.
#[derive(Debug, Clone, Copy)]
struct Verdict {
    anomalous: bool,
    /// The detector's measure (T², the distance to the nearest mode).
    value: f64,
    /// measure / limit: > 1 fires.
    ratio: f64,
    anomaly: f64,
    warming: bool,
}

struct Slot {
    name: Arc<str>,
    inst: DeviceDetectorInstance,
    state: SlotState,
    life: Lifecycle,
    active: Option<Alert>,
    last: Option<Verdict>,
}

impl Slot {
    fn ready(&self) -> bool {
        match &self.state {
            SlotState::Multivariate(s) => s.as_ref().is_some_and(|s| s.ready()),
            SlotState::Mode(s) => s.as_ref().is_some_and(|s| s.ready()),
        }
    }

    fn reset(&mut self) {
        match &mut self.state {
            SlotState::Multivariate(s) => *s = None,
            SlotState::Mode(s) => *s = None,
        }
    }
}

/// One device's device-level state.
pub(crate) struct DeviceLevel {
    policy: Arc<DeviceLevelPolicy>,
    vector: VectorState,
    slots: Vec<Slot>,
    /// Vectors formed so far.
    vectors: u64,
    /// Rolling covariance of the raw vectors (created with the first vector).
    cov: Option<covariance::RollingCov>,
    relations: Vec<relation::Slot>,
}

/// Persisted form (postcard), appended after the device's per-metric snapshot; the `mode`
/// detectors' part (`ModePart`) follows it, so that states saved before it existed still decode.
#[derive(Serialize, Deserialize)]
pub(crate) struct LevelSnapshot {
    members: Vec<String>,
    settled: bool,
    vectors: u64,
    /// The `multivariate` detectors.
    detectors: Vec<SlotSnapshot>,
    cov: Option<covariance::RollingCov>,
    relations: Vec<relation::SlotSnapshot>,
}

#[derive(Serialize, Deserialize)]
struct SlotSnapshot {
    name: String,
    spec: multivariate::Spec,
    state: Option<multivariate::State>,
    life: Lifecycle,
    active: Option<Alert>,
}

/// The `mode` detectors' saved state (after `LevelSnapshot`).
#[derive(Serialize, Deserialize, Default)]
struct ModePart {
    detectors: Vec<ModeSlotSnapshot>,
}

#[derive(Serialize, Deserialize)]
struct ModeSlotSnapshot {
    name: String,
    spec: mode::Spec,
    state: Option<mode::State>,
    life: Lifecycle,
    active: Option<Alert>,
}

/// A device-level detector's latest outcome (for replay and the API).
#[derive(Debug, Clone, Serialize)]
pub struct LevelDetectorView {
    pub name: String,
    /// Still learning its model.
    pub warming: bool,
    /// The latest vector's statistic / limit (> 1: anomalous): max(T²/limit, Q/limit) for
    /// `multivariate`, distance to the nearest mode / limit for `mode`.
    pub ratio: Option<f64>,
    pub anomaly: f64,
    pub firing: Option<Alert>,
}

/// `GET /api/devices/{id}/correlation`: the rolling covariance and correlation of the vector.
#[derive(Debug, Clone, Serialize)]
pub struct CorrelationView {
    pub device: String,
    /// The vector's metrics: the rows and columns of the matrices, in this order.
    pub metrics: Vec<String>,
    /// Vectors in the window now.
    pub count: usize,
    pub window: usize,
    pub span_ms: Option<i64>,
    pub mean: Vec<f64>,
    /// Sample covariance (n − 1); `null` entries with fewer than two vectors.
    pub covariance: Vec<Vec<f64>>,
    /// Pearson correlation; `null` where a metric did not vary.
    pub correlation: Vec<Vec<f64>>,
}

/// `GET /api/devices/{id}/modes`: the device's operating modes.
#[derive(Debug, Clone, Serialize)]
pub struct ModesView {
    pub device: String,
    /// The `mode` detector they come from.
    pub detector: String,
    /// The order of each centroid's values.
    pub metrics: Vec<String>,
    pub now: ModeNow,
    /// The distance beyond which a vector is "a state never seen" (`null` while warming).
    pub limit: Option<f64>,
    pub new_mode_distance: f64,
    /// Within-mode spread of each metric: the unit of the distances.
    pub scale: Vec<f64>,
    pub modes: Vec<mode::ModeInfo>,
}

/// A device's vector and device-level detectors, for `GET /api/devices`.
#[derive(Debug, Clone, Serialize)]
pub struct LevelView {
    pub metrics: Vec<String>,
    pub vectors: u64,
    pub detectors: Vec<LevelDetectorView>,
    /// The operating mode, with a `mode` detector.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<ModeNow>,
}

fn finite(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

impl DeviceLevel {
    pub(crate) fn new(policy: Arc<DeviceLevelPolicy>) -> Self {
        let slots = policy
            .detectors
            .iter()
            .map(|d| Slot {
                name: d.name.as_str().into(),
                inst: d.clone(),
                state: match d.spec {
                    DetectorSpec::Multivariate(_) => SlotState::Multivariate(None),
                    DetectorSpec::Mode(..) => SlotState::Mode(None),
                },
                life: Lifecycle::new(),
                active: None,
                last: None,
            })
            .collect();
        DeviceLevel {
            vector: VectorState::new(&policy.vector),
            relations: policy.relations.iter().map(relation::Slot::new).collect(),
            policy,
            slots,
            vectors: 0,
            cov: None,
        }
    }

    /// A metric appeared at device position `pos` (call for every metric, in order).
    pub(crate) fn metric_added(&mut self, pos: usize, name: &str) {
        if self.vector.metric_added(pos, name) {
            for s in &mut self.slots {
                s.reset();
            }
            self.cov = None;
        }
    }

    /// Feeds the sample of the metric at device position `pos`; when it completes a vector the
    /// detectors judge it and alert transitions go to `out`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn push(
        &mut self,
        pos: usize,
        ts: Millis,
        value: f64,
        now: Millis,
        device: &str,
        rng: &mut SmallRng,
        out: &mut Vec<Alert>,
    ) {
        let Some(&Some(i)) = self.vector.member_of.get(pos) else {
            return;
        };
        if !self.vector.push(i as usize, ts, value) {
            return;
        }
        self.vectors += 1;
        let x = &self.vector.out;
        let d = x.len();
        let spec = &self.policy.vector;
        let cov = match &mut self.cov {
            Some(c) if c.dim() == d => c,
            _ => self
                .cov
                .insert(covariance::RollingCov::new(d, spec.window, spec.span_ms)),
        };
        cov.push(self.vector.out_ts, x);
        for (k, slot) in self.slots.iter_mut().enumerate() {
            // The policy's copy of the settings: the slot is borrowed mutably below.
            let Some(inst) = self.policy.detectors.get(k) else {
                continue;
            };
            match (&inst.spec, &mut slot.state) {
                (DetectorSpec::Multivariate(spec), SlotState::Multivariate(state)) => {
                    let state = match state {
                        Some(s) if s.dim() == d => s,
                        _ => state.insert(multivariate::State::new(spec, d)),
                    };
                    let j = state.observe(spec, x);
                    let v = Verdict {
                        anomalous: j.anomalous,
                        value: j.t2,
                        ratio: j.ratio,
                        anomaly: j.anomaly,
                        warming: j.warming,
                    };
                    slot.last = Some(v);
                    judge(slot, v, &self.vector, device, now, rng, out, || {
                        alert_message(&j, &self.vector)
                    });
                }
                (DetectorSpec::Mode(spec, labels), SlotState::Mode(state)) => {
                    let state = match state {
                        Some(s) if s.dim() == d => s,
                        _ => state.insert(mode::State::new(spec, d)),
                    };
                    let j = state.observe(spec, labels, x);
                    let ratio = j.ratio();
                    let mut anomaly = crate::analysis::detector::anomaly(ratio, 1.0);
                    if j.anomalous {
                        anomaly = anomaly.max(0.5);
                    }
                    let v = Verdict {
                        anomalous: j.anomalous,
                        value: j.distance,
                        ratio,
                        anomaly: if j.warming { 0.0 } else { anomaly },
                        warming: j.warming,
                    };
                    slot.last = Some(v);
                    judge(slot, v, &self.vector, device, now, rng, out, || {
                        mode_message(&j, labels)
                    });
                }
                // A slot's state is made for its kind in `new`.
                _ => {}
            }
        }
        for r in &mut self.relations {
            let v = &self.vector;
            r.push(&v.members, &v.out, v.out_ts, now, device, rng, out);
        }
    }

    /// Each detector's latest (anomaly in [0, 1], firing), in config order, into `out`.
    pub(crate) fn outcomes(&self, out: &mut Vec<(f64, bool)>) {
        out.clear();
        out.extend(
            self.slots
                .iter()
                .map(|s| (s.last.map_or(0.0, |j| j.anomaly), s.life.is_firing())),
        );
    }

    pub(crate) fn names(&self) -> Vec<String> {
        self.slots.iter().map(|s| s.name.to_string()).collect()
    }

    pub(crate) fn firing(&self) -> usize {
        self.slots.iter().filter(|s| s.active.is_some()).count()
            + self.relations.iter().filter(|r| r.is_firing()).count()
    }

    pub(crate) fn view(&self) -> LevelView {
        LevelView {
            metrics: self.vector.members.iter().map(|m| m.to_string()).collect(),
            vectors: self.vectors,
            detectors: self
                .slots
                .iter()
                .map(|s| LevelDetectorView {
                    name: s.name.to_string(),
                    warming: !s.ready(),
                    ratio: s.last.filter(|j| !j.warming).map(|j| j.ratio),
                    anomaly: s.last.map_or(0.0, |j| j.anomaly),
                    firing: s.active.clone(),
                })
                .collect(),
            mode: self.mode_now(),
        }
    }

    /// The first `mode` detector: its settings and state.
    fn mode_slot(&self) -> Option<(&Slot, &mode::Spec, &mode::Labels, Option<&mode::State>)> {
        self.slots
            .iter()
            .find_map(|s| match (&s.inst.spec, &s.state) {
                (DetectorSpec::Mode(spec, labels), SlotState::Mode(st)) => {
                    Some((s, spec, labels, st.as_ref()))
                }
                _ => None,
            })
    }

    /// The device's operating mode now (`None` without a `mode` detector).
    pub(crate) fn mode_now(&self) -> Option<ModeNow> {
        let (_, _, labels, st) = self.mode_slot()?;
        let cur = st.and_then(|s| s.current());
        Some(ModeNow {
            index: cur.map(|c| c.0),
            label: cur.and_then(|c| labels.name(c.0)).map(str::to_string),
            bad: cur.is_some_and(|c| labels.is_bad(c.0)),
            distance: cur.and_then(|c| finite(c.1)),
            modes: st.map_or(0, |s| s.modes()),
            warming: !st.is_some_and(|s| s.ready()),
        })
    }

    /// The device's operating modes (`None` without a `mode` detector).
    pub(crate) fn modes(&self, device: &str) -> Option<ModesView> {
        let (slot, spec, labels, st) = self.mode_slot()?;
        Some(ModesView {
            device: device.to_string(),
            detector: slot.name.to_string(),
            metrics: self.vector.members.iter().map(|m| m.to_string()).collect(),
            now: self.mode_now()?,
            limit: st.and_then(|s| finite(s.limit(spec))),
            new_mode_distance: spec.new_mode_distance,
            scale: st.map_or_else(Vec::new, |s| s.scale().to_vec()),
            modes: st.map_or_else(Vec::new, |s| s.mode_list(labels)),
        })
    }

    /// The device's part of a summary: its mode (with a `mode` detector) and correlation matrix
    /// (with `summary_correlation`); `None` when neither applies.
    pub(crate) fn summary(&self, device: &str) -> Option<VectorSummary> {
        let mode = self.mode_now();
        let correlation = self.policy.vector.summary_correlation.then(|| {
            let c = self.correlation(device);
            CorrelationSummary {
                metrics: c.metrics,
                count: c.count,
                matrix: c
                    .correlation
                    .into_iter()
                    .map(|r| r.into_iter().map(finite).collect())
                    .collect(),
            }
        });
        (mode.is_some() || correlation.is_some()).then(|| VectorSummary {
            device: device.to_string(),
            mode,
            correlation,
        })
    }

    pub(crate) fn snapshot(&self) -> LevelSnapshot {
        LevelSnapshot {
            members: self.vector.members.iter().map(|m| m.to_string()).collect(),
            settled: self.vector.settled,
            vectors: self.vectors,
            detectors: self
                .slots
                .iter()
                .filter_map(|s| match (&s.inst.spec, &s.state) {
                    (DetectorSpec::Multivariate(spec), SlotState::Multivariate(state)) => {
                        Some(SlotSnapshot {
                            name: s.name.to_string(),
                            spec: spec.clone(),
                            state: state.clone(),
                            life: s.life.clone(),
                            active: s.active.clone(),
                        })
                    }
                    _ => None,
                })
                .collect(),
            cov: self.cov.clone(),
            relations: self.relations.iter().map(|r| r.snapshot()).collect(),
        }
    }

    fn mode_part(&self) -> ModePart {
        ModePart {
            detectors: self
                .slots
                .iter()
                .filter_map(|s| match (&s.inst.spec, &s.state) {
                    (DetectorSpec::Mode(spec, _), SlotState::Mode(state)) => {
                        Some(ModeSlotSnapshot {
                            name: s.name.to_string(),
                            spec: spec.clone(),
                            state: state.clone(),
                            life: s.life.clone(),
                            active: s.active.clone(),
                        })
                    }
                    _ => None,
                })
                .collect(),
        }
    }

    /// The saved form: `LevelSnapshot`, then the `mode` detectors' part when there are any.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) -> Result<(), postcard::Error> {
        out.extend(postcard::to_stdvec(&self.snapshot())?);
        let modes = self.mode_part();
        if !modes.detectors.is_empty() {
            out.extend(postcard::to_stdvec(&modes)?);
        }
        Ok(())
    }

    /// Continues from `encode`d bytes (see `restore`). Returns the firing alerts taken over.
    pub(crate) fn decode(
        &mut self,
        bytes: &[u8],
        metrics: &[&str],
    ) -> Result<usize, postcard::Error> {
        let (snap, rest) = postcard::take_from_bytes::<LevelSnapshot>(bytes)?;
        let modes = if rest.is_empty() {
            ModePart::default()
        } else {
            postcard::from_bytes::<ModePart>(rest)?
        };
        Ok(self.restore(snap, metrics) + self.restore_modes(modes))
    }

    /// The rolling covariance and correlation of the vector.
    pub(crate) fn correlation(&self, device: &str) -> CorrelationView {
        let d = self.vector.members.len();
        let (mut cov, mut corr) = (Vec::new(), Vec::new());
        let (mut count, mut mean) = (0, vec![f64::NAN; d]);
        if let Some(c) = self.cov.as_ref().filter(|c| c.dim() == d) {
            c.covariance(&mut cov);
            c.correlation(&mut corr);
            count = c.count();
            mean = c.mean().to_vec();
        } else {
            cov = vec![f64::NAN; d * d];
            corr = cov.clone();
        }
        let rows =
            |m: Vec<f64>| -> Vec<Vec<f64>> { m.chunks(d.max(1)).map(<[f64]>::to_vec).collect() };
        CorrelationView {
            device: device.to_string(),
            metrics: self.vector.members.iter().map(|m| m.to_string()).collect(),
            count,
            window: self.policy.vector.window,
            span_ms: self.policy.vector.span_ms,
            mean,
            covariance: rows(cov),
            correlation: rows(corr),
        }
    }

    /// Continues from a saved state where it still fits the policy: the same members (for a
    /// configured list) and, per detector, the same name and settings. `metrics` are the
    /// device's metric names by position. Returns the firing alerts taken over.
    pub(crate) fn restore(&mut self, snap: LevelSnapshot, metrics: &[&str]) -> usize {
        let members: Vec<Box<str>> = snap.members.iter().map(|m| m.as_str().into()).collect();
        if self.vector.configured && members != self.vector.members {
            return 0;
        }
        if members.len() > MAX_VECTOR {
            return 0;
        }
        let mut v = VectorState::new(&self.policy.vector);
        v.values = vec![f64::NAN; members.len()];
        v.ts = vec![None; members.len()];
        v.members = members;
        v.settled = snap.settled || v.configured;
        self.vector = v;
        for (pos, name) in metrics.iter().enumerate() {
            self.vector.metric_added(pos, name);
        }
        self.vectors = snap.vectors;
        let spec = &self.policy.vector;
        self.cov = snap
            .cov
            .filter(|c| c.fits(self.vector.members.len(), spec.window, spec.span_ms));
        let d = self.vector.members.len();
        let mut firing = 0;
        for rs in snap.relations {
            if let Some(r) = self.relations.iter_mut().find(|r| r.name() == rs.name()) {
                firing += usize::from(r.restore(rs));
            }
        }
        for ds in snap.detectors {
            let Some(slot) = self.slots.iter_mut().find(|s| {
                *s.name == *ds.name
                    && matches!(&s.inst.spec, DetectorSpec::Multivariate(sp) if *sp == ds.spec)
            }) else {
                continue;
            };
            if ds.state.as_ref().is_some_and(|s| !s.fits(d)) {
                continue;
            }
            if ds.active.is_some() {
                firing += 1;
            }
            slot.state = SlotState::Multivariate(ds.state);
            slot.life = ds.life;
            slot.active = ds.active;
        }
        firing
    }

    /// The `mode` detectors' part of `restore` (after it: the vector's members are known).
    fn restore_modes(&mut self, part: ModePart) -> usize {
        let d = self.vector.members.len();
        let mut firing = 0;
        for ds in part.detectors {
            let Some(slot) = self.slots.iter_mut().find(|s| {
                *s.name == *ds.name
                    && matches!(&s.inst.spec, DetectorSpec::Mode(sp, _) if *sp == ds.spec)
            }) else {
                continue;
            };
            if ds.state.as_ref().is_some_and(|s| !s.fits(&ds.spec, d)) {
                continue;
            }
            if ds.active.is_some() {
                firing += 1;
            }
            slot.state = SlotState::Mode(ds.state);
            slot.life = ds.life;
            slot.active = ds.active;
        }
        firing
    }
}

fn alert_message(j: &multivariate::Judgement, v: &VectorState) -> String {
    let mut m = format!("T² {:.1} (limit {:.1})", j.t2, j.t2_limit);
    if j.q.is_finite() {
        m.push_str(&format!(", Q {:.2} (limit {:.2})", j.q, j.q_limit));
    }
    if j.ntop > 0 {
        m.push_str("; most: ");
        let names: Vec<&str> = j.top[..j.ntop as usize]
            .iter()
            .filter_map(|&i| v.members.get(i as usize).map(|s| &**s))
            .collect();
        m.push_str(&names.join(", "));
    }
    m
}

/// "mode 2" or "mode 2 (idle)".
fn mode_name(i: usize, labels: &mode::Labels) -> String {
    match labels.name(i) {
        Some(l) => format!("mode {i} ({l})"),
        None => format!("mode {i}"),
    }
}

fn mode_message(j: &mode::Judgement, labels: &mode::Labels) -> String {
    let mut m = String::new();
    if j.far {
        m.push_str(&format!(
            "a state never seen: distance {:.1} from the nearest mode, {} (limit {:.1})",
            j.distance,
            mode_name(j.nearest, labels),
            j.limit
        ));
        if j.new_mode {
            m.push_str(&format!("; learnt as {}", mode_name(j.mode, labels)));
        }
    }
    if labels.is_bad(j.mode) {
        if !m.is_empty() {
            m.push_str("; ");
        }
        m.push_str(&format!(
            "in {}, labelled bad (distance {:.1})",
            mode_name(j.mode, labels),
            j.distance
        ));
    }
    m
}

#[allow(clippy::too_many_arguments)]
fn judge(
    slot: &mut Slot,
    j: Verdict,
    v: &VectorState,
    device: &str,
    now: Millis,
    rng: &mut SmallRng,
    out: &mut Vec<Alert>,
    message: impl Fn() -> String,
) {
    use rand::Rng;
    let alert = |slot: &Slot, id: String, raised_at: Millis, message: String| Alert {
        id,
        device: device.to_string(),
        metric: "*".to_string(),
        detector: slot.name.to_string(),
        severity: slot.inst.severity,
        state: AlertState::Firing,
        ts: v.out_ts,
        value: j.value,
        score: j.ratio,
        anomaly: j.anomaly,
        raised_at,
        resolved_at: None,
        message,
    };
    let anomalous = j.anomalous || (slot.life.is_firing() && j.ratio > slot.inst.resolve);
    match slot.life.step(anomalous, now, slot.inst.hold_ms) {
        None => {}
        Some(Transition::Fire) => {
            let id = rng.gen::<u64>() | 1;
            slot.life.set_id(id);
            let a = alert(slot, format!("{id:016x}"), now, message());
            slot.active = Some(a.clone());
            out.push(a);
        }
        Some(Transition::Resolve) => {
            let fired = slot.active.take();
            let mut a = alert(
                slot,
                format!("{:016x}", slot.life.id().unwrap_or(0)),
                slot.life.raised_at().unwrap_or(now),
                String::new(),
            );
            match fired {
                Some(f) => {
                    a.id = f.id;
                    a.raised_at = f.raised_at;
                    a.message = f.message;
                }
                None => a.message = message(),
            }
            a.state = AlertState::Resolved;
            a.resolved_at = Some(now);
            out.push(a);
        }
    }
}

#[cfg(test)]
mod tests;
