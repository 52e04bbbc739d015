//! Opt-in stage timestamps of alarm events on their way to the MQTT broker,
//! so a latency benchmark can tell where the time goes (the poll timestamp
//! is in the event itself; the subscriber's receive time is the bench's).
//!
//! Off unless the environment variable `GASWATCH_ALARM_TRACE` names a file
//! when the first event is marked (read once). Off, [`enabled`] is one
//! atomic load and a branch: no clock read, no lock, no allocation. On,
//! each mark appends `<stage> <seq> <unix ns>\n` to a buffer in memory,
//! written to the file every 64 KiB and at [`flush`] (the daemon calls it
//! when it stops), so no write sits on the measured path.
//!
//! Stages, in path order (`seq` is the event's sequence number):
//! `taken` the engine task starts processing the input that raised it,
//! `routed` its records are in the MQTT spool (handed to the kernel) and the
//! publisher is notified, `handed` the publisher gave it to the MQTT client
//! (`try_publish`), `written` the client wrote the PUBLISH to the socket.

use std::io::Write as _;
use std::sync::{Mutex, OnceLock};

/// The environment variable naming the trace file.
pub const ENV: &str = "GASWATCH_ALARM_TRACE";

/// Where on its path an alarm event is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Taken,
    Routed,
    Handed,
    Written,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Taken => "taken",
            Stage::Routed => "routed",
            Stage::Handed => "handed",
            Stage::Written => "written",
        }
    }
}

struct Trace {
    file: std::fs::File,
    buf: Vec<u8>,
}

static TRACE: OnceLock<Option<Mutex<Trace>>> = OnceLock::new();

fn init() -> Option<Mutex<Trace>> {
    let path = std::env::var_os(ENV).filter(|p| !p.is_empty())?;
    match std::fs::File::create(&path) {
        Ok(file) => Some(Mutex::new(Trace {
            file,
            buf: Vec::with_capacity(1 << 16),
        })),
        Err(error) => {
            tracing::warn!(path = %std::path::Path::new(&path).display(), %error, "Cannot create the alarm trace file; tracing off.");
            None
        }
    }
}

/// Whether stage marks are recorded.
#[inline]
pub fn enabled() -> bool {
    TRACE.get_or_init(init).is_some()
}

/// Wall-clock time in Unix nanoseconds (the clock of the poll timestamps).
pub fn now_ns() -> i64 {
    crate::model::Timestamp::now().nanos()
}

/// Records that event `seq` reached `stage` at `at_ns`.
pub fn mark(stage: Stage, seq: u64, at_ns: i64) {
    let Some(Some(t)) = TRACE.get() else { return };
    let Ok(mut t) = t.lock() else { return };
    let _ = writeln!(t.buf, "{} {seq} {at_ns}", stage.as_str());
    if t.buf.len() >= 1 << 16 {
        let Trace { file, buf } = &mut *t;
        let _ = file.write_all(buf);
        buf.clear();
    }
}

/// Writes what is buffered to the file.
pub fn flush() {
    let Some(Some(t)) = TRACE.get() else { return };
    let Ok(mut t) = t.lock() else { return };
    let Trace { file, buf } = &mut *t;
    let _ = file.write_all(buf);
    let _ = file.flush();
    buf.clear();
}

/// Extracts `"seq":<n>` from an alarm event's JSON payload (trace only).
pub fn seq_of(payload: &[u8]) -> Option<u64> {
    let key = b"\"seq\":";
    let i = payload.windows(key.len()).position(|w| w == key)? + key.len();
    let digits = payload[i..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count();
    std::str::from_utf8(&payload[i..i + digits])
        .ok()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seq_is_read_from_an_event_payload() {
        assert_eq!(
            seq_of(br#"{"v":1,"ts_ns":5,"seq":17,"message":"x"}"#),
            Some(17)
        );
        assert_eq!(seq_of(br#"{"v":1}"#), None);
    }
}
