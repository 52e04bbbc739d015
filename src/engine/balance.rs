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
//! Smoothed edges ([`Balance::with_edge_ns`], used by the leak test's own
//! windows, and by the reported 输差 windows when `balance.edge` is set):
//! a single pack sample at
//! each edge carries the full pressure and temperature noise of one scan
//! (on 10 km of DN500 at 1.6 MPa, 0.01 % of pressure and 0.05 K are about
//! 3 and 6 Sm³, as much as a 1 % leak in a minute). With an edge half-width
//! `h > 0` each boundary `b` becomes a linear transition over `[b-h, b+h]`:
//! a window weighs flows with a trapezoid (rising over its start edge, 1
//! inside, falling over its end edge; adjacent windows' weights add up to
//! exactly 1) and its pack at an edge is the average over that edge's span
//! (a least-squares line through the samples in the span, evaluated at `b`;
//! the plain mean when the span is fully sampled). Because the trapezoid's
//! slope is that averaging, `in - out - dLP` stays an exact mass balance
//! through ramps and corners of the pressure, while the edge noise falls
//! with the square root of the samples in the span. The fit's standard
//! error enters the window's uncertainty; an edge with fewer than three
//! good samples is unknown (the window is BAD).
//!
//! A window closes when every meter has reported past its end (plus `h`),
//! or when `now` passes its end by the grace period (the longest stale
//! period, plus `h`). The volume of each meter is its mean good rate times
//! the window length (coverage-corrected); the result is GOOD at full
//! coverage, UNCERTAIN when coverage is at least `min_coverage`, BAD below
//! that. Only GOOD and UNCERTAIN windows may raise or clear the imbalance
//! alarm, so missing or stale data never raises a leak alarm.
//!
//! Uncertainty: meter `i` with expanded uncertainty `U_i` % contributes
//! `U_i/100 * V_i`, plus 10 % of the gap-filled part of its volume; the
//! line pack `U_lp/100 * |dLP|` (and, with smoothed edges, twice each
//! edge's standard error); they add in quadrature (independent meters),
//! and the 输差率 uncertainty is that over the inlet.

use crate::config::MeterRole;
use crate::model::{BalanceResult, GroupId, Quality, Timestamp};
use std::collections::VecDeque;

const NS_PER_HOUR: f64 = 3_600e9;
/// Expanded relative uncertainty of a coverage-corrected (gap-filled) part.
const GAP_FILL_FRACTION: f64 = 0.1;
/// Fewest good pack samples in an edge span for a known edge.
const MIN_EDGE_SAMPLES: f64 = 3.0;

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

/// Least-squares line through the pack of one edge span, each sample
/// weighted by the time it stands for (trapezoid weights of the linear
/// interpolation between consecutive good samples, clipped to the span),
/// with time in seconds from the boundary and pack relative to the first
/// value (well-conditioned sums). With the span fully sampled its value at
/// the boundary is exactly the time average of the interpolated pack over
/// the span, the quantity the trapezoid flow weights balance against.
/// Constant size: no allocation per sample.
#[derive(Debug, Clone, Copy)]
struct EdgeFit {
    /// Boundary collected (ns); `i64::MIN` when none.
    boundary: i64,
    y0: f64,
    /// Intervals that touched the span.
    intervals: u32,
    w: f64,
    wt: f64,
    wtt: f64,
    wy: f64,
    wty: f64,
    wyy: f64,
}

impl EdgeFit {
    const EMPTY: EdgeFit = EdgeFit {
        boundary: i64::MIN,
        y0: f64::NAN,
        intervals: 0,
        w: 0.0,
        wt: 0.0,
        wtt: 0.0,
        wy: 0.0,
        wty: 0.0,
        wyy: 0.0,
    };

    fn start(boundary: i64, y0: f64) -> EdgeFit {
        EdgeFit {
            boundary,
            y0,
            ..EdgeFit::EMPTY
        }
    }

    /// Adds (`sign` 1) or removes (-1) the interval between two good
    /// samples, clipped to the span `[boundary - h, boundary + h]`.
    fn interval(&mut self, a: (i64, f64), b: (i64, f64), h: i64, sign: f64) {
        let (lo, hi) = (a.0.max(self.boundary - h), b.0.min(self.boundary + h));
        if lo >= hi || b.0 <= a.0 {
            return;
        }
        let at = |t: i64| a.1 + (b.1 - a.1) * ((t - a.0) as f64 / (b.0 - a.0) as f64);
        let half = (hi - lo) as f64 / 2e9 * sign;
        for (t, y) in [(lo, at(lo)), (hi, at(hi))] {
            let t = (t - self.boundary) as f64 / 1e9;
            let y = y - self.y0;
            self.w += half;
            self.wt += half * t;
            self.wtt += half * t * t;
            self.wy += half * y;
            self.wty += half * t * y;
            self.wyy += half * y * y;
        }
        if sign > 0.0 {
            self.intervals += 1;
        } else {
            self.intervals = self.intervals.saturating_sub(1);
        }
    }

    /// Pack at the boundary and its standard error (Sm³), or NaN.
    fn value(&self) -> (f64, f64) {
        let n = f64::from(self.intervals) + 1.0;
        if n < MIN_EDGE_SAMPLES || self.w <= 0.0 {
            return (f64::NAN, f64::NAN);
        }
        let (tm, ym) = (self.wt / self.w, self.wy / self.w);
        let stt = self.wtt - self.w * tm * tm;
        if stt <= 1e-12 * self.w {
            return (f64::NAN, f64::NAN);
        }
        let sty = self.wty - self.w * tm * ym;
        let syy = (self.wyy - self.w * ym * ym).max(0.0);
        let slope = sty / stt;
        let at_boundary = ym - slope * tm;
        // Per-sample residual variance, weights normalised to n samples.
        let s2 = ((syy - slope * sty).max(0.0) / self.w * n / (n - 2.0)).max(0.0);
        let se = (s2 * (1.0 / n + tm * tm * self.w / n / stt)).sqrt();
        (self.y0 + at_boundary, se)
    }
}

#[derive(Debug, Clone, Copy)]
struct ElementState {
    spec: ElementSpec,
    /// Last pack value (Sm³; NaN when bad) and its time.
    last_ts: i64,
    last_lp: f64,
    /// Smoothed edges: the sample before the last one, and the span being
    /// collected.
    prev: (i64, f64),
    fit: EdgeFit,
}

#[derive(Debug, Clone)]
struct Window {
    start: i64,
    volume_sm3: Vec<f64>,
    /// Covered time per meter (ns; weighted by the window's trapezoid with
    /// smoothed edges).
    covered_ns: Vec<f64>,
    lp_start: Vec<f64>,
    lp_end: Vec<f64>,
    lp_bad: Vec<bool>,
    /// Smoothed edges: variance of the start and end pack (Sm³²).
    lp_var: Vec<f64>,
}

/// Balance state for one group of meters and one window length.
#[derive(Debug, Clone)]
pub struct Balance {
    /// The group its results are stamped with.
    group: GroupId,
    window_ns: i64,
    offset_ns: i64,
    min_coverage: f64,
    grace_ns: i64,
    /// Half-width of the smoothed window edges (ns); 0: sharp edges.
    edge_ns: i64,
    meters: Vec<MeterState>,
    elements: Vec<ElementState>,
    open: VecDeque<Window>,
    /// Closed windows kept for reuse: no allocation per window once warm.
    spare: Vec<Window>,
    /// End of the last closed window: later data for it is too late.
    closed_upto: i64,
    /// Start of the window the last flow piece fell in: consecutive samples
    /// nearly always share it, and finding it again costs a division.
    hint_ws: Option<i64>,
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
            group: GroupId::STATION,
            window_ns,
            offset_ns: offset_ns.rem_euclid(window_ns),
            min_coverage,
            grace_ns: meters.iter().map(|m| m.max_gap_ns).max().unwrap_or(0),
            edge_ns: 0,
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
                    prev: (i64::MIN, f64::NAN),
                    fit: EdgeFit::EMPTY,
                })
                .collect(),
            open: VecDeque::new(),
            spare: Vec::new(),
            closed_upto: i64::MIN,
            hint_ws: None,
        }
    }

    /// Smoothed edges of half-width `edge_ns` (at most a quarter of the
    /// window); see the module docs. Call before the first sample.
    pub fn with_edge_ns(mut self, edge_ns: i64) -> Self {
        self.edge_ns = edge_ns.clamp(0, self.window_ns / 4);
        self
    }

    /// Stamps results with balance group `group` (default "station").
    pub fn with_group(mut self, group: GroupId) -> Self {
        self.group = group;
        self
    }

    /// Window length (ns).
    pub fn window_ns(&self) -> i64 {
        self.window_ns
    }

    /// Half-width of the smoothed edges (ns; 0 for sharp windows).
    pub fn edge_ns(&self) -> i64 {
        self.edge_ns
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
        if self.edge_ns > 0 {
            self.on_linepack_smoothed(e, ts.nanos(), lp_sm3);
            return;
        }
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

    /// Smoothed edges: adds the interval from the previous good sample to
    /// the fit of the boundary it overlaps. A second value at the same time
    /// (pressure, then temperature updated) replaces the first.
    fn on_linepack_smoothed(&mut self, e: usize, t: i64, lp_sm3: f64) {
        let h = self.edge_ns;
        let Some(el) = self.elements.get(e).copied() else {
            return;
        };
        if t < el.last_ts {
            return;
        }
        let replace = t == el.last_ts;
        let prev = if replace {
            el.prev
        } else {
            (el.last_ts, el.last_lp)
        };
        let last = (el.last_ts, el.last_lp);
        let cur = (t, lp_sm3);
        let joined = |a: (i64, f64), b: (i64, f64)| {
            a.1.is_finite() && b.1.is_finite() && b.0 > a.0 && b.0 - a.0 <= el.spec.max_gap_ns
        };
        // The boundary whose span the interval prev -> cur may touch.
        let b = self.window_start(prev.0.max(t - el.spec.max_gap_ns) + self.window_ns / 2);
        // The open span is complete once its last sample is final (a later
        // one arrived) and reached its end, or when intervals move on.
        let open = el.fit.boundary;
        if open != i64::MIN && !replace && (el.last_ts >= open + h || open != b) {
            self.finish_edge(e);
        }
        let touches = joined(prev, cur) && prev.0 < b + h && t > b - h;
        let closed = self.closed_upto;
        let el = &mut self.elements[e];
        if replace && el.fit.boundary == b && joined(prev, last) {
            el.fit.interval(prev, last, h, -1.0);
        }
        if touches && b + self.window_ns > closed {
            if el.fit.boundary != b {
                el.fit = EdgeFit::start(b, prev.1);
            }
            el.fit.interval(prev, cur, h, 1.0);
        }
        el.prev = prev;
        el.last_ts = t;
        el.last_lp = lp_sm3;
    }

    /// Hands element `e`'s collected edge to the window ending and the one
    /// starting at its boundary.
    fn finish_edge(&mut self, e: usize) {
        let fit = self.elements[e].fit;
        self.elements[e].fit = EdgeFit::EMPTY;
        if fit.boundary == i64::MIN {
            return;
        }
        let (lp, se) = fit.value();
        let b = fit.boundary;
        if b > self.closed_upto {
            let w = self.window_index(b - self.window_ns);
            self.open[w].lp_end[e] = lp;
            self.open[w].lp_var[e] += se * se;
        }
        if b + self.window_ns > self.closed_upto {
            let w = self.window_index(b);
            self.open[w].lp_start[e] = lp;
            self.open[w].lp_var[e] += se * se;
        }
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
        let w = match self.spare.pop() {
            Some(mut w) => {
                w.start = ws;
                w.volume_sm3.fill(0.0);
                w.covered_ns.fill(0.0);
                w.lp_start.fill(f64::NAN);
                w.lp_end.fill(f64::NAN);
                w.lp_bad.fill(false);
                w.lp_var.fill(0.0);
                w
            }
            None => Window {
                start: ws,
                volume_sm3: vec![0.0; n],
                covered_ns: vec![0.0; n],
                lp_start: vec![f64::NAN; e],
                lp_end: vec![f64::NAN; e],
                lp_bad: vec![false; e],
                lp_var: vec![0.0; e],
            },
        };
        self.open.insert(i, w);
        i
    }

    /// Adds volume and covered time of meter `m` to the window starting at
    /// `ws`, unless that window is already closed (late data).
    fn add(&mut self, ws: i64, m: usize, volume_sm3: f64, covered_ns: f64) {
        // Samples come in time order: nearly always the newest window.
        let w = match self.open.back_mut() {
            Some(w) if w.start == ws => w,
            _ => {
                if ws + self.window_ns <= self.closed_upto {
                    return;
                }
                let i = self.window_index(ws);
                &mut self.open[i]
            }
        };
        if let (Some(v), Some(c)) = (w.volume_sm3.get_mut(m), w.covered_ns.get_mut(m)) {
            *v += volume_sm3;
            *c += covered_ns;
        }
    }

    /// Integrates a flow that runs linearly from `v0` at `t0` to `v1` at
    /// `t1` (Sm³/h) into the windows it overlaps. With smoothed edges the
    /// part within `h` of a boundary is shared between the two windows in
    /// proportion to their (linear) weights, exactly (linear times linear).
    fn integrate(&mut self, m: usize, t0: i64, t1: i64, v0: f64, v1: f64) {
        let h = self.edge_ns;
        let w_ns = self.window_ns;
        let flow = |t: i64| {
            if t == t0 {
                v0
            } else {
                v0 + (v1 - v0) * ((t - t0) as f64 / (t1 - t0) as f64)
            }
        };
        let mut a = t0;
        // Pieces run forward, so at most the first needs a division.
        let mut ws = match self.hint_ws {
            Some(h) if a >= h && (a.wrapping_sub(h) as u64) < w_ns as u64 => h,
            _ => self.window_start(a),
        };
        // The usual case: the whole interval inside one window, away from
        // its smoothed edges: one piece (the loop below would find the same).
        if t0 >= ws + h && t1 <= ws + w_ns - h {
            let hours = (t1 - t0) as f64 / NS_PER_HOUR;
            self.add(ws, m, (v0 + flow(t1)) / 2.0 * hours, (t1 - t0) as f64);
            self.hint_ws = Some(ws);
            return;
        }
        while a < t1 {
            if a >= ws + w_ns {
                ws += w_ns;
            }
            let we = ws + w_ns;
            let c = if h == 0 {
                we
            } else if a < ws + h {
                ws + h
            } else if a < we - h {
                we - h
            } else {
                we
            }
            .min(t1);
            let (va, vc) = (flow(a), flow(c));
            let hours = (c - a) as f64 / NS_PER_HOUR;
            let len = (c - a) as f64;
            let volume = (va + vc) / 2.0 * hours;
            // The boundary whose transition this piece is in, if any.
            let edge = if h == 0 {
                None
            } else if a < ws + h {
                Some(ws)
            } else if a >= we - h {
                Some(we)
            } else {
                None
            };
            match edge {
                None => self.add(ws, m, volume, len),
                Some(b) => {
                    // The weight of the window starting at `b` rises 0 -> 1
                    // over [b - h, b + h]; the window before has the rest.
                    let wt = |t: i64| (t - (b - h)) as f64 / (2 * h) as f64;
                    let (wa, wc) = (wt(a), wt(c));
                    let later = hours / 6.0 * (2.0 * va * wa + va * wc + vc * wa + 2.0 * vc * wc);
                    let later_len = len * (wa + wc) / 2.0;
                    self.add(b, m, later, later_len);
                    self.add(b - w_ns, m, volume - later, len - later_len);
                }
            }
            a = c;
        }
        self.hint_ws = Some(ws);
    }

    /// Closes every window that is complete at `now`, pushing its result.
    pub fn close_due(&mut self, now: Timestamp, out: &mut Vec<BalanceResult>) {
        self.close_due_with(now, |r, _| out.push(r));
    }

    /// As [`Balance::close_due`], for the leak test: each result comes with
    /// the variance (Sm³², one sigma) of the parts of its imbalance that
    /// change from window to window: the line-pack change (its configured
    /// uncertainty and the edge fits) and gap filling. The meters' own
    /// uncertainty is left out: it is mostly a steady bias, which the
    /// detector learns.
    pub fn close_due_with_noise(&mut self, now: Timestamp, out: &mut Vec<(BalanceResult, f64)>) {
        self.close_due_with(now, |r, noise| out.push((r, noise)));
    }

    fn close_due_with(&mut self, now: Timestamp, mut emit: impl FnMut(BalanceResult, f64)) {
        let now = now.nanos();
        while let Some(w) = self.open.front() {
            let end = w.start + self.window_ns;
            let data_end = end + self.edge_ns;
            let all_past = self.meters.iter().all(|m| m.seen && m.last_ts >= data_end)
                && (self.edge_ns == 0 || self.elements.iter().all(|e| e.last_ts >= data_end));
            if !(all_past || now >= data_end.saturating_add(self.grace_ns)) {
                break;
            }
            if self.edge_ns > 0 {
                for e in 0..self.elements.len() {
                    let b = self.elements[e].fit.boundary;
                    if b != i64::MIN && b <= end {
                        self.finish_edge(e);
                    }
                }
            }
            let Some(w) = self.open.pop_front() else {
                break;
            };
            self.closed_upto = end;
            let (r, noise) = self.result(&w);
            emit(r, noise);
            self.spare.push(w);
        }
        // With no data at all, nothing opens a window; nothing to report.
    }

    /// The window's result and the variance of its window-to-window parts.
    fn result(&self, w: &Window) -> (BalanceResult, f64) {
        let mut inlet = 0.0;
        let mut outlet = 0.0;
        let mut var = 0.0;
        // Expanded (k = 2) variance of the parts that vary per window.
        let mut noise = 0.0;
        let mut coverage = 1.0f64;
        for (i, m) in self.meters.iter().enumerate() {
            let cov = w.covered_ns[i] / self.window_ns as f64;
            coverage = coverage.min(cov);
            let vol = if w.covered_ns[i] > 0.0 {
                w.volume_sm3[i] / cov
            } else {
                0.0
            };
            var += (m.spec.uncertainty_percent / 100.0 * vol).powi(2);
            // Gap filling: the missing part is extrapolated from the mean
            // rate; flows can move by about 10 % meanwhile (expanded).
            let gap = ((1.0 - cov.min(1.0)) * vol * GAP_FILL_FRACTION).powi(2);
            var += gap;
            noise += gap;
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
                // The pack change's own uncertainty, and the edge fits'
                // standard errors expanded (k = 2).
                let u = (el.spec.uncertainty_percent / 100.0 * d).powi(2) + 4.0 * w.lp_var[e];
                var += u;
                noise += u;
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
        let r = BalanceResult {
            group: self.group,
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
        };
        (r, noise / 4.0)
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

    /// 60 s windows with 10 s smoothed edges, one inlet, one outlet and one
    /// line-pack element.
    fn smoothed() -> Balance {
        let m = |role| MeterSpec {
            role,
            max_gap_ns: 2 * S,
            uncertainty_percent: 1.0,
        };
        let e = ElementSpec {
            max_gap_ns: 2 * S,
            uncertainty_percent: 0.0,
        };
        Balance::with_elements(
            60 * S,
            0,
            0.9,
            &[m(MeterRole::Inlet), m(MeterRole::Outlet)],
            &[e],
        )
        .with_edge_ns(10 * S)
    }

    /// The closed window starting at `secs`.
    fn at(out: &[BalanceResult], secs: i64) -> BalanceResult {
        *out.iter()
            .find(|r| r.start == Timestamp(secs * S))
            .expect("window closed")
    }

    /// Pack rate (Sm3/s) with kinks at whole seconds, one of them on the
    /// boundary at 180 s and one inside the span of 120 s, and the pack
    /// (Sm3, its exact integral from 1000).
    fn ramp_rate(t: f64) -> f64 {
        if t <= 100.0 {
            0.0
        } else if t <= 120.0 {
            5.0 * (t - 100.0) / 20.0
        } else if t <= 170.0 {
            5.0
        } else if t <= 180.0 {
            5.0 * (180.0 - t) / 10.0
        } else {
            0.0
        }
    }

    fn ramp_pack(t: f64) -> f64 {
        // Trapezoid on a 1 ms grid: exact to 1e-6 Sm3 for this profile.
        let n = (t * 1000.0).round() as i64;
        1000.0
            + (0..n)
                .map(|i| ramp_rate((i as f64 + 0.5) / 1000.0) / 1000.0)
                .sum::<f64>()
    }

    #[test]
    fn smoothed_edges_keep_an_exact_balance_through_pressure_corners() {
        let mut b = smoothed();
        let mut sharp = Balance::with_elements(
            60 * S,
            0,
            0.9,
            &[
                MeterSpec {
                    role: MeterRole::Inlet,
                    max_gap_ns: 2 * S,
                    uncertainty_percent: 1.0,
                },
                MeterSpec {
                    role: MeterRole::Outlet,
                    max_gap_ns: 2 * S,
                    uncertainty_percent: 1.0,
                },
            ],
            &[ElementSpec {
                max_gap_ns: 2 * S,
                uncertainty_percent: 0.0,
            }],
        );
        let (mut out, mut out_sharp) = (Vec::new(), Vec::new());
        for t in 0..=300 {
            let tf = t as f64;
            // The inlet supplies the outlet and the pack (instantaneous).
            let inlet = 3600.0 + ramp_rate(tf) * 3600.0;
            for bal in [&mut b, &mut sharp] {
                bal.on_flow(0, Timestamp(t * S), inlet, true);
                bal.on_flow(1, Timestamp(t * S), 3600.0, true);
                bal.on_linepack(0, Timestamp(t * S), ramp_pack(tf));
            }
            b.close_due(Timestamp(t * S), &mut out);
            sharp.close_due(Timestamp(t * S), &mut out_sharp);
        }
        let windows = [60, 120, 180].map(|w| at(&out, w));
        let total: f64 = windows.iter().map(|r| r.linepack_change_sm3).sum();
        assert!((total - 325.0).abs() < 1e-3, "pack moved {total}: {out:?}");
        for r in &windows {
            assert_eq!(r.quality, Quality::Good, "{r:?}");
            // Only the pack's linear interpolation between scans (its
            // curvature / 12 where the rate ramps) is left: hundredths.
            assert!(r.imbalance_sm3.abs() < 0.05, "{r:?}");
        }
        // Sharp edges take the pack one scan before each boundary: off by
        // up to a second of pack rate at the corners.
        let worst = [60, 120, 180]
            .map(|w| at(&out_sharp, w))
            .iter()
            .map(|r| r.imbalance_sm3.abs())
            .fold(0.0, f64::max);
        assert!(worst > 1.0, "{out_sharp:?}");
    }

    #[test]
    fn smoothed_edges_average_the_pack_noise_away() {
        let mut b = smoothed();
        let mut out = Vec::new();
        let mut rng = fastrand::Rng::with_seed(11);
        for t in 0..=200 {
            b.on_flow(0, Timestamp(t * S), 3600.0, true);
            b.on_flow(1, Timestamp(t * S), 3600.0, true);
            // A steady pack read with +-5 Sm3 of noise: a single sample at
            // each edge would be off by up to 10 Sm3 per window.
            let noise = (rng.f64() - 0.5) * 10.0;
            b.on_linepack(0, Timestamp(t * S), 30_000.0 + noise);
            b.close_due(Timestamp(t * S), &mut out);
        }
        for r in [60, 120].map(|w| at(&out, w)) {
            // 21 samples a span: the edge is good to about 0.7 Sm3 (1 sigma).
            assert!(r.linepack_change_sm3.abs() < 3.0, "{r:?}");
        }
    }

    #[test]
    fn smoothed_edge_without_samples_is_unknown_and_one_sided_is_extrapolated() {
        let mut b = smoothed();
        let mut out = Vec::new();
        for t in 0..=250 {
            b.on_flow(0, Timestamp(t * S), 3600.0, true);
            b.on_flow(1, Timestamp(t * S), 3600.0, true);
            // A pressure ramp: 1 Sm3/s of pack. The element drops out over
            // the whole span of 120 s, and over the second half of 180 s.
            let lp = if (108..=132).contains(&t) || (181..=195).contains(&t) {
                f64::NAN
            } else {
                1000.0 + t as f64
            };
            b.on_linepack(0, Timestamp(t * S), lp);
            b.close_due(Timestamp(t * S), &mut out);
        }
        // 120 s is unknown: both windows sharing it are BAD.
        assert_eq!(at(&out, 60).quality, Quality::Bad);
        assert_eq!(at(&out, 120).quality, Quality::Bad);
        assert!(at(&out, 60).linepack_change_sm3.is_nan());
        // 180 s from its first half alone: the line through it still lands
        // on the ramp, so the window after it is exact.
        let r = at(&out, 180);
        assert_eq!(r.quality, Quality::Good, "{r:?}");
        assert!((r.linepack_change_sm3 - 60.0).abs() < 1e-6, "{r:?}");
    }

    #[test]
    fn smoothed_windows_share_every_sample_exactly_once() {
        let mut b = smoothed();
        let mut out = Vec::new();
        for t in 0..=400 {
            let v = 3600.0 + 360.0 * ((t as f64) / 17.0).sin();
            b.on_flow(0, Timestamp(t * S), v, true);
            b.on_flow(1, Timestamp(t * S), 3600.0, true);
            b.on_linepack(0, Timestamp(t * S), 1000.0);
            b.close_due(Timestamp(t * S), &mut out);
        }
        // Windows 1..5 (60-360 s) are fully inside the data: their inlet
        // volumes add up to the trapezoid-weighted integral, and the
        // weights of neighbouring windows add up to one (coverage 1).
        let windows = [60, 120, 180, 240, 300].map(|w| at(&out, w));
        for r in &windows {
            assert!((r.coverage - 1.0).abs() < 1e-12, "{r:?}");
        }
        let sum: f64 = windows.iter().map(|r| r.inlet_sm3).sum();
        // The same span with sharp windows, computed directly: integral of
        // the linear interpolation over [50, 370] weighted by the outer
        // ramps only; the inner edges cancel.
        let f = |t: f64| 3600.0 + 360.0 * (t / 17.0).sin();
        let mut want = 0.0;
        for k in 0..3_200_000 {
            let t = 50.0 + (k as f64 + 0.5) * 1e-4;
            let w = ((t - 50.0) / 20.0).min(1.0).min((370.0 - t) / 20.0);
            // Linear interpolation between whole seconds.
            let (a, c) = (t.floor(), t.floor() + 1.0);
            let v = f(a) + (f(c) - f(a)) * (t - a);
            want += w * v / 3600.0 * 1e-4;
        }
        assert!((sum - want).abs() < 1e-6, "{sum} vs {want}");
    }
}
