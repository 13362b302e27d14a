//! Home Assistant MQTT discovery for the MQTT sink: retained `<prefix>/sensor/.../config` per
//! device metric, a `problem` binary sensor per device, device states and problem states.
//!
//! Pure state: it turns summaries, alert transitions and reconnects into messages to publish; the
//! MQTT sink publishes them (retained, QoS 1). Keys follow Home Assistant's MQTT discovery docs.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::{json, Value};

use crate::config::HomeAssistant;
use crate::model::{Millis, Summary};

/// One retained message to publish.
#[derive(Debug, Clone, PartialEq)]
pub struct Msg {
    pub topic: String,
    pub payload: Vec<u8>,
}

#[derive(Default)]
struct Device {
    /// Metric → latest value (from summaries).
    values: BTreeMap<String, f64>,
    /// Metric → summary time it was last in.
    seen: BTreeMap<String, Millis>,
    last_seen: Millis,
    /// (metric, detector) of the alerts firing now.
    firing: BTreeSet<(String, String)>,
}

pub struct Discovery {
    cfg: HomeAssistant,
    node: String,
    /// The sink's birth / Last Will topic (availability).
    status_topic: String,
    devices: HashMap<String, Device>,
    sensors: usize,
    /// Device metrics not announced because `max_sensors` was reached.
    pub skipped: u64,
    /// Series not in a summary this long are removed (`analysis.expire_after`), checked each minute.
    expire_after_ms: Option<Millis>,
    next_scan: Millis,
}

/// `[a-zA-Z0-9_-]` only (Home Assistant's rule for discovery topic ids); when a character had to
/// be replaced, a hash of the original keeps distinct ids distinct.
pub fn object_id(parts: &[&str]) -> String {
    let mut out = String::new();
    let mut changed = false;
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            out.push('_');
        }
        for b in p.bytes().chain(std::iter::once(0)) {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        for c in p.chars() {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                out.push(c);
            } else {
                out.push('_');
                changed = true;
            }
        }
    }
    if changed {
        out.push_str(&format!("_{:08x}", h as u32));
    }
    out
}

fn fill(template: &str, node: &str, device: &str) -> String {
    let safe = |s: &str| s.replace(['+', '#', '\0'], "_");
    template
        .replace("{node}", &safe(node))
        .replace("{device}", &safe(device))
}

impl Discovery {
    pub fn new(cfg: HomeAssistant, node: String, status_topic: String) -> Self {
        Discovery {
            cfg,
            node,
            status_topic,
            devices: HashMap::new(),
            sensors: 0,
            skipped: 0,
            expire_after_ms: None,
            next_scan: 0,
        }
    }

    /// Removes what the shards would have expired: sensors (and then devices) not in a summary
    /// for `after` (the analysis' `expire_after`).
    pub fn expire_after(&mut self, after: std::time::Duration) {
        self.expire_after_ms = i64::try_from(after.as_millis()).ok();
    }

    /// Empty retained payloads for series (and devices without series) not seen since `now - ttl`.
    fn expire(&mut self, now: Millis, out: &mut Vec<Msg>) {
        let Some(ttl) = self.expire_after_ms else {
            return;
        };
        if now < self.next_scan {
            return;
        }
        self.next_scan = now.saturating_add(60_000.min(ttl.max(1_000)));
        let cutoff = now.saturating_sub(ttl);
        let empty = |topic: String| Msg {
            topic,
            payload: Vec::new(),
        };
        let mut gone_devices = Vec::new();
        let mut removed = 0usize;
        for (id, d) in &mut self.devices {
            let old: Vec<String> = d
                .seen
                .iter()
                .filter(|(_, &t)| t < cutoff)
                .map(|(m, _)| m.clone())
                .collect();
            for m in old {
                d.seen.remove(&m);
                d.values.remove(&m);
                removed += 1;
                let oid = object_id(&[&self.node, id, &m]);
                out.push(empty(format!("{}/sensor/{oid}/config", self.cfg.prefix)));
            }
            if d.values.is_empty() && d.firing.is_empty() && d.last_seen < cutoff {
                gone_devices.push(id.clone());
            }
        }
        for id in gone_devices {
            self.devices.remove(&id);
            removed += 1;
            let oid = object_id(&[&self.node, &id, "problem"]);
            out.push(empty(format!(
                "{}/binary_sensor/{oid}/config",
                self.cfg.prefix
            )));
            out.push(empty(fill(&self.cfg.problem_topic, &self.node, &id)));
            out.push(empty(fill(&self.cfg.state_topic, &self.node, &id)));
        }
        self.sensors = self.sensors.saturating_sub(removed);
    }

    fn availability(&self, v: &mut Value) {
        v["availability_topic"] = json!(self.status_topic);
        v["availability_template"] = json!("{{ value_json.state }}");
        v["payload_available"] = json!("online");
        v["payload_not_available"] = json!("offline");
        v["origin"] = json!({
            "name": "edgewatch",
            "sw_version": env!("CARGO_PKG_VERSION"),
        });
    }

    fn node_id(&self) -> String {
        format!("edgewatch_{}", object_id(&[&self.node]))
    }

    fn device_block(&self, device: &str) -> Value {
        json!({
            "identifiers": [format!("edgewatch_{}", object_id(&[&self.node, device]))],
            "name": device,
            "manufacturer": "edgewatch",
            "model": "device",
            "via_device": self.node_id(),
        })
    }

    fn msg(topic: String, v: &Value) -> Msg {
        Msg {
            topic,
            payload: v.to_string().into_bytes(),
        }
    }

    /// The node itself (the device others are reached via): a connectivity binary sensor on the
    /// birth / Last Will topic.
    fn node_config(&self) -> Msg {
        let id = self.node_id();
        let mut v = json!({
            "name": "Connectivity",
            "unique_id": id,
            "device_class": "connectivity",
            "state_topic": self.status_topic,
            "value_template": "{{ 'ON' if value_json.state == 'online' else 'OFF' }}",
            "payload_on": "ON",
            "payload_off": "OFF",
            "device": {
                "identifiers": [id],
                "name": self.node,
                "manufacturer": "edgewatch",
                "model": "edgewatch",
                "sw_version": env!("CARGO_PKG_VERSION"),
            },
        });
        v["origin"] = json!({"name": "edgewatch", "sw_version": env!("CARGO_PKG_VERSION")});
        Self::msg(format!("{}/binary_sensor/{id}/config", self.cfg.prefix), &v)
    }

    fn sensor_config(&self, device: &str, metric: &str) -> Msg {
        let oid = object_id(&[&self.node, device, metric]);
        let key = serde_json::to_string(metric).unwrap_or_default();
        let mut v = json!({
            "name": metric,
            "unique_id": format!("edgewatch_{oid}"),
            "state_topic": fill(&self.cfg.state_topic, &self.node, device),
            "value_template": format!("{{{{ value_json[{key}] }}}}"),
            "state_class": "measurement",
            "device": self.device_block(device),
        });
        self.availability(&mut v);
        Self::msg(format!("{}/sensor/{oid}/config", self.cfg.prefix), &v)
    }

    fn problem_config(&self, device: &str) -> Msg {
        let oid = object_id(&[&self.node, device, "problem"]);
        let mut v = json!({
            "name": "Problem",
            "unique_id": format!("edgewatch_{oid}"),
            "device_class": "problem",
            "state_topic": fill(&self.cfg.problem_topic, &self.node, device),
            "payload_on": "ON",
            "payload_off": "OFF",
            "device": self.device_block(device),
        });
        self.availability(&mut v);
        Self::msg(
            format!("{}/binary_sensor/{oid}/config", self.cfg.prefix),
            &v,
        )
    }

    fn problem_state(&self, device: &str, on: bool) -> Msg {
        Msg {
            topic: fill(&self.cfg.problem_topic, &self.node, device),
            payload: if on { b"ON".to_vec() } else { b"OFF".to_vec() },
        }
    }

    fn device_state(&self, device: &str, d: &Device) -> Msg {
        let v: serde_json::Map<String, Value> = d
            .values
            .iter()
            .filter(|(_, x)| x.is_finite())
            .map(|(k, x)| (k.clone(), json!(x)))
            .collect();
        Msg {
            topic: fill(&self.cfg.state_topic, &self.node, device),
            payload: Value::Object(v).to_string().into_bytes(),
        }
    }

    /// Everything again after a (re)connection: the node, every sensor, problem sensor and state.
    pub fn on_connect(&self) -> Vec<Msg> {
        let mut out = vec![self.node_config()];
        for (id, d) in &self.devices {
            out.push(self.problem_config(id));
            out.push(self.problem_state(id, !d.firing.is_empty()));
            for m in d.values.keys() {
                out.push(self.sensor_config(id, m));
            }
            if !d.values.is_empty() {
                out.push(self.device_state(id, d));
            }
        }
        out
    }

    /// Makes room for one more device or sensor; false past `max_sensors`.
    fn admit(&mut self) -> bool {
        if self.sensors >= self.cfg.max_sensors {
            if self.skipped == 0 {
                tracing::warn!(
                    max_sensors = self.cfg.max_sensors,
                    "homeassistant: max_sensors reached; further device metrics are not announced"
                );
            }
            self.skipped += 1;
            return false;
        }
        self.sensors += 1;
        true
    }

    /// A device first seen gets its problem sensor (OFF until an alert fires).
    fn ensure_device(&mut self, device: &str, out: &mut Vec<Msg>) -> bool {
        if self.devices.contains_key(device) {
            return true;
        }
        if !self.admit() {
            return false;
        }
        self.devices.insert(device.to_string(), Device::default());
        out.push(self.problem_config(device));
        out.push(self.problem_state(device, false));
        true
    }

    /// New device metrics get their sensor config; each device in the summary its state.
    pub fn on_summary(&mut self, s: &Summary) -> Vec<Msg> {
        let mut out = Vec::new();
        let mut touched = BTreeSet::new();
        for e in &s.devices {
            if !self.ensure_device(&e.device, &mut out) {
                continue;
            }
            let known = self
                .devices
                .get(&e.device)
                .is_some_and(|d| d.values.contains_key(&e.metric));
            if !known {
                if !self.admit() {
                    continue;
                }
                out.push(self.sensor_config(&e.device, &e.metric));
            }
            if let Some(d) = self.devices.get_mut(&e.device) {
                d.values.insert(e.metric.clone(), e.last);
                d.seen.insert(e.metric.clone(), s.ts);
                d.last_seen = s.ts;
                touched.insert(e.device.as_str());
            }
        }
        for id in touched {
            if let Some(d) = self.devices.get(id) {
                out.push(self.device_state(id, d));
            }
        }
        self.expire(s.ts, &mut out);
        out
    }

    /// An alert transition: the device's problem state when it changes.
    pub fn on_alert(
        &mut self,
        device: &str,
        metric: &str,
        detector: &str,
        firing: bool,
    ) -> Vec<Msg> {
        let mut out = Vec::new();
        if !self.ensure_device(device, &mut out) {
            return out;
        }
        let Some(d) = self.devices.get_mut(device) else {
            return out;
        };
        let was = !d.firing.is_empty();
        let key = (metric.to_string(), detector.to_string());
        if firing {
            d.firing.insert(key);
        } else {
            d.firing.remove(&key);
        }
        let now = !d.firing.is_empty();
        if now != was {
            out.push(self.problem_state(device, now));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::SummaryEntry;

    fn entry(device: &str, metric: &str, last: f64) -> SummaryEntry {
        SummaryEntry {
            device: device.into(),
            metric: metric.into(),
            count: 1,
            mean: last,
            std: 0.0,
            min: last,
            max: last,
            last,
            total: 1,
        }
    }

    #[test]
    fn ids_keep_to_home_assistants_characters_and_stay_distinct() {
        assert_eq!(object_id(&["pi-1", "pump_2", "temp"]), "pi-1_pump_2_temp");
        let a = object_id(&["n", "site/a", "t"]);
        let b = object_id(&["n", "site.a", "t"]);
        assert!(a.starts_with("n_site_a_t_") && a != b, "{a} {b}");
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-'));
    }

    #[test]
    fn summaries_announce_new_metrics_once_and_alerts_toggle_the_problem_state() {
        let cfg = HomeAssistant {
            max_sensors: 3,
            ..HomeAssistant::default()
        };
        let mut d = Discovery::new(cfg, "pi".into(), "edgewatch/pi/status".into());
        let s = Summary {
            ts: 0,
            interval_ms: 1000,
            devices: vec![entry("d1", "t", 1.5), entry("d1", "h", 40.0)],
            vectors: Vec::new(),
        };
        let topics = |m: &[Msg]| m.iter().map(|m| m.topic.clone()).collect::<Vec<_>>();
        let out = d.on_summary(&s);
        assert_eq!(
            topics(&out),
            [
                "homeassistant/binary_sensor/pi_d1_problem/config",
                "edgewatch/pi/problem/d1",
                "homeassistant/sensor/pi_d1_t/config",
                "homeassistant/sensor/pi_d1_h/config",
                "edgewatch/pi/state/d1",
            ]
        );
        let cfg: Value = serde_json::from_slice(&out[2].payload).expect("json");
        assert_eq!(cfg["value_template"], "{{ value_json[\"t\"] }}");
        assert_eq!(cfg["device"]["via_device"], "edgewatch_pi");
        assert_eq!(cfg["availability_topic"], "edgewatch/pi/status");
        assert_eq!(out[4].payload, br#"{"h":40.0,"t":1.5}"#);
        // Known metrics: only the state; a new device past max_sensors: nothing, counted.
        let s2 = Summary {
            devices: vec![entry("d1", "t", 2.0), entry("d2", "t", 1.0)],
            ..s
        };
        assert_eq!(topics(&d.on_summary(&s2)), ["edgewatch/pi/state/d1"]);
        assert_eq!(d.skipped, 1);
        assert_eq!(d.on_alert("d1", "t", "z", true)[0].payload, b"ON");
        assert!(d.on_alert("d1", "h", "z", true).is_empty(), "already on");
        assert!(
            d.on_alert("d1", "t", "z", false).is_empty(),
            "h still fires"
        );
        assert_eq!(d.on_alert("d1", "h", "z", false)[0].payload, b"OFF");
        assert_eq!(d.on_connect().len(), 1 + 2 + 2 + 1);
    }

    #[test]
    fn series_not_summarised_for_expire_after_are_removed_with_empty_retained_payloads() {
        let mut d = Discovery::new(HomeAssistant::default(), "pi".into(), "s".into());
        d.expire_after(std::time::Duration::from_secs(120));
        let at = |ts, devices| Summary {
            ts,
            interval_ms: 1000,
            devices,
            vectors: Vec::new(),
        };
        d.on_summary(&at(
            1_000,
            vec![entry("d1", "t", 1.0), entry("d2", "t", 1.0)],
        ));
        d.on_summary(&at(100_000, vec![entry("d1", "t", 2.0)]));
        let out = d.on_summary(&at(200_000, vec![entry("d1", "t", 3.0)]));
        let gone: Vec<&str> = out
            .iter()
            .filter(|m| m.payload.is_empty())
            .map(|m| m.topic.as_str())
            .collect();
        assert_eq!(
            gone,
            [
                "homeassistant/sensor/pi_d2_t/config",
                "homeassistant/binary_sensor/pi_d2_problem/config",
                "edgewatch/pi/problem/d2",
                "edgewatch/pi/state/d2",
            ]
        );
        assert_eq!(d.sensors, 2, "d1 and d1/t remain");
        // It may come back: announced again.
        let back = d.on_summary(&at(201_000, vec![entry("d2", "t", 1.0)]));
        assert!(back
            .iter()
            .any(|m| m.topic == "homeassistant/sensor/pi_d2_t/config" && !m.payload.is_empty()));
    }
}
