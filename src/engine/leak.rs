//! Leak detection on the line-pack-compensated balance residual: a one-sided
//! CUSUM per balance window length, with the meters' bias learned slowly.
//!
//! For each closed window the residual is its 输差率 `x` (%, already
//! line-pack compensated). While no leak is suspected the detector learns
//! the bias `mu` and the spread `sigma` of `x` as exponential averages with
//! weight `1 / bias_windows`; once the CUSUM passes half its threshold the
//! learning freezes, so a slow leak is not learned away. The statistic is
//! `S = max(0, S + (x - mu) / sigma - k)` with `k = min_leak / (2 sigma)`
//! (tuned for the smallest leak of interest) and the alarm threshold `h`
//! (in sigmas).
//!
//! Gating, so data loss never raises a leak alarm:
//! - a BAD window (coverage too low or line pack unknown) is skipped: the
//!   detector is *suspended* and says why;
//! - an UNCERTAIN window runs *degraded*: no learning, threshold x2;
//! - a window more uncertain than usual (its expanded uncertainty `U` above
//!   the learned typical `U_typ`: small inlet, big pack change, gaps) is
//!   standardised by `sqrt(sigma^2 + (U^2 - U_typ^2) / 4)`;
//! - the first `warmup` windows only learn (a meter bias would otherwise
//!   look like a leak at start-up);
//! - pack/unpack discrimination: in > out while the pack rises is packing,
//!   not a leak. When the pack change exceeds `PACKING_FRACTION` of the
//!   inlet, a positive residual is attributed to pack-estimate error and
//!   does not add to S.
//!
//! When S passes `h` the detector reports a [`LeakAlert`]: the start is the
//! maximum-likelihood step change point among the windows since S was last
//! 0 (CUSUM alone would date it from the last zero, and a quiet window just
//! before the leak would dilute the rate), the rate is the mean de-biased
//! residual after it with its standard error, and the confidence is the
//! probability that this mean is positive.

pub use crate::model::LeakAlert;
use crate::model::{BalanceResult, Quality, Timestamp};

/// Pack change (fraction of inlet) above which a window counts as packing.
const PACKING_FRACTION: f64 = 0.002;
/// Smallest residual spread assumed (% of inlet): the learned sigma of a
/// quiet station can be tiny, and the test must not become a hair trigger.
const SIGMA_FLOOR_PERCENT: f64 = 0.05;
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
    /// Testing with a widened threshold (partial data); no learning.
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
    /// Learned typical expanded uncertainty of a window (%).
    u_typ: f64,
    learned: u32,
    s: f64,
    /// End of the last window where S was 0: the change-point estimate.
    last_zero: Timestamp,
    /// Windows since `last_zero` (the most recent `HISTORY`): start,
    /// de-biased residual (%) and inlet rate (Sm³/h). A fixed array: no
    /// allocation per window.
    hist: [(i64, f64, f64); HISTORY],
    n: usize,
    state: LeakState,
    /// Why the last window was suspended or degraded.
    reason: &'static str,
}

impl LeakDetector {
    pub fn new(tuning: LeakTuning) -> Self {
        LeakDetector {
            tuning,
            mu: 0.0,
            var: 0.0,
            u_typ: 0.0,
            learned: 0,
            s: 0.0,
            last_zero: Timestamp(i64::MIN),
            hist: [(0, 0.0, 0.0); HISTORY],
            n: 0,
            state: LeakState::WarmingUp,
            reason: "warming up",
        }
    }

    pub fn state(&self) -> LeakState {
        self.state
    }

    /// Why the detector is degraded or suspended ("" when normal).
    pub fn reason(&self) -> &'static str {
        self.reason
    }

    /// The CUSUM statistic (sigmas).
    pub fn statistic(&self) -> f64 {
        self.s
    }

    /// Learned bias (% of inlet).
    pub fn bias_percent(&self) -> f64 {
        self.mu
    }

    fn sigma(&self) -> f64 {
        self.var.sqrt().max(SIGMA_FLOOR_PERCENT)
    }

    fn learn(&mut self, x: f64, u: f64) {
        self.learned = self.learned.saturating_add(1);
        let w = 1.0 / f64::from(self.learned.min(self.tuning.bias_windows.max(1)));
        let d = x - self.mu;
        self.mu += w * d;
        self.var = (1.0 - w) * (self.var + w * d * d);
        if u.is_finite() {
            self.u_typ += w * (u - self.u_typ);
        }
    }

    /// Feeds one closed window; returns an alert when the alarm condition
    /// starts (once per episode).
    pub fn on_window(&mut self, r: &BalanceResult) -> Option<LeakAlert> {
        let x = r.imbalance_percent;
        if r.quality == Quality::Bad
            || r.quality == Quality::Stale
            || !x.is_finite()
            || r.inlet_sm3 <= 0.0
        {
            self.reason = if r.linepack_change_sm3.is_nan() {
                "line pack unknown (pressure or temperature not good)"
            } else {
                "meter data missing (coverage below minimum)"
            };
            if self.state != LeakState::Alarm {
                self.state = LeakState::Suspended;
            }
            return None;
        }
        let degraded = r.quality == Quality::Uncertain;
        if self.learned < self.tuning.warmup {
            if !degraded {
                self.learn(x, r.uncertainty_percent);
            }
            self.state = LeakState::WarmingUp;
            self.reason = "warming up";
            return None;
        }
        // A window more uncertain than usual (small inlet, large pack
        // change, gaps) widens its own standardisation by the excess.
        let u = if r.uncertainty_percent.is_finite() {
            r.uncertainty_percent
        } else {
            self.u_typ
        };
        let excess = (u * u - self.u_typ * self.u_typ).max(0.0) / 4.0;
        let sigma = (self.sigma().powi(2) + excess).sqrt();
        let k = self.tuning.min_leak_percent / (2.0 * sigma);
        let mut h = self.tuning.threshold_sigma;
        if degraded {
            h *= 2.0;
        }
        let z = (x - self.mu) / sigma;
        let packing = r.linepack_change_sm3 > PACKING_FRACTION * r.inlet_sm3;
        let step = if packing && z > 0.0 { 0.0 } else { z - k };
        let hours = (r.end.nanos() - r.start.nanos()) as f64 / 3_600e9;
        self.s = (self.s + step).max(0.0);
        if self.s == 0.0 {
            self.last_zero = r.end;
            self.n = 0;
        } else {
            if self.n == HISTORY {
                self.hist.copy_within(1.., 0);
                self.n -= 1;
            }
            self.hist[self.n] = (r.start.nanos(), x - self.mu, r.inlet_sm3 / hours.max(1e-9));
            self.n += 1;
        }
        let suspected = self.s > h / 2.0;
        if !suspected && !degraded && !packing {
            self.learn(x, r.uncertainty_percent);
        }
        let was_alarm = self.state == LeakState::Alarm;
        self.reason = if degraded {
            "partial data: threshold widened"
        } else if packing {
            "packing: positive residual not counted"
        } else {
            ""
        };
        if self.s > h {
            self.state = LeakState::Alarm;
            if !was_alarm {
                let (tau, mean_x, rate) = self.change_point();
                let n = (self.n - tau).max(1) as f64;
                let se_x = sigma / n.sqrt();
                let start = if self.n > 0 {
                    Timestamp(self.hist[tau].0)
                } else {
                    r.start
                };
                return Some(LeakAlert {
                    window_s: (r.end.nanos() - r.start.nanos()) / 1_000_000_000,
                    start,
                    detected: r.end,
                    rate_sm3_per_h: rate,
                    rate_uncertainty_sm3_per_h: (rate * se_x / mean_x.abs().max(1e-12)).abs(),
                    rate_percent: mean_x,
                    confidence: normal_cdf(mean_x / se_x),
                });
            }
        } else if self.s == 0.0 {
            self.state = if degraded {
                LeakState::Degraded
            } else {
                LeakState::Normal
            };
        } else if suspected {
            if !was_alarm {
                self.state = LeakState::Suspected;
            }
        } else if !was_alarm {
            self.state = if degraded {
                LeakState::Degraded
            } else {
                LeakState::Normal
            };
        }
        None
    }

    /// Maximum-likelihood step change point among the windows since the
    /// CUSUM last was 0: the split `tau` maximising `(n - tau) * mean^2` of
    /// the residuals after it (mean > 0). Returns (tau, mean residual %,
    /// mean leak rate Sm³/h) of the windows after the split.
    fn change_point(&self) -> (usize, f64, f64) {
        let h = &self.hist[..self.n];
        let mut best = (0usize, 0.0f64, 0.0f64, f64::MIN);
        let (mut sx, mut sr) = (0.0, 0.0);
        for tau in (0..h.len()).rev() {
            sx += h[tau].1;
            sr += h[tau].1 / 100.0 * h[tau].2;
            let n = (h.len() - tau) as f64;
            let m = sx / n;
            let score = n * m * m;
            if m > 0.0 && score > best.3 {
                best = (tau, m, sr / n, score);
            }
        }
        (best.0, best.1, best.2)
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
                d.on_window(&window(i, 0.8 + noise(&mut rng), Quality::Good))
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
            if let Some(a) = d.on_window(&window(i, 2.8 + noise(&mut rng), Quality::Good)) {
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
            d.on_window(&window(i, 0.0, Quality::Good));
        }
        for i in 20..40 {
            let mut w = window(i, 30.0, Quality::Bad);
            w.linepack_change_sm3 = f64::NAN;
            assert!(d.on_window(&w).is_none());
            assert_eq!(d.state(), LeakState::Suspended);
            assert!(d.reason().contains("line pack"));
        }
        assert_eq!(d.statistic(), 0.0);
    }

    #[test]
    fn packing_does_not_count_as_a_leak() {
        let mut d = LeakDetector::new(tuning());
        for i in 0..20 {
            d.on_window(&window(i, 0.0, Quality::Good));
        }
        for i in 20..40 {
            let mut w = window(i, 1.5, Quality::Good);
            w.linepack_change_sm3 = 50.0; // 2 % of inlet going into pack
            assert!(d.on_window(&w).is_none());
        }
    }

    #[test]
    fn normal_cdf_known_values() {
        assert!((normal_cdf(0.0) - 0.5).abs() < 1e-7);
        assert!((normal_cdf(1.96) - 0.975).abs() < 1e-4);
        assert!((normal_cdf(-1.0) - 0.158_655).abs() < 1e-5);
    }
}
