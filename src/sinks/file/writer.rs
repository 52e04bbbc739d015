//! The local file sink: the embedded default that needs no server.
//!
//! Writes into one folder:
//! - `telemetry-YYYY-MM-DD.lp`: line protocol, one file per UTC day. The day
//!   is the UTC date at write time (not of the samples): simple, and a file
//!   never has to be reopened for late data. Rotation happens on the first
//!   write of a new day.
//! - `alarms.jsonl`: one alarm event JSON per line (the MQTT `alarms/events` payload).
//! - `balance.jsonl`: one balance result JSON per line.
//!
//! Invariants: files are only appended to; every record ends with `\n`
//! (added when missing); writes are buffered and reach the disk at
//! [`FileSink::flush`] (flush + fsync), which the caller runs every flush
//! interval, or in two halves: [`FileSink::begin_flush`] (to the kernel) on
//! the engine task and the fsync of the returned handles on a blocking thread.

use super::config::FileSinkConfig;
use crate::model::Timestamp;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum FileSinkError {
    #[error("file sink {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> FileSinkError + '_ {
    move |source| FileSinkError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// One append-only buffered file.
#[derive(Debug)]
struct Appender {
    path: PathBuf,
    out: BufWriter<File>,
    /// Written to since the last sync (or its hand-over).
    unsynced: bool,
}

impl Appender {
    fn open(path: PathBuf) -> Result<Appender, FileSinkError> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io_err(&path))?;
        Ok(Appender {
            path,
            out: BufWriter::with_capacity(64 * 1024, file),
            unsynced: false,
        })
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), FileSinkError> {
        if bytes.is_empty() {
            return Ok(());
        }
        self.unsynced = true;
        self.out.write_all(bytes).map_err(io_err(&self.path))?;
        if !bytes.ends_with(b"\n") {
            self.out.write_all(b"\n").map_err(io_err(&self.path))?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), FileSinkError> {
        self.out.flush().map_err(io_err(&self.path))?;
        self.out.get_ref().sync_data().map_err(io_err(&self.path))?;
        self.unsynced = false;
        Ok(())
    }

    /// Hands the buffer to the kernel and, when something was written since
    /// the last sync, adds a duplicate handle to fsync to `owed`.
    fn begin_flush(&mut self, owed: &mut Vec<(File, PathBuf)>) -> Result<(), FileSinkError> {
        self.out.flush().map_err(io_err(&self.path))?;
        if self.unsynced {
            let dup = self.out.get_ref().try_clone().map_err(io_err(&self.path))?;
            owed.push((dup, self.path.clone()));
            self.unsynced = false;
        }
        Ok(())
    }
}

/// The file sink. Not shared: owned by one task.
#[derive(Debug)]
pub struct FileSink {
    dir: PathBuf,
    /// The UTC date (`YYYY-MM-DD`) of the open telemetry file, and the file.
    telemetry: Option<(String, Appender)>,
    alarms: Appender,
    balance: Appender,
}

/// `YYYY-MM-DD` of `ts` in UTC.
fn utc_date(ts: Timestamp) -> String {
    let mut s = ts.to_rfc3339();
    s.truncate(10);
    s
}

impl FileSink {
    /// Creates the folder if needed and opens `alarms.jsonl` and
    /// `balance.jsonl` for appending. Errors name the path.
    pub fn open(cfg: &FileSinkConfig) -> Result<FileSink, FileSinkError> {
        std::fs::create_dir_all(&cfg.dir).map_err(io_err(&cfg.dir))?;
        Ok(FileSink {
            dir: cfg.dir.clone(),
            telemetry: None,
            alarms: Appender::open(cfg.dir.join("alarms.jsonl"))?,
            balance: Appender::open(cfg.dir.join("balance.jsonl"))?,
        })
    }

    /// Appends line protocol to today's (UTC) telemetry file.
    pub fn write_telemetry(&mut self, lines: &[u8]) -> Result<(), FileSinkError> {
        self.write_telemetry_at(Timestamp::now(), lines)
    }

    /// Appends line protocol to the telemetry file of `now`'s UTC date,
    /// flushing and closing the previous day's file when the date changed.
    pub fn write_telemetry_at(
        &mut self,
        now: Timestamp,
        lines: &[u8],
    ) -> Result<(), FileSinkError> {
        let date = utc_date(now);
        let current = self.telemetry.as_ref().is_some_and(|(d, _)| *d == date);
        if !current {
            if let Some((_, mut old)) = self.telemetry.take() {
                old.flush()?;
            }
            let path = self.dir.join(format!("telemetry-{date}.lp"));
            self.telemetry = Some((date, Appender::open(path)?));
        }
        match &mut self.telemetry {
            Some((_, f)) => f.write(lines),
            None => Ok(()),
        }
    }

    /// Appends one alarm event JSON line to `alarms.jsonl`.
    pub fn write_alarm(&mut self, json_line: &[u8]) -> Result<(), FileSinkError> {
        self.alarms.write(json_line)
    }

    /// Appends one balance result JSON line to `balance.jsonl`.
    pub fn write_balance(&mut self, json_line: &[u8]) -> Result<(), FileSinkError> {
        self.balance.write(json_line)
    }

    /// Flushes every buffer and fsyncs the files.
    pub fn flush(&mut self) -> Result<(), FileSinkError> {
        if let Some((_, f)) = &mut self.telemetry {
            f.flush()?;
        }
        self.alarms.flush()?;
        self.balance.flush()
    }

    /// The first half of [`FileSink::flush`], for group commit: hands every
    /// buffer to the kernel now and adds a duplicate handle of each file
    /// written since the last sync to `owed`; the caller fsyncs those on a
    /// blocking thread (`File::sync_data`), so the engine task never waits
    /// for the disk.
    pub fn begin_flush(&mut self, owed: &mut Vec<(File, PathBuf)>) -> Result<(), FileSinkError> {
        if let Some((_, f)) = &mut self.telemetry {
            f.begin_flush(owed)?;
        }
        self.alarms.begin_flush(owed)?;
        self.balance.begin_flush(owed)
    }

    /// A flush job failed: every open file is synced again by the next one.
    pub fn sync_failed(&mut self) {
        if let Some((_, f)) = &mut self.telemetry {
            f.unsynced = true;
        }
        self.alarms.unsynced = true;
        self.balance.unsynced = true;
    }

    /// The folder written to.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}
