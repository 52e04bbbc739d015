//! The Modbus poller: one task per link (a `host:port` speaking Modbus/TCP
//! or RTU over TCP, or a serial port speaking RTU) reads the planned blocks
//! of every device behind it and sends each result to the engine as an
//! [`Input`]. The poller never decodes; the engine does. The three
//! transports differ only in how [`EndpointTask::connect`] opens the link;
//! timeouts, reconnects, exception policy and pausing are the same code.
//!
//! Invariants:
//! - **Read-only toward the field.** The only requests ever built are
//!   function codes 01 (read coils), 02 (read discrete inputs), 03 (read
//!   holding registers) and 04 (read input registers), see
//!   [`read_request`]. Nothing here can write.
//! - **One bad register never blanks a device.** When a merged block is
//!   refused with exception 02 (illegal address: usually one unmapped
//!   register inside the merge), the block is split at point boundaries and
//!   the halves are read separately, halving again until the bad point is
//!   alone ([`SplitRanges`]). The split is remembered; parts go to the
//!   engine as `Input::RegistersPart` / `Input::ReadFailedPart`, so the good
//!   points keep reading and only the bad one is BAD `exception_02...`.
//! - **One connection per link.** Devices that share a link (unit ids
//!   behind one serial gateway, or on one RS-485 bus) share one TCP
//!   connection or one open serial port; requests on it are strictly
//!   serialised (one outstanding request per bus), the unit id is set per
//!   request. Serial buses, gateways and small RTUs allow nothing else.
//! - **RTU has no transaction id.** A late answer on an RTU link can only be
//!   told from the current one by unit id, function code, length and CRC.
//!   So after a timeout (or a garbled frame) the context is dropped (a TCP
//!   socket is reconnected; a serial port stays open, see `serial.rs`), and
//!   the line is listened to and every byte discarded until it has been
//!   silent for the link's timeout (libmodbus's error-recovery does the
//!   same: sleep the response timeout, flush), before the next request goes
//!   out. On a serial port each request also waits for the 3.5-character
//!   silence that separates RTU frames.
//! - **Every network step is bounded.** tokio-modbus has no timeouts of its
//!   own (slowtec/tokio-modbus#113, #183), so connecting and every request run
//!   under `tokio::time::timeout` with the device's `timeout`. A dead unit
//!   therefore delays the other devices of its endpoint by at most its
//!   timeout per cycle.
//! - **A context that failed is never reused.** After a timeout the late
//!   answer may still arrive and the next call then fails with a
//!   transaction-id mismatch (slowtec/tokio-modbus#324); after a transport or
//!   framing error the stream position is unknown. In all those cases the
//!   context is dropped and a fresh connection is made. An exception
//!   response, by contrast, is a complete well-framed answer: it is reported
//!   for that block only (a data-quality matter) and the connection stays.
//! - **Exceptions by code.** 01/02/03 are configuration errors: the request
//!   is logged once and retried only every `config_error_retry`. 05/06 (busy)
//!   hold that request back 1, 3, 7, 15, then 31 poll intervals. 04, 0A and
//!   0B (device failure, gateway path, gateway target) are failures of that
//!   unit only: the shared connection stays up for the other units.
//! - **A dead unit is paused.** After `pause_after_failed_cycles` cycles in
//!   a row without any good read and with unit failures (timeouts, transport,
//!   04/0A/0B), the unit is not polled for `pause_for`; the engine gets
//!   `Input::DevicePaused` and marks its points STALE `device_paused`. Then
//!   one cycle is tried; one more failure pauses it again. So one dead unit
//!   behind a gateway costs the others its timeout only a few times.
//! - **Reconnects back off.** Refused or failed connects are retried after a
//!   capped exponential delay with jitter (250 ms doubling to 30 s, ±20 %),
//!   reset by any well-framed response (registers or exception). A connection
//!   dropped after it had answered is re-opened at once (the drop is our
//!   resync, not proof the endpoint is down); one that never answered backs
//!   off like a refused connect.
//!   While disconnected nothing is sent: the engine marks the points STALE
//!   after 1.5 poll periods by itself.
//! - **Poll groups.** A block of a slower group (`every` ticks) is read on
//!   the ticks of the device's grid where `tick % every == phase`; the
//!   planner staggers the phases so a group's blocks spread over its ticks.
//!   Ticks are counted on the grid, skipped ones included, so a group keeps
//!   its own interval when cycles overrun; when its tick was skipped it is
//!   read at the next tick that runs, then back on its grid
//!   ([`next_group_tick`]): late once, never twice in a row, never starved.
//! - **Fixed rate, never bunched.** Each device is polled on its own
//!   `poll_interval` grid (tokio's `MissedTickBehavior::Skip`): ticks missed
//!   because a cycle overran (a slow answer, or the other devices of the
//!   link holding the bus) are skipped and counted
//!   (`gaswatch_modbus_overruns_total`), never run back to back to catch up.
//!   Ticks missed while the link was down are skipped but not counted.
//! - **Links staggered over the interval.** A device's grid is
//!   `origin + phase + k * poll_interval` ([`PollGrid`]), the phase a hash of
//!   its link ([`crate::sources::modbus::Link::poll_phase`]; zero with
//!   `stagger = false`). So the 50 gateways of a station answer spread over
//!   the second instead of all on one tick (the engine would take 15,000
//!   samples in one burst and an alarm in it would wait behind them); the
//!   devices of one link still follow each other on the link's phase. The
//!   grid is the daemon's, kept across reloads: a restarted poller resumes
//!   each device at the tick the old one left unfinished (else the first
//!   tick after the stop), so a reload neither polls an interval twice nor
//!   skips one. The link with the smallest phase polls at start, the others
//!   within one interval.
//! - **Never blocks on the engine.** Inputs go out with `try_send`; when the
//!   channel is full the rest of that device cycle is dropped and counted
//!   (`gaswatch_source_dropped_total{reason="channel_full"}`), with one WARN
//!   per episode.
//! - Responses are checked, not trusted: a register count different from the
//!   request is `Malformed`. (We call `Client::call` directly rather than
//!   `Reader::read_holding_registers`, whose `debug_assert_eq!` on the count
//!   would panic on such a peer in debug builds.)

use crate::engine::{BlockPlan, DevicePlan, EnginePlan};
use crate::model::{BlockId, DeviceId, Input, ReadError, Reason, Receipt, Timestamp};
use crate::sources::modbus::archive::{self, ArchiveStore};
use crate::sources::modbus::{Link, RegisterKind};
use metrics::{Counter, Gauge, Histogram, counter, gauge, histogram};
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_modbus::client::{Client, Context, rtu, tcp};
use tokio_modbus::slave::SlaveContext;
use tokio_modbus::{ProtocolError, Request, Response, Slave};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

/// First reconnect delay.
const BACKOFF_BASE: Duration = Duration::from_millis(250);
/// Largest reconnect delay.
const BACKOFF_CAP: Duration = Duration::from_secs(30);
/// Shortest poll interval honoured (guards a zero interval).
const MIN_INTERVAL: Duration = Duration::from_millis(1);

/// Spawns one task per link (host:port and framing, or serial port) on a
/// fresh [`PollGrid`] starting now. Devices sharing a link (several unit ids
/// behind one serial gateway or on one bus) share ONE connection; requests
/// on it are serialised.
///
/// The tasks run until `cancel` fires or the engine side of `tx` is closed.
pub fn spawn(
    plan: Arc<EnginePlan>,
    tx: mpsc::Sender<Input>,
    cancel: CancellationToken,
) -> Vec<JoinHandle<()>> {
    let now = Instant::now();
    let grid = PollGrid::new(&plan, now);
    spawn_on(plan, tx, cancel, grid, now)
}

/// Like [`spawn`], on an existing `grid`: each device's first poll is the
/// tick its previous poller left unfinished (see [`PollGrid::resume_at`]),
/// else the first tick of its grid at or after `from`. A reload passes the
/// daemon's grid and the moment the previous pollers stopped (all of them
/// ended), so no interval is polled twice or skipped.
pub fn spawn_on(
    plan: Arc<EnginePlan>,
    tx: mpsc::Sender<Input>,
    cancel: CancellationToken,
    grid: PollGrid,
    from: Instant,
) -> Vec<JoinHandle<()>> {
    let left = Arc::new(grid.take_left());
    endpoints(&plan)
        .into_iter()
        .map(|(endpoint, devices)| {
            let (plan, tx, cancel) = (Arc::clone(&plan), tx.clone(), cancel.clone());
            let (grid, left) = (grid.clone(), Arc::clone(&left));
            // Built in the task (per-device metric handles): the first
            // endpoint polls while the others are still being set up.
            tokio::spawn(async move {
                EndpointTask::new(plan, endpoint, devices, tx, cancel, grid, from, &left)
                    .run()
                    .await
            })
        })
        .collect()
}

/// The time axis the pollers of one daemon share: device `d` is polled at
/// `origin + offset(d) + k * poll_interval(d)`, with `offset(d)` its
/// [`DevicePlan::poll_phase`] minus `shift`, modulo its interval. The daemon
/// keeps one grid for its whole life, so pollers restarted by a reload keep
/// every device's ticks where they were. Clones share the book of where
/// stopped pollers left their devices.
#[derive(Debug, Clone)]
pub struct PollGrid {
    origin: Instant,
    /// The smallest phase of the plan the grid was made for: subtracted
    /// from every phase, so the link whose phase comes first polls at
    /// `origin` (start-up to first poll is not delayed by the stagger) and
    /// the others follow over the interval.
    shift: Duration,
    /// By device id: the tick a stopped poller had not finished (not
    /// started: the link was busy with another unit, or cut short).
    left: Arc<std::sync::Mutex<HashMap<String, Instant>>>,
}

impl PollGrid {
    /// A grid starting at `origin`, for the polled devices of `plan`.
    pub fn new(plan: &EnginePlan, origin: Instant) -> Self {
        let shift = plan
            .devices
            .iter()
            .filter(|d| !d.blocks.is_empty())
            .map(|d| d.poll_phase)
            .min()
            .unwrap_or(Duration::ZERO);
        PollGrid {
            origin,
            shift,
            left: Arc::default(),
        }
    }

    /// Where a new poller starts `device`: the tick its previous poller left
    /// unfinished (in `left`, from [`PollGrid::take_left`]) when that tick is
    /// on the device's grid (same interval and phase), else the first tick
    /// at or after `from`. So a reload that stops a busy link (units still
    /// waiting for their turn, or one cut mid-read) skips no unit's tick; a
    /// read cut short is made again, once.
    pub fn resume_at(
        &self,
        device: &DevicePlan,
        from: Instant,
        left: &HashMap<String, Instant>,
    ) -> Instant {
        match left.get(&device.id) {
            Some(&due) if self.first_due(device, due) == due => due,
            _ => self.first_due(device, from),
        }
    }

    /// Takes the book of unfinished ticks that stopped pollers left.
    pub fn take_left(&self) -> HashMap<String, Instant> {
        std::mem::take(&mut *self.left.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// A stopping poller notes each device's next tick (not yet polled).
    pub(crate) fn leave(&self, device: &str, due: Instant) {
        self.left
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(device.to_string(), due);
    }

    /// The first tick of `device`'s grid at or after `from`.
    pub fn first_due(&self, device: &DevicePlan, from: Instant) -> Instant {
        let step = device.poll_interval.max(MIN_INTERVAL).as_nanos();
        let phase = device.poll_phase.as_nanos() % step;
        let offset = (phase + step - self.shift.as_nanos() % step) % step;
        let first = self.origin + nanos(offset);
        if first >= from {
            return first;
        }
        let ticks = from.duration_since(first).as_nanos().div_ceil(step);
        first + nanos(ticks.saturating_mul(step))
    }
}

fn nanos(n: u128) -> Duration {
    Duration::from_nanos(u64::try_from(n).unwrap_or(u64::MAX))
}

/// Groups the devices with at least one block by [`Link`], in config order.
pub(crate) fn endpoints(plan: &EnginePlan) -> Vec<(Link, Vec<DeviceId>)> {
    let mut order: Vec<Link> = Vec::new();
    let mut groups: BTreeMap<Link, Vec<DeviceId>> = BTreeMap::new();
    for (i, d) in plan.devices.iter().enumerate() {
        if d.blocks.is_empty() {
            continue;
        }
        let key = d.link.clone();
        let group = groups.entry(key.clone()).or_default();
        if group.is_empty() {
            order.push(key);
        }
        group.push(DeviceId(i as u32));
    }
    order
        .into_iter()
        .filter_map(|k| groups.remove(&k).map(|g| (k, g)))
        .collect()
}

/// The only requests this module can build: FC01-FC04 reads.
pub(crate) fn read_request(kind: RegisterKind, start: u16, count: u16) -> Request<'static> {
    match kind {
        RegisterKind::Coil => Request::ReadCoils(start, count),
        RegisterKind::DiscreteInput => Request::ReadDiscreteInputs(start, count),
        RegisterKind::Holding => Request::ReadHoldingRegisters(start, count),
        RegisterKind::Input => Request::ReadInputRegisters(start, count),
    }
}

/// What one request produced.
#[derive(Debug, PartialEq)]
pub(crate) enum Outcome {
    Registers(Vec<u16>),
    /// The read failed; `reconnect` when the context must be dropped.
    Failed {
        error: ReadError,
        reconnect: bool,
    },
}

/// Classifies the result of one `call` wrapped in a timeout. `count` is the
/// number of words (registers) or bits (coils, discrete inputs) asked for;
/// bits come back as one word each (0 or 1).
pub(crate) fn classify(
    result: Result<tokio_modbus::Result<Response>, tokio::time::error::Elapsed>,
    count: u16,
) -> Outcome {
    let failed = |error, reconnect| Outcome::Failed { error, reconnect };
    match result {
        Err(_elapsed) => failed(ReadError::Timeout, true),
        Ok(Err(tokio_modbus::Error::Transport(e))) => match e.kind() {
            // The codec could not frame or parse the answer.
            io::ErrorKind::InvalidData | io::ErrorKind::InvalidInput => {
                failed(ReadError::Malformed, true)
            }
            _ => failed(ReadError::Transport, true),
        },
        // A response to another transaction or unit: the stream is out of step.
        Ok(Err(tokio_modbus::Error::Protocol(ProtocolError::HeaderMismatch { .. }))) => {
            failed(ReadError::Transport, true)
        }
        Ok(Err(tokio_modbus::Error::Protocol(ProtocolError::FunctionCodeMismatch { .. }))) => {
            failed(ReadError::Malformed, true)
        }
        Ok(Ok(Err(code))) => failed(ReadError::Exception(u8::from(code)), false),
        Ok(Ok(Ok(Response::ReadHoldingRegisters(regs) | Response::ReadInputRegisters(regs))))
            if regs.len() == usize::from(count) =>
        {
            Outcome::Registers(regs)
        }
        // Bits are packed in bytes: the answer carries up to 7 padding bits.
        Ok(Ok(Ok(Response::ReadCoils(bits) | Response::ReadDiscreteInputs(bits))))
            if bits.len() >= usize::from(count) && bits.len() < usize::from(count) + 8 =>
        {
            Outcome::Registers(
                bits[..usize::from(count)]
                    .iter()
                    .map(|&b| u16::from(b))
                    .collect(),
            )
        }
        // Well framed, but not the shape asked for: the stream is still in step.
        Ok(Ok(Ok(_))) => failed(ReadError::Malformed, false),
    }
}

/// A freshly opened link, before the Modbus framing is attached.
enum Opened {
    Tcp(TcpStream),
    Serial(super::serial::BusPort),
}

/// Resolves `host` and connects to the first address that accepts.
async fn connect_tcp(host: String, port: u16) -> io::Result<TcpStream> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "host resolved to no address");
    for addr in tokio::net::lookup_host((host.as_str(), port)).await? {
        match TcpStream::connect(addr).await {
            Ok(stream) => {
                // Small request/response frames: do not wait for Nagle.
                stream.set_nodelay(true)?;
                return Ok(stream);
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Capped exponential backoff with ±20 % jitter.
#[derive(Debug)]
pub(crate) struct Backoff {
    next: Duration,
}

impl Backoff {
    pub(crate) fn new() -> Self {
        Backoff { next: BACKOFF_BASE }
    }

    /// The delay before the next attempt; doubles the one after it.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(BACKOFF_CAP);
        d.mul_f64(0.8 + 0.4 * fastrand::f64())
    }

    pub(crate) fn reset(&mut self) {
        self.next = BACKOFF_BASE;
    }
}

/// Next poll time on the grid `due + k * interval` strictly after `now`, and
/// the number of grid ticks skipped on the way (overruns).
pub(crate) fn advance(due: Instant, interval: Duration, now: Instant) -> (Instant, u64) {
    let next = due + interval;
    if next > now {
        return (next, 0);
    }
    let behind = now.duration_since(next).as_nanos();
    let step = interval.as_nanos().max(1);
    let skipped = behind / step + 1;
    let next = next + interval.mul_f64(skipped as f64);
    // mul_f64 may round down by a nanosecond; make sure we are in the future.
    let next = if next > now { next } else { now + interval };
    (next, u64::try_from(skipped).unwrap_or(u64::MAX))
}

/// The first tick after `tick` on a poll group's grid (`n % every == phase`).
pub(crate) fn next_group_tick(tick: u64, every: u32, phase: u32) -> u64 {
    let every = u64::from(every.max(1));
    let after = tick.saturating_add(1);
    let phase = u64::from(phase) % every;
    after + (phase + every - after % every) % every
}

/// The remembered split of a block whose merged read failed with exception
/// 02: ranges of point indices `[lo, hi)`, each read as one request. Ranges
/// only ever get smaller (halved when they fail with 02 again), so after at
/// most log2(points) cycles the bad point is alone and the rest read good.
/// Kept until the poller restarts: a device whose register map changes is
/// re-planned by a restart anyway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SplitRanges(pub(crate) Vec<(usize, usize)>);

impl SplitRanges {
    /// The first split of a block of `n >= 2` points.
    pub(crate) fn halves(n: usize) -> Self {
        SplitRanges(vec![(0, n / 2), (n / 2, n)])
    }

    /// Replaces range `i` by its two halves (no-op for a single point).
    pub(crate) fn halve(&mut self, i: usize) {
        if let Some(&(lo, hi)) = self.0.get(i)
            && hi - lo > 1
        {
            let mid = lo + (hi - lo) / 2;
            self.0[i] = (lo, mid);
            self.0.insert(i + 1, (mid, hi));
        }
    }
}

/// Word offset and word count covering points `lo..hi` of a block (points
/// are in address order; their registers only, not the gaps at either end).
pub(crate) fn part_words(block: &BlockPlan, lo: usize, hi: usize) -> (u16, u16) {
    let pts = &block.points[lo.min(block.points.len())..hi.min(block.points.len())];
    let first = pts.iter().map(|p| p.offset).min().unwrap_or(0);
    let end = pts.iter().map(|p| p.offset + p.len).max().unwrap_or(first);
    (first, end - first)
}

/// Part key of a whole (unsplit) block in [`DeviceState::holds`].
const WHOLE: usize = usize::MAX;
/// Most doublings of the busy back-off (1, 3, 7, 15, 31 skipped cycles).
const BUSY_LEVEL_CAP: u32 = 5;

/// A request held back until `until`.
#[derive(Debug, Clone, Copy)]
struct Hold {
    until: Instant,
    /// Consecutive busy answers (0 for a configuration error).
    busy_level: u32,
}

/// Exception policy: 01/02/03 are configuration errors (the device will
/// answer the same until someone changes the config or the device): retry
/// slowly. 05/06 mean busy: back off and retry.
pub(crate) fn is_config_error(e: ReadError) -> bool {
    matches!(e, ReadError::Exception(1..=3))
}

/// Busy answers (05 acknowledge, 06 busy).
pub(crate) fn is_busy(e: ReadError) -> bool {
    matches!(e, ReadError::Exception(5 | 6))
}

/// Failures that say the unit itself is not answering usefully: timeouts,
/// broken or garbled answers, 04 device failure, 0A/0B gateway path or
/// target. They count towards pausing the unit; 01/02/03/05/06 do not (the
/// unit answered).
pub(crate) fn is_unit_failure(e: ReadError) -> bool {
    !is_config_error(e) && !is_busy(e)
}

/// Per-device metric handles, registered once.
struct DeviceMetrics {
    requests: Counter,
    timeout: Counter,
    transport: Counter,
    exception: Counter,
    malformed: Counter,
    overruns: Counter,
    dropped: Counter,
    response: Histogram,
    splits: Counter,
    pauses: Counter,
    last_good: Gauge,
    device: String,
}

impl DeviceMetrics {
    fn new(device: &str) -> Self {
        let err = |t: &'static str| counter!("gaswatch_modbus_errors_total", "device" => device.to_string(), "error_type" => t);
        DeviceMetrics {
            requests: counter!("gaswatch_modbus_requests_total", "device" => device.to_string()),
            timeout: err("timeout"),
            transport: err("transport"),
            exception: err("exception"),
            malformed: err("malformed"),
            overruns: counter!("gaswatch_modbus_overruns_total", "device" => device.to_string()),
            dropped: counter!(
                "gaswatch_source_dropped_total",
                "device" => device.to_string(),
                "reason" => "channel_full"
            ),
            response: histogram!("gaswatch_modbus_response_seconds", "device" => device.to_string()),
            splits: counter!("gaswatch_modbus_block_splits_total", "device" => device.to_string()),
            pauses: counter!("gaswatch_modbus_pauses_total", "device" => device.to_string()),
            last_good: gauge!("gaswatch_modbus_last_good_read_seconds", "device" => device.to_string()),
            device: device.to_string(),
        }
    }

    fn error(&self, e: ReadError) {
        match e {
            ReadError::Timeout => self.timeout.increment(1),
            ReadError::Transport => self.transport.increment(1),
            ReadError::Exception(code) => {
                self.exception.increment(1);
                // By code too (a bounded set of names): which kind of
                // exception matters more than how many.
                counter!("gaswatch_modbus_exceptions_total", "device" => self.device.clone(),
                    "exception" => Reason::Exception(code).as_str())
                .increment(1);
            }
            ReadError::Malformed => self.malformed.increment(1),
        }
    }
}

/// Counts the points of a dropped input in
/// `gaswatch_points_dropped_total{reason="channel_full"}` (the inputs
/// themselves are `gaswatch_source_dropped_total`).
fn points_dropped(device: &DevicePlan, input: &Input) {
    let in_range = |block: BlockId, first: u16, words: u16| -> u64 {
        device.blocks.get(block.0 as usize).map_or(0, |b| {
            b.points
                .iter()
                .filter(|p| {
                    // `first` is a word offset into the block's answer, like `p.offset`.
                    let (lo, hi) = (u32::from(first), u32::from(first) + u32::from(words));
                    (lo..hi).contains(&u32::from(p.offset))
                })
                .count() as u64
        })
    };
    let n = match input {
        Input::Registers { block, .. } | Input::ReadFailed { block, .. } => device
            .blocks
            .get(block.0 as usize)
            .map_or(0, |b| b.points.len() as u64),
        Input::RegistersPart {
            block, first, regs, ..
        } => in_range(
            *block,
            *first,
            u16::try_from(regs.len()).unwrap_or(u16::MAX),
        ),
        Input::ReadFailedPart {
            block,
            first,
            words,
            ..
        } => in_range(*block, *first, *words),
        _ => 0,
    };
    counter!("gaswatch_points_dropped_total", "reason" => "channel_full").increment(n);
}

/// Poll state of one device.
struct DeviceState {
    id: DeviceId,
    due: Instant,
    /// Last reported state per block (`None` = good or not yet read), so a
    /// change is logged once.
    block_error: Vec<Option<ReadError>>,
    /// Per block: the remembered split after an exception 02 (`None`: read whole).
    splits: Vec<Option<SplitRanges>>,
    /// Requests held back after exceptions 01/02/03 (slow retry) or 05/06
    /// (busy: doubling back-off), by (block, part or [`WHOLE`]).
    holds: HashMap<(usize, usize), Hold>,
    /// Failed cycles in a row (see [`is_unit_failure`]).
    failed_cycles: u32,
    /// While paused after too many failed cycles: until when.
    paused_until: Option<Instant>,
    /// True from a pause until the unit answers again (logs once per episode).
    degraded: bool,
    /// Grid tick of the cycle about to run (skipped ticks counted).
    cycle: u64,
    /// Per block: the first tick it is due at (poll groups, see
    /// [`next_group_tick`]).
    block_due: Vec<u64>,
    /// This cycle: some read succeeded / some read failed as a unit failure.
    cycle_ok: bool,
    cycle_dead: bool,
    /// When the link came back (set on reconnect until the device's next
    /// cycle): the ticks missed while disconnected are not overruns.
    resumed: Option<Instant>,
    metrics: DeviceMetrics,
    /// The flow computer's hourly archive, when the device has one.
    archive: Option<ArchiveState>,
}

/// Most archive records read in one poll cycle: a long backfill is spread
/// over cycles so the device's points keep their poll rate.
const ARCHIVE_RECORDS_PER_CYCLE: u32 = 40;

/// Poll state of a device's hourly archive (see `archive.rs`).
struct ArchiveState {
    store: Arc<ArchiveStore>,
    /// Confirms a stored index to `store` (the receipt callback).
    confirm: Arc<dyn Fn(u64) + Send + Sync>,
    /// Highest record index handed to the engine (`None`: none yet, the
    /// whole ring is read).
    last: Option<u32>,
    /// When the header is read next.
    due: Instant,
    /// The problem logged last, so each is logged once per episode.
    problem: Option<String>,
    records: Counter,
    lost: Counter,
    latest: Gauge,
}

impl ArchiveState {
    fn open(plan: &crate::engine::ArchivePlan, device: &str) -> ArchiveState {
        let (store, last, problem) = ArchiveStore::open(&plan.state_path, device);
        if let Some(error) = problem {
            warn!(device, %error, "Archive mark unreadable.");
        }
        let store = Arc::new(store);
        let s = Arc::clone(&store);
        let dev = device.to_string();
        let confirm: Arc<dyn Fn(u64) + Send + Sync> = Arc::new(move |seq| {
            if let Err(error) = s.confirm(u32::try_from(seq).unwrap_or(u32::MAX)) {
                // Not data loss: the records are stored; a restart reads them again.
                warn!(device = %dev, %error, "Cannot save the archive mark; records may be read again after a restart.");
            }
        });
        ArchiveState {
            store,
            confirm,
            last,
            due: Instant::now(),
            problem: None,
            records: counter!("gaswatch_archive_records_total", "device" => device.to_string()),
            lost: counter!("gaswatch_archive_records_lost_total", "device" => device.to_string()),
            latest: gauge!("gaswatch_archive_last_index", "device" => device.to_string()),
        }
    }
}

/// Why a poll cycle ended early.
enum CycleEnd {
    Done,
    /// The connection failed and was dropped.
    Reconnect,
    /// The engine is gone.
    Closed,
}

struct EndpointTask {
    plan: Arc<EnginePlan>,
    name: String,
    link: Link,
    /// The longest timeout of the link's devices: for connecting, and the
    /// silence awaited before reusing an RTU link after a failure.
    connect_timeout: Duration,
    /// Silence before each request: RTU on a serial port needs 3.5
    /// characters; `pause_between_requests` (the longest of the link's
    /// devices) may ask for more.
    frame_gap: Duration,
    /// `pause_after_connect` (the longest of the link's devices).
    pause_after_connect: Duration,
    /// No request before this (set on connect by `pause_after_connect`).
    not_before: Option<Instant>,
    /// When the last answer (or timeout) ended, for `frame_gap`.
    last_frame: Option<Instant>,
    /// The next connect follows a failed request: on an RTU link, wait for
    /// silence before sending again (module docs).
    resync: bool,
    /// The open serial port of a serial link, kept across resyncs.
    port: Option<super::serial::BusPort>,
    /// The last failed request was an I/O error of the link itself (not a
    /// timeout or a garbled answer): reopen the serial port.
    link_broken: bool,
    devices: Vec<DeviceState>,
    tx: mpsc::Sender<Input>,
    cancel: CancellationToken,
    backoff: Backoff,
    /// True while connects fail (one WARN when it starts, one INFO when it ends).
    unreachable: bool,
    /// True while the channel is full (one WARN per episode).
    channel_full: bool,
    /// True once the current connection carried a well-formed response.
    link_ok: bool,
    connects_ok: Counter,
    connects_err: Counter,
    /// Told where each device stands when the poller stops.
    grid: PollGrid,
}

impl EndpointTask {
    #[allow(clippy::too_many_arguments)]
    fn new(
        plan: Arc<EnginePlan>,
        link: Link,
        ids: Vec<DeviceId>,
        tx: mpsc::Sender<Input>,
        cancel: CancellationToken,
        grid: PollGrid,
        from: Instant,
        left: &HashMap<String, Instant>,
    ) -> Self {
        let name = link.to_string();
        let devices: Vec<DeviceState> = ids
            .into_iter()
            .map(|id| {
                let d = plan.device(id);
                DeviceState {
                    id,
                    due: grid.resume_at(d, from, left),
                    block_error: vec![None; d.blocks.len()],
                    splits: vec![None; d.blocks.len()],
                    holds: HashMap::new(),
                    failed_cycles: 0,
                    paused_until: None,
                    degraded: false,
                    cycle: 0,
                    block_due: d.blocks.iter().map(|b| u64::from(b.phase)).collect(),
                    cycle_ok: false,
                    cycle_dead: false,
                    resumed: None,
                    metrics: DeviceMetrics::new(&d.id),
                    archive: d.archive.as_ref().map(|a| ArchiveState::open(a, &d.id)),
                }
            })
            .collect();
        let connect_timeout = devices
            .iter()
            .map(|s| plan.device(s.id).timeout)
            .max()
            .unwrap_or(Duration::from_secs(1));
        let longest = |f: fn(&DevicePlan) -> Duration| {
            devices
                .iter()
                .map(|s| f(plan.device(s.id)))
                .max()
                .unwrap_or(Duration::ZERO)
        };
        let pause_between = longest(|d| d.pause_between_requests);
        let pause_after_connect = longest(|d| d.pause_after_connect);
        EndpointTask {
            connects_ok: counter!("gaswatch_modbus_connects_total", "endpoint" => name.clone(), "result" => "ok"),
            connects_err: counter!("gaswatch_modbus_connects_total", "endpoint" => name.clone(), "result" => "error"),
            plan,
            name,
            frame_gap: match &link {
                Link::Serial(s) => s.frame_gap(),
                Link::Tcp { .. } | Link::RtuOverTcp { .. } => Duration::ZERO,
            }
            .max(pause_between),
            pause_after_connect,
            not_before: None,
            link,
            connect_timeout,
            last_frame: None,
            resync: false,
            port: None,
            link_broken: false,
            devices,
            tx,
            cancel,
            backoff: Backoff::new(),
            unreachable: false,
            channel_full: false,
            link_ok: false,
            grid,
        }
    }

    /// Runs `fut` unless cancellation comes first (`None`).
    async fn or_cancel<F: Future>(cancel: &CancellationToken, fut: F) -> Option<F::Output> {
        tokio::select! {
            biased;
            () = cancel.cancelled() => None,
            out = fut => Some(out),
        }
    }

    async fn run(mut self) {
        debug!(endpoint = %self.name, devices = self.devices.len(), "Modbus poller started.");
        let mut ctx: Option<Context> = None;
        let mut retry_at = Instant::now();
        loop {
            if ctx.is_none() {
                let cancel = self.cancel.clone();
                if Self::or_cancel(&cancel, tokio::time::sleep_until(retry_at))
                    .await
                    .is_none()
                {
                    break;
                }
                let Some(result) = Self::or_cancel(&cancel, self.connect()).await else {
                    break;
                };
                match result {
                    Ok(c) => {
                        self.connects_ok.increment(1);
                        if self.unreachable {
                            info!(endpoint = %self.name, "Modbus endpoint reachable again.");
                            self.unreachable = false;
                        } else {
                            debug!(endpoint = %self.name, "Modbus endpoint connected.");
                        }
                        // Ticks that passed while disconnected are not overruns.
                        // `due` itself is kept: the most overdue device goes
                        // first, so no device starves another after a reconnect.
                        let now = Instant::now();
                        for d in &mut self.devices {
                            d.resumed = Some(now);
                        }
                        ctx = Some(c);
                        self.link_ok = false;
                        self.not_before = (!self.pause_after_connect.is_zero())
                            .then(|| Instant::now() + self.pause_after_connect);
                    }
                    Err(error) => {
                        self.connects_err.increment(1);
                        // A serial port that failed here is opened afresh.
                        self.port = None;
                        let delay = self.backoff.next_delay();
                        if self.unreachable {
                            debug!(endpoint = %self.name, %error, ?delay, "Modbus connect failed again.");
                        } else {
                            warn!(endpoint = %self.name, %error, ?delay, "Modbus endpoint unreachable.");
                            self.unreachable = true;
                        }
                        retry_at = Instant::now() + delay;
                        continue;
                    }
                }
            }
            // The device due first (ties go to config order).
            let Some(next) = (0..self.devices.len()).min_by_key(|&i| self.devices[i].due) else {
                break;
            };
            let cancel = self.cancel.clone();
            let due = self.devices[next].due;
            if Self::or_cancel(&cancel, tokio::time::sleep_until(due))
                .await
                .is_none()
            {
                break;
            }
            let Some(c) = ctx.as_mut() else { continue };
            let Some(end) = Self::or_cancel(&cancel, self.poll_device(c, next)).await else {
                break;
            };
            let interval = self
                .plan
                .device(self.devices[next].id)
                .poll_interval
                .max(MIN_INTERVAL);
            let (next_due, skipped) = advance(due, interval, Instant::now());
            let st = &mut self.devices[next];
            st.cycle = st.cycle.wrapping_add(1).wrapping_add(skipped);
            // Ticks that passed before the link came back were missed by the
            // outage, not by a slow cycle.
            let down = match st.resumed.take() {
                Some(at) if at > due => advance(due, interval, at).1,
                _ => 0,
            };
            let overruns = skipped.saturating_sub(down);
            if overruns > 0 {
                st.metrics.overruns.increment(overruns);
                debug!(device = %self.plan.device(st.id).id, overruns, "Modbus poll cycle overran; ticks skipped.");
            }
            self.devices[next].due = next_due;
            match end {
                CycleEnd::Done => {}
                CycleEnd::Reconnect => {
                    // Never reuse a context after a timeout or transport error (#324).
                    ctx = None;
                    self.resync = true;
                    if std::mem::replace(&mut self.link_broken, false) {
                        self.port = None;
                    }
                    // A connection that answered before is dropped to resync,
                    // not because the endpoint is down: reconnect at once so a
                    // dead unit behind a gateway costs the others only its
                    // timeout. Otherwise back off.
                    let delay = if self.link_ok {
                        Duration::ZERO
                    } else {
                        self.backoff.next_delay()
                    };
                    debug!(endpoint = %self.name, ?delay, "Modbus connection dropped; reconnecting.");
                    retry_at = Instant::now() + delay;
                }
                CycleEnd::Closed => {
                    info!(endpoint = %self.name, "Engine channel closed; Modbus poller stops.");
                    break;
                }
            }
        }
        // `due` advances only after a device's cycle ends: a cycle cut
        // short or not yet started is left for the next poller.
        for st in &self.devices {
            self.grid.leave(&self.plan.device(st.id).id, st.due);
        }
        debug!(endpoint = %self.name, "Modbus poller stopped.");
    }

    /// Opens the link (resolves and connects, or opens the serial port),
    /// all within the connect timeout; on an RTU link then waits for the
    /// line to be quiet (see the module docs).
    async fn connect(&mut self) -> io::Result<Context> {
        let opened = match &self.link {
            Link::Tcp { host, port } | Link::RtuOverTcp { host, port } => {
                let attempt = connect_tcp(host.clone(), *port);
                match tokio::time::timeout(self.connect_timeout, attempt).await {
                    Ok(r) => Opened::Tcp(r?),
                    Err(_) => {
                        return Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out"));
                    }
                }
            }
            Link::Serial(line) => {
                // The port stays open across resyncs (serial.rs); it is
                // reopened only after an I/O error dropped it.
                let port = match &self.port {
                    Some(p) => {
                        p.clear_input()?;
                        p.clone()
                    }
                    None => super::serial::BusPort::open(line)?,
                };
                self.port = Some(port.clone());
                Opened::Serial(port)
            }
        };
        // After a failure a late answer may still be on its way; otherwise
        // only stale bytes already buffered need to go.
        let quiet = if std::mem::replace(&mut self.resync, false) {
            self.connect_timeout
        } else {
            (self.frame_gap * 2).max(Duration::from_millis(5))
        };
        let limit = self.connect_timeout * 3;
        let ctx = match opened {
            Opened::Tcp(stream) => match &self.link {
                Link::RtuOverTcp { .. } => {
                    let mut stream = stream;
                    self.discard(&mut stream, quiet, limit).await?;
                    rtu::attach_slave(stream, Slave(1))
                }
                _ => tcp::attach_slave(stream, Slave::tcp_device()),
            },
            Opened::Serial(mut port) => {
                self.discard(&mut port, quiet, limit).await?;
                rtu::attach_slave(port, Slave(1))
            }
        };
        self.last_frame = Some(Instant::now());
        Ok(ctx)
    }

    /// Reads and drops bytes until the line was silent for `quiet` (at most
    /// `limit` in all: a line that never stops talking is used anyway, and
    /// its garbage fails the next request instead).
    async fn discard<S: tokio::io::AsyncRead + Unpin>(
        &self,
        stream: &mut S,
        quiet: Duration,
        limit: Duration,
    ) -> io::Result<()> {
        let end = Instant::now() + limit;
        let mut buf = [0u8; 256];
        let mut dropped = 0usize;
        loop {
            let wait = quiet.min(end.saturating_duration_since(Instant::now()));
            if wait.is_zero() {
                break;
            }
            match tokio::time::timeout(wait, stream.read(&mut buf)).await {
                Err(_) => break,
                Ok(Ok(0)) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the link closed while waiting for it to go quiet",
                    ));
                }
                Ok(Ok(n)) => dropped += n,
                Ok(Err(e)) => return Err(e),
            }
        }
        if dropped > 0 {
            debug!(endpoint = %self.name, dropped, "RTU link: discarded stray bytes before sending.");
        }
        Ok(())
    }

    /// Reads every block of one device once. A block whose merged read was
    /// refused with exception 02 is read in remembered parts instead (see
    /// [`SplitRanges`]), so one bad register never blanks the rest.
    async fn poll_device(&mut self, ctx: &mut Context, index: usize) -> CycleEnd {
        let plan = Arc::clone(&self.plan);
        let device_id = self.devices[index].id;
        let device = plan.device(device_id);
        if let Some(until) = self.devices[index].paused_until {
            if Instant::now() < until {
                return CycleEnd::Done;
            }
            // One cycle decides: a single further failure pauses it again.
            let st = &mut self.devices[index];
            st.paused_until = None;
            st.failed_cycles = device.pause_after_failed_cycles.saturating_sub(1);
            debug!(device = %device.id, "Modbus unit pause over; trying it again.");
        }
        self.devices[index].cycle_ok = false;
        self.devices[index].cycle_dead = false;
        let end = self.poll_device_reads(ctx, index).await;
        let st = &mut self.devices[index];
        if st.cycle_ok {
            st.failed_cycles = 0;
            if std::mem::replace(&mut st.degraded, false) {
                info!(device = %device.id, unit_id = device.unit_id, "Modbus unit answers again; pause lifted.");
            }
        } else if st.cycle_dead {
            st.failed_cycles = st.failed_cycles.saturating_add(1);
        }
        let limit = device.pause_after_failed_cycles;
        if limit > 0 && st.failed_cycles >= limit && !matches!(end, CycleEnd::Closed) {
            st.paused_until = Some(Instant::now() + device.pause_for);
            st.metrics.pauses.increment(1);
            if !std::mem::replace(&mut st.degraded, true) {
                warn!(device = %device.id, unit_id = device.unit_id, failed_cycles = st.failed_cycles,
                    pause = ?device.pause_for, "Modbus unit keeps failing; paused so it does not slow the others.");
            }
            let paused = Input::DevicePaused {
                device: device_id,
                ts: Timestamp::now(),
            };
            if let Err(closed) = self.send(index, device, paused, &mut false) {
                return closed;
            }
        }
        end
    }

    /// Whether the request `key` of device `index` is held back now.
    fn held(&self, index: usize, key: (usize, usize)) -> bool {
        self.devices[index]
            .holds
            .get(&key)
            .is_some_and(|h| Instant::now() < h.until)
    }

    /// One poll cycle's reads of one device (see [`Self::poll_device`]).
    async fn poll_device_reads(&mut self, ctx: &mut Context, index: usize) -> CycleEnd {
        let plan = Arc::clone(&self.plan);
        let device_id = self.devices[index].id;
        let device = plan.device(device_id);
        ctx.set_slave(Slave(device.unit_id));
        let mut dropping = false;
        let cycle = self.devices[index].cycle;
        let was_failing = self.devices[index].failed_cycles > 0 || self.devices[index].degraded;
        for (bi, block) in device.blocks.iter().enumerate() {
            let block_id = BlockId(bi as u32);
            let due_at = &mut self.devices[index].block_due[bi];
            if cycle < *due_at {
                continue; // a slower poll group, not due this tick
            }
            *due_at = next_group_tick(cycle, block.every, block.phase);
            if self.devices[index].splits[bi].is_none() {
                if self.held(index, (bi, WHOLE)) {
                    continue;
                }
                let outcome = self
                    .read(
                        ctx,
                        index,
                        device.timeout,
                        block.register,
                        block.start,
                        block.count,
                        block.words,
                    )
                    .await;
                let ts = Timestamp::now();
                if outcome
                    == (Outcome::Failed {
                        error: ReadError::Exception(2),
                        reconnect: false,
                    })
                    && block.points.len() > 1
                {
                    // Merged across a register the device refuses: isolate it.
                    info!(device = %device.id, block = bi, start = block.start, count = block.count,
                        "Modbus exception 02 on a merged read; splitting it to isolate the bad register.");
                    self.devices[index].splits[bi] = Some(SplitRanges::halves(block.points.len()));
                    self.devices[index].metrics.splits.increment(1);
                } else {
                    let (input, reconnect) = self.on_outcome(
                        index,
                        device,
                        bi,
                        outcome,
                        (bi, WHOLE),
                        |regs| Input::Registers {
                            device: device_id,
                            block: block_id,
                            ts,
                            regs,
                        },
                        |error| Input::ReadFailed {
                            device: device_id,
                            block: block_id,
                            ts,
                            error,
                        },
                    );
                    if let Err(end) = self.send(index, device, input, &mut dropping) {
                        return end;
                    }
                    if reconnect {
                        return CycleEnd::Reconnect;
                    }
                    continue;
                }
            }
            // Read in parts; a part that still fails with 02 and holds more
            // than one point is halved again (remembered for later cycles).
            // The block's state (first error of any part) is logged once.
            let mut i = 0;
            let mut block_state = None;
            while let Some(&(lo, hi)) = self.devices[index].splits[bi]
                .as_ref()
                .and_then(|r| r.0.get(i))
            {
                if self.held(index, (bi, lo)) {
                    i += 1;
                    continue;
                }
                let (first, words) = part_words(block, lo, hi);
                let wpn = (block.words / block.count.max(1)).max(1);
                let start = block.start + first / wpn;
                let count = words / wpn;
                let outcome = self
                    .read(
                        ctx,
                        index,
                        device.timeout,
                        block.register,
                        start,
                        count,
                        words,
                    )
                    .await;
                let ts = Timestamp::now();
                if outcome
                    == (Outcome::Failed {
                        error: ReadError::Exception(2),
                        reconnect: false,
                    })
                    && hi - lo > 1
                    && let Some(ranges) = self.devices[index].splits[bi].as_mut()
                {
                    ranges.halve(i);
                    continue;
                }
                if let Outcome::Failed { error, .. } = outcome {
                    block_state = block_state.or(Some(error));
                }
                let (input, reconnect) = self.on_outcome(
                    index,
                    device,
                    bi,
                    outcome,
                    (bi, lo),
                    |regs| Input::RegistersPart {
                        device: device_id,
                        block: block_id,
                        first,
                        ts,
                        regs,
                    },
                    |error| Input::ReadFailedPart {
                        device: device_id,
                        block: block_id,
                        first,
                        words,
                        ts,
                        error,
                    },
                );
                if let Err(end) = self.send(index, device, input, &mut dropping) {
                    return end;
                }
                if reconnect {
                    return CycleEnd::Reconnect;
                }
                i += 1;
            }
            self.note_block(index, device, bi, block_state);
        }
        let st = &mut self.devices[index];
        if was_failing
            && st.cycle_ok
            && let Some(a) = st.archive.as_mut()
        {
            // The unit answers again after an outage: fetch what it archived
            // meanwhile now, not at the next archive interval.
            a.due = Instant::now();
        }
        if dropping {
            return CycleEnd::Done;
        }
        self.poll_archive(ctx, index).await
    }

    /// Notes an archive problem once per episode (WARN; `error` when records are lost).
    fn archive_problem(&mut self, index: usize, device: &DevicePlan, problem: Option<String>) {
        let Some(a) = self.devices[index].archive.as_mut() else {
            return;
        };
        if a.problem == problem {
            return;
        }
        match (std::mem::replace(&mut a.problem, problem.clone()), problem) {
            (_, Some(problem)) => {
                warn!(device = %device.id, unit_id = device.unit_id, %problem, "Archive read failed.")
            }
            (Some(_), None) => info!(device = %device.id, "Archive reads good again."),
            (None, None) => {}
        }
    }

    /// Book-keeping of one archive read; `Err` ends the archive step (with
    /// the cycle's end when the connection must go).
    fn archive_outcome(
        &mut self,
        index: usize,
        device: &DevicePlan,
        outcome: Outcome,
    ) -> Result<Vec<u16>, Option<CycleEnd>> {
        let now = Instant::now();
        match outcome {
            Outcome::Registers(words) => {
                self.backoff.reset();
                self.link_ok = true;
                self.devices[index].cycle_ok = true;
                Ok(words)
            }
            Outcome::Failed { error, reconnect } => {
                if !reconnect {
                    self.backoff.reset();
                    self.link_ok = true;
                }
                let st = &mut self.devices[index];
                st.metrics.error(error);
                let retry = if is_config_error(error) {
                    device.config_error_retry
                } else if is_busy(error) {
                    device.poll_interval * 3
                } else {
                    st.cycle_dead = true;
                    Duration::ZERO
                };
                if let Some(a) = st.archive.as_mut() {
                    a.due = now + retry;
                }
                self.archive_problem(index, device, Some(format!("{error:?}")));
                Err(reconnect.then_some(CycleEnd::Reconnect))
            }
        }
    }

    /// Reads the device's archive when due: the header, then every record
    /// after the last one handed on (at most [`ARCHIVE_RECORDS_PER_CYCLE`]
    /// per cycle), each batch followed by a receipt that moves the mark on
    /// disk once the batch is stored.
    async fn poll_archive(&mut self, ctx: &mut Context, index: usize) -> CycleEnd {
        let plan = Arc::clone(&self.plan);
        let device_id = self.devices[index].id;
        let device = plan.device(device_id);
        let (Some(ap), Some(a)) = (
            device.archive.as_ref(),
            self.devices[index].archive.as_ref(),
        ) else {
            return CycleEnd::Done;
        };
        if Instant::now() < a.due {
            return CycleEnd::Done;
        }
        let hw = crate::sources::modbus::ARCHIVE_HEADER_WORDS;
        let outcome = self
            .read(
                ctx,
                index,
                device.timeout,
                RegisterKind::Holding,
                ap.header_start,
                hw,
                hw,
            )
            .await;
        let words = match self.archive_outcome(index, device, outcome) {
            Ok(w) => w,
            Err(end) => return end.unwrap_or(CycleEnd::Done),
        };
        let header = archive::parse_header(&words);
        let rw = crate::sources::modbus::ARCHIVE_RECORD_WORDS;
        let header = match header {
            Some(h) if h.capacity == ap.capacity && h.record_words == rw => h,
            other => {
                if let Some(a) = self.devices[index].archive.as_mut() {
                    a.due = Instant::now() + device.config_error_retry;
                }
                let problem = match other {
                    Some(h) => format!(
                        "the archive header says {} records of {} words; the config expects {} of {rw} (check [devices.archive] against the manual)",
                        h.capacity, h.record_words, ap.capacity
                    ),
                    None => "the archive header is not 4 words".to_string(),
                };
                self.archive_problem(index, device, Some(problem));
                return CycleEnd::Done;
            }
        };
        let Some(a) = self.devices[index].archive.as_mut() else {
            return CycleEnd::Done;
        };
        a.latest.set(f64::from(header.latest));
        if a.last.is_some_and(|l| l > header.latest) {
            warn!(device = %device.id, last = a.last, latest = header.latest,
                "The archive's record numbers went back (device reset or replaced); reading its whole archive again.");
            a.last = None;
            if let Err(error) = a.store.reset(0) {
                warn!(device = %device.id, %error, "Cannot reset the archive mark.");
            }
        }
        let Some(todo) = archive::backlog(a.last, header.latest, header.capacity) else {
            a.due = Instant::now() + ap.interval;
            self.archive_problem(index, device, None);
            return CycleEnd::Done;
        };
        if todo.lost > 0 {
            a.lost.increment(u64::from(todo.lost));
            error!(device = %device.id, lost = todo.lost, first_kept = todo.first,
                "Archive records were overwritten by the device before they could be read; those hours are lost.");
        }
        let per_request = u32::from(ap.records_per_request);
        let mut next = todo.first;
        let mut read = 0u32;
        while next <= todo.latest && read < ARCHIVE_RECORDS_PER_CYCLE {
            let n = archive::chunk(
                next,
                todo.latest,
                header.capacity,
                per_request.min(ARCHIVE_RECORDS_PER_CYCLE - read),
            );
            let Ok(addr) = u16::try_from(archive::record_address(ap, next)) else {
                self.archive_problem(
                    index,
                    device,
                    Some("the record ring passes register 65535".into()),
                );
                return CycleEnd::Done;
            };
            let words = (n * u32::from(rw)) as u16;
            let outcome = self
                .read(
                    ctx,
                    index,
                    device.timeout,
                    RegisterKind::Holding,
                    addr,
                    words,
                    words,
                )
                .await;
            let words = match self.archive_outcome(index, device, outcome) {
                Ok(w) => w,
                Err(end) => return end.unwrap_or(CycleEnd::Done),
            };
            let mut records = Vec::with_capacity(n as usize);
            let mut overwritten = 0u32;
            let mut mismatch = None;
            for (i, w) in words.chunks(usize::from(rw)).enumerate() {
                let expected = next + i as u32;
                match archive::parse_record(w) {
                    Some(r) if r.index == expected => records.push(r),
                    // The device moved on since the header was read and
                    // this slot already holds a newer hour.
                    Some(r)
                        if r.index > expected
                            && r.index - expected >= u32::from(header.capacity) =>
                    {
                        overwritten += 1
                    }
                    other => {
                        mismatch = Some((expected, other.map(|r| r.index)));
                        break;
                    }
                }
            }
            let taken = records.len() as u32 + overwritten;
            if !records.is_empty() || overwritten > 0 {
                let last = next + taken - 1;
                let input = Input::Archive {
                    device: device_id,
                    ts: Timestamp::now(),
                    records,
                };
                let count = match &input {
                    Input::Archive { records, .. } => records.len() as u64,
                    _ => 0,
                };
                match self.tx.try_send(input) {
                    Ok(()) => {}
                    Err(TrySendError::Full(_)) => {
                        // Not lost: read again next cycle.
                        debug!(device = %device.id, "Engine channel full; archive records are read again next cycle.");
                        return CycleEnd::Done;
                    }
                    Err(TrySendError::Closed(_)) => return CycleEnd::Closed,
                }
                let Some(a) = self.devices[index].archive.as_mut() else {
                    return CycleEnd::Done;
                };
                a.records.increment(count);
                if overwritten > 0 {
                    a.lost.increment(u64::from(overwritten));
                    error!(device = %device.id, lost = overwritten,
                        "Archive records were overwritten by the device while they were read; those hours are lost.");
                }
                a.last = Some(last);
                // Moves the mark on disk once this batch is stored. A full
                // channel only delays the mark to the next batch.
                let receipt = Receipt::new(u64::from(last), Arc::clone(&a.confirm));
                if let Err(TrySendError::Closed(_)) = self.tx.try_send(Input::Receipt(receipt)) {
                    return CycleEnd::Closed;
                }
            }
            if let Some((expected, found)) = mismatch {
                if let Some(a) = self.devices[index].archive.as_mut() {
                    a.due = Instant::now() + ap.interval;
                }
                let found = found.map_or("an unreadable record".to_string(), |f| {
                    format!("record {f}")
                });
                self.archive_problem(index, device, Some(format!(
                    "slot of record {expected} holds {found}; check records_address against the manual"
                )));
                return CycleEnd::Done;
            }
            next += taken;
            read += taken;
        }
        self.archive_problem(index, device, None);
        if let Some(a) = self.devices[index].archive.as_mut() {
            a.due = if next > todo.latest {
                Instant::now() + ap.interval
            } else {
                Instant::now()
            };
        }
        CycleEnd::Done
    }

    /// Book-keeping for one read outcome: backoff, metrics, state logs; the
    /// input to send and whether the connection must be dropped.
    #[allow(clippy::too_many_arguments)]
    fn on_outcome(
        &mut self,
        index: usize,
        device: &DevicePlan,
        block: usize,
        outcome: Outcome,
        key: (usize, usize),
        ok: impl FnOnce(Vec<u16>) -> Input,
        failed: impl FnOnce(ReadError) -> Input,
    ) -> (Input, bool) {
        match outcome {
            Outcome::Registers(regs) => {
                self.backoff.reset();
                self.link_ok = true;
                let st = &mut self.devices[index];
                st.cycle_ok = true;
                st.holds.remove(&key);
                if key.1 == WHOLE {
                    self.note_block(index, device, block, None);
                }
                (ok(regs), false)
            }
            Outcome::Failed { error, reconnect } => {
                if !reconnect {
                    // A well-framed answer (exception, wrong count): the link is healthy.
                    self.backoff.reset();
                    self.link_ok = true;
                }
                let st = &mut self.devices[index];
                st.metrics.error(error);
                let now = Instant::now();
                if is_config_error(error) {
                    st.holds.insert(
                        key,
                        Hold {
                            until: now + device.config_error_retry,
                            busy_level: 0,
                        },
                    );
                } else if is_busy(error) {
                    let level = st.holds.get(&key).map_or(0, |h| h.busy_level) + 1;
                    let level = level.min(BUSY_LEVEL_CAP);
                    let cycles = (1u32 << level) - 1;
                    st.holds.insert(
                        key,
                        Hold {
                            until: now + device.poll_interval * cycles,
                            busy_level: level,
                        },
                    );
                } else if is_unit_failure(error) {
                    st.cycle_dead = true;
                }
                if key.1 == WHOLE {
                    self.note_block(index, device, block, Some(error));
                }
                (failed(error), reconnect)
            }
        }
    }

    /// Hands one input to the engine without blocking; after the channel was
    /// full once in a cycle, the rest of the cycle is dropped and counted.
    fn send(
        &mut self,
        index: usize,
        device: &DevicePlan,
        input: Input,
        dropping: &mut bool,
    ) -> Result<(), CycleEnd> {
        if *dropping {
            self.devices[index].metrics.dropped.increment(1);
            points_dropped(device, &input);
            return Ok(());
        }
        match self.tx.try_send(input) {
            Ok(()) => {
                if self.channel_full {
                    info!(endpoint = %self.name, "Engine channel has room again.");
                    self.channel_full = false;
                }
            }
            Err(TrySendError::Full(input)) => {
                *dropping = true;
                self.devices[index].metrics.dropped.increment(1);
                points_dropped(device, &input);
                if !self.channel_full {
                    warn!(device = %device.id, "Engine channel full; dropping this poll cycle.");
                    self.channel_full = true;
                }
            }
            Err(TrySendError::Closed(_)) => return Err(CycleEnd::Closed),
        }
        Ok(())
    }

    /// One FC01-FC04 request under the device timeout.
    #[allow(clippy::too_many_arguments)]
    async fn read(
        &mut self,
        ctx: &mut Context,
        index: usize,
        timeout: Duration,
        kind: RegisterKind,
        start: u16,
        count: u16,
        words: u16,
    ) -> Outcome {
        if !self.frame_gap.is_zero()
            && let Some(last) = self.last_frame
        {
            // RTU frames are delimited by silence, and some devices need a
            // pause between requests: leave the gap before talking.
            tokio::time::sleep_until(last + self.frame_gap).await;
        }
        if let Some(at) = self.not_before.take() {
            // The first request after connecting waits `pause_after_connect`.
            tokio::time::sleep_until(at).await;
        }
        let m = &self.devices[index].metrics;
        m.requests.increment(1);
        let started = Instant::now();
        let result =
            tokio::time::timeout(timeout, ctx.call(read_request(kind, start, count))).await;
        self.last_frame = Some(Instant::now());
        if let Ok(Err(tokio_modbus::Error::Transport(e))) = &result
            && !matches!(
                e.kind(),
                io::ErrorKind::InvalidData | io::ErrorKind::InvalidInput
            )
        {
            // The port or socket itself failed, not just one answer.
            self.link_broken = true;
        }
        let m = &self.devices[index].metrics;
        if matches!(result, Ok(Ok(_))) {
            m.response.record(started.elapsed().as_secs_f64());
        }
        let outcome = classify(result, words);
        if matches!(outcome, Outcome::Registers(_)) {
            m.last_good.set(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64()),
            );
        }
        outcome
    }

    /// Logs a block's state change once.
    fn note_block(
        &mut self,
        index: usize,
        device: &DevicePlan,
        block: usize,
        now: Option<ReadError>,
    ) {
        let Some(slot) = self.devices[index].block_error.get_mut(block) else {
            return;
        };
        if *slot == now {
            return;
        }
        let before = std::mem::replace(slot, now);
        match (before, now) {
            (_, Some(error)) => {
                warn!(device = %device.id, block, ?error, unit_id = device.unit_id, "Modbus read failed.")
            }
            (Some(_), None) => info!(device = %device.id, block, "Modbus reads good again."),
            (None, None) => {}
        }
    }
}
