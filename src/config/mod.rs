//! The one TOML file that configures an appliance: its serde schema, defaults and duration type.
//! `load` parses and locates errors (file:line:column, field); `validate` checks cross-references.
//! Over 600 lines because it is the whole schema in one place (each struct is a table of the file).

pub mod device;
mod interpolate;
mod load;
mod serial;
mod validate;

pub use load::{load_file, parse_str, ConfigError};
pub use serial::{
    DataType, FlowControl, ModbusDevice, ModbusPoint, ModbusSource, Parity, PortSettings,
    RegisterKind, SerialFormat, SerialSource, UsbId, WordOrder,
};
pub(crate) mod mqtt;

/// One detector as written in the file (`type`-tagged; each kind's fields in its own file).
pub use crate::analysis::detector::DetectorConfig;
pub use mqtt::{MqttPayload, MqttSink, MqttSource, MqttSubscription, SinkConfig};
pub use validate::{default_detectors, DEFAULT_EWMA_ALPHA, DEFAULT_WINDOW};
pub use validate::{MetricPolicy, Resolved};

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::decode::Format;

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
    /// Further places alerts and summaries go (`kind = "mqtt"`).
    #[serde(default, rename = "sink")]
    pub sinks: Vec<SinkConfig>,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
fn default_ws_buffer() -> usize {
    1024
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
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: default_listen(),
            ws_buffer: default_ws_buffer(),
            token_file: None,
        }
    }
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
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            cache_bytes: default_cache(),
            alert_log_max: default_alert_keep(),
            alert_log_max_age: default_alert_age(),
        }
    }
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
}

impl Default for AnalysisConfig {
    fn default() -> Self {
        AnalysisConfig {
            shards: 0,
            queue: default_queue(),
            max_devices: default_max_devices(),
            history: default_history(),
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
}

impl SourceConfig {
    pub fn id(&self) -> &str {
        match self {
            SourceConfig::Sim(s) => &s.id,
            SourceConfig::Tcp(s) => &s.id,
            SourceConfig::Serial(s) => &s.id,
            SourceConfig::Modbus(s) => &s.id,
            SourceConfig::Mqtt(s) => &s.id,
        }
    }
    pub fn kind(&self) -> &'static str {
        match self {
            SourceConfig::Sim(_) => "sim",
            SourceConfig::Tcp(_) => "tcp",
            SourceConfig::Serial(_) => "serial",
            SourceConfig::Modbus(_) => "modbus",
            SourceConfig::Mqtt(_) => "mqtt",
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

fn default_max_frame() -> usize {
    4096
}
fn default_max_clients() -> usize {
    256
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
    /// Longest accepted frame in bytes; longer ones are counted and skipped.
    pub max_frame: usize,
    /// Reconnect (client) and restart backoff.
    pub backoff_min: Dur,
    pub backoff_max: Dur,
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
        default_backoff_max, default_backoff_min, default_format, default_max_clients,
        default_max_frame, Dur, Format, TcpMode, TcpSource,
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
        #[serde(default = "default_format")]
        format: Format,
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
                    && (r.starts_with("listen`") || r.starts_with("max_clients`")) =>
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
                },
                format: s.format,
                max_frame: s.max_frame,
                backoff_min: s.backoff_min,
                backoff_max: s.backoff_max,
            },
            Wire::Client(c) => TcpSource {
                id: c.id,
                mode: TcpMode::Client { connect: c.connect },
                format: c.format,
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
    /// `ws://` or `wss://` URL of the receiver.
    pub url: String,
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
