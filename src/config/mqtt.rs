//! Config schema of the MQTT source (`[[source]] kind = "mqtt"`) and sink (`[[sink]] kind = "mqtt"`):
//! broker connection, subscriptions with topic patterns and payload formats, publish topics.

use std::path::PathBuf;

use serde::Deserialize;

use super::{default_backoff_max, default_backoff_min, Dur, OutboxBudget};

fn default_keep_alive() -> Dur {
    Dur::secs(30)
}
fn default_true() -> bool {
    true
}
fn default_max_packet() -> usize {
    1024 * 1024
}
fn default_mqtt_queue() -> usize {
    16_384
}
fn default_mqtt_queue_bytes() -> usize {
    8 * 1024 * 1024
}

/// How a subscription's payloads are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum MqttPayload {
    /// A bare number; device and metric from the topic.
    Number,
    /// A JSON object: `{"ts":..,"value":..}` (metric from the topic), several metrics in one
    /// object, or the value and timestamp at the field paths `value` / `ts`.
    #[default]
    Json,
    /// CSV lines as on TCP (device from the topic when the line has none).
    Csv,
    /// key=value lines as on TCP (device from the topic when the line has none).
    Kv,
    /// Influx line protocol, one point per line (device: `device_tag`, the topic, or the measurement).
    Influx,
    /// Sparkplug B protobuf payloads on the `spBv1.0/...` namespace (births, data, deaths);
    /// device and metric names come from the topic and the births (`[source.subscribe.sparkplug]`).
    #[serde(rename = "sparkplug_b")]
    SparkplugB,
}

fn default_sp_device() -> String {
    "{edge_node}/{device}".into()
}
fn default_sp_node_device() -> String {
    "{edge_node}".into()
}
fn default_sp_max_nodes() -> usize {
    1_000
}
fn default_sp_max_devices() -> usize {
    10_000
}
fn default_sp_max_metrics() -> usize {
    100_000
}
fn default_sp_rebirth_interval() -> Dur {
    Dur::secs(10)
}

/// `format = "sparkplug_b"`: device ids, bounds of the alias tables, rebirth pacing.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SparkplugConfig {
    /// Device id of a device's metrics (DBIRTH/DDATA); `{group}`, `{edge_node}`, `{device}`.
    #[serde(default = "default_sp_device")]
    pub device: String,
    /// Device id of an edge node's own metrics (NBIRTH/NDATA); `{group}`, `{edge_node}`.
    #[serde(default = "default_sp_node_device")]
    pub node_device: String,
    /// Edge nodes tracked at most; births of more are refused and counted.
    #[serde(default = "default_sp_max_nodes")]
    pub max_nodes: usize,
    /// Devices (over all nodes) tracked at most.
    #[serde(default = "default_sp_max_devices")]
    pub max_devices: usize,
    /// Metric aliases (over all nodes and devices) remembered at most.
    #[serde(default = "default_sp_max_metrics")]
    pub max_metrics: usize,
    /// Least time between two rebirth requests (NCMD) to one edge node.
    #[serde(default = "default_sp_rebirth_interval")]
    pub rebirth_interval: Dur,
}

impl Default for SparkplugConfig {
    fn default() -> Self {
        SparkplugConfig {
            device: default_sp_device(),
            node_device: default_sp_node_device(),
            max_nodes: default_sp_max_nodes(),
            max_devices: default_sp_max_devices(),
            max_metrics: default_sp_max_metrics(),
            rebirth_interval: default_sp_rebirth_interval(),
        }
    }
}

/// One subscription of an MQTT source.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttSubscription {
    /// Topic pattern: literal levels, `+`, a final `#`, and the captures `{device}` and `{metric}`.
    /// `{device}` takes several levels when the topic is deeper than the pattern.
    pub topic: String,
    /// 0 or 1.
    #[serde(default)]
    pub qos: u8,
    #[serde(default)]
    pub format: MqttPayload,
    /// JSON field path of the value (e.g. `reading.temp`).
    #[serde(default)]
    pub value: Option<String>,
    /// JSON field path of the timestamp (unix s, ms, or RFC 3339); only with `value`.
    #[serde(default)]
    pub ts: Option<String>,
    /// Fixed device id when the topic has no `{device}`.
    #[serde(default)]
    pub device: Option<String>,
    /// Fixed metric name when the topic has no `{metric}`.
    #[serde(default)]
    pub metric: Option<String>,
    /// Unit of numeric timestamps (`auto` by magnitude).
    #[serde(default)]
    pub ts_unit: crate::decode::TsUnit,
    /// `format = "influx"`: the tag naming the device.
    #[serde(default)]
    pub device_tag: Option<String>,
    /// `format = "influx"`: how metric names are formed.
    #[serde(default)]
    pub influx_metric: crate::decode::influx::MetricName,
    /// `format = "sparkplug_b"`: device ids and bounds (defaults when absent).
    #[serde(default)]
    pub sparkplug: Option<SparkplugConfig>,
}

/// `[[source]] kind = "mqtt"`: subscribe to a broker.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttSource {
    pub id: String,
    /// `mqtt://host:port` or `mqtts://host:port`.
    pub url: String,
    /// Required for a persistent session (`clean_session = false`).
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    #[serde(default)]
    pub password_env: Option<String>,
    /// PEM CA certificate(s) to trust for `mqtts://` (else the system roots).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate chain and key, for brokers that require one.
    #[serde(default)]
    pub client_cert: Option<PathBuf>,
    #[serde(default)]
    pub client_key: Option<PathBuf>,
    #[serde(default = "default_keep_alive")]
    pub keep_alive: Dur,
    /// false: the broker keeps the subscriptions and QoS 1 messages while edgewatch is away.
    #[serde(default = "default_true")]
    pub clean_session: bool,
    #[serde(default = "default_max_packet")]
    pub max_packet_size: usize,
    #[serde(default = "default_backoff_min")]
    pub backoff_min: Dur,
    #[serde(default = "default_backoff_max")]
    pub backoff_max: Dur,
    /// Messages that may wait for decoding and analysis; beyond it they are dropped and counted.
    #[serde(default = "default_mqtt_queue")]
    pub queue: usize,
    /// Payload bytes that may wait in that queue; beyond it messages are dropped and counted.
    #[serde(default = "default_mqtt_queue_bytes")]
    pub queue_bytes: usize,
    #[serde(rename = "subscribe")]
    pub subscriptions: Vec<MqttSubscription>,
}

/// A place alerts and summaries go besides `/ws` and `[upstream]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum SinkConfig {
    Mqtt(MqttSink),
    Alertmanager(super::push::AlertmanagerSink),
    Webhook(super::push::WebhookSink),
    Influxdb(super::push::InfluxSink),
    #[serde(rename = "prometheus_remote_write")]
    PrometheusRemoteWrite(crate::sinks::remote_write::Config),
}

impl SinkConfig {
    /// The sink's `id` (names its outbox).
    pub fn id(&self) -> &str {
        match self {
            SinkConfig::Mqtt(m) => &m.id,
            SinkConfig::Alertmanager(a) => &a.id,
            SinkConfig::Webhook(w) => &w.id,
            SinkConfig::Influxdb(i) => &i.id,
            SinkConfig::PrometheusRemoteWrite(r) => &r.id,
        }
    }

    /// The `kind` as written in the file.
    pub fn kind(&self) -> &'static str {
        match self {
            SinkConfig::Mqtt(_) => "mqtt",
            SinkConfig::Alertmanager(_) => "alertmanager",
            SinkConfig::Webhook(_) => "webhook",
            SinkConfig::Influxdb(_) => "influxdb",
            SinkConfig::PrometheusRemoteWrite(_) => "prometheus_remote_write",
        }
    }

    /// Where it delivers to.
    pub fn url(&self) -> &str {
        match self {
            SinkConfig::Mqtt(m) => &m.url,
            SinkConfig::Alertmanager(a) => &a.url,
            SinkConfig::Webhook(w) => &w.url,
            SinkConfig::Influxdb(i) => &i.url,
            SinkConfig::PrometheusRemoteWrite(r) => &r.url,
        }
    }

    pub fn budget(&self) -> &OutboxBudget {
        match self {
            SinkConfig::Mqtt(m) => &m.budget,
            SinkConfig::Alertmanager(a) => &a.budget,
            SinkConfig::Webhook(w) => &w.budget,
            SinkConfig::Influxdb(i) => &i.budget,
            SinkConfig::PrometheusRemoteWrite(r) => &r.budget,
        }
    }

    /// Whether summaries go through its outbox (alerts and gap notices always do).
    pub fn outbox_summaries(&self) -> bool {
        matches!(
            self,
            SinkConfig::Influxdb(_) | SinkConfig::PrometheusRemoteWrite(_)
        )
    }

    /// Name of its outbox in the store; the MQTT sink's predates the other kinds.
    pub fn outbox_name(&self) -> String {
        format!("{}_{}", self.kind(), self.id())
    }
}

fn default_alert_topic() -> String {
    "edgewatch/{node}/alerts/{device}/{metric}".into()
}
fn default_summary_topic() -> String {
    "edgewatch/{node}/summary".into()
}
fn default_status_topic() -> String {
    "edgewatch/{node}/status".into()
}
fn default_window() -> usize {
    64
}

/// `[[sink]] kind = "mqtt"`: publish alerts (QoS 1, from a durable outbox) and summaries.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttSink {
    /// Names the sink's outbox; keep it stable across restarts.
    pub id: String,
    pub url: String,
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    #[serde(default)]
    pub password_env: Option<String>,
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    #[serde(default)]
    pub client_cert: Option<PathBuf>,
    #[serde(default)]
    pub client_key: Option<PathBuf>,
    #[serde(default = "default_keep_alive")]
    pub keep_alive: Dur,
    #[serde(default = "default_max_packet")]
    pub max_packet_size: usize,
    #[serde(default = "default_backoff_min")]
    pub backoff_min: Dur,
    #[serde(default = "default_backoff_max")]
    pub backoff_max: Dur,
    /// Topic of each alert; `{node}`, `{device}`, `{metric}`, `{detector}`, `{severity}`, `{state}`.
    #[serde(default = "default_alert_topic")]
    pub alert_topic: String,
    /// Publish alerts retained: the topic then holds the last state of each device/metric.
    #[serde(default)]
    pub retain: bool,
    /// Topic of summaries (`{node}`); empty disables them.
    #[serde(default = "default_summary_topic")]
    pub summary_topic: String,
    #[serde(default)]
    pub summary_qos: u8,
    /// Retained birth message (`online`) on connect and Last Will (`offline`).
    #[serde(default = "default_status_topic")]
    pub status_topic: String,
    /// Alerts published and not yet acknowledged (PubAck), at most.
    #[serde(default = "default_window")]
    pub window: usize,
    #[serde(default)]
    pub budget: OutboxBudget,
    /// Home Assistant MQTT discovery: `homeassistant = true` or a `[sink.homeassistant]` table.
    #[serde(default)]
    pub homeassistant: Option<HomeAssistantSetting>,
}

fn default_ha_prefix() -> String {
    "homeassistant".into()
}
fn default_ha_state_topic() -> String {
    "edgewatch/{node}/state/{device}".into()
}
fn default_ha_problem_topic() -> String {
    "edgewatch/{node}/problem/{device}".into()
}
fn default_ha_max_sensors() -> usize {
    2000
}

/// `homeassistant = true | false | { ... }` (a bool or a table).
#[derive(Debug, Clone, PartialEq)]
pub struct HomeAssistantSetting(pub HomeAssistant);

impl MqttSink {
    /// Discovery settings when enabled.
    pub fn homeassistant(&self) -> Option<&HomeAssistant> {
        self.homeassistant
            .as_ref()
            .map(|h| &h.0)
            .filter(|h| h.enabled)
    }
}

/// `[sink.homeassistant]`: discovery configs under `prefix`, device states and problem states.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HomeAssistant {
    /// Home Assistant's discovery prefix.
    #[serde(default = "default_ha_prefix")]
    pub prefix: String,
    /// Retained JSON of each device's latest metric values (`{node}`, `{device}`).
    #[serde(default = "default_ha_state_topic")]
    pub state_topic: String,
    /// Retained `ON`/`OFF` of each device's problem sensor (`{node}`, `{device}`).
    #[serde(default = "default_ha_problem_topic")]
    pub problem_topic: String,
    /// Sensors announced at most (device metrics beyond it are counted and logged, not announced).
    #[serde(default = "default_ha_max_sensors")]
    pub max_sensors: usize,
    /// `homeassistant = false` parses to this being false.
    #[serde(skip, default = "default_true")]
    pub enabled: bool,
}

impl Default for HomeAssistant {
    fn default() -> Self {
        HomeAssistant {
            prefix: default_ha_prefix(),
            state_topic: default_ha_state_topic(),
            problem_topic: default_ha_problem_topic(),
            max_sensors: default_ha_max_sensors(),
            enabled: true,
        }
    }
}

impl<'de> Deserialize<'de> for HomeAssistantSetting {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = HomeAssistantSetting;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str(
                    "true, false or a table (prefix, state_topic, problem_topic, max_sensors)",
                )
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Self::Value, E> {
                Ok(HomeAssistantSetting(HomeAssistant {
                    enabled: v,
                    ..HomeAssistant::default()
                }))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                m: A,
            ) -> Result<Self::Value, A::Error> {
                HomeAssistant::deserialize(serde::de::value::MapAccessDeserializer::new(m))
                    .map(HomeAssistantSetting)
            }
        }
        d.deserialize_any(V)
    }
}

impl MqttSink {
    /// The sink's connection settings.
    pub fn conn(&self) -> Conn<'_> {
        Conn {
            url: &self.url,
            client_id: self.client_id.as_deref(),
            username: self.username.as_deref(),
            password_file: self.password_file.as_deref(),
            password_env: self.password_env.as_deref(),
            ca_file: self.ca_file.as_deref(),
            client_cert: self.client_cert.as_deref(),
            client_key: self.client_key.as_deref(),
            keep_alive: self.keep_alive,
            clean_session: true,
            max_packet_size: self.max_packet_size,
        }
    }
}

impl MqttSource {
    pub fn conn(&self) -> Conn<'_> {
        Conn {
            url: &self.url,
            client_id: self.client_id.as_deref(),
            username: self.username.as_deref(),
            password_file: self.password_file.as_deref(),
            password_env: self.password_env.as_deref(),
            ca_file: self.ca_file.as_deref(),
            client_cert: self.client_cert.as_deref(),
            client_key: self.client_key.as_deref(),
            keep_alive: self.keep_alive,
            clean_session: self.clean_session,
            max_packet_size: self.max_packet_size,
        }
    }
}

/// Broker connection settings shared by source and sink.
#[derive(Debug, Clone, Copy)]
pub struct Conn<'a> {
    pub url: &'a str,
    pub client_id: Option<&'a str>,
    pub username: Option<&'a str>,
    pub password_file: Option<&'a std::path::Path>,
    pub password_env: Option<&'a str>,
    pub ca_file: Option<&'a std::path::Path>,
    pub client_cert: Option<&'a std::path::Path>,
    pub client_key: Option<&'a std::path::Path>,
    pub keep_alive: Dur,
    pub clean_session: bool,
    pub max_packet_size: usize,
}
