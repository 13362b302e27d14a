//! `edgewatch tail`: follows an appliance's `/ws` stream (local or remote) and prints one readable
//! line per event, coloured on a terminal; reconnects by itself when the appliance restarts.

use std::fmt::Write as _;
use std::io::Write as _;
use std::time::{Duration, UNIX_EPOCH};

use anstyle::{AnsiColor, Style};
use futures_util::StreamExt;
use serde_json::Value;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::header::AUTHORIZATION;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::Connector;

use crate::sources::backoff::Backoff;

#[derive(Debug, thiserror::Error)]
pub enum TailError {
    #[error("bad URL {0:?}: {1}")]
    Url(String, String),
    #[error("{0}")]
    Tls(String),
}

/// What to follow and how to print it.
pub struct TailOptions {
    pub url: String,
    pub token: Option<String>,
    pub device: Option<String>,
    pub kind: Option<String>,
    pub color: bool,
    /// Stop after this many events (for scripts and tests); `None` runs until interrupted.
    pub count: Option<u64>,
}

/// The stream URL with filters: `ws://host:port` gets `/ws`, and `device`/`type` query parameters.
pub fn stream_url(base: &str, device: Option<&str>, kind: Option<&str>) -> String {
    let mut url = base.trim_end_matches('/').to_string();
    let after_scheme = url.split_once("://").map_or("", |(_, rest)| rest);
    if !after_scheme.contains('/') {
        url.push_str("/ws");
    }
    let mut sep = if url.contains('?') { '&' } else { '?' };
    for (k, v) in [("device", device), ("type", kind)] {
        if let Some(v) = v {
            let _ = write!(url, "{sep}{k}={}", encode(v));
            sep = '&';
        }
    }
    url
}

fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Follows the stream until `count` events were printed, or forever.
pub async fn run(opts: TailOptions) -> Result<(), TailError> {
    let url = stream_url(&opts.url, opts.device.as_deref(), opts.kind.as_deref());
    let connector = if url.starts_with("wss://") {
        let cfg =
            crate::upstream::tls::client_config(None).map_err(|e| TailError::Tls(e.to_string()))?;
        Some(Connector::Rustls(cfg))
    } else {
        None
    };
    let mut printed = 0u64;
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(15));
    let stdout = std::io::stdout();
    loop {
        let mut req = url
            .as_str()
            .into_client_request()
            .map_err(|e| TailError::Url(url.clone(), e.to_string()))?;
        if let Some(t) = &opts.token {
            let v = format!("Bearer {t}").parse().map_err(|_| {
                TailError::Url(url.clone(), "the token is not a valid header value".into())
            })?;
            req.headers_mut().insert(AUTHORIZATION, v);
        }
        match tokio_tungstenite::connect_async_tls_with_config(req, None, false, connector.clone())
            .await
        {
            Ok((mut ws, _)) => {
                eprintln!("connected to {url}");
                backoff.reset();
                while let Some(msg) = ws.next().await {
                    let text = match msg {
                        Ok(Message::Text(t)) => t,
                        Ok(Message::Close(_)) | Err(_) => break,
                        Ok(_) => continue,
                    };
                    let Ok(v) = serde_json::from_str::<Value>(&text) else {
                        continue;
                    };
                    let Some(line) = format_event(&v, opts.color) else {
                        continue;
                    };
                    let mut out = stdout.lock();
                    if writeln!(out, "{line}").and_then(|_| out.flush()).is_err() {
                        return Ok(()); // stdout closed (e.g. piped into head)
                    }
                    printed += 1;
                    if opts.count.is_some_and(|c| printed >= c) {
                        return Ok(());
                    }
                }
                eprintln!("disconnected from {url}; reconnecting");
            }
            Err(e) => eprintln!("cannot connect to {url}: {e}"),
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

fn paint(color: bool, style: Style, text: &str) -> String {
    if color {
        format!("{}{text}{}", style.render(), style.render_reset())
    } else {
        text.to_string()
    }
}

fn time_of(ms: Option<i64>) -> String {
    match ms.and_then(|m| u64::try_from(m).ok()) {
        Some(m) => {
            humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(m)).to_string()
        }
        None => "-".into(),
    }
}

fn num(v: &Value) -> String {
    match v.as_f64() {
        Some(x) if x.abs() >= 1e6 || (x != 0.0 && x.abs() < 1e-3) => format!("{x:.4e}"),
        Some(x) => format!("{}", (x * 1e4).round() / 1e4),
        None => "null".into(),
    }
}

/// One line for an event, or `None` for messages that are not events (hello).
pub fn format_event(v: &Value, color: bool) -> Option<String> {
    let s = |k: &str| v[k].as_str().unwrap_or("?").to_string();
    match v["type"].as_str()? {
        "alert" => {
            let firing = v["state"] == "firing";
            let sev = s("severity");
            let style = match (firing, sev.as_str()) {
                (false, _) => Style::new().fg_color(Some(AnsiColor::Green.into())),
                (true, "critical") => Style::new().fg_color(Some(AnsiColor::Red.into())).bold(),
                (true, "warning") => Style::new().fg_color(Some(AnsiColor::Yellow.into())),
                (true, _) => Style::new().fg_color(Some(AnsiColor::Cyan.into())),
            };
            let state = if firing { "FIRING  " } else { "RESOLVED" };
            Some(format!(
                "{} {} {:<8} {}/{} {} value={} score={}  {}",
                time_of(v["ts"].as_i64()),
                paint(color, style, state),
                sev,
                s("device"),
                s("metric"),
                s("detector"),
                num(&v["value"]),
                num(&v["score"]),
                s("message"),
            ))
        }
        "summary" => {
            let entries = v["devices"].as_array()?;
            let mut line = format!(
                "{} {} {} series:",
                time_of(v["ts"].as_i64()),
                paint(color, Style::new().dimmed(), "summary "),
                entries.len()
            );
            for e in entries {
                let _ = write!(
                    line,
                    " {}/{}={}±{} (n={})",
                    e["device"].as_str().unwrap_or("?"),
                    e["metric"].as_str().unwrap_or("?"),
                    num(&e["mean"]),
                    num(&e["std"]),
                    e["count"]
                );
            }
            Some(line)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_get_the_path_and_filters() {
        assert_eq!(stream_url("ws://pi:8080", None, None), "ws://pi:8080/ws");
        assert_eq!(
            stream_url("ws://pi:8080/ws", Some("pump 3"), Some("alert")),
            "ws://pi:8080/ws?device=pump%203&type=alert"
        );
        assert_eq!(
            stream_url("wss://pi/ws?x=1", Some("a"), None),
            "wss://pi/ws?x=1&device=a"
        );
    }

    #[test]
    fn lines_are_readable() {
        let a: Value = serde_json::from_str(
            r#"{"type":"alert","state":"firing","severity":"critical","device":"pump-3","metric":"vibration",
               "detector":"zscore","ts":1795301013848,"value":1.830581,"score":12.82,"message":"|z| 12.82 > 5"}"#,
        )
        .expect("json");
        let line = format_event(&a, false).expect("line");
        assert_eq!(
            line,
            "2026-11-21T22:43:33.848Z FIRING   critical pump-3/vibration zscore value=1.8306 score=12.82  |z| 12.82 > 5"
        );
        assert!(
            format_event(&a, true).expect("line").contains("\u{1b}["),
            "coloured on a terminal"
        );
        let s: Value = serde_json::from_str(
            r#"{"type":"summary","ts":0,"devices":[{"device":"d","metric":"m","mean":1.5,"std":0.25,"count":3}]}"#,
        )
        .expect("json");
        assert_eq!(
            format_event(&s, false).expect("line"),
            "1970-01-01T00:00:00.000Z summary  1 series: d/m=1.5±0.25 (n=3)"
        );
        assert!(format_event(&serde_json::json!({"type":"hello"}), false).is_none());
    }
}
