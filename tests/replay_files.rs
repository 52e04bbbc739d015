//! `gaswatch replay` of wide CSV and line protocol through the engine:
//! balance windows, an imbalance (leak) alarm, bad rows reported with file
//! and line, `--strict`, determinism across runs, and the scorecard.

use gaswatch::cli::replay::{Replayer, Summary, replay_files};
use gaswatch::cli::scorecard;
use gaswatch::config::Config;
use gaswatch::engine::EnginePlan;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

const STATION: &str = include_str!("../config/city-gate.toml");
/// 2026-01-01T00:00:00Z in ms: windows of 5 min align on it.
const T0_MS: i64 = 1_767_225_600_000;

fn plan() -> Arc<EnginePlan> {
    let c = Config::from_str_named(STATION, Path::new("city-gate.toml")).expect("config");
    Arc::new(EnginePlan::compile(&c))
}

/// 30 min of 1 s rows: balanced for 10 min, then 10 % of the inlet lost.
fn station_rows() -> Vec<(i64, f64, f64, f64)> {
    (0..1800)
        .map(|s| {
            let leak = if s >= 600 { 1000.0 } else { 0.0 };
            (
                T0_MS + s * 1000,
                10_000.0,
                6_000.0 - leak * 0.6,
                4_000.0 - leak * 0.4,
            )
        })
        .collect()
}

fn write_csv(path: &Path, bad: bool) {
    let mut s = String::from("time,FT_IN1,FT_OUT1,FT_OUT2,PT_OUT1\n");
    for (i, (t, a, b, c)) in station_rows().into_iter().enumerate() {
        if bad && i == 5 {
            s.push_str("not-a-time,1,2,3,4\n");
        }
        if bad && i == 7 {
            s.push_str(&format!("{},x,{b},{c},\n", t));
            continue;
        }
        // RFC 3339 for half the rows, epoch ms for the rest: both accepted.
        let time = if i % 2 == 0 {
            gaswatch::model::Timestamp::from_millis(t).to_rfc3339()
        } else {
            t.to_string()
        };
        s.push_str(&format!("{time},{a},{b},{c},1500\n"));
    }
    std::fs::write(path, s).expect("write csv");
}

fn write_lp(path: &Path) {
    let mut s = String::from("# DML\n# CONTEXT-DATABASE: gaswatch\n");
    for (t, a, b, c) in station_rows() {
        let ns = t * 1_000_000;
        for (dev, point, v) in [
            ("fc-in", "FT_IN1", a),
            ("plc-out", "FT_OUT1", b),
            ("rtu-out2", "FT_OUT2", c),
            ("plc-out", "PT_OUT1", 1500.0),
        ] {
            s.push_str(&format!(
                "telemetry,device={dev},point={point},station=cg01,unit=x value={v},quality=\"good\" {ns}\n"
            ));
        }
        s.push_str(&format!("balance,station=cg01 imbalance_percent=0 {ns}\n"));
    }
    std::fs::write(path, s).expect("write lp");
}

fn replay(
    files: &[PathBuf],
    strict: bool,
    events: &Path,
) -> (Result<(), String>, Summary, Vec<String>) {
    let plan = plan();
    let out = std::fs::File::create(events).expect("events");
    let mut r = Replayer::new(
        Arc::clone(&plan),
        Duration::from_secs(1),
        Some(Box::new(std::io::BufWriter::new(out))),
        None,
    )
    .expect("replayer");
    let mut bad = Vec::new();
    let res = replay_files(
        &mut r,
        &plan,
        files,
        gaswatch::cli::replay::ReadOptions {
            strict,
            ..Default::default()
        },
        &indicatif::ProgressBar::hidden(),
        &mut |b| bad.push(b.to_string()),
    )
    .map_err(|e| e.to_string());
    (res, r.summary.clone(), bad)
}

fn check_leak_found(s: &Summary) {
    // Windows end at :05 .. :30; the first ends when the first row's window closes.
    assert_eq!(s.windows.len(), 5, "{:?}", s.windows);
    assert!(s.windows[0].imbalance_percent.abs() < 1e-9);
    assert!((s.windows[2].imbalance_percent - 10.0).abs() < 1e-6);
    assert_eq!(s.leaks.len(), 1, "one imbalance alarm raised");
    let leak = &s.leaks[0];
    assert_eq!(
        leak.raised.nanos(),
        (T0_MS + 900_000) * 1_000_000,
        "at the end of the first leaking window"
    );
    assert!(
        (leak.rate_sm3_per_h - 1000.0).abs() < 1.0,
        "{}",
        leak.rate_sm3_per_h
    );
}

#[test]
fn csv_replay_finds_the_leak_and_reports_bad_rows_with_file_and_line() {
    let tmp = tempfile::tempdir().expect("tmp");
    let csv = tmp.path().join("day.csv");
    write_csv(&csv, true);
    let (res, s, bad) = replay(
        std::slice::from_ref(&csv),
        false,
        &tmp.path().join("e.jsonl"),
    );
    res.expect("replay goes on past bad rows");
    assert_eq!(s.bad_rows, 2, "{bad:?}");
    assert!(
        bad[0].contains("day.csv:7:") && bad[0].contains("not-a-time"),
        "{bad:?}"
    );
    assert!(
        bad[1].contains("day.csv:10:") && bad[1].contains("FT_IN1"),
        "{bad:?}"
    );
    check_leak_found(&s);

    let (res, _, _) = replay(&[csv], true, &tmp.path().join("e2.jsonl"));
    let err = res.expect_err("--strict stops");
    assert!(err.contains("day.csv:7:"), "{err}");
}

#[test]
fn line_protocol_replay_gives_the_same_events_as_csv_and_is_deterministic() {
    let tmp = tempfile::tempdir().expect("tmp");
    let csv = tmp.path().join("day.csv");
    let lp = tmp.path().join("day.lp");
    write_csv(&csv, false);
    write_lp(&lp);
    let (e1, e2, e3) = (
        tmp.path().join("1.jsonl"),
        tmp.path().join("2.jsonl"),
        tmp.path().join("3.jsonl"),
    );
    let (r, s_lp, bad) = replay(std::slice::from_ref(&lp), true, &e1);
    r.expect("lp replay");
    assert!(bad.is_empty());
    assert_eq!(
        s_lp.skipped_rows,
        1800 + 2,
        "balance lines and comments are skipped"
    );
    check_leak_found(&s_lp);
    let (r, _, _) = replay(&[lp], true, &e2);
    r.expect("again");
    let (r, _, _) = replay(&[csv], true, &e3);
    r.expect("csv");
    let a = std::fs::read_to_string(&e1).expect("read");
    assert_eq!(
        a,
        std::fs::read_to_string(&e2).expect("read"),
        "two runs differ"
    );
    assert_eq!(
        a,
        std::fs::read_to_string(&e3).expect("read"),
        "CSV and LP differ"
    );
    let types: Vec<String> = a
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("json");
            v["type"].as_str().expect("type").to_string()
        })
        .collect();
    assert_eq!(types.iter().filter(|t| *t == "balance").count(), 5);
    assert!(types.iter().any(|t| t == "alarm"));
}

#[test]
fn scorecard_counts_detections_misses_and_false_alarms() {
    let tmp = tempfile::tempdir().expect("tmp");
    let csv = tmp.path().join("day.csv");
    write_csv(&csv, false);
    let (r, s, _) = replay(&[csv], true, &tmp.path().join("e.jsonl"));
    r.expect("replay");
    let start = (T0_MS + 600_000) * 1_000_000;
    let truth = format!(
        "{{\"type\":\"values\",\"t_ns\":0}}\n\
         {{\"type\":\"event\",\"id\":\"leak-1\",\"kind\":\"leak\",\"phase\":\"start\",\"t_ns\":{start},\"detect\":\"imbalance\"}}\n\
         {{\"type\":\"event\",\"id\":\"exc-1\",\"kind\":\"pressure_excursion\",\"phase\":\"start\",\"t_ns\":{start},\"detect\":\"PT_OUT1\"}}\n\
         {{\"type\":\"event\",\"id\":\"exc-1\",\"kind\":\"pressure_excursion\",\"phase\":\"end\",\"t_ns\":{}}}\n",
        start + 60_000_000_000
    );
    let incidents = scorecard::parse_truth(&truth).expect("truth");
    let card = scorecard::score(&incidents, &s.alarms, Duration::from_secs(300));
    assert_eq!((card.expected, card.detected, card.missed), (2, 1, 1));
    assert_eq!(
        card.scored[0]
            .detected
            .map(|d| d.since(gaswatch::model::Timestamp(start)) / 1_000_000_000),
        Some(300),
        "detected 5 min after the start"
    );
    assert!(card.false_alarms.is_empty(), "{:?}", card.false_alarms);
    let mut text = Vec::new();
    scorecard::print(&mut text, &card).expect("print");
    let text = String::from_utf8(text).expect("utf8");
    assert!(text.contains("MISSED") && text.contains("300 s"), "{text}");

    assert_eq!(
        scorecard::parse_truth("{\"type\":\"event\",\"id\":\"a\",\"phase\":\"end\",\"t_ns\":1}\n"),
        Err((1, "end of `a` without a start".into()))
    );
}
