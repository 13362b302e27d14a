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

use super::backoff::Backoff;
use super::route::{Closed, Router, RoutingSink};
use super::tcp::excerpt;
use super::SourceError;
use crate::config::{SerialFormat, SerialSource};
use crate::decode::framing::{Delimiter, FrameError, LineFramer};
use crate::decode::{self, DecodeError};
use crate::model::now_ms;
use crate::status::{RateLimitedLog, SourceStats};

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

/// Decodes one frame with the source's format.
fn decode_frame(
    cfg: &SerialSource,
    frame: &[u8],
    sink: &mut RoutingSink,
) -> Result<usize, DecodeError> {
    match cfg.format {
        SerialFormat::Frame(f) => decode::decode(f, frame, cfg.device.as_deref(), sink),
        SerialFormat::Columns => {
            let text = std::str::from_utf8(frame).map_err(|_| DecodeError::NotUtf8)?;
            decode::columns::decode(
                text,
                cfg.columns.as_deref().unwrap_or_default(),
                cfg.device.as_deref(),
                sink,
            )
        }
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
    let mut backoff = Backoff::new(cfg.backoff_min.0, cfg.backoff_max.0);
    let mut reader = Reader {
        cfg: &cfg,
        framer: LineFramer::with_delimiter(cfg.max_frame, delimiter(&cfg)),
        sink: router.sink(idx),
        stats: &stats,
        log: RateLimitedLog::new(5, Duration::from_secs(10)),
    };
    let mut last_failure: Option<String> = None;
    loop {
        match port::open(&settings) {
            Ok(mut opened) => {
                last_failure = None;
                let node = opened.node_path.display().to_string();
                tracing::info!(source = %cfg.id, port = %shown, device = %node, baud = cfg.baud, "serial port open");
                stats.set_healthy(true);
                stats.connections.store(1, Relaxed);
                stats.connects_total.fetch_add(1, Relaxed);
                let (why, got_data) = reader.session(&mut opened).await?;
                drop(opened);
                // Reason and counters first: whoever sees the source unhealthy sees why.
                stats.set_error(format!("{shown} ({node}) lost: {why}"));
                if let Some(len) = reader.framer.reset() {
                    stats.frames_rejected.fetch_add(1, Relaxed);
                    tracing::warn!(source = %cfg.id, device = %node, bytes = len, "partial frame at disconnect dropped");
                }
                stats.connections.store(0, Relaxed);
                stats.set_healthy(false);
                tracing::warn!(source = %cfg.id, port = %shown, device = %node, reason = %why, "serial port lost; reopening");
                if got_data {
                    backoff.reset();
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
        let delay = backoff.next_delay();
        tracing::debug!(source = %cfg.id, port = %shown, ?delay, "reopening after backoff");
        tokio::time::sleep(delay).await;
    }
}

/// Per-source reading state that outlives one open port.
struct Reader<'a> {
    cfg: &'a SerialSource,
    framer: LineFramer,
    sink: RoutingSink,
    stats: &'a SourceStats,
    log: RateLimitedLog,
}

impl Reader<'_> {
    /// Reads one open port until it goes away; returns why, and whether any byte arrived.
    async fn session(&mut self, opened: &mut port::Opened) -> Result<(String, bool), Closed> {
        let cfg = self.cfg;
        let mut got_data = false;
        if let Some(init) = &cfg.init {
            if let Err(why) = write(&mut opened.stream, init.as_bytes()).await {
                return Ok((format!("writing the init string: {why}"), got_data));
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
                .filter(|_| self.framer.pending() > 0)
                .map(|g| last_rx + g);
            tokio::select! {
                r = opened.stream.read(&mut buf) => {
                    let n = match r {
                        Ok(0) => return Ok(("end of file (device unplugged or closed)".into(), got_data)),
                        Ok(n) => n,
                        Err(e) => return Ok((e.to_string(), got_data)),
                    };
                    got_data = true;
                    last_rx = Instant::now();
                    self.frames(|framer, on_frame| framer.feed(&buf[..n], on_frame));
                    self.flush().await?;
                }
                _ = sleep_until(gap_end.unwrap_or_else(Instant::now)), if gap_end.is_some() => {
                    self.frames(|framer, on_frame| framer.end_frame(on_frame));
                    self.flush().await?;
                }
                _ = tick(&mut poll) => {
                    let text = cfg.poll.as_deref().unwrap_or_default();
                    if let Err(why) = write(&mut opened.stream, text.as_bytes()).await {
                        return Ok((format!("writing the poll string: {why}"), got_data));
                    }
                }
                _ = check.tick() => {
                    if let Some(why) = opened.gone(cfg.path.as_deref()) {
                        return Ok((why, got_data));
                    }
                }
            }
        }
    }

    /// Runs the framer over new input, decoding each frame into the sink and counting.
    fn frames(
        &mut self,
        drive: impl FnOnce(&mut LineFramer, &mut dyn FnMut(Result<&[u8], FrameError>)),
    ) {
        let (cfg, sink, log) = (self.cfg, &mut self.sink, &mut self.log);
        sink.set_default_ts(now_ms());
        let (mut accepted, mut rejected) = (0u64, 0u64);
        drive(&mut self.framer, &mut |frame| {
            let reason = match frame {
                Ok(bytes) => match decode_frame(cfg, bytes, sink) {
                    Ok(0) => return,
                    Ok(_) => {
                        accepted += 1;
                        return;
                    }
                    Err(e) => format!("{e}; frame: {}", excerpt(bytes)),
                },
                Err(e) => e.to_string(),
            };
            rejected += 1;
            let (allow, suppressed) = log.allow();
            if let Some(n) = suppressed {
                tracing::warn!(source = %cfg.id, suppressed = n, "more bad frames were not logged");
            }
            if allow {
                tracing::warn!(source = %cfg.id, %reason, "bad frame skipped");
            }
        });
        self.stats.frames_accepted.fetch_add(accepted, Relaxed);
        self.stats.frames_rejected.fetch_add(rejected, Relaxed);
    }

    async fn flush(&mut self) -> Result<(), Closed> {
        self.stats
            .samples
            .fetch_add(self.sink.take_pushed(), Relaxed);
        self.sink.flush().await
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
