//! The `multivariate` device detector: Hotelling's T² of the (optionally EWMA-smoothed, i.e.
//! MEWMA) standardised device vector against the covariance learnt during the warm-up, optionally
//! with the PCA residual (SPE/Q); limits from an empirical quantile of the warm-up or from χ².

// Index loops read as the formulas they implement.
#![allow(clippy::needless_range_loop)]

use serde::{Deserialize, Serialize};

use super::linalg;
use crate::config::Dur;
use crate::model::Severity;

/// Default minimum firing time of a multivariate alert.
pub const DEFAULT_HOLD_MS: i64 = 20_000;
/// Default resolve level: a firing alert stays anomalous until the ratio (statistic / limit)
/// falls to this (hysteresis, so a statistic hovering around the limit does not flap).
pub const DEFAULT_RESOLVE: f64 = 0.5;
/// Most metrics a multivariate alert names as the main contributors.
pub const MAX_TOP: usize = 8;
/// Largest warm-up (vectors kept until the model is fitted; 16 metrics × 8 bytes each).
pub const MAX_WARMUP: usize = 20_000;

/// How the firing limit is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Limit {
    /// `factor` × the `quantile` of the statistic over the warm-up vectors themselves.
    #[default]
    Empirical,
    /// `factor` × the χ²(d) `quantile` (Wilson–Hilferty); Q always uses the empirical limit.
    Chi2,
}

/// `{ type = "multivariate", ... }` in `device_detectors`.
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
    /// A firing alert resolves once the ratio to the limit falls to this (in (0, 1]; default
    /// 0.5; 1: no hysteresis).
    #[serde(default)]
    pub resolve: Option<f64>,
    /// Vectors learnt from before judging (default 400).
    #[serde(default)]
    pub warmup: Option<usize>,
    /// EWMA weight of the newest standardised vector (1: no smoothing; default 0.1).
    #[serde(default)]
    pub smoothing: Option<f64>,
    /// Also judge the PCA residual (SPE/Q) outside the components explaining 90 % of the variance.
    #[serde(default)]
    pub residual: Option<bool>,
    #[serde(default)]
    pub limit: Option<Limit>,
    /// Quantile the limit is based on (default 0.99).
    #[serde(default)]
    pub quantile: Option<f64>,
    /// Multiplier on the quantile (default 7 for `empirical`, 1 for `chi2`).
    #[serde(default)]
    pub factor: Option<f64>,
    /// Added to the covariance's diagonal (standardised units; default 0.001).
    #[serde(default)]
    pub ridge: Option<f64>,
    /// Metrics named in the alert as the main contributors (default 3).
    #[serde(default)]
    pub top: Option<usize>,
}

/// Validated settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Spec {
    pub warmup: usize,
    pub smoothing: f64,
    pub residual: bool,
    pub limit: Limit,
    pub quantile: f64,
    pub factor: f64,
    pub ridge: f64,
    pub top: usize,
}

impl Default for Spec {
    fn default() -> Self {
        Spec {
            warmup: 400,
            smoothing: 0.1,
            residual: false,
            limit: Limit::Empirical,
            quantile: 0.99,
            factor: 7.0,
            ridge: 1e-3,
            top: 3,
        }
    }
}

impl Config {
    /// Checks ranges; errors name the field.
    pub fn validate(&self) -> Result<Spec, (&'static str, String)> {
        let d = Spec::default();
        let warmup = self.warmup.unwrap_or(d.warmup);
        if !(20..=MAX_WARMUP).contains(&warmup) {
            return Err((
                "warmup",
                format!("warmup must be between 20 and {MAX_WARMUP} vectors"),
            ));
        }
        let smoothing = self.smoothing.unwrap_or(d.smoothing);
        if !(smoothing > 0.0 && smoothing <= 1.0) {
            return Err(("smoothing", "smoothing must be in (0, 1]".into()));
        }
        let quantile = self.quantile.unwrap_or(d.quantile);
        if !(quantile > 0.5 && quantile < 1.0) {
            return Err(("quantile", "quantile must be in (0.5, 1)".into()));
        }
        let limit = self.limit.unwrap_or_default();
        let factor = self.factor.unwrap_or(match limit {
            Limit::Empirical => d.factor,
            Limit::Chi2 => 1.0,
        });
        if !(factor > 0.0 && factor <= 1e6) {
            return Err(("factor", "factor must be in (0, 1e6]".into()));
        }
        let ridge = self.ridge.unwrap_or(d.ridge);
        if !(0.0..=1e3).contains(&ridge) {
            return Err(("ridge", "ridge must be in [0, 1000]".into()));
        }
        if self
            .resolve
            .is_some_and(|r| !(r > 0.0 && r <= 1.0 && r.is_finite()))
        {
            return Err(("resolve", "resolve must be in (0, 1]".into()));
        }
        let top = self.top.unwrap_or(d.top);
        if top > MAX_TOP {
            return Err(("top", format!("top must be at most {MAX_TOP}")));
        }
        Ok(Spec {
            warmup,
            smoothing,
            residual: self.residual.unwrap_or(false),
            limit,
            quantile,
            factor,
            ridge,
            top,
        })
    }
}

/// The fitted model: standardisation, centre and Cholesky factor of the smoothed vectors'
/// covariance, limits, and the residual subspace when `residual` is on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Model {
    mean: Vec<f64>,
    std: Vec<f64>,
    center: Vec<f64>,
    /// Lower Cholesky factor of covariance + ridge·I, row-major d×d.
    chol: Vec<f64>,
    t2_limit: f64,
    /// Principal directions kept (row-major d×k) and k; Q limit.
    pcs: Vec<f64>,
    k: usize,
    q_limit: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Phase {
    /// Raw vectors seen so far, row after row.
    Warming(Vec<f64>),
    Ready(Model),
}

/// Per-device state of one multivariate detector (persisted).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct State {
    dim: usize,
    phase: Phase,
    /// The current smoothed standardised vector.
    smooth: Vec<f64>,
    #[serde(skip)]
    scratch: Vec<f64>,
}

/// One judgement of a device vector.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Judgement {
    pub anomalous: bool,
    /// max(T²/limit, Q/limit): > 1 fires.
    pub ratio: f64,
    /// `ratio` on [0, 1] with 0.5 at the limit.
    pub anomaly: f64,
    pub t2: f64,
    pub t2_limit: f64,
    /// NaN without `residual`.
    pub q: f64,
    pub q_limit: f64,
    /// Indices of the main contributors to T², largest first; `ntop` of them are valid.
    pub top: [u8; MAX_TOP],
    pub ntop: u8,
    /// Still learning (quiet).
    pub warming: bool,
}

impl Judgement {
    fn warming() -> Self {
        Judgement {
            anomalous: false,
            ratio: 0.0,
            anomaly: 0.0,
            t2: 0.0,
            t2_limit: f64::NAN,
            q: f64::NAN,
            q_limit: f64::NAN,
            top: [0; MAX_TOP],
            ntop: 0,
            warming: true,
        }
    }
}

impl State {
    pub fn new(spec: &Spec, dim: usize) -> Self {
        State {
            dim,
            phase: Phase::Warming(Vec::with_capacity(spec.warmup * dim)),
            smooth: vec![0.0; dim],
            scratch: vec![0.0; 2 * dim],
        }
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Whether the model is fitted (the warm-up is over).
    pub fn ready(&self) -> bool {
        matches!(self.phase, Phase::Ready(_))
    }

    /// Whether a restored state fits these settings and this vector size.
    pub fn fits(&self, dim: usize) -> bool {
        let ok_len = |v: &Vec<f64>, n: usize| v.len() == n;
        self.dim == dim
            && ok_len(&self.smooth, dim)
            && match &self.phase {
                Phase::Warming(b) => b.len() % dim.max(1) == 0,
                Phase::Ready(m) => {
                    ok_len(&m.mean, dim)
                        && ok_len(&m.std, dim)
                        && ok_len(&m.center, dim)
                        && ok_len(&m.chol, dim * dim)
                        && m.pcs.len() == dim * m.k
                }
            }
    }

    /// Judges one raw device vector (`x.len() == dim`). Allocation-free once fitted.
    pub fn observe(&mut self, spec: &Spec, x: &[f64]) -> Judgement {
        let d = self.dim;
        if x.len() != d || d == 0 {
            return Judgement::warming();
        }
        if self.scratch.len() != 2 * d {
            self.scratch = vec![0.0; 2 * d];
        }
        match &mut self.phase {
            Phase::Warming(buf) => {
                buf.extend_from_slice(x);
                if buf.len() >= spec.warmup * d {
                    let rows = std::mem::take(buf);
                    match fit(spec, d, &rows, &mut self.smooth) {
                        Some(m) => self.phase = Phase::Ready(m),
                        // Degenerate (e.g. non-finite): learn again from scratch.
                        None => self.phase = Phase::Warming(Vec::with_capacity(rows.len())),
                    }
                }
                Judgement::warming()
            }
            Phase::Ready(m) => {
                let a = spec.smoothing;
                for i in 0..d {
                    let z = (x[i] - m.mean[i]) / m.std[i];
                    self.smooth[i] = a * z + (1.0 - a) * self.smooth[i];
                }
                let (dev, w) = self.scratch.split_at_mut(d);
                for i in 0..d {
                    dev[i] = self.smooth[i] - m.center[i];
                }
                let t2 = t2_of(&m.chol, d, dev, w);
                let mut ratio = t2 / m.t2_limit;
                let q = if spec.residual {
                    let q = spe(&m.pcs, d, m.k, dev);
                    ratio = ratio.max(q / m.q_limit);
                    q
                } else {
                    f64::NAN
                };
                if !ratio.is_finite() {
                    ratio = crate::analysis::detector::MAX_SCORE;
                }
                // w = C⁻¹·dev after t2_of: contribution of metric i is dev_i·w_i.
                let mut top = [0u8; MAX_TOP];
                let mut ntop = 0usize;
                for _ in 0..spec.top.min(d) {
                    let mut best: Option<(usize, f64)> = None;
                    for i in 0..d {
                        if top[..ntop].contains(&(i as u8)) {
                            continue;
                        }
                        let c = dev[i] * w[i];
                        if c > 0.0 && best.is_none_or(|(_, b)| c > b) {
                            best = Some((i, c));
                        }
                    }
                    let Some((i, _)) = best else { break };
                    top[ntop] = i as u8;
                    ntop += 1;
                }
                Judgement {
                    anomalous: ratio > 1.0,
                    ratio,
                    anomaly: crate::analysis::detector::anomaly(ratio, 1.0),
                    t2,
                    t2_limit: m.t2_limit,
                    q,
                    q_limit: m.q_limit,
                    top,
                    ntop: ntop as u8,
                    warming: false,
                }
            }
        }
    }
}

/// T² = devᵀ·C⁻¹·dev with C = L·Lᵀ; leaves C⁻¹·dev in `w`.
fn t2_of(chol: &[f64], d: usize, dev: &[f64], w: &mut [f64]) -> f64 {
    linalg::solve_lower(chol, d, dev, w);
    let t2: f64 = w.iter().map(|y| y * y).sum();
    linalg::solve_upper_t(chol, d, w);
    t2
}

/// Squared residual of `dev` outside the span of the `k` principal directions.
fn spe(pcs: &[f64], d: usize, k: usize, dev: &[f64]) -> f64 {
    let total: f64 = dev.iter().map(|v| v * v).sum();
    let mut kept = 0.0;
    for c in 0..k {
        let p: f64 = (0..d).map(|i| pcs[i * k + c] * dev[i]).sum();
        kept += p * p;
    }
    (total - kept).max(0.0)
}

/// Fits the model on the warm-up rows; leaves the last smoothed vector in `smooth`.
fn fit(spec: &Spec, d: usize, rows: &[f64], smooth: &mut [f64]) -> Option<Model> {
    let n = rows.len() / d;
    if n < 2 || rows.iter().any(|v| !v.is_finite()) {
        return None;
    }
    let mut mean = vec![0.0; d];
    for r in rows.chunks_exact(d) {
        for i in 0..d {
            mean[i] += r[i];
        }
    }
    mean.iter_mut().for_each(|m| *m /= n as f64);
    let mut std = vec![0.0; d];
    for r in rows.chunks_exact(d) {
        for i in 0..d {
            std[i] += (r[i] - mean[i]).powi(2);
        }
    }
    for i in 0..d {
        // A constant metric gets a tiny spread: any later change of it stands out.
        let floor = (mean[i].abs() * 1e-6).max(1e-9);
        std[i] = (std[i] / n as f64).sqrt().max(floor);
    }
    // Smoothed standardised rows, as the detector would have seen them.
    let a = spec.smoothing;
    let mut s = vec![0.0; n * d];
    for (j, r) in rows.chunks_exact(d).enumerate() {
        for i in 0..d {
            let z = (r[i] - mean[i]) / std[i];
            s[j * d + i] = if j == 0 {
                z
            } else {
                a * z + (1.0 - a) * s[(j - 1) * d + i]
            };
        }
    }
    let mut center = vec![0.0; d];
    for r in s.chunks_exact(d) {
        for i in 0..d {
            center[i] += r[i];
        }
    }
    center.iter_mut().for_each(|c| *c /= n as f64);
    let mut cov = vec![0.0; d * d];
    for r in s.chunks_exact(d) {
        for i in 0..d {
            let di = r[i] - center[i];
            for j in 0..=i {
                cov[i * d + j] += di * (r[j] - center[j]);
            }
        }
    }
    for i in 0..d {
        for j in 0..=i {
            let c = cov[i * d + j] / (n - 1) as f64;
            cov[i * d + j] = c;
            cov[j * d + i] = c;
        }
        cov[i * d + i] += spec.ridge;
    }
    let mut chol = cov.clone();
    if !linalg::cholesky(&mut chol, d) {
        return None;
    }
    let (vals, vecs) = linalg::symmetric_eigen(&cov, d);
    let total: f64 = vals.iter().map(|v| v.max(0.0)).sum();
    let mut k = 0;
    let mut acc = 0.0;
    while k < d && acc < 0.9 * total {
        acc += vals[k].max(0.0);
        k += 1;
    }
    let k = k.min(d.saturating_sub(1)).max(1);
    let mut pcs = vec![0.0; d * k];
    for i in 0..d {
        for c in 0..k {
            pcs[i * k + c] = vecs[i * d + c];
        }
    }
    let mut t2s = Vec::with_capacity(n);
    let mut qs = Vec::with_capacity(n);
    let (mut dev, mut w) = (vec![0.0; d], vec![0.0; d]);
    for r in s.chunks_exact(d) {
        for i in 0..d {
            dev[i] = r[i] - center[i];
        }
        t2s.push(t2_of(&chol, d, &dev, &mut w));
        qs.push(spe(&pcs, d, k, &dev));
    }
    let t2_limit = match spec.limit {
        Limit::Empirical => spec.factor * quantile(&mut t2s, spec.quantile),
        Limit::Chi2 => spec.factor * chi2_quantile(d as f64, spec.quantile),
    };
    let q_limit = spec.factor * quantile(&mut qs, spec.quantile);
    smooth.copy_from_slice(&s[(n - 1) * d..]);
    let floor = 1e-12;
    Some(Model {
        mean,
        std,
        center,
        chol,
        t2_limit: t2_limit.max(floor),
        pcs,
        k,
        q_limit: q_limit.max(floor),
    })
}

/// The `q` quantile of `v` (linear interpolation, as numpy's default); sorts `v`.
fn quantile(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let pos = q * (v.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = (lo + 1).min(v.len() - 1);
    v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
}

/// Standard normal quantile (Acklam's rational approximation, relative error < 1.2e-9).
fn normal_quantile(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969_683_028_665_376e1,
        2.209_460_984_245_205e2,
        -2.759_285_104_469_687e2,
        1.383_577_518_672_69e2,
        -3.066_479_806_614_716e1,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -5.447_609_879_822_406e1,
        1.615_858_368_580_409e2,
        -1.556_989_798_598_866e2,
        6.680_131_188_771_972e1,
        -1.328_068_155_288_572e1,
    ];
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] = [
        7.784_695_709_041_462e-3,
        3.224_671_290_700_398e-1,
        2.445_134_137_142_996,
        3.754_408_661_907_416,
    ];
    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    if p < 0.02425 {
        tail((-2.0 * p.ln()).sqrt())
    } else if p > 1.0 - 0.02425 {
        -tail((-2.0 * (1.0 - p).ln()).sqrt())
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    }
}

/// χ²(k) quantile by the Wilson–Hilferty cube approximation.
pub fn chi2_quantile(k: f64, p: f64) -> f64 {
    let z = normal_quantile(p);
    let a = 2.0 / (9.0 * k);
    (k * (1.0 - a + z * a.sqrt()).powi(3)).max(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chi2_quantiles_match_tables() {
        // Tables: χ²(2, 0.99) = 9.210, χ²(8, 0.99) = 20.090, χ²(8, 0.95) = 15.507.
        assert!((chi2_quantile(2.0, 0.99) - 9.210).abs() < 0.15);
        assert!((chi2_quantile(8.0, 0.99) - 20.090).abs() < 0.1);
        assert!((chi2_quantile(8.0, 0.95) - 15.507).abs() < 0.05);
        assert!((normal_quantile(0.975) - 1.959_964).abs() < 1e-6);
        assert!((normal_quantile(0.001) + 3.090_232).abs() < 1e-5);
    }

    #[test]
    fn quantile_interpolates_like_numpy() {
        let mut v = vec![4.0, 1.0, 3.0, 2.0];
        assert_eq!(quantile(&mut v, 0.5), 2.5);
        assert_eq!(quantile(&mut v, 1.0 - 1e-12).round(), 4.0);
    }

    #[test]
    fn validation_names_the_field() {
        let c = Config {
            name: None,
            severity: None,
            hold: None,
            resolve: None,
            warmup: Some(5),
            smoothing: None,
            residual: None,
            limit: None,
            quantile: None,
            factor: None,
            ridge: None,
            top: None,
        };
        assert_eq!(c.validate().unwrap_err().0, "warmup");
        let c = Config {
            warmup: None,
            resolve: Some(1.5),
            ..c
        };
        assert_eq!(c.validate().unwrap_err().0, "resolve");
    }
}
