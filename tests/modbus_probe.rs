//! `gaswatch probe` (the real binary) against the simulator, over every
//! transport the poller has (Modbus/TCP, RTU over TCP, RTU on a serial
//! port: the slave side of a pseudo-terminal): the decoding the operator
//! needs ranks first when the expected range is given, and a wrong endpoint
//! is an error naming it.

use gaswatch_sim::{Framing, SimHandle, SimOptions, Station};
use std::process::Command;

const CITY_GATE: &str = include_str!("../config/city-gate.toml");

/// A flow (f32 CDAB) from the example config, found by type so the test
/// follows the config: (unit id, point).
fn cdab_float() -> (u8, gaswatch_sim::config::PointConfig) {
    let cfg = gaswatch_sim::StationConfig::from_toml_str(CITY_GATE).expect("example parses");
    cfg.devices
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
        .expect("the example has a CDAB float")
}

fn station() -> Station {
    Station::from_config_str(CITY_GATE, &SimOptions::default()).expect("example builds")
}

/// Runs `gaswatch probe` with `link` (the transport arguments) for the
/// CDAB float served by `sim`; checks that f32 CDAB in base 0 ranks first.
async fn probe_ranks_cdab_first(sim: &SimHandle, link: Vec<String>) {
    let (unit, point) = cdab_float();
    let truth = sim.snapshot().values[&point.name];
    assert!(
        truth.abs() > 1.0,
        "a value that shows the byte order: {truth}"
    );
    let (lo, hi) = (truth * 0.5, truth * 1.5);
    let (lo, hi) = (lo.min(hi), lo.max(hi));
    let register = format!("{:?}", point.register).to_lowercase();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_gaswatch"))
            .arg("probe")
            .args(&link)
            .args([
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_ranks_the_true_type_and_order_first() {
    let sim = gaswatch_sim::serve(station(), "127.0.0.1:0".parse().expect("address"))
        .await
        .expect("binds");
    let port = sim.local_addr().port().to_string();
    probe_ranks_cdab_first(
        &sim,
        vec!["--host".into(), "127.0.0.1".into(), "--port".into(), port],
    )
    .await;
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_over_rtu_over_tcp() {
    let sim = gaswatch_sim::serve_with(
        station(),
        "127.0.0.1:0".parse().expect("address"),
        Framing::Rtu,
    )
    .await
    .expect("binds");
    let port = sim.local_addr().port().to_string();
    probe_ranks_cdab_first(
        &sim,
        vec![
            "--host".into(),
            "127.0.0.1".into(),
            "--port".into(),
            port,
            "--transport".into(),
            "rtu-over-tcp".into(),
        ],
    )
    .await;
    sim.stop().await;
}

/// Pseudo-terminals refuse parity, so 8N1 here (see tests/modbus_rtu.rs
/// for why the pair's own slave descriptor stays open).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_on_a_serial_port() {
    use tokio_serial::SerialPort;
    let (master, slave) = tokio_serial::SerialStream::pair().expect("openpty");
    let path = slave.name().expect("the slave side has a path");
    let sim = gaswatch_sim::serve_rtu_line(station(), master).expect("serves");
    probe_ranks_cdab_first(
        &sim,
        vec![
            "--serial".into(),
            path,
            "--baud".into(),
            "19200".into(),
            "--parity".into(),
            "none".into(),
        ],
    )
    .await;
    sim.stop().await;
    drop(slave);
}

#[test]
fn a_missing_endpoint_or_port_is_named() {
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_gaswatch"))
            .arg("probe")
            .args(args)
            .args(["--address", "0", "--timeout", "1s"])
            .output()
            .expect("runs gaswatch probe");
        assert!(!out.status.success(), "{args:?} succeeded");
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let e = run(&[]);
    assert!(e.contains("--host") && e.contains("--serial"), "{e}");
    let e = run(&["--serial", "/dev/gaswatch-no-such-port"]);
    assert!(e.contains("/dev/gaswatch-no-such-port"), "{e}");
}
