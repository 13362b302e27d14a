//! `edgewatch tail`: follows appliances' `/ws` streams (one or several URLs) and MQTT brokers that
//! the MQTT sink publishes to (`mqtt://broker`), one readable line per event (with the node name
//! when following several), coloured on a terminal; reconnects by itself.

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
    /// `ws://`/`wss://` appliances (`http://` is taken as `ws://`) and `mqtt://`/`mqtts://` brokers.
    pub urls: Vec<String>,
    /// MQTT topics to follow on brokers (the MQTT sink's default topics when empty).
    pub topics: Vec<String>,
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

/// Topics of the MQTT sink's defaults: alerts, summaries and birth/Last Will of every node.
pub const DEFAULT_TOPICS: [&str; 3] = [
    "edgewatch/+/alerts/#",
    "edgewatch/+/summary",
    "edgewatch/+/status",
];

/// Follows every URL until `count` events were printed (over all of them), or forever.
pub async fn run(opts: TailOptions) -> Result<(), TailError> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Value>(1024);
    let many = opts.urls.len() > 1 || opts.urls.iter().any(|u| is_mqtt(u));
    let mut tasks = Vec::new();
    for url in &opts.urls {
        if is_mqtt(url) {
            let topics = if opts.topics.is_empty() {
                DEFAULT_TOPICS.iter().map(|t| t.to_string()).collect()
            } else {
                opts.topics.clone()
            };
            let mqtt = mqtt_options(url)?;
            tasks.push(tokio::spawn(follow_mqtt(
                url.clone(),
                mqtt,
                topics,
                tx.clone(),
            )));
        } else {
            let ws = url
                .strip_prefix("http://")
                .map(|r| format!("ws://{r}"))
                .or_else(|| url.strip_prefix("https://").map(|r| format!("wss://{r}")))
                .unwrap_or_else(|| url.clone());
            let url = stream_url(&ws, opts.device.as_deref(), opts.kind.as_deref());
            url.as_str()
                .into_client_request()
                .map_err(|e| TailError::Url(url.clone(), e.to_string()))?;
            let connector = if url.starts_with("wss://") {
                let cfg = crate::upstream::tls::client_config(None)
                    .map_err(|e| TailError::Tls(e.to_string()))?;
                Some(Connector::Rustls(cfg))
            } else {
                None
            };
            tasks.push(tokio::spawn(follow_ws(
                url,
                opts.token.clone(),
                connector,
                tx.clone(),
            )));
        }
    }
    drop(tx);
    let _abort = AbortOnDrop(tasks);
    let mut printed = 0u64;
    let stdout = std::io::stdout();
    while let Some(mut v) = rx.recv().await {
        if !keep(&mut v, opts.device.as_deref(), opts.kind.as_deref()) {
            continue;
        }
        let Some(mut line) = format_event(&v, opts.color) else {
            continue;
        };
        if many {
            let node = v["node"].as_str().unwrap_or("?");
            line = format!(
                "{} {line}",
                paint(opts.color, Style::new().bold(), &format!("[{node}]"))
            );
        }
        let mut out = stdout.lock();
        if writeln!(out, "{line}").and_then(|_| out.flush()).is_err() {
            return Ok(()); // stdout closed (e.g. piped into head)
        }
        printed += 1;
        if opts.count.is_some_and(|c| printed >= c) {
            return Ok(());
        }
    }
    Ok(())
}

struct AbortOnDrop(Vec<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

fn is_mqtt(url: &str) -> bool {
    url.starts_with("mqtt://") || url.starts_with("mqtts://")
}

/// The `device`/`type` filters for events that did not pass a server-side filter (MQTT).
fn keep(v: &mut Value, device: Option<&str>, kind: Option<&str>) -> bool {
    let t = v["type"].as_str().unwrap_or("");
    if kind.is_some_and(|k| k != t) {
        return false;
    }
    let Some(d) = device else {
        return true;
    };
    match t {
        "alert" => v["device"] == d,
        "summary" => {
            if let Some(a) = v["devices"].as_array_mut() {
                a.retain(|e| e["device"] == d);
                !a.is_empty()
            } else {
                false
            }
        }
        _ => true,
    }
}

fn mqtt_options(url: &str) -> Result<rumqttc::MqttOptions, TailError> {
    let conn = crate::config::mqtt::Conn {
        url,
        client_id: None,
        username: None,
        password_file: None,
        password_env: None,
        ca_file: None,
        client_cert: None,
        client_key: None,
        keep_alive: crate::config::Dur::secs(30),
        clean_session: true,
        max_packet_size: 1024 * 1024,
    };
    let id = format!("edgewatch-tail-{}", std::process::id());
    crate::mqtt::options(&conn, &id).map_err(|e| TailError::Url(url.to_string(), e.to_string()))
}

async fn follow_mqtt(
    url: String,
    opts: rumqttc::MqttOptions,
    topics: Vec<String>,
    tx: tokio::sync::mpsc::Sender<Value>,
) {
    use rumqttc::{AsyncClient, Event, Packet, QoS};
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(15));
    let (client, mut el) = AsyncClient::new(opts, 64);
    loop {
        match el.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                eprintln!("connected to {url}");
                backoff.reset();
                for t in &topics {
                    if let Err(e) = client.try_subscribe(t, QoS::AtLeastOnce) {
                        eprintln!("cannot subscribe to {t}: {e}");
                    }
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                if let Ok(v) = serde_json::from_slice::<Value>(&p.payload) {
                    if tx.send(v).await.is_err() {
                        return;
                    }
                }
            }
            Ok(_) => {}
            Err(e) => {
                eprintln!("cannot follow {url}: {e}");
                // rumqttc reconnects on the next poll without waiting of its own.
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
    }
}

async fn follow_ws(
    url: String,
    token: Option<String>,
    connector: Option<Connector>,
    tx: tokio::sync::mpsc::Sender<Value>,
) {
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(15));
    loop {
        let Ok(mut req) = url.as_str().into_client_request() else {
            return; // checked before the task started
        };
        if let Some(t) = &token {
            match format!("Bearer {t}").parse() {
                Ok(v) => {
                    req.headers_mut().insert(AUTHORIZATION, v);
                }
                Err(_) => {
                    eprintln!("{url}: the token is not a valid header value");
                    return;
                }
            }
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
                    if let Ok(v) = serde_json::from_str::<Value>(&text) {
                        if tx.send(v).await.is_err() {
                            return;
                        }
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
        "status" => Some(format!(
            "{} {} {}",
            time_of(None),
            paint(color, Style::new().dimmed(), "status  "),
            s("state")
        )),
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
