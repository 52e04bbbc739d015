//! The `gaswatch` binary as an operator uses it: `check` exit codes and
//! messages, `--help` for every command.

use std::process::Command;

fn gaswatch(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_gaswatch"))
        .args(args)
        .output()
        .expect("run gaswatch");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_accepts_the_example_station() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/city-gate.toml");
    let (code, out, err) = gaswatch(&["check", "-c", path]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("OK: station cg01 (city_gate), 3 devices, 9 points"),
        "{out}"
    );
}

#[test]
fn check_reports_every_problem_and_exits_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        r#"
[station]
id = "s1"
kind = "city_gate"
[[devices]]
id = "d1"
host = "127.0.0.1"
max_registers_per_read = 200
[[devices.points]]
name = "P1"
register = "holding"
address = 0
type = "u16"
[[limits]]
point = "P2"
h = 1.0
"#,
    )
    .expect("write");
    let (code, _out, err) = gaswatch(&["check", "-c", path.to_str().expect("utf8")]);
    assert_eq!(code, 2, "{err}");
    let file = path.display().to_string();
    for want in [
        format!("{file}: devices[0].max_registers_per_read: expected 1-125"),
        format!("{file}: limits[0].point: expected the name of a point"),
        format!("{file}: sinks: expected at least one of"),
        format!("{file}: 3 problem(s) found"),
    ] {
        assert!(err.contains(&want), "missing {want:?} in:\n{err}");
    }
}

#[test]
fn check_of_a_missing_file_names_it_and_exits_2() {
    let (code, _out, err) = gaswatch(&["check", "-c", "/nonexistent/station.toml"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("/nonexistent/station.toml: cannot read the file"),
        "{err}"
    );
}

#[test]
fn run_with_an_invalid_config_exits_2_before_touching_the_network() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("x.toml");
    std::fs::write(&path, "[station]\nid = \"\"\nkind = \"nope\"\n").expect("write");
    let (code, _out, err) = gaswatch(&["run", "-c", path.to_str().expect("utf8")]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("kind"), "{err}");
}

#[test]
fn help_lists_the_commands() {
    let (code, out, _) = gaswatch(&["--help"]);
    assert_eq!(code, 0);
    for cmd in ["run", "check", "demo"] {
        assert!(out.contains(cmd), "{out}");
    }
}
