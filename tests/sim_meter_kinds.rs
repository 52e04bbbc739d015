//! The simulator serves every meter kind the daemon reads (flow or
//! totaliser, base or line conditions, a totaliser that rolls over), and
//! the engine's balance closes on them: no spike at the rollover, the line
//! flow corrected back to base conditions. Pure: simulator and engine in
//! one process, time stepped (no sockets, no clock).

use gaswatch::config::Config;
use gaswatch::engine::{Engine, EnginePlan};
use gaswatch::model::{Input, Output, Quality, Timestamp};
use gaswatch_sim::{SimOptions, Station};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

const CITY_GATE: &str = include_str!("../config/city-gate.toml");
const S: i64 = 1_000_000_000;

/// The city gate with its inlet as a base-condition totaliser wrapping at
/// 200,000 Sm3 (it starts half-way, so it wraps after about 3.3 h at
/// 30,000 Sm3/h) and its first outlet as line-condition flow.
fn station_text() -> String {
    let t = CITY_GATE.replacen(
        "name = \"IN1\"\nrole = \"inlet\"\nflow = \"FT_IN1\"\n",
        "name = \"IN1\"\nrole = \"inlet\"\nflow = \"FT_IN1\"\nkind = \"base_totaliser\"\nrollover = 200000.0\n",
        1,
    );
    let t = t.replacen(
        "name = \"OUT1\"\nrole = \"outlet\"\nflow = \"FT_OUT1\"\n",
        "name = \"OUT1\"\nrole = \"outlet\"\nflow = \"FT_OUT1\"\nkind = \"line_flow\"\n",
        1,
    );
    assert_ne!(t, CITY_GATE, "the meters of config/city-gate.toml changed");
    assert!(t.contains("base_totaliser") && t.contains("line_flow"));
    t
}

#[test]
fn totaliser_rollover_and_line_flow_close_the_balance() {
    let text = station_text();
    let cfg =
        Config::from_str_named(&text, Path::new("city-gate-kinds.toml")).expect("daemon reads it");
    let plan = Arc::new(EnginePlan::compile(&cfg));
    let mut engine = Engine::new(Arc::clone(&plan), 0);
    let opts = SimOptions {
        seed: 7,
        ..SimOptions::default()
    };
    let mut station = Station::from_config_str(&text, &opts).expect("simulator reads it");
    let points: Vec<_> = cfg
        .devices
        .iter()
        .flat_map(|d| d.points.iter())
        .filter_map(|p| plan.tag(&p.name).map(|t| (t, p.name.clone())))
        .collect();

    let mut out = Output::default();
    let (mut wraps, mut last_total) = (0, None::<f64>);
    let mut line_vs_base = Vec::new();
    let mut windows = Vec::new();
    for k in 1..=5 * 3600i64 {
        station.step(Duration::from_secs(1));
        let total = station.true_value("FT_IN1").expect("FT_IN1");
        if last_total.is_some_and(|l| total < l) {
            wraps += 1;
        }
        last_total = Some(total);
        if k % 600 == 0 {
            let ft_out1 = station.true_value("FT_OUT1").expect("FT_OUT1");
            line_vs_base.push(ft_out1 / station.physics().demand_sm3_per_h);
        }
        let values = points
            .iter()
            .map(|(t, n)| (*t, station.true_value(n).unwrap_or(f64::NAN), Quality::Good))
            .collect();
        out.clear();
        engine.process(
            &Input::Values {
                ts: Timestamp(k * S),
                values,
            },
            &mut out,
        );
        engine.tick(Timestamp(k * S), &mut out);
        windows.extend(out.balances.iter().copied());
    }

    assert!(wraps >= 1, "the totaliser never rolled over");
    // OUT1 takes 60 % of demand at about 1.5 MPa: line volume is about
    // 101.325 / 1601 of base (times T/T_b), so far below the base flow.
    for r in &line_vs_base {
        assert!((0.6 * 0.05..0.6 * 0.08).contains(r), "line/base ratio {r}");
    }
    // Every full 5-minute window after the first closes within the noise:
    // the rollover is not a spike, the line flow is corrected to base.
    let five: Vec<_> = windows
        .iter()
        .filter(|b| b.end.since(b.start) == 300 * S && b.coverage >= 0.99)
        .collect();
    assert!(five.len() >= 55, "{} full 5-minute windows", five.len());
    for b in five.iter().skip(1) {
        assert!(
            b.imbalance_percent.abs() < 0.5,
            "window ending {:?}: imbalance {} % (inlet {} Sm3, outlet {} Sm3)",
            b.end,
            b.imbalance_percent,
            b.inlet_sm3,
            b.outlet_sm3
        );
    }
}
