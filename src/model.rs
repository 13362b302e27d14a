//! Data types that cross module boundaries: samples, sample batches, alerts and summaries.
//! Batches keep device and metric names in one string arena so the hot path allocates per batch, not per sample.

use serde::{Deserialize, Serialize};

/// Unix time in milliseconds.
pub type Millis = i64;

/// Current wall-clock time in unix milliseconds.
pub fn now_ms() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as Millis)
        .unwrap_or(0)
}

/// Where decoded samples go. Decoders call `push` once per (device, metric, value); a decoder
/// that returns an error has pushed nothing for that frame.
pub trait SampleSink {
    /// `ts` is the device's own timestamp in unix ms, `None` when the frame carried none.
    fn push(&mut self, device: &str, metric: &str, ts: Option<Millis>, value: f64);
}

/// A borrowed view of one sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample<'a> {
    pub device: &'a str,
    pub metric: &'a str,
    pub ts: Millis,
    pub value: f64,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    device: (u32, u32),
    metric: (u32, u32),
    ts: Millis,
    value: f64,
}

/// Samples bound for one analyzer shard, in arrival order. Names live in one arena; a run of
/// samples from the same device reuses the previous device name instead of copying it again.
#[derive(Debug, Default)]
pub struct Batch {
    names: String,
    slots: Vec<Slot>,
    last_device: (u32, u32),
    last_metric: (u32, u32),
}

impl Batch {
    pub fn with_capacity(samples: usize) -> Self {
        Batch {
            names: String::with_capacity(samples * 12),
            slots: Vec::with_capacity(samples),
            last_device: (0, 0),
            last_metric: (0, 0),
        }
    }

    fn intern(&mut self, s: &str, last: (u32, u32)) -> (u32, u32) {
        let (a, b) = (last.0 as usize, last.1 as usize);
        if b > a && &self.names[a..b] == s {
            return last;
        }
        let start = self.names.len() as u32;
        self.names.push_str(s);
        (start, self.names.len() as u32)
    }

    pub fn push(&mut self, device: &str, metric: &str, ts: Millis, value: f64) {
        let d = self.intern(device, self.last_device);
        self.last_device = d;
        let m = self.intern(metric, self.last_metric);
        self.last_metric = m;
        self.slots.push(Slot {
            device: d,
            metric: m,
            ts,
            value,
        });
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Shifts by `by` ms the timestamp of every sample stamped exactly `ts` (the receive time of
    /// one read buffer): used when the wall clock jumps before the batch is sent. Returns how many.
    pub fn shift_ts(&mut self, ts: Millis, by: i64) -> usize {
        let mut n = 0;
        for s in self.slots.iter_mut().filter(|s| s.ts == ts) {
            s.ts += by;
            n += 1;
        }
        n
    }

    pub fn clear(&mut self) {
        self.names.clear();
        self.slots.clear();
        self.last_device = (0, 0);
        self.last_metric = (0, 0);
    }

    pub fn iter(&self) -> impl Iterator<Item = Sample<'_>> + '_ {
        self.slots.iter().map(move |s| Sample {
            device: &self.names[s.device.0 as usize..s.device.1 as usize],
            metric: &self.names[s.metric.0 as usize..s.metric.1 as usize],
            ts: s.ts,
            value: s.value,
        })
    }
}

/// Alert severity, from config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    #[default]
    Warning,
    Critical,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    Firing,
    Resolved,
}

/// One alert transition. A firing alert and the message that resolves it share `id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub id: String,
    pub device: String,
    pub metric: String,
    /// Name of the detector instance (its `name` in config, else its kind).
    pub detector: String,
    pub severity: Severity,
    pub state: AlertState,
    /// The triggering (or resolving) sample's timestamp, unix ms.
    pub ts: Millis,
    pub value: f64,
    /// The detector's own measure (|z|, rate, surprise...; see docs/PROTOCOL.md).
    pub score: f64,
    /// The same judgement in [0, 1] for every detector kind, 0.5 at its firing threshold.
    #[serde(default)]
    pub anomaly: f64,
    /// When the alert was raised (wall clock of the appliance, unix ms).
    pub raised_at: Millis,
    /// When it resolved, for `resolved` messages.
    #[serde(default)]
    pub resolved_at: Option<Millis>,
    /// Human-readable reason, e.g. "|z| 7.1 > 6".
    pub message: String,
}

/// Statistics of one device metric over one summary interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SummaryEntry {
    pub device: String,
    pub metric: String,
    /// Samples in this interval.
    pub count: u64,
    pub mean: f64,
    pub std: f64,
    pub min: f64,
    pub max: f64,
    pub last: f64,
    /// Samples processed for this device metric since start (persisted across restarts).
    pub total: u64,
}

/// The device's operating mode now (from its first `mode` detector).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModeNow {
    /// The mode of the latest vector (`null` while warming).
    pub index: Option<usize>,
    pub label: Option<String>,
    /// Labelled bad in the config.
    pub bad: bool,
    /// RMS distance of the latest vector to its mode, in within-mode spreads.
    pub distance: Option<f64>,
    /// Modes learnt so far.
    pub modes: usize,
    pub warming: bool,
}

/// The correlation matrix of a device's vector in a summary (`summary_correlation = true`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CorrelationSummary {
    pub metrics: Vec<String>,
    /// Vectors in the rolling window.
    pub count: usize,
    /// Pearson correlation as rows; `null` where a metric did not vary.
    pub matrix: Vec<Vec<Option<f64>>>,
}

/// A device's vector in a summary: its mode (with a `mode` detector) and correlation (when asked).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VectorSummary {
    pub device: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<ModeNow>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation: Option<CorrelationSummary>,
}

/// Periodic summary from one analyzer shard: every device metric that shard owns which saw data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub ts: Millis,
    pub interval_ms: u64,
    pub devices: Vec<SummaryEntry>,
    /// Per device with device-level analysis that has something to say: its operating mode and
    /// (with `summary_correlation`) correlation matrix. Absent when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vectors: Vec<VectorSummary>,
}
