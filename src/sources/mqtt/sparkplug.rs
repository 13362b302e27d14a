//! Sparkplug B over MQTT: births record metric names and aliases per edge node and device, data
//! messages become samples by alias, deaths mark devices unhealthy, an unknown alias asks for a
//! rebirth (NCMD `Node Control/Rebirth`, paced per node).
//!
//! The protobuf messages are hand-written prost derives holding only the fields used, with the
//! tags and types of Eclipse Tahu's `sparkplug_b.proto`. A payload's top level is walked here so
//! its metrics decode one at a time: memory does not grow with the metrics in a message (a
//! `Vec<Metric>` of a 1 MiB payload of empty metrics would take some 50 MiB). Every table is
//! bounded by the config (`max_nodes`, `max_devices`, `max_metrics`); what is over is counted.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use prost::Message;
use serde::Serialize;

use crate::config::SparkplugConfig;
use crate::decode::{check_name, DecodeError};
use crate::model::{now_ms, Millis, SampleSink};
use crate::status::{ErrorView, UnitView};

/// The topic namespace of Sparkplug B.
pub const NAMESPACE: &str = "spBv1.0";
/// The node control metric a host application sets to ask an edge node for its births again.
pub const REBIRTH_METRIC: &str = "Node Control/Rebirth";
/// The birth/death sequence metric of NBIRTH and NDEATH.
const BDSEQ: &str = "bdSeq";

/// Sparkplug datatypes (the comment table of `sparkplug_b.proto`).
mod datatype {
    pub const INT8: u32 = 1;
    pub const INT16: u32 = 2;
    pub const INT32: u32 = 3;
    pub const INT64: u32 = 4;
    pub const UINT8: u32 = 5;
    pub const UINT16: u32 = 6;
    pub const UINT32: u32 = 7;
    pub const UINT64: u32 = 8;
    pub const FLOAT: u32 = 9;
    pub const DOUBLE: u32 = 10;
    pub const BOOLEAN: u32 = 11;
}

/// `org.eclipse.tahu.protobuf.Payload`: timestamp = 1, metrics = 2, seq = 3 (uuid = 4 and
/// body = 5 are not used). Built to encode the rebirth command; incoming payloads are walked by
/// `walk` instead, one metric at a time.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Payload {
    #[prost(uint64, optional, tag = "1")]
    pub timestamp: Option<u64>,
    #[prost(message, repeated, tag = "2")]
    pub metrics: Vec<Metric>,
    #[prost(uint64, optional, tag = "3")]
    pub seq: Option<u64>,
}

/// `Payload.Metric`: name = 1, alias = 2, timestamp = 3, datatype = 4, is_null = 7 and the
/// `value` oneof (10..=18). is_historical (5), is_transient (6), metadata (8), properties (9)
/// and extension_value (19) are skipped by prost as unknown fields.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Metric {
    #[prost(string, optional, tag = "1")]
    pub name: Option<String>,
    #[prost(uint64, optional, tag = "2")]
    pub alias: Option<u64>,
    #[prost(uint64, optional, tag = "3")]
    pub timestamp: Option<u64>,
    #[prost(uint32, optional, tag = "4")]
    pub datatype: Option<u32>,
    #[prost(bool, optional, tag = "7")]
    pub is_null: Option<bool>,
    #[prost(oneof = "Value", tags = "10, 11, 12, 13, 14, 15, 16, 17, 18")]
    pub value: Option<Value>,
}

/// `Metric.value` (`int_value` .. `template_value`). DataSet (17) and Template (18) are messages
/// in the proto; they are kept as their undecoded bytes (the same length-delimited wire form),
/// since they are skipped anyway.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Value {
    #[prost(uint32, tag = "10")]
    Int(u32),
    #[prost(uint64, tag = "11")]
    Long(u64),
    #[prost(float, tag = "12")]
    Float(f32),
    #[prost(double, tag = "13")]
    Double(f64),
    #[prost(bool, tag = "14")]
    Boolean(bool),
    #[prost(string, tag = "15")]
    String(String),
    #[prost(bytes = "vec", tag = "16")]
    Bytes(Vec<u8>),
    #[prost(bytes = "vec", tag = "17")]
    Dataset(Vec<u8>),
    #[prost(bytes = "vec", tag = "18")]
    Template(Vec<u8>),
}

/// Why a Sparkplug message gave no samples.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SparkplugError {
    #[error("not a Sparkplug B topic: expected {NAMESPACE}/{{group}}/{{type}}/{{edge_node}}[/{{device}}]")]
    NotSparkplug,
    #[error("bad Sparkplug B topic: {0}")]
    BadTopic(&'static str),
    #[error("bad Sparkplug B protobuf: {0}")]
    Protobuf(String),
    #[error("data from an edge node without a live NBIRTH (rebirth requested)")]
    NodeNotBorn,
    #[error("data from a device without a live DBIRTH (rebirth requested)")]
    DeviceNotBorn,
    #[error("metric alias {0} is not in the birth (rebirth requested)")]
    UnknownAlias(u64),
    #[error("a metric has neither name nor alias")]
    Anonymous,
    #[error("over budget: {0} reached, not tracked")]
    OverBudget(&'static str),
    #[error("{0}")]
    Name(#[from] DecodeError),
}

/// Kinds of message in the topic's third level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    NBirth,
    NDeath,
    DBirth,
    DDeath,
    NData,
    DData,
    /// Commands (our own rebirth requests come back here) and host STATE: ignored.
    Other,
}

/// A parsed Sparkplug topic, borrowing from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Topic<'t> {
    pub group: &'t str,
    pub kind: Kind,
    pub node: &'t str,
    pub device: Option<&'t str>,
}

/// Parses `spBv1.0/{group}/{type}/{edge_node}[/{device}]`; host STATE topics parse as `Other`.
pub fn parse_topic(t: &str) -> Result<Topic<'_>, SparkplugError> {
    let mut it = t.split('/');
    let (ns, group) = (it.next(), it.next());
    if ns == Some("STATE") || (ns == Some(NAMESPACE) && group == Some("STATE")) {
        return Ok(Topic {
            group: "",
            kind: Kind::Other,
            node: "",
            device: None,
        });
    }
    if ns != Some(NAMESPACE) {
        return Err(SparkplugError::NotSparkplug);
    }
    let (Some(group), Some(kind), Some(node)) = (group, it.next(), it.next()) else {
        return Err(SparkplugError::BadTopic("too few levels"));
    };
    let device = it.next();
    if it.next().is_some() {
        return Err(SparkplugError::BadTopic("too many levels"));
    }
    let kind = match kind {
        "NBIRTH" => Kind::NBirth,
        "NDEATH" => Kind::NDeath,
        "DBIRTH" => Kind::DBirth,
        "DDEATH" => Kind::DDeath,
        "NDATA" => Kind::NData,
        "DDATA" => Kind::DData,
        "NCMD" | "DCMD" => Kind::Other,
        _ => return Err(SparkplugError::BadTopic("unknown message type")),
    };
    let node_level = matches!(kind, Kind::NBirth | Kind::NDeath | Kind::NData);
    let device_level = matches!(kind, Kind::DBirth | Kind::DDeath | Kind::DData);
    if node_level && device.is_some() {
        return Err(SparkplugError::BadTopic(
            "an edge node message has a device level",
        ));
    }
    if device_level && device.is_none() {
        return Err(SparkplugError::BadTopic(
            "a device message has no device level",
        ));
    }
    if group.is_empty() || node.is_empty() || device == Some("") {
        return Err(SparkplugError::BadTopic("an empty level"));
    }
    Ok(Topic {
        group,
        kind,
        node,
        device,
    })
}

fn proto(why: impl Into<String>) -> SparkplugError {
    SparkplugError::Protobuf(why.into())
}

fn varint(buf: &mut &[u8]) -> Result<u64, SparkplugError> {
    let mut v = 0u64;
    for i in 0..10 {
        let (&b, rest) = buf.split_first().ok_or_else(|| proto("truncated varint"))?;
        *buf = rest;
        v |= u64::from(b & 0x7f) << (7 * i);
        if b < 0x80 {
            return Ok(v);
        }
    }
    Err(proto("varint longer than 10 bytes"))
}

fn take<'a>(buf: &mut &'a [u8], n: u64) -> Result<&'a [u8], SparkplugError> {
    let n = usize::try_from(n)
        .ok()
        .filter(|n| *n <= buf.len())
        .ok_or_else(|| proto("a field runs past the end of the payload"))?;
    let (a, b) = buf.split_at(n);
    *buf = b;
    Ok(a)
}

/// The payload's own fields.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Head {
    timestamp: Option<u64>,
    seq: Option<u64>,
}

/// Walks a payload's top level, handing each metric's bytes to `metric`.
fn walk<'a>(
    mut buf: &'a [u8],
    mut metric: impl FnMut(&'a [u8]) -> Result<(), SparkplugError>,
) -> Result<Head, SparkplugError> {
    let mut head = Head::default();
    while !buf.is_empty() {
        let key = varint(&mut buf)?;
        let (tag, wire) = (key >> 3, key & 7);
        if tag == 0 {
            return Err(proto("field number 0"));
        }
        match (tag, wire) {
            (1 | 3, 0) => {
                let v = varint(&mut buf)?;
                if tag == 1 {
                    head.timestamp = Some(v);
                } else {
                    head.seq = Some(v);
                }
            }
            (2, 2) => {
                let len = varint(&mut buf)?;
                metric(take(&mut buf, len)?)?;
            }
            (1..=3, _) => return Err(proto(format!("field {tag} has wire type {wire}"))),
            (_, 0) => {
                varint(&mut buf)?;
            }
            (_, 1) => {
                take(&mut buf, 8)?;
            }
            (_, 2) => {
                let len = varint(&mut buf)?;
                take(&mut buf, len)?;
            }
            (_, 5) => {
                take(&mut buf, 4)?;
            }
            _ => return Err(proto(format!("unsupported wire type {wire} (field {tag})"))),
        }
    }
    Ok(head)
}

fn decode_metric(b: &[u8]) -> Result<Metric, SparkplugError> {
    Metric::decode(b).map_err(|e| proto(e.to_string()))
}

/// Why a metric gave no sample (counted, never an error).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Skip {
    Null,
    NotNumeric,
}

/// The numeric value of a metric: signed types reinterpret their unsigned wire field (Tahu
/// encodes Int8..Int32 sign-extended in `int_value`, Int64 as two's complement in `long_value`).
fn number(datatype: Option<u32>, m: &Metric) -> Result<f64, Skip> {
    use datatype::*;
    if m.is_null == Some(true) {
        return Err(Skip::Null);
    }
    let v = match (datatype, m.value.as_ref().ok_or(Skip::Null)?) {
        (Some(INT8), Value::Int(x)) => f64::from(*x as u8 as i8),
        (Some(INT16), Value::Int(x)) => f64::from(*x as u16 as i16),
        (Some(INT32 | INT64), Value::Int(x)) => f64::from(*x as i32),
        (Some(INT8 | INT16 | INT32 | INT64), Value::Long(x)) => *x as i64 as f64,
        (None | Some(UINT8 | UINT16 | UINT32 | UINT64), Value::Int(x)) => f64::from(*x),
        (None | Some(UINT8 | UINT16 | UINT32 | UINT64), Value::Long(x)) => *x as f64,
        (None | Some(FLOAT | DOUBLE), Value::Float(x)) => f64::from(*x),
        (None | Some(FLOAT | DOUBLE), Value::Double(x)) => *x,
        (None | Some(BOOLEAN), Value::Boolean(b)) => f64::from(u8::from(*b)),
        _ => return Err(Skip::NotNumeric),
    };
    if v.is_finite() {
        Ok(v)
    } else {
        Err(Skip::NotNumeric)
    }
}

/// Metrics of a birth that are protocol state, not measurements: not turned into samples.
fn is_control(name: &str) -> bool {
    name == BDSEQ || name.starts_with("Node Control/") || name.starts_with("Device Control/")
}

/// A metric named in a birth.
#[derive(Debug)]
struct Known {
    name: Box<str>,
    datatype: Option<u32>,
    /// The name is not a usable metric name (or is protocol state): its data is skipped.
    skip: bool,
}

/// An edge node's own metrics, or one device's.
#[derive(Debug)]
struct Entity {
    id: Box<str>,
    aliases: HashMap<u64, Known>,
    online: bool,
    reads_ok: u64,
    errors: u64,
    last_error: Option<ErrorView>,
}

impl Entity {
    fn new(id: String) -> Self {
        Entity {
            id: id.into(),
            aliases: HashMap::new(),
            online: false,
            reads_ok: 0,
            errors: 0,
            last_error: None,
        }
    }

    fn view(&self) -> UnitView {
        UnitView {
            device: self.id.to_string(),
            healthy: self.online,
            reads_ok: self.reads_ok,
            errors: self.errors,
            last_error: self.last_error.clone(),
            ..UnitView::default()
        }
    }

    /// Goes offline, forgetting its aliases; returns how many it had.
    fn die(&mut self, why: &str) -> usize {
        self.online = false;
        self.last_error = Some(ErrorView {
            at: now_ms(),
            message: why.to_string(),
        });
        let n = self.aliases.len();
        self.aliases = HashMap::new();
        n
    }
}

#[derive(Debug)]
struct Node {
    me: Entity,
    devices: HashMap<Box<str>, Entity>,
    /// bdSeq of the live NBIRTH, when it had one.
    bdseq: Option<u64>,
    /// Last `seq` seen, to count gaps.
    seq: Option<u64>,
    last_rebirth: Option<Instant>,
    /// A birth of this node did not fit `max_metrics`: its unknown aliases are skipped, not
    /// answered with a rebirth (which could not fit either).
    over_budget: bool,
}

/// Counters of one Sparkplug subscription, shown under the source in `/api/status`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SparkplugView {
    pub nodes: usize,
    pub devices: usize,
    pub metrics: usize,
    pub births: u64,
    pub deaths: u64,
    /// NDEATHs whose bdSeq was not the live NBIRTH's (an older session's will): ignored.
    pub stale_deaths: u64,
    pub rebirths_requested: u64,
    /// Data messages rejected for an alias missing from the birth.
    pub unknown_alias: u64,
    /// Metrics that gave no sample: null, string, bytes, dataset, template, not finite, bad name.
    pub skipped_metrics: u64,
    /// Nodes, devices or aliases not tracked because a cap was reached.
    pub over_budget: u64,
    /// Data messages whose `seq` did not follow the previous one of the node.
    pub seq_gaps: u64,
}

impl SparkplugView {
    /// Adds another subscription's counters.
    pub fn add(&mut self, o: &SparkplugView) {
        self.nodes += o.nodes;
        self.devices += o.devices;
        self.metrics += o.metrics;
        self.births += o.births;
        self.deaths += o.deaths;
        self.stale_deaths += o.stale_deaths;
        self.rebirths_requested += o.rebirths_requested;
        self.unknown_alias += o.unknown_alias;
        self.skipped_metrics += o.skipped_metrics;
        self.over_budget += o.over_budget;
        self.seq_gaps += o.seq_gaps;
    }
}

/// A rebirth request to publish (QoS 0, not retained).
#[derive(Debug, Clone, PartialEq)]
pub struct Rebirth {
    pub topic: String,
    pub payload: Vec<u8>,
}

/// The rebirth command: `Node Control/Rebirth` = true (Boolean) at `ts`.
pub fn rebirth_payload(ts: Millis) -> Vec<u8> {
    Payload {
        timestamp: u64::try_from(ts).ok(),
        metrics: vec![Metric {
            name: Some(REBIRTH_METRIC.to_string()),
            datatype: Some(datatype::BOOLEAN),
            value: Some(Value::Boolean(true)),
            ..Metric::default()
        }],
        seq: None,
    }
    .encode_to_vec()
}

/// The state of one `format = "sparkplug_b"` subscription.
#[derive(Debug)]
pub struct Sparkplug {
    cfg: SparkplugConfig,
    groups: HashMap<Box<str>, HashMap<Box<str>, Node>>,
    nodes: usize,
    devices: usize,
    aliases: usize,
    counts: SparkplugView,
    rebirths: Vec<Rebirth>,
    /// Health changed since the last `units` (births, deaths, new devices).
    changed: bool,
}

/// Fills a device id template.
fn render(template: &str, group: &str, node: &str, device: &str) -> Result<String, DecodeError> {
    let id = template
        .replace("{group}", group)
        .replace("{edge_node}", node)
        .replace("{device}", device);
    check_name("device", &id)?;
    Ok(id)
}

impl Sparkplug {
    pub fn new(cfg: SparkplugConfig) -> Self {
        Sparkplug {
            cfg,
            groups: HashMap::new(),
            nodes: 0,
            devices: 0,
            aliases: 0,
            counts: SparkplugView::default(),
            rebirths: Vec::new(),
            changed: false,
        }
    }

    /// Rebirth requests made since the last call, to publish.
    pub fn take_rebirths(&mut self) -> Vec<Rebirth> {
        std::mem::take(&mut self.rebirths)
    }

    pub fn counts(&self) -> SparkplugView {
        SparkplugView {
            nodes: self.nodes,
            devices: self.devices,
            metrics: self.aliases,
            ..self.counts.clone()
        }
    }

    /// Whether health changed since the last call.
    pub fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }

    /// Health of every node and device, sorted by device id.
    pub fn units(&self) -> Vec<UnitView> {
        let mut v: Vec<UnitView> = self
            .groups
            .values()
            .flat_map(|g| g.values())
            .flat_map(|n| std::iter::once(&n.me).chain(n.devices.values()))
            .map(Entity::view)
            .collect();
        v.sort_by(|a, b| a.device.cmp(&b.device));
        v
    }

    /// Handles one message; returns the samples pushed. Commands and STATE give `Ok(0)`.
    pub fn handle(
        &mut self,
        topic: &str,
        payload: &[u8],
        now: Instant,
        out: &mut impl SampleSink,
    ) -> Result<usize, SparkplugError> {
        let t = parse_topic(topic)?;
        let r = match t.kind {
            Kind::Other => return Ok(0),
            Kind::NBirth => self.nbirth(&t, payload, out),
            Kind::DBirth => self.dbirth(&t, payload, now, out),
            Kind::NData | Kind::DData => self.data(&t, payload, now, out),
            Kind::NDeath => self.ndeath(&t, payload),
            Kind::DDeath => self.ddeath(&t, payload),
        };
        if let Err(e) = &r {
            self.count_error(&t, e);
        }
        r
    }

    /// Counts a rejected message on the node or device it names, when known.
    #[cold]
    fn count_error(&mut self, t: &Topic<'_>, e: &SparkplugError) {
        let Some(node) = self.groups.get_mut(t.group).and_then(|g| g.get_mut(t.node)) else {
            return;
        };
        let ent = match t.device {
            Some(d) => match node.devices.get_mut(d) {
                Some(e) => e,
                None => return,
            },
            None => &mut node.me,
        };
        ent.errors += 1;
        ent.last_error = Some(ErrorView {
            at: now_ms(),
            message: e.to_string(),
        });
    }

    fn node(&mut self, t: &Topic<'_>) -> Option<&mut Node> {
        self.groups.get_mut(t.group)?.get_mut(t.node)
    }

    /// The node of `t`, created (offline) if there is room.
    fn node_or_insert(&mut self, t: &Topic<'_>) -> Result<&mut Node, SparkplugError> {
        let exists = self
            .groups
            .get(t.group)
            .is_some_and(|g| g.contains_key(t.node));
        if !exists {
            if self.nodes >= self.cfg.max_nodes {
                self.counts.over_budget += 1;
                return Err(SparkplugError::OverBudget("max_nodes"));
            }
            let id = render(&self.cfg.node_device, t.group, t.node, "")?;
            self.nodes += 1;
            self.changed = true;
            self.groups.entry(t.group.into()).or_default().insert(
                t.node.into(),
                Node {
                    me: Entity::new(id),
                    devices: HashMap::new(),
                    bdseq: None,
                    seq: None,
                    last_rebirth: None,
                    over_budget: false,
                },
            );
        }
        self.node(t)
            .ok_or(SparkplugError::BadTopic("node table inconsistent"))
    }

    /// Asks the node for a rebirth unless one was asked within `rebirth_interval`.
    fn rebirth(&mut self, t: &Topic<'_>, now: Instant) {
        let every = self.cfg.rebirth_interval.0;
        let Ok(node) = self.node_or_insert(t) else {
            return;
        };
        if node
            .last_rebirth
            .is_some_and(|at| now.saturating_duration_since(at) < every)
        {
            return;
        }
        node.last_rebirth = Some(now);
        self.counts.rebirths_requested += 1;
        self.rebirths.push(Rebirth {
            topic: format!("{NAMESPACE}/{}/NCMD/{}", t.group, t.node),
            payload: rebirth_payload(now_ms()),
        });
    }

    /// Counts a gap when `seq` does not follow the node's previous one (mod 256).
    fn check_seq(node: &mut Node, seq: Option<u64>, gaps: &mut u64) {
        if let (Some(prev), Some(s)) = (node.seq, seq) {
            if s != prev.wrapping_add(1) % 256 {
                *gaps += 1;
            }
        }
        if seq.is_some() {
            node.seq = seq;
        }
    }

    /// Checks every metric of a birth (pass 1, nothing changed yet).
    fn check_birth(payload: &[u8]) -> Result<(Head, Option<u64>), SparkplugError> {
        let mut bdseq = None;
        let head = walk(payload, |b| {
            let m = decode_metric(b)?;
            if m.name.as_deref() == Some(BDSEQ) {
                bdseq = match m.value {
                    Some(Value::Long(v)) => Some(v),
                    Some(Value::Int(v)) => Some(u64::from(v)),
                    _ => None,
                };
            }
            Ok(())
        })?;
        Ok((head, bdseq))
    }

    /// Records a birth's aliases in `ent` and pushes its values (pass 2).
    fn apply_birth(
        ent: &mut Entity,
        payload: &[u8],
        head: Head,
        room: usize,
        counts: &mut SparkplugView,
        over: &mut bool,
        out: &mut impl SampleSink,
    ) -> Result<(usize, usize), SparkplugError> {
        let (mut n, mut added) = (0, 0);
        walk(payload, |b| {
            let m = decode_metric(b)?;
            let Some(name) = m.name.as_deref() else {
                counts.skipped_metrics += 1;
                return Ok(());
            };
            let skip = is_control(name) || check_name("metric", name).is_err();
            if let Some(alias) = m.alias {
                if !ent.aliases.contains_key(&alias) && added >= room {
                    *over = true;
                    counts.over_budget += 1;
                } else {
                    let k = Known {
                        name: name.into(),
                        datatype: m.datatype,
                        skip,
                    };
                    if ent.aliases.insert(alias, k).is_none() {
                        added += 1;
                    }
                }
            }
            if skip {
                if !is_control(name) {
                    counts.skipped_metrics += 1;
                }
                return Ok(());
            }
            match number(m.datatype, &m) {
                Ok(v) => {
                    let ts = m.timestamp.or(head.timestamp);
                    out.push(&ent.id, name, ts.and_then(|t| i64::try_from(t).ok()), v);
                    n += 1;
                }
                Err(_) => counts.skipped_metrics += 1,
            }
            Ok(())
        })?;
        Ok((n, added))
    }

    fn nbirth(
        &mut self,
        t: &Topic<'_>,
        payload: &[u8],
        out: &mut impl SampleSink,
    ) -> Result<usize, SparkplugError> {
        let (head, bdseq) = Self::check_birth(payload)?;
        let room = self.cfg.max_metrics;
        self.node_or_insert(t)?;
        let Some(groups) = self.groups.get_mut(t.group) else {
            return Ok(0);
        };
        let Some(node) = groups.get_mut(t.node) else {
            return Ok(0);
        };
        // A new session: everything of the old one is forgotten; devices must be born again.
        let mut freed = node.me.die("rebirth");
        for d in node.devices.values_mut() {
            freed += d.die("edge node born again, no DBIRTH yet");
        }
        self.aliases -= freed;
        node.over_budget = false;
        let room = room.saturating_sub(self.aliases);
        let (n, added) = Self::apply_birth(
            &mut node.me,
            payload,
            head,
            room,
            &mut self.counts,
            &mut node.over_budget,
            out,
        )?;
        self.aliases += added;
        node.me.online = true;
        node.me.last_error = None;
        node.me.reads_ok += 1;
        node.bdseq = bdseq;
        node.seq = head.seq;
        // The birth answers any request: a new unknown alias may ask again at once.
        node.last_rebirth = None;
        self.counts.births += 1;
        self.changed = true;
        Ok(n)
    }

    fn dbirth(
        &mut self,
        t: &Topic<'_>,
        payload: &[u8],
        now: Instant,
        out: &mut impl SampleSink,
    ) -> Result<usize, SparkplugError> {
        let (head, _) = Self::check_birth(payload)?;
        let Some(dev) = t.device else {
            return Err(SparkplugError::BadTopic(
                "a device message has no device level",
            ));
        };
        if !self.node(t).is_some_and(|n| n.me.online) {
            self.rebirth(t, now);
            return Err(SparkplugError::NodeNotBorn);
        }
        let (max_devices, max_metrics) = (self.cfg.max_devices, self.cfg.max_metrics);
        let template = self.cfg.device.clone();
        let Some(node) = self.groups.get_mut(t.group).and_then(|g| g.get_mut(t.node)) else {
            return Err(SparkplugError::NodeNotBorn);
        };
        let mut gaps = 0;
        Self::check_seq(node, head.seq, &mut gaps);
        self.counts.seq_gaps += gaps;
        if !node.devices.contains_key(dev) {
            if self.devices >= max_devices {
                self.counts.over_budget += 1;
                return Err(SparkplugError::OverBudget("max_devices"));
            }
            let id = render(&template, t.group, t.node, dev)?;
            node.devices.insert(dev.into(), Entity::new(id));
            self.devices += 1;
        }
        let Some(ent) = node.devices.get_mut(dev) else {
            return Ok(0);
        };
        self.aliases -= ent.die("rebirth");
        let room = max_metrics.saturating_sub(self.aliases);
        let (n, added) = Self::apply_birth(
            ent,
            payload,
            head,
            room,
            &mut self.counts,
            &mut node.over_budget,
            out,
        )?;
        self.aliases += added;
        ent.online = true;
        ent.last_error = None;
        ent.reads_ok += 1;
        self.counts.births += 1;
        self.changed = true;
        Ok(n)
    }

    fn data(
        &mut self,
        t: &Topic<'_>,
        payload: &[u8],
        now: Instant,
        out: &mut impl SampleSink,
    ) -> Result<usize, SparkplugError> {
        // Pass 1: a well-formed payload whose every alias is known, before anything is pushed.
        let checked = {
            let node = self.node(t).filter(|n| n.me.online);
            let ent = match (node, t.device) {
                (None, _) => Err(SparkplugError::NodeNotBorn),
                (Some(n), None) => Ok((&n.me, n.over_budget)),
                (Some(n), Some(d)) => n
                    .devices
                    .get(d)
                    .filter(|e| e.online)
                    .map(|e| (e, n.over_budget))
                    .ok_or(SparkplugError::DeviceNotBorn),
            };
            match ent {
                Err(e) => Err(e),
                Ok((ent, over)) => walk(payload, |b| {
                    let m = decode_metric(b)?;
                    match (m.alias, &m.name) {
                        (Some(a), _) if ent.aliases.contains_key(&a) || over => Ok(()),
                        (Some(a), _) => Err(SparkplugError::UnknownAlias(a)),
                        (None, Some(_)) => Ok(()),
                        (None, None) => Err(SparkplugError::Anonymous),
                    }
                }),
            }
        };
        let head = match checked {
            Ok(h) => h,
            Err(e) => {
                if matches!(
                    e,
                    SparkplugError::NodeNotBorn | SparkplugError::DeviceNotBorn
                ) {
                    // Garbage is garbage, born or not: it asks for no rebirth.
                    walk(payload, |b| decode_metric(b).map(|_| ()))?;
                }
                if matches!(
                    e,
                    SparkplugError::NodeNotBorn
                        | SparkplugError::DeviceNotBorn
                        | SparkplugError::UnknownAlias(_)
                ) {
                    if matches!(e, SparkplugError::UnknownAlias(_)) {
                        self.counts.unknown_alias += 1;
                    }
                    self.rebirth(t, now);
                }
                return Err(e);
            }
        };
        // Pass 2: push.
        let Some(node) = self.groups.get_mut(t.group).and_then(|g| g.get_mut(t.node)) else {
            return Err(SparkplugError::NodeNotBorn);
        };
        let mut gaps = 0;
        Self::check_seq(node, head.seq, &mut gaps);
        self.counts.seq_gaps += gaps;
        let ent = match t.device {
            None => &mut node.me,
            Some(d) => node
                .devices
                .get_mut(d)
                .ok_or(SparkplugError::DeviceNotBorn)?,
        };
        let counts = &mut self.counts;
        let mut n = 0;
        walk(payload, |b| {
            let m = decode_metric(b)?;
            let (name, dt) = match m.alias.and_then(|a| ent.aliases.get(&a)) {
                Some(k) if k.skip => {
                    counts.skipped_metrics += 1;
                    return Ok(());
                }
                Some(k) => (&*k.name, m.datatype.or(k.datatype)),
                None => match m.name.as_deref() {
                    Some(nm) if !is_control(nm) && check_name("metric", nm).is_ok() => {
                        (nm, m.datatype)
                    }
                    _ => {
                        counts.skipped_metrics += 1;
                        return Ok(());
                    }
                },
            };
            match number(dt, &m) {
                Ok(v) => {
                    let ts = m.timestamp.or(head.timestamp);
                    out.push(&ent.id, name, ts.and_then(|t| i64::try_from(t).ok()), v);
                    n += 1;
                }
                Err(Skip::Null | Skip::NotNumeric) => counts.skipped_metrics += 1,
            }
            Ok(())
        })?;
        ent.reads_ok += 1;
        Ok(n)
    }

    fn ndeath(&mut self, t: &Topic<'_>, payload: &[u8]) -> Result<usize, SparkplugError> {
        let (_, bdseq) = Self::check_birth(payload)?;
        let Some(node) = self.groups.get_mut(t.group).and_then(|g| g.get_mut(t.node)) else {
            return Ok(0);
        };
        if let (Some(live), Some(dead)) = (node.bdseq, bdseq) {
            if live != dead {
                self.counts.stale_deaths += 1;
                return Ok(0);
            }
        }
        let mut freed = node.me.die("NDEATH: the edge node went offline");
        for d in node.devices.values_mut() {
            freed += d.die("NDEATH: its edge node went offline");
        }
        node.bdseq = None;
        node.seq = None;
        self.aliases -= freed;
        self.counts.deaths += 1;
        self.changed = true;
        Ok(0)
    }

    fn ddeath(&mut self, t: &Topic<'_>, payload: &[u8]) -> Result<usize, SparkplugError> {
        let head = walk(payload, |b| decode_metric(b).map(|_| ()))?;
        let Some(node) = self.groups.get_mut(t.group).and_then(|g| g.get_mut(t.node)) else {
            return Ok(0);
        };
        let mut gaps = 0;
        Self::check_seq(node, head.seq, &mut gaps);
        self.counts.seq_gaps += gaps;
        let Some(dev) = t.device.and_then(|d| node.devices.get_mut(d)) else {
            return Ok(0);
        };
        self.aliases -= dev.die("DDEATH: the device went offline");
        self.counts.deaths += 1;
        self.changed = true;
        Ok(0)
    }
}

/// How often the health list is refreshed when only counters changed.
pub const UNITS_REFRESH: Duration = Duration::from_secs(1);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::test_util::{rec, VecSink};

    fn metric(name: Option<&str>, alias: Option<u64>, dt: u32, v: Value) -> Metric {
        Metric {
            name: name.map(Into::into),
            alias,
            datatype: Some(dt),
            value: Some(v),
            ..Metric::default()
        }
    }

    fn payload(ts: u64, seq: u64, metrics: Vec<Metric>) -> Vec<u8> {
        Payload {
            timestamp: Some(ts),
            metrics,
            seq: Some(seq),
        }
        .encode_to_vec()
    }

    fn cfg() -> SparkplugConfig {
        SparkplugConfig::default()
    }

    #[test]
    fn topics() {
        let t = parse_topic("spBv1.0/G/DDATA/E/D").expect("topic");
        assert_eq!(
            (t.group, t.kind, t.node, t.device),
            ("G", Kind::DData, "E", Some("D"))
        );
        assert_eq!(
            parse_topic("spBv1.0/STATE/host").map(|t| t.kind),
            Ok(Kind::Other)
        );
        assert_eq!(
            parse_topic("spBv1.0/G/NCMD/E").map(|t| t.kind),
            Ok(Kind::Other)
        );
        for bad in [
            "spAv1.0/G/NDATA/E",
            "spBv1.0/G/NDATA",
            "spBv1.0/G/NDATA/E/D",
            "spBv1.0/G/DDATA/E",
            "spBv1.0/G/XDATA/E",
            "spBv1.0/G/DDATA/E/D/x",
            "spBv1.0//NDATA/E",
        ] {
            assert!(parse_topic(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn signed_and_unsigned_values() {
        use datatype::*;
        let n = |dt, v| {
            number(
                Some(dt),
                &Metric {
                    value: Some(v),
                    ..Metric::default()
                },
            )
        };
        assert_eq!(n(INT8, Value::Int(-5i32 as u32)), Ok(-5.0));
        assert_eq!(n(INT8, Value::Int(0xFB)), Ok(-5.0));
        assert_eq!(n(INT16, Value::Int(-300i32 as u32)), Ok(-300.0));
        assert_eq!(n(INT32, Value::Int(-70000i32 as u32)), Ok(-70000.0));
        assert_eq!(n(INT64, Value::Long(-5i64 as u64)), Ok(-5.0));
        assert_eq!(n(UINT32, Value::Int(u32::MAX)), Ok(4294967295.0));
        assert_eq!(n(UINT32, Value::Long(7)), Ok(7.0));
        assert_eq!(n(FLOAT, Value::Float(1.5)), Ok(1.5));
        assert_eq!(n(BOOLEAN, Value::Boolean(true)), Ok(1.0));
        assert_eq!(n(DOUBLE, Value::Double(f64::NAN)), Err(Skip::NotNumeric));
        assert_eq!(n(12, Value::String("x".into())), Err(Skip::NotNumeric));
        assert_eq!(n(16, Value::Dataset(vec![])), Err(Skip::NotNumeric));
    }

    #[test]
    fn births_aliases_data_deaths_and_rebirth() {
        let mut sp = Sparkplug::new(cfg());
        let mut s = VecSink::default();
        let now = Instant::now();
        // Data before any birth: rejected, one rebirth request however many messages.
        let ddata = payload(
            1_700_000_000_100,
            1,
            vec![metric(None, Some(1), 10, Value::Double(2.5))],
        );
        for _ in 0..3 {
            assert_eq!(
                sp.handle("spBv1.0/G/DDATA/E/D", &ddata, now, &mut s),
                Err(SparkplugError::NodeNotBorn)
            );
        }
        let r = sp.take_rebirths();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].topic, "spBv1.0/G/NCMD/E");
        let cmd = Payload::decode(r[0].payload.as_slice()).expect("ncmd");
        assert_eq!(cmd.metrics[0].name.as_deref(), Some(REBIRTH_METRIC));
        assert_eq!(cmd.metrics[0].value, Some(Value::Boolean(true)));
        // Births: bdSeq and node control are not samples; the temperature is.
        let nbirth = payload(
            1_700_000_000_000,
            0,
            vec![
                metric(Some("bdSeq"), None, 8, Value::Long(3)),
                metric(Some(REBIRTH_METRIC), Some(0), 11, Value::Boolean(false)),
                metric(Some("Temp"), Some(5), 9, Value::Float(20.5)),
            ],
        );
        assert_eq!(sp.handle("spBv1.0/G/NBIRTH/E", &nbirth, now, &mut s), Ok(1));
        let dbirth = payload(
            1_700_000_000_050,
            1,
            vec![
                metric(Some("Inputs/Level"), Some(1), 10, Value::Double(1.0)),
                metric(Some("Label"), Some(2), 12, Value::String("x".into())),
            ],
        );
        assert_eq!(
            sp.handle("spBv1.0/G/DBIRTH/E/D", &dbirth, now, &mut s),
            Ok(1)
        );
        let mut ddata = Payload::decode(ddata.as_slice()).expect("p");
        ddata.seq = Some(2);
        ddata.metrics[0].timestamp = Some(1_700_000_000_200);
        ddata
            .metrics
            .push(metric(None, Some(2), 12, Value::String("y".into())));
        let ddata = ddata.encode_to_vec();
        assert_eq!(sp.handle("spBv1.0/G/DDATA/E/D", &ddata, now, &mut s), Ok(1));
        assert_eq!(
            s.0,
            vec![
                rec("E", "Temp", Some(1_700_000_000_000), 20.5),
                rec("E/D", "Inputs/Level", Some(1_700_000_000_050), 1.0),
                rec("E/D", "Inputs/Level", Some(1_700_000_000_200), 2.5),
            ]
        );
        // Unknown alias: nothing pushed, no new request within the interval.
        let bad = payload(
            1,
            3,
            vec![
                metric(None, Some(1), 10, Value::Double(3.0)),
                metric(None, Some(99), 10, Value::Double(3.0)),
            ],
        );
        assert_eq!(
            sp.handle("spBv1.0/G/DDATA/E/D", &bad, now, &mut s),
            Err(SparkplugError::UnknownAlias(99))
        );
        assert_eq!(s.0.len(), 3);
        // The birth answered the first request, so this one is asked at once, then paced.
        assert_eq!(sp.take_rebirths().len(), 1);
        let _ = sp.handle("spBv1.0/G/DDATA/E/D", &bad, now, &mut s);
        assert!(sp.take_rebirths().is_empty(), "paced");
        let later = now + Duration::from_secs(11);
        let _ = sp.handle("spBv1.0/G/DDATA/E/D", &bad, later, &mut s);
        assert_eq!(sp.take_rebirths().len(), 1);
        let units = |sp: &Sparkplug| -> Vec<(String, bool)> {
            sp.units()
                .into_iter()
                .map(|u| (u.device, u.healthy))
                .collect()
        };
        assert_eq!(units(&sp), [("E".into(), true), ("E/D".into(), true)]);
        // A stale NDEATH (older bdSeq) changes nothing; the right one kills node and devices.
        let death = |bd| payload(2, 0, vec![metric(Some("bdSeq"), None, 8, Value::Long(bd))]);
        assert_eq!(
            sp.handle("spBv1.0/G/NDEATH/E", &death(2), now, &mut s),
            Ok(0)
        );
        assert_eq!(units(&sp), [("E".into(), true), ("E/D".into(), true)]);
        assert_eq!(
            sp.handle("spBv1.0/G/NDEATH/E", &death(3), now, &mut s),
            Ok(0)
        );
        assert_eq!(units(&sp), [("E".into(), false), ("E/D".into(), false)]);
        let c = sp.counts();
        assert_eq!(
            (
                c.births,
                c.deaths,
                c.stale_deaths,
                c.unknown_alias,
                c.metrics
            ),
            (2, 1, 1, 3, 0)
        );
        assert_eq!(c.rebirths_requested, 3);
        assert!(c.skipped_metrics >= 2, "{c:?}");
    }

    #[test]
    fn garbage_is_rejected_and_caps_hold() {
        let mut sp = Sparkplug::new(SparkplugConfig {
            max_nodes: 1,
            max_metrics: 2,
            ..cfg()
        });
        let mut s = VecSink::default();
        let now = Instant::now();
        for bad in [&b"\xff\xff"[..], b"\x12\x05ab", b"\x0a\x01", b"\x13"] {
            let e = sp.handle("spBv1.0/G/NBIRTH/E", bad, now, &mut s);
            assert!(
                matches!(e, Err(SparkplugError::Protobuf(_))),
                "{bad:?}: {e:?}"
            );
        }
        let birth = payload(
            1,
            0,
            (0..5)
                .map(|i| metric(Some(&format!("m{i}")), Some(i), 9, Value::Float(1.0)))
                .collect(),
        );
        assert_eq!(sp.handle("spBv1.0/G/NBIRTH/E", &birth, now, &mut s), Ok(5));
        assert_eq!(sp.counts().metrics, 2);
        assert_eq!(
            sp.handle("spBv1.0/G/NBIRTH/F", &birth, now, &mut s),
            Err(SparkplugError::OverBudget("max_nodes"))
        );
        // Aliases over the budget are skipped, not answered with a rebirth.
        let data = payload(2, 1, vec![metric(None, Some(4), 9, Value::Float(2.0))]);
        assert_eq!(sp.handle("spBv1.0/G/NDATA/E", &data, now, &mut s), Ok(0));
        assert!(sp.take_rebirths().is_empty());
        assert!(sp.counts().over_budget >= 4);
        // seq: 0 (birth), 1 and 2 follow; 5 is a gap; u64::MAX from a broken node is a gap
        // like any other, twice (no overflow).
        let data = |seq| payload(3, seq, vec![metric(None, Some(0), 9, Value::Float(2.0))]);
        let mut gaps = |seq| {
            assert_eq!(
                sp.handle("spBv1.0/G/NDATA/E", &data(seq), now, &mut s),
                Ok(1)
            );
            sp.counts().seq_gaps
        };
        assert_eq!(gaps(2), 0);
        assert_eq!(gaps(5), 1);
        assert_eq!(gaps(u64::MAX), 2);
        assert_eq!(gaps(u64::MAX), 3);
    }
}
