//! `gaswatch alarms report`: the alarm system's performance over a period,
//! from the alarm journal, measured the way ISA-18.2 (section 16, monitoring
//! and assessment) and EEMUA 191 ask an alarm-management review to measure
//! it. A pure function over journal entries ([`report`]); the command reads
//! the journal (every segment) and prints the result or its JSON.
//!
//! Definitions (all over `[from, to)` unless said otherwise):
//! - An **annunciation** is a `raise` event that was shown to operators
//!   (annunciation `shown`: shelved, suppressed-by-design and out-of-service
//!   raises are journaled but never reach an operator). Re-alarms are
//!   counted apart.
//! - **Rates**: annunciations per day and per 10 minutes on average, the
//!   busiest 10 minutes, and the share of 10-minute periods holding more
//!   than 10 annunciations (the flood threshold of `DOMAIN.md`). Periods
//!   are aligned to the epoch, partial periods at the ends count as whole.
//! - **Top 10**: the ten alarms annunciated most often and their share of
//!   all annunciations ("bad actors").
//! - **Chattering**: alarms with an event flagged chattering (3 or more
//!   activations in a minute).
//! - **Time to acknowledge**: from an annunciation to the alarm's next
//!   `ack` event (before its next raise); raises not acknowledged by `to`
//!   are counted as such, not timed.
//! - **Standing / stale at `to`**: the state every alarm is in at `to`,
//!   rebuilt from every entry before it (segment snapshots included);
//!   stale = standing and raised more than 24 h before `to`.
//!
//! The guideline figures printed beside the results are ISA-18.2's and
//! EEMUA 191's published targets for one operator console; a dispatch
//! centre watching many stations reads them per console.

use crate::journal::Entry;
use crate::model::Timestamp;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

const MIN10: i64 = 600_000_000_000;
const DAY: i64 = 86_400_000_000_000;
/// More annunciations than this in 10 minutes is a flood.
const FLOOD_PER_10MIN: u64 = 10;
/// Standing longer than this at the end of the period is stale.
const STALE_NS: i64 = DAY;

/// One alarm's count in the top list.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Frequent {
    pub alarm_id: String,
    pub annunciations: u64,
    /// Share of all annunciations, %.
    pub percent: f64,
}

/// An alarm standing at the end of the period.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Standing {
    pub alarm_id: String,
    pub state: String,
    pub annunciation: String,
    /// When it was raised (RFC 3339), when known.
    pub raised_at: Option<String>,
    /// Hours standing at the end of the period.
    pub hours: Option<f64>,
}

/// Time to acknowledge, seconds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AckTimes {
    pub acknowledged: u64,
    pub not_acknowledged: u64,
    pub median_s: Option<f64>,
    pub p90_s: Option<f64>,
    pub max_s: Option<f64>,
}

/// The report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlarmReport {
    pub from: String,
    pub to: String,
    pub days: f64,
    pub annunciations: u64,
    pub realarms: u64,
    pub escalations: u64,
    /// Raises journaled but not shown (shelved, suppressed, out of service).
    pub hidden_raises: u64,
    pub per_day: f64,
    pub per_10min_avg: f64,
    pub busiest_10min: u64,
    /// Start of the busiest 10 minutes (RFC 3339), when any alarm came.
    pub busiest_10min_at: Option<String>,
    /// Share of 10-minute periods with more than 10 annunciations, %.
    pub flood_percent: f64,
    /// Annunciations by priority (low, medium, high, critical).
    pub by_priority: BTreeMap<String, u64>,
    pub top10: Vec<Frequent>,
    /// Share of all annunciations from the top 10, %.
    pub top10_percent: f64,
    /// Alarm id -> events flagged chattering.
    pub chattering: BTreeMap<String, u64>,
    pub ack: AckTimes,
    /// Operator commands by action, and how many were refused.
    pub commands: BTreeMap<String, u64>,
    pub commands_refused: u64,
    /// Alarms standing at `to`, oldest first.
    pub standing: Vec<Standing>,
    /// How many of them are stale (standing more than 24 h).
    pub stale: u64,
    /// How many alarms are shelved at `to`.
    pub shelved: u64,
}

/// What the journal says of one alarm at a moment.
#[derive(Debug, Clone, Default)]
struct State {
    state: String,
    annunciation: String,
    raised_at_ns: Option<i64>,
}

fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    // Nearest rank.
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

fn pct(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

/// The report over `[from_ns, to_ns)` from every journal entry (oldest
/// first, snapshots included: entries before `from_ns` give the state at
/// the start).
pub fn report(entries: &[Entry], from_ns: i64, to_ns: i64) -> AlarmReport {
    let to_ns = to_ns.max(from_ns + 1);
    let mut states: HashMap<String, State> = HashMap::new();
    let mut buckets: BTreeMap<i64, u64> = BTreeMap::new();
    let mut per_alarm: HashMap<String, u64> = HashMap::new();
    let mut by_priority: BTreeMap<String, u64> = ["low", "medium", "high", "critical"]
        .iter()
        .map(|p| (p.to_string(), 0))
        .collect();
    let mut chattering: BTreeMap<String, u64> = BTreeMap::new();
    let mut commands: BTreeMap<String, u64> = BTreeMap::new();
    let (mut annunciations, mut realarms, mut escalations, mut hidden, mut refused) =
        (0u64, 0u64, 0u64, 0u64, 0u64);
    // Alarm id -> time of its annunciation still waiting for an ack.
    let mut waiting: HashMap<String, i64> = HashMap::new();
    let mut ack_s: Vec<f64> = Vec::new();
    let mut not_acked = 0u64;
    for e in entries {
        let ts = e.ts_ns();
        if ts >= to_ns {
            break;
        }
        let inside = ts >= from_ns;
        match e {
            Entry::Snapshot { alarms, .. } => {
                for (id, a) in alarms {
                    states.insert(
                        id.clone(),
                        State {
                            state: a.state.clone(),
                            annunciation: a.annunciation.clone(),
                            raised_at_ns: (a.state != "normal").then_some(a.raised_at_ns),
                        },
                    );
                }
            }
            Entry::Event {
                alarm_id,
                priority,
                action,
                state,
                annunciation,
                chattering: chat,
                ..
            } => {
                let st = states.entry(alarm_id.clone()).or_default();
                if action == "raise" {
                    st.raised_at_ns = Some(ts);
                }
                st.state.clone_from(state);
                st.annunciation.clone_from(annunciation);
                if state == "normal" {
                    st.raised_at_ns = None;
                }
                if !inside {
                    continue;
                }
                if *chat {
                    *chattering.entry(alarm_id.clone()).or_default() += 1;
                }
                match action.as_str() {
                    "raise" if annunciation == "shown" => {
                        annunciations += 1;
                        *buckets.entry(ts.div_euclid(MIN10)).or_default() += 1;
                        *per_alarm.entry(alarm_id.clone()).or_default() += 1;
                        *by_priority.entry(priority.clone()).or_default() += 1;
                        if waiting.insert(alarm_id.clone(), ts).is_some() {
                            // Raised again before anyone acknowledged it.
                            not_acked += 1;
                        }
                    }
                    "raise" => hidden += 1,
                    "realarm" => realarms += 1,
                    "escalate" => escalations += 1,
                    "ack" => {
                        if let Some(t0) = waiting.remove(alarm_id) {
                            ack_s.push((ts - t0) as f64 / 1e9);
                        }
                    }
                    _ => {}
                }
            }
            Entry::Command { action, ok, .. } => {
                if inside {
                    *commands.entry(action.clone()).or_default() += 1;
                    if !ok {
                        refused += 1;
                    }
                }
            }
        }
    }
    not_acked += waiting.len() as u64;
    ack_s.sort_by(f64::total_cmp);

    let periods = ((to_ns - 1).div_euclid(MIN10) - from_ns.div_euclid(MIN10) + 1).max(1) as u64;
    let floods = buckets.values().filter(|&&n| n > FLOOD_PER_10MIN).count() as u64;
    let busiest = buckets
        .iter()
        .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
        .map(|(&k, &n)| (k, n));
    let mut top: Vec<(String, u64)> = per_alarm.into_iter().collect();
    top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    top.truncate(10);
    let top_sum: u64 = top.iter().map(|(_, n)| n).sum();
    let days = (to_ns - from_ns) as f64 / DAY as f64;

    let mut standing: Vec<Standing> = states
        .iter()
        .filter(|(_, s)| !s.state.is_empty() && s.state != "normal")
        .map(|(id, s)| Standing {
            alarm_id: id.clone(),
            state: s.state.clone(),
            annunciation: s.annunciation.clone(),
            raised_at: s.raised_at_ns.map(|t| Timestamp(t).to_rfc3339()),
            hours: s.raised_at_ns.map(|t| (to_ns - t) as f64 / 3.6e12),
        })
        .collect();
    standing.sort_by(|a, b| {
        b.hours
            .unwrap_or(f64::INFINITY)
            .total_cmp(&a.hours.unwrap_or(f64::INFINITY))
            .then(a.alarm_id.cmp(&b.alarm_id))
    });
    let stale = states
        .values()
        .filter(|s| {
            !s.state.is_empty()
                && s.state != "normal"
                && s.raised_at_ns.is_some_and(|t| to_ns - t > STALE_NS)
        })
        .count() as u64;
    let shelved = states
        .values()
        .filter(|s| s.annunciation == "shelved")
        .count() as u64;

    AlarmReport {
        from: Timestamp(from_ns).to_rfc3339(),
        to: Timestamp(to_ns).to_rfc3339(),
        days,
        annunciations,
        realarms,
        escalations,
        hidden_raises: hidden,
        per_day: if days > 0.0 {
            annunciations as f64 / days
        } else {
            0.0
        },
        per_10min_avg: annunciations as f64 / periods as f64,
        busiest_10min: busiest.map_or(0, |(_, n)| n),
        busiest_10min_at: busiest.map(|(k, _)| Timestamp(k * MIN10).to_rfc3339()),
        flood_percent: pct(floods, periods),
        by_priority,
        top10_percent: pct(top_sum, annunciations),
        top10: top
            .into_iter()
            .map(|(alarm_id, n)| Frequent {
                alarm_id,
                annunciations: n,
                percent: pct(n, annunciations),
            })
            .collect(),
        chattering,
        ack: AckTimes {
            acknowledged: ack_s.len() as u64,
            not_acknowledged: not_acked,
            median_s: percentile(&ack_s, 50.0),
            p90_s: percentile(&ack_s, 90.0),
            max_s: ack_s.last().copied(),
        },
        commands,
        commands_refused: refused,
        standing,
        stale,
        shelved,
    }
}

/// The report as a reviewer reads it, with the guideline beside each figure.
pub fn render(r: &AlarmReport) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let secs = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.0} s"));
    let _ = writeln!(
        s,
        "Alarm system performance {} .. {} ({:.1} days)",
        r.from, r.to, r.days
    );
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "{:<34} {:>12}   guideline (ISA-18.2 / EEMUA 191)",
        "measure", "value"
    );
    let mut row = |m: &str, v: String, g: &str| {
        let _ = writeln!(s, "{m:<34} {v:>12}   {g}");
    };
    row("annunciated alarms", r.annunciations.to_string(), "");
    row(
        "per day (average)",
        format!("{:.1}", r.per_day),
        "~150 acceptable, ~300 maximum manageable",
    );
    row(
        "per 10 minutes (average)",
        format!("{:.2}", r.per_10min_avg),
        "~1 acceptable, ~2 maximum manageable",
    );
    row(
        "busiest 10 minutes",
        r.busiest_10min.to_string(),
        &format!("<= 10 ({})", r.busiest_10min_at.as_deref().unwrap_or("-")),
    );
    row(
        "10-minute periods in flood",
        format!("{:.2} %", r.flood_percent),
        "< 1 %",
    );
    row(
        "top 10 alarms' share",
        format!("{:.1} %", r.top10_percent),
        "< 1-5 %",
    );
    row("chattering alarms", r.chattering.len().to_string(), "0");
    row("stale alarms (standing > 24 h)", r.stale.to_string(), "< 5");
    row(
        "shelved at the end",
        r.shelved.to_string(),
        "reviewed every shift",
    );
    row("re-alarms", r.realarms.to_string(), "");
    row("escalations", r.escalations.to_string(), "");
    row(
        "raises not shown (shelved/suppressed)",
        r.hidden_raises.to_string(),
        "",
    );
    row("acknowledged", r.ack.acknowledged.to_string(), "");
    row("not acknowledged", r.ack.not_acknowledged.to_string(), "");
    row("time to acknowledge, median", secs(r.ack.median_s), "");
    row("time to acknowledge, 90th pct", secs(r.ack.p90_s), "");
    row("time to acknowledge, longest", secs(r.ack.max_s), "");
    let _ = writeln!(s);
    let total = r.annunciations;
    let _ = writeln!(
        s,
        "by priority: {}   (guideline: low ~80 %, medium ~15 %, high ~5 %, critical < 1 %)",
        r.by_priority
            .iter()
            .map(|(p, n)| format!("{p} {n} ({:.0} %)", pct(*n, total)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if !r.top10.is_empty() {
        let _ = writeln!(s);
        let _ = writeln!(s, "most frequent alarms (bad actors):");
        for f in &r.top10 {
            let _ = writeln!(
                s,
                "  {:>6}  {:>5.1} %  {}",
                f.annunciations, f.percent, f.alarm_id
            );
        }
    }
    if !r.chattering.is_empty() {
        let _ = writeln!(s);
        let _ = writeln!(s, "chattering alarms (events flagged):");
        for (id, n) in &r.chattering {
            let _ = writeln!(s, "  {n:>6}  {id}");
        }
    }
    if !r.standing.is_empty() {
        let _ = writeln!(s);
        let _ = writeln!(s, "standing at the end of the period (longest first):");
        for a in &r.standing {
            let _ = writeln!(
                s,
                "  {:>8}  {:<12} {:<10} {}",
                a.hours.map_or("?".to_string(), |h| format!("{h:.1} h")),
                a.state,
                a.annunciation,
                a.alarm_id
            );
        }
    }
    if !r.commands.is_empty() {
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "operator commands: {} ({} refused)",
            r.commands
                .iter()
                .map(|(a, n)| format!("{a} {n}"))
                .collect::<Vec<_>>()
                .join(", "),
            r.commands_refused
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::SnapshotAlarm;

    const S: i64 = 1_000_000_000;
    const T0: i64 = 1_767_225_600 * S; // 2026-01-01T00:00:00Z

    fn ev(ts_s: i64, id: &str, prio: &str, action: &str, state: &str, ann: &str) -> Entry {
        Entry::Event {
            seq: 0,
            ts_ns: T0 + ts_s * S,
            alarm_id: id.into(),
            kind: "limit".into(),
            priority: prio.into(),
            action: action.into(),
            state: state.into(),
            annunciation: ann.into(),
            shelved_until_ns: None,
            level: 0,
            realarms: 0,
            repeats: 0,
            chattering: false,
            flood_parent: None,
            value: None,
        }
    }

    #[test]
    fn counts_rates_ack_times_and_standing_by_hand() {
        let mut entries = vec![
            // Before the period: standing since then (stale at the end).
            Entry::Snapshot {
                seq: 1,
                ts_ns: T0 - 2 * DAY,
                alarms: BTreeMap::from([(
                    "s/OLD/H".to_string(),
                    SnapshotAlarm {
                        state: "acked".into(),
                        annunciation: "shown".into(),
                        shelved_until_ns: None,
                        level: 0,
                        realarms: 0,
                        repeats: 0,
                        raised_at_ns: T0 - 2 * DAY,
                        last_seq: 1,
                    },
                )]),
            },
            // Before the period: not counted.
            ev(-10, "s/A/H", "high", "raise", "unacked", "shown"),
            ev(-5, "s/A/H", "high", "clear", "rtn_unacked", "shown"),
            ev(-4, "s/A/H", "high", "ack", "normal", "shown"),
            // In the period: A raised, acked after 30 s, cleared.
            ev(0, "s/A/H", "high", "raise", "unacked", "shown"),
            ev(30, "s/A/H", "high", "ack", "acked", "shown"),
            ev(40, "s/A/H", "high", "clear", "normal", "shown"),
            // B raised twice (the second before any ack), acked after 90 s.
            ev(100, "s/B/L", "low", "raise", "unacked", "shown"),
            ev(110, "s/B/L", "low", "clear", "rtn_unacked", "shown"),
            ev(120, "s/B/L", "low", "raise", "unacked", "shown"),
            ev(210, "s/B/L", "low", "ack", "acked", "shown"),
            // C raised while shelved: journaled, not shown.
            ev(300, "s/C/H", "medium", "raise", "unacked", "shelved"),
            // D raised and never acknowledged; it re-alarms.
            ev(400, "s/D/HH", "critical", "raise", "unacked", "shown"),
            ev(1000, "s/D/HH", "critical", "realarm", "unacked", "shown"),
            Entry::Command {
                ts_ns: T0 + 30 * S,
                request_id: "r1".into(),
                alarm_id: "s/A/H".into(),
                operator: "li".into(),
                action: "ack".into(),
                ok: true,
                error: None,
                detail: String::new(),
                seq: None,
            },
        ];
        // A flood: 11 raises of E within one 10-minute period.
        for i in 0..11 {
            entries.push(ev(
                1200 + i * 20,
                "s/E/H",
                "low",
                "raise",
                "unacked",
                "shown",
            ));
        }
        let r = report(&entries, T0, T0 + DAY);
        assert_eq!(r.annunciations, 4 + 11);
        assert_eq!(r.hidden_raises, 1);
        assert_eq!(r.realarms, 1);
        assert_eq!(r.by_priority["high"], 1);
        assert_eq!(r.by_priority["low"], 13);
        assert_eq!(r.by_priority["critical"], 1);
        assert_eq!(r.by_priority["medium"], 0);
        assert!((r.per_day - 15.0).abs() < 1e-9);
        assert!((r.per_10min_avg - 15.0 / 144.0).abs() < 1e-9);
        // 1200 s .. 1400 s lies in the period starting at 1200 s.
        assert_eq!(r.busiest_10min, 11);
        assert_eq!(
            r.busiest_10min_at.as_deref(),
            Some(Timestamp(T0 + 1200 * S).to_rfc3339().as_str())
        );
        assert!((r.flood_percent - 100.0 / 144.0).abs() < 1e-9);
        assert_eq!(r.top10[0].alarm_id, "s/E/H");
        assert_eq!(r.top10[0].annunciations, 11);
        assert_eq!(r.top10[1].alarm_id, "s/B/L");
        assert!((r.top10_percent - 100.0).abs() < 1e-9, "4 alarms only");
        // Acks: A after 30 s, B's second raise after 90 s; B's first raise,
        // D and ten of E's raises are not acknowledged (E's last one waits).
        assert_eq!(r.ack.acknowledged, 2);
        assert_eq!(r.ack.median_s, Some(30.0));
        assert_eq!(r.ack.max_s, Some(90.0));
        assert_eq!(r.ack.not_acknowledged, 1 + 1 + 11);
        // Standing at the end: OLD (stale), B, C, D, E.
        let ids: Vec<&str> = r.standing.iter().map(|s| s.alarm_id.as_str()).collect();
        assert_eq!(ids[0], "s/OLD/H", "oldest first: {ids:?}");
        assert_eq!(r.standing.len(), 5, "{ids:?}");
        assert_eq!(r.stale, 1);
        assert_eq!(r.shelved, 1);
        assert_eq!(r.commands["ack"], 1);
        let text = render(&r);
        assert!(
            text.contains("s/E/H") && text.contains("busiest 10 minutes"),
            "{text}"
        );
    }

    #[test]
    fn an_empty_journal_gives_zeros_not_nan() {
        let r = report(&[], T0, T0 + DAY);
        assert_eq!(r.annunciations, 0);
        assert_eq!(r.flood_percent, 0.0);
        assert_eq!(r.top10_percent, 0.0);
        assert_eq!(r.ack.median_s, None);
        assert!(render(&r).contains("annunciated alarms"));
    }
}
