//! The station configuration: serde structs (unknown keys rejected), a pure
//! [`Config::validate`] that reports every problem at once, and loading from
//! a file with errors that name the file, the key and what was expected.
//!
//! Component configs live beside their component (`sources/modbus/config.rs`,
//! `sinks/*/config.rs`, `buffer/config.rs`); this module assembles them.

pub mod alarms;
mod secret;
mod validate;

pub use alarms::{AlarmsConfig, DigitalAlarmConfig};
pub use secret::{Secret, SecretString, warn_if_exposed};

use crate::buffer::config::SpoolConfig;
use crate::sinks::file::config::FileSinkConfig;
use crate::sinks::influxdb::config::InfluxConfig;
use crate::sinks::mqtt::config::MqttConfig;
use crate::sinks::sparkplug::config::SparkplugConfig;
use crate::sources::modbus::{DeviceConfig, ModbusConfig, PointMapConfig};
use crate::sources::mqtt::config::MqttSourceConfig;
use serde::Deserialize;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The station this gateway serves.
    pub station: StationConfig,
    /// Settings of all Modbus devices (`[modbus]`: poll stagger).
    #[serde(default)]
    pub modbus: ModbusConfig,
    /// Modbus/TCP devices and their points.
    #[serde(default)]
    pub devices: Vec<DeviceConfig>,
    /// Register maps shared by identical devices (`point_map` of a device).
    /// Expanded into each device's points when the file is loaded.
    #[serde(default)]
    pub point_maps: Vec<PointMapConfig>,
    /// MQTT telemetry sources (JSON or Sparkplug B) and their points.
    #[serde(default)]
    pub mqtt_sources: Vec<MqttSourceConfig>,
    /// Meters: which flow, pressure and temperature points form a metering run.
    #[serde(default)]
    pub meters: Vec<MeterConfig>,
    /// The station gas balance (输差).
    #[serde(default)]
    pub balance: BalanceConfig,
    /// Gas properties: base conditions, atmospheric pressure, Z method.
    #[serde(default)]
    pub gas: crate::engine::gas::GasConfig,
    /// Line-pack elements of the balance (station pipework, pipe segments,
    /// spheres, cylinder banks): gas stored in them is not a leak.
    #[serde(default)]
    pub linepack: Vec<LinepackConfig>,
    /// HH/H/L/LL alarm limits on points.
    #[serde(default)]
    pub limits: Vec<LimitConfig>,
    /// Alarm management: re-alarm, escalation, flood, chattering, journal.
    #[serde(default)]
    pub alarms: AlarmsConfig,
    /// Alarms on discrete states (slam-shut valve, gas detector, door).
    #[serde(default)]
    pub digital_alarms: Vec<DigitalAlarmConfig>,
    /// Where results go.
    #[serde(default)]
    pub sinks: SinksConfig,
    /// The durable spool in front of the remote sinks.
    #[serde(default)]
    pub spool: SpoolConfig,
    /// The operator HTTP endpoint (`/health`, `/metrics`); absent: none.
    #[serde(default)]
    pub http: Option<crate::telemetry::config::HttpConfig>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StationConfig {
    /// Short station id used in topics, tags and alarm ids, e.g. "cg01"
    /// (letters, digits, '-', '_').
    pub id: String,
    /// Human-readable name, e.g. "North city gate".
    #[serde(default)]
    pub name: String,
    /// Kind of station.
    pub kind: StationKind,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum StationKind {
    /// City-gate / pressure-regulating station (门站).
    CityGate,
    /// Storage and distribution station (储配站).
    StorageDistribution,
    /// CNG mother station (CNG母站).
    CngMother,
    /// LNG station.
    Lng,
    /// L-CNG station.
    Lcng,
}

impl StationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StationKind::CityGate => "city_gate",
            StationKind::StorageDistribution => "storage_distribution",
            StationKind::CngMother => "cng_mother",
            StationKind::Lng => "lng",
            StationKind::Lcng => "lcng",
        }
    }
}

/// Whether a meter feeds gas into the balance or takes it out.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum MeterRole {
    Inlet,
    Outlet,
}

/// A metering run.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MeterConfig {
    /// Meter name, unique in the station, e.g. "IN1".
    pub name: String,
    /// "inlet" or "outlet".
    pub role: MeterRole,
    /// Point giving the flow (Sm³/h or m³/h) or totaliser (Sm³ or m³),
    /// as `kind` says.
    pub flow: String,
    /// Point giving the line pressure (kPa; needed for line-condition kinds).
    pub pressure: Option<String>,
    /// Point giving the line temperature (degC; needed for line-condition kinds).
    pub temperature: Option<String>,
    /// What `flow` measures: "base_flow" (default, Sm³/h), "line_flow"
    /// (m³/h at line P and T, converted with `[gas]`), "base_totaliser"
    /// (Sm³) or "line_totaliser" (m³ at line conditions).
    #[serde(default)]
    pub kind: MeterKind,
    /// Whether `pressure` is gauge (default; `[gas] atmospheric_pressure_kpa`
    /// is added) or absolute.
    #[serde(default = "default_true")]
    pub pressure_gauge: bool,
    /// Value at which a totaliser rolls over to 0 (e.g. 100000000). A
    /// decrease that is not a rollover is a meter reset: that interval is
    /// left out (never a spike).
    pub rollover: Option<f64>,
    /// The meter's expanded uncertainty (k = 2, %), as on its data sheet.
    /// Propagated into the 输差率 uncertainty. Default 1.
    #[serde(default = "default_meter_uncertainty")]
    pub uncertainty_percent: f64,
}

/// What a meter's `flow` point measures.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum MeterKind {
    /// Flow rate at base conditions, Sm³/h (a flow computer's corrected flow).
    #[default]
    BaseFlow,
    /// Flow rate at line conditions, m³/h: corrected here (AGA 7).
    LineFlow,
    /// Totaliser at base conditions, Sm³.
    BaseTotaliser,
    /// Totaliser at line conditions, m³: each delta corrected here.
    LineTotaliser,
}

impl MeterKind {
    pub fn is_totaliser(self) -> bool {
        matches!(self, MeterKind::BaseTotaliser | MeterKind::LineTotaliser)
    }
    pub fn is_line(self) -> bool {
        matches!(self, MeterKind::LineFlow | MeterKind::LineTotaliser)
    }
}

fn default_true() -> bool {
    true
}
fn default_meter_uncertainty() -> f64 {
    1.0
}

/// A line-pack element: a geometric volume whose stored gas is tracked from
/// a pressure and a temperature point that represent it.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LinepackConfig {
    /// Element name, e.g. "station-pipework".
    pub name: String,
    /// Geometric (water) volume, m³.
    pub volume_m3: f64,
    /// Pressure point representing the element (kPa).
    pub pressure: String,
    /// Temperature point representing the element (degC).
    pub temperature: String,
    /// Whether `pressure` is gauge (default) or absolute.
    #[serde(default = "default_true")]
    pub pressure_gauge: bool,
    /// Expanded uncertainty of the line-pack change, % of the change. Default 2.
    #[serde(default = "default_linepack_uncertainty")]
    pub uncertainty_percent: f64,
    /// Rupture alarm when the pressure falls faster than this (kPa per
    /// minute, between two consecutive good scans). None: no rupture detector.
    pub rupture_kpa_per_min: Option<f64>,
}

fn default_linepack_uncertainty() -> f64 {
    2.0
}

/// The station balance: inlet meters minus outlet meters over fixed windows.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BalanceConfig {
    /// Window length, aligned to the epoch (e.g. "5m" closes at :00, :05, ...).
    #[serde(default = "default_window", with = "humantime_serde")]
    pub window: Duration,
    /// 输差率 limit in percent of inlet volume; above it an imbalance alarm is raised.
    #[serde(default = "default_limit_percent")]
    pub limit_percent: f64,
    /// Fraction of the window every meter must have good data for the
    /// result to be judged (below it: no alarm, quality uncertain or bad).
    #[serde(default = "default_min_coverage")]
    pub min_coverage: f64,
    /// Half-width of smoothed edges for the reported windows (`window`,
    /// `longer_windows`, the gas day): the line pack at a window edge is
    /// its average over `[edge - this, edge + this]` and the flows are
    /// weighted to match, so one noisy pressure or temperature scan at a
    /// boundary no longer moves the 输差 of two windows (see
    /// `docs/leak-detection.md`). Windows then close this much later, and a
    /// window's volumes are weighted over its edges (consecutive windows
    /// still add up exactly). "0s": sharp edges, each window the exact
    /// integral over `[start, end)` with the pack of the last scan before
    /// each boundary. At most a quarter of `window`; at least two scans of
    /// the line-pack points are used. Default "0s" (sharp).
    #[serde(default, with = "humantime_serde")]
    pub edge: Option<Duration>,
    /// Longer windows computed beside `window`, epoch-aligned. Default:
    /// ["1h"] when `window` is shorter than an hour, else none.
    #[serde(default, deserialize_with = "durations")]
    pub longer_windows: Option<Vec<Duration>>,
    /// Also balance the gas day (24 h starting at `contract_hour`). Default true.
    #[serde(default = "default_true")]
    pub gas_day: bool,
    /// Local hour (0-23) at which the gas day starts (contract hour). Default 8.
    #[serde(default = "default_contract_hour")]
    pub contract_hour: u8,
    /// Offset of local time from UTC in hours, for the gas day. Default 8 (China).
    #[serde(default = "default_utc_offset")]
    pub utc_offset_hours: i8,
    /// The sequential leak test on the shortest window's residual.
    #[serde(default)]
    pub leak: LeakConfig,
    /// Balance groups (`[[balance.groups]]`), each balanced on its own with
    /// the windows, gas day and leak-test tuning above. None (the default):
    /// one group, id "station", of every meter by its `role` and every
    /// `[[linepack]]` element.
    #[serde(default)]
    pub groups: Vec<BalanceGroupConfig>,
}

/// One balance group: some inlet and outlet meters and line-pack elements
/// balanced on their own (one pipeline of a city gate, the spheres of a
/// storage station, the LNG side of an L-CNG station). A meter's role in
/// a group is the list it is in, whatever its `role`; a meter or element
/// may be in several groups (a station total beside per-line groups).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BalanceGroupConfig {
    /// Short id, unique in the station: 1-23 letters, digits, '_' or '-'
    /// (an InfluxDB tag and part of the group's alarm ids). The id
    /// "station" keeps the series and alarm ids of a station without groups.
    pub id: String,
    /// Name shown in reports, e.g. "Line A (DN500 to Nanzhuang)". Default: the id.
    pub name: Option<String>,
    /// Names of the meters (`[[meters]] name`) that feed gas into the group.
    #[serde(default)]
    pub inlet: Vec<String>,
    /// Names of the meters that take gas out of the group.
    #[serde(default)]
    pub outlet: Vec<String>,
    /// Names of the `[[linepack]]` elements inside the group.
    #[serde(default)]
    pub linepack: Vec<String>,
    /// 输差率 limit of this group, %. Default: `balance.limit_percent`.
    pub limit_percent: Option<f64>,
    /// Run the leak test on this group. Default: `balance.leak.enabled`.
    pub leak: Option<bool>,
}

/// The sequential (CUSUM) leak test; see `src/engine/leak.rs`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LeakConfig {
    /// Run the leak test. Default true.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Smallest leak the test is tuned for, % of throughput (the CUSUM
    /// reference value is half of it); the default of every entry of
    /// `tests`. Default 0.5.
    #[serde(default = "default_leak_min")]
    pub min_leak_percent: f64,
    /// Alarm threshold of the CUSUM, in standard deviations of the
    /// residual; the default of every entry of `tests`. Default 8.
    #[serde(default = "default_leak_threshold")]
    pub threshold_sigma: f64,
    /// Windows over which the meter bias is learned (exponential average
    /// weight 1/n), per test. Default 288 (one day of 5-minute windows).
    #[serde(default = "default_bias_windows")]
    pub bias_windows: u32,
    /// The test's own balance windows (epoch-aligned, smoothed edges, not
    /// reported), each with its own CUSUM so big leaks are caught fast and
    /// small ones eventually. Default: 1 min tuned for 2 % leaks, 5 min
    /// and 1 h with the section's defaults.
    #[serde(default = "default_leak_tests")]
    pub tests: Vec<LeakTestConfig>,
}

/// One leak-test window length and its CUSUM tuning.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LeakTestConfig {
    /// Window length, e.g. "1m" (epoch-aligned).
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// Smallest leak this window is tuned for, % of throughput. Default:
    /// `balance.leak.min_leak_percent`.
    pub min_leak_percent: Option<f64>,
    /// CUSUM threshold in sigmas. Default: `balance.leak.threshold_sigma`.
    pub threshold_sigma: Option<f64>,
    /// Half-width of the smoothed window edges: the line pack at a window
    /// edge is its average over `[edge - this, edge + this]` and the flows
    /// are weighted to match (an exact balance with a fraction of the noise
    /// of one scan), at the cost of closing the window this much later.
    /// Default and maximum: a quarter of `window`; at least two scans of
    /// the line-pack points.
    #[serde(default, with = "humantime_serde")]
    pub edge: Option<Duration>,
}

impl Default for LeakConfig {
    fn default() -> Self {
        LeakConfig {
            enabled: true,
            min_leak_percent: default_leak_min(),
            threshold_sigma: default_leak_threshold(),
            bias_windows: default_bias_windows(),
            tests: default_leak_tests(),
        }
    }
}

fn default_leak_tests() -> Vec<LeakTestConfig> {
    vec![
        LeakTestConfig {
            window: Duration::from_secs(60),
            min_leak_percent: Some(2.0),
            threshold_sigma: None,
            edge: None,
        },
        LeakTestConfig {
            window: Duration::from_secs(300),
            min_leak_percent: None,
            threshold_sigma: None,
            edge: None,
        },
        LeakTestConfig {
            window: Duration::from_secs(3600),
            min_leak_percent: None,
            threshold_sigma: None,
            edge: None,
        },
    ]
}
fn default_leak_min() -> f64 {
    0.5
}
fn default_leak_threshold() -> f64 {
    8.0
}
fn default_bias_windows() -> u32 {
    288
}
/// A list of humantime durations, e.g. `["1h", "8h"]`.
fn durations<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<Duration>>, D::Error> {
    let v: Vec<String> = Vec::deserialize(d)?;
    v.iter()
        .map(|s| humantime::parse_duration(s).map_err(serde::de::Error::custom))
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

impl BalanceConfig {
    /// The reported windows' edge half-width in effect (zero: sharp).
    pub fn edge(&self) -> Duration {
        self.edge.unwrap_or(Duration::ZERO)
    }

    /// The longer windows in effect (the default depends on `window`).
    pub fn longer_windows(&self) -> Vec<Duration> {
        match &self.longer_windows {
            Some(v) => v.clone(),
            None if self.window < Duration::from_secs(3600) => vec![Duration::from_secs(3600)],
            None => Vec::new(),
        }
    }
}
fn default_contract_hour() -> u8 {
    8
}
fn default_utc_offset() -> i8 {
    8
}

impl Default for BalanceConfig {
    fn default() -> Self {
        BalanceConfig {
            window: default_window(),
            limit_percent: default_limit_percent(),
            min_coverage: default_min_coverage(),
            edge: None,
            longer_windows: None,
            gas_day: true,
            contract_hour: default_contract_hour(),
            utc_offset_hours: default_utc_offset(),
            leak: LeakConfig::default(),
            groups: Vec::new(),
        }
    }
}

fn default_window() -> Duration {
    Duration::from_secs(300)
}
fn default_limit_percent() -> f64 {
    1.0
}
fn default_min_coverage() -> f64 {
    0.9
}

/// Alarm limits on one point, in the point's engineering unit.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LimitConfig {
    /// The point watched.
    pub point: String,
    /// High-high limit (priority high).
    pub hh: Option<f64>,
    /// High limit (priority medium).
    pub h: Option<f64>,
    /// Low limit (priority medium).
    pub l: Option<f64>,
    /// Low-low limit (priority high).
    pub ll: Option<f64>,
    /// Hysteresis: a high alarm clears below `limit - deadband`, a low alarm
    /// above `limit + deadband`. Default: `[alarms] deadband_percent` for the
    /// point's quantity, of its range (`min`..`max`, else the span between
    /// the outermost limits).
    pub deadband: Option<f64>,
    /// Rate-of-change limit in units per minute (magnitude); raises a `ROC` alarm.
    pub rate_per_min: Option<f64>,
    /// Raise a `QUALITY` alarm while the point's data is bad.
    #[serde(default)]
    pub quality_alarm: bool,
    /// On-delay of these alarms (default `[alarms] on_delay`).
    #[serde(default, with = "humantime_serde")]
    pub on_delay: Option<Duration>,
    /// Off-delay of these alarms (default `[alarms] off_delay`).
    #[serde(default, with = "humantime_serde")]
    pub off_delay: Option<Duration>,
    /// Alarms need an operator reset after returning to normal.
    #[serde(default)]
    pub latch: bool,
    /// Suppressed by design while this point's last good value is non-zero
    /// (e.g. a maintenance-mode flag); still evaluated and journaled.
    pub suppressed_by: Option<String>,
    /// Taken out of service: evaluated and journaled, never annunciated.
    #[serde(default)]
    pub out_of_service: bool,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SinksConfig {
    /// Local files: line protocol and JSON lines (the embedded default).
    pub file: Option<FileSinkConfig>,
    /// InfluxDB over HTTP (v1 or v2 API).
    pub influxdb: Option<InfluxConfig>,
    /// MQTT dispatch publisher: alarms and station status to the dispatch centre.
    pub mqtt: Option<MqttConfig>,
    /// gaswatch as a Sparkplug B edge node: points and alarms to a SCADA host.
    pub sparkplug: Option<SparkplugConfig>,
}

/// One thing wrong with a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key path, e.g. `devices[1].points[0].type`.
    pub key: String,
    /// Line number (1-based) when known.
    pub line: Option<usize>,
    /// What is wrong and what was expected.
    pub message: String,
}

/// A configuration could not be used; holds every problem found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}", self.file.display())?;
            if let Some(line) = p.line {
                write!(f, ":{line}")?;
            }
            if p.key.is_empty() {
                write!(f, ": {}", p.message)?;
            } else {
                write!(f, ": {}: {}", p.key, p.message)?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            problems: vec![Problem {
                key: String::new(),
                line: None,
                message: format!("cannot read the file: {e}"),
            }],
        })?;
        Config::from_str_named(&text, path)
    }

    /// Parses and validates config text; `name` is used in error messages.
    pub fn from_str_named(text: &str, name: &Path) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| ConfigError {
            file: name.to_path_buf(),
            problems: vec![parse_problem(text, &e)],
        })?;
        let (mut problems, origins) = config.expand_point_maps();
        if problems.is_empty() {
            problems = config.validate();
            for p in &mut problems {
                origins.rename(p);
            }
        }
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError {
                file: name.to_path_buf(),
                problems,
            })
        }
    }

    /// Adds each device's `point_map` points to its own (named
    /// `point_prefix` + name); problems for unknown or repeated map names.
    fn expand_point_maps(&mut self) -> (Vec<Problem>, MapOrigins) {
        let mut problems = Vec::new();
        let mut origins = MapOrigins::default();
        for (mi, m) in self.point_maps.iter().enumerate() {
            if self.point_maps[..mi].iter().any(|o| o.name == m.name) {
                problems.push(Problem {
                    key: format!("point_maps[{mi}].name"),
                    line: None,
                    message: format!(
                        "a name not used by another point map (`{}` repeats)",
                        m.name
                    ),
                });
            }
        }
        for (di, d) in self.devices.iter_mut().enumerate() {
            let Some(map_name) = &d.point_map else {
                continue;
            };
            let Some((mi, map)) = self
                .point_maps
                .iter()
                .enumerate()
                .find(|(_, m)| &m.name == map_name)
            else {
                let known: Vec<&str> = self.point_maps.iter().map(|m| m.name.as_str()).collect();
                problems.push(Problem {
                    key: format!("devices[{di}].point_map"),
                    line: None,
                    message: format!(
                        "the name of a [[point_maps]] entry (no map `{map_name}`; maps: {})",
                        if known.is_empty() {
                            "none".to_string()
                        } else {
                            known.join(", ")
                        }
                    ),
                });
                continue;
            };
            origins.0.push((di, d.points.len(), mi, d.id.clone()));
            d.points.reserve(map.points.len());
            for p in &map.points {
                let mut p = p.clone();
                p.name =
                    gaswatch_sim::config::map_point_name(&d.id, d.point_prefix.as_deref(), &p.name);
                d.points.push(p);
            }
        }
        (problems, origins)
    }

    /// Takes back out of each device the points its `point_map` added
    /// (they follow the device's own points, see `expand_point_maps`),
    /// leaving the config as written. The expansion depends only on the
    /// device's own fields and `point_maps`, so two folded configs are
    /// equal exactly when the expanded ones are: a running daemon keeps
    /// the folded config to compare with a reloaded one, without a copy of
    /// every map point of every device. [`Config::unfold_point_maps`]
    /// puts them back.
    pub fn fold_point_maps(&mut self) -> MapPoints {
        let maps = &self.point_maps;
        let mut taken = Vec::with_capacity(self.devices.len());
        for d in &mut self.devices {
            let added = d
                .point_map
                .as_ref()
                .and_then(|name| maps.iter().find(|m| &m.name == name))
                .map_or(0, |m| m.points.len());
            let own = d.points.len().saturating_sub(added);
            taken.push(d.points.split_off(own));
            d.points.shrink_to_fit();
        }
        MapPoints(taken)
    }

    /// Undoes [`Config::fold_point_maps`].
    pub fn unfold_point_maps(&mut self, points: MapPoints) {
        for (d, p) in self.devices.iter_mut().zip(points.0) {
            d.points.extend(p);
        }
    }

    /// Checks cross-references and ranges without any I/O. Returns every problem.
    pub fn validate(&self) -> Vec<Problem> {
        validate::validate(self)
    }
}

/// The points [`Config::fold_point_maps`] took out, per device in order.
#[derive(Debug)]
pub struct MapPoints(Vec<Vec<crate::sources::modbus::config::PointConfig>>);

/// Where expanded map points came from: (device index, index of its first
/// map point, map index, device id), so a problem found in a map point names
/// the map entry the operator wrote, not a point index they never wrote.
#[derive(Debug, Default)]
struct MapOrigins(Vec<(usize, usize, usize, String)>);

impl MapOrigins {
    fn rename(&self, p: &mut Problem) {
        for (di, first, mi, dev) in &self.0 {
            let head = format!("devices[{di}].points[");
            let Some(rest) = p.key.strip_prefix(&head) else {
                continue;
            };
            let Some((idx, tail)) = rest.split_once(']') else {
                continue;
            };
            let Some(k) = idx.parse::<usize>().ok().filter(|k| k >= first) else {
                continue;
            };
            p.key = format!("point_maps[{mi}].points[{}]{tail}", k - first);
            p.message = format!("{} (as used by device `{dev}`)", p.message);
            return;
        }
    }
}

fn parse_problem(text: &str, e: &toml::de::Error) -> Problem {
    let start = e.span().map(|span| span.start.min(text.len()));
    let line = start.map(|s| text[..s].matches('\n').count() + 1);
    // The key is what stands before '=' on the offending line, when it is a
    // `key = value` line (serde does not report the key path itself).
    let key = line
        .and_then(|n| text.lines().nth(n - 1))
        .and_then(|l| l.split_once('='))
        .map(|(k, _)| k.trim().to_string())
        .filter(|k| !k.is_empty() && !k.starts_with('['))
        .unwrap_or_default();
    Problem {
        key,
        line,
        message: e.message().trim().to_string(),
    }
}
