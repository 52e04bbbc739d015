//! Test support shared by the integration tests: free ports, waiting for a
//! condition with a deadline, and harnesses that start real servers
//! (InfluxDB 1.6.7, mosquitto, a pymodbus server) on 127.0.0.1 in temp dirs
//! and stop them on drop, and the Modbus poller + engine runner (`modbus`). Each integration test file uses `mod support;`.
#![allow(dead_code)]

pub mod daemon;
pub mod influxdb;
pub mod modbus;
pub mod mosquitto;
pub mod pki;
pub mod pymodbus;
pub mod station;

use std::net::TcpListener;
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1 (bound, then released).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local_addr").port()
}

/// Polls `cond` until it returns true or `deadline` passes; returns whether it held.
pub fn wait_until(deadline: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + deadline;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Async version of [`wait_until`].
pub async fn wait_until_async<F, Fut>(deadline: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = Instant::now() + deadline;
    loop {
        if cond().await {
            return true;
        }
        if Instant::now() > end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Finds a program on PATH or in the usual sbin folders.
pub fn find_program(name: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(
            ["/usr/sbin", "/usr/bin", "/sbin", "/usr/local/bin"]
                .iter()
                .map(Into::into),
        )
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// `gaswatch replay -c config csv --out-dir out --influx-url url
/// --influx-db db` (the real binary); asserts it succeeded and returns its
/// standard output.
pub fn replay_to_influx(
    config: &std::path::Path,
    csv: &std::path::Path,
    out_dir: &std::path::Path,
    url: &str,
    db: &str,
) -> String {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_gaswatch"))
        .args(["replay", "--no-progress", "-c"])
        .arg(config)
        .arg(csv)
        .arg("--out-dir")
        .arg(out_dir)
        .args(["--influx-url", url, "--influx-db", db])
        .output()
        .expect("run gaswatch replay");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    stdout
}
