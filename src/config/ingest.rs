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
