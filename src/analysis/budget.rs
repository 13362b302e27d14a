//! The series budget shared by all shards: caps on devices, series (device × metric) and estimated
//! bytes of analysis state. Atomics touched only when a device or series is created or evicted.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

use serde::Serialize;

use crate::model::{Alert, AlertState, Millis, Severity};

/// Which cap rejected a new device or series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Devices = 0,
    Series = 1,
    Bytes = 2,
    MetricsPerDevice = 3,
}

impl Limit {
    /// The config field that sets the cap (`analysis.<name>`), also the reason in logs and status.
    pub fn as_str(self) -> &'static str {
        match self {
            Limit::Devices => "max_devices",
            Limit::Series => "max_series",
            Limit::Bytes => "max_state_bytes",
            Limit::MetricsPerDevice => "max_metrics_per_device",
        }
    }
}

const LIMITS: [Limit; 4] = [
    Limit::Devices,
    Limit::Series,
    Limit::Bytes,
    Limit::MetricsPerDevice,
];

/// Usage and caps. The caps are atomics too, so a config reload changes them in place.
#[derive(Debug, Default)]
pub struct Budget {
    max_devices: AtomicU64,
    max_series: AtomicU64,
    max_bytes: AtomicU64,
    max_per_device: AtomicU64,
    devices: AtomicU64,
    series: AtomicU64,
    bytes: AtomicU64,
    rejected: [AtomicU64; 4],
    /// A rejection happened since the last `check`.
    hit: AtomicBool,
    /// The internal alert currently firing.
    alert: Mutex<Option<Alert>>,
}

/// `/api/status` → `analysis.budget`.
#[derive(Debug, Serialize)]
pub struct BudgetView {
    pub devices: u64,
    pub max_devices: u64,
    pub series: u64,
    pub max_series: u64,
    pub state_bytes: u64,
    pub max_state_bytes: u64,
    pub max_metrics_per_device: u64,
    /// Samples rejected per reason (the cap's config field).
    pub rejected: std::collections::BTreeMap<&'static str, u64>,
    pub alert_firing: bool,
}

impl Budget {
    pub fn set_limits(&self, a: &crate::config::AnalysisConfig) {
        self.max_devices.store(a.max_devices as u64, Relaxed);
        self.max_series.store(a.max_series as u64, Relaxed);
        self.max_bytes.store(a.max_state_bytes, Relaxed);
        self.max_per_device
            .store(a.max_metrics_per_device as u64, Relaxed);
    }

    pub fn max_metrics_per_device(&self) -> usize {
        self.max_per_device.load(Relaxed) as usize
    }

    /// Takes one device slot; `force` for configured devices, which always exist.
    pub fn take_device(&self, force: bool) -> Result<(), Limit> {
        let before = self.devices.fetch_add(1, Relaxed);
        if !force && before >= self.max_devices.load(Relaxed) {
            self.devices.fetch_sub(1, Relaxed);
            return Err(Limit::Devices);
        }
        Ok(())
    }

    pub fn free_device(&self) {
        self.devices.fetch_sub(1, Relaxed);
    }

    /// Takes one series of `bytes`; `force` for metrics named in the config.
    pub fn take_series(&self, bytes: u64, force: bool) -> Result<(), Limit> {
        let before = self.series.fetch_add(1, Relaxed);
        if !force && before >= self.max_series.load(Relaxed) {
            self.series.fetch_sub(1, Relaxed);
            return Err(Limit::Series);
        }
        let before = self.bytes.fetch_add(bytes, Relaxed);
        if !force && before + bytes > self.max_bytes.load(Relaxed) {
            self.bytes.fetch_sub(bytes, Relaxed);
            self.series.fetch_sub(1, Relaxed);
            return Err(Limit::Bytes);
        }
        Ok(())
    }

    pub fn free_series(&self, bytes: u64) {
        self.series.fetch_sub(1, Relaxed);
        self.bytes.fetch_sub(bytes, Relaxed);
    }

    /// Counts a sample rejected by `limit`.
    pub fn reject(&self, limit: Limit) {
        self.rejected[limit as usize].fetch_add(1, Relaxed);
        self.hit.store(true, Relaxed);
    }

    pub fn rejected(&self, limit: Limit) -> u64 {
        self.rejected[limit as usize].load(Relaxed)
    }

    /// Usage at or over a cap (the per-device cap only shows through rejections).
    fn full(&self) -> Option<Limit> {
        if self.devices.load(Relaxed) >= self.max_devices.load(Relaxed) {
            Some(Limit::Devices)
        } else if self.series.load(Relaxed) >= self.max_series.load(Relaxed) {
            Some(Limit::Series)
        } else if self.bytes.load(Relaxed) >= self.max_bytes.load(Relaxed) {
            Some(Limit::Bytes)
        } else {
            None
        }
    }

    /// Called about once a second by one shard: fires the internal alert (device = `node`) when a
    /// cap was reached, resolves it once a second passed without rejection and usage is under
    /// every cap. Returns the transition to publish, if any.
    pub fn check(&self, node: &str, now: Millis) -> Option<Alert> {
        let hit = self.hit.swap(false, Relaxed);
        let full = self.full();
        let mut g = self.alert.lock().ok()?;
        match (&*g, hit || full.is_some()) {
            (None, true) => {
                let limit = full.map(Limit::as_str).unwrap_or_else(|| {
                    LIMITS
                        .iter()
                        .find(|l| self.rejected(**l) > 0)
                        .map_or("max_series", |l| l.as_str())
                });
                let a = Alert {
                    id: format!("budget-{now:x}"),
                    device: node.to_string(),
                    metric: "analysis.budget".into(),
                    detector: "series_budget".into(),
                    severity: Severity::Warning,
                    state: AlertState::Firing,
                    ts: now,
                    value: self.series.load(Relaxed) as f64,
                    score: 1.0,
                    anomaly: 1.0,
                    raised_at: now,
                    resolved_at: None,
                    message: format!(
                        "analysis budget reached ({limit}): {} devices, {} series, {} bytes of state; new devices/series are rejected",
                        self.devices.load(Relaxed),
                        self.series.load(Relaxed),
                        self.bytes.load(Relaxed)
                    ),
                };
                *g = Some(a.clone());
                tracing::warn!(
                    limit,
                    "analysis budget reached: new devices/series rejected"
                );
                Some(a)
            }
            (Some(_), false) => {
                let mut a = g.take()?;
                a.state = AlertState::Resolved;
                a.resolved_at = Some(now);
                a.ts = now;
                a.value = self.series.load(Relaxed) as f64;
                a.message = "analysis back under budget".into();
                tracing::info!("analysis back under budget");
                Some(a)
            }
            _ => None,
        }
    }

    pub fn view(&self) -> BudgetView {
        BudgetView {
            devices: self.devices.load(Relaxed),
            max_devices: self.max_devices.load(Relaxed),
            series: self.series.load(Relaxed),
            max_series: self.max_series.load(Relaxed),
            state_bytes: self.bytes.load(Relaxed),
            max_state_bytes: self.max_bytes.load(Relaxed),
            max_metrics_per_device: self.max_per_device.load(Relaxed),
            rejected: LIMITS
                .iter()
                .map(|l| (l.as_str(), self.rejected(*l)))
                .collect(),
            alert_firing: self.alert.lock().map(|g| g.is_some()).unwrap_or(false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(devices: usize, series: usize, bytes: u64) -> Budget {
        let b = Budget::default();
        b.set_limits(&crate::config::AnalysisConfig {
            max_devices: devices,
            max_series: series,
            max_state_bytes: bytes,
            ..Default::default()
        });
        b
    }

    #[test]
    fn caps_reject_and_freeing_makes_room() {
        let b = budget(1, 2, 250);
        assert_eq!(b.take_device(false), Ok(()));
        assert_eq!(b.take_device(false), Err(Limit::Devices));
        assert_eq!(b.take_device(true), Ok(()), "configured devices always fit");
        assert_eq!(b.take_series(100, false), Ok(()));
        assert_eq!(b.take_series(200, false), Err(Limit::Bytes));
        assert_eq!(b.take_series(100, false), Ok(()));
        assert_eq!(b.take_series(1, false), Err(Limit::Series));
        b.free_series(100);
        assert_eq!(b.take_series(100, false), Ok(()));
        let v = b.view();
        assert_eq!((v.series, v.state_bytes, v.devices), (2, 200, 2));
    }

    #[test]
    fn the_alert_fires_on_a_rejection_and_resolves_under_budget() {
        let b = budget(10, 1, 1 << 20);
        assert!(b.check("n", 1).is_none());
        assert_eq!(b.take_series(10, false), Ok(()));
        assert_eq!(b.take_series(10, false), Err(Limit::Series));
        b.reject(Limit::Series);
        let a = b.check("n", 2).expect("fires");
        assert_eq!(
            (a.device.as_str(), a.state, a.detector.as_str()),
            ("n", AlertState::Firing, "series_budget")
        );
        assert!(a.message.contains("max_series"), "{}", a.message);
        assert!(b.check("n", 3).is_none(), "still full: stays firing");
        b.free_series(10);
        let r = b.check("n", 4).expect("resolves");
        assert_eq!((r.state, r.id), (AlertState::Resolved, a.id));
        assert_eq!(b.view().rejected["max_series"], 1);
    }
}
