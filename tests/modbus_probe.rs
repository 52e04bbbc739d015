//! `gaswatch probe` (the real binary) against the simulator: the decoding the
//! operator needs ranks first when the expected range is given.

use gaswatch_sim::{SimOptions, Station};
use std::process::Command;

const CITY_GATE: &str = include_str!("../config/city-gate.toml");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_ranks_the_true_type_and_order_first() {
    // A flow (f32 CDAB) and a temperature (i16, scale 0.01) from the example
    // config, found by name so the test follows the config.
    let station =
        Station::from_config_str(CITY_GATE, &SimOptions::default()).expect("example builds");
    let cfg = gaswatch_sim::StationConfig::from_toml_str(CITY_GATE).expect("example parses");
    let (unit, point) = cfg
        .devices
        .iter()
        .find_map(|d| {
            d.points
                .iter()
                .find(|p| {
                    p.data_type == gaswatch_sim::DataType::F32
                        && p.order == gaswatch_sim::WordOrder::Cdab
                })
                .map(|p| (d.unit_id, p.clone()))
        })
        .expect("the example has a CDAB float");
    let sim = gaswatch_sim::serve(station, "127.0.0.1:0".parse().expect("address"))
        .await
        .expect("binds");
    let truth = sim.snapshot().values[&point.name];
    assert!(
        truth.abs() > 1.0,
        "a value that shows the byte order: {truth}"
    );
    let (lo, hi) = (truth * 0.5, truth * 1.5);
    let (lo, hi) = (lo.min(hi), lo.max(hi));
    let port = sim.local_addr().port();
    let register = format!("{:?}", point.register).to_lowercase();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_gaswatch"))
            .args([
                "probe",
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--unit",
                &unit.to_string(),
                "--address",
                &point.address.to_string(),
                "--register",
                &register,
                "--expect",
                &format!("{lo}..{hi}"),
            ])
            .output()
            .expect("runs gaswatch probe")
    })
    .await
    .expect("joined");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let first = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("1 "))
        .unwrap_or_else(|| panic!("no ranked line:\n{stdout}"));
    let cols: Vec<&str> = first.split_whitespace().collect();
    assert_eq!(
        (cols[1], cols[3], cols[4], cols[6]),
        ("0", "f32", "CDAB", "in"),
        "{stdout}"
    );
    sim.stop().await;
}
