//! A live picture of the station for terminal views (`gaswatch demo`):
//! current value and quality of every tag, active alarms, the latest
//! balance windows and recent events. Updated by the engine task after each
//! output; read by the view at its own pace.

use crate::engine::EnginePlan;
use crate::model::{AlarmAction, AlarmEvent, BalanceResult, Output, Quality, Timestamp};
use std::collections::{BTreeMap, VecDeque};

#[derive(Debug, Clone, Default)]
pub struct LiveState {
    /// Per tag: value, quality, time of the last sample.
    pub values: Vec<(f64, Quality, Timestamp)>,
    /// Active alarms by alarm index.
    pub active: BTreeMap<u32, AlarmEvent>,
    /// Most recent events, newest last (bounded).
    pub events: VecDeque<AlarmEvent>,
    /// Latest closed balance windows, newest last (bounded).
    pub balances: VecDeque<BalanceResult>,
    /// Samples handled since start.
    pub samples: u64,
}

const KEEP: usize = 12;

impl LiveState {
    pub fn new(plan: &EnginePlan) -> Self {
        LiveState {
            values: vec![(f64::NAN, Quality::Stale, Timestamp(0)); plan.tags.len()],
            ..Default::default()
        }
    }

    pub fn update(&mut self, out: &Output) {
        for s in &out.samples {
            if let Some(v) = self.values.get_mut(s.tag.0 as usize) {
                *v = (s.value, s.quality, s.ts);
            }
        }
        self.samples += out.samples.len() as u64;
        for a in &out.alarms {
            match a.action {
                AlarmAction::Raise => {
                    self.active.insert(a.alarm, a.clone());
                }
                AlarmAction::Clear => {
                    self.active.remove(&a.alarm);
                }
                _ => {}
            }
            self.events.push_back(a.clone());
            if self.events.len() > KEEP {
                self.events.pop_front();
            }
        }
        for b in &out.balances {
            self.balances.push_back(*b);
            if self.balances.len() > KEEP {
                self.balances.pop_front();
            }
        }
    }
}
