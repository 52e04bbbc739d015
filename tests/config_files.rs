//! Every config shipped in `config/` parses and validates, and bad configs
//! produce errors that name the file, the key (or line) and what was expected.

use gaswatch::config::Config;
use std::path::Path;

#[test]
fn every_shipped_config_is_valid() {
    let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/config"));
    let mut n = 0;
    for entry in std::fs::read_dir(dir).expect("config/ exists") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "toml") {
            if let Err(e) = Config::load(&path) {
                panic!("{e}");
            }
            n += 1;
        }
    }
    assert!(
        n >= 2,
        "expected the reference and at least one station config"
    );
}

fn problems(text: &str) -> String {
    match Config::from_str_named(text, Path::new("bad.toml")) {
        Ok(_) => panic!("expected an error for:\n{text}"),
        Err(e) => e.to_string(),
    }
}

const BASE: &str = r#"
[station]
id = "s1"
kind = "city_gate"
[[devices]]
id = "d1"
host = "127.0.0.1"
[[devices.points]]
name = "P1"
register = "holding"
address = 0
type = "u16"
[sinks.file]
dir = "x"
"#;

#[test]
fn unknown_key_names_file_line_and_field() {
    let text = BASE.replace("unit_id", "").replace(
        "host = \"127.0.0.1\"",
        "host = \"127.0.0.1\"\npoll_intervall = \"1s\"",
    );
    let e = problems(&text);
    assert!(e.starts_with("bad.toml:8: poll_intervall: "), "{e}");
    assert!(e.contains("unknown field `poll_intervall`"), "{e}");
    assert!(e.contains("poll_interval"), "lists the expected keys: {e}");
}

#[test]
fn wrong_type_names_expected_values() {
    let e = problems(&BASE.replace("type = \"u16\"", "type = \"float\""));
    assert!(
        e.starts_with("bad.toml:12: type: unknown variant `float`"),
        "{e}"
    );
    assert!(e.contains("u16") && e.contains("f32"), "{e}");
}

#[test]
fn all_validation_problems_are_reported_at_once_with_keys() {
    let text = BASE.to_string()
        + r#"
[[meters]]
name = "M"
role = "inlet"
flow = "NOPE"
[[limits]]
point = "P1"
h = 10.0
hh = 5.0
[balance]
limit_percent = -1.0
"#;
    let e = problems(&text);
    for want in [
        "bad.toml: meters[0].flow: expected the name of a point defined under [[devices.points]], got \"NOPE\"",
        "bad.toml: meters: a balance needs at least one inlet and one outlet meter",
        "bad.toml: limits[0].hh: expected ll < l < h < hh",
        "bad.toml: balance.limit_percent: expected a positive percentage, got -1",
    ] {
        assert!(e.contains(want), "missing {want:?} in:\n{e}");
    }
    assert_eq!(e.lines().count(), 4, "{e}");
}

#[test]
fn duplicate_points_word_order_and_missing_sink() {
    let text = BASE.replace("[sinks.file]\ndir = \"x\"\n", "")
        + r#"
[[devices.points]]
name = "P1"
register = "input"
address = 1
type = "i16"
order = "CDAB"
"#;
    let e = problems(&text);
    assert!(
        e.contains(
            "devices[0].points[1].name: point name \"P1\" is already used at devices[0].points[0]"
        ),
        "{e}"
    );
    assert!(
        e.contains("devices[0].points[1].order: word order applies only to 32-bit types"),
        "{e}"
    );
    assert!(
        e.contains("bad.toml: sinks: expected at least one of"),
        "{e}"
    );
}

#[test]
fn v2_influx_requires_org_bucket_and_token_and_secret_shape() {
    let text = BASE.to_string()
        + r#"
[sinks.influxdb]
url = "127.0.0.1:8086"
api = "v2"
[sinks.mqtt]
host = "127.0.0.1"
password = { env = "A", file = "/b" }
"#;
    let e = problems(&text);
    for want in [
        "sinks.influxdb.url: expected an http:// or https:// URL",
        "sinks.influxdb.org",
        "sinks.influxdb.bucket",
        "sinks.influxdb.token",
        "sinks.mqtt.password: expected exactly one of `env` or `file`, found both",
    ] {
        assert!(e.contains(want), "missing {want:?} in:\n{e}");
    }
}

#[test]
fn secrets_never_show_in_debug_output() {
    let s = gaswatch::config::SecretString::new("hunter2".into());
    assert_eq!(format!("{s:?} {s}"), "*** ***");
}

#[test]
fn leak_test_windows_are_checked_with_their_keys() {
    let text = BASE.to_string()
        + r#"
[balance.leak]
tests = [
  { window = "10s" },
  { window = "5m", edge = "2m", min_leak_percent = 0.0 },
  { window = "1h", threshold_sigma = -1.0 },
]
"#;
    let e = problems(&text.replace("[balance.leak]", "[balance]\nedge = \"2m\"\n[balance.leak]"));
    for want in [
        "bad.toml: balance.edge: expected at most a quarter of balance.window (75s), got 120s",
        "bad.toml: balance.leak.tests[0].window: expected a window of 20s to 1 day, got 10s",
        "bad.toml: balance.leak.tests[1].edge: expected a half-width above 0 and at most a quarter of the window (75s), got 120s",
        "bad.toml: balance.leak.tests[1].min_leak_percent: expected 0-50 %, got 0",
        "bad.toml: balance.leak.tests[2].threshold_sigma: expected a positive number, got -1",
    ] {
        assert!(e.contains(want), "missing {want:?} in:\n{e}");
    }
}

const MAPPED: &str = r#"
[station]
id = "s1"
kind = "city_gate"
[[point_maps]]
name = "rtu-2"
[[point_maps.points]]
name = "PT"
register = "holding"
address = 0
type = "f32"
order = "CDAB"
unit = "kPa"
[[point_maps.points]]
name = "TT"
register = "input"
address = 10
type = "i16"
scale = 0.1
[[devices]]
id = "rtu07"
host = "127.0.0.1"
port = 1502
unit_id = 7
point_map = "rtu-2"
[[devices.points]]
name = "ZS_7"
register = "holding"
address = 30
type = "u16"
[[devices]]
id = "rtu08"
host = "127.0.0.1"
port = 1502
unit_id = 8
point_map = "rtu-2"
point_prefix = "R8_"
[sinks.file]
dir = "x"
"#;

/// `[[point_maps]]`: identical devices share one register map; each
/// device's copies are named with its prefix, the simulator (which reads
/// the same file) names them the same way.
#[test]
fn point_maps_expand_into_each_device_with_its_prefix() {
    let c = Config::from_str_named(MAPPED, Path::new("mapped.toml")).expect("valid");
    let names = |i: usize| -> Vec<&str> {
        c.devices[i]
            .points
            .iter()
            .map(|p| p.name.as_str())
            .collect()
    };
    assert_eq!(names(0), ["ZS_7", "rtu07.PT", "rtu07.TT"]);
    assert_eq!(names(1), ["R8_PT", "R8_TT"]);
    assert_eq!(c.devices[1].points[1].scale, 0.1);
    let sim = gaswatch_sim::config::StationConfig::from_toml_str(MAPPED).expect("sim reads it");
    let sim_names: Vec<&str> = sim
        .devices
        .iter()
        .flat_map(|d| d.points.iter().map(|p| p.name.as_str()))
        .collect();
    assert_eq!(
        sim_names,
        ["ZS_7", "rtu07.PT", "rtu07.TT", "R8_PT", "R8_TT"]
    );
}

/// The running daemon keeps its config folded (map points taken out) to
/// compare with a reloaded one: folding keeps a device's own points, the
/// comparison of folded configs sees a change in a map, a prefix or an own
/// point exactly as the expanded one does, and unfolding restores it.
#[test]
fn folded_configs_compare_like_expanded_ones_and_unfold_back() {
    let load = |t: &str| Config::from_str_named(t, Path::new("mapped.toml")).expect("valid");
    let full = load(MAPPED);
    let mut folded = full.clone();
    let taken = folded.fold_point_maps();
    let names: Vec<Vec<&str>> = folded
        .devices
        .iter()
        .map(|d| d.points.iter().map(|p| p.name.as_str()).collect())
        .collect();
    assert_eq!(names, [vec!["ZS_7"], vec![]]);
    let mut back = folded.clone();
    back.unfold_point_maps(taken);
    assert_eq!(back, full);
    for (what, text) in [
        ("same text", MAPPED.to_string()),
        (
            "map point scale",
            MAPPED.replace("scale = 0.1", "scale = 0.2"),
        ),
        ("prefix", MAPPED.replace("\"R8_\"", "\"R9_\"")),
        ("own point", MAPPED.replace("address = 30", "address = 31")),
    ] {
        let mut other = load(&text);
        let expanded_equal = other == full;
        drop(other.fold_point_maps());
        assert_eq!(other == folded, expanded_equal, "{what}");
    }
}

#[test]
fn point_map_problems_name_the_map_entry_and_the_device() {
    let e = problems(&MAPPED.replace(
        "point_map = \"rtu-2\"\npoint_prefix",
        "point_map = \"rtu-3\"\npoint_prefix",
    ));
    assert!(e.contains("devices[1].point_map"), "{e}");
    assert!(e.contains("no map `rtu-3`; maps: rtu-2"), "{e}");
    // Both devices get the map's bad point; each problem names the map's
    // point (what the operator wrote) and the device using it.
    let e = problems(&MAPPED.replace(
        "type = \"f32\"\norder = \"CDAB\"",
        "type = \"u16\"\norder = \"CDAB\"",
    ));
    assert!(e.contains("point_maps[0].points[0].order"), "{e}");
    assert!(e.contains("(as used by device `rtu07`)"), "{e}");
    assert!(e.contains("(as used by device `rtu08`)"), "{e}");
    // The same prefix twice makes the same names: reported, not merged.
    let e = problems(&MAPPED.replace("point_prefix = \"R8_\"", "point_prefix = \"rtu07.\""));
    assert!(e.contains("point_maps[0].points[0].name"), "{e}");
}

#[test]
fn gc_composition_is_checked_with_its_keys() {
    let text = BASE.to_string()
        + r#"
[gas]
method = "fixed"
[gas.gc]
components = { methane = "P1", unobtainium = "P1", ethane = "NOPE" }
sum_tolerance_percent = 20.0
"#;
    let e = problems(&text);
    for want in [
        "bad.toml: gas.gc: a live composition needs method \"aga8_detail\" or \"gerg2008\"",
        "bad.toml: gas.gc.components.unobtainium: unknown component",
        "bad.toml: gas.gc.sum_tolerance_percent: expected 0-10 %, got 20",
        "bad.toml: gas.gc.components.ethane: expected the name of a point defined under [[devices.points]], got \"NOPE\"",
    ] {
        assert!(e.contains(want), "missing {want:?} in:\n{e}");
    }
}

const TWO_LINES: &str = r#"
[station]
id = "s1"
kind = "city_gate"
[[devices]]
id = "d1"
host = "127.0.0.1"
[[devices.points]]
name = "F1"
register = "holding"
address = 0
type = "u16"
[[devices.points]]
name = "F2"
register = "holding"
address = 1
type = "u16"
[[devices.points]]
name = "F3"
register = "holding"
address = 2
type = "u16"
[[devices.points]]
name = "P"
register = "holding"
address = 3
type = "u16"
[[meters]]
name = "IN1"
role = "inlet"
flow = "F1"
[[meters]]
name = "OUT1"
role = "outlet"
flow = "F2"
[[meters]]
name = "OUT2"
role = "outlet"
flow = "F3"
[[linepack]]
name = "header"
volume_m3 = 10.0
pressure = "P"
temperature = "P"
[sinks.file]
dir = "x"
"#;

/// `[[balance.groups]]`: every problem names the group (by index in the key
/// and by id in the message) and the key.
#[test]
fn balance_groups_are_checked_with_the_group_and_the_key() {
    let text = TWO_LINES.to_string()
        + r#"
[[balance.groups]]
id = "lineA"
inlet = ["IN1", "IN9"]
outlet = ["OUT1", "IN1"]
linepack = ["header", "sphere"]
limit_percent = 0.0

[[balance.groups]]
id = "lineA"
outlet = ["OUT1"]

[[balance.groups]]
id = "line A"
inlet = ["IN1"]
"#;
    let e = problems(&text);
    for want in [
        "bad.toml: balance.groups[0].inlet[1]: group \"lineA\": expected the name of a [[meters]] entry, got \"IN9\"",
        "bad.toml: balance.groups[0].outlet[1]: group \"lineA\": meter \"IN1\" is both an inlet and an outlet; a meter takes one role in a group",
        "bad.toml: balance.groups[0].linepack[1]: group \"lineA\": expected the name of a [[linepack]] entry, got \"sphere\"",
        "bad.toml: balance.groups[0].limit_percent: group \"lineA\": expected a positive percentage, got 0",
        "bad.toml: balance.groups[1].id: group id \"lineA\" is already used by balance.groups[0]; ids must be unique",
        "bad.toml: balance.groups[1].inlet: group \"lineA\" needs at least one inlet meter (its 输差率 is a share of the inlet)",
        "bad.toml: balance.groups[2].id: expected 1-23 letters, digits, '_' or '-', got \"line A\"",
        "bad.toml: balance.groups[2].outlet: group \"line A\" needs at least one outlet meter or line-pack element; otherwise all of its inlet counts as imbalance",
        "bad.toml: meters[2]: meter \"OUT2\" is in no [[balance.groups]] entry: add it to a group's inlet or outlet (its gas is otherwise in no balance), or remove the [[meters]] entry and keep its points",
    ] {
        assert!(e.contains(want), "missing {want:?} in:\n{e}");
    }
    // The element is in group 0, so it is not reported as unused.
    assert!(!e.contains("line-pack element \"header\""), "{e}");

    let text = TWO_LINES.to_string()
        + r#"
[[balance.groups]]
id = "lineA"
inlet = ["IN1"]
outlet = ["OUT1", "OUT2"]
"#;
    let e = problems(&text);
    assert!(
        e.contains(
            "bad.toml: linepack[0]: line-pack element \"header\" is in no [[balance.groups]] entry"
        ),
        "{e}"
    );
    // A meter may be in several groups, with a different role in each
    // (the spheres' feed: an outlet of the pipework, the inlet of the spheres).
    let text = TWO_LINES.to_string()
        + r#"
[[balance.groups]]
id = "pipework"
inlet = ["IN1"]
outlet = ["OUT1", "OUT2"]

[[balance.groups]]
id = "spheres"
inlet = ["OUT2"]
linepack = ["header"]
"#;
    if let Err(e) = Config::from_str_named(&text, Path::new("ok.toml")) {
        panic!("{e}");
    }
}
