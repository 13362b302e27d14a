//! `GET /metrics`: the appliance's health and each device/metric series in the Prometheus text
//! format (OpenMetrics when the scraper asks for it), gathered on scrape from what `/api/status`
//! and `/api/devices` read, so it costs nothing per sample.

use std::fmt;
use std::path::Path;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::{collect_devices, ApiError, ApiState};
use crate::analysis::shard::DeviceView;
use crate::status::StatusView;

/// Content type of OpenMetrics 1.0, served when the `Accept` header names it.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Everything one scrape shows, read once at the start of the scrape.
#[derive(Debug)]
pub struct Scrape {
    pub node: String,
    pub status: StatusView,
    pub devices: Vec<DeviceView>,
    /// Per analysis shard: messages queued, queue capacity.
    pub queues: Vec<(usize, usize)>,
    /// Bytes of the data directory (sled's files, manifest).
    pub store_bytes: u64,
    pub process: Process,
    pub per_series: bool,
    pub max_series: usize,
}

/// The process' own resources, from `/proc/self` (absent fields where it cannot be read).
#[derive(Debug, Default, Clone, Copy)]
pub struct Process {
    pub cpu_seconds: Option<f64>,
    pub resident_bytes: Option<u64>,
    pub virtual_bytes: Option<u64>,
    pub open_fds: Option<u64>,
    pub max_fds: Option<u64>,
    pub threads: Option<u64>,
}

impl Process {
    /// Reads `/proc/self` (Linux); elsewhere every field stays `None`.
    pub fn read() -> Self {
        let mut p = Process::default();
        if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
            // Fields after the command name (which may hold spaces) start at field 3 (state).
            if let Some((_, rest)) = stat.rsplit_once(')') {
                let f: Vec<&str> = rest.split_whitespace().collect();
                // utime and stime (fields 14 and 15) are in USER_HZ ticks, 100 on Linux.
                let tick = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok());
                if let (Some(u), Some(s)) = (tick(11), tick(12)) {
                    p.cpu_seconds = Some((u + s) as f64 / 100.0);
                }
                p.threads = tick(17);
                p.virtual_bytes = tick(20);
            }
        }
        if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
            p.resident_bytes = status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .map(|kb| kb * 1024);
        }
        if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
            // The directory handle itself is one of the entries.
            p.open_fds = Some(dir.count().saturating_sub(1) as u64);
        }
        if let Ok(limits) = std::fs::read_to_string("/proc/self/limits") {
            p.max_fds = limits
                .lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3))
                .and_then(|v| v.parse().ok());
        }
        p
    }
}

/// Total size of the regular files under `dir` (two levels: sled keeps its files flat).
pub fn dir_bytes(dir: &Path) -> u64 {
    fn walk(dir: &Path, depth: u32) -> u64 {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return 0;
        };
        rd.flatten()
            .map(|e| match e.metadata() {
                Ok(m) if m.is_file() => m.len(),
                Ok(m) if m.is_dir() && depth > 0 => walk(&e.path(), depth - 1),
                _ => 0,
            })
            .sum()
    }
    walk(dir, 2)
}

/// `GET /metrics`.
pub async fn handle(s: web::Data<ApiState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let devices = if s.metrics.per_series {
        collect_devices(&s, None).await?
    } else {
        Vec::new()
    };
    let queues = s
        .queues
        .iter()
        .map(|w| {
            w.upgrade()
                .map(|tx| (tx.max_capacity() - tx.capacity(), tx.max_capacity()))
                .unwrap_or((0, 0))
        })
        .collect();
    let scrape = Scrape {
        node: s.node.clone(),
        status: s.status.view(),
        devices,
        queues,
        store_bytes: s.data_dir.as_deref().map(dir_bytes).unwrap_or(0),
        process: Process::read(),
        per_series: s.metrics.per_series,
        max_series: s.metrics.max_series,
    };
    let open_metrics = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/openmetrics-text"));
    let (body, content_type) = scrape
        .render(open_metrics)
        .map_err(|_| ApiError::Internal("cannot encode metrics".into()))?;
    Ok(HttpResponse::Ok().content_type(content_type).body(body))
}

impl Scrape {
    /// The exposition text and its content type.
    pub fn render(self, open_metrics: bool) -> Result<(String, &'static str), fmt::Error> {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(self));
        let mut out = String::with_capacity(64 * 1024);
        if open_metrics {
            prometheus_client::encoding::text::encode(&mut out, &registry)?;
            Ok((out, OPENMETRICS))
        } else {
            prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)?;
            Ok((
                out,
                prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            ))
        }
    }
}

/// One metric family of the exposition.
struct Family<'e> {
    enc: MetricEncoder<'e>,
    kind: MetricType,
}

impl Family<'_> {
    fn row(&mut self, labels: &impl EncodeLabelSet, v: f64) -> fmt::Result {
        let mut m = self.enc.encode_family(labels)?;
        match self.kind {
            MetricType::Counter => m.encode_counter::<NoLabelSet, f64, f64>(&v, None),
            _ => m.encode_gauge(&v),
        }
    }
}

fn family<'e>(
    enc: &'e mut DescriptorEncoder,
    name: &'e str,
    help: &str,
    kind: MetricType,
) -> Result<Family<'e>, fmt::Error> {
    Ok(Family {
        enc: enc.encode_descriptor(name, help, None, kind)?,
        kind,
    })
}

use MetricType::{Counter, Gauge};

const NO_LABELS: [(&str, &str); 0] = [];

fn b(v: bool) -> f64 {
    if v {
        1.0
    } else {
        0.0
    }
}

impl Collector for Scrape {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), fmt::Error> {
        let node = self.node.as_str();
        let st = &self.status;
        let n = [("node", node)];
        let one = |enc: &mut DescriptorEncoder, name, help, kind, v: f64| -> fmt::Result {
            family(enc, name, help, kind)?.row(&n, v)
        };

        let version = [("node", node), ("version", st.version)];
        family(
            &mut enc,
            "edgewatch_build_info",
            "Build of the running binary (always 1).",
            Gauge,
        )?
        .row(&version, 1.0)?;
        one(
            &mut enc,
            "edgewatch_start_time_seconds",
            "When the appliance started (unix seconds).",
            Gauge,
            st.started_at as f64 / 1000.0,
        )?;

        // Sources.
        let src: Vec<[(&str, &str); 3]> = st
            .sources
            .iter()
            .map(|s| [("node", node), ("source", s.id.as_str()), ("kind", s.kind)])
            .collect();
        type Pick = fn(&crate::status::SourceView) -> f64;
        let per_source: [(&str, &str, MetricType, Pick); 8] = [
            (
                "edgewatch_source_up",
                "1 while the source is connected or listening.",
                Gauge,
                |s| b(s.healthy),
            ),
            (
                "edgewatch_source_frames_accepted",
                "Frames decoded into samples.",
                Counter,
                |s| s.frames_accepted as f64,
            ),
            (
                "edgewatch_source_frames_rejected",
                "Frames rejected by the framer or decoder (bad, too long, cut at disconnect).",
                Counter,
                |s| s.frames_rejected as f64,
            ),
            (
                "edgewatch_source_dropped_queue_full",
                "Messages dropped because the queue toward analysis was full (MQTT).",
                Counter,
                |s| s.dropped_queue_full as f64,
            ),
            (
                "edgewatch_source_samples",
                "Samples routed to analysis.",
                Counter,
                |s| s.samples as f64,
            ),
            (
                "edgewatch_source_connections",
                "Open connections (TCP server: clients).",
                Gauge,
                |s| s.connections as f64,
            ),
            (
                "edgewatch_source_connects",
                "Connections made or accepted.",
                Counter,
                |s| s.connects_total as f64,
            ),
            (
                "edgewatch_source_restarts",
                "Restarts of the source task by its supervisor.",
                Counter,
                |s| s.restarts as f64,
            ),
        ];
        for (name, help, kind, pick) in per_source {
            let mut f = family(&mut enc, name, help, kind)?;
            for (s, l) in st.sources.iter().zip(&src) {
                f.row(l, pick(s))?;
            }
        }

        // Analysis.
        let a = &st.analysis;
        one(
            &mut enc,
            "edgewatch_samples_analyzed",
            "Samples analysed by the shards.",
            Counter,
            a.samples as f64,
        )?;
        one(
            &mut enc,
            "edgewatch_devices",
            "Devices known to analysis.",
            Gauge,
            a.devices as f64,
        )?;
        let mut f = family(
            &mut enc,
            "edgewatch_samples_rejected",
            "Samples rejected by analysis, by reason.",
            Counter,
        )?;
        for (reason, v) in [
            ("unknown_device", a.rejected_unknown_device),
            ("wrong_source", a.rejected_wrong_source),
            ("limit", a.rejected_limit),
        ] {
            f.row(&[("node", node), ("reason", reason)], v as f64)?;
        }
        let mut f = family(
            &mut enc,
            "edgewatch_shard_queue_depth",
            "Batches waiting in each analysis shard's queue.",
            Gauge,
        )?;
        let shard_ids: Vec<String> = (0..self.queues.len()).map(|i| i.to_string()).collect();
        for ((depth, _), id) in self.queues.iter().zip(&shard_ids) {
            f.row(&[("node", node), ("shard", id.as_str())], *depth as f64)?;
        }
        let mut f = family(
            &mut enc,
            "edgewatch_shard_queue_capacity",
            "Capacity of each analysis shard's queue (analysis.queue).",
            Gauge,
        )?;
        for ((_, cap), id) in self.queues.iter().zip(&shard_ids) {
            f.row(&[("node", node), ("shard", id.as_str())], *cap as f64)?;
        }

        // Alerts, summaries, /ws.
        one(
            &mut enc,
            "edgewatch_alerts_fired",
            "Alerts raised.",
            Counter,
            st.alerts.fired as f64,
        )?;
        one(
            &mut enc,
            "edgewatch_alerts_resolved",
            "Alerts resolved.",
            Counter,
            st.alerts.resolved as f64,
        )?;
        one(
            &mut enc,
            "edgewatch_alerts_firing",
            "Alerts firing now.",
            Gauge,
            st.alerts.firing as f64,
        )?;
        one(
            &mut enc,
            "edgewatch_summaries",
            "Summaries published.",
            Counter,
            st.ws.summaries as f64,
        )?;
        one(
            &mut enc,
            "edgewatch_ws_clients",
            "Connected /ws clients.",
            Gauge,
            st.ws.clients as f64,
        )?;
        one(
            &mut enc,
            "edgewatch_ws_dropped_slow",
            "/ws clients closed for falling behind.",
            Counter,
            st.ws.dropped_slow as f64,
        )?;

        // Delivery: upstream and every [[sink]], each with its own outbox.
        let consumers: Vec<(&str, &crate::upstream::UpstreamView)> = st
            .upstream
            .iter()
            .map(|u| ("upstream", u))
            .chain(st.sinks.iter().map(|s| (s.id.as_str(), &s.delivery)))
            .collect();
        type PickD = fn(&crate::upstream::UpstreamView) -> f64;
        let per_consumer: [(&str, &str, MetricType, PickD); 8] = [
            (
                "edgewatch_delivery_connected",
                "1 while the output has a session with its peer.",
                Gauge,
                |d| b(d.connected),
            ),
            (
                "edgewatch_delivery_connects",
                "Sessions opened.",
                Counter,
                |d| d.connects as f64,
            ),
            (
                "edgewatch_delivery_sent",
                "Messages sent (repeats after a reconnect included).",
                Counter,
                |d| d.sent as f64,
            ),
            (
                "edgewatch_delivery_acked",
                "Messages acknowledged by the peer and deleted from the outbox.",
                Counter,
                |d| d.acked as f64,
            ),
            (
                "edgewatch_delivery_dropped",
                "Messages dropped by the outbox budget (reported as gap notices).",
                Counter,
                |d| d.dropped as f64,
            ),
            (
                "edgewatch_outbox_bytes",
                "Bytes held in the output's outbox.",
                Gauge,
                |d| d.outbox_bytes as f64,
            ),
            (
                "edgewatch_outbox_durable_seq",
                "Highest seq on disk in the output's outbox.",
                Gauge,
                |d| d.durable_seq as f64,
            ),
            (
                "edgewatch_outbox_last_sent_seq",
                "Highest seq sent by the output.",
                Gauge,
                |d| d.last_seq as f64,
            ),
        ];
        for (name, help, kind, pick) in per_consumer {
            let mut f = family(&mut enc, name, help, kind)?;
            for (id, d) in &consumers {
                f.row(&[("node", node), ("consumer", id)], pick(d))?;
            }
        }
        let mut f = family(
            &mut enc,
            "edgewatch_outbox_messages",
            "Messages held in the output's outbox, by lane.",
            Gauge,
        )?;
        for (id, d) in &consumers {
            f.row(
                &[("node", node), ("consumer", id), ("lane", "alert")],
                d.outbox_alerts as f64,
            )?;
            f.row(
                &[("node", node), ("consumer", id), ("lane", "summary")],
                d.outbox_summaries as f64,
            )?;
        }

        // Store and clock.
        one(
            &mut enc,
            "edgewatch_store_bytes",
            "Bytes of the data directory on disk.",
            Gauge,
            self.store_bytes as f64,
        )?;
        let mut f = family(
            &mut enc,
            "edgewatch_store_damaged_records",
            "Stored records found damaged at start and dropped, by tree.",
            Counter,
        )?;
        for (tree, v) in &st.store.damaged {
            f.row(&[("node", node), ("tree", tree.as_str())], *v as f64)?;
        }
        one(
            &mut enc,
            "edgewatch_store_moved_aside",
            "1 when the database could not be opened at start and was moved aside.",
            Gauge,
            b(st.store.moved_aside.is_some()),
        )?;
        let c = &st.clock;
        one(
            &mut enc,
            "edgewatch_clock_plausible",
            "1 while the wall clock is not before the build time.",
            Gauge,
            b(c.plausible),
        )?;
        one(
            &mut enc,
            "edgewatch_clock_jumps",
            "Wall-clock jumps detected.",
            Counter,
            c.jumps as f64,
        )?;
        one(
            &mut enc,
            "edgewatch_clock_unsynced_samples",
            "Samples stamped while the clock was implausible.",
            Counter,
            c.unsynced_samples as f64,
        )?;

        // The process (standard names of Prometheus client libraries).
        let p = &self.process;
        for (name, help, kind, v) in [
            (
                "process_cpu_seconds",
                "User and system CPU time spent in seconds.",
                Counter,
                p.cpu_seconds,
            ),
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                Gauge,
                p.resident_bytes.map(|v| v as f64),
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
                Gauge,
                p.virtual_bytes.map(|v| v as f64),
            ),
            (
                "process_open_fds",
                "Number of open file descriptors.",
                Gauge,
                p.open_fds.map(|v| v as f64),
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors.",
                Gauge,
                p.max_fds.map(|v| v as f64),
            ),
            (
                "process_threads",
                "Number of OS threads in the process.",
                Gauge,
                p.threads.map(|v| v as f64),
            ),
            (
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
                Gauge,
                Some(st.started_at as f64 / 1000.0),
            ),
        ] {
            if let Some(v) = v {
                family(&mut enc, name, help, kind)?.row(&NO_LABELS, v)?;
            }
        }

        // Per series, capped.
        let total: usize = self.devices.iter().map(|d| d.metrics.len()).sum();
        let shown = if self.per_series {
            total.min(self.max_series)
        } else {
            0
        };
        one(
            &mut enc,
            "edgewatch_metrics_series",
            "Device/metric series exposed on /metrics.",
            Gauge,
            shown as f64,
        )?;
        one(
            &mut enc,
            "edgewatch_metrics_series_omitted",
            "Device/metric series left out of /metrics (api.metrics.max_series).",
            Gauge,
            (total - shown) as f64,
        )?;
        if !self.per_series {
            return Ok(());
        }
        let series: Vec<_> = self
            .devices
            .iter()
            .flat_map(|d| d.metrics.iter().map(move |m| (d, m)))
            .take(shown)
            .collect();
        type PickS = fn(&crate::analysis::shard::MetricView) -> Option<f64>;
        let per_series: [(&str, &str, MetricType, PickS); 6] = [
            ("edgewatch_series_last", "Latest value of the series.", Gauge, |m| m.last_value),
            ("edgewatch_series_last_timestamp_seconds", "Timestamp of the latest value (unix seconds).", Gauge, |m| m.last_ts.map(|t| t as f64 / 1000.0)),
            ("edgewatch_series_mean", "Mean over the rolling window.", Gauge, |m| m.mean),
            ("edgewatch_series_std", "Standard deviation over the rolling window.", Gauge, |m| m.std),
            ("edgewatch_series_anomaly", "Highest anomaly score of the series' detectors (0..1, 0.5 at the firing threshold).", Gauge, |m| Some(m.anomaly)),
            ("edgewatch_series_samples", "Samples analysed for the series.", Counter, |m| Some(m.total as f64)),
        ];
        for (name, help, kind, pick) in per_series {
            let mut f = family(&mut enc, name, help, kind)?;
            for (d, m) in &series {
                if let Some(v) = pick(m).filter(|v| v.is_finite()) {
                    f.row(
                        &[
                            ("node", node),
                            ("device", d.device.as_str()),
                            ("metric", m.metric.as_str()),
                        ],
                        v,
                    )?;
                }
            }
        }
        let mut f = family(
            &mut enc,
            "edgewatch_alert_firing",
            "1 for each alert firing now (per device, metric and detector).",
            Gauge,
        )?;
        for (d, m) in &series {
            for a in &m.firing {
                let sev = match a.severity {
                    crate::model::Severity::Info => "info",
                    crate::model::Severity::Warning => "warning",
                    crate::model::Severity::Critical => "critical",
                };
                f.row(
                    &[
                        ("node", node),
                        ("device", d.device.as_str()),
                        ("metric", m.metric.as_str()),
                        ("detector", a.detector.as_str()),
                        ("severity", sev),
                    ],
                    1.0,
                )?;
            }
        }
        Ok(())
    }
}
