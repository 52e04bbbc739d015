//! Simulator -> daemon -> a real InfluxDB 1.6.7: every point the daemon
//! wrote to its local file is in InfluxDB exactly once, with the same value,
//! quality and nanosecond timestamp (the poll time), and every good value is
//! one the simulator actually served for that point.

mod support;

use gaswatch::sinks::file::config::FileSinkConfig;
use gaswatch::sinks::influxdb::config::InfluxConfig;
use gaswatch::topology::{self, RunOptions, live::LiveState};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::influxdb::InfluxServer;
use tokio_util::sync::CancellationToken;

/// (point, ts ns) -> (value if any, quality)
use support::influxdb::Points;

fn parse_file_lines(dir: &Path) -> Points {
    let mut out = Points::new();
    for e in std::fs::read_dir(dir).expect("dir") {
        let p = e.expect("entry").path();
        if p.extension().is_none_or(|x| x != "lp") {
            continue;
        }
        for line in std::fs::read_to_string(&p).expect("read").lines() {
            let mut parts = line.split(' ');
            let (series, fields, ts) = (
                parts.next().expect("series"),
                parts.next().expect("fields"),
                parts.next().expect("ts"),
            );
            let point = series
                .split(',')
                .find_map(|kv| kv.strip_prefix("point="))
                .expect("point tag")
                .to_string();
            let mut value = None;
            let mut quality = String::new();
            for f in fields.split(',') {
                if let Some(v) = f.strip_prefix("value=") {
                    value = Some(v.parse::<f64>().expect("float"));
                } else if let Some(q) = f.strip_prefix("quality=") {
                    quality = q.trim_matches('"').to_string();
                }
            }
            let prev = out.insert((point, ts.parse().expect("ts")), (value, quality));
            assert!(prev.is_none(), "duplicate line in the file sink: {line}");
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_polled_point_lands_in_a_real_influxdb_exactly_once() {
    let influx = InfluxServer::start_new().await;
    influx.create_database("gaswatch").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (handles, mut c) = support::station::city_gate(Duration::from_millis(250)).await;
    c.sinks.file = Some(FileSinkConfig {
        dir: dir.path().join("files"),
    });
    c.sinks.influxdb = Some(InfluxConfig {
        batch_size: 500,
        flush_interval: Duration::from_millis(200),
        gzip: true,
        timeout: Duration::from_secs(5),
        backfill_lines_per_s: 0,
        ..InfluxConfig::v1(&influx.url(), "gaswatch")
    });
    c.spool.dir = dir.path().join("spool");
    // Every point polled a good number of times; then the station stops
    // first and the daemon drains the rest.
    let enough = gaswatch::engine::EnginePlan::compile(&c).tags.len() as u64 * 20;
    let served = run_until_polled(c, handles, 20).await;

    let written = parse_file_lines(&dir.path().join("files"));
    assert!(written.len() as u64 >= enough, "{} lines", written.len());

    let (stored, rows) = influx.telemetry_points("gaswatch").await;
    assert_eq!(rows, stored.len(), "duplicate in InfluxDB");
    assert_eq!(
        stored.len(),
        written.len(),
        "InfluxDB holds exactly what the daemon wrote to its file"
    );
    for (k, w) in &written {
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

    // Every good value is one the simulator served for that point.
    let mut served_by_point: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for s in &served {
        served_by_point
            .entry(s.point.as_str())
            .or_default()
            .push(s.value);
    }
    let mut good = 0;
    for ((point, _), (value, quality)) in &written {
        if quality != "good" {
            continue;
        }
        good += 1;
        let v = value.expect("good has a value");
        let candidates = served_by_point
            .get(point.as_str())
            .unwrap_or_else(|| panic!("simulator never served {point}"));
        assert!(
            candidates
                .iter()
                .any(|c| (c - v).abs() <= 1e-6 * c.abs().max(1.0)),
            "{point} = {v} was never served by the simulator"
        );
    }
    assert!(good as u64 >= enough);
}

/// The pollers start before the daemon's HTTP endpoint, spools, sinks,
/// journal and router (start-up to first poll); what they read meanwhile
/// waits in the engine channel. So the first value the simulator served for
/// each point (the daemon's first poll, made while it was still starting)
/// is that point's first line in the file sink.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_poll_made_during_start_up_reaches_the_sink() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (handles, mut c) = support::station::city_gate(Duration::from_millis(250)).await;
    c.sinks.file = Some(FileSinkConfig {
        dir: dir.path().join("files"),
    });
    c.spool.dir = dir.path().join("spool");
    let served = run_until_polled(c, handles, 3).await;

    let mut first_served: BTreeMap<&str, f64> = BTreeMap::new();
    for s in &served {
        first_served.entry(s.point.as_str()).or_insert(s.value);
    }
    assert!(!first_served.is_empty(), "the simulator served nothing");
    let written = parse_file_lines(&dir.path().join("files"));
    // (point, ts) keys: the first entry of a point is its earliest line.
    let mut first_written: BTreeMap<&str, &(Option<f64>, String)> = BTreeMap::new();
    for ((point, _), v) in &written {
        first_written.entry(point.as_str()).or_insert(v);
    }
    let mut compared = 0;
    for (point, served) in &first_served {
        let (value, quality) = first_written
            .get(point)
            .unwrap_or_else(|| panic!("{point}: served, never written"));
        if quality != "good" {
            continue;
        }
        let v = value.expect("good has a value");
        assert!(
            (v - served).abs() <= 1e-6 * served.abs().max(1.0),
            "{point}: first line {v}, first value served {served}: the first poll was lost"
        );
        compared += 1;
    }
    assert!(compared > 0, "no good first sample to compare");
}

/// Runs the daemon on `c` until every point was sampled about `times`
/// times (counted by the live view), stops the simulator, then the daemon
/// (a drain); returns what the simulator served.
async fn run_until_polled(
    c: gaswatch::config::Config,
    handles: std::collections::BTreeMap<gaswatch_sim::Endpoint, gaswatch_sim::SimHandle>,
    times: u64,
) -> Vec<gaswatch_sim::Served> {
    let plan = gaswatch::engine::EnginePlan::compile(&c);
    let live = Arc::new(Mutex::new(LiveState::new(&plan)));
    let cancel = CancellationToken::new();
    let daemon = tokio::spawn(topology::run(
        c,
        RunOptions {
            live: Some(live.clone()),
            ..Default::default()
        },
        cancel.clone(),
    ));
    let enough = plan.tags.len() as u64 * times;
    assert!(
        support::wait_until_async(Duration::from_secs(30), || async {
            live.lock().map(|s| s.samples >= enough).unwrap_or(false)
        })
        .await,
        "too few samples"
    );
    let served: Vec<gaswatch_sim::Served> = handles.values().flat_map(|h| h.served()).collect();
    for (_, h) in handles {
        h.stop().await;
    }
    cancel.cancel();
    daemon.await.expect("join").expect("daemon");
    served
}
