//! `gaswatch-sim`: a simulated gas station for gaswatch: a city gate (门站),
//! a CNG mother station or an L-CNG station, chosen by `[station] kind`.
//!
//! It computes simple but physical station values (supply and regulated
//! pressure, Joule-Thomson cooling, a daily demand profile, station line pack,
//! an optional leak, meter errors; trailer filling and compressor cycles;
//! LNG tank level and vaporiser temperatures) and serves them as Modbus
//! registers laid out as a gaswatch station config describes: Modbus/TCP,
//! RTU over TCP, or RTU on a byte stream standing for a serial line (a pty
//! in tests). The daemon's `gaswatch demo`
//! and its tests use it as the device on the other end of the wire, and read
//! back the ground truth ([`SimHandle::served`], [`SimHandle::snapshot`]).
//!
//! The register encoding ([`mod@encode`]) is written independently of the
//! daemon's decoder so the two check each other; this crate must never depend
//! on `gaswatch`.
//!
//! Modules:
//! - [`config`]: the station TOML, read with lenient serde structs;
//! - [`mod@encode`]: engineering value -> registers;
//! - [`gas`]: Z of the simulated gas (the `[gas]` section), for the line pack;
//! - [`physics`]: the pure, deterministic [`Station`] model and register map;
//! - [`profile`]: the CNG mother and L-CNG models;
//! - [`mod@archive`]: a flow computer's hourly archive (Enron/Daniel style);
//! - [`server`]: the hand-written Modbus server (TCP and RTU framing),
//!   faults, ground-truth logs;
//! - [`scenario`]: scenario timelines and ground truth; [`driver`] runs one
//!   against a served station;
//! - [`mqtt`]: publishing `[[mqtt_sources]]` over MQTT (JSON, Sparkplug B).
//!
//! ```no_run
//! # async fn demo() -> Result<(), gaswatch_sim::SimError> {
//! use gaswatch_sim::{serve, SimOptions, Station};
//! let text = std::fs::read_to_string("config/city-gate.toml").unwrap_or_default();
//! let station = Station::from_config_str(&text, &SimOptions::default())?;
//! let handle = serve(station, "127.0.0.1:0".parse().expect("valid address")).await?;
//! println!("serving on {}", handle.local_addr());
//! handle.stop().await;
//! # Ok(()) }
//! ```

pub mod archive;
pub mod config;
pub mod driver;
pub mod encode;
pub mod gas;
pub mod mqtt;
pub mod physics;
pub mod profile;
pub mod scenario;
pub mod server;

pub use archive::{Archive, ArchiveRecord};
pub use config::{ConfigError, Endpoint, StationConfig, Transport};
pub use encode::{DataType, Encoded, WordOrder, encode};
pub use physics::{Leak, PhysicsState, PointOverride, SimOptions, Station};
pub use profile::{CngModel, LngModel, LngSignal, Profile, ProfileKind};
pub use server::{
    Fault, Framing, SERVED_LOG_CAPACITY, SerialLine, Served, SimControl, SimHandle,
    StationSnapshot, serve, serve_all, serve_rtu_line, serve_station, serve_with,
};

/// Errors of the simulator library.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The station config or the options cannot be used.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The listener could not be opened.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Address asked for.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// `serve` puts all endpoints on one listener, so unit ids must differ.
    #[error(
        "unit id {unit_id} is used on both {first} and {second}; one listener cannot route it (use serve_all)"
    )]
    UnitIdCollision {
        /// The repeated unit id.
        unit_id: u8,
        /// First endpoint using it.
        first: Endpoint,
        /// Second endpoint using it.
        second: Endpoint,
    },
}
