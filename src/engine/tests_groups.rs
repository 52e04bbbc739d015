//! Balance groups through the engine contract: a city gate with two
//! independent lines (A: IN1 -> OUT1, OUT2 with pipe A; B: IN2 -> OUT3 with
//! pipe B) plus the station total, each balanced, alarmed and leak-tested
//! on its own.

use super::*;
use crate::config::{Config, MeterRole};
use crate::model::{AlarmAction, AlarmKind, GroupId};
use std::path::Path;

const S: i64 = 1_000_000_000;
/// A 2000 m3 element (ideal gas, 20 degC): Sm3 of pack per kPa.
const SM3_PER_KPA: f64 = 2000.0 / 101.325;

const POINTS: [&str; 8] = [
    "FT_IN1", "FT_IN2", "FT_OUT1", "FT_OUT2", "FT_OUT3", "PT_A", "PT_B", "TT",
];

fn config_text(groups: &str, extra: &str) -> String {
    let mut text = String::from(
        r#"
[station]
id = "t3"
kind = "city_gate"

[[devices]]
id = "fc"
host = "127.0.0.1"
port = 5020
unit_id = 1
poll_interval = "1s"
"#,
    );
    for (i, p) in POINTS.iter().enumerate() {
        text.push_str(&format!(
            "[[devices.points]]\nname = \"{p}\"\nregister = \"holding\"\naddress = {}\ntype = \"f32\"\n",
            i * 2
        ));
    }
    for (name, role, flow) in [
        ("IN1", "inlet", "FT_IN1"),
        ("IN2", "inlet", "FT_IN2"),
        ("OUT1", "outlet", "FT_OUT1"),
        ("OUT2", "outlet", "FT_OUT2"),
        ("OUT3", "outlet", "FT_OUT3"),
    ] {
        text.push_str(&format!(
            "[[meters]]\nname = \"{name}\"\nrole = \"{role}\"\nflow = \"{flow}\"\nuncertainty_percent = 0.5\n"
        ));
    }
    for (name, pt) in [("pipe-a", "PT_A"), ("pipe-b", "PT_B")] {
        text.push_str(&format!(
            "[[linepack]]\nname = \"{name}\"\nvolume_m3 = 2000.0\npressure = \"{pt}\"\ntemperature = \"TT\"\nuncertainty_percent = 0.0\n"
        ));
    }
    text.push_str(&format!(
        r#"
[balance]
window = "60s"
longer_windows = []
gas_day = false
{extra}
{groups}

[sinks.file]
dir = "x"
"#
    ));
    text
}

/// The station total (id "station": the legacy ids and series), line A and
/// line B.
const TWO_LINES: &str = r#"
[[balance.groups]]
id = "station"
name = "Station total"
inlet = ["IN1", "IN2"]
outlet = ["OUT1", "OUT2", "OUT3"]
linepack = ["pipe-a", "pipe-b"]
limit_percent = 5.0

[[balance.groups]]
id = "lineA"
name = "Line A (DN500)"
inlet = ["IN1"]
outlet = ["OUT1", "OUT2"]
linepack = ["pipe-a"]

[[balance.groups]]
id = "lineB"
inlet = ["IN2"]
outlet = ["OUT3"]
linepack = ["pipe-b"]
"#;

fn engine(groups: &str, extra: &str) -> Engine {
    let text = config_text(groups, extra);
    let c = Config::from_str_named(&text, Path::new("t3.toml")).expect("valid config");
    Engine::new(Arc::new(EnginePlan::compile(&c)), 0)
}

/// One scan: `vals` in `POINTS` order, then a tick at the same time.
fn feed(e: &mut Engine, t: i64, vals: [f64; 8], out: &mut Output) {
    let plan = Arc::clone(e.plan());
    let values = POINTS
        .iter()
        .zip(vals)
        .map(|(p, v)| (plan.tag(p).expect("point"), v, Quality::Good))
        .collect();
    e.process(
        &Input::Values {
            ts: Timestamp(t * S),
            values,
        },
        out,
    );
    e.tick(Timestamp(t * S), out);
}

fn group(id: &str) -> GroupId {
    GroupId::new(id).expect("id")
}

#[test]
fn each_group_has_its_members_alarm_ids_and_limit() {
    let e = engine(TWO_LINES, "");
    let plan = e.plan();
    let ids: Vec<&str> = plan.groups.iter().map(|g| g.id.as_str()).collect();
    assert_eq!(ids, ["station", "lineA", "lineB"]);
    // The station group keeps the ids of a station without groups; the
    // others are `balance.<id>`.
    for id in [
        "t3/balance/IMBALANCE",
        "t3/balance/LEAK",
        "t3/balance.lineA/IMBALANCE",
        "t3/balance.lineA/LEAK",
        "t3/balance.lineB/IMBALANCE",
        "t3/balance.lineB/LEAK",
    ] {
        assert!(plan.alarm_index(id).is_some(), "no alarm {id}");
    }
    let a = &plan.groups[1];
    assert_eq!(a.name, "Line A (DN500)");
    assert_eq!(plan.groups[2].name, "lineB");
    assert_eq!(
        a.meters
            .iter()
            .map(|&(m, role)| (plan.meters[m as usize].name.as_str(), role))
            .collect::<Vec<_>>(),
        [
            ("IN1", MeterRole::Inlet),
            ("OUT1", MeterRole::Outlet),
            ("OUT2", MeterRole::Outlet)
        ]
    );
    assert_eq!(plan.groups[0].limit_percent, 5.0);
    assert_eq!(a.limit_percent, 1.0, "the station-wide default");
    // IN1 feeds the station total and line A.
    let in1 = plan
        .meters
        .iter()
        .position(|m| m.name == "IN1")
        .expect("IN1");
    assert_eq!(plan.meter_groups[in1], [(0, 0), (1, 0)]);
}

#[test]
fn longer_windows_of_a_group_have_their_own_alarm_ids() {
    let e = engine(TWO_LINES, "");
    assert!(
        e.plan()
            .alarm_index("t3/balance.lineA-1h/IMBALANCE")
            .is_none()
    );
    let text = config_text(TWO_LINES, "").replace("longer_windows = []\n", "");
    let c = Config::from_str_named(&text, Path::new("t3.toml")).expect("valid");
    let plan = EnginePlan::compile(&c);
    for id in [
        "t3/balance-1h/IMBALANCE",
        "t3/balance.lineA-1h/IMBALANCE",
        "t3/balance.lineB-1h/IMBALANCE",
    ] {
        assert!(plan.alarm_index(id).is_some(), "no alarm {id}");
    }
}

/// 输差 per group, by hand. Line A: IN1 20,000 Sm3/h, OUT1 12,000, OUT2
/// 7,700 (300 Sm3/h unaccounted for); line B: IN2 10,000 + the pack of a
/// pressure ramp on pipe B, OUT3 10,000. Per 60 s window:
/// - A: in 333.333, out 328.333, imbalance 5 Sm3 = 1.5 %: above its 1 %
///   limit and its uncertainty (0.5 % meters: sqrt(333.3² + 200² + 128.3²)
///   * 0.005 / 333.3 = 0.61 %): IMBALANCE raised.
/// - B: in 166.667 + pack, out 166.667, pack change = 0.1 kPa/s * 60 s *
///   19.74 Sm3/kPa = 118.43 Sm3: imbalance 0 (the pack is B's alone).
/// - Station: in 500 + pack, out 495 + pack: 5 Sm3 of 618.4 Sm3 = 0.81 %,
///   under its own 5 % limit: no alarm.
#[test]
fn imbalance_per_group_is_hand_computed_and_alarmed_against_its_own_limit() {
    let mut e = engine(TWO_LINES, "[balance.leak]\nenabled = false");
    let mut out = Output::default();
    let mut results = Vec::new();
    let mut raised = Vec::new();
    let pack_rate_sm3_per_h = 0.1 * SM3_PER_KPA * 3600.0;
    for t in 0..=250 {
        out.clear();
        let pb = 1600.0 + 0.1 * t as f64;
        feed(
            &mut e,
            t,
            [
                20_000.0,
                10_000.0 + pack_rate_sm3_per_h,
                12_000.0,
                7_700.0,
                10_000.0,
                1600.0,
                pb,
                20.0,
            ],
            &mut out,
        );
        results.extend(out.balances.iter().copied());
        for a in &out.alarms {
            if a.action == AlarmAction::Raise {
                raised.push(e.plan().alarms[a.alarm as usize].id.clone());
            }
        }
    }
    let at = |g: &str, start: i64| {
        *results
            .iter()
            .find(|r| r.group == group(g) && r.start == Timestamp(start * S))
            .expect("window")
    };
    let a = at("lineA", 120);
    assert!((a.inlet_sm3 - 20_000.0 / 60.0).abs() < 1e-6, "{a:?}");
    assert!((a.outlet_sm3 - 19_700.0 / 60.0).abs() < 1e-6, "{a:?}");
    assert!((a.imbalance_sm3 - 5.0).abs() < 1e-6, "{a:?}");
    assert!((a.imbalance_percent - 1.5).abs() < 1e-6, "{a:?}");
    let u = (20_000.0f64.powi(2) + 12_000.0f64.powi(2) + 7_700.0f64.powi(2)).sqrt() * 0.005
        / 20_000.0
        * 100.0;
    assert!((a.uncertainty_percent - u).abs() < 1e-6, "{a:?} vs {u}");
    assert_eq!(a.linepack_change_sm3, 0.0);
    let b = at("lineB", 120);
    let pack = 0.1 * 60.0 * SM3_PER_KPA;
    assert!((b.linepack_change_sm3 - pack).abs() < 1e-3, "{b:?}");
    assert!(b.imbalance_sm3.abs() < 1e-3, "{b:?}");
    let st = at("station", 120);
    assert!((st.linepack_change_sm3 - pack).abs() < 1e-3, "{st:?}");
    assert!((st.imbalance_sm3 - 5.0).abs() < 1e-3, "{st:?}");
    assert!(
        (st.imbalance_percent - 5.0 / (500.0 + pack) * 100.0).abs() < 1e-4,
        "{st:?}"
    );
    assert!(raised.contains(&"t3/balance.lineA/IMBALANCE".to_string()));
    assert!(
        !raised
            .iter()
            .any(|id| id.contains("lineB") || id == "t3/balance/IMBALANCE"),
        "{raised:?}"
    );
}

/// A 5 % leak on line A (1,000 Sm3/h of its 20,000) after two hours of
/// normal operation: line A's leak test and the station total's fire with
/// their group; line B's, whose meters and pipe do not see it, stays quiet.
#[test]
fn a_leak_on_one_line_is_attributed_to_its_group_and_the_total_only() {
    let mut e = engine(TWO_LINES, "[balance.leak]\ntests = [{ window = \"5m\" }]");
    let mut out = Output::default();
    let leak_at = 7200 + 100;
    let (mut raised, mut alerts) = (Vec::new(), Vec::new());
    for t in 0..=leak_at + 900 {
        out.clear();
        let noise = 1.0 + 0.001 * (t as f64 * 1.3).sin();
        let noise_b = 1.0 + 0.001 * (t as f64 * 0.7).cos();
        let leak = if t >= leak_at { 1000.0 } else { 0.0 };
        feed(
            &mut e,
            t,
            [
                20_000.0 + leak,
                10_000.0,
                12_000.0 * noise,
                8_000.0 * noise,
                10_000.0 * noise_b,
                1600.0,
                1600.0,
                20.0,
            ],
            &mut out,
        );
        for a in &out.alarms {
            if a.kind == AlarmKind::Leak && a.action == AlarmAction::Raise {
                raised.push((t, e.plan().alarms[a.alarm as usize].id.clone()));
            }
        }
        alerts.extend(out.leaks.iter().copied());
    }
    let ids: Vec<&str> = raised.iter().map(|(_, id)| id.as_str()).collect();
    assert!(ids.contains(&"t3/balance.lineA/LEAK"), "{raised:?}");
    assert!(ids.contains(&"t3/balance/LEAK"), "{raised:?}");
    assert!(!ids.iter().any(|id| id.contains("lineB")), "{raised:?}");
    assert!(raised.iter().all(|(t, _)| *t > leak_at), "{raised:?}");
    let a = alerts
        .iter()
        .find(|a| a.group == group("lineA"))
        .expect("line A alert");
    assert!((a.rate_sm3_per_h - 1000.0).abs() < 100.0, "{a:?}");
    // 5 % of line A, 3.3 % of the station's throughput.
    assert!((a.rate_percent - 5.0).abs() < 0.5, "{a:?}");
    let st = alerts
        .iter()
        .find(|a| a.group == GroupId::STATION)
        .expect("station alert");
    assert!((st.rate_percent - 100.0 / 30.0).abs() < 0.5, "{st:?}");
    assert!(
        !alerts.iter().any(|a| a.group == group("lineB")),
        "{alerts:?}"
    );
}

/// Without `[[balance.groups]]` the station has one group, "station", of
/// every meter by its role and every element: the ids and results of a
/// single-balance station.
#[test]
fn without_groups_there_is_one_station_group_of_everything() {
    let e = engine("", "");
    let plan = e.plan();
    assert_eq!(plan.groups.len(), 1);
    let g = &plan.groups[0];
    assert_eq!(g.id, GroupId::STATION);
    assert_eq!(g.meters.len(), 5);
    assert_eq!(g.linepack, [0, 1]);
    assert!(plan.alarm_index("t3/balance/IMBALANCE").is_some());
    assert!(plan.alarm_index("t3/balance/LEAK").is_some());
    assert_eq!(
        plan.alarms
            .iter()
            .filter(|a| a.id.contains("balance"))
            .count(),
        2
    );
}
