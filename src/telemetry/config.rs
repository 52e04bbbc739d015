//! Configuration of the operator HTTP endpoint (`[http]`).

use serde::Deserialize;

/// `[http]`: where `/health` and `/metrics` are served. Absent: no endpoint.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Listen address, `IP:port`. Keep it on loopback (the default) and let a
    /// local Prometheus agent or a reverse proxy with TLS reach it.
    #[serde(default = "default_listen")]
    pub listen: String,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: default_listen(),
        }
    }
}

pub fn default_listen() -> String {
    "127.0.0.1:9810".to_string()
}
