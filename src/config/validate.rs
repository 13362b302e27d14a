//! Semantic checks (references, ranges, fields that do not apply) and resolution of templates
//! into one compiled `MetricPolicy` per configured metric. Errors carry the path of the field.
//! (Over 600 lines with its tests; the checks themselves are about 700.)

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

use super::load::Seg;
use super::{Config, DetectorConfig, MetricConfig, SourceConfig, TcpMode};
use crate::analysis::detector::{ensemble, DetectorSpec};
use crate::analysis::device::DeviceLevelPolicy;
use crate::analysis::stats::WindowSpec;
use crate::auth::ApiToken;
use crate::model::Severity;

type VResult<T> = Result<T, (Vec<Seg>, String)>;

/// One configured detector, ready to run.
#[derive(Debug, Clone, PartialEq)]
pub struct DetectorInstance {
    pub name: String,
    pub spec: DetectorSpec,
    pub severity: Severity,
    pub hold_ms: i64,
}

/// How one metric is analysed: its statistics window and its detectors.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricPolicy {
    pub window: WindowSpec,
    pub ewma_alpha: f64,
    pub detectors: Vec<DetectorInstance>,
}

/// Per-device view of the config.
#[derive(Debug, Clone)]
pub struct DevicePolicy {
    pub source: Option<String>,
    pub metrics: BTreeMap<String, Arc<MetricPolicy>>,
    /// Policy for metrics not listed.
    pub default: Arc<MetricPolicy>,
    /// Device-level analysis (`vector`, `device_detectors`); `None`: none.
    pub level: Option<Arc<DeviceLevelPolicy>>,
}

/// A validated config plus the compiled policies.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub config: Config,
    pub path: PathBuf,
    pub devices: BTreeMap<String, DevicePolicy>,
    /// Policy for auto-registered devices; `None` when unknown devices are rejected.
    pub unknown: Option<Arc<MetricPolicy>>,
    /// Device-level analysis of auto-registered devices.
    pub unknown_level: Option<Arc<DeviceLevelPolicy>>,
    /// The token `/api/*` and `/ws` require, read from `api.token_file`; `None`: open API.
    pub api_token: Option<ApiToken>,
    /// Every `[template.NAME]` compiled into a policy (e.g. for `edgewatch replay --template`).
    pub templates: BTreeMap<String, Arc<MetricPolicy>>,
}

pub use crate::analysis::detector::DEFAULT_WINDOW;
pub const DEFAULT_EWMA_ALPHA: f64 = 0.1;
const DEFAULT_HOLD_MS: i64 = 2_000;
/// The ensemble reports each event once (its own de-duplication, counted in samples), so its
/// alert resolves on the next quiet sample: a wall-clock hold would swallow separate events that
/// come close together on a fast series.
const ENSEMBLE_HOLD_MS: i64 = 0;
/// Most points `analysis.history` may keep per metric (16 bytes each).
pub const MAX_HISTORY: usize = 100_000;

/// The detector set a metric gets when the config names none: the `ensemble`.
pub fn default_detectors() -> Vec<DetectorInstance> {
    vec![DetectorInstance {
        name: "ensemble".into(),
        spec: DetectorSpec::Ensemble(ensemble::Spec::default()),
        severity: Severity::Warning,
        hold_ms: ENSEMBLE_HOLD_MS,
    }]
}

pub(super) fn key(k: &str) -> Seg {
    Seg::Key(k.to_string())
}

pub(super) fn at(base: &[Seg], more: &[Seg]) -> Vec<Seg> {
    let mut p = base.to_vec();
    p.extend_from_slice(more);
    p
}

pub(super) fn fail<T>(path: Vec<Seg>, msg: impl Into<String>) -> VResult<T> {
    Err((path, msg.into()))
}

pub(super) fn check_name(path: Vec<Seg>, what: &str, s: &str) -> VResult<()> {
    if s.is_empty() || s.len() > 128 || s.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return fail(
            path,
            format!(
                "{what} {s:?} must be 1 to 128 characters without spaces or control characters"
            ),
        );
    }
    Ok(())
}

pub(super) fn validate(mut config: Config, path: PathBuf) -> VResult<Resolved> {
    check_name(vec![key("node_id")], "node_id", &config.node_id)?;
    host_defaults(&mut config);
    if config.summary_interval.as_ms() < 100 {
        return fail(vec![key("summary_interval")], "must be at least 100ms");
    }
    if config.persist_interval.as_ms() < 1000 {
        return fail(vec![key("persist_interval")], "must be at least 1s");
    }
    if config.store.cache_bytes < 1 << 20 {
        return fail(
            vec![key("store"), key("cache_bytes")],
            "must be at least 1048576 (1 MiB)",
        );
    }
    if config.store.alert_log_max == 0 {
        return fail(
            vec![key("store"), key("alert_log_max")],
            "must be at least 1",
        );
    }
    let seg = config.store.segment_size;
    if !seg.is_power_of_two() || !(1 << 16..=1 << 24).contains(&seg) {
        return fail(
            vec![key("store"), key("segment_size")],
            "must be a power of two from 65536 (64 KiB) to 16777216 (16 MiB)",
        );
    }
    if config.store.retention_interval.as_ms() < 100 {
        return fail(
            vec![key("store"), key("retention_interval")],
            "must be at least 100ms",
        );
    }
    if config.store.history_1m_max_age.as_ms() < 3_600_000 {
        return fail(
            vec![key("store"), key("history_1m_max_age")],
            "must be at least 1h",
        );
    }
    if config.store.history_15m_max_age.as_ms() < config.store.history_1m_max_age.as_ms() {
        return fail(
            vec![key("store"), key("history_15m_max_age")],
            "must be at least history_1m_max_age",
        );
    }
    if config.api.ws_buffer == 0 {
        return fail(vec![key("api"), key("ws_buffer")], "must be at least 1");
    }
    if config.api.max_connections == 0 {
        return fail(
            vec![key("api"), key("max_connections")],
            "must be at least 1",
        );
    }
    if !(125..=1 << 20).contains(&config.api.ws_max_frame) {
        return fail(
            vec![key("api"), key("ws_max_frame")],
            "must be between 125 (the largest control frame) and 1048576 bytes",
        );
    }
    for (k, d) in [
        ("request_timeout", config.api.request_timeout),
        ("keep_alive", config.api.keep_alive),
        ("ws_ping_interval", config.api.ws_ping_interval),
    ] {
        if d.as_ms() == 0 {
            return fail(vec![key("api"), key(k)], "must be greater than 0");
        }
    }
    if config.analysis.queue == 0 {
        return fail(vec![key("analysis"), key("queue")], "must be at least 1");
    }
    if config.analysis.shards > 256 {
        return fail(vec![key("analysis"), key("shards")], "must be at most 256");
    }
    if config.analysis.history > MAX_HISTORY {
        return fail(
            vec![key("analysis"), key("history")],
            format!("must be at most {MAX_HISTORY}"),
        );
    }
    // Read now, so that `check` and start-up both report a missing or bad token file.
    let api_token = match &config.api.token_file {
        None => None,
        Some(f) => Some(
            ApiToken::from_file(f)
                .map_err(|e| (vec![key("api"), key("token_file")], e.to_string()))?,
        ),
    };

    if let Some(u) = &config.upstream {
        validate_upstream(u)?;
    }
    let mut sink_ids = HashSet::new();
    for (i, k) in config.sinks.iter().enumerate() {
        let p = vec![key("sink"), Seg::Index(i)];
        check_name(at(&p, &[key("id")]), "sink id", k.id())?;
        if !sink_ids.insert(k.id()) {
            return fail(
                at(&p, &[key("id")]),
                format!("duplicate sink id {:?}", k.id()),
            );
        }
        match k {
            super::SinkConfig::Mqtt(m) => validate_mqtt_sink(m, &p)?,
            super::SinkConfig::PrometheusRemoteWrite(r) => {
                r.check().or_else(|(f, msg)| fail(at(&p, &[key(f)]), msg))?;
                validate_backoff(r.backoff_min, r.backoff_max, &p)?;
            }
            super::SinkConfig::Alertmanager(a) => {
                validate_http_sink(&a.url, a.backoff_min, a.backoff_max, &p)?;
                if a.batch == 0 {
                    return fail(at(&p, &[key("batch")]), "must be at least 1");
                }
                if a.resend_interval.0 < std::time::Duration::from_secs(1) {
                    return fail(at(&p, &[key("resend_interval")]), "must be at least 1s");
                }
            }
            super::SinkConfig::Webhook(w) => {
                validate_http_sink(&w.url, w.backoff_min, w.backoff_max, &p)?;
                if let Some(t) = &w.template {
                    if let Err(e) = crate::sinks::webhook::check_template(t) {
                        return fail(at(&p, &[key("template")]), e);
                    }
                }
            }
            super::SinkConfig::Influxdb(x) => {
                validate_http_sink(&x.url, x.backoff_min, x.backoff_max, &p)?;
                if x.batch == 0 {
                    return fail(at(&p, &[key("batch")]), "must be at least 1");
                }
                if let super::SampleMode::Every(d) = x.samples {
                    if d < std::time::Duration::from_secs(1)
                        || d > std::time::Duration::from_secs(86_400)
                    {
                        return fail(
                            at(&p, &[key("samples")]),
                            "an interval must be between 1s and 24h",
                        );
                    }
                }
                if x.samples != super::SampleMode::None {
                    let other = config.sinks.iter().find_map(|o| match o {
                        super::SinkConfig::Influxdb(o)
                            if o.samples != super::SampleMode::None && o.samples != x.samples =>
                        {
                            Some(o.id.as_str())
                        }
                        _ => None,
                    });
                    if let Some(o) = other {
                        return fail(
                            at(&p, &[key("samples")]),
                            format!("sink {o:?} asks for other samples; all influxdb sinks with samples must use the same setting"),
                        );
                    }
                }
                match x.api {
                    super::InfluxApi::V1 if x.database.is_none() => {
                        return fail(at(&p, &[key("database")]), "api = \"v1\" needs a database");
                    }
                    super::InfluxApi::V2 if x.org.is_none() || x.bucket.is_none() => {
                        let f = if x.org.is_none() { "org" } else { "bucket" };
                        return fail(at(&p, &[key(f)]), "api = \"v2\" needs org and bucket");
                    }
                    _ => {}
                }
            }
        }
    }

    let mut source_ids = HashSet::new();
    let mut on_api = false;
    for (i, s) in config.sources.iter().enumerate() {
        let p = vec![key("source"), Seg::Index(i)];
        check_name(at(&p, &[key("id")]), "source id", s.id())?;
        if !source_ids.insert(s.id().to_string()) {
            return fail(
                at(&p, &[key("id")]),
                format!("duplicate source id {:?}", s.id()),
            );
        }
        validate_source(s, &p)?;
        if let SourceConfig::Http(h) = s {
            if h.listen.is_none() && std::mem::replace(&mut on_api, true) {
                return fail(
                    at(&p, &[key("listen")]),
                    "only one http source can use the API listener (/api/ingest); give this one a `listen` address",
                );
            }
        }
    }

    // Templates: resolve each once (this also rejects unknown references and cycles).
    let mut resolver = Resolver {
        templates: &config.templates,
        done: HashMap::new(),
    };
    let mut templates = BTreeMap::new();
    for name in config.templates.keys() {
        let p = [key("template"), key(name)];
        resolver.template(name, &p, &mut Vec::new())?;
        let base = MetricConfig {
            template: Some(name.clone()),
            ..MetricConfig::default()
        };
        templates.insert(name.clone(), resolver.metric(&base, &p, &mut Vec::new())?);
    }

    let mut devices = BTreeMap::new();
    for (i, d) in config.devices.iter().enumerate() {
        let p = vec![key("device"), Seg::Index(i)];
        check_name(at(&p, &[key("id")]), "device id", &d.id)?;
        if devices.contains_key(&d.id) {
            return fail(
                at(&p, &[key("id")]),
                format!("duplicate device id {:?}", d.id),
            );
        }
        if let Some(src) = &d.source {
            if !source_ids.contains(src) {
                return fail(
                    at(&p, &[key("source")]),
                    format!(
                        "device {:?} names source {src:?}, which does not exist (sources: {})",
                        d.id,
                        list(&source_ids)
                    ),
                );
            }
        }
        let base = MetricConfig {
            template: d.template.clone(),
            ..MetricConfig::default()
        };
        let default = resolver.metric(&base, &p, &mut Vec::new())?;
        let mut metrics = BTreeMap::new();
        for (m, mc) in &d.metrics {
            let mp = at(&p, &[key("metrics"), key(m)]);
            check_name(mp.clone(), "metric name", m)?;
            let mut merged = mc.clone();
            if merged.template.is_none() {
                merged.template = d.template.clone();
            }
            metrics.insert(m.clone(), resolver.metric(&merged, &mp, &mut Vec::new())?);
        }
        let level =
            super::device::device_level(d.vector.as_ref(), d.device_detectors.as_deref(), &p)?;
        devices.insert(
            d.id.clone(),
            DevicePolicy {
                source: d.source.clone(),
                metrics,
                default,
                level,
            },
        );
    }

    let unknown = match config.unknown_devices.policy {
        super::UnknownPolicy::Reject => None,
        super::UnknownPolicy::Register => {
            let base = MetricConfig {
                template: config.unknown_devices.template.clone(),
                ..MetricConfig::default()
            };
            Some(resolver.metric(&base, &[key("unknown_devices")], &mut Vec::new())?)
        }
    };
    if let (Some(t), super::UnknownPolicy::Reject) = (
        &config.unknown_devices.template,
        config.unknown_devices.policy,
    ) {
        if !config.templates.contains_key(t) {
            return fail(
                vec![key("unknown_devices"), key("template")],
                format!("template {t:?} does not exist"),
            );
        }
    }

    let unknown_level = super::device::device_level(
        config.unknown_devices.vector.as_ref(),
        config.unknown_devices.device_detectors.as_deref(),
        &[key("unknown_devices")],
    )?;
    Ok(Resolved {
        unknown_level,
        config,
        path,
        devices,
        unknown,
        api_token,
        templates,
    })
}

fn list(set: &HashSet<String>) -> String {
    let mut v: Vec<&str> = set.iter().map(String::as_str).collect();
    v.sort_unstable();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

fn validate_upstream(u: &super::UpstreamConfig) -> VResult<()> {
    let p = |k: &str| vec![key("upstream"), key(k)];
    match (u.url.is_empty(), u.urls.is_empty()) {
        (true, true) => return fail(p("url"), "give the receiver's `url` (or several as `urls`)"),
        (false, false) => return fail(p("urls"), "give `url` or `urls`, not both"),
        _ => {}
    }
    if u.urls.len() > 8 {
        return fail(p("urls"), "at most 8 receivers");
    }
    for (i, url) in u.receivers().into_iter().enumerate() {
        if !(url.starts_with("ws://") || url.starts_with("wss://")) {
            let at = if u.urls.is_empty() {
                p("url")
            } else {
                vec![key("upstream"), key("urls"), Seg::Index(i)]
            };
            return fail(at, format!("{url:?} must start with ws:// or wss://"));
        }
    }
    if u.token_file.is_some() && u.token_env.is_some() {
        return fail(p("token_env"), "give `token_file` or `token_env`, not both");
    }
    if u.ca_file.is_some() && !u.receivers().iter().any(|r| r.starts_with("wss://")) {
        return fail(p("ca_file"), "a CA file only applies to wss:// URLs");
    }
    if u.connect_timeout.as_ms() < 100 || u.failback_interval.as_ms() < 100 {
        return fail(
            p("connect_timeout"),
            "connect_timeout and failback_interval must be at least 100ms",
        );
    }
    if u.summary_interval.as_ms() < 100 {
        return fail(p("summary_interval"), "must be at least 100ms");
    }
    if u.ping_interval.as_ms() < 100 || u.pong_timeout.as_ms() < 100 {
        return fail(
            p("ping_interval"),
            "ping_interval and pong_timeout must be at least 100ms",
        );
    }
    if u.backoff_min.as_ms() == 0 || u.backoff_max < u.backoff_min {
        return fail(p("backoff_max"), "need 0 < backoff_min <= backoff_max");
    }
    if !(0.0..=1.0).contains(&u.backoff_jitter) {
        return fail(p("backoff_jitter"), "must be between 0 and 1");
    }
    if u.window == 0 || u.window > 100_000 {
        return fail(p("window"), "must be between 1 and 100000");
    }
    if u.budget.max_bytes < 64 * 1024 {
        return fail(
            vec![key("upstream"), key("budget"), key("max_bytes")],
            "must be at least 65536",
        );
    }
    if u.budget.alert_max_bytes.is_some_and(|b| b < 16 * 1024) {
        return fail(
            vec![key("upstream"), key("budget"), key("alert_max_bytes")],
            "must be at least 16384",
        );
    }
    Ok(())
}

/// A host source's device is the node and its disk the data directory unless it says otherwise;
/// with a `template` or `metrics`, that device is configured with them (unless a `[[device]]` names it).
fn host_defaults(config: &mut Config) {
    let mut add = Vec::new();
    for s in &mut config.sources {
        if let SourceConfig::Host(h) = s {
            let device = h
                .device
                .get_or_insert_with(|| config.node_id.clone())
                .clone();
            h.disk_path.get_or_insert_with(|| config.data_dir.clone());
            if h.template.is_some() || !h.metrics.is_empty() {
                add.push(super::DeviceConfig {
                    id: device,
                    source: Some(h.id.clone()),
                    template: h.template.clone(),
                    metrics: h.metrics.clone(),
                    vector: None,
                    device_detectors: None,
                });
            }
        }
    }
    for d in add {
        if !config.devices.iter().any(|x| x.id == d.id) {
            config.devices.push(d);
        }
    }
}

fn validate_source(s: &SourceConfig, p: &[Seg]) -> VResult<()> {
    match s {
        SourceConfig::Sim(sim) => {
            if sim.interval.as_ms() < 1 {
                return fail(at(p, &[key("interval")]), "must be at least 1ms");
            }
            let mut ids = HashSet::new();
            for (i, d) in sim.devices.iter().enumerate() {
                let dp = at(p, &[key("device"), Seg::Index(i)]);
                check_name(at(&dp, &[key("id")]), "device id", &d.id)?;
                if !ids.insert(&d.id) {
                    return fail(
                        at(&dp, &[key("id")]),
                        format!("duplicate simulated device {:?}", d.id),
                    );
                }
                for (m, mc) in &d.metrics {
                    let mp = at(&dp, &[key("metrics"), key(m)]);
                    check_name(mp.clone(), "metric name", m)?;
                    if !mc.mean.is_finite() {
                        return fail(at(&mp, &[key("mean")]), "must be a finite number");
                    }
                    if !(mc.noise >= 0.0 && mc.noise.is_finite()) {
                        return fail(at(&mp, &[key("noise")]), "must be >= 0");
                    }
                    if !(0.0..=1.0).contains(&mc.anomaly_rate) {
                        return fail(at(&mp, &[key("anomaly_rate")]), "must be between 0 and 1");
                    }
                    if mc.period.is_some_and(|d| d.as_ms() == 0) {
                        return fail(at(&mp, &[key("period")]), "must be greater than 0");
                    }
                    if mc.amplitude != 0.0 && mc.period.is_none() {
                        return fail(
                            at(&mp, &[key("amplitude")]),
                            "an amplitude needs a `period`",
                        );
                    }
                }
            }
        }
        SourceConfig::Tcp(t) => {
            if !(16..=1 << 20).contains(&t.max_frame) {
                return fail(
                    at(p, &[key("max_frame")]),
                    "must be between 16 and 1048576 bytes",
                );
            }
            validate_influx_only(
                t.format == super::Format::Influx,
                &t.device_tag,
                t.influx_metric,
                p,
            )?;
            if let TcpMode::Server {
                max_clients, guard, ..
            } = &t.mode
            {
                if *max_clients == 0 {
                    return fail(at(p, &[key("max_clients")]), "must be at least 1");
                }
                if guard.max_clients_per_ip == 0 {
                    return fail(at(p, &[key("max_clients_per_ip")]), "must be at least 1");
                }
                if guard.read_timeout.as_ms() == 0 {
                    return fail(at(p, &[key("read_timeout")]), "must be greater than 0");
                }
                if let Some(tls) = &guard.tls {
                    if tls.handshake_timeout.as_ms() == 0 {
                        return fail(
                            at(p, &[key("tls"), key("handshake_timeout")]),
                            "must be greater than 0",
                        );
                    }
                    use crate::sources::tls::{acceptor, TlsError};
                    if let Err(e) = acceptor(tls) {
                        let field = match &e {
                            TlsError::Read { field, .. } | TlsError::NoCert { field, .. } => {
                                vec![key("tls"), key(field)]
                            }
                            TlsError::Rustls(_) => vec![key("tls")],
                        };
                        return fail(at(p, &field), e.to_string());
                    }
                }
            }
            if t.backoff_min.as_ms() == 0 {
                return fail(at(p, &[key("backoff_min")]), "must be greater than 0");
            }
            if t.backoff_max < t.backoff_min {
                return fail(
                    at(p, &[key("backoff_max")]),
                    "must not be less than backoff_min",
                );
            }
        }
        SourceConfig::Serial(s) => super::serial::validate_serial(s, p)?,
        SourceConfig::Modbus(m) => super::serial::validate_modbus(m, p)?,
        SourceConfig::Mqtt(m) => validate_mqtt_source(m, p)?,
        SourceConfig::Udp(u) => super::ingest::validate_udp(u, p)?,
        SourceConfig::Http(h) => super::ingest::validate_http(h, p)?,
        SourceConfig::Host(h) => super::local::validate_host(h, p)?,
        SourceConfig::File(f) => super::local::validate_file(f, p)?,
        SourceConfig::Exec(x) => super::local::validate_exec(x, p)?,
    }
    Ok(())
}

fn validate_mqtt_conn(c: &super::mqtt::Conn<'_>, p: &[Seg]) -> VResult<()> {
    let tls = c.url.starts_with("mqtts://");
    if !(tls || c.url.starts_with("mqtt://")) {
        return fail(
            at(p, &[key("url")]),
            format!("{:?} must start with mqtt:// or mqtts://", c.url),
        );
    }
    if let Err(e) = crate::mqtt::broker_addr(c.url) {
        return fail(at(p, &[key("url")]), e.to_string());
    }
    if !c.clean_session && c.client_id.is_none() {
        return fail(
            at(p, &[key("client_id")]),
            "a persistent session (clean_session = false) needs a client_id",
        );
    }
    if c.client_id
        .is_some_and(|id| id.is_empty() || id.len() > 128)
    {
        return fail(at(p, &[key("client_id")]), "must be 1 to 128 characters");
    }
    if c.password_file.is_some() && c.password_env.is_some() {
        return fail(
            at(p, &[key("password_env")]),
            "give `password_file` or `password_env`, not both",
        );
    }
    if (c.password_file.is_some() || c.password_env.is_some()) && c.username.is_none() {
        return fail(at(p, &[key("username")]), "a password needs a `username`");
    }
    if !tls && (c.ca_file.is_some() || c.client_cert.is_some()) {
        return fail(
            at(p, &[key("ca_file")]),
            "CA and client certificates only apply to mqtts:// URLs",
        );
    }
    if c.client_cert.is_some() != c.client_key.is_some() {
        return fail(
            at(p, &[key("client_key")]),
            "give both `client_cert` and `client_key`",
        );
    }
    if !(5..=65_535).contains(&c.keep_alive.0.as_secs()) {
        return fail(at(p, &[key("keep_alive")]), "must be between 5s and 65535s");
    }
    if !(1024..=256 << 20).contains(&c.max_packet_size) {
        return fail(
            at(p, &[key("max_packet_size")]),
            "must be between 1024 and 268435456 bytes",
        );
    }
    Ok(())
}

/// `device_tag` and `influx_metric` mean something for Influx line protocol only.
pub(super) fn validate_influx_only(
    influx: bool,
    device_tag: &Option<String>,
    metric: super::MetricName,
    p: &[Seg],
) -> VResult<()> {
    if influx {
        if let Some(t) = device_tag {
            check_name(at(p, &[key("device_tag")]), "tag name", t)?;
        }
        return Ok(());
    }
    let field = if device_tag.is_some() {
        "device_tag"
    } else if metric != super::MetricName::Auto {
        "influx_metric"
    } else {
        return Ok(());
    };
    fail(at(p, &[key(field)]), "applies to format = \"influx\" only")
}

pub(super) fn validate_backoff(min: super::Dur, max: super::Dur, p: &[Seg]) -> VResult<()> {
    if min.as_ms() == 0 {
        return fail(at(p, &[key("backoff_min")]), "must be greater than 0");
    }
    if max < min {
        return fail(
            at(p, &[key("backoff_max")]),
            "must not be less than backoff_min",
        );
    }
    Ok(())
}

fn validate_mqtt_source(m: &super::MqttSource, p: &[Seg]) -> VResult<()> {
    use super::MqttPayload;
    validate_mqtt_conn(&m.conn(), p)?;
    validate_backoff(m.backoff_min, m.backoff_max, p)?;
    if !(1..=1 << 22).contains(&m.queue) {
        return fail(at(p, &[key("queue")]), "must be between 1 and 4194304");
    }
    if m.queue_bytes < m.max_packet_size {
        return fail(
            at(p, &[key("queue_bytes")]),
            format!(
                "must be at least max_packet_size ({} bytes), or the largest message never fits",
                m.max_packet_size
            ),
        );
    }
    if m.subscriptions.is_empty() {
        return fail(
            at(p, &[key("subscribe")]),
            "an MQTT source needs at least one [[source.subscribe]]",
        );
    }
    for (i, s) in m.subscriptions.iter().enumerate() {
        let sp = at(p, &[key("subscribe"), Seg::Index(i)]);
        let pat = match crate::sources::mqtt::topic::Pattern::parse(&s.topic) {
            Ok(pat) => pat,
            Err(e) => return fail(at(&sp, &[key("topic")]), e),
        };
        if s.qos > 1 {
            return fail(at(&sp, &[key("qos")]), "must be 0 or 1");
        }
        if let Some(d) = &s.device {
            check_name(at(&sp, &[key("device")]), "device id", d)?;
        }
        if let Some(m) = &s.metric {
            check_name(at(&sp, &[key("metric")]), "metric name", m)?;
        }
        for (f, v) in [("value", &s.value), ("ts", &s.ts)] {
            if let Some(Err(e)) = v.as_deref().map(crate::decode::path::FieldPath::parse) {
                return fail(at(&sp, &[key(f)]), e);
            }
        }
        if s.ts.is_some() && s.value.is_none() {
            return fail(at(&sp, &[key("ts")]), "a `ts` path needs a `value` path");
        }
        validate_influx_only(
            s.format == MqttPayload::Influx,
            &s.device_tag,
            s.influx_metric,
            &sp,
        )?;
        if s.format == MqttPayload::SparkplugB {
            validate_sparkplug(s, &pat, &sp)?;
            continue;
        }
        if s.sparkplug.is_some() {
            return fail(
                at(&sp, &[key("sparkplug")]),
                "applies to format = \"sparkplug_b\" only",
            );
        }
        if s.value.is_some() && s.format != MqttPayload::Json {
            return fail(
                at(&sp, &[key("value")]),
                "field paths apply to format = \"json\" only",
            );
        }
        let has_device = pat.has_device() || s.device.is_some();
        let has_metric = pat.has_metric() || s.metric.is_some();
        if pat.has_device() && s.device.is_some() {
            return fail(
                at(&sp, &[key("device")]),
                "the topic already captures {device}",
            );
        }
        if pat.has_metric() && s.metric.is_some() {
            return fail(
                at(&sp, &[key("metric")]),
                "the topic already captures {metric}",
            );
        }
        let needs_both = s.format == MqttPayload::Number || s.value.is_some();
        if needs_both && !(has_device && has_metric) {
            return fail(
                at(&sp, &[key("topic")]),
                "this payload carries no names: capture {device} and {metric} in the topic (or set `device` / `metric`)",
            );
        }
    }
    Ok(())
}

/// A `format = "sparkplug_b"` subscription: names come from the Sparkplug topic and births, so
/// no captures or fixed names; device id templates use `{group}`, `{edge_node}`, `{device}`.
fn validate_sparkplug(
    s: &super::MqttSubscription,
    pat: &crate::sources::mqtt::topic::Pattern,
    sp: &[Seg],
) -> VResult<()> {
    use crate::sources::mqtt::sparkplug::NAMESPACE;
    if !s.topic.starts_with(&format!("{NAMESPACE}/")) || pat.has_device() || pat.has_metric() {
        return fail(
            at(sp, &[key("topic")]),
            format!(
                "a Sparkplug B subscription is an MQTT filter under {NAMESPACE}/ without captures, e.g. \"{NAMESPACE}/#\" or \"{NAMESPACE}/MyGroup/#\""
            ),
        );
    }
    for (f, set) in [
        ("value", s.value.is_some()),
        ("ts", s.ts.is_some()),
        ("device", s.device.is_some()),
        ("metric", s.metric.is_some()),
        ("device_tag", s.device_tag.is_some()),
        ("influx_metric", s.influx_metric != super::MetricName::Auto),
        ("ts_unit", s.ts_unit != crate::decode::TsUnit::Auto),
    ] {
        if set {
            return fail(
                at(sp, &[key(f)]),
                "does not apply to format = \"sparkplug_b\" (names and millisecond timestamps come from the payload; see [source.subscribe.sparkplug])",
            );
        }
    }
    let Some(c) = &s.sparkplug else {
        return Ok(());
    };
    let sp = at(sp, &[key("sparkplug")]);
    for (f, t, allowed, needed) in [
        (
            "device",
            &c.device,
            &["{group}", "{edge_node}", "{device}"][..],
            "{device}",
        ),
        (
            "node_device",
            &c.node_device,
            &["{group}", "{edge_node}"][..],
            "{edge_node}",
        ),
    ] {
        let mut rest = t.clone();
        for a in allowed {
            rest = rest.replace(a, "");
        }
        if rest.contains(['{', '}']) {
            return fail(
                at(&sp, &[key(f)]),
                format!(
                    "unknown placeholder in {t:?}: the placeholders are {}",
                    allowed.join(" ")
                ),
            );
        }
        if !t.contains(needed) {
            return fail(
                at(&sp, &[key(f)]),
                format!("{t:?} must contain {needed}, or different ones get the same id"),
            );
        }
    }
    for (f, v) in [
        ("max_nodes", c.max_nodes),
        ("max_devices", c.max_devices),
        ("max_metrics", c.max_metrics),
    ] {
        if !(1..=1 << 24).contains(&v) {
            return fail(at(&sp, &[key(f)]), "must be between 1 and 16777216");
        }
    }
    if c.rebirth_interval.as_ms() < 100 {
        return fail(
            at(&sp, &[key("rebirth_interval")]),
            "must be at least 100ms",
        );
    }
    Ok(())
}

fn validate_http_sink(url: &str, min: super::Dur, max: super::Dur, p: &[Seg]) -> VResult<()> {
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return fail(at(p, &[key("url")]), "must start with http:// or https://");
    }
    validate_backoff(min, max, p)
}

fn validate_mqtt_sink(m: &super::MqttSink, p: &[Seg]) -> VResult<()> {
    validate_mqtt_conn(&m.conn(), p)?;
    validate_backoff(m.backoff_min, m.backoff_max, p)?;
    for (f, t) in [
        ("alert_topic", &m.alert_topic),
        ("status_topic", &m.status_topic),
        ("summary_topic", &m.summary_topic),
    ] {
        if t.is_empty() && f != "summary_topic" {
            return fail(at(p, &[key(f)]), "must not be empty");
        }
        if t.contains(['+', '#']) {
            return fail(
                at(p, &[key(f)]),
                "a topic to publish to cannot contain `+` or `#`",
            );
        }
    }
    if m.summary_qos > 1 {
        return fail(at(p, &[key("summary_qos")]), "must be 0 or 1");
    }
    if !(1..=65_000).contains(&m.window) {
        return fail(at(p, &[key("window")]), "must be between 1 and 65000");
    }
    if m.budget.max_bytes < 64 * 1024 {
        return fail(
            at(p, &[key("budget"), key("max_bytes")]),
            "must be at least 65536",
        );
    }
    Ok(())
}

/// A metric config with every template applied, fields still optional.
#[derive(Default, Clone)]
struct Layered {
    window: Option<(usize, Vec<Seg>)>,
    span: Option<(i64, Vec<Seg>)>,
    ewma_alpha: Option<f64>,
    detectors: Option<Vec<DetectorInstance>>,
}

struct Resolver<'a> {
    templates: &'a BTreeMap<String, MetricConfig>,
    done: HashMap<String, Layered>,
}

impl Resolver<'_> {
    fn template(&mut self, name: &str, p: &[Seg], stack: &mut Vec<String>) -> VResult<Layered> {
        if let Some(l) = self.done.get(name) {
            return Ok(l.clone());
        }
        if stack.iter().any(|s| s == name) {
            stack.push(name.to_string());
            return fail(
                p.to_vec(),
                format!(
                    "templates refer to each other in a cycle: {}",
                    stack.join(" -> ")
                ),
            );
        }
        let Some(cfg) = self.templates.get(name) else {
            let mut names: Vec<&str> = self.templates.keys().map(String::as_str).collect();
            names.sort_unstable();
            return fail(
                p.to_vec(),
                format!(
                    "template {name:?} does not exist (templates: {})",
                    if names.is_empty() {
                        "none".into()
                    } else {
                        names.join(", ")
                    }
                ),
            );
        };
        stack.push(name.to_string());
        let l = self.layer(cfg, &[key("template"), key(name)], stack)?;
        stack.pop();
        self.done.insert(name.to_string(), l.clone());
        Ok(l)
    }

    fn layer(
        &mut self,
        cfg: &MetricConfig,
        p: &[Seg],
        stack: &mut Vec<String>,
    ) -> VResult<Layered> {
        let mut base = match &cfg.template {
            Some(t) => self.template(t, &at(p, &[key("template")]), stack)?,
            None => Layered::default(),
        };
        if let Some(w) = cfg.window {
            if w == 0 || w > 1_000_000 {
                return fail(
                    at(p, &[key("window")]),
                    "window must be between 1 and 1000000 samples",
                );
            }
            base.window = Some((w, at(p, &[key("window")])));
        }
        if let Some(s) = cfg.span {
            if s.as_ms() == 0 {
                return fail(at(p, &[key("span")]), "span must be greater than 0");
            }
            base.span = Some((s.as_ms(), at(p, &[key("span")])));
        }
        if let Some(a) = cfg.ewma_alpha {
            if !(a > 0.0 && a <= 1.0) {
                return fail(at(p, &[key("ewma_alpha")]), "ewma_alpha must be in (0, 1]");
            }
            base.ewma_alpha = Some(a);
        }
        if let Some(ds) = &cfg.detectors {
            let mut out = Vec::with_capacity(ds.len());
            let mut names = HashSet::new();
            for (i, d) in ds.iter().enumerate() {
                let dp = at(p, &[key("detectors"), Seg::Index(i)]);
                let inst = detector(d, &dp)?;
                if !names.insert(inst.name.clone()) {
                    return fail(
                        at(&dp, &[key("name")]),
                        format!(
                            "two detectors named {:?} on one metric: give one a distinct `name`",
                            inst.name
                        ),
                    );
                }
                out.push(inst);
            }
            base.detectors = Some(out);
        }
        Ok(base)
    }

    fn metric(
        &mut self,
        cfg: &MetricConfig,
        p: &[Seg],
        stack: &mut Vec<String>,
    ) -> VResult<Arc<MetricPolicy>> {
        let l = self.layer(cfg, p, stack)?;
        let window = WindowSpec {
            count: match (&l.window, &l.span) {
                (Some(w), _) => Some(w.0),
                (None, Some(_)) => None,
                (None, None) => Some(DEFAULT_WINDOW),
            },
            span_ms: l.span.map(|s| s.0),
        };
        Ok(Arc::new(MetricPolicy {
            window,
            ewma_alpha: l.ewma_alpha.unwrap_or(DEFAULT_EWMA_ALPHA),
            detectors: l.detectors.unwrap_or_else(default_detectors),
        }))
    }
}

/// One detector: its kind's own checks and defaults (located at the field they name), then the
/// fields every kind shares.
fn detector(d: &DetectorConfig, p: &[Seg]) -> VResult<DetectorInstance> {
    let spec = d.validate().map_err(|e| {
        let path = match e.field {
            Some(f) => at(p, &[key(f)]),
            None => p.to_vec(),
        };
        (path, e.message)
    })?;
    let common = d.common();
    let name = common.name.unwrap_or(d.kind()).to_string();
    check_name(at(p, &[key("name")]), "detector name", &name)?;
    let default_hold = if matches!(spec, DetectorSpec::Ensemble(_)) {
        ENSEMBLE_HOLD_MS
    } else {
        DEFAULT_HOLD_MS
    };
    let hold_ms = common.hold.map_or(default_hold, |h| h.as_ms());
    Ok(DetectorInstance {
        name,
        spec,
        severity: common.severity.unwrap_or_default(),
        hold_ms,
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::parse_str;
    use crate::analysis::detector::ensemble;
    use crate::analysis::detector::seasonal::{self, Period};
    use crate::analysis::detector::DetectorSpec;

    fn err(text: &str) -> String {
        match parse_str(text, Path::new("c.toml")) {
            Ok(_) => panic!("expected an error for:\n{text}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn device_naming_missing_source_is_located() {
        let e = err("node_id = \"n\"\n[[device]]\nid = \"d1\"\nsource = \"nope\"\n");
        assert!(
            e.starts_with("c.toml:4:1: device \"d1\" names source \"nope\""),
            "{e}"
        );
        assert!(e.contains("(field `device[0].source`)"), "{e}");
    }

    #[test]
    fn push_sink_mistakes_are_located() {
        let e = err("node_id = \"n\"\n[[sink]]\nkind = \"webhook\"\nid = \"h\"\nurl = \"http://x/\"\ntemplate = \"{{devise}}\"\n");
        assert!(e.starts_with("c.toml:6:"), "{e}");
        assert!(e.contains("unknown placeholder {{devise}}"), "{e}");
        let e =
            err("node_id = \"n\"\n[[sink]]\nkind = \"influxdb\"\nid = \"i\"\nurl = \"http://x\"\n");
        assert!(e.contains("needs a database"), "{e}");
        let e = err(
            "node_id = \"n\"\n[[sink]]\nkind = \"alertmanager\"\nid = \"a\"\nurl = \"x:9093\"\n",
        );
        assert!(e.starts_with("c.toml:5:"), "{e}");
        assert!(e.contains("http://"), "{e}");
        let e = err("node_id = \"n\"\n[[sink]]\nkind = \"alertmanager\"\nid = \"a\"\nurl = \"http://x\"\nresend = \"1s\"\n");
        assert!(e.contains("resend"), "{e}");
    }

    #[test]
    fn sparkplug_subscription_mistakes_are_located() {
        let base = "node_id = \"n\"\n[[source]]\nid = \"m\"\nkind = \"mqtt\"\nurl = \"mqtt://127.0.0.1\"\n[[source.subscribe]]\nformat = \"sparkplug_b\"\n";
        let ok = format!("{base}topic = \"spBv1.0/#\"\n[source.subscribe.sparkplug]\ndevice = \"{{group}}.{{edge_node}}.{{device}}\"\nmax_nodes = 5\n");
        let r = parse_str(&ok, Path::new("c.toml")).expect("valid");
        let crate::config::SourceConfig::Mqtt(m) = &r.config.sources[0] else {
            panic!("not mqtt")
        };
        let c = m.subscriptions[0].sparkplug.as_ref().expect("table");
        assert_eq!((c.max_nodes, c.max_devices), (5, 10_000));
        let e = err(&format!("{base}topic = \"plant/{{device}}/{{metric}}\"\n"));
        assert!(
            e.starts_with("c.toml:8:") && e.contains("under spBv1.0/"),
            "{e}"
        );
        let e = err(&format!("{base}topic = \"spBv1.0/#\"\nvalue = \"a\"\n"));
        assert!(
            e.starts_with("c.toml:9:") && e.contains("does not apply"),
            "{e}"
        );
        let e = err(&format!("{base}topic = \"spBv1.0/#\"\n[source.subscribe.sparkplug]\nnode_device = \"{{device}}\"\n"));
        assert!(
            e.starts_with("c.toml:10:") && e.contains("unknown placeholder"),
            "{e}"
        );
        let e = err(&format!("{base}topic = \"spBv1.0/#\"\n[source.subscribe.sparkplug]\ndevice = \"{{edge_node}}\"\n"));
        assert!(e.contains("must contain {device}"), "{e}");
        let e = err(&format!(
            "{base}topic = \"spBv1.0/#\"\n[source.subscribe.sparkplug]\nmax_alias = 1\n"
        ));
        assert!(e.contains("max_alias"), "{e}");
        let e = err("node_id = \"n\"\n[[source]]\nid = \"m\"\nkind = \"mqtt\"\nurl = \"mqtt://127.0.0.1\"\n[[source.subscribe]]\ntopic = \"a/{device}/{metric}\"\n[source.subscribe.sparkplug]\nmax_nodes = 1\n");
        assert!(e.contains("sparkplug_b\" only"), "{e}");
    }

    #[test]
    fn influx_samples_and_homeassistant_mistakes_are_located() {
        let sink = "node_id = \"n\"\n[[sink]]\nkind = \"influxdb\"\nid = \"i\"\nurl = \"http://x\"\ndatabase = \"d\"\n";
        let e = err(&format!("{sink}samples = \"sometimes\"\n"));
        assert!(e.starts_with("c.toml:7:"), "{e}");
        assert!(
            e.contains("expected \"all\", \"none\" or an interval"),
            "{e}"
        );
        let e = err(&format!("{sink}samples = \"100ms\"\n"));
        assert!(
            e.starts_with("c.toml:7:") && e.contains("between 1s and 24h"),
            "{e}"
        );
        let two = format!(
            "{sink}samples = \"all\"\n{}samples = \"10s\"\n",
            &sink[13..].replace("\"i\"", "\"j\"")
        );
        assert!(err(&two).contains("must use the same setting"), "{two}");
        let mqtt = "node_id = \"n\"\n[[sink]]\nkind = \"mqtt\"\nid = \"m\"\nurl = \"mqtt://x\"\n";
        let e = err(&format!("{mqtt}[sink.homeassistant]\nprefx = \"ha\"\n"));
        assert!(e.starts_with("c.toml:7:") && e.contains("prefx"), "{e}");
        let e = err(&format!("{mqtt}homeassistant = \"yes\"\n"));
        assert!(
            e.starts_with("c.toml:6:") && e.contains("true, false or a table"),
            "{e}"
        );
        for ok in [
            "homeassistant = true\n",
            "[sink.homeassistant]\nprefix = \"ha\"\n",
        ] {
            let r = parse_str(&format!("{mqtt}{ok}"), Path::new("c.toml")).expect("valid");
            let crate::config::SinkConfig::Mqtt(m) = &r.config.sinks[0] else {
                panic!("mqtt sink");
            };
            assert!(m.homeassistant().is_some(), "{ok}");
        }
    }

    #[test]
    fn zero_window_is_located() {
        let e = err("node_id = \"n\"\n[template.t]\nwindow = 0\n");
        assert!(e.starts_with("c.toml:3:1: window must be between"), "{e}");
    }

    #[test]
    fn field_of_another_detector_kind_is_rejected() {
        let e =
            err("node_id = \"n\"\n[template.t]\ndetectors = [{ type = \"zscore\", max = 3 }]\n");
        assert!(
            e.starts_with("c.toml:3:33: `max` does not apply to a zscore detector"),
            "{e}"
        );
    }

    #[test]
    fn misplaced_detector_field_is_located_and_names_the_kind() {
        let e = err(
            "node_id = \"n\"\n[template.t]\ndetectors = [{ type = \"zscore\", max_per_sec = 3 }]\n",
        );
        assert_eq!(
            e,
            "c.toml:3:33: `max_per_sec` does not apply to a zscore detector (it takes: window, \
             threshold, warmup, min_std, name, severity, hold) (field `template.t.detectors[0].max_per_sec`)"
        );
        // The same in an array of tables, one key per line.
        let e = err("node_id = \"n\"\n[template.t]\n[[template.t.detectors]]\ntype = \"rate\"\nmax_per_sec = 1.0\nwindow = 5\n");
        assert!(
            e.starts_with("c.toml:6:1: `window` does not apply to a rate detector"),
            "{e}"
        );
        assert!(
            e.ends_with("(field `template.t.detectors[0].window`)"),
            "{e}"
        );
        // An unknown kind is located at its value.
        let e = err("node_id = \"n\"\n[template.t]\ndetectors = [{ type = \"zscroe\" }]\n");
        assert!(
            e.starts_with("c.toml:3:23: unknown variant `zscroe`"),
            "{e}"
        );
    }

    #[test]
    fn forecast_errors_are_located() {
        let e = err("node_id = \"n\"\n[template.t]\ndetectors = [{ type = \"forecast\", above = 9.0, horizon = \"0s\" }]\n");
        assert!(
            e.starts_with("c.toml:3:48: horizon must be greater than 0"),
            "{e}"
        );
        assert!(
            e.ends_with("(field `template.t.detectors[0].horizon`)"),
            "{e}"
        );
        let e = err("node_id = \"n\"\n[template.t]\n[[template.t.detectors]]\ntype = \"forecast\"\nhorizon = \"1h\"\nabove = 1.0\nbelow = 2.0\n");
        assert!(
            e.starts_with("c.toml:7:1: below must be less than above"),
            "{e}"
        );
        // Neither limit: located at the detector's table.
        let e = err("node_id = \"n\"\n[template.t]\ndetectors = [{ type = \"forecast\", horizon = \"1h\" }]\n");
        assert!(
            e.starts_with("c.toml:3:14: a forecast detector needs a limit"),
            "{e}"
        );
        // A missing horizon is serde's, located too.
        let e = err(
            "node_id = \"n\"\n[template.t]\ndetectors = [{ type = \"forecast\", above = 1.0 }]\n",
        );
        assert!(e.starts_with("c.toml:3:") && e.contains("horizon"), "{e}");
    }

    #[test]
    fn template_cycle_and_missing_template() {
        let e = err(
            "node_id = \"n\"\n[template.a]\ntemplate = \"b\"\n[template.b]\ntemplate = \"a\"\n",
        );
        assert!(e.contains("cycle"), "{e}");
        let e = err("node_id = \"n\"\n[[device]]\nid = \"d\"\ntemplate = \"zz\"\n");
        assert!(e.contains("template \"zz\" does not exist"), "{e}");
    }

    #[test]
    fn templates_resolve_with_overrides() {
        let r = parse_str(
            "node_id = \"n\"\n[template.t]\nwindow = 10\ndetectors = [{ type = \"threshold\", max = 5.0 }]\n\
             [[device]]\nid = \"d\"\ntemplate = \"t\"\n[device.metrics.temp]\nwindow = 20\n",
            Path::new("c.toml"),
        )
        .expect("valid");
        let d = &r.devices["d"];
        assert_eq!(d.default.window.count, Some(10));
        assert_eq!(d.metrics["temp"].window.count, Some(20));
        assert_eq!(d.metrics["temp"].detectors[0].name, "threshold");
    }

    #[test]
    fn token_file_is_read_at_load_and_a_missing_one_is_located() {
        let e = err("node_id = \"n\"\n[api]\ntoken_file = \"/nonexistent/ew-token\"\n");
        assert!(
            e.starts_with("c.toml:3:1: cannot read token file \"/nonexistent/ew-token\""),
            "{e}"
        );
        assert!(e.ends_with("(field `api.token_file`)"), "{e}");
        let dir = tempfile::tempdir().expect("tempdir");
        let tok = dir.path().join("token");
        std::fs::write(&tok, "  abc\n").expect("write");
        let text = format!(
            "node_id = \"n\"\n[api]\ntoken_file = {:?}\n",
            tok.display().to_string()
        );
        let r = parse_str(&text, Path::new("c.toml")).expect("valid");
        assert!(r.api_token.expect("token").verify("abc"));
        let e = err("node_id = \"n\"\n[analysis]\nhistory = 1000000\n");
        assert!(e.starts_with("c.toml:3:1: must be at most 100000"), "{e}");
    }

    #[test]
    fn store_segment_size_and_retention_interval_are_bounded_and_located() {
        let e = err("node_id = \"n\"\n[store]\nsegment_size = 100000\n");
        assert!(e.starts_with("c.toml:3:1: must be a power of two"), "{e}");
        let e = err("node_id = \"n\"\n[store]\nsegment_size = 32768\n");
        assert!(e.contains("from 65536"), "{e}");
        let e = err("node_id = \"n\"\n[store]\nretention_interval = \"10ms\"\n");
        assert!(e.starts_with("c.toml:3:1: must be at least 100ms"), "{e}");
    }

    #[test]
    fn new_detector_kinds_are_checked_and_default_to_the_ensemble() {
        let e =
            err("node_id = \"n\"\n[template.t]\ndetectors = [{ type = \"mad\", drift = 1.0 }]\n");
        assert!(
            e.contains("`drift` does not apply to a mad detector"),
            "{e}"
        );
        let e =
            err("node_id = \"n\"\n[template.t]\ndetectors = [{ type = \"ewma\", alpha = 0.0 }]\n");
        assert!(e.contains("alpha must be in (0, 1]"), "{e}");
        assert!(e.contains("template.t.detectors[0].alpha"), "{e}");
        let e = err("node_id = \"n\"\n[template.t]\ndetectors = [{ type = \"seasonal\", period = \"month\" }]\n");
        assert!(e.contains("unknown variant `month`"), "{e}");
        let e = err(
            "node_id = \"n\"\n[template.t]\ndetectors = [{ type = \"cusum\", drift = -1.0 }]\n",
        );
        assert!(e.contains("drift must be >= 0"), "{e}");
        let e = err(
            "node_id = \"n\"\n[template.t]\ndetectors = [{ type = \"ensemble\", window = 1 }]\n",
        );
        assert!(e.contains("window must be between 2"), "{e}");
        let r = parse_str(
            "node_id = \"n\"\n[template.t]\ndetectors = [{ type = \"predict\" }, { type = \"seasonal\", period = \"week\" }]\n\
             [[device]]\nid = \"d\"\n",
            Path::new("c.toml"),
        )
        .expect("valid");
        let t = &r.templates["t"].detectors;
        assert_eq!(t[0].name, "predict");
        assert_eq!(
            t[1].spec,
            DetectorSpec::Seasonal(seasonal::Spec {
                period: Period::Week,
                window: 256,
                threshold: 6.0,
                warmup: 32
            })
        );
        // A metric without detectors gets the ensemble.
        let d = &r.devices["d"].default.detectors;
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].name, "ensemble");
        assert!(matches!(
            d[0].spec,
            DetectorSpec::Ensemble(ensemble::Spec { window: 6144, .. })
        ));
        // It de-duplicates events itself: no wall-clock hold.
        assert_eq!(d[0].hold_ms, 0);
    }

    #[test]
    fn shipped_configs_are_valid() {
        for f in [
            "config/demo.toml",
            "config/bench-tcp.toml",
            "config/bench-mqtt.toml",
            "config/nab.toml",
        ] {
            let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(f);
            if let Err(e) = super::super::load_file(&p) {
                panic!("{e}");
            }
        }
    }
}
