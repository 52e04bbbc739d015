//! InfluxDB sink: line-protocol encoding (`line`) and the writer task that
//! delivers spooled lines over the v1 or v2 write API (`writer`).

pub mod config;
pub mod line;
pub mod writer;

pub use config::{InfluxApi, InfluxConfig};
pub use line::{
    SamplePrefixes, encode_alarm, encode_alarm_from, encode_archive, encode_balance,
    encode_balance_from, encode_sample, encode_sample_from,
};
pub use writer::{Auth, InfluxError, WriterConfig, run};
