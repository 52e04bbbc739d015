//! A flow computer's hourly archive: the register map's arithmetic, record
//! parsing, and the durable "last record stored" mark. No network here; the
//! poller (`poller.rs`) does the reads.
//!
//! The register map is documented on [`ArchiveConfig`]. Records are numbered
//! 1, 2, ... by the device; record `k` lives in ring slot `(k - 1) % capacity`
//! until the device overwrites it `capacity` hours later. The header's
//! "latest" index tells which records exist: `latest - capacity + 1 ..=
//! latest` (at least 1).
//!
//! Invariants:
//! - The poller remembers the highest index it handed to the engine; after
//!   an outage it reads every record after it, so hourly volumes are
//!   backfilled, not lost. Records older than the ring are gone from the
//!   device: they are counted as lost and logged, never silently skipped.
//! - The mark on disk ([`ArchiveStore`]) moves only when the engine task
//!   confirms that the records' output is in the sink spools (an
//!   [`crate::model::Input::Receipt`] after the records), so a crash re-reads
//!   at most the unconfirmed records. They carry their own hour-end times, so
//!   the sinks overwrite instead of duplicating.
//! - Unlike register blocks, archive records are decoded here: their layout
//!   is fixed by the map, not by per-point configuration.
//!
//! [`ArchiveConfig`]: crate::sources::modbus::ArchiveConfig

use crate::engine::ArchivePlan;
use crate::model::{ArchiveRecord, Timestamp};
use crate::sources::modbus::{ARCHIVE_HEADER_WORDS, ARCHIVE_RECORD_WORDS};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The archive header as read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub capacity: u16,
    pub record_words: u16,
    /// Index of the latest closed record; 0 when none yet.
    pub latest: u32,
}

/// Parses the header words; `None` unless exactly [`ARCHIVE_HEADER_WORDS`].
pub fn parse_header(words: &[u16]) -> Option<Header> {
    if words.len() != usize::from(ARCHIVE_HEADER_WORDS) {
        return None;
    }
    Some(Header {
        capacity: words[0],
        record_words: words[1],
        latest: u32::from(words[2]) << 16 | u32::from(words[3]),
    })
}

fn u32_at(w: &[u16], i: usize) -> u32 {
    u32::from(w[i]) << 16 | u32::from(w[i + 1])
}

fn f32_at(w: &[u16], i: usize) -> f64 {
    f64::from(f32::from_bits(u32_at(w, i)))
}

/// Parses one record (exactly [`ARCHIVE_RECORD_WORDS`] words).
pub fn parse_record(words: &[u16]) -> Option<ArchiveRecord> {
    if words.len() != usize::from(ARCHIVE_RECORD_WORDS) {
        return None;
    }
    Some(ArchiveRecord {
        index: u32_at(words, 0),
        hour_end: Timestamp::from_secs(i64::from(u32_at(words, 2))),
        base_volume_sm3: f32_at(words, 4),
        flowing_volume_m3: f32_at(words, 6),
        pressure_kpa: f32_at(words, 8),
        temperature_c: f32_at(words, 10),
    })
}

/// Ring slot of record `index` (1-based).
pub fn slot(index: u32, capacity: u16) -> u32 {
    (index.max(1) - 1) % u32::from(capacity.max(1))
}

/// Wire address of the first word of record `index`.
pub fn record_address(plan: &ArchivePlan, index: u32) -> u32 {
    u32::from(plan.records_start) + slot(index, plan.capacity) * u32::from(ARCHIVE_RECORD_WORDS)
}

/// The records to read now: `first..=latest`, and how many records before
/// `first` are gone from the device although never read (overwritten).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backlog {
    pub first: u32,
    pub latest: u32,
    pub lost: u32,
}

/// What to read after `last` (the highest index already handed on; `None`
/// on the very first start: the whole ring is read, as history).
/// `None` when there is nothing new.
pub fn backlog(last: Option<u32>, latest: u32, capacity: u16) -> Option<Backlog> {
    let oldest = latest
        .saturating_sub(u32::from(capacity.max(1)))
        .saturating_add(1)
        .max(1);
    let want = last.map_or(oldest, |l| l.saturating_add(1));
    if latest == 0 || want > latest {
        return None;
    }
    Some(Backlog {
        first: want.max(oldest),
        latest,
        lost: oldest.saturating_sub(want),
    })
}

/// Records in the next request from `next`: at most `per_request`, at most
/// `latest - next + 1`, and never past the end of the ring (slots are
/// consecutive registers only up to the last slot).
pub fn chunk(next: u32, latest: u32, capacity: u16, per_request: u32) -> u32 {
    let to_ring_end = u32::from(capacity.max(1)) - slot(next, capacity);
    per_request
        .max(1)
        .min(latest.saturating_sub(next) + 1)
        .min(to_ring_end)
}

/// The durable mark: the highest record index whose output is stored.
/// Kept as one small JSON file, replaced atomically (write, fsync, rename).
#[derive(Debug)]
pub struct ArchiveStore {
    path: PathBuf,
    device: String,
    confirmed: Mutex<u32>,
}

/// Problems reading the mark at start; the poller logs them and reads the
/// whole ring again (re-read records overwrite, so nothing is lost).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {message}; the archive is read again from the oldest record")]
    Unreadable { path: String, message: String },
}

impl ArchiveStore {
    /// Opens the mark of `device` at `path` (a missing file is a first start).
    pub fn open(path: &Path, device: &str) -> (ArchiveStore, Option<u32>, Option<StoreError>) {
        let (last, problem) = match std::fs::read_to_string(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (None, None),
            Err(e) => (None, Some(e.to_string())),
            Ok(text) => match serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v.get("last_index").and_then(serde_json::Value::as_u64))
                .and_then(|n| u32::try_from(n).ok())
            {
                Some(n) => (Some(n), None),
                None => (
                    None,
                    Some("expected JSON {\"last_index\": <record index>}".to_string()),
                ),
            },
        };
        let store = ArchiveStore {
            path: path.to_path_buf(),
            device: device.to_string(),
            confirmed: Mutex::new(last.unwrap_or(0)),
        };
        let problem = problem.map(|message| StoreError::Unreadable {
            path: path.display().to_string(),
            message,
        });
        (store, last, problem)
    }

    /// The mark as last confirmed (0: none).
    pub fn confirmed(&self) -> u32 {
        *self.confirmed.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records `index` as stored when it is above the mark. Called by the
    /// engine task once the records' output is in the spools.
    pub fn confirm(&self, index: u32) -> std::io::Result<()> {
        let mut c = self.confirmed.lock().unwrap_or_else(|p| p.into_inner());
        if index <= *c {
            return Ok(());
        }
        self.write(index)?;
        *c = index;
        Ok(())
    }

    /// Lowers the mark to `index` (the device's numbering restarted).
    pub fn reset(&self, index: u32) -> std::io::Result<()> {
        let mut c = self.confirmed.lock().unwrap_or_else(|p| p.into_inner());
        self.write(index)?;
        *c = index;
        Ok(())
    }

    fn write(&self, index: u32) -> std::io::Result<()> {
        use std::io::Write;
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = self.path.with_extension("json.tmp");
        let text = serde_json::json!({ "device": self.device, "last_index": index });
        {
            let mut f = std::fs::File::create(&tmp)?;
            writeln!(f, "{text}")?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_and_record_parse_big_endian() {
        let h = parse_header(&[840, 12, 0x0001, 0x0002]).expect("header");
        assert_eq!(
            h,
            Header {
                capacity: 840,
                record_words: 12,
                latest: 65_538
            }
        );
        assert!(parse_header(&[1, 2, 3]).is_none());
        let f = |v: f32| [(v.to_bits() >> 16) as u16, v.to_bits() as u16];
        let mut w = vec![0, 7, 0x6955, 0xB990];
        for v in [30_000.5f32, 2_000.25, 3_500.0, -1.5] {
            w.extend_from_slice(&f(v));
        }
        let r = parse_record(&w).expect("record");
        assert_eq!(r.index, 7);
        assert_eq!(r.hour_end, Timestamp::from_secs(0x6955_B990));
        assert_eq!(
            (
                r.base_volume_sm3,
                r.flowing_volume_m3,
                r.pressure_kpa,
                r.temperature_c
            ),
            (30_000.5, 2_000.25, 3_500.0, -1.5)
        );
        assert!(parse_record(&w[..11]).is_none());
    }

    #[test]
    fn backlog_after_last_or_whole_ring_and_counts_overwritten() {
        // Nothing yet, nothing new.
        assert_eq!(backlog(None, 0, 10), None);
        assert_eq!(backlog(Some(5), 5, 10), None);
        // First start: the whole ring.
        assert_eq!(
            backlog(None, 25, 10),
            Some(Backlog {
                first: 16,
                latest: 25,
                lost: 0
            })
        );
        assert_eq!(
            backlog(None, 3, 10),
            Some(Backlog {
                first: 1,
                latest: 3,
                lost: 0
            })
        );
        // After an outage: from the one after the last.
        assert_eq!(
            backlog(Some(20), 25, 10),
            Some(Backlog {
                first: 21,
                latest: 25,
                lost: 0
            })
        );
        // An outage longer than the ring: 11..=15 were overwritten.
        assert_eq!(
            backlog(Some(10), 25, 10),
            Some(Backlog {
                first: 16,
                latest: 25,
                lost: 5
            })
        );
    }

    #[test]
    fn chunks_stop_at_the_ring_end() {
        // capacity 10: record 9 is slot 8, record 10 slot 9, record 11 slot 0.
        assert_eq!(chunk(9, 30, 10, 10), 2);
        assert_eq!(chunk(11, 30, 10, 10), 10);
        assert_eq!(chunk(11, 13, 10, 10), 3);
        assert_eq!(chunk(11, 30, 10, 4), 4);
        assert_eq!(slot(11, 10), 0);
    }

    #[test]
    fn store_survives_reopen_and_only_moves_up_unless_reset() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("archive").join("fc.json");
        let (s, last, problem) = ArchiveStore::open(&path, "fc");
        assert_eq!((last, problem.is_none()), (None, true));
        s.confirm(12).expect("write");
        s.confirm(9).expect("lower is ignored");
        let (s2, last, _) = ArchiveStore::open(&path, "fc");
        assert_eq!(last, Some(12));
        s2.reset(3).expect("reset");
        assert_eq!(ArchiveStore::open(&path, "fc").1, Some(3));
        std::fs::write(&path, "garbage").expect("write");
        let (_, last, problem) = ArchiveStore::open(&path, "fc");
        assert_eq!(last, None);
        let msg = problem.expect("problem").to_string();
        assert!(
            msg.contains("fc.json") && msg.contains("last_index"),
            "{msg}"
        );
    }
}
