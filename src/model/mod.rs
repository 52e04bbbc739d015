//! Shared vocabulary of gaswatch: what flows from sources through the engine to
//! the sinks. No I/O here; every type is cheap to copy or move.
//!
//! Invariants:
//! - A [`Sample`] always carries a [`Quality`]; a value that is not `Good` is
//!   never presented as good, and a sample without a value (`value` is NaN) is
//!   never `Good`.
//! - Timestamps come from the poll (the time the response arrived) or from the
//!   device, never from the time of writing, so a retried write overwrites.

mod time;

pub use time::Timestamp;

/// Dense index of a point (tag) in the compiled [`crate::engine::EnginePlan`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TagId(pub u32);

/// Dense index of a device in the compiled plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceId(pub u32);

/// Index of a read block (one Modbus request) within its device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlockId(pub u32);

/// Data quality, after OPC practice: every value carries one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Quality {
    /// Read from the device, decoded and within range.
    Good,
    /// A value exists but cannot be fully trusted (e.g. a device flag).
    Uncertain,
    /// No usable value: the read failed, the device answered with an
    /// exception, or the value is outside its sanity range.
    Bad,
    /// No good read arrived for 1.5 poll periods; the last value is too old.
    Stale,
}

impl Quality {
    /// Lower-case name used in line protocol, JSON and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Quality::Good => "good",
            Quality::Uncertain => "uncertain",
            Quality::Bad => "bad",
            Quality::Stale => "stale",
        }
    }
}

/// Why a sample is not good. Small and `Copy` so it rides along every sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Nothing to report (good data).
    None,
    /// The device answered with this Modbus exception code.
    Exception(u8),
    /// The request timed out.
    Timeout,
    /// The connection failed or broke (refused, reset, desynchronised).
    Transport,
    /// The response did not have the expected shape (length, framing).
    Malformed,
    /// The decoded value is not finite (NaN or infinity from the device).
    NotFinite,
    /// The raw value is outside the point's configured sanity range.
    OutOfRange,
    /// No good read for 1.5 poll periods.
    NoRecentData,
    /// The device failed several poll cycles in a row and is paused for a
    /// while, so it does not slow the other devices on its connection.
    DevicePaused,
}

impl Reason {
    /// Stable snake_case name for line protocol, JSON, metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::None => "none",
            Reason::Exception(1) => "exception_01_illegal_function",
            Reason::Exception(2) => "exception_02_illegal_address",
            Reason::Exception(3) => "exception_03_illegal_value",
            Reason::Exception(4) => "exception_04_device_failure",
            Reason::Exception(5) => "exception_05_acknowledge",
            Reason::Exception(6) => "exception_06_busy",
            Reason::Exception(0x0A) => "exception_0a_gateway_path",
            Reason::Exception(0x0B) => "exception_0b_gateway_target",
            Reason::Exception(_) => "exception_other",
            Reason::Timeout => "timeout",
            Reason::Transport => "transport",
            Reason::Malformed => "malformed",
            Reason::NotFinite => "not_finite",
            Reason::OutOfRange => "out_of_range",
            Reason::NoRecentData => "no_recent_data",
            Reason::DevicePaused => "device_paused",
        }
    }
}

/// One engineering value of one point at one time, with its quality.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub tag: TagId,
    /// Engineering value after scale and offset; NaN when there is none.
    pub value: f64,
    pub quality: Quality,
    pub reason: Reason,
    pub ts: Timestamp,
}

impl Sample {
    /// True when the sample carries a usable number.
    pub fn has_value(&self) -> bool {
        self.value.is_finite()
    }
}

/// Why a Modbus read produced no registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReadError {
    /// The device answered with an exception code (a data-quality matter).
    Exception(u8),
    /// No answer within the configured timeout.
    Timeout,
    /// Connection refused, reset or desynchronised (a transport matter).
    Transport,
    /// The answer had the wrong number of registers or was unreadable.
    Malformed,
}

impl ReadError {
    /// The quality reason this error gives to the points it affects.
    pub fn reason(self) -> Reason {
        match self {
            ReadError::Exception(code) => Reason::Exception(code),
            ReadError::Timeout => Reason::Timeout,
            ReadError::Transport => Reason::Transport,
            ReadError::Malformed => Reason::Malformed,
        }
    }
}

/// What a source hands to the engine over the bounded channel.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// Raw registers answered for one read block of a device.
    Registers {
        device: DeviceId,
        block: BlockId,
        /// When the response arrived.
        ts: Timestamp,
        regs: Vec<u16>,
    },
    /// A read block failed.
    ReadFailed {
        device: DeviceId,
        block: BlockId,
        ts: Timestamp,
        error: ReadError,
    },
    /// Registers answered for PART of a read block: the poller split a block
    /// whose full read failed with exception 02, to isolate the bad
    /// register(s). `first` is the word offset of `regs[0]` from the block
    /// start; the engine decodes only the points wholly inside.
    RegistersPart {
        device: DeviceId,
        block: BlockId,
        first: u16,
        ts: Timestamp,
        regs: Vec<u16>,
    },
    /// A part of a read block (`words` words from word offset `first`) failed;
    /// the points overlapping it are BAD with the error's reason.
    ReadFailedPart {
        device: DeviceId,
        block: BlockId,
        first: u16,
        words: u16,
        ts: Timestamp,
        error: ReadError,
    },
    /// The poller paused a failing device: every point of it turns STALE
    /// with reason `device_paused` (no value, at `ts`).
    DevicePaused { device: DeviceId, ts: Timestamp },
    /// Engineering values that arrived already decoded (MQTT, replay files).
    Values {
        ts: Timestamp,
        values: Vec<(TagId, f64, Quality)>,
    },
    /// An operator command on an alarm (from the dispatch centre). Commands
    /// are inputs so a replay of the input stream reproduces the alarm states.
    Command(AlarmCommand),
    /// Hourly archive records a flow computer kept and the poller read back
    /// (after an outage: every record missed), oldest first. Each carries
    /// its own hour-end time from the device.
    Archive {
        device: DeviceId,
        /// When the records were read (not their hour-end times).
        ts: Timestamp,
        records: Vec<ArchiveRecord>,
    },
    /// A marker after a source's inputs: the engine ignores it; the engine
    /// task confirms it once the output of every input before it is in the
    /// sink spools (MQTT acknowledges the message only then).
    Receipt(Receipt),
}

/// One hourly record of a flow computer's archive (Enron/Daniel style), as
/// the device computed it: volumes over the hour and averages of P and T.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ArchiveRecord {
    /// The device's record number (1, 2, ...; increases by one per hour).
    pub index: u32,
    /// End of the hour the record covers (device clock, UTC).
    pub hour_end: Timestamp,
    /// Volume at base conditions over the hour, Sm³.
    pub base_volume_sm3: f64,
    /// Volume at flowing (line) conditions over the hour, m³.
    pub flowing_volume_m3: f64,
    /// Time-weighted average pressure over the hour (the meter's unit, kPa).
    pub pressure_kpa: f64,
    /// Time-weighted average temperature over the hour, degC.
    pub temperature_c: f64,
}

impl ArchiveRecord {
    /// Good when every number is finite and the volumes are not negative.
    pub fn quality(&self) -> (Quality, Reason) {
        let all = [
            self.base_volume_sm3,
            self.flowing_volume_m3,
            self.pressure_kpa,
            self.temperature_c,
        ];
        if all.iter().any(|v| !v.is_finite()) {
            (Quality::Bad, Reason::NotFinite)
        } else if self.base_volume_sm3 < 0.0 || self.flowing_volume_m3 < 0.0 {
            (Quality::Bad, Reason::OutOfRange)
        } else {
            (Quality::Good, Reason::None)
        }
    }
}

/// An archive record on its way to the sinks, with the device it came from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ArchiveSample {
    pub device: DeviceId,
    pub record: ArchiveRecord,
    pub quality: Quality,
    pub reason: Reason,
}

/// What an operator asks of an alarm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandAction {
    /// Acknowledge: stops re-alarm and escalation.
    Ack,
    /// Shelve for `duration_ns` (timed), or until the alarm next returns to
    /// normal when `duration_ns` is 0 (one-shot).
    Shelve { duration_ns: i64 },
    /// End a shelve early.
    Unshelve,
    /// Reset a latched alarm whose condition has cleared.
    Reset,
}

impl CommandAction {
    pub fn as_str(self) -> &'static str {
        match self {
            CommandAction::Ack => "ack",
            CommandAction::Shelve { .. } => "shelve",
            CommandAction::Unshelve => "unshelve",
            CommandAction::Reset => "reset",
        }
    }
}

/// An operator command, as received (already parsed, not yet validated
/// against the alarm states: that is the engine's job).
#[derive(Debug, Clone, PartialEq)]
pub struct AlarmCommand {
    /// The sender's request id, echoed in the reply.
    pub request_id: String,
    /// Stable alarm id, e.g. `cg01/PT_OUT1/HH`.
    pub alarm_id: String,
    /// Who asked (named in the journal and the reply).
    pub operator: String,
    pub action: CommandAction,
    /// When the command arrived at the station.
    pub ts: Timestamp,
    /// When the sender issued it; a timed shelve that would already have
    /// expired at arrival is refused.
    pub sent: Option<Timestamp>,
}

/// Why a command was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandRefusal {
    UnknownAlarm,
    /// The alarm is not in a state where the action applies.
    WrongState,
    /// A timed shelve that had expired before it arrived, or a non-positive
    /// or too long duration.
    ShelveExpired,
    ShelveTooLong,
}

impl CommandRefusal {
    pub fn as_str(self) -> &'static str {
        match self {
            CommandRefusal::UnknownAlarm => "unknown_alarm",
            CommandRefusal::WrongState => "wrong_state",
            CommandRefusal::ShelveExpired => "shelve_expired",
            CommandRefusal::ShelveTooLong => "shelve_too_long",
        }
    }
}

/// The engine's answer to an [`AlarmCommand`].
#[derive(Debug, Clone, PartialEq)]
pub struct CommandReply {
    pub command: AlarmCommand,
    /// `None` when applied.
    pub refused: Option<CommandRefusal>,
    /// Human-readable detail (the state found, the limit exceeded).
    pub detail: String,
    /// Sequence number of the alarm event the command produced, when applied.
    pub seq: Option<u64>,
}

/// A confirmation a source waits for (see [`Input::Receipt`]). Cheap to
/// clone; confirming calls the source's callback with the sequence number.
#[derive(Clone)]
pub struct Receipt {
    seq: u64,
    confirm: std::sync::Arc<dyn Fn(u64) + Send + Sync>,
}

impl Receipt {
    pub fn new(seq: u64, confirm: std::sync::Arc<dyn Fn(u64) + Send + Sync>) -> Self {
        Receipt { seq, confirm }
    }

    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Tells the source that everything before this receipt is stored.
    pub fn confirm(self) {
        (self.confirm)(self.seq)
    }
}

impl std::fmt::Debug for Receipt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receipt").field("seq", &self.seq).finish()
    }
}

impl PartialEq for Receipt {
    fn eq(&self, other: &Self) -> bool {
        self.seq == other.seq && std::sync::Arc::ptr_eq(&self.confirm, &other.confirm)
    }
}

/// The level or condition an alarm watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AlarmKind {
    HighHigh,
    High,
    Low,
    LowLow,
    /// A balance window's 输差率 exceeded its limit: a possible leak.
    Imbalance,
    /// The sequential leak test (CUSUM on the line-pack-compensated
    /// residual) crossed its threshold.
    Leak,
    /// Pressure fell faster than the rupture limit.
    Rupture,
    /// The value changes faster than its limit (units per minute).
    RateOfChange,
    /// Slam-shut valve (SSD) tripped: latched, escalates at once.
    SlamShut,
    /// Gas detector in alarm.
    GasDetector,
    /// Door or enclosure open.
    Door,
    /// Another digital state alarm.
    Digital,
    /// No good data from a device for 1.5 poll periods.
    CommLoss,
    /// A point's data is bad (device exception, out of range, not finite).
    BadQuality,
    /// Alarm flood: more than the flood threshold of alarms in the window.
    /// Its events are the parents of the flood group.
    Flood,
}

impl AlarmKind {
    /// Short code used in alarm ids and payloads.
    pub fn code(self) -> &'static str {
        match self {
            AlarmKind::HighHigh => "HH",
            AlarmKind::High => "H",
            AlarmKind::Low => "L",
            AlarmKind::LowLow => "LL",
            AlarmKind::Imbalance => "IMBALANCE",
            AlarmKind::Leak => "LEAK",
            AlarmKind::Rupture => "RUPTURE",
            AlarmKind::RateOfChange => "ROC",
            AlarmKind::SlamShut => "SSD",
            AlarmKind::GasDetector => "GAS",
            AlarmKind::Door => "DOOR",
            AlarmKind::Digital => "DI",
            AlarmKind::CommLoss => "COMM",
            AlarmKind::BadQuality => "QUALITY",
            AlarmKind::Flood => "FLOOD",
        }
    }
}

/// Alarm priority (ISA-18.2 style).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Priority {
    Low,
    Medium,
    High,
    Critical,
}

impl Priority {
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Low => "low",
            Priority::Medium => "medium",
            Priority::High => "high",
            Priority::Critical => "critical",
        }
    }
}

/// What happened to an alarm: a process transition (raise, clear) or an
/// alarm-management step (ack, shelve, re-alarm, escalation, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AlarmAction {
    Raise,
    Clear,
    /// Acknowledged by an operator.
    Ack,
    /// A latched alarm was reset by an operator.
    Reset,
    /// Shelved by an operator (timed or one-shot).
    Shelve,
    /// Unshelved by an operator or because the shelve expired.
    Unshelve,
    /// Still active and unacknowledged after its priority's re-alarm time.
    ReAlarm,
    /// Escalated one level along the chain (`detail.level`).
    Escalate,
}

impl AlarmAction {
    pub fn as_str(self) -> &'static str {
        match self {
            AlarmAction::Raise => "raise",
            AlarmAction::Clear => "clear",
            AlarmAction::Ack => "ack",
            AlarmAction::Reset => "reset",
            AlarmAction::Shelve => "shelve",
            AlarmAction::Unshelve => "unshelve",
            AlarmAction::ReAlarm => "realarm",
            AlarmAction::Escalate => "escalate",
        }
    }

    /// Parses [`AlarmAction::as_str`].
    pub fn parse(s: &str) -> Option<AlarmAction> {
        Some(match s {
            "raise" => AlarmAction::Raise,
            "clear" => AlarmAction::Clear,
            "ack" => AlarmAction::Ack,
            "reset" => AlarmAction::Reset,
            "shelve" => AlarmAction::Shelve,
            "unshelve" => AlarmAction::Unshelve,
            "realarm" => AlarmAction::ReAlarm,
            "escalate" => AlarmAction::Escalate,
            _ => return None,
        })
    }
}

/// ISA-18.2 alarm state (the process and acknowledgement part).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub enum AlarmState {
    /// Condition clear, nothing to acknowledge.
    #[default]
    Normal,
    /// Active, not acknowledged.
    Unacked,
    /// Active, acknowledged.
    Acked,
    /// Returned to normal before it was acknowledged.
    RtnUnacked,
    /// Latched: returned to normal and acknowledged, waiting for a reset.
    Latched,
}

impl AlarmState {
    pub fn as_str(self) -> &'static str {
        match self {
            AlarmState::Normal => "normal",
            AlarmState::Unacked => "unacked",
            AlarmState::Acked => "acked",
            AlarmState::RtnUnacked => "rtn_unacked",
            AlarmState::Latched => "latched",
        }
    }

    pub fn parse(s: &str) -> Option<AlarmState> {
        Some(match s {
            "normal" => AlarmState::Normal,
            "unacked" => AlarmState::Unacked,
            "acked" => AlarmState::Acked,
            "rtn_unacked" => AlarmState::RtnUnacked,
            "latched" => AlarmState::Latched,
            _ => return None,
        })
    }

    /// Whether the alarm still needs the operator (shown on consoles).
    pub fn is_standing(self) -> bool {
        self != AlarmState::Normal
    }
}

/// Whether an alarm is presented to operators (ISA-18.2 suppression states).
/// Alarms that are not `Shown` are still evaluated and journaled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Annunciation {
    #[default]
    Shown,
    /// Shelved by an operator (timed or one-shot).
    Shelved,
    /// Suppressed by design (its suppression condition holds).
    Suppressed,
    /// Taken out of service in the configuration.
    OutOfService,
}

impl Annunciation {
    pub fn as_str(self) -> &'static str {
        match self {
            Annunciation::Shown => "shown",
            Annunciation::Shelved => "shelved",
            Annunciation::Suppressed => "suppressed",
            Annunciation::OutOfService => "out_of_service",
        }
    }

    pub fn parse(s: &str) -> Option<Annunciation> {
        Some(match s {
            "shown" => Annunciation::Shown,
            "shelved" => Annunciation::Shelved,
            "suppressed" => Annunciation::Suppressed,
            "out_of_service" => Annunciation::OutOfService,
            _ => return None,
        })
    }
}

/// Alarm-management facts attached to every [`AlarmEvent`]; the default is
/// a plain shown alarm in its first activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AlarmDetail {
    /// State after this event.
    pub state: AlarmState,
    pub annunciation: Annunciation,
    /// Timed shelve end, when shelved with a duration.
    pub shelved_until: Option<Timestamp>,
    /// Escalation level after this event (0 = first in the chain).
    pub level: u8,
    /// Re-alarms in the current activation.
    pub realarms: u32,
    /// Activations since start (repeat count).
    pub repeats: u32,
    /// Flagged as chattering (3 or more activations in 1 minute).
    pub chattering: bool,
    /// The `seq` of the flood's raise event when this event belongs to a
    /// flood group (the parent).
    pub flood_parent: Option<u64>,
}

/// An alarm transition produced by the engine.
#[derive(Debug, Clone, PartialEq)]
pub struct AlarmEvent {
    /// Index of the alarm definition in the plan; the stable alarm id
    /// (`<station>/<source>/<kind>`) is `plan.alarm_id(alarm)`.
    pub alarm: u32,
    pub kind: AlarmKind,
    pub action: AlarmAction,
    pub priority: Priority,
    /// The value that caused the transition (pressure, or 输差率 in percent).
    pub value: f64,
    /// The limit that was crossed.
    pub limit: f64,
    pub ts: Timestamp,
    /// Per-station event sequence number, so consumers can de-duplicate.
    pub seq: u64,
    /// Alarm-management state after the event.
    pub detail: AlarmDetail,
}

/// Alarm-system health (EEMUA 191 / ISA-18.2 performance figures), produced
/// by `tick` once per health interval.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct AlarmHealth {
    pub ts: Timestamp,
    /// Shown activations in the last 10 minutes.
    pub alarms_per_10min: u32,
    /// Whether the station is in alarm flood.
    pub flood: bool,
    /// Alarms flagged as chattering now.
    pub chattering: u32,
    /// Standing (not normal) alarms.
    pub standing: u32,
    /// Active unacknowledged alarms.
    pub unacked: u32,
    /// Shelved alarms.
    pub shelved: u32,
    /// Longest time an alarm now unacknowledged has waited (seconds).
    pub max_unacked_s: f64,
    /// Activations since start, all alarms.
    pub activations_total: u64,
}

/// A balance group's id (`[[balance.groups]] id`): 1 to
/// [`GroupId::MAX_LEN`] ASCII letters, digits, '_' or '-', so it is safe as
/// an InfluxDB tag, a JSON string and part of an alarm id. Stored inline so
/// [`BalanceResult`] and [`LeakAlert`] stay `Copy` and the engine allocates
/// nothing per window. A station without groups has one, [`GroupId::STATION`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupId {
    len: u8,
    bytes: [u8; GroupId::MAX_LEN],
}

impl GroupId {
    /// Longest id.
    pub const MAX_LEN: usize = 23;
    /// The implicit group of a station without `[[balance.groups]]` (every
    /// meter by its role, every line-pack element).
    pub const STATION: GroupId = GroupId::from_static("station");

    const fn from_static(s: &str) -> GroupId {
        let b = s.as_bytes();
        let mut bytes = [0u8; GroupId::MAX_LEN];
        let mut i = 0;
        while i < b.len() && i < GroupId::MAX_LEN {
            bytes[i] = b[i];
            i += 1;
        }
        GroupId {
            len: i as u8,
            bytes,
        }
    }

    /// `None` unless `s` is a valid id (see the type's docs).
    pub fn new(s: &str) -> Option<GroupId> {
        let ok = !s.is_empty()
            && s.len() <= GroupId::MAX_LEN
            && s.bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-');
        ok.then(|| GroupId::from_static(s))
    }

    pub fn as_str(&self) -> &str {
        // Only ever built from validated ASCII.
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or("")
    }

    /// Whether this is the station group (implicit, or configured with id
    /// "station"): it keeps the series and alarm ids of a single-balance
    /// station.
    pub fn is_station(&self) -> bool {
        *self == GroupId::STATION
    }
}

impl Default for GroupId {
    fn default() -> Self {
        GroupId::STATION
    }
}

impl std::fmt::Debug for GroupId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

impl std::fmt::Display for GroupId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The result of one closed balance window (输差) of one balance group.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BalanceResult {
    /// The balance group.
    pub group: GroupId,
    /// Window start; the window covers `[start, end)`.
    pub start: Timestamp,
    pub end: Timestamp,
    /// Base volume received (Sm³).
    pub inlet_sm3: f64,
    /// Base volume delivered (Sm³).
    pub outlet_sm3: f64,
    /// Line-pack change over the window, `LP(end) - LP(start)` (Sm³), summed
    /// over the group's line-pack elements (0 when it has none).
    pub linepack_change_sm3: f64,
    /// `inlet - outlet - linepack_change` (Sm³): gas unaccounted for.
    pub imbalance_sm3: f64,
    /// 输差率: `imbalance / inlet * 100`; NaN when the inlet is zero.
    pub imbalance_percent: f64,
    /// Expanded (k = 2, about 95 %) uncertainty of `imbalance_percent`, in
    /// percentage points, propagated from the meters' configured
    /// uncertainties (root sum of squares) and the line pack's.
    pub uncertainty_percent: f64,
    /// Fraction (0..=1) of the window for which every meter had good data.
    pub coverage: f64,
    /// Good when coverage is complete, Uncertain when partly covered (no
    /// alarm is raised), Bad when too little data to judge.
    pub quality: Quality,
}

/// What a leak alarm says (the station's balance group), beside its
/// `AlarmKind::Leak` alarm event.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LeakAlert {
    /// The balance group whose leak test fired.
    pub group: GroupId,
    /// Window length of the detector that fired (s).
    pub window_s: i64,
    /// Estimated leak start (CUSUM change point).
    pub start: Timestamp,
    /// When it was detected (end of the window that crossed the threshold).
    pub detected: Timestamp,
    /// Estimated leak rate, Sm³/h, and its standard uncertainty.
    pub rate_sm3_per_h: f64,
    pub rate_uncertainty_sm3_per_h: f64,
    /// Estimated rate in % of inlet.
    pub rate_percent: f64,
    /// Probability (0..1) that the mean residual since `start` is positive.
    pub confidence: f64,
}

impl LeakAlert {
    /// The detection method, for payloads and reports.
    pub fn method(&self) -> &'static str {
        "cusum_compensated_volume_balance"
    }
}

/// Everything the engine produced for one input or tick. Reused between
/// calls so the steady state allocates nothing.
#[derive(Debug, Default, Clone)]
pub struct Output {
    pub samples: Vec<Sample>,
    pub alarms: Vec<AlarmEvent>,
    pub balances: Vec<BalanceResult>,
    /// Leak alerts (details of each `AlarmKind::Leak` raise).
    pub leaks: Vec<LeakAlert>,
    /// Answers to operator commands.
    pub replies: Vec<CommandReply>,
    /// Alarm-system health, when due.
    pub health: Vec<AlarmHealth>,
    /// Flow-computer archive records read back (hourly volumes).
    pub archives: Vec<ArchiveSample>,
}

impl Output {
    pub fn clear(&mut self) {
        self.samples.clear();
        self.alarms.clear();
        self.balances.clear();
        self.leaks.clear();
        self.replies.clear();
        self.health.clear();
        self.archives.clear();
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
            && self.alarms.is_empty()
            && self.balances.is_empty()
            && self.leaks.is_empty()
            && self.replies.is_empty()
            && self.health.is_empty()
            && self.archives.is_empty()
    }
}
