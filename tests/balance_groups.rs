//! Balance groups end to end: `gaswatch replay` of a two-line city gate
//! (`config/city-gate-two-lines.toml`: line A IN1 -> OUT1, OUT2; line B
//! IN2 -> OUT3; the station total) with a leak on line A, into a real
//! InfluxDB 1.6.7. Each group's windows land as their own series (`group`
//! tag; the station total without one, as a station without groups), the
//! leak shows in line A and the total and not in line B, and only their
//! 输差 alarms are raised.

mod support;

use std::path::Path;
use support::influxdb::InfluxServer;

const STATION: &str = include_str!("../config/city-gate-two-lines.toml");
/// 2026-01-01T00:00:00Z in ms: 5-minute windows align on it.
const T0_MS: i64 = 1_767_225_600_000;
/// Rows (1 s) and the first leaking one.
const ROWS: i64 = 40 * 60;
const LEAK_AT: i64 = 15 * 60;

/// Line A carries 20,000 Sm3/h (12,000 to OUT1, 8,000 to OUT2), line B
/// 10,000; from 15 min on, 600 Sm3/h leak from line A between its meters
/// (IN1 supplies them). Pressures steady: no pack change.
fn write_csv(path: &Path) {
    let mut s = String::from("time,FT_IN1,FT_OUT1,FT_OUT2,PT_A,TT_A,FT_IN2,FT_OUT3,PT_B,TT_B\n");
    for k in 0..ROWS {
        let leak = if k >= LEAK_AT { 600.0 } else { 0.0 };
        s.push_str(&format!(
            "{},{},12000,8000,1600,15,10000,10000,1580,15\n",
            T0_MS + k * 1000,
            20_000.0 + leak
        ));
    }
    std::fs::write(path, s).expect("write csv");
}

fn series(v: &serde_json::Value) -> Vec<serde_json::Value> {
    v["results"][0]["series"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_groups_windows_land_in_influxdb_with_its_group_tag() {
    let influx = InfluxServer::start_new().await;
    influx.create_database("groups").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let csv = dir.path().join("two-lines.csv");
    write_csv(&csv);
    let config = dir.path().join("city-gate-two-lines.toml");
    std::fs::write(&config, STATION).expect("config");
    let out_dir = dir.path().join("replayed");

    let stdout = support::replay_to_influx(&config, &csv, &out_dir, &influx.url(), "groups");
    // The summary speaks per group.
    for g in ["station", "lineA", "lineB"] {
        assert!(stdout.contains(&format!("输差 % group {g} ")), "{stdout}");
    }

    // The file output: each window once per group, tagged in the JSON.
    let balances = std::fs::read_to_string(out_dir.join("balance.jsonl")).expect("balance");
    let per_group = |g: &str| {
        balances
            .lines()
            .filter(|l| l.contains(&format!("\"group\":\"{g}\"")))
            .count()
    };
    let n = per_group("lineA");
    assert!(n >= 7, "{n} windows of line A:\n{balances}");
    assert_eq!(per_group("lineB"), n);
    assert_eq!(per_group("station"), n);
    assert_eq!(balances.lines().count(), 3 * n);

    // InfluxDB: one series per group; the station total has no group tag.
    let q = influx
        .query(
            "groups",
            "SELECT count(coverage) FROM balance WHERE source = 'replay' AND window_s = '300' GROUP BY \"group\"",
        )
        .await;
    let mut got: Vec<(String, usize)> = series(&q)
        .iter()
        .map(|s| {
            (
                s["tags"]["group"].as_str().unwrap_or_default().to_string(),
                s["values"][0][1].as_u64().unwrap_or_default() as usize,
            )
        })
        .collect();
    got.sort();
    // 5-minute windows only: the 1 h and gas-day windows are their own rows.
    let five = balances
        .lines()
        .filter(|l| {
            l.contains("\"group\":\"lineA\"") && {
                let v: serde_json::Value = serde_json::from_str(l).expect("json");
                v["end_ns"].as_i64().unwrap_or_default()
                    - v["start_ns"].as_i64().unwrap_or_default()
                    == 300_000_000_000
            }
        })
        .count();
    assert_eq!(
        got,
        [
            (String::new(), five),
            ("lineA".to_string(), five),
            ("lineB".to_string(), five)
        ],
        "{q}"
    );

    // The leak: line A's windows after it carry 600 / 20,600 = 2.91 %, the
    // total's 600 / 30,600 = 1.96 %, line B's nothing.
    let after = (T0_MS + 20 * 60 * 1000) * 1_000_000;
    let pct = |rows: &serde_json::Value| -> Vec<f64> {
        series(rows)
            .first()
            .and_then(|s| s["values"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|r| r[1].as_f64())
            .collect()
    };
    for (cond, want) in [
        ("\"group\" = 'lineA'", 600.0 / 20_600.0 * 100.0),
        ("\"group\" = 'lineB'", 0.0),
        ("\"group\" = ''", 600.0 / 30_600.0 * 100.0),
    ] {
        let q = influx
            .query(
                "groups",
                &format!(
                    "SELECT imbalance_percent FROM balance WHERE {cond} AND window_s = '300' AND time >= {after}"
                ),
            )
            .await;
        let v = pct(&q);
        assert!(v.len() >= 3, "{cond}: {q}");
        for p in v {
            assert!((p - want).abs() < 1e-6, "{cond}: {p} vs {want}");
        }
    }

    // 输差 alarms: line A's and the total's, none of line B's.
    let q = influx
        .query(
            "groups",
            "SELECT action, alarm_id FROM alarm WHERE kind = 'IMBALANCE'",
        )
        .await;
    let raised: Vec<String> = series(&q)
        .first()
        .and_then(|s| s["values"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter(|r| r[1] == "raise")
        .filter_map(|r| r[2].as_str().map(str::to_string))
        .collect();
    assert!(
        raised.contains(&"cg02/balance.lineA/IMBALANCE".to_string()),
        "{raised:?}"
    );
    assert!(
        raised.contains(&"cg02/balance/IMBALANCE".to_string()),
        "{raised:?}"
    );
    assert!(!raised.iter().any(|id| id.contains("lineB")), "{raised:?}");
}

/// A 5 % leak on line A after two hours (the leak test's warm-up), replayed
/// in process: the summary's leak detections name line A and the total,
/// with the leak alert's rate (line B: none), and the events hold the
/// leak alerts with their group.
#[test]
fn replayed_leak_on_line_a_is_detected_in_line_a_and_the_total_only() {
    use gaswatch::cli::replay::{ReadOptions, Replayer, replay_files};
    use gaswatch::config::Config;
    use gaswatch::engine::EnginePlan;
    use gaswatch::model::GroupId;
    use std::sync::Arc;

    let dir = tempfile::tempdir().expect("tempdir");
    let csv = dir.path().join("leak.csv");
    let leak_at = 7200 + 100;
    let mut s = String::from("time,FT_IN1,FT_OUT1,FT_OUT2,PT_A,TT_A,FT_IN2,FT_OUT3,PT_B,TT_B\n");
    for k in 0..leak_at + 1200 {
        // A little meter noise (the CUSUM scales with it), no pack change.
        let n = 1.0 + 0.001 * (k as f64 * 1.3).sin();
        let nb = 1.0 + 0.001 * (k as f64 * 0.7).cos();
        let leak = if k >= leak_at { 1000.0 } else { 0.0 };
        s.push_str(&format!(
            "{},{},{},{},1600,15,10000,{},1580,15\n",
            T0_MS + k * 1000,
            20_000.0 + leak,
            12_000.0 * n,
            8_000.0 * n,
            10_000.0 * nb
        ));
    }
    std::fs::write(&csv, s).expect("csv");
    let c = Config::from_str_named(STATION, Path::new("two-lines.toml")).expect("config");
    let plan = Arc::new(EnginePlan::compile(&c));
    let events = dir.path().join("events.jsonl");
    let out = std::fs::File::create(&events).expect("events");
    let mut r = Replayer::new(
        Arc::clone(&plan),
        std::time::Duration::from_secs(1),
        Some(Box::new(std::io::BufWriter::new(out))),
        None,
    )
    .expect("replayer");
    replay_files(
        &mut r,
        &plan,
        &[csv],
        ReadOptions::default(),
        &indicatif::ProgressBar::hidden(),
        &mut |b| panic!("bad row {b}"),
    )
    .expect("replay");
    r.finish().expect("finish");
    let leaks: Vec<_> = r
        .summary
        .leaks
        .iter()
        .filter(|l| l.alarm_id.ends_with("/LEAK"))
        .collect();
    let line_a = leaks
        .iter()
        .find(|l| l.group == GroupId::new("lineA").expect("id"))
        .unwrap_or_else(|| panic!("no line A leak in {leaks:?}"));
    assert_eq!(line_a.alarm_id, "cg02/balance.lineA/LEAK");
    assert!(line_a.raised.nanos() > (T0_MS + leak_at * 1000) * 1_000_000);
    assert!(
        (line_a.rate_sm3_per_h - 1000.0).abs() < 100.0,
        "rate of the leak alert: {line_a:?}"
    );
    assert!(
        leaks
            .iter()
            .any(|l| l.group == GroupId::STATION && l.alarm_id == "cg02/balance/LEAK"),
        "{leaks:?}"
    );
    assert!(
        !leaks.iter().any(|l| l.alarm_id.contains("lineB")),
        "{leaks:?}"
    );
    let text = std::fs::read_to_string(&events).expect("events");
    let alerts: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .filter(|v: &serde_json::Value| v["type"] == "leak")
        .collect();
    assert!(alerts.iter().any(|v| v["group"] == "lineA"), "{alerts:?}");
    assert!(!alerts.iter().any(|v| v["group"] == "lineB"), "{alerts:?}");
}

/// The simulator reads the same file (it ignores `[[balance.groups]]`), so
/// the example station can be served for a demo or a daemon test.
#[test]
fn the_simulator_serves_the_two_line_example() {
    gaswatch_sim::StationConfig::from_toml_str(STATION).expect("simulator config");
    gaswatch_sim::Station::from_config_str(STATION, &gaswatch_sim::SimOptions::default())
        .expect("simulator station");
}
