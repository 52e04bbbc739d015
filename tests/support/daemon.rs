//! The real `gaswatch` binary run as an operator runs it, against the
//! simulated city gate: a config written from `config/city-gate.toml`
//! (devices pointed at the simulator, fast polls, file sink, InfluxDB sink,
//! spool in a temp dir), the daemon spawned with JSON logs into a file,
//! stopped with SIGTERM; and readers for what it leaves behind (file-sink
//! line protocol and JSON lines). Also [`Daemon`], a handle on `gaswatch run`
//! with any config (SIGTERM, `kill -9`, killed on drop), and [`history`],
//! the alarm journal as `gaswatch alarms history --json` prints it.

use super::influxdb::Points;
use gaswatch_sim::{SimHandle, SimOptions, Station};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The station of these tests.
pub const STATION: &str = include_str!("../../config/city-gate.toml");
/// The spool's flush interval in the written configs.
pub const SPOOL_FLUSH_MS: u64 = 300;
/// How long any wait for the daemon may take (generous: machines are shared).
pub const DEADLINE: Duration = Duration::from_secs(120);

/// (point, ts ns)
pub type Key = (String, i64);

/// A daemon's temp dir, config file and log file.
pub struct Setup {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub log: PathBuf,
    /// The config as written (edit it and [`Setup::write`] before a SIGHUP).
    pub table: toml::Table,
}

impl Setup {
    pub fn files(&self) -> PathBuf {
        self.dir.path().join("files")
    }
    pub fn spool(&self) -> PathBuf {
        self.dir.path().join("spool")
    }
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
    /// Writes `table` as the config file (and keeps it as `self.table`).
    pub fn write(&mut self, table: toml::Table) {
        std::fs::write(&self.config, toml::to_string(&table).expect("toml")).expect("write config");
        self.table = table;
    }
}

/// The city gate served by the simulator on a 127.0.0.1 free port (one
/// endpoint for its three units).
pub async fn start_sim(noise_percent: f64) -> SimHandle {
    let opts = SimOptions {
        noise_percent,
        ..SimOptions::default()
    };
    let station = Station::from_config_str(STATION, &opts).expect("station");
    let any: SocketAddr = ([127, 0, 0, 1], 0).into();
    let mut handles = gaswatch_sim::serve_all(station, |_| any)
        .await
        .expect("serve");
    assert_eq!(handles.len(), 1, "city-gate.toml has one endpoint");
    handles.pop_first().expect("one endpoint").1
}

/// Writes a daemon config: city-gate.toml pointed at the simulator and
/// InfluxDB (database `gaswatch`), every device polled every `poll_ms`,
/// spool and files in a temp dir; `edit` changes the table last.
pub fn setup(
    sim: &SimHandle,
    influx_url: &str,
    poll_ms: u64,
    edit: impl FnOnce(&mut toml::Table),
) -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut t: toml::Table = STATION.parse().expect("city-gate.toml");
    let devices = t
        .get_mut("devices")
        .and_then(|d| d.as_array_mut())
        .expect("devices");
    for d in devices {
        let d = d.as_table_mut().expect("device table");
        d.insert("host".into(), "127.0.0.1".into());
        d.insert("port".into(), i64::from(sim.local_addr().port()).into());
        d.insert("poll_interval".into(), format!("{poll_ms}ms").into());
        d.insert("timeout".into(), "1s".into());
    }
    let root = dir.path();
    let sinks: toml::Table = toml::from_str(&format!(
        r#"
[file]
dir = "{files}"
[influxdb]
url = "{influx_url}"
database = "gaswatch"
batch_size = 500
flush_interval = "100ms"
timeout = "2s"
"#,
        files = root.join("files").display()
    ))
    .expect("sinks");
    t.insert("sinks".into(), sinks.into());
    let spool: toml::Table = toml::from_str(&format!(
        "dir = \"{}\"\nflush_interval = \"{SPOOL_FLUSH_MS}ms\"\n",
        root.join("spool").display()
    ))
    .expect("spool");
    t.insert("spool".into(), spool.into());
    edit(&mut t);
    let config = root.join("station.toml");
    let log = root.join("daemon.log");
    let mut s = Setup {
        dir,
        config,
        log,
        table: toml::Table::new(),
    };
    s.write(t);
    s
}

/// `gaswatch --log-format json run -c CONFIG`, stderr appended to the log.
pub fn spawn_daemon(s: &Setup) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&s.log)
        .expect("log");
    Command::new(env!("CARGO_BIN_EXE_gaswatch"))
        .arg("--log-format")
        .arg("json")
        .arg("run")
        .arg("-c")
        .arg(&s.config)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn gaswatch")
}

/// Sends `sig` (e.g. "-HUP") to `pid` with kill(1).
pub fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .arg(sig)
        .arg(pid.to_string())
        .status()
        .expect("kill");
    assert!(ok.success(), "kill {sig} {pid} failed");
}

pub async fn wait_exit(child: &mut Child) -> ExitStatus {
    let mut status = None;
    let exited = super::wait_until_async(DEADLINE, || {
        let s = child.try_wait().expect("try_wait");
        status = s;
        async move { s.is_some() }
    })
    .await;
    assert!(exited, "daemon did not exit");
    status.expect("status")
}

/// SIGTERM, then wait for a clean exit.
pub async fn terminate(child: &mut Child, s: &Setup) {
    signal(child.id(), "-TERM");
    let status = wait_exit(child).await;
    assert!(
        status.success(),
        "daemon exit {status}; log:\n{}",
        s.log_text()
    );
}

pub fn now_ns() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_nanos(),
    )
    .expect("ns fit i64")
}

/// One `telemetry` line of line protocol: ((point, ts), (value, quality)).
pub fn parse_line(line: &str) -> Option<(Key, (Option<f64>, String))> {
    let mut parts = line.split(' ');
    let (series, fields, ts) = (parts.next()?, parts.next()?, parts.next()?);
    let point = series
        .split(',')
        .find_map(|kv| kv.strip_prefix("point="))?
        .to_string();
    let mut value = None;
    let mut quality = String::new();
    for f in fields.split(',') {
        if let Some(v) = f.strip_prefix("value=") {
            value = v.parse::<f64>().ok();
        } else if let Some(q) = f.strip_prefix("quality=") {
            quality = q.trim_matches('"').to_string();
        }
    }
    Some(((point, ts.trim().parse().ok()?), (value, quality)))
}

/// Every complete telemetry line in the `.lp` files of `dir`, in file
/// order (duplicates kept). A line cut by `kill -9` (no newline) is ignored.
pub fn file_lines(dir: &Path) -> Vec<(Key, (Option<f64>, String))> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    let mut paths: Vec<PathBuf> = entries
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "lp"))
        .collect();
    paths.sort();
    for p in paths {
        let text = std::fs::read_to_string(&p).expect("read");
        for line in text.split_inclusive('\n') {
            if let Some(line) = line.strip_suffix('\n')
                && let Some(kv) = parse_line(line)
            {
                out.push(kv);
            }
        }
    }
    out
}

/// Telemetry lines in the file sink, by (point, ts).
pub fn file_points(dir: &Path) -> Points {
    file_lines(dir).into_iter().collect()
}

/// Complete lines of a JSON-lines file of the file sink, parsed.
pub fn jsonl(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .split_inclusive('\n')
        .filter(|l| l.ends_with('\n') && l.len() > 1)
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Lines of a JSON-lines file of the file sink (complete lines only).
pub fn jsonl_count(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .split_inclusive('\n')
        .filter(|l| l.ends_with('\n') && l.len() > 1)
        .count()
}

/// Every point of `written` is in `stored` with the same value and quality.
pub fn assert_same_values(stored: &Points, written: &Points) {
    for (k, w) in written {
        let s = stored
            .get(k)
            .unwrap_or_else(|| panic!("{k:?} missing in InfluxDB"));
        assert_eq!(s.1, w.1, "quality of {k:?}");
        match (s.0, w.0) {
            (Some(a), Some(b)) => assert!(
                (a - b).abs() <= 1e-9 * b.abs().max(1.0),
                "{k:?}: {a} vs {b}"
            ),
            (a, b) => assert_eq!(a, b, "{k:?}"),
        }
    }
}

/// Per point, consecutive samples further apart than `limit_ns` (a missed
/// poll cycle when the limit is above one poll period): (point, earlier
/// ts, later ts). Only the samples between `from_ns` and `to_ns` count.
pub fn gaps(points: &Points, limit_ns: i64, from_ns: i64, to_ns: i64) -> Vec<(String, i64, i64)> {
    let mut out = Vec::new();
    let mut prev: Option<&Key> = None;
    for k in points.keys().filter(|k| (from_ns..=to_ns).contains(&k.1)) {
        if let Some(p) = prev
            && p.0 == k.0
            && k.1 - p.1 > limit_ns
        {
            out.push((k.0.clone(), p.1, k.1));
        }
        prev = Some(k);
    }
    out
}

/// A running `gaswatch run`.
pub struct Daemon {
    child: Option<Child>,
    log: PathBuf,
}

impl Daemon {
    /// Starts `gaswatch run -c config`, appending its log to `log`.
    pub fn start(config: &Path, log: &Path) -> Daemon {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("daemon log file");
        let child = Command::new(env!("CARGO_BIN_EXE_gaswatch"))
            .args(["--log-format", "json", "run", "-c"])
            .arg(config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("spawn gaswatch");
        Daemon {
            child: Some(child),
            log: log.to_path_buf(),
        }
    }

    /// The log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends `sig` (e.g. "-HUP") to the running daemon.
    pub fn signal(&self, sig: &str) {
        let c = self.child.as_ref().expect("daemon running");
        signal(c.id(), sig);
    }

    /// `kill -9`: a crash, nothing drained.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait (up to [`DEADLINE`]) for the exit; returns the status.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut c = self.child.take().expect("daemon running");
        let st = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status()
            .expect("kill -TERM");
        assert!(st.success(), "kill -TERM failed");
        let mut status = None;
        let exited = super::wait_until(DEADLINE, || {
            status = c.try_wait().expect("try_wait");
            status.is_some()
        });
        if !exited {
            let _ = c.kill();
            panic!(
                "gaswatch did not exit within 60 s of SIGTERM; log:\n{}",
                self.log()
            );
        }
        status.expect("exit status")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// `gaswatch alarms history -c config --json`: every journal entry (across
/// segments), one JSON object each.
pub fn history(config: &Path) -> Vec<serde_json::Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_gaswatch"))
        .args(["alarms", "history", "--json", "-c"])
        .arg(config)
        .output()
        .expect("run gaswatch alarms history");
    assert!(
        out.status.success(),
        "gaswatch alarms history failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("history line {l:?}: {e}")))
        .collect()
}

/// `gaswatch alarms report -c config --since SINCE --json`.
pub fn alarm_report(config: &Path, since: &str) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_gaswatch"))
        .args(["alarms", "report", "--json", "--since", since, "-c"])
        .arg(config)
        .output()
        .expect("run gaswatch alarms report");
    assert!(
        out.status.success(),
        "gaswatch alarms report failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("report JSON")
}
