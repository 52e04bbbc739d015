//! Enron flow-computer hourly archives, end to end: the simulator's flow
//! computer (Enron mode, register numbers from 1) keeps hourly records; a
//! scenario takes it off the wire for four simulated hours (3600x time),
//! and later the daemon itself is down for a few hours. After each outage
//! the daemon reads every missed record from the last one it stored, so
//! every hourly record reaches a real InfluxDB 1.6.7 exactly once, at its
//! hour end, with exactly the values the simulator archived.

mod support;

use gaswatch::config::Config;
use gaswatch::sinks::file::config::FileSinkConfig;
use gaswatch::sinks::influxdb::config::InfluxConfig;
use gaswatch::topology::{self, RunOptions};
use gaswatch_sim::driver::{DEFAULT_TICK, ScenarioDriver};
use gaswatch_sim::scenario::{Runner, Scenario};
use gaswatch_sim::{ArchiveRecord, SimControl, SimOptions, Station, StationConfig};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use support::influxdb::InfluxServer;
use support::wait_until_async;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// An Enron flow computer numbering registers from 1 (floats at 7001..,
/// archive header at 701, records from 711) and an outlet PLC on the same
/// gateway.
const STATION: &str = r#"
[station]
id = "arch"
kind = "city_gate"

[[devices]]
id = "fc-in"
host = "127.0.0.1"
port = 502
unit_id = 1
enron = true
address_base = 1
poll_interval = "200ms"
timeout = "150ms"
pause_after_failed_cycles = 2
pause_for = "300ms"

[devices.archive]
meter = "IN1"
address = 701
records_address = 711
capacity = 48
interval = "250ms"

[[devices.points]]
name = "FT_IN1"
register = "holding"
address = 7001
type = "f32"
unit = "Sm3/h"

[[devices.points]]
name = "PT_IN1"
register = "holding"
address = 7002
type = "f32"
unit = "kPa"

[[devices.points]]
name = "TT_IN1"
register = "holding"
address = 7003
type = "f32"
unit = "degC"

[[devices]]
id = "plc-out"
host = "127.0.0.1"
port = 502
unit_id = 2
poll_interval = "200ms"
timeout = "150ms"

[[devices.points]]
name = "FT_OUT1"
register = "input"
address = 100
type = "f32"
order = "CDAB"
unit = "Sm3/h"

[[meters]]
name = "IN1"
role = "inlet"
flow = "FT_IN1"
pressure = "PT_IN1"
temperature = "TT_IN1"

[[meters]]
name = "OUT1"
role = "outlet"
flow = "FT_OUT1"

[sinks.file]
dir = "replaced-by-the-test"
"#;

/// One simulated hour per wall second; the flow computer is off the wire
/// from 3 h to 7 h.
const SCENARIO: &str = r#"
seed = 5
speed = 3600.0

[[events]]
kind = "comm_outage"
at = "3h"
duration = "4h"
device = "fc-in"
"#;

const DEADLINE: Duration = Duration::from_secs(60);
const HOUR_NS: i64 = 3_600_000_000_000;

/// One `archive_hourly` line of the file sink: record index -> (hour end ns,
/// base volume, flowing volume, pressure, temperature).
type Lines = Vec<(u32, i64, [f64; 4])>;

fn archive_lines(dir: &Path) -> Lines {
    let mut out = Lines::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.extension().is_none_or(|x| x != "lp") {
            continue;
        }
        for line in std::fs::read_to_string(&p).unwrap_or_default().lines() {
            if !line.starts_with("archive_hourly,") {
                continue;
            }
            let mut parts = line.split(' ');
            let (series, fields, ts) = (
                parts.next().expect("series"),
                parts.next().expect("fields"),
                parts.next().expect("ts"),
            );
            assert!(
                series.contains("device=fc-in") && series.contains("meter=IN1"),
                "{line}"
            );
            let field = |k: &str| -> f64 {
                fields
                    .split(',')
                    .find_map(|kv| kv.strip_prefix(&format!("{k}=")))
                    .unwrap_or_else(|| panic!("{k} in {line}"))
                    .trim_end_matches('i')
                    .parse()
                    .expect("number")
            };
            assert!(fields.contains("quality=\"good\""), "{line}");
            out.push((
                field("record") as u32,
                ts.parse().expect("ts"),
                [
                    field("base_volume_sm3"),
                    field("flowing_volume_m3"),
                    field("pressure_kpa"),
                    field("temperature_c"),
                ],
            ));
        }
    }
    out
}

fn values(r: &ArchiveRecord) -> [f64; 4] {
    [
        r.base_volume_sm3,
        r.flowing_volume_m3,
        r.pressure_kpa,
        r.temperature_c,
    ]
}

fn daemon_config(port: u16, influx: &InfluxServer, spool: &Path, files: PathBuf) -> Config {
    let text = STATION.replace("port = 502", &format!("port = {port}"));
    let mut c = Config::from_str_named(&text, Path::new("archive-station.toml"))
        .unwrap_or_else(|e| panic!("{e}"));
    c.sinks.file = Some(FileSinkConfig { dir: files });
    c.sinks.influxdb = Some(InfluxConfig {
        batch_size: 500,
        flush_interval: Duration::from_millis(100),
        gzip: true,
        timeout: Duration::from_secs(5),
        backfill_lines_per_s: 0,
        ..InfluxConfig::v1(&influx.url(), "gaswatch")
    });
    c.spool.dir = spool.to_path_buf();
    c.spool.flush_interval = Duration::from_millis(100);
    c
}

fn start_daemon(c: Config) -> (CancellationToken, JoinHandle<()>) {
    let cancel = CancellationToken::new();
    let task = tokio::spawn({
        let cancel = cancel.clone();
        async move {
            topology::run(c, RunOptions::default(), cancel)
                .await
                .expect("daemon runs")
        }
    });
    (cancel, task)
}

fn sim_hours(control: &SimControl) -> f64 {
    control.with_station(|s| s.sim_time().as_secs_f64() / 3600.0)
}

async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    assert!(
        wait_until_async(DEADLINE, || {
            let ok = cond();
            async move { ok }
        })
        .await,
        "timed out waiting for: {what}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hourly_archive_is_backfilled_after_outages_exactly_once() {
    let influx = InfluxServer::start_new().await;
    influx.create_database("gaswatch").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = dir.path().join("spool");

    // The simulator with the scenario running on it at 3600x.
    let station_cfg = StationConfig::from_toml_str(STATION).expect("sim config");
    let scenario = Scenario::from_toml_str(SCENARIO, "outage.toml", &station_cfg).expect("sc");
    let opts = SimOptions {
        seed: scenario.seed,
        speed: scenario.speed,
        ..SimOptions::default()
    };
    let clock0 = opts.clock_start_s;
    let station = Station::from_config(station_cfg.clone(), &opts).expect("station");
    let handles = gaswatch_sim::serve_all(station, |_| ([127, 0, 0, 1], 0).into())
        .await
        .expect("serve");
    let control = SimControl::of(handles.values()).expect("control");
    let port = handles
        .values()
        .next()
        .expect("one endpoint")
        .local_addr()
        .port();
    let driver = ScenarioDriver::start(
        control.clone(),
        Runner::new(scenario, &station_cfg),
        None,
        DEFAULT_TICK,
    );

    // Run 1: through the comm outage (3 h to 7 h) and two hours after it.
    let files1 = dir.path().join("files1");
    let (cancel, daemon) = start_daemon(daemon_config(port, &influx, &spool, files1.clone()));
    eventually("run 1 stores record 9 (two hours after the outage)", || {
        archive_lines(&files1).iter().any(|l| l.0 >= 9)
    })
    .await;
    cancel.cancel();
    daemon.await.expect("daemon 1 stops");
    let mark_path = spool.join("archive").join("fc-in.json");
    let mark: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&mark_path).expect("archive mark"))
            .expect("mark JSON");
    let k1 = mark["last_index"].as_u64().expect("last_index") as u32;
    let run1 = archive_lines(&files1);
    let idx1: Vec<u32> = run1.iter().map(|l| l.0).collect();
    assert_eq!(
        idx1,
        (1..=k1).collect::<Vec<_>>(),
        "run 1 wrote every record up to the mark once, in order"
    );

    // The outage was real: the flow computer's points went bad or stale.
    let telemetry: String = std::fs::read_dir(&files1)
        .expect("files")
        .flatten()
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect();
    assert!(
        telemetry
            .lines()
            .any(|l| l.starts_with("telemetry,device=fc-in")
                && (l.contains("reason=\"timeout\"") || l.contains("reason=\"device_paused\""))),
        "the comm outage never reached the daemon"
    );

    // The daemon is down for at least three simulated hours.
    let down_until = sim_hours(&control) + 3.0;
    eventually("three simulated hours pass", || {
        sim_hours(&control) >= down_until
    })
    .await;

    // Run 2 starts from the mark on disk, not from record 1.
    let files2 = dir.path().join("files2");
    let (cancel, daemon) = start_daemon(daemon_config(port, &influx, &spool, files2.clone()));
    eventually("run 2 stores four records after the mark", || {
        archive_lines(&files2).iter().any(|l| l.0 >= k1 + 4)
    })
    .await;
    cancel.cancel();
    daemon.await.expect("daemon 2 stops");
    driver.stop().await.expect("driver");
    let records = control
        .with_station(|s| s.archive_records("fc-in"))
        .expect("archive");
    for (_, h) in handles {
        h.stop().await;
    }
    let run2 = archive_lines(&files2);
    let idx2: Vec<u32> = run2.iter().map(|l| l.0).collect();
    let k2 = *idx2.last().expect("run 2 wrote records");
    assert_eq!(
        idx2,
        (k1 + 1..=k2).collect::<Vec<_>>(),
        "run 2 continued after the mark with every record once"
    );

    // Every record in the sink matches the simulator's archive exactly.
    let by_index: BTreeMap<u32, &ArchiveRecord> = records.iter().map(|r| (r.index, r)).collect();
    for (index, ts, v) in run1.iter().chain(&run2) {
        let r = by_index
            .get(index)
            .unwrap_or_else(|| panic!("record {index} is not in the simulator's archive"));
        assert_eq!(*ts, r.hour_end_s * 1_000_000_000, "record {index} time");
        assert_eq!(*ts, (clock0 + i64::from(*index) * 3600) * 1_000_000_000);
        assert_eq!(*v, values(r), "record {index} values");
    }

    // InfluxDB: records 1..=k2, one row each, at their hour ends, same values.
    let q = influx
        .query(
            "gaswatch",
            "SELECT record, base_volume_sm3, flowing_volume_m3, pressure_kpa, temperature_c FROM archive_hourly",
        )
        .await;
    let rows = q["results"][0]["series"][0]["values"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut seen = Vec::new();
    for row in &rows {
        let ts = row[0].as_i64().expect("time");
        let index = row[1].as_u64().expect("record") as u32;
        let r = by_index.get(&index).expect("known record");
        assert_eq!(ts, r.hour_end_s * 1_000_000_000);
        let got: Vec<f64> = (2..6).map(|i| row[i].as_f64().expect("value")).collect();
        assert_eq!(got, values(r), "record {index} in InfluxDB");
        seen.push(index);
    }
    assert_eq!(
        seen,
        (1..=k2).collect::<Vec<_>>(),
        "every hourly record in InfluxDB exactly once"
    );
    // The hours covered by both outages are among them.
    assert!(k2 as i64 * HOUR_NS > 7 * HOUR_NS && k1 >= 9);
}

/// `[devices.archive]` mistakes are reported with their keys, and the
/// simulator refuses the same mistakes in its own reading of the file.
#[test]
fn archive_config_is_validated_with_its_keys() {
    let with = |archive: &str, device_extra: &str| {
        STATION
            .replace(
                "[devices.archive]\nmeter = \"IN1\"\naddress = 701\nrecords_address = 711\ncapacity = 48\ninterval = \"250ms\"\n",
                &format!("[devices.archive]\n{archive}\n"),
            )
            .replace("enron = true\n", &format!("enron = true\n{device_extra}\n"))
    };
    let err = |text: String| match Config::from_str_named(&text, Path::new("bad.toml")) {
        Ok(_) => panic!("expected an error for\n{text}"),
        Err(e) => e.to_string(),
    };
    let e = err(with("meter = \"NOPE\"", ""));
    assert!(e.contains("devices[0].archive.meter"), "{e}");
    let e = err(with("meter = \"IN1\"\ncapacity = 0", ""));
    assert!(e.contains("devices[0].archive.capacity"), "{e}");
    // The ring (12 x 840 words from 7000) runs over the points at 7001..
    let e = err(with("meter = \"IN1\"\nrecords_address = 6990", ""));
    assert!(
        e.contains("devices[0].archive") && e.contains("FT_IN1"),
        "{e}"
    );
    let e = err(with(
        "meter = \"IN1\"\naddress = 701\nrecords_address = 703",
        "",
    ));
    assert!(e.contains("devices[0].archive.records_address"), "{e}");
    let e = err(with("meter = \"IN1\"", "max_registers_per_read = 10"));
    assert!(e.contains("12 registers"), "{e}");
    let e = err(with("meter = \"IN1\"\naddress = 0", ""));
    assert!(e.contains("devices[0].archive.address"), "{e}");
    // Defaults: header 700, ring from 10000, 840 records, every minute.
    let c = Config::from_str_named(&with("meter = \"IN1\"", ""), Path::new("ok.toml"))
        .unwrap_or_else(|e| panic!("{e}"));
    let a = c.devices[0].archive.as_ref().expect("archive");
    assert_eq!(
        (a.address, a.records_address, a.capacity, a.interval),
        (700, 10_000, 840, Duration::from_secs(60))
    );
    let sim = |text: String| match StationConfig::from_toml_str(&text) {
        Ok(_) => panic!("the simulator should refuse\n{text}"),
        Err(e) => e.to_string(),
    };
    let e = sim(with("meter = \"NOPE\"", ""));
    assert!(e.contains("devices[0].archive.meter"), "{e}");
    let e = sim(with("meter = \"IN1\"\nrecords_address = 6990", ""));
    assert!(e.contains("devices[0].archive"), "{e}");
}
