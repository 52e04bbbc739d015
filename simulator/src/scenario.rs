//! Scenarios: a seeded TOML timeline of incidents and faults, applied to a
//! [`Station`] as simulated time passes, with the ground truth written as
//! JSON lines so detection can be scored (`gaswatch replay --compare`).
//!
//! ```toml
//! seed = 7
//! speed = 60.0                 # served mode: simulated seconds per wall second
//! start = "2026-01-01T00:00:00Z"   # offline mode: data time of sim time 0
//! duration = "6h"              # offline mode: how much to generate
//! step = "1s"                  # offline mode: sample period
//!
//! [[events]]
//! kind = "leak"                # leak | rupture | meter_drift | stuck_sensor
//! at = "1h"                    # | pressure_excursion | slam_shut | comm_outage
//! duration = "2h"              # | slow_response | exception | late_reply
//! size_percent = 5.0           # | dropped_connection
//! ramp = "10m"
//! ```
//!
//! Invariants: [`Runner::apply`] is a pure function of the scenario and the
//! simulated time (no clock, no randomness of its own), so the same scenario
//! and seed give the same station and the same truth on every run. Truth
//! timestamps are `epoch + sim_time / speed` in served mode (the clock the
//! daemon stamps samples with) and `start + sim_time` offline, so they are
//! always on the same time axis as the data they describe.
//!
//! Ground-truth lines: `{"type":"event","id","kind","phase":"start"|"end",
//! "t_ns","t","sim_s","detect",...}` for every incident edge (`detect` is
//! what should notice it: `imbalance` or a point name; absent when nothing
//! should alarm, e.g. a communication outage), `{"type":"values","t_ns",
//! "sim_s","physics":{..},"served":{..}}` every `truth_every`, and one
//! `{"type":"archive",...}` per hourly archive record as it closes (see
//! [`write_archive`]).

use crate::config::StationConfig;
use crate::physics::{Leak, PointOverride, Station};
use crate::server::Fault;
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::time::Duration;

/// Errors of scenario files and runs; each names the key or the file.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("{file}: {message}")]
    Parse { file: String, message: String },
    #[error("{file}: events[{index}] ({kind}): {message}")]
    Event {
        file: String,
        index: usize,
        kind: &'static str,
        message: String,
    },
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Sim(#[from] crate::SimError),
}

/// What an event does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Gas lost between the meters: `size_percent` of throughput, reached over `ramp`.
    Leak,
    /// A sudden large leak (default 50 %), no ramp.
    Rupture,
    /// A meter's `point` reads high by `percent_per_hour` more every hour.
    MeterDrift,
    /// `point` freezes at its value when the event starts.
    StuckSensor,
    /// `point` moves by `delta` (engineering unit), reached over `ramp`.
    PressureExcursion,
    /// The slam-shut valve trips: outlet flows (`points`) go to 0, `point` (outlet pressure) to 0.
    SlamShut,
    /// `device` does not answer at all.
    CommOutage,
    /// `device` answers after `delay` (below the daemon's timeout: slow but good).
    SlowResponse,
    /// `device` answers with Modbus exception `code`.
    Exception,
    /// `device` answers after `delay` longer than the daemon's timeout, so a
    /// late reply arrives on a later transaction (transaction-id desync).
    LateReply,
    /// `device` closes the connection on every request.
    DroppedConnection,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Leak => "leak",
            Kind::Rupture => "rupture",
            Kind::MeterDrift => "meter_drift",
            Kind::StuckSensor => "stuck_sensor",
            Kind::PressureExcursion => "pressure_excursion",
            Kind::SlamShut => "slam_shut",
            Kind::CommOutage => "comm_outage",
            Kind::SlowResponse => "slow_response",
            Kind::Exception => "exception",
            Kind::LateReply => "late_reply",
            Kind::DroppedConnection => "dropped_connection",
        }
    }

    fn needs_device(self) -> bool {
        matches!(
            self,
            Kind::CommOutage
                | Kind::SlowResponse
                | Kind::Exception
                | Kind::LateReply
                | Kind::DroppedConnection
        )
    }
}

/// One timeline entry.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EventSpec {
    /// What happens.
    pub kind: Kind,
    /// Id in the ground truth (default `<kind>-<n>`).
    pub id: Option<String>,
    /// Simulated time the event starts.
    #[serde(with = "humantime_serde")]
    pub at: Duration,
    /// How long it lasts (to the end of the run when absent).
    #[serde(default, with = "humantime_serde")]
    pub duration: Option<Duration>,
    /// Time to reach full size (leak, pressure excursion).
    #[serde(default, with = "humantime_serde")]
    pub ramp: Option<Duration>,
    /// Leak or rupture size, % of station throughput.
    pub size_percent: Option<f64>,
    /// The point affected (drift, stuck, excursion, slam-shut pressure).
    pub point: Option<String>,
    /// Further points (slam-shut: the outlet flows that go to zero).
    #[serde(default)]
    pub points: Vec<String>,
    /// Meter drift rate, % of reading per hour.
    pub percent_per_hour: Option<f64>,
    /// Pressure excursion, engineering units (kPa) added at full size.
    pub delta: Option<f64>,
    /// Device id (comm faults).
    pub device: Option<String>,
    /// Modbus exception code (exception).
    pub code: Option<u8>,
    /// Reply delay (slow_response, late_reply).
    #[serde(default, with = "humantime_serde")]
    pub delay: Option<Duration>,
}

/// A scenario file.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Seed of every random choice of the station (noise, phases).
    #[serde(default = "one")]
    pub seed: u64,
    /// Served mode: simulated seconds per wall-clock second.
    #[serde(default = "one_f")]
    pub speed: f64,
    /// Offline mode: data time (RFC 3339) of simulated time 0.
    pub start: Option<String>,
    /// Offline mode: simulated time to generate.
    #[serde(default, with = "humantime_serde")]
    pub duration: Option<Duration>,
    /// Offline mode: sample period.
    #[serde(default, with = "humantime_serde")]
    pub step: Option<Duration>,
    /// How often a `values` truth line is written (simulated time).
    #[serde(default, with = "humantime_serde")]
    pub truth_every: Option<Duration>,
    /// Meter noise, % of reading (default: the simulator's).
    pub noise_percent: Option<f64>,
    /// The timeline.
    #[serde(default)]
    pub events: Vec<EventSpec>,
}

fn one() -> u64 {
    1
}
fn one_f() -> f64 {
    1.0
}

impl Scenario {
    /// Parses and checks a scenario against the station it will run on.
    pub fn from_toml_str(
        text: &str,
        file: &str,
        station: &StationConfig,
    ) -> Result<Scenario, ScenarioError> {
        let s: Scenario = toml::from_str(text).map_err(|e| ScenarioError::Parse {
            file: file.to_string(),
            message: e.to_string(),
        })?;
        let points: BTreeSet<&str> = station
            .devices
            .iter()
            .flat_map(|d| d.points.iter().map(|p| p.name.as_str()))
            .collect();
        if !s.speed.is_finite() || s.speed <= 0.0 {
            return Err(ScenarioError::Parse {
                file: file.into(),
                message: "speed: expected a number > 0".into(),
            });
        }
        for (index, e) in s.events.iter().enumerate() {
            let bad = |message: String| ScenarioError::Event {
                file: file.into(),
                index,
                kind: e.kind.as_str(),
                message,
            };
            let point_needed = matches!(
                e.kind,
                Kind::MeterDrift | Kind::StuckSensor | Kind::PressureExcursion
            );
            if point_needed && e.point.is_none() {
                return Err(bad("`point` is required".into()));
            }
            for p in e.point.iter().chain(&e.points) {
                if !points.contains(p.as_str()) {
                    return Err(bad(format!("point `{p}` is not in the station config")));
                }
            }
            if e.kind.needs_device() {
                let d = e
                    .device
                    .as_deref()
                    .ok_or_else(|| bad("`device` is required".into()))?;
                if !station.devices.iter().any(|x| x.id == d) {
                    return Err(bad(format!("device `{d}` is not in the station config")));
                }
            }
            if e.kind == Kind::Leak && e.size_percent.is_none() {
                return Err(bad("`size_percent` is required".into()));
            }
            if e.size_percent.is_some_and(|v| !v.is_finite() || v < 0.0) {
                return Err(bad("`size_percent`: expected a number >= 0".into()));
            }
            if e.kind == Kind::MeterDrift && e.percent_per_hour.is_none() {
                return Err(bad("`percent_per_hour` is required".into()));
            }
            if e.kind == Kind::PressureExcursion && e.delta.is_none() {
                return Err(bad("`delta` is required".into()));
            }
            if e.kind == Kind::Exception && e.code.is_none() {
                return Err(bad(
                    "`code` is required (e.g. 4 device failure, 6 busy)".into()
                ));
            }
            if matches!(e.kind, Kind::SlowResponse | Kind::LateReply) && e.delay.is_none() {
                return Err(bad("`delay` is required".into()));
            }
        }
        Ok(s)
    }
}

/// A truth event edge.
#[derive(Debug, Clone, PartialEq)]
pub struct Edge {
    pub id: String,
    pub kind: Kind,
    pub start: bool,
    pub sim_s: f64,
    pub detect: Option<String>,
    pub size_percent: Option<f64>,
}

/// Applies a scenario to a station as simulated time passes.
#[derive(Debug, Clone)]
pub struct Runner {
    scenario: Scenario,
    ids: Vec<String>,
    active: Vec<bool>,
    /// Stuck values captured at event start.
    held: BTreeMap<usize, f64>,
    /// Device ids, config order.
    devices: Vec<String>,
    /// Device id -> its points.
    device_points: BTreeMap<String, Vec<String>>,
}

impl Runner {
    pub fn new(scenario: Scenario, station: &StationConfig) -> Runner {
        let mut counts: BTreeMap<Kind, usize> = BTreeMap::new();
        let ids = scenario
            .events
            .iter()
            .map(|e| {
                let n = counts.entry(e.kind).or_default();
                *n += 1;
                e.id.clone()
                    .unwrap_or_else(|| format!("{}-{n}", e.kind.as_str()))
            })
            .collect();
        Runner {
            active: vec![false; scenario.events.len()],
            ids,
            held: BTreeMap::new(),
            devices: station.devices.iter().map(|d| d.id.clone()).collect(),
            device_points: station
                .devices
                .iter()
                .map(|d| {
                    (
                        d.id.clone(),
                        d.points.iter().map(|p| p.name.clone()).collect(),
                    )
                })
                .collect(),
            scenario,
        }
    }

    pub fn scenario(&self) -> &Scenario {
        &self.scenario
    }

    fn is_on(e: &EventSpec, t: f64) -> bool {
        let start = e.at.as_secs_f64();
        t >= start && e.duration.is_none_or(|d| t < start + d.as_secs_f64())
    }

    /// Fraction of full size at `t` (ramps linearly from the start).
    fn size_at(e: &EventSpec, t: f64) -> f64 {
        match e.ramp {
            Some(r) if !r.is_zero() => ((t - e.at.as_secs_f64()) / r.as_secs_f64()).clamp(0.0, 1.0),
            _ => 1.0,
        }
    }

    /// Brings the station to the scenario's state at simulated time `t_s`:
    /// leak, point overrides. Returns the incident edges crossed since the
    /// last call and the Modbus fault each device (by id) should serve now.
    pub fn apply(
        &mut self,
        station: &mut Station,
        t_s: f64,
    ) -> (Vec<Edge>, BTreeMap<String, Fault>) {
        let mut edges = Vec::new();
        let mut leak = 0.0;
        let mut overrides: BTreeMap<String, PointOverride> = BTreeMap::new();
        let mut faults: BTreeMap<String, Fault> = self
            .devices
            .iter()
            .map(|d| (d.clone(), Fault::None))
            .collect();
        for (i, e) in self.scenario.events.iter().enumerate() {
            let on = Self::is_on(e, t_s);
            if on != self.active[i] {
                self.active[i] = on;
                let detect = match e.kind {
                    Kind::Leak | Kind::Rupture => Some("imbalance".to_string()),
                    Kind::PressureExcursion | Kind::SlamShut => e.point.clone(),
                    _ => None,
                };
                edges.push(Edge {
                    id: self.ids[i].clone(),
                    kind: e.kind,
                    start: on,
                    sim_s: t_s,
                    detect,
                    size_percent: e.size_percent,
                });
                if on
                    && e.kind == Kind::StuckSensor
                    && let Some(v) = e.point.as_deref().and_then(|p| station.true_value(p))
                {
                    self.held.insert(i, v);
                }
            }
            if !on {
                continue;
            }
            let frac = Self::size_at(e, t_s);
            let ov = |o: &mut BTreeMap<String, PointOverride>, p: &str| {
                *o.entry(p.to_string()).or_insert(PointOverride {
                    hold: None,
                    scale: 1.0,
                    add: 0.0,
                })
            };
            let unit = e.device.clone().filter(|d| self.devices.contains(d));
            match e.kind {
                Kind::Leak => leak += e.size_percent.unwrap_or(0.0) * frac,
                Kind::Rupture => leak += e.size_percent.unwrap_or(50.0),
                Kind::MeterDrift => {
                    let p = e.point.as_deref().unwrap_or("");
                    let hours = (t_s - e.at.as_secs_f64()) / 3600.0;
                    let mut o = ov(&mut overrides, p);
                    o.scale *= 1.0 + e.percent_per_hour.unwrap_or(0.0) * hours / 100.0;
                    overrides.insert(p.into(), o);
                }
                Kind::StuckSensor => {
                    let p = e.point.as_deref().unwrap_or("");
                    let mut o = ov(&mut overrides, p);
                    o.hold = self.held.get(&i).copied();
                    overrides.insert(p.into(), o);
                }
                Kind::PressureExcursion => {
                    let p = e.point.as_deref().unwrap_or("");
                    let mut o = ov(&mut overrides, p);
                    o.add += e.delta.unwrap_or(0.0) * frac;
                    overrides.insert(p.into(), o);
                }
                Kind::SlamShut => {
                    for p in e.point.iter().chain(&e.points) {
                        let mut o = ov(&mut overrides, p);
                        o.hold = Some(0.0);
                        overrides.insert(p.clone(), o);
                    }
                }
                Kind::CommOutage => {
                    if let Some(u) = unit {
                        faults.insert(u, Fault::NoResponse);
                    }
                }
                Kind::SlowResponse | Kind::LateReply => {
                    if let Some(u) = unit {
                        faults.insert(u, Fault::Delay(e.delay.unwrap_or_default()));
                    }
                }
                Kind::Exception => {
                    if let Some(u) = unit {
                        faults.insert(u, Fault::Exception(e.code.unwrap_or(4)));
                    }
                }
                Kind::DroppedConnection => {
                    if let Some(u) = unit {
                        faults.insert(u, Fault::CloseConnection);
                    }
                }
            }
        }
        let leak = (leak > 0.0).then_some(Leak {
            start_after: Duration::ZERO,
            percent: leak,
            end_after: None,
        });
        // A leak of a finite size >= 0 is always accepted.
        let _ = station.set_leak(leak);
        for points in self.device_points.values() {
            for p in points {
                station.set_override(p, overrides.get(p).copied());
            }
        }
        (edges, faults)
    }

    /// Points that have no sample offline at `t_s` because their device
    /// does not answer with data (outage, exception, late reply, dropped).
    pub fn silent_points(&self, t_s: f64) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for e in &self.scenario.events {
            let silent = matches!(
                e.kind,
                Kind::CommOutage | Kind::Exception | Kind::LateReply | Kind::DroppedConnection
            );
            if silent
                && Self::is_on(e, t_s)
                && let Some(ps) = e.device.as_ref().and_then(|d| self.device_points.get(d))
            {
                out.extend(ps.iter().cloned());
            }
        }
        out
    }
}

/// Writes one truth edge as a JSON line.
pub fn write_edge(w: &mut dyn Write, e: &Edge, t_ns: i64) -> std::io::Result<()> {
    let mut v = serde_json::json!({
        "type": "event",
        "id": e.id,
        "kind": e.kind.as_str(),
        "phase": if e.start { "start" } else { "end" },
        "t_ns": t_ns,
        "t": rfc3339(t_ns),
        "sim_s": e.sim_s,
    });
    if e.start {
        if let Some(d) = &e.detect {
            v["detect"] = d.clone().into();
        }
        if let Some(s) = e.size_percent {
            v["size_percent"] = s.into();
        }
    }
    writeln!(w, "{v}")
}

/// Writes one truth `values` line: physics and served values.
pub fn write_values(w: &mut dyn Write, station: &Station, t_ns: i64) -> std::io::Result<()> {
    let p = station.physics();
    let v = serde_json::json!({
        "type": "values",
        "t_ns": t_ns,
        "t": rfc3339(t_ns),
        "sim_s": p.sim_time.as_secs_f64(),
        "physics": {
            "demand_sm3_per_h": p.demand_sm3_per_h,
            "leak_sm3_per_h": p.leak_sm3_per_h,
            "inlet_flow_sm3_per_h": p.inlet_flow_sm3_per_h,
            "linepack_sm3": p.linepack_sm3,
            "inlet_pressure_kpa": p.inlet_pressure_kpa,
            "outlet_pressure_kpa": p.outlet_pressure_kpa,
            "outlet_temperature_c": p.outlet_temperature_c,
        },
        "served": station.values(),
        "profile": station.profile().truth_json(),
    });
    writeln!(w, "{v}")
}

/// Writes every archive record closed since the last call (per device,
/// after the index in `written`) as a truth line:
/// `{"type":"archive","device","meter","index","hour_end_s","t","base_volume_sm3",
/// "flowing_volume_m3","pressure_kpa","temperature_c"}` (the values served).
pub fn write_archive(
    w: &mut dyn Write,
    station: &Station,
    written: &mut BTreeMap<String, u32>,
) -> std::io::Result<()> {
    for a in station.archives() {
        let last = written.entry(a.device.clone()).or_insert(0);
        let from = *last;
        for r in a.records().iter().filter(|r| r.index > from) {
            let v = serde_json::json!({
                "type": "archive",
                "device": a.device,
                "meter": a.meter,
                "index": r.index,
                "hour_end_s": r.hour_end_s,
                "t": rfc3339(r.hour_end_s.saturating_mul(1_000_000_000)),
                "base_volume_sm3": r.base_volume_sm3,
                "flowing_volume_m3": r.flowing_volume_m3,
                "pressure_kpa": r.pressure_kpa,
                "temperature_c": r.temperature_c,
            });
            writeln!(w, "{v}")?;
            *last = r.index;
        }
    }
    Ok(())
}

fn rfc3339(t_ns: i64) -> String {
    let t = if t_ns >= 0 {
        std::time::UNIX_EPOCH + Duration::from_nanos(t_ns as u64)
    } else {
        std::time::UNIX_EPOCH
    };
    humantime::format_rfc3339_millis(t).to_string()
}

/// Parses `start` (RFC 3339, UTC) to ns since the epoch.
pub fn parse_start(s: &str) -> Result<i64, String> {
    let t = humantime::parse_rfc3339_weak(s.trim_end_matches('Z'))
        .map_err(|e| format!("start `{s}`: {e}"))?;
    let d = t
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| format!("start `{s}` is before 1970"))?;
    i64::try_from(d.as_nanos()).map_err(|_| format!("start `{s}` is too far away"))
}

/// Offline mode: runs the scenario on `station` from sim time 0 for
/// `duration` at `step`, writing a wide CSV (`time` in epoch ms, one column
/// per point; empty where the device would not answer) and the ground truth.
/// Deterministic: same scenario, station and seed -> same bytes.
/// The data time span of an offline run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Span {
    /// Data time (ns since the epoch) of simulated time 0.
    pub start_ns: i64,
    /// Simulated time to generate.
    pub duration: Duration,
    /// Sample period.
    pub step: Duration,
}

pub fn generate_offline(
    station: &mut Station,
    runner: &mut Runner,
    station_cfg: &StationConfig,
    span: Span,
    csv: &mut dyn Write,
    truth: &mut dyn Write,
) -> Result<u64, ScenarioError> {
    let Span {
        start_ns,
        duration,
        step,
    } = span;
    let points: Vec<&str> = station_cfg
        .devices
        .iter()
        .flat_map(|d| d.points.iter().map(|p| p.name.as_str()))
        .collect();
    write!(csv, "time")?;
    for p in &points {
        write!(csv, ",{p}")?;
    }
    writeln!(csv)?;
    let step_s = step.as_secs_f64().max(0.001);
    let every = runner
        .scenario()
        .truth_every
        .unwrap_or(Duration::from_secs(60))
        .as_secs_f64()
        .max(step_s);
    let n = (duration.as_secs_f64() / step_s).floor() as u64;
    let mut next_values = 0.0;
    let mut rows = 0;
    let mut archived = BTreeMap::new();
    for k in 0..=n {
        let t_s = k as f64 * step_s;
        if k > 0 {
            station.step(step);
        }
        let t_ns = start_ns + (t_s * 1e9).round() as i64;
        let (edges, _) = runner.apply(station, t_s);
        for e in &edges {
            write_edge(truth, e, t_ns)?;
        }
        if t_s >= next_values {
            write_values(truth, station, t_ns)?;
            next_values += every;
        }
        write_archive(truth, station, &mut archived)?;
        let silent = runner.silent_points(t_s);
        write!(csv, "{}", t_ns / 1_000_000)?;
        for p in &points {
            match station.true_value(p) {
                Some(v) if !silent.contains(*p) => write!(csv, ",{v}")?,
                _ => write!(csv, ",")?,
            }
        }
        writeln!(csv)?;
        rows += 1;
    }
    Ok(rows)
}
