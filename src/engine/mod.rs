//! The engine: pure, synchronous, deterministic. Inputs in; samples with
//! quality, alarm events and balance results out.
//!
//! Contract:
//! - No I/O, no clock reads, no logging, no async. Time comes from the
//!   inputs (`ts` of the response) and from `tick(now)`.
//! - Same inputs in the same order -> same outputs. The daemon and
//!   `gaswatch replay` therefore give identical results on identical input.
//! - Steady state allocates nothing per register: decoders are compiled into
//!   the [`EnginePlan`] and the caller reuses one [`Output`].
//!
//! Quality rules: a failed read marks the points of that block BAD with the
//! reason; a tag whose last good value is older than 1.5 poll periods turns
//! STALE once (one sample without a value, at `now`), and the old value is
//! never re-sent with a fresh timestamp. Only GOOD values feed alarms and
//! the balance.

pub mod alarm_health;
pub mod alarms;
pub mod balance;
pub mod decode;
pub mod gas;
pub mod gc;
pub mod index;
pub mod leak;
pub mod plan;

pub use alarms::SavedAlarm;
pub use plan::{
    AlarmDef, AlarmMgmt, AlarmPolicy, ArchivePlan, BlockPlan, DevicePlan, EnginePlan, PointDecoder,
    TagInfo,
};

use crate::config::MeterKind;
use crate::model::{
    AlarmState, BlockId, DeviceId, Input, Output, Quality, ReadError, Reason, Sample, TagId,
    Timestamp,
};
use crate::sources::modbus::DataType;
use alarms::AlarmStates;
use balance::{Balance, ElementSpec, MeterSpec};
use gas::GasModel;
use leak::{LeakDetector, LeakTuning};
use std::sync::Arc;

/// Run-time state of a meter beyond its flow tag: the last totaliser reading.
#[derive(Debug, Clone, Copy, Default)]
struct MeterRt {
    /// (time ns, reading) of the last good totaliser value.
    last_total: Option<(i64, f64)>,
}

/// Where one balance group's state lives in the engine's flat vectors.
#[derive(Debug, Clone)]
struct GroupRt {
    balances: std::ops::Range<usize>,
    leaks: std::ops::Range<usize>,
}

/// Counters the daemon exports as metrics (the engine does no I/O itself).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BalanceCounters {
    /// Totaliser decreases taken as a rollover.
    pub totaliser_rollovers: u64,
    /// Totaliser decreases taken as a meter reset (interval left out).
    pub totaliser_resets: u64,
    /// Line-condition samples left out because P, T or Z was not available.
    pub conversions_failed: u64,
}

#[derive(Debug, Clone, Copy)]
struct TagState {
    /// Time of the last sample of any quality (-inf before the first).
    last_ts: i64,
    quality: Quality,
    value: f64,
    /// Last GOOD value and its time (rate of change).
    prev_good: (f64, i64),
    /// Index of the meter whose flow this tag is, if any.
    meter: Option<u32>,
    /// The tag's device (index into the plan's devices).
    device: u32,
    /// Nanoseconds without a good read after which the tag is STALE.
    stale_after_ns: i64,
    /// What else a sample of this tag feeds (`ROUTE_*`), looked up once
    /// from the plan so the common sample (no alarm, no line pack) reads
    /// one struct instead of five tables.
    route: u8,
}

/// The tag has alarm definitions (`plan.tag_alarms`).
const ROUTE_ALARMS: u8 = 1;
/// The tag suppresses alarms by design (`plan.tag_suppresses`).
const ROUTE_SUPPRESSES: u8 = 2;
/// The tag is a line-pack element's P or T (`plan.tag_linepack`).
const ROUTE_LINEPACK: u8 = 4;
/// The tag is a GC component (`[gas.gc]`).
const ROUTE_GC: u8 = 8;
/// The tag's device has a communication-loss alarm.
const ROUTE_COMM: u8 = 16;

/// What the balance state depends on, with tags by name (their indices
/// change when points are added): equal shapes mean an open window of one
/// plan is valid under the other.
fn balance_shape(plan: &EnginePlan) -> impl PartialEq + use<> {
    let name = |t: TagId| plan.tag_info(t).name.clone();
    let stale = |t: TagId| plan.tag_info(t).stale_after_ns;
    let meters: Vec<_> = plan
        .meters
        .iter()
        .map(|m| {
            (
                m.name.clone(),
                m.role,
                m.kind,
                name(m.flow),
                stale(m.flow),
                m.pressure.map(name),
                m.temperature.map(name),
                m.pressure_gauge,
                m.rollover,
                m.uncertainty_percent,
            )
        })
        .collect();
    let windows: Vec<_> = plan
        .windows
        .iter()
        .map(|w| (w.label.clone(), w.window_ns, w.offset_ns))
        .collect();
    let linepack: Vec<_> = plan
        .linepack
        .iter()
        .map(|l| {
            (
                l.name.clone(),
                l.volume_m3,
                name(l.pressure),
                stale(l.pressure),
                name(l.temperature),
                stale(l.temperature),
                l.pressure_gauge,
                l.uncertainty_percent,
            )
        })
        .collect();
    let groups: Vec<_> = plan
        .groups
        .iter()
        .map(|g| (g.id, g.meters.clone(), g.linepack.clone()))
        .collect();
    (
        meters,
        windows,
        linepack,
        groups,
        plan.balance_min_coverage,
        plan.balance_edge_ns,
        plan.gas.clone(),
    )
}

/// The station engine. Create once per plan; feed it inputs and ticks.
#[derive(Debug, Clone)]
pub struct Engine {
    plan: Arc<EnginePlan>,
    tags: Vec<TagState>,
    alarms: AlarmStates,
    /// Per group, one balance per window length (`plan.windows`), group
    /// after group; empty without meters.
    balances: Vec<Balance>,
    /// The leak test's own balances (`plan.leak.tests`: smoothed edges,
    /// never reported) and one detector each, per group with a leak test.
    leak_balances: Vec<Balance>,
    leaks: Vec<LeakDetector>,
    /// Per group (`plan.groups`), its ranges in `balances` and in
    /// `leak_balances` / `leaks`.
    group_rt: Vec<GroupRt>,
    /// Live gas composition (`[gas.gc]`), and the time of the latest
    /// component sample.
    gc: Option<gc::GcState>,
    gc_ts: Timestamp,
    /// Per line-pack element: offset added to its pack so that a change of
    /// composition (a new GC analysis, a fallback) is not a step in the
    /// pack, and the pack before the change (reused buffer).
    pack_offset: Vec<f64>,
    pack_before: Vec<f64>,
    /// Leak-test windows closed by the current tick and the variance of
    /// their window-to-window parts (reused buffer).
    leak_results: Vec<(crate::model::BalanceResult, f64)>,
    meters: Vec<MeterRt>,
    /// Last good pressure (time ns, kPa) per line-pack element, for rupture.
    last_pressure: Vec<Option<(i64, f64)>>,
    gas: GasModel,
    counters: BalanceCounters,
    /// Per device: time of the last good sample (comm-loss alarm); set to
    /// the first tick for devices not heard from yet.
    device_last_good: Vec<i64>,
    /// Per string point: its latest text (capacity reserved at start, so
    /// decoding never allocates), time and quality. Numeric tags have none.
    texts: Texts,
}

/// The latest text of each string point: one entry per string tag, sorted
/// by tag (a slot for every tag cost 40 bytes x 15,000 numeric tags).
#[derive(Debug, Clone, Default)]
struct Texts(Vec<(u32, (String, Timestamp, Quality))>);

impl Texts {
    fn get(&self, tag: usize) -> Option<&(String, Timestamp, Quality)> {
        let i = self.0.binary_search_by_key(&tag, |e| e.0 as usize).ok()?;
        self.0.get(i).map(|e| &e.1)
    }

    fn get_mut(&mut self, tag: usize) -> Option<&mut (String, Timestamp, Quality)> {
        let i = self.0.binary_search_by_key(&tag, |e| e.0 as usize).ok()?;
        self.0.get_mut(i).map(|e| &mut e.1)
    }
}

impl Engine {
    /// `start_seq`: the last alarm sequence number already used (0 on a fresh
    /// station), so numbers keep increasing across restarts.
    pub fn new(plan: Arc<EnginePlan>, start_seq: u64) -> Engine {
        let has = |v: Option<&[u32]>| v.is_some_and(|v| !v.is_empty());
        let mut tags: Vec<TagState> = plan
            .tags
            .iter()
            .enumerate()
            .map(|(i, info)| {
                let flag = |on: bool, f: u8| if on { f } else { 0 };
                let gc = plan
                    .gc
                    .as_ref()
                    .is_some_and(|g| g.is_component.get(i).copied().unwrap_or(false));
                let comm = plan
                    .device_comm_alarm
                    .get(info.device.0 as usize)
                    .is_some_and(Option::is_some);
                TagState {
                    last_ts: i64::MIN,
                    quality: Quality::Stale,
                    value: f64::NAN,
                    prev_good: (f64::NAN, i64::MIN),
                    meter: None,
                    device: info.device.0,
                    stale_after_ns: info.stale_after_ns,
                    route: flag(has(plan.tag_alarms.get(i)), ROUTE_ALARMS)
                        | flag(has(plan.tag_suppresses.get(i)), ROUTE_SUPPRESSES)
                        | flag(has(plan.tag_linepack.get(i)), ROUTE_LINEPACK)
                        | flag(gc, ROUTE_GC)
                        | flag(comm, ROUTE_COMM),
                }
            })
            .collect();
        for (i, m) in plan.meters.iter().enumerate() {
            if let Some(t) = tags.get_mut(m.flow.0 as usize) {
                t.meter = Some(i as u32);
            }
        }
        let meter_specs: Vec<MeterSpec> = plan
            .meters
            .iter()
            .map(|m| MeterSpec {
                role: m.role,
                max_gap_ns: plan.tag_info(m.flow).stale_after_ns,
                uncertainty_percent: m.uncertainty_percent,
            })
            .collect();
        let element_specs: Vec<ElementSpec> = plan
            .linepack
            .iter()
            .map(|l| ElementSpec {
                max_gap_ns: plan
                    .tag_info(l.pressure)
                    .stale_after_ns
                    .max(plan.tag_info(l.temperature).stale_after_ns),
                uncertainty_percent: l.uncertainty_percent,
            })
            .collect();
        // The leak test's balances: each test window with smoothed edges (a
        // quarter of the window unless set), at least two scans of the
        // slowest line-pack point wide.
        let scan_ns = element_specs
            .iter()
            .map(|e| e.max_gap_ns)
            .max()
            .unwrap_or(0);
        let mut balances = Vec::new();
        let mut leak_balances = Vec::new();
        let mut leaks = Vec::new();
        let mut group_rt = Vec::with_capacity(plan.groups.len());
        for g in &plan.groups {
            // The group's own meters (its role for each) and elements.
            let meters: Vec<MeterSpec> = g
                .meters
                .iter()
                .map(|&(m, role)| MeterSpec {
                    role,
                    ..meter_specs[m as usize]
                })
                .collect();
            let elements: Vec<ElementSpec> = g
                .linepack
                .iter()
                .map(|&e| element_specs[e as usize])
                .collect();
            let first = balances.len();
            // Reported windows: sharp unless `balance.edge` is set, then at
            // least two scans of the slowest line-pack point wide.
            let edge_ns = if plan.balance_edge_ns > 0 {
                plan.balance_edge_ns.max(2 * scan_ns)
            } else {
                0
            };
            for w in &plan.windows {
                balances.push(
                    Balance::with_elements(
                        w.window_ns,
                        w.offset_ns,
                        plan.balance_min_coverage,
                        &meters,
                        &elements,
                    )
                    .with_group(g.id)
                    .with_edge_ns(edge_ns),
                );
            }
            let first_leak = leak_balances.len();
            if g.leak_alarm.is_some() {
                for t in &plan.leak.tests {
                    let window_ns = i64::try_from(t.window.as_nanos()).unwrap_or(i64::MAX);
                    let b = Balance::with_elements(
                        window_ns,
                        0,
                        plan.balance_min_coverage,
                        &meters,
                        &elements,
                    )
                    .with_group(g.id)
                    .with_edge_ns(
                        t.edge
                            .map_or(window_ns / 4, |e| {
                                i64::try_from(e.as_nanos()).unwrap_or(i64::MAX)
                            })
                            .max(2 * scan_ns),
                    );
                    // Warm up for an hour of windows, at least 6.
                    let warmup = (3_600_000_000_000 / window_ns.max(1)).max(6) as u32;
                    leaks.push(LeakDetector::new(LeakTuning {
                        min_leak_percent: t.min_leak_percent.unwrap_or(plan.leak.min_leak_percent),
                        threshold_sigma: t.threshold_sigma.unwrap_or(plan.leak.threshold_sigma),
                        bias_windows: plan.leak.bias_windows,
                        warmup,
                    }));
                    leak_balances.push(b);
                }
            }
            group_rt.push(GroupRt {
                balances: first..balances.len(),
                leaks: first_leak..leak_balances.len(),
            });
        }
        // Validation builds the gas model first; an ideal gas is the
        // fallback only for unvalidated plans (tests, benches).
        let gas = plan.gas.build().unwrap_or_else(|_| {
            GasModel::ideal(plan.gas.base(), plan.gas.atmospheric_pressure_kpa)
        });
        let n_elements = plan.linepack.len();
        let gc = plan
            .gc
            .as_ref()
            .map(|g| gc::GcState::new(g, gas::config::composition(&plan.gas.composition).ok()));
        let alarms = AlarmStates::with_policy(plan.alarms.len(), start_seq, &plan.alarm_policy);
        let device_last_good = vec![i64::MIN; plan.devices.len()];
        let mut texts: Vec<(u32, (String, Timestamp, Quality))> = plan
            .devices
            .iter()
            .flat_map(|d| &d.blocks)
            .flat_map(|b| &b.points)
            .filter(|d| d.data_type == DataType::String && (d.tag.0 as usize) < plan.tags.len())
            .map(|d| {
                let text = String::with_capacity(usize::from(d.len) * 2);
                (d.tag.0, (text, Timestamp(i64::MIN), Quality::Stale))
            })
            .collect();
        texts.sort_by_key(|e| e.0);
        texts.dedup_by_key(|e| e.0);
        let texts = Texts(texts);
        Engine {
            meters: vec![MeterRt::default(); plan.meters.len()],
            last_pressure: vec![None; plan.linepack.len()],
            plan,
            tags,
            alarms,
            balances,
            leak_balances,
            leaks,
            group_rt,
            leak_results: Vec::new(),
            gc,
            gc_ts: Timestamp(i64::MIN),
            pack_offset: vec![0.0; n_elements],
            pack_before: vec![f64::NAN; n_elements],
            gas,
            counters: BalanceCounters::default(),
            device_last_good,
            texts,
        }
    }

    /// Totaliser and conversion counters since start.
    pub fn counters(&self) -> BalanceCounters {
        self.counters
    }

    /// The leak-test windows (smoothed edges, not reported) that the last
    /// `tick` closed, group after group (`plan.groups` with a leak test),
    /// in test order: for diagnostics and the scorecard.
    /// Each comes with the variance (Sm³²) of its window-to-window parts
    /// (see [`Balance::close_due_with_noise`]).
    pub fn leak_windows(&self) -> &[(crate::model::BalanceResult, f64)] {
        &self.leak_results
    }

    /// The leak detectors, one per `balance.leak.tests` entry, group after
    /// group (`plan.groups` with a leak test).
    pub fn leak_detectors(&self) -> &[LeakDetector] {
        &self.leaks
    }

    /// State and reason of each leak detector (one per test window length,
    /// group after group).
    pub fn leak_states(&self) -> impl Iterator<Item = (leak::LeakState, &'static str)> + '_ {
        self.leaks.iter().map(|d| (d.state(), d.reason()))
    }

    pub fn plan(&self) -> &Arc<EnginePlan> {
        &self.plan
    }

    /// Current value and quality of a tag (for live views).
    pub fn current(&self, tag: TagId) -> Option<(f64, Quality)> {
        self.tags.get(tag.0 as usize).map(|t| (t.value, t.quality))
    }

    /// How many tags of each device are in each quality now: `counts[d]` is
    /// `[good, uncertain, bad, stale]` of device `d` (a tag never read yet
    /// is STALE). `counts` is resized to the number of devices; it does not
    /// allocate once it has that length.
    pub fn quality_by_device(&self, counts: &mut Vec<[u32; 4]>) {
        counts.clear();
        counts.resize(self.plan.devices.len(), [0; 4]);
        for (t, info) in self.tags.iter().zip(&self.plan.tags) {
            let q = match t.quality {
                Quality::Good => 0,
                Quality::Uncertain => 1,
                Quality::Bad => 2,
                Quality::Stale => 3,
            };
            if let Some(c) = counts.get_mut(info.device.0 as usize) {
                c[q] += 1;
            }
        }
    }

    /// Whether alarm `index` is active.
    pub fn alarm_active(&self, index: u32) -> bool {
        self.alarms.is_active(index)
    }

    /// The last alarm sequence number used.
    pub fn alarm_seq(&self) -> u64 {
        self.alarms.seq()
    }

    /// ISA state of alarm `index`.
    pub fn alarm_state(&self, index: u32) -> AlarmState {
        self.alarms.state(index)
    }

    /// Restores alarm states and the sequence number from the journal;
    /// call before the first input.
    pub fn restore_alarms(&mut self, seq: u64, saved: &[(u32, SavedAlarm)]) {
        self.alarms.resume_seq(seq);
        for (i, s) in saved {
            self.alarms.restore(*i, s);
        }
    }

    /// Current alarm-system health figures.
    pub fn alarm_health(&self, now: Timestamp) -> crate::model::AlarmHealth {
        self.alarms.health(&self.plan.alarms, now)
    }

    /// Config reload: takes over from `old` the state of every alarm whose
    /// id (`<station>/<source>/<kind>`) exists in both plans, and its
    /// sequence counter, so an active alarm is neither raised again nor
    /// forgotten. Alarms new in this plan start normal; removed ones are
    /// dropped. Returns the number of active alarms carried over.
    pub fn carry_alarms_from(&mut self, old: &Engine) -> usize {
        let mut carried = 0;
        for (i, def) in self.plan.alarms.iter().enumerate() {
            if let Some(j) = old.plan.alarm_index(&def.id)
                && self.alarms.carry(i as u32, &old.alarms, j)
            {
                carried += 1;
            }
        }
        self.alarms.advance_seq(old.alarms.seq());
        carried
    }

    /// Config reload: takes over everything of `old` that still means the
    /// same under the new plan, so a reload neither forgets nor invents
    /// anything: the alarm states ([`Engine::carry_alarms_from`]); per tag
    /// (by name) its last value, quality and time, so staleness and rate of
    /// change continue; per device (by id) its last good read, for the
    /// communication-loss alarm; and, when the balance is unchanged (same
    /// meters on the same points, windows, line pack, coverage rule and gas
    /// model), the open balance windows, totaliser readings and line-pack
    /// pressures, so the window around the reload is complete instead of
    /// starting again midway, plus the leak detectors when their tuning is
    /// unchanged too. Returns the number of active alarms carried over.
    pub fn carry_state_from(&mut self, old: &Engine) -> usize {
        let carried = self.carry_alarms_from(old);
        for (i, info) in self.plan.tags.iter().enumerate() {
            let Some(j) = old.plan.tag(&info.name) else {
                continue;
            };
            let j = j.0 as usize;
            if let (Some(t), Some(o)) = (self.tags.get_mut(i), old.tags.get(j)) {
                t.last_ts = o.last_ts;
                t.quality = o.quality;
                t.value = o.value;
                t.prev_good = o.prev_good;
            }
            if let (Some(t), Some(o)) = (self.texts.get_mut(i), old.texts.get(j))
                && !o.0.is_empty()
            {
                t.0.clone_from(&o.0);
                t.1 = o.1;
                t.2 = o.2;
            }
        }
        for (i, d) in self.plan.devices.iter().enumerate() {
            if let Some(j) = old.plan.devices.iter().position(|o| o.id == d.id) {
                self.device_last_good[i] = old.device_last_good[j];
            }
        }
        if balance_shape(&self.plan) == balance_shape(&old.plan) {
            self.balances.clone_from(&old.balances);
            self.meters.clone_from(&old.meters);
            self.last_pressure.clone_from(&old.last_pressure);
            self.counters = old.counters;
            if self.plan.leak == old.plan.leak
                && self
                    .plan
                    .groups
                    .iter()
                    .map(|g| g.leak_alarm.is_some())
                    .eq(old.plan.groups.iter().map(|g| g.leak_alarm.is_some()))
            {
                self.leaks.clone_from(&old.leaks);
            }
        }
        carried
    }

    /// Processes one input, appending what it produced to `out`.
    pub fn process(&mut self, input: &Input, out: &mut Output) {
        match input {
            Input::Registers {
                device,
                block,
                ts,
                regs,
            } => self.registers(*device, *block, None, *ts, regs, out),
            Input::RegistersPart {
                device,
                block,
                first,
                ts,
                regs,
            } => self.registers(*device, *block, Some(*first), *ts, regs, out),
            Input::ReadFailed {
                device,
                block,
                ts,
                error,
            } => self.failed(*device, *block, 0, u16::MAX, *ts, *error, out),
            Input::ReadFailedPart {
                device,
                block,
                first,
                words,
                ts,
                error,
            } => self.failed(*device, *block, *first, *words, *ts, *error, out),
            Input::DevicePaused { device, ts } => {
                for i in 0..self.tags.len() {
                    if self.plan.tags[i].device == *device {
                        self.accept(
                            Sample {
                                tag: TagId(i as u32),
                                value: f64::NAN,
                                quality: Quality::Stale,
                                reason: Reason::DevicePaused,
                                ts: *ts,
                            },
                            out,
                        );
                    }
                }
            }
            Input::Values { ts, values } => {
                for &(tag, value, quality) in values {
                    if (tag.0 as usize) >= self.tags.len() {
                        continue;
                    }
                    let (quality, reason) = if quality == Quality::Good && !value.is_finite() {
                        (Quality::Bad, Reason::NotFinite)
                    } else {
                        (quality, Reason::None)
                    };
                    self.accept(
                        Sample {
                            tag,
                            value,
                            quality,
                            reason,
                            ts: *ts,
                        },
                        out,
                    );
                }
            }
            Input::Command(cmd) => {
                let plan = &*self.plan;
                let reply = self.alarms.command(
                    plan.alarm_index(&cmd.alarm_id),
                    &plan.alarms,
                    &plan.alarm_policy,
                    cmd,
                    &mut out.alarms,
                );
                out.replies.push(reply);
            }
            // Archive records carry their own hour-end times; they are
            // history, so they feed neither alarms nor the live balance.
            Input::Archive {
                device, records, ..
            } => {
                for r in records {
                    let (quality, reason) = r.quality();
                    out.archives.push(crate::model::ArchiveSample {
                        device: *device,
                        record: *r,
                        quality,
                        reason,
                    });
                }
            }
            // Delivery bookkeeping for the engine task; no data.
            Input::Receipt(_) => {}
        }
        // A GC analysis is looked at once the whole input is in, so its
        // components are taken together.
        if self.gc.as_ref().is_some_and(|g| g.dirty) {
            self.update_gas(self.gc_ts, out);
        }
    }

    /// Which composition Z comes from (`[gas.gc]`); `None` without a GC.
    pub fn gas_source(&self) -> Option<gc::GasSource> {
        self.gc.as_ref().map(gc::GcState::source)
    }

    /// GC analyses applied and fallbacks entered since start.
    pub fn gc_counts(&self) -> Option<(u64, u64)> {
        self.gc.as_ref().map(|g| (g.updates, g.fallbacks))
    }

    fn update_gas(&mut self, ts: Timestamp, out: &mut Output) {
        let plan = Arc::clone(&self.plan);
        let (Some(g), Some(state)) = (plan.gc.as_ref(), self.gc.as_mut()) else {
            return;
        };
        let tags = &self.tags;
        // The gas in the pipe does not change the moment an analysis does:
        // the pack is re-based so the new Z moves it only from here on.
        for (e, before) in self.pack_before.iter_mut().enumerate() {
            *before = pack_sm3(&plan, tags, &mut self.gas, e);
        }
        let change = state.update(
            g,
            |i| {
                tags.get(i)
                    .map_or((f64::NAN, Quality::Bad), |t| (t.value, t.quality))
            },
            &mut self.gas,
        );
        for (e, before) in self.pack_before.iter().enumerate() {
            let d = before - pack_sm3(&plan, tags, &mut self.gas, e);
            if d.is_finite() {
                self.pack_offset[e] += d;
            }
        }
        if let Some(fallback) = change {
            self.alarms.transition(
                g.alarm,
                &plan.alarms,
                &plan.alarm_policy,
                plan.flood_alarm,
                fallback,
                !fallback,
                if fallback { 1.0 } else { 0.0 },
                ts,
                &mut out.alarms,
            );
        }
    }

    /// Decodes the points of a block answer. `first` is `None` for a whole
    /// block (the answer must have exactly the block's words, else every
    /// point is Malformed), or the word offset of a part answer (only points
    /// wholly inside it are decoded).
    fn registers(
        &mut self,
        device: DeviceId,
        block: BlockId,
        first: Option<u16>,
        ts: Timestamp,
        regs: &[u16],
        out: &mut Output,
    ) {
        let plan = Arc::clone(&self.plan);
        let Some(b) = plan.block(device, block) else {
            return;
        };
        let base = usize::from(first.unwrap_or(0));
        let malformed = first.is_none() && regs.len() != usize::from(b.words);
        let end = base + regs.len();
        for d in &b.points {
            let off = usize::from(d.offset);
            if off < base || off + usize::from(d.len) > end {
                continue;
            }
            let words = &regs[off - base..];
            if d.data_type == DataType::String {
                let i = d.tag.0 as usize;
                if let Some(t) = self.texts.get_mut(i) {
                    let len = usize::from(d.len).min(words.len());
                    let ok = !malformed && decode::decode_ascii(&words[..len], d.order, &mut t.0);
                    t.1 = ts;
                    t.2 = if ok { Quality::Good } else { Quality::Bad };
                }
                continue;
            }
            let (value, reason) = if malformed {
                (f64::NAN, Reason::Malformed)
            } else {
                decode::decode_at(words, d)
            };
            let quality = if reason == Reason::None {
                Quality::Good
            } else {
                Quality::Bad
            };
            self.accept(
                Sample {
                    tag: d.tag,
                    value,
                    quality,
                    reason,
                    ts,
                },
                out,
            );
        }
    }

    /// Marks BAD the points of a block overlapping words `first..first+words`.
    #[allow(clippy::too_many_arguments)]
    fn failed(
        &mut self,
        device: DeviceId,
        block: BlockId,
        first: u16,
        words: u16,
        ts: Timestamp,
        error: ReadError,
        out: &mut Output,
    ) {
        let plan = Arc::clone(&self.plan);
        let Some(b) = plan.block(device, block) else {
            return;
        };
        let (lo, hi) = (u32::from(first), u32::from(first) + u32::from(words));
        for d in &b.points {
            let (p_lo, p_hi) = (u32::from(d.offset), u32::from(d.offset) + u32::from(d.len));
            if p_hi <= lo || p_lo >= hi {
                continue;
            }
            if d.data_type == DataType::String {
                if let Some(t) = self.texts.get_mut(d.tag.0 as usize) {
                    t.1 = ts;
                    t.2 = Quality::Bad;
                }
                continue;
            }
            self.accept(
                Sample {
                    tag: d.tag,
                    value: f64::NAN,
                    quality: Quality::Bad,
                    reason: error.reason(),
                    ts,
                },
                out,
            );
        }
    }

    /// Latest text of a string point, the time it was read and its quality
    /// (`None` for numeric tags or before the first read). String points
    /// never become numeric [`Sample`]s: `Sample` stays `Copy` and small.
    pub fn text(&self, tag: TagId) -> Option<(&str, Timestamp, Quality)> {
        let t = self.texts.get(tag.0 as usize)?;
        (t.0.capacity() > 0 && t.1 != Timestamp(i64::MIN)).then_some((t.0.as_str(), t.1, t.2))
    }

    fn accept(&mut self, s: Sample, out: &mut Output) {
        let i = s.tag.0 as usize;
        let Some(st) = self.tags.get_mut(i) else {
            return;
        };
        st.last_ts = st.last_ts.max(s.ts.nanos());
        st.quality = s.quality;
        st.value = s.value;
        let good = s.quality == Quality::Good;
        let t = s.ts.nanos();
        // For a rate-of-change alarm (computed only when the tag has one).
        let prev_good = st.prev_good;
        if good {
            st.prev_good = (s.value, t);
        }
        let (meter, device, route) = (st.meter, st.device as usize, st.route);
        if let Some(m) = meter {
            self.on_meter(m as usize, s.ts, s.value, good);
        }
        if route & ROUTE_LINEPACK != 0 {
            self.on_linepack_tag(i, s.ts, out);
        }
        if route & ROUTE_GC != 0
            && let Some(state) = &mut self.gc
        {
            state.dirty = true;
            self.gc_ts = s.ts;
        }
        if good && let Some(d) = self.device_last_good.get_mut(device) {
            *d = (*d).max(t);
        }
        if route & (ROUTE_ALARMS | ROUTE_SUPPRESSES | ROUTE_COMM) == 0 {
            out.samples.push(s);
            return;
        }
        let plan = &*self.plan;
        if good {
            if route & ROUTE_COMM != 0
                && let Some(Some(a)) = plan.device_comm_alarm.get(device)
                && self.alarms.is_active(*a)
            {
                self.alarms.evaluate(
                    *a,
                    &plan.alarms,
                    &plan.alarm_policy,
                    plan.flood_alarm,
                    0.0,
                    s.ts,
                    &mut out.alarms,
                );
            }
            if route & ROUTE_SUPPRESSES != 0 {
                for &a in &plan.tag_suppresses[i] {
                    self.alarms.set_suppressed(a, s.value != 0.0);
                }
            }
        }
        if route & ROUTE_ALARMS == 0 {
            out.samples.push(s);
            return;
        }
        for &a in &plan.tag_alarms[i] {
            use crate::model::AlarmKind;
            let value = match plan.alarms[a as usize].kind {
                AlarmKind::BadQuality => match s.quality {
                    Quality::Bad => 1.0,
                    Quality::Good => 0.0,
                    _ => continue,
                },
                AlarmKind::RateOfChange => {
                    // Per minute, from the previous good value.
                    if !good || prev_good.1 == i64::MIN || t <= prev_good.1 {
                        continue;
                    }
                    let rate = (s.value - prev_good.0) / ((t - prev_good.1) as f64 / 60e9);
                    if !rate.is_finite() {
                        continue;
                    }
                    rate
                }
                _ if good => s.value,
                _ => continue,
            };
            self.alarms.evaluate(
                a,
                &plan.alarms,
                &plan.alarm_policy,
                plan.flood_alarm,
                value,
                s.ts,
                &mut out.alarms,
            );
        }
        out.samples.push(s);
    }

    /// Advances time: marks tags STALE, closes due balance windows and
    /// evaluates the imbalance alarm on them.
    pub fn tick(&mut self, now: Timestamp, out: &mut Output) {
        let n = now.nanos();
        let due = |st: &TagState| {
            matches!(st.quality, Quality::Good | Quality::Uncertain)
                && n.saturating_sub(st.last_ts) > st.stale_after_ns
        };
        // Nearly every tick finds nothing stale: a tight read-only scan
        // first, the marking loop (which feeds meters and line pack) only
        // when needed.
        let first_due = self.tags.iter().position(due).unwrap_or(self.tags.len());
        for i in first_due..self.tags.len() {
            let st = &mut self.tags[i];
            if due(st) {
                st.quality = Quality::Stale;
                st.value = f64::NAN;
                let meter = st.meter;
                out.samples.push(Sample {
                    tag: TagId(i as u32),
                    value: f64::NAN,
                    quality: Quality::Stale,
                    reason: Reason::NoRecentData,
                    ts: now,
                });
                if let Some(m) = meter {
                    self.on_meter(m as usize, now, f64::NAN, false);
                }
                if !self.plan.tag_linepack[i].is_empty() {
                    self.on_linepack_tag(i, now, out);
                }
                if let (Some(g), Some(state)) = (&self.plan.gc, &mut self.gc)
                    && g.is_component.get(i).copied().unwrap_or(false)
                {
                    state.dirty = true;
                }
            }
        }
        if self.gc.as_ref().is_some_and(|g| g.dirty) {
            self.update_gas(now, out);
        }
        let plan = Arc::clone(&self.plan);
        let n_windows = plan.windows.len().max(1);
        for (bi, b) in self.balances.iter_mut().enumerate() {
            let first = out.balances.len();
            b.close_due(now, &mut out.balances);
            let Some(&def_i) = plan
                .groups
                .get(bi / n_windows)
                .and_then(|g| g.alarms.get(bi % n_windows))
            else {
                continue;
            };
            let def = &plan.alarms[def_i as usize];
            for r in &out.balances[first..] {
                if matches!(r.quality, Quality::Good | Quality::Uncertain)
                    && r.imbalance_percent.is_finite()
                {
                    // 输差 alarm: above the limit AND outside the window's own
                    // expanded (2-sigma) uncertainty.
                    let p = r.imbalance_percent.abs();
                    let u = if r.uncertainty_percent.is_finite() {
                        r.uncertainty_percent
                    } else {
                        0.0
                    };
                    let raise = p > def.limit && p > u;
                    let clear = p < def.limit - def.deadband || p <= u;
                    self.alarms.transition(
                        def_i,
                        &plan.alarms,
                        &plan.alarm_policy,
                        plan.flood_alarm,
                        raise,
                        clear,
                        r.imbalance_percent,
                        r.end,
                        &mut out.alarms,
                    );
                }
            }
        }
        self.leak_results.clear();
        for (g, rt) in plan.groups.iter().zip(&self.group_rt) {
            let Some(a) = g.leak_alarm else {
                continue;
            };
            let group_first = self.leak_results.len();
            for i in rt.leaks.clone() {
                let first = self.leak_results.len();
                self.leak_balances[i].close_due_with_noise(now, &mut self.leak_results);
                for (r, noise) in &self.leak_results[first..] {
                    if let Some(alert) = self.leaks[i].on_window(r, *noise) {
                        out.leaks.push(alert);
                        self.alarms.transition(
                            a,
                            &plan.alarms,
                            &plan.alarm_policy,
                            plan.flood_alarm,
                            true,
                            false,
                            alert.rate_percent,
                            now,
                            &mut out.alarms,
                        );
                    }
                }
            }
            if self.leak_results.len() > group_first
                && self.alarms.is_active(a)
                && !self.leaks[rt.leaks.clone()]
                    .iter()
                    .any(LeakDetector::in_alarm)
            {
                self.alarms.transition(
                    a,
                    &plan.alarms,
                    &plan.alarm_policy,
                    plan.flood_alarm,
                    false,
                    true,
                    0.0,
                    now,
                    &mut out.alarms,
                );
            }
        }
        // Communication loss: no good sample from a device for its stale period.
        for (d, last) in self.device_last_good.iter_mut().enumerate() {
            if *last == i64::MIN {
                *last = n;
            }
            let Some(Some(a)) = plan.device_comm_alarm.get(d) else {
                continue;
            };
            let stale_after =
                i64::try_from(plan.devices[d].poll_interval.as_nanos() * 3 / 2).unwrap_or(i64::MAX);
            if !self.alarms.is_active(*a) && n.saturating_sub(*last) > stale_after {
                self.alarms.evaluate(
                    *a,
                    &plan.alarms,
                    &plan.alarm_policy,
                    plan.flood_alarm,
                    1.0,
                    now,
                    &mut out.alarms,
                );
            }
        }
        self.alarms.tick(
            &plan.alarms,
            &plan.alarm_policy,
            plan.flood_alarm,
            now,
            &mut out.alarms,
            &mut out.health,
        );
    }

    /// Base-condition conversion factor for meter `m` from its current P and T.
    fn line_factor(&mut self, m: usize) -> Option<f64> {
        let mp = &self.plan.meters[m];
        let good = |t: Option<TagId>| {
            t.and_then(|t| self.tags.get(t.0 as usize))
                .filter(|s| s.quality == Quality::Good)
                .map(|s| s.value)
        };
        let (p, t) = (good(mp.pressure)?, good(mp.temperature)?);
        let p_abs = self.gas.absolute_kpa(p, mp.pressure_gauge);
        self.gas.conversion_factor(p_abs, t + 273.15).ok()
    }

    /// Routes a meter's flow or totaliser sample into every balance window.
    fn on_meter(&mut self, m: usize, ts: Timestamp, value: f64, good: bool) {
        let Some(mp) = self.plan.meters.get(m) else {
            return;
        };
        let (kind, rollover) = (mp.kind, mp.rollover);
        let factor = if kind.is_line() && good {
            let f = self.line_factor(m);
            if f.is_none() {
                self.counters.conversions_failed += 1;
            }
            f
        } else {
            Some(1.0)
        };
        match kind {
            MeterKind::BaseFlow | MeterKind::LineFlow => {
                let (v, ok) = match factor {
                    Some(f) if good => (value * f, true),
                    _ => (f64::NAN, false),
                };
                self.each_balance_of_meter(m, |b, local| b.on_flow(local, ts, v, ok));
            }
            MeterKind::BaseTotaliser | MeterKind::LineTotaliser => {
                let prev = self.meters[m].last_total;
                self.meters[m].last_total = good.then_some((ts.nanos(), value));
                let Some((t0, v0)) = prev else {
                    // First reading, or after a bad one: nothing to difference.
                    self.each_balance_of_meter(m, |b, local| b.on_volume(local, ts, ts, None));
                    return;
                };
                let delta = if !good {
                    None
                } else if value >= v0 {
                    Some(value - v0)
                } else {
                    // A decrease: rollover if the wrap explains a small step,
                    // otherwise a reset (left out, never a spike).
                    match rollover {
                        Some(r) if value + r - v0 >= 0.0 && value + r - v0 < 0.01 * r => {
                            self.counters.totaliser_rollovers += 1;
                            Some(value + r - v0)
                        }
                        _ => {
                            self.counters.totaliser_resets += 1;
                            None
                        }
                    }
                };
                let vol = delta.zip(factor).map(|(d, f)| d * f);
                self.each_balance_of_meter(m, |b, local| {
                    b.on_volume(local, Timestamp(t0), ts, vol);
                });
            }
        }
    }

    /// Calls `f` with every balance (reported windows and leak-test
    /// windows) of every group meter `m` belongs to, and the meter's index
    /// in that group.
    fn each_balance_of_meter(&mut self, m: usize, mut f: impl FnMut(&mut Balance, usize)) {
        for &(g, local) in &self.plan.meter_groups[m] {
            let rt = &self.group_rt[g as usize];
            for b in self.balances[rt.balances.clone()]
                .iter_mut()
                .chain(&mut self.leak_balances[rt.leaks.clone()])
            {
                f(b, local as usize);
            }
        }
    }

    /// Recomputes the pack of each element that tag `i` belongs to, and runs
    /// the rupture detector on its pressure.
    fn on_linepack_tag(&mut self, i: usize, ts: Timestamp, out: &mut Output) {
        let plan = Arc::clone(&self.plan);
        for &e in &plan.tag_linepack[i] {
            let l = &plan.linepack[e as usize];
            let p = self.tags[l.pressure.0 as usize];
            let lp = pack_sm3(&plan, &self.tags, &mut self.gas, e as usize)
                + self.pack_offset[e as usize];
            for &(g, local) in &plan.element_groups[e as usize] {
                let rt = &self.group_rt[g as usize];
                for b in self.balances[rt.balances.clone()]
                    .iter_mut()
                    .chain(&mut self.leak_balances[rt.leaks.clone()])
                {
                    b.on_linepack(local as usize, ts, lp);
                }
            }
            if l.pressure.0 as usize != i {
                continue;
            }
            // Rupture: pressure fall rate between two consecutive good scans.
            let now = ts.nanos();
            let prev = self.last_pressure[e as usize];
            let good = p.quality == Quality::Good;
            self.last_pressure[e as usize] = good.then_some((now, p.value));
            if let (Some((limit, a)), Some((t0, p0)), true) = (l.rupture, prev, good) {
                let dt = now - t0;
                if dt > 0 && dt <= plan.tag_info(l.pressure).stale_after_ns {
                    // The alarm definition holds `limit`; evaluate compares.
                    debug_assert!(limit > 0.0);
                    let fall_per_min = (p0 - p.value) / (dt as f64 / 60e9);
                    self.alarms.evaluate(
                        a,
                        &plan.alarms,
                        &plan.alarm_policy,
                        plan.flood_alarm,
                        fall_per_min,
                        ts,
                        &mut out.alarms,
                    );
                }
            }
        }
    }
}

/// Pack (Sm³) of line-pack element `e` from its current P and T; NaN when
/// either is not good.
fn pack_sm3(plan: &EnginePlan, tags: &[TagState], gas: &mut GasModel, e: usize) -> f64 {
    let Some(l) = plan.linepack.get(e) else {
        return f64::NAN;
    };
    let (p, t) = (tags[l.pressure.0 as usize], tags[l.temperature.0 as usize]);
    if p.quality != Quality::Good || t.quality != Quality::Good {
        return f64::NAN;
    }
    let p_abs = gas.absolute_kpa(p.value, l.pressure_gauge);
    gas.linepack_sm3(l.volume_m3, p_abs, t.value + 273.15)
        .unwrap_or(f64::NAN)
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_balance;
#[cfg(test)]
mod tests_groups;
