//! `gaswatch leak-scorecard`: the leak-detection scorecard. Drives the simulator
//! (`gaswatch_sim::Station::step`) and the pure engine (`Engine::process`
//! with `Input::Values`, then `tick`) as fast as the CPU allows: no sockets,
//! no clock. Deterministic for given seeds.
//!
//! Station: the `config/city-gate.toml` example plus a natural gas with Z
//! from AGA 8 DETAIL (the same `[gas]` text feeds the simulator and the
//! engine) and a 1960 m³ line-pack element (10 km of DN500) on the outlet
//! pressure and temperature; balance windows 5 min and 1 h; the leak test
//! with its defaults (1 min, 5 min and 1 h windows); meters 1 % (k = 2).
//! Simulator: flow noise 0.1 % per sample, pressure noise 0.01 %, per-seed
//! meter biases within +-0.5 %, and with transients: demand ramps of
//! +-30 %/h, +-0.1 MPa set-point steps, device dropouts of 5-120 s about
//! twice an hour. Leaks start at a per-seed second within a 5-minute
//! window (never conveniently on a window boundary); the time to detect is
//! from the leak start to the scan at which the engine raised the alarm.

use crate::config::{Config, LinepackConfig};
use crate::engine::{Engine, EnginePlan};
use crate::model::{AlarmAction, AlarmKind, Input, Output, Quality, TagId, Timestamp};
use gaswatch_sim::{Leak, SimOptions, Station};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

const CITY_GATE: &str = include_str!("../../config/city-gate.toml");
/// The gas of the scorecard station (a lean pipeline gas), appended to the
/// city-gate example for both the simulator and the engine.
const GAS: &str = "
[gas]
method = \"aga8_detail\"
[gas.composition]
methane = 0.96
ethane = 0.02
nitrogen = 0.01
carbon_dioxide = 0.01
";
const PIPE_M3: f64 = 1960.0;
const S: i64 = 1_000_000_000;

/// Why the scorecard could not run.
#[derive(Debug, thiserror::Error)]
pub enum ScorecardError {
    #[error("scorecard station config: {0}")]
    Config(String),
    #[error("simulator: {0}")]
    Sim(String),
}

/// What one run saw.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RunOutcome {
    /// Seconds from leak start to the leak alarm (None: not detected).
    pub detect_after_s: Option<f64>,
    /// Leak alarms raised before the leak started (false alarms).
    pub false_leak_alarms: u32,
    /// 输差 (imbalance) alarms raised before the leak started.
    pub false_imbalance_alarms: u32,
    /// Estimated and true leak rate at detection, Sm³/h.
    pub rate_estimate_sm3_per_h: f64,
    pub rate_true_sm3_per_h: f64,
    /// Window (s) of the leak test that raised the alarm.
    pub detected_by_window_s: i64,
    /// Before the leak: the highest CUSUM statistic each leak test reached,
    /// as a fraction of its threshold (1 = alarm), by test.
    pub max_statistic_ratio: [f64; 3],
}

struct Rig {
    station: Station,
    engine: Engine,
    /// (tag, point name, device index) for every point.
    points: Vec<(TagId, String, usize)>,
    devices: usize,
    rng: fastrand::Rng,
    dropout_until: Vec<i64>,
    dropouts: bool,
    values: Vec<(TagId, f64, Quality)>,
    out: Output,
}

fn station_text() -> String {
    format!("{CITY_GATE}{GAS}")
}

/// `balance_edge`: the reported windows' `balance.edge` (None: the default).
fn engine_config(balance_edge: Option<Duration>) -> Result<Config, ScorecardError> {
    let mut c = Config::from_str_named(&station_text(), Path::new("config/city-gate.toml"))
        .map_err(|e| ScorecardError::Config(e.to_string()))?;
    c.linepack.push(LinepackConfig {
        name: "outlet-pipe".into(),
        volume_m3: PIPE_M3,
        pressure: "PT_OUT1".into(),
        temperature: "TT_OUT1".into(),
        pressure_gauge: true,
        uncertainty_percent: 2.0,
        rupture_kpa_per_min: None,
    });
    c.balance.window = Duration::from_secs(300);
    c.balance.longer_windows = Some(vec![Duration::from_secs(3600)]);
    c.limits.clear();
    if balance_edge.is_some() {
        c.balance.edge = balance_edge;
    }
    let problems = c.validate();
    if !problems.is_empty() {
        return Err(ScorecardError::Config(format!("{problems:?}")));
    }
    Ok(c)
}

impl Rig {
    fn new(
        seed: u64,
        transients: bool,
        leak: Option<Leak>,
        balance_edge: Option<Duration>,
    ) -> Result<Rig, ScorecardError> {
        let c = engine_config(balance_edge)?;
        let plan = Arc::new(EnginePlan::compile(&c));
        let mut rng = fastrand::Rng::with_seed(seed ^ 0x5ca1_ab1e);
        let mut bias = std::collections::BTreeMap::new();
        for m in &c.meters {
            bias.insert(m.name.clone(), (rng.f64() - 0.5) * 1.0);
        }
        let opts = SimOptions {
            seed,
            leak,
            noise_percent: 0.1,
            pressure_noise_percent: Some(0.01),
            meter_bias_percent: bias,
            transients,
            pipe_volume_m3: PIPE_M3,
            ..SimOptions::default()
        };
        let station = Station::from_config_str(&station_text(), &opts)
            .map_err(|e| ScorecardError::Sim(e.to_string()))?;
        let mut points = Vec::new();
        for (di, d) in c.devices.iter().enumerate() {
            for p in &d.points {
                if let Some(tag) = plan.tag(&p.name) {
                    points.push((tag, p.name.clone(), di));
                }
            }
        }
        Ok(Rig {
            station,
            engine: Engine::new(plan, 0),
            devices: c.devices.len(),
            dropout_until: vec![i64::MIN; c.devices.len()],
            points,
            rng,
            dropouts: transients,
            values: Vec::new(),
            out: Output::default(),
        })
    }

    /// One 1-second scan; outputs land in `self.out`.
    fn step(&mut self, t: i64) {
        self.station.step(Duration::from_secs(1));
        if self.dropouts && self.rng.u32(0..1800) == 0 {
            let d = self.rng.usize(0..self.devices);
            self.dropout_until[d] = t + self.rng.i64(5..=120) * S;
        }
        self.values.clear();
        for (tag, name, d) in &self.points {
            let v = self.station.true_value(name).unwrap_or(f64::NAN);
            if t < self.dropout_until[*d] {
                self.values.push((*tag, f64::NAN, Quality::Bad));
            } else {
                self.values.push((*tag, v, Quality::Good));
            }
        }
        self.out.clear();
        let input = Input::Values {
            ts: Timestamp(t),
            values: std::mem::take(&mut self.values),
        };
        self.engine.process(&input, &mut self.out);
        if let Input::Values { values, .. } = input {
            self.values = values;
        }
        self.engine.tick(Timestamp(t), &mut self.out);
    }
}

/// One leak run: `leak_percent` of throughput from `leak_at_s`, watched for
/// `watch_s` after it.
pub fn leak_run(
    seed: u64,
    transients: bool,
    leak_percent: f64,
    leak_at_s: i64,
    watch_s: i64,
    balance_edge: Option<Duration>,
) -> Result<RunOutcome, ScorecardError> {
    let leak = (leak_percent > 0.0).then_some(Leak {
        start_after: Duration::from_secs(leak_at_s as u64),
        percent: leak_percent,
        end_after: None,
    });
    let mut rig = Rig::new(seed, transients, leak, balance_edge)?;
    let mut o = RunOutcome::default();
    for k in 1..=(leak_at_s + watch_s) {
        let t = k * S;
        let before = k <= leak_at_s || leak_percent <= 0.0;
        rig.step(t);
        let true_leak = rig.station.physics().leak_sm3_per_h;
        if before {
            for (m, d) in o
                .max_statistic_ratio
                .iter_mut()
                .zip(rig.engine.leak_detectors())
            {
                *m = m.max(d.statistic() / d.threshold());
            }
        }
        let out = &rig.out;
        for a in &out.alarms {
            if a.action != AlarmAction::Raise {
                continue;
            }
            match (a.kind, before) {
                (AlarmKind::Leak, true) => o.false_leak_alarms += 1,
                (AlarmKind::Imbalance, true) => o.false_imbalance_alarms += 1,
                (AlarmKind::Leak, false) if o.detect_after_s.is_none() => {
                    // The scan at which the engine raised it, not the end
                    // of the window that crossed the threshold.
                    o.detect_after_s = Some((k - leak_at_s) as f64);
                    if let Some(l) = out.leaks.first() {
                        o.rate_estimate_sm3_per_h = l.rate_sm3_per_h;
                        o.detected_by_window_s = l.window_s;
                    }
                    o.rate_true_sm3_per_h = true_leak;
                }
                _ => {}
            }
        }
        if o.detect_after_s.is_some() && !before {
            break;
        }
    }
    Ok(o)
}

/// Scorecard size.
#[derive(Debug, Clone)]
pub struct Plan {
    pub seeds: u64,
    pub normal_days: i64,
    /// Leak start, before the per-seed offset within a 5-minute window.
    pub leak_at_s: i64,
    pub watch_s: i64,
    /// Leak sizes (% of throughput) to score.
    pub leaks: Vec<f64>,
    /// Score steady operation, transients, or both.
    pub steady: bool,
    pub transients: bool,
    /// Seeds of the normal-operation (false alarm) run, from 1.
    pub normal_seeds: u64,
    /// `balance.edge` of the reported windows (None: the default, sharp):
    /// moves the 输差 alarm counts, not the leak test.
    pub balance_edge: Option<Duration>,
}

impl Default for Plan {
    fn default() -> Self {
        Plan {
            seeds: 20,
            normal_days: 30,
            leak_at_s: 8 * 3600,
            watch_s: 4 * 3600,
            leaks: vec![5.0, 2.0, 1.0, 0.5],
            steady: true,
            transients: true,
            normal_seeds: 3,
            balance_edge: None,
        }
    }
}

/// Leak start of `seed`: `leak_at_s` plus a per-seed second of a 5-minute
/// window, spread evenly over the seeds (137 is prime to 300).
pub fn leak_start_s(leak_at_s: i64, seed: u64) -> i64 {
    leak_at_s + (seed as i64 * 137).rem_euclid(300)
}

/// Target time to detect per leak size (s).
fn target_s(leak: f64) -> f64 {
    if leak >= 5.0 {
        600.0
    } else if leak >= 2.0 {
        1800.0
    } else if leak >= 1.0 {
        7200.0
    } else {
        f64::INFINITY
    }
}

fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Runs the whole scorecard and renders it as Markdown.
pub fn run(plan: &Plan) -> Result<String, ScorecardError> {
    use std::fmt::Write;
    let mut md = String::new();
    let _ = writeln!(
        md,
        "| leak % | transients | PoD within target | target | detected (4 h) | median / max time to detect | median / max rate error | detected by (1m / 5m / 1h) | false leak / 输差 alarms before the leak |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|");
    let modes: Vec<bool> = [(false, plan.steady), (true, plan.transients)]
        .iter()
        .filter(|m| m.1)
        .map(|m| m.0)
        .collect();
    for &leak in &plan.leaks {
        let target = target_s(leak);
        for &transients in &modes {
            let mut within = 0;
            let mut detected = 0;
            let mut ttd = Vec::new();
            let mut err = Vec::new();
            let mut by = [0u32; 3];
            let (mut fl, mut fi) = (0, 0);
            for seed in 1..=plan.seeds {
                let start = leak_start_s(plan.leak_at_s, seed);
                let o = leak_run(
                    seed,
                    transients,
                    leak,
                    start,
                    plan.watch_s,
                    plan.balance_edge,
                )?;
                fl += o.false_leak_alarms;
                fi += o.false_imbalance_alarms;
                if let Some(d) = o.detect_after_s {
                    detected += 1;
                    if d <= target {
                        within += 1;
                    }
                    match o.detected_by_window_s {
                        ..=60 => by[0] += 1,
                        61..=300 => by[1] += 1,
                        _ => by[2] += 1,
                    }
                    ttd.push(d / 60.0);
                    if o.rate_true_sm3_per_h > 0.0 {
                        err.push(
                            (o.rate_estimate_sm3_per_h - o.rate_true_sm3_per_h)
                                / o.rate_true_sm3_per_h
                                * 100.0,
                        );
                    }
                }
            }
            let max_ttd = ttd.iter().copied().fold(f64::NAN, f64::max);
            let max_err = err.iter().map(|e: &f64| e.abs()).fold(f64::NAN, f64::max);
            let _ = writeln!(
                md,
                "| {leak} | {} | {within}/{} | {} | {detected}/{} | {:.1} / {:.1} min | {:+.0} % / {:.0} % | {} / {} / {} | {fl} / {fi} |",
                if transients { "yes" } else { "no" },
                plan.seeds,
                if target.is_finite() {
                    format!("{:.0} min", target / 60.0)
                } else {
                    "none".into()
                },
                plan.seeds,
                median(&mut ttd),
                max_ttd,
                median(&mut err),
                max_err,
                by[0],
                by[1],
                by[2],
            );
        }
    }
    if plan.normal_days > 0 && plan.normal_seeds > 0 {
        // Normal operation: no leak, transients and dropouts.
        let _ = writeln!(
            md,
            "\n| normal operation (transients, dropouts) | false leak alarms | 输差 alarm raises | highest CUSUM / threshold, 1m / 5m / 1h test |\n|---|---|---|---|"
        );
        for seed in 1..=plan.normal_seeds {
            let o = leak_run(
                seed,
                true,
                0.0,
                plan.normal_days * 86_400,
                0,
                plan.balance_edge,
            )?;
            let r = o.max_statistic_ratio;
            let _ = writeln!(
                md,
                "| seed {seed}, {} days | **{}** | {} | {:.2} / {:.2} / {:.2} |",
                plan.normal_days, o.false_leak_alarms, o.false_imbalance_alarms, r[0], r[1], r[2]
            );
        }
    }
    Ok(md)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The simulator's pack (AGA 8 DETAIL from the station's `[gas]`) and
    /// the engine's pack from the served outlet P and T agree: the same Z.
    #[test]
    fn simulator_and_engine_line_pack_agree_with_real_gas() {
        let c = engine_config(None).expect("config");
        let mut gas = c.gas.build().expect("gas model");
        assert_eq!(gas.method_name(), "aga8_detail");
        let opts = SimOptions {
            noise_percent: 0.0,
            pressure_noise_percent: Some(0.0),
            transients: true,
            pipe_volume_m3: PIPE_M3,
            ..SimOptions::default()
        };
        let mut station = Station::from_config_str(&station_text(), &opts).expect("station");
        for _ in 0..6 {
            station.step(Duration::from_secs(1800));
            let (p, t) = (
                station.true_value("PT_OUT1").expect("point"),
                station.true_value("TT_OUT1").expect("point"),
            );
            let engine = gas
                .linepack_sm3(PIPE_M3, gas.absolute_kpa(p, true), t + 273.15)
                .expect("in range");
            let sim = station.physics().linepack_sm3;
            // f32 registers only: parts per ten million.
            assert!((engine - sim).abs() / sim < 1e-6, "{engine} vs {sim}");
            // Real gas: about 3 % more than the ideal gas would hold.
            let ideal = PIPE_M3 * (p + 101.325) / 101.325 * 293.15 / (t + 273.15);
            assert!(sim / ideal > 1.02, "{sim} vs ideal {ideal}");
        }
        // Line-flow meters: the simulator's line volume per base volume is
        // the inverse of the engine's conversion factor (same Z).
        let sim_cfg =
            gaswatch_sim::StationConfig::from_toml_str(&station_text()).expect("sim config");
        let mut sim_gas =
            gaswatch_sim::gas::Gas::from_section(sim_cfg.gas.as_ref()).expect("sim gas");
        for (p, t) in [(1500.0, 5.0), (3500.0, 12.0)] {
            let engine = gas
                .conversion_factor(gas.absolute_kpa(p, true), t + 273.15)
                .expect("in range");
            let product = engine * sim_gas.line_per_base(p, t);
            assert!((product - 1.0).abs() < 1e-12, "{product}");
        }
    }

    /// A small scorecard: one seed, a 5 % leak under transients is found
    /// within 10 minutes with a rate within 30 %, and nothing false before.
    #[test]
    fn five_percent_leak_under_transients_is_found_fast_and_nothing_false_before() {
        let o = leak_run(3, true, 5.0, 2 * 3600, 3600, None).expect("runs");
        // 输差 raises are not asserted: the reported 5-minute windows take
        // one scan of pack at each edge (about 0.4 % of throughput of noise
        // on this pipe), so their 1 % limit flickers now and then; the
        // leak test has its own smoothed windows.
        assert_eq!(o.false_leak_alarms, 0, "{o:?}");
        let d = o.detect_after_s.expect("detected");
        assert!(d <= 600.0, "{o:?}");
        let err = (o.rate_estimate_sm3_per_h - o.rate_true_sm3_per_h) / o.rate_true_sm3_per_h;
        assert!(err.abs() < 0.3, "{o:?}");
    }
}
