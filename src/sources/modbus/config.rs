//! Configuration of Modbus devices and their points (`[[devices]]`).
//!
//! Addressing: `address` is written as the device manual numbers it; with
//! `address_base = 1` the wire address is `address - 1`. In Enron/Daniel
//! mode (`enron = true`) a 32-bit point occupies ONE register number whose
//! answer is two 16-bit words (the 5001-5999 longs and 7001-7999 floats of
//! flow computers), so a request for N such registers returns 2N words.
//!
//! Word orders name the four byte layouts of a 32-bit value `ABCD` (A = most
//! significant byte): ABCD big-endian, CDAB word swap, BADC byte swap inside
//! each word, DCBA little-endian. 64-bit values use the same two switches
//! (word order reversed? bytes swapped inside each word?), which covers the
//! 8-byte permutations devices actually use: ABCDEFGH, GHEFCDAB, BADCFEHG,
//! HGFEDCBA. For 16-bit values only ABCD and BADC (byte swap) make sense.
//!
//! Transport: `tcp` (Modbus/TCP, MBAP framing, the default), `rtu_over_tcp`
//! (RTU frames with CRC carried over a TCP socket: serial-to-Ethernet
//! converters in transparent mode) or `rtu` (a local serial port, `[serial]`).
//! The devices reached through one [`Link`] (one host:port, or one serial
//! path) share it: one connection or open port, one request at a time.

use serde::Deserialize;
use std::fmt;
use std::time::Duration;

/// One Modbus endpoint + unit id (a flow computer, PLC or RTU).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DeviceConfig {
    /// Device id, unique in the station; used in logs, metrics and tags.
    pub id: String,
    /// How the device is reached: "tcp" (Modbus/TCP, default),
    /// "rtu_over_tcp" (RTU frames over a TCP socket, e.g. a serial-to-Ethernet
    /// converter in transparent mode) or "rtu" (a local serial port, see `serial`).
    #[serde(default)]
    pub transport: Transport,
    /// Host name or IP address of the device or serial gateway (tcp and
    /// rtu_over_tcp; leave it out for rtu).
    #[serde(default)]
    pub host: String,
    /// TCP port (Modbus default 502; tcp and rtu_over_tcp only).
    #[serde(default = "default_port")]
    pub port: u16,
    /// The serial line, for transport = "rtu" only.
    pub serial: Option<SerialConfig>,
    /// Modbus unit id (slave id), 0-255; 255 or 1 for most TCP devices, 1-247
    /// on RTU (0 is broadcast, which nobody answers).
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
    /// Numbering of `address` in this device's manual: 0 (wire addresses,
    /// default) or 1 (register 1 is wire address 0).
    #[serde(default)]
    pub address_base: u8,
    /// Enron/Daniel mode: a 32-bit point is one register number answering two
    /// words (flow computers). 64-bit types and strings are not allowed then.
    #[serde(default)]
    pub enron: bool,
    /// Consecutive failed poll cycles (timeouts, transport errors, exceptions
    /// 04/0A/0B) after which the unit is paused; 0 never pauses.
    #[serde(default = "default_pause_after")]
    pub pause_after_failed_cycles: u32,
    /// How long a failing unit is paused (its points STALE `device_paused`);
    /// then one cycle is tried again.
    #[serde(default = "default_pause_for", with = "humantime_serde")]
    pub pause_for: Duration,
    /// After exception 01/02/03 (a configuration error: the device will not
    /// change its mind) the request is retried only this often.
    #[serde(default = "default_config_error_retry", with = "humantime_serde")]
    pub config_error_retry: Duration,
    /// Silence kept between the end of one request and the next on this
    /// device's connection or bus (slow serial gateways, PLCs that choke on
    /// back-to-back requests). Default 0. Devices sharing a link: the
    /// longest of theirs applies to the link.
    #[serde(default, with = "humantime_serde")]
    pub pause_between_requests: Duration,
    /// Wait after a connection is made before the first request (gateways
    /// that drop requests sent right after accept). Default 0; the longest
    /// of the link's devices applies.
    #[serde(default, with = "humantime_serde")]
    pub pause_after_connect: Duration,
    /// Whether this device's poll grid is offset within its `poll_interval`
    /// by its link's phase (see [`ModbusConfig::stagger`]). Absent: the
    /// `[modbus]` setting. `false`: polled on the grid aligned at start, with
    /// every other unstaggered device (time-aligned snapshots).
    #[serde(default)]
    pub stagger: Option<bool>,
    /// Poll groups: points with `group = NAME` are read every `interval`
    /// (a multiple of `poll_interval`) instead of every cycle, e.g. slow
    /// totals beside fast pressures. Blocks of a group are staggered over
    /// the cycles so they do not all land in one.
    #[serde(default)]
    pub groups: Vec<PollGroupConfig>,
    /// The points read from this device.
    #[serde(default)]
    pub points: Vec<PointConfig>,
    /// A shared register map (`[[point_maps]]` name) whose points this
    /// device also has, named `point_prefix` + the map's point name.
    #[serde(default)]
    pub point_map: Option<String>,
    /// Prefix of the point names taken from `point_map`; default the device
    /// id and a dot (`rtu07.PT1`).
    #[serde(default)]
    pub point_prefix: Option<String>,
    /// Hourly archive of a flow computer (`[devices.archive]`): records are
    /// read back from the last one received, so an outage loses no hourly
    /// volume. Absent: no archive is read.
    #[serde(default)]
    pub archive: Option<ArchiveConfig>,
}

/// Settings shared by all Modbus devices (`[modbus]`).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ModbusConfig {
    /// Spread the links' polls over the poll interval (default true): each
    /// link (a `host:port` or a serial port) starts its devices' poll grid at
    /// a phase within their `poll_interval` derived from a hash of the link,
    /// so 50 gateways do not all answer on one tick (the engine would take
    /// every answer of the station in one burst), and the same link keeps its
    /// phase across restarts and reloads. `false`: every device is polled on
    /// a grid aligned at start (time-aligned snapshots of the whole station).
    /// A device's own `stagger` overrides this.
    #[serde(default = "default_stagger")]
    pub stagger: bool,
}

impl Default for ModbusConfig {
    fn default() -> Self {
        ModbusConfig {
            stagger: default_stagger(),
        }
    }
}

fn default_stagger() -> bool {
    true
}

/// Words in one archive record (see [`ArchiveConfig`]).
pub const ARCHIVE_RECORD_WORDS: u16 = 12;
/// Words in the archive header.
pub const ARCHIVE_HEADER_WORDS: u16 = 4;

/// The hourly archive of a flow computer, read with FC03 only.
///
/// Register map (holding registers, numbered like the device's points, so
/// `address_base` applies; every multi-word value is big-endian ABCD, whatever
/// `enron` says: the archive is a table of 16-bit words):
///
/// ```text
/// address + 0       u16  capacity: records the device keeps (its ring)
/// address + 1       u16  words per record (12)
/// address + 2..3    u32  index of the latest closed record (1, 2, ...; 0 = none yet)
/// records_address + 12 * slot, slot = (index - 1) % capacity:
///   +0..1  u32  record index (so a reader sees a slot that was overwritten)
///   +2..3  u32  hour end, seconds since 1970-01-01T00:00:00Z (device clock)
///   +4..5  f32  volume at base conditions over the hour, Sm3
///   +6..7  f32  volume at flowing conditions over the hour, m3
///   +8..9  f32  average pressure over the hour, kPa
///   +10..11 f32 average temperature over the hour, degC
/// ```
///
/// Real Enron/Daniel devices serve an archive record when register 700-799
/// is read with the record index in the quantity field. That is not a valid
/// Modbus request (the quantity is not a register count) and no standard
/// client can send it; the ring above keeps the same information readable
/// with plain FC03 requests, and nothing is ever written to the device
/// (no "record pointer" register to set).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ArchiveConfig {
    /// The `[[meters]]` run whose hourly records the device keeps; tags the
    /// output (`archive_hourly,meter=...`).
    pub meter: String,
    /// Address of the archive header (default 700).
    #[serde(default = "default_archive_address")]
    pub address: u16,
    /// Address of record slot 0 (default 10000, above the Enron ranges
    /// 1001-7999); slot `i` starts at `records_address + 12 * i`.
    #[serde(default = "default_records_address")]
    pub records_address: u16,
    /// Records the device keeps (default 840: 35 days of hours). The header
    /// must say the same, else the archive is not read (WARN once).
    #[serde(default = "default_archive_capacity")]
    pub capacity: u16,
    /// How often the header is read for new records, e.g. "1m". After a
    /// failed archive read the next poll cycle tries again.
    #[serde(default = "default_archive_interval", with = "humantime_serde")]
    pub interval: Duration,
}

impl ArchiveConfig {
    /// Words the record ring occupies.
    pub fn ring_words(&self) -> u32 {
        u32::from(self.capacity) * u32::from(ARCHIVE_RECORD_WORDS)
    }
}

fn default_archive_address() -> u16 {
    700
}
fn default_records_address() -> u16 {
    10_000
}
fn default_archive_capacity() -> u16 {
    840
}
fn default_archive_interval() -> Duration {
    Duration::from_secs(60)
}

/// A register map shared by identical devices (`[[point_maps]]`): 500 RTUs
/// of one model are one map and 500 short `[[devices]]` entries.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PointMapConfig {
    /// The name devices refer to with `point_map`.
    pub name: String,
    /// The points, as in `[[devices.points]]`; names are suffixes.
    #[serde(default)]
    pub points: Vec<PointConfig>,
}

/// A poll group of a device (`[[devices.groups]]`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PollGroupConfig {
    /// Group name, referenced by points' `group`.
    pub name: String,
    /// How often the group's points are read; a multiple of the device's
    /// `poll_interval`.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
}

/// How a device is reached (`transport` of a `[[devices]]` entry).
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    /// Modbus/TCP: MBAP header with transaction ids.
    #[default]
    Tcp,
    /// RTU frames (unit id, PDU, CRC) over a TCP socket.
    RtuOverTcp,
    /// RTU frames on a local serial port.
    Rtu,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::RtuOverTcp => "rtu_over_tcp",
            Transport::Rtu => "rtu",
        }
    }
}

/// The serial line of an RTU device (`[devices.serial]`).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(deny_unknown_fields)]
pub struct SerialConfig {
    /// Device path, e.g. "/dev/ttyUSB0", "/dev/ttyS1", "/dev/serial/by-id/...".
    pub path: String,
    /// Line speed in baud, e.g. 9600 or 19200; every device on the bus uses it.
    pub baud: u32,
    /// "none", "even" (the Modbus default) or "odd"; no default: a wrong
    /// parity garbles every frame, so the operator states it.
    pub parity: Parity,
    /// Data bits: 8 (RTU frames are 8-bit; 7 is Modbus ASCII, not supported).
    #[serde(default = "default_data_bits")]
    pub data_bits: u8,
    /// Stop bits: 1 or 2 (Modbus asks for 2 when parity is none; many
    /// devices use 1).
    #[serde(default = "default_stop_bits")]
    pub stop_bits: u8,
}

/// Parity of a serial line.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Parity {
    None,
    Even,
    Odd,
}

impl Parity {
    pub fn as_str(self) -> &'static str {
        match self {
            Parity::None => "none",
            Parity::Even => "even",
            Parity::Odd => "odd",
        }
    }
}

impl SerialConfig {
    /// Bits on the wire per character: start + data + parity + stop.
    pub fn bits_per_char(&self) -> u32 {
        1 + u32::from(self.data_bits)
            + u32::from(self.parity != Parity::None)
            + u32::from(self.stop_bits)
    }

    /// Time to send `chars` characters at this line speed.
    pub fn char_time(&self, chars: u32) -> Duration {
        let bits = u64::from(self.bits_per_char()) * u64::from(chars);
        Duration::from_nanos(bits * 1_000_000_000 / u64::from(self.baud.max(1)))
    }

    /// The silence that separates two RTU frames: 3.5 character times, or
    /// 1.75 ms above 19200 baud (Modbus over serial line, 2.5.1.1).
    pub fn frame_gap(&self) -> Duration {
        if self.baud > 19_200 {
            Duration::from_micros(1750)
        } else {
            self.char_time(7) / 2
        }
    }
}

/// What devices share: one TCP connection (per host, port and framing) or
/// one serial port. The poller runs one task, one connection and one
/// outstanding request per link.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Link {
    /// Modbus/TCP to `host:port`.
    Tcp { host: String, port: u16 },
    /// RTU frames over TCP to `host:port`.
    RtuOverTcp { host: String, port: u16 },
    /// RTU frames on a serial port.
    Serial(SerialConfig),
}

impl Link {
    /// Whether requests are RTU frames (no transaction id: a late answer
    /// is told from the current one only by unit, function and length).
    pub fn is_rtu(&self) -> bool {
        !matches!(self, Link::Tcp { .. })
    }

    /// Where in each `interval` this link's polls fall when staggered:
    /// `interval * h / 2^64`, `h` a hash of the link's key (framing, then
    /// `host:port` or the serial path). Depends on nothing else (not on the
    /// other links, their order or the process), so a link keeps its phase
    /// across restarts and reloads, and adding a link moves no other one.
    /// Always less than `interval`.
    pub fn poll_phase(&self, interval: Duration) -> Duration {
        let kind = match self {
            Link::Tcp { .. } => "tcp",
            Link::RtuOverTcp { .. } => "rtu_over_tcp",
            Link::Serial(_) => "rtu",
        };
        let h = stable_hash(format!("{kind}/{self}").as_bytes());
        let ns = (interval.as_nanos().min(u128::from(u64::MAX)) * u128::from(h)) >> 64;
        Duration::from_nanos(u64::try_from(ns).unwrap_or(0))
    }
}

/// FNV-1a over `bytes`, then the splitmix64 finaliser so that keys that
/// differ in one character (ports 5020, 5021...) land far apart. Fixed by
/// this code, unlike `std`'s hasher, whose algorithm may change between
/// Rust releases (a phase must not move with a rebuild).
fn stable_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

impl fmt::Display for Link {
    /// `host:port` (`[v6]:port`) for TCP links, the path for a serial port:
    /// the `endpoint` label of metrics and logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Link::Tcp { host, port } | Link::RtuOverTcp { host, port } => {
                if host.contains(':') {
                    write!(f, "[{host}]:{port}")
                } else {
                    write!(f, "{host}:{port}")
                }
            }
            Link::Serial(s) => f.write_str(&s.path),
        }
    }
}

impl DeviceConfig {
    /// The link this device is reached through. A serial device without
    /// `serial` (which validation reports) gets an empty path.
    pub fn link(&self) -> Link {
        match self.transport {
            Transport::Tcp => Link::Tcp {
                host: self.host.clone(),
                port: self.port,
            },
            Transport::RtuOverTcp => Link::RtuOverTcp {
                host: self.host.clone(),
                port: self.port,
            },
            Transport::Rtu => Link::Serial(self.serial.clone().unwrap_or(SerialConfig {
                path: String::new(),
                baud: 9600,
                parity: Parity::Even,
                data_bits: 8,
                stop_bits: 1,
            })),
        }
    }

    /// Every how many poll cycles a point of `group` is read (1 when the
    /// group is absent or unknown; validation reports unknown groups).
    pub fn cycles_of(&self, group: Option<&str>) -> u32 {
        let Some(g) = group.and_then(|n| self.groups.iter().find(|g| g.name == n)) else {
            return 1;
        };
        let base = self.poll_interval.as_nanos().max(1);
        u32::try_from((g.interval.as_nanos() / base).max(1)).unwrap_or(u32::MAX)
    }
}

fn default_port() -> u16 {
    502
}
fn default_data_bits() -> u8 {
    8
}
fn default_stop_bits() -> u8 {
    1
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
fn default_pause_after() -> u32 {
    3
}
fn default_pause_for() -> Duration {
    Duration::from_secs(30)
}
fn default_config_error_retry() -> Duration {
    Duration::from_secs(60)
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
    /// Coils (read-only here), function code 01; points must be `type = "bit"`.
    Coil,
    /// Discrete inputs, function code 02; points must be `type = "bit"`.
    DiscreteInput,
}

impl RegisterKind {
    /// True for the one-bit tables (coils, discrete inputs).
    pub fn is_bits(self) -> bool {
        matches!(self, RegisterKind::Coil | RegisterKind::DiscreteInput)
    }
}

/// Data type of a point's raw value.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum DataType {
    /// One bit: a coil, a discrete input, or bit `bit` of a register. 0 or 1.
    Bit,
    U16,
    I16,
    U32,
    I32,
    U64,
    I64,
    F32,
    F64,
    /// ASCII text, two characters per register, `length` registers. Not a
    /// number: kept in the engine's text table, never in a numeric sample.
    String,
}

impl DataType {
    /// Number of 16-bit words the type occupies (strings: per register; their
    /// width is `length`).
    pub fn registers(self) -> u16 {
        match self {
            DataType::Bit | DataType::U16 | DataType::I16 | DataType::String => 1,
            DataType::U32 | DataType::I32 | DataType::F32 => 2,
            DataType::U64 | DataType::I64 | DataType::F64 => 4,
        }
    }

    /// True for the types whose word order can be chosen (32- and 64-bit).
    pub fn is_multi_word(self) -> bool {
        self.registers() > 1
    }
}

/// Byte layout of a value (see the module docs). Bytes inside a register are
/// big-endian on the wire; these orders describe what the device did before.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq, Hash)]
pub enum WordOrder {
    /// High word first (big-endian): registers [AB, CD].
    #[default]
    ABCD,
    /// Low word first ("word swap"): registers [CD, AB].
    CDAB,
    /// Bytes swapped inside each word: registers [BA, DC].
    BADC,
    /// Little-endian: registers [DC, BA].
    DCBA,
}

impl WordOrder {
    /// Every order, for probes and tests.
    pub const ALL: [WordOrder; 4] = [
        WordOrder::ABCD,
        WordOrder::CDAB,
        WordOrder::BADC,
        WordOrder::DCBA,
    ];

    /// Whether the least significant word comes first.
    #[inline]
    pub fn words_reversed(self) -> bool {
        matches!(self, WordOrder::CDAB | WordOrder::DCBA)
    }

    /// Whether the two bytes inside each word are swapped.
    #[inline]
    pub fn bytes_swapped(self) -> bool {
        matches!(self, WordOrder::BADC | WordOrder::DCBA)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            WordOrder::ABCD => "ABCD",
            WordOrder::CDAB => "CDAB",
            WordOrder::BADC => "BADC",
            WordOrder::DCBA => "DCBA",
        }
    }
}

/// One value read from a device.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PointConfig {
    /// Point (tag) name, unique in the station, e.g. "PT_OUT1".
    pub name: String,
    /// "holding" (FC03) or "input" (FC04).
    pub register: RegisterKind,
    /// Register (or coil) address, numbered from the device's `address_base`
    /// (0 = as sent on the wire; manuals often count from 1).
    pub address: u16,
    /// Raw type: bit, u16, i16, u32, i32, u64, i64, f32, f64 or string.
    #[serde(rename = "type")]
    pub data_type: DataType,
    /// Byte layout: "ABCD" (default), "CDAB", "BADC" or "DCBA" (module docs).
    #[serde(default)]
    pub order: WordOrder,
    /// For `type = "bit"` in a holding or input register: the bit, 0 (least
    /// significant) to 15.
    pub bit: Option<u8>,
    /// For `type = "string"`: number of registers (two ASCII characters each).
    pub length: Option<u16>,
    /// Poll group (see the device's `groups`); absent: every poll cycle.
    pub group: Option<String>,
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
    /// Lowest plausible raw value (before scale and offset), e.g. 0 for a 4-20 mA
    /// count that reads 65535 on a broken loop; below it the sample is BAD (out_of_range).
    pub raw_min: Option<f64>,
    /// Highest plausible raw value (before scale and offset); above it the sample is BAD.
    pub raw_max: Option<f64>,
}

impl PointConfig {
    /// Number of 16-bit words (or bits, for coils) the point's value occupies.
    pub fn words(&self) -> u16 {
        match self.data_type {
            DataType::String => self.length.unwrap_or(1).max(1),
            t => t.registers(),
        }
    }

    /// Number of register numbers the point spans on the wire: in Enron mode
    /// a 32-bit value is one register number.
    pub fn register_numbers(&self, enron: bool) -> u16 {
        let w = self.words();
        if enron && w == 2 { 1 } else { w }
    }
}
