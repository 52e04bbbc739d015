//! Alarm management over a real mosquitto with a password file and an ACL:
//! a dispatcher acknowledges an alarm raised by the daemon (command ->
//! engine -> journal -> reply), a read-only user's command never reaches
//! the station (mosquitto 3.1.1 hides the denial: it shows only as a missing
//! effect), invalid commands are answered with the reason, a late console
//! sees the acknowledged state retained, and after a daemon restart the
//! journal restores the alarm and the sequence numbers keep increasing.

mod support;

use gaswatch::config::Secret;
use gaswatch::sinks::mqtt::config::MqttConfig;
use gaswatch::topology::{self, RunOptions};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::Value;
use std::time::Duration;
use support::mosquitto::{Mosquitto, MosquittoOptions};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const ACL: &str = "user cg01\ntopic readwrite gaswatch/cg01/#\n\n\
user disp\ntopic read gaswatch/#\ntopic write gaswatch/+/commands\n\n\
user viewer\ntopic read gaswatch/#\n";

/// A client with credentials that collects JSON messages.
struct Client {
    client: AsyncClient,
    rx: mpsc::UnboundedReceiver<(String, Value)>,
    seen: Vec<(String, Value)>,
}

impl Client {
    async fn connect(port: u16, user: &str, filters: &[&str]) -> Client {
        let mut o = MqttOptions::new(format!("test-{user}"), "127.0.0.1", port);
        o.set_credentials(user, "pw-".to_string() + user)
            .set_clean_session(true);
        let (client, mut ev) = AsyncClient::new(o, 100);
        let (tx, rx) = mpsc::unbounded_channel();
        let (ready_tx, mut ready) = mpsc::unbounded_channel();
        let subs: Vec<String> = filters.iter().map(|f| f.to_string()).collect();
        let n = subs.len();
        let c2 = client.clone();
        tokio::spawn(async move {
            let mut acks = 0;
            loop {
                match ev.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        for f in &subs {
                            let _ = c2.try_subscribe(f.clone(), QoS::AtLeastOnce);
                        }
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        acks += 1;
                        if acks == subs.len() {
                            let _ = ready_tx.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let v = serde_json::from_slice(&p.payload).unwrap_or(Value::Null);
                        let _ = tx.send((p.topic.clone(), v));
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        if n > 0 {
            tokio::time::timeout(Duration::from_secs(10), ready.recv())
                .await
                .expect("SUBACK");
        }
        Client {
            client,
            rx,
            seen: Vec::new(),
        }
    }

    /// Waits until a received message matches, keeping everything seen.
    async fn wait_for(&mut self, what: &str, f: impl Fn(&str, &Value) -> bool) -> Value {
        if let Some((_, v)) = self.seen.iter().find(|(t, v)| f(t, v)) {
            return v.clone();
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let m = tokio::time::timeout_at(deadline, self.rx.recv())
                .await
                .unwrap_or_else(|_| panic!("timed out waiting for {what}; seen {:?}", self.seen))
                .expect("client task alive");
            self.seen.push(m.clone());
            if f(&m.0, &m.1) {
                return m.1;
            }
        }
    }

    async fn command(&self, body: Value) {
        self.client
            .publish(
                "gaswatch/cg01/commands",
                QoS::AtLeastOnce,
                false,
                body.to_string(),
            )
            .await
            .expect("queued");
    }
}

fn cmd(id: &str, alarm: &str, op: &str, action: &str) -> Value {
    serde_json::json!({"v":1,"request_id":id,"alarm_id":alarm,"operator":op,"action":action})
}

fn reply_for(id: &'static str) -> impl Fn(&str, &Value) -> bool {
    move |t, v| t == "gaswatch/cg01/replies" && v["request_id"] == id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ack_round_trip_acl_refusal_retained_state_and_journal_across_restart() {
    let users = ["cg01", "disp", "viewer"]
        .map(|u| (u.to_string(), format!("pw-{u}")))
        .to_vec();
    let broker = Mosquitto::start_with(MosquittoOptions {
        users,
        acl: Some(ACL.to_string()),
        ..Default::default()
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let (handles, mut c) = support::station::city_gate(Duration::from_millis(250)).await;
    let lim = c
        .limits
        .iter_mut()
        .find(|l| l.point == "PT_OUT1")
        .expect("limit");
    (lim.l, lim.ll, lim.h, lim.hh) = (None, None, Some(1400.0), Some(1900.0));
    let pw = dir.path().join("mqtt-pw");
    std::fs::write(&pw, "pw-cg01").expect("pw file");
    c.sinks.file = None;
    c.sinks.mqtt = Some(MqttConfig {
        host: "127.0.0.1".into(),
        port: broker.port(),
        client_id: None,
        username: Some("cg01".into()),
        password: Some(Secret {
            env: None,
            file: Some(pw),
        }),
        topic_prefix: "gaswatch".into(),
        keep_alive: Duration::from_secs(30),
        heartbeat: Duration::from_secs(30),
        accept_commands: true,
        tls: None,
    });
    c.spool.dir = dir.path().join("spool");
    assert!(c.validate().is_empty(), "{:?}", c.validate());

    let mut disp = Client::connect(
        broker.port(),
        "disp",
        &["gaswatch/cg01/alarms/events", "gaswatch/cg01/replies"],
    )
    .await;
    let viewer = Client::connect(broker.port(), "viewer", &[]).await;
    let cancel = CancellationToken::new();
    let daemon = tokio::spawn(topology::run(
        c.clone(),
        RunOptions::default(),
        cancel.clone(),
    ));

    const H: &str = "cg01/PT_OUT1/H";
    let raise = disp
        .wait_for("the H raise", |_, v| {
            v["alarm_id"] == H && v["action"] == "raise"
        })
        .await;
    assert_eq!(raise["state"], "unacked");

    // The viewer may read but not command: the broker drops its publish.
    viewer.command(cmd("v1", H, "mallory", "ack")).await;
    disp.command(cmd("d1", H, "wang", "ack")).await;
    let r = disp.wait_for("reply d1", reply_for("d1")).await;
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["operator"], "wang");
    assert!(
        !disp.seen.iter().any(|(_, v)| v["request_id"] == "v1"),
        "the viewer's command reached the station"
    );
    let ack_seq = r["seq"].as_u64().expect("seq");
    let ack = disp
        .wait_for("the ack event", |_, v| {
            v["alarm_id"] == H && v["action"] == "ack"
        })
        .await;
    assert_eq!(
        (ack["state"].as_str(), ack["seq"].as_u64()),
        (Some("acked"), Some(ack_seq))
    );

    // Validation: wrong state, unknown alarm, expired shelve.
    disp.command(cmd("d2", H, "wang", "ack")).await;
    disp.command(cmd("d3", "cg01/NOPE/H", "wang", "ack")).await;
    let mut expired = cmd("d4", H, "wang", "shelve");
    expired["duration_s"] = 60.into();
    expired["sent_ns"] = (gaswatch::model::Timestamp::now().nanos() - 7_200_000_000_000).into();
    disp.command(expired).await;
    for (id, err) in [
        ("d2", "wrong_state"),
        ("d3", "unknown_alarm"),
        ("d4", "shelve_expired"),
    ] {
        let r = disp
            .wait_for(id, move |t, v| {
                t.ends_with("/replies") && v["request_id"] == id
            })
            .await;
        assert_eq!(
            (r["ok"].as_bool(), r["error"].as_str()),
            (Some(false), Some(err)),
            "{r}"
        );
    }

    // A console connecting late sees the acknowledged alarm, retained.
    let mut late = Client::connect(broker.port(), "viewer", &["gaswatch/+/alarms/active/#"]).await;
    let st = late
        .wait_for("retained H", |t, _| {
            t.ends_with("/alarms/active/cg01/PT_OUT1/H")
        })
        .await;
    assert_eq!(st["state"], "acked");
    drop(late);

    cancel.cancel();
    daemon.await.expect("join").expect("daemon");
    let journal = gaswatch::journal::default_path(&c.spool.dir);
    let (entries, skipped) = gaswatch::journal::read_entries(&journal).expect("journal");
    assert_eq!(skipped, 0);
    let before_max = entries
        .iter()
        .filter_map(|e| match e {
            gaswatch::journal::Entry::Event { seq, .. } => Some(*seq),
            _ => None,
        })
        .max()
        .expect("events");
    let commands: Vec<(String, bool)> = entries
        .iter()
        .filter_map(|e| match e {
            gaswatch::journal::Entry::Command { request_id, ok, .. } => {
                Some((request_id.clone(), *ok))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        commands,
        [("d1", true), ("d2", false), ("d3", false), ("d4", false)]
            .map(|(a, b)| (a.to_string(), b))
    );

    // Restart: the alarm is still acked (not raised again) and seq continues.
    let cancel = CancellationToken::new();
    let daemon = tokio::spawn(topology::run(
        c.clone(),
        RunOptions::default(),
        cancel.clone(),
    ));
    let mut shelve = cmd("d5", H, "wang", "shelve");
    shelve["duration_s"] = 600.into();
    // The station subscribes after it connects: repeat until answered.
    let r = loop {
        disp.command(shelve.clone()).await;
        if let Ok(v) =
            tokio::time::timeout(Duration::from_secs(2), disp.wait_for("d5", reply_for("d5"))).await
        {
            break v;
        }
    };
    assert_eq!(r["ok"], true, "{r}");
    assert!(r["seq"].as_u64().expect("seq") > before_max);
    cancel.cancel();
    daemon.await.expect("join").expect("daemon");
    let (entries, _) = gaswatch::journal::read_entries(&journal).expect("journal");
    let raises = entries
        .iter()
        .filter(|e| matches!(e, gaswatch::journal::Entry::Event { alarm_id, action, .. } if alarm_id == H && action == "raise"))
        .count();
    assert_eq!(raises, 1, "restored as acked, not raised again");
    for (_, h) in handles {
        h.stop().await;
    }
}
