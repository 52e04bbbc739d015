//! Sources: async tasks that read the field and send [`crate::model::Input`]
//! to the engine over a bounded channel. One folder per protocol.

pub mod modbus;
pub mod mqtt;
pub mod replay;
