//! Configuration of the durable spools (`[spool]`).

use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SpoolConfig {
    /// Folder holding one sub-folder per sink.
    #[serde(default = "default_dir")]
    pub dir: PathBuf,
    /// Largest size of one sink's spool in bytes; beyond it the oldest
    /// telemetry is dropped (counted and logged). Alarms are never dropped.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
    /// How often appended records are fsynced, e.g. "1s".
    #[serde(default = "default_flush_interval", with = "humantime_serde")]
    pub flush_interval: Duration,
}

impl Default for SpoolConfig {
    fn default() -> Self {
        SpoolConfig {
            dir: default_dir(),
            max_bytes: default_max_bytes(),
            flush_interval: default_flush_interval(),
        }
    }
}

fn default_dir() -> PathBuf {
    PathBuf::from("data/spool")
}
fn default_max_bytes() -> u64 {
    1 << 30
}
fn default_flush_interval() -> Duration {
    Duration::from_secs(1)
}
