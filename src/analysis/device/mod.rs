//! Device-level analysis: a device's metrics aligned in time into one vector (`VectorState`) and
//! the detectors over it (`multivariate`), with their alert lifecycles; owned by the device's shard.

pub mod covariance;
pub(crate) mod linalg;
pub mod multivariate;
pub mod relation;

use std::sync::Arc;

use rand::rngs::SmallRng;
use serde::{Deserialize, Serialize};

use super::lifecycle::{Lifecycle, Transition};
use crate::config::device::VectorConfig;
use crate::model::{Alert, AlertState, Millis, Severity};

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
        }
    }
}

/// One configured device-level detector.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceDetectorInstance {
    pub name: String,
    pub spec: multivariate::Spec,
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

struct Slot {
    name: Arc<str>,
    inst: DeviceDetectorInstance,
    state: Option<multivariate::State>,
    life: Lifecycle,
    active: Option<Alert>,
    last: Option<multivariate::Judgement>,
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

/// Persisted form (postcard), appended after the device's per-metric snapshot.
#[derive(Serialize, Deserialize)]
pub(crate) struct LevelSnapshot {
    members: Vec<String>,
    settled: bool,
    vectors: u64,
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

/// A device-level detector's latest outcome (for replay and the API).
#[derive(Debug, Clone, Serialize)]
pub struct LevelDetectorView {
    pub name: String,
    /// Still learning its model.
    pub warming: bool,
    /// max(T²/limit, Q/limit) of the latest vector (> 1: anomalous).
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

/// A device's vector and device-level detectors, for `GET /api/devices`.
#[derive(Debug, Clone, Serialize)]
pub struct LevelView {
    pub metrics: Vec<String>,
    pub vectors: u64,
    pub detectors: Vec<LevelDetectorView>,
}

impl DeviceLevel {
    pub(crate) fn new(policy: Arc<DeviceLevelPolicy>) -> Self {
        let slots = policy
            .detectors
            .iter()
            .map(|d| Slot {
                name: d.name.as_str().into(),
                inst: d.clone(),
                state: None,
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
                s.state = None;
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
        for slot in &mut self.slots {
            let state = match &mut slot.state {
                Some(s) if s.dim() == d => s,
                _ => slot
                    .state
                    .insert(multivariate::State::new(&slot.inst.spec, d)),
            };
            let j = state.observe(&slot.inst.spec, x);
            slot.last = Some(j);
            judge(slot, &j, &self.vector, device, now, rng, out);
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
                    warming: !s.state.as_ref().is_some_and(|st| st.ready()),
                    ratio: s.last.filter(|j| !j.warming).map(|j| j.ratio),
                    anomaly: s.last.map_or(0.0, |j| j.anomaly),
                    firing: s.active.clone(),
                })
                .collect(),
        }
    }

    pub(crate) fn snapshot(&self) -> LevelSnapshot {
        LevelSnapshot {
            members: self.vector.members.iter().map(|m| m.to_string()).collect(),
            settled: self.vector.settled,
            vectors: self.vectors,
            detectors: self
                .slots
                .iter()
                .map(|s| SlotSnapshot {
                    name: s.name.to_string(),
                    spec: s.inst.spec.clone(),
                    state: s.state.clone(),
                    life: s.life.clone(),
                    active: s.active.clone(),
                })
                .collect(),
            cov: self.cov.clone(),
            relations: self.relations.iter().map(|r| r.snapshot()).collect(),
        }
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
            let Some(slot) = self
                .slots
                .iter_mut()
                .find(|s| *s.name == *ds.name && s.inst.spec == ds.spec)
            else {
                continue;
            };
            if ds.state.as_ref().is_some_and(|s| !s.fits(d)) {
                continue;
            }
            if ds.active.is_some() {
                firing += 1;
            }
            slot.state = ds.state;
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

fn judge(
    slot: &mut Slot,
    j: &multivariate::Judgement,
    v: &VectorState,
    device: &str,
    now: Millis,
    rng: &mut SmallRng,
    out: &mut Vec<Alert>,
) {
    use rand::Rng;
    let alert = |slot: &Slot, id: String, raised_at: Millis| Alert {
        id,
        device: device.to_string(),
        metric: "*".to_string(),
        detector: slot.name.to_string(),
        severity: slot.inst.severity,
        state: AlertState::Firing,
        ts: v.out_ts,
        value: j.t2,
        score: j.ratio,
        anomaly: j.anomaly,
        raised_at,
        resolved_at: None,
        message: alert_message(j, v),
    };
    let anomalous = j.anomalous || (slot.life.is_firing() && j.ratio > slot.inst.resolve);
    match slot.life.step(anomalous, now, slot.inst.hold_ms) {
        None => {}
        Some(Transition::Fire) => {
            let id = rng.gen::<u64>() | 1;
            slot.life.set_id(id);
            let a = alert(slot, format!("{id:016x}"), now);
            slot.active = Some(a.clone());
            out.push(a);
        }
        Some(Transition::Resolve) => {
            let fired = slot.active.take();
            let mut a = alert(
                slot,
                format!("{:016x}", slot.life.id().unwrap_or(0)),
                slot.life.raised_at().unwrap_or(now),
            );
            if let Some(f) = fired {
                a.id = f.id;
                a.raised_at = f.raised_at;
                a.message = f.message;
            }
            a.state = AlertState::Resolved;
            a.resolved_at = Some(now);
            out.push(a);
        }
    }
}

#[cfg(test)]
mod tests;
