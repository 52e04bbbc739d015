//! Replay source: turns files into the same [`Input`]s the live sources hand
//! the engine, so `gaswatch replay` runs recorded or exported data through
//! the very engine the daemon runs.
//!
//! Readers:
//! - [`lineproto`]: InfluxDB line protocol as the file sink writes it, or as
//!   `influx_inspect export` / InfluxDB exports write it (`telemetry` lines
//!   with a `point` tag; other measurements are skipped and counted).
//! - [`csv`]: wide CSV, a `time` column (RFC 3339 or epoch milliseconds) then
//!   one column per point named as in the station config; an empty cell is no
//!   sample.
//! - [`capture`]: capture files recorded by the daemon (`gaswatch run
//!   --record`): every input and every tick, in order, with timestamps.
//!
//! Invariants: a reader never stops at a malformed row; it reports it as a
//! [`RowError`] naming the file and the line and goes on (the caller decides
//! whether to stop, e.g. `--strict`). Readers never read a clock: every
//! timestamp comes from the data.

pub mod capture;
pub mod csv;
pub mod lineproto;

use crate::model::{Input, Timestamp};
use std::fmt;
use std::path::PathBuf;

/// One thing a replay reader yields, in file order.
#[derive(Debug, Clone, PartialEq)]
pub enum ReplayEvent {
    /// An input for `Engine::process`.
    Input(Input),
    /// An explicit `Engine::tick(now)` (only capture files carry these; for
    /// other formats the replay driver derives ticks from the data time).
    Tick(Timestamp),
}

impl ReplayEvent {
    /// The data time of the event.
    pub fn ts(&self) -> Timestamp {
        match self {
            ReplayEvent::Tick(ts) => *ts,
            ReplayEvent::Input(Input::Registers { ts, .. })
            | ReplayEvent::Input(Input::ReadFailed { ts, .. })
            | ReplayEvent::Input(Input::RegistersPart { ts, .. })
            | ReplayEvent::Input(Input::ReadFailedPart { ts, .. })
            | ReplayEvent::Input(Input::DevicePaused { ts, .. })
            | ReplayEvent::Input(Input::Values { ts, .. })
            | ReplayEvent::Input(Input::Archive { ts, .. }) => *ts,
            ReplayEvent::Input(Input::Command(c)) => c.ts,
            // Receipts are never recorded or replayed; they carry no time.
            ReplayEvent::Input(Input::Receipt(_)) => Timestamp(0),
        }
    }
}

/// A row (or record) that could not be used. The replay goes on without it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowError {
    pub file: PathBuf,
    /// 1-based line number (for capture files: the record number).
    pub line: u64,
    pub message: String,
}

impl fmt::Display for RowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file.display(), self.line, self.message)
    }
}

/// Errors of the replay source that stop a file (not a row).
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Format { path: PathBuf, message: String },
}

/// The input formats `gaswatch replay` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    LineProtocol,
    Csv,
    Capture,
}

impl Format {
    /// Guesses the format from the file name, then from the first bytes:
    /// `.csv` -> CSV; `.gwcap` or the capture magic -> capture; anything else
    /// is line protocol.
    pub fn detect(path: &std::path::Path, head: &[u8]) -> Format {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("")
            .to_ascii_lowercase();
        if head.starts_with(capture::MAGIC) || ext == "gwcap" {
            Format::Capture
        } else if ext == "csv" {
            Format::Csv
        } else {
            Format::LineProtocol
        }
    }
}

/// A streaming reader of one replay file.
pub trait EventReader {
    /// The next event in file order, or `None` at the end. Rows that cannot
    /// be used are appended to `bad` and skipped.
    fn next_event(&mut self, bad: &mut Vec<RowError>) -> Result<Option<ReplayEvent>, ReplayError>;
    /// Bytes consumed so far (for progress).
    fn position(&self) -> u64;
    /// Rows skipped on purpose (other measurements, comments), not errors.
    fn skipped(&self) -> u64 {
        0
    }
    /// Things the user should know about the whole file before reading the
    /// results (for example, a capture recorded under other tuning).
    fn notes(&self) -> &[String] {
        &[]
    }
}

/// Parses a quality name as written in line protocol and JSON.
pub fn parse_quality(s: &str) -> Option<crate::model::Quality> {
    use crate::model::Quality;
    match s {
        "good" => Some(Quality::Good),
        "uncertain" => Some(Quality::Uncertain),
        "bad" => Some(Quality::Bad),
        "stale" => Some(Quality::Stale),
        _ => None,
    }
}

/// Opens `path` with the reader for `format` (or the detected one).
pub fn open(
    path: &std::path::Path,
    format: Option<Format>,
    plan: &std::sync::Arc<crate::engine::EnginePlan>,
) -> Result<(Format, Box<dyn EventReader>), ReplayError> {
    use std::io::Read;
    let io = |source| ReplayError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut head = [0u8; 8];
    let n = file.read(&mut head).map_err(io)?;
    drop(file);
    let format = format.unwrap_or_else(|| Format::detect(path, &head[..n]));
    let file = std::fs::File::open(path).map_err(io)?;
    let r = std::io::BufReader::with_capacity(256 * 1024, file);
    let reader: Box<dyn EventReader> = match format {
        Format::LineProtocol => Box::new(lineproto::LineProtocolReader::new(
            r,
            path.to_path_buf(),
            std::sync::Arc::clone(plan),
        )),
        Format::Csv => Box::new(csv::CsvReader::new(
            r,
            path.to_path_buf(),
            std::sync::Arc::clone(plan),
        )?),
        Format::Capture => Box::new(capture::CaptureReader::new(r, path.to_path_buf(), plan)?),
    };
    Ok((format, reader))
}
