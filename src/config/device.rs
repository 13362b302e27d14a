//! Device-level analysis settings: `[device.vector]` (which metrics form a device's vector and how
//! their samples are aligned) and `device_detectors` (detectors over that vector: `multivariate`,
//! `mode`, `relation`).

use std::collections::HashSet;
use std::sync::Arc;

use serde::Deserialize;

use super::load::Seg;
use super::validate::{at, check_name, fail, key};
use super::Dur;
use crate::analysis::device::{mode, multivariate, relation};
use crate::analysis::device::{
    DetectorSpec, DeviceDetectorInstance, DeviceLevelPolicy, VectorSpec, MAX_VECTOR,
};
use crate::model::Severity;

type VResult<T> = Result<T, (Vec<Seg>, String)>;

fn default_cov_window() -> usize {
    300
}

/// Largest `vector.window` (vectors kept for the rolling covariance: 16 × 8 bytes each at most).
pub const MAX_COV_WINDOW: usize = 10_000;

fn default_tolerance() -> Dur {
    Dur(std::time::Duration::from_millis(500))
}

/// `[device.vector]`: the metrics of one device aligned in time.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VectorConfig {
    /// The metrics that form the vector, in this order; unset: every metric of the device (the
    /// first ones seen, at most 16).
    #[serde(default)]
    pub metrics: Option<Vec<String>>,
    /// Samples whose timestamps lie within this of the first one of a round form one vector.
    #[serde(default = "default_tolerance")]
    pub tolerance: Dur,
    /// When set, a metric without a sample in a round contributes its last value if it is no
    /// older than this; unset: every metric must have a sample in the round.
    #[serde(default)]
    pub max_age: Option<Dur>,
    /// Vectors the rolling covariance and correlation cover.
    #[serde(default = "default_cov_window")]
    pub window: usize,
    /// When set, the rolling covariance also covers only the vectors within this time.
    #[serde(default)]
    pub span: Option<Dur>,
    /// Summaries carry the vector's correlation matrix.
    #[serde(default)]
    pub summary_correlation: bool,
}

impl Default for VectorConfig {
    fn default() -> Self {
        VectorConfig {
            metrics: None,
            tolerance: default_tolerance(),
            max_age: None,
            window: default_cov_window(),
            span: None,
            summary_correlation: false,
        }
    }
}

/// One device-level detector as written: `type` selects the kind.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type")]
pub enum DeviceDetectorConfig {
    #[serde(rename = "multivariate")]
    Multivariate(multivariate::Config),
    #[serde(rename = "mode")]
    Mode(mode::Config),
    #[serde(rename = "relation")]
    Relation(relation::Config),
}

/// The device-level detector set a device gets when it has a `[device.vector]` (or replay a
/// multi-column file) and names no `device_detectors`: one `multivariate` with its defaults.
pub fn default_device_detectors() -> Vec<DeviceDetectorInstance> {
    vec![DeviceDetectorInstance {
        name: "multivariate".into(),
        spec: DetectorSpec::Multivariate(multivariate::Spec::default()),
        severity: Severity::Warning,
        hold_ms: multivariate::DEFAULT_HOLD_MS,
        resolve: multivariate::DEFAULT_RESOLVE,
    }]
}

/// The device-level policy used where the config names none but one is wanted (replay).
pub fn default_device_level() -> Arc<DeviceLevelPolicy> {
    Arc::new(DeviceLevelPolicy {
        vector: VectorSpec::from_config(&VectorConfig::default()),
        detectors: default_device_detectors(),
        relations: Vec::new(),
    })
}

/// Compiles a device's (or `unknown_devices`') `vector` and `device_detectors`; `None` when both
/// are unset (no device-level analysis). `p` is the path of the table holding them.
pub(super) fn device_level(
    vector: Option<&VectorConfig>,
    detectors: Option<&[DeviceDetectorConfig]>,
    p: &[Seg],
) -> VResult<Option<Arc<DeviceLevelPolicy>>> {
    if vector.is_none() && detectors.is_none() {
        return Ok(None);
    }
    let default = VectorConfig::default();
    let v = vector.unwrap_or(&default);
    let vp = at(p, &[key("vector")]);
    if let Some(ms) = &v.metrics {
        if ms.len() < 2 || ms.len() > MAX_VECTOR {
            return fail(
                at(&vp, &[key("metrics")]),
                format!(
                    "a vector needs 2 to {MAX_VECTOR} metrics, {} given",
                    ms.len()
                ),
            );
        }
        let mut seen = HashSet::new();
        for (i, m) in ms.iter().enumerate() {
            let mp = at(&vp, &[key("metrics"), Seg::Index(i)]);
            check_name(mp.clone(), "metric name", m)?;
            if !seen.insert(m) {
                return fail(mp, format!("metric {m:?} is listed twice"));
            }
        }
    }
    if v.tolerance.as_ms() < 0 || v.tolerance.as_ms() > 86_400_000 {
        return fail(
            at(&vp, &[key("tolerance")]),
            "tolerance must be at most 24h",
        );
    }
    if let Some(a) = v.max_age {
        if a.as_ms() <= 0 {
            return fail(at(&vp, &[key("max_age")]), "max_age must be greater than 0");
        }
    }
    if !(2..=MAX_COV_WINDOW).contains(&v.window) {
        return fail(
            at(&vp, &[key("window")]),
            format!("window must be between 2 and {MAX_COV_WINDOW} vectors"),
        );
    }
    if v.span.is_some_and(|s| s.as_ms() <= 0) {
        return fail(at(&vp, &[key("span")]), "span must be greater than 0");
    }
    let mut relations = Vec::new();
    let detectors = match detectors {
        None => default_device_detectors(),
        Some(ds) => {
            let mut out = Vec::with_capacity(ds.len());
            let mut names = HashSet::new();
            for (i, d) in ds.iter().enumerate() {
                let dp = at(p, &[key("device_detectors"), Seg::Index(i)]);
                let name = match d {
                    DeviceDetectorConfig::Multivariate(c) => {
                        let spec = c.validate().map_err(|(f, m)| (at(&dp, &[key(f)]), m))?;
                        out.push(DeviceDetectorInstance {
                            name: c.name.clone().unwrap_or_else(|| "multivariate".into()),
                            spec: DetectorSpec::Multivariate(spec),
                            severity: c.severity.unwrap_or_default(),
                            hold_ms: c.hold.map_or(multivariate::DEFAULT_HOLD_MS, |h| h.as_ms()),
                            resolve: c.resolve.unwrap_or(multivariate::DEFAULT_RESOLVE),
                        });
                        out.last().map(|d| d.name.clone())
                    }
                    DeviceDetectorConfig::Mode(c) => {
                        let (spec, labels) =
                            c.validate().map_err(|(f, m)| (at(&dp, &[key(f)]), m))?;
                        out.push(DeviceDetectorInstance {
                            name: c.name.clone().unwrap_or_else(|| "mode".into()),
                            spec: DetectorSpec::Mode(spec, labels),
                            severity: c.severity.unwrap_or_default(),
                            hold_ms: c.hold.map_or(mode::DEFAULT_HOLD_MS, |h| h.as_ms()),
                            resolve: 1.0,
                        });
                        out.last().map(|d| d.name.clone())
                    }
                    DeviceDetectorConfig::Relation(c) => {
                        relations.push(relation_instance(c, v, &dp)?);
                        relations.last().map(|r| r.name.clone())
                    }
                }
                .unwrap_or_default();
                check_name(at(&dp, &[key("name")]), "detector name", &name)?;
                if !names.insert(name.clone()) {
                    return fail(
                        at(&dp, &[key("name")]),
                        format!("two device detectors named {name:?}: give one a distinct `name`"),
                    );
                }
            }
            out
        }
    };
    Ok(Some(Arc::new(DeviceLevelPolicy {
        vector: VectorSpec::from_config(v),
        detectors,
        relations,
    })))
}

/// A `relation` detector: its settings, and `x` and `y` members of a configured vector.
fn relation_instance(
    c: &relation::Config,
    v: &VectorConfig,
    dp: &[Seg],
) -> VResult<relation::Instance> {
    let spec = c.validate().map_err(|(f, m)| (at(dp, &[key(f)]), m))?;
    for (field, m) in [("y", &spec.y), ("x", &spec.x)] {
        check_name(at(dp, &[key(field)]), "metric name", m)?;
        if let Some(ms) = &v.metrics {
            if !ms.contains(m) {
                return fail(
                    at(dp, &[key(field)]),
                    format!("metric {m:?} is not in the device's vector.metrics"),
                );
            }
        }
    }
    Ok(relation::Instance {
        name: c.name.clone().unwrap_or_else(|| "relation".into()),
        spec,
        severity: c.severity.unwrap_or_default(),
        hold_ms: c.hold.map_or(relation::DEFAULT_HOLD_MS, |h| h.as_ms()),
    })
}
