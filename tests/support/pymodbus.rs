//! A real, independent Modbus server for tests: Debian's pymodbus 3.0
//! (`python3-pymodbus`) running `pymodbus_server.py` with a register map the
//! test gives: Modbus/TCP or RTU over TCP on 127.0.0.1, or RTU on a serial
//! port (a pseudo-terminal the script opens; `python3-serial`,
//! `python3-serial-asyncio`). Values can be given as registers or encoded by
//! pymodbus's own payload builder ([`Encoded`]). Started with
//! [`PymodbusServer::start`] / [`PymodbusServer::start_with`], it is ready
//! when that returns (the script prints READY once serving) and is killed on
//! drop.

use serde_json::{Map, Value, json};
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const PYTHON: &str = "/usr/bin/python3";
const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/support/pymodbus_server.py"
);
const READY_DEADLINE: Duration = Duration::from_secs(15);

/// Register tables of one unit id: `(start, values)` with 0-based wire addresses.
/// A table left `None` is empty: reading it answers exception 02.
#[derive(Debug, Clone, Default)]
pub struct Unit {
    pub holding: Option<(u16, Vec<u16>)>,
    pub input: Option<(u16, Vec<u16>)>,
    pub coil: Option<(u16, Vec<bool>)>,
    pub discrete_input: Option<(u16, Vec<bool>)>,
    /// Values pymodbus encodes itself (BinaryPayloadBuilder) into the
    /// holding or input table.
    pub encode: Vec<Encoded>,
}

/// One value for pymodbus to encode at `address` of `table`.
#[derive(Debug, Clone)]
pub struct Encoded {
    /// "holding" or "input".
    pub table: &'static str,
    pub address: u16,
    /// u16 i16 u32 i32 u64 i64 f32 f64 string
    pub ty: &'static str,
    /// ABCD CDAB BADC DCBA
    pub order: &'static str,
    /// A number, or the text of a string.
    pub value: Value,
    /// Registers of a string (NUL padded).
    pub length: Option<u16>,
}

/// How pymodbus serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Modbus/TCP on 127.0.0.1.
    Tcp,
    /// RTU frames over TCP on 127.0.0.1 (pymodbus's RTU framer).
    RtuOverTcp,
    /// RTU on a pseudo-terminal: 19200 baud, no parity (ptys refuse
    /// PARENB), 8 data bits, 1 stop bit.
    Rtu,
}

impl Transport {
    fn arg(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::RtuOverTcp => "rtu_over_tcp",
            Transport::Rtu => "rtu",
        }
    }
}

impl Unit {
    pub fn holding(start: u16, values: &[u16]) -> Self {
        Unit {
            holding: Some((start, values.to_vec())),
            ..Unit::default()
        }
    }

    pub fn input(start: u16, values: &[u16]) -> Self {
        Unit {
            input: Some((start, values.to_vec())),
            ..Unit::default()
        }
    }

    pub fn with_input(mut self, start: u16, values: &[u16]) -> Self {
        self.input = Some((start, values.to_vec()));
        self
    }
}

/// The register map: unit id -> tables. Unit ids not in the map get no
/// answer at all from pymodbus (the client times out).
pub type RegisterMap = Vec<(u8, Unit)>;

fn map_json(map: &RegisterMap) -> String {
    let mut units = Map::new();
    for (id, unit) in map {
        let mut tables = Map::new();
        if let Some((start, values)) = &unit.holding {
            tables.insert("holding".into(), json!([start, values]));
        }
        if let Some((start, values)) = &unit.input {
            tables.insert("input".into(), json!([start, values]));
        }
        if let Some((start, values)) = &unit.coil {
            tables.insert("coil".into(), json!([start, values]));
        }
        if let Some((start, values)) = &unit.discrete_input {
            tables.insert("discrete_input".into(), json!([start, values]));
        }
        if !unit.encode.is_empty() {
            let entries: Vec<Value> = unit
                .encode
                .iter()
                .map(|e| {
                    json!({"table": e.table, "address": e.address, "type": e.ty,
                           "order": e.order, "value": e.value, "length": e.length})
                })
                .collect();
            tables.insert("encode".into(), Value::Array(entries));
        }
        units.insert(id.to_string(), Value::Object(tables));
    }
    Value::Object(units).to_string()
}

/// A running pymodbus server; killed on drop.
pub struct PymodbusServer {
    child: Child,
    pub port: u16,
    /// With [`Transport::Rtu`]: the serial port (pty) the client opens.
    pub serial_path: Option<String>,
    stderr: Arc<Mutex<String>>,
}

impl PymodbusServer {
    /// Starts pymodbus (Modbus/TCP) on 127.0.0.1:`port` and waits (with a
    /// deadline) until it listens. Panics with a clear message when pymodbus
    /// is missing.
    pub fn start(port: u16, map: &RegisterMap) -> PymodbusServer {
        Self::start_with(port, map, Transport::Tcp)
    }

    /// As [`Self::start`], serving with `transport` (`port` is unused for
    /// [`Transport::Rtu`]; the pty path is in `serial_path`).
    pub fn start_with(port: u16, map: &RegisterMap, transport: Transport) -> PymodbusServer {
        require_pymodbus();
        if transport == Transport::Rtu {
            require_pyserial();
        }
        let mut child = Command::new(PYTHON)
            .arg(SCRIPT)
            .arg(port.to_string())
            .arg(map_json(map))
            .arg(transport.arg())
            // The script exits when stdin closes, so a crashed test leaves no server.
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {PYTHON} {SCRIPT}: {e}"));

        let stderr = Arc::new(Mutex::new(String::new()));
        if let Some(mut err) = child.stderr.take() {
            let sink = Arc::clone(&stderr);
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = err.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    let mut s = sink.lock().unwrap_or_else(|p| p.into_inner());
                    s.push_str(&String::from_utf8_lossy(&buf[..n]));
                    // Keep the tail only; pymodbus logs every exception it answers.
                    if s.len() > 16_384 {
                        let cut = s.len() - 8_192;
                        let cut = (cut..s.len()).find(|&i| s.is_char_boundary(i)).unwrap_or(0);
                        s.drain(..cut);
                    }
                }
            });
        }

        let (ready_tx, ready_rx) = mpsc::channel::<String>();
        let stdout = child.stdout.take().expect("piped stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if ready_tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut server = PymodbusServer {
            child,
            port,
            serial_path: None,
            stderr,
        };
        let deadline = std::time::Instant::now() + READY_DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match ready_rx.recv_timeout(left) {
                Ok(line) if line.starts_with("READY") => {
                    // "READY pymodbus VERSION [PATH]"
                    server.serial_path = line.split_whitespace().nth(3).map(str::to_string);
                    return server;
                }
                Ok(line) if line.starts_with("NO_PYMODBUS") => {
                    panic!(
                        "{line}\nThe Modbus tests need Debian's pymodbus: apt-get install python3-pymodbus"
                    )
                }
                Ok(_) => continue,
                Err(_) => {
                    let status = server.child.try_wait().ok().flatten();
                    panic!(
                        "pymodbus did not become ready on 127.0.0.1:{port} within {READY_DEADLINE:?} \
                         (exit status {status:?}); stderr:\n{}",
                        server.stderr()
                    );
                }
            }
        }
    }

    /// What the server wrote to stderr so far (tail).
    pub fn stderr(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Kills the server now (like a device losing power) and reaps it.
    pub fn kill(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PymodbusServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Panics with the install hint when pyserial (and its asyncio part, which
/// pymodbus's serial server uses) is missing.
fn require_pyserial() {
    let out = Command::new(PYTHON)
        .args(["-c", "import serial, serial_asyncio"])
        .output();
    match out {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!(
            "pyserial is not installed ({}): apt-get install python3-serial python3-serial-asyncio",
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => panic!("{PYTHON} not found ({e}): apt-get install python3 python3-serial"),
    }
}

/// Panics with the install hint when python3 or pymodbus is missing.
fn require_pymodbus() {
    let out = Command::new(PYTHON)
        .args([
            "-c",
            "import pymodbus.server, pymodbus.datastore; print(pymodbus.__version__)",
        ])
        .output();
    match out {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!(
            "python3-pymodbus is not installed ({}): apt-get install python3-pymodbus",
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => panic!("{PYTHON} not found ({e}): apt-get install python3 python3-pymodbus"),
    }
}
