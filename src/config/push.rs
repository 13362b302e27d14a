//! Config schema of the HTTP push sinks (`[[sink]] kind = "alertmanager" | "webhook" |
//! "influxdb"`): URL, headers with secrets from files, timeouts, batching and the outbox budget.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::{default_backoff_max, default_backoff_min, Dur, OutboxBudget};

fn default_timeout() -> Dur {
    Dur::secs(10)
}
fn default_resend() -> Dur {
    Dur::secs(60)
}
fn default_batch() -> usize {
    500
}
fn default_content_type() -> String {
    "application/json".into()
}
fn default_true() -> bool {
    true
}

/// Settings every HTTP push sink shares (flattening would lose located unknown-field errors, so
/// each sink repeats them through this macro).
macro_rules! http_sink {
    ($(#[$m:meta])* pub struct $name:ident { $($(#[$fm:meta])* pub $f:ident : $t:ty,)* }) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            /// Names the sink's outbox; keep it stable across restarts.
            pub id: String,
            pub url: String,
            /// Extra request headers (plain values).
            #[serde(default)]
            pub headers: BTreeMap<String, String>,
            /// Extra request headers whose value is read from a file (secrets), trimmed.
            #[serde(default)]
            pub header_files: BTreeMap<String, PathBuf>,
            /// CA certificates to trust for `https://` (else the system's roots).
            #[serde(default)]
            pub ca_file: Option<PathBuf>,
            /// Whole request (connect, send, answer) at most.
            #[serde(default = "default_timeout")]
            pub timeout: Dur,
            #[serde(default = "default_backoff_min")]
            pub backoff_min: Dur,
            #[serde(default = "default_backoff_max")]
            pub backoff_max: Dur,
            #[serde(default)]
            pub budget: OutboxBudget,
            $($(#[$fm])* pub $f: $t,)*
        }
    };
}

http_sink! {
    /// `[[sink]] kind = "alertmanager"`: alert transitions to Alertmanager's `/api/v2/alerts`.
    pub struct AlertmanagerSink {
        /// Firing alerts are sent again this often (Alertmanager forgets an alert whose `endsAt`
        /// passed; each send sets it to 4 × this interval ahead, as Prometheus does).
        #[serde(default = "default_resend")]
        pub resend_interval: Dur,
        /// Alerts per request at most.
        #[serde(default = "default_batch")]
        pub batch: usize,
        /// Shown as each alert's `generatorURL` (e.g. the appliance's dashboard).
        #[serde(default)]
        pub generator_url: Option<String>,
    }
}

http_sink! {
    /// `[[sink]] kind = "webhook"`: each alert transition POSTed to a URL, one request each.
    pub struct WebhookSink {
        /// Body with `{{field}}` placeholders (alert fields, `node`, `ts_rfc3339`); default: the
        /// alert's JSON as on `/ws`.
        #[serde(default)]
        pub template: Option<String>,
        /// `Content-Type` of the body. With a JSON type, substituted values are JSON-escaped.
        #[serde(default = "default_content_type")]
        pub content_type: String,
        /// POST gap notices (outbox budget drops) too; only without a template.
        #[serde(default = "default_true")]
        pub gaps: bool,
    }
}

/// InfluxDB write API version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InfluxApi {
    /// `/write?db=`, optional user/password.
    V1,
    /// `/api/v2/write?org=&bucket=`, `Authorization: Token`.
    V2,
}

fn default_influx_api() -> InfluxApi {
    InfluxApi::V1
}
fn default_measurement_prefix() -> String {
    "edgewatch_".into()
}

http_sink! {
    /// `[[sink]] kind = "influxdb"`: summaries and alerts as line protocol over HTTP.
    pub struct InfluxSink {
        #[serde(default = "default_influx_api")]
        pub api: InfluxApi,
        /// v1: the database.
        #[serde(default)]
        pub database: Option<String>,
        /// v1: optional retention policy.
        #[serde(default)]
        pub retention_policy: Option<String>,
        /// v1: user name (with `password_file`).
        #[serde(default)]
        pub username: Option<String>,
        #[serde(default)]
        pub password_file: Option<PathBuf>,
        /// v2: organisation and bucket.
        #[serde(default)]
        pub org: Option<String>,
        #[serde(default)]
        pub bucket: Option<String>,
        /// v2: API token, read from this file.
        #[serde(default)]
        pub token_file: Option<PathBuf>,
        /// Gzip request bodies (`Content-Encoding: gzip`).
        #[serde(default = "default_true")]
        pub gzip: bool,
        /// Outbox messages per request at most (a summary becomes one line per device metric).
        #[serde(default = "default_batch")]
        pub batch: usize,
        /// Measurement names are this prefix + `summary` / `alert` / `sample` / `sample_interval`.
        #[serde(default = "default_measurement_prefix")]
        pub measurement_prefix: String,
        /// Raw samples too: `"none"` (default), `"all"` (every accepted sample as a point) or an
        /// interval such as `"10s"` (per device metric and interval: min/mean/max/last/count).
        #[serde(default)]
        pub samples: SampleMode,
    }
}

/// Which raw samples an InfluxDB sink writes (`samples = "all" | "none" | "<interval>"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SampleMode {
    #[default]
    None,
    All,
    /// Per device metric and interval of this length (sample time, aligned to the epoch).
    Every(std::time::Duration),
}

impl SampleMode {
    /// The interval in ms of `Every`, 0 for `All`, `None` for `None`.
    pub fn interval_ms(self) -> Option<i64> {
        match self {
            SampleMode::None => None,
            SampleMode::All => Some(0),
            SampleMode::Every(d) => Some(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
        }
    }
}

impl<'de> Deserialize<'de> for SampleMode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match s.as_str() {
            "none" => Ok(SampleMode::None),
            "all" => Ok(SampleMode::All),
            other => humantime::parse_duration(other)
                .map(SampleMode::Every)
                .map_err(|e| {
                    serde::de::Error::custom(format!(
                        "invalid samples {other:?}: expected \"all\", \"none\" or an interval such as \"10s\" ({e})"
                    ))
                }),
        }
    }
}
