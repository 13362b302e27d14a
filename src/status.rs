//! Shared health and counters (lock-free atomics) that sources, shards and the hub update and
//! `/api/status` reads; plus a rate-limited logger for bad frames.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::model::{now_ms, Millis};

/// Counters of one source.
#[derive(Debug)]
pub struct SourceStats {
    pub id: String,
    pub kind: &'static str,
    pub healthy: AtomicBool,
    pub frames_accepted: AtomicU64,
    pub frames_rejected: AtomicU64,
    pub samples: AtomicU64,
    pub connections: AtomicU64,
    pub connects_total: AtomicU64,
    pub restarts: AtomicU64,
    /// Messages dropped because the queue toward analysis was full (MQTT).
    pub dropped_queue_full: AtomicU64,
    /// samples/s over the last second, updated by `StatusBoard::tick`.
    pub rate: AtomicU64,
    last_samples: AtomicU64,
    last_error: Mutex<Option<(Millis, String)>>,
    /// Per polled device (Modbus slaves); empty for other sources. Updated once per poll round.
    units: Mutex<Vec<UnitView>>,
    /// Where a listening source is bound (port 0 resolved), for in-process tests and embedders.
    listen: Mutex<Option<std::net::SocketAddr>>,
}

impl SourceStats {
    pub fn new(id: &str, kind: &'static str) -> Self {
        SourceStats {
            id: id.to_string(),
            kind,
            healthy: AtomicBool::new(false),
            frames_accepted: AtomicU64::new(0),
            frames_rejected: AtomicU64::new(0),
            samples: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            connects_total: AtomicU64::new(0),
            restarts: AtomicU64::new(0),
            dropped_queue_full: AtomicU64::new(0),
            rate: AtomicU64::new(0),
            last_samples: AtomicU64::new(0),
            last_error: Mutex::new(None),
            units: Mutex::new(Vec::new()),
            listen: Mutex::new(None),
        }
    }

    /// Records the address a listening source is bound to.
    pub fn set_listen_addr(&self, addr: std::net::SocketAddr) {
        if let Ok(mut g) = self.listen.lock() {
            *g = Some(addr);
        }
    }

    pub fn listen_addr(&self) -> Option<std::net::SocketAddr> {
        self.listen.lock().ok().and_then(|g| *g)
    }

    /// Replaces the per-device health list (not for the per-frame path).
    pub fn set_units(&self, units: &[UnitView]) {
        if let Ok(mut g) = self.units.lock() {
            g.clear();
            g.extend_from_slice(units);
        }
    }

    pub fn set_healthy(&self, ok: bool) {
        self.healthy.store(ok, Relaxed);
    }

    /// Remembers the latest error (shown in `/api/status`). Not for the per-frame path.
    pub fn set_error(&self, e: impl Into<String>) {
        if let Ok(mut g) = self.last_error.lock() {
            *g = Some((now_ms(), e.into()));
        }
    }

    fn view(&self) -> SourceView {
        SourceView {
            id: self.id.clone(),
            kind: self.kind,
            healthy: self.healthy.load(Relaxed),
            frames_accepted: self.frames_accepted.load(Relaxed),
            frames_rejected: self.frames_rejected.load(Relaxed),
            samples: self.samples.load(Relaxed),
            samples_per_sec: self.rate.load(Relaxed),
            connections: self.connections.load(Relaxed),
            connects_total: self.connects_total.load(Relaxed),
            restarts: self.restarts.load(Relaxed),
            dropped_queue_full: self.dropped_queue_full.load(Relaxed),
            last_error: self
                .last_error
                .lock()
                .ok()
                .and_then(|g| g.clone())
                .map(|(at, message)| ErrorView { at, message }),
            devices: self.units.lock().map(|g| g.clone()).unwrap_or_default(),
        }
    }
}

/// Counters of the analysis stage and the event hub.
#[derive(Debug, Default)]
pub struct PipelineStats {
    pub samples_analyzed: AtomicU64,
    pub rejected_unknown_device: AtomicU64,
    pub rejected_wrong_source: AtomicU64,
    pub rejected_limit: AtomicU64,
    pub devices: AtomicU64,
    pub alerts_fired: AtomicU64,
    pub alerts_resolved: AtomicU64,
    pub alerts_firing: AtomicU64,
    pub summaries: AtomicU64,
    pub ws_clients: AtomicU64,
    pub ws_dropped_slow: AtomicU64,
    pub rate: AtomicU64,
    last: AtomicU64,
}

/// Everything `/api/status` shows.
#[derive(Debug)]
pub struct StatusBoard {
    pub node_id: String,
    pub started_at: Millis,
    /// Replaced as a whole when a config reload adds or removes sources.
    pub sources: RwLock<Vec<Arc<SourceStats>>>,
    pub pipeline: PipelineStats,
    /// Upstream delivery, when configured.
    pub upstream: Option<(Arc<crate::upstream::UpstreamStats>, crate::store::Outbox)>,
    /// Further sinks (`[[sink]]`): id, delivery counters and their outbox.
    pub sinks: Vec<(
        String,
        Arc<crate::upstream::UpstreamStats>,
        crate::store::Outbox,
    )>,
    /// What the store could not restore at start (set once the store is open).
    pub store: std::sync::OnceLock<(
        Arc<crate::store::record::DamageLog>,
        Option<crate::store::Recovery>,
        Arc<crate::store::stats::Writes>,
    )>,
}

impl StatusBoard {
    /// Where the source `id` listens, once it is bound (TCP server mode).
    pub fn listen_addr(&self, id: &str) -> Option<std::net::SocketAddr> {
        let g = self.sources.read().ok()?;
        g.iter().find(|s| s.id == id).and_then(|s| s.listen_addr())
    }

    /// A board for these sources, started now, without upstream.
    pub fn new(node_id: &str, sources: Vec<Arc<SourceStats>>) -> Self {
        StatusBoard {
            node_id: node_id.to_string(),
            started_at: now_ms(),
            sources: RwLock::new(sources),
            pipeline: PipelineStats::default(),
            upstream: None,
            sinks: Vec::new(),
            store: Default::default(),
        }
    }

    pub fn source(&self, id: &str) -> Option<Arc<SourceStats>> {
        self.sources().into_iter().find(|s| s.id == id)
    }

    /// The current sources (a copy of the list; the counters are shared).
    pub fn sources(&self) -> Vec<Arc<SourceStats>> {
        self.sources.read().map(|g| g.clone()).unwrap_or_default()
    }

    /// Installs the source list of a reloaded config.
    pub fn set_sources(&self, sources: Vec<Arc<SourceStats>>) {
        if let Ok(mut g) = self.sources.write() {
            *g = sources;
        }
    }

    /// Called once a second: turns counters into rates.
    pub fn tick(&self) {
        for s in &self.sources() {
            let now = s.samples.load(Relaxed);
            let before = s.last_samples.swap(now, Relaxed);
            s.rate.store(now.saturating_sub(before), Relaxed);
        }
        let p = &self.pipeline;
        let now = p.samples_analyzed.load(Relaxed);
        let before = p.last.swap(now, Relaxed);
        p.rate.store(now.saturating_sub(before), Relaxed);
    }

    pub fn view(&self) -> StatusView {
        let p = &self.pipeline;
        let now = now_ms();
        StatusView {
            node_id: self.node_id.clone(),
            version: env!("CARGO_PKG_VERSION"),
            started_at: self.started_at,
            uptime_s: (now - self.started_at).max(0) / 1000,
            now,
            sources: self.sources().iter().map(|s| s.view()).collect(),
            analysis: AnalysisView {
                samples: p.samples_analyzed.load(Relaxed),
                samples_per_sec: p.rate.load(Relaxed),
                devices: p.devices.load(Relaxed),
                rejected_unknown_device: p.rejected_unknown_device.load(Relaxed),
                rejected_wrong_source: p.rejected_wrong_source.load(Relaxed),
                rejected_limit: p.rejected_limit.load(Relaxed),
            },
            alerts: AlertsView {
                fired: p.alerts_fired.load(Relaxed),
                resolved: p.alerts_resolved.load(Relaxed),
                firing: p.alerts_firing.load(Relaxed),
            },
            ws: WsView {
                clients: p.ws_clients.load(Relaxed),
                dropped_slow: p.ws_dropped_slow.load(Relaxed),
                summaries: p.summaries.load(Relaxed),
            },
            upstream: self.upstream.as_ref().map(|(s, o)| s.view(o)),
            sinks: self
                .sinks
                .iter()
                .map(|(id, s, o)| SinkView {
                    id: id.clone(),
                    delivery: s.view(o),
                })
                .collect(),
            clock: crate::clock::view(now_ms()),
            store: StoreView::of(self.store.get()),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct StatusView {
    pub node_id: String,
    pub version: &'static str,
    pub started_at: Millis,
    pub uptime_s: i64,
    /// The appliance's wall clock (unix ms), so a client can judge `last_seen` ages.
    pub now: Millis,
    pub sources: Vec<SourceView>,
    pub analysis: AnalysisView,
    pub alerts: AlertsView,
    pub ws: WsView,
    pub upstream: Option<crate::upstream::UpstreamView>,
    pub sinks: Vec<SinkView>,
    /// Wall-clock sanity (boards without RTC): see docs/CLOCK.md.
    pub clock: crate::clock::ClockView,
    pub store: StoreView,
}

/// Damage found in the store (docs/DURABILITY.md): records dropped per tree, a database moved aside.
#[derive(Debug, Serialize, Default)]
pub struct StoreView {
    pub damaged_records: u64,
    pub damaged: std::collections::BTreeMap<String, u64>,
    pub moved_aside: Option<String>,
    pub moved_aside_reason: Option<String>,
    /// What the store wrote since start, per kind (docs/BENCHMARKS.md, SD-card budget).
    pub writes: crate::store::stats::WritesView,
}

impl StoreView {
    fn of(
        s: Option<&(
            Arc<crate::store::record::DamageLog>,
            Option<crate::store::Recovery>,
            Arc<crate::store::stats::Writes>,
        )>,
    ) -> Self {
        let Some((d, r, w)) = s else {
            return StoreView::default();
        };
        let damaged: std::collections::BTreeMap<String, u64> = d.counts().into_iter().collect();
        StoreView {
            damaged_records: damaged.values().sum(),
            damaged,
            moved_aside: r.as_ref().map(|r| r.moved_to.display().to_string()),
            moved_aside_reason: r.as_ref().map(|r| r.reason.clone()),
            writes: w.view(),
        }
    }
}

/// One `[[sink]]` in `/api/status`.
#[derive(Debug, Serialize)]
pub struct SinkView {
    pub id: String,
    #[serde(flatten)]
    pub delivery: crate::upstream::UpstreamView,
}

#[derive(Debug, Serialize)]
pub struct SourceView {
    pub id: String,
    pub kind: &'static str,
    pub healthy: bool,
    pub frames_accepted: u64,
    pub frames_rejected: u64,
    pub samples: u64,
    pub samples_per_sec: u64,
    pub connections: u64,
    pub connects_total: u64,
    pub restarts: u64,
    pub dropped_queue_full: u64,
    pub last_error: Option<ErrorView>,
    /// Polled devices of this source (Modbus), when it has any.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<UnitView>,
}

/// Health of one polled device (a Modbus slave) of a source.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct UnitView {
    pub device: String,
    pub unit: u8,
    /// Answered its last poll (an exception answer counts as answering).
    pub healthy: bool,
    pub reads_ok: u64,
    pub timeouts: u64,
    /// Exception answers (e.g. illegal data address).
    pub exceptions: u64,
    /// Garbled or mismatched answers.
    pub errors: u64,
    /// While backing off: when it is tried again (unix ms).
    pub retry_at: Option<Millis>,
    pub last_error: Option<ErrorView>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ErrorView {
    pub at: Millis,
    pub message: String,
}

#[derive(Debug, Serialize)]
pub struct AnalysisView {
    pub samples: u64,
    pub samples_per_sec: u64,
    pub devices: u64,
    pub rejected_unknown_device: u64,
    pub rejected_wrong_source: u64,
    pub rejected_limit: u64,
}

#[derive(Debug, Serialize)]
pub struct AlertsView {
    pub fired: u64,
    pub resolved: u64,
    pub firing: u64,
}

#[derive(Debug, Serialize)]
pub struct WsView {
    pub clients: u64,
    pub dropped_slow: u64,
    pub summaries: u64,
}

/// Logs at most `burst` messages per `period`, then one line saying how many were suppressed.
#[derive(Debug)]
pub struct RateLimitedLog {
    period: Duration,
    burst: u32,
    window_start: Instant,
    emitted: u32,
    suppressed: u64,
}

impl RateLimitedLog {
    pub fn new(burst: u32, period: Duration) -> Self {
        RateLimitedLog {
            period,
            burst,
            window_start: Instant::now(),
            emitted: 0,
            suppressed: 0,
        }
    }

    /// Returns true when the caller may log now; `Some(n)` in the second field reports how many
    /// messages were suppressed in the window that just ended.
    pub fn allow(&mut self) -> (bool, Option<u64>) {
        let mut ended = None;
        if self.window_start.elapsed() >= self.period {
            if self.suppressed > 0 {
                ended = Some(self.suppressed);
            }
            self.window_start = Instant::now();
            self.emitted = 0;
            self.suppressed = 0;
        }
        if self.emitted < self.burst {
            self.emitted += 1;
            (true, ended)
        } else {
            self.suppressed += 1;
            (false, ended)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limited_log_allows_a_burst_then_counts() {
        let mut l = RateLimitedLog::new(3, Duration::from_secs(3600));
        let allowed = (0..10).filter(|_| l.allow().0).count();
        assert_eq!(allowed, 3);
        assert_eq!(l.suppressed, 7);
    }

    #[test]
    fn tick_turns_counters_into_rates() {
        let b = StatusBoard {
            node_id: "n".into(),
            started_at: 0,
            sources: RwLock::new(vec![Arc::new(SourceStats::new("s", "tcp"))]),
            pipeline: PipelineStats::default(),
            upstream: None,
            sinks: Vec::new(),
            store: Default::default(),
        };
        b.sources()[0].samples.fetch_add(42, Relaxed);
        b.tick();
        assert_eq!(b.view().sources[0].samples_per_sec, 42);
        b.tick();
        assert_eq!(b.view().sources[0].samples_per_sec, 0);
    }
}
