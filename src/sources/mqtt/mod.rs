//! MQTT telemetry source: JSON payloads or Sparkplug B (gaswatch as host
//! application), mapped onto station points and sent through the same
//! engine as Modbus data; messages are acknowledged only once their output
//! is in the sink spools. Wiring only: see `config.rs`, `json.rs`,
//! `sparkplug.rs` (pure decoders), `spb.rs` (Sparkplug vocabulary) and
//! `client.rs` (the task).

pub mod client;
pub mod config;
pub mod json;
pub mod sparkplug;
pub mod spb;

#[cfg(test)]
mod tests;

pub use client::spawn;
pub use config::{MqttPointConfig, MqttSourceConfig, PayloadFormat};
