//! The durable spool: an append-only segment log per record class, with an
//! acknowledgement watermark and a size cap.
//!
//! # On-disk format
//!
//! ```text
//! <spool dir>/
//!   alarm/      00000000000000000001.seg  00000000000000004711.seg  acked
//!   balance/    ...
//!   telemetry/  ...
//! ```
//!
//! - A segment is named after the id of its first record (20 decimal digits,
//!   so names sort like ids) and holds records back to back:
//!   `[len u32 LE][crc32 u32 LE][id u64 LE][first_ns i64 LE][last_ns i64 LE][payload: len bytes]`
//!   (a 32-byte header), where the CRC (crc32fast, IEEE) covers the 24
//!   bytes from `id` to `last_ns` and the payload. Ids increase by one per
//!   append within a class and keep increasing across restarts.
//!   `first_ns..=last_ns` is the time span of the samples in the record
//!   (ns since the Unix epoch; both 0 when the producer gave none): it is
//!   what the size cap reports when it drops telemetry, so an operator knows
//!   which hours are missing without reading the payloads. (The first
//!   layout had a 16-byte header without the span; no release used it and
//!   there is no format marker, so such a spool reads as torn.)
//! - A segment is closed (and fsynced) once it reaches the segment size, which
//!   is `max_bytes / 8` clamped to 4 KiB..=8 MiB; a new one starts with the next
//!   record. After `open` appends always go to a new segment, so an existing
//!   file is never appended to after a crash.
//! - `acked` holds the class's acknowledgement watermark as a decimal number:
//!   every record with an id `<=` it was delivered. It is rewritten on every
//!   `ack` (write `acked.tmp`, then rename: the file is always whole). It is not
//!   fsynced: losing a watermark update after a crash only means records are
//!   delivered again, and InfluxDB / MQTT consumers de-duplicate by timestamp
//!   or sequence number.
//! - A segment is deleted once every record in it is acknowledged (the
//!   segment being appended to is kept until it is closed).
//!
//! # Durability
//!
//! `append` writes into a 64 KiB buffered writer; `sync` flushes it and
//! fsyncs the open segment (and the directory after a new segment was
//! created). The caller batches: the engine task calls `begin_sync` every
//! `flush_interval`, before it takes more input, and runs the returned
//! [`SyncJob`] (the fsyncs) on a blocking thread without the spool's lock,
//! so neither the sink's reads nor the engine's appends wait for the disk;
//! the next flush starts only after that job has finished. A power loss loses at most
//! the records appended since the last `sync`; a process crash (`kill -9`)
//! loses at most the records still in the buffer, also appended since the
//! last `sync` (what reached the kernel survives, at worst with a torn last
//! record, which recovery truncates). `tests/crash_influx.rs` measures it.
//!
//! # Recovery (`open`)
//!
//! For each class, segments are scanned in id order:
//! - A torn tail (fewer bytes left than a header, or a length that runs past
//!   the end of the file, or an absurd length) is truncated away. In the
//!   newest segment that is the normal result of a crash between appends and
//!   `sync` (WARN); in an older segment it is corruption (ERROR).
//! - A record whose CRC does not match is skipped, counted
//!   ([`Spool::corrupt_records`], `gaswatch_spool_corrupt_records_total`) and
//!   logged at ERROR with the segment path and byte offset; the records around
//!   it are delivered. (A flipped bit in a length field can make the rest of
//!   that segment look torn; the format has no resynchronisation marker.)
//!   The offsets found corrupt are remembered, so a later read skips the
//!   record without counting it again; a record that goes bad after `open`
//!   is counted and logged when it is read.
//! - Segments with no valid record, or fully acknowledged, are deleted.
//! - The next id is one past the highest id seen (or the watermark, if higher).
//!
//! # Size cap
//!
//! When the segments of all classes together exceed `max_bytes`, the oldest
//! telemetry segments are deleted (ERROR with the id range, the time range of
//! the samples (`first_time`, `last_time`, from the record headers), the
//! number of unacknowledged records lost and of the samples in them (lines
//! counted in the dropped segments);
//! `gaswatch_spool_dropped_records_total`, and
//! `gaswatch_points_dropped_total{reason="spool_full"}` in samples). The cap is checked on every
//! append, so the spool exceeds it by at most one record.
//! Alarm and balance records are never dropped: if only they are left the
//! spool grows past the cap (WARN, once per episode).
//!
//! # Reading
//!
//! Each class keeps one cached reader (file handle, buffered reader and byte
//! position). The sink reads sequentially (`after` = the last id it read), so
//! in steady state a read continues where the last one stopped and touches
//! only the bytes just appended (usually still in the page cache). A read
//! that goes backwards (a retry from the watermark) reopens the segment and
//! skips forward. Every record read is CRC-checked again.

use super::{ClassStats, Record, RecordClass, SpoolConfig, SpoolError, TimeSpan};
use crate::model::Timestamp;
use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Bytes before the payload: len, crc, id, first_ns, last_ns.
const HEADER: u64 = 32;
/// Size of a record header on disk (for tests and capacity planning).
pub const HEADER_BYTES: usize = HEADER as usize;
/// Largest payload accepted; a larger length on disk is treated as corruption.
pub const MAX_RECORD_BYTES: usize = 64 << 20;
const SEGMENT_EXT: &str = "seg";
const ACK_FILE: &str = "acked";
const ACK_TMP: &str = "acked.tmp";
const MIN_SEGMENT_BYTES: u64 = 4 << 10;
const MAX_SEGMENT_BYTES: u64 = 8 << 20;

/// The fsyncs a [`Spool::begin_sync`] still owes. Running it on another
/// thread is safe: it holds duplicate file handles, so a segment sealed or
/// deleted meanwhile is synced (or its unlinked inode synced) harmlessly.
#[derive(Debug, Default)]
pub struct SyncJob {
    files: Vec<(File, PathBuf)>,
    dirs: Vec<PathBuf>,
}

impl SyncJob {
    /// fdatasync every segment written to, fsync every directory changed.
    pub fn run(self) -> Result<(), SpoolError> {
        for (file, path) in &self.files {
            file.sync_data().map_err(io_err(path))?;
        }
        for dir in &self.dirs {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io_err(dir))?;
        }
        Ok(())
    }

    /// Nothing to do: no record was appended since the last sync.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty() && self.dirs.is_empty()
    }

    /// Adds another spool's owed fsyncs to this job.
    pub fn merge(&mut self, other: SyncJob) {
        self.files.extend(other.files);
        self.dirs.extend(other.dirs);
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn segment_name(first_id: u64) -> String {
    format!("{first_id:020}.{SEGMENT_EXT}")
}

/// CRC of a frame: the header from `id` on, then the payload.
fn crc_of(header_tail: &[u8], payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(header_tail);
    h.update(payload);
    h.finalize()
}

/// One segment file as the index knows it.
#[derive(Debug)]
struct Segment {
    /// Id in the file name; no record in the file has a smaller id.
    first_id: u64,
    /// Highest id in the file.
    last_id: u64,
    /// Valid bytes (every complete, framed record; the reader never reads past).
    bytes: u64,
    path: PathBuf,
    /// Time span of the records in it that carry one.
    span: Option<TimeSpan>,
    /// Byte offsets of records found corrupt (counted and logged once).
    corrupt_at: Vec<u64>,
}

impl Segment {
    /// Records in this segment with an id above `acked` (exact unless some
    /// were skipped as corrupt).
    fn unacked(&self, acked: u64) -> u64 {
        self.last_id
            .saturating_sub(acked.max(self.first_id.saturating_sub(1)))
    }
}

/// A record header as read from disk.
struct Header {
    len: u32,
    crc: u32,
    id: u64,
    span: Option<TimeSpan>,
}

fn le4(b: &[u8; HEADER as usize], at: usize) -> [u8; 4] {
    let mut o = [0u8; 4];
    o.copy_from_slice(&b[at..at + 4]);
    o
}

fn le8(b: &[u8; HEADER as usize], at: usize) -> [u8; 8] {
    let mut o = [0u8; 8];
    o.copy_from_slice(&b[at..at + 8]);
    o
}

fn parse_header(b: &[u8; HEADER as usize]) -> Header {
    let first_ns = i64::from_le_bytes(le8(b, 16));
    let last_ns = i64::from_le_bytes(le8(b, 24));
    Header {
        len: u32::from_le_bytes(le4(b, 0)),
        crc: u32::from_le_bytes(le4(b, 4)),
        id: u64::from_le_bytes(le8(b, 8)),
        span: (first_ns != 0 || last_ns != 0).then_some(TimeSpan { first_ns, last_ns }),
    }
}

fn encode_header(
    len: u32,
    id: u64,
    span: Option<TimeSpan>,
    payload: &[u8],
) -> [u8; HEADER as usize] {
    let mut h = [0u8; HEADER as usize];
    let span = span.unwrap_or(TimeSpan {
        first_ns: 0,
        last_ns: 0,
    });
    h[0..4].copy_from_slice(&len.to_le_bytes());
    h[8..16].copy_from_slice(&id.to_le_bytes());
    h[16..24].copy_from_slice(&span.first_ns.to_le_bytes());
    h[24..32].copy_from_slice(&span.last_ns.to_le_bytes());
    let crc = crc_of(&h[8..], payload);
    h[4..8].copy_from_slice(&crc.to_le_bytes());
    h
}

/// The union of two optional spans.
fn widen(a: Option<TimeSpan>, b: Option<TimeSpan>) -> Option<TimeSpan> {
    match (a, b) {
        (Some(a), Some(b)) => Some(TimeSpan {
            first_ns: a.first_ns.min(b.first_ns),
            last_ns: a.last_ns.max(b.last_ns),
        }),
        (a, b) => a.or(b),
    }
}

/// Cached read position within one segment.
#[derive(Debug)]
struct Cursor {
    seg_first: u64,
    reader: BufReader<File>,
    /// Byte offset of the next record.
    pos: u64,
    /// Highest id before `pos` (or `seg_first - 1` at the start).
    last: u64,
}

#[derive(Debug)]
struct ClassLog {
    class: RecordClass,
    /// The sink's name, for logs and metrics.
    sink: String,
    dir: PathBuf,
    segments: VecDeque<Segment>,
    /// Writer on `segments.back()` while that segment is open for appends.
    writer: Option<BufWriter<File>>,
    unsynced: bool,
    dir_unsynced: bool,
    next_id: u64,
    acked: u64,
    /// Bytes of all segments held.
    bytes: u64,
    dropped: u64,
    /// Union of the time spans of the records dropped by the cap, since open.
    dropped_span: Option<TimeSpan>,
    corrupt: u64,
    cursor: Option<Cursor>,
    scratch: Vec<u8>,
}

/// A sink's durable spool. See the module docs for the format.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    sink: String,
    classes: [ClassLog; 3],
    max_bytes: u64,
    segment_bytes: u64,
    over_cap: bool,
}

fn idx(class: RecordClass) -> usize {
    class as usize
}

impl Spool {
    /// Opens (or creates) the spool in `dir`, recovering what is there.
    pub fn open(dir: &Path, config: &SpoolConfig) -> Result<Spool, SpoolError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let sink = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "spool".to_string());
        let [a, b, t] = RecordClass::ALL;
        let classes = [
            ClassLog::open(dir, a, &sink)?,
            ClassLog::open(dir, b, &sink)?,
            ClassLog::open(dir, t, &sink)?,
        ];
        let segment_bytes = (config.max_bytes / 8).clamp(MIN_SEGMENT_BYTES, MAX_SEGMENT_BYTES);
        let mut spool = Spool {
            dir: dir.to_path_buf(),
            sink,
            classes,
            max_bytes: config.max_bytes,
            segment_bytes,
            over_cap: false,
        };
        spool.enforce_cap()?;
        Ok(spool)
    }

    /// The folder this spool lives in (sinks put their quarantine files here).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends a record with no time span; it is durable after the next
    /// [`Spool::sync`]. Returns the record's id.
    pub fn append(&mut self, class: RecordClass, payload: &[u8]) -> Result<u64, SpoolError> {
        self.append_spanning(class, payload, None)
    }

    /// Appends a record whose samples cover `span` (reported if the size cap
    /// ever drops it); durable after the next [`Spool::sync`]. Returns the
    /// record's id.
    pub fn append_spanning(
        &mut self,
        class: RecordClass,
        payload: &[u8],
        span: Option<TimeSpan>,
    ) -> Result<u64, SpoolError> {
        let log = &mut self.classes[idx(class)];
        let id = log.append(payload, span, self.segment_bytes)?;
        if self.total_bytes() > self.max_bytes {
            self.enforce_cap()?;
        } else {
            self.over_cap = false;
        }
        Ok(id)
    }

    /// The id the next append to `class` gets.
    pub fn next_id(&self, class: RecordClass) -> u64 {
        self.classes[idx(class)].next_id
    }

    /// Makes every appended record durable (fsync).
    pub fn sync(&mut self) -> Result<(), SpoolError> {
        self.begin_sync()?.run()
    }

    /// A [`SyncJob`] failed: what it covered is not known to be durable, so
    /// the next [`Spool::begin_sync`] syncs the open segments and the
    /// directory again even when nothing new was appended. (Segments sealed
    /// since are not re-synced: after a failed fsync Linux gives no
    /// guarantee for a retry either; the error was logged and receipts were
    /// held back.)
    pub fn sync_failed(&mut self) {
        for log in &mut self.classes {
            log.unsynced = log.writer.is_some();
            log.dir_unsynced = true;
        }
    }

    /// The first half of [`Spool::sync`]: hands every appended record to the
    /// kernel and returns the fsyncs still owed, to be run without the
    /// spool (and its lock): the sink keeps reading and the engine keeps
    /// appending while the disk catches up (group commit). The records are
    /// durable once [`SyncJob::run`] returns `Ok`.
    pub fn begin_sync(&mut self) -> Result<SyncJob, SpoolError> {
        let mut job = SyncJob::default();
        for log in &mut self.classes {
            log.begin_sync(&mut job)?;
        }
        Ok(job)
    }

    /// Hands every buffered record to the operating system without an
    /// fsync: from then on it survives a crash of this process (`kill -9`),
    /// though not a power loss. The engine task calls it after routing
    /// alarms, before it journals them, so the alarm journal never holds an
    /// alarm that a process crash took out of the spool.
    pub fn write_out(&mut self) -> Result<(), SpoolError> {
        for log in &mut self.classes {
            if let (Some(w), Some(seg)) = (log.writer.as_mut(), log.segments.back())
                && !w.buffer().is_empty()
            {
                w.flush().map_err(io_err(&seg.path))?;
            }
        }
        Ok(())
    }

    /// Copies into `out` up to `max_records` / about `max_bytes` (at least one
    /// record) of the unacknowledged records of `class` whose id is greater
    /// than `after`, oldest first. Does not remove them.
    pub fn read(
        &mut self,
        class: RecordClass,
        after: u64,
        max_records: usize,
        max_bytes: usize,
        out: &mut Vec<Record>,
    ) -> Result<(), SpoolError> {
        self.classes[idx(class)].read(after, max_records, max_bytes, out)
    }

    /// Acknowledges every record of `class` with id <= `upto`: they are
    /// delivered and may be deleted.
    pub fn ack(&mut self, class: RecordClass, upto: u64) -> Result<(), SpoolError> {
        self.classes[idx(class)].ack(upto)
    }

    /// Depth of one class. `bytes` is the on-disk size of the segments still
    /// held (a partly acknowledged segment counts whole).
    pub fn stats(&self, class: RecordClass) -> ClassStats {
        let log = &self.classes[idx(class)];
        ClassStats {
            records: log.segments.iter().map(|s| s.unacked(log.acked)).sum(),
            bytes: log.bytes,
            dropped: log.dropped,
        }
    }

    /// The union of the time spans of the records of `class` dropped by the
    /// size cap since open (`None` if none, or none carried a span).
    pub fn dropped_span(&self, class: RecordClass) -> Option<TimeSpan> {
        self.classes[idx(class)].dropped_span
    }

    /// Records of `class` skipped because their CRC did not match, since open.
    pub fn corrupt_records(&self, class: RecordClass) -> u64 {
        self.classes[idx(class)].corrupt
    }

    /// The acknowledgement watermark of `class`.
    pub fn acked(&self, class: RecordClass) -> u64 {
        self.classes[idx(class)].acked
    }

    fn total_bytes(&self) -> u64 {
        self.classes.iter().map(|c| c.bytes).sum()
    }

    /// Deletes the oldest telemetry segments while over the cap.
    fn enforce_cap(&mut self) -> Result<(), SpoolError> {
        let mut total = self.total_bytes();
        if total <= self.max_bytes {
            self.over_cap = false;
            return Ok(());
        }
        let t = &mut self.classes[idx(RecordClass::Telemetry)];
        let (mut lost, mut first_lost, mut last_lost) = (0u64, None, 0u64);
        let (mut span_lost, mut samples_lost) = (None, 0u64);
        while total > self.max_bytes {
            if t.segments.len() == 1
                && let Some(w) = t.writer.as_mut()
            {
                // The segment being appended to: its buffered records count too.
                w.flush().map_err(io_err(&t.dir))?;
            }
            let Some(front) = t.segments.front() else {
                break;
            };
            let n = front.unacked(t.acked);
            if n > 0 {
                first_lost.get_or_insert(front.first_id.max(t.acked + 1));
                last_lost = front.last_id;
                lost += n;
                span_lost = widen(span_lost, front.span);
                samples_lost += count_lines(front, t.acked);
            }
            total -= front.bytes;
            t.remove_front()?;
        }
        if lost > 0 {
            t.dropped += lost;
            t.dropped_span = widen(t.dropped_span, span_lost);
            let (first_time, last_time) = match span_lost {
                // Nanoseconds: the bounds are exact sample timestamps.
                Some(s) => (
                    humantime::format_rfc3339_nanos(Timestamp(s.first_ns).to_system_time())
                        .to_string(),
                    humantime::format_rfc3339_nanos(Timestamp(s.last_ns).to_system_time())
                        .to_string(),
                ),
                None => ("unknown".to_string(), "unknown".to_string()),
            };
            metrics::counter!("gaswatch_spool_dropped_records_total", "sink" => self.sink.clone(), "class" => "telemetry")
                .increment(lost);
            metrics::counter!("gaswatch_points_dropped_total", "reason" => "spool_full")
                .increment(samples_lost);
            tracing::error!(
                sink = %self.sink,
                class = "telemetry",
                first_id = first_lost.unwrap_or(0),
                last_id = last_lost,
                %first_time,
                %last_time,
                records = lost,
                samples = samples_lost,
                max_bytes = self.max_bytes,
                "Spool over its size cap: dropped the oldest telemetry."
            );
        }
        if total > self.max_bytes {
            if !self.over_cap {
                tracing::warn!(
                    sink = %self.sink,
                    bytes = total,
                    max_bytes = self.max_bytes,
                    "Spool over its size cap with only alarms and balance results left; they are never dropped, so it grows."
                );
            }
            self.over_cap = true;
        } else {
            self.over_cap = false;
        }
        Ok(())
    }
}

/// What reading one frame found.
enum Frame {
    /// A complete record; `crc_ok` tells whether it is intact. The payload is
    /// in the scratch buffer.
    Record {
        id: u64,
        len: u64,
        crc_ok: bool,
        span: Option<TimeSpan>,
    },
    /// A partial or implausible record: the rest of the segment is unusable.
    Torn,
    /// No bytes left.
    End,
}

/// Reads one frame of at most `remaining` bytes.
fn read_frame(r: &mut impl Read, remaining: u64, scratch: &mut Vec<u8>) -> io::Result<Frame> {
    if remaining == 0 {
        return Ok(Frame::End);
    }
    if remaining < HEADER {
        return Ok(Frame::Torn);
    }
    let mut hb = [0u8; HEADER as usize];
    if let Err(e) = r.read_exact(&mut hb) {
        return if e.kind() == io::ErrorKind::UnexpectedEof {
            Ok(Frame::Torn)
        } else {
            Err(e)
        };
    }
    let h = parse_header(&hb);
    let len = u64::from(h.len);
    if len > MAX_RECORD_BYTES as u64 || HEADER + len > remaining {
        return Ok(Frame::Torn);
    }
    scratch.clear();
    scratch.resize(h.len as usize, 0);
    if let Err(e) = r.read_exact(scratch) {
        return if e.kind() == io::ErrorKind::UnexpectedEof {
            Ok(Frame::Torn)
        } else {
            Err(e)
        };
    }
    Ok(Frame::Record {
        id: h.id,
        len: HEADER + len,
        crc_ok: crc_of(&hb[8..], scratch) == h.crc,
        span: h.span,
    })
}

/// Samples in the records of `seg` with an id above `acked`: telemetry
/// payloads are line protocol, one sample per `\n`-terminated line. Read
/// only when the size cap drops the segment, so `gaswatch_points_dropped_total`
/// counts samples, not records. A record that cannot be read counts 0; a
/// record sent but not yet acknowledged (a batch in flight, live data during
/// a backfill) counts although it may have arrived: an upper bound.
fn count_lines(seg: &Segment, acked: u64) -> u64 {
    let Ok(f) = File::open(&seg.path) else {
        return 0;
    };
    let mut r = BufReader::new(f);
    let (mut remaining, mut scratch, mut n) = (seg.bytes, Vec::new(), 0u64);
    while let Ok(Frame::Record {
        id, len, crc_ok, ..
    }) = read_frame(&mut r, remaining, &mut scratch)
    {
        remaining -= len;
        if id > acked && crc_ok {
            n += scratch.iter().filter(|&&b| b == b'\n').count() as u64;
        }
    }
    n
}

/// The result of scanning one segment on open.
struct Scan {
    last_id: u64,
    span: Option<TimeSpan>,
    corrupt_at: Vec<u64>,
    records: u64,
    valid_bytes: u64,
    file_bytes: u64,
}

impl ClassLog {
    fn open(root: &Path, class: RecordClass, sink: &str) -> Result<ClassLog, SpoolError> {
        let dir = root.join(class.as_str());
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let acked = read_ack(&dir, sink, class);
        let mut files = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_err(&dir))? {
            let entry = entry.map_err(io_err(&dir))?;
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some(SEGMENT_EXT) {
                continue;
            }
            let Some(first) = path
                .file_stem()
                .and_then(|s| s.to_str())
                .and_then(|s| s.parse::<u64>().ok())
            else {
                tracing::warn!(sink, path = %path.display(), "Ignoring a file in the spool that is not a segment.");
                continue;
            };
            files.push((first, path));
        }
        files.sort();
        let mut log = ClassLog {
            class,
            sink: sink.to_string(),
            dir,
            segments: VecDeque::new(),
            writer: None,
            unsynced: false,
            dir_unsynced: false,
            next_id: 1,
            acked,
            bytes: 0,
            dropped: 0,
            dropped_span: None,
            corrupt: 0,
            cursor: None,
            scratch: Vec::new(),
        };
        let n_files = files.len();
        let mut highest = acked;
        for (i, (first_id, path)) in files.into_iter().enumerate() {
            let scan = log.scan(&path, sink)?;
            if scan.valid_bytes < scan.file_bytes {
                let newest = i + 1 == n_files;
                let dropped_bytes = scan.file_bytes - scan.valid_bytes;
                if newest {
                    tracing::warn!(sink, class = class.as_str(), segment = %path.display(), offset = scan.valid_bytes, bytes = dropped_bytes,
                        "Truncating a torn tail of the spool (records appended after the last sync before a crash).");
                } else {
                    tracing::error!(sink, class = class.as_str(), segment = %path.display(), offset = scan.valid_bytes, bytes = dropped_bytes,
                        "Truncating a corrupt segment tail in the spool; records after this offset are lost.");
                }
                let f = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(io_err(&path))?;
                f.set_len(scan.valid_bytes).map_err(io_err(&path))?;
                f.sync_all().map_err(io_err(&path))?;
            }
            highest = highest.max(scan.last_id);
            if scan.records == 0 || scan.last_id <= acked {
                fs::remove_file(&path).map_err(io_err(&path))?;
                log.dir_unsynced = true;
                continue;
            }
            log.bytes += scan.valid_bytes;
            log.segments.push_back(Segment {
                first_id,
                last_id: scan.last_id,
                bytes: scan.valid_bytes,
                path,
                span: scan.span,
                corrupt_at: scan.corrupt_at,
            });
        }
        log.next_id = highest + 1;
        Ok(log)
    }

    fn scan(&mut self, path: &Path, sink: &str) -> Result<Scan, SpoolError> {
        let file = File::open(path).map_err(io_err(path))?;
        let file_bytes = file.metadata().map_err(io_err(path))?.len();
        let mut r = BufReader::with_capacity(64 << 10, file);
        let mut pos = 0;
        let (mut last_id, mut records, mut span) = (0, 0, None);
        let mut corrupt_at = Vec::new();
        loop {
            match read_frame(&mut r, file_bytes - pos, &mut self.scratch).map_err(io_err(path))? {
                Frame::End | Frame::Torn => break,
                Frame::Record {
                    id,
                    len,
                    crc_ok,
                    span: rec_span,
                } => {
                    if crc_ok {
                        last_id = last_id.max(id);
                        records += 1;
                        span = widen(span, rec_span);
                    } else {
                        corrupt_at.push(pos);
                        self.corrupt += 1;
                        metrics::counter!("gaswatch_spool_corrupt_records_total", "sink" => sink.to_string(), "class" => self.class.as_str())
                            .increment(1);
                        tracing::error!(sink, class = self.class.as_str(), segment = %path.display(), offset = pos,
                            "Spool record failed its CRC check; skipped (lost).");
                    }
                    pos += len;
                }
            }
        }
        Ok(Scan {
            last_id,
            span,
            corrupt_at,
            records,
            valid_bytes: pos,
            file_bytes,
        })
    }

    fn append(
        &mut self,
        payload: &[u8],
        span: Option<TimeSpan>,
        segment_bytes: u64,
    ) -> Result<u64, SpoolError> {
        let len = u32::try_from(payload.len())
            .ok()
            .filter(|&l| l as usize <= MAX_RECORD_BYTES)
            .ok_or_else(|| SpoolError::Io {
                path: self.dir.display().to_string(),
                source: io::Error::new(io::ErrorKind::InvalidInput, "record larger than 64 MiB"),
            })?;
        let frame = HEADER + u64::from(len);
        let full = self
            .segments
            .back()
            .is_some_and(|s| s.bytes > 0 && s.bytes + frame > segment_bytes);
        if self.writer.is_none() || full {
            self.roll()?;
        }
        let id = self.next_id;
        let (Some(w), Some(seg)) = (self.writer.as_mut(), self.segments.back_mut()) else {
            return Err(SpoolError::Io {
                path: self.dir.display().to_string(),
                source: io::Error::other("no open segment"),
            });
        };
        let header = encode_header(len, id, span, payload);
        let res = w.write_all(&header).and_then(|()| w.write_all(payload));
        if let Err(e) = res {
            // The file may now hold part of this record: close it so the
            // next append starts a new segment; the index never points past
            // the last complete record.
            let path = seg.path.clone();
            self.writer = None;
            return Err(io_err(&path)(e));
        }
        seg.last_id = id;
        seg.span = widen(seg.span, span);
        seg.bytes += frame;
        self.bytes += frame;
        self.next_id += 1;
        self.unsynced = true;
        Ok(id)
    }

    /// Closes the open segment (flush + fsync) and starts a new one.
    fn roll(&mut self) -> Result<(), SpoolError> {
        self.seal()?;
        let path = self.dir.join(segment_name(self.next_id));
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&path)
            .map_err(io_err(&path))?;
        self.writer = Some(BufWriter::with_capacity(64 << 10, file));
        self.dir_unsynced = true;
        self.segments.push_back(Segment {
            first_id: self.next_id,
            last_id: self.next_id.saturating_sub(1),
            bytes: 0,
            path,
            span: None,
            corrupt_at: Vec::new(),
        });
        Ok(())
    }

    /// Flushes and fsyncs the open segment and stops appending to it.
    fn seal(&mut self) -> Result<(), SpoolError> {
        self.sync()?;
        self.writer = None;
        // A segment created but never written to is of no use.
        if self.segments.back().is_some_and(|s| s.bytes == 0) {
            self.remove_back()?;
        }
        Ok(())
    }

    fn sync(&mut self) -> Result<(), SpoolError> {
        let mut job = SyncJob::default();
        self.begin_sync(&mut job)?;
        job.run()
    }

    /// Flushes the open segment's buffer to the kernel and adds the fsyncs
    /// it still needs (a duplicate handle of the segment, the directory
    /// after a segment was created or deleted) to `job`.
    fn begin_sync(&mut self, job: &mut SyncJob) -> Result<(), SpoolError> {
        if self.unsynced {
            if let (Some(w), Some(seg)) = (self.writer.as_mut(), self.segments.back()) {
                w.flush().map_err(io_err(&seg.path))?;
                let file = w.get_ref().try_clone().map_err(io_err(&seg.path))?;
                job.files.push((file, seg.path.clone()));
            }
            self.unsynced = false;
        }
        if self.dir_unsynced {
            job.dirs.push(self.dir.clone());
            self.dir_unsynced = false;
        }
        Ok(())
    }

    fn remove_front(&mut self) -> Result<(), SpoolError> {
        if self.segments.len() == 1 && self.writer.is_some() {
            self.writer = None;
            self.unsynced = false;
        }
        match self.segments.pop_front() {
            Some(seg) => self.delete(seg),
            None => Ok(()),
        }
    }

    fn remove_back(&mut self) -> Result<(), SpoolError> {
        match self.segments.pop_back() {
            Some(seg) => self.delete(seg),
            None => Ok(()),
        }
    }

    /// Deletes a segment already taken out of `segments`.
    fn delete(&mut self, seg: Segment) -> Result<(), SpoolError> {
        self.bytes -= seg.bytes;
        if self
            .cursor
            .as_ref()
            .is_some_and(|c| c.seg_first == seg.first_id)
        {
            self.cursor = None;
        }
        fs::remove_file(&seg.path).map_err(io_err(&seg.path))?;
        self.dir_unsynced = true;
        Ok(())
    }

    fn read(
        &mut self,
        after: u64,
        max_records: usize,
        max_bytes: usize,
        out: &mut Vec<Record>,
    ) -> Result<(), SpoolError> {
        let after = after.max(self.acked);
        if let (Some(w), Some(seg)) = (self.writer.as_mut(), self.segments.back())
            && !w.buffer().is_empty()
        {
            w.flush().map_err(io_err(&seg.path))?;
        }
        let (mut n, mut bytes) = (0usize, 0usize);
        let mut si = self.segments.partition_point(|s| s.last_id <= after);
        while si < self.segments.len() && n < max_records {
            let seg = &self.segments[si];
            let reuse = self
                .cursor
                .as_ref()
                .is_some_and(|c| c.seg_first == seg.first_id && c.last <= after);
            if !reuse {
                let file = File::open(&seg.path).map_err(io_err(&seg.path))?;
                self.cursor = Some(Cursor {
                    seg_first: seg.first_id,
                    reader: BufReader::with_capacity(64 << 10, file),
                    pos: 0,
                    last: seg.first_id.saturating_sub(1),
                });
            }
            let Some(cur) = self.cursor.as_mut() else {
                break;
            };
            while n < max_records {
                let frame_start = cur.pos;
                match read_frame(&mut cur.reader, seg.bytes - cur.pos, &mut self.scratch)
                    .map_err(io_err(&seg.path))?
                {
                    Frame::End => break,
                    Frame::Torn => {
                        // The index says these bytes are complete records:
                        // the file changed under us. Drop the cursor.
                        self.cursor = None;
                        return Err(io_err(&seg.path)(io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("segment shorter than indexed at offset {frame_start}"),
                        )));
                    }
                    Frame::Record {
                        id, len, crc_ok, ..
                    } => {
                        let payload_len = self.scratch.len();
                        if id > after && crc_ok && n > 0 && bytes + payload_len > max_bytes {
                            // Leave it for the next read.
                            cur.reader
                                .seek(SeekFrom::Start(frame_start))
                                .map_err(io_err(&seg.path))?;
                            return Ok(());
                        }
                        cur.pos += len;
                        if !crc_ok {
                            // Found on open already: counted and logged then.
                            if !seg.corrupt_at.contains(&frame_start) {
                                self.corrupt += 1;
                                metrics::counter!("gaswatch_spool_corrupt_records_total", "sink" => self.sink.clone(), "class" => self.class.as_str())
                                    .increment(1);
                                tracing::error!(sink = %self.sink, class = self.class.as_str(), segment = %seg.path.display(), offset = frame_start,
                                    "Spool record failed its CRC check on read; skipped (lost).");
                            }
                            continue;
                        }
                        cur.last = id;
                        if id > after {
                            n += 1;
                            bytes += payload_len;
                            out.push(Record {
                                id,
                                class: self.class,
                                payload: self.scratch.clone(),
                            });
                        }
                    }
                }
            }
            si += 1;
        }
        Ok(())
    }

    fn ack(&mut self, upto: u64) -> Result<(), SpoolError> {
        let upto = upto.min(self.next_id.saturating_sub(1));
        if upto <= self.acked {
            return Ok(());
        }
        self.acked = upto;
        let tmp = self.dir.join(ACK_TMP);
        let dst = self.dir.join(ACK_FILE);
        fs::write(&tmp, format!("{upto}\n")).map_err(io_err(&tmp))?;
        fs::rename(&tmp, &dst).map_err(io_err(&dst))?;
        while let Some(front) = self.segments.front() {
            let open = self.segments.len() == 1 && self.writer.is_some();
            if front.last_id > self.acked || open {
                break;
            }
            self.remove_front()?;
        }
        Ok(())
    }
}

fn read_ack(dir: &Path, sink: &str, class: RecordClass) -> u64 {
    let path = dir.join(ACK_FILE);
    match fs::read_to_string(&path) {
        Ok(s) => match s.trim().parse::<u64>() {
            Ok(v) => v,
            Err(_) => {
                tracing::warn!(sink, class = class.as_str(), path = %path.display(),
                    "Spool watermark file is unreadable; delivering every record still held again.");
                0
            }
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
        Err(error) => {
            tracing::warn!(sink, class = class.as_str(), path = %path.display(), %error,
                "Cannot read the spool watermark file; delivering every record still held again.");
            0
        }
    }
}
