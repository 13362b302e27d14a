//! The `relation` device detector: a rolling least-squares regression of metric `y` on metric `x`
//! over the device's aligned vectors, anomalous when a vector's residual leaves k × its usual spread.

use std::collections::VecDeque;
use std::sync::Arc;

use rand::rngs::SmallRng;
use serde::{Deserialize, Serialize};

use crate::analysis::lifecycle::{Lifecycle, Transition};
use crate::analysis::trend::LineMoments;
use crate::config::Dur;
use crate::model::{Alert, AlertState, Millis, Severity};

/// Default minimum firing time of a relation alert.
pub const DEFAULT_HOLD_MS: i64 = 10_000;
/// Largest regression window (vectors).
pub const MAX_WINDOW: usize = 100_000;
/// Mean absolute deviation to standard deviation for normal residuals.
const MEAN_AD_TO_STD: f64 = 1.2533;

/// `{ type = "relation", y, x, window, k, warmup }` in `device_detectors`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub severity: Option<Severity>,
    /// Minimum time an alert stays firing before it may resolve (default 10s).
    #[serde(default)]
    pub hold: Option<Dur>,
    /// The metric explained (e.g. `current`); alerts are raised on it.
    pub y: String,
    /// The metric explaining it (e.g. `flow`).
    pub x: String,
    /// Vectors the regression is fitted to (default 300).
    #[serde(default)]
    pub window: Option<usize>,
    /// Fires when |residual| > k × its usual spread (default 6).
    #[serde(default)]
    pub k: Option<f64>,
    /// Vectors learnt from before judging (default 60).
    #[serde(default)]
    pub warmup: Option<usize>,
    /// Floor of the residual spread, in `y`'s units (default 0).
    #[serde(default)]
    pub min_spread: Option<f64>,
}

/// Validated settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Spec {
    pub y: String,
    pub x: String,
    pub window: usize,
    pub k: f64,
    pub warmup: usize,
    pub min_spread: f64,
}

impl Config {
    /// The settings, or the field at fault and why.
    pub fn validate(&self) -> Result<Spec, (&'static str, String)> {
        if self.x == self.y {
            return Err(("x", "x and y must be two different metrics".into()));
        }
        let window = self.window.unwrap_or(300);
        if !(10..=MAX_WINDOW).contains(&window) {
            return Err((
                "window",
                format!("window must be between 10 and {MAX_WINDOW} vectors"),
            ));
        }
        let k = self.k.unwrap_or(6.0);
        if !(k.is_finite() && k > 0.0) {
            return Err(("k", "k must be a finite number greater than 0".into()));
        }
        let warmup = self.warmup.unwrap_or(60.min(window));
        if !(10..=window).contains(&warmup) {
            return Err((
                "warmup",
                format!("warmup must be between 10 and the window ({window})"),
            ));
        }
        let min_spread = self.min_spread.unwrap_or(0.0);
        if !(min_spread.is_finite() && min_spread >= 0.0) {
            return Err((
                "min_spread",
                "min_spread must be a finite number >= 0".into(),
            ));
        }
        Ok(Spec {
            y: self.y.clone(),
            x: self.x.clone(),
            window,
            k,
            warmup,
            min_spread,
        })
    }
}

/// One configured relation detector.
#[derive(Debug, Clone, PartialEq)]
pub struct Instance {
    pub name: String,
    pub spec: Spec,
    pub severity: Severity,
    pub hold_ms: i64,
}

/// The rolling fit and the residuals' spread (persisted with the device).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct State {
    window: usize,
    ring: VecDeque<(f64, f64)>,
    m: LineMoments,
    /// `x` and `y` are kept relative to these (the oldest pair at the last re-sum).
    sx: f64,
    sy: f64,
    evictions: usize,
    /// Exponentially weighted mean |residual| of the vectors within the band (clipped at 3σ),
    /// and how many it has learnt.
    mad: f64,
    judged: u64,
}

/// The judgement of one vector.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Judgement {
    pub anomalous: bool,
    pub warming: bool,
    pub actual: f64,
    pub expected: f64,
    pub x: f64,
    pub slope: f64,
    pub intercept: f64,
    /// |residual| over the spread (σ units).
    pub score: f64,
    pub anomaly: f64,
}

impl State {
    pub fn new(spec: &Spec) -> Self {
        State {
            window: spec.window,
            ring: VecDeque::with_capacity(spec.window.min(1 << 16)),
            m: LineMoments::default(),
            sx: 0.0,
            sy: 0.0,
            evictions: 0,
            mad: 0.0,
            judged: 0,
        }
    }

    /// Whether a restored state fits these settings.
    pub fn fits(&self, spec: &Spec) -> bool {
        self.window == spec.window
            && self.ring.len() <= self.window
            && self.m.len() == self.ring.len() as u64
            && self.mad.is_finite()
    }

    /// The residual spread (σ) learnt so far, floored at `min_spread`.
    fn spread(&self, spec: &Spec) -> f64 {
        (MEAN_AD_TO_STD * self.mad).max(spec.min_spread)
    }

    /// Judges the pair against the fit so far (out of sample), then learns it. No allocation.
    pub fn observe(&mut self, spec: &Spec, x: f64, y: f64) -> Judgement {
        let mut j = Judgement {
            anomalous: false,
            warming: true,
            actual: y,
            expected: f64::NAN,
            x,
            slope: f64::NAN,
            intercept: f64::NAN,
            score: 0.0,
            anomaly: 0.0,
        };
        if !(x.is_finite() && y.is_finite()) {
            return j;
        }
        if let Some((mx, my, slope)) = self.m.line() {
            let expected = self.sy + my + slope * (x - self.sx - mx);
            let r = y - expected;
            j.expected = expected;
            j.slope = slope;
            j.intercept = self.sy + my - slope * (self.sx + mx);
            let spread = self.spread(spec);
            if self.m.len() as usize >= spec.warmup && self.judged as usize >= spec.warmup {
                j.warming = false;
                j.score = if spread > 0.0 {
                    (r.abs() / spread).min(crate::analysis::detector::MAX_SCORE)
                } else if r == 0.0 {
                    0.0
                } else {
                    crate::analysis::detector::MAX_SCORE
                };
                j.anomalous = j.score > spec.k;
                j.anomaly = crate::analysis::detector::anomaly(j.score, spec.k);
            }
            // The spread learns only residuals within the band, clipped at 3σ (Huber): a broken
            // relation cannot widen its own band, while the fit itself follows a lasting change
            // within about a window.
            if !j.anomalous {
                let a = if j.warming || spread <= 0.0 {
                    r.abs()
                } else {
                    r.abs().min(3.0 * spread)
                };
                self.judged += 1;
                let w = (2.0 / (spec.window as f64 + 1.0)).max(1.0 / self.judged as f64);
                self.mad += w * (a - self.mad);
            }
        }
        self.learn(x, y);
        j
    }

    fn learn(&mut self, x: f64, y: f64) {
        while self.ring.len() >= self.window {
            let Some((ox, oy)) = self.ring.pop_front() else {
                break;
            };
            self.evictions += 1;
            if self.ring.is_empty() {
                self.m = LineMoments::default();
            } else if self.evictions >= self.ring.len() {
                self.resum();
            } else {
                self.m.remove(ox - self.sx, oy - self.sy);
            }
        }
        if self.ring.is_empty() {
            self.sx = x;
            self.sy = y;
            self.m = LineMoments::default();
        }
        self.ring.push_back((x, y));
        self.m.push(x - self.sx, y - self.sy);
    }

    /// Exact re-sum from the ring, relative to its oldest pair.
    fn resum(&mut self) {
        self.evictions = 0;
        self.m = LineMoments::default();
        if let Some(&(x, y)) = self.ring.front() {
            self.sx = x;
            self.sy = y;
        }
        for i in 0..self.ring.len() {
            let (x, y) = self.ring[i];
            self.m.push(x - self.sx, y - self.sy);
        }
    }
}

/// One relation detector of a device: its state and alert lifecycle.
pub(crate) struct Slot {
    name: Arc<str>,
    inst: Instance,
    state: State,
    life: Lifecycle,
    active: Option<Alert>,
}

/// Persisted form of a slot.
#[derive(Serialize, Deserialize)]
pub(crate) struct SlotSnapshot {
    name: String,
    spec: Spec,
    state: State,
    life: Lifecycle,
    active: Option<Alert>,
}

impl SlotSnapshot {
    pub(crate) fn name(&self) -> &str {
        &self.name
    }
}

impl Slot {
    pub(crate) fn new(inst: &Instance) -> Self {
        Slot {
            name: inst.name.as_str().into(),
            state: State::new(&inst.spec),
            inst: inst.clone(),
            life: Lifecycle::new(),
            active: None,
        }
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn is_firing(&self) -> bool {
        self.active.is_some()
    }

    /// Judges the vector `values` (named by `members`, at time `ts`) when it holds both metrics;
    /// alert transitions go to `out`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn push(
        &mut self,
        members: &[Box<str>],
        values: &[f64],
        ts: Millis,
        now: Millis,
        device: &str,
        rng: &mut SmallRng,
        out: &mut Vec<Alert>,
    ) {
        let spec = &self.inst.spec;
        let at = |m: &str| members.iter().position(|n| **n == *m);
        let (Some(ix), Some(iy)) = (at(&spec.x), at(&spec.y)) else {
            return;
        };
        let (Some(&x), Some(&y)) = (values.get(ix), values.get(iy)) else {
            return;
        };
        let j = self.state.observe(spec, x, y);
        if j.warming {
            return;
        }
        self.judge(&j, ts, now, device, rng, out);
    }

    fn message(&self, j: &Judgement) -> String {
        let s = &self.inst.spec;
        let sign = if j.intercept < 0.0 { '−' } else { '+' };
        format!(
            "{y} {actual:.4} vs {expected:.4} expected from {x} {xv:.4} \
             ({y} ≈ {slope:.4}·{x} {sign} {b:.4}): residual {score:.1}σ > {k}",
            y = s.y,
            x = s.x,
            actual = j.actual,
            expected = j.expected,
            xv = j.x,
            slope = j.slope,
            b = j.intercept.abs(),
            score = j.score,
            k = s.k,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn judge(
        &mut self,
        j: &Judgement,
        ts: Millis,
        now: Millis,
        device: &str,
        rng: &mut SmallRng,
        out: &mut Vec<Alert>,
    ) {
        use rand::Rng;
        let alert = |slot: &Slot, id: String, raised_at: Millis| Alert {
            id,
            device: device.to_string(),
            metric: slot.inst.spec.y.clone(),
            detector: slot.name.to_string(),
            severity: slot.inst.severity,
            state: AlertState::Firing,
            ts,
            value: j.actual,
            score: j.score,
            anomaly: j.anomaly,
            raised_at,
            resolved_at: None,
            message: slot.message(j),
        };
        match self.life.step(j.anomalous, now, self.inst.hold_ms) {
            None => {}
            Some(Transition::Fire) => {
                let id = rng.gen::<u64>() | 1;
                self.life.set_id(id);
                let a = alert(self, format!("{id:016x}"), now);
                self.active = Some(a.clone());
                out.push(a);
            }
            Some(Transition::Resolve) => {
                let fired = self.active.take();
                let mut a = alert(
                    self,
                    format!("{:016x}", self.life.id().unwrap_or(0)),
                    self.life.raised_at().unwrap_or(now),
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

    pub(crate) fn snapshot(&self) -> SlotSnapshot {
        SlotSnapshot {
            name: self.name.to_string(),
            spec: self.inst.spec.clone(),
            state: self.state.clone(),
            life: self.life.clone(),
            active: self.active.clone(),
        }
    }

    /// Takes over a saved slot of the same name and settings; true when it brought a firing alert.
    pub(crate) fn restore(&mut self, snap: SlotSnapshot) -> bool {
        if *snap.name != *self.name || snap.spec != self.inst.spec || !snap.state.fits(&snap.spec) {
            return false;
        }
        self.state = snap.state;
        self.life = snap.life;
        self.active = snap.active;
        self.active.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> Spec {
        Config {
            name: None,
            severity: None,
            hold: None,
            y: "current".into(),
            x: "flow".into(),
            window: Some(200),
            k: Some(5.0),
            warmup: Some(50),
            min_spread: None,
        }
        .validate()
        .unwrap()
    }

    /// Box–Muller normals from a fixed seed.
    fn normals(seed: u64, n: usize) -> Vec<f64> {
        use rand::{Rng, SeedableRng};
        let mut r = SmallRng::seed_from_u64(seed);
        (0..n)
            .map(|_| {
                let (u, v): (f64, f64) = (r.gen_range(1e-12..1.0), r.gen_range(0.0..1.0));
                (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
            })
            .collect()
    }

    #[test]
    fn fits_the_line_holds_quiet_and_catches_an_offset() {
        let sp = spec();
        let mut st = State::new(&sp);
        let (noise, xs) = (normals(1, 3000), normals(2, 3000));
        let sigma = 0.1;
        let mut last = None;
        for i in 0..2000 {
            let x = 10.0 + 3.0 * xs[i];
            let j = st.observe(&sp, x, 2.0 * x + 1.0 + sigma * noise[i]);
            assert!(!j.anomalous, "vector {i}: {j:?}");
            last = Some(j);
        }
        let j = last.unwrap();
        assert!(
            (j.slope - 2.0).abs() < 0.01 && (j.intercept - 1.0).abs() < 0.1,
            "{j:?}"
        );
        // The spread learnt is the noise's σ.
        assert!((st.spread(&sp) - sigma).abs() < 0.02, "{}", st.spread(&sp));
        // y offset by 6σ (beyond k = 5): fires on the first such vector.
        let x = 11.0;
        let j = st.observe(&sp, x, 2.0 * x + 1.0 + 6.0 * sigma);
        assert!(j.anomalous && j.score > 5.0 && j.score < 8.0, "{j:?}");
        assert!((j.expected - 23.0).abs() < 0.05, "{j:?}");
        // The band is not widened by the broken relation: an 8σ offset that lasts keeps firing
        // while the fit slowly takes it in (about 1/window of it per vector).
        let mut fired = 0;
        for i in 0..20 {
            let x = 10.0 + 3.0 * xs[2000 + i];
            let y = 2.0 * x + 1.0 + 8.0 * sigma + sigma * noise[2000 + i];
            if st.observe(&sp, x, y).anomalous {
                fired += 1;
            }
        }
        assert!(fired >= 18, "{fired} of 20");
        assert!(st.spread(&sp) < 1.5 * sigma, "{}", st.spread(&sp));
    }

    #[test]
    fn rolling_fit_matches_a_fresh_fit_of_its_window() {
        let sp = spec();
        let mut st = State::new(&sp);
        let xs = normals(3, 1000);
        for (i, x) in xs.iter().enumerate() {
            st.observe(&sp, 1e6 + x, 5e5 - 0.5 * x + 0.01 * (i % 7) as f64);
        }
        let mut fresh = LineMoments::default();
        let (x0, y0) = st.ring[0];
        for &(x, y) in &st.ring {
            fresh.push(x - x0, y - y0);
        }
        let (a, b) = (st.m.line().unwrap(), fresh.line().unwrap());
        assert!((a.2 - b.2).abs() < 1e-9, "{a:?} {b:?}");
        assert!(((st.sy + a.1) - (y0 + b.1)).abs() < 1e-6);
    }

    #[test]
    fn validation_names_the_field() {
        let mut c = Config {
            name: None,
            severity: None,
            hold: None,
            y: "a".into(),
            x: "a".into(),
            window: None,
            k: None,
            warmup: None,
            min_spread: None,
        };
        assert_eq!(c.validate().unwrap_err().0, "x");
        c.x = "b".into();
        c.k = Some(0.0);
        assert_eq!(c.validate().unwrap_err().0, "k");
        c.k = None;
        c.warmup = Some(500);
        assert_eq!(c.validate().unwrap_err().0, "warmup");
    }

    /// Through a real shard: a pump whose `current` follows `flow` (current = 2·flow + noise).
    mod through_a_shard {
        use std::path::Path;
        use std::sync::Arc;

        use super::normals;
        use crate::analysis::shard::{Policies, ShardCore};
        use crate::model::{Alert, AlertState, Batch};
        use crate::status::StatusBoard;

        const CFG: &str = "[[device]]\nid = \"pump\"\n\
            device_detectors = [{ type = \"relation\", y = \"current\", x = \"flow\", k = 5.0, hold = \"0s\" }]\n\
            [device.vector]\nmetrics = [\"flow\", \"current\"]\n";

        fn core(text: &str) -> ShardCore {
            let text = format!("node_id = \"n\"\n{text}");
            let resolved = crate::config::parse_str(&text, Path::new("t.toml")).expect("config");
            let policies = Arc::new(Policies {
                resolved,
                source_ids: vec![],
                shards: 1,
            });
            ShardCore::new(0, policies, Arc::new(StatusBoard::new("n", Vec::new())), 0)
        }

        const SIGMA: f64 = 0.05;

        /// Vector `i`: flow around 5, current = 2·flow + noise, plus `offset` σ when broken.
        fn feed(c: &mut ShardCore, i: usize, offset: f64, out: &mut Vec<Alert>) {
            let (xs, es) = (normals(10, 2000), normals(11, 2000));
            let flow = 5.0 + xs[i % 2000];
            let current = 2.0 * flow + SIGMA * (es[i % 2000] + offset);
            let ts = 1_000_000 + i as i64 * 1_000;
            let mut b = Batch::with_capacity(2);
            b.push("pump", "flow", ts, flow);
            b.push("pump", "current", ts, current);
            c.ingest(0, &b, ts, out);
        }

        fn relation_alerts(out: &[Alert]) -> Vec<&Alert> {
            out.iter().filter(|a| a.detector == "relation").collect()
        }

        #[test]
        fn quiet_while_it_holds_fires_on_a_5_sigma_offset_naming_x_and_y() {
            let mut c = core(CFG);
            let mut out = Vec::new();
            for i in 0..800 {
                feed(&mut c, i, 0.0, &mut out);
            }
            assert!(relation_alerts(&out).is_empty(), "{out:?}");
            // current offset by 7σ of its noise (k = 5): fires at once.
            feed(&mut c, 800, 7.0, &mut out);
            let fired = relation_alerts(&out);
            assert_eq!(fired.len(), 1, "{out:?}");
            let a = fired[0];
            assert_eq!(
                (a.metric.as_str(), a.state),
                ("current", AlertState::Firing)
            );
            assert!(a.score > 5.0 && a.anomaly > 0.5, "{a:?}");
            assert!(
                a.message.starts_with("current ")
                    && a.message.contains("expected from flow")
                    && a.message.contains("current ≈ 2.0"),
                "{}",
                a.message
            );
            // Back on the line: it resolves.
            out.clear();
            feed(&mut c, 801, 0.0, &mut out);
            let r = relation_alerts(&out);
            assert!(
                r.len() == 1 && r[0].state == AlertState::Resolved,
                "{out:?}"
            );
        }

        #[test]
        fn the_fit_and_band_survive_snapshot_and_restore() {
            let mut a = core(CFG);
            let mut out = Vec::new();
            for i in 0..400 {
                feed(&mut a, i, 0.0, &mut out);
            }
            let saved = a.snapshot();
            let mut b = core(CFG);
            b.restore(&saved, 0);
            // Right after the restore (no new warm-up), the same offset fires in both, equally.
            let (mut oa, mut ob) = (Vec::new(), Vec::new());
            feed(&mut a, 400, 7.0, &mut oa);
            feed(&mut b, 400, 7.0, &mut ob);
            let (ra, rb) = (relation_alerts(&oa), relation_alerts(&ob));
            assert_eq!(ra.len(), 1, "{oa:?}");
            assert_eq!(rb.len(), 1, "restored state judges at once: {ob:?}");
            assert_eq!((ra[0].score, &ra[0].message), (rb[0].score, &rb[0].message));
            // Another window: the saved fit does not apply and learning starts over (quiet).
            let mut d = core(&CFG.replace("k = 5.0", "k = 5.0, window = 100"));
            d.restore(&saved, 0);
            let mut od = Vec::new();
            feed(&mut d, 400, 7.0, &mut od);
            assert!(relation_alerts(&od).is_empty(), "{od:?}");
        }

        #[test]
        fn config_errors_are_located() {
            let err = |t: &str| {
                crate::config::parse_str(&format!("node_id = \"n\"\n{t}"), Path::new("c.toml"))
                    .expect_err("invalid")
                    .to_string()
            };
            let e = err(&CFG.replace("x = \"flow\"", "x = \"flw\""));
            assert!(e.starts_with("c.toml:4:"), "{e}");
            assert!(
                e.contains("metric \"flw\" is not in the device's vector.metrics")
                    && e.contains("device[0].device_detectors[0].x"),
                "{e}"
            );
            let e = err(&CFG.replace("k = 5.0", "k = -1.0"));
            assert!(
                e.contains("k must be") && e.contains("device_detectors[0].k"),
                "{e}"
            );
            let e = err(&CFG.replace("y = \"current\", ", ""));
            assert!(e.starts_with("c.toml:4:") && e.contains("`y`"), "{e}");
        }
    }
}
