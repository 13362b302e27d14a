//! Config schema of the serial-port sources: `kind = "serial"` (line or gap framed sensors) and
//! `kind = "modbus"` (RTU on a serial port or Modbus TCP), with their semantic checks.
//! (Over 600 lines with its tests; the schema and checks are about 650.)

use std::fmt;

use serde::de::IntoDeserializer;
use serde::{Deserialize, Deserializer};

use super::load::Seg;
use super::validate::{at, check_name, fail, key};
use super::Dur;
use crate::decode::Format;

type VResult<T> = Result<T, (Vec<Seg>, String)>;

/// A USB serial adapter named by identity instead of path; resolved again at every open.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsbId {
    /// Vendor id, 4 hex digits as `lsusb` shows it, e.g. "0403".
    pub vid: String,
    /// Product id, 4 hex digits, e.g. "6001".
    pub pid: String,
    /// The adapter's serial number, when several identical adapters are plugged in.
    #[serde(default)]
    pub serial: Option<String>,
    /// USB interface number, for adapters with several ports (e.g. FT2232: 0 and 1).
    #[serde(default)]
    pub interface: Option<u8>,
}

impl fmt::Display for UsbId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "usb {}:{}", self.vid, self.pid)?;
        if let Some(s) = &self.serial {
            write!(f, " serial {s}")?;
        }
        if let Some(i) = self.interface {
            write!(f, " interface {i}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Parity {
    #[default]
    None,
    Even,
    Odd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum FlowControl {
    #[default]
    None,
    /// XON/XOFF.
    Software,
    /// RTS/CTS.
    Hardware,
}

/// Where and how to open a serial port (shared by serial and Modbus RTU sources).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortSettings {
    pub path: Option<String>,
    pub usb: Option<UsbId>,
    pub baud: u32,
    pub data_bits: u8,
    pub parity: Parity,
    pub stop_bits: u8,
    pub flow_control: FlowControl,
}

impl PortSettings {
    /// The port as configured, for logs: the path or the USB identity.
    pub fn describe(&self) -> String {
        match (&self.path, &self.usb) {
            (Some(p), _) => p.clone(),
            (None, Some(u)) => u.to_string(),
            (None, None) => "(no port)".into(),
        }
    }
}

/// Frame format of a serial source: one of the decoders, or bare values mapped to `columns`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SerialFormat {
    Frame(Format),
    Columns,
}

impl<'de> Deserialize<'de> for SerialFormat {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s == "columns" {
            return Ok(SerialFormat::Columns);
        }
        Format::deserialize(s.as_str().into_deserializer())
            .map(SerialFormat::Frame)
            .map_err(|e: serde::de::value::Error| {
                serde::de::Error::custom(format!("{e}, or `columns`"))
            })
    }
}

impl fmt::Display for SerialFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SerialFormat::Frame(x) => write!(f, "{x}"),
            SerialFormat::Columns => f.write_str("columns"),
        }
    }
}

fn default_baud() -> u32 {
    9600
}
fn default_data_bits() -> u8 {
    8
}
fn default_stop_bits() -> u8 {
    1
}
fn default_serial_format() -> SerialFormat {
    SerialFormat::Frame(Format::Json)
}
fn default_max_frame() -> usize {
    4096
}
fn default_serial_backoff_min() -> Dur {
    Dur::millis(200)
}
fn default_serial_backoff_max() -> Dur {
    Dur::secs(5)
}

/// A sensor on a serial port that sends frames by itself (or when polled).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SerialSource {
    pub id: String,
    /// Device path; `/dev/serial/by-id/...` survives renumbering.
    #[serde(default)]
    pub path: Option<String>,
    /// Or the adapter's USB identity.
    #[serde(default)]
    pub usb: Option<UsbId>,
    #[serde(default = "default_baud")]
    pub baud: u32,
    #[serde(default = "default_data_bits")]
    pub data_bits: u8,
    #[serde(default)]
    pub parity: Parity,
    #[serde(default = "default_stop_bits")]
    pub stop_bits: u8,
    #[serde(default)]
    pub flow_control: FlowControl,
    #[serde(default = "default_serial_format")]
    pub format: SerialFormat,
    /// `format = "columns"`: metric name of each field (`_` skips one, `ts` is the time).
    #[serde(default)]
    pub columns: Option<Vec<String>>,
    /// Unit of numeric timestamps (`auto` by magnitude).
    #[serde(default)]
    pub ts_unit: crate::decode::TsUnit,
    /// `format = "influx"`: the tag naming the device.
    #[serde(default)]
    pub device_tag: Option<String>,
    /// `format = "influx"`: how metric names are formed.
    #[serde(default)]
    pub influx_metric: crate::decode::influx::MetricName,
    /// Device id for frames that carry none (required for `columns`).
    #[serde(default)]
    pub device: Option<String>,
    /// End of a frame: default "\n" (a "\r" before it is stripped); any 1 to 16 bytes.
    #[serde(default)]
    pub delimiter: Option<String>,
    /// Instead of a delimiter: a frame ends after this much silence on the line.
    #[serde(default)]
    pub frame_gap: Option<Dur>,
    #[serde(default = "default_max_frame")]
    pub max_frame: usize,
    /// Sent once after every open (e.g. a command that starts streaming).
    #[serde(default)]
    pub init: Option<String>,
    /// Sent every `poll_interval`, for sensors that answer only when asked.
    #[serde(default)]
    pub poll: Option<String>,
    #[serde(default)]
    pub poll_interval: Option<Dur>,
    /// Reopen backoff after the port vanished or failed to open.
    #[serde(default = "default_serial_backoff_min")]
    pub backoff_min: Dur,
    #[serde(default = "default_serial_backoff_max")]
    pub backoff_max: Dur,
}

impl SerialSource {
    pub fn port(&self) -> PortSettings {
        PortSettings {
            path: self.path.clone(),
            usb: self.usb.clone(),
            baud: self.baud,
            data_bits: self.data_bits,
            parity: self.parity,
            stop_bits: self.stop_bits,
            flow_control: self.flow_control,
        }
    }
}

fn default_modbus_interval() -> Dur {
    Dur::secs(1)
}
fn default_modbus_timeout() -> Dur {
    Dur::millis(500)
}
fn default_modbus_backoff_min() -> Dur {
    Dur::secs(1)
}
fn default_modbus_backoff_max() -> Dur {
    Dur::secs(30)
}

/// A Modbus bus: RTU on a serial port (`path` or `usb`) or Modbus TCP (`connect`), and the
/// devices polled on it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModbusSource {
    pub id: String,
    /// RTU: serial device path.
    #[serde(default)]
    pub path: Option<String>,
    /// RTU: or the adapter's USB identity.
    #[serde(default)]
    pub usb: Option<UsbId>,
    #[serde(default = "default_baud")]
    pub baud: u32,
    #[serde(default = "default_data_bits")]
    pub data_bits: u8,
    #[serde(default)]
    pub parity: Parity,
    #[serde(default = "default_stop_bits")]
    pub stop_bits: u8,
    #[serde(default)]
    pub flow_control: FlowControl,
    /// Modbus TCP: `host:port` of the device or gateway.
    #[serde(default)]
    pub connect: Option<String>,
    /// Default poll interval of the devices.
    #[serde(default = "default_modbus_interval")]
    pub interval: Dur,
    /// How long one request may take before the slave counts as not answering.
    #[serde(default = "default_modbus_timeout")]
    pub timeout: Dur,
    /// Retry delay of a failing device (and of the transport), doubling up to `backoff_max`.
    #[serde(default = "default_modbus_backoff_min")]
    pub backoff_min: Dur,
    #[serde(default = "default_modbus_backoff_max")]
    pub backoff_max: Dur,
    #[serde(default, rename = "device")]
    pub devices: Vec<ModbusDevice>,
}

impl ModbusSource {
    /// Serial settings when this is an RTU bus.
    pub fn rtu_port(&self) -> Option<PortSettings> {
        (self.path.is_some() || self.usb.is_some()).then(|| PortSettings {
            path: self.path.clone(),
            usb: self.usb.clone(),
            baud: self.baud,
            data_bits: self.data_bits,
            parity: self.parity,
            stop_bits: self.stop_bits,
            flow_control: self.flow_control,
        })
    }
}

/// One slave on the bus.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModbusDevice {
    /// Device id of its samples.
    pub id: String,
    /// Modbus unit (slave) id, 1..=247 (0..=255 over TCP).
    pub unit: u8,
    /// Poll interval; default the source's.
    #[serde(default)]
    pub interval: Option<Dur>,
    pub points: Vec<ModbusPoint>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RegisterKind {
    /// Holding registers (function 3), 16 bit.
    Holding,
    /// Input registers (function 4), 16 bit.
    Input,
    /// Coils (function 1), 1 bit.
    Coil,
    /// Discrete inputs (function 2), 1 bit.
    Discrete,
}

impl RegisterKind {
    pub fn is_bit(self) -> bool {
        matches!(self, RegisterKind::Coil | RegisterKind::Discrete)
    }
    pub fn as_str(self) -> &'static str {
        match self {
            RegisterKind::Holding => "holding",
            RegisterKind::Input => "input",
            RegisterKind::Coil => "coil",
            RegisterKind::Discrete => "discrete",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataType {
    U16,
    I16,
    U32,
    I32,
    F32,
    /// A coil or discrete input: 0 or 1.
    Bool,
}

impl DataType {
    /// Registers (or bits) the value occupies.
    pub fn width(self) -> u16 {
        match self {
            DataType::U32 | DataType::I32 | DataType::F32 => 2,
            _ => 1,
        }
    }
}

/// Order of the two 16-bit words of a 32-bit value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum WordOrder {
    /// High word first (at the lower address): "ABCD", the Modbus convention.
    #[default]
    Big,
    /// Low word first: "CDAB", common in meters.
    Little,
}

fn default_scale() -> f64 {
    1.0
}

/// One value read from a device.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModbusPoint {
    pub metric: String,
    pub register: RegisterKind,
    /// Protocol address, from 0 (holding register "40001" is address 0).
    pub address: u16,
    /// Default `u16` for registers, `bool` for coils and discrete inputs.
    #[serde(default, rename = "type")]
    pub data_type: Option<DataType>,
    #[serde(default)]
    pub word_order: WordOrder,
    /// value = raw * scale + offset
    #[serde(default = "default_scale")]
    pub scale: f64,
    #[serde(default)]
    pub offset: f64,
}

impl ModbusPoint {
    pub fn data_type(&self) -> DataType {
        self.data_type.unwrap_or(if self.register.is_bit() {
            DataType::Bool
        } else {
            DataType::U16
        })
    }
}

// ---- semantic checks -------------------------------------------------------------------------

/// Longest custom frame delimiter, in bytes.
pub const MAX_DELIMITER: usize = 16;

fn check_port(settings: &PortSettings, p: &[Seg], needs_port: bool) -> VResult<()> {
    match (&settings.path, &settings.usb) {
        (Some(_), Some(_)) => {
            return fail(
                at(p, &[key("usb")]),
                "give either `path` or `usb`, not both",
            )
        }
        (None, None) if needs_port => {
            return fail(
                p.to_vec(),
                "needs `path` (e.g. \"/dev/serial/by-id/usb-FTDI_...\") or `usb = { vid = \"0403\", pid = \"6001\" }`",
            )
        }
        (Some(path), None) if path.is_empty() => {
            return fail(at(p, &[key("path")]), "must not be empty")
        }
        _ => {}
    }
    if let Some(u) = &settings.usb {
        let up = at(p, &[key("usb")]);
        for (name, v) in [("vid", &u.vid), ("pid", &u.pid)] {
            if v.len() != 4 || !v.chars().all(|c| c.is_ascii_hexdigit()) {
                return fail(
                    at(&up, &[key(name)]),
                    format!("{v:?} must be 4 hex digits, as `lsusb` shows it (e.g. \"0403\")"),
                );
            }
        }
        if u.serial.as_deref() == Some("") {
            return fail(at(&up, &[key("serial")]), "must not be empty");
        }
    }
    if !(50..=4_000_000).contains(&settings.baud) {
        return fail(at(p, &[key("baud")]), "must be between 50 and 4000000");
    }
    if !(5..=8).contains(&settings.data_bits) {
        return fail(at(p, &[key("data_bits")]), "must be 5, 6, 7 or 8");
    }
    if !(1..=2).contains(&settings.stop_bits) {
        return fail(at(p, &[key("stop_bits")]), "must be 1 or 2");
    }
    Ok(())
}

fn check_backoff(min: Dur, max: Dur, p: &[Seg]) -> VResult<()> {
    if min.as_ms() == 0 {
        return fail(at(p, &[key("backoff_min")]), "must be greater than 0");
    }
    if max < min {
        return fail(
            at(p, &[key("backoff_max")]),
            "must not be less than backoff_min",
        );
    }
    Ok(())
}

pub(super) fn validate_serial(s: &SerialSource, p: &[Seg]) -> VResult<()> {
    check_port(&s.port(), p, true)?;
    super::validate::validate_influx_only(
        s.format == SerialFormat::Frame(Format::Influx),
        &s.device_tag,
        s.influx_metric,
        p,
    )?;
    if !(16..=1 << 20).contains(&s.max_frame) {
        return fail(
            at(p, &[key("max_frame")]),
            "must be between 16 and 1048576 bytes",
        );
    }
    if let Some(d) = &s.delimiter {
        if s.frame_gap.is_some() {
            return fail(
                at(p, &[key("frame_gap")]),
                "give either `delimiter` or `frame_gap`, not both",
            );
        }
        if d.is_empty() || d.len() > MAX_DELIMITER {
            return fail(
                at(p, &[key("delimiter")]),
                format!("must be 1 to {MAX_DELIMITER} bytes, e.g. \"\\r\" or \";\""),
            );
        }
    }
    if let Some(g) = s.frame_gap {
        if !(1..=60_000).contains(&g.as_ms()) {
            return fail(at(p, &[key("frame_gap")]), "must be between 1ms and 60s");
        }
    }
    if let Some(dev) = &s.device {
        check_name(at(p, &[key("device")]), "device id", dev)?;
    }
    match (s.format, &s.columns) {
        (SerialFormat::Columns, None) => {
            return fail(
                at(p, &[key("format")]),
                "format \"columns\" needs `columns = [\"metric\", ...]`",
            )
        }
        (SerialFormat::Columns, Some(cols)) => {
            if s.device.is_none() {
                return fail(
                    at(p, &[key("format")]),
                    "format \"columns\" needs `device = \"...\"`: the frames carry no device id",
                );
            }
            if cols.is_empty() || cols.len() > crate::decode::MAX_SAMPLES_PER_FRAME {
                return fail(at(p, &[key("columns")]), "must list 1 to 256 columns");
            }
            let mut seen = std::collections::HashSet::new();
            for (i, c) in cols.iter().enumerate() {
                let cp = at(p, &[key("columns"), Seg::Index(i)]);
                check_name(cp.clone(), "column name", c)?;
                if c != crate::decode::columns::SKIP && !seen.insert(c.as_str()) {
                    return fail(cp, format!("column {c:?} is listed twice"));
                }
            }
            if seen.len() == usize::from(seen.contains(crate::decode::columns::TS)) {
                return fail(
                    at(p, &[key("columns")]),
                    "no column carries a value (all are `_` or `ts`)",
                );
            }
        }
        (SerialFormat::Frame(_), Some(_)) => {
            return fail(
                at(p, &[key("columns")]),
                "`columns` applies only to format \"columns\"",
            )
        }
        (SerialFormat::Frame(_), None) => {}
    }
    for (name, v) in [("init", &s.init), ("poll", &s.poll)] {
        if v.as_deref().is_some_and(|v| v.is_empty() || v.len() > 1024) {
            return fail(at(p, &[key(name)]), "must be 1 to 1024 bytes");
        }
    }
    match (&s.poll, s.poll_interval) {
        (Some(_), None) => {
            return fail(
                at(p, &[key("poll")]),
                "`poll` needs `poll_interval` (e.g. \"1s\")",
            )
        }
        (None, Some(_)) => {
            return fail(
                at(p, &[key("poll_interval")]),
                "`poll_interval` needs `poll`, the string to send",
            )
        }
        (Some(_), Some(i)) if i.as_ms() < 10 => {
            return fail(at(p, &[key("poll_interval")]), "must be at least 10ms")
        }
        _ => {}
    }
    check_backoff(s.backoff_min, s.backoff_max, p)
}

pub(super) fn validate_modbus(m: &ModbusSource, p: &[Seg]) -> VResult<()> {
    let rtu = m.rtu_port();
    match (&rtu, &m.connect) {
        (Some(_), Some(_)) => {
            return fail(
                at(p, &[key("connect")]),
                "give either `connect` (Modbus TCP) or `path`/`usb` (RTU), not both",
            )
        }
        (None, None) => {
            return fail(
                p.to_vec(),
                "needs `path` or `usb` (Modbus RTU on a serial port) or `connect = \"host:502\"` (Modbus TCP)",
            )
        }
        (Some(port), None) => check_port(port, p, true)?,
        (None, Some(c)) => {
            if c.rsplit_once(':').is_none_or(|(h, port)| h.is_empty() || port.parse::<u16>().is_err()) {
                return fail(
                    at(p, &[key("connect")]),
                    format!("{c:?} must be host:port, e.g. \"192.168.1.50:502\""),
                );
            }
        }
    }
    if m.interval.as_ms() < 10 {
        return fail(at(p, &[key("interval")]), "must be at least 10ms");
    }
    if !(1..=60_000).contains(&m.timeout.as_ms()) {
        return fail(at(p, &[key("timeout")]), "must be between 1ms and 60s");
    }
    check_backoff(m.backoff_min, m.backoff_max, p)?;
    if m.devices.is_empty() {
        return fail(
            p.to_vec(),
            "lists no devices: add [[source.device]] with `id`, `unit` and `points`",
        );
    }
    let mut ids = std::collections::HashSet::new();
    let mut units = std::collections::HashSet::new();
    for (i, d) in m.devices.iter().enumerate() {
        let dp = at(p, &[key("device"), Seg::Index(i)]);
        check_name(at(&dp, &[key("id")]), "device id", &d.id)?;
        if !ids.insert(d.id.as_str()) {
            return fail(
                at(&dp, &[key("id")]),
                format!("duplicate device id {:?} on this bus", d.id),
            );
        }
        if rtu.is_some() && !(1..=247).contains(&d.unit) {
            return fail(
                at(&dp, &[key("unit")]),
                "an RTU unit id must be 1 to 247 (0 is broadcast)",
            );
        }
        if !units.insert(d.unit) {
            return fail(
                at(&dp, &[key("unit")]),
                format!("unit {} is polled twice on this bus", d.unit),
            );
        }
        if d.interval.is_some_and(|i| i.as_ms() < 10) {
            return fail(at(&dp, &[key("interval")]), "must be at least 10ms");
        }
        if d.points.is_empty() {
            return fail(at(&dp, &[key("points")]), "must list at least one point");
        }
        let mut metrics = std::collections::HashSet::new();
        for (j, pt) in d.points.iter().enumerate() {
            let pp = at(&dp, &[key("points"), Seg::Index(j)]);
            check_name(at(&pp, &[key("metric")]), "metric name", &pt.metric)?;
            if !metrics.insert(pt.metric.as_str()) {
                return fail(
                    at(&pp, &[key("metric")]),
                    format!("metric {:?} is read twice from this device", pt.metric),
                );
            }
            let ty = pt.data_type();
            if pt.register.is_bit() != (ty == DataType::Bool) {
                return fail(
                    at(&pp, &[key("type")]),
                    if pt.register.is_bit() {
                        format!(
                            "a {} is one bit: its type is \"bool\"",
                            pt.register.as_str()
                        )
                    } else {
                        "\"bool\" is for coils and discrete inputs; registers are u16, i16, u32, i32 or f32".to_string()
                    },
                );
            }
            if u32::from(pt.address) + u32::from(ty.width()) > 65_536 {
                return fail(
                    at(&pp, &[key("address")]),
                    "the value runs past the last address (65535)",
                );
            }
            if !pt.scale.is_finite() || pt.scale == 0.0 {
                return fail(
                    at(&pp, &[key("scale")]),
                    "must be a finite, non-zero number",
                );
            }
            if !pt.offset.is_finite() {
                return fail(at(&pp, &[key("offset")]), "must be a finite number");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::parse_str;
    use super::*;
    use std::path::Path;

    fn parse(src: &str) -> Result<super::super::Resolved, String> {
        parse_str(&format!("node_id = \"n\"\n{src}"), Path::new("t.toml"))
            .map_err(|e| e.to_string())
    }

    fn err(src: &str) -> String {
        match parse(src) {
            Ok(_) => panic!("expected an error for:\n{src}"),
            Err(e) => e,
        }
    }

    const SERIAL: &str = "[[source]]\nid = \"s\"\nkind = \"serial\"\n";
    const MODBUS: &str = "[[source]]\nid = \"m\"\nkind = \"modbus\"\n";
    const POINT: &str = "[[source.device]]\nid = \"d\"\nunit = 1\npoints = [{ metric = \"v\", register = \"holding\", address = 0 }]\n";

    #[test]
    fn a_full_serial_source_parses() {
        let r = parse(&format!(
            "{SERIAL}usb = {{ vid = \"0403\", pid = \"6001\", serial = \"A1\", interface = 1 }}\nbaud = 115200\ndata_bits = 7\n\
             parity = \"odd\"\nstop_bits = 2\nflow_control = \"hardware\"\nformat = \"columns\"\ncolumns = [\"ts\", \"t\", \"_\", \"h\"]\n\
             device = \"bench\"\ndelimiter = \";\"\ninit = \"START\\r\\n\"\npoll = \"?\"\npoll_interval = \"2s\"\n"
        ))
        .expect("valid");
        let super::super::SourceConfig::Serial(s) = &r.config.sources[0] else {
            panic!("not serial")
        };
        assert_eq!(s.format, SerialFormat::Columns);
        assert_eq!(s.init.as_deref(), Some("START\r\n"));
        assert_eq!(s.port().describe(), "usb 0403:6001 serial A1 interface 1");
        assert_eq!(
            (s.parity, s.flow_control, s.data_bits),
            (Parity::Odd, FlowControl::Hardware, 7)
        );
        let r = parse(&format!(
            "{SERIAL}path = \"/dev/ttyUSB0\"\nformat = \"kv\"\nframe_gap = \"20ms\"\n"
        ))
        .expect("kv");
        let super::super::SourceConfig::Serial(s) = &r.config.sources[0] else {
            panic!("not serial")
        };
        assert_eq!(s.format, SerialFormat::Frame(Format::Kv));
    }

    #[test]
    fn serial_mistakes_are_located_and_explained() {
        let e = err(&format!("{SERIAL}path = \"/dev/x\"\nbuad = 9600\n"));
        assert!(e.starts_with("t.toml:6:1: unknown field `buad`"), "{e}");
        let e = err(&format!("{SERIAL}format = \"json\"\n"));
        assert!(e.starts_with("t.toml:2:1: needs `path`"), "{e}");
        let e = err(&format!(
            "{SERIAL}path = \"/dev/x\"\nformat = \"columns\"\ndevice = \"d\"\n"
        ));
        assert!(
            e.starts_with("t.toml:6:1: format \"columns\" needs `columns"),
            "{e}"
        );
        let e = err(&format!(
            "{SERIAL}path = \"/dev/x\"\nformat = \"columns\"\ncolumns = [\"a\"]\n"
        ));
        assert!(e.contains("needs `device = \"...\"`"), "{e}");
        let e = err(&format!("{SERIAL}path = \"/dev/x\"\nformat = \"columns\"\ndevice = \"d\"\ncolumns = [\"a\", \"a\"]\n"));
        assert!(
            e.starts_with("t.toml:8:17: column \"a\" is listed twice"),
            "{e}"
        );
        assert!(e.contains("(field `source[0].columns[1]`)"), "{e}");
        let e = err(&format!("{SERIAL}path = \"/dev/x\"\nformat = \"xml\"\n"));
        assert!(
            e.contains("unknown variant `xml`, expected one of `json`, `csv`, `kv`, `influx`, or `columns`"),
            "{e}"
        );
        assert!(e.starts_with("t.toml:6:1:"), "{e}");
        let e = err(&format!(
            "{SERIAL}usb = {{ vid = \"403\", pid = \"6001\" }}\n"
        ));
        assert!(e.contains("\"403\" must be 4 hex digits"), "{e}");
        assert!(e.contains("(field `source[0].usb.vid`)"), "{e}");
        let e = err(&format!(
            "{SERIAL}path = \"/dev/x\"\nusb = {{ vid = \"0403\", pid = \"6001\" }}\n"
        ));
        assert!(e.contains("either `path` or `usb`"), "{e}");
        let e = err(&format!(
            "{SERIAL}path = \"/dev/x\"\ndelimiter = \"\\n\"\nframe_gap = \"5ms\"\n"
        ));
        assert!(
            e.starts_with("t.toml:7:1: give either `delimiter` or `frame_gap`"),
            "{e}"
        );
        let e = err(&format!("{SERIAL}path = \"/dev/x\"\npoll = \"?\"\n"));
        assert!(e.contains("`poll` needs `poll_interval`"), "{e}");
        let e = err(&format!("{SERIAL}path = \"/dev/x\"\ndata_bits = 9\n"));
        assert!(e.contains("must be 5, 6, 7 or 8"), "{e}");
        let e = err(&format!("{SERIAL}path = \"/dev/x\"\nparity = \"mark\"\n"));
        assert!(e.contains("unknown variant `mark`"), "{e}");
        let e = err(&format!("{SERIAL}path = \"/dev/x\"\ncolumns = [\"a\"]\n"));
        assert!(
            e.contains("`columns` applies only to format \"columns\""),
            "{e}"
        );
    }

    #[test]
    fn a_modbus_source_parses_for_rtu_and_tcp() {
        let r = parse(&format!(
            "{MODBUS}path = \"/dev/ttyAMA0\"\nparity = \"even\"\ntimeout = \"200ms\"\n{POINT}\
             [[source.device]]\nid = \"e\"\nunit = 2\ninterval = \"5s\"\npoints = [\n  {{ metric = \"p\", register = \"input\", address = 7, type = \"f32\", word_order = \"little\", scale = 0.5, offset = 1 }},\n  {{ metric = \"c\", register = \"coil\", address = 3 }},\n]\n"
        ))
        .expect("rtu");
        let super::super::SourceConfig::Modbus(m) = &r.config.sources[0] else {
            panic!("not modbus")
        };
        assert!(m.rtu_port().is_some());
        assert_eq!(m.devices[1].points[0].data_type(), DataType::F32);
        assert_eq!(m.devices[1].points[1].data_type(), DataType::Bool);
        assert_eq!(m.devices[1].points[0].word_order, WordOrder::Little);
        let r = parse(&format!("{MODBUS}connect = \"plc.local:502\"\n{POINT}")).expect("tcp");
        let super::super::SourceConfig::Modbus(m) = &r.config.sources[0] else {
            panic!("not modbus")
        };
        assert!(m.rtu_port().is_none());
    }

    #[test]
    fn modbus_mistakes_are_located_and_explained() {
        let e = err(&format!("{MODBUS}{POINT}"));
        assert!(
            e.contains("needs `path` or `usb` (Modbus RTU on a serial port) or `connect"),
            "{e}"
        );
        let e = err(&format!("{MODBUS}connect = \"plc\"\n{POINT}"));
        assert!(
            e.starts_with("t.toml:5:1: \"plc\" must be host:port"),
            "{e}"
        );
        let e = err(&format!(
            "{MODBUS}connect = \"plc:502\"\npath = \"/dev/x\"\n{POINT}"
        ));
        assert!(
            e.contains("either `connect` (Modbus TCP) or `path`/`usb` (RTU)"),
            "{e}"
        );
        let e = err(&format!("{MODBUS}connect = \"plc:502\"\n"));
        assert!(e.contains("lists no devices"), "{e}");
        let bad_point = |p: &str| {
            err(&format!(
                "{MODBUS}path = \"/dev/x\"\n[[source.device]]\nid = \"d\"\nunit = 1\npoints = [{{ metric = \"v\", {p} }}]\n"
            ))
        };
        let e = bad_point("register = \"coil\", address = 0, type = \"u16\"");
        assert!(e.contains("a coil is one bit: its type is \"bool\""), "{e}");
        assert!(
            e.contains("(field `source[0].device[0].points[0].type`)"),
            "{e}"
        );
        assert!(e.starts_with("t.toml:9:"), "{e}");
        let e = bad_point("register = \"holding\", address = 0, type = \"bool\"");
        assert!(e.contains("\"bool\" is for coils"), "{e}");
        let e = bad_point("register = \"holding\", address = 65535, type = \"f32\"");
        assert!(e.contains("runs past the last address"), "{e}");
        let e = bad_point("register = \"holding\", address = 0, scale = 0");
        assert!(e.contains("finite, non-zero"), "{e}");
        let e = bad_point("register = \"holdin\", address = 0");
        assert!(e.contains("unknown variant `holdin`"), "{e}");
        assert!(e.starts_with("t.toml:9:27:"), "{e}");
        assert!(
            e.contains("(field `source[0].device[0].points[0].register`)"),
            "{e}"
        );
        let e = bad_point("register = \"input\", adress = 0");
        assert!(e.contains("unknown field `adress`"), "{e}");
        assert!(
            e.contains("(field `source[0].device[0].points[0].adress`)"),
            "{e}"
        );
        let e = bad_point("register = \"input\", address = 0, type = \"f64\"");
        assert!(e.contains("unknown variant `f64`"), "{e}");
        let e = err(&format!(
            "{MODBUS}path = \"/dev/x\"\n[[source.device]]\nid = \"d\"\nunit = 0\npoints = [{{ metric = \"v\", register = \"input\", address = 0 }}]\n"
        ));
        assert!(e.contains("RTU unit id must be 1 to 247"), "{e}");
        assert!(e.starts_with("t.toml:8:1:"), "{e}");
        let e = err(&format!(
            "{MODBUS}connect = \"plc:502\"\n{POINT}{}",
            POINT.replace("\"d\"", "\"d2\"")
        ));
        assert!(e.contains("unit 1 is polled twice on this bus"), "{e}");
        let e = err(&format!(
            "{MODBUS}connect = \"plc:502\"\n[[source.device]]\nid = \"d\"\nunit = 1\npoints = [{{ metric = \"v\", register = \"input\", address = 0 }}, {{ metric = \"v\", register = \"input\", address = 1 }}]\n"
        ));
        assert!(
            e.contains("metric \"v\" is read twice from this device"),
            "{e}"
        );
    }
}
