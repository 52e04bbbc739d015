//! Alarm-system health (EEMUA 191 / ISA-18.2 performance monitoring), pure:
//! the rolling count of shown activations for the alarm rate and the flood
//! state, and per-alarm activation times for chattering.
//!
//! Invariants: only shown activations (not shelved, suppressed or out of
//! service) count towards the rate and the flood, as those are what operators
//! see; the flood starts when the count in the window goes ABOVE
//! `flood_start` and ends when it falls BELOW `flood_end`; counts are pruned
//! with the timestamps passed in, never a clock.

use std::collections::VecDeque;

/// Rolling activation counter with flood hysteresis.
#[derive(Debug, Clone)]
pub struct FloodMonitor {
    window_ns: i64,
    start: u32,
    end: u32,
    times: VecDeque<i64>,
    in_flood: bool,
}

/// A change of flood state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FloodChange {
    Started,
    Ended,
}

impl FloodMonitor {
    pub fn new(window_ns: i64, start: u32, end: u32) -> Self {
        FloodMonitor {
            window_ns: window_ns.max(1),
            start,
            end,
            // Room for a flood's worth of activations up front; beyond that
            // the ring grows once and keeps its capacity.
            times: VecDeque::with_capacity(4 * start as usize + 16),
            in_flood: false,
        }
    }

    fn prune(&mut self, now: i64) {
        let from = now.saturating_sub(self.window_ns);
        while self.times.front().is_some_and(|&t| t <= from) {
            self.times.pop_front();
        }
    }

    /// Records one shown activation at `ts`.
    pub fn activation(&mut self, ts: i64) -> Option<FloodChange> {
        self.times.push_back(ts);
        self.update(ts)
    }

    /// Re-evaluates at `now` (called from tick).
    pub fn update(&mut self, now: i64) -> Option<FloodChange> {
        self.prune(now);
        let n = self.times.len();
        if !self.in_flood && n > self.start as usize {
            self.in_flood = true;
            Some(FloodChange::Started)
        } else if self.in_flood && n < self.end as usize {
            self.in_flood = false;
            Some(FloodChange::Ended)
        } else {
            None
        }
    }

    pub fn in_flood(&self) -> bool {
        self.in_flood
    }

    /// Activations in the window ending at the last update.
    pub fn count(&self) -> u32 {
        self.times.len() as u32
    }
}

/// Activation times of one alarm within the chatter window (at most `count`).
#[derive(Debug, Clone, Default)]
pub struct ChatterMonitor {
    times: VecDeque<i64>,
}

impl ChatterMonitor {
    /// Records an activation; returns whether the alarm is now chattering.
    pub fn activation(&mut self, ts: i64, count: u32, window_ns: i64) -> bool {
        self.times.push_back(ts);
        while self.times.len() > count as usize {
            self.times.pop_front();
        }
        self.is_chattering(ts, count, window_ns)
    }

    /// Whether the last `count` activations all lie within `window_ns` of `now`.
    pub fn is_chattering(&mut self, now: i64, count: u32, window_ns: i64) -> bool {
        let from = now.saturating_sub(window_ns);
        while self.times.front().is_some_and(|&t| t < from) {
            self.times.pop_front();
        }
        self.times.len() >= count as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    const S: i64 = 1_000_000_000;

    #[test]
    fn flood_starts_above_ten_and_ends_below_five() {
        let mut f = FloodMonitor::new(600 * S, 10, 5);
        for i in 0..10 {
            assert_eq!(f.activation(i * S), None);
        }
        assert_eq!(f.activation(10 * S), Some(FloodChange::Started));
        assert_eq!(f.activation(11 * S), None);
        // 12 activations in the window until t = 600 s; then they age out.
        assert_eq!(f.update(605 * S), None); // 7 left (5..=11 s)
        assert_eq!(f.update(607 * S), Some(FloodChange::Ended)); // 4 left
        assert!(!f.in_flood());
    }

    #[test]
    fn three_in_a_minute_chatter() {
        let mut c = ChatterMonitor::default();
        assert!(!c.activation(0, 3, 60 * S));
        assert!(!c.activation(30 * S, 3, 60 * S));
        assert!(c.activation(59 * S, 3, 60 * S));
        assert!(!c.is_chattering(100 * S, 3, 60 * S));
        assert!(!c.activation(200 * S, 3, 60 * S));
    }
}
