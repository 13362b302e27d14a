//! Simulated devices for the demo and tests: mean + drift + seasonality + Gaussian noise, with
//! spikes, level shifts, stuck values and dropouts injected at a configured rate (seeded, reproducible).

use std::sync::Arc;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, StandardNormal};

use super::intake::{Intake, Origin};
use super::route::Router;
use super::SourceError;
use crate::config::{AnomalyKind, SimMetric, SimSource};
use crate::model::{now_ms, Millis, SampleSink};

/// An anomaly in progress.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Active {
    Shift { offset: f64, until: Millis },
    Stuck { value: f64, until: Millis },
    Dropout { until: Millis },
}

/// One simulated signal.
#[derive(Debug, Clone)]
pub struct Signal {
    cfg: SimMetric,
    t0: Millis,
    interval_ms: i64,
    active: Option<Active>,
}

impl Signal {
    pub fn new(cfg: SimMetric, t0: Millis, interval_ms: i64) -> Self {
        Signal {
            cfg,
            t0,
            interval_ms: interval_ms.max(1),
            active: None,
        }
    }

    /// Scale of injected anomalies: the noise, or a tenth of the mean for noiseless signals.
    fn scale(&self) -> f64 {
        if self.cfg.noise > 0.0 {
            self.cfg.noise
        } else {
            (self.cfg.mean.abs() * 0.1).max(1.0)
        }
    }

    fn base(&self, now: Millis, rng: &mut SmallRng) -> f64 {
        let t = (now - self.t0) as f64;
        let mut v = self.cfg.mean + self.cfg.drift * t / 3_600_000.0;
        if let Some(p) = self.cfg.period {
            v += self.cfg.amplitude * (std::f64::consts::TAU * t / p.as_ms() as f64).sin();
        }
        let z: f64 = StandardNormal.sample(rng);
        v + self.cfg.noise * z
    }

    /// The value at `now`, or `None` during a dropout.
    pub fn next(&mut self, now: Millis, rng: &mut SmallRng) -> Option<f64> {
        if let Some(a) = self.active {
            let until = match a {
                Active::Shift { until, .. }
                | Active::Stuck { until, .. }
                | Active::Dropout { until } => until,
            };
            if now >= until {
                self.active = None;
            }
        }
        let base = self.base(now, rng);
        match self.active {
            Some(Active::Shift { offset, .. }) => return Some(base + offset),
            Some(Active::Stuck { value, .. }) => return Some(value),
            Some(Active::Dropout { .. }) => return None,
            None => {}
        }
        if self.cfg.anomalies.is_empty() || !rng.gen_bool(self.cfg.anomaly_rate) {
            return Some(base);
        }
        let kind = self.cfg.anomalies[rng.gen_range(0..self.cfg.anomalies.len())];
        let sign = if rng.gen_bool(0.5) { 1.0 } else { -1.0 };
        let iv = self.interval_ms;
        let samples = |rng: &mut SmallRng, lo: i64, hi: i64| now + rng.gen_range(lo..=hi) * iv;
        match kind {
            AnomalyKind::Spike => Some(base + sign * rng.gen_range(8.0..15.0) * self.scale()),
            AnomalyKind::Shift => {
                let offset = sign * rng.gen_range(6.0..10.0) * self.scale();
                self.active = Some(Active::Shift {
                    offset,
                    until: samples(rng, 30, 60),
                });
                Some(base + offset)
            }
            AnomalyKind::Stuck => {
                self.active = Some(Active::Stuck {
                    value: base,
                    until: samples(rng, 20, 40),
                });
                Some(base)
            }
            AnomalyKind::Dropout => {
                self.active = Some(Active::Dropout {
                    until: now + rng.gen_range(10_000..=30_000),
                });
                None
            }
        }
    }
}

/// Runs the simulated devices of one source until the appliance stops.
pub async fn run(
    cfg: Arc<SimSource>,
    idx: u16,
    router: Router,
    stats: Arc<super::SourceStats>,
) -> Result<(), SourceError> {
    let mut rng = SmallRng::seed_from_u64(cfg.seed);
    let t0 = now_ms();
    let interval_ms = cfg.interval.as_ms();
    let mut signals: Vec<(String, String, Signal)> = cfg
        .devices
        .iter()
        .flat_map(|d| {
            d.metrics.iter().map(move |(m, mc)| {
                (
                    d.id.clone(),
                    m.clone(),
                    Signal::new(mc.clone(), t0, interval_ms),
                )
            })
        })
        .collect();
    tracing::info!(source = %cfg.id, signals = signals.len(), interval = %cfg.interval, "simulated devices running");
    stats.set_healthy(true);
    let mut intake = Intake::new(&router, idx, stats.clone(), Origin::Port);
    let mut tick = tokio::time::interval(cfg.interval.0);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = now_ms();
        intake.begin();
        for (device, metric, sig) in signals.iter_mut() {
            if let Some(v) = sig.next(now, &mut rng) {
                intake.sink().push(device, metric, Some(now), v);
                intake.tally(true);
            }
        }
        intake.flush().await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Dur;

    fn metric(rate: f64, anomalies: Vec<AnomalyKind>) -> SimMetric {
        SimMetric {
            mean: 20.0,
            noise: 0.5,
            drift: 0.0,
            amplitude: 0.0,
            period: None,
            anomaly_rate: rate,
            anomalies,
        }
    }

    #[test]
    fn clean_signal_stays_near_its_mean() {
        let mut s = Signal::new(metric(0.0, vec![]), 0, 100);
        let mut rng = SmallRng::seed_from_u64(7);
        let vals: Vec<f64> = (0..10_000)
            .filter_map(|i| s.next(i * 100, &mut rng))
            .collect();
        assert_eq!(vals.len(), 10_000);
        let mean = vals.iter().sum::<f64>() / vals.len() as f64;
        assert!((mean - 20.0).abs() < 0.05, "{mean}");
        assert!(vals.iter().all(|v| (v - 20.0).abs() < 0.5 * 6.0));
    }

    #[test]
    fn each_anomaly_kind_shows() {
        let mut rng = SmallRng::seed_from_u64(3);
        let mut spike = Signal::new(metric(1.0, vec![AnomalyKind::Spike]), 0, 100);
        let v = spike.next(0, &mut rng).expect("spike is a value");
        assert!((v - 20.0).abs() >= 0.5 * 6.0, "{v}");

        let mut stuck = Signal::new(metric(1.0, vec![AnomalyKind::Stuck]), 0, 100);
        let first = stuck.next(0, &mut rng);
        assert_eq!(stuck.next(100, &mut rng), first);
        assert_eq!(stuck.next(1900, &mut rng), first);

        let mut drop = Signal::new(metric(1.0, vec![AnomalyKind::Dropout]), 0, 100);
        assert_eq!(drop.next(0, &mut rng), None);
        assert_eq!(drop.next(9_999, &mut rng), None);

        let mut shift = Signal::new(metric(1.0, vec![AnomalyKind::Shift]), 0, 100);
        let a = shift.next(0, &mut rng).expect("value");
        let b = shift.next(100, &mut rng).expect("value");
        assert!(
            (a - 20.0).abs() > 2.0
                && (b - 20.0).abs() > 2.0
                && (a - 20.0).signum() == (b - 20.0).signum()
        );
    }

    #[test]
    fn seasonality_and_drift() {
        let mut m = metric(0.0, vec![]);
        m.noise = 0.0;
        m.amplitude = 5.0;
        m.period = Some(Dur::secs(60));
        m.drift = 3.6; // per hour = 0.001 per second
        let mut s = Signal::new(m, 0, 1000);
        let mut rng = SmallRng::seed_from_u64(1);
        let quarter = s.next(15_000, &mut rng).expect("value");
        assert!((quarter - (20.0 + 5.0 + 0.015)).abs() < 1e-9, "{quarter}");
    }
}
