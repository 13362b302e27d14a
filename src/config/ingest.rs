//! Config schema of the push sources that take frames from many senders: datagrams
//! (`kind = "udp"`) and HTTP request bodies (`kind = "http"`), with their decoder settings and bounds.

use std::net::SocketAddr;

use serde::Deserialize;

use super::load::Seg;
use super::validate::{at, fail, key, validate_influx_only};
use super::{default_backoff_max, default_backoff_min, default_max_frame, Dur};
use crate::decode::influx::MetricName;
use crate::decode::{Format, Settings, TsUnit};

type VResult<T> = Result<T, (Vec<Seg>, String)>;

fn default_influx() -> Format {
    Format::Influx
}
fn default_max_datagram() -> usize {
    65_507
}

/// `[[source]] kind = "udp"`: one or more newline-separated frames per datagram.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UdpSource {
    pub id: String,
    /// Address to receive on (`0.0.0.0:8089` for Telegraf's default).
    pub listen: SocketAddr,
    /// Frame format; line protocol by default (what Telegraf and friends send over UDP).
    #[serde(default = "default_influx")]
    pub format: Format,
    /// Device of frames that name none.
    #[serde(default)]
    pub device: Option<String>,
    #[serde(default)]
    pub ts_unit: TsUnit,
    #[serde(default)]
    pub device_tag: Option<String>,
    #[serde(default)]
    pub influx_metric: MetricName,
    /// Longest datagram taken (the receive buffer); longer ones are counted and skipped.
    #[serde(default = "default_max_datagram")]
    pub max_datagram: usize,
    /// Longest frame (line) in bytes.
    #[serde(default = "default_max_frame")]
    pub max_frame: usize,
    /// Restart backoff (e.g. when the address cannot be bound).
    #[serde(default = "default_backoff_min")]
    pub backoff_min: Dur,
    #[serde(default = "default_backoff_max")]
    pub backoff_max: Dur,
}

impl UdpSource {
    pub fn settings(&self) -> Settings {
        Settings {
            device: self.device.clone(),
            ts_unit: self.ts_unit,
            device_tag: self.device_tag.clone(),
            influx_metric: self.influx_metric,
        }
    }
}

pub(super) fn validate_udp(u: &UdpSource, p: &[Seg]) -> VResult<()> {
    validate_influx_only(
        u.format == Format::Influx,
        &u.device_tag,
        u.influx_metric,
        p,
    )?;
    if !(512..=65_507).contains(&u.max_datagram) {
        return fail(
            at(p, &[key("max_datagram")]),
            "must be between 512 and 65507 bytes",
        );
    }
    if !(16..=1 << 20).contains(&u.max_frame) {
        return fail(
            at(p, &[key("max_frame")]),
            "must be between 16 and 1048576 bytes",
        );
    }
    super::validate::validate_backoff(u.backoff_min, u.backoff_max, p)
}

fn default_json() -> Format {
    Format::Json
}
fn default_max_body() -> usize {
    1024 * 1024
}
fn default_max_concurrent() -> usize {
    8
}
fn default_accept_wait() -> Dur {
    Dur::secs(2)
}
fn default_http_path() -> String {
    "/ingest".into()
}

/// `[[source]] kind = "http"`: `POST` bodies of frames (one per line). Without `listen` on the
/// API listener at `/api/ingest`, behind the API token; with it on a listener of its own.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSource {
    pub id: String,
    /// A listener of its own (e.g. `0.0.0.0:8080`); absent: the API listener's `/api/ingest`.
    #[serde(default)]
    pub listen: Option<SocketAddr>,
    /// Path on its own listener.
    #[serde(default = "default_http_path")]
    pub path: String,
    /// Bearer token of its own listener (file content, trimmed); absent: no token asked.
    #[serde(default)]
    pub token_file: Option<std::path::PathBuf>,
    #[serde(default = "default_json")]
    pub format: Format,
    /// Device of frames that name none.
    #[serde(default)]
    pub device: Option<String>,
    #[serde(default)]
    pub ts_unit: TsUnit,
    #[serde(default)]
    pub device_tag: Option<String>,
    #[serde(default)]
    pub influx_metric: MetricName,
    /// Largest body accepted (413 beyond).
    #[serde(default = "default_max_body")]
    pub max_body: usize,
    /// Longest line (400 beyond).
    #[serde(default = "default_max_frame")]
    pub max_frame: usize,
    /// Requests decoded at once; more get 429.
    #[serde(default = "default_max_concurrent")]
    pub max_concurrent: usize,
    /// How long a request waits for a full shard queue before it gets 503.
    #[serde(default = "default_accept_wait")]
    pub accept_wait: Dur,
    #[serde(default = "default_backoff_min")]
    pub backoff_min: Dur,
    #[serde(default = "default_backoff_max")]
    pub backoff_max: Dur,
}

impl HttpSource {
    pub fn settings(&self) -> Settings {
        Settings {
            device: self.device.clone(),
            ts_unit: self.ts_unit,
            device_tag: self.device_tag.clone(),
            influx_metric: self.influx_metric,
        }
    }
}

pub(super) fn validate_http(h: &HttpSource, p: &[Seg]) -> VResult<()> {
    validate_influx_only(
        h.format == Format::Influx,
        &h.device_tag,
        h.influx_metric,
        p,
    )?;
    if h.listen.is_none() && h.token_file.is_some() {
        return fail(
            at(p, &[key("token_file")]),
            "applies to a listener of its own (`listen`); on the API listener the API token applies",
        );
    }
    if !h.path.starts_with('/') || h.path.contains(char::is_whitespace) {
        return fail(at(p, &[key("path")]), "must start with `/`, without spaces");
    }
    if !(1024..=64 << 20).contains(&h.max_body) {
        return fail(
            at(p, &[key("max_body")]),
            "must be between 1024 and 67108864 bytes",
        );
    }
    if !(16..=1 << 20).contains(&h.max_frame) {
        return fail(
            at(p, &[key("max_frame")]),
            "must be between 16 and 1048576 bytes",
        );
    }
    if !(1..=1024).contains(&h.max_concurrent) {
        return fail(
            at(p, &[key("max_concurrent")]),
            "must be between 1 and 1024",
        );
    }
    if h.accept_wait.0.is_zero() || h.accept_wait.0 > std::time::Duration::from_secs(60) {
        return fail(at(p, &[key("accept_wait")]), "must be between 1ms and 60s");
    }
    super::validate::validate_backoff(h.backoff_min, h.backoff_max, p)
}
