//! Station gas balance (输差) over fixed, epoch-aligned windows.
//!
//! Each meter's flow rate (Sm³/h at base conditions) is integrated with the
//! trapezoid rule between consecutive GOOD samples that are at most one
//! stale period apart; a longer gap, or a bad or stale sample, is left out
//! and lowers the window's coverage instead of being guessed. Integration is
//! split exactly at window boundaries, so windows are time-aligned across
//! devices whatever their poll phase.
//!
//! A window closes when every meter has reported past its end, or when
//! `now` passes its end by the grace period (the longest stale period). The
//! volume of each meter is its mean good rate times the window length
//! (coverage-corrected); the result is GOOD at full coverage, UNCERTAIN when
//! coverage is at least `min_coverage`, BAD below that. Only GOOD and
//! UNCERTAIN windows may raise or clear the imbalance alarm, so missing or
//! stale data never raises a leak alarm. Line pack is not yet subtracted.

use crate::config::MeterRole;
use crate::model::{BalanceResult, Quality, Timestamp};
use std::collections::VecDeque;

const NS_PER_HOUR: f64 = 3_600e9;

#[derive(Debug, Clone)]
struct MeterState {
    role: MeterRole,
    max_gap_ns: i64,
    last_ts: i64,
    last_value: f64,
    last_good: bool,
    seen: bool,
}

#[derive(Debug, Clone)]
struct Window {
    start: i64,
    volume_sm3: Vec<f64>,
    covered_ns: Vec<i64>,
}

/// Balance state for one group of meters.
#[derive(Debug, Clone)]
pub struct Balance {
    window_ns: i64,
    min_coverage: f64,
    grace_ns: i64,
    meters: Vec<MeterState>,
    open: VecDeque<Window>,
    /// End of the last closed window: later data for it is too late.
    closed_upto: i64,
}

impl Balance {
    /// `meters`: role and longest gap to integrate across (ns) per meter.
    pub fn new(window_ns: i64, min_coverage: f64, meters: &[(MeterRole, i64)]) -> Self {
        Balance {
            window_ns: window_ns.max(1),
            min_coverage,
            grace_ns: meters.iter().map(|m| m.1).max().unwrap_or(0),
            meters: meters
                .iter()
                .map(|&(role, max_gap_ns)| MeterState {
                    role,
                    max_gap_ns,
                    last_ts: i64::MIN,
                    last_value: 0.0,
                    last_good: false,
                    seen: false,
                })
                .collect(),
            open: VecDeque::new(),
            closed_upto: i64::MIN,
        }
    }

    /// Feeds one flow sample of meter `m`. Out-of-order samples are ignored.
    pub fn on_flow(&mut self, m: usize, ts: Timestamp, value: f64, good: bool) {
        let Some(st) = self.meters.get(m) else {
            return;
        };
        let t = ts.nanos();
        if st.seen && t <= st.last_ts {
            return;
        }
        let (t0, v0, integrate) = (
            st.last_ts,
            st.last_value,
            st.seen && st.last_good && good && t - st.last_ts <= st.max_gap_ns,
        );
        if integrate {
            self.integrate(m, t0, t, v0, value);
        }
        let st = &mut self.meters[m];
        st.seen = true;
        st.last_ts = t;
        st.last_good = good;
        if good {
            st.last_value = value;
        }
    }

    fn window_start(&self, t: i64) -> i64 {
        t.div_euclid(self.window_ns) * self.window_ns
    }

    fn integrate(&mut self, m: usize, t0: i64, t1: i64, v0: f64, v1: f64) {
        let n = self.meters.len();
        let mut a = t0.max(self.closed_upto);
        while a < t1 {
            let ws = self.window_start(a);
            let b = t1.min(ws + self.window_ns);
            let frac = |t: i64| (t - t0) as f64 / (t1 - t0) as f64;
            let (va, vb) = (v0 + (v1 - v0) * frac(a), v0 + (v1 - v0) * frac(b));
            let w = match self.open.iter().position(|w| w.start == ws) {
                Some(i) => i,
                None => {
                    let i = self
                        .open
                        .iter()
                        .position(|w| w.start > ws)
                        .unwrap_or(self.open.len());
                    self.open.insert(
                        i,
                        Window {
                            start: ws,
                            volume_sm3: vec![0.0; n],
                            covered_ns: vec![0; n],
                        },
                    );
                    i
                }
            };
            self.open[w].volume_sm3[m] += (va + vb) / 2.0 * (b - a) as f64 / NS_PER_HOUR;
            self.open[w].covered_ns[m] += b - a;
            a = b;
        }
    }

    /// Closes every window that is complete at `now`, pushing its result.
    pub fn close_due(&mut self, now: Timestamp, out: &mut Vec<BalanceResult>) {
        let now = now.nanos();
        while let Some(w) = self.open.front() {
            let end = w.start + self.window_ns;
            let all_past = self.meters.iter().all(|m| m.seen && m.last_ts >= end);
            if !(all_past || now >= end.saturating_add(self.grace_ns)) {
                break;
            }
            let Some(w) = self.open.pop_front() else {
                break;
            };
            self.closed_upto = end;
            out.push(self.result(&w));
        }
        // With no data at all, nothing opens a window; nothing to report.
    }

    fn result(&self, w: &Window) -> BalanceResult {
        let mut inlet = 0.0;
        let mut outlet = 0.0;
        let mut coverage = 1.0f64;
        for (i, m) in self.meters.iter().enumerate() {
            let cov = w.covered_ns[i] as f64 / self.window_ns as f64;
            coverage = coverage.min(cov);
            let vol = if w.covered_ns[i] > 0 {
                w.volume_sm3[i] / cov
            } else {
                0.0
            };
            match m.role {
                MeterRole::Inlet => inlet += vol,
                MeterRole::Outlet => outlet += vol,
            }
        }
        let imbalance = inlet - outlet;
        let percent = if inlet > 0.0 {
            imbalance / inlet * 100.0
        } else {
            f64::NAN
        };
        let quality = if coverage >= 0.999 {
            Quality::Good
        } else if coverage >= self.min_coverage {
            Quality::Uncertain
        } else {
            Quality::Bad
        };
        BalanceResult {
            start: Timestamp(w.start),
            end: Timestamp(w.start + self.window_ns),
            inlet_sm3: inlet,
            outlet_sm3: outlet,
            imbalance_sm3: imbalance,
            imbalance_percent: percent,
            coverage,
            quality,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000_000;

    fn feed(b: &mut Balance, secs: std::ops::Range<i64>, inlet: f64, outlet: f64) {
        for t in secs {
            b.on_flow(0, Timestamp(t * S), inlet, true);
            b.on_flow(1, Timestamp(t * S), outlet, true);
        }
    }

    #[test]
    fn constant_flows_give_exact_window_volumes() {
        let mut b = Balance::new(
            60 * S,
            0.9,
            &[(MeterRole::Inlet, 2 * S), (MeterRole::Outlet, 2 * S)],
        );
        let mut out = Vec::new();
        feed(&mut b, 0..121, 3600.0, 3564.0); // 1 Sm3/s in, 0.99 out
        b.close_due(Timestamp(121 * S), &mut out);
        assert_eq!(out.len(), 2);
        let r = out[1];
        assert_eq!((r.start, r.end), (Timestamp(60 * S), Timestamp(120 * S)));
        assert!((r.inlet_sm3 - 60.0).abs() < 1e-9, "{r:?}");
        assert!((r.outlet_sm3 - 59.4).abs() < 1e-9);
        assert!((r.imbalance_percent - 1.0).abs() < 1e-9);
        assert_eq!(r.quality, Quality::Good);
    }

    #[test]
    fn ramp_is_integrated_by_trapezoid_and_split_at_the_boundary() {
        let mut b = Balance::new(
            10 * S,
            0.9,
            &[(MeterRole::Inlet, 20 * S), (MeterRole::Outlet, 20 * S)],
        );
        // One sample at 5 s and one at 15 s: flow ramps 0 -> 3600 Sm3/h.
        b.on_flow(0, Timestamp(5 * S), 0.0, true);
        b.on_flow(1, Timestamp(5 * S), 0.0, true);
        b.on_flow(0, Timestamp(15 * S), 3600.0, true);
        b.on_flow(1, Timestamp(15 * S), 3600.0, true);
        let mut out = Vec::new();
        b.close_due(Timestamp(100 * S), &mut out);
        // Window [0,10): covered 5..10 s at 0..1800 Sm3/h = 1.25 Sm3; the
        // mean rate over the covered half scales it to 2.5 Sm3 for 10 s.
        assert!((out[0].coverage - 0.5).abs() < 1e-12);
        assert_eq!(out[0].quality, Quality::Bad);
        assert!((out[0].inlet_sm3 - 2.5).abs() < 1e-9, "{:?}", out[0]);
        // Window [10,20): 10..15 s at 1800..3600 Sm3/h = 3.75 Sm3, scaled 7.5.
        assert!((out[1].inlet_sm3 - 7.5).abs() < 1e-9, "{:?}", out[1]);
    }

    #[test]
    fn gaps_and_bad_samples_lower_coverage_and_never_count_as_flow() {
        let mut b = Balance::new(
            60 * S,
            0.9,
            &[(MeterRole::Inlet, 2 * S), (MeterRole::Outlet, 2 * S)],
        );
        feed(&mut b, 0..60, 3600.0, 3600.0);
        // Outlet meter goes silent for 20 s in the second window: inlet keeps reporting.
        for t in 60..121 {
            b.on_flow(0, Timestamp(t * S), 3600.0, true);
            if !(70..90).contains(&t) {
                b.on_flow(1, Timestamp(t * S), 3600.0, t != 95);
            }
        }
        let mut out = Vec::new();
        b.close_due(Timestamp(200 * S), &mut out);
        let r = out[1];
        assert!(r.coverage < 0.9, "{r:?}");
        assert_eq!(r.quality, Quality::Bad);
        // Coverage-corrected volumes do not invent an imbalance from the gap.
        assert!(r.imbalance_percent.abs() < 1e-9, "{r:?}");
    }

    #[test]
    fn window_waits_for_the_slowest_meter_then_grace() {
        let mut b = Balance::new(
            10 * S,
            0.9,
            &[(MeterRole::Inlet, 2 * S), (MeterRole::Outlet, 2 * S)],
        );
        for t in 0..12 {
            b.on_flow(0, Timestamp(t * S), 100.0, true);
        }
        for t in 0..9 {
            b.on_flow(1, Timestamp(t * S), 100.0, true);
        }
        let mut out = Vec::new();
        b.close_due(Timestamp(11 * S), &mut out);
        assert!(out.is_empty(), "outlet has not reported past the end yet");
        b.close_due(Timestamp(12 * S), &mut out);
        assert_eq!(out.len(), 1, "grace of 2 s passed");
    }
}
