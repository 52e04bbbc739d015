//! Modbus source (TCP, RTU over TCP, RTU on a serial port): one task per
//! link polls its devices and hands raw registers to the engine. Wiring
//! only; see `config.rs`, `poller.rs` and `serial.rs`.

pub mod archive;
pub mod config;
pub mod poller;
pub mod probe;
mod serial;

#[cfg(test)]
mod tests;

pub use config::{
    ARCHIVE_HEADER_WORDS, ARCHIVE_RECORD_WORDS, ArchiveConfig, DataType, DeviceConfig, Link,
    ModbusConfig, Parity, PointConfig, PointMapConfig, PollGroupConfig, RegisterKind, SerialConfig,
    Transport, WordOrder,
};
pub use poller::spawn;
