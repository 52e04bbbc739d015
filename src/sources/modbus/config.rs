//! Configuration of Modbus/TCP devices and their points (`[[devices]]`).

use serde::Deserialize;
use std::time::Duration;

/// One Modbus endpoint + unit id (a flow computer, PLC or RTU).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DeviceConfig {
    /// Device id, unique in the station; used in logs, metrics and tags.
    pub id: String,
    /// Host name or IP address of the device or serial gateway.
    pub host: String,
    /// TCP port (Modbus default 502).
    #[serde(default = "default_port")]
    pub port: u16,
    /// Modbus unit id (slave id), 0-255; 255 or 1 for most TCP devices.
    #[serde(default = "default_unit_id")]
    pub unit_id: u8,
    /// How often to read every point, e.g. "1s", "500ms".
    #[serde(default = "default_poll_interval", with = "humantime_serde")]
    pub poll_interval: Duration,
    /// Time allowed for one request (and for connecting), e.g. "500ms".
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Largest number of registers in one request (1-125; some devices accept fewer).
    #[serde(default = "default_max_registers")]
    pub max_registers_per_read: u16,
    /// Unused registers that may be read across to merge two points into one request.
    #[serde(default = "default_max_gap")]
    pub max_gap: u16,
    /// The points read from this device.
    #[serde(default)]
    pub points: Vec<PointConfig>,
}

fn default_port() -> u16 {
    502
}
fn default_unit_id() -> u8 {
    1
}
fn default_poll_interval() -> Duration {
    Duration::from_secs(1)
}
fn default_timeout() -> Duration {
    Duration::from_secs(1)
}
fn default_max_registers() -> u16 {
    125
}
fn default_max_gap() -> u16 {
    8
}
fn default_scale() -> f64 {
    1.0
}

/// Register table a point lives in.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum RegisterKind {
    /// Holding registers, function code 03.
    Holding,
    /// Input registers, function code 04.
    Input,
}

/// Data type of a point's raw value.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum DataType {
    U16,
    I16,
    U32,
    I32,
    F32,
}

impl DataType {
    /// Number of 16-bit registers the type occupies.
    pub fn registers(self) -> u16 {
        match self {
            DataType::U16 | DataType::I16 => 1,
            DataType::U32 | DataType::I32 | DataType::F32 => 2,
        }
    }
}

/// Order of the 16-bit words of a 32-bit value (bytes within a word are
/// always big-endian on the wire).
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq, Hash)]
pub enum WordOrder {
    /// High word first (big-endian): registers [AB, CD].
    #[default]
    ABCD,
    /// Low word first ("word swap"): registers [CD, AB].
    CDAB,
}

/// One value read from a device.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PointConfig {
    /// Point (tag) name, unique in the station, e.g. "PT_OUT1".
    pub name: String,
    /// "holding" (FC03) or "input" (FC04).
    pub register: RegisterKind,
    /// 0-based register address as sent on the wire (manuals often count from 1).
    pub address: u16,
    /// Raw type: u16, i16, u32, i32 or f32.
    #[serde(rename = "type")]
    pub data_type: DataType,
    /// Word order of 32-bit types: "ABCD" (default) or "CDAB".
    #[serde(default)]
    pub order: WordOrder,
    /// Engineering value = raw * scale + offset.
    #[serde(default = "default_scale")]
    pub scale: f64,
    /// Added after scaling.
    #[serde(default)]
    pub offset: f64,
    /// Engineering unit, e.g. "kPa", "Sm3/h", "degC".
    #[serde(default)]
    pub unit: String,
    /// Lowest plausible engineering value; below it the sample is BAD (out_of_range).
    pub min: Option<f64>,
    /// Highest plausible engineering value; above it the sample is BAD (out_of_range).
    pub max: Option<f64>,
}
