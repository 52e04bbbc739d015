//! The alarm state machine (ISA-18.2 / IEC 62682), pure and deterministic.
//!
//! Per alarm definition: the process condition (with deadband, on-delay and
//! off-delay), the acknowledgement state (normal, unacked, acked,
//! RTN-unacked, latched), the annunciation overlay (shown, shelved timed or
//! one-shot, suppressed by design, out of service), re-alarm and escalation,
//! repeat counts and chattering. Station-wide: the flood monitor, whose
//! `FLOOD` alarm is the parent of the events raised while it lasts.
//!
//! Invariants:
//! - Every transition, command and management step is one [`AlarmEvent`]
//!   with the next sequence number; nothing changes silently.
//! - Shelved, suppressed and out-of-service alarms are still evaluated and
//!   produce events (journaled), flagged by their annunciation; they are
//!   not re-alarmed, escalated or counted towards the flood.
//! - Only the values the engine passes in are evaluated (it passes GOOD
//!   values only; quality alarms get 1/0), so missing or stale data never
//!   raises a process alarm.
//! - Time comes from sample timestamps and `tick(now)`; delays are
//!   confirmed by samples (a condition is sustained when consecutive
//!   samples over the delay confirm it).

use super::alarm_health::{ChatterMonitor, FloodChange, FloodMonitor};
use super::plan::{AlarmDef, AlarmPolicy};
use crate::model::{
    AlarmAction, AlarmCommand, AlarmDetail, AlarmEvent, AlarmHealth, AlarmKind, AlarmState,
    Annunciation, CommandAction, CommandRefusal, CommandReply, Timestamp,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shelve {
    None,
    OneShot,
    Until(i64),
}

#[derive(Debug, Clone)]
struct Slot {
    /// Process condition after deadband and delays.
    cond: bool,
    /// Since when the raw condition has disagreed with `cond` (delays).
    pending_since: Option<i64>,
    state: AlarmState,
    shelve: Shelve,
    suppressed: bool,
    last_value: f64,
    raised_at: i64,
    last_annunciated: i64,
    level: u8,
    level_since: i64,
    realarms: u32,
    realarms_at_level: u32,
    repeats: u32,
    chatter: ChatterMonitor,
    chattering: bool,
}

impl Default for Slot {
    fn default() -> Self {
        Slot {
            cond: false,
            pending_since: None,
            state: AlarmState::Normal,
            shelve: Shelve::None,
            suppressed: false,
            last_value: f64::NAN,
            raised_at: 0,
            last_annunciated: 0,
            level: 0,
            level_since: 0,
            realarms: 0,
            realarms_at_level: 0,
            repeats: 0,
            chatter: ChatterMonitor::default(),
            chattering: false,
        }
    }
}

/// The state of one alarm as saved in the journal and restored at start.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SavedAlarm {
    pub state: AlarmState,
    pub annunciation: Annunciation,
    pub shelved_until: Option<Timestamp>,
    pub level: u8,
    pub realarms: u32,
    pub repeats: u32,
    /// When the current activation raised.
    pub raised_at: Timestamp,
}

/// Run-time state of every alarm definition, and the station's flood state.
#[derive(Debug, Clone)]
pub struct AlarmStates {
    slots: Vec<Slot>,
    seq: u64,
    flood: FloodMonitor,
    /// `seq` of the FLOOD raise while a flood lasts.
    flood_parent: Option<u64>,
    activations: u64,
    next_health: Option<i64>,
}

impl AlarmStates {
    pub fn new(count: usize, start_seq: u64) -> Self {
        Self::with_policy(count, start_seq, &AlarmPolicy::default())
    }

    pub fn with_policy(count: usize, start_seq: u64, policy: &AlarmPolicy) -> Self {
        AlarmStates {
            slots: vec![Slot::default(); count],
            seq: start_seq,
            flood: FloodMonitor::new(policy.flood_window_ns, policy.flood_start, policy.flood_end),
            flood_parent: None,
            activations: 0,
            next_health: None,
        }
    }

    /// Whether the process condition of alarm `alarm` is active.
    pub fn is_active(&self, alarm: u32) -> bool {
        self.slots.get(alarm as usize).is_some_and(|s| s.cond)
    }

    /// ISA state of alarm `alarm`.
    pub fn state(&self, alarm: u32) -> AlarmState {
        self.slots
            .get(alarm as usize)
            .map_or(AlarmState::Normal, |s| s.state)
    }

    /// The last sequence number handed out.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    pub fn in_flood(&self) -> bool {
        self.flood.in_flood()
    }

    /// Restores an alarm's state from the journal (before any input).
    pub fn restore(&mut self, alarm: u32, saved: &SavedAlarm) {
        let Some(s) = self.slots.get_mut(alarm as usize) else {
            return;
        };
        s.state = saved.state;
        s.cond = matches!(saved.state, AlarmState::Unacked | AlarmState::Acked);
        s.shelve = match (saved.annunciation, saved.shelved_until) {
            (Annunciation::Shelved, Some(t)) => Shelve::Until(t.nanos()),
            (Annunciation::Shelved, None) => Shelve::OneShot,
            _ => Shelve::None,
        };
        s.level = saved.level;
        s.realarms = saved.realarms;
        s.repeats = saved.repeats;
        s.raised_at = saved.raised_at.nanos();
        s.last_annunciated = saved.raised_at.nanos();
        s.level_since = saved.raised_at.nanos();
    }

    /// Raises the sequence number to at least `seq` (restored from the journal).
    pub fn resume_seq(&mut self, seq: u64) {
        self.seq = self.seq.max(seq);
    }

    /// Copies the whole state of alarm `from` in `old` to alarm `to` (config
    /// reload: the operator already saw the raise under the old config, so
    /// no event). Returns whether that alarm's condition is active.
    pub fn carry(&mut self, to: u32, old: &AlarmStates, from: u32) -> bool {
        match (
            self.slots.get_mut(to as usize),
            old.slots.get(from as usize),
        ) {
            (Some(s), Some(o)) => {
                *s = o.clone();
                s.cond
            }
            _ => false,
        }
    }

    /// Keeps sequence numbers increasing across a reload.
    pub fn advance_seq(&mut self, at_least: u64) {
        self.seq = self.seq.max(at_least);
    }

    /// Sets the suppressed-by-design flag of an alarm.
    pub fn set_suppressed(&mut self, alarm: u32, suppressed: bool) {
        if let Some(s) = self.slots.get_mut(alarm as usize) {
            s.suppressed = suppressed;
        }
    }

    fn annunciation(s: &Slot, def: &AlarmDef) -> Annunciation {
        if def.mgmt.out_of_service {
            Annunciation::OutOfService
        } else if s.shelve != Shelve::None {
            Annunciation::Shelved
        } else if s.suppressed {
            Annunciation::Suppressed
        } else {
            Annunciation::Shown
        }
    }

    fn push(
        &mut self,
        index: u32,
        def: &AlarmDef,
        action: AlarmAction,
        value: f64,
        ts: Timestamp,
        out: &mut Vec<AlarmEvent>,
    ) -> u64 {
        self.seq += 1;
        let Some(s) = self.slots.get(index as usize) else {
            return self.seq;
        };
        let flood_parent = if def.kind == AlarmKind::Flood {
            None
        } else {
            self.flood_parent
        };
        out.push(AlarmEvent {
            alarm: index,
            kind: def.kind,
            action,
            priority: def.priority,
            value,
            limit: def.limit,
            ts,
            seq: self.seq,
            detail: AlarmDetail {
                state: s.state,
                annunciation: Self::annunciation(s, def),
                shelved_until: match s.shelve {
                    Shelve::Until(t) => Some(Timestamp(t)),
                    _ => None,
                },
                level: s.level,
                realarms: s.realarms,
                repeats: s.repeats,
                chattering: s.chattering,
                flood_parent,
            },
        });
        self.seq
    }

    /// Evaluates one alarm against a value (a GOOD value, a rate, a digital
    /// state or 1/0 for a quality alarm); pushes events on a transition.
    /// `defs` is the whole alarm table (the flood alarm may fire too).
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    pub fn evaluate(
        &mut self,
        index: u32,
        defs: &[AlarmDef],
        policy: &AlarmPolicy,
        flood_alarm: Option<u32>,
        value: f64,
        ts: Timestamp,
        out: &mut Vec<AlarmEvent>,
    ) {
        let Some(def) = defs.get(index as usize) else {
            return;
        };
        let (raise, clear) = match def.kind {
            AlarmKind::HighHigh | AlarmKind::High | AlarmKind::RateOfChange => {
                let v = if def.kind == AlarmKind::RateOfChange {
                    value.abs()
                } else {
                    value
                };
                (v > def.limit, v < def.limit - def.deadband)
            }
            AlarmKind::Low | AlarmKind::LowLow => {
                (value < def.limit, value > def.limit + def.deadband)
            }
            AlarmKind::Imbalance => (
                value.abs() > def.limit,
                value.abs() < def.limit - def.deadband,
            ),
            AlarmKind::SlamShut | AlarmKind::GasDetector | AlarmKind::Door | AlarmKind::Digital => {
                let on = value == def.mgmt.active_when;
                (on, !on)
            }
            AlarmKind::CommLoss | AlarmKind::BadQuality | AlarmKind::Flood => {
                (value > 0.5, value <= 0.5)
            }
            // Leak (CUSUM statistic) and rupture (pressure fall rate) are
            // high-type: raise above the limit.
            AlarmKind::Leak | AlarmKind::Rupture => {
                (value > def.limit, value < def.limit - def.deadband)
            }
        };
        self.transition(
            index,
            defs,
            policy,
            flood_alarm,
            raise,
            clear,
            value,
            ts,
            out,
        );
    }

    /// Raises or clears alarm `index` on conditions the caller decided (the
    /// 输差 alarm needs both the limit and the window's own uncertainty; the
    /// leak alarm follows the CUSUM detectors). Runs the same state machine
    /// as [`Self::evaluate`]: delays, ISA states, annunciation, flood,
    /// escalation; pushes events only on a transition.
    #[allow(clippy::too_many_arguments)]
    pub fn transition(
        &mut self,
        index: u32,
        defs: &[AlarmDef],
        policy: &AlarmPolicy,
        flood_alarm: Option<u32>,
        raise: bool,
        clear: bool,
        value: f64,
        ts: Timestamp,
        out: &mut Vec<AlarmEvent>,
    ) {
        let (Some(def), Some(s)) = (defs.get(index as usize), self.slots.get_mut(index as usize))
        else {
            return;
        };
        s.last_value = value;
        let wants = if !s.cond && raise {
            true
        } else if s.cond && clear {
            false
        } else {
            s.pending_since = None;
            return;
        };
        let delay = if wants {
            def.mgmt.on_delay_ns
        } else {
            def.mgmt.off_delay_ns
        };
        let t = ts.nanos();
        if delay > 0 {
            let since = *s.pending_since.get_or_insert(t);
            if t.saturating_sub(since) < delay {
                return;
            }
        }
        s.pending_since = None;
        s.cond = wants;
        if wants {
            self.on_raise(index, defs, policy, flood_alarm, value, ts, out);
        } else {
            self.on_clear(index, def, value, ts, out);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn on_raise(
        &mut self,
        index: u32,
        defs: &[AlarmDef],
        policy: &AlarmPolicy,
        flood_alarm: Option<u32>,
        value: f64,
        ts: Timestamp,
        out: &mut Vec<AlarmEvent>,
    ) {
        let def = &defs[index as usize];
        let t = ts.nanos();
        let shown = {
            let s = &mut self.slots[index as usize];
            s.state = AlarmState::Unacked;
            s.raised_at = t;
            s.last_annunciated = t;
            s.level = 0;
            s.level_since = t;
            s.realarms = 0;
            s.realarms_at_level = 0;
            s.repeats = s.repeats.saturating_add(1);
            s.chattering = s
                .chatter
                .activation(t, policy.chatter_count, policy.chatter_window_ns);
            Self::annunciation(s, def) == Annunciation::Shown
        };
        self.activations += 1;
        // The flood alarm never counts itself; its parent event comes first.
        if shown
            && def.kind != AlarmKind::Flood
            && self.flood.activation(t) == Some(FloodChange::Started)
            && let Some(f) = flood_alarm
        {
            self.flood_change(f, defs, policy, true, ts, out);
        }
        self.push(index, def, AlarmAction::Raise, value, ts, out);
        if def.mgmt.escalate_at_once && shown {
            let top = policy.escalation_chain.len().saturating_sub(1) as u8;
            while self.slots[index as usize].level < top {
                self.slots[index as usize].level += 1;
                self.slots[index as usize].level_since = t;
                self.push(index, def, AlarmAction::Escalate, value, ts, out);
            }
        }
    }

    fn on_clear(
        &mut self,
        index: u32,
        def: &AlarmDef,
        value: f64,
        ts: Timestamp,
        out: &mut Vec<AlarmEvent>,
    ) {
        let s = &mut self.slots[index as usize];
        s.state = match s.state {
            AlarmState::Unacked | AlarmState::RtnUnacked => AlarmState::RtnUnacked,
            AlarmState::Acked if def.mgmt.latch => AlarmState::Latched,
            AlarmState::Latched => AlarmState::Latched,
            _ => AlarmState::Normal,
        };
        let one_shot = s.shelve == Shelve::OneShot;
        self.push(index, def, AlarmAction::Clear, value, ts, out);
        if one_shot {
            self.slots[index as usize].shelve = Shelve::None;
            self.push(index, def, AlarmAction::Unshelve, value, ts, out);
        }
    }

    fn flood_change(
        &mut self,
        f: u32,
        defs: &[AlarmDef],
        policy: &AlarmPolicy,
        started: bool,
        ts: Timestamp,
        out: &mut Vec<AlarmEvent>,
    ) {
        let count = f64::from(self.flood.count());
        let Some(s) = self.slots.get_mut(f as usize) else {
            return;
        };
        s.cond = started;
        if started {
            self.flood_parent = None;
            self.on_raise(f, defs, policy, None, count, ts, out);
            self.flood_parent = Some(self.seq);
        } else {
            self.flood_parent = None;
            self.on_clear(f, &defs[f as usize], count, ts, out);
        }
    }

    /// Applies an operator command; the reply says whether it was applied.
    pub fn command(
        &mut self,
        index: Option<u32>,
        defs: &[AlarmDef],
        policy: &AlarmPolicy,
        cmd: &AlarmCommand,
        out: &mut Vec<AlarmEvent>,
    ) -> CommandReply {
        let refuse = |r: CommandRefusal, detail: String| CommandReply {
            command: cmd.clone(),
            refused: Some(r),
            detail,
            seq: None,
        };
        let Some((index, def)) = index.and_then(|i| defs.get(i as usize).map(|d| (i, d))) else {
            return refuse(
                CommandRefusal::UnknownAlarm,
                format!("no alarm {:?} at this station", cmd.alarm_id),
            );
        };
        let Some(s) = self.slots.get_mut(index as usize) else {
            return refuse(CommandRefusal::UnknownAlarm, String::new());
        };
        let now = cmd.ts.nanos();
        let wrong = |s: &Slot, what: &str| {
            refuse(
                CommandRefusal::WrongState,
                format!(
                    "cannot {what}: alarm is {}{}",
                    s.state.as_str(),
                    if s.shelve != Shelve::None {
                        ", shelved"
                    } else {
                        ""
                    }
                ),
            )
        };
        let action = match cmd.action {
            CommandAction::Ack => {
                s.state = match s.state {
                    AlarmState::Unacked => AlarmState::Acked,
                    AlarmState::RtnUnacked if def.mgmt.latch => AlarmState::Latched,
                    AlarmState::RtnUnacked => AlarmState::Normal,
                    _ => return wrong(s, "acknowledge"),
                };
                AlarmAction::Ack
            }
            CommandAction::Reset => {
                if s.state != AlarmState::Latched {
                    return wrong(s, "reset (only a latched alarm that returned to normal)");
                }
                s.state = AlarmState::Normal;
                AlarmAction::Reset
            }
            CommandAction::Shelve { duration_ns } => {
                if s.shelve != Shelve::None || def.mgmt.out_of_service {
                    return wrong(s, "shelve");
                }
                if duration_ns < 0 {
                    return refuse(
                        CommandRefusal::ShelveExpired,
                        "negative shelve duration".into(),
                    );
                }
                if duration_ns > policy.max_shelve_ns {
                    return refuse(
                        CommandRefusal::ShelveTooLong,
                        format!(
                            "shelve of {} s exceeds the maximum of {} s",
                            duration_ns / 1_000_000_000,
                            policy.max_shelve_ns / 1_000_000_000
                        ),
                    );
                }
                if duration_ns == 0 {
                    if !s.cond {
                        return wrong(s, "shelve one-shot (the alarm is not active)");
                    }
                    s.shelve = Shelve::OneShot;
                } else {
                    let until = cmd
                        .sent
                        .map_or(now, Timestamp::nanos)
                        .saturating_add(duration_ns);
                    if until <= now {
                        return refuse(
                            CommandRefusal::ShelveExpired,
                            "the shelve had expired before it arrived".into(),
                        );
                    }
                    s.shelve = Shelve::Until(until);
                }
                AlarmAction::Shelve
            }
            CommandAction::Unshelve => {
                if s.shelve == Shelve::None {
                    return wrong(s, "unshelve");
                }
                s.shelve = Shelve::None;
                s.last_annunciated = now;
                AlarmAction::Unshelve
            }
        };
        let value = s.last_value;
        let seq = self.push(index, def, action, value, cmd.ts, out);
        CommandReply {
            command: cmd.clone(),
            refused: None,
            detail: String::new(),
            seq: Some(seq),
        }
    }

    /// Advances time: shelve expiry, re-alarm, escalation, flood end,
    /// chattering decay and, when due, a health snapshot.
    pub fn tick(
        &mut self,
        defs: &[AlarmDef],
        policy: &AlarmPolicy,
        flood_alarm: Option<u32>,
        now: Timestamp,
        out: &mut Vec<AlarmEvent>,
        health: &mut Vec<AlarmHealth>,
    ) {
        let n = now.nanos();
        for (i, def) in defs.iter().enumerate() {
            let index = i as u32;
            let Some(s) = self.slots.get_mut(i) else {
                break;
            };
            if s.chattering
                && !s
                    .chatter
                    .is_chattering(n, policy.chatter_count, policy.chatter_window_ns)
            {
                s.chattering = false;
            }
            if let Shelve::Until(t) = s.shelve
                && n >= t
            {
                s.shelve = Shelve::None;
                // The unshelve itself annunciates a standing alarm.
                s.last_annunciated = n;
                let v = s.last_value;
                self.push(index, def, AlarmAction::Unshelve, v, now, out);
            }
            let s = &mut self.slots[i];
            if s.state != AlarmState::Unacked || Self::annunciation(s, def) != Annunciation::Shown {
                continue;
            }
            let v = s.last_value;
            if def.mgmt.realarm_ns > 0
                && n.saturating_sub(s.last_annunciated) >= def.mgmt.realarm_ns
            {
                s.last_annunciated = n;
                s.realarms = s.realarms.saturating_add(1);
                s.realarms_at_level = s.realarms_at_level.saturating_add(1);
                self.push(index, def, AlarmAction::ReAlarm, v, now, out);
            }
            let s = &mut self.slots[i];
            let by_count = policy.escalate_after_realarms > 0
                && s.realarms_at_level >= policy.escalate_after_realarms;
            let by_time = policy.escalate_after_ns > 0
                && n.saturating_sub(s.level_since) >= policy.escalate_after_ns;
            if (by_count || by_time) && usize::from(s.level) + 1 < policy.escalation_chain.len() {
                s.level += 1;
                s.level_since = n;
                s.realarms_at_level = 0;
                self.push(index, def, AlarmAction::Escalate, v, now, out);
            }
        }
        if let Some(f) = flood_alarm
            && self.flood.update(n) == Some(FloodChange::Ended)
        {
            self.flood_change(f, defs, policy, false, now, out);
        }
        let due = *self.next_health.get_or_insert(n);
        if n >= due {
            self.next_health = Some(n.saturating_add(policy.health_interval_ns));
            health.push(self.health(defs, now));
        }
    }

    /// The current health figures.
    pub fn health(&self, defs: &[AlarmDef], now: Timestamp) -> AlarmHealth {
        let n = now.nanos();
        let mut h = AlarmHealth {
            ts: now,
            alarms_per_10min: self.flood.count(),
            flood: self.flood.in_flood(),
            activations_total: self.activations,
            ..AlarmHealth::default()
        };
        for (s, def) in self.slots.iter().zip(defs) {
            h.chattering += u32::from(s.chattering);
            h.standing += u32::from(s.state.is_standing());
            h.shelved += u32::from(s.shelve != Shelve::None);
            if matches!(s.state, AlarmState::Unacked | AlarmState::RtnUnacked)
                && Self::annunciation(s, def) == Annunciation::Shown
            {
                h.unacked += 1;
                h.max_unacked_s = h
                    .max_unacked_s
                    .max(n.saturating_sub(s.raised_at) as f64 / 1e9);
            }
        }
        h
    }
}

#[cfg(test)]
mod tests;
