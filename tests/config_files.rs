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
    let e = problems(&text);
    for want in [
        "bad.toml: balance.leak.tests[0].window: expected a window of 20s to 1 day, got 10s",
        "bad.toml: balance.leak.tests[1].edge: expected a half-width above 0 and at most a quarter of the window (75s), got 120s",
        "bad.toml: balance.leak.tests[1].min_leak_percent: expected 0-50 %, got 0",
        "bad.toml: balance.leak.tests[2].threshold_sigma: expected a positive number, got -1",
    ] {
        assert!(e.contains(want), "missing {want:?} in:\n{e}");
    }
}
