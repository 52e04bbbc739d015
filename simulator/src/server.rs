//! Modbus server for a simulated station: hand-written framing, Modbus/TCP
//! or RTU, on a tokio `TcpListener` or on any byte stream (a pty standing in
//! for a serial line).
//!
//! Responsibility: serve a [`Station`]'s register map to Modbus/TCP clients,
//! inject faults per unit id, and record ground truth (function codes received,
//! values served) for tests.
//!
//! Why not `tokio_modbus::server`: the simulator must be an *independent* peer
//! for the daemon's tokio-modbus client, and the faults (garbage bytes, never
//! answering, closing on the next request) need control below the codec. The
//! framing here is small: MBAP header (transaction id u16, protocol id u16 = 0,
//! length u16 = unit id + PDU bytes, unit id u8) then the PDU, big-endian.
//! RTU ([`Framing::Rtu`]) is unit id, PDU, CRC-16 (polynomial 0xA001, low
//! byte first); a request's length follows from its function code (and byte
//! count), as a serial device finds it. A request with a bad CRC, or one
//! whose bytes stop coming for 100 ms, is dropped unanswered like a real
//! device does; an unknown function code takes whatever arrives until the
//! line is quiet for 20 ms, and is answered 0x01.
//!
//! Behaviour:
//! - One listener serves every unit id routed to it, like a serial gateway;
//!   requests on one connection are answered in order, one at a time.
//! - Unknown unit id -> exception 0x0B (gateway target failed to respond).
//! - FC03 / FC04 read holding / input registers, 1..=125 of them, else 0x03;
//!   any unmapped register in the range -> 0x02. In Enron mode a 32-bit
//!   register answers two words; an answer over 125 words -> 0x03. A
//!   device's hourly archive ([`crate::archive`]) is readable with FC03.
//! - FC01 / FC02 are readable function codes but the config format has no bit
//!   points, so every bit address answers 0x02 (count outside 1..=2000: 0x03).
//! - Every other function code, writes included, answers 0x01 (illegal
//!   function): the simulated devices are read-only. Every function code
//!   received is counted ([`SimHandle::function_codes`]), before faults apply.
//! - A malformed MBAP header (protocol id != 0, length outside 2..=254) closes
//!   the connection: there is no way to find the next frame.
//! - On a serial line ([`serve_rtu_line`]) nothing can be closed: read
//!   errors (a pty whose other side is closed answers EIO) are waited out,
//!   `Fault::CloseConnection` answers nothing, and `Fault::Garbage` writes its
//!   junk and keeps listening.
//! - The station advances from the tokio clock (so paused-time tests work)
//!   whenever a request is answered or a snapshot is taken, by the wall time
//!   elapsed times `SimOptions::speed`.
//! - [`SimHandle::stop`] closes the listener and every open connection; the
//!   listener uses `SO_REUSEADDR`, so serving again on the same port works at
//!   once. Dropping a handle without `stop` also shuts its server down, in the
//!   background.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::SimError;
use crate::config::{Endpoint, RegisterKind, Transport};
use crate::physics::{Leak, PhysicsState, Station};

/// Most entries kept in the served-values log.
pub const SERVED_LOG_CAPACITY: usize = 100_000;

/// How requests and answers are framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Framing {
    /// Modbus/TCP: MBAP header with transaction id.
    #[default]
    Tcp,
    /// Modbus RTU: unit id, PDU, CRC-16; over TCP or a serial line.
    Rtu,
}

/// A fault injected for one unit id of one listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fault {
    /// Answer normally.
    #[default]
    None,
    /// Read requests, never answer; the connection stays open.
    NoResponse,
    /// Answer after this delay (later requests on the connection wait too).
    Delay(Duration),
    /// Answer requests that start at this register (or coil) address after
    /// the delay, others at once: one slow block of a device, so a late
    /// answer meets a request for a different block.
    DelayAt(u16, Duration),
    /// Answer every request with this exception code.
    Exception(u8),
    /// Write random bytes (not a valid frame) and close the connection.
    Garbage,
    /// Close the TCP connection when the next request arrives.
    CloseConnection,
}

/// One point value that was sent to a client.
#[derive(Debug, Clone, PartialEq)]
pub struct Served {
    /// Point name.
    pub point: String,
    /// Engineering value the registers encode.
    pub value: f64,
    /// Simulated time of the value.
    pub sim_time: Duration,
    /// Unit id the request addressed.
    pub unit_id: u8,
}

/// Current state for a live view.
#[derive(Debug, Clone, PartialEq)]
pub struct StationSnapshot {
    /// `[station] id`.
    pub station_id: String,
    /// Simulated time since start.
    pub sim_time: Duration,
    /// Value every point serves now, by point name.
    pub values: BTreeMap<String, f64>,
    /// Physical ground truth (no meter error), including the leak rate.
    pub physics: PhysicsState,
    /// Leak configured (active or not; see `physics.leak_active`).
    pub leak: Option<Leak>,
}

/// State shared by every listener of one station.
struct Shared {
    station: Station,
    last_wall: Instant,
    served: VecDeque<Served>,
}

impl Shared {
    /// Advances the station to the current tokio time.
    fn sync(&mut self) {
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(self.last_wall);
        self.last_wall = now;
        let speed = self.station.speed;
        self.station.step(elapsed.mul_f64(speed));
    }

    fn snapshot(&mut self) -> StationSnapshot {
        self.sync();
        StationSnapshot {
            station_id: self.station.station_id().to_string(),
            sim_time: self.station.sim_time(),
            values: self.station.values(),
            physics: self.station.physics(),
            leak: self.station.leak(),
        }
    }
}

/// State of one listener.
struct ListenerState {
    /// Unit id -> device index in the station.
    units: HashMap<u8, usize>,
    faults: Mutex<HashMap<u8, Fault>>,
    function_codes: Mutex<BTreeMap<u8, u64>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave these maps half-updated in a
    // way that matters to a simulator; keep serving.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A cheap, clonable remote control of a served station across all its
/// listeners (for scenario drivers and tests): the station itself and the
/// faults, addressed by device id.
#[derive(Clone)]
pub struct SimControl {
    shared: Arc<Mutex<Shared>>,
    listeners: Vec<Arc<ListenerState>>,
}

impl std::fmt::Debug for SimControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimControl")
            .field("listeners", &self.listeners.len())
            .finish_non_exhaustive()
    }
}

impl SimControl {
    /// A station with no Modbus listener (e.g. one that only publishes
    /// over MQTT); its time runs from now.
    pub fn standalone(station: Station) -> SimControl {
        SimControl {
            shared: Arc::new(Mutex::new(Shared {
                station,
                last_wall: Instant::now(),
                served: VecDeque::new(),
            })),
            listeners: Vec::new(),
        }
    }

    /// Control of the station behind `handles` (all must serve the same
    /// station, as [`serve_all`] returns them). `None` without handles.
    pub fn of<'a>(handles: impl IntoIterator<Item = &'a SimHandle>) -> Option<SimControl> {
        let mut it = handles.into_iter().peekable();
        let shared = it.peek()?.shared.clone();
        Some(SimControl {
            shared,
            listeners: it.map(|h| h.listener.clone()).collect(),
        })
    }

    /// Runs `f` on the station brought up to the current time.
    pub fn with_station<R>(&self, f: impl FnOnce(&mut Station) -> R) -> R {
        let mut s = lock(&self.shared);
        s.sync();
        f(&mut s.station)
    }

    /// Sets the fault of device `device` (by id) on the listener serving
    /// it (`Fault::None` clears it). False for an unknown device.
    pub fn set_device_fault(&self, device: &str, fault: Fault) -> bool {
        let Some(index) = lock(&self.shared).station.device_index(device) else {
            return false;
        };
        for l in &self.listeners {
            for (&unit, &d) in &l.units {
                if d == index {
                    let mut f = lock(&l.faults);
                    if fault == Fault::None {
                        f.remove(&unit);
                    } else {
                        f.insert(unit, fault);
                    }
                }
            }
        }
        true
    }

    /// Current values of every point, physical truth and leak state.
    pub fn snapshot(&self) -> StationSnapshot {
        lock(&self.shared).snapshot()
    }

    /// Appends values sent another way (MQTT) to the served-values log, with
    /// unit id 0.
    pub(crate) fn note_served(&self, values: &[(String, f64)]) {
        let mut s = lock(&self.shared);
        let sim_time = s.station.sim_time();
        for (point, value) in values {
            if s.served.len() >= SERVED_LOG_CAPACITY {
                s.served.pop_front();
            }
            s.served.push_back(Served {
                point: point.clone(),
                value: *value,
                sim_time,
                unit_id: 0,
            });
        }
    }

    /// The served-values log (all listeners and MQTT), oldest first.
    pub fn served(&self) -> Vec<Served> {
        lock(&self.shared).served.iter().cloned().collect()
    }
}

/// A running listener. See the module docs for what stop and drop do.
pub struct SimHandle {
    local_addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
    listener: Arc<ListenerState>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for SimHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimHandle")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl SimHandle {
    /// Address the listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Count of requests received per function code (this listener).
    pub fn function_codes(&self) -> BTreeMap<u8, u64> {
        lock(&self.listener.function_codes).clone()
    }

    /// Log of point values served (all listeners of the station), oldest
    /// first, at most [`SERVED_LOG_CAPACITY`] entries.
    pub fn served(&self) -> Vec<Served> {
        lock(&self.shared).served.iter().cloned().collect()
    }

    /// Replaces the station's leak; its times count from now.
    pub fn set_leak(&self, leak: Option<Leak>) -> Result<(), SimError> {
        let mut s = lock(&self.shared);
        s.sync();
        s.station.set_leak(leak)
    }

    /// Sets the fault for a unit id on this listener (`Fault::None` clears it).
    pub fn set_fault(&self, unit_id: u8, fault: Fault) {
        let mut f = lock(&self.listener.faults);
        if fault == Fault::None {
            f.remove(&unit_id);
        } else {
            f.insert(unit_id, fault);
        }
    }

    /// Scenario hook: runs `f` on the station brought up to the current
    /// time (all listeners of the station see the change at once).
    pub fn with_station<R>(&self, f: impl FnOnce(&mut Station) -> R) -> R {
        let mut s = lock(&self.shared);
        s.sync();
        f(&mut s.station)
    }

    /// Current values of every point, physical truth and leak state.
    pub fn snapshot(&self) -> StationSnapshot {
        lock(&self.shared).snapshot()
    }

    /// Closes the listener and all open connections, and waits until they
    /// are closed.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take()
            && let Err(error) = task.await
        {
            warn!(%error, "Simulator listener task failed.");
        }
        info!(addr = %self.local_addr, "Simulator listener stopped.");
    }
}

/// Serves every unit of every device in the station on one Modbus/TCP
/// listener at `bind`. Unit ids must be unique across the config's endpoints
/// (else use [`serve_all`]).
pub async fn serve(station: Station, bind: SocketAddr) -> Result<SimHandle, SimError> {
    serve_with(station, bind, Framing::Tcp).await
}

/// As [`serve`], with the given framing (`Framing::Rtu`: RTU over TCP, as
/// behind a serial-to-Ethernet converter in transparent mode).
pub async fn serve_with(
    station: Station,
    bind: SocketAddr,
    framing: Framing,
) -> Result<SimHandle, SimError> {
    let (shared, units) = one_map(station)?;
    start_listener(shared, units, bind, framing).await
}

/// Serves every unit of the station with RTU framing on `line`, a byte
/// stream standing for a serial bus (e.g. the master side of a pty whose
/// slave path the daemon opens). Unit ids must be unique. The handle's
/// `local_addr` is `0.0.0.0:0` (there is no socket).
///
/// A pty master given as a tokio-serial stream must never see all its slave
/// descriptors closed (keep one open): after that hang-up tokio keeps the
/// read-closed readiness and tokio-serial's reads spin on EAGAIN, holding a
/// runtime thread.
pub fn serve_rtu_line<S>(station: Station, line: S) -> Result<SimHandle, SimError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (shared, units) = one_map(station)?;
    Ok(start_line(shared, units, line, "serial line".to_string()))
}

/// Serves `units` of the shared station in RTU framing on `line`.
fn start_line<S>(shared: Arc<Mutex<Shared>>, units: UnitMap, line: S, name: String) -> SimHandle
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let state = Arc::new(ListenerState {
        units,
        faults: Mutex::new(HashMap::new()),
        function_codes: Mutex::new(BTreeMap::new()),
    });
    let (tx, mut rx) = oneshot::channel::<()>();
    let conn = connection(
        line,
        name,
        Framing::Rtu,
        true,
        shared.clone(),
        state.clone(),
    );
    let task = tokio::spawn(async move {
        tokio::select! {
            _ = &mut rx => {}
            () = conn => {}
        }
    });
    info!("Simulator serving RTU on a serial line.");
    SimHandle {
        local_addr: ([0, 0, 0, 0], 0).into(),
        shared,
        listener: state,
        shutdown: Some(tx),
        task: Some(task),
    }
}

/// A byte stream standing for a serial line (a pty master, a UART).
pub trait SerialLine: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> SerialLine for T {}

/// Unit id -> device index in the station.
type UnitMap = HashMap<u8, usize>;

/// The station shared state and its unit id -> device map (one listener).
fn one_map(station: Station) -> Result<(Arc<Mutex<Shared>>, UnitMap), SimError> {
    let mut units: HashMap<u8, usize> = HashMap::new();
    for (i, d) in station.devices.iter().enumerate() {
        if let Some(prev) = units.insert(d.unit_id, i) {
            return Err(SimError::UnitIdCollision {
                unit_id: d.unit_id,
                first: station.devices[prev].endpoint.clone(),
                second: d.endpoint.clone(),
            });
        }
    }
    let shared = Arc::new(Mutex::new(Shared {
        station,
        last_wall: Instant::now(),
        served: VecDeque::new(),
    }));
    Ok((shared, units))
}

/// Serves each endpoint (`host:port`) of the config on its own listener,
/// bound where `bind_for` says (e.g. `127.0.0.1:0` in tests), with the
/// framing of its `transport` (Modbus/TCP or RTU over TCP). All listeners
/// share one station. Returns one handle per endpoint. Serial endpoints
/// (`transport = "rtu"`) are not served here: see [`serve_station`].
pub async fn serve_all(
    station: Station,
    bind_for: impl Fn(&Endpoint) -> SocketAddr,
) -> Result<BTreeMap<Endpoint, SimHandle>, SimError> {
    serve_station(station, bind_for, |_| None::<Box<dyn SerialLine>>).await
}

/// [`serve_all`], and each serial endpoint (`transport = "rtu"`) on the
/// line `line_for` gives for it (e.g. a pseudo-terminal's master side), in
/// RTU framing; a serial endpoint without a line is not served. All
/// endpoints share one station.
pub async fn serve_station<L: SerialLine>(
    station: Station,
    bind_for: impl Fn(&Endpoint) -> SocketAddr,
    mut line_for: impl FnMut(&Endpoint) -> Option<L>,
) -> Result<BTreeMap<Endpoint, SimHandle>, SimError> {
    let mut per_endpoint: BTreeMap<Endpoint, HashMap<u8, usize>> = BTreeMap::new();
    for (i, d) in station.devices.iter().enumerate() {
        // The config guarantees unit ids are unique per endpoint.
        per_endpoint
            .entry(d.endpoint.clone())
            .or_default()
            .insert(d.unit_id, i);
    }
    let shared = Arc::new(Mutex::new(Shared {
        station,
        last_wall: Instant::now(),
        served: VecDeque::new(),
    }));
    let mut out = BTreeMap::new();
    for (endpoint, units) in per_endpoint {
        if endpoint.is_serial() {
            if let Some(line) = line_for(&endpoint) {
                let handle = start_line(shared.clone(), units, line, endpoint.to_string());
                info!(%endpoint, "Serving serial endpoint.");
                out.insert(endpoint, handle);
            }
            continue;
        }
        let addr = bind_for(&endpoint);
        let framing = match endpoint.transport {
            Transport::RtuOverTcp => Framing::Rtu,
            Transport::Tcp | Transport::Rtu => Framing::Tcp,
        };
        let handle = start_listener(shared.clone(), units, addr, framing).await?;
        info!(%endpoint, addr = %handle.local_addr(), "Serving endpoint.");
        out.insert(endpoint, handle);
    }
    Ok(out)
}

fn bind_listener(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

async fn start_listener(
    shared: Arc<Mutex<Shared>>,
    units: HashMap<u8, usize>,
    bind: SocketAddr,
    framing: Framing,
) -> Result<SimHandle, SimError> {
    let listener = bind_listener(bind).map_err(|source| SimError::Bind { addr: bind, source })?;
    let local_addr = listener
        .local_addr()
        .map_err(|source| SimError::Bind { addr: bind, source })?;
    let state = Arc::new(ListenerState {
        units,
        faults: Mutex::new(HashMap::new()),
        function_codes: Mutex::new(BTreeMap::new()),
    });
    let (tx, rx) = oneshot::channel();
    let task = tokio::spawn(accept_loop(
        listener,
        rx,
        shared.clone(),
        state.clone(),
        framing,
    ));
    info!(addr = %local_addr, "Simulator listening.");
    Ok(SimHandle {
        local_addr,
        shared,
        listener: state,
        shutdown: Some(tx),
        task: Some(task),
    })
}

async fn accept_loop(
    listener: TcpListener,
    mut shutdown: oneshot::Receiver<()>,
    shared: Arc<Mutex<Shared>>,
    state: Arc<ListenerState>,
    framing: Framing,
) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            // A sent signal or a dropped handle both stop the listener.
            _ = &mut shutdown => break,
            res = listener.accept() => match res {
                Ok((stream, peer)) => {
                    debug!(%peer, "Accepted connection.");
                    let _ = stream.set_nodelay(true);
                    conns.spawn(connection(
                        stream,
                        peer.to_string(),
                        framing,
                        false,
                        shared.clone(),
                        state.clone(),
                    ));
                }
                Err(error) => {
                    // E.g. EMFILE: back off instead of spinning.
                    warn!(%error, "Accept failed.");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drop(listener);
    // Aborting drops each connection's TcpStream, which closes it.
    conns.shutdown().await;
}

/// MBAP header length including the unit id.
const MBAP_LEN: usize = 7;
/// RTU: a request whose bytes stop coming this long is dropped.
const RTU_FRAME_TIMEOUT: Duration = Duration::from_millis(100);
/// RTU: an unknown function code's request ends when the line is this quiet.
const RTU_IDLE_END: Duration = Duration::from_millis(20);
/// A serial line whose other side is closed is retried this often.
const LINE_RETRY: Duration = Duration::from_millis(10);

/// One request as read from the wire.
enum Incoming {
    /// A whole request: MBAP transaction id (TCP framing), unit id, PDU.
    Request(Option<u16>, u8, Vec<u8>),
    /// Bytes that made no valid request (bad CRC, stalled frame): dropped.
    Dropped,
    /// The stream cannot be read (closed, malformed MBAP header, I/O error).
    End,
}

/// Serves requests on one connection (or serial line) until it ends. `line`:
/// a serial line, which never ends by itself (see the module docs).
async fn connection<S>(
    mut stream: S,
    peer: String,
    framing: Framing,
    line: bool,
    shared: Arc<Mutex<Shared>>,
    state: Arc<ListenerState>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut response = Vec::with_capacity(260);
    loop {
        let incoming = match framing {
            Framing::Tcp => read_mbap(&mut stream, &peer).await,
            Framing::Rtu => read_rtu(&mut stream, &state).await,
        };
        let (transaction_id, unit_id, pdu) = match incoming {
            Incoming::Request(t, u, pdu) => (t, u, pdu),
            Incoming::Dropped => continue,
            Incoming::End if line => {
                // A pty master reads EIO while nobody has the slave open.
                tokio::time::sleep(LINE_RETRY).await;
                continue;
            }
            Incoming::End => return,
        };
        let function = pdu[0];
        if framing == Framing::Tcp {
            // RTU counts the function code as soon as it is read.
            *lock(&state.function_codes).entry(function).or_insert(0) += 1;
        }

        let fault = lock(&state.faults)
            .get(&unit_id)
            .copied()
            .unwrap_or_default();
        response.clear();
        match fault {
            Fault::None => handle_pdu(&pdu, unit_id, &shared, &state, &mut response),
            Fault::NoResponse => continue,
            Fault::CloseConnection if line => {
                debug!(%peer, unit_id, "Fault: a serial line cannot close; not answering.");
                continue;
            }
            Fault::CloseConnection => {
                debug!(%peer, unit_id, "Fault: closing connection.");
                return;
            }
            Fault::Garbage => {
                let mut rng = fastrand::Rng::new();
                let mut junk: Vec<u8> = (0..rng.usize(9..=32)).map(|_| rng.u8(..)).collect();
                // Make sure no client mistakes it for a frame: protocol id
                // != 0 (TCP); an RTU CRC over random bytes fails but for 1 in
                // 65536, so force a wrong one.
                junk[2] = 0xA5;
                if framing == Framing::Rtu {
                    let n = junk.len();
                    let crc = crc16(&junk[..n - 2]) ^ 0x5A5A;
                    junk[n - 2..].copy_from_slice(&crc.to_le_bytes());
                }
                let _ = stream.write_all(&junk).await;
                if line {
                    continue;
                }
                let _ = stream.shutdown().await;
                return;
            }
            Fault::Delay(d) => {
                tokio::time::sleep(d).await;
                handle_pdu(&pdu, unit_id, &shared, &state, &mut response);
            }
            Fault::DelayAt(address, d) => {
                if pdu.get(1..3) == Some(&address.to_be_bytes()[..]) {
                    tokio::time::sleep(d).await;
                }
                handle_pdu(&pdu, unit_id, &shared, &state, &mut response);
            }
            Fault::Exception(code) => response.extend_from_slice(&[function | 0x80, code]),
        }
        let frame = match (framing, transaction_id) {
            (Framing::Tcp, Some(tid)) => mbap_frame(tid, unit_id, &response),
            _ => rtu_frame(unit_id, &response),
        };
        if let Err(error) = stream.write_all(&frame).await {
            debug!(%peer, %error, "Write failed.");
            if !line {
                return;
            }
        }
    }
}

/// Reads one MBAP-framed request.
async fn read_mbap<S: AsyncRead + Unpin>(stream: &mut S, peer: &str) -> Incoming {
    let mut header = [0u8; MBAP_LEN];
    if stream.read_exact(&mut header).await.is_err() {
        debug!(%peer, "Connection closed by peer.");
        return Incoming::End;
    }
    let transaction_id = u16::from_be_bytes([header[0], header[1]]);
    let protocol_id = u16::from_be_bytes([header[2], header[3]]);
    let length = usize::from(u16::from_be_bytes([header[4], header[5]]));
    let unit_id = header[6];
    if protocol_id != 0 || !(2..=254).contains(&length) {
        debug!(%peer, protocol_id, length, "Malformed MBAP header; closing.");
        return Incoming::End;
    }
    let mut pdu = vec![0u8; length - 1];
    if stream.read_exact(&mut pdu).await.is_err() {
        debug!(%peer, "Connection closed mid-frame.");
        return Incoming::End;
    }
    Incoming::Request(Some(transaction_id), unit_id, pdu)
}

/// Bytes that follow the function code of an RTU request, before the CRC:
/// `(fixed, byte count at)`; the byte count, when there is one, is at that
/// offset (counted from the byte after the function code) and that many
/// more bytes follow it. `None`: unknown function code.
fn rtu_request_shape(function: u8) -> Option<(usize, Option<usize>)> {
    Some(match function {
        // Reads and single writes: address + count/value; diagnostics.
        0x01..=0x06 | 0x08 => (4, None),
        0x07 | 0x0B | 0x0C | 0x11 => (0, None),
        // Write multiple coils / registers: address, quantity, byte count.
        0x0F | 0x10 => (5, Some(4)),
        0x14 | 0x15 => (1, Some(0)),
        0x16 => (6, None),
        0x17 => (9, Some(8)),
        0x18 => (2, None),
        0x2B => (3, None),
        _ => return None,
    })
}

/// Reads one RTU request: unit id, function code, the rest by the function
/// code's shape, CRC. The function code is counted as soon as it is read.
async fn read_rtu<S: AsyncRead + Unpin>(stream: &mut S, state: &ListenerState) -> Incoming {
    let mut head = [0u8; 2];
    // The first byte may wait forever; the rest must follow promptly.
    if stream.read_exact(&mut head[..1]).await.is_err() {
        return Incoming::End;
    }
    match tokio::time::timeout(RTU_FRAME_TIMEOUT, stream.read_exact(&mut head[1..])).await {
        Ok(Ok(_)) => {}
        Ok(Err(_)) => return Incoming::End,
        Err(_) => return Incoming::Dropped,
    }
    let [unit_id, function] = head;
    *lock(&state.function_codes).entry(function).or_insert(0) += 1;
    let mut frame = head.to_vec();
    let rest = |frame: &mut Vec<u8>, n: usize| {
        let at = frame.len();
        frame.resize(at + n, 0);
        at
    };
    match rtu_request_shape(function) {
        Some((fixed, count_at)) => {
            let at = rest(&mut frame, fixed);
            if !read_within(stream, &mut frame[at..]).await {
                return Incoming::Dropped;
            }
            if let Some(c) = count_at {
                let n = usize::from(frame[2 + c]);
                let at = rest(&mut frame, n);
                if !read_within(stream, &mut frame[at..]).await {
                    return Incoming::Dropped;
                }
            }
            let at = rest(&mut frame, 2);
            if !read_within(stream, &mut frame[at..]).await {
                return Incoming::Dropped;
            }
        }
        None => {
            // Unknown shape: everything until the line goes quiet.
            let mut buf = [0u8; 256];
            while let Ok(Ok(n)) = tokio::time::timeout(RTU_IDLE_END, stream.read(&mut buf)).await {
                if n == 0 || frame.len() > 256 {
                    break;
                }
                frame.extend_from_slice(&buf[..n]);
            }
            if frame.len() < 4 {
                return Incoming::Dropped;
            }
        }
    }
    let n = frame.len();
    if crc16(&frame[..n - 2]).to_le_bytes() != [frame[n - 2], frame[n - 1]] {
        debug!(
            unit_id,
            function, "RTU request with a bad CRC; dropped unanswered."
        );
        return Incoming::Dropped;
    }
    Incoming::Request(None, unit_id, frame[1..n - 2].to_vec())
}

/// Fills `buf` unless the bytes stop coming for [`RTU_FRAME_TIMEOUT`].
async fn read_within<S: AsyncRead + Unpin>(stream: &mut S, buf: &mut [u8]) -> bool {
    matches!(
        tokio::time::timeout(RTU_FRAME_TIMEOUT, stream.read_exact(buf)).await,
        Ok(Ok(_))
    )
}

/// MBAP header + PDU.
fn mbap_frame(transaction_id: u16, unit_id: u8, pdu: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(MBAP_LEN + pdu.len());
    frame.extend_from_slice(&transaction_id.to_be_bytes());
    frame.extend_from_slice(&0u16.to_be_bytes());
    // Response PDUs are at most 2 + 250 bytes, so the length fits.
    let len = u16::try_from(pdu.len() + 1).expect("response PDU fits in a frame");
    frame.extend_from_slice(&len.to_be_bytes());
    frame.push(unit_id);
    frame.extend_from_slice(pdu);
    frame
}

/// Unit id + PDU + CRC (low byte first).
fn rtu_frame(unit_id: u8, pdu: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(pdu.len() + 3);
    frame.push(unit_id);
    frame.extend_from_slice(pdu);
    let crc = crc16(&frame);
    frame.extend_from_slice(&crc.to_le_bytes());
    frame
}

/// Modbus CRC-16 (reflected polynomial 0xA001, initial 0xFFFF), bit by bit:
/// written here from the specification, not shared with the client.
pub fn crc16(bytes: &[u8]) -> u16 {
    let mut crc = 0xFFFFu16;
    for &b in bytes {
        crc ^= u16::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xA001
            } else {
                crc >> 1
            };
        }
    }
    crc
}

/// Builds the response PDU for one request PDU (never empty).
fn handle_pdu(
    pdu: &[u8],
    unit_id: u8,
    shared: &Mutex<Shared>,
    state: &ListenerState,
    out: &mut Vec<u8>,
) {
    let function = pdu[0];
    let exception = |out: &mut Vec<u8>, code: u8| {
        out.clear();
        out.extend_from_slice(&[function | 0x80, code]);
    };
    let Some(&device) = state.units.get(&unit_id) else {
        return exception(out, 0x0B);
    };
    let kind = match function {
        0x01 | 0x02 => None,
        0x03 => Some(RegisterKind::Holding),
        0x04 => Some(RegisterKind::Input),
        _ => return exception(out, 0x01),
    };
    if pdu.len() != 5 {
        return exception(out, 0x03);
    }
    let start = u16::from_be_bytes([pdu[1], pdu[2]]);
    let count = u16::from_be_bytes([pdu[3], pdu[4]]);
    let Some(kind) = kind else {
        // Bits: the config format has no bit points.
        let code = if (1..=2000).contains(&count) {
            0x02
        } else {
            0x03
        };
        return exception(out, code);
    };
    if !(1..=125).contains(&count) {
        return exception(out, 0x03);
    }
    let mut guard = lock(shared);
    let s = &mut *guard;
    s.sync();
    let mut words = Vec::with_capacity(usize::from(count));
    let sim_time = s.station.sim_time();
    let mut served = Vec::new();
    let result =
        s.station
            .read_registers(device, kind, start, count, &mut words, |point, value| {
                served.push(Served {
                    point: point.to_string(),
                    value,
                    sim_time,
                    unit_id,
                });
            });
    if let Err(code) = result {
        return exception(out, code);
    }
    if words.len() > 125 {
        // Enron 32-bit registers answer two words each: more than 62 of
        // them do not fit in one response.
        return exception(out, 0x03);
    }
    for entry in served {
        if s.served.len() >= SERVED_LOG_CAPACITY {
            s.served.pop_front();
        }
        s.served.push_back(entry);
    }
    drop(guard);
    out.push(function);
    // count <= 125, so 2 * count <= 250 fits in a byte.
    out.push(u8::try_from(words.len() * 2).expect("at most 125 registers"));
    for w in words {
        out.extend_from_slice(&w.to_be_bytes());
    }
}
