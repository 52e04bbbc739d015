//! MQTT dispatch publisher: alarm transitions, active-alarm state, station
//! status and balance results to a broker (see `docs/dispatch-protocol.md`).
//! Wiring only.

pub mod config;
pub mod payload;
pub mod publisher;

pub use config::MqttConfig;
pub use payload::{
    PublishRecord, RecordError, Topics, alarm_records, balance_record, decode_record, encode_alarm,
    encode_balance, encode_record, encode_status,
};
pub use publisher::{PublisherSettings, run, run_with, run_with_commands};
