//! Configuration of the Sparkplug B edge node (`[sinks.sparkplug]`) and its
//! pure validation.

use crate::config::{Problem, Secret};
use serde::Deserialize;
use std::time::Duration;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SparkplugConfig {
    /// Broker host name or address.
    pub host: String,
    /// Broker port (1883 plain).
    #[serde(default = "default_port")]
    pub port: u16,
    /// Client id; default `gaswatch-<station>-spb`.
    pub client_id: Option<String>,
    /// User name (optional).
    pub username: Option<String>,
    /// Password, from `{ env = "VAR" }` or `{ file = "/path" }`.
    pub password: Option<Secret>,
    /// MQTT keep-alive, e.g. "30s"; the broker sends NDEATH after 1.5 times this.
    #[serde(default = "default_keep_alive", with = "humantime_serde")]
    pub keep_alive: Duration,
    /// Sparkplug group id, e.g. "GasStations".
    pub group_id: String,
    /// Edge node id; default: the station id.
    pub edge_node_id: Option<String>,
}

fn default_port() -> u16 {
    1883
}
fn default_keep_alive() -> Duration {
    Duration::from_secs(30)
}

fn bad_id(s: &str) -> bool {
    s.is_empty() || s.contains(['/', '+', '#'])
}

/// Checks the section without I/O; every problem names its key.
pub fn validate(c: &SparkplugConfig) -> Vec<Problem> {
    let mut out = Vec::new();
    let mut add = |key: &str, message: String| {
        out.push(Problem {
            key: key.to_string(),
            line: None,
            message,
        })
    };
    if c.host.trim().is_empty() {
        add(
            "sinks.sparkplug.host",
            "expected a broker host name or address".into(),
        );
    }
    if bad_id(&c.group_id) {
        add(
            "sinks.sparkplug.group_id",
            format!(
                "expected a Sparkplug group id without '/', '+', '#', got {:?}",
                c.group_id
            ),
        );
    }
    if let Some(n) = &c.edge_node_id
        && bad_id(n)
    {
        add(
            "sinks.sparkplug.edge_node_id",
            format!("expected an edge node id without '/', '+', '#', got {n:?}"),
        );
    }
    out
}
