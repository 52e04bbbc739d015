//! Alarm-management configuration: `[alarms]` (priorities' re-alarm times,
//! the escalation chain, flood and chattering thresholds, deadband defaults
//! by quantity, the journal) and `[[digital_alarms]]` (SSD, gas detector,
//! door). Limit alarms stay under `[[limits]]`. Validation is pure and
//! reports every problem with its key.

use super::Problem;
use crate::model::Priority;
use foldhash::{HashSet, HashSetExt};
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// `[alarms]`: how alarms are managed once they are raised.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AlarmsConfig {
    /// Re-alarm time per priority: an active alarm still unacknowledged after
    /// this long is re-annunciated (OPC UA ReAlarmTime). "0s" disables.
    #[serde(default)]
    pub realarm: RealarmTimes,
    /// Escalation chain, first level first; an alarm starts at level 0.
    #[serde(default = "default_chain")]
    pub escalation_chain: Vec<String>,
    /// Escalate one level after this many re-alarms without acknowledgement.
    #[serde(default = "default_escalate_after_realarms")]
    pub escalate_after_realarms: u32,
    /// Also escalate once an alarm has waited this long unacknowledged at its
    /// level (optional).
    #[serde(default, with = "humantime_serde")]
    pub escalate_after: Option<Duration>,
    /// Longest shelve an operator may ask for.
    #[serde(default = "default_max_shelve", with = "humantime_serde")]
    pub max_shelve: Duration,
    /// Default on-delay of every alarm ("only sustained matters").
    #[serde(default, with = "humantime_serde")]
    pub on_delay: Duration,
    /// Default off-delay of every alarm (stops bouncing).
    #[serde(default, with = "humantime_serde")]
    pub off_delay: Duration,
    /// Deadband defaults in percent of range, by quantity (DOMAIN.md).
    #[serde(default)]
    pub deadband_percent: DeadbandDefaults,
    /// Flood starts above this many activations in `flood_window`.
    #[serde(default = "default_flood_start")]
    pub flood_start: u32,
    /// Flood ends below this many activations in `flood_window`.
    #[serde(default = "default_flood_end")]
    pub flood_end: u32,
    /// Window of the flood and alarm-rate counts.
    #[serde(default = "default_flood_window", with = "humantime_serde")]
    pub flood_window: Duration,
    /// An alarm activating this many times within `chatter_window` chatters.
    #[serde(default = "default_chatter_count")]
    pub chatter_count: u32,
    /// Window of the chattering count.
    #[serde(default = "default_chatter_window", with = "humantime_serde")]
    pub chatter_window: Duration,
    /// Raise a communication-loss alarm per device (priority high).
    #[serde(default = "default_true")]
    pub comm_loss: bool,
    /// How often alarm-system health is computed and written.
    #[serde(default = "default_health_interval", with = "humantime_serde")]
    pub health_interval: Duration,
    /// Alarm journal file; default `<spool.dir>/alarms/journal.jsonl`.
    /// Rotated segments sit beside it as `journal.000001.jsonl`, ...
    pub journal: Option<PathBuf>,
    /// `[alarms.journal_rotation]`: segment size and age, retention.
    #[serde(default)]
    pub journal_rotation: JournalRotation,
}

/// `[alarms.journal_rotation]`: the journal is cut into numbered segments,
/// each starting with a snapshot of every alarm's state, so old segments can
/// be deleted without losing the state a restart restores.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JournalRotation {
    /// Start a new segment once the current one holds this many bytes
    /// (default 16 MiB).
    #[serde(default = "default_segment_bytes")]
    pub segment_bytes: u64,
    /// ... or once it is this old (default "1d").
    #[serde(default = "default_segment_age", with = "humantime_serde")]
    pub segment_age: Duration,
    /// Delete segments whose last entry is older than this (default "90d").
    #[serde(default = "default_retention", with = "humantime_serde")]
    pub retention: Duration,
    /// Delete the oldest segments while all of them together are larger than
    /// this many bytes (default 1 GiB). The current segment is never deleted.
    #[serde(default = "default_journal_max_bytes")]
    pub max_bytes: u64,
}

impl Default for JournalRotation {
    fn default() -> Self {
        JournalRotation {
            segment_bytes: default_segment_bytes(),
            segment_age: default_segment_age(),
            retention: default_retention(),
            max_bytes: default_journal_max_bytes(),
        }
    }
}

fn default_segment_bytes() -> u64 {
    16 << 20
}
fn default_segment_age() -> Duration {
    Duration::from_secs(24 * 3600)
}
fn default_retention() -> Duration {
    Duration::from_secs(90 * 24 * 3600)
}
fn default_journal_max_bytes() -> u64 {
    1 << 30
}

impl Default for AlarmsConfig {
    fn default() -> Self {
        AlarmsConfig {
            realarm: RealarmTimes::default(),
            escalation_chain: default_chain(),
            escalate_after_realarms: default_escalate_after_realarms(),
            escalate_after: None,
            max_shelve: default_max_shelve(),
            on_delay: Duration::ZERO,
            off_delay: Duration::ZERO,
            deadband_percent: DeadbandDefaults::default(),
            flood_start: default_flood_start(),
            flood_end: default_flood_end(),
            flood_window: default_flood_window(),
            chatter_count: default_chatter_count(),
            chatter_window: default_chatter_window(),
            comm_loss: true,
            health_interval: default_health_interval(),
            journal: None,
            journal_rotation: JournalRotation::default(),
        }
    }
}

/// Re-alarm time per priority.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RealarmTimes {
    /// Low priority (default 30 min).
    #[serde(default = "d30m", with = "humantime_serde")]
    pub low: Duration,
    /// Medium priority (default 15 min).
    #[serde(default = "d15m", with = "humantime_serde")]
    pub medium: Duration,
    /// High priority (default 5 min).
    #[serde(default = "d5m", with = "humantime_serde")]
    pub high: Duration,
    /// Critical priority (default 1 min).
    #[serde(default = "d1m", with = "humantime_serde")]
    pub critical: Duration,
}

impl Default for RealarmTimes {
    fn default() -> Self {
        RealarmTimes {
            low: d30m(),
            medium: d15m(),
            high: d5m(),
            critical: d1m(),
        }
    }
}

impl RealarmTimes {
    pub fn for_priority(&self, p: Priority) -> Duration {
        match p {
            Priority::Low => self.low,
            Priority::Medium => self.medium,
            Priority::High => self.high,
            Priority::Critical => self.critical,
        }
    }
}

/// Deadband defaults in percent of the point's range, by quantity; the
/// quantity is recognised from the point's unit.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DeadbandDefaults {
    /// Pressure units (Pa, kPa, MPa, bar, psi): default 2 %.
    #[serde(default = "two")]
    pub pressure: f64,
    /// Flow units (containing "/h", "/d", "/s"): default 5 %.
    #[serde(default = "five")]
    pub flow: f64,
    /// Temperature units (degC, °C, K, degF): default 1 %.
    #[serde(default = "one")]
    pub temperature: f64,
    /// Any other unit: default 2 %.
    #[serde(default = "two")]
    pub other: f64,
}

impl Default for DeadbandDefaults {
    fn default() -> Self {
        DeadbandDefaults {
            pressure: 2.0,
            flow: 5.0,
            temperature: 1.0,
            other: 2.0,
        }
    }
}

impl DeadbandDefaults {
    /// Percent of range for a point with this unit.
    pub fn percent_for_unit(&self, unit: &str) -> f64 {
        let u = unit.to_ascii_lowercase();
        if u.contains("/h") || u.contains("/d") || u.contains("/s") || u.contains("/min") {
            self.flow
        } else if u.ends_with("pa") || u == "bar" || u == "barg" || u == "psi" || u == "psig" {
            self.pressure
        } else if u.contains("degc") || u.contains('°') || u == "k" || u.contains("degf") {
            self.temperature
        } else {
            self.other
        }
    }
}

/// What a digital alarm watches; sets the kind and its defaults.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum DigitalType {
    /// Slam-shut valve tripped: critical, latched, escalates at once.
    SlamShut,
    /// Gas detector: critical, latched.
    GasDetector,
    /// Door or enclosure: low.
    Door,
    /// Anything else: medium.
    Other,
}

/// `[[digital_alarms]]`: an alarm on a discrete state.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DigitalAlarmConfig {
    /// The point carrying the state.
    pub point: String,
    /// "slam_shut", "gas_detector", "door" or "other".
    #[serde(rename = "type")]
    pub kind: DigitalType,
    /// The alarm is active while the point equals this value (default 1).
    #[serde(default = "one")]
    pub active_when: f64,
    /// Priority; default by type.
    pub priority: Option<PriorityName>,
    /// Needs an operator reset after it returns to normal; default by type.
    pub latch: Option<bool>,
    /// On-delay (default `[alarms] on_delay`).
    #[serde(default, with = "humantime_serde")]
    pub on_delay: Option<Duration>,
}

/// Priority as written in the config.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PriorityName {
    Low,
    Medium,
    High,
    Critical,
}

impl From<PriorityName> for Priority {
    fn from(p: PriorityName) -> Priority {
        match p {
            PriorityName::Low => Priority::Low,
            PriorityName::Medium => Priority::Medium,
            PriorityName::High => Priority::High,
            PriorityName::Critical => Priority::Critical,
        }
    }
}

fn default_chain() -> Vec<String> {
    [
        "station_operator",
        "dispatcher",
        "shift_lead",
        "duty_engineer",
    ]
    .map(String::from)
    .to_vec()
}
fn default_escalate_after_realarms() -> u32 {
    2
}
fn default_max_shelve() -> Duration {
    Duration::from_secs(8 * 3600)
}
fn default_flood_start() -> u32 {
    10
}
fn default_flood_end() -> u32 {
    5
}
fn default_flood_window() -> Duration {
    Duration::from_secs(600)
}
fn default_chatter_count() -> u32 {
    3
}
fn default_chatter_window() -> Duration {
    Duration::from_secs(60)
}
fn default_health_interval() -> Duration {
    Duration::from_secs(60)
}
fn default_true() -> bool {
    true
}
fn d30m() -> Duration {
    Duration::from_secs(1800)
}
fn d15m() -> Duration {
    Duration::from_secs(900)
}
fn d5m() -> Duration {
    Duration::from_secs(300)
}
fn d1m() -> Duration {
    Duration::from_secs(60)
}
fn one() -> f64 {
    1.0
}
fn two() -> f64 {
    2.0
}
fn five() -> f64 {
    5.0
}

/// Checks `[alarms]` and `[[digital_alarms]]`; `points` are the defined point names.
pub(super) fn validate(
    a: &AlarmsConfig,
    digital: &[DigitalAlarmConfig],
    points: &HashSet<&str>,
    out: &mut Vec<Problem>,
) {
    let mut add = |key: String, message: String| {
        out.push(Problem {
            key,
            line: None,
            message,
        })
    };
    if a.escalation_chain.is_empty() || a.escalation_chain.len() > 16 {
        add(
            "alarms.escalation_chain".into(),
            format!(
                "expected 1-16 levels, e.g. [\"station_operator\", \"dispatcher\"], got {}",
                a.escalation_chain.len()
            ),
        );
    }
    for (i, l) in a.escalation_chain.iter().enumerate() {
        if l.trim().is_empty() {
            add(
                format!("alarms.escalation_chain[{i}]"),
                "expected a non-empty level name".into(),
            );
        }
    }
    if a.flood_end == 0 || a.flood_end > a.flood_start {
        add(
            "alarms.flood_end".into(),
            format!(
                "expected 1..=flood_start ({}), got {}",
                a.flood_start, a.flood_end
            ),
        );
    }
    if a.flood_window.is_zero() {
        add(
            "alarms.flood_window".into(),
            "expected a positive duration".into(),
        );
    }
    if a.chatter_count < 2 {
        add(
            "alarms.chatter_count".into(),
            format!("expected at least 2, got {}", a.chatter_count),
        );
    }
    if a.chatter_window.is_zero() {
        add(
            "alarms.chatter_window".into(),
            "expected a positive duration".into(),
        );
    }
    if a.health_interval < Duration::from_secs(1) {
        add(
            "alarms.health_interval".into(),
            "expected at least 1s".into(),
        );
    }
    if a.max_shelve.is_zero() {
        add(
            "alarms.max_shelve".into(),
            "expected a positive duration".into(),
        );
    }
    let r = &a.journal_rotation;
    if r.segment_bytes < 4096 {
        add(
            "alarms.journal_rotation.segment_bytes".into(),
            format!("expected at least 4096 bytes, got {}", r.segment_bytes),
        );
    }
    if r.segment_age < Duration::from_secs(1) {
        add(
            "alarms.journal_rotation.segment_age".into(),
            "expected at least 1s".into(),
        );
    }
    if r.retention < r.segment_age {
        add(
            "alarms.journal_rotation.retention".into(),
            format!(
                "expected at least segment_age ({}), got {}",
                humantime::format_duration(r.segment_age),
                humantime::format_duration(r.retention)
            ),
        );
    }
    if r.max_bytes < r.segment_bytes.saturating_mul(2) {
        add(
            "alarms.journal_rotation.max_bytes".into(),
            format!(
                "expected at least twice segment_bytes ({}), got {}",
                r.segment_bytes.saturating_mul(2),
                r.max_bytes
            ),
        );
    }
    let d = &a.deadband_percent;
    for (k, v) in [
        ("pressure", d.pressure),
        ("flow", d.flow),
        ("temperature", d.temperature),
        ("other", d.other),
    ] {
        if !(v.is_finite() && (0.0..=50.0).contains(&v)) {
            add(
                format!("alarms.deadband_percent.{k}"),
                format!("expected a percentage 0-50, got {v}"),
            );
        }
    }
    let mut seen = HashSet::new();
    for (i, da) in digital.iter().enumerate() {
        let k = format!("digital_alarms[{i}]");
        if !points.contains(da.point.as_str()) {
            add(
                format!("{k}.point"),
                format!(
                    "expected the name of a point defined under [[devices.points]], got {:?}",
                    da.point
                ),
            );
        }
        if !seen.insert((da.point.as_str(), da.kind as u8)) {
            add(
                format!("{k}.point"),
                format!("{:?} already has a digital alarm of this type", da.point),
            );
        }
        if !da.active_when.is_finite() {
            add(
                format!("{k}.active_when"),
                "expected a finite number".into(),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadband_by_unit() {
        let d = DeadbandDefaults::default();
        assert_eq!(d.percent_for_unit("kPa"), 2.0);
        assert_eq!(d.percent_for_unit("Sm3/h"), 5.0);
        assert_eq!(d.percent_for_unit("degC"), 1.0);
        assert_eq!(d.percent_for_unit(""), 2.0);
    }

    #[test]
    fn journal_rotation_is_validated_with_its_keys() {
        let a = AlarmsConfig {
            journal_rotation: JournalRotation {
                segment_bytes: 100,
                segment_age: Duration::ZERO,
                retention: Duration::ZERO,
                max_bytes: 150,
            },
            ..AlarmsConfig::default()
        };
        let mut out = Vec::new();
        validate(&a, &[], &HashSet::new(), &mut out);
        let keys: Vec<_> = out.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "alarms.journal_rotation.segment_bytes",
                "alarms.journal_rotation.segment_age",
                "alarms.journal_rotation.max_bytes"
            ]
        );
        let text = "[journal_rotation]\nsegment_bytes = 8192\nsegment_age = \"6h\"\n";
        let a: AlarmsConfig = toml::from_str(text).expect("parse");
        assert_eq!(a.journal_rotation.segment_bytes, 8192);
        assert_eq!(
            a.journal_rotation.segment_age,
            Duration::from_secs(6 * 3600)
        );
        assert_eq!(
            a.journal_rotation.retention,
            Duration::from_secs(90 * 24 * 3600)
        );
        let mut out = Vec::new();
        validate(&a, &[], &HashSet::new(), &mut out);
        assert!(out.is_empty(), "{out:?}");
    }

    #[test]
    fn every_problem_is_reported_with_its_key() {
        let a = AlarmsConfig {
            escalation_chain: vec![],
            flood_end: 20,
            chatter_count: 1,
            ..AlarmsConfig::default()
        };
        let dig = vec![DigitalAlarmConfig {
            point: "NOPE".into(),
            kind: DigitalType::SlamShut,
            active_when: f64::NAN,
            priority: None,
            latch: None,
            on_delay: None,
        }];
        let mut out = Vec::new();
        validate(&a, &dig, &HashSet::new(), &mut out);
        let keys: Vec<_> = out.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "alarms.escalation_chain",
                "alarms.flood_end",
                "alarms.chatter_count",
                "digital_alarms[0].point",
                "digital_alarms[0].active_when"
            ]
        );
    }
}
