//! The compiled form of a [`Config`]: dense tag and device indices, the read
//! blocks each device is polled with, and per-point decoder entries. Built
//! once at start-up (and on reload); the hot path only indexes into it.
//!
//! Read planning: a device's points are sorted by register table and address
//! and merged into blocks of at most `max_registers_per_read` registers,
//! reading across gaps of at most `max_gap` unused registers. A point never
//! straddles two blocks, so a multi-register value is read in one request
//! (no torn reads).

use crate::config::{Config, MeterRole};
use crate::model::{BlockId, DeviceId, Priority, TagId};
use crate::sources::modbus::{DataType, RegisterKind, WordOrder};
use std::collections::HashMap;
use std::time::Duration;

/// One Modbus request a device is polled with.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockPlan {
    pub register: RegisterKind,
    /// First register address (0-based, on the wire).
    pub start: u16,
    /// Number of registers (1..=125).
    pub count: u16,
    /// Decoders of the points inside this block.
    pub points: Vec<PointDecoder>,
}

/// How to turn registers into one engineering value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PointDecoder {
    pub tag: TagId,
    /// Register offset from the block start.
    pub offset: u16,
    pub data_type: DataType,
    pub order: WordOrder,
    pub scale: f64,
    pub add: f64,
    pub min: f64,
    pub max: f64,
}

/// A device as the poller and the engine see it.
#[derive(Debug, Clone, PartialEq)]
pub struct DevicePlan {
    pub id: String,
    pub host: String,
    pub port: u16,
    pub unit_id: u8,
    pub poll_interval: Duration,
    pub timeout: Duration,
    pub blocks: Vec<BlockPlan>,
}

/// Static facts about a tag.
#[derive(Debug, Clone, PartialEq)]
pub struct TagInfo {
    pub name: String,
    pub unit: String,
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
}

/// A meter in the balance.
#[derive(Debug, Clone, PartialEq)]
pub struct MeterPlan {
    pub name: String,
    pub role: MeterRole,
    pub flow: TagId,
}

/// Everything the engine and the pollers need, compiled from the config.
#[derive(Debug, Clone, PartialEq)]
pub struct EnginePlan {
    pub station_id: String,
    pub tags: Vec<TagInfo>,
    pub devices: Vec<DevicePlan>,
    pub alarms: Vec<AlarmDef>,
    /// Per tag, the alarm definitions watching it (indices into `alarms`).
    pub tag_alarms: Vec<Vec<u32>>,
    pub meters: Vec<MeterPlan>,
    /// Index of the imbalance alarm in `alarms`, when there is a balance.
    pub imbalance_alarm: Option<u32>,
    pub balance_window_ns: i64,
    pub balance_min_coverage: f64,
    by_name: HashMap<String, TagId>,
}

impl EnginePlan {
    /// Compiles a validated config. Panics never: references that do not
    /// resolve are skipped (validation reports them first).
    pub fn compile(config: &Config) -> EnginePlan {
        let mut tags = Vec::new();
        let mut by_name = HashMap::new();
        let mut devices = Vec::new();
        for (di, d) in config.devices.iter().enumerate() {
            let device = DeviceId(di as u32);
            let stale_after_ns =
                i64::try_from(d.poll_interval.as_nanos() * 3 / 2).unwrap_or(i64::MAX);
            let mut decoders: Vec<(RegisterKind, u16, PointDecoder)> = Vec::new();
            for pt in &d.points {
                let tag = TagId(tags.len() as u32);
                tags.push(TagInfo {
                    name: pt.name.clone(),
                    unit: pt.unit.clone(),
                    device,
                    stale_after_ns,
                });
                by_name.insert(pt.name.clone(), tag);
                decoders.push((
                    pt.register,
                    pt.address,
                    PointDecoder {
                        tag,
                        offset: 0,
                        data_type: pt.data_type,
                        order: pt.order,
                        scale: pt.scale,
                        add: pt.offset,
                        min: pt.min.unwrap_or(f64::NEG_INFINITY),
                        max: pt.max.unwrap_or(f64::INFINITY),
                    },
                ));
            }
            let blocks = plan_blocks(decoders, d.max_registers_per_read.clamp(1, 125), d.max_gap);
            devices.push(DevicePlan {
                id: d.id.clone(),
                host: d.host.clone(),
                port: d.port,
                unit_id: d.unit_id,
                poll_interval: d.poll_interval,
                timeout: d.timeout,
                blocks,
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
                            unit_id: 0,
                            poll_interval: pt.expected_interval,
                            timeout: Duration::ZERO,
                            blocks: Vec::new(),
                        });
                        devices.len() - 1
                    }
                };
                let tag = TagId(tags.len() as u32);
                tags.push(TagInfo {
                    name: pt.name.clone(),
                    unit: pt.unit.clone(),
                    device: DeviceId(di as u32),
                    stale_after_ns: i64::try_from(pt.expected_interval.as_nanos() * 3 / 2)
                        .unwrap_or(i64::MAX),
                });
                by_name.insert(pt.name.clone(), tag);
            }
        }

        let station = &config.station.id;
        let mut alarms = Vec::new();
        let mut tag_alarms = vec![Vec::new(); tags.len()];
        for l in &config.limits {
            let Some(&tag) = by_name.get(&l.point) else {
                continue;
            };
            let set: Vec<f64> = [l.ll, l.l, l.h, l.hh].iter().flatten().copied().collect();
            let span = match (set.first(), set.last()) {
                (Some(lo), Some(hi)) if hi > lo => hi - lo,
                _ => 0.0,
            };
            let deadband = l.deadband.unwrap_or(0.02 * span);
            use crate::model::AlarmKind::*;
            for (kind, limit, priority) in [
                (HighHigh, l.hh, Priority::High),
                (High, l.h, Priority::Medium),
                (Low, l.l, Priority::Medium),
                (LowLow, l.ll, Priority::High),
            ] {
                if let Some(limit) = limit {
                    tag_alarms[tag.0 as usize].push(alarms.len() as u32);
                    alarms.push(AlarmDef {
                        id: format!("{station}/{}/{}", l.point, kind.code()),
                        source: l.point.clone(),
                        kind,
                        priority,
                        limit,
                        deadband,
                    });
                }
            }
        }
        let meters: Vec<MeterPlan> = config
            .meters
            .iter()
            .filter_map(|m| {
                by_name.get(&m.flow).map(|&flow| MeterPlan {
                    name: m.name.clone(),
                    role: m.role,
                    flow,
                })
            })
            .collect();
        let imbalance_alarm = if meters.is_empty() {
            None
        } else {
            alarms.push(AlarmDef {
                id: format!("{station}/balance/IMBALANCE"),
                source: "balance".to_string(),
                kind: crate::model::AlarmKind::Imbalance,
                priority: Priority::High,
                limit: config.balance.limit_percent,
                deadband: config.balance.limit_percent * 0.2,
            });
            Some(alarms.len() as u32 - 1)
        };
        EnginePlan {
            station_id: station.clone(),
            tags,
            devices,
            alarms,
            tag_alarms,
            meters,
            imbalance_alarm,
            balance_window_ns: i64::try_from(config.balance.window.as_nanos()).unwrap_or(i64::MAX),
            balance_min_coverage: config.balance.min_coverage,
            by_name,
        }
    }

    /// Looks a tag up by point name.
    pub fn tag(&self, name: &str) -> Option<TagId> {
        self.by_name.get(name).copied()
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

/// Merges point decoders into read blocks (see the module docs).
fn plan_blocks(
    mut points: Vec<(RegisterKind, u16, PointDecoder)>,
    max_regs: u16,
    max_gap: u16,
) -> Vec<BlockPlan> {
    points.sort_by_key(|(kind, addr, _)| (*kind, *addr));
    let mut blocks: Vec<BlockPlan> = Vec::new();
    for (kind, addr, mut dec) in points {
        let width = dec.data_type.registers();
        let end = u32::from(addr) + u32::from(width);
        if let Some(b) = blocks.last_mut() {
            let b_end = u32::from(b.start) + u32::from(b.count);
            let fits = b.register == kind
                && u32::from(addr) <= b_end + u32::from(max_gap)
                && end - u32::from(b.start) <= u32::from(max_regs);
            if fits {
                dec.offset = addr - b.start;
                b.count = b.count.max((end - u32::from(b.start)) as u16);
                b.points.push(dec);
                continue;
            }
        }
        dec.offset = 0;
        blocks.push(BlockPlan {
            register: kind,
            start: addr,
            count: width,
            points: vec![dec],
        });
    }
    blocks
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
            scale: 1.0,
            add: 0.0,
            min: f64::NEG_INFINITY,
            max: f64::INFINITY,
        }
    }

    #[test]
    fn merges_across_small_gaps_and_splits_by_kind_and_size() {
        let pts = vec![
            (RegisterKind::Holding, 0, dec(0, DataType::F32)),
            (RegisterKind::Holding, 4, dec(1, DataType::U16)),
            (RegisterKind::Holding, 100, dec(2, DataType::F32)),
            (RegisterKind::Input, 0, dec(3, DataType::U16)),
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
                (
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
