//! `loadbench`: the end-to-end load benchmark of gaswatch (see BENCHMARKS.md).
//!
//! One job: put the REAL daemon binary under a known Modbus load on loopback
//! and measure it from the outside, as an operator would:
//!
//! 1. generates a station of N devices x M points (f32 ABCD, or u16) with
//!    `--units-per-endpoint` unit ids behind each `host:port` (like serial
//!    gateways), a meter on the first device of every endpoint and a
//!    never-tripping H/L limit on every fifth point;
//! 2. serves it with the simulator library (`gaswatch_sim`) in this process,
//!    either as ONE station on one listener per endpoint (`serve_all`, the
//!    default) or as one station per endpoint (`--sim-layout per-endpoint`,
//!    which keeps the simulator's per-request cost proportional to the
//!    endpoint instead of the whole station: needed for the highest rates);
//! 3. spawns `gaswatch run -c <generated config>` as a separate process and
//!    reads its CPU time (`/proc/<pid>/stat`) and RSS (`/proc/<pid>/status`,
//!    VmRSS and VmHWM);
//! 4. counts what reaches the sink: the file sink's telemetry file (tailed
//!    every `--tail-every`), or a local HTTP line-protocol endpoint served
//!    here (`--sink http`, the daemon's InfluxDB v1 writer points at it), or a
//!    real InfluxDB 1.6.7 (`--sink influx`, counted with a query at the end);
//! 5. optionally (`--peer`) runs the Python peer poller
//!    (`tests/support/peer_poller.py`: pymodbus client + HTTP line-protocol
//!    writes) against the same simulator for the same time and reports the
//!    ratio of CPU time per point;
//! 6. optionally (`--alarm-latency`) starts a real mosquitto, makes one point
//!    per endpoint cross an H limit back and forth on every poll (tiny
//!    deadband on a noisy flow) and measures the time from the poll
//!    timestamp in each alarm event (`ts_ns`) to its arrival at a
//!    subscriber. The daemon runs with `GASWATCH_ALARM_TRACE` set, so its
//!    stage marks (engine took the input, routed to the spool, handed to
//!    the MQTT client, written to the socket) split that time per step.
//!    One alarm point per endpoint: `--units-per-endpoint 1` gives one per
//!    device, i.e. more events for a real p99.
//!
//! Poll-to-sink latency is "line visible to a reader" minus "the poll
//! timestamp in the line" (the time the Modbus response arrived in the
//! daemon), so it includes the file sink's buffering: lines reach the file
//! when the 64 KiB write buffer fills or at the spool flush interval
//! (`--flush-interval`, default 1 s), and the tail poll period.
//!
//! Nothing here asserts on speed: it prints numbers (and JSON with `--json`).

use anyhow::{Context as _, bail};
use clap::{Parser, ValueEnum};
use gaswatch_sim::{SimHandle, SimOptions, Station};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Read as _, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum SinkKind {
    /// The file sink (line protocol file), tailed by this process.
    File,
    /// The InfluxDB v1 writer against a local HTTP endpoint served here.
    Http,
    /// The InfluxDB v1 writer against a real `influxd` (1.6.7) started here.
    Influx,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum SimLayout {
    /// One station for all devices, one listener per endpoint (`serve_all`).
    Shared,
    /// One station (and listener) per endpoint (`serve`).
    PerEndpoint,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum PointType {
    F32,
    U16,
}

/// End-to-end load benchmark: simulator + real daemon process + sink.
#[derive(Debug, Parser)]
#[command(about)]
struct Args {
    /// Devices (Modbus unit ids).
    #[arg(long, default_value_t = 500)]
    devices: usize,
    /// Points per device (one read block each up to 125 registers).
    #[arg(long, default_value_t = 30)]
    points: usize,
    /// Unit ids behind one endpoint (host:port); each endpoint is one TCP
    /// connection and one poller task in the daemon.
    #[arg(long, default_value_t = 10)]
    units_per_endpoint: usize,
    /// Poll interval of every device, e.g. "1s", "20ms".
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    interval: Duration,
    /// Raw type of every point.
    #[arg(long, value_enum, default_value_t = PointType::F32)]
    point_type: PointType,
    /// How the simulator serves the devices.
    #[arg(long, value_enum, default_value_t = SimLayout::Shared)]
    sim_layout: SimLayout,
    /// Measured time, after the warm-up, e.g. "30s", "1h".
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Time before measuring starts (connects, first windows, caches).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Where the daemon's telemetry goes.
    #[arg(long, value_enum, default_value_t = SinkKind::File)]
    sink: SinkKind,
    /// Spool / file sink flush (fsync) interval given to the daemon.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    flush_interval: Duration,
    /// gzip request bodies (http / influx sinks).
    #[arg(long)]
    gzip: bool,
    /// How often the file sink output is read.
    #[arg(long, default_value = "2ms", value_parser = humantime::parse_duration)]
    tail_every: Duration,
    /// Also run the Python peer poller against the same simulator.
    #[arg(long)]
    peer: bool,
    /// Python interpreter for the peer (Debian's, with python3-pymodbus).
    #[arg(long, default_value = "/usr/bin/python3")]
    python: PathBuf,
    /// Also measure alarm-to-broker latency with a real mosquitto.
    #[arg(long)]
    alarm_latency: bool,
    /// Give the daemon `[modbus] stagger = false`: every endpoint polled on
    /// one tick (the behaviour before the stagger; for A/B runs).
    #[arg(long)]
    no_stagger: bool,
    /// The daemon binary.
    #[arg(long, default_value = "target/release/gaswatch")]
    daemon: PathBuf,
    /// Working folder (configs, spool, sink files, logs); a temp dir if absent.
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Also print the results as one JSON object.
    #[arg(long)]
    json: bool,
}

// ---------------------------------------------------------------- station --

fn point_regs(t: PointType) -> usize {
    match t {
        PointType::F32 => 2,
        PointType::U16 => 1,
    }
}

/// Devices of endpoint `e`.
fn endpoint_devices(a: &Args, e: usize) -> std::ops::Range<usize> {
    let start = e * a.units_per_endpoint;
    start..(start + a.units_per_endpoint).min(a.devices)
}

fn endpoints(a: &Args) -> usize {
    a.devices.div_ceil(a.units_per_endpoint)
}

/// Station TOML for the devices of `endpoints_sel`, endpoint `e` at
/// `ports[e]`. `extra` is appended (sinks, spool).
fn station_toml(a: &Args, endpoints_sel: &[usize], ports: &[u16], extra: &str) -> String {
    let regs = point_regs(a.point_type);
    let (ty, order) = match a.point_type {
        PointType::F32 => ("f32", "order = \"ABCD\"\n"),
        PointType::U16 => ("u16", ""),
    };
    let mut s = String::with_capacity(a.devices * a.points * 120);
    s.push_str("[station]\nid = \"load\"\nkind = \"city_gate\"\n\n");
    let interval = humantime::format_duration(a.interval);
    let mut meters = String::new();
    let mut limits = String::new();
    let mut first_meter = true;
    // Every device has the same register map, as a fleet of one RTU model
    // would: one `[[point_maps]]` entry, devices name its points P<d>_<p>.
    s.push_str("[[point_maps]]\nname = \"load\"\n");
    for p in 0..a.points {
        let _ = write!(
            s,
            "[[point_maps.points]]\nname = \"{p}\"\nregister = \"holding\"\naddress = {}\ntype = \"{ty}\"\n{order}unit = \"kPa\"\n",
            p * regs
        );
    }
    for &e in endpoints_sel {
        for (u, d) in endpoint_devices(a, e).enumerate() {
            let _ = write!(
                s,
                "[[devices]]\nid = \"d{d}\"\nhost = \"127.0.0.1\"\nport = {}\nunit_id = {}\npoll_interval = \"{interval}\"\ntimeout = \"1s\"\npoint_map = \"load\"\npoint_prefix = \"P{d}_\"\n",
                ports[e],
                u + 1
            );
            if u == 0 {
                let role = if first_meter { "inlet" } else { "outlet" };
                if first_meter && a.points > 1 {
                    // A balance needs an outlet too, even with one endpoint.
                    let _ = write!(
                        meters,
                        "[[meters]]\nname = \"M{d}b\"\nrole = \"outlet\"\nflow = \"P{d}_1\"\n"
                    );
                }
                first_meter = false;
                let _ = write!(
                    meters,
                    "[[meters]]\nname = \"M{d}\"\nrole = \"{role}\"\nflow = \"P{d}_0\"\n"
                );
                if a.points > 2 {
                    let _ = writeln!(meters, "pressure = \"P{d}_2\"");
                }
                if a.alarm_latency && a.points > 2 {
                    // The meter pressure is noisy (0.1 % sd, 1.5 kPa) around
                    // a slow profile (a few kPa over minutes); a limit at its
                    // value at start with a tiny deadband makes it cross on
                    // about every other poll.
                    let _ = write!(
                        limits,
                        "[[limits]]\npoint = \"P{d}_2\"\nh = {{H{d}}}\ndeadband = 0.0001\n"
                    );
                }
            }
            for p in (1..a.points).step_by(5) {
                let _ = write!(
                    limits,
                    "[[limits]]\npoint = \"P{d}_{p}\"\nh = 1e9\nl = -1e9\n"
                );
            }
        }
    }
    s.push_str(&meters);
    s.push_str(&limits);
    s.push_str(extra);
    s
}

/// Fills the `{H<d>}` placeholders of alarm-latency limits with the values
/// the simulator serves now (or removes nothing when there are none).
fn fill_limits(text: &str, values: &BTreeMap<String, f64>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("{H") {
        out.push_str(&rest[..i]);
        let tail = &rest[i + 2..];
        let end = tail.find('}').unwrap_or(0);
        let d = &tail[..end];
        let v = values.get(&format!("P{d}_2")).copied().unwrap_or(0.0);
        let _ = write!(out, "{v:?}");
        rest = &tail[end + 1..];
    }
    out.push_str(rest);
    out
}

async fn start_sim(a: &Args) -> anyhow::Result<(Vec<SimHandle>, Vec<u16>)> {
    let n = endpoints(a);
    let opts = SimOptions::default();
    let placeholder: Vec<u16> = (0..n).map(|e| 10_000 + e as u16).collect();
    let mut handles = Vec::new();
    let mut ports = vec![0u16; n];
    let local: SocketAddr = ([127, 0, 0, 1], 0).into();
    match a.sim_layout {
        SimLayout::Shared => {
            let all: Vec<usize> = (0..n).collect();
            let text = fill_limits(&station_toml(a, &all, &placeholder, ""), &BTreeMap::new());
            let station = Station::from_config_str(&text, &opts)?;
            let map = gaswatch_sim::serve_all(station, |_| local).await?;
            for (ep, h) in map {
                let e = usize::from(ep.port - 10_000);
                ports[e] = h.local_addr().port();
                handles.push(h);
            }
        }
        SimLayout::PerEndpoint => {
            for (e, port) in ports.iter_mut().enumerate() {
                let text = fill_limits(&station_toml(a, &[e], &placeholder, ""), &BTreeMap::new());
                let station = Station::from_config_str(&text, &opts)?;
                let h = gaswatch_sim::serve(station, local).await?;
                *port = h.local_addr().port();
                handles.push(h);
            }
        }
    }
    Ok((handles, ports))
}

fn requests_seen(handles: &[SimHandle]) -> u64 {
    handles
        .iter()
        .map(|h| h.function_codes().values().sum::<u64>())
        .sum()
}

// ----------------------------------------------------------- /proc probes --

fn clk_tck() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .unwrap_or(100.0)
}

/// utime + stime of a process in seconds.
fn cpu_seconds(pid: u32, tck: f64) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    let ut: f64 = f.get(11)?.parse().ok()?;
    let st: f64 = f.get(12)?.parse().ok()?;
    Some((ut + st) / tck)
}

/// (VmRSS, VmHWM) in kB.
fn rss_kb(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

// ------------------------------------------------------------- histogram --

/// Latency histogram with 10 µs buckets up to 10 s (one overflow bucket).
struct Hist {
    buckets: Vec<u64>,
    n: u64,
}

impl Hist {
    const STEP_NS: i64 = 10_000;
    fn new() -> Self {
        Hist {
            buckets: vec![0; 1_000_001],
            n: 0,
        }
    }
    fn add(&mut self, ns: i64) {
        let i = (ns.max(0) / Self::STEP_NS) as usize;
        let last = self.buckets.len() - 1;
        self.buckets[i.min(last)] += 1;
        self.n += 1;
    }
    fn merge(&mut self, o: &Hist) {
        for (a, b) in self.buckets.iter_mut().zip(&o.buckets) {
            *a += b;
        }
        self.n += o.n;
    }
    /// Quantile `q` in milliseconds (upper edge of its bucket).
    fn quantile_ms(&self, q: f64) -> Option<f64> {
        if self.n == 0 {
            return None;
        }
        let want = ((self.n as f64) * q).ceil().max(1.0) as u64;
        let mut acc = 0;
        for (i, c) in self.buckets.iter().enumerate() {
            acc += c;
            if acc >= want {
                return Some(((i as i64 + 1) * Self::STEP_NS) as f64 / 1e6);
            }
        }
        None
    }
}

/// Counts of delivered lines and their latencies, shared by the readers.
struct Delivered {
    lines: AtomicU64,
    /// Lines seen while `measuring` was set.
    hist: std::sync::Mutex<Hist>,
    measuring: std::sync::atomic::AtomicBool,
    measured_lines: AtomicU64,
}

impl Delivered {
    fn new() -> Arc<Self> {
        Arc::new(Delivered {
            lines: AtomicU64::new(0),
            hist: std::sync::Mutex::new(Hist::new()),
            measuring: std::sync::atomic::AtomicBool::new(false),
            measured_lines: AtomicU64::new(0),
        })
    }

    /// Accounts the complete lines of `chunk` seen at `seen_ns`.
    fn account(&self, chunk: &[u8], seen_ns: i64, local: &mut Hist) -> u64 {
        let mut n = 0;
        let measuring = self.measuring.load(Ordering::Relaxed);
        for line in chunk.split(|&b| b == b'\n') {
            if line.is_empty() {
                continue;
            }
            n += 1;
            if measuring
                && let Some(sp) = line.iter().rposition(|&b| b == b' ')
                && let Ok(s) = std::str::from_utf8(&line[sp + 1..])
                && let Ok(ts) = s.trim().parse::<i64>()
            {
                local.add(seen_ns - ts);
            }
        }
        self.lines.fetch_add(n, Ordering::Relaxed);
        if measuring {
            self.measured_lines.fetch_add(n, Ordering::Relaxed);
        }
        n
    }
}

/// Tails every `telemetry-*.lp` in `dir` until `stop`.
async fn tail_files(
    dir: PathBuf,
    every: Duration,
    d: Arc<Delivered>,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut files: BTreeMap<PathBuf, (std::fs::File, Vec<u8>)> = BTreeMap::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut local = Hist::new();
    let mut last_scan = Instant::now() - Duration::from_secs(1);
    loop {
        if last_scan.elapsed() > Duration::from_millis(200) {
            last_scan = Instant::now();
            if let Ok(rd) = std::fs::read_dir(&dir) {
                for e in rd.flatten() {
                    let p = e.path();
                    let is_lp = p
                        .file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("telemetry-") && n.ends_with(".lp"));
                    if is_lp
                        && !files.contains_key(&p)
                        && let Ok(f) = std::fs::File::open(&p)
                    {
                        files.insert(p, (f, Vec::new()));
                    }
                }
            }
        }
        for (f, rest) in files.values_mut() {
            loop {
                let n = match f.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                let seen = now_ns();
                let chunk = &buf[..n];
                // Keep an incomplete last line for the next read.
                let cut = chunk.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
                if !rest.is_empty() {
                    rest.extend_from_slice(&chunk[..cut]);
                    let whole = std::mem::take(rest);
                    d.account(&whole, seen, &mut local);
                } else {
                    d.account(&chunk[..cut], seen, &mut local);
                }
                rest.extend_from_slice(&chunk[cut..]);
            }
        }
        if local.n > 0 {
            if let Ok(mut h) = d.hist.lock() {
                h.merge(&local);
            }
            local = Hist::new();
        }
        if stop.is_cancelled() {
            return;
        }
        tokio::time::sleep(every).await;
    }
}

// --------------------------------------------------- HTTP line endpoint --

/// Serves `POST /write` (and anything else) with 204, counting the lines of
/// each body (gzip understood) into `d`.
async fn http_sink(listener: tokio::net::TcpListener, d: Arc<Delivered>) {
    loop {
        let Ok((mut s, _)) = listener.accept().await else {
            continue;
        };
        let d = Arc::clone(&d);
        tokio::spawn(async move {
            let mut buf: Vec<u8> = Vec::with_capacity(1 << 16);
            let mut tmp = vec![0u8; 1 << 16];
            let mut local = Hist::new();
            loop {
                // Read the head.
                let head_end = loop {
                    if let Some(i) = find(&buf, b"\r\n\r\n") {
                        break i + 4;
                    }
                    match s.read(&mut tmp).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&tmp[..n]),
                    }
                };
                let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
                let len = header(&head, "content-length")
                    .and_then(|v| v.parse::<usize>().ok())
                    .unwrap_or(0);
                let gz = header(&head, "content-encoding").is_some_and(|v| v.contains("gzip"));
                while buf.len() < head_end + len {
                    match s.read(&mut tmp).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&tmp[..n]),
                    }
                }
                let seen = now_ns();
                let body = &buf[head_end..head_end + len];
                if gz {
                    let mut plain = Vec::new();
                    if flate2::read::GzDecoder::new(body)
                        .read_to_end(&mut plain)
                        .is_ok()
                    {
                        d.account(&plain, seen, &mut local);
                    }
                } else {
                    d.account(body, seen, &mut local);
                }
                if let Ok(mut h) = d.hist.lock() {
                    h.merge(&local);
                }
                local = Hist::new();
                buf.drain(..head_end + len);
                if s.write_all(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
    }
}

fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':').map(str::trim))
}

/// A folder under the system temp dir, removed on drop (the bench cannot
/// use dev-dependencies such as `tempfile`).
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> std::io::Result<TempDir> {
        static N: AtomicU64 = AtomicU64::new(0);
        let p = std::env::temp_dir().join(format!(
            "loadbench-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p)?;
        Ok(TempDir(p))
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ----------------------------------------------------------- InfluxDB --

struct Influxd {
    child: Child,
    port: u16,
    _dir: TempDir,
}

impl Drop for Influxd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn http_get(port: u16, path_query: &str, method: &str) -> anyhow::Result<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        s,
        "{method} {path_query} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

/// Starts influxd 1.x on free 127.0.0.1 ports in a temp dir, as
/// `tests/support/influxdb.rs` does, and creates database `load`.
fn start_influxd() -> anyhow::Result<Influxd> {
    let dir = TempDir::new()?;
    let (port, rpc) = (free_port()?, free_port()?);
    let d = dir.path();
    let conf = format!(
        "reporting-disabled = true\nbind-address = \"127.0.0.1:{rpc}\"\n[meta]\n  dir = \"{m}\"\n[data]\n  dir = \"{da}\"\n  wal-dir = \"{w}\"\n  query-log-enabled = false\n[http]\n  bind-address = \"127.0.0.1:{port}\"\n  log-enabled = false\n[monitor]\n  store-enabled = false\n",
        m = d.join("meta").display(),
        da = d.join("data").display(),
        w = d.join("wal").display()
    );
    let cfg = d.join("influxdb.conf");
    std::fs::write(&cfg, conf)?;
    let log = std::fs::File::create(d.join("influxd.log"))?;
    let child = Command::new("influxd")
        .args(["run", "-config"])
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("starting influxd (apt-get install influxdb)")?;
    let db = Influxd {
        child,
        port,
        _dir: dir,
    };
    let end = Instant::now() + Duration::from_secs(30);
    while !http_get(port, "/ping", "GET").is_ok_and(|r| r.contains(" 204 ")) {
        if Instant::now() > end {
            bail!("influxd did not answer /ping within 30 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    http_get(port, "/query?q=CREATE%20DATABASE%20load", "POST")?;
    Ok(db)
}

fn influx_count(port: u16) -> anyhow::Result<u64> {
    let r = http_get(
        port,
        "/query?db=load&q=SELECT%20count(%22quality%22)%20FROM%20telemetry",
        "GET",
    )?;
    let body = r.split("\r\n\r\n").nth(1).unwrap_or("");
    // Chunked or not, the JSON has "values":[["1970-...",N]] (followed by
    // a newline and, chunked, the last chunk's size: take N's digits only).
    let n = body
        .split("\"values\":[[")
        .nth(1)
        .and_then(|v| v.split(',').nth(1))
        .and_then(|v| {
            let digits: String = v.chars().take_while(char::is_ascii_digit).collect();
            digits.parse::<u64>().ok()
        })
        .unwrap_or(0);
    Ok(n)
}

// ------------------------------------------------------------- process --

/// A measured child process (the daemon or the peer).
struct Measured {
    child: Child,
    pid: u32,
}

impl Measured {
    fn terminate(&mut self, wait: Duration) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status();
        let end = Instant::now() + wait;
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            if Instant::now() > end {
                let _ = self.child.kill();
                return self.child.wait().ok();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Measured {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Result of one measured phase.
#[derive(Debug, Default, serde::Serialize)]
struct Phase {
    name: String,
    offered_points_per_s: f64,
    delivered_points: u64,
    points_per_s: f64,
    cpu_s: f64,
    cpu_share_of_one_core: f64,
    cpu_us_per_point: f64,
    rss_start_kb: u64,
    rss_end_kb: u64,
    rss_min_kb: u64,
    rss_max_kb: u64,
    peak_rss_kb: u64,
    latency_p50_ms: Option<f64>,
    latency_p99_ms: Option<f64>,
    latency_max_ms: Option<f64>,
    bench_process_cpu_s: f64,
}

/// Samples a process for `warmup + duration`; counts lines in `d` during
/// `duration` only.
async fn measure(
    name: &str,
    a: &Args,
    pid: u32,
    d: &Arc<Delivered>,
    tck: f64,
    mut extra_count: impl FnMut() -> Option<u64>,
) -> Phase {
    tokio::time::sleep(a.warmup).await;
    let c0 = cpu_seconds(pid, tck).unwrap_or(0.0);
    let self0 = cpu_seconds(std::process::id(), tck).unwrap_or(0.0);
    let (rss0, _) = rss_kb(pid).unwrap_or((0, 0));
    let x0 = extra_count();
    if let Ok(mut h) = d.hist.lock() {
        *h = Hist::new();
    }
    d.measured_lines.store(0, Ordering::Relaxed);
    d.measuring.store(true, Ordering::Relaxed);
    let t0 = Instant::now();
    let (mut rmin, mut rmax) = (rss0, rss0);
    let report_every = Duration::from_secs(60);
    let mut next_report = t0 + report_every;
    while t0.elapsed() < a.duration {
        tokio::time::sleep(Duration::from_millis(500).min(a.duration)).await;
        if let Some((r, _)) = rss_kb(pid) {
            rmin = rmin.min(r);
            rmax = rmax.max(r);
        }
        if Instant::now() >= next_report {
            next_report += report_every;
            eprintln!(
                "[{name}] {:>5.0} s: {} lines, RSS {} kB (min {rmin}, max {rmax})",
                t0.elapsed().as_secs_f64(),
                d.measured_lines.load(Ordering::Relaxed),
                rss_kb(pid).map_or(0, |r| r.0)
            );
        }
    }
    d.measuring.store(false, Ordering::Relaxed);
    let secs = t0.elapsed().as_secs_f64();
    let c1 = cpu_seconds(pid, tck).unwrap_or(c0);
    let self1 = cpu_seconds(std::process::id(), tck).unwrap_or(self0);
    let (rss1, hwm) = rss_kb(pid).unwrap_or((0, 0));
    let delivered = match (x0, extra_count()) {
        (Some(a0), Some(a1)) => a1.saturating_sub(a0),
        _ => d.measured_lines.load(Ordering::Relaxed),
    };
    let (p50, p99, pmax) = match d.hist.lock() {
        Ok(h) => (h.quantile_ms(0.5), h.quantile_ms(0.99), h.quantile_ms(1.0)),
        Err(_) => (None, None, None),
    };
    let cpu = c1 - c0;
    Phase {
        name: name.to_string(),
        offered_points_per_s: (a.devices * a.points) as f64 / a.interval.as_secs_f64(),
        delivered_points: delivered,
        points_per_s: delivered as f64 / secs,
        cpu_s: cpu,
        cpu_share_of_one_core: cpu / secs,
        cpu_us_per_point: if delivered > 0 {
            cpu * 1e6 / delivered as f64
        } else {
            f64::NAN
        },
        rss_start_kb: rss0,
        rss_end_kb: rss1,
        rss_min_kb: rmin,
        rss_max_kb: rmax,
        peak_rss_kb: hwm,
        latency_p50_ms: p50,
        latency_p99_ms: p99,
        latency_max_ms: pmax,
        bench_process_cpu_s: self1 - self0,
    }
}

fn print_phase(p: &Phase) {
    let ms = |v: Option<f64>| v.map_or("n/a".to_string(), |v| format!("{v:.2} ms"));
    println!("== {}", p.name);
    println!(
        "  points/s delivered   {:>12.0}  (offered {:.0})",
        p.points_per_s, p.offered_points_per_s
    );
    println!("  points delivered     {:>12}", p.delivered_points);
    println!(
        "  CPU                  {:>12.2} s  = {:.2} % of one core, {:.3} µs/point",
        p.cpu_s,
        p.cpu_share_of_one_core * 100.0,
        p.cpu_us_per_point
    );
    println!(
        "  RSS                  start {} kB, end {} kB, min {} kB, max {} kB, peak (VmHWM) {} kB",
        p.rss_start_kb, p.rss_end_kb, p.rss_min_kb, p.rss_max_kb, p.peak_rss_kb
    );
    println!(
        "  poll-to-sink latency p50 {}, p99 {}, max {}",
        ms(p.latency_p50_ms),
        ms(p.latency_p99_ms),
        ms(p.latency_max_ms)
    );
    println!(
        "  loadbench process CPU (simulator + reader) {:.2} s",
        p.bench_process_cpu_s
    );
}

// ------------------------------------------------------- alarm latency --

/// Subscribes to `<prefix>/load/alarms/events` and records publish-receive
/// latency (`now - ts_ns`) of every raise/clear event.
async fn alarm_subscriber(
    port: u16,
    hist: Arc<std::sync::Mutex<Hist>>,
    count: Arc<AtomicU64>,
    events: Arc<std::sync::Mutex<Vec<Received>>>,
    ready: Arc<tokio::sync::Notify>,
) {
    use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS};
    let mut o = MqttOptions::new("loadbench-sub", "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(30));
    let (client, mut ev) = AsyncClient::new(o, 1024);
    let mut n = ev.network_options();
    n.set_tcp_nodelay(true);
    ev.set_network_options(n);
    let _ = client
        .subscribe("gaswatch/load/alarms/events", QoS::AtLeastOnce)
        .await;
    loop {
        match ev.poll().await {
            Ok(Event::Incoming(Incoming::SubAck(_))) => ready.notify_one(),
            Ok(Event::Incoming(Incoming::Publish(p))) => {
                let seen = now_ns();
                if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&p.payload)
                    && let Some(ts) = v.get("ts_ns").and_then(serde_json::Value::as_i64)
                {
                    count.fetch_add(1, Ordering::Relaxed);
                    if let Ok(mut h) = hist.lock() {
                        h.add(seen - ts);
                    }
                    let seq = v.get("seq").and_then(serde_json::Value::as_u64);
                    if let (Some(seq), Ok(mut e)) = (seq, events.lock()) {
                        e.push(Received {
                            seq,
                            ts_ns: ts,
                            seen_ns: seen,
                        });
                    }
                }
            }
            Ok(_) => {}
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// One alarm event as the subscriber got it.
struct Received {
    seq: u64,
    /// The poll timestamp in the event (Modbus response arrived in the daemon).
    ts_ns: i64,
    /// When the subscriber got it.
    seen_ns: i64,
}

/// The path stages of an alarm event: the poll timestamp, the daemon's
/// trace marks (`GASWATCH_ALARM_TRACE`, see `telemetry::alarm_trace`) and
/// the subscriber's receive time.
const STAGES: [&str; 6] = ["poll", "taken", "routed", "handed", "written", "subscriber"];

/// Joins the subscriber's events with the daemon's stage trace and prints,
/// per step between stages, p50 / p99 / max over the events that have every
/// mark, then the worst events end to end with their steps.
fn alarm_stages(trace: &Path, events: &[Received]) -> serde_json::Value {
    let text = std::fs::read_to_string(trace).unwrap_or_default();
    let mut marks: std::collections::HashMap<u64, [Option<i64>; 4]> = Default::default();
    for line in text.lines() {
        let mut f = line.split(' ');
        let (Some(stage), Some(seq), Some(at)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        let (Some(k), Ok(seq), Ok(at)) = (
            STAGES[1..5].iter().position(|s| *s == stage),
            seq.parse::<u64>(),
            at.parse::<i64>(),
        ) else {
            continue;
        };
        marks.entry(seq).or_default()[k] = Some(at);
    }
    // Per event: the six times, when all are known.
    let rows: Vec<[i64; 6]> = events
        .iter()
        .filter_map(|e| {
            let m = marks.get(&e.seq)?;
            Some([e.ts_ns, m[0]?, m[1]?, m[2]?, m[3]?, e.seen_ns])
        })
        .collect();
    println!(
        "  alarm stages: {} of {} events traced by the daemon (GASWATCH_ALARM_TRACE)",
        rows.len(),
        events.len()
    );
    if rows.is_empty() {
        return serde_json::Value::Null;
    }
    let q = |mut v: Vec<i64>, x: f64| -> f64 {
        v.sort_unstable();
        let i = ((v.len() as f64 * x).ceil() as usize).clamp(1, v.len()) - 1;
        v[i] as f64 / 1e6
    };
    let mut steps = Vec::new();
    for k in 0..5 {
        let d: Vec<i64> = rows.iter().map(|r| r[k + 1] - r[k]).collect();
        let name = format!("{} -> {}", STAGES[k], STAGES[k + 1]);
        let (p50, p99, max) = (q(d.clone(), 0.5), q(d.clone(), 0.99), q(d, 1.0));
        println!("    {name:<22} p50 {p50:8.3} ms  p99 {p99:8.3} ms  max {max:8.3} ms");
        steps.push(serde_json::json!({"step": name, "p50_ms": p50, "p99_ms": p99, "max_ms": max}));
    }
    for (name, from, to) in [
        ("in the daemon (poll -> written)", 0, 4),
        ("end to end (poll -> subscriber)", 0, 5),
    ] {
        let d: Vec<i64> = rows.iter().map(|r| r[to] - r[from]).collect();
        let (p50, p99, max) = (q(d.clone(), 0.5), q(d.clone(), 0.99), q(d, 1.0));
        println!("    {name:<22} p50 {p50:8.3} ms  p99 {p99:8.3} ms  max {max:8.3} ms");
        steps.push(serde_json::json!({"step": name, "p50_ms": p50, "p99_ms": p99, "max_ms": max}));
    }
    let mut worst: Vec<&[i64; 6]> = rows.iter().collect();
    worst.sort_unstable_by_key(|r| std::cmp::Reverse(r[5] - r[0]));
    println!(
        "    worst events, ms per step (poll->taken, ->routed, ->handed, ->written, ->subscriber):"
    );
    for r in worst.iter().take(8) {
        let d: Vec<String> = (0..5)
            .map(|k| format!("{:.3}", (r[k + 1] - r[k]) as f64 / 1e6))
            .collect();
        println!(
            "      total {:8.3}: {}",
            (r[5] - r[0]) as f64 / 1e6,
            d.join(", ")
        );
    }
    serde_json::json!({"traced": rows.len(), "steps": steps})
}

struct Mosquitto {
    child: Child,
    port: u16,
    _dir: TempDir,
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_mosquitto() -> anyhow::Result<Mosquitto> {
    let dir = TempDir::new()?;
    let port = free_port()?;
    let conf = dir.path().join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            // Nagle off on the broker's sockets too: the bench measures the
            // daemon's path, not a broker default (mosquitto's is off).
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nuser root\nset_tcp_nodelay true\nlog_dest file {}\n",
            dir.path().join("mosquitto.log").display()
        ),
    )?;
    let prog = ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]
        .into_iter()
        .find(|p| Path::new(p).is_file())
        .context("mosquitto not found (apt-get install mosquitto)")?;
    let child = Command::new(prog)
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let m = Mosquitto {
        child,
        port,
        _dir: dir,
    };
    let end = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > end {
            bail!("mosquitto did not listen within 10 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(m)
}

// ---------------------------------------------------------------- main --

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    if a.devices == 0 || a.points < 2 || a.units_per_endpoint == 0 {
        bail!("--devices and --units-per-endpoint must be at least 1, --points at least 2");
    }
    if a.points * point_regs(a.point_type) > 125 {
        bail!("--points x registers per point must fit one read of 125 registers");
    }
    if a.units_per_endpoint > 247 {
        bail!("--units-per-endpoint: at most 247 unit ids behind one endpoint");
    }
    let daemon = std::fs::canonicalize(&a.daemon).with_context(|| {
        format!(
            "daemon binary {} (build it: cargo build --release --bin gaswatch)",
            a.daemon.display()
        )
    })?;
    let tmp = TempDir::new()?;
    let work = a
        .work_dir
        .clone()
        .unwrap_or_else(|| tmp.path().to_path_buf());
    std::fs::create_dir_all(&work)?;
    let tck = clk_tck();

    let (handles, ports) = start_sim(&a).await?;
    let n_ep = endpoints(&a);
    let all: Vec<usize> = (0..n_ep).collect();

    let delivered = Delivered::new();
    let stop = tokio_util::sync::CancellationToken::new();
    let mut influxd = None;
    let mut http_port = None;
    let mut mosq = None;
    let out_dir = work.join("out");
    let mut extra = format!(
        "\n[spool]\ndir = \"{}\"\nflush_interval = \"{}\"\n",
        work.join("spool").display(),
        humantime::format_duration(a.flush_interval)
    );
    if a.no_stagger {
        extra.push_str("\n[modbus]\nstagger = false\n");
    }
    let gzip = a.gzip;
    match a.sink {
        SinkKind::File => {
            let _ = std::fs::remove_dir_all(&out_dir);
            let _ = write!(extra, "\n[sinks.file]\ndir = \"{}\"\n", out_dir.display());
        }
        SinkKind::Http | SinkKind::Influx => {
            let port = if a.sink == SinkKind::Http {
                let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
                let p = l.local_addr()?.port();
                tokio::spawn(http_sink(l, Arc::clone(&delivered)));
                p
            } else {
                let db = start_influxd()?;
                let p = db.port;
                influxd = Some(db);
                p
            };
            http_port = Some(port);
            let _ = write!(
                extra,
                "\n[sinks.influxdb]\nurl = \"http://127.0.0.1:{port}\"\ndatabase = \"load\"\ngzip = {gzip}\nflush_interval = \"{}\"\n",
                humantime::format_duration(a.flush_interval)
            );
        }
    }
    let alarm_hist = Arc::new(std::sync::Mutex::new(Hist::new()));
    let alarm_count = Arc::new(AtomicU64::new(0));
    let alarm_events = Arc::new(std::sync::Mutex::new(Vec::new()));
    let alarm_trace = work.join("alarm-trace.txt");
    let _ = std::fs::remove_file(&alarm_trace);
    if a.alarm_latency {
        let m = start_mosquitto()?;
        let _ = write!(
            extra,
            "\n[sinks.mqtt]\nhost = \"127.0.0.1\"\nport = {}\n",
            m.port
        );
        let ready = Arc::new(tokio::sync::Notify::new());
        // Its own thread and runtime: in the bench's runtime it would
        // queue behind the simulator's tasks (every request re-encodes the
        // station), and that delay would show as broker -> subscriber time.
        let sub = alarm_subscriber(
            m.port,
            Arc::clone(&alarm_hist),
            Arc::clone(&alarm_count),
            Arc::clone(&alarm_events),
            Arc::clone(&ready),
        );
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::spawn(move || rt.block_on(sub));
        tokio::time::timeout(Duration::from_secs(10), ready.notified())
            .await
            .context("MQTT subscriber did not get its SUBACK within 10 s")?;
        mosq = Some(m);
    }
    let mut values = BTreeMap::new();
    if a.alarm_latency {
        for h in &handles {
            values.extend(h.snapshot().values);
        }
    }
    let cfg_text = fill_limits(&station_toml(&a, &all, &ports, &extra), &values);
    let cfg_path = work.join("load.toml");
    std::fs::write(&cfg_path, &cfg_text)?;

    let bin_size = std::fs::metadata(&daemon).map(|m| m.len()).unwrap_or(0);
    println!(
        "loadbench: {} devices x {} points ({:?}) every {:?}, {} endpoints ({} units each, simulator {:?}), sink {:?}, flush {:?}, warm-up {:?}, measured {:?}, stagger {}",
        a.devices,
        a.points,
        a.point_type,
        a.interval,
        n_ep,
        a.units_per_endpoint,
        a.sim_layout,
        a.sink,
        a.flush_interval,
        a.warmup,
        a.duration,
        if a.no_stagger { "off" } else { "on" }
    );
    println!(
        "daemon binary {} : {:.1} MiB",
        daemon.display(),
        bin_size as f64 / 1_048_576.0
    );

    // Spawn the daemon and time its first request.
    let log_path = work.join("daemon.log");
    let before = requests_seen(&handles);
    let spawned = Instant::now();
    let mut cmd = Command::new(&daemon);
    if a.alarm_latency {
        // Stage marks of each alarm event (a binary without it ignores it).
        cmd.env("GASWATCH_ALARM_TRACE", &alarm_trace);
    }
    let child = cmd
        .args(["run", "-c"])
        .arg(&cfg_path)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path)?)
        .spawn()
        .with_context(|| format!("spawning {}", daemon.display()))?;
    let pid = child.id();
    let mut daemon_proc = Measured { child, pid };
    let first_poll = loop {
        if requests_seen(&handles) > before {
            break Some(spawned.elapsed());
        }
        if spawned.elapsed() > Duration::from_secs(10) {
            break None;
        }
        if let Ok(Some(st)) = daemon_proc.child.try_wait() {
            bail!(
                "the daemon exited at start ({st}); see {}",
                log_path.display()
            );
        }
        // A yield, not a sleep: the time to the first request is what we measure.
        tokio::task::yield_now().await;
    };
    let tail = (a.sink == SinkKind::File).then(|| {
        tokio::spawn(tail_files(
            out_dir.clone(),
            a.tail_every,
            Arc::clone(&delivered),
            stop.clone(),
        ))
    });
    let mut phases = Vec::new();
    let influx_port = influxd.as_ref().map(|d| d.port);
    let alarm0 = alarm_count.load(Ordering::Relaxed);
    if let Ok(mut h) = alarm_hist.lock() {
        *h = Hist::new();
    }
    if let Ok(mut e) = alarm_events.lock() {
        e.clear();
    }
    let p = measure("gaswatch", &a, pid, &delivered, tck, || {
        influx_port.and_then(|p| influx_count(p).ok())
    })
    .await;
    let alarms = alarm_count.load(Ordering::Relaxed) - alarm0;
    // Only the events of the measured window.
    let measured_events = alarm_events
        .lock()
        .map(|mut e| std::mem::take(&mut *e))
        .unwrap_or_default();
    let t_stop = Instant::now();
    let status = daemon_proc.terminate(Duration::from_secs(30));
    let stop_time = t_stop.elapsed();
    stop.cancel();
    if let Some(t) = tail {
        let _ = t.await;
    }
    print_phase(&p);
    println!(
        "  start-up to first poll {}",
        first_poll.map_or("none within 10 s".into(), |d| format!(
            "{:.1} ms",
            d.as_secs_f64() * 1e3
        ))
    );
    println!(
        "  shutdown (SIGTERM to exit) {:.1} ms, exit {:?}",
        stop_time.as_secs_f64() * 1e3,
        status
    );
    let warns = std::fs::read_to_string(&log_path)
        .map(|l| {
            l.lines()
                .filter(|l| l.contains("WARN") || l.contains("ERROR"))
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    println!("  daemon WARN/ERROR log lines: {}", warns.len());
    for w in warns.iter().take(5) {
        println!("    {w}");
    }
    let mut alarm_json = serde_json::Value::Null;
    if a.alarm_latency {
        let h = alarm_hist.lock().ok();
        let q = |x: f64| h.as_ref().and_then(|h| h.quantile_ms(x));
        println!(
            "  alarm events received {alarms}; poll-to-subscriber p50 {:?} ms, p99 {:?} ms, max {:?} ms",
            q(0.5),
            q(0.99),
            q(1.0)
        );
        let stages = alarm_stages(&alarm_trace, &measured_events);
        alarm_json = serde_json::json!({"events": alarms, "p50_ms": q(0.5), "p99_ms": q(0.99), "max_ms": q(1.0), "stages": stages});
    }
    drop(mosq);
    phases.push(p);

    if a.peer {
        let port = match http_port {
            Some(p) if a.sink == SinkKind::Http => p,
            _ => {
                let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
                let p = l.local_addr()?.port();
                tokio::spawn(http_sink(l, Arc::clone(&delivered)));
                p
            }
        };
        let plan = serde_json::json!({
            "interval_s": a.interval.as_secs_f64(),
            "type": match a.point_type { PointType::F32 => "f32", PointType::U16 => "u16" },
            "url": format!("http://127.0.0.1:{port}/write?db=load&precision=ns"),
            "endpoints": (0..n_ep).map(|e| serde_json::json!({
                "port": ports[e],
                "devices": endpoint_devices(&a, e).enumerate().map(|(u, d)| serde_json::json!({
                    "id": format!("d{d}"), "unit": u + 1, "points": a.points,
                })).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        });
        let plan_path = work.join("peer_plan.json");
        std::fs::write(&plan_path, plan.to_string())?;
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/peer_poller.py");
        let child = Command::new(&a.python)
            .arg(&script)
            .arg(&plan_path)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(work.join("peer.log"))?)
            .spawn()
            .with_context(|| format!("spawning {} {}", a.python.display(), script.display()))?;
        let pid = child.id();
        let mut peer = Measured { child, pid };
        let p = measure(
            "python peer (pymodbus + HTTP)",
            &a,
            pid,
            &delivered,
            tck,
            || None,
        )
        .await;
        peer.terminate(Duration::from_secs(5));
        print_phase(&p);
        if let Ok(log) = std::fs::read_to_string(work.join("peer.log")) {
            for l in log.lines().rev().take(3) {
                println!("    peer: {l}");
            }
        }
        let g = &phases[0];
        println!(
            "== ratio: python CPU per point / gaswatch CPU per point = {:.1}",
            p.cpu_us_per_point / g.cpu_us_per_point
        );
        phases.push(p);
    }

    for h in handles {
        h.stop().await;
    }
    drop(influxd);
    if a.json {
        let j = serde_json::json!({
            "devices": a.devices, "points": a.points, "interval_ms": a.interval.as_millis() as u64,
            "sink": format!("{:?}", a.sink), "binary_bytes": bin_size,
            "first_poll_ms": first_poll.map(|d| d.as_secs_f64() * 1e3),
            "phases": phases, "alarm": alarm_json,
        });
        println!("{j}");
    }
    Ok(())
}
