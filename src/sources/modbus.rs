//! Modbus source: polls the configured slaves of one bus (RTU on a serial port, or Modbus TCP)
//! on their intervals, batching adjacent registers, and routes the scaled values as samples.
//!
//! Slaves share the bus, so they are polled one after another, each request under `timeout`.
//! A slave that does not answer costs one timeout, then is skipped until its backoff expires; the
//! transport is reset after every timeout or garbled answer (a late reply would otherwise be taken
//! for the next request's). An exception answer backs off only the read that caused it.

pub mod plan;
pub mod schedule;

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::time::{sleep_until, Instant};
use tokio_modbus::client::{Context, Reader};
use tokio_modbus::prelude::SlaveContext;
use tokio_modbus::Slave;

use super::backoff::Retry;
use super::intake::{Intake, Origin};
use super::route::{Router, RoutingSink};
use super::serial::port;
use super::SourceError;
use crate::config::{ModbusDevice, ModbusSource, RegisterKind};
use crate::model::now_ms;
use crate::status::{ErrorView, SourceStats, UnitView};
use plan::Read;
use schedule::{DeviceSched, ReadSched};

/// After opening an RTU port, bytes are discarded until the line is quiet this long...
const DRAIN_QUIET: Duration = Duration::from_millis(20);
/// ...but for at most this long.
const DRAIN_MAX: Duration = Duration::from_millis(200);
/// Longest a TCP connect may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// One slave: its reads and their state.
struct Device {
    cfg: ModbusDevice,
    reads: Vec<Read>,
    read_sched: Vec<ReadSched>,
    sched: DeviceSched,
    view: UnitView,
}

/// What polling one device did to the bus.
enum Outcome {
    /// The device answered (data or exceptions).
    Answered,
    /// No or garbled answer: the device backs off and the transport must be reset.
    Failed,
    /// The transport itself broke (connection closed, adapter gone).
    TransportDown(String),
}

/// The transport: connects, resets, and backs off while it cannot connect.
struct Link {
    ctx: Option<Context>,
    retry: Retry,
    retry_at: Instant,
    last_failure: Option<String>,
}

pub async fn run(
    cfg: Arc<ModbusSource>,
    idx: u16,
    router: Router,
    stats: Arc<SourceStats>,
) -> Result<(), SourceError> {
    let start = Instant::now();
    let mut devices: Vec<Device> = cfg
        .devices
        .iter()
        .map(|d| {
            let interval = d.interval.unwrap_or(cfg.interval).0;
            let reads = plan::plan(&d.points);
            Device {
                read_sched: reads
                    .iter()
                    .map(|_| ReadSched::new(cfg.backoff_min.0, cfg.backoff_max.0))
                    .collect(),
                reads,
                sched: DeviceSched::new(interval, cfg.backoff_min.0, cfg.backoff_max.0, start),
                view: UnitView {
                    device: d.id.clone(),
                    unit: d.unit,
                    ..UnitView::default()
                },
                cfg: d.clone(),
            }
        })
        .collect();
    for d in &devices {
        let plan: Vec<String> = d.reads.iter().map(Read::describe).collect();
        tracing::debug!(source = %cfg.id, device = %d.cfg.id, unit = d.cfg.unit, reads = ?plan, "modbus poll plan");
    }
    let mut link = Link {
        ctx: None,
        retry: Retry::new(cfg.backoff_min.0, cfg.backoff_max.0),
        retry_at: start,
        last_failure: None,
    };
    let mut intake = Intake::new(&router, idx, stats.clone(), Origin::Port);
    publish(&stats, &devices, &link);
    loop {
        let due = devices
            .iter()
            .map(|d| d.sched.next_due())
            .min()
            .unwrap_or_else(|| Instant::now() + cfg.interval.0);
        let wake = if link.ctx.is_some() {
            due
        } else {
            due.max(link.retry_at)
        };
        sleep_until(wake).await;
        for dev in devices.iter_mut() {
            if !dev.sched.due(Instant::now()) {
                continue;
            }
            let Some(ctx) = link.get(&cfg, &stats).await else {
                break;
            };
            match poll_device(&cfg, dev, ctx, &mut intake, &stats).await {
                Outcome::Answered => link.retry.healthy(),
                Outcome::Failed => link.reset(),
                Outcome::TransportDown(why) => link.down(&cfg, &stats, why),
            }
            // Hand each device's samples on at once: a slow slave later on the bus must not
            // hold them back.
            intake.flush().await?;
        }
        publish(&stats, &devices, &link);
    }
}

/// Shows per-device health; the source is healthy while connected and every device answers.
fn publish(stats: &SourceStats, devices: &[Device], link: &Link) {
    let views: Vec<UnitView> = devices.iter().map(|d| d.view.clone()).collect();
    stats.set_units(&views);
    stats.set_healthy(link.ctx.is_some() && devices.iter().all(|d| !d.sched.failing()));
}

impl Link {
    /// The connected context, connecting first when due; `None` while the bus is down.
    async fn get(&mut self, cfg: &ModbusSource, stats: &SourceStats) -> Option<&mut Context> {
        if self.ctx.is_none() {
            if Instant::now() < self.retry_at {
                return None;
            }
            match connect(cfg).await {
                Ok((ctx, what)) => {
                    if self.last_failure.take().is_some() || stats.connects_total.load(Relaxed) == 0
                    {
                        tracing::info!(source = %cfg.id, bus = %what, "modbus bus connected");
                    } else {
                        tracing::debug!(source = %cfg.id, bus = %what, "modbus transport reset");
                    }
                    stats.connections.store(1, Relaxed);
                    stats.connects_total.fetch_add(1, Relaxed);
                    self.retry.up();
                    self.ctx = Some(ctx);
                }
                Err(why) => {
                    self.down(cfg, stats, why);
                    return None;
                }
            }
        }
        self.ctx.as_mut()
    }

    /// Drops the transport after a timeout or garbled answer; the next request reconnects at once.
    fn reset(&mut self) {
        self.ctx = None;
        self.retry_at = Instant::now();
    }

    /// The transport failed: reconnect after backoff.
    fn down(&mut self, cfg: &ModbusSource, stats: &SourceStats, why: String) {
        self.ctx = None;
        let delay = self.retry.failed();
        self.retry_at = Instant::now() + delay;
        let first = self.last_failure.as_deref() != Some(why.as_str());
        if first {
            stats.set_error(why.clone());
        }
        stats.connections.store(0, Relaxed);
        stats.set_healthy(false);
        if first {
            tracing::warn!(source = %cfg.id, error = %why, retry_in = ?delay, "modbus bus down; retrying with backoff");
        } else {
            tracing::debug!(source = %cfg.id, error = %why, retry_in = ?delay, "modbus bus still down");
        }
        self.last_failure = Some(why);
    }
}

/// Opens the transport: the serial port (RTU) or a TCP connection. Returns what it reached.
async fn connect(cfg: &ModbusSource) -> Result<(Context, String), String> {
    if let Some(settings) = cfg.rtu_port() {
        let mut opened = port::open(&settings).map_err(|e| e.to_string())?;
        drain(&mut opened.stream).await;
        let what = format!(
            "rtu {} ({})",
            settings.describe(),
            opened.node_path.display()
        );
        Ok((tokio_modbus::client::rtu::attach(opened.stream), what))
    } else {
        let target = cfg.connect.as_deref().unwrap_or_default();
        let stream =
            match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(target))
                .await
            {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => return Err(format!("connect to {target}: {e}")),
                Err(_) => return Err(format!("connect to {target}: timed out")),
            };
        let _ = stream.set_nodelay(true);
        Ok((
            tokio_modbus::client::tcp::attach(stream),
            format!("tcp {target}"),
        ))
    }
}

/// Discards what arrives on a freshly opened port until it has been quiet for a moment: a
/// late answer to a request of the previous connection must not be read as the next answer.
async fn drain(stream: &mut tokio_serial::SerialStream) {
    let end = Instant::now() + DRAIN_MAX;
    let mut buf = [0u8; 256];
    while Instant::now() < end {
        match tokio::time::timeout(DRAIN_QUIET, stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => continue,
            _ => break,
        }
    }
}

/// A read's answer.
enum Data {
    Words(Vec<u16>),
    Bits(Vec<bool>),
}

async fn request(ctx: &mut Context, read: &Read) -> tokio_modbus::Result<Data> {
    let (a, n) = (read.start, read.count);
    Ok(match read.kind {
        RegisterKind::Holding => ctx.read_holding_registers(a, n).await?.map(Data::Words),
        RegisterKind::Input => ctx.read_input_registers(a, n).await?.map(Data::Words),
        RegisterKind::Coil => ctx.read_coils(a, n).await?.map(Data::Bits),
        RegisterKind::Discrete => ctx.read_discrete_inputs(a, n).await?.map(Data::Bits),
    })
}

/// Whether an error means the transport is gone (rather than one garbled answer).
fn transport_gone(e: &tokio_modbus::Error) -> bool {
    match e {
        tokio_modbus::Error::Transport(io) => io.kind() != std::io::ErrorKind::InvalidData,
        tokio_modbus::Error::Protocol(_) => false,
    }
}

/// Polls every read of one device that is not backing off.
async fn poll_device(
    cfg: &ModbusSource,
    dev: &mut Device,
    ctx: &mut Context,
    intake: &mut Intake,
    stats: &SourceStats,
) -> Outcome {
    ctx.set_slave(Slave(dev.cfg.unit));
    for r in 0..dev.reads.len() {
        if dev.read_sched[r].skipping(Instant::now()) {
            continue;
        }
        let read = &dev.reads[r];
        let result = tokio::time::timeout(cfg.timeout.0, request(ctx, read)).await;
        let now = Instant::now();
        match result {
            Ok(Ok(Ok(data))) => {
                if dev.read_sched[r].succeeded() {
                    tracing::info!(source = %cfg.id, device = %dev.cfg.id, read = %read.describe(), "modbus read answers again");
                }
                intake.tally(true);
                dev.view.reads_ok += 1;
                intake.begin();
                emit(cfg, dev, r, &data, intake.sink());
            }
            Ok(Ok(Err(exception))) => {
                intake.tally(false);
                dev.view.exceptions += 1;
                let delay = dev.read_sched[r].failed(now, dev.sched.interval());
                let msg = format!(
                    "unit {} answered {} with exception: {exception}",
                    dev.cfg.unit,
                    read.describe()
                );
                if dev.read_sched[r].failures() == 1 {
                    tracing::warn!(source = %cfg.id, device = %dev.cfg.id, error = %msg, retry_in = ?delay, "modbus exception; backing off this read");
                }
                note_error(&mut dev.view, msg);
            }
            Ok(Err(e)) if transport_gone(&e) => {
                return Outcome::TransportDown(format!("{e} (polling unit {})", dev.cfg.unit));
            }
            Ok(Err(e)) => {
                intake.tally(false);
                dev.view.errors += 1;
                fail_device(
                    cfg,
                    dev,
                    stats,
                    now,
                    format!(
                        "unit {} gave a bad answer to {}: {e}",
                        dev.cfg.unit,
                        read.describe()
                    ),
                );
                return Outcome::Failed;
            }
            Err(_) => {
                intake.tally(false);
                dev.view.timeouts += 1;
                fail_device(
                    cfg,
                    dev,
                    stats,
                    now,
                    format!(
                        "unit {} did not answer {} within {}",
                        dev.cfg.unit,
                        read.describe(),
                        cfg.timeout
                    ),
                );
                return Outcome::Failed;
            }
        }
    }
    if dev.sched.succeeded(Instant::now()) {
        tracing::info!(source = %cfg.id, device = %dev.cfg.id, unit = dev.cfg.unit, "modbus device answers again");
    }
    dev.view.healthy = true;
    dev.view.retry_at = None;
    Outcome::Answered
}

fn fail_device(
    cfg: &ModbusSource,
    dev: &mut Device,
    stats: &SourceStats,
    now: Instant,
    msg: String,
) {
    let first = !dev.sched.failing();
    let delay = dev.sched.failed(now);
    if first {
        stats.set_error(format!("{}: {msg}", dev.cfg.id));
        tracing::warn!(source = %cfg.id, device = %dev.cfg.id, error = %msg, retry_in = ?delay, "modbus device failing; backing off");
    } else {
        tracing::debug!(source = %cfg.id, device = %dev.cfg.id, error = %msg, retry_in = ?delay, "modbus device still failing");
    }
    dev.view.healthy = false;
    dev.view.retry_at = Some(now_ms() + delay.as_millis() as i64);
    note_error(&mut dev.view, msg);
}

fn note_error(view: &mut UnitView, message: String) {
    view.last_error = Some(ErrorView {
        at: now_ms(),
        message,
    });
}

/// Pushes the samples of one answered read.
fn emit(cfg: &ModbusSource, dev: &mut Device, r: usize, data: &Data, sink: &mut RoutingSink) {
    let Device {
        cfg: dcfg,
        reads,
        view,
        ..
    } = dev;
    let read = &reads[r];
    for slot in &read.slots {
        let point = &dcfg.points[slot.point];
        let value = match data {
            Data::Words(w) => plan::value_from_registers(point, slot.offset, w),
            Data::Bits(b) => plan::value_from_bits(point, slot.offset, b),
        };
        match value {
            Ok(v) => crate::model::SampleSink::push(sink, &dcfg.id, &point.metric, None, v),
            Err(e) => {
                view.errors += 1;
                let msg = format!(
                    "unit {} {} ({}): {e}",
                    dcfg.unit,
                    point.metric,
                    read.describe()
                );
                tracing::debug!(source = %cfg.id, device = %dcfg.id, error = %msg, "modbus value skipped");
                note_error(view, msg);
            }
        }
    }
}
