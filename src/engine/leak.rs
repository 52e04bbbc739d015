//! Leak detection on the line-pack-compensated balance residual: a one-sided
//! CUSUM per leak-test window length (by default 1 min, 5 min and 1 h, on
//! balances with smoothed edges, see `balance.rs`), with the meters' bias
//! learned slowly.
//!
//! The residual of a closed window is `x = imbalance / throughput` (%), with
//! throughput the larger of inlet and outlet volume: during unpacking the
//! inlet can fall to almost nothing while the outlet (and any leak) carry
//! on, so a ratio to the inlet would explode. While no leak is suspected
//! the detector learns the bias `mu` and the spread `sigma` of `x` and the
//! typical variance `v_typ` of the window's own noise (below), as
//! exponential averages with weight `1 / bias_windows`, from ordinary
//! windows only; once the
//! CUSUM passes half its threshold the learning freezes, so a slow leak is
//! not learned away. The statistic is `S = max(0, S + (x - mu) / s_w - k)`
//! with `k = min_leak / (2 s_w)` (tuned for the smallest leak of interest)
//! and the alarm threshold `h` (in sigmas), both per window length.
//!
//! Transients (the event rule, also the pack / unpack discrimination): each
//! window states the variance `v` of its window-to-window parts (the
//! line-pack change's configured uncertainty and its edge fits, gap
//! filling; the meters' steady bias is left out, it is learned). A window
//! with `v` above `v_typ` by more than a quarter of `sigma^2` is a
//! *transient*: it is standardised by `s_w = sqrt(sigma^2 + v - v_typ)`
//! and never learned from. During a set-point ramp the pack change and its
//! uncertainty are large, so the test is paused in effect for small leaks
//! (their residual is a fraction of `s_w`) but keeps seeing large ones,
//! and the ramp does not widen `sigma` for the quiet windows after it. The
//! reason says "packing" or "unpacking" from the sign of the pack change.
//!
//! Gating, so data loss never raises a leak alarm:
//! - a BAD window (coverage too low or line pack unknown) is skipped: the
//!   detector is *suspended* and says why;
//! - an UNCERTAIN window (gaps filled from the mean rate) runs *degraded*:
//!   it may lower S but never raise it, and is not learned from;
//! - the first `warmup` windows only learn (a meter bias would otherwise
//!   look like a leak at start-up).
//!
//! When S passes `h` the detector reports a [`LeakAlert`]: the start is the
//! maximum-likelihood step change point among the windows since S was last
//! 0, refined inside its first window (a leak rarely starts on a window
//! boundary: that window holds the fraction `r_first / rate` of it); the
//! rate is the mean de-biased residual of the windows after the first
//! (whole windows of leak), or of all of them when there is only one, with
//! its standard error; the confidence is the probability that it is
//! positive.

pub use crate::model::LeakAlert;
use crate::model::{BalanceResult, Quality, Timestamp};

/// Smallest residual spread assumed (% of throughput): the learned sigma of
/// a quiet station can be tiny, and the test must not become a hair trigger.
const SIGMA_FLOOR_PERCENT: f64 = 0.05;
/// A window whose noise variance exceeds the typical one by this fraction
/// of `sigma^2` is a transient: tested with its own spread, not learned.
const TRANSIENT_EXCESS: f64 = 0.25;
/// Windows kept for the change-point and rate estimate.
const HISTORY: usize = 64;

/// Tuning of one detector.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LeakTuning {
    pub min_leak_percent: f64,
    pub threshold_sigma: f64,
    pub bias_windows: u32,
    /// Windows that only learn before the test runs.
    pub warmup: u32,
}

/// Detector state as operators see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeakState {
    /// Learning the bias; no test yet.
    WarmingUp,
    /// Testing with full sensitivity.
    Normal,
    /// Partial data: the window may lower the statistic, never raise it;
    /// no learning.
    Degraded,
    /// Not testing this window: the data were too poor.
    Suspended,
    /// The CUSUM passed half its threshold: learning frozen.
    Suspected,
    /// Leak alarm.
    Alarm,
}

/// One CUSUM detector for one window length.
#[derive(Debug, Clone)]
pub struct LeakDetector {
    tuning: LeakTuning,
    mu: f64,
    var: f64,
    /// Learned typical noise variance of a window (%² of throughput).
    v_typ: f64,
    learned: u32,
    s: f64,
    /// Windows since S was last 0 (the most recent `HISTORY`): start,
    /// de-biased residual (%) and throughput rate (Sm³/h). A fixed array:
    /// no allocation per window.
    hist: [(i64, f64, f64); HISTORY],
    n: usize,
    state: LeakState,
    /// Why the last window was suspended, degraded or not ordinary.
    reason: &'static str,
}

impl LeakDetector {
    pub fn new(tuning: LeakTuning) -> Self {
        LeakDetector {
            tuning,
            mu: 0.0,
            var: 0.0,
            v_typ: 0.0,
            learned: 0,
            s: 0.0,
            hist: [(0, 0.0, 0.0); HISTORY],
            n: 0,
            state: LeakState::WarmingUp,
            reason: "warming up",
        }
    }

    pub fn state(&self) -> LeakState {
        self.state
    }

    /// Why the detector is degraded, suspended or in a transient ("" when
    /// normal).
    pub fn reason(&self) -> &'static str {
        self.reason
    }

    /// The CUSUM statistic (sigmas).
    pub fn statistic(&self) -> f64 {
        self.s
    }

    /// The alarm threshold of the statistic (sigmas).
    pub fn threshold(&self) -> f64 {
        self.tuning.threshold_sigma
    }

    /// Learned bias (% of throughput).
    pub fn bias_percent(&self) -> f64 {
        self.mu
    }

    /// Learned residual spread (% of throughput, one sigma).
    pub fn sigma_percent(&self) -> f64 {
        self.sigma()
    }

    fn sigma(&self) -> f64 {
        self.var.sqrt().max(SIGMA_FLOOR_PERCENT)
    }

    fn learn(&mut self, x: f64, v: f64) {
        self.learned = self.learned.saturating_add(1);
        let w = 1.0 / f64::from(self.learned.min(self.tuning.bias_windows.max(1)));
        let d = x - self.mu;
        self.mu += w * d;
        self.var = (1.0 - w) * (self.var + w * d * d);
        self.v_typ += w * (v - self.v_typ);
    }

    /// Feeds one closed window and the variance (Sm³², one sigma) of its
    /// window-to-window parts (`Balance::close_due_with_noise`); returns an
    /// alert when the alarm condition starts (once per episode).
    pub fn on_window(&mut self, r: &BalanceResult, noise_var_sm3: f64) -> Option<LeakAlert> {
        let throughput = r.inlet_sm3.max(r.outlet_sm3);
        let flowing = throughput > 0.0;
        if r.quality == Quality::Bad
            || r.quality == Quality::Stale
            || !r.imbalance_sm3.is_finite()
            || !flowing
        {
            self.reason = if r.linepack_change_sm3.is_nan() {
                "line pack unknown (pressure or temperature not good)"
            } else if !flowing {
                "no flow through the station"
            } else {
                "meter data missing (coverage below minimum)"
            };
            if self.state != LeakState::Alarm {
                self.state = LeakState::Suspended;
            }
            return None;
        }
        let x = r.imbalance_sm3 / throughput * 100.0;
        let v = if noise_var_sm3.is_finite() {
            noise_var_sm3.max(0.0) / (throughput * throughput) * 1e4
        } else {
            f64::INFINITY
        };
        let degraded = r.quality == Quality::Uncertain;
        if self.learned < self.tuning.warmup {
            if !degraded && v.is_finite() {
                self.learn(x, v);
            }
            self.state = LeakState::WarmingUp;
            self.reason = "warming up";
            return None;
        }
        // A window noisier than usual (large pack change, gaps, sparse
        // edges) widens its own standardisation by the excess.
        let excess = (v - self.v_typ).max(0.0);
        let transient = excess > TRANSIENT_EXCESS * self.sigma().powi(2);
        let sigma = (self.sigma().powi(2) + excess).sqrt();
        let k = self.tuning.min_leak_percent / (2.0 * sigma);
        let h = self.tuning.threshold_sigma;
        let z = (x - self.mu) / sigma;
        let hours = (r.end.nanos() - r.start.nanos()) as f64 / 3_600e9;
        // Partial data never adds evidence of a leak: a gap filled from the
        // mean rate is far off when the flow moves meanwhile (a ramp).
        let step = if degraded { (z - k).min(0.0) } else { z - k };
        self.s = (self.s + step).max(0.0);
        if self.s == 0.0 {
            self.n = 0;
        } else if !degraded {
            if self.n == HISTORY {
                self.hist.copy_within(1.., 0);
                self.n -= 1;
            }
            self.hist[self.n] = (r.start.nanos(), x - self.mu, throughput / hours.max(1e-9));
            self.n += 1;
        }
        let suspected = self.s > h / 2.0;
        if !suspected && !degraded && !transient {
            self.learn(x, v);
        }
        let was_alarm = self.state == LeakState::Alarm;
        self.reason = if degraded {
            "partial data: can only lower the statistic"
        } else if transient && r.linepack_change_sm3 > 0.0 {
            "packing: tested against the pack-change uncertainty, not learned"
        } else if transient && r.linepack_change_sm3 < 0.0 {
            "unpacking: tested against the pack-change uncertainty, not learned"
        } else if transient {
            "unusual window: tested against its own uncertainty, not learned"
        } else {
            ""
        };
        // Two windows at least: a leak that starts inside a window shows
        // only in part there, and the rate is estimated from the next.
        if self.s > h && self.n >= 2 {
            self.state = LeakState::Alarm;
            if !was_alarm {
                return Some(self.alert(r, sigma));
            }
        } else if self.s == 0.0 || !(suspected || was_alarm) {
            self.state = if degraded {
                LeakState::Degraded
            } else {
                LeakState::Normal
            };
        } else if !was_alarm {
            self.state = LeakState::Suspected;
        }
        None
    }

    /// The alert for the window `r` that crossed the threshold.
    fn alert(&self, r: &BalanceResult, sigma: f64) -> LeakAlert {
        let window_ns = r.end.nanos() - r.start.nanos();
        let h = &self.hist[..self.n];
        let tau = self.change_point();
        let after = &h[tau.min(h.len())..];
        // Whole windows of leak: all after the first, when there are any.
        let whole = if after.len() >= 2 { &after[1..] } else { after };
        let n = whole.len().max(1) as f64;
        let mean_x = whole.iter().map(|w| w.1).sum::<f64>() / n;
        let rate = whole.iter().map(|w| w.1 / 100.0 * w.2).sum::<f64>() / n;
        let start = match after.first() {
            Some(first) if after.len() >= 2 && mean_x - first.1 > 2.0 * sigma => {
                // The first window holds significantly less than a whole
                // window of leak: the fraction r_first / rate of it.
                let frac = (first.1 / mean_x).clamp(0.0, 1.0);
                Timestamp(first.0 + ((1.0 - frac) * window_ns as f64) as i64)
            }
            Some(first) => Timestamp(first.0),
            None => r.start,
        };
        let se_x = sigma / n.sqrt();
        LeakAlert {
            group: r.group,
            window_s: window_ns / 1_000_000_000,
            start,
            detected: r.end,
            rate_sm3_per_h: rate,
            rate_uncertainty_sm3_per_h: (rate * se_x / mean_x.abs().max(1e-12)).abs(),
            rate_percent: mean_x,
            confidence: normal_cdf(mean_x / se_x),
        }
    }

    /// Maximum-likelihood step change point among the windows since the
    /// CUSUM last was 0: the split `tau` maximising `(n - tau) * mean^2` of
    /// the residuals after it (mean > 0).
    fn change_point(&self) -> usize {
        let h = &self.hist[..self.n];
        let mut best = (0usize, f64::MIN);
        let mut sx = 0.0;
        for tau in (0..h.len()).rev() {
            sx += h[tau].1;
            let n = (h.len() - tau) as f64;
            let m = sx / n;
            let score = n * m * m;
            if m > 0.0 && score > best.1 {
                best = (tau, score);
            }
        }
        best.0
    }

    /// Whether the detector is in alarm.
    pub fn in_alarm(&self) -> bool {
        self.state == LeakState::Alarm
    }
}

/// Standard normal CDF (Abramowitz and Stegun 7.1.26, |error| < 1.5e-7).
fn normal_cdf(x: f64) -> f64 {
    if !x.is_finite() {
        return if x > 0.0 { 1.0 } else { 0.0 };
    }
    let z = x.abs() / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.327_591_1 * z);
    let y = 1.0
        - (((((1.061_405_429 * t - 1.453_152_027) * t) + 1.421_413_741) * t - 0.284_496_736) * t
            + 0.254_829_592)
            * t
            * (-z * z).exp();
    if x >= 0.0 {
        0.5 * (1.0 + y)
    } else {
        0.5 * (1.0 - y)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(i: i64, percent: f64, quality: Quality) -> BalanceResult {
        let s = 300_000_000_000i64;
        BalanceResult {
            group: crate::model::GroupId::STATION,
            start: Timestamp(i * s),
            end: Timestamp((i + 1) * s),
            inlet_sm3: 2500.0,
            outlet_sm3: 2500.0 * (1.0 - percent / 100.0),
            linepack_change_sm3: 0.0,
            imbalance_sm3: 25.0 * percent,
            imbalance_percent: percent,
            uncertainty_percent: 1.4,
            coverage: 1.0,
            quality,
        }
    }

    fn tuning() -> LeakTuning {
        LeakTuning {
            min_leak_percent: 0.5,
            threshold_sigma: 8.0,
            bias_windows: 288,
            warmup: 12,
        }
    }

    #[test]
    fn learns_a_meter_bias_and_then_detects_a_step_leak() {
        let mut d = LeakDetector::new(tuning());
        let mut rng = fastrand::Rng::with_seed(7);
        let noise = |r: &mut fastrand::Rng| (r.f64() - 0.5) * 0.1;
        // A 0.8 % meter bias for 100 windows: never an alarm.
        for i in 0..100 {
            assert!(
                d.on_window(&window(i, 0.8 + noise(&mut rng), Quality::Good), 0.0)
                    .is_none()
            );
        }
        assert!(
            (d.bias_percent() - 0.8).abs() < 0.05,
            "{}",
            d.bias_percent()
        );
        // A 2 % leak from window 100 on.
        let mut alert = None;
        for i in 100..110 {
            if let Some(a) = d.on_window(&window(i, 2.8 + noise(&mut rng), Quality::Good), 0.0) {
                alert = Some((i, a));
                break;
            }
        }
        let (i, a) = alert.expect("detected");
        assert!(i <= 101, "detected at window {i}");
        assert_eq!(a.start, Timestamp(100 * 300_000_000_000));
        assert!((a.rate_percent - 2.0).abs() < 0.1, "{a:?}");
        assert!((a.rate_sm3_per_h - 600.0).abs() < 30.0, "{a:?}");
        assert!(a.confidence > 0.99);
    }

    #[test]
    fn bad_windows_suspend_and_never_alarm() {
        let mut d = LeakDetector::new(tuning());
        for i in 0..20 {
            d.on_window(&window(i, 0.0, Quality::Good), 0.0);
        }
        for i in 20..40 {
            let mut w = window(i, 30.0, Quality::Bad);
            w.linepack_change_sm3 = f64::NAN;
            assert!(d.on_window(&w, 0.0).is_none());
            assert_eq!(d.state(), LeakState::Suspended);
            assert!(d.reason().contains("line pack"));
        }
        assert_eq!(d.statistic(), 0.0);
    }

    /// A set-point ramp: the pipe packs (or unpacks, negative) `pack_sm3`
    /// in a window with 2500 Sm³ out and `leak_sm3` lost; the pack change
    /// has an expanded uncertainty of 2 % (the config default), so its
    /// window-to-window variance is `(0.02 * pack / 2)^2`.
    fn ramp_window(i: i64, leak_sm3: f64, pack_sm3: f64) -> (BalanceResult, f64) {
        let mut w = window(i, 0.0, Quality::Good);
        w.inlet_sm3 = 2500.0 + pack_sm3 + leak_sm3;
        w.linepack_change_sm3 = pack_sm3;
        w.imbalance_sm3 = leak_sm3;
        w.imbalance_percent = leak_sm3 / w.inlet_sm3 * 100.0;
        (w, (0.01 * pack_sm3).powi(2))
    }

    #[test]
    fn a_ramp_within_its_pack_uncertainty_does_not_raise_a_leak_nor_widen_sigma() {
        let mut d = LeakDetector::new(tuning());
        let mut rng = fastrand::Rng::with_seed(3);
        for i in 0..40 {
            d.on_window(&window(i, (rng.f64() - 0.5) * 0.2, Quality::Good), 0.0);
        }
        let sigma = d.sigma_percent();
        // A lagging pack estimate: 1.5 % of the pipe's 2000 Sm3 change
        // short while it packs (30 Sm3 look lost: 0.67 % of throughput, 11
        // sigma of a quiet window) and 1.5 % short while it unpacks.
        for (i, pack, err) in [
            (40, 2000.0, 30.0),
            (41, 2000.0, 30.0),
            (42, 2000.0, 30.0),
            (43, -2000.0, -30.0),
            (44, -2000.0, -30.0),
            (45, -2000.0, -30.0),
        ] {
            let (w, noise) = ramp_window(i, err, pack);
            assert!(d.on_window(&w, noise).is_none(), "window {i}");
            let want = if pack > 0.0 { "packing" } else { "unpacking" };
            assert!(d.reason().starts_with(want), "{}", d.reason());
        }
        assert!(!d.in_alarm());
        assert_eq!(d.sigma_percent(), sigma, "a ramp is not learned");
        // Quiet windows after it are tested with the quiet sigma.
        for i in 46..50 {
            assert!(d.on_window(&window(i, 0.0, Quality::Good), 0.0).is_none());
        }
        assert_eq!(d.reason(), "");
    }

    #[test]
    fn a_large_leak_is_still_seen_through_a_ramp() {
        let mut d = LeakDetector::new(tuning());
        for i in 0..40 {
            d.on_window(
                &window(i, if i % 2 == 0 { 0.05 } else { -0.05 }, Quality::Good),
                0.0,
            );
        }
        // A 5 % leak (125 Sm3 a 5-minute window, 1500 Sm3/h) starting with
        // the ramp: 6 sigma of the ramp's pack uncertainty (20 Sm3) a
        // window, found in the second.
        let alert = (40..42).find_map(|i| {
            let (w, noise) = ramp_window(i, 125.0, 2000.0);
            d.on_window(&w, noise)
        });
        let a = alert.expect("found within two ramp windows");
        assert_eq!(a.detected, Timestamp(42 * 300_000_000_000));
        assert!((a.rate_sm3_per_h - 1500.0).abs() < 1.0, "{a:?}");
    }

    #[test]
    fn leak_start_is_placed_inside_its_first_window() {
        let mut d = LeakDetector::new(tuning());
        for i in 0..40 {
            d.on_window(
                &window(i, if i % 2 == 0 { 0.2 } else { -0.2 }, Quality::Good),
                0.0,
            );
        }
        // 5 % from 40 % into window 40: that window holds 60 % of it, the
        // next a whole window. The alarm waits for that second window.
        let s = 300_000_000_000i64;
        assert!(d.on_window(&window(40, 3.0, Quality::Good), 0.0).is_none());
        assert!(d.statistic() > 8.0, "{}", d.statistic());
        let a = d
            .on_window(&window(41, 5.0, Quality::Good), 0.0)
            .expect("detected with the second window");
        assert_eq!(a.detected, Timestamp(42 * s));
        let want = 40 * s + 2 * s / 5;
        // (The learned bias is a hair off zero: within a second.)
        assert!((a.start.nanos() - want).abs() < 1_000_000_000, "{a:?}");
        assert!((a.rate_percent - 5.0).abs() < 1e-3, "{a:?}");
        assert!((a.rate_sm3_per_h - 1500.0).abs() < 0.5, "{a:?}");
    }

    #[test]
    fn normal_cdf_known_values() {
        assert!((normal_cdf(0.0) - 0.5).abs() < 1e-7);
        assert!((normal_cdf(1.96) - 0.975).abs() < 1e-4);
        assert!((normal_cdf(-1.0) - 0.158_655).abs() < 1e-5);
    }
}
