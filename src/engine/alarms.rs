//! Limit alarms (HH/H/L/LL) with deadband, and the imbalance alarm.
//!
//! Each alarm definition is a two-state machine (normal / active). A high
//! alarm raises when the value goes above its limit and clears when it falls
//! below `limit - deadband`; a low alarm mirrors that. Only GOOD values are
//! evaluated: bad or stale data neither raises nor clears an alarm (the
//! quality itself is reported on the samples).

use super::plan::AlarmDef;
use crate::model::{AlarmAction, AlarmEvent, AlarmKind, Timestamp};

/// Run-time state of every alarm definition.
#[derive(Debug, Clone)]
pub struct AlarmStates {
    active: Vec<bool>,
    seq: u64,
}

impl AlarmStates {
    pub fn new(count: usize, start_seq: u64) -> Self {
        AlarmStates {
            active: vec![false; count],
            seq: start_seq,
        }
    }

    pub fn is_active(&self, alarm: u32) -> bool {
        self.active.get(alarm as usize).copied().unwrap_or(false)
    }

    /// The last sequence number handed out.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Sets the state of one alarm without an event (config reload: the
    /// operator already saw the raise under the old config).
    pub fn set_active(&mut self, alarm: u32, active: bool) {
        if let Some(a) = self.active.get_mut(alarm as usize) {
            *a = active;
        }
    }

    /// Keeps sequence numbers increasing across a reload.
    pub fn advance_seq(&mut self, at_least: u64) {
        self.seq = self.seq.max(at_least);
    }

    /// Evaluates one alarm against a good value; pushes an event on a transition.
    #[inline]
    pub fn evaluate(
        &mut self,
        index: u32,
        def: &AlarmDef,
        value: f64,
        ts: Timestamp,
        out: &mut Vec<AlarmEvent>,
    ) {
        let Some(active) = self.active.get_mut(index as usize) else {
            return;
        };
        let (raise, clear) = match def.kind {
            AlarmKind::HighHigh | AlarmKind::High => {
                (value > def.limit, value < def.limit - def.deadband)
            }
            AlarmKind::Low | AlarmKind::LowLow => {
                (value < def.limit, value > def.limit + def.deadband)
            }
            AlarmKind::Imbalance => (
                value.abs() > def.limit,
                value.abs() < def.limit - def.deadband,
            ),
        };
        let action = if !*active && raise {
            AlarmAction::Raise
        } else if *active && clear {
            AlarmAction::Clear
        } else {
            return;
        };
        *active = action == AlarmAction::Raise;
        self.seq += 1;
        out.push(AlarmEvent {
            alarm: index,
            kind: def.kind,
            action,
            priority: def.priority,
            value,
            limit: def.limit,
            ts,
            seq: self.seq,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Priority;

    fn def(kind: AlarmKind, limit: f64, deadband: f64) -> AlarmDef {
        AlarmDef {
            id: "s/P/X".into(),
            source: "P".into(),
            kind,
            priority: Priority::High,
            limit,
            deadband,
        }
    }

    fn run(d: &AlarmDef, values: &[f64]) -> Vec<(usize, AlarmAction)> {
        let mut st = AlarmStates::new(1, 0);
        let mut out = Vec::new();
        let mut res = Vec::new();
        for (i, v) in values.iter().enumerate() {
            out.clear();
            st.evaluate(0, d, *v, Timestamp::from_secs(i as i64), &mut out);
            res.extend(out.iter().map(|e| (i, e.action)));
        }
        res
    }

    #[test]
    fn high_alarm_raises_above_limit_and_clears_below_deadband() {
        let d = def(AlarmKind::High, 100.0, 5.0);
        let ev = run(&d, &[90.0, 100.0, 101.0, 99.0, 96.0, 101.0, 94.9, 94.0]);
        assert_eq!(ev, vec![(2, AlarmAction::Raise), (6, AlarmAction::Clear)]);
    }

    #[test]
    fn low_alarm_mirrors_high() {
        let d = def(AlarmKind::LowLow, 10.0, 1.0);
        let ev = run(&d, &[12.0, 9.9, 10.5, 11.1, 9.0]);
        assert_eq!(
            ev,
            vec![
                (1, AlarmAction::Raise),
                (3, AlarmAction::Clear),
                (4, AlarmAction::Raise)
            ]
        );
    }

    #[test]
    fn imbalance_uses_magnitude_and_sequence_numbers_increase() {
        let d = def(AlarmKind::Imbalance, 1.0, 0.2);
        let mut st = AlarmStates::new(1, 41);
        let mut out = Vec::new();
        for v in [0.5, -1.5, -0.9, -0.7] {
            st.evaluate(0, &d, v, Timestamp(0), &mut out);
        }
        assert_eq!(out.len(), 2);
        assert_eq!((out[0].action, out[0].seq), (AlarmAction::Raise, 42));
        assert_eq!((out[1].action, out[1].seq), (AlarmAction::Clear, 43));
    }
}
