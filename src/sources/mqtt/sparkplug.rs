//! Sparkplug B host application state: pure and synchronous (time is passed
//! in), fed one MQTT message at a time by the source task.
//!
//! Per edge node it tracks the BIRTH state, `bdSeq`, the last `seq` and the
//! alias -> metric bindings learned from NBIRTH/DBIRTH. Invariants:
//! - Aliases are only used as learned from the current BIRTH; data from a
//!   node (or device) without a valid BIRTH, with an unknown alias, or after
//!   a `seq` gap is NOT used: it is rejected (`not_born`) and a rebirth
//!   (NCMD `Node Control/Rebirth`) is requested, at most once per
//!   [`REBIRTH_INTERVAL_NS`] per node.
//! - NDEATH (with the bdSeq of the current BIRTH) and DDEATH mark the
//!   node's / device's points STALE; so does a node quiet for `node_timeout`.
//!   A stale NDEATH from an older session (other bdSeq) is ignored.
//! - The metric `Quality` property maps onto gaswatch quality
//!   ([`spb::metric_quality`]); `is_null` gives a BAD value.

use super::config::MqttSourceConfig;
use super::json::{Mapped, Reject, RejectReason};
use super::spb::{self, MessageType, Topic, proto};
use crate::engine::EnginePlan;
use crate::model::{Quality, TagId, Timestamp};
use prost::Message;
use std::collections::HashMap;

/// Least time between two rebirth requests to the same node.
pub const REBIRTH_INTERVAL_NS: i64 = 5_000_000_000;

#[derive(Debug, Clone, Copy)]
struct PointMap {
    tag: TagId,
    scale: f64,
    offset: f64,
}

#[derive(Debug, Clone, Copy)]
struct Binding {
    datatype: u32,
    point: Option<PointMap>,
}

#[derive(Debug, Default)]
struct NodeState {
    born: bool,
    bd_seq: Option<u64>,
    seq: u8,
    last_seen_ns: i64,
    quiet: bool,
    rebirth_asked_ns: Option<i64>,
    /// Devices with a current DBIRTH.
    devices: HashMap<String, bool>,
    /// (device, alias) -> binding; device "" for node metrics.
    aliases: HashMap<(String, u64), Binding>,
    /// (device, name) -> binding.
    names: HashMap<(String, String), Binding>,
}

/// What the source must do beyond delivering values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostAction {
    /// Publish NCMD `Node Control/Rebirth` to this edge node.
    Rebirth { node: String },
}

/// The host side of one Sparkplug source.
#[derive(Debug)]
pub struct SparkplugHost {
    group: String,
    /// (node, device, metric name) -> point.
    wanted: HashMap<(String, String, String), PointMap>,
    /// node -> every tag of that node (for STALE on death/quiet).
    node_tags: HashMap<String, Vec<(String, TagId)>>,
    nodes: HashMap<String, NodeState>,
    node_timeout_ns: Option<i64>,
    payload: proto::Payload,
}

impl SparkplugHost {
    /// Compiles a validated source config against the plan.
    pub fn new(cfg: &MqttSourceConfig, plan: &EnginePlan) -> SparkplugHost {
        let mut wanted = HashMap::new();
        let mut node_tags: HashMap<String, Vec<(String, TagId)>> = HashMap::new();
        for p in &cfg.points {
            let (Some(node), Some(metric), Some(tag)) =
                (p.node.clone(), p.metric.clone(), plan.tag(&p.name))
            else {
                continue;
            };
            let device = p.device.clone().unwrap_or_default();
            node_tags
                .entry(node.clone())
                .or_default()
                .push((device.clone(), tag));
            wanted.insert(
                (node, device, metric),
                PointMap {
                    tag,
                    scale: p.scale,
                    offset: p.offset,
                },
            );
        }
        SparkplugHost {
            group: cfg.group_id.clone().unwrap_or_default(),
            wanted,
            node_tags,
            nodes: HashMap::new(),
            node_timeout_ns: cfg
                .node_timeout
                .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)),
            payload: proto::Payload::default(),
        }
    }

    /// The subscription filter: `spBv1.0/<group>/#`.
    pub fn filter(&self) -> String {
        format!("{}/{}/#", spb::NAMESPACE, self.group)
    }

    /// The group hosted.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// Handles one message; values and rejects go to `out` (cleared first).
    pub fn handle(
        &mut self,
        topic: &str,
        payload: &[u8],
        arrival: Timestamp,
        out: &mut Mapped,
    ) -> Option<HostAction> {
        out.clear();
        let Some(t) = Topic::parse(topic).filter(|t| t.group == self.group) else {
            out.rejects.push(reject(
                RejectReason::UnmappedTopic,
                "not a Sparkplug B topic of this group",
            ));
            return None;
        };
        if matches!(
            t.kind,
            MessageType::NCmd | MessageType::DCmd | MessageType::State
        ) {
            return None;
        }
        self.payload.clear();
        if let Err(e) = self.payload.merge(payload) {
            out.rejects.push(reject(
                RejectReason::Malformed,
                format!("not a Sparkplug B payload: {e}"),
            ));
            return None;
        }
        let now = arrival.nanos();
        let node = self.nodes.entry(t.node.to_string()).or_default();
        node.last_seen_ns = now;
        node.quiet = false;
        match t.kind {
            MessageType::NBirth => {
                node.aliases.clear();
                node.names.clear();
                node.devices.clear();
                node.bd_seq = self
                    .payload
                    .metrics
                    .iter()
                    .find(|m| m.name.as_deref() == Some(spb::BDSEQ_METRIC))
                    .and_then(|m| spb::metric_number(spb::datatype::INT64, m.value.as_ref()))
                    .map(|f| f as u64);
                node.seq = self.payload.seq.unwrap_or(0) as u8;
                node.born = true;
                node.rebirth_asked_ns = None;
                learn(&self.wanted, node, &t, &self.payload);
                values(node, &t, &self.payload, arrival, out);
                None
            }
            MessageType::NDeath => {
                let bd = self
                    .payload
                    .metrics
                    .iter()
                    .find(|m| m.name.as_deref() == Some(spb::BDSEQ_METRIC))
                    .and_then(|m| spb::metric_number(spb::datatype::INT64, m.value.as_ref()))
                    .map(|f| f as u64);
                if node.born && bd.is_some() && node.bd_seq.is_some() && bd != node.bd_seq {
                    // The will of an older session; the node is alive.
                    return None;
                }
                node.born = false;
                node.devices.clear();
                stale(&self.node_tags, t.node, None, arrival, out);
                None
            }
            _ => {
                // Every other message carries the node's seq.
                let seq = self.payload.seq.map(|s| s as u8);
                let expected = node.seq.wrapping_add(1);
                let device_born = t.device.is_empty()
                    || node.devices.get(t.device).copied().unwrap_or(false)
                    || t.kind == MessageType::DBirth;
                if !node.born || seq != Some(expected) || !device_born {
                    let why = if !node.born {
                        "data before NBIRTH".to_string()
                    } else if !device_born {
                        format!("data before DBIRTH of device {:?}", t.device)
                    } else {
                        format!("seq gap: expected {expected}, got {seq:?}")
                    };
                    node.born = false;
                    out.rejects.push(reject(RejectReason::NotBorn, why));
                    return ask_rebirth(node, t.node, now);
                }
                node.seq = expected;
                match t.kind {
                    MessageType::DBirth => {
                        node.devices.insert(t.device.to_string(), true);
                        node.aliases.retain(|(d, _), _| d != t.device);
                        node.names.retain(|(d, _), _| d != t.device);
                        learn(&self.wanted, node, &t, &self.payload);
                        values(node, &t, &self.payload, arrival, out);
                        None
                    }
                    MessageType::DDeath => {
                        node.devices.insert(t.device.to_string(), false);
                        stale(&self.node_tags, t.node, Some(t.device), arrival, out);
                        None
                    }
                    _ => {
                        if values(node, &t, &self.payload, arrival, out) {
                            None
                        } else {
                            node.born = false;
                            ask_rebirth(node, t.node, now)
                        }
                    }
                }
            }
        }
    }

    /// Marks the points of nodes quiet for longer than `node_timeout` STALE
    /// (once per quiet spell).
    pub fn tick(&mut self, now: Timestamp, out: &mut Mapped) {
        out.clear();
        let Some(limit) = self.node_timeout_ns else {
            return;
        };
        for (id, node) in &mut self.nodes {
            if !node.quiet && now.nanos().saturating_sub(node.last_seen_ns) > limit {
                node.quiet = true;
                stale(&self.node_tags, id, None, now, out);
            }
        }
    }
}

fn reject(reason: RejectReason, detail: impl Into<String>) -> Reject {
    Reject {
        reason,
        detail: detail.into(),
    }
}

fn ask_rebirth(node: &mut NodeState, id: &str, now: i64) -> Option<HostAction> {
    if node
        .rebirth_asked_ns
        .is_some_and(|t| now.saturating_sub(t) < REBIRTH_INTERVAL_NS)
    {
        return None;
    }
    node.rebirth_asked_ns = Some(now);
    Some(HostAction::Rebirth {
        node: id.to_string(),
    })
}

/// Learns names, aliases and datatypes from a BIRTH.
fn learn(
    wanted: &HashMap<(String, String, String), PointMap>,
    node: &mut NodeState,
    t: &Topic<'_>,
    p: &proto::Payload,
) {
    for m in &p.metrics {
        let Some(name) = &m.name else { continue };
        let b = Binding {
            datatype: m.datatype.unwrap_or(0),
            point: wanted
                .get(&(t.node.to_string(), t.device.to_string(), name.clone()))
                .copied(),
        };
        if let Some(alias) = m.alias {
            node.aliases.insert((t.device.to_string(), alias), b);
        }
        node.names.insert((t.device.to_string(), name.clone()), b);
    }
}

/// Maps the metrics of a BIRTH or DATA onto points. Returns false when a
/// metric could not be resolved (unknown alias or name): a rebirth is due.
fn values(
    node: &NodeState,
    t: &Topic<'_>,
    p: &proto::Payload,
    arrival: Timestamp,
    out: &mut Mapped,
) -> bool {
    let mut resolved = true;
    let payload_ts = p.timestamp.map(ms_to_ts).unwrap_or(arrival);
    for m in &p.metrics {
        let binding = match (&m.name, m.alias) {
            (Some(name), _) => node.names.get(&(t.device.to_string(), name.clone())),
            (None, Some(alias)) => node.aliases.get(&(t.device.to_string(), alias)),
            (None, None) => None,
        };
        let Some(b) = binding else {
            out.rejects.push(reject(
                RejectReason::NotBorn,
                format!(
                    "metric {:?} (alias {:?}) is not in the BIRTH",
                    m.name, m.alias
                ),
            ));
            resolved = false;
            continue;
        };
        let Some(pm) = b.point else { continue };
        let ts = m.timestamp.map(ms_to_ts).unwrap_or(payload_ts);
        let datatype = m.datatype.unwrap_or(b.datatype);
        let (value, quality) = if m.is_null == Some(true) {
            (f64::NAN, Quality::Bad)
        } else {
            match spb::metric_number(datatype, m.value.as_ref()) {
                Some(raw) => (raw * pm.scale + pm.offset, spb::metric_quality(m)),
                None => {
                    out.rejects.push(reject(
                        RejectReason::NotANumber,
                        format!("metric {:?} has no numeric value", m.name),
                    ));
                    continue;
                }
            }
        };
        let value = if quality == Quality::Stale {
            f64::NAN
        } else {
            value
        };
        push(out, ts, pm.tag, value, quality);
    }
    resolved
}

fn push(out: &mut Mapped, ts: Timestamp, tag: TagId, value: f64, quality: Quality) {
    match out.batches.iter_mut().find(|(t, _)| *t == ts) {
        Some((_, v)) => v.push((tag, value, quality)),
        None => out.batches.push((ts, vec![(tag, value, quality)])),
    }
}

fn stale(
    node_tags: &HashMap<String, Vec<(String, TagId)>>,
    node: &str,
    device: Option<&str>,
    ts: Timestamp,
    out: &mut Mapped,
) {
    for (d, tag) in node_tags.get(node).into_iter().flatten() {
        if device.is_none_or(|want| want == d) {
            push(out, ts, *tag, f64::NAN, Quality::Stale);
        }
    }
}

fn ms_to_ts(ms: u64) -> Timestamp {
    Timestamp(
        i64::try_from(ms)
            .unwrap_or(i64::MAX)
            .saturating_mul(1_000_000),
    )
}
