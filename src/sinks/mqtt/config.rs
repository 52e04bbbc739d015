//! Configuration of the MQTT dispatch publisher (`[sinks.mqtt]`).

use crate::config::Secret;
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// Broker host name or address.
    pub host: String,
    /// Broker port (1883 plain).
    #[serde(default = "default_port")]
    pub port: u16,
    /// Client id; default "gaswatch-<station id>". Must be stable across restarts
    /// so the broker's persistent session is resumed.
    pub client_id: Option<String>,
    /// User name (optional).
    pub username: Option<String>,
    /// Password, from `{ env = "VAR" }` or `{ file = "/path" }`.
    pub password: Option<Secret>,
    /// First topic level; topics are `<prefix>/<station>/...`.
    #[serde(default = "default_prefix")]
    pub topic_prefix: String,
    /// MQTT keep-alive, e.g. "30s".
    #[serde(default = "default_keep_alive", with = "humantime_serde")]
    pub keep_alive: Duration,
    /// How often the retained `online` status is re-published with a fresh
    /// `ts` (heartbeat); consoles call a station stale after 3 missed. "0s" disables.
    #[serde(default = "default_heartbeat", with = "humantime_serde")]
    pub heartbeat: Duration,
    /// Subscribe to `<prefix>/<station>/commands` and pass dispatchers'
    /// commands (ack, shelve, unshelve, reset) to the engine.
    #[serde(default = "default_true")]
    pub accept_commands: bool,
    /// TLS to the broker (usually port 8883); absent: plain TCP.
    #[serde(default)]
    pub tls: Option<MqttTlsConfig>,
}

/// `[sinks.mqtt.tls]`: server verification and optional client certificate.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MqttTlsConfig {
    /// PEM file with the CA certificate(s) that signed the broker's
    /// certificate; absent: the system's trusted roots.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate (chain) for client certificate authentication.
    pub client_cert_file: Option<PathBuf>,
    /// PEM private key of the client certificate (keep it mode 0600).
    pub client_key_file: Option<PathBuf>,
}

fn default_heartbeat() -> Duration {
    Duration::from_secs(30)
}
fn default_true() -> bool {
    true
}

fn default_port() -> u16 {
    1883
}
fn default_prefix() -> String {
    "gaswatch".to_string()
}
fn default_keep_alive() -> Duration {
    Duration::from_secs(30)
}
