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
//!
//! The on-disk format, recovery rules and size cap are documented in
//! `spool.rs`.

pub mod config;
mod spool;

use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::Notify;

pub use config::SpoolConfig;
pub use spool::{HEADER_BYTES, MAX_RECORD_BYTES, Spool, SyncJob};

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

/// The time span of the samples in a record, ns since the Unix epoch
/// (inclusive). Stored in the record header so that a record dropped by the
/// size cap can be reported with the hours it covered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeSpan {
    pub first_ns: i64,
    pub last_ns: i64,
}

/// Depth of one class's queue, for metrics and /health.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClassStats {
    pub records: u64,
    pub bytes: u64,
    /// Telemetry records dropped because the spool was over its cap, since start.
    pub dropped: u64,
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

#[cfg(test)]
mod tests;
