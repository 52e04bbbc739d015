//! The real `gaswatch` binary as a child process: `run -c CONFIG` with JSON
//! logs appended to a file, stopped with SIGTERM (drain) or SIGKILL (crash),
//! killed on drop; and `gaswatch alarms history --json` to read the journal
//! the way an operator does.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

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

    /// `kill -9`: a crash, nothing drained.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait (up to 60 s) for a clean exit; returns the status.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut c = self.child.take().expect("daemon running");
        let st = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status()
            .expect("kill -TERM");
        assert!(st.success(), "kill -TERM failed");
        let mut status = None;
        let exited = super::wait_until(Duration::from_secs(60), || {
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
