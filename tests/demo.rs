//! `gaswatch demo` end to end, in-process, on a shortened timeline: the
//! simulator and the daemon run together with no external servers, the
//! injected leak raises the imbalance (leak) alarm, and nothing raises it
//! before the leak starts.

use gaswatch::demo::{DemoArgs, run_with};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_shows_a_leak_alarm_after_the_injected_leak_and_none_before() {
    let dir = tempfile::tempdir().expect("tempdir");
    let leak_after = Duration::from_secs(12);
    let args = DemoArgs {
        data: dir.path().to_path_buf(),
        influx: None,
        influx_db: "gaswatch".into(),
        mqtt: None,
        leak_percent: 5.0,
        leak_after,
        window: Duration::from_secs(10),
        duration: Some(Duration::from_secs(45)),
        seed: 7,
        plain: true,
    };
    let summary = run_with(args, false, CancellationToken::new())
        .await
        .expect("demo runs");
    assert!(summary.samples > 300, "{summary:?}");
    assert!(summary.balances >= 3, "{summary:?}");
    let t = summary.leak_alarm_after_s.expect("leak alarm raised");
    assert!(
        t >= leak_after.as_secs_f64(),
        "imbalance alarm before the leak started: {summary:?}"
    );
    assert!(
        summary
            .alarms_raised
            .iter()
            .all(|a| a.ends_with("IMBALANCE")),
        "no pressure alarm expected at normal operation: {summary:?}"
    );
    let alarms =
        std::fs::read_to_string(dir.path().join("alarms.jsonl")).expect("alarms.jsonl written");
    assert!(
        alarms.contains("\"alarm_id\":\"cg01/balance/IMBALANCE\""),
        "{alarms}"
    );
    let balance =
        std::fs::read_to_string(dir.path().join("balance.jsonl")).expect("balance.jsonl written");
    assert!(balance.lines().count() >= 3);
}
