//! Detection scorecard: compares the alarms a replay raised with the ground
//! truth the simulator wrote (`gaswatch-sim --truth FILE`).
//!
//! Ground truth is JSON lines; the scorecard reads the `"type":"event"`
//! lines (others, such as `"type":"values"`, are ignored):
//! ```json
//! {"type":"event","id":"leak-1","kind":"leak","phase":"start","t_ns":1767225600000000000,"detect":"imbalance", ...}
//! {"type":"event","id":"leak-1","kind":"leak","phase":"end","t_ns":1767229200000000000}
//! ```
//! `detect` names what should notice the incident: `imbalance` (the station
//! balance's 输差 alarms of any window, or its LEAK alarm) or a point name (any HH/H/L/LL alarm on that point). An
//! incident without `detect` (a communication outage, say) is not scored
//! for detection and excuses nothing: an alarm during it is a false alarm.
//!
//! Rules: an alarm raise detects an incident when it matches `detect` and
//! falls in `[start, end + grace]`; the first such raise gives the time to
//! detect. An incident with none is a miss. A raise that detects nothing is
//! a false alarm.

use super::replay::AlarmLine;
use crate::model::{AlarmAction, AlarmKind, Timestamp};
use std::io::Write;
use std::path::Path;
use std::time::Duration;

/// One true incident from the ground truth.
#[derive(Debug, Clone, PartialEq)]
pub struct Incident {
    pub id: String,
    pub kind: String,
    pub start: Timestamp,
    /// None: still going at the end of the truth file.
    pub end: Option<Timestamp>,
    pub detect: Option<String>,
}

/// The scorecard line of one incident.
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    pub incident: Incident,
    /// First matching alarm raise.
    pub detected: Option<Timestamp>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scorecard {
    pub scored: Vec<Scored>,
    /// Incidents scored for detection.
    pub expected: usize,
    pub detected: usize,
    pub missed: usize,
    /// Raises that match no incident: (alarm id, time).
    pub false_alarms: Vec<(String, Timestamp)>,
}

/// Reads the incidents of a ground-truth file. Errors name the line.
pub fn load_truth(path: &Path) -> Result<Vec<Incident>, super::replay::ReplayCliError> {
    use super::replay::ReplayCliError;
    let text = std::fs::read_to_string(path).map_err(|source| ReplayCliError::Output {
        path: path.display().to_string(),
        source,
    })?;
    parse_truth(&text).map_err(|(line, message)| ReplayCliError::Truth {
        path: path.display().to_string(),
        line,
        message,
    })
}

/// Parses ground-truth text; errors give the 1-based line.
pub fn parse_truth(text: &str) -> Result<Vec<Incident>, (usize, String)> {
    let mut out: Vec<Incident> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value =
            serde_json::from_str(line).map_err(|e| (n, format!("not JSON: {e}")))?;
        if v["type"] != "event" {
            continue;
        }
        let id = v["id"]
            .as_str()
            .ok_or((n, "event without `id`".to_string()))?;
        let t = Timestamp(
            v["t_ns"]
                .as_i64()
                .ok_or((n, "event without integer `t_ns`".to_string()))?,
        );
        match v["phase"].as_str() {
            Some("start") => out.push(Incident {
                id: id.to_string(),
                kind: v["kind"].as_str().unwrap_or("").to_string(),
                start: t,
                end: None,
                detect: v["detect"].as_str().map(str::to_string),
            }),
            Some("end") => {
                let inc = out
                    .iter_mut()
                    .rev()
                    .find(|x| x.id == id && x.end.is_none())
                    .ok_or((n, format!("end of `{id}` without a start")))?;
                inc.end = Some(t);
            }
            _ => return Err((n, "`phase` must be start or end".into())),
        }
    }
    Ok(out)
}

fn matches(detect: &str, a: &AlarmLine) -> bool {
    // The balance notices a leak by its 输差 alarms (any window) or its
    // sequential leak test (LEAK).
    let balance = matches!(a.kind, AlarmKind::Imbalance | AlarmKind::Leak);
    if detect == "imbalance" {
        balance
    } else {
        !balance && a.source == detect
    }
}

/// Scores `alarms` (a replay's transitions) against `truth`.
pub fn score(truth: &[Incident], alarms: &[AlarmLine], grace: Duration) -> Scorecard {
    let mut card = Scorecard::default();
    let mut scored: Vec<Scored> = truth
        .iter()
        .map(|i| Scored {
            incident: i.clone(),
            detected: None,
        })
        .collect();
    for a in alarms.iter().filter(|a| a.action == AlarmAction::Raise) {
        let mut hit = false;
        for s in &mut scored {
            let i = &s.incident;
            let Some(d) = &i.detect else { continue };
            let until = i.end.map_or(i64::MAX, |e| e.plus(grace).nanos());
            if matches(d, a) && a.ts >= i.start && a.ts.nanos() <= until {
                hit = true;
                s.detected = Some(s.detected.map_or(a.ts, |t| t.min(a.ts)));
            }
        }
        if !hit {
            card.false_alarms.push((a.id.clone(), a.ts));
        }
    }
    card.expected = scored
        .iter()
        .filter(|s| s.incident.detect.is_some())
        .count();
    card.detected = scored.iter().filter(|s| s.detected.is_some()).count();
    card.missed = card.expected - card.detected;
    card.scored = scored;
    card
}

/// Prints the scorecard.
pub fn print(w: &mut dyn Write, c: &Scorecard) -> std::io::Result<()> {
    writeln!(w, "scorecard")?;
    for s in &c.scored {
        let i = &s.incident;
        let ttd = s
            .detected
            .map(|d| format!("{:.0} s", d.since(i.start) as f64 / 1e9))
            .unwrap_or_else(|| {
                if i.detect.is_some() {
                    "MISSED"
                } else {
                    "not scored"
                }
                .to_string()
            });
        writeln!(
            w,
            "  {:<16} {:<18} start {}  detect by {:<10}  time to detect {}",
            i.id,
            i.kind,
            i.start.to_rfc3339(),
            i.detect.as_deref().unwrap_or("-"),
            ttd
        )?;
    }
    writeln!(
        w,
        "  incidents {}  detected {}  missed {}  false alarms {}",
        c.expected,
        c.detected,
        c.missed,
        c.false_alarms.len()
    )?;
    for (id, t) in c.false_alarms.iter().take(20) {
        writeln!(w, "    false alarm {id} at {}", t.to_rfc3339())?;
    }
    Ok(())
}
