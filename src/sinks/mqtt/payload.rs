//! Dispatch payloads and topics (see `docs/dispatch-protocol.md`), and the
//! spool record format "publish this (topic, payload, retain, qos)".
//!
//! The engine task turns alarm transitions and balance results into
//! ready-to-publish [`PublishRecord`]s (via [`alarm_records`] and
//! [`balance_record`]) and appends them to the MQTT sink's spool; the
//! publisher only decodes and sends them, so it never needs the plan.
//!
//! Invariants:
//! - Every JSON payload carries `"v":1`; fields are only ever added.
//! - Non-finite numbers are encoded as `null`, never as a string.
//! - The topic suffix after `alarms/active/` is the alarm id verbatim (its
//!   `/` become topic levels), with MQTT wildcards `+` and `#` replaced by `_`.

use crate::engine::plan::AlarmDef;
use crate::model::{
    AlarmAction, AlarmCommand, AlarmEvent, AlarmHealth, AlarmKind, BalanceResult, CommandAction,
    CommandRefusal, CommandReply, LeakAlert, Timestamp,
};
use serde::Serialize;

/// Version of every JSON payload and of the spool envelope.
pub const PAYLOAD_VERSION: u8 = 1;

/// QoS used for every dispatch message (at least once).
pub const QOS_AT_LEAST_ONCE: u8 = 1;

/// The topics of one station under one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    base: String,
}

impl Topics {
    /// Topics `<prefix>/<station>/...`.
    pub fn new(prefix: &str, station: &str) -> Topics {
        Topics {
            base: format!("{}/{}", sanitize(prefix), sanitize(station)),
        }
    }

    /// `<prefix>/<station>/alarms/events`: every transition, QoS 1, not retained.
    pub fn alarm_events(&self) -> String {
        format!("{}/alarms/events", self.base)
    }

    /// `<prefix>/<station>/alarms/active/<alarm id as levels>`: retained while active.
    pub fn alarm_active(&self, alarm_id: &str) -> String {
        format!("{}/alarms/active/{}", self.base, sanitize(alarm_id))
    }

    /// `<prefix>/<station>/status`: retained online/offline, also the last will.
    pub fn status(&self) -> String {
        format!("{}/status", self.base)
    }

    /// `<prefix>/<station>/commands`: commands from dispatchers (subscribed).
    pub fn commands(&self) -> String {
        format!("{}/commands", self.base)
    }

    /// `<prefix>/<station>/replies`: answers to commands, QoS 1, not retained.
    pub fn replies(&self) -> String {
        format!("{}/replies", self.base)
    }

    /// `<prefix>/<station>/alarms/health`: alarm-system health, QoS 1, retained.
    pub fn health(&self) -> String {
        format!("{}/alarms/health", self.base)
    }

    /// `<prefix>/<station>/balance`: closed balance windows, QoS 1, not retained.
    pub fn balance(&self) -> String {
        format!("{}/balance", self.base)
    }

    /// `<prefix>/<station>/leaks`: leak alerts, QoS 1, not retained.
    pub fn leaks(&self) -> String {
        format!("{}/leaks", self.base)
    }
}

/// Replaces the MQTT wildcards (and NUL, which MQTT forbids) so a name can be
/// used inside a topic.
fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if matches!(c, '+' | '#' | '\0') {
                '_'
            } else {
                c
            }
        })
        .collect()
}

/// A finite number, or `None` (JSON `null`).
fn finite(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

#[derive(Serialize)]
struct AlarmJson<'a> {
    v: u8,
    station: &'a str,
    alarm_id: &'a str,
    source: &'a str,
    kind: &'a str,
    priority: &'a str,
    action: &'a str,
    value: Option<f64>,
    limit: Option<f64>,
    ts: String,
    ts_ns: i64,
    seq: u64,
    message: String,
    state: &'a str,
    annunciation: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    shelved_until_ns: Option<i64>,
    level: u8,
    escalation: &'a str,
    realarms: u32,
    repeats: u32,
    chattering: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    flood_parent: Option<u64>,
}

/// Human-readable one-liner, e.g. `PT_OUT1 above HH limit 1750 kPa`.
fn alarm_message(def: &AlarmDef, e: &AlarmEvent, unit: &str) -> String {
    let high = !matches!(e.kind, AlarmKind::Low | AlarmKind::LowLow);
    let unit = if unit.is_empty() {
        String::new()
    } else {
        format!(" {unit}")
    };
    let dir = match (high, e.action) {
        (true, AlarmAction::Raise) => "above",
        (false, AlarmAction::Raise) => "below",
        (true, AlarmAction::Clear) => "back below",
        (false, AlarmAction::Clear) => "back above",
        (_, action) => {
            return format!(
                "{} {} {}: {}",
                def.source,
                e.kind.code(),
                action.as_str(),
                e.detail.state.as_str()
            );
        }
    };
    match e.kind {
        AlarmKind::HighHigh
        | AlarmKind::High
        | AlarmKind::Low
        | AlarmKind::LowLow
        | AlarmKind::Imbalance
        | AlarmKind::RateOfChange => {}
        kind => {
            let what = match (kind, e.action) {
                (AlarmKind::SlamShut, AlarmAction::Raise) => "slam-shut valve tripped",
                (AlarmKind::SlamShut, _) => "slam-shut valve no longer tripped",
                (AlarmKind::GasDetector, AlarmAction::Raise) => "gas detected",
                (AlarmKind::GasDetector, _) => "gas detector back to normal",
                (AlarmKind::Door, AlarmAction::Raise) => "door open",
                (AlarmKind::Door, _) => "door closed",
                (AlarmKind::CommLoss, AlarmAction::Raise) => "no data from the device",
                (AlarmKind::CommLoss, _) => "device communicating again",
                (AlarmKind::BadQuality, AlarmAction::Raise) => "bad data quality",
                (AlarmKind::BadQuality, _) => "data quality good again",
                (AlarmKind::Leak, AlarmAction::Raise) => "leak suspected (sequential leak test)",
                (AlarmKind::Leak, _) => "leak test back to normal",
                (AlarmKind::Rupture, AlarmAction::Raise) => {
                    "pressure falling faster than the rupture limit"
                }
                (AlarmKind::Rupture, _) => "pressure fall back below the rupture limit",
                (AlarmKind::Flood, AlarmAction::Raise) => "alarm flood",
                (AlarmKind::Flood, _) => "alarm flood over",
                (_, AlarmAction::Raise) => "in alarm state",
                _ => "back to normal",
            };
            return format!("{} {what}", def.source);
        }
    }
    format!(
        "{} {dir} {} limit {}{unit}",
        def.source,
        e.kind.code(),
        e.limit
    )
}

/// The JSON v1 alarm event (one line, no trailing newline). `def` is the
/// definition `e.alarm` points at; `unit` is the source tag's unit ("%" for
/// the imbalance alarm).
pub fn encode_alarm(station: &str, def: &AlarmDef, e: &AlarmEvent, unit: &str) -> Vec<u8> {
    encode_alarm_with(station, def, e, unit, "")
}

/// [`encode_alarm`] naming the escalation level (from the policy's chain).
pub fn encode_alarm_with(
    station: &str,
    def: &AlarmDef,
    e: &AlarmEvent,
    unit: &str,
    escalation: &str,
) -> Vec<u8> {
    let json = AlarmJson {
        v: PAYLOAD_VERSION,
        station,
        alarm_id: &def.id,
        source: &def.source,
        kind: e.kind.code(),
        priority: e.priority.as_str(),
        action: e.action.as_str(),
        value: finite(e.value),
        limit: finite(e.limit),
        ts: e.ts.to_rfc3339(),
        ts_ns: e.ts.nanos(),
        seq: e.seq,
        message: alarm_message(def, e, unit),
        state: e.detail.state.as_str(),
        annunciation: e.detail.annunciation.as_str(),
        shelved_until_ns: e.detail.shelved_until.map(Timestamp::nanos),
        level: e.detail.level,
        escalation,
        realarms: e.detail.realarms,
        repeats: e.detail.repeats,
        chattering: e.detail.chattering,
        flood_parent: e.detail.flood_parent,
    };
    // Serializing a struct of strings and numbers into a Vec cannot fail.
    serde_json::to_vec(&json).unwrap_or_default()
}

#[derive(Serialize)]
struct BalanceJson<'a> {
    v: u8,
    station: &'a str,
    group: &'a str,
    start: String,
    end: String,
    start_ns: i64,
    end_ns: i64,
    inlet_sm3: Option<f64>,
    outlet_sm3: Option<f64>,
    linepack_change_sm3: Option<f64>,
    imbalance_sm3: Option<f64>,
    imbalance_percent: Option<f64>,
    uncertainty_percent: Option<f64>,
    coverage: Option<f64>,
    quality: &'a str,
}

/// The JSON v1 balance result (one line, no trailing newline).
pub fn encode_balance(station: &str, b: &BalanceResult) -> Vec<u8> {
    let json = BalanceJson {
        v: PAYLOAD_VERSION,
        station,
        group: b.group.as_str(),
        start: b.start.to_rfc3339(),
        end: b.end.to_rfc3339(),
        start_ns: b.start.nanos(),
        end_ns: b.end.nanos(),
        inlet_sm3: finite(b.inlet_sm3),
        outlet_sm3: finite(b.outlet_sm3),
        linepack_change_sm3: finite(b.linepack_change_sm3),
        imbalance_sm3: finite(b.imbalance_sm3),
        imbalance_percent: finite(b.imbalance_percent),
        uncertainty_percent: finite(b.uncertainty_percent),
        coverage: finite(b.coverage),
        quality: b.quality.as_str(),
    };
    serde_json::to_vec(&json).unwrap_or_default()
}

#[derive(Serialize)]
struct StatusJson<'a> {
    v: u8,
    station: &'a str,
    state: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    ts: Option<String>,
}

/// Station status: `online`/`offline` with the time, or without `ts` for
/// the last will (which is fixed at connect time, so a time would lie).
pub fn encode_status(station: &str, online: bool, ts: Option<Timestamp>) -> Vec<u8> {
    let json = StatusJson {
        v: PAYLOAD_VERSION,
        station,
        state: if online { "online" } else { "offline" },
        ts: ts.map(Timestamp::to_rfc3339),
    };
    serde_json::to_vec(&json).unwrap_or_default()
}

/// One spooled "publish this" instruction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishRecord {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
    /// 0, 1 or 2; dispatch records are always 1.
    pub qos: u8,
}

/// Why a spool record could not be decoded (a corrupt or foreign record).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("record is {0} bytes, shorter than the 5-byte header")]
    TooShort(usize),
    #[error("unknown record version {0}, expected 1")]
    Version(u8),
    #[error("invalid QoS {0}, expected 0, 1 or 2")]
    Qos(u8),
    #[error("topic length {topic_len} exceeds the record ({available} bytes left)")]
    TopicLength { topic_len: usize, available: usize },
    #[error("topic is not UTF-8")]
    TopicUtf8,
}

const FLAG_RETAIN: u8 = 0b0000_0001;

/// Encodes a QoS 1 publish as a spool record.
///
/// Layout (all integers big-endian):
/// `version u8 (=1) | flags u8 (bit 0 retain) | qos u8 | topic_len u16 | topic | payload`.
/// Topics longer than 65535 bytes are not valid MQTT and are truncated.
pub fn encode_record(topic: &str, payload: &[u8], retain: bool) -> Vec<u8> {
    let topic = topic.as_bytes();
    let topic = &topic[..topic.len().min(u16::MAX as usize)];
    let mut out = Vec::with_capacity(5 + topic.len() + payload.len());
    out.push(PAYLOAD_VERSION);
    out.push(if retain { FLAG_RETAIN } else { 0 });
    out.push(QOS_AT_LEAST_ONCE);
    out.extend_from_slice(&(topic.len() as u16).to_be_bytes());
    out.extend_from_slice(topic);
    out.extend_from_slice(payload);
    out
}

/// Decodes a record written by [`encode_record`].
pub fn decode_record(bytes: &[u8]) -> Result<PublishRecord, RecordError> {
    let [version, flags, qos, hi, lo, rest @ ..] = bytes else {
        return Err(RecordError::TooShort(bytes.len()));
    };
    if *version != PAYLOAD_VERSION {
        return Err(RecordError::Version(*version));
    }
    if *qos > 2 {
        return Err(RecordError::Qos(*qos));
    }
    let topic_len = u16::from_be_bytes([*hi, *lo]) as usize;
    if topic_len > rest.len() {
        return Err(RecordError::TopicLength {
            topic_len,
            available: rest.len(),
        });
    }
    let (topic, payload) = rest.split_at(topic_len);
    let topic = std::str::from_utf8(topic).map_err(|_| RecordError::TopicUtf8)?;
    Ok(PublishRecord {
        topic: topic.to_string(),
        payload: payload.to_vec(),
        retain: flags & FLAG_RETAIN != 0,
        qos: *qos,
    })
}

/// The two spool records of one alarm transition, in publish order:
/// 1. the event on `alarms/events` (not retained);
/// 2. the retained state on `alarms/active/<id>`: the same JSON on raise, an
///    empty payload on clear (which deletes the retained message).
///
/// Append both with [`crate::buffer::RecordClass::Alarm`].
pub fn alarm_records(
    topics: &Topics,
    station: &str,
    def: &AlarmDef,
    e: &AlarmEvent,
    unit: &str,
) -> [Vec<u8>; 2] {
    alarm_records_with(topics, station, def, e, unit, "")
}

/// [`alarm_records`] naming the escalation level. The retained state stays
/// while the alarm is standing (active, or returned but unacknowledged or
/// latched): an ISA-18.2 alarm needs the operator until then.
pub fn alarm_records_with(
    topics: &Topics,
    station: &str,
    def: &AlarmDef,
    e: &AlarmEvent,
    unit: &str,
    escalation: &str,
) -> [Vec<u8>; 2] {
    let json = encode_alarm_with(station, def, e, unit, escalation);
    let active = topics.alarm_active(&def.id);
    let standing = e.action == AlarmAction::Raise || e.detail.state.is_standing();
    let state = if standing {
        encode_record(&active, &json, true)
    } else {
        encode_record(&active, &[], true)
    };
    [encode_record(&topics.alarm_events(), &json, false), state]
}

#[derive(Serialize)]
struct ReplyJson<'a> {
    v: u8,
    station: &'a str,
    request_id: &'a str,
    alarm_id: &'a str,
    operator: &'a str,
    action: &'a str,
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
    detail: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    seq: Option<u64>,
    ts: String,
    ts_ns: i64,
}

/// The JSON v1 reply to a command.
pub fn encode_reply(station: &str, r: &CommandReply) -> Vec<u8> {
    let c = &r.command;
    let json = ReplyJson {
        v: PAYLOAD_VERSION,
        station,
        request_id: &c.request_id,
        alarm_id: &c.alarm_id,
        operator: &c.operator,
        action: c.action.as_str(),
        ok: r.refused.is_none(),
        error: r.refused.map(CommandRefusal::as_str),
        detail: &r.detail,
        seq: r.seq,
        ts: c.ts.to_rfc3339(),
        ts_ns: c.ts.nanos(),
    };
    serde_json::to_vec(&json).unwrap_or_default()
}

/// The spool record of a command reply on `<prefix>/<station>/replies`;
/// append with [`crate::buffer::RecordClass::Alarm`] (replies are never dropped).
pub fn reply_record(topics: &Topics, station: &str, r: &CommandReply) -> Vec<u8> {
    encode_record(&topics.replies(), &encode_reply(station, r), false)
}

/// Why a command payload was not accepted.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CommandParseError {
    #[error("not a JSON command object: {0}")]
    Json(String),
    #[error("unsupported version {0}, expected 1")]
    Version(u64),
    #[error("unknown action {0:?}, expected ack, shelve, unshelve or reset")]
    Action(String),
    #[error("field {0} is missing or empty")]
    Missing(&'static str),
    #[error("shelve needs duration_s >= 0 (0 = one-shot), got {0}")]
    Duration(f64),
}

#[derive(serde::Deserialize)]
struct CommandJson {
    v: Option<u64>,
    #[serde(default)]
    request_id: String,
    #[serde(default)]
    alarm_id: String,
    #[serde(default)]
    operator: String,
    #[serde(default)]
    action: String,
    duration_s: Option<f64>,
    sent_ns: Option<i64>,
}

/// Parses a command payload received at `now` (see docs/dispatch-protocol.md).
pub fn decode_command(payload: &[u8], now: Timestamp) -> Result<AlarmCommand, CommandParseError> {
    let c: CommandJson =
        serde_json::from_slice(payload).map_err(|e| CommandParseError::Json(e.to_string()))?;
    if let Some(v) = c.v
        && v != u64::from(PAYLOAD_VERSION)
    {
        return Err(CommandParseError::Version(v));
    }
    for (name, value) in [
        ("request_id", &c.request_id),
        ("alarm_id", &c.alarm_id),
        ("operator", &c.operator),
    ] {
        if value.trim().is_empty() {
            return Err(CommandParseError::Missing(name));
        }
    }
    let action = match c.action.as_str() {
        "ack" => CommandAction::Ack,
        "unshelve" => CommandAction::Unshelve,
        "reset" => CommandAction::Reset,
        "shelve" => {
            let d = c
                .duration_s
                .ok_or(CommandParseError::Missing("duration_s"))?;
            if !(0.0..1e9).contains(&d) {
                return Err(CommandParseError::Duration(d));
            }
            CommandAction::Shelve {
                duration_ns: (d * 1e9) as i64,
            }
        }
        other => return Err(CommandParseError::Action(other.to_string())),
    };
    Ok(AlarmCommand {
        request_id: c.request_id,
        alarm_id: c.alarm_id,
        operator: c.operator,
        action,
        ts: now,
        sent: c.sent_ns.map(Timestamp),
    })
}

#[derive(Serialize)]
struct HealthJson<'a> {
    v: u8,
    station: &'a str,
    ts: String,
    ts_ns: i64,
    alarms_per_10min: u32,
    flood: bool,
    chattering: u32,
    standing: u32,
    unacked: u32,
    shelved: u32,
    max_unacked_s: Option<f64>,
    activations_total: u64,
}

/// The JSON v1 alarm-system health on `<prefix>/<station>/alarms/health`.
pub fn encode_health(station: &str, h: &AlarmHealth) -> Vec<u8> {
    let json = HealthJson {
        v: PAYLOAD_VERSION,
        station,
        ts: h.ts.to_rfc3339(),
        ts_ns: h.ts.nanos(),
        alarms_per_10min: h.alarms_per_10min,
        flood: h.flood,
        chattering: h.chattering,
        standing: h.standing,
        unacked: h.unacked,
        shelved: h.shelved,
        max_unacked_s: finite(h.max_unacked_s),
        activations_total: h.activations_total,
    };
    serde_json::to_vec(&json).unwrap_or_default()
}

#[derive(Serialize)]
struct LeakJson<'a> {
    v: u8,
    station: &'a str,
    group: &'a str,
    window_s: i64,
    start: String,
    start_ns: i64,
    detected: String,
    detected_ns: i64,
    rate_sm3_per_h: Option<f64>,
    rate_uncertainty_sm3_per_h: Option<f64>,
    rate_percent: Option<f64>,
    confidence: Option<f64>,
    method: &'a str,
}

/// The JSON v1 leak alert (one line, no trailing newline).
pub fn encode_leak(station: &str, a: &LeakAlert) -> Vec<u8> {
    let json = LeakJson {
        v: PAYLOAD_VERSION,
        station,
        group: a.group.as_str(),
        window_s: a.window_s,
        start: a.start.to_rfc3339(),
        start_ns: a.start.nanos(),
        detected: a.detected.to_rfc3339(),
        detected_ns: a.detected.nanos(),
        rate_sm3_per_h: finite(a.rate_sm3_per_h),
        rate_uncertainty_sm3_per_h: finite(a.rate_uncertainty_sm3_per_h),
        rate_percent: finite(a.rate_percent),
        confidence: finite(a.confidence),
        method: a.method(),
    };
    serde_json::to_vec(&json).unwrap_or_default()
}

/// The spool record of one leak alert; append with
/// [`crate::buffer::RecordClass::Alarm`] (never dropped, sent with alarms).
pub fn leak_record(topics: &Topics, station: &str, a: &LeakAlert) -> Vec<u8> {
    encode_record(&topics.leaks(), &encode_leak(station, a), false)
}

/// The spool record of one balance result; append with
/// [`crate::buffer::RecordClass::Balance`].
pub fn balance_record(topics: &Topics, station: &str, b: &BalanceResult) -> Vec<u8> {
    encode_record(&topics.balance(), &encode_balance(station, b), false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Priority, Quality};

    fn def() -> AlarmDef {
        AlarmDef {
            id: "cg01/PT_OUT1/HH".to_string(),
            source: "PT_OUT1".to_string(),
            kind: AlarmKind::HighHigh,
            priority: Priority::High,
            limit: 1750.0,
            deadband: 35.0,
            mgmt: Default::default(),
        }
    }

    fn event(action: AlarmAction) -> AlarmEvent {
        AlarmEvent {
            alarm: 0,
            kind: AlarmKind::HighHigh,
            action,
            priority: Priority::High,
            value: 1760.2,
            limit: 1750.0,
            ts: Timestamp(1_795_821_743_123_000_000),
            seq: 17,
            detail: Default::default(),
        }
    }

    #[test]
    fn alarm_raise_json_is_exact() {
        let got = encode_alarm("cg01", &def(), &event(AlarmAction::Raise), "kPa");
        let want = r#"{"v":1,"station":"cg01","alarm_id":"cg01/PT_OUT1/HH","source":"PT_OUT1","kind":"HH","priority":"high","action":"raise","value":1760.2,"limit":1750.0,"ts":"2026-11-27T23:22:23.123Z","ts_ns":1795821743123000000,"seq":17,"message":"PT_OUT1 above HH limit 1750 kPa","state":"normal","annunciation":"shown","level":0,"escalation":"","realarms":0,"repeats":0,"chattering":false}"#;
        assert_eq!(String::from_utf8_lossy(&got), want);
    }

    #[test]
    fn alarm_clear_json_keeps_the_id_and_says_back_below() {
        let mut e = event(AlarmAction::Clear);
        e.value = f64::NAN;
        e.seq = 18;
        let got = encode_alarm("cg01", &def(), &e, "");
        let want = r#"{"v":1,"station":"cg01","alarm_id":"cg01/PT_OUT1/HH","source":"PT_OUT1","kind":"HH","priority":"high","action":"clear","value":null,"limit":1750.0,"ts":"2026-11-27T23:22:23.123Z","ts_ns":1795821743123000000,"seq":18,"message":"PT_OUT1 back below HH limit 1750","state":"normal","annunciation":"shown","level":0,"escalation":"","realarms":0,"repeats":0,"chattering":false}"#;
        assert_eq!(String::from_utf8_lossy(&got), want);
    }

    #[test]
    fn low_alarm_message_says_below() {
        let mut d = def();
        d.kind = AlarmKind::LowLow;
        let mut e = event(AlarmAction::Raise);
        e.kind = AlarmKind::LowLow;
        e.limit = 400.5;
        assert_eq!(
            alarm_message(&d, &e, "kPa"),
            "PT_OUT1 below LL limit 400.5 kPa"
        );
    }

    #[test]
    fn balance_json_is_exact_and_nan_is_null() {
        let b = BalanceResult {
            group: crate::model::GroupId::STATION,
            start: Timestamp::from_secs(1_795_820_400),
            end: Timestamp::from_secs(1_795_824_000),
            inlet_sm3: 0.0,
            outlet_sm3: 12.5,
            imbalance_sm3: -12.5,
            uncertainty_percent: f64::NAN,
            linepack_change_sm3: 0.0,
            imbalance_percent: f64::NAN,
            coverage: 0.75,
            quality: Quality::Uncertain,
        };
        let got = encode_balance("cg01", &b);
        let want = r#"{"v":1,"station":"cg01","group":"station","start":"2026-11-27T23:00:00.000Z","end":"2026-11-28T00:00:00.000Z","start_ns":1795820400000000000,"end_ns":1795824000000000000,"inlet_sm3":0.0,"outlet_sm3":12.5,"linepack_change_sm3":0.0,"imbalance_sm3":-12.5,"imbalance_percent":null,"uncertainty_percent":null,"coverage":0.75,"quality":"uncertain"}"#;
        assert_eq!(String::from_utf8_lossy(&got), want);
        // Another balance group: the same payload with its id.
        let b = BalanceResult {
            group: crate::model::GroupId::new("lineA").expect("id"),
            ..b
        };
        let got = String::from_utf8_lossy(&encode_balance("cg01", &b)).into_owned();
        assert_eq!(
            got,
            want.replace(r#""group":"station""#, r#""group":"lineA""#)
        );
    }

    #[test]
    fn status_json_is_exact() {
        assert_eq!(
            String::from_utf8_lossy(&encode_status("cg01", false, None)),
            r#"{"v":1,"station":"cg01","state":"offline"}"#
        );
        assert_eq!(
            String::from_utf8_lossy(&encode_status(
                "cg01",
                true,
                Some(Timestamp::from_millis(1_795_821_743_123))
            )),
            r#"{"v":1,"station":"cg01","state":"online","ts":"2026-11-27T23:22:23.123Z"}"#
        );
    }

    #[test]
    fn topics() {
        let t = Topics::new("gaswatch", "cg01");
        assert_eq!(t.alarm_events(), "gaswatch/cg01/alarms/events");
        assert_eq!(
            t.alarm_active("cg01/PT_OUT1/HH"),
            "gaswatch/cg01/alarms/active/cg01/PT_OUT1/HH"
        );
        assert_eq!(
            t.alarm_active("cg01/a+b#/HH"),
            "gaswatch/cg01/alarms/active/cg01/a_b_/HH"
        );
        assert_eq!(t.status(), "gaswatch/cg01/status");
        assert_eq!(t.balance(), "gaswatch/cg01/balance");
    }

    #[test]
    fn record_roundtrip_and_errors() {
        let bytes = encode_record("a/b", b"{}", true);
        assert_eq!(bytes, [1, 1, 1, 0, 3, b'a', b'/', b'b', b'{', b'}']);
        assert_eq!(
            decode_record(&bytes),
            Ok(PublishRecord {
                topic: "a/b".to_string(),
                payload: b"{}".to_vec(),
                retain: true,
                qos: 1
            })
        );
        let empty = decode_record(&encode_record("t", &[], false)).expect("decodes");
        assert!(empty.payload.is_empty() && !empty.retain);
        assert_eq!(decode_record(&[1, 0]), Err(RecordError::TooShort(2)));
        assert_eq!(
            decode_record(&[2, 0, 1, 0, 0]),
            Err(RecordError::Version(2))
        );
        assert_eq!(decode_record(&[1, 0, 3, 0, 0]), Err(RecordError::Qos(3)));
        assert!(matches!(
            decode_record(&[1, 0, 1, 0, 9, b'x']),
            Err(RecordError::TopicLength { .. })
        ));
        assert_eq!(
            decode_record(&[1, 0, 1, 0, 1, 0xff]),
            Err(RecordError::TopicUtf8)
        );
    }

    #[test]
    fn alarm_records_raise_then_clear() {
        let t = Topics::new("gaswatch", "cg01");
        let [ev, st] = alarm_records(&t, "cg01", &def(), &event(AlarmAction::Raise), "kPa");
        let ev = decode_record(&ev).expect("event");
        let st = decode_record(&st).expect("state");
        assert_eq!(ev.topic, "gaswatch/cg01/alarms/events");
        assert!(!ev.retain);
        assert_eq!(st.topic, "gaswatch/cg01/alarms/active/cg01/PT_OUT1/HH");
        assert!(st.retain);
        assert_eq!(st.payload, ev.payload);
        let [_, st] = alarm_records(&t, "cg01", &def(), &event(AlarmAction::Clear), "kPa");
        let st = decode_record(&st).expect("state");
        assert!(st.retain && st.payload.is_empty());
    }

    #[test]
    fn commands_parse_and_bad_ones_say_why() {
        let now = Timestamp::from_secs(100);
        let c = decode_command(
            br#"{"v":1,"request_id":"r9","alarm_id":"cg01/PT_OUT1/HH","operator":"wang","action":"shelve","duration_s":600,"sent_ns":99000000000}"#,
            now,
        )
        .expect("valid");
        assert_eq!(
            c.action,
            CommandAction::Shelve {
                duration_ns: 600_000_000_000
            }
        );
        assert_eq!(
            (c.operator.as_str(), c.ts, c.sent),
            ("wang", now, Some(Timestamp::from_secs(99)))
        );
        let bad = |p: &[u8]| decode_command(p, now).expect_err("refused");
        assert_eq!(
            bad(br#"{"request_id":"r","alarm_id":"a","operator":"o","action":"delete"}"#),
            CommandParseError::Action("delete".into())
        );
        assert_eq!(
            bad(br#"{"request_id":"r","alarm_id":"a","action":"ack"}"#),
            CommandParseError::Missing("operator")
        );
        assert_eq!(
            bad(br#"{"request_id":"r","alarm_id":"a","operator":"o","action":"shelve"}"#),
            CommandParseError::Missing("duration_s")
        );
        assert_eq!(
            bad(br#"{"v":2,"request_id":"r","alarm_id":"a","operator":"o","action":"ack"}"#),
            CommandParseError::Version(2)
        );
        assert!(matches!(bad(b"[1"), CommandParseError::Json(_)));
    }

    #[test]
    fn acked_but_standing_alarm_keeps_its_retained_state_and_normal_deletes_it() {
        let t = Topics::new("gaswatch", "cg01");
        let mut e = event(AlarmAction::Clear);
        e.detail.state = crate::model::AlarmState::RtnUnacked;
        let [_, st] = alarm_records(&t, "cg01", &def(), &e, "kPa");
        assert!(!decode_record(&st).expect("state").payload.is_empty());
        e.action = AlarmAction::Ack;
        e.detail.state = crate::model::AlarmState::Normal;
        let [_, st] = alarm_records(&t, "cg01", &def(), &e, "kPa");
        assert!(decode_record(&st).expect("state").payload.is_empty());
    }

    #[test]
    fn leak_json_is_exact_and_goes_to_the_leaks_topic() {
        let a = LeakAlert {
            group: crate::model::GroupId::STATION,
            window_s: 300,
            start: Timestamp(1_795_820_400_000_000_000),
            detected: Timestamp(1_795_821_000_000_000_000),
            rate_sm3_per_h: 600.5,
            rate_uncertainty_sm3_per_h: f64::NAN,
            rate_percent: 2.0,
            confidence: 0.999,
        };
        let want = r#"{"v":1,"station":"cg01","group":"station","window_s":300,"start":"2026-11-27T23:00:00.000Z","start_ns":1795820400000000000,"detected":"2026-11-27T23:10:00.000Z","detected_ns":1795821000000000000,"rate_sm3_per_h":600.5,"rate_uncertainty_sm3_per_h":null,"rate_percent":2.0,"confidence":0.999,"method":"cusum_compensated_volume_balance"}"#;
        assert_eq!(String::from_utf8_lossy(&encode_leak("cg01", &a)), want);
        let topics = Topics::new("gaswatch", "cg01");
        let rec = decode_record(&leak_record(&topics, "cg01", &a)).expect("record");
        assert_eq!(rec.topic, "gaswatch/cg01/leaks");
        assert!(!rec.retain);
        assert_eq!(rec.payload, want.as_bytes());
        let a = LeakAlert {
            group: crate::model::GroupId::new("line-B").expect("id"),
            ..a
        };
        let got = String::from_utf8_lossy(&encode_leak("cg01", &a)).into_owned();
        assert_eq!(
            got,
            want.replace(r#""group":"station""#, r#""group":"line-B""#)
        );
    }
}
