//! The simulator serving over MQTT through a real mosquitto, and gaswatch's
//! MQTT sources reading it: a JSON logger (nested objects, an array index,
//! a `{point}` topic, a scale from MPa, a payload timestamp) and a
//! Sparkplug B edge node (node and device metrics, data by alias, `seq`).
//! Every good value the daemon stored is one the simulator published for
//! that point; an NCMD rebirth brings a new NBIRTH and data keeps flowing;
//! the node's NDEATH turns its points STALE.

mod support;

use gaswatch::config::Config;
use gaswatch::sources::mqtt::spb::proto;
use gaswatch::topology::{self, RunOptions};
use gaswatch_sim::{SimControl, SimOptions, Station};
use prost::Message;
use rumqttc::{AsyncClient, MqttOptions, QoS};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;
use support::mosquitto::{Mosquitto, Subscriber};
use support::wait_until_async;
use tokio_util::sync::CancellationToken;

const DEADLINE: Duration = Duration::from_secs(30);

fn station(port: u16, out: &Path, spool: &Path) -> String {
    format!(
        r#"
[station]
id = "cg01"
kind = "city_gate"

[sinks.file]
dir = "{out}"

[spool]
dir = "{spool}"
flush_interval = "100ms"

[[mqtt_sources]]
id = "loggers"
host = "127.0.0.1"
port = {port}
format = "json"
topics = ["loggers/{{station}}/{{device}}/telemetry", "flow/{{device}}/{{point}}"]
timestamp = {{ path = "/ts", format = "epoch_ms" }}

[[mqtt_sources.points]]
name = "FT_IN1"
device = "logger7"
path = "/data/flow"
unit = "Sm3/h"
expected_interval = "300ms"

[[mqtt_sources.points]]
name = "PT_IN1"
device = "logger7"
path = "/data/pressure/value"
unit = "kPa"
scale = 1000.0
expected_interval = "300ms"

[[mqtt_sources.points]]
name = "TT_IN1"
device = "logger7"
path = "/data/temps/1"
unit = "degC"
expected_interval = "300ms"

[[mqtt_sources.points]]
name = "FT_OUT2"
device = "logger8"
topic_point = "gross"
path = "/v"
unit = "Sm3/h"
expected_interval = "300ms"

[[mqtt_sources]]
id = "rtus"
host = "127.0.0.1"
port = {port}
format = "sparkplug_b"
group_id = "GasStations"

[[mqtt_sources.points]]
name = "FT_OUT1"
node = "rtu3"
device = "regulator"
metric = "Outlet/Flow"
unit = "Sm3/h"
expected_interval = "300ms"

[[mqtt_sources.points]]
name = "PT_OUT1"
node = "rtu3"
device = "regulator"
metric = "Outlet/Pressure"
unit = "kPa"
expected_interval = "300ms"

[[mqtt_sources.points]]
name = "TT_OUT1"
node = "rtu3"
metric = "Station/Temperature"
unit = "degC"
expected_interval = "300ms"

[[meters]]
name = "IN1"
role = "inlet"
flow = "FT_IN1"
pressure = "PT_IN1"
temperature = "TT_IN1"

[[meters]]
name = "OUT1"
role = "outlet"
flow = "FT_OUT1"
pressure = "PT_OUT1"
temperature = "TT_OUT1"

[[meters]]
name = "OUT2"
role = "outlet"
flow = "FT_OUT2"
"#,
        out = out.display(),
        spool = spool.display()
    )
}

/// (point, quality, value) of every telemetry line the file sink wrote.
fn stored(dir: &Path) -> Vec<(String, String, Option<f64>)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        if e.path().extension().is_none_or(|x| x != "lp") {
            continue;
        }
        for l in std::fs::read_to_string(e.path())
            .unwrap_or_default()
            .lines()
        {
            let Some((series, rest)) = l.split_once(' ') else {
                continue;
            };
            let point = series
                .split(',')
                .find_map(|kv| kv.strip_prefix("point="))
                .unwrap_or_default()
                .to_string();
            let field = |k: &str| {
                rest.split([',', ' '])
                    .find_map(|kv| kv.strip_prefix(&format!("{k}=")))
                    .map(|v| v.trim_matches('"').to_string())
            };
            out.push((
                point,
                field("quality").unwrap_or_default(),
                field("value").and_then(|v| v.parse().ok()),
            ));
        }
    }
    out
}

fn good(dir: &Path, point: &str) -> usize {
    stored(dir)
        .iter()
        .filter(|(p, q, _)| p == point && q == "good")
        .count()
}

const POINTS: [&str; 7] = [
    "FT_IN1", "PT_IN1", "TT_IN1", "FT_OUT2", "FT_OUT1", "PT_OUT1", "TT_OUT1",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gaswatch_reads_the_simulator_over_mqtt_json_and_sparkplug_b() {
    let mut broker = Mosquitto::start();
    let port = broker.port();
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out");
    let text = station(port, &out, &dir.path().join("spool"));

    let sim = Station::from_config_str(&text, &SimOptions::default()).expect("sim station");
    let control = SimControl::standalone(sim);
    let mqtt = gaswatch_sim::mqtt::serve_mqtt(control.clone(), |_| ("127.0.0.1".into(), port))
        .expect("mqtt serving");

    let mut births = Subscriber::connect(
        port,
        "test-births",
        &["spBv1.0/GasStations/NBIRTH/rtu3"],
        false,
    )
    .await;
    let config = Config::from_str_named(&text, Path::new("mqtt-station.toml"))
        .unwrap_or_else(|e| panic!("{e}"));
    let cancel = CancellationToken::new();
    let daemon = tokio::spawn(topology::run(config, RunOptions::default(), cancel.clone()));

    assert!(
        wait_until_async(DEADLINE, || {
            let ok = POINTS.iter().all(|p| good(&out, p) >= 5);
            async move { ok }
        })
        .await,
        "not every MQTT point arrived good 5 times: {:?}",
        POINTS.map(|p| (p, good(&out, p)))
    );

    // A host's rebirth request: a new NBIRTH, and data keeps flowing after
    // it (the seq restarts at 0).
    while births.next(Duration::from_millis(200)).await.is_some() {}
    let (cmd, mut cmd_loop) =
        AsyncClient::new(MqttOptions::new("test-ncmd", "127.0.0.1", port), 10);
    let poller = tokio::spawn(async move { while cmd_loop.poll().await.is_ok() {} });
    let rebirth = proto::Payload {
        metrics: vec![proto::payload::Metric {
            name: Some("Node Control/Rebirth".into()),
            datatype: Some(11),
            value: Some(proto::payload::metric::Value::BooleanValue(true)),
            ..Default::default()
        }],
        ..Default::default()
    };
    cmd.publish(
        "spBv1.0/GasStations/NCMD/rtu3",
        QoS::AtLeastOnce,
        false,
        rebirth.encode_to_vec(),
    )
    .await
    .expect("publish NCMD");
    let nbirth = births
        .next(DEADLINE)
        .await
        .expect("an NBIRTH after the rebirth request");
    let payload = proto::Payload::decode(&nbirth.payload[..]).expect("NBIRTH decodes");
    assert_eq!(payload.seq, Some(0));
    let before = good(&out, "FT_OUT1");
    assert!(
        wait_until_async(DEADLINE, || {
            let ok = good(&out, "FT_OUT1") >= before + 5;
            async move { ok }
        })
        .await,
        "Sparkplug data stopped after the rebirth"
    );
    poller.abort();
    let bd_seq = |p: &proto::Payload| {
        p.metrics
            .iter()
            .find(|m| m.name.as_deref() == Some("bdSeq"))
            .and_then(|m| match m.value {
                Some(proto::payload::metric::Value::LongValue(v)) => Some(v),
                _ => None,
            })
            .expect("NBIRTH carries bdSeq")
    };
    let first_bd = bd_seq(&payload);

    // The broker restarts: the node reconnects with the next bdSeq (its
    // will carries it too), so the old session's late NDEATH cannot be
    // taken for the new one; the daemon keeps reading its points.
    broker.stop();
    broker.start_again();
    let mut births = Subscriber::connect(
        port,
        "test-births-2",
        &["spBv1.0/GasStations/NBIRTH/rtu3"],
        false,
    )
    .await;
    let (cmd, mut cmd_loop) =
        AsyncClient::new(MqttOptions::new("test-ncmd-2", "127.0.0.1", port), 10);
    let poller = tokio::spawn(async move { while cmd_loop.poll().await.is_ok() {} });
    // Until the node has resubscribed, a rebirth request goes nowhere: ask again.
    let mut reborn = None;
    for _ in 0..40 {
        cmd.publish(
            "spBv1.0/GasStations/NCMD/rtu3",
            QoS::AtLeastOnce,
            false,
            rebirth.encode_to_vec(),
        )
        .await
        .expect("publish NCMD");
        if let Some(m) = births.next(Duration::from_millis(500)).await {
            reborn = Some(m);
            break;
        }
    }
    let nbirth = reborn.expect("an NBIRTH after the broker restart");
    let payload = proto::Payload::decode(&nbirth.payload[..]).expect("NBIRTH decodes");
    assert_ne!(
        bd_seq(&payload),
        first_bd,
        "a new connection must carry a new bdSeq"
    );
    let before = good(&out, "FT_OUT1");
    assert!(
        wait_until_async(DEADLINE, || {
            let ok = good(&out, "FT_OUT1") >= before + 5;
            async move { ok }
        })
        .await,
        "Sparkplug data did not resume after the broker restart"
    );
    poller.abort();

    // The edge node's NDEATH turns its points STALE.
    mqtt.stop().await;
    assert!(
        wait_until_async(DEADLINE, || {
            let s = stored(&out);
            let ok = ["FT_OUT1", "PT_OUT1", "TT_OUT1"]
                .iter()
                .all(|p| s.iter().any(|(q, quality, _)| q == p && quality == "stale"));
            async move { ok }
        })
        .await,
        "the NDEATH did not mark rtu3's points stale"
    );
    cancel.cancel();
    daemon.await.expect("join").expect("daemon");

    // Every good value is one the simulator published for that point, and
    // the values are physical (the scale from MPa applied, not zeros).
    let mut published: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for s in control.served() {
        published.entry(s.point).or_default().push(s.value);
    }
    let lines = stored(&out);
    for p in POINTS {
        let values = published
            .get(p)
            .unwrap_or_else(|| panic!("{p} never published"));
        for (_, _, v) in lines
            .iter()
            .filter(|(q, quality, _)| q == p && quality == "good")
        {
            let v = v.expect("good samples carry a value");
            assert!(values.contains(&v), "{p}: {v} was never published");
        }
    }
    let last = |p: &str| {
        lines
            .iter()
            .rev()
            .find(|(q, quality, _)| q == p && quality == "good")
            .and_then(|(_, _, v)| *v)
            .expect("a good value")
    };
    assert!(
        (3_000.0..4_000.0).contains(&last("PT_IN1")),
        "{}",
        last("PT_IN1")
    );
    assert!(
        (1_400.0..1_600.0).contains(&last("PT_OUT1")),
        "{}",
        last("PT_OUT1")
    );
    assert!((5.0..20.0).contains(&last("TT_IN1")), "{}", last("TT_IN1"));
    assert!(last("FT_OUT1") > 10_000.0 && last("FT_OUT2") > 5_000.0);
}
