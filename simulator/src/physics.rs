//! Station physics and the register map: the pure, deterministic model.
//!
//! Responsibility: given a station config, a seed and simulated time steps,
//! compute the physical state of a city-gate station and the engineering value
//! (and registers) each configured point serves. No I/O, no clock reads: time
//! only moves through [`Station::step`], so the same seed and the same steps
//! give the same values.
//!
//! Model (all flows at base conditions 20 degC / 101.325 kPa, Z = 1):
//! - Outlet demand: 30,000 Sm3/h times a daily profile `1 + 0.2 sin(2 pi (h-12)/24)`
//!   (sim clock starts at 00:00, peak at 18:00, trough at 06:00) times small
//!   smooth fluctuations (1 % at 300 s, 0.5 % at 47 s, random phases per seed).
//!   Split among outlet meters in config order: one outlet takes all, otherwise
//!   the first takes 60 % and the rest share 40 % evenly.
//! - Inlet pressure about 3500 kPa g (slow 6 h swing of 80 kPa plus 10 kPa at
//!   15 min); inlet temperature 12 degC with a 1.5 K daily swing.
//! - Outlet pressure: regulator set-point 1500 kPa g, drooping up to 15 kPa at
//!   peak demand, plus small smooth regulator hunting (3 kPa at 600 s, 2 kPa at
//!   137 s). Smooth on purpose: line pack follows it, and white noise on the
//!   physical pressure would make the pack rate dominate the balance.
//! - Outlet temperature: Joule-Thomson cooling of 0.5 K per 100 kPa drop.
//! - Line pack of the station pipework: `V_geom (P_abs / 101.325) (293.15 / T)`
//!   with `V_geom = 50 m3` at outlet pressure and temperature.
//! - Inlet flow = demand + leak + d(pack)/dt, where d(pack)/dt is the pack
//!   change over the last step divided by its length. Multiple inlet meters
//!   share the inlet evenly.
//! - Leak: gas that enters the inlet but never reaches an outlet meter. The
//!   supply holds outlet demand, so the inlet rises by the leak:
//!   `leak = percent / 100 * demand` (percent of outlet throughput) while the
//!   leak is active. Leak times count from when the leak was set (for
//!   [`SimOptions::leak`], from the start of the simulation).
//!
//! Other station kinds (`[station] kind = "cng_mother"`, `"lng"`,
//! `"lcng"`) run their own model ([`crate::profile`]) for the flows,
//! pressures and temperatures; meter errors, scenarios, archives and the
//! register map below work the same for every kind.
//!
//! A meter's flow point serves what its `kind` says (the daemon's
//! `[[meters]] kind`): base flow (default), line flow (the base flow at the
//! true line P and T), or a totaliser of either that integrates the reading
//! over each step and wraps at `rollover` (starting half-way through it, so
//! runs see the wrap).
//!
//! Meter readings (what points serve) add errors to the physical values:
//! flow and pressure get gaussian noise of `noise_percent` % of reading (one
//! standard deviation, a new sample each step) and flow an optional fixed bias
//! per meter; temperature gets gaussian noise of `0.5 * noise_percent` K
//! (0.05 K at the default 0.1). Points not referenced by any meter serve a
//! constant 0.
//!
//! Each point's value is then encoded ([`mod@crate::encode`]); the value a point
//! "serves" ([`Station::true_value`]) is the engineering value a correct
//! decoder recovers from its registers, so a daemon test may compare exactly.

use std::collections::{BTreeMap, HashMap};
use std::f64::consts::TAU;
use std::time::Duration;

use crate::archive::{Archive, ArchiveRecord};
use crate::config::{
    ConfigError, Endpoint, MeterKind, MeterRole, PointConfig, RegisterKind, StationConfig,
};
use crate::encode::{Encoded, encode};
use crate::profile::{LngSignal, Profile, ProfileKind};

/// Base pressure, kPa absolute.
const P_BASE_KPA: f64 = 101.325;
/// Base temperature, K.
const T_BASE_K: f64 = 293.15;
/// Geometric volume of station pipework, m3.
const STATION_VOLUME_M3: f64 = 50.0;
/// Mean total outlet demand, Sm3/h.
const DEMAND_SM3_PER_H: f64 = 30_000.0;
/// Outlet regulator set-point, kPa g.
const OUTLET_SETPOINT_KPA: f64 = 1_500.0;
/// Upstream supply pressure, kPa g.
const INLET_PRESSURE_KPA: f64 = 3_500.0;
/// Inlet gas temperature, degC.
const INLET_TEMPERATURE_C: f64 = 12.0;
/// Joule-Thomson cooling, K per kPa of pressure drop.
const JT_K_PER_KPA: f64 = 0.5 / 100.0;

/// How the simulator runs.
#[derive(Debug, Clone, PartialEq)]
pub struct SimOptions {
    /// Seed of every random choice (phases, meter noise).
    pub seed: u64,
    /// Leak present from the start (times count from sim start).
    pub leak: Option<Leak>,
    /// Meter noise, % of reading, one standard deviation per sample.
    pub noise_percent: f64,
    /// Simulated seconds per wall-clock second; 1.0 = real time.
    pub speed: f64,
    /// Fixed flow bias per meter name, % of reading (default none).
    pub meter_bias_percent: BTreeMap<String, f64>,
    /// Operating transients (default off): demand ramps of +-30 %/h
    /// (a triangle of +-15 % with a 2 h period) and outlet set-point steps
    /// of +-100 kPa (pack and unpack of 0.1 MPa, ramped over 10 min, every
    /// 3 h), phases from the seed.
    pub transients: bool,
    /// Geometric volume of the pipework whose pack the outlet pressure
    /// drives, m3 (default 50: station pipework; 10 km of DN500 is about 1960).
    pub pipe_volume_m3: f64,
    /// Pressure noise, % of reading (default: `noise_percent`).
    pub pressure_noise_percent: Option<f64>,
    /// The devices' clock at simulated time 0, seconds since the epoch
    /// (default 2026-01-01T00:00:00Z): archive records close on its whole
    /// hours and carry its time.
    pub clock_start_s: i64,
}

impl Default for SimOptions {
    fn default() -> Self {
        Self {
            seed: 1,
            leak: None,
            noise_percent: 0.1,
            speed: 1.0,
            meter_bias_percent: BTreeMap::new(),
            transients: false,
            pipe_volume_m3: STATION_VOLUME_M3,
            pressure_noise_percent: None,
            clock_start_s: 1_767_225_600,
        }
    }
}

/// A leak between the inlet and the outlet meters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Leak {
    /// Leak starts this long after it was set.
    pub start_after: Duration,
    /// Leak rate in % of outlet throughput (demand).
    pub percent: f64,
    /// Leak ends this long after it was set (None = never).
    pub end_after: Option<Duration>,
}

/// The physical state without meter errors: ground truth.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct PhysicsState {
    /// Simulated time since start.
    pub sim_time: Duration,
    /// Total outlet demand, Sm3/h.
    pub demand_sm3_per_h: f64,
    /// Leak rate, Sm3/h (0 when no leak is active).
    pub leak_sm3_per_h: f64,
    /// Total inlet flow, Sm3/h = demand + leak + pack rate.
    pub inlet_flow_sm3_per_h: f64,
    /// Station line pack, Sm3.
    pub linepack_sm3: f64,
    /// Line pack change over the last step, Sm3/h.
    pub linepack_rate_sm3_per_h: f64,
    /// Inlet pressure, kPa g.
    pub inlet_pressure_kpa: f64,
    /// Inlet temperature, degC.
    pub inlet_temperature_c: f64,
    /// Outlet pressure, kPa g.
    pub outlet_pressure_kpa: f64,
    /// Outlet temperature, degC.
    pub outlet_temperature_c: f64,
    /// Whether the leak is active now.
    pub leak_active: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Quantity {
    Flow,
    Pressure,
    Temperature,
}

#[derive(Debug, Clone, Copy)]
struct Binding {
    meter: usize,
    quantity: Quantity,
}

#[derive(Debug, Clone)]
struct PointState {
    cfg: PointConfig,
    binding: Option<Binding>,
    /// L-CNG: the signal an unmetered point serves (by its tag letters).
    signal: Option<LngSignal>,
    encoded: Encoded,
}

#[derive(Debug, Clone)]
struct MeterState {
    role: MeterRole,
    /// Share of its role's total flow.
    share: f64,
    bias_percent: f64,
    /// CNG mother station: the filling post this outlet meter measures.
    post: Option<usize>,
    /// What the flow point serves (flow or totaliser, base or line).
    kind: MeterKind,
    /// Totaliser range: the total wraps to 0 here.
    rollover: Option<f64>,
    /// Totaliser reading (Sm3 or m3 as `kind` says).
    total: f64,
}

impl MeterState {
    /// Adds `volume` to the totaliser, wrapping at the rollover; returns
    /// the new reading.
    fn add_to_total(&mut self, volume: f64) -> f64 {
        self.total += volume;
        if let Some(r) = self.rollover {
            self.total = self.total.rem_euclid(r);
        }
        self.total
    }
}

/// Line volume per base volume at `p_kpa_g` and `t_c` (AGA 7 inverted:
/// `V_f / V_b = P_b / P_f * T_f / T_b`, ideal gas).
fn line_per_base(p_kpa_g: f64, t_c: f64) -> f64 {
    P_BASE_KPA / (p_kpa_g + P_BASE_KPA) * ((t_c + 273.15) / T_BASE_K)
}

#[derive(Debug, Clone)]
pub(crate) struct DeviceMap {
    pub(crate) id: String,
    pub(crate) endpoint: Endpoint,
    pub(crate) unit_id: u8,
    /// (table, address) -> (point index, word index). In Enron mode a
    /// 32-bit point has one entry (word 0) and answers both its words.
    registers: HashMap<(RegisterKind, u16), (usize, u16)>,
    enron: bool,
    /// Index into `Station::archives`.
    archive: Option<usize>,
}

/// Why a register read cannot be answered: a Modbus exception code.
pub(crate) type ExceptionCode = u8;

/// The pure station model plus its register map.
#[derive(Debug, Clone)]
pub struct Station {
    station_id: String,
    points: Vec<PointState>,
    by_name: HashMap<String, usize>,
    meters: Vec<MeterState>,
    pub(crate) devices: Vec<DeviceMap>,
    rng: fastrand::Rng,
    phases: [f64; 6],
    noise_percent: f64,
    pressure_noise_percent: f64,
    transients: bool,
    pipe_volume_m3: f64,
    pub(crate) speed: f64,
    leak: Option<Leak>,
    leak_epoch_s: f64,
    t_s: f64,
    state: PhysicsState,
    /// Scenario hook: per point, how the served value departs from physics.
    overrides: HashMap<usize, PointOverride>,
    /// Flow computers' hourly archives.
    archives: Vec<Archive>,
    /// Device clock at sim time 0, s since the epoch.
    clock_start_s: i64,
    /// The station kind's model beyond the city gate (CNG, L-CNG).
    profile: Profile,
    /// What the station publishes over MQTT.
    mqtt_sources: Vec<crate::config::MqttSourceConfig>,
}

/// How a scenario bends one point's served value (see `scenario.rs`):
/// `hold` wins when set (stuck sensor), else `physics * scale + add`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PointOverride {
    /// Serve this fixed value.
    pub hold: Option<f64>,
    /// Multiply the physical reading (meter drift, slam-shut flow = 0).
    pub scale: f64,
    /// Add to the physical reading (pressure excursion).
    pub add: f64,
}

impl Station {
    /// Builds a station from config text. Values at sim time 0 are ready.
    pub fn from_config_str(toml_text: &str, opts: &SimOptions) -> Result<Station, crate::SimError> {
        let cfg = StationConfig::from_toml_str(toml_text)?;
        Self::from_config(cfg, opts)
    }

    /// Builds a station from a parsed config.
    pub fn from_config(cfg: StationConfig, opts: &SimOptions) -> Result<Station, crate::SimError> {
        if !opts.noise_percent.is_finite() || opts.noise_percent < 0.0 {
            return Err(ConfigError::Invalid {
                key: "noise_percent".into(),
                expected: "a finite number >= 0".into(),
            }
            .into());
        }
        if !(opts.pipe_volume_m3.is_finite() && opts.pipe_volume_m3 > 0.0)
            || opts
                .pressure_noise_percent
                .is_some_and(|n| !(n.is_finite() && n >= 0.0))
        {
            return Err(ConfigError::Invalid {
                key: "pipe_volume_m3 / pressure_noise_percent".into(),
                expected: "a positive volume and a finite noise >= 0".into(),
            }
            .into());
        }
        if !opts.speed.is_finite() || opts.speed <= 0.0 {
            return Err(ConfigError::Invalid {
                key: "speed".into(),
                expected: "a finite number > 0".into(),
            }
            .into());
        }
        if let Some(l) = &opts.leak {
            check_leak(l)?;
        }
        for (name, bias) in &opts.meter_bias_percent {
            if !cfg.meters.iter().any(|m| &m.name == name) || !bias.is_finite() {
                return Err(ConfigError::Invalid {
                    key: format!("meter_bias_percent.{name}"),
                    expected: "a finite bias for a meter named in [[meters]]".into(),
                }
                .into());
            }
        }

        let mut points = Vec::new();
        let mut by_name = HashMap::new();
        let mut devices = Vec::with_capacity(cfg.devices.len());
        let mut archives = Vec::new();
        for d in &cfg.devices {
            let mut registers = HashMap::new();
            for p in &d.points {
                let idx = points.len();
                let numbers = if d.enron { 1 } else { p.data_type.words() };
                for w in 0..numbers {
                    registers.insert((p.register, p.address + w), (idx, w));
                }
                by_name.insert(p.name.clone(), idx);
                points.push(PointState {
                    cfg: p.clone(),
                    binding: None,
                    signal: None,
                    encoded: encode(0.0, p.data_type, p.order, p.scale, p.offset),
                });
            }
            let archive = d.archive.as_ref().and_then(|a| {
                let meter = cfg.meters.get(a.meter)?;
                archives.push(Archive::new(&d.id, &meter.name, a.meter, a));
                Some(archives.len() - 1)
            });
            devices.push(DeviceMap {
                id: d.id.clone(),
                endpoint: d.endpoint.clone(),
                unit_id: d.unit_id,
                registers,
                enron: d.enron,
                archive,
            });
        }

        // MQTT points: values like any other point, served by the MQTT
        // publisher (`mqtt.rs`), not by a register map. The f64 "encoding"
        // keeps the payload number (`raw`) and the value it stands for.
        for src in &cfg.mqtt_sources {
            for p in &src.points {
                by_name.insert(p.name.clone(), points.len());
                let cfg = PointConfig {
                    name: p.name.clone(),
                    register: RegisterKind::Holding,
                    address: 0,
                    data_type: crate::encode::DataType::F64,
                    order: crate::encode::WordOrder::Abcd,
                    scale: p.scale,
                    offset: p.offset,
                    unit: p.unit.clone(),
                };
                points.push(PointState {
                    encoded: encode(0.0, cfg.data_type, cfg.order, cfg.scale, cfg.offset),
                    cfg,
                    binding: None,
                    signal: None,
                });
            }
        }

        let n_in = cfg
            .meters
            .iter()
            .filter(|m| m.role == MeterRole::Inlet)
            .count();
        let n_out = cfg
            .meters
            .iter()
            .filter(|m| m.role == MeterRole::Outlet)
            .count();
        let mut meters = Vec::with_capacity(cfg.meters.len());
        let mut outlet_seen = 0usize;
        for (mi, m) in cfg.meters.iter().enumerate() {
            let post = (m.role == MeterRole::Outlet).then_some(outlet_seen);
            let share = match m.role {
                MeterRole::Inlet => 1.0 / n_in as f64,
                MeterRole::Outlet => {
                    outlet_seen += 1;
                    if n_out == 1 {
                        1.0
                    } else if outlet_seen == 1 {
                        0.6
                    } else {
                        0.4 / (n_out - 1) as f64
                    }
                }
            };
            meters.push(MeterState {
                role: m.role,
                share,
                bias_percent: opts.meter_bias_percent.get(&m.name).copied().unwrap_or(0.0),
                post,
                kind: m.kind,
                rollover: m.rollover,
                // Half-way through its range, so a run sees the wrap soon.
                total: m.rollover.map_or(0.0, |r| r / 2.0),
            });
            let mut bind = |name: &Option<String>, quantity| {
                if let Some(&idx) = name.as_ref().and_then(|n| by_name.get(n)) {
                    let p: &mut PointState = &mut points[idx];
                    // First meter naming a point wins.
                    p.binding.get_or_insert(Binding {
                        meter: mi,
                        quantity,
                    });
                }
            };
            bind(&Some(m.flow.clone()), Quantity::Flow);
            bind(&m.pressure, Quantity::Pressure);
            bind(&m.temperature, Quantity::Temperature);
        }

        let kind = ProfileKind::from_station_kind(&cfg.kind);
        if kind == ProfileKind::Lng {
            for p in points.iter_mut().filter(|p| p.binding.is_none()) {
                p.signal = LngSignal::for_point(&p.cfg.name);
            }
        }
        let profile = Profile::new(kind, n_out, opts.seed);
        let mut rng = fastrand::Rng::with_seed(opts.seed);
        let phases = std::array::from_fn(|_| rng.f64() * TAU);
        let mut station = Station {
            station_id: cfg.station_id,
            points,
            by_name,
            meters,
            devices,
            rng,
            phases,
            noise_percent: opts.noise_percent,
            pressure_noise_percent: opts.pressure_noise_percent.unwrap_or(opts.noise_percent),
            transients: opts.transients,
            pipe_volume_m3: opts.pipe_volume_m3,
            speed: opts.speed,
            leak: opts.leak,
            leak_epoch_s: 0.0,
            t_s: 0.0,
            state: PhysicsState::default(),
            overrides: HashMap::new(),
            archives,
            clock_start_s: opts.clock_start_s,
            profile,
            mqtt_sources: cfg.mqtt_sources.clone(),
        };
        station.state.linepack_sm3 = station.physics_at(0.0).linepack_sm3;
        station.advance(0.0);
        Ok(station)
    }

    /// `[station] id`.
    pub fn station_id(&self) -> &str {
        &self.station_id
    }

    /// Advances simulated time by `dt` and samples every meter once.
    /// A zero `dt` changes nothing.
    pub fn step(&mut self, dt: Duration) {
        if dt.is_zero() {
            return;
        }
        self.advance(dt.as_secs_f64());
    }

    /// Engineering value the point currently serves (after meter error and
    /// encoding), or None for an unknown point.
    pub fn true_value(&self, point: &str) -> Option<f64> {
        self.by_name
            .get(point)
            .map(|&i| self.points[i].encoded.engineering)
    }

    /// The physical ground truth (no meter error).
    pub fn physics(&self) -> PhysicsState {
        self.state
    }

    /// Simulated time since start.
    pub fn sim_time(&self) -> Duration {
        self.state.sim_time
    }

    /// Replaces the leak; its times count from now (current sim time).
    pub fn set_leak(&mut self, leak: Option<Leak>) -> Result<(), crate::SimError> {
        if let Some(l) = &leak {
            check_leak(l)?;
        }
        self.leak = leak;
        self.leak_epoch_s = self.t_s;
        Ok(())
    }

    /// Scenario hook: bends `point`'s served value from the next step on
    /// (`None` returns it to physics). False for an unknown point.
    pub fn set_override(&mut self, point: &str, o: Option<PointOverride>) -> bool {
        let Some(&i) = self.by_name.get(point) else {
            return false;
        };
        match o {
            Some(o) => self.overrides.insert(i, o),
            None => self.overrides.remove(&i),
        };
        true
    }

    /// The leak currently configured (active or not).
    pub fn leak(&self) -> Option<Leak> {
        self.leak
    }

    /// Every point with the value it serves, by name.
    pub fn values(&self) -> BTreeMap<String, f64> {
        self.points
            .iter()
            .map(|p| (p.cfg.name.clone(), p.encoded.engineering))
            .collect()
    }

    /// Index of device `id` in config order.
    pub(crate) fn device_index(&self, id: &str) -> Option<usize> {
        self.devices.iter().position(|d| d.id == id)
    }

    /// The `[[mqtt_sources]]` the station publishes.
    pub fn mqtt_sources(&self) -> &[crate::config::MqttSourceConfig] {
        &self.mqtt_sources
    }

    /// For an MQTT point: the number its payload carries (`raw`) and the
    /// engineering value it stands for (`raw * scale + offset`).
    pub fn mqtt_value(&self, point: &str) -> Option<(f64, f64)> {
        let p = &self.points[*self.by_name.get(point)?];
        let w = p.encoded.words();
        if w.len() != 4 {
            return None;
        }
        let bits = w.iter().fold(0u64, |acc, &x| (acc << 16) | u64::from(x));
        Some((f64::from_bits(bits), p.encoded.engineering))
    }

    /// The station kind's model and its state (CNG trailers, LNG tank).
    pub fn profile(&self) -> &Profile {
        &self.profile
    }

    /// The flow computers' hourly archives.
    pub fn archives(&self) -> &[Archive] {
        &self.archives
    }

    /// Records device `device` still holds in its archive, oldest first
    /// (`None`: no such device or no archive).
    pub fn archive_records(&self, device: &str) -> Option<Vec<ArchiveRecord>> {
        self.archives
            .iter()
            .find(|a| a.device == device)
            .map(Archive::records)
    }

    /// The devices' clock at simulated time 0, s since the epoch.
    pub fn clock_start_s(&self) -> i64 {
        self.clock_start_s
    }

    /// Distinct endpoints of the config, first-seen order.
    pub fn endpoints(&self) -> Vec<Endpoint> {
        crate::config::distinct_endpoints(self.devices.iter().map(|d| &d.endpoint))
    }

    /// Reads `count` registers from `start` of a device's table into `out`.
    /// Calls `served` with (point name, engineering value) for each point whose
    /// registers all lie in the range.
    pub(crate) fn read_registers(
        &self,
        device: usize,
        kind: RegisterKind,
        start: u16,
        count: u16,
        out: &mut Vec<u16>,
        mut served: impl FnMut(&str, f64),
    ) -> Result<(), ExceptionCode> {
        let dev = &self.devices[device];
        let end = u32::from(start) + u32::from(count);
        if end > 0x1_0000 {
            return Err(0x02);
        }
        for a in start..=(end - 1) as u16 {
            let Some(&(pi, w)) = dev.registers.get(&(kind, a)) else {
                let archive = (kind == RegisterKind::Holding)
                    .then(|| dev.archive.and_then(|i| self.archives[i].word(a)))
                    .flatten();
                match archive {
                    Some(word) => {
                        out.push(word);
                        continue;
                    }
                    None => return Err(0x02),
                }
            };
            let p = &self.points[pi];
            let words = p.encoded.words();
            if dev.enron && words.len() == 2 {
                // Enron/Daniel: one register number answers the whole value.
                out.extend_from_slice(words);
                served(&p.cfg.name, p.encoded.engineering);
                continue;
            }
            out.push(words[usize::from(w)]);
            let last_word = p.cfg.data_type.words() - 1;
            if w == last_word && u32::from(p.cfg.address) >= u32::from(start) {
                served(&p.cfg.name, p.encoded.engineering);
            }
        }
        Ok(())
    }

    fn leak_active_at(&self, t_s: f64) -> Option<f64> {
        let l = self.leak?;
        let since = t_s - self.leak_epoch_s;
        let started = since >= l.start_after.as_secs_f64();
        let ended = l.end_after.is_some_and(|e| since >= e.as_secs_f64());
        (started && !ended).then_some(l.percent)
    }

    /// Physical state at time `t_s` except the pack rate and inlet flow,
    /// which need the previous pack.
    fn physics_at(&self, t_s: f64) -> PhysicsState {
        let ph = &self.phases;
        let h = t_s / 3600.0;
        let day = 1.0 + 0.2 * (TAU * (h - 12.0) / 24.0).sin();
        let wiggle = 1.0
            + 0.01 * (TAU * t_s / 300.0 + ph[0]).sin()
            + 0.005 * (TAU * t_s / 47.0 + ph[1]).sin();
        let (ramp, setpoint_step) = if self.transients {
            // Triangle of +-15 % with a 2 h period: slopes of +-30 %/h.
            let x = (t_s / 7200.0 + ph[0] / TAU).fract();
            let tri = if x < 0.5 {
                4.0 * x - 1.0
            } else {
                3.0 - 4.0 * x
            };
            // Set-point square wave +-100 kPa, 6 h period, 10 min ramps.
            let y = (t_s / 21_600.0 + ph[1] / TAU).fract() * 21_600.0;
            let r = 600.0;
            let sq = if y < r {
                -1.0 + 2.0 * y / r
            } else if y < 10_800.0 {
                1.0
            } else if y < 10_800.0 + r {
                1.0 - 2.0 * (y - 10_800.0) / r
            } else {
                -1.0
            };
            (1.0 + 0.15 * tri, 100.0 * sq)
        } else {
            (1.0, 0.0)
        };
        let demand = DEMAND_SM3_PER_H * day * wiggle * ramp;
        let p_in = INLET_PRESSURE_KPA
            + 80.0 * (TAU * t_s / (6.0 * 3600.0) + ph[2]).sin()
            + 10.0 * (TAU * t_s / 900.0 + ph[3]).sin();
        let t_in = INLET_TEMPERATURE_C + 1.5 * (TAU * (h - 9.0) / 24.0).sin();
        let p_out = OUTLET_SETPOINT_KPA + setpoint_step - 15.0 * (day - 1.0) / 0.2
            + 3.0 * (TAU * t_s / 600.0 + ph[4]).sin()
            + 2.0 * (TAU * t_s / 137.0 + ph[5]).sin();
        let t_out = t_in - JT_K_PER_KPA * (p_in - p_out);
        let pack = self.pipe_volume_m3
            * ((p_out + P_BASE_KPA) / P_BASE_KPA)
            * (T_BASE_K / (t_out + 273.15));
        let leak_percent = self.leak_active_at(t_s);
        PhysicsState {
            sim_time: Duration::from_secs_f64(t_s.max(0.0)),
            demand_sm3_per_h: demand,
            leak_sm3_per_h: leak_percent.map_or(0.0, |p| p / 100.0 * demand),
            inlet_flow_sm3_per_h: 0.0,
            linepack_sm3: pack,
            linepack_rate_sm3_per_h: 0.0,
            inlet_pressure_kpa: p_in,
            inlet_temperature_c: t_in,
            outlet_pressure_kpa: p_out,
            outlet_temperature_c: t_out,
            leak_active: leak_percent.is_some(),
        }
    }

    fn gauss(&mut self) -> f64 {
        // Box-Muller; 1 - u keeps ln away from 0.
        let u1 = 1.0 - self.rng.f64();
        let u2 = self.rng.f64();
        (-2.0 * u1.ln()).sqrt() * (TAU * u2).cos()
    }

    fn advance(&mut self, dt_s: f64) {
        let prev_pack = self.state.linepack_sm3;
        let t_prev = self.t_s;
        self.t_s += dt_s;
        let mut s = self.physics_at(self.t_s);
        s.linepack_rate_sm3_per_h = if dt_s > 0.0 {
            (s.linepack_sm3 - prev_pack) / dt_s * 3600.0
        } else {
            0.0
        };
        s.inlet_flow_sm3_per_h = s.demand_sm3_per_h + s.leak_sm3_per_h + s.linepack_rate_sm3_per_h;
        // Other station kinds replace the city gate's flows and pressures.
        let leak_fraction = if s.demand_sm3_per_h > 0.0 {
            s.leak_sm3_per_h / s.demand_sm3_per_h
        } else {
            0.0
        };
        let mut sub = |demand: f64, p_in: f64, t_in: f64, p_out: f64, t_out: f64| {
            s.demand_sm3_per_h = demand;
            s.leak_sm3_per_h = leak_fraction * demand;
            s.linepack_sm3 = 0.0;
            s.linepack_rate_sm3_per_h = 0.0;
            s.inlet_flow_sm3_per_h = demand + s.leak_sm3_per_h;
            s.inlet_pressure_kpa = p_in;
            s.inlet_temperature_c = t_in;
            s.outlet_pressure_kpa = p_out;
            s.outlet_temperature_c = t_out;
        };
        match &mut self.profile {
            Profile::CityGate => {}
            Profile::Cng(m) => {
                m.advance(t_prev, self.t_s);
                sub(
                    m.total_flow_sm3_per_h(),
                    m.inlet_kpa,
                    m.inlet_c,
                    m.discharge_kpa,
                    crate::profile::DISCHARGE_C,
                );
            }
            Profile::Lng(m) => {
                m.advance(t_prev, self.t_s);
                sub(
                    m.send_out_sm3_per_h,
                    m.tank_kpa,
                    m.ambient_c,
                    m.header_kpa,
                    m.vaporiser_out_c,
                );
            }
        }
        self.state = s;

        // Sample every meter in config order (fixed draw order = determinism).
        let k = self.noise_percent / 100.0;
        let mut readings = Vec::with_capacity(self.meters.len());
        let mut line_factors = Vec::with_capacity(self.meters.len());
        for mi in 0..self.meters.len() {
            let m = &self.meters[mi];
            let (total, p, t) = match m.role {
                MeterRole::Inlet => (
                    s.inlet_flow_sm3_per_h,
                    s.inlet_pressure_kpa,
                    s.inlet_temperature_c,
                ),
                MeterRole::Outlet => (
                    s.demand_sm3_per_h,
                    s.outlet_pressure_kpa,
                    s.outlet_temperature_c,
                ),
            };
            let flow = match (&self.profile, m.post) {
                (Profile::Cng(c), Some(k)) => c.posts.get(k).map_or(0.0, |p| p.flow_sm3_per_h),
                _ => total * m.share,
            };
            let flow = flow * (1.0 + m.bias_percent / 100.0);
            let flow = flow * (1.0 + k * self.gauss());
            // Line volume at the true line conditions (the meter measures
            // it; the daemon converts with its own noisy P and T).
            line_factors.push(line_per_base(p, t));
            let p = p * (1.0 + self.pressure_noise_percent / 100.0 * self.gauss());
            let t = t + 0.5 * self.noise_percent * self.gauss();
            readings.push((flow, p, t));
        }
        // What each meter's flow point serves, by its kind.
        let dt_h = (self.t_s - t_prev) / 3600.0;
        let mut served = Vec::with_capacity(readings.len());
        for ((m, &(f, _, _)), lf) in self.meters.iter_mut().zip(&readings).zip(&line_factors) {
            served.push(match m.kind {
                MeterKind::BaseFlow => f,
                MeterKind::LineFlow => f * lf,
                MeterKind::BaseTotaliser => m.add_to_total(f * dt_h),
                MeterKind::LineTotaliser => m.add_to_total(f * lf * dt_h),
            });
        }
        // Flow computers integrate their own readings into the archive.
        let clock = self.clock_start_s as f64;
        for a in &mut self.archives {
            if let Some(&(f, p, t)) = readings.get(a.meter_index) {
                a.accumulate(clock + t_prev, clock + self.t_s, f, p, t);
            }
        }
        // L-CNG signals of unmetered points, with meter noise, point order.
        let mut signals = vec![None; self.points.len()];
        if let Profile::Lng(m) = &self.profile {
            let m = m.clone();
            for (i, sig) in self
                .points
                .iter()
                .enumerate()
                .filter_map(|(i, p)| p.signal.map(|s| (i, s)))
                .collect::<Vec<_>>()
            {
                let v = m.signal(sig);
                signals[i] = Some(if sig.is_relative() {
                    v * (1.0 + self.pressure_noise_percent / 100.0 * self.gauss())
                } else {
                    v + 0.5 * self.noise_percent * self.gauss()
                });
            }
        }
        for (i, p) in self.points.iter_mut().enumerate() {
            let eng = match p.binding {
                None => signals[i].unwrap_or(0.0),
                Some(b) => {
                    let (_, pr, t) = readings[b.meter];
                    match b.quantity {
                        Quantity::Flow => served[b.meter],
                        Quantity::Pressure => pr,
                        Quantity::Temperature => t,
                    }
                }
            };
            let eng = match self.overrides.get(&i) {
                Some(o) => o.hold.unwrap_or(eng * o.scale + o.add),
                None => eng,
            };
            p.encoded = encode(eng, p.cfg.data_type, p.cfg.order, p.cfg.scale, p.cfg.offset);
        }
    }
}

fn check_leak(l: &Leak) -> Result<(), ConfigError> {
    if !l.percent.is_finite() || l.percent < 0.0 {
        return Err(ConfigError::Invalid {
            key: "leak.percent".into(),
            expected: "a finite number >= 0".into(),
        });
    }
    if l.end_after.is_some_and(|e| e <= l.start_after) {
        return Err(ConfigError::Invalid {
            key: "leak.end_after".into(),
            expected: "a time after leak.start_after".into(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CITY_GATE: &str = include_str!("../../config/city-gate.toml");

    fn station(opts: &SimOptions) -> Station {
        Station::from_config_str(CITY_GATE, opts).expect("example config builds")
    }

    fn run(s: &mut Station, steps: usize, dt: Duration) {
        for _ in 0..steps {
            s.step(dt);
        }
    }

    #[test]
    fn same_seed_same_values_other_seed_other_values() {
        let opts = SimOptions::default();
        let (mut a, mut b) = (station(&opts), station(&opts));
        let mut c = station(&SimOptions {
            seed: 2,
            ..SimOptions::default()
        });
        for _ in 0..50 {
            for s in [&mut a, &mut b, &mut c] {
                s.step(Duration::from_millis(700));
            }
            assert_eq!(a.values(), b.values());
            assert_eq!(a.physics(), b.physics());
        }
        assert_ne!(a.values(), c.values());
    }

    #[test]
    fn values_are_plausible() {
        let mut s = station(&SimOptions::default());
        run(&mut s, 10, Duration::from_secs(1));
        let v = |n: &str| s.true_value(n).expect("point exists");
        assert!((3300.0..3700.0).contains(&v("PT_IN1")), "{}", v("PT_IN1"));
        assert!((1450.0..1550.0).contains(&v("PT_OUT1")));
        assert!((1450.0..1550.0).contains(&v("PT_OUT2")));
        assert!((9.0..15.0).contains(&v("TT_IN1")));
        // JT: about 10 K colder at the outlet.
        assert!((v("TT_IN1") - v("TT_OUT1") - 10.0).abs() < 1.5);
        let out = v("FT_OUT1") + v("FT_OUT2");
        assert!((20_000.0..40_000.0).contains(&out), "{out}");
        assert!((v("FT_OUT1") / out - 0.6).abs() < 0.01);
        // Scaled integer points serve their quantisation step.
        assert!((v("PT_OUT2") * 10.0 - (v("PT_OUT2") * 10.0).round()).abs() < 1e-6);
        assert!(s.true_value("NOPE").is_none());
    }

    #[test]
    fn transients_ramp_demand_and_pack_by_a_tenth_of_a_megapascal() {
        let opts = SimOptions {
            noise_percent: 0.0,
            transients: true,
            pipe_volume_m3: 1960.0,
            ..SimOptions::default()
        };
        let mut s = station(&opts);
        let (mut pmin, mut pmax) = (f64::MAX, f64::MIN);
        let mut max_ramp: f64 = 0.0;
        let mut last = s.physics().demand_sm3_per_h;
        // 10-minute steps: the 300 s demand wiggle cancels, the ramp shows.
        for _ in 0..(7 * 6) {
            s.step(Duration::from_secs(600));
            let p = s.physics();
            pmin = pmin.min(p.outlet_pressure_kpa);
            pmax = pmax.max(p.outlet_pressure_kpa);
            max_ramp = max_ramp.max((p.demand_sm3_per_h - last).abs() * 6.0 / 30_000.0);
            last = p.demand_sm3_per_h;
        }
        assert!(
            pmax - pmin > 190.0,
            "set-point steps of +-100 kPa: {pmin}..{pmax}"
        );
        // +-30 %/h of the base demand plus the daily profile and wiggles.
        assert!(max_ramp > 0.25 && max_ramp < 0.6, "{max_ramp}");
    }

    #[test]
    fn balance_without_leak_is_pack_change() {
        let opts = SimOptions {
            noise_percent: 0.0,
            ..SimOptions::default()
        };
        let mut s = station(&opts);
        let pack0 = s.physics().linepack_sm3;
        let dt = Duration::from_secs(1);
        let (mut sum_in, mut sum_out) = (0.0, 0.0);
        let mut pack_moved = false;
        for _ in 0..3600 {
            s.step(dt);
            let p = s.physics();
            // Per step, physically exact.
            let resid = p.inlet_flow_sm3_per_h - p.demand_sm3_per_h - p.linepack_rate_sm3_per_h;
            assert!(resid.abs() < 1e-6, "{resid}");
            pack_moved |= p.linepack_rate_sm3_per_h.abs() > 1.0;
            // Served values (f32 quantisation only, noise off).
            let fin = s.true_value("FT_IN1").expect("point");
            let fout =
                s.true_value("FT_OUT1").expect("point") + s.true_value("FT_OUT2").expect("point");
            sum_in += fin / 3600.0;
            sum_out += fout / 3600.0;
        }
        assert!(pack_moved, "line pack should move with outlet pressure");
        let dpack = s.physics().linepack_sm3 - pack0;
        let resid = sum_in - sum_out - dpack;
        // Quantisation of FT_OUT2 (0.1 Sm3/h) and f32 rounding only.
        assert!(resid.abs() < 1.0, "imbalance {resid} Sm3 over an hour");
    }

    #[test]
    fn leak_of_five_percent_shows_in_the_balance() {
        let leak = Leak {
            start_after: Duration::from_secs(600),
            percent: 5.0,
            end_after: Some(Duration::from_secs(3000)),
        };
        let mut s = station(&SimOptions {
            leak: Some(leak),
            ..SimOptions::default()
        });
        let vol = |s: &mut Station, secs: usize| {
            let (mut i, mut o) = (0.0, 0.0);
            for _ in 0..secs {
                s.step(Duration::from_secs(1));
                i += s.true_value("FT_IN1").expect("point");
                o += s.true_value("FT_OUT1").expect("point")
                    + s.true_value("FT_OUT2").expect("point");
            }
            (i - o) / o
        };
        let before = vol(&mut s, 599);
        assert!(!s.physics().leak_active);
        assert!(before.abs() < 0.005, "{before}");
        let during = vol(&mut s, 1800);
        assert!(s.physics().leak_active);
        assert!((during - 0.05).abs() < 0.005, "{during}");
        vol(&mut s, 700);
        assert!(!s.physics().leak_active);
        let after = vol(&mut s, 600);
        assert!(after.abs() < 0.005, "{after}");
    }

    #[test]
    fn set_leak_counts_from_now_and_bias_applies() {
        let mut bias = BTreeMap::new();
        bias.insert("OUT1".to_string(), 1.0);
        let opts = SimOptions {
            noise_percent: 0.0,
            meter_bias_percent: bias,
            ..SimOptions::default()
        };
        let mut s = station(&opts);
        run(&mut s, 100, Duration::from_secs(1));
        s.set_leak(Some(Leak {
            start_after: Duration::from_secs(10),
            percent: 2.0,
            end_after: None,
        }))
        .expect("valid leak");
        run(&mut s, 9, Duration::from_secs(1));
        assert!(!s.physics().leak_active);
        s.step(Duration::from_secs(1));
        let p = s.physics();
        assert!(p.leak_active);
        assert!((p.leak_sm3_per_h / p.demand_sm3_per_h - 0.02).abs() < 1e-9);
        let out1 = s.true_value("FT_OUT1").expect("point");
        assert!(
            (out1 / (0.6 * p.demand_sm3_per_h) - 1.01).abs() < 1e-4,
            "{out1}"
        );
        assert!(
            s.set_leak(Some(Leak {
                start_after: Duration::ZERO,
                percent: f64::NAN,
                end_after: None
            }))
            .is_err()
        );
    }

    #[test]
    fn unreferenced_points_serve_zero() {
        let text = "[station]\nid = \"s\"\n[[devices]]\nid = \"d\"\nhost = \"h\"\nport = 1\nunit_id = 1\n\
                    [[devices.points]]\nname = \"X\"\nregister = \"holding\"\naddress = 0\ntype = \"i16\"\n";
        let mut s = Station::from_config_str(text, &SimOptions::default()).expect("valid");
        s.step(Duration::from_secs(5));
        assert_eq!(s.true_value("X"), Some(0.0));
    }

    #[test]
    fn read_registers_checks_addresses_and_reports_served_points() {
        let s = station(&SimOptions::default());
        let mut out = Vec::new();
        let mut served = Vec::new();
        // Device 2 (rtu-out2): holding 10..=13.
        s.read_registers(2, RegisterKind::Holding, 10, 4, &mut out, |n, v| {
            served.push((n.to_string(), v))
        })
        .expect("mapped range");
        assert_eq!(out.len(), 4);
        assert_eq!(served.len(), 3);
        assert_eq!(
            s.read_registers(2, RegisterKind::Holding, 9, 2, &mut out, |_, _| {}),
            Err(0x02)
        );
        assert_eq!(
            s.read_registers(2, RegisterKind::Input, 10, 1, &mut out, |_, _| {}),
            Err(0x02)
        );
        // Half of a 32-bit value: served but not logged as a point value.
        let mut n = 0;
        s.read_registers(2, RegisterKind::Holding, 11, 1, &mut out, |_, _| n += 1)
            .expect("mapped");
        assert_eq!(n, 0);
        assert_eq!(
            s.read_registers(2, RegisterKind::Holding, 65535, 2, &mut out, |_, _| {}),
            Err(0x02)
        );
    }
}
