//! A JSON MQTT source against a real mosquitto: topic and field mapping,
//! malformed payloads counted and skipped without stopping the source, and
//! a broker restart in the middle of a stream without losing a message
//! (PUBACK only after the output is stored; persistent sessions).

mod support;

use gaswatch::config::Config;
use gaswatch::topology::{self, RunOptions};
use rumqttc::{AsyncClient, Event, MqttOptions, QoS};
use std::path::Path;
use std::time::Duration;
use support::mosquitto::Mosquitto;
use tokio_util::sync::CancellationToken;

fn config(port: u16, dir: &Path) -> Config {
    let text = format!(
        r#"
[station]
id = "cg01"
kind = "city_gate"

[sinks.file]
dir = "{out}"

[spool]
dir = "{spool}"

[[mqtt_sources]]
id = "loggers"
host = "127.0.0.1"
port = {port}
format = "json"
topics = ["loggers/{{station}}/{{device}}/telemetry", "flow/{{device}}/{{point}}"]
timestamp = {{ path = "/ts", format = "epoch_ms" }}

[[mqtt_sources.points]]
name = "PT_L7"
device = "logger7"
path = "/data/pressure/value"
unit = "kPa"
scale = 1000.0
expected_interval = "1h"

[[mqtt_sources.points]]
name = "TT_L7"
device = "logger7"
path = "/data/temps/1"
unit = "degC"
expected_interval = "1h"

[[mqtt_sources.points]]
name = "FT_L8"
device = "logger8"
topic_point = "gross"
path = "/v"
unit = "Sm3/h"
expected_interval = "1h"
"#,
        out = dir.join("out").display(),
        spool = dir.join("spool").display(),
    );
    Config::from_str_named(&text, Path::new("mqtt-json.toml")).unwrap_or_else(|e| panic!("{e}"))
}

/// Every telemetry line the file sink wrote so far.
fn lines(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir.join("out")) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("telemetry-") {
                let text = std::fs::read_to_string(e.path()).unwrap_or_default();
                out.extend(text.lines().map(str::to_string));
            }
        }
    }
    out
}

/// A publisher with a persistent session, polled in its own task.
fn publisher(port: u16, id: &str) -> (AsyncClient, tokio::task::JoinHandle<()>) {
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    o.set_clean_session(false);
    let (client, mut el) = AsyncClient::new(o, 1000);
    let task = tokio::spawn(async move {
        loop {
            match el.poll().await {
                Ok(Event::Incoming(_)) | Ok(Event::Outgoing(_)) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    (client, task)
}

const T0: i64 = 1_700_000_000_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_payloads_map_to_points_and_bad_ones_are_skipped() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let cancel = CancellationToken::new();
    let daemon = tokio::spawn(topology::run(
        config(broker.port(), dir.path()),
        RunOptions::default(),
        cancel.clone(),
    ));
    let (client, task) = publisher(broker.port(), "rtu-json");
    // The subscription is in place once a probe message comes through.
    let probe = |i: i64| format!(r#"{{"ts": {}, "v": 1}}"#, T0 + i);
    let mut i = 0;
    let ready = support::wait_until_async(Duration::from_secs(20), || {
        i += 1;
        let (c, p) = (client.clone(), probe(i));
        let d = dir.path().to_path_buf();
        async move {
            let _ = c
                .publish("flow/logger8/gross", QoS::AtLeastOnce, false, p)
                .await;
            tokio::time::sleep(Duration::from_millis(100)).await;
            lines(&d).iter().any(|l| l.contains("point=FT_L8"))
        }
    })
    .await;
    assert!(
        ready,
        "the source never delivered; broker log:\n{}",
        broker.log()
    );

    let msgs: [(&str, String); 7] = [
        ("loggers/cg01/logger7/telemetry", "{not json".into()),
        (
            "loggers/cg01/logger7/telemetry",
            r#"{"data": {"pressure": {"value": 1.0}}}"#.into(),
        ),
        (
            "loggers/cg99/logger7/telemetry",
            format!(r#"{{"ts": {T0}, "data": {{}}}}"#),
        ),
        (
            "loggers/cg01/unknown/telemetry",
            format!(r#"{{"ts": {T0}}}"#),
        ),
        (
            "flow/logger8/gross",
            format!(r#"{{"ts": {T0}, "v": "lots"}}"#),
        ),
        // One field missing: the other still arrives.
        (
            "loggers/cg01/logger7/telemetry",
            format!(
                r#"{{"ts": {}, "data": {{"temps": [1.0, 21.5]}}}}"#,
                T0 + 1000
            ),
        ),
        (
            "loggers/cg01/logger7/telemetry",
            format!(
                r#"{{"ts": {}, "data": {{"pressure": {{"value": 1.6}}, "temps": [0, 22.25]}}}}"#,
                T0 + 2000
            ),
        ),
    ];
    for (topic, payload) in msgs {
        client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await
            .expect("publish");
    }
    let want_ts = (T0 + 2000) * 1_000_000;
    let got = support::wait_until_async(Duration::from_secs(20), || {
        let d = dir.path().to_path_buf();
        async move {
            lines(&d)
                .iter()
                .any(|l| l.contains("point=PT_L7") && l.ends_with(&want_ts.to_string()))
        }
    })
    .await;
    let all = lines(dir.path());
    assert!(got, "last message not delivered: {all:#?}");
    let l7: Vec<&String> = all
        .iter()
        .filter(|l| l.contains("device=logger7"))
        .collect();
    assert_eq!(l7.len(), 3, "exactly the good fields: {l7:#?}");
    assert!(l7.iter().any(|l| l.contains("point=TT_L7")
        && l.contains("value=21.5")
        && l.ends_with(&((T0 + 1000) * 1_000_000).to_string())));
    assert!(
        l7.iter()
            .any(|l| l.contains("point=TT_L7") && l.contains("value=22.25"))
    );
    assert!(l7.iter().any(|l| l.contains("point=PT_L7")
        && l.contains("value=1600")
        && l.contains("unit=kPa")
        && l.contains("quality=\"good\"")));
    assert!(!all.iter().any(|l| l.contains("lots")));

    cancel.cancel();
    daemon.await.expect("join").expect("daemon");
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_loses_nothing() {
    let mut broker = Mosquitto::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let cancel = CancellationToken::new();
    let daemon = tokio::spawn(topology::run(
        config(broker.port(), dir.path()),
        RunOptions::default(),
        cancel.clone(),
    ));
    let (client, task) = publisher(broker.port(), "rtu-restart");
    let mut i = 0;
    let ready = support::wait_until_async(Duration::from_secs(20), || {
        i += 1;
        let c = client.clone();
        let d = dir.path().to_path_buf();
        let p = format!(r#"{{"ts": {}, "v": -1}}"#, T0 - i);
        async move {
            let _ = c
                .publish("flow/logger8/gross", QoS::AtLeastOnce, false, p)
                .await;
            tokio::time::sleep(Duration::from_millis(100)).await;
            lines(&d).iter().any(|l| l.contains("point=FT_L8"))
        }
    })
    .await;
    assert!(
        ready,
        "the source never delivered; broker log:\n{}",
        broker.log()
    );

    const N: i64 = 60;
    for k in 0..N {
        if k == N / 2 {
            broker.stop();
            broker.start_again();
        }
        let p = format!(r#"{{"ts": {}, "v": {k}}}"#, T0 + k);
        client
            .publish("flow/logger8/gross", QoS::AtLeastOnce, false, p)
            .await
            .expect("queue");
    }
    let want = |d: &Path| -> usize {
        let all = lines(d);
        (0..N)
            .filter(|k| {
                let ts = ((T0 + k) * 1_000_000).to_string();
                all.iter().any(|l| {
                    l.contains("point=FT_L8")
                        && l.contains(&format!("value={k}.0,"))
                        && l.ends_with(&ts)
                })
            })
            .count()
    };
    let ok = support::wait_until_async(Duration::from_secs(60), || {
        let d = dir.path().to_path_buf();
        async move { want(&d) == N as usize }
    })
    .await;
    assert!(
        ok,
        "{} of {N} messages arrived; broker log:\n{}",
        want(dir.path()),
        broker.log()
    );
    cancel.cancel();
    daemon.await.expect("join").expect("daemon");
    task.abort();
}
