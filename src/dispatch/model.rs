//! The dispatcher console's state, pure (no terminal, no network): fed with
//! MQTT messages `(topic, payload)` and a `now`, it keeps every station's
//! online state and every standing alarm, de-duplicates events on
//! `(alarm_id, seq)` and lays the alarms out in the order dispatchers work
//! them: priority first, then oldest first, flood children collapsed under
//! their flood. The TUI and `--json` mode only render it.

use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};

/// A station as the console sees it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StationView {
    /// From the retained status / last will.
    pub online: bool,
    /// When the console last received a status or heartbeat (ns).
    pub last_seen_ns: i64,
    /// Standing alarms.
    pub alarms: usize,
}

/// One standing alarm.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct AlarmView {
    pub station: String,
    pub alarm_id: String,
    pub kind: String,
    pub priority: String,
    pub action: String,
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub annunciation: String,
    #[serde(default)]
    pub level: u8,
    #[serde(default)]
    pub escalation: String,
    #[serde(default)]
    pub chattering: bool,
    #[serde(default)]
    pub flood_parent: Option<u64>,
    pub ts_ns: i64,
    pub seq: u64,
    #[serde(default)]
    pub message: String,
}

impl AlarmView {
    /// 3 critical .. 0 low.
    pub fn priority_rank(&self) -> u8 {
        match self.priority.as_str() {
            "critical" => 3,
            "high" => 2,
            "medium" => 1,
            _ => 0,
        }
    }

    pub fn escalated(&self) -> bool {
        self.level > 0
    }
}

/// What one message did to the state.
#[derive(Debug, Clone, PartialEq)]
pub enum Applied {
    /// A new alarm event (not seen before).
    Event(Box<AlarmView>),
    /// The same `(alarm_id, seq)` again (at-least-once delivery).
    Duplicate,
    Status {
        station: String,
        online: bool,
    },
    Reply(serde_json::Value),
    /// Retained state added or removed.
    State,
    /// Not a console topic or not readable (counted, not fatal).
    Ignored(String),
}

/// One line of the alarm list (borrowed from the console: a redraw of
/// hundreds of alarms copies nothing).
#[derive(Debug, Clone, PartialEq)]
pub struct Row<'a> {
    pub alarm: &'a AlarmView,
    /// For a flood row: how many standing alarms are grouped under it.
    pub children: usize,
}

/// The console state.
#[derive(Debug, Clone, Default)]
pub struct Console {
    prefix: String,
    pub stations: BTreeMap<String, StationView>,
    /// Standing alarms by alarm id.
    pub alarms: BTreeMap<String, AlarmView>,
    /// Highest seq seen per alarm id (de-duplication).
    last_seq: HashMap<String, u64>,
    /// Seq of each alarm's last raise (flood children point at it).
    raise_seq: HashMap<String, u64>,
    pub duplicates: u64,
    pub ignored: u64,
}

#[derive(Deserialize)]
struct StatusJson {
    station: String,
    state: String,
}

impl Console {
    pub fn new(prefix: &str) -> Console {
        Console {
            prefix: prefix.to_string(),
            ..Console::default()
        }
    }

    /// Applies one MQTT message received at `now_ns`.
    pub fn apply(&mut self, topic: &str, payload: &[u8], now_ns: i64) -> Applied {
        let Some(rest) = topic
            .strip_prefix(self.prefix.as_str())
            .and_then(|r| r.strip_prefix('/'))
        else {
            return self.ignore(format!("topic {topic:?} outside prefix"));
        };
        let Some((station, what)) = rest.split_once('/') else {
            return self.ignore(format!("topic {topic:?} has no station"));
        };
        match what {
            "status" => match serde_json::from_slice::<StatusJson>(payload) {
                Ok(s) => {
                    let online = s.state == "online";
                    let v = self.stations.entry(s.station.clone()).or_default();
                    v.online = online;
                    v.last_seen_ns = v.last_seen_ns.max(now_ns);
                    Applied::Status {
                        station: s.station,
                        online,
                    }
                }
                Err(e) => self.ignore(format!("{topic}: {e}")),
            },
            "alarms/events" => match serde_json::from_slice::<AlarmView>(payload) {
                Ok(a) => {
                    let last = self.last_seq.entry(a.alarm_id.clone()).or_insert(0);
                    if a.seq <= *last {
                        self.duplicates += 1;
                        return Applied::Duplicate;
                    }
                    *last = a.seq;
                    self.stations.entry(a.station.clone()).or_default();
                    self.put(a.clone());
                    Applied::Event(Box::new(a))
                }
                Err(e) => self.ignore(format!("{topic}: {e}")),
            },
            "replies" => match serde_json::from_slice(payload) {
                Ok(v) => Applied::Reply(v),
                Err(e) => self.ignore(format!("{topic}: {e}")),
            },
            w if w.starts_with("alarms/active/") => {
                let id = &w["alarms/active/".len()..];
                if payload.is_empty() {
                    // Cleared retained state.
                    if let Some(old) = self.alarms.remove(id) {
                        self.uncount(&old.station);
                    }
                    return Applied::State;
                }
                match serde_json::from_slice::<AlarmView>(payload) {
                    Ok(a) => {
                        let last = self.last_seq.entry(a.alarm_id.clone()).or_insert(0);
                        if a.seq < *last {
                            return Applied::Duplicate;
                        }
                        *last = a.seq;
                        self.stations.entry(a.station.clone()).or_default();
                        self.put(a);
                        Applied::State
                    }
                    Err(e) => self.ignore(format!("{topic}: {e}")),
                }
            }
            _ => {
                let _ = station;
                self.ignore(format!("topic {topic:?} not used by the console"))
            }
        }
    }

    fn ignore(&mut self, why: String) -> Applied {
        self.ignored += 1;
        Applied::Ignored(why)
    }

    fn put(&mut self, a: AlarmView) {
        if a.action == "raise" {
            self.raise_seq.insert(a.alarm_id.clone(), a.seq);
        }
        let standing = a.action == "raise" || !matches!(a.state.as_str(), "normal" | "");
        // Station counts follow each change (no recount of every alarm per
        // message: a late console takes in hundreds at once).
        let old = if standing {
            let station = a.station.clone();
            let old = self.alarms.insert(a.alarm_id.clone(), a);
            self.stations.entry(station).or_default().alarms += 1;
            old
        } else {
            self.alarms.remove(&a.alarm_id)
        };
        if let Some(old) = old {
            self.uncount(&old.station);
        }
    }

    fn uncount(&mut self, station: &str) {
        if let Some(s) = self.stations.get_mut(station) {
            s.alarms = s.alarms.saturating_sub(1);
        }
    }

    /// Whether a station counts as online at `now`: its status says online
    /// and it was heard from within `stale_ns` (three heartbeats).
    pub fn station_online(&self, station: &str, now_ns: i64, stale_ns: i64) -> bool {
        self.stations
            .get(station)
            .is_some_and(|s| s.online && now_ns.saturating_sub(s.last_seen_ns) <= stale_ns)
    }

    /// The alarm list: priority (critical first), then age (oldest first);
    /// while a flood alarm of a station stands, the alarms raised under it
    /// are collapsed into its row (`children`) unless `expand_floods`.
    pub fn rows(&self, expand_floods: bool) -> Vec<Row<'_>> {
        let floods: HashMap<(&str, u64), &AlarmView> = self
            .alarms
            .values()
            .filter(|a| a.kind == "FLOOD")
            .map(|a| {
                let raise = self.raise_seq.get(&a.alarm_id).copied().unwrap_or(a.seq);
                ((a.station.as_str(), raise), a)
            })
            .collect();
        let mut children: HashMap<&str, usize> = HashMap::new();
        let mut rows: Vec<Row> = Vec::new();
        for a in self.alarms.values() {
            if !expand_floods
                && let Some(p) = a.flood_parent
                && let Some(f) = floods.get(&(a.station.as_str(), p))
            {
                *children.entry(f.alarm_id.as_str()).or_default() += 1;
                continue;
            }
            rows.push(Row {
                alarm: a,
                children: 0,
            });
        }
        for r in &mut rows {
            r.children = children
                .get(r.alarm.alarm_id.as_str())
                .copied()
                .unwrap_or(0);
        }
        rows.sort_by(|x, y| {
            y.alarm
                .priority_rank()
                .cmp(&x.alarm.priority_rank())
                .then(x.alarm.ts_ns.cmp(&y.alarm.ts_ns))
                .then(x.alarm.alarm_id.cmp(&y.alarm.alarm_id))
        });
        rows
    }
}

#[cfg(test)]
mod tests;
