//! A real mosquitto broker for integration tests: its own temp dir, config,
//! persistence and log, on a free 127.0.0.1 port; `stop()` and `start()` again
//! on the same port and data dir (broker-restart tests); killed on drop.
//! Plus a small rumqttc subscriber that collects what it receives.

use super::{find_program, free_port, wait_until};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const INSTALL_HINT: &str =
    "mosquitto not found: install it with `apt-get install mosquitto mosquitto-clients`";

/// Broker options beyond the defaults (anonymous access allowed).
#[derive(Debug, Clone, Default)]
pub struct MosquittoOptions {
    /// Users written to a password file with `mosquitto_passwd -b`; when
    /// non-empty, anonymous access is refused.
    pub users: Vec<(String, String)>,
    /// Text of an ACL file (`user NAME` / `topic readwrite T` lines).
    pub acl: Option<String>,
    /// Extra config lines appended at the end (e.g. a second `listener` with
    /// `cafile`/`certfile`/`keyfile` for TLS tests).
    pub extra: String,
}

/// A running (or stopped) mosquitto.
pub struct Mosquitto {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
}

impl Mosquitto {
    /// Starts an anonymous broker.
    pub fn start() -> Mosquitto {
        Mosquitto::start_with(MosquittoOptions::default())
    }

    /// Starts a broker with users and/or an ACL.
    pub fn start_with(opts: MosquittoOptions) -> Mosquitto {
        let dir = tempfile::tempdir().expect("tempdir for mosquitto");
        let port = free_port();
        let d = dir.path();
        let mut conf = format!(
            "listener {port} 127.0.0.1\n\
             persistence true\n\
             persistence_location {}/\n\
             log_dest file {}\n\
             log_type all\n\
             user root\n",
            d.display(),
            d.join("mosquitto.log").display()
        );
        if opts.users.is_empty() {
            conf.push_str("allow_anonymous true\n");
        } else {
            let pw = d.join("passwd");
            let tool = find_program("mosquitto_passwd").expect(INSTALL_HINT);
            for (i, (user, pass)) in opts.users.iter().enumerate() {
                let mut cmd = Command::new(&tool);
                cmd.arg("-b");
                if i == 0 {
                    cmd.arg("-c");
                }
                let st = cmd
                    .arg(&pw)
                    .arg(user)
                    .arg(pass)
                    .status()
                    .expect("run mosquitto_passwd");
                assert!(st.success(), "mosquitto_passwd failed for {user}");
            }
            conf.push_str(&format!(
                "allow_anonymous false\npassword_file {}\n",
                pw.display()
            ));
        }
        if let Some(acl) = &opts.acl {
            let path = d.join("acl");
            std::fs::write(&path, acl).expect("write acl");
            conf.push_str(&format!("acl_file {}\n", path.display()));
        }
        conf.push_str(&opts.extra);
        std::fs::write(d.join("mosquitto.conf"), conf).expect("write mosquitto.conf");
        let mut m = Mosquitto {
            dir,
            port,
            child: None,
        };
        m.start_again();
        m
    }

    /// The listening port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The data dir (config, persistence db, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The broker's log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }

    /// Starts the broker (again) on the same port and data dir and waits
    /// until it accepts TCP connections.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "mosquitto is already running");
        let bin = find_program("mosquitto").expect(INSTALL_HINT);
        let conf: PathBuf = self.dir.path().join("mosquitto.conf");
        let child = Command::new(bin)
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(INSTALL_HINT);
        self.child = Some(child);
        let port = self.port;
        let ready = wait_until(Duration::from_secs(10), || {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                panic!("mosquitto exited with {status}; log:\n{}", self.log());
            }
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        assert!(
            ready,
            "mosquitto did not listen on 127.0.0.1:{port} within 10 s; log:\n{}",
            self.log()
        );
    }

    /// Stops the broker with SIGTERM (it saves its persistence db) and waits
    /// for it to exit; SIGKILL after 5 s.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A message received by a [`Subscriber`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub topic: String,
    pub payload: Vec<u8>,
    /// Set when the broker delivered a retained message on subscribe.
    pub retain: bool,
}

/// A rumqttc subscriber polling in its own task, reconnecting on errors.
pub struct Subscriber {
    client: rumqttc::AsyncClient,
    rx: tokio::sync::mpsc::UnboundedReceiver<Received>,
    task: tokio::task::JoinHandle<()>,
    barrier_topic: String,
    barriers: u32,
}

impl Subscriber {
    /// Connects, subscribes `filters` with QoS 1 and waits for the SUBACK.
    /// `persistent` uses `clean_session = false`, so messages published while
    /// it is disconnected (broker restart) are queued for it.
    pub async fn connect(
        port: u16,
        client_id: &str,
        filters: &[&str],
        persistent: bool,
    ) -> Subscriber {
        use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
        let mut o = MqttOptions::new(client_id, "127.0.0.1", port);
        o.set_clean_session(!persistent)
            .set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut eventloop) = AsyncClient::new(o, 100);
        let barrier_topic = format!("test-barrier/{client_id}");
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let (subacked_tx, mut subacked_rx) = tokio::sync::mpsc::unbounded_channel();
        let mut all: Vec<String> = filters.iter().map(|f| f.to_string()).collect();
        all.push(barrier_topic.clone());
        let sub_client = client.clone();
        let task = tokio::spawn(async move {
            let mut subacks = 0;
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                        if !ack.session_present {
                            for f in &all {
                                let _ = sub_client.try_subscribe(f.clone(), QoS::AtLeastOnce);
                            }
                        } else {
                            let _ = subacked_tx.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        subacks += 1;
                        if subacks == all.len() {
                            let _ = subacked_tx.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let _ = tx.send(Received {
                            topic: p.topic.clone(),
                            payload: p.payload.to_vec(),
                            retain: p.retain,
                        });
                    }
                    Ok(_) => {}
                    // Test helper: a short pause between reconnects is enough.
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), subacked_rx.recv())
            .await
            .expect("SUBACK within 10 s")
            .expect("subscriber task alive");
        Subscriber {
            client,
            rx,
            task,
            barrier_topic,
            barriers: 0,
        }
    }

    /// Publishes at QoS 1 from this client (e.g. a dispatcher's command);
    /// returns once queued (the broker acknowledges it asynchronously).
    pub async fn publish(&self, topic: &str, payload: impl Into<Vec<u8>>) {
        self.client
            .publish(topic, rumqttc::QoS::AtLeastOnce, false, payload.into())
            .await
            .expect("publish queued");
    }

    /// Publishes a retained message at QoS 1 (an empty payload deletes the
    /// retained message of the topic).
    pub async fn publish_retained(&self, topic: &str, payload: impl Into<Vec<u8>>) {
        self.client
            .publish(topic, rumqttc::QoS::AtLeastOnce, true, payload.into())
            .await
            .expect("publish queued");
    }

    /// A message already received, without waiting.
    pub fn try_next(&mut self) -> Option<Received> {
        self.rx.try_recv().ok()
    }

    /// The next message, or `None` after `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> Option<Received> {
        tokio::time::timeout(timeout, self.rx.recv())
            .await
            .ok()
            .flatten()
    }

    /// Everything delivered before a marker published now: after this, the
    /// retained messages of the subscription have all arrived, so absence is
    /// meaningful. Returns the messages before the marker.
    pub async fn drain_until_barrier(&mut self) -> Vec<Received> {
        self.barriers += 1;
        let marker = format!("barrier-{}", self.barriers).into_bytes();
        self.client
            .publish(
                self.barrier_topic.clone(),
                rumqttc::QoS::AtLeastOnce,
                false,
                marker.clone(),
            )
            .await
            .expect("publish barrier");
        let mut out = Vec::new();
        loop {
            let m = self
                .next(Duration::from_secs(10))
                .await
                .expect("barrier within 10 s");
            if m.topic == self.barrier_topic && m.payload == marker {
                return out;
            }
            out.push(m);
        }
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.task.abort();
    }
}
