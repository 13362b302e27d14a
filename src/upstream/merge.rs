//! Merges consecutive local summaries into one per upstream interval, exactly: counts add,
//! means are count-weighted, variances pooled (within + between), min/max/last/total carried;
//! a device vector's mode and correlation are the latest ones.

use std::collections::BTreeMap;

use crate::model::{Millis, Summary, SummaryEntry, VectorSummary};

#[derive(Debug, Clone, Copy)]
struct Part {
    count: u64,
    mean: f64,
    /// Sum of squared deviations from `mean`.
    m2: f64,
    min: f64,
    max: f64,
    last: f64,
    total: u64,
}

impl Part {
    fn of(e: &SummaryEntry) -> Self {
        let n = e.count as f64;
        Part {
            count: e.count,
            mean: e.mean,
            m2: e.std * e.std * n,
            min: e.min,
            max: e.max,
            last: e.last,
            total: e.total,
        }
    }

    /// `other` comes after `self` in time.
    fn merge(self, o: Part) -> Part {
        if self.count == 0 {
            return o;
        }
        if o.count == 0 {
            return Part {
                total: o.total.max(self.total),
                ..self
            };
        }
        let n = self.count + o.count;
        let (na, nb, nf) = (self.count as f64, o.count as f64, n as f64);
        let delta = o.mean - self.mean;
        Part {
            count: n,
            mean: self.mean + delta * nb / nf,
            m2: self.m2 + o.m2 + delta * delta * na * nb / nf,
            min: self.min.min(o.min),
            max: self.max.max(o.max),
            last: o.last,
            total: o.total.max(self.total),
        }
    }
}

/// Accumulates summaries between two upstream summaries.
#[derive(Debug, Default)]
pub struct SummaryMerger {
    parts: BTreeMap<(String, String), Part>,
    vectors: BTreeMap<String, VectorSummary>,
}

impl SummaryMerger {
    pub fn add(&mut self, s: &Summary) {
        for e in &s.devices {
            let p = Part::of(e);
            self.parts
                .entry((e.device.clone(), e.metric.clone()))
                .and_modify(|acc| *acc = acc.merge(p))
                .or_insert(p);
        }
        for v in &s.vectors {
            self.vectors.insert(v.device.clone(), v.clone());
        }
    }

    /// The merged summary since the last `take`, or `None` when nothing arrived.
    pub fn take(&mut self, now: Millis, interval_ms: u64) -> Option<Summary> {
        if self.parts.is_empty() {
            return None;
        }
        let devices = std::mem::take(&mut self.parts)
            .into_iter()
            .map(|((device, metric), p)| SummaryEntry {
                device,
                metric,
                count: p.count,
                mean: p.mean,
                std: if p.count > 0 {
                    (p.m2 / p.count as f64).max(0.0).sqrt()
                } else {
                    0.0
                },
                min: p.min,
                max: p.max,
                last: p.last,
                total: p.total,
            })
            .collect();
        Some(Summary {
            ts: now,
            interval_ms,
            devices,
            vectors: std::mem::take(&mut self.vectors).into_values().collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(vals: &[f64], total: u64) -> SummaryEntry {
        let n = vals.len() as f64;
        let mean = vals.iter().sum::<f64>() / n;
        let var = vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
        SummaryEntry {
            device: "d".into(),
            metric: "m".into(),
            count: vals.len() as u64,
            mean,
            std: var.sqrt(),
            min: vals.iter().copied().fold(f64::INFINITY, f64::min),
            max: vals.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            last: *vals.last().expect("values"),
            total,
        }
    }

    #[test]
    fn merging_equals_summarising_everything_at_once() {
        let a = [1.0, 2.0, 9.0];
        let b = [4.0, -3.0];
        let c = [7.5];
        let mut m = SummaryMerger::default();
        for (vals, total) in [(&a[..], 3), (&b[..], 5), (&c[..], 6)] {
            m.add(&Summary {
                ts: 0,
                interval_ms: 1000,
                devices: vec![entry(vals, total)],
                vectors: Vec::new(),
            });
        }
        let all: Vec<f64> = a.iter().chain(&b).chain(&c).copied().collect();
        let want = entry(&all, 6);
        let got = m.take(99, 3000).expect("summary");
        assert_eq!((got.ts, got.interval_ms), (99, 3000));
        let g = &got.devices[0];
        assert_eq!(
            (g.count, g.min, g.max, g.last, g.total),
            (want.count, want.min, want.max, want.last, 6)
        );
        assert!(
            (g.mean - want.mean).abs() < 1e-12 && (g.std - want.std).abs() < 1e-12,
            "{g:?} vs {want:?}"
        );
        assert!(m.take(100, 3000).is_none(), "take empties the merger");
    }
}
