//! Sink wiring.

pub mod config;
