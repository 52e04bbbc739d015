//! The InfluxDB writer against a real InfluxDB 1.6.7: exact round trip of
//! encoded samples/alarms/balances, quarantine of a malformed line, and an
//! outage (server stopped and restarted) with every point present once.

mod support;

use gaswatch::buffer::{RecordClass, SharedSpool, Spool, SpoolConfig};
use gaswatch::engine::TagInfo;
use gaswatch::model::{
    AlarmAction, AlarmEvent, AlarmKind, BalanceResult, DeviceId, Priority, Quality, Reason, Sample,
    TagId, Timestamp,
};
use gaswatch::sinks::influxdb::{
    InfluxConfig, WriterConfig, encode_alarm, encode_balance, encode_sample, run,
};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use support::influxdb::InfluxServer;
use tokio_util::sync::CancellationToken;

const DB: &str = "gaswatch";
const T0: i64 = 1_700_000_000_000_000_000;

fn tags() -> Vec<TagInfo> {
    ["PT_IN1", "PT_OUT1", "FT_1", "valve pos,1"]
        .iter()
        .zip(["kPa", "kPa", "Sm3/h", ""])
        .map(|(n, u)| TagInfo {
            name: n.to_string(),
            unit: u.into(),
            device: DeviceId(0),
            stale_after_ns: 0,
        })
        .collect()
}

fn sample(i: usize, ntags: usize) -> Sample {
    let bad = i % 17 == 5;
    Sample {
        tag: TagId((i % ntags) as u32),
        // Every float form the encoder writes: plain, integral (`6.0`),
        // tiny and huge with exponents (`3e-9`, `4e21`).
        value: match i % 13 {
            _ if bad => f64::NAN,
            3 => i as f64 * 1e-9,
            4 => i as f64 * 1e21,
            6 => i as f64,
            _ => 1000.0 + i as f64 * 0.37 - (i % 7) as f64 / 3.0,
        },
        quality: if bad { Quality::Bad } else { Quality::Good },
        reason: if bad { Reason::Timeout } else { Reason::None },
        // Distinct per tag: each sample is its own point.
        ts: Timestamp(T0 + i as i64 * 1_000_123),
    }
}

fn writer_config(server: &InfluxServer, spool_dir: &Path) -> WriterConfig {
    let cfg = InfluxConfig {
        batch_size: 64,
        flush_interval: Duration::from_millis(50),
        gzip: true,
        timeout: Duration::from_secs(5),
        backfill_lines_per_s: 0,
        ..InfluxConfig::v1(&server.url(), DB)
    };
    let mut w = WriterConfig::resolve(&cfg, spool_dir).expect("resolve");
    w.backoff_initial = Duration::from_millis(50);
    w.backoff_max = Duration::from_millis(400);
    w.config_error_retry = Duration::from_millis(200);
    w
}

fn open_spool(dir: &Path) -> Arc<SharedSpool> {
    let spool = Spool::open(dir, &SpoolConfig::default()).expect("spool");
    SharedSpool::new("influxdb", spool)
}

/// Appends samples `range` (10 lines per record) and notifies the writer.
fn append_samples(spool: &SharedSpool, tags: &[TagInfo], range: std::ops::Range<usize>) {
    let mut s = spool.lock();
    let mut buf = Vec::new();
    for (k, i) in range.enumerate() {
        let smp = sample(i, tags.len());
        encode_sample(&mut buf, "cg 01", &tags[smp.tag.0 as usize], "rtu=1", &smp);
        if k % 10 == 9 {
            s.append(RecordClass::Telemetry, &buf).expect("append");
            buf.clear();
        }
    }
    if !buf.is_empty() {
        s.append(RecordClass::Telemetry, &buf).expect("append");
    }
    s.sync().expect("sync");
    drop(s);
    spool.notify();
}

fn spool_depth(spool: &SharedSpool) -> u64 {
    let s = spool.lock();
    RecordClass::ALL.iter().map(|&c| s.stats(c).records).sum()
}

async fn wait_delivered(spool: &SharedSpool) {
    let ok = support::wait_until_async(Duration::from_secs(30), || async {
        spool_depth(spool) == 0
    })
    .await;
    assert!(
        ok,
        "spool not delivered: {} records left",
        spool_depth(spool)
    );
}

fn rows(v: &serde_json::Value) -> Vec<HashMap<String, serde_json::Value>> {
    let series = &v["results"][0]["series"][0];
    let cols: Vec<String> = series["columns"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|c| c.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    series["values"]
        .as_array()
        .map(|vals| {
            vals.iter()
                .map(|row| {
                    cols.iter()
                        .cloned()
                        .zip(row.as_array().cloned().unwrap_or_default())
                        .collect()
                })
                .collect()
        })
        .unwrap_or_default()
}

async fn count(server: &InfluxServer, q: &str) -> u64 {
    let v = server.query(DB, q).await;
    v["results"][0]["series"][0]["values"][0][1]
        .as_u64()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_is_exact() {
    let server = InfluxServer::start_new().await;
    server.create_database(DB).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = open_spool(dir.path());
    let tags = tags();
    const N: usize = 400;
    append_samples(&spool, &tags, 0..N);
    {
        let mut s = spool.lock();
        for k in 0..20u64 {
            let e = AlarmEvent {
                alarm: 0,
                kind: if k % 2 == 0 {
                    AlarmKind::HighHigh
                } else {
                    AlarmKind::Low
                },
                action: if k % 3 == 0 {
                    AlarmAction::Clear
                } else {
                    AlarmAction::Raise
                },
                priority: Priority::High,
                value: 6.3 + k as f64 / 100.0,
                limit: 6.3,
                ts: Timestamp(T0 + k as i64 * 7_000_001),
                seq: k + 1,
                detail: Default::default(),
            };
            let mut buf = Vec::new();
            encode_alarm(&mut buf, "cg 01", "cg01/PT_OUT1/HH", "PT_OUT1", &e);
            s.append(RecordClass::Alarm, &buf).expect("append");
        }
        for k in 0..10i64 {
            let b = BalanceResult {
                group: gaswatch::model::GroupId::STATION,
                start: Timestamp(T0 + k * 3_600_000_000_000),
                end: Timestamp(T0 + (k + 1) * 3_600_000_000_000),
                inlet_sm3: 1000.5 + k as f64,
                outlet_sm3: 998.25,
                linepack_change_sm3: 0.0,
                imbalance_sm3: 2.25 + k as f64,
                uncertainty_percent: 1.4,
                imbalance_percent: if k == 3 { f64::NAN } else { 0.224_887_556 },
                coverage: 0.99,
                quality: Quality::Good,
            };
            let mut buf = Vec::new();
            encode_balance(&mut buf, "cg 01", &b);
            s.append(RecordClass::Balance, &buf).expect("append");
        }
        s.sync().expect("sync");
    }
    let cancel = CancellationToken::new();
    let task = tokio::spawn(run(
        writer_config(&server, dir.path()),
        spool.clone(),
        cancel.clone(),
    ));
    wait_delivered(&spool).await;

    let got = rows(&server.query(DB, "SELECT * FROM telemetry").await);
    assert_eq!(got.len(), N, "telemetry points");
    let by_key: HashMap<(String, i64), &HashMap<String, serde_json::Value>> = got
        .iter()
        .map(|r| {
            (
                (
                    r["point"].as_str().unwrap_or("").to_string(),
                    r["time"].as_i64().unwrap_or(0),
                ),
                r,
            )
        })
        .collect();
    for i in 0..N {
        let s = sample(i, tags.len());
        let tag = &tags[s.tag.0 as usize];
        let row = by_key
            .get(&(tag.name.clone(), s.ts.nanos()))
            .unwrap_or_else(|| panic!("sample {i} ({}) missing", tag.name));
        assert_eq!(row["station"], "cg 01");
        assert_eq!(row["device"], "rtu=1");
        if tag.unit.is_empty() {
            assert!(row["unit"].is_null(), "empty unit is omitted");
        } else {
            assert_eq!(row["unit"], &*tag.unit);
        }
        assert_eq!(row["quality"], s.quality.as_str());
        if s.has_value() {
            assert_eq!(row["value"].as_f64(), Some(s.value), "sample {i} value");
            assert!(row["reason"].is_null());
        } else {
            assert!(row["value"].is_null());
            assert_eq!(row["reason"], "timeout");
        }
    }
    let alarms = rows(&server.query(DB, "SELECT * FROM alarm").await);
    assert_eq!(alarms.len(), 20);
    let a = alarms
        .iter()
        .find(|r| r["seq"].as_i64() == Some(2))
        .expect("alarm seq 2");
    assert_eq!(a["action"], "raise");
    assert_eq!(a["kind"], "L");
    assert_eq!(a["alarm_id"], "cg01/PT_OUT1/HH");
    assert_eq!(a["time"].as_i64(), Some(T0 + 7_000_001));
    assert_eq!(a["value"].as_f64(), Some(6.31));
    let balances = rows(&server.query(DB, "SELECT * FROM balance").await);
    assert_eq!(balances.len(), 10);
    let b3 = balances
        .iter()
        .find(|r| r["time"].as_i64() == Some(T0 + 4 * 3_600_000_000_000))
        .expect("balance 3");
    assert!(b3["imbalance_percent"].is_null());
    assert_eq!(b3["window_s"], "3600");
    assert_eq!(b3["inlet_sm3"].as_f64(), Some(1003.5));

    cancel.cancel();
    task.await.expect("writer task");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_line_is_quarantined_rest_lands() {
    let rejected = || {
        support::modbus::metric_value(
            "gaswatch_points_dropped_total",
            &[("reason", "influxdb_rejected")],
        )
    };
    let rejected_before = rejected();
    let server = InfluxServer::start_new().await;
    server.create_database(DB).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = open_spool(dir.path());
    let tags = tags();
    append_samples(&spool, &tags, 0..30);
    {
        let mut s = spool.lock();
        // A record mixing a good line and a bad one, between good records.
        let mut buf = Vec::new();
        encode_sample(
            &mut buf,
            "cg 01",
            &tags[0],
            "rtu=1",
            &sample(1000, tags.len()),
        );
        buf.extend_from_slice(b"telemetry,station=x this line has no fields\n");
        s.append(RecordClass::Telemetry, &buf).expect("append");
    }
    append_samples(&spool, &tags, 30..60);
    let cancel = CancellationToken::new();
    let task = tokio::spawn(run(
        writer_config(&server, dir.path()),
        spool.clone(),
        cancel.clone(),
    ));
    wait_delivered(&spool).await;
    assert_eq!(
        count(&server, "SELECT count(quality) FROM telemetry").await,
        61
    );
    let q = std::fs::read_to_string(dir.path().join("influxdb-quarantine.lp"))
        .expect("quarantine file");
    let lines: Vec<&str> = q.lines().collect();
    assert_eq!(lines.len(), 2, "one comment + one line:\n{q}");
    assert!(
        lines[0].starts_with("# ") && lines[0].contains("unable to parse"),
        "server reason: {}",
        lines[0]
    );
    assert_eq!(lines[1], "telemetry,station=x this line has no fields");
    // Not silent: the dropped point is counted with its reason.
    assert_eq!(
        rejected() - rejected_before,
        1.0,
        "points dropped, influxdb_rejected"
    );
    cancel.cancel();
    task.await.expect("writer task");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_then_restart_delivers_everything_once() {
    let mut server = InfluxServer::start_new().await;
    server.create_database(DB).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = open_spool(dir.path());
    let tags = tags();
    let cancel = CancellationToken::new();
    let task = tokio::spawn(run(
        writer_config(&server, dir.path()),
        spool.clone(),
        cancel.clone(),
    ));
    append_samples(&spool, &tags, 0..200);
    wait_delivered(&spool).await;

    server.stop();
    append_samples(&spool, &tags, 200..500);
    // While the server is down nothing may leave the spool.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        spool_depth(&spool) > 0,
        "records acknowledged while the server was down"
    );

    server.start().await;
    wait_delivered(&spool).await;
    assert_eq!(
        count(&server, "SELECT count(quality) FROM telemetry").await,
        500
    );
    assert_eq!(
        count(&server, "SELECT count(value) FROM telemetry").await,
        (0..500).filter(|i| i % 17 != 5).count() as u64
    );

    // A restart of gaswatch itself: the spool resumes after its watermark and
    // nothing is delivered twice (counts unchanged).
    cancel.cancel();
    task.await.expect("writer task");
    drop(spool);
    let spool = open_spool(dir.path());
    assert_eq!(spool_depth(&spool), 0);
    append_samples(&spool, &tags, 500..520);
    let cancel = CancellationToken::new();
    let task = tokio::spawn(run(
        writer_config(&server, dir.path()),
        spool.clone(),
        cancel.clone(),
    ));
    wait_delivered(&spool).await;
    assert_eq!(
        count(&server, "SELECT count(quality) FROM telemetry").await,
        520
    );
    cancel.cancel();
    task.await.expect("writer task");
}
