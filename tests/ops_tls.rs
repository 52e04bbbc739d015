//! MQTT over TLS to a real mosquitto: a CA, a server certificate and a
//! client certificate are generated in the test with the `openssl` CLI; the
//! broker gets a TLS listener that requires a client certificate (beside a
//! plain one for the observing subscriber). The dispatch publisher connects
//! with the CA, its client certificate and a password, and its retained
//! `online` status arrives; without the client certificate it cannot.

mod support;

use gaswatch::buffer::{SharedSpool, Spool, SpoolConfig};
use gaswatch::sinks::mqtt::config::{MqttConfig, MqttTlsConfig};
use std::path::Path;
use std::time::Duration;
use support::mosquitto::{Mosquitto, MosquittoOptions, Subscriber};
use support::pki::make_pki;
use tokio_util::sync::CancellationToken;

fn mqtt_config(port: u16, pki: &Path, client_cert: bool) -> MqttConfig {
    MqttConfig {
        host: "127.0.0.1".into(),
        port,
        client_id: Some(format!("gaswatch-tls-{client_cert}")),
        username: Some("station".into()),
        password: None,
        topic_prefix: "gaswatch".into(),
        keep_alive: Duration::from_secs(5),
        heartbeat: Duration::from_secs(30),
        accept_commands: true,
        tls: Some(MqttTlsConfig {
            ca_file: Some(pki.join("ca.pem")),
            client_cert_file: client_cert.then(|| pki.join("client.pem")),
            client_key_file: client_cert.then(|| pki.join("client.key")),
        }),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publisher_connects_over_tls_with_a_client_certificate() {
    let pki = tempfile::tempdir().expect("tempdir");
    make_pki(pki.path());
    let tls_port = support::free_port();
    let p = pki.path();
    let broker = Mosquitto::start_with(MosquittoOptions {
        extra: format!(
            "listener {tls_port} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\n",
            p.join("ca.pem").display(),
            p.join("server.pem").display(),
            p.join("server.key").display()
        ),
        ..Default::default()
    });
    assert!(
        support::wait_until(Duration::from_secs(10), || std::net::TcpStream::connect((
            "127.0.0.1",
            tls_port
        ))
        .is_ok()),
        "TLS listener not up: {}",
        broker.log()
    );
    let mut sub =
        Subscriber::connect(broker.port(), "observer", &["gaswatch/+/status"], false).await;

    // Without a client certificate the broker refuses the handshake.
    let spool_dir = tempfile::tempdir().expect("tempdir");
    let spool = SharedSpool::new(
        "mqtt-nocert",
        Spool::open(&spool_dir.path().join("a"), &SpoolConfig::default()).expect("spool"),
    );
    let cancel = CancellationToken::new();
    let station_a = "nocert".to_string();
    let task_a = tokio::spawn(gaswatch::sinks::mqtt::run(
        mqtt_config(tls_port, p, false),
        station_a,
        None,
        spool,
        cancel.clone(),
    ));

    // With one, it connects and publishes its retained `online` status.
    let spool = SharedSpool::new(
        "mqtt",
        Spool::open(&spool_dir.path().join("b"), &SpoolConfig::default()).expect("spool"),
    );
    let task_b = tokio::spawn(gaswatch::sinks::mqtt::run(
        mqtt_config(tls_port, p, true),
        "tls01".into(),
        None,
        spool,
        cancel.clone(),
    ));

    let mut topics = Vec::new();
    let end = std::time::Instant::now() + Duration::from_secs(20);
    while std::time::Instant::now() < end && !topics.iter().any(|t: &String| t.contains("tls01")) {
        if let Some(m) = sub.next(Duration::from_millis(500)).await {
            topics.push(m.topic.clone());
            if m.topic.contains("tls01") {
                let body = String::from_utf8_lossy(&m.payload);
                assert!(
                    body.contains("true") || body.contains("online"),
                    "status payload: {body}"
                );
            }
        }
    }
    assert!(
        topics.iter().any(|t| t == "gaswatch/tls01/status"),
        "no status over TLS; got {topics:?}; broker log:\n{}",
        broker.log()
    );
    // The certificate-less client never got through (its status would be here too).
    let after = sub.drain_until_barrier().await;
    assert!(
        !topics
            .iter()
            .chain(after.iter().map(|m| &m.topic))
            .any(|t| t.contains("nocert")),
        "a client without a certificate was accepted"
    );
    cancel.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(15), task_a).await;
    let _ = tokio::time::timeout(Duration::from_secs(15), task_b).await;
}
