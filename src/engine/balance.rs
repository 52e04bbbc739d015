//! Station gas balance (输差) over fixed, time-aligned windows, with line
//! pack and uncertainty.
//!
//! Each meter's flow rate (Sm³/h at base conditions) is integrated with the
//! trapezoid rule between consecutive GOOD samples that are at most one
//! stale period apart; a longer gap, or a bad or stale sample, is left out
//! and lowers the window's coverage instead of being guessed. Totaliser
//! meters hand in exact volumes over an interval ([`Balance::on_volume`]),
//! spread evenly over it. Integration is split exactly at window
//! boundaries, so windows are time-aligned across devices whatever their
//! poll phase. Windows start at `offset + k * length` (offset 0: aligned to
//! the epoch; the gas day uses the contract hour).
//!
//! Line pack: each element's pack (Sm³) is sampled whenever its pressure or
//! temperature changes; a window's pack change is the last value in the
//! window minus the last value before it. If an element has no value near
//! the window start or a bad one inside it, the pack change is unknown and
//! the window is BAD: an unknown pack change must never look like a leak.
//!
//! A window closes when every meter has reported past its end, or when
//! `now` passes its end by the grace period (the longest stale period). The
//! volume of each meter is its mean good rate times the window length
//! (coverage-corrected); the result is GOOD at full coverage, UNCERTAIN when
//! coverage is at least `min_coverage`, BAD below that. Only GOOD and
//! UNCERTAIN windows may raise or clear the imbalance alarm, so missing or
//! stale data never raises a leak alarm.
//!
//! Uncertainty: meter `i` with expanded uncertainty `U_i` % contributes
//! `U_i/100 * V_i`, plus 10 % of the gap-filled part of its volume; the
//! line pack `U_lp/100 * |dLP|`; they add in quadrature
//! (independent meters), and the 输差率 uncertainty is that over the inlet.

use crate::config::MeterRole;
use crate::model::{BalanceResult, Quality, Timestamp};
use std::collections::VecDeque;

const NS_PER_HOUR: f64 = 3_600e9;
/// Expanded relative uncertainty of a coverage-corrected (gap-filled) part.
const GAP_FILL_FRACTION: f64 = 0.1;

/// A meter as the balance sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MeterSpec {
    pub role: MeterRole,
    /// Longest gap between two samples that is still integrated (ns).
    pub max_gap_ns: i64,
    /// Expanded (k = 2) uncertainty, % of volume.
    pub uncertainty_percent: f64,
}

/// A line-pack element as the balance sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ElementSpec {
    /// How far before a window start the last pack value may be (ns).
    pub max_gap_ns: i64,
    /// Expanded (k = 2) uncertainty, % of the pack change.
    pub uncertainty_percent: f64,
}

#[derive(Debug, Clone)]
struct MeterState {
    spec: MeterSpec,
    last_ts: i64,
    last_value: f64,
    last_good: bool,
    seen: bool,
}

#[derive(Debug, Clone, Copy)]
struct ElementState {
    spec: ElementSpec,
    /// Last pack value (Sm³; NaN when bad) and its time.
    last_ts: i64,
    last_lp: f64,
}

#[derive(Debug, Clone)]
struct Window {
    start: i64,
    volume_sm3: Vec<f64>,
    covered_ns: Vec<i64>,
    lp_start: Vec<f64>,
    lp_end: Vec<f64>,
    lp_bad: Vec<bool>,
}

/// Balance state for one group of meters and one window length.
#[derive(Debug, Clone)]
pub struct Balance {
    window_ns: i64,
    offset_ns: i64,
    min_coverage: f64,
    grace_ns: i64,
    meters: Vec<MeterState>,
    elements: Vec<ElementState>,
    open: VecDeque<Window>,
    /// End of the last closed window: later data for it is too late.
    closed_upto: i64,
}

impl Balance {
    /// `meters`: role and longest gap to integrate across (ns) per meter;
    /// 1 % meter uncertainty, no line pack, epoch-aligned windows.
    pub fn new(window_ns: i64, min_coverage: f64, meters: &[(MeterRole, i64)]) -> Self {
        let specs: Vec<MeterSpec> = meters
            .iter()
            .map(|&(role, max_gap_ns)| MeterSpec {
                role,
                max_gap_ns,
                uncertainty_percent: 1.0,
            })
            .collect();
        Balance::with_elements(window_ns, 0, min_coverage, &specs, &[])
    }

    /// The general form: windows start at `offset_ns + k * window_ns`.
    pub fn with_elements(
        window_ns: i64,
        offset_ns: i64,
        min_coverage: f64,
        meters: &[MeterSpec],
        elements: &[ElementSpec],
    ) -> Self {
        let window_ns = window_ns.max(1);
        Balance {
            window_ns,
            offset_ns: offset_ns.rem_euclid(window_ns),
            min_coverage,
            grace_ns: meters.iter().map(|m| m.max_gap_ns).max().unwrap_or(0),
            meters: meters
                .iter()
                .map(|&spec| MeterState {
                    spec,
                    last_ts: i64::MIN,
                    last_value: 0.0,
                    last_good: false,
                    seen: false,
                })
                .collect(),
            elements: elements
                .iter()
                .map(|&spec| ElementState {
                    spec,
                    last_ts: i64::MIN,
                    last_lp: f64::NAN,
                })
                .collect(),
            open: VecDeque::new(),
            closed_upto: i64::MIN,
        }
    }

    /// Window length (ns).
    pub fn window_ns(&self) -> i64 {
        self.window_ns
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
            st.seen && st.last_good && good && t - st.last_ts <= st.spec.max_gap_ns,
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

    /// Feeds a volume (Sm³) that meter `m` measured over `(t0, t1]`, from a
    /// totaliser delta; `None` marks the interval as not measured (reset,
    /// bad reading, gap). Out-of-order intervals are ignored.
    pub fn on_volume(&mut self, m: usize, t0: Timestamp, t1: Timestamp, volume_sm3: Option<f64>) {
        let Some(st) = self.meters.get(m) else {
            return;
        };
        let (a, b) = (t0.nanos(), t1.nanos());
        if b <= a || (st.seen && b <= st.last_ts) {
            return;
        }
        if let Some(v) = volume_sm3
            && v.is_finite()
            && b - a <= st.spec.max_gap_ns
        {
            let rate = v / ((b - a) as f64 / NS_PER_HOUR);
            self.integrate(m, a, b, rate, rate);
        }
        let st = &mut self.meters[m];
        st.seen = true;
        st.last_ts = b;
        st.last_good = false;
    }

    /// Feeds the pack (Sm³) of line-pack element `e` at `ts`; NaN when its
    /// pressure or temperature is not good.
    pub fn on_linepack(&mut self, e: usize, ts: Timestamp, lp_sm3: f64) {
        let Some(el) = self.elements.get(e).copied() else {
            return;
        };
        let t = ts.nanos();
        if t < self.closed_upto || t < el.last_ts {
            return;
        }
        let ws = self.window_start(t);
        let w = self.window_index(ws);
        let win = &mut self.open[w];
        if win.lp_start[e].is_nan() && !win.lp_bad[e] {
            // The value standing at the window start: the last one before it
            // if recent, else this one if it is close to the start.
            win.lp_start[e] = if el.last_ts >= ws - el.spec.max_gap_ns && el.last_ts < ws {
                el.last_lp
            } else if t - ws <= el.spec.max_gap_ns {
                lp_sm3
            } else {
                f64::NAN
            };
            if win.lp_start[e].is_nan() {
                win.lp_bad[e] = true;
            }
        }
        if lp_sm3.is_finite() {
            win.lp_end[e] = lp_sm3;
        } else {
            win.lp_bad[e] = true;
        }
        let el = &mut self.elements[e];
        el.last_ts = t;
        el.last_lp = lp_sm3;
    }

    fn window_start(&self, t: i64) -> i64 {
        (t - self.offset_ns).div_euclid(self.window_ns) * self.window_ns + self.offset_ns
    }

    /// Index of the open window starting at `ws`, opened if needed.
    fn window_index(&mut self, ws: i64) -> usize {
        if let Some(i) = self.open.iter().position(|w| w.start == ws) {
            return i;
        }
        let (n, e) = (self.meters.len(), self.elements.len());
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
                lp_start: vec![f64::NAN; e],
                lp_end: vec![f64::NAN; e],
                lp_bad: vec![false; e],
            },
        );
        i
    }

    fn integrate(&mut self, m: usize, t0: i64, t1: i64, v0: f64, v1: f64) {
        let mut a = t0.max(self.closed_upto);
        while a < t1 {
            let ws = self.window_start(a);
            let b = t1.min(ws + self.window_ns);
            let frac = |t: i64| (t - t0) as f64 / (t1 - t0) as f64;
            let (va, vb) = (v0 + (v1 - v0) * frac(a), v0 + (v1 - v0) * frac(b));
            let w = self.window_index(ws);
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
        let mut var = 0.0;
        let mut coverage = 1.0f64;
        for (i, m) in self.meters.iter().enumerate() {
            let cov = w.covered_ns[i] as f64 / self.window_ns as f64;
            coverage = coverage.min(cov);
            let vol = if w.covered_ns[i] > 0 {
                w.volume_sm3[i] / cov
            } else {
                0.0
            };
            var += (m.spec.uncertainty_percent / 100.0 * vol).powi(2);
            // Gap filling: the missing part is extrapolated from the mean
            // rate; flows can move by about 10 % meanwhile (expanded).
            var += ((1.0 - cov.min(1.0)) * vol * GAP_FILL_FRACTION).powi(2);
            match m.spec.role {
                MeterRole::Inlet => inlet += vol,
                MeterRole::Outlet => outlet += vol,
            }
        }
        let mut pack = 0.0;
        let mut pack_known = true;
        for (e, el) in self.elements.iter().enumerate() {
            let d = w.lp_end[e] - w.lp_start[e];
            if w.lp_bad[e] || !d.is_finite() {
                pack_known = false;
            } else {
                pack += d;
                var += (el.spec.uncertainty_percent / 100.0 * d).powi(2);
            }
        }
        let imbalance = inlet - outlet - pack;
        let (percent, u_percent) = if inlet > 0.0 {
            (imbalance / inlet * 100.0, var.sqrt() / inlet * 100.0)
        } else {
            (f64::NAN, f64::NAN)
        };
        let quality = if !pack_known {
            Quality::Bad
        } else if coverage >= 0.999 {
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
            linepack_change_sm3: if pack_known { pack } else { f64::NAN },
            imbalance_sm3: imbalance,
            imbalance_percent: percent,
            uncertainty_percent: u_percent,
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
