//! Capture files: what the daemon's engine received, in order, so that a
//! replay reproduces the daemon's outputs exactly.
//!
//! The daemon (`gaswatch run --record FILE` or `[record] path`) appends one
//! record for every `Input` it hands `Engine::process` and one for every
//! `Engine::tick(now)`, in the order it made the calls. The engine is
//! deterministic, so feeding the same calls to a fresh engine gives the same
//! samples, alarms and balance windows, byte for byte in every sink format.
//!
//! Format, version 1 (all integers little-endian):
//! ```text
//! file    = MAGIC record*                     MAGIC = "GWCAP01\n" (8 bytes)
//! record  = len:u32 crc:u32 payload[len]      crc = CRC-32 (IEEE) of payload
//! payload = kind:u8 ts:i64 body               ts = ns since the Unix epoch
//! kind 0 header     body = UTF-8 JSON {"station","fingerprint","gaswatch"}; first record, ts = 0
//! kind 1 registers  body = device:u32 block:u32 n:u16 reg:u16*n
//! kind 2 failed     body = device:u32 block:u32 error:u8 code:u8
//!                   error 0 exception (code = Modbus exception code), 1 timeout, 2 transport, 3 malformed
//! kind 3 values     body = n:u32 (tag:u32 value:f64 quality:u8)*n   quality 0 good 1 uncertain 2 bad 3 stale
//! kind 4 tick       body = empty
//! kind 5 reg. part  body = device:u32 block:u32 first:u16 n:u16 reg:u16*n   (a split read: words from offset `first`)
//! kind 6 failed part body = device:u32 block:u32 first:u16 words:u16 error:u8 code:u8
//! kind 7 paused     body = device:u32                (the poller paused a failing unit)
//! kind 8 command    body = action:u8 duration_ns:i64 sent_flag:u8 sent:i64 then four strings
//!                   (request_id, alarm_id, operator) each as len:u16 + UTF-8   (a dispatcher's alarm command)
//! kind 9 archive    body = device:u32 n:u32 (index:u32 hour_end:i64 base_volume:f64 flowing_volume:f64
//!                   pressure:f64 temperature:f64)*n   (flow-computer archive records read back)
//! ```
//! Kind 9 was added without a version change: older readers stop at it with
//! "unknown record kind 9", and no older file contains it.
//! Device, block and tag numbers are indices into the compiled plan, so a
//! capture is only meaningful with a station config of the same *layout*:
//! the header holds a fingerprint of the layout (station, tags and their
//! devices, read blocks and where each point sits in them) and the reader
//! refuses a different one. A second fingerprint covers the *tuning*
//! (scaling and ranges, stale periods, alarms, meters, balance windows and
//! groups, line pack, leak test, gas): a capture replays under other tuning,
//! which is how thresholds are tuned, and the reader says so
//! ([`EventReader::notes`]). Neither covers hosts, ports or sinks. Captures
//! written before the split carry only `fingerprint` (layout and part of
//! the tuning together) and must match it exactly.
//!
//! Robustness: a crash can leave a partial last record; the reader reports
//! it (with the record number) and ends there. A CRC mismatch is reported
//! the same way: after it, lengths cannot be trusted.

use super::{EventReader, ReplayError, ReplayEvent, RowError};
use crate::engine::EnginePlan;
use crate::model::{
    AlarmCommand, ArchiveRecord, BlockId, CommandAction, DeviceId, Input, Quality, ReadError,
    TagId, Timestamp,
};
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

/// First bytes of every capture file; the digits are the format version.
pub const MAGIC: &[u8; 8] = b"GWCAP01\n";

const KIND_HEADER: u8 = 0;
const KIND_REGISTERS: u8 = 1;
const KIND_FAILED: u8 = 2;
const KIND_VALUES: u8 = 3;
const KIND_TICK: u8 = 4;
const KIND_REGISTERS_PART: u8 = 5;
const KIND_FAILED_PART: u8 = 6;
const KIND_DEVICE_PAUSED: u8 = 7;
const KIND_COMMAND: u8 = 8;
const KIND_ARCHIVE: u8 = 9;
/// Larger records are refused as corrupt (a Modbus block is at most 250 bytes).
const MAX_RECORD: u32 = 16 * 1024 * 1024;

/// Hex CRC-32 of a debug form (stable for equal plans within one version).
fn crc_hex(text: &str) -> String {
    format!("{:08x}", crc32fast::hash(text.as_bytes()))
}

/// The fingerprint captures carried before the layout/tuning split (still
/// written, so older readers keep accepting new captures of the same config).
pub fn fingerprint(plan: &EnginePlan) -> String {
    let blocks: Vec<_> = plan.devices.iter().map(|d| &d.blocks).collect();
    crc_hex(&format!(
        "{:?}|{:?}|{:?}|{:?}|{:?}|{}|{}",
        plan.station_id,
        plan.tags,
        blocks,
        plan.alarms,
        plan.meters,
        plan.balance_window_ns,
        plan.balance_min_coverage
    ))
}

/// What the numbers in a capture mean: the station, its tags (name and
/// device) and each read block with where every point sits in it.
pub fn layout_fingerprint(plan: &EnginePlan) -> String {
    let tags: Vec<_> = plan.tags.iter().map(|t| (&t.name, t.device)).collect();
    let blocks: Vec<Vec<_>> = plan
        .devices
        .iter()
        .map(|d| {
            d.blocks
                .iter()
                .map(|b| {
                    let points: Vec<_> = b
                        .points
                        .iter()
                        .map(|p| (p.tag, p.offset, p.data_type, p.order, p.bit, p.len))
                        .collect();
                    (b.register, b.start, b.count, b.words, points)
                })
                .collect()
        })
        .collect();
    crc_hex(&format!("{:?}|{:?}|{:?}", plan.station_id, tags, blocks))
}

/// Everything else in the plan that changes what the engine makes of the
/// same inputs: scaling and ranges, stale periods, alarms, meters, balance,
/// line pack, leak test, gas.
pub fn tuning_fingerprint(plan: &EnginePlan) -> String {
    let decoders: Vec<_> = plan
        .devices
        .iter()
        .flat_map(|d| d.blocks.iter().map(|b| &b.points))
        .collect();
    let stale: Vec<_> = plan.tags.iter().map(|t| t.stale_after_ns).collect();
    crc_hex(&format!(
        "{decoders:?}|{stale:?}|{:?}|{:?}|{:?}|{:?}|{}|{}|{}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}",
        plan.alarms,
        plan.alarm_policy,
        plan.meters,
        plan.device_comm_alarm,
        plan.balance_window_ns,
        plan.balance_min_coverage,
        plan.balance_edge_ns,
        plan.windows,
        plan.linepack,
        plan.groups,
        plan.leak,
        plan.gas,
        plan.gc,
    ))
}

fn quality_code(q: Quality) -> u8 {
    match q {
        Quality::Good => 0,
        Quality::Uncertain => 1,
        Quality::Bad => 2,
        Quality::Stale => 3,
    }
}

/// Appends capture records to a file. Buffered: call [`CaptureWriter::flush`]
/// regularly (the daemon does it every spool flush interval).
#[derive(Debug)]
pub struct CaptureWriter {
    path: PathBuf,
    out: BufWriter<File>,
    payload: Vec<u8>,
    records: u64,
}

impl CaptureWriter {
    /// Creates (truncates) `path` and writes the magic and the header.
    pub fn create(path: &Path, plan: &EnginePlan) -> Result<CaptureWriter, ReplayError> {
        let io = |source| ReplayError::Io {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let file = File::create(path).map_err(io)?;
        let mut w = CaptureWriter {
            path: path.to_path_buf(),
            out: BufWriter::with_capacity(64 * 1024, file),
            payload: Vec::with_capacity(512),
            records: 0,
        };
        w.out.write_all(MAGIC).map_err(io)?;
        let header = serde_json::json!({
            "station": plan.station_id,
            "fingerprint": fingerprint(plan),
            "layout": layout_fingerprint(plan),
            "tuning": tuning_fingerprint(plan),
            "gaswatch": env!("CARGO_PKG_VERSION"),
        });
        w.begin(KIND_HEADER, Timestamp(0));
        w.payload.extend_from_slice(header.to_string().as_bytes());
        w.end()?;
        Ok(w)
    }

    fn begin(&mut self, kind: u8, ts: Timestamp) {
        self.payload.clear();
        self.payload.push(kind);
        self.payload.extend_from_slice(&ts.nanos().to_le_bytes());
    }

    fn end(&mut self) -> Result<(), ReplayError> {
        let len = self.payload.len() as u32;
        let crc = crc32fast::hash(&self.payload);
        let r = (|| {
            self.out.write_all(&len.to_le_bytes())?;
            self.out.write_all(&crc.to_le_bytes())?;
            self.out.write_all(&self.payload)
        })();
        self.records += 1;
        r.map_err(|source| ReplayError::Io {
            path: self.path.clone(),
            source,
        })
    }

    fn put_block(&mut self, device: DeviceId, block: BlockId) {
        self.payload.extend_from_slice(&device.0.to_le_bytes());
        self.payload.extend_from_slice(&block.0.to_le_bytes());
    }

    /// Registers as `n:u16 reg:u16*n` (at most 65,535; a block has at most 125).
    fn put_regs(&mut self, regs: &[u16]) {
        let n = u16::try_from(regs.len()).unwrap_or(u16::MAX);
        self.payload.extend_from_slice(&n.to_le_bytes());
        for r in regs.iter().take(usize::from(n)) {
            self.payload.extend_from_slice(&r.to_le_bytes());
        }
    }

    /// Records one input, before the engine processes it.
    pub fn input(&mut self, input: &Input) -> Result<(), ReplayError> {
        match input {
            // Delivery bookkeeping for MQTT acknowledgements: not an engine input.
            Input::Receipt(_) => return Ok(()),
            Input::Registers {
                device,
                block,
                ts,
                regs,
            } => {
                self.begin(KIND_REGISTERS, *ts);
                self.put_block(*device, *block);
                self.put_regs(regs);
            }
            Input::ReadFailed {
                device,
                block,
                ts,
                error,
            } => {
                self.begin(KIND_FAILED, *ts);
                self.put_block(*device, *block);
                self.payload.extend_from_slice(&error_code(*error));
            }
            Input::RegistersPart {
                device,
                block,
                first,
                ts,
                regs,
            } => {
                self.begin(KIND_REGISTERS_PART, *ts);
                self.put_block(*device, *block);
                self.payload.extend_from_slice(&first.to_le_bytes());
                self.put_regs(regs);
            }
            Input::ReadFailedPart {
                device,
                block,
                first,
                words,
                ts,
                error,
            } => {
                self.begin(KIND_FAILED_PART, *ts);
                self.put_block(*device, *block);
                self.payload.extend_from_slice(&first.to_le_bytes());
                self.payload.extend_from_slice(&words.to_le_bytes());
                self.payload.extend_from_slice(&error_code(*error));
            }
            Input::DevicePaused { device, ts } => {
                self.begin(KIND_DEVICE_PAUSED, *ts);
                self.payload.extend_from_slice(&device.0.to_le_bytes());
            }
            Input::Command(cmd) => {
                self.begin(KIND_COMMAND, cmd.ts);
                let (action, duration_ns) = match cmd.action {
                    CommandAction::Ack => (0u8, 0i64),
                    CommandAction::Shelve { duration_ns } => (1, duration_ns),
                    CommandAction::Unshelve => (2, 0),
                    CommandAction::Reset => (3, 0),
                };
                self.payload.push(action);
                self.payload.extend_from_slice(&duration_ns.to_le_bytes());
                self.payload.push(u8::from(cmd.sent.is_some()));
                self.payload
                    .extend_from_slice(&cmd.sent.map_or(0, |t| t.nanos()).to_le_bytes());
                for text in [&cmd.request_id, &cmd.alarm_id, &cmd.operator] {
                    let bytes = text.as_bytes();
                    let n = u16::try_from(bytes.len()).unwrap_or(u16::MAX);
                    self.payload.extend_from_slice(&n.to_le_bytes());
                    self.payload.extend_from_slice(&bytes[..usize::from(n)]);
                }
            }
            Input::Archive {
                device,
                ts,
                records,
            } => {
                self.begin(KIND_ARCHIVE, *ts);
                self.payload.extend_from_slice(&device.0.to_le_bytes());
                self.payload
                    .extend_from_slice(&(records.len() as u32).to_le_bytes());
                for r in records {
                    self.payload.extend_from_slice(&r.index.to_le_bytes());
                    self.payload
                        .extend_from_slice(&r.hour_end.nanos().to_le_bytes());
                    for v in [
                        r.base_volume_sm3,
                        r.flowing_volume_m3,
                        r.pressure_kpa,
                        r.temperature_c,
                    ] {
                        self.payload.extend_from_slice(&v.to_bits().to_le_bytes());
                    }
                }
            }
            Input::Values { ts, values } => {
                self.begin(KIND_VALUES, *ts);
                let n = values.len() as u32;
                self.payload.extend_from_slice(&n.to_le_bytes());
                for (tag, v, q) in values {
                    self.payload.extend_from_slice(&tag.0.to_le_bytes());
                    self.payload.extend_from_slice(&v.to_bits().to_le_bytes());
                    self.payload.push(quality_code(*q));
                }
            }
        }
        self.end()
    }

    /// Records one `tick(now)`, before the engine runs it.
    pub fn tick(&mut self, now: Timestamp) -> Result<(), ReplayError> {
        self.begin(KIND_TICK, now);
        self.end()
    }

    /// Flushes the buffer and fsyncs the file.
    pub fn flush(&mut self) -> Result<(), ReplayError> {
        let io = |source| ReplayError::Io {
            path: self.path.clone(),
            source,
        };
        self.out.flush().map_err(io)?;
        self.out.get_ref().sync_data().map_err(io)
    }

    /// The first half of [`CaptureWriter::flush`]: hands the buffer to the
    /// kernel and returns a duplicate handle whose `sync_data` (on another
    /// thread) makes it durable.
    pub fn begin_flush(&mut self) -> Result<File, ReplayError> {
        let io = |source| ReplayError::Io {
            path: self.path.clone(),
            source,
        };
        self.out.flush().map_err(io)?;
        self.out.get_ref().try_clone().map_err(io)
    }

    /// Records written so far (header included).
    pub fn records(&self) -> u64 {
        self.records
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Reads a capture file back as replay events.
pub struct CaptureReader<R> {
    r: R,
    path: PathBuf,
    payload: Vec<u8>,
    record: u64,
    pos: u64,
    done: bool,
    /// What the user should know about this capture (other tuning).
    notes: Vec<String>,
}

/// Little-endian cursor over one payload.
struct Cur<'a>(&'a [u8]);

impl Cur<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (h, t) = self.0.split_first_chunk::<N>()?;
        self.0 = t;
        Some(*h)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take::<1>().map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take().map(u16::from_le_bytes)
    }
    fn u32(&mut self) -> Option<u32> {
        self.take().map(u32::from_le_bytes)
    }
    fn i64(&mut self) -> Option<i64> {
        self.take().map(i64::from_le_bytes)
    }
    fn f64(&mut self) -> Option<f64> {
        self.take().map(|b| f64::from_bits(u64::from_le_bytes(b)))
    }
}

/// A read error as two bytes: kind and exception code.
fn error_code(e: ReadError) -> [u8; 2] {
    match e {
        ReadError::Exception(c) => [0, c],
        ReadError::Timeout => [1, 0],
        ReadError::Transport => [2, 0],
        ReadError::Malformed => [3, 0],
    }
}

fn read_block(c: &mut Cur<'_>) -> Result<(DeviceId, BlockId), String> {
    let short = || "record is shorter than its kind needs".to_string();
    Ok((
        DeviceId(c.u32().ok_or_else(short)?),
        BlockId(c.u32().ok_or_else(short)?),
    ))
}

fn read_regs(c: &mut Cur<'_>) -> Result<Vec<u16>, String> {
    let short = || "record is shorter than its kind needs".to_string();
    let n = c.u16().ok_or_else(short)?;
    (0..n).map(|_| c.u16().ok_or_else(short)).collect()
}

fn read_error(c: &mut Cur<'_>) -> Result<ReadError, String> {
    let short = || "record is shorter than its kind needs".to_string();
    let e = c.u8().ok_or_else(short)?;
    let code = c.u8().ok_or_else(short)?;
    Ok(match e {
        0 => ReadError::Exception(code),
        1 => ReadError::Timeout,
        2 => ReadError::Transport,
        3 => ReadError::Malformed,
        other => return Err(format!("unknown read error code {other}")),
    })
}

/// Decodes one payload (not the header).
fn decode(payload: &[u8]) -> Result<ReplayEvent, String> {
    let mut c = Cur(payload);
    let short = || "record is shorter than its kind needs".to_string();
    let kind = c.u8().ok_or_else(short)?;
    let ts = Timestamp(c.i64().ok_or_else(short)?);
    let ev = match kind {
        KIND_REGISTERS => {
            let (device, block) = read_block(&mut c)?;
            let regs = read_regs(&mut c)?;
            Input::Registers {
                device,
                block,
                ts,
                regs,
            }
        }
        KIND_FAILED => {
            let (device, block) = read_block(&mut c)?;
            let error = read_error(&mut c)?;
            Input::ReadFailed {
                device,
                block,
                ts,
                error,
            }
        }
        KIND_REGISTERS_PART => {
            let (device, block) = read_block(&mut c)?;
            let first = c.u16().ok_or_else(short)?;
            let regs = read_regs(&mut c)?;
            Input::RegistersPart {
                device,
                block,
                first,
                ts,
                regs,
            }
        }
        KIND_FAILED_PART => {
            let (device, block) = read_block(&mut c)?;
            let first = c.u16().ok_or_else(short)?;
            let words = c.u16().ok_or_else(short)?;
            let error = read_error(&mut c)?;
            Input::ReadFailedPart {
                device,
                block,
                first,
                words,
                ts,
                error,
            }
        }
        KIND_COMMAND => {
            let action = match c.u8().ok_or_else(short)? {
                0 => CommandAction::Ack,
                1 => CommandAction::Shelve {
                    duration_ns: c.i64().ok_or_else(short)?,
                },
                2 => CommandAction::Unshelve,
                3 => CommandAction::Reset,
                other => return Err(format!("unknown command action {other}")),
            };
            if !matches!(action, CommandAction::Shelve { .. }) {
                c.i64().ok_or_else(short)?;
            }
            let has_sent = c.u8().ok_or_else(short)? != 0;
            let sent = c.i64().ok_or_else(short)?;
            let mut text = || -> Result<String, String> {
                let n = c.u16().ok_or_else(short)?;
                let bytes: Vec<u8> = (0..n)
                    .map(|_| c.u8().ok_or_else(short))
                    .collect::<Result<_, _>>()?;
                String::from_utf8(bytes).map_err(|_| "command text is not UTF-8".to_string())
            };
            let (request_id, alarm_id, operator) = (text()?, text()?, text()?);
            Input::Command(AlarmCommand {
                request_id,
                alarm_id,
                operator,
                action,
                ts,
                sent: has_sent.then_some(Timestamp(sent)),
            })
        }
        KIND_DEVICE_PAUSED => Input::DevicePaused {
            device: DeviceId(c.u32().ok_or_else(short)?),
            ts,
        },
        KIND_VALUES => {
            let n = c.u32().ok_or_else(short)?;
            let mut values = Vec::with_capacity(n.min(4096) as usize);
            for _ in 0..n {
                let tag = TagId(c.u32().ok_or_else(short)?);
                let v = c.f64().ok_or_else(short)?;
                let q = match c.u8().ok_or_else(short)? {
                    0 => Quality::Good,
                    1 => Quality::Uncertain,
                    2 => Quality::Bad,
                    3 => Quality::Stale,
                    other => return Err(format!("unknown quality code {other}")),
                };
                values.push((tag, v, q));
            }
            Input::Values { ts, values }
        }
        KIND_ARCHIVE => {
            let device = DeviceId(c.u32().ok_or_else(short)?);
            let n = c.u32().ok_or_else(short)?;
            let mut records = Vec::with_capacity(n.min(4096) as usize);
            for _ in 0..n {
                records.push(ArchiveRecord {
                    index: c.u32().ok_or_else(short)?,
                    hour_end: Timestamp(c.i64().ok_or_else(short)?),
                    base_volume_sm3: c.f64().ok_or_else(short)?,
                    flowing_volume_m3: c.f64().ok_or_else(short)?,
                    pressure_kpa: c.f64().ok_or_else(short)?,
                    temperature_c: c.f64().ok_or_else(short)?,
                });
            }
            Input::Archive {
                device,
                ts,
                records,
            }
        }
        KIND_TICK => return Ok(ReplayEvent::Tick(ts)),
        other => return Err(format!("unknown record kind {other}")),
    };
    Ok(ReplayEvent::Input(ev))
}

impl<R: Read> CaptureReader<R> {
    /// Checks the magic and the header against `plan`.
    pub fn new(mut r: R, path: PathBuf, plan: &EnginePlan) -> Result<Self, ReplayError> {
        let format = |message: String| ReplayError::Format {
            path: path.clone(),
            message,
        };
        let mut magic = [0u8; 8];
        r.read_exact(&mut magic)
            .map_err(|_| format("not a capture file (shorter than the magic)".into()))?;
        if &magic != MAGIC {
            return Err(format(if magic.starts_with(b"GWCAP") {
                "capture format version not supported by this gaswatch (expected GWCAP01)".into()
            } else {
                "not a capture file (no GWCAP01 magic)".into()
            }));
        }
        let mut me = CaptureReader {
            r,
            path: path.clone(),
            payload: Vec::with_capacity(512),
            record: 0,
            pos: 8,
            done: false,
            notes: Vec::new(),
        };
        match me.read_record() {
            Ok(true) if me.payload.first() == Some(&KIND_HEADER) => {}
            Ok(_) => return Err(format("record 1: missing header".into())),
            Err(m) => return Err(format(format!("record 1: {m}"))),
        }
        let header: serde_json::Value = serde_json::from_slice(me.payload.get(9..).unwrap_or(&[]))
            .map_err(|e| format(format!("record 1: header is not JSON: {e}")))?;
        let refuse = |what: &str, got: &str, want: &str| {
            format(format!(
                "recorded with a different station config ({what}: station {}, fingerprint {got}; this config: station {}, fingerprint {want}); replay it with the config the daemon ran with, or one that differs only in tuning (limits, scaling, balance, leak)",
                header["station"], plan.station_id
            ))
        };
        match header["layout"].as_str() {
            Some(got) => {
                let want = layout_fingerprint(plan);
                if got != want {
                    return Err(refuse("points or registers differ", got, &want));
                }
                if header["tuning"].as_str() != Some(tuning_fingerprint(plan).as_str()) {
                    me.notes.push(format!(
                        "{}: recorded under other tuning (limits, scaling, alarms, balance, leak or gas differ from this config): the results are what this config makes of the recorded inputs, not what the daemon reported",
                        path.display()
                    ));
                }
            }
            None => {
                let want = fingerprint(plan);
                let got = header["fingerprint"].as_str().unwrap_or("");
                if got != want {
                    return Err(refuse(
                        "an older capture, which must match exactly",
                        got,
                        &want,
                    ));
                }
            }
        }
        Ok(me)
    }

    /// Reads the next record into `self.payload`; false at a clean end.
    fn read_record(&mut self) -> Result<bool, String> {
        let mut head = [0u8; 8];
        let n = read_full(&mut self.r, &mut head);
        if !matches!(n, Ok(0)) {
            self.record += 1;
        }
        match n {
            Ok(0) => return Ok(false),
            Ok(8) => {}
            Ok(_) => return Err("truncated record header (the recorder stopped mid-write)".into()),
            Err(e) => return Err(e.to_string()),
        }
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
        let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        if len > MAX_RECORD {
            return Err(format!("record length {len} is implausible: corrupt file"));
        }
        self.payload.resize(len as usize, 0);
        match read_full(&mut self.r, &mut self.payload) {
            Ok(n) if n == len as usize => {}
            Ok(_) => return Err("truncated record (the recorder stopped mid-write)".into()),
            Err(e) => return Err(e.to_string()),
        }
        self.pos += 8 + u64::from(len);
        if crc32fast::hash(&self.payload) != crc {
            return Err("CRC mismatch: corrupt record".into());
        }
        Ok(true)
    }
}

/// Reads until `buf` is full or the end; returns the bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

impl<R: Read> EventReader for CaptureReader<R> {
    fn next_event(&mut self, bad: &mut Vec<RowError>) -> Result<Option<ReplayEvent>, ReplayError> {
        loop {
            if self.done {
                return Ok(None);
            }
            match self.read_record() {
                Ok(false) => return Ok(None),
                Ok(true) => match decode(&self.payload) {
                    Ok(ev) => return Ok(Some(ev)),
                    Err(message) => bad.push(RowError {
                        file: self.path.clone(),
                        line: self.record,
                        message,
                    }),
                },
                Err(message) => {
                    self.done = true;
                    bad.push(RowError {
                        file: self.path.clone(),
                        line: self.record,
                        message: format!("{message}; the rest of the file is not read"),
                    });
                }
            }
        }
    }

    fn position(&self) -> u64 {
        self.pos
    }

    fn notes(&self) -> &[String] {
        &self.notes
    }
}

/// The daemon's recording hook: a [`CaptureWriter`] that, on a write error,
/// logs once, counts `gaswatch_capture_errors_total` and stops recording
/// (the daemon keeps running: a capture is a diagnostic, not the data path).
#[derive(Debug, Default)]
pub struct Recorder {
    writer: Option<CaptureWriter>,
}

impl Recorder {
    /// A recorder writing to `path`, or an inactive one for `None`.
    pub fn open(path: Option<&Path>, plan: &EnginePlan) -> Result<Recorder, ReplayError> {
        let writer = path.map(|p| CaptureWriter::create(p, plan)).transpose()?;
        if let Some(w) = &writer {
            tracing::info!(path = %w.path().display(), "Recording engine inputs and ticks.");
        }
        Ok(Recorder { writer })
    }

    fn check(&mut self, r: Result<(), ReplayError>) {
        if let Err(error) = r {
            metrics::counter!("gaswatch_capture_errors_total").increment(1);
            tracing::error!(%error, "Cannot write the capture file; recording stops, the daemon goes on.");
            self.writer = None;
        }
    }

    /// Records an input (call before `Engine::process`).
    pub fn input(&mut self, input: &Input) {
        if let Some(w) = &mut self.writer {
            let r = w.input(input);
            self.check(r);
        }
    }

    /// Records a tick (call before `Engine::tick`).
    pub fn tick(&mut self, now: Timestamp) {
        if let Some(w) = &mut self.writer {
            let r = w.tick(now);
            self.check(r);
        }
    }

    /// Ends recording (flushed) with a logged reason, e.g. a reload that
    /// changed the plan: a capture replays with one plan only.
    pub fn stop(&mut self, reason: &str) {
        self.flush();
        if let Some(w) = self.writer.take() {
            tracing::warn!(path = %w.path().display(), reason, records = w.records(), "Recording stopped.");
        }
    }

    /// Hands what was recorded to the kernel and returns the file to fsync
    /// off the engine task (`None` when not recording or on an error, which
    /// stops recording as in [`Recorder::flush`]).
    pub fn begin_flush(&mut self) -> Option<(File, PathBuf)> {
        let w = self.writer.as_mut()?;
        match w.begin_flush() {
            Ok(f) => Some((f, w.path().to_path_buf())),
            Err(e) => {
                self.check(Err(e));
                None
            }
        }
    }

    /// Makes what was recorded durable.
    pub fn flush(&mut self) {
        if let Some(w) = &mut self.writer {
            let r = w.flush();
            self.check(r);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::sources::replay::EventReader;

    #[test]
    fn every_input_kind_round_trips() {
        let text = include_str!("../../../config/city-gate.toml");
        let c = Config::from_str_named(text, Path::new("city-gate.toml")).expect("config");
        let plan = EnginePlan::compile(&c);
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.gwcap");
        let (d, b, ts) = (DeviceId(1), BlockId(0), Timestamp(42));
        let inputs = vec![
            Input::Registers {
                device: d,
                block: b,
                ts,
                regs: vec![1, 2, 3],
            },
            Input::ReadFailed {
                device: d,
                block: b,
                ts,
                error: ReadError::Exception(2),
            },
            Input::RegistersPart {
                device: d,
                block: b,
                first: 2,
                ts,
                regs: vec![7, 8],
            },
            Input::ReadFailedPart {
                device: d,
                block: b,
                first: 4,
                words: 2,
                ts,
                error: ReadError::Timeout,
            },
            Input::DevicePaused { device: d, ts },
            Input::Values {
                ts,
                values: vec![(TagId(3), 1.5, Quality::Uncertain)],
            },
            Input::Archive {
                device: d,
                ts,
                records: vec![crate::model::ArchiveRecord {
                    index: 17,
                    hour_end: Timestamp::from_secs(1_767_229_200),
                    base_volume_sm3: 30_123.5,
                    flowing_volume_m3: 2_012.25,
                    pressure_kpa: 3_501.0,
                    temperature_c: -1.5,
                }],
            },
        ];
        let mut w = CaptureWriter::create(&path, &plan).expect("create");
        for i in &inputs {
            w.input(i).expect("write");
        }
        w.tick(Timestamp(99)).expect("tick");
        w.flush().expect("flush");
        drop(w);
        let f = std::fs::File::open(&path).expect("open");
        let mut r =
            CaptureReader::new(std::io::BufReader::new(f), path.clone(), &plan).expect("reader");
        let mut bad = Vec::new();
        let mut got = Vec::new();
        while let Some(ev) = r.next_event(&mut bad).expect("read") {
            got.push(ev);
        }
        assert!(bad.is_empty(), "{bad:?}");
        let mut want: Vec<ReplayEvent> = inputs.into_iter().map(ReplayEvent::Input).collect();
        want.push(ReplayEvent::Tick(Timestamp(99)));
        assert_eq!(got, want);
    }
}
