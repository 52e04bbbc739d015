//! The compiled form of a [`Config`]: dense tag and device indices, the read
//! blocks each device is polled with, and per-point decoder entries. Built
//! once at start-up (and on reload); the hot path only indexes into it.
//!
//! Read planning: a device's points are sorted by register table and address
//! and merged into blocks of at most `max_registers_per_read` registers,
//! reading across gaps of at most `max_gap` unused registers. A point never
//! straddles two blocks, so a multi-register value is read in one request
//! (no torn reads).
//!
//! Addresses are converted to wire addresses here (`address - address_base`).
//! A block's `count` is what goes into the request (register numbers, or
//! bits for coils and discrete inputs); `words` is how many 16-bit words the
//! answer must hold (in Enron mode a 32-bit register number answers two
//! words, so Enron 32-bit points never share a block with 16-bit ones).
//! Point offsets are in words from the start of the answer.

use super::index::{NameIndex, PerTag};
use crate::config::{Config, MeterKind, MeterRole};
use crate::model::{BlockId, DeviceId, GroupId, Priority, TagId};
use crate::sources::modbus::{DataType, Link, RegisterKind, WordOrder};
use foldhash::{HashMap, HashMapExt};
use std::sync::Arc;
use std::time::Duration;

const NS: i64 = 1_000_000_000;

/// One Modbus request a device is polled with.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockPlan {
    pub register: RegisterKind,
    /// First register address (0-based, on the wire).
    pub start: u16,
    /// Number of registers, or bits for coils/discrete inputs, in the request.
    pub count: u16,
    /// Number of words the answer holds (bits: one word per bit).
    pub words: u16,
    /// Read every `every` poll cycles (poll groups; 1 = every cycle) ...
    pub every: u32,
    /// ... in the cycles where `cycle % every == phase` (staggered).
    pub phase: u32,
    /// Decoders of the points inside this block.
    pub points: Vec<PointDecoder>,
}

/// How to turn registers into one engineering value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PointDecoder {
    pub tag: TagId,
    /// Word offset from the start of the block's answer.
    pub offset: u16,
    pub data_type: DataType,
    pub order: WordOrder,
    /// Bit inside the register for `DataType::Bit` on a register table.
    pub bit: u8,
    /// Words the value occupies (strings: their length).
    pub len: u16,
    pub scale: f64,
    pub add: f64,
    pub min: f64,
    pub max: f64,
    /// Raw sanity range (before scale and offset).
    pub raw_min: f64,
    pub raw_max: f64,
}

/// A device as the poller and the engine see it.
#[derive(Debug, Clone, PartialEq)]
pub struct DevicePlan {
    pub id: String,
    pub host: String,
    pub port: u16,
    /// The connection or serial port the device shares with others (the
    /// poller runs one task per link). MQTT devices: their broker.
    pub link: Link,
    pub unit_id: u8,
    pub poll_interval: Duration,
    pub timeout: Duration,
    pub blocks: Vec<BlockPlan>,
    /// Failed cycles in a row before the unit is paused (0: never).
    pub pause_after_failed_cycles: u32,
    pub pause_for: Duration,
    /// Retry period of a request refused with exception 01/02/03.
    pub config_error_retry: Duration,
    /// Silence between requests on the device's link; wait after connect.
    pub pause_between_requests: Duration,
    pub pause_after_connect: Duration,
    /// Offset of the device's poll grid within its `poll_interval`: its
    /// link's [`Link::poll_phase`] when staggered, zero when not.
    pub poll_phase: Duration,
    /// The flow computer's hourly archive, when configured.
    pub archive: Option<ArchivePlan>,
}

/// How the poller reads a device's hourly archive (see
/// [`crate::sources::modbus::ArchiveConfig`] for the register map).
#[derive(Debug, Clone, PartialEq)]
pub struct ArchivePlan {
    /// Meter run the records belong to (tags the output).
    pub meter: String,
    /// Wire address of the header (after `address_base`).
    pub header_start: u16,
    /// Wire address of record slot 0.
    pub records_start: u16,
    pub capacity: u16,
    pub interval: Duration,
    /// Records per request (the device's `max_registers_per_read` / 12, at least 1).
    pub records_per_request: u16,
    /// Where the index of the last record stored is kept across restarts:
    /// `<spool dir>/archive/<device id>.json`.
    pub state_path: std::path::PathBuf,
}
#[derive(Debug, Clone, PartialEq)]
pub struct TagInfo {
    pub name: String,
    /// Shared by the tags of one unit (15,000 tags have a handful of units).
    pub unit: Arc<str>,
    pub device: DeviceId,
    /// Nanoseconds without a good read after which the tag is STALE (1.5 poll periods).
    pub stale_after_ns: i64,
}

/// A HH/H/L/LL alarm on a tag, or the station imbalance alarm.
#[derive(Debug, Clone, PartialEq)]
pub struct AlarmDef {
    /// Stable id `<station>/<source>/<kind>`, e.g. `cg01/PT_OUT1/HH`.
    pub id: String,
    /// Point name, or the balance name for imbalance.
    pub source: String,
    pub kind: crate::model::AlarmKind,
    pub priority: Priority,
    pub limit: f64,
    pub deadband: f64,
    /// Alarm-management settings of this alarm.
    pub mgmt: AlarmMgmt,
}

/// Per-alarm management settings (delays, latching, re-alarm, suppression).
/// The default is a plain alarm: no delays, not latched, no re-alarm.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct AlarmMgmt {
    /// The condition must hold this long before the alarm raises.
    pub on_delay_ns: i64,
    /// The clear condition must hold this long before the alarm clears.
    pub off_delay_ns: i64,
    /// Needs an operator reset after returning to normal.
    pub latch: bool,
    /// Escalates through the whole chain as soon as it raises (SSD trip).
    pub escalate_at_once: bool,
    /// Re-annunciated after this long unacknowledged (0 = never).
    pub realarm_ns: i64,
    /// Suppressed by design while this tag's last good value is non-zero.
    pub suppressed_by: Option<TagId>,
    /// Out of service: evaluated and journaled, never annunciated.
    pub out_of_service: bool,
    /// For digital alarms: the active state value.
    pub active_when: f64,
}

/// Station-wide alarm-management settings, compiled from `[alarms]`.
#[derive(Debug, Clone, PartialEq)]
pub struct AlarmPolicy {
    pub escalation_chain: Vec<String>,
    /// Escalate after this many re-alarms at one level (0 = never by count).
    pub escalate_after_realarms: u32,
    /// Escalate after this long unacknowledged at one level (0 = never by time).
    pub escalate_after_ns: i64,
    pub max_shelve_ns: i64,
    pub flood_start: u32,
    pub flood_end: u32,
    pub flood_window_ns: i64,
    pub chatter_count: u32,
    pub chatter_window_ns: i64,
    pub health_interval_ns: i64,
}

impl Default for AlarmPolicy {
    fn default() -> Self {
        AlarmPolicy::from_config(&crate::config::AlarmsConfig::default())
    }
}

impl AlarmPolicy {
    pub fn from_config(a: &crate::config::AlarmsConfig) -> AlarmPolicy {
        AlarmPolicy {
            escalation_chain: a.escalation_chain.clone(),
            escalate_after_realarms: a.escalate_after_realarms,
            escalate_after_ns: a.escalate_after.map(ns).unwrap_or(0),
            max_shelve_ns: ns(a.max_shelve),
            flood_start: a.flood_start,
            flood_end: a.flood_end,
            flood_window_ns: ns(a.flood_window),
            chatter_count: a.chatter_count.max(2),
            chatter_window_ns: ns(a.chatter_window),
            health_interval_ns: ns(a.health_interval).max(1),
        }
    }

    /// Name of escalation level `level` (the last one when beyond the chain).
    pub fn level_name(&self, level: u8) -> &str {
        self.escalation_chain
            .get(usize::from(level))
            .or(self.escalation_chain.last())
            .map_or("", String::as_str)
    }
}

fn ns(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// A meter in the balance.
#[derive(Debug, Clone, PartialEq)]
pub struct MeterPlan {
    pub name: String,
    pub role: MeterRole,
    pub flow: TagId,
    pub kind: MeterKind,
    pub pressure: Option<TagId>,
    pub temperature: Option<TagId>,
    pub pressure_gauge: bool,
    pub rollover: Option<f64>,
    /// Expanded (k = 2) uncertainty, %.
    pub uncertainty_percent: f64,
}

/// A line-pack element in the balance.
#[derive(Debug, Clone, PartialEq)]
pub struct LinepackPlan {
    pub name: String,
    pub volume_m3: f64,
    pub pressure: TagId,
    pub temperature: TagId,
    pub pressure_gauge: bool,
    pub uncertainty_percent: f64,
    /// Rupture limit (kPa/min) and its alarm index.
    pub rupture: Option<(f64, u32)>,
}

/// One balance window length.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowPlan {
    /// Short label: "5m", "1h", "gasday".
    pub label: String,
    pub window_ns: i64,
    /// Windows start at `offset_ns + k * window_ns` since the epoch.
    pub offset_ns: i64,
}

/// A balance group as configured (or the implicit station group), members
/// by name, before they are resolved to plan indices.
struct GroupDef {
    id: GroupId,
    name: String,
    members: Vec<(String, MeterRole)>,
    linepack: Vec<String>,
    limit: f64,
    leak: bool,
}

/// One balance group compiled: its members and alarms.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupPlan {
    pub id: GroupId,
    /// Name for reports (the id when none was configured).
    pub name: String,
    /// (index into `EnginePlan::meters`, role in this group).
    pub meters: Vec<(u32, MeterRole)>,
    /// Indices into `EnginePlan::linepack`.
    pub linepack: Vec<u32>,
    /// 输差率 limit, %.
    pub limit_percent: f64,
    /// Its 输差 (imbalance) alarm per window (`EnginePlan::windows` order).
    pub alarms: Vec<u32>,
    /// Its leak alarm, when the leak test runs on it.
    pub leak_alarm: Option<u32>,
}

/// Everything the engine and the pollers need, compiled from the config.
#[derive(Debug, Clone, PartialEq)]
pub struct EnginePlan {
    pub station_id: String,
    pub tags: Vec<TagInfo>,
    pub devices: Vec<DevicePlan>,
    pub alarms: Vec<AlarmDef>,
    /// Per tag, the alarm definitions watching it (indices into `alarms`).
    pub tag_alarms: PerTag,
    pub meters: Vec<MeterPlan>,
    /// Per device, its communication-loss alarm.
    pub device_comm_alarm: Vec<Option<u32>>,
    /// The station's flood alarm (parent of flood groups).
    pub flood_alarm: Option<u32>,
    /// Per tag, the alarms suppressed by design while it is non-zero.
    pub tag_suppresses: PerTag,
    pub alarm_policy: AlarmPolicy,
    /// Alarms by id (indices into `alarms`).
    by_alarm_id: NameIndex,
    pub balance_window_ns: i64,
    pub balance_min_coverage: f64,
    /// Half-width of the reported windows' smoothed edges (ns; 0: sharp).
    pub balance_edge_ns: i64,
    /// Every balance window: the first is `balance.window`, then the longer
    /// ones, then the gas day.
    pub windows: Vec<WindowPlan>,
    pub linepack: Vec<LinepackPlan>,
    /// Per tag, the line-pack elements whose P or T it is.
    pub tag_linepack: PerTag,
    /// The balance groups (the implicit station group when none are
    /// configured); empty without meters.
    pub groups: Vec<GroupPlan>,
    /// Per meter (index into `meters`), the (group, index of the meter in
    /// that group's `meters`) it feeds.
    pub meter_groups: Vec<Vec<(u32, u32)>>,
    /// Per line-pack element, the (group, index in the group's `linepack`).
    pub element_groups: Vec<Vec<(u32, u32)>>,
    /// The leak test tuning (station-wide).
    pub leak: crate::config::LeakConfig,
    pub gas: crate::engine::gas::GasConfig,
    /// Live gas composition from GC points (`[gas.gc]`).
    pub gc: Option<GcPlan>,
    /// Tags by point name (indices into `tags`).
    by_name: NameIndex,
}

/// `[gas.gc]` compiled: each component's point and the fallback alarm.
#[derive(Debug, Clone, PartialEq)]
pub struct GcPlan {
    /// (aga8 component name, its point).
    pub components: Vec<(String, TagId)>,
    /// Multiplier from the points' unit to a mole fraction.
    pub to_fraction: f64,
    /// Largest departure of an analysis' sum from 1 still normalised.
    pub sum_tolerance: f64,
    /// `<station>/gas/GC_FALLBACK`.
    pub alarm: u32,
    /// Per tag: whether it is a component point.
    pub is_component: Vec<bool>,
}

impl EnginePlan {
    /// Compiles a validated config. Panics never: references that do not
    /// resolve are skipped (validation reports them first).
    pub fn compile(config: &Config) -> EnginePlan {
        let n_points: usize = config.devices.iter().map(|d| d.points.len()).sum();
        let mut tags = Vec::with_capacity(n_points);
        let mut devices = Vec::new();
        let mut units = Units::default();
        for (di, d) in config.devices.iter().enumerate() {
            let device = DeviceId(di as u32);
            let mut decoders: Vec<Placed> = Vec::new();
            for pt in &d.points {
                let tag = TagId(tags.len() as u32);
                // 1.5 of the point's own read period (its poll group's).
                let period =
                    d.poll_interval.as_nanos() * u128::from(d.cycles_of(pt.group.as_deref()));
                let stale_after_ns = i64::try_from(period * 3 / 2).unwrap_or(i64::MAX);
                tags.push(TagInfo {
                    name: pt.name.clone(),
                    unit: units.get(&pt.unit),
                    device,
                    stale_after_ns,
                });
                let numbers = pt.register_numbers(d.enron);
                let every = d.cycles_of(pt.group.as_deref());
                decoders.push(Placed {
                    every,
                    kind: pt.register,
                    address: pt.address.saturating_sub(u16::from(d.address_base)),
                    numbers,
                    words_per_number: pt.words() / numbers.max(1),
                    dec: PointDecoder {
                        tag,
                        offset: 0,
                        data_type: pt.data_type,
                        order: pt.order,
                        bit: pt.bit.unwrap_or(0),
                        len: pt.words(),
                        scale: pt.scale,
                        add: pt.offset,
                        min: pt.min.unwrap_or(f64::NEG_INFINITY),
                        max: pt.max.unwrap_or(f64::INFINITY),
                        raw_min: pt.raw_min.unwrap_or(f64::NEG_INFINITY),
                        raw_max: pt.raw_max.unwrap_or(f64::INFINITY),
                    },
                });
            }
            let blocks = plan_blocks(decoders, d.max_registers_per_read.clamp(1, 125), d.max_gap);
            devices.push(DevicePlan {
                id: d.id.clone(),
                host: d.host.clone(),
                port: d.port,
                link: d.link(),
                unit_id: d.unit_id,
                poll_interval: d.poll_interval,
                timeout: d.timeout,
                blocks,
                pause_after_failed_cycles: d.pause_after_failed_cycles,
                pause_for: d.pause_for,
                config_error_retry: d.config_error_retry,
                pause_between_requests: d.pause_between_requests,
                pause_after_connect: d.pause_after_connect,
                poll_phase: if d.stagger.unwrap_or(config.modbus.stagger) {
                    d.link().poll_phase(d.poll_interval)
                } else {
                    Duration::ZERO
                },
                archive: d.archive.as_ref().map(|a| {
                    let base = u16::from(d.address_base);
                    ArchivePlan {
                        meter: a.meter.clone(),
                        header_start: a.address.saturating_sub(base),
                        records_start: a.records_address.saturating_sub(base),
                        capacity: a.capacity,
                        interval: a.interval,
                        records_per_request: (d.max_registers_per_read.min(125)
                            / crate::sources::modbus::ARCHIVE_RECORD_WORDS)
                            .max(1),
                        state_path: config
                            .spool
                            .dir
                            .join("archive")
                            .join(format!("{}.json", d.id)),
                    }
                }),
            });
        }

        // MQTT points: one device per (source, device id) without read
        // blocks (the Modbus poller skips those); a point is STALE after 1.5
        // times its expected interval.
        for src in &config.mqtt_sources {
            for pt in &src.points {
                let dev_id = pt.device_or(&src.id);
                let di = match devices.iter().position(|d: &DevicePlan| {
                    d.id == dev_id && d.blocks.is_empty() && d.host == src.host
                }) {
                    Some(i) => i,
                    None => {
                        devices.push(DevicePlan {
                            id: dev_id.to_string(),
                            host: src.host.clone(),
                            port: src.port,
                            link: Link::Tcp {
                                host: src.host.clone(),
                                port: src.port,
                            },
                            unit_id: 0,
                            poll_interval: pt.expected_interval,
                            timeout: Duration::ZERO,
                            blocks: Vec::new(),
                            // Polling settings: unused without read blocks.
                            pause_after_failed_cycles: 0,
                            pause_for: Duration::ZERO,
                            config_error_retry: Duration::ZERO,
                            pause_between_requests: Duration::ZERO,
                            pause_after_connect: Duration::ZERO,
                            poll_phase: Duration::ZERO,
                            archive: None,
                        });
                        devices.len() - 1
                    }
                };
                tags.push(TagInfo {
                    name: pt.name.clone(),
                    unit: units.get(&pt.unit),
                    device: DeviceId(di as u32),
                    stale_after_ns: i64::try_from(pt.expected_interval.as_nanos() * 3 / 2)
                        .unwrap_or(i64::MAX),
                });
            }
        }
        let name_index = NameIndex::build(tags.len(), |i| tags[i].name.as_str());
        let by_name = |name: &str| name_index.get(name, |i| tags[i].name.as_str()).map(TagId);

        let station = &config.station.id;
        let ac = &config.alarms;
        let mut alarms = Vec::new();
        // (tag, alarm) pairs, flattened into `PerTag` lists at the end.
        let mut tag_alarms: Vec<(u32, u32)> = Vec::new();
        let mut tag_suppresses: Vec<(u32, u32)> = Vec::new();
        let points: HashMap<&str, &crate::sources::modbus::PointConfig> = config
            .devices
            .iter()
            .flat_map(|d| d.points.iter().map(|p| (p.name.as_str(), p)))
            .collect();
        let base = |priority: Priority| AlarmMgmt {
            on_delay_ns: ns(ac.on_delay),
            off_delay_ns: ns(ac.off_delay),
            realarm_ns: ns(ac.realarm.for_priority(priority)),
            ..AlarmMgmt::default()
        };
        // Balance and leak alarms are judged once per closed window (or per
        // sequential-test decision): the window already is the confirmation,
        // so an on/off delay in seconds would only hold the next window back.
        let per_window = |priority: Priority| AlarmMgmt {
            on_delay_ns: 0,
            off_delay_ns: 0,
            ..base(priority)
        };
        for l in &config.limits {
            let Some(tag) = by_name(&l.point) else {
                continue;
            };
            let set: Vec<f64> = [l.ll, l.l, l.h, l.hh].iter().flatten().copied().collect();
            let point = points.get(l.point.as_str());
            let range = match (point.and_then(|p| p.min), point.and_then(|p| p.max)) {
                (Some(lo), Some(hi)) if hi > lo => hi - lo,
                _ => match (set.first(), set.last()) {
                    (Some(lo), Some(hi)) if hi > lo => hi - lo,
                    _ => 0.0,
                },
            };
            let unit = point.map_or("", |p| p.unit.as_str());
            let deadband = l
                .deadband
                .unwrap_or(ac.deadband_percent.percent_for_unit(unit) / 100.0 * range);
            let suppressed_by = l.suppressed_by.as_ref().and_then(|n| by_name(n));
            use crate::model::AlarmKind::*;
            for (kind, limit, priority) in [
                (HighHigh, l.hh, Priority::High),
                (High, l.h, Priority::Medium),
                (Low, l.l, Priority::Medium),
                (LowLow, l.ll, Priority::High),
                (RateOfChange, l.rate_per_min, Priority::Medium),
                (BadQuality, l.quality_alarm.then_some(0.5), Priority::Low),
            ] {
                if let Some(limit) = limit {
                    let index = alarms.len() as u32;
                    tag_alarms.push((tag.0, index));
                    if let Some(s) = suppressed_by {
                        tag_suppresses.push((s.0, index));
                    }
                    let mut mgmt = base(priority);
                    mgmt.on_delay_ns = l.on_delay.map_or(mgmt.on_delay_ns, ns);
                    mgmt.off_delay_ns = l.off_delay.map_or(mgmt.off_delay_ns, ns);
                    mgmt.latch = l.latch;
                    mgmt.suppressed_by = suppressed_by;
                    mgmt.out_of_service = l.out_of_service;
                    alarms.push(AlarmDef {
                        id: format!("{station}/{}/{}", l.point, kind.code()),
                        source: l.point.clone(),
                        kind,
                        priority,
                        limit,
                        deadband: match kind {
                            RateOfChange => limit * 0.1,
                            BadQuality => 0.0,
                            _ => deadband,
                        },
                        mgmt,
                    });
                }
            }
        }
        for d in &config.digital_alarms {
            let Some(tag) = by_name(&d.point) else {
                continue;
            };
            use crate::config::alarms::DigitalType;
            use crate::model::AlarmKind;
            let (kind, priority, latch) = match d.kind {
                DigitalType::SlamShut => (AlarmKind::SlamShut, Priority::Critical, true),
                DigitalType::GasDetector => (AlarmKind::GasDetector, Priority::Critical, true),
                DigitalType::Door => (AlarmKind::Door, Priority::Low, false),
                DigitalType::Other => (AlarmKind::Digital, Priority::Medium, false),
            };
            let priority = d.priority.map_or(priority, Priority::from);
            let mut mgmt = base(priority);
            mgmt.latch = d.latch.unwrap_or(latch);
            mgmt.on_delay_ns = d.on_delay.map_or(mgmt.on_delay_ns, ns);
            mgmt.escalate_at_once = kind == AlarmKind::SlamShut;
            mgmt.active_when = d.active_when;
            tag_alarms.push((tag.0, alarms.len() as u32));
            alarms.push(AlarmDef {
                id: format!("{station}/{}/{}", d.point, kind.code()),
                source: d.point.clone(),
                kind,
                priority,
                limit: d.active_when,
                deadband: 0.0,
                mgmt,
            });
        }
        let device_comm_alarm = devices
            .iter()
            .map(|d| {
                ac.comm_loss.then(|| {
                    alarms.push(AlarmDef {
                        id: format!("{station}/{}/COMM", d.id),
                        source: d.id.clone(),
                        kind: crate::model::AlarmKind::CommLoss,
                        priority: Priority::High,
                        limit: 0.0,
                        deadband: 0.0,
                        mgmt: base(Priority::High),
                    });
                    alarms.len() as u32 - 1
                })
            })
            .collect();
        let meters: Vec<MeterPlan> = config
            .meters
            .iter()
            .filter_map(|m| {
                by_name(&m.flow).map(|flow| MeterPlan {
                    name: m.name.clone(),
                    role: m.role,
                    flow,
                    kind: m.kind,
                    pressure: m.pressure.as_deref().and_then(by_name),
                    temperature: m.temperature.as_deref().and_then(by_name),
                    pressure_gauge: m.pressure_gauge,
                    rollover: m.rollover,
                    uncertainty_percent: m.uncertainty_percent,
                })
            })
            .collect();
        // Balance groups: the configured ones, or the implicit station group
        // of every meter by its role and every line-pack element.
        let group_defs: Vec<GroupDef> = if meters.is_empty() {
            Vec::new()
        } else if config.balance.groups.is_empty() {
            vec![GroupDef {
                id: GroupId::STATION,
                name: GroupId::STATION.to_string(),
                members: config
                    .meters
                    .iter()
                    .map(|m| (m.name.clone(), m.role))
                    .collect(),
                linepack: config.linepack.iter().map(|l| l.name.clone()).collect(),
                limit: config.balance.limit_percent,
                leak: config.balance.leak.enabled,
            }]
        } else {
            config
                .balance
                .groups
                .iter()
                .filter_map(|g| {
                    let id = GroupId::new(&g.id)?;
                    let members = g
                        .inlet
                        .iter()
                        .map(|m| (m.clone(), MeterRole::Inlet))
                        .chain(g.outlet.iter().map(|m| (m.clone(), MeterRole::Outlet)))
                        .collect();
                    Some(GroupDef {
                        id,
                        name: g.name.clone().unwrap_or_else(|| g.id.clone()),
                        members,
                        linepack: g.linepack.clone(),
                        limit: g.limit_percent.unwrap_or(config.balance.limit_percent),
                        leak: g.leak.unwrap_or(config.balance.leak.enabled),
                    })
                })
                .collect()
        };
        let nanos = |d: Duration| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
        let mut windows = Vec::new();
        if !group_defs.is_empty() {
            windows.push(WindowPlan {
                label: humantime::format_duration(config.balance.window).to_string(),
                window_ns: nanos(config.balance.window),
                offset_ns: 0,
            });
            for w in config.balance.longer_windows() {
                windows.push(WindowPlan {
                    label: humantime::format_duration(w).to_string(),
                    window_ns: nanos(w),
                    offset_ns: 0,
                });
            }
            if config.balance.gas_day {
                let hours = i64::from(config.balance.contract_hour)
                    - i64::from(config.balance.utc_offset_hours);
                windows.push(WindowPlan {
                    label: "gasday".into(),
                    window_ns: 86_400 * NS,
                    offset_ns: hours.rem_euclid(24) * 3_600 * NS,
                });
            }
        }
        // Alarm ids: the station group keeps those of a single-balance
        // station (`<station>/balance/IMBALANCE`, `.../balance-1h/...`,
        // `.../balance/LEAK`), so an upgrade raises nothing new; another
        // group's source is `balance.<id>` (`balance.<id>-1h`).
        let source = |id: &GroupId, wi: usize| {
            let head = if id.is_station() {
                "balance".to_string()
            } else {
                format!("balance.{id}")
            };
            if wi == 0 {
                head
            } else {
                format!("{head}-{}", windows[wi].label)
            }
        };
        let mut groups: Vec<GroupPlan> = Vec::with_capacity(group_defs.len());
        for GroupDef {
            id, name, limit, ..
        } in &group_defs
        {
            let mut window_alarms = Vec::with_capacity(windows.len());
            for wi in 0..windows.len() {
                let src = source(id, wi);
                alarms.push(AlarmDef {
                    id: format!("{station}/{src}/IMBALANCE"),
                    source: src,
                    kind: crate::model::AlarmKind::Imbalance,
                    priority: Priority::High,
                    limit: *limit,
                    deadband: limit * 0.2,
                    mgmt: per_window(Priority::High),
                });
                window_alarms.push(alarms.len() as u32 - 1);
            }
            groups.push(GroupPlan {
                id: *id,
                name: name.clone(),
                meters: Vec::new(),
                linepack: Vec::new(),
                limit_percent: *limit,
                alarms: window_alarms,
                leak_alarm: None,
            });
        }
        for (g, def) in groups.iter_mut().zip(&group_defs) {
            if !def.leak {
                continue;
            }
            let src = source(&g.id, 0);
            alarms.push(AlarmDef {
                id: format!("{station}/{src}/LEAK"),
                source: src,
                kind: crate::model::AlarmKind::Leak,
                priority: Priority::Critical,
                limit: config.balance.leak.threshold_sigma,
                // Cleared when the CUSUM is back to (nearly) zero.
                deadband: config.balance.leak.threshold_sigma * 0.99,
                // The CUSUM is already a sequential test and raises once per
                // detection: no on/off delay (a delay would swallow that one
                // raise); re-alarm and the rest as any critical alarm.
                mgmt: per_window(Priority::Critical),
            });
            g.leak_alarm = Some(alarms.len() as u32 - 1);
        }
        let gc = config.gas.gc.as_ref().map(|g| {
            let components: Vec<(String, TagId)> = g
                .components
                .iter()
                .filter_map(|(c, point)| by_name(point).map(|t| (c.clone(), t)))
                .collect();
            let mut is_component = vec![false; tags.len()];
            for (_, t) in &components {
                is_component[t.0 as usize] = true;
            }
            alarms.push(AlarmDef {
                id: format!("{station}/gas/GC_FALLBACK"),
                source: "gas".to_string(),
                kind: crate::model::AlarmKind::BadQuality,
                priority: Priority::Medium,
                limit: 0.5,
                deadband: 0.0,
                mgmt: base(Priority::Medium),
            });
            GcPlan {
                components,
                to_fraction: g.unit.to_fraction(),
                sum_tolerance: g.sum_tolerance_percent / 100.0,
                alarm: alarms.len() as u32 - 1,
                is_component,
            }
        });
        let mut tag_linepack: Vec<(u32, u32)> = Vec::new();
        let mut linepack = Vec::new();
        if !groups.is_empty() {
            for l in &config.linepack {
                let (Some(p), Some(t)) = (by_name(&l.pressure), by_name(&l.temperature)) else {
                    continue;
                };
                let e = linepack.len() as u32;
                tag_linepack.push((p.0, e));
                if t != p {
                    tag_linepack.push((t.0, e));
                }
                let rupture = l.rupture_kpa_per_min.map(|limit| {
                    alarms.push(AlarmDef {
                        id: format!("{station}/{}/RUPTURE", l.name),
                        source: l.name.clone(),
                        kind: crate::model::AlarmKind::Rupture,
                        priority: Priority::Critical,
                        limit,
                        deadband: limit * 0.5,
                        mgmt: base(Priority::Critical),
                    });
                    (limit, alarms.len() as u32 - 1)
                });
                linepack.push(LinepackPlan {
                    name: l.name.clone(),
                    volume_m3: l.volume_m3,
                    pressure: p,
                    temperature: t,
                    pressure_gauge: l.pressure_gauge,
                    uncertainty_percent: l.uncertainty_percent,
                    rupture,
                });
            }
        }
        // Group members by name (unvalidated plans may have dropped some).
        let mut meter_groups = vec![Vec::new(); meters.len()];
        let mut element_groups = vec![Vec::new(); linepack.len()];
        for (gi, (g, def)) in groups.iter_mut().zip(&group_defs).enumerate() {
            for (name, role) in &def.members {
                if let Some(m) = meters.iter().position(|m| &m.name == name) {
                    meter_groups[m].push((gi as u32, g.meters.len() as u32));
                    g.meters.push((m as u32, *role));
                }
            }
            for name in &def.linepack {
                if let Some(e) = linepack.iter().position(|l: &LinepackPlan| &l.name == name) {
                    element_groups[e].push((gi as u32, g.linepack.len() as u32));
                    g.linepack.push(e as u32);
                }
            }
        }
        let alarm_policy = AlarmPolicy::from_config(ac);
        alarms.push(AlarmDef {
            id: format!("{station}/system/FLOOD"),
            source: "system".to_string(),
            kind: crate::model::AlarmKind::Flood,
            priority: Priority::High,
            limit: f64::from(alarm_policy.flood_start),
            deadband: 0.0,
            mgmt: AlarmMgmt::default(),
        });
        let flood_alarm = Some(alarms.len() as u32 - 1);
        let by_alarm_id = NameIndex::build(alarms.len(), |i| alarms[i].id.as_str());
        let n_tags = tags.len();
        EnginePlan {
            station_id: station.clone(),
            tags,
            devices,
            alarms,
            tag_alarms: PerTag::build(n_tags, &tag_alarms),
            meters,
            device_comm_alarm,
            flood_alarm,
            tag_suppresses: PerTag::build(n_tags, &tag_suppresses),
            alarm_policy,
            by_alarm_id,
            balance_window_ns: i64::try_from(config.balance.window.as_nanos()).unwrap_or(i64::MAX),
            balance_min_coverage: config.balance.min_coverage,
            balance_edge_ns: ns(config.balance.edge()),
            windows,
            linepack,
            tag_linepack: PerTag::build(n_tags, &tag_linepack),
            groups,
            meter_groups,
            element_groups,
            leak: config.balance.leak.clone(),
            gas: config.gas.clone(),
            gc,
            by_name: name_index,
        }
    }

    /// The (group, window) indices of imbalance alarm `alarm`, or the
    /// (group, `None`) of a leak alarm; `None` for any other alarm.
    pub fn balance_alarm(&self, alarm: u32) -> Option<(usize, Option<usize>)> {
        self.groups.iter().enumerate().find_map(|(gi, g)| {
            if g.leak_alarm == Some(alarm) {
                Some((gi, None))
            } else {
                g.alarms
                    .iter()
                    .position(|&a| a == alarm)
                    .map(|wi| (gi, Some(wi)))
            }
        })
    }

    /// Looks a tag up by point name.
    pub fn tag(&self, name: &str) -> Option<TagId> {
        self.by_name
            .get(name, |i| self.tags[i].name.as_str())
            .map(TagId)
    }

    /// Looks an alarm up by its stable id.
    pub fn alarm_index(&self, id: &str) -> Option<u32> {
        self.by_alarm_id.get(id, |i| self.alarms[i].id.as_str())
    }

    pub fn tag_info(&self, tag: TagId) -> &TagInfo {
        &self.tags[tag.0 as usize]
    }

    pub fn device(&self, device: DeviceId) -> &DevicePlan {
        &self.devices[device.0 as usize]
    }

    pub fn block(&self, device: DeviceId, block: BlockId) -> Option<&BlockPlan> {
        self.devices
            .get(device.0 as usize)?
            .blocks
            .get(block.0 as usize)
    }
}

/// The distinct unit strings of a plan, each allocated once.
#[derive(Default)]
struct Units(Vec<Arc<str>>);

impl Units {
    fn get(&mut self, unit: &str) -> Arc<str> {
        if let Some(u) = self.0.iter().find(|u| &***u == unit) {
            return Arc::clone(u);
        }
        let u: Arc<str> = Arc::from(unit);
        self.0.push(Arc::clone(&u));
        u
    }
}

/// A point placed on the wire, input of [`plan_blocks`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Placed {
    pub kind: RegisterKind,
    /// Wire address of the first register (or bit).
    pub address: u16,
    /// Register numbers (or bits) the point spans in a request.
    pub numbers: u16,
    /// Words answered per register number: 2 for Enron 32-bit, else 1.
    pub words_per_number: u16,
    /// Poll cycles between reads (poll group); points of different groups
    /// never share a block.
    pub every: u32,
    pub dec: PointDecoder,
}

/// Most bits in one FC01/FC02 request (Modbus limit).
const MAX_BITS: u16 = 2000;
/// Most words in one FC03/FC04 answer (Modbus limit).
const MAX_WORDS: u16 = 125;

/// Merges points into read blocks (see the module docs).
pub(crate) fn plan_blocks(mut points: Vec<Placed>, max_regs: u16, max_gap: u16) -> Vec<BlockPlan> {
    points.sort_by_key(|p| (p.every, p.kind, p.words_per_number, p.address));
    let mut blocks: Vec<(u16, BlockPlan)> = Vec::new();
    for p in points {
        let wpn = p.words_per_number.max(1);
        let (max_count, max_words) = if p.kind.is_bits() {
            (MAX_BITS, MAX_BITS)
        } else {
            (max_regs, MAX_WORDS)
        };
        let end = u32::from(p.address) + u32::from(p.numbers);
        let mut dec = p.dec;
        if let Some((b_wpn, b)) = blocks.last_mut() {
            let b_end = u32::from(b.start) + u32::from(b.count);
            let new_count = end.saturating_sub(u32::from(b.start));
            let fits = b.register == p.kind
                && b.every == p.every
                && *b_wpn == wpn
                && u32::from(p.address) <= b_end + u32::from(max_gap)
                && new_count <= u32::from(max_count)
                && new_count * u32::from(wpn) <= u32::from(max_words);
            if fits {
                dec.offset = (p.address - b.start) * wpn;
                b.count = b.count.max(new_count as u16);
                b.words = b.count * wpn;
                b.points.push(dec);
                continue;
            }
        }
        dec.offset = 0;
        blocks.push((
            wpn,
            BlockPlan {
                register: p.kind,
                start: p.address,
                count: p.numbers,
                words: p.numbers * wpn,
                every: p.every.max(1),
                phase: 0,
                points: vec![dec],
            },
        ));
    }
    // Stagger: the n-th block of a group reads in cycles n, n + every, ...
    let mut seen: HashMap<u32, u32> = HashMap::new();
    blocks
        .into_iter()
        .map(|(_, mut b)| {
            let n = seen.entry(b.every).or_insert(0);
            b.phase = *n % b.every;
            *n += 1;
            b
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(tag: u32, t: DataType) -> PointDecoder {
        PointDecoder {
            tag: TagId(tag),
            offset: 0,
            data_type: t,
            order: WordOrder::ABCD,
            bit: 0,
            len: t.registers(),
            scale: 1.0,
            add: 0.0,
            min: f64::NEG_INFINITY,
            max: f64::INFINITY,
            raw_min: f64::NEG_INFINITY,
            raw_max: f64::INFINITY,
        }
    }

    fn placed(kind: RegisterKind, address: u16, d: PointDecoder) -> Placed {
        Placed {
            kind,
            address,
            numbers: d.len,
            words_per_number: 1,
            every: 1,
            dec: d,
        }
    }

    #[test]
    fn enron_registers_answer_two_words_and_never_mix_with_16_bit() {
        let enron = |tag, addr| Placed {
            kind: RegisterKind::Holding,
            address: addr,
            numbers: 1,
            words_per_number: 2,
            every: 1,
            dec: dec(tag, DataType::F32),
        };
        let pts = vec![
            enron(0, 7000),
            enron(1, 7002),
            placed(RegisterKind::Holding, 7001, dec(2, DataType::U16)),
        ];
        let b = plan_blocks(pts, 125, 8);
        assert_eq!(b.len(), 2);
        assert_eq!((b[0].start, b[0].count, b[0].words), (7001, 1, 1));
        assert_eq!((b[1].start, b[1].count, b[1].words), (7000, 3, 6));
        assert_eq!(b[1].points[1].offset, 4);
    }

    #[test]
    fn bits_merge_up_to_2000_per_request() {
        let pts: Vec<_> = (0..2100u16)
            .map(|i| placed(RegisterKind::Coil, i, dec(u32::from(i), DataType::Bit)))
            .collect();
        let b = plan_blocks(pts, 10, 0);
        assert_eq!(b.len(), 2);
        assert_eq!((b[0].count, b[0].words), (2000, 2000));
        assert_eq!(b[1].points[0].offset, 0);
    }

    #[test]
    fn merges_across_small_gaps_and_splits_by_kind_and_size() {
        let pts = vec![
            placed(RegisterKind::Holding, 0, dec(0, DataType::F32)),
            placed(RegisterKind::Holding, 4, dec(1, DataType::U16)),
            placed(RegisterKind::Holding, 100, dec(2, DataType::F32)),
            placed(RegisterKind::Input, 0, dec(3, DataType::U16)),
        ];
        let b = plan_blocks(pts, 125, 8);
        assert_eq!(b.len(), 3);
        assert_eq!((b[0].start, b[0].count, b[0].points.len()), (0, 5, 2));
        assert_eq!(b[0].points[1].offset, 4);
        assert_eq!((b[1].start, b[1].count), (100, 2));
        assert_eq!(b[2].register, RegisterKind::Input);
    }

    #[test]
    fn never_exceeds_max_registers_and_never_splits_a_value() {
        let pts: Vec<_> = (0..100u16)
            .map(|i| {
                placed(
                    RegisterKind::Holding,
                    i * 2,
                    dec(u32::from(i), DataType::F32),
                )
            })
            .collect();
        let b = plan_blocks(pts, 7, 0);
        for blk in &b {
            assert!(blk.count <= 7, "block of {} registers", blk.count);
            for p in &blk.points {
                assert!(p.offset + p.data_type.registers() <= blk.count);
            }
        }
        assert_eq!(b.iter().map(|b| b.points.len()).sum::<usize>(), 100);
    }
}
