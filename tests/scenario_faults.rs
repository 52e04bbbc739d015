//! The scenario's Modbus faults on the wire, against the daemon: the
//! simulator serves the city gate and a scenario driver
//! (`simulator/scenarios/wire-faults.toml`) puts every fault kind on one
//! device at a time (slow responses, exception 04, late replies that would
//! desynchronise transaction ids, dropped connections, a communication
//! outage). For each, the test checks what gaswatch made of it: the quality
//! and reason of the device's points, the error metrics by kind, that the
//! other units on the same connection kept reading, that every good value
//! is one the simulator served (no late reply decoded as a fresh one), and
//! that the device reads good again after the fault ends.
//!
//! Times are compared only as an order against the ground truth's event
//! edges (a sample after the start, a good one after the end), never as
//! durations.

mod support;

use gaswatch::sinks::file::config::FileSinkConfig;
use gaswatch::topology::{self, RunOptions};
use gaswatch_sim::driver::{DEFAULT_TICK, ScenarioDriver};
use gaswatch_sim::scenario::{Runner, Scenario};
use gaswatch_sim::{SimControl, StationConfig};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const STATION: &str = include_str!("../config/city-gate.toml");
const SCENARIO: &str = include_str!("../simulator/scenarios/wire-faults.toml");

/// One telemetry line of the file sink.
#[derive(Debug, Clone)]
struct Line {
    device: String,
    point: String,
    ts: i64,
    value: Option<f64>,
    quality: String,
    reason: String,
}

fn telemetry(dir: &Path) -> Vec<Line> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        if e.path().extension().is_none_or(|x| x != "lp") {
            continue;
        }
        for l in std::fs::read_to_string(e.path())
            .unwrap_or_default()
            .lines()
        {
            if !l.starts_with("telemetry,") {
                continue;
            }
            let mut parts = l.split(' ');
            let (series, fields, ts) = (
                parts.next().unwrap_or_default(),
                parts.next().unwrap_or_default(),
                parts.next().unwrap_or_default(),
            );
            let tag = |k: &str| {
                series
                    .split(',')
                    .find_map(|kv| kv.strip_prefix(&format!("{k}=")))
                    .unwrap_or_default()
                    .to_string()
            };
            let field = |k: &str| {
                fields
                    .split(',')
                    .find_map(|kv| kv.strip_prefix(&format!("{k}=")))
                    .map(|v| v.trim_matches('"').to_string())
            };
            out.push(Line {
                device: tag("device"),
                point: tag("point"),
                ts: ts.parse().expect("ts"),
                value: field("value").and_then(|v| v.parse().ok()),
                quality: field("quality").unwrap_or_default(),
                reason: field("reason").unwrap_or_default(),
            });
        }
    }
    out.sort_by_key(|l| l.ts);
    out
}

/// `name{labels} value` of the process's metrics, summed over the series
/// whose labels contain every `(key, value)` in `want`.
fn metric(text: &str, name: &str, want: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, labels) = series.split_once('{').unwrap_or((series, ""));
            (n == name
                && want
                    .iter()
                    .all(|(k, v)| labels.contains(&format!("{k}=\"{v}\""))))
            .then(|| value.parse::<f64>().ok())
            .flatten()
        })
        .sum()
}

/// Start and end (ns, on the daemon's clock) of each truth event, by kind.
fn edges(truth: &str) -> BTreeMap<String, (i64, i64)> {
    let mut out: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for l in truth.lines() {
        let v: serde_json::Value = serde_json::from_str(l).expect("truth JSON");
        if v["type"] != "event" {
            continue;
        }
        let kind = v["kind"].as_str().expect("kind").to_string();
        let t = v["t_ns"].as_i64().expect("t_ns");
        let e = out.entry(kind).or_insert((i64::MAX, i64::MAX));
        if v["phase"] == "start" {
            e.0 = t;
        } else {
            e.1 = t;
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_fault_on_the_wire_is_seen_by_gaswatch_and_recovered_from() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (handles, mut c) = support::station::city_gate(Duration::from_millis(250)).await;
    for d in &mut c.devices {
        d.timeout = Duration::from_millis(500);
        d.pause_after_failed_cycles = 2;
        d.pause_for = Duration::from_secs(1);
    }
    let files = dir.path().join("files");
    c.sinks.file = Some(FileSinkConfig { dir: files.clone() });
    c.spool.dir = dir.path().join("spool");
    c.spool.flush_interval = Duration::from_millis(100);

    let station_cfg = StationConfig::from_toml_str(STATION).expect("station");
    let scenario =
        Scenario::from_toml_str(SCENARIO, "wire-faults.toml", &station_cfg).expect("scenario");
    let total = scenario
        .events
        .iter()
        .map(|e| e.at + e.duration.unwrap_or_default())
        .max()
        .expect("events");
    let control = SimControl::of(handles.values()).expect("control");
    let truth_path = dir.path().join("truth.jsonl");
    let truth: Box<dyn std::io::Write + Send> =
        Box::new(std::fs::File::create(&truth_path).expect("truth file"));

    let cancel = CancellationToken::new();
    let daemon = tokio::spawn(topology::run(c, RunOptions::default(), cancel.clone()));
    // Let the daemon read good data first.
    assert!(
        support::wait_until_async(Duration::from_secs(20), || {
            let n = telemetry(&files)
                .iter()
                .filter(|l| l.quality == "good")
                .count();
            async move { n >= 30 }
        })
        .await,
        "no good data before the scenario"
    );
    let sim0 = control.with_station(|s| s.sim_time().as_secs_f64());
    let driver = ScenarioDriver::start(
        control.clone(),
        Runner::new(scenario, &station_cfg),
        Some(truth),
        DEFAULT_TICK,
    );
    // Run the scenario to its end, then until every device read good after it.
    let end_sim = sim0 + total.as_secs_f64() + 0.5;
    assert!(
        support::wait_until_async(Duration::from_secs(120), || {
            let t = control.with_station(|s| s.sim_time().as_secs_f64());
            async move { t > end_sim }
        })
        .await,
        "the scenario did not run to its end"
    );
    driver.stop().await.expect("truth written");
    let truth = std::fs::read_to_string(&truth_path).expect("truth");
    let edges = edges(&truth);
    let last_end = edges.values().map(|e| e.1).max().expect("edges");
    assert!(
        support::wait_until_async(Duration::from_secs(30), || {
            let lines = telemetry(&files);
            let ok = ["fc-in", "plc-out", "rtu-out2"].iter().all(|d| {
                lines
                    .iter()
                    .any(|l| l.device == *d && l.ts > last_end && l.quality == "good")
            });
            async move { ok }
        })
        .await,
        "some device never read good after the last fault"
    );
    let metrics = gaswatch::telemetry::prom::render();
    let served: Vec<gaswatch_sim::Served> = handles.values().flat_map(|h| h.served()).collect();
    cancel.cancel();
    daemon.await.expect("join").expect("daemon");
    for (_, h) in handles {
        h.stop().await;
    }
    let lines = telemetry(&files);

    let of = |device: &str, from: i64, to: i64| -> Vec<&Line> {
        lines
            .iter()
            .filter(|l| l.device == device && l.ts >= from && l.ts < to)
            .collect()
    };
    let span = |kind: &str| -> (i64, i64) {
        let e = *edges
            .get(kind)
            .unwrap_or_else(|| panic!("no {kind} in the truth:\n{truth}"));
        assert!(e.0 < e.1, "{kind}: start and end in the truth");
        e
    };
    // Some reason among `reasons` appears on the device after the fault
    // starts; every point of it reads good after the fault ends; another
    // unit on the same connection reads good while the fault lasts.
    let check = |kind: &str, device: &str, reasons: &[&str]| {
        let (start, end) = span(kind);
        let during = of(device, start, end);
        assert!(
            during
                .iter()
                .any(|l| l.quality != "good" && reasons.contains(&l.reason.as_str())),
            "{kind} on {device}: no sample with {reasons:?} after the start: {during:?}"
        );
        let points: Vec<&str> = lines
            .iter()
            .filter(|l| l.device == device)
            .map(|l| l.point.as_str())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        for p in &points {
            assert!(
                lines
                    .iter()
                    .any(|l| l.point == *p && l.ts > end && l.quality == "good"),
                "{kind}: {p} never read good again after the end"
            );
        }
        let other = if device == "fc-in" {
            "rtu-out2"
        } else {
            "fc-in"
        };
        assert!(
            of(other, start, end).iter().any(|l| l.quality == "good"),
            "{kind} on {device}: {other} stopped reading on the shared connection"
        );
    };

    // Slow responses within the timeout: every sample stays good, and the
    // response-time histogram shows replies slower than 100 ms.
    let (start, end) = span("slow_response");
    let slow = of("fc-in", start, end);
    assert!(!slow.is_empty(), "fc-in not read while slow");
    assert!(
        slow.iter().all(|l| l.quality == "good"),
        "slow but in time must stay good: {slow:?}"
    );
    let dev = [("device", "fc-in")];
    let replies = metric(&metrics, "gaswatch_modbus_response_seconds_count", &dev);
    let fast = metric(
        &metrics,
        "gaswatch_modbus_response_seconds_bucket",
        &[("device", "fc-in"), ("le", "0.1")],
    );
    assert!(
        replies - fast >= 1.0,
        "no reply slower than 100 ms:\n{metrics}"
    );

    check("exception", "rtu-out2", &["exception_04_device_failure"]);
    assert!(
        metric(
            &metrics,
            "gaswatch_modbus_exceptions_total",
            &[
                ("device", "rtu-out2"),
                ("exception", "exception_04_device_failure")
            ]
        ) >= 1.0
    );
    check("late_reply", "plc-out", &["timeout"]);
    check("dropped_connection", "fc-in", &["transport"]);
    check("comm_outage", "plc-out", &["timeout", "device_paused"]);
    let (start, end) = span("comm_outage");
    assert!(
        of("plc-out", start, end + 1)
            .iter()
            .any(|l| l.quality == "stale" && l.reason == "device_paused"),
        "the dead unit was never paused"
    );

    // Errors by kind, per device.
    let errors = |device: &str, kind: &str| {
        metric(
            &metrics,
            "gaswatch_modbus_errors_total",
            &[("device", device), ("error_type", kind)],
        )
    };
    assert!(errors("rtu-out2", "exception") >= 1.0, "{metrics}");
    assert!(errors("plc-out", "timeout") >= 2.0, "{metrics}");
    assert!(errors("fc-in", "transport") >= 1.0, "{metrics}");
    assert!(
        metric(
            &metrics,
            "gaswatch_modbus_pauses_total",
            &[("device", "plc-out")]
        ) >= 1.0,
        "{metrics}"
    );
    // Late replies never desynchronise: the connection was re-opened, and
    // every good value decoded is one the simulator served for that point.
    assert!(
        metric(
            &metrics,
            "gaswatch_modbus_connects_total",
            &[("result", "ok")]
        ) >= 3.0,
        "{metrics}"
    );
    for l in lines.iter().filter(|l| l.quality == "good") {
        let v = l.value.expect("good samples carry a value");
        assert!(
            served.iter().any(|s| s.point == l.point && s.value == v),
            "{} decoded {v}, a value the simulator never served for it",
            l.point
        );
    }
}
