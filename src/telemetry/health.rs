//! The daemon's own state for `/health`: per device (connected, last good
//! read, last error kind) and per sink (reachable, spooling or failing, spool
//! depth). Readiness = a config is loaded, the engine task runs, and every
//! sink is reachable or at least spooling (data is kept on disk).
//!
//! Invariants: holds no secret (no passwords, tokens, URLs with credentials:
//! only ids, host:port of devices and the sink names); cheap to update (the
//! engine task pushes device state once per tick, not per sample).

use crate::buffer::{RecordClass, SharedSpool};
use crate::engine::EnginePlan;
use crate::model::{Input, Timestamp};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};

/// Whether each remote sink could deliver on its last attempt, by sink name.
/// Process-wide so the sink tasks set it without new parameters.
static SINK_REACHABLE: OnceLock<Mutex<BTreeMap<String, bool>>> = OnceLock::new();

fn reachable_map() -> std::sync::MutexGuard<'static, BTreeMap<String, bool>> {
    SINK_REACHABLE
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

/// Called by a sink task after each delivery attempt or connection change.
pub fn set_sink_reachable(sink: &str, reachable: bool) {
    metrics::gauge!("gaswatch_sink_reachable", "sink" => sink.to_string()).set(if reachable {
        1.0
    } else {
        0.0
    });
    let mut m = reachable_map();
    match m.get_mut(sink) {
        Some(v) => *v = reachable,
        None => {
            m.insert(sink.to_string(), reachable);
        }
    }
}

fn sink_reachable(sink: &str) -> Option<bool> {
    reachable_map().get(sink).copied()
}

/// One device as `/health` shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DeviceHealth {
    pub id: String,
    /// `host:port` of the Modbus endpoint (the path of a serial port).
    pub endpoint: String,
    /// `None` until the first reply or failure.
    pub connected: Option<bool>,
    /// RFC 3339 time of the last good read, `None` before the first.
    pub last_good_read: Option<String>,
    /// Kind of the last failure since the last good read (`timeout`, `transport`, ...).
    pub last_error: Option<String>,
}

/// One sink as `/health` shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SinkHealth {
    pub name: String,
    /// `reachable`, `spooling` (remote down, data kept on disk), `starting`
    /// (no attempt yet) or `failing` (cannot store output).
    pub state: &'static str,
    /// Records waiting in the spool per class (remote sinks only).
    pub spool_records: BTreeMap<&'static str, u64>,
    pub spool_bytes: u64,
    /// Telemetry records dropped because the spool was full, since start.
    pub spool_dropped: u64,
}

/// The `/health` body.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct HealthReport {
    pub status: &'static str,
    pub ready: bool,
    pub station: String,
    pub version: &'static str,
    pub commit: &'static str,
    /// 1 for the config read at start, +1 per applied reload.
    pub config_generation: u64,
    pub config_loaded_at: String,
    pub devices: Vec<DeviceHealth>,
    pub sinks: Vec<SinkHealth>,
}

struct SinkEntry {
    name: String,
    spool: Option<Arc<SharedSpool>>,
}

struct Inner {
    station: String,
    generation: u64,
    loaded_at: Timestamp,
    running: bool,
    /// Sinks that could not store the last batch routed to them.
    failing: Vec<String>,
    devices: Vec<DeviceHealth>,
    sinks: Vec<SinkEntry>,
}

/// Shared between the engine task (writer) and the HTTP server (reader).
pub struct Health {
    inner: Mutex<Inner>,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            inner: Mutex::new(Inner {
                station: String::new(),
                generation: 0,
                loaded_at: Timestamp(0),
                running: false,
                failing: Vec::new(),
                devices: Vec::new(),
                sinks: Vec::new(),
            }),
        }
    }
}

impl Health {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A config was (re)loaded: new device list, a new generation.
    pub fn config_loaded(&self, plan: &EnginePlan, now: Timestamp) {
        let mut i = self.lock();
        i.station = plan.station_id.clone();
        i.generation += 1;
        i.loaded_at = now;
        i.devices = plan
            .devices
            .iter()
            .map(|d| DeviceHealth {
                id: d.id.clone(),
                // host:port, [v6]:port, or the serial port's path.
                endpoint: d.link.to_string(),
                connected: None,
                last_good_read: None,
                last_error: None,
            })
            .collect();
    }

    /// The sinks now in use (replaced on a reload that changes them).
    pub fn set_sinks(&self, sinks: Vec<(String, Option<Arc<SharedSpool>>)>) {
        self.lock().sinks = sinks
            .into_iter()
            .map(|(name, spool)| SinkEntry { name, spool })
            .collect();
    }

    pub fn set_running(&self, running: bool) {
        self.lock().running = running;
    }

    /// The sinks that could not store the last batch of engine output
    /// (empty when every sink took it).
    pub fn set_failing(&self, sinks: &[String]) {
        let mut i = self.lock();
        if i.failing != sinks {
            i.failing = sinks.to_vec();
        }
    }

    /// Copies the engine task's device tracker.
    pub fn update_devices(&self, tracker: &DeviceTracker) {
        let mut i = self.lock();
        for (d, t) in i.devices.iter_mut().zip(&tracker.devices) {
            d.connected = t.connected;
            d.last_good_read = t.last_good.map(Timestamp::to_rfc3339);
            d.last_error = t.last_error.map(str::to_string);
        }
    }

    /// The current report. Locks each spool briefly for its depth.
    pub fn report(&self) -> HealthReport {
        let i = self.lock();
        let sinks: Vec<SinkHealth> = i
            .sinks
            .iter()
            .map(|s| {
                let mut spool_records = BTreeMap::new();
                let (mut bytes, mut dropped) = (0, 0);
                if let Some(sp) = &s.spool {
                    let g = sp.lock();
                    for c in RecordClass::ALL {
                        let st = g.stats(c);
                        spool_records.insert(c.as_str(), st.records);
                        bytes += st.bytes;
                        dropped += st.dropped;
                    }
                }
                let state = if i.failing.contains(&s.name) {
                    "failing"
                } else if s.spool.is_none() {
                    // The file sink writes synchronously; a failure shows as failing.
                    "reachable"
                } else {
                    match sink_reachable(&s.name) {
                        Some(true) => "reachable",
                        Some(false) => "spooling",
                        None => "starting",
                    }
                };
                SinkHealth {
                    name: s.name.clone(),
                    state,
                    spool_records,
                    spool_bytes: bytes,
                    spool_dropped: dropped,
                }
            })
            .collect();
        let ready = i.running
            && i.generation > 0
            && sinks
                .iter()
                .all(|s| matches!(s.state, "reachable" | "spooling" | "starting"));
        let b = crate::telemetry::build::info();
        HealthReport {
            status: if ready { "ready" } else { "not_ready" },
            ready,
            station: i.station.clone(),
            version: b.version,
            commit: b.commit,
            config_generation: i.generation,
            config_loaded_at: i.loaded_at.to_rfc3339(),
            devices: i.devices.clone(),
            sinks,
        }
    }
}

/// Per-device state kept by the engine task from the inputs it sees.
#[derive(Debug, Clone, Default)]
pub struct DeviceTracker {
    devices: Vec<DeviceState>,
}

#[derive(Debug, Clone, Copy, Default)]
struct DeviceState {
    connected: Option<bool>,
    last_good: Option<Timestamp>,
    last_error: Option<&'static str>,
    /// Time of the last input of any kind about the device.
    last_seen: Option<Timestamp>,
    /// Silence after which the device counts as not connected, ns.
    silent_after_ns: i64,
}

impl DeviceTracker {
    pub fn new(plan: &EnginePlan) -> Self {
        DeviceTracker {
            devices: plan
                .devices
                .iter()
                .map(|d| {
                    // Inputs come at least once per cycle of its fastest block.
                    let every = d.blocks.iter().map(|b| b.every.max(1)).min().unwrap_or(1);
                    let cycle = d.poll_interval.saturating_mul(every);
                    let silent = cycle.saturating_mul(3).saturating_add(d.timeout);
                    DeviceState {
                        silent_after_ns: i64::try_from(silent.as_nanos()).unwrap_or(i64::MAX),
                        ..DeviceState::default()
                    }
                })
                .collect(),
        }
    }

    /// A device not heard of for three of its cycles plus its timeout is
    /// not connected (`no_response`). The poller sends nothing while it
    /// cannot connect, so without this a device whose endpoint went away
    /// after a good read would show connected for ever (seen for the
    /// devices sharing an endpoint with the one whose read failed).
    pub fn tick(&mut self, now: Timestamp) {
        for d in &mut self.devices {
            if let Some(seen) = d.last_seen
                && d.connected == Some(true)
                && now.0.saturating_sub(seen.0) > d.silent_after_ns
            {
                d.connected = Some(false);
                d.last_error = Some("no_response");
            }
        }
    }

    /// Notes one input: a reply means connected; a timeout or transport
    /// failure means not; an exception reply still means connected.
    pub fn observe(&mut self, input: &Input) {
        match input {
            Input::Registers { device, ts, .. } | Input::RegistersPart { device, ts, .. } => {
                if let Some(d) = self.devices.get_mut(device.0 as usize) {
                    d.connected = Some(true);
                    d.last_good = Some(*ts);
                    d.last_seen = Some(*ts);
                    d.last_error = None;
                }
            }
            Input::ReadFailed {
                device, error, ts, ..
            }
            | Input::ReadFailedPart {
                device, error, ts, ..
            } => {
                if let Some(d) = self.devices.get_mut(device.0 as usize) {
                    d.last_seen = Some(*ts);
                    use crate::model::ReadError;
                    d.connected = Some(matches!(
                        error,
                        ReadError::Exception(_) | ReadError::Malformed
                    ));
                    d.last_error = Some(match error {
                        ReadError::Exception(_) => "exception",
                        ReadError::Timeout => "timeout",
                        ReadError::Transport => "transport",
                        ReadError::Malformed => "malformed",
                    });
                }
            }
            // A unit paused after repeated failures (Modbus poller).
            Input::DevicePaused { device, .. } => {
                if let Some(d) = self.devices.get_mut(device.0 as usize) {
                    d.connected = Some(false);
                    d.last_error = Some("paused");
                }
            }
            Input::Values { .. }
            | Input::Command(_)
            | Input::Receipt(_)
            | Input::Archive { .. } => {}
        }
    }
}
