//! `gaswatch replay --influx-url URL --influx-db DB` (v1, no auth) or
//! `--influx-from-config` (the station config's `[sinks.influxdb]`: v1 or
//! v2, credentials from env or files, HTTPS with its CA): the replay's
//! results also go to InfluxDB, every line tagged `source=<origin>`
//! (default `replay`), so replayed and live results sit on the same
//! dashboard.
//!
//! Nothing here encodes or sends lines itself: the replay's [`Router`]
//! encodes them with the daemon's line-protocol code (with the origin tag)
//! into a spool, and the daemon's own InfluxDB writer task delivers the
//! spool (batches, gzip, retries, quarantine of rejected lines), on a small
//! tokio runtime beside the synchronous replay.
//!
//! Invariants:
//! - Back-pressure instead of loss: a replay runs far faster than InfluxDB
//!   takes lines, and the spool drops the oldest telemetry over its cap. So
//!   the replay waits while more than [`BACKLOG_BYTES`] are waiting in the
//!   spool; the cap is never reached.
//! - The replay ends only when the spool is empty (every line accepted or
//!   quarantined). If InfluxDB accepts nothing for `stall` (an outage, a
//!   wrong database), the replay stops with an error naming the URL and the
//!   spool folder, which is kept.
//! - A temporary spool folder is removed at the end when everything was
//!   delivered and nothing was quarantined; otherwise it is kept and named.
//!
//! [`Router`]: crate::topology::route::Router

use crate::buffer::{RecordClass, SharedSpool, Spool, SpoolConfig};
use crate::sinks::influxdb::config::{InfluxApi, InfluxConfig};
use crate::sinks::influxdb::writer::{QUARANTINE_FILE, WriterConfig};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Most bytes waiting in the spool before the replay pauses.
pub const BACKLOG_BYTES: u64 = 16 << 20;

/// Errors of the InfluxDB output.
#[derive(Debug, thiserror::Error)]
pub enum InfluxOutError {
    #[error("--influx-url: {0}")]
    Config(String),
    #[error("--influx-url: cannot start the InfluxDB writer: {0}")]
    Runtime(std::io::Error),
    #[error("InfluxDB output spool {path}: {message}")]
    Spool { path: String, message: String },
    #[error(
        "InfluxDB at {url} accepted nothing for {stall:?} ({records} records still waiting in {spool}); check the URL, the database and the server log"
    )]
    Stalled {
        url: String,
        stall: Duration,
        records: u64,
        spool: String,
    },
}

/// What the InfluxDB output delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InfluxReport {
    pub url: String,
    pub database: String,
    /// Spool records (each a batch of lines) delivered.
    pub records: u64,
    /// Where rejected lines went, when InfluxDB refused some.
    pub quarantine: Option<PathBuf>,
}

/// Options of the InfluxDB output.
#[derive(Debug, Clone, PartialEq)]
pub struct InfluxOutOptions {
    /// Where to write: URL, API, database or org/bucket, credentials
    /// (batching, timeout and pacing are set by the replay).
    pub influx: InfluxConfig,
    /// Tag value of `source` on every line.
    pub origin: String,
    /// Spool folder; a temporary one when `None`.
    pub spool_dir: Option<PathBuf>,
    /// Give up when InfluxDB accepts nothing for this long.
    pub stall: Duration,
}

/// The running output: a spool, the writer task and its runtime.
pub struct InfluxOut {
    runtime: tokio::runtime::Runtime,
    spool: Arc<SharedSpool>,
    cancel: CancellationToken,
    writer: Option<tokio::task::JoinHandle<()>>,
    spool_dir: PathBuf,
    temporary: bool,
    opts: InfluxOutOptions,
}

impl std::fmt::Debug for InfluxOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InfluxOut")
            .field("url", &self.opts.influx.url)
            .field("spool_dir", &self.spool_dir)
            .finish_non_exhaustive()
    }
}

fn spool_err(path: &Path, e: impl std::fmt::Display) -> InfluxOutError {
    InfluxOutError::Spool {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

impl InfluxOutOptions {
    /// `--influx-url URL --influx-db DB`: the v1 API without credentials.
    pub fn v1(url: &str, database: &str, origin: &str) -> InfluxOutOptions {
        InfluxOutOptions {
            influx: InfluxConfig::v1(url, database),
            origin: origin.to_string(),
            spool_dir: None,
            stall: Duration::from_secs(60),
        }
    }

    /// The database (v1) or `org/bucket` (v2) written to, for reports.
    fn target(&self) -> String {
        match self.influx.api {
            InfluxApi::V1 => self.influx.database.clone().unwrap_or_default(),
            InfluxApi::V2 => format!(
                "{}/{}",
                self.influx.org.as_deref().unwrap_or(""),
                self.influx.bucket.as_deref().unwrap_or("")
            ),
        }
    }
}

impl InfluxOut {
    /// Opens the spool and starts the writer.
    pub fn start(opts: InfluxOutOptions) -> Result<InfluxOut, InfluxOutError> {
        let (spool_dir, temporary) = match &opts.spool_dir {
            Some(d) => (d.clone(), false),
            None => {
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos());
                let d = std::env::temp_dir()
                    .join(format!("gaswatch-replay-{}-{nanos}", std::process::id()));
                (d, true)
            }
        };
        let cfg = InfluxConfig {
            batch_size: 5000,
            flush_interval: Duration::from_millis(200),
            timeout: opts.influx.timeout.max(Duration::from_secs(10)),
            // Everything is backlog here; the replay paces itself instead.
            backfill_lines_per_s: 0,
            ..opts.influx.clone()
        };
        let writer_cfg = WriterConfig::resolve(&cfg, &spool_dir)
            .map_err(|e| InfluxOutError::Config(e.to_string()))?;
        let spool_cfg = SpoolConfig {
            dir: spool_dir.clone(),
            ..SpoolConfig::default()
        };
        let spool = Spool::open(&spool_dir, &spool_cfg).map_err(|e| spool_err(&spool_dir, e))?;
        let spool = SharedSpool::new("influxdb", spool);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(InfluxOutError::Runtime)?;
        let cancel = CancellationToken::new();
        let writer = runtime.spawn(crate::sinks::influxdb::writer::run(
            writer_cfg,
            Arc::clone(&spool),
            cancel.clone(),
        ));
        Ok(InfluxOut {
            runtime,
            spool,
            cancel,
            writer: Some(writer),
            spool_dir,
            temporary,
            opts,
        })
    }

    /// The spool the replay's router appends to.
    pub fn spool(&self) -> Arc<SharedSpool> {
        Arc::clone(&self.spool)
    }

    /// Tag value of `source` on every line.
    pub fn origin(&self) -> &str {
        &self.opts.origin
    }

    /// (records, bytes) waiting, and records acknowledged so far.
    fn depth(&self) -> (u64, u64, u64) {
        let s = self.spool.lock();
        let (mut records, mut bytes, mut acked) = (0, 0, 0);
        for c in RecordClass::ALL {
            let st = s.stats(c);
            records += st.records;
            bytes += st.bytes;
            acked += s.acked(c);
        }
        (records, bytes, acked)
    }

    /// Waits until `done(records, bytes)` holds for what is waiting;
    /// errors when nothing is acknowledged for the stall time.
    fn wait_until(&self, done: impl Fn(u64, u64) -> bool) -> Result<(), InfluxOutError> {
        let (mut records, mut bytes, mut acked) = self.depth();
        let mut progress = Instant::now();
        while !done(records, bytes) {
            self.spool.notify();
            std::thread::sleep(Duration::from_millis(20));
            let (r, b, a) = self.depth();
            (records, bytes) = (r, b);
            if a != acked {
                acked = a;
                progress = Instant::now();
            } else if progress.elapsed() > self.opts.stall {
                return Err(InfluxOutError::Stalled {
                    url: self.opts.influx.url.clone(),
                    stall: self.opts.stall,
                    records,
                    spool: self.spool_dir.display().to_string(),
                });
            }
        }
        Ok(())
    }

    /// Pauses the replay while the spool holds more than [`BACKLOG_BYTES`].
    pub fn pace(&self) -> Result<(), InfluxOutError> {
        self.wait_until(|records, bytes| records == 0 || bytes <= BACKLOG_BYTES)
    }

    /// Waits until everything is delivered, stops the writer and removes a
    /// temporary spool (kept when lines were quarantined).
    pub fn finish(mut self) -> Result<InfluxReport, InfluxOutError> {
        self.spool
            .lock()
            .sync()
            .map_err(|e| spool_err(&self.spool_dir, e))?;
        let result = self.wait_until(|records, _| records == 0);
        self.cancel.cancel();
        if let Some(w) = self.writer.take() {
            let _ = self.runtime.block_on(w);
        }
        result?;
        let acked: u64 = {
            let s = self.spool.lock();
            RecordClass::ALL.iter().map(|&c| s.acked(c)).sum()
        };
        let q = self.spool_dir.join(QUARANTINE_FILE);
        let quarantine = std::fs::metadata(&q)
            .is_ok_and(|m| m.len() > 0)
            .then_some(q);
        if self.temporary && quarantine.is_none() {
            let _ = std::fs::remove_dir_all(&self.spool_dir);
        }
        Ok(InfluxReport {
            url: self.opts.influx.url.clone(),
            database: self.opts.target(),
            records: acked,
            quarantine,
        })
    }
}

impl Drop for InfluxOut {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}
