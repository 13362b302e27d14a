//! Broker connections shared by the MQTT source and sink: URL parsing, the password from a file or
//! an environment variable (never logged), rustls TLS (ring) with an optional client certificate.

use std::sync::Arc;
use std::time::Duration;

use rumqttc::{MqttOptions, TlsConfiguration, Transport};

use crate::config::mqtt::Conn;

#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    #[error("bad broker URL {url:?}: {why}")]
    Url { url: String, why: &'static str },
    #[error("password: {0}")]
    Password(String),
    #[error("TLS: {0}")]
    Tls(String),
}

/// Where a broker URL points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerAddr {
    pub host: String,
    pub port: u16,
    pub tls: bool,
}

/// Parses `mqtt://host[:port]` (port 1883) or `mqtts://host[:port]` (8883); IPv6 as `[::1]`.
pub fn broker_addr(url: &str) -> Result<BrokerAddr, MqttError> {
    let bad = |why| MqttError::Url {
        url: url.to_owned(),
        why,
    };
    let (rest, tls, default_port) = if let Some(r) = url.strip_prefix("mqtts://") {
        (r, true, 8883)
    } else if let Some(r) = url.strip_prefix("mqtt://") {
        (r, false, 1883)
    } else {
        return Err(bad("the scheme must be mqtt:// or mqtts://"));
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains(['/', '?', '@']) {
        return Err(bad(
            "give only host and port (credentials go in username/password_file)",
        ));
    }
    let (host, port) = if let Some(r) = rest.strip_prefix('[') {
        let (h, p) = r.split_once(']').ok_or_else(|| bad("unclosed `[`"))?;
        (h, p.strip_prefix(':'))
    } else {
        match rest.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (rest, None),
        }
    };
    if host.is_empty() {
        return Err(bad("no host"));
    }
    let port = match port {
        None => default_port,
        Some(p) => p
            .parse::<u16>()
            .map_err(|_| bad("the port is not a number from 1 to 65535"))?,
    };
    if port == 0 {
        return Err(bad("the port is not a number from 1 to 65535"));
    }
    Ok(BrokerAddr {
        host: host.to_owned(),
        port,
        tls,
    })
}

/// Reads the password from a file (trailing newline trimmed) or an environment variable.
fn password(c: &Conn<'_>) -> Result<Option<String>, MqttError> {
    let p = match (c.password_file, c.password_env) {
        (Some(f), _) => std::fs::read_to_string(f)
            .map_err(|e| MqttError::Password(format!("{}: {e}", f.display())))?
            .trim_end_matches(['\r', '\n'])
            .to_owned(),
        (None, Some(v)) => std::env::var(v)
            .map_err(|_| MqttError::Password(format!("environment variable {v} is not set")))?,
        (None, None) => return Ok(None),
    };
    Ok(Some(p))
}

/// rumqttc options for `c`; `default_id` is the client id when none is configured. Reads the
/// password and certificate files now, so a mistake shows at start-up.
pub fn options(c: &Conn<'_>, default_id: &str) -> Result<MqttOptions, MqttError> {
    let addr = broker_addr(c.url)?;
    let id = c.client_id.unwrap_or(default_id);
    let mut o = MqttOptions::new(id, addr.host, addr.port);
    o.set_keep_alive(c.keep_alive.0.max(Duration::from_secs(5)));
    // A non-empty client id is always set above, so this cannot hit rumqttc's assertion.
    o.set_clean_session(c.clean_session || id.is_empty());
    o.set_max_packet_size(c.max_packet_size, c.max_packet_size);
    if let Some(u) = c.username {
        o.set_credentials(u, password(c)?.unwrap_or_default());
    }
    if addr.tls {
        let client = c.client_cert.zip(c.client_key);
        let cfg = crate::upstream::tls::client_config_with(c.ca_file, client)
            .map_err(|e| MqttError::Tls(e.to_string()))?;
        o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
            Arc::clone(&cfg),
        )));
    }
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let a = |u: &str| broker_addr(u).map(|b| (b.host, b.port, b.tls));
        assert_eq!(
            a("mqtt://127.0.0.1").ok(),
            Some(("127.0.0.1".into(), 1883, false))
        );
        assert_eq!(
            a("mqtts://broker:8884/").ok(),
            Some(("broker".into(), 8884, true))
        );
        assert_eq!(
            a("mqtt://[::1]:1884").ok(),
            Some(("::1".into(), 1884, false))
        );
        for bad in [
            "http://x",
            "mqtt://",
            "mqtt://h:0",
            "mqtt://h:x",
            "mqtt://u:p@h",
            "mqtt://h/t",
        ] {
            assert!(a(bad).is_err(), "{bad}");
        }
    }
}
