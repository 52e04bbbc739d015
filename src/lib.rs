//! gaswatch: SCADA telemetry ingester for gas stations.
//!
//! Data flows one way: `sources` -> `engine` -> `buffer` (spools) -> `sinks`.
//! See README.md for the design.

pub mod buffer;
pub mod cli;
pub mod config;
pub mod demo;
pub mod dispatch;
pub mod engine;
pub mod journal;
pub mod model;
pub mod sinks;
pub mod sources;
pub mod telemetry;
pub mod topology;
