//! Durable spool between the engine and each remote sink.
//!
//! One [`Spool`] per sink, holding three classes of records in separate
//! queues: alarms, balance results and telemetry. Delivery order is alarms
//! first, then balance results, then telemetry, each oldest first. A record
//! is removed only when the sink acknowledges it (after the remote confirmed
//! it). Telemetry may drop its oldest records when the spool is over its size
//! cap (counted and logged); alarms and balance results are never dropped.
//!
//! [`SharedSpool`] wraps a spool for the two tasks that use it: the engine
//! task appends, the sink task reads and acknowledges.

pub mod config;

use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::Notify;

pub use config::SpoolConfig;

/// The class of a record; decides delivery order and drop policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RecordClass {
    Alarm,
    Balance,
    Telemetry,
}

impl RecordClass {
    pub const ALL: [RecordClass; 3] = [
        RecordClass::Alarm,
        RecordClass::Balance,
        RecordClass::Telemetry,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RecordClass::Alarm => "alarm",
            RecordClass::Balance => "balance",
            RecordClass::Telemetry => "telemetry",
        }
    }
}

/// One spooled record. `id` increases by one per append within a class and
/// keeps increasing across restarts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub id: u64,
    pub class: RecordClass,
    pub payload: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Depth of one class's queue, for metrics and /health.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClassStats {
    pub records: u64,
    pub bytes: u64,
    /// Telemetry records dropped because the spool was over its cap, since start.
    pub dropped: u64,
}

/// A sink's spool. (In-memory placeholder with the final API; the durable
/// segment log replaces the internals.)
#[derive(Debug)]
pub struct Spool {
    queues: [VecDeque<Record>; 3],
    next_id: [u64; 3],
    stats: [ClassStats; 3],
    max_bytes: u64,
}

fn idx(class: RecordClass) -> usize {
    class as usize
}

impl Spool {
    /// Opens (or creates) the spool in `dir`, recovering what is there.
    pub fn open(_dir: &Path, config: &SpoolConfig) -> Result<Spool, SpoolError> {
        Ok(Spool {
            queues: Default::default(),
            next_id: [1; 3],
            stats: Default::default(),
            max_bytes: config.max_bytes,
        })
    }

    /// Appends a record; it is durable after the next [`Spool::sync`].
    /// Returns the record's id.
    pub fn append(&mut self, class: RecordClass, payload: &[u8]) -> Result<u64, SpoolError> {
        let i = idx(class);
        let id = self.next_id[i];
        self.next_id[i] += 1;
        self.queues[i].push_back(Record {
            id,
            class,
            payload: payload.to_vec(),
        });
        self.stats[i].records += 1;
        self.stats[i].bytes += payload.len() as u64;
        let total: u64 = self.stats.iter().map(|s| s.bytes).sum();
        if total > self.max_bytes {
            let t = idx(RecordClass::Telemetry);
            while self.stats.iter().map(|s| s.bytes).sum::<u64>() > self.max_bytes {
                let Some(r) = self.queues[t].pop_front() else {
                    break;
                };
                self.stats[t].records -= 1;
                self.stats[t].bytes -= r.payload.len() as u64;
                self.stats[t].dropped += 1;
            }
        }
        Ok(id)
    }

    /// Makes every appended record durable (fsync).
    pub fn sync(&mut self) -> Result<(), SpoolError> {
        Ok(())
    }

    /// Copies into `out` up to `max_records` / about `max_bytes` of the
    /// unacknowledged records of `class` whose id is greater than `after`,
    /// oldest first. Does not remove them.
    pub fn read(
        &mut self,
        class: RecordClass,
        after: u64,
        max_records: usize,
        max_bytes: usize,
        out: &mut Vec<Record>,
    ) -> Result<(), SpoolError> {
        let mut bytes = 0;
        for r in self.queues[idx(class)].iter().filter(|r| r.id > after) {
            if out.len() >= max_records || (bytes > 0 && bytes + r.payload.len() > max_bytes) {
                break;
            }
            bytes += r.payload.len();
            out.push(r.clone());
        }
        Ok(())
    }

    /// Acknowledges every record of `class` with id <= `upto`: they are
    /// delivered and may be deleted.
    pub fn ack(&mut self, class: RecordClass, upto: u64) -> Result<(), SpoolError> {
        let i = idx(class);
        while self.queues[i].front().is_some_and(|r| r.id <= upto) {
            if let Some(r) = self.queues[i].pop_front() {
                self.stats[i].records -= 1;
                self.stats[i].bytes -= r.payload.len() as u64;
            }
        }
        Ok(())
    }

    pub fn stats(&self, class: RecordClass) -> ClassStats {
        self.stats[idx(class)]
    }
}

/// A spool shared by one producer (the engine task) and one consumer (a sink task).
#[derive(Debug)]
pub struct SharedSpool {
    name: String,
    spool: Mutex<Spool>,
    notify: Notify,
}

impl SharedSpool {
    pub fn new(name: impl Into<String>, spool: Spool) -> Arc<SharedSpool> {
        Arc::new(SharedSpool {
            name: name.into(),
            spool: Mutex::new(spool),
            notify: Notify::new(),
        })
    }

    /// The sink's name, for logs and metrics.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Locks the spool. Hold the lock only for in-memory work and short writes.
    pub fn lock(&self) -> MutexGuard<'_, Spool> {
        // A poisoned lock means a panic elsewhere; the spool's own state is
        // still consistent (every method leaves it so), so keep going.
        self.spool.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wakes the consumer after appends.
    pub fn notify(&self) {
        self.notify.notify_one();
    }

    /// Waits until the producer calls [`SharedSpool::notify`].
    pub async fn notified(&self) {
        self.notify.notified().await;
    }
}
