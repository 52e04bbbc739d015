//! Nothing is lost across SIGHUP reloads, counted. The real daemon polls
//! the simulated city gate every 500 ms into the file sink and a real
//! InfluxDB 1.6.7; while points flow it gets three SIGHUPs:
//!
//! (a) a valid config that changes a sink setting (InfluxDB batch size and
//!     flush interval: the sinks restart), the devices' timeout (the devices
//!     are re-planned and their pollers restarted) and adds a limit (a new
//!     alarm);
//! (b) an invalid config (an unknown key): rejected, the key logged, the
//!     running config kept;
//! (c) a valid config that changes `[spool]` (the sinks restart again) and
//!     the devices' timeout back.
//!
//! Then SIGTERM. Checked, for every point: no poll cycle missed (no two
//! consecutive samples more than 1.5 poll periods apart) from the first
//! sample to the last, no duplicate (point, timestamp) in the file sink,
//! InfluxDB holds exactly the file sink's samples once each, and the spool
//! is empty. An alarm active before the reloads (a low limit above the
//! value: always active) is raised once and never again, alarm sequence
//! numbers only grow, and the alarm added by (a) is numbered after it. The
//! balance windows (5 s) follow each other without a hole or a repeat, and
//! every window the daemon ran through completely has full coverage, the
//! ones around the reloads too.

mod support;

use gaswatch::buffer::{RecordClass, Spool, SpoolConfig};
use std::collections::BTreeSet;
use support::daemon::{
    DEADLINE, assert_same_values, file_lines, file_points, gaps, jsonl, now_ns, setup, signal,
    spawn_daemon, start_sim, terminate,
};
use support::influxdb::InfluxServer;

const POLL_MS: u64 = 500;
const WINDOW_NS: i64 = 5_000_000_000;

async fn get(url: &str) -> Option<String> {
    // reqwest is built without a default TLS provider (DEPENDENCIES.md).
    gaswatch::sinks::tls::ensure_crypto_provider();
    reqwest::get(url).await.ok()?.text().await.ok()
}

/// The value of the first series starting with `series` in a scrape.
fn metric_value(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in:\n{metrics}"))
}

async fn generation(http_port: u16) -> Option<u64> {
    let body = get(&format!("http://127.0.0.1:{http_port}/health")).await?;
    serde_json::from_str::<serde_json::Value>(&body).ok()?["config_generation"].as_u64()
}

/// Waits until every point has `n` more samples in the file sink than in `before`.
async fn flows(s: &support::daemon::Setup, n: usize) {
    let count = |p: &support::influxdb::Points| {
        let mut m = std::collections::BTreeMap::<String, usize>::new();
        for k in p.keys() {
            *m.entry(k.0.clone()).or_default() += 1;
        }
        m
    };
    let before = count(&file_points(&s.files()));
    let ok = support::wait_until(DEADLINE, || {
        let now = count(&file_points(&s.files()));
        now.len() == 9
            && now
                .iter()
                .all(|(p, c)| *c >= before.get(p).copied().unwrap_or(0) + n)
    });
    assert!(ok, "points stopped flowing; log:\n{}", s.log_text());
}

fn set_timeout(t: &mut toml::Table, timeout: &str) {
    for d in t["devices"].as_array_mut().expect("devices") {
        d.as_table_mut()
            .expect("device")
            .insert("timeout".into(), timeout.into());
    }
}

fn add_limit(t: &mut toml::Table, point: &str, low: f64) {
    let mut l = toml::Table::new();
    l.insert("point".into(), point.into());
    l.insert("l".into(), low.into());
    t["limits"].as_array_mut().expect("limits").push(l.into());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_while_points_flow_lose_nothing_and_keep_alarm_state() {
    let influx = InfluxServer::start_new().await;
    influx.create_database("gaswatch").await;
    let sim = start_sim(0.1).await;
    let http_port = support::free_port();
    let mut s = setup(&sim, &influx.url(), POLL_MS, |t| {
        // Always active: TT_IN1 is far below a million degrees.
        add_limit(t, "TT_IN1", 1.0e6);
        let b = t["balance"].as_table_mut().expect("balance");
        b.insert("window".into(), "5s".into());
        b.insert("longer_windows".into(), toml::Value::Array(Vec::new()));
        b.insert("gas_day".into(), false.into());
        let mut http = toml::Table::new();
        http.insert("listen".into(), format!("127.0.0.1:{http_port}").into());
        t.insert("http".into(), http.into());
    });
    let mut daemon = spawn_daemon(&s);
    let pid = daemon.id();
    let alarms_path = s.files().join("alarms.jsonl");
    let raised = |point: &str| {
        jsonl(&alarms_path)
            .into_iter()
            .filter(|a| a["source"] == point && a["action"] == "raise")
            .collect::<Vec<_>>()
    };
    assert!(
        support::wait_until(DEADLINE, || !raised("TT_IN1").is_empty()),
        "the always-active alarm was not raised; log:\n{}",
        s.log_text()
    );
    // At least one complete balance window before the first reload.
    assert!(
        support::wait_until(DEADLINE, || jsonl(&s.files().join("balance.jsonl")).len()
            >= 2),
        "no balance windows; log:\n{}",
        s.log_text()
    );
    flows(&s, 4).await;
    assert_eq!(generation(http_port).await, Some(1));
    let mut reloads_ns = Vec::new();

    // (a) Sinks restart, devices re-planned, one alarm more.
    let mut t = s.table.clone();
    {
        let i = t["sinks"]["influxdb"].as_table_mut().expect("influxdb");
        i.insert("batch_size".into(), 400.into());
        i.insert("flush_interval".into(), "150ms".into());
    }
    set_timeout(&mut t, "900ms");
    add_limit(&mut t, "PT_OUT2", 1.0e6);
    s.write(t);
    reloads_ns.push(now_ns());
    signal(pid, "-HUP");
    let ok = support::wait_until_async(DEADLINE, || async {
        generation(http_port).await == Some(2)
    })
    .await;
    assert!(ok, "reload (a) not applied; log:\n{}", s.log_text());
    assert!(
        support::wait_until(DEADLINE, || !raised("PT_OUT2").is_empty()),
        "the alarm added by the reload was not raised; log:\n{}",
        s.log_text()
    );
    flows(&s, 4).await;

    // (b) Invalid: rejected with the key named, the running config kept.
    let valid = s.table.clone();
    let mut bad = valid.clone();
    bad["station"]
        .as_table_mut()
        .expect("station")
        .insert("bogus_key".into(), 1.into());
    s.write(bad);
    reloads_ns.push(now_ns());
    signal(pid, "-HUP");
    assert!(
        support::wait_until(DEADLINE, || {
            let log = s.log_text();
            log.contains("Reload rejected") && log.contains("bogus_key")
        }),
        "no rejection naming the key; log:\n{}",
        s.log_text()
    );
    flows(&s, 4).await;
    assert_eq!(generation(http_port).await, Some(2), "old config kept");

    // (c) [spool] changes: the sinks restart again; timeouts back.
    let mut t = valid;
    t["spool"]
        .as_table_mut()
        .expect("spool")
        .insert("max_bytes".into(), (512 * 1024 * 1024).into());
    set_timeout(&mut t, "1s");
    s.write(t);
    reloads_ns.push(now_ns());
    signal(pid, "-HUP");
    let ok = support::wait_until_async(DEADLINE, || async {
        generation(http_port).await == Some(3)
    })
    .await;
    assert!(ok, "reload (c) not applied; log:\n{}", s.log_text());
    flows(&s, 4).await;
    // Past one more balance window end, so the window around (c) closes.
    let end_ns = now_ns();
    assert!(
        support::wait_until(DEADLINE, || jsonl(&s.files().join("balance.jsonl"))
            .iter()
            .any(|b| b["start_ns"].as_i64().is_some_and(|t| t > end_ns))),
        "no balance window after the last reload"
    );
    let metrics = get(&format!("http://127.0.0.1:{http_port}/metrics"))
        .await
        .expect("metrics");
    terminate(&mut daemon, &s).await;
    sim.stop().await;
    let log = s.log_text();

    assert_eq!(log.matches("Configuration reloaded.").count(), 2, "{log}");
    assert!(
        metrics.contains("gaswatch_config_reloads_total{result=\"applied\"} 2")
            && metrics.contains("gaswatch_config_reloads_total{result=\"rejected\"} 1"),
        "{metrics}"
    );
    // The families #10 lists, as an operator scrapes them after the reloads.
    for family in [
        "gaswatch_build_info{",
        "gaswatch_modbus_requests_total{device=\"fc-in\"}",
        "gaswatch_modbus_errors_total{device=\"fc-in\",error_type=\"timeout\"}",
        "gaswatch_modbus_response_seconds_bucket{device=\"fc-in\",le=",
        "gaswatch_influx_write_seconds_bucket{le=",
        "gaswatch_spool_records{sink=\"influxdb\",class=\"telemetry\"}",
        "gaswatch_spool_backlog_seconds{sink=\"influxdb\"}",
        "gaswatch_alarms_active{priority=",
        "gaswatch_alarms{state=\"normal\"}",
        "gaswatch_balance_imbalance_percent{station=\"cg01\",group=\"station\",window=\"5s\"}",
        "gaswatch_balance_windows_total{group=\"station\",window=\"5s\",quality=",
        "gaswatch_sink_reachable{sink=\"influxdb\"} 1",
    ] {
        assert!(metrics.contains(family), "missing {family} in:\n{metrics}");
    }
    // Both always-active alarms are unacknowledged (nobody acked them).
    let unacked = metric_value(&metrics, "gaswatch_alarms{state=\"unacked\"}");
    assert!(unacked >= 2.0, "unacked alarms: {unacked}\n{metrics}");

    // Every sample once in the file sink and once in InfluxDB; spool empty.
    let lines = file_lines(&s.files());
    let written = file_points(&s.files());
    assert_eq!(
        lines.len(),
        written.len(),
        "duplicate (point, ts) in the file sink"
    );
    let (stored, rows) = influx.telemetry_points("gaswatch").await;
    assert_eq!(rows, stored.len(), "duplicate rows in InfluxDB");
    assert_eq!(
        stored.keys().collect::<Vec<_>>(),
        written.keys().collect::<Vec<_>>(),
        "InfluxDB holds exactly what the file sink holds"
    );
    assert_same_values(&stored, &written);
    let spool = Spool::open(&s.spool().join("influxdb"), &SpoolConfig::default()).expect("spool");
    for c in RecordClass::ALL {
        assert_eq!(
            spool.stats(c).records,
            0,
            "{} left in the spool",
            c.as_str()
        );
    }

    // No poll cycle missed by any point, reloads included.
    let points: BTreeSet<&str> = written.keys().map(|k| k.0.as_str()).collect();
    assert_eq!(points.len(), 9, "{points:?}");
    for p in &points {
        let ts: Vec<i64> = written.keys().filter(|k| k.0 == *p).map(|k| k.1).collect();
        assert!(
            ts.first() < reloads_ns.first() && ts.last() > reloads_ns.last(),
            "{p} does not span the reloads"
        );
    }
    let limit = i64::try_from(POLL_MS).expect("ms") * 1_500_000;
    let missed = gaps(&written, limit, i64::MIN, i64::MAX);
    assert!(
        missed.is_empty(),
        "poll cycles missed (reloads at {reloads_ns:?}): {missed:?}"
    );

    // Alarms: raised once, numbered in order across the reloads.
    let alarms = jsonl(&alarms_path);
    let seqs: Vec<u64> = alarms
        .iter()
        .map(|a| a["seq"].as_u64().expect("seq"))
        .collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "alarm sequence numbers not increasing: {seqs:?}"
    );
    let first = raised("TT_IN1");
    assert_eq!(
        first.len(),
        1,
        "the carried alarm was raised again: {first:?}"
    );
    let added = raised("PT_OUT2");
    assert_eq!(added.len(), 1, "{added:?}");
    assert!(added[0]["seq"].as_u64() > first[0]["seq"].as_u64());
    assert!(
        !alarms
            .iter()
            .any(|a| a["source"] == "TT_IN1" && a["action"] != "raise"),
        "the carried alarm changed state: {alarms:?}"
    );
    assert_eq!(
        influx.count("gaswatch", "alarm").await,
        alarms.len() as u64,
        "every alarm event in InfluxDB"
    );

    // Balance windows: consecutive, once each, fully covered between the
    // first and the last (which the daemon joined or left midway).
    let windows: Vec<(i64, i64, f64)> = jsonl(&s.files().join("balance.jsonl"))
        .iter()
        .filter(|b| {
            b["end_ns"]
                .as_i64()
                .zip(b["start_ns"].as_i64())
                .is_some_and(|(e, s)| e - s == WINDOW_NS)
        })
        .map(|b| {
            (
                b["start_ns"].as_i64().expect("start"),
                b["end_ns"].as_i64().expect("end"),
                b["coverage"].as_f64().unwrap_or(0.0),
            )
        })
        .collect();
    assert!(windows.len() >= 4, "{windows:?}");
    for w in windows.windows(2) {
        assert_eq!(
            w[0].1, w[1].0,
            "a balance window is missing or repeated: {windows:?}"
        );
    }
    for w in &windows[1..windows.len() - 1] {
        assert!(
            w.2 >= 0.999,
            "window {w:?} lost coverage (reloads at {reloads_ns:?}): {windows:?}"
        );
    }
    assert_eq!(
        influx.count("gaswatch", "balance").await,
        jsonl(&s.files().join("balance.jsonl")).len() as u64,
        "every balance result in InfluxDB"
    );
}
