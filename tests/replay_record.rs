//! Record mode and exact replay: the daemon runs in-process against the
//! simulator with `record` on and a file sink; the capture is then replayed
//! into another file sink, and the two folders must hold the same bytes
//! (telemetry line protocol, alarm JSON lines, balance JSON lines). A second
//! replay must give the same bytes again (determinism across runs).

mod support;

use gaswatch::cli::replay::{Replayer, replay_files};
use gaswatch::config::{Config, LimitConfig};
use gaswatch::engine::EnginePlan;
use gaswatch::topology::{self, RunOptions};
use gaswatch_sim::{Leak, SimOptions, Station};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const STATION: &str = include_str!("../config/city-gate.toml");

/// Everything the file sink wrote, by file kind: all `.lp` files in name
/// order, then alarms, then balance.
fn sink_bytes(dir: &Path) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let mut lp: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "lp"))
        .collect();
    lp.sort();
    let telemetry = lp
        .iter()
        .flat_map(|p| std::fs::read(p).expect("read lp"))
        .collect();
    let read = |n: &str| std::fs::read(dir.join(n)).unwrap_or_default();
    (telemetry, read("alarms.jsonl"), read("balance.jsonl"))
}

fn lines(b: &[u8]) -> usize {
    b.iter().filter(|&&c| c == b'\n').count()
}

fn replay_capture(plan: &Arc<EnginePlan>, capture: &Path, out: &Path) {
    let mut r = Replayer::new(
        Arc::clone(plan),
        Duration::from_secs(1),
        None,
        Some(out.to_path_buf()),
    )
    .expect("replayer");
    let mut bad = Vec::new();
    replay_files(
        &mut r,
        plan,
        &[capture.to_path_buf()],
        gaswatch::cli::replay::ReadOptions {
            strict: true,
            ..Default::default()
        },
        &indicatif::ProgressBar::hidden(),
        &mut |b| bad.push(b.to_string()),
    )
    .expect("replay");
    assert!(bad.is_empty(), "bad records: {bad:?}");
    assert!(r.summary.ticks > 0 && r.summary.inputs > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaying_a_capture_reproduces_the_daemon_outputs_byte_for_byte() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let live_dir = tmp.path().join("live");
    let capture = tmp.path().join("run.gwcap");

    // A station with a 20 % leak, 1 s balance windows and an H limit below
    // the inlet pressure, so the run has samples, alarms and windows.
    let opts = SimOptions {
        leak: Some(Leak {
            start_after: Duration::ZERO,
            percent: 20.0,
            end_after: None,
        }),
        ..SimOptions::default()
    };
    let station = Station::from_config_str(STATION, &opts).expect("station");
    let any: SocketAddr = ([127, 0, 0, 1], 0).into();
    let handles = gaswatch_sim::serve_all(station, |_| any)
        .await
        .expect("serve");
    let mut c = Config::from_str_named(STATION, Path::new("city-gate.toml")).expect("config");
    for d in &mut c.devices {
        let h = handles
            .iter()
            .find(|(ep, _)| ep.host == d.host && ep.port == d.port)
            .map(|(_, h)| h)
            .expect("endpoint");
        d.port = h.local_addr().port();
        d.poll_interval = Duration::from_millis(100);
        d.timeout = Duration::from_millis(500);
    }
    c.balance.window = Duration::from_secs(1);
    c.balance.min_coverage = 0.5;
    let limit: LimitConfig =
        toml::from_str("point = \"PT_IN1\"\nh = 100.0\ndeadband = 1.0").expect("limit");
    c.limits.push(limit);
    c.limits
        .retain(|l| l.point != "PT_IN1" || l.h == Some(100.0));
    c.sinks.file = Some(gaswatch::sinks::file::config::FileSinkConfig {
        dir: live_dir.clone(),
    });
    c.spool.dir = tmp.path().join("spool");
    c.spool.flush_interval = Duration::from_millis(100);
    let plan = Arc::new(EnginePlan::compile(&c));

    let cancel = CancellationToken::new();
    let daemon = tokio::spawn(topology::run(
        c,
        RunOptions {
            record: Some(capture.clone()),
            ..Default::default()
        },
        cancel.clone(),
    ));
    let enough = support::wait_until_async(Duration::from_secs(30), || async {
        let (t, a, b) = sink_bytes(&live_dir);
        lines(&t) >= 50 && lines(&a) >= 2 && lines(&b) >= 3
    })
    .await;
    cancel.cancel();
    daemon.await.expect("join").expect("daemon");
    for (_, h) in handles {
        h.stop().await;
    }
    assert!(
        enough,
        "the daemon did not produce samples, alarms and windows in time"
    );

    let live = sink_bytes(&live_dir);
    let replay_dir = tmp.path().join("replay");
    replay_capture(&plan, &capture, &replay_dir);
    let replayed = sink_bytes(&replay_dir);
    assert!(live.0 == replayed.0, "telemetry differs");
    assert!(live.1 == replayed.1, "alarms differ");
    assert!(live.2 == replayed.2, "balance windows differ");

    let again_dir = tmp.path().join("again");
    replay_capture(&plan, &capture, &again_dir);
    assert!(sink_bytes(&again_dir) == replayed, "two replays differ");
}

/// A one-tick capture of `config` at `dir/name`.
fn tiny_capture(config: &Config, dir: &Path, name: &str) -> PathBuf {
    let plan = EnginePlan::compile(config);
    let path = dir.join(name);
    let mut w =
        gaswatch::sources::replay::capture::CaptureWriter::create(&path, &plan).expect("create");
    w.tick(gaswatch::model::Timestamp::from_secs(1))
        .expect("tick");
    w.flush().expect("flush");
    path
}

fn open_with(path: &Path, config: &Config) -> Result<Vec<String>, String> {
    let plan = Arc::new(EnginePlan::compile(config));
    gaswatch::sources::replay::open(path, None, &plan)
        .map(|(_, reader)| reader.notes().to_vec())
        .map_err(|e| e.to_string())
}

#[test]
fn a_capture_from_another_layout_is_refused_with_the_file_named() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let c = Config::from_str_named(STATION, Path::new("city-gate.toml")).expect("config");
    let path = tiny_capture(&c, tmp.path(), "x.gwcap");
    assert_eq!(open_with(&path, &c), Ok(vec![]), "same config: no note");
    // A point moved to another register: the recorded words mean something else.
    let mut moved = c.clone();
    moved.devices[0].points[0].address += 2;
    let msg = open_with(&path, &moved).expect_err("refused");
    assert!(
        msg.contains("x.gwcap")
            && msg.contains("different station config")
            && msg.contains("points or registers differ"),
        "{msg}"
    );
}

#[test]
fn a_capture_replays_under_other_tuning_with_a_note() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let c = Config::from_str_named(STATION, Path::new("city-gate.toml")).expect("config");
    let path = tiny_capture(&c, tmp.path(), "t.gwcap");
    // What an engineer changes to tune: a window, a limit, a point's scale.
    let mut tuned = c.clone();
    tuned.balance.window = Duration::from_secs(60);
    tuned.limits[0].h = Some(tuned.limits[0].h.unwrap_or(1.0) * 0.9);
    tuned.devices[0].points[0].scale *= 1.01;
    let notes = open_with(&path, &tuned).expect("accepted");
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(
        notes[0].contains("t.gwcap") && notes[0].contains("other tuning"),
        "{notes:?}"
    );
    // The replay summary carries the note.
    let plan = Arc::new(EnginePlan::compile(&tuned));
    let mut r =
        Replayer::new(Arc::clone(&plan), Duration::from_secs(1), None, None).expect("replayer");
    replay_files(
        &mut r,
        &plan,
        &[path],
        gaswatch::cli::replay::ReadOptions::default(),
        &indicatif::ProgressBar::hidden(),
        &mut |b| panic!("{b}"),
    )
    .expect("replay");
    let mut text = Vec::new();
    gaswatch::cli::replay::print_summary(&mut text, &r.summary).expect("print");
    let text = String::from_utf8_lossy(&text);
    assert!(
        text.contains("note: ") && text.contains("other tuning"),
        "{text}"
    );
}

#[test]
fn a_capture_from_before_the_layout_fingerprint_must_match_exactly() {
    use gaswatch::sources::replay::capture::{MAGIC, fingerprint};
    let tmp = tempfile::tempdir().expect("tempdir");
    let c = Config::from_str_named(STATION, Path::new("city-gate.toml")).expect("config");
    // The header as captures were written before the split.
    let header = serde_json::json!({
        "station": "cg01",
        "fingerprint": fingerprint(&EnginePlan::compile(&c)),
        "gaswatch": "0.1.0",
    });
    let mut payload = vec![0u8];
    payload.extend_from_slice(&0i64.to_le_bytes());
    payload.extend_from_slice(header.to_string().as_bytes());
    let mut bytes = MAGIC.to_vec();
    bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    bytes.extend_from_slice(&payload);
    let path = tmp.path().join("old.gwcap");
    std::fs::write(&path, bytes).expect("write");
    assert_eq!(open_with(&path, &c), Ok(vec![]));
    let mut tuned = c.clone();
    tuned.balance.window = Duration::from_secs(60);
    let msg = open_with(&path, &tuned).expect_err("refused");
    assert!(
        msg.contains("old.gwcap") && msg.contains("an older capture"),
        "{msg}"
    );
}

#[test]
fn a_truncated_capture_reports_the_record_and_keeps_what_came_before() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let c = Config::from_str_named(STATION, Path::new("city-gate.toml")).expect("config");
    let plan = Arc::new(EnginePlan::compile(&c));
    let path = tmp.path().join("t.gwcap");
    let mut w =
        gaswatch::sources::replay::capture::CaptureWriter::create(&path, &plan).expect("create");
    for s in 1..=3 {
        w.tick(gaswatch::model::Timestamp::from_secs(s))
            .expect("tick");
    }
    w.flush().expect("flush");
    drop(w);
    let len = std::fs::metadata(&path).expect("meta").len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .expect("open")
        .set_len(len - 3)
        .expect("truncate");
    let (_, mut r) = gaswatch::sources::replay::open(&path, None, &plan).expect("open");
    let mut bad = Vec::new();
    let mut n = 0;
    while let Some(_ev) = r.next_event(&mut bad).expect("read") {
        n += 1;
    }
    assert_eq!(n, 2);
    assert_eq!(bad.len(), 1);
    assert_eq!(
        bad[0].line, 4,
        "record 4 (header is record 1) is the partial one"
    );
    assert!(
        bad[0].to_string().contains("t.gwcap:4: truncated"),
        "{}",
        bad[0]
    );
}
