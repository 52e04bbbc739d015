//! A real, independent Modbus/TCP server for tests: Debian's pymodbus 3.0
//! (`python3-pymodbus`) running `pymodbus_server.py` on 127.0.0.1 with a
//! register map the test gives. Started with [`PymodbusServer::start`], it is
//! ready when `start` returns (the script prints READY once listening) and is
//! killed on drop.

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
}

impl Unit {
    pub fn holding(start: u16, values: &[u16]) -> Self {
        Unit {
            holding: Some((start, values.to_vec())),
            input: None,
        }
    }

    pub fn input(start: u16, values: &[u16]) -> Self {
        Unit {
            holding: None,
            input: Some((start, values.to_vec())),
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
        units.insert(id.to_string(), Value::Object(tables));
    }
    Value::Object(units).to_string()
}

/// A running pymodbus server; killed on drop.
pub struct PymodbusServer {
    child: Child,
    pub port: u16,
    stderr: Arc<Mutex<String>>,
}

impl PymodbusServer {
    /// Starts pymodbus on 127.0.0.1:`port` and waits (with a deadline) until
    /// it listens. Panics with a clear message when pymodbus is missing.
    pub fn start(port: u16, map: &RegisterMap) -> PymodbusServer {
        require_pymodbus();
        let mut child = Command::new(PYTHON)
            .arg(SCRIPT)
            .arg(port.to_string())
            .arg(map_json(map))
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
            stderr,
        };
        let deadline = std::time::Instant::now() + READY_DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match ready_rx.recv_timeout(left) {
                Ok(line) if line.starts_with("READY") => return server,
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
