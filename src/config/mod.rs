//! The one TOML file that configures an appliance: its serde schema, defaults and duration type.
//! `load` parses and locates errors (file:line:column, field); `validate` checks cross-references.
//! Over 600 lines because it is the whole schema in one place (each struct is a table of the file).

pub mod device;
mod ingest;
mod interpolate;
mod load;
mod local;
mod net;
pub(crate) use load::default_node_id as host_name;
mod serial;
mod validate;

pub use ingest::{HttpSource, UdpSource};
pub use load::{load_file, load_file_all, parse_str, ConfigError};
pub use local::{ExecSource, FilePreset, FileSource, HostSource};
pub use net::Cidr;
pub use serial::{
    DataType, FlowControl, ModbusDevice, ModbusPoint, ModbusSource, Parity, PortSettings,
    RegisterKind, SerialFormat, SerialSource, UsbId, WordOrder,
};
pub(crate) mod mqtt;
pub(crate) mod push;

/// One detector as written in the file (`type`-tagged; each kind's fields in its own file).
pub use crate::analysis::detector::DetectorConfig;
pub use mqtt::{
    HomeAssistant, MqttPayload, MqttSink, MqttSource, MqttSubscription, SinkConfig, SparkplugConfig,
};
pub use push::{AlertmanagerSink, InfluxApi, InfluxSink, SampleMode, WebhookSink};
pub use validate::{default_detectors, DEFAULT_EWMA_ALPHA, DEFAULT_WINDOW};
pub use validate::{MetricPolicy, Resolved};

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

pub use crate::decode::influx::MetricName;
pub use crate::decode::{Format, TsUnit};

/// A duration written as a human string: "500ms", "30s", "5m", "1h 30m".
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dur(pub Duration);

impl Dur {
    pub const fn secs(s: u64) -> Self {
        Dur(Duration::from_secs(s))
    }
    pub const fn millis(ms: u64) -> Self {
        Dur(Duration::from_millis(ms))
    }
    pub fn as_ms(self) -> i64 {
        self.0.as_millis().min(i64::MAX as u128) as i64
    }
}

impl fmt::Debug for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map(Dur).map_err(|e| {
            serde::de::Error::custom(format!(
                "invalid duration {s:?}: {e} (write e.g. \"500ms\", \"30s\", \"5m\")"
            ))
        })
    }
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("./data")
}
fn default_summary_interval() -> Dur {
    Dur::secs(5)
}
fn default_persist_interval() -> Dur {
    Dur::secs(600)
}

/// The whole file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Identifies this appliance in every message it sends (default: the host name).
    #[serde(default = "load::default_node_id")]
    pub node_id: String,
    /// Where sled keeps state, alert log and outbox.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// How often summaries are emitted.
    #[serde(default = "default_summary_interval")]
    pub summary_interval: Dur,
    /// How often detector state is snapshotted to disk (also at shutdown).
    #[serde(default = "default_persist_interval")]
    pub persist_interval: Dur,
    #[serde(default)]
    pub api: ApiConfig,
    #[serde(default)]
    pub store: StoreConfig,
    #[serde(default)]
    pub analysis: AnalysisConfig,
    /// Sanity checks on every source's samples (timestamps).
    #[serde(default)]
    pub input: InputConfig,
    #[serde(default)]
    pub unknown_devices: UnknownDevices,
    /// Named metric policies (window and detectors) shared by many devices.
    #[serde(default, rename = "template")]
    pub templates: BTreeMap<String, MetricConfig>,
    #[serde(default, rename = "source")]
    pub sources: Vec<SourceConfig>,
    #[serde(default, rename = "device")]
    pub devices: Vec<DeviceConfig>,
    /// Where alerts and summaries are forwarded (durable outbox, acknowledgements).
    #[serde(default)]
    pub upstream: Option<UpstreamConfig>,
    /// Further places alerts and summaries go (`kind = "mqtt"`, `"alertmanager"`, `"webhook"`,
    /// `"influxdb"`).
    #[serde(default, rename = "sink")]
    pub sinks: Vec<SinkConfig>,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
fn default_ws_buffer() -> usize {
    1024
}
fn default_api_max_connections() -> usize {
    128
}
fn default_api_max_connections_per_ip() -> usize {
    32
}
fn default_api_timeout() -> Dur {
    Dur::secs(5)
}
fn default_ws_max_frame() -> usize {
    4096
}
fn default_ws_ping() -> Dur {
    Dur::secs(20)
}
fn default_fd_reserve() -> usize {
    64
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Address of the local API, dashboard and `/ws` stream.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Messages a WebSocket client may fall behind before it is dropped.
    #[serde(default = "default_ws_buffer")]
    pub ws_buffer: usize,
    /// File holding the bearer token that `/api/*` and `/ws` require (content trimmed);
    /// none: the API is open. Read at start-up (see `Resolved::api_token`).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// `GET /metrics` (Prometheus exposition).
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// Open HTTP/WebSocket connections served at once; more wait in the kernel's backlog.
    /// Lowered at start so the API never takes the descriptors kept for sources and the store.
    #[serde(default = "default_api_max_connections")]
    pub max_connections: usize,
    /// Connections one peer address may hold (0: no cap); more are shut at once.
    #[serde(default = "default_api_max_connections_per_ip")]
    pub max_connections_per_ip: usize,
    /// Time a client has to send its request head; and how long an idle keep-alive
    /// connection is kept.
    #[serde(default = "default_api_timeout")]
    pub request_timeout: Dur,
    #[serde(default = "default_api_timeout")]
    pub keep_alive: Dur,
    /// Largest frame a `/ws` client may declare (clients send only control frames); a larger
    /// declared length closes the connection before any of it is buffered.
    #[serde(default = "default_ws_max_frame")]
    pub ws_max_frame: usize,
    /// `/ws` clients are pinged this often and dropped after three intervals without a frame.
    #[serde(default = "default_ws_ping")]
    pub ws_ping_interval: Dur,
    /// File descriptors kept free for sources, sinks and the store: with fewer free the API
    /// answers 503 and closes the connection.
    #[serde(default = "default_fd_reserve")]
    pub fd_reserve: usize,
    /// Origins (`scheme://host[:port]`, or `*`) besides this appliance's own that may use
    /// `/api/*` and `/ws` from a browser; their hosts are also accepted in `Host`.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: default_listen(),
            ws_buffer: default_ws_buffer(),
            token_file: None,
            metrics: MetricsConfig::default(),
            max_connections: default_api_max_connections(),
            max_connections_per_ip: default_api_max_connections_per_ip(),
            request_timeout: default_api_timeout(),
            keep_alive: default_api_timeout(),
            ws_max_frame: default_ws_max_frame(),
            ws_ping_interval: default_ws_ping(),
            fd_reserve: default_fd_reserve(),
            allowed_origins: Vec::new(),
        }
    }
}

/// `[api.metrics]`: what `GET /metrics` exposes besides the appliance's own health.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Per-series metrics (labels node/device/metric): last value, window mean/std, anomaly
    /// score, samples total, firing alerts. Off: only the appliance's health.
    #[serde(default = "default_true")]
    pub per_series: bool,
    /// At most this many device/metric series are exposed; the rest are left out and counted
    /// (`edgewatch_metrics_series_omitted`).
    #[serde(default = "default_metrics_max_series")]
    pub max_series: usize,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            per_series: true,
            max_series: default_metrics_max_series(),
        }
    }
}

fn default_true() -> bool {
    true
}
fn default_metrics_max_series() -> usize {
    2_000
}

fn default_cache() -> u64 {
    8 * 1024 * 1024
}
fn default_alert_keep() -> usize {
    10_000
}
fn default_alert_age() -> Dur {
    Dur::secs(30 * 24 * 3600)
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// sled page cache in bytes (sled's own default is 1 GiB, too much for a Pi).
    #[serde(default = "default_cache")]
    pub cache_bytes: u64,
    /// Alert log retention: at most this many alerts...
    #[serde(default = "default_alert_keep")]
    pub alert_log_max: usize,
    /// ...and none older than this.
    #[serde(default = "default_alert_age")]
    pub alert_log_max_age: Dur,
    /// sled log segment size for a new store (an existing one keeps its own).
    #[serde(default = "default_segment_size")]
    pub segment_size: usize,
    /// How often retention runs (alert log limits, history compaction check).
    #[serde(default = "default_retention_interval")]
    pub retention_interval: Dur,
    /// Downsampled history of every series in sled (charts over hours to weeks).
    #[serde(default = "default_true")]
    pub history: bool,
    /// 1-minute buckets are kept this long (then compacted into 15-minute buckets, once a day).
    #[serde(default = "default_history_1m")]
    pub history_1m_max_age: Dur,
    /// 15-minute buckets are kept this long.
    #[serde(default = "default_history_15m")]
    pub history_15m_max_age: Dur,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            cache_bytes: default_cache(),
            alert_log_max: default_alert_keep(),
            alert_log_max_age: default_alert_age(),
            retention_interval: default_retention_interval(),
            segment_size: default_segment_size(),
            history: true,
            history_1m_max_age: default_history_1m(),
            history_15m_max_age: default_history_15m(),
        }
    }
}

fn default_segment_size() -> usize {
    crate::store::SEGMENT_SIZE
}
fn default_retention_interval() -> Dur {
    Dur(std::time::Duration::from_secs(60))
}
fn default_history_1m() -> Dur {
    Dur(std::time::Duration::from_secs(48 * 3600))
}
fn default_history_15m() -> Dur {
    Dur(std::time::Duration::from_secs(30 * 24 * 3600))
}
fn default_queue() -> usize {
    64
}
fn default_max_devices() -> usize {
    10_000
}
fn default_history() -> usize {
    300
}
fn default_max_series() -> usize {
    20_000
}
fn default_max_state_bytes() -> u64 {
    48 << 20
}
pub(crate) fn default_max_metrics_per_device() -> usize {
    256
}
fn default_expire_after() -> Dur {
    Dur(std::time::Duration::from_secs(7 * 86_400))
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnalysisConfig {
    /// Analyzer shards; 0 means one per CPU core.
    #[serde(default)]
    pub shards: usize,
    /// Batches that may wait for a shard before sources are slowed down.
    #[serde(default = "default_queue")]
    pub queue: usize,
    /// Upper bound on devices tracked (configured plus auto-registered).
    #[serde(default = "default_max_devices")]
    pub max_devices: usize,
    /// Recent points kept in memory per metric for the dashboard's charts (0: none).
    #[serde(default = "default_history")]
    pub history: usize,
    /// Upper bound on series (device × metric) over all devices.
    #[serde(default = "default_max_series")]
    pub max_series: usize,
    /// Upper bound on the estimated bytes of analysis state (windows, detectors, chart rings).
    #[serde(default = "default_max_state_bytes")]
    pub max_state_bytes: u64,
    /// Metrics one device may have at most.
    #[serde(default = "default_max_metrics_per_device")]
    pub max_metrics_per_device: usize,
    /// Auto-registered devices, and metrics not named in the config, not seen for this long are
    /// evicted (with their saved state). Configured devices never expire.
    #[serde(default = "default_expire_after")]
    pub expire_after: Dur,
}

impl Default for AnalysisConfig {
    fn default() -> Self {
        AnalysisConfig {
            shards: 0,
            queue: default_queue(),
            max_devices: default_max_devices(),
            history: default_history(),
            max_series: default_max_series(),
            max_state_bytes: default_max_state_bytes(),
            max_metrics_per_device: default_max_metrics_per_device(),
            expire_after: default_expire_after(),
        }
    }
}

fn default_max_future() -> Dur {
    Dur::secs(86_400)
}
fn default_max_past() -> Dur {
    Dur::secs(730 * 86_400)
}

/// What to do with a sample whose own timestamp is out of bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum TsPolicy {
    /// Rejected and counted (`/api/status` → source `rejected_ts`).
    #[default]
    Reject,
    /// Re-stamped with the receive time and counted (`restamped_ts`).
    Receive,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputConfig {
    #[serde(default)]
    pub ts_policy: TsPolicy,
    /// A device timestamp later than the appliance clock plus this is out of bounds (checked only
    /// while the appliance clock is plausible, see docs/CLOCK.md).
    #[serde(default = "default_max_future")]
    pub max_future: Dur,
    /// A device timestamp earlier than this before the build time is out of bounds.
    #[serde(default = "default_max_past")]
    pub max_past: Dur,
}

impl Default for InputConfig {
    fn default() -> Self {
        InputConfig {
            ts_policy: TsPolicy::default(),
            max_future: default_max_future(),
            max_past: default_max_past(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum UnknownPolicy {
    /// Samples from devices not in the config are rejected and counted.
    #[default]
    Reject,
    /// Unknown devices are registered on first sight, using `template`.
    Register,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnknownDevices {
    #[serde(default)]
    pub policy: UnknownPolicy,
    /// Template for auto-registered devices (their metrics); none means the default policy.
    #[serde(default)]
    pub template: Option<String>,
    /// Device-level analysis of auto-registered devices (as on `[[device]]`).
    #[serde(default)]
    pub vector: Option<device::VectorConfig>,
    #[serde(default)]
    pub device_detectors: Option<Vec<device::DeviceDetectorConfig>>,
}

/// How one metric is analysed. Every field is optional; unset fields come from the template.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricConfig {
    /// Another template to start from.
    #[serde(default)]
    pub template: Option<String>,
    /// Rolling statistics window in samples.
    #[serde(default)]
    pub window: Option<usize>,
    /// Rolling statistics window in time.
    #[serde(default)]
    pub span: Option<Dur>,
    /// Smoothing factor of the EWMA (0 < alpha <= 1).
    #[serde(default)]
    pub ewma_alpha: Option<f64>,
    #[serde(default)]
    pub detectors: Option<Vec<DetectorConfig>>,
}

/// A device the appliance knows about.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceConfig {
    pub id: String,
    /// When set, samples for this device are accepted only from this source.
    #[serde(default)]
    pub source: Option<String>,
    /// Template for metrics not listed under `metrics`, and the base of those listed.
    #[serde(default)]
    pub template: Option<String>,
    #[serde(default)]
    pub metrics: BTreeMap<String, MetricConfig>,
    /// The device's vector for device-level analysis (`[device.vector]`).
    #[serde(default)]
    pub vector: Option<device::VectorConfig>,
    /// Detectors over the device's vector; with `vector` set and this unset: the default set.
    #[serde(default)]
    pub device_detectors: Option<Vec<device::DeviceDetectorConfig>>,
}

/// A source of samples. `kind` selects the transport.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum SourceConfig {
    Sim(SimSource),
    Tcp(TcpSource),
    Serial(SerialSource),
    Modbus(ModbusSource),
    Mqtt(mqtt::MqttSource),
    Udp(UdpSource),
    Http(HttpSource),
    Host(HostSource),
    File(FileSource),
    Exec(ExecSource),
}

/// Credentials that would cross the network in clear text: one warning per URL, for `check` and
/// start-up (`ws://` upstream with a token, `mqtt://` with a user name or password, `user:pass@`).
pub fn plaintext_credentials(c: &Config) -> Vec<String> {
    let userinfo = |url: &str| {
        url.split_once("://")
            .is_some_and(|(_, rest)| rest.split('/').next().is_some_and(|a| a.contains('@')))
    };
    let mut out = Vec::new();
    if let Some(u) = &c.upstream {
        let plain = u.url.starts_with("ws://");
        if plain && (u.token_file.is_some() || u.token_env.is_some() || userinfo(&u.url)) {
            out.push(format!(
                "upstream.url {:?} is plaintext ws:// but sends a token: anyone on the path can read it; use wss://",
                u.url
            ));
        }
    }
    let mut mqtt = |what: String, url: &str, user: bool| {
        if url.starts_with("mqtt://") && (user || userinfo(url)) {
            out.push(format!(
                "{what} url {url:?} is plaintext mqtt:// but sends a user name/password: anyone on the path can read them; use mqtts://"
            ));
        }
    };
    for src in &c.sources {
        if let SourceConfig::Mqtt(m) = src {
            let user =
                m.username.is_some() || m.password_file.is_some() || m.password_env.is_some();
            mqtt(format!("source {:?}", m.id), &m.url, user);
        }
    }
    for k in &c.sinks {
        if let SinkConfig::Mqtt(m) = k {
            let user =
                m.username.is_some() || m.password_file.is_some() || m.password_env.is_some();
            mqtt(format!("sink {:?}", m.id), &m.url, user);
        }
    }
    out
}

impl SourceConfig {
    pub fn id(&self) -> &str {
        match self {
            SourceConfig::Sim(s) => &s.id,
            SourceConfig::Tcp(s) => &s.id,
            SourceConfig::Serial(s) => &s.id,
            SourceConfig::Modbus(s) => &s.id,
            SourceConfig::Mqtt(s) => &s.id,
            SourceConfig::Udp(s) => &s.id,
            SourceConfig::Http(s) => &s.id,
            SourceConfig::Host(s) => &s.id,
            SourceConfig::File(s) => &s.id,
            SourceConfig::Exec(s) => &s.id,
        }
    }
    pub fn kind(&self) -> &'static str {
        match self {
            SourceConfig::Sim(_) => "sim",
            SourceConfig::Tcp(_) => "tcp",
            SourceConfig::Serial(_) => "serial",
            SourceConfig::Modbus(_) => "modbus",
            SourceConfig::Mqtt(_) => "mqtt",
            SourceConfig::Udp(_) => "udp",
            SourceConfig::Http(_) => "http",
            SourceConfig::Host(_) => "host",
            SourceConfig::File(_) => "file",
            SourceConfig::Exec(_) => "exec",
        }
    }
}

fn default_sim_interval() -> Dur {
    Dur::millis(200)
}
fn default_seed() -> u64 {
    1
}

/// Simulated devices: no hardware needed.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimSource {
    pub id: String,
    /// Time between two samples of each simulated metric.
    #[serde(default = "default_sim_interval")]
    pub interval: Dur,
    /// Random seed: the same seed gives the same stream.
    #[serde(default = "default_seed")]
    pub seed: u64,
    #[serde(default, rename = "device")]
    pub devices: Vec<SimDevice>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimDevice {
    pub id: String,
    pub metrics: BTreeMap<String, SimMetric>,
}

fn default_anomalies() -> Vec<AnomalyKind> {
    vec![
        AnomalyKind::Spike,
        AnomalyKind::Shift,
        AnomalyKind::Stuck,
        AnomalyKind::Dropout,
    ]
}

/// One simulated signal: mean + drift·t + amplitude·sin(2πt/period) + noise, with anomalies.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimMetric {
    pub mean: f64,
    /// Standard deviation of the Gaussian noise.
    #[serde(default)]
    pub noise: f64,
    /// Linear drift per hour.
    #[serde(default)]
    pub drift: f64,
    /// Seasonal amplitude.
    #[serde(default)]
    pub amplitude: f64,
    #[serde(default)]
    pub period: Option<Dur>,
    /// Probability that a sample starts an anomaly.
    #[serde(default)]
    pub anomaly_rate: f64,
    #[serde(default = "default_anomalies")]
    pub anomalies: Vec<AnomalyKind>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AnomalyKind {
    /// One sample far off (8 to 15 noise deviations).
    Spike,
    /// The level jumps and stays for a while.
    Shift,
    /// The same value repeats for a while.
    Stuck,
    /// No samples for a while.
    Dropout,
}

/// Whether a TCP source listens or connects out; each mode has only its own fields, so a
/// server-only key on a client (or the reverse) is a located config error from serde.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TcpMode {
    /// Listen and accept many clients (the default when `mode` is absent).
    Server {
        /// Address to listen on.
        listen: SocketAddr,
        /// Connections beyond this are refused.
        max_clients: usize,
        /// Per-peer cap, idle timeout and allowed networks.
        guard: TcpGuard,
    },
    /// Connect out to `host:port` and reconnect when the peer goes away.
    Client { connect: String },
}

impl TcpMode {
    /// `server` or `client`, as written in the config.
    pub fn name(&self) -> &'static str {
        match self {
            TcpMode::Server { .. } => "server",
            TcpMode::Client { .. } => "client",
        }
    }

    /// The address listened on or connected to.
    pub fn address(&self) -> String {
        match self {
            TcpMode::Server { listen, .. } => listen.to_string(),
            TcpMode::Client { connect } => connect.clone(),
        }
    }
}

/// What a TCP server lets one peer hold, and who may connect at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpGuard {
    /// Connections one peer address may hold at once.
    pub max_clients_per_ip: usize,
    /// A connection that sends nothing for this long is closed, freeing its slot.
    pub read_timeout: Dur,
    /// Peers allowed to connect (empty: any); others are closed at once and counted.
    pub allow_from: Vec<Cidr>,
    /// When every slot is taken, a connection that has delivered no accepted sample for this
    /// long is closed to let a newcomer in (the longest-silent first).
    pub evict_after: Dur,
    /// TLS on the listener (rustls), optionally requiring client certificates.
    pub tls: Option<TcpTls>,
}

/// `[source.tls]` of a TCP server: PEM files read at start.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpTls {
    /// The server's certificate chain (PEM, leaf first).
    pub cert: PathBuf,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// CA certificates (PEM) that client certificates must chain to; set: a client without a
    /// valid certificate is refused during the handshake.
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
    /// Time a client has to finish the handshake.
    #[serde(default = "default_tls_handshake")]
    pub handshake_timeout: Dur,
}

fn default_tls_handshake() -> Dur {
    Dur::secs(10)
}

impl Default for TcpGuard {
    fn default() -> Self {
        TcpGuard {
            max_clients_per_ip: default_max_clients_per_ip(),
            read_timeout: default_read_timeout(),
            allow_from: Vec::new(),
            evict_after: default_evict_after(),
            tls: None,
        }
    }
}

fn default_max_frame() -> usize {
    4096
}
fn default_max_clients() -> usize {
    256
}
fn default_evict_after() -> Dur {
    Dur::secs(30)
}
fn default_max_clients_per_ip() -> usize {
    32
}
fn default_read_timeout() -> Dur {
    Dur::secs(600)
}
fn default_backoff_min() -> Dur {
    Dur::millis(200)
}
fn default_backoff_max() -> Dur {
    Dur::secs(30)
}
fn default_format() -> Format {
    Format::Json
}

/// Raw TCP, one frame per line. Read from the config through `tcp_wire` (the mode's fields).
#[derive(Debug, Clone, PartialEq)]
pub struct TcpSource {
    pub id: String,
    pub mode: TcpMode,
    pub format: Format,
    /// Unit of numeric timestamps (`auto` by magnitude).
    pub ts_unit: TsUnit,
    /// `format = "influx"`: the tag naming the device.
    pub device_tag: Option<String>,
    /// `format = "influx"`: how metric names are formed.
    pub influx_metric: MetricName,
    /// Longest accepted frame in bytes; longer ones are counted and skipped.
    pub max_frame: usize,
    /// Reconnect (client) and restart backoff.
    pub backoff_min: Dur,
    pub backoff_max: Dur,
}

impl TcpSource {
    /// The decoder settings of this source's frames.
    pub fn settings(&self) -> crate::decode::Settings {
        crate::decode::Settings {
            device: None,
            ts_unit: self.ts_unit,
            device_tag: self.device_tag.clone(),
            influx_metric: self.influx_metric,
        }
    }
}

impl<'de> Deserialize<'de> for TcpSource {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        tcp_wire::deserialize(d)
    }
}

/// The config's shape of a TCP source: `mode` (default `server`) picks the fields allowed.
mod tcp_wire {
    use std::net::SocketAddr;

    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer};

    use super::{
        default_backoff_max, default_backoff_min, default_evict_after, default_format,
        default_max_clients, default_max_clients_per_ip, default_max_frame, default_read_timeout,
        Cidr, Dur, Format, MetricName, TcpGuard, TcpMode, TcpSource, TcpTls, TsUnit,
    };

    #[derive(Deserialize)]
    #[serde(tag = "mode", rename_all = "lowercase")]
    enum Wire {
        Server(Server),
        Client(Client),
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Server {
        id: String,
        listen: SocketAddr,
        #[serde(default = "default_max_clients")]
        max_clients: usize,
        #[serde(default = "default_max_clients_per_ip")]
        max_clients_per_ip: usize,
        #[serde(default = "default_read_timeout")]
        read_timeout: Dur,
        #[serde(default)]
        allow_from: Vec<Cidr>,
        #[serde(default = "default_evict_after")]
        evict_after: Dur,
        #[serde(default)]
        tls: Option<TcpTls>,
        #[serde(default = "default_format")]
        format: Format,
        #[serde(default)]
        ts_unit: TsUnit,
        #[serde(default)]
        device_tag: Option<String>,
        #[serde(default)]
        influx_metric: MetricName,
        #[serde(default = "default_max_frame")]
        max_frame: usize,
        #[serde(default = "default_backoff_min")]
        backoff_min: Dur,
        #[serde(default = "default_backoff_max")]
        backoff_max: Dur,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Client {
        id: String,
        connect: String,
        #[serde(default = "default_format")]
        format: Format,
        #[serde(default)]
        ts_unit: TsUnit,
        #[serde(default)]
        device_tag: Option<String>,
        #[serde(default)]
        influx_metric: MetricName,
        #[serde(default = "default_max_frame")]
        max_frame: usize,
        #[serde(default = "default_backoff_min")]
        backoff_min: Dur,
        #[serde(default = "default_backoff_max")]
        backoff_max: Dur,
    }

    /// Keys that belong to the other mode, for a clearer message than serde's list.
    fn hint(message: &str, mode: &str) -> String {
        match message {
            "missing field `listen`" => {
                return format!("server mode needs `listen` (e.g. \"0.0.0.0:9000\"), or set `mode = \"client\"` and `connect`: {message}")
            }
            "missing field `connect`" => {
                return format!("client mode needs `connect` (e.g. \"sensor-hub:9000\"): {message}")
            }
            _ => {}
        }
        let other = match message.strip_prefix("unknown field `") {
            Some(r) if mode == "server" && r.starts_with("connect`") => "client",
            Some(r)
                if mode == "client"
                    && [
                        "listen`",
                        "max_clients`",
                        "max_clients_per_ip`",
                        "read_timeout`",
                        "allow_from`",
                        "evict_after`",
                        "tls`",
                    ]
                    .iter()
                    .any(|k| r.starts_with(k)) =>
            {
                "server"
            }
            _ => return message.to_string(),
        };
        format!(
            "{message}; it applies to `mode = \"{other}\"` only (this source is in {mode} mode)"
        )
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<TcpSource, D::Error> {
        let mut table = toml::Table::deserialize(d)?;
        let mode = match table.get("mode") {
            None => {
                table.insert("mode".into(), "server".into());
                "server".to_string()
            }
            Some(m) => m.as_str().unwrap_or_default().to_string(),
        };
        let wire = Wire::deserialize(toml::Value::Table(table))
            .map_err(|e| D::Error::custom(hint(e.message(), &mode)))?;
        Ok(match wire {
            Wire::Server(s) => TcpSource {
                id: s.id,
                mode: TcpMode::Server {
                    listen: s.listen,
                    max_clients: s.max_clients,
                    guard: TcpGuard {
                        max_clients_per_ip: s.max_clients_per_ip,
                        read_timeout: s.read_timeout,
                        allow_from: s.allow_from,
                        evict_after: s.evict_after,
                        tls: s.tls,
                    },
                },
                format: s.format,
                ts_unit: s.ts_unit,
                device_tag: s.device_tag,
                influx_metric: s.influx_metric,
                max_frame: s.max_frame,
                backoff_min: s.backoff_min,
                backoff_max: s.backoff_max,
            },
            Wire::Client(c) => TcpSource {
                id: c.id,
                mode: TcpMode::Client { connect: c.connect },
                format: c.format,
                ts_unit: c.ts_unit,
                device_tag: c.device_tag,
                influx_metric: c.influx_metric,
                max_frame: c.max_frame,
                backoff_min: c.backoff_min,
                backoff_max: c.backoff_max,
            },
        })
    }
}

fn default_up_summary() -> Dur {
    Dur::secs(10)
}
fn default_ping() -> Dur {
    Dur::secs(20)
}
fn default_up_connect_timeout() -> Dur {
    Dur::secs(10)
}
fn default_failback_interval() -> Dur {
    Dur::secs(30)
}
fn default_pong_timeout() -> Dur {
    Dur::secs(10)
}
fn default_up_backoff_min() -> Dur {
    Dur::secs(1)
}
fn default_up_backoff_max() -> Dur {
    Dur::secs(60)
}
fn default_jitter() -> f64 {
    0.5
}
fn default_window() -> usize {
    256
}

/// How the receiver confirms delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AckMode {
    /// The receiver acknowledges each message by `seq`; only acknowledged messages leave the outbox.
    #[default]
    Seq,
    /// A message written to the socket counts as delivered.
    None,
}

/// `[upstream]`: forward alerts and summaries over WebSocket with store-and-forward.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// `ws://` or `wss://` URL of the receiver (or give `urls`).
    #[serde(default)]
    pub url: String,
    /// Several receivers, in order of preference: the first that answers is used, the first is
    /// probed every `failback_interval` while another is in use (see docs/PROTOCOL.md).
    #[serde(default)]
    pub urls: Vec<String>,
    /// A receiver that does not complete the WebSocket handshake within this is skipped for the
    /// next one.
    #[serde(default = "default_up_connect_timeout")]
    pub connect_timeout: Dur,
    /// While a later receiver is in use, the first is tried this often; when it answers, the
    /// appliance returns to it.
    #[serde(default = "default_failback_interval")]
    pub failback_interval: Dur,
    /// File holding the bearer token (trimmed).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Environment variable holding the bearer token.
    #[serde(default)]
    pub token_env: Option<String>,
    /// PEM file with the CA certificate(s) to trust for `wss://` instead of the system roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Summaries go upstream at most this often (local summaries are merged in between).
    #[serde(default = "default_up_summary")]
    pub summary_interval: Dur,
    #[serde(default = "default_ping")]
    pub ping_interval: Dur,
    /// The connection is dropped when no pong arrives this long after a ping.
    #[serde(default = "default_pong_timeout")]
    pub pong_timeout: Dur,
    #[serde(default = "default_up_backoff_min")]
    pub backoff_min: Dur,
    #[serde(default = "default_up_backoff_max")]
    pub backoff_max: Dur,
    /// Fraction of each backoff delay that is random (0 to 1).
    #[serde(default = "default_jitter")]
    pub backoff_jitter: f64,
    #[serde(default)]
    pub ack: AckMode,
    /// Messages sent and not yet acknowledged, at most.
    #[serde(default = "default_window")]
    pub window: usize,
    #[serde(default)]
    pub budget: OutboxBudget,
}

impl UpstreamConfig {
    /// The receivers in order of preference: `urls`, or the single `url`.
    pub fn receivers(&self) -> Vec<&str> {
        if self.urls.is_empty() {
            vec![self.url.as_str()]
        } else {
            self.urls.iter().map(String::as_str).collect()
        }
    }
}

fn default_budget_bytes() -> u64 {
    64 * 1024 * 1024
}
fn default_budget_age() -> Dur {
    Dur::secs(7 * 24 * 3600)
}

/// Disk budget of the outbox.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboxBudget {
    /// Above this many bytes, the oldest summaries are dropped.
    #[serde(default = "default_budget_bytes")]
    pub max_bytes: u64,
    /// Summaries older than this are dropped.
    #[serde(default = "default_budget_age")]
    pub max_age: Dur,
    /// Hard cap for alerts: above it, the oldest alerts are dropped (the receiver gets a `gap`).
    /// Defaults to `max_bytes`.
    #[serde(default)]
    pub alert_max_bytes: Option<u64>,
}

impl Default for OutboxBudget {
    fn default() -> Self {
        OutboxBudget {
            max_bytes: default_budget_bytes(),
            max_age: default_budget_age(),
            alert_max_bytes: None,
        }
    }
}
