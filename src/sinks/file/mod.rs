//! Local file sink (the embedded default): line protocol per UTC day plus
//! alarm and balance JSON lines. Wiring only.

pub mod config;
pub mod writer;

pub use config::FileSinkConfig;
pub use writer::{FileSink, FileSinkError};
