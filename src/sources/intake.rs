//! The one ingest path every source uses: decoded samples go to the `RoutingSink`, frames are
//! counted, and bad ones logged (rate-limited) with source, peer/port/topic and reason.
//!
//! `Intake` takes whole messages (MQTT payloads); `Framed` puts a framer and a decoder in front
//! of it for byte streams (TCP connections, serial ports). Counters are committed once per read
//! buffer in `flush`, not per frame, and nothing here allocates per sample.

use std::fmt::Display;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use super::route::{Closed, Router, RoutingSink};
use crate::decode::framing::{Delimiter, LineFramer};
use crate::decode::{self, DecodeError, Format, Settings, TsUnit};
use crate::model::{now_ms, SampleSink};
use crate::status::{RateLimitedLog, SourceStats};

/// Bad frames logged per `LOG_PERIOD` before the rest are only counted.
const LOG_BURST: u32 = 5;
const LOG_PERIOD: Duration = Duration::from_secs(10);

/// What the reject log names besides the source: where the frame came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A TCP peer (`peer = 10.0.0.5:4711`).
    Peer,
    /// A serial port or Modbus bus (`port = /dev/ttyUSB0`).
    Port,
    /// An MQTT topic (`topic = sensors/a/temp`); given with each message.
    Topic,
}

/// Samples, counters and the reject log of one source (or one TCP connection).
pub struct Intake {
    stats: Arc<SourceStats>,
    sink: RoutingSink,
    log: RateLimitedLog,
    origin: Origin,
    /// The peer or port currently read (unused for topics, which come with each message).
    from: String,
    accepted: u64,
    rejected: u64,
}

impl Intake {
    pub fn new(router: &Router, idx: u16, stats: Arc<SourceStats>, origin: Origin) -> Self {
        Intake {
            stats,
            sink: router.sink(idx),
            log: RateLimitedLog::new(LOG_BURST, LOG_PERIOD),
            origin,
            from: String::new(),
            accepted: 0,
            rejected: 0,
        }
    }

    /// The peer or port read from now on (once per connection, not per frame).
    pub fn set_from(&mut self, from: impl Into<String>) {
        self.from = from.into();
    }

    /// Start of a read: samples without a timestamp of their own get this receive time.
    pub fn begin(&mut self) {
        self.sink.set_default_ts(now_ms());
    }

    /// Where decoders push their samples.
    pub fn sink(&mut self) -> &mut RoutingSink {
        &mut self.sink
    }

    /// Counts a decode result: samples accepted, nothing (a blank frame, a CSV header), or a
    /// reject logged with `at` (the topic; `None` names the current peer or port).
    pub fn count<E: Display>(
        &mut self,
        result: Result<usize, E>,
        at: Option<&str>,
        frame: Option<&[u8]>,
    ) {
        match result {
            Ok(0) => {}
            Ok(_) => self.accepted += 1,
            Err(e) => self.reject(at, &e, frame),
        }
    }

    /// Frames accepted since the last flush (a connection that delivers none is only noise).
    pub fn accepted_pending(&self) -> u64 {
        self.accepted
    }

    /// Counts one answer of a polled device (Modbus), which logs its failures per device itself.
    pub fn tally(&mut self, ok: bool) {
        if ok {
            self.accepted += 1;
        } else {
            self.rejected += 1;
        }
    }

    /// Counts one bad frame and logs it unless the log is over its rate. Cold: kept out of the
    /// per-frame loop so the good path stays small.
    #[cold]
    #[inline(never)]
    pub fn reject(&mut self, at: Option<&str>, reason: &dyn Display, frame: Option<&[u8]>) {
        self.rejected += 1;
        let (allow, suppressed) = self.log.allow();
        let at = at.unwrap_or(&self.from);
        let id = &self.stats.id;
        if let Some(n) = suppressed {
            match self.origin {
                Origin::Peer => {
                    tracing::warn!(source = %id, peer = %at, suppressed = n, "more bad frames were not logged")
                }
                Origin::Port => {
                    tracing::warn!(source = %id, port = %at, suppressed = n, "more bad frames were not logged")
                }
                Origin::Topic => {
                    tracing::warn!(source = %id, topic = %at, suppressed = n, "more bad messages were not logged")
                }
            }
        }
        if !allow {
            return;
        }
        // On top of this connection's limit, one for all sources and connections together.
        let (allow, suppressed) = crate::status::BAD_FRAME_LOG.allow();
        if let Some(n) = suppressed {
            tracing::warn!(
                suppressed = n,
                "more bad frames (all sources and connections) were not logged"
            );
        }
        if !allow {
            return;
        }
        let frame = Excerpt(frame.unwrap_or_default());
        match self.origin {
            Origin::Peer => {
                tracing::warn!(source = %id, peer = %at, %reason, %frame, "bad frame skipped")
            }
            Origin::Port => {
                tracing::warn!(source = %id, port = %at, %reason, %frame, "bad frame skipped")
            }
            Origin::Topic => {
                tracing::warn!(source = %id, topic = %at, %reason, payload = %frame, "bad message skipped")
            }
        }
    }

    /// Adds the frame and sample counts to the source's counters.
    fn commit(&mut self) {
        let s = &self.stats;
        s.frames_accepted
            .fetch_add(std::mem::take(&mut self.accepted), Relaxed);
        s.frames_rejected
            .fetch_add(std::mem::take(&mut self.rejected), Relaxed);
        s.samples.fetch_add(self.sink.take_pushed(), Relaxed);
        let (bad, restamped) = self.sink.take_bad_ts();
        if bad + restamped > 0 {
            self.bad_ts(bad, restamped);
        }
    }

    /// Counts and logs (rate-limited over all sources) samples with out-of-bounds timestamps.
    #[cold]
    #[inline(never)]
    fn bad_ts(&mut self, bad: u64, restamped: u64) {
        let s = &self.stats;
        s.rejected_ts.fetch_add(bad, Relaxed);
        s.restamped_ts.fetch_add(restamped, Relaxed);
        let (allow, suppressed) = crate::status::BAD_TS_LOG.allow();
        if let Some(n) = suppressed {
            tracing::warn!(
                suppressed = n,
                "more out-of-bounds timestamps were not logged"
            );
        }
        if allow {
            tracing::warn!(
                source = %s.id,
                from = %self.from,
                rejected = bad,
                restamped,
                "samples with a timestamp too far in the future or before the build (see [input])"
            );
        }
    }

    /// Commits the counters and hands the batches to the shards (waiting while they are full).
    pub async fn flush(&mut self) -> Result<(), Closed> {
        self.commit();
        self.sink.flush().await
    }
}

/// How a byte-stream source turns one frame into samples.
#[derive(Debug, Clone)]
pub enum Decoder {
    /// One of the frame formats (`json`, `csv`, `kv`, `influx`), with a default device, the
    /// timestamp unit and the Influx name mapping.
    Format { format: Format, settings: Settings },
    /// Bare values mapped to configured metric names (serial `format = "columns"`).
    Columns {
        columns: Vec<String>,
        device: Option<String>,
        ts_unit: TsUnit,
    },
}

impl Decoder {
    /// A frame format with default settings.
    pub fn format(format: Format) -> Self {
        Decoder::Format {
            format,
            settings: Settings::default(),
        }
    }

    pub fn decode(&self, frame: &[u8], out: &mut impl SampleSink) -> Result<usize, DecodeError> {
        match self {
            Decoder::Format { format, settings } => {
                decode::decode(*format, frame, &settings.opts(), out)
            }
            Decoder::Columns {
                columns,
                device,
                ts_unit,
            } => {
                let text = std::str::from_utf8(frame).map_err(|_| DecodeError::NotUtf8)?;
                decode::columns::decode(text, columns, device.as_deref(), *ts_unit, out)
            }
        }
    }
}

/// An `Intake` behind a framer: for TCP connections and serial ports.
pub struct Framed {
    pub intake: Intake,
    framer: LineFramer,
    decoder: Decoder,
    /// Whether any byte arrived since the last `take_received` (the link did work).
    received: bool,
}

impl Framed {
    pub fn new(intake: Intake, max_frame: usize, delimiter: Delimiter, decoder: Decoder) -> Self {
        Framed {
            intake,
            framer: LineFramer::with_delimiter(max_frame, delimiter),
            decoder,
            received: false,
        }
    }

    /// Bytes of a frame still waiting for its end.
    pub fn pending(&self) -> usize {
        self.framer.pending()
    }

    /// Whether bytes arrived since the last call (for `Retry::healthy`).
    pub fn take_received(&mut self) -> bool {
        std::mem::take(&mut self.received)
    }

    /// Frames, decodes and counts one read buffer.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.received |= !bytes.is_empty();
        let Framed {
            intake,
            framer,
            decoder,
            ..
        } = self;
        intake.begin();
        framer.feed(bytes, |frame| match frame {
            Ok(f) => {
                let r = decoder.decode(f, &mut intake.sink);
                intake.count(r, None, Some(f));
            }
            Err(e) => intake.reject(None, &e, None),
        });
    }

    /// Ends the pending frame (silence-gap framing) and decodes it.
    pub fn end_frame(&mut self) {
        let Framed {
            intake,
            framer,
            decoder,
            ..
        } = self;
        intake.begin();
        framer.end_frame(|frame| match frame {
            Ok(f) => {
                let r = decoder.decode(f, &mut intake.sink);
                intake.count(r, None, Some(f));
            }
            Err(e) => intake.reject(None, &e, None),
        });
    }

    /// The stream ended: a partial frame is dropped, counted as rejected and logged.
    pub fn disconnected(&mut self) {
        if let Some(len) = self.framer.reset() {
            self.intake.rejected += 1;
            let i = &self.intake;
            tracing::warn!(source = %i.stats.id, from = %i.from, bytes = len, "partial frame at disconnect dropped");
        }
        self.intake.commit();
    }

    pub async fn flush(&mut self) -> Result<(), Closed> {
        self.intake.flush().await
    }
}

/// The start of a frame, printable, for logs; formatted only when a line is written.
pub struct Excerpt<'a>(pub &'a [u8]);

impl Display for Excerpt<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const MAX: usize = 80;
        let frame = self.0;
        let cut = &frame[..frame.len().min(MAX)];
        for c in String::from_utf8_lossy(cut).escape_debug() {
            std::fmt::Write::write_char(f, c)?;
        }
        if frame.len() > MAX {
            f.write_str("…")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tokio::sync::mpsc;

    use super::*;
    use crate::sources::route::Ingest;

    /// Log lines written while `f` runs.
    fn logged(f: impl FnOnce()) -> String {
        #[derive(Clone, Default)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0
                    .lock()
                    .map_err(|_| std::io::ErrorKind::Other)?
                    .extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let w = buf.clone();
        let sub = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || w.clone())
            .finish();
        tracing::subscriber::with_default(sub, f);
        let bytes = buf.0.lock().expect("log buffer").clone();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    fn setup(origin: Origin) -> (Intake, Arc<SourceStats>, mpsc::Receiver<Ingest>) {
        let (tx, rx) = mpsc::channel(8);
        let stats = Arc::new(SourceStats::new("src-a", "tcp"));
        let intake = Intake::new(&Router::new(vec![tx]), 2, stats.clone(), origin);
        (intake, stats, rx)
    }

    fn csv() -> Decoder {
        Decoder::format(Format::Csv)
    }

    #[tokio::test]
    async fn a_byte_stream_is_framed_decoded_counted_and_routed() {
        let (intake, stats, mut rx) = setup(Origin::Peer);
        let mut f = Framed::new(intake, 64, Delimiter::Newline, csv());
        f.intake.set_from("10.0.0.5:4711");
        // Two good frames, a CSV header (ignored: neither accepted nor rejected), a bad frame,
        // one too long, and a partial frame left at disconnect.
        let long = format!("d,m,{}\n", "1".repeat(80));
        let input = format!("device,metric,value\nd,m,1\nd,m,x\n{long}d,m,2\nd,m,");
        let log = logged(|| f.feed(input.as_bytes()));
        assert!(f.take_received());
        f.flush().await.expect("flush");
        assert_eq!(stats.frames_accepted.load(Relaxed), 2);
        assert_eq!(stats.frames_rejected.load(Relaxed), 2);
        assert_eq!(stats.samples.load(Relaxed), 2);
        let got = rx.recv().await.expect("batch");
        assert_eq!(got.source, 2);
        let vals: Vec<f64> = got.batch.iter().map(|s| s.value).collect();
        assert_eq!(vals, [1.0, 2.0]);
        // Every reject line names the source, the peer, the reason and the frame.
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("bad frame skipped"))
            .collect();
        assert_eq!(lines.len(), 2, "{log}");
        for l in &lines {
            assert!(
                l.contains("source=src-a") && l.contains("peer=10.0.0.5:4711"),
                "{l}"
            );
        }
        assert!(
            lines[0].contains("reason=") && lines[0].contains("frame=d,m,x"),
            "{log}"
        );
        assert!(lines[1].contains("longer than 64 bytes"), "{log}");
        let log = logged(|| f.disconnected());
        assert_eq!(
            stats.frames_rejected.load(Relaxed),
            3,
            "the partial frame is counted"
        );
        assert!(
            log.contains("partial frame at disconnect dropped") && log.contains("10.0.0.5:4711"),
            "{log}"
        );
    }

    #[test]
    fn a_serial_reject_names_the_port() {
        // Drift fixed: the serial copy logged bad frames without saying which port they came from.
        let (intake, _stats, _rx) = setup(Origin::Port);
        let mut f = Framed::new(
            intake,
            64,
            Delimiter::Newline,
            Decoder::Columns {
                columns: vec!["t".into(), "h".into()],
                device: Some("probe".into()),
                ts_unit: TsUnit::Auto,
            },
        );
        f.intake.set_from("/dev/ttyUSB0");
        let log = logged(|| f.feed(b"1 2 3\n"));
        assert!(
            log.contains("bad frame skipped")
                && log.contains("source=src-a")
                && log.contains("port=/dev/ttyUSB0")
                && log.contains("expected 2 fields"),
            "{log}"
        );
    }

    #[tokio::test]
    async fn messages_name_their_topic_and_a_message_without_samples_is_not_accepted() {
        let (mut intake, stats, _rx) = setup(Origin::Topic);
        let log = logged(|| {
            intake.begin();
            intake.count(Ok::<usize, DecodeError>(3), Some("a/t"), Some(b"x"));
            // Drift fixed: the MQTT copy counted a message that gave no sample as accepted.
            intake.count(Ok::<usize, DecodeError>(0), Some("a/t"), Some(b""));
            intake.count(Err(DecodeError::NoValues), Some("b/t"), Some(b"{}"));
        });
        intake.flush().await.expect("flush");
        assert_eq!(stats.frames_accepted.load(Relaxed), 1);
        assert_eq!(stats.frames_rejected.load(Relaxed), 1);
        assert!(
            log.contains("bad message skipped")
                && log.contains("source=src-a")
                && log.contains("topic=b/t")
                && log.contains("payload={}"),
            "{log}"
        );
    }

    #[test]
    fn the_reject_log_is_rate_limited_but_every_reject_is_counted() {
        let (mut intake, _stats, _rx) = setup(Origin::Peer);
        let log = logged(|| {
            for _ in 0..50 {
                intake.reject(None, &"bad", Some(b"zz"));
            }
        });
        assert_eq!(
            log.matches("bad frame skipped").count(),
            LOG_BURST as usize,
            "{log}"
        );
        assert_eq!(intake.rejected, 50);
    }

    #[test]
    fn excerpts_are_short_and_printable() {
        assert_eq!(Excerpt(b"a\tb").to_string(), "a\\tb");
        let long = Excerpt(&[b'x'; 100]).to_string();
        assert!(long.ends_with('…') && long.chars().count() == 81, "{long}");
    }
}
