//! gaswatch as a Sparkplug B edge node (northbound): the station's points
//! with quality and its alarms, so a SCADA host (Ignition and others) sees
//! the station without extra configuration. Wiring only: see `config.rs`
//! and `edge.rs`.

pub mod config;
pub mod edge;

pub use edge::{EdgeState, run};
