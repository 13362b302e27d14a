//! The device's operating mode and the `mode` device detector: sequential k-means with decayed
//! counts over the standardised vector; fires on a vector far from every mode or entering a bad one.
//!
//! Centroids are kept in the metrics' own units; distances are taken in units of the within-mode
//! spread of each metric (first from the warm-up's successive differences, then online from the
//! residuals of assigned vectors) as the root mean square over the metrics: about 1 inside a mode.

// Index loops read as the formulas they implement.
#![allow(clippy::needless_range_loop)]

use serde::{Deserialize, Serialize};

use crate::config::Dur;
use crate::model::Severity;

/// Default minimum firing time of a mode alert.
pub const DEFAULT_HOLD_MS: i64 = 20_000;
/// Most modes per device.
pub const MAX_K: usize = 16;
/// Largest warm-up (vectors kept until the first clustering).
pub const MAX_WARMUP: usize = 20_000;
/// Recent in-mode distances the calibrated limit is taken from.
pub const RECENT: usize = 512;
/// The calibrated limit is recomputed every this many vectors.
const RECALIBRATE: u32 = 64;
/// A mode whose decayed count fell below this is forgotten: a new state may take its place.
const FORGOTTEN: f64 = 1.0;
/// Lloyd iterations over the warm-up after the first pass.
const LLOYD: usize = 5;

/// `{ type = "mode", ... }` in `device_detectors`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub severity: Option<Severity>,
    /// Minimum time an alert stays firing before it may resolve (default 20s).
    #[serde(default)]
    pub hold: Option<Dur>,
    /// A fixed number of modes (k-means with k); exclusive with `max_k`.
    #[serde(default)]
    pub k: Option<usize>,
    /// Modes are grown up to this many (default 8) when a vector is farther than
    /// `new_mode_distance` from every mode.
    #[serde(default)]
    pub max_k: Option<usize>,
    /// Distance from every mode beyond which a vector starts a new mode (default 6).
    #[serde(default)]
    pub new_mode_distance: Option<f64>,
    /// Vectors after which a mode's count has halved (default 2000).
    #[serde(default)]
    pub half_life: Option<usize>,
    /// Vectors learnt from before judging (default 200).
    #[serde(default)]
    pub warmup: Option<usize>,
    /// Quantile of recent in-mode distances the limit is based on (default 0.99).
    #[serde(default)]
    pub quantile: Option<f64>,
    /// Multiplier on that quantile (default 2).
    #[serde(default)]
    pub factor: Option<f64>,
    /// A fixed distance limit instead of the calibrated one.
    #[serde(default)]
    pub distance: Option<f64>,
    /// Names of modes 0, 1, 2... as seen in `GET /api/devices/{id}/modes`.
    #[serde(default)]
    pub labels: Option<Vec<String>>,
    /// Labels (from `labels`) of modes whose entry fires.
    #[serde(default)]
    pub bad: Option<Vec<String>>,
}

/// Learning and judging settings (a saved state continues only when these are unchanged).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Spec {
    /// `k` is fixed (true) or the most modes grown (false).
    pub fixed: bool,
    pub k: usize,
    pub new_mode_distance: f64,
    pub half_life: usize,
    pub warmup: usize,
    pub quantile: f64,
    pub factor: f64,
    /// Fixed limit; `None`: calibrated.
    pub distance: Option<f64>,
}

impl Default for Spec {
    fn default() -> Self {
        Spec {
            fixed: false,
            k: 8,
            new_mode_distance: 6.0,
            half_life: 2000,
            warmup: 200,
            quantile: 0.99,
            factor: 2.0,
            distance: None,
        }
    }
}

/// Names of modes and which are bad (not part of the learnt state: relabelling keeps the modes).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Labels {
    pub names: Vec<String>,
    /// `bad[i]`: mode `i` is labelled bad.
    pub bad: Vec<bool>,
}

impl Labels {
    pub fn name(&self, mode: usize) -> Option<&str> {
        self.names.get(mode).map(String::as_str)
    }

    pub fn is_bad(&self, mode: usize) -> bool {
        self.bad.get(mode).copied().unwrap_or(false)
    }
}

impl Config {
    /// Checks ranges; errors name the field.
    pub fn validate(&self) -> Result<(Spec, Labels), (&'static str, String)> {
        let d = Spec::default();
        let (fixed, k) = match (self.k, self.max_k) {
            (Some(_), Some(_)) => {
                return Err((
                    "max_k",
                    "set `k` (a fixed number of modes) or `max_k` (grown), not both".into(),
                ))
            }
            (Some(k), None) => (true, k),
            (None, m) => (false, m.unwrap_or(d.k)),
        };
        if !(1..=MAX_K).contains(&k) {
            return Err((
                if fixed { "k" } else { "max_k" },
                format!("the number of modes must be between 1 and {MAX_K}"),
            ));
        }
        let new_mode_distance = self.new_mode_distance.unwrap_or(d.new_mode_distance);
        if !(new_mode_distance > 0.0 && new_mode_distance <= 1e6) {
            return Err((
                "new_mode_distance",
                "new_mode_distance must be in (0, 1e6]".into(),
            ));
        }
        let half_life = self.half_life.unwrap_or(d.half_life);
        if !(10..=10_000_000).contains(&half_life) {
            return Err((
                "half_life",
                "half_life must be between 10 and 10000000 vectors".into(),
            ));
        }
        let warmup = self.warmup.unwrap_or(d.warmup);
        if !(20..=MAX_WARMUP).contains(&warmup) {
            return Err((
                "warmup",
                format!("warmup must be between 20 and {MAX_WARMUP} vectors"),
            ));
        }
        let quantile = self.quantile.unwrap_or(d.quantile);
        if !(quantile > 0.5 && quantile < 1.0) {
            return Err(("quantile", "quantile must be in (0.5, 1)".into()));
        }
        let factor = self.factor.unwrap_or(d.factor);
        if !(factor > 0.0 && factor <= 1e6) {
            return Err(("factor", "factor must be in (0, 1e6]".into()));
        }
        if let Some(x) = self.distance {
            if !(x > 0.0 && x <= 1e6) {
                return Err(("distance", "distance must be in (0, 1e6]".into()));
            }
        }
        let names = self.labels.clone().unwrap_or_default();
        if names.len() > k {
            return Err((
                "labels",
                format!("{} labels for at most {k} modes", names.len()),
            ));
        }
        for (i, n) in names.iter().enumerate() {
            if n.is_empty() || n.len() > 64 {
                return Err(("labels", format!("label {i} must be 1 to 64 characters")));
            }
            if names[..i].contains(n) {
                return Err(("labels", format!("label {n:?} is given twice")));
            }
        }
        let mut bad = vec![false; names.len()];
        for b in self.bad.iter().flatten() {
            match names.iter().position(|n| n == b) {
                Some(i) => bad[i] = true,
                None => {
                    return Err((
                        "bad",
                        format!("{b:?} is not one of the `labels` (bad names labelled modes)"),
                    ))
                }
            }
        }
        Ok((
            Spec {
                fixed,
                k,
                new_mode_distance,
                half_life,
                warmup,
                quantile,
                factor,
                distance: self.distance,
            },
            Labels { names, bad },
        ))
    }
}

/// The learnt modes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Model {
    /// `n` centroids of `dim` values (row-major, metrics' units), room for `k`.
    centroids: Vec<f64>,
    /// Decayed count per mode.
    weights: Vec<f64>,
    n: usize,
    /// Within-mode spread per metric.
    scale: Vec<f64>,
    /// Ring of recent in-mode distances, `ring_len` in use, next write at `ring_pos`.
    ring: Vec<f64>,
    ring_pos: usize,
    ring_len: usize,
    since_calibration: u32,
    /// Calibrated `factor` × quantile of `ring`.
    limit: f64,
    /// The mode of the latest vector and its distance to it.
    current: Option<u8>,
    distance: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Phase {
    /// Raw vectors seen so far, row after row.
    Warming(Vec<f64>),
    Ready(Model),
}

/// Per-device state of one mode detector (persisted).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct State {
    dim: usize,
    phase: Phase,
    #[serde(skip)]
    scratch: Vec<f64>,
}

/// One judgement of a device vector.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Judgement {
    pub anomalous: bool,
    /// Distance to the nearest mode before this vector was learnt from.
    pub distance: f64,
    pub limit: f64,
    /// The vector's mode now (a new one when it started one).
    pub mode: usize,
    /// The nearest mode before (differs from `mode` when a new mode started).
    pub nearest: usize,
    /// It was farther than the limit from every mode.
    pub far: bool,
    pub new_mode: bool,
    /// The mode differs from the previous vector's.
    pub entered: bool,
    /// Still learning (quiet).
    pub warming: bool,
}

impl Judgement {
    fn warming() -> Self {
        Judgement {
            anomalous: false,
            distance: f64::NAN,
            limit: f64::NAN,
            mode: 0,
            nearest: 0,
            far: false,
            new_mode: false,
            entered: false,
            warming: true,
        }
    }

    /// distance / limit (> 1: far).
    pub fn ratio(&self) -> f64 {
        let r = self.distance / self.limit;
        if r.is_nan() {
            0.0
        } else {
            r.min(crate::analysis::detector::MAX_SCORE)
        }
    }
}

/// One mode, for the API.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModeInfo {
    pub index: usize,
    pub label: Option<String>,
    pub bad: bool,
    /// Decayed count of vectors.
    pub weight: f64,
    /// The centre, in the metrics' units, in the vector's order.
    pub centroid: Vec<f64>,
}

/// RMS over metrics of (x − c)/s.
fn dist(x: &[f64], c: &[f64], s: &[f64]) -> f64 {
    let mut acc = 0.0;
    for i in 0..x.len() {
        let z = (x[i] - c[i]) / s[i];
        acc += z * z;
    }
    (acc / x.len().max(1) as f64).sqrt()
}

/// The nearest of `n` centroids: (index, distance).
fn nearest(x: &[f64], centroids: &[f64], n: usize, s: &[f64]) -> (usize, f64) {
    let d = x.len();
    let mut best = (0, f64::INFINITY);
    for j in 0..n {
        let dj = dist(x, &centroids[j * d..(j + 1) * d], s);
        if dj < best.1 {
            best = (j, dj);
        }
    }
    best
}

/// The within-mode spread of each metric from successive differences of the warm-up (robust to
/// the rare jump between modes): median |Δ| / (0.6745·√2), else mean |Δ|·√π/2, else a floor.
fn warmup_scale(rows: &[f64], d: usize) -> Vec<f64> {
    let n = rows.len() / d;
    let mut scale = vec![0.0; d];
    let mut diffs = Vec::with_capacity(n.saturating_sub(1));
    for i in 0..d {
        diffs.clear();
        let mut mag = 0.0f64;
        for r in 0..n {
            mag = mag.max(rows[r * d + i].abs());
            if r > 0 {
                diffs.push((rows[r * d + i] - rows[(r - 1) * d + i]).abs());
            }
        }
        let mut s = 0.0;
        if !diffs.is_empty() {
            let mid = diffs.len() / 2;
            let (_, m, _) = diffs.select_nth_unstable_by(mid, f64::total_cmp);
            s = *m / (0.6745 * std::f64::consts::SQRT_2);
            if s <= 0.0 {
                let mean = diffs.iter().sum::<f64>() / diffs.len() as f64;
                s = mean * std::f64::consts::PI.sqrt() / 2.0;
            }
        }
        scale[i] = s.max(1e-9 * mag.max(1.0));
    }
    scale
}

/// Clusters the warm-up: one pass that starts a mode for a vector farther than
/// `new_mode_distance` from every mode (grown) or picks the `k` farthest-apart vectors (fixed),
/// then Lloyd iterations; empty modes are dropped.
fn fit(spec: &Spec, d: usize, rows: &[f64]) -> Option<Model> {
    let n_rows = rows.len() / d;
    if n_rows == 0 || rows.iter().any(|v| !v.is_finite()) {
        return None;
    }
    let scale = warmup_scale(rows, d);
    let row = |r: usize| &rows[r * d..(r + 1) * d];
    let mut centroids = vec![0.0; spec.k * d];
    centroids[..d].copy_from_slice(row(0));
    let mut n = 1;
    if spec.fixed {
        while n < spec.k {
            let (mut far, mut far_d) = (0, 0.0);
            for r in 0..n_rows {
                let (_, dr) = nearest(row(r), &centroids, n, &scale);
                if dr > far_d {
                    (far, far_d) = (r, dr);
                }
            }
            if far_d <= 0.0 {
                break;
            }
            centroids[n * d..(n + 1) * d].copy_from_slice(row(far));
            n += 1;
        }
    } else {
        let mut counts = vec![1.0f64; spec.k];
        for r in 1..n_rows {
            let x = row(r);
            let (j, dj) = nearest(x, &centroids, n, &scale);
            if dj > spec.new_mode_distance && n < spec.k {
                centroids[n * d..(n + 1) * d].copy_from_slice(x);
                n += 1;
            } else {
                counts[j] += 1.0;
                for i in 0..d {
                    centroids[j * d + i] += (x[i] - centroids[j * d + i]) / counts[j];
                }
            }
        }
    }
    let mut counts = vec![0.0f64; spec.k];
    let mut sums = vec![0.0f64; spec.k * d];
    for _ in 0..LLOYD {
        counts.iter_mut().for_each(|c| *c = 0.0);
        sums.iter_mut().for_each(|s| *s = 0.0);
        for r in 0..n_rows {
            let (j, _) = nearest(row(r), &centroids, n, &scale);
            counts[j] += 1.0;
            for i in 0..d {
                sums[j * d + i] += row(r)[i];
            }
        }
        // Keep the non-empty modes, in order.
        let mut m = 0;
        for j in 0..n {
            if counts[j] > 0.0 {
                for i in 0..d {
                    centroids[m * d + i] = sums[j * d + i] / counts[j];
                }
                counts[m] = counts[j];
                m += 1;
            }
        }
        n = m;
    }
    let mut weights = vec![0.0; spec.k];
    weights[..n].copy_from_slice(&counts[..n]);
    let mut model = Model {
        centroids,
        weights,
        n,
        scale,
        ring: vec![0.0; RECENT],
        ring_pos: 0,
        ring_len: 0,
        since_calibration: 0,
        limit: f64::NAN,
        current: None,
        distance: f64::NAN,
    };
    for r in n_rows.saturating_sub(RECENT)..n_rows {
        let (j, dj) = nearest(row(r), &model.centroids, model.n, &model.scale);
        model.remember(dj);
        model.current = Some(j as u8);
        model.distance = dj;
    }
    let mut scratch = Vec::with_capacity(RECENT);
    model.calibrate(spec, &mut scratch);
    Some(model)
}

impl Model {
    fn remember(&mut self, distance: f64) {
        self.ring[self.ring_pos] = distance;
        self.ring_pos = (self.ring_pos + 1) % self.ring.len();
        self.ring_len = (self.ring_len + 1).min(self.ring.len());
    }

    fn calibrate(&mut self, spec: &Spec, scratch: &mut Vec<f64>) {
        self.since_calibration = 0;
        if self.ring_len == 0 {
            return;
        }
        scratch.clear();
        scratch.extend_from_slice(&self.ring[..self.ring_len]);
        let at = ((spec.quantile * self.ring_len as f64).ceil() as usize).clamp(1, self.ring_len);
        let (_, q, _) = scratch.select_nth_unstable_by(at - 1, f64::total_cmp);
        self.limit = spec.factor * q.max(1e-9);
    }

    fn centroid(&self, j: usize) -> &[f64] {
        let d = self.scale.len();
        &self.centroids[j * d..(j + 1) * d]
    }
}

impl State {
    pub fn new(spec: &Spec, dim: usize) -> Self {
        State {
            dim,
            phase: Phase::Warming(Vec::with_capacity(spec.warmup * dim)),
            scratch: Vec::with_capacity(RECENT),
        }
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Whether the modes are learnt (the warm-up is over).
    pub fn ready(&self) -> bool {
        matches!(self.phase, Phase::Ready(_))
    }

    /// Whether a restored state fits these settings and this vector size.
    pub fn fits(&self, spec: &Spec, dim: usize) -> bool {
        self.dim == dim
            && match &self.phase {
                Phase::Warming(b) => b.len() % dim.max(1) == 0 && b.len() < spec.warmup * dim,
                Phase::Ready(m) => {
                    m.centroids.len() == spec.k * dim
                        && m.weights.len() == spec.k
                        && (1..=spec.k).contains(&m.n)
                        && m.scale.len() == dim
                        && m.ring.len() == RECENT
                        && m.ring_pos < RECENT
                        && m.ring_len <= RECENT
                        && m.current.is_none_or(|c| (c as usize) < m.n)
                }
            }
    }

    /// The mode of the latest vector and its distance (`None` while warming).
    pub fn current(&self) -> Option<(usize, f64)> {
        match &self.phase {
            Phase::Ready(m) => m.current.map(|c| (c as usize, m.distance)),
            Phase::Warming(_) => None,
        }
    }

    /// Modes learnt so far (0 while warming).
    pub fn modes(&self) -> usize {
        match &self.phase {
            Phase::Ready(m) => m.n,
            Phase::Warming(_) => 0,
        }
    }

    /// The limit in force (NaN while warming).
    pub fn limit(&self, spec: &Spec) -> f64 {
        match &self.phase {
            Phase::Ready(m) => spec.distance.unwrap_or(m.limit),
            Phase::Warming(_) => f64::NAN,
        }
    }

    /// The within-mode spread per metric (empty while warming).
    pub fn scale(&self) -> &[f64] {
        match &self.phase {
            Phase::Ready(m) => &m.scale,
            Phase::Warming(_) => &[],
        }
    }

    /// Every mode, for the API.
    pub fn mode_list(&self, labels: &Labels) -> Vec<ModeInfo> {
        let Phase::Ready(m) = &self.phase else {
            return Vec::new();
        };
        (0..m.n)
            .map(|j| ModeInfo {
                index: j,
                label: labels.name(j).map(str::to_string),
                bad: labels.is_bad(j),
                weight: m.weights[j],
                centroid: m.centroid(j).to_vec(),
            })
            .collect()
    }

    /// Judges one raw device vector (`x.len() == dim`) and learns from it. Allocation-free once
    /// the warm-up is over.
    pub fn observe(&mut self, spec: &Spec, labels: &Labels, x: &[f64]) -> Judgement {
        let d = self.dim;
        if x.len() != d || d == 0 || x.iter().any(|v| !v.is_finite()) {
            return Judgement::warming();
        }
        let m = match &mut self.phase {
            Phase::Warming(buf) => {
                buf.extend_from_slice(x);
                if buf.len() >= spec.warmup * d {
                    let rows = std::mem::take(buf);
                    match fit(spec, d, &rows) {
                        Some(m) => self.phase = Phase::Ready(m),
                        None => self.phase = Phase::Warming(Vec::with_capacity(rows.len())),
                    }
                }
                return Judgement::warming();
            }
            Phase::Ready(m) => m,
        };
        let decay = 0.5f64.powf(1.0 / spec.half_life as f64);
        for w in &mut m.weights[..m.n] {
            *w *= decay;
        }
        let (j, dj) = nearest(x, &m.centroids, m.n, &m.scale);
        let limit = spec.distance.unwrap_or(m.limit);
        let far = dj > limit;
        let mut mode = j;
        let mut new_mode = false;
        if dj > spec.new_mode_distance {
            // A state never seen: a mode of its own, in a forgotten mode's place (a lone outlier
            // of before, say) or, grown, a new one while there is room.
            let forgotten = (0..m.n)
                .filter(|&i| m.weights[i] < FORGOTTEN)
                .min_by(|&a, &b| m.weights[a].total_cmp(&m.weights[b]));
            let slot = match forgotten {
                Some(s) => Some(s),
                None if !spec.fixed && m.n < spec.k => {
                    m.n += 1;
                    Some(m.n - 1)
                }
                None => None,
            };
            if let Some(s) = slot {
                m.centroids[s * d..(s + 1) * d].copy_from_slice(x);
                m.weights[s] = 1.0;
                mode = s;
                new_mode = true;
            }
        } else if !far {
            // Learn: the nearest mode moves towards x by 1/count; the spread follows the residual.
            m.weights[j] += 1.0;
            let rate = 1.0 / m.weights[j];
            let alpha = 1.0 - decay;
            for i in 0..d {
                let c = &mut m.centroids[j * d + i];
                let r = x[i] - *c;
                *c += r * rate;
                let s2 = m.scale[i] * m.scale[i];
                let floor = 1e-9 * x[i].abs().max(1.0);
                m.scale[i] = (s2 + alpha * (r * r - s2)).sqrt().max(floor);
            }
            m.remember(dj);
            m.since_calibration += 1;
            if spec.distance.is_none() && m.since_calibration >= RECALIBRATE {
                m.calibrate(spec, &mut self.scratch);
            }
        }
        let entered = m.current != Some(mode as u8);
        m.current = Some(mode as u8);
        m.distance = if new_mode { 0.0 } else { dj };
        Judgement {
            anomalous: far || labels.is_bad(mode),
            distance: dj,
            limit,
            mode,
            nearest: j,
            far,
            new_mode,
            entered,
            warming: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};

    fn noisy(rng: &mut SmallRng, c: [f64; 3]) -> [f64; 3] {
        c.map(|v| v + rng.gen_range(-0.1..0.1))
    }

    #[test]
    fn grown_modes_follow_two_alternating_states_and_a_third_is_far() {
        let spec = Spec {
            warmup: 200,
            ..Spec::default()
        };
        let labels = Labels::default();
        let mut s = State::new(&spec, 3);
        let mut rng = SmallRng::seed_from_u64(5);
        let (a, b) = ([0.0, 10.0, 5.0], [3.0, 14.0, 5.5]);
        for i in 0..1000 {
            let c = if (i / 50) % 2 == 0 { a } else { b };
            let j = s.observe(&spec, &labels, &noisy(&mut rng, c));
            assert!(!j.anomalous, "vector {i}: {j:?}");
        }
        assert_eq!(s.modes(), 2);
        let list = s.mode_list(&labels);
        for (m, c) in list.iter().zip([a, b]) {
            for (x, y) in m.centroid.iter().zip(c) {
                assert!((x - y).abs() < 0.05, "{list:?}");
            }
        }
        // Uniform ±0.1 noise: σ ≈ 0.058 per metric.
        for sc in s.scale() {
            assert!((sc - 0.0577).abs() < 0.015, "{:?}", s.scale());
        }
        let j = s.observe(&spec, &labels, &[1.5, 12.0, 9.0]);
        assert!(j.far && j.new_mode && j.anomalous && j.mode == 2, "{j:?}");
        let j = s.observe(&spec, &labels, &noisy(&mut rng, [1.5, 12.0, 9.0]));
        assert!(!j.anomalous && j.mode == 2 && !j.entered, "{j:?}");
    }

    #[test]
    fn fixed_k_keeps_k_modes_and_replaces_only_a_forgotten_one() {
        let spec = Spec {
            fixed: true,
            k: 2,
            warmup: 100,
            half_life: 10,
            ..Spec::default()
        };
        let labels = Labels::default();
        let mut s = State::new(&spec, 3);
        let mut rng = SmallRng::seed_from_u64(9);
        for i in 0..100 {
            let c = if i % 2 == 0 { [0.0; 3] } else { [5.0; 3] };
            s.observe(&spec, &labels, &noisy(&mut rng, c));
        }
        assert_eq!(s.modes(), 2);
        let j = s.observe(&spec, &labels, &[20.0; 3]);
        assert!(j.far && !j.new_mode, "both modes are fresh: {j:?}");
        for _ in 0..200 {
            s.observe(&spec, &labels, &noisy(&mut rng, [0.0; 3]));
        }
        let j = s.observe(&spec, &labels, &[20.0; 3]);
        assert!(j.new_mode && j.mode == 1, "mode 1 was forgotten: {j:?}");
    }
}
