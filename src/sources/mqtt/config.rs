//! Configuration of MQTT telemetry sources (`[[mqtt_sources]]`) and the pure
//! validation of it. A source is one broker connection with one payload
//! format; its points are station points like Modbus ones (they get a
//! `TagId`, a unit, limits, meters) and say where in the topic and payload
//! their value is.

use crate::config::{Problem, Secret};
use serde::Deserialize;
use std::collections::HashSet;
use std::time::Duration;

/// One MQTT broker connection delivering telemetry.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MqttSourceConfig {
    /// Source id, unique in the station (letters, digits, '_', '-', '.'); used in
    /// logs, metrics and the default client id.
    pub id: String,
    /// Broker host name or address.
    pub host: String,
    /// Broker port (1883 plain).
    #[serde(default = "default_port")]
    pub port: u16,
    /// Client id; default `gaswatch-<station>-<id>`. Must be stable across
    /// restarts: the persistent session keeps un-acknowledged messages.
    pub client_id: Option<String>,
    /// User name (optional).
    pub username: Option<String>,
    /// Password, from `{ env = "VAR" }` or `{ file = "/path" }`.
    pub password: Option<Secret>,
    /// MQTT keep-alive, e.g. "30s".
    #[serde(default = "default_keep_alive", with = "humantime_serde")]
    pub keep_alive: Duration,
    /// Payload format: "json" or "sparkplug_b".
    pub format: PayloadFormat,
    /// JSON: topic patterns subscribed to. A level is a literal, `+`, `#`
    /// (last level only) or a capture `{device}`, `{point}` or `{station}`
    /// (subscribed as `+`). Example: `"rtu/{device}/telemetry"`.
    #[serde(default)]
    pub topics: Vec<String>,
    /// JSON: where the timestamp is (default: arrival time).
    pub timestamp: Option<TimestampConfig>,
    /// Sparkplug B: the group id to host (`spBv1.0/<group_id>/#`).
    pub group_id: Option<String>,
    /// Sparkplug B: a node silent for this long has its points marked STALE even without
    /// a DEATH (e.g. "60s"). Default: no quiet timeout, points still go STALE
    /// after their own `expected_interval`.
    #[serde(default, with = "humantime_serde::option")]
    pub node_timeout: Option<Duration>,
    /// The station points this source delivers.
    pub points: Vec<MqttPointConfig>,
}

/// Payload format of a source.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PayloadFormat {
    /// A JSON document; values picked by JSON Pointer (RFC 6901).
    Json,
    /// Sparkplug B protobuf (`spBv1.0/...` topics), gaswatch as host application.
    SparkplugB,
}

/// Where the time of a JSON payload is and how it is written.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TimestampConfig {
    /// JSON Pointer of the timestamp field, e.g. "/ts".
    pub path: String,
    /// "rfc3339", "epoch_s", "epoch_ms" or "epoch_ns".
    pub format: TimestampFormat,
}

/// How a payload timestamp is written.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum TimestampFormat {
    /// `2024-05-01T08:00:00+08:00` (a string).
    Rfc3339,
    /// Seconds since the epoch (number, fractions allowed).
    EpochS,
    /// Milliseconds since the epoch (number).
    EpochMs,
    /// Nanoseconds since the epoch (number).
    EpochNs,
}

/// A station point delivered over MQTT.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MqttPointConfig {
    /// Point name, unique in the station across all sources, e.g. "PT_RTU7".
    pub name: String,
    /// Device the point belongs to: matched against the topic's `{device}`
    /// capture (JSON) or the Sparkplug device id (empty/absent: node-level
    /// metric). Also the `device` tag in the output. Default: the source id.
    pub device: Option<String>,
    /// JSON: matched against the topic's `{point}` capture, when the pattern has one.
    pub topic_point: Option<String>,
    /// JSON: JSON Pointer (RFC 6901) of the value in the payload, e.g.
    /// "/data/values/0/p" (objects by key, arrays by index). Default: "" (the
    /// whole payload is the number).
    #[serde(default)]
    pub path: String,
    /// Sparkplug B: edge node id the metric comes from.
    pub node: Option<String>,
    /// Sparkplug B: metric name as in the BIRTH.
    pub metric: Option<String>,
    /// Engineering unit, e.g. "kPa".
    #[serde(default)]
    pub unit: String,
    /// Engineering value = raw * scale + offset.
    #[serde(default = "one")]
    pub scale: f64,
    /// Added after scaling.
    #[serde(default)]
    pub offset: f64,
    /// How often the publisher sends this point, e.g. "10s". Without a value
    /// for 1.5 times this long the point turns STALE.
    #[serde(with = "humantime_serde")]
    pub expected_interval: Duration,
}

impl MqttPointConfig {
    /// The device id of this point's output (`device` or the source id).
    pub fn device_or<'a>(&'a self, source: &'a str) -> &'a str {
        self.device
            .as_deref()
            .filter(|d| !d.is_empty())
            .unwrap_or(source)
    }
}

fn default_port() -> u16 {
    1883
}
fn default_keep_alive() -> Duration {
    Duration::from_secs(30)
}
fn one() -> f64 {
    1.0
}

/// Checks every MQTT source without I/O; returns one problem per mistake,
/// each with its key (`mqtt_sources[i].points[j].path`).
pub fn validate(sources: &[MqttSourceConfig]) -> Vec<Problem> {
    let mut out = Vec::new();
    let mut add = |key: String, message: String| {
        out.push(Problem {
            key,
            line: None,
            message,
        })
    };
    let mut ids = HashSet::new();
    for (si, s) in sources.iter().enumerate() {
        let sk = format!("mqtt_sources[{si}]");
        if s.id.is_empty()
            || !s
                .id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        {
            add(
                format!("{sk}.id"),
                format!("expected letters, digits, '_', '-' or '.', got {:?}", s.id),
            );
        } else if !ids.insert(s.id.as_str()) {
            add(
                format!("{sk}.id"),
                format!("source id {:?} is used twice", s.id),
            );
        }
        if s.host.trim().is_empty() {
            add(
                format!("{sk}.host"),
                "expected a broker host name or address".into(),
            );
        }
        if s.points.is_empty() {
            add(
                format!("{sk}.points"),
                "expected at least one [[mqtt_sources.points]] entry".into(),
            );
        }
        match s.format {
            PayloadFormat::Json => {
                if s.topics.is_empty() {
                    add(
                        format!("{sk}.topics"),
                        "expected at least one topic pattern for format = \"json\"".into(),
                    );
                }
                for (ti, t) in s.topics.iter().enumerate() {
                    if let Err(m) = crate::sources::mqtt::json::TopicPattern::parse(t) {
                        add(format!("{sk}.topics[{ti}]"), m);
                    }
                }
                if let Some(ts) = &s.timestamp
                    && !(ts.path.is_empty() || ts.path.starts_with('/'))
                {
                    add(
                        format!("{sk}.timestamp.path"),
                        format!(
                            "expected a JSON Pointer starting with '/', e.g. \"/ts\", got {:?}",
                            ts.path
                        ),
                    );
                }
                if s.group_id.is_some() {
                    add(
                        format!("{sk}.group_id"),
                        "only used with format = \"sparkplug_b\"".into(),
                    );
                }
            }
            PayloadFormat::SparkplugB => {
                match &s.group_id {
                    Some(g) if !g.is_empty() && !g.contains(['/', '+', '#']) => {}
                    _ => add(
                        format!("{sk}.group_id"),
                        "expected the Sparkplug group id (no '/', '+', '#') for format = \"sparkplug_b\"".into(),
                    ),
                }
                if !s.topics.is_empty() {
                    add(
                        format!("{sk}.topics"),
                        "not used with format = \"sparkplug_b\" (topics are spBv1.0/<group_id>/#)"
                            .into(),
                    );
                }
            }
        }
        if s.node_timeout.is_some_and(|d| d.is_zero()) {
            add(
                format!("{sk}.node_timeout"),
                "expected a positive duration".into(),
            );
        }
        for (pi, p) in s.points.iter().enumerate() {
            let pk = format!("{sk}.points[{pi}]");
            if !p.scale.is_finite() || p.scale == 0.0 {
                add(
                    format!("{pk}.scale"),
                    format!("expected a finite non-zero number, got {}", p.scale),
                );
            }
            if !p.offset.is_finite() {
                add(
                    format!("{pk}.offset"),
                    format!("expected a finite number, got {}", p.offset),
                );
            }
            if p.expected_interval.is_zero() {
                add(
                    format!("{pk}.expected_interval"),
                    "expected a positive duration, e.g. \"10s\"".into(),
                );
            }
            match s.format {
                PayloadFormat::Json => {
                    if !(p.path.is_empty() || p.path.starts_with('/')) {
                        add(
                            format!("{pk}.path"),
                            format!(
                                "expected a JSON Pointer starting with '/', e.g. \"/data/0/p\", got {:?}",
                                p.path
                            ),
                        );
                    }
                    if p.node.is_some() || p.metric.is_some() {
                        add(
                            format!("{pk}.metric"),
                            "`node` and `metric` are only used with format = \"sparkplug_b\""
                                .into(),
                        );
                    }
                }
                PayloadFormat::SparkplugB => {
                    if p.node.as_deref().is_none_or(str::is_empty) {
                        add(
                            format!("{pk}.node"),
                            "expected the Sparkplug edge node id".into(),
                        );
                    }
                    if p.metric.as_deref().is_none_or(str::is_empty) {
                        add(
                            format!("{pk}.metric"),
                            "expected the Sparkplug metric name".into(),
                        );
                    }
                }
            }
        }
    }
    out
}
