//! gaswatch as a Sparkplug B host against a real mosquitto and an edge node
//! written here: data before birth and a seq gap give a rebirth request
//! (NCMD `Node Control/Rebirth`), births teach aliases, DATA by alias lands
//! on the right points with Sparkplug quality, and an NDEATH marks the
//! node's points STALE.

mod support;

use gaswatch::config::Config;
use gaswatch::model::Quality;
use gaswatch::sources::mqtt::spb::{self, proto};
use gaswatch::topology::{self, RunOptions};
use prost::Message;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use std::path::Path;
use std::time::Duration;
use support::mosquitto::Mosquitto;
use tokio::sync::mpsc;
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
id = "rtus"
host = "127.0.0.1"
port = {port}
format = "sparkplug_b"
group_id = "G"

[[mqtt_sources.points]]
name = "PT_N1"
node = "rtu1"
metric = "Inlet/Pressure"
unit = "kPa"
expected_interval = "1h"

[[mqtt_sources.points]]
name = "FT_N1"
node = "rtu1"
device = "meter"
metric = "Flow"
unit = "Sm3/h"
expected_interval = "1h"
"#,
        out = dir.join("out").display(),
        spool = dir.join("spool").display(),
    );
    Config::from_str_named(&text, Path::new("spb.toml")).unwrap_or_else(|e| panic!("{e}"))
}

fn lines(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir.join("out")) {
        for e in rd.flatten() {
            if e.file_name().to_string_lossy().starts_with("telemetry-") {
                let text = std::fs::read_to_string(e.path()).unwrap_or_default();
                out.extend(text.lines().map(str::to_string));
            }
        }
    }
    out
}

fn payload(seq: Option<u64>, metrics: Vec<proto::payload::Metric>) -> Vec<u8> {
    proto::Payload {
        timestamp: Some(ms(0)),
        seq,
        metrics,
        ..Default::default()
    }
    .encode_to_vec()
}

/// Metric times near now: older ones would be STALE at the engine's first tick.
fn ms(k: u64) -> u64 {
    static BASE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *BASE.get_or_init(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970")
            .as_millis() as u64
    }) + k
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn births_data_gap_death_and_rebirth() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let cancel = CancellationToken::new();
    let daemon = tokio::spawn(topology::run(
        config(broker.port(), dir.path()),
        RunOptions::default(),
        cancel.clone(),
    ));

    // The edge node: its will is the NDEATH with bdSeq 0.
    let t = |kind: &str, dev: &str| {
        if dev.is_empty() {
            format!("spBv1.0/G/{kind}/rtu1")
        } else {
            format!("spBv1.0/G/{kind}/rtu1/{dev}")
        }
    };
    let mut o = MqttOptions::new("rtu1", "127.0.0.1", broker.port());
    o.set_last_will(rumqttc::LastWill::new(
        t("NDEATH", ""),
        payload(None, vec![spb::bdseq_metric(0, 0)]),
        QoS::AtLeastOnce,
        false,
    ));
    let (node, mut el) = AsyncClient::new(o, 100);
    let (cmd_tx, mut cmd_rx) = mpsc::unbounded_channel::<proto::Payload>();
    let sub = node.clone();
    let cmd_topic = t("NCMD", "");
    let task = tokio::spawn(async move {
        loop {
            match el.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    let _ = sub.try_subscribe(cmd_topic.clone(), QoS::AtLeastOnce);
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if let Ok(pl) = proto::Payload::decode(p.payload.as_ref()) {
                        let _ = cmd_tx.send(pl);
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    let is_rebirth = |p: &proto::Payload| {
        p.metrics.iter().any(|m| {
            m.name.as_deref() == Some(spb::REBIRTH_METRIC)
                && m.value == Some(proto::payload::metric::Value::BooleanValue(true))
        })
    };

    // 1. Data before any birth: gaswatch asks for a rebirth (retried until
    //    gaswatch's subscription is in place).
    let early = payload(
        Some(1),
        vec![spb::double_metric(None, 1, 1.0, Quality::Good, ms(0))],
    );
    let asked = support::wait_until_async(Duration::from_secs(30), || {
        let (n, e) = (node.clone(), early.clone());
        let got = cmd_rx.try_recv().ok();
        async move {
            if got.is_some() {
                return true;
            }
            let _ = n.publish(t("NDATA", ""), QoS::AtLeastOnce, false, e).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
            false
        }
    })
    .await;
    assert!(asked, "no rebirth request for data before birth");
    assert!(
        !lines(dir.path()).iter().any(|l| l.contains("value=1.0,")),
        "data before birth was used"
    );

    // 2. Births (aliases 1 and 7), then data by alias.
    let birth = payload(
        Some(0),
        vec![
            spb::bdseq_metric(0, ms(1)),
            spb::double_metric(Some("Inlet/Pressure"), 1, 4000.0, Quality::Good, ms(1)),
            spb::double_metric(Some("Other"), 2, 9.0, Quality::Good, ms(1)),
        ],
    );
    let dbirth = payload(
        Some(1),
        vec![spb::double_metric(
            Some("Flow"),
            7,
            100.0,
            Quality::Good,
            ms(2),
        )],
    );
    let ddata = payload(
        Some(2),
        vec![spb::double_metric(
            None,
            7,
            150.0,
            Quality::Uncertain,
            ms(3),
        )],
    );
    let ndata = payload(
        Some(3),
        vec![spb::double_metric(None, 1, 4100.0, Quality::Good, ms(4))],
    );
    for (topic, p) in [
        (t("NBIRTH", ""), birth.clone()),
        (t("DBIRTH", "meter"), dbirth),
        (t("DDATA", "meter"), ddata),
        (t("NDATA", ""), ndata),
    ] {
        node.publish(topic, QoS::AtLeastOnce, false, p)
            .await
            .expect("publish");
    }
    // 3. A seq gap (5 after 3): not used, a rebirth is requested.
    let gap = payload(
        Some(5),
        vec![spb::double_metric(None, 1, 9999.0, Quality::Good, ms(5))],
    );
    node.publish(t("NDATA", ""), QoS::AtLeastOnce, false, gap)
        .await
        .expect("publish");
    let cmd = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let p = cmd_rx.recv().await.expect("node task alive");
            if is_rebirth(&p) {
                return p;
            }
        }
    })
    .await
    .expect("rebirth request after the seq gap");
    assert!(is_rebirth(&cmd));
    // 4. Rebirth and fresh data; then the node dies.
    let birth2 = payload(
        Some(0),
        vec![
            spb::bdseq_metric(0, ms(6)),
            spb::double_metric(Some("Inlet/Pressure"), 1, 4200.0, Quality::Good, ms(6)),
        ],
    );
    let ndata2 = payload(
        Some(1),
        vec![spb::double_metric(None, 1, 4300.0, Quality::Bad, ms(7))],
    );
    node.publish(t("NBIRTH", ""), QoS::AtLeastOnce, false, birth2)
        .await
        .expect("publish");
    node.publish(t("NDATA", ""), QoS::AtLeastOnce, false, ndata2)
        .await
        .expect("publish");
    node.publish(
        t("NDEATH", ""),
        QoS::AtLeastOnce,
        false,
        payload(None, vec![spb::bdseq_metric(0, ms(8))]),
    )
    .await
    .expect("publish");

    let done = support::wait_until_async(Duration::from_secs(20), || {
        let d = dir.path().to_path_buf();
        async move {
            lines(&d)
                .iter()
                .filter(|l| l.contains("quality=\"stale\""))
                .count()
                >= 2
        }
    })
    .await;
    let all = lines(dir.path());
    assert!(done, "no STALE after NDEATH: {all:#?}");
    let has = |point: &str, what: &str, k: u64| {
        let ts = (ms(k) * 1_000_000).to_string();
        all.iter()
            .any(|l| l.contains(&format!("point={point},")) && l.contains(what) && l.ends_with(&ts))
    };
    assert!(has("PT_N1", "value=4000", 1), "{all:#?}");
    assert!(has("FT_N1", "value=100", 2), "{all:#?}");
    assert!(
        has("FT_N1", "value=150.0,quality=\"uncertain\"", 3),
        "{all:#?}"
    );
    assert!(has("PT_N1", "value=4100", 4), "{all:#?}");
    assert!(has("PT_N1", "value=4200", 6), "{all:#?}");
    assert!(has("PT_N1", "quality=\"bad\"", 7), "{all:#?}");
    assert!(
        !all.iter().any(|l| l.contains("value=9999")),
        "data after a seq gap was used"
    );
    assert!(
        !all.iter().any(|l| l.contains("value=9,")),
        "an unmapped metric was used"
    );
    let stale: Vec<_> = all
        .iter()
        .filter(|l| l.contains("quality=\"stale\""))
        .collect();
    assert!(
        stale.iter().any(|l| l.contains("point=PT_N1"))
            && stale.iter().any(|l| l.contains("point=FT_N1")),
        "{stale:#?}"
    );
    // Marked by the NDEATH itself (no reason), not by the engine's timeout.
    assert!(
        stale.iter().all(|l| !l.contains("no_recent_data")),
        "{stale:#?}"
    );

    cancel.cancel();
    daemon.await.expect("join").expect("daemon");
    task.abort();
}
