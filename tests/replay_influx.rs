//! `gaswatch replay --influx-url --influx-db` against a real InfluxDB 1.6.7:
//! the replayed telemetry, alarm transitions and balance windows land in
//! the database tagged `source=replay`, exactly what the replay's own file
//! output holds (same lines, same count), so replayed and live results can
//! be put side by side on one dashboard. Lines written by the daemon (no
//! `source` tag) stay apart from them.

mod support;

use gaswatch_sim::scenario::{Runner, Scenario, Span, generate_offline};
use gaswatch_sim::{SimOptions, Station, StationConfig};
use std::path::Path;
use std::time::Duration;
use support::influxdb::InfluxServer;

const STATION: &str = include_str!("../config/city-gate.toml");

/// Forty minutes: an outlet pressure excursion over the H limit (1700 kPa)
/// for ten of them, so alarms raise and clear; 5-minute balance windows.
const SCENARIO: &str = r#"
seed = 4
start = "2026-01-01T00:00:00Z"
duration = "40m"
step = "1s"

[[events]]
kind = "pressure_excursion"
at = "10m"
duration = "10m"
point = "PT_OUT1"
delta = 240.0
ramp = "1m"
"#;

fn generate(csv: &Path) {
    let cfg = StationConfig::from_toml_str(STATION).expect("station");
    let sc = Scenario::from_toml_str(SCENARIO, "excursion.toml", &cfg).expect("scenario");
    let opts = SimOptions {
        seed: sc.seed,
        ..SimOptions::default()
    };
    let mut station = Station::from_config_str(STATION, &opts).expect("sim");
    let start =
        gaswatch_sim::scenario::parse_start(sc.start.as_deref().expect("start")).expect("start");
    let duration = sc.duration.expect("duration");
    let mut runner = Runner::new(sc, &cfg);
    let mut out = std::io::BufWriter::new(std::fs::File::create(csv).expect("csv"));
    generate_offline(
        &mut station,
        &mut runner,
        &cfg,
        Span {
            start_ns: start,
            duration,
            step: Duration::from_secs(1),
        },
        &mut out,
        &mut std::io::sink(),
    )
    .expect("generate");
}

/// Rows of an InfluxQL answer.
fn rows(v: &serde_json::Value) -> Vec<serde_json::Value> {
    v["results"][0]["series"][0]["values"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn count(v: &serde_json::Value) -> i64 {
    rows(v)
        .first()
        .and_then(|r| r[1].as_i64())
        .unwrap_or_default()
}

fn lines_of(dir: &Path, prefix: &str) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).expect("out dir").flatten() {
        let text = std::fs::read_to_string(e.path()).unwrap_or_default();
        out.extend(
            text.lines()
                .filter(|l| l.starts_with(prefix))
                .map(str::to_string),
        );
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_points_and_events_land_in_influxdb_tagged_source_replay() {
    let influx = InfluxServer::start_new().await;
    influx.create_database("cmp").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let csv = dir.path().join("excursion.csv");
    generate(&csv);
    let config = dir.path().join("city-gate.toml");
    std::fs::write(&config, STATION).expect("config");
    let out_dir = dir.path().join("replayed");

    // A "live" point the daemon wrote (no source tag) at the same time.
    let live = "telemetry,device=plc-out,point=PT_OUT1,station=cg01,unit=kPa value=1500,quality=\"good\" 1767225600000000000\n";
    let url = format!("{}/write?db=cmp&precision=ns", influx.url());
    let status = reqwest::Client::new()
        .post(url)
        .body(live)
        .send()
        .await
        .expect("write live line")
        .status();
    assert_eq!(status.as_u16(), 204);

    let stdout = support::replay_to_influx(&config, &csv, &out_dir, &influx.url(), "cmp");
    assert!(
        stdout.contains("influxdb") && stdout.contains("source=replay"),
        "{stdout}"
    );

    // Telemetry: every line of the replay's file output, each in InfluxDB
    // once, all tagged source=replay.
    let telemetry = lines_of(&out_dir, "telemetry,");
    assert!(telemetry.len() > 9 * 2000, "{} lines", telemetry.len());
    assert!(telemetry.iter().all(|l| l.contains(",source=replay,")));
    let q = influx
        .query(
            "cmp",
            "SELECT count(quality) FROM telemetry WHERE source = 'replay'",
        )
        .await;
    assert_eq!(count(&q) as usize, telemetry.len(), "{q}");
    let q = influx
        .query(
            "cmp",
            "SHOW TAG VALUES FROM telemetry WITH KEY = \"source\"",
        )
        .await;
    let sources: Vec<String> = rows(&q)
        .iter()
        .filter_map(|r| r[1].as_str().map(str::to_string))
        .collect();
    assert_eq!(sources, ["replay"], "{q}");
    // The live line is still there, apart: same point and time, no source.
    let q = influx
        .query(
            "cmp",
            "SELECT count(value) FROM telemetry WHERE point = 'PT_OUT1' AND time = 1767225600000000000 GROUP BY source",
        )
        .await;
    let groups = q["results"][0]["series"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut by_source: Vec<(String, i64)> = groups
        .iter()
        .map(|g| {
            (
                g["tags"]["source"].as_str().unwrap_or_default().to_string(),
                g["values"][0][1].as_i64().unwrap_or_default(),
            )
        })
        .collect();
    by_source.sort();
    assert_eq!(
        by_source,
        [(String::new(), 1), ("replay".to_string(), 1)],
        "{q}"
    );

    // Events: every alarm transition and every balance window.
    let alarms = lines_of(&out_dir, "{\"");
    let alarm_events: Vec<&String> = alarms
        .iter()
        .filter(|l| l.contains("\"alarm_id\""))
        .collect();
    assert!(
        alarm_events
            .iter()
            .any(|l| l.contains("cg01/PT_OUT1/H\"") && l.contains("\"raise\"")),
        "no H raise on PT_OUT1 in {alarm_events:?}"
    );
    let q = influx
        .query(
            "cmp",
            "SELECT action, point, alarm_id FROM alarm WHERE source = 'replay'",
        )
        .await;
    let got = rows(&q);
    assert_eq!(got.len(), alarm_events.len(), "{q}");
    assert!(
        got.iter()
            .any(|r| r[1] == "raise" && r[2] == "PT_OUT1" && r[3] == "cg01/PT_OUT1/H"),
        "{q}"
    );
    let balances = std::fs::read_to_string(out_dir.join("balance.jsonl")).expect("balance");
    let windows = balances.lines().count();
    assert!(windows >= 7, "{windows} balance windows");
    let q = influx
        .query(
            "cmp",
            "SELECT count(coverage) FROM balance WHERE source = 'replay'",
        )
        .await;
    assert_eq!(count(&q) as usize, windows, "{q}");
    let q = influx
        .query("cmp", "SELECT count(coverage) FROM balance")
        .await;
    assert_eq!(
        count(&q) as usize,
        windows,
        "only the replay wrote windows: {q}"
    );
}
