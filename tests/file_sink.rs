//! The local file sink writes where it says, appends, rotates telemetry per
//! UTC day and reports unusable folders by path.

use gaswatch::model::Timestamp;
use gaswatch::sinks::file::{FileSink, FileSinkConfig};

#[test]
fn writes_appends_and_rotates_per_utc_day() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("out/nested");
    let cfg = FileSinkConfig { dir: dir.clone() };
    let day1 = Timestamp::from_secs(1_795_821_743); // 2026-11-27T23:22:23Z
    let day2 = Timestamp::from_secs(1_795_824_000); // 2026-11-28T00:00:00Z
    {
        let mut sink = FileSink::open(&cfg).expect("open creates the folder");
        sink.write_telemetry_at(day1, b"p,tag=PT1 value=1 1\np,tag=PT1 value=2 2\n")
            .expect("write");
        sink.write_telemetry_at(day1, b"p,tag=PT1 value=3 3")
            .expect("write without newline");
        sink.write_telemetry_at(day2, b"p,tag=PT1 value=4 4\n")
            .expect("write next day");
        sink.write_alarm(br#"{"v":1,"seq":1}"#).expect("alarm");
        sink.write_balance(b"{\"v\":1}\n").expect("balance");
        sink.flush().expect("flush");
    }
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).expect(name);
    assert_eq!(
        read("telemetry-2026-11-27.lp"),
        "p,tag=PT1 value=1 1\np,tag=PT1 value=2 2\np,tag=PT1 value=3 3\n"
    );
    assert_eq!(read("telemetry-2026-11-28.lp"), "p,tag=PT1 value=4 4\n");
    assert_eq!(read("alarms.jsonl"), "{\"v\":1,\"seq\":1}\n");
    assert_eq!(read("balance.jsonl"), "{\"v\":1}\n");

    // Reopening appends instead of truncating.
    let mut sink = FileSink::open(&cfg).expect("reopen");
    sink.write_alarm(br#"{"v":1,"seq":2}"#).expect("alarm");
    sink.flush().expect("flush");
    assert_eq!(
        read("alarms.jsonl"),
        "{\"v\":1,\"seq\":1}\n{\"v\":1,\"seq\":2}\n"
    );
}

#[test]
fn open_error_names_the_path() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let file = tmp.path().join("not-a-dir");
    std::fs::write(&file, b"x").expect("write");
    let cfg = FileSinkConfig {
        dir: file.join("sub"),
    };
    let err = FileSink::open(&cfg).expect_err("a file is in the way");
    assert!(err.to_string().contains("not-a-dir"), "{err}");
}
