//! Reading the station config: the same TOML file the daemon reads, through the
//! simulator's own minimal serde structs.
//!
//! Responsibility: turn config text into a validated [`StationConfig`] or a
//! [`ConfigError`] that names the key and what was expected. Never panics.
//!
//! Invariants after [`StationConfig::from_toml_str`] returns `Ok`:
//! - point names are unique across the whole station;
//! - within one endpoint (`host:port`, or a serial path) every `unit_id`
//!   belongs to one device;
//! - within one device and register table no two points share a register and
//!   every point's registers fit below 65536;
//! - every point a meter names exists;
//! - `scale` is finite and non-zero, `offset` finite.
//!
//! Unknown keys are ignored on purpose (unlike the daemon, whose schema uses
//! `deny_unknown_fields`): the daemon's schema grows and the simulator must
//! keep reading it.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

use crate::encode::{DataType, WordOrder};

/// A config that cannot be used, with the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The text is not TOML or a value has the wrong shape (toml's message
    /// names the line, the key and what was expected).
    #[error("station config: {0}")]
    Toml(String),
    /// A value is well-formed but not usable.
    #[error("station config: key `{key}`: expected {expected}")]
    Invalid {
        /// Dotted path of the key, e.g. `devices[1].points[0].scale`.
        key: String,
        /// What the key should hold.
        expected: String,
    },
}

impl ConfigError {
    fn invalid(key: impl Into<String>, expected: impl Into<String>) -> Self {
        Self::Invalid {
            key: key.into(),
            expected: expected.into(),
        }
    }
}

/// Which Modbus register table a point lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RegisterKind {
    /// Holding registers, read with FC03.
    Holding,
    /// Input registers, read with FC04.
    Input,
}

/// Role of a meter run in the station balance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MeterRole {
    /// Gas enters the station here (custody transfer from the supplier).
    Inlet,
    /// Gas leaves the station here (towards the city network).
    Outlet,
}

/// How a device is reached (`transport` in the daemon's config).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    /// Modbus/TCP (MBAP header).
    #[default]
    Tcp,
    /// RTU frames (unit, PDU, CRC) over TCP: a serial-to-Ethernet converter.
    RtuOverTcp,
    /// RTU on a serial port; `host` holds the port's path, `port` is 0.
    Rtu,
}

/// The `host:port` a device is reached at, as written in the config, and
/// how requests are framed there. For a serial device (`transport = "rtu"`)
/// `host` is the serial port's path and `port` is 0.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Endpoint {
    /// Host as written in the config (not resolved), or a serial path.
    pub host: String,
    /// TCP port (0 for a serial port).
    pub port: u16,
    /// Framing spoken there.
    pub transport: Transport,
}

impl Endpoint {
    /// Whether this is a local serial port rather than a TCP endpoint.
    pub fn is_serial(&self) -> bool {
        self.transport == Transport::Rtu
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.transport {
            Transport::Tcp => write!(f, "{}:{}", self.host, self.port),
            Transport::RtuOverTcp => write!(f, "{}:{} (RTU over TCP)", self.host, self.port),
            Transport::Rtu => write!(f, "{} (RTU)", self.host),
        }
    }
}

/// The parts of a station config the simulator uses.
#[derive(Debug, Clone)]
pub struct StationConfig {
    /// `[station] id`.
    pub station_id: String,
    /// `[station] kind` as written (`city_gate`, `cng_mother`, `lng`, `lcng`,
    /// ...); selects the physics profile. Empty when absent.
    pub kind: String,
    /// `[[devices]]` in file order.
    pub devices: Vec<DeviceConfig>,
    /// `[[meters]]` in file order.
    pub meters: Vec<MeterConfig>,
    /// `[gas]`, when present: the simulated pack uses its Z.
    pub gas: Option<crate::gas::GasSection>,
    /// `[[mqtt_sources]]` in file order: what the station's MQTT loggers
    /// and Sparkplug edge nodes publish (the simulator publishes it).
    pub mqtt_sources: Vec<MqttSourceConfig>,
}

/// Payload format of an MQTT source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MqttFormat {
    /// JSON documents; values at JSON Pointers.
    Json,
    /// Sparkplug B edge nodes.
    SparkplugB,
}

/// How a JSON payload's time is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimestampFormat {
    Rfc3339,
    EpochS,
    EpochMs,
    EpochNs,
}

/// One `[[mqtt_sources]]` entry, as the simulator publishes it.
#[derive(Debug, Clone, PartialEq)]
pub struct MqttSourceConfig {
    /// Source id.
    pub id: String,
    /// Broker host and port as written.
    pub host: String,
    pub port: u16,
    pub format: MqttFormat,
    /// JSON: topic patterns; the first one is published to, with
    /// `{station}`, `{device}` and `{point}` filled in.
    pub topics: Vec<String>,
    /// JSON: where the time goes and how it is written (absent: no time).
    pub timestamp: Option<(String, TimestampFormat)>,
    /// Sparkplug B group id.
    pub group_id: String,
    pub points: Vec<MqttPointConfig>,
}

/// One `[[mqtt_sources.points]]` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct MqttPointConfig {
    /// Point name, unique in the station.
    pub name: String,
    /// JSON: fills `{device}`; Sparkplug B: the device id (`None`: a node metric).
    pub device: Option<String>,
    /// JSON: fills `{point}` (points without it use a pattern without `{point}`).
    pub topic_point: Option<String>,
    /// Sparkplug B edge node id.
    pub node: String,
    /// JSON Pointer of the value (JSON; "" = the whole payload is the number).
    pub path: String,
    /// Metric name (Sparkplug B).
    pub metric: String,
    /// Engineering = payload * scale + offset.
    pub scale: f64,
    pub offset: f64,
    pub unit: String,
    /// How often the value is published at least.
    pub expected_interval: std::time::Duration,
}

/// One `[[devices]]` entry.
#[derive(Debug, Clone)]
pub struct DeviceConfig {
    /// Device id.
    pub id: String,
    /// Where the daemon reaches it.
    pub endpoint: Endpoint,
    /// Modbus unit id (slave id) behind that endpoint.
    pub unit_id: u8,
    /// Enron/Daniel mode: a 32-bit point is ONE register number answering
    /// two words.
    pub enron: bool,
    /// Points in file order.
    pub points: Vec<PointConfig>,
    /// The flow computer's hourly archive (`[devices.archive]`).
    pub archive: Option<ArchiveConfig>,
}

/// A device's hourly archive: which meter it integrates and where its
/// registers are (wire addresses; the map is documented in `archive.rs`).
#[derive(Debug, Clone, PartialEq)]
pub struct ArchiveConfig {
    /// Index into [`StationConfig::meters`].
    pub meter: usize,
    /// Wire address of the header.
    pub address: u16,
    /// Wire address of record slot 0.
    pub records_address: u16,
    /// Records kept (the ring).
    pub capacity: u16,
}

/// One `[[devices.points]]` entry.
#[derive(Debug, Clone)]
pub struct PointConfig {
    /// Point (tag) name, unique in the station.
    pub name: String,
    /// Register table.
    pub register: RegisterKind,
    /// 0-based wire address of the first register (`address - address_base`).
    pub address: u16,
    /// Wire type.
    pub data_type: DataType,
    /// Word order of 32-bit types.
    pub order: WordOrder,
    /// Engineering = raw * scale + offset.
    pub scale: f64,
    /// Engineering = raw * scale + offset.
    pub offset: f64,
    /// Engineering unit, informative.
    pub unit: String,
}

/// One `[[meters]]` entry.
#[derive(Debug, Clone)]
pub struct MeterConfig {
    /// Meter run name.
    pub name: String,
    /// Inlet or outlet.
    pub role: MeterRole,
    /// Point serving flow at base conditions, Sm3/h.
    pub flow: String,
    /// Point serving pressure, kPa gauge.
    pub pressure: Option<String>,
    /// Point serving temperature, degC.
    pub temperature: Option<String>,
    /// What `flow` serves (the daemon's `kind`): flow or totaliser, at
    /// base or line conditions.
    pub kind: MeterKind,
    /// A totaliser wraps to 0 at this value (the daemon's `rollover`).
    pub rollover: Option<f64>,
}

/// What a meter's `flow` point serves, as the daemon's `[[meters]] kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MeterKind {
    /// Flow at base conditions, Sm3/h.
    #[default]
    BaseFlow,
    /// Flow at line pressure and temperature, m3/h.
    LineFlow,
    /// Volume total at base conditions, Sm3 (rolls over at `rollover`).
    BaseTotaliser,
    /// Volume total at line conditions, m3 (rolls over at `rollover`).
    LineTotaliser,
}

// ---- raw serde shapes (unknown keys ignored) ----

#[derive(Deserialize)]
struct RawFile {
    station: RawStation,
    #[serde(default)]
    devices: Vec<RawDevice>,
    #[serde(default)]
    point_maps: Vec<RawPointMap>,
    #[serde(default)]
    meters: Vec<RawMeter>,
    gas: Option<crate::gas::GasSection>,
    #[serde(default)]
    mqtt_sources: Vec<RawMqttSource>,
}

#[derive(Deserialize)]
struct RawMqttSource {
    id: String,
    host: String,
    port: Option<u16>,
    format: MqttFormat,
    #[serde(default)]
    topics: Vec<String>,
    timestamp: Option<RawTimestamp>,
    group_id: Option<String>,
    #[serde(default)]
    points: Vec<RawMqttPoint>,
}

#[derive(Deserialize)]
struct RawTimestamp {
    path: String,
    format: TimestampFormat,
}

#[derive(Deserialize)]
struct RawMqttPoint {
    name: String,
    device: Option<String>,
    topic_point: Option<String>,
    node: Option<String>,
    #[serde(default)]
    path: String,
    metric: Option<String>,
    scale: Option<f64>,
    offset: Option<f64>,
    #[serde(default)]
    unit: String,
    #[serde(default, with = "humantime_serde")]
    expected_interval: Option<std::time::Duration>,
}

#[derive(Deserialize)]
struct RawStation {
    id: String,
    #[serde(default)]
    kind: String,
}

#[derive(Deserialize)]
struct RawDevice {
    id: String,
    #[serde(default)]
    transport: Transport,
    host: Option<String>,
    port: Option<u16>,
    serial: Option<RawSerial>,
    unit_id: u8,
    #[serde(default)]
    enron: bool,
    #[serde(default)]
    address_base: u8,
    #[serde(default)]
    points: Vec<RawPoint>,
    point_map: Option<String>,
    point_prefix: Option<String>,
    archive: Option<RawArchive>,
}

#[derive(Deserialize)]
struct RawArchive {
    meter: String,
    address: Option<u16>,
    records_address: Option<u16>,
    capacity: Option<u16>,
}

#[derive(Deserialize)]
struct RawSerial {
    path: String,
}

/// `[[point_maps]]`: a register map shared by identical devices.
#[derive(Deserialize)]
struct RawPointMap {
    name: String,
    #[serde(default)]
    points: Vec<RawPoint>,
}

/// The name of point `name` of a `[[point_maps]]` entry on a device:
/// `point_prefix` + name, the prefix defaulting to the device id and a dot.
/// (The daemon names them the same way: both read one station config.)
pub fn map_point_name(device_id: &str, point_prefix: Option<&str>, name: &str) -> String {
    match point_prefix {
        Some(prefix) => format!("{prefix}{name}"),
        None => format!("{device_id}.{name}"),
    }
}

#[derive(Deserialize, Clone)]
struct RawPoint {
    name: String,
    register: RegisterKind,
    address: u16,
    #[serde(rename = "type")]
    data_type: DataType,
    order: Option<WordOrder>,
    scale: Option<f64>,
    offset: Option<f64>,
    #[serde(default)]
    unit: String,
}

#[derive(Deserialize)]
struct RawMeter {
    name: String,
    role: MeterRole,
    flow: String,
    pressure: Option<String>,
    temperature: Option<String>,
    #[serde(default)]
    kind: MeterKind,
    rollover: Option<f64>,
}

/// The checks every served point passes: a name unique in the station, a
/// finite non-zero scale and a finite offset. Returns (scale, offset).
fn check_point(
    names: &mut BTreeSet<String>,
    name: &str,
    scale: Option<f64>,
    offset: Option<f64>,
    key: &dyn Fn(&str) -> String,
) -> Result<(f64, f64), ConfigError> {
    if !names.insert(name.to_string()) {
        return Err(ConfigError::invalid(
            key("name"),
            format!("a point name unique in the station (`{name}` repeats)"),
        ));
    }
    let scale = scale.unwrap_or(1.0);
    if !scale.is_finite() || scale == 0.0 {
        return Err(ConfigError::invalid(
            key("scale"),
            "a finite, non-zero number",
        ));
    }
    let offset = offset.unwrap_or(0.0);
    if !offset.is_finite() {
        return Err(ConfigError::invalid(key("offset"), "a finite number"));
    }
    Ok((scale, offset))
}

impl StationConfig {
    /// Parses and validates station config text.
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        let mut raw: RawFile =
            toml::from_str(text).map_err(|e| ConfigError::Toml(e.to_string()))?;
        for (di, d) in raw.devices.iter_mut().enumerate() {
            let Some(map_name) = &d.point_map else {
                continue;
            };
            let Some(map) = raw.point_maps.iter().find(|m| &m.name == map_name) else {
                return Err(ConfigError::invalid(
                    format!("devices[{di}].point_map"),
                    format!("the name of a [[point_maps]] entry (no map `{map_name}`)"),
                ));
            };
            for p in &map.points {
                let mut p = p.clone();
                p.name = map_point_name(&d.id, d.point_prefix.as_deref(), &p.name);
                d.points.push(p);
            }
        }
        if raw.station.id.trim().is_empty() {
            return Err(ConfigError::invalid("station.id", "a non-empty string"));
        }

        let mut names = BTreeSet::new();
        let mut archive_meters: Vec<(usize, String)> = Vec::new();
        let mut units_seen: BTreeMap<(Endpoint, u8), usize> = BTreeMap::new();
        let mut devices = Vec::with_capacity(raw.devices.len());
        for (di, d) in raw.devices.into_iter().enumerate() {
            let endpoint = match (d.transport, d.host, d.serial) {
                (Transport::Rtu, _, Some(serial)) => Endpoint {
                    host: serial.path,
                    port: 0,
                    transport: Transport::Rtu,
                },
                (Transport::Rtu, _, None) => {
                    return Err(ConfigError::invalid(
                        format!("devices[{di}].serial.path"),
                        "the serial port of a transport = \"rtu\" device",
                    ));
                }
                (transport, Some(host), _) => Endpoint {
                    host,
                    port: d.port.unwrap_or(502),
                    transport,
                },
                (_, None, _) => {
                    return Err(ConfigError::invalid(
                        format!("devices[{di}].host"),
                        "a host name or address",
                    ));
                }
            };
            if let Some(prev) = units_seen.insert((endpoint.clone(), d.unit_id), di) {
                return Err(ConfigError::invalid(
                    format!("devices[{di}].unit_id"),
                    format!(
                        "a unit id not already used on {endpoint} (devices[{prev}] has unit_id {})",
                        d.unit_id
                    ),
                ));
            }
            if d.address_base > 1 {
                return Err(ConfigError::invalid(
                    format!("devices[{di}].address_base"),
                    "0 or 1",
                ));
            }
            let base = u16::from(d.address_base);
            let mut used: BTreeMap<(RegisterKind, u16), String> = BTreeMap::new();
            let mut points = Vec::with_capacity(d.points.len());
            for (pi, p) in d.points.into_iter().enumerate() {
                let key = |k: &str| format!("devices[{di}].points[{pi}].{k}");
                let Some(address) = p.address.checked_sub(base) else {
                    return Err(ConfigError::invalid(
                        key("address"),
                        format!(
                            "at least {base} (the device numbers registers from address_base = {base})"
                        ),
                    ));
                };
                if p.name.trim().is_empty() {
                    return Err(ConfigError::invalid(key("name"), "a non-empty string"));
                }
                let (scale, offset) = check_point(&mut names, &p.name, p.scale, p.offset, &key)?;
                if d.enron && p.data_type.words() > 2 {
                    return Err(ConfigError::invalid(
                        key("type"),
                        "a 16- or 32-bit type in Enron mode (enron = true)",
                    ));
                }
                // Register numbers the point spans: one for an Enron 32-bit value.
                let words = if d.enron { 1 } else { p.data_type.words() };
                let last = u32::from(address) + u32::from(words) - 1;
                if last > u32::from(u16::MAX) {
                    return Err(ConfigError::invalid(
                        key("address"),
                        format!("an address leaving room for {words} registers below 65536"),
                    ));
                }
                for w in 0..words {
                    let addr = address + w;
                    if let Some(other) = used.insert((p.register, addr), p.name.clone()) {
                        return Err(ConfigError::invalid(
                            key("address"),
                            format!(
                                "registers not shared with another point (register {addr} also belongs to `{other}`)"
                            ),
                        ));
                    }
                }
                points.push(PointConfig {
                    name: p.name,
                    register: p.register,
                    address,
                    data_type: p.data_type,
                    order: p.order.unwrap_or_default(),
                    scale,
                    offset,
                    unit: p.unit,
                });
            }
            if d.id.trim().is_empty() {
                return Err(ConfigError::invalid(
                    format!("devices[{di}].id"),
                    "a non-empty string",
                ));
            }
            let archive = match d.archive {
                None => None,
                Some(a) => {
                    let ak = |k: &str| format!("devices[{di}].archive.{k}");
                    let address = a.address.unwrap_or(700).checked_sub(base).ok_or_else(|| {
                        ConfigError::invalid(ak("address"), format!("at least {base}"))
                    })?;
                    let records_address = a
                        .records_address
                        .unwrap_or(10_000)
                        .checked_sub(base)
                        .ok_or_else(|| {
                            ConfigError::invalid(ak("records_address"), format!("at least {base}"))
                        })?;
                    let capacity = a.capacity.unwrap_or(840);
                    let ring = u32::from(capacity) * u32::from(crate::archive::RECORD_WORDS);
                    if capacity == 0 || u32::from(records_address) + ring > 0x1_0000 {
                        return Err(ConfigError::invalid(
                            ak("capacity"),
                            "at least 1 record, with the ring ending below register 65536",
                        ));
                    }
                    let header = u32::from(address)..u32::from(address) + 4;
                    let records = u32::from(records_address)..u32::from(records_address) + ring;
                    let clash = |r: &std::ops::Range<u32>, a: u32| r.contains(&a);
                    for ((kind, addr), name) in &used {
                        if *kind == RegisterKind::Holding
                            && (clash(&header, u32::from(*addr))
                                || clash(&records, u32::from(*addr)))
                        {
                            return Err(ConfigError::invalid(
                                ak("address"),
                                format!(
                                    "archive registers not shared with a point (register {addr} belongs to `{name}`)"
                                ),
                            ));
                        }
                    }
                    if header.start < records.end && records.start < header.end {
                        return Err(ConfigError::invalid(
                            ak("records_address"),
                            "a record ring that does not overlap the 4-register header",
                        ));
                    }
                    archive_meters.push((di, a.meter.clone()));
                    Some(ArchiveConfig {
                        meter: usize::MAX,
                        address,
                        records_address,
                        capacity,
                    })
                }
            };
            devices.push(DeviceConfig {
                id: d.id,
                endpoint,
                unit_id: d.unit_id,
                enron: d.enron,
                points,
                archive,
            });
        }

        let mut mqtt_sources = Vec::with_capacity(raw.mqtt_sources.len());
        for (si, src) in raw.mqtt_sources.into_iter().enumerate() {
            let sk = |k: &str| format!("mqtt_sources[{si}].{k}");
            if src.format == MqttFormat::Json && src.topics.is_empty() {
                return Err(ConfigError::invalid(
                    sk("topics"),
                    "at least one topic pattern",
                ));
            }
            let group_id = match (src.format, src.group_id) {
                (MqttFormat::SparkplugB, None) => {
                    return Err(ConfigError::invalid(
                        sk("group_id"),
                        "a Sparkplug B group id",
                    ));
                }
                (_, g) => g.unwrap_or_default(),
            };
            let mut points = Vec::with_capacity(src.points.len());
            for (pi, p) in src.points.into_iter().enumerate() {
                let key = |k: &str| format!("mqtt_sources[{si}].points[{pi}].{k}");
                let (scale, offset) = check_point(&mut names, &p.name, p.scale, p.offset, &key)?;
                let (path, metric, node) = match src.format {
                    MqttFormat::Json => (p.path, String::new(), String::new()),
                    MqttFormat::SparkplugB => (
                        String::new(),
                        p.metric
                            .ok_or_else(|| ConfigError::invalid(key("metric"), "a metric name"))?,
                        p.node
                            .ok_or_else(|| ConfigError::invalid(key("node"), "an edge node id"))?,
                    ),
                };
                points.push(MqttPointConfig {
                    name: p.name,
                    device: p.device,
                    topic_point: p.topic_point,
                    node,
                    path,
                    metric,
                    scale,
                    offset,
                    unit: p.unit,
                    expected_interval: p
                        .expected_interval
                        .unwrap_or(std::time::Duration::from_secs(10)),
                });
            }
            mqtt_sources.push(MqttSourceConfig {
                id: src.id,
                host: src.host,
                port: src.port.unwrap_or(1883),
                format: src.format,
                topics: src.topics,
                timestamp: src.timestamp.map(|t| (t.path, t.format)),
                group_id,
                points,
            });
        }

        let mut meters = Vec::with_capacity(raw.meters.len());
        for (mi, m) in raw.meters.into_iter().enumerate() {
            let check = |k: &str, v: &str| {
                if names.contains(v) {
                    Ok(())
                } else {
                    Err(ConfigError::invalid(
                        format!("meters[{mi}].{k}"),
                        format!(
                            "the name of a point in [[devices.points]] or [[mqtt_sources.points]] (no point `{v}`)"
                        ),
                    ))
                }
            };
            check("flow", &m.flow)?;
            if let Some(p) = &m.pressure {
                check("pressure", p)?;
            }
            if let Some(t) = &m.temperature {
                check("temperature", t)?;
            }
            if let Some(r) = m.rollover.filter(|r| !(r.is_finite() && *r > 0.0)) {
                return Err(ConfigError::invalid(
                    format!("meters[{mi}].rollover"),
                    format!("a positive finite totaliser range (got {r})"),
                ));
            }
            meters.push(MeterConfig {
                name: m.name,
                role: m.role,
                flow: m.flow,
                pressure: m.pressure,
                temperature: m.temperature,
                kind: m.kind,
                rollover: m.rollover,
            });
        }

        for (di, meter) in archive_meters {
            let Some(mi) = meters.iter().position(|m| m.name == meter) else {
                return Err(ConfigError::invalid(
                    format!("devices[{di}].archive.meter"),
                    format!("the name of a [[meters]] entry (no meter `{meter}`)"),
                ));
            };
            if let Some(a) = devices[di].archive.as_mut() {
                a.meter = mi;
            }
        }

        Ok(Self {
            station_id: raw.station.id,
            kind: raw.station.kind,
            devices,
            meters,
            gas: raw.gas,
            mqtt_sources,
        })
    }

    /// Distinct endpoints in first-seen order.
    pub fn endpoints(&self) -> Vec<Endpoint> {
        distinct_endpoints(self.devices.iter().map(|d| &d.endpoint))
    }
}

/// Distinct endpoints in first-seen order (devices sharing a gateway appear once).
pub(crate) fn distinct_endpoints<'a>(all: impl Iterator<Item = &'a Endpoint>) -> Vec<Endpoint> {
    let mut out: Vec<Endpoint> = Vec::new();
    for e in all {
        if !out.contains(e) {
            out.push(e.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const CITY_GATE: &str = include_str!("../../config/city-gate.toml");

    #[test]
    fn parses_city_gate_example() {
        let c = StationConfig::from_toml_str(CITY_GATE).expect("example config parses");
        assert_eq!(c.station_id, "cg01");
        assert_eq!(c.devices.len(), 3);
        assert_eq!(c.meters.len(), 3);
        assert_eq!(c.endpoints().len(), 1);
        let p = &c.devices[2].points[1];
        assert_eq!(p.name, "PT_OUT2");
        assert_eq!(p.data_type, DataType::U16);
        assert!((p.scale - 0.1).abs() < 1e-12);
        assert_eq!(c.devices[1].points[0].order, WordOrder::Cdab);
    }

    fn err(text: &str) -> String {
        match StationConfig::from_toml_str(text) {
            Ok(_) => panic!("config should be rejected"),
            Err(e) => e.to_string(),
        }
    }

    const HEAD: &str =
        "[station]\nid = \"s\"\n[[devices]]\nid = \"d\"\nhost = \"h\"\nport = 1\nunit_id = 1\n";

    #[test]
    fn rejects_bad_type_naming_the_key() {
        let e = err(&format!(
            "{HEAD}[[devices.points]]\nname = \"A\"\nregister = \"holding\"\naddress = 0\ntype = \"f16\"\n"
        ));
        assert!(e.contains("type"), "{e}");
        assert!(e.contains("f32"), "{e}");
    }

    #[test]
    fn rejects_overlapping_registers() {
        let e = err(&format!(
            "{HEAD}[[devices.points]]\nname = \"A\"\nregister = \"holding\"\naddress = 0\ntype = \"f32\"\n\
             [[devices.points]]\nname = \"B\"\nregister = \"holding\"\naddress = 1\ntype = \"u16\"\n"
        ));
        assert!(e.contains("devices[0].points[1].address"), "{e}");
    }

    #[test]
    fn rejects_zero_scale_and_unknown_meter_point() {
        let e = err(&format!(
            "{HEAD}[[devices.points]]\nname = \"A\"\nregister = \"input\"\naddress = 0\ntype = \"u16\"\nscale = 0.0\n"
        ));
        assert!(e.contains("devices[0].points[0].scale"), "{e}");
        let e = err(&format!(
            "{HEAD}[[meters]]\nname = \"M\"\nrole = \"inlet\"\nflow = \"NOPE\"\n"
        ));
        assert!(e.contains("meters[0].flow"), "{e}");
    }

    #[test]
    fn rejects_duplicate_unit_on_endpoint_and_missing_station() {
        let e = err(&format!(
            "{HEAD}[[devices]]\nid = \"d2\"\nhost = \"h\"\nport = 1\nunit_id = 1\n"
        ));
        assert!(e.contains("devices[1].unit_id"), "{e}");
        let e = err("[[devices]]\nid = \"d\"\n");
        assert!(e.contains("station"), "{e}");
    }

    #[test]
    fn ignores_unknown_keys() {
        let c = StationConfig::from_toml_str(&format!(
            "{HEAD}future_key = 3\n[[devices.points]]\nname = \"A\"\nregister = \"input\"\naddress = 0\ntype = \"u16\"\ndeadband = 1\n[whatever]\nx = 1\n"
        ))
        .expect("unknown keys are ignored");
        assert_eq!(c.devices[0].points.len(), 1);
    }
}
