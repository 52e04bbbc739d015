//! The MQTT dispatch publisher against a real mosquitto 2.0.11: alarms arrive
//! exactly and in order and leave the spool only after PUBACK; status and
//! last will; retained active-alarm state; no loss across a broker restart.

mod support;

use gaswatch::buffer::{RecordClass, SharedSpool, Spool, SpoolConfig};
use gaswatch::engine::plan::AlarmDef;
use gaswatch::model::{AlarmAction, AlarmEvent, AlarmKind, Priority, Timestamp};
use gaswatch::sinks::mqtt::{
    MqttConfig, PublisherSettings, Topics, alarm_records, encode_alarm, run_with,
};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use support::mosquitto::{Mosquitto, Received, Subscriber};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const STATION: &str = "cg01";

fn config(port: u16) -> MqttConfig {
    MqttConfig {
        tls: None,
        host: "127.0.0.1".to_string(),
        port,
        client_id: None,
        username: None,
        password: None,
        topic_prefix: "gaswatch".to_string(),
        keep_alive: Duration::from_secs(5),
        heartbeat: Duration::from_secs(30),
        accept_commands: true,
    }
}

fn settings() -> PublisherSettings {
    PublisherSettings {
        backoff_min: Duration::from_millis(50),
        backoff_max: Duration::from_millis(500),
        ..PublisherSettings::default()
    }
}

fn def(source: &str) -> AlarmDef {
    AlarmDef {
        id: format!("{STATION}/{source}/HH"),
        source: source.to_string(),
        kind: AlarmKind::HighHigh,
        priority: Priority::High,
        limit: 1750.0,
        deadband: 35.0,
        mgmt: Default::default(),
    }
}

fn event(action: AlarmAction, seq: u64) -> AlarmEvent {
    AlarmEvent {
        alarm: 0,
        kind: AlarmKind::HighHigh,
        action,
        priority: Priority::High,
        value: 1750.0 + seq as f64 / 10.0,
        limit: 1750.0,
        ts: Timestamp::from_millis(1_795_821_743_123 + seq as i64),
        seq,
        detail: Default::default(),
    }
}

struct Harness {
    spool: Arc<SharedSpool>,
    cancel: CancellationToken,
    task: Option<JoinHandle<()>>,
    topics: Topics,
    _spool_dir: tempfile::TempDir,
}

impl Harness {
    fn start(port: u16) -> Harness {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = SharedSpool::new(
            "mqtt",
            Spool::open(dir.path(), &SpoolConfig::default()).expect("spool"),
        );
        let cancel = CancellationToken::new();
        let task = tokio::spawn(run_with(
            settings(),
            config(port),
            STATION.to_string(),
            None,
            spool.clone(),
            cancel.clone(),
        ));
        Harness {
            spool,
            cancel,
            task: Some(task),
            topics: Topics::new("gaswatch", STATION),
            _spool_dir: dir,
        }
    }

    /// Appends both records of an alarm transition, as the engine task does.
    fn append_alarm(&self, d: &AlarmDef, e: &AlarmEvent) {
        let recs = alarm_records(&self.topics, STATION, d, e, "kPa");
        {
            let mut s = self.spool.lock();
            for r in &recs {
                s.append(RecordClass::Alarm, r).expect("append");
            }
        }
        self.spool.notify();
    }

    async fn wait_spool_empty(&self) -> bool {
        support::wait_until_async(Duration::from_secs(10), || async {
            self.spool.lock().stats(RecordClass::Alarm).records == 0
        })
        .await
    }

    async fn shutdown(mut self) {
        self.cancel.cancel();
        if let Some(t) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(10), t)
                .await
                .expect("publisher stops within 10 s")
                .expect("no panic");
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

fn json(m: &Received) -> serde_json::Value {
    serde_json::from_slice(&m.payload).unwrap_or_else(|e| {
        panic!(
            "payload on {} is not JSON ({e}): {:?}",
            m.topic,
            String::from_utf8_lossy(&m.payload)
        )
    })
}

/// Waits for a retained-or-live message on `topic` whose JSON satisfies `pred`.
async fn wait_for(
    sub: &mut Subscriber,
    topic: &str,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> Received {
    loop {
        let m = sub
            .next(Duration::from_secs(10))
            .await
            .unwrap_or_else(|| panic!("nothing matching on {topic} within 10 s"));
        if m.topic == topic && !m.payload.is_empty() && pred(&json(&m)) {
            return m;
        }
    }
}

/// The publisher writes spool acknowledgements at most 50 ms after their
/// PUBACK (coalesced, so a burst does not write and rename the ack file
/// once per record), and writes what is still pending when it stops: a
/// stop right after delivery leaves nothing to send again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_right_after_delivery_writes_the_pending_acknowledgements() {
    let broker = Mosquitto::start();
    let events = "gaswatch/cg01/alarms/events";
    let mut sub = Subscriber::connect(broker.port(), "test-stop", &[events], false).await;
    let mut h = Harness::start(broker.port());
    let d = def("PT_OUT1");
    for seq in 1..=6 {
        let action = if seq % 2 == 1 {
            AlarmAction::Raise
        } else {
            AlarmAction::Clear
        };
        h.append_alarm(&d, &event(action, seq));
    }
    for _ in 0..6 {
        let m = sub
            .next(Duration::from_secs(10))
            .await
            .expect("all 6 alarm events within 10 s");
        assert_eq!(m.topic, events);
    }
    // Stop at once (the publisher drains its outstanding PUBACKs first).
    h.cancel.cancel();
    let task = h.task.take().expect("running");
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("publisher stops within 10 s")
        .expect("no panic");
    let left = h.spool.lock().stats(RecordClass::Alarm);
    assert_eq!(
        left.records, 0,
        "still unacknowledged after the stop: {left:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alarms_arrive_exactly_in_order_and_leave_the_spool_after_puback() {
    let broker = Mosquitto::start();
    let events = "gaswatch/cg01/alarms/events";
    let mut sub = Subscriber::connect(broker.port(), "test-a", &[events], false).await;
    let h = Harness::start(broker.port());
    let d = def("PT_OUT1");
    let mut want = Vec::new();
    for seq in 1..=20 {
        let action = if seq % 2 == 1 {
            AlarmAction::Raise
        } else {
            AlarmAction::Clear
        };
        let e = event(action, seq);
        want.push(encode_alarm(STATION, &d, &e, "kPa"));
        h.append_alarm(&d, &e);
    }
    let mut got = Vec::new();
    while got.len() < want.len() {
        let m = sub
            .next(Duration::from_secs(10))
            .await
            .expect("all 20 alarm events within 10 s");
        assert_eq!(m.topic, events);
        got.push(m.payload);
    }
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(String::from_utf8_lossy(g), String::from_utf8_lossy(w));
    }
    assert!(
        h.wait_spool_empty().await,
        "spool still holds {:?}",
        h.spool.lock().stats(RecordClass::Alarm)
    );
    let extra = sub.drain_until_barrier().await;
    assert!(
        extra.iter().all(|m| m.topic != events),
        "unexpected extra events: {extra:?}"
    );
    h.shutdown().await;

    // A clean shutdown leaves an explicit, timestamped `offline`.
    let mut late = Subscriber::connect(
        broker.port(),
        "test-a-late",
        &["gaswatch/cg01/status"],
        false,
    )
    .await;
    let seen = late.drain_until_barrier().await;
    let status = seen
        .iter()
        .find(|m| m.topic == "gaswatch/cg01/status")
        .expect("retained status");
    let v = json(status);
    assert_eq!(v["state"], "offline");
    assert!(v["ts"].is_string(), "explicit offline carries ts: {v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_is_retained_online_and_the_will_says_offline_after_an_abrupt_drop() {
    let broker = Mosquitto::start();
    let mut h = Harness::start(broker.port());
    let status = "gaswatch/cg01/status";
    // A late subscriber sees the retained `online`.
    let mut late = Subscriber::connect(broker.port(), "test-b1", &[status], false).await;
    let m = wait_for(&mut late, status, |v| v["state"] == "online").await;
    let v = json(&m);
    assert_eq!(v["v"], 1);
    assert_eq!(v["station"], STATION);
    assert!(v["ts"].is_string());
    drop(late);

    // Kill the publisher without DISCONNECT: the broker publishes the will.
    let task = h.task.take().expect("task");
    task.abort();
    let _ = task.await;
    let mut late = Subscriber::connect(broker.port(), "test-b2", &[status], false).await;
    let m = wait_for(&mut late, status, |v| v["state"] == "offline").await;
    assert_eq!(
        String::from_utf8_lossy(&m.payload),
        r#"{"v":1,"station":"cg01","state":"offline"}"#
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_active_alarms_show_the_current_picture_to_late_subscribers() {
    let broker = Mosquitto::start();
    let h = Harness::start(broker.port());
    let (a, b) = (def("PT_OUT1"), def("PT_OUT2"));
    h.append_alarm(&a, &event(AlarmAction::Raise, 1));
    h.append_alarm(&b, &event(AlarmAction::Raise, 2));
    assert!(h.wait_spool_empty().await);
    let active = "gaswatch/cg01/alarms/active/#";
    let mut late = Subscriber::connect(broker.port(), "test-c1", &[active], false).await;
    let mut seen: Vec<Received> = late.drain_until_barrier().await;
    seen.sort_by(|x, y| x.topic.cmp(&y.topic));
    let topics: Vec<&str> = seen.iter().map(|m| m.topic.as_str()).collect();
    assert_eq!(
        topics,
        [
            "gaswatch/cg01/alarms/active/cg01/PT_OUT1/HH",
            "gaswatch/cg01/alarms/active/cg01/PT_OUT2/HH"
        ]
    );
    assert!(seen.iter().all(|m| m.retain));
    assert_eq!(
        seen[0].payload,
        encode_alarm(STATION, &a, &event(AlarmAction::Raise, 1), "kPa")
    );
    drop(late);

    // Clearing A deletes its retained message; B stays.
    h.append_alarm(&a, &event(AlarmAction::Clear, 3));
    assert!(h.wait_spool_empty().await);
    let mut late = Subscriber::connect(broker.port(), "test-c2", &[active], false).await;
    let seen = late.drain_until_barrier().await;
    let topics: Vec<&str> = seen.iter().map(|m| m.topic.as_str()).collect();
    assert_eq!(topics, ["gaswatch/cg01/alarms/active/cg01/PT_OUT2/HH"]);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_outage_loses_no_alarm() {
    let mut broker = Mosquitto::start();
    let events = "gaswatch/cg01/alarms/events";
    // Persistent session: the broker queues for it while it reconnects.
    let mut sub = Subscriber::connect(broker.port(), "test-d", &[events], true).await;
    let h = Harness::start(broker.port());
    let d = def("PT_OUT1");
    h.append_alarm(&d, &event(AlarmAction::Raise, 1));
    let first = sub
        .next(Duration::from_secs(10))
        .await
        .expect("first alarm");
    assert_eq!(json(&first)["seq"], 1);
    assert!(h.wait_spool_empty().await);

    broker.stop();
    for seq in 2..=51 {
        let action = if seq % 2 == 0 {
            AlarmAction::Clear
        } else {
            AlarmAction::Raise
        };
        h.append_alarm(&d, &event(action, seq));
    }
    broker.start_again();

    let mut order = Vec::new();
    let mut unique = BTreeSet::new();
    let mut total = 0;
    while unique.len() < 50 {
        let m = sub.next(Duration::from_secs(20)).await.unwrap_or_else(|| {
            panic!(
                "only {} of 50 alarms after the restart: {unique:?}\n{}",
                unique.len(),
                broker.log()
            )
        });
        if m.topic != events {
            continue;
        }
        let seq = json(&m)["seq"].as_u64().expect("seq");
        if seq < 2 {
            continue;
        }
        total += 1;
        if unique.insert(seq) {
            order.push(seq);
        }
    }
    assert_eq!(
        order,
        (2..=51).collect::<Vec<u64>>(),
        "first deliveries in order"
    );
    eprintln!(
        "broker outage: 50 alarms, {total} deliveries ({} duplicates)",
        total - 50
    );
    assert!(
        h.wait_spool_empty().await,
        "spool not acked after the restart"
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_with_records_in_flight_loses_none_and_keeps_first_delivery_order() {
    let mut broker = Mosquitto::start();
    let events = "gaswatch/cg01/alarms/events";
    let mut sub = Subscriber::connect(broker.port(), "test-e", &[events], true).await;
    let h = Harness::start(broker.port());
    let d = def("PT_OUT1");
    // Wait until the publisher is connected (its first alarm went through).
    h.append_alarm(&d, &event(AlarmAction::Raise, 1));
    assert!(sub.next(Duration::from_secs(10)).await.is_some());
    assert!(h.wait_spool_empty().await);

    // Half appended just before the stop (some will be in flight), half during the outage.
    for seq in 2..=101 {
        h.append_alarm(&d, &event(AlarmAction::Raise, seq));
    }
    broker.stop();
    for seq in 102..=201 {
        h.append_alarm(&d, &event(AlarmAction::Clear, seq));
    }
    broker.start_again();

    let mut order = Vec::new();
    let mut unique = BTreeSet::new();
    let mut total = 0;
    while unique.len() < 200 {
        let m = sub.next(Duration::from_secs(20)).await.unwrap_or_else(|| {
            panic!(
                "only {} of 200 alarms: missing {:?}",
                unique.len(),
                (2..=201)
                    .filter(|s| !unique.contains(s))
                    .collect::<Vec<u64>>()
            )
        });
        let seq = json(&m)["seq"].as_u64().expect("seq");
        if seq < 2 {
            continue;
        }
        total += 1;
        if unique.insert(seq) {
            order.push(seq);
        }
    }
    assert_eq!(
        order,
        (2..=201).collect::<Vec<u64>>(),
        "first deliveries in order"
    );
    eprintln!(
        "restart with records in flight: 200 alarms, {total} deliveries ({} duplicates)",
        total - 200
    );
    assert!(
        h.wait_spool_empty().await,
        "spool not acked after the restart"
    );
    h.shutdown().await;
}

/// Plays the engine for a publisher run: returns the next command and its
/// receipt from the engine channel.
async fn next_command(
    rx: &mut tokio::sync::mpsc::Receiver<gaswatch::model::Input>,
) -> (String, gaswatch::model::Receipt) {
    use gaswatch::model::Input;
    let wait = Duration::from_secs(20);
    let cmd = match tokio::time::timeout(wait, rx.recv()).await {
        Ok(Some(Input::Command(c))) => c,
        other => panic!("expected a command, got {other:?}"),
    };
    match tokio::time::timeout(wait, rx.recv()).await {
        Ok(Some(Input::Receipt(r))) => (cmd.request_id, r),
        other => panic!("expected the receipt of {}, got {other:?}", cmd.request_id),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_is_acknowledged_to_the_broker_only_after_the_engine_confirms_it() {
    let broker = Mosquitto::start();
    let status = "gaswatch/cg01/status";
    let commands = "gaswatch/cg01/commands";
    let mut disp = Subscriber::connect(broker.port(), "disp", &[status], false).await;
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    let dir = tempfile::tempdir().expect("tempdir");
    let run = |n: u32| {
        let spool = SharedSpool::new(
            "mqtt",
            Spool::open(&dir.path().join(format!("run{n}")), &SpoolConfig::default())
                .expect("spool"),
        );
        tokio::spawn(gaswatch::sinks::mqtt::run_with_commands(
            settings(),
            config(broker.port()),
            STATION.to_string(),
            None,
            spool,
            CancellationToken::new(),
            Some(tx.clone()),
        ))
    };
    let cmd = |id: &str| {
        serde_json::json!({"v":1,"request_id":id,"alarm_id":"cg01/PT_OUT1/H","operator":"wang","action":"ack"})
            .to_string()
    };

    // Run 1 subscribes before it announces itself online (same connection,
    // in order), so a command published after `online` reaches it.
    let run1 = run(1);
    wait_for(&mut disp, status, |v| v["state"] == "online").await;
    disp.publish(commands, cmd("c1")).await;
    let (id, _never_confirmed) = next_command(&mut rx).await;
    assert_eq!(id, "c1");
    // The daemon dies before the command is journaled: no PUBACK went out,
    // so the broker delivers c1 again to the persistent session.
    run1.abort();
    let _ = run1.await;
    let run2 = run(2);
    let (id, receipt) = next_command(&mut rx).await;
    assert_eq!(id, "c1", "the broker holds an unconfirmed command");
    // Journaled: confirming sends the PUBACK. c2 arrives and stays unconfirmed.
    receipt.confirm();
    disp.publish(commands, cmd("c2")).await;
    let (id, _c2) = next_command(&mut rx).await;
    assert_eq!(id, "c2");
    run2.abort();
    let _ = run2.await;
    // Run 3: the broker redelivers c2 (never confirmed), not c1 (acknowledged).
    let run3 = run(3);
    let (id, receipt) = next_command(&mut rx).await;
    assert_eq!(id, "c2", "c1 was acknowledged once confirmed; c2 was not");
    receipt.confirm();
    disp.publish(commands, cmd("c3")).await;
    let (id, _) = next_command(&mut rx).await;
    assert_eq!(id, "c3");
    run3.abort();
}
