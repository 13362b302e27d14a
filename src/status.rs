//! Shared health and counters (lock-free atomics) that sources, shards and the hub update and
//! `/api/status` reads; plus a rate-limited logger for bad frames.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
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
    /// Connections refused or closed by the TCP server's limits, per reason.
    pub refused: Refusals,
    /// Samples of this source rejected by the analysis budget (`analysis.budget` says which cap).
    pub rejected_limit: AtomicU64,
    /// Samples whose own timestamp was out of bounds (`[input]`): rejected, or re-stamped.
    pub rejected_ts: AtomicU64,
    pub restamped_ts: AtomicU64,
    /// samples/s over the last second, updated by `StatusBoard::tick`.
    pub rate: AtomicU64,
    last_samples: AtomicU64,
    last_error: Mutex<Option<(Millis, String)>>,
    /// Per polled device (Modbus slaves); empty for other sources. Updated once per poll round.
    units: Mutex<Vec<UnitView>>,
    /// Sparkplug B counters of an MQTT source with a `format = "sparkplug_b"` subscription.
    sparkplug: Mutex<Option<crate::sources::mqtt::sparkplug::SparkplugView>>,
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
            refused: Refusals::default(),
            rejected_limit: AtomicU64::new(0),
            rejected_ts: AtomicU64::new(0),
            restamped_ts: AtomicU64::new(0),
            rate: AtomicU64::new(0),
            last_samples: AtomicU64::new(0),
            last_error: Mutex::new(None),
            units: Mutex::new(Vec::new()),
            sparkplug: Mutex::new(None),
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

    /// Replaces the Sparkplug B counters (once per decode round, not per message).
    pub fn set_sparkplug(&self, v: crate::sources::mqtt::sparkplug::SparkplugView) {
        if let Ok(mut g) = self.sparkplug.lock() {
            *g = Some(v);
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

    pub(crate) fn view(&self) -> SourceView {
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
            connections_refused: self.refused.view(),
            rejected_limit: self.rejected_limit.load(Relaxed),
            rejected_ts: self.rejected_ts.load(Relaxed),
            restamped_ts: self.restamped_ts.load(Relaxed),
            last_error: self
                .last_error
                .lock()
                .ok()
                .and_then(|g| g.clone())
                .map(|(at, message)| ErrorView { at, message }),
            devices: self.units.lock().map(|g| g.clone()).unwrap_or_default(),
            sparkplug: self.sparkplug.lock().ok().and_then(|g| g.clone()),
        }
    }
}

/// Why a TCP server turned a peer away (each also logged, rate-limited).
#[derive(Debug, Default)]
pub struct Refusals {
    /// `max_clients` connections were already open.
    pub max_clients: AtomicU64,
    /// The peer already held `max_clients_per_ip` connections.
    pub per_ip: AtomicU64,
    /// The peer is outside `allow_from`.
    pub not_allowed: AtomicU64,
    /// Closed after `read_timeout` without data.
    pub idle: AtomicU64,
    /// Closed, silent beyond `evict_after`, to make room for a newcomer when every slot was taken.
    pub evicted: AtomicU64,
    /// TLS handshakes that failed or timed out (a missing or untrusted client certificate).
    pub tls: AtomicU64,
}

impl Refusals {
    fn view(&self) -> RefusalsView {
        RefusalsView {
            max_clients: self.max_clients.load(Relaxed),
            per_ip: self.per_ip.load(Relaxed),
            not_allowed: self.not_allowed.load(Relaxed),
            idle: self.idle.load(Relaxed),
            evicted: self.evicted.load(Relaxed),
            tls: self.tls.load(Relaxed),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct RefusalsView {
    pub max_clients: u64,
    pub per_ip: u64,
    pub not_allowed: u64,
    pub idle: u64,
    pub evicted: u64,
    pub tls: u64,
}

/// Counters of the analysis stage and the event hub.
#[derive(Debug, Default)]
pub struct PipelineStats {
    pub samples_analyzed: AtomicU64,
    pub rejected_unknown_device: AtomicU64,
    pub rejected_wrong_source: AtomicU64,
    pub rejected_limit: AtomicU64,
    /// Caps on devices, series and state bytes, with their usage and rejections per reason.
    pub budget: crate::analysis::budget::Budget,
    pub devices: AtomicU64,
    pub alerts_fired: AtomicU64,
    pub alerts_resolved: AtomicU64,
    pub alerts_firing: AtomicU64,
    pub summaries: AtomicU64,
    pub ws_clients: AtomicU64,
    pub ws_dropped_slow: AtomicU64,
    /// `/ws` clients closed for declaring a frame over `api.ws_max_frame`.
    pub ws_closed_oversize: AtomicU64,
    /// `/ws` clients closed after three ping intervals without a frame.
    pub ws_closed_idle: AtomicU64,
    /// API requests answered 503 because fewer than `api.fd_reserve` descriptors were free.
    pub api_shed: AtomicU64,
    /// API connections shut because their peer already held `api.max_connections_per_ip`.
    pub api_refused_per_ip: AtomicU64,
    /// The API's connection cap in force (after the descriptor reserve) and the reserve.
    pub api_max_connections: AtomicU64,
    pub fd_reserve: AtomicU64,
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
                budget: p.budget.view(),
            },
            alerts: AlertsView {
                fired: p.alerts_fired.load(Relaxed),
                resolved: p.alerts_resolved.load(Relaxed),
                firing: p.alerts_firing.load(Relaxed),
            },
            ws: WsView {
                clients: p.ws_clients.load(Relaxed),
                dropped_slow: p.ws_dropped_slow.load(Relaxed),
                closed_oversize: p.ws_closed_oversize.load(Relaxed),
                closed_idle: p.ws_closed_idle.load(Relaxed),
                summaries: p.summaries.load(Relaxed),
            },
            api: ApiView {
                max_connections: p.api_max_connections.load(Relaxed),
                shed_503: p.api_shed.load(Relaxed),
                refused_per_ip: p.api_refused_per_ip.load(Relaxed),
                fd_reserve: p.fd_reserve.load(Relaxed),
                fds_open: crate::fds::open() as u64,
                fd_limit: crate::fds::limit() as u64,
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
    pub api: ApiView,
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
    pub connections_refused: RefusalsView,
    pub rejected_limit: u64,
    pub rejected_ts: u64,
    pub restamped_ts: u64,
    pub last_error: Option<ErrorView>,
    /// Polled devices of this source (Modbus), when it has any.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<UnitView>,
    /// Sparkplug B births, deaths, rebirth requests (MQTT sources with such a subscription).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sparkplug: Option<crate::sources::mqtt::sparkplug::SparkplugView>,
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
    pub budget: crate::analysis::budget::BudgetView,
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
    pub closed_oversize: u64,
    pub closed_idle: u64,
    pub summaries: u64,
}

/// The API's own limits: connection cap, requests shed for lack of descriptors, descriptors.
#[derive(Debug, Serialize)]
pub struct ApiView {
    pub max_connections: u64,
    pub shed_503: u64,
    pub refused_per_ip: u64,
    pub fd_reserve: u64,
    pub fds_open: u64,
    pub fd_limit: u64,
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

/// One rate limit per log reason shared by every connection and shard (on top of the per-connection
/// `RateLimitedLog`): at most `burst` lines per `period`, then one line with the count suppressed.
#[derive(Debug)]
pub struct SharedLogLimit {
    period_ms: u64,
    burst: u32,
    /// Start of the current window, ms since `START`.
    window: AtomicU64,
    emitted: AtomicU32,
    suppressed: AtomicU64,
}

static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

impl SharedLogLimit {
    pub const fn new(burst: u32, period: Duration) -> Self {
        SharedLogLimit {
            period_ms: period.as_millis() as u64,
            burst,
            window: AtomicU64::new(0),
            emitted: AtomicU32::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// Like `RateLimitedLog::allow`; lock-free.
    pub fn allow(&self) -> (bool, Option<u64>) {
        let now = START.get_or_init(Instant::now).elapsed().as_millis() as u64;
        let w = self.window.load(Relaxed);
        let mut ended = None;
        if now.saturating_sub(w) >= self.period_ms
            && self
                .window
                .compare_exchange(w, now, Relaxed, Relaxed)
                .is_ok()
        {
            self.emitted.store(0, Relaxed);
            let n = self.suppressed.swap(0, Relaxed);
            ended = (n > 0).then_some(n);
        }
        if self.emitted.fetch_add(1, Relaxed) < self.burst {
            (true, ended)
        } else {
            self.suppressed.fetch_add(1, Relaxed);
            (false, ended)
        }
    }
}

/// Samples rejected by the analysis budget, one limit per reason (`budget::Limit`).
pub static BUDGET_LOG: [SharedLogLimit; 4] = [
    SharedLogLimit::new(5, Duration::from_secs(10)),
    SharedLogLimit::new(5, Duration::from_secs(10)),
    SharedLogLimit::new(5, Duration::from_secs(10)),
    SharedLogLimit::new(5, Duration::from_secs(10)),
];
/// Samples with out-of-bounds timestamps, of every source together.
pub static BAD_TS_LOG: SharedLogLimit = SharedLogLimit::new(5, Duration::from_secs(10));
/// API requests refused for their `Host` or `Origin`.
pub static ORIGIN_LOG: SharedLogLimit = SharedLogLimit::new(5, Duration::from_secs(10));
/// Bad frames of every source and connection together.
pub static BAD_FRAME_LOG: SharedLogLimit = SharedLogLimit::new(20, Duration::from_secs(10));

/// Shows a name from the network with control and bidi characters escaped (for log lines).
pub struct Clean<'a>(pub &'a str);

impl std::fmt::Display for Clean<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for c in self.0.chars().take(200) {
            if c.is_control() || crate::decode::is_bidi(c) {
                write!(f, "{}", c.escape_unicode())?;
            } else {
                write!(f, "{c}")?;
            }
        }
        Ok(())
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
    fn shared_log_limit_counts_what_it_suppresses() {
        let l = SharedLogLimit::new(2, Duration::from_millis(50));
        let allowed = (0..10).filter(|_| l.allow().0).count();
        assert_eq!(allowed, 2);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(l.allow(), (true, Some(8)));
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
