//! Recent points of one metric for the dashboard's charts: a fixed ring of 16-byte points (time
//! offset, value, band mean and std as f32, fired flag), allocated once on first use, never after.

use serde::Serialize;

use crate::model::Millis;

/// One point. `dt` is milliseconds from the ring's `base`; the sign bit of `std` is the fired flag
/// (a std is never negative, and `copysign` also marks 0 and NaN).
#[derive(Debug, Clone, Copy, Default)]
struct Point {
    dt: i32,
    value: f32,
    mean: f32,
    std: f32,
}

const _: () = assert!(std::mem::size_of::<Point>() == 16);

#[derive(Debug)]
struct Ring {
    /// Timestamp that `dt` counts from.
    base: Millis,
    /// Where the next point goes.
    head: usize,
    len: usize,
    points: Box<[Point]>,
}

/// The last points of a metric, oldest overwritten first. Empty (8 bytes) until the first push.
#[derive(Debug, Default)]
pub struct History {
    ring: Option<Box<Ring>>,
}

/// Points of one metric in columns, sorted by time (what a chart library takes directly).
/// Values are f32 (about 7 significant digits); a missing mean/std (window still empty) is `null`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Columns {
    pub ts: Vec<Millis>,
    pub value: Vec<f32>,
    /// Baseline the sample was judged against: rolling mean and std *before* the sample.
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    /// Indices (into the columns) of the samples a detector found anomalous.
    pub fired: Vec<u32>,
}

impl History {
    pub const fn new() -> Self {
        History { ring: None }
    }

    /// Points held now.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.ring.as_ref().map_or(0, |r| r.len)
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Records a sample. `cap` is the ring size, used at the first push only (0: keep nothing).
    /// `band` is the (mean, std) the sample was judged against, if any. No allocation after the
    /// first push.
    pub fn push(
        &mut self,
        cap: usize,
        ts: Millis,
        value: f64,
        band: Option<(f64, f64)>,
        fired: bool,
    ) {
        if cap == 0 {
            return;
        }
        let ring = self.ring.get_or_insert_with(|| {
            Box::new(Ring {
                base: ts,
                head: 0,
                len: 0,
                points: vec![Point::default(); cap].into_boxed_slice(),
            })
        });
        let dt = match i32::try_from(ts.saturating_sub(ring.base)) {
            Ok(dt) => dt,
            Err(_) => {
                ring.rebase(ts);
                0
            }
        };
        let (mean, std) = band.map_or((f32::NAN, f32::NAN), |(m, s)| (m as f32, s as f32));
        let std = if fired { std.copysign(-1.0) } else { std.abs() };
        let n = ring.points.len();
        if let Some(p) = ring.points.get_mut(ring.head) {
            *p = Point {
                dt,
                value: value as f32,
                mean,
                std,
            };
        }
        ring.head += 1;
        if ring.head == n {
            ring.head = 0;
        }
        if ring.len < n {
            ring.len += 1;
        }
    }

    /// Appends the points with `ts > since` (all without `since`) to `out`, sorted by time
    /// (arrival order among equal times).
    pub fn query(&self, since: Option<Millis>, out: &mut Columns) {
        let Some(r) = &self.ring else { return };
        let n = r.points.len();
        let start = (r.head + n - r.len) % n;
        let mut picked: Vec<&Point> = (0..r.len)
            .map(|i| &r.points[(start + i) % n])
            .filter(|p| since.is_none_or(|s| r.base + i64::from(p.dt) > s))
            .collect();
        // Devices may send timestamps out of order; charts want them ascending.
        picked.sort_by_key(|p| p.dt);
        let first = out.ts.len();
        for (i, p) in picked.into_iter().enumerate() {
            out.ts.push(r.base + i64::from(p.dt));
            out.value.push(p.value);
            out.mean.push(p.mean);
            out.std.push(p.std.abs());
            if p.std.is_sign_negative() {
                out.fired.push(u32::try_from(first + i).unwrap_or(u32::MAX));
            }
        }
    }
}

impl Ring {
    /// `ts` is more than ±24 days from `base`: count from `ts` instead. Points that cannot be
    /// expressed from the new base (a clock jump of more than 24 days) are dropped.
    fn rebase(&mut self, ts: Millis) {
        let n = self.points.len();
        // Oldest first from index 0, so compacting forward never overwrites an unread point.
        self.points.rotate_left((self.head + n - self.len) % n);
        let mut kept = 0;
        for i in 0..self.len {
            let p = self.points[i];
            if let Ok(dt) = i32::try_from((self.base + i64::from(p.dt)).saturating_sub(ts)) {
                self.points[kept] = Point { dt, ..p };
                kept += 1;
            }
        }
        self.base = ts;
        self.len = kept;
        self.head = kept % n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(h: &History) -> Columns {
        let mut c = Columns::default();
        h.query(None, &mut c);
        c
    }

    #[test]
    fn keeps_the_last_cap_points_in_time_order_with_band_and_fired_flags() {
        let mut h = History::new();
        assert!(h.is_empty());
        let t0 = 1_763_000_000_000;
        for i in 0..10i64 {
            let band = (i > 0).then_some((1.5, 0.25));
            h.push(4, t0 + i * 100, i as f64, band, i == 8);
        }
        assert_eq!(h.len(), 4);
        let c = all(&h);
        assert_eq!(c.ts, vec![t0 + 600, t0 + 700, t0 + 800, t0 + 900]);
        assert_eq!(c.value, vec![6.0, 7.0, 8.0, 9.0]);
        assert_eq!(c.mean, vec![1.5; 4]);
        assert_eq!(c.std, vec![0.25; 4]);
        assert_eq!(c.fired, vec![2]);

        let mut c = Columns::default();
        h.query(Some(t0 + 700), &mut c);
        assert_eq!(c.ts, vec![t0 + 800, t0 + 900]);
        assert_eq!(c.fired, vec![0]);
    }

    #[test]
    fn zero_capacity_keeps_nothing_and_allocates_nothing() {
        let mut h = History::new();
        h.push(0, 5, 1.0, None, true);
        assert!(h.ring.is_none());
        assert_eq!(all(&h), Columns::default());
    }

    #[test]
    fn missing_band_is_nan_and_fired_survives_a_zero_or_nan_std() {
        let mut h = History::new();
        h.push(8, 10, 1.0, None, true);
        h.push(8, 20, 2.0, Some((2.0, 0.0)), true);
        let c = all(&h);
        assert!(c.mean[0].is_nan() && c.std[0].is_nan());
        assert_eq!(c.std[1], 0.0);
        assert_eq!(c.fired, vec![0, 1]);
    }

    #[test]
    fn out_of_order_timestamps_come_back_sorted() {
        let mut h = History::new();
        for ts in [300, 100, 200, 400] {
            h.push(8, ts, ts as f64, None, ts == 100);
        }
        let c = all(&h);
        assert_eq!(c.ts, vec![100, 200, 300, 400]);
        assert_eq!(c.value, vec![100.0, 200.0, 300.0, 400.0]);
        assert_eq!(c.fired, vec![0]);
    }

    #[test]
    fn a_far_jump_rebases_and_drops_only_what_no_longer_fits() {
        let day = 86_400_000i64;
        let mut h = History::new();
        // Wrap the ring first so that the oldest point is not at index 0.
        for i in 0..6i64 {
            h.push(4, i * day, i as f64, None, false);
        }
        // 20 days is within ±24 days of the base (0): no rebase.
        h.push(4, 20 * day, 20.0, None, false);
        let c = all(&h);
        assert_eq!(
            c.ts,
            vec![3 * day, 4 * day, 5 * day, 20 * day],
            "no rebase needed within 24 days of the base"
        );
        // 60 days: nothing older fits from the new base.
        h.push(4, 60 * day, 60.0, None, false);
        let c = all(&h);
        assert_eq!(c.ts, vec![60 * day]);
        assert_eq!(h.len(), 1);
        h.push(4, 60 * day + 1, 61.0, None, false);
        assert_eq!(all(&h).value, vec![60.0, 61.0]);
        // 80 days: 60 days is still within reach of the new base and is kept.
        h.push(4, 80 * day, 80.0, None, true);
        let c = all(&h);
        assert_eq!(c.ts, vec![60 * day, 60 * day + 1, 80 * day]);
        assert_eq!(c.fired, vec![2]);
        // A full ring whose points all fit the new base keeps all of them.
        let mut h = History::new();
        for i in 0..30i64 {
            h.push(3, i * day, i as f64, None, false);
        }
        assert_eq!(all(&h).value, vec![27.0, 28.0, 29.0]);
    }
}
