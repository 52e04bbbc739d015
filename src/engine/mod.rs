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
pub mod plan;

pub use alarms::SavedAlarm;
pub use plan::{
    AlarmDef, AlarmMgmt, AlarmPolicy, BlockPlan, DevicePlan, EnginePlan, PointDecoder, TagInfo,
};

use crate::model::{
    AlarmState, BlockId, DeviceId, Input, Output, Quality, ReadError, Reason, Sample, TagId,
    Timestamp,
};
use crate::sources::modbus::DataType;
use alarms::AlarmStates;
use balance::Balance;
use std::sync::Arc;

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
}

/// The station engine. Create once per plan; feed it inputs and ticks.
#[derive(Debug, Clone)]
pub struct Engine {
    plan: Arc<EnginePlan>,
    tags: Vec<TagState>,
    alarms: AlarmStates,
    balance: Option<Balance>,
    /// Per device: time of the last good sample (comm-loss alarm); set to
    /// the first tick for devices not heard from yet.
    device_last_good: Vec<i64>,
    /// Per tag: latest text of a string point (capacity reserved at start,
    /// so decoding never allocates), its time and quality. Empty and
    /// capacity 0 for numeric tags.
    texts: Vec<(String, Timestamp, Quality)>,
}

impl Engine {
    /// `start_seq`: the last alarm sequence number already used (0 on a fresh
    /// station), so numbers keep increasing across restarts.
    pub fn new(plan: Arc<EnginePlan>, start_seq: u64) -> Engine {
        let mut tags: Vec<TagState> = plan
            .tags
            .iter()
            .map(|_| TagState {
                last_ts: i64::MIN,
                quality: Quality::Stale,
                value: f64::NAN,
                prev_good: (f64::NAN, i64::MIN),
                meter: None,
            })
            .collect();
        for (i, m) in plan.meters.iter().enumerate() {
            if let Some(t) = tags.get_mut(m.flow.0 as usize) {
                t.meter = Some(i as u32);
            }
        }
        let balance = (!plan.meters.is_empty()).then(|| {
            let meters: Vec<_> = plan
                .meters
                .iter()
                .map(|m| (m.role, plan.tag_info(m.flow).stale_after_ns))
                .collect();
            Balance::new(plan.balance_window_ns, plan.balance_min_coverage, &meters)
        });
        let alarms = AlarmStates::with_policy(plan.alarms.len(), start_seq, &plan.alarm_policy);
        let device_last_good = vec![i64::MIN; plan.devices.len()];
        let mut texts: Vec<(String, Timestamp, Quality)> = plan
            .tags
            .iter()
            .map(|_| (String::new(), Timestamp(i64::MIN), Quality::Stale))
            .collect();
        for d in plan
            .devices
            .iter()
            .flat_map(|d| &d.blocks)
            .flat_map(|b| &b.points)
        {
            if d.data_type == DataType::String
                && let Some(t) = texts.get_mut(d.tag.0 as usize)
            {
                t.0 = String::with_capacity(usize::from(d.len) * 2);
            }
        }
        Engine {
            plan,
            tags,
            alarms,
            balance,
            device_last_good,
            texts,
        }
    }

    pub fn plan(&self) -> &Arc<EnginePlan> {
        &self.plan
    }

    /// Current value and quality of a tag (for live views).
    pub fn current(&self, tag: TagId) -> Option<(f64, Quality)> {
        self.tags.get(tag.0 as usize).map(|t| (t.value, t.quality))
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
            // Delivery bookkeeping for the engine task; no data.
            Input::Receipt(_) => {}
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
        // Rate per minute from the previous good value.
        let rate = if good && st.prev_good.1 != i64::MIN && t > st.prev_good.1 {
            (s.value - st.prev_good.0) / ((t - st.prev_good.1) as f64 / 60e9)
        } else {
            f64::NAN
        };
        if good {
            st.prev_good = (s.value, t);
        }
        if let (Some(m), Some(b)) = (st.meter, self.balance.as_mut()) {
            b.on_flow(m as usize, s.ts, s.value, good);
        }
        let plan = &*self.plan;
        if good {
            let device = plan.tags[i].device.0 as usize;
            if let Some(d) = self.device_last_good.get_mut(device) {
                *d = (*d).max(t);
            }
            if let Some(Some(a)) = plan.device_comm_alarm.get(device)
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
            for &a in &plan.tag_suppresses[i] {
                self.alarms.set_suppressed(a, s.value != 0.0);
            }
        }
        for &a in &plan.tag_alarms[i] {
            use crate::model::AlarmKind;
            let value = match plan.alarms[a as usize].kind {
                AlarmKind::BadQuality => match s.quality {
                    Quality::Bad => 1.0,
                    Quality::Good => 0.0,
                    _ => continue,
                },
                AlarmKind::RateOfChange if rate.is_finite() => rate,
                _ if good && !matches!(plan.alarms[a as usize].kind, AlarmKind::RateOfChange) => {
                    s.value
                }
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
        for (i, st) in self.tags.iter_mut().enumerate() {
            let stale_after = self.plan.tags[i].stale_after_ns;
            if matches!(st.quality, Quality::Good | Quality::Uncertain)
                && n.saturating_sub(st.last_ts) > stale_after
            {
                st.quality = Quality::Stale;
                st.value = f64::NAN;
                out.samples.push(Sample {
                    tag: TagId(i as u32),
                    value: f64::NAN,
                    quality: Quality::Stale,
                    reason: Reason::NoRecentData,
                    ts: now,
                });
                if let (Some(m), Some(b)) = (st.meter, self.balance.as_mut()) {
                    b.on_flow(m as usize, now, f64::NAN, false);
                }
            }
        }
        if let Some(b) = self.balance.as_mut() {
            let first = out.balances.len();
            b.close_due(now, &mut out.balances);
            if let Some(a) = self.plan.imbalance_alarm {
                for r in &out.balances[first..] {
                    if matches!(r.quality, Quality::Good | Quality::Uncertain)
                        && r.imbalance_percent.is_finite()
                    {
                        self.alarms.evaluate(
                            a,
                            &self.plan.alarms,
                            &self.plan.alarm_policy,
                            self.plan.flood_alarm,
                            r.imbalance_percent,
                            r.end,
                            &mut out.alarms,
                        );
                    }
                }
            }
        }
        let plan = &*self.plan;
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
}

#[cfg(test)]
mod tests;
