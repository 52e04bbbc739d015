//! Configuration of the InfluxDB sink (`[sinks.influxdb]`).

use crate::config::Secret;
use serde::Deserialize;
use std::time::Duration;

/// Which InfluxDB write API to speak.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum InfluxApi {
    /// `POST /write?db=&rp=&precision=ns` (InfluxDB 1.x; 2.x/3.x with DBRP mapping).
    #[default]
    V1,
    /// `POST /api/v2/write?org=&bucket=&precision=ns` with `Authorization: Token`.
    V2,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct InfluxConfig {
    /// Base URL, e.g. "http://127.0.0.1:8086".
    pub url: String,
    /// "v1" (default) or "v2".
    #[serde(default)]
    pub api: InfluxApi,
    /// v1: database name.
    pub database: Option<String>,
    /// v1: retention policy (optional).
    pub retention_policy: Option<String>,
    /// v1: user name (optional).
    pub username: Option<String>,
    /// v1: password, from `{ env = "VAR" }` or `{ file = "/path" }`.
    pub password: Option<Secret>,
    /// v2: organisation.
    pub org: Option<String>,
    /// v2: bucket.
    pub bucket: Option<String>,
    /// v2 (and v1 on 2.x): API token, from `{ env = "VAR" }` or `{ file = "/path" }`.
    pub token: Option<Secret>,
    /// Most lines in one write request.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Longest time a line waits before its batch is sent, e.g. "1s".
    #[serde(default = "default_flush_interval", with = "humantime_serde")]
    pub flush_interval: Duration,
    /// Compress request bodies with gzip.
    #[serde(default = "default_true")]
    pub gzip: bool,
    /// Time allowed for one HTTP request.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Most lines per second of telemetry backlog sent after an outage (or
    /// left in the spool by a previous run), on top of live data, so the
    /// backfill neither starves live data nor floods the database. 0 means
    /// no limit.
    #[serde(default = "default_backfill_lines_per_s")]
    pub backfill_lines_per_s: u64,
    /// https only: PEM file with a CA to trust in addition to the system
    /// roots (a station or company CA).
    #[serde(default)]
    pub tls_ca_file: Option<std::path::PathBuf>,
}

impl InfluxConfig {
    /// The v1 write API at `url` into `database`, no credentials, every
    /// other key at its default (as a `[sinks.influxdb]` with only `url` and
    /// `database` gives).
    pub fn v1(url: &str, database: &str) -> InfluxConfig {
        InfluxConfig {
            url: url.to_string(),
            api: InfluxApi::V1,
            database: Some(database.to_string()),
            retention_policy: None,
            username: None,
            password: None,
            org: None,
            bucket: None,
            token: None,
            batch_size: default_batch_size(),
            flush_interval: default_flush_interval(),
            gzip: default_true(),
            timeout: default_timeout(),
            backfill_lines_per_s: default_backfill_lines_per_s(),
            tls_ca_file: None,
        }
    }
}

fn default_batch_size() -> usize {
    5000
}
fn default_flush_interval() -> Duration {
    Duration::from_secs(1)
}
fn default_true() -> bool {
    true
}
fn default_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_backfill_lines_per_s() -> u64 {
    50_000
}
