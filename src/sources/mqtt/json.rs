//! JSON payloads to station values: pure and synchronous (no I/O, no clock:
//! the arrival time is passed in), so it is unit-tested and benchmarked alone.
//!
//! A topic is matched against the source's patterns; the captures
//! `{device}`, `{point}` and `{station}` select the configured points; each
//! point's value is taken from the payload by JSON Pointer (RFC 6901: nested
//! objects by key, arrays by index) and scaled. Invariants: a payload never
//! panics the mapper; every field that cannot be used is reported as a
//! [`Reject`] with its reason, and the other fields of the same payload are
//! still delivered; a JSON `null` becomes a BAD value, never a good zero.

use super::config::{MqttSourceConfig, TimestampConfig, TimestampFormat};
use crate::engine::EnginePlan;
use crate::model::{Quality, TagId, Timestamp};
use serde_json::Value;

/// Why (part of) a payload was not used; a bounded set for metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectReason {
    /// No configured point matches the topic.
    UnmappedTopic,
    /// The topic's `{station}` is another station.
    StationMismatch,
    /// The payload is not JSON (or not a Sparkplug B protobuf).
    Malformed,
    /// A point's field is not in the payload.
    MissingField,
    /// A point's field is not a number (or boolean).
    NotANumber,
    /// The configured timestamp is missing or unreadable.
    BadTimestamp,
    /// Sparkplug: data from a node or device without a valid BIRTH, an
    /// unknown alias, or a seq gap (a rebirth is requested).
    NotBorn,
}

impl RejectReason {
    /// Stable snake_case label.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::UnmappedTopic => "unmapped_topic",
            RejectReason::StationMismatch => "station_mismatch",
            RejectReason::Malformed => "malformed",
            RejectReason::MissingField => "missing_field",
            RejectReason::NotANumber => "not_a_number",
            RejectReason::BadTimestamp => "bad_timestamp",
            RejectReason::NotBorn => "not_born",
        }
    }
}

/// One thing in a payload that was not used, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Reject {
    pub reason: RejectReason,
    /// Human detail for the log (field path, parse error).
    pub detail: String,
}

impl Reject {
    fn new(reason: RejectReason, detail: impl Into<String>) -> Self {
        Reject {
            reason,
            detail: detail.into(),
        }
    }
}

/// Values of one timestamp: `(tag, engineering value, quality)`.
pub type Batch = (Timestamp, Vec<(TagId, f64, Quality)>);

/// What one message produced.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Mapped {
    /// Values grouped by timestamp (one `Input::Values` each).
    pub batches: Vec<Batch>,
    /// Fields or whole payloads not used.
    pub rejects: Vec<Reject>,
}

impl Mapped {
    pub fn clear(&mut self) {
        self.batches.clear();
        self.rejects.clear();
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Level {
    Literal(String),
    Plus,
    Hash,
    Device,
    Point,
    Station,
}

/// A subscription pattern with optional captures (see the config docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicPattern {
    levels: Vec<Level>,
}

/// Captured topic levels.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Captures<'t> {
    pub device: Option<&'t str>,
    pub point: Option<&'t str>,
    pub station: Option<&'t str>,
}

impl TopicPattern {
    /// Parses `a/{device}/+/#`; the error says what is wrong.
    pub fn parse(s: &str) -> Result<TopicPattern, String> {
        if s.is_empty() {
            return Err("expected a topic pattern, got an empty string".into());
        }
        let parts: Vec<&str> = s.split('/').collect();
        let mut levels = Vec::with_capacity(parts.len());
        for (i, l) in parts.iter().enumerate() {
            let level = match *l {
                "+" => Level::Plus,
                "#" if i + 1 == parts.len() => Level::Hash,
                "#" => return Err(format!("'#' must be the last level in {s:?}")),
                "{device}" => Level::Device,
                "{point}" => Level::Point,
                "{station}" => Level::Station,
                other if other.contains(['+', '#', '{', '}']) => {
                    return Err(format!(
                        "level {other:?} of {s:?}: expected a literal, '+', '#', {{device}}, {{point}} or {{station}}"
                    ));
                }
                other => Level::Literal(other.to_string()),
            };
            levels.push(level);
        }
        for cap in [Level::Device, Level::Point, Level::Station] {
            if levels.iter().filter(|l| **l == cap).count() > 1 {
                return Err(format!("{s:?} captures the same name twice"));
            }
        }
        Ok(TopicPattern { levels })
    }

    /// The MQTT subscription filter (captures become `+`).
    pub fn filter(&self) -> String {
        let mut f = String::new();
        for (i, l) in self.levels.iter().enumerate() {
            if i > 0 {
                f.push('/');
            }
            f.push_str(match l {
                Level::Literal(s) => s,
                Level::Hash => "#",
                _ => "+",
            });
        }
        f
    }

    /// Whether the pattern has a `{device}` / `{point}` capture.
    fn has(&self, l: &Level) -> bool {
        self.levels.contains(l)
    }

    /// Matches a topic, returning its captures.
    pub fn matches<'t>(&self, topic: &'t str) -> Option<Captures<'t>> {
        let mut caps = Captures::default();
        let mut parts = topic.split('/');
        for l in &self.levels {
            if *l == Level::Hash {
                return Some(caps);
            }
            let part = parts.next()?;
            match l {
                Level::Literal(s) if s != part => return None,
                Level::Device => caps.device = Some(part),
                Level::Point => caps.point = Some(part),
                Level::Station => caps.station = Some(part),
                _ => {}
            }
        }
        parts.next().is_none().then_some(caps)
    }
}

#[derive(Debug, Clone)]
struct JsonPoint {
    tag: TagId,
    device: Option<String>,
    topic_point: Option<String>,
    path: String,
    scale: f64,
    offset: f64,
}

/// The compiled JSON mapping of one source.
#[derive(Debug, Clone)]
pub struct JsonMapper {
    station: String,
    patterns: Vec<TopicPattern>,
    points: Vec<JsonPoint>,
    timestamp: Option<TimestampConfig>,
    scratch: Vec<usize>,
}

impl JsonMapper {
    /// Compiles a validated source config; points whose name is not in the
    /// plan and patterns that do not parse are skipped (validation reports them).
    pub fn new(cfg: &MqttSourceConfig, plan: &EnginePlan) -> JsonMapper {
        JsonMapper {
            station: plan.station_id.clone(),
            patterns: cfg
                .topics
                .iter()
                .filter_map(|t| TopicPattern::parse(t).ok())
                .collect(),
            points: cfg
                .points
                .iter()
                .filter_map(|p| {
                    Some(JsonPoint {
                        tag: plan.tag(&p.name)?,
                        device: p.device.clone().filter(|d| !d.is_empty()),
                        topic_point: p.topic_point.clone(),
                        path: p.path.clone(),
                        scale: p.scale,
                        offset: p.offset,
                    })
                })
                .collect(),
            timestamp: cfg.timestamp.clone(),
            scratch: Vec::new(),
        }
    }

    /// The subscription filters.
    pub fn filters(&self) -> Vec<String> {
        self.patterns.iter().map(TopicPattern::filter).collect()
    }

    /// Maps one message into `out` (cleared first). `arrival` is used when
    /// no timestamp is configured.
    pub fn map(&mut self, topic: &str, payload: &[u8], arrival: Timestamp, out: &mut Mapped) {
        out.clear();
        let Some((pattern, caps)) = self
            .patterns
            .iter()
            .find_map(|p| p.matches(topic).map(|c| (p, c)))
        else {
            out.rejects.push(Reject::new(
                RejectReason::UnmappedTopic,
                "no topic pattern matches",
            ));
            return;
        };
        if let Some(st) = caps.station
            && st != self.station
        {
            out.rejects.push(Reject::new(
                RejectReason::StationMismatch,
                format!("topic is for station {st:?}"),
            ));
            return;
        }
        let by_device = pattern.has(&Level::Device);
        let by_point = pattern.has(&Level::Point);
        self.scratch.clear();
        for (i, p) in self.points.iter().enumerate() {
            let device_ok = !by_device || p.device.as_deref() == caps.device;
            let point_ok = if by_point {
                p.topic_point.as_deref() == caps.point
            } else {
                p.topic_point.is_none()
            };
            if device_ok && point_ok {
                self.scratch.push(i);
            }
        }
        if self.scratch.is_empty() {
            out.rejects.push(Reject::new(
                RejectReason::UnmappedTopic,
                "no configured point for this device/point",
            ));
            return;
        }
        let doc: Value = match serde_json::from_slice(payload) {
            Ok(v) => v,
            Err(e) => {
                out.rejects.push(Reject::new(
                    RejectReason::Malformed,
                    format!("not JSON: {e}"),
                ));
                return;
            }
        };
        let ts = match &self.timestamp {
            None => arrival,
            Some(tc) => match payload_time(&doc, tc) {
                Ok(ts) => ts,
                Err(detail) => {
                    out.rejects
                        .push(Reject::new(RejectReason::BadTimestamp, detail));
                    return;
                }
            },
        };
        let mut values = Vec::with_capacity(self.scratch.len());
        for &i in &self.scratch {
            let p = &self.points[i];
            match doc.pointer(&p.path) {
                None => out.rejects.push(Reject::new(
                    RejectReason::MissingField,
                    format!("no field at {:?}", p.path),
                )),
                Some(Value::Null) => values.push((p.tag, f64::NAN, Quality::Bad)),
                Some(v) => match number(v) {
                    Some(raw) => values.push((p.tag, raw * p.scale + p.offset, Quality::Good)),
                    None => out.rejects.push(Reject::new(
                        RejectReason::NotANumber,
                        format!("field {:?} is not a number", p.path),
                    )),
                },
            }
        }
        if !values.is_empty() {
            out.batches.push((ts, values));
        }
    }
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::Bool(b) => Some(f64::from(u8::from(*b))),
        _ => None,
    }
}

/// Reads the configured timestamp from a parsed payload.
pub fn payload_time(doc: &Value, tc: &TimestampConfig) -> Result<Timestamp, String> {
    let v = doc
        .pointer(&tc.path)
        .ok_or_else(|| format!("no timestamp at {:?}", tc.path))?;
    let scale_i = |n: i64, mul: i64| n.checked_mul(mul).map(Timestamp);
    let ts = match tc.format {
        TimestampFormat::Rfc3339 => {
            let s = v
                .as_str()
                .ok_or_else(|| format!("timestamp at {:?} is not a string", tc.path))?;
            let t: jiff::Timestamp = s
                .parse()
                .map_err(|e| format!("timestamp {s:?} is not RFC 3339: {e}"))?;
            i64::try_from(t.as_nanosecond()).ok().map(Timestamp)
        }
        TimestampFormat::EpochS => match v.as_i64() {
            Some(n) => scale_i(n, 1_000_000_000),
            None => v
                .as_f64()
                .map(|f| f * 1e9)
                .filter(|f| f.is_finite() && f.abs() < 9.2e18)
                .map(|f| Timestamp(f.round() as i64)),
        },
        TimestampFormat::EpochMs => match v.as_i64() {
            Some(n) => scale_i(n, 1_000_000),
            None => v
                .as_f64()
                .map(|f| f * 1e6)
                .filter(|f| f.is_finite() && f.abs() < 9.2e18)
                .map(|f| Timestamp(f.round() as i64)),
        },
        TimestampFormat::EpochNs => v.as_i64().map(Timestamp),
    };
    ts.ok_or_else(|| format!("timestamp at {:?} is not a valid {:?}", tc.path, tc.format))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_and_capture() {
        let p = TopicPattern::parse("rtu/{station}/{device}/+/#").unwrap();
        assert_eq!(p.filter(), "rtu/+/+/+/#");
        let c = p.matches("rtu/cg01/rtu7/x/y/z").unwrap();
        assert_eq!(c.device, Some("rtu7"));
        assert_eq!(c.station, Some("cg01"));
        assert!(p.matches("rtu/cg01").is_none());
        let q = TopicPattern::parse("a/{point}").unwrap();
        assert!(q.matches("a/b/c").is_none());
        assert_eq!(q.matches("a/p1").unwrap().point, Some("p1"));
        assert!(TopicPattern::parse("a/#/b").is_err());
        assert!(TopicPattern::parse("a/x+").is_err());
        assert!(TopicPattern::parse("{device}/{device}").is_err());
    }

    #[test]
    fn timestamps_in_every_format() {
        let doc: Value = serde_json::json!({"t": "2024-05-01T08:00:00+08:00", "s": 1714521600, "f": 1714521600.5, "ms": 1714521600000i64, "ns": 1714521600000000000i64});
        let tc = |path: &str, format| TimestampConfig {
            path: path.into(),
            format,
        };
        let want = Timestamp::from_secs(1_714_521_600);
        assert_eq!(
            payload_time(&doc, &tc("/t", TimestampFormat::Rfc3339)),
            Ok(want)
        );
        assert_eq!(
            payload_time(&doc, &tc("/s", TimestampFormat::EpochS)),
            Ok(want)
        );
        assert_eq!(
            payload_time(&doc, &tc("/f", TimestampFormat::EpochS)),
            Ok(Timestamp(want.0 + 500_000_000))
        );
        assert_eq!(
            payload_time(&doc, &tc("/ms", TimestampFormat::EpochMs)),
            Ok(want)
        );
        assert_eq!(
            payload_time(&doc, &tc("/ns", TimestampFormat::EpochNs)),
            Ok(want)
        );
        assert!(payload_time(&doc, &tc("/t", TimestampFormat::EpochS)).is_err());
        assert!(payload_time(&doc, &tc("/missing", TimestampFormat::EpochS)).is_err());
        assert!(payload_time(&doc, &tc("/s", TimestampFormat::Rfc3339)).is_err());
    }
}
