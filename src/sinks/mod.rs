//! Sinks: where engine output goes. Each remote sink reads from its own
//! durable spool and removes a record only after the remote confirmed it.

pub mod file;
pub mod influxdb;
pub mod mqtt;
pub mod sparkplug;
pub mod tls;
