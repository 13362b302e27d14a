//! Serial source: reads a sensor on a serial port, frames (delimiter or silence gap), decodes
//! and routes its samples; writes an init string on open and a poll string on an interval.
//!
//! It survives unplugging: end of file, an I/O error or the device node vanishing close the port,
//! mark the source unhealthy, drop (and count) a partial frame, and it reopens with capped
//! backoff, resolving the configured path or USB identity again, so a renumbered adapter is found.

pub mod port;
pub mod usb;

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::{sleep_until, Instant, MissedTickBehavior};

use super::backoff::Retry;
use super::intake::{Decoder, Framed, Intake, Origin};
use super::route::{Closed, Router};
use super::SourceError;
use crate::config::{SerialFormat, SerialSource};
use crate::decode::framing::Delimiter;
use crate::status::SourceStats;

const READ_BUF: usize = 4096;
/// How often an open port's device node is checked (for drivers that do not report removal).
const NODE_CHECK: Duration = Duration::from_secs(1);
/// Longest a write (init or poll string) may block, e.g. on hardware flow control.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// The frame delimiter a source's config asks for.
pub fn delimiter(cfg: &SerialSource) -> Delimiter {
    match (&cfg.delimiter, cfg.frame_gap) {
        (_, Some(_)) => Delimiter::None,
        (None, None) => Delimiter::Newline,
        (Some(d), None) if d == "\n" || d == "\r\n" => Delimiter::Newline,
        (Some(d), None) => Delimiter::Bytes(d.as_bytes().to_vec()),
    }
}

/// The decoder a source's config asks for.
fn decoder(cfg: &SerialSource) -> Decoder {
    match cfg.format {
        SerialFormat::Frame(format) => Decoder::Format {
            format,
            settings: crate::decode::Settings {
                device: cfg.device.clone(),
                ts_unit: cfg.ts_unit,
                device_tag: cfg.device_tag.clone(),
                influx_metric: cfg.influx_metric,
            },
        },
        SerialFormat::Columns => Decoder::Columns {
            columns: cfg.columns.clone().unwrap_or_default(),
            device: cfg.device.clone(),
            ts_unit: cfg.ts_unit,
        },
    }
}

pub async fn run(
    cfg: Arc<SerialSource>,
    idx: u16,
    router: Router,
    stats: Arc<SourceStats>,
) -> Result<(), SourceError> {
    let settings = cfg.port();
    let shown = settings.describe();
    let mut retry = Retry::new(cfg.backoff_min.0, cfg.backoff_max.0);
    let mut reader = Reader {
        cfg: &cfg,
        framed: Framed::new(
            Intake::new(&router, idx, stats.clone(), Origin::Port),
            cfg.max_frame,
            delimiter(&cfg),
            decoder(&cfg),
        ),
    };
    reader.framed.intake.set_from(shown.clone());
    let mut last_failure: Option<String> = None;
    loop {
        match port::open(&settings) {
            Ok(mut opened) => {
                last_failure = None;
                retry.up();
                let node = opened.node_path.display().to_string();
                tracing::info!(source = %cfg.id, port = %shown, device = %node, baud = cfg.baud, "serial port open");
                reader.framed.intake.set_from(node.clone());
                stats.set_healthy(true);
                stats.connections.store(1, Relaxed);
                stats.connects_total.fetch_add(1, Relaxed);
                let why = reader.session(&mut opened).await?;
                drop(opened);
                // Reason and counters first: whoever sees the source unhealthy sees why.
                stats.set_error(format!("{shown} ({node}) lost: {why}"));
                reader.framed.disconnected();
                stats.connections.store(0, Relaxed);
                stats.set_healthy(false);
                tracing::warn!(source = %cfg.id, port = %shown, device = %node, reason = %why, "serial port lost; reopening");
                if reader.framed.take_received() {
                    retry.healthy();
                }
            }
            Err(e) => {
                let msg = e.to_string();
                stats.set_healthy(false);
                if last_failure.as_deref() != Some(msg.as_str()) {
                    tracing::warn!(source = %cfg.id, port = %shown, error = %msg, "cannot open serial port; retrying with backoff");
                    stats.set_error(msg.clone());
                    last_failure = Some(msg);
                }
            }
        }
        let delay = retry.failed();
        tracing::debug!(source = %cfg.id, port = %shown, ?delay, "reopening after backoff");
        tokio::time::sleep(delay).await;
    }
}

/// Per-source reading state that outlives one open port.
struct Reader<'a> {
    cfg: &'a SerialSource,
    framed: Framed,
}

impl Reader<'_> {
    /// Reads one open port until it goes away; returns why.
    async fn session(&mut self, opened: &mut port::Opened) -> Result<String, Closed> {
        let cfg = self.cfg;
        if let Some(init) = &cfg.init {
            if let Err(why) = write(&mut opened.stream, init.as_bytes()).await {
                return Ok(format!("writing the init string: {why}"));
            }
        }
        let mut poll = cfg.poll_interval.map(|i| {
            let mut t = tokio::time::interval(i.0);
            t.set_missed_tick_behavior(MissedTickBehavior::Delay);
            t
        });
        let mut check = tokio::time::interval_at(Instant::now() + NODE_CHECK, NODE_CHECK);
        let gap = cfg.frame_gap.map(|g| g.0);
        let mut last_rx = Instant::now();
        let mut buf = vec![0u8; READ_BUF];
        loop {
            // Silence-gap framing: a pending frame ends when the line has been quiet long enough.
            let gap_end = gap
                .filter(|_| self.framed.pending() > 0)
                .map(|g| last_rx + g);
            tokio::select! {
                r = opened.stream.read(&mut buf) => {
                    let n = match r {
                        Ok(0) => return Ok("end of file (device unplugged or closed)".into()),
                        Ok(n) => n,
                        Err(e) => return Ok(e.to_string()),
                    };
                    last_rx = Instant::now();
                    self.framed.feed(&buf[..n]);
                    self.framed.flush().await?;
                }
                _ = sleep_until(gap_end.unwrap_or_else(Instant::now)), if gap_end.is_some() => {
                    self.framed.end_frame();
                    self.framed.flush().await?;
                }
                _ = tick(&mut poll) => {
                    let text = cfg.poll.as_deref().unwrap_or_default();
                    if let Err(why) = write(&mut opened.stream, text.as_bytes()).await {
                        return Ok(format!("writing the poll string: {why}"));
                    }
                }
                _ = check.tick() => {
                    if let Some(why) = opened.gone(cfg.path.as_deref()) {
                        return Ok(why);
                    }
                }
            }
        }
    }
}

/// The next tick of an optional interval; never, without one.
async fn tick(t: &mut Option<tokio::time::Interval>) {
    match t {
        Some(t) => {
            t.tick().await;
        }
        None => std::future::pending().await,
    }
}

async fn write(port: &mut tokio_serial::SerialStream, bytes: &[u8]) -> Result<(), String> {
    match tokio::time::timeout(WRITE_TIMEOUT, async {
        port.write_all(bytes).await?;
        port.flush().await
    })
    .await
    {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!(
            "timed out after {WRITE_TIMEOUT:?} (flow control holding the line?)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(extra: &str) -> SerialSource {
        let text = format!("node_id = \"n\"\n[[source]]\nid = \"s\"\nkind = \"serial\"\npath = \"/dev/x\"\n{extra}");
        let r = crate::config::parse_str(&text, std::path::Path::new("t.toml")).expect("valid");
        match &r.config.sources[0] {
            crate::config::SourceConfig::Serial(s) => s.clone(),
            _ => panic!("not serial"),
        }
    }

    #[test]
    fn delimiter_follows_the_config() {
        assert_eq!(delimiter(&cfg("")), Delimiter::Newline);
        assert_eq!(delimiter(&cfg("delimiter = \"\\n\"")), Delimiter::Newline);
        assert_eq!(
            delimiter(&cfg("delimiter = \"\\r\\n\"")),
            Delimiter::Newline
        );
        assert_eq!(
            delimiter(&cfg("delimiter = \"\\r\"")),
            Delimiter::Bytes(b"\r".to_vec())
        );
        assert_eq!(
            delimiter(&cfg("delimiter = \"END\"")),
            Delimiter::Bytes(b"END".to_vec())
        );
        assert_eq!(delimiter(&cfg("frame_gap = \"20ms\"")), Delimiter::None);
    }
}
