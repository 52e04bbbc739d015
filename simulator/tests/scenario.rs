//! Scenario engine: each kind of event produces the expected ground truth
//! and the expected effect on the served data; runs are deterministic.

use gaswatch_sim::scenario::{Runner, Scenario, generate_offline};
use gaswatch_sim::{SimOptions, Station, StationConfig};
use std::time::Duration;

const STATION: &str = include_str!("../../config/city-gate.toml");
const TOUR: &str = include_str!("../scenarios/faults-tour.toml");

struct Run {
    csv: String,
    truth: Vec<serde_json::Value>,
}

fn run(scenario: &str, duration: Duration) -> Run {
    let cfg = StationConfig::from_toml_str(STATION).expect("station");
    let sc = Scenario::from_toml_str(scenario, "test.toml", &cfg).expect("scenario");
    let opts = SimOptions {
        seed: sc.seed,
        noise_percent: 0.0,
        ..SimOptions::default()
    };
    let mut station = Station::from_config_str(STATION, &opts).expect("sim");
    let mut runner = Runner::new(sc, &cfg);
    let (mut csv, mut truth) = (Vec::new(), Vec::new());
    generate_offline(
        &mut station,
        &mut runner,
        &cfg,
        gaswatch_sim::scenario::Span {
            start_ns: 1_767_225_600_000_000_000,
            duration,
            step: Duration::from_secs(1),
        },
        &mut csv,
        &mut truth,
    )
    .expect("generate");
    Run {
        csv: String::from_utf8(csv).expect("utf8"),
        truth: String::from_utf8(truth)
            .expect("utf8")
            .lines()
            .map(|l| serde_json::from_str(l).expect("json"))
            .collect(),
    }
}

/// Column `name` at the row whose time is `t_s` seconds after the start.
fn cell(r: &Run, name: &str, t_s: usize) -> Option<f64> {
    let mut lines = r.csv.lines();
    let header: Vec<&str> = lines.next().expect("header").split(',').collect();
    let col = header.iter().position(|h| *h == name).expect("column");
    let row = lines.nth(t_s).expect("row");
    let c = row.split(',').nth(col).expect("cell");
    (!c.is_empty()).then(|| c.parse().expect("number"))
}

fn edges(r: &Run) -> Vec<(String, String, String, i64, Option<String>)> {
    r.truth
        .iter()
        .filter(|v| v["type"] == "event")
        .map(|v| {
            (
                v["id"].as_str().expect("id").to_string(),
                v["kind"].as_str().expect("kind").to_string(),
                v["phase"].as_str().expect("phase").to_string(),
                (v["sim_s"].as_f64().expect("sim_s")) as i64,
                v["detect"].as_str().map(str::to_string),
            )
        })
        .collect()
}

#[test]
fn every_kind_of_event_has_a_start_and_an_end_in_the_truth() {
    let r = run(TOUR, Duration::from_secs(10 * 3600));
    let e = edges(&r);
    let expect = [
        ("leak-1", "leak", 1800, 5400, Some("imbalance")),
        ("rupture-1", "rupture", 7200, 7800, Some("imbalance")),
        ("meter_drift-1", "meter_drift", 10800, 14400, None),
        ("stuck_sensor-1", "stuck_sensor", 16200, 18000, None),
        (
            "pressure_excursion-1",
            "pressure_excursion",
            19800,
            21000,
            Some("PT_OUT1"),
        ),
        ("slam_shut-1", "slam_shut", 23400, 24300, Some("PT_OUT2")),
        ("comm_outage-1", "comm_outage", 27000, 27600, None),
        ("slow_response-1", "slow_response", 28800, 29400, None),
        ("exception-1", "exception", 30600, 31200, None),
        ("late_reply-1", "late_reply", 32400, 33000, None),
        (
            "dropped_connection-1",
            "dropped_connection",
            34200,
            34800,
            None,
        ),
    ];
    for (id, kind, start, end, detect) in expect {
        let s = e
            .iter()
            .find(|x| x.0 == id && x.2 == "start")
            .unwrap_or_else(|| panic!("no start of {id}: {e:?}"));
        assert_eq!(
            (s.1.as_str(), s.3, s.4.as_deref()),
            (kind, start, detect),
            "{id}"
        );
        let f = e
            .iter()
            .find(|x| x.0 == id && x.2 == "end")
            .unwrap_or_else(|| panic!("no end of {id}"));
        assert_eq!(f.3, end, "{id}");
    }
    assert_eq!(e.len(), 22);
    assert!(r.truth.iter().any(|v| v["type"] == "values"));
}

#[test]
fn events_change_the_served_data_as_described() {
    let r = run(TOUR, Duration::from_secs(10 * 3600));
    let inflow = |t| cell(&r, "FT_IN1", t).expect("in");
    let outflow = |t| cell(&r, "FT_OUT1", t).expect("o1") + cell(&r, "FT_OUT2", t).expect("o2");
    // Leak at full size (after the 5 min ramp): inlet exceeds outlet by ~4 %.
    let t = 1800 + 600;
    let loss = (inflow(t) - outflow(t)) / outflow(t) * 100.0;
    assert!((loss - 4.0).abs() < 1.0, "leak {loss} %");
    // Rupture: ~40 %.
    let t = 7200 + 60;
    let loss = (inflow(t) - outflow(t)) / outflow(t) * 100.0;
    assert!((loss - 40.0).abs() < 5.0, "rupture {loss} %");
    // Stuck sensor: constant for its 30 min.
    let a = cell(&r, "PT_OUT1", 16200 + 5).expect("pt");
    assert_eq!(a, cell(&r, "PT_OUT1", 16200 + 1700).expect("pt"));
    // Excursion: +250 kPa at full size.
    let before = cell(&r, "PT_OUT1", 19800 - 10).expect("pt");
    let during = cell(&r, "PT_OUT1", 19800 + 600).expect("pt");
    assert!(
        (during - before - 250.0).abs() < 30.0,
        "{before} -> {during}"
    );
    // Slam-shut: outlet 2 pressure and flow at 0.
    assert_eq!(cell(&r, "PT_OUT2", 23400 + 60), Some(0.0));
    assert_eq!(cell(&r, "FT_OUT2", 23400 + 60), Some(0.0));
    // Comm outage / exception: the device's cells are empty; others are not.
    assert_eq!(cell(&r, "FT_OUT1", 27000 + 60), None);
    assert!(cell(&r, "FT_IN1", 27000 + 60).is_some());
    assert_eq!(cell(&r, "FT_OUT2", 30600 + 60), None);
    // Slow responses still deliver data.
    assert!(cell(&r, "FT_IN1", 28800 + 60).is_some());
    // After everything, values are back.
    assert!(cell(&r, "FT_OUT1", 35000).is_some());
}

#[test]
fn meter_drift_grows_with_time() {
    let sc = "[[events]]\nkind = \"meter_drift\"\nat = \"0s\"\npoint = \"FT_OUT2\"\npercent_per_hour = 10.0\n";
    let r = run(sc, Duration::from_secs(3600));
    let ratio = |t| cell(&r, "FT_OUT2", t).expect("o2") / cell(&r, "FT_OUT1", t).expect("o1");
    let growth = ratio(3600) / ratio(10);
    assert!((growth - 1.10).abs() < 0.01, "{growth}");
}

#[test]
fn same_scenario_same_bytes() {
    let a = run(TOUR, Duration::from_secs(7200));
    let b = run(TOUR, Duration::from_secs(7200));
    assert_eq!(a.csv, b.csv);
    assert_eq!(a.truth, b.truth);
}

#[test]
fn bad_scenarios_name_the_event_and_the_key() {
    let cfg = StationConfig::from_toml_str(STATION).expect("station");
    let err = |s: &str| {
        Scenario::from_toml_str(s, "s.toml", &cfg)
            .expect_err("rejected")
            .to_string()
    };
    let e = err("[[events]]\nkind = \"stuck_sensor\"\nat = \"1m\"\npoint = \"NOPE\"\n");
    assert!(
        e.contains("s.toml: events[0] (stuck_sensor)") && e.contains("NOPE"),
        "{e}"
    );
    let e = err("[[events]]\nkind = \"comm_outage\"\nat = \"1m\"\n");
    assert!(e.contains("`device` is required"), "{e}");
    let e = err("[[events]]\nkind = \"leak\"\nat = \"1m\"\nsize = 3\n");
    assert!(e.contains("s.toml") && e.contains("size"), "{e}");
}
