//! Simulator -> daemon -> a real mosquitto: a pressure alarm raised by the
//! engine reaches a dispatcher's subscriber as the documented JSON, the
//! station status is retained `online`, and the active alarm is retained.

mod support;

use gaswatch::sinks::mqtt::config::MqttConfig;
use gaswatch::topology::{self, RunOptions};
use std::time::Duration;
use support::mosquitto::{Mosquitto, Subscriber};
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pressure_alarm_reaches_a_real_broker_subscriber() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let (handles, mut c) = support::station::city_gate(Duration::from_millis(250)).await;
    // The outlet runs at about 1500 kPa: an H limit at 1400 raises at once.
    let lim = c
        .limits
        .iter_mut()
        .find(|l| l.point == "PT_OUT1")
        .expect("limit");
    lim.l = None;
    lim.ll = None;
    lim.h = Some(1400.0);
    lim.hh = Some(1900.0);
    c.sinks.file = None;
    c.sinks.mqtt = Some(MqttConfig {
        tls: None,
        host: "127.0.0.1".into(),
        port: broker.port(),
        client_id: None,
        username: None,
        password: None,
        topic_prefix: "gaswatch".into(),
        keep_alive: Duration::from_secs(30),
        heartbeat: Duration::from_secs(30),
        accept_commands: true,
    });
    c.spool.dir = dir.path().join("spool");
    assert!(c.validate().is_empty(), "{:?}", c.validate());

    let mut sub = Subscriber::connect(
        broker.port(),
        "dispatcher-1",
        &["gaswatch/cg01/alarms/events"],
        false,
    )
    .await;
    let cancel = CancellationToken::new();
    let daemon = tokio::spawn(topology::run(c, RunOptions::default(), cancel.clone()));

    let msg = sub
        .next(Duration::from_secs(20))
        .await
        .expect("an alarm event within 20 s");
    let v: serde_json::Value = serde_json::from_slice(&msg.payload).expect("JSON payload");
    assert_eq!(v["v"], 1);
    assert_eq!(v["station"], "cg01");
    assert_eq!(v["alarm_id"], "cg01/PT_OUT1/H");
    assert_eq!(v["action"], "raise");
    assert_eq!(v["priority"], "medium");
    assert!(v["value"].as_f64().expect("value") > 1400.0);
    assert!(v["seq"].as_u64().expect("seq") >= 1);

    // A console connecting late sees the retained status and active alarm.
    let mut late = Subscriber::connect(
        broker.port(),
        "console-late",
        &["gaswatch/cg01/status", "gaswatch/cg01/alarms/active/#"],
        false,
    )
    .await;
    let retained = late.drain_until_barrier().await;
    let status = retained
        .iter()
        .find(|m| m.topic == "gaswatch/cg01/status")
        .expect("retained status");
    assert!(String::from_utf8_lossy(&status.payload).contains("\"online\""));
    assert!(
        retained
            .iter()
            .any(|m| m.topic == "gaswatch/cg01/alarms/active/cg01/PT_OUT1/H"
                && !m.payload.is_empty()),
        "{retained:?}"
    );

    cancel.cancel();
    daemon.await.expect("join").expect("daemon");
    for (_, h) in handles {
        h.stop().await;
    }
    // After a clean stop the station reports offline (retained).
    let mut after = Subscriber::connect(
        broker.port(),
        "console-after",
        &["gaswatch/cg01/status"],
        false,
    )
    .await;
    let retained = after.drain_until_barrier().await;
    assert!(
        retained
            .iter()
            .any(|m| String::from_utf8_lossy(&m.payload).contains("\"offline\"")),
        "{retained:?}"
    );
}
