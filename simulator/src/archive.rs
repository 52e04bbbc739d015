//! A flow computer's hourly archive, as Enron/Daniel devices keep it: every
//! hour (on the device clock's whole hours) the volumes the meter run passed
//! and its average pressure and temperature close into a numbered record,
//! kept in a ring of `capacity` records.
//!
//! Responsibility: integrate one meter's readings into hourly records and
//! serve them as read-only holding registers. Pure: time only moves through
//! [`Archive::accumulate`]; the same steps give the same records.
//!
//! Register map (wire addresses, big-endian words, read with FC03; the
//! daemon's `ArchiveConfig` documents the same map):
//!
//! ```text
//! address + 0       u16  capacity (records kept)
//! address + 1       u16  words per record (12)
//! address + 2..3    u32  index of the latest closed record (0 = none yet)
//! records_address + 12 * ((index - 1) % capacity):
//!   +0..1  u32  record index      +2..3  u32  hour end, s since the epoch (UTC)
//!   +4..5  f32  base volume, Sm3  +6..7  f32  flowing volume, m3
//!   +8..9  f32  average P, kPa    +10..11 f32 average T, degC
//! ```
//!
//! The integration uses each step's reading over the whole step (the
//! device's own measurement, meter errors included), split at hour
//! boundaries. Flowing volume converts the base volume to line conditions
//! with Z = 1: `V_f = V_b (101.325 / P_abs) (T_abs / 293.15)`. The values a
//! record holds are the `f32`s it serves, so a daemon that reads it back
//! recovers them exactly ([`ArchiveRecord`]).

use std::collections::VecDeque;

/// Words per record.
pub const RECORD_WORDS: u16 = 12;
/// Words of the header.
pub const HEADER_WORDS: u16 = 4;

const P_BASE_KPA: f64 = 101.325;
const T_BASE_K: f64 = 293.15;

/// One closed hour, as served.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ArchiveRecord {
    /// Record number: 1 for the first hour closed, then +1 per hour.
    pub index: u32,
    /// End of the hour, seconds since the epoch (device clock).
    pub hour_end_s: i64,
    /// Volume at base conditions over the hour, Sm3 (the served f32).
    pub base_volume_sm3: f64,
    /// Volume at flowing conditions, m3 (the served f32).
    pub flowing_volume_m3: f64,
    /// Time-weighted average pressure, kPa (the served f32).
    pub pressure_kpa: f64,
    /// Time-weighted average temperature, degC (the served f32).
    pub temperature_c: f64,
    words: [u16; RECORD_WORDS as usize],
}

impl ArchiveRecord {
    fn new(index: u32, hour_end_s: i64, values: [f64; 4]) -> ArchiveRecord {
        let f: [f32; 4] = values.map(|v| v as f32);
        let mut words = [0u16; RECORD_WORDS as usize];
        let put = |w: &mut [u16], at: usize, v: u32| {
            w[at] = (v >> 16) as u16;
            w[at + 1] = v as u16;
        };
        put(&mut words, 0, index);
        put(
            &mut words,
            2,
            u32::try_from(hour_end_s.max(0)).unwrap_or(u32::MAX),
        );
        for (i, v) in f.iter().enumerate() {
            put(&mut words, 4 + 2 * i, v.to_bits());
        }
        ArchiveRecord {
            index,
            hour_end_s,
            base_volume_sm3: f64::from(f[0]),
            flowing_volume_m3: f64::from(f[1]),
            pressure_kpa: f64::from(f[2]),
            temperature_c: f64::from(f[3]),
            words,
        }
    }

    /// The record's registers in wire order.
    pub fn words(&self) -> &[u16] {
        &self.words
    }
}

/// The hour being integrated.
#[derive(Debug, Clone, Copy, Default)]
struct Accumulator {
    base_sm3: f64,
    flowing_m3: f64,
    p_s: f64,
    t_s: f64,
    seconds: f64,
}

/// One device's archive.
#[derive(Debug, Clone)]
pub struct Archive {
    /// Device id (for ground truth).
    pub device: String,
    /// Meter name (for ground truth).
    pub meter: String,
    /// Index of the meter in the station's meters.
    pub(crate) meter_index: usize,
    header_address: u16,
    records_address: u16,
    capacity: u16,
    ring: VecDeque<ArchiveRecord>,
    latest: u32,
    acc: Accumulator,
}

impl Archive {
    pub(crate) fn new(
        device: &str,
        meter: &str,
        meter_index: usize,
        cfg: &crate::config::ArchiveConfig,
    ) -> Archive {
        Archive {
            device: device.to_string(),
            meter: meter.to_string(),
            meter_index,
            header_address: cfg.address,
            records_address: cfg.records_address,
            capacity: cfg.capacity.max(1),
            ring: VecDeque::with_capacity(usize::from(cfg.capacity.max(1))),
            latest: 0,
            acc: Accumulator::default(),
        }
    }

    /// Adds the reading (`flow` Sm3/h, `p` kPa gauge, `t` degC) over device
    /// time `(t0_s, t1_s]` (seconds since the epoch), closing a record at
    /// every whole hour crossed.
    pub(crate) fn accumulate(&mut self, t0_s: f64, t1_s: f64, flow: f64, p: f64, t: f64) {
        let mut from = t0_s;
        while from < t1_s {
            let hour_end = ((from / 3600.0).floor() + 1.0) * 3600.0;
            let to = t1_s.min(hour_end);
            let dt = to - from;
            let base = flow * dt / 3600.0;
            let p_abs = p + P_BASE_KPA;
            let factor = if p_abs > 0.0 {
                (P_BASE_KPA / p_abs) * ((t + 273.15) / T_BASE_K)
            } else {
                f64::NAN
            };
            self.acc.base_sm3 += base;
            self.acc.flowing_m3 += base * factor;
            self.acc.p_s += p * dt;
            self.acc.t_s += t * dt;
            self.acc.seconds += dt;
            if to >= hour_end {
                self.close(hour_end as i64);
            }
            from = to;
        }
    }

    fn close(&mut self, hour_end_s: i64) {
        let a = std::mem::take(&mut self.acc);
        if a.seconds <= 0.0 {
            return;
        }
        self.latest += 1;
        let r = ArchiveRecord::new(
            self.latest,
            hour_end_s,
            [
                a.base_sm3,
                a.flowing_m3,
                a.p_s / a.seconds,
                a.t_s / a.seconds,
            ],
        );
        if self.ring.len() >= usize::from(self.capacity) {
            self.ring.pop_front();
        }
        self.ring.push_back(r);
    }

    /// Index of the latest closed record (0: none yet).
    pub fn latest(&self) -> u32 {
        self.latest
    }

    /// Records the device still holds, oldest first.
    pub fn records(&self) -> Vec<ArchiveRecord> {
        self.ring.iter().copied().collect()
    }

    /// The word at wire address `a`, when it belongs to the archive. Slots
    /// never written yet read as zeros (index 0: no record).
    pub(crate) fn word(&self, a: u16) -> Option<u16> {
        let a32 = u32::from(a);
        let h = u32::from(self.header_address);
        if (h..h + u32::from(HEADER_WORDS)).contains(&a32) {
            return Some(match a32 - h {
                0 => self.capacity,
                1 => RECORD_WORDS,
                2 => (self.latest >> 16) as u16,
                _ => self.latest as u16,
            });
        }
        let r = u32::from(self.records_address);
        let ring_words = u32::from(self.capacity) * u32::from(RECORD_WORDS);
        if !(r..r + ring_words).contains(&a32) {
            return None;
        }
        let off = a32 - r;
        let slot = off / u32::from(RECORD_WORDS);
        let w = (off % u32::from(RECORD_WORDS)) as usize;
        // The record in `slot` is the newest index k with (k - 1) % cap == slot.
        let found = self
            .ring
            .iter()
            .rev()
            .find(|rec| (rec.index - 1) % u32::from(self.capacity) == slot);
        Some(found.map_or(0, |rec| rec.words[w]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ArchiveConfig;

    fn archive(capacity: u16) -> Archive {
        Archive::new(
            "fc",
            "IN1",
            0,
            &ArchiveConfig {
                meter: 0,
                address: 700,
                records_address: 710,
                capacity,
            },
        )
    }

    #[test]
    fn hours_close_on_the_clock_with_volumes_and_averages() {
        let mut a = archive(4);
        // Start at 00:30, 3600 Sm3/h, steps of 10 min, P 100 then 200 kPa.
        let start = 1_767_225_600.0 + 1800.0;
        for k in 0..12 {
            let t0 = start + f64::from(k) * 600.0;
            let p = if k < 3 { 100.0 } else { 200.0 };
            a.accumulate(t0, t0 + 600.0, 3600.0, p, 10.0);
        }
        // Two hours of 12 steps: 00:30-01:00 (partial), 01:00-02:00, then
        // 02:00-02:30 still open.
        assert_eq!(a.latest(), 2);
        let r = a.records();
        assert_eq!(r[0].index, 1);
        assert_eq!(r[0].hour_end_s, 1_767_229_200);
        assert_eq!(r[0].base_volume_sm3, 1800.0);
        assert_eq!(r[0].pressure_kpa, 100.0);
        assert_eq!(r[1].base_volume_sm3, 3600.0);
        assert_eq!(r[1].pressure_kpa, 200.0);
        assert_eq!(r[1].temperature_c, 10.0);
        let factor = (101.325 / 301.325) * (283.15 / 293.15);
        assert!((r[1].flowing_volume_m3 - 3600.0 * factor).abs() < 1e-3);
        // Served words: header then the record in slot 1 (index 2).
        assert_eq!(a.word(700), Some(4));
        assert_eq!(a.word(701), Some(12));
        assert_eq!((a.word(702), a.word(703)), (Some(0), Some(2)));
        assert_eq!(a.word(710 + 12 + 1), Some(2));
        let bits = 3600.0f32.to_bits();
        assert_eq!(a.word(710 + 12 + 4), Some((bits >> 16) as u16));
        assert_eq!(a.word(710 + 12 + 5), Some(bits as u16));
        // Slot 2 not written yet; outside the map: not archive.
        assert_eq!(a.word(710 + 24 + 1), Some(0));
        assert_eq!(a.word(704), None);
        assert_eq!(a.word(710 + 48), None);
    }

    #[test]
    fn ring_keeps_the_last_capacity_records_and_a_step_can_cross_hours() {
        let mut a = archive(3);
        // One step of 5 h 10 min closes five records.
        a.accumulate(0.0, 5.0 * 3600.0 + 600.0, 1000.0, 50.0, 5.0);
        assert_eq!(a.latest(), 5);
        let idx: Vec<u32> = a.records().iter().map(|r| r.index).collect();
        assert_eq!(idx, [3, 4, 5]);
        // Record 4 lives in slot (4 - 1) % 3 = 0.
        assert_eq!(a.word(710 + 1), Some(4));
        assert!(a.records().iter().all(|r| r.base_volume_sm3 == 1000.0));
    }
}
