//! Modbus/TCP source: one task per endpoint polls its devices and hands raw
//! registers to the engine. Wiring only; see `config.rs` and `poller.rs`.

pub mod archive;
pub mod config;
pub mod poller;
pub mod probe;

#[cfg(test)]
mod tests;

pub use config::{
    ARCHIVE_HEADER_WORDS, ARCHIVE_RECORD_WORDS, ArchiveConfig, DataType, DeviceConfig, PointConfig,
    PointMapConfig, PollGroupConfig, RegisterKind, WordOrder,
};
pub use poller::spawn;
